//! The OCI runtime, driven either in process (the `berth_runtime` library) or as a runc-compatible
//! binary (runc, crun, berth-runtime) run synchronously with `std::process::Command`.
//!
//! The library's `create` and `exec` clone the new process from this one, and it inherits fds
//! 0/1/2 as its stdio: the container's pipes are put there just around the call.

use crate::sys;
use berth_runtime::container as c;
use std::ffi::OsStr;
use std::io::Write;
use std::os::fd::{AsRawFd, BorrowedFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio as StdStdio};

#[derive(Debug)]
pub enum RtError {
    /// The container is not in the runtime (any more).
    NotFound(String),
    /// The container is not in a state that allows the operation.
    BadState(String),
    Other(String),
}

impl std::fmt::Display for RtError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            RtError::NotFound(m) | RtError::BadState(m) | RtError::Other(m) => f.write_str(m),
        }
    }
}

impl From<berth_runtime::Error> for RtError {
    fn from(e: berth_runtime::Error) -> Self {
        match e {
            berth_runtime::Error::NotFound(_) => RtError::NotFound(e.to_string()),
            berth_runtime::Error::BadState { .. } => RtError::BadState(e.to_string()),
            e => RtError::Other(e.to_string()),
        }
    }
}

impl From<RtError> for tonic::Status {
    fn from(e: RtError) -> Self {
        match e {
            RtError::NotFound(m) => tonic::Status::not_found(m),
            RtError::BadState(m) => tonic::Status::failed_precondition(m),
            RtError::Other(m) => tonic::Status::internal(m),
        }
    }
}

type Result<T> = std::result::Result<T, RtError>;

/// The stdio a new process gets.
pub struct Stdio<'a> {
    pub stdin: BorrowedFd<'a>,
    pub stdout: BorrowedFd<'a>,
    pub stderr: BorrowedFd<'a>,
}

pub struct Runtime {
    pub root: PathBuf,
    pub id: String,
    /// None: the library.
    pub bin: Option<PathBuf>,
    /// /dev/null, put back on 0/1/2 after a library call.
    devnull: OwnedFd,
}

impl Runtime {
    pub fn new(root: PathBuf, id: String, bin: Option<PathBuf>) -> std::io::Result<Runtime> {
        Ok(Runtime {
            root,
            id,
            bin,
            devnull: sys::devnull()?,
        })
    }

    /// Whether the runtime has state for the container (`<root>/<id>` exists, for runc too).
    pub fn has_state(&self) -> bool {
        self.root.join(&self.id).exists()
    }

    /// Runs `f` with `stdio` on fds 0/1/2, then puts /dev/null back.
    fn with_stdio<T>(&self, stdio: &Stdio<'_>, f: impl FnOnce() -> T) -> std::io::Result<T> {
        let fds = [stdio.stdin, stdio.stdout, stdio.stderr];
        let restore = || {
            for n in 0..3 {
                let _ = sys::dup2(self.devnull.as_raw_fd(), n);
            }
        };
        for (n, fd) in fds.iter().enumerate() {
            if let Err(e) = sys::dup2(fd.as_raw_fd(), n as i32) {
                restore();
                return Err(e);
            }
        }
        let r = f();
        restore();
        Ok(r)
    }

    fn cmd(&self, bin: &Path) -> Command {
        let mut cmd = Command::new(bin);
        cmd.arg("--root").arg(&self.root);
        cmd
    }

    /// Runs the binary with captured output (and `input` on its stdin).
    fn run<S: AsRef<OsStr>>(
        &self,
        bin: &Path,
        args: &[S],
        input: Option<&[u8]>,
    ) -> Result<Vec<u8>> {
        let mut cmd = self.cmd(bin);
        cmd.args(args)
            .stdin(if input.is_some() {
                StdStdio::piped()
            } else {
                StdStdio::null()
            })
            .stdout(StdStdio::piped())
            .stderr(StdStdio::piped());
        let mut child = cmd
            .spawn()
            .map_err(|e| RtError::Other(format!("run {}: {e}", bin.display())))?;
        if let (Some(data), Some(mut w)) = (input, child.stdin.take()) {
            let _ = w.write_all(data);
        }
        let out = child
            .wait_with_output()
            .map_err(|e| RtError::Other(format!("wait for {}: {e}", bin.display())))?;
        if out.status.success() {
            return Ok(out.stdout);
        }
        let verb = args
            .first()
            .map(|a| a.as_ref().to_string_lossy().into_owned())
            .unwrap_or_default();
        Err(self.failure(bin, &verb, &out.status, &out.stderr))
    }

    /// The error of a failed runtime command: its last message, else its exit status.
    pub fn failure(
        &self,
        bin: &Path,
        verb: &str,
        status: &std::process::ExitStatus,
        stderr: &[u8],
    ) -> RtError {
        let msg = error_line(bin, stderr)
            .unwrap_or_else(|| format!("{} {verb} failed ({status})", bin.display()));
        if !self.has_state() {
            RtError::NotFound(msg)
        } else {
            RtError::Other(msg)
        }
    }

