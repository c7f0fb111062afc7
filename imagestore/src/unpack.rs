//! Layer unpacking: applies one layer tarball to an empty directory, converting whiteouts to
//! the overlayfs form, without ever touching anything outside that directory.
//!
//! Each layer becomes its own snapshot directory, used later as one overlayfs `lowerdir`, so
//! whiteouts are *recorded*, not applied:
//!
//! | tar entry                  | written as                                              |
//! | -------------------------- | ------------------------------------------------------- |
//! | `dir/.wh.name`             | `dir/name`: character device 0:0 (overlayfs whiteout)   |
//! | `dir/.wh..wh..opq`         | xattr `trusted.overlay.opaque=y` on `dir`               |
//! | other `.wh..wh.*` (aufs)   | ignored                                                 |
//!
//! # Staying inside the root
//!
//! Paths are cleaned lexically first: a leading `/` is dropped, `.` and empty components are
//! skipped, and any `..` component rejects the layer (no legitimate image needs one). The
//! parent directory of every entry is then opened with `openat2(root_fd, parent,
//! RESOLVE_IN_ROOT | RESOLVE_NO_MAGICLINKS)`, so a symlink met on the way (including one this
//! same layer planted earlier, absolute or full of `..`) is resolved as if the root were `/`.
//! The entry itself is created with a `*at()` call relative to that parent fd, on a single
//! name, with `O_NOFOLLOW`/`O_EXCL`, after removing whatever was at that name (without
//! following it). Hard-link targets are resolved the same way and must exist in this layer.
//! Symlink *targets* are stored verbatim: they are only ever followed inside the container.
//!
//! xattrs come from PAX `SCHILY.xattr.*` records and are set on files and directories;
//! `trusted.overlay.*` from a tar is dropped, since it would steer overlayfs itself.
//! Parent directories missing from the tar are created `0755 root:root`.

use std::collections::HashMap;
use std::ffi::OsStr;
use std::io::{self, BufRead, BufReader, Read, Write};
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;
use std::rc::Rc;

use rustix::fs::{
    self as rfs, AtFlags, FileType, Mode, OFlags, ResolveFlags, Timespec, Timestamps,
};
use rustix::io::Errno;
use sha2::{Digest as _, Sha256};

use crate::digest::Digest;

const OPAQUE_MARKER: &[u8] = b".wh..wh..opq";
const WHITEOUT_PREFIX: &[u8] = b".wh.";
const OPAQUE_XATTR: &str = "trusted.overlay.opaque";
const COPY_BUF: usize = 256 * 1024;

/// Why a layer could not be unpacked. `entry` is the member name as written in the tar.
#[derive(Debug, thiserror::Error)]
pub enum UnpackError {
    #[error("layer entry {entry:?}: {reason}")]
    Unsafe { entry: String, reason: &'static str },
    #[error("layer entry {entry:?}: unsupported tar entry type {kind}")]
    Unsupported { entry: String, kind: String },
    #[error("layer entry {entry:?}: {op}: {source}")]
    Entry {
        entry: String,
        op: &'static str,
        source: io::Error,
    },
    #[error("layer is corrupt: {0}")]
    Corrupt(io::Error),
    #[error("layer diff ID mismatch: expected {expected}, got {actual}")]
    DiffIdMismatch { expected: Digest, actual: Digest },
    #[error("open layer root {path}: {source}")]
    Root { path: String, source: io::Error },
}

/// What unpacking found.
#[derive(Debug, Clone)]
pub struct UnpackSummary {
    /// sha256 of the uncompressed tar stream (the layer's diff ID).
    pub diff_id: Digest,
    /// Tar entries processed.
    pub entries: u64,
    /// Bytes of regular-file content written.
    pub bytes: u64,
}

/// Detected compression of a layer stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Compression {
    None,
    Gzip,
    Zstd,
}

/// Detects compression from the first bytes of a stream.
pub fn sniff(head: &[u8]) -> Compression {
    if head.starts_with(&[0x1f, 0x8b]) {
        Compression::Gzip
    } else if head.starts_with(&[0x28, 0xb5, 0x2f, 0xfd]) {
        Compression::Zstd
    } else {
        Compression::None
    }
}

