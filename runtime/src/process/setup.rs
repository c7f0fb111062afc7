//! The last steps before execve, shared by a container's init and by `exec`: process
//! attributes (rlimits, no_new_privs, capabilities, user, umask, cwd) and finding the program.

use crate::{capabilities, rlimits, Error, Result};
use oci_spec::runtime::{LinuxCapabilities, LinuxPersonalityDomain, Process, Spec};
use std::ffi::CString;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

const DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// The program to exec, with its argv and envp.
pub struct Program {
    pub path: CString,
    pub argv: Vec<CString>,
    pub envp: Vec<CString>,
}

fn cstr(s: &str, what: &str) -> Result<CString> {
    CString::new(s).map_err(|_| Error::Other(format!("{what} {s:?} contains a NUL byte")))
}

/// Finds `args[0]` (in `PATH` of the process env when it has no `/`), as runc does before it
/// waits for `start`, so that "not found" is reported by `create`.
pub fn find_program(process: &Process) -> Result<Program> {
    let args = process.args().as_deref().unwrap_or_default();
    let Some(arg0) = args.first() else {
        return Err(Error::Other("process.args is empty".into()));
    };
    let env = process.env().as_deref().unwrap_or_default();
    let path = if arg0.contains('/') {
        PathBuf::from(arg0)
    } else {
        let search = env
            .iter()
            .find_map(|e| e.strip_prefix("PATH="))
            .unwrap_or(DEFAULT_PATH);
        search
            .split(':')
            .map(|d| Path::new(if d.is_empty() { "." } else { d }).join(arg0))
            .find(|p| is_executable(p))
            .ok_or_else(|| {
                Error::Other(format!(
                    "exec: {arg0:?}: executable file not found in $PATH"
                ))
            })?
    };
    if !is_executable(&path) {
        let why = match std::fs::metadata(&path) {
            Err(e) => e.to_string(),
            Ok(m) if m.is_dir() => "is a directory".into(),
            Ok(_) => "permission denied".into(),
        };
        return Err(Error::Other(format!("exec: {arg0:?}: {why}")));
    }
    Ok(Program {
        path: CString::new(path.as_os_str().as_bytes())
            .map_err(|_| Error::Other("program path has a NUL byte".into()))?,
        argv: args
            .iter()
            .map(|a| cstr(a, "argument"))
            .collect::<Result<_>>()?,
        envp: env.iter().map(|e| cstr(e, "env")).collect::<Result<_>>()?,
    })
}

fn is_executable(p: &Path) -> bool {
    let Ok(c) = CString::new(p.as_os_str().as_bytes()) else {
        return false;
    };
    // SAFETY: access() reads a valid NUL-terminated path.
    let ok = unsafe { libc::access(c.as_ptr(), libc::X_OK) } == 0;
    ok && std::fs::metadata(p).map(|m| m.is_file()).unwrap_or(false)
}

/// `linux.personality`.
pub fn set_personality(spec: &Spec) -> Result<()> {
    let Some(p) = spec.linux().as_ref().and_then(|l| l.personality().as_ref()) else {
        return Ok(());
    };
    let persona = match p.domain() {
        LinuxPersonalityDomain::PerLinux => 0x0000,
        LinuxPersonalityDomain::PerLinux32 => 0x0008,
    };
    // SAFETY: personality() takes a plain integer.
    if unsafe { libc::personality(persona) } < 0 {
        return Err(Error::Other(format!(
            "personality: {}",
            std::io::Error::last_os_error()
        )));
    }
    Ok(())
}

