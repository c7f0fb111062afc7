//! Cgroups: the limits land in the host's cgroup files under `cgroupsPath`, the container sees
//! them from inside, `update` changes them, and `delete` removes the cgroup everywhere.
//!
//! On this hybrid host the files are v1 (`/sys/fs/cgroup/<controller>/<cgroupsPath>/…`); on a
//! pure v2 host the v2 names are checked instead.

use berth_tests::*;
use serde_json::json;
use std::time::Duration;

/// Starts `sleep 1000` with these resources and returns the context (running).
fn running_with(name: &str, resources: serde_json::Value) -> Ctx {
    let t = Ctx::new(name);
    let mut spec = t.spec().args(&["sleep", "1000"]);
    for (k, v) in resources.as_object().unwrap() {
        spec = spec.resources(k, v.clone());
    }
    t.write_spec(&spec);
    t.run_detached().assert_ok();
    t
}

fn finish(t: Ctx) {
    t.delete_force().assert_ok();
    t.assert_no_leftovers(&t.id);
}

#[test]
fn memory_limit_host_and_inside() {
    let t = running_with(
        "mem",
        json!({"memory": {"limit": 67108864, "reservation": 33554432}}),
    );
    if cgroup_v2_only() {
        assert_eq!(t.cgroup_value(&t.id, "memory", "memory.max"), "67108864");
        assert_eq!(t.cgroup_value(&t.id, "memory", "memory.low"), "33554432");
    } else {
        assert_eq!(
            t.cgroup_value(&t.id, "memory", "memory.limit_in_bytes"),
            "67108864"
        );
        assert_eq!(
            t.cgroup_value(&t.id, "memory", "memory.soft_limit_in_bytes"),
            "33554432"
        );
        // Inside: the container's cgroup is the one with the limit, seen through its own
        // /sys/fs/cgroup mount.
        let out = t.exec(&[
            "sh",
            "-c",
            "grep memory /proc/self/cgroup; cat /sys/fs/cgroup/memory/memory.limit_in_bytes",
        ]);
        out.assert_ok();
        let l: Vec<&str> = out.stdout.lines().collect();
        assert!(l[0].ends_with(&Ctx::cgroups_path(&t.id)), "{out}");
        assert_eq!(l[1], "67108864", "{out}");
    }
    finish(t);
}

#[test]
fn init_is_in_the_cgroup_of_every_controller() {
    let t = running_with("cg-procs", json!({}));
    let pid = t.pid().to_string();
    let controllers: &[&str] = if cgroup_v2_only() {
        &["unified"]
    } else {
        &[
            "memory", "pids", "cpu", "cpuset", "freezer", "devices", "blkio",
        ]
    };
    for c in controllers {
        let procs = t.cgroup_value(&t.id, c, "cgroup.procs");
        assert!(procs.lines().any(|p| p == pid), "{c}: {pid} not in {procs}");
    }
    finish(t);
}

#[test]
fn oom_kill_at_memory_limit() {
    let t = Ctx::new("oom-kill");
    // Fill a tmpfs beyond the limit: shmem is charged to the cgroup.
    let spec = t
        .spec()
        .resources("memory", json!({"limit": 33554432, "swap": 33554432}))
        .mount("/big", "tmpfs", "tmpfs", &["size=128m"])
        .set("/root/path", json!(t.writable_rootfs()))
        .sh("dd if=/dev/zero of=/big/f bs=1M count=100 2>/dev/null; tail -c 1 /big/f > /dev/null; i=0; x=x; while [ $i -lt 30 ]; do x=$x$x; i=$((i+1)); done");
    t.write_spec(&spec);
    let out = t.run();
    assert_ne!(out.code, 0, "should have been OOM-killed: {out}");
    t.assert_no_leftovers(&t.id);
}

#[test]
fn pids_limit() {
    let t = running_with("pids", json!({"pids": {"limit": 10}}));
    assert_eq!(t.cgroup_value(&t.id, "pids", "pids.max"), "10");
    let out = t.exec(&[
        "sh",
        "-c",
        "for i in 1 2 3 4 5 6 7 8 9 10 11 12; do sleep 5 & done; wait",
    ]);
    assert!(
        out.stderr.contains("can't fork")
            || out.stderr.contains("Resource temporarily unavailable"),
        "{out}"
    );
    finish(t);
}

