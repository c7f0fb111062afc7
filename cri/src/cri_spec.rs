//! What a kubelet asks of a container beyond docker's options — the pod's namespaces, sysctls,
//! the rest of the security context, devices and resources — and how it lands in the OCI spec.
//!
//! CreateContainer records it as JSON in `ContainerConfig.cri_linux`; [`apply`] lays it over
//! the spec [`crate::spec::build`] made.

use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::path::Path;
use tonic::Status;

/// A seccomp profile, as the CRI names them.
#[derive(Serialize, Deserialize, Debug, Clone, Default, PartialEq)]
#[serde(rename_all = "snake_case")]
pub enum Seccomp {
    /// No filter (the kubelet's default unless the pod asks for one).
    #[default]
    Unconfined,
    /// berth's default profile ([`runtime_default`]).
    RuntimeDefault,
    /// An OCI `linux.seccomp` JSON file on the host.
    Localhost(String),
}

/// An AppArmor profile, as the CRI names them (see [`crate::apparmor`]).
#[derive(Serialize, Deserialize, Debug, Clone, Default, PartialEq)]
#[serde(rename_all = "snake_case")]
pub enum AppArmor {
    /// Nothing asked: berth's default profile where the host has AppArmor, else none.
    #[default]
    Unset,
    Unconfined,
    RuntimeDefault,
    /// A profile loaded on the host, by name.
    Localhost(String),
}

#[derive(Serialize, Deserialize, Debug, Clone, Default, PartialEq)]
pub struct Device {
    pub container_path: String,
    pub host_path: String,
    pub permissions: String,
}

#[derive(Serialize, Deserialize, Debug, Clone, Default, PartialEq)]
#[serde(default)]
pub struct CriLinux {
    /// Namespaces to join, by OCI type (`ipc`, `uts`, `pid`), at these paths.
    pub join: BTreeMap<String, String>,
    /// Namespaces shared with the host (`pid`, `ipc`): none is made for them.
    pub host: Vec<String>,
    pub sysctl: BTreeMap<String, String>,
    /// None: the runtime's defaults.
    pub masked_paths: Option<Vec<String>>,
    pub readonly_paths: Option<Vec<String>>,
    pub no_new_privs: bool,
    pub additional_gids: Vec<u32>,
    /// SupplementalGroupsPolicy Strict: the groups the image's /etc/group gives the user are
    /// not added (Merge, the default, adds them).
    pub strict_groups: bool,
    pub seccomp: Seccomp,
    pub apparmor: AppArmor,
    pub devices: Vec<Device>,
    /// The kubelet's cgroup parent: a cgroupfs path (`/kubepods/burstable/pod…`) or a systemd
    /// slice (`kubepods-burstable-pod….slice`).
    pub cgroup_parent: String,
    pub cpu_shares: u64,
    pub cpu_period: u64,
    pub cpu_quota: i64,
    pub cpuset_cpus: String,
    pub cpuset_mems: String,
    pub oom_score_adj: Option<i64>,
    /// (page size such as `2MB`, limit in bytes)
    pub hugepage_limits: Vec<(String, u64)>,
    pub unified: BTreeMap<String, String>,
    pub memory_swap: i64,
}

/// The cgroups path of container `id` under the kubelet's `parent`: a path below it for the
/// cgroupfs driver (`/kubepods/burstable/pod…`); for the systemd driver's slice names
/// (`kubepods-burstable-pod….slice`), the directory systemd gives that slice
/// (`/kubepods.slice/kubepods-burstable.slice/…`) and a `berth-<id>.scope` in it. berth writes
/// those cgroups itself rather than asking systemd over D-Bus for a transient unit.
pub fn cgroups_path(parent: &str, id: &str) -> String {
    match parent.strip_suffix(".slice") {
        Some(name) if !name.contains('/') => {
            let mut path = String::new();
            let mut prefix = String::new();
            for part in name.split('-').filter(|p| !p.is_empty()) {
                if !prefix.is_empty() {
                    prefix.push('-');
                }
                prefix.push_str(part);
                path.push_str(&format!("/{prefix}.slice"));
            }
            format!("{path}/berth-{id}.scope")
        }
        _ => format!("{}/{id}", parent.trim_end_matches('/')),
    }
}

