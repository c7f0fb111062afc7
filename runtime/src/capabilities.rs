//! Capability sets of the container process (bounding, effective, permitted, inheritable, ambient).
//!
//! OWNER: process-attributes helper. The init calls `drop_bounding` while it is still root with
//! full capabilities, then changes uid/gid keeping capabilities (PR_SET_KEEPCAPS), then `apply`.
//!
//! Terms: a *set* is a 64-bit mask, bit `n` standing for capability number `n` (`CAP_CHOWN` is 0,
//! `CAP_CHECKPOINT_RESTORE` 40). The kernel only knows capabilities up to
//! `/proc/sys/kernel/cap_last_cap`; a spec may name newer ones, which are ignored as runc does.
//!
//! Where the host allows less than the spec asks (this machine has no `CAP_SYS_RESOURCE` in its
//! bounding set, see DESIGN.md), the process keeps what it can have instead of failing:
//! [`unavailable`] names what the host cannot grant at all (one warning), and
//! [`apply_with_warnings`] what else was left out.

use crate::{Error, Result};
use oci_spec::runtime::{Capabilities, Capability, LinuxCapabilities};

/// The kernel's number for a capability (`linux/capability.h`).
pub fn number(cap: Capability) -> u8 {
    use Capability::*;
    match cap {
        Chown => 0,
        DacOverride => 1,
        DacReadSearch => 2,
        Fowner => 3,
        Fsetid => 4,
        Kill => 5,
        Setgid => 6,
        Setuid => 7,
        Setpcap => 8,
        LinuxImmutable => 9,
        NetBindService => 10,
        NetBroadcast => 11,
        NetAdmin => 12,
        NetRaw => 13,
        IpcLock => 14,
        IpcOwner => 15,
        SysModule => 16,
        SysRawio => 17,
        SysChroot => 18,
        SysPtrace => 19,
        SysPacct => 20,
        SysAdmin => 21,
        SysBoot => 22,
        SysNice => 23,
        SysResource => 24,
        SysTime => 25,
        SysTtyConfig => 26,
        Mknod => 27,
        Lease => 28,
        AuditWrite => 29,
        AuditControl => 30,
        Setfcap => 31,
        MacOverride => 32,
        MacAdmin => 33,
        Syslog => 34,
        WakeAlarm => 35,
        BlockSuspend => 36,
        AuditRead => 37,
        Perfmon => 38,
        Bpf => 39,
        CheckpointRestore => 40,
    }
}

/// The highest capability number the running kernel knows (`/proc/sys/kernel/cap_last_cap`).
/// Kernels too old to have the file get `CAP_AUDIT_READ` (3.16), like runc's fallback.
pub fn last_cap() -> u8 {
    std::fs::read_to_string("/proc/sys/kernel/cap_last_cap")
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(37)
        .min(63)
}

/// Mask of a set from the spec, keeping only capabilities the kernel knows. Missing = empty.
fn mask(set: &Option<Capabilities>, last: u8) -> u64 {
    set.iter()
        .flatten()
        .map(|c| number(*c))
        .filter(|n| *n <= last)
        .fold(0, |m, n| m | (1u64 << n))
}

/// Capabilities of any set of `caps` that this host cannot grant at all: unknown to the kernel
/// (above `cap_last_cap`) or outside the calling process's bounding set. Call it before
/// [`drop_bounding`], while the bounding set is still the host's.
pub fn unavailable(caps: &LinuxCapabilities) -> u64 {
    let last = last_cap();
    unavailable_in(caps, last, read_bounding(last))
}

/// [`unavailable`] for a kernel whose last capability is `last` and a bounding set `bounding`.
fn unavailable_in(caps: &LinuxCapabilities, last: u8, bounding: u64) -> u64 {
    [
        caps.bounding(),
        caps.effective(),
        caps.permitted(),
        caps.inheritable(),
        caps.ambient(),
    ]
    .into_iter()
    .flatten()
    .flatten()
    .map(|c| number(*c))
    .filter(|n| *n > last || bounding & (1u64 << n) == 0)
    .fold(0, |m, n| m | (1u64 << n))
}

