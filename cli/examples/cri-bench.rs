//! A CRI client that starts pods the way the kubelet does and times it: for each run, N pods
//! at once, each RunPodSandbox → PodSandboxStatus (the kubelet reads the pod IP there, for the
//! pod's /etc/hosts) → CreateContainer → StartContainer; the time is from the first
//! RunPodSandbox sent to the last StartContainer answered. Then, untimed, the memory the
//! runtime keeps per running pod, and everything is stopped and removed.
//!
//! ```text
//! cargo build --release -p berth-cli --example cri-bench
//! cri-bench --endpoint /run/containerd/containerd.sock --image 127.0.0.1:5000/library/busybox:latest \
//!     --pods 20 --runs 5 --daemon-pid $(pidof containerd) --match /run/containerd \
//!     --cmd sleep 3600
//! cri-bench --endpoint ... --cleanup        # stop and remove every pod cri-bench made
//! ```
//!
//! Prints one JSON object on stdout: times (ms) per run with median, min and p95 (nearest
//! rank), the per-phase medians, the runtime's CPU time per pod (`--cpu-cgroup`), and the
//! memory per pod. `--probe-http PORT` checks, untimed, that every pod serves HTTP on its IP.
//! `benches/cri-start.sh` runs it against berthd and containerd.
//!
//! Memory: the processes that appeared during the run (not there at its start) and belong to
//! the runtime's pods — in a pod sandbox's cgroup but not in one of its containers' (a pause
//! container), or whose command line contains a `--match` string (the runtime's shims name its
//! private socket or state directory), and their new descendants — summed from
//! `/proc/<pid>/smaps_rollup` (Rss, Pss, and Private_* = USS). The containers' own processes
//! (in the containers' cgroups) are the same whatever the runtime and are reported apart, not
//! counted. With `--daemon-pid`, the daemon's RSS growth from the start of the run to the pods
//! running is reported too.

use clap::Parser;
use k8s_cri::v1::image_service_client::ImageServiceClient;
use k8s_cri::v1::runtime_service_client::RuntimeServiceClient;
use k8s_cri::v1::*;
use serde_json::{json, Value};
use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tonic::transport::Channel;

/// The label on every pod this client makes (`--cleanup` removes what carries it).
const OURS: &str = "io.berth.cri-bench";
const NAMESPACE: &str = "cri-bench";

/// What the kubelet puts in `maskedPaths` and `readonlyPaths` for the default /proc mount
/// (k8s.io/kubernetes/pkg/securitycontext).
const MASKED: &[&str] = &[
    "/proc/asound",
    "/proc/acpi",
    "/proc/kcore",
    "/proc/keys",
    "/proc/latency_stats",
    "/proc/timer_list",
    "/proc/timer_stats",
    "/proc/sched_debug",
    "/proc/scsi",
    "/sys/firmware",
];
const READONLY: &[&str] = &[
    "/proc/bus",
    "/proc/fs",
    "/proc/irq",
    "/proc/sys",
    "/proc/sysrq-trigger",
];

#[derive(Parser, Debug)]
#[command(about = "Times RunPodSandbox..StartContainer over the CRI, N pods at once")]
struct Args {
    /// The runtime's CRI unix socket.
    #[arg(long)]
    endpoint: PathBuf,
    /// The container image (pulled first, untimed).
    #[arg(long, default_value = "127.0.0.1:5000/library/busybox:latest")]
    image: String,
    /// Pods started at once per run.
    #[arg(long, default_value_t = 1)]
    pods: usize,
    /// Timed runs.
    #[arg(long, default_value_t = 10)]
    runs: usize,
    /// Untimed runs first.
    #[arg(long, default_value_t = 1)]
    warmup: usize,
    /// More images to pull first (e.g. the sandbox image the runtime starts per pod).
    #[arg(long)]
    pull: Vec<String>,
    /// The pods' cgroup parent (cgroupfs driver); each pod gets `<parent>/pod<uid>`, as the
    /// kubelet does below /kubepods. Empty: none.
    #[arg(long, default_value = "/berth-bench-cri")]
    cgroup_parent: String,
    /// Where the pods' log directories and kubelet-side files (etc-hosts, termination-log)
    /// go; emptied after each run.
    #[arg(long, default_value = "/tmp/cri-bench")]
    work: PathBuf,
    /// A name for this runtime in the output.
    #[arg(long)]
    label: Option<String>,
    /// The runtime daemon, whose RSS growth per pod is reported.
    #[arg(long)]
    daemon_pid: Option<i32>,
    /// A new process whose command line contains this is the runtime's (repeatable).
    #[arg(long = "match")]
    matches: Vec<String>,
    /// A cgroup the runtime's daemon runs in (with its shims and the programs they run, not
    /// the containers): the CPU time it used from the first RunPodSandbox to the last
    /// StartContainer answered is reported (`cpuacct.usage` of cgroup v1, else `cpu.stat`).
    #[arg(long)]
    cpu_cgroup: Option<PathBuf>,
    /// Wait this long after the last start before measuring memory.
    #[arg(long, default_value_t = 500)]
    settle_ms: u64,
    /// After the starts (untimed): GET / on this port of every pod's IP must answer (a check
    /// that the pods are up and on the network, e.g. 80 for nginx).
    #[arg(long)]
    probe_http: Option<u16>,
    /// Only stop and remove every pod (and its containers) this client made, then exit.
    #[arg(long)]
    cleanup: bool,
    /// The container's command (else the image's entrypoint and cmd). Must come last.
    #[arg(long, num_args = 1.., allow_hyphen_values = true, trailing_var_arg = true)]
    cmd: Vec<String>,
}

