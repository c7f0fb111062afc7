//! The container's init: what the cloned child does between `clone` and `execve`.
//!
//! It runs in the new namespaces, single-threaded, and reports every failure to the parent over
//! the sync channel (`crate::sync`) so that `create` fails with the real reason. After `Ready` it
//! waits on the start socket; `start` connects, and anything the init writes back on that
//! connection is an error (the connection is close-on-exec: EOF means the program was exec'd).

use super::setup;
use crate::namespaces::Plan;
use crate::seccomp::Filter;
use crate::sync::{Channel, Msg};
use crate::{hooks, rootfs, tty, Error, Result};
use nix::sched::{unshare, CloneFlags};
use oci_spec::runtime::{LinuxNamespaceType, Spec};
use std::io::{Read, Write};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd};
use std::path::Path;
use std::sync::atomic::{AtomicI32, Ordering};

/// What the init needs, prepared by `create` before the clone.
pub struct InitArgs<'a> {
    pub spec: &'a Spec,
    /// The bundle directory (absolute): relative bind sources are its, as in runc.
    pub bundle: &'a Path,
    pub rootfs: &'a Path,
    pub plan: &'a Plan,
    /// Namespaces the init unshares itself (after joining those of `plan.join`).
    pub unshare: CloneFlags,
    /// Listening socket `start` connects to.
    pub start_sock: OwnedFd,
    pub no_pivot: bool,
    /// Whether to create a pty and send its master to the parent.
    pub terminal: bool,
    pub seccomp: Option<Filter>,
    pub preserve_fds: i32,
    /// Whether the parent must run prestart/createRuntime hooks.
    pub runtime_hooks: bool,
    /// The state JSON handed to createContainer/startContainer hooks.
    pub state_json: String,
    /// Name of the new session keyring (`None` with `--no-new-keyring`).
    pub keyring: Option<String>,
    /// The init moves itself into these v1 cgroups first thing (see `Cgroup::join_self_v1`).
    pub join_cgroup_v1: Option<crate::cgroups::Cgroup>,
}

/// Never returns: execs the container's program, or exits 1 after reporting the error.
pub fn run(args: InitArgs<'_>, chan: Channel) -> ! {
    // SAFETY: prctl with integer arguments. Not dumpable: other processes of the container
    // cannot open /proc/<pid>/exe (the runtime binary) while this process is still the runtime
    // (CVE-2019-5736 class). execve of the user's program restores the default.
    unsafe { libc::prctl(libc::PR_SET_DUMPABLE, 0, 0, 0, 0) };
    setup::reset_signals();
    report_panics_on(&chan);
    let mut start_conn = None;
    match init(args, &chan, &mut start_conn) {
        Ok(never) => match never {},
        Err(e) => {
            report(&one_line(&e.to_string()));
            // SAFETY: _exit skips atexit handlers and destructors of the parent's copy of state.
            unsafe { libc::_exit(1) }
        }
    }
}

/// Makes a panic a failure like any other: its message goes where errors go (the sync channel
/// `chan`, later the start connection), as one line, and the process exits at once. Release
/// builds abort on panic, so nothing may rely on unwinding.
fn report_panics_on(chan: &Channel) {
    CHAN_FD.store(chan.as_fd().as_raw_fd(), Ordering::Relaxed);
    std::panic::set_hook(Box::new(|info| {
        let place = info
            .location()
            .map(|l| format!(" at {}:{}", l.file(), l.line()))
            .unwrap_or_default();
        let payload = info.payload();
        let what = payload
            .downcast_ref::<&str>()
            .copied()
            .or_else(|| payload.downcast_ref::<String>().map(String::as_str))
            .unwrap_or("(no message)");
        report(&one_line(&format!(
            "container init panicked{place}: {what}"
        )));
        // SAFETY: _exit skips atexit handlers and destructors of the parent's copy of state.
        unsafe { libc::_exit(1) }
    }));
}

/// Where a failure of the init goes, as raw descriptors so that the panic hook can reach them:
/// the sync channel until `start` connects, then that connection (`create` has returned by
/// then). Both stay open until the init execs or exits.
static CHAN_FD: AtomicI32 = AtomicI32::new(-1);
static START_FD: AtomicI32 = AtomicI32::new(-1);

