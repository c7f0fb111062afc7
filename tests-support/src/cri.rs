//! What the CRI tests share: a gRPC channel to berthd's socket, a daemon whose CRI has a CNI
//! config directory of its own, the pods' CNI bridge and its removal, a pod config.

use super::*;
use k8s_cri::v1::*;
use tonic::transport::Channel;

pub async fn channel(d: &Daemon) -> Channel {
    connect(d.sock()).await.unwrap()
}

/// A gRPC channel to the daemon listening on unix socket `path`.
pub async fn connect(path: std::path::PathBuf) -> Result<Channel, tonic::transport::Error> {
    tonic::transport::Endpoint::try_from("http://berthd")
        .unwrap()
        .connect_with_connector(tower::service_fn(move |_: tonic::transport::Uri| {
            let p = path.clone();
            async move {
                Ok::<_, std::io::Error>(hyper_util::rt::TokioIo::new(
                    tokio::net::UnixStream::connect(p).await?,
                ))
            }
        }))
        .await
}

/// Pulls `<registry>/library/<name>:latest` through the CRI; its image ref.
pub async fn pull(d: &Daemon, name: &str) -> String {
    image_service_client::ImageServiceClient::new(channel(d).await)
        .pull_image(PullImageRequest {
            image: spec(&format!("{}/library/{name}:latest", registry())),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .image_ref
}

/// StopPodSandbox then RemovePodSandbox, both expected to succeed.
pub async fn stop_and_remove(
    rt: &mut runtime_service_client::RuntimeServiceClient<Channel>,
    pod: &str,
) {
    rt.stop_pod_sandbox(StopPodSandboxRequest {
        pod_sandbox_id: pod.into(),
    })
    .await
    .unwrap();
    rt.remove_pod_sandbox(RemovePodSandboxRequest {
        pod_sandbox_id: pod.into(),
    })
    .await
    .unwrap();
}

pub fn spec(image: &str) -> Option<ImageSpec> {
    Some(ImageSpec {
        image: image.into(),
        ..Default::default()
    })
}

/// A daemon whose CRI looks for CNI configs in `<dir>/net.d` (empty at first).
pub fn daemon(name: &str, n: u8) -> Daemon {
    let mut d = Daemon::with_containers(name, n);
    let conf = d.dir.join("config.toml");
    let mut text = std::fs::read_to_string(&conf).unwrap();
    text.push_str(&format!(
        "\n[cri]\ncni_conf_dir = \"{}\"\n",
        d.dir.join("net.d").display()
    ));
    std::fs::write(&conf, text).unwrap();
    std::fs::create_dir_all(d.dir.join("net.d")).unwrap();
    d.kill9();
    d.start();
    d
}

/// [`daemon`] with [`write_pod_network`]'s network, and the guard that removes its bridge
/// (bind it first: it is dropped after the daemon).
pub fn networked_daemon(name: &str, n: u8) -> (BridgeGone, Daemon) {
    let bridge = BridgeGone(format!("bk{n}"));
    let d = daemon(name, n);
    write_pod_network(&d, n);
    (bridge, d)
}

/// The cgroups (`/proc/<pid>/cgroup`) of the init of container `id` of daemon `d`.
pub fn cgroup_of(d: &Daemon, id: &str) -> String {
    let pid = d
        .berth(&["inspect", "--format", "{{.State.Pid}}", id])
        .stdout();
    std::fs::read_to_string(format!("/proc/{}/cgroup", pid.trim())).unwrap()
}

/// A CNI bridge conflist for the test's pods: bridge `bk<n>`, 10.213.<n>.0/24, IPAM state in
/// the test's dir. The bridge plugin never deletes its bridge: [`BridgeGone`] does.
pub fn write_pod_network(d: &Daemon, n: u8) {
    let conf = serde_json::json!({
        "cniVersion": "1.0.0",
        "name": format!("berth-test-{n}"),
        "plugins": [
            {
                "type": "bridge", "bridge": format!("bk{n}"), "isGateway": true, "ipMasq": true,
                "ipam": {
                    "type": "host-local",
                    "ranges": [[{ "subnet": format!("10.213.{n}.0/24") }]],
                    "routes": [{ "dst": "0.0.0.0/0" }],
                    "dataDir": d.dir.join("ipam"),
                },
            },
            { "type": "portmap", "capabilities": { "portMappings": true } },
        ],
    });
    std::fs::write(d.dir.join("net.d/10-test.conflist"), conf.to_string()).unwrap();
}

pub struct BridgeGone(pub String);

impl Drop for BridgeGone {
    fn drop(&mut self) {
        let _ = std::process::Command::new("ip")
            .args(["link", "del", &self.0])
            .stderr(std::process::Stdio::null())
            .status();
    }
}

pub fn pod_config(name: &str) -> PodSandboxConfig {
    PodSandboxConfig {
        metadata: Some(PodSandboxMetadata {
            name: name.into(),
            uid: format!("uid-{name}"),
            namespace: "default".into(),
            attempt: 0,
        }),
        hostname: name.into(),
        labels: [("app".to_string(), name.to_string())].into(),
        // As the kubelet asks for a pod without shareProcessNamespace.
        linux: Some(LinuxPodSandboxConfig {
            security_context: Some(LinuxSandboxSecurityContext {
                namespace_options: Some(NamespaceOption {
                    pid: NamespaceMode::Container as i32,
                    ..Default::default()
                }),
                ..Default::default()
            }),
            ..Default::default()
        }),
        dns_config: Some(DnsConfig {
            servers: vec!["10.96.0.10".into()],
            searches: vec!["default.svc.cluster.local".into()],
            options: vec!["ndots:5".into()],
        }),
        ..Default::default()
    }
}

/// A ready pod ([`pod_config`] `name`) of daemon `d`, stopped and removed when the guard drops.
pub async fn run_pod(
    rt: &mut runtime_service_client::RuntimeServiceClient<Channel>,
    d: &Daemon,
    name: &str,
) -> (String, PodGone) {
    let id = rt
        .run_pod_sandbox(RunPodSandboxRequest {
            config: Some(pod_config(name)),
            runtime_handler: String::new(),
        })
        .await
        .unwrap()
        .into_inner()
        .pod_sandbox_id;
    let gone = PodGone {
        sock: d.sock(),
        id: id.clone(),
    };
    (id, gone)
}

/// Stops and removes a pod sandbox (and so its containers) when dropped, also when the test
/// fails; from a thread of its own, as the test's runtime may be unwinding.
pub struct PodGone {
    pub sock: std::path::PathBuf,
    pub id: String,
}

impl Drop for PodGone {
    fn drop(&mut self) {
        remove_pods(&self.sock, Some(&self.id));
    }
}

/// Stops and removes pod sandbox `id` (every pod with None) through the daemon at `sock`, from
/// a thread of its own, as the test's runtime may be unwinding. A daemon that does not answer
/// is left alone.
pub fn remove_pods(sock: &std::path::Path, id: Option<&str>) {
    let (sock, id) = (sock.to_path_buf(), id.map(str::to_string));
    let _ = std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async move {
            let Ok(ch) = connect(sock).await else {
                return;
            };
            let mut rt = runtime_service_client::RuntimeServiceClient::new(ch);
            let ids = match id {
                Some(id) => vec![id],
                None => match rt.list_pod_sandbox(ListPodSandboxRequest::default()).await {
                    Ok(r) => r.into_inner().items.into_iter().map(|p| p.id).collect(),
                    Err(_) => return,
                },
            };
            for id in ids {
                let _ = rt
                    .stop_pod_sandbox(StopPodSandboxRequest {
                        pod_sandbox_id: id.clone(),
                    })
                    .await;
                let _ = rt
                    .remove_pod_sandbox(RemovePodSandboxRequest { pod_sandbox_id: id })
                    .await;
            }
        });
    })
    .join();
}

