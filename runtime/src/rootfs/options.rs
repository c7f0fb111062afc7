//! Mount options of the spec (`"options": ["nosuid", "mode=755", ...]`) turned into mount(2)
//! flags, propagation changes, recursive attributes and the data string, as runc parses them.

use super::sys::MS_NOSYMFOLLOW;
use super::{Result, RootfsError};
use nix::mount::MsFlags;

/// `MOUNT_ATTR_*` bits for mount_setattr(2).
pub(crate) const ATTR_RDONLY: u64 = 0x1;
const ATTR_NOSUID: u64 = 0x2;
const ATTR_NODEV: u64 = 0x4;
const ATTR_NOEXEC: u64 = 0x8;
const ATTR_ATIME_MASK: u64 = 0x70;
const ATTR_NOATIME: u64 = 0x10;
const ATTR_STRICTATIME: u64 = 0x20;
const ATTR_NODIRATIME: u64 = 0x80;
const ATTR_NOSYMFOLLOW: u64 = 0x0020_0000;

/// One spec mount's options, parsed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct MountOpts {
    /// Flags for mount(2), MS_BIND and MS_REC included.
    pub flags: MsFlags,
    /// Propagation changes applied after the mount, in order.
    pub propagation: Vec<MsFlags>,
    /// Recursive attributes ("rro", "rnosuid", ...): set and cleared with mount_setattr.
    pub rec_set: u64,
    pub rec_clr: u64,
    /// Everything else, comma-separated, for the filesystem.
    pub data: String,
}

impl Default for MountOpts {
    fn default() -> Self {
        MountOpts {
            flags: MsFlags::empty(),
            propagation: Vec::new(),
            rec_set: 0,
            rec_clr: 0,
            data: String::new(),
        }
    }
}

impl MountOpts {
    pub fn is_bind(&self) -> bool {
        self.flags.contains(MsFlags::MS_BIND)
    }
    pub fn readonly(&self) -> bool {
        self.flags.contains(MsFlags::MS_RDONLY)
    }
}

/// Flags an option sets (`true`) or clears (`false`).
fn flag(opt: &str) -> Option<(bool, MsFlags)> {
    use MsFlags as F;
    Some(match opt {
        "acl" => (true, F::MS_POSIXACL),
        "async" => (false, F::MS_SYNCHRONOUS),
        "atime" => (false, F::MS_NOATIME),
        "bind" => (true, F::MS_BIND),
        "defaults" => (true, F::empty()),
        "dev" => (false, F::MS_NODEV),
        "diratime" => (false, F::MS_NODIRATIME),
        "dirsync" => (true, F::MS_DIRSYNC),
        "exec" => (false, F::MS_NOEXEC),
        "iversion" => (true, F::MS_I_VERSION),
        "lazytime" => (true, F::MS_LAZYTIME),
        "loud" => (false, F::MS_SILENT),
        "mand" => (true, F::MS_MANDLOCK),
        "noacl" => (false, F::MS_POSIXACL),
        "noatime" => (true, F::MS_NOATIME),
        "nodev" => (true, F::MS_NODEV),
        "nodiratime" => (true, F::MS_NODIRATIME),
        "noexec" => (true, F::MS_NOEXEC),
        "noiversion" => (false, F::MS_I_VERSION),
        "nolazytime" => (false, F::MS_LAZYTIME),
        "nomand" => (false, F::MS_MANDLOCK),
        "norelatime" => (false, F::MS_RELATIME),
        "nostrictatime" => (false, F::MS_STRICTATIME),
        "nosuid" => (true, F::MS_NOSUID),
        "nosymfollow" => (true, MS_NOSYMFOLLOW),
        "rbind" => (true, F::MS_BIND | F::MS_REC),
        "relatime" => (true, F::MS_RELATIME),
        "remount" => (true, F::MS_REMOUNT),
        "ro" => (true, F::MS_RDONLY),
        "rw" => (false, F::MS_RDONLY),
        "silent" => (true, F::MS_SILENT),
        "strictatime" => (true, F::MS_STRICTATIME),
        "suid" => (false, F::MS_NOSUID),
        "symfollow" => (false, MS_NOSYMFOLLOW),
        "sync" => (true, F::MS_SYNCHRONOUS),
        _ => return None,
    })
}

fn propagation(opt: &str) -> Option<MsFlags> {
    use MsFlags as F;
    Some(match opt {
        "private" => F::MS_PRIVATE,
        "rprivate" => F::MS_PRIVATE | F::MS_REC,
        "shared" => F::MS_SHARED,
        "rshared" => F::MS_SHARED | F::MS_REC,
        "slave" => F::MS_SLAVE,
        "rslave" => F::MS_SLAVE | F::MS_REC,
        "unbindable" => F::MS_UNBINDABLE,
        "runbindable" => F::MS_UNBINDABLE | F::MS_REC,
        _ => return None,
    })
}