/// Unpacks a (possibly gzip- or zstd-compressed) layer tar from `reader` into `root`, which
/// must be an existing directory, normally empty. Compression is detected from magic bytes,
/// which is authoritative (media types are sometimes wrong). If `expected_diff_id` is given,
/// the sha256 of the uncompressed stream must match it; on any error the caller should
/// discard `root`, which may hold part of the layer.
pub fn unpack_layer<R: Read>(
    reader: R,
    root: &Path,
    expected_diff_id: Option<&Digest>,
) -> Result<UnpackSummary, UnpackError> {
    let mut buffered = BufReader::with_capacity(COPY_BUF, reader);
    let head = buffered.fill_buf().map_err(UnpackError::Corrupt)?;
    let decoded: Box<dyn Read> = match sniff(head) {
        Compression::Gzip => Box::new(flate2::bufread::MultiGzDecoder::new(buffered)),
        Compression::Zstd => Box::new(
            zstd::stream::read::Decoder::with_buffer(buffered).map_err(UnpackError::Corrupt)?,
        ),
        Compression::None => Box::new(buffered),
    };
    let hashing = HashingReader {
        inner: decoded,
        hasher: Sha256::new(),
    };
    let root_fd = rfs::open(
        root,
        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
        Mode::empty(),
    )
    .map_err(|e| UnpackError::Root {
        path: root.display().to_string(),
        source: e.into(),
    })?;
    let mut u = Unpacker {
        root: Rc::new(root_fd),
        dir_cache: HashMap::new(),
        dir_times: Vec::new(),
        buf: vec![0; COPY_BUF],
        summary_entries: 0,
        summary_bytes: 0,
    };
    let mut archive = tar::Archive::new(hashing);
    for entry in archive.entries().map_err(UnpackError::Corrupt)? {
        let entry = entry.map_err(UnpackError::Corrupt)?;
        u.apply(entry)?;
    }
    u.finish_dir_times()?;
    // Hash the end-of-archive blocks and any padding too: the diff ID covers the whole stream.
    let mut hashing = archive.into_inner();
    io::copy(&mut hashing, &mut io::sink()).map_err(UnpackError::Corrupt)?;
    let diff_id = Digest::from_hasher(hashing.hasher);
    if let Some(expected) = expected_diff_id {
        if &diff_id != expected {
            return Err(UnpackError::DiffIdMismatch {
                expected: expected.clone(),
                actual: diff_id,
            });
        }
    }
    Ok(UnpackSummary {
        diff_id,
        entries: u.summary_entries,
        bytes: u.summary_bytes,
    })
}

struct HashingReader<R> {
    inner: R,
    hasher: Sha256,
}

impl<R: Read> Read for HashingReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.hasher.update(&buf[..n]);
        Ok(n)
    }
}

/// Cleans a member name into components: drops a leading `/`, `.` and empty components;
/// refuses `..`.
pub(crate) fn clean_path(raw: &[u8]) -> Result<Vec<&[u8]>, &'static str> {
    let mut out = Vec::new();
    for c in raw.split(|&b| b == b'/') {
        match c {
            b"" | b"." => {}
            b".." => return Err("path contains '..'"),
            c => out.push(c),
        }
    }
    Ok(out)
}

fn join(comps: &[&[u8]]) -> Vec<u8> {
    comps.join(&b'/')
}

struct Meta {
    mode: u32,
    uid: u32,
    gid: u32,
    mtime: i64,
    xattrs: Vec<(String, Vec<u8>)>,
}

struct Unpacker {
    root: Rc<OwnedFd>,
    /// Open parent directories by cleaned path; cleared whenever anything is removed.
    dir_cache: HashMap<Vec<u8>, Rc<OwnedFd>>,
    /// Directory mtimes, applied at the end (creating children changes them).
    dir_times: Vec<(Vec<u8>, i64)>,
    buf: Vec<u8>,
    summary_entries: u64,
    summary_bytes: u64,
}

fn resolve_flags() -> ResolveFlags {
    ResolveFlags::IN_ROOT | ResolveFlags::NO_MAGICLINKS
}

fn dir_flags() -> OFlags {
    OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC
}