/// Creates container `name` of `image` in `pod` from `config` (its metadata and image are
/// set here), starts it, and returns its id.
pub async fn run_container(
    rt: &mut k8s_cri::v1::runtime_service_client::RuntimeServiceClient<Channel>,
    pod: &str,
    name: &str,
    image: &str,
    config: ContainerConfig,
) -> String {
    let id = rt
        .create_container(CreateContainerRequest {
            pod_sandbox_id: pod.into(),
            config: Some(ContainerConfig {
                metadata: Some(ContainerMetadata {
                    name: name.into(),
                    attempt: 0,
                }),
                image: spec(image),
                ..config
            }),
            sandbox_config: None,
        })
        .await
        .unwrap()
        .into_inner()
        .container_id;
    rt.start_container(StartContainerRequest {
        container_id: id.clone(),
    })
    .await
    .unwrap();
    id
}

/// Debian's Go packages, for builds in GOPATH mode (offline).
pub const GOPATH: &str = "/usr/share/gocode";

/// Builds the Go program in `src` (`cri/tests/streaming-client`: a client of kubectl's SPDY
/// protocols, on Debian's Go and spdystream) into `target/<profile>/streaming-client/spdy-client`;
/// its path.
pub fn build_spdy_client(src: &std::path::Path) -> std::path::PathBuf {
    use std::path::Path;
    assert!(
        Path::new(GOPATH)
            .join("src/github.com/moby/spdystream/connection.go")
            .exists(),
        "no spdystream in {GOPATH}: apt-get install golang-go golang-github-docker-spdystream-dev"
    );
    // Built by each test process under a name of its own, then renamed into place (an atomic
    // replace).
    let out = bin("berthd").parent().unwrap().join("streaming-client");
    std::fs::create_dir_all(&out).unwrap();
    let tmp = out.join(format!("spdy-client.{}", std::process::id()));
    let built = std::process::Command::new("go")
        .args(["build", "-o"])
        .arg(&tmp)
        .arg(".")
        .current_dir(src)
        .env("GOPATH", GOPATH)
        .env("GO111MODULE", "off")
        .env("GOFLAGS", "")
        .env("GOCACHE", out.join("gocache"))
        .output()
        .unwrap();
    assert!(
        built.status.success(),
        "go build of the SPDY client: {}",
        String::from_utf8_lossy(&built.stderr)
    );
    let spdy = out.join("spdy-client");
    std::fs::rename(&tmp, &spdy).unwrap();
    spdy
}

