//! `create`: clone the init into its namespaces and cgroup, drive it through set-up over the sync
//! channel, and return with it waiting for `start`.

use crate::cgroups::Cgroup;
use crate::error::IoContext;
use crate::namespaces::Plan;
use crate::process::clone::{clone, Forked};
use crate::process::init::{self, InitArgs};
use crate::seccomp::Filter;
use crate::state::{State, Status, START_SOCKET};
use crate::sync::{Channel, Msg};
use crate::{hooks, rlimits, rootfs, seccomp, spec, state, tty, utils, Error, Result};
use nix::sched::CloneFlags;
use oci_spec::runtime::{LinuxIdMapping, LinuxNamespaceType, Spec};
use std::os::fd::{AsFd, AsRawFd, FromRawFd, OwnedFd};
use std::path::{Path, PathBuf};

#[derive(Debug, Clone, Default)]
pub struct CreateOpts {
    pub root: PathBuf,
    pub id: String,
    pub bundle: PathBuf,
    pub pid_file: Option<PathBuf>,
    pub console_socket: Option<PathBuf>,
    pub no_pivot: bool,
    pub preserve_fds: i32,
    pub no_new_keyring: bool,
}

/// Undoes a half-done `create` unless disarmed.
struct Cleanup<'a> {
    dir: &'a Path,
    pid: Option<i32>,
    cgroup: Option<Cgroup>,
    armed: bool,
}

impl Drop for Cleanup<'_> {
    fn drop(&mut self) {
        if !self.armed {
            return;
        }
        if let Some(pid) = self.pid {
            let p = nix::unistd::Pid::from_raw(pid);
            let _ = nix::sys::signal::kill(p, nix::sys::signal::Signal::SIGKILL);
            let _ = nix::sys::wait::waitpid(p, None);
        }
        if let Some(cg) = &self.cgroup {
            if let Ok(pids) = cg.pids() {
                for pid in pids {
                    let _ = nix::sys::signal::kill(
                        nix::unistd::Pid::from_raw(pid),
                        nix::sys::signal::Signal::SIGKILL,
                    );
                }
            }
            let _ = cg.destroy();
        }
        let _ = std::fs::remove_dir_all(self.dir);
    }
}

