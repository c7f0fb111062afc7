//! Read-only views: `state`, `list`, `ps`, `events --stats`.

use crate::state::{self, State};
use crate::{Error, Result};
use serde::Serialize;
use std::path::Path;

/// `state`: the public state JSON.
pub fn state_json(root: &Path, id: &str) -> Result<String> {
    let st = State::load(root, id)?;
    Ok(st.public_json(st.current_status()))
}

/// One row of `list`.
#[derive(Debug, Serialize)]
pub struct ListEntry {
    #[serde(rename = "ociVersion")]
    pub oci_version: String,
    pub id: String,
    pub pid: i32,
    pub status: String,
    pub bundle: String,
    pub rootfs: String,
    pub created: String,
    pub owner: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub annotations: Option<std::collections::HashMap<String, String>>,
}

pub fn list(root: &Path) -> Result<Vec<ListEntry>> {
    let mut out = Vec::new();
    for id in state::list_ids(root)? {
        let Ok(st) = State::load(root, &id) else {
            continue;
        };
        let status = st.current_status();
        let p = st.public(status);
        out.push(ListEntry {
            oci_version: p.oci_version.to_string(),
            id: id.clone(),
            pid: p.pid,
            status: status.to_string(),
            bundle: st.bundle.display().to_string(),
            rootfs: st.rootfs.display().to_string(),
            created: st.created.clone(),
            owner: dir_owner(&State::dir(root, &id)),
            annotations: st.config.annotations().clone(),
        });
    }
    Ok(out)
}

/// runc's `list` OWNER column: the user owning the container's state directory.
fn dir_owner(dir: &Path) -> String {
    use std::os::unix::fs::MetadataExt;
    let Ok(md) = std::fs::metadata(dir) else {
        return String::new();
    };
    match nix::unistd::User::from_uid(nix::unistd::Uid::from_raw(md.uid())) {
        Ok(Some(u)) => u.name,
        _ => format!("#{}", md.uid()),
    }
}

/// `ps`: the pids of the container's processes (from its cgroup).
pub fn pids(root: &Path, id: &str) -> Result<Vec<i32>> {
    let st = State::load(root, id)?;
    let cg = st
        .cgroup
        .as_ref()
        .ok_or_else(|| Error::Other(format!("container {id:?} has no cgroup")))?;
    let mut pids = cg.pids()?;
    pids.sort_unstable();
    Ok(pids)
}

/// `events --stats`: one stats event as runc prints it.
pub fn stats_event(root: &Path, id: &str) -> Result<serde_json::Value> {
    let st = State::load(root, id)?;
    let cg = st
        .cgroup
        .as_ref()
        .ok_or_else(|| Error::Other(format!("container {id:?} has no cgroup")))?;
    let stats = cg.stats()?;
    Ok(serde_json::json!({"type": "stats", "id": id, "data": stats}))
}