type Rt = RuntimeServiceClient<Channel>;
type Res<T> = Result<T, String>;

async fn channel(path: &Path) -> Res<Channel> {
    let p = path.to_path_buf();
    tonic::transport::Endpoint::try_from("http://cri")
        .map_err(|e| e.to_string())?
        .timeout(Duration::from_secs(300))
        .connect_with_connector(tower::service_fn(move |_: tonic::transport::Uri| {
            let p = p.clone();
            async move {
                Ok::<_, std::io::Error>(hyper_util::rt::TokioIo::new(
                    tokio::net::UnixStream::connect(p).await?,
                ))
            }
        }))
        .await
        .map_err(|e| format!("connect to {}: {e}", path.display()))
}

fn rpc_err(what: &str, e: tonic::Status) -> String {
    format!("{what}: {:?}: {}", e.code(), e.message())
}

/// One pod of one run: its names, and the ids the runtime gave.
#[derive(Default, Clone)]
struct Pod {
    name: String,
    uid: String,
    sandbox: String,
    container: String,
    ip: String,
}

/// A run's wall time (ms), the runtime's CPU time if known (ms), each pod's phases.
type Started = (f64, Option<f64>, Vec<Phases>);

/// Per-pod latencies of each call, ms.
#[derive(Default, Clone, Copy)]
struct Phases {
    run_pod_sandbox: f64,
    pod_sandbox_status: f64,
    create_container: f64,
    start_container: f64,
}

