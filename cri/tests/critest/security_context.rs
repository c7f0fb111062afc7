//! critest's Security Context specs.

use super::*;
use crate::framework::*;
use crate::test_images::*;
use berth_tests_support::cri::*;
use k8s_cri::v1::*;
use std::path::{Path, PathBuf};
use std::time::Duration;

pub async fn specs() {
    let (_bridge, d) = critest_daemon("critest-sec", 23);
    let c = Cri::new(&d).await;
    let images = Images::new(&d.dir, "sec");
    let mut suite = Suite::new();
    let ns = "Security Context NamespaceOption";
    suite
        .spec(
            &format!("{ns} runtime should support HostPID"),
            Box::pin(host_pid(c.clone())),
        )
        .await;
    for host in [true, false] {
        suite
            .spec(
                &format!("{ns} runtime should support HostIpc is {host}"),
                Box::pin(host_ipc(c.clone(), host)),
            )
            .await;
    }
    suite
        .spec(
            &format!("{ns} runtime should support PodPID"),
            Box::pin(pod_pid(c.clone())),
        )
        .await;
    suite
        .spec(
            &format!("{ns} runtime should support ContainerPID"),
            Box::pin(container_pid(c.clone())),
        )
        .await;
    for host in [true, false] {
        suite
            .spec(
                &format!("{ns} runtime should support HostNetwork is {host}"),
                Box::pin(host_network(c.clone(), host)),
            )
            .await;
    }
    let b = "Security Context bucket runtime should support";
    suite
        .spec(
            &format!("{b} SupplementalGroups"),
            Box::pin(supplemental_groups(c.clone())),
        )
        .await;
    suite
        .spec(
            &format!("{b} RunAsUser, RunAsUserName, RunAsGroup (and an error for RunAsGroup without RunAsUser)"),
            Box::pin(run_as(c.clone())),
        )
        .await;
    for ro in [false, true] {
        suite
            .spec(
                &format!("{b} that ReadOnlyRootfs is {ro}"),
                Box::pin(readonly_rootfs(c.clone(), ro)),
            )
            .await;
    }
    for p in [true, false] {
        suite
            .spec(
                &format!("{b} Privileged is {p}"),
                Box::pin(privileged(c.clone(), p)),
            )
            .await;
    }
    suite
        .spec(
            &format!("{b} adding and dropping capability, adding and dropping ALL capabilities"),
            Box::pin(capabilities(c.clone())),
        )
        .await;
    suite
        .spec(
            &format!("{b} MaskedPaths and ReadonlyPaths"),
            Box::pin(masked_and_readonly_paths(c.clone(), real_ls_image(&images))),
        )
        .await;
    suite
        .spec(
            "Security Context SeccompProfilePath should support seccomp unconfined, localhost, \
             default and nil profiles on the container",
            Box::pin(seccomp_profiles(c.clone(), d.dir.clone())),
        )
        .await;
    suite
        .spec(
            "Security Context SeccompProfilePath runtime should not block, block, and ignore \
             when privileged, setting host name",
            Box::pin(seccomp_hostname(c.clone(), d.dir.clone())),
        )
        .await;
    suite
        .spec(
            "Security Context NoNewPrivs should not allow privilege escalation when true, \
             should allow it when false",
            Box::pin(no_new_privs(c.clone(), nnp_image(&images, &d.dir))),
        )
        .await;
    suite
        .spec(
            "Security Context SupplementalGroupsPolicy Merge (default) and Strict",
            Box::pin(supplemental_groups_policy(
                c.clone(),
                &images,
                d.dir.clone(),
            )),
        )
        .await;
    suite.finish();
    assert_eq!(d.leftovers(), Vec::<String>::new());
}

/// A container with the pod's namespace options (critest's createNamespaceContainer).
fn ns_container(
    prefix: &str,
    image: &str,
    opts: &NamespaceOption,
    command: &[&str],
) -> ContainerConfig {
    let mut ctr = Cri::container(prefix, image, command);
    ctr.linux = Some(LinuxContainerConfig {
        security_context: Some(LinuxContainerSecurityContext {
            namespace_options: Some(opts.clone()),
            ..Default::default()
        }),
        ..Default::default()
    });
    ctr
}