/// Creates the container. On success the init is waiting for `start` and the state is saved;
/// on failure nothing is left behind (state dir, cgroup, process).
pub fn create(opts: &CreateOpts) -> Result<State> {
    state::validate_id(&opts.id)?;
    let bundle = opts.bundle.canonicalize().io_ctx("bundle", &opts.bundle)?;
    let spec = spec::load(&bundle)?;
    let rootfs = spec::validate(&spec, &bundle)?;
    let process = spec.process().as_ref().expect("validated");
    let terminal = process.terminal().unwrap_or(false);
    if terminal && opts.console_socket.is_none() {
        return Err(Error::Other(
            "process.terminal is true: --console-socket is required".into(),
        ));
    }

    std::fs::create_dir_all(&opts.root).io_ctx("create root", &opts.root)?;
    let dir = State::dir(&opts.root, &opts.id);
    match std::fs::create_dir(&dir) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
            return Err(Error::AlreadyExists(opts.id.clone()))
        }
        Err(e) => return Err(e).io_ctx("create state dir", &dir),
    }
    let mut cleanup = Cleanup {
        dir: &dir,
        pid: None,
        cgroup: None,
        armed: true,
    };

    let linux = spec.linux().as_ref();
    let cgroup = Cgroup::resolve(linux.and_then(|l| l.cgroups_path().as_deref()), &opts.id)?;
    if let Some(w) = cgroup.check_unused()? {
        super::warn(&w);
    }
    cgroup.create()?;
    cleanup.cgroup = Some(cgroup.clone());
    if let Some(res) = linux.and_then(|l| l.resources().as_ref()) {
        for w in cgroup.apply(res)? {
            super::warn(&w);
        }
    }
    let filter = match linux.and_then(|l| l.seccomp().as_ref()) {
        Some(p) => Some(Filter::build(p)?),
        None => None,
    };

    let plan = Plan::from_spec(&spec)?;
    let start_sock = listen_start_socket(&dir)?;
    let (mut parent_chan, mut child_chan) = Channel::pair()?;
    let min_fd = 3 + opts.preserve_fds;
    parent_chan.move_above(min_fd)?;
    child_chan.move_above(min_fd)?;
    let start_sock = dup_above(start_sock, min_fd)?;

    // Namespaces that must exist before the init does: PID (joined by the parent so that the
    // child is born in it) and time (offsets must be written before any process enters it).
    let restore = ParentNs::enter(&plan, &spec)?;
    let joins_in_child = plan
        .join
        .iter()
        .any(|(t, _, _)| !matches!(t, LinuxNamespaceType::Pid | LinuxNamespaceType::Time));
    let timens = CloneFlags::from_bits_retain(libc::CLONE_NEWTIME);
    let in_child = plan.new - CloneFlags::CLONE_NEWCGROUP - timens;
    let (clone_flags, unshare) = if joins_in_child {
        (
            in_child & CloneFlags::CLONE_NEWPID,
            in_child - CloneFlags::CLONE_NEWPID,
        )
    } else {
        (in_child, CloneFlags::empty())
    };
    let cg_fd = cgroup.clone_into_fd();
    let state_json_creating = |pid: i32| {
        let st = provisional_state(opts, &bundle, &rootfs, &spec, &cgroup, pid);
        st.public_json(Status::Creating)
    };
    let runtime_hooks = spec.hooks().as_ref().is_some_and(|h| {
        #[allow(deprecated)]
        let n = h.prestart().as_ref().map_or(0, |v| v.len())
            + h.create_runtime().as_ref().map_or(0, |v| v.len());
        n > 0
    });

    let forked = match clone(clone_flags, cg_fd.as_ref().map(|f| f.as_fd())) {
        Err(_) if cg_fd.is_some() => clone(clone_flags, None).map(|f| (f, false)),
        r => r.map(|f| (f, cg_fd.is_some())),
    };
    let (forked, in_cgroup) = match forked {
        Ok(f) => f,
        Err(e) => {
            restore.restore();
            return Err(e);
        }
    };
    // Where CLONE_INTO_CGROUP does not reach (v1 hierarchies), the init joins by itself,
    // unless it was born in a new user namespace that gives it no right to (then we move it).
    let self_join = Cgroup::host_has_v1() && !clone_flags.contains(CloneFlags::CLONE_NEWUSER);
    let pid = match forked {
        Forked::Child => {
            drop(parent_chan);
            let args = InitArgs {
                spec: &spec,
                bundle: &bundle,
                rootfs: &rootfs,
                plan: &plan,
                unshare,
                start_sock,
                no_pivot: opts.no_pivot,
                terminal,
                seccomp: filter,
                preserve_fds: opts.preserve_fds,
                runtime_hooks,
                state_json: state_json_creating(std::process::id() as i32),
                keyring: (!opts.no_new_keyring).then(|| format!("_ses.{}", opts.id)),
                join_cgroup_v1: self_join.then(|| cgroup.clone()),
            };
            init::run(args, child_chan)
        }
        Forked::Parent(pid) => pid,
    };
    restore.restore();
    drop(child_chan);
    drop(start_sock);
    cleanup.pid = Some(pid);

    // Until the init is ready, a step of ours that fails because the init died (its /proc
    // files gone, a send to a closed socket) reports the init's own error instead.
    let drive = || -> Result<State> {
        if clone_flags.contains(CloneFlags::CLONE_NEWUSER) {
            write_id_maps(pid, &spec)?;
            // The init, born in a user namespace, may not reach bind sources that only the
            // host's root may: open them for it in its mount namespace (as runc does).
            if clone_flags.contains(CloneFlags::CLONE_NEWNS) && rootfs::sources::wanted(&spec) {
                rootfs::sources::open_in_mount_ns(&spec, &bundle, pid, &|index, fd| {
                    let _ = parent_chan.send_with_fd(&Msg::BindSource { index }, Some(fd));
                });
            }
        }
        // Let the init start on its namespaces and mounts while we put it in its cgroup: on cgroup
        // v1 the first write to cgroup.procs waits out an RCU grace period (milliseconds), and the
        // init has work to do meanwhile. It waits for `CgroupJoined` before anything that depends
        // on its cgroup (a cgroup namespace, the cgroup mount, hooks, reporting ready).
        // A failed send means the init is gone; its error (or exit) is read in the loop below.
        let _ = parent_chan.send(&Msg::Proceed);
        match (in_cgroup, self_join) {
            (true, true) => {}
            (true, false) => cgroup.add_pid_v1(pid)?,
            // No CLONE_INTO_CGROUP (an old kernel): the unified hierarchy is ours to do.
            (false, true) => cgroup.add_pid_unified(pid)?,
            (false, false) => cgroup.add_pid(pid)?,
        }
        if let Some(adj) = process.oom_score_adj() {
            if let Some(w) = rlimits::set_oom_score_adj(pid, adj)? {
                super::warn(&w);
            }
        }
        let st = provisional_state(opts, &bundle, &rootfs, &spec, &cgroup, pid);
        st.save(&opts.root)?;
        let _ = parent_chan.send(&Msg::CgroupJoined);

        loop {
            let Some((msg, fd)) = parent_chan.recv()? else {
                return Err(Error::Other(format!(
                    "container init exited before it was ready{}",
                    exit_reason(pid)
                )));
            };
            match msg {
                Msg::Proceed => {
                    // The init unshared a user namespace itself and asks for its maps.
                    write_id_maps(pid, &spec)?;
                    parent_chan.send(&Msg::Proceed)?;
                }
                Msg::RuntimeHooks => {
                    let json = st.public_json(Status::Creating);
                    let h = spec.hooks().as_ref();
                    #[allow(deprecated)]
                    let pre = h.and_then(|h| h.prestart().as_ref());
                    let dir = Some(bundle.as_path());
                    let res = hooks::run_all_in("prestart", pre, &json, dir).and_then(|_| {
                        hooks::run_all_in(
                            "createRuntime",
                            h.and_then(|h| h.create_runtime().as_ref()),
                            &json,
                            dir,
                        )
                    });
                    if let Err(e) = res {
                        let _ = parent_chan.send(&Msg::Error(e.to_string()));
                        return Err(e.into());
                    }
                    parent_chan.send(&Msg::HooksDone)?;
                }
                Msg::ConsoleFd => {
                    let fd = fd.ok_or_else(|| Error::Other("init sent no pty fd".into()))?;
                    let sock = opts.console_socket.as_ref().expect("checked above");
                    tty::send_to_console_socket(sock, fd.as_fd())?;
                }
                Msg::SeccompFd => {
                    let fd = fd.ok_or_else(|| Error::Other("init sent no seccomp fd".into()))?;
                    let sc = linux
                        .and_then(|l| l.seccomp().as_ref())
                        .expect("filter exists");
                    if let Some(path) = sc.listener_path() {
                        let msg = serde_json::json!({
                            "ociVersion": spec.version(),
                            "fds": ["seccompFd"],
                            "pid": pid,
                            "metadata": sc.listener_metadata().clone().unwrap_or_default(),
                            "state": st.public(Status::Creating),
                        });
                        seccomp::send_listener_fd(path, &fd, msg.to_string().as_bytes())?;
                    }
                }
                Msg::Ready { warnings } => {
                    for w in warnings {
                        super::warn(&w);
                    }
                    break;
                }
                Msg::Error(e) => {
                    return Err(Error::Other(e));
                }
                other => {
                    return Err(Error::Other(format!(
                        "protocol error: unexpected {other:?} from init"
                    )))
                }
            }
        }
        Ok(st)
    };
    let mut st = drive().map_err(|e| parent_chan.pending_error().map_or(e, Error::Other))?;
    st.status = Status::Created;
    st.save(&opts.root)?;
    if let Some(pf) = &opts.pid_file {
        write_pid_file(pf, pid)?;
    }
    cleanup.armed = false;
    Ok(st)
}