    /// Creates the container; returns its init's host pid. In binary mode a failure's message
    /// may be only on `stdio.stderr` (the caller reads it from there).
    pub fn create(
        &self,
        bundle: &Path,
        console: Option<&Path>,
        pid_file: &Path,
        stdio: &Stdio<'_>,
    ) -> Result<i32> {
        match &self.bin {
            None => {
                let opts = c::create::CreateOpts {
                    root: self.root.clone(),
                    id: self.id.clone(),
                    bundle: bundle.to_path_buf(),
                    console_socket: console.map(Path::to_path_buf),
                    ..Default::default()
                };
                let st = self
                    .with_stdio(stdio, || c::create::create(&opts))
                    .map_err(|e| RtError::Other(format!("set up stdio: {e}")))??;
                Ok(st.pid)
            }
            Some(bin) => {
                let mut cmd = self.cmd(bin);
                cmd.arg("create").arg("--bundle").arg(bundle);
                if let Some(c) = console {
                    cmd.arg("--console-socket").arg(c);
                }
                cmd.arg("--pid-file").arg(pid_file).arg(&self.id);
                self.spawn_with(cmd, stdio, "create")?;
                read_pid(pid_file)
            }
        }
    }

    /// Runs `cmd` with `stdio` and waits; a failure's message is on `stdio.stderr`.
    fn spawn_with(&self, mut cmd: Command, stdio: &Stdio<'_>, verb: &str) -> Result<()> {
        let dup = |fd: BorrowedFd<'_>| {
            fd.try_clone_to_owned()
                .map_err(|e| RtError::Other(format!("dup: {e}")))
        };
        cmd.stdin(StdStdio::from(dup(stdio.stdin)?))
            .stdout(StdStdio::from(dup(stdio.stdout)?))
            .stderr(StdStdio::from(dup(stdio.stderr)?));
        let bin = PathBuf::from(cmd.get_program());
        let status = cmd
            .status()
            .map_err(|e| RtError::Other(format!("run {}: {e}", bin.display())))?;
        if status.success() {
            Ok(())
        } else {
            Err(RtError::Other(format!(
                "{} {verb} failed ({status})",
                bin.display()
            )))
        }
    }

    pub fn start(&self) -> Result<()> {
        match &self.bin {
            None => c::start::start(&self.root, &self.id)
                .map(drop)
                .map_err(Into::into),
            Some(bin) => self.run(bin, &["start", &self.id], None).map(drop),
        }
    }

    pub fn kill(&self, signal: i32, all: bool) -> Result<()> {
        match &self.bin {
            None => {
                let sig = nix::sys::signal::Signal::try_from(signal)
                    .map_err(|_| RtError::Other(format!("unsupported signal {signal}")))?;
                c::kill::kill(&self.root, &self.id, sig, all).map_err(Into::into)
            }
            Some(bin) => {
                let sig = signal.to_string();
                let mut args = vec!["kill"];
                if all {
                    args.push("--all");
                }
                args.extend([self.id.as_str(), sig.as_str()]);
                self.run(bin, &args, None).map(drop)
            }
        }
    }

    /// Starts an exec process (`process` is the OCI process object); returns its host pid.
    /// In binary mode a failure's message may be only on `stdio.stderr`.
    pub fn exec(
        &self,
        process: &oci_spec::runtime::Process,
        process_json: &[u8],
        console: Option<&Path>,
        scratch: &Path,
        stdio: &Stdio<'_>,
    ) -> Result<i32> {
        match &self.bin {
            None => {
                let opts = c::exec::ExecOpts {
                    process: process.clone(),
                    console_socket: console.map(Path::to_path_buf),
                    pid_file: None,
                    preserve_fds: 0,
                    ..Default::default()
                };
                self.with_stdio(stdio, || c::exec::exec(&self.root, &self.id, &opts))
                    .map_err(|e| RtError::Other(format!("set up stdio: {e}")))?
                    .map_err(Into::into)
            }
            Some(bin) => {
                let pjson = scratch.with_extension("json");
                let pid_file = scratch.with_extension("pid");
                let r = (|| {
                    std::fs::write(&pjson, process_json)
                        .map_err(|e| RtError::Other(format!("write {}: {e}", pjson.display())))?;
                    let mut cmd = self.cmd(bin);
                    cmd.arg("exec")
                        .arg("--detach")
                        .arg("--pid-file")
                        .arg(&pid_file)
                        .arg("--process")
                        .arg(&pjson);
                    if let Some(c) = console {
                        cmd.arg("--console-socket").arg(c);
                    }
                    cmd.arg(&self.id);
                    self.spawn_with(cmd, stdio, "exec")?;
                    read_pid(&pid_file)
                })();
                let _ = std::fs::remove_file(&pjson);
                let _ = std::fs::remove_file(&pid_file);
                r
            }
        }
    }

    pub fn delete(&self, force: bool) -> Result<()> {
        let r = match &self.bin {
            None => c::delete::delete(&self.root, &self.id, force).map_err(Into::into),
            Some(bin) => {
                let mut args = vec!["delete"];
                if force {
                    args.push("--force");
                }
                args.push(&self.id);
                self.run(bin, &args, None).map(drop)
            }
        };
        match r {
            // Already gone (someone else deleted it): what delete is for is done.
            Err(RtError::NotFound(_)) if !self.has_state() => Ok(()),
            r => r,
        }
    }

    /// runc's `events --stats` JSON.
    pub fn stats(&self) -> Result<Vec<u8>> {
        match &self.bin {
            None => {
                let v = c::info::stats_event(&self.root, &self.id)?;
                Ok(serde_json::to_vec(&v).unwrap_or_default())
            }
            Some(bin) => {
                let out = self.run(bin, &["events", "--stats", &self.id], None)?;
                let line = out
                    .split(|b| *b == b'\n')
                    .find(|l| !l.iter().all(u8::is_ascii_whitespace))
                    .unwrap_or_default();
                Ok(line.to_vec())
            }
        }
    }

    pub fn pids(&self) -> Result<Vec<u32>> {
        match &self.bin {
            None => Ok(c::info::pids(&self.root, &self.id)?
                .into_iter()
                .map(|p| p as u32)
                .collect()),
            Some(bin) => {
                let out = self.run(bin, &["ps", "--format", "json", &self.id], None)?;
                serde_json::from_slice::<Option<Vec<u32>>>(&out)
                    .map(Option::unwrap_or_default)
                    .map_err(|e| RtError::Other(format!("{} ps: bad output: {e}", bin.display())))
            }
        }
    }

    pub fn pause(&self) -> Result<()> {
        match &self.bin {
            None => c::pause::pause(&self.root, &self.id).map_err(Into::into),
            Some(bin) => self.run(bin, &["pause", &self.id], None).map(drop),
        }
    }

    pub fn resume(&self) -> Result<()> {
        match &self.bin {
            None => c::pause::resume(&self.root, &self.id).map_err(Into::into),
            Some(bin) => self.run(bin, &["resume", &self.id], None).map(drop),
        }
    }

    /// Applies OCI LinuxResources JSON; returns warnings.
    pub fn update(&self, resources_json: &[u8]) -> Result<Vec<String>> {
        match &self.bin {
            None => {
                let res: oci_spec::runtime::LinuxResources = serde_json::from_slice(resources_json)
                    .map_err(|e| RtError::BadState(format!("bad resources JSON: {e}")))?;
                c::update::update(&self.root, &self.id, &res).map_err(Into::into)
            }
            Some(bin) => {
                let out = self.run(
                    bin,
                    &["update", "--resources", "-", &self.id],
                    Some(resources_json),
                )?;
                Ok(String::from_utf8_lossy(&out)
                    .lines()
                    .filter(|l| !l.trim().is_empty())
                    .map(str::to_string)
                    .collect())
            }
        }
    }
}

