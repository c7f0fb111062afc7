//! `exec`: start another process in a running container: join its namespaces and cgroup, take on
//! the process attributes, exec. Non-detached, the caller waits and gets the exit status.

use crate::process::clone::{clone, Forked};
use crate::process::setup;
use crate::seccomp::Filter;
use crate::state::{State, Status};
use crate::sync::{Channel, Msg};
use crate::{namespaces, tty, Error, Result};
use nix::sched::{setns, CloneFlags};
use oci_spec::runtime::{LinuxNamespaceType, Process};
use std::os::fd::{AsFd, OwnedFd};
use std::path::{Path, PathBuf};

#[derive(Debug, Clone, Default)]
pub struct ExecOpts {
    pub process: Process,
    pub console_socket: Option<PathBuf>,
    pub pid_file: Option<PathBuf>,
    pub preserve_fds: i32,
    /// Run even if the container is paused (runc's `--ignore-paused`): the process starts
    /// frozen and runs when the container is resumed.
    pub ignore_paused: bool,
    /// runc's `--cgroup`: sub-cgroups of the container's to put the process in, by v1
    /// controller; the key `""` means every hierarchy. Empty: the container's cgroup.
    pub sub_cgroups: std::collections::BTreeMap<String, String>,
}

/// Starts the process; returns its host pid (it is the caller's child).
pub fn exec(root: &Path, id: &str, opts: &ExecOpts) -> Result<i32> {
    let st = State::load(root, id)?;
    let status = st.current_status();
    if status == Status::Paused && !opts.ignore_paused {
        return Err(Error::Other(format!(
            "container {id:?} is paused: cannot exec in a paused container (use --ignore-paused \
             to override)"
        )));
    }
    if !matches!(status, Status::Running | Status::Created | Status::Paused) {
        return Err(Error::BadState {
            id: id.into(),
            status: status.to_string(),
            op: "exec",
            expected: "running",
        });
    }
    let terminal = opts.process.terminal().unwrap_or(false);
    if terminal && opts.console_socket.is_none() {
        return Err(Error::Other("exec --tty needs --console-socket".into()));
    }
    if opts.process.args().as_ref().is_none_or(|a| a.is_empty()) {
        return Err(Error::Other("exec: no command given".into()));
    }
    if let Some(e) = crate::apparmor::check(opts.process.apparmor_profile().as_deref()) {
        return Err(Error::Other(e));
    }
    let sub_dirs = if opts.sub_cgroups.is_empty() {
        None
    } else {
        let cg = st
            .cgroup
            .as_ref()
            .ok_or_else(|| Error::Other(format!("container {id:?} has no cgroup")))?;
        Some(cg.sub_cgroup_dirs(&opts.sub_cgroups)?)
    };
    let linux = st.config.linux().as_ref();
    let filter = match linux.and_then(|l| l.seccomp().as_ref()) {
        Some(p) => Some(Filter::build(p)?),
        None => None,
    };
    use LinuxNamespaceType::*;
    let all = [User, Mount, Network, Ipc, Uts, Cgroup, Pid, Time];
    let ns = namespaces::open_of_pid(st.pid, &all)?;
    // PID and time namespaces apply to children: the parent joins them (for children) first.
    let saved_pid = std::fs::File::open("/proc/self/ns/pid_for_children").ok();
    let saved_time = std::fs::File::open("/proc/self/ns/time_for_children").ok();
    for (t, fd) in &ns {
        if matches!(t, Pid | Time) {
            setns(fd, namespaces::flag(*t)).map_err(|e| {
                Error::Other(format!(
                    "join {} namespace of {id:?}: {e}",
                    namespaces::proc_name(*t)
                ))
            })?;
        }
    }
    let (mut parent_chan, mut child_chan) = Channel::pair()?;
    parent_chan.move_above(3 + opts.preserve_fds)?;
    child_chan.move_above(3 + opts.preserve_fds)?;
    // Into sub-cgroups, the parent moves the process (below), as runc does.
    let cg_fd = st
        .cgroup
        .as_ref()
        .filter(|_| sub_dirs.is_none())
        .and_then(|c| c.clone_into_fd());
    let forked = match clone(CloneFlags::empty(), cg_fd.as_ref().map(|f| f.as_fd())) {
        Err(_) if cg_fd.is_some() => clone(CloneFlags::empty(), None).map(|f| (f, false)),
        r => r.map(|f| (f, cg_fd.is_some())),
    };
    if let Some(f) = saved_pid {
        let _ = setns(f, CloneFlags::CLONE_NEWPID);
    }
    if let Some(f) = saved_time {
        let _ = setns(f, CloneFlags::from_bits_retain(libc::CLONE_NEWTIME));
    }
    let (forked, in_cgroup) = forked?;
    let pid = match forked {
        Forked::Child => {
            drop(parent_chan);
            // v1 hierarchies: the process joins by itself before it enters the container's
            // namespaces (see `Cgroup::join_self_v1`).
            let join_v1 = st
                .cgroup
                .as_ref()
                .filter(|_| crate::cgroups::Cgroup::host_has_v1() && sub_dirs.is_none());
            child(
                &ns,
                &opts.process,
                terminal,
                filter,
                opts.preserve_fds,
                &child_chan,
                join_v1,
            )
        }
        Forked::Parent(pid) => pid,
    };
    drop(child_chan);
    let fail = |e: Error| {
        let p = nix::unistd::Pid::from_raw(pid);
        let _ = nix::sys::signal::kill(p, nix::sys::signal::Signal::SIGKILL);
        let _ = nix::sys::wait::waitpid(p, None);
        e
    };
    if let Some(dirs) = &sub_dirs {
        crate::cgroups::Cgroup::add_pid_to(dirs, pid).map_err(|e| fail(e.into()))?;
    } else if !in_cgroup {
        if let Some(cg) = &st.cgroup {
            // The v1 hierarchies are the child's own job.
            cg.add_pid_unified(pid).map_err(|e| fail(e.into()))?;
            if !crate::cgroups::Cgroup::host_has_v1() {
                cg.add_pid(pid).map_err(|e| fail(e.into()))?;
            }
        }
    }
    parent_chan.send(&Msg::Proceed).map_err(fail)?;
    loop {
        match parent_chan.recv().map_err(fail)? {
            None => {
                return Err(fail(Error::Other(
                    "exec: the process exited before it was ready".into(),
                )))
            }
            Some((Msg::ConsoleFd, Some(fd))) => {
                let sock = opts.console_socket.as_ref().expect("checked");
                tty::send_to_console_socket(sock, fd.as_fd()).map_err(fail)?;
            }
            Some((Msg::SeccompFd, Some(fd))) => {
                // To the container's seccomp agent, as for the init, with this process's pid.
                let sc = linux
                    .and_then(|l| l.seccomp().as_ref())
                    .expect("has a filter");
                if let Some(path) = sc.listener_path() {
                    let msg = serde_json::json!({
                        "ociVersion": st.config.version(),
                        "fds": ["seccompFd"],
                        "pid": pid,
                        "metadata": sc.listener_metadata().clone().unwrap_or_default(),
                        "state": st.public(status),
                    });
                    crate::seccomp::send_listener_fd(path, &fd, msg.to_string().as_bytes())
                        .map_err(|e| fail(e.into()))?;
                }
            }
            Some((Msg::Ready { warnings }, _)) => {
                for w in warnings {
                    super::warn(&w);
                }
                break;
            }
            Some((Msg::Error(e), _)) => return Err(fail(Error::Other(e))),
            Some((m, _)) => {
                return Err(fail(Error::Other(format!(
                    "protocol error: unexpected {m:?}"
                ))))
            }
        }
    }
    if let Some(pf) = &opts.pid_file {
        super::create::write_pid_file(pf, pid)?;
    }
    // Wait until the program is exec'd (EOF) or failed to exec (an error message).
    match parent_chan.recv() {
        Ok(Some((Msg::Error(e), _))) => Err(Error::Other(e)),
        _ => Ok(pid),
    }
}

