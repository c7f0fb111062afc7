//! Device access rules: the spec's `linux.resources.devices` followed by the devices every
//! container gets (runc's list), written to v1's `devices.allow`/`devices.deny` in order, or
//! compiled into a `BPF_PROG_TYPE_CGROUP_DEVICE` program on cgroup v2.

use super::{err, fs, Result};
use oci_spec::runtime::{LinuxDeviceCgroup, LinuxDeviceType};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::path::Path;

/// One rule. `kind` is `a`, `b` or `c`; `None` numbers are wildcards; `access` is a subset of
/// `rwm`, in that order.
#[derive(Debug, Clone, PartialEq)]
pub struct Rule {
    pub allow: bool,
    pub kind: char,
    pub major: Option<i64>,
    pub minor: Option<i64>,
    pub access: String,
}

impl Rule {
    /// v1's `type major:minor access` line.
    pub fn v1_line(&self) -> String {
        if self.kind == 'a' {
            return "a".into();
        }
        let n = |v: Option<i64>| v.map_or("*".to_string(), |v| v.to_string());
        format!(
            "{} {}:{} {}",
            self.kind,
            n(self.major),
            n(self.minor),
            self.access
        )
    }

    fn access_bits(&self) -> u32 {
        let mut bits = 0;
        for c in self.access.chars() {
            bits |= match c {
                'm' => 1,
                'r' => 2,
                'w' => 4,
                _ => 0,
            };
        }
        bits
    }
}

/// Devices every container may use (after the spec's rules, as runc does): mknod of anything,
/// and null, zero, full, random, urandom, tty, console, ptmx, pts and tun.
fn defaults() -> Vec<Rule> {
    let r = |kind, major: Option<i64>, minor: Option<i64>, access: &str| Rule {
        allow: true,
        kind,
        major,
        minor,
        access: access.into(),
    };
    vec![
        r('c', None, None, "m"),
        r('b', None, None, "m"),
        r('c', Some(1), Some(3), "rwm"),
        r('c', Some(1), Some(8), "rwm"),
        r('c', Some(1), Some(7), "rwm"),
        r('c', Some(5), Some(0), "rwm"),
        r('c', Some(5), Some(1), "rwm"),
        r('c', Some(1), Some(5), "rwm"),
        r('c', Some(1), Some(9), "rwm"),
        r('c', Some(136), None, "rwm"),
        r('c', Some(5), Some(2), "rwm"),
        r('c', Some(10), Some(200), "rwm"),
    ]
}

/// The effective rules for a spec's device list. `None` when the spec has none: the cgroup then
/// keeps what it inherited.
pub fn rules(spec: Option<&Vec<LinuxDeviceCgroup>>) -> Result<Option<Vec<Rule>>> {
    let Some(spec) = spec else {
        return Ok(None);
    };
    let mut out = Vec::with_capacity(spec.len() + 12);
    for d in spec {
        let kind = match d.typ().unwrap_or(LinuxDeviceType::A) {
            LinuxDeviceType::A => 'a',
            LinuxDeviceType::B => 'b',
            LinuxDeviceType::C | LinuxDeviceType::U => 'c',
            LinuxDeviceType::P => {
                return Err(err(
                    "device cgroup rule of type \"p\" (fifo) is not valid: use a, b or c",
                ))
            }
        };
        let given = d.access().clone().unwrap_or_else(|| "rwm".into());
        let Some(access) = access_set(&given) else {
            return Err(err(format!(
                "device cgroup rule access {given:?} is not valid: it needs one of r, w and m"
            )));
        };
        let num = |v: Option<i64>| v.filter(|v| *v >= 0);
        out.push(Rule {
            allow: d.allow(),
            kind,
            major: num(d.major()),
            minor: num(d.minor()),
            access,
        });
    }
    out.extend(defaults());
    Ok(Some(out))
}

/// The access letters of a rule in `rwm` order: any order and repeats are fine and other
/// letters are ignored, as runc's cgroup v1 code ignores them (`"rwa"` is `"rw"`). `None` when
/// none of r, w and m is there: such a rule allows or denies nothing.
fn access_set(access: &str) -> Option<String> {
    let set: String = "rwm".chars().filter(|c| access.contains(*c)).collect();
    (!set.is_empty()).then_some(set)
}

/// cgroup v1: write each rule to `devices.allow` or `devices.deny`, in order.
pub fn apply_v1(dir: &Path, rules: &[Rule]) -> Result<()> {
    for r in rules {
        let file = if r.allow {
            "devices.allow"
        } else {
            "devices.deny"
        };
        fs::write(dir, file, &r.v1_line())?;
    }
    Ok(())
}

