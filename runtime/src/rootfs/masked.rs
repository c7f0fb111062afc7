//! What `finalize` does after pivot_root: read-only /dev, read-only root, read-only paths and
//! masked paths (runc's `finalizeRootfs`, `readonlyPath`, `maskPath`, `setReadonly`).
//!
//! These run with the container's root as `/`, so their paths resolve inside it by
//! construction; paths that do not exist are skipped, as in runc.

use super::sys::{self as s};
use super::{resolve, sys, Result};
use nix::errno::Errno;
use nix::fcntl::{open, OFlag};
use nix::mount::MsFlags;
use nix::sys::stat::{fstat, Mode, SFlag};
use nix::sys::statvfs::statvfs;
use oci_spec::runtime::Spec;
use std::os::fd::AsFd;
use std::path::Path;

/// A /dev mount of the spec with "ro" was mounted writable so devices could be made in it.
pub(crate) fn readonly_dev(spec: &Spec) -> Result<()> {
    let Some(m) = spec
        .mounts()
        .iter()
        .flatten()
        .find(|m| resolve::clean_path(m.destination()) == Path::new("/dev"))
    else {
        return Ok(());
    };
    let ro = m
        .options()
        .iter()
        .flatten()
        .fold(false, |ro, o| match o.as_str() {
            "ro" => true,
            "rw" => false,
            _ => ro,
        });
    if !ro {
        return Ok(());
    }
    let fd = open(
        "/dev",
        OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
        Mode::empty(),
    )
    .map_err(sys("open \"/dev\""))?;
    s::remount_bind(fd.as_fd(), MsFlags::MS_RDONLY).map_err(sys("remount \"/dev\" read-only"))
}

/// `root.readonly`: remount `/` read-only, keeping flags that may be locked.
pub(crate) fn set_root_readonly() -> Result<()> {
    let flags = MsFlags::MS_BIND | MsFlags::MS_REMOUNT | MsFlags::MS_RDONLY;
    match s::mount_flags("/", flags) {
        Ok(()) => Ok(()),
        Err(_) => {
            let st = statvfs("/").map_err(sys("statfs \"/\""))?;
            let cur =
                MsFlags::from_bits_truncate(st.flags().bits() as libc::c_ulong) & s::PER_MOUNT;
            s::mount_flags("/", flags | cur).map_err(sys("remount \"/\" read-only"))
        }
    }
}

/// A bind of `path` onto itself, remounted read-only; nosuid/nodev/noexec of the underlying
/// mount are kept.
pub(crate) fn readonly_path(path: &Path) -> Result<()> {
    match s::bind(path, path, true) {
        Ok(()) => {}
        Err(Errno::ENOENT) => return Ok(()),
        Err(e) => return Err(sys(format!("mount {path:?} (bind for read-only path)"))(e)),
    }
    let st = statvfs(path).map_err(sys(format!("statfs {path:?}")))?;
    let keep = MsFlags::from_bits_truncate(st.flags().bits() as libc::c_ulong)
        & (MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC);
    s::mount_flags(
        path,
        keep | MsFlags::MS_BIND | MsFlags::MS_REMOUNT | MsFlags::MS_RDONLY,
    )
    .map_err(sys(format!("remount {path:?} read-only")))
}

/// Hides `path`: /dev/null over a file, an empty read-only tmpfs over a directory.
pub(crate) fn mask_path(path: &Path) -> Result<()> {
    let fd = match open(path, OFlag::O_PATH | OFlag::O_CLOEXEC, Mode::empty()) {
        Ok(fd) => fd,
        Err(Errno::ENOENT) => return Ok(()),
        Err(e) => return Err(sys(format!("open masked path {path:?}"))(e)),
    };
    let st = fstat(&fd).map_err(sys(format!("stat masked path {path:?}")))?;
    // Through the fd, so the mount lands on what was checked; by path without a procfs.
    let target = if Path::new("/proc/self/fd").is_dir() {
        s::fd_path(fd.as_fd())
    } else {
        path.to_string_lossy().into_owned()
    };
    if SFlag::from_bits_truncate(st.st_mode & SFlag::S_IFMT.bits()) == SFlag::S_IFDIR {
        s::mount_fs(
            Some("tmpfs"),
            &target,
            Some("tmpfs"),
            MsFlags::MS_RDONLY,
            "",
        )
        .map_err(sys(format!("mount {path:?} (tmpfs to mask it)")))
    } else {
        s::bind("/dev/null", &target, false).map_err(sys(format!(
            "mount {path:?} (bind of /dev/null to mask it)"
        )))
    }
}
