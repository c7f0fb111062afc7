//! The protocol between the runtime (parent) and the container's init (child).
//!
//! One `SOCK_SEQPACKET` socketpair, one JSON message per packet, file descriptors passed with
//! `SCM_RIGHTS`. Both ends are close-on-exec, so the parent sees EOF when the init execs or dies.
//!
//! | step | direction | message | meaning |
//! | ---- | --------- | ------- | ------- |
//! | 1a | parent → init | `BindSource` + fd | a bind source opened with the host's rights (see `rootfs::BindSources`), once per such mount, before step 1 |
//! | 1 | parent → init | `Proceed` | uid/gid maps written, init placed in its cgroup |
//! | 2 | init → parent | `RuntimeHooks` | namespaces exist: run prestart + createRuntime hooks |
//! | 3 | parent → init | `HooksDone` | hooks ran |
//! | 4 | init → parent | `ConsoleFd` + fd | the pty master, for `--console-socket` |
//! | 5 | init → parent | `SeccompFd` + fd | the seccomp notify fd, for `listenerPath` |
//! | 6 | init → parent | `Ready` | set up, waiting on the start socket; warnings to print |
//! | any | init → parent | `Error` | what failed, so `create` reports the real reason |
//!
//! Every failure of the init reaches the parent as its own `Error`: failed steps return it,
//! and a panic sends it from the panic hook (`process::init`). The init may die with messages
//! of the parent still unread; the kernel then gives the parent `ECONNRESET` before the
//! init's last messages, which [`Channel::recv`] reads past. A step of the parent that fails
//! because the init is gone yields to the init's error ([`Channel::pending_error`]).
//!
//! The same channel serves `exec`, where only steps 4–6 happen (plus `Error`).

use crate::{Error, Result};
use nix::sys::socket::{
    recvmsg, sendmsg, socketpair, AddressFamily, ControlMessage, ControlMessageOwned, MsgFlags,
    SockFlag, SockType,
};
use serde::{Deserialize, Serialize};
use std::io::{IoSlice, IoSliceMut};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Msg {
    Proceed,
    /// Parent to init, with a descriptor: the source of bind mount number `index` of the spec.
    BindSource {
        index: usize,
    },
    RuntimeHooks,
    HooksDone,
    ConsoleFd,
    SeccompFd,
    Ready {
        warnings: Vec<String>,
    },
    Error(String),
    /// Parent to init: the init is in its cgroup in every hierarchy. Sent once, right after
    /// the first `Proceed`, possibly while the init is already at work (joining cgroup v1
    /// hierarchies can wait out an RCU grace period; the init's mount work overlaps it).
    CgroupJoined,
}

/// One end of the parent/init channel.
pub struct Channel {
    fd: OwnedFd,
    /// `CgroupJoined` has arrived (the init side notes it whenever it shows up).
    joined: std::cell::Cell<bool>,
}

impl Channel {
    /// A connected pair: (parent end, init end).
    pub fn pair() -> Result<(Channel, Channel)> {
        let (a, b) = socketpair(
            AddressFamily::Unix,
            SockType::SeqPacket,
            None,
            SockFlag::SOCK_CLOEXEC,
        )
        .map_err(|e| Error::Other(format!("socketpair: {e}")))?;
        Ok((
            Channel {
                fd: a,
                joined: Default::default(),
            },
            Channel {
                fd: b,
                joined: Default::default(),
            },
        ))
    }

    pub fn raw_fd(&self) -> RawFd {
        self.fd.as_raw_fd()
    }