#[test]
fn cpu_shares_quota_period() {
    let t = running_with(
        "cpu",
        json!({"cpu": {"shares": 512, "quota": 50000, "period": 100000}}),
    );
    if cgroup_v2_only() {
        assert_eq!(t.cgroup_value(&t.id, "cpu", "cpu.max"), "50000 100000");
    } else {
        assert_eq!(t.cgroup_value(&t.id, "cpu", "cpu.shares"), "512");
        assert_eq!(t.cgroup_value(&t.id, "cpu", "cpu.cfs_quota_us"), "50000");
        assert_eq!(t.cgroup_value(&t.id, "cpu", "cpu.cfs_period_us"), "100000");
    }
    finish(t);
}

#[test]
fn cpuset_cpus_inside() {
    let t = running_with("cpuset", json!({"cpu": {"cpus": "0", "mems": "0"}}));
    let out = t.exec(&["sh", "-c", "grep Cpus_allowed_list /proc/self/status"]);
    out.assert_ok();
    assert_eq!(
        status_field(&out.stdout, "Cpus_allowed_list"),
        Some("0"),
        "{out}"
    );
    finish(t);
}

#[test]
fn update_changes_limits() {
    let t = running_with(
        "update",
        json!({"memory": {"limit": 67108864}, "pids": {"limit": 50}}),
    );
    t.cmd(&[
        "update",
        "--memory",
        "134217728",
        "--pids-limit",
        "60",
        &t.id,
    ])
    .assert_ok();
    let (mem, file) = if cgroup_v2_only() {
        ("memory", "memory.max")
    } else {
        ("memory", "memory.limit_in_bytes")
    };
    assert_eq!(t.cgroup_value(&t.id, mem, file), "134217728");
    assert_eq!(t.cgroup_value(&t.id, "pids", "pids.max"), "60");
    let res = t.path("res.json");
    std::fs::write(&res, json!({"pids": {"limit": 70}}).to_string()).unwrap();
    t.cmd(&["update", "--resources", res.to_str().unwrap(), &t.id])
        .assert_ok();
    assert_eq!(t.cgroup_value(&t.id, "pids", "pids.max"), "70");
    finish(t);
}

/// `-1` is runc's "no limit" for the memory, swap, pids and cpu-quota flags of `update`.
#[test]
fn update_minus_1_lifts_limits() {
    let t = running_with(
        "update-unlimited",
        json!({"memory": {"limit": 67108864, "swap": 134217728}, "pids": {"limit": 50},
               "cpu": {"quota": 50000, "period": 100000}}),
    );
    t.cmd(&[
        "update",
        "--memory",
        "-1",
        "--memory-swap",
        "-1",
        "--pids-limit",
        "-1",
        "--cpu-quota",
        "-1",
        &t.id,
    ])
    .assert_ok();
    assert_eq!(t.cgroup_value(&t.id, "pids", "pids.max"), "max");
    if cgroup_v2_only() {
        assert_eq!(t.cgroup_value(&t.id, "memory", "memory.max"), "max");
        assert_eq!(t.cgroup_value(&t.id, "cpu", "cpu.max"), "max 100000");
    } else {
        // v1 shows "no limit" as the largest page-aligned value.
        let mem: u64 = t
            .cgroup_value(&t.id, "memory", "memory.limit_in_bytes")
            .parse()
            .unwrap();
        assert!(mem > 1 << 62, "memory.limit_in_bytes {mem}");
        assert_eq!(t.cgroup_value(&t.id, "cpu", "cpu.cfs_quota_us"), "-1");
    }
    // `--memory -1` alone, with a swap limit in place (as update.bats does): swap goes too.
    t.cmd(&["update", "--memory", "64M", "--memory-swap", "128M", &t.id])
        .assert_ok();
    t.cmd(&["update", "--memory", "-1", &t.id]).assert_ok();
    if cgroup_v2_only() {
        assert_eq!(t.cgroup_value(&t.id, "memory", "memory.max"), "max");
    } else {
        let mem: u64 = t
            .cgroup_value(&t.id, "memory", "memory.limit_in_bytes")
            .parse()
            .unwrap();
        assert!(mem > 1 << 62, "memory.limit_in_bytes {mem}");
    }
    finish(t);
}

