//! `update`.

use crate::cli::UpdateArgs;
use anyhow::{Context, Result};
use berth_runtime::container;
use oci_spec::runtime::{LinuxPids, LinuxResources};
use std::io::Read;
use std::path::Path;

/// Parses a size as runc does (docker's `RAMInBytes`): `100`, `64k`, `512M`, `1.5g`, `2GiB`,
/// `10 mb` (powers of 1024), or `-1` for no limit.
fn bytes(s: &str) -> Result<i64> {
    let t = s.trim();
    if t == "-1" {
        return Ok(-1);
    }
    let bad = || anyhow::anyhow!("invalid size {s:?}: want bytes, with k, m, g, t or p, or -1");
    let end = t
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(t.len());
    let (num, unit) = t.split_at(end);
    let unit = unit.strip_prefix(' ').unwrap_or(unit).to_ascii_lowercase();
    let unit = unit.strip_suffix('b').unwrap_or(&unit);
    let unit = unit.strip_suffix('i').unwrap_or(unit);
    let shift = match unit {
        "" => 0,
        "k" => 10,
        "m" => 20,
        "g" => 30,
        "t" => 40,
        "p" => 50,
        _ => return Err(bad()),
    };
    if num.is_empty() || !num.starts_with(|c: char| c.is_ascii_digit()) {
        return Err(bad());
    }
    let v = if num.contains('.') {
        let f: f64 = num.parse().map_err(|_| bad())?;
        f * (1u64 << shift) as f64
    } else {
        let n: i64 = num.parse().map_err(|_| bad())?;
        n.checked_mul(1 << shift).ok_or_else(bad)? as f64
    };
    if v >= i64::MAX as f64 {
        return Err(bad());
    }
    Ok(v as i64)
}

pub fn update(root: &Path, a: &UpdateArgs) -> Result<i32> {
    let mut res: LinuxResources = match a.resources.as_deref() {
        Some(src) => {
            let mut data = Vec::new();
            if src == "-" {
                std::io::stdin().read_to_end(&mut data)?;
            } else {
                data =
                    std::fs::read(src).with_context(|| format!("read resources file {src:?}"))?;
            }
            serde_json::from_slice(&data)
                .with_context(|| format!("invalid resources JSON in {src:?}"))?
        }
        None => LinuxResources::default(),
    };
    let mut mem = (*res.memory()).unwrap_or_default();
    let mut mem_set = res.memory().is_some();
    if let Some(m) = &a.memory {
        mem.set_limit(Some(bytes(m)?));
        mem_set = true;
    }
    if let Some(m) = &a.memory_reservation {
        mem.set_reservation(Some(bytes(m)?));
        mem_set = true;
    }
    if let Some(m) = &a.memory_swap {
        mem.set_swap(Some(bytes(m)?));
        mem_set = true;
    }
    for (flag, v) in [
        ("--kernel-memory", &a.kernel_memory),
        ("--kernel-memory-tcp", &a.kernel_memory_tcp),
    ] {
        if v.is_some() {
            container::warn(&format!(
                "{flag} is ignored: kernel memory limits are obsolete (as in runc)"
            ));
        }
    }
    if mem_set {
        res.set_memory(Some(mem));
    }
    let mut cpu = res.cpu().clone().unwrap_or_default();
    let mut cpu_set = res.cpu().is_some();
    if let Some(v) = a.cpu_share {
        cpu.set_shares(Some(v));
        cpu_set = true;
    }
    if let Some(v) = a.cpu_quota {
        cpu.set_quota(Some(v));
        cpu_set = true;
    }
    if let Some(v) = a.cpu_period {
        cpu.set_period(Some(v));
        cpu_set = true;
    }
    if let Some(v) = a.cpu_rt_period {
        cpu.set_realtime_period(Some(v));
        cpu_set = true;
    }
    if let Some(v) = a.cpu_rt_runtime {
        cpu.set_realtime_runtime(Some(v));
        cpu_set = true;
    }
    if let Some(v) = &a.cpuset_cpus {
        cpu.set_cpus(Some(v.clone()));
        cpu_set = true;
    }
    if let Some(v) = &a.cpuset_mems {
        cpu.set_mems(Some(v.clone()));
        cpu_set = true;
    }
    if cpu_set {
        res.set_cpu(Some(cpu));
    }
    if let Some(v) = a.pids_limit {
        let mut p = LinuxPids::default();
        p.set_limit(v);
        res.set_pids(Some(p));
    }
    if let Some(w) = a.blkio_weight {
        let mut b = res.block_io().clone().unwrap_or_default();
        b.set_weight(Some(w));
        res.set_block_io(Some(b));
    }
    for w in container::update::update(root, &a.id, &res)? {
        container::warn(&w);
    }
    Ok(0)
}

#[cfg(test)]
mod tests {
    use super::bytes;

    #[test]
    fn sizes_parse_as_runc_parses_them() {
        assert_eq!(bytes("-1").unwrap(), -1);
        assert_eq!(bytes("100").unwrap(), 100);
        assert_eq!(bytes("64k").unwrap(), 64 << 10);
        assert_eq!(bytes("50M").unwrap(), 50 << 20);
        assert_eq!(bytes("2GiB").unwrap(), 2 << 30);
        assert_eq!(bytes("10 mb").unwrap(), 10 << 20);
        assert_eq!(bytes("1.5g").unwrap(), 3 << 29);
        assert_eq!(bytes("1p").unwrap(), 1 << 50);
        for bad in [
            "",
            "m",
            "-2",
            "12x",
            "1.2.3",
            "9999999999999999999",
            "10 m b",
        ] {
            assert!(bytes(bad).is_err(), "{bad:?}");
        }
    }
}
