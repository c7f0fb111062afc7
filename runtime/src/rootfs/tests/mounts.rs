//! Single mounts: symlinked targets, bind options, devices, error messages.

use super::*;
use nix::mount::MsFlags;
use nix::sys::stat::{stat, SFlag};
use nix::sys::statfs::{statfs, TMPFS_MAGIC};
use nix::sys::statvfs::{statvfs, FsFlags};
use serde_json::json;
use std::path::Path;

/// Symlinks in the image, absolute or relative with many `..`, are resolved inside the rootfs.
fn symlink_targets(walk: bool) {
    if !is_root() {
        return eprintln!("skipped: needs root");
    }
    let root = TempDir::rootfs(if walk { "links-walk" } else { "links" });
    let src = TempDir::new("src");
    std::fs::write(src.0.join("f"), "hi").unwrap();
    let r = &root.0;
    std::os::unix::fs::symlink("/etc", r.join("evil-abs")).unwrap();
    let escape = format!("/tmp/berth-escape-{}-{walk}", std::process::id());
    let rel = format!("../../../../../../../..{escape}");
    std::os::unix::fs::symlink(&rel, r.join("evil-rel")).unwrap();
    std::fs::create_dir_all(r.join("var")).unwrap();
    std::os::unix::fs::symlink("/run", r.join("var/run")).unwrap();
    std::os::unix::fs::symlink("/run/resolv.conf", r.join("etc/resolv.conf")).unwrap();
    let s = spec(json!({
        "ociVersion": "1.0.2",
        "root": {"path": r},
        "mounts": [
            {"destination": "/etc/resolv.conf", "type": "bind", "source": src.0.join("f")},
            {"destination": "/evil-rel/sub", "type": "bind", "source": src.0, "options": ["rbind"]},
            {"destination": "/var/run/foo", "type": "tmpfs", "source": "tmpfs"},
            {"destination": "/evil-abs", "type": "tmpfs", "source": "tmpfs"},
            {"destination": "/../../../proc/../dotdot", "type": "tmpfs", "source": "tmpfs"}
        ]
    }));
    let rootfs = root.0.clone();
    let esc = escape.clone();
    isolated(move || {
        resolve::force_walk(walk);
        prepare(&s, &rootfs).map_err(|e| format!("prepare: {e}"))?;
        let fstype = |p: &Path| statfs(p).map(|s| s.filesystem_type());
        check(
            fstype(&rootfs.join("etc")) == Ok(TMPFS_MAGIC),
            "tmpfs landed on rootfs/etc",
        )?;
        check(
            fstype(Path::new("/etc")) != Ok(TMPFS_MAGIC),
            "host /etc untouched",
        )?;
        check(Path::new("/etc/hostname").exists(), "host /etc still there")?;
        check(
            std::fs::read_to_string(rootfs.join(format!("{}/sub/f", &esc[1..]))).ok()
                == Some("hi".into()),
            "relative escape landed inside the rootfs",
        )?;
        check(
            !Path::new(&esc).exists(),
            "nothing created outside the rootfs",
        )?;
        check(
            rootfs.join("run/foo").is_dir(),
            "dangling /var/run -> /run created inside",
        )?;
        check(
            fstype(&rootfs.join("run/foo")) == Ok(TMPFS_MAGIC),
            "tmpfs on rootfs/run/foo",
        )?;
        check(
            std::fs::read_to_string(rootfs.join("run/resolv.conf")).ok() == Some("hi".into()),
            "file bind through a dangling absolute link",
        )?;
        check(
            fstype(&rootfs.join("dotdot")) == Ok(TMPFS_MAGIC),
            "lexical .. stays in root",
        )?;
        Ok(())
    })
    .unwrap();
    assert!(!Path::new(&escape).exists());
    assert!(!root.0.join("etc/resolv.conf").exists() || root.0.join("run").exists());
}

