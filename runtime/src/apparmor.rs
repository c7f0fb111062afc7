//! AppArmor: the profile a container's program runs under (`process.apparmorProfile`).
//!
//! The runtime does not load profiles; whoever names one (podman, a CRI daemon, the user) loads
//! it first. Before its final `execve` the process asks the kernel to move it into the profile at
//! that exec, as runc does: it writes `exec PROFILE` to its own `attr/apparmor/exec` file (or the
//! older shared `attr/exec` on kernels before 5.8).
//!
//! A profile named on a host without AppArmor is an error at `create` (and at `exec`), before
//! anything is made: the container would otherwise run with less confinement than asked for.

use std::io::Write;
use std::path::Path;

/// Whether the host's kernel has AppArmor enabled: its securityfs directory is there and the
/// module's `enabled` parameter says `Y` (runc's test).
pub fn enabled() -> bool {
    enabled_at(Path::new("/sys"))
}

/// [`enabled`] with `sys` in place of `/sys`.
pub fn enabled_at(sys: &Path) -> bool {
    sys.join("kernel/security/apparmor").is_dir()
        && std::fs::read(sys.join("module/apparmor/parameters/enabled"))
            .is_ok_and(|b| b.starts_with(b"Y"))
}

/// The error for a profile named where AppArmor is not enabled, or `None` if it can be applied.
pub fn check(profile: Option<&str>) -> Option<String> {
    let p = profile.filter(|p| !p.is_empty())?;
    (!enabled())
        .then(|| format!("apparmorProfile {p:?} is set but AppArmor is not enabled on this host"))
}

/// Arranges for the calling thread's next `execve` to run under `profile`. Needs the container's
/// `/proc`; called in the init after `pivot_root` (and in an exec'd process after it joined the
/// container's mount namespace).
pub fn apply_on_exec(profile: &str) -> Result<(), String> {
    let fail = |path: &str, e: std::io::Error| {
        let hint = if e.raw_os_error() == Some(libc::ENOENT) {
            " (is the profile loaded? apparmor_parser -r FILE loads it)"
        } else {
            ""
        };
        format!("apply AppArmor profile {profile:?}: write {path}: {e}{hint}")
    };
    let modern = "/proc/thread-self/attr/apparmor/exec";
    let path = if Path::new(modern).exists() {
        modern
    } else {
        "/proc/thread-self/attr/exec"
    };
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .open(path)
        .map_err(|e| fail(path, e))?;
    // One write: the kernel parses the whole command at once.
    f.write_all(format!("exec {profile}").as_bytes())
        .map_err(|e| fail(path, e))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Whether [`enabled_at`] says yes for a fake `/sys` with (or without) the securityfs
    /// directory and the module's `enabled` file holding `value`.
    fn enabled_with(dir: bool, value: Option<&str>) -> bool {
        let t = std::env::temp_dir().join(format!(
            "berth-apparmor-test-{}-{dir}-{}",
            std::process::id(),
            value.unwrap_or("none").trim()
        ));
        if dir {
            std::fs::create_dir_all(t.join("kernel/security/apparmor")).unwrap();
        }
        if let Some(v) = value {
            let p = t.join("module/apparmor/parameters");
            std::fs::create_dir_all(&p).unwrap();
            std::fs::write(p.join("enabled"), v).unwrap();
        }
        let r = enabled_at(&t);
        let _ = std::fs::remove_dir_all(&t);
        r
    }

    #[test]
    fn enabled_needs_securityfs_and_the_module_saying_y() {
        assert!(enabled_with(true, Some("Y\n")));
        assert!(!enabled_with(true, Some("N\n")));
        assert!(!enabled_with(false, Some("Y\n")));
        assert!(!enabled_with(true, None));
    }

    #[test]
    fn no_profile_is_always_fine() {
        assert_eq!(check(None), None);
        assert_eq!(check(Some("")), None);
    }

    #[test]
    fn a_profile_without_apparmor_is_refused_by_name() {
        if enabled() {
            assert_eq!(check(Some("p")), None);
        } else {
            let e = check(Some("berth-test")).unwrap();
            assert!(
                e.contains("\"berth-test\"") && e.contains("not enabled"),
                "{e}"
            );
        }
    }
}
