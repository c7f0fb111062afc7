//! Capability sets changed in forked children (as root), checked in `/proc/self/status`.

use super::*;
use crate::seccomp::in_child::run;
use oci_spec::runtime::LinuxCapabilitiesBuilder;

fn set(caps: &[Capability]) -> Capabilities {
    caps.iter().copied().collect()
}

fn bits(caps: &[Capability]) -> u64 {
    caps.iter().fold(0, |m, c| m | (1 << number(*c)))
}

/// The `Cap*:` line of `/proc/self/status` as a mask.
fn status(field: &str) -> Result<u64, String> {
    let s = std::fs::read_to_string("/proc/self/status").map_err(|e| e.to_string())?;
    let line = s
        .lines()
        .find_map(|l| l.strip_prefix(&format!("{field}:\t")))
        .ok_or(format!("no {field} in /proc/self/status"))?;
    u64::from_str_radix(line.trim(), 16).map_err(|e| e.to_string())
}

fn expect(field: &str, want: u64) -> Result<(), String> {
    let got = status(field)?;
    if got == want {
        Ok(())
    } else {
        Err(format!("{field}: got {got:#x}, want {want:#x}"))
    }
}

#[test]
fn numbers_match_the_caps_crate() {
    let all: Capabilities = serde_json::from_str(
        &serde_json::to_string(
            &caps::all()
                .iter()
                .map(|c| c.to_string())
                .collect::<Vec<_>>(),
        )
        .unwrap(),
    )
    .unwrap();
    for c in all {
        let name = serde_json::to_value(c).unwrap();
        let theirs: caps::Capability = name.as_str().unwrap().parse().unwrap();
        assert_eq!(number(c), theirs.index(), "{name}");
    }
}

#[test]
fn bounding_and_sets_as_root() {
    use Capability::*;
    let bounding = [Chown, Kill, NetBindService, Setpcap, Bpf];
    let caps = LinuxCapabilitiesBuilder::default()
        .bounding(set(&bounding))
        .permitted(set(&[Chown, Kill, NetBindService]))
        .effective(set(&[Chown, Kill]))
        .inheritable(set(&[Kill, NetBindService]))
        .ambient(set(&[Kill]))
        .build()
        .unwrap();
    run(move || {
        drop_bounding(&caps).map_err(|e| e.to_string())?;
        let warnings = apply_with_warnings(&caps, 0).map_err(|e| e.to_string())?;
        if !warnings.is_empty() {
            return Err(format!("unexpected warnings {warnings:?}"));
        }
        expect("CapBnd", bits(&bounding))?;
        expect("CapPrm", bits(&[Chown, Kill, NetBindService]))?;
        expect("CapEff", bits(&[Chown, Kill]))?;
        expect("CapInh", bits(&[Kill, NetBindService]))?;
        expect("CapAmb", bits(&[Kill]))
    })
    .unwrap();
}

#[test]
fn missing_sets_are_empty() {
    let caps = LinuxCapabilitiesBuilder::default().build().unwrap();
    let caps = {
        let mut c = caps;
        c.set_bounding(None);
        c.set_effective(None);
        c.set_permitted(None);
        c.set_inheritable(None);
        c.set_ambient(None);
        c
    };
    run(move || {
        drop_bounding(&caps).map_err(|e| e.to_string())?;
        apply(&caps).map_err(|e| e.to_string())?;
        for f in ["CapBnd", "CapPrm", "CapEff", "CapInh", "CapAmb"] {
            expect(f, 0)?;
        }
        Ok(())
    })
    .unwrap();
}

/// This host has no CAP_SYS_RESOURCE (DESIGN.md): asking for it is a warning, not a failure.
/// Ambient capabilities that the spec does not make inheritable are left out silently (runc).
#[test]
fn host_refusals_are_warnings() {
    use Capability::*;
    let host_has_sys_resource = status("CapPrm").unwrap() & bits(&[SysResource]) != 0;
    let caps = LinuxCapabilitiesBuilder::default()
        .bounding(set(&[Chown, SysResource]))
        .permitted(set(&[Chown, SysResource]))
        .effective(set(&[Chown, SysResource]))
        .inheritable(set(&[]))
        .ambient(set(&[Chown]))
        .build()
        .unwrap();
    run(move || {
        drop_bounding(&caps).map_err(|e| e.to_string())?;
        let w = apply_with_warnings(&caps, 0).map_err(|e| e.to_string())?;
        if w.iter().any(|w| w.contains("ambient")) {
            return Err(format!("ambient warning in {w:?}"));
        }
        if !host_has_sys_resource && !w.iter().any(|w| w.contains("CAP_SYS_RESOURCE")) {
            return Err(format!("no CAP_SYS_RESOURCE warning in {w:?}"));
        }
        expect("CapAmb", 0)?;
        let want = if host_has_sys_resource {
            bits(&[Chown, SysResource])
        } else {
            bits(&[Chown])
        };
        expect("CapPrm", want)?;
        expect("CapEff", want)
    })
    .unwrap();
}

