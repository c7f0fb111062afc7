//! `exec`.

use crate::cli::ExecArgs;
use anyhow::{bail, Context, Result};
use berth_runtime::container::exec::{exec as lib_exec, ExecOpts};
use berth_runtime::state::State;
use nix::sys::signal::{SigSet, Signal};
use nix::sys::signalfd::{SfdFlags, SignalFd};
use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
use nix::unistd::Pid;
use oci_spec::runtime::{Capability, Process};
use std::path::Path;

/// The process to run: `--process`, or the container's process with the command and flags.
fn build_process(root: &Path, a: &ExecArgs) -> Result<Process> {
    if let Some(path) = &a.process {
        let data = std::fs::read(path).with_context(|| format!("read process file {path:?}"))?;
        let bad = |e: serde_json::Error| anyhow::anyhow!("invalid process file {path:?}: {e}");
        let mut v: serde_json::Value = serde_json::from_slice(&data).map_err(bad)?;
        // runc reads a missing user as uid 0, gid 0 (Go's zero value); oci-spec requires it.
        if let Some(o) = v.as_object_mut() {
            o.entry("user")
                .or_insert_with(|| serde_json::json!({"uid": 0, "gid": 0}));
        }
        let p: Process = serde_json::from_value(v).map_err(bad)?;
        return Ok(p);
    }
    if a.command.is_empty() {
        bail!("exec: no command given (arguments or --process)");
    }
    let st = State::load(root, &a.id)?;
    let mut p = st.config.process().clone().unwrap_or_default();
    p.set_args(Some(a.command.clone()));
    p.set_terminal(Some(a.tty));
    p.set_console_size(None);
    let mut env = p.env().clone().unwrap_or_default();
    for kv in &a.env {
        let key = kv.split('=').next().unwrap_or("");
        env.retain(|e| e.split('=').next() != Some(key));
        env.push(kv.clone());
    }
    p.set_env(Some(env));
    if let Some(cwd) = &a.cwd {
        p.set_cwd(cwd.clone());
    }
    if let Some(u) = &a.user {
        let (uid, gid) = match u.split_once(':') {
            Some((u, g)) => (
                u.parse::<u32>().context("--user uid")?,
                Some(g.parse::<u32>().context("--user gid")?),
            ),
            None => (u.parse::<u32>().context("--user uid")?, None),
        };
        let user = p.user_mut();
        user.set_uid(uid);
        if let Some(g) = gid {
            user.set_gid(g);
        }
    }
    if !a.additional_gids.is_empty() {
        p.user_mut()
            .set_additional_gids(Some(a.additional_gids.clone()));
    }
    if a.no_new_privs {
        p.set_no_new_privileges(Some(true));
    }
    if let Some(profile) = &a.apparmor {
        p.set_apparmor_profile(Some(profile.clone()));
    }
    if !a.cap.is_empty() {
        let mut caps = p.capabilities().clone().unwrap_or_default();
        for c in &a.cap {
            let name = if c.to_uppercase().starts_with("CAP_") {
                c.to_uppercase()
            } else {
                format!("CAP_{}", c.to_uppercase())
            };
            let cap: Capability = serde_json::from_value(serde_json::Value::String(name))
                .map_err(|_| anyhow::anyhow!("unknown capability {c:?}"))?;
            for set in [
                caps.bounding().clone(),
                caps.effective().clone(),
                caps.permitted().clone(),
            ]
            .iter_mut()
            .enumerate()
            {
                let mut s = set.1.clone().unwrap_or_default();
                s.insert(cap);
                match set.0 {
                    0 => caps.set_bounding(Some(s)),
                    1 => caps.set_effective(Some(s)),
                    _ => caps.set_permitted(Some(s)),
                };
            }
        }
        p.set_capabilities(Some(caps));
    }
    Ok(p)
}

