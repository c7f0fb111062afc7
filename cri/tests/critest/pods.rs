//! critest's Runtime info, Idempotence, PodSandbox, Networking and Multiple Containers specs.

use super::*;
use crate::framework::*;
use berth_tests_support::cri::*;
use berth_tests_support::*;
use k8s_cri::v1::runtime_service_client::RuntimeServiceClient;
use k8s_cri::v1::*;
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

pub async fn specs() {
    let (_bridge, d) = critest_daemon("critest-pods", 21);
    let c = Cri::new(&d).await;
    let mut suite = Suite::new();

    suite
        .spec(
            "Runtime info runtime should return version info [Conformance]",
            Box::pin(runtime_version(c.clone())),
        )
        .await;
    suite
        .spec(
            "Runtime info runtime should return runtime conditions [Conformance]",
            Box::pin(runtime_conditions(c.clone())),
        )
        .await;
    suite
        .spec(
            "Idempotence StopPodSandbox, RemovePodSandbox, StopContainer, RemoveContainer, \
             RemoveImage should not return an error if not found",
            Box::pin(idempotent_when_not_found(c.clone())),
        )
        .await;
    suite
        .spec(
            "Idempotence StopPodSandbox should not return an error if already stopped",
            Box::pin(idempotent_pod_stop(c.clone())),
        )
        .await;
    suite
        .spec(
            "Idempotence StopContainer should not return an error if already stopped",
            Box::pin(idempotent_container_remove(c.clone())),
        )
        .await;
    suite
        .spec(
            "PodSandbox runtime should support running, stopping and removing PodSandbox \
             [Conformance]",
            Box::pin(pod_run_stop_remove(c.clone())),
        )
        .await;
    suite
        .spec(
            "PodSandbox runtime should support preserving PodSandbox attributes [Conformance]",
            Box::pin(pod_attributes(c.clone())),
        )
        .await;
    suite
        .spec(
            "PodSandbox runtime should not create a second PodSandbox with the same metadata \
             [Conformance]",
            Box::pin(pod_same_metadata(c.clone())),
        )
        .await;
    suite
        .spec(
            "PodSandbox runtime should allow a PodSandbox with the same name and namespace but \
             a new UID [Conformance]",
            Box::pin(pod_new_uid(c.clone())),
        )
        .await;
    suite
        .spec(
            "PodSandbox runtime should create at most one PodSandbox for concurrent requests \
             with the same metadata [Conformance]",
            Box::pin(pod_concurrent_same_metadata(c.clone())),
        )
        .await;
    suite
        .spec(
            "PodSandbox runtime should create at most one PodSandbox when retrying a timed out \
             request [Conformance]",
            Box::pin(pod_retry_after_timeout(c.clone(), 100)),
        )
        .await;
    // berth makes a pod in less than critest's 100 ms: the same with deadlines that end while
    // it does (the pod is made to the end and listed; a retry finds it).
    for ms in [3, 10, 30] {
        suite
            .spec(
                &format!("(berth) PodSandbox retrying a request that timed out after {ms} ms"),
                Box::pin(pod_retry_after_timeout(c.clone(), ms)),
            )
            .await;
    }
    suite
        .spec(
            "PodSandbox runtime should support safe and unsafe sysctls",
            Box::pin(pod_sysctls(c.clone())),
        )
        .await;
    suite
        .spec(
            "Networking runtime should support DNS config [Conformance]",
            Box::pin(dns_config(c.clone())),
        )
        .await;
    suite
        .spec(
            "Networking runtime should support set hostname [Conformance]",
            Box::pin(hostname(c.clone())),
        )
        .await;
    suite
        .spec(
            "Networking runtime should support port mapping with only container port \
             [Conformance]",
            Box::pin(port_mapping(c.clone(), false)),
        )
        .await;
    suite
        .spec(
            "Networking runtime should support port mapping with host port and container port \
             [Conformance]",
            Box::pin(port_mapping(c.clone(), true)),
        )
        .await;
    suite
        .spec(
            "Multiple Containers [Conformance] should support network, container log and \
             container exec",
            Box::pin(multiple_containers(c.clone())),
        )
        .await;
    suite.finish();
    assert_eq!(d.leftovers(), Vec::<String>::new());
}

async fn runtime_version(mut c: Cri) -> R {
    let v = c.version("0.1.0").await?;
    check!(
        v.runtime_api_version == "v1",
        "RuntimeApiVersion {:?}",
        v.runtime_api_version
    );
    Ok(())
}

