//! Capability sets of the container process (bounding, effective, permitted, inheritable, ambient).
//!
//! OWNER: process-attributes helper. The init calls `drop_bounding` while it is still root with
//! full capabilities, then changes uid/gid keeping capabilities (PR_SET_KEEPCAPS), then `apply`.

use oci_spec::runtime::LinuxCapabilities;

/// Drops from the bounding set every capability not in `caps.bounding`.
pub fn drop_bounding(_caps: &LinuxCapabilities) -> crate::Result<()> {
    todo!()
}

/// Sets effective, permitted, inheritable and ambient sets exactly as the spec lists them.
pub fn apply(_caps: &LinuxCapabilities) -> crate::Result<()> {
    todo!()
}
