//! Real filters, loaded in forked children (as root, so no no_new_privs is needed).

use super::in_child::{run, spawn};
use super::*;
use oci_spec::runtime::{LinuxSeccompArgBuilder, LinuxSeccompBuilder, LinuxSyscallBuilder};
use std::os::fd::{AsRawFd, FromRawFd};

fn rule(names: &[&str], action: LinuxSeccompAction, errno: Option<u32>) -> LinuxSyscall {
    let mut b = LinuxSyscallBuilder::default()
        .names(names.iter().map(|s| s.to_string()).collect::<Vec<_>>())
        .action(action);
    if let Some(e) = errno {
        b = b.errno_ret(e);
    }
    b.build().unwrap()
}

fn arg(
    index: usize,
    value: u64,
    value_two: Option<u64>,
    op: LinuxSeccompOperator,
) -> LinuxSeccompArg {
    let mut b = LinuxSeccompArgBuilder::default()
        .index(index)
        .value(value)
        .op(op);
    if let Some(v) = value_two {
        b = b.value_two(v);
    }
    b.build().unwrap()
}

fn profile(default: LinuxSeccompAction, syscalls: Vec<LinuxSyscall>) -> LinuxSeccomp {
    LinuxSeccompBuilder::default()
        .default_action(default)
        .architectures(vec![
            Arch::ScmpArchX86_64,
            Arch::ScmpArchX86,
            Arch::ScmpArchX32,
        ])
        .syscalls(syscalls)
        .build()
        .unwrap()
}

/// A raw syscall's result: the return value, or `-errno`.
fn raw(r: libc::c_long) -> i64 {
    if r < 0 {
        -i64::from(std::io::Error::last_os_error().raw_os_error().unwrap_or(0))
    } else {
        r
    }
}

fn mkdir_tmp() -> i64 {
    // SAFETY: mkdir with a NUL-terminated path; the parent directory does not exist.
    raw(unsafe { libc::syscall(libc::SYS_mkdir, c"/nonexistent-berth/x".as_ptr(), 0o700) })
}

fn getpgid(arg: u64) -> i64 {
    // SAFETY: getpgid with an integer argument; at worst ESRCH.
    raw(unsafe { libc::syscall(libc::SYS_getpgid, arg as libc::c_long) })
}

fn expect(what: &str, got: i64, want: i64) -> Result<(), String> {
    if got == want {
        Ok(())
    } else {
        Err(format!("{what}: got {got}, want {want}"))
    }
}

#[test]
fn errno_rules_and_custom_errno_ret() {
    let p = profile(
        LinuxSeccompAction::ScmpActAllow,
        vec![
            rule(
                &["mkdir", "no_such_syscall_berth"],
                LinuxSeccompAction::ScmpActErrno,
                Some(1234),
            ),
            rule(&["rmdir"], LinuxSeccompAction::ScmpActErrno, None),
            // Same as the default: skipped, not an error.
            rule(&["getpid"], LinuxSeccompAction::ScmpActAllow, None),
        ],
    );
    let f = Filter::build(&p).unwrap();
    assert!(!f.wants_listener());
    run(move || {
        if f.load().map_err(|e| e.to_string())?.is_some() {
            return Err("unexpected listener fd".into());
        }
        expect("mkdir", mkdir_tmp(), -1234)?;
        // SAFETY: rmdir with a NUL-terminated path.
        let r = raw(unsafe { libc::syscall(libc::SYS_rmdir, c"/nonexistent-berth".as_ptr()) });
        expect("rmdir (default errnoRet)", r, -i64::from(libc::EPERM))?;
        expect("getpid", i64::from(std::process::id() > 0), 1)
    })
    .unwrap();
}

