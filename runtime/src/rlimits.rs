//! `process.rlimits`, and `oomScoreAdj`.
//!
//! OWNER: process-attributes helper. Where the host does not allow a value (raising a hard limit
//! without CAP_SYS_RESOURCE, a negative oom_score_adj), the setting is skipped with a warning
//! returned to the caller instead of failing the container (see DESIGN.md).
//!
//! A refused hard limit is *clamped*, not dropped: the hard limit stays where the host has it and
//! the soft limit becomes the smaller of the asked soft limit and that hard limit, so the
//! container gets as close to the spec as the host allows.

use crate::{Error, Result};
use oci_spec::runtime::{PosixRlimit, PosixRlimitType};

/// The `RLIMIT_*` resource number and name of a spec type.
fn resource(typ: PosixRlimitType) -> (libc::__rlimit_resource_t, &'static str) {
    use PosixRlimitType::*;
    match typ {
        RlimitCpu => (libc::RLIMIT_CPU, "RLIMIT_CPU"),
        RlimitFsize => (libc::RLIMIT_FSIZE, "RLIMIT_FSIZE"),
        RlimitData => (libc::RLIMIT_DATA, "RLIMIT_DATA"),
        RlimitStack => (libc::RLIMIT_STACK, "RLIMIT_STACK"),
        RlimitCore => (libc::RLIMIT_CORE, "RLIMIT_CORE"),
        RlimitRss => (libc::RLIMIT_RSS, "RLIMIT_RSS"),
        RlimitNproc => (libc::RLIMIT_NPROC, "RLIMIT_NPROC"),
        RlimitNofile => (libc::RLIMIT_NOFILE, "RLIMIT_NOFILE"),
        RlimitMemlock => (libc::RLIMIT_MEMLOCK, "RLIMIT_MEMLOCK"),
        RlimitAs => (libc::RLIMIT_AS, "RLIMIT_AS"),
        RlimitLocks => (libc::RLIMIT_LOCKS, "RLIMIT_LOCKS"),
        RlimitSigpending => (libc::RLIMIT_SIGPENDING, "RLIMIT_SIGPENDING"),
        RlimitMsgqueue => (libc::RLIMIT_MSGQUEUE, "RLIMIT_MSGQUEUE"),
        RlimitNice => (libc::RLIMIT_NICE, "RLIMIT_NICE"),
        RlimitRtprio => (libc::RLIMIT_RTPRIO, "RLIMIT_RTPRIO"),
        RlimitRttime => (libc::RLIMIT_RTTIME, "RLIMIT_RTTIME"),
    }
}

fn getrlimit(res: libc::__rlimit_resource_t) -> std::io::Result<libc::rlimit> {
    let mut cur = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes one rlimit struct, which lives on our stack.
    if unsafe { libc::getrlimit(res, &mut cur) } < 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(cur)
}

fn setrlimit(res: libc::__rlimit_resource_t, soft: u64, hard: u64) -> std::io::Result<()> {
    let lim = libc::rlimit {
        rlim_cur: soft as libc::rlim_t,
        rlim_max: hard as libc::rlim_t,
    };
    // SAFETY: setrlimit reads one rlimit struct, which lives on our stack.
    if unsafe { libc::setrlimit(res, &lim) } < 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

/// Whether the calling thread has CAP_SYS_RESOURCE in its effective set (to explain a refusal).
fn has_sys_resource() -> bool {
    caps::has_cap(
        None,
        caps::CapSet::Effective,
        caps::Capability::CAP_SYS_RESOURCE,
    )
    .unwrap_or(false)
}

/// Applies the rlimits to the calling process; returns warnings for those the host refused.
///
/// Two entries of the same type are an error (the spec says a type may appear once); so is a
/// soft limit above its hard limit (EINVAL from the kernel).
pub fn apply(rlimits: &[PosixRlimit]) -> Result<Vec<String>> {
    let mut seen = Vec::with_capacity(rlimits.len());
    for r in rlimits {
        let (res, name) = resource(r.typ());
        if seen.contains(&res) {
            return Err(Error::Other(format!(
                "rlimit {name} appears more than once in process.rlimits"
            )));
        }
        seen.push(res);
    }

    let mut warnings = Vec::new();
    for r in rlimits {
        let (res, name) = resource(r.typ());
        let (soft, hard) = (r.soft(), r.hard());
        let err = match setrlimit(res, soft, hard) {
            Ok(()) => continue,
            Err(e) => e,
        };
        if err.raw_os_error() != Some(libc::EPERM) {
            return Err(Error::Other(format!(
                "setrlimit {name} soft={soft} hard={hard}: {err}"
            )));
        }
        // EPERM: the hard limit is above what we may raise it to (no CAP_SYS_RESOURCE, or
        // RLIMIT_NOFILE above fs.nr_open). Keep the host's hard limit.
        let cur = getrlimit(res).map_err(|e| Error::Other(format!("getrlimit {name}: {e}")))?;
        let host_hard = cur.rlim_max as u64;
        if hard <= host_hard {
            return Err(Error::Other(format!(
                "setrlimit {name} soft={soft} hard={hard}: {err}"
            )));
        }
        let kept_soft = soft.min(host_hard);
        setrlimit(res, kept_soft, host_hard).map_err(|e| {
            Error::Other(format!(
                "setrlimit {name} soft={kept_soft} hard={host_hard} (clamped from hard={hard}): {e}"
            ))
        })?;
        let why = if has_sys_resource() {
            "above the kernel's maximum"
        } else {
            "no CAP_SYS_RESOURCE"
        };
        let mut w = format!(
            "rlimit {name}: hard limit {hard} above the host's {host_hard}, kept {host_hard} ({why})"
        );
        if kept_soft != soft {
            w.push_str(&format!("; soft limit {soft} lowered to {kept_soft}"));
        }
        warnings.push(w);
    }
    Ok(warnings)
}

/// Writes `/proc/<pid>/oom_score_adj`; returns a warning if the host refused it.
///
/// Lowering the score below the current value needs CAP_SYS_RESOURCE; without it the kernel
/// answers EACCES (EPERM on some kernels) and the process keeps the score it inherited.
/// Values outside -1000..=1000 are an error.
pub fn set_oom_score_adj(pid: i32, value: i32) -> Result<Option<String>> {
    if !(-1000..=1000).contains(&value) {
        return Err(Error::Other(format!(
            "oomScoreAdj {value} is outside -1000..=1000"
        )));
    }
    let path = format!("/proc/{pid}/oom_score_adj");
    match std::fs::write(&path, value.to_string()) {
        Ok(()) => Ok(None),
        Err(e) if matches!(e.raw_os_error(), Some(libc::EACCES | libc::EPERM)) => {
            let kept = std::fs::read_to_string(&path)
                .map(|s| s.trim().to_string())
                .unwrap_or_else(|_| "?".into());
            Ok(Some(format!(
                "oomScoreAdj {value} not allowed by the host ({e}), kept {kept}"
            )))
        }
        Err(e) => Err(Error::Io {
            context: "write oom_score_adj",
            path: path.into(),
            source: e,
        }),
    }
}

#[cfg(test)]
mod tests;
