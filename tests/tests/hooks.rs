//! Hooks: each kind runs at its point with the state JSON on stdin, its args, env and timeout.
//!
//! A hook here is `/bin/sh -c 'cat > FILE'` (host paths; startContainer runs inside the
//! container, so it writes into a bind-mounted host directory).

use berth_tests::*;
use serde_json::Value;
use std::fs;
use std::path::Path;

fn read_json(p: &Path) -> Value {
    let text = fs::read_to_string(p).unwrap_or_else(|e| panic!("hook output {}: {e}", p.display()));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("hook stdin is not JSON ({e}): {text}"))
}

#[test]
fn every_hook_gets_the_state_on_stdin_in_order() {
    let t = Ctx::new("hooks-all");
    let out = t.path("hooks");
    fs::create_dir_all(&out).unwrap();
    let o = out.to_str().unwrap();
    let mut spec = t
        .spec()
        .args(&["sleep", "1000"])
        .mount("/hooks", "bind", o, &["rbind", "rw"]);
    for kind in [
        "prestart",
        "createRuntime",
        "createContainer",
        "poststart",
        "poststop",
    ] {
        let script = format!("cat > {o}/{kind}.json; echo {kind} >> {o}/order");
        spec = spec.hook(kind, "/bin/sh", &["sh", "-c", &script], &[], Some(10));
    }
    // startContainer runs in the container: its paths are the container's.
    spec = spec.hook(
        "startContainer",
        "/bin/sh",
        &[
            "sh",
            "-c",
            "cat > /hooks/startContainer.json; echo startContainer >> /hooks/order",
        ],
        &[],
        Some(10),
    );
    t.write_spec(&spec);

    t.create().assert_ok();
    for kind in ["prestart", "createRuntime", "createContainer"] {
        let st = read_json(&out.join(format!("{kind}.json")));
        assert_eq!(st["id"], t.id.as_str(), "{kind}: {st}");
        assert_eq!(st["status"], "creating", "{kind}: {st}");
        assert_eq!(st["bundle"], t.bundle.to_str().unwrap(), "{kind}: {st}");
        assert!(st["pid"].as_i64().unwrap_or(0) > 0, "{kind}: {st}");
    }
    assert!(
        !out.join("startContainer.json").exists(),
        "startContainer ran before start"
    );
    t.start().assert_ok();
    let st = read_json(&out.join("poststart.json"));
    assert_eq!(st["id"], t.id.as_str());
    // runc 1.1 passes "created" to poststart; the spec's state at that point is "running".
    assert!(
        st["status"] == "running" || st["status"] == "created",
        "{st}"
    );
    let st = read_json(&out.join("startContainer.json"));
    assert_eq!(st["id"], t.id.as_str());

    t.kill("KILL").assert_ok();
    t.wait_status("stopped", std::time::Duration::from_secs(5));
    t.delete().assert_ok();
    let st = read_json(&out.join("poststop.json"));
    assert_eq!(st["id"], t.id.as_str());
    assert_eq!(st["status"], "stopped", "{st}");

    let order = fs::read_to_string(out.join("order")).unwrap();
    let order: Vec<&str> = order.lines().collect();
    let want = [
        "prestart",
        "createRuntime",
        "createContainer",
        "startContainer",
        "poststart",
        "poststop",
    ];
    if is_reference_runtime() {
        // runc 1.1 races poststart against the init's startContainer.
        assert_eq!(order[..3], want[..3]);
        assert_eq!(order[5], "poststop");
    } else {
        assert_eq!(order, want);
    }
    t.assert_no_leftovers(&t.id);
}