impl Unpacker {
    fn apply<R: Read>(&mut self, mut entry: tar::Entry<'_, R>) -> Result<(), UnpackError> {
        let raw_name = entry.path_bytes().into_owned();
        let name = String::from_utf8_lossy(&raw_name).into_owned();
        let unsafe_err = |reason| UnpackError::Unsafe {
            entry: name.clone(),
            reason,
        };
        let kind = entry.header().entry_type();
        if kind.is_pax_global_extensions() {
            return Ok(());
        }
        self.summary_entries += 1;
        let comps = clean_path(&raw_name).map_err(unsafe_err)?;
        let Some((&base, parent)) = comps.split_last() else {
            return Ok(()); // the root itself: keep the snapshot root as created
        };
        let e = |op: &'static str| {
            let entry = name.clone();
            move |source: io::Error| UnpackError::Entry { entry, op, source }
        };
        let meta = self.meta(&mut entry).map_err(e("read header"))?;
        let parent_fd = self.ensure_dir(parent).map_err(|err| match err {
            DirError::NotDir => unsafe_err("a parent path component is not a directory"),
            DirError::Io(source) => UnpackError::Entry {
                entry: name.clone(),
                op: "open parent",
                source,
            },
        })?;
        let pfd = parent_fd.as_fd();

        // Whiteouts.
        if base == OPAQUE_MARKER {
            rfs::fsetxattr(pfd, OPAQUE_XATTR, b"y", rfs::XattrFlags::empty())
                .map_err(|x| e("set opaque xattr")(x.into()))?;
            return Ok(());
        }
        if let Some(hidden) = base.strip_prefix(WHITEOUT_PREFIX) {
            if hidden.starts_with(WHITEOUT_PREFIX) || hidden.is_empty() {
                return Ok(()); // aufs bookkeeping (.wh..wh.plnk etc.)
            }
            self.remove_existing(pfd, hidden, false)
                .map_err(e("remove"))?;
            rfs::mknodat(
                pfd,
                OsStr::from_bytes(hidden),
                FileType::CharacterDevice,
                Mode::empty(),
                rfs::makedev(0, 0),
            )
            .map_err(|x| e("create whiteout")(x.into()))?;
            return Ok(());
        }

