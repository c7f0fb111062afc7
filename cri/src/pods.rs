//! CRI pod sandboxes: what a pod's containers will share. No pause process: the sandbox is
//! its pinned network namespace (a bind mount, as CRI-O does) plus its record, its
//! `/etc/{hostname,hosts,resolv.conf}` and its CNI attachment. A process per pod would cost a
//! shim and a container start for nothing the kubelet asks of it.
//!
//! What is where: the record in the `pods` table of the metadata database (written at every
//! change); `<state>/pods/<id>/` (hostname, hosts, resolv.conf); the namespace pin and CNI
//! cache under the CRI network's state directory (`<state>/cri-net/`).
//!
//! The IPC and UTS namespaces are pinned the same way (under `<state>/cri-ns/`), the hostname
//! set in the UTS one; the pod's sysctls and cgroup parent are recorded and given to each of
//! its containers.

use crate::containers::{now_nanos, random_hex};
use crate::network::{self, Network, PortMapping};
use berth_imagestore::metadata::Records;
use berth_imagestore::Store;
use k8s_cri::v1;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use tonic::Status;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum PodState {
    /// RunPodSandbox has begun and not finished (a restart finds it and undoes it).
    Creating,
    Ready,
    NotReady,
}

/// One sandbox, as stored.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PodRecord {
    pub id: String,
    pub name: String,
    pub uid: String,
    pub namespace: String,
    pub attempt: u32,
    pub state: PodState,
    pub created_at: i64,
    pub labels: BTreeMap<String, String>,
    pub annotations: BTreeMap<String, String>,
    pub runtime_handler: String,
    pub hostname: String,
    pub log_directory: String,
    pub host_network: bool,
    /// The pinned network namespace ("" with host networking or once stopped).
    pub netns: String,
    pub ip: String,
    pub ports: Vec<PortMapping>,
    /// The NamespaceOption the kubelet asked for (network, pid, ipc), as CRI enum values.
    pub ns_modes: (i32, i32, i32),
    /// The CNI configuration the pod was attached with: its DEL runs with the same one, even
    /// if the file changed or went away since.
    #[serde(default)]
    pub network_config: String,
    /// The pinned IPC and UTS namespaces ("" when the host's are used, or once stopped).
    #[serde(default)]
    pub ipc_ns: String,
    #[serde(default)]
    pub uts_ns: String,
    /// From LinuxPodSandboxConfig: every container of the pod gets them.
    #[serde(default)]
    pub sysctls: BTreeMap<String, String>,
    #[serde(default)]
    pub cgroup_parent: String,
    /// The pod-level resources of a request that gave no cgroup parent: berthd made the pod's
    /// cgroup (`cgroup_parent`, `/berth/pod-<id>`) with these limits, and removes it with the
    /// pod.
    #[serde(default)]
    pub pod_resources: Option<oci_spec::runtime::LinuxResources>,
    /// The init of the PID namespace the pod's containers share (0: none; see
    /// [`crate::pause`]), with its start time.
    #[serde(default)]
    pub pause_pid: i32,
    #[serde(default)]
    pub pause_start: u64,
    /// The CNI DEL has been done (StopPodSandbox): RemovePodSandbox does not run it again.
    #[serde(default)]
    pub network_down: bool,
}

impl PodRecord {
    /// The pod's pause process, if it has one.
    pub fn pause(&self) -> Option<crate::pause::Pause> {
        (self.pause_pid > 0).then_some(crate::pause::Pause {
            pid: self.pause_pid,
            start: self.pause_start,
        })
    }
}

pub struct Pods {
    store: Store,
    state: PathBuf,
    cni_conf_dir: PathBuf,
    plugin_dirs: Vec<PathBuf>,
    pods: Mutex<HashMap<String, PodRecord>>,
    /// One RunPodSandbox/Stop/Remove at a time (they are rare; the kubelet serializes per pod).
    op: tokio::sync::Mutex<()>,
}

fn internal(what: &str, e: impl std::fmt::Display) -> Status {
    Status::internal(format!("{what}: {e}"))
}

