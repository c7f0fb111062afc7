//! `--log`, `--log-format` and `--debug`, as runc has them: containerd, CRI-O and conmon read
//! errors from the log file (containerd the last `"level":"error"` line of the JSON).
//!
//! - With `--log FILE` the file is opened (created, appended to) at start, as runc does, and gets
//!   errors, warnings and, with `--debug`, debug lines; warnings go there only (errors also to
//!   stderr), as with runc, whose callers give it the container's stdio.
//! - Without `--log` the log is stderr. The CLI prints errors and warnings on stderr itself
//!   (`berth-runtime: …`), so only debug lines are written there through this module.
//!
//! Only the CLI sets a target; the library used in-process (by the shim) logs nothing here.

use std::fs::File;
use std::io::Write;
use std::path::PathBuf;
use std::sync::OnceLock;

enum Sink {
    File(File),
    Stderr,
}

struct Target {
    sink: Sink,
    json: bool,
    debug: bool,
}

static TARGET: OnceLock<Target> = OnceLock::new();

/// Sets the log target and format, once, at start-up. Fails when the log file cannot be opened
/// (runc fails then too).
pub fn init(path: Option<PathBuf>, json: bool, debug: bool) -> std::io::Result<()> {
    let sink = match path {
        Some(path) => {
            use std::os::unix::fs::OpenOptionsExt;
            let f = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .mode(0o644)
                .open(&path)
                .map_err(|e| std::io::Error::new(e.kind(), format!("open log {path:?}: {e}")))?;
            Sink::File(f)
        }
        None => Sink::Stderr,
    };
    let _ = TARGET.set(Target { sink, json, debug });
    Ok(())
}

/// Whether the CLI set no `--log` (its log is stderr); false in a library user's process.
pub fn to_stderr() -> bool {
    TARGET.get().is_some_and(|t| matches!(t.sink, Sink::Stderr))
}

pub fn debug_enabled() -> bool {
    TARGET.get().is_some_and(|t| t.debug)
}

/// Writes a debug line (only with `--debug`).
pub fn debug(msg: &str) {
    write("debug", msg);
}

/// Appends one entry (`level` is `error`, `warning`, `info` or `debug`).
pub fn write(level: &str, msg: &str) {
    let Some(t) = TARGET.get() else { return };
    if level == "debug" && !t.debug {
        return;
    }
    let line = format_line(t.json, level, msg, &crate::utils::rfc3339_now());
    // One write(2) per line: the file is opened O_APPEND, so lines of concurrent runtimes do not
    // interleave.
    let _ = match &t.sink {
        Sink::File(f) => (&*f).write_all(line.as_bytes()),
        Sink::Stderr if level == "debug" => std::io::stderr().lock().write_all(line.as_bytes()),
        Sink::Stderr => Ok(()),
    };
}

/// One line in logrus's text (`time="…" level=… msg="…"`) or JSON format.
fn format_line(json: bool, level: &str, msg: &str, time: &str) -> String {
    if json {
        format!(
            "{}\n",
            serde_json::json!({"level": level, "msg": msg, "time": time})
        )
    } else {
        format!("time={time:?} level={level} msg={msg:?}\n")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_are_logrus_shaped() {
        let t = "2024-01-02T03:04:05Z";
        assert_eq!(
            format_line(false, "debug", "a \"b\"", t),
            "time=\"2024-01-02T03:04:05Z\" level=debug msg=\"a \\\"b\\\"\"\n"
        );
        let v: serde_json::Value =
            serde_json::from_str(&format_line(true, "error", "x", t)).unwrap();
        assert_eq!(v["level"], "error");
        assert_eq!(v["msg"], "x");
        assert_eq!(v["time"], t);
    }
}