/// runc's access strings: any order, and letters other than r, w, m ignored (update.bats uses
/// "rwa"): the rule denies read and write.
#[test]
fn devices_access_letters_as_runc_reads_them() {
    if cgroup_v2_only() && is_reference_runtime() {
        eprintln!("skipped: runc refuses letters other than r, w, m on cgroup v2");
        return;
    }
    let t = Ctx::new("devices-rwa");
    let spec = t
        .spec()
        .push("/linux/devices", json!({"path": "/dev/berthdev", "type": "c", "major": 240, "minor": 0, "fileMode": 438}))
        .push("/linux/resources/devices", json!({"allow": false, "type": "c", "major": 240, "minor": 0, "access": "wra"}))
        .sh("head -c 1 /dev/berthdev");
    t.write_spec(&spec);
    let out = t.run();
    out.assert_failed();
    assert!(out.stderr.contains("not permitted"), "{out}");
    t.assert_no_leftovers(&t.id);
}

#[test]
fn devices_cgroup_denies_unlisted_device() {
    let t = Ctx::new("devices-deny");
    // The device node exists, but the cgroup denies it: EPERM. (Were it allowed, opening this
    // driverless number would give ENXIO instead.)
    let spec = t
        .spec()
        .push("/linux/devices", json!({"path": "/dev/berthdev", "type": "c", "major": 240, "minor": 0, "fileMode": 438}))
        .push("/linux/resources/devices", json!({"allow": false, "type": "c", "major": 240, "minor": 0, "access": "rwm"}))
        .sh("head -c 1 /dev/berthdev");
    t.write_spec(&spec);
    let out = t.run();
    out.assert_failed();
    assert!(out.stderr.contains("not permitted"), "{out}");
    t.assert_no_leftovers(&t.id);
}

#[test]
fn devices_cgroup_allows_listed_device() {
    let t = Ctx::new("devices-allow");
    let spec = t
        .spec()
        .push("/linux/devices", json!({"path": "/dev/berthdev", "type": "c", "major": 240, "minor": 0, "fileMode": 438}))
        .push("/linux/resources/devices", json!({"allow": true, "type": "c", "major": 240, "minor": 0, "access": "rwm"}))
        .sh("head -c 1 /dev/berthdev");
    t.write_spec(&spec);
    let out = t.run();
    out.assert_failed();
    assert!(out.stderr.contains("No such device"), "{out}");
    t.assert_no_leftovers(&t.id);
}

#[test]
fn events_stats() {
    let t = running_with("events", json!({"pids": {"limit": 30}}));
    let out = t.cmd(&["events", "--stats", &t.id]);
    out.assert_ok();
    // Keys in runc's order: tools (and runc's own tests) match the line as text.
    let head = format!("{{\"type\":\"stats\",\"id\":\"{}\",\"data\":", t.id);
    assert!(out.stdout.starts_with(&head), "{out}");
    let ev = out.json();
    assert_eq!(ev["type"], "stats", "{ev}");
    assert_eq!(ev["id"], t.id.as_str(), "{ev}");
    assert!(
        ev["data"]["pids"]["current"].as_u64().unwrap_or(0) >= 1,
        "{ev}"
    );
    assert_eq!(ev["data"]["pids"]["limit"], 30, "{ev}");
    assert!(
        ev["data"]["memory"]["usage"]["usage"].as_u64().unwrap_or(0) > 0,
        "{ev}"
    );
    finish(t);
}

