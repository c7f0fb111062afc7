//! Test helper: run a closure in a forked child, so process attributes (seccomp filters,
//! capabilities, rlimits) change in the child only, and get its verdict back.
//!
//! The child reports `Err(message)` through a pipe and leaves with `_exit`, so no test-harness
//! state (buffered output, destructors) runs twice. Every child is reaped by `wait`.

use nix::sys::wait::{waitpid, WaitStatus};
use nix::unistd::{fork, ForkResult, Pid};
use std::io::{Read, Write};
use std::os::fd::OwnedFd;

/// A forked child running a test closure.
pub(crate) struct Child {
    pid: Pid,
    report: Option<OwnedFd>,
}

/// Forks; the child runs `f` and exits. The parent gets a handle to wait on.
pub(crate) fn spawn<F: FnOnce() -> Result<(), String>>(f: F) -> Child {
    let (r, w) = nix::unistd::pipe().expect("pipe");
    // SAFETY: the child only runs `f` (test code that sets process attributes and makes
    // syscalls; glibc keeps malloc usable after fork) and then `_exit`s.
    match unsafe { fork() }.expect("fork") {
        ForkResult::Child => {
            drop(r);
            let res = std::panic::catch_unwind(std::panic::AssertUnwindSafe(f))
                .unwrap_or_else(|_| Err("child panicked".into()));
            let code = match res {
                Ok(()) => 0,
                Err(msg) => {
                    let _ = std::fs::File::from(w).write_all(msg.as_bytes());
                    1
                }
            };
            // SAFETY: _exit never returns and is async-signal-safe.
            unsafe { libc::_exit(code) }
        }
        ForkResult::Parent { child } => {
            drop(w);
            Child {
                pid: child,
                report: Some(r),
            }
        }
    }
}

/// `spawn(f).wait()`.
pub(crate) fn run<F: FnOnce() -> Result<(), String>>(f: F) -> Result<(), String> {
    spawn(f).wait()
}

impl Child {
    pub(crate) fn pid(&self) -> i32 {
        self.pid.as_raw()
    }

    /// Reaps the child: `Ok` if `f` returned `Ok`, its message if not, or how it died.
    pub(crate) fn wait(mut self) -> Result<(), String> {
        let mut msg = String::new();
        if let Some(r) = self.report.take() {
            let _ = std::fs::File::from(r).read_to_string(&mut msg);
        }
        let status = loop {
            match waitpid(self.pid, None) {
                Err(nix::Error::EINTR) => continue,
                r => break r.expect("waitpid"),
            }
        };
        self.pid = Pid::from_raw(0);
        match status {
            WaitStatus::Exited(_, 0) => Ok(()),
            WaitStatus::Exited(_, code) => Err(format!("child exited {code}: {msg}")),
            WaitStatus::Signaled(_, sig, _) => Err(format!("child killed by {sig:?}")),
            other => Err(format!("child: {other:?}")),
        }
    }
}

impl Drop for Child {
    /// A test that failed before `wait` must not leak the child.
    fn drop(&mut self) {
        if self.pid.as_raw() > 0 {
            let _ = nix::sys::signal::kill(self.pid, nix::sys::signal::Signal::SIGKILL);
            let _ = waitpid(self.pid, None);
        }
    }
}
