//! exec into a running container: same namespaces, exit codes, flags, process.json, ps.

use berth_tests::*;
use serde_json::json;
use std::time::Duration;

fn running(name: &str) -> Ctx {
    let t = Ctx::new(name);
    t.write_spec(&t.spec().hostname("exec-box").args(&["sleep", "1000"]));
    t.run_detached().assert_ok();
    t
}

fn finish(t: Ctx) {
    t.delete_force().assert_ok();
    t.assert_no_leftovers(&t.id);
}

#[test]
fn exec_joins_the_containers_namespaces() {
    let t = running("exec-ns");
    let pid = t.pid();
    let out = t.exec(&["sh", "-c", "hostname; cat /proc/1/cmdline | tr '\\0' ' '; echo; for n in pid mnt net; do readlink /proc/self/ns/$n; done"]);
    out.assert_ok();
    let l: Vec<&str> = out.stdout.lines().collect();
    assert_eq!(l[0], "exec-box", "{out}");
    assert_eq!(l[1].trim(), "sleep 1000", "{out}");
    for (i, ns) in ["pid", "mnt", "net"].iter().enumerate() {
        let want = std::fs::read_link(format!("/proc/{pid}/ns/{ns}")).unwrap();
        assert_eq!(l.get(2 + i).copied(), want.to_str(), "{ns}: {out}");
    }
    finish(t);
}

#[test]
fn exec_exit_code() {
    let t = running("exec-exit");
    assert_eq!(t.exec(&["sh", "-c", "exit 3"]).code, 3);
    finish(t);
}

#[test]
fn exec_env_cwd_user() {
    let t = running("exec-flags");
    let out = t.cmd(&[
        "exec",
        "--env",
        "FOO=bar",
        "--cwd",
        "/tmp",
        "--user",
        "1000:1001",
        &t.id,
        "sh",
        "-c",
        "echo $FOO; pwd; id -u; id -g",
    ]);
    out.assert_ok();
    assert_eq!(
        out.stdout.lines().collect::<Vec<_>>(),
        ["bar", "/tmp", "1000", "1001"],
        "{out}"
    );
    finish(t);
}

#[test]
fn exec_process_json() {
    let t = running("exec-process");
    let p = t.path("process.json");
    let mut process = t.spec().0["process"].clone();
    process["args"] = json!(["sh", "-c", "echo $BAR; pwd"]);
    process["env"] = json!(["PATH=/bin:/usr/bin", "BAR=from-json"]);
    process["cwd"] = json!("/etc");
    std::fs::write(&p, process.to_string()).unwrap();
    let out = t.cmd(&["exec", "--process", p.to_str().unwrap(), &t.id]);
    out.assert_ok();
    assert_eq!(
        out.stdout.lines().collect::<Vec<_>>(),
        ["from-json", "/etc"],
        "{out}"
    );
    finish(t);
}

#[test]
fn exec_cap_adds_a_capability() {
    let t = running("exec-cap");
    let out = t.cmd(&[
        "exec",
        "--cap",
        "CAP_SYS_ADMIN",
        &t.id,
        "grep",
        "CapEff",
        "/proc/self/status",
    ]);
    out.assert_ok();
    let eff = u64::from_str_radix(status_field(&out.stdout, "CapEff").unwrap(), 16).unwrap();
    assert!(eff & (1 << 21) != 0, "CAP_SYS_ADMIN missing: {out}");
    finish(t);
}

#[test]
fn exec_detach_with_pid_file() {
    let t = running("exec-detach");
    let pf = t.path("exec.pid");
    t.cmd(&[
        "exec",
        "--detach",
        "--pid-file",
        pf.to_str().unwrap(),
        &t.id,
        "sleep",
        "999",
    ])
    .assert_ok();
    let pid: i32 = std::fs::read_to_string(&pf)
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    assert!(process_alive(pid));
    let cmdline = std::fs::read_to_string(format!("/proc/{pid}/cmdline")).unwrap();
    assert!(cmdline.starts_with("sleep"), "{cmdline}");
    finish(t);
    assert!(
        wait_gone(pid, Duration::from_secs(2)),
        "exec'd process outlived delete --force"
    );
}

#[test]
fn exec_into_stopped_container_fails() {
    let t = Ctx::new("exec-stopped");
    t.write_spec(&t.spec());
    t.create().assert_ok();
    t.start().assert_ok();
    t.wait_status("stopped", Duration::from_secs(5));
    t.exec(&["true"])
        .assert_failed()
        .assert_stderr_mentions(&["stopped", "not running", &t.id]);
    t.delete().assert_ok();
    t.assert_no_leftovers(&t.id);
}

#[test]
fn exec_missing_binary_fails() {
    let t = running("exec-missing");
    t.exec(&["/no/such/exe"])
        .assert_failed()
        .assert_stderr_mentions(&["/no/such/exe"]);
    assert_eq!(t.status(), "running");
    finish(t);
}

/// `exec --apparmor` with a profile the host cannot apply (see errors.rs) fails and leaves the
/// container running.
#[test]
fn exec_with_an_apparmor_profile_that_cannot_be_applied_fails() {
    let t = running("exec-apparmor");
    t.exec(&["--apparmor", "berth-test-not-loaded", "true"])
        .assert_failed()
        .assert_stderr_mentions(&["apparmor"]);
    assert_eq!(t.status(), "running");
    finish(t);
}

