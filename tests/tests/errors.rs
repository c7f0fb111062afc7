//! Bad input: each gives a non-zero exit, an error naming the problem, and leaves nothing behind.
//!
//! Error assertions check for the key noun (the id, "rootfs", "config", "signal", "hook"), not
//! runc's wording; berth must also keep the error to one line (`assert_one_line_error`).

use berth_tests::*;
use serde_json::json;
use std::time::{Duration, Instant};

#[test]
fn missing_rootfs() {
    let t = Ctx::new("no-rootfs");
    let missing = t.path("no-such-rootfs");
    t.write_spec(&t.spec().set("/root/path", json!(missing.to_str().unwrap())));
    t.run()
        .assert_failed()
        .assert_stderr_mentions(&["rootfs"])
        .assert_one_line_error();
    t.assert_no_leftovers(&t.id);
}

#[test]
fn malformed_config_json() {
    let t = Ctx::new("bad-json");
    std::fs::write(
        t.bundle.join("config.json"),
        "{\"ociVersion\": \"1.0.2\", bad",
    )
    .unwrap();
    t.run()
        .assert_failed()
        // runc says only "invalid character 'b' looking for ..."; berth names the file.
        .assert_stderr_mentions(&["config", "invalid character"])
        .assert_one_line_error();
    t.assert_no_leftovers(&t.id);
}

#[test]
fn missing_config_json() {
    let t = Ctx::new("no-config");
    t.run()
        .assert_failed()
        .assert_stderr_mentions(&["config.json"])
        .assert_one_line_error();
    t.assert_no_leftovers(&t.id);
}

#[test]
fn wrong_type_in_config_json() {
    let t = Ctx::new("bad-type");
    t.write_spec(&t.spec().set("/process/args", json!("not-an-array")));
    t.run()
        .assert_failed()
        .assert_stderr_mentions(&["args", "config", "unmarshal"])
        .assert_one_line_error();
    t.assert_no_leftovers(&t.id);
}

/// The runtime spec says unknown properties MUST be ignored: the container runs (as with runc,
/// which ignores them silently); berth warns and names each field.
#[test]
fn unknown_config_fields_are_ignored() {
    let t = Ctx::new("unknown-field");
    t.write_spec(
        &t.spec()
            .args(&["echo", "ran"])
            .set("/process/berthBogusField", json!(1))
            .set("/berthFuture", json!({"a": [1]})),
    );
    let out = t.run();
    out.assert_ok();
    assert_eq!(out.stdout.trim(), "ran", "{out}");
    if !is_reference_runtime() {
        out.assert_stderr_mentions(&["process.berthBogusField"]);
        out.assert_stderr_mentions(&["berthFuture"]);
    }
    t.assert_no_leftovers(&t.id);
}

#[test]
fn unknown_id_for_every_verb() {
    let t = Ctx::new("unknown-id");
    for verb in [
        &["state"][..],
        &["start"],
        &["kill"],
        &["delete"],
        &["pause"],
        &["resume"],
        &["ps"],
        &["exec"],
    ] {
        let mut args: Vec<&str> = verb.to_vec();
        args.push(&t.id);
        if verb[0] == "exec" {
            args.push("true");
        }
        let out = t.cmd(&args);
        out.assert_failed()
            // runc: "container does not exist"; berth also names the id.
            .assert_stderr_mentions(&[&t.id, "does not exist", "not found"])
            .assert_one_line_error();
    }
    t.assert_no_leftovers(&t.id);
}

#[test]
fn delete_force_of_unknown_id_succeeds() {
    // runc (and so containerd) treat `delete --force` of a missing container as done.
    let t = Ctx::new("unknown-force");
    t.delete_force().assert_ok();
}

#[test]
fn duplicate_id() {
    let t = Ctx::new("dup");
    t.write_spec(&t.spec().args(&["sleep", "1000"]));
    t.create().assert_ok();
    t.create()
        .assert_failed()
        .assert_stderr_mentions(&["exist", &t.id])
        .assert_one_line_error();
    // The first container is untouched.
    assert_eq!(t.status(), "created");
    t.delete_force().assert_ok();
    t.assert_no_leftovers(&t.id);
}