async fn host_pid(mut c: Cri) -> R {
    let opts = NamespaceOption {
        pid: mode(NamespaceMode::Node),
        ipc: mode(NamespaceMode::Pod),
        network: mode(NamespaceMode::Pod),
        ..Default::default()
    };
    let (pod, cfg, _gone) = ns_pod(&mut c, opts.clone(), None).await?;
    let web = c
        .create_container(
            &pod,
            &cfg,
            ns_container("nginx-container-hostpid-", &nginx(), &opts, &[]),
        )
        .await?;
    c.start_running(&web).await?;
    let pid = c
        .exec_ok(
            &web,
            &[
                "sh",
                "-c",
                "while [ ! -f /var/run/nginx.pid ]; do sleep 1; done && cat /var/run/nginx.pid",
            ],
        )
        .await?;
    let pid = pid.trim().to_string();
    let bb = c
        .create_container(
            &pod,
            &cfg,
            ns_container(
                "container-with-HostPID-test-",
                &busybox(),
                &opts,
                &["sh", "-c", "sleep 1000"],
            ),
        )
        .await?;
    c.start_running(&bb).await?;
    let out = c.exec_ok(&bb, &["pidof", "nginx", "||", "true"]).await?;
    check!(
        !out.trim().is_empty() && out.contains(&pid),
        "nginx's pid {pid} should be seen by hostpid containers: {out:?}"
    );
    c.cleanup_pod(&pod).await
}

async fn host_ipc(mut c: Cri, host: bool) -> R {
    let out = run(std::process::Command::new("ipcmk").args(["-M", "1048576"]))?;
    let seg = out
        .trim()
        .trim_start_matches("Shared memory id: ")
        .to_string();
    struct Rm(String);
    impl Drop for Rm {
        fn drop(&mut self) {
            let _ = std::process::Command::new("ipcrm")
                .args(["-m", &self.0])
                .status();
        }
    }
    let _rm = Rm(seg.clone());
    let opts = NamespaceOption {
        pid: mode(NamespaceMode::Pod),
        ipc: mode(if host {
            NamespaceMode::Node
        } else {
            NamespaceMode::Pod
        }),
        network: mode(NamespaceMode::Pod),
        ..Default::default()
    };
    let (pod, cfg, _gone) = ns_pod(&mut c, opts.clone(), None).await?;
    let id = c
        .create_container(
            &pod,
            &cfg,
            ns_container(
                "namespace-container-",
                &busybox(),
                &opts,
                &["sh", "-c", "top"],
            ),
        )
        .await?;
    c.start_running(&id).await?;
    // critest runs `ipcs -m`; busybox of Debian has no ipcs: the same table from /proc.
    let out = c.exec_ok(&id, &["cat", "/proc/sysvipc/shm"]).await?;
    let seen = out
        .lines()
        .skip(1)
        .any(|l| l.split_whitespace().nth(1) == Some(seg.as_str()));
    check!(
        seen == host,
        "segment {seg} seen: {seen}, want {host}: {out}"
    );
    c.cleanup_pod(&pod).await
}

async fn pod_pid(mut c: Cri) -> R {
    let opts = NamespaceOption {
        pid: mode(NamespaceMode::Pod),
        ..Default::default()
    };
    let (pod, cfg, _gone) = ns_pod(&mut c, opts.clone(), None).await?;
    let id = c
        .create_container(
            &pod,
            &cfg,
            ns_container("nginx-container-process-namespace-", &nginx(), &opts, &[]),
        )
        .await?;
    c.start_running(&id).await?;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let out = c.exec_ok(&id, &["cat", "/proc/1/cmdline"]).await?;
    check!(
        !out.contains("master process"),
        "pid 1 is nginx's master: {out:?}"
    );
    c.cleanup_pod(&pod).await
}

async fn container_pid(mut c: Cri) -> R {
    let opts = NamespaceOption {
        pid: mode(NamespaceMode::Container),
        ..Default::default()
    };
    let (pod, cfg, _gone) = ns_pod(&mut c, opts.clone(), None).await?;
    let id = c
        .create_container(
            &pod,
            &cfg,
            ns_container("nginx-container-pid-", &nginx(), &opts, &[]),
        )
        .await?;
    c.start_running(&id).await?;
    c.exec_ok(
        &id,
        &[
            "sh",
            "-c",
            "while ! cat /proc/1/cmdline | grep \"master process\"; do sleep 1; done",
        ],
    )
    .await?;
    c.cleanup_pod(&pod).await
}