/// The one warning for [`unavailable`] capabilities (the runtime spec: a capability that
/// cannot be granted is logged as a warning, and the container runs without it).
pub fn unavailable_warning(missing: u64) -> Option<String> {
    (missing != 0).then(|| {
        format!(
            "capabilities: ignoring {}: unknown to this kernel or outside the host's bounding set",
            names(missing)
        )
    })
}

/// Drops from the bounding set every capability not in `caps.bounding`.
pub fn drop_bounding(caps: &LinuxCapabilities) -> Result<()> {
    let last = last_cap();
    let keep = mask(caps.bounding(), last);
    for n in 0..=last {
        if keep & (1 << n) != 0 || !in_bounding(n) {
            continue;
        }
        // SAFETY: prctl with integer arguments only.
        if unsafe { libc::prctl(libc::PR_CAPBSET_DROP, libc::c_ulong::from(n), 0, 0, 0) } < 0 {
            return Err(Error::Other(format!(
                "drop capability {} from the bounding set: {}",
                name(n),
                std::io::Error::last_os_error()
            )));
        }
    }
    Ok(())
}

/// Sets effective, permitted, inheritable and ambient sets exactly as the spec lists them.
///
/// Capabilities the host does not allow are left out rather than failing; use
/// [`apply_with_warnings`] to learn which.
pub fn apply(caps: &LinuxCapabilities) -> Result<()> {
    apply_with_warnings(caps, 0).map(|_| ())
}

/// [`apply`], returning one warning per set in which the host refused some capabilities.
///
/// - effective, permitted and inheritable are set in one `capset` call, each intersected with
///   what the process may still have (capset(2)): its permitted set for effective/permitted;
///   for inheritable, its inheritable set plus the bounding set (with `CAP_SETPCAP` effective)
///   or plus the permitted capabilities within the bounding set (without);
/// - ambient is cleared, then each listed capability raised; one that is not both permitted and
///   inheritable cannot be ambient and is skipped. As runc, silently where the spec itself does
///   not list it as both (runc's own `spec` asks for ambient capabilities and no inheritable
///   ones); with a warning where the host refused it.
///
/// Capabilities in `warned` (see [`unavailable`]) were already reported and are not again.
pub fn apply_with_warnings(caps: &LinuxCapabilities, warned: u64) -> Result<Vec<String>> {
    let last = last_cap();
    let (cur_eff, cur_prm, cur_inh) = capget()?;
    let bounding = read_bounding(last);

    let want_eff = mask(caps.effective(), last);
    let want_prm = mask(caps.permitted(), last);
    let want_inh = mask(caps.inheritable(), last);
    let want_amb = mask(caps.ambient(), last);

    let prm = want_prm & cur_prm;
    // The kernel also wants effective within the new permitted set.
    let eff = want_eff & prm;
    // capset(2): inheritable may grow within the bounding set only with CAP_SETPCAP in effective,
    // which a process that just left uid 0 no longer has; otherwise only within permitted.
    let setpcap = 1u64 << number(Capability::Setpcap);
    let inh_allowed = if cur_eff & setpcap != 0 {
        cur_inh | bounding
    } else {
        cur_inh | (cur_prm & bounding)
    };
    let inh = want_inh & inh_allowed;
    let mut warnings = Vec::new();
    for (set, want, got) in [
        ("permitted", want_prm, prm),
        ("effective", want_eff, eff),
        ("inheritable", want_inh, inh),
    ] {
        if (want & !got) & !warned != 0 {
            warnings.push(format!(
                "capabilities: {} not available to the {set} set on this host, left out",
                names(want & !got & !warned)
            ));
        }
    }
    capset(eff, prm, inh)?;

    // SAFETY: prctl with integer arguments only.
    let r = unsafe {
        libc::prctl(
            libc::PR_CAP_AMBIENT,
            libc::PR_CAP_AMBIENT_CLEAR_ALL,
            0,
            0,
            0,
        )
    };
    if r < 0 {
        let err = std::io::Error::last_os_error();
        // EINVAL: a kernel without ambient capabilities (< 4.3): nothing to clear or raise.
        if err.raw_os_error() == Some(libc::EINVAL) {
            if want_amb != 0 {
                warnings.push("capabilities: the kernel has no ambient set, left empty".into());
            }
            return Ok(warnings);
        }
        return Err(Error::Other(format!("clear ambient capabilities: {err}")));
    }
    let mut refused = 0u64;
    for n in 0..=last {
        if want_amb & (1 << n) == 0 {
            continue;
        }
        // SAFETY: prctl with integer arguments only.
        let r = unsafe {
            libc::prctl(
                libc::PR_CAP_AMBIENT,
                libc::PR_CAP_AMBIENT_RAISE,
                libc::c_ulong::from(n),
                0,
                0,
            )
        };
        if r < 0 {
            refused |= 1 << n;
        }
    }
    refused &= want_prm & want_inh & !warned;
    if refused != 0 {
        warnings.push(format!(
            "capabilities: cannot raise ambient {} (must be both permitted and inheritable), left out",
            names(refused)
        ));
    }
    Ok(warnings)
}

