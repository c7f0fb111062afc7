//! Namespaces, checked from inside: /proc/self/ns links, pid 1, hostname, network devices,
//! joining by path, user namespace mappings, cgroup namespace.

use berth_tests::*;
use serde_json::json;

/// Runs `sh -c script` in a container from `spec` and returns its stdout (asserting success).
fn run_sh(t: &Ctx, spec: Spec, script: &str) -> String {
    t.write_spec(&spec.sh(script));
    let out = t.run();
    out.assert_ok();
    t.assert_no_leftovers(&t.id);
    out.stdout
}

const NS: [(&str, &str); 5] = [
    ("pid", "pid"),
    ("network", "net"),
    ("ipc", "ipc"),
    ("uts", "uts"),
    ("mount", "mnt"),
];

#[test]
fn each_configured_namespace_is_new() {
    let t = Ctx::new("ns-new");
    let script = NS
        .iter()
        .map(|(_, f)| format!("readlink /proc/self/ns/{f};"))
        .collect::<String>();
    let out = run_sh(&t, t.spec(), &script);
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.len(), NS.len(), "{out}");
    for ((_, f), inside) in NS.iter().zip(lines) {
        assert_ne!(inside, host_ns(f), "{f} namespace is the host's");
    }
}

#[test]
fn namespace_not_in_spec_is_the_hosts() {
    let t = Ctx::new("ns-host");
    let spec = t
        .spec()
        .without_namespace("network")
        .without_namespace("uts")
        .remove("/hostname");
    let out = run_sh(
        &t,
        spec,
        "readlink /proc/self/ns/net; readlink /proc/self/ns/uts",
    );
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines, [host_ns("net"), host_ns("uts")]);
}

#[test]
fn pid_namespace_makes_init_pid_1() {
    let t = Ctx::new("ns-pid1");
    let out = run_sh(&t, t.spec(), "echo $$; ps -o pid,args | wc -l");
    let mut l = out.lines();
    assert_eq!(l.next(), Some("1"));
}

#[test]
fn hostname() {
    let t = Ctx::new("ns-hostname");
    let out = run_sh(
        &t,
        t.spec().hostname("berth-box"),
        "hostname; cat /proc/sys/kernel/hostname",
    );
    assert_eq!(out.lines().collect::<Vec<_>>(), ["berth-box", "berth-box"]);
}

/// Berth only: runc 1.1.5 ignores `domainname`.
#[test]
fn domainname() {
    berth_only!();
    let t = Ctx::new("ns-domainname");
    let spec = t.spec().set("/domainname", json!("berth.test"));
    let out = run_sh(&t, spec, "cat /proc/sys/kernel/domainname");
    assert_eq!(out.trim(), "berth.test");
}

#[test]
fn network_namespace_has_only_lo() {
    let t = Ctx::new("ns-net");
    let out = run_sh(&t, t.spec(), "ls /sys/class/net");
    assert_eq!(out.split_whitespace().collect::<Vec<_>>(), ["lo"]);
}

#[test]
fn new_network_namespace_has_lo_up() {
    // runc and crun bring the loopback up; servers listening on 127.0.0.1 rely on it.
    let t = Ctx::new("ns-lo-up");
    let out = run_sh(&t, t.spec(), "cat /sys/class/net/lo/flags");
    let flags = u32::from_str_radix(out.trim().trim_start_matches("0x"), 16).unwrap();
    assert_eq!(flags & 1, 1, "IFF_UP not set: {out}");
}

#[test]
fn join_network_namespace_by_path() {
    let t = Ctx::new("ns-join");
    let other = t.other_id("b");
    t.write_spec(&t.spec().args(&["sleep", "1000"]));
    t.run_detached().assert_ok();
    let pid = t.pid();
    let netns = std::fs::read_link(format!("/proc/{pid}/ns/net")).unwrap();

    let path = format!("/proc/{pid}/ns/net");
    let spec = Spec::base(&busybox_rootfs(), &Ctx::cgroups_path(&other))
        .namespace("network", Some(&path))
        .sh("readlink /proc/self/ns/net");
    let b = t.bundle_with("bundle-b", &spec);
    let out = t.cmd(&["run", "--bundle", b.to_str().unwrap(), &other]);
    out.assert_ok();
    assert_eq!(out.stdout.trim(), netns.to_str().unwrap());
    t.delete_force().assert_ok();
    t.assert_no_leftovers(&t.id);
    t.assert_no_leftovers(&other);
}