async fn host_network(mut c: Cri, host: bool) -> R {
    let l = std::net::TcpListener::bind("0.0.0.0:0").unwrap();
    let port = l.local_addr().unwrap().port();
    let opts = NamespaceOption {
        pid: mode(NamespaceMode::Pod),
        ipc: mode(NamespaceMode::Pod),
        network: mode(if host {
            NamespaceMode::Node
        } else {
            NamespaceMode::Pod
        }),
        ..Default::default()
    };
    let name = format!("NamespaceOption-PodSandbox-{}", uuid());
    let logs = c.temp_dir("podLogTest").join(&name);
    std::fs::create_dir_all(&logs).unwrap();
    let (pod, cfg, _gone) = ns_pod(&mut c, opts.clone(), Some(&logs)).await?;
    let mut ctr = ns_container(
        "container-with-HostNetwork-test-",
        &busybox(),
        &opts,
        &["sh", "-c", "netstat -ln"],
    );
    let log = log_to(&mut ctr, &logs);
    let id = c.create_container(&pod, &cfg, ctr).await?;
    c.start(&id).await?;
    let want = format!(":{port}");
    eventually(60, Duration::from_secs(1), || {
        let log = log.clone();
        let want = want.clone();
        async move {
            let e = log_entries(&log)?;
            let seen = e.iter().any(|(_, l)| l.contains(&want));
            if host {
                check!(seen, "port {want} not in the container's netstat");
            } else {
                check!(!seen, "port {want} (the host's) in the container's netstat");
            }
            Ok(())
        }
    })
    .await?;
    drop(l);
    c.cleanup_pod(&pod).await
}

async fn supplemental_groups(mut c: Cri) -> R {
    let (pod, cfg, _gone) = c.default_pod("create-PodSandbox-for-container-").await?;
    let mut ctr = Cri::container(
        "container-with-SupplementalGroups-test-",
        &busybox(),
        &["sh", "-c", "top"],
    );
    ctr.linux = security(LinuxContainerSecurityContext {
        supplemental_groups: vec![1234, 5678],
        ..Default::default()
    });
    let id = c.create_container(&pod, &cfg, ctr).await?;
    c.start_running(&id).await?;
    let out = c.exec_ok(&id, &["id", "-G"]).await?;
    let groups: Vec<&str> = out.trim().split(' ').collect();
    check!(
        groups.contains(&"1234") && groups.contains(&"5678"),
        "id -G: {out:?}"
    );
    c.cleanup_pod(&pod).await
}

async fn run_as(mut c: Cri) -> R {
    let (pod, cfg, _gone) = c.log_pod().await?;
    let mut ctr = Cri::container(
        "container-with-RunAsUser-test-",
        &busybox(),
        &["sh", "-c", "top"],
    );
    ctr.linux = security(LinuxContainerSecurityContext {
        run_as_user: Some(Int64Value { value: 1001 }),
        ..Default::default()
    });
    let id = c.create_container(&pod, &cfg, ctr).await?;
    c.start_running(&id).await?;
    let out = c.exec_ok(&id, &["id", "-u"]).await?;
    check!(out == "1001\n", "id -u: {out:?}");
    let mut ctr = Cri::container(
        "container-with-RunAsUserName-test-",
        &busybox(),
        &["sh", "-c", "top"],
    );
    ctr.linux = security(LinuxContainerSecurityContext {
        run_as_username: "nobody".into(),
        ..Default::default()
    });
    let id = c.create_container(&pod, &cfg, ctr).await?;
    c.start_running(&id).await?;
    let out = c.exec_ok(&id, &["id", "-nu"]).await?;
    check!(out == "nobody\n", "id -nu: {out:?}");
    let mut ctr = Cri::container(
        "container-with-RunAsGroup-test-",
        &busybox(),
        &["sh", "-c", "echo $(id -u):$(id -g)"],
    );
    ctr.linux = security(LinuxContainerSecurityContext {
        run_as_user: Some(Int64Value { value: 1001 }),
        run_as_group: Some(Int64Value { value: 1002 }),
        ..Default::default()
    });
    let log = log_to(&mut ctr, Path::new(&cfg.log_directory));
    let id = c.create_container(&pod, &cfg, ctr).await?;
    c.start(&id).await?;
    c.wait_state(&id, ContainerState::ContainerExited).await?;
    log_has(&log, "1001:1002\n", "stdout")?;
    let mut ctr = Cri::container(
        "container-with-RunAsGroup-without-RunAsUser-test-",
        &busybox(),
        &["sh", "-c", "echo $(id -u):$(id -g)"],
    );
    ctr.linux = security(LinuxContainerSecurityContext {
        run_as_group: Some(Int64Value { value: 1002 }),
        ..Default::default()
    });
    check!(
        c.create_container(&pod, &cfg, ctr).await.is_err(),
        "RunAsGroup without RunAsUser was accepted"
    );
    c.cleanup_pod(&pod).await
}

