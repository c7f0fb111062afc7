//! The `cgroup` mount type (runc's `mountCgroupV1` / `mountCgroupV2`).
//!
//! - cgroup v2 host: mount cgroup2 at the target. Where the kernel refuses (a user namespace
//!   without its own cgroup namespace), bind the host's hierarchy instead: the container's own
//!   cgroup with a cgroup namespace, all of `/sys/fs/cgroup` without.
//! - v1 or hybrid host: a tmpfs at the target, and in it one entry per host hierarchy (named as
//!   on the host: `cpu`, `cpu,cpuacct`, `systemd`, `unified`). With a cgroup namespace each is
//!   a fresh mount of that hierarchy, whose root is the container's cgroup; without, a bind of
//!   the container's cgroup directory. Co-mounted controllers get symlinks (`cpu -> cpu,cpuacct`).

use super::mounts::{self, mount_bind, mount_fs};
use super::options::MountOpts;
use super::resolve::Kind;
use super::{mountinfo, sys, Ctx, Result};
use nix::errno::Errno;
use nix::mount::MsFlags;
use nix::sys::statfs::{statfs, CGROUP2_SUPER_MAGIC};
use nix::unistd::symlinkat;
use std::os::fd::AsFd;
use std::path::{Path, PathBuf};

const CGROUP_ROOT: &str = "/sys/fs/cgroup";

/// One line of /proc/self/cgroup: `id:controllers:path`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct OwnCgroup {
    pub controllers: Vec<String>,
    pub path: String,
}

pub(crate) fn parse_proc_cgroup(s: &str) -> Vec<OwnCgroup> {
    s.lines()
        .filter_map(|l| {
            let mut it = l.splitn(3, ':');
            let _id = it.next()?;
            let ctrl = it.next()?;
            let path = it.next()?;
            Some(OwnCgroup {
                controllers: ctrl
                    .split(',')
                    .filter(|c| !c.is_empty())
                    .map(String::from)
                    .collect(),
                path: path.to_string(),
            })
        })
        .collect()
}

fn own_cgroups() -> Result<Vec<OwnCgroup>> {
    let s = std::fs::read_to_string("/proc/self/cgroup")
        .map_err(|e| sys("read /proc/self/cgroup")(mounts::io_errno(&e)))?;
    Ok(parse_proc_cgroup(&s))
}

pub(crate) fn mount_cgroup(ctx: &Ctx<'_>, dest: &Path, opts: &MountOpts) -> Result<()> {
    let v2 = statfs(CGROUP_ROOT).is_ok_and(|s| s.filesystem_type() == CGROUP2_SUPER_MAGIC);
    if v2 {
        mount_v2(ctx, dest, opts)
    } else {
        mount_v1(ctx, dest, opts)
    }
}

fn mount_v2(ctx: &Ctx<'_>, dest: &Path, opts: &MountOpts) -> Result<()> {
    match mount_fs(ctx, dest, "cgroup2", "cgroup2", opts) {
        Err(e) if matches!(e.errno(), Some(Errno::EPERM | Errno::EBUSY)) => {
            let mut src = PathBuf::from(CGROUP_ROOT);
            if ctx.cgroupns {
                if let Some(own) = own_cgroups()?
                    .into_iter()
                    .find(|c| c.controllers.is_empty())
                {
                    src = host_dir(&src, "/", &own.path);
                }
            }
            let mut o = opts.clone();
            o.flags |= MsFlags::MS_BIND;
            mount_bind(ctx, dest, &src, None, &o)
        }
        r => r,
    }
}

/// `mountpoint` + the part of `own` below the hierarchy's mounted `root`.
fn host_dir(mountpoint: &Path, root: &str, own: &str) -> PathBuf {
    let rel = Path::new(own)
        .strip_prefix(root)
        .unwrap_or(Path::new(own.trim_start_matches('/')));
    let rel = rel.strip_prefix("/").unwrap_or(rel);
    mountpoint.join(rel)
}

