//! Seccomp: the errno a rule returns, the default errno, argument conditions, kill actions.

use berth_tests::*;
use serde_json::json;

fn run_with(name: &str, rules: serde_json::Value, script: &str) -> Output {
    let t = Ctx::new(name);
    t.write_spec(&t.spec().seccomp(seccomp_allow_except(rules)).sh(script));
    let out = t.run();
    t.assert_no_leftovers(&t.id);
    out
}

#[test]
fn errno_ret_is_returned() {
    // ENOSYS = 38: busybox says "Function not implemented".
    let out = run_with(
        "sc-errno",
        json!([{"names": ["mkdir", "mkdirat"], "action": "SCMP_ACT_ERRNO", "errnoRet": 38}]),
        "mkdir /tmp/d",
    );
    out.assert_failed();
    assert!(out.stderr.contains("Function not implemented"), "{out}");
}

#[test]
fn errno_defaults_to_eperm() {
    let out = run_with(
        "sc-eperm",
        json!([{"names": ["mkdir", "mkdirat"], "action": "SCMP_ACT_ERRNO"}]),
        "mkdir /tmp/d",
    );
    out.assert_failed();
    assert!(out.stderr.contains("Operation not permitted"), "{out}");
}

#[test]
fn other_syscalls_still_work() {
    let out = run_with(
        "sc-others",
        json!([{"names": ["mkdir", "mkdirat"], "action": "SCMP_ACT_ERRNO", "errnoRet": 38}]),
        "echo x > /tmp/f && cat /tmp/f && grep Seccomp: /proc/self/status",
    );
    out.assert_ok();
    assert!(out.stdout.starts_with("x\n"), "{out}");
    assert_eq!(status_field(&out.stdout, "Seccomp"), Some("2"), "{out}");
}

#[test]
fn argument_condition() {
    // kill(pid, SIGKILL) is refused, kill(pid, SIGTERM) allowed.
    let out = run_with(
        "sc-args",
        json!([{"names": ["kill"], "action": "SCMP_ACT_ERRNO", "errnoRet": 1,
                "args": [{"index": 1, "value": 9, "op": "SCMP_CMP_EQ"}]}]),
        "sleep 100 & p=$!; kill -9 $p; echo rc9=$?; kill -15 $p; echo rc15=$?",
    );
    assert!(out.stdout.contains("rc9=1"), "{out}");
    assert!(out.stdout.contains("rc15=0"), "{out}");
}

#[test]
fn kill_action_kills_with_sigsys() {
    let out = run_with(
        "sc-kill",
        json!([{"names": ["uname"], "action": "SCMP_ACT_KILL"}]),
        "uname",
    );
    // 128 + SIGSYS (31)
    assert_eq!(out.code, 159, "{out}");
}

#[test]
fn default_action_errno_with_allow_list() {
    // Everything refused except what sh and echo need: writes to stdout fail otherwise.
    let t = Ctx::new("sc-default");
    let allowed = [
        "read",
        "write",
        "openat",
        "open",
        "close",
        "fstat",
        "newfstatat",
        "stat",
        "lstat",
        "mmap",
        "munmap",
        "mprotect",
        "brk",
        "rt_sigaction",
        "rt_sigprocmask",
        "rt_sigreturn",
        "ioctl",
        "access",
        "execve",
        "exit",
        "exit_group",
        "arch_prctl",
        "set_tid_address",
        "getpid",
        "getppid",
        "getuid",
        "geteuid",
        "getgid",
        "getegid",
        "uname",
        "fcntl",
        "dup2",
        "dup3",
        "wait4",
        "clone",
        "fork",
        "vfork",
        "getcwd",
        "chdir",
        "prctl",
        "capget",
        "capset",
        "setgroups",
        "setuid",
        "setgid",
        "setresuid",
        "setresgid",
        "set_robust_list",
        "rseq",
        "prlimit64",
        "getrlimit",
        "setrlimit",
        "sigaltstack",
        "statx",
        "readlink",
        "readlinkat",
        "getdents64",
        "faccessat",
        "faccessat2",
        "futex",
        "nanosleep",
        "clock_nanosleep",
        "getrandom",
        "pipe",
        "pipe2",
        "lseek",
        "pread64",
        "sched_getaffinity",
        "close_range",
        "fchdir",
        "fchown",
        "fchownat",
        "setsid",
        "getpgrp",
        "setpgid",
        "umask",
        "epoll_pwait",
        "keyctl",
        "poll",
        "ppoll",
        "select",
        "pselect6",
        "socket",
        "connect",
        "sethostname",
        "mount",
        "pivot_root",
        "umount2",
        "chroot",
        "kill",
        "tgkill",
        "gettid",
        "personality",
        "unshare",
        "setns",
        "mknodat",
        "symlinkat",
        "fstatfs",
        "statfs",
        "sync",
        "write",
        "writev",
        "readv",
    ];
    let spec = t.spec().seccomp(json!({
        "defaultAction": "SCMP_ACT_ERRNO",
        "defaultErrnoRet": 38,
        "architectures": ["SCMP_ARCH_X86_64", "SCMP_ARCH_X86", "SCMP_ARCH_X32", "SCMP_ARCH_AARCH64"],
        "syscalls": [{"names": &allowed[..], "action": "SCMP_ACT_ALLOW"}]
    }));
    t.write_spec(&spec.sh("echo hello; mkdir /tmp/d"));
    let out = t.run();
    assert!(out.stdout.contains("hello"), "{out}");
    assert!(out.stderr.contains("Function not implemented"), "{out}");
    t.assert_no_leftovers(&t.id);
}