#[test]
fn hook_gets_its_args_and_env() {
    let t = Ctx::new("hook-args");
    let f = t.path("hook.txt");
    let script = format!("echo \"$0|$1|$FOO|$BERTH_LEAK\" > {}", f.display());
    t.write_spec(&t.spec().hook(
        "createRuntime",
        "/bin/sh",
        &["sh", "-c", &script, "zero", "one"],
        &["FOO=bar"],
        None,
    ));
    let b = t.bundle.to_str().unwrap();
    t.rt.cmd_with(
        &["run", "--bundle", b, &t.id],
        CMD_TIMEOUT,
        &[("BERTH_LEAK", "runtime-env")],
    )
    .assert_ok();
    let got = fs::read_to_string(&f).unwrap();
    // args after the path are argv; env is the hook's own, not the runtime's.
    assert_eq!(got.trim(), "zero|one|bar|", "hook saw: {got}");
    t.assert_no_leftovers(&t.id);
}

#[test]
fn hook_pid_is_the_container_init() {
    let t = Ctx::new("hook-pid");
    let f = t.path("state.json");
    t.write_spec(&t.spec().args(&["sleep", "1000"]).hook(
        "createRuntime",
        "/bin/sh",
        &["sh", "-c", &format!("cat > {}", f.display())],
        &[],
        None,
    ));
    t.create().assert_ok();
    assert_eq!(read_json(&f)["pid"].as_i64().unwrap() as i32, t.pid());
    t.delete_force().assert_ok();
    t.assert_no_leftovers(&t.id);
}

#[test]
fn failing_poststart_hook_fails_run() {
    let t = Ctx::new("hook-poststart-fail");
    t.write_spec(&t.spec().args(&["sleep", "1000"]).hook(
        "poststart",
        "/bin/false",
        &["false"],
        &[],
        None,
    ));
    t.run()
        .assert_failed()
        .assert_stderr_mentions(&["hook", "poststart"]);
    t.delete_force();
    t.assert_no_leftovers(&t.id);
}

#[test]
fn failing_poststop_hook_does_not_block_delete() {
    // Spec: a poststop failure is logged as a warning; delete goes on.
    let t = Ctx::new("hook-poststop-fail");
    t.write_spec(
        &t.spec()
            .hook("poststop", "/bin/false", &["false"], &[], None),
    );
    t.create().assert_ok();
    t.delete().assert_ok();
    t.assert_no_leftovers(&t.id);
}

/// runc runs createContainer hooks in the rootfs (hooks written for it use paths such as
/// `./lib`), wherever the runtime itself was started.
#[test]
fn create_container_hook_runs_in_the_rootfs() {
    let t = Ctx::new("hook-cc-cwd");
    let f = t.path("cwd.txt");
    t.write_spec(&t.spec().hook(
        "createContainer",
        "/bin/sh",
        &["sh", "-c", &format!("pwd -P > {}", f.display())],
        &[],
        None,
    ));
    t.run().assert_ok();
    let rootfs = busybox_rootfs().canonicalize().unwrap();
    assert_eq!(
        fs::read_to_string(&f).unwrap().trim(),
        rootfs.to_str().unwrap()
    );
    t.assert_no_leftovers(&t.id);
}

/// The runtime's own hooks (prestart, createRuntime, poststart, poststop) run in the bundle
/// directory, as runc's do (runc enters the bundle before it creates a container), not wherever
/// the runtime was started: here the test's dir, the bundle's parent.
#[test]
fn runtime_hooks_run_in_the_bundle() {
    let t = Ctx::new("hook-rt-cwd");
    let kinds = ["prestart", "createRuntime", "poststart", "poststop"];
    let mut spec = t.spec().sh("true");
    for k in kinds {
        let f = t.path(&format!("{k}.cwd"));
        spec = spec.hook(
            k,
            "/bin/sh",
            &["sh", "-c", &format!("pwd -P > {}", f.display())],
            &[],
            None,
        );
    }
    t.write_spec(&spec);
    t.run().assert_ok();
    let bundle = t.bundle.canonicalize().unwrap();
    for k in kinds {
        let cwd = fs::read_to_string(t.path(&format!("{k}.cwd")))
            .unwrap_or_else(|e| panic!("{k} hook did not run: {e}"));
        assert_eq!(cwd.trim(), bundle.to_str().unwrap(), "{k} hook's cwd");
    }
    t.assert_no_leftovers(&t.id);
}
