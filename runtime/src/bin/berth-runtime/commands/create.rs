//! `create` and `run`.

use crate::cli::CreateArgs;
use anyhow::Result;
use berth_runtime::container::{self, create::CreateOpts};
use berth_runtime::state::{State, Status};
use nix::sys::signal::{SigSet, Signal};
use nix::sys::signalfd::{SfdFlags, SignalFd};
use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
use nix::unistd::Pid;
use std::path::Path;

fn opts(root: &Path, a: &CreateArgs) -> CreateOpts {
    CreateOpts {
        root: root.to_path_buf(),
        id: a.id.clone(),
        bundle: a.bundle.clone(),
        pid_file: a.pid_file.clone(),
        console_socket: a.console_socket.clone(),
        no_pivot: a.no_pivot,
        preserve_fds: a.preserve_fds,
        no_new_keyring: a.no_new_keyring,
    }
}

pub fn create(root: &Path, a: &CreateArgs) -> Result<State> {
    seal_if_needed(a)?;
    Ok(container::create::create(&opts(root, a))?)
}

/// See `crate::sealed`: privileged containers get the runtime from a sealed copy.
fn seal_if_needed(a: &CreateArgs) -> Result<()> {
    if crate::sealed::is_sealed() {
        return Ok(());
    }
    let spec = std::fs::read(a.bundle.join("config.json"))
        .ok()
        .and_then(|b| serde_json::from_slice::<serde_json::Value>(&b).ok());
    match spec {
        Some(s) if crate::sealed::at_risk(&s, &[]) => crate::sealed::reexec(),
        _ => Ok(()),
    }
}

/// `run`: create + start; in the foreground, forward signals, wait, clean up and return the
/// container's exit code (128+signal if it was killed), as runc does.
pub fn run(root: &Path, a: &CreateArgs, detach: bool, keep: bool) -> Result<i32> {
    seal_if_needed(a)?;
    // Block the signals we forward before the init exists, so none is lost in between.
    let mut forwarded = SigSet::empty();
    if !detach {
        for s in Signal::iterator() {
            if !matches!(
                s,
                Signal::SIGKILL
                    | Signal::SIGSTOP
                    | Signal::SIGSEGV
                    | Signal::SIGBUS
                    | Signal::SIGILL
                    | Signal::SIGFPE
                    | Signal::SIGTTIN
                    | Signal::SIGTTOU
                    | Signal::SIGTSTP
            ) {
                forwarded.add(s);
            }
        }
        forwarded.thread_block()?;
    }
    // A terminal with nobody to hand it to: relay it ourselves.
    let relay = if !detach && a.console_socket.is_none() && wants_terminal(a) {
        Some(crate::relay::ConsoleSocket::new()?)
    } else {
        None
    };
    let mut a2 = a.clone();
    if let Some(r) = &relay {
        a2.console_socket = Some(r.path.clone());
    }
    let a = &a2;
    let st = create(root, a)?;
    let master = match &relay {
        Some(r) => match r.receive() {
            Ok(m) => Some(m),
            Err(e) => {
                let _ = container::delete::destroy(root, &st);
                return Err(e);
            }
        },
        None => None,
    };
    if let Err(e) = container::start::start(root, &a.id) {
        let _ = container::delete::destroy(root, &st);
        return Err(e.into());
    }
    if detach {
        return Ok(0);
    }
    let code = match master {
        Some(m) => {
            let _raw = crate::relay::RawMode::enter();
            crate::relay::sync_size(&m);
            relay_and_wait(st.pid, &forwarded, &m)?
        }
        None => wait_forwarding(st.pid, &forwarded)?,
    };
    let st = State::load(root, &a.id)?;
    if keep {
        let mut st = st;
        st.status = Status::Running; // current_status() reports stopped: the init is gone
        st.save(root)?;
    } else {
        container::delete::destroy(root, &st)?;
    }
    Ok(code)
}

fn wants_terminal(a: &CreateArgs) -> bool {
    // Only a peek at one field: the library reads and checks the whole config.
    std::fs::read(a.bundle.join("config.json"))
        .ok()
        .and_then(|b| serde_json::from_slice::<serde_json::Value>(&b).ok())
        .and_then(|v| v.pointer("/process/terminal").and_then(|t| t.as_bool()))
        .unwrap_or(false)
}

/// Relays the terminal until the container exits; forwards signals (SIGWINCH resizes).
fn relay_and_wait(pid: i32, forwarded: &SigSet, master: &std::os::fd::OwnedFd) -> Result<i32> {
    let child = Pid::from_raw(pid);
    match crate::relay::relay_forwarding(master, forwarded, child, || Ok(reap(child)))? {
        Some(c) => Ok(c),
        None => wait_forwarding(pid, forwarded),
    }
}

fn reap(child: Pid) -> Option<i32> {
    loop {
        match waitpid(None, Some(WaitPidFlag::WNOHANG)) {
            Ok(WaitStatus::Exited(p, c)) if p == child => return Some(c),
            Ok(WaitStatus::Signaled(p, s, _)) if p == child => return Some(128 + s as i32),
            Ok(WaitStatus::StillAlive) | Err(_) => return None,
            Ok(_) => continue,
        }
    }
}

fn wait_forwarding(pid: i32, forwarded: &SigSet) -> Result<i32> {
    let sfd = SignalFd::with_flags(forwarded, SfdFlags::SFD_CLOEXEC)?;
    let child = Pid::from_raw(pid);
    loop {
        // Reap first: the exit may have happened before the signalfd existed.
        if let Some(c) = reap(child) {
            return Ok(c);
        }
        let Some(info) = sfd.read_signal()? else {
            continue;
        };
        let sig = info.ssi_signo as i32;
        if sig == libc::SIGCHLD {
            continue;
        }
        if let Ok(s) = Signal::try_from(sig) {
            let _ = nix::sys::signal::kill(child, s);
        }
    }
}