fn child(
    ns: &[(LinuxNamespaceType, OwnedFd)],
    process: &Process,
    terminal: bool,
    filter: Option<Filter>,
    preserve_fds: i32,
    chan: &Channel,
    join_v1: Option<&crate::cgroups::Cgroup>,
) -> ! {
    // SAFETY: prctl with integer arguments; see process::init for why (CVE-2019-5736 class).
    unsafe { libc::prctl(libc::PR_SET_DUMPABLE, 0, 0, 0, 0) };
    setup::reset_signals();
    let r = (|| -> Result<std::convert::Infallible> {
        if let Some(cg) = join_v1 {
            cg.join_self_v1()?;
        }
        chan.expect(Msg::Proceed)?;
        for (t, fd) in ns {
            if !matches!(t, LinuxNamespaceType::Pid | LinuxNamespaceType::Time) {
                setns(fd, namespaces::flag(*t)).map_err(|e| {
                    Error::Other(format!("join {} namespace: {e}", namespaces::proc_name(*t)))
                })?;
            }
        }
        nix::unistd::chdir("/").map_err(|e| Error::Other(format!("chdir /: {e}")))?;
        // SAFETY: setsid has no preconditions.
        unsafe { libc::setsid() };
        if terminal {
            let (master, _, slave) = tty::open_pty()?;
            if let Some(sz) = process.console_size() {
                tty::set_size(master.as_fd(), sz.height() as u16, sz.width() as u16);
            }
            // The terminal is the process's user's, as runc makes it (its group stays devpts'
            // tty group). An id the user namespace cannot map, or a read-only /dev, leaves it.
            let uid = nix::unistd::Uid::from_raw(process.user().uid());
            match nix::unistd::fchown(&slave, Some(uid), None) {
                Ok(()) | Err(nix::Error::EINVAL | nix::Error::EPERM | nix::Error::EROFS) => {}
                Err(e) => return Err(Error::Other(format!("chown the terminal to {uid}: {e}"))),
            }
            tty::make_controlling(&slave)?;
            chan.send_with_fd(&Msg::ConsoleFd, Some(master.as_fd()))?;
        }
        let denies = std::fs::read_to_string("/proc/self/setgroups")
            .map(|s| s.trim() == "deny")
            .unwrap_or(false);
        // As in the init: without no_new_privs the filter must go in while CAP_SYS_ADMIN is
        // still held; otherwise as late as possible, but before we report ready if the parent
        // has a notify fd to hand to the profile's seccomp agent.
        let mut filter = filter;
        let load = |filter: &mut Option<Filter>| -> Result<()> {
            if let Some(fd) = filter.take().map(Filter::load).transpose()?.flatten() {
                chan.send_with_fd(&Msg::SeccompFd, Some(fd.as_fd()))?;
            }
            Ok(())
        };
        if !process.no_new_privileges().unwrap_or(false) {
            load(&mut filter)?;
        }
        let warnings = setup::apply_process_attributes(process, denies)?;
        let program = setup::find_program(process)?;
        if filter.as_ref().is_some_and(Filter::wants_listener) {
            load(&mut filter)?;
        }
        setup::close_fds_on_exec(3 + preserve_fds);
        chan.send(&Msg::Ready { warnings })?;
        load(&mut filter)?;
        Err(setup::exec(&program))
    })();
    let Err(e) = r;
    let _ = chan.send(&Msg::Error(e.to_string()));
    // SAFETY: _exit in the child skips the parent's destructors.
    unsafe { libc::_exit(127) }
}