#[test]
fn delete_removes_cgroup_everywhere() {
    let t = running_with("cg-delete", json!({"memory": {"limit": 67108864}}));
    assert!(!find_dirs_named(std::path::Path::new("/sys/fs/cgroup"), &t.id).is_empty());
    t.kill("KILL").assert_ok();
    t.wait_status("stopped", Duration::from_secs(5));
    t.delete().assert_ok();
    assert_eq!(
        find_dirs_named(std::path::Path::new("/sys/fs/cgroup"), &t.id),
        Vec::<std::path::PathBuf>::new()
    );
    t.assert_no_leftovers(&t.id);
}

/// The directories of `cgroups_path` in every hierarchy of this host that has it.
fn cgroup_dirs(cgroups_path: &str) -> Vec<std::path::PathBuf> {
    let rel = cgroups_path.trim_start_matches('/');
    if cgroup_v2_only() {
        return vec![std::path::Path::new("/sys/fs/cgroup").join(rel)];
    }
    std::fs::read_dir("/sys/fs/cgroup")
        .unwrap()
        .flatten()
        .map(|e| e.path().join(rel))
        .filter(|p| p.is_dir())
        .collect()
}

/// When a container under `/berth` is deleted, the parents it leaves empty go too, up to a pod
/// cgroup of berthd's (`/berth/pod-<id>`), which belongs to the pod. A `pod-` directory deeper
/// down is nobody's pod and goes like any other parent.
#[test]
fn empty_berth_parents_go_with_the_container_but_a_pod_cgroup() {
    berth_only!();
    let t = Ctx::new("cg-parents");
    let top = format!("/berth/t-{}", t.id);
    let pod = format!("/berth/pod-{}", t.id);
    let other = t.other_id("in-pod");
    // Whatever is left (as the runtime left it before this was fixed) goes when the test ends.
    let _cleanup = RemoveCgroups {
        t: &t,
        ids: vec![t.id.clone(), other.clone()],
        // berth's parent too, if that leaves it empty, as the runtime removes it.
        paths: vec![
            format!("{top}/pod-x"),
            top.clone(),
            pod.clone(),
            "/berth".into(),
        ],
    };
    t.write_spec(
        &t.spec()
            .set("/linux/cgroupsPath", json!(format!("{top}/pod-x/ctr"))),
    );
    t.run().assert_ok();
    assert_eq!(cgroup_dirs(&top), Vec::<std::path::PathBuf>::new());

    let bundle = t.bundle_with(
        "in-pod",
        &t.spec()
            .set("/linux/cgroupsPath", json!(format!("{pod}/ctr"))),
    );
    let out = t.cmd(&["run", "--bundle", bundle.to_str().unwrap(), &other]);
    let kept = cgroup_dirs(&pod);
    out.assert_ok();
    assert!(
        !kept.is_empty(),
        "the pod cgroup {pod} went with its container"
    );
    t.assert_no_leftovers(&t.id);
    t.assert_no_leftovers(&other);
}

/// When dropped: deletes the containers `ids`, then removes the cgroup directories `paths`
/// (empty by then) from every hierarchy, in order.
struct RemoveCgroups<'a> {
    t: &'a Ctx,
    ids: Vec<String>,
    paths: Vec<String>,
}

impl Drop for RemoveCgroups<'_> {
    fn drop(&mut self) {
        for id in &self.ids {
            let _ = self.t.cmd(&["delete", "--force", id]);
        }
        for path in &self.paths {
            for d in cgroup_dirs(path) {
                let _ = std::fs::remove_dir(d);
            }
        }
    }
}

/// The freezer file of a cgroup and the value that freezes it (v1 or v2).
fn freezer_file(cgroups_path: &str) -> (std::path::PathBuf, &'static str) {
    if cgroup_v2_only() {
        (cgroup_file("", cgroups_path, "cgroup.freeze"), "1")
    } else {
        (
            cgroup_file("freezer", cgroups_path, "freezer.state"),
            "FROZEN",
        )
    }
}

