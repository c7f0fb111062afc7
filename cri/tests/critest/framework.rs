//! What critest's specs share: the CRI clients of one daemon (`Cri`, with the checks critest's
//! CRI client library makes of every answer), the log and HTTP checks, the daemon, and the pods
//! and security contexts that specs of several areas make (critest's
//! createPrivilegedPodSandbox, createNamespacePodSandbox).

use super::*;
use berth_tests_support::cri::*;
use berth_tests_support::*;
use k8s_cri::v1::image_service_client::ImageServiceClient;
use k8s_cri::v1::runtime_service_client::RuntimeServiceClient;
use k8s_cri::v1::*;
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::Duration;
use tonic::transport::Channel;

/// critest's clients of one daemon, with the checks its CRI client library (k8s.io/cri-client)
/// makes of every answer before a spec sees it.
#[derive(Clone)]
pub struct Cri {
    pub rt: RuntimeServiceClient<Channel>,
    pub img: ImageServiceClient<Channel>,
    pub sock: PathBuf,
    /// Where critest's temp dirs (log directories, host paths) go.
    pub tmp: PathBuf,
}

impl Cri {
    pub async fn new(d: &Daemon) -> Cri {
        let ch = channel(d).await;
        let mut c = Cri {
            rt: RuntimeServiceClient::new(ch.clone()),
            img: ImageServiceClient::new(ch),
            sock: d.sock(),
            tmp: d.dir.join("critest"),
        };
        std::fs::create_dir_all(&c.tmp).unwrap();
        // What the client does when it connects: Version (an empty version) and ImageFsInfo.
        c.version("").await.unwrap();
        c.img
            .image_fs_info(ImageFsInfoRequest {})
            .await
            .expect("ImageFsInfo, critest's first image call");
        c
    }

    pub async fn version(&mut self, v: &str) -> Result<VersionResponse, String> {
        let r = self
            .rt
            .version(VersionRequest { version: v.into() })
            .await
            .ctx("Version")?;
        let mut missing = Vec::new();
        for (name, value) in [
            ("Version", &r.version),
            ("RuntimeName", &r.runtime_name),
            ("RuntimeVersion", &r.runtime_version),
            ("RuntimeApiVersion", &r.runtime_api_version),
        ] {
            if value.is_empty() {
                missing.push(name);
            }
        }
        check!(
            missing.is_empty(),
            "not all fields are set in VersionResponse (missing {missing:?})"
        );
        Ok(r)
    }