#[test]
fn user_namespace_with_mappings() {
    let t = Ctx::new("ns-user");
    let spec = t
        .spec()
        .namespace("user", None)
        .set(
            "/linux/uidMappings",
            json!([{"containerID": 0, "hostID": 100000, "size": 65536}]),
        )
        .set(
            "/linux/gidMappings",
            json!([{"containerID": 0, "hostID": 100000, "size": 65536}]),
        )
        // A cgroup mount needs more care in a user namespace; not what this test is about.
        .set(
            "/mounts",
            json!(t.spec().0["mounts"]
                .as_array()
                .unwrap()
                .iter()
                .filter(|m| m["type"] != "cgroup")
                .cloned()
                .collect::<Vec<_>>()),
        );
    let out = run_sh(&t, spec, "cat /proc/self/uid_map /proc/self/gid_map; id -u");
    let lines: Vec<Vec<&str>> = out
        .lines()
        .map(|l| l.split_whitespace().collect())
        .collect();
    assert_eq!(lines[0], ["0", "100000", "65536"], "{out}");
    assert_eq!(lines[1], ["0", "100000", "65536"], "{out}");
    assert_eq!(lines[2], ["0"], "{out}");
}

#[test]
fn user_namespace_init_runs_as_mapped_host_uid() {
    let t = Ctx::new("ns-user-host");
    let spec = t
        .spec()
        .args(&["sleep", "1000"])
        .namespace("user", None)
        .set(
            "/linux/uidMappings",
            json!([{"containerID": 0, "hostID": 200000, "size": 65536}]),
        )
        .set(
            "/linux/gidMappings",
            json!([{"containerID": 0, "hostID": 200000, "size": 65536}]),
        )
        .set(
            "/mounts",
            json!(t.spec().0["mounts"]
                .as_array()
                .unwrap()
                .iter()
                .filter(|m| m["type"] != "cgroup")
                .cloned()
                .collect::<Vec<_>>()),
        );
    t.write_spec(&spec);
    t.run_detached().assert_ok();
    let status = std::fs::read_to_string(format!("/proc/{}/status", t.pid())).unwrap();
    let uid = status_field(&status, "Uid").unwrap();
    assert!(uid.starts_with("200000"), "host view of the uid: {uid}");
    t.delete_force().assert_ok();
    t.assert_no_leftovers(&t.id);
}

#[test]
fn cgroup_namespace_hides_the_host_path() {
    let t = Ctx::new("ns-cgroup");
    let out = run_sh(
        &t,
        t.spec().namespace("cgroup", None),
        "cat /proc/self/cgroup",
    );
    for line in out.lines() {
        let path = line.splitn(3, ':').nth(2).unwrap_or("");
        assert_eq!(path, "/", "cgroup path inside a cgroup namespace: {out}");
    }
}

#[test]
fn without_cgroup_namespace_the_path_is_cgroups_path() {
    let t = Ctx::new("ns-nocgroup");
    let out = run_sh(&t, t.spec(), "cat /proc/self/cgroup");
    let want = Ctx::cgroups_path(&t.id);
    let mem = out
        .lines()
        .find(|l| l.contains(":memory:") || l.starts_with("0::"))
        .unwrap_or_else(|| panic!("no memory line: {out}"));
    assert!(mem.ends_with(&want), "{mem} should end with {want}");
}

/// Berth only: runc 1.1 has no time namespace.
#[test]
fn time_namespace_offsets() {
    berth_only!();
    let t = Ctx::new("ns-time");
    let spec = t.spec().namespace("time", None).set(
        "/linux/timeOffsets",
        json!({"boottime": {"secs": 86400 * 365, "nanosecs": 0}}),
    );
    let out = run_sh(
        &t,
        spec,
        "cut -d. -f1 /proc/uptime; readlink /proc/self/ns/time",
    );
    let up: u64 = out.lines().next().unwrap().parse().unwrap();
    assert!(up >= 86400 * 365, "uptime inside: {up}");
}
