//! Helpers of the container service: CRI log reading, stats, top, copying in and out.

use crate::api::{Chunk, LogLine, LogsRequest, StatsSample, TopResponse, TopRow};
use crate::containers::{Manager, Phase, Record};
use std::io::{Read, Seek};
use std::path::{Component, Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::mpsc;
use tonic::Status;

pub use berth_api::wire::{parse_rfc3339, rfc3339_nanos, ChanReader};

/// One record of a CRI log file.
struct CriRecord<'a> {
    ts: &'a str,
    stream: &'a str,
    full: bool,
    content: &'a [u8],
}

fn parse_record(line: &[u8]) -> Option<CriRecord<'_>> {
    let mut parts = line.splitn(4, |b| *b == b' ');
    let ts = std::str::from_utf8(parts.next()?).ok()?;
    let stream = std::str::from_utf8(parts.next()?).ok()?;
    let tag = parts.next()?;
    let content = parts.next().unwrap_or(b"");
    Some(CriRecord {
        ts,
        stream,
        full: tag.first() != Some(&b'P'),
        content,
    })
}

/// Turns complete lines of a CRI log into logical lines (partials joined), keeping per-stream
/// partial state across calls.
struct Joiner {
    pending: [(Vec<u8>, String); 2],
}

impl Joiner {
    fn new() -> Self {
        Joiner {
            pending: [(Vec::new(), String::new()), (Vec::new(), String::new())],
        }
    }

    fn push(&mut self, line: &[u8], out: &mut Vec<LogLine>) {
        let Some(rec) = parse_record(line) else {
            return;
        };
        let i = usize::from(rec.stream == "stderr");
        let p = &mut self.pending[i];
        if p.0.is_empty() {
            p.1 = rec.ts.to_string();
        }
        p.0.extend_from_slice(rec.content);
        if rec.full {
            let mut data = std::mem::take(&mut p.0);
            data.push(b'\n');
            out.push(LogLine {
                stream: rec.stream.to_string(),
                data,
                timestamp: std::mem::take(&mut p.1),
            });
        }
    }

    /// Takes the complete records (up to the last newline) off the front of `buf`; a partly
    /// written record stays for the next read.
    fn push_complete(&mut self, buf: &mut Vec<u8>, out: &mut Vec<LogLine>) {
        let cut = buf
            .iter()
            .rposition(|b| *b == b'\n')
            .map(|i| i + 1)
            .unwrap_or(0);
        for l in buf[..cut].split(|b| *b == b'\n') {
            if !l.is_empty() {
                self.push(l, out);
            }
        }
        buf.drain(..cut);
    }

    /// What is left unterminated (the stream ended without a newline).
    fn flush(&mut self, out: &mut Vec<LogLine>) {
        for (i, p) in self.pending.iter_mut().enumerate() {
            if !p.0.is_empty() {
                out.push(LogLine {
                    stream: if i == 1 { "stderr" } else { "stdout" }.into(),
                    data: std::mem::take(&mut p.0),
                    timestamp: std::mem::take(&mut p.1),
                });
            }
        }
    }
}

