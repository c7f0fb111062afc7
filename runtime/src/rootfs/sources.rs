//! Bind-mount sources opened by the runtime with the host's privileges, for an init that is in
//! a user namespace (runc's mount sources, `send_mountsources` in its `nsexec.c`).
//!
//! In a user namespace the init is root only over the ids mapped into it: a host directory that
//! only the host's root may enter (a mode 0700 directory on the way to the source, say) cannot
//! be looked up from there, although the init may bind-mount what lies below it. So the runtime
//! opens each source `O_PATH` and hands the descriptor to the init, which mounts
//! `/proc/self/fd/N`: that needs no search permission on the way.
//!
//! A bind mount's source must be in the caller's mount namespace, so the sources are opened in
//! the init's (new) mount namespace, by a short-lived helper process of the runtime that enters
//! it (only a single-threaded process may enter a mount namespace, and the runtime may be a
//! library in a threaded program).

use nix::fcntl::{open, OFlag};
use nix::sched::{setns, CloneFlags};
use nix::sys::stat::Mode;
use nix::sys::wait::waitpid;
use nix::unistd::{fork, ForkResult};
use oci_spec::runtime::{Mount, Spec};
use std::os::fd::{BorrowedFd, OwnedFd};
use std::path::Path;

/// Sources of bind mounts handed over by the runtime: (index in `spec.mounts`, descriptor).
#[derive(Default)]
pub struct BindSources(Vec<(usize, OwnedFd)>);

impl BindSources {
    /// No sources: the init looks every source up itself.
    pub fn none() -> BindSources {
        BindSources::default()
    }

    /// Adds the descriptor the runtime opened for mount number `index` of the spec.
    pub fn insert(&mut self, index: usize, fd: OwnedFd) {
        self.0.push((index, fd));
    }

    /// The opened source of mount number `index`, if there is one.
    pub(crate) fn get(&self, index: usize) -> Option<BorrowedFd<'_>> {
        use std::os::fd::AsFd;
        self.0
            .iter()
            .find(|(i, _)| *i == index)
            .map(|(_, fd)| fd.as_fd())
    }
}

/// Whether `m` is a bind mount (by type or by option).
fn is_bind(m: &Mount) -> bool {
    m.typ().as_deref() == Some("bind")
        || super::options::parse(
            &super::resolve::clean_path(m.destination()),
            m.options().as_deref().unwrap_or(&[]),
        )
        .is_ok_and(|o| o.is_bind())
}

/// Whether `spec` has a bind mount (with a source).
pub fn wanted(spec: &Spec) -> bool {
    spec.mounts()
        .iter()
        .flatten()
        .any(|m| is_bind(m) && m.source().is_some())
}

/// Runtime side: in a helper process that enters the mount namespace of `pid`, opens the source
/// of every bind mount of `spec` (a relative one in `bundle`, as the init would) and passes it
/// to `send` with the mount's index.
/// A source that cannot be opened (or sent) is left out: the init then looks it up itself, and
/// reports why if that fails too. Returns once the helper is done.
pub fn open_in_mount_ns(
    spec: &Spec,
    bundle: &Path,
    pid: i32,
    send: &dyn Fn(usize, BorrowedFd<'_>),
) {
    // SAFETY: the helper only makes system calls (open, setns, sendmsg through `send`) and
    // small allocations, then leaves with `_exit`; the parent waits for it below.
    match unsafe { fork() } {
        Ok(ForkResult::Child) => {
            let entered = open(
                format!("/proc/{pid}/ns/mnt").as_str(),
                OFlag::O_RDONLY | OFlag::O_CLOEXEC,
                Mode::empty(),
            )
            .and_then(|ns| setns(ns, CloneFlags::CLONE_NEWNS));
            if entered.is_ok() {
                for (i, m) in spec.mounts().iter().flatten().enumerate() {
                    // Entering a mount namespace moved our cwd to its root: join relative paths.
                    let Some(src) = m.source().as_deref().map(|s| bundle.join(s)) else {
                        continue;
                    };
                    if !is_bind(m) {
                        continue;
                    }
                    let flags = OFlag::O_PATH | OFlag::O_CLOEXEC;
                    if let Ok(fd) = open(src.as_path(), flags, Mode::empty()) {
                        use std::os::fd::AsFd;
                        send(i, fd.as_fd());
                    }
                }
            }
            // SAFETY: _exit skips the destructors and atexit handlers of the parent's state.
            unsafe { libc::_exit(0) }
        }
        Ok(ForkResult::Parent { child }) => {
            while let Err(nix::errno::Errno::EINTR) = waitpid(child, None) {}
        }
        Err(_) => {}
    }
}