impl Pods {
    /// Opens the sandboxes recorded in the store and undoes what an interrupted
    /// RunPodSandbox left.
    pub async fn open(
        store: Store,
        state: &Path,
        cni_conf_dir: PathBuf,
        plugin_dirs: Vec<PathBuf>,
    ) -> anyhow::Result<Pods> {
        let p = Pods {
            store,
            state: state.to_path_buf(),
            cni_conf_dir,
            plugin_dirs,
            pods: Mutex::new(HashMap::new()),
            op: tokio::sync::Mutex::new(()),
        };
        std::fs::create_dir_all(p.state.join("pods"))?;
        for (id, bytes) in p.store.metadata().records(Records::Pods)? {
            match serde_json::from_slice::<PodRecord>(&bytes) {
                Ok(r) => {
                    p.pods
                        .lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .insert(id, r);
                }
                Err(e) => tracing::error!(%id, "unreadable pod record, left alone: {e}"),
            }
        }
        let creating: Vec<PodRecord> = p
            .all()
            .into_iter()
            .filter(|r| r.state == PodState::Creating)
            .collect();
        for r in creating {
            tracing::warn!(id = %r.id, "RunPodSandbox was interrupted: undoing it");
            let _ = p.teardown(&r).await;
            let _ = remove_pod_cgroup(&r);
            p.forget(&r.id);
        }
        Ok(p)
    }

    fn all(&self) -> Vec<PodRecord> {
        self.pods
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .values()
            .cloned()
            .collect()
    }

    fn put(&self, r: &PodRecord) -> Result<(), Status> {
        let bytes = serde_json::to_vec(r).map_err(|e| internal("encode pod record", e))?;
        self.store
            .metadata()
            .put_record(Records::Pods, &r.id, &bytes)
            .map_err(|e| internal("write pod record", e))?;
        self.pods
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(r.id.clone(), r.clone());
        Ok(())
    }

    fn forget(&self, id: &str) {
        let _ = self.store.metadata().remove_record(Records::Pods, id);
        self.pods
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(id);
        let _ = std::fs::remove_dir_all(self.state.join("pods").join(id));
    }

    /// The sandbox `id` names: the whole id or a unique prefix, as crictl allows.
    fn find(&self, id: &str) -> Result<PodRecord, Status> {
        if id.is_empty() {
            return Err(Status::invalid_argument("pod sandbox id is empty"));
        }
        let hits: Vec<PodRecord> = self
            .all()
            .into_iter()
            .filter(|r| r.id.starts_with(id))
            .collect();
        match hits.len() {
            1 => Ok(hits.into_iter().next().expect("one")),
            0 => Err(Status::not_found(format!("pod sandbox {id:?} not found"))),
            _ => Err(Status::invalid_argument(format!(
                "pod sandbox id {id:?} is ambiguous"
            ))),
        }
    }

    /// The CRI network: the first config in the CNI config directory, read at each use so
    /// that a config written after berthd started is taken (as the kubelet expects).
    fn network(&self) -> Result<Network, Status> {
        match Network::first_in_dir(
            &self.cni_conf_dir,
            &self.plugin_dirs,
            &self.state.join("cri-net"),
        ) {
            Ok(Some(n)) => Ok(n),
            Ok(None) => Err(Status::failed_precondition(format!(
                "no CNI network configuration in {}",
                self.cni_conf_dir.display()
            ))),
            Err(e) => Err(Status::failed_precondition(format!("{e:#}"))),
        }
    }