/// The AppArmor profile for the coming exec, rlimits, no_new_privs, cwd, capabilities,
/// uid/gid/groups and umask, in that order (the cwd entered again as the user if root may not).
/// Returns warnings for settings the host did not allow.
pub fn apply_process_attributes(
    process: &Process,
    userns_denies_setgroups: bool,
) -> Result<Vec<String>> {
    // While still root and before no_new_privs, as runc does.
    if let Some(p) = process
        .apparmor_profile()
        .as_ref()
        .filter(|p| !p.is_empty())
    {
        crate::apparmor::apply_on_exec(p).map_err(Error::Other)?;
    }
    let mut warnings = rlimits::apply(process.rlimits().as_deref().unwrap_or_default())?;
    if process.no_new_privileges().unwrap_or(false) {
        // SAFETY: prctl with integer arguments.
        if unsafe { libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) } < 0 {
            return Err(Error::Other(format!(
                "set no_new_privs: {}",
                std::io::Error::last_os_error()
            )));
        }
    }
    // The cwd is entered while we are still root with every capability, so a directory only
    // root may enter works (as in runc). If even root is refused (a directory on a root-squashed
    // or id-mapped mount that only the container user may enter), try again as that user.
    let cwd = process.cwd();
    let cwd_failed = |e: nix::errno::Errno| {
        Error::Other(format!(
            "chdir to cwd {cwd:?} set in config.json failed: {e}"
        ))
    };
    let chdir_as_user = !cwd.as_os_str().is_empty()
        && match nix::unistd::chdir(cwd.as_path()) {
            Ok(()) => false,
            Err(nix::errno::Errno::EACCES | nix::errno::Errno::EPERM) => true,
            Err(e) => return Err(cwd_failed(e)),
        };

    let empty = LinuxCapabilities::default();
    let empty = clear_caps(empty);
    let caps = process.capabilities().as_ref().unwrap_or(&empty);
    let unavailable = capabilities::unavailable(caps);
    warnings.extend(capabilities::unavailable_warning(unavailable));
    capabilities::drop_bounding(caps)?;

    let user = process.user();
    chown_stdio(user.uid())?;
    if let Some(gids) = user.additional_gids() {
        if !userns_denies_setgroups {
            let gids: Vec<nix::unistd::Gid> = gids
                .iter()
                .map(|g| nix::unistd::Gid::from_raw(*g))
                .collect();
            nix::unistd::setgroups(&gids).map_err(|e| {
                Error::Other(format!("setgroups {:?}: {e}", user.additional_gids()))
            })?;
        }
    } else if !userns_denies_setgroups {
        let _ = nix::unistd::setgroups(&[]);
    }
    // SAFETY: prctl with integer arguments: keep permitted caps across setuid.
    unsafe { libc::prctl(libc::PR_SET_KEEPCAPS, 1, 0, 0, 0) };
    let gid = nix::unistd::Gid::from_raw(user.gid());
    nix::unistd::setresgid(gid, gid, gid)
        .map_err(|e| Error::Other(format!("setgid {}: {e}", user.gid())))?;
    let uid = nix::unistd::Uid::from_raw(user.uid());
    nix::unistd::setresuid(uid, uid, uid)
        .map_err(|e| Error::Other(format!("setuid {}: {e}", user.uid())))?;
    if chdir_as_user {
        nix::unistd::chdir(cwd.as_path()).map_err(cwd_failed)?;
    }
    // SAFETY: as above.
    unsafe { libc::prctl(libc::PR_SET_KEEPCAPS, 0, 0, 0, 0) };
    warnings.extend(capabilities::apply_with_warnings(caps, unavailable)?);

    // SAFETY: umask cannot fail.
    unsafe { libc::umask(user.umask().unwrap_or(0o022) as libc::mode_t) };
    Ok(warnings)
}