#[test]
fn invalid_container_id() {
    let t = Ctx::new("bad-id");
    t.write_spec(&t.spec());
    for id in ["../escape", "a/b", ""] {
        t.cmd(&["run", "--bundle", t.bundle.to_str().unwrap(), id])
            .assert_failed();
    }
    assert!(!t.dir.join("escape").exists());
    assert!(
        std::fs::read_dir(&t.rt.root)
            .map(|d| d.count())
            .unwrap_or(0)
            == 0
    );
}

#[test]
fn invalid_signal() {
    let t = Ctx::new("bad-signal");
    t.write_spec(&t.spec().args(&["sleep", "1000"]));
    t.run_detached().assert_ok();
    for sig in ["SIGFOO", "999", "-1"] {
        t.kill(sig)
            .assert_failed()
            .assert_stderr_mentions(&["signal", sig])
            .assert_one_line_error();
    }
    assert_eq!(t.status(), "running");
    t.delete_force().assert_ok();
    t.assert_no_leftovers(&t.id);
}

#[test]
fn executable_not_found() {
    let t = Ctx::new("no-exe");
    t.write_spec(&t.spec().args(&["/no/such/binary"]));
    t.run()
        .assert_failed()
        .assert_stderr_mentions(&["/no/such/binary"])
        .assert_one_line_error();
    t.assert_no_leftovers(&t.id);
}

#[test]
fn executable_not_found_on_create() {
    // The error comes from the init; `create` must report it, not `start`.
    let t = Ctx::new("no-exe-create");
    t.write_spec(&t.spec().args(&["no-such-command-in-path"]));
    t.create()
        .assert_failed()
        .assert_stderr_mentions(&["no-such-command-in-path"]);
    t.assert_no_leftovers(&t.id);
}

/// A profile this host cannot apply: it is not loaded (on an AppArmor host) or there is no
/// AppArmor at all (as on CI's hosts). The container must not run at all, rather than unconfined.
#[test]
fn apparmor_profile_that_cannot_be_applied() {
    let t = Ctx::new("apparmor");
    t.write_spec(
        &t.spec()
            .set("/process/apparmorProfile", json!("berth-test-not-loaded")),
    );
    let out = t.run();
    out.assert_failed()
        .assert_stderr_mentions(&["apparmor"])
        .assert_one_line_error();
    if !is_reference_runtime() {
        // runc names only the file it failed to write.
        out.assert_stderr_mentions(&["berth-test-not-loaded"]);
    }
    t.assert_no_leftovers(&t.id);
}

#[test]
fn relative_cwd_is_rejected() {
    let t = Ctx::new("rel-cwd");
    t.write_spec(&t.spec().cwd("tmp"));
    t.run().assert_failed().assert_stderr_mentions(&["cwd"]);
    t.assert_no_leftovers(&t.id);
}

#[test]
fn failing_prestart_hook() {
    let t = Ctx::new("hook-fail");
    t.write_spec(
        &t.spec()
            .hook("prestart", "/bin/false", &["false"], &[], None),
    );
    t.run()
        .assert_failed()
        .assert_stderr_mentions(&["hook", "prestart"])
        .assert_one_line_error();
    t.assert_no_leftovers(&t.id);
}

#[test]
fn failing_create_runtime_hook() {
    let t = Ctx::new("hook-fail-cr");
    t.write_spec(&t.spec().hook(
        "createRuntime",
        "/bin/sh",
        &["sh", "-c", "exit 3"],
        &[],
        None,
    ));
    t.create()
        .assert_failed()
        .assert_stderr_mentions(&["hook", "createRuntime"]);
    t.assert_no_leftovers(&t.id);
}

#[test]
fn missing_hook_binary() {
    let t = Ctx::new("hook-missing");
    t.write_spec(
        &t.spec()
            .hook("createRuntime", "/no/such/hook", &["hook"], &[], None),
    );
    t.run()
        .assert_failed()
        .assert_stderr_mentions(&["hook", "/no/such/hook"]);
    t.assert_no_leftovers(&t.id);
}