/// Whether capability `n` is in the calling thread's bounding set.
fn in_bounding(n: u8) -> bool {
    // SAFETY: prctl with integer arguments only.
    unsafe { libc::prctl(libc::PR_CAPBSET_READ, libc::c_ulong::from(n), 0, 0, 0) > 0 }
}

fn read_bounding(last: u8) -> u64 {
    (0..=last)
        .filter(|n| in_bounding(*n))
        .fold(0, |m, n| m | (1 << n))
}

/// `struct __user_cap_header_struct`.
#[repr(C)]
struct CapHeader {
    version: u32,
    pid: libc::c_int,
}

/// `struct __user_cap_data_struct`; version 3 takes two of them (low and high 32 bits).
#[repr(C)]
#[derive(Default, Clone, Copy)]
struct CapData {
    effective: u32,
    permitted: u32,
    inheritable: u32,
}

const LINUX_CAPABILITY_VERSION_3: u32 = 0x2008_0522;

/// The calling thread's (effective, permitted, inheritable) sets.
fn capget() -> Result<(u64, u64, u64)> {
    let mut hdr = CapHeader {
        version: LINUX_CAPABILITY_VERSION_3,
        pid: 0,
    };
    let mut data = [CapData::default(); 2];
    // SAFETY: the header and the two data structs are the layout capget(2) expects for
    // version 3, and both outlive the call.
    let r = unsafe { libc::syscall(libc::SYS_capget, &mut hdr, data.as_mut_ptr()) };
    if r < 0 {
        return Err(Error::Other(format!(
            "capget: {}",
            std::io::Error::last_os_error()
        )));
    }
    let join = |lo: u32, hi: u32| u64::from(lo) | (u64::from(hi) << 32);
    Ok((
        join(data[0].effective, data[1].effective),
        join(data[0].permitted, data[1].permitted),
        join(data[0].inheritable, data[1].inheritable),
    ))
}

/// Sets the calling thread's three sets in one call, so no intermediate state is refused.
fn capset(eff: u64, prm: u64, inh: u64) -> Result<()> {
    let mut hdr = CapHeader {
        version: LINUX_CAPABILITY_VERSION_3,
        pid: 0,
    };
    let data = [
        CapData {
            effective: eff as u32,
            permitted: prm as u32,
            inheritable: inh as u32,
        },
        CapData {
            effective: (eff >> 32) as u32,
            permitted: (prm >> 32) as u32,
            inheritable: (inh >> 32) as u32,
        },
    ];
    // SAFETY: as in capget; capset only reads the data.
    let r = unsafe { libc::syscall(libc::SYS_capset, &mut hdr, data.as_ptr()) };
    if r < 0 {
        return Err(Error::Other(format!(
            "capset effective={} permitted={} inheritable={}: {}",
            names(eff),
            names(prm),
            names(inh),
            std::io::Error::last_os_error()
        )));
    }
    Ok(())
}

/// `CAP_CHOWN`-style name of a capability number.
fn name(n: u8) -> String {
    caps::all()
        .into_iter()
        .find(|c| c.index() == n)
        .map_or_else(|| format!("capability {n}"), |c| c.to_string())
}

/// Names of the capabilities in a mask, comma-separated.
fn names(m: u64) -> String {
    let v: Vec<String> = (0..64u8).filter(|n| m & (1 << n) != 0).map(name).collect();
    if v.is_empty() {
        "none".into()
    } else {
        v.join(",")
    }
}

#[cfg(test)]
mod tests;