struct Bench {
    args: Args,
    rt: Rt,
    image_ref: String,
    hugepages: Vec<String>,
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

impl Bench {
    fn pod_config(&self, p: &Pod) -> PodSandboxConfig {
        let labels: HashMap<String, String> = [
            ("io.kubernetes.pod.name", p.name.as_str()),
            ("io.kubernetes.pod.namespace", NAMESPACE),
            ("io.kubernetes.pod.uid", p.uid.as_str()),
            (OURS, "1"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
        PodSandboxConfig {
            metadata: Some(PodSandboxMetadata {
                name: p.name.clone(),
                uid: p.uid.clone(),
                namespace: NAMESPACE.into(),
                attempt: 0,
            }),
            hostname: p.name.clone(),
            log_directory: self
                .args
                .work
                .join("logs")
                .join(format!("{NAMESPACE}_{}_{}", p.name, p.uid))
                .display()
                .to_string(),
            dns_config: Some(DnsConfig {
                servers: vec!["10.96.0.10".into()],
                searches: vec![
                    format!("{NAMESPACE}.svc.cluster.local"),
                    "svc.cluster.local".into(),
                    "cluster.local".into(),
                ],
                options: vec!["ndots:5".into()],
            }),
            port_mappings: vec![],
            labels,
            annotations: [
                ("kubernetes.io/config.source", "api"),
                (
                    "kubernetes.io/config.seen",
                    "2026-01-01T00:00:00.000000000Z",
                ),
            ]
            .into_iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
            linux: Some(LinuxPodSandboxConfig {
                cgroup_parent: if self.args.cgroup_parent.is_empty() {
                    String::new()
                } else {
                    format!(
                        "{}/pod{}",
                        self.args.cgroup_parent.trim_end_matches('/'),
                        p.uid
                    )
                },
                security_context: Some(LinuxSandboxSecurityContext {
                    namespace_options: Some(NamespaceOption {
                        network: NamespaceMode::Pod as i32,
                        pid: NamespaceMode::Container as i32,
                        ipc: NamespaceMode::Pod as i32,
                        ..Default::default()
                    }),
                    seccomp: Some(SecurityProfile {
                        profile_type: security_profile::ProfileType::Unconfined as i32,
                        localhost_ref: String::new(),
                    }),
                    ..Default::default()
                }),
                ..Default::default()
            }),
            windows: None,
        }
    }

    /// A container as the kubelet asks for a BestEffort pod's container with no securityContext:
    /// the service env, /etc/hosts and /dev/termination-log mounted, cpu shares 2, OOM score
    /// 1000, a zero limit for each huge page size, the default masked and read-only paths.
    fn container_config(&self, p: &Pod, hosts: &Path, termlog: &Path) -> ContainerConfig {
        let env = [
            ("KUBERNETES_SERVICE_HOST", "10.96.0.1"),
            ("KUBERNETES_SERVICE_PORT", "443"),
            ("KUBERNETES_SERVICE_PORT_HTTPS", "443"),
            ("KUBERNETES_PORT", "tcp://10.96.0.1:443"),
            ("KUBERNETES_PORT_443_TCP", "tcp://10.96.0.1:443"),
            ("KUBERNETES_PORT_443_TCP_PROTO", "tcp"),
            ("KUBERNETES_PORT_443_TCP_PORT", "443"),
            ("KUBERNETES_PORT_443_TCP_ADDR", "10.96.0.1"),
        ];
        let kv = |pairs: &[(&str, &str)]| -> HashMap<String, String> {
            pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect()
        };
        ContainerConfig {
            metadata: Some(ContainerMetadata {
                name: "c".into(),
                attempt: 0,
            }),
            image: Some(ImageSpec {
                image: self.image_ref.clone(),
                user_specified_image: self.args.image.clone(),
                ..Default::default()
            }),
            command: self.args.cmd.clone(),
            args: vec![],
            working_dir: String::new(),
            envs: env
                .iter()
                .map(|(k, v)| KeyValue {
                    key: k.to_string(),
                    value: v.to_string(),
                })
                .collect(),
            mounts: vec![
                Mount {
                    container_path: "/etc/hosts".into(),
                    host_path: hosts.display().to_string(),
                    ..Default::default()
                },
                Mount {
                    container_path: "/dev/termination-log".into(),
                    host_path: termlog.display().to_string(),
                    ..Default::default()
                },
            ],
            devices: vec![],
            labels: kv(&[
                ("io.kubernetes.container.name", "c"),
                ("io.kubernetes.pod.name", &p.name),
                ("io.kubernetes.pod.namespace", NAMESPACE),
                ("io.kubernetes.pod.uid", &p.uid),
            ]),
            annotations: kv(&[
                ("io.kubernetes.container.hash", "8a3b5c1e"),
                ("io.kubernetes.container.restartCount", "0"),
                (
                    "io.kubernetes.container.terminationMessagePath",
                    "/dev/termination-log",
                ),
                ("io.kubernetes.container.terminationMessagePolicy", "File"),
                ("io.kubernetes.pod.terminationGracePeriod", "30"),
            ]),
            log_path: "c/0.log".into(),
            stdin: false,
            stdin_once: false,
            tty: false,
            linux: Some(LinuxContainerConfig {
                resources: Some(LinuxContainerResources {
                    cpu_shares: 2,
                    oom_score_adj: 1000,
                    hugepage_limits: self
                        .hugepages
                        .iter()
                        .map(|s| HugepageLimit {
                            page_size: s.clone(),
                            limit: 0,
                        })
                        .collect(),
                    ..Default::default()
                }),
                security_context: Some(LinuxContainerSecurityContext {
                    namespace_options: Some(NamespaceOption {
                        network: NamespaceMode::Pod as i32,
                        pid: NamespaceMode::Container as i32,
                        ipc: NamespaceMode::Pod as i32,
                        ..Default::default()
                    }),
                    masked_paths: MASKED.iter().map(|s| s.to_string()).collect(),
                    readonly_paths: READONLY.iter().map(|s| s.to_string()).collect(),
                    seccomp: Some(SecurityProfile {
                        profile_type: security_profile::ProfileType::Unconfined as i32,
                        localhost_ref: String::new(),
                    }),
                    ..Default::default()
                }),
            }),
            windows: None,
            cdi_devices: vec![],
        }
    }

    /// One pod, as the kubelet's SyncPod makes it. The ids go into `made` as soon as they
    /// exist, so that a failure leaves nothing behind.
    async fn start_pod(
        self: Arc<Self>,
        mut p: Pod,
        made: Arc<Mutex<Vec<Pod>>>,
        slot: usize,
    ) -> Res<Phases> {
        let mut rt = self.rt.clone();
        let mut ph = Phases::default();
        let config = self.pod_config(&p);
        let t = Instant::now();
        p.sandbox = rt
            .run_pod_sandbox(RunPodSandboxRequest {
                config: Some(config.clone()),
                runtime_handler: String::new(),
            })
            .await
            .map_err(|e| rpc_err(&format!("RunPodSandbox {}", p.name), e))?
            .into_inner()
            .pod_sandbox_id;
        ph.run_pod_sandbox = ms(t.elapsed());
        made.lock().unwrap()[slot] = p.clone();

        let t = Instant::now();
        let st = rt
            .pod_sandbox_status(PodSandboxStatusRequest {
                pod_sandbox_id: p.sandbox.clone(),
                verbose: false,
            })
            .await
            .map_err(|e| rpc_err(&format!("PodSandboxStatus {}", p.name), e))?
            .into_inner();
        ph.pod_sandbox_status = ms(t.elapsed());
        let ip = st
            .status
            .and_then(|s| s.network)
            .map(|n| n.ip)
            .unwrap_or_default();
        if ip.is_empty() {
            return Err(format!("pod {} ({}) has no IP", p.name, p.sandbox));
        }
        p.ip = ip.clone();
        // The kubelet's pod directory: its managed /etc/hosts and the termination log.
        let dir = self.args.work.join("pods").join(&p.uid);
        let hosts = dir.join("etc-hosts");
        let termlog = dir.join("containers/c/termination-log");
        std::fs::create_dir_all(termlog.parent().unwrap()).map_err(|e| e.to_string())?;
        std::fs::write(
            &hosts,
            format!(
                "# Kubernetes-managed hosts file.\n127.0.0.1\tlocalhost\n\
                 ::1\tlocalhost ip6-localhost ip6-loopback\nfe00::0\tip6-localnet\n\
                 fe00::0\tip6-mcastprefix\nfe00::1\tip6-allnodes\nfe00::2\tip6-allrouters\n\
                 {ip}\t{}\n",
                p.name
            ),
        )
        .map_err(|e| e.to_string())?;
        std::fs::write(&termlog, b"").map_err(|e| e.to_string())?;

        let t = Instant::now();
        p.container = rt
            .create_container(CreateContainerRequest {
                pod_sandbox_id: p.sandbox.clone(),
                config: Some(self.container_config(&p, &hosts, &termlog)),
                sandbox_config: Some(config),
            })
            .await
            .map_err(|e| rpc_err(&format!("CreateContainer in {}", p.name), e))?
            .into_inner()
            .container_id;
        ph.create_container = ms(t.elapsed());
        made.lock().unwrap()[slot] = p.clone();

        let t = Instant::now();
        rt.start_container(StartContainerRequest {
            container_id: p.container.clone(),
        })
        .await
        .map_err(|e| rpc_err(&format!("StartContainer in {}", p.name), e))?;
        ph.start_container = ms(t.elapsed());
        Ok(ph)
    }

    /// One run: N pods at once; the wall time, the runtime's CPU time (if known), the per-pod
    /// phases, the pods made.
    async fn run(self: &Arc<Self>, run: usize) -> (Res<Started>, Vec<Pod>) {
        let n = self.args.pods;
        let tag = format!("{:x}", std::process::id());
        let pods: Vec<Pod> = (0..n)
            .map(|i| Pod {
                name: format!("bench-{tag}-{run}-{i}"),
                uid: format!("{tag}-{run}-{i}"),
                ..Default::default()
            })
            .collect();
        let made = Arc::new(Mutex::new(vec![Pod::default(); n]));
        let cpu0 = self.args.cpu_cgroup.as_deref().and_then(cpu_ms);
        let t0 = Instant::now();
        let tasks: Vec<_> = pods
            .into_iter()
            .enumerate()
            .map(|(i, p)| tokio::spawn(self.clone().start_pod(p, made.clone(), i)))
            .collect();
        let mut phases = Vec::new();
        let mut err = None;
        for t in tasks {
            match t.await {
                Ok(Ok(ph)) => phases.push(ph),
                Ok(Err(e)) => err = err.or(Some(e)),
                Err(e) => err = err.or(Some(format!("task: {e}"))),
            }
        }
        let wall = ms(t0.elapsed());
        let cpu = self.args.cpu_cgroup.as_deref().and_then(cpu_ms);
        let made = made.lock().unwrap().clone();
        match err {
            Some(e) => (Err(e), made),
            None => (Ok((wall, cpu.zip(cpu0).map(|(a, b)| a - b), phases)), made),
        }
    }

    /// Every container running, or why not.
    async fn check_running(&self, pods: &[Pod]) -> Res<()> {
        let mut rt = self.rt.clone();
        for p in pods {
            let st = rt
                .container_status(ContainerStatusRequest {
                    container_id: p.container.clone(),
                    verbose: false,
                })
                .await
                .map_err(|e| rpc_err("ContainerStatus", e))?
                .into_inner()
                .status
                .ok_or("ContainerStatus: no status")?;
            if st.state != ContainerState::ContainerRunning as i32 {
                return Err(format!(
                    "container of {} is not running: state {} reason {:?} message {:?} exit {}",
                    p.name, st.state, st.reason, st.message, st.exit_code
                ));
            }
        }
        Ok(())
    }

    /// `GET /` on `port` of every pod answers with a status line (retried for 5 s: the
    /// server may still be starting).
    async fn probe(&self, pods: &[Pod], port: u16) -> Res<()> {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        for p in pods {
            let deadline = Instant::now() + Duration::from_secs(5);
            loop {
                let got = async {
                    let mut s = tokio::net::TcpStream::connect((p.ip.as_str(), port)).await?;
                    s.write_all(b"GET / HTTP/1.0\r\n\r\n").await?;
                    let mut buf = vec![];
                    s.read_to_end(&mut buf).await?;
                    Ok::<_, std::io::Error>(String::from_utf8_lossy(&buf).into_owned())
                }
                .await;
                let last = match got {
                    Ok(text) if text.starts_with("HTTP/1.1 200") => break,
                    Ok(text) => text.lines().next().unwrap_or_default().to_string(),
                    Err(e) => e.to_string(),
                };
                if Instant::now() > deadline {
                    return Err(format!("pod {} ({}:{port}): {last}", p.name, p.ip));
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
        Ok(())
    }

    /// Stops and removes the pods (all at once), their containers first.
    async fn teardown(&self, pods: &[Pod]) -> Res<()> {
        let tasks: Vec<_> = pods
            .iter()
            .filter(|p| !p.sandbox.is_empty())
            .cloned()
            .map(|p| {
                let mut rt = self.rt.clone();
                let dir = self.args.work.clone();
                tokio::spawn(async move { remove_pod(&mut rt, &dir, &p).await })
            })
            .collect();
        let mut err = Ok(());
        for t in tasks {
            match t.await {
                Ok(Ok(())) => {}
                Ok(Err(e)) => err = err.and(Err(e)),
                Err(e) => err = err.and(Err(format!("task: {e}"))),
            }
        }
        err
    }
}

async fn remove_pod(rt: &mut Rt, work: &Path, p: &Pod) -> Res<()> {
    let mut containers = vec![];
    if !p.container.is_empty() {
        containers.push(p.container.clone());
    }
    // And whatever else is in the pod (a CreateContainer that answered too late).
    if let Ok(r) = rt
        .list_containers(ListContainersRequest {
            filter: Some(ContainerFilter {
                pod_sandbox_id: p.sandbox.clone(),
                ..Default::default()
            }),
        })
        .await
    {
        for c in r.into_inner().containers {
            if !containers.contains(&c.id) {
                containers.push(c.id);
            }
        }
    }
    for c in &containers {
        rt.stop_container(StopContainerRequest {
            container_id: c.clone(),
            timeout: 0,
        })
        .await
        .map_err(|e| rpc_err("StopContainer", e))?;
        rt.remove_container(RemoveContainerRequest {
            container_id: c.clone(),
        })
        .await
        .map_err(|e| rpc_err("RemoveContainer", e))?;
    }
    rt.stop_pod_sandbox(StopPodSandboxRequest {
        pod_sandbox_id: p.sandbox.clone(),
    })
    .await
    .map_err(|e| rpc_err("StopPodSandbox", e))?;
    rt.remove_pod_sandbox(RemovePodSandboxRequest {
        pod_sandbox_id: p.sandbox.clone(),
    })
    .await
    .map_err(|e| rpc_err("RemovePodSandbox", e))?;
    if !p.uid.is_empty() {
        let _ = std::fs::remove_dir_all(work.join("pods").join(&p.uid));
        let _ = std::fs::remove_dir_all(
            work.join("logs")
                .join(format!("{NAMESPACE}_{}_{}", p.name, p.uid)),
        );
    }
    Ok(())
}

/// A process, as /proc shows it.
struct Proc {
    pid: i32,
    ppid: i32,
    start: u64,
    comm: String,
    cmdline: String,
    cgroup: String,
}

fn processes() -> Vec<Proc> {
    let mut out = vec![];
    let Ok(rd) = std::fs::read_dir("/proc") else {
        return out;
    };
    for e in rd.flatten() {
        let Some(pid) = e.file_name().to_str().and_then(|s| s.parse::<i32>().ok()) else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
            continue;
        };
        // pid (comm) state ppid ... starttime is field 22.
        let Some(close) = stat.rfind(')') else {
            continue;
        };
        let comm = stat[stat.find('(').map_or(0, |i| i + 1)..close].to_string();
        let rest: Vec<&str> = stat[close + 1..].split_whitespace().collect();
        let (Some(ppid), Some(start)) = (
            rest.get(1).and_then(|s| s.parse().ok()),
            rest.get(19).and_then(|s| s.parse().ok()),
        ) else {
            continue;
        };
        let cmdline = std::fs::read(format!("/proc/{pid}/cmdline"))
            .map(|b| String::from_utf8_lossy(&b).replace('\0', " "))
            .unwrap_or_default();
        let cgroup = std::fs::read_to_string(format!("/proc/{pid}/cgroup")).unwrap_or_default();
        out.push(Proc {
            pid,
            ppid,
            start,
            comm,
            cmdline,
            cgroup,
        });
    }
    out
}

/// Rss, Pss and Private (USS) of a process, KiB.
#[derive(Default, Clone, Copy)]
struct Mem {
    rss: u64,
    pss: u64,
    uss: u64,
}

fn mem_of(pid: i32) -> Mem {
    let mut m = Mem::default();
    if let Ok(s) = std::fs::read_to_string(format!("/proc/{pid}/smaps_rollup")) {
        for l in s.lines() {
            let mut it = l.split_whitespace();
            let (Some(k), Some(v)) = (it.next(), it.next().and_then(|v| v.parse::<u64>().ok()))
            else {
                continue;
            };
            match k {
                "Rss:" => m.rss = v,
                "Pss:" => m.pss = v,
                "Private_Clean:" | "Private_Dirty:" => m.uss += v,
                _ => {}
            }
        }
    }
    m
}

/// The memory of the runtime's processes for these running pods (see the module docs).
fn measure(
    baseline: &HashSet<(i32, u64)>,
    pods: &[Pod],
    matches: &[String],
    daemon: Option<i32>,
    daemon_before: Option<Mem>,
) -> Value {
    let all = processes();
    let me = std::process::id() as i32;
    let fresh: Vec<&Proc> = all
        .iter()
        .filter(|p| !baseline.contains(&(p.pid, p.start)) && p.pid != me)
        .filter(|p| Some(p.pid) != daemon)
        .collect();
    let in_cgroup = |p: &Proc, id: &str| !id.is_empty() && p.cgroup.contains(id);
    let is_container = |p: &Proc| pods.iter().any(|x| in_cgroup(p, &x.container));
    let mut counted: HashSet<i32> = fresh
        .iter()
        .filter(|p| !is_container(p))
        .filter(|p| {
            pods.iter().any(|x| in_cgroup(p, &x.sandbox))
                || matches.iter().any(|m| p.cmdline.contains(m.as_str()))
        })
        .map(|p| p.pid)
        .collect();
    loop {
        let more: Vec<i32> = fresh
            .iter()
            .filter(|p| !counted.contains(&p.pid) && counted.contains(&p.ppid))
            .filter(|p| !is_container(p))
            .map(|p| p.pid)
            .collect();
        if more.is_empty() {
            break;
        }
        counted.extend(more);
    }
    let n = pods.len().max(1) as f64;
    let mut by_comm: BTreeMap<String, (u64, Mem)> = BTreeMap::new();
    let mut total = Mem::default();
    let mut containers = Mem::default();
    let mut container_procs = 0;
    for p in &fresh {
        let m = mem_of(p.pid);
        if counted.contains(&p.pid) {
            let e = by_comm.entry(p.comm.clone()).or_default();
            e.0 += 1;
            e.1.rss += m.rss;
            e.1.pss += m.pss;
            e.1.uss += m.uss;
            total.rss += m.rss;
            total.pss += m.pss;
            total.uss += m.uss;
        } else if is_container(p) {
            container_procs += 1;
            containers.rss += m.rss;
            containers.pss += m.pss;
        }
    }
    let mut v = json!({
        "processes_per_pod": counted.len() as f64 / n,
        "rss_kib_per_pod": total.rss as f64 / n,
        "pss_kib_per_pod": total.pss as f64 / n,
        "uss_kib_per_pod": total.uss as f64 / n,
        "by_command": by_comm.iter().map(|(k, (c, m))| (k.clone(), json!({
            "processes": c, "rss_kib": m.rss, "pss_kib": m.pss, "uss_kib": m.uss,
        }))).collect::<serde_json::Map<_, _>>(),
        "not_counted_container_processes_per_pod": container_procs as f64 / n,
        "not_counted_container_rss_kib_per_pod": containers.rss as f64 / n,
    });
    if let (Some(pid), Some(before)) = (daemon, daemon_before) {
        let after = mem_of(pid);
        v["daemon_rss_kib"] = json!(after.rss);
        v["daemon_rss_growth_kib_per_pod"] = json!((after.rss as f64 - before.rss as f64) / n);
        v["daemon_pss_growth_kib_per_pod"] = json!((after.pss as f64 - before.pss as f64) / n);
    }
    v
}

/// CPU time used by the processes of a cgroup so far, ms.
fn cpu_ms(cgroup: &Path) -> Option<f64> {
    if let Ok(s) = std::fs::read_to_string(cgroup.join("cpuacct.usage")) {
        return s.trim().parse::<f64>().ok().map(|ns| ns / 1e6);
    }
    let s = std::fs::read_to_string(cgroup.join("cpu.stat")).ok()?;
    s.lines()
        .find_map(|l| l.strip_prefix("usage_usec "))
        .and_then(|v| v.trim().parse::<f64>().ok())
        .map(|us| us / 1e3)
}

fn median(v: &[f64]) -> f64 {
    let mut s = v.to_vec();
    s.sort_by(|a, b| a.total_cmp(b));
    match s.len() {
        0 => f64::NAN,
        n if n % 2 == 1 => s[n / 2],
        n => (s[n / 2 - 1] + s[n / 2]) / 2.0,
    }
}

/// Nearest rank.
fn p95(v: &[f64]) -> f64 {
    let mut s = v.to_vec();
    s.sort_by(|a, b| a.total_cmp(b));
    if s.is_empty() {
        return f64::NAN;
    }
    let rank = ((0.95 * s.len() as f64).ceil() as usize).clamp(1, s.len());
    s[rank - 1]
}

fn round1(x: f64) -> f64 {
    (x * 10.0).round() / 10.0
}

/// Every pod this client made (by its label), removed.
async fn cleanup(rt: &mut Rt, work: &Path) -> Res<usize> {
    let pods = rt
        .list_pod_sandbox(ListPodSandboxRequest {
            filter: Some(PodSandboxFilter {
                label_selector: [(OURS.to_string(), "1".to_string())].into(),
                ..Default::default()
            }),
        })
        .await
        .map_err(|e| rpc_err("ListPodSandbox", e))?
        .into_inner()
        .items;
    let n = pods.len();
    for p in pods {
        let md = p.metadata.unwrap_or_default();
        remove_pod(
            rt,
            work,
            &Pod {
                name: md.name,
                uid: md.uid,
                sandbox: p.id,
                container: String::new(),
                ip: String::new(),
            },
        )
        .await?;
    }
    Ok(n)
}

async fn pull(ch: &Channel, image: &str) -> Res<String> {
    let mut im = ImageServiceClient::new(ch.clone());
    let r = im
        .pull_image(PullImageRequest {
            image: Some(ImageSpec {
                image: image.into(),
                ..Default::default()
            }),
            ..Default::default()
        })
        .await
        .map_err(|e| rpc_err(&format!("PullImage {image}"), e))?;
    Ok(r.into_inner().image_ref)
}

async fn main_() -> Res<()> {
    let args = Args::parse();
    let ch = channel(&args.endpoint).await?;
    let mut rt = RuntimeServiceClient::new(ch.clone());
    if args.cleanup {
        let n = cleanup(&mut rt, &args.work).await?;
        eprintln!("cri-bench: removed {n} pods");
        return Ok(());
    }
    if args.pods == 0 {
        return Err("--pods must be at least 1".into());
    }
    let v = rt
        .version(VersionRequest::default())
        .await
        .map_err(|e| rpc_err("Version", e))?
        .into_inner();
    for i in &args.pull {
        pull(&ch, i).await?;
    }
    let image_ref = pull(&ch, &args.image).await?;
    // The kubelet sets a zero limit for every huge page size the node has.
    let mut hugepages: Vec<String> = std::fs::read_dir("/sys/kernel/mm/hugepages")
        .map(|rd| {
            rd.flatten()
                .filter_map(|e| {
                    let kb: u64 = e
                        .file_name()
                        .to_str()?
                        .strip_prefix("hugepages-")?
                        .strip_suffix("kB")?
                        .parse()
                        .ok()?;
                    Some(match kb {
                        k if k % (1024 * 1024) == 0 => format!("{}GB", k / (1024 * 1024)),
                        k if k % 1024 == 0 => format!("{}MB", k / 1024),
                        k => format!("{k}KB"),
                    })
                })
                .collect()
        })
        .unwrap_or_default();
    hugepages.sort();
    let bench = Arc::new(Bench {
        args,
        rt: rt.clone(),
        image_ref,
        hugepages,
    });
    let a = &bench.args;
    let mut times = vec![];
    let mut cpu_times: Vec<f64> = vec![];
    let mut phases: Vec<Phases> = vec![];
    let mut memory = vec![];
    for run in 0..a.warmup + a.runs {
        let timed = run >= a.warmup;
        let baseline: HashSet<(i32, u64)> =
            processes().into_iter().map(|p| (p.pid, p.start)).collect();
        let daemon_before = a.daemon_pid.map(mem_of);
        let (res, made) = bench.run(run).await;
        let outcome = async {
            let (wall, cpu, ph) = res?;
            bench.check_running(&made).await?;
            if let Some(port) = a.probe_http {
                bench.probe(&made, port).await?;
            }
            if timed {
                times.push(wall);
                if let Some(c) = cpu {
                    cpu_times.push(c);
                }
                phases.extend(ph);
                tokio::time::sleep(Duration::from_millis(a.settle_ms)).await;
                memory.push(measure(
                    &baseline,
                    &made,
                    &a.matches,
                    a.daemon_pid,
                    daemon_before,
                ));
            }
            Ok::<_, String>(())
        }
        .await;
        let down = bench.teardown(&made).await;
        outcome?;
        down?;
        eprintln!(
            "cri-bench: {} {} pods={} run {}/{}{}",
            a.label.as_deref().unwrap_or(&v.runtime_name),
            a.image,
            a.pods,
            run + 1,
            a.warmup + a.runs,
            times
                .last()
                .filter(|_| timed)
                .map(|t| format!(": {t:.1} ms"))
                .unwrap_or_default()
        );
    }
    let phase = |f: fn(&Phases) -> f64| round1(median(&phases.iter().map(f).collect::<Vec<_>>()));
    let mem_median = |k: &str| {
        let xs: Vec<f64> = memory.iter().filter_map(|m| m[k].as_f64()).collect();
        (!xs.is_empty()).then(|| round1(median(&xs)))
    };
    let out = json!({
        "label": a.label.clone().unwrap_or_else(|| v.runtime_name.clone()),
        "runtime": format!("{} {}", v.runtime_name, v.runtime_version),
        "endpoint": a.endpoint,
        "image": a.image,
        "cmd": a.cmd,
        "pods": a.pods,
        "runs": a.runs,
        "times_ms": times.iter().map(|t| round1(*t)).collect::<Vec<_>>(),
        "median_ms": round1(median(&times)),
        "min_ms": round1(times.iter().copied().fold(f64::INFINITY, f64::min)),
        "p95_ms": round1(p95(&times)),
        "cpu_ms": cpu_times.iter().map(|t| round1(*t)).collect::<Vec<_>>(),
        "cpu_ms_per_pod_median": (!cpu_times.is_empty())
            .then(|| round1(median(&cpu_times) / a.pods as f64)),
        "phase_median_ms": {
            "run_pod_sandbox": phase(|p| p.run_pod_sandbox),
            "pod_sandbox_status": phase(|p| p.pod_sandbox_status),
            "create_container": phase(|p| p.create_container),
            "start_container": phase(|p| p.start_container),
        },
        "memory_median": {
            "processes_per_pod": mem_median("processes_per_pod"),
            "rss_kib_per_pod": mem_median("rss_kib_per_pod"),
            "pss_kib_per_pod": mem_median("pss_kib_per_pod"),
            "uss_kib_per_pod": mem_median("uss_kib_per_pod"),
            "daemon_rss_growth_kib_per_pod": mem_median("daemon_rss_growth_kib_per_pod"),
        },
        "memory": memory,
    });
    println!("{out}");
    Ok(())
}

#[tokio::main]
async fn main() {
    if let Err(e) = main_().await {
        eprintln!("cri-bench: {e}");
        std::process::exit(1);
    }
}