#[test]
fn seccomp_as_non_root_without_no_new_privs() {
    let t = Ctx::new("sc-nonroot");
    let spec = t
        .spec()
        .user(1000, 1000)
        .set("/process/noNewPrivileges", json!(false))
        .seccomp(seccomp_allow_except(
            json!([{"names": ["mkdir", "mkdirat"], "action": "SCMP_ACT_ERRNO", "errnoRet": 38}]),
        ));
    t.write_spec(&spec.sh("grep -E 'Seccomp:|NoNewPrivs:' /proc/self/status; mkdir /tmp/d"));
    let out = t.run();
    assert_eq!(status_field(&out.stdout, "Seccomp"), Some("2"), "{out}");
    assert_eq!(status_field(&out.stdout, "NoNewPrivs"), Some("0"), "{out}");
    assert!(out.stderr.contains("Function not implemented"), "{out}");
    t.assert_no_leftovers(&t.id);
}

#[test]
fn invalid_syscall_name_fails_cleanly() {
    let t = Ctx::new("sc-bad");
    t.write_spec(&t.spec().seccomp(seccomp_allow_except(
        json!([{"names": ["no_such_syscall_xyz"], "action": "SCMP_ACT_ERRNO"}]),
    )));
    // runc ignores unknown syscall names (they may exist on newer kernels); either outcome is
    // fine, but a failure must be clean.
    let out = t.run();
    if !out.ok() {
        out.assert_stderr_mentions(&["seccomp", "syscall", "no_such_syscall_xyz"]);
    }
    t.assert_no_leftovers(&t.id);
}

/// startContainer hooks run in the container after its filter is loaded, as runc orders it
/// (the filter, then the hooks, then the exec): here the hook's mkdir is refused. With
/// `noNewPrivileges` the filter used to be loaded only after the hooks.
#[test]
fn start_container_hooks_run_under_the_filter() {
    let t = Ctx::new("sc-hook");
    let rules = json!([{"names": ["mkdir", "mkdirat"], "action": "SCMP_ACT_ERRNO"}]);
    let hook = "mkdir /tmp/made-by-hook || touch /tmp/hook-refused";
    let spec = t
        .spec()
        .seccomp(seccomp_allow_except(rules))
        .set("/process/noNewPrivileges", json!(true))
        .hook(
            "startContainer",
            "/bin/sh",
            &["sh", "-c", hook],
            &[],
            Some(10),
        )
        .sh("ls /tmp");
    t.write_spec(&spec);
    let out = t.run();
    out.assert_ok();
    assert!(out.stdout.contains("hook-refused"), "{out}");
    assert!(!out.stdout.contains("made-by-hook"), "{out}");
    t.assert_no_leftovers(&t.id);
}

/// A seccomp agent for the tests, listening on `path`: every connection brings a notify fd and
/// the container process state (sent on the returned channel); every notification on those fds
/// is answered with `-errno`, without running the syscall.
fn seccomp_agent(
    path: &std::path::Path,
    errno: i32,
) -> std::sync::mpsc::Receiver<serde_json::Value> {
    let listener = std::os::unix::net::UnixListener::bind(path).expect("bind agent socket");
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for conn in listener.incoming() {
            let Ok(conn) = conn else { break };
            let tx = tx.clone();
            std::thread::spawn(move || agent_conn(conn, errno, tx));
        }
    });
    rx
}