#[test]
fn default_errno_ret_and_allow_list() {
    // Deny by default with ENOSYS (38); allow what the child needs to report and exit.
    let p = LinuxSeccompBuilder::default()
        .default_action(LinuxSeccompAction::ScmpActErrno)
        .default_errno_ret(38u32)
        .flags(vec![
            LinuxSeccompFilterFlag::SeccompFilterFlagLog,
            LinuxSeccompFilterFlag::SeccompFilterFlagSpecAllow,
            LinuxSeccompFilterFlag::SeccompFilterFlagTsync,
        ])
        .syscalls(vec![rule(
            &[
                "getpid",
                "write",
                "exit",
                "exit_group",
                "getpgid",
                "rt_sigprocmask",
                "munmap",
                "close",
            ],
            LinuxSeccompAction::ScmpActAllow,
            None,
        )])
        .build()
        .unwrap();
    let f = Filter::build(&p).unwrap();
    run(move || {
        f.load().map_err(|e| e.to_string())?;
        expect("mkdir", mkdir_tmp(), -38)?;
        expect("getpgid", i64::from(getpgid(0) > 0), 1)
    })
    .unwrap();
}

#[test]
fn kill_process_action() {
    let p = profile(
        LinuxSeccompAction::ScmpActAllow,
        vec![rule(
            &["mkdir"],
            LinuxSeccompAction::ScmpActKillProcess,
            None,
        )],
    );
    let f = Filter::build(&p).unwrap();
    let res = run(move || {
        f.load().map_err(|e| e.to_string())?;
        mkdir_tmp();
        Err("still alive after mkdir".into())
    });
    assert_eq!(res, Err("child killed by SIGSYS".into()));
}

#[test]
fn argument_conditions() {
    use LinuxSeccompOperator::*;
    let mut same_index = rule(&["getpgid"], LinuxSeccompAction::ScmpActErrno, Some(77));
    // Two conditions on argument 0: one rule each, so either matches.
    same_index.set_args(Some(vec![
        arg(0, 100_001, None, ScmpCmpEq),
        arg(0, 100_002, None, ScmpCmpEq),
    ]));
    let mut masked = rule(&["getpgid"], LinuxSeccompAction::ScmpActErrno, Some(78));
    masked.set_args(Some(vec![arg(0, 0xff00, Some(0x4200), ScmpCmpMaskedEq)]));
    let mut personality = rule(&["personality"], LinuxSeccompAction::ScmpActErrno, Some(79));
    // Different indexes: all must hold (arg0 != query, arg1 anything >= 0).
    personality.set_args(Some(vec![
        arg(0, 0xffff_ffff, None, ScmpCmpNe),
        arg(1, 0, None, ScmpCmpGe),
    ]));
    let p = profile(
        LinuxSeccompAction::ScmpActAllow,
        vec![same_index, masked, personality],
    );
    let f = Filter::build(&p).unwrap();
    run(move || {
        f.load().map_err(|e| e.to_string())?;
        expect("getpgid(100001)", getpgid(100_001), -77)?;
        expect("getpgid(100002)", getpgid(100_002), -77)?;
        expect("getpgid(100003)", getpgid(100_003), -i64::from(libc::ESRCH))?;
        expect("getpgid(0x4211)", getpgid(0x4211), -78)?;
        expect("getpgid(0x4311)", getpgid(0x4311), -i64::from(libc::ESRCH))?;
        // SAFETY: personality(0xffffffff) only queries the persona.
        let q = raw(unsafe { libc::syscall(libc::SYS_personality, 0xffff_ffffu64) });
        if q < 0 {
            return Err(format!("personality query denied: {q}"));
        }
        // SAFETY: setting the current persona again changes nothing (and is denied anyway).
        let s = raw(unsafe { libc::syscall(libc::SYS_personality, q) });
        expect("personality(set)", s, -79)
    })
    .unwrap();
}

