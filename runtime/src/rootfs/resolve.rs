//! Resolution of in-root paths: `/a/b` looked up as if the rootfs were `/`.
//!
//! The kernel does it with `openat2(RESOLVE_IN_ROOT | RESOLVE_NO_MAGICLINKS)`: `..` stops at
//! the root and absolute symlinks restart from it. Without openat2 (ENOSYS, kernels before
//! 5.6) `walk` does the same one component at a time with `O_NOFOLLOW`, reading each symlink
//! and following it itself. `walk` is also how missing targets are created: it reports the
//! deepest directory that exists (dangling symlinks followed, e.g. `/var/run -> /run` with no
//! `/run` yet) and the components to create under it.

use nix::errno::Errno;
use nix::fcntl::{openat, openat2, readlinkat, OFlag, OpenHow, ResolveFlag};
use nix::sys::stat::{fstat, mkdirat, Mode, SFlag};
use std::collections::VecDeque;
use std::ffi::{OsStr, OsString};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::path::{Component, Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};

static NO_OPENAT2: AtomicBool = AtomicBool::new(false);
const MAX_SYMLINKS: u32 = 40;

/// What `ensure` creates when the target is missing.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(crate) enum Kind {
    Dir,
    /// An empty regular file with this mode (before umask).
    File(u32),
}

/// The components of `path` with `.` dropped and `..` applied lexically (`/..` is `/`), as
/// runc's `filepath.Join(rootfs, dest)` does.
pub(crate) fn clean(path: &Path) -> Vec<OsString> {
    let mut out: Vec<OsString> = Vec::new();
    for c in path.components() {
        match c {
            Component::Normal(n) => out.push(n.to_owned()),
            Component::ParentDir => {
                out.pop();
            }
            _ => {}
        }
    }
    out
}

/// `/` followed by the cleaned components: the canonical spelling of an in-root path.
pub(crate) fn clean_path(path: &Path) -> PathBuf {
    let mut p = PathBuf::from("/");
    p.extend(clean(path));
    p
}

fn rel(comps: &[OsString]) -> PathBuf {
    if comps.is_empty() {
        return PathBuf::from(".");
    }
    comps.iter().collect()
}

/// Opens the in-root path `path` as `O_PATH`, following symlinks inside `root`.
pub(crate) fn open_in_root(root: BorrowedFd<'_>, path: &Path) -> nix::Result<OwnedFd> {
    let comps = clean(path);
    if !NO_OPENAT2.load(Ordering::Relaxed) {
        let how = OpenHow::new()
            .flags(OFlag::O_PATH | OFlag::O_CLOEXEC)
            .resolve(ResolveFlag::RESOLVE_IN_ROOT | ResolveFlag::RESOLVE_NO_MAGICLINKS);
        let p = rel(&comps);
        let mut tries = 0;
        loop {
            match openat2(root, &p, how) {
                // A rename or mount elsewhere raced the lookup: try again.
                Err(Errno::EAGAIN) if tries < 32 => tries += 1,
                Err(Errno::ENOSYS) => {
                    NO_OPENAT2.store(true, Ordering::Relaxed);
                    break;
                }
                r => return r,
            }
        }
    }
    let (fd, rest) = walk(root, &comps)?;
    if rest.is_empty() {
        Ok(fd)
    } else {
        Err(Errno::ENOENT)
    }
}

/// Opens the in-root path `path`, creating what is missing: directories along the way and, at
/// the end, a directory or an empty file according to `kind`. Returns an `O_PATH` fd. An
/// existing target of the other kind is returned as it is (the mount will then fail).
pub(crate) fn ensure(root: BorrowedFd<'_>, path: &Path, kind: Kind) -> nix::Result<OwnedFd> {
    match open_in_root(root, path) {
        Err(Errno::ENOENT) => {}
        r => return r,
    }
    let (mut fd, rest) = walk(root, &clean(path))?;
    let rest = clean_rest(rest)?;
    let n = rest.len();
    for (i, name) in rest.iter().enumerate() {
        let name = name.as_os_str();
        match kind {
            Kind::File(mode) if i + 1 == n => {
                let flags = OFlag::O_CREAT | OFlag::O_WRONLY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC;
                drop(openat(&fd, name, flags, Mode::from_bits_truncate(mode))?);
                fd = openat(
                    &fd,
                    name,
                    OFlag::O_PATH | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
                    Mode::empty(),
                )?;
            }
            _ => {
                match mkdirat(&fd, name, Mode::from_bits_truncate(0o755)) {
                    Ok(()) | Err(Errno::EEXIST) => {}
                    Err(e) => return Err(e),
                }
                let flags =
                    OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC;
                fd = openat(&fd, name, flags, Mode::empty())?;
            }
        }
    }
    Ok(fd)
}

