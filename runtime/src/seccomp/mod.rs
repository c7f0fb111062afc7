//! Seccomp filters from the OCI `linux.seccomp` profile, through libseccomp.
//!
//! OWNER: process-attributes helper. The runtime builds the filter in the parent before clone
//! (`Filter::build`), and the init loads it as the last step before execve (`Filter::load`).
//!
//! How: `build` compiles the profile with libseccomp and exports the resulting classic BPF
//! program; `load` hands that program to the kernel with one `seccomp(2)` call. The init thus
//! never calls into libseccomp (no allocation, no library state after clone), the filter flags
//! map one to one to kernel flags (so `SECCOMP_FILTER_FLAG_WAIT_KILLABLE_RECV` works with any
//! libseccomp), and a [`Filter`] is plain data. crun loads its filters the same way.
//!
//! Like runc:
//! - syscall names the native architecture's libseccomp does not know are skipped;
//! - rules whose action is the default action are skipped (libseccomp rejects them);
//! - a rule whose `args` name the same argument index twice becomes one rule per argument
//!   (matching any of them); otherwise all the conditions must hold;
//! - `errnoRet` defaults to EPERM for SCMP_ACT_ERRNO and SCMP_ACT_TRACE;
//! - the filter does not set `no_new_privs` itself: `process.noNewPrivileges` decides;
//! - syscalls newer than the newest one the profile names get ENOSYS, not the default action
//!   (runc's -ENOSYS stub, see `enosys`), so that libc falls back to older ones.
//!
//! Loading a filter needs either `no_new_privs` set or CAP_SYS_ADMIN in the effective set of
//! the calling process (in its user namespace); otherwise the kernel answers EACCES.

mod enosys;
mod listener;

#[cfg(test)]
pub(crate) mod in_child;
#[cfg(test)]
mod tests;

pub use listener::send_listener_fd;

use libseccomp::{
    ScmpAction, ScmpArch, ScmpArgCompare, ScmpCompareOp, ScmpFilterContext, ScmpSyscall,
};
use oci_spec::runtime::{
    Arch, LinuxSeccomp, LinuxSeccompAction, LinuxSeccompArg, LinuxSeccompFilterFlag,
    LinuxSeccompOperator, LinuxSyscall,
};
use std::io::{Read, Seek};
use std::os::fd::{FromRawFd, OwnedFd};

#[derive(Debug, thiserror::Error)]
pub enum SeccompError {
    #[error("seccomp: {0}")]
    Other(String),
}

fn err(msg: impl Into<String>) -> SeccompError {
    SeccompError::Other(msg.into())
}

/// Syscalls take at most six arguments.
const MAX_ARGS: usize = 6;

/// A compiled, not yet loaded, filter.
pub struct Filter {
    /// The BPF program, as `struct sock_filter` instructions.
    program: Vec<libc::sock_filter>,
    /// `SECCOMP_FILTER_FLAG_*` for `seccomp(SECCOMP_SET_MODE_FILTER)`.
    flags: libc::c_ulong,
    listener: bool,
}

impl std::fmt::Debug for Filter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Filter")
            .field("instructions", &self.program.len())
            .field("flags", &self.flags)
            .field("listener", &self.listener)
            .finish()
    }
}

