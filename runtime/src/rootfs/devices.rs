//! Device nodes, /dev symlinks, /dev/ptmx and /dev/console (runc's `createDevices`,
//! `setupDevSymlinks`, `setupPtmx`, `mountConsole`).
//!
//! The nodes are made with mknod; in a user namespace, where mknod is refused, an empty file is
//! created instead and the host's node (same path) is bind-mounted onto it. Existing nodes are
//! left alone. Nothing here runs when the spec bind-mounts /dev from elsewhere.

use super::mounts::{self, Umask};
use super::resolve;
use super::sys::{self as s, fd_path};
use super::{sys, Ctx, Result, RootfsError};
use nix::errno::Errno;
use nix::fcntl::{open, AtFlags, OFlag};
use nix::sys::stat::{makedev, mknodat, Mode, SFlag};
use nix::unistd::{fchownat, symlinkat, unlinkat, Gid, Uid, UnlinkatFlags};
use oci_spec::runtime::{LinuxDevice, LinuxDeviceType, Spec};
use std::os::fd::AsFd;
use std::path::{Path, PathBuf};

/// A device to create: in-root path, type, major, minor, mode, uid, gid.
struct Node {
    path: PathBuf,
    kind: SFlag,
    major: u64,
    minor: u64,
    mode: u32,
    uid: u32,
    gid: u32,
}

/// The devices every container gets (runc's default device list).
const DEFAULTS: &[(&str, u64, u64)] = &[
    ("/dev/null", 1, 3),
    ("/dev/zero", 1, 5),
    ("/dev/full", 1, 7),
    ("/dev/random", 1, 8),
    ("/dev/urandom", 1, 9),
    ("/dev/tty", 5, 0),
];

/// /dev is set up unless the spec bind-mounts it (runc's `needsSetupDev`).
pub(crate) fn needs_setup_dev(spec: &Spec) -> bool {
    !spec.mounts().iter().flatten().any(|m| {
        let bind = m.typ().as_deref() == Some("bind")
            || m.options()
                .iter()
                .flatten()
                .any(|o| o == "bind" || o == "rbind");
        bind && resolve::clean_path(m.destination()) == Path::new("/dev")
    })
}

fn node_of(d: &LinuxDevice) -> Result<Node> {
    let kind = match d.typ() {
        LinuxDeviceType::C | LinuxDeviceType::U => SFlag::S_IFCHR,
        LinuxDeviceType::B => SFlag::S_IFBLK,
        LinuxDeviceType::P => SFlag::S_IFIFO,
        LinuxDeviceType::A => {
            return Err(RootfsError::Invalid(format!(
                "device {:?}: type \"a\" cannot be created",
                d.path()
            )))
        }
    };
    Ok(Node {
        path: resolve::clean_path(d.path()),
        kind,
        major: d.major() as u64,
        minor: d.minor() as u64,
        mode: d.file_mode().unwrap_or(0o666) & 0o7777,
        uid: d.uid().unwrap_or(0),
        gid: d.gid().unwrap_or(0),
    })
}

/// The spec's devices first, then the defaults it does not override.
pub(crate) fn create_devices(ctx: &Ctx<'_>, spec_devices: Option<&[LinuxDevice]>) -> Result<()> {
    let mut nodes = Vec::new();
    for d in spec_devices.unwrap_or(&[]) {
        nodes.push(node_of(d)?);
    }
    for (path, major, minor) in DEFAULTS {
        if !nodes.iter().any(|n| n.path == Path::new(path)) {
            nodes.push(Node {
                path: PathBuf::from(path),
                kind: SFlag::S_IFCHR,
                major: *major,
                minor: *minor,
                mode: 0o666,
                uid: 0,
                gid: 0,
            });
        }
    }
    let _umask = Umask::zero();
    for n in &nodes {
        create_node(ctx, n)?;
    }
    Ok(())
}

