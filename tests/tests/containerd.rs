//! Debian's containerd (1.6) driving the runtime under test through its runc shim
//! (io.containerd.runc.v2): `ctr run --runc-binary <runtime>`. Each test starts its own
//! containerd (see `berth_tests::peers`), imports busybox or nginx from the fixtures' OCI
//! layouts, and ends by checking that nothing of its containers is left: runtime state under the
//! shim's `--runc-root`, cgroups, mounts, shim and container processes.

use berth_tests::peers::{assert_nginx_welcome, shows_pts, Containerd, CONTAINERD_NS};
use berth_tests::{cgroup_file, cgroup_v2_only, status_field};
use std::fs;

const BUSYBOX: &str = "localhost/busybox:latest";

fn containerd_with_busybox(name: &str) -> Containerd {
    let c = Containerd::start(name);
    c.import("busybox");
    c
}

#[test]
fn containerd_run_rm_prints_and_propagates_the_exit_code() {
    let c = containerd_with_busybox("run-rm");
    let id = c.id("run-rm");
    let out = c.run(
        &["--rm"],
        BUSYBOX,
        &id,
        &["sh", "-c", "echo hi from $$; exit 3"],
    );
    assert_eq!(out.code, 3, "exit code of the container: {out}");
    assert_eq!(out.stdout.trim(), "hi from 1", "{out}");
    assert_eq!(
        c.ctr(&["container", "ls", "-q"]).assert_ok().stdout.trim(),
        ""
    );
    c.assert_no_leftovers(&id);
}

#[test]
fn containerd_run_detached_exec_kill_delete() {
    let c = containerd_with_busybox("detached");
    let id = c.id("detached");
    c.run(
        &["-d"],
        BUSYBOX,
        &id,
        &["sh", "-c", "trap 'exit 7' TERM; sleep 1000 & wait"],
    )
    .assert_ok();
    let (pid, status) = c.task(&id);
    assert_eq!(status, "RUNNING");
    assert!(pid > 0);

    let out = c.ctr(&[
        "task",
        "exec",
        "--exec-id",
        "x1",
        &id,
        "sh",
        "-c",
        "echo in $PPID; cat /proc/1/cmdline; exit 5",
    ]);
    assert_eq!(out.code, 5, "exit code of the exec'd process: {out}");
    assert!(out.stdout.starts_with("in 0\n"), "{out}");
    assert!(out.stdout.contains("sleep 1000"), "{out}");

    let out = c.ctr(&["task", "ps", &id]);
    assert!(
        out.assert_ok().stdout.contains(&pid.to_string()),
        "task ps lists the init: {out}"
    );

    // SIGTERM by default: the trap makes the task exit 7.
    c.ctr(&["task", "kill", &id]).assert_ok();
    c.wait_task_status(&id, "STOPPED");
    let out = c.ctr(&["task", "delete", &id]);
    out.assert_ok();
    assert!(out.stderr.contains("exit code 7"), "{out}");
    c.ctr(&["container", "delete", &id]).assert_ok();
    assert_eq!(
        c.ctr(&["container", "ls", "-q"]).assert_ok().stdout.trim(),
        ""
    );
    c.assert_no_leftovers(&id);
}

/// `ctr run -t` and `ctr task exec -t`: the shim gets the pty master through the runtime's
/// `--console-socket`.
#[test]
fn containerd_run_and_exec_with_a_terminal() {
    let c = containerd_with_busybox("tty");
    let id = c.id("tty");
    let mut a: Vec<String> = vec!["run".into()];
    a.extend(c.runtime_flags());
    a.extend(["--rm", "-t", BUSYBOX, &id, "tty"].map(String::from));
    let a: Vec<&str> = a.iter().map(String::as_str).collect();
    let out = c.ctr_tty(&a);
    out.assert_ok();
    assert!(shows_pts(&out.stdout), "`ctr run -t … tty`: {out}");
    c.assert_no_leftovers(&id);

    let id = c.id("tty-exec");
    c.run(&["-d"], BUSYBOX, &id, &["sleep", "1000"]).assert_ok();
    let out = c.ctr_tty(&["task", "exec", "-t", "--exec-id", "t", &id, "tty"]);
    assert!(shows_pts(&out.stdout), "`ctr task exec -t … tty`: {out}");
    c.ctr(&["task", "kill", "-s", "SIGKILL", &id]).assert_ok();
    c.wait_task_status(&id, "STOPPED");
    c.ctr(&["task", "delete", &id]).assert_ok();
    c.ctr(&["container", "delete", &id]).assert_ok();
    c.assert_no_leftovers(&id);
}

