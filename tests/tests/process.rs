//! The container process: args, env, cwd, user, umask, capabilities, rlimits, no_new_privs,
//! oom_score_adj, sysctl, fds and cwd that must not leak from the host.

use berth_tests::*;
use serde_json::json;

fn run_sh(t: &Ctx, spec: Spec, script: &str) -> String {
    t.write_spec(&spec.sh(script));
    let out = t.run();
    out.assert_ok();
    t.assert_no_leftovers(&t.id);
    out.stdout
}

#[test]
fn args_are_passed_verbatim() {
    let t = Ctx::new("args");
    t.write_spec(&t.spec().args(&["/bin/echo", "a b", "", "$HOME", "c"]));
    let out = t.run();
    out.assert_ok();
    assert_eq!(out.stdout, "a b  $HOME c\n");
}

#[test]
fn env_is_exactly_the_specs() {
    let t = Ctx::new("env");
    let spec = t.spec().env("FOO=bar baz").env("EMPTY=");
    t.write_spec(&spec.args(&["env"]));
    let out = t.rt.cmd_with(
        &["run", "--bundle", t.bundle.to_str().unwrap(), &t.id],
        CMD_TIMEOUT,
        &[("BERTH_LEAK", "1")],
    );
    out.assert_ok();
    let mut env: Vec<&str> = out.stdout.lines().collect();
    env.sort();
    assert!(env.contains(&"FOO=bar baz"), "{out}");
    assert!(env.contains(&"EMPTY="), "{out}");
    assert!(env.contains(&"PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"));
    assert!(
        !out.stdout.contains("BERTH_LEAK"),
        "runtime env leaked: {out}"
    );
    t.assert_no_leftovers(&t.id);
}

#[test]
fn cwd() {
    let t = Ctx::new("cwd");
    assert_eq!(run_sh(&t, t.spec().cwd("/tmp"), "pwd").trim(), "/tmp");
}

/// The cwd is entered before the process drops to its user (as in runc): the busybox `/root`
/// is root's, mode 0700, and a process of uid 42 without capabilities still starts in it.
#[test]
fn cwd_only_root_may_enter_works_for_another_user() {
    let t = Ctx::new("cwd-root-only");
    let spec = t.spec().cwd("/root").user(42, 42);
    assert_eq!(
        run_sh(&t, spec, "pwd; ls . 2>&1 >/dev/null | grep -c denied").trim(),
        "/root\n1"
    );
}

#[test]
fn cwd_is_created_if_missing() {
    let t = Ctx::new("cwd-create");
    let spec = t.spec_writable().cwd("/does/not/exist");
    assert_eq!(run_sh(&t, spec, "pwd").trim(), "/does/not/exist");
}

#[test]
fn user_uid_gid_and_additional_gids() {
    let t = Ctx::new("user");
    let spec = t.spec().set(
        "/process/user",
        json!({"uid": 1000, "gid": 1001, "additionalGids": [10, 20]}),
    );
    let out = run_sh(&t, spec, "cat /proc/self/status");
    assert_eq!(
        status_field(&out, "Uid")
            .unwrap()
            .split_whitespace()
            .collect::<Vec<_>>(),
        ["1000"; 4]
    );
    assert_eq!(
        status_field(&out, "Gid")
            .unwrap()
            .split_whitespace()
            .collect::<Vec<_>>(),
        ["1001"; 4]
    );
    let mut groups: Vec<&str> = status_field(&out, "Groups")
        .unwrap()
        .split_whitespace()
        .collect();
    groups.sort();
    assert_eq!(groups, ["10", "20"]);
}

#[test]
fn non_root_user_cannot_write_root_owned_files() {
    let t = Ctx::new("user-perm");
    t.write_spec(
        &t.spec_writable()
            .user(1000, 1000)
            .sh("echo x > /etc/passwd"),
    );
    let out = t.run();
    out.assert_failed();
    assert!(out.stderr.contains("Permission denied"), "{out}");
    t.assert_no_leftovers(&t.id);
}

