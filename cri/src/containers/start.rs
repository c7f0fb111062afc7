//! Starting a container: its network, its shim, the runtime's create and start through it, and
//! the watch on its exit.

use super::*;

impl Manager {
    /// Sets up the network, writes the bundle and creates the container in a new shim.
    /// Leaves the container `starting`; [`Manager::finish_start`] starts it.
    pub(super) async fn spawn(&self, e: &Entry) -> Result<ShimClient<Channel>, Status> {
        let r = e.get();
        if !matches!(r.phase, Phase::Created | Phase::Exited) {
            return Err(Status::failed_precondition(format!(
                "container {} is {}: it must be created or exited to start",
                r.name,
                state_word(&r)
            )));
        }
        let image_cfg = self.store.config(&r.image).await.map_err(|err| {
            Status::failed_precondition(format!(
                "the image {} of container {} is gone: {err}",
                r.image, r.name
            ))
        })?;
        // Ports: taken by another berth container, or by anything else on the host.
        let taken = self.ports_in_use(&r.id);
        let mut ports = Vec::new();
        for p in &r.config.ports {
            let mut p = p.clone();
            if p.host_port == 0 {
                p.host_port = free_port(&p.protocol).map_err(|err| {
                    Status::unavailable(format!(
                        "no free host port for {}: {err}",
                        p.container_port
                    ))
                })? as u32;
            }
            if taken
                .iter()
                .any(|(hp, proto)| *hp == p.host_port && *proto == p.protocol)
            {
                return Err(Status::already_exists(format!(
                    "Bind for {}:{} failed: port is already allocated",
                    if p.host_ip.is_empty() {
                        "0.0.0.0"
                    } else {
                        &p.host_ip
                    },
                    p.host_port
                )));
            }
            network::check_port_free(&p.host_ip, p.host_port as u16, &p.protocol)
                .map_err(|err| Status::already_exists(format!("{err:#}")))?;
            ports.push(p);
        }
        self.update(e, |r| {
            r.phase = Phase::Starting;
            r.error.clear();
            r.reason.clear();
            r.ports = ports.clone();
        })?;
        let res = self.spawn_inner(e, &r, &image_cfg, &ports).await;
        if let Err(err) = &res {
            self.teardown(e, false).await;
            let msg = err.message().to_string();
            let _ = self.update(e, |r| {
                r.phase = if r.started_at == 0 {
                    Phase::Created
                } else {
                    Phase::Exited
                };
                r.error = msg;
                r.ports.clear();
            });
        }
        res
    }