/// A cgroup that is frozen before the container exists would stop the init in it, and `run` or
/// `create` would never return: refused up front, as runc does, and the cgroup (not the
/// runtime's) is left as it was.
#[test]
fn run_and_create_refuse_a_frozen_cgroup() {
    let t = Ctx::new("cg-frozen");
    t.write_spec(&t.spec().args(&["sleep", "1000"]));
    let (file, frozen) = freezer_file(&Ctx::cgroups_path(&t.id));
    let dir = file.parent().unwrap();
    std::fs::create_dir_all(dir).unwrap();
    std::fs::write(&file, frozen).unwrap();
    for out in [t.run_detached(), t.create()] {
        out.assert_failed()
            .assert_one_line_error()
            .assert_stderr_mentions(&["container's cgroup unexpectedly frozen"]);
        assert!(!t.rt.root.join(&t.id).exists(), "state dir left: {out}");
    }
    assert!(dir.is_dir(), "the frozen cgroup was removed");
    // Thawed, the same cgroup is fine.
    std::fs::write(&file, if cgroup_v2_only() { "0" } else { "THAWED" }).unwrap();
    t.run_detached().assert_ok();
    finish(t);
}

/// A second container in a cgroup that already has processes: runc 1.1 goes ahead with a
/// warning, and so does berth.
#[test]
fn run_and_create_warn_about_a_non_empty_cgroup() {
    let t = Ctx::new("cg-shared");
    t.write_spec(&t.spec().args(&["sleep", "1000"]));
    let out = t.run_detached();
    out.assert_ok();
    assert!(!out.stderr.contains("not empty"), "an empty cgroup: {out}");
    let shared = Ctx::cgroups_path(&t.id);
    let spec = t
        .spec()
        .args(&["sleep", "1000"])
        .set("/linux/cgroupsPath", json!(shared));
    let b = t.bundle_with("second", &spec);
    let b = b.to_str().unwrap();
    let two = t.other_id("two");
    let out = t.cmd(&["run", "--detach", "--bundle", b, &two]);
    out.assert_ok();
    assert!(
        out.stderr.contains("container's cgroup is not empty"),
        "no warning: {out}"
    );
    let three = t.other_id("three");
    let out = t.cmd(&["create", "--bundle", b, &three]);
    out.assert_ok();
    assert!(
        out.stderr.contains("container's cgroup is not empty"),
        "no warning: {out}"
    );
    t.cmd(&["delete", "--force", &three]).assert_ok();
    t.cmd(&["delete", "--force", &two]).assert_ok();
    finish(t);
}

/// A runtime process that is killed (and reaped) if the test ends before it does.
struct Background(std::process::Child);

impl Drop for Background {
    fn drop(&mut self) {
        if self.0.try_wait().ok().flatten().is_none() {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
}

/// `events` reports an OOM kill in the container as runc does (`{"type":"oom","id":…}`, a line
/// of its own), and ends by itself when the container is deleted.
#[test]
fn events_report_oom_and_end_when_the_container_goes() {
    use std::io::BufRead;
    let t = running_with(
        "events-oom",
        json!({"memory": {"limit": 33554432, "swap": 33554432}}),
    );
    let mut ev = Background(
        std::process::Command::new(&t.rt.bin)
            .arg("--root")
            .arg(&t.rt.root)
            .args(["events", "--interval", "1s", &t.id])
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::piped())
            .spawn()
            .unwrap(),
    );
    let (tx, rx) = std::sync::mpsc::channel();
    let stdout = ev.0.stdout.take().unwrap();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(stdout).lines() {
            if tx.send(line.unwrap_or_default()).is_err() {
                break;
            }
        }
    });
    // The first stats event: events is watching by now.
    let first = rx
        .recv_timeout(CMD_TIMEOUT)
        .expect("no event from `events`");
    let head = format!("{{\"type\":\"stats\",\"id\":\"{}\",\"data\":", t.id);
    assert!(first.starts_with(&head), "{first}");
    t.cmd(&[
        "exec",
        "-d",
        &t.id,
        "sh",
        "-c",
        "x=$(dd if=/dev/urandom ibs=5120k)",
    ])
    .assert_ok();
    let want = format!("{{\"type\":\"oom\",\"id\":\"{}\"}}", t.id);
    let start = std::time::Instant::now();
    loop {
        let left = CMD_TIMEOUT.saturating_sub(start.elapsed());
        match rx.recv_timeout(left) {
            Ok(line) if line == want => break,
            Ok(_) => {}
            Err(e) => panic!("no OOM event from `events` ({e})"),
        }
    }
    t.delete_force().assert_ok();
    let start = std::time::Instant::now();
    let status = loop {
        if let Some(s) = ev.0.try_wait().unwrap() {
            break s;
        }
        assert!(
            start.elapsed() < CMD_TIMEOUT,
            "`events` outlived the container"
        );
        std::thread::sleep(Duration::from_millis(20));
    };
    assert!(status.success(), "events: {status}");
    t.assert_no_leftovers(&t.id);
}

