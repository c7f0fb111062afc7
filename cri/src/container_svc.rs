//! The `Containers` gRPC service (containers.proto) over the [`Manager`].

use crate::api::containers_server::Containers;
use crate::api::*;
use crate::containers::{self, Manager, Phase};
use berth_shim::api as shim;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::Arc;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tokio_stream::Stream;
use tonic::{Request, Response, Status, Streaming};

type Out<T> = Pin<Box<dyn Stream<Item = Result<T, Status>> + Send>>;

pub struct ContainerService {
    pub m: Arc<Manager>,
}

fn internal(what: &str, e: impl std::fmt::Display) -> Status {
    Status::internal(format!("{what}: {e}").replace('\n', " "))
}

/// Copies the shim's output to the client, then sends the exit status from `exit`.
fn pump_output<F>(
    mut from: Streaming<shim::AttachOut>,
    tx: mpsc::Sender<Result<AttachOutput, Status>>,
    guard: Option<containers::AttachGuard>,
    done: Arc<tokio::sync::Notify>,
    exit: F,
) where
    F: std::future::Future<Output = Option<i32>> + Send + 'static,
{
    tokio::spawn(async move {
        loop {
            match from.message().await {
                Ok(Some(m)) => {
                    if m.stdout.is_empty() && m.stderr.is_empty() {
                        continue;
                    }
                    let out = AttachOutput {
                        stdout: m.stdout,
                        stderr: m.stderr,
                        ..Default::default()
                    };
                    if tx.send(Ok(out)).await.is_err() {
                        break;
                    }
                }
                Ok(None) => break,
                Err(e) => {
                    tracing::debug!("attach stream ended: {}", e.message());
                    break;
                }
            }
        }
        // Close the stream to the shim now, both ways: the shim ends once its clients are
        // gone, and the exit this task waits for may include that end (`run --rm`).
        drop(from);
        done.notify_one();
        drop(guard);
        if let Some(code) = exit.await {
            let _ = tx
                .send(Ok(AttachOutput {
                    exited: true,
                    exit_code: code,
                    ..Default::default()
                }))
                .await;
        }
    });
}

/// Copies the client's stdin/resize messages to the shim, until the client or the output ends
/// (`done`).
fn pump_input<T, F>(
    mut from: Streaming<T>,
    to: mpsc::Sender<shim::AttachIn>,
    exec_id: String,
    done: Arc<tokio::sync::Notify>,
    f: F,
) where
    T: Send + 'static,
    F: Fn(T) -> (Vec<u8>, bool, u32, u32) + Send + 'static,
{
    tokio::spawn(async move {
        loop {
            let m = tokio::select! {
                m = from.message() => m,
                _ = done.notified() => return,
            };
            let Ok(Some(m)) = m else { break };
            let (data, close, w, h) = f(m);
            let msg = shim::AttachIn {
                exec_id: exec_id.clone(),
                stdin: data,
                close_stdin: close,
                width: w,
                height: h,
            };
            if to.send(msg).await.is_err() {
                return;
            }
        }
        // The client went away without closing stdin: leave the container's stdin open
        // (as docker does on detach).
    });
}

#[tonic::async_trait]
impl Containers for ContainerService {
    async fn create(
        &self,
        req: Request<CreateRequest>,
    ) -> Result<Response<CreateResponse>, Status> {
        let c = req
            .into_inner()
            .config
            .ok_or_else(|| Status::invalid_argument("no container config"))?;
        let r = self.m.create(c).await?;
        Ok(Response::new(CreateResponse {
            id: r.id,
            warnings: vec![],
        }))
    }

    async fn start(
        &self,
        req: Request<ContainerRef>,
    ) -> Result<Response<ContainerSummary>, Status> {
        let r = self.m.start(&req.into_inner().id).await?;
        Ok(Response::new(containers::summary(&r)))
    }

    type AttachStream = Out<AttachOutput>;

