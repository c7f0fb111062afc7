//! What critest (cri-tools' validation suite, the conformance test Kubernetes runs against a
//! container runtime) checks, written again here against berthd: critest itself cannot be
//! built on this machine (it is not packaged for Debian and needs Go modules from the
//! internet). Each check below is one critest spec, named as critest names it, making the same
//! CRI calls with the same fields and asserting what the spec asserts, including what critest's
//! CRI client library checks of every answer (see `Cri`). Where critest needs something this
//! machine does not have, the nearest equivalent is used and said so at that spec: the images
//! are the fixture registry's busybox and nginx, or images built from them here (`Images`); a
//! command busybox of Debian lacks (`ipcs`, `pgrep`) is replaced by what it has.
//!
//! A test runs its specs one after another and reports every failing one, as critest does,
//! then fails if any did. Specs critest skips on a runtime like berth (SELinux on a host
//! without it, user namespaces, metrics, cgroup mount mode, image volumes, the newest streaming
//! list calls) are listed in docs/compat.md, not here. Its AppArmor specs are here
//! (`critest_apparmor`); on this machine, whose kernel has no AppArmor, scripts/apparmor-vm.sh
//! runs them in a VM.

use berth_tests_support::cri::*;
use berth_tests_support::*;
use k8s_cri::v1::image_service_client::ImageServiceClient;
use k8s_cri::v1::runtime_service_client::RuntimeServiceClient;
use k8s_cri::v1::*;
use std::collections::HashMap;
use std::future::Future;
use std::path::{Path, PathBuf};
use std::time::Duration;
use tonic::transport::Channel;

type R = Result<(), String>;

/// `Err` with a message, as critest's `Expect(...)` failing.
macro_rules! check {
    ($cond:expr, $($fmt:tt)+) => {
        if !$cond {
            return Err(format!($($fmt)+));
        }
    };
}

/// A gRPC error as text, with what was being done.
trait Ctx<T> {
    fn ctx(self, what: &str) -> Result<T, String>;
}

impl<T> Ctx<T> for Result<tonic::Response<T>, tonic::Status> {
    fn ctx(self, what: &str) -> Result<T, String> {
        self.map(|r| r.into_inner())
            .map_err(|s| format!("{what}: {:?}: {}", s.code(), s.message()))
    }
}

/// critest's run: every spec, its failures collected.
struct Suite {
    failed: Vec<String>,
    ran: usize,
}

impl Suite {
    fn new() -> Suite {
        Suite {
            failed: Vec::new(),
            ran: 0,
        }
    }

    /// `f` boxed: the specs' futures side by side would not fit a thread's stack.
    async fn spec(&mut self, name: &str, f: std::pin::Pin<Box<impl Future<Output = R>>>) {
        self.ran += 1;
        // critest's timeouts for one spec are minutes; a spec that hangs fails, not the test.
        match tokio::time::timeout(Duration::from_secs(240), f).await {
            Ok(Ok(())) => eprintln!("ok   [k8s.io] {name}"),
            Ok(Err(e)) => {
                eprintln!("FAIL [k8s.io] {name}: {e}");
                self.failed.push(format!("[k8s.io] {name}: {e}"));
            }
            Err(_) => {
                eprintln!("FAIL [k8s.io] {name}: did not finish in 240 s");
                self.failed
                    .push(format!("[k8s.io] {name}: did not finish in 240 s"));
            }
        }
    }

    fn finish(self) {
        assert!(
            self.failed.is_empty(),
            "{} of {} critest specs failed:\n{}",
            self.failed.len(),
            self.ran,
            self.failed.join("\n")
        );
    }
}

/// A random UUID, as critest names every pod and container with one.
fn uuid() -> String {
    std::fs::read_to_string("/proc/sys/kernel/random/uuid")
        .unwrap()
        .trim()
        .to_string()
}

fn busybox() -> String {
    format!("{}/library/busybox:latest", registry())
}

fn nginx() -> String {
    format!("{}/library/nginx:latest", registry())
}

/// critest's clients of one daemon, with the checks its CRI client library (k8s.io/cri-client)
/// makes of every answer before a spec sees it.
#[derive(Clone)]
struct Cri {
    rt: RuntimeServiceClient<Channel>,
    img: ImageServiceClient<Channel>,
    sock: PathBuf,
    /// Where critest's temp dirs (log directories, host paths) go.
    tmp: PathBuf,
}