async fn readonly_rootfs(mut c: Cri, ro: bool) -> R {
    let (pod, cfg, _gone) = c.log_pod().await?;
    let mut ctr = Cri::container(
        &format!("container-with-ReadOnlyRootfs-{ro}-test-"),
        &busybox(),
        &[
            "sh",
            "-c",
            "touch test.go && [ -f test.go ] && echo 'Found'",
        ],
    );
    ctr.linux = security(LinuxContainerSecurityContext {
        readonly_rootfs: ro,
        ..Default::default()
    });
    let log = log_to(&mut ctr, Path::new(&cfg.log_directory));
    let id = c.create_container(&pod, &cfg, ctr).await?;
    c.start(&id).await?;
    c.wait_state(&id, ContainerState::ContainerExited).await?;
    if ro {
        log_has(&log, "touch: test.go: Read-only file system\n", "stderr")?;
    } else {
        log_has(&log, "Found\n", "stdout")?;
    }
    c.cleanup_pod(&pod).await
}

async fn privileged(mut c: Cri, p: bool) -> R {
    let (pod, cfg, _gone) = privileged_pod(&mut c, p).await?;
    let mut ctr = Cri::container(
        &format!("container-with-isPrivileged-{p}-test-"),
        &busybox(),
        &["sh", "-c", "top"],
    );
    ctr.linux = security(LinuxContainerSecurityContext {
        privileged: p,
        ..Default::default()
    });
    let id = c.create_container(&pod, &cfg, ctr).await?;
    c.start_running(&id).await?;
    let (out, err, code) = c.exec(&id, &["brctl", "addbr", "foobar"], 30).await?;
    check!(
        (code == 0) == p,
        "brctl addbr foobar: exit {code} {out:?} {err:?}"
    );
    c.cleanup_pod(&pod).await
}

async fn capabilities(mut c: Cri) -> R {
    let (pod, cfg, _gone) = c.default_pod("create-PodSandbox-for-container-").await?;
    let caps = |add: &[&str], drop: &[&str]| {
        security(LinuxContainerSecurityContext {
            capabilities: Some(Capability {
                add_capabilities: add.iter().map(|s| s.to_string()).collect(),
                drop_capabilities: drop.iter().map(|s| s.to_string()).collect(),
                ..Default::default()
            }),
            ..Default::default()
        })
    };
    let make = async |c: &mut Cri, prefix: &str, linux| -> Result<String, String> {
        let mut ctr = Cri::container(prefix, &busybox(), &["sh", "-c", "top"]);
        ctr.linux = linux;
        let id = c.create_container(&pod, &cfg, ctr).await?;
        c.start_running(&id).await?;
        Ok(id)
    };
    // adding capability
    let id = make(
        &mut c,
        "container-with-added-capability-test-",
        caps(&["NET_ADMIN"], &[]),
    )
    .await?;
    c.exec_ok(&id, &["brctl", "addbr", "foobar"]).await?;
    let id = make(
        &mut c,
        "container-with-notCapability-test-",
        Some(LinuxContainerConfig::default()),
    )
    .await?;
    c.exec_fails(&id, &["brctl", "addbr", "foobar"]).await?;
    // dropping capability
    let id = make(
        &mut c,
        "container-with-dropped-capability-test-",
        caps(&[], &["NET_RAW"]),
    )
    .await?;
    let (out, err) = c.exec_fails(&id, &["ping", "127.0.0.1"]).await?;
    check!(!out.is_empty(), "ping printed nothing");
    check!(err.contains("permission denied"), "ping: {err:?}");
    // adding and dropping ALL
    let all = regex_like_capbnd_zero;
    let id = make(
        &mut c,
        "container-with-added-all-capability-test-",
        caps(&["ALL"], &[]),
    )
    .await?;
    let out = c.exec_ok(&id, &["cat", "/proc/self/status"]).await?;
    check!(!all(&out), "CapBnd is empty with ALL added: {out}");
    let id = make(
        &mut c,
        "container-with-dropped-all-capability-test-",
        caps(&[], &["ALL"]),
    )
    .await?;
    let out = c.exec_ok(&id, &["cat", "/proc/self/status"]).await?;
    check!(all(&out), "CapBnd not empty with ALL dropped: {out}");
    c.cleanup_pod(&pod).await
}