impl Filter {
    /// Compiles the profile. Fails with a message naming the bad syscall/arch/action.
    pub fn build(profile: &LinuxSeccomp) -> Result<Filter, SeccompError> {
        let default = action(
            profile.default_action(),
            profile.default_errno_ret(),
            "defaultAction",
        )?;
        if default == ScmpAction::Notify {
            // The init itself would block on its first syscall, before it can hand the
            // listener fd to anyone.
            return Err(err("SCMP_ACT_NOTIFY cannot be the defaultAction"));
        }
        let mut ctx = ScmpFilterContext::new(default)
            .map_err(|e| err(format!("create filter (defaultAction {default:?}): {e}")))?;
        // process.noNewPrivileges decides, not the filter (libseccomp would set it on load).
        ctx.set_ctl_nnp(false)
            .map_err(|e| err(format!("clear the no_new_privs attribute: {e}")))?;

        let mut arches = vec![ScmpArch::Native];
        for a in profile.architectures().iter().flatten() {
            let arch = arch(*a);
            ctx.add_arch(arch)
                .map_err(|e| err(format!("add architecture {a}: {e}")))?;
            arches.push(arch);
        }

        let mut listener = false;
        for (i, sc) in profile.syscalls().iter().flatten().enumerate() {
            let act = action(
                sc.action(),
                sc.errno_ret(),
                &format!("syscalls[{i}].action"),
            )?;
            if act == default {
                continue;
            }
            let conditions = conditions(sc).map_err(|e| err(format!("syscalls[{i}]: {e}")))?;
            let mut added = false;
            for name in sc.names() {
                if act == ScmpAction::Notify && name == "write" {
                    // As runc: the process writes to the runtime while it sets up, after the
                    // filter is in and before the agent has the notify fd.
                    return Err(err(format!(
                        "syscalls[{i}]: SCMP_ACT_NOTIFY cannot be used for the write syscall"
                    )));
                }
                let Ok(nr) = ScmpSyscall::from_name(name) else {
                    // Unknown to this libseccomp or architecture: skipped, as runc does.
                    continue;
                };
                for conds in &conditions {
                    ctx.add_rule_conditional(act, nr, conds).map_err(|e| {
                        err(format!(
                            "add rule for syscall {name:?} (syscalls[{i}], {:?}): {e}",
                            sc.action()
                        ))
                    })?;
                }
                added = true;
            }
            listener |= added && act == ScmpAction::Notify;
        }
        if listener && profile.listener_path().is_none() {
            return Err(err("SCMP_ACT_NOTIFY is used but listenerPath is not set"));
        }

        let mut flags: libc::c_ulong = 0;
        for f in profile.flags().iter().flatten() {
            flags |= match f {
                LinuxSeccompFilterFlag::SeccompFilterFlagLog => libc::SECCOMP_FILTER_FLAG_LOG,
                LinuxSeccompFilterFlag::SeccompFilterFlagTsync => libc::SECCOMP_FILTER_FLAG_TSYNC,
                LinuxSeccompFilterFlag::SeccompFilterFlagSpecAllow => {
                    libc::SECCOMP_FILTER_FLAG_SPEC_ALLOW
                }
                // The kernel accepts it only with a listener (as libseccomp, set it only then).
                LinuxSeccompFilterFlag::SeccompFilterFlagWaitKillableRecv if listener => {
                    libc::SECCOMP_FILTER_FLAG_WAIT_KILLABLE_RECV
                }
                LinuxSeccompFilterFlag::SeccompFilterFlagWaitKillableRecv => 0,
            };
        }
        if listener {
            flags |= libc::SECCOMP_FILTER_FLAG_NEW_LISTENER;
            if flags & libc::SECCOMP_FILTER_FLAG_TSYNC != 0 {
                // The kernel refuses TSYNC with NEW_LISTENER unless failures to sync are
                // reported as ESRCH (the return value is then the listener fd).
                flags |= libc::SECCOMP_FILTER_FLAG_TSYNC_ESRCH;
            }
        }

        let mut program = enosys::stub(profile, &arches);
        program.extend(export(&ctx)?);
        Ok(Filter {
            program,
            flags,
            listener,
        })
    }

    /// Whether the profile asks for a listener (an action SCMP_ACT_NOTIFY): then `load` returns
    /// the notify fd, which the runtime sends to `listenerPath`.
    pub fn wants_listener(&self) -> bool {
        self.listener
    }

