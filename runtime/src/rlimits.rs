//! `process.rlimits`, and `oomScoreAdj`.
//!
//! OWNER: process-attributes helper. Where the host does not allow a value (raising a hard limit
//! without CAP_SYS_RESOURCE, a negative oom_score_adj), the setting is skipped with a warning
//! returned to the caller instead of failing the container (see DESIGN.md).

use oci_spec::runtime::PosixRlimit;

/// Applies the rlimits to the calling process; returns warnings for those the host refused.
pub fn apply(_rlimits: &[PosixRlimit]) -> crate::Result<Vec<String>> {
    todo!()
}

/// Writes `/proc/<pid>/oom_score_adj`; returns a warning if the host refused it.
pub fn set_oom_score_adj(_pid: i32, _value: i32) -> crate::Result<Option<String>> {
    todo!()
}
