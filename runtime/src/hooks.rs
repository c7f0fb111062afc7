//! OCI hooks: run a program with the container state on stdin, its env and args, and a timeout.
//!
//! A hook that exits non-zero, cannot be started or outlives its timeout (it is then killed)
//! is an error naming the hook and, if it wrote any, the last line of its stderr.

use oci_spec::runtime::Hook;
use std::io::{Read, Seek, Write};
use std::os::fd::FromRawFd;
use std::os::unix::process::ExitStatusExt;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// runc's words ("error running hook #N"), which callers and runc's tests match, with the
/// hook's kind and path.
#[derive(Debug, thiserror::Error)]
pub enum HookError {
    #[error("error running hook #{index} ({kind} {path:?}): {msg}")]
    Failed {
        kind: &'static str,
        /// Its place among the hooks of its kind, from 0.
        index: usize,
        path: String,
        msg: String,
    },
}

impl HookError {
    fn at(self, i: usize) -> HookError {
        match self {
            HookError::Failed {
                kind, path, msg, ..
            } => HookError::Failed {
                kind,
                index: i,
                path,
                msg,
            },
        }
    }
}

/// Runs `hooks` in order, in this process's working directory; the first failure stops the
/// sequence.
pub fn run_all(
    kind: &'static str,
    hooks: Option<&Vec<Hook>>,
    state_json: &str,
) -> Result<(), HookError> {
    run_all_in(kind, hooks, state_json, None)
}

/// [`run_all`] with each hook started in `dir`: the runtime's own hooks (prestart,
/// createRuntime, poststart, poststop) run in the bundle directory, where runc, which enters the
/// bundle before it creates a container, runs them (hooks written for runc name files relative
/// to it).
pub fn run_all_in(
    kind: &'static str,
    hooks: Option<&Vec<Hook>>,
    state_json: &str,
    dir: Option<&Path>,
) -> Result<(), HookError> {
    for (i, h) in hooks.into_iter().flatten().enumerate() {
        run(kind, h, state_json, dir).map_err(|e| e.at(i))?;
    }
    Ok(())
}

/// A signal's description in lower case, as Go prints it ("bad system call", "killed").
fn signal_name(sig: i32) -> String {
    // SAFETY: strsignal returns a pointer to a NUL-terminated string that stays valid until the
    // next call; it is copied at once (hooks run one at a time).
    let p = unsafe { libc::strsignal(sig) };
    if p.is_null() {
        return format!("signal {sig}");
    }
    // SAFETY: p is non-null and NUL-terminated (above).
    let s = unsafe { std::ffi::CStr::from_ptr(p) };
    s.to_string_lossy().to_lowercase()
}

fn memfd() -> Option<std::fs::File> {
    // SAFETY: memfd_create with a static NUL-terminated name; the returned fd is owned by File.
    let fd = unsafe { libc::memfd_create(c"berth-hook-stderr".as_ptr(), libc::MFD_CLOEXEC) };
    // SAFETY: fd is a fresh descriptor we own when non-negative.
    (fd >= 0).then(|| unsafe { std::fs::File::from_raw_fd(fd) })
}

pub fn run(
    kind: &'static str,
    hook: &Hook,
    state_json: &str,
    dir: Option<&Path>,
) -> Result<(), HookError> {
    let fail = |msg: String| HookError::Failed {
        kind,
        index: 0,
        path: hook.path().display().to_string(),
        msg,
    };
    let mut cmd = Command::new(hook.path());
    if let Some(args) = hook.args() {
        if let Some((arg0, rest)) = args.split_first() {
            std::os::unix::process::CommandExt::arg0(&mut cmd, arg0);
            cmd.args(rest);
        }
    }
    if let Some(d) = dir {
        cmd.current_dir(d);
    }
    cmd.env_clear();
    for kv in hook.env().iter().flatten() {
        if let Some((k, v)) = kv.split_once('=') {
            cmd.env(k, v);
        }
    }
    let mut errfile = memfd();
    cmd.stdin(Stdio::piped()).stdout(Stdio::null());
    match errfile.as_ref().and_then(|f| f.try_clone().ok()) {
        Some(f) => cmd.stderr(Stdio::from(f)),
        None => cmd.stderr(Stdio::inherit()),
    };
    let mut child = cmd
        .spawn()
        .map_err(|e| fail(format!("cannot start: {e}")))?;
    if let Some(mut stdin) = child.stdin.take() {
        // A hook that does not read its stdin is fine: ignore EPIPE.
        let _ = stdin.write_all(state_json.as_bytes());
    }
    let timeout = hook.timeout().map(|t| Duration::from_secs(t as u64));
    let status = wait_timeout(&mut child, timeout).map_err(|e| fail(format!("wait: {e}")))?;
    let Some(status) = status else {
        let _ = child.kill();
        let _ = child.wait();
        return Err(fail(format!(
            "timed out after {}s",
            timeout.unwrap_or_default().as_secs()
        )));
    };
    if status.success() {
        return Ok(());
    }
    let mut stderr = String::new();
    if let Some(f) = errfile.as_mut() {
        let _ = f.rewind();
        let _ = f.read_to_string(&mut stderr);
    }
    let last = stderr
        .lines()
        .rev()
        .find(|l| !l.trim().is_empty())
        .unwrap_or("")
        .trim();
    let how = match (status.code(), status.signal()) {
        (Some(c), _) => format!("exit status {c}"),
        // As Go (so runc) words it: "signal: bad system call" for a seccomp kill.
        (None, Some(s)) => format!("killed by signal {s} ({})", signal_name(s)),
        _ => status.to_string(),
    };
    Err(fail(if last.is_empty() {
        how
    } else {
        format!("{how}: {last}")
    }))
}

