//! `--log` and `--log-format`: containerd, CRI-O and conmon read errors from this file.

use std::io::Write;
use std::path::PathBuf;
use std::sync::OnceLock;

struct Target {
    path: PathBuf,
    json: bool,
    debug: bool,
}

static TARGET: OnceLock<Target> = OnceLock::new();

/// Sets the log file (appended to) and its format, once, at start-up.
pub fn init(path: Option<PathBuf>, json: bool, debug: bool) {
    if let Some(path) = path {
        let _ = TARGET.set(Target { path, json, debug });
    }
}

pub fn debug_enabled() -> bool {
    TARGET.get().is_some_and(|t| t.debug)
}

/// Appends one entry (`level` is `error`, `warning`, `info` or `debug`).
pub fn write(level: &str, msg: &str) {
    let Some(t) = TARGET.get() else { return };
    if level == "debug" && !t.debug {
        return;
    }
    let time = crate::utils::rfc3339_now();
    let line = if t.json {
        format!(
            "{}\n",
            serde_json::json!({"level": level, "msg": msg, "time": time})
        )
    } else {
        format!("time={time:?} level={level} msg={msg:?}\n")
    };
    if let Ok(mut f) = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&t.path)
    {
        let _ = f.write_all(line.as_bytes());
    }
}
