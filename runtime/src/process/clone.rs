//! `clone3` with namespace flags and `CLONE_INTO_CGROUP`, falling back to `clone` on old kernels.
//!
//! The runtime is single-threaded when it clones, and the child does not share memory with the
//! parent (no `CLONE_VM`): it is a copy, like a fork, so it may allocate and run ordinary Rust.

use crate::{Error, Result};
use nix::sched::CloneFlags;
use std::os::fd::{AsRawFd, BorrowedFd};

#[repr(C)]
#[derive(Default)]
struct CloneArgs {
    flags: u64,
    pidfd: u64,
    child_tid: u64,
    parent_tid: u64,
    exit_signal: u64,
    stack: u64,
    stack_size: u64,
    tls: u64,
    set_tid: u64,
    set_tid_size: u64,
    cgroup: u64,
}

const CLONE_INTO_CGROUP: u64 = 0x2_0000_0000;

/// What `clone` returned in each process.
pub enum Forked {
    Parent(i32),
    Child,
}

/// Clones the calling process into the namespaces of `flags` and, if given, the cgroup `cgroup`.
/// Returns `Err` if the kernel refuses; with a cgroup fd that the kernel cannot use (hybrid hosts,
/// old kernels), call again without one and move the child into its cgroup by pid.
pub fn clone(flags: CloneFlags, cgroup: Option<BorrowedFd<'_>>) -> Result<Forked> {
    let mut args = CloneArgs {
        flags: flags.bits() as u32 as u64,
        exit_signal: libc::SIGCHLD as u64,
        ..Default::default()
    };
    if let Some(fd) = cgroup {
        args.flags |= CLONE_INTO_CGROUP;
        args.cgroup = fd.as_raw_fd() as u64;
    }
    // SAFETY: clone3 without CLONE_VM behaves like fork: the child gets a copy of the address
    // space and continues from here with its own stack. The struct outlives the call.
    let ret = unsafe {
        libc::syscall(
            libc::SYS_clone3,
            &mut args as *mut CloneArgs,
            std::mem::size_of::<CloneArgs>(),
        )
    };
    if ret == 0 {
        return Ok(Forked::Child);
    }
    if ret > 0 {
        return Ok(Forked::Parent(ret as i32));
    }
    let err = std::io::Error::last_os_error();
    if err.raw_os_error() == Some(libc::ENOSYS) && cgroup.is_none() {
        // Kernels before 5.3: plain clone (fork-like: null stack, SIGCHLD).
        // SAFETY: as above: without CLONE_VM and with a null stack the child runs on a copy of
        // the parent's stack, exactly like fork().
        let ret = unsafe {
            libc::syscall(
                libc::SYS_clone,
                (flags.bits() as libc::c_ulong) | libc::SIGCHLD as libc::c_ulong,
                0usize,
                0usize,
                0usize,
                0usize,
            )
        };
        return match ret {
            0 => Ok(Forked::Child),
            p if p > 0 => Ok(Forked::Parent(p as i32)),
            _ => Err(Error::Other(format!(
                "clone: {}",
                std::io::Error::last_os_error()
            ))),
        };
    }
    Err(Error::Other(format!(
        "clone3 (flags {:#x}): {err}",
        args.flags
    )))
}