/// Waits for `child` for at most `timeout` (forever if `None`). `Ok(None)` on timeout.
fn wait_timeout(
    child: &mut std::process::Child,
    timeout: Option<Duration>,
) -> std::io::Result<Option<std::process::ExitStatus>> {
    let Some(timeout) = timeout else {
        return child.wait().map(Some);
    };
    let deadline = Instant::now() + timeout;
    // SAFETY: pidfd_open on our own child's pid; the fd (if any) is closed below.
    let pidfd = unsafe { libc::syscall(libc::SYS_pidfd_open, child.id() as libc::pid_t, 0) } as i32;
    loop {
        if let Some(s) = child.try_wait()? {
            if pidfd >= 0 {
                // SAFETY: closing the pidfd we opened above.
                unsafe { libc::close(pidfd) };
            }
            return Ok(Some(s));
        }
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            if pidfd >= 0 {
                // SAFETY: closing the pidfd we opened above.
                unsafe { libc::close(pidfd) };
            }
            return Ok(None);
        }
        if pidfd >= 0 {
            let mut pfd = libc::pollfd {
                fd: pidfd,
                events: libc::POLLIN,
                revents: 0,
            };
            // SAFETY: one valid pollfd on our stack.
            unsafe { libc::poll(&mut pfd, 1, left.as_millis().min(i32::MAX as u128) as i32) };
        } else {
            std::thread::sleep(left.min(Duration::from_millis(5)));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hook(json: &str) -> Hook {
        serde_json::from_str(json).unwrap()
    }

    #[test]
    fn hook_gets_state_env_and_args() {
        let out = std::env::temp_dir().join(format!("berth-hook-test-{}", std::process::id()));
        let h = hook(&format!(
            r#"{{"path":"/bin/sh","args":["sh","-c","cat > {0}; echo \"$FOO $0\" >> {0}","arg0x"],"env":["FOO=bar"]}}"#,
            out.display()
        ));
        run("prestart", &h, "{\"id\":\"x\"}", None).unwrap();
        let got = std::fs::read_to_string(&out).unwrap();
        std::fs::remove_file(&out).unwrap();
        assert_eq!(got, "{\"id\":\"x\"}bar arg0x\n");
    }

    #[test]
    fn failing_hook_reports_stderr() {
        let h = hook(r#"{"path":"/bin/sh","args":["sh","-c","echo boom >&2; exit 3"]}"#);
        let e = run("poststop", &h, "{}", None).unwrap_err().to_string();
        assert!(
            e.contains("exit status 3") && e.contains("boom") && e.contains("poststop"),
            "{e}"
        );
        assert!(
            e.starts_with("error running hook #0 (poststop \"/bin/sh\")"),
            "{e}"
        );
    }

    #[test]
    fn hook_killed_by_a_signal_names_it() {
        let h = hook(r#"{"path":"/bin/sh","args":["sh","-c","kill -SYS $$"]}"#);
        let e = run("startContainer", &h, "{}", None)
            .unwrap_err()
            .to_string();
        assert!(e.contains("killed by signal 31 (bad system call)"), "{e}");
    }

    #[test]
    fn hanging_hook_times_out() {
        let h = hook(r#"{"path":"/bin/sleep","args":["sleep","30"],"timeout":1}"#);
        let e = run("createRuntime", &h, "{}", None)
            .unwrap_err()
            .to_string();
        assert!(e.contains("timed out"), "{e}");
    }

    #[test]
    fn missing_hook_binary() {
        let h = hook(r#"{"path":"/nonexistent/hook"}"#);
        assert!(run("prestart", &h, "{}", None)
            .unwrap_err()
            .to_string()
            .contains("cannot start"));
    }
}