// --- cgroup v2: eBPF ---------------------------------------------------------------------

/// One eBPF instruction (`struct bpf_insn`).
#[derive(Debug, Clone, Copy, PartialEq)]
#[repr(C)]
pub struct Insn {
    code: u8,
    regs: u8,
    off: i16,
    imm: i32,
}

const fn insn(code: u8, dst: u8, src: u8, off: i16, imm: i32) -> Insn {
    Insn {
        code,
        regs: (src << 4) | (dst & 0x0f),
        off,
        imm,
    }
}

const LDX_W: u8 = 0x61; // BPF_LDX | BPF_MEM | BPF_W
const AND_K: u8 = 0x57; // BPF_ALU64 | BPF_AND | BPF_K
const RSH_K: u8 = 0x77; // BPF_ALU64 | BPF_RSH | BPF_K
const MOV_X: u8 = 0xbf; // BPF_ALU64 | BPF_MOV | BPF_X
const MOV_K: u8 = 0xb7; // BPF_ALU64 | BPF_MOV | BPF_K
const JNE_K: u8 = 0x55; // BPF_JMP | BPF_JNE | BPF_K
const EXIT: u8 = 0x95; // BPF_JMP | BPF_EXIT

/// Compiles rules into a device program. The context is `struct bpf_cgroup_dev_ctx
/// { u32 access_type; u32 major; u32 minor; }`, `access_type = access << 16 | type`. The last
/// matching rule decides (as successive writes do on v1); the last `a` rule sets the default,
/// and without one everything is allowed, as in a new v1 cgroup.
pub fn compile(rules: &[Rule]) -> Vec<Insn> {
    let start = rules.iter().rposition(|r| r.kind == 'a');
    let default_allow = start.is_none_or(|i| rules[i].allow);
    let rest = &rules[start.map_or(0, |i| i + 1)..];
    let mut prog = vec![
        insn(LDX_W, 2, 1, 0, 0),      // r2 = access_type
        insn(AND_K, 2, 0, 0, 0xffff), // r2 = type
        insn(LDX_W, 3, 1, 0, 0),      // r3 = access_type
        insn(RSH_K, 3, 0, 0, 16),     // r3 = access
        insn(LDX_W, 4, 1, 4, 0),      // r4 = major
        insn(LDX_W, 5, 1, 8, 0),      // r5 = minor
    ];
    for r in rest.iter().rev() {
        // Each check jumps to the next block when it fails.
        let mut block: Vec<(Insn, bool)> = Vec::new();
        let kind = if r.kind == 'b' { 1 } else { 2 };
        block.push((insn(JNE_K, 2, 0, 0, kind), true));
        let bits = r.access_bits();
        if bits != 7 {
            block.push((insn(MOV_X, 6, 3, 0, 0), false));
            block.push((insn(AND_K, 6, 0, 0, (!bits & 7) as i32), false));
            block.push((insn(JNE_K, 6, 0, 0, 0), true));
        }
        if let Some(m) = r.major {
            block.push((insn(JNE_K, 4, 0, 0, m as i32), true));
        }
        if let Some(m) = r.minor {
            block.push((insn(JNE_K, 5, 0, 0, m as i32), true));
        }
        block.push((insn(MOV_K, 0, 0, 0, r.allow as i32), false));
        block.push((insn(EXIT, 0, 0, 0, 0), false));
        let len = block.len();
        for (i, (mut ins, jumps)) in block.into_iter().enumerate() {
            if jumps {
                ins.off = (len - i - 1) as i16;
            }
            prog.push(ins);
        }
    }
    prog.push(insn(MOV_K, 0, 0, 0, default_allow as i32));
    prog.push(insn(EXIT, 0, 0, 0, 0));
    prog
}

const BPF_PROG_LOAD: libc::c_int = 5;
const BPF_PROG_ATTACH: libc::c_int = 8;
const BPF_PROG_DETACH: libc::c_int = 9;
const BPF_PROG_GET_FD_BY_ID: libc::c_int = 13;
const BPF_PROG_QUERY: libc::c_int = 16;
const BPF_PROG_TYPE_CGROUP_DEVICE: u32 = 15;
const BPF_CGROUP_DEVICE: u32 = 6;
const BPF_F_ALLOW_MULTI: u32 = 2;

/// `union bpf_attr`, big enough for every command used here (zero-filled).
#[repr(C, align(8))]
struct Attr([u8; 128]);

