//! `run` in the foreground with `process.terminal` and no `--console-socket`: receive the pty
//! master ourselves and copy between it and our own stdio, as runc does.

use anyhow::{Context, Result};
use nix::sys::socket::{recvmsg, ControlMessageOwned, MsgFlags};
use nix::sys::termios::{cfmakeraw, tcgetattr, tcsetattr, SetArg, Termios};
use std::io::IoSliceMut;
use std::os::fd::{AsFd, AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::net::UnixListener;
use std::path::PathBuf;

/// A console socket in a private temp dir.
pub struct ConsoleSocket {
    pub path: PathBuf,
    dir: PathBuf,
    listener: UnixListener,
}

impl ConsoleSocket {
    pub fn new() -> Result<ConsoleSocket> {
        let dir =
            std::env::temp_dir().join(format!("berth-runtime-console-{}", std::process::id()));
        std::fs::create_dir_all(&dir).with_context(|| format!("create {dir:?}"))?;
        let path = dir.join("console.sock");
        let listener = UnixListener::bind(&path).with_context(|| format!("bind {path:?}"))?;
        Ok(ConsoleSocket {
            path,
            dir,
            listener,
        })
    }

    /// The pty master the runtime sent to the socket.
    pub fn receive(&self) -> Result<OwnedFd> {
        let (conn, _) = self.listener.accept().context("accept on console socket")?;
        let mut buf = [0u8; 256];
        let mut iov = [IoSliceMut::new(&mut buf)];
        let mut cmsg = nix::cmsg_space!([RawFd; 1]);
        let msg = recvmsg::<()>(
            conn.as_raw_fd(),
            &mut iov,
            Some(&mut cmsg),
            MsgFlags::MSG_CMSG_CLOEXEC,
        )?;
        for c in msg.cmsgs()? {
            if let ControlMessageOwned::ScmRights(fds) = c {
                if let Some(&fd) = fds.first() {
                    // SAFETY: the kernel installed this fd for us via SCM_RIGHTS.
                    return Ok(unsafe { OwnedFd::from_raw_fd(fd) });
                }
            }
        }
        anyhow::bail!("console socket: no pty master received")
    }
}

impl Drop for ConsoleSocket {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Puts our stdin terminal (if it is one) in raw mode until dropped.
pub struct RawMode(Option<Termios>);

impl RawMode {
    pub fn enter() -> RawMode {
        let stdin = std::io::stdin();
        let Ok(orig) = tcgetattr(stdin.as_fd()) else {
            return RawMode(None);
        };
        let mut raw = orig.clone();
        cfmakeraw(&mut raw);
        let _ = tcsetattr(stdin.as_fd(), SetArg::TCSANOW, &raw);
        RawMode(Some(orig))
    }
}

impl Drop for RawMode {
    fn drop(&mut self) {
        if let Some(t) = &self.0 {
            let _ = tcsetattr(std::io::stdin().as_fd(), SetArg::TCSANOW, t);
        }
    }
}

/// Copies stdin → master and master → stdout until the master hangs up. Returns when the
/// container's terminal is closed (the container exited), or when `on_signal` (called when
/// `signal_fd` is readable) says the process has exited; then what the process wrote last is
/// still in the pty, and is copied out before returning (see [`drain`]).
pub fn copy_loop(master: &OwnedFd, signal_fd: RawFd, mut on_signal: impl FnMut() -> bool) {
    let mut buf = [0u8; 8192];
    let mut stdin_open = true;
    loop {
        let mut fds = [
            libc::pollfd {
                fd: master.as_raw_fd(),
                events: libc::POLLIN,
                revents: 0,
            },
            libc::pollfd {
                fd: if stdin_open { 0 } else { -1 },
                events: libc::POLLIN,
                revents: 0,
            },
            libc::pollfd {
                fd: signal_fd,
                events: libc::POLLIN,
                revents: 0,
            },
        ];
        // SAFETY: three valid pollfds on our stack.
        if unsafe { libc::poll(fds.as_mut_ptr(), 3, -1) } < 0 {
            continue;
        }
        if fds[2].revents & libc::POLLIN != 0 && on_signal() {
            drain(master, &mut buf);
            return;
        }
        if fds[0].revents & (libc::POLLIN | libc::POLLHUP | libc::POLLERR) != 0 {
            match nix::unistd::read(master, &mut buf) {
                Ok(0) | Err(_) => return,
                Ok(n) => {
                    let _ = nix::unistd::write(std::io::stdout(), &buf[..n]);
                }
            }
        }
        if fds[1].revents & (libc::POLLIN | libc::POLLHUP) != 0 {
            match nix::unistd::read(std::io::stdin(), &mut buf) {
                Ok(0) | Err(_) => stdin_open = false,
                Ok(n) => {
                    let _ = nix::unistd::write(master, &buf[..n]);
                }
            }
        }
    }
}

/// Copies what is left in the pty to stdout, until the last holder of the terminal's slave side
/// has closed it (EIO) — as runc does, since a process that exits right after writing (`echo`)
/// is often reaped before its output has been read.
fn drain(master: &OwnedFd, buf: &mut [u8]) {
    loop {
        match nix::unistd::read(master, buf) {
            Ok(0) => return,
            Ok(n) => {
                let _ = nix::unistd::write(std::io::stdout(), &buf[..n]);
            }
            Err(nix::Error::EINTR | nix::Error::EAGAIN) => continue,
            // EIO: nothing holds the slave any more.
            Err(_) => return,
        }
    }
}

/// Relays the terminal ([`copy_loop`]) while the signals in `forwarded` go on to `child`
/// (SIGWINCH resizes the pty instead, SIGCHLD asks `reap`), until `reap` gives the exit code
/// (`Some`) or the terminal closes first (`None`: the caller waits for the exit itself).
pub fn relay_forwarding(
    master: &OwnedFd,
    forwarded: &nix::sys::signal::SigSet,
    child: nix::unistd::Pid,
    mut reap: impl FnMut() -> Result<Option<i32>>,
) -> Result<Option<i32>> {
    use nix::sys::signal::Signal;
    use nix::sys::signalfd::{SfdFlags, SignalFd};
    let sfd = SignalFd::with_flags(forwarded, SfdFlags::SFD_CLOEXEC | SfdFlags::SFD_NONBLOCK)?;
    let mut code = None;
    let mut failed = None;
    copy_loop(master, sfd.as_raw_fd(), || {
        while let Ok(Some(info)) = sfd.read_signal() {
            match info.ssi_signo as i32 {
                libc::SIGCHLD => {}
                libc::SIGWINCH => sync_size(master),
                s => {
                    if let Ok(s) = Signal::try_from(s) {
                        let _ = nix::sys::signal::kill(child, s);
                    }
                }
            }
        }
        match reap() {
            Ok(c) => code = c,
            Err(e) => failed = Some(e),
        }
        code.is_some() || failed.is_some()
    });
    match failed {
        Some(e) => Err(e),
        None => Ok(code),
    }
}

/// Copies our terminal's window size to the container's.
pub fn sync_size(master: &OwnedFd) {
    let mut ws: libc::winsize = libc::winsize {
        ws_row: 0,
        ws_col: 0,
        ws_xpixel: 0,
        ws_ypixel: 0,
    };
    // SAFETY: TIOCGWINSZ writes a winsize into a valid pointer.
    if unsafe { libc::ioctl(1, libc::TIOCGWINSZ, &mut ws) } == 0 {
        berth_runtime::tty::set_size(master.as_fd(), ws.ws_row, ws.ws_col);
    }
}
