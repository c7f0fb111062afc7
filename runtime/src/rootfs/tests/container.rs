//! Whole container roots: prepare, pivot (or not), finalize, console, user namespace.

use super::*;
use nix::sched::{unshare, CloneFlags};
use nix::sys::stat::stat;
use nix::sys::statvfs::{statvfs, FsFlags};
use nix::sys::wait::{waitpid, WaitStatus};
use nix::unistd::{fork, ForkResult};
use serde_json::json;
use std::io::Read;
use std::path::Path;

#[test]
fn full_container_root() {
    if !is_root() {
        return eprintln!("skipped: needs root");
    }
    let root = TempDir::rootfs("full");
    let s = spec(json!({
        "ociVersion": "1.0.2",
        "root": {"path": root.0, "readonly": true},
        "mounts": default_mounts(),
        "linux": {
            "namespaces": [{"type": "pid"}, {"type": "mount"}],
            "maskedPaths": ["/proc/kcore", "/proc/keys", "/masked-dir", "/does/not/exist"],
            "readonlyPaths": ["/proc/sys", "/proc/sysrq-trigger", "/nope"]
        }
    }));
    let kcore = Path::new("/proc/kcore").exists();
    let rootfs = root.0.clone();
    isolated(move || {
        prepare(&s, &rootfs).map_err(|e| format!("prepare: {e}"))?;
        pivot(&rootfs, false).map_err(|e| format!("pivot: {e}"))?;
        finalize(&s).map_err(|e| format!("finalize: {e}"))?;

        check(
            std::env::current_dir().unwrap() == Path::new("/"),
            "cwd is /",
        )?;
        check(
            std::fs::read_to_string("/etc/hostname").unwrap() == "container\n",
            "/etc/hostname from the rootfs",
        )?;
        check(is_char("/dev/null", 1, 3), "/dev/null is 1:3")?;
        check(is_char("/dev/urandom", 1, 9), "/dev/urandom is 1:9")?;
        check(is_char("/dev/tty", 5, 0), "/dev/tty is 5:0")?;
        let link = |p: &str| std::fs::read_link(p).ok();
        check(
            link("/dev/fd") == Some("/proc/self/fd".into()),
            "/dev/fd link",
        )?;
        check(
            link("/dev/stderr") == Some("/proc/self/fd/2".into()),
            "/dev/stderr",
        )?;
        check(
            link("/dev/ptmx") == Some("pts/ptmx".into()),
            "/dev/ptmx link",
        )?;
        check(
            !kcore || link("/dev/core") == Some("/proc/kcore".into()),
            "/dev/core",
        )?;
        check(Path::new("/dev/shm").is_dir(), "/dev/shm")?;
        check(Path::new("/dev/pts/ptmx").exists(), "/dev/pts/ptmx")?;
        // Masked: a file reads empty, a directory is empty, missing ones are skipped.
        if kcore {
            let mut b = Vec::new();
            std::fs::File::open("/proc/kcore")
                .and_then(|mut f| f.read_to_end(&mut b))
                .map_err(|e| format!("read masked /proc/kcore: {e}"))?;
            check(b.is_empty(), "masked /proc/kcore reads empty")?;
        }
        check(
            std::fs::read_dir("/masked-dir").unwrap().next().is_none(),
            "masked dir is empty",
        )?;
        // Read-only paths and root.
        let w = std::fs::OpenOptions::new()
            .write(true)
            .open("/proc/sys/kernel/hostname");
        check(errno_of(w) == Some(libc::EROFS), "/proc/sys is read-only")?;
        check(
            errno_of(std::fs::File::create("/newfile")) == Some(libc::EROFS),
            "root is read-only",
        )?;
        std::fs::write("/tmp/x", "ok").map_err(|e| format!("/tmp is a writable tmpfs: {e}"))?;
        std::fs::write("/dev/shm/x", "ok").map_err(|e| format!("/dev/shm writable: {e}"))?;
        check(
            errno_of(std::fs::File::create("/sys/x")) == Some(libc::EROFS),
            "/sys is read-only",
        )?;
        // cgroups: the host's hierarchies, read-only.
        let cg = std::fs::read_dir("/sys/fs/cgroup").map_err(|e| format!("cgroup dir: {e}"))?;
        check(cg.count() > 0, "/sys/fs/cgroup has entries")?;
        check(
            statvfs("/sys/fs/cgroup")
                .unwrap()
                .flags()
                .contains(FsFlags::ST_RDONLY),
            "/sys/fs/cgroup read-only",
        )?;
        // Only the container's mounts are left: the old root is gone.
        let mi = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
        for m in mi.lines().filter_map(mountinfo::parse_line) {
            let p = m.mount_point;
            let ok = p == Path::new("/")
                || ["/proc", "/dev", "/sys", "/tmp", "/masked-dir"]
                    .iter()
                    .any(|pre| p.starts_with(pre));
            check(ok, &format!("unexpected mount {p:?} after pivot"))?;
        }
        Ok(())
    })
    .unwrap();
}

