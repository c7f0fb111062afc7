//! One spec mount onto its in-root target: runc's `mountToRootfs`.
//!
//! Every target is opened inside the rootfs (`resolve`), created if missing (a directory, or an
//! empty file when a bind source is not a directory), checked against `/proc`, and mounted on
//! through `/proc/self/fd/N`. Changes after the mount (remount for bind flags, propagation,
//! recursive attributes) reopen the target, since the old fd still points below the new mount.

use super::options::{self, MountOpts};
use super::resolve::{self, Kind};
use super::sys::{self as s, fd_path};
use super::{cgroup, sys, Ctx, Result, RootfsError};
use nix::errno::Errno;
use nix::mount::MsFlags;
use nix::sys::stat::{fstat, fstatat, SFlag};
use nix::sys::statfs::{statfs, PROC_SUPER_MAGIC};
use oci_spec::runtime::Mount;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

/// Files below /proc that may be mounted over (lxcfs emulates them), as in runc.
const VALID_PROC_MOUNTS: &[&str] = &[
    "/proc/cpuinfo",
    "/proc/diskstats",
    "/proc/meminfo",
    "/proc/stat",
    "/proc/swaps",
    "/proc/uptime",
    "/proc/loadavg",
    "/proc/slabinfo",
    "/proc/pressure/cpu",
    "/proc/pressure/io",
    "/proc/pressure/memory",
    "/proc/net/dev",
    "/proc/sys/kernel/ns_last_pid",
];

/// Mounts entry number `index` of `spec.mounts`.
pub(crate) fn mount_entry(ctx: &Ctx<'_>, index: usize, m: &Mount) -> Result<()> {
    let dest = resolve::clean_path(m.destination());
    if dest == Path::new("/") {
        return Err(RootfsError::Invalid(format!(
            "mount {:?}: mounting over the container's root is not supported",
            m.destination()
        )));
    }
    let mut opts = options::parse(&dest, m.options().as_deref().unwrap_or(&[]))?;
    let typ = m.typ().as_deref().unwrap_or("");
    if typ == "bind" {
        opts.flags |= MsFlags::MS_BIND;
    }
    let source = m.source().as_deref();
    if opts.is_bind() {
        let src = source.ok_or_else(|| {
            RootfsError::Invalid(format!("mount {dest:?}: a bind mount needs a source"))
        })?;
        return mount_bind(ctx, &dest, src, Some(index), &opts);
    }
    let src = source.and_then(|p| p.to_str()).unwrap_or(typ);
    match typ {
        "cgroup" => cgroup::mount_cgroup(ctx, &dest, &opts),
        "proc" => {
            check_plain_dir(ctx, &dest, typ)?;
            mount_fs(ctx, &dest, src, typ, &opts)
        }
        "sysfs" => {
            check_plain_dir(ctx, &dest, typ)?;
            match mount_fs(ctx, &dest, src, typ, &opts) {
                // A user namespace that does not own the network namespace may not mount
                // sysfs: bind the host's /sys instead, read-only all the way down if asked.
                Err(e) if matches!(e.errno(), Some(Errno::EPERM | Errno::EBUSY)) => {
                    let mut o = opts.clone();
                    o.flags |= MsFlags::MS_BIND | MsFlags::MS_REC;
                    if o.readonly() {
                        o.rec_set |= options::ATTR_RDONLY;
                    }
                    mount_bind(ctx, &dest, Path::new("/sys"), None, &o)
                }
                r => r,
            }
        }
        _ => mount_fs(ctx, &dest, src, typ, &opts),
    }
}

