//! Real mounts, as root: each test forks a child that unshares a mount and a pid namespace,
//! makes `/` private (nothing reaches the host), forks again (pid 1 of the new namespace, so
//! procfs can be mounted) and builds a container root in a temporary directory. The grandchild
//! checks from inside and reports through a pipe; the parent asserts, then checks that nothing
//! is left mounted on the host.

use super::*;

mod container;
mod mounts;

use nix::mount::MsFlags;
use nix::sched::{unshare, CloneFlags};
use nix::sys::stat::{major, minor, stat, SFlag};
use nix::sys::wait::{waitpid, WaitStatus};
use nix::unistd::{fork, ForkResult};
use serde_json::json;
use std::io::Read;
use std::os::fd::{AsRawFd, OwnedFd};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU32, Ordering};

pub(super) type R = std::result::Result<(), String>;

pub(super) fn is_root() -> bool {
    nix::unistd::geteuid().is_root()
}

pub(super) fn report(w: &OwnedFd, msg: &str) {
    // SAFETY: writes a valid buffer to a pipe fd we own; raw write avoids std's stdio locks,
    // which another thread of the test harness may have held at fork time.
    unsafe { libc::write(w.as_raw_fd(), msg.as_ptr().cast(), msg.len()) };
}

pub(super) fn exit(code: i32) -> ! {
    // SAFETY: _exit ends the forked process without running the harness's destructors.
    unsafe { libc::_exit(code) }
}

/// Runs `f` in new mount, pid and ipc namespaces (as pid 1) and returns its result.
pub(super) fn isolated(f: impl FnOnce() -> R) -> R {
    let (r, w) = nix::unistd::pipe().expect("pipe");
    // SAFETY: the child only makes system calls and runs `f`, then _exits; it never returns
    // into the test harness.
    match unsafe { fork() }.expect("fork") {
        ForkResult::Child => {
            drop(r);
            let step = || -> R {
                unshare(
                    CloneFlags::CLONE_NEWNS | CloneFlags::CLONE_NEWPID | CloneFlags::CLONE_NEWIPC,
                )
                .map_err(|e| format!("unshare: {e}"))?;
                sys::mount_flags("/", MsFlags::MS_PRIVATE | MsFlags::MS_REC)
                    .map_err(|e| format!("make / private: {e}"))?;
                // SAFETY: as above, for the grandchild.
                match unsafe { fork() }.map_err(|e| format!("fork: {e}"))? {
                    ForkResult::Child => {
                        let res = std::panic::catch_unwind(std::panic::AssertUnwindSafe(f));
                        match res {
                            Ok(Ok(())) => exit(0),
                            Ok(Err(msg)) => report(&w, &msg),
                            Err(_) => report(&w, "panicked"),
                        }
                        exit(1)
                    }
                    ForkResult::Parent { child } => match waitpid(child, None) {
                        Ok(WaitStatus::Exited(_, 0)) => Ok(()),
                        other => Err(format!(" (grandchild: {other:?})")),
                    },
                }
            };
            match step() {
                Ok(()) => exit(0),
                Err(msg) => {
                    report(&w, &msg);
                    exit(1)
                }
            }
        }
        ForkResult::Parent { child } => {
            drop(w);
            let mut msg = String::new();
            let _ = std::fs::File::from(r).read_to_string(&mut msg);
            let st = waitpid(child, None).expect("waitpid");
            let host = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
            assert!(
                !host.contains("berth-rootfs-test"),
                "left mounted on the host:\n{host}"
            );
            match st {
                WaitStatus::Exited(_, 0) => Ok(()),
                _ => Err(msg),
            }
        }
    }
}

/// A temporary directory under /tmp, removed on drop.
pub(super) struct TempDir(pub PathBuf);

impl TempDir {
    pub fn new(tag: &str) -> Self {
        static N: AtomicU32 = AtomicU32::new(0);
        let n = N.fetch_add(1, Ordering::Relaxed);
        let p = PathBuf::from(format!(
            "/tmp/berth-rootfs-test-{}-{n}-{tag}",
            std::process::id()
        ));
        std::fs::create_dir_all(&p).unwrap();
        TempDir(p.canonicalize().unwrap())
    }

    /// A small root: a few directories and /etc/hostname.
    pub fn rootfs(tag: &str) -> Self {
        let t = Self::new(tag);
        for d in ["bin", "etc", "proc", "sys", "dev", "tmp", "masked-dir"] {
            std::fs::create_dir_all(t.0.join(d)).unwrap();
        }
        std::fs::write(t.0.join("etc/hostname"), "container\n").unwrap();
        std::fs::write(t.0.join("masked-dir/secret"), "s").unwrap();
        t
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

pub(super) fn spec(v: serde_json::Value) -> Spec {
    serde_json::from_value(v).expect("spec")
}

/// runc's default mounts.
pub(super) fn default_mounts() -> serde_json::Value {
    json!([
        {"destination": "/proc", "type": "proc", "source": "proc"},
        {"destination": "/dev", "type": "tmpfs", "source": "tmpfs",
         "options": ["nosuid", "strictatime", "mode=755", "size=65536k"]},
        {"destination": "/dev/pts", "type": "devpts", "source": "devpts",
         "options": ["nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620", "gid=5"]},
        {"destination": "/dev/shm", "type": "tmpfs", "source": "shm",
         "options": ["nosuid", "noexec", "nodev", "mode=1777", "size=65536k"]},
        {"destination": "/dev/mqueue", "type": "mqueue", "source": "mqueue",
         "options": ["nosuid", "noexec", "nodev"]},
        {"destination": "/sys", "type": "sysfs", "source": "sysfs",
         "options": ["nosuid", "noexec", "nodev", "ro"]},
        {"destination": "/sys/fs/cgroup", "type": "cgroup", "source": "cgroup",
         "options": ["nosuid", "noexec", "nodev", "relatime", "ro"]},
        {"destination": "/tmp", "type": "tmpfs", "source": "tmpfs", "options": ["nosuid"]}
    ])
}

pub(super) fn check(cond: bool, what: &str) -> R {
    if cond {
        Ok(())
    } else {
        Err(what.to_string())
    }
}

pub(super) fn errno_of(r: std::io::Result<impl Sized>) -> Option<i32> {
    r.err().and_then(|e| e.raw_os_error())
}

pub(super) fn is_char(p: &str, maj: u64, min: u64) -> bool {
    stat(p).is_ok_and(|st| {
        SFlag::from_bits_truncate(st.st_mode & SFlag::S_IFMT.bits()) == SFlag::S_IFCHR
            && major(st.st_rdev) == maj
            && minor(st.st_rdev) == min
    })
}