/// OCI `linux.resources` from the CRI's LinuxContainerResources (memory and CPU included),
/// for CreateContainer and UpdateContainerResources alike.
pub fn resources(c: &CriLinux, memory: i64) -> Value {
    let mut res = json!({});
    if memory > 0 {
        res["memory"] = json!({ "limit": memory });
        if c.memory_swap > 0 {
            res["memory"]["swap"] = json!(c.memory_swap);
        }
    }
    let mut cpu = json!({});
    if c.cpu_shares > 0 {
        cpu["shares"] = json!(c.cpu_shares);
    }
    if c.cpu_quota > 0 {
        cpu["quota"] = json!(c.cpu_quota);
    }
    if c.cpu_period > 0 {
        cpu["period"] = json!(c.cpu_period);
    }
    if !c.cpuset_cpus.is_empty() {
        cpu["cpus"] = json!(c.cpuset_cpus);
    }
    if !c.cpuset_mems.is_empty() {
        cpu["mems"] = json!(c.cpuset_mems);
    }
    if cpu.as_object().is_some_and(|o| !o.is_empty()) {
        res["cpu"] = cpu;
    }
    if !c.hugepage_limits.is_empty() {
        res["hugepageLimits"] = c
            .hugepage_limits
            .iter()
            .map(|(size, limit)| json!({"pageSize": size, "limit": limit}))
            .collect();
    }
    if !c.unified.is_empty() {
        res["unified"] = json!(c.unified);
    }
    res
}

/// Lays `c` over `spec` (made by [`crate::spec::build`] for a CRI container).
pub fn apply(
    spec: &mut Value,
    c: &CriLinux,
    id: &str,
    memory: i64,
    privileged: bool,
) -> Result<(), Status> {
    let linux = &mut spec["linux"];
    let ns = linux["namespaces"]
        .as_array_mut()
        .expect("default namespaces");
    for (kind, path) in &c.join {
        if !matches!(kind.as_str(), "ipc" | "uts" | "pid") {
            return Err(Status::invalid_argument(format!(
                "cannot join a {kind} namespace"
            )));
        }
        ns.retain(|n| n["type"] != kind.as_str());
        ns.push(json!({"type": kind, "path": path}));
    }
    for kind in &c.host {
        ns.retain(|n| n["type"] != kind.as_str());
    }
    if !c.sysctl.is_empty() {
        linux["sysctl"] = json!(c.sysctl);
    }
    if !privileged {
        if let Some(m) = &c.masked_paths {
            linux["maskedPaths"] = json!(m);
        }
        if let Some(r) = &c.readonly_paths {
            linux["readonlyPaths"] = json!(r);
        }
    }
    if !c.cgroup_parent.is_empty() {
        linux["cgroupsPath"] = cgroups_path(&c.cgroup_parent, id).into();
    }
    let mut res = resources(c, memory);
    // Devices: the allow list stays the one build() made, plus the CRI's.
    let mut allow = linux["resources"]["devices"].clone();
    let mut devices = Vec::new();
    for d in &c.devices {
        let (dev, rule) = device(d)?;
        devices.push(dev);
        if let Some(a) = allow.as_array_mut() {
            a.push(rule);
        }
    }
    res["devices"] = allow;
    if let Some(pids) = linux["resources"].get("pids").cloned() {
        res["pids"] = pids;
    }
    linux["resources"] = res;
    if !devices.is_empty() {
        linux["devices"] = json!(devices);
    }
    // Seccomp: privileged containers run unconfined, as in containerd and CRI-O.
    match (&c.seccomp, privileged) {
        (_, true) | (Seccomp::Unconfined, _) => {}
        (Seccomp::RuntimeDefault, _) => {
            let caps: Vec<String> =
                serde_json::from_value(spec["process"]["capabilities"]["bounding"].clone())
                    .unwrap_or_default();
            spec["linux"]["seccomp"] = runtime_default(&caps);
        }
        (Seccomp::Localhost(path), _) => {
            let bytes = std::fs::read(path)
                .map_err(|e| Status::invalid_argument(format!("seccomp profile {path}: {e}")))?;
            let profile: Value = serde_json::from_slice(&bytes)
                .map_err(|e| Status::invalid_argument(format!("seccomp profile {path}: {e}")))?;
            if !profile.get("defaultAction").is_some_and(Value::is_string) {
                return Err(Status::invalid_argument(format!(
                    "seccomp profile {path}: no defaultAction"
                )));
            }
            spec["linux"]["seccomp"] = profile;
        }
    }
    let p = &mut spec["process"];
    if let Some(profile) = crate::apparmor::profile_for(&c.apparmor, privileged)? {
        p["apparmorProfile"] = profile.into();
    }
    if c.no_new_privs {
        p["noNewPrivileges"] = true.into();
    }
    if let Some(adj) = c.oom_score_adj {
        p["oomScoreAdj"] = json!(adj);
    }
    Ok(())
}