    async fn attach(
        &self,
        req: Request<Streaming<AttachInput>>,
    ) -> Result<Response<Self::AttachStream>, Status> {
        let mut inbound = req.into_inner();
        let first = inbound
            .message()
            .await?
            .ok_or_else(|| Status::invalid_argument("attach: no request"))?;
        let (stdin_tx, stdin_rx) = mpsc::channel(16);
        stdin_tx
            .send(shim::AttachIn {
                exec_id: String::new(),
                stdin: first.stdin.clone(),
                close_stdin: first.close_stdin,
                width: first.width,
                height: first.height,
            })
            .await
            .map_err(|_| Status::internal("attach channel"))?;
        let mut exits = self.m.exit_watch(&first.id)?;
        let seen = exits.borrow().0;
        let guard = self.m.attach_guard(&first.id);
        let (_r, out) = if first.start {
            self.m.start_attached(&first.id, stdin_rx).await?
        } else {
            self.m.attach(&first.id, stdin_rx).await?
        };
        let done = Arc::new(tokio::sync::Notify::new());
        pump_input(
            inbound,
            stdin_tx,
            String::new(),
            done.clone(),
            |m: AttachInput| (m.stdin, m.close_stdin, m.width, m.height),
        );
        let (tx, rx) = mpsc::channel(64);
        let _ = tx
            .send(Ok(AttachOutput {
                attached: true,
                ..Default::default()
            }))
            .await;
        pump_output(out, tx, guard, done, async move {
            exits.wait_for(|(n, _)| *n != seen).await.ok().map(|v| v.1)
        });
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }

    type ExecStream = Out<AttachOutput>;

    async fn exec(
        &self,
        req: Request<Streaming<ExecInput>>,
    ) -> Result<Response<Self::ExecStream>, Status> {
        let mut inbound = req.into_inner();
        let first = inbound
            .message()
            .await?
            .ok_or_else(|| Status::invalid_argument("exec: no request"))?;
        let (r, mut sh) = self.m.running_shim(&first.id).await?;
        if r.phase == Phase::Paused {
            return Err(Status::failed_precondition(format!(
                "container {} is paused, unpause the container before exec",
                r.name
            )));
        }
        let spec = self.m.bundle_spec(&r.id)?;
        let process = crate::spec::exec_process(&spec, &self.m.rootfs(&r.id), &first)?;
        let exec_id = hex::encode(
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap_or_default()
                .as_nanos()
                .to_be_bytes(),
        )[16..]
            .to_string();
        sh.exec(shim::ExecRequest {
            exec_id: exec_id.clone(),
            process_json: serde_json::to_vec(&process).expect("json"),
            stdin: first.stdin,
        })
        .await
        .map_err(|e| Status::new(e.code(), e.message().replace('\n', " ")))?;
        let (tx, rx) = mpsc::channel(64);
        if first.detach {
            let mut sh2 = sh.clone();
            let id = exec_id.clone();
            tokio::spawn(async move {
                // Drain (nobody reads a detached exec's output) and forget it when done.
                let (_in_tx, in_rx) = mpsc::channel(1);
                let _keep = _in_tx.clone();
                if let Ok(mut out) = sh2
                    .attach(ReceiverStream::new(in_rx))
                    .await
                    .map(|r| r.into_inner())
                {
                    let _ = _in_tx
                        .send(shim::AttachIn {
                            exec_id: id.clone(),
                            ..Default::default()
                        })
                        .await;
                    while let Ok(Some(_)) = out.message().await {}
                }
                let _ = sh2
                    .wait(shim::ProcessRef {
                        exec_id: id.clone(),
                    })
                    .await;
                let _ = sh2
                    .delete(shim::DeleteRequest {
                        exec_id: id,
                        force: false,
                    })
                    .await;
            });
            let _ = tx
                .send(Ok(AttachOutput {
                    exited: true,
                    exit_code: 0,
                    ..Default::default()
                }))
                .await;
            return Ok(Response::new(Box::pin(ReceiverStream::new(rx))));
        }
        let (stdin_tx, stdin_rx) = mpsc::channel(16);
        stdin_tx
            .send(shim::AttachIn {
                exec_id: exec_id.clone(),
                width: first.width,
                height: first.height,
                ..Default::default()
            })
            .await
            .map_err(|_| Status::internal("exec channel"))?;
        let out = containers::attach_shim(&mut sh, stdin_rx).await?;
        let done = Arc::new(tokio::sync::Notify::new());
        pump_input(
            inbound,
            stdin_tx,
            exec_id.clone(),
            done.clone(),
            |m: ExecInput| (m.data, m.close_stdin, m.width, m.height),
        );
        let _ = tx
            .send(Ok(AttachOutput {
                attached: true,
                ..Default::default()
            }))
            .await;
        pump_output(out, tx, None, done, async move {
            let code = sh
                .wait(shim::ProcessRef {
                    exec_id: exec_id.clone(),
                })
                .await
                .ok()
                .map(|x| x.into_inner().exit_code);
            let _ = sh
                .delete(shim::DeleteRequest {
                    exec_id,
                    force: false,
                })
                .await;
            code
        });
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }

