//! Read-only views: `state`, `list`, `ps`, `events`.

use crate::state::{self, State};
use crate::{Error, Result};
use serde::Serialize;
use std::path::Path;

/// `state`: the public state JSON.
pub fn state_json(root: &Path, id: &str) -> Result<String> {
    let st = State::load(root, id)?;
    Ok(st.public_json(st.current_status()))
}

/// One row of `list`.
#[derive(Debug, Serialize)]
pub struct ListEntry {
    #[serde(rename = "ociVersion")]
    pub oci_version: String,
    pub id: String,
    pub pid: i32,
    pub status: String,
    pub bundle: String,
    pub rootfs: String,
    pub created: String,
    pub owner: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub annotations: Option<std::collections::HashMap<String, String>>,
}

pub fn list(root: &Path) -> Result<Vec<ListEntry>> {
    let mut out = Vec::new();
    for id in state::list_ids(root)? {
        let Ok(st) = State::load(root, &id) else {
            continue;
        };
        let status = st.current_status();
        let p = st.public(status);
        out.push(ListEntry {
            oci_version: p.oci_version.to_string(),
            id: id.clone(),
            pid: p.pid,
            status: status.to_string(),
            bundle: st.bundle.display().to_string(),
            rootfs: st.rootfs.display().to_string(),
            created: st.created.clone(),
            owner: dir_owner(&State::dir(root, &id)),
            annotations: st.config.annotations().clone(),
        });
    }
    Ok(out)
}

/// runc's `list` OWNER column: the user owning the container's state directory.
fn dir_owner(dir: &Path) -> String {
    use std::os::unix::fs::MetadataExt;
    let Ok(md) = std::fs::metadata(dir) else {
        return String::new();
    };
    match nix::unistd::User::from_uid(nix::unistd::Uid::from_raw(md.uid())) {
        Ok(Some(u)) => u.name,
        _ => format!("#{}", md.uid()),
    }
}

/// `ps`: the pids of the container's processes (from its cgroup).
pub fn pids(root: &Path, id: &str) -> Result<Vec<i32>> {
    let st = State::load(root, id)?;
    let cg = st
        .cgroup
        .as_ref()
        .ok_or_else(|| Error::Other(format!("container {id:?} has no cgroup")))?;
    let mut pids = cg.pids()?;
    pids.sort_unstable();
    Ok(pids)
}

/// `events --stats`: one stats event as runc prints it.
pub fn stats_event(root: &Path, id: &str) -> Result<serde_json::Value> {
    let st = State::load(root, id)?;
    let cg = st
        .cgroup
        .as_ref()
        .ok_or_else(|| Error::Other(format!("container {id:?} has no cgroup")))?;
    let stats = cg.stats()?;
    Ok(serde_json::json!({"type": "stats", "id": id, "data": stats}))
}

/// [`stats_event`] as the line runc prints: keys in its order (`type`, `id`, `data`), which
/// tools match as text.
pub fn stats_line(root: &Path, id: &str) -> Result<String> {
    let ev = stats_event(root, id)?;
    Ok(format!(
        "{{\"type\":\"stats\",\"id\":{},\"data\":{}}}",
        serde_json::Value::from(id),
        ev["data"]
    ))
}

/// `events` without `--stats`: calls `emit` with a [`stats_line`] now and every `every`, and
/// with `{"type":"oom","id":…}` (runc's key order too) whenever a process of the container hits
/// its memory limit; returns when the container goes away (its init exits, or its cgroup is
/// removed), as runc's does.
pub fn watch_events(
    root: &Path,
    id: &str,
    every: std::time::Duration,
    mut emit: impl FnMut(&str) -> Result<()>,
) -> Result<()> {
    use crate::cgroups::OomEvent;
    use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
    let st = State::load(root, id)?;
    if st.current_status() == state::Status::Stopped {
        return Err(Error::Other(format!("container {id:?} is not running")));
    }
    let cg = st
        .cgroup
        .as_ref()
        .ok_or_else(|| Error::Other(format!("container {id:?} has no cgroup")))?;
    let mut oom = cg.watch_oom()?;
    // SAFETY: pidfd_open with a pid and no flags; the fd is owned below.
    let raw = unsafe { libc::syscall(libc::SYS_pidfd_open, st.pid, 0) } as i32;
    // SAFETY: a fresh fd (when not negative) that nothing else owns.
    let pidfd = (raw >= 0).then(|| unsafe { OwnedFd::from_raw_fd(raw) });
    // The pidfd is of whatever has the pid now: only trust it if that is still the init.
    if !st.init_alive() {
        return Ok(());
    }
    let oom_event = format!(
        "{{\"type\":\"oom\",\"id\":{}}}",
        serde_json::Value::from(id)
    );
    let mut next = std::time::Instant::now();
    loop {
        let now = std::time::Instant::now();
        if now >= next {
            match stats_line(root, id) {
                Ok(line) => emit(&line)?,
                // Deleted meanwhile (state or cgroup gone): the container went away.
                Err(_) if !State::load(root, id).is_ok_and(|s| s.init_alive()) => return Ok(()),
                Err(e) => super::warn(&format!("events: {e}")),
            }
            next += every;
            continue;
        }
        let wait = next
            .saturating_duration_since(now)
            .as_millis()
            .min(i32::MAX as u128) as i32;
        let mut fds = [
            libc::pollfd {
                fd: oom.as_ref().map_or(-1, |w| w.fd().as_raw_fd()),
                events: libc::POLLIN,
                revents: 0,
            },
            libc::pollfd {
                fd: pidfd.as_ref().map_or(-1, |f| f.as_raw_fd()),
                events: libc::POLLIN,
                revents: 0,
            },
        ];
        // SAFETY: two valid pollfds on our stack (a negative fd is ignored).
        if unsafe { libc::poll(fds.as_mut_ptr(), 2, wait.max(1)) } <= 0 {
            if pidfd.is_none() && !st.init_alive() {
                return Ok(());
            }
            continue;
        }
        // OOM events first: the kill that ends the init is reported before the end.
        if let Some(w) = oom.as_mut() {
            for ev in w.read() {
                match ev {
                    OomEvent::Oom => emit(&oom_event)?,
                    OomEvent::Gone => return Ok(()),
                }
            }
        }
        if fds[1].revents != 0 {
            return Ok(());
        }
    }
}
