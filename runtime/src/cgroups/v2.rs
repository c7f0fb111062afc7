//! cgroup v2: one directory in the unified hierarchy.

use super::{devices, err, fs, Result};
use oci_spec::runtime::LinuxResources;
use std::path::Path;
use std::time::{Duration, Instant};

/// Enables every available controller in each ancestor of `root/rel` (not the leaf: a cgroup
/// with processes cannot pass controllers down). Controllers a parent cannot enable are left
/// off; resources that need them then fail with the file they could not write.
pub fn enable_controllers(root: &Path, rel: &str) -> Result<()> {
    let parts: Vec<&str> = rel.split('/').filter(|p| !p.is_empty()).collect();
    let mut dir = root.to_path_buf();
    enable_in(&dir);
    for part in &parts[..parts.len().saturating_sub(1)] {
        dir.push(part);
        enable_in(&dir);
    }
    Ok(())
}

fn enable_in(dir: &Path) {
    let available = fs::read(dir, "cgroup.controllers").unwrap_or_default();
    let enabled = fs::read(dir, "cgroup.subtree_control").unwrap_or_default();
    let missing: Vec<String> = available
        .split_whitespace()
        .filter(|c| !enabled.split_whitespace().any(|e| e == *c))
        .map(|c| format!("+{c}"))
        .collect();
    if missing.is_empty() {
        return;
    }
    if fs::try_write(dir, "cgroup.subtree_control", &missing.join(" ")).is_err() {
        for c in missing {
            let _ = fs::try_write(dir, "cgroup.subtree_control", &c);
        }
    }
}

/// A `linux.resources.unified` key must name a file in the cgroup's own directory.
pub fn check_unified_key(k: &str) -> Result<()> {
    if k.is_empty() || k.contains('/') || k == "." || k == ".." || !k.contains('.') {
        return Err(err(format!(
            "linux.resources.unified key {k:?} is not a cgroup file name"
        )));
    }
    Ok(())
}

fn limit(v: i64) -> String {
    if v < 0 {
        "max".into()
    } else {
        v.to_string()
    }
}

/// cpu.shares (2..262144) to cpu.weight (1..10000), as runc and the kubelet convert it.
pub fn shares_to_weight(shares: u64) -> u64 {
    if shares == 0 {
        return 0;
    }
    let s = shares.clamp(2, 262_144);
    1 + ((s - 2) * 9999) / 262_142
}

/// blkio weight (10..1000) to io.weight (1..10000).
pub fn blkio_to_io_weight(w: u16) -> u64 {
    let w = u64::from(w).clamp(10, 1000);
    1 + ((w - 10) * 9999) / 990
}