fn provisional_state(
    opts: &CreateOpts,
    bundle: &Path,
    rootfs: &Path,
    spec: &Spec,
    cg: &Cgroup,
    pid: i32,
) -> State {
    State {
        id: opts.id.clone(),
        pid,
        init_start_time: utils::process_start_time(pid).unwrap_or(0),
        status: Status::Creating,
        bundle: bundle.to_path_buf(),
        rootfs: rootfs.to_path_buf(),
        created: utils::rfc3339_now(),
        owner: String::new(),
        cgroup: Some(cg.clone()),
        config: spec.clone(),
    }
}

/// Writes the pid file atomically (runc's `--pid-file`), relative to the caller's cwd.
pub fn write_pid_file(path: &Path, pid: i32) -> Result<()> {
    let abs = if path.is_absolute() {
        path.to_path_buf()
    } else {
        std::env::current_dir().unwrap_or_default().join(path)
    };
    utils::write_atomic(&abs, pid.to_string().as_bytes())
}

fn exit_reason(pid: i32) -> String {
    match nix::sys::wait::waitpid(
        nix::unistd::Pid::from_raw(pid),
        Some(nix::sys::wait::WaitPidFlag::WNOHANG),
    ) {
        Ok(nix::sys::wait::WaitStatus::Exited(_, c)) => format!(" (exit status {c})"),
        Ok(nix::sys::wait::WaitStatus::Signaled(_, s, _)) => format!(" (killed by {s})"),
        _ => String::new(),
    }
}

