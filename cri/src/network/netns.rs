//! Network, IPC and UTS namespaces pinned by bind mounts, and links brought up or removed.

use anyhow::{anyhow, bail, Result};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use super::*;

/// Whether `p` is a pinned namespace (an nsfs mount).
pub(super) fn is_netns(p: &Path) -> bool {
    use nix::sys::statfs::{statfs, NSFS_MAGIC};
    matches!(statfs(p), Ok(s) if s.filesystem_type() == NSFS_MAGIC)
}

/// Serializes the first-time setup of netns directories among the threads of this process.
pub(super) static NETNS_DIR_SETUP: Mutex<()> = Mutex::new(());

/// Makes `dir` a mount point with shared propagation, as `ip netns add` does with /run/netns:
/// unmounting a pin then also unmounts its copies in mount namespaces created since (those of
/// the containers), so the namespace is really freed.
pub(super) fn ensure_shared_dir(dir: &Path) -> Result<()> {
    use nix::mount::{mount, MsFlags};
    let _g = NETNS_DIR_SETUP.lock().unwrap_or_else(|e| e.into_inner());
    std::fs::create_dir_all(dir).map_err(|e| anyhow!("create {}: {e}", dir.display()))?;
    let shared = || {
        mount(
            None::<&str>,
            dir,
            None::<&str>,
            MsFlags::MS_SHARED | MsFlags::MS_REC,
            None::<&str>,
        )
    };
    match shared() {
        Ok(()) => return Ok(()),
        Err(nix::errno::Errno::EINVAL) => {} // not a mount point yet
        Err(e) => bail!("make {} shared: {e}", dir.display()),
    }
    mount(
        Some(dir),
        dir,
        None::<&str>,
        MsFlags::MS_BIND | MsFlags::MS_REC,
        None::<&str>,
    )
    .map_err(|e| anyhow!("bind mount {} on itself: {e}", dir.display()))?;
    shared().map_err(|e| anyhow!("make {} shared: {e}", dir.display()))
}

/// Pins a new IPC namespace at `<dir>/<id>-ipc` (with `ipc`) and a new UTS namespace with
/// hostname `hostname` at `<dir>/<id>-uts` (when `hostname` is given), `dir` being a
/// shared-propagation directory like the network namespaces'. Returns the paths. Already
/// pinned ones are kept as they are.
pub async fn pin_ipc_uts(
    dir: &Path,
    id: &str,
    ipc: bool,
    hostname: Option<&str>,
) -> Result<(Option<PathBuf>, Option<PathBuf>)> {
    validate_id(id)?;
    let ipc = ipc.then(|| dir.join(format!("{id}-ipc")));
    let uts = hostname.map(|h| (dir.join(format!("{id}-uts")), h.to_string()));
    let (d, i, u) = (dir.to_path_buf(), ipc.clone(), uts.clone());
    on_own_thread(format!("pin namespaces for {id}"), move || {
        ensure_shared_dir(&d)?;
        if let Some(i) = &i {
            pin_blocking(i, nix::sched::CloneFlags::CLONE_NEWIPC, "ipc", || Ok(()))?;
        }
        if let Some((u, h)) = &u {
            pin_blocking(u, nix::sched::CloneFlags::CLONE_NEWUTS, "uts", || {
                nix::unistd::sethostname(h).map_err(|e| anyhow!("set the hostname {h:?}: {e}"))
            })?;
        }
        Ok(())
    })
    .await?;
    Ok((ipc, uts.map(|(u, _)| u)))
}

/// Runs `f` on a thread of its own that ends right after: unshare(2) changes the namespaces
/// of the calling thread for good, which must never be a runtime worker. Errors say `what`.
pub(super) async fn on_own_thread(
    what: String,
    f: impl FnOnce() -> Result<()> + Send + 'static,
) -> Result<()> {
    let (tx, rx) = tokio::sync::oneshot::channel();
    std::thread::Builder::new()
        .name("berth-ns".into())
        .spawn(move || {
            let _ = tx.send(f());
        })
        .map_err(|e| anyhow!("{what}: spawn a thread: {e}"))?;
    match rx.await {
        Ok(Ok(())) => Ok(()),
        Ok(Err(e)) => Err(anyhow!("{what}: {e:#}")),
        Err(_) => bail!("{what}: the thread died"),
    }
}

/// Unmounts and removes a namespace pin (all of its mounts); nothing there is fine.
pub fn unpin(path: &Path) -> Result<()> {
    for _ in 0..16 {
        match nix::mount::umount2(path, nix::mount::MntFlags::MNT_DETACH) {
            Ok(()) => continue,
            Err(nix::errno::Errno::EINVAL) | Err(nix::errno::Errno::ENOENT) => break,
            Err(e) => bail!("unpin namespace {}: unmount: {e}", path.display()),
        }
    }
    match std::fs::remove_file(path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => bail!("unpin namespace {}: {e}", path.display()),
    }
}

