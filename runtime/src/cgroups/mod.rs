//! Cgroups for a container: cgroup v2 (unified), v1, and the hybrid layout (v1 controllers plus
//! a cgroup2 mount at `/sys/fs/cgroup/unified`).
//!
//! The layout is read once per process from `/proc/self/mountinfo`. A container's cgroup is one
//! path (`/berth/<id>` by default) that exists in every hierarchy: on v2 the unified tree, on v1
//! every controller mount (including named ones such as `name=systemd`) and, on a hybrid host,
//! the unified mount too — like runc, so that every tool that looks for the container's cgroup
//! finds it.
//!
//! Only directories under the container's path are ever removed, plus the `/berth` parent that
//! berth owns when it is empty. Nothing else in the host's hierarchies is touched.

mod devices;
mod events;
mod fs;
mod stats;
mod v1;
mod v2;

pub use events::{OomEvent, OomWatch};
pub use stats::Stats;

use oci_spec::runtime::LinuxResources;
use serde::{Deserialize, Serialize};
use std::os::fd::OwnedFd;
use std::path::{Component, Path, PathBuf};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

/// Where berth puts cgroups when the spec gives no path or a relative one.
pub const BERTH_PARENT: &str = "/berth";

/// Names of the pod cgroups berthd's CRI makes in [`BERTH_PARENT`] (`/berth/pod-<id>`, right
/// below it): they belong to the pod, and stay when the pod's last container is deleted.
pub const POD_PREFIX: &str = "pod-";

#[derive(Debug, thiserror::Error)]
pub enum CgroupError {
    #[error("cgroup: {0}")]
    Other(String),
}

pub(crate) type Result<T> = std::result::Result<T, CgroupError>;

pub(crate) fn err(msg: impl Into<String>) -> CgroupError {
    CgroupError::Other(msg.into())
}

/// Where a container's cgroup lives in each hierarchy. Saved in the container's state so that
/// later commands (`kill --all`, `pause`, `update`, `delete`) act on the same cgroup.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Cgroup {
    /// The path inside the hierarchy, e.g. `/berth/<id>` or the spec's absolute `cgroupsPath`.
    pub path: String,
}

/// A cgroup v1 hierarchy mounted on this host.
#[derive(Debug, Clone)]
pub(crate) struct V1Mount {
    pub dir: PathBuf,
    /// Controllers bound to this hierarchy (`cpu`, `memory`, … or `name=systemd`).
    pub controllers: Vec<String>,
}

/// The cgroup layout of this host.
#[derive(Debug, Clone)]
pub(crate) enum Layout {
    /// Pure cgroup v2: the unified hierarchy at `root`.
    V2 { root: PathBuf },
    /// cgroup v1 controllers, plus the unified mount on a hybrid host.
    V1 {
        mounts: Vec<V1Mount>,
        unified: Option<PathBuf>,
    },
}