fn write_id_maps(pid: i32, spec: &Spec) -> Result<()> {
    let linux = spec.linux().as_ref();
    let fmt = |m: Option<&Vec<LinuxIdMapping>>| {
        m.into_iter()
            .flatten()
            .map(|m| format!("{} {} {}\n", m.container_id(), m.host_id(), m.size()))
            .collect::<String>()
    };
    let uid = fmt(linux.and_then(|l| l.uid_mappings().as_ref()));
    let gid = fmt(linux.and_then(|l| l.gid_mappings().as_ref()));
    for (file, data) in [("uid_map", uid), ("gid_map", gid)] {
        let path = format!("/proc/{pid}/{file}");
        std::fs::write(&path, &data)
            .map_err(|e| Error::Other(format!("write {file} {:?}: {e}", data.trim())))?;
    }
    Ok(())
}

/// Binds and listens on `<dir>/start.sock`, going through `/proc/self/fd` so that long state
/// paths do not hit the 108-byte limit of socket addresses.
fn listen_start_socket(dir: &Path) -> Result<OwnedFd> {
    use nix::sys::socket::{
        bind, listen, socket, AddressFamily, Backlog, SockFlag, SockType, UnixAddr,
    };
    let bad = |e: nix::Error| Error::Other(format!("start socket in {dir:?}: {e}"));
    let sock = socket(
        AddressFamily::Unix,
        SockType::Stream,
        SockFlag::SOCK_CLOEXEC,
        None,
    )
    .map_err(bad)?;
    let full = dir.join(START_SOCKET);
    let dirf = std::fs::File::open(dir).io_ctx("open state dir", dir)?;
    let short = if full.as_os_str().len() < 100 {
        full
    } else {
        PathBuf::from(format!("/proc/self/fd/{}/{START_SOCKET}", dirf.as_raw_fd()))
    };
    bind(sock.as_raw_fd(), &UnixAddr::new(&short).map_err(bad)?).map_err(bad)?;
    listen(&sock, Backlog::new(4).map_err(bad)?).map_err(bad)?;
    Ok(sock)
}