impl Cri {
    async fn new(d: &Daemon) -> Cri {
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

    async fn version(&mut self, v: &str) -> Result<VersionResponse, String> {
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
    fn pod_config(prefix: &str) -> PodSandboxConfig {
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
    async fn run_pod(&mut self, cfg: &PodSandboxConfig) -> Result<(String, PodGone), String> {
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

    async fn default_pod(
        &mut self,
        prefix: &str,
    ) -> Result<(String, PodSandboxConfig, PodGone), String> {
        let cfg = Self::pod_config(prefix);
        let (id, gone) = self.run_pod(&cfg).await?;
        Ok((id, cfg, gone))
    }

    /// critest's createPodSandboxWithLogDirectory: a pod whose log directory is a new temp dir.
    async fn log_pod(&mut self) -> Result<(String, PodSandboxConfig, PodGone), String> {
        let mut cfg = Self::pod_config("PodSandbox-with-log-directory-");
        let dir = self
            .temp_dir("podLogTest")
            .join(&cfg.metadata.as_ref().unwrap().name);
        std::fs::create_dir_all(&dir).unwrap();
        cfg.log_directory = dir.display().to_string();
        let (id, gone) = self.run_pod(&cfg).await?;
        Ok((id, cfg, gone))
    }

    fn temp_dir(&self, prefix: &str) -> PathBuf {
        let d = self.tmp.join(format!("{prefix}{}", &uuid()[..8]));
        std::fs::create_dir_all(&d).unwrap();
        d
    }

    async fn pod_status(&mut self, id: &str) -> Result<PodSandboxStatus, String> {
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

    async fn list_pods(&mut self, filter: PodSandboxFilter) -> Result<Vec<PodSandbox>, String> {
        Ok(self
            .rt
            .list_pod_sandbox(ListPodSandboxRequest {
                filter: Some(filter),
            })
            .await
            .ctx("ListPodSandbox")?
            .items)
    }

    async fn stop_pod(&mut self, id: &str) -> R {
        self.rt
            .stop_pod_sandbox(StopPodSandboxRequest {
                pod_sandbox_id: id.into(),
            })
            .await
            .ctx("StopPodSandbox")?;
        Ok(())
    }

    /// critest's CleanupPodSandbox: StopPodSandbox then RemovePodSandbox.
    async fn cleanup_pod(&mut self, id: &str) -> R {
        self.stop_pod(id).await?;
        self.remove_pod(id).await
    }

    async fn remove_pod(&mut self, id: &str) -> R {
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
    async fn create_container(
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
    fn default_container(prefix: &str) -> ContainerConfig {
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
    fn container(prefix: &str, image: &str, command: &[&str]) -> ContainerConfig {
        ContainerConfig {
            command: command.iter().map(|s| s.to_string()).collect(),
            image: spec(image),
            ..Self::default_container(prefix)
        }
    }

    async fn start(&mut self, id: &str) -> R {
        self.rt
            .start_container(StartContainerRequest {
                container_id: id.into(),
            })
            .await
            .ctx("StartContainer")?;
        Ok(())
    }

    /// ContainerStatus, with the client library's checks of it.
    async fn status(&mut self, id: &str) -> Result<ContainerStatus, String> {
        self.status_verbose(id, false).await
    }

    async fn status_verbose(&mut self, id: &str, verbose: bool) -> Result<ContainerStatus, String> {
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
    async fn wait_state(
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
    async fn start_running(&mut self, id: &str) -> R {
        self.start(id).await?;
        self.wait_state(id, ContainerState::ContainerRunning)
            .await?;
        Ok(())
    }

    /// critest's testStopContainer: StopContainer with 60 s, then EXITED.
    async fn stop(&mut self, id: &str) -> Result<ContainerStatus, String> {
        self.rt
            .stop_container(StopContainerRequest {
                container_id: id.into(),
                timeout: 60,
            })
            .await
            .ctx("StopContainer")?;
        self.wait_state(id, ContainerState::ContainerExited).await
    }

    async fn remove(&mut self, id: &str) -> R {
        self.rt
            .remove_container(RemoveContainerRequest {
                container_id: id.into(),
            })
            .await
            .ctx("RemoveContainer")?;
        Ok(())
    }

    async fn list_containers(&mut self, filter: ContainerFilter) -> Result<Vec<Container>, String> {
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
    async fn exec(
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
    async fn exec_ok(&mut self, id: &str, cmd: &[&str]) -> Result<String, String> {
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
    async fn exec_fails(&mut self, id: &str, cmd: &[&str]) -> Result<(String, String), String> {
        let (out, err, code) = self.exec(id, cmd, 30).await?;
        check!(code != 0, "command {cmd:?} succeeded: stdout {out:?}");
        Ok((out, err))
    }

    async fn image_status(&mut self, name: &str) -> Result<Option<Image>, String> {
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

    async fn pull(&mut self, name: &str, pod: Option<PodSandboxConfig>) -> Result<String, String> {
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
    async fn remove_image(&mut self, name: &str) -> R {
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
fn log_entries(path: &Path) -> Result<Vec<(String, String)>, String> {
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
fn log_to(ctr: &mut ContainerConfig, dir: &Path) -> PathBuf {
    ctr.log_path = format!("{}.log", ctr.metadata.as_ref().unwrap().name);
    dir.join(&ctr.log_path)
}

/// critest's verifyLogContents: an entry of `stream` whose log is exactly `want`.
fn log_has(path: &Path, want: &str, stream: &str) -> R {
    let entries = log_entries(path)?;
    check!(
        entries.iter().any(|(s, l)| s == stream && l == want),
        "{}: no {stream} entry {want:?} in {entries:?}",
        path.display()
    );
    Ok(())
}

/// Polls `f` every `every` until it is Ok, for up to `secs` (critest's Eventually).
async fn eventually<F, Fut>(secs: u64, every: Duration, mut f: F) -> R
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
async fn check_main_page(url: String) -> R {
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
fn critest_daemon(name: &str, n: u8) -> (BridgeGone, Daemon) {
    let (bridge, d) = networked_daemon(name, n);
    let conf_path = d.dir.join("net.d/10-test.conflist");
    let mut conf: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&conf_path).unwrap()).unwrap();
    conf["plugins"][1]["snat"] = true.into();
    std::fs::write(&conf_path, conf.to_string()).unwrap();
    (bridge, d)
}

// ---------------------------------------------------------------------------------------------
// Runtime info, Idempotence, PodSandbox, Networking, Multiple Containers

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn critest_runtime_pods_and_networking() {
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

fn subset(actual: &HashMap<String, String>, expected: &HashMap<String, String>, what: &str) -> R {
    for (k, v) in expected {
        check!(
            actual.get(k) == Some(v),
            "{what}: {k}={v} missing from {actual:?}"
        );
    }
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

// ---------------------------------------------------------------------------------------------
// Container, Container Mount Propagation, Container OOM, Container Mount Readonly

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn critest_containers() {
    let (_bridge, d) = critest_daemon("critest-ctrs", 22);
    let c = Cri::new(&d).await;
    let mut suite = Suite::new();
    let basic = "Container runtime should support basic operations on container";
    suite
        .spec(
            &format!("{basic} runtime should support creating container [Conformance]"),
            Box::pin(container_create(c.clone())),
        )
        .await;
    suite
        .spec(
            &format!(
                "{basic} runtime should support preserving container attributes [Conformance]"
            ),
            Box::pin(container_attributes(c.clone())),
        )
        .await;
    suite
        .spec(
            &format!(
                "{basic} runtime should support starting and stopping container [Conformance]"
            ),
            Box::pin(container_start_stop(c.clone())),
        )
        .await;
    suite
        .spec(
            &format!("{basic} runtime should support removing created, running and stopped container [Conformance]"),
            Box::pin(container_remove(c.clone())),
        )
        .await;
    suite
        .spec(
            &format!("{basic} runtime should support execSync [Conformance]"),
            Box::pin(container_exec_sync(c.clone())),
        )
        .await;
    suite
        .spec(
            &format!("{basic} runtime should support execSync with timeout [Conformance]"),
            Box::pin(container_exec_sync_timeout(c.clone())),
        )
        .await;
    suite
        .spec(
            &format!("{basic} runtime should support listing container stats (by id, nil filter, three containers, labels) [Conformance]"),
            Box::pin(container_stats(c.clone())),
        )
        .await;
    suite
        .spec(
            "Container runtime should support adding volume and device runtime should support \
             starting container with volume [Conformance]",
            Box::pin(container_volume(c.clone(), false)),
        )
        .await;
    suite
        .spec(
            "Container runtime should support adding volume and device runtime should support \
             starting container with volume when host path is a symlink [Conformance]",
            Box::pin(container_volume(c.clone(), true)),
        )
        .await;
    suite
        .spec(
            "Container runtime should support log runtime should support starting container \
             with log [Conformance]",
            Box::pin(container_log(c.clone())),
        )
        .await;
    suite
        .spec(
            "Container runtime should support log runtime should support reopening container \
             log [Conformance]",
            Box::pin(container_reopen_log(c.clone())),
        )
        .await;
    suite
        .spec(
            "Container OOM runtime should output OOMKilled reason should terminate with \
             exitCode 137 and reason OOMKilled",
            Box::pin(container_oom(c.clone())),
        )
        .await;
    for (p, what) in [
        (
            MountPropagation::PropagationPrivate,
            "mount with 'rprivate' should not support propagation",
        ),
        (
            MountPropagation::PropagationBidirectional,
            "mount with 'rshared' should support propagation from host to container and vice versa",
        ),
        (
            MountPropagation::PropagationHostToContainer,
            "mount with 'rslave' should support propagation from host to container",
        ),
    ] {
        suite
            .spec(
                &format!(
                    "Container Mount Propagation runtime should support mount propagation {what}"
                ),
                Box::pin(mount_propagation(c.clone(), p)),
            )
            .await;
    }
    let ro = "Container Mount Readonly runtime should support readonly mounts";
    suite
        .spec(
            &format!("{ro} should support non-recursive readonly mounts"),
            Box::pin(readonly_mount(c.clone(), false)),
        )
        .await;
    suite
        .spec(
            &format!("{ro} should support recursive readonly mounts"),
            Box::pin(readonly_mount(c.clone(), true)),
        )
        .await;
    suite
        .spec(
            &format!("{ro} should reject a recursive readonly mount with PROPAGATION_HOST_TO_CONTAINER, PROPAGATION_BIDIRECTIONAL or ReadOnly: false"),
            Box::pin(readonly_mount_rejects(c.clone())),
        )
        .await;
    suite
        .spec(
            "Image Volume [Feature:ImageVolume] is skipped: berthd answers Unimplemented",
            Box::pin(image_volume_unimplemented(c.clone())),
        )
        .await;
    suite.finish();
    assert_eq!(d.leftovers(), Vec::<String>::new());
}

async fn container_create(mut c: Cri) -> R {
    let (pod, cfg, _gone) = c.default_pod("create-PodSandbox-for-container-").await?;
    let id = c
        .create_container(&pod, &cfg, Cri::default_container("container-for-create-"))
        .await?;
    let listed = c
        .list_containers(ContainerFilter {
            id: id.clone(),
            ..Default::default()
        })
        .await?;
    check!(listed.iter().any(|x| x.id == id), "not listed: {listed:?}");
    c.cleanup_pod(&pod).await
}

async fn container_attributes(mut c: Cri) -> R {
    let (pod, cfg, _gone) = c.default_pod("create-PodSandbox-for-container-").await?;
    let name = format!("container-with-attributes-{}", uuid());
    let labels: HashMap<String, String> = [
        ("foo", "bar"),
        ("io.kubernetes.container.name", name.as_str()),
        ("io.kubernetes.pod.name", "fake-pod-name"),
        ("io.kubernetes.pod.namespace", "fake-pod-namespace"),
        ("io.kubernetes.pod.uid", "fake-pod-uid"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect();
    let annotations: HashMap<String, String> = [("abc".to_string(), "def".to_string())].into();
    let md = ContainerMetadata {
        name: name.clone(),
        attempt: 2,
    };
    let id = c
        .create_container(
            &pod,
            &cfg,
            ContainerConfig {
                metadata: Some(md.clone()),
                image: spec(&busybox()),
                labels: labels.clone(),
                annotations: annotations.clone(),
                ..Default::default()
            },
        )
        .await?;
    let s = c.status(&id).await?;
    check!(
        s.metadata.as_ref() == Some(&md),
        "metadata {:?}",
        s.metadata
    );
    subset(&s.labels, &labels, "status labels")?;
    subset(&s.annotations, &annotations, "status annotations")?;
    let listed = c
        .list_containers(ContainerFilter {
            id: id.clone(),
            ..Default::default()
        })
        .await?;
    check!(listed.len() == 1, "{} listed by id", listed.len());
    check!(listed[0].metadata.as_ref() == Some(&md), "listed metadata");
    subset(&listed[0].labels, &labels, "listed labels")?;
    subset(&listed[0].annotations, &annotations, "listed annotations")?;
    c.cleanup_pod(&pod).await
}

async fn container_start_stop(mut c: Cri) -> R {
    let (pod, cfg, _gone) = c.default_pod("create-PodSandbox-for-container-").await?;
    let id = c
        .create_container(
            &pod,
            &cfg,
            Cri::default_container("container-for-start-test-"),
        )
        .await?;
    c.start_running(&id).await?;
    let id2 = c
        .create_container(
            &pod,
            &cfg,
            Cri::default_container("container-for-stop-test-"),
        )
        .await?;
    c.start(&id2).await?;
    let s = c.stop(&id2).await?;
    // critest gives StopContainer 60 s and fails the spec if the call takes longer: `top` must
    // end on the SIGTERM, not on the SIGKILL after the grace period.
    check!(
        s.exit_code != 137,
        "top was killed (exit 137) after the grace period, not stopped by SIGTERM: {s:?}"
    );
    c.cleanup_pod(&pod).await
}

async fn container_remove(mut c: Cri) -> R {
    let (pod, cfg, _gone) = c.default_pod("create-PodSandbox-for-container-").await?;
    for phase in ["created", "running", "stopped"] {
        let id = c
            .create_container(
                &pod,
                &cfg,
                Cri::container(
                    &format!("container-for-remove-{phase}-test-"),
                    &busybox(),
                    &["sh", "-c", "top"],
                ),
            )
            .await?;
        if phase != "created" {
            c.start(&id).await?;
        }
        if phase == "stopped" {
            c.stop(&id).await?;
        }
        c.remove(&id).await?;
        let listed = c
            .list_containers(ContainerFilter {
                id: id.clone(),
                ..Default::default()
            })
            .await?;
        check!(
            !listed.iter().any(|x| x.id == id),
            "{phase}: listed after remove"
        );
    }
    c.cleanup_pod(&pod).await
}

async fn container_exec_sync(mut c: Cri) -> R {
    let (pod, cfg, _gone) = c.default_pod("create-PodSandbox-for-container-").await?;
    let id = c
        .create_container(&pod, &cfg, Cri::default_container("container-for-exec-"))
        .await?;
    c.start(&id).await?;
    let out = c.exec_ok(&id, &["echo", "-n", "hello"]).await?;
    check!(out == "hello", "stdout {out:?}");
    c.cleanup_pod(&pod).await
}

async fn container_exec_sync_timeout(mut c: Cri) -> R {
    let (pod, cfg, _gone) = c.default_pod("create-PodSandbox-for-container-").await?;
    let id = c
        .create_container(
            &pod,
            &cfg,
            Cri::default_container("container-for-exec-timeout-"),
        )
        .await?;
    c.start(&id).await?;
    match c.exec(&id, &["sleep", "4321"], 1).await {
        Err(_) => {}
        Ok((_, _, code)) => check!(code != 0, "sleep 4321 with a 1 s timeout succeeded"),
    }
    // critest runs `pgrep sleep || true`; busybox of Debian has pidof, not pgrep.
    let out = c.exec_ok(&id, &["sh", "-c", "pidof sleep || true"]).await?;
    check!(
        out.trim().is_empty(),
        "the timed-out sleep still runs: {out:?}"
    );
    c.cleanup_pod(&pod).await
}

async fn stats_ids(
    c: &mut Cri,
    filter: Option<ContainerStatsFilter>,
) -> Result<Vec<String>, String> {
    Ok(c.rt
        .list_container_stats(ListContainerStatsRequest { filter })
        .await
        .ctx("ListContainerStats")?
        .stats
        .into_iter()
        .filter_map(|s| s.attributes.map(|a| a.id))
        .collect())
}

async fn container_stats(mut c: Cri) -> R {
    let (pod, cfg, _gone) = c.default_pod("create-PodSandbox-for-container-").await?;
    let id = c
        .create_container(&pod, &cfg, Cri::default_container("container-for-stats-"))
        .await?;
    c.start(&id).await?;
    let s =
        c.rt.container_stats(ContainerStatsRequest {
            container_id: id.clone(),
        })
        .await
        .ctx("ContainerStats")?
        .stats
        .ok_or("ContainerStats: no stats")?;
    let a = s.attributes.clone().unwrap_or_default();
    check!(a.id == id, "attributes.id {:?}", a.id);
    check!(
        a.metadata
            .is_some_and(|m| m.name.contains("container-for-stats-")),
        "attributes.metadata"
    );
    check!(
        s.cpu.as_ref().is_some_and(|x| x.timestamp != 0),
        "cpu.timestamp: {s:?}"
    );
    check!(
        s.memory.as_ref().is_some_and(|x| x.timestamp != 0),
        "memory.timestamp: {s:?}"
    );
    let by_id = stats_ids(
        &mut c,
        Some(ContainerStatsFilter {
            id: id.clone(),
            ..Default::default()
        }),
    )
    .await?;
    check!(by_id.contains(&id), "ListContainerStats by id: {by_id:?}");
    let mut three = Vec::new();
    for _ in 0..3 {
        three.push(
            c.create_container(
                &pod,
                &cfg,
                Cri::default_container("container-for-stats-with-nil-filter-"),
            )
            .await?,
        );
    }
    for x in &three {
        c.start(x).await?;
    }
    let all = stats_ids(&mut c, None).await?;
    for x in three.iter().chain([&id]) {
        check!(
            all.contains(x),
            "ListContainerStats(nil) lacks {x}: {all:?}"
        );
    }
    let mut labelled = Cri::default_container("container-for-stats-with-labels-");
    labelled.labels = [("foo".to_string(), "bar".to_string())].into();
    let lid = c.create_container(&pod, &cfg, labelled).await?;
    c.start(&lid).await?;
    for (v, want) in [("bar", true), ("baz", false)] {
        let got = stats_ids(
            &mut c,
            Some(ContainerStatsFilter {
                label_selector: [("foo".to_string(), v.to_string())].into(),
                ..Default::default()
            }),
        )
        .await?;
        check!(got.contains(&lid) == want, "label foo={v}: {got:?}");
    }
    c.cleanup_pod(&pod).await
}

async fn container_volume(mut c: Cri, symlink: bool) -> R {
    let (pod, cfg, _gone) = c.default_pod("create-PodSandbox-for-container-").await?;
    let host = c.temp_dir(&format!("test{pod}"));
    std::fs::write(host.join("testVolume.file"), "").unwrap();
    let path = if symlink {
        let l = PathBuf::from(format!("{}-symlink", host.display()));
        std::os::unix::fs::symlink(&host, &l).unwrap();
        l
    } else {
        host.clone()
    };
    let p = path.display().to_string();
    let mut ctr = Cri::container(
        "container-with-volume-test-",
        &busybox(),
        &["sh", "-c", "top"],
    );
    ctr.linux = None;
    ctr.mounts = vec![Mount {
        host_path: p.clone(),
        container_path: p.clone(),
        selinux_relabel: true,
        ..Default::default()
    }];
    let id = c.create_container(&pod, &cfg, ctr).await?;
    c.start_running(&id).await?;
    let out = c.exec_ok(&id, &["ls", "-A", &p]).await?;
    check!(!out.is_empty(), "ls -A {p}: nothing");
    c.cleanup_pod(&pod).await
}

async fn container_log(mut c: Cri) -> R {
    let (pod, cfg, _gone) = c.log_pod().await?;
    let mut ctr = Cri::container(
        "container-with-log-test-",
        &busybox(),
        &["echo", "hello World"],
    );
    ctr.linux = None;
    let log = log_to(&mut ctr, Path::new(&cfg.log_directory));
    let id = c.create_container(&pod, &cfg, ctr).await?;
    c.start(&id).await?;
    c.wait_state(&id, ContainerState::ContainerExited).await?;
    log_has(&log, "hello World\n", "stdout")?;
    c.cleanup_pod(&pod).await
}

async fn container_reopen_log(mut c: Cri) -> R {
    let (pod, cfg, _gone) = c.log_pod().await?;
    let mut ctr = Cri::container(
        "container-reopen-log-test-",
        &busybox(),
        &["sh", "-c", "while true; do echo hello World; sleep 1; done"],
    );
    ctr.linux = None;
    let log = log_to(&mut ctr, Path::new(&cfg.log_directory));
    let id = c.create_container(&pod, &cfg, ctr).await?;
    c.start(&id).await?;
    let some = |p: PathBuf| async move {
        let e = log_entries(&p)?;
        check!(!e.is_empty(), "{}: empty", p.display());
        Ok(())
    };
    eventually(60, Duration::from_secs(1), || some(log.clone())).await?;
    let renamed = log.with_extension("log.new");
    std::fs::rename(&log, &renamed).map_err(|e| e.to_string())?;
    c.rt.reopen_container_log(ReopenContainerLogRequest {
        container_id: id.clone(),
    })
    .await
    .ctx("ReopenContainerLog")?;
    check!(
        log.exists(),
        "no new log file right after ReopenContainerLog"
    );
    eventually(60, Duration::from_secs(1), || some(log.clone())).await?;
    let old = log_entries(&renamed)?.len();
    for _ in 0..5 {
        tokio::time::sleep(Duration::from_secs(1)).await;
        let now = log_entries(&renamed)?.len();
        check!(
            now == old,
            "the old log file still grows: {old} → {now} entries"
        );
    }
    c.cleanup_pod(&pod).await
}

/// critest's createPrivilegedPodSandbox.
async fn privileged_pod(
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

async fn container_oom(mut c: Cri) -> R {
    let (pod, cfg, _gone) = privileged_pod(&mut c, true).await?;
    let mut ctr = Cri::container(
        "OOM-test-",
        &busybox(),
        &["sh", "-c", "dd if=/dev/zero of=/dev/null bs=20M"],
    );
    ctr.linux = Some(LinuxContainerConfig {
        resources: Some(LinuxContainerResources {
            memory_limit_in_bytes: 15 << 20,
            memory_swap_limit_in_bytes: 15 << 20,
            ..Default::default()
        }),
        ..Default::default()
    });
    let id = c.create_container(&pod, &cfg, ctr).await?;
    c.status_verbose(&id, true).await?;
    c.start(&id).await?;
    let s = c.wait_state(&id, ContainerState::ContainerExited).await?;
    check!(s.reason == "OOMKilled", "reason {:?}: {s:?}", s.reason);
    check!(s.exit_code == 137, "exit code {}", s.exit_code);
    c.cleanup_pod(&pod).await
}

fn mount(src: &Path, dst: &Path, flags: &[&str]) -> R {
    let out = std::process::Command::new("mount")
        .args(flags)
        .arg(src)
        .arg(dst)
        .output()
        .unwrap();
    check!(
        out.status.success(),
        "mount {flags:?} {} {}: {}",
        src.display(),
        dst.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(())
}

/// Unmounts (lazily) when dropped, also when the spec fails.
struct Unmount(Vec<PathBuf>);

impl Drop for Unmount {
    fn drop(&mut self) {
        for p in &self.0 {
            let _ = std::process::Command::new("umount")
                .arg("-l")
                .arg(p)
                .status();
        }
    }
}

async fn mount_propagation(mut c: Cri, p: MountPropagation) -> R {
    let (pod, cfg, _gone) = privileged_pod(&mut c, true).await?;
    let host = c.temp_dir(&format!("test{pod}"));
    let src = host.join("mnt");
    let point = src.join("propagationMnt");
    let flag_dir = host.join("propagationSrcDir");
    std::fs::create_dir_all(&point).unwrap();
    std::fs::create_dir_all(&flag_dir).unwrap();
    std::fs::write(flag_dir.join("flagFile"), "").unwrap();
    let mut umount = Unmount(vec![src.clone()]);
    mount(&src, &src, &["--rbind"])?;
    let kind = if p == MountPropagation::PropagationPrivate {
        "--make-rprivate"
    } else {
        "--make-rshared"
    };
    let out = std::process::Command::new("mount")
        .arg(kind)
        .arg(&src)
        .output()
        .unwrap();
    check!(out.status.success(), "mount {kind}");
    let s = src.display().to_string();
    let mut ctr = Cri::container("mount-propagation-test-", &busybox(), &["sh", "-c", "top"]);
    ctr.linux = Some(LinuxContainerConfig {
        security_context: Some(LinuxContainerSecurityContext {
            privileged: true,
            ..Default::default()
        }),
        ..Default::default()
    });
    ctr.mounts = vec![Mount {
        host_path: s.clone(),
        container_path: s.clone(),
        propagation: p as i32,
        ..Default::default()
    }];
    let id = c.create_container(&pod, &cfg, ctr).await?;
    let st = c.status_verbose(&id, true).await?;
    check!(st.mounts.len() == 1, "status mounts: {:?}", st.mounts);
    let m = &st.mounts[0];
    check!(
        m.container_path == s
            && m.host_path == s
            && !m.readonly
            && !m.selinux_relabel
            && m.propagation == p as i32,
        "status mount {m:?}"
    );
    c.start_running(&id).await?;
    // Host to container.
    umount.0.insert(0, point.clone());
    mount(&flag_dir, &point, &["--rbind"])?;
    let out = c
        .exec_ok(&id, &["ls", "-A", &point.display().to_string()])
        .await?;
    let want_in = p != MountPropagation::PropagationPrivate;
    check!(
        out.trim().is_empty() != want_in,
        "host mount seen in the container: {:?} (want {want_in})",
        out
    );
    // Container to host.
    let inner = format!("{s}/containerMntPoint");
    c.exec_ok(&id, &["sh", "-c", &format!("mkdir -p {inner}")])
        .await?;
    c.exec_ok(&id, &["sh", "-c", &format!("mount --bind /etc {inner}")])
        .await?;
    let seen = std::fs::read_dir(&inner)
        .map_err(|e| format!("read {inner}: {e}"))?
        .count();
    let want_out = p == MountPropagation::PropagationBidirectional;
    umount.0.insert(0, PathBuf::from(&inner));
    check!(
        (seen > 0) == want_out,
        "container mount seen on the host: {seen} entries (want {want_out})"
    );
    c.cleanup_pod(&pod).await?;
    drop(umount);
    Ok(())
}

/// critest's createHostPathForRROMount: a host directory with a tmpfs mounted in it.
fn rro_host_path(c: &Cri, pod: &str) -> Result<(PathBuf, Unmount), String> {
    let host = c.temp_dir(&format!("test{pod}"));
    let t = host.join("tmpfs");
    std::fs::create_dir_all(&t).unwrap();
    let out = std::process::Command::new("mount")
        .args(["-t", "tmpfs", "none"])
        .arg(&t)
        .output()
        .unwrap();
    check!(out.status.success(), "mount tmpfs");
    Ok((host, Unmount(vec![t])))
}

async fn readonly_mount(mut c: Cri, rro: bool) -> R {
    let features =
        c.rt.status(StatusRequest { verbose: false })
            .await
            .ctx("Status")?
            .runtime_handlers
            .into_iter()
            .find(|h| h.name.is_empty())
            .and_then(|h| h.features);
    check!(
        !rro || features.is_some_and(|f| f.recursive_read_only_mounts),
        "the default handler does not advertise recursive_read_only_mounts"
    );
    let (pod, cfg, _gone) = privileged_pod(&mut c, true).await?;
    let (host, _umount) = rro_host_path(&c, &pod)?;
    let mut ctr = Cri::container("test-mount-", &busybox(), &["sh", "-c", "top"]);
    ctr.linux = None;
    ctr.mounts = vec![Mount {
        host_path: host.display().to_string(),
        container_path: "/mnt".into(),
        readonly: true,
        recursive_read_only: rro,
        selinux_relabel: true,
        ..Default::default()
    }];
    let id = c.create_container(&pod, &cfg, ctr).await?;
    check!(
        c.status_verbose(&id, true).await?.mounts.len() == 1,
        "status mounts"
    );
    c.start_running(&id).await?;
    if rro {
        c.exec_ok(
            &id,
            &[
                "sh",
                "-c",
                "touch /mnt/tmpfs/foo 2>&1 | grep -q \"Read-only file system\"",
            ],
        )
        .await?;
    } else {
        c.exec_ok(&id, &["touch", "/mnt/tmpfs/file"]).await?;
    }
    c.cleanup_pod(&pod).await
}

async fn readonly_mount_rejects(mut c: Cri) -> R {
    let (pod, cfg, _gone) = privileged_pod(&mut c, true).await?;
    let (host, _umount) = rro_host_path(&c, &pod)?;
    for (readonly, p) in [
        (true, MountPropagation::PropagationHostToContainer),
        (true, MountPropagation::PropagationBidirectional),
        (false, MountPropagation::PropagationPrivate),
    ] {
        let mut ctr = Cri::container("test-mount-", &busybox(), &["sh", "-c", "top"]);
        ctr.mounts = vec![Mount {
            host_path: host.display().to_string(),
            container_path: "/mnt".into(),
            readonly,
            recursive_read_only: true,
            selinux_relabel: true,
            propagation: p as i32,
            ..Default::default()
        }];
        let r = c.create_container(&pod, &cfg, ctr).await;
        check!(
            r.is_err(),
            "created: readonly {readonly}, {p:?}, recursive_read_only"
        );
    }
    c.cleanup_pod(&pod).await
}

async fn image_volume_unimplemented(mut c: Cri) -> R {
    let (pod, cfg, _gone) = c.default_pod("create-PodSandbox-for-container-").await?;
    let image = busybox();
    let mut ctr = Cri::container("image-volume-", &image, &["sh", "-c", "top"]);
    ctr.mounts = vec![Mount {
        container_path: "/mnt/image-volume".into(),
        readonly: true,
        image: spec(&image),
        ..Default::default()
    }];
    match c.create_container(&pod, &cfg, ctr).await {
        Ok(id) => return Err(format!("created {id} with an image volume")),
        Err(e) => check!(e.contains("Unimplemented"), "{e}"),
    }
    c.cleanup_pod(&pod).await
}

// ---------------------------------------------------------------------------------------------
// Images critest pulls from gcr.io/k8s-staging-cri-tools, made here from the fixture busybox
// the way cri-tools' images/ Dockerfiles make them (a USER, a file of their own), with umoci,
// and pushed to the fixture registry with skopeo.

struct Images {
    /// An OCI layout holding the fixture busybox as `base`, and the variants made from it.
    layout: PathBuf,
    /// `<registry>/<repo prefix>`: where the images are pushed.
    prefix: String,
}

fn run(cmd: &mut std::process::Command) -> Result<String, String> {
    let out = cmd.output().map_err(|e| format!("{cmd:?}: {e}"))?;
    check!(
        out.status.success(),
        "{cmd:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

impl Images {
    /// `dir` is the test's; `repo` names the test (so that tests side by side push apart).
    fn new(dir: &Path, repo: &str) -> Images {
        let layout = dir.join("images-layout");
        let _ = std::fs::remove_dir_all(&layout);
        let fixtures =
            std::env::var("BERTH_FIXTURES").unwrap_or("/var/cache/berth-fixtures".into());
        run(std::process::Command::new("skopeo")
            .args(["copy", "--quiet"])
            .arg(format!("oci:{fixtures}/oci/busybox:latest"))
            .arg(format!("oci:{}:base", layout.display())))
        .unwrap();
        Images {
            layout,
            prefix: format!("{}/critest-{repo}", registry()),
        }
    }

    fn at(&self, tag: &str) -> String {
        format!("{}:{tag}", self.layout.display())
    }

    /// A variant of busybox: `user` as its USER (if any), `cmd` as its Cmd (if any), and
    /// `files` (host path, image path) added in a layer; pushed as `<prefix>/<name>` under
    /// each of `tags`. The digest of its manifest.
    fn make(
        &self,
        name: &str,
        tags: &[&str],
        user: Option<&str>,
        cmd: Option<&str>,
        files: &[(&Path, &str)],
    ) -> Result<String, String> {
        let t = format!("{}-{}", name.replace('/', "-"), tags[0]);
        let mut config = std::process::Command::new("umoci");
        config
            .args([
                "config",
                "--no-history",
                "--image",
                &self.at("base"),
                "--tag",
                &t,
            ])
            .args(["--created", "2023-11-14T22:13:20Z"]);
        if let Some(u) = user {
            config.args(["--config.user", u]);
        }
        if let Some(c) = cmd {
            config.args(["--config.cmd", c]);
        }
        run(&mut config)?;
        if !files.is_empty() {
            // One layer of the files, as root's with their modes, made with GNU tar (umoci
            // 0.4.7's `insert` writes a tar without its end, which berth rightly refuses).
            let stage = self.layout.with_extension(format!("{t}.stage"));
            let _ = std::fs::remove_dir_all(&stage);
            for (src, dst) in files {
                let to = stage.join(dst.trim_start_matches('/'));
                std::fs::create_dir_all(to.parent().unwrap()).unwrap();
                run(std::process::Command::new("cp").arg("-p").arg(src).arg(&to))?;
            }
            let tar = stage.with_extension("tar");
            run(std::process::Command::new("tar")
                .args(["--owner=0", "--group=0", "--numeric-owner", "-C"])
                .arg(&stage)
                .arg("-cf")
                .arg(&tar)
                .arg("."))?;
            run(std::process::Command::new("umoci")
                .args(["raw", "add-layer", "--no-history", "--image", &self.at(&t)])
                .arg(&tar))?;
        }
        let digest_file = self.layout.with_extension(format!("{t}.digest"));
        for tag in tags {
            run(std::process::Command::new("skopeo")
                .args(["copy", "--quiet", "--dest-tls-verify=false", "--digestfile"])
                .arg(&digest_file)
                .arg(format!("oci:{}", self.at(&t)))
                .arg(format!("docker://{}/{name}:{tag}", self.prefix)))?;
        }
        Ok(std::fs::read_to_string(&digest_file)
            .map_err(|e| e.to_string())?
            .trim()
            .to_string())
    }

    fn name(&self, name: &str) -> String {
        format!("{}/{name}", self.prefix)
    }
}

/// A file of `content` in `dir`, its path.
fn file_with(dir: &Path, name: &str, content: &str) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, content).unwrap();
    p
}

/// The nonewprivs image of Kubernetes' e2e tests: a setuid-root program that prints its
/// effective uid, as its Cmd (compiled here, static).
fn nnp_image(images: &Images, dir: &Path) -> Result<String, String> {
    let src = file_with(
        dir,
        "nnp.c",
        "#include <stdio.h>\n#include <unistd.h>\nint main(void) { printf(\"Effective uid: %d\\n\", (int)geteuid()); return 0; }\n",
    );
    let bin = dir.join("nnp");
    run(std::process::Command::new("gcc")
        .args(["-static", "-O2", "-o"])
        .arg(&bin)
        .arg(&src))?;
    run(std::process::Command::new("chmod").arg("4755").arg(&bin))?;
    images.make(
        "nonewprivs",
        &["1.3"],
        None,
        Some("/usr/local/bin/nnp"),
        &[(&bin, "/usr/local/bin/nnp")],
    )?;
    Ok(format!("{}:1.3", images.name("nonewprivs")))
}

// ---------------------------------------------------------------------------------------------
// Security Context

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn critest_security_context() {
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

/// critest's createNamespacePodSandbox.
async fn ns_pod(
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

fn mode(m: NamespaceMode) -> i32 {
    m as i32
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

fn security(sc: LinuxContainerSecurityContext) -> Option<LinuxContainerConfig> {
    Some(LinuxContainerConfig {
        security_context: Some(sc),
        ..Default::default()
    })
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

// ---------------------------------------------------------------------------------------------
// Image Manager, Image Consistency, Image Identifier Consistency

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn critest_images() {
    let (_bridge, d) = critest_daemon("critest-img", 25);
    let c = Cri::new(&d).await;
    let images = Images::new(&d.dir, "img");
    let made = make_test_images(&images, &d.dir);
    let mut suite = Suite::new();
    let im = "Image Manager";
    suite
        .spec(
            &format!("{im} public image with tag should be pulled and removed [Conformance]"),
            Box::pin(image_with_tag(c.clone(), &images)),
        )
        .await;
    suite
        .spec(
            &format!("{im} public image should timeout if requested [Conformance]"),
            Box::pin(image_pull_timeout(c.clone(), &images)),
        )
        .await;
    suite
        .spec(
            &format!("{im} public image without tag should be pulled and removed [Conformance]"),
            Box::pin(image_without_tag(c.clone(), &images)),
        )
        .await;
    suite
        .spec(
            &format!("{im} public image with digest should be pulled and removed [Conformance]"),
            Box::pin(image_with_digest(c.clone(), &images, made.clone())),
        )
        .await;
    suite
        .spec(
            &format!("{im} image status should support all kinds of references [Conformance]"),
            Box::pin(image_all_references(c.clone(), &images)),
        )
        .await;
    suite
        .spec(
            &format!("{im} image status get image fields should not have Uid|Username empty [Conformance]"),
            Box::pin(image_users(c.clone(), &images)),
        )
        .await;
    suite
        .spec(
            &format!("{im} listImage should get exactly 3 image in the result list [Conformance]"),
            Box::pin(image_list_three(c.clone(), &images)),
        )
        .await;
    suite
        .spec(
            &format!("{im} listImage should get exactly 3 repoTags in the result image, and removing image by one tag should remove all tags [Conformance]"),
            Box::pin(image_three_tags(c.clone(), &images)),
        )
        .await;
    suite
        .spec(
            &format!("{im} removing image from one registry should remove all tags from other registries [Conformance]"),
            Box::pin(image_two_registries(c.clone(), &images)),
        )
        .await;
    let ic = "Image Consistency";
    suite
        .spec(
            &format!("{ic} should not list or get image status immediately after removal, should list and get image status immediately after pulling [Conformance]"),
            Box::pin(image_consistency(c.clone(), &images)),
        )
        .await;
    suite
        .spec(
            &format!("{ic} should not fail on simultaneous RemoveImage calls [Conformance]"),
            Box::pin(image_simultaneous_removes(c.clone(), &images)),
        )
        .await;
    let iic = "Image Identifier Consistency";
    suite
        .spec(
            &format!("{iic} should return the same image identifier across all APIs [Conformance]"),
            Box::pin(image_id_consistency(c.clone(), &images, false)),
        )
        .await;
    suite
        .spec(
            &format!("{iic} should return the same image identifier when pulled from different registries [Conformance]"),
            Box::pin(image_id_consistency(c.clone(), &images, true)),
        )
        .await;
    suite.finish();
    assert_eq!(d.leftovers(), Vec::<String>::new());
}

/// cri-tools' test images (images/image-test, images/image-user), each a busybox with a file of
/// its own; the digest of test-image-digest.
fn make_test_images(images: &Images, dir: &Path) -> Result<String, String> {
    let files = dir.join("image-files");
    std::fs::create_dir_all(&files).unwrap();
    let mark = |name: &str| file_with(&files, name, name);
    let one = |repo: &str, tags: &[&str], user: Option<&str>, file: &str| {
        let f = mark(file);
        images.make(repo, tags, user, None, &[(&f, &format!("/{file}"))])
    };
    one("test-image-tag", &["test"], None, "test-image-tag-test")?;
    one("test-image-tag", &["all"], None, "test-image-tag-all")?;
    one("test-image-latest", &["latest"], None, "test-image-latest")?;
    let digest = one("test-image-digest", &["pushed"], None, "test-image-digest")?;
    for n in ["1", "2", "3"] {
        one(
            &format!("test-image-{n}"),
            &["latest"],
            None,
            &format!("test-image-{n}"),
        )?;
    }
    one("test-image-tags", &["1", "2", "3"], None, "test-image-tags")?;
    for (repo, user) in [
        ("test-image-user-uid", "1002"),
        ("test-image-user-username", "www-data"),
        ("test-image-user-uid-group", "1003:1004"),
        ("test-image-user-username-group", "www-data:1004"),
    ] {
        one(repo, &["latest"], Some(user), repo)?;
    }
    one("same", &["3.10.1"], None, "same")?;
    Ok(digest)
}

/// critest's testPullPublicImage: removed, pulled, its status checked, removed again and gone.
async fn pull_check_remove(c: &mut Cri, name: &str, check: impl FnOnce(&Image) -> R) -> R {
    c.remove_image(name).await?;
    c.pull(name, Some(PodSandboxConfig::default())).await?;
    let s = c
        .image_status(name)
        .await?
        .ok_or("no image after the pull")?;
    check(&s)?;
    c.remove_image(name).await?;
    check!(
        c.image_status(name).await?.is_none(),
        "{name}: still there after RemoveImage"
    );
    Ok(())
}

async fn image_with_tag(mut c: Cri, images: &Images) -> R {
    let name = format!("{}:test", images.name("test-image-tag"));
    let n = name.clone();
    pull_check_remove(&mut c, &name, move |s| {
        check!(
            s.repo_tags == vec![n.clone()],
            "repo_tags {:?}",
            s.repo_tags
        );
        Ok(())
    })
    .await
}

async fn image_pull_timeout(mut c: Cri, images: &Images) -> R {
    let name = format!("{}:test", images.name("test-image-tag"));
    c.remove_image(&name).await?;
    let mut req = tonic::Request::new(PullImageRequest {
        image: spec(&name),
        ..Default::default()
    });
    req.set_timeout(Duration::from_millis(1));
    // critest's Go client ends the call itself at its deadline (DeadlineExceeded); tonic's
    // leaves that to the server, whose tonic answers Cancelled ("Timeout expired").
    match c.img.pull_image(req).await {
        Ok(_) => return Err("a pull with 1 ms succeeded".into()),
        Err(e) => check!(
            e.code() == tonic::Code::DeadlineExceeded || e.code() == tonic::Code::Cancelled,
            "{:?}: {}",
            e.code(),
            e.message()
        ),
    }
    // And the image is pulled as usual afterwards.
    c.pull(&name, None).await?;
    c.remove_image(&name).await
}

async fn image_without_tag(mut c: Cri, images: &Images) -> R {
    let name = images.name("test-image-latest");
    c.remove_image(&name).await?;
    c.pull(&format!("{name}:latest"), None).await?;
    let s = c
        .image_status(&name)
        .await?
        .ok_or("no status by the untagged name")?;
    check!(
        s.repo_tags == vec![format!("{name}:latest")],
        "repo_tags {:?}",
        s.repo_tags
    );
    c.remove_image(&name).await?;
    check!(c.image_status(&name).await?.is_none(), "still there");
    Ok(())
}

async fn image_with_digest(mut c: Cri, images: &Images, digest: Result<String, String>) -> R {
    let name = format!("{}@{}", images.name("test-image-digest"), digest?);
    let n = name.clone();
    pull_check_remove(&mut c, &name, move |s| {
        check!(s.repo_tags.is_empty(), "repo_tags {:?}", s.repo_tags);
        check!(
            s.repo_digests == vec![n.clone()],
            "repo_digests {:?}",
            s.repo_digests
        );
        Ok(())
    })
    .await
}

async fn image_all_references(mut c: Cri, images: &Images) -> R {
    let name = format!("{}:all", images.name("test-image-tag"));
    c.remove_image(&name).await?;
    c.pull(&name, None).await?;
    let s = c.image_status(&name).await?.ok_or("no status")?;
    let mut refs = vec![s.id.clone()];
    refs.extend(s.repo_tags.iter().cloned());
    refs.extend(s.repo_digests.iter().cloned());
    for r in refs {
        let other = c.image_status(&r).await?;
        check!(
            other.as_ref() == Some(&s),
            "ImageStatus({r}) = {other:?}, not {s:?}"
        );
    }
    c.remove_image(&name).await?;
    check!(c.image_status(&name).await?.is_none(), "still there");
    Ok(())
}

async fn image_users(mut c: Cri, images: &Images) -> R {
    for (repo, uid, username) in [
        ("test-image-user-uid", 1002, ""),
        ("test-image-user-username", 0, "www-data"),
        ("test-image-user-uid-group", 1003, ""),
        ("test-image-user-username-group", 0, "www-data"),
    ] {
        let name = images.name(repo);
        c.pull(&format!("{name}:latest"), None).await?;
        let s = c.image_status(&name).await?.unwrap_or_default();
        let got = s.uid.map(|u| u.value).unwrap_or(0);
        check!(
            got == uid && s.username == username,
            "{repo}: uid {:?} username {:?}",
            s.uid,
            s.username
        );
        c.remove_image(&name).await?;
    }
    Ok(())
}

async fn list_images(c: &mut Cri) -> Result<Vec<Image>, String> {
    Ok(c.img
        .list_images(ListImagesRequest { filter: None })
        .await
        .ctx("ListImages")?
        .images)
}

async fn image_list_three(mut c: Cri, images: &Images) -> R {
    let names: Vec<String> = ["1", "2", "3"]
        .iter()
        .map(|n| format!("{}:latest", images.name(&format!("test-image-{n}"))))
        .collect();
    for n in &names {
        c.remove_image(n).await?;
    }
    let mut ids = Vec::new();
    for n in &names {
        ids.push(c.pull(n, None).await?);
    }
    let listed = list_images(&mut c).await?;
    for (id, n) in ids.iter().zip(&names) {
        let img = listed
            .iter()
            .find(|i| &i.id == id)
            .ok_or(format!("no image {id} (the pull's image_ref) listed"))?;
        check!(
            img.repo_tags == vec![n.clone()],
            "{n}: repo_tags {:?}",
            img.repo_tags
        );
    }
    for n in &names {
        c.remove_image(n).await?;
    }
    Ok(())
}

async fn image_three_tags(mut c: Cri, images: &Images) -> R {
    let names: Vec<String> = ["1", "2", "3"]
        .iter()
        .map(|n| format!("{}:{n}", images.name("test-image-tags")))
        .collect();
    for n in &names {
        c.remove_image(n).await?;
    }
    let mut ids = Vec::new();
    for n in &names {
        ids.push(c.pull(n, None).await?);
    }
    ids.sort();
    ids.dedup();
    check!(ids.len() == 1, "three tags of one image gave ids {ids:?}");
    let listed = list_images(&mut c).await?;
    let img = listed
        .iter()
        .find(|i| i.id == ids[0])
        .ok_or("the image is not listed")?;
    let mut tags = img.repo_tags.clone();
    tags.sort();
    check!(tags == names, "repo_tags {tags:?}");
    // removing image by one tag should remove all tags
    c.remove_image(&names[0]).await?;
    for r in names.iter().chain([&ids[0]]) {
        check!(c.image_status(r).await?.is_none(), "{r}: still there");
    }
    Ok(())
}

/// The same image under two registry names: 127.0.0.1:5000 and localhost:5000 (critest uses
/// registry.k8s.io and k8s.gcr.io).
fn two_registries(images: &Images) -> [String; 2] {
    let a = format!("{}:3.10.1", images.name("same"));
    let b = a.replacen("127.0.0.1:", "localhost:", 1);
    [a, b]
}

async fn image_two_registries(mut c: Cri, images: &Images) -> R {
    let [a, b] = two_registries(images);
    check!(a != b, "the registry is not 127.0.0.1: {a}");
    for n in [&a, &b] {
        c.remove_image(n).await?;
    }
    for n in [&a, &b] {
        c.pull(n, None).await?;
    }
    let listed = list_images(&mut c).await?;
    let img = listed
        .iter()
        .find(|i| i.repo_tags.contains(&a))
        .ok_or("not listed")?;
    check!(
        img.repo_tags.len() == 2 && img.repo_tags.contains(&b),
        "repo_tags {:?}",
        img.repo_tags
    );
    let id = img.id.clone();
    c.remove_image(&a).await?;
    for r in [&a, &b, &id] {
        check!(c.image_status(r).await?.is_none(), "{r}: still there");
    }
    Ok(())
}

async fn image_consistency(mut c: Cri, images: &Images) -> R {
    let name = format!("{}:test", images.name("test-image-tag"));
    c.remove_image(&name).await?;
    c.pull(&name, None).await?;
    c.remove_image(&name).await?;
    let listed = list_images(&mut c).await?;
    check!(
        !listed.iter().any(|i| i.repo_tags.contains(&name)),
        "listed right after removal"
    );
    check!(
        c.image_status(&name).await?.is_none(),
        "status right after removal"
    );
    c.pull(&name, None).await?;
    let listed = list_images(&mut c).await?;
    check!(
        listed.iter().any(|i| i.repo_tags.contains(&name)),
        "not listed right after the pull"
    );
    check!(
        c.image_status(&name).await?.is_some(),
        "no status right after the pull"
    );
    c.remove_image(&name).await
}

async fn image_simultaneous_removes(mut c: Cri, images: &Images) -> R {
    let name = format!("{}:test", images.name("test-image-tag"));
    c.remove_image(&name).await?;
    c.pull(&name, None).await?;
    let id = c.image_status(&name).await?.ok_or("no status")?.id;
    let mut tasks = Vec::new();
    for _ in 0..5 {
        let (mut c, id) = (c.clone(), id.clone());
        tasks.push(tokio::spawn(async move {
            c.img
                .remove_image(RemoveImageRequest { image: spec(&id) })
                .await
                .ctx("RemoveImage")?;
            check!(
                c.image_status(&id).await?.is_none(),
                "status after RemoveImage"
            );
            Ok::<_, String>(())
        }));
    }
    for t in tasks {
        t.await.unwrap()?;
    }
    check!(c.image_status(&id).await?.is_none(), "still there");
    Ok(())
}

async fn image_id_consistency(mut c: Cri, images: &Images, two: bool) -> R {
    let (name, refs) = if two {
        let [a, b] = two_registries(images);
        let r1 = c.pull(&a, None).await?;
        let r2 = c.pull(&b, None).await?;
        check!(r1 == r2, "image refs {r1} and {r2} from two registries");
        for n in [&a, &b] {
            let id = c.image_status(n).await?.ok_or("no status")?.id;
            check!(id == r1, "{n}: id {id}, image ref {r1}");
        }
        (b, r1)
    } else {
        let name = format!("{}:test", images.name("test-image-tag"));
        let r = c.pull(&name, None).await?;
        let id = c.image_status(&name).await?.ok_or("no status")?.id;
        check!(id == r, "Image.id {id} != image ref {r}");
        (name, r)
    };
    let (pod, cfg, _gone) = c.default_pod("create-PodSandbox-for-container-").await?;
    let ctr = ContainerConfig {
        metadata: Some(ContainerMetadata {
            name: format!("id-consistency-{}", uuid()),
            attempt: 2,
        }),
        image: Some(ImageSpec {
            image: refs.clone(),
            user_specified_image: name.clone(),
            ..Default::default()
        }),
        ..Default::default()
    };
    let id = c.create_container(&pod, &cfg, ctr).await?;
    c.start(&id).await?;
    let s = c.status(&id).await?;
    check!(
        s.image_id == refs,
        "ContainerStatus.image_id {} != {refs}",
        s.image_id
    );
    let listed = c
        .list_containers(ContainerFilter {
            id: id.clone(),
            ..Default::default()
        })
        .await?;
    check!(listed.len() == 1, "{} listed", listed.len());
    check!(
        listed[0].image_id == refs,
        "Container.image_id {} != {refs}",
        listed[0].image_id
    );
    c.remove(&id).await?;
    c.cleanup_pod(&pod).await?;
    c.remove_image(&name).await
}

// ---------------------------------------------------------------------------------------------
// Streaming, with the SPDY client (critest's default; its WebSocket flags are off by default)

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn critest_streaming() {
    let (_bridge, d) = critest_daemon("critest-stream", 24);
    let c = Cri::new(&d).await;
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/streaming-client");
    let spdy = tokio::task::spawn_blocking(move || build_spdy_client(&src))
        .await
        .unwrap();
    let mut suite = Suite::new();
    let s = "Streaming runtime should support streaming interfaces";
    suite
        .spec(
            &format!(
                "{s} runtime should support exec with tty=false and stdin=false [Conformance]"
            ),
            Box::pin(stream_exec(c.clone(), spdy.clone(), false)),
        )
        .await;
    suite
        .spec(
            &format!("{s} runtime should support exec with tty=true and stdin=true [Conformance]"),
            Box::pin(stream_exec(c.clone(), spdy.clone(), true)),
        )
        .await;
    suite
        .spec(
            &format!("{s} runtime should support attach [Conformance]"),
            Box::pin(stream_attach(c.clone(), spdy.clone())),
        )
        .await;
    suite
        .spec(
            &format!("{s} runtime should support portforward [Conformance]"),
            Box::pin(stream_port_forward(
                c.clone(),
                spdy.clone(),
                false,
                d.dir.clone(),
            )),
        )
        .await;
    suite
        .spec(
            &format!("{s} runtime should support portforward in host network"),
            Box::pin(stream_port_forward(
                c.clone(),
                spdy.clone(),
                true,
                d.dir.clone(),
            )),
        )
        .await;
    suite.finish();
    assert_eq!(d.leftovers(), Vec::<String>::new());
}

/// critest's parseURL: the URL must name a host.
fn check_url(url: &str) -> R {
    let rest = url
        .strip_prefix("http://")
        .or_else(|| url.strip_prefix("https://"))
        .ok_or(format!("URL {url:?}: no http(s) scheme"))?;
    check!(
        !rest.starts_with('/') && !rest.is_empty(),
        "URL {url:?}: no host"
    );
    Ok(())
}

async fn stream_exec(mut c: Cri, spdy: PathBuf, tty: bool) -> R {
    let (pod, cfg, _gone) = c.default_pod("create-PodSandbox-for-container-").await?;
    let id = c
        .create_container(
            &pod,
            &cfg,
            Cri::default_container("container-for-exec-test"),
        )
        .await?;
    c.start(&id).await?;
    let url =
        c.rt.exec(ExecRequest {
            container_id: id.clone(),
            cmd: vec!["echo".into(), "-n".into(), "hello".into()],
            tty,
            stdin: tty,
            stdout: true,
            stderr: !tty,
        })
        .await
        .ctx("Exec")?
        .url;
    check_url(&url)?;
    let done = tokio::task::spawn_blocking(move || -> Result<Done, String> {
        let mut args = vec!["exec".to_string()];
        if tty {
            args.extend(["-tty".into(), "-stdin".into(), "-stderr=false".into()]);
        }
        args.push(url);
        let mut cmd = std::process::Command::new(&spdy);
        cmd.args(&args);
        let mut r = Running::start(cmd);
        // critest keeps stdin open while the command runs: the session ends when the process
        // does, not when stdin does.
        let deadline = std::time::Instant::now() + Duration::from_secs(20);
        while r.child.try_wait().unwrap().is_none() {
            if std::time::Instant::now() > deadline {
                return Err(format!(
                    "the exec session did not end with its process (stdin open): stdout {:?}",
                    Running::text(&r.out)
                ));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        Ok(r.finish())
    })
    .await
    .unwrap()?;
    check!(done.code == 0, "exec: {done:?}");
    if tty {
        check!(done.stdout.contains("hello"), "stdout {:?}", done.stdout);
    } else {
        check!(done.stdout == "hello", "stdout {:?}", done.stdout);
    }
    check!(done.stderr.is_empty(), "stderr {:?}", done.stderr);
    c.cleanup_pod(&pod).await
}

async fn stream_attach(mut c: Cri, spdy: PathBuf) -> R {
    let (pod, cfg, _gone) = c.default_pod("create-PodSandbox-for-container-").await?;
    let mut ctr = Cri::container("container-for-attach-test", &busybox(), &["/bin/sh"]);
    ctr.stdin = true;
    ctr.stdin_once = true;
    let id = c.create_container(&pod, &cfg, ctr).await?;
    c.start(&id).await?;
    let url =
        c.rt.attach(AttachRequest {
            container_id: id.clone(),
            stdin: true,
            tty: false,
            stdout: true,
            stderr: true,
        })
        .await
        .ctx("Attach")?
        .url;
    check_url(&url)?;
    let done = tokio::task::spawn_blocking(move || -> Result<Done, String> {
        let mut cmd = std::process::Command::new(&spdy);
        cmd.args(["attach", "-stdin", &url]);
        let mut r = Running::start(cmd);
        // No output without input (critest watches for 10 s; 2 here).
        std::thread::sleep(Duration::from_secs(2));
        let before = Running::text(&r.out);
        check!(before.is_empty(), "output before any input: {before:?}");
        r.write(b"echo -n hello\n");
        r.wait_for(false, "hello");
        std::thread::sleep(Duration::from_secs(3));
        let after = Running::text(&r.out);
        check!(after == "hello", "stdout {after:?}, want exactly \"hello\"");
        // Closing stdin closes the container's (stdin_once): sh ends, and so does the attach.
        Ok(r.finish())
    })
    .await
    .unwrap()?;
    check!(done.code == 0, "attach: {done:?}");
    check!(done.stderr.is_empty(), "stderr {:?}", done.stderr);
    c.cleanup_pod(&pod).await
}

async fn stream_port_forward(mut c: Cri, spdy: PathBuf, host_net: bool, dir: PathBuf) -> R {
    let mut cfg = Cri::pod_config("create-PodSandbox-with-port-mapping");
    // critest's host-network nginx listens on 12003; here on a free port, by a site file.
    let port = if host_net { free_port() } else { 80 };
    cfg.port_mappings = vec![PortMapping {
        container_port: port as i32,
        ..Default::default()
    }];
    if host_net {
        cfg.linux.as_mut().unwrap().security_context = Some(LinuxSandboxSecurityContext {
            namespace_options: Some(NamespaceOption {
                network: mode(NamespaceMode::Node),
                ..Default::default()
            }),
            ..Default::default()
        });
    }
    let (pod, _gone) = c.run_pod(&cfg).await?;
    let mut web = Cri::container("container-for-portforward-test", &nginx(), &[]);
    web.command.clear();
    if host_net {
        let site = file_with(
            &dir,
            &format!("site-{port}"),
            &format!("server {{ listen 127.0.0.1:{port} default_server; root /var/www/html; index index.html index.nginx-debian.html; }}\n"),
        );
        web.mounts = vec![Mount {
            host_path: site.display().to_string(),
            container_path: "/etc/nginx/sites-available/default".into(),
            readonly: true,
            ..Default::default()
        }];
    }
    let id = c.create_container(&pod, &cfg, web).await?;
    c.start(&id).await?;
    if host_net {
        check_main_page(format!("http://127.0.0.1:{port}")).await?;
    } else {
        let ip = c.pod_status(&pod).await?.network.ok_or("no network")?.ip;
        check_main_page(format!("http://{ip}:80")).await?;
    }
    let url =
        c.rt.port_forward(PortForwardRequest {
            pod_sandbox_id: pod.clone(),
            port: vec![],
        })
        .await
        .ctx("PortForward")?
        .url;
    check_url(&url)?;
    let done = tokio::task::spawn_blocking(move || {
        let mut cmd = std::process::Command::new(&spdy);
        cmd.args([
            "portforward",
            "-port",
            &port.to_string(),
            "-send",
            "GET / HTTP/1.0\r\n\r\n",
            &url,
        ]);
        Running::start(cmd).finish()
    })
    .await
    .unwrap();
    check!(
        done.code == 0 && done.stdout.starts_with("HTTP/1.1 200"),
        "GET / through the forward: {done:?}"
    );
    c.cleanup_pod(&pod).await
}

// ---------------------------------------------------------------------------------------------
// AppArmor

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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn critest_apparmor() {
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
