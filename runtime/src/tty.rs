//! Terminals: the pty an init creates for `process.terminal`, and `--console-socket`.

use crate::{Error, Result};
use nix::sys::socket::{
    connect, sendmsg, socket, AddressFamily, ControlMessage, MsgFlags, SockFlag, SockType, UnixAddr,
};
use std::io::IoSlice;
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd};
use std::path::{Path, PathBuf};

/// Opens a new pty pair from `/dev/ptmx` (the container's, after pivot_root): (master, slave path).
pub fn open_pty() -> Result<(OwnedFd, PathBuf, OwnedFd)> {
    use nix::fcntl::OFlag;
    use nix::pty::{grantpt, posix_openpt, ptsname_r, unlockpt};
    let master = posix_openpt(OFlag::O_RDWR | OFlag::O_NOCTTY | OFlag::O_CLOEXEC)
        .map_err(|e| Error::Other(format!("open /dev/ptmx: {e}")))?;
    grantpt(&master).map_err(|e| Error::Other(format!("grantpt: {e}")))?;
    unlockpt(&master).map_err(|e| Error::Other(format!("unlockpt: {e}")))?;
    let name = ptsname_r(&master).map_err(|e| Error::Other(format!("ptsname: {e}")))?;
    let slave = nix::fcntl::open(
        name.as_str(),
        OFlag::O_RDWR | OFlag::O_NOCTTY,
        nix::sys::stat::Mode::empty(),
    )
    .map_err(|e| Error::Other(format!("open {name}: {e}")))?;
    // SAFETY: the raw fd of the master is owned by PtyMaster; we dup it into an OwnedFd we own.
    let m = unsafe { OwnedFd::from_raw_fd(libc::dup(master.as_raw_fd())) };
    Ok((m, PathBuf::from(name), slave))
}

/// Sets the window size of a terminal.
pub fn set_size(fd: BorrowedFd<'_>, rows: u16, cols: u16) {
    let ws = libc::winsize {
        ws_row: rows,
        ws_col: cols,
        ws_xpixel: 0,
        ws_ypixel: 0,
    };
    // SAFETY: TIOCSWINSZ reads a winsize from a valid pointer; failure is harmless.
    unsafe { libc::ioctl(fd.as_raw_fd(), libc::TIOCSWINSZ, &ws) };
}

/// Makes the slave the controlling terminal and stdio of the calling process (after setsid).
pub fn make_controlling(slave: &OwnedFd) -> Result<()> {
    // SAFETY: TIOCSCTTY with arg 0 on an open terminal fd.
    if unsafe { libc::ioctl(slave.as_raw_fd(), libc::TIOCSCTTY, 0) } < 0 {
        return Err(Error::Other(format!(
            "set controlling terminal: {}",
            std::io::Error::last_os_error()
        )));
    }
    for target in 0..3 {
        // SAFETY: dup2 onto the standard descriptors; they are replaced, nothing else owns them.
        if unsafe { libc::dup2(slave.as_raw_fd(), target) } < 0 {
            return Err(Error::Other(format!(
                "dup2 pty slave: {}",
                std::io::Error::last_os_error()
            )));
        }
    }
    Ok(())
}

/// Sends the pty master to the `--console-socket` (runc's protocol: SCM_RIGHTS, name as payload).
pub fn send_to_console_socket(path: &Path, master: BorrowedFd<'_>) -> Result<()> {
    let bad = |e: nix::Error| Error::Other(format!("console socket {path:?}: {e}"));
    let sock = socket(
        AddressFamily::Unix,
        SockType::Stream,
        SockFlag::SOCK_CLOEXEC,
        None,
    )
    .map_err(bad)?;
    let addr = UnixAddr::new(path).map_err(bad)?;
    connect(sock.as_raw_fd(), &addr).map_err(bad)?;
    let fds = [master.as_raw_fd()];
    let name = b"/dev/ptmx";
    sendmsg::<()>(
        sock.as_raw_fd(),
        &[IoSlice::new(name)],
        &[ControlMessage::ScmRights(&fds)],
        MsgFlags::empty(),
        None,
    )
    .map_err(bad)?;
    Ok(())
}
