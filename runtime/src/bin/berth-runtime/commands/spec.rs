//! `spec`: write runc's default config.json (hostname aside) into the bundle.

use anyhow::{bail, Context, Result};
use serde_json::{json, Value};
use std::path::Path;

/// The default spec, as `runc spec` writes it.
pub fn default_spec() -> Value {
    let caps = json!(["CAP_AUDIT_WRITE", "CAP_KILL", "CAP_NET_BIND_SERVICE"]);
    json!({
        "ociVersion": "1.0.2-dev",
        "process": {
            "terminal": true,
            "user": {"uid": 0, "gid": 0},
            "args": ["sh"],
            "env": ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", "TERM=xterm"],
            "cwd": "/",
            "capabilities": {"bounding": caps, "effective": caps, "permitted": caps, "ambient": caps},
            "rlimits": [{"type": "RLIMIT_NOFILE", "hard": 1024, "soft": 1024}],
            "noNewPrivileges": true
        },
        "root": {"path": "rootfs", "readonly": true},
        "hostname": "berth",
        "mounts": [
            {"destination": "/proc", "type": "proc", "source": "proc"},
            {"destination": "/dev", "type": "tmpfs", "source": "tmpfs", "options": ["nosuid", "strictatime", "mode=755", "size=65536k"]},
            {"destination": "/dev/pts", "type": "devpts", "source": "devpts", "options": ["nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620", "gid=5"]},
            {"destination": "/dev/shm", "type": "tmpfs", "source": "shm", "options": ["nosuid", "noexec", "nodev", "mode=1777", "size=65536k"]},
            {"destination": "/dev/mqueue", "type": "mqueue", "source": "mqueue", "options": ["nosuid", "noexec", "nodev"]},
            {"destination": "/sys", "type": "sysfs", "source": "sysfs", "options": ["nosuid", "noexec", "nodev", "ro"]},
            {"destination": "/sys/fs/cgroup", "type": "cgroup", "source": "cgroup", "options": ["nosuid", "noexec", "nodev", "relatime", "ro"]}
        ],
        "linux": {
            "resources": {"devices": [{"allow": false, "access": "rwm"}]},
            "namespaces": [{"type": "pid"}, {"type": "network"}, {"type": "ipc"}, {"type": "uts"}, {"type": "mount"}, {"type": "cgroup"}],
            "maskedPaths": ["/proc/acpi", "/proc/asound", "/proc/kcore", "/proc/keys", "/proc/latency_stats", "/proc/timer_list", "/proc/timer_stats", "/proc/sched_debug", "/sys/firmware", "/proc/scsi"],
            "readonlyPaths": ["/proc/bus", "/proc/fs", "/proc/irq", "/proc/sys", "/proc/sysrq-trigger"]
        }
    })
}

/// runc's `--rootless` changes: a user namespace mapping the caller, no network namespace, /sys
/// bind-mounted, no cgroup mount, no devices rule, no `gid=5` on devpts.
pub fn make_rootless(spec: &mut Value) {
    let uid = nix::unistd::geteuid().as_raw();
    let gid = nix::unistd::getegid().as_raw();
    let linux = &mut spec["linux"];
    linux["resources"] = json!({});
    let ns = linux["namespaces"].as_array_mut().expect("array");
    ns.retain(|n| n["type"] != "network");
    ns.push(json!({"type": "user"}));
    linux["uidMappings"] = json!([{"containerID": 0, "hostID": uid, "size": 1}]);
    linux["gidMappings"] = json!([{"containerID": 0, "hostID": gid, "size": 1}]);
    let mounts = spec["mounts"].as_array_mut().expect("array");
    mounts.retain(|m| m["type"] != "cgroup");
    for m in mounts.iter_mut() {
        if m["destination"] == "/sys" {
            *m = json!({"destination": "/sys", "type": "none", "source": "/sys", "options": ["rbind", "nosuid", "noexec", "nodev", "ro"]});
        }
        if m["type"] == "devpts" {
            if let Some(o) = m["options"].as_array_mut() {
                o.retain(|o| o != "gid=5");
            }
        }
    }
}

pub fn spec(bundle: &Path, rootless: bool) -> Result<i32> {
    let path = bundle.join("config.json");
    if path.exists() {
        bail!("File {} exists. Remove it first", path.display());
    }
    let mut spec = default_spec();
    if rootless {
        make_rootless(&mut spec);
    }
    let text = serde_json::to_string_pretty(&spec)?;
    berth_runtime::utils::write_atomic(&path, text.as_bytes())
        .with_context(|| format!("write {path:?}"))?;
    Ok(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_spec_is_valid_for_the_library() {
        let s = default_spec().to_string();
        berth_runtime::spec::parse(s.as_bytes()).unwrap();
        let mut r = default_spec();
        make_rootless(&mut r);
        let spec = berth_runtime::spec::parse(r.to_string().as_bytes()).unwrap();
        assert!(spec.linux().as_ref().unwrap().uid_mappings().is_some());
    }
}
