//! Small system helpers: pipes and descriptors, the console socket, time stamps, the shim's own
//! error log.

use std::io::{self, Write};
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::net::UnixListener;
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

/// A pipe, both ends close-on-exec: (read, write).
pub fn pipe() -> io::Result<(OwnedFd, OwnedFd)> {
    nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).map_err(io::Error::from)
}

pub fn set_nonblocking(fd: BorrowedFd<'_>) -> io::Result<()> {
    // SAFETY: F_GETFL/F_SETFL on a descriptor we borrow; only the status flags change.
    let r = unsafe {
        let fl = libc::fcntl(fd.as_raw_fd(), libc::F_GETFL);
        if fl < 0 {
            -1
        } else {
            libc::fcntl(fd.as_raw_fd(), libc::F_SETFL, fl | libc::O_NONBLOCK)
        }
    };
    if r < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// `dup2(src, dst)`: `dst` is one of the standard descriptors, which nothing else owns.
pub fn dup2(src: RawFd, dst: RawFd) -> io::Result<()> {
    // SAFETY: dup2 onto a standard descriptor number; it only replaces what that number refers to.
    if unsafe { libc::dup2(src, dst) } < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

pub fn devnull() -> io::Result<OwnedFd> {
    let f = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/null")?;
    Ok(f.into())
}

/// Reads what a (non-blocking) descriptor has now, up to `max` bytes.
pub fn read_available(fd: BorrowedFd<'_>, max: usize) -> Vec<u8> {
    let _ = set_nonblocking(fd);
    let mut out = Vec::new();
    let mut buf = [0u8; 4096];
    while out.len() < max {
        match nix::unistd::read(fd, &mut buf) {
            Ok(0) => break,
            Ok(n) => out.extend_from_slice(&buf[..n]),
            Err(nix::errno::Errno::EINTR) => continue,
            Err(_) => break,
        }
    }
    out
}

/// Closes every inherited descriptor from 3 up, except `keep`.
pub fn close_inherited(keep: RawFd) {
    let Ok(rd) = std::fs::read_dir("/proc/self/fd") else {
        return;
    };
    let fds: Vec<RawFd> = rd
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse().ok())
        .collect();
    for fd in fds {
        if fd > 2 && fd != keep {
            // SAFETY: closing a descriptor inherited from our caller, before we open anything:
            // nothing in this process owns it (the read_dir handle is already closed, and
            // closing a stale number is harmless).
            unsafe { libc::close(fd) };
        }
    }
}

/// A unix socket on which a runtime hands over a pty master (runc's `--console-socket`).
pub struct Console {
    listener: UnixListener,
    pub path: PathBuf,
}

impl Console {
    pub fn listen(dir: &Path, name: &str) -> io::Result<Console> {
        let mut path = dir.join(name);
        if path.as_os_str().len() >= 100 {
            // Socket addresses are limited to 108 bytes; the runtime connects by path.
            path = std::env::temp_dir().join(format!("berth-shim-{}-{name}", std::process::id()));
        }
        let _ = std::fs::remove_file(&path);
        let listener = UnixListener::bind(&path)?;
        Ok(Console { listener, path })
    }

    /// Takes the pty master the runtime sent (it has connected and sent it by now).
    pub fn receive(&self) -> io::Result<OwnedFd> {
        use nix::sys::socket::{recvmsg, ControlMessageOwned, MsgFlags};
        self.listener.set_nonblocking(true)?;
        let (conn, _) = self.listener.accept().map_err(|e| {
            if e.kind() == io::ErrorKind::WouldBlock {
                io::Error::other("the runtime sent no terminal to the console socket")
            } else {
                e
            }
        })?;
        conn.set_nonblocking(false)?;
        conn.set_read_timeout(Some(std::time::Duration::from_secs(5)))?;
        let mut buf = [0u8; 256];
        let mut iov = [io::IoSliceMut::new(&mut buf)];
        let mut space = nix::cmsg_space!([RawFd; 2]);
        let msg = recvmsg::<()>(
            conn.as_raw_fd(),
            &mut iov,
            Some(&mut space),
            MsgFlags::MSG_CMSG_CLOEXEC,
        )
        .map_err(io::Error::from)?;
        let mut got = None;
        for c in msg.cmsgs().map_err(io::Error::from)? {
            if let ControlMessageOwned::ScmRights(fds) = c {
                for fd in fds {
                    // SAFETY: the kernel just installed this descriptor for us (SCM_RIGHTS).
                    let owned = unsafe { OwnedFd::from_raw_fd(fd) };
                    if got.is_none() {
                        got = Some(owned);
                    }
                }
            }
        }
        got.ok_or_else(|| io::Error::other("the console socket message carried no descriptor"))
    }
}

impl Drop for Console {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

/// Sets the window size of a terminal.
pub fn set_winsize(fd: BorrowedFd<'_>, width: u32, height: u32) {
    let ws = libc::winsize {
        ws_row: height.min(u16::MAX as u32) as u16,
        ws_col: width.min(u16::MAX as u32) as u16,
        ws_xpixel: 0,
        ws_ypixel: 0,
    };
    // SAFETY: TIOCSWINSZ reads a winsize from a valid pointer; failure is harmless.
    unsafe { libc::ioctl(fd.as_raw_fd(), libc::TIOCSWINSZ, &ws) };
}

pub fn now_nanos() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos() as i64)
        .unwrap_or(0)
}

/// `2026-11-23T10:11:12.123456789Z`: RFC 3339 in UTC with nanoseconds.
pub fn rfc3339_nano(t: SystemTime) -> String {
    let d = t.duration_since(UNIX_EPOCH).unwrap_or_default();
    berth_runtime::utils::rfc3339(d.as_secs() as i64, d.subsec_nanos())
}

/// Appends one line to `<shim dir>/shim.log`: errors nobody else would see.
pub fn shim_log(dir: &Path, msg: &str) {
    let line = format!(
        "{} {}\n",
        rfc3339_nano(SystemTime::now()),
        msg.replace('\n', " ")
    );
    if let Ok(mut f) = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(dir.join("shim.log"))
    {
        let _ = f.write_all(line.as_bytes());
    }
}

/// Writes `data` to `path` through a temporary file and a rename.
pub fn write_atomic(path: &Path, data: &[u8]) -> io::Result<()> {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let tmp = path.with_file_name(format!(".{name}.tmp"));
    std::fs::write(&tmp, data)?;
    std::fs::rename(&tmp, path)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn timestamps() {
        let t = UNIX_EPOCH + Duration::new(0, 5);
        assert_eq!(rfc3339_nano(t), "1970-01-01T00:00:00.000000005Z");
        // 2024-02-29T23:59:59.123456789Z
        let t = UNIX_EPOCH + Duration::new(1_709_251_199, 123_456_789);
        assert_eq!(rfc3339_nano(t), "2024-02-29T23:59:59.123456789Z");
        let t = UNIX_EPOCH + Duration::new(1_795_432_272, 0);
        assert_eq!(rfc3339_nano(t), "2026-11-23T11:11:12.000000000Z");
    }
}
