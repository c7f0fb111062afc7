//! File operations on cgroup directories, with errors that name the file.

use super::{err, Result};
use std::io::ErrorKind;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// Creates `root/rel` and its missing parents. `on_dir(parent, dir)` runs for each directory on
/// the way, top-down, whether this call created it or it was there already (v1 cpuset uses it
/// to give a directory with no cpus or mems its parent's).
pub fn mkdir_all(
    root: &Path,
    rel: &str,
    on_dir: impl Fn(&Path, &Path) -> Result<()>,
) -> Result<()> {
    let mut dir = root.to_path_buf();
    for part in rel.split('/').filter(|p| !p.is_empty()) {
        let parent = dir.clone();
        dir.push(part);
        match std::fs::create_dir(&dir) {
            Ok(()) => {}
            Err(e) if e.kind() == ErrorKind::AlreadyExists => {}
            Err(e) => return Err(err(format!("create {}: {e}", dir.display()))),
        }
        on_dir(&parent, &dir)?;
    }
    Ok(())
}

/// Writes `value` to `dir/file`.
pub fn write(dir: &Path, file: &str, value: &str) -> Result<()> {
    let p = dir.join(file);
    std::fs::write(&p, value).map_err(|e| {
        if dir.exists() && !p.exists() {
            let controller = file.split('.').next().unwrap_or(file);
            err(format!(
                "{} does not exist: the {controller} controller is not available in this cgroup \
                 (not in the parent's cgroup.subtree_control, or not supported by this kernel)",
                p.display()
            ))
        } else {
            err(format!("write {value:?} to {}: {e}", p.display()))
        }
    })
}

/// Like [`write`], but the raw error for callers that react to particular errnos.
pub fn try_write(dir: &Path, file: &str, value: &str) -> std::io::Result<()> {
    std::fs::write(dir.join(file), value)
}

/// Reads `dir/file`, trimmed.
pub fn read(dir: &Path, file: &str) -> Result<String> {
    let p = dir.join(file);
    std::fs::read_to_string(&p)
        .map(|s| s.trim().to_string())
        .map_err(|e| err(format!("read {}: {e}", p.display())))
}

/// Reads `dir/file` as a number; `max` reads as `u64::MAX`. `None` if the file is missing.
pub fn read_u64(dir: &Path, file: &str) -> Option<u64> {
    let s = std::fs::read_to_string(dir.join(file)).ok()?;
    let s = s.trim();
    if s == "max" {
        return Some(u64::MAX);
    }
    s.parse().ok()
}

/// `key value` lines (memory.stat, cpu.stat, …) as pairs.
pub fn read_kv(dir: &Path, file: &str) -> Vec<(String, u64)> {
    let Ok(s) = std::fs::read_to_string(dir.join(file)) else {
        return Vec::new();
    };
    s.lines()
        .filter_map(|l| {
            let (k, v) = l.split_once(' ')?;
            Some((k.to_string(), v.trim().parse().ok()?))
        })
        .collect()
}

pub fn exists(dir: &Path, file: &str) -> bool {
    dir.join(file).exists()
}

/// Appends the pids of `dir` and every cgroup below it.
pub fn collect_pids(dir: &Path, out: &mut Vec<i32>) -> Result<()> {
    let procs = match std::fs::read_to_string(dir.join("cgroup.procs")) {
        Ok(s) => s,
        Err(e) if e.kind() == ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(err(format!("read {}/cgroup.procs: {e}", dir.display()))),
    };
    out.extend(procs.lines().filter_map(|l| l.trim().parse::<i32>().ok()));
    for sub in subdirs(dir) {
        collect_pids(&sub, out)?;
    }
    Ok(())
}

fn subdirs(dir: &Path) -> Vec<PathBuf> {
    let Ok(rd) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    rd.flatten()
        .filter(|e| e.file_type().map(|t| t.is_dir()).unwrap_or(false))
        .map(|e| e.path())
        .collect()
}

/// Removes `dir` and the cgroups below it, deepest first. A cgroup whose last processes are
/// still exiting answers EBUSY for a moment: retry until `deadline`. A missing `dir` is fine.
pub fn remove_tree(dir: &Path, deadline: Instant) -> Result<()> {
    // Usually a leaf: try that first and list children only if it has some.
    match std::fs::remove_dir(dir) {
        Ok(()) => return Ok(()),
        Err(e) if e.kind() == ErrorKind::NotFound => return Ok(()),
        Err(_) => {}
    }
    for sub in subdirs(dir) {
        remove_tree(&sub, deadline)?;
    }
    let mut delay = Duration::from_micros(200);
    loop {
        match std::fs::remove_dir(dir) {
            Ok(()) => return Ok(()),
            Err(e) if e.kind() == ErrorKind::NotFound => return Ok(()),
            Err(e) if e.raw_os_error() == Some(libc::EBUSY) && Instant::now() < deadline => {
                std::thread::sleep(delay);
                delay = (delay * 2).min(Duration::from_millis(50));
            }
            Err(e) => return Err(err(format!("remove {}: {e}", dir.display()))),
        }
    }
}

/// Opens a cgroup directory (for `CLONE_INTO_CGROUP` and BPF attachment).
pub fn open_dir(dir: &Path) -> std::io::Result<std::os::fd::OwnedFd> {
    use std::os::unix::fs::OpenOptionsExt;
    let f = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_DIRECTORY | libc::O_CLOEXEC)
        .open(dir)?;
    Ok(f.into())
}
