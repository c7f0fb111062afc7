//! `start`: release a created container's init and run the poststart hooks.

use crate::state::{State, Status};
use crate::{hooks, Error, Result};
use std::io::{Read, Write};
use std::path::Path;

pub fn start(root: &Path, id: &str) -> Result<State> {
    let mut st = State::load(root, id)?;
    let status = st.current_status();
    if status != Status::Created {
        return Err(Error::BadState {
            id: id.into(),
            status: status.to_string(),
            op: "start",
            expected: "created",
        });
    }
    release(root, &st)?;
    st.status = Status::Running;
    st.save(root)?;
    let json = st.public_json(Status::Running);
    if let Err(e) = hooks::run_all_in(
        "poststart",
        st.config
            .hooks()
            .as_ref()
            .and_then(|h| h.poststart().as_ref()),
        &json,
        Some(&st.bundle),
    ) {
        // The spec says to warn and go on; runc instead stops the container and fails, and
        // tools built on runc expect that. Like runc: kill it, report the hook.
        super::kill::signal_all(&st, nix::sys::signal::Signal::SIGKILL);
        let _ = super::wait_gone(&st, std::time::Duration::from_secs(5));
        return Err(e.into());
    }
    Ok(st)
}

/// Tells the init to go on, and waits until it has exec'd the program (EOF on the connection) or
/// reported why it could not.
pub fn release(root: &Path, st: &State) -> Result<()> {
    let dir = State::dir(root, &st.id);
    let mut conn = super::create::connect_start_socket(&dir)?;
    let _ = std::fs::remove_file(dir.join(crate::state::START_SOCKET));
    conn.write_all(&[1])
        .map_err(|e| Error::Other(format!("release init of {:?}: {e}", st.id)))?;
    let mut reply = String::new();
    let _ = conn.read_to_string(&mut reply);
    if !reply.is_empty() {
        return Err(Error::Other(reply));
    }
    Ok(())
}
