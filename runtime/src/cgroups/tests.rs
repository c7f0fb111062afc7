use super::devices::{self, Rule};
use super::*;
use oci_spec::runtime::LinuxResources;

const HYBRID: &str = "\
24 30 0:22 / /sys rw,nosuid,nodev,noexec,relatime shared:7 - sysfs sysfs rw
31 24 0:26 / /sys/fs/cgroup ro,nosuid,nodev,noexec shared:9 - tmpfs tmpfs ro,mode=755
32 31 0:27 / /sys/fs/cgroup/unified rw,nosuid,nodev,noexec,relatime shared:10 - cgroup2 cgroup2 rw,nsdelegate
33 31 0:28 / /sys/fs/cgroup/systemd rw,nosuid,nodev,noexec,relatime shared:11 - cgroup cgroup rw,xattr,name=systemd
36 31 0:31 / /sys/fs/cgroup/cpu,cpuacct rw,nosuid,nodev,noexec,relatime shared:16 - cgroup cgroup rw,cpu,cpuacct
37 31 0:32 / /sys/fs/cgroup/memory rw,nosuid,nodev,noexec,relatime shared:17 - cgroup cgroup rw,memory
38 31 0:33 / /sys/fs/cgroup/my\\040dir rw - cgroup cgroup rw,pids
39 31 0:32 / /mnt/again rw - cgroup cgroup rw,memory
";

#[test]
fn parses_hybrid_layout() {
    let Layout::V1 { mounts, unified } = Layout::parse(HYBRID).unwrap() else {
        panic!("not v1")
    };
    assert_eq!(unified.unwrap(), Path::new("/sys/fs/cgroup/unified"));
    let names: Vec<String> = mounts.iter().map(|m| m.controllers.join(",")).collect();
    assert_eq!(names, ["name=systemd", "cpu,cpuacct", "memory", "pids"]);
    assert_eq!(mounts[3].dir, Path::new("/sys/fs/cgroup/my dir"));
    assert_eq!(
        Cgroup::v1_dir(&mounts, "berth/x", "cpuacct").unwrap(),
        Path::new("/sys/fs/cgroup/cpu,cpuacct/berth/x")
    );
}

#[test]
fn parses_v2_layout() {
    let info = "30 24 0:26 / /sys/fs/cgroup rw,nosuid - cgroup2 cgroup2 rw,nsdelegate\n";
    let l = Layout::parse(info).unwrap();
    assert!(l.is_v2());
    assert!(Layout::parse("1 2 3:4 / / rw - ext4 /dev/sda rw\n").is_err());
}

#[test]
fn resolves_paths() {
    let r = |p: Option<&str>| Cgroup::resolve(p.map(Path::new), "c1").map(|c| c.path);
    assert_eq!(r(None).unwrap(), "/berth/c1");
    assert_eq!(r(Some("")).unwrap(), "/berth/c1");
    assert_eq!(r(Some("/a/b/")).unwrap(), "/a/b");
    assert_eq!(r(Some("/a//./b")).unwrap(), "/a/b");
    assert_eq!(r(Some("pod/c1")).unwrap(), "/berth/pod/c1");
    assert!(r(Some("/a/../../etc"))
        .unwrap_err()
        .to_string()
        .contains(".."));
    assert!(r(Some("/"))
        .unwrap_err()
        .to_string()
        .contains("root cgroup"));
    assert!(r(Some("system.slice:berth:c1"))
        .unwrap_err()
        .to_string()
        .contains("systemd"));
}

#[test]
fn weight_conversions_match_runc() {
    assert_eq!(v2::shares_to_weight(2), 1);
    assert_eq!(v2::shares_to_weight(1024), 39);
    assert_eq!(v2::shares_to_weight(262_144), 10_000);
    assert_eq!(v2::blkio_to_io_weight(10), 1);
    assert_eq!(v2::blkio_to_io_weight(1000), 10_000);
}

fn spec_rules(json: serde_json::Value) -> Vec<Rule> {
    let res: LinuxResources =
        serde_json::from_value(serde_json::json!({ "devices": json })).unwrap();
    devices::rules(res.devices().as_ref()).unwrap().unwrap()
}