/// critest's regexp `CapBnd:\s0000000000000000`.
fn regex_like_capbnd_zero(status: &str) -> bool {
    status.lines().any(|l| {
        l.strip_prefix("CapBnd:")
            .and_then(|r| r.strip_prefix(|c: char| c.is_whitespace()))
            .is_some_and(|r| r.starts_with("0000000000000000"))
    })
}

/// busybox with /bin/ls a file of its own, as in critest's busybox image (in the fixture's,
/// Debian's layout, /bin/ls is a symlink to /bin/busybox, and masking it masks busybox itself,
/// with runc as with berth).
fn real_ls_image(images: &Images) -> Result<String, String> {
    let bb = std::env::var("BERTH_FIXTURES").unwrap_or("/var/cache/berth-fixtures".into());
    let busybox = Path::new(&bb).join("busybox/bundle/rootfs/bin/busybox");
    images.make(
        "busybox-ls",
        &["latest"],
        None,
        None,
        &[(&busybox, "/bin/ls")],
    )?;
    Ok(format!("{}:latest", images.name("busybox-ls")))
}

async fn masked_and_readonly_paths(mut c: Cri, image: Result<String, String>) -> R {
    let image = image?;
    let (pod, cfg, _gone) = c.default_pod("create-PodSandbox-for-container-").await?;
    let mut ctr = Cri::container("container-with-maskedpaths", &image, &["sh", "-c", "top"]);
    ctr.linux = security(LinuxContainerSecurityContext {
        masked_paths: vec!["/bin/ls".into()],
        ..Default::default()
    });
    let id = c.create_container(&pod, &cfg, ctr).await?;
    c.start_running(&id).await?;
    // critest runs `sh -c ls`; Debian's busybox sh runs its ls applet without looking for
    // /bin/ls, so the masked file is named.
    let (_, err) = c.exec_fails(&id, &["/bin/sh", "-c", "/bin/ls"]).await?;
    check!(
        err == "/bin/sh: /bin/ls: Permission denied\n",
        "masked /bin/ls: {err:?}"
    );
    let mut ctr = Cri::container(
        "container-with-readonlypaths",
        &busybox(),
        &["sh", "-c", "top"],
    );
    ctr.linux = security(LinuxContainerSecurityContext {
        readonly_paths: vec!["/tmp".into()],
        ..Default::default()
    });
    let id = c.create_container(&pod, &cfg, ctr).await?;
    c.start_running(&id).await?;
    let (_, err) = c.exec_fails(&id, &["touch", "/tmp/test"]).await?;
    check!(
        err == "touch: /tmp/test: Read-only file system\n",
        "read-only /tmp: {err:?}"
    );
    c.cleanup_pod(&pod).await
}

/// critest's seccomp profiles, written as it writes them.
fn seccomp_profile(dir: &Path, name: &str, syscalls: &str) -> String {
    let text = format!(
        "{{\n     \"defaultAction\": \"SCMP_ACT_ALLOW\",\n     \"syscalls\": [\n         {{\n             \"names\": [{syscalls}],\n             \"action\": \"SCMP_ACT_ERRNO\"\n         }}\n     ]\n}}"
    );
    let d = dir.join("seccomp-tests");
    std::fs::create_dir_all(&d).unwrap();
    file_with(&d, name, &text).display().to_string()
}

fn profile(t: security_profile::ProfileType, path: &str) -> Option<SecurityProfile> {
    Some(SecurityProfile {
        profile_type: t as i32,
        localhost_ref: path.into(),
    })
}