#[test]
fn umask() {
    let t = Ctx::new("umask");
    let spec = t
        .spec()
        .set("/process/user", json!({"uid": 0, "gid": 0, "umask": 0o077}));
    assert_eq!(run_sh(&t, spec, "umask").trim(), "0077");
}

#[test]
fn capability_sets_match_the_spec() {
    let t = Ctx::new("caps");
    // CAP_KILL = 5, CAP_NET_BIND_SERVICE = 10 -> 0x420.
    let spec = t.spec().caps(&["CAP_KILL", "CAP_NET_BIND_SERVICE"]);
    let out = run_sh(&t, spec, "grep ^Cap /proc/self/status");
    for (set, want) in [
        ("CapInh", "0000000000000420"),
        ("CapPrm", "0000000000000420"),
        ("CapEff", "0000000000000420"),
        ("CapBnd", "0000000000000420"),
        ("CapAmb", "0000000000000420"),
    ] {
        assert_eq!(status_field(&out, set), Some(want), "{set}: {out}");
    }
}

#[test]
fn separate_capability_sets() {
    let t = Ctx::new("caps-sets");
    let spec = t.spec().set(
        "/process/capabilities",
        json!({
            "bounding": ["CAP_KILL", "CAP_CHOWN", "CAP_SYS_ADMIN"],
            "permitted": ["CAP_KILL", "CAP_CHOWN"],
            "effective": ["CAP_KILL"],
            "inheritable": ["CAP_KILL"],
            "ambient": []
        }),
    );
    let out = run_sh(&t, spec, "grep ^Cap /proc/self/status");
    // CHOWN=0 (0x1), KILL=5 (0x20), SYS_ADMIN=21 (0x200000). The process runs as uid 0, so
    // the kernel's exec rules make effective = permitted whatever the spec's effective set.
    for (set, want) in [
        ("CapInh", "0000000000000020"),
        ("CapPrm", "0000000000000021"),
        ("CapEff", "0000000000000021"),
        ("CapBnd", "0000000000200021"),
        ("CapAmb", "0000000000000000"),
    ] {
        assert_eq!(status_field(&out, set), Some(want), "{set}: {out}");
    }
}

#[test]
fn dropped_capability_is_enforced() {
    let t = Ctx::new("caps-enforced");
    // No CAP_SYS_ADMIN: sethostname fails even in our own uts namespace.
    t.write_spec(&t.spec().caps(&["CAP_KILL"]).sh("hostname other"));
    let out = t.run();
    out.assert_failed();
    assert!(out.stderr.contains("not permitted"), "{out}");
    t.assert_no_leftovers(&t.id);
}

#[test]
fn no_new_privileges() {
    let t = Ctx::new("nnp");
    let out = run_sh(&t, t.spec(), "grep NoNewPrivs /proc/self/status");
    assert_eq!(status_field(&out, "NoNewPrivs"), Some("1"));
    let t = Ctx::new("nnp-off");
    let out = run_sh(
        &t,
        t.spec().set("/process/noNewPrivileges", json!(false)),
        "grep NoNewPrivs /proc/self/status",
    );
    assert_eq!(status_field(&out, "NoNewPrivs"), Some("0"));
}

#[test]
fn rlimits() {
    let t = Ctx::new("rlimits");
    let spec = t.spec().set(
        "/process/rlimits",
        json!([{"type": "RLIMIT_NOFILE", "soft": 100, "hard": 200}, {"type": "RLIMIT_NPROC", "soft": 500, "hard": 600}]),
    );
    let out = run_sh(
        &t,
        spec,
        "ulimit -n; ulimit -Hn; grep -E 'open files|processes' /proc/self/limits",
    );
    let l: Vec<&str> = out.lines().collect();
    assert_eq!(l[0], "100", "{out}");
    assert_eq!(l[1], "200", "{out}");
    assert!(
        out.contains("Max processes             500                  600"),
        "{out}"
    );
}