/// Opens (creating it if needed) the parent directory of the in-root path `path` and returns
/// it with the last component, for the `*at` calls (mknodat, symlinkat, fstatat).
pub(crate) fn ensure_parent(root: BorrowedFd<'_>, path: &Path) -> nix::Result<(OwnedFd, OsString)> {
    let mut comps = clean(path);
    let name = comps.pop().ok_or(Errno::EINVAL)?;
    let parent = ensure(root, &rel(&comps), Kind::Dir)?;
    Ok((parent, name))
}

/// The missing components returned by `walk`, with `..` (which can come from a dangling
/// symlink's target) applied lexically: below the first missing component everything is a
/// directory we create, so that is exact. A `..` above it is refused.
fn clean_rest(rest: Vec<OsString>) -> nix::Result<Vec<OsString>> {
    let mut out = Vec::new();
    for c in rest {
        match c.to_str() {
            Some(".") => {}
            Some("..") => {
                out.pop().ok_or(Errno::EXDEV)?;
            }
            _ => out.push(c),
        }
    }
    Ok(out)
}

/// Resolves `comps` from `root` without leaving it: `..` stops at `root`, symlinks are read
/// and followed relative to `root` (absolute ones) or to their directory. Returns the deepest
/// object reached and the components left when one is missing (the first of them is the
/// missing one; empty when the whole path exists).
fn walk(root: BorrowedFd<'_>, comps: &[OsString]) -> nix::Result<(OwnedFd, Vec<OsString>)> {
    let mut dirs: Vec<OwnedFd> = vec![root.try_clone_to_owned().map_err(io_errno)?];
    let mut todo: VecDeque<OsString> = comps.iter().cloned().collect();
    let mut links = 0;
    while let Some(name) = todo.pop_front() {
        if name == ".." {
            if dirs.len() > 1 {
                dirs.pop();
            }
            continue;
        }
        if name == "." || name.is_empty() {
            continue;
        }
        let cur = dirs.last().expect("never empty").as_fd();
        let flags = OFlag::O_PATH | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC;
        let fd = match openat(cur, name.as_os_str(), flags, Mode::empty()) {
            Ok(fd) => fd,
            Err(Errno::ENOENT) => {
                let mut rest = vec![name];
                rest.extend(todo);
                return Ok((dirs.pop().expect("never empty"), rest));
            }
            Err(e) => return Err(e),
        };
        let st = fstat(&fd)?;
        let fmt = SFlag::from_bits_truncate(st.st_mode & SFlag::S_IFMT.bits());
        if fmt == SFlag::S_IFLNK {
            links += 1;
            if links > MAX_SYMLINKS {
                return Err(Errno::ELOOP);
            }
            let target = readlinkat(cur, name.as_os_str())?;
            let target = Path::new(&target);
            if target.is_absolute() {
                dirs.truncate(1);
            }
            for c in target.components().rev() {
                match c {
                    Component::Normal(n) => todo.push_front(n.to_owned()),
                    Component::ParentDir => todo.push_front(OsStr::new("..").to_owned()),
                    _ => {}
                }
            }
        } else if fmt == SFlag::S_IFDIR {
            dirs.push(fd);
        } else if todo.iter().all(|c| c == ".") {
            return Ok((fd, Vec::new()));
        } else {
            return Err(Errno::ENOTDIR);
        }
    }
    Ok((dirs.pop().expect("never empty"), Vec::new()))
}

fn io_errno(e: std::io::Error) -> Errno {
    Errno::from_raw(e.raw_os_error().unwrap_or(libc::EIO))
}

/// The in-root path `fd` refers to, read back from /proc: proof of where a target really is.
/// `None` if it is not below `rootfs` (which resolution inside the root rules out).
pub(crate) fn real_path(fd: BorrowedFd<'_>, rootfs: &Path) -> nix::Result<Option<PathBuf>> {
    let link = std::fs::read_link(super::sys::fd_path(fd)).map_err(io_errno)?;
    if link == rootfs {
        return Ok(Some(PathBuf::from("/")));
    }
    Ok(link
        .strip_prefix(rootfs)
        .ok()
        .map(|r| Path::new("/").join(r)))
}

#[cfg(test)]
pub(crate) fn force_walk(on: bool) {
    NO_OPENAT2.store(on, Ordering::Relaxed);
}