/// A CRI Device as an OCI `linux.devices` entry and a device cgroup rule.
fn device(d: &Device) -> Result<(Value, Value), Status> {
    use std::os::unix::fs::{FileTypeExt, MetadataExt};
    let bad = |why: String| Status::invalid_argument(format!("device {}: {why}", d.host_path));
    if !d.container_path.starts_with('/') {
        return Err(bad(format!(
            "container path {:?} is not absolute",
            d.container_path
        )));
    }
    let md = std::fs::metadata(Path::new(&d.host_path)).map_err(|e| bad(e.to_string()))?;
    let kind = if md.file_type().is_char_device() {
        "c"
    } else if md.file_type().is_block_device() {
        "b"
    } else {
        return Err(bad("not a device".into()));
    };
    let rdev = md.rdev();
    let (major, minor) = (libc::major(rdev) as i64, libc::minor(rdev) as i64);
    let access = if d.permissions.is_empty() {
        "rwm".to_string()
    } else if d.permissions.chars().all(|c| "rwm".contains(c)) {
        d.permissions.clone()
    } else {
        return Err(bad(format!("invalid permissions {:?}", d.permissions)));
    };
    Ok((
        json!({
            "path": d.container_path, "type": kind, "major": major, "minor": minor,
            "fileMode": md.mode() & 0o777, "uid": md.uid(), "gid": md.gid(),
        }),
        json!({"allow": true, "type": kind, "major": major, "minor": minor, "access": access}),
    ))
}

/// Syscalls berth's RuntimeDefault profile refuses with EPERM, and the capability that lets
/// a container have them back (None: never). The same calls docker's default profile leaves
/// out, written as a deny list: a new syscall the kernel grows is allowed rather than broken.
const DENIED: &[(&str, Option<&str>)] = &[
    ("acct", Some("CAP_SYS_PACCT")),
    ("add_key", None),
    ("bpf", Some("CAP_SYS_ADMIN")),
    ("clock_adjtime", Some("CAP_SYS_TIME")),
    ("clock_settime", Some("CAP_SYS_TIME")),
    ("create_module", Some("CAP_SYS_MODULE")),
    ("delete_module", Some("CAP_SYS_MODULE")),
    ("finit_module", Some("CAP_SYS_MODULE")),
    ("fsconfig", Some("CAP_SYS_ADMIN")),
    ("fsmount", Some("CAP_SYS_ADMIN")),
    ("fsopen", Some("CAP_SYS_ADMIN")),
    ("fspick", Some("CAP_SYS_ADMIN")),
    ("get_kernel_syms", Some("CAP_SYS_MODULE")),
    ("get_mempolicy", Some("CAP_SYS_NICE")),
    ("init_module", Some("CAP_SYS_MODULE")),
    ("ioperm", Some("CAP_SYS_RAWIO")),
    ("iopl", Some("CAP_SYS_RAWIO")),
    ("kcmp", Some("CAP_SYS_PTRACE")),
    ("kexec_file_load", Some("CAP_SYS_BOOT")),
    ("kexec_load", Some("CAP_SYS_BOOT")),
    ("keyctl", None),
    ("lookup_dcookie", Some("CAP_SYS_ADMIN")),
    ("mbind", Some("CAP_SYS_NICE")),
    ("mount", Some("CAP_SYS_ADMIN")),
    ("mount_setattr", Some("CAP_SYS_ADMIN")),
    ("move_mount", Some("CAP_SYS_ADMIN")),
    ("move_pages", Some("CAP_SYS_NICE")),
    ("name_to_handle_at", Some("CAP_DAC_READ_SEARCH")),
    ("nfsservctl", None),
    ("open_by_handle_at", Some("CAP_DAC_READ_SEARCH")),
    ("open_tree", Some("CAP_SYS_ADMIN")),
    ("perf_event_open", Some("CAP_PERFMON")),
    ("pivot_root", Some("CAP_SYS_ADMIN")),
    ("process_vm_readv", Some("CAP_SYS_PTRACE")),
    ("process_vm_writev", Some("CAP_SYS_PTRACE")),
    ("ptrace", Some("CAP_SYS_PTRACE")),
    ("query_module", Some("CAP_SYS_MODULE")),
    ("quotactl", Some("CAP_SYS_ADMIN")),
    ("reboot", Some("CAP_SYS_BOOT")),
    ("request_key", None),
    ("set_mempolicy", Some("CAP_SYS_NICE")),
    ("setns", Some("CAP_SYS_ADMIN")),
    ("settimeofday", Some("CAP_SYS_TIME")),
    ("stime", Some("CAP_SYS_TIME")),
    ("swapoff", Some("CAP_SYS_ADMIN")),
    ("swapon", Some("CAP_SYS_ADMIN")),
    ("syslog", Some("CAP_SYSLOG")),
    ("sysfs", None),
    ("_sysctl", None),
    ("umount", Some("CAP_SYS_ADMIN")),
    ("umount2", Some("CAP_SYS_ADMIN")),
    ("unshare", Some("CAP_SYS_ADMIN")),
    ("uselib", None),
    ("userfaultfd", None),
    ("ustat", None),
    ("vm86", None),
    ("vm86old", None),
];

