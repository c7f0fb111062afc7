//! The CVE-2019-5736 class for privileged containers. Between `create` and `start` (and while
//! `exec` sets up), a container process is still this binary. It is not dumpable, so a process
//! in the container can reach it through `/proc/<pid>/exe` only with CAP_SYS_PTRACE in the
//! host's user namespace — that is, in a container granted CAP_SYS_PTRACE without a user
//! namespace. For those, and only those (the copy costs milliseconds), berth-runtime re-executes
//! itself from a sealed in-memory copy first, so that `/proc/<pid>/exe` is a file nobody can
//! write.

use anyhow::{Context, Result};
use serde_json::Value;
use std::ffi::CString;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;

const ENV: &str = "_BERTH_RUNTIME_SEALED";

/// Whether a spec (as JSON) gives its process CAP_SYS_PTRACE without a user namespace.
pub fn at_risk(spec: &Value, extra_caps: &[String]) -> bool {
    let userns = spec
        .pointer("/linux/namespaces")
        .and_then(Value::as_array)
        .is_some_and(|ns| ns.iter().any(|n| n["type"] == "user"));
    if userns {
        return false;
    }
    let in_spec = spec
        .pointer("/process/capabilities")
        .and_then(Value::as_object)
        .is_some_and(|sets| {
            sets.values()
                .filter_map(Value::as_array)
                .flatten()
                .any(|c| c == "CAP_SYS_PTRACE")
        });
    in_spec
        || extra_caps
            .iter()
            .any(|c| c.to_uppercase().trim_start_matches("CAP_") == "SYS_PTRACE")
}

/// Whether this process already runs from the sealed copy.
pub fn is_sealed() -> bool {
    std::env::var_os(ENV).is_some()
}

/// Replaces this process with a sealed copy of itself, same arguments. Returns only on error.
pub fn reexec() -> Result<()> {
    let name = c"berth-runtime";
    // SAFETY: memfd_create with a valid name and flags; the fd is owned below.
    let fd =
        unsafe { libc::memfd_create(name.as_ptr(), libc::MFD_CLOEXEC | libc::MFD_ALLOW_SEALING) };
    if fd < 0 {
        return Err(std::io::Error::last_os_error()).context("memfd_create");
    }
    // SAFETY: a fresh fd from memfd_create.
    let memfd = unsafe { OwnedFd::from_raw_fd(fd) };
    let mut src = std::fs::File::open("/proc/self/exe").context("open /proc/self/exe")?;
    let mut dst = std::fs::File::from(memfd.try_clone()?);
    std::io::copy(&mut src, &mut dst).context("copy the runtime binary")?;
    let seals = libc::F_SEAL_SEAL | libc::F_SEAL_SHRINK | libc::F_SEAL_GROW | libc::F_SEAL_WRITE;
    // SAFETY: fcntl on our memfd.
    if unsafe { libc::fcntl(memfd.as_raw_fd(), libc::F_ADD_SEALS, seals) } < 0 {
        return Err(std::io::Error::last_os_error()).context("seal the copy");
    }
    drop(dst);
    let args: Vec<CString> = std::env::args_os()
        .map(|a| CString::new(a.as_bytes()).expect("no NUL in argv"))
        .collect();
    let mut env: Vec<CString> = std::env::vars_os()
        .map(|(k, v)| {
            let mut b = k.as_bytes().to_vec();
            b.push(b'=');
            b.extend_from_slice(v.as_bytes());
            CString::new(b).expect("no NUL in environment")
        })
        .collect();
    env.push(CString::new(format!("{ENV}=1")).expect("constant"));
    let argv: Vec<*const libc::c_char> = args
        .iter()
        .map(|a| a.as_ptr())
        .chain([std::ptr::null()])
        .collect();
    let envp: Vec<*const libc::c_char> = env
        .iter()
        .map(|e| e.as_ptr())
        .chain([std::ptr::null()])
        .collect();
    // SAFETY: execveat with an fd we own, an empty path and AT_EMPTY_PATH; argv and envp are
    // NULL-terminated arrays of valid C strings that outlive the call.
    unsafe {
        libc::syscall(
            libc::SYS_execveat,
            memfd.as_raw_fd(),
            c"".as_ptr(),
            argv.as_ptr(),
            envp.as_ptr(),
            libc::AT_EMPTY_PATH,
        )
    };
    Err(std::io::Error::last_os_error()).context("re-execute from the sealed copy")
}
