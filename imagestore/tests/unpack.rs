//! Layer unpacking: entry types, metadata, whiteouts, compression, and crafted tars that try
//! to write outside the layer root. Runs as root (ownership, device nodes, trusted xattrs).

use std::fs;
use std::io::Write;
use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
use std::path::Path;

use berth_imagestore::unpack::{unpack_layer, UnpackError};
use berth_imagestore::Digest;

/// Builds tars entry by entry with raw headers, so names the `tar` Builder refuses
/// (`../x`, absolute paths) can be written too.
struct Tar {
    b: tar::Builder<Vec<u8>>,
}

impl Tar {
    fn new() -> Self {
        Tar {
            b: tar::Builder::new(Vec::new()),
        }
    }

    fn entry(
        &mut self,
        kind: tar::EntryType,
        name: &str,
        link: Option<&str>,
        mode: u32,
        data: &[u8],
    ) -> &mut Self {
        let mut h = tar::Header::new_ustar();
        h.set_entry_type(kind);
        let old = h.as_old_mut();
        old.name = [0; 100];
        old.name[..name.len()].copy_from_slice(name.as_bytes());
        if let Some(l) = link {
            old.linkname = [0; 100];
            old.linkname[..l.len()].copy_from_slice(l.as_bytes());
        }
        h.set_mode(mode);
        h.set_uid(0);
        h.set_gid(0);
        h.set_mtime(1_700_000_000);
        h.set_size(data.len() as u64);
        h.set_cksum();
        self.b.append(&h, data).unwrap();
        self
    }

    fn file(&mut self, name: &str, data: &str) -> &mut Self {
        self.entry(tar::EntryType::Regular, name, None, 0o644, data.as_bytes())
    }
    fn dir(&mut self, name: &str) -> &mut Self {
        self.entry(tar::EntryType::Directory, name, None, 0o755, b"")
    }
    fn symlink(&mut self, name: &str, target: &str) -> &mut Self {
        self.entry(tar::EntryType::Symlink, name, Some(target), 0o777, b"")
    }
    fn hardlink(&mut self, name: &str, target: &str) -> &mut Self {
        self.entry(tar::EntryType::Link, name, Some(target), 0o644, b"")
    }
    fn pax(&mut self, records: &[(&str, &[u8])]) -> &mut Self {
        let mut data = Vec::new();
        for (k, v) in records {
            let body_len = k.len() + v.len() + 3; // ' ' '=' '\n'
            let mut len = body_len + 1;
            while len != body_len + len.to_string().len() {
                len = body_len + len.to_string().len();
            }
            write!(data, "{len} {k}=").unwrap();
            data.extend_from_slice(v);
            data.push(b'\n');
        }
        self.entry(tar::EntryType::XHeader, "PaxHeaders/x", None, 0o644, &data)
    }
    fn finish(&mut self) -> Vec<u8> {
        let b = std::mem::replace(&mut self.b, tar::Builder::new(Vec::new()));
        b.into_inner().unwrap()
    }
}

struct Env {
    _tmp: tempfile::TempDir,
    root: std::path::PathBuf,
    outside: std::path::PathBuf,
}

/// A layer root and, beside it, an "outside" directory holding a secret that no layer may
/// read through a link or overwrite.
fn env() -> Env {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("root");
    let outside = tmp.path().join("outside");
    fs::create_dir(&root).unwrap();
    fs::create_dir(&outside).unwrap();
    fs::write(outside.join("secret"), "secret").unwrap();
    Env {
        _tmp: tmp,
        root,
        outside,
    }
}

impl Env {
    fn unpack(&self, tar: &[u8]) -> Result<berth_imagestore::unpack::UnpackSummary, UnpackError> {
        unpack_layer(tar, &self.root, None)
    }
    /// The outside directory holds exactly the secret, unchanged.
    fn assert_outside_untouched(&self) {
        let names: Vec<_> = fs::read_dir(&self.outside)
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        assert_eq!(
            names,
            vec!["secret".to_string()],
            "something appeared outside the root"
        );
        assert_eq!(
            fs::read_to_string(self.outside.join("secret")).unwrap(),
            "secret"
        );
        let parent = self.root.parent().unwrap();
        let mut top: Vec<_> = fs::read_dir(parent)
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        top.sort();
        assert_eq!(
            top,
            vec!["outside", "root"],
            "something appeared beside the root"
        );
    }
}

