//! A terminal the runtime relays itself: `process.terminal` without `--console-socket`, in a
//! foreground `run` and in `exec -t`. The runtime's own stdio is then a pty, which script(1)
//! gives it here (as an interactive shell would).

use berth_tests::*;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Instant;

static COUNT: AtomicUsize = AtomicUsize::new(0);

/// Runs the runtime (`--root` of `t`, then `args`) under `script`, so that its stdin and stdout
/// are a terminal; returns what appeared on that terminal (and the runtime's exit code).
fn under_script(t: &Ctx, args: &[&str]) -> Output {
    let mut line = format!("'{}' --root '{}'", t.rt.bin.display(), t.rt.root.display());
    for a in args {
        line.push_str(&format!(" '{}'", a.replace('\'', "'\\''")));
    }
    let n = COUNT.fetch_add(1, Ordering::SeqCst);
    let out_path = t.path(&format!("script-{n}.out"));
    let mut child = Command::new("script")
        .args(["-qec", &line, "/dev/null"])
        .stdin(Stdio::null())
        .stdout(std::fs::File::create(&out_path).unwrap())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("script(1) (util-linux) is installed");
    let start = Instant::now();
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        if start.elapsed() > CMD_TIMEOUT {
            let _ = child.kill();
            let _ = child.wait();
            panic!("`{line}` did not finish within {CMD_TIMEOUT:?}");
        }
        std::thread::sleep(std::time::Duration::from_millis(5));
    };
    Output {
        cmdline: line,
        code: status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&std::fs::read(&out_path).unwrap()).into_owned(),
        stderr: String::new(),
    }
}

/// A process that writes and exits at once is often reaped before the relay has read its
/// output from the pty: the relay must drain the pty after the exit. runc keeps the output
/// every time; without the drain about half the runs lost it.
#[test]
fn foreground_run_with_terminal_keeps_the_last_output() {
    let t = Ctx::new("tty-drain");
    t.write_spec(
        &t.spec()
            .args(&["echo", "last-words"])
            .set("/process/terminal", serde_json::json!(true)),
    );
    let bundle = t.bundle.display().to_string();
    let mut lost = Vec::new();
    for i in 0..20 {
        let out = under_script(&t, &["run", "--bundle", &bundle, &t.id]);
        assert_eq!(out.code, 0, "run {i}: {out}");
        if !out.stdout.contains("last-words") {
            lost.push(i);
        }
    }
    assert!(lost.is_empty(), "runs {lost:?} of 20 lost the output");
    t.assert_no_leftovers(&t.id);
}

/// `exec -t` without `--console-socket`: the runtime relays the terminal itself (runc does), and
/// keeps the output of a quick process too.
#[test]
fn exec_tty_without_console_socket_relays_the_terminal() {
    let t = Ctx::new("exec-tty");
    t.write_spec(&t.spec().args(&["sleep", "1000"]));
    t.run_detached().assert_ok();
    for i in 0..10 {
        let out = under_script(
            &t,
            &["exec", "-t", &t.id, "sh", "-c", "tty; echo exec-words"],
        );
        assert_eq!(out.code, 0, "exec {i}: {out}");
        assert!(out.stdout.contains("/dev/pts/"), "exec {i}: no tty: {out}");
        assert!(out.stdout.contains("exec-words"), "exec {i}: {out}");
    }
    // Detached, nobody would be there to relay: refused, as runc does.
    t.cmd(&["exec", "-t", "-d", &t.id, "true"])
        .assert_failed()
        .assert_one_line_error()
        .assert_stderr_mentions(&["console socket"]);
    // The exit code comes through the relay too.
    let out = under_script(&t, &["exec", "-t", &t.id, "sh", "-c", "exit 7"]);
    assert_eq!(out.code, 7, "{out}");
    t.delete_force().assert_ok();
    t.assert_no_leftovers(&t.id);
}

/// The terminal of `exec -t --user` belongs to that user (runc's tty.bats "tty owner"); its
/// group stays the tty group devpts gives it.
#[test]
fn exec_tty_belongs_to_the_process_user() {
    let t = Ctx::new("exec-tty-owner");
    t.write_spec(&t.spec().args(&["sleep", "1000"]));
    t.run_detached().assert_ok();
    let out = under_script(
        &t,
        &[
            "exec",
            "-t",
            "--user",
            "1000:100",
            &t.id,
            "sh",
            "-c",
            "stat -c %u:%g $(tty)",
        ],
    );
    assert_eq!(out.code, 0, "{out}");
    assert!(out.stdout.contains("1000:5"), "{out}");
    t.delete_force().assert_ok();
    t.assert_no_leftovers(&t.id);
}
