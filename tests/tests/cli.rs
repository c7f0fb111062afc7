//! The command line beyond the lifecycle verbs: spec, features, list, version, help, logs.

use berth_tests::*;
use std::time::Duration;

fn raw(t: &Ctx, args: &[&str]) -> Output {
    let a: Vec<String> = args.iter().map(|s| s.to_string()).collect();
    t.rt.raw(&a, CMD_TIMEOUT, &[])
}

#[test]
fn spec_writes_a_default_config() {
    let t = Ctx::new("spec");
    let dir = t.path("specdir");
    std::fs::create_dir_all(&dir).unwrap();
    t.cmd(&["spec", "--bundle", dir.to_str().unwrap()])
        .assert_ok();
    let v: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("config.json")).unwrap()).unwrap();
    assert!(v["ociVersion"].as_str().unwrap().starts_with("1."));
    assert_eq!(v["process"]["args"], serde_json::json!(["sh"]));
    assert_eq!(v["root"]["path"], "rootfs");
    assert!(v["linux"]["namespaces"]
        .as_array()
        .unwrap()
        .iter()
        .any(|n| n["type"] == "mount"));
    // A second spec refuses to overwrite.
    t.cmd(&["spec", "--bundle", dir.to_str().unwrap()])
        .assert_failed();
}

/// `spec` writes what runc 1.1.5's `spec` writes, hostname aside, byte for byte: the bats tests
/// edit it with jq and expect runc's namespaces (a cgroup namespace only on cgroup2 hosts).
#[test]
fn spec_is_runcs_spec() {
    let runc = std::path::Path::new("/usr/sbin/runc");
    if !runc.exists() {
        eprintln!("skipped: no /usr/sbin/runc to compare with");
        return;
    }
    let t = Ctx::new("spec-runc");
    let reference = Runtime {
        bin: runc.to_path_buf(),
        root: t.rt.root.clone(),
        dir: t.rt.dir.clone(),
    };
    for extra in [&[][..], &["--rootless"]] {
        let mine = t.path(&format!("mine{}", extra.len()));
        let theirs = t.path(&format!("runc{}", extra.len()));
        let read = |rt: &Runtime, dir: &std::path::Path| {
            std::fs::create_dir_all(dir).unwrap();
            let mut args = vec!["spec"];
            args.extend_from_slice(extra);
            args.extend(["--bundle", dir.to_str().unwrap()]);
            rt.cmd(&args).assert_ok();
            let text = std::fs::read_to_string(dir.join("config.json")).unwrap();
            let hostname = text.lines().find(|l| l.contains("\"hostname\"")).unwrap();
            text.replace(hostname, "")
        };
        let (a, b) = (read(&t.rt, &mine), read(&reference, &theirs));
        assert_eq!(a, b, "spec {extra:?} differs from runc's");
    }
}

#[test]
fn spec_rootless_has_a_user_namespace() {
    let t = Ctx::new("spec-rootless");
    let dir = t.path("specdir");
    std::fs::create_dir_all(&dir).unwrap();
    t.cmd(&["spec", "--rootless", "--bundle", dir.to_str().unwrap()])
        .assert_ok();
    let v: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("config.json")).unwrap()).unwrap();
    assert!(v["linux"]["namespaces"]
        .as_array()
        .unwrap()
        .iter()
        .any(|n| n["type"] == "user"));
    assert!(v["linux"]["uidMappings"]
        .as_array()
        .is_some_and(|a| !a.is_empty()));
}

#[test]
fn spec_output_runs_on_the_fixture() {
    let t = Ctx::new("spec-run");
    t.cmd(&["spec", "--bundle", t.bundle.to_str().unwrap()])
        .assert_ok();
    let mut v: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(t.bundle.join("config.json")).unwrap())
            .unwrap();
    v["root"]["path"] = busybox_rootfs().to_str().unwrap().into();
    v["process"]["terminal"] = false.into();
    v["process"]["args"] = serde_json::json!(["true"]);
    v["linux"]["cgroupsPath"] = Ctx::cgroups_path(&t.id).into();
    t.write_spec(&Spec(v));
    t.run().assert_ok();
    t.assert_no_leftovers(&t.id);
}

