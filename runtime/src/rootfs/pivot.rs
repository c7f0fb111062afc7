//! Making the rootfs the container's `/` (runc's `pivotRoot` and `msMoveRoot`).
//!
//! pivot_root(".", ".") stacks the old root on top of the new one at `/`; unmounting `.` (the
//! old root, after it was made rslave so the unmount cannot reach the host) leaves only the
//! new root. No fd on a host directory survives: both fds here are close-on-exec and dropped
//! before returning, and the cwd ends up at the new `/` (CVE-2024-21626 class).

use super::mountinfo;
use super::sys::{self as s};
use super::{sys, Result};
use nix::errno::Errno;
use nix::fcntl::{open, OFlag};
use nix::mount::{umount2, MntFlags, MsFlags};
use nix::sys::stat::{fstat, major, minor, Mode, SFlag};
use nix::unistd::{chdir, chroot, fchdir, pivot_root as sys_pivot_root};
use std::os::fd::{AsFd, AsRawFd};
use std::path::{Path, PathBuf};

fn open_dir(p: &Path) -> Result<std::os::fd::OwnedFd> {
    open(
        p,
        OFlag::O_DIRECTORY | OFlag::O_RDONLY | OFlag::O_CLOEXEC,
        Mode::empty(),
    )
    .map_err(sys(format!("open {p:?}")))
}

pub(crate) fn pivot_root(rootfs: &Path) -> Result<()> {
    let old_root = open_dir(Path::new("/"))?;
    let new_root = open_dir(rootfs)?;
    fchdir(&new_root).map_err(sys(format!("chdir {rootfs:?}")))?;
    sys_pivot_root(".", ".").map_err(sys(format!("pivot_root {rootfs:?}")))?;
    // "." is now the old root, mounted on top of the new one.
    fchdir(&old_root).map_err(sys("chdir to the old root"))?;
    s::mount_flags(".", MsFlags::MS_SLAVE | MsFlags::MS_REC)
        .map_err(sys("make the old root rslave"))?;
    umount2(".", MntFlags::MNT_DETACH).map_err(sys("unmount the old root"))?;
    drop(old_root);
    drop(new_root);
    chdir("/").map_err(sys("chdir \"/\""))
}

/// `--no-pivot`: hide the host's procfs and sysfs mounts (the kernel looks at every mount of the
/// namespace when it decides whether procfs may be mounted again), move the rootfs onto `/`
/// and chroot into it.
pub(crate) fn ms_move_root(rootfs: &Path) -> Result<()> {
    let under_rootfs = |p: &Path| p == rootfs || p.starts_with(rootfs);
    let mut hide: Vec<PathBuf> = mountinfo::read()?
        .into_iter()
        .filter(|m| (m.fstype == "proc" || m.fstype == "sysfs") && !under_rootfs(&m.mount_point))
        .map(|m| m.mount_point)
        .collect();
    // Deepest first, so that a parent unmount does not hide a child we still have to handle.
    hide.sort_by_key(|p| std::cmp::Reverse(p.components().count()));
    for p in hide {
        match s::mount_flags(&p, MsFlags::MS_SLAVE | MsFlags::MS_REC) {
            Ok(()) => {}
            Err(Errno::ENOENT | Errno::EINVAL) => continue,
            Err(e) => return Err(sys(format!("make {p:?} rslave"))(e)),
        }
        match umount2(&p, MntFlags::MNT_DETACH) {
            Ok(()) | Err(Errno::ENOENT) => {}
            Err(Errno::EINVAL | Errno::EPERM) => {
                // Not allowed to unmount it (locked in a user namespace): cover it instead.
                s::mount_fs(
                    Some("tmpfs"),
                    &p.to_string_lossy(),
                    Some("tmpfs"),
                    MsFlags::empty(),
                    "",
                )
                .map_err(sys(format!("cover {p:?} with a tmpfs")))?;
            }
            Err(e) => return Err(sys(format!("unmount {p:?}"))(e)),
        }
    }
    chdir(rootfs).map_err(sys(format!("chdir {rootfs:?}")))?;
    nix::mount::mount(
        Some(rootfs),
        "/",
        None::<&str>,
        MsFlags::MS_MOVE,
        None::<&str>,
    )
    .map_err(sys(format!("move the rootfs {rootfs:?} onto \"/\"")))?;
    chroot(".").map_err(sys(format!("chroot {rootfs:?}")))?;
    chdir("/").map_err(sys("chdir \"/\""))
}

/// Stdio that points at the host's /dev/null is pointed at the container's (runc's
/// `reOpenDevNull`). Best effort: a container without /dev/null keeps what it has.
pub(crate) fn reopen_dev_null() {
    let Ok(null) = open("/dev/null", OFlag::O_RDWR | OFlag::O_CLOEXEC, Mode::empty()) else {
        return;
    };
    let Ok(nst) = fstat(&null) else { return };
    let is_null = |st: &nix::sys::stat::FileStat| {
        SFlag::from_bits_truncate(st.st_mode & SFlag::S_IFMT.bits()) == SFlag::S_IFCHR
            && major(st.st_rdev) == 1
            && minor(st.st_rdev) == 3
    };
    if !is_null(&nst) {
        return;
    }
    for fd in 0..3 {
        // SAFETY: fds 0-2 belong to this process for its whole life; borrowing one for fstat
        // does not close or transfer it.
        let b = unsafe { std::os::fd::BorrowedFd::borrow_raw(fd) };
        if fstat(b).is_ok_and(|st| is_null(&st) && st.st_dev != nst.st_dev) {
            // SAFETY: dup3 onto a standard fd replaces it atomically; `null` stays valid.
            unsafe { libc::dup3(null.as_fd().as_raw_fd(), fd, 0) };
        }
    }
}

/// pivot_root refuses a new root whose parent mount is shared, and a bind of the rootfs under
/// a shared mount would propagate to the host: make that parent private (runc's
/// `rootfsParentMountPrivate`).
pub(crate) fn make_parent_private(rootfs: &Path) -> Result<()> {
    let mounts = mountinfo::read()?;
    // The last of the longest matches: the mount on top where mounts are stacked.
    let parent = mounts
        .iter()
        .filter(|m| rootfs.starts_with(&m.mount_point))
        .max_by_key(|m| m.mount_point.components().count());
    if let Some(m) = parent {
        if m.optional.split(' ').any(|o| o.starts_with("shared:")) {
            s::mount_flags(&m.mount_point, MsFlags::MS_PRIVATE).map_err(sys(format!(
                "make the parent mount {:?} private",
                m.mount_point
            )))?;
        }
    }
    Ok(())
}
