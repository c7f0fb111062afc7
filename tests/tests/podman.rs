//! Debian's podman (4.3) driving the runtime under test: `podman --runtime <runtime>`, each test
//! with its own storage, run root, runtime root and temp dir (see `berth_tests::peers`), the
//! busybox and nginx images loaded from the fixtures' OCI layouts, and `--network none` always
//! (no netavark, CNI or iptables). Every test ends by checking that nothing of its containers is
//! left: runtime state, `libpod-<id>` cgroups, mounts, processes.

use berth_tests::peers::{assert_nginx_welcome, retry, shows_pts, Podman};
use berth_tests::{cgroup_v2_only, status_field};
use std::time::Duration;

/// A podman with busybox loaded.
fn podman_with_busybox(name: &str) -> Podman {
    let p = Podman::new(name);
    p.load_image("busybox");
    p
}

/// `run -d --name NAME --network none localhost/busybox` of a shell that exits 7 on SIGTERM (so a
/// `stop` that delivers SIGTERM shows in the exit code, not podman's SIGKILL fallback's 137).
fn run_sleeper(p: &Podman, name: &str, extra: &[&str]) {
    let mut a = vec!["run", "-d", "--name", name, "--network", "none"];
    a.extend_from_slice(extra);
    a.extend_from_slice(&[
        "localhost/busybox",
        "sh",
        "-c",
        "trap 'exit 7' TERM; sleep 1000 & wait",
    ]);
    p.cmd(&a).assert_ok();
    assert_eq!(p.inspect(name, "{{.State.Status}}"), "running");
}

/// `run --rm --network none [extra…] localhost/busybox sh -c script`.
fn run_rm_sh(p: &Podman, extra: &[&str], script: &str) -> berth_tests::Output {
    let mut a = vec!["run", "--rm", "--network", "none"];
    a.extend_from_slice(extra);
    a.extend_from_slice(&["localhost/busybox", "sh", "-c", script]);
    p.cmd(&a)
}

#[test]
fn podman_run_rm_prints_and_propagates_the_exit_code() {
    let p = podman_with_busybox("run-rm");
    let out = run_rm_sh(
        &p,
        &[],
        "echo hello from $(hostname -s | wc -c) chars; exit 3",
    );
    assert_eq!(out.code, 3, "exit code of the container: {out}");
    assert!(out.stdout.starts_with("hello from"), "{out}");
    let out = run_rm_sh(&p, &[], "cat /proc/self/status");
    out.assert_ok();
    assert_eq!(status_field(&out.stdout, "Pid"), Some("1"), "{out}");
    assert_eq!(p.cmd(&["ps", "-aq"]).assert_ok().stdout.trim(), "");
    p.assert_no_leftovers();
}

#[test]
fn podman_run_detached_exec_stop_rm() {
    let p = podman_with_busybox("lifecycle");
    run_sleeper(&p, "box", &[]);

    let out = p.cmd(&["exec", "box", "sh", "-c", "echo in $PPID; exit 4"]);
    assert_eq!(out.code, 4, "exit code of the exec'd process: {out}");
    assert_eq!(
        out.stdout.trim(),
        "in 0",
        "an exec'd process's parent is outside"
    );

    let out = p.cmd_tty(&["exec", "-it", "box", "tty"]);
    out.assert_ok();
    assert!(
        shows_pts(&out.stdout),
        "`exec -it … tty` should print /dev/pts/N: {out}"
    );

    let out = p.cmd(&["exec", "-i", "box", "cat", "/proc/1/cmdline"]);
    assert!(out.assert_ok().stdout.contains("sleep 1000"), "{out}");

    let out = p.cmd(&["stop", "box"]);
    out.assert_ok();
    assert!(
        !out.stderr.contains("SIGKILL"),
        "SIGTERM should have stopped it: {out}"
    );
    assert_eq!(p.inspect("box", "{{.State.Status}}"), "exited");
    assert_eq!(p.inspect("box", "{{.State.ExitCode}}"), "7");
    p.cmd(&["rm", "box"]).assert_ok();
    assert_eq!(p.cmd(&["ps", "-aq"]).assert_ok().stdout.trim(), "");
    p.assert_no_leftovers();
}

#[test]
fn podman_run_it_gets_a_terminal() {
    let p = podman_with_busybox("run-it");
    let out = p.cmd_tty(&[
        "run",
        "--rm",
        "-it",
        "--network",
        "none",
        "localhost/busybox",
        "tty",
    ]);
    out.assert_ok();
    assert!(
        shows_pts(&out.stdout),
        "`run -it … tty` should print /dev/pts/N: {out}"
    );
    p.assert_no_leftovers();
}

#[test]
fn podman_pause_and_unpause() {
    let p = podman_with_busybox("pause");
    run_sleeper(&p, "box", &[]);
    let status = || {
        p.cmd(&["ps", "-a", "--format", "{{.Status}}"])
            .assert_ok()
            .stdout
            .trim()
            .to_string()
    };
    p.cmd(&["pause", "box"]).assert_ok();
    assert_eq!(status(), "Paused");
    assert_eq!(p.inspect("box", "{{.State.Status}}"), "paused");
    p.cmd(&["unpause", "box"]).assert_ok();
    assert!(status().starts_with("Up"), "after unpause: {}", status());
    assert_eq!(p.inspect("box", "{{.State.Status}}"), "running");
    // Running again for real: an exec answers.
    let out = p.cmd(&["exec", "box", "echo", "awake"]);
    assert_eq!(out.assert_ok().stdout.trim(), "awake");
    p.cmd(&["rm", "-f", "-t", "0", "box"]).assert_ok();
    p.assert_no_leftovers();
}