#[test]
fn no_pivot_moves_and_chroots() {
    if !is_root() {
        return eprintln!("skipped: needs root");
    }
    let root = TempDir::rootfs("nopivot");
    let s = spec(json!({
        "ociVersion": "1.0.2",
        "root": {"path": root.0},
        "mounts": [{"destination": "/proc", "type": "proc", "source": "proc"}]
    }));
    let rootfs = root.0.clone();
    isolated(move || {
        prepare(&s, &rootfs).map_err(|e| format!("prepare: {e}"))?;
        pivot(&rootfs, true).map_err(|e| format!("pivot: {e}"))?;
        finalize(&s).map_err(|e| format!("finalize: {e}"))?;
        check(
            std::env::current_dir().unwrap() == Path::new("/"),
            "cwd is /",
        )?;
        check(
            std::fs::read_to_string("/etc/hostname").ok() == Some("container\n".into()),
            "root is the rootfs",
        )?;
        check(Path::new("/proc/self/fd").is_dir(), "container procfs")?;
        check(
            Path::new("/dev/null").exists(),
            "default devices without a /dev mount",
        )?;
        Ok(())
    })
    .unwrap();
}

#[test]
fn console_is_the_pty_slave() {
    if !is_root() {
        return eprintln!("skipped: needs root");
    }
    let root = TempDir::rootfs("console");
    let s =
        spec(json!({"ociVersion": "1.0.2", "root": {"path": root.0}, "mounts": default_mounts()}));
    let rootfs = root.0.clone();
    isolated(move || {
        prepare(&s, &rootfs).map_err(|e| format!("prepare: {e}"))?;
        pivot(&rootfs, false).map_err(|e| format!("pivot: {e}"))?;
        use nix::pty::{grantpt, posix_openpt, ptsname_r, unlockpt};
        let m = posix_openpt(nix::fcntl::OFlag::O_RDWR | nix::fcntl::OFlag::O_NOCTTY)
            .map_err(|e| format!("openpt: {e}"))?;
        grantpt(&m)
            .and_then(|_| unlockpt(&m))
            .map_err(|e| format!("unlockpt: {e}"))?;
        let slave = ptsname_r(&m).map_err(|e| format!("ptsname: {e}"))?;
        setup_console(Path::new(&slave)).map_err(|e| format!("console: {e}"))?;
        finalize(&s).map_err(|e| format!("finalize: {e}"))?;
        let a = stat("/dev/console").map_err(|e| format!("stat console: {e}"))?;
        let b = stat(slave.as_str()).map_err(|e| format!("stat slave: {e}"))?;
        check(a.st_rdev == b.st_rdev, "/dev/console is the slave")
    })
    .unwrap();
}

/// In a user namespace (mapping only root): mknod and sysfs are refused, so devices are bound
/// from the host and /sys is an rbind; remounts keep the flags the namespace cannot clear.
#[test]
fn user_namespace_fallbacks() {
    if !is_root() {
        return eprintln!("skipped: needs root");
    }
    let root = TempDir::rootfs("userns");
    let mut mounts = default_mounts();
    mounts[2]["options"] = json!([
        "nosuid",
        "noexec",
        "newinstance",
        "ptmxmode=0666",
        "mode=0620"
    ]);
    let src = TempDir::new("usernssrc");
    std::fs::write(src.0.join("f"), "hi").unwrap();
    mounts
        .as_array_mut()
        .unwrap()
        .push(json!({"destination": "/data", "type": "bind", "source": src.0, "options": ["rbind", "ro"]}));
    let s = spec(json!({
        "ociVersion": "1.0.2",
        "root": {"path": root.0, "readonly": true},
        "mounts": mounts,
        "linux": {
            "namespaces": [{"type": "user"}, {"type": "mount"}, {"type": "pid"}],
            "maskedPaths": ["/proc/kcore"],
            "readonlyPaths": ["/proc/sys"]
        }
    }));
    let rootfs = root.0.clone();
    let (r, w) = nix::unistd::pipe().unwrap();
    // SAFETY: the child only makes system calls and _exits.
    match unsafe { fork() }.unwrap() {
        ForkResult::Child => {
            drop(r);
            let res = (|| -> R {
                unshare(CloneFlags::CLONE_NEWUSER).map_err(|e| format!("unshare user: {e}"))?;
                std::fs::write("/proc/self/setgroups", "deny").map_err(|e| e.to_string())?;
                std::fs::write("/proc/self/uid_map", "0 0 1").map_err(|e| e.to_string())?;
                std::fs::write("/proc/self/gid_map", "0 0 1").map_err(|e| e.to_string())?;
                isolated(move || {
                    prepare(&s, &rootfs).map_err(|e| format!("prepare: {e}"))?;
                    pivot(&rootfs, false).map_err(|e| format!("pivot: {e}"))?;
                    finalize(&s).map_err(|e| format!("finalize: {e}"))?;
                    check(is_char("/dev/null", 1, 3), "/dev/null bound from the host")?;
                    std::fs::write("/dev/null", "x")
                        .map_err(|e| format!("write /dev/null: {e}"))?;
                    check(
                        Path::new("/sys/kernel").is_dir(),
                        "/sys bound from the host",
                    )?;
                    check(
                        errno_of(std::fs::File::create("/sys/x")) == Some(libc::EROFS),
                        "/sys read-only",
                    )?;
                    check(
                        errno_of(std::fs::write("/data/g", "x")) == Some(libc::EROFS),
                        "/data read-only",
                    )?;
                    check(
                        errno_of(std::fs::File::create("/newfile")) == Some(libc::EROFS),
                        "root read-only",
                    )?;
                    Ok(())
                })
            })();
            if let Err(msg) = res {
                report(&w, &msg);
                exit(1)
            }
            exit(0)
        }
        ForkResult::Parent { child } => {
            drop(w);
            let mut msg = String::new();
            let _ = std::fs::File::from(r).read_to_string(&mut msg);
            let st = waitpid(child, None).unwrap();
            assert_eq!(st, WaitStatus::Exited(child, 0), "{msg}");
        }
    }
}