/// berth's RuntimeDefault seccomp profile for a container with capabilities `caps`.
pub fn runtime_default(caps: &[String]) -> Value {
    let names: Vec<&str> = DENIED
        .iter()
        .filter(|(_, cap)| cap.is_none_or(|c| !caps.iter().any(|h| h == c)))
        .map(|(n, _)| *n)
        .collect();
    let arches = match std::env::consts::ARCH {
        "x86_64" => json!(["SCMP_ARCH_X86_64", "SCMP_ARCH_X86", "SCMP_ARCH_X32"]),
        "aarch64" => json!(["SCMP_ARCH_AARCH64", "SCMP_ARCH_ARM"]),
        _ => json!([]),
    };
    json!({
        "defaultAction": "SCMP_ACT_ALLOW",
        "architectures": arches,
        "syscalls": [{"names": names, "action": "SCMP_ACT_ERRNO", "errnoRet": libc::EPERM}],
    })
}

/// The container's groups, as the kubelet's SupplementalGroupsPolicy says (and containerd makes
/// them): its primary group, the groups the image's /etc/group lists the user in (unless
/// Strict), and the pod's supplemental groups, sorted (as the kernel keeps them).
pub fn groups(spec: &mut Value, c: &CriLinux, rootfs: &std::path::Path) {
    let user = &mut spec["process"]["user"];
    let uid = user["uid"].as_u64().unwrap_or(0) as u32;
    let gid = user["gid"].as_u64().unwrap_or(0) as u32;
    let mut gids: Vec<u32> =
        serde_json::from_value(user["additionalGids"].clone()).unwrap_or_default();
    gids.push(gid);
    gids.extend(&c.additional_gids);
    if !c.strict_groups {
        gids.extend(crate::bundle::member_of(rootfs, uid));
    }
    gids.sort_unstable();
    gids.dedup();
    user["additionalGids"] = json!(gids);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cgroup_parents_for_both_drivers() {
        assert_eq!(
            cgroups_path("/kubepods/besteffort/pod1", "abc"),
            "/kubepods/besteffort/pod1/abc"
        );
        assert_eq!(
            cgroups_path("kubepods-besteffort-pod1.slice", "abc"),
            "/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod1.slice/berth-abc.scope"
        );
    }

    #[test]
    fn runtime_default_gives_back_what_capabilities_allow() {
        let none = runtime_default(&[]);
        let names = |v: &Value| v["syscalls"][0]["names"].as_array().unwrap().clone();
        assert!(names(&none).contains(&json!("mount")));
        assert!(names(&none).contains(&json!("ptrace")));
        let admin = runtime_default(&["CAP_SYS_ADMIN".into()]);
        assert!(!names(&admin).contains(&json!("mount")));
        assert!(names(&admin).contains(&json!("ptrace")));
        assert!(names(&admin).contains(&json!("keyctl")));
    }

    #[test]
    fn resources_from_the_kubelet() {
        let c = CriLinux {
            cpu_shares: 512,
            cpu_quota: 50_000,
            cpu_period: 100_000,
            cpuset_cpus: "0".into(),
            hugepage_limits: vec![("2MB".into(), 0)],
            unified: [("memory.high".to_string(), "max".to_string())].into(),
            ..Default::default()
        };
        let r = resources(&c, 64 << 20);
        assert_eq!(r["memory"]["limit"], json!(64 << 20));
        assert_eq!(r["cpu"]["shares"], json!(512));
        assert_eq!(r["cpu"]["quota"], json!(50_000));
        assert_eq!(r["cpu"]["cpus"], json!("0"));
        assert_eq!(r["hugepageLimits"][0]["pageSize"], json!("2MB"));
        assert_eq!(r["unified"]["memory.high"], json!("max"));
        assert_eq!(resources(&CriLinux::default(), 0), json!({}));
    }

    #[test]
    fn devices_must_be_devices() {
        let ok = device(&Device {
            container_path: "/dev/xnull".into(),
            host_path: "/dev/null".into(),
            permissions: "rw".into(),
        })
        .unwrap();
        assert_eq!(ok.0["type"], json!("c"));
        assert_eq!(ok.1["access"], json!("rw"));
        for (cp, hp, perm) in [
            ("/dev/x", "/etc/hostname", "rwm"),
            ("dev/x", "/dev/null", "rwm"),
            ("/dev/x", "/dev/null", "rwx"),
            ("/dev/x", "/dev/nonexistent-berth", "rwm"),
        ] {
            let d = Device {
                container_path: cp.into(),
                host_path: hp.into(),
                permissions: perm.into(),
            };
            assert_eq!(device(&d).unwrap_err().code(), tonic::Code::InvalidArgument);
        }
    }
}
