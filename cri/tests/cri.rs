//! berthd's CRI v1 API driven the way a kubelet drives it, over the unix socket: Version and
//! Status, the ImageService against the fixture registry, and a v1alpha2 client. Pod sandboxes:
//! cri_pods.rs; containers in them: cri_containers.rs; exec, attach and port forwarding:
//! cri_streaming.rs. What is not implemented must answer Unimplemented.

use berth_tests_support::cri::*;
use berth_tests_support::*;
use k8s_cri::v1::image_service_client::ImageServiceClient;
use k8s_cri::v1::runtime_service_client::RuntimeServiceClient;
use k8s_cri::v1::*;

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
