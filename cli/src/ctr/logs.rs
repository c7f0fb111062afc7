//! `logs` (with `--since`) and `stats`.

use anyhow::{anyhow, bail, Result};
use berth_api::*;
use std::io::Write;

use super::*;

/// `--since`: RFC 3339, a unix timestamp, or a duration ago (`10m`, `1h30m`, `45s`).
pub fn parse_since(s: &str) -> Result<i64> {
    if let Some(t) = berth_api::wire::parse_rfc3339(s) {
        return Ok(t);
    }
    if let Ok(secs) = s.parse::<f64>() {
        return Ok((secs * 1e9) as i64);
    }
    let mut total = 0f64;
    let mut num = String::new();
    for ch in s.chars() {
        if ch.is_ascii_digit() || ch == '.' {
            num.push(ch);
            continue;
        }
        let n: f64 = num.parse().map_err(|_| anyhow!("invalid --since {s:?}"))?;
        num.clear();
        total += n * match ch {
            's' => 1.0,
            'm' => 60.0,
            'h' => 3600.0,
            'd' => 86400.0,
            _ => bail!("invalid --since {s:?}: use RFC 3339, a unix time or a duration like 10m"),
        };
    }
    if !num.is_empty() {
        bail!("invalid --since {s:?}: a duration needs a unit (s, m, h)");
    }
    Ok(berth_api::wire::now_nanos() - (total * 1e9) as i64)
}

pub async fn logs(
    c: &mut Client,
    id: String,
    follow: bool,
    tail: &str,
    since: Option<&str>,
    timestamps: bool,
) -> Result<()> {
    let tail = if tail == "all" {
        -1
    } else {
        tail.parse::<i64>()
            .map_err(|_| anyhow!("invalid --tail {tail:?}: a number or \"all\""))?
    };
    let since = since.map(parse_since).transpose()?.unwrap_or(0);
    let mut s = c
        .logs(LogsRequest {
            id,
            follow,
            tail,
            since_unix_nano: since,
            timestamps,
        })
        .await?
        .into_inner();
    let mut so = std::io::stdout();
    let mut se = std::io::stderr();
    while let Some(l) = s.message().await? {
        let w: &mut dyn Write = if l.stream == "stderr" {
            &mut se
        } else {
            &mut so
        };
        if timestamps {
            w.write_all(l.timestamp.as_bytes())?;
            w.write_all(b" ")?;
        }
        w.write_all(&l.data)?;
        w.flush()?;
    }
    Ok(())
}

/// One `stats` table for the containers, from two samples `gap` apart.
pub async fn stats(c: &mut Client, ids: &[String], stream: bool, format: &str) -> Result<()> {
    let mut prev: std::collections::HashMap<String, StatsSample> = Default::default();
    loop {
        let mut rows = vec![vec![
            "CONTAINER ID".to_string(),
            "NAME".into(),
            "CPU %".into(),
            "MEM USAGE / LIMIT".into(),
            "MEM %".into(),
            "NET I/O".into(),
            "BLOCK I/O".into(),
            "PIDS".into(),
        ]];
        let targets: Vec<String> = if ids.is_empty() {
            c.list(ListContainersRequest { all: false })
                .await?
                .into_inner()
                .containers
                .into_iter()
                .map(|s| s.id)
                .collect()
        } else {
            ids.to_vec()
        };
        let mut samples = Vec::new();
        for id in &targets {
            let s = c.stats(ContainerRef { id: id.clone() }).await?.into_inner();
            samples.push(s);
        }
        if prev.is_empty() && !samples.is_empty() {
            for s in &samples {
                prev.insert(s.id.clone(), s.clone());
            }
            tokio::time::sleep(std::time::Duration::from_millis(500)).await;
            continue;
        }
        let mut json = Vec::new();
        for s in &samples {
            let cpu = match prev.get(&s.id) {
                Some(p) if s.system_ns > p.system_ns => {
                    (s.cpu_total_ns.saturating_sub(p.cpu_total_ns)) as f64
                        / (s.system_ns - p.system_ns) as f64
                        * s.online_cpus as f64
                        * 100.0
                }
                _ => 0.0,
            };
            let memp = if s.memory_limit > 0 {
                s.memory_usage as f64 / s.memory_limit as f64 * 100.0
            } else {
                0.0
            };
            let hs = crate::fmt::human_size;
            let row = vec![
                s.id.chars().take(12).collect(),
                s.name.clone(),
                format!("{cpu:.2}%"),
                format!("{} / {}", hs(s.memory_usage), hs(s.memory_limit)),
                format!("{memp:.2}%"),
                format!("{} / {}", hs(s.net_rx), hs(s.net_tx)),
                format!("{} / {}", hs(s.blk_read), hs(s.blk_write)),
                s.pids.to_string(),
            ];
            json.push(serde_json::json!({
                "ID": row[0], "Name": row[1], "CPUPerc": row[2], "MemUsage": row[3],
                "MemPerc": row[4], "NetIO": row[5], "BlockIO": row[6], "PIDs": row[7],
            }));
            rows.push(row);
            prev.insert(s.id.clone(), s.clone());
        }
        let mut out = std::io::stdout().lock();
        if stream {
            write!(out, "\x1b[2J\x1b[H")?;
        }
        if format == "json" || format == "{{json .}}" {
            for j in json {
                writeln!(out, "{j}")?;
            }
        } else {
            crate::fmt::table(&mut out, &rows)?;
        }
        out.flush()?;
        if !stream {
            return Ok(());
        }
        tokio::time::sleep(std::time::Duration::from_secs(1)).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn since() {
        let t = parse_since("10m").unwrap();
        let now = berth_api::wire::now_nanos();
        assert!((now - t - 600_000_000_000).abs() < 5_000_000_000);
        assert!(parse_since("10x").is_err());
    }
}