/// A filesystem mount (not a bind) at the in-root path `dest`.
pub(crate) fn mount_fs(
    ctx: &Ctx<'_>,
    dest: &Path,
    src: &str,
    fstype: &str,
    opts: &MountOpts,
) -> Result<()> {
    let root = ctx.root.as_fd();
    // The mode of an existing directory carries over to a tmpfs mounted on it (runc).
    let old_mode = match fstype {
        "tmpfs" if !opts.data.split(',').any(|o| o.starts_with("mode=")) => {
            resolve::open_in_root(root, dest)
                .ok()
                .and_then(|fd| fstat(&fd).ok())
                .map(|st| st.st_mode & 0o7777)
        }
        _ => None,
    };
    let target = create_target(ctx, dest, Kind::Dir)?;
    check_proc_mount(ctx, target.as_fd(), dest, fstype == "proc", None)?;
    // tmpfs and /dev stay writable until the files in them are made (runc).
    let defer_ro = fstype == "tmpfs" || dest == Path::new("/dev");
    let mut flags = opts.flags;
    if defer_ro {
        flags.remove(MsFlags::MS_RDONLY);
    }
    let fstype_arg = (!fstype.is_empty()).then_some(fstype);
    s::mount_fs(
        Some(src),
        &fd_path(target.as_fd()),
        fstype_arg,
        flags,
        &opts.data,
    )
    .map_err(sys(format!("mount {dest:?} (type {fstype})")))?;
    drop(target);
    let target = reopen(ctx, dest)?;
    if let Some(mode) = old_mode {
        std::fs::set_permissions(
            fd_path(target.as_fd()),
            std::fs::Permissions::from_mode(mode),
        )
        .map_err(|e| sys(format!("chmod {dest:?}"))(io_errno(&e)))?;
    }
    if defer_ro && opts.readonly() && dest != Path::new("/dev") {
        s::remount_bind(target.as_fd(), flags | MsFlags::MS_RDONLY)
            .map_err(sys(format!("remount {dest:?} read-only")))?;
    }
    finish(target.as_fd(), dest, opts)
}

/// A bind mount of the host path `src` at the in-root path `dest`.
///
/// The source is the one the runtime opened for mount number `index` of the spec if it did
/// (`ctx.sources`), else looked up here.
pub(crate) fn mount_bind(
    ctx: &Ctx<'_>,
    dest: &Path,
    src: &Path,
    index: Option<usize>,
    opts: &MountOpts,
) -> Result<()> {
    let opened = index.and_then(|i| ctx.sources.get(i)).map(fd_path);
    let from = opened.as_deref().map_or(src, Path::new);
    let meta = std::fs::metadata(from)
        .map_err(|e| sys(format!("mount {dest:?}: stat bind source {src:?}"))(io_errno(&e)))?;
    let kind = if meta.is_dir() {
        Kind::Dir
    } else {
        Kind::File(0o755)
    };
    let target = create_target(ctx, dest, kind)?;
    check_proc_mount(ctx, target.as_fd(), dest, false, Some(from))?;
    let rec = opts.flags.contains(MsFlags::MS_REC);
    s::bind(from, fd_path(target.as_fd()), rec)
        .map_err(sys(format!("mount {dest:?} (bind {src:?})")))?;
    drop(target);
    let target = reopen(ctx, dest)?;
    // A bind mount ignores the other flags: they need a remount.
    let rest = opts.flags & !(MsFlags::MS_REC | MsFlags::MS_REMOUNT | MsFlags::MS_BIND);
    if !rest.is_empty() {
        s::remount_bind(target.as_fd(), opts.flags).map_err(sys(format!(
            "remount {dest:?} (bind {src:?}) with {rest:?}"
        )))?;
    }
    finish(target.as_fd(), dest, opts)
}

/// Propagation changes and recursive attributes, on the mount now at `target`.
fn finish(target: BorrowedFd<'_>, dest: &Path, opts: &MountOpts) -> Result<()> {
    for p in &opts.propagation {
        s::mount_flags(fd_path(target), *p)
            .map_err(sys(format!("set propagation of {dest:?} to {p:?}")))?;
    }
    if opts.rec_set != 0 || opts.rec_clr != 0 {
        s::setattr_recursive(target, opts.rec_set, opts.rec_clr)
            .map_err(sys(format!("mount_setattr {dest:?} (recursive options)")))?;
    }
    Ok(())
}