/// Recursive attributes: (clear, set) masks.
fn rec_attr(opt: &str) -> Option<(u64, u64)> {
    Some(match opt {
        "rro" => (0, ATTR_RDONLY),
        "rrw" => (ATTR_RDONLY, 0),
        "rnosuid" => (0, ATTR_NOSUID),
        "rsuid" => (ATTR_NOSUID, 0),
        "rnodev" => (0, ATTR_NODEV),
        "rdev" => (ATTR_NODEV, 0),
        "rnoexec" => (0, ATTR_NOEXEC),
        "rexec" => (ATTR_NOEXEC, 0),
        "rnodiratime" => (0, ATTR_NODIRATIME),
        "rdiratime" => (ATTR_NODIRATIME, 0),
        "rrelatime" => (ATTR_ATIME_MASK, 0),
        "rnoatime" => (ATTR_ATIME_MASK, ATTR_NOATIME),
        "rstrictatime" => (ATTR_ATIME_MASK, ATTR_STRICTATIME),
        "rnosymfollow" => (0, ATTR_NOSYMFOLLOW),
        "rsymfollow" => (ATTR_NOSYMFOLLOW, 0),
        _ => return None,
    })
}

/// Parses the options of the mount at `dest` (named in errors).
pub(crate) fn parse(dest: &std::path::Path, options: &[String]) -> Result<MountOpts> {
    let mut o = MountOpts::default();
    let mut data: Vec<&str> = Vec::new();
    for opt in options {
        let opt = opt.as_str();
        if let Some((set, f)) = flag(opt) {
            if set {
                o.flags |= f;
            } else {
                o.flags &= !f;
            }
        } else if let Some(p) = propagation(opt) {
            o.propagation.push(p);
        } else if let Some((clr, set)) = rec_attr(opt) {
            if clr & ATTR_ATIME_MASK != 0 {
                // The atime mode is one value: clear the whole field, then set the new one.
                o.rec_clr |= ATTR_ATIME_MASK;
                o.rec_set = (o.rec_set & !ATTR_ATIME_MASK) | set;
            } else {
                o.rec_clr = (o.rec_clr | clr) & !set;
                o.rec_set = (o.rec_set & !clr) | set;
            }
        } else if opt == "idmap" || opt == "ridmap" || opt.starts_with("idmap=") {
            return Err(RootfsError::Invalid(format!(
                "mount {dest:?}: option {opt:?} (id-mapped mounts) is not supported"
            )));
        } else if opt == "tmpcopyup" || opt.starts_with("x-") || opt.starts_with("X-") {
            // runc extension and userspace-only options: nothing for the kernel.
        } else {
            data.push(opt);
        }
    }
    o.data = data.join(",");
    Ok(o)
}

/// `linux.rootfsPropagation` as mount flags (runc's mapping: the plain names are not recursive).
pub(crate) fn root_propagation(p: &str) -> Result<MsFlags> {
    propagation(p)
        .ok_or_else(|| RootfsError::Invalid(format!("invalid linux.rootfsPropagation {p:?}")))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    fn p(opts: &[&str]) -> MountOpts {
        let v: Vec<String> = opts.iter().map(|s| s.to_string()).collect();
        parse(Path::new("/x"), &v).unwrap()
    }

    #[test]
    fn flags_data_and_propagation() {
        let o = p(&[
            "nosuid",
            "noexec",
            "nodev",
            "mode=755",
            "size=65536k",
            "rslave",
            "ro",
        ]);
        assert_eq!(
            o.flags,
            MsFlags::MS_NOSUID | MsFlags::MS_NOEXEC | MsFlags::MS_NODEV | MsFlags::MS_RDONLY
        );
        assert_eq!(o.data, "mode=755,size=65536k");
        assert_eq!(o.propagation, vec![MsFlags::MS_SLAVE | MsFlags::MS_REC]);
    }

    #[test]
    fn later_options_win_and_rbind() {
        let o = p(&["ro", "rw", "rbind", "norelatime", "suid"]);
        assert_eq!(o.flags, MsFlags::MS_BIND | MsFlags::MS_REC);
        assert!(o.is_bind() && !o.readonly());
        let o = p(&["noexec", "exec", "relatime", "norelatime", "strictatime"]);
        assert_eq!(o.flags, MsFlags::MS_STRICTATIME);
    }

    #[test]
    fn recursive_attributes() {
        let o = p(&["rro", "rnosuid", "rnoatime"]);
        assert_eq!(o.rec_set, ATTR_RDONLY | ATTR_NOSUID | ATTR_NOATIME);
        assert_eq!(o.rec_clr, ATTR_ATIME_MASK);
        let o = p(&["rro", "rrw"]);
        assert_eq!((o.rec_set, o.rec_clr), (0, ATTR_RDONLY));
    }

    #[test]
    fn idmap_is_refused_and_unknown_goes_to_data() {
        let err = parse(Path::new("/data"), &["idmap".to_string()]).unwrap_err();
        assert!(err.to_string().contains("\"/data\""), "{err}");
        assert!(err.to_string().contains("not supported"), "{err}");
        assert_eq!(
            p(&["newinstance", "ptmxmode=0666", "gid=5"]).data,
            "newinstance,ptmxmode=0666,gid=5"
        );
        assert_eq!(p(&["tmpcopyup", "x-foo"]).data, "");
    }

    #[test]
    fn rootfs_propagation_names() {
        assert_eq!(root_propagation("shared").unwrap(), MsFlags::MS_SHARED);
        assert_eq!(
            root_propagation("rslave").unwrap(),
            MsFlags::MS_SLAVE | MsFlags::MS_REC
        );
        assert!(root_propagation("bogus").is_err());
    }
}