    pub(super) async fn spawn_inner(
        &self,
        e: &Entry,
        r: &Record,
        image_cfg: &berth_imagestore::RuntimeConfig,
        ports: &[PortMapping],
    ) -> Result<ShimClient<Channel>, Status> {
        let id = &r.id;
        let bundle = self.bundle_dir(id);
        let rootfs = bundle.join("rootfs");
        std::fs::create_dir_all(&rootfs)
            .map_err(|err| internal(&format!("create {}", rootfs.display()), err))?;
        self.mount_rootfs(id)?;
        let hostname = if !r.config.hostname.is_empty() {
            r.config.hostname.clone()
        } else {
            id[..12].to_string()
        };
        let mut netns_path = None;
        let mut ip = None;
        match r.config.network.as_str() {
            _ if !r.config.netns_path.is_empty() => {
                // A CRI pod's container: its namespace and /etc files are the pod's.
                for f in ["hostname", "hosts", "resolv.conf"] {
                    let from = Path::new(&r.config.etc_dir).join(f);
                    std::fs::copy(&from, bundle.join(f))
                        .map_err(|err| internal(&format!("copy {}", from.display()), err))?;
                }
                netns_path = Some(PathBuf::from(&r.config.netns_path));
            }
            "host" => {
                for f in ["hosts", "resolv.conf"] {
                    let _ = std::fs::copy(Path::new("/etc").join(f), bundle.join(f));
                }
                let host = nix::unistd::gethostname()
                    .map(|h| h.to_string_lossy().into_owned())
                    .unwrap_or_default();
                std::fs::write(bundle.join("hostname"), format!("{host}\n"))
                    .map_err(|err| internal("write hostname", err))?;
            }
            "none" => {
                network::write_etc_files(&bundle, &hostname, None, &[])
                    .map_err(|err| internal("write /etc files", format!("{err:#}")))?;
            }
            _ => {
                let ns = self
                    .net
                    .create_netns(id)
                    .await
                    .map_err(|err| internal("create network namespace", format!("{err:#}")))?;
                self.update(e, |r| r.netns = ns.display().to_string())?;
                let mapped: Vec<network::PortMapping> = ports
                    .iter()
                    .map(|p| network::PortMapping {
                        host_ip: p.host_ip.clone(),
                        host_port: p.host_port as u16,
                        container_port: p.container_port as u16,
                        protocol: p.protocol.clone(),
                    })
                    .collect();
                let att = self
                    .net
                    .add(id, &ns, "eth0", &mapped)
                    .await
                    .map_err(|err| Status::unavailable(format!("network setup: {err:#}")))?;
                ip = att.ip;
                self.update(e, |r| {
                    r.ip = att.ip.map(|i| i.to_string()).unwrap_or_default();
                })?;
                network::write_etc_files(&bundle, &hostname, att.ip, &[])
                    .map_err(|err| internal("write /etc files", format!("{err:#}")))?;
                netns_path = Some(ns);
            }
        }
        let _ = ip;
        let netns = match (&netns_path, r.config.network.as_str()) {
            (Some(p), _) => spec::NetNs::Path(p),
            (None, "host") => spec::NetNs::Host,
            _ => spec::NetNs::New,
        };
        let spec = spec::build(&spec::Inputs {
            id,
            config: &r.config,
            image: image_cfg,
            rootfs: &rootfs,
            etc_dir: Some(&bundle),
            netns,
            hostname: &hostname,
        })?;
        let cfg_path = bundle.join("config.json");
        let tmp = bundle.join(".config.json.tmp");
        std::fs::write(&tmp, serde_json::to_vec_pretty(&spec).expect("json"))
            .and_then(|_| std::fs::rename(&tmp, &cfg_path))
            .map_err(|err| internal(&format!("write {}", cfg_path.display()), err))?;

        let shim_dir = self.shim_dir(id);
        let _ = std::fs::remove_dir_all(&shim_dir);
        let mut cmd = tokio::process::Command::new(&self.cfg.shim);
        cmd.arg("--id")
            .arg(id)
            .arg("--bundle")
            .arg(&bundle)
            .arg("--dir")
            .arg(&shim_dir)
            .arg("--runtime-root")
            .arg(self.runtime_root())
            .arg("--log")
            .arg(&r.log_path);
        if let Some(rt) = &self.cfg.runtime {
            cmd.arg("--runtime").arg(rt);
        }
        if r.config.stdin {
            cmd.arg("--stdin");
        }
        if r.config.tty {
            cmd.arg("--tty");
        }
        cmd.stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::piped());
        let out = cmd
            .output()
            .await
            .map_err(|err| internal(&format!("run {}", self.cfg.shim.display()), err))?;
        if !out.status.success() {
            let msg = String::from_utf8_lossy(&out.stderr);
            let msg = msg
                .lines()
                .rev()
                .find(|l| !l.trim().is_empty())
                .unwrap_or("the shim failed")
                .trim()
                .trim_start_matches("berth-shim: ");
            let msg = msg.to_string();
            return Err(
                if msg.contains("not found") || msg.contains("No such file") {
                    Status::failed_precondition(msg)
                } else {
                    Status::internal(msg)
                },
            );
        }
        berth_shim::connect(&shim_dir)
            .await
            .map_err(|err| internal("connect to the shim", err))
    }

    /// Starts a container the shim has created, and watches it.
    pub(super) async fn finish_start(
        self: &Arc<Self>,
        e: &Arc<Entry>,
        shim: &mut ShimClient<Channel>,
    ) -> Result<Record, Status> {
        let res = shim.start(berth_shim::api::Empty {}).await;
        let st = match res {
            Ok(st) => st.into_inner(),
            Err(err) => {
                discard_shim(shim).await;
                self.teardown(e, false).await;
                let msg = err.message().to_string();
                let _ = self.update(e, |r| {
                    r.phase = if r.started_at == 0 {
                        Phase::Created
                    } else {
                        Phase::Exited
                    };
                    r.error = msg.clone();
                    r.ports.clear();
                });
                return Err(Status::failed_precondition(msg));
            }
        };
        let r = self.update(e, |r| {
            r.phase = Phase::Running;
            r.pid = st.pid as i32;
            r.started_at = now_nanos();
            r.restarting = false;
        })?;
        tracing::info!(id = %r.id, name = %r.name, pid = r.pid, "container started");
        self.clone().monitor(e.clone(), shim.clone());
        Ok(r)
    }

    pub async fn start(self: &Arc<Self>, key: &str) -> Result<Record, Status> {
        let e = self.find(key)?;
        let _op = e.op.lock().await;
        if e.get().phase == Phase::Running {
            return Ok(e.get());
        }
        self.update(&e, |r| r.manually_stopped = false)?;
        let mut shim = self.spawn(&e).await?;
        self.finish_start(&e, &mut shim).await
    }

    /// Starts with an attach stream opened between create and start (nothing is missed).
    pub async fn start_attached(
        self: &Arc<Self>,
        key: &str,
        stdin: tokio::sync::mpsc::Receiver<berth_shim::api::AttachIn>,
    ) -> Result<(Record, tonic::Streaming<berth_shim::api::AttachOut>), Status> {
        let e = self.find(key)?;
        let _op = e.op.lock().await;
        self.update(&e, |r| r.manually_stopped = false)?;
        let mut shim = self.spawn(&e).await?;
        let out = match attach_shim(&mut shim, stdin).await {
            Ok(o) => o,
            Err(err) => {
                discard_shim(&mut shim).await;
                self.teardown(&e, false).await;
                let _ = self.update(&e, |r| {
                    r.phase = Phase::Created;
                    r.ports.clear();
                });
                return Err(err);
            }
        };
        let r = self.finish_start(&e, &mut shim).await?;
        Ok((r, out))
    }

    /// Attaches to a running container.
    pub async fn attach(
        &self,
        key: &str,
        stdin: tokio::sync::mpsc::Receiver<berth_shim::api::AttachIn>,
    ) -> Result<(Record, tonic::Streaming<berth_shim::api::AttachOut>), Status> {
        let e = self.find(key)?;
        let r = e.get();
        if !matches!(r.phase, Phase::Running | Phase::Paused) {
            return Err(Status::failed_precondition(format!(
                "You cannot attach to a stopped container {}: start it first",
                r.name
            )));
        }
        let mut shim = self.shim(&r.id).await?;
        let out = attach_shim(&mut shim, stdin).await?;
        Ok((r, out))
    }

    /// Marks an attach stream live until the guard drops (exit handling waits for them).
    pub fn attach_guard(&self, key: &str) -> Option<AttachGuard> {
        let e = self.find(key).ok()?;
        e.attaches.send_modify(|n| *n += 1);
        Some(AttachGuard(e))
    }

    pub(super) async fn shim(&self, id: &str) -> Result<ShimClient<Channel>, Status> {
        berth_shim::connect(&self.shim_dir(id))
            .await
            .map_err(|err| Status::unavailable(format!("the shim of {id} is not answering: {err}")))
    }

    /// Waits for the container's exit through its shim, then handles it.
    pub(super) fn monitor(self: Arc<Self>, e: Arc<Entry>, mut shim: ShimClient<Channel>) {
        tokio::spawn(async move {
            let id = e.get().id;
            let res = shim
                .wait(berth_shim::api::ProcessRef {
                    exec_id: String::new(),
                })
                .await;
            let exit = match res {
                Ok(x) => Some(x.into_inner()),
                Err(err) => {
                    tracing::warn!(%id, "lost the shim: {}", err.message());
                    None
                }
            };
            // Our connection must not keep the shim alive through its teardown.
            drop(shim);
            self.handle_exit(&e, exit).await;
        });
    }
}
