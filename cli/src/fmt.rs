//! Output the way docker users read it: tables, human sizes, "3 years ago", progress bars.

use anyhow::Result;
use berth_api::{HistoryEntry, ImageInfo, ProgressEvent};
use std::collections::HashMap;
use std::io::{IsTerminal, Write};
use tonic::codec::Streaming;

/// `docker.io/library/nginx:latest` → `nginx:latest`, as docker shows names.
pub fn short_name(name: &str) -> &str {
    name.strip_prefix("docker.io/library/")
        .or_else(|| name.strip_prefix("docker.io/"))
        .unwrap_or(name)
}

/// (repository, tag) of a normalized name.
pub fn split(name: &str) -> (&str, &str) {
    let name = short_name(name);
    let slash = name.rfind('/').map_or(0, |i| i + 1);
    match name[slash..].rfind(':') {
        Some(i) => (&name[..slash + i], &name[slash + i + 1..]),
        None => (name, "<none>"),
    }
}

/// docker's `units.HumanSizeWithPrecision(n, 3)`: decimal units, 3 significant digits.
pub fn human_size(n: u64) -> String {
    let units = ["B", "kB", "MB", "GB", "TB", "PB"];
    let mut v = n as f64;
    let mut i = 0;
    while v >= 1000.0 && i < units.len() - 1 {
        v /= 1000.0;
        i += 1;
    }
    let s = format!("{v:.3}");
    let digits = if v >= 100.0 {
        0
    } else if v >= 10.0 {
        1
    } else {
        2
    };
    let s = format!("{:.*}", digits, s.parse::<f64>().unwrap_or(v));
    let s = if s.contains('.') {
        s.trim_end_matches('0').trim_end_matches('.').to_string()
    } else {
        s
    };
    format!("{s}{}", units[i])
}

/// Seconds since the epoch of an RFC 3339 time (UTC or with an offset).
pub fn parse_rfc3339(s: &str) -> Option<i64> {
    let b = s.as_bytes();
    if b.len() < 19 {
        return None;
    }
    let n = |a: usize, z: usize| s.get(a..z)?.parse::<i64>().ok();
    let (y, mo, d, h, mi, se) = (
        n(0, 4)?,
        n(5, 7)?,
        n(8, 10)?,
        n(11, 13)?,
        n(14, 16)?,
        n(17, 19)?,
    );
    // Days from civil (Howard Hinnant's algorithm).
    let y2 = if mo <= 2 { y - 1 } else { y };
    let era = y2.div_euclid(400);
    let yoe = y2 - era * 400;
    let mp = (mo + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    let mut t = days * 86_400 + h * 3600 + mi * 60 + se;
    let rest = &s[19..];
    let rest = rest.trim_start_matches(|c: char| c == '.' || c.is_ascii_digit());
    if let Some(off) = rest
        .get(..6)
        .filter(|o| o.starts_with('+') || o.starts_with('-'))
    {
        let sign = if off.starts_with('-') { -1 } else { 1 };
        let oh: i64 = off.get(1..3)?.parse().ok()?;
        let om: i64 = off.get(4..6)?.parse().ok()?;
        t -= sign * (oh * 3600 + om * 60);
    }
    Some(t)
}

/// docker's "3 years ago".
pub fn ago(created: &str) -> String {
    let Some(t) = parse_rfc3339(created) else {
        return "N/A".into();
    };
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0);
    let s = (now - t).max(0);
    let (n, unit) = match s {
        0..=59 => return "Less than a minute ago".into(),
        60..=3599 => (s / 60, "minute"),
        3600..=172_799 => (s / 3600, "hour"),
        172_800..=1_209_599 => (s / 86_400, "day"),
        1_209_600..=5_183_999 => (s / 604_800, "week"),
        5_184_000..=63_071_999 => (s / 2_592_000, "month"),
        _ => (s / 31_536_000, "year"),
    };
    if n == 1 {
        format!(
            "{} {unit} ago",
            if unit == "hour" { "About an" } else { "1" }
        )
    } else {
        format!("{n} {unit}s ago")
    }
}

fn short_id(digest: &str, no_trunc: bool) -> String {
    if no_trunc {
        digest.to_string()
    } else {
        digest
            .trim_start_matches("sha256:")
            .chars()
            .take(12)
            .collect()
    }
}