#[test]
fn device_rules_append_defaults_and_validate() {
    let rules = spec_rules(serde_json::json!([
        {"allow": false, "access": "rwm"},
        {"allow": true, "type": "c", "major": 240, "minor": -1, "access": "rw"}
    ]));
    assert_eq!(rules[0].v1_line(), "a");
    assert_eq!(rules[1].v1_line(), "c 240:* rw");
    assert!(rules.iter().any(|r| r.v1_line() == "c 1:3 rwm"));
    // As runc: any order, repeats, and letters other than r, w, m ignored ("rwa" is "rw").
    let rules = spec_rules(serde_json::json!([
        {"allow": false, "type": "c", "major": 1, "minor": 11, "access": "rwa"},
        {"allow": true, "type": "c", "major": 1, "minor": 12, "access": "mwr"},
        {"allow": true, "type": "b", "major": 8, "minor": 0, "access": "wrw"}
    ]));
    assert_eq!(rules[0].v1_line(), "c 1:11 rw");
    assert_eq!(rules[1].v1_line(), "c 1:12 rwm");
    assert_eq!(rules[2].v1_line(), "b 8:0 rw");
    // Nothing of r, w, m: refused.
    for access in ["", "xa"] {
        let res: LinuxResources = serde_json::from_value(
            serde_json::json!({"devices": [{"allow": true, "access": access}]}),
        )
        .unwrap();
        let e = devices::rules(res.devices().as_ref()).unwrap_err();
        assert!(e.to_string().contains("access"), "{e}");
    }
}

/// A tiny interpreter for the instructions `devices::compile` emits, to check the program's
/// decisions without the kernel.
fn run(prog: &[devices::Insn], kind: u32, access: u32, major: u32, minor: u32) -> u64 {
    // SAFETY: Insn is repr(C) with the layout of struct bpf_insn (8 bytes).
    let raw: &[[u8; 8]] = unsafe { std::slice::from_raw_parts(prog.as_ptr().cast(), prog.len()) };
    let ctx = [access << 16 | kind, major, minor];
    let mut r = [0u64; 11];
    let mut pc = 0;
    loop {
        let i = raw[pc];
        let (dst, src) = ((i[1] & 0xf) as usize, (i[1] >> 4) as usize);
        let off = i16::from_ne_bytes([i[2], i[3]]);
        let imm = i32::from_ne_bytes([i[4], i[5], i[6], i[7]]) as i64 as u64;
        assert!(src <= 1 || i[0] == 0xbf);
        match i[0] {
            0x61 => r[dst] = ctx[off as usize / 4] as u64,
            0x57 => r[dst] &= imm,
            0x77 => r[dst] >>= imm,
            0xbf => r[dst] = r[src],
            0xb7 => r[dst] = imm,
            0x55 => {
                if r[dst] != imm {
                    pc = (pc as i64 + off as i64) as usize;
                }
            }
            0x95 => return r[0],
            c => panic!("unexpected opcode {c:#x}"),
        }
        pc += 1;
    }
}

#[test]
fn device_program_last_matching_rule_wins() {
    let rules = spec_rules(serde_json::json!([
        {"allow": false, "access": "rwm"},
        {"allow": true, "type": "c", "major": 240, "access": "r"},
        {"allow": false, "type": "c", "major": 240, "minor": 1, "access": "rwm"}
    ]));
    let p = devices::compile(&rules);
    let (c, b) = (2, 1);
    let (m, rd, wr) = (1, 2, 4);
    assert_eq!(run(&p, c, rd, 1, 3), 1, "null is a default");
    assert_eq!(run(&p, c, rd | wr, 1, 3), 1);
    assert_eq!(run(&p, c, rd, 240, 0), 1, "listed for reading");
    assert_eq!(run(&p, c, wr, 240, 0), 0, "not for writing");
    assert_eq!(run(&p, c, rd, 240, 1), 0, "a later deny wins");
    assert_eq!(run(&p, b, rd, 8, 0), 0, "disk denied");
    assert_eq!(run(&p, b, m, 8, 0), 1, "mknod allowed");
    assert_eq!(run(&p, c, rd, 136, 7), 1, "pts");
    // Without an `a` rule the default is allow, as in a fresh v1 cgroup.
    let p = devices::compile(&spec_rules(serde_json::json!([
        {"allow": false, "type": "b", "access": "rwm"}
    ])));
    assert_eq!(run(&p, b, rd, 8, 0), 0);
    assert_eq!(run(&p, c, rd, 4, 1), 1);
}

/// A scratch cgroup in this host's real hierarchies, removed on drop. Only `/berth-unit-*`
/// paths are ever made.
struct Scratch(Cgroup);

impl Scratch {
    fn new(name: &str) -> Scratch {
        let cg = Cgroup::resolve(
            Some(Path::new(&format!(
                "/berth-unit-{}/{name}",
                std::process::id()
            ))),
            name,
        )
        .unwrap();
        cg.create().unwrap();
        Scratch(cg)
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = self.0.destroy();
        if let Ok(roots) = self.0.dirs() {
            for d in roots {
                if let Some(p) = d.parent() {
                    let _ = std::fs::remove_dir(p);
                }
            }
        }
    }
}