#[test]
fn bad_profiles_are_refused_with_a_reason() {
    let mut bad = rule(&["getpgid"], LinuxSeccompAction::ScmpActErrno, None);
    bad.set_args(Some(vec![arg(6, 1, None, LinuxSeccompOperator::ScmpCmpEq)]));
    let e = Filter::build(&profile(LinuxSeccompAction::ScmpActAllow, vec![bad])).unwrap_err();
    assert!(e.to_string().contains("syscalls[0]"), "{e}");

    let e = Filter::build(&profile(LinuxSeccompAction::ScmpActNotify, vec![])).unwrap_err();
    assert!(e.to_string().contains("defaultAction"), "{e}");

    let notify = rule(&["mkdirat"], LinuxSeccompAction::ScmpActNotify, None);
    let e = Filter::build(&profile(LinuxSeccompAction::ScmpActAllow, vec![notify])).unwrap_err();
    assert!(e.to_string().contains("listenerPath"), "{e}");

    let e = Filter::build(&profile(
        LinuxSeccompAction::ScmpActAllow,
        vec![rule(
            &["mkdir"],
            LinuxSeccompAction::ScmpActErrno,
            Some(70_000),
        )],
    ))
    .unwrap_err();
    assert!(e.to_string().contains("errnoRet 70000"), "{e}");

    // As runc: notify on write would stop the process while it still reports to the runtime.
    let mut p = profile(
        LinuxSeccompAction::ScmpActAllow,
        vec![rule(&["write"], LinuxSeccompAction::ScmpActNotify, None)],
    );
    p.set_listener_path(Some("/nonexistent-berth/agent.sock".into()));
    let e = Filter::build(&p).unwrap_err();
    assert!(
        e.to_string()
            .contains("SCMP_ACT_NOTIFY cannot be used for the write syscall"),
        "{e}"
    );
}

#[test]
fn flags_from_json_and_wait_killable() {
    let json = r#"{
        "defaultAction": "SCMP_ACT_ALLOW",
        "architectures": ["SCMP_ARCH_X86_64", "SCMP_ARCH_X86"],
        "flags": ["SECCOMP_FILTER_FLAG_WAIT_KILLABLE_RECV"],
        "syscalls": [{"names": ["mkdir"], "action": "SCMP_ACT_ERRNO", "errnoRet": 5}]
    }"#;
    let p: LinuxSeccomp = serde_json::from_str(json).unwrap();
    let f = Filter::build(&p).unwrap();
    // Only meaningful (and accepted by the kernel) with a listener: see `notify_listener`.
    assert_eq!(f.flags, 0);
    run(move || {
        f.load().map_err(|e| e.to_string())?;
        expect("mkdir", mkdir_tmp(), -5)
    })
    .unwrap();

    let unknown = r#"{"defaultAction": "SCMP_ACT_ALLOW", "flags": ["SECCOMP_FILTER_FLAG_BOGUS"]}"#;
    assert!(serde_json::from_str::<LinuxSeccomp>(unknown).is_err());
}