/// Berth only: this host's root lacks CAP_SYS_RESOURCE; runc fails, berth warns and carries on
/// with the host's hard limit.
#[test]
fn rlimit_above_host_hard_limit_warns() {
    berth_only!();
    let t = Ctx::new("rlimit-over");
    let mut hard = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes into the valid struct we pass.
    unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut hard) };
    let want = hard.rlim_max + 1000;
    let spec = t.spec().set(
        "/process/rlimits",
        json!([{"type": "RLIMIT_NOFILE", "soft": want, "hard": want}]),
    );
    t.write_spec(&spec.sh("ulimit -Hn"));
    let out = t.run();
    out.assert_ok();
    assert!(
        out.stderr.to_lowercase().contains("rlimit"),
        "no warning: {out}"
    );
    let got: u64 = out.stdout.trim().parse().unwrap();
    assert!(got <= hard.rlim_max);
    t.assert_no_leftovers(&t.id);
}

#[test]
fn oom_score_adj() {
    let t = Ctx::new("oom");
    let spec = t.spec().set("/process/oomScoreAdj", json!(500));
    assert_eq!(
        run_sh(&t, spec, "cat /proc/self/oom_score_adj").trim(),
        "500"
    );
}

/// Berth only: a negative oomScoreAdj needs CAP_SYS_RESOURCE, which root lacks here; runc dies,
/// berth warns and carries on.
#[test]
fn negative_oom_score_adj_warns() {
    berth_only!();
    let t = Ctx::new("oom-neg");
    t.write_spec(
        &t.spec()
            .set("/process/oomScoreAdj", json!(-500))
            .sh("cat /proc/self/oom_score_adj"),
    );
    let out = t.run();
    out.assert_ok();
    assert!(
        out.stderr.to_lowercase().contains("oom"),
        "no warning: {out}"
    );
    t.assert_no_leftovers(&t.id);
}

#[test]
fn sysctl() {
    let t = Ctx::new("sysctl");
    let spec = t.spec().set(
        "/linux/sysctl",
        json!({"net.ipv4.ip_forward": "1", "kernel.shmmax": "123456789"}),
    );
    let out = run_sh(
        &t,
        spec,
        "cat /proc/sys/net/ipv4/ip_forward /proc/sys/kernel/shmmax",
    );
    assert_eq!(out.lines().collect::<Vec<_>>(), ["1", "123456789"]);
}

#[test]
fn no_host_fds_or_cwd_leak() {
    let t = Ctx::new("fd-leak");
    // busybox ls opens the directory it lists as fd 3.
    let out = run_sh(&t, t.spec(), "ls /proc/self/fd; readlink /proc/self/cwd; ls -l /proc/1/fd | grep -c -e host -e berth || true");
    let fds: Vec<&str> = out
        .lines()
        .take_while(|l| l.parse::<u32>().is_ok())
        .collect();
    assert!(
        fds.iter().all(|f| ["0", "1", "2", "3"].contains(f)),
        "extra fds: {out}"
    );
    assert!(out.lines().any(|l| l == "/"), "cwd: {out}");
}

#[test]
fn proc_self_exe_is_not_the_runtime() {
    // CVE-2019-5736 class: the init must not still be the runtime binary when the user process
    // can see it; after exec /proc/1/exe is the container's binary.
    let t = Ctx::new("self-exe");
    let out = run_sh(&t, t.spec(), "readlink /proc/1/exe");
    assert_eq!(out.trim(), "/bin/busybox");
}

