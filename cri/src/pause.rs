//! The one process a pod may need: the init of a PID namespace its containers share
//! (`shareProcessNamespace`, CRI NamespaceMode POD for pid). A PID namespace cannot be pinned
//! like the others: once its init is gone no process can enter it. Pods with a PID namespace
//! per container (what the kubelet asks by default) or the host's have none.
//!
//! berthd starts `/proc/self/exe --berth-pause <pod dir>` having unshared CLONE_NEWPID, so that the
//! process's first child is pid 1 of a new namespace. That child reaps whatever is reparented
//! to it until it is killed; the parent prints the child's pid and waits for it. Stopping the
//! pod SIGKILLs the child (the kernel then ends every process left in the namespace).

use anyhow::{anyhow, bail, Result};
use std::os::unix::process::CommandExt as _;
use tokio::io::AsyncBufReadExt;

/// The argument that makes `berthd` the pause process.
pub const ARG: &str = "--berth-pause";

/// `berthd --berth-pause`: never returns.
pub fn main() -> ! {
    // SAFETY: called first thing in main, before any thread exists.
    match unsafe { libc::fork() } {
        -1 => std::process::exit(1),
        0 => init(),
        child => {
            println!("{child}");
            // SAFETY: closing our stdout (the pipe berthd reads) so that it sees the end.
            unsafe { libc::close(1) };
            let mut status = 0;
            // SAFETY: waiting for our own child.
            while unsafe { libc::waitpid(child, &mut status, 0) } < 0 {
                if std::io::Error::last_os_error().raw_os_error() != Some(libc::EINTR) {
                    break;
                }
            }
            std::process::exit(0)
        }
    }
}

extern "C" fn on_sigchld(_: libc::c_int) {}

/// pid 1 of the pod's PID namespace: reaps orphans until killed.
fn init() -> ! {
    // SAFETY: plain libc calls on values we own; the handler does nothing.
    unsafe {
        libc::prctl(
            libc::PR_SET_NAME,
            c"berth-pause".as_ptr() as libc::c_ulong,
            0,
            0,
            0,
        );
        let mut sa: libc::sigaction = std::mem::zeroed();
        sa.sa_sigaction = on_sigchld as *const () as usize;
        libc::sigaction(libc::SIGCHLD, &sa, std::ptr::null_mut());
        let mut block: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut block);
        libc::sigaddset(&mut block, libc::SIGCHLD);
        libc::sigprocmask(libc::SIG_BLOCK, &block, std::ptr::null_mut());
        let mut wait_mask: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut wait_mask);
        loop {
            while libc::waitpid(-1, std::ptr::null_mut(), libc::WNOHANG) > 0 {}
            libc::sigsuspend(&wait_mask);
        }
    }
}

/// A running pause process: its pid and start time (in clock ticks since boot, to tell it
/// from a later process with the same pid).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Pause {
    pub pid: i32,
    pub start: u64,
}

/// Starts a pause process in a new PID namespace, `pod` (the pod's directory) in its command
/// line to say whose it is.
pub async fn spawn(pod: &std::path::Path) -> Result<Pause> {
    let mut cmd = tokio::process::Command::new("/proc/self/exe");
    cmd.arg(ARG)
        .arg(pod)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null());
    // SAFETY: unshare(2) and setsid(2) are async-signal-safe.
    unsafe {
        cmd.as_std_mut().pre_exec(|| {
            nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWPID)
                .map_err(std::io::Error::from)?;
            libc::setsid();
            Ok(())
        });
    }
    let mut child = cmd
        .spawn()
        .map_err(|e| anyhow!("start the pod's pause process: {e}"))?;
    let out = child.stdout.take().expect("piped");
    let mut line = String::new();
    tokio::io::BufReader::new(out)
        .read_line(&mut line)
        .await
        .map_err(|e| anyhow!("start the pod's pause process: {e}"))?;
    // The parent stays until the pause process ends; berthd reaps it then.
    tokio::spawn(async move {
        let _ = child.wait().await;
    });
    let pid: i32 = line
        .trim()
        .parse()
        .map_err(|_| anyhow!("start the pod's pause process: it said {line:?}"))?;
    let Some(start) = start_time(pid) else {
        bail!("start the pod's pause process: pid {pid} is gone");
    };
    Ok(Pause { pid, start })
}

/// Field 22 of /proc/<pid>/stat.
fn start_time(pid: i32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) may hold spaces and parentheses: count from the last ')'.
    let rest = &stat[stat.rfind(')')? + 1..];
    rest.split_whitespace().nth(19)?.parse().ok()
}

impl Pause {
    /// Whether the process is still this pause process (not a later one with its pid).
    pub fn alive(&self) -> bool {
        self.pid > 0 && start_time(self.pid) == Some(self.start)
    }

    /// The PID namespace to join.
    pub fn ns_path(&self) -> String {
        format!("/proc/{}/ns/pid", self.pid)
    }

    /// Ends it (and with it every process left in its namespace). Gone already is fine.
    pub fn kill(&self) {
        if self.alive() {
            // SAFETY: signalling a process we started, checked by pid and start time.
            unsafe { libc::kill(self.pid, libc::SIGKILL) };
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn start_time_of_ourselves() {
        let me = std::process::id() as i32;
        let start = start_time(me).unwrap();
        assert!(Pause { pid: me, start }.alive());
        // The same pid, started at another time: another process.
        assert!(!Pause {
            pid: me,
            start: start + 1
        }
        .alive());
        assert_eq!(start_time(i32::MAX), None);
    }
}