// A client program of the streaming server (spdy-client, ws_client.py), run with its stdio
// piped.

use std::io::{Read, Write};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// A client that ran.
#[derive(Debug)]
pub struct Done {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

/// A client running, its output collected as it comes.
pub struct Running {
    pub child: Child,
    pub stdin: Option<ChildStdin>,
    pub out: Arc<Mutex<Vec<u8>>>,
    pub err: Arc<Mutex<Vec<u8>>>,
    readers: Vec<std::thread::JoinHandle<()>>,
}

pub const CLIENT_TIMEOUT: Duration = Duration::from_secs(60);

impl Running {
    pub fn start(mut cmd: Command) -> Running {
        let mut child = cmd
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let collect = |mut from: Box<dyn Read + Send>| {
            let buf = Arc::new(Mutex::new(Vec::new()));
            let b = buf.clone();
            let h = std::thread::spawn(move || {
                let mut chunk = [0u8; 4096];
                while let Ok(n) = from.read(&mut chunk) {
                    if n == 0 {
                        break;
                    }
                    b.lock().unwrap().extend_from_slice(&chunk[..n]);
                }
            });
            (buf, h)
        };
        let (out, h1) = collect(Box::new(child.stdout.take().unwrap()));
        let (err, h2) = collect(Box::new(child.stderr.take().unwrap()));
        Running {
            stdin: child.stdin.take(),
            child,
            out,
            err,
            readers: vec![h1, h2],
        }
    }

    pub fn write(&mut self, data: &[u8]) -> &mut Self {
        let stdin = self.stdin.as_mut().unwrap();
        stdin.write_all(data).unwrap();
        stdin.flush().unwrap();
        self
    }

    /// Writes `data`, then closes stdin.
    pub fn feed(mut self, data: &[u8]) -> Self {
        self.write(data);
        self.stdin = None;
        self
    }

    pub fn text(b: &std::sync::Mutex<Vec<u8>>) -> String {
        String::from_utf8_lossy(&b.lock().unwrap()).into_owned()
    }

    /// Waits until stdout (`err`: stderr) contains `want`.
    pub fn wait_for(&mut self, err: bool, want: &str) {
        let deadline = Instant::now() + CLIENT_TIMEOUT;
        let buf = if err { &self.err } else { &self.out };
        while !Self::text(buf).contains(want) {
            assert!(
                Instant::now() < deadline && self.child.try_wait().unwrap().is_none(),
                "waiting for {want:?}: stdout {:?}, stderr {:?}",
                Self::text(&self.out),
                Self::text(&self.err)
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn finish(mut self) -> Done {
        self.stdin = None;
        let deadline = Instant::now() + CLIENT_TIMEOUT;
        let status = loop {
            if let Some(s) = self.child.try_wait().unwrap() {
                break s;
            }
            if Instant::now() > deadline {
                let _ = self.child.kill();
                let _ = self.child.wait();
                panic!(
                    "client still running after {CLIENT_TIMEOUT:?}: stdout {:?}, stderr {:?}",
                    Self::text(&self.out),
                    Self::text(&self.err)
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        };
        for h in self.readers.drain(..) {
            h.join().unwrap();
        }
        Done {
            code: status.code().unwrap_or(-1),
            stdout: Self::text(&self.out),
            stderr: Self::text(&self.err),
        }
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}
