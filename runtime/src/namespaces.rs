//! Namespaces of the spec: which to create (clone flags) and which to join (by path).

use crate::error::{IoContext, Result};
use crate::{Error, SysContext};
use nix::sched::{setns, CloneFlags};
use oci_spec::runtime::{LinuxNamespace, LinuxNamespaceType, Spec};
use std::fs::File;
use std::os::fd::OwnedFd;
use std::path::PathBuf;

pub fn flag(t: LinuxNamespaceType) -> CloneFlags {
    match t {
        LinuxNamespaceType::Mount => CloneFlags::CLONE_NEWNS,
        LinuxNamespaceType::Cgroup => CloneFlags::CLONE_NEWCGROUP,
        LinuxNamespaceType::Uts => CloneFlags::CLONE_NEWUTS,
        LinuxNamespaceType::Ipc => CloneFlags::CLONE_NEWIPC,
        LinuxNamespaceType::User => CloneFlags::CLONE_NEWUSER,
        LinuxNamespaceType::Pid => CloneFlags::CLONE_NEWPID,
        LinuxNamespaceType::Network => CloneFlags::CLONE_NEWNET,
        // CLONE_NEWTIME shares its value with CSIGNAL bits in clone(), but clone3/unshare take it.
        LinuxNamespaceType::Time => CloneFlags::from_bits_retain(libc::CLONE_NEWTIME),
    }
}

/// `/proc/<pid>/ns/<name>` file name of a namespace type.
pub fn proc_name(t: LinuxNamespaceType) -> &'static str {
    match t {
        LinuxNamespaceType::Mount => "mnt",
        LinuxNamespaceType::Cgroup => "cgroup",
        LinuxNamespaceType::Uts => "uts",
        LinuxNamespaceType::Ipc => "ipc",
        LinuxNamespaceType::User => "user",
        LinuxNamespaceType::Pid => "pid",
        LinuxNamespaceType::Network => "net",
        LinuxNamespaceType::Time => "time",
    }
}

/// The namespace plan of a container.
#[derive(Debug)]
pub struct Plan {
    /// Namespaces to create.
    pub new: CloneFlags,
    /// Namespaces to join, opened before anything changes: (type, fd, path).
    pub join: Vec<(LinuxNamespaceType, OwnedFd, PathBuf)>,
}

impl Plan {
    pub fn from_spec(spec: &Spec) -> Result<Plan> {
        let mut plan = Plan {
            new: CloneFlags::empty(),
            join: Vec::new(),
        };
        let empty = vec![];
        let list: &Vec<LinuxNamespace> = spec
            .linux()
            .as_ref()
            .and_then(|l| l.namespaces().as_ref())
            .unwrap_or(&empty);
        for ns in list {
            match ns.path() {
                Some(p) if !p.as_os_str().is_empty() => {
                    let f = File::open(p).io_ctx("open namespace", p)?;
                    plan.join.push((ns.typ(), f.into(), p.clone()));
                }
                _ => plan.new |= flag(ns.typ()),
            }
        }
        // The user namespace is joined first: the others are owned by it.
        plan.join
            .sort_by_key(|(t, _, _)| *t != LinuxNamespaceType::User);
        Ok(plan)
    }

    pub fn creates(&self, t: LinuxNamespaceType) -> bool {
        self.new.contains(flag(t))
    }

    pub fn joins(&self, t: LinuxNamespaceType) -> bool {
        self.join.iter().any(|(jt, _, _)| *jt == t)
    }

    /// Joins the namespaces of the given types (in the plan's order).
    pub fn join_types(&self, types: &[LinuxNamespaceType]) -> Result<()> {
        for (t, fd, path) in &self.join {
            if types.contains(t) {
                setns(fd, flag(*t)).ctx(|| format!("join {} namespace {path:?}", proc_name(*t)))?;
            }
        }
        Ok(())
    }
}

/// Opens `/proc/<pid>/ns/*` of a running container, for `exec`: (type, fd), user first.
pub fn open_of_pid(
    pid: i32,
    types: &[LinuxNamespaceType],
) -> Result<Vec<(LinuxNamespaceType, OwnedFd)>> {
    let self_ns = |name: &str| std::fs::read_link(format!("/proc/self/ns/{name}")).ok();
    let mut out = Vec::new();
    for &t in types {
        let path = PathBuf::from(format!("/proc/{pid}/ns/{}", proc_name(t)));
        let target = std::fs::read_link(&path)
            .map_err(|e| Error::Other(format!("container process {pid}: {path:?}: {e}")))?;
        if Some(&target) == self_ns(proc_name(t)).as_ref() {
            continue; // already there (host namespace)
        }
        let f = File::open(&path).io_ctx("open namespace", &path)?;
        out.push((t, f.into()));
    }
    out.sort_by_key(|(t, _)| *t != LinuxNamespaceType::User);
    Ok(out)
}

/// Sets `lo` up in the current (new) network namespace.
pub fn loopback_up() -> Result<()> {
    let fail = |what: &str| {
        Error::Other(format!(
            "bring up lo in the new network namespace: {what}: {}",
            std::io::Error::last_os_error()
        ))
    };
    // SAFETY: socket(2) with constant arguments; the fd is closed below.
    let sock = unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
    if sock < 0 {
        return Err(fail("socket"));
    }
    // SAFETY: a fresh fd we own.
    let sock = unsafe { <std::os::fd::OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(sock) };
    // SAFETY: ifreq is plain data; all-zero is a valid value.
    let mut ifr: libc::ifreq = unsafe { std::mem::zeroed() };
    for (d, s) in ifr.ifr_name.iter_mut().zip(b"lo\0") {
        *d = *s as libc::c_char;
    }
    use std::os::fd::AsRawFd;
    // SAFETY: SIOCGIFFLAGS/SIOCSIFFLAGS read and write the ifreq we pass.
    unsafe {
        if libc::ioctl(sock.as_raw_fd(), libc::SIOCGIFFLAGS, &mut ifr) < 0 {
            return Err(fail("get flags"));
        }
        ifr.ifr_ifru.ifru_flags |= libc::IFF_UP as libc::c_short;
        if libc::ioctl(sock.as_raw_fd(), libc::SIOCSIFFLAGS, &ifr) < 0 {
            return Err(fail("set flags"));
        }
    }
    Ok(())
}