    pub async fn run(&self, req: v1::RunPodSandboxRequest) -> Result<String, Status> {
        let cfg = req
            .config
            .ok_or_else(|| Status::invalid_argument("RunPodSandbox: no config"))?;
        let md = cfg
            .metadata
            .clone()
            .ok_or_else(|| Status::invalid_argument("RunPodSandbox: no metadata"))?;
        if md.name.is_empty() || md.namespace.is_empty() || md.uid.is_empty() {
            return Err(Status::invalid_argument(
                "RunPodSandbox: metadata needs name, namespace and uid",
            ));
        }
        if !crate::cri_service::RUNTIME_HANDLERS.contains(&req.runtime_handler.as_str()) {
            return Err(Status::invalid_argument(format!(
                "no runtime handler {:?}: berthd has the default one (\"\" or \"berth\")",
                req.runtime_handler
            )));
        }
        if cfg.hostname.len() > 64 {
            return Err(Status::invalid_argument(format!(
                "RunPodSandbox: hostname {:?} is longer than 64 bytes",
                cfg.hostname
            )));
        }
        let linux = cfg.linux.as_ref();
        let ns = linux
            .and_then(|l| l.security_context.as_ref())
            .and_then(|s| s.namespace_options.clone())
            .unwrap_or_default();
        let host_network = ns.network == v1::NamespaceMode::Node as i32;
        let mut ports = Vec::new();
        for p in &cfg.port_mappings {
            if p.host_port <= 0 {
                continue;
            }
            let (Ok(host_port), Ok(container_port)) =
                (u16::try_from(p.host_port), u16::try_from(p.container_port))
            else {
                return Err(Status::invalid_argument(format!(
                    "port mapping {}:{} out of range",
                    p.host_port, p.container_port
                )));
            };
            let protocol = match v1::Protocol::try_from(p.protocol) {
                Ok(v1::Protocol::Udp) => "udp",
                Ok(v1::Protocol::Sctp) => "sctp",
                _ => "tcp",
            };
            ports.push(PortMapping {
                host_ip: p.host_ip.clone(),
                host_port,
                container_port,
                protocol: protocol.into(),
            });
        }
        // Held only while the name is checked and reserved (a Creating record): sandboxes
        // are made side by side, their CNI ADDs too.
        let op = self.op.lock().await;
        if let Some(other) = self.all().into_iter().find(|r| {
            r.name == md.name
                && r.namespace == md.namespace
                && r.uid == md.uid
                && r.attempt == md.attempt
        }) {
            return Err(Status::already_exists(format!(
                "pod sandbox {}_{}_{}_{} is reserved for {}",
                md.name, md.namespace, md.uid, md.attempt, other.id
            )));
        }
        let id = random_hex(32);
        // No hostname: the host's, as containerd and CRI-O do (the kubelet always gives one;
        // a pod's name can be longer than a hostname may be).
        let hostname = if cfg.hostname.is_empty() {
            host_hostname()
        } else {
            cfg.hostname.clone()
        };
        let mut r = PodRecord {
            id: id.clone(),
            name: md.name.clone(),
            uid: md.uid.clone(),
            namespace: md.namespace.clone(),
            attempt: md.attempt,
            state: PodState::Creating,
            created_at: now_nanos(),
            labels: cfg.labels.clone().into_iter().collect(),
            annotations: cfg.annotations.clone().into_iter().collect(),
            runtime_handler: req.runtime_handler.clone(),
            hostname: hostname.clone(),
            log_directory: cfg.log_directory.clone(),
            host_network,
            netns: String::new(),
            ip: String::new(),
            ports: ports.clone(),
            ns_modes: (ns.network, ns.pid, ns.ipc),
            network_config: String::new(),
            ipc_ns: String::new(),
            uts_ns: String::new(),
            sysctls: linux
                .map(|l| l.sysctls.clone().into_iter().collect())
                .unwrap_or_default(),
            cgroup_parent: linux.map(|l| l.cgroup_parent.clone()).unwrap_or_default(),
            pod_resources: None,
            pause_pid: 0,
            pause_start: 0,
            network_down: false,
        };
        // Pod-level resources (LinuxPodSandboxConfig.resources and overhead) with no cgroup
        // parent from the kubelet: berthd makes the pod's cgroup, limits it, and the pod's
        // containers go below it (with a parent, the kubelet sized that pod cgroup itself).
        let pod_resources = linux
            .filter(|l| l.cgroup_parent.is_empty())
            .and_then(|l| pod_resources(l.resources.as_ref(), l.overhead.as_ref()));
        if pod_resources.is_some() {
            use berth_runtime::cgroups::{BERTH_PARENT, POD_PREFIX};
            r.cgroup_parent = format!("{BERTH_PARENT}/{POD_PREFIX}{id}");
            r.pod_resources = pod_resources;
        }
        self.put(&r)?;
        drop(op);
        let made = async {
            ensure_pod_cgroup(&r)?;
            let mut ip = None;
            if !host_network {
                let net = self.network()?;
                r.network_config = net.config_json();
                self.put(&r)?;
                let path = net.create_netns(&id).await.map_err(|e| {
                    internal("create the pod's network namespace", format!("{e:#}"))
                })?;
                r.netns = path.display().to_string();
                self.put(&r)?;
                let args = vec![
                    ("IgnoreUnknown".to_string(), "1".to_string()),
                    ("K8S_POD_NAMESPACE".into(), md.namespace.clone()),
                    ("K8S_POD_NAME".into(), md.name.clone()),
                    ("K8S_POD_INFRA_CONTAINER_ID".into(), id.clone()),
                    ("K8S_POD_UID".into(), md.uid.clone()),
                ];
                let att = net
                    .add_with_args(&id, &path, "eth0", &ports, &args)
                    .await
                    .map_err(|e| Status::unavailable(format!("pod network: {e:#}")))?;
                ip = att.ip;
                r.ip = ip.map(|i| i.to_string()).unwrap_or_default();
            }
            // IPC and UTS: pinned like the network namespace, unless the host's are used
            // (hostIPC; the hostname of a hostNetwork pod is the host's).
            let host_ipc = ns.ipc == v1::NamespaceMode::Node as i32;
            if !host_ipc || !host_network {
                let (ipc, uts) = network::pin_ipc_uts(
                    &self.ns_dir(),
                    &id,
                    !host_ipc,
                    (!host_network).then_some(hostname.as_str()),
                )
                .await
                .map_err(|e| internal("create the pod's namespaces", format!("{e:#}")))?;
                r.ipc_ns = ipc.map(|p| p.display().to_string()).unwrap_or_default();
                r.uts_ns = uts.map(|p| p.display().to_string()).unwrap_or_default();
                self.put(&r)?;
            }
            // A PID namespace for the whole pod needs a process: the pause.
            if ns.pid == v1::NamespaceMode::Pod as i32 {
                let p = crate::pause::spawn(&self.state.join("pods").join(&id))
                    .await
                    .map_err(|e| internal("the pod's PID namespace", format!("{e:#}")))?;
                (r.pause_pid, r.pause_start) = (p.pid, p.start);
                self.put(&r)?;
            }
            let dir = self.state.join("pods").join(&id);
            std::fs::create_dir_all(&dir).map_err(|e| internal("create pod directory", e))?;
            network::write_etc_files(&dir, &hostname, ip, &[])
                .map_err(|e| Status::invalid_argument(format!("{e:#}")))?;
            if let Some(dns) = &cfg.dns_config {
                if !dns.servers.is_empty() || !dns.searches.is_empty() || !dns.options.is_empty() {
                    std::fs::write(dir.join("resolv.conf"), resolv_conf(dns))
                        .map_err(|e| internal("write resolv.conf", e))?;
                }
            }
            r.state = PodState::Ready;
            self.put(&r)
        }
        .await;
        if let Err(e) = made {
            let _ = self.teardown(&r).await;
            let _ = remove_pod_cgroup(&r);
            self.forget(&id);
            return Err(e);
        }
        tracing::info!(%id, pod = %format!("{}/{}", md.namespace, md.name), ip = %r.ip, "pod sandbox ready");
        Ok(id)
    }

