//! Lifecycle: run, create → start → kill → delete, state fields, pause/resume, pid files.

use berth_tests::*;
use serde_json::json;
use std::fs;
use std::time::Duration;

#[test]
fn run_true_exits_zero_and_leaves_nothing() {
    let t = Ctx::new("run-true");
    t.write_spec(&t.spec());
    t.run().assert_ok();
    t.assert_no_leftovers(&t.id);
}

#[test]
fn run_exit_code_is_the_containers() {
    let t = Ctx::new("run-exit7");
    t.write_spec(&t.spec().sh("exit 7"));
    let out = t.run();
    assert_eq!(out.code, 7, "{out}");
    t.assert_no_leftovers(&t.id);
}

#[test]
fn run_killed_by_signal_exits_128_plus_signal() {
    let t = Ctx::new("run-sig");
    // Outside a pid namespace, so that sh is not an init immune to its own SIGKILL.
    t.write_spec(&t.spec().without_namespace("pid").sh("kill -9 $$"));
    let out = t.run();
    assert_eq!(out.code, 137, "{out}");
    t.assert_no_leftovers(&t.id);
}

#[test]
fn run_passes_stdout_and_stderr_apart() {
    let t = Ctx::new("run-stdio");
    t.write_spec(&t.spec().sh("echo to-out; echo to-err >&2"));
    let out = t.run();
    out.assert_ok();
    assert_eq!(out.stdout.trim(), "to-out", "{out}");
    assert!(out.stderr.contains("to-err"), "{out}");
}

#[test]
fn create_start_kill_delete_walks_the_states() {
    let t = Ctx::new("walk");
    t.write_spec(&t.spec().args(&["sleep", "1000"]));
    t.create().assert_ok();

    let st = t.state();
    assert_eq!(st["status"], "created", "{st}");
    let pid = st["pid"].as_i64().expect("created state has a pid") as i32;
    assert!(pid > 0);
    // The init waits: it exists but has not exec'd `sleep` yet.
    let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).expect("init process exists");
    assert!(
        !String::from_utf8_lossy(&cmdline).contains("sleep"),
        "init ran before start"
    );

    t.start().assert_ok();
    t.wait_status("running", Duration::from_secs(5));
    assert_eq!(t.pid(), pid, "pid changed across start");
    let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap();
    assert!(String::from_utf8_lossy(&cmdline).starts_with("sleep"));

    t.kill("KILL").assert_ok();
    t.wait_status("stopped", Duration::from_secs(5));
    t.delete().assert_ok();
    assert!(
        t.cmd(&["state", &t.id]).code != 0,
        "state after delete should fail"
    );
    t.assert_no_leftovers(&t.id);
}

#[test]
fn state_has_runc_fields() {
    let t = Ctx::new("state-fields");
    t.write_spec(
        &t.spec()
            .set("/annotations", json!({"org.berth.test": "yes"})),
    );
    t.create().assert_ok();
    let st = t.state();
    assert_eq!(st["id"], t.id.as_str());
    assert!(
        st["ociVersion"]
            .as_str()
            .is_some_and(|v| v.starts_with("1.")),
        "{st}"
    );
    assert_eq!(st["bundle"], t.bundle.to_str().unwrap(), "{st}");
    assert_eq!(st["rootfs"], busybox_rootfs().to_str().unwrap(), "{st}");
    let created = st["created"].as_str().expect("created");
    assert!(
        created.len() >= 20 && created.contains('T'),
        "created is RFC 3339: {created}"
    );
    assert!(st.get("owner").is_some(), "owner field: {st}");
    assert_eq!(st["annotations"]["org.berth.test"], "yes", "{st}");
    t.delete().assert_ok();
    t.assert_no_leftovers(&t.id);
}

#[test]
fn create_then_delete_without_start_leaves_nothing() {
    let t = Ctx::new("create-delete");
    t.write_spec(&t.spec());
    t.create().assert_ok();
    let pid = t.pid();
    t.delete().assert_ok();
    assert!(
        wait_gone(pid, Duration::from_secs(2)),
        "init {pid} alive after delete"
    );
    t.assert_no_leftovers(&t.id);
}