    /// Loads the filter into the calling process (flags from the profile are honoured).
    ///
    /// Makes one syscall and allocates nothing, so it is safe right after clone. Needs
    /// `no_new_privs` or CAP_SYS_ADMIN (EACCES otherwise, with a message saying so).
    pub fn load(self) -> Result<Option<OwnedFd>, SeccompError> {
        let prog = libc::sock_fprog {
            len: self.program.len() as libc::c_ushort,
            filter: self.program.as_ptr().cast_mut(),
        };
        // SAFETY: `prog` points to `len` valid BPF instructions that outlive the call; the
        // kernel copies the program before returning.
        let r = unsafe {
            libc::syscall(
                libc::SYS_seccomp,
                libc::SECCOMP_SET_MODE_FILTER,
                self.flags,
                &prog as *const libc::sock_fprog,
            )
        };
        if r < 0 {
            let e = std::io::Error::last_os_error();
            let hint = match e.raw_os_error() {
                Some(libc::EACCES) => {
                    " (loading a filter needs no_new_privs or CAP_SYS_ADMIN; \
                     set process.noNewPrivileges or keep CAP_SYS_ADMIN)"
                }
                Some(libc::EINVAL) if self.flags != 0 => {
                    " (the kernel may not support one of the profile's flags)"
                }
                _ => "",
            };
            return Err(err(format!(
                "load filter (flags {:#x}): {e}{hint}",
                self.flags
            )));
        }
        if self.listener {
            // SAFETY: with SECCOMP_FILTER_FLAG_NEW_LISTENER the kernel returns a new fd
            // (close-on-exec) that nothing else owns.
            return Ok(Some(unsafe { OwnedFd::from_raw_fd(r as libc::c_int) }));
        }
        Ok(None)
    }
}

/// The BPF program libseccomp generated for `ctx`, through a memfd (libseccomp < 2.6 can only
/// export to an fd).
fn export(ctx: &ScmpFilterContext) -> Result<Vec<libc::sock_filter>, SeccompError> {
    // SAFETY: memfd_create with a NUL-terminated name; the fd is owned below.
    let fd = unsafe { libc::memfd_create(c"berth-seccomp".as_ptr(), libc::MFD_CLOEXEC) };
    if fd < 0 {
        return Err(err(format!(
            "memfd_create for the BPF export: {}",
            std::io::Error::last_os_error()
        )));
    }
    // SAFETY: a new fd that nothing else owns.
    let mut file = std::fs::File::from(unsafe { OwnedFd::from_raw_fd(fd) });
    ctx.export_bpf(&file)
        .map_err(|e| err(format!("export BPF: {e}")))?;
    let mut bytes = Vec::new();
    file.rewind()
        .and_then(|_| file.read_to_end(&mut bytes))
        .map_err(|e| err(format!("read exported BPF: {e}")))?;
    let size = std::mem::size_of::<libc::sock_filter>();
    if bytes.len() % size != 0 || bytes.is_empty() || bytes.len() / size > usize::from(u16::MAX) {
        return Err(err(format!(
            "libseccomp exported a BPF program of {} bytes",
            bytes.len()
        )));
    }
    Ok(bytes
        .chunks_exact(size)
        .map(|c| libc::sock_filter {
            code: u16::from_ne_bytes([c[0], c[1]]),
            jt: c[2],
            jf: c[3],
            k: u32::from_ne_bytes([c[4], c[5], c[6], c[7]]),
        })
        .collect())
}

fn arch(a: Arch) -> ScmpArch {
    match a {
        Arch::ScmpArchNative => ScmpArch::Native,
        Arch::ScmpArchX86 => ScmpArch::X86,
        Arch::ScmpArchX86_64 => ScmpArch::X8664,
        Arch::ScmpArchX32 => ScmpArch::X32,
        Arch::ScmpArchArm => ScmpArch::Arm,
        Arch::ScmpArchAarch64 => ScmpArch::Aarch64,
        Arch::ScmpArchMips => ScmpArch::Mips,
        Arch::ScmpArchMips64 => ScmpArch::Mips64,
        Arch::ScmpArchMips64n32 => ScmpArch::Mips64N32,
        Arch::ScmpArchMipsel => ScmpArch::Mipsel,
        Arch::ScmpArchMipsel64 => ScmpArch::Mipsel64,
        Arch::ScmpArchMipsel64n32 => ScmpArch::Mipsel64N32,
        Arch::ScmpArchPpc => ScmpArch::Ppc,
        Arch::ScmpArchPpc64 => ScmpArch::Ppc64,
        Arch::ScmpArchPpc64le => ScmpArch::Ppc64Le,
        Arch::ScmpArchS390 => ScmpArch::S390,
        Arch::ScmpArchS390x => ScmpArch::S390X,
        Arch::ScmpArchParisc => ScmpArch::Parisc,
        Arch::ScmpArchParisc64 => ScmpArch::Parisc64,
        Arch::ScmpArchRiscv64 => ScmpArch::Riscv64,
        Arch::ScmpArchLoongarch64 => ScmpArch::Loongarch64,
        Arch::ScmpArchM68k => ScmpArch::M68k,
        Arch::ScmpArchSh => ScmpArch::Sh,
        Arch::ScmpArchSheb => ScmpArch::Sheb,
    }
}