#[test]
fn entry_types_and_metadata() {
    let e = env();
    let mut t = Tar::new();
    t.dir("etc/")
        .entry(tar::EntryType::Directory, "tmp/", None, 0o1777, b"")
        .file("etc/hostname", "box\n")
        .entry(tar::EntryType::Regular, "bin/su", None, 0o4755, b"#!su")
        .symlink("bin/sh", "/bin/busybox")
        .file("bin/busybox", "BB")
        .hardlink("bin/ls", "bin/busybox")
        .entry(tar::EntryType::Fifo, "run/fifo", None, 0o600, b"");
    // A device node and a file with an owner and an xattr (PAX).
    let mut h = tar::Header::new_ustar();
    h.set_entry_type(tar::EntryType::Char);
    h.set_path("dev/null").unwrap();
    h.set_mode(0o666);
    h.set_device_major(1).unwrap();
    h.set_device_minor(3).unwrap();
    h.set_uid(0);
    h.set_gid(0);
    h.set_mtime(0);
    h.set_size(0);
    h.set_cksum();
    t.b.append(&h, &b""[..]).unwrap();
    t.pax(&[
        ("SCHILY.xattr.user.berth", b"yes"),
        ("SCHILY.xattr.trusted.overlay.opaque", b"y"),
    ]);
    let mut h = tar::Header::new_ustar();
    h.set_path("var/log/owned").unwrap();
    h.set_mode(0o640);
    h.set_uid(33);
    h.set_gid(4);
    h.set_mtime(1_600_000_000);
    h.set_size(2);
    h.set_cksum();
    t.b.append(&h, &b"ok"[..]).unwrap();
    let data = t.finish();
    let s = e.unpack(&data).unwrap();
    assert_eq!(s.diff_id, Digest::of(&data));

    let r = &e.root;
    assert_eq!(fs::read_to_string(r.join("etc/hostname")).unwrap(), "box\n");
    assert_eq!(
        fs::metadata(r.join("tmp")).unwrap().permissions().mode() & 0o7777,
        0o1777
    );
    assert_eq!(
        fs::metadata(r.join("bin/su")).unwrap().permissions().mode() & 0o7777,
        0o4755
    );
    assert_eq!(
        fs::read_link(r.join("bin/sh")).unwrap(),
        Path::new("/bin/busybox")
    );
    let bb = fs::metadata(r.join("bin/busybox")).unwrap();
    let ls = fs::metadata(r.join("bin/ls")).unwrap();
    assert_eq!((bb.ino(), bb.nlink()), (ls.ino(), 2));
    assert!(fs::symlink_metadata(r.join("run/fifo"))
        .unwrap()
        .file_type()
        .is_fifo());
    let null = fs::symlink_metadata(r.join("dev/null")).unwrap();
    assert!(null.file_type().is_char_device());
    assert_eq!(null.rdev(), libc::makedev(1, 3));
    let owned = fs::metadata(r.join("var/log/owned")).unwrap();
    assert_eq!(
        (owned.uid(), owned.gid(), owned.mode() & 0o7777),
        (33, 4, 0o640)
    );
    assert_eq!(owned.mtime(), 1_600_000_000);
    assert_eq!(fs::metadata(r.join("etc")).unwrap().mtime(), 1_700_000_000);
    assert_eq!(
        xattr(&r.join("var/log/owned"), "user.berth").as_deref(),
        Some(&b"yes"[..])
    );
    // trusted.overlay.* from a tar is dropped.
    assert_eq!(
        xattr(&r.join("var/log/owned"), "trusted.overlay.opaque"),
        None
    );
    // Implicit parents.
    assert_eq!(
        fs::metadata(r.join("var/log"))
            .unwrap()
            .permissions()
            .mode()
            & 0o7777,
        0o755
    );
    e.assert_outside_untouched();
}