#[test]
fn ps_lists_container_processes() {
    let t = running("ps");
    let pid = t.pid();
    let out = t.cmd(&["ps", "--format", "json", &t.id]);
    out.assert_ok();
    let pids: Vec<i64> = out
        .json()
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|v| v.as_i64())
        .collect();
    assert!(pids.contains(&(pid as i64)), "{out}");
    let out = t.cmd(&["ps", &t.id]);
    out.assert_ok();
    assert!(out.stdout.contains("PID"), "table header: {out}");
    assert!(out.stdout.contains(&pid.to_string()), "{out}");
    finish(t);
}

/// As runc: exec into a paused container is refused unless `--ignore-paused`; with it the
/// process starts frozen, and runs when the container is resumed.
#[test]
fn exec_into_a_paused_container_needs_ignore_paused() {
    let t = running("exec-paused");
    t.cmd(&["pause", &t.id]).assert_ok();
    t.exec(&["true"])
        .assert_failed()
        .assert_one_line_error()
        .assert_stderr_mentions(&["paused", "--ignore-paused"]);
    let procs = || {
        t.cmd(&["ps", "--format", "json", &t.id])
            .json()
            .as_array()
            .map_or(0, |a| a.len())
    };
    assert_eq!(procs(), 1, "the refused exec left a process behind");
    std::thread::scope(|s| {
        let exec = s.spawn(|| t.cmd(&["exec", "--ignore-paused", &t.id, "echo", "ran"]));
        // The exec'd process joins the frozen cgroup (and stops there) before it runs `echo`.
        let start = std::time::Instant::now();
        while procs() < 2 {
            assert!(
                start.elapsed() < CMD_TIMEOUT,
                "exec never joined the cgroup: {}",
                t.cmd(&["ps", "--format", "json", &t.id])
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        t.cmd(&["resume", &t.id]).assert_ok();
        let out = exec.join().unwrap();
        out.assert_ok();
        assert_eq!(out.stdout.trim(), "ran", "{out}");
    });
    finish(t);
}

/// runc's `exec --cgroup`: the process goes into an existing sub-cgroup of the container's,
/// per v1 controller (`memory:sub`) or, with a path only, in every hierarchy (cgroup v2);
/// a path outside the container's cgroup, a missing one and an unknown controller are refused.
#[test]
fn exec_cgroup_puts_the_process_in_a_sub_cgroup() {
    let t = running("exec-subcg");
    let cg = Ctx::cgroups_path(&t.id);
    let refused = |args: &[&str], what: &[&str]| {
        let mut a = vec!["exec"];
        a.extend_from_slice(args);
        a.extend_from_slice(&[t.id.as_str(), "true"]);
        t.cmd(&a)
            .assert_failed()
            .assert_one_line_error()
            .assert_stderr_mentions(what);
    };
    refused(&["--cgroup", ".."], &[" .. is not a sub cgroup path"]);
    refused(
        &["--cgroup", "nonexistent"],
        &["adding pid", "/nonexistent/cgroup.procs: no such file"],
    );
    refused(&["--cgroup", "whaaat:/"], &["unknown controller whaaat"]);
    let lines = |out: &Output| -> Vec<String> {
        out.assert_ok();
        out.stdout.lines().map(str::to_string).collect()
    };
    if cgroup_v2_only() {
        std::fs::create_dir(cgroup_file("", &cg, "sub")).unwrap();
        let out = t.cmd(&["exec", "--cgroup", "sub", &t.id, "cat", "/proc/self/cgroup"]);
        // The unified line (a host whose v1 hierarchies are only hidden, as the test's emulated
        // v2 host, lists them too).
        let l = lines(&out);
        let unified: Vec<&String> = l.iter().filter(|x| x.starts_with("0::")).collect();
        assert_eq!(unified, [&format!("0::{cg}/sub")], "{out}");
    } else {
        std::fs::create_dir(cgroup_file("memory", &cg, "submem")).unwrap();
        std::fs::create_dir(cgroup_file("pids", &cg, "subpids")).unwrap();
        let out = t.cmd(&[
            "exec",
            "--cgroup",
            "memory:submem",
            "--cgroup",
            "pids:subpids",
            &t.id,
            "cat",
            "/proc/self/cgroup",
        ]);
        let l = lines(&out);
        let of = |c: &str| {
            l.iter()
                .find(|x| x.split(':').nth(1) == Some(c))
                .unwrap_or_else(|| panic!("no {c} line: {out}"))
                .rsplit(':')
                .next()
                .unwrap()
                .to_string()
        };
        assert_eq!(of("memory"), format!("{cg}/submem"), "{out}");
        assert_eq!(of("pids"), format!("{cg}/subpids"), "{out}");
        assert_eq!(of("freezer"), cg, "{out}");
        // `/` is the container's own cgroup.
        let out = t.cmd(&["exec", "--cgroup", "/", &t.id, "cat", "/proc/self/cgroup"]);
        // Every v1 hierarchy's line (the unified one, `0::`, is not berth's on a v1 host).
        assert!(
            lines(&out)
                .iter()
                .filter(|x| !x.starts_with("0::"))
                .all(|x| x.ends_with(&cg)),
            "{out}"
        );
    }
    finish(t);
}

/// A process.json without `user` (runc's own tests pass one) runs as uid 0, gid 0, as in runc,
/// where the missing object is Go's zero value.
#[test]
fn exec_process_json_without_user_runs_as_root() {
    let t = running("exec-nouser");
    let p = t.path("process.json");
    std::fs::write(
        &p,
        json!({"args": ["id"], "cwd": "/", "env": ["PATH=/bin:/usr/bin"]}).to_string(),
    )
    .unwrap();
    let out = t.cmd(&["exec", "--process", p.to_str().unwrap(), &t.id]);
    out.assert_ok();
    assert!(out.stdout.starts_with("uid=0(root) gid=0(root)"), "{out}");
    finish(t);
}