impl Layout {
    /// This host's layout, read once.
    pub(crate) fn get() -> Result<&'static Layout> {
        static LAYOUT: OnceLock<std::result::Result<Layout, String>> = OnceLock::new();
        LAYOUT
            .get_or_init(|| {
                // Like runc and crun: /sys/fs/cgroup being cgroup2 means a unified host, even
                // if v1 hierarchies are still mounted (and hidden) below it.
                if is_cgroup2(Path::new("/sys/fs/cgroup")) {
                    return Ok(Layout::V2 {
                        root: PathBuf::from("/sys/fs/cgroup"),
                    });
                }
                let info = std::fs::read_to_string("/proc/self/mountinfo")
                    .map_err(|e| format!("read /proc/self/mountinfo: {e}"))?;
                Layout::parse(&info)
            })
            .as_ref()
            .map_err(|e| err(e.clone()))
    }

    /// Parses `/proc/self/mountinfo`. The first mount of each hierarchy wins.
    pub(crate) fn parse(mountinfo: &str) -> std::result::Result<Layout, String> {
        let mut v2: Option<PathBuf> = None;
        let mut mounts: Vec<V1Mount> = Vec::new();
        for line in mountinfo.lines() {
            let Some((left, right)) = line.split_once(" - ") else {
                continue;
            };
            let left: Vec<&str> = left.split(' ').collect();
            let right: Vec<&str> = right.split(' ').collect();
            if left.len() < 5 || right.len() < 3 {
                continue;
            }
            let mount_point = PathBuf::from(unescape(left[4]));
            match right[0] {
                "cgroup2" if v2.is_none() => {
                    v2 = Some(mount_point);
                }
                "cgroup" => {
                    let controllers: Vec<String> = right[2]
                        .split(',')
                        .filter(|o| is_v1_controller(o))
                        .map(str::to_string)
                        .collect();
                    if controllers.is_empty()
                        || mounts
                            .iter()
                            .any(|m| m.controllers.iter().any(|c| controllers.contains(c)))
                    {
                        continue;
                    }
                    mounts.push(V1Mount {
                        dir: mount_point,
                        controllers,
                    });
                }
                _ => {}
            }
        }
        if mounts.is_empty() {
            return match v2 {
                Some(root) => Ok(Layout::V2 { root }),
                None => Err("no cgroup filesystem is mounted".into()),
            };
        }
        Ok(Layout::V1 {
            mounts,
            unified: v2,
        })
    }

    #[cfg(test)]
    pub(crate) fn is_v2(&self) -> bool {
        matches!(self, Layout::V2 { .. })
    }
}

fn is_cgroup2(p: &Path) -> bool {
    nix::sys::statfs::statfs(p)
        .is_ok_and(|s| s.filesystem_type() == nix::sys::statfs::CGROUP2_SUPER_MAGIC)
}