fn xattr(p: &Path, name: &str) -> Option<Vec<u8>> {
    let mut buf = vec![0u8; 256];
    let c = std::ffi::CString::new(p.as_os_str().as_encoded_bytes()).unwrap();
    let n = std::ffi::CString::new(name).unwrap();
    // SAFETY: valid NUL-terminated strings and a buffer of the length passed.
    let r = unsafe { libc::lgetxattr(c.as_ptr(), n.as_ptr(), buf.as_mut_ptr().cast(), buf.len()) };
    (r >= 0).then(|| {
        buf.truncate(r as usize);
        buf
    })
}

#[test]
fn whiteouts_become_overlayfs_form() {
    let e = env();
    let mut t = Tar::new();
    t.dir("var/www/html/")
        .file("var/www/html/.wh.index.html", "")
        .dir("usr/share/")
        .file("usr/share/.wh.man", "")
        .dir("var/www/html/fixture/")
        .file("var/www/html/fixture/.wh..wh..opq", "")
        .file("var/www/html/fixture/upper.txt", "upper")
        .file(".wh..wh.plnk", "");
    e.unpack(&t.finish()).unwrap();
    for w in ["var/www/html/index.html", "usr/share/man"] {
        let m = fs::symlink_metadata(e.root.join(w)).unwrap();
        assert!(m.file_type().is_char_device(), "{w}");
        assert_eq!(m.rdev(), 0, "{w}");
    }
    assert_eq!(
        xattr(
            &e.root.join("var/www/html/fixture"),
            "trusted.overlay.opaque"
        )
        .as_deref(),
        Some(&b"y"[..])
    );
    assert!(!e.root.join("var/www/html/fixture/.wh..wh..opq").exists());
    assert!(fs::symlink_metadata(e.root.join(".wh..wh.plnk")).is_err());
    assert!(fs::symlink_metadata(e.root.join("var/www/html/.wh.index.html")).is_err());
}

#[test]
fn gzip_zstd_and_diff_id() {
    let mut t = Tar::new();
    t.file("a", "hello");
    let plain = t.finish();
    let diff_id = Digest::of(&plain);
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    gz.write_all(&plain).unwrap();
    let gz = gz.finish().unwrap();
    let zst = zstd::encode_all(&plain[..], 1).unwrap();
    for data in [&plain, &gz, &zst] {
        let e = env();
        let s = unpack_layer(&data[..], &e.root, Some(&diff_id)).unwrap();
        assert_eq!(s.diff_id, diff_id);
        assert_eq!(fs::read_to_string(e.root.join("a")).unwrap(), "hello");
    }
    let e = env();
    let wrong = Digest::of(b"other");
    let err = unpack_layer(&gz[..], &e.root, Some(&wrong)).unwrap_err();
    assert!(matches!(err, UnpackError::DiffIdMismatch { .. }), "{err}");
    // Truncated gzip is an error, not a silently short layer.
    let e = env();
    let err = unpack_layer(&gz[..gz.len() / 2], &e.root, None).unwrap_err();
    assert!(matches!(err, UnpackError::Corrupt(_)), "{err}");
}

#[test]
fn dotdot_is_rejected() {
    let e = env();
    let err = e
        .unpack(&Tar::new().file("../outside/secret", "pwned").finish())
        .unwrap_err();
    assert!(matches!(err, UnpackError::Unsafe { .. }), "{err}");
    assert!(err.to_string().contains("../outside/secret"), "{err}");
    let err = e
        .unpack(&Tar::new().file("a/../../outside/new", "pwned").finish())
        .unwrap_err();
    assert!(matches!(err, UnpackError::Unsafe { .. }), "{err}");
    e.assert_outside_untouched();
}