/// `berth logs`: the whole log (or its tail, or since a time), then with `follow` whatever
/// is written until the container stops.
pub async fn stream_logs(
    m: Arc<Manager>,
    r: Record,
    q: LogsRequest,
    tx: mpsc::Sender<Result<LogLine, Status>>,
) {
    let path = PathBuf::from(&r.log_path);
    let mut file = match std::fs::File::open(&path) {
        Ok(f) => Some(f),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
        Err(e) => {
            let _ = tx
                .send(Err(Status::internal(format!(
                    "read {}: {e}",
                    path.display()
                ))))
                .await;
            return;
        }
    };
    let mut joiner = Joiner::new();
    let mut buf = Vec::new();
    let keep = |l: &LogLine| {
        q.since_unix_nano == 0 || parse_rfc3339(&l.timestamp).is_none_or(|t| t >= q.since_unix_nano)
    };
    if let Some(f) = file.as_mut() {
        let _ = f.read_to_end(&mut buf);
    }
    let mut lines = Vec::new();
    joiner.push_complete(&mut buf, &mut lines);
    let running = |m: &Manager| {
        m.get(&r.id)
            .map(|r| {
                matches!(r.phase, Phase::Running | Phase::Paused | Phase::Starting) || r.restarting
            })
            .unwrap_or(false)
    };
    if !q.follow || !running(&m) {
        joiner.flush(&mut lines);
    }
    let mut lines: Vec<LogLine> = lines.into_iter().filter(|l| keep(l)).collect();
    if q.tail >= 0 && (q.tail as usize) < lines.len() {
        lines.drain(..lines.len() - q.tail as usize);
    }
    for l in lines {
        if tx.send(Ok(l)).await.is_err() {
            return;
        }
    }
    if !q.follow {
        return;
    }
    let mut idle_after_stop = 0;
    loop {
        tokio::time::sleep(Duration::from_millis(100)).await;
        if tx.is_closed() {
            return;
        }
        if file.is_none() {
            file = std::fs::File::open(&path).ok();
        }
        let mut grew = false;
        if let Some(f) = file.as_mut() {
            // A rotated (replaced) log: start on the new file.
            let pos = f.stream_position().unwrap_or(0);
            if std::fs::metadata(&path)
                .map(|md| md.len() < pos)
                .unwrap_or(false)
            {
                file = std::fs::File::open(&path).ok();
            }
        }
        if let Some(f) = file.as_mut() {
            let before = buf.len();
            let _ = f.read_to_end(&mut buf);
            grew = buf.len() > before;
        }
        let mut out = Vec::new();
        joiner.push_complete(&mut buf, &mut out);
        let live = running(&m);
        if !live && !grew {
            idle_after_stop += 1;
        }
        if !live && idle_after_stop >= 2 {
            joiner.flush(&mut out);
        }
        for l in out.into_iter().filter(|l| keep(l)) {
            if tx.send(Ok(l)).await.is_err() {
                return;
            }
        }
        if !live && idle_after_stop >= 2 {
            return;
        }
    }
}

fn host_cpu_ns() -> u64 {
    let stat = std::fs::read_to_string("/proc/stat").unwrap_or_default();
    let ticks: u64 = stat
        .lines()
        .next()
        .map(|l| {
            l.split_whitespace()
                .skip(1)
                .take(8)
                .filter_map(|v| v.parse::<u64>().ok())
                .sum()
        })
        .unwrap_or(0);
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as u64;
    ticks * (1_000_000_000 / hz)
}

pub fn stats_sample(r: &Record, v: &serde_json::Value) -> StatsSample {
    let d = v.get("data").unwrap_or(v);
    let u = |p: &str| d.pointer(p).and_then(|x| x.as_u64()).unwrap_or(0);
    let mut mem = u("/memory/usage/usage");
    // docker subtracts the page cache it could reclaim.
    let inactive = u("/memory/raw/total_inactive_file").max(u("/memory/raw/inactive_file"));
    if inactive < mem {
        mem -= inactive;
    }
    let mut limit = u("/memory/usage/limit");
    let host_mem = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("MemTotal:"))
                .and_then(|l| l.split_whitespace().nth(1)?.parse::<u64>().ok())
        })
        .map(|kb| kb * 1024)
        .unwrap_or(u64::MAX);
    if limit == 0 || limit > host_mem {
        limit = host_mem;
    }
    let (mut rd, mut wr) = (0, 0);
    if let Some(list) = d
        .pointer("/blkio/ioServiceBytesRecursive")
        .and_then(|x| x.as_array())
    {
        for e in list {
            let val = e.get("value").and_then(|x| x.as_u64()).unwrap_or(0);
            match e.get("op").and_then(|x| x.as_str()).unwrap_or("") {
                "Read" | "read" => rd += val,
                "Write" | "write" => wr += val,
                _ => {}
            }
        }
    }
    let (mut rx, mut txb) = (0, 0);
    if r.pid > 0 {
        if let Ok(dev) = std::fs::read_to_string(format!("/proc/{}/net/dev", r.pid)) {
            for l in dev.lines().skip(2) {
                let Some((name, rest)) = l.split_once(':') else {
                    continue;
                };
                if name.trim() == "lo" {
                    continue;
                }
                let f: Vec<u64> = rest
                    .split_whitespace()
                    .filter_map(|x| x.parse().ok())
                    .collect();
                if f.len() >= 9 {
                    rx += f[0];
                    txb += f[8];
                }
            }
        }
    }
    StatsSample {
        id: r.id.clone(),
        name: r.name.clone(),
        cpu_total_ns: u("/cpu/usage/total"),
        system_ns: host_cpu_ns(),
        online_cpus: std::thread::available_parallelism()
            .map(|n| n.get() as u32)
            .unwrap_or(1),
        memory_usage: mem,
        memory_limit: limit,
        net_rx: rx,
        net_tx: txb,
        blk_read: rd,
        blk_write: wr,
        pids: u("/pids/current"),
    }
}