/// The libseccomp action; `errnoRet` (default EPERM) is the errno of SCMP_ACT_ERRNO and the
/// message of SCMP_ACT_TRACE.
fn action(
    a: LinuxSeccompAction,
    errno_ret: Option<u32>,
    field: &str,
) -> Result<ScmpAction, SeccompError> {
    let ret = || -> Result<u16, SeccompError> {
        let v = errno_ret.unwrap_or(libc::EPERM as u32);
        u16::try_from(v).map_err(|_| err(format!("{field}: errnoRet {v} is above 65535")))
    };
    Ok(match a {
        LinuxSeccompAction::ScmpActKill | LinuxSeccompAction::ScmpActKillThread => {
            ScmpAction::KillThread
        }
        LinuxSeccompAction::ScmpActKillProcess => ScmpAction::KillProcess,
        LinuxSeccompAction::ScmpActTrap => ScmpAction::Trap,
        LinuxSeccompAction::ScmpActErrno => ScmpAction::Errno(i32::from(ret()?)),
        LinuxSeccompAction::ScmpActTrace => ScmpAction::Trace(ret()?),
        LinuxSeccompAction::ScmpActNotify => ScmpAction::Notify,
        LinuxSeccompAction::ScmpActLog => ScmpAction::Log,
        LinuxSeccompAction::ScmpActAllow => ScmpAction::Allow,
    })
}

fn condition(a: &LinuxSeccompArg) -> ScmpArgCompare {
    let op = match a.op() {
        LinuxSeccompOperator::ScmpCmpNe => ScmpCompareOp::NotEqual,
        LinuxSeccompOperator::ScmpCmpLt => ScmpCompareOp::Less,
        LinuxSeccompOperator::ScmpCmpLe => ScmpCompareOp::LessOrEqual,
        LinuxSeccompOperator::ScmpCmpEq => ScmpCompareOp::Equal,
        LinuxSeccompOperator::ScmpCmpGe => ScmpCompareOp::GreaterEqual,
        LinuxSeccompOperator::ScmpCmpGt => ScmpCompareOp::Greater,
        // `value` is the mask, `valueTwo` what the masked argument must equal.
        LinuxSeccompOperator::ScmpCmpMaskedEq => {
            return ScmpArgCompare::new(
                a.index() as u32,
                ScmpCompareOp::MaskedEqual(a.value()),
                a.value_two().unwrap_or(0),
            )
        }
    };
    ScmpArgCompare::new(a.index() as u32, op, a.value())
}

/// The condition lists of a syscall entry, one rule each: all conditions in one rule, or (when
/// an argument index repeats, which libseccomp refuses in one rule) one rule per condition.
fn conditions(sc: &LinuxSyscall) -> Result<Vec<Vec<ScmpArgCompare>>, String> {
    let args = sc.args().as_deref().unwrap_or_default();
    let mut count = [0usize; MAX_ARGS];
    for a in args {
        let slot = count.get_mut(a.index()).ok_or_else(|| {
            format!(
                "argument index {} out of range (syscalls take {MAX_ARGS})",
                a.index()
            )
        })?;
        *slot += 1;
    }
    if count.iter().any(|c| *c > 1) {
        Ok(args.iter().map(|a| vec![condition(a)]).collect())
    } else {
        Ok(vec![args.iter().map(condition).collect()])
    }
}
