//! The container's root filesystem: mounts, devices, /dev symlinks, masked and read-only paths,
//! pivot_root. Runs inside the init, in the container's new mount namespace. The behaviour
//! follows runc's `libcontainer/rootfs_linux.go`.
//!
//! OWNER: rootfs helper. The init calls, in this order:
//! 1. `prepare(spec, rootfs)`: propagation of `/`, bind of the rootfs onto itself, every mount of
//!    the spec (targets resolved inside the rootfs), devices, /dev symlinks, /dev/ptmx. In a
//!    user namespace, bind sources come opened by the runtime (`prepare_with`, `sources`).
//! 2. (the runtime runs createContainer hooks here)
//! 3. `pivot(rootfs, no_pivot)`: pivot_root (or chroot with `--no-pivot`), chdir("/").
//! 4. `setup_console(pty_slave)` when `process.terminal` is set.
//! 5. `finalize(spec)`: rootfsPropagation, read-only /dev, read-only root, read-only paths,
//!    masked paths, umask 022.
//!
//! Terms:
//! - **in-root path**: a path such as `/var/run` read as if `rootfs` were `/`. Every mount
//!   target is such a path; it is resolved by the kernel (`openat2` with `RESOLVE_IN_ROOT`) or,
//!   where that is missing, component by component (`resolve`), so that symlinks in the image,
//!   absolute or full of `..`, can never lead outside the rootfs. The mount then goes onto the
//!   opened target through `/proc/self/fd/N`, never through a path the image could change.
//! - **locked flags**: mount flags (nosuid, nodev, noexec, ro, atime) that a user namespace
//!   inherited from a more privileged one and cannot clear; remounts carry them over.
//!
//! What the caller must provide: `prepare` runs before pivot_root and needs the host's procfs at
//! `/proc` (for `/proc/self/fd/N` and `/proc/self/mountinfo`) and the host's `/dev` (device nodes
//! are bind-mounted from it in a user namespace). The init must already be in its cgroup (and
//! in its cgroup namespace, if it has one) when `prepare` runs. `finalize` and `setup_console`
//! run after `pivot` and only see the container's own files.

mod cgroup;
mod devices;
mod masked;
mod mountinfo;
mod mounts;
mod options;
mod pivot;
mod resolve;
pub mod sources;
mod sys;
#[cfg(test)]
mod tests;

use nix::errno::Errno;
use nix::fcntl::{open, OFlag};
use nix::mount::MsFlags;
use nix::sys::stat::Mode;
use oci_spec::runtime::{LinuxNamespaceType, Spec};
use std::path::Path;

pub use sources::{
    open_in_mount_ns as open_bind_sources_in_mount_ns, wanted as wants_bind_sources, BindSources,
};

/// An error while building the root filesystem. Messages are one line and name the path and
/// the operation, e.g. `mount "/proc" (type proc): Operation not permitted`.
#[derive(Debug, thiserror::Error)]
pub enum RootfsError {
    /// A system call failed; `what` names the call and the path it was about.
    #[error("{what}: {}", .errno.desc())]
    Sys { what: String, errno: Errno },
    /// The spec asks for something this runtime refuses or does not support.
    #[error("{0}")]
    Invalid(String),
    #[error("rootfs: {0}")]
    Other(String),
}

impl RootfsError {
    /// The errno of a failed system call, if that is what this error is.
    pub fn errno(&self) -> Option<Errno> {
        match self {
            RootfsError::Sys { errno, .. } => Some(*errno),
            _ => None,
        }
    }
}

pub(crate) type Result<T, E = RootfsError> = std::result::Result<T, E>;

/// `map_err(sys("mount \"/x\""))`: wraps an errno with the operation that failed.
pub(crate) fn sys(what: impl Into<String>) -> impl FnOnce(Errno) -> RootfsError {
    let what = what.into();
    move |errno| RootfsError::Sys { what, errno }
}

/// What every step of `prepare` needs: the rootfs, an `O_PATH` fd on it, and the namespaces.
pub(crate) struct Ctx<'a> {
    pub rootfs: &'a Path,
    pub root: std::os::fd::OwnedFd,
    /// Device nodes cannot be created: bind-mount them from the host.
    pub userns: bool,
    /// The container has a cgroup namespace (its own cgroup shows as `/`).
    pub cgroupns: bool,
    /// Bind sources the runtime opened on the host side.
    pub sources: &'a BindSources,
}

/// Whether recursive mount options ("rro", "rnosuid", ...) work on this kernel (asked once).
pub fn recursive_mount_options_supported() -> bool {
    static HAS: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *HAS.get_or_init(sys::has_mount_setattr)
}

/// Step 1: everything that happens before pivot_root. `rootfs` is absolute and canonical.
pub fn prepare(spec: &Spec, rootfs: &Path) -> Result<(), RootfsError> {
    prepare_with(spec, rootfs, &BindSources::none(), &mut || Ok(()))
}

