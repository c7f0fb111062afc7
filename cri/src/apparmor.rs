//! AppArmor for CRI containers, as containerd and CRI-O give it.
//!
//! - `localhost/NAME` (or a Localhost SecurityProfile): the container runs under profile NAME,
//!   which must already be loaded; CreateContainer fails otherwise.
//! - `runtime/default`, or nothing asked, on a host with AppArmor: berth's own profile,
//!   `berth-default` (`berth-default.apparmor` beside this file), which berthd loads with
//!   `apparmor_parser` the first time a container needs it. Privileged containers run
//!   unconfined, as with containerd and CRI-O.
//! - `unconfined`: no profile.
//!
//! On a host without AppArmor (or without `apparmor_parser`, for the default profile) nothing
//! asked means no profile, and a profile asked for by name is an error: the container would
//! otherwise run with less confinement than its pod says.
//!
//! berth-runtime does the rest (`process.apparmorProfile`, see its `apparmor` module).

use crate::cri_spec::AppArmor;
use std::io::Write;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::Mutex;
use tonic::Status;

/// The name of berth's default profile.
pub const DEFAULT_PROFILE: &str = "berth-default";
/// Its text.
pub const DEFAULT_PROFILE_TEXT: &str = include_str!("berth-default.apparmor");
/// The kernel's list of loaded profiles, one `NAME (MODE)` a line.
const PROFILES: &str = "/sys/kernel/security/apparmor/profiles";

/// `apparmor_parser`, where Debian, Ubuntu and SUSE put it, or on `PATH`.
pub fn parser() -> Option<PathBuf> {
    let fixed = ["/sbin/apparmor_parser", "/usr/sbin/apparmor_parser"];
    let on_path = std::env::var_os("PATH")
        .map(|p| {
            std::env::split_paths(&p)
                .map(|d| d.join("apparmor_parser"))
                .collect::<Vec<_>>()
        })
        .unwrap_or_default();
    fixed
        .iter()
        .map(PathBuf::from)
        .chain(on_path)
        .find(|p| p.is_file())
}

/// The profile a container runs under (None: unconfined), checked as CreateContainer needs
/// it; loads `berth-default` the first time it is needed.
pub fn profile_for(a: &AppArmor, privileged: bool) -> Result<Option<String>, Status> {
    let enabled = berth_runtime::apparmor::enabled();
    let not_enabled = |what: &str| {
        Status::failed_precondition(format!(
            "AppArmor profile {what}: AppArmor is not enabled on this host"
        ))
    };
    match a {
        AppArmor::Unconfined => Ok(None),
        AppArmor::Unset | AppArmor::RuntimeDefault if privileged => Ok(None),
        AppArmor::Unset if !enabled || parser().is_none() => Ok(None),
        AppArmor::RuntimeDefault if !enabled => Err(not_enabled("runtime/default")),
        AppArmor::Unset | AppArmor::RuntimeDefault => {
            load_default()?;
            Ok(Some(DEFAULT_PROFILE.into()))
        }
        AppArmor::Localhost(name) => {
            if !enabled {
                return Err(not_enabled(&format!("localhost/{name}")));
            }
            let list = std::fs::read_to_string(PROFILES)
                .map_err(|e| Status::internal(format!("read {PROFILES}: {e}")))?;
            if !is_loaded(&list, name) {
                return Err(Status::failed_precondition(format!(
                    "AppArmor profile {name:?} is not loaded (apparmor_parser -r FILE loads it)"
                )));
            }
            Ok(Some(name.clone()))
        }
    }
}

/// Whether `name` is in the kernel's profile list `list` (lines `NAME (MODE)`).
pub fn is_loaded(list: &str, name: &str) -> bool {
    list.lines()
        .filter_map(|l| l.rsplit_once(" ("))
        .any(|(n, _)| n == name)
}

/// Loads (or replaces) `berth-default`, once per berthd; a failure is tried again next time.
fn load_default() -> Result<(), Status> {
    static LOADED: Mutex<bool> = Mutex::new(false);
    let mut loaded = LOADED.lock().unwrap_or_else(|e| e.into_inner());
    if *loaded {
        return Ok(());
    }
    let fail =
        |e: String| Status::internal(format!("load AppArmor profile {DEFAULT_PROFILE}: {e}"));
    let parser = parser().ok_or_else(|| fail("apparmor_parser is not installed".into()))?;
    let mut child = Command::new(&parser)
        .args(["-K", "-r"])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| fail(format!("run {}: {e}", parser.display())))?;
    let written = child
        .stdin
        .take()
        .expect("piped")
        .write_all(DEFAULT_PROFILE_TEXT.as_bytes());
    let out = child
        .wait_with_output()
        .map_err(|e| fail(format!("wait for {}: {e}", parser.display())))?;
    if let Err(e) = written {
        return Err(fail(format!("write to {}: {e}", parser.display())));
    }
    if !out.status.success() {
        let err = String::from_utf8_lossy(&out.stderr);
        return Err(fail(err.trim().replace('\n', "; ")));
    }
    *loaded = true;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loaded_profiles_are_matched_by_whole_name() {
        let list = "berth-default (enforce)\nnginx profile (complain)\n/usr/bin/man (enforce)\n";
        assert!(is_loaded(list, "berth-default"));
        assert!(is_loaded(list, "nginx profile"));
        assert!(is_loaded(list, "/usr/bin/man"));
        assert!(!is_loaded(list, "berth"));
        assert!(!is_loaded(list, "nginx"));
        assert!(!is_loaded("", "berth-default"));
    }

    #[test]
    fn unconfined_and_privileged_defaults_need_nothing() {
        assert_eq!(profile_for(&AppArmor::Unconfined, false).unwrap(), None);
        assert_eq!(profile_for(&AppArmor::Unset, true).unwrap(), None);
        assert_eq!(profile_for(&AppArmor::RuntimeDefault, true).unwrap(), None);
    }

    /// On a host without AppArmor (CI's): nothing asked runs unconfined; a profile asked for by
    /// name or as runtime/default is refused, saying why.
    #[test]
    fn without_apparmor_only_unset_runs() {
        if berth_runtime::apparmor::enabled() {
            return;
        }
        assert_eq!(profile_for(&AppArmor::Unset, false).unwrap(), None);
        for (a, what) in [
            (AppArmor::RuntimeDefault, "runtime/default"),
            (AppArmor::Localhost("p1".into()), "localhost/p1"),
        ] {
            let e = profile_for(&a, false).unwrap_err();
            assert_eq!(e.code(), tonic::Code::FailedPrecondition);
            assert!(
                e.message().contains(what) && e.message().contains("not enabled"),
                "{e:?}"
            );
        }
    }

    /// The default profile is valid AppArmor policy: apparmor_parser compiles it without
    /// loading it (scripts/setup.sh installs the parser).
    #[test]
    fn the_default_profile_compiles() {
        let parser = parser().expect("apparmor_parser is not installed: run scripts/setup.sh");
        let dir = std::env::temp_dir().join(format!("berth-aa-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("berth-default");
        std::fs::write(&file, DEFAULT_PROFILE_TEXT).unwrap();
        let out = Command::new(parser)
            .args(["-Q", "-K", "-d"])
            .arg(&file)
            .output()
            .unwrap();
        let _ = std::fs::remove_dir_all(&dir);
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(stdout.contains("Name:\t\tberth-default"), "{stdout}");
    }
}