    /// The default pod of critest's framework (`RunDefaultPodSandbox`): a random name after
    /// `prefix`, uid and namespace, attempt 2, no labels, the cgroup parent for berth's cgroupfs
    /// driver ("").
    pub fn pod_config(prefix: &str) -> PodSandboxConfig {
        let u = uuid();
        PodSandboxConfig {
            metadata: Some(PodSandboxMetadata {
                name: format!("{prefix}{u}"),
                uid: format!("cri-test-uid{u}"),
                namespace: format!("cri-test-namespace{u}"),
                attempt: 2,
            }),
            linux: Some(LinuxPodSandboxConfig {
                cgroup_parent: String::new(),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    /// RunPodSandbox; a guard that stops and removes the pod (critest's AfterEach).
    pub async fn run_pod(&mut self, cfg: &PodSandboxConfig) -> Result<(String, PodGone), String> {
        let id = self
            .rt
            .run_pod_sandbox(RunPodSandboxRequest {
                config: Some(cfg.clone()),
                runtime_handler: String::new(),
            })
            .await
            .ctx("RunPodSandbox")?
            .pod_sandbox_id;
        check!(!id.is_empty(), "RunPodSandbox: PodSandboxId is not set");
        Ok((
            id.clone(),
            PodGone {
                sock: self.sock.clone(),
                id,
            },
        ))
    }

    pub async fn default_pod(
        &mut self,
        prefix: &str,
    ) -> Result<(String, PodSandboxConfig, PodGone), String> {
        let cfg = Self::pod_config(prefix);
        let (id, gone) = self.run_pod(&cfg).await?;
        Ok((id, cfg, gone))
    }

    /// critest's createPodSandboxWithLogDirectory: a pod whose log directory is a new temp dir.
    pub async fn log_pod(&mut self) -> Result<(String, PodSandboxConfig, PodGone), String> {
        let mut cfg = Self::pod_config("PodSandbox-with-log-directory-");
        let dir = self
            .temp_dir("podLogTest")
            .join(&cfg.metadata.as_ref().unwrap().name);
        std::fs::create_dir_all(&dir).unwrap();
        cfg.log_directory = dir.display().to_string();
        let (id, gone) = self.run_pod(&cfg).await?;
        Ok((id, cfg, gone))
    }

    pub fn temp_dir(&self, prefix: &str) -> PathBuf {
        let d = self.tmp.join(format!("{prefix}{}", &uuid()[..8]));
        std::fs::create_dir_all(&d).unwrap();
        d
    }

    pub async fn pod_status(&mut self, id: &str) -> Result<PodSandboxStatus, String> {
        let s = self
            .rt
            .pod_sandbox_status(PodSandboxStatusRequest {
                pod_sandbox_id: id.into(),
                verbose: false,
            })
            .await
            .ctx("PodSandboxStatus")?
            .status
            .ok_or("PodSandboxStatus: no status")?;
        let md = s.metadata.clone().unwrap_or_default();
        check!(
            !s.id.is_empty()
                && s.metadata.is_some()
                && !md.name.is_empty()
                && !md.namespace.is_empty()
                && !md.uid.is_empty()
                && s.created_at != 0,
            "PodSandboxStatus: not all of id, metadata, created_at are set: {s:?}"
        );
        Ok(s)
    }

    pub async fn list_pods(&mut self, filter: PodSandboxFilter) -> Result<Vec<PodSandbox>, String> {
        Ok(self
            .rt
            .list_pod_sandbox(ListPodSandboxRequest {
                filter: Some(filter),
            })
            .await
            .ctx("ListPodSandbox")?
            .items)
    }

    pub async fn stop_pod(&mut self, id: &str) -> R {
        self.rt
            .stop_pod_sandbox(StopPodSandboxRequest {
                pod_sandbox_id: id.into(),
            })
            .await
            .ctx("StopPodSandbox")?;
        Ok(())
    }

    /// critest's CleanupPodSandbox: StopPodSandbox then RemovePodSandbox.
    pub async fn cleanup_pod(&mut self, id: &str) -> R {
        self.stop_pod(id).await?;
        self.remove_pod(id).await
    }

    pub async fn remove_pod(&mut self, id: &str) -> R {
        self.rt
            .remove_pod_sandbox(RemovePodSandboxRequest {
                pod_sandbox_id: id.into(),
            })
            .await
            .ctx("RemovePodSandbox")?;
        Ok(())
    }

    /// critest's CreateContainerWithError: the image's status (a missing one is no error),
    /// pulled if missing, then CreateContainer with the pod's config.
    pub async fn create_container(
        &mut self,
        pod: &str,
        pod_cfg: &PodSandboxConfig,
        mut cfg: ContainerConfig,
    ) -> Result<String, String> {
        let image = cfg.image.clone().unwrap_or_default();
        let mut name = image.image.clone();
        if !name.contains(':') {
            name.push_str(":latest");
        }
        if self.image_status(&name).await?.is_none() {
            self.pull(&name, Some(pod_cfg.clone())).await?;
        }
        let mut image = image;
        if image.user_specified_image.is_empty() {
            image.user_specified_image = name;
        }
        cfg.image = Some(image);
        let id = self
            .rt
            .create_container(CreateContainerRequest {
                pod_sandbox_id: pod.into(),
                config: Some(cfg),
                sandbox_config: Some(pod_cfg.clone()),
            })
            .await
            .ctx("CreateContainer")?
            .container_id;
        check!(!id.is_empty(), "CreateContainer: ContainerId is not set");
        Ok(id)
    }

    /// critest's CreateDefaultContainer: busybox running `top`.
    pub fn default_container(prefix: &str) -> ContainerConfig {
        ContainerConfig {
            metadata: Some(ContainerMetadata {
                name: format!("{prefix}{}", uuid()),
                attempt: 2,
            }),
            image: spec(&busybox()),
            command: vec!["top".into()],
            linux: Some(LinuxContainerConfig::default()),
            ..Default::default()
        }
    }

    /// A container of `image` running `command`, named after `prefix`.
    pub fn container(prefix: &str, image: &str, command: &[&str]) -> ContainerConfig {
        ContainerConfig {
            command: command.iter().map(|s| s.to_string()).collect(),
            image: spec(image),
            ..Self::default_container(prefix)
        }
    }

    pub async fn start(&mut self, id: &str) -> R {
        self.rt
            .start_container(StartContainerRequest {
                container_id: id.into(),
            })
            .await
            .ctx("StartContainer")?;
        Ok(())
    }

    /// ContainerStatus, with the client library's checks of it.
    pub async fn status(&mut self, id: &str) -> Result<ContainerStatus, String> {
        self.status_verbose(id, false).await
    }

    pub async fn status_verbose(
        &mut self,
        id: &str,
        verbose: bool,
    ) -> Result<ContainerStatus, String> {
        let s = self
            .rt
            .container_status(ContainerStatusRequest {
                container_id: id.into(),
                verbose,
            })
            .await
            .ctx("ContainerStatus")?
            .status
            .ok_or("ContainerStatus: no status")?;
        check!(!s.id.is_empty(), "status.Id is not set");
        check!(
            s.metadata.as_ref().is_some_and(|m| !m.name.is_empty()),
            "status.Metadata is not set"
        );
        check!(s.created_at != 0, "status.CreatedAt is not set");
        check!(
            s.image.as_ref().is_some_and(|i| !i.image.is_empty()),
            "status.Image is not set"
        );
        check!(!s.image_ref.is_empty(), "status.ImageRef is not set");
        Ok(s)
    }

    /// Polls the container's state every `every` for up to a minute (critest's Eventually).
    pub async fn wait_state(
        &mut self,
        id: &str,
        want: ContainerState,
    ) -> Result<ContainerStatus, String> {
        let mut last = None;
        for _ in 0..240 {
            let s = self.status(id).await?;
            if s.state == want as i32 {
                return Ok(s);
            }
            last = Some(s.state);
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
        Err(format!(
            "container {id}: state {:?} after a minute, not {want:?}",
            last.and_then(|s| ContainerState::try_from(s).ok())
        ))
    }

    /// critest's testStartContainer: started, then RUNNING.
    pub async fn start_running(&mut self, id: &str) -> R {
        self.start(id).await?;
        self.wait_state(id, ContainerState::ContainerRunning)
            .await?;
        Ok(())
    }

    /// critest's testStopContainer: StopContainer with 60 s, then EXITED.
    pub async fn stop(&mut self, id: &str) -> Result<ContainerStatus, String> {
        self.rt
            .stop_container(StopContainerRequest {
                container_id: id.into(),
                timeout: 60,
            })
            .await
            .ctx("StopContainer")?;
        self.wait_state(id, ContainerState::ContainerExited).await
    }

    pub async fn remove(&mut self, id: &str) -> R {
        self.rt
            .remove_container(RemoveContainerRequest {
                container_id: id.into(),
            })
            .await
            .ctx("RemoveContainer")?;
        Ok(())
    }

    pub async fn list_containers(
        &mut self,
        filter: ContainerFilter,
    ) -> Result<Vec<Container>, String> {
        Ok(self
            .rt
            .list_containers(ListContainersRequest {
                filter: Some(filter),
            })
            .await
            .ctx("ListContainers")?
            .containers)
    }

    /// ExecSync as the client library makes it: (stdout, stderr, exit code); a gRPC error is
    /// an error.
    pub async fn exec(
        &mut self,
        id: &str,
        cmd: &[&str],
        timeout: i64,
    ) -> Result<(String, String, i32), String> {
        let r = self
            .rt
            .exec_sync(ExecSyncRequest {
                container_id: id.into(),
                cmd: cmd.iter().map(|s| s.to_string()).collect(),
                timeout,
            })
            .await
            .ctx(&format!("ExecSync {cmd:?}"))?;
        Ok((
            String::from_utf8_lossy(&r.stdout).into_owned(),
            String::from_utf8_lossy(&r.stderr).into_owned(),
            r.exit_code,
        ))
    }

    /// critest's execSyncContainer: exit 0 and nothing on stderr; stdout.
    pub async fn exec_ok(&mut self, id: &str, cmd: &[&str]) -> Result<String, String> {
        let (out, err, code) = self.exec(id, cmd, 30).await?;
        check!(
            code == 0,
            "command {cmd:?} exited with {code}: stdout {out:?} stderr {err:?}"
        );
        check!(err.is_empty(), "command {cmd:?}: stderr {err:?}");
        Ok(out)
    }

    /// An ExecSync critest expects to fail (the client library turns a non-zero exit into an
    /// error): (stdout, stderr).
    pub async fn exec_fails(&mut self, id: &str, cmd: &[&str]) -> Result<(String, String), String> {
        let (out, err, code) = self.exec(id, cmd, 30).await?;
        check!(code != 0, "command {cmd:?} succeeded: stdout {out:?}");
        Ok((out, err))
    }

    pub async fn image_status(&mut self, name: &str) -> Result<Option<Image>, String> {
        let r = self
            .img
            .image_status(ImageStatusRequest {
                image: spec(name),
                verbose: false,
            })
            .await
            .ctx(&format!("ImageStatus {name}"))?;
        if let Some(i) = &r.image {
            check!(
                !i.id.is_empty() && i.size != 0,
                "Id or size of image {name:?} is not set"
            );
        }
        Ok(r.image)
    }

    pub async fn pull(
        &mut self,
        name: &str,
        pod: Option<PodSandboxConfig>,
    ) -> Result<String, String> {
        let r = self
            .img
            .pull_image(PullImageRequest {
                image: spec(name),
                auth: None,
                sandbox_config: pod,
            })
            .await
            .ctx(&format!("PullImage {name}"))?;
        check!(
            !r.image_ref.is_empty(),
            "imageRef of image {name:?} is not set"
        );
        Ok(r.image_ref)
    }

    /// critest's removeImage: by the id ImageStatus gives, if there is one.
    pub async fn remove_image(&mut self, name: &str) -> R {
        if let Some(i) = self.image_status(name).await? {
            self.img
                .remove_image(RemoveImageRequest { image: spec(&i.id) })
                .await
                .ctx(&format!("RemoveImage {}", i.id))?;
        }
        Ok(())
    }
}

/// The entries of a CRI log file as critest parses them (`<RFC3339Nano> <stream> <tag> <log>`,
/// every line, or the spec fails): (stream, log with its newline).
pub fn log_entries(path: &Path) -> Result<Vec<(String, String)>, String> {
    let text =
        std::fs::read_to_string(path).map_err(|e| format!("open {}: {e}", path.display()))?;
    let mut out = Vec::new();
    for line in text.lines() {
        let parts: Vec<&str> = line.splitn(4, ' ').collect();
        check!(
            line.len() >= 4 && parts.len() == 4,
            "invalid CRI log line {line:?} in {}",
            path.display()
        );
        check!(
            rfc3339_nano(parts[0]),
            "invalid CRI log timestamp {:?} in {}",
            parts[0],
            path.display()
        );
        check!(
            parts[2] == "P" || parts[2] == "F",
            "invalid CRI log tag {:?}",
            parts[2]
        );
        out.push((parts[1].to_string(), format!("{}\n", parts[3])));
    }
    Ok(out)
}

/// Go's time.RFC3339Nano (`2006-01-02T15:04:05.999999999Z07:00`), as `time.Parse` takes it.
fn rfc3339_nano(s: &str) -> bool {
    let b = s.as_bytes();
    let digits = |r: std::ops::Range<usize>| {
        b.get(r.clone())
            .is_some_and(|d| d.iter().all(u8::is_ascii_digit))
    };
    if b.len() < 20 || !digits(0..4) || b[4] != b'-' || !digits(5..7) || b[7] != b'-' {
        return false;
    }
    if !digits(8..10) || b[10] != b'T' || !digits(11..13) || b[13] != b':' || !digits(14..16) {
        return false;
    }
    if b[16] != b':' || !digits(17..19) {
        return false;
    }
    let mut i = 19;
    if b.get(i) == Some(&b'.') {
        i += 1;
        let start = i;
        while b.get(i).is_some_and(u8::is_ascii_digit) {
            i += 1;
        }
        if i == start {
            return false;
        }
    }
    match &s[i..] {
        "Z" => true,
        z => {
            z.len() == 6
                && (z.starts_with('+') || z.starts_with('-'))
                && digits(i + 1..i + 3)
                && b[i + 3] == b':'
                && digits(i + 4..i + 6)
        }
    }
}

/// Logs container `ctr` to `<its name>.log` in the pod's log directory `dir`, as critest's
/// containers do; the file's path.
pub fn log_to(ctr: &mut ContainerConfig, dir: &Path) -> PathBuf {
    ctr.log_path = format!("{}.log", ctr.metadata.as_ref().unwrap().name);
    dir.join(&ctr.log_path)
}

/// critest's verifyLogContents: an entry of `stream` whose log is exactly `want`.
pub fn log_has(path: &Path, want: &str, stream: &str) -> R {
    let entries = log_entries(path)?;
    check!(
        entries.iter().any(|(s, l)| s == stream && l == want),
        "{}: no {stream} entry {want:?} in {entries:?}",
        path.display()
    );
    Ok(())
}

/// Polls `f` every `every` until it is Ok, for up to `secs` (critest's Eventually).
pub async fn eventually<F, Fut>(secs: u64, every: Duration, mut f: F) -> R
where
    F: FnMut() -> Fut,
    Fut: Future<Output = R>,
{
    let deadline = tokio::time::Instant::now() + Duration::from_secs(secs);
    loop {
        match f().await {
            Ok(()) => return Ok(()),
            Err(e) if tokio::time::Instant::now() >= deadline => {
                return Err(format!("still after {secs} s: {e}"))
            }
            Err(_) => tokio::time::sleep(every).await,
        }
    }
}

/// critest's checkMainPage: GET `url` answers 200 (polled for a minute).
pub async fn check_main_page(url: String) -> R {
    let addr = url.trim_start_matches("http://").to_string();
    eventually(60, Duration::from_secs(1), || {
        let addr = addr.clone();
        async move {
            let a = addr.clone();
            let got = tokio::task::spawn_blocking(move || http_status(&a))
                .await
                .unwrap()?;
            check!(got == 200, "GET http://{addr}: status {got}");
            Ok(())
        }
    })
    .await
}

/// The status code of `GET /` on `addr`.
fn http_status(addr: &str) -> Result<u16, String> {
    let buf = http_get(addr).map_err(|e| format!("GET http://{addr}: {e}"))?;
    buf.split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .ok_or_else(|| format!("GET http://{addr}: no HTTP answer: {buf:?}"))
}

/// A daemon on its own CNI network, with portmap's snat (as berth's example conflist has), so
/// that a host port answers on 127.0.0.1 as critest dials it.
pub fn critest_daemon(name: &str, n: u8) -> (BridgeGone, Daemon) {
    let (bridge, d) = networked_daemon(name, n);
    let conf_path = d.dir.join("net.d/10-test.conflist");
    let mut conf: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&conf_path).unwrap()).unwrap();
    conf["plugins"][1]["snat"] = true.into();
    std::fs::write(&conf_path, conf.to_string()).unwrap();
    (bridge, d)
}

pub fn subset(
    actual: &HashMap<String, String>,
    expected: &HashMap<String, String>,
    what: &str,
) -> R {
    for (k, v) in expected {
        check!(
            actual.get(k) == Some(v),
            "{what}: {k}={v} missing from {actual:?}"
        );
    }
    Ok(())
}

/// critest's createPrivilegedPodSandbox.
pub async fn privileged_pod(
    c: &mut Cri,
    privileged: bool,
) -> Result<(String, PodSandboxConfig, PodGone), String> {
    let mut cfg = Cri::pod_config("create-Privileged-PodSandbox-for-container-");
    cfg.linux.as_mut().unwrap().security_context = Some(LinuxSandboxSecurityContext {
        privileged,
        ..Default::default()
    });
    let (id, gone) = c.run_pod(&cfg).await?;
    Ok((id, cfg, gone))
}

/// critest's createNamespacePodSandbox.
pub async fn ns_pod(
    c: &mut Cri,
    opts: NamespaceOption,
    log_dir: Option<&Path>,
) -> Result<(String, PodSandboxConfig, PodGone), String> {
    let mut cfg = Cri::pod_config("NamespaceOption-PodSandbox-");
    cfg.dns_config = Some(DnsConfig::default());
    cfg.linux.as_mut().unwrap().security_context = Some(LinuxSandboxSecurityContext {
        namespace_options: Some(opts),
        ..Default::default()
    });
    if let Some(d) = log_dir {
        cfg.log_directory = d.display().to_string();
    }
    let (id, gone) = c.run_pod(&cfg).await?;
    Ok((id, cfg, gone))
}

pub fn mode(m: NamespaceMode) -> i32 {
    m as i32
}

pub fn security(sc: LinuxContainerSecurityContext) -> Option<LinuxContainerConfig> {
    Some(LinuxContainerConfig {
        security_context: Some(sc),
        ..Default::default()
    })
}
