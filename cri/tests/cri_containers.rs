//! Containers in berthd's pod sandboxes, through the CRI v1 API the way a kubelet drives it:
//! the security context, namespaces, resources (the container's and the pod's) and events,
//! mount propagation, and a stop that comes during a start.

use berth_tests_support::cri::*;
use berth_tests_support::*;
use k8s_cri::v1::runtime_service_client::RuntimeServiceClient;
use k8s_cri::v1::*;
use tonic::transport::Channel;

/// The memory limit file of cgroup `path` (cgroup v2 or the v1 memory hierarchy).
fn memory_limit_file(path: &str) -> std::path::PathBuf {
    let v2 = std::path::PathBuf::from(format!("/sys/fs/cgroup{path}/memory.max"));
    if std::path::Path::new("/sys/fs/cgroup/cgroup.controllers").exists() {
        v2
    } else {
        format!("/sys/fs/cgroup/memory{path}/memory.limit_in_bytes").into()
    }
}

/// Removes the cgroup parent a test gave its pod, in every hierarchy (the kubelet owns pod
/// cgroups; the runtime makes them when missing but never removes them).
struct CgroupGone(String);

impl Drop for CgroupGone {
    fn drop(&mut self) {
        let mut dirs = vec![std::path::PathBuf::from(format!(
            "/sys/fs/cgroup{}",
            self.0
        ))];
        for e in std::fs::read_dir("/sys/fs/cgroup")
            .into_iter()
            .flatten()
            .flatten()
        {
            dirs.push(e.path().join(self.0.trim_start_matches('/')));
        }
        for d in dirs {
            // Innermost first: the pod's directory, then its parent.
            let _ = std::fs::remove_dir(&d);
            if let Some(p) = d.parent() {
                let _ = std::fs::remove_dir(p);
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn security_context_namespaces_resources_and_events() {
    let n = 14;
    let _bridge = BridgeGone(format!("bk{n}"));
    let parent = format!("/berthtest{n}/pod1");
    let _cg = CgroupGone(parent.clone());
    let d = daemon("cri-security", n);
    write_pod_network(&d, n);
    let mut rt = RuntimeServiceClient::new(channel(&d).await);
    let image = pull(&d, "busybox").await;
    let mut events = rt
        .get_container_events(GetEventsRequest::default())
        .await
        .unwrap()
        .into_inner();

    let id = rt
        .run_pod_sandbox(RunPodSandboxRequest {
            config: Some(PodSandboxConfig {
                linux: Some(LinuxPodSandboxConfig {
                    cgroup_parent: parent.clone(),
                    sysctls: [("kernel.shm_rmid_forced".to_string(), "1".to_string())].into(),
                    ..Default::default()
                }),
                ..pod_config("sec")
            }),
            runtime_handler: String::new(),
        })
        .await
        .unwrap()
        .into_inner()
        .pod_sandbox_id;
    let profile = d.dir.join("no-mkdir.json");
    std::fs::write(
        &profile,
        r#"{"defaultAction":"SCMP_ACT_ALLOW","syscalls":[{"names":["mkdir","mkdirat"],"action":"SCMP_ACT_ERRNO","errnoRet":1}]}"#,
    )
    .unwrap();
    let (rtc, idc, imc) = (rt.clone(), id.clone(), image.clone());
    let create = move |name: &str, sec: LinuxContainerSecurityContext, extra: ContainerConfig| {
        let mut rt = rtc.clone();
        let (id, image, name) = (idc.clone(), imc.clone(), name.to_string());
        async move {
            rt.create_container(CreateContainerRequest {
                pod_sandbox_id: id,
                config: Some(ContainerConfig {
                    metadata: Some(ContainerMetadata { name, attempt: 0 }),
                    image: spec(&image),
                    command: vec!["sleep".into(), "1000".into()],
                    linux: Some(LinuxContainerConfig {
                        security_context: Some(sec),
                        ..extra.linux.clone().unwrap_or_default()
                    }),
                    ..extra
                }),
                sandbox_config: None,
            })
            .await
            .map(|r| r.into_inner().container_id)
        }
    };
    let rte = rt.clone();
    let exec = move |cid: &str, script: &str| {
        let mut rt = rte.clone();
        let (cid, script) = (cid.to_string(), script.to_string());
        async move {
            let out = rt
                .exec_sync(ExecSyncRequest {
                    container_id: cid,
                    cmd: vec!["sh".into(), "-c".into(), script],
                    timeout: 10,
                })
                .await
                .unwrap()
                .into_inner();
            (
                String::from_utf8_lossy(&out.stdout).trim().to_string(),
                out.exit_code,
            )
        }
    };

    // A locked-down container: a user, a group and a supplemental group, no_new_privs, the
    // runtime's default seccomp profile, one capability, a read-only root, a device, a masked
    // path, and resources.
    let locked = create(
        "locked",
        LinuxContainerSecurityContext {
            run_as_user: Some(Int64Value { value: 1000 }),
            run_as_group: Some(Int64Value { value: 1000 }),
            supplemental_groups: vec![1234],
            no_new_privs: true,
            readonly_rootfs: true,
            seccomp: Some(SecurityProfile {
                profile_type: security_profile::ProfileType::RuntimeDefault as i32,
                localhost_ref: String::new(),
            }),
            capabilities: Some(Capability {
                drop_capabilities: vec!["ALL".into()],
                add_capabilities: vec!["CHOWN".into()],
                ..Default::default()
            }),
            masked_paths: vec!["/etc/hostname".into()],
            ..Default::default()
        },
        ContainerConfig {
            devices: vec![Device {
                container_path: "/dev/xnull".into(),
                host_path: "/dev/null".into(),
                permissions: "rw".into(),
            }],
            linux: Some(LinuxContainerConfig {
                resources: Some(LinuxContainerResources {
                    memory_limit_in_bytes: 128 << 20,
                    cpu_shares: 512,
                    ..Default::default()
                }),
                ..Default::default()
            }),
            ..Default::default()
        },
    )
    .await
    .unwrap();
    rt.start_container(StartContainerRequest {
        container_id: locked.clone(),
    })
    .await
    .unwrap();
    assert_eq!(exec(&locked, "id -u; id -g").await.0, "1000\n1000");
    let (groups, _) = exec(&locked, "id -G").await;
    assert!(groups.split(' ').any(|g| g == "1234"), "{groups}");
    let (status, _) = exec(
        &locked,
        "grep -E '^(NoNewPrivs|Seccomp|CapBnd):' /proc/self/status",
    )
    .await;
    assert!(status.contains("NoNewPrivs:\t1"), "{status}");
    assert!(status.contains("Seccomp:\t2"), "{status}");
    assert!(status.contains("CapBnd:\t0000000000000001"), "{status}");
    assert_ne!(
        exec(&locked, "touch /x").await.1,
        0,
        "the root is read-only"
    );
    assert_eq!(exec(&locked, "echo hi > /dev/xnull").await.1, 0);
    assert_eq!(exec(&locked, "cat /etc/hostname").await.0, "");
    assert_eq!(
        exec(&locked, "cat /proc/sys/kernel/shm_rmid_forced")
            .await
            .0,
        "1"
    );
    assert_eq!(exec(&locked, "hostname").await.0, "sec");
    let limit = memory_limit_file(&format!("{parent}/{locked}"));
    assert_eq!(
        std::fs::read_to_string(&limit).unwrap().trim(),
        (128u64 << 20).to_string()
    );
    // UpdateContainerResources: the cgroup and the status say the new limit.
    rt.update_container_resources(UpdateContainerResourcesRequest {
        container_id: locked.clone(),
        linux: Some(LinuxContainerResources {
            memory_limit_in_bytes: 64 << 20,
            cpu_shares: 256,
            ..Default::default()
        }),
        ..Default::default()
    })
    .await
    .unwrap();
    assert_eq!(
        std::fs::read_to_string(&limit).unwrap().trim(),
        (64u64 << 20).to_string()
    );
    let st = rt
        .container_status(ContainerStatusRequest {
            container_id: locked.clone(),
            verbose: false,
        })
        .await
        .unwrap()
        .into_inner()
        .status
        .unwrap();
    let res = st.resources.unwrap().linux.unwrap();
    assert_eq!((res.memory_limit_in_bytes, res.cpu_shares), (64 << 20, 256));

    // A second container, unconfined and root: the same IPC and UTS namespaces as the first.
    let open = create("open", Default::default(), Default::default())
        .await
        .unwrap();
    rt.start_container(StartContainerRequest {
        container_id: open.clone(),
    })
    .await
    .unwrap();
    let (status, _) = exec(&open, "grep -E '^(NoNewPrivs|Seccomp):' /proc/self/status").await;
    assert!(status.contains("NoNewPrivs:\t0"), "{status}");
    assert!(status.contains("Seccomp:\t0"), "{status}");
    for ns in ["ipc", "uts", "net"] {
        let cmd = format!("readlink /proc/self/ns/{ns}");
        let (a, b) = (exec(&locked, &cmd).await.0, exec(&open, &cmd).await.0);
        assert_eq!(a, b, "{ns}");
        let host = std::fs::read_link(format!("/proc/self/ns/{ns}")).unwrap();
        assert_ne!(
            a,
            host.display().to_string(),
            "{ns} is the pod's, not the host's"
        );
    }
    // The pod asked for one PID namespace (NamespaceMode POD, the CRI's zero value): both
    // containers are in it, under the pod's pause process.
    assert_eq!(
        exec(&locked, "readlink /proc/self/ns/pid").await.0,
        exec(&open, "readlink /proc/self/ns/pid").await.0,
    );
    assert_eq!(exec(&open, "cat /proc/1/comm").await.0, "berth-pause");
    assert_eq!(
        exec(&open, "ps -o user,comm | grep -c '^1000 *sleep'")
            .await
            .0,
        "1"
    );

    // A Localhost profile is loaded; a missing one is refused at create, leaving nothing.
    let localhost = |path: &str| LinuxContainerSecurityContext {
        seccomp: Some(SecurityProfile {
            profile_type: security_profile::ProfileType::Localhost as i32,
            localhost_ref: path.into(),
        }),
        ..Default::default()
    };
    let strict = create(
        "strict",
        localhost(&profile.display().to_string()),
        Default::default(),
    )
    .await
    .unwrap();
    rt.start_container(StartContainerRequest {
        container_id: strict.clone(),
    })
    .await
    .unwrap();
    assert_ne!(exec(&strict, "mkdir /tmp/x").await.1, 0);
    assert_eq!(exec(&open, "mkdir /tmp/x").await.1, 0);
    let count = |rt: &RuntimeServiceClient<Channel>| {
        let mut rt = rt.clone();
        async move {
            rt.list_containers(ListContainersRequest::default())
                .await
                .unwrap()
                .into_inner()
                .containers
                .len()
        }
    };
    let before = count(&rt).await;
    for bad in [
        create(
            "bad",
            localhost("/nonexistent/profile.json"),
            Default::default(),
        )
        .await,
        create(
            "bad",
            LinuxContainerSecurityContext {
                run_as_group: Some(Int64Value { value: 5 }),
                ..Default::default()
            },
            Default::default(),
        )
        .await,
        create(
            "bad",
            Default::default(),
            ContainerConfig {
                devices: vec![Device {
                    container_path: "/dev/x".into(),
                    host_path: "/etc/hostname".into(),
                    permissions: "rw".into(),
                }],
                ..Default::default()
            },
        )
        .await,
    ] {
        let e = bad.unwrap_err();
        assert_eq!(e.code(), tonic::Code::InvalidArgument, "{}", e.message());
    }
    assert_eq!(count(&rt).await, before);

    // Stop and remove: the kubelet's evented PLEG saw each step of each container, in order.
    for c in [&locked, &open, &strict] {
        rt.stop_container(StopContainerRequest {
            container_id: c.to_string(),
            timeout: 0,
        })
        .await
        .unwrap();
        rt.remove_container(RemoveContainerRequest {
            container_id: c.to_string(),
        })
        .await
        .unwrap();
    }
    let mut seen: Vec<(String, i32)> = Vec::new();
    while seen
        .iter()
        .filter(|(_, t)| *t == ContainerEventType::ContainerDeletedEvent as i32)
        .count()
        < 3
    {
        let ev = tokio::time::timeout(std::time::Duration::from_secs(30), events.message())
            .await
            .expect("container events")
            .unwrap()
            .unwrap();
        assert_eq!(ev.pod_sandbox_status.as_ref().unwrap().id, id);
        seen.push((ev.container_id, ev.container_event_type));
    }
    for c in [&locked, &open, &strict] {
        let kinds: Vec<i32> = seen
            .iter()
            .filter(|(i, _)| i == c)
            .map(|(_, t)| *t)
            .collect();
        assert_eq!(
            kinds,
            [
                ContainerEventType::ContainerCreatedEvent as i32,
                ContainerEventType::ContainerStartedEvent as i32,
                ContainerEventType::ContainerStoppedEvent as i32,
                ContainerEventType::ContainerDeletedEvent as i32,
            ],
            "{c}"
        );
    }

    // The pod's PID namespace init dies: the pod is not ready any more (the kubelet makes a
    // new one), and stopping it still works.
    let pauses = d.pause_processes();
    assert_eq!(
        pauses.len(),
        1,
        "one pause process, for the pod sharing its PID namespace"
    );
    // SAFETY: kill(2) of the pause process our daemon started for this test's pod.
    unsafe { libc_kill(pauses[0], 9) };
    let mut ready = true;
    for _ in 0..100 {
        let st = rt
            .pod_sandbox_status(PodSandboxStatusRequest {
                pod_sandbox_id: id.clone(),
                verbose: false,
            })
            .await
            .unwrap()
            .into_inner()
            .status
            .unwrap();
        ready = st.state == PodSandboxState::SandboxReady as i32;
        if !ready {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    assert!(
        !ready,
        "a pod whose PID namespace init died is reported ready"
    );

    // Host IPC and PID: a pod that shares them sees the host's.
    let host_pod = rt
        .run_pod_sandbox(RunPodSandboxRequest {
            config: Some(PodSandboxConfig {
                linux: Some(LinuxPodSandboxConfig {
                    security_context: Some(LinuxSandboxSecurityContext {
                        namespace_options: Some(NamespaceOption {
                            ipc: NamespaceMode::Node as i32,
                            pid: NamespaceMode::Node as i32,
                            ..Default::default()
                        }),
                        ..Default::default()
                    }),
                    ..Default::default()
                }),
                ..pod_config("hostns")
            }),
            runtime_handler: String::new(),
        })
        .await
        .unwrap()
        .into_inner()
        .pod_sandbox_id;
    let host_ns = ContainerConfig {
        command: vec!["sleep".into(), "1000".into()],
        linux: Some(LinuxContainerConfig {
            security_context: Some(LinuxContainerSecurityContext {
                namespace_options: Some(NamespaceOption {
                    ipc: NamespaceMode::Node as i32,
                    pid: NamespaceMode::Node as i32,
                    ..Default::default()
                }),
                ..Default::default()
            }),
            ..Default::default()
        }),
        ..Default::default()
    };
    let hc = run_container(&mut rt, &host_pod, "h", &image, host_ns).await;
    for ns in ["ipc", "pid"] {
        let host = std::fs::read_link(format!("/proc/self/ns/{ns}")).unwrap();
        assert_eq!(
            exec(&hc, &format!("readlink /proc/self/ns/{ns}")).await.0,
            host.display().to_string(),
            "{ns}"
        );
    }
    assert_eq!(exec(&hc, "hostname").await.0, "hostns", "the pod's own UTS");

    for p in [&id, &host_pod] {
        stop_and_remove(&mut rt, p).await;
    }
    assert!(!d.dir.join(format!("state/cri-ns/{id}-ipc")).exists());
    let left = d.leftovers();
    assert!(left.is_empty(), "{left:#?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mount_propagation_both_ways() {
    let n = 16;
    let (_bridge, d) = networked_daemon("cri-propagation", n);
    let mut rt = RuntimeServiceClient::new(channel(&d).await);
    let image = pull(&d, "busybox").await;
    // A shared mount on the host, as the kubelet's volumes live on (mounted under the test's
    // directory; the daemon's cleanup unmounts what is below it).
    let shared = d.dir.join("shared");
    std::fs::create_dir_all(shared.join("from-host")).unwrap();
    for args in [
        vec!["--bind", shared.to_str().unwrap(), shared.to_str().unwrap()],
        vec!["--make-rshared", shared.to_str().unwrap()],
    ] {
        assert!(std::process::Command::new("mount")
            .args(&args)
            .status()
            .unwrap()
            .success());
    }
    let pod = rt
        .run_pod_sandbox(RunPodSandboxRequest {
            config: Some(pod_config("prop")),
            runtime_handler: String::new(),
        })
        .await
        .unwrap()
        .into_inner()
        .pod_sandbox_id;
    let mut ids = Vec::new();
    for (name, target, propagation) in [
        ("both", "/both", MountPropagation::PropagationBidirectional),
        ("in", "/in", MountPropagation::PropagationHostToContainer),
    ] {
        let config = ContainerConfig {
            command: vec!["sleep".into(), "1000".into()],
            mounts: vec![Mount {
                container_path: target.into(),
                host_path: shared.display().to_string(),
                propagation: propagation as i32,
                ..Default::default()
            }],
            linux: Some(LinuxContainerConfig {
                security_context: Some(LinuxContainerSecurityContext {
                    privileged: true,
                    ..Default::default()
                }),
                ..Default::default()
            }),
            ..Default::default()
        };
        let id = run_container(&mut rt, &pod, name, &image, config).await;
        ids.push(id);
    }
    let exec = |id: &str, script: &str| {
        let mut rt = rt.clone();
        let (id, script) = (id.to_string(), script.to_string());
        async move {
            rt.exec_sync(ExecSyncRequest {
                container_id: id,
                cmd: vec!["sh".into(), "-c".into(), script],
                timeout: 10,
            })
            .await
            .unwrap()
            .into_inner()
        }
    };
    // Bidirectional: what the container mounts shows on the host.
    let out = exec(
        &ids[0],
        "mkdir -p /both/from-container && mount -t tmpfs berth-prop /both/from-container",
    )
    .await;
    assert_eq!(out.exit_code, 0, "{}", String::from_utf8_lossy(&out.stderr));
    let mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    let there = shared.join("from-container").display().to_string();
    assert!(
        mounts
            .lines()
            .any(|l| l.split(' ').nth(4) == Some(there.as_str())),
        "the container's mount did not reach the host"
    );
    // HostToContainer: what the host mounts shows in the container.
    assert!(std::process::Command::new("mount")
        .args(["-t", "tmpfs", "berth-prop-host"])
        .arg(shared.join("from-host"))
        .status()
        .unwrap()
        .success());
    let out = exec(&ids[1], "grep -c ' /in/from-host ' /proc/self/mountinfo").await;
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "1");
    stop_and_remove(&mut rt, &pod).await;
}

/// Pod-level resources without a cgroup parent from the kubelet: berthd makes the pod's cgroup
/// with the sum of the limits and the overhead, puts the containers below it, keeps it while
/// the pod has no container, and removes it with the pod.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pod_level_resources_without_a_cgroup_parent() {
    let n = 20;
    let (_bridge, d) = networked_daemon("cri-podres", n);
    let image = pull(&d, "busybox").await;
    let mut rt = RuntimeServiceClient::new(channel(&d).await);
    let mut config = pod_config("limited");
    let linux = config.linux.as_mut().unwrap();
    linux.resources = Some(LinuxContainerResources {
        memory_limit_in_bytes: 64 << 20,
        cpu_quota: 50_000,
        cpu_period: 100_000,
        cpu_shares: 512,
        ..Default::default()
    });
    linux.overhead = Some(LinuxContainerResources {
        memory_limit_in_bytes: 16 << 20,
        cpu_quota: 5_000,
        cpu_period: 50_000,
        cpu_shares: 10,
        ..Default::default()
    });
    let pod = rt
        .run_pod_sandbox(RunPodSandboxRequest {
            config: Some(config),
            runtime_handler: String::new(),
        })
        .await
        .unwrap()
        .into_inner()
        .pod_sandbox_id;
    let _gone = PodGone {
        sock: d.sock(),
        id: pod.clone(),
    };
    let pod_cgroup = format!("/berth/pod-{pod}");
    let limit =
        || std::fs::read_to_string(memory_limit_file(&pod_cgroup)).map(|s| s.trim().to_string());
    assert_eq!(limit().unwrap(), (80u64 << 20).to_string());
    let v2 = std::path::Path::new("/sys/fs/cgroup/cgroup.controllers").exists();
    let cpu = if v2 {
        std::fs::read_to_string(format!("/sys/fs/cgroup{pod_cgroup}/cpu.max")).unwrap()
    } else {
        std::fs::read_to_string(format!("/sys/fs/cgroup/cpu{pod_cgroup}/cpu.cfs_quota_us")).unwrap()
    };
    // 50 ms per 100 ms, plus the overhead's 5 ms per 50 ms.
    assert!(cpu.starts_with("60000"), "{cpu}");

    let sleep = |rt: &mut RuntimeServiceClient<Channel>, name: &'static str| {
        let (mut rt, pod, image) = (rt.clone(), pod.clone(), image.clone());
        async move {
            run_container(
                &mut rt,
                &pod,
                name,
                &image,
                ContainerConfig {
                    command: vec!["sleep".into(), "600".into()],
                    ..Default::default()
                },
            )
            .await
        }
    };
    let c = sleep(&mut rt, "first").await;
    let cgroup = cgroup_of(&d, &c);
    assert!(
        cgroup
            .lines()
            .all(|l| l.ends_with(&format!("{pod_cgroup}/{c}"))),
        "{cgroup}"
    );
    // The pod's only container removed (the kubelet restarting it): the pod's cgroup stays,
    // and a new one is limited the same.
    rt.stop_container(StopContainerRequest {
        container_id: c.clone(),
        timeout: 0,
    })
    .await
    .unwrap();
    rt.remove_container(RemoveContainerRequest { container_id: c })
        .await
        .unwrap();
    assert_eq!(
        limit().unwrap(),
        (80u64 << 20).to_string(),
        "the pod's cgroup went with its last container"
    );
    let c = sleep(&mut rt, "second").await;
    assert_eq!(limit().unwrap(), (80u64 << 20).to_string());
    let cgroup = cgroup_of(&d, &c);
    assert!(cgroup.contains(&pod_cgroup), "{cgroup}");

    stop_and_remove(&mut rt, &pod).await;
    assert!(limit().is_err(), "the pod's cgroup is left");
    let left = d.leftovers();
    assert!(left.is_empty(), "{left:#?}");
}

/// A StopContainer that comes while StartContainer is still starting the container waits for
/// the start and then stops it: a kubelet must not find a container running after its stop
/// succeeded. The start is held up on purpose: the daemon's OCI runtime is berth-runtime behind
/// a script whose `create` waits for a file the test makes once the stop has been sent.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stop_during_a_start_stops_the_started_container() {
    let (_bridge, mut d) = networked_daemon("cri-stop-start", 27);
    let hold = d.dir.join("hold");
    std::fs::create_dir_all(&hold).unwrap();
    let wrapper = d.dir.join("held-runtime");
    std::fs::write(
        &wrapper,
        format!(
            "#!/bin/sh\nfor a in \"$@\"; do\n  if [ \"$a\" = create ]; then\n    touch {h}/reached\n    \
             while [ ! -e {h}/go ]; do sleep 0.05; done\n    break\n  fi\ndone\nexec {rt} \"$@\"\n",
            h = hold.display(),
            rt = bin("berth-runtime").display()
        ),
    )
    .unwrap();
    std::fs::set_permissions(
        &wrapper,
        std::os::unix::fs::PermissionsExt::from_mode(0o755),
    )
    .unwrap();
    let conf = d.dir.join("config.toml");
    let text = std::fs::read_to_string(&conf).unwrap().replacen(
        "[daemon]\n",
        &format!("[daemon]\nruntime = \"{}\"\n", wrapper.display()),
        1,
    );
    std::fs::write(&conf, text).unwrap();
    d.kill9();
    d.start();

    let mut rt = RuntimeServiceClient::new(channel(&d).await);
    pull(&d, "busybox").await;
    let (pod, _gone) = run_pod(&mut rt, &d, "stop-start").await;
    let id = rt
        .create_container(CreateContainerRequest {
            pod_sandbox_id: pod.clone(),
            config: Some(ContainerConfig {
                metadata: Some(ContainerMetadata {
                    name: "sleeper".into(),
                    attempt: 0,
                }),
                image: spec(&format!("{}/library/busybox:latest", registry())),
                command: vec!["sleep".into(), "3600".into()],
                ..Default::default()
            }),
            sandbox_config: None,
        })
        .await
        .unwrap()
        .into_inner()
        .container_id;
    // Dropped first, also when the test fails: the start must not stay held up.
    let _release = Release(hold.join("go"));
    let start = tokio::spawn({
        let mut rt = rt.clone();
        let id = id.clone();
        async move {
            rt.start_container(StartContainerRequest { container_id: id })
                .await
        }
    });
    while !hold.join("reached").exists() {
        assert!(
            !start.is_finished(),
            "the start ended early: {:?}",
            start.await
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    let stop = tokio::spawn({
        let mut rt = rt.clone();
        let id = id.clone();
        async move {
            rt.stop_container(StopContainerRequest {
                container_id: id,
                timeout: 2,
            })
            .await
        }
    });
    // The stop cannot be done while the start it waits for is held up.
    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    assert!(
        !stop.is_finished(),
        "StopContainer returned during the start: {:?}",
        stop.await
    );
    std::fs::write(hold.join("go"), "").unwrap();
    start.await.unwrap().expect("StartContainer");
    stop.await.unwrap().expect("StopContainer");
    let s = rt
        .container_status(ContainerStatusRequest {
            container_id: id.clone(),
            verbose: false,
        })
        .await
        .unwrap()
        .into_inner()
        .status
        .unwrap();
    assert_eq!(
        s.state,
        ContainerState::ContainerExited as i32,
        "after a StopContainer that succeeded: {s:?}"
    );
}

/// Makes the file a held-up runtime waits for, when dropped.
struct Release(std::path::PathBuf);

impl Drop for Release {
    fn drop(&mut self) {
        let _ = std::fs::write(&self.0, "");
    }
}
