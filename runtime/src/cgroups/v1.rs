//! cgroup v1 (and the v1 half of a hybrid host): one directory per controller hierarchy.

use super::{devices, err, fs, Cgroup, Result, V1Mount};
use oci_spec::runtime::LinuxResources;
use std::path::Path;
use std::time::{Duration, Instant};

/// A new cpuset cgroup starts with no cpus and no mems, and no task can join it (ENOSPC): copy
/// the parent's. Called top-down for every directory on the container's path, so that a parent
/// someone made without setting them (no task can be in it then) gets them too, as runc does.
pub fn init_cpuset(parent: &Path, dir: &Path) -> Result<()> {
    for file in ["cpuset.cpus", "cpuset.mems"] {
        if fs::read(dir, file)?.is_empty() {
            fs::write(dir, file, &fs::read(parent, file)?)?;
        }
    }
    Ok(())
}

fn num(v: i64) -> String {
    if v < 0 {
        "-1".into()
    } else {
        v.to_string()
    }
}

/// Applies `res`.
pub fn apply(mounts: &[V1Mount], rel: &str, res: &LinuxResources) -> Result<Vec<String>> {
    let mut warnings = Vec::new();
    let dir = |c: &str| Cgroup::v1_dir(mounts, rel, c);
    let missing = |w: &mut Vec<String>, what: &str, c: &str| {
        w.push(format!(
            "{what} ignored: the {c} cgroup controller is not mounted on this host"
        ))
    };

    if let Some(m) = res.memory() {
        match dir("memory") {
            Some(d) => {
                set_memory_and_swap(&d, m.limit(), m.swap(), &mut warnings)?;
                if let Some(r) = m.reservation() {
                    fs::write(&d, "memory.soft_limit_in_bytes", &num(r))?;
                }
                if m.kernel().is_some() {
                    warnings
                        .push("memory.kernel ignored: kernel memory limits are deprecated".into());
                }
                if let Some(k) = m.kernel_tcp() {
                    if fs::exists(&d, "memory.kmem.tcp.limit_in_bytes") {
                        fs::write(&d, "memory.kmem.tcp.limit_in_bytes", &num(k))?;
                    } else {
                        warnings
                            .push("memory.kernelTCP ignored: not supported by this kernel".into());
                    }
                }
                if let Some(s) = m.swappiness() {
                    if s > 100 {
                        return Err(err(format!(
                            "memory.swappiness {s} is out of range (0-100)"
                        )));
                    }
                    fs::write(&d, "memory.swappiness", &s.to_string())?;
                }
                if m.disable_oom_killer() == Some(true) {
                    fs::write(&d, "memory.oom_control", "1")?;
                }
            }
            None => missing(&mut warnings, "memory limits", "memory"),
        }
    }

    if let Some(c) = res.cpu() {
        let cpu_set = c.shares().is_some()
            || c.quota().is_some()
            || c.period().is_some()
            || c.realtime_runtime().is_some()
            || c.realtime_period().is_some()
            || c.idle().is_some();
        if cpu_set {
            match dir("cpu") {
                Some(d) => {
                    if let Some(s) = c.shares().filter(|s| *s != 0) {
                        fs::write(&d, "cpu.shares", &s.to_string())?;
                    }
                    // A period smaller than the current one can be refused (EINVAL) while the
                    // old quota over the new period exceeds the parent's limit; as runc does,
                    // the period then goes in again once the quota is set.
                    let quota = c.quota().filter(|q| *q != 0);
                    let mut period_again = None;
                    if let Some(p) = c.period().filter(|p| *p != 0) {
                        match fs::write(&d, "cpu.cfs_period_us", &p.to_string()) {
                            Err(_) if quota.is_some() => period_again = Some(p),
                            r => r?,
                        }
                    }
                    if let Some(q) = quota {
                        fs::write(&d, "cpu.cfs_quota_us", &num(q))?;
                    }
                    if let Some(p) = period_again {
                        fs::write(&d, "cpu.cfs_period_us", &p.to_string())?;
                    }
                    if let Some(p) = c.realtime_period().filter(|p| *p != 0) {
                        fs::write(&d, "cpu.rt_period_us", &p.to_string())?;
                    }
                    if let Some(r) = c.realtime_runtime().filter(|r| *r != 0) {
                        if fs::exists(&d, "cpu.rt_runtime_us") {
                            fs::write(&d, "cpu.rt_runtime_us", &num(r))?;
                        } else {
                            warnings.push(
                                "cpu.realtimeRuntime ignored: the kernel has no RT group scheduling"
                                    .into(),
                            );
                        }
                    }
                    if let Some(i) = c.idle() {
                        if fs::exists(&d, "cpu.idle") {
                            fs::write(&d, "cpu.idle", &i.to_string())?;
                        } else {
                            warnings.push("cpu.idle ignored: not supported by this kernel".into());
                        }
                    }
                }
                None => missing(&mut warnings, "cpu limits", "cpu"),
            }
        }
        if c.cpus().is_some() || c.mems().is_some() {
            match dir("cpuset") {
                Some(d) => {
                    if let Some(v) = c.cpus().as_deref().filter(|v| !v.is_empty()) {
                        fs::write(&d, "cpuset.cpus", v)?;
                    }
                    if let Some(v) = c.mems().as_deref().filter(|v| !v.is_empty()) {
                        fs::write(&d, "cpuset.mems", v)?;
                    }
                }
                None => missing(&mut warnings, "cpu.cpus/mems", "cpuset"),
            }
        }
    }

    if let Some(p) = res.pids() {
        match dir("pids") {
            Some(d) => {
                let v = if p.limit() > 0 {
                    p.limit().to_string()
                } else {
                    "max".into()
                };
                fs::write(&d, "pids.max", &v)?;
            }
            None => missing(&mut warnings, "pids.limit", "pids"),
        }
    }

    if let Some(b) = res.block_io() {
        match dir("blkio") {
            Some(d) => {
                // bfq exposes its own weight files; cfq the plain ones.
                let wfile = if fs::exists(&d, "blkio.weight") {
                    Some("blkio.weight")
                } else if fs::exists(&d, "blkio.bfq.weight") {
                    Some("blkio.bfq.weight")
                } else {
                    None
                };
                if let Some(w) = b.weight() {
                    match wfile {
                        Some(f) => fs::write(&d, f, &w.to_string())?,
                        None => warnings.push(
                            "blockIO.weight ignored: no I/O scheduler with weights (cfq/bfq)"
                                .into(),
                        ),
                    }
                }
                if let Some(w) = b.leaf_weight() {
                    if fs::exists(&d, "blkio.leaf_weight") {
                        fs::write(&d, "blkio.leaf_weight", &w.to_string())?;
                    } else {
                        warnings.push("blockIO.leafWeight ignored: not supported".into());
                    }
                }
                for wd in b.weight_device().iter().flatten() {
                    if let Some(w) = wd.weight() {
                        match wfile {
                            Some(f) => fs::write(
                                &d,
                                &format!("{f}_device"),
                                &format!("{}:{} {w}", wd.major(), wd.minor()),
                            )?,
                            None => warnings.push(
                                "blockIO.weightDevice ignored: no I/O scheduler with weights"
                                    .into(),
                            ),
                        }
                    }
                }
                let throttles = [
                    (
                        "blkio.throttle.read_bps_device",
                        b.throttle_read_bps_device(),
                    ),
                    (
                        "blkio.throttle.write_bps_device",
                        b.throttle_write_bps_device(),
                    ),
                    (
                        "blkio.throttle.read_iops_device",
                        b.throttle_read_iops_device(),
                    ),
                    (
                        "blkio.throttle.write_iops_device",
                        b.throttle_write_iops_device(),
                    ),
                ];
                for (file, list) in throttles {
                    for t in list.iter().flatten() {
                        fs::write(
                            &d,
                            file,
                            &format!("{}:{} {}", t.major(), t.minor(), t.rate()),
                        )?;
                    }
                }
            }
            None => missing(&mut warnings, "blockIO", "blkio"),
        }
    }

    for h in res.hugepage_limits().iter().flatten() {
        match dir("hugetlb") {
            Some(d) => fs::write(
                &d,
                &format!("hugetlb.{}.limit_in_bytes", h.page_size()),
                &num(h.limit()),
            )?,
            None => missing(&mut warnings, "hugepageLimits", "hugetlb"),
        }
    }

    if let Some(n) = res.network() {
        if let Some(id) = n.class_id() {
            match dir("net_cls") {
                Some(d) => fs::write(&d, "net_cls.classid", &id.to_string())?,
                None => missing(&mut warnings, "network.classID", "net_cls"),
            }
        }
        for p in n.priorities().iter().flatten() {
            match dir("net_prio") {
                Some(d) => fs::write(
                    &d,
                    "net_prio.ifpriomap",
                    &format!("{} {}", p.name(), p.priority()),
                )?,
                None => missing(&mut warnings, "network.priorities", "net_prio"),
            }
        }
    }

    if res.rdma().as_ref().is_some_and(|r| !r.is_empty()) {
        warnings.push("rdma limits ignored: not supported by berth yet".into());
    }

    if let Some(rules) = devices::rules(res.devices().as_ref())? {
        match dir("devices") {
            Some(d) => devices::apply_v1(&d, &rules)?,
            None => missing(&mut warnings, "device rules", "devices"),
        }
    }

    if res.unified().as_ref().is_some_and(|u| !u.is_empty()) {
        // As runc, also on a hybrid host: its unified hierarchy has no controllers to set.
        return Err(err(
            "invalid configuration: cannot use unified on cgroup v1 (linux.resources.unified \
             needs a cgroup v2 host)",
        ));
    }
    Ok(warnings)
}