/// critest's seccompTestContainer: a pod and a container with `p`, running.
async fn seccomp_container(
    c: &mut Cri,
    p: Option<SecurityProfile>,
) -> Result<(String, PodGone), String> {
    let mut cfg = Cri::pod_config("seccomp-sandbox-");
    cfg.linux.as_mut().unwrap().security_context = Some(LinuxSandboxSecurityContext {
        seccomp: p.clone(),
        ..Default::default()
    });
    let (pod, gone) = c.run_pod(&cfg).await?;
    let mut ctr = Cri::container("seccomp-container-", &busybox(), &["sh", "-c", "top"]);
    ctr.linux = security(LinuxContainerSecurityContext {
        seccomp: p,
        ..Default::default()
    });
    let id = c.create_container(&pod, &cfg, ctr).await?;
    c.start_running(&id).await?;
    Ok((id, gone))
}

async fn seccomp_profiles(mut c: Cri, dir: PathBuf) -> R {
    use security_profile::ProfileType;
    let chmod = seccomp_profile(&dir, "block-chmod.json", "\"chmod\", \"fchmodat\"");
    let grep = ["grep", "Seccomp:", "/proc/self/status"];
    for (what, p, mode) in [
        ("unconfined", profile(ProfileType::Unconfined, ""), "0"),
        ("default", Some(SecurityProfile::default()), "2"),
        ("nil", None, "0"),
    ] {
        let (id, _gone) = seccomp_container(&mut c, p).await?;
        let out = c.exec_ok(&id, &grep).await?;
        check!(out.contains(mode), "{what}: {out:?}, want mode {mode}");
    }
    let (id, _gone) = seccomp_container(&mut c, profile(ProfileType::Localhost, &chmod)).await?;
    let (_, err) = c.exec_fails(&id, &["chmod", "400", "/"]).await?;
    check!(err.contains("Operation not permitted"), "chmod: {err:?}");
    Ok(())
}

async fn seccomp_hostname(mut c: Cri, dir: PathBuf) -> R {
    use security_profile::ProfileType;
    let block = seccomp_profile(&dir, "block-host-name.json", "\"sethostname\"");
    for (what, p, caps, privileged, settable) in [
        (
            "unconfined with SYS_ADMIN",
            profile(ProfileType::Unconfined, ""),
            vec!["SYS_ADMIN"],
            false,
            true,
        ),
        (
            "blocking with SYS_ADMIN",
            profile(ProfileType::Localhost, &block),
            vec!["SYS_ADMIN"],
            false,
            false,
        ),
        (
            "blocking, privileged",
            profile(ProfileType::Localhost, &block),
            vec![],
            true,
            true,
        ),
    ] {
        let (pod, cfg, _gone) = if privileged {
            privileged_pod(&mut c, true).await?
        } else {
            c.default_pod("create-PodSandbox-for-container-").await?
        };
        let mut ctr = Cri::container(
            "container-with-block-hostname-seccomp-profile-test-",
            &busybox(),
            &["sleep", "60"],
        );
        ctr.linux = security(LinuxContainerSecurityContext {
            privileged,
            capabilities: Some(Capability {
                add_capabilities: caps.iter().map(|s| s.to_string()).collect(),
                ..Default::default()
            }),
            seccomp: p,
            ..Default::default()
        });
        let id = c.create_container(&pod, &cfg, ctr).await?;
        c.start_running(&id).await?;
        let (_, err, code) = c.exec(&id, &["hostname", "ANewHostName"], 30).await?;
        check!(
            (code == 0) == settable,
            "{what}: hostname exit {code} {err:?}"
        );
        c.cleanup_pod(&pod).await?;
    }
    Ok(())
}

async fn no_new_privs(mut c: Cri, image: Result<String, String>) -> R {
    let image = image?;
    let (pod, cfg, _gone) = c.log_pod().await?;
    for (nnp, want) in [
        (true, "Effective uid: 1000\n"),
        (false, "Effective uid: 0\n"),
    ] {
        let mut ctr = Cri::container(&format!("alpine-nnp-{nnp}-"), &image, &[]);
        ctr.command.clear();
        ctr.linux = security(LinuxContainerSecurityContext {
            no_new_privs: nnp,
            run_as_user: Some(Int64Value { value: 1000 }),
            ..Default::default()
        });
        let log = log_to(&mut ctr, Path::new(&cfg.log_directory));
        let id = c.create_container(&pod, &cfg, ctr).await?;
        c.start(&id).await?;
        c.wait_state(&id, ContainerState::ContainerExited).await?;
        log_has(&log, want, "stdout")?;
    }
    c.cleanup_pod(&pod).await
}