fn mount_v1(ctx: &Ctx<'_>, dest: &Path, opts: &MountOpts) -> Result<()> {
    let tmpfs = MountOpts {
        flags: MsFlags::MS_NOEXEC | MsFlags::MS_NOSUID | MsFlags::MS_NODEV,
        propagation: opts.propagation.clone(),
        data: "mode=755".into(),
        ..MountOpts::default()
    };
    mount_fs(ctx, dest, "tmpfs", "tmpfs", &tmpfs)?;

    let own = own_cgroups()?;
    let base = opts.flags
        & (MsFlags::MS_RDONLY | MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC);
    let mut merged = Vec::new();
    let mut seen = std::collections::HashSet::new();
    for mi in mountinfo::read()? {
        let Some(name) = mi.mount_point.strip_prefix(CGROUP_ROOT).ok().and_then(|p| {
            let s = p.to_str()?;
            (!s.is_empty() && !s.contains('/')).then(|| s.to_string())
        }) else {
            continue;
        };
        if !seen.insert(name.clone()) {
            continue;
        }
        let sub = dest.join(&name);
        // Which line of /proc/self/cgroup belongs to this hierarchy.
        let (fstype, data, mine) = match mi.fstype.as_str() {
            "cgroup" => {
                let opts: Vec<&str> = mi.super_opts.split(',').collect();
                let Some(c) = own.iter().find(|c| {
                    !c.controllers.is_empty()
                        && c.controllers.iter().all(|x| opts.contains(&x.as_str()))
                }) else {
                    continue;
                };
                ("cgroup", c.controllers.join(","), c)
            }
            "cgroup2" => match own.iter().find(|c| c.controllers.is_empty()) {
                Some(c) => ("cgroup2", String::new(), c),
                None => continue,
            },
            _ => continue,
        };
        if name.contains(',') {
            merged.push(name.clone());
        }
        if ctx.cgroupns {
            let o = MountOpts {
                flags: base | MsFlags::MS_NOEXEC | MsFlags::MS_NOSUID | MsFlags::MS_NODEV,
                data,
                ..MountOpts::default()
            };
            mount_fs(ctx, &sub, fstype, fstype, &o)?;
        } else {
            let src = host_dir(&mi.mount_point, &mi.root, &mine.path);
            let o = MountOpts {
                flags: MsFlags::MS_BIND | MsFlags::MS_REC | base,
                propagation: opts.propagation.clone(),
                ..MountOpts::default()
            };
            mount_bind(ctx, &sub, &src, None, &o)?;
        }
    }
    if !merged.is_empty() {
        let dir = mounts::create_target(ctx, dest, Kind::Dir)?;
        for m in &merged {
            for ss in m.split(',') {
                match symlinkat(m.as_str(), dir.as_fd(), ss) {
                    Ok(()) | Err(Errno::EEXIST) => {}
                    Err(e) => return Err(sys(format!("symlink {:?}", dest.join(ss)))(e)),
                }
            }
        }
    }
    if opts.readonly() {
        let t = mounts::reopen(ctx, dest)?;
        super::sys::remount_bind(t.as_fd(), tmpfs.flags | MsFlags::MS_RDONLY)
            .map_err(sys(format!("remount {dest:?} read-only")))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_proc_self_cgroup() {
        let v = parse_proc_cgroup("9:name=systemd:/a\n2:cpu,cpuacct:/b/c\n0::/d\n");
        assert_eq!(v[0].controllers, vec!["name=systemd"]);
        assert_eq!(v[1].controllers, vec!["cpu", "cpuacct"]);
        assert_eq!(v[1].path, "/b/c");
        assert!(v[2].controllers.is_empty());
        assert_eq!(
            host_dir(Path::new("/sys/fs/cgroup/cpu"), "/", "/b/c"),
            PathBuf::from("/sys/fs/cgroup/cpu/b/c")
        );
        assert_eq!(
            host_dir(Path::new("/sys/fs/cgroup/cpu"), "/b", "/b/c"),
            PathBuf::from("/sys/fs/cgroup/cpu/c")
        );
        assert_eq!(
            host_dir(Path::new("/sys/fs/cgroup/cpu"), "/", "/"),
            PathBuf::from("/sys/fs/cgroup/cpu")
        );
    }
}