#[test]
fn waiting_init_binary_is_out_of_reach() {
    // CVE-2019-5736 class, the other window: between `create` and `start` the init is still the
    // runtime binary. A process exec'd into the container must not be able to open it through
    // /proc/1/exe (the init is not dumpable; without CAP_SYS_PTRACE the kernel refuses). runc
    // lets it be read, because its init runs from a sealed copy of itself.
    berth_only!();
    let t = Ctx::new("self-exe-created");
    t.write_spec(&t.spec().args(&["true"]));
    t.create().assert_ok();
    let out = t.exec(&[
        "sh",
        "-c",
        "head -c 4 /proc/1/exe >/dev/null && echo OPENED; true",
    ]);
    assert!(!out.stdout.contains("OPENED"), "{out}");
    assert!(out.stderr.contains("denied"), "{out}");
    t.delete_force().assert_ok();
    t.assert_no_leftovers(&t.id);
}

#[test]
fn privileged_container_cannot_write_the_runtime_binary() {
    // The same window with CAP_SYS_PTRACE (no user namespace): the kernel would let a process
    // in the container open /proc/1/exe, so the runtime runs from a sealed copy of itself.
    berth_only!();
    let t = Ctx::new("self-exe-ptrace");
    let caps = [
        "CAP_SYS_PTRACE",
        "CAP_DAC_OVERRIDE",
        "CAP_KILL",
        "CAP_SETUID",
        "CAP_SETGID",
    ];
    t.write_spec(&t.spec().args(&["true"]).caps(&caps));
    let before = std::fs::read(runtime_path()).unwrap();
    t.create().assert_ok();
    let out = t.exec(&[
        "sh",
        "-c",
        "readlink /proc/1/exe; (echo x >> /proc/1/exe) 2>&1 && echo WROTE; true",
    ]);
    assert!(out.stdout.contains("memfd:berth-runtime"), "{out}");
    assert!(!out.stdout.contains("WROTE"), "{out}");
    t.delete_force().assert_ok();
    assert!(
        std::fs::read(runtime_path()).unwrap() == before,
        "runtime binary changed"
    );
    t.assert_no_leftovers(&t.id);
}

#[test]
fn terminal_false_has_no_tty() {
    let t = Ctx::new("no-tty");
    t.write_spec(&t.spec().sh("tty"));
    let out = t.run();
    assert!(out.stdout.contains("not a tty"), "{out}");
    t.assert_no_leftovers(&t.id);
}

#[test]
fn terminal_with_console_socket() {
    let t = Ctx::new("tty");
    let console = ConsoleSocket::new(t.path("console.sock"), std::time::Duration::from_secs(10));
    t.write_spec(
        &t.spec()
            .set("/process/terminal", json!(true))
            .sh("tty; stty size; echo done"),
    );
    let sock = console.path.display().to_string();
    let b = t.bundle.display().to_string();
    t.cmd(&["create", "--bundle", &b, "--console-socket", &sock, &t.id])
        .assert_ok();
    t.start().assert_ok();
    let out = console.join().expect("pty master received");
    assert!(out.contains("/dev/pts/0"), "tty inside: {out:?}");
    assert!(out.contains("done"), "{out:?}");
    t.wait_status("stopped", std::time::Duration::from_secs(5));
    t.delete().assert_ok();
    t.assert_no_leftovers(&t.id);
}

/// runc's tty.bats "tty owner": the terminal belongs to the process's uid; its group stays the
/// one devpts gives (`gid=5` in the config).
#[test]
fn terminal_is_owned_by_the_container_user() {
    let t = Ctx::new("tty-owner");
    let console = ConsoleSocket::new(t.path("console.sock"), std::time::Duration::from_secs(10));
    t.write_spec(
        &t.spec()
            .set("/process/terminal", json!(true))
            .user(1000, 100)
            .sh("echo owner=$(stat -c %u:%g $(tty))"),
    );
    let sock = console.path.display().to_string();
    let b = t.bundle.display().to_string();
    t.cmd(&["create", "--bundle", &b, "--console-socket", &sock, &t.id])
        .assert_ok();
    t.start().assert_ok();
    let out = console.join().expect("pty master received");
    assert!(out.contains("owner=1000:5"), "{out:?}");
    t.wait_status("stopped", std::time::Duration::from_secs(5));
    t.delete().assert_ok();
    t.assert_no_leftovers(&t.id);
}

