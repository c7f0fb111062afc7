//! berthd's pod sandboxes driven through the CRI v1 API the way a kubelet drives them, on a
//! real CNI bridge: their life and death, several made and removed side by side, and an nginx
//! pod with a sidecar, a host port and a restart.

use berth_tests_support::cri::*;
use berth_tests_support::*;
use k8s_cri::v1::runtime_service_client::RuntimeServiceClient;
use k8s_cri::v1::*;
use tonic::transport::Channel;

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
