//! The protocol between the runtime (parent) and the container's init (child).
//!
//! One `SOCK_SEQPACKET` socketpair, one JSON message per packet, file descriptors passed with
//! `SCM_RIGHTS`. Both ends are close-on-exec, so the parent sees EOF when the init execs or dies.
//!
//! | step | direction | message | meaning |
//! | ---- | --------- | ------- | ------- |
//! | 1 | parent → init | `Proceed` | uid/gid maps written, init placed in its cgroup |
//! | 2 | init → parent | `RuntimeHooks` | namespaces exist: run prestart + createRuntime hooks |
//! | 3 | parent → init | `HooksDone` | hooks ran |
//! | 4 | init → parent | `ConsoleFd` + fd | the pty master, for `--console-socket` |
//! | 5 | init → parent | `SeccompFd` + fd | the seccomp notify fd, for `listenerPath` |
//! | 6 | init → parent | `Ready` | set up, waiting on the start socket; warnings to print |
//! | any | init → parent | `Error` | what failed, so `create` reports the real reason |
//!
//! The same channel serves `exec`, where only steps 4–6 happen (plus `Error`).

use crate::{Error, Result};
use nix::sys::socket::{
    recvmsg, sendmsg, socketpair, AddressFamily, ControlMessage, ControlMessageOwned, MsgFlags,
    SockFlag, SockType,
};
use serde::{Deserialize, Serialize};
use std::io::{IoSlice, IoSliceMut};
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Msg {
    Proceed,
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
        let data =
            serde_json::to_vec(msg).map_err(|e| Error::Other(format!("encode {msg:?}: {e}")))?;
        let iov = [IoSlice::new(&data)];
        let fds;
        let cmsgs: &[ControlMessage] = match fd {
            Some(fd) => {
                fds = [fd.as_raw_fd()];
                &[ControlMessage::ScmRights(&fds)]
            }
            None => &[],
        };
        sendmsg::<()>(
            self.fd.as_raw_fd(),
            &iov,
            cmsgs,
            MsgFlags::MSG_NOSIGNAL,
            None,
        )
        .map_err(|e| Error::Other(format!("send {msg:?} to the other side: {e}")))?;
        Ok(())
    }

    /// Receives one message. `Ok(None)` means the other side closed (exited or exec'd).
    pub fn recv(&self) -> Result<Option<(Msg, Option<OwnedFd>)>> {
        let mut buf = vec![0u8; 64 * 1024];
        let mut cmsg = nix::cmsg_space!([RawFd; 1]);
        let mut iov = [IoSliceMut::new(&mut buf)];
        let msg = loop {
            match recvmsg::<()>(
                self.fd.as_raw_fd(),
                &mut iov,
                Some(&mut cmsg),
                MsgFlags::MSG_CMSG_CLOEXEC,
            ) {
                Err(nix::errno::Errno::EINTR) => continue,
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

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::fd::AsFd;

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
}