    /// Moves the socket to a descriptor at or above `min` (so it stays clear of `--preserve-fds`).
    pub fn move_above(&mut self, min: RawFd) -> Result<()> {
        if self.fd.as_raw_fd() >= min {
            return Ok(());
        }
        // SAFETY: F_DUPFD_CLOEXEC on an fd we own returns a new fd that nothing else owns.
        let new = unsafe { libc::fcntl(self.fd.as_raw_fd(), libc::F_DUPFD_CLOEXEC, min) };
        if new < 0 {
            return Err(Error::Other(format!(
                "dup sync socket: {}",
                std::io::Error::last_os_error()
            )));
        }
        // SAFETY: `new` is a fresh descriptor returned by fcntl above, owned by no one else.
        self.fd = unsafe { OwnedFd::from_raw_fd(new) };
        Ok(())
    }

    pub fn send(&self, msg: &Msg) -> Result<()> {
        self.send_with_fd(msg, None)
    }

    pub fn send_with_fd(&self, msg: &Msg, fd: Option<BorrowedFd<'_>>) -> Result<()> {
        send_on(self.fd.as_fd(), msg, fd)
    }

    /// The socket, for a panic hook that must report on it without owning the channel.
    pub fn as_fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }

    /// Receives one message. `Ok(None)` means the other side closed (exited or exec'd).
    pub fn recv(&self) -> Result<Option<(Msg, Option<OwnedFd>)>> {
        self.recv_flags(MsgFlags::empty())
    }

    /// The `Error` the other side sent, if one is waiting to be read (without blocking).
    ///
    /// A step of ours that fails because the other side is gone (a write to its `/proc/<pid>`
    /// files, a send) must not hide why it is gone: the caller reports this error instead.
    pub fn pending_error(&self) -> Option<String> {
        loop {
            match self.recv_flags(MsgFlags::MSG_DONTWAIT) {
                Ok(Some((Msg::Error(e), _))) => return Some(e),
                Ok(Some(_)) => continue,
                Ok(None) | Err(_) => return None,
            }
        }
    }

    fn recv_flags(&self, flags: MsgFlags) -> Result<Option<(Msg, Option<OwnedFd>)>> {
        let mut buf = vec![0u8; 64 * 1024];
        let mut cmsg = nix::cmsg_space!([RawFd; 1]);
        let mut iov = [IoSliceMut::new(&mut buf)];
        let msg = loop {
            match recvmsg::<()>(
                self.fd.as_raw_fd(),
                &mut iov,
                Some(&mut cmsg),
                MsgFlags::MSG_CMSG_CLOEXEC | flags,
            ) {
                Err(nix::errno::Errno::EINTR) => continue,
                // The other side closed while a message of ours was still unread in its queue
                // (it failed before reading it): the kernel reports that once, ahead of what
                // the other side sent before closing, typically its `Error`. Read on.
                Err(nix::errno::Errno::ECONNRESET) => continue,
                Err(nix::errno::Errno::EAGAIN) if flags.contains(MsgFlags::MSG_DONTWAIT) => {
                    return Err(Error::Other("nothing to receive".into()))
                }
                r => {
                    break r
                        .map_err(|e| Error::Other(format!("receive from the other side: {e}")))?
                }
            }
        };
        let mut fd = None;
        for c in msg
            .cmsgs()
            .map_err(|e| Error::Other(format!("control message: {e}")))?
        {
            if let ControlMessageOwned::ScmRights(fds) = c {
                for raw in fds {
                    // SAFETY: the kernel installed this descriptor for us via SCM_RIGHTS.
                    let owned = unsafe { OwnedFd::from_raw_fd(raw) };
                    fd.get_or_insert(owned);
                }
            }
        }
        let n = msg.bytes;
        if n == 0 {
            return Ok(None);
        }
        let m: Msg = serde_json::from_slice(&buf[..n])
            .map_err(|e| Error::Other(format!("bad sync message: {e}")))?;
        Ok(Some((m, fd)))
    }

    /// Waits for `want`; an `Error` from the other side becomes this call's error. A
    /// `CgroupJoined` on the way is noted (see [`Channel::wait_cgroup`]).
    pub fn expect(&self, want: Msg) -> Result<()> {
        loop {
            match self.recv()? {
                Some((m, _)) if m == want => return Ok(()),
                Some((Msg::CgroupJoined, _)) => self.joined.set(true),
                Some((Msg::Error(e), _)) => return Err(Error::Other(e)),
                Some((m, _)) => {
                    return Err(Error::Other(format!(
                        "protocol error: expected {want:?}, got {m:?}"
                    )))
                }
                None => {
                    return Err(Error::Other(format!(
                        "protocol error: expected {want:?}, the other side closed"
                    )))
                }
            }
        }
    }

    /// Init side: returns once the parent has put us in our cgroup.
    pub fn wait_cgroup(&self) -> Result<()> {
        if !self.joined.get() {
            self.expect(Msg::CgroupJoined)?;
            self.joined.set(true);
        }
        Ok(())
    }
}