#[test]
fn containerd_pause_and_resume() {
    let c = containerd_with_busybox("pause");
    let id = c.id("pause");
    c.run(&["-d"], BUSYBOX, &id, &["sleep", "1000"]).assert_ok();
    c.ctr(&["task", "pause", &id]).assert_ok();
    assert_eq!(c.task(&id).1, "PAUSED");
    c.ctr(&["task", "resume", &id]).assert_ok();
    assert_eq!(c.task(&id).1, "RUNNING");
    let out = c.ctr(&["task", "exec", "--exec-id", "x", &id, "echo", "awake"]);
    assert_eq!(out.assert_ok().stdout.trim(), "awake");
    c.ctr(&["task", "kill", "-s", "SIGKILL", &id]).assert_ok();
    c.wait_task_status(&id, "STOPPED");
    c.ctr(&["task", "delete", &id]).assert_ok();
    c.ctr(&["container", "delete", &id]).assert_ok();
    c.assert_no_leftovers(&id);
}

/// ctr's default spec mounts no cgroup filesystem, so the limit is read on the host, in the
/// cgroup the container's /proc/self/cgroup names.
#[test]
fn containerd_memory_limit_and_caps() {
    let c = containerd_with_busybox("limits");
    let id = c.id("limits");
    c.run(
        &["-d", "--memory-limit", "67108864"],
        BUSYBOX,
        &id,
        &["sleep", "1000"],
    )
    .assert_ok();
    let cgroups_path = format!("/{CONTAINERD_NS}/{id}");
    let out = c.ctr(&[
        "task",
        "exec",
        "--exec-id",
        "x",
        &id,
        "cat",
        "/proc/self/cgroup",
        "/proc/self/status",
    ]);
    out.assert_ok();
    assert!(
        out.stdout.contains(&format!(":memory:{cgroups_path}\n"))
            || out.stdout.contains(&format!("0::{cgroups_path}\n")),
        "{out}"
    );
    let (file, want) = if cgroup_v2_only() {
        ("memory.max", "67108864")
    } else {
        ("memory.limit_in_bytes", "67108864")
    };
    let limit = fs::read_to_string(cgroup_file("memory", &cgroups_path, file)).unwrap();
    assert_eq!(limit.trim(), want);
    // ctr's default spec: runc's default capability set (CAP_NET_RAW among them, no SYS_ADMIN).
    let eff = status_field(&out.stdout, "CapEff").expect("CapEff");
    let eff = u64::from_str_radix(eff, 16).unwrap();
    assert_eq!(eff & (1 << 21), 0, "no CAP_SYS_ADMIN: {out}");
    assert_ne!(eff & (1 << 13), 0, "CAP_NET_RAW: {out}");
    c.ctr(&["task", "kill", "-s", "SIGKILL", &id]).assert_ok();
    c.wait_task_status(&id, "STOPPED");
    c.ctr(&["task", "delete", &id]).assert_ok();
    c.ctr(&["container", "delete", &id]).assert_ok();
    c.assert_no_leftovers(&id);
}

#[test]
fn containerd_nginx_serves_in_its_netns() {
    let c = Containerd::start("nginx");
    c.import("nginx");
    let id = c.id("nginx");
    c.run(&["-d"], "localhost/nginx:latest", &id, &[])
        .assert_ok();
    let (pid, status) = c.task(&id);
    assert_eq!(status, "RUNNING");
    // ctr gives the container a new network namespace with only lo, which the runtime brings up.
    assert_nginx_welcome(pid, &c.dir);
    // The image's StopSignal is SIGQUIT: a graceful quit, exit status 0.
    c.ctr(&["task", "kill", "-s", "SIGQUIT", &id]).assert_ok();
    c.wait_task_status(&id, "STOPPED");
    let out = c.ctr(&["task", "delete", &id]);
    out.assert_ok();
    assert!(!out.stderr.contains("exit code"), "exit 0: {out}");
    c.ctr(&["container", "delete", &id]).assert_ok();
    c.assert_no_leftovers(&id);
}