/// As the init does it: keep capabilities across setuid to a non-root user, then apply.
#[test]
fn apply_after_setuid() {
    use Capability::*;
    let caps = LinuxCapabilitiesBuilder::default()
        .bounding(set(&[NetBindService, Kill]))
        .permitted(set(&[NetBindService, Kill]))
        .effective(set(&[NetBindService]))
        .inheritable(set(&[NetBindService]))
        .ambient(set(&[NetBindService]))
        .build()
        .unwrap();
    run(move || {
        drop_bounding(&caps).map_err(|e| e.to_string())?;
        // SAFETY: prctl with integer arguments.
        unsafe { libc::prctl(libc::PR_SET_KEEPCAPS, 1, 0, 0, 0) };
        let id = nix::unistd::Uid::from_raw(65534);
        nix::unistd::setresgid(
            nix::unistd::Gid::from_raw(65534),
            nix::unistd::Gid::from_raw(65534),
            nix::unistd::Gid::from_raw(65534),
        )
        .map_err(|e| e.to_string())?;
        nix::unistd::setresuid(id, id, id).map_err(|e| e.to_string())?;
        let w = apply_with_warnings(&caps, 0).map_err(|e| e.to_string())?;
        if !w.is_empty() {
            return Err(format!("unexpected warnings {w:?}"));
        }
        expect("CapPrm", bits(&[NetBindService, Kill]))?;
        expect("CapEff", bits(&[NetBindService]))?;
        expect("CapInh", bits(&[NetBindService]))?;
        expect("CapAmb", bits(&[NetBindService]))
    })
    .unwrap();
}

/// A capability newer than the kernel, or outside the host's bounding set, is named in one
/// warning, whichever sets ask for it.
#[test]
fn unavailable_capabilities_are_named_once() {
    use Capability::*;
    let all = [Chown, SysResource, CheckpointRestore];
    let caps = LinuxCapabilitiesBuilder::default()
        .bounding(set(&all))
        .permitted(set(&all))
        .effective(set(&all))
        .inheritable(set(&[]))
        .ambient(set(&[CheckpointRestore]))
        .build()
        .unwrap();
    // A 5.8 kernel (last capability CAP_BPF, 39) without CAP_SYS_RESOURCE in its bounding set.
    let missing = unavailable_in(&caps, 39, bits(&[Chown, Kill]));
    assert_eq!(missing, bits(&[SysResource, CheckpointRestore]));
    let w = unavailable_warning(missing).unwrap();
    assert!(w.contains("CAP_SYS_RESOURCE,CAP_CHECKPOINT_RESTORE"), "{w}");
    assert_eq!(unavailable_warning(0), None);
}

/// As the init does it: what the host cannot grant is warned about before the bounding set is
/// dropped, and applying the sets does not warn about it again.
#[test]
fn host_refusals_are_not_warned_twice() {
    use Capability::*;
    if status("CapBnd").unwrap() & bits(&[SysResource]) != 0 {
        eprintln!("skipped: this host has CAP_SYS_RESOURCE in its bounding set");
        return;
    }
    let caps = LinuxCapabilitiesBuilder::default()
        .bounding(set(&[Chown, SysResource]))
        .permitted(set(&[Chown, SysResource]))
        .effective(set(&[Chown, SysResource]))
        .inheritable(set(&[Chown, SysResource]))
        .ambient(set(&[Chown, SysResource]))
        .build()
        .unwrap();
    run(move || {
        let missing = unavailable(&caps);
        if missing != bits(&[SysResource]) {
            return Err(format!("unavailable: {missing:#x}"));
        }
        drop_bounding(&caps).map_err(|e| e.to_string())?;
        let w = apply_with_warnings(&caps, missing).map_err(|e| e.to_string())?;
        if !w.is_empty() {
            return Err(format!("warned again: {w:?}"));
        }
        expect("CapPrm", bits(&[Chown]))?;
        expect("CapAmb", bits(&[Chown]))
    })
    .unwrap();
}
