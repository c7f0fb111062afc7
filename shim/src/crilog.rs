//! The container log in the CRI format, one record per line:
//! `<RFC3339Nano UTC> <stdout|stderr> <F|P> <content>\n`. F is a full line (its newline is not
//! part of the content); a line longer than [`MAX_LINE`] is cut into P records and a final F;
//! what is left without a newline when a stream closes is written as P.

use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

/// The longest content of one record.
pub const MAX_LINE: usize = 16 * 1024;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Stream {
    Stdout = 0,
    Stderr = 1,
}

impl Stream {
    fn name(self) -> &'static [u8] {
        match self {
            Stream::Stdout => b"stdout",
            Stream::Stderr => b"stderr",
        }
    }
}

pub struct CriLog {
    path: PathBuf,
    file: File,
    /// Output of each stream not yet ended by a newline.
    partial: [Vec<u8>; 2],
    /// A write error was already reported (report one per file).
    failed: bool,
    /// Drop the `\r` a terminal puts before each newline (ONLCR).
    strip_cr: bool,
}

fn open(path: &Path) -> io::Result<File> {
    if let Some(parent) = path.parent() {
        if !parent.as_os_str().is_empty() {
            std::fs::create_dir_all(parent)?;
        }
    }
    OpenOptions::new()
        .create(true)
        .append(true)
        .mode(0o640)
        .open(path)
}