        let base_os = OsStr::from_bytes(base);
        use tar::EntryType as T;
        match kind {
            T::Directory => {
                self.remove_existing(pfd, base, true).map_err(e("remove"))?;
                match rfs::mkdirat(pfd, base_os, Mode::from_raw_mode(0o700)) {
                    Ok(()) | Err(Errno::EXIST) => {}
                    Err(x) => return Err(e("mkdir")(x.into())),
                }
                let fd = rfs::openat(pfd, base_os, dir_flags() | OFlags::NOFOLLOW, Mode::empty())
                    .map_err(|x| e("open dir")(x.into()))?;
                self.set_fd_meta(&fd, &meta).map_err(e("set metadata"))?;
                self.dir_times.push((join(&comps), meta.mtime));
            }
            T::Regular | T::Continuous => {
                self.remove_existing(pfd, base, false)
                    .map_err(e("remove"))?;
                let fd = rfs::openat(
                    pfd,
                    base_os,
                    OFlags::WRONLY
                        | OFlags::CREATE
                        | OFlags::EXCL
                        | OFlags::NOFOLLOW
                        | OFlags::CLOEXEC,
                    Mode::from_raw_mode(0o600),
                )
                .map_err(|x| e("create")(x.into()))?;
                let mut file = std::fs::File::from(fd);
                loop {
                    let n = entry.read(&mut self.buf).map_err(UnpackError::Corrupt)?;
                    if n == 0 {
                        break;
                    }
                    file.write_all(&self.buf[..n]).map_err(e("write"))?;
                    self.summary_bytes += n as u64;
                }
                self.set_fd_meta(&file, &meta).map_err(e("set metadata"))?;
                rfs::futimens(&file, &times(meta.mtime)).map_err(|x| e("set mtime")(x.into()))?;
            }
            T::Symlink => {
                let target = entry
                    .link_name_bytes()
                    .ok_or_else(|| unsafe_err("symlink without target"))?
                    .into_owned();
                self.remove_existing(pfd, base, false)
                    .map_err(e("remove"))?;
                rfs::symlinkat(OsStr::from_bytes(&target), pfd, base_os)
                    .map_err(|x| e("symlink")(x.into()))?;
                self.set_at_meta(pfd, base, &meta, false)
                    .map_err(e("set metadata"))?;
            }
            T::Link => {
                let target = entry
                    .link_name_bytes()
                    .ok_or_else(|| unsafe_err("hard link without target"))?
                    .into_owned();
                let tcomps = clean_path(&target)
                    .map_err(|_| unsafe_err("hard link target contains '..'"))?;
                let Some((&tbase, tparent)) = tcomps.split_last() else {
                    return Err(unsafe_err("hard link to the layer root"));
                };
                if tcomps == comps {
                    return Ok(()); // link to itself: nothing to do
                }
                let tparent_fd = match self.open_dir(tparent) {
                    Ok(fd) => fd,
                    Err(_) => return Err(unsafe_err("hard link target not found in this layer")),
                };
                self.remove_existing(pfd, base, false)
                    .map_err(e("remove"))?;
                match rfs::linkat(
                    tparent_fd.as_fd(),
                    OsStr::from_bytes(tbase),
                    pfd,
                    base_os,
                    AtFlags::empty(),
                ) {
                    Ok(()) => {}
                    Err(Errno::NOENT) => {
                        return Err(unsafe_err("hard link target not found in this layer"))
                    }
                    Err(x) => return Err(e("link")(x.into())),
                }
            }
            T::Char | T::Block | T::Fifo => {
                let ft = match kind {
                    T::Char => FileType::CharacterDevice,
                    T::Block => FileType::BlockDevice,
                    _ => FileType::Fifo,
                };
                let h = entry.header();
                let major = h.device_major().ok().flatten().unwrap_or(0);
                let minor = h.device_minor().ok().flatten().unwrap_or(0);
                self.remove_existing(pfd, base, false)
                    .map_err(e("remove"))?;
                rfs::mknodat(pfd, base_os, ft, Mode::empty(), rfs::makedev(major, minor))
                    .map_err(|x| e("mknod")(x.into()))?;
                self.set_at_meta(pfd, base, &meta, true)
                    .map_err(e("set metadata"))?;
            }
            other => {
                return Err(UnpackError::Unsupported {
                    entry: name,
                    kind: format!("{other:?}"),
                })
            }
        }
        Ok(())
    }

    fn meta<R: Read>(&self, entry: &mut tar::Entry<'_, R>) -> io::Result<Meta> {
        let h = entry.header();
        let mut m = Meta {
            mode: h.mode()? & 0o7777,
            uid: h.uid()? as u32,
            gid: h.gid()? as u32,
            mtime: h.mtime()? as i64,
            xattrs: Vec::new(),
        };
        if let Some(pax) = entry.pax_extensions()? {
            for ext in pax {
                let ext = ext?;
                let Ok(key) = ext.key() else { continue };
                let val = ext.value_bytes();
                let num = || {
                    std::str::from_utf8(val)
                        .ok()
                        .and_then(|s| s.split('.').next()?.parse::<i64>().ok())
                };
                match key {
                    "uid" => m.uid = num().map_or(m.uid, |v| v as u32),
                    "gid" => m.gid = num().map_or(m.gid, |v| v as u32),
                    "mtime" => m.mtime = num().unwrap_or(m.mtime),
                    k => {
                        if let Some(x) = k.strip_prefix("SCHILY.xattr.") {
                            if !x.starts_with("trusted.overlay.") {
                                m.xattrs.push((x.to_string(), val.to_vec()));
                            }
                        }
                    }
                }
            }
        }
        Ok(m)
    }

    /// Owner, mode and xattrs on an open file or directory (chown first: it clears setuid
    /// bits and file capabilities).
    fn set_fd_meta(&self, fd: &impl AsFd, m: &Meta) -> io::Result<()> {
        rfs::fchown(
            fd,
            Some(rfs::Uid::from_raw(m.uid)),
            Some(rfs::Gid::from_raw(m.gid)),
        )?;
        rfs::fchmod(fd, Mode::from_raw_mode(m.mode))?;
        for (k, v) in &m.xattrs {
            match rfs::fsetxattr(fd, k.as_str(), v, rfs::XattrFlags::empty()) {
                Ok(()) => {}
                Err(Errno::OPNOTSUPP | Errno::PERM) => {
                    tracing::warn!(xattr = %k, "xattr not supported here; skipped")
                }
                Err(e) => return Err(e.into()),
            }
        }
        Ok(())
    }

    /// Owner (and mode, for nodes that cannot be opened) and mtime on a name, not following it.
    fn set_at_meta(&self, dir: impl AsFd, name: &[u8], m: &Meta, chmod: bool) -> io::Result<()> {
        let name = OsStr::from_bytes(name);
        let dir = dir.as_fd();
        rfs::chownat(
            dir,
            name,
            Some(rfs::Uid::from_raw(m.uid)),
            Some(rfs::Gid::from_raw(m.gid)),
            AtFlags::SYMLINK_NOFOLLOW,
        )?;
        if chmod {
            rfs::chmodat(dir, name, Mode::from_raw_mode(m.mode), AtFlags::empty())?;
        }
        rfs::utimensat(dir, name, &times(m.mtime), AtFlags::SYMLINK_NOFOLLOW)?;
        Ok(())
    }

    /// Removes whatever is at `dir/name`, never following it. An existing directory is kept
    /// when `keep_dir` (a directory entry over a directory only updates its metadata).
    fn remove_existing(&mut self, dir: impl AsFd, name: &[u8], keep_dir: bool) -> io::Result<()> {
        let dir = dir.as_fd();
        let name = OsStr::from_bytes(name);
        let st = match rfs::statat(dir, name, AtFlags::SYMLINK_NOFOLLOW) {
            Ok(st) => st,
            Err(Errno::NOENT) => return Ok(()),
            Err(e) => return Err(e.into()),
        };
        let is_dir = FileType::from_raw_mode(st.st_mode) == FileType::Directory;
        if is_dir && keep_dir {
            return Ok(());
        }
        self.dir_cache.clear();
        if is_dir {
            remove_all_at(dir, name)
        } else {
            rfs::unlinkat(dir, name, AtFlags::empty()).map_err(Into::into)
        }
    }

    /// Opens an existing directory inside the root, resolving symlinks within it.
    fn open_dir(&mut self, comps: &[&[u8]]) -> io::Result<Rc<OwnedFd>> {
        if comps.is_empty() {
            return Ok(self.root.clone());
        }
        let key = join(comps);
        if let Some(fd) = self.dir_cache.get(&key) {
            return Ok(fd.clone());
        }
        let fd = rfs::openat2(
            &*self.root,
            OsStr::from_bytes(&key),
            dir_flags(),
            Mode::empty(),
            resolve_flags(),
        )?;
        let fd = Rc::new(fd);
        if self.dir_cache.len() > 256 {
            self.dir_cache.clear();
        }
        self.dir_cache.insert(key, fd.clone());
        Ok(fd)
    }

    /// Opens a directory inside the root, creating missing components (0755 root:root).
    /// A component that is a symlink to a missing directory is followed (inside the root)
    /// and the directories it names are created, as containerd and docker do.
    fn ensure_dir(&mut self, comps: &[&[u8]]) -> Result<Rc<OwnedFd>, DirError> {
        let owned: Vec<Vec<u8>> = comps.iter().map(|c| c.to_vec()).collect();
        self.ensure_dir_depth(owned, 0)
    }

    fn ensure_dir_depth(
        &mut self,
        comps: Vec<Vec<u8>>,
        depth: u32,
    ) -> Result<Rc<OwnedFd>, DirError> {
        let refs: Vec<&[u8]> = comps.iter().map(|c| c.as_slice()).collect();
        match self.open_dir(&refs) {
            Ok(fd) => return Ok(fd),
            Err(e) if e.raw_os_error() == Some(libc::ENOENT) => {}
            Err(e) if e.raw_os_error() == Some(libc::ENOTDIR) => return Err(DirError::NotDir),
            Err(e) => return Err(DirError::Io(e)),
        }
        if depth > 40 {
            return Err(DirError::Io(io::Error::from_raw_os_error(libc::ELOOP)));
        }
        let mut parent = self.root.clone();
        for i in 0..refs.len() {
            match self.open_dir(&refs[..=i]) {
                Ok(fd) => {
                    parent = fd;
                    continue;
                }
                Err(e) if e.raw_os_error() == Some(libc::ENOENT) => {}
                Err(e) if e.raw_os_error() == Some(libc::ENOTDIR) => return Err(DirError::NotDir),
                Err(e) => return Err(DirError::Io(e)),
            }
            let name = OsStr::from_bytes(refs[i]);
            match rfs::mkdirat(&*parent, name, Mode::from_raw_mode(0o755)) {
                Ok(()) => {
                    parent = self.open_dir(&refs[..=i]).map_err(DirError::Io)?;
                }
                Err(Errno::EXIST) => {
                    // A dangling symlink: rewrite the path through its target and start over.
                    let target = rfs::readlinkat(&*parent, name, Vec::new())
                        .map_err(|e| DirError::Io(e.into()))?;
                    let target = target.as_bytes();
                    let mut next: Vec<Vec<u8>> = if target.starts_with(b"/") {
                        Vec::new()
                    } else {
                        comps[..i].to_vec()
                    };
                    for c in target.split(|&b| b == b'/') {
                        match c {
                            b"" | b"." => {}
                            b".." => {
                                next.pop();
                            }
                            c => next.push(c.to_vec()),
                        }
                    }
                    next.extend(comps[i + 1..].iter().cloned());
                    return self.ensure_dir_depth(next, depth + 1);
                }
                Err(e) => return Err(DirError::Io(e.into())),
            }
        }
        Ok(parent)
    }

    fn finish_dir_times(&mut self) -> Result<(), UnpackError> {
        self.dir_cache.clear();
        for (path, mtime) in std::mem::take(&mut self.dir_times).into_iter().rev() {
            let name = String::from_utf8_lossy(&path).into_owned();
            let r = rfs::openat2(
                &*self.root,
                OsStr::from_bytes(&path),
                dir_flags(),
                Mode::empty(),
                resolve_flags(),
            )
            .and_then(|fd| rfs::futimens(&fd, &times(mtime)));
            match r {
                Ok(()) => {}
                // Removed or replaced by a later entry: nothing to fix.
                Err(Errno::NOENT | Errno::NOTDIR) => {}
                Err(e) => {
                    return Err(UnpackError::Entry {
                        entry: name,
                        op: "set directory mtime",
                        source: e.into(),
                    })
                }
            }
        }
        Ok(())
    }
}