/// Gives the container user its stdio (runc's `fixStdioPermissions`): a terminal, pipe or file
/// on fd 0–2 not yet owned by `uid` is chowned to it (keeping its group, which for a pty is the
/// devpts `gid=` option), so that the process can reopen `/dev/stdout` or `/proc/self/fd/1` and
/// use its own terminal. `/dev/null` is left alone, and so is what we may not change: a group
/// not mapped in a user namespace (EINVAL), an owner we have no right over (EPERM), a
/// read-only filesystem (EROFS).
fn chown_stdio(uid: u32) -> Result<()> {
    // SAFETY: stat is plain data; zeroed is a valid value that the calls below overwrite.
    let mut null: libc::stat = unsafe { std::mem::zeroed() };
    // SAFETY: stat writes into `null`, which outlives the call; the path is NUL-terminated.
    let null_rdev =
        (unsafe { libc::stat(c"/dev/null".as_ptr(), &mut null) } == 0).then_some(null.st_rdev);
    for fd in 0..3 {
        // SAFETY: as above.
        let mut st: libc::stat = unsafe { std::mem::zeroed() };
        // SAFETY: fstat writes into `st`; a closed descriptor only gives EBADF.
        if unsafe { libc::fstat(fd, &mut st) } < 0 {
            continue;
        }
        let is_null = st.st_mode & libc::S_IFMT == libc::S_IFCHR && Some(st.st_rdev) == null_rdev;
        if st.st_uid == uid || is_null {
            continue;
        }
        // SAFETY: fchown on a standard descriptor with plain integer ids.
        if unsafe { libc::fchown(fd, uid, st.st_gid) } < 0 {
            let err = std::io::Error::last_os_error();
            if !matches!(
                err.raw_os_error(),
                Some(libc::EINVAL | libc::EPERM | libc::EROFS)
            ) {
                return Err(Error::Other(format!(
                    "chown stdio fd {fd} to uid {uid}: {err}"
                )));
            }
        }
    }
    Ok(())
}

fn clear_caps(c: LinuxCapabilities) -> LinuxCapabilities {
    let mut c = c;
    c.set_bounding(None);
    c.set_effective(None);
    c.set_permitted(None);
    c.set_inheritable(None);
    c.set_ambient(None);
    c
}

/// execve; returns only on failure.
pub fn exec(p: &Program) -> Error {
    let err = nix::unistd::execve(&p.path, &p.argv, &p.envp).unwrap_err();
    Error::Other(format!("exec {:?}: {err}", p.path))
}

/// Marks every descriptor from `first` up as close-on-exec, so nothing of the caller's leaks into
/// the container (CVE-2024-21626 class), and clears close-on-exec on `3..first` (`--preserve-fds`).
pub fn close_fds_on_exec(first: i32) {
    // SAFETY: close_range with CLOSE_RANGE_CLOEXEC only changes descriptor flags.
    let r = unsafe {
        libc::syscall(
            libc::SYS_close_range,
            first as u32,
            u32::MAX,
            libc::CLOSE_RANGE_CLOEXEC,
        )
    };
    if r < 0 {
        if let Ok(rd) = std::fs::read_dir("/proc/self/fd") {
            let fds: Vec<i32> = rd
                .flatten()
                .filter_map(|e| e.file_name().to_str()?.parse().ok())
                .collect();
            for fd in fds.into_iter().filter(|fd| *fd >= first) {
                // SAFETY: setting FD_CLOEXEC on a descriptor number; harmless if it is closed.
                unsafe { libc::fcntl(fd, libc::F_SETFD, libc::FD_CLOEXEC) };
            }
        }
    }
    for fd in 3..first {
        // SAFETY: clearing FD_CLOEXEC on the preserved descriptors.
        unsafe { libc::fcntl(fd, libc::F_SETFD, 0) };
    }
}

/// Gives the new process a clean signal state: every signal unblocked and at its default action.
/// The runtime blocks signals it forwards, and Rust ignores SIGPIPE; both survive execve.
pub fn reset_signals() {
    for sig in 1..libc::SIGRTMAX() {
        if sig == libc::SIGKILL || sig == libc::SIGSTOP {
            continue;
        }
        // SAFETY: restoring the default disposition of a signal number.
        unsafe { libc::signal(sig, libc::SIG_DFL) };
    }
    let _ = nix::sys::signal::SigSet::empty().thread_set_mask();
}