    /// Where the pod's IPC and UTS namespaces are pinned (a shared-propagation directory).
    fn ns_dir(&self) -> PathBuf {
        self.state.join("cri-ns")
    }

    /// CNI DEL and the namespace pins. Idempotent.
    async fn teardown(&self, r: &PodRecord) -> Result<(), Status> {
        if let Some(p) = r.pause() {
            p.kill();
        }
        for p in [&r.ipc_ns, &r.uts_ns] {
            if !p.is_empty() {
                network::unpin(Path::new(p))
                    .map_err(|e| internal("remove the pod's namespaces", format!("{e:#}")))?;
            }
        }
        if r.host_network {
            return Ok(());
        }
        if r.network_config.is_empty() || r.network_down {
            return Ok(()); // interrupted before anything was attached, or done already
        }
        let net = Network::from_json(
            &r.network_config,
            &self.plugin_dirs,
            &self.state.join("cri-net"),
        )
        .map_err(|e| internal("the pod's network configuration", format!("{e:#}")))?;
        let ns = (!r.netns.is_empty()).then(|| PathBuf::from(&r.netns));
        net.del(&r.id, ns.as_deref())
            .await
            .map_err(|e| Status::unavailable(format!("pod network teardown: {e:#}")))?;
        net.remove_netns(&r.id)
            .map_err(|e| internal("remove the pod's network namespace", format!("{e:#}")))?;
        Ok(())
    }