/// `ps -f` of the container's processes (docker top's default columns).
pub async fn top(pids: &[u32]) -> Result<TopResponse, Status> {
    if pids.is_empty() {
        return Ok(TopResponse::default());
    }
    let list = pids
        .iter()
        .map(|p| p.to_string())
        .collect::<Vec<_>>()
        .join(",");
    let out = tokio::process::Command::new("ps")
        .args(["-f", "-p", &list])
        .output()
        .await
        .map_err(|e| Status::internal(format!("run ps: {e}")))?;
    let text = String::from_utf8_lossy(&out.stdout);
    let mut lines = text.lines();
    let titles: Vec<String> = lines
        .next()
        .unwrap_or("")
        .split_whitespace()
        .map(String::from)
        .collect();
    let n = titles.len().max(1);
    let rows = lines
        .map(|l| {
            let mut f: Vec<String> = Vec::new();
            let mut rest = l.trim_start();
            while f.len() + 1 < n {
                let end = rest.find(char::is_whitespace).unwrap_or(rest.len());
                f.push(rest[..end].to_string());
                rest = rest[end..].trim_start();
            }
            f.push(rest.to_string());
            TopRow { fields: f }
        })
        .collect();
    Ok(TopResponse { titles, rows })
}

/// `path` inside `root` as a host path, resolved with symlinks kept inside the root
/// (openat2 RESOLVE_IN_ROOT).
pub fn resolve_in_root(root: &Path, path: &str) -> Result<PathBuf, Status> {
    use rustix::fs::{openat2, Mode, OFlags, ResolveFlags, CWD};
    let rootfd = rustix::fs::open(root, OFlags::PATH | OFlags::DIRECTORY, Mode::empty())
        .map_err(|e| Status::internal(format!("open {}: {e}", root.display())))?;
    let rel = path.trim_start_matches('/');
    let rel = if rel.is_empty() { "." } else { rel };
    let fd = openat2(
        &rootfd,
        rel,
        OFlags::PATH | OFlags::NOFOLLOW,
        Mode::empty(),
        ResolveFlags::IN_ROOT,
    )
    .map_err(|e| {
        if e == rustix::io::Errno::NOENT {
            Status::not_found(format!("Could not find the file {path} in container"))
        } else {
            Status::internal(format!("resolve {path}: {e}"))
        }
    })?;
    let _ = CWD;
    let real = std::fs::read_link(format!(
        "/proc/self/fd/{}",
        std::os::fd::AsRawFd::as_raw_fd(&fd)
    ))
    .map_err(|e| Status::internal(format!("resolve {path}: {e}")))?;
    if !real.starts_with(root) {
        return Err(Status::permission_denied(format!(
            "{path} resolves outside the container"
        )));
    }
    Ok(real)
}

struct ChunkWriter(mpsc::Sender<Result<Chunk, Status>>);