/// [`prepare`], bind-mounting from `sources` where they have the source, and calling
/// `before_cgroup` before the first `cgroup` mount (which reads the process's own cgroup, so the
/// process must be in it by then).
pub fn prepare_with(
    spec: &Spec,
    rootfs: &Path,
    sources: &BindSources,
    before_cgroup: &mut dyn FnMut() -> Result<(), RootfsError>,
) -> Result<(), RootfsError> {
    let linux = spec.linux().as_ref();
    let propagation = match linux.and_then(|l| l.rootfs_propagation().as_deref()) {
        Some(p) if !p.is_empty() => options::root_propagation(p)?,
        _ => MsFlags::MS_SLAVE | MsFlags::MS_REC,
    };
    sys::mount_flags("/", propagation).map_err(sys("set propagation of \"/\""))?;
    pivot::make_parent_private(rootfs)?;
    sys::bind(rootfs, rootfs, true)
        .map_err(sys(format!("bind-mount the rootfs {rootfs:?} onto itself")))?;
    let root = open(
        rootfs,
        OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
        Mode::empty(),
    )
    .map_err(sys(format!("open rootfs {rootfs:?}")))?;

    let has_ns = |t: LinuxNamespaceType| {
        linux
            .and_then(|l| l.namespaces().as_ref())
            .is_some_and(|ns| ns.iter().any(|n| n.typ() == t))
    };
    let ctx = Ctx {
        rootfs,
        root,
        userns: has_ns(LinuxNamespaceType::User) || sys::in_user_namespace(),
        cgroupns: has_ns(LinuxNamespaceType::Cgroup),
        sources,
    };
    // `cgroup` mounts read the process's own cgroup, which the parent may still be setting up
    // (see `before_cgroup`): do them last, unless another mount goes inside one of them.
    let all: Vec<(usize, &oci_spec::runtime::Mount)> =
        spec.mounts().iter().flatten().enumerate().collect();
    let is_cg = |m: &oci_spec::runtime::Mount| m.typ().as_deref() == Some("cgroup");
    let nested = all.iter().filter(|(_, m)| is_cg(m)).any(|(_, cg)| {
        all.iter()
            .any(|(_, m)| !is_cg(m) && m.destination().starts_with(cg.destination()))
    });
    let (first, last): (Vec<_>, Vec<_>) = if nested {
        (all, Vec::new())
    } else {
        all.into_iter().partition(|(_, m)| !is_cg(m))
    };
    for (i, m) in first {
        if is_cg(m) {
            before_cgroup()?;
        }
        mounts::mount_entry(&ctx, i, m)?;
    }
    if devices::needs_setup_dev(spec) {
        devices::create_devices(&ctx, linux.and_then(|l| l.devices().as_deref()))?;
        devices::setup_ptmx(&ctx)?;
        devices::setup_dev_symlinks(&ctx)?;
    }
    for (i, m) in last {
        before_cgroup()?;
        mounts::mount_entry(&ctx, i, m)?;
    }
    Ok(())
}

/// Step 3: makes `rootfs` the root of the mount namespace.
pub fn pivot(rootfs: &Path, no_pivot: bool) -> Result<(), RootfsError> {
    if no_pivot {
        pivot::ms_move_root(rootfs)?;
    } else {
        pivot::pivot_root(rootfs)?;
    }
    pivot::reopen_dev_null();
    Ok(())
}

/// Step 4: everything that happens after pivot_root.
pub fn finalize(spec: &Spec) -> Result<(), RootfsError> {
    let linux = spec.linux().as_ref();
    // After pivot_root: applied to the container's `/`, so it cannot change the host's mount.
    if let Some(p) = linux.and_then(|l| l.rootfs_propagation().as_deref()) {
        if !p.is_empty() {
            let flags = options::root_propagation(p)?;
            sys::mount_flags("/", flags).map_err(sys(format!("set propagation of \"/\" ({p})")))?;
        }
    }
    masked::readonly_dev(spec)?;
    if spec.root().as_ref().and_then(|r| r.readonly()) == Some(true) {
        masked::set_root_readonly()?;
    }
    for p in linux
        .and_then(|l| l.readonly_paths().as_ref())
        .into_iter()
        .flatten()
    {
        masked::readonly_path(Path::new(p))?;
    }
    for p in linux
        .and_then(|l| l.masked_paths().as_ref())
        .into_iter()
        .flatten()
    {
        masked::mask_path(Path::new(p))?;
    }
    // SAFETY: umask cannot fail; runc leaves the container's files with 022 until the process
    // attributes (user.umask) are applied.
    unsafe { libc::umask(0o022) };
    Ok(())
}

/// With `process.terminal`, bind-mounts the pty slave at `/dev/console` (after pivot).
pub fn setup_console(pty_slave: &Path) -> Result<(), RootfsError> {
    devices::mount_console(pty_slave)
}
