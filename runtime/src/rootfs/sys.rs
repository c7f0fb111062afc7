//! Thin wrappers over the mount system calls used by this module.

use nix::errno::Errno;
use nix::mount::{mount, MsFlags};
use nix::sys::statvfs::fstatvfs;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd};
use std::path::Path;

/// The path through which a mount lands exactly on the file `fd` refers to.
pub(super) fn fd_path(fd: BorrowedFd<'_>) -> String {
    format!("/proc/self/fd/{}", fd.as_raw_fd())
}

/// `mount(src, target, fstype, flags, data)` with an empty `data` passed as NULL.
pub(super) fn mount_fs(
    src: Option<&str>,
    target: &str,
    fstype: Option<&str>,
    flags: MsFlags,
    data: &str,
) -> nix::Result<()> {
    let data = (!data.is_empty()).then_some(data);
    mount(src, target, fstype, flags, data)
}

/// A propagation or flags-only change of the mount at `target`.
pub(super) fn mount_flags(target: impl AsRef<Path>, flags: MsFlags) -> nix::Result<()> {
    mount(
        None::<&str>,
        target.as_ref(),
        None::<&str>,
        flags,
        None::<&str>,
    )
}

/// Bind `src` onto `target` (recursively with `rec`).
pub(super) fn bind(src: impl AsRef<Path>, target: impl AsRef<Path>, rec: bool) -> nix::Result<()> {
    let mut flags = MsFlags::MS_BIND;
    if rec {
        flags |= MsFlags::MS_REC;
    }
    mount(
        Some(src.as_ref()),
        target.as_ref(),
        None::<&str>,
        flags,
        None::<&str>,
    )
}

/// Flags a bind remount can change on one mount (not the superblock).
pub(super) const PER_MOUNT: MsFlags = MsFlags::MS_RDONLY
    .union(MsFlags::MS_NOSUID)
    .union(MsFlags::MS_NODEV)
    .union(MsFlags::MS_NOEXEC)
    .union(MsFlags::MS_NOATIME)
    .union(MsFlags::MS_NODIRATIME)
    .union(MsFlags::MS_RELATIME)
    .union(MsFlags::MS_STRICTATIME)
    .union(MS_NOSYMFOLLOW);

pub(super) const MS_NOSYMFOLLOW: MsFlags = MsFlags::from_bits_retain(256);

const ATIME: MsFlags = MsFlags::MS_NOATIME
    .union(MsFlags::MS_RELATIME)
    .union(MsFlags::MS_STRICTATIME);

/// The flags of the mount `fd` is on that a user namespace may have locked (statfs f_flags use
/// the same bit values as the MS_ flags for these).
fn locked_flags(fd: BorrowedFd<'_>) -> nix::Result<MsFlags> {
    let st = fstatvfs(fd)?;
    let bits = st.flags().bits() as libc::c_ulong;
    let locked = MsFlags::MS_RDONLY
        | MsFlags::MS_NOSUID
        | MsFlags::MS_NODEV
        | MsFlags::MS_NOEXEC
        | MsFlags::MS_NOATIME
        | MsFlags::MS_NODIRATIME
        | MsFlags::MS_RELATIME;
    Ok(MsFlags::from_bits_truncate(bits) & locked)
}

/// Remounts the bind mount at `fd` with the per-mount flags of `flags`. If the kernel refuses
/// because the mount has locked flags that `flags` would clear (a user namespace), retries with
/// those flags kept, as runc does.
pub(super) fn remount_bind(fd: BorrowedFd<'_>, flags: MsFlags) -> nix::Result<()> {
    let target = fd_path(fd);
    let base = (flags & PER_MOUNT) | MsFlags::MS_BIND | MsFlags::MS_REMOUNT;
    match mount_flags(&target, base) {
        Err(Errno::EPERM) => {
            let mut locked = locked_flags(fd)?;
            if base.intersects(ATIME) || base.contains(MsFlags::MS_NODIRATIME) {
                // The caller chose the atime behaviour; only add what is truly locked.
                locked &= !(ATIME | MsFlags::MS_NODIRATIME);
            }
            if (base | locked) == base {
                return Err(Errno::EPERM);
            }
            mount_flags(&target, base | locked)
        }
        r => r,
    }
}

// mount_setattr(2), for the recursive "rro", "rnosuid", ... options.
const AT_RECURSIVE: libc::c_uint = 0x8000;

#[repr(C)]
struct MountAttr {
    attr_set: u64,
    attr_clr: u64,
    propagation: u64,
    userns_fd: u64,
}

/// Sets and clears `MOUNT_ATTR_*` bits on the mount at `fd` and every mount below it.
pub(super) fn setattr_recursive(fd: BorrowedFd<'_>, set: u64, clr: u64) -> nix::Result<()> {
    let attr = MountAttr {
        attr_set: set,
        attr_clr: clr,
        propagation: 0,
        userns_fd: 0,
    };
    // SAFETY: the path is a valid empty C string, `attr` lives across the call and its size is
    // passed; the kernel only reads it.
    let r = unsafe {
        libc::syscall(
            libc::SYS_mount_setattr,
            fd.as_fd().as_raw_fd(),
            c"".as_ptr(),
            (libc::AT_EMPTY_PATH as libc::c_uint) | AT_RECURSIVE,
            &attr as *const MountAttr,
            std::mem::size_of::<MountAttr>(),
        )
    };
    Errno::result(r).map(drop)
}

/// Whether the kernel has mount_setattr(2) (Linux 5.12), which recursive mount options such as
/// "rro" need: asked with an attribute size of 0, it answers EINVAL before it looks at anything
/// else (the probe util-linux makes); ENOSYS without it, and a seccomp filter's EPERM means it
/// cannot be used either.
pub(super) fn has_mount_setattr() -> bool {
    // SAFETY: fd -1 and a null attribute pointer of size 0: the kernel refuses the size before
    // it reads memory or the descriptor.
    let r = unsafe {
        libc::syscall(
            libc::SYS_mount_setattr,
            -1,
            c"".as_ptr(),
            0,
            std::ptr::null::<MountAttr>(),
            0usize,
        )
    };
    Errno::result(r) == Err(Errno::EINVAL)
}

/// Whether this process runs in a user namespace other than the initial one.
pub(super) fn in_user_namespace() -> bool {
    match std::fs::read_to_string("/proc/self/uid_map") {
        Ok(s) => {
            let f: Vec<&str> = s.split_whitespace().collect();
            f != ["0", "0", "4294967295"]
        }
        Err(_) => false,
    }
}