impl std::io::Write for ChunkWriter {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        self.0
            .blocking_send(Ok(Chunk { data: b.to_vec() }))
            .map_err(|_| std::io::Error::new(std::io::ErrorKind::BrokenPipe, "client gone"))?;
        Ok(b.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Writes a tar of `real` (named `name` in the archive) to the stream.
pub fn tar_out(real: &Path, name: &Path, tx: mpsc::Sender<Result<Chunk, Status>>) {
    let w = std::io::BufWriter::with_capacity(64 << 10, ChunkWriter(tx.clone()));
    let mut b = tar::Builder::new(w);
    b.follow_symlinks(false);
    let res = match std::fs::symlink_metadata(real) {
        Ok(md) if md.is_dir() => b.append_dir_all(name, real),
        Ok(_) => b.append_path_with_name(real, name),
        Err(e) => Err(e),
    }
    .and_then(|_| b.into_inner())
    .and_then(|mut w| std::io::Write::flush(&mut w));
    if let Err(e) = res {
        let _ = tx.blocking_send(Err(Status::internal(format!("copy: {e}"))));
    }
}

/// Unpacks a tar into `dest` in the container: into it when it is a directory, else as `dest`
/// (the archive's single top entry renamed).
pub fn tar_in(
    root: &Path,
    dest: &str,
    rx: std::sync::mpsc::Receiver<Vec<u8>>,
) -> Result<(), Status> {
    let reader = ChanReader::new(rx);
    let unpack = |dir: &Path, reader: ChanReader| -> Result<Vec<PathBuf>, Status> {
        let mut a = tar::Archive::new(reader);
        a.set_preserve_permissions(true);
        a.set_overwrite(true);
        let mut tops = Vec::new();
        for entry in a
            .entries()
            .map_err(|e| Status::invalid_argument(format!("bad tar: {e}")))?
        {
            let mut entry = entry.map_err(|e| Status::invalid_argument(format!("bad tar: {e}")))?;
            let p = entry
                .path()
                .map_err(|e| Status::invalid_argument(format!("bad tar: {e}")))?
                .into_owned();
            if p.components()
                .any(|c| matches!(c, Component::ParentDir | Component::RootDir))
            {
                return Err(Status::invalid_argument(format!(
                    "refusing the archive entry {}: it leaves the destination",
                    p.display()
                )));
            }
            if let Some(Component::Normal(t)) = p.components().next() {
                let t = PathBuf::from(t);
                if !tops.contains(&t) {
                    tops.push(t);
                }
            }
            // unpack_in refuses entries whose parents (symlinks included) lead outside `dir`.
            let ok = entry
                .unpack_in(dir)
                .map_err(|e| Status::internal(format!("copy {}: {e}", p.display())))?;
            if !ok {
                return Err(Status::invalid_argument(format!(
                    "refusing the archive entry {}: it leaves the destination",
                    p.display()
                )));
            }
        }
        Ok(tops)
    };
    match resolve_in_root(root, dest) {
        Ok(real) if real.is_dir() => unpack(&real, reader).map(|_| ()),
        Ok(_) | Err(_) => {
            let d = Path::new(dest);
            let parent = d
                .parent()
                .map(|p| p.to_string_lossy().into_owned())
                .unwrap_or_else(|| "/".into());
            let name = d
                .file_name()
                .ok_or_else(|| Status::invalid_argument(format!("invalid destination {dest:?}")))?;
            let real_parent = resolve_in_root(root, &parent).map_err(|_| {
                Status::not_found(format!("Could not find the file {parent} in container"))
            })?;
            if !real_parent.is_dir() {
                return Err(Status::invalid_argument(format!(
                    "{parent} is not a directory in the container"
                )));
            }
            let tmp = real_parent.join(format!(".berth-cp-{}", std::process::id()));
            std::fs::create_dir(&tmp).map_err(|e| Status::internal(format!("copy: {e}")))?;
            let res = unpack(&tmp, reader).and_then(|tops| {
                if tops.len() != 1 {
                    return Err(Status::invalid_argument(
                        "copying several entries needs an existing directory as destination",
                    ));
                }
                let target = real_parent.join(name);
                if target.is_dir() && !tmp.join(&tops[0]).is_dir() {
                    return Err(Status::invalid_argument(format!("{dest} is a directory")));
                }
                std::fs::rename(tmp.join(&tops[0]), &target)
                    .map_err(|e| Status::internal(format!("copy to {dest}: {e}")))
            });
            let _ = std::fs::remove_dir_all(&tmp);
            res
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps_round_trip() {
        let n = 1_763_892_672_123_456_789i64;
        let s = rfc3339_nanos(n);
        assert_eq!(s, "2025-11-23T10:11:12.123456789Z");
        assert_eq!(parse_rfc3339(&s), Some(n));
        assert_eq!(
            parse_rfc3339("2025-11-23T11:11:12+01:00"),
            Some(1_763_892_672_000_000_000)
        );
        assert_eq!(parse_rfc3339("yesterday"), None);
    }

    #[test]
    fn partial_records_join() {
        let mut j = Joiner::new();
        let mut out = Vec::new();
        j.push(b"2025-01-01T00:00:00.1Z stdout P abc", &mut out);
        j.push(b"2025-01-01T00:00:00.2Z stderr F err", &mut out);
        j.push(b"2025-01-01T00:00:00.3Z stdout F def", &mut out);
        j.push(b"2025-01-01T00:00:00.4Z stdout P tail", &mut out);
        j.flush(&mut out);
        let got: Vec<(String, Vec<u8>)> = out.into_iter().map(|l| (l.stream, l.data)).collect();
        assert_eq!(
            got,
            vec![
                ("stderr".into(), b"err\n".to_vec()),
                ("stdout".into(), b"abcdef\n".to_vec()),
                ("stdout".into(), b"tail".to_vec()),
            ]
        );
    }
}
