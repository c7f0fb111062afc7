//! `update`: change the resources of a running container.

use crate::state::{State, Status};
use crate::{Error, Result};
use oci_spec::runtime::LinuxResources;
use std::path::Path;

/// Applies `res` to the container's cgroup and records it in the saved spec.
pub fn update(root: &Path, id: &str, res: &LinuxResources) -> Result<Vec<String>> {
    let mut st = State::load(root, id)?;
    let status = st.current_status();
    if status == Status::Stopped {
        return Err(Error::BadState {
            id: id.into(),
            status: status.to_string(),
            op: "update",
            expected: "created, running or paused",
        });
    }
    let cg = st
        .cgroup
        .clone()
        .ok_or_else(|| Error::Other(format!("container {id:?} has no cgroup")))?;
    let warnings = cg.apply(res)?;
    if let Some(linux) = st.config.linux_mut() {
        linux.set_resources(Some(res.clone()));
    }
    st.save(root)?;
    Ok(warnings)
}
