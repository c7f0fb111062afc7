//! Container lifecycle operations, one file per verb. Each takes the state root (`--root`) and
//! the container id, like runc's commands.

pub mod create;
pub mod delete;
pub mod exec;
pub mod info;
pub mod kill;
pub mod pause;
pub mod start;
pub mod update;

use crate::state::State;
use std::io::Write;

/// Prints warnings the way runc's logrus does, one line each on stderr.
pub fn warn(msg: &str) {
    // As runc: on stderr only when stderr is the log (no `--log`); with `--log` in the file only,
    // since a caller such as containerd hands the runtime the container's own stdio. Used in
    // process (the shim, with the container's pipes on fds 0-2 around the call), nowhere: a
    // warning must not end up in the container's output.
    if crate::log::to_stderr() {
        let _ = writeln!(std::io::stderr(), "berth-runtime: warning: {msg}");
    }
    crate::log::write("warning", msg);
}

/// Waits up to `timeout` for `pid` to terminate (become a zombie or vanish), using a pidfd.
pub fn wait_gone(state: &State, timeout: std::time::Duration) -> bool {
    let deadline = std::time::Instant::now() + timeout;
    // SAFETY: pidfd_open with a pid; the fd is closed below.
    let pidfd = unsafe { libc::syscall(libc::SYS_pidfd_open, state.pid, 0) } as i32;
    let done = loop {
        if !state.init_alive() {
            break true;
        }
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        if left.is_zero() {
            break false;
        }
        if pidfd >= 0 {
            let mut p = libc::pollfd {
                fd: pidfd,
                events: libc::POLLIN,
                revents: 0,
            };
            // SAFETY: one valid pollfd.
            unsafe { libc::poll(&mut p, 1, left.as_millis().min(100) as i32) };
        } else {
            std::thread::sleep(std::time::Duration::from_millis(2));
        }
    };
    if pidfd >= 0 {
        // SAFETY: closing our pidfd.
        unsafe { libc::close(pidfd) };
    }
    done
}