enum DirError {
    NotDir,
    Io(io::Error),
}

fn times(mtime: i64) -> Timestamps {
    let t = Timespec {
        tv_sec: mtime,
        tv_nsec: 0,
    };
    Timestamps {
        last_access: t,
        last_modification: t,
    }
}

/// Removes `dir/name` and everything under it, never following symlinks.
pub(crate) fn remove_all_at(dir: impl AsFd, name: &OsStr) -> io::Result<()> {
    let dir = dir.as_fd();
    let fd = match rfs::openat(dir, name, dir_flags() | OFlags::NOFOLLOW, Mode::empty()) {
        Ok(fd) => fd,
        Err(Errno::NOTDIR | Errno::LOOP) => {
            return rfs::unlinkat(dir, name, AtFlags::empty()).map_err(Into::into)
        }
        Err(Errno::NOENT) => return Ok(()),
        Err(e) => return Err(e.into()),
    };
    let mut children = Vec::new();
    for ent in rfs::Dir::read_from(&fd)? {
        let ent = ent?;
        let n = ent.file_name().to_bytes();
        if n == b"." || n == b".." {
            continue;
        }
        children.push((n.to_vec(), ent.file_type() == FileType::Directory));
    }
    for (child, is_dir) in children {
        let child = OsStr::from_bytes(&child);
        if is_dir {
            remove_all_at(&fd, child)?;
        } else {
            match rfs::unlinkat(&fd, child, AtFlags::empty()) {
                Ok(()) | Err(Errno::NOENT) => {}
                Err(Errno::ISDIR) => remove_all_at(&fd, child)?,
                Err(e) => return Err(e.into()),
            }
        }
    }
    match rfs::unlinkat(dir, name, AtFlags::REMOVEDIR) {
        Ok(()) | Err(Errno::NOENT) => Ok(()),
        Err(e) => Err(e.into()),
    }
}

/// Removes a directory tree at `path` without following symlinks inside it.
pub fn remove_tree(path: &Path) -> io::Result<()> {
    let parent = path.parent().unwrap_or(Path::new("/"));
    let Some(name) = path.file_name() else {
        return Err(io::Error::new(io::ErrorKind::InvalidInput, "no file name"));
    };
    let pfd = match rfs::open(parent, dir_flags(), Mode::empty()) {
        Ok(fd) => fd,
        Err(Errno::NOENT) => return Ok(()),
        Err(e) => return Err(e.into()),
    };
    remove_all_at(&pfd, name)
}