impl Attr {
    fn new() -> Attr {
        Attr([0; 128])
    }
    fn u32(&mut self, off: usize, v: u32) -> &mut Self {
        self.0[off..off + 4].copy_from_slice(&v.to_ne_bytes());
        self
    }
    fn u64(&mut self, off: usize, v: u64) -> &mut Self {
        self.0[off..off + 8].copy_from_slice(&v.to_ne_bytes());
        self
    }
    fn get_u32(&self, off: usize) -> u32 {
        u32::from_ne_bytes(self.0[off..off + 4].try_into().expect("4 bytes"))
    }
}

fn bpf(cmd: libc::c_int, attr: &mut Attr) -> std::io::Result<libc::c_long> {
    // SAFETY: `attr` is a valid, writable, zero-padded bpf_attr of the size passed.
    let r = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            cmd,
            attr as *mut Attr,
            std::mem::size_of::<Attr>(),
        )
    };
    if r < 0 {
        Err(std::io::Error::last_os_error())
    } else {
        Ok(r)
    }
}

fn load(prog: &[Insn]) -> Result<OwnedFd> {
    let license = c"Apache";
    let attempt = |log: &mut [u8]| {
        let mut attr = Attr::new();
        attr.u32(0, BPF_PROG_TYPE_CGROUP_DEVICE)
            .u32(4, prog.len() as u32)
            .u64(8, prog.as_ptr() as u64)
            .u64(16, license.as_ptr() as u64);
        if !log.is_empty() {
            attr.u32(24, 1)
                .u32(28, log.len() as u32)
                .u64(32, log.as_mut_ptr() as u64);
        }
        bpf(BPF_PROG_LOAD, &mut attr)
    };
    match attempt(&mut []) {
        // SAFETY: the kernel returned a new fd that nothing else owns.
        Ok(fd) => Ok(unsafe { OwnedFd::from_raw_fd(fd as i32) }),
        Err(e) => {
            // Load again with the verifier's log, to say why.
            let mut log = vec![0u8; 1 << 16];
            let _ = attempt(&mut log);
            let end = log.iter().position(|b| *b == 0).unwrap_or(0);
            let log = String::from_utf8_lossy(&log[..end]);
            let why = log
                .lines()
                .rev()
                .find(|l| !l.starts_with("processed"))
                .unwrap_or("");
            Err(err(format!("load the device eBPF program: {e}: {why}")))
        }
    }
}

/// Ids of the device programs attached to the cgroup `dir_fd`.
fn attached(dir_fd: &OwnedFd) -> Result<Vec<u32>> {
    let mut ids = vec![0u32; 64];
    let mut attr = Attr::new();
    attr.u32(0, dir_fd.as_raw_fd() as u32)
        .u32(4, BPF_CGROUP_DEVICE)
        .u64(16, ids.as_mut_ptr() as u64)
        .u32(24, ids.len() as u32);
    bpf(BPF_PROG_QUERY, &mut attr).map_err(|e| err(format!("query device programs: {e}")))?;
    let n = attr.get_u32(24) as usize;
    ids.truncate(n.min(64));
    Ok(ids)
}

/// Attaches the compiled rules to the cgroup `dir` and detaches device programs attached there
/// before (berth's own, from an earlier `apply`).
pub fn apply_v2(dir: &Path, rules: &[Rule]) -> Result<()> {
    let prog = load(&compile(rules))?;
    let dir_fd = fs::open_dir(dir).map_err(|e| err(format!("open {}: {e}", dir.display())))?;
    let old = attached(&dir_fd)?;
    let mut attr = Attr::new();
    attr.u32(0, dir_fd.as_raw_fd() as u32)
        .u32(4, prog.as_raw_fd() as u32)
        .u32(8, BPF_CGROUP_DEVICE)
        .u32(12, BPF_F_ALLOW_MULTI);
    bpf(BPF_PROG_ATTACH, &mut attr).map_err(|e| {
        err(format!(
            "attach the device program to {}: {e}",
            dir.display()
        ))
    })?;
    for id in old {
        let mut a = Attr::new();
        a.u32(0, id);
        let Ok(fd) = bpf(BPF_PROG_GET_FD_BY_ID, &mut a) else {
            continue;
        };
        // SAFETY: a new fd from the kernel, owned here.
        let old_fd = unsafe { OwnedFd::from_raw_fd(fd as i32) };
        let mut d = Attr::new();
        d.u32(0, dir_fd.as_raw_fd() as u32)
            .u32(4, old_fd.as_raw_fd() as u32)
            .u32(8, BPF_CGROUP_DEVICE);
        bpf(BPF_PROG_DETACH, &mut d)
            .map_err(|e| err(format!("detach the old device program: {e}")))?;
    }
    Ok(())
}