#[test]
fn features_document() {
    let t = Ctx::new("features");
    let out = t.cmd(&["features"]);
    out.assert_ok();
    let f = out.json();
    assert!(f["ociVersionMin"].as_str().is_some(), "{f}");
    assert!(f["ociVersionMax"].as_str().is_some(), "{f}");
    let hooks: Vec<&str> = f["hooks"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|h| h.as_str())
        .collect();
    for h in [
        "prestart",
        "createRuntime",
        "createContainer",
        "startContainer",
        "poststart",
        "poststop",
    ] {
        assert!(hooks.contains(&h), "hook {h}: {f}");
    }
    let ns: Vec<&str> = f["linux"]["namespaces"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|h| h.as_str())
        .collect();
    for n in ["pid", "network", "ipc", "uts", "mount", "user", "cgroup"] {
        assert!(ns.contains(&n), "namespace {n}: {f}");
    }
    assert!(
        f["mountOptions"]
            .as_array()
            .is_some_and(|a| a.iter().any(|o| o == "rbind")),
        "{f}"
    );
    assert!(
        f["linux"]["capabilities"]
            .as_array()
            .is_some_and(|a| a.iter().any(|o| o == "CAP_SYS_ADMIN")),
        "{f}"
    );
    assert_eq!(f["linux"]["seccomp"]["enabled"], true, "{f}");
}

#[test]
fn list_table_json_quiet() {
    let t = Ctx::new("list");
    t.write_spec(&t.spec().args(&["sleep", "1000"]));
    t.create().assert_ok();
    let out = t.cmd(&["list"]);
    out.assert_ok();
    let header = out.stdout.lines().next().unwrap_or("");
    for col in ["ID", "PID", "STATUS", "BUNDLE", "CREATED", "OWNER"] {
        assert!(header.contains(col), "{out}");
    }
    let row = out
        .stdout
        .lines()
        .find(|l| l.starts_with(&t.id))
        .unwrap_or_else(|| panic!("{out}"));
    assert!(
        row.contains("created") && row.contains(t.bundle.to_str().unwrap()),
        "{out}"
    );

    let out = t.cmd(&["list", "--format", "json"]);
    out.assert_ok();
    let v = out.json();
    let c = v
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["id"] == t.id.as_str())
        .unwrap();
    assert_eq!(c["status"], "created");
    assert_eq!(c["pid"].as_i64().unwrap() as i32, t.pid());

    let out = t.cmd(&["list", "--quiet"]);
    out.assert_ok();
    assert_eq!(out.stdout.trim(), t.id);
    t.delete_force().assert_ok();
    t.assert_no_leftovers(&t.id);
}

#[test]
fn list_of_empty_root() {
    let t = Ctx::new("list-empty");
    let out = t.cmd(&["list", "--format", "json"]);
    out.assert_ok();
    let v = out.json();
    assert!(
        v.is_null() || v.as_array().is_some_and(|a| a.is_empty()),
        "{out}"
    );
}

#[test]
fn version_and_help() {
    let t = Ctx::new("version");
    for flag in ["--version", "-v"] {
        let out = raw(&t, &[flag]);
        out.assert_ok();
        // runc's three lines, which version.bats checks: "<name> version X.Y.Z", "commit: …",
        // "spec: X.Y.Z".
        let lines: Vec<&str> = out.stdout.lines().collect();
        assert!(lines.len() >= 3, "{out}");
        assert!(lines[0].contains(" version "), "{out}");
        assert!(lines[1].starts_with("commit:"), "{out}");
        assert!(lines[2].starts_with("spec: 1."), "{out}");
    }
    raw(&t, &["--help"]).assert_ok();
    raw(&t, &["state", "--help"]).assert_ok();
}

/// runc's exit codes for usage errors: 1, and 3 with "No help topic" for an unknown command
/// (help.bats checks the text); berth keeps each to one line.
#[test]
fn usage_errors_exit_as_runc_does() {
    let t = Ctx::new("usage");
    for args in [
        &["state"][..],
        &["kill"],
        &["state", "a", "b"],
        &["--no-such-flag", "list"],
        &["list", "--no-such-flag"],
        &["kill", "a", "KILL", "extra"],
        &["--log-format", "xml", "list"],
    ] {
        let out = t.cmd(args);
        assert_eq!(out.code, 1, "{out}");
        out.assert_one_line_error();
    }
    for args in [&["no-such-command"][..], &["foo", "-h"], &["foo", "x"]] {
        let out = t.cmd(args);
        assert_eq!(out.code, 3, "{out}");
        assert!(
            out.stderr.contains("No help topic for 'no-such-command'")
                || out.stderr.contains("No help topic for 'foo'"),
            "{out}"
        );
        out.assert_one_line_error();
    }
}

/// runc's `exec` exits 255 when it fails (any other code is the process's own, so a caller can
/// tell the two apart); exec.bats checks it.
#[test]
fn exec_failure_exits_255() {
    let t = Ctx::new("exec-255");
    let out = t.cmd(&["exec", &t.id, "true"]);
    assert_eq!(out.code, 255, "{out}");
    out.assert_one_line_error();
}

