//! OOM notifications of a container's cgroup, for `events` (runc's `NotifyOOM`).
//!
//! - cgroup v1 (and the hybrid layout, whose memory controller is v1): an eventfd registered
//!   for `memory.oom_control` through `cgroup.event_control`. The kernel signals it on every
//!   OOM in the cgroup, and once more when the cgroup is removed (then `cgroup.event_control`
//!   is gone).
//! - cgroup v2: inotify on `memory.events` (an OOM kill raises its `oom_kill` count) and on
//!   `cgroup.events` (`populated 0`: the last process has left).
//!
//! Both fds are non-blocking: [`OomWatch::read`] returns what has happened since the last call.

use super::{err, fs, Cgroup, Layout, Result};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd};
use std::path::{Path, PathBuf};

/// What an [`OomWatch`] saw.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OomEvent {
    /// A process of the cgroup hit the memory limit.
    Oom,
    /// The cgroup was removed, or (v2) has no processes left: no more events will come.
    Gone,
}

/// A registration for OOM notifications of one cgroup.
pub struct OomWatch {
    kind: Kind,
}

enum Kind {
    V1 {
        eventfd: OwnedFd,
        /// Open for as long as the registration lives (the kernel refers to it).
        _oom_control: std::fs::File,
        event_control: PathBuf,
    },
    V2 {
        inotify: OwnedFd,
        memory_events: i32,
        cgroup_events: i32,
        dir: PathBuf,
        oom_kills: u64,
    },
}

impl Cgroup {
    /// Starts watching the cgroup for OOM events. `None` if the memory controller is not there
    /// (no OOM can be reported then).
    pub fn watch_oom(&self) -> std::result::Result<Option<OomWatch>, super::CgroupError> {
        match Layout::get()? {
            Layout::V2 { root } => {
                let dir = root.join(self.rel());
                if !fs::exists(&dir, "memory.events") {
                    return Ok(None);
                }
                watch_v2(&dir).map(Some)
            }
            Layout::V1 { mounts, .. } => match Self::v1_dir(mounts, self.rel(), "memory") {
                Some(dir) => watch_v1(&dir).map(Some),
                None => Ok(None),
            },
        }
    }
}

fn os_err(what: &str, path: &Path) -> super::CgroupError {
    err(format!(
        "{what} {}: {}",
        path.display(),
        std::io::Error::last_os_error()
    ))
}

fn watch_v1(dir: &Path) -> Result<OomWatch> {
    let oom_path = dir.join("memory.oom_control");
    let oom_control = std::fs::File::open(&oom_path)
        .map_err(|e| err(format!("open {}: {e}", oom_path.display())))?;
    // SAFETY: eventfd with flags only; the new fd is owned below.
    let efd = unsafe { libc::eventfd(0, libc::EFD_CLOEXEC | libc::EFD_NONBLOCK) };
    if efd < 0 {
        return Err(os_err("eventfd for", &oom_path));
    }
    // SAFETY: a fresh fd that nothing else owns.
    let eventfd = unsafe { OwnedFd::from_raw_fd(efd) };
    let event_control = dir.join("cgroup.event_control");
    let line = format!("{} {}", eventfd.as_raw_fd(), oom_control.as_raw_fd());
    std::fs::write(&event_control, &line).map_err(|e| {
        err(format!(
            "write {line:?} to {}: {e}",
            event_control.display()
        ))
    })?;
    Ok(OomWatch {
        kind: Kind::V1 {
            eventfd,
            _oom_control: oom_control,
            event_control,
        },
    })
}

fn watch_v2(dir: &Path) -> Result<OomWatch> {
    // SAFETY: inotify_init1 with flags only; the new fd is owned below.
    let fd = unsafe { libc::inotify_init1(libc::IN_CLOEXEC | libc::IN_NONBLOCK) };
    if fd < 0 {
        return Err(os_err("inotify for", dir));
    }
    // SAFETY: a fresh fd that nothing else owns.
    let inotify = unsafe { OwnedFd::from_raw_fd(fd) };
    let add = |file: &str| -> Result<i32> {
        let p = dir.join(file);
        let c = std::ffi::CString::new(p.as_os_str().as_encoded_bytes())
            .map_err(|_| err(format!("{} has a NUL byte", p.display())))?;
        // SAFETY: a valid inotify fd and a NUL-terminated path that outlives the call.
        let wd =
            unsafe { libc::inotify_add_watch(inotify.as_raw_fd(), c.as_ptr(), libc::IN_MODIFY) };
        if wd < 0 {
            return Err(os_err("watch", &p));
        }
        Ok(wd)
    };
    let memory_events = add("memory.events")?;
    let cgroup_events = add("cgroup.events")?;
    Ok(OomWatch {
        kind: Kind::V2 {
            memory_events,
            cgroup_events,
            oom_kills: oom_kills(dir),
            dir: dir.to_path_buf(),
            inotify,
        },
    })
}

/// The `oom_kill` count of `memory.events`.
fn oom_kills(dir: &Path) -> u64 {
    fs::read_kv(dir, "memory.events")
        .into_iter()
        .find(|(k, _)| k == "oom_kill")
        .map_or(0, |(_, v)| v)
}

impl OomWatch {
    /// The fd to poll for readability.
    pub fn fd(&self) -> BorrowedFd<'_> {
        match &self.kind {
            Kind::V1 { eventfd, .. } => eventfd.as_fd(),
            Kind::V2 { inotify, .. } => inotify.as_fd(),
        }
    }

    /// What happened since the last call (nothing if the fd was not readable).
    pub fn read(&mut self) -> Vec<OomEvent> {
        match &mut self.kind {
            Kind::V1 {
                eventfd,
                event_control,
                ..
            } => {
                let mut buf = [0u8; 8];
                match nix::unistd::read(&*eventfd, &mut buf) {
                    // The kernel also signals the removal of the cgroup.
                    Ok(8) if !event_control.exists() => vec![OomEvent::Gone],
                    Ok(8) => vec![OomEvent::Oom],
                    _ => Vec::new(),
                }
            }
            Kind::V2 {
                inotify,
                memory_events,
                cgroup_events,
                dir,
                oom_kills: seen,
            } => {
                let mut out = Vec::new();
                let mut buf = [0u8; 4096];
                while let Ok(n) = nix::unistd::read(&*inotify, &mut buf) {
                    if n == 0 {
                        break;
                    }
                    let mut off = 0;
                    let head = std::mem::size_of::<libc::inotify_event>();
                    while off + head <= n {
                        // SAFETY: the kernel wrote whole inotify_event records into `buf`;
                        // read_unaligned copes with the byte buffer's alignment.
                        let ev: libc::inotify_event =
                            unsafe { std::ptr::read_unaligned(buf[off..].as_ptr().cast()) };
                        off += head + ev.len as usize;
                        if ev.mask & libc::IN_IGNORED != 0 {
                            // The file went away with the cgroup.
                            out.push(OomEvent::Gone);
                        } else if ev.wd == *memory_events {
                            let now = oom_kills(dir);
                            if now > *seen {
                                *seen = now;
                                out.push(OomEvent::Oom);
                            }
                        } else if ev.wd == *cgroup_events
                            && fs::read_kv(dir, "cgroup.events")
                                .iter()
                                .any(|(k, v)| k == "populated" && *v == 0)
                        {
                            out.push(OomEvent::Gone);
                        }
                    }
                }
                // An OOM kill counts before its victim leaves the cgroup.
                out.sort_by_key(|e| *e == OomEvent::Gone);
                out
            }
        }
    }
}