    async fn wait(&self, req: Request<ContainerRef>) -> Result<Response<WaitResponse>, Status> {
        let code = self.m.wait(&req.into_inner().id).await?;
        Ok(Response::new(WaitResponse {
            exit_code: code,
            error: String::new(),
        }))
    }

    async fn stop(&self, req: Request<StopRequest>) -> Result<Response<ContainerSummary>, Status> {
        let q = req.into_inner();
        let t = q.timeout_set.then_some(q.timeout);
        let r = self.m.stop(&q.id, t, &q.signal).await?;
        Ok(Response::new(containers::summary(&r)))
    }

    async fn kill(&self, req: Request<KillRequest>) -> Result<Response<Empty2>, Status> {
        let q = req.into_inner();
        self.m.kill(&q.id, &q.signal).await?;
        Ok(Response::new(Empty2 {}))
    }

    async fn remove(
        &self,
        req: Request<RemoveContainerRequest>,
    ) -> Result<Response<Empty2>, Status> {
        let q = req.into_inner();
        self.m.remove(&q.id, q.force).await?;
        Ok(Response::new(Empty2 {}))
    }

    async fn list(
        &self,
        req: Request<ListContainersRequest>,
    ) -> Result<Response<ListContainersResponse>, Status> {
        let all = req.into_inner().all;
        Ok(Response::new(ListContainersResponse {
            containers: self.m.list(all).iter().map(containers::summary).collect(),
        }))
    }

    async fn inspect_container(
        &self,
        req: Request<ContainerRef>,
    ) -> Result<Response<InspectContainerResponse>, Status> {
        let r = self.m.get(&req.into_inner().id)?;
        let s = containers::summary(&r);
        let rfc = |n: i64| {
            if n == 0 {
                "0001-01-01T00:00:00Z".to_string()
            } else {
                crate::containers_util::rfc3339_nanos(n)
            }
        };
        let v = serde_json::json!({
            "Id": r.id,
            "Name": format!("/{}", r.name),
            "Created": rfc(r.created),
            "Path": r.args.first().cloned().unwrap_or_default(),
            "Args": r.args.iter().skip(1).collect::<Vec<_>>(),
            "State": {
                "Status": s.state,
                "Running": matches!(r.phase, Phase::Running | Phase::Paused),
                "Paused": r.phase == Phase::Paused,
                "Restarting": r.restarting,
                "OOMKilled": r.reason == "OOMKilled",
                "Dead": false,
                "Pid": s.pid,
                "ExitCode": r.exit_code,
                "Error": if r.error.is_empty() { r.reason.clone() } else { r.error.clone() },
                "StartedAt": rfc(r.started_at),
                "FinishedAt": rfc(r.finished_at),
            },
            "Image": r.image_id,
            "ImageName": r.image,
            "LogPath": r.log_path,
            "RestartCount": r.restart_count,
            "Config": r.config,
            "NetworkSettings": {
                "IPAddress": r.ip,
                "Ports": r.ports,
                "SandboxKey": r.netns,
            },
        });
        Ok(Response::new(InspectContainerResponse {
            json: serde_json::to_string_pretty(&v).expect("json"),
        }))
    }

    type LogsStream = Out<LogLine>;

    async fn logs(&self, req: Request<LogsRequest>) -> Result<Response<Self::LogsStream>, Status> {
        let q = req.into_inner();
        let r = self.m.get(&q.id)?;
        let m = self.m.clone();
        let (tx, rx) = mpsc::channel(256);
        tokio::spawn(async move {
            crate::containers_util::stream_logs(m, r, q, tx).await;
        });
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }

    async fn stats(&self, req: Request<ContainerRef>) -> Result<Response<StatsSample>, Status> {
        let (r, mut sh) = self.m.running_shim(&req.into_inner().id).await?;
        let js = sh.stats(shim::Empty {}).await?.into_inner().json;
        let v: serde_json::Value =
            serde_json::from_slice(&js).map_err(|e| internal("stats from the shim", e))?;
        Ok(Response::new(crate::containers_util::stats_sample(&r, &v)))
    }

    async fn top(&self, req: Request<ContainerRef>) -> Result<Response<TopResponse>, Status> {
        let (_r, mut sh) = self.m.running_shim(&req.into_inner().id).await?;
        let pids = sh.pids(shim::Empty {}).await?.into_inner().pids;
        crate::containers_util::top(&pids).await.map(Response::new)
    }