/// A capability the host cannot grant (outside its bounding set: on this machine
/// CAP_SYS_RESOURCE) is left out with one warning naming it, as the runtime spec asks; runc
/// fails instead.
#[test]
fn capability_the_host_cannot_grant_is_a_warning() {
    berth_only!();
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let bounding = u64::from_str_radix(status_field(&status, "CapBnd").unwrap(), 16).unwrap();
    let last: u32 = std::fs::read_to_string("/proc/sys/kernel/cap_last_cap")
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    // Capability numbers this test knows the names of, from linux/capability.h.
    let known = [
        (24, "CAP_SYS_RESOURCE"),
        (16, "CAP_SYS_MODULE"),
        (22, "CAP_SYS_BOOT"),
    ];
    let Some((n, name)) = known
        .into_iter()
        .find(|(n, _)| *n <= last && bounding & (1u64 << n) == 0)
    else {
        eprintln!("skipped: this host's bounding set has every capability the test could ask");
        return;
    };
    let t = Ctx::new("cap-warn");
    let caps = ["CAP_KILL", name];
    t.write_spec(&t.spec().caps(&caps).sh("grep CapEff /proc/self/status"));
    let out = t.run();
    out.assert_ok();
    let eff = u64::from_str_radix(status_field(&out.stdout, "CapEff").unwrap(), 16).unwrap();
    assert_eq!(eff, 1 << 5, "only CAP_KILL: {out}");
    let warnings: Vec<&str> = out.stderr.lines().filter(|l| l.contains(name)).collect();
    assert_eq!(warnings.len(), 1, "one warning naming {name} ({n}): {out}");
    assert!(warnings[0].contains("warning"), "{out}");
    t.assert_no_leftovers(&t.id);
}

/// A capability name this runtime does not know (a newer kernel's, or a typo) is left out with
/// a warning naming it, and the container runs with the rest, as with runc 1.1.
#[test]
fn unknown_capability_name_is_a_warning() {
    let t = Ctx::new("cap-unknown");
    t.write_spec(
        &t.spec()
            .caps(&["CAP_KILL", "CAP_BOGUS"])
            .sh("grep CapEff /proc/self/status"),
    );
    let out = t.run();
    out.assert_ok();
    let eff = u64::from_str_radix(status_field(&out.stdout, "CapEff").unwrap(), 16).unwrap();
    assert_eq!(eff, 1 << 5, "only CAP_KILL: {out}");
    if !is_reference_runtime() {
        let warnings: Vec<&str> = out
            .stderr
            .lines()
            .filter(|l| l.contains("CAP_BOGUS"))
            .collect();
        assert_eq!(warnings.len(), 1, "one warning naming CAP_BOGUS: {out}");
    }
    t.assert_no_leftovers(&t.id);
}

/// With `--log`, warnings go to the log file only, as runc's do: callers such as containerd give
/// the runtime the container's own stdio, and a warning must not appear in the container's
/// output (a kubelet's ExecSync showed one in the command's stderr).
#[test]
fn warnings_go_to_the_log_file_only_with_log() {
    berth_only!();
    let t = Ctx::new("warn-log");
    t.write_spec(&t.spec().caps(&["CAP_KILL", "CAP_BOGUS"]).sh("echo out"));
    let log = t.path("runtime.log");
    let log_s = log.to_str().unwrap();
    let bundle = t.bundle.to_str().unwrap().to_string();
    let out = t.cmd(&["--log", log_s, "run", "--bundle", &bundle, &t.id]);
    out.assert_ok();
    assert_eq!(out.stdout.trim(), "out");
    assert!(!out.stderr.contains("CAP_BOGUS"), "{out}");
    let logged = std::fs::read_to_string(&log).unwrap();
    assert!(
        logged.contains("CAP_BOGUS") && logged.contains("level=warning"),
        "{logged}"
    );
    t.assert_no_leftovers(&t.id);
}
