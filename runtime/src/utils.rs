//! Small helpers: atomic file writes, `/proc` reads.

use crate::error::{IoContext, Result};
use std::fs;
use std::io::Write;
use std::path::Path;

/// Writes `data` to `path` so that a crash of any process leaves the old content or the new one:
/// a temp file in the same directory, then rename. No fsync: the runtime's state lives on tmpfs
/// (`/run`) and does not outlive a reboot, and on a disk-backed `--root` an fsync costs a
/// millisecond or more per container start (runc and crun do not sync their state either).
pub fn write_atomic(path: &Path, data: &[u8]) -> Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("file");
    let tmp = dir.join(format!(".{name}.{}.tmp", std::process::id()));
    let mut f = fs::File::create(&tmp).io_ctx("create", &tmp)?;
    f.write_all(data).io_ctx("write", &tmp)?;
    drop(f);
    fs::rename(&tmp, path).io_ctx("rename to", path)?;
    Ok(())
}

/// The start time of `pid` in clock ticks since boot (field 22 of `/proc/<pid>/stat`), used to
/// tell a container's init from an unrelated process that reused its pid.
pub fn process_start_time(pid: i32) -> Option<u64> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) may contain spaces and parentheses: parse after the last ')'.
    let rest = &stat[stat.rfind(')')? + 2..];
    rest.split(' ').nth(19)?.parse().ok()
}

/// The state letter of `pid` (field 3 of `/proc/<pid>/stat`): `R`, `S`, `Z`, …
pub fn process_state(pid: i32) -> Option<char> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    stat[stat.rfind(')')? + 2..].chars().next()
}

pub use berth_time::{days_from_civil, parse_rfc3339, rfc3339, rfc3339_now};

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn start_time_of_self_is_stable() {
        let pid = std::process::id() as i32;
        let a = process_start_time(pid).unwrap();
        assert_eq!(Some(a), process_start_time(pid));
        assert!(matches!(process_state(pid), Some('R' | 'S')));
    }

    #[test]
    fn write_atomic_replaces_content() {
        let dir = std::env::temp_dir().join(format!("berth-utils-{}", std::process::id()));
        fs::create_dir_all(&dir).unwrap();
        let p = dir.join("state.json");
        write_atomic(&p, b"old").unwrap();
        write_atomic(&p, b"new").unwrap();
        assert_eq!(fs::read(&p).unwrap(), b"new");
        assert_eq!(fs::read_dir(&dir).unwrap().count(), 1, "no temp file left");
        fs::remove_dir_all(&dir).unwrap();
    }
}