/// Connects to the start socket of the container in `dir`.
pub fn connect_start_socket(dir: &Path) -> Result<std::os::unix::net::UnixStream> {
    let full = dir.join(START_SOCKET);
    if full.as_os_str().len() < 100 {
        return std::os::unix::net::UnixStream::connect(&full)
            .io_ctx("connect to the init's start socket", full);
    }
    let dirf = std::fs::File::open(dir).io_ctx("open state dir", dir)?;
    let short = format!("/proc/self/fd/{}/{START_SOCKET}", dirf.as_raw_fd());
    std::os::unix::net::UnixStream::connect(&short)
        .io_ctx("connect to the init's start socket", full)
}

fn dup_above(fd: OwnedFd, min: i32) -> Result<OwnedFd> {
    if fd.as_raw_fd() >= min {
        return Ok(fd);
    }
    // SAFETY: F_DUPFD_CLOEXEC returns a new descriptor that only we own.
    let n = unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_DUPFD_CLOEXEC, min) };
    if n < 0 {
        return Err(Error::Other(format!(
            "dup: {}",
            std::io::Error::last_os_error()
        )));
    }
    // SAFETY: `n` is fresh from fcntl.
    Ok(unsafe { OwnedFd::from_raw_fd(n) })
}

/// The parent's own PID/time namespaces for children, changed around the clone and restored.
struct ParentNs {
    pid: Option<std::fs::File>,
    time: Option<std::fs::File>,
}

impl ParentNs {
    fn enter(plan: &Plan, spec: &Spec) -> Result<ParentNs> {
        let mut r = ParentNs {
            pid: None,
            time: None,
        };
        if let Some((_, fd, path)) = plan
            .join
            .iter()
            .find(|(t, _, _)| *t == LinuxNamespaceType::Pid)
        {
            r.pid = Some(
                std::fs::File::open("/proc/self/ns/pid_for_children")
                    .io_ctx("open", "/proc/self/ns/pid_for_children")?,
            );
            nix::sched::setns(fd, CloneFlags::CLONE_NEWPID)
                .map_err(|e| Error::Other(format!("join pid namespace {path:?}: {e}")))?;
        }
        let timens = CloneFlags::from_bits_retain(libc::CLONE_NEWTIME);
        let join_time = plan
            .join
            .iter()
            .find(|(t, _, _)| *t == LinuxNamespaceType::Time);
        if join_time.is_some() || plan.new.contains(timens) {
            r.time = Some(
                std::fs::File::open("/proc/self/ns/time_for_children")
                    .io_ctx("open", "/proc/self/ns/time_for_children")?,
            );
        }
        if let Some((_, fd, path)) = join_time {
            nix::sched::setns(fd, timens)
                .map_err(|e| Error::Other(format!("join time namespace {path:?}: {e}")))?;
        } else if plan.new.contains(timens) {
            nix::sched::unshare(timens)
                .map_err(|e| Error::Other(format!("unshare time namespace: {e}")))?;
            let offsets = spec
                .linux()
                .as_ref()
                .and_then(|l| l.time_offsets().as_ref());
            for (clock, off) in offsets.into_iter().flatten() {
                let line = format!(
                    "{clock} {} {}\n",
                    off.secs().unwrap_or(0),
                    off.nanosecs().unwrap_or(0)
                );
                std::fs::write("/proc/self/timens_offsets", &line)
                    .map_err(|e| Error::Other(format!("time offset {}: {e}", line.trim())))?;
            }
        }
        Ok(r)
    }

    fn restore(self) {
        if let Some(f) = self.pid {
            let _ = nix::sched::setns(f, CloneFlags::CLONE_NEWPID);
        }
        if let Some(f) = self.time {
            let _ = nix::sched::setns(f, CloneFlags::from_bits_retain(libc::CLONE_NEWTIME));
        }
    }
}
