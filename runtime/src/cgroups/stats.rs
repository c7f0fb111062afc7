//! Resource usage in the shape of runc's `events --stats` JSON (`types.Stats`), so tools that
//! parse runc's output (containerd's shim, podman) read berth's the same way.

use super::{fs, Cgroup, Result, V1Mount};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::Path;

fn is_zero(v: &u64) -> bool {
    *v == 0
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Stats {
    pub cpu: Cpu,
    pub memory: Memory,
    pub pids: Pids,
    pub blkio: Blkio,
    pub hugetlb: BTreeMap<String, Hugetlb>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Cpu {
    pub usage: CpuUsage,
    pub throttling: Throttling,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct CpuUsage {
    /// Nanoseconds.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub total: u64,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub percpu: Vec<u64>,
    pub kernel: u64,
    pub user: u64,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Throttling {
    #[serde(default, skip_serializing_if = "is_zero")]
    pub periods: u64,
    #[serde(default, rename = "throttledPeriods", skip_serializing_if = "is_zero")]
    pub throttled_periods: u64,
    /// Nanoseconds.
    #[serde(default, rename = "throttledTime", skip_serializing_if = "is_zero")]
    pub throttled_time: u64,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct MemoryEntry {
    pub limit: u64,
    #[serde(default, skip_serializing_if = "is_zero")]
    pub usage: u64,
    #[serde(default, skip_serializing_if = "is_zero")]
    pub max: u64,
    pub failcnt: u64,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Memory {
    #[serde(default, skip_serializing_if = "is_zero")]
    pub cache: u64,
    pub usage: MemoryEntry,
    pub swap: MemoryEntry,
    pub kernel: MemoryEntry,
    #[serde(rename = "kernelTCP")]
    pub kernel_tcp: MemoryEntry,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub raw: BTreeMap<String, u64>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Pids {
    #[serde(default, skip_serializing_if = "is_zero")]
    pub current: u64,
    /// 0 means no limit.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub limit: u64,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct BlkioEntry {
    #[serde(default, skip_serializing_if = "is_zero")]
    pub major: u64,
    #[serde(default, skip_serializing_if = "is_zero")]
    pub minor: u64,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub op: String,
    #[serde(default, skip_serializing_if = "is_zero")]
    pub value: u64,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Blkio {
    #[serde(
        default,
        rename = "ioServiceBytesRecursive",
        skip_serializing_if = "Vec::is_empty"
    )]
    pub io_service_bytes_recursive: Vec<BlkioEntry>,
    #[serde(
        default,
        rename = "ioServicedRecursive",
        skip_serializing_if = "Vec::is_empty"
    )]
    pub io_serviced_recursive: Vec<BlkioEntry>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Hugetlb {
    #[serde(default, skip_serializing_if = "is_zero")]
    pub usage: u64,
    #[serde(default, skip_serializing_if = "is_zero")]
    pub max: u64,
    pub failcnt: u64,
}

fn get(kv: &[(String, u64)], key: &str) -> u64 {
    kv.iter().find(|(k, _)| k == key).map_or(0, |(_, v)| *v)
}

/// `max` (unlimited) reads as u64::MAX in the files; runc reports the pids limit as 0 then.
fn limit_or_zero(v: Option<u64>) -> u64 {
    match v {
        Some(u64::MAX) | None => 0,
        Some(v) => v,
    }
}

/// Ticks of `cpuacct.stat` to nanoseconds.
fn ticks_to_ns(t: u64) -> u64 {
    // SAFETY: sysconf has no memory effects.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    let hz = if hz > 0 { hz as u64 } else { 100 };
    t.saturating_mul(1_000_000_000 / hz)
}

/// Blkio lines `maj:min Op value` (v1 files).
fn blkio_v1(dir: &Path, file: &str) -> Vec<BlkioEntry> {
    let Ok(s) = std::fs::read_to_string(dir.join(file)) else {
        return Vec::new();
    };
    s.lines()
        .filter_map(|l| {
            let mut it = l.split_whitespace();
            let dev = it.next()?;
            let op = it.next()?;
            let value = it.next()?.parse().ok()?;
            let (maj, min) = dev.split_once(':')?;
            Some(BlkioEntry {
                major: maj.parse().ok()?,
                minor: min.parse().ok()?,
                op: op.to_string(),
                value,
            })
        })
        .collect()
}

pub fn v1(mounts: &[V1Mount], rel: &str) -> Result<Stats> {
    let mut st = Stats::default();
    let dir = |c: &str| Cgroup::v1_dir(mounts, rel, c);
    if let Some(d) = dir("cpuacct") {
        st.cpu.usage.total = fs::read_u64(&d, "cpuacct.usage").unwrap_or(0);
        st.cpu.usage.percpu = std::fs::read_to_string(d.join("cpuacct.usage_percpu"))
            .unwrap_or_default()
            .split_whitespace()
            .filter_map(|v| v.parse().ok())
            .collect();
        let kv = fs::read_kv(&d, "cpuacct.stat");
        st.cpu.usage.user = ticks_to_ns(get(&kv, "user"));
        st.cpu.usage.kernel = ticks_to_ns(get(&kv, "system"));
    }
    if let Some(d) = dir("cpu") {
        let kv = fs::read_kv(&d, "cpu.stat");
        st.cpu.throttling = Throttling {
            periods: get(&kv, "nr_periods"),
            throttled_periods: get(&kv, "nr_throttled"),
            throttled_time: get(&kv, "throttled_time"),
        };
    }
    if let Some(d) = dir("memory") {
        let entry = |prefix: &str| MemoryEntry {
            limit: fs::read_u64(&d, &format!("{prefix}.limit_in_bytes")).unwrap_or(0),
            usage: fs::read_u64(&d, &format!("{prefix}.usage_in_bytes")).unwrap_or(0),
            max: fs::read_u64(&d, &format!("{prefix}.max_usage_in_bytes")).unwrap_or(0),
            failcnt: fs::read_u64(&d, &format!("{prefix}.failcnt")).unwrap_or(0),
        };
        st.memory.usage = entry("memory");
        st.memory.swap = entry("memory.memsw");
        st.memory.kernel = entry("memory.kmem");
        st.memory.kernel_tcp = entry("memory.kmem.tcp");
        let raw = fs::read_kv(&d, "memory.stat");
        st.memory.cache = get(&raw, "cache");
        st.memory.raw = raw.into_iter().collect();
    }
    if let Some(d) = dir("pids") {
        st.pids.current = fs::read_u64(&d, "pids.current").unwrap_or(0);
        st.pids.limit = limit_or_zero(fs::read_u64(&d, "pids.max"));
    }
    if let Some(d) = dir("blkio") {
        st.blkio.io_service_bytes_recursive =
            blkio_v1(&d, "blkio.throttle.io_service_bytes_recursive");
        st.blkio.io_serviced_recursive = blkio_v1(&d, "blkio.throttle.io_serviced_recursive");
    }
    if let Some(d) = dir("hugetlb") {
        hugetlb(&d, &mut st, "limit_in_bytes", "usage_in_bytes", "failcnt");
    }
    Ok(st)
}

fn hugetlb(d: &Path, st: &mut Stats, _limit: &str, usage: &str, failcnt: &str) {
    let Ok(rd) = std::fs::read_dir(d) else {
        return;
    };
    for e in rd.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        let Some(size) = name
            .strip_prefix("hugetlb.")
            .and_then(|r| r.strip_suffix(&format!(".{usage}")))
        else {
            continue;
        };
        if size.contains('.') {
            continue;
        }
        let h = Hugetlb {
            usage: fs::read_u64(d, &name).unwrap_or(0),
            max: fs::read_u64(d, &format!("hugetlb.{size}.max_usage_in_bytes")).unwrap_or(0),
            failcnt: fs::read_u64(d, &format!("hugetlb.{size}.{failcnt}")).unwrap_or(0),
        };
        st.hugetlb.insert(size.to_string(), h);
    }
}

pub fn v2(d: &Path) -> Result<Stats> {
    let mut st = Stats::default();
    let cpu = fs::read_kv(d, "cpu.stat");
    st.cpu.usage.total = get(&cpu, "usage_usec") * 1000;
    st.cpu.usage.user = get(&cpu, "user_usec") * 1000;
    st.cpu.usage.kernel = get(&cpu, "system_usec") * 1000;
    st.cpu.throttling = Throttling {
        periods: get(&cpu, "nr_periods"),
        throttled_periods: get(&cpu, "nr_throttled"),
        throttled_time: get(&cpu, "throttled_usec") * 1000,
    };
    if fs::exists(d, "memory.current") {
        let events = fs::read_kv(d, "memory.events");
        st.memory.usage = MemoryEntry {
            limit: fs::read_u64(d, "memory.max").unwrap_or(0),
            usage: fs::read_u64(d, "memory.current").unwrap_or(0),
            max: fs::read_u64(d, "memory.peak").unwrap_or(0),
            failcnt: get(&events, "max"),
        };
        let swap = fs::read_u64(d, "memory.swap.current").unwrap_or(0);
        // runc reports swap as memory+swap, like v1's memsw.
        st.memory.swap = MemoryEntry {
            limit: fs::read_u64(d, "memory.swap.max").unwrap_or(0),
            usage: swap + st.memory.usage.usage,
            max: 0,
            failcnt: 0,
        };
        let raw = fs::read_kv(d, "memory.stat");
        st.memory.cache = get(&raw, "file");
        st.memory.raw = raw.into_iter().collect();
    }
    st.pids.current = fs::read_u64(d, "pids.current").unwrap_or(0);
    st.pids.limit = limit_or_zero(fs::read_u64(d, "pids.max"));
    if let Ok(s) = std::fs::read_to_string(d.join("io.stat")) {
        for l in s.lines() {
            let mut it = l.split_whitespace();
            let Some((maj, min)) = it.next().and_then(|d| d.split_once(':')) else {
                continue;
            };
            let (Ok(major), Ok(minor)) = (maj.parse(), min.parse()) else {
                continue;
            };
            for kv in it {
                let Some((k, v)) = kv.split_once('=') else {
                    continue;
                };
                let Ok(value) = v.parse() else { continue };
                let (list, op) = match k {
                    "rbytes" => (&mut st.blkio.io_service_bytes_recursive, "Read"),
                    "wbytes" => (&mut st.blkio.io_service_bytes_recursive, "Write"),
                    "rios" => (&mut st.blkio.io_serviced_recursive, "Read"),
                    "wios" => (&mut st.blkio.io_serviced_recursive, "Write"),
                    _ => continue,
                };
                list.push(BlkioEntry {
                    major,
                    minor,
                    op: op.into(),
                    value,
                });
            }
        }
    }
    hugetlb_v2(d, &mut st);
    Ok(st)
}

fn hugetlb_v2(d: &Path, st: &mut Stats) {
    let Ok(rd) = std::fs::read_dir(d) else {
        return;
    };
    for e in rd.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        let Some(size) = name
            .strip_prefix("hugetlb.")
            .and_then(|r| r.strip_suffix(".current"))
        else {
            continue;
        };
        if size.contains('.') {
            continue;
        }
        let events = fs::read_kv(d, &format!("hugetlb.{size}.events"));
        st.hugetlb.insert(
            size.to_string(),
            Hugetlb {
                usage: fs::read_u64(d, &name).unwrap_or(0),
                max: 0,
                failcnt: get(&events, "max"),
            },
        );
    }
}