fn read_pid(path: &Path) -> Result<i32> {
    let s = std::fs::read_to_string(path)
        .map_err(|e| RtError::Other(format!("read pid file {}: {e}", path.display())))?;
    s.trim()
        .parse()
        .map_err(|_| RtError::Other(format!("bad pid file {}: {s:?}", path.display())))
}

/// The last message in a runtime's stderr: a logrus line's `msg="..."` (runc), else the last
/// non-empty line without a leading `<program name>: `.
pub fn error_line(bin: &Path, stderr: &[u8]) -> Option<String> {
    let text = String::from_utf8_lossy(stderr);
    let lines: Vec<&str> = text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect();
    let pick = lines
        .iter()
        .rev()
        .find(|l| l.contains("level=error") || l.contains("level=fatal"))
        .or(lines.last())?;
    if let Some(m) = logrus_msg(pick) {
        return Some(m);
    }
    let name = bin.file_name().map(|n| n.to_string_lossy().into_owned());
    let stripped = name
        .and_then(|n| pick.strip_prefix(&format!("{n}: ")).map(str::to_string))
        .filter(|s| !s.trim().is_empty());
    Some(stripped.unwrap_or_else(|| pick.to_string()))
}

fn logrus_msg(line: &str) -> Option<String> {
    let start = line.find("msg=\"")? + 5;
    let mut out = String::new();
    let mut chars = line[start..].chars();
    while let Some(c) = chars.next() {
        match c {
            '\\' => match chars.next() {
                Some('n') => out.push(' '),
                Some('t') => out.push(' '),
                Some(o) => out.push(o),
                None => break,
            },
            '"' => return Some(out),
            c => out.push(c),
        }
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_lines() {
        let runc = b"time=\"2024-01-01T00:00:00Z\" level=warning msg=\"w\"\n\
time=\"2024-01-01T00:00:00Z\" level=error msg=\"runc create failed: exec: \\\"nope\\\": not found\"\n";
        let bin = Path::new("/usr/bin/berth-runtime");
        assert_eq!(
            error_line(bin, runc).unwrap(),
            "runc create failed: exec: \"nope\": not found"
        );
        assert_eq!(
            error_line(bin, b"berth-runtime: bad thing\n\n").unwrap(),
            "bad thing"
        );
        assert_eq!(error_line(bin, b"crun: x\n").unwrap(), "crun: x");
        assert!(error_line(bin, b"  \n").is_none());
    }
}