/// On the calling thread, which it leaves in the new namespace: unshare(`flag`), `setup`, and
/// bind mount `/proc/thread-self/ns/<file>` on `path`.
pub(super) fn pin_blocking(
    path: &Path,
    flag: nix::sched::CloneFlags,
    file: &str,
    setup: impl FnOnce() -> Result<()>,
) -> Result<()> {
    use nix::mount::{mount, MsFlags};
    if is_netns(path) {
        return Ok(());
    }
    std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(false)
        .mode(0o444)
        .open(path)
        .map_err(|e| anyhow!("create {}: {e}", path.display()))?;
    let pin = || -> Result<()> {
        nix::sched::unshare(flag).map_err(|e| anyhow!("unshare({flag:?}): {e}"))?;
        setup()?;
        mount(
            Some(format!("/proc/thread-self/ns/{file}").as_str()),
            path,
            None::<&str>,
            MsFlags::MS_BIND,
            None::<&str>,
        )
        .map_err(|e| anyhow!("bind mount the namespace on {}: {e}", path.display()))
    };
    pin().inspect_err(|_| {
        let _ = std::fs::remove_file(path);
    })
}

/// Runs on a thread of its own, which it leaves in the new namespace.
pub(super) fn create_netns_blocking(dir: &Path, path: &Path) -> Result<()> {
    ensure_shared_dir(dir)?;
    pin_blocking(path, nix::sched::CloneFlags::CLONE_NEWNET, "net", || {
        set_link_up("lo", true).map_err(|e| anyhow!("bring lo up: {e}"))
    })
}

pub(super) fn ifreq_for(name: &str) -> std::io::Result<libc::ifreq> {
    if name.is_empty() || name.len() >= libc::IFNAMSIZ {
        return Err(std::io::Error::from_raw_os_error(libc::EINVAL));
    }
    // SAFETY: ifreq is plain old data; all zeroes is a valid value.
    let mut req: libc::ifreq = unsafe { std::mem::zeroed() };
    for (d, s) in req.ifr_name.iter_mut().zip(name.bytes()) {
        *d = s as libc::c_char;
    }
    Ok(req)
}

pub(super) fn inet_socket() -> std::io::Result<OwnedFd> {
    // SAFETY: plain socket(2) call; the result is checked before use.
    let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
    if fd < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: fd is a new descriptor that nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// Sets or clears IFF_UP of a link in the calling thread's network namespace.
pub(super) fn set_link_up(name: &str, up: bool) -> std::io::Result<()> {
    let sock = inet_socket()?;
    let mut req = ifreq_for(name)?;
    // SAFETY: SIOCGIFFLAGS fills ifr_flags of the ifreq we pass, which outlives the call.
    if unsafe { libc::ioctl(sock.as_raw_fd(), libc::SIOCGIFFLAGS as _, &mut req) } < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: the kernel just wrote ifru_flags, the member SIOCGIFFLAGS uses.
    let flags = unsafe { req.ifr_ifru.ifru_flags };
    let up_flag = libc::IFF_UP as libc::c_short;
    let want = if up {
        flags | up_flag
    } else {
        flags & !up_flag
    };
    if want == flags {
        return Ok(());
    }
    req.ifr_ifru.ifru_flags = want;
    // SAFETY: SIOCSIFFLAGS reads the ifreq we pass, which outlives the call.
    if unsafe { libc::ioctl(sock.as_raw_fd(), libc::SIOCSIFFLAGS as _, &req) } < 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

/// Takes a bridge down and deletes it (SIOCBRDELBR, which refuses links that are not bridges).
pub(super) fn delete_bridge(name: &str) -> Result<()> {
    match set_link_up(name, false) {
        Ok(()) => {}
        Err(e) if e.raw_os_error() == Some(libc::ENODEV) => return Ok(()),
        Err(e) => bail!("take it down: {e}"),
    }
    let sock = inet_socket()?;
    let cname = std::ffi::CString::new(name)?;
    // SAFETY: SIOCBRDELBR reads the NUL-terminated name, which outlives the call.
    if unsafe { libc::ioctl(sock.as_raw_fd(), SIOCBRDELBR as _, cname.as_ptr()) } < 0 {
        let e = std::io::Error::last_os_error();
        if e.raw_os_error() == Some(libc::ENXIO) || e.raw_os_error() == Some(libc::ENODEV) {
            return Ok(());
        }
        bail!("delete it: {e}");
    }
    Ok(())
}