    async fn pause(&self, req: Request<ContainerRef>) -> Result<Response<Empty2>, Status> {
        self.m.pause(&req.into_inner().id, true).await?;
        Ok(Response::new(Empty2 {}))
    }

    async fn unpause(&self, req: Request<ContainerRef>) -> Result<Response<Empty2>, Status> {
        self.m.pause(&req.into_inner().id, false).await?;
        Ok(Response::new(Empty2 {}))
    }

    type CopyFromStream = Out<Chunk>;

    async fn copy_from(
        &self,
        req: Request<CopyFromRequest>,
    ) -> Result<Response<Self::CopyFromStream>, Status> {
        let q = req.into_inner();
        let lease = self.m.rootfs_lease(&q.id).await?;
        let real = crate::containers_util::resolve_in_root(&lease.path(), &q.path)?;
        let name = Path::new(&q.path)
            .file_name()
            .map(|n| n.to_owned())
            .unwrap_or_else(|| ".".into());
        let (tx, rx) = mpsc::channel(16);
        tokio::task::spawn_blocking(move || {
            crate::containers_util::tar_out(&real, &PathBuf::from(name), tx);
            drop(lease);
        });
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }

    async fn copy_to(
        &self,
        req: Request<Streaming<CopyToInput>>,
    ) -> Result<Response<Empty2>, Status> {
        let mut inbound = req.into_inner();
        let first = inbound
            .message()
            .await?
            .ok_or_else(|| Status::invalid_argument("copy: no request"))?;
        let lease = self.m.rootfs_lease(&first.id).await?;
        let rootfs = lease.path();
        let (tx, rx) = std::sync::mpsc::sync_channel::<Vec<u8>>(16);
        let path = first.path.clone();
        let job =
            tokio::task::spawn_blocking(move || crate::containers_util::tar_in(&rootfs, &path, rx));
        if !first.data.is_empty() && tx.send(first.data).is_err() {
            return Err(job
                .await
                .map_err(|e| internal("copy", e))?
                .err()
                .unwrap_or_else(|| Status::internal("copy failed")));
        }
        loop {
            match inbound.message().await {
                Ok(Some(m)) => {
                    let tx2 = tx.clone();
                    let sent = tokio::task::spawn_blocking(move || tx2.send(m.data).is_ok())
                        .await
                        .unwrap_or(false);
                    if !sent {
                        break;
                    }
                }
                Ok(None) => break,
                Err(e) => {
                    drop(tx);
                    let _ = job.await;
                    return Err(e);
                }
            }
        }
        drop(tx);
        job.await.map_err(|e| internal("copy", e))??;
        Ok(Response::new(Empty2 {}))
    }

    async fn info(&self, _req: Request<Empty2>) -> Result<Response<InfoResponse>, Status> {
        let all = self.m.list(true);
        let count = |p: &[Phase]| all.iter().filter(|r| p.contains(&r.phase)).count();
        let images = self.m.store.images().await.map(|v| v.len()).unwrap_or(0);
        let cgroup = if std::fs::read_to_string("/proc/self/mountinfo")
            .unwrap_or_default()
            .lines()
            .any(|l| l.split(' ').nth(4) == Some("/sys/fs/cgroup") && l.contains(" - cgroup2 "))
        {
            "2"
        } else {
            "1"
        };
        let kernel = nix::sys::utsname::uname()
            .map(|u| u.release().to_string_lossy().into_owned())
            .unwrap_or_default();
        let v = serde_json::json!({
            "Containers": all.len(),
            "ContainersRunning": count(&[Phase::Running]),
            "ContainersPaused": count(&[Phase::Paused]),
            "ContainersStopped": count(&[Phase::Created, Phase::Exited]),
            "Images": images,
            "ServerVersion": env!("CARGO_PKG_VERSION"),
            "Driver": "overlay",
            "DockerRootDir": self.m.cfg.root,
            "StateDir": self.m.cfg.state,
            "LogDir": self.m.cfg.log_dir,
            "CgroupVersion": cgroup,
            "Runtime": self.m.cfg.runtime.as_ref().map(|p| p.display().to_string()).unwrap_or_else(|| "berth-runtime (library, in the shim)".into()),
            "Network": {"Bridge": self.m.cfg.network.bridge, "Subnet": self.m.cfg.network.subnet},
            "KernelVersion": kernel,
            "NCPU": std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1),
        });
        Ok(Response::new(InfoResponse {
            json: serde_json::to_string_pretty(&v).expect("json"),
        }))
    }
}
