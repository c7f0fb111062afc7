//! critest's AppArmor specs.

use super::*;
use crate::framework::*;
use berth_tests_support::cri::*;
use k8s_cri::v1::*;
use std::path::{Path, PathBuf};

/// The two profiles critest loads before its AppArmor specs: one denies every write, the other
/// only audits writes.
const APPARMOR_TEST_PROFILES: &str = "
profile cri-validate-apparmor-test-deny-write flags=(attach_disconnected) {
  file,
  deny /** w,
}
profile cri-validate-apparmor-test-audit-write flags=(attach_disconnected) {
  file,
  audit /** w,
}
";

/// The test profiles, loaded; unloaded again when dropped (critest leaves them loaded).
struct TestProfiles(PathBuf);

impl TestProfiles {
    fn load(dir: &Path) -> TestProfiles {
        let file = dir.join("apparmor-test-profiles");
        std::fs::write(&file, APPARMOR_TEST_PROFILES).unwrap();
        let out = std::process::Command::new("apparmor_parser")
            .args(["-r", "-W"])
            .arg(&file)
            .output()
            .expect("apparmor_parser");
        assert!(out.status.success(), "{out:?}");
        TestProfiles(file)
    }
}

impl Drop for TestProfiles {
    fn drop(&mut self) {
        let _ = std::process::Command::new("apparmor_parser")
            .arg("-R")
            .arg(&self.0)
            .output();
    }
}

/// A pod on the host's network: AppArmor has nothing to do with the pod's network, and this
/// test also runs in a VM without the pod network's bridge (scripts/apparmor-vm.sh).
async fn host_network_pod(c: &mut Cri) -> Result<(String, PodSandboxConfig, PodGone), String> {
    let host_net = NamespaceOption {
        network: mode(NamespaceMode::Node),
        ..Default::default()
    };
    ns_pod(c, host_net, None).await
}

fn apparmor(profile_type: security_profile::ProfileType, name: &str) -> Option<SecurityProfile> {
    Some(SecurityProfile {
        profile_type: profile_type as i32,
        localhost_ref: name.into(),
    })
}

/// critest's createContainerWithAppArmor: `touch foo` under `profile`, then its exit code.
/// The deny-write spec names the profile in the deprecated string, as critest does; the other
/// in the SecurityProfile, as kubelets from 1.30 do.
async fn apparmor_touch(
    c: &mut Cri,
    pod: &str,
    cfg: &PodSandboxConfig,
    name: &str,
) -> Result<i32, String> {
    let mut ctr = Cri::container(
        &format!("apparmor-test-{name}-"),
        &busybox(),
        &["touch", "foo"],
    );
    #[allow(deprecated)]
    let sc = if name.ends_with("deny-write") {
        LinuxContainerSecurityContext {
            apparmor_profile: format!("localhost/{name}"),
            ..Default::default()
        }
    } else {
        LinuxContainerSecurityContext {
            apparmor: apparmor(security_profile::ProfileType::Localhost, name),
            ..Default::default()
        }
    };
    ctr.linux = security(sc);
    let id = c.create_container(pod, cfg, ctr).await?;
    c.start(&id).await?;
    let s = c.wait_state(&id, ContainerState::ContainerExited).await?;
    Ok(s.exit_code)
}

async fn apparmor_unloaded(mut c: Cri) -> R {
    let (pod, cfg, _gone) = host_network_pod(&mut c).await?;
    let mut ctr = Cri::container("apparmor-test-", &busybox(), &["touch", "foo"]);
    #[allow(deprecated)]
    let sc = LinuxContainerSecurityContext {
        apparmor_profile: "localhost/non-existent-profile".into(),
        ..Default::default()
    };
    ctr.linux = security(sc);
    let r = c.create_container(&pod, &cfg, ctr).await;
    check!(
        r.is_err(),
        "CreateContainer with an unloaded profile succeeded: {r:?}"
    );
    c.cleanup_pod(&pod).await
}

async fn apparmor_enforced(mut c: Cri, name: &str, write_ok: bool) -> R {
    let (pod, cfg, _gone) = host_network_pod(&mut c).await?;
    let code = apparmor_touch(&mut c, &pod, &cfg, name).await?;
    check!(
        (code == 0) == write_ok,
        "touch under {name} exited with {code}"
    );
    c.cleanup_pod(&pod).await
}

/// Not critest's: the profile each kind of container runs under, as seen from an exec into it
/// (exec'd processes take the container's profile, as with runc): berth-default for nothing
/// asked and runtime/default; none for unconfined and for privileged containers.
async fn apparmor_defaults(mut c: Cri) -> R {
    use security_profile::ProfileType::*;
    let (pod, cfg, _gone) = host_network_pod(&mut c).await?;
    for (what, profile, privileged, want) in [
        ("nothing asked", None, false, "berth-default (enforce)"),
        (
            "runtime/default",
            apparmor(RuntimeDefault, ""),
            false,
            "berth-default (enforce)",
        ),
        ("unconfined", apparmor(Unconfined, ""), false, "unconfined"),
        ("privileged", None, true, "unconfined"),
    ] {
        let mut ctr = Cri::default_container("apparmor-default-");
        ctr.linux = security(LinuxContainerSecurityContext {
            apparmor: profile,
            privileged,
            ..Default::default()
        });
        let id = c.create_container(&pod, &cfg, ctr).await?;
        c.start_running(&id).await?;
        let got = c.exec_ok(&id, &["cat", "/proc/self/attr/current"]).await?;
        check!(
            got.trim() == want,
            "{what}: the profile is {got:?}, not {want:?}"
        );
    }
    // The containers stop (the shim's signals reach them) and go with the pod.
    c.cleanup_pod(&pod).await
}

/// Not critest's (it skips AppArmor on a host without it): a profile asked for by name, or
/// runtime/default, is refused at CreateContainer, and nothing is left of the container;
/// nothing asked runs.
async fn apparmor_absent(mut c: Cri) -> R {
    use security_profile::ProfileType::*;
    let (pod, cfg, _gone) = host_network_pod(&mut c).await?;
    for profile in [
        apparmor(Localhost, "berth-test"),
        apparmor(RuntimeDefault, ""),
    ] {
        let mut ctr = Cri::container("apparmor-absent-", &busybox(), &["true"]);
        ctr.linux = security(LinuxContainerSecurityContext {
            apparmor: profile.clone(),
            ..Default::default()
        });
        let e = match c.create_container(&pod, &cfg, ctr).await {
            Ok(id) => return Err(format!("{profile:?}: CreateContainer succeeded ({id})")),
            Err(e) => e,
        };
        check!(
            e.contains("FailedPrecondition") && e.contains("AppArmor is not enabled"),
            "{profile:?}: {e}"
        );
    }
    let left = c
        .list_containers(ContainerFilter {
            pod_sandbox_id: pod.clone(),
            ..Default::default()
        })
        .await?;
    check!(left.is_empty(), "refused containers are listed: {left:?}");
    let ctr = Cri::container("apparmor-absent-", &busybox(), &["true"]);
    let id = c.create_container(&pod, &cfg, ctr).await?;
    c.start(&id).await?;
    let s = c.wait_state(&id, ContainerState::ContainerExited).await?;
    check!(s.exit_code == 0, "nothing asked: exit code {}", s.exit_code);
    c.cleanup_pod(&pod).await
}

pub async fn specs() {
    let d = daemon("critest-aa", 26);
    let c = Cri::new(&d).await;
    let mut suite = Suite::new();
    if berth_runtime::apparmor::enabled() {
        let _profiles = TestProfiles::load(&d.dir);
        let s = "AppArmor runtime should support apparmor";
        suite
            .spec(
                &format!("{s} should fail with an unloaded profile"),
                Box::pin(apparmor_unloaded(c.clone())),
            )
            .await;
        suite
            .spec(
                &format!("{s} should enforce a profile blocking writes"),
                Box::pin(apparmor_enforced(
                    c.clone(),
                    "cri-validate-apparmor-test-deny-write",
                    false,
                )),
            )
            .await;
        suite
            .spec(
                &format!("{s} should enforce a permissive profile"),
                Box::pin(apparmor_enforced(
                    c.clone(),
                    "cri-validate-apparmor-test-audit-write",
                    true,
                )),
            )
            .await;
        suite
            .spec(
                "AppArmor (berth) the default profile, unconfined and privileged",
                Box::pin(apparmor_defaults(c.clone())),
            )
            .await;
    } else {
        suite
            .spec(
                "AppArmor (berth, a host without it) profiles are refused, none asked runs",
                Box::pin(apparmor_absent(c.clone())),
            )
            .await;
    }
    suite.finish();
    assert_eq!(d.leftovers(), Vec::<String>::new());
}