pub fn exec(root: &Path, a: &ExecArgs) -> Result<i32> {
    let process = build_process(root, a)?;
    if !crate::sealed::is_sealed() {
        // See `crate::sealed`: the container's namespaces with this process's capabilities.
        let st = State::load(root, &a.id)?;
        let mut spec = serde_json::to_value(&st.config)?;
        spec["process"] = serde_json::to_value(&process)?;
        if crate::sealed::at_risk(&spec, &[]) {
            crate::sealed::reexec()?;
        }
    }
    // A terminal with nobody to hand it to: relay it ourselves, as `run` does.
    let relay = if process.terminal().unwrap_or(false) && a.console_socket.is_none() {
        if a.detach {
            bail!("cannot allocate tty when detaching without a console socket: exec --tty --detach needs --console-socket");
        }
        Some(crate::relay::ConsoleSocket::new()?)
    } else {
        None
    };
    let mut forwarded = SigSet::empty();
    if !a.detach {
        for s in [
            Signal::SIGINT,
            Signal::SIGTERM,
            Signal::SIGHUP,
            Signal::SIGQUIT,
            Signal::SIGUSR1,
            Signal::SIGUSR2,
            Signal::SIGWINCH,
            Signal::SIGCHLD,
        ] {
            forwarded.add(s);
        }
        forwarded.thread_block()?;
    }
    let opts = ExecOpts {
        process,
        console_socket: a
            .console_socket
            .clone()
            .or_else(|| relay.as_ref().map(|r| r.path.clone())),
        pid_file: a.pid_file.clone(),
        preserve_fds: a.preserve_fds,
        ignore_paused: a.ignore_paused,
        sub_cgroups: sub_cgroups(&a.cgroup)?,
    };
    let pid = lib_exec(root, &a.id, &opts)?;
    if a.detach {
        return Ok(0);
    }
    let child = Pid::from_raw(pid);
    if let Some(r) = &relay {
        let master = match r.receive() {
            Ok(m) => m,
            Err(e) => {
                let _ = nix::sys::signal::kill(child, Signal::SIGKILL);
                let _ = waitpid(child, None);
                return Err(e);
            }
        };
        let _raw = crate::relay::RawMode::enter();
        crate::relay::sync_size(&master);
        return relay_and_wait(child, &forwarded, &master);
    }
    let sfd = SignalFd::with_flags(&forwarded, SfdFlags::SFD_CLOEXEC)?;
    loop {
        if let Some(c) = reap(child)? {
            return Ok(c);
        }
        if let Some(info) = sfd.read_signal()? {
            let sig = info.ssi_signo as i32;
            if sig != libc::SIGCHLD {
                if let Ok(s) = Signal::try_from(sig) {
                    let _ = nix::sys::signal::kill(child, s);
                }
            }
        }
    }
}

/// The exit code of `child` once it has exited (128+signal if killed), without waiting.
fn reap(child: Pid) -> Result<Option<i32>> {
    match waitpid(child, Some(WaitPidFlag::WNOHANG)) {
        Ok(WaitStatus::Exited(_, c)) => Ok(Some(c)),
        Ok(WaitStatus::Signaled(_, s, _)) => Ok(Some(128 + s as i32)),
        Ok(_) => Ok(None),
        Err(e) => bail!("wait for exec process {child}: {e}"),
    }
}

/// Relays the terminal until the process exits (and the pty is drained); forwards signals,
/// SIGWINCH as a resize.
fn relay_and_wait(child: Pid, forwarded: &SigSet, master: &std::os::fd::OwnedFd) -> Result<i32> {
    if let Some(c) = crate::relay::relay_forwarding(master, forwarded, child, || reap(child))? {
        return Ok(c);
    }
    // The terminal closed first: wait for the exit itself.
    loop {
        match waitpid(child, None) {
            Ok(WaitStatus::Exited(_, c)) => return Ok(c),
            Ok(WaitStatus::Signaled(_, s, _)) => return Ok(128 + s as i32),
            Ok(_) | Err(nix::Error::EINTR) => {}
            Err(e) => bail!("wait for exec process {child}: {e}"),
        }
    }
}

/// runc's `--cgroup` arguments, `[<controller>[,<controller>…]:]<path>`, as a map from
/// controller to path (`""`: every hierarchy, allowed only as the one argument).
fn sub_cgroups(args: &[String]) -> Result<std::collections::BTreeMap<String, String>> {
    let mut out = std::collections::BTreeMap::new();
    for a in args {
        match a.split(':').collect::<Vec<_>>()[..] {
            [path] if args.len() == 1 => {
                out.insert(String::new(), path.to_string());
            }
            [_] => bail!("invalid --cgroup argument: {a} (missing <controller>: prefix)"),
            [ctrls, path] => {
                for c in ctrls.split(',') {
                    out.insert(c.to_string(), path.to_string());
                }
            }
            _ => bail!("invalid --cgroup argument: {a}"),
        }
    }
    Ok(out)
}
