//! berthd's CRI v1 API driven the way a kubelet drives it, over the unix socket: Version and
//! Status, the ImageService against the fixture registry, pod sandboxes on a real CNI bridge.
//! and containers in them. (Exec, attach and port forwarding: cri_streaming.rs. What is not
//! implemented must answer Unimplemented.)

use berth_tests_support::cri::*;
use berth_tests_support::*;
use k8s_cri::v1::image_service_client::ImageServiceClient;
use k8s_cri::v1::runtime_service_client::RuntimeServiceClient;
use k8s_cri::v1::*;
use tonic::transport::Channel;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn version_and_status_as_the_kubelet_reads_them() {
    let d = daemon("cri-status", 8);
    let mut rt = RuntimeServiceClient::new(channel(&d).await);
    let v = rt
        .version(VersionRequest::default())
        .await
        .unwrap()
        .into_inner();
    assert_eq!(v.runtime_name, "berth");
    assert_eq!(v.runtime_api_version, "v1");

    let cond = |s: &StatusResponse, t: &str| {
        s.status
            .as_ref()
            .unwrap()
            .conditions
            .iter()
            .find(|c| c.r#type == t)
            .cloned()
            .unwrap()
    };
    let s = rt
        .status(StatusRequest::default())
        .await
        .unwrap()
        .into_inner();
    assert!(cond(&s, "RuntimeReady").status);
    // The handlers, with what they support (the kubelet reads user namespace support here).
    let default = s
        .runtime_handlers
        .iter()
        .find(|h| h.name.is_empty())
        .unwrap();
    assert!(!default.features.unwrap().user_namespaces);
    let net = cond(&s, "NetworkReady");
    assert!(!net.status);
    assert_eq!(net.reason, "NetworkPluginNotReady");
    assert!(net.message.contains("net.d"), "{}", net.message);

    // A network config appears: the network is ready, without a restart.
    std::fs::write(
        d.dir.join("net.d/10-berth.conflist"),
        r#"{"cniVersion":"1.0.0","name":"k8s","plugins":[{"type":"bridge"}]}"#,
    )
    .unwrap();
    let s = rt
        .status(StatusRequest::default())
        .await
        .unwrap()
        .into_inner();
    assert!(cond(&s, "NetworkReady").status);

    // The cgroup driver the kubelet must use, and the pod CIDR it sends.
    let rc = rt
        .runtime_config(RuntimeConfigRequest::default())
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        rc.linux.unwrap().cgroup_driver,
        CgroupDriver::Cgroupfs as i32
    );
    rt.update_runtime_config(UpdateRuntimeConfigRequest {
        runtime_config: Some(RuntimeConfig {
            network_config: Some(NetworkConfig {
                pod_cidr: "10.244.0.0/24".into(),
            }),
        }),
    })
    .await
    .unwrap();

    // What is not implemented says so, by name.
    let e = rt
        .checkpoint_container(CheckpointContainerRequest::default())
        .await
        .unwrap_err();
    assert_eq!(e.code(), tonic::Code::Unimplemented);
    assert!(
        e.message().contains("CheckpointContainer"),
        "{}",
        e.message()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn images_through_the_cri() {
    let d = daemon("cri-images", 9);
    let mut im = ImageServiceClient::new(channel(&d).await);
    let busybox = format!("{}/library/busybox:latest", registry());

    // Before the pull: ImageStatus answers with no image (not an error), as the kubelet expects.
    let st = im
        .image_status(ImageStatusRequest {
            image: spec(&busybox),
            verbose: false,
        })
        .await
        .unwrap()
        .into_inner();
    assert!(st.image.is_none());

    let pulled = im
        .pull_image(PullImageRequest {
            image: spec(&busybox),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert!(pulled.image_ref.starts_with("sha256:"), "{pulled:?}");

    // The image by name, by id, and by repo digest; ListImages with and without a filter.
    let st = im
        .image_status(ImageStatusRequest {
            image: spec(&busybox),
            verbose: true,
        })
        .await
        .unwrap()
        .into_inner();
    let img = st.image.unwrap();
    assert_eq!(img.id, pulled.image_ref);
    assert_eq!(img.repo_tags, vec![busybox.clone()]);
    assert_eq!(img.repo_digests.len(), 1);
    assert!(img.size > 0);
    assert!(st.info["info"].contains("chainID"), "{:?}", st.info);
    for by in [img.id.clone(), img.repo_digests[0].clone()] {
        let st = im
            .image_status(ImageStatusRequest {
                image: spec(&by),
                verbose: false,
            })
            .await
            .unwrap()
            .into_inner();
        assert_eq!(st.image.map(|i| i.id), Some(img.id.clone()), "by {by}");
    }
    let all = im
        .list_images(ListImagesRequest::default())
        .await
        .unwrap()
        .into_inner();
    assert_eq!(all.images.len(), 1);
    let fs = im
        .image_fs_info(ImageFsInfoRequest::default())
        .await
        .unwrap()
        .into_inner();
    assert!(fs.image_filesystems[0].used_bytes.as_ref().unwrap().value > 0);

    // Bad requests get the codes the kubelet expects, and change nothing.
    let e = im
        .pull_image(PullImageRequest {
            image: spec(&format!("{}/library/nosuch:latest", registry())),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), tonic::Code::NotFound, "{}", e.message());
    let e = im
        .pull_image(PullImageRequest {
            image: spec(""),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), tonic::Code::InvalidArgument);

    // RemoveImage by id, then again: both succeed; the image is gone.
    for _ in 0..2 {
        im.remove_image(RemoveImageRequest {
            image: spec(&img.id),
        })
        .await
        .unwrap();
    }
    let all = im
        .list_images(ListImagesRequest::default())
        .await
        .unwrap()
        .into_inner();
    assert!(all.images.is_empty(), "{all:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pod_sandboxes_live_and_die_as_the_kubelet_expects() {
    let n = 10;
    let (_bridge, mut d) = networked_daemon("cri-pods", n);
    let mut rt = RuntimeServiceClient::new(channel(&d).await);

    let logs = d.dir.join("podlogs");
    let id = rt
        .run_pod_sandbox(RunPodSandboxRequest {
            config: Some(PodSandboxConfig {
                log_directory: logs.display().to_string(),
                ..pod_config("web")
            }),
            runtime_handler: String::new(),
        })
        .await
        .unwrap()
        .into_inner()
        .pod_sandbox_id;
    let status = |s: PodSandboxStatusResponse| s.status.unwrap();
    let st = status(
        rt.pod_sandbox_status(PodSandboxStatusRequest {
            pod_sandbox_id: id.clone(),
            verbose: false,
        })
        .await
        .unwrap()
        .into_inner(),
    );
    assert_eq!(st.state, PodSandboxState::SandboxReady as i32);
    assert_eq!(st.metadata.as_ref().unwrap().name, "web");
    let ip = st.network.as_ref().unwrap().ip.clone();
    assert!(ip.starts_with(&format!("10.213.{n}.")), "{ip}");
    // The pod's namespace has that address.
    let pin = d.dir.join(format!("state/cri-net/netns/{id}"));
    let out = std::process::Command::new("nsenter")
        .arg(format!("--net={}", pin.display()))
        .args(["ip", "-4", "-o", "addr", "show", "eth0"])
        .output()
        .unwrap();
    assert!(
        String::from_utf8_lossy(&out.stdout).contains(&ip),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let resolv =
        std::fs::read_to_string(d.dir.join(format!("state/pods/{id}/resolv.conf"))).unwrap();
    assert!(
        resolv.contains("nameserver 10.96.0.10") && resolv.contains("ndots:5"),
        "{resolv}"
    );

    // A container in the pod: it has the pod's address and hostname, and logs where the
    // kubelet said.
    let image = pull(&d, "busybox").await;
    let cid = rt
        .create_container(CreateContainerRequest {
            pod_sandbox_id: id.clone(),
            config: Some(ContainerConfig {
                metadata: Some(ContainerMetadata {
                    name: "box".into(),
                    attempt: 0,
                }),
                image: spec(&image),
                command: vec!["sh".into(), "-c".into()],
                args: vec!["echo in $(hostname); ip -4 -o addr show eth0; sleep 1000".into()],
                log_path: "box/0.log".into(),
                labels: [("role".to_string(), "test".to_string())].into(),
                ..Default::default()
            }),
            sandbox_config: None,
        })
        .await
        .unwrap()
        .into_inner()
        .container_id;
    let cstatus = |rt: &mut RuntimeServiceClient<Channel>, cid: &str| {
        let mut rt = rt.clone();
        let cid = cid.to_string();
        async move {
            rt.container_status(ContainerStatusRequest {
                container_id: cid,
                verbose: false,
            })
            .await
            .unwrap()
            .into_inner()
            .status
            .unwrap()
        }
    };
    assert_eq!(
        cstatus(&mut rt, &cid).await.state,
        ContainerState::ContainerCreated as i32
    );
    rt.start_container(StartContainerRequest {
        container_id: cid.clone(),
    })
    .await
    .unwrap();
    let st = cstatus(&mut rt, &cid).await;
    assert_eq!(st.state, ContainerState::ContainerRunning as i32);
    assert_eq!(st.metadata.unwrap().name, "box");
    assert_eq!(st.labels.get("role").map(String::as_str), Some("test"));
    let log = logs.join("box/0.log");
    let mut text = String::new();
    for _ in 0..100 {
        text = std::fs::read_to_string(&log).unwrap_or_default();
        if text.contains(&ip) {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    assert!(text.contains("stdout F in web"), "{text}");
    assert!(text.contains(&format!("inet {ip}/")), "{text}");
    // Log rotation as the kubelet does it: rename, ReopenContainerLog, a new file; what the
    // container writes next goes there.
    std::fs::rename(&log, logs.join("box/0.log.1")).unwrap();
    rt.reopen_container_log(ReopenContainerLogRequest {
        container_id: cid.clone(),
    })
    .await
    .unwrap();
    assert!(log.exists());
    let _ = rt
        .exec_sync(ExecSyncRequest {
            container_id: cid.clone(),
            cmd: vec![
                "sh".into(),
                "-c".into(),
                "echo rotated > /proc/1/fd/1".into(),
            ],
            timeout: 10,
        })
        .await
        .unwrap();
    let mut text = String::new();
    for _ in 0..100 {
        text = std::fs::read_to_string(&log).unwrap_or_default();
        if text.contains("rotated") {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    assert!(text.contains("stdout F rotated"), "{text}");

    // Stats: CPU, memory working set, and the writable layer with what the container wrote.
    rt.exec_sync(ExecSyncRequest {
        container_id: cid.clone(),
        cmd: vec![
            "dd".into(),
            "if=/dev/zero".into(),
            "of=/big".into(),
            "bs=1024".into(),
            "count=512".into(),
        ],
        timeout: 10,
    })
    .await
    .unwrap();
    let cs = rt
        .container_stats(ContainerStatsRequest {
            container_id: cid.clone(),
        })
        .await
        .unwrap()
        .into_inner()
        .stats
        .unwrap();
    assert_eq!(cs.attributes.unwrap().id, cid);
    assert!(cs.cpu.unwrap().usage_core_nano_seconds.unwrap().value > 0);
    assert!(cs.memory.unwrap().working_set_bytes.unwrap().value > 0);
    let wl = cs.writable_layer.unwrap().used_bytes.unwrap().value;
    assert!(wl >= 512 * 1024, "writable layer {wl} bytes");
    let all = rt
        .list_container_stats(ListContainerStatsRequest {
            filter: Some(ContainerStatsFilter {
                pod_sandbox_id: id.clone(),
                ..Default::default()
            }),
        })
        .await
        .unwrap()
        .into_inner()
        .stats;
    assert_eq!(all.len(), 1);
    let ps = rt
        .pod_sandbox_stats(PodSandboxStatsRequest {
            pod_sandbox_id: id.clone(),
        })
        .await
        .unwrap()
        .into_inner()
        .stats
        .unwrap();
    let linux = ps.linux.unwrap();
    assert_eq!(linux.containers.len(), 1);
    assert!(linux.memory.unwrap().working_set_bytes.unwrap().value > 0);
    let eth0 = linux.network.unwrap().default_interface.unwrap();
    assert_eq!(eth0.name, "eth0");
    assert!(eth0.tx_bytes.is_some());
    let listed = rt
        .list_pod_sandbox_stats(ListPodSandboxStatsRequest {
            filter: Some(PodSandboxStatsFilter {
                label_selector: [("app".to_string(), "web".to_string())].into(),
                ..Default::default()
            }),
        })
        .await
        .unwrap()
        .into_inner()
        .stats;
    assert_eq!(listed.len(), 1);

    // ExecSync, as an exec probe calls it: output, exit code, timeout.
    let out = rt
        .exec_sync(ExecSyncRequest {
            container_id: cid.clone(),
            cmd: vec![
                "sh".into(),
                "-c".into(),
                "echo out; echo err >&2; exit 3".into(),
            ],
            timeout: 10,
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        (out.stdout.as_slice(), out.stderr.as_slice(), out.exit_code),
        (&b"out\n"[..], &b"err\n"[..], 3)
    );
    let e = rt
        .exec_sync(ExecSyncRequest {
            container_id: cid.clone(),
            cmd: vec!["sleep".into(), "30".into()],
            timeout: 1,
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), tonic::Code::DeadlineExceeded, "{}", e.message());
    let e = rt
        .exec_sync(ExecSyncRequest {
            container_id: "nosuch".into(),
            cmd: vec!["true".into()],
            timeout: 1,
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), tonic::Code::NotFound, "{}", e.message());
    let listed = rt
        .list_containers(ListContainersRequest {
            filter: Some(ContainerFilter {
                pod_sandbox_id: id.clone(),
                ..Default::default()
            }),
        })
        .await
        .unwrap()
        .into_inner()
        .containers;
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].pod_sandbox_id, id);

    // The same pod (name, namespace, uid, attempt) twice: refused.
    let e = rt
        .run_pod_sandbox(RunPodSandboxRequest {
            config: Some(pod_config("web")),
            runtime_handler: String::new(),
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), tonic::Code::AlreadyExists, "{}", e.message());

    // Filters: by label, by state, by id prefix.
    let list = |f: PodSandboxFilter| {
        let mut rt = rt.clone();
        async move {
            rt.list_pod_sandbox(ListPodSandboxRequest { filter: Some(f) })
                .await
                .unwrap()
                .into_inner()
                .items
                .len()
        }
    };
    let by_label = |v: &str| PodSandboxFilter {
        label_selector: [("app".to_string(), v.to_string())].into(),
        ..Default::default()
    };
    assert_eq!(list(by_label("web")).await, 1);
    assert_eq!(list(by_label("db")).await, 0);
    let not_ready = PodSandboxFilter {
        state: Some(PodSandboxStateValue {
            state: PodSandboxState::SandboxNotready as i32,
        }),
        ..Default::default()
    };
    assert_eq!(list(not_ready.clone()).await, 0);
    let by_id = PodSandboxFilter {
        id: id[..12].to_string(),
        ..Default::default()
    };
    assert_eq!(list(by_id).await, 1);

    // kill -9 of berthd: the pod and its IP are reported the same afterwards.
    d.kill9();
    d.start();
    let mut rt = RuntimeServiceClient::new(channel(&d).await);
    let again = status(
        rt.pod_sandbox_status(PodSandboxStatusRequest {
            pod_sandbox_id: id.clone(),
            verbose: false,
        })
        .await
        .unwrap()
        .into_inner(),
    );
    assert_eq!(again.network.unwrap().ip, ip);
    assert_eq!(again.state, PodSandboxState::SandboxReady as i32);
    // The container lived through it; stopped, it reports how it ended; removed, it is gone.
    assert_eq!(
        cstatus(&mut rt, &cid).await.state,
        ContainerState::ContainerRunning as i32
    );
    rt.stop_container(StopContainerRequest {
        container_id: cid.clone(),
        timeout: 1,
    })
    .await
    .unwrap();
    let st = cstatus(&mut rt, &cid).await;
    assert_eq!(st.state, ContainerState::ContainerExited as i32);
    assert_eq!(st.reason, "Error");
    assert_ne!(st.exit_code, 0);
    assert!(st.finished_at >= st.started_at && st.started_at > 0);
    for _ in 0..2 {
        rt.remove_container(RemoveContainerRequest {
            container_id: cid.clone(),
        })
        .await
        .unwrap();
    }
    let e = rt
        .container_status(ContainerStatusRequest {
            container_id: cid.clone(),
            verbose: false,
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), tonic::Code::NotFound);
    assert!(log.exists(), "the kubelet's log stays for the kubelet");

    // Stop (twice: idempotent): not ready, no IP, the namespace and the address released —
    // with the configuration the pod was attached with, though the file is gone meanwhile.
    std::fs::remove_file(d.dir.join("net.d/10-test.conflist")).unwrap();
    for _ in 0..2 {
        rt.stop_pod_sandbox(StopPodSandboxRequest {
            pod_sandbox_id: id.clone(),
        })
        .await
        .unwrap();
    }
    let st = status(
        rt.pod_sandbox_status(PodSandboxStatusRequest {
            pod_sandbox_id: id.clone(),
            verbose: false,
        })
        .await
        .unwrap()
        .into_inner(),
    );
    assert_eq!(st.state, PodSandboxState::SandboxNotready as i32);
    assert_eq!(st.network.unwrap().ip, "");
    assert!(!pin.exists());
    let leased = std::fs::read_dir(d.dir.join(format!("ipam/berth-test-{n}")))
        .map(|rd| {
            rd.flatten()
                .filter(|e| e.file_name().to_string_lossy().starts_with("10.213."))
                .count()
        })
        .unwrap_or(0);
    assert_eq!(leased, 0, "host-local still holds an address");

    // Remove (twice: idempotent), then it is unknown.
    for _ in 0..2 {
        rt.remove_pod_sandbox(RemovePodSandboxRequest {
            pod_sandbox_id: id.clone(),
        })
        .await
        .unwrap();
    }
    let e = rt
        .pod_sandbox_status(PodSandboxStatusRequest {
            pod_sandbox_id: id.clone(),
            verbose: false,
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), tonic::Code::NotFound);
    assert!(!d.dir.join(format!("state/pods/{id}")).exists());

    // Bad requests: the codes the kubelet expects.
    let e = rt
        .run_pod_sandbox(RunPodSandboxRequest::default())
        .await
        .unwrap_err();
    assert_eq!(e.code(), tonic::Code::InvalidArgument);
    let e = rt
        .run_pod_sandbox(RunPodSandboxRequest {
            config: Some(pod_config("other")),
            runtime_handler: "kata".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), tonic::Code::InvalidArgument, "{}", e.message());
    // Stopping an unknown pod succeeds, as removing one does (critest's Idempotence).
    rt.stop_pod_sandbox(StopPodSandboxRequest {
        pod_sandbox_id: "nosuch".into(),
    })
    .await
    .unwrap();
    let left = d.leftovers();
    assert!(left.is_empty(), "{left:#?}");
}

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

/// Retries `http_get` for a while (nginx takes a moment to listen).
fn http_get_eventually(addr: &str) -> String {
    let mut last = String::new();
    for _ in 0..100 {
        match http_get(addr) {
            Ok(page) if page.starts_with("HTTP/1.1 200") => return page,
            Ok(page) => last = page,
            Err(e) => last = e.to_string(),
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    panic!("GET {addr}: {last}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nginx_pod_with_a_sidecar_a_host_port_and_a_restart() {
    let n = 15;
    // The test network, with portmap's snat so that 127.0.0.1:<hostPort> is reachable.
    let (_bridge, mut d) = networked_daemon("cri-nginx", n);
    let conf_path = d.dir.join("net.d/10-test.conflist");
    let mut conf: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&conf_path).unwrap()).unwrap();
    conf["plugins"][1]["snat"] = true.into();
    std::fs::write(&conf_path, conf.to_string()).unwrap();
    let mut rt = RuntimeServiceClient::new(channel(&d).await);
    let images = [pull(&d, "nginx").await, pull(&d, "busybox").await];
    let host_port = free_port();
    let logs = d.dir.join("podlogs");
    let pod = rt
        .run_pod_sandbox(RunPodSandboxRequest {
            config: Some(PodSandboxConfig {
                port_mappings: vec![PortMapping {
                    protocol: Protocol::Tcp as i32,
                    container_port: 80,
                    host_port: host_port as i32,
                    host_ip: String::new(),
                }],
                log_directory: logs.display().to_string(),
                ..pod_config("web2")
            }),
            runtime_handler: String::new(),
        })
        .await
        .unwrap()
        .into_inner()
        .pod_sandbox_id;
    let ip = rt
        .pod_sandbox_status(PodSandboxStatusRequest {
            pod_sandbox_id: pod.clone(),
            verbose: false,
        })
        .await
        .unwrap()
        .into_inner()
        .status
        .unwrap()
        .network
        .unwrap()
        .ip;
    let termination = d.dir.join("termination");
    for name in ["nginx", "sidecar"] {
        std::fs::create_dir_all(&termination).unwrap();
        std::fs::write(termination.join(name), "").unwrap();
    }
    let mut ids = Vec::new();
    for (name, image, command) in [
        ("nginx", &images[0], vec![]),
        (
            "sidecar",
            &images[1],
            vec!["sleep".to_string(), "1000".into()],
        ),
    ] {
        let config = ContainerConfig {
            command,
            log_path: format!("{name}/0.log"),
            // As the kubelet mounts each container's termination message file.
            mounts: vec![Mount {
                container_path: "/dev/termination-log".into(),
                host_path: termination.join(name).display().to_string(),
                ..Default::default()
            }],
            ..Default::default()
        };
        let id = run_container(&mut rt, &pod, name, image, config).await;
        ids.push(id);
    }
    let (nginx, sidecar) = (ids[0].clone(), ids[1].clone());

    // nginx on the pod's IP, and on the host port.
    let page = http_get_eventually(&format!("{ip}:80"));
    assert!(page.contains("<title>"), "{page}");
    let page = http_get_eventually(&format!("127.0.0.1:{host_port}"));
    assert!(page.contains("<title>"), "{page}");
    // The sidecar reaches it on localhost: one network namespace for the pod.
    let out = rt
        .exec_sync(ExecSyncRequest {
            container_id: sidecar.clone(),
            cmd: vec![
                "wget".into(),
                "-q".into(),
                "-O".into(),
                "-".into(),
                "http://127.0.0.1/".into(),
            ],
            timeout: 10,
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(out.exit_code, 0, "{}", String::from_utf8_lossy(&out.stderr));
    assert!(String::from_utf8_lossy(&out.stdout).contains("<title>"));
    // What a container writes to /dev/termination-log lands in the kubelet's file.
    let out = rt
        .exec_sync(ExecSyncRequest {
            container_id: sidecar.clone(),
            cmd: vec![
                "sh".into(),
                "-c".into(),
                "echo bye > /dev/termination-log".into(),
            ],
            timeout: 10,
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(out.exit_code, 0, "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(
        std::fs::read_to_string(termination.join("sidecar")).unwrap(),
        "bye\n"
    );
    // An exec probe, as the kubelet runs it.
    let probe = |rt: &RuntimeServiceClient<Channel>| {
        let mut rt = rt.clone();
        let nginx = nginx.clone();
        async move {
            rt.exec_sync(ExecSyncRequest {
                container_id: nginx,
                cmd: vec!["sh".into(), "-c".into(), "test -s /run/nginx.pid".into()],
                timeout: 5,
            })
            .await
            .unwrap()
            .into_inner()
            .exit_code
        }
    };
    assert_eq!(probe(&rt).await, 0);
    // nginx's access log went to the kubelet's log path in the CRI format.
    let log = logs.join("nginx/0.log");
    let text = std::fs::read_to_string(&log).unwrap_or_default();
    assert!(
        text.lines()
            .any(|l| l.contains(" stdout F ") && l.contains("GET / HTTP")),
        "{text}"
    );

    // A debug container in nginx's PID namespace (`kubectl debug --target=nginx`): it sees
    // nginx's master as pid 1. An unknown target is NotFound.
    let target = |target_id: &str| ContainerConfig {
        command: vec!["sleep".into(), "1000".into()],
        linux: Some(LinuxContainerConfig {
            security_context: Some(LinuxContainerSecurityContext {
                namespace_options: Some(NamespaceOption {
                    pid: NamespaceMode::Target as i32,
                    target_id: target_id.into(),
                    ..Default::default()
                }),
                ..Default::default()
            }),
            ..Default::default()
        }),
        ..Default::default()
    };
    let debug = run_container(&mut rt, &pod, "debug", &images[1], target(&nginx)).await;
    let out = rt
        .exec_sync(ExecSyncRequest {
            container_id: debug.clone(),
            cmd: vec!["cat".into(), "/proc/1/cmdline".into()],
            timeout: 10,
        })
        .await
        .unwrap()
        .into_inner();
    assert!(
        String::from_utf8_lossy(&out.stdout).starts_with("nginx: master"),
        "{:?}",
        String::from_utf8_lossy(&out.stdout)
    );
    ids.push(debug);
    let e = rt
        .create_container(CreateContainerRequest {
            pod_sandbox_id: pod.clone(),
            config: Some(ContainerConfig {
                metadata: Some(ContainerMetadata {
                    name: "debug2".into(),
                    attempt: 0,
                }),
                image: spec(&images[1]),
                ..target("nosuch")
            }),
            sandbox_config: None,
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), tonic::Code::NotFound, "{}", e.message());

    // berthd is killed and comes back: the pod, its IP, the host port and the probe are as
    // they were.
    d.kill9();
    d.start();
    let mut rt = RuntimeServiceClient::new(channel(&d).await);
    let st = rt
        .pod_sandbox_status(PodSandboxStatusRequest {
            pod_sandbox_id: pod.clone(),
            verbose: false,
        })
        .await
        .unwrap()
        .into_inner()
        .status
        .unwrap();
    assert_eq!(st.network.unwrap().ip, ip);
    assert_eq!(st.state, PodSandboxState::SandboxReady as i32);
    http_get_eventually(&format!("127.0.0.1:{host_port}"));
    assert_eq!(probe(&rt).await, 0);

    // Stop and remove the pod (its containers with it): nothing is left, and the host port
    // is closed.
    rt.stop_pod_sandbox(StopPodSandboxRequest {
        pod_sandbox_id: pod.clone(),
    })
    .await
    .unwrap();
    for id in &ids {
        let st = rt
            .container_status(ContainerStatusRequest {
                container_id: id.clone(),
                verbose: false,
            })
            .await
            .unwrap()
            .into_inner()
            .status
            .unwrap();
        assert_eq!(st.state, ContainerState::ContainerExited as i32, "{id}");
    }
    rt.remove_pod_sandbox(RemovePodSandboxRequest {
        pod_sandbox_id: pod.clone(),
    })
    .await
    .unwrap();
    let left = rt
        .list_containers(ListContainersRequest::default())
        .await
        .unwrap()
        .into_inner()
        .containers;
    assert!(left.is_empty(), "{left:?}");
    assert!(http_get(&format!("127.0.0.1:{host_port}")).is_err());
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pods_made_and_removed_side_by_side() {
    let n = 17;
    let (_bridge, d) = networked_daemon("cri-many", n);
    let rt = RuntimeServiceClient::new(channel(&d).await);
    // Ten RunPodSandbox at once, as a kubelet starting a node's pods: each gets its own
    // address; the same pod twice at once is refused once.
    let run = |name: String| {
        let mut rt = rt.clone();
        async move {
            rt.run_pod_sandbox(RunPodSandboxRequest {
                config: Some(pod_config(&name)),
                runtime_handler: String::new(),
            })
            .await
            .map(|r| r.into_inner().pod_sandbox_id)
        }
    };
    let mut tasks = Vec::new();
    for i in 0..10 {
        tasks.push(tokio::spawn(run(format!("p{i}"))));
    }
    tasks.push(tokio::spawn(run("p0".into())));
    let mut ids = Vec::new();
    let mut refused = 0;
    for t in tasks {
        match t.await.unwrap() {
            Ok(id) => ids.push(id),
            Err(e) => {
                assert_eq!(e.code(), tonic::Code::AlreadyExists, "{}", e.message());
                refused += 1;
            }
        }
    }
    assert_eq!((ids.len(), refused), (10, 1));
    let mut ips = std::collections::BTreeSet::new();
    for id in &ids {
        let st = rt
            .clone()
            .pod_sandbox_status(PodSandboxStatusRequest {
                pod_sandbox_id: id.clone(),
                verbose: false,
            })
            .await
            .unwrap()
            .into_inner()
            .status
            .unwrap();
        assert_eq!(st.state, PodSandboxState::SandboxReady as i32);
        ips.insert(st.network.unwrap().ip);
    }
    assert_eq!(ips.len(), 10, "{ips:?}");
    // Stopped and removed side by side too: nothing left, every address given back.
    let mut tasks = Vec::new();
    for id in ids {
        let mut rt = rt.clone();
        tasks.push(tokio::spawn(async move {
            rt.stop_pod_sandbox(StopPodSandboxRequest {
                pod_sandbox_id: id.clone(),
            })
            .await?;
            rt.remove_pod_sandbox(RemovePodSandboxRequest { pod_sandbox_id: id })
                .await
        }));
    }
    for t in tasks {
        t.await.unwrap().unwrap();
    }
    let leased = std::fs::read_dir(d.dir.join(format!("ipam/berth-test-{n}")))
        .map(|rd| {
            rd.flatten()
                .filter(|e| e.file_name().to_string_lossy().starts_with("10.213."))
                .count()
        })
        .unwrap_or(0);
    assert_eq!(leased, 0, "host-local still holds addresses");
    let left = d.leftovers();
    assert!(left.is_empty(), "{left:#?}");
}

/// A kubelet before 1.23 speaks CRI v1alpha2: the same calls, by their old name.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_v1alpha2_kubelet_runs_a_pod() {
    use k8s_cri::v1alpha2 as a2;
    let n = 18;
    let (_bridge, d) = networked_daemon("cri-alpha", n);
    let ch = channel(&d).await;
    let mut rt = a2::runtime_service_client::RuntimeServiceClient::new(ch.clone());
    let mut img = a2::image_service_client::ImageServiceClient::new(ch.clone());

    let v = rt
        .version(a2::VersionRequest {
            version: "0.1.0".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        (v.version.as_str(), v.runtime_api_version.as_str()),
        ("0.1.0", "v1alpha2")
    );
    // The same connection still speaks v1.
    let v1 = RuntimeServiceClient::new(ch.clone())
        .version(VersionRequest::default())
        .await
        .unwrap()
        .into_inner();
    assert_eq!(v1.runtime_api_version, "v1");
    let s = rt
        .status(a2::StatusRequest::default())
        .await
        .unwrap()
        .into_inner();
    let ready: Vec<_> = s
        .status
        .unwrap()
        .conditions
        .into_iter()
        .map(|c| (c.r#type, c.status))
        .collect();
    assert!(ready.contains(&("RuntimeReady".into(), true)), "{ready:?}");
    assert!(ready.contains(&("NetworkReady".into(), true)), "{ready:?}");

    let image = format!("{}/library/busybox:latest", registry());
    let spec = || {
        Some(a2::ImageSpec {
            image: image.clone(),
            ..Default::default()
        })
    };
    let image_ref = img
        .pull_image(a2::PullImageRequest {
            image: spec(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .image_ref;
    assert!(image_ref.starts_with("sha256:"), "{image_ref}");
    let st = img
        .image_status(a2::ImageStatusRequest {
            image: spec(),
            verbose: false,
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(st.image.unwrap().id, image_ref);

    let pod_config = a2::PodSandboxConfig {
        metadata: Some(a2::PodSandboxMetadata {
            name: "alpha".into(),
            uid: "uid-alpha".into(),
            namespace: "default".into(),
            attempt: 0,
        }),
        hostname: "alpha".into(),
        log_directory: d.dir.join("pod-logs").display().to_string(),
        linux: Some(a2::LinuxPodSandboxConfig {
            security_context: Some(a2::LinuxSandboxSecurityContext {
                namespace_options: Some(a2::NamespaceOption {
                    pid: a2::NamespaceMode::Container as i32,
                    ..Default::default()
                }),
                ..Default::default()
            }),
            ..Default::default()
        }),
        ..Default::default()
    };
    // The kubelet makes the pod's log directory and the container's in it.
    std::fs::create_dir_all(d.dir.join("pod-logs/box")).unwrap();
    let pod = rt
        .run_pod_sandbox(a2::RunPodSandboxRequest {
            config: Some(pod_config.clone()),
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
    let ps = rt
        .pod_sandbox_status(a2::PodSandboxStatusRequest {
            pod_sandbox_id: pod.clone(),
            verbose: false,
        })
        .await
        .unwrap()
        .into_inner()
        .status
        .unwrap();
    assert_eq!(ps.state, a2::PodSandboxState::SandboxReady as i32);
    assert!(
        ps.network.unwrap().ip.starts_with(&format!("10.213.{n}.")),
        "pod has no address of the test's network"
    );

    let c = rt
        .create_container(a2::CreateContainerRequest {
            pod_sandbox_id: pod.clone(),
            config: Some(a2::ContainerConfig {
                metadata: Some(a2::ContainerMetadata {
                    name: "box".into(),
                    attempt: 0,
                }),
                image: spec(),
                command: vec![
                    "sh".into(),
                    "-c".into(),
                    "echo started; exec sleep 600".into(),
                ],
                log_path: "box/0.log".into(),
                // As kubelets before 1.20 name a seccomp profile.
                linux: Some(a2::LinuxContainerConfig {
                    #[allow(deprecated)]
                    security_context: Some(a2::LinuxContainerSecurityContext {
                        seccomp_profile_path: "runtime/default".into(),
                        ..Default::default()
                    }),
                    ..Default::default()
                }),
                ..Default::default()
            }),
            sandbox_config: Some(pod_config),
        })
        .await
        .unwrap()
        .into_inner()
        .container_id;
    rt.start_container(a2::StartContainerRequest {
        container_id: c.clone(),
    })
    .await
    .unwrap();
    let cs = rt
        .container_status(a2::ContainerStatusRequest {
            container_id: c.clone(),
            verbose: false,
        })
        .await
        .unwrap()
        .into_inner()
        .status
        .unwrap();
    assert_eq!(cs.state, a2::ContainerState::ContainerRunning as i32);
    assert_eq!(cs.image_ref, image_ref);
    let exec = |cmd: &[&str]| {
        let mut rt = rt.clone();
        let req = a2::ExecSyncRequest {
            container_id: c.clone(),
            cmd: cmd.iter().map(|a| a.to_string()).collect(),
            timeout: 10,
        };
        async move { rt.exec_sync(req).await.unwrap().into_inner() }
    };
    let out = exec(&["hostname"]).await;
    assert_eq!((out.exit_code, out.stdout.as_slice()), (0, &b"alpha\n"[..]));
    let out = exec(&["grep", "Seccomp:", "/proc/1/status"]).await;
    assert_eq!(
        String::from_utf8_lossy(&out.stdout)
            .split_whitespace()
            .collect::<Vec<_>>(),
        ["Seccomp:", "2"],
        "runtime/default: a filter"
    );
    let listed = rt
        .list_containers(a2::ListContainersRequest {
            filter: Some(a2::ContainerFilter {
                pod_sandbox_id: pod.clone(),
                ..Default::default()
            }),
        })
        .await
        .unwrap()
        .into_inner()
        .containers;
    assert_eq!(listed.len(), 1);
    let stats = rt
        .container_stats(a2::ContainerStatsRequest {
            container_id: c.clone(),
        })
        .await
        .unwrap()
        .into_inner()
        .stats
        .unwrap();
    assert!(stats.memory.unwrap().working_set_bytes.unwrap().value > 0);
    // The kubelet reads the log the shim writes in the CRI format.
    let log = std::fs::read_to_string(d.dir.join("pod-logs/box/0.log")).unwrap();
    assert!(log.contains(" stdout F started"), "{log}");

    // A call only v1 has is not there under the v1alpha2 name.
    let mut e = tonic::client::Grpc::new(ch.clone());
    e.ready().await.unwrap();
    let r: Result<tonic::Response<a2::VersionResponse>, _> = e
        .unary(
            tonic::Request::new(a2::VersionRequest::default()),
            "/runtime.v1alpha2.RuntimeService/RuntimeConfig"
                .parse()
                .unwrap(),
            tonic_prost::ProstCodec::default(),
        )
        .await;
    assert_eq!(r.unwrap_err().code(), tonic::Code::Unimplemented);

    rt.stop_container(a2::StopContainerRequest {
        container_id: c.clone(),
        timeout: 0,
    })
    .await
    .unwrap();
    rt.remove_container(a2::RemoveContainerRequest { container_id: c })
        .await
        .unwrap();
    rt.stop_pod_sandbox(a2::StopPodSandboxRequest {
        pod_sandbox_id: pod.clone(),
    })
    .await
    .unwrap();
    rt.remove_pod_sandbox(a2::RemovePodSandboxRequest {
        pod_sandbox_id: pod,
    })
    .await
    .unwrap();
    let left = d.leftovers();
    assert!(left.is_empty(), "{left:#?}");
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