pub fn apply(dir: &Path, res: &LinuxResources) -> Result<Vec<String>> {
    let mut warnings = Vec::new();

    if let Some(m) = res.memory() {
        if let Some(l) = m.limit() {
            fs::write(dir, "memory.max", &limit(l))?;
        }
        if let Some(s) = m.swap() {
            // OCI's swap is memory+swap; v2's memory.swap.max is swap alone.
            let v = match (s, m.limit()) {
                (s, _) if s < 0 => "max".to_string(),
                (s, Some(l)) if l >= 0 => {
                    if s < l {
                        return Err(err(format!(
                            "memory.swap ({s}) must not be below memory.limit ({l}): it is \
                             memory+swap"
                        )));
                    }
                    (s - l).to_string()
                }
                (0, _) => "0".to_string(),
                (s, _) => {
                    return Err(err(format!(
                        "memory.swap ({s}) needs a memory.limit on cgroup v2"
                    )))
                }
            };
            if fs::exists(dir, "memory.swap.max") {
                fs::write(dir, "memory.swap.max", &v)?;
            } else {
                warnings.push("memory.swap ignored: swap accounting is off on this host".into());
            }
        }
        if let Some(r) = m.reservation() {
            fs::write(dir, "memory.low", &limit(r))?;
        }
        if m.kernel().is_some() {
            warnings.push("memory.kernel ignored: not supported on cgroup v2".into());
        }
        if m.kernel_tcp().is_some() {
            warnings.push("memory.kernelTCP ignored: not supported on cgroup v2".into());
        }
        if m.swappiness().is_some() {
            warnings.push("memory.swappiness ignored: not supported on cgroup v2".into());
        }
        if m.disable_oom_killer() == Some(true) {
            warnings.push("memory.disableOOMKiller ignored: not supported on cgroup v2".into());
        }
    }

    if let Some(c) = res.cpu() {
        if let Some(s) = c.shares().filter(|s| *s != 0) {
            fs::write(dir, "cpu.weight", &shares_to_weight(s).to_string())?;
        }
        if c.quota().is_some() || c.period().is_some() {
            let quota = match c.quota() {
                Some(q) if q > 0 => q.to_string(),
                _ => "max".into(),
            };
            let period = c.period().filter(|p| *p != 0).unwrap_or(100_000);
            fs::write(dir, "cpu.max", &format!("{quota} {period}"))?;
        }
        if let Some(i) = c.idle() {
            fs::write(dir, "cpu.idle", &i.to_string())?;
        }
        if c.realtime_runtime().is_some_and(|r| r != 0)
            || c.realtime_period().is_some_and(|p| p != 0)
        {
            warnings.push("cpu.realtime* ignored: not supported on cgroup v2".into());
        }
        if let Some(v) = c.cpus().as_deref().filter(|v| !v.is_empty()) {
            fs::write(dir, "cpuset.cpus", v)?;
        }
        if let Some(v) = c.mems().as_deref().filter(|v| !v.is_empty()) {
            fs::write(dir, "cpuset.mems", v)?;
        }
    }

    if let Some(p) = res.pids() {
        let v = if p.limit() > 0 {
            p.limit().to_string()
        } else {
            "max".into()
        };
        fs::write(dir, "pids.max", &v)?;
    }

    if let Some(b) = res.block_io() {
        let bfq = fs::exists(dir, "io.bfq.weight");
        if let Some(w) = b.weight() {
            if bfq {
                fs::write(dir, "io.bfq.weight", &w.to_string())?;
            } else {
                fs::write(dir, "io.weight", &blkio_to_io_weight(w).to_string())?;
            }
        }
        if b.leaf_weight().is_some() {
            warnings.push("blockIO.leafWeight ignored: not supported on cgroup v2".into());
        }
        for wd in b.weight_device().iter().flatten() {
            if let Some(w) = wd.weight() {
                if bfq {
                    fs::write(
                        dir,
                        "io.bfq.weight",
                        &format!("{}:{} {w}", wd.major(), wd.minor()),
                    )?;
                } else {
                    fs::write(
                        dir,
                        "io.weight",
                        &format!("{}:{} {}", wd.major(), wd.minor(), blkio_to_io_weight(w)),
                    )?;
                }
            }
        }
        let throttles = [
            ("rbps", b.throttle_read_bps_device()),
            ("wbps", b.throttle_write_bps_device()),
            ("riops", b.throttle_read_iops_device()),
            ("wiops", b.throttle_write_iops_device()),
        ];
        for (key, list) in throttles {
            for t in list.iter().flatten() {
                let rate = if t.rate() == 0 {
                    "max".to_string()
                } else {
                    t.rate().to_string()
                };
                fs::write(
                    dir,
                    "io.max",
                    &format!("{}:{} {key}={rate}", t.major(), t.minor()),
                )?;
            }
        }
    }

    for h in res.hugepage_limits().iter().flatten() {
        fs::write(
            dir,
            &format!("hugetlb.{}.max", h.page_size()),
            &limit(h.limit()),
        )?;
    }

    if res.network().is_some() {
        warnings
            .push("network classID/priorities ignored: no net_cls/net_prio on cgroup v2".into());
    }
    if res.rdma().as_ref().is_some_and(|r| !r.is_empty()) {
        warnings.push("rdma limits ignored: not supported by berth yet".into());
    }

    if let Some(u) = res.unified().as_ref() {
        for (k, v) in u {
            check_unified_key(k)?;
            fs::write(dir, k, v)?;
        }
    }

    if let Some(rules) = devices::rules(res.devices().as_ref())? {
        devices::apply_v2(dir, &rules)?;
    }
    Ok(warnings)
}

pub fn set_frozen(dir: &Path, frozen: bool) -> Result<()> {
    fs::write(dir, "cgroup.freeze", if frozen { "1" } else { "0" })?;
    let want = if frozen { "frozen 1" } else { "frozen 0" };
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut delay = Duration::from_micros(100);
    loop {
        let events = fs::read(dir, "cgroup.events")?;
        if events.lines().any(|l| l.trim() == want) {
            return Ok(());
        }
        if Instant::now() > deadline {
            if frozen {
                let _ = fs::write(dir, "cgroup.freeze", "0");
            }
            return Err(err(format!(
                "{}: the cgroup did not reach \"{want}\" in 10 s",
                dir.display()
            )));
        }
        std::thread::sleep(delay);
        delay = (delay * 2).min(Duration::from_millis(10));
    }
}

pub fn is_frozen(dir: &Path) -> Result<bool> {
    match std::fs::read_to_string(dir.join("cgroup.freeze")) {
        Ok(s) => Ok(s.trim() == "1"),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(false),
        Err(e) => Err(err(format!("read {}/cgroup.freeze: {e}", dir.display()))),
    }
}