/// Sends one message (and maybe a descriptor) on a sync socket.
pub fn send_on(sock: BorrowedFd<'_>, msg: &Msg, fd: Option<BorrowedFd<'_>>) -> Result<()> {
    let data = serde_json::to_vec(msg).map_err(|e| Error::Other(format!("encode {msg:?}: {e}")))?;
    let iov = [IoSlice::new(&data)];
    let fds;
    let cmsgs: &[ControlMessage] = match fd {
        Some(fd) => {
            fds = [fd.as_raw_fd()];
            &[ControlMessage::ScmRights(&fds)]
        }
        None => &[],
    };
    sendmsg::<()>(sock.as_raw_fd(), &iov, cmsgs, MsgFlags::MSG_NOSIGNAL, None)
        .map_err(|e| Error::Other(format!("send {msg:?} to the other side: {e}")))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_and_fds_cross() {
        let (a, b) = Channel::pair().unwrap();
        a.send(&Msg::Ready {
            warnings: vec!["w".into()],
        })
        .unwrap();
        let (m, fd) = b.recv().unwrap().unwrap();
        assert_eq!(
            m,
            Msg::Ready {
                warnings: vec!["w".into()]
            }
        );
        assert!(fd.is_none());
        let f = std::fs::File::open("/dev/null").unwrap();
        b.send_with_fd(&Msg::ConsoleFd, Some(f.as_fd())).unwrap();
        let (m, fd) = a.recv().unwrap().unwrap();
        assert_eq!(m, Msg::ConsoleFd);
        assert!(fd.is_some());
        drop(b);
        assert!(a.recv().unwrap().is_none());
    }

    #[test]
    fn error_message_becomes_error() {
        let (a, b) = Channel::pair().unwrap();
        b.send(&Msg::Error("mount \"/proc\": EPERM".into()))
            .unwrap();
        assert!(a
            .expect(Msg::Proceed)
            .unwrap_err()
            .to_string()
            .contains("/proc"));
    }

    #[test]
    fn error_of_a_side_that_closed_with_unread_messages_is_read() {
        // The init failed before reading `CgroupJoined` and exited after sending its error: the
        // parent must get that error, not ECONNRESET.
        let (parent, init) = Channel::pair().unwrap();
        parent.send(&Msg::CgroupJoined).unwrap();
        init.send(&Msg::Error("mount \"/x\": No such device".into()))
            .unwrap();
        drop(init);
        let err = parent.expect(Msg::HooksDone).unwrap_err().to_string();
        assert_eq!(err, "mount \"/x\": No such device");
        assert!(parent.recv().unwrap().is_none());
    }

    #[test]
    fn pending_error_skips_other_messages_and_does_not_block() {
        let (parent, init) = Channel::pair().unwrap();
        assert_eq!(parent.pending_error(), None);
        parent.send(&Msg::Proceed).unwrap();
        init.send(&Msg::RuntimeHooks).unwrap();
        init.send(&Msg::Error("setuid 500: EINVAL".into())).unwrap();
        drop(init);
        assert_eq!(
            parent.pending_error().as_deref(),
            Some("setuid 500: EINVAL")
        );
        assert_eq!(parent.pending_error(), None);
    }
}
