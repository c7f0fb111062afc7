//! `pause` and `resume`: freeze and thaw the container's cgroup.

use crate::state::{State, Status};
use crate::{Error, Result};
use std::path::Path;

fn load_cgroup(root: &Path, id: &str, op: &'static str, want: Status) -> Result<State> {
    let st = State::load(root, id)?;
    let status = st.current_status();
    if status != want {
        let expected = if want == Status::Running {
            "running"
        } else {
            "paused"
        };
        return Err(Error::BadState {
            id: id.into(),
            status: status.to_string(),
            op,
            expected,
        });
    }
    if st.cgroup.is_none() {
        return Err(Error::Other(format!("container {id:?} has no cgroup")));
    }
    Ok(st)
}

pub fn pause(root: &Path, id: &str) -> Result<()> {
    let st = load_cgroup(root, id, "pause", Status::Running)?;
    st.cgroup.as_ref().expect("checked").freeze()?;
    Ok(())
}

pub fn resume(root: &Path, id: &str) -> Result<()> {
    let st = load_cgroup(root, id, "resume", Status::Paused)?;
    st.cgroup.as_ref().expect("checked").thaw()?;
    Ok(())
}