#[test]
fn hanging_hook_times_out() {
    let t = Ctx::new("hook-hang");
    t.write_spec(&t.spec().hook(
        "createRuntime",
        "/bin/sleep",
        &["sleep", "101"],
        &[],
        Some(1),
    ));
    let start = Instant::now();
    let out = t.run();
    let took = start.elapsed();
    out.assert_failed()
        .assert_stderr_mentions(&["hook", "timeout", "timed out"]);
    assert!(
        took < Duration::from_secs(20),
        "hook timeout not enforced: {took:?}"
    );
    t.assert_no_leftovers(&t.id);
    // The hook process itself is gone too.
    std::thread::sleep(Duration::from_millis(200));
    let left: Vec<_> = processes_mentioning(&["sleep 101"])
        .into_iter()
        .filter(|(pid, _)| process_alive(*pid))
        .collect();
    assert!(left.is_empty(), "hook still running: {left:?}");
}

#[test]
fn bad_cgroup_resource_value() {
    let t = Ctx::new("bad-cg");
    // Below the kernel's minimum memory limit.
    t.write_spec(&t.spec().resources("memory", json!({"limit": 4096})));
    t.run().assert_failed();
    t.assert_no_leftovers(&t.id);
}

/// A failure of the container's init, whatever step it is at, reaches the user as the init's
/// own one-line error (never as the parent's view of a closed channel, such as ECONNRESET), and
/// nothing is left behind.
#[track_caller]
fn init_failure_is_reported(name: &str, spec: impl FnOnce(&Ctx) -> Spec, nouns: &[&str]) {
    let t = Ctx::new(name);
    t.write_spec(&spec(&t));
    for out in [t.create(), t.run()] {
        out.assert_failed()
            .assert_stderr_mentions(nouns)
            .assert_one_line_error();
        assert!(
            !out.stderr.contains("ECONNRESET")
                && !out.stderr.contains("reset by peer")
                && !out.stderr.contains("other side"),
            "the parent's view instead of the init's error: {out}"
        );
        t.assert_no_leftovers(&t.id);
    }
}

#[test]
fn init_failure_mount_of_an_unknown_filesystem() {
    init_failure_is_reported(
        "if-mount",
        |t| t.spec().mount("/x", "berthbogusfs", "none", &[]),
        &["no such device"],
    );
}

#[test]
fn init_failure_missing_bind_source() {
    init_failure_is_reported(
        "if-bind",
        |t| {
            let src = t.path("no-such-source");
            t.spec()
                .mount("/x", "bind", src.to_str().unwrap(), &["rbind"])
        },
        &["no-such-source"],
    );
}

#[test]
fn init_failure_cwd_that_is_a_file() {
    // runc: "mkdir /bin/busybox: not a directory"
    init_failure_is_reported(
        "if-cwd",
        |t| t.spec().cwd("/bin/busybox"),
        &["cwd", "/bin/busybox"],
    );
}

#[test]
fn init_failure_user_not_mapped_in_the_user_namespace() {
    init_failure_is_reported(
        "if-user",
        |t| {
            let map = json!([{"containerID": 0, "hostID": 100000, "size": 10}]);
            let mounts: Vec<_> = t.spec().0["mounts"]
                .as_array()
                .unwrap()
                .iter()
                .filter(|m| m["type"] != "cgroup")
                .cloned()
                .collect();
            t.spec()
                .namespace("user", None)
                .set("/linux/uidMappings", map.clone())
                .set("/linux/gidMappings", map)
                .set("/mounts", json!(mounts))
                .user(500, 0)
        },
        // runc: "unable to setup user: invalid argument"
        &["uid", "user"],
    );
}

#[test]
fn init_failure_rlimit_soft_above_hard() {
    init_failure_is_reported(
        "if-rlimit",
        |t| {
            t.spec().set(
                "/process/rlimits",
                json!([{"type": "RLIMIT_NOFILE", "soft": 2048, "hard": 1024}]),
            )
        },
        &["rlimit"],
    );
}

/// The program is found and executable, but execve fails (its interpreter is missing): that
/// comes after `start` released the init, and `start`/`run` report it.
#[test]
fn exec_failure_of_the_program_is_reported() {
    let t = Ctx::new("exec-fail");
    let rootfs = t.writable_rootfs();
    let script = rootfs.join("bad-interp");
    std::fs::write(&script, "#!/no/such/interpreter\necho hi\n").unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();
    t.write_spec(&t.spec_writable().args(&["/bad-interp"]));
    t.run()
        .assert_failed()
        .assert_stderr_mentions(&["/bad-interp"])
        .assert_stderr_mentions(&["no such file"])
        .assert_one_line_error();
    t.assert_no_leftovers(&t.id);
}
