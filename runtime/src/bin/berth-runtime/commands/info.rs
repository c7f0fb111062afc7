//! `list`, `ps`, `events`.

use anyhow::{bail, Result};
use berth_runtime::container::info;
use std::io::Write;
use std::path::Path;

pub fn list(root: &Path, format: &str, quiet: bool) -> Result<i32> {
    let entries = info::list(root)?;
    let mut out = std::io::stdout().lock();
    if quiet {
        for e in &entries {
            writeln!(out, "{}", e.id)?;
        }
        return Ok(0);
    }
    match format {
        "json" => writeln!(out, "{}", serde_json::to_string(&entries)?)?,
        "table" => {
            let rows: Vec<[String; 6]> = entries
                .iter()
                .map(|e| {
                    [
                        e.id.clone(),
                        e.pid.to_string(),
                        e.status.clone(),
                        e.bundle.clone(),
                        e.created.clone(),
                        e.owner.clone(),
                    ]
                })
                .collect();
            let head = ["ID", "PID", "STATUS", "BUNDLE", "CREATED", "OWNER"].map(String::from);
            let mut w = [0usize; 6];
            for r in std::iter::once(&head).chain(rows.iter()) {
                for (i, c) in r.iter().enumerate() {
                    w[i] = w[i].max(c.len());
                }
            }
            for r in std::iter::once(&head).chain(rows.iter()) {
                let line: Vec<String> = r
                    .iter()
                    .enumerate()
                    .map(|(i, c)| {
                        if i == 5 {
                            c.clone()
                        } else {
                            format!("{c:<width$}", width = w[i])
                        }
                    })
                    .collect();
                writeln!(out, "{}", line.join("   ").trim_end())?;
            }
        }
        f => bail!("invalid format {f:?}: use table or json"),
    }
    Ok(0)
}

pub fn ps(root: &Path, id: &str, format: &str, ps_args: &[String]) -> Result<i32> {
    let pids = info::pids(root, id)?;
    match format {
        "json" => {
            super::out(&serde_json::to_string(&pids)?)?;
            Ok(0)
        }
        "table" => {
            let args: Vec<String> = if ps_args.is_empty() {
                vec!["-ef".into()]
            } else {
                ps_args.to_vec()
            };
            let out = std::process::Command::new("ps").args(&args).output()?;
            if !out.status.success() {
                bail!(
                    "ps {}: {}",
                    args.join(" "),
                    String::from_utf8_lossy(&out.stderr).trim()
                );
            }
            let text = String::from_utf8_lossy(&out.stdout);
            let mut lines = text.lines();
            let Some(header) = lines.next() else {
                return Ok(0);
            };
            let Some(col) = header.split_whitespace().position(|h| h == "PID") else {
                bail!("ps output has no PID column");
            };
            super::out(header)?;
            for l in lines {
                if let Some(p) = l
                    .split_whitespace()
                    .nth(col)
                    .and_then(|p| p.parse::<i32>().ok())
                {
                    if pids.contains(&p) {
                        super::out(l)?;
                    }
                }
            }
            Ok(0)
        }
        f => bail!("invalid format {f:?}: use table or json"),
    }
}

fn parse_interval(s: &str) -> Result<std::time::Duration> {
    let (num, mul) = if let Some(n) = s.strip_suffix("ms") {
        (n, 0.001)
    } else if let Some(n) = s.strip_suffix('s') {
        (n, 1.0)
    } else if let Some(n) = s.strip_suffix('m') {
        (n, 60.0)
    } else {
        (s, 1.0)
    };
    let v: f64 = num
        .parse()
        .map_err(|_| anyhow::anyhow!("invalid interval {s:?}"))?;
    if v <= 0.0 {
        bail!("invalid interval {s:?}: must be greater than 0");
    }
    Ok(std::time::Duration::from_secs_f64(v * mul))
}

pub fn events(root: &Path, id: &str, stats: bool, interval: &str) -> Result<i32> {
    let every = parse_interval(interval)?;
    if stats {
        super::out(&info::stats_line(root, id)?)?;
        return Ok(0);
    }
    info::watch_events(root, id, every, |ev| {
        super::out(ev).map_err(|e| berth_runtime::Error::Other(e.to_string()))
    })?;
    Ok(0)
}