    /// The sandbox a new container joins: it must be ready. Returns the record and the
    /// directory with its hostname, hosts and resolv.conf.
    pub fn for_container(&self, id: &str) -> Result<(PodRecord, PathBuf), Status> {
        let r = self.find(id)?;
        if r.state != PodState::Ready {
            return Err(Status::failed_precondition(format!(
                "pod sandbox {} is not ready",
                r.id
            )));
        }
        let dir = self.state.join("pods").join(&r.id);
        Ok((r, dir))
    }

    /// The full id of the sandbox `id` names (NotFound if none).
    pub fn resolve(&self, id: &str) -> Result<String, Status> {
        Ok(self.find(id)?.id)
    }

    /// A sandbox RunPodSandbox is still making cannot be stopped or removed yet.
    fn settled(&self, id: &str) -> Result<Option<PodRecord>, Status> {
        match self.find(id) {
            Ok(r) if r.state == PodState::Creating => Err(Status::failed_precondition(format!(
                "pod sandbox {} is being created",
                r.id
            ))),
            Ok(r) => Ok(Some(r)),
            Err(s) if s.code() == tonic::Code::NotFound => Ok(None),
            Err(s) => Err(s),
        }
    }

    pub async fn stop(&self, id: &str) -> Result<(), Status> {
        let _op = self.op.lock().await;
        // Stopping what is gone succeeds, as removing it does (the CRI: "idempotent, and must
        // not return an error if all relevant resources have already been reclaimed").
        let Some(mut r) = self.settled(id)? else {
            return Ok(());
        };
        self.teardown(&r).await?;
        if r.state != PodState::NotReady
            || !r.netns.is_empty()
            || !r.ipc_ns.is_empty()
            || r.pause_pid != 0
            || !r.network_down
        {
            r.state = PodState::NotReady;
            r.netns.clear();
            r.ipc_ns.clear();
            r.uts_ns.clear();
            (r.pause_pid, r.pause_start) = (0, 0);
            r.network_down = true;
            self.put(&r)?;
            tracing::info!(id = %r.id, "pod sandbox stopped");
        }
        Ok(())
    }

    pub async fn remove(&self, id: &str) -> Result<(), Status> {
        let _op = self.op.lock().await;
        // Removing what is gone succeeds (the kubelet retries).
        let Some(r) = self.settled(id)? else {
            return Ok(());
        };
        self.teardown(&r).await?;
        remove_pod_cgroup(&r)?;
        // The kubelet's pod cgroup made in the unified hierarchy of a hybrid host by the
        // pod's containers, which the kubelet does not remove (a systemd slice is systemd's).
        if !r.cgroup_parent.trim_matches('/').is_empty()
            && r.pod_resources.is_none()
            && !r.cgroup_parent.ends_with(".slice")
        {
            if let Err(e) = berth_runtime::cgroups::remove_empty_unified(&r.cgroup_parent) {
                tracing::warn!(id = %r.id, "pod cgroup parent: {e}");
            }
        }
        self.forget(&r.id);
        tracing::info!(id = %r.id, "pod sandbox removed");
        Ok(())
    }

    pub fn status(&self, id: &str) -> Result<v1::PodSandboxStatus, Status> {
        let r = self.find(id)?;
        Ok(v1::PodSandboxStatus {
            id: r.id.clone(),
            metadata: Some(metadata(&r)),
            state: state(&r) as i32,
            created_at: r.created_at,
            network: Some(v1::PodSandboxNetworkStatus {
                ip: if r.state == PodState::Ready {
                    r.ip.clone()
                } else {
                    String::new()
                },
                additional_ips: vec![],
            }),
            linux: Some(v1::LinuxPodSandboxStatus {
                namespaces: Some(v1::Namespace {
                    options: Some(v1::NamespaceOption {
                        network: r.ns_modes.0,
                        pid: r.ns_modes.1,
                        ipc: r.ns_modes.2,
                        ..Default::default()
                    }),
                }),
            }),
            labels: r.labels.clone().into_iter().collect(),
            annotations: r.annotations.clone().into_iter().collect(),
            runtime_handler: r.runtime_handler.clone(),
        })
    }