#[test]
fn run_detach_then_kill_term() {
    let t = Ctx::new("detach");
    t.write_spec(
        &t.spec()
            .sh("trap 'exit 0' TERM; while true; do sleep 0.1; done"),
    );
    t.run_detached().assert_ok();
    assert_eq!(t.status(), "running");
    t.kill("TERM").assert_ok();
    t.wait_status("stopped", Duration::from_secs(5));
    t.delete().assert_ok();
    t.assert_no_leftovers(&t.id);
}

#[test]
fn kill_by_number() {
    let t = Ctx::new("kill-num");
    t.write_spec(&t.spec().args(&["sleep", "1000"]));
    t.run_detached().assert_ok();
    t.kill("9").assert_ok();
    t.wait_status("stopped", Duration::from_secs(5));
    t.delete().assert_ok();
    t.assert_no_leftovers(&t.id);
}

/// Real-time signals have no names; runc's `kill` sends them by number, and so does berth's.
/// A name nobody knows is runc's "unknown signal".
#[test]
fn kill_sends_real_time_signals_by_number() {
    let t = Ctx::new("kill-rt");
    let out = t.path("out");
    fs::create_dir_all(&out).unwrap();
    t.write_spec(
        &t.spec()
            .mount("/out", "bind", out.to_str().unwrap(), &["rbind", "rw"])
            .sh("trap 'echo got 34 > /out/got; exit 0' 34; touch /out/ready; while true; do sleep 0.1; done"),
    );
    t.run_detached().assert_ok();
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while !out.join("ready").exists() {
        assert!(
            std::time::Instant::now() < deadline,
            "the trap was never set"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    t.kill("34").assert_ok();
    t.wait_status("stopped", Duration::from_secs(5));
    assert_eq!(
        fs::read_to_string(out.join("got")).unwrap().trim(),
        "got 34"
    );
    if !is_reference_runtime() {
        t.kill("SIGFOO")
            .assert_failed()
            .assert_stderr_mentions(&["unknown signal \"SIGFOO\""])
            .assert_one_line_error();
    }
    t.delete().assert_ok();
    t.assert_no_leftovers(&t.id);
}

/// Signal 0 is runc's liveness probe (podman uses it): it succeeds while the init exists, in
/// created and running, and fails once the container has stopped, with runc's "container not
/// running" (containerd matches that text). With `--all` a stopped container is no error.
#[test]
fn kill_0_probes_the_init() {
    let t = Ctx::new("kill-0");
    t.write_spec(&t.spec().args(&["sleep", "1000"]));
    t.create().assert_ok();
    t.kill("0").assert_ok();
    assert_eq!(t.status(), "created", "signal 0 must deliver nothing");
    t.start().assert_ok();
    t.kill("0").assert_ok();
    assert_eq!(t.status(), "running");
    t.kill("KILL").assert_ok();
    t.wait_status("stopped", Duration::from_secs(5));
    t.kill("0")
        .assert_failed()
        .assert_stderr_mentions(&["container not running"])
        .assert_one_line_error();
    t.cmd(&["kill", "--all", &t.id, "0"]).assert_ok();
    t.delete().assert_ok();
    t.assert_no_leftovers(&t.id);
}

#[test]
fn kill_all_reaches_every_process() {
    let t = Ctx::new("kill-all");
    t.write_spec(&t.spec().sh("sleep 1000 & sleep 1000 & wait"));
    t.run_detached().assert_ok();
    t.cmd(&["kill", "--all", &t.id, "KILL"]).assert_ok();
    t.wait_status("stopped", Duration::from_secs(5));
    t.delete().assert_ok();
    t.assert_no_leftovers(&t.id);
}

#[test]
fn delete_force_stops_a_running_container() {
    let t = Ctx::new("delete-force");
    t.write_spec(&t.spec().args(&["sleep", "1000"]));
    t.run_detached().assert_ok();
    let pid = t.pid();
    t.delete_force().assert_ok();
    assert!(
        wait_gone(pid, Duration::from_secs(2)),
        "init {pid} alive after delete --force"
    );
    t.assert_no_leftovers(&t.id);
}

#[test]
fn delete_of_running_container_without_force_fails() {
    let t = Ctx::new("delete-running");
    t.write_spec(&t.spec().args(&["sleep", "1000"]));
    t.run_detached().assert_ok();
    t.delete()
        .assert_failed()
        .assert_stderr_mentions(&["running", &t.id]);
    assert_eq!(t.status(), "running");
    t.delete_force().assert_ok();
    t.assert_no_leftovers(&t.id);
}

#[test]
fn start_twice_fails() {
    let t = Ctx::new("start-twice");
    t.write_spec(&t.spec().args(&["sleep", "1000"]));
    t.create().assert_ok();
    t.start().assert_ok();
    t.start().assert_failed();
    assert_eq!(t.status(), "running");
    t.delete_force().assert_ok();
    t.assert_no_leftovers(&t.id);
}

#[test]
fn pid_file_holds_the_init_pid() {
    let t = Ctx::new("pidfile");
    t.write_spec(&t.spec().args(&["sleep", "1000"]));
    let pf = t.path("init.pid");
    t.cmd(&[
        "create",
        "--bundle",
        t.bundle.to_str().unwrap(),
        "--pid-file",
        pf.to_str().unwrap(),
        &t.id,
    ])
    .assert_ok();
    let written: i64 = std::fs::read_to_string(&pf)
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    assert_eq!(written, t.pid() as i64);
    t.delete_force().assert_ok();
    t.assert_no_leftovers(&t.id);
}

#[test]
fn pause_and_resume() {
    let t = Ctx::new("pause");
    t.write_spec(&t.spec().args(&["sleep", "1000"]));
    t.run_detached().assert_ok();
    t.cmd(&["pause", &t.id]).assert_ok();
    assert_eq!(t.status(), "paused");
    let pid = t.pid();
    // The frozen task: D or S state, but the freezer says FROZEN.
    if !cgroup_v2_only() {
        assert_eq!(t.cgroup_value(&t.id, "freezer", "freezer.state"), "FROZEN");
    }
    t.cmd(&["resume", &t.id]).assert_ok();
    assert_eq!(t.status(), "running");
    assert!(process_alive(pid));
    t.delete_force().assert_ok();
    t.assert_no_leftovers(&t.id);
}

#[test]
fn paused_container_can_be_force_deleted() {
    let t = Ctx::new("pause-delete");
    t.write_spec(&t.spec().args(&["sleep", "1000"]));
    t.run_detached().assert_ok();
    t.cmd(&["pause", &t.id]).assert_ok();
    t.delete_force().assert_ok();
    t.assert_no_leftovers(&t.id);
}

#[test]
fn container_exit_makes_it_stopped() {
    let t = Ctx::new("exit-stopped");
    t.write_spec(&t.spec().args(&["sleep", "0.2"]));
    t.run_detached().assert_ok();
    t.wait_status("stopped", Duration::from_secs(5));
    t.delete().assert_ok();
    t.assert_no_leftovers(&t.id);
}

#[test]
fn two_containers_run_side_by_side() {
    let t = Ctx::new("two");
    let other = t.other_id("b");
    t.write_spec(&t.spec().args(&["sleep", "1000"]));
    let b2 = t.bundle_with(
        "bundle-b",
        &Spec::base(&busybox_rootfs(), &Ctx::cgroups_path(&other)).args(&["sleep", "1000"]),
    );
    t.run_detached().assert_ok();
    t.cmd(&["run", "-d", "--bundle", b2.to_str().unwrap(), &other])
        .assert_ok();
    assert_ne!(t.pid(), t.state_of(&other)["pid"].as_i64().unwrap() as i32);
    t.delete_force().assert_ok();
    t.cmd(&["delete", "-f", &other]).assert_ok();
    t.assert_no_leftovers(&t.id);
    t.assert_no_leftovers(&other);
}