async fn runtime_conditions(mut c: Cri) -> R {
    let s =
        c.rt.status(StatusRequest { verbose: false })
            .await
            .ctx("Status")?
            .status
            .ok_or("RuntimeReady or NetworkReady condition are not set")?;
    check!(
        s.conditions.len() >= 2,
        "RuntimeReady or NetworkReady condition are not set"
    );
    for t in ["RuntimeReady", "NetworkReady"] {
        check!(
            s.conditions.iter().any(|c| c.r#type == t && c.status),
            "no {t}=true in {:?}",
            s.conditions
        );
    }
    Ok(())
}

async fn idempotent_when_not_found(mut c: Cri) -> R {
    c.stop_pod(&uuid()).await?;
    c.remove_pod(&uuid()).await?;
    c.rt.stop_container(StopContainerRequest {
        container_id: uuid(),
        timeout: 0,
    })
    .await
    .ctx("StopContainer of an unknown id")?;
    c.remove(&uuid()).await?;
    for _ in 0..2 {
        c.img
            .remove_image(RemoveImageRequest {
                image: spec(&"0".repeat(64)),
            })
            .await
            .ctx("RemoveImage of an unknown image")?;
    }
    Ok(())
}

async fn idempotent_pod_stop(mut c: Cri) -> R {
    let (id, _, _gone) = c.default_pod("idempotence-pod-").await?;
    for _ in 0..2 {
        c.stop_pod(&id).await?;
        let s = c.pod_status(&id).await?;
        check!(
            s.state == PodSandboxState::SandboxNotready as i32,
            "state {} after stop",
            s.state
        );
    }
    c.remove_pod(&id).await
}

async fn idempotent_container_remove(mut c: Cri) -> R {
    let (pod, cfg, _gone) = c.default_pod("create-PodSandbox-for-container-").await?;
    let id = c
        .create_container(
            &pod,
            &cfg,
            Cri::container("idempotence-container-", &busybox(), &["sh", "-c", "top"]),
        )
        .await?;
    c.start(&id).await?;
    c.stop(&id).await?;
    c.remove(&id).await?;
    c.remove(&id).await?;
    c.cleanup_pod(&pod).await
}

async fn pod_run_stop_remove(mut c: Cri) -> R {
    // running
    let (id, _, _gone) = c.default_pod("PodSandbox-for-create-test-").await?;
    let s = c.pod_status(&id).await?;
    check!(
        s.state == PodSandboxState::SandboxReady as i32,
        "not READY: {s:?}"
    );
    let found = c
        .list_pods(PodSandboxFilter {
            id: id.clone(),
            ..Default::default()
        })
        .await?;
    check!(
        found.iter().any(|p| p.id == id),
        "not listed by id: {found:?}"
    );
    // stopping
    c.stop_pod(&id).await?;
    let s = c.pod_status(&id).await?;
    check!(
        s.state == PodSandboxState::SandboxNotready as i32,
        "not NOTREADY after stop: {s:?}"
    );
    // removing
    c.remove_pod(&id).await?;
    let found = c
        .list_pods(PodSandboxFilter {
            id: id.clone(),
            ..Default::default()
        })
        .await?;
    check!(
        !found.iter().any(|p| p.id == id),
        "listed after remove: {found:?}"
    );
    Ok(())
}

async fn pod_attributes(mut c: Cri) -> R {
    let mut cfg = Cri::pod_config("PodSandbox-with-attributes-");
    let md = cfg.metadata.clone().unwrap();
    cfg.labels = [
        ("foo", "bar"),
        ("io.kubernetes.pod.name", md.name.as_str()),
        ("io.kubernetes.pod.namespace", md.namespace.as_str()),
        ("io.kubernetes.pod.uid", md.uid.as_str()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect();
    cfg.annotations = [("abc".to_string(), "def".to_string())].into();
    let (id, _gone) = c.run_pod(&cfg).await?;
    let s = c.pod_status(&id).await?;
    check!(
        s.metadata.as_ref() == Some(&md),
        "metadata {:?}",
        s.metadata
    );
    subset(&s.labels, &cfg.labels, "status labels")?;
    subset(&s.annotations, &cfg.annotations, "status annotations")?;
    let list = c
        .list_pods(PodSandboxFilter {
            id: id.clone(),
            ..Default::default()
        })
        .await?;
    check!(
        list.len() == 1,
        "ListPodSandbox by id: {} items",
        list.len()
    );
    check!(
        list[0].metadata.as_ref() == Some(&md),
        "listed metadata {:?}",
        list[0].metadata
    );
    subset(&list[0].labels, &cfg.labels, "listed labels")?;
    subset(&list[0].annotations, &cfg.annotations, "listed annotations")
}

/// The pods of critest's metadata-uniqueness specs: one name and namespace, a test label.
struct Uniq {
    name: String,
    namespace: String,
    label: HashMap<String, String>,
}

impl Uniq {
    fn new() -> Uniq {
        Uniq {
            name: format!("PodSandbox-for-metadata-uniqueness-test-{}", uuid()),
            namespace: format!("cri-test-namespace{}", uuid()),
            label: [("cri-tools-metadata-uniqueness-test".to_string(), uuid())].into(),
        }
    }

    fn config(&self, uid: &str, attempt: u32) -> PodSandboxConfig {
        PodSandboxConfig {
            metadata: Some(PodSandboxMetadata {
                name: self.name.clone(),
                uid: uid.into(),
                namespace: self.namespace.clone(),
                attempt,
            }),
            labels: self.label.clone(),
            linux: Some(LinuxPodSandboxConfig::default()),
            ..Default::default()
        }
    }

    async fn listed(&self, c: &mut Cri) -> Result<Vec<PodSandbox>, String> {
        c.list_pods(PodSandboxFilter {
            label_selector: self.label.clone(),
            ..Default::default()
        })
        .await
    }

    /// RunPodSandbox with a 10 s deadline, as critest's runWithSameMetadata.
    async fn run(&self, c: &mut Cri, uid: &str, attempt: u32) -> Result<String, tonic::Status> {
        let mut req = tonic::Request::new(RunPodSandboxRequest {
            config: Some(self.config(uid, attempt)),
            runtime_handler: String::new(),
        });
        req.set_timeout(Duration::from_secs(10));
        c.rt.run_pod_sandbox(req)
            .await
            .map(|r| r.into_inner().pod_sandbox_id)
    }

    /// Removes what the spec made (critest's AfterEach).
    fn gone(&self, c: &Cri) -> UniqGone {
        UniqGone {
            sock: c.sock.clone(),
            label: self.label.clone(),
        }
    }
}

struct UniqGone {
    sock: PathBuf,
    label: HashMap<String, String>,
}

impl Drop for UniqGone {
    fn drop(&mut self) {
        let (sock, label) = (self.sock.clone(), self.label.clone());
        let ids = std::thread::spawn(move || {
            tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap()
                .block_on(async move {
                    let mut rt = RuntimeServiceClient::new(connect(sock).await.ok()?);
                    let items = rt
                        .list_pod_sandbox(ListPodSandboxRequest {
                            filter: Some(PodSandboxFilter {
                                label_selector: label,
                                ..Default::default()
                            }),
                        })
                        .await
                        .ok()?
                        .into_inner()
                        .items;
                    Some(items.into_iter().map(|p| p.id).collect::<Vec<_>>())
                })
        })
        .join()
        .unwrap()
        .unwrap_or_default();
        for id in ids {
            remove_pods(&self.sock, Some(&id));
        }
    }
}

async fn pod_same_metadata(mut c: Cri) -> R {
    let u = Uniq::new();
    let _gone = u.gone(&c);
    let uid = format!("cri-test-uid{}", uuid());
    let first = u.run(&mut c, &uid, 0).await.map_err(|e| e.to_string())?;
    for phase in ["ready", "stopped"] {
        if phase == "stopped" {
            c.stop_pod(&first).await?;
        }
        if let Ok(id) = u.run(&mut c, &uid, 0).await {
            check!(
                id == first,
                "a second pod ({phase}): {id}, the first {first}"
            );
        }
        let n = u.listed(&mut c).await?.len();
        check!(n == 1, "{n} pods with the same metadata (first {phase})");
    }
    let next = u.run(&mut c, &uid, 1).await.map_err(|e| e.to_string())?;
    check!(next != first, "attempt 1 got the first pod's id");
    check!(
        u.listed(&mut c).await?.len() == 2,
        "not 2 pods after attempt 1"
    );
    c.remove_pod(&first).await?;
    let reused = u
        .run(&mut c, &uid, 0)
        .await
        .map_err(|e| format!("the metadata of a removed pod is not free: {e}"))?;
    check!(reused != first, "a removed pod's id again");
    let n = u.listed(&mut c).await?.len();
    check!(n == 2, "{n} pods after re-use, not 2");
    Ok(())
}

async fn pod_new_uid(mut c: Cri) -> R {
    let u = Uniq::new();
    let _gone = u.gone(&c);
    let first = u
        .run(&mut c, &format!("cri-test-uid{}", uuid()), 0)
        .await
        .map_err(|e| e.to_string())?;
    let second = u
        .run(&mut c, &format!("cri-test-uid{}", uuid()), 0)
        .await
        .map_err(|e| format!("same name and namespace, new uid: {e}"))?;
    check!(second != first, "the same id for a new uid");
    check!(u.listed(&mut c).await?.len() == 2, "not 2 pods");
    Ok(())
}

async fn pod_concurrent_same_metadata(c: Cri) -> R {
    let u = std::sync::Arc::new(Uniq::new());
    let _gone = u.gone(&c);
    let uid = format!("cri-test-uid{}", uuid());
    let mut tasks = Vec::new();
    for _ in 0..5 {
        let (u, mut c, uid) = (u.clone(), c.clone(), uid.clone());
        tasks.push(tokio::spawn(async move { u.run(&mut c, &uid, 0).await }));
    }
    let mut ok = Vec::new();
    for t in tasks {
        if let Ok(id) = t.await.unwrap() {
            ok.push(id);
        }
    }
    ok.sort();
    ok.dedup();
    check!(ok.len() == 1, "successful requests gave {ok:?}");
    let mut c = c;
    let listed = u.listed(&mut c).await?;
    check!(
        listed.len() == 1 && listed[0].id == ok[0],
        "listed {:?}, succeeded {ok:?}",
        listed.iter().map(|p| &p.id).collect::<Vec<_>>()
    );
    Ok(())
}

async fn pod_retry_after_timeout(mut c: Cri, deadline_ms: u64) -> R {
    let u = Uniq::new();
    let _gone = u.gone(&c);
    let uid = format!("cri-test-uid{}", uuid());
    let mut req = tonic::Request::new(RunPodSandboxRequest {
        config: Some(u.config(&uid, 0)),
        runtime_handler: String::new(),
    });
    req.set_timeout(Duration::from_millis(deadline_ms));
    let first = c.rt.run_pod_sandbox(req).await;
    eprintln!(
        "RunPodSandbox with {deadline_ms} ms: {:?}",
        first.as_ref().map(|_| ()).map_err(|e| e.code())
    );
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        let n = u.listed(&mut c).await?.len();
        check!(n <= 1, "runtime created more than one PodSandbox ({n})");
        if n == 1 {
            break;
        }
        check!(
            tokio::time::Instant::now() < deadline,
            "no PodSandbox listed after a minute of retries"
        );
        let r = u.run(&mut c, &uid, 0).await;
        eprintln!("retry: {:?}", r.map_err(|e| e.code()));
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    for _ in 0..10 {
        let n = u.listed(&mut c).await?.len();
        check!(n == 1, "{n} pods listed later");
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    Ok(())
}

async fn pod_sysctls(mut c: Cri) -> R {
    for (key, path, value) in [
        (
            "kernel.shm_rmid_forced",
            "/proc/sys/kernel/shm_rmid_forced",
            "1",
        ),
        ("fs.mqueue.msg_max", "/proc/sys/fs/mqueue/msg_max", "100"),
    ] {
        let mut cfg = Cri::pod_config("pod-sandbox-with-sysctls-");
        cfg.linux.as_mut().unwrap().sysctls = [(key.to_string(), value.to_string())].into();
        let (pod, _gone) = c.run_pod(&cfg).await?;
        let id = c
            .create_container(&pod, &cfg, Cri::default_container("container-sysctl-"))
            .await?;
        c.start(&id).await?;
        let (out, _, code) = c.exec(&id, &["cat", path], 30).await?;
        check!(
            code == 0 && out.trim() == value,
            "{key}: {out:?} (exit {code})"
        );
        c.cleanup_pod(&pod).await?;
    }
    Ok(())
}

async fn dns_config(mut c: Cri) -> R {
    let mut cfg = Cri::pod_config("create-PodSandbox-with-DNS-config");
    cfg.dns_config = Some(DnsConfig {
        servers: vec!["10.10.10.10".into()],
        searches: vec!["google.com".into()],
        options: vec!["ndots:8".into()],
    });
    let (pod, _gone) = c.run_pod(&cfg).await?;
    let id = c
        .create_container(
            &pod,
            &cfg,
            Cri::default_container("container-for-DNS-config-test-"),
        )
        .await?;
    c.start(&id).await?;
    let out = c.exec_ok(&id, &["cat", "/etc/resolv.conf"]).await?;
    for want in [
        "nameserver 10.10.10.10",
        "search google.com",
        "options ndots:8",
    ] {
        check!(out.contains(want), "resolv.conf lacks {want:?}: {out:?}");
    }
    c.cleanup_pod(&pod).await
}

async fn hostname(mut c: Cri) -> R {
    let mut cfg = Cri::pod_config("create-PodSandbox-with-hostname");
    cfg.hostname = "test-hostname".into();
    let (pod, _gone) = c.run_pod(&cfg).await?;
    let id = c
        .create_container(
            &pod,
            &cfg,
            Cri::default_container("container-for-hostname-test-"),
        )
        .await?;
    c.start(&id).await?;
    let out = c.exec_ok(&id, &["hostname"]).await?;
    check!(
        out.trim().eq_ignore_ascii_case("test-hostname"),
        "hostname {out:?}"
    );
    c.cleanup_pod(&pod).await
}

async fn port_mapping(mut c: Cri, with_host_port: bool) -> R {
    let host_port = if with_host_port { free_port() } else { 0 };
    let mut cfg = Cri::pod_config("create-PodSandbox-with-port-mapping");
    cfg.port_mappings = vec![PortMapping {
        protocol: Protocol::Tcp as i32,
        container_port: 80,
        host_port: host_port as i32,
        host_ip: String::new(),
    }];
    let (pod, _gone) = c.run_pod(&cfg).await?;
    let mut web = Cri::container("container-for-port-mapping", &nginx(), &[]);
    web.command.clear();
    let id = c.create_container(&pod, &cfg, web).await?;
    c.start(&id).await?;
    if with_host_port {
        check_main_page(format!("http://127.0.0.1:{host_port}")).await?;
    } else {
        let ip = c
            .pod_status(&pod)
            .await?
            .network
            .ok_or("no network in the pod's status")?
            .ip;
        check_main_page(format!("http://{ip}:80")).await?;
    }
    c.cleanup_pod(&pod).await
}

async fn multiple_containers(mut c: Cri) -> R {
    // critest's httpd image is not here: nginx serves port 80 the same way.
    let mut cfg = Cri::pod_config("PodSandbox-for-multi-container-test-");
    let logs = c
        .temp_dir("podLogTest")
        .join(&cfg.metadata.as_ref().unwrap().name);
    std::fs::create_dir_all(&logs).unwrap();
    cfg.log_directory = logs.display().to_string();
    cfg.port_mappings = vec![PortMapping {
        container_port: 80,
        ..Default::default()
    }];
    let (pod, _gone) = c.run_pod(&cfg).await?;
    let u = uuid();
    let mut web = Cri::container("httpd", &nginx(), &[]);
    web.command.clear();
    web.metadata.as_mut().unwrap().name = format!("httpd{u}");
    web.log_path = format!("httpd{u}.log");
    let web = c.create_container(&pod, &cfg, web).await?;
    c.start_running(&web).await?;
    let mut bb = Cri::container(
        "busybox",
        &busybox(),
        &["sh", "-c", "echo hello World; sleep 1000"],
    );
    bb.metadata.as_mut().unwrap().name = format!("busybox{u}");
    bb.log_path = format!("busybox{u}.log");
    bb.linux = None;
    let bb = c.create_container(&pod, &cfg, bb).await?;
    c.start_running(&bb).await?;
    // should support network
    let ip = c.pod_status(&pod).await?.network.ok_or("no network")?.ip;
    check_main_page(format!("http://{ip}:80")).await?;
    // should support container log (read at the status' log path, as critest does); nginx logs
    // the GET above.
    for (id, want) in [(&web, "GET / "), (&bb, "hello World")] {
        let path = c.status(id).await?.log_path;
        check!(
            Path::new(&path).is_absolute(),
            "log path {path:?} not absolute"
        );
        eventually(60, Duration::from_millis(100), || {
            let path = path.clone();
            async move {
                let text = std::fs::read_to_string(&path).map_err(|e| e.to_string())?;
                check!(text.contains(want), "{path}: no {want:?} in {text:?}");
                Ok(())
            }
        })
        .await?;
    }
    // should support container exec
    check!(
        c.exec_ok(&web, &["echo", "httpd"]).await? == "httpd\n",
        "exec in nginx"
    );
    check!(
        c.exec_ok(&bb, &["echo", "busybox"]).await? == "busybox\n",
        "exec in busybox"
    );
    c.cleanup_pod(&pod).await
}