#[test]
fn symlink_targets_resolve_inside_rootfs() {
    symlink_targets(false);
}

#[test]
fn symlink_targets_resolve_inside_rootfs_without_openat2() {
    symlink_targets(true);
}

#[test]
fn bind_mount_options() {
    if !is_root() {
        return eprintln!("skipped: needs root");
    }
    let root = TempDir::rootfs("bind");
    let src = TempDir::new("bindsrc");
    std::fs::write(src.0.join("f"), "hi").unwrap();
    std::fs::create_dir(src.0.join("sub")).unwrap();
    let s = spec(json!({
        "ociVersion": "1.0.2",
        "root": {"path": root.0},
        "mounts": [
            {"destination": "/proc", "type": "proc", "source": "proc"},
            {"destination": "/data", "type": "bind", "source": src.0,
             "options": ["rbind", "ro", "nosuid", "nodev", "noatime"]},
            {"destination": "/data-rw", "type": "none", "source": src.0,
             "options": ["bind", "rw", "noexec", "rprivate"]},
            {"destination": "/deep/new/file", "type": "bind", "source": src.0.join("f"),
             "options": ["bind", "ro"]},
            {"destination": "/rro", "type": "bind", "source": src.0, "options": ["rbind", "rro"]},
            {"destination": "/small", "type": "tmpfs", "source": "tmpfs",
             "options": ["ro", "size=1m", "mode=700"]}
        ]
    }));
    let rootfs = root.0.clone();
    let srcdir = src.0.clone();
    isolated(move || {
        // A submount in the source, so that "rro" has something below to make read-only.
        sys::mount_fs(
            Some("tmpfs"),
            srcdir.join("sub").to_str().unwrap(),
            Some("tmpfs"),
            MsFlags::empty(),
            "",
        )
        .map_err(|e| format!("submount: {e}"))?;
        prepare(&s, &rootfs).map_err(|e| format!("prepare: {e}"))?;
        pivot(&rootfs, false).map_err(|e| format!("pivot: {e}"))?;
        finalize(&s).map_err(|e| format!("finalize: {e}"))?;
        let flags = |p: &str| statvfs(p).map(|s| s.flags()).unwrap_or(FsFlags::empty());
        check(
            std::fs::read_to_string("/data/f").ok() == Some("hi".into()),
            "read /data/f",
        )?;
        check(
            errno_of(std::fs::write("/data/g", "x")) == Some(libc::EROFS),
            "/data is ro",
        )?;
        let f = flags("/data");
        check(
            f.contains(FsFlags::ST_RDONLY | FsFlags::ST_NOSUID | FsFlags::ST_NODEV),
            &format!("/data flags {f:?}"),
        )?;
        check(f.contains(FsFlags::ST_NOATIME), "/data noatime")?;
        std::fs::write("/data-rw/g", "x").map_err(|e| format!("/data-rw writable: {e}"))?;
        check(
            flags("/data-rw").contains(FsFlags::ST_NOEXEC),
            "/data-rw noexec",
        )?;
        check(
            std::fs::read_to_string("/deep/new/file").ok() == Some("hi".into()),
            "file bind onto a created file",
        )?;
        check(
            errno_of(std::fs::write("/deep/new/file", "x")) == Some(libc::EROFS),
            "file bind is ro",
        )?;
        check(
            errno_of(std::fs::write("/rro/sub/x", "x")) == Some(libc::EROFS),
            "rro recursive",
        )?;
        check(
            errno_of(std::fs::write("/data/sub/x", "x")) != Some(libc::EROFS),
            "ro not recursive",
        )?;
        check(
            errno_of(std::fs::write("/small/x", "x")) == Some(libc::EROFS),
            "ro tmpfs",
        )?;
        let mode = stat("/small").map(|s| s.st_mode & 0o7777).unwrap_or(0);
        check(mode == 0o700, &format!("tmpfs mode {mode:o}"))?;
        Ok(())
    })
    .unwrap();
    assert_eq!(std::fs::read_to_string(src.0.join("g")).unwrap(), "x");
    assert!(!src.0.join("sub/x").exists());
}

