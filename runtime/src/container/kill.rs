//! `kill`: signal the init, or with `--all` every process of the container's cgroup.
//!
//! A signal of `None` is signal 0, runc's liveness probe: nothing is delivered, and `kill`
//! succeeds while the init runs (created, running or paused) and fails once it has stopped.

use crate::state::{State, Status};
use crate::{Error, Result};
use nix::sys::signal::Signal;
use std::path::Path;

pub fn kill(root: &Path, id: &str, sig: impl Into<Option<Signal>>, all: bool) -> Result<()> {
    kill_number(root, id, sig.into().map_or(0, |s| s as i32), all)
}

/// [`kill`] by signal number: 0 is the liveness probe, and the real-time signals (34 to 64),
/// which have no [`Signal`], work too.
pub fn kill_number(root: &Path, id: &str, signo: i32, all: bool) -> Result<()> {
    let st = State::load(root, id)?;
    let status = st.current_status();
    let name = Signal::try_from(signo).map_or_else(|_| signo.to_string(), |s| s.to_string());
    if all {
        // As runc: with --all a stopped container is no error; what is left in its cgroup
        // still gets the signal.
        crate::log::debug(&format!("kill {id}: signal {name} to all its processes"));
        signal_all_number(&st, signo);
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
    send(st.pid, signo).map_err(|e| Error::Other(format!("kill {id:?} (pid {}): {e}", st.pid)))?;
    if status == Status::Paused && signo == Signal::SIGKILL as i32 {
        // A frozen v1 cgroup keeps even SIGKILLed processes until it is thawed.
        if let Some(cg) = &st.cgroup {
            let _ = cg.thaw();
        }
    }
    Ok(())
}

/// kill(2) with a raw signal number (nix's `kill` takes only named signals).
fn send(pid: i32, signo: i32) -> nix::Result<()> {
    // SAFETY: kill(2) takes plain integers and touches no memory of ours.
    let r = unsafe { libc::kill(pid, signo) };
    nix::errno::Errno::result(r).map(drop)
}

/// Signals the init and every process in the container's cgroup; thaws a frozen cgroup after a
/// SIGKILL so the processes can die.
pub fn signal_all(st: &State, sig: impl Into<Option<Signal>>) {
    signal_all_number(st, sig.into().map_or(0, |s| s as i32));
}

fn signal_all_number(st: &State, signo: i32) {
    if st.init_alive() {
        let _ = send(st.pid, signo);
    }
    if let Some(cg) = &st.cgroup {
        for pid in cg.pids().unwrap_or_default() {
            let _ = send(pid, signo);
        }
        if signo == Signal::SIGKILL as i32 && cg.is_frozen().unwrap_or(false) {
            let _ = cg.thaw();
        }
    }
}