fn report(msg: &str) {
    let start = START_FD.load(Ordering::Relaxed);
    let chan = CHAN_FD.load(Ordering::Relaxed);
    if start >= 0 {
        // SAFETY: START_FD is the accepted start connection, owned by `run`'s frame for as long
        // as the init lives; ManuallyDrop keeps this borrowed copy from closing it.
        let mut c = std::mem::ManuallyDrop::new(unsafe {
            std::os::unix::net::UnixStream::from_raw_fd(start)
        });
        let _ = c.write_all(msg.as_bytes());
    } else if chan >= 0 {
        // SAFETY: CHAN_FD is the sync channel's socket, owned by `run`'s frame until exit.
        let sock = unsafe { BorrowedFd::borrow_raw(chan) };
        let _ = crate::sync::send_on(sock, &Msg::Error(msg.into()), None);
    }
}

/// Errors are printed as one line by the caller; some system messages have several.
fn one_line(s: &str) -> String {
    s.split('\n')
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect::<Vec<_>>()
        .join(": ")
}

enum Never {}

fn init(
    a: InitArgs<'_>,
    chan: &Channel,
    start_conn: &mut Option<std::os::unix::net::UnixStream>,
) -> Result<Never> {
    let spec = a.spec;
    let process = spec.process().as_ref().expect("validated: process present");
    // runc resolves relative bind sources in the bundle (it runs there), whatever directory the
    // runtime was started in. An init born in a user namespace may not be able to enter it; it
    // then gets its bind sources from the runtime (`rootfs::sources`), and nothing else here
    // depends on the cwd.
    let _ = nix::unistd::chdir(a.bundle);

    if let Some(cg) = &a.join_cgroup_v1 {
        cg.join_self_v1()?;
    }
    let bind_sources = receive_bind_sources(chan)?;
    a.plan.join_types(&[
        LinuxNamespaceType::User,
        LinuxNamespaceType::Ipc,
        LinuxNamespaceType::Uts,
        LinuxNamespaceType::Network,
        LinuxNamespaceType::Mount,
    ])?;
    if !a.unshare.is_empty() {
        unshare(a.unshare)
            .map_err(|err| Error::Other(format!("unshare namespaces {:?}: {err}", a.unshare)))?;
        if a.unshare.contains(CloneFlags::CLONE_NEWUSER) {
            chan.send(&Msg::Proceed)?; // ask for uid/gid maps
            chan.expect(Msg::Proceed)?;
        }
    }
    if a.plan.creates(LinuxNamespaceType::User) {
        let root = nix::unistd::Uid::from_raw(0);
        let _ = nix::unistd::setresgid(
            nix::unistd::Gid::from_raw(0),
            nix::unistd::Gid::from_raw(0),
            nix::unistd::Gid::from_raw(0),
        );
        nix::unistd::setresuid(root, root, root)
            .map_err(|err| Error::Other(format!("become root in the user namespace: {err}")))?;
    }
    if a.plan.creates(LinuxNamespaceType::Network) {
        // Like runc and crun: a new network namespace gets its loopback up.
        crate::namespaces::loopback_up()?;
    }
    a.plan.join_types(&[LinuxNamespaceType::Cgroup])?;
    if a.plan.creates(LinuxNamespaceType::Cgroup) {
        // The namespace's root is the cgroup we are in when we unshare it.
        chan.wait_cgroup()?;
        unshare(CloneFlags::CLONE_NEWCGROUP)
            .map_err(|err| Error::Other(format!("unshare cgroup namespace: {err}")))?;
    }
    if a.runtime_hooks {
        chan.send(&Msg::RuntimeHooks)?;
        chan.expect(Msg::HooksDone)?;
    }
    if a.plan.creates(LinuxNamespaceType::Uts) {
        if let Some(h) = spec.hostname().as_deref().filter(|h| !h.is_empty()) {
            nix::unistd::sethostname(h)
                .map_err(|err| Error::Other(format!("sethostname {h:?}: {err}")))?;
        }
        if let Some(d) = spec.domainname().as_deref().filter(|d| !d.is_empty()) {
            let c = std::ffi::CString::new(d).unwrap_or_default();
            // SAFETY: setdomainname reads `len` bytes of a valid C string.
            if unsafe { libc::setdomainname(c.as_ptr(), d.len()) } < 0 {
                return Err(Error::Other(format!(
                    "setdomainname {d:?}: {}",
                    std::io::Error::last_os_error()
                )));
            }
        }
    }

    if a.plan.creates(LinuxNamespaceType::Mount) || a.plan.joins(LinuxNamespaceType::Mount) {
        rootfs::prepare_with(spec, a.rootfs, &bind_sources, &mut || {
            chan.wait_cgroup()
                .map_err(|err| rootfs::RootfsError::Other(err.to_string()))
        })?;
        // Hooks and everything after may look at our cgroup.
        chan.wait_cgroup()?;
        // createContainer hooks run in the rootfs, as in runc (hooks written for runc use
        // relative paths such as `./lib/...`); the runtime was started somewhere else.
        nix::unistd::chdir(a.rootfs)
            .map_err(|err| Error::Other(format!("chdir to the rootfs {:?}: {err}", a.rootfs)))?;
        let state = &a.state_json;
        let hooks_cfg = spec.hooks().as_ref();
        hooks::run_all(
            "createContainer",
            hooks_cfg.and_then(|h| h.create_container().as_ref()),
            state,
        )?;
        rootfs::pivot(a.rootfs, a.no_pivot)?;
    } else {
        return Err(Error::Other("a mount namespace is required".into()));
    }

    // SAFETY: setsid has no preconditions; it fails only if we already lead a group.
    unsafe { libc::setsid() };
    if let Some(name) = &a.keyring {
        join_session_keyring(name)?;
    }
    if a.terminal {
        let (master, slave_path, slave) = tty::open_pty()?;
        if let Some(sz) = process.console_size() {
            tty::set_size(master.as_fd(), sz.height() as u16, sz.width() as u16);
        }
        rootfs::setup_console(&slave_path)?;
        tty::make_controlling(&slave)?;
        chan.send_with_fd(&Msg::ConsoleFd, Some(master.as_fd()))?;
    }

    write_sysctls(spec)?;
    // Like runc: a missing cwd is created (before the root may turn read-only).
    let cwd = process.cwd();
    if !cwd.as_os_str().is_empty() && !cwd.exists() {
        std::fs::create_dir_all(cwd)
            .map_err(|err| Error::Other(format!("create cwd {}: {err}", cwd.display())))?;
    }
    rootfs::finalize(spec)?;
    setup::set_personality(spec)?;
    let denies_setgroups = std::fs::read_to_string("/proc/self/setgroups")
        .map(|s| s.trim() == "deny")
        .unwrap_or(false);
    // Seccomp goes as close to execve as possible, so that profiles need to allow few of the
    // runtime's own syscalls. Without no_new_privs, loading needs CAP_SYS_ADMIN, which the
    // process may be about to drop: then load it now, before the uid and capabilities change
    // (as runc does). A notify listener must exist before we report ready.
    let mut seccomp = a.seccomp;
    let nnp = process.no_new_privileges().unwrap_or(false);
    let load_seccomp = |seccomp: &mut Option<Filter>| -> Result<()> {
        let Some(filter) = seccomp.take() else {
            return Ok(());
        };
        let fd = filter.load()?;
        if let Some(fd) = fd {
            chan.send_with_fd(&Msg::SeccompFd, Some(fd.as_fd()))?;
        }
        Ok(())
    };
    if !nnp {
        load_seccomp(&mut seccomp)?;
    }
    let mut warnings = setup::apply_process_attributes(process, denies_setgroups)?;
    let program = setup::find_program(process)?;
    if seccomp.as_ref().is_some_and(|f| f.wants_listener()) {
        load_seccomp(&mut seccomp)?;
    }
    setup::close_fds_on_exec(3 + a.preserve_fds);
    warnings.retain(|w| !w.is_empty());
    chan.send(&Msg::Ready { warnings })?;

    // Wait for `start`.
    let conn = loop {
        // SAFETY: accept4 on our listening socket; the returned fd is owned below.
        let fd = unsafe {
            libc::accept4(
                a.start_sock.as_raw_fd(),
                std::ptr::null_mut(),
                std::ptr::null_mut(),
                libc::SOCK_CLOEXEC,
            )
        };
        if fd >= 0 {
            // SAFETY: a fresh descriptor from accept4.
            break unsafe { std::os::unix::net::UnixStream::from_raw_fd(fd) };
        }
        let err = std::io::Error::last_os_error();
        if err.kind() != std::io::ErrorKind::Interrupted {
            return Err(Error::Other(format!("wait for start: {err}")));
        }
    };
    drop(a.start_sock);
    START_FD.store(conn.as_raw_fd(), Ordering::Relaxed);
    let conn = start_conn.insert(conn);
    let mut byte = [0u8; 1];
    if conn
        .read(&mut byte)
        .map_err(|err| Error::Other(format!("wait for start: {err}")))?
        != 1
    {
        // SAFETY: `start` went away without releasing us; exit quietly.
        unsafe { libc::_exit(1) };
    }
    // As runc: the filter, then the startContainer hooks (so they run under it), then exec.
    if let Some(f) = seccomp {
        f.load()?;
    }
    let hooks_cfg = spec.hooks().as_ref();
    hooks::run_all(
        "startContainer",
        hooks_cfg.and_then(|h| h.start_container().as_ref()),
        &a.state_json,
    )?;
    Err(setup::exec(&program))
}

