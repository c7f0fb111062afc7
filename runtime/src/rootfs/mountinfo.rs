//! `/proc/self/mountinfo`, for the parent mount of the rootfs, the host's cgroup mounts and
//! the procfs/sysfs mounts to hide with `--no-pivot`.

use super::Result;
use nix::errno::Errno;
use std::path::PathBuf;

/// One line of mountinfo (see proc(5)).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct MountInfo {
    /// The path inside the filesystem that is mounted (`/` for a whole filesystem).
    pub root: String,
    pub mount_point: PathBuf,
    /// Optional fields such as `shared:1 master:2`.
    pub optional: String,
    pub fstype: String,
    pub super_opts: String,
}

/// Undoes the octal escapes (`\040` for a space) of mountinfo paths.
fn unescape(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\' && i + 4 <= b.len() {
            let oct = &b[i + 1..i + 4];
            if oct.iter().all(|c| (b'0'..=b'7').contains(c)) {
                let v = oct
                    .iter()
                    .fold(0u32, |acc, c| acc * 8 + u32::from(c - b'0'));
                if let Ok(v) = u8::try_from(v) {
                    out.push(v);
                    i += 4;
                    continue;
                }
            }
        }
        out.push(b[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

pub(crate) fn parse_line(line: &str) -> Option<MountInfo> {
    let (left, right) = line.split_once(" - ")?;
    let l: Vec<&str> = left.split(' ').collect();
    let r: Vec<&str> = right.split(' ').collect();
    if l.len() < 6 || r.len() < 3 {
        return None;
    }
    Some(MountInfo {
        root: unescape(l[3]),
        mount_point: PathBuf::from(unescape(l[4])),
        optional: l[6..].join(" "),
        fstype: r[0].to_string(),
        super_opts: r[2].to_string(),
    })
}

pub(crate) fn read() -> Result<Vec<MountInfo>> {
    let s = std::fs::read_to_string("/proc/self/mountinfo").map_err(|e| {
        let errno = Errno::from_raw(e.raw_os_error().unwrap_or(libc::EIO));
        super::sys("read /proc/self/mountinfo")(errno)
    })?;
    Ok(s.lines().filter_map(parse_line).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_lines_with_optional_fields_and_escapes() {
        let m = parse_line(
            "36 35 98:0 /mnt1 /mnt\\040x rw,noatime master:1 shared:2 - ext3 /dev/root rw,errors=continue",
        )
        .unwrap();
        assert_eq!(m.root, "/mnt1");
        assert_eq!(m.mount_point, PathBuf::from("/mnt x"));
        assert_eq!(m.optional, "master:1 shared:2");
        assert_eq!(m.fstype, "ext3");
        assert_eq!(m.super_opts, "rw,errors=continue");
        let m =
            parse_line("30 23 0:26 / /sys/fs/cgroup/cpu,cpuacct rw - cgroup cgroup rw,cpu,cpuacct")
                .unwrap();
        assert_eq!(m.optional, "");
        assert_eq!(m.super_opts, "rw,cpu,cpuacct");
    }
}