/// cgroup v1: a parent that exists with no `cpuset.cpus`/`cpuset.mems` (as `mkdir` makes it)
/// gets its parent's, as runc does; otherwise the container's cpuset would copy the empty
/// values and the init could not join it (ENOSPC).
#[test]
fn cpuset_of_an_existing_empty_parent_is_filled_in() {
    if cgroup_v2_only() {
        eprintln!("skipped: cgroup v1 cpuset only");
        return;
    }
    let t = Ctx::new("cpuset-parent");
    let parent = Ctx::cgroups_path(&t.id);
    let dir = cgroup_file("cpuset", &parent, "");
    std::fs::create_dir_all(&dir).unwrap();
    assert_eq!(
        t.cgroup_value(&t.id, "cpuset", "cpuset.cpus"),
        "",
        "mkdir'd empty"
    );
    t.write_spec(
        &t.spec()
            .set("/linux/cgroupsPath", json!(format!("{parent}/ct"))),
    );
    t.run().assert_ok();
    let top = std::fs::read_to_string("/sys/fs/cgroup/cpuset/cpuset.cpus").unwrap();
    assert_eq!(t.cgroup_value(&t.id, "cpuset", "cpuset.cpus"), top.trim());
    // The container's own cgroup is gone; the parent is the test's (Ctx removes it).
    assert!(!cgroup_file("cpuset", &format!("{parent}/ct"), "").exists());
}

/// cgroup v1 (hybrid too, whose unified hierarchy has no controllers): `resources.unified` is
/// refused, in runc's words, and nothing is left.
#[test]
fn unified_resources_on_cgroup_v1_are_refused() {
    if cgroup_v2_only() {
        eprintln!("skipped: cgroup v1 only");
        return;
    }
    let t = Ctx::new("cg-unified-v1");
    t.write_spec(
        &t.spec()
            .resources("unified", json!({"memory.min": "131072"})),
    );
    t.run_detached()
        .assert_failed()
        .assert_one_line_error()
        .assert_stderr_mentions(&["invalid configuration"]);
    t.assert_no_leftovers(&t.id);
}

/// cgroup v1: in a pod cgroup limited to 50%, `update --cpu-period 10000 --cpu-quota 3000`
/// (30% on a shorter period) works, as with runc: the kernel refuses the new period while the
/// old quota over it would exceed the pod's limit, so the period goes in again after the quota.
#[test]
fn update_shorter_cpu_period_under_a_limited_pod() {
    if cgroup_v2_only() {
        eprintln!("skipped: cgroup v1 cpu controller only");
        return;
    }
    let t = Ctx::new("cpu-pod");
    let parent = Ctx::cgroups_path(&t.id);
    let dir = cgroup_file("cpu", &parent, "");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("cpu.cfs_quota_us"), "50000").unwrap();
    t.write_spec(
        &t.spec()
            .args(&["sleep", "1000"])
            .set("/linux/cgroupsPath", json!(format!("{parent}/ct")))
            .resources("cpu", json!({"quota": 40000, "period": 100000})),
    );
    t.run_detached().assert_ok();
    let ct = format!("{}/ct", t.id);
    t.cmd(&[
        "update",
        "--cpu-period",
        "10000",
        "--cpu-quota",
        "3000",
        &t.id,
    ])
    .assert_ok();
    assert_eq!(t.cgroup_value(&ct, "cpu", "cpu.cfs_period_us"), "10000");
    assert_eq!(t.cgroup_value(&ct, "cpu", "cpu.cfs_quota_us"), "3000");
    t.delete_force().assert_ok();
}