/// Waits for the first `Proceed`, keeping the bind sources the parent sends before it.
fn receive_bind_sources(chan: &Channel) -> Result<rootfs::BindSources> {
    let mut sources = rootfs::BindSources::none();
    loop {
        match chan.recv()? {
            Some((Msg::BindSource { index }, Some(fd))) => sources.insert(index, fd),
            Some((Msg::Proceed, _)) => return Ok(sources),
            Some((Msg::Error(e), _)) => return Err(Error::Other(e)),
            Some((m, _)) => {
                return Err(Error::Other(format!(
                    "protocol error: expected Proceed, got {m:?}"
                )))
            }
            None => {
                return Err(Error::Other(
                    "protocol error: expected Proceed, the other side closed".into(),
                ))
            }
        }
    }
}

/// A new session keyring, so the container does not see the caller's keys (as runc does).
/// Kernels without keyrings (ENOSYS) or that refuse it in a user namespace are fine.
fn join_session_keyring(name: &str) -> Result<()> {
    let c = std::ffi::CString::new(name)
        .map_err(|_| Error::Other("keyring name has a NUL byte".into()))?;
    const KEYCTL_JOIN_SESSION_KEYRING: libc::c_long = 1;
    // SAFETY: keyctl(JOIN_SESSION_KEYRING, name) reads a valid C string.
    let r = unsafe { libc::syscall(libc::SYS_keyctl, KEYCTL_JOIN_SESSION_KEYRING, c.as_ptr()) };
    if r < 0 {
        let err = std::io::Error::last_os_error();
        if !matches!(
            err.raw_os_error(),
            Some(libc::ENOSYS | libc::EACCES | libc::EPERM | libc::EDQUOT)
        ) {
            return Err(Error::Other(format!("join session keyring: {err}")));
        }
    }
    Ok(())
}

