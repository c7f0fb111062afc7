//! The -ENOSYS stub runc puts in front of a filter (runc 1.1's `patchbpf`): a syscall with a
//! number above the highest one the profile names gets ENOSYS instead of the default action.
//!
//! Why: a profile is written against the syscalls of its day. A newer syscall (clone3, faccessat2,
//! openat2, …) would get the default action, usually EPERM, and glibc takes EPERM for "forbidden"
//! where ENOSYS would have made it fall back to the older syscall the profile allows. runc
//! therefore answers ENOSYS for every syscall newer than the profile's newest, per architecture.
//! Like runc, no stub when the default action lets syscalls through (allow, log, trace) or is
//! already ENOSYS.
//!
//! The stub, for architectures A₁…Aₙ with highest profile syscalls M₁…Mₙ:
//!
//! ```text
//!        ld  [arch]
//!        jeq A₁, s₁        ; one per architecture
//!        …
//!        ja  filter        ; another architecture: the profile's filter decides
//! s₁:    ld  [nr]
//!        jgt M₁, enosys, filter
//!        …
//! enosys: ret ERRNO(ENOSYS)
//! filter: (libseccomp's program, which loads what it needs itself)
//! ```
//!
//! x86-64 and x32 share one audit architecture; an x32 syscall has bit 30 set in its number, so
//! that section first tests the bit and compares with the maximum of the ABI in use. s390's
//! syscall multiplexing (unknown syscalls arrive as number 0) and the MIPS ABIs are not covered:
//! the filter decides there, as it did before.

use libseccomp::{ScmpArch, ScmpSyscall};
use oci_spec::runtime::{LinuxSeccomp, LinuxSeccompAction};
use std::collections::BTreeMap;

const AUDIT_ARCH_X86_64: u32 = 0xC000_003E;
const AUDIT_ARCH_I386: u32 = 0x4000_0003;
const AUDIT_ARCH_AARCH64: u32 = 0xC000_00B7;
const AUDIT_ARCH_ARM: u32 = 0x4000_0028;
const AUDIT_ARCH_RISCV64: u32 = 0xC000_00F3;
const AUDIT_ARCH_PPC64LE: u32 = 0xC000_0015;
const AUDIT_ARCH_PPC64: u32 = 0x8000_0015;
const AUDIT_ARCH_PPC: u32 = 0x0000_0014;
const AUDIT_ARCH_LOONGARCH64: u32 = 0xC000_0102;
const X32_SYSCALL_BIT: u32 = 0x4000_0000;

/// `offsetof(struct seccomp_data, nr)` and `arch`.
const DATA_NR: u32 = 0;
const DATA_ARCH: u32 = 4;

const LD_W_ABS: u16 = (libc::BPF_LD | libc::BPF_W | libc::BPF_ABS) as u16;
const JEQ_K: u16 = (libc::BPF_JMP | libc::BPF_JEQ | libc::BPF_K) as u16;
const JGT_K: u16 = (libc::BPF_JMP | libc::BPF_JGT | libc::BPF_K) as u16;
const JSET_K: u16 = (libc::BPF_JMP | libc::BPF_JSET | libc::BPF_K) as u16;
const JA: u16 = (libc::BPF_JMP | libc::BPF_JA) as u16;
const RET_K: u16 = (libc::BPF_RET | libc::BPF_K) as u16;

/// Where a jump goes: an instruction of the stub, the ENOSYS return, or the filter after it.
#[derive(Clone, Copy)]
enum To {
    At(usize),
    Enosys,
    Filter,
}

enum Insn {
    Load(u32),
    /// `code k, jt, jf`
    Jump(u16, u32, To, To),
    Always(To),
}

/// The audit architecture of a libseccomp one, and whether it is the x32 ABI. `None` for
/// those the stub does not cover.
fn audit_arch(a: ScmpArch) -> Option<(u32, bool)> {
    Some(match a {
        ScmpArch::X8664 => (AUDIT_ARCH_X86_64, false),
        ScmpArch::X32 => (AUDIT_ARCH_X86_64, true),
        ScmpArch::X86 => (AUDIT_ARCH_I386, false),
        ScmpArch::Aarch64 => (AUDIT_ARCH_AARCH64, false),
        ScmpArch::Arm => (AUDIT_ARCH_ARM, false),
        ScmpArch::Riscv64 => (AUDIT_ARCH_RISCV64, false),
        ScmpArch::Ppc64Le => (AUDIT_ARCH_PPC64LE, false),
        ScmpArch::Ppc64 => (AUDIT_ARCH_PPC64, false),
        ScmpArch::Ppc => (AUDIT_ARCH_PPC, false),
        ScmpArch::Loongarch64 => (AUDIT_ARCH_LOONGARCH64, false),
        _ => return None,
    })
}

