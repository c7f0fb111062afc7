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
    crate::log::debug(&format!("update {id}: {res:?}"));
    let warnings = cg.apply(res)?;
    if let Some(linux) = st.config.linux_mut() {
        let mut saved = linux.resources().clone().unwrap_or_default();
        merge(&mut saved, res);
        linux.set_resources(Some(saved));
    }
    st.save(root)?;
    Ok(warnings)
}

/// Records an update in the saved resources: what the update names replaces what was there,
/// the rest (devices, say, which `update` does not change) stays.
fn merge(saved: &mut LinuxResources, update: &LinuxResources) {
    if update.memory().is_some() {
        saved.set_memory(*update.memory());
    }
    if update.cpu().is_some() {
        saved.set_cpu(update.cpu().clone());
    }
    if update.pids().is_some() {
        saved.set_pids(*update.pids());
    }
    if update.block_io().is_some() {
        saved.set_block_io(update.block_io().clone());
    }
    if update.hugepage_limits().is_some() {
        saved.set_hugepage_limits(update.hugepage_limits().clone());
    }
    if update.network().is_some() {
        saved.set_network(update.network().clone());
    }
    if update.unified().is_some() {
        saved.set_unified(update.unified().clone());
    }
}