pub(crate) fn create_target(ctx: &Ctx<'_>, dest: &Path, kind: Kind) -> Result<OwnedFd> {
    resolve::ensure(ctx.root.as_fd(), dest, kind)
        .map_err(sys(format!("create mount target {dest:?}")))
}

pub(crate) fn reopen(ctx: &Ctx<'_>, dest: &Path) -> Result<OwnedFd> {
    resolve::open_in_root(ctx.root.as_fd(), dest)
        .map_err(sys(format!("open mount target {dest:?} after mounting")))
}

/// proc and sysfs go on ordinary directories only: never on a symlink or a file (runc).
fn check_plain_dir(ctx: &Ctx<'_>, dest: &Path, fstype: &str) -> Result<()> {
    let (parent, name) = resolve::ensure_parent(ctx.root.as_fd(), dest)
        .map_err(sys(format!("create mount target {dest:?}")))?;
    match fstatat(
        &parent,
        name.as_os_str(),
        nix::fcntl::AtFlags::AT_SYMLINK_NOFOLLOW,
    ) {
        Ok(st)
            if SFlag::from_bits_truncate(st.st_mode & SFlag::S_IFMT.bits()) != SFlag::S_IFDIR =>
        {
            Err(RootfsError::Invalid(format!(
                "mount {dest:?} (type {fstype}): it must be mounted on ordinary directory (the target is a symlink or a file)"
            )))
        }
        Ok(_) | Err(Errno::ENOENT) => Ok(()),
        Err(e) => Err(sys(format!("stat mount target {dest:?}"))(e)),
    }
}

/// Refuses targets that resolve outside the rootfs (never expected) and mounts into /proc
/// other than procfs itself and the few files lxcfs emulates (runc's `checkProcMount`).
fn check_proc_mount(
    ctx: &Ctx<'_>,
    target: BorrowedFd<'_>,
    dest: &Path,
    is_proc: bool,
    bind_src: Option<&Path>,
) -> Result<()> {
    let real = resolve::real_path(target, ctx.rootfs)
        .map_err(sys(format!("read back mount target {dest:?}")))?
        .ok_or_else(|| {
            RootfsError::Invalid(format!(
                "mount {dest:?}: the target resolves outside the rootfs"
            ))
        })?;
    let Ok(below) = real.strip_prefix("/proc") else {
        return Ok(());
    };
    if below.as_os_str().is_empty() {
        let src_is_proc = bind_src
            .and_then(|s| statfs(s).ok())
            .is_some_and(|st| st.filesystem_type() == PROC_SUPER_MAGIC);
        if is_proc || src_is_proc {
            return Ok(());
        }
        return Err(RootfsError::Invalid(format!(
            "mount {dest:?}: {real:?} cannot be mounted because it is not of type proc"
        )));
    }
    if VALID_PROC_MOUNTS.iter().any(|v| Path::new(v) == real) {
        return Ok(());
    }
    Err(RootfsError::Invalid(format!(
        "mount {dest:?}: {real:?} cannot be mounted because it is inside /proc"
    )))
}

pub(crate) fn io_errno(e: &std::io::Error) -> Errno {
    Errno::from_raw(e.raw_os_error().unwrap_or(libc::EIO))
}

/// umask(0) for the scope of the guard, so modes from the spec are exact.
pub(crate) struct Umask(libc::mode_t);

impl Umask {
    pub fn zero() -> Self {
        // SAFETY: umask cannot fail.
        Self(unsafe { libc::umask(0) })
    }
}

impl Drop for Umask {
    fn drop(&mut self) {
        // SAFETY: umask cannot fail.
        unsafe { libc::umask(self.0) };
    }
}
