//! `kill`: signal the init, or with `--all` every process of the container's cgroup.
//!
//! A signal of `None` is signal 0, runc's liveness probe: nothing is delivered, and `kill`
//! succeeds while the init runs (created, running or paused) and fails once it has stopped.

use crate::state::{State, Status};
use crate::{Error, Result};
use nix::sys::signal::{kill as sys_kill, Signal};
use nix::unistd::Pid;
use std::path::Path;

pub fn kill(root: &Path, id: &str, sig: impl Into<Option<Signal>>, all: bool) -> Result<()> {
    let sig = sig.into();
    let st = State::load(root, id)?;
    let status = st.current_status();
    let name = sig.map_or("0", |s| s.as_str());
    if all {
        // As runc: with --all a stopped container is no error; what is left in its cgroup
        // still gets the signal.
        crate::log::debug(&format!("kill {id}: signal {name} to all its processes"));
        signal_all(&st, sig);
        return Ok(());
    }
    if status == Status::Stopped {
        return Err(Error::BadState {
            id: id.into(),
            status: status.to_string(),
            op: "kill",
            expected: "created, running or paused",
        });
    }
    crate::log::debug(&format!("kill {id}: signal {name} to init pid {}", st.pid));
    sys_kill(Pid::from_raw(st.pid), sig)
        .map_err(|e| Error::Other(format!("kill {id:?} (pid {}): {e}", st.pid)))?;
    if status == Status::Paused && sig == Some(Signal::SIGKILL) {
        // A frozen v1 cgroup keeps even SIGKILLed processes until it is thawed.
        if let Some(cg) = &st.cgroup {
            let _ = cg.thaw();
        }
    }
    Ok(())
}

/// Signals the init and every process in the container's cgroup; thaws a frozen cgroup after a
/// SIGKILL so the processes can die.
pub fn signal_all(st: &State, sig: impl Into<Option<Signal>>) {
    let sig = sig.into();
    if st.init_alive() {
        let _ = sys_kill(Pid::from_raw(st.pid), sig);
    }
    if let Some(cg) = &st.cgroup {
        for pid in cg.pids().unwrap_or_default() {
            let _ = sys_kill(Pid::from_raw(pid), sig);
        }
        if sig == Some(Signal::SIGKILL) && cg.is_frozen().unwrap_or(false) {
            let _ = cg.thaw();
        }
    }
}