    pub fn list(&self, filter: Option<v1::PodSandboxFilter>) -> Vec<v1::PodSandbox> {
        let mut out: Vec<PodRecord> = self
            .all()
            .into_iter()
            .filter(|r| r.state != PodState::Creating)
            .filter(|r| match &filter {
                None => true,
                Some(f) => {
                    (f.id.is_empty() || r.id.starts_with(&f.id))
                        && f.state.as_ref().is_none_or(|s| s.state == state(r) as i32)
                        && f.label_selector
                            .iter()
                            .all(|(k, v)| r.labels.get(k) == Some(v))
                }
            })
            .collect();
        out.sort_by_key(|r| r.created_at);
        out.iter()
            .map(|r| v1::PodSandbox {
                id: r.id.clone(),
                metadata: Some(metadata(r)),
                state: state(r) as i32,
                created_at: r.created_at,
                labels: r.labels.clone().into_iter().collect(),
                annotations: r.annotations.clone().into_iter().collect(),
                runtime_handler: r.runtime_handler.clone(),
            })
            .collect()
    }
}

/// The OCI resources of a pod cgroup from the CRI's pod-level resources: the sum of the
/// containers' limits plus the pod overhead, as the kubelet sizes a pod cgroup. None when
/// neither limits memory or CPU.
fn pod_resources(
    res: Option<&v1::LinuxContainerResources>,
    overhead: Option<&v1::LinuxContainerResources>,
) -> Option<oci_spec::runtime::LinuxResources> {
    let d = v1::LinuxContainerResources::default();
    let (res, over) = (res.unwrap_or(&d), overhead.unwrap_or(&d));
    let mut out = serde_json::json!({});
    if res.memory_limit_in_bytes > 0 {
        out["memory"] = serde_json::json!({
            "limit": res.memory_limit_in_bytes.saturating_add(over.memory_limit_in_bytes.max(0))
        });
    }
    let mut cpu = serde_json::json!({});
    if res.cpu_shares > 0 {
        cpu["shares"] = res.cpu_shares.saturating_add(over.cpu_shares.max(0)).into();
    }
    if res.cpu_quota > 0 {
        let period = if res.cpu_period > 0 {
            res.cpu_period
        } else {
            100_000
        };
        // The overhead's quota in the pod's period.
        let over_quota = match (over.cpu_quota, over.cpu_period) {
            (q, p) if q > 0 && p > 0 => {
                i64::try_from(i128::from(q) * i128::from(period) / i128::from(p))
                    .unwrap_or(i64::MAX)
            }
            (q, _) => q.max(0),
        };
        cpu["quota"] = res.cpu_quota.saturating_add(over_quota).into();
        cpu["period"] = period.into();
    }
    if cpu.as_object().is_some_and(|o| !o.is_empty()) {
        out["cpu"] = cpu;
    }
    if out.as_object().is_some_and(|o| o.is_empty()) {
        return None;
    }
    serde_json::from_value(out).ok()
}

/// Makes the pod's own cgroup, if it has one, and limits it; before each of its containers
/// too (deleting a container leaves its pod's cgroup, but a cgroup someone removed is made
/// again rather than left unlimited). Idempotent.
pub fn ensure_pod_cgroup(r: &PodRecord) -> Result<(), Status> {
    let Some(res) = &r.pod_resources else {
        return Ok(());
    };
    let cg = berth_runtime::cgroups::Cgroup::resolve(Some(Path::new(&r.cgroup_parent)), &r.id)
        .map_err(|e| internal("the pod's cgroup", e))?;
    cg.create()
        .map_err(|e| internal("create the pod's cgroup", e))?;
    cg.apply(res)
        .map_err(|e| Status::invalid_argument(format!("pod-level resources: {e}")))?;
    Ok(())
}

