//! `delete`: end what is left of a container, remove its cgroup and state, run poststop hooks.

use crate::state::{State, Status};
use crate::{hooks, Error, Result};
use nix::sys::signal::Signal;
use std::path::Path;
use std::time::Duration;

pub fn delete(root: &Path, id: &str, force: bool) -> Result<()> {
    let st = match State::load(root, id) {
        Ok(st) => st,
        Err(Error::NotFound(_)) => {
            // A create that died before writing state.json may have left the directory.
            crate::state::validate_id(id)?;
            let dir = State::dir(root, id);
            if dir.exists() {
                let _ = std::fs::remove_dir_all(&dir);
                if force {
                    return Ok(());
                }
            }
            if force {
                return Ok(());
            }
            return Err(Error::NotFound(id.into()));
        }
        Err(e) => return Err(e),
    };
    let status = st.current_status();
    if matches!(status, Status::Running | Status::Paused) && !force {
        return Err(Error::Other(format!(
            "cannot delete container {id:?} that is not stopped: {status}"
        )));
    }
    destroy(root, &st)
}

/// Kills every process of the container, removes its cgroup and state dir, runs poststop hooks.
pub fn destroy(root: &Path, st: &State) -> Result<()> {
    super::kill::signal_all(st, Signal::SIGKILL);
    if !super::wait_gone(st, Duration::from_secs(10)) {
        return Err(Error::Other(format!(
            "container {:?}: init (pid {}) did not die after SIGKILL",
            st.id, st.pid
        )));
    }
    if let Some(cg) = &st.cgroup {
        // Processes outside the init's PID namespace (none shared) may take a moment to go.
        for _ in 0..50 {
            let pids = cg.pids().unwrap_or_default();
            if pids.is_empty() {
                break;
            }
            for p in pids {
                let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(p), Signal::SIGKILL);
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        cg.destroy()?;
    }
    let json = st.public_json(Status::Stopped);
    if let Err(e) = hooks::run_all_in(
        "poststop",
        st.config
            .hooks()
            .as_ref()
            .and_then(|h| h.poststop().as_ref()),
        &json,
        Some(&st.bundle),
    ) {
        super::warn(&e.to_string());
    }
    let dir = State::dir(root, &st.id);
    std::fs::remove_dir_all(&dir)
        .map_err(|e| Error::Other(format!("remove state {dir:?}: {e}")))?;
    Ok(())
}