/// Prints rows with columns padded like docker's tabwriter (3 spaces between columns).
pub fn table(out: &mut impl Write, rows: &[Vec<String>]) -> std::io::Result<()> {
    let cols = rows.iter().map(|r| r.len()).max().unwrap_or(0);
    let widths: Vec<usize> = (0..cols)
        .map(|c| {
            rows.iter()
                .filter_map(|r| r.get(c))
                .map(|s| s.chars().count())
                .max()
                .unwrap_or(0)
        })
        .collect();
    for r in rows {
        let mut line = String::new();
        for (i, cell) in r.iter().enumerate() {
            if i + 1 == r.len() {
                line.push_str(cell);
            } else {
                line.push_str(&format!("{cell:<w$}   ", w = widths[i]));
            }
        }
        writeln!(out, "{}", line.trim_end())?;
    }
    Ok(())
}

pub fn images(
    out: &mut impl Write,
    images: &[ImageInfo],
    quiet: bool,
    digests: bool,
    no_trunc: bool,
    format: &str,
) -> Result<()> {
    if format == "json" {
        let v: Vec<_> = images
            .iter()
            .map(|i| {
                let (repo, tag) = split(&i.name);
                serde_json::json!({
                    "Repository": repo, "Tag": tag, "Name": i.name,
                    "ID": i.config_digest, "Digest": i.digest, "IndexDigest": i.index_digest,
                    "CreatedAt": i.created, "Size": i.size, "Platform": i.platform,
                })
            })
            .collect();
        writeln!(out, "{}", serde_json::to_string_pretty(&v)?)?;
        return Ok(());
    }
    if format != "table" {
        anyhow::bail!("--format {format:?}: use table or json");
    }
    if quiet {
        for i in images {
            writeln!(out, "{}", short_id(&i.config_digest, no_trunc))?;
        }
        return Ok(());
    }
    let mut rows = vec![];
    let mut head = vec!["REPOSITORY", "TAG"];
    if digests {
        head.push("DIGEST");
    }
    head.extend(["IMAGE ID", "CREATED", "SIZE"]);
    rows.push(head.into_iter().map(String::from).collect());
    for i in images {
        let (repo, tag) = split(&i.name);
        let mut r = vec![repo.to_string(), tag.to_string()];
        if digests {
            r.push(if i.index_digest.is_empty() {
                i.digest.clone()
            } else {
                i.index_digest.clone()
            });
        }
        r.push(short_id(&i.config_digest, no_trunc));
        r.push(ago(&i.created));
        r.push(human_size(i.size));
        rows.push(r);
    }
    table(out, &rows)?;
    Ok(())
}

pub fn history(
    out: &mut impl Write,
    id: &str,
    entries: &[HistoryEntry],
    no_trunc: bool,
    quiet: bool,
) -> Result<()> {
    // Newest first, as docker prints it; only the top row is the image itself.
    let rows_src: Vec<&HistoryEntry> = entries.iter().rev().collect();
    if quiet {
        for (n, _) in rows_src.iter().enumerate() {
            writeln!(
                out,
                "{}",
                if n == 0 {
                    short_id(id, no_trunc)
                } else {
                    "<missing>".into()
                }
            )?;
        }
        return Ok(());
    }
    let mut rows = vec![["IMAGE", "CREATED", "CREATED BY", "SIZE", "COMMENT"]
        .map(String::from)
        .to_vec()];
    for (n, h) in rows_src.iter().enumerate() {
        let by = h.created_by.replace('\t', " ");
        let by = if no_trunc || by.chars().count() <= 45 {
            by
        } else {
            format!("{}…", by.chars().take(44).collect::<String>())
        };
        rows.push(vec![
            if n == 0 {
                short_id(id, no_trunc)
            } else {
                "<missing>".into()
            },
            if h.created.is_empty() {
                "N/A".into()
            } else {
                ago(&h.created)
            },
            by,
            human_size(h.size),
            h.comment.clone(),
        ]);
    }
    table(out, &rows)?;
    Ok(())
}