#[test]
fn devices_without_dev_mount_do_not_clobber() {
    if !is_root() {
        return eprintln!("skipped: needs root");
    }
    let root = TempDir::rootfs("devs");
    std::fs::write(root.0.join("dev/null"), "keep").unwrap();
    let s = spec(json!({
        "ociVersion": "1.0.2",
        "root": {"path": root.0},
        "linux": {"devices": [
            {"path": "/dev/fuse", "type": "c", "major": 10, "minor": 229,
             "fileMode": 384, "uid": 1000, "gid": 1001},
            {"path": "/dev/sub/fifo", "type": "p"}
        ]}
    }));
    let rootfs = root.0.clone();
    isolated(move || {
        prepare(&s, &rootfs).map_err(|e| format!("prepare: {e}"))?;
        let p = |x: &str| rootfs.join(x).to_string_lossy().into_owned();
        check(
            std::fs::read_to_string(p("dev/null")).ok() == Some("keep".into()),
            "kept",
        )?;
        check(is_char(&p("dev/zero"), 1, 5), "/dev/zero made")?;
        check(is_char(&p("dev/fuse"), 10, 229), "/dev/fuse made")?;
        let st = stat(p("dev/fuse").as_str()).unwrap();
        check(st.st_mode & 0o7777 == 0o600, "fuse mode")?;
        check(st.st_uid == 1000 && st.st_gid == 1001, "fuse owner")?;
        let fifo = stat(p("dev/sub/fifo").as_str()).map(|s| s.st_mode & SFlag::S_IFMT.bits());
        check(fifo == Ok(SFlag::S_IFIFO.bits()), "fifo made")?;
        check(
            std::fs::read_link(p("dev/ptmx")).ok() == Some("pts/ptmx".into()),
            "ptmx link",
        )?;
        Ok(())
    })
    .unwrap();
}

#[test]
fn errors_name_the_destination_and_call() {
    if !is_root() {
        return eprintln!("skipped: needs root");
    }
    let cases = [
        (
            json!({"destination": "/x", "type": "nosuchfs", "source": "none"}),
            "mount \"/x\" (type nosuchfs): No such device",
        ),
        (
            json!({"destination": "/d", "type": "bind", "source": "/", "options": ["idmap"]}),
            "mount \"/d\": option \"idmap\" (id-mapped mounts) is not supported",
        ),
        (
            json!({"destination": "/proc", "type": "proc", "source": "proc"}),
            "mount \"/proc\" (type proc): it must be mounted on ordinary directory (the target is a symlink or a file)",
        ),
        (
            json!({"destination": "/proc/foo", "type": "tmpfs", "source": "tmpfs"}),
            "cannot be mounted because it is inside /proc",
        ),
        (
            json!({"destination": "/b", "type": "bind", "source": "/nonexistent-berth"}),
            "mount \"/b\": stat bind source \"/nonexistent-berth\": No such file or directory",
        ),
    ];
    for (i, (m, want)) in cases.into_iter().enumerate() {
        let root = TempDir::rootfs(&format!("err{i}"));
        if i == 2 {
            std::fs::remove_dir(root.0.join("proc")).unwrap();
            std::os::unix::fs::symlink("/etc", root.0.join("proc")).unwrap();
        }
        let s = spec(json!({"ociVersion": "1.0.2", "root": {"path": root.0}, "mounts": [m]}));
        let rootfs = root.0.clone();
        let want = want.to_string();
        isolated(move || match prepare(&s, &rootfs) {
            Ok(()) => Err(format!("no error, want {want:?}")),
            Err(e) if e.to_string().contains(&want) => Ok(()),
            Err(e) => Err(format!("got {e:?}, want {want:?}")),
        })
        .unwrap();
    }
}