/// The child loads a NOTIFY filter for mkdirat, sends the listener fd with `send_listener_fd`
/// to a socket the test listens on, and calls mkdirat; the test answers with 42.
#[test]
fn notify_listener() {
    let dir = std::env::temp_dir().join(format!("berth-seccomp-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let sock_path = dir.join("agent.sock");
    let _ = std::fs::remove_file(&sock_path);
    let agent = std::os::unix::net::UnixListener::bind(&sock_path).unwrap();

    let mut p = profile(
        LinuxSeccompAction::ScmpActAllow,
        vec![rule(&["mkdirat"], LinuxSeccompAction::ScmpActNotify, None)],
    );
    p.set_listener_path(Some(sock_path.clone()));
    p.set_flags(Some(vec![
        LinuxSeccompFilterFlag::SeccompFilterFlagWaitKillableRecv,
        LinuxSeccompFilterFlag::SeccompFilterFlagTsync,
    ]));
    let f = Filter::build(&p).unwrap();
    assert!(f.wants_listener());
    let want = libc::SECCOMP_FILTER_FLAG_NEW_LISTENER
        | libc::SECCOMP_FILTER_FLAG_WAIT_KILLABLE_RECV
        | libc::SECCOMP_FILTER_FLAG_TSYNC
        | libc::SECCOMP_FILTER_FLAG_TSYNC_ESRCH;
    assert_eq!(f.flags, want);

    let child_path = sock_path.clone();
    let child = spawn(move || {
        let fd = f
            .load()
            .map_err(|e| e.to_string())?
            .ok_or("no listener fd")?;
        send_listener_fd(
            &child_path,
            &fd,
            br#"{"ociVersion":"1.2.0","fds":["seccompFd"]}"#,
        )
        .map_err(|e| e.to_string())?;
        drop(fd);
        // SAFETY: mkdirat with a NUL-terminated path; the agent answers instead of the kernel.
        let r = raw(unsafe {
            libc::syscall(
                libc::SYS_mkdirat,
                libc::AT_FDCWD,
                c"/nonexistent-berth/y".as_ptr(),
                0o700,
            )
        });
        expect("mkdirat", r, 42)
    });

    let (conn, _) = agent.accept().unwrap();
    let mut buf = [0u8; 4096];
    let mut cmsg = nix::cmsg_space!([std::os::fd::RawFd; 1]);
    let mut iov = [std::io::IoSliceMut::new(&mut buf)];
    let msg = nix::sys::socket::recvmsg::<()>(
        conn.as_raw_fd(),
        &mut iov,
        Some(&mut cmsg),
        nix::sys::socket::MsgFlags::empty(),
    )
    .unwrap();
    let mut notify_fd = None;
    for c in msg.cmsgs().unwrap() {
        if let nix::sys::socket::ControlMessageOwned::ScmRights(fds) = c {
            // SAFETY: SCM_RIGHTS gave us this new fd.
            notify_fd = Some(unsafe { OwnedFd::from_raw_fd(fds[0]) });
        }
    }
    let len = msg.bytes;
    let body = String::from_utf8_lossy(&buf[..len]).to_string();
    assert!(body.contains("seccompFd"), "{body}");
    let notify_fd = notify_fd.expect("an fd with the state");

    let req = libseccomp::ScmpNotifReq::receive(notify_fd.as_raw_fd()).unwrap();
    assert_eq!(
        req.data.syscall,
        libseccomp::ScmpSyscall::from_name("mkdirat").unwrap()
    );
    libseccomp::ScmpNotifResp::new_val(req.id, 42, libseccomp::ScmpNotifRespFlags::empty())
        .respond(notify_fd.as_raw_fd())
        .unwrap();
    let res = child.wait();
    let _ = std::fs::remove_dir_all(&dir);
    res.unwrap();
}

/// The profile podman ships (`/usr/share/containers/seccomp.json`), turned into an OCI profile
/// the way podman does for a container without extra capabilities (entries conditional on
/// capabilities, architectures or kernels are left out). Skipped if the file is absent.
#[test]
fn podman_default_profile() {
    let Ok(text) = std::fs::read_to_string("/usr/share/containers/seccomp.json") else {
        eprintln!("skipped: no /usr/share/containers/seccomp.json");
        return;
    };
    let mut v: serde_json::Value = serde_json::from_str(&text).unwrap();
    let o = v.as_object_mut().unwrap();
    let mut arches = vec![serde_json::json!("SCMP_ARCH_X86_64")];
    for m in o["archMap"].as_array().unwrap() {
        if m["architecture"] == "SCMP_ARCH_X86_64" {
            arches.extend(m["subArchitectures"].as_array().unwrap().iter().cloned());
        }
    }
    o.insert("architectures".into(), arches.into());
    o.remove("archMap");
    o.remove("defaultErrno");
    let calls: Vec<serde_json::Value> = o["syscalls"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|s| {
            let empty = |k: &str| {
                s.get(k)
                    .is_none_or(|x| x.as_object().is_none_or(|m| m.is_empty()))
            };
            empty("includes") && empty("excludes")
        })
        .map(|s| {
            let mut s = s.clone();
            let m = s.as_object_mut().unwrap();
            for k in ["includes", "excludes", "comment", "errno"] {
                m.remove(k);
            }
            s
        })
        .collect();
    o.insert("syscalls".into(), calls.into());
    let p: LinuxSeccomp = serde_json::from_value(v).unwrap();
    let f = Filter::build(&p).unwrap();
    assert!(!f.wants_listener());
    run(move || {
        f.load().map_err(|e| e.to_string())?;
        expect("mkdir", mkdir_tmp(), -i64::from(libc::ENOENT))?;
        expect("getpgid", i64::from(getpgid(0) > 0), 1)?;
        // bpf is allowed only with CAP_SYS_ADMIN, whose entry was left out: defaultErrnoRet.
        // SAFETY: bpf with a null attribute pointer; denied before the kernel looks at it.
        let r = raw(unsafe { libc::syscall(libc::SYS_bpf, 0, 0usize, 0) });
        expect("bpf", r, -38)
    })
    .unwrap();
}

/// runc's -ENOSYS stub: with a deny-by-default profile, a syscall newer than any the profile
/// names (clone3, faccessat2) gets ENOSYS, so that libc falls back; an older one the profile
/// does not allow still gets the default action.
#[test]
fn syscalls_newer_than_the_profile_get_enosys() {
    let p = LinuxSeccompBuilder::default()
        .default_action(LinuxSeccompAction::ScmpActErrno)
        .architectures(vec![
            Arch::ScmpArchX86_64,
            Arch::ScmpArchX86,
            Arch::ScmpArchX32,
            Arch::ScmpArchAarch64,
        ])
        .syscalls(vec![rule(
            &[
                "getpid",
                "write",
                "exit",
                "exit_group",
                "getpgid",
                "rt_sigprocmask",
                "munmap",
                "close",
                "sigaltstack",
                // No syscall of their own on some of the architectures (i386's socketcall,
                // aarch64 has no access): libseccomp gives them negative pseudo-numbers there.
                "socket",
                "access",
                "ugetrlimit",
            ],
            LinuxSeccompAction::ScmpActAllow,
            None,
        )])
        .build()
        .unwrap();
    let f = Filter::build(&p).unwrap();
    run(move || {
        f.load().map_err(|e| e.to_string())?;
        // A number no kernel has (yet).
        // SAFETY: an unknown syscall number takes no pointers.
        let unknown =
            raw(unsafe { libc::syscall(1000, 0xdead_beef_u64, 0xcafe_feed_u64, 0x1337_u64) });
        expect("syscall 1000", unknown, -i64::from(libc::ENOSYS))?;
        // SAFETY: clone3 with a null argument fails (EFAULT/EINVAL) if it gets to the kernel.
        let clone3 = raw(unsafe { libc::syscall(libc::SYS_clone3, 0usize, 0usize) });
        expect("clone3", clone3, -i64::from(libc::ENOSYS))?;
        // SAFETY: faccessat2 on a NUL-terminated path; at worst ENOENT.
        let faccessat2 = raw(unsafe {
            libc::syscall(
                libc::SYS_faccessat2,
                libc::AT_FDCWD,
                c"/nonexistent-berth".as_ptr(),
                0,
                0,
            )
        });
        expect("faccessat2", faccessat2, -i64::from(libc::ENOSYS))?;
        // Older than the newest allowed syscall: the default action.
        expect("mkdir", mkdir_tmp(), -i64::from(libc::EPERM))?;
        expect("getpgid", i64::from(getpgid(0) > 0), 1)
    })
    .unwrap();
}

/// No stub where the default action lets syscalls through or is ENOSYS already (as runc).
#[test]
fn no_enosys_stub_for_permissive_or_enosys_defaults() {
    let allow = profile(
        LinuxSeccompAction::ScmpActAllow,
        vec![rule(&["mkdir"], LinuxSeccompAction::ScmpActErrno, None)],
    );
    let enosys = LinuxSeccompBuilder::default()
        .default_action(LinuxSeccompAction::ScmpActErrno)
        .default_errno_ret(38u32)
        .syscalls(vec![rule(
            &["write"],
            LinuxSeccompAction::ScmpActAllow,
            None,
        )])
        .build()
        .unwrap();
    let eperm = LinuxSeccompBuilder::default()
        .default_action(LinuxSeccompAction::ScmpActErrno)
        .syscalls(vec![rule(
            &["write"],
            LinuxSeccompAction::ScmpActAllow,
            None,
        )])
        .build()
        .unwrap();
    let arches = [libseccomp::ScmpArch::Native];
    assert!(enosys::stub(&allow, &arches).is_empty());
    assert!(enosys::stub(&enosys, &arches).is_empty());
    assert!(!enosys::stub(&eperm, &arches).is_empty());
}