/// Follows a pull/push stream: bars per blob on a terminal, a line per blob state change
/// otherwise. Returns the last event (the result).
pub async fn progress(mut s: Streaming<ProgressEvent>, quiet: bool) -> Result<ProgressEvent> {
    let tty = std::io::stderr().is_terminal() && !quiet;
    let multi = indicatif::MultiProgress::new();
    let style = indicatif::ProgressStyle::with_template(
        "{prefix}: {msg:12} [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec}",
    )
    .expect("template")
    .progress_chars("=> ");
    let mut bars: HashMap<String, indicatif::ProgressBar> = HashMap::new();
    let mut phases: HashMap<String, String> = HashMap::new();
    let mut err = std::io::stderr();
    while let Some(ev) = s.message().await? {
        if ev.image.is_some() || !ev.pushed.is_empty() {
            for b in bars.values() {
                b.finish();
            }
            return Ok(ev);
        }
        let id = short_id(&ev.digest, false);
        if quiet {
            continue;
        }
        if tty {
            let bar = bars.entry(ev.digest.clone()).or_insert_with(|| {
                let b = multi.add(indicatif::ProgressBar::new(ev.total));
                b.set_style(style.clone());
                b.set_prefix(id.clone());
                b
            });
            bar.set_length(ev.total.max(1));
            bar.set_position(ev.done.min(ev.total));
            bar.set_message(ev.phase.clone());
        } else if phases.get(&ev.digest) != Some(&ev.phase) {
            phases.insert(ev.digest.clone(), ev.phase.clone());
            if ev.phase != "downloading" && ev.phase != "uploading" || ev.done == 0 {
                writeln!(
                    err,
                    "{id}: {} ({} {})",
                    ev.phase,
                    ev.kind,
                    human_size(ev.total)
                )?;
            }
        }
    }
    anyhow::bail!("berthd closed the stream without a result")
}

/// Whether the image `name` (normalized, `docker.io/library/nginx:latest`) is what `docker
/// images WANT` shows: WANT names a repository (any tag) or `repository:tag`, with docker's
/// normalization (`nginx` is `docker.io/library/nginx`).
pub fn repository_matches(want: &str, name: &str) -> bool {
    fn split(s: &str) -> (&str, Option<&str>) {
        let slash = s.rfind('/').map(|i| i + 1).unwrap_or(0);
        match s[slash..].rfind(':') {
            Some(c) => (&s[..slash + c], Some(&s[slash + c + 1..])),
            None => (s, None),
        }
    }
    let (repo, tag) = split(want);
    let repo = match repo.split_once('/') {
        None => format!("docker.io/library/{repo}"),
        Some((first, _)) if first.contains(['.', ':']) || first == "localhost" => repo.to_string(),
        Some(_) => format!("docker.io/{repo}"),
    };
    let (nrepo, ntag) = split(name);
    nrepo == repo && (tag.is_none() || tag == ntag)
}

#[cfg(test)]
mod tests {
    #[test]
    fn repository_filter_like_docker() {
        let n = "docker.io/library/nginx:latest";
        assert!(repository_matches("nginx", n));
        assert!(repository_matches("nginx:latest", n));
        assert!(!repository_matches("nginx:1.25", n));
        assert!(!repository_matches("ngin", n));
        let r = "127.0.0.1:5000/library/busybox:latest";
        assert!(repository_matches("127.0.0.1:5000/library/busybox", r));
        assert!(!repository_matches("busybox", r));
    }

    use super::*;

    #[test]
    fn sizes_like_docker() {
        assert_eq!(human_size(0), "0B");
        assert_eq!(human_size(999), "999B");
        assert_eq!(human_size(2_140_000), "2.14MB");
        assert_eq!(human_size(187_000_000), "187MB");
        assert_eq!(human_size(1_020), "1.02kB");
    }

    #[test]
    fn names_split_like_docker() {
        assert_eq!(split("docker.io/library/nginx:latest"), ("nginx", "latest"));
        assert_eq!(
            split("127.0.0.1:5000/library/nginx:1.2"),
            ("127.0.0.1:5000/library/nginx", "1.2")
        );
        assert_eq!(split("127.0.0.1:5000/x"), ("127.0.0.1:5000/x", "<none>"));
    }

    #[test]
    fn rfc3339() {
        assert_eq!(parse_rfc3339("2023-11-14T22:13:20Z"), Some(1_700_000_000));
        assert_eq!(
            parse_rfc3339("2023-11-14T23:13:20.5+01:00"),
            Some(1_700_000_000)
        );
        assert_eq!(parse_rfc3339("nope"), None);
    }
}
