//! The container's root filesystem: mounts, devices, /dev symlinks, masked and read-only paths,
//! pivot_root. Runs inside the init, in the container's new mount namespace.
//!
//! OWNER: rootfs helper. The init calls, in this order:
//! 1. `prepare(spec, rootfs)`: propagation of `/`, bind of the rootfs onto itself, every mount of
//!    the spec (targets resolved inside the rootfs), devices, /dev symlinks, /dev/ptmx.
//! 2. (the runtime runs createContainer hooks here)
//! 3. `pivot(rootfs, no_pivot)`: pivot_root (or chroot with `--no-pivot`), chdir("/").
//! 4. `finalize(spec)`: masked paths, read-only paths, read-only root, rootfsPropagation.

use oci_spec::runtime::Spec;
use std::path::Path;

#[derive(Debug, thiserror::Error)]
pub enum RootfsError {
    #[error("rootfs: {0}")]
    Other(String),
}

/// Step 1: everything that happens before pivot_root. `rootfs` is absolute and canonical.
pub fn prepare(_spec: &Spec, _rootfs: &Path) -> Result<(), RootfsError> {
    todo!()
}

/// Step 3: makes `rootfs` the root of the mount namespace.
pub fn pivot(_rootfs: &Path, _no_pivot: bool) -> Result<(), RootfsError> {
    todo!()
}

/// Step 4: everything that happens after pivot_root.
pub fn finalize(_spec: &Spec) -> Result<(), RootfsError> {
    todo!()
}

/// With `process.terminal`, bind-mounts the pty slave at `/dev/console` (after pivot).
pub fn setup_console(_pty_slave: &Path) -> Result<(), RootfsError> {
    todo!()
}