/// `linux.sysctl`, written through the container's /proc.
fn write_sysctls(spec: &Spec) -> Result<()> {
    let Some(sysctls) = spec.linux().as_ref().and_then(|l| l.sysctl().as_ref()) else {
        return Ok(());
    };
    for (k, v) in sysctls {
        if k.contains("..") || k.contains('/') && k.contains('.') {
            return Err(Error::Other(format!("sysctl {k:?}: invalid name")));
        }
        let path = format!("/proc/sys/{}", k.replace('.', "/"));
        std::fs::write(&path, v).map_err(|err| Error::Other(format!("sysctl {k}={v}: {err}")))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_panic_reaches_the_parent_as_one_line() {
        let (parent, child) = Channel::pair().unwrap();
        let r = crate::seccomp::in_child::run(move || {
            report_panics_on(&child);
            let v: Vec<u8> = Vec::new();
            let _ = v.get(7).expect("no byte 7\nin the buffer");
            Ok(())
        });
        assert!(r.unwrap_err().contains("exited 1"));
        let (msg, _) = parent.recv().unwrap().expect("a message before EOF");
        let Msg::Error(e) = msg else {
            panic!("not an error: {msg:?}")
        };
        assert!(
            e.starts_with("container init panicked at runtime/src/process/init.rs:"),
            "{e}"
        );
        assert!(e.ends_with(": no byte 7: in the buffer"), "{e}");
    }

    #[test]
    fn errors_are_one_line() {
        assert_eq!(one_line("a\n  b\n\nc\n"), "a: b: c");
    }
}
