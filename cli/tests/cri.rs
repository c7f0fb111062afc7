//! berthd's CRI v1 API driven the way a kubelet drives it, over the unix socket: Version and
//! Status, the ImageService against the fixture registry, pod sandboxes on a real CNI bridge.
//! and containers in them. (Exec, attach and port forwarding: cri_streaming.rs. What is not
//! implemented must answer Unimplemented.)

mod common;

use common::cri::*;
use common::*;
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
    let _bridge = BridgeGone(format!("bk{n}"));
    let mut d = daemon("cri-pods", n);
    write_pod_network(&d, n);
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
    let mut im = ImageServiceClient::new(channel(&d).await);
    let image = im
        .pull_image(PullImageRequest {
            image: spec(&format!("{}/library/busybox:latest", registry())),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .image_ref;
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
        .stop_pod_sandbox(StopPodSandboxRequest {
            pod_sandbox_id: "nosuch".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), tonic::Code::NotFound);
    let left = d.leftovers();
    assert!(left.is_empty(), "{left:#?}");
}