/// Undoes mountinfo's octal escapes (`\040` for a space).
fn unescape(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\'
            && i + 3 < b.len()
            && b[i + 1..i + 4].iter().all(|c| (b'0'..=b'7').contains(c))
        {
            let v = (b[i + 1] - b'0') * 64 + (b[i + 2] - b'0') * 8 + (b[i + 3] - b'0');
            out.push(v);
            i += 4;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn is_v1_controller(opt: &str) -> bool {
    const KNOWN: &[&str] = &[
        "cpu",
        "cpuacct",
        "cpuset",
        "memory",
        "devices",
        "freezer",
        "blkio",
        "pids",
        "hugetlb",
        "net_cls",
        "net_prio",
        "perf_event",
        "rdma",
        "misc",
    ];
    KNOWN.contains(&opt) || (opt.starts_with("name=") && opt.len() > 5)
}

/// Checks a cgroup path: absolute, no `..`, not the root itself.
fn clean_path(p: &str) -> Result<String> {
    let path = Path::new(p);
    let mut parts = Vec::new();
    for c in path.components() {
        match c {
            Component::RootDir | Component::CurDir => {}
            Component::Normal(s) => parts.push(
                s.to_str()
                    .ok_or_else(|| err(format!("cgroupsPath {p:?} is not UTF-8")))?,
            ),
            Component::ParentDir | Component::Prefix(_) => {
                return Err(err(format!("cgroupsPath {p:?} must not contain \"..\"")))
            }
        }
    }
    if parts.is_empty() {
        return Err(err(format!(
            "cgroupsPath {p:?} names the root cgroup; give the container its own"
        )));
    }
    Ok(format!("/{}", parts.join("/")))
}

impl Cgroup {
    /// Resolves the cgroup for container `id` from the spec's `cgroupsPath`: absolute paths are
    /// taken as they are (relative to each hierarchy's root), relative ones go under `/berth`,
    /// and no path means `/berth/<id>`. systemd's `slice:prefix:name` form is refused, since
    /// berth drives cgroupfs directly. Creates nothing.
    pub fn resolve(
        cgroups_path: Option<&Path>,
        id: &str,
    ) -> std::result::Result<Self, CgroupError> {
        let path = match cgroups_path.map(|p| p.to_string_lossy().into_owned()) {
            None => format!("{BERTH_PARENT}/{id}"),
            Some(p) if p.is_empty() => format!("{BERTH_PARENT}/{id}"),
            Some(p) if !p.starts_with('/') && p.matches(':').count() == 2 => {
                return Err(err(format!(
                    "cgroupsPath {p:?} is in systemd's slice:prefix:name form; berth manages \
                     cgroups directly (cgroupfs) — give a path such as /berth/{id}"
                )))
            }
            Some(p) if p.starts_with('/') => p,
            Some(p) => format!("{BERTH_PARENT}/{p}"),
        };
        Ok(Cgroup {
            path: clean_path(&path)?,
        })
    }

    fn rel(&self) -> &str {
        self.path.trim_start_matches('/')
    }

    /// The container's directory in every hierarchy it lives in.
    pub(crate) fn dirs(&self) -> Result<Vec<PathBuf>> {
        Ok(match Layout::get()? {
            Layout::V2 { root } => vec![root.join(self.rel())],
            Layout::V1 { mounts, unified } => mounts
                .iter()
                .map(|m| m.dir.join(self.rel()))
                .chain(unified.iter().map(|u| u.join(self.rel())))
                .collect(),
        })
    }

    /// The container's directory in the v1 hierarchy of `controller`, if it is mounted.
    pub(crate) fn v1_dir(mounts: &[V1Mount], rel: &str, controller: &str) -> Option<PathBuf> {
        mounts
            .iter()
            .find(|m| m.controllers.iter().any(|c| c == controller))
            .map(|m| m.dir.join(rel))
    }

    /// Creates the cgroup directories (in every hierarchy that applies). Idempotent.
    pub fn create(&self) -> std::result::Result<(), CgroupError> {
        let layout = Layout::get()?;
        // A concurrent `delete` of the last container may remove an empty `/berth` between
        // our mkdirs; try again then.
        let mut tries = 0;
        loop {
            match self.create_once(layout) {
                Err(e) if tries < 5 && e.to_string().contains("No such file") => tries += 1,
                r => return r,
            }
        }
    }

    fn create_once(&self, layout: &Layout) -> Result<()> {
        match layout {
            Layout::V2 { root } => {
                fs::mkdir_all(root, self.rel(), |_, _| Ok(()))?;
                v2::enable_controllers(root, self.rel())
            }
            Layout::V1 { mounts, unified } => {
                for m in mounts {
                    let cpuset = m.controllers.iter().any(|c| c == "cpuset");
                    fs::mkdir_all(&m.dir, self.rel(), |parent, dir| {
                        if cpuset {
                            v1::init_cpuset(parent, dir)
                        } else {
                            Ok(())
                        }
                    })?;
                }
                if let Some(u) = unified {
                    fs::mkdir_all(u, self.rel(), |_, _| Ok(()))?;
                }
                Ok(())
            }
        }
    }

    /// Checks a cgroup that a new container is about to use, as runc does: a frozen one is
    /// refused (the init would stop in it, and `create` would never return); one that already
    /// has processes is used, with a warning (returned) — runc 1.2 refuses that too.
    pub fn check_unused(&self) -> std::result::Result<Option<String>, CgroupError> {
        if self.is_frozen()? {
            return Err(err(format!(
                "container's cgroup unexpectedly frozen: {} (thaw it, or give the container \
                 another cgroupsPath)",
                self.path
            )));
        }
        let n = self.pids()?.len();
        Ok((n > 0).then(|| {
            format!(
                "container's cgroup is not empty: {n} process(es) found in {}",
                self.path
            )
        }))
    }

    /// An fd of the cgroup's directory in the unified hierarchy, for `clone3(CLONE_INTO_CGROUP)`
    /// (pure v2, and the unified half of a hybrid host). `None` on pure v1.
    pub fn clone_into_fd(&self) -> Option<OwnedFd> {
        match Layout::get().ok()? {
            Layout::V2 { root } => fs::open_dir(&root.join(self.rel())).ok(),
            Layout::V1 {
                unified: Some(u), ..
            } => fs::open_dir(&u.join(self.rel())).ok(),
            Layout::V1 { unified: None, .. } => None,
        }
    }

    /// Whether the host has v1 hierarchies (which `CLONE_INTO_CGROUP` does not reach).
    pub fn host_has_v1() -> bool {
        matches!(Layout::get(), Ok(Layout::V1 { .. }))
    }

    /// Moves the calling (single-threaded) process into the cgroup in every v1 hierarchy by
    /// writing `0` to `tasks`. Unlike another process writing our pid to `cgroup.procs`, this
    /// does not take the kernel's global threadgroup lock, whose first use waits out an RCU
    /// grace period — milliseconds on every container start.
    ///
    /// The freezer hierarchy comes last: in a frozen (paused) cgroup the process stops as soon
    /// as it joins it, and must be in every other hierarchy by then (`ps` reads `pids`).
    pub fn join_self_v1(&self) -> std::result::Result<(), CgroupError> {
        if let Layout::V1 { mounts, .. } = Layout::get()? {
            let freezer = |m: &&V1Mount| m.controllers.iter().any(|c| c == "freezer");
            let (last, first): (Vec<&V1Mount>, Vec<&V1Mount>) = mounts.iter().partition(freezer);
            for m in first.into_iter().chain(last) {
                fs::write(&m.dir.join(self.rel()), "tasks", "0")?;
            }
        }
        Ok(())
    }

    /// Moves `pid` into the cgroup in the unified hierarchy of a hybrid host (nothing on pure v1).
    pub fn add_pid_unified(&self, pid: i32) -> std::result::Result<(), CgroupError> {
        if let Layout::V1 {
            unified: Some(u), ..
        } = Layout::get()?
        {
            fs::write(&u.join(self.rel()), "cgroup.procs", &pid.to_string())?;
        }
        Ok(())
    }

    /// Moves `pid` into the cgroup in the v1 hierarchies only (its unified cgroup was set by
    /// `CLONE_INTO_CGROUP`).
    pub fn add_pid_v1(&self, pid: i32) -> std::result::Result<(), CgroupError> {
        if let Layout::V1 { mounts, .. } = Layout::get()? {
            for m in mounts {
                fs::write(&m.dir.join(self.rel()), "cgroup.procs", &pid.to_string())?;
            }
        }
        Ok(())
    }

    /// Moves `pid` into the cgroup in every hierarchy (not needed after `CLONE_INTO_CGROUP`).
    pub fn add_pid(&self, pid: i32) -> std::result::Result<(), CgroupError> {
        for dir in self.dirs()? {
            fs::write(&dir, "cgroup.procs", &pid.to_string())?;
        }
        Ok(())
    }

    /// The directories, one per hierarchy, of the sub-cgroups that `exec --cgroup` names
    /// (runc's): `subs` maps a v1 controller to a path below the container's cgroup, or `""`
    /// to one for every hierarchy; hierarchies not named keep the container's cgroup. A path
    /// that leaves the container's cgroup or an unknown controller is refused; whether the
    /// directory exists is for [`Cgroup::add_pid_to`] to find out.
    pub fn sub_cgroup_dirs(
        &self,
        subs: &std::collections::BTreeMap<String, String>,
    ) -> std::result::Result<Vec<PathBuf>, CgroupError> {
        let below = |base: PathBuf, sub: &str| -> Result<PathBuf> {
            let mut parts: Vec<&std::ffi::OsStr> = Vec::new();
            for c in Path::new(sub).components() {
                match c {
                    Component::Normal(p) => parts.push(p),
                    Component::ParentDir => {
                        parts.pop().ok_or_else(|| {
                            err(format!("{sub} is not a sub cgroup path of {}", self.path))
                        })?;
                    }
                    _ => {}
                }
            }
            Ok(parts.iter().fold(base, |d, p| d.join(p)))
        };
        let all = subs.get("");
        let dirs = match Layout::get()? {
            Layout::V2 { root } => {
                if let Some(c) = subs.keys().find(|c| !c.is_empty()) {
                    return Err(err(format!(
                        "unknown controller {c} (cgroup v2 has one hierarchy: give a path only)"
                    )));
                }
                vec![below(root.join(self.rel()), all.map_or("", |s| s))?]
            }
            Layout::V1 { mounts, unified } => {
                for c in subs.keys().filter(|c| !c.is_empty()) {
                    if Self::v1_dir(mounts, self.rel(), c).is_none() {
                        return Err(err(format!("unknown controller {c}")));
                    }
                }
                let mut dirs = Vec::new();
                for m in mounts {
                    let sub = all
                        .or_else(|| m.controllers.iter().find_map(|c| subs.get(c)))
                        .map_or("", |s| s);
                    dirs.push(below(m.dir.join(self.rel()), sub)?);
                }
                if let Some(u) = unified {
                    dirs.push(below(u.join(self.rel()), all.map_or("", |s| s))?);
                }
                dirs
            }
        };
        Ok(dirs)
    }

    /// Moves `pid` into each of `dirs` (from [`Cgroup::sub_cgroup_dirs`]).
    pub fn add_pid_to(dirs: &[PathBuf], pid: i32) -> std::result::Result<(), CgroupError> {
        for d in dirs {
            let p = d.join("cgroup.procs");
            fs::try_write(d, "cgroup.procs", &pid.to_string()).map_err(|e| {
                // Worded as runc's (Go's lower-case errno text), which tools match.
                let why = e
                    .raw_os_error()
                    .map(|n| nix::errno::Errno::from_raw(n).desc().to_lowercase())
                    .unwrap_or_else(|| e.to_string());
                err(format!(
                    "adding pid {pid} to cgroups: {}: {why}",
                    p.display()
                ))
            })?;
        }
        Ok(())
    }

    /// Applies resources; returns warnings for settings this host cannot honour.
    pub fn apply(&self, res: &LinuxResources) -> std::result::Result<Vec<String>, CgroupError> {
        match Layout::get()? {
            Layout::V2 { root } => v2::apply(&root.join(self.rel()), res),
            Layout::V1 { mounts, .. } => v1::apply(mounts, self.rel(), res),
        }
    }

    pub fn freeze(&self) -> std::result::Result<(), CgroupError> {
        self.set_frozen(true)
    }

    pub fn thaw(&self) -> std::result::Result<(), CgroupError> {
        self.set_frozen(false)
    }

    fn set_frozen(&self, frozen: bool) -> Result<()> {
        match Layout::get()? {
            Layout::V2 { root } => v2::set_frozen(&root.join(self.rel()), frozen),
            Layout::V1 { mounts, .. } => {
                let dir = Self::v1_dir(mounts, self.rel(), "freezer")
                    .ok_or_else(|| err("the freezer controller is not mounted on this host"))?;
                v1::set_frozen(&dir, frozen)
            }
        }
    }

    pub fn is_frozen(&self) -> std::result::Result<bool, CgroupError> {
        match Layout::get()? {
            Layout::V2 { root } => v2::is_frozen(&root.join(self.rel())),
            Layout::V1 { mounts, .. } => match Self::v1_dir(mounts, self.rel(), "freezer") {
                Some(dir) => v1::is_frozen(&dir),
                None => Ok(false),
            },
        }
    }

    /// The directory whose `cgroup.procs` lists the container's processes.
    fn procs_dir(&self) -> Result<PathBuf> {
        Ok(match Layout::get()? {
            Layout::V2 { root } => root.join(self.rel()),
            Layout::V1 { mounts, unified } => ["pids", "freezer", "memory", "devices", "cpu"]
                .iter()
                .find_map(|c| Self::v1_dir(mounts, self.rel(), c))
                .or_else(|| mounts.first().map(|m| m.dir.join(self.rel())))
                .or_else(|| unified.as_ref().map(|u| u.join(self.rel())))
                .ok_or_else(|| err("no cgroup hierarchy"))?,
        })
    }

    /// Every pid in the cgroup (recursively).
    pub fn pids(&self) -> std::result::Result<Vec<i32>, CgroupError> {
        let mut out = Vec::new();
        fs::collect_pids(&self.procs_dir()?, &mut out)?;
        Ok(out)
    }

    pub fn stats(&self) -> std::result::Result<Stats, CgroupError> {
        match Layout::get()? {
            Layout::V2 { root } => stats::v2(&root.join(self.rel())),
            Layout::V1 { mounts, .. } => stats::v1(mounts, self.rel()),
        }
    }

    /// Removes the cgroup directories (waits briefly for the cgroup to empty), then the
    /// `/berth` directories above it that are left empty, up to a pod cgroup of berthd's
    /// (`/berth/pod-<id>`, see [`POD_PREFIX`]), which its pod removes. Idempotent.
    pub fn destroy(&self) -> std::result::Result<(), CgroupError> {
        let deadline = Instant::now() + Duration::from_secs(5);
        let roots: Vec<PathBuf> = match Layout::get()? {
            Layout::V2 { root } => vec![root.clone()],
            Layout::V1 { mounts, unified } => mounts
                .iter()
                .map(|m| m.dir.clone())
                .chain(unified.iter().cloned())
                .collect(),
        };
        let mut first_err = None;
        for root in &roots {
            let dir = root.join(self.rel());
            if let Err(e) = fs::remove_tree(&dir, deadline) {
                first_err.get_or_insert(e);
                continue;
            }
            // Empty parents inside berth's own `/berth` tree go too (never above it).
            if self.path.starts_with(&format!("{BERTH_PARENT}/")) {
                let mut p = Path::new(&self.path).parent();
                while let Some(parent) = p {
                    if parent == Path::new("/") || is_pod_cgroup(parent) {
                        break;
                    }
                    let d = root.join(parent.strip_prefix("/").unwrap_or(parent));
                    if std::fs::remove_dir(&d).is_err() {
                        break;
                    }
                    p = parent.parent();
                }
            }
        }
        match first_err {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }
}

/// Whether `path` is a pod cgroup of berthd's: `pod-<id>` right below [`BERTH_PARENT`]. A
/// `pod-` directory deeper down is someone's own parent, and goes like any other.
fn is_pod_cgroup(path: &Path) -> bool {
    path.parent() == Some(Path::new(BERTH_PARENT))
        && path
            .file_name()
            .is_some_and(|n| n.to_string_lossy().starts_with(POD_PREFIX))
}

/// On a hybrid host (v1 controllers and the unified hierarchy), removes the directory `path`
/// of the *unified* hierarchy if it is empty; nothing on pure v1 or pure v2 hosts, nor in the
/// v1 hierarchies, nor above `path`.
///
/// For a cgroup parent a kubelet manages (`/kubepods/besteffort/pod<uid>`): on a hybrid host
/// a kubelet of the v1 era makes and removes it in the v1 hierarchies only, while the
/// containers' cgroups berth makes in the unified hierarchy create it there too (one per pod).
/// The directories above it (the QoS classes) are shared by every pod and stay. A directory
/// with a process or a child cgroup in it is not empty and stays.
pub fn remove_empty_unified(path: &str) -> std::result::Result<(), CgroupError> {
    let Layout::V1 {
        unified: Some(root),
        ..
    } = Layout::get()?
    else {
        return Ok(());
    };
    let path = clean_path(path)?;
    // Gone already, or not empty (still in use): nothing to do either way.
    let _ = std::fs::remove_dir(root.join(path.trim_start_matches('/')));
    Ok(())
}

#[cfg(test)]
mod tests;