impl CriLog {
    /// Opens (creates, appends to) the log; `terminal`: the output comes from a pty.
    pub fn open(path: &Path, terminal: bool) -> io::Result<CriLog> {
        Ok(CriLog {
            path: path.to_path_buf(),
            file: open(path)?,
            partial: [Vec::new(), Vec::new()],
            failed: false,
            strip_cr: terminal,
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Opens the path again (after log rotation renamed the old file away).
    pub fn reopen(&mut self) -> io::Result<()> {
        self.file = open(&self.path)?;
        self.failed = false;
        Ok(())
    }

    /// Logs a chunk of output. Returns a write error once per file.
    pub fn write(&mut self, stream: Stream, data: &[u8]) -> io::Result<()> {
        let mut out = Vec::new();
        let ts = crate::sys::rfc3339_nano(std::time::SystemTime::now());
        let pend = &mut self.partial[stream as usize];
        let mut rest = data;
        while let Some(i) = rest.iter().position(|&b| b == b'\n') {
            pend.extend_from_slice(&rest[..i]);
            rest = &rest[i + 1..];
            let mut line: &[u8] = pend;
            if self.strip_cr && line.last() == Some(&b'\r') {
                line = &line[..line.len() - 1];
            }
            while line.len() > MAX_LINE {
                record(&mut out, &ts, stream, b'P', &line[..MAX_LINE]);
                line = &line[MAX_LINE..];
            }
            record(&mut out, &ts, stream, b'F', line);
            pend.clear();
        }
        pend.extend_from_slice(rest);
        if pend.len() > MAX_LINE {
            let mut cut = 0;
            while pend.len() - cut > MAX_LINE {
                record(&mut out, &ts, stream, b'P', &pend[cut..cut + MAX_LINE]);
                cut += MAX_LINE;
            }
            pend.drain(..cut);
        }
        self.emit(&out)
    }

    /// The stream ended: what is left without a newline becomes a P record.
    pub fn close_stream(&mut self, stream: Stream) -> io::Result<()> {
        let pend = std::mem::take(&mut self.partial[stream as usize]);
        if pend.is_empty() {
            return Ok(());
        }
        let mut out = Vec::new();
        let ts = crate::sys::rfc3339_nano(std::time::SystemTime::now());
        record(&mut out, &ts, stream, b'P', &pend);
        self.emit(&out)
    }

    fn emit(&mut self, out: &[u8]) -> io::Result<()> {
        if out.is_empty() {
            return Ok(());
        }
        match self.file.write_all(out) {
            Ok(()) => {
                self.failed = false;
                Ok(())
            }
            Err(e) if !self.failed => {
                self.failed = true;
                Err(e)
            }
            Err(_) => Ok(()),
        }
    }
}

fn record(out: &mut Vec<u8>, ts: &str, stream: Stream, tag: u8, content: &[u8]) {
    out.extend_from_slice(ts.as_bytes());
    out.push(b' ');
    out.extend_from_slice(stream.name());
    out.push(b' ');
    out.push(tag);
    out.push(b' ');
    out.extend_from_slice(content);
    out.push(b'\n');
}

#[cfg(test)]
mod tests {
    use super::*;

    fn records(path: &Path) -> Vec<(String, String, String)> {
        std::fs::read_to_string(path)
            .unwrap()
            .lines()
            .map(|l| {
                let mut it = l.splitn(4, ' ');
                let ts = it.next().unwrap();
                assert!(ts.ends_with('Z') && ts.len() == 30, "{ts}");
                (
                    it.next().unwrap().to_string(),
                    it.next().unwrap().to_string(),
                    it.next().unwrap_or("").to_string(),
                )
            })
            .collect()
    }

    fn tmp(name: &str) -> PathBuf {
        let p = std::env::temp_dir().join(format!("crilog-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&p);
        p.join("sub").join("c.log")
    }

    #[test]
    fn lines_partials_and_streams() {
        let p = tmp("lines");
        let mut l = CriLog::open(&p, false).unwrap();
        l.write(Stream::Stdout, b"one\ntw").unwrap();
        l.write(Stream::Stderr, b"err\n").unwrap();
        l.write(Stream::Stdout, b"o\n\nthree").unwrap();
        l.close_stream(Stream::Stdout).unwrap();
        l.close_stream(Stream::Stderr).unwrap();
        let r = records(&p);
        let want = [
            ("stdout", "F", "one"),
            ("stderr", "F", "err"),
            ("stdout", "F", "two"),
            ("stdout", "F", ""),
            ("stdout", "P", "three"),
        ];
        assert_eq!(r.len(), want.len(), "{r:?}");
        for (got, want) in r.iter().zip(want) {
            assert_eq!((got.0.as_str(), got.1.as_str(), got.2.as_str()), want);
        }
        let _ = std::fs::remove_dir_all(p.parent().unwrap().parent().unwrap());
    }

    #[test]
    fn long_lines_are_split() {
        let p = tmp("long");
        let mut l = CriLog::open(&p, false).unwrap();
        let line = vec![b'x'; 40 * 1024];
        for c in line.chunks(3000) {
            l.write(Stream::Stdout, c).unwrap();
        }
        l.write(Stream::Stdout, b"\n").unwrap();
        l.write(Stream::Stdout, &vec![b'y'; MAX_LINE]).unwrap();
        l.write(Stream::Stdout, b"\n").unwrap();
        let r = records(&p);
        let tags: Vec<(&str, usize)> = r.iter().map(|x| (x.1.as_str(), x.2.len())).collect();
        assert_eq!(
            tags,
            [
                ("P", MAX_LINE),
                ("P", MAX_LINE),
                ("F", 8192),
                ("F", MAX_LINE)
            ]
        );
        let _ = std::fs::remove_dir_all(p.parent().unwrap().parent().unwrap());
    }

    #[test]
    fn terminal_line_ends() {
        let p = tmp("tty");
        let mut l = CriLog::open(&p, true).unwrap();
        l.write(Stream::Stdout, b"a\r\nb\r").unwrap();
        l.write(Stream::Stdout, b"\nc\rd\n").unwrap();
        let r: Vec<String> = records(&p).into_iter().map(|x| x.2).collect();
        assert_eq!(r, ["a", "b", "c\rd"]);
        let _ = std::fs::remove_dir_all(p.parent().unwrap().parent().unwrap());
    }

    #[test]
    fn reopen_after_rename() {
        let p = tmp("reopen");
        let mut l = CriLog::open(&p, false).unwrap();
        l.write(Stream::Stdout, b"a\n").unwrap();
        std::fs::rename(&p, p.with_extension("1")).unwrap();
        l.reopen().unwrap();
        l.write(Stream::Stdout, b"b\n").unwrap();
        assert_eq!(records(&p)[0].2, "b");
        assert_eq!(records(&p.with_extension("1"))[0].2, "a");
        let _ = std::fs::remove_dir_all(p.parent().unwrap().parent().unwrap());
    }
}