/// The highest syscall number the profile names (any action), for x86-64 (native ABI, x32) and
/// every other covered architecture of the filter. Names unknown to an architecture, or that
/// are no syscall of their own there, are skipped.
fn last_syscalls(profile: &LinuxSeccomp, arches: &[ScmpArch]) -> BTreeMap<u32, [Option<u32>; 2]> {
    let mut out: BTreeMap<u32, [Option<u32>; 2]> = BTreeMap::new();
    for &arch in arches {
        let arch = if arch == ScmpArch::Native {
            ScmpArch::native()
        } else {
            arch
        };
        let Some((audit, x32)) = audit_arch(arch) else {
            continue;
        };
        let max = profile
            .syscalls()
            .iter()
            .flatten()
            .flat_map(|s| s.names())
            .filter_map(|n| ScmpSyscall::from_name_by_arch(n, arch).ok())
            // A name without a syscall of its own on `arch` (socket on i386, …) resolves to a
            // negative pseudo-number: not a syscall number.
            .filter_map(|s| u32::try_from(i32::from(s)).ok())
            .max();
        let Some(mut max) = max else { continue };
        if x32 {
            max |= X32_SYSCALL_BIT;
        }
        out.entry(audit).or_default()[usize::from(x32)] = Some(max);
    }
    out
}

/// The stub for `profile`, whose filter covers `arches` (empty if none is needed).
pub(super) fn stub(profile: &LinuxSeccomp, arches: &[ScmpArch]) -> Vec<libc::sock_filter> {
    match profile.default_action() {
        LinuxSeccompAction::ScmpActAllow
        | LinuxSeccompAction::ScmpActLog
        | LinuxSeccompAction::ScmpActTrace => return Vec::new(),
        LinuxSeccompAction::ScmpActErrno
            if profile.default_errno_ret() == Some(libc::ENOSYS as u32) =>
        {
            return Vec::new()
        }
        _ => {}
    }
    let last = last_syscalls(profile, arches);
    if last.is_empty() {
        return Vec::new();
    }
    // The dispatch on the architecture, then one section per architecture.
    let mut code = vec![Insn::Load(DATA_ARCH)];
    let head = 1 + last.len() + 1;
    let mut sections = Vec::new();
    for (&audit, &[native, x32]) in &last {
        let start = head + sections.len();
        code.push(Insn::Jump(
            JEQ_K,
            audit,
            To::At(start),
            To::At(code.len() + 1),
        ));
        sections.push(Insn::Load(DATA_NR));
        let cmp = |max: Option<u32>| match max {
            Some(m) => Insn::Jump(JGT_K, m, To::Enosys, To::Filter),
            None => Insn::Always(To::Filter),
        };
        if audit == AUDIT_ARCH_X86_64 {
            let here = head + sections.len();
            sections.push(Insn::Jump(
                JSET_K,
                X32_SYSCALL_BIT,
                To::At(here + 2),
                To::At(here + 1),
            ));
            sections.push(cmp(native));
            sections.push(cmp(x32));
        } else {
            sections.push(cmp(native));
        }
    }
    code.push(Insn::Always(To::Filter));
    code.extend(sections);
    let enosys = code.len();
    let filter = enosys + 1;
    let target = |t: To| match t {
        To::At(i) => i,
        To::Enosys => enosys,
        To::Filter => filter,
    };
    let mut out: Vec<libc::sock_filter> = code
        .iter()
        .enumerate()
        .map(|(i, insn)| {
            // Offsets count from the next instruction; the stub is far shorter than 255.
            let off = |t: To| u8::try_from(target(t) - (i + 1)).expect("short stub");
            match *insn {
                Insn::Load(k) => bpf(LD_W_ABS, 0, 0, k),
                Insn::Jump(c, k, jt, jf) => bpf(c, off(jt), off(jf), k),
                Insn::Always(t) => bpf(JA, 0, 0, u32::from(off(t))),
            }
        })
        .collect();
    out.push(bpf(
        RET_K,
        0,
        0,
        libc::SECCOMP_RET_ERRNO | libc::ENOSYS as u32,
    ));
    out
}

fn bpf(code: u16, jt: u8, jf: u8, k: u32) -> libc::sock_filter {
    libc::sock_filter { code, jt, jf, k }
}