/// Sets the memory limit and memory+swap limit. The kernel wants limit ≤ memsw at every step,
/// so the order depends on whether the limits grow or shrink.
fn set_memory_and_swap(
    d: &Path,
    limit: Option<i64>,
    swap: Option<i64>,
    warnings: &mut Vec<String>,
) -> Result<()> {
    let swap = match swap {
        Some(s) if !fs::exists(d, "memory.memsw.limit_in_bytes") => {
            let _ = s;
            warnings.push(
                "memory.swap ignored: swap accounting is off on this host (swapaccount=1)".into(),
            );
            None
        }
        s => s,
    };
    match (limit, swap) {
        (None, None) => Ok(()),
        // As runc: no memory limit and no word on swap lifts the swap limit too; memsw first,
        // since memory.limit_in_bytes may not exceed it.
        (Some(-1), None) if fs::exists(d, "memory.memsw.limit_in_bytes") => {
            fs::write(d, "memory.memsw.limit_in_bytes", "-1")?;
            fs::write(d, "memory.limit_in_bytes", "-1")
        }
        (Some(l), None) => fs::write(d, "memory.limit_in_bytes", &num(l)),
        (None, Some(s)) => fs::write(d, "memory.memsw.limit_in_bytes", &num(s)),
        (Some(l), Some(s)) => {
            if l >= 0 && s >= 0 && s < l {
                return Err(err(format!(
                    "memory.swap ({s}) must not be below memory.limit ({l}): it is memory+swap"
                )));
            }
            match fs::try_write(d, "memory.limit_in_bytes", &num(l)) {
                Ok(()) => fs::write(d, "memory.memsw.limit_in_bytes", &num(s)),
                // The new limit is above the current memsw: raise memsw first.
                Err(e) if e.raw_os_error() == Some(libc::EINVAL) => {
                    fs::write(d, "memory.memsw.limit_in_bytes", &num(s))?;
                    fs::write(d, "memory.limit_in_bytes", &num(l))
                }
                Err(e) => Err(err(format!(
                    "write {:?} to {}/memory.limit_in_bytes: {e}",
                    num(l),
                    d.display()
                ))),
            }
        }
    }
}

pub fn set_frozen(dir: &Path, frozen: bool) -> Result<()> {
    let want = if frozen { "FROZEN" } else { "THAWED" };
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut delay = Duration::from_micros(100);
    loop {
        // Writing FROZEN again nudges a freeze that raced with a fork.
        fs::write(dir, "freezer.state", want)?;
        if fs::read(dir, "freezer.state")? == want {
            return Ok(());
        }
        if Instant::now() > deadline {
            let _ = fs::write(dir, "freezer.state", "THAWED");
            return Err(err(format!(
                "{}: the cgroup did not reach {want} in 10 s",
                dir.display()
            )));
        }
        std::thread::sleep(delay);
        delay = (delay * 2).min(Duration::from_millis(10));
    }
}

pub fn is_frozen(dir: &Path) -> Result<bool> {
    match std::fs::read_to_string(dir.join("freezer.state")) {
        Ok(s) => Ok(s.trim() == "FROZEN"),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(false),
        Err(e) => Err(err(format!("read {}/freezer.state: {e}", dir.display()))),
    }
}