/// Removes the pod's cgroup if berthd made it (once its containers are gone). Idempotent.
fn remove_pod_cgroup(r: &PodRecord) -> Result<(), Status> {
    if r.pod_resources.is_none() {
        return Ok(());
    }
    berth_runtime::cgroups::Cgroup::resolve(Some(Path::new(&r.cgroup_parent)), &r.id)
        .and_then(|cg| cg.destroy())
        .map_err(|e| internal("remove the pod's cgroup", e))
}

fn metadata(r: &PodRecord) -> v1::PodSandboxMetadata {
    v1::PodSandboxMetadata {
        name: r.name.clone(),
        uid: r.uid.clone(),
        namespace: r.namespace.clone(),
        attempt: r.attempt,
    }
}

fn state(r: &PodRecord) -> v1::PodSandboxState {
    match r.state {
        // A pod whose PID namespace init died can run no more containers: the kubelet
        // makes a new sandbox when it sees it not ready.
        PodState::Ready if r.pause().is_some_and(|p| !p.alive()) => {
            v1::PodSandboxState::SandboxNotready
        }
        PodState::Ready => v1::PodSandboxState::SandboxReady,
        _ => v1::PodSandboxState::SandboxNotready,
    }
}

/// resolv.conf from the pod's DNSConfig, as the kubelet computed it.
fn resolv_conf(dns: &v1::DnsConfig) -> String {
    let mut s = String::new();
    for n in &dns.servers {
        s.push_str(&format!("nameserver {n}\n"));
    }
    if !dns.searches.is_empty() {
        s.push_str(&format!("search {}\n", dns.searches.join(" ")));
    }
    if !dns.options.is_empty() {
        s.push_str(&format!("options {}\n", dns.options.join(" ")));
    }
    s
}

/// The host's hostname (uname's nodename), for pods that name none.
fn host_hostname() -> String {
    nix::sys::utsname::uname()
        .map(|u| u.nodename().to_string_lossy().into_owned())
        .unwrap_or_else(|_| "localhost".into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pod_resources_are_the_limits_plus_the_overhead() {
        let res = |mem, quota, period, shares| v1::LinuxContainerResources {
            memory_limit_in_bytes: mem,
            cpu_quota: quota,
            cpu_period: period,
            cpu_shares: shares,
            ..Default::default()
        };
        // Nothing limited (a container without limits makes the kubelet send 0): no cgroup.
        assert!(pod_resources(None, None).is_none());
        assert!(pod_resources(Some(&res(0, 0, 0, 0)), Some(&res(1 << 20, 0, 0, 0))).is_none());
        let r = pod_resources(
            Some(&res(1000, 20_000, 0, 0)),
            Some(&res(10, 1_000, 10_000, 0)),
        )
        .unwrap();
        assert_eq!(r.memory().as_ref().unwrap().limit(), Some(1010));
        let cpu = r.cpu().as_ref().unwrap();
        // The default period; the overhead's 1 ms per 10 ms is 10 ms of it.
        assert_eq!((cpu.quota(), cpu.period()), (Some(30_000), Some(100_000)));
        assert_eq!(cpu.shares(), None);
    }
    #[test]
    fn the_shipped_example_conflist_is_valid() {
        let p = Path::new(env!("CARGO_MANIFEST_DIR")).join("../contrib/cni/10-berth.conflist");
        let state = std::env::temp_dir().join(format!("berth-conflist-{}", std::process::id()));
        let net = Network::from_conflist(&p, &[PathBuf::from("/usr/lib/cni")], &state).unwrap();
        assert!(net.config_json().contains("cni-berth0"));
        let _ = std::fs::remove_dir_all(&state);
    }

    #[test]
    fn resolv_conf_from_the_kubelet() {
        let dns = v1::DnsConfig {
            servers: vec!["10.96.0.10".into()],
            searches: vec![
                "default.svc.cluster.local".into(),
                "svc.cluster.local".into(),
            ],
            options: vec!["ndots:5".into()],
        };
        assert_eq!(
            resolv_conf(&dns),
            "nameserver 10.96.0.10\nsearch default.svc.cluster.local svc.cluster.local\noptions ndots:5\n"
        );
    }
}