fn is_root() -> bool {
    nix::unistd::geteuid().is_root()
}

#[test]
fn lifecycle_on_this_host() {
    if !is_root() {
        eprintln!("skipped: needs root");
        return;
    }
    let s = Scratch::new("life");
    let cg = &s.0;
    for d in cg.dirs().unwrap() {
        assert!(d.is_dir(), "{}", d.display());
    }
    let res: LinuxResources = serde_json::from_value(serde_json::json!({
        "memory": {"limit": 67108864},
        "pids": {"limit": 20},
        "cpu": {"shares": 512, "quota": 50000, "period": 100000}
    }))
    .unwrap();
    let warnings = cg.apply(&res).unwrap();
    assert!(warnings.is_empty(), "{warnings:?}");
    let mut child = std::process::Command::new("sleep")
        .arg("100")
        .spawn()
        .unwrap();
    let pid = child.id() as i32;
    let result = std::panic::catch_unwind(|| {
        cg.add_pid(pid).unwrap();
        assert_eq!(cg.pids().unwrap(), vec![pid]);
        let st = cg.stats().unwrap();
        assert_eq!(st.pids.current, 1);
        assert_eq!(st.pids.limit, 20);
        cg.freeze().unwrap();
        assert!(cg.is_frozen().unwrap());
        cg.thaw().unwrap();
        assert!(!cg.is_frozen().unwrap());
    });
    let _ = child.kill();
    let _ = child.wait();
    result.unwrap();
    cg.destroy().unwrap();
    for d in cg.dirs().unwrap() {
        assert!(!d.exists(), "{} left", d.display());
    }
    cg.destroy().unwrap();
}

#[test]
fn default_parent_goes_when_empty() {
    if !is_root() {
        return;
    }
    // Uses a path under /berth like a real container; removes /berth only if it empties.
    let id = format!("unit-parent-{}", std::process::id());
    let cg = Cgroup::resolve(None, &id).unwrap();
    cg.create().unwrap();
    let dirs = cg.dirs().unwrap();
    cg.destroy().unwrap();
    for d in dirs {
        assert!(!d.exists());
        let parent = d.parent().unwrap();
        let others = std::fs::read_dir(parent)
            .map(|rd| {
                rd.flatten()
                    .any(|e| e.file_type().map(|t| t.is_dir()).unwrap_or(false))
            })
            .unwrap_or(false);
        assert!(
            !parent.exists() || others,
            "{} left empty",
            parent.display()
        );
    }
}

/// The v2 device program, attached for real to a cgroup in the unified hierarchy (present on
/// pure v2 and hybrid hosts alike): a process in it may read /dev/null but not open /dev/kmsg.
#[test]
fn device_program_enforced_by_kernel() {
    if !is_root() {
        return;
    }
    let unified = match Layout::get().unwrap() {
        Layout::V2 { root } => root.clone(),
        Layout::V1 {
            unified: Some(u), ..
        } => u.clone(),
        Layout::V1 { .. } => return,
    };
    let dir = unified.join(format!("berth-unit-dev-{}", std::process::id()));
    std::fs::create_dir(&dir).unwrap();
    struct Rm(std::path::PathBuf);
    impl Drop for Rm {
        fn drop(&mut self) {
            let _ = fs::remove_tree(&self.0, Instant::now() + Duration::from_secs(2));
        }
    }
    let _rm = Rm(dir.clone());
    let rules = spec_rules(serde_json::json!([{"allow": false, "access": "rwm"}]));
    devices::apply_v2(&dir, &rules).unwrap();
    // Apply twice: the second replaces the first.
    devices::apply_v2(&dir, &rules).unwrap();
    let procs = dir.join("cgroup.procs");
    let out = std::process::Command::new("sh")
        .arg("-c")
        .arg(format!(
            "echo $$ > {}; head -c 1 /dev/null && echo null-ok; : 2>&1 < /dev/kmsg && echo kmsg-open; true",
            procs.display()
        ))
        .output()
        .unwrap();
    let out = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.contains("null-ok"), "{out}");
    assert!(
        out.contains("not permitted") && !out.contains("kmsg-open"),
        "{out}"
    );
}

#[test]
fn only_pod_directories_right_below_berth_are_pod_cgroups() {
    use std::path::Path;
    assert!(is_pod_cgroup(Path::new("/berth/pod-0123abcd")));
    assert!(!is_pod_cgroup(Path::new("/berth/x/pod-0123abcd")));
    assert!(!is_pod_cgroup(Path::new("/kubepods/pod-1")));
    assert!(!is_pod_cgroup(Path::new("/berth/podx")));
    assert!(!is_pod_cgroup(Path::new("/berth")));
}
