//! `spec`: write runc's default config.json (hostname aside) into the bundle, laid out as runc
//! writes it (runc's key order, tab indents), so the two can be diffed.

use anyhow::{bail, Context, Result};
use serde_json::{json, Value};
use std::path::Path;

/// The default spec, as `runc spec` writes it: a new cgroup namespace only where
/// `/sys/fs/cgroup` is cgroup2 (runc adds it only on such hosts).
pub fn default_spec() -> Value {
    let mut spec = base_spec();
    if host_is_cgroup2() {
        let ns = spec["linux"]["namespaces"].as_array_mut().expect("array");
        ns.push(json!({"type": "cgroup"}));
    }
    spec
}

fn host_is_cgroup2() -> bool {
    nix::sys::statfs::statfs("/sys/fs/cgroup")
        .is_ok_and(|s| s.filesystem_type() == nix::sys::statfs::CGROUP2_SUPER_MAGIC)
}

fn base_spec() -> Value {
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
            "namespaces": [{"type": "pid"}, {"type": "network"}, {"type": "ipc"}, {"type": "uts"}, {"type": "mount"}],
            "maskedPaths": ["/proc/acpi", "/proc/asound", "/proc/kcore", "/proc/keys", "/proc/latency_stats", "/proc/timer_list", "/proc/timer_stats", "/proc/sched_debug", "/sys/firmware", "/proc/scsi"],
            "readonlyPaths": ["/proc/bus", "/proc/fs", "/proc/irq", "/proc/sys", "/proc/sysrq-trigger"]
        }
    })
}

/// runc's `--rootless` changes: a user namespace mapping the caller, no network namespace, /sys
/// bind-mounted, no `uid=`/`gid=` mount options, no resources.
pub fn make_rootless(spec: &mut Value) {
    let uid = nix::unistd::geteuid().as_raw();
    let gid = nix::unistd::getegid().as_raw();
    let linux = spec["linux"].as_object_mut().expect("object");
    linux.remove("resources");
    let ns = linux["namespaces"].as_array_mut().expect("array");
    ns.retain(|n| n["type"] != "network" && n["type"] != "user");
    ns.push(json!({"type": "user"}));
    linux.insert(
        "uidMappings".into(),
        json!([{"containerID": 0, "hostID": uid, "size": 1}]),
    );
    linux.insert(
        "gidMappings".into(),
        json!([{"containerID": 0, "hostID": gid, "size": 1}]),
    );
    for m in spec["mounts"].as_array_mut().expect("array") {
        if m["destination"] == "/sys" {
            *m = json!({"destination": "/sys", "type": "none", "source": "/sys", "options": ["rbind", "nosuid", "noexec", "nodev", "ro"]});
        }
        if let Some(o) = m.get_mut("options").and_then(Value::as_array_mut) {
            o.retain(|o| {
                o.as_str()
                    .is_some_and(|o| !o.starts_with("uid=") && !o.starts_with("gid="))
            });
        }
    }
}

/// Keys in the order of runc's Go structs (spec, process, user, capabilities, rlimit, mount,
/// linux, id mapping, device rule, namespace); keys not listed follow, sorted.
const KEY_ORDER: &[&str] = &[
    "ociVersion",
    "process",
    "terminal",
    "consoleSize",
    "user",
    "uid",
    "gid",
    "umask",
    "additionalGids",
    "username",
    "args",
    "commandLine",
    "env",
    "cwd",
    "capabilities",
    "bounding",
    "effective",
    "inheritable",
    "permitted",
    "ambient",
    "rlimits",
    "noNewPrivileges",
    "apparmorProfile",
    "oomScoreAdj",
    "selinuxLabel",
    "root",
    "hostname",
    "mounts",
    "hooks",
    "annotations",
    "linux",
    "uidMappings",
    "gidMappings",
    "containerID",
    "hostID",
    "size",
    "sysctl",
    "resources",
    "cgroupsPath",
    "namespaces",
    "allow",
    "destination",
    "type",
    "source",
    "options",
    "hard",
    "soft",
    "major",
    "minor",
    "access",
    "path",
    "readonly",
    "devices",
    "seccomp",
    "rootfsPropagation",
    "maskedPaths",
    "readonlyPaths",
    "mountLabel",
];

/// JSON as Go's `json.MarshalIndent(v, "", "\t")` writes runc's spec: tab indents, keys in
/// [`KEY_ORDER`].
fn to_runc_layout(v: &Value) -> String {
    fn rank(k: &str) -> usize {
        KEY_ORDER
            .iter()
            .position(|o| *o == k)
            .unwrap_or(KEY_ORDER.len())
    }
    fn write(v: &Value, depth: usize, out: &mut String) {
        let pad = |out: &mut String, d: usize| {
            out.push('\n');
            out.extend(std::iter::repeat_n('\t', d));
        };
        match v {
            Value::Object(m) if !m.is_empty() => {
                let mut keys: Vec<&String> = m.keys().collect();
                keys.sort_by(|a, b| rank(a).cmp(&rank(b)).then(a.cmp(b)));
                out.push('{');
                for (i, k) in keys.iter().enumerate() {
                    if i > 0 {
                        out.push(',');
                    }
                    pad(out, depth + 1);
                    out.push_str(&Value::String(k.to_string()).to_string());
                    out.push_str(": ");
                    write(&m[*k], depth + 1, out);
                }
                pad(out, depth);
                out.push('}');
            }
            Value::Array(a) if !a.is_empty() => {
                out.push('[');
                for (i, e) in a.iter().enumerate() {
                    if i > 0 {
                        out.push(',');
                    }
                    pad(out, depth + 1);
                    write(e, depth + 1, out);
                }
                pad(out, depth);
                out.push(']');
            }
            v => out.push_str(&v.to_string()),
        }
    }
    let mut out = String::new();
    write(v, 0, &mut out);
    out
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
    let text = to_runc_layout(&spec);
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