#[test]
fn podman_top_lists_the_container_processes() {
    let p = podman_with_busybox("top");
    run_sleeper(&p, "box", &[]);
    let out = p.cmd(&["top", "box"]);
    out.assert_ok();
    let lines: Vec<&str> = out.stdout.lines().collect();
    assert!(lines.len() >= 3, "header, sh and sleep: {out}");
    assert!(
        lines[0].contains("PID") && lines[0].contains("COMMAND"),
        "{out}"
    );
    assert!(out.stdout.contains("sleep 1000"), "{out}");
    let out = p.cmd(&["top", "box", "pid", "args"]);
    assert!(
        out.assert_ok()
            .stdout
            .lines()
            .any(|l| l.trim().starts_with("1 ")),
        "{out}"
    );
    p.cmd(&["rm", "-f", "-t", "0", "box"]).assert_ok();
    p.assert_no_leftovers();
}

/// The container's own cgroup file of `controller` as seen inside it.
fn cgroup_file_inside(controller: &str, v1: &str, v2: &str) -> String {
    if cgroup_v2_only() {
        format!("/sys/fs/cgroup/{v2}")
    } else {
        format!("/sys/fs/cgroup/{controller}/{v1}")
    }
}

#[test]
fn podman_memory_limit_is_set_in_the_container_cgroup() {
    let p = podman_with_busybox("memory");
    let file = cgroup_file_inside("memory", "memory.limit_in_bytes", "memory.max");
    let out = run_rm_sh(&p, &["--memory", "64m"], &format!("cat {file}"));
    assert_eq!(
        out.assert_ok().stdout.trim(),
        (64 << 20).to_string(),
        "{out}"
    );
    p.assert_no_leftovers();
}

#[test]
fn podman_pids_limit_is_set_in_the_container_cgroup() {
    let p = podman_with_busybox("pids");
    let file = cgroup_file_inside("pids", "pids.max", "pids.max");
    let out = run_rm_sh(&p, &["--pids-limit", "20"], &format!("cat {file}"));
    assert_eq!(out.assert_ok().stdout.trim(), "20", "{out}");
    p.assert_no_leftovers();
}

#[test]
fn podman_read_only_root_refuses_writes() {
    let p = podman_with_busybox("read-only");
    let out = run_rm_sh(&p, &["--read-only"], "touch /x");
    out.assert_failed();
    assert!(
        out.stderr.contains("Read-only file system") || out.stdout.contains("Read-only"),
        "touch / should fail with EROFS: {out}"
    );
    // podman's --read-only keeps /tmp, /run and /var/tmp writable (tmpfs).
    run_rm_sh(&p, &["--read-only"], "touch /tmp/x").assert_ok();
    p.assert_no_leftovers();
}

#[test]
fn podman_cap_drop_all_leaves_no_effective_capability() {
    let p = podman_with_busybox("cap-drop");
    let out = run_rm_sh(&p, &["--cap-drop", "all"], "cat /proc/self/status");
    out.assert_ok();
    for set in ["CapEff", "CapPrm", "CapBnd"] {
        assert_eq!(
            status_field(&out.stdout, set),
            Some("0000000000000000"),
            "{set}: {out}"
        );
    }
    let out = run_rm_sh(&p, &[], "cat /proc/self/status");
    assert_ne!(
        status_field(&out.assert_ok().stdout, "CapEff"),
        Some("0000000000000000"),
        "without --cap-drop the defaults remain: {out}"
    );
    p.assert_no_leftovers();
}

#[test]
fn podman_nginx_serves_and_stops_on_its_stop_signal() {
    let p = Podman::new("nginx");
    p.load_image("nginx");
    assert_eq!(
        p.cmd(&[
            "image",
            "inspect",
            "-f",
            "{{.Config.StopSignal}}",
            "localhost/nginx"
        ])
        .assert_ok()
        .stdout
        .trim(),
        "SIGQUIT"
    );
    p.cmd(&[
        "run",
        "-d",
        "--name",
        "web",
        "--network",
        "none",
        "localhost/nginx",
    ])
    .assert_ok();
    let pid: i32 = p
        .inspect("web", "{{.State.Pid}}")
        .parse()
        .expect("a pid from inspect");
    assert!(pid > 0);
    assert_nginx_welcome(pid, &p.dir);

    // podman stop sends SIGQUIT (the image's StopSignal); nginx quits gracefully, exit 0, well
    // before podman's default 10 s would make it fall back to SIGKILL.
    let out = p.cmd(&["stop", "web"]);
    out.assert_ok();
    assert!(!out.stderr.contains("SIGKILL"), "{out}");
    let exited = retry(50, Duration::from_millis(100), || {
        (p.inspect("web", "{{.State.Status}}") == "exited").then_some(())
    });
    assert!(exited.is_some());
    assert_eq!(p.inspect("web", "{{.State.ExitCode}}"), "0");
    p.cmd(&["rm", "web"]).assert_ok();
    p.assert_no_leftovers();
}