/// `--debug` writes logrus-style debug lines: to stderr, or to `--log` (only) when given, as
/// JSON with `--log-format json` (what debug.bats checks, with runc's own messages).
#[test]
fn debug_lines_go_to_stderr_or_the_log() {
    let t = Ctx::new("debug");
    t.write_spec(&t.spec().args(&["true"]));
    let bundle = t.bundle.to_str().unwrap().to_string();
    let out = t.cmd(&["--debug", "run", "--bundle", &bundle, &t.id]);
    out.assert_ok();
    assert!(out.stderr.contains("level=debug"), "{out}");

    let log = t.path("debug.log");
    let log_s = log.to_str().unwrap();
    let out = t.cmd(&["--log", log_s, "--debug", "run", "--bundle", &bundle, &t.id]);
    out.assert_ok();
    assert!(!out.stderr.contains("level=debug"), "{out}");
    let text = std::fs::read_to_string(&log).unwrap();
    assert!(text.contains("level=debug"), "{text}");

    let json = t.path("debug.json");
    let json_s = json.to_str().unwrap();
    t.cmd(&[
        "--log",
        json_s,
        "--log-format",
        "json",
        "--debug",
        "run",
        "--bundle",
        &bundle,
        &t.id,
    ])
    .assert_ok();
    let text = std::fs::read_to_string(&json).unwrap();
    let first = text.lines().next().unwrap_or_else(|| panic!("empty log"));
    let v: serde_json::Value = serde_json::from_str(first).unwrap();
    assert_eq!(v["level"], "debug", "{text}");
    t.assert_no_leftovers(&t.id);
}

/// runc opens (creates) `--log` at start, whatever the command does; without `--debug` a
/// command that succeeds writes nothing there.
#[test]
fn log_file_is_created_at_start() {
    let t = Ctx::new("log-created");
    let log = t.path("created.log");
    t.cmd(&["--log", log.to_str().unwrap(), "list"]).assert_ok();
    let text = std::fs::read_to_string(&log).unwrap_or_else(|e| panic!("{log:?}: {e}"));
    assert_eq!(text, "");
}

#[test]
fn log_file_json_gets_the_error() {
    // containerd and podman read errors from --log with --log-format json.
    let t = Ctx::new("log-json");
    let log = t.path("runtime.log");
    let out = t.cmd(&[
        "--log",
        log.to_str().unwrap(),
        "--log-format",
        "json",
        "state",
        &t.id,
    ]);
    out.assert_failed();
    let text = std::fs::read_to_string(&log).unwrap_or_default();
    let last = text
        .lines()
        .last()
        .unwrap_or_else(|| panic!("empty log; {out}"));
    let v: serde_json::Value =
        serde_json::from_str(last).unwrap_or_else(|e| panic!("log line not JSON ({e}): {last}"));
    assert_eq!(v["level"], "error", "{v}");
    assert!(v["msg"].as_str().is_some_and(|m| !m.is_empty()), "{v}");
}

#[test]
fn state_root_is_private_per_root_flag() {
    let t = Ctx::new("root-flag");
    t.write_spec(&t.spec().args(&["sleep", "1000"]));
    t.create().assert_ok();
    assert!(
        t.rt.root.join(&t.id).is_dir(),
        "state lives under --root/<id>"
    );
    t.delete_force().assert_ok();
    t.assert_no_leftovers(&t.id);
}

#[test]
fn events_stream_stops_when_container_is_deleted() {
    let t = Ctx::new("events-stream");
    t.write_spec(&t.spec().args(&["sleep", "1000"]));
    t.run_detached().assert_ok();
    let out = t.cmd(&["events", "--stats", &t.id]);
    out.assert_ok();
    t.delete_force().assert_ok();
    let out = t.rt.cmd_with(
        &["events", "--interval", "1s", &t.id],
        Duration::from_secs(10),
        &[],
    );
    out.assert_failed();
    t.assert_no_leftovers(&t.id);
}

/// `checkpoint --parent-path` is checked before anything else, as runc checks it before it
/// calls CRIU: an absolute path, or one that is no directory under `--image-path`, is an error
/// naming the flag (berth-runtime then says that checkpointing is not supported).
#[test]
fn checkpoint_parent_path_is_checked_first() {
    let t = Ctx::new("ckpt-parent");
    t.write_spec(&t.spec().args(&["sleep", "1000"]));
    t.run_detached().assert_ok();
    let images = t.path("image-dir");
    let images = images.to_str().unwrap();
    for parent in [t.path("parent-dir").to_str().unwrap(), "./parent-dir"] {
        t.cmd(&[
            "checkpoint",
            "--parent-path",
            parent,
            "--image-path",
            images,
            &t.id,
        ])
        .assert_failed()
        .assert_stderr_mentions(&["--parent-path"]);
    }
    t.delete_force().assert_ok();
    t.assert_no_leftovers(&t.id);
}
