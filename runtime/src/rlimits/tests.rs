//! rlimits set in forked children; oom_score_adj on a forked child.

use super::*;
use crate::seccomp::in_child::{run, spawn};
use oci_spec::runtime::PosixRlimitBuilder;

fn limit(typ: PosixRlimitType, soft: u64, hard: u64) -> PosixRlimit {
    PosixRlimitBuilder::default()
        .typ(typ)
        .soft(soft)
        .hard(hard)
        .build()
        .unwrap()
}

fn current(res: libc::__rlimit_resource_t) -> (u64, u64) {
    let r = getrlimit(res).unwrap();
    (r.rlim_cur as u64, r.rlim_max as u64)
}

#[test]
fn within_the_hard_limit() {
    run(|| {
        let (_, hard) = current(libc::RLIMIT_NOFILE);
        let w = apply(&[
            limit(PosixRlimitType::RlimitNofile, 100, hard.min(200)),
            limit(PosixRlimitType::RlimitCore, 0, 0),
        ])
        .map_err(|e| e.to_string())?;
        if !w.is_empty() {
            return Err(format!("unexpected warnings {w:?}"));
        }
        let got = current(libc::RLIMIT_NOFILE);
        if got != (100, hard.min(200)) {
            return Err(format!("RLIMIT_NOFILE is {got:?}"));
        }
        match current(libc::RLIMIT_CORE) {
            (0, 0) => Ok(()),
            got => Err(format!("RLIMIT_CORE is {got:?}")),
        }
    })
    .unwrap();
}

/// A hard limit above the host's is clamped with a warning (this host lacks CAP_SYS_RESOURCE;
/// with it, NOFILE above fs.nr_open is refused the same way).
#[test]
fn above_the_hard_limit_is_a_warning() {
    run(|| {
        let (_, hard) = current(libc::RLIMIT_NOFILE);
        let nr_open: u64 = std::fs::read_to_string("/proc/sys/fs/nr_open")
            .map_err(|e| e.to_string())?
            .trim()
            .parse()
            .map_err(|e| format!("{e}"))?;
        let above = if hard < nr_open && !has_sys_resource() {
            hard + 1
        } else {
            nr_open + 1
        };
        let w = apply(&[limit(PosixRlimitType::RlimitNofile, above, above)])
            .map_err(|e| e.to_string())?;
        let want = format!(
            "rlimit RLIMIT_NOFILE: hard limit {above} above the host's {hard}, kept {hard}"
        );
        if w.len() != 1 || !w[0].starts_with(&want) {
            return Err(format!("warnings {w:?}, want one starting {want:?}"));
        }
        match current(libc::RLIMIT_NOFILE) {
            got if got == (hard, hard) => Ok(()),
            got => Err(format!("RLIMIT_NOFILE is {got:?}, want ({hard}, {hard})")),
        }
    })
    .unwrap();
}

#[test]
fn bad_input_is_an_error() {
    let dup = [
        limit(PosixRlimitType::RlimitNofile, 10, 10),
        limit(PosixRlimitType::RlimitNofile, 20, 20),
    ];
    let e = apply(&dup).unwrap_err().to_string();
    assert!(e.contains("RLIMIT_NOFILE appears more than once"), "{e}");
    // soft above hard: EINVAL, checked in a child in case the kernel ever accepted it.
    run(
        || match apply(&[limit(PosixRlimitType::RlimitNofile, 20, 10)]) {
            Err(e) if e.to_string().contains("RLIMIT_NOFILE") => Ok(()),
            other => Err(format!("{other:?}")),
        },
    )
    .unwrap();
    assert!(set_oom_score_adj(1, 1001).is_err());
}

#[test]
fn oom_score_adj() {
    // A child that waits until it is killed.
    let child = spawn(|| {
        std::thread::sleep(std::time::Duration::from_secs(60));
        Ok(())
    });
    let pid = child_pid(&child);
    assert_eq!(set_oom_score_adj(pid, 500).unwrap(), None);
    let read = || {
        std::fs::read_to_string(format!("/proc/{pid}/oom_score_adj"))
            .unwrap()
            .trim()
            .to_string()
    };
    assert_eq!(read(), "500");
    let has = has_sys_resource();
    match set_oom_score_adj(pid, -100).unwrap() {
        None => assert!(
            has,
            "a negative score was accepted without CAP_SYS_RESOURCE"
        ),
        Some(w) => {
            assert!(!has, "{w}");
            assert!(w.contains("oomScoreAdj -100"), "{w}");
            assert_eq!(read(), "500");
        }
    }
    drop(child); // kills and reaps
}

fn child_pid(c: &crate::seccomp::in_child::Child) -> i32 {
    c.pid()
}
