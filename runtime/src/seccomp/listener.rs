//! Handing the notify fd to the seccomp agent listening at `listenerPath`.
//!
//! Runtime spec, "seccomp listener": the runtime connects to the UNIX socket (SOCK_STREAM),
//! and sends the container process state (`containerProcessState` JSON) as the message body
//! with the notify fd attached as SCM_RIGHTS, named by `"fds": ["seccompFd"]` in the JSON.

use super::{err, SeccompError};
use nix::sys::socket::{
    connect, send, sendmsg, socket, AddressFamily, ControlMessage, MsgFlags, SockFlag, SockType,
    UnixAddr,
};
use std::io::IoSlice;
use std::os::fd::{AsRawFd, OwnedFd};

/// Sends the notify fd to the listener at `listener_path` (SCM_RIGHTS) with the container state
/// JSON as the message body, per the runtime spec's "seccomp listener" section.
pub fn send_listener_fd(
    listener_path: &std::path::Path,
    fd: &OwnedFd,
    state_json: &[u8],
) -> Result<(), SeccompError> {
    let ctx =
        |what: &str, e: nix::Error| err(format!("{what} seccomp listener {listener_path:?}: {e}"));
    if state_json.is_empty() {
        return Err(err("empty state for the seccomp listener"));
    }
    let sock = socket(
        AddressFamily::Unix,
        SockType::Stream,
        SockFlag::SOCK_CLOEXEC,
        None,
    )
    .map_err(|e| ctx("socket for", e))?;
    let addr = UnixAddr::new(listener_path).map_err(|e| ctx("address of", e))?;
    connect(sock.as_raw_fd(), &addr).map_err(|e| {
        // runc's words, which its tests and users look for.
        err(format!(
            "failed to connect with seccomp agent specified in the seccomp profile: connect \
             {listener_path:?}: {e}"
        ))
    })?;

    let fds = [fd.as_raw_fd()];
    let cmsg = [ControlMessage::ScmRights(&fds)];
    let mut sent = loop {
        match sendmsg::<()>(
            sock.as_raw_fd(),
            &[IoSlice::new(state_json)],
            &cmsg,
            MsgFlags::MSG_NOSIGNAL,
            None,
        ) {
            Err(nix::Error::EINTR) => continue,
            r => break r.map_err(|e| ctx("send fd to", e))?,
        }
    };
    // A stream socket may take the body in pieces; the fd went with the first one.
    while sent < state_json.len() {
        match send(
            sock.as_raw_fd(),
            &state_json[sent..],
            MsgFlags::MSG_NOSIGNAL,
        ) {
            Err(nix::Error::EINTR) => continue,
            r => sent += r.map_err(|e| ctx("send state to", e))?,
        }
    }
    Ok(())
}