fn create_node(ctx: &Ctx<'_>, n: &Node) -> Result<()> {
    let (dir, name) = resolve::ensure_parent(ctx.root.as_fd(), &n.path).map_err(sys(format!(
        "create parent directory of device {:?}",
        n.path
    )))?;
    if ctx.userns {
        return bind_node(ctx, n);
    }
    let dev = makedev(n.major, n.minor);
    match mknodat(
        &dir,
        name.as_os_str(),
        n.kind,
        Mode::from_bits_truncate(n.mode),
        dev,
    ) {
        Ok(()) => {}
        Err(Errno::EEXIST) => return Ok(()),
        Err(Errno::EPERM) => return bind_node(ctx, n),
        Err(e) => return Err(sys(format!("mknod {:?}", n.path))(e)),
    }
    fchownat(
        &dir,
        name.as_os_str(),
        Some(Uid::from_raw(n.uid)),
        Some(Gid::from_raw(n.gid)),
        AtFlags::AT_SYMLINK_NOFOLLOW,
    )
    .map_err(sys(format!("chown {:?}", n.path)))
}

/// Binds the host's node at the same path onto an empty file in the container.
fn bind_node(ctx: &Ctx<'_>, n: &Node) -> Result<()> {
    let target = resolve::ensure(ctx.root.as_fd(), &n.path, resolve::Kind::File(0o666))
        .map_err(sys(format!("create device file {:?}", n.path)))?;
    s::bind(&n.path, fd_path(target.as_fd()), false).map_err(sys(format!(
        "mount {:?} (bind of the host's device)",
        n.path
    )))
}

fn dev_dir(ctx: &Ctx<'_>) -> Result<std::os::fd::OwnedFd> {
    mounts::create_target(ctx, Path::new("/dev"), resolve::Kind::Dir)
}

/// /dev/ptmx -> pts/ptmx, so that ptys come from the container's devpts instance.
pub(crate) fn setup_ptmx(ctx: &Ctx<'_>) -> Result<()> {
    let dev = dev_dir(ctx)?;
    match unlinkat(&dev, "ptmx", UnlinkatFlags::NoRemoveDir) {
        Ok(()) | Err(Errno::ENOENT) => {}
        Err(e) => return Err(sys("remove \"/dev/ptmx\"")(e)),
    }
    symlinkat("pts/ptmx", &dev, "ptmx").map_err(sys("symlink \"/dev/ptmx\""))
}

/// /dev/fd, /dev/std{in,out,err} and, when the kernel has it, /dev/core.
pub(crate) fn setup_dev_symlinks(ctx: &Ctx<'_>) -> Result<()> {
    let mut links = vec![
        ("/proc/self/fd", "fd"),
        ("/proc/self/fd/0", "stdin"),
        ("/proc/self/fd/1", "stdout"),
        ("/proc/self/fd/2", "stderr"),
    ];
    if Path::new("/proc/kcore").exists() {
        links.push(("/proc/kcore", "core"));
    }
    let dev = dev_dir(ctx)?;
    for (target, name) in links {
        match symlinkat(target, &dev, name) {
            Ok(()) | Err(Errno::EEXIST) => {}
            Err(e) => return Err(sys(format!("symlink \"/dev/{name}\" -> {target:?}"))(e)),
        }
    }
    Ok(())
}

/// Binds the pty slave onto /dev/console, creating it (mode 0666) if needed. After pivot.
pub(crate) fn mount_console(slave: &Path) -> Result<()> {
    let _umask = Umask::zero();
    let console = "/dev/console";
    let flags =
        OFlag::O_CREAT | OFlag::O_EXCL | OFlag::O_WRONLY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC;
    match open(console, flags, Mode::from_bits_truncate(0o666)) {
        Ok(fd) => {
            nix::sys::stat::fchmod(&fd, Mode::from_bits_truncate(0o666))
                .map_err(sys("chmod \"/dev/console\""))?;
        }
        Err(Errno::EEXIST) => {}
        Err(e) => return Err(sys("create \"/dev/console\"")(e)),
    }
    let target = open(
        console,
        OFlag::O_PATH | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
        Mode::empty(),
    )
    .map_err(sys("open \"/dev/console\""))?;
    s::bind(slave, fd_path(target.as_fd()), false)
        .map_err(sys(format!("mount \"/dev/console\" (bind {slave:?})")))
}