/// cri-tools' test-image-predefined-group: user 1000 (group 1000) also in group 50000, USER 1000.
fn predefined_group_image(images: &Images, dir: &Path) -> Result<String, String> {
    let base = dir.join("predefined-group");
    std::fs::create_dir_all(&base).unwrap();
    let bb = std::env::var("BERTH_FIXTURES").unwrap_or("/var/cache/berth-fixtures".into());
    let etc = Path::new(&bb).join("busybox/bundle/rootfs/etc");
    let passwd = std::fs::read_to_string(etc.join("passwd")).map_err(|e| e.to_string())?
        + "default-user:x:1000:1000::/home/default-user:/bin/sh\n";
    let group = std::fs::read_to_string(etc.join("group")).map_err(|e| e.to_string())?
        + "default-user:x:1000:\ngroup-defined-in-image:x:50000:default-user\n";
    let p = file_with(&base, "passwd", &passwd);
    let g = file_with(&base, "group", &group);
    images.make(
        "test-image-predefined-group",
        &["latest"],
        Some("1000"),
        None,
        &[(&p, "/etc/passwd"), (&g, "/etc/group")],
    )?;
    Ok(images.name("test-image-predefined-group"))
}

async fn supplemental_groups_policy(mut c: Cri, images: &Images, dir: PathBuf) -> R {
    let features =
        c.rt.status(StatusRequest { verbose: false })
            .await
            .ctx("Status")?
            .features;
    check!(
        features.is_some_and(|f| f.supplemental_groups_policy),
        "the runtime does not support SupplementalGroupsPolicy feature"
    );
    let image = predefined_group_image(images, &dir)?;
    for (policy, groups) in [
        (SupplementalGroupsPolicy::Merge, vec![1000, 1234, 50000]),
        (SupplementalGroupsPolicy::Strict, vec![1000, 1234]),
    ] {
        let (pod, cfg, _gone) = c.log_pod().await?;
        let mut ctr = Cri::container(
            "container-with-SupplementalGroupsPolicyMerge-",
            &image,
            &["sh", "-c", "id -G; sleep infinity"],
        );
        ctr.linux = security(LinuxContainerSecurityContext {
            run_as_user: Some(Int64Value { value: 1000 }),
            supplemental_groups: vec![1234],
            supplemental_groups_policy: policy as i32,
            ..Default::default()
        });
        let log = log_to(&mut ctr, Path::new(&cfg.log_directory));
        let id = c.create_container(&pod, &cfg, ctr).await?;
        c.start(&id).await?;
        let want_user = ContainerUser {
            linux: Some(LinuxContainerUser {
                uid: 1000,
                gid: 1000,
                supplemental_groups: groups.clone(),
            }),
        };
        let text = groups
            .iter()
            .map(|g| g.to_string())
            .collect::<Vec<_>>()
            .join(" ")
            + "\n";
        let mut c2 = c.clone();
        eventually(60, Duration::from_secs(1), || {
            let (id, log, want_user) = (id.clone(), log.clone(), want_user.clone());
            let mut c = c2.clone();
            async move {
                let s = c.status(&id).await?;
                check!(
                    s.state == ContainerState::ContainerRunning as i32,
                    "not running"
                );
                let mut user = s.user.clone().unwrap_or_default();
                if let Some(l) = user.linux.as_mut() {
                    l.supplemental_groups.sort();
                }
                check!(user == want_user, "{policy:?}: status user {:?}", s.user);
                check!(!log_entries(&log)?.is_empty(), "no log yet");
                Ok(())
            }
        })
        .await?;
        c2 = c.clone();
        let _ = &mut c2;
        log_has(&log, &text, "stdout")?;
        let out = c.exec_ok(&id, &["id", "-G"]).await?;
        check!(out == text, "{policy:?}: exec id -G {out:?}, want {text:?}");
        c.cleanup_pod(&pod).await?;
    }
    Ok(())
}