#[test]
fn absolute_paths_stay_inside() {
    let e = env();
    let abs = format!("{}/secret", e.outside.display());
    e.unpack(&Tar::new().file(&abs, "pwned").file("/etc/x", "x").finish())
        .unwrap();
    assert_eq!(
        fs::read_to_string(e.root.join(abs.trim_start_matches('/'))).unwrap(),
        "pwned"
    );
    assert_eq!(fs::read_to_string(e.root.join("etc/x")).unwrap(), "x");
    e.assert_outside_untouched();
}

#[test]
fn symlink_parent_is_resolved_inside_the_root() {
    for target in ["/", "../../..", "OUTSIDE", "../outside"] {
        let e = env();
        let target = target.replace("OUTSIDE", &e.outside.display().to_string());
        let tar = Tar::new()
            .symlink("escape", &target)
            .file("escape/pwned", "pwned")
            .file("escape/secret", "overwritten")
            .dir("escape/newdir/")
            .file("escape/newdir/deep", "deep")
            .finish();
        e.unpack(&tar).unwrap();
        e.assert_outside_untouched();
        // Whatever the link pointed at, the writes went to the equivalent place in the root.
        let landed: Vec<_> = walk(&e.root)
            .into_iter()
            .filter(|p| p.ends_with("pwned"))
            .collect();
        assert_eq!(landed.len(), 1, "target {target}: {landed:?}");
        assert!(landed[0].starts_with(&e.root));
    }
}

#[test]
fn symlink_chains_and_replacement() {
    let e = env();
    let out = e.outside.display().to_string();
    let tar = Tar::new()
        // a -> b -> outside, then write through a
        .symlink("b", &out)
        .symlink("a", "b")
        .file("a/x", "x")
        // a symlink to the outside secret, then a regular file of the same name
        .symlink("secret", &format!("{out}/secret"))
        .file("secret", "replaced")
        // a directory entry over a symlink to outside
        .symlink("d", &out)
        .dir("d/")
        .file("d/y", "y")
        .finish();
    e.unpack(&tar).unwrap();
    e.assert_outside_untouched();
    assert_eq!(
        fs::read_to_string(e.root.join("secret")).unwrap(),
        "replaced"
    );
    assert!(fs::symlink_metadata(e.root.join("d")).unwrap().is_dir());
    assert_eq!(fs::read_to_string(e.root.join("d/y")).unwrap(), "y");
}

#[test]
fn hard_links_cannot_reach_outside() {
    let e = env();
    // ../ is rejected outright.
    let err = e
        .unpack(&Tar::new().hardlink("stolen", "../outside/secret").finish())
        .unwrap_err();
    assert!(matches!(err, UnpackError::Unsafe { .. }), "{err}");
    // An absolute target is looked up inside the root, where it does not exist.
    let e = env();
    let abs = format!("{}/secret", e.outside.display());
    let err = e
        .unpack(&Tar::new().hardlink("stolen", &abs).finish())
        .unwrap_err();
    assert!(err.to_string().contains("not found in this layer"), "{err}");
    // Through a planted symlink: resolved inside the root, still not the host file.
    let e = env();
    let out = e.outside.display().to_string();
    let err = e
        .unpack(
            &Tar::new()
                .symlink("o", &out)
                .hardlink("stolen", "o/secret")
                .finish(),
        )
        .unwrap_err();
    assert!(err.to_string().contains("not found in this layer"), "{err}");
    assert!(fs::symlink_metadata(e.root.join("stolen")).is_err());
    assert_eq!(fs::metadata(e.outside.join("secret")).unwrap().nlink(), 1);
    e.assert_outside_untouched();
}

#[test]
fn file_under_a_regular_file_is_rejected() {
    let e = env();
    let err = e
        .unpack(&Tar::new().file("f", "x").file("f/g", "y").finish())
        .unwrap_err();
    assert!(matches!(err, UnpackError::Unsafe { .. }), "{err}");
}

fn walk(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for e in fs::read_dir(dir).unwrap() {
        let e = e.unwrap();
        let p = e.path();
        if e.file_type().unwrap().is_dir() {
            out.extend(walk(&p));
        }
        out.push(p);
    }
    out
}
