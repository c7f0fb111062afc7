//! A container's state on disk: `<root>/<id>/state.json`, always written atomically.
//!
//! The `status` stored is the last lifecycle step the runtime completed (`creating`, `created`,
//! `running`); what `state` reports is derived from it and from the live process: a dead init (or
//! a pid that now belongs to another process, told apart by its start time) means `stopped`, a
//! frozen cgroup means `paused`.

use crate::cgroups::Cgroup;
use crate::error::{IoContext, Result};
use crate::{utils, Error};
use oci_spec::runtime::Spec;
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::path::{Path, PathBuf};

pub const STATE_FILE: &str = "state.json";
/// The socket the init listens on while `created`; `start` connects to it to release the init.
pub const START_SOCKET: &str = "start.sock";

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    Creating,
    Created,
    Running,
    Paused,
    Stopped,
}

impl std::fmt::Display for Status {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Status::Creating => "creating",
            Status::Created => "created",
            Status::Running => "running",
            Status::Paused => "paused",
            Status::Stopped => "stopped",
        })
    }
}

/// Everything the runtime keeps about a container between commands.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct State {
    pub id: String,
    pub pid: i32,
    /// Start time of the init (clock ticks since boot), to detect pid reuse.
    pub init_start_time: u64,
    pub status: Status,
    pub bundle: PathBuf,
    pub rootfs: PathBuf,
    pub created: String,
    pub owner: String,
    pub cgroup: Option<Cgroup>,
    /// The spec the container was created with (hooks, namespaces, process defaults for exec).
    pub config: Spec,
}

/// The JSON that `state` prints and hooks receive on stdin (runc's fields).
#[derive(Debug, Serialize)]
pub struct PublicState<'a> {
    #[serde(rename = "ociVersion")]
    pub oci_version: &'a str,
    pub id: &'a str,
    pub pid: i32,
    pub status: Status,
    pub bundle: &'a Path,
    pub rootfs: &'a Path,
    pub created: &'a str,
    pub annotations: HashMap<String, String>,
    pub owner: &'a str,
}

/// Checks a container id the way runc does: letters, digits, `_ + - .`, not `.` or `..`.
pub fn validate_id(id: &str) -> Result<()> {
    if id.is_empty() {
        return Err(Error::InvalidId(id.into(), "empty"));
    }
    if id == "." || id == ".." {
        return Err(Error::InvalidId(id.into(), "not a valid name"));
    }
    if !id
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || "_+-.".contains(c))
    {
        return Err(Error::InvalidId(
            id.into(),
            "only letters, digits and _+-. are allowed",
        ));
    }
    Ok(())
}

impl State {
    pub fn dir(root: &Path, id: &str) -> PathBuf {
        root.join(id)
    }

    /// Loads the state of `id` under `root`, or `NotFound`.
    pub fn load(root: &Path, id: &str) -> Result<State> {
        validate_id(id)?;
        let path = Self::dir(root, id).join(STATE_FILE);
        let data = match std::fs::read(&path) {
            Ok(d) => d,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(Error::NotFound(id.into()))
            }
            Err(e) => return Err(e).io_ctx("read", path),
        };
        serde_json::from_slice(&data)
            .map_err(|e| Error::Other(format!("corrupt state {path:?}: {e}")))
    }

    pub fn save(&self, root: &Path) -> Result<()> {
        let data =
            serde_json::to_vec(self).map_err(|e| Error::Other(format!("encode state: {e}")))?;
        utils::write_atomic(&Self::dir(root, &self.id).join(STATE_FILE), &data)
    }

    /// Whether the init process recorded here is still alive (and is the same process).
    pub fn init_alive(&self) -> bool {
        self.pid > 0
            && utils::process_start_time(self.pid) == Some(self.init_start_time)
            && !matches!(utils::process_state(self.pid), Some('Z' | 'X') | None)
    }

    /// The status as `state` reports it now.
    pub fn current_status(&self) -> Status {
        if self.status == Status::Creating {
            return if self.init_alive() {
                Status::Creating
            } else {
                Status::Stopped
            };
        }
        if !self.init_alive() {
            return Status::Stopped;
        }
        if self.status == Status::Created {
            return Status::Created;
        }
        match &self.cgroup {
            Some(cg) if cg.is_frozen().unwrap_or(false) => Status::Paused,
            _ => Status::Running,
        }
    }

    pub fn public(&self, status: Status) -> PublicState<'_> {
        PublicState {
            oci_version: self.config.version(),
            id: &self.id,
            pid: if status == Status::Stopped {
                0
            } else {
                self.pid
            },
            status,
            bundle: &self.bundle,
            rootfs: &self.rootfs,
            created: &self.created,
            annotations: self.config.annotations().clone().unwrap_or_default(),
            owner: &self.owner,
        }
    }

    /// The state JSON given to hooks and printed by `state`.
    pub fn public_json(&self, status: Status) -> String {
        serde_json::to_string_pretty(&self.public(status)).unwrap_or_default()
    }
}

/// Ids of every container under `root` (those with a state file), sorted.
pub fn list_ids(root: &Path) -> Result<Vec<String>> {
    let rd = match std::fs::read_dir(root) {
        Ok(rd) => rd,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(vec![]),
        Err(e) => return Err(e).io_ctx("read", root),
    };
    let mut ids: Vec<String> = rd
        .flatten()
        .filter(|e| e.path().join(STATE_FILE).exists())
        .filter_map(|e| e.file_name().into_string().ok())
        .collect();
    ids.sort();
    Ok(ids)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_follow_runc_rules() {
        for ok in ["a", "abc-1_2.3+x", "0123456789abcdef"] {
            validate_id(ok).unwrap();
        }
        for bad in ["", ".", "..", "a/b", "a b", "../x", "é"] {
            assert!(validate_id(bad).is_err(), "{bad:?}");
        }
    }
}
