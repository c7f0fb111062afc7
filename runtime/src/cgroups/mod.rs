//! Cgroups for a container: cgroup v2 (unified), v1, and the hybrid layout (v1 controllers plus
//! a cgroup2 mount at `/sys/fs/cgroup/unified`).
//!
//! OWNER: cgroups helper. The interface below is what the rest of the runtime calls; bodies are
//! filled in by the owner of this module.

use oci_spec::runtime::LinuxResources;
use serde::{Deserialize, Serialize};
use std::os::fd::OwnedFd;
use std::path::Path;

#[derive(Debug, thiserror::Error)]
pub enum CgroupError {
    #[error("cgroup: {0}")]
    Other(String),
}

/// Where a container's cgroup lives in each hierarchy. Saved in the container's state so that
/// later commands (`kill --all`, `pause`, `update`, `delete`) act on the same cgroup.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Cgroup {
    /// The path inside the hierarchy, e.g. `/berth/<id>` or the spec's absolute `cgroupsPath`.
    pub path: String,
}

/// Resource usage, for `events --stats` (fields follow runc's `events` JSON).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Stats {}

impl Cgroup {
    /// Resolves the cgroup for container `id` from the spec's `cgroupsPath` (absolute, relative or
    /// absent). Creates nothing.
    pub fn resolve(_cgroups_path: Option<&Path>, _id: &str) -> Result<Self, CgroupError> {
        todo!()
    }
    /// Creates the cgroup directories (in every hierarchy that applies). Idempotent.
    pub fn create(&self) -> Result<(), CgroupError> {
        todo!()
    }
    /// On a pure cgroup v2 host, an fd of the cgroup directory for `clone3(CLONE_INTO_CGROUP)`.
    pub fn clone_into_fd(&self) -> Option<OwnedFd> {
        todo!()
    }
    /// Moves `pid` into the cgroup in every hierarchy (not needed after `CLONE_INTO_CGROUP`).
    pub fn add_pid(&self, _pid: i32) -> Result<(), CgroupError> {
        todo!()
    }
    /// Applies resources; returns warnings for settings this host cannot honour.
    pub fn apply(&self, _res: &LinuxResources) -> Result<Vec<String>, CgroupError> {
        todo!()
    }
    pub fn freeze(&self) -> Result<(), CgroupError> {
        todo!()
    }
    pub fn thaw(&self) -> Result<(), CgroupError> {
        todo!()
    }
    pub fn is_frozen(&self) -> Result<bool, CgroupError> {
        todo!()
    }
    /// Every pid in the cgroup (recursively).
    pub fn pids(&self) -> Result<Vec<i32>, CgroupError> {
        todo!()
    }
    pub fn stats(&self) -> Result<Stats, CgroupError> {
        todo!()
    }
    /// Removes the cgroup directories (waits briefly for the cgroup to empty). Idempotent.
    pub fn destroy(&self) -> Result<(), CgroupError> {
        todo!()
    }
}