/// One connection to [`seccomp_agent`]: the state and notify fd, then the notifications.
fn agent_conn(
    mut conn: std::os::unix::net::UnixStream,
    errno: i32,
    tx: std::sync::mpsc::Sender<serde_json::Value>,
) {
    use std::io::Read;
    use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
    let mut buf = vec![0u8; 65536];
    let mut cbuf = [0u8; 64];
    let mut iov = libc::iovec {
        iov_base: buf.as_mut_ptr().cast(),
        iov_len: buf.len(),
    };
    // SAFETY: msghdr is plain data; zeroed is a valid empty header we then fill in.
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_iov = &mut iov;
    msg.msg_iovlen = 1;
    msg.msg_control = cbuf.as_mut_ptr().cast();
    msg.msg_controllen = cbuf.len() as _;
    // SAFETY: msg points at buffers that live until the call returns.
    let n = unsafe { libc::recvmsg(conn.as_raw_fd(), &mut msg, 0) };
    if n <= 0 {
        return;
    }
    // SAFETY: the control buffer was filled by recvmsg; CMSG_* walk it within bounds.
    let fd = unsafe {
        let c = libc::CMSG_FIRSTHDR(&msg);
        if c.is_null() || (*c).cmsg_type != libc::SCM_RIGHTS {
            return;
        }
        std::ptr::read_unaligned(libc::CMSG_DATA(c) as *const i32)
    };
    // SAFETY: a new fd from SCM_RIGHTS that nobody else owns.
    let fd = unsafe { OwnedFd::from_raw_fd(fd) };
    // The state may come in more than one piece: read until it parses (or EOF).
    let mut body = buf[..n as usize].to_vec();
    let state = loop {
        if let Ok(v) = serde_json::from_slice::<serde_json::Value>(&body) {
            break v;
        }
        let mut more = [0u8; 4096];
        match conn.read(&mut more) {
            Ok(0) | Err(_) => break serde_json::Value::Null,
            Ok(k) => body.extend_from_slice(&more[..k]),
        }
    };
    let _ = tx.send(state);
    loop {
        let mut p = libc::pollfd {
            fd: fd.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        };
        // SAFETY: one valid pollfd.
        if unsafe { libc::poll(&mut p, 1, -1) } < 0 || p.revents & libc::POLLHUP != 0 {
            return;
        }
        // SAFETY: seccomp_notif is plain data; RECV wants it zeroed.
        let mut req: libc::seccomp_notif = unsafe { std::mem::zeroed() };
        // SAFETY: RECV fills the struct we pass.
        if unsafe { libc::ioctl(fd.as_raw_fd(), libc::SECCOMP_IOCTL_NOTIF_RECV, &mut req) } < 0 {
            continue;
        }
        let mut resp = libc::seccomp_notif_resp {
            id: req.id,
            val: 0,
            error: -errno,
            flags: 0,
        };
        // SAFETY: SEND reads the response we pass; a gone target answers ENOENT.
        unsafe { libc::ioctl(fd.as_raw_fd(), libc::SECCOMP_IOCTL_NOTIF_SEND, &mut resp) };
    }
}

/// With SCMP_ACT_NOTIFY and a `listenerPath`, an exec'd process's filter sends its notify fd
/// to the agent too (with the container's state and the process's pid), as runc does; the
/// agent then answers its syscalls. Without it, the notified syscalls failed with ENOSYS.
fn exec_hands_the_notify_fd_to_the_agent(nnp: bool) {
    let t = Ctx::new(if nnp { "sc-notify-nnp" } else { "sc-notify" });
    let sock = t.path("agent.sock");
    let states = seccomp_agent(&sock, libc::EXDEV);
    let mut profile = seccomp_allow_except(json!([
        {"names": ["mkdir", "mkdirat"], "action": "SCMP_ACT_NOTIFY"}
    ]));
    profile["listenerPath"] = json!(sock);
    profile["listenerMetadata"] = json!("berth-test");
    let spec = t
        .spec()
        .seccomp(profile)
        .set("/process/noNewPrivileges", json!(nnp))
        .args(&["sleep", "1000"]);
    t.write_spec(&spec);
    t.run_detached().assert_ok();
    let init = states
        .recv_timeout(CMD_TIMEOUT)
        .expect("the init's notify fd");
    assert_eq!(init["pid"], t.pid(), "{init}");
    // EXDEV: "Invalid cross-device link", from the agent.
    let out = t.exec(&["mkdir", "/tmp/d"]);
    out.assert_failed();
    assert!(out.stderr.contains("cross-device"), "{out}");
    let exec = states
        .recv_timeout(CMD_TIMEOUT)
        .expect("the exec's notify fd");
    assert_eq!(exec["fds"], json!(["seccompFd"]), "{exec}");
    assert_eq!(exec["metadata"], "berth-test", "{exec}");
    assert_eq!(exec["state"]["id"], t.id.as_str(), "{exec}");
    assert_eq!(exec["state"]["status"], "running", "{exec}");
    assert!(
        exec["pid"]
            .as_i64()
            .is_some_and(|p| p != i64::from(t.pid())),
        "{exec}"
    );
    t.delete_force().assert_ok();
    t.assert_no_leftovers(&t.id);
}

#[test]
fn exec_hands_the_notify_fd_to_the_agent_with_no_new_privs() {
    exec_hands_the_notify_fd_to_the_agent(true);
}

#[test]
fn exec_hands_the_notify_fd_to_the_agent_without_no_new_privs() {
    exec_hands_the_notify_fd_to_the_agent(false);
}

/// No agent listening at `listenerPath`: `run` fails with runc's words, and leaves nothing.
#[test]
fn notify_without_an_agent_fails_with_runcs_message() {
    let t = Ctx::new("sc-noagent");
    let mut profile = seccomp_allow_except(json!([
        {"names": ["mkdir", "mkdirat"], "action": "SCMP_ACT_NOTIFY"}
    ]));
    profile["listenerPath"] = json!(t.path("no-agent.sock"));
    t.write_spec(&t.spec().seccomp(profile));
    t.run()
        .assert_failed()
        .assert_one_line_error()
        .assert_stderr_mentions(&["failed to connect with seccomp agent"]);
    t.assert_no_leftovers(&t.id);
}
