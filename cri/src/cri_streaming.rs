//! The CRI's Exec, Attach and PortForward: the RPCs check the request and answer a URL of the
//! streaming server ([`berth_streaming`]); what the URLs do runs here, on the container
//! manager's shims and the pods' network namespaces.
//!
//! - exec: a process in the container as `ExecSync` starts one (the shim's `Exec`, its stdio
//!   through the shim's `Attach` stream), forgotten by the shim once it has exited; killed if
//!   the client goes away first. With a terminal, the size the client sends right away is the
//!   terminal's size from the start.
//! - attach: the container's own stdio ([`Manager::attach`]). It ends when the container
//!   exits, or when the client goes or ends its stdin (the container's stdin stays open:
//!   CreateContainer does not record `stdin_once`).
//! - port forward: a connection to the port on the pod's loopback, made from a thread that
//!   has joined the pod's network namespace (the socket stays in that namespace).

use crate::api;
use crate::containers::{Manager, Phase};
use crate::cri_containers::{kill_exec, start_exec};
use crate::pods::Pods;
use berth_shim::api as shim;
use berth_streaming as streaming;
use berth_streaming::{Backend, Io, Server};
use k8s_cri::v1;
use std::net::{Ipv6Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{mpsc, watch};
use tonic::Status;

/// How long a terminal exec waits for the client's first terminal size before it starts.
const FIRST_SIZE_WAIT: Duration = Duration::from_millis(250);
/// Connecting to a port in the pod.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

fn disabled(rpc: &str) -> Status {
    Status::unimplemented(format!("{rpc}: berthd runs without a streaming server"))
}

/// The full id of the running CRI container `id` names.
fn running(m: &Manager, id: &str) -> Result<String, Status> {
    if id.is_empty() {
        return Err(Status::invalid_argument("missing required container_id"));
    }
    let st = crate::cri_containers::status(m, id)?;
    if st.state != v1::ContainerState::ContainerRunning as i32 {
        return Err(Status::failed_precondition(format!(
            "container {} is not running",
            st.id
        )));
    }
    Ok(st.id)
}

/// Exec: the container must be running; the URL runs the request.
pub fn exec_url(
    server: Option<&Server>,
    m: &Manager,
    mut r: v1::ExecRequest,
) -> Result<v1::ExecResponse, Status> {
    let server = server.ok_or_else(|| disabled("Exec"))?;
    r.container_id = running(m, &r.container_id)?;
    let r = streaming::ExecRequest {
        container_id: r.container_id,
        cmd: r.cmd,
        tty: r.tty,
        stdin: r.stdin,
        stdout: r.stdout,
        stderr: r.stderr,
    };
    Ok(v1::ExecResponse {
        url: server.exec_url(r).map_err(to_status)?,
    })
}

pub fn attach_url(
    server: Option<&Server>,
    m: &Manager,
    mut r: v1::AttachRequest,
) -> Result<v1::AttachResponse, Status> {
    let server = server.ok_or_else(|| disabled("Attach"))?;
    r.container_id = running(m, &r.container_id)?;
    let r = streaming::AttachRequest {
        container_id: r.container_id,
        tty: r.tty,
        stdin: r.stdin,
        stdout: r.stdout,
        stderr: r.stderr,
    };
    Ok(v1::AttachResponse {
        url: server.attach_url(r).map_err(to_status)?,
    })
}

/// PortForward: the sandbox must be ready.
pub fn port_forward_url(
    server: Option<&Server>,
    pods: &Pods,
    mut r: v1::PortForwardRequest,
) -> Result<v1::PortForwardResponse, Status> {
    let server = server.ok_or_else(|| disabled("PortForward"))?;
    if r.pod_sandbox_id.is_empty() {
        return Err(Status::invalid_argument("missing required pod_sandbox_id"));
    }
    r.pod_sandbox_id = pods.for_container(&r.pod_sandbox_id)?.0.id;
    let r = streaming::PortForwardRequest {
        pod_sandbox_id: r.pod_sandbox_id,
        port: r.port,
    };
    Ok(v1::PortForwardResponse {
        url: server.port_forward_url(r).map_err(to_status)?,
    })
}

/// A streaming error as the CRI answers it: the same code and message.
fn to_status(e: streaming::Error) -> Status {
    use streaming::Code as C;
    let code = match e.code() {
        C::InvalidArgument => tonic::Code::InvalidArgument,
        C::NotFound => tonic::Code::NotFound,
        C::FailedPrecondition => tonic::Code::FailedPrecondition,
        C::PermissionDenied => tonic::Code::PermissionDenied,
        C::ResourceExhausted => tonic::Code::ResourceExhausted,
        C::Unavailable => tonic::Code::Unavailable,
        C::Internal => tonic::Code::Internal,
    };
    Status::new(code, e.message())
}

/// A CRI status as the streaming server reports it (codes it has no name for are internal).
fn to_streaming(s: Status) -> streaming::Error {
    use streaming::Code as C;
    let code = match s.code() {
        tonic::Code::InvalidArgument => C::InvalidArgument,
        tonic::Code::NotFound => C::NotFound,
        tonic::Code::FailedPrecondition => C::FailedPrecondition,
        tonic::Code::PermissionDenied => C::PermissionDenied,
        tonic::Code::ResourceExhausted => C::ResourceExhausted,
        tonic::Code::Unavailable => C::Unavailable,
        _ => C::Internal,
    };
    streaming::Error::new(code, s.message())
}

/// The streaming server's backend.
pub struct CriStreaming {
    pub containers: Arc<Manager>,
    pub pods: Arc<Pods>,
}

/// Starts berthd's streaming server on `addr`.
pub fn serve(
    addr: SocketAddr,
    containers: Arc<Manager>,
    pods: Arc<Pods>,
) -> std::io::Result<Arc<Server>> {
    Server::bind(addr, Arc::new(CriStreaming { containers, pods }))
}

/// Receives from `rx` if there is one (never resolves otherwise).
async fn recv<T>(rx: &mut Option<mpsc::Receiver<T>>) -> Option<T> {
    match rx {
        Some(r) => r.recv().await,
        None => std::future::pending().await,
    }
}

/// Resolves when the client has gone: every output it asked for is closed (never, if it
/// asked for none).
async fn client_gone(a: Option<mpsc::Sender<Vec<u8>>>, b: Option<mpsc::Sender<Vec<u8>>>) {
    if a.is_none() && b.is_none() {
        std::future::pending::<()>().await;
    }
    if let Some(a) = a {
        a.closed().await;
    }
    if let Some(b) = b {
        b.closed().await;
    }
}

/// What ended a relay.
#[derive(Debug, PartialEq, Eq)]
enum End {
    /// The output ended: the process exited and its output is all delivered.
    Output,
    ClientGone,
    /// The client's stdin ended (attach detaches then).
    StdinDone,
}

/// Copies the client's input (stdin, terminal sizes) to the shim's Attach stream and its
/// output back to the client. Stdin's end closes the process's stdin (`close_stdin`) or ends
/// the relay.
async fn relay(
    out: &mut tonic::Streaming<shim::AttachOut>,
    to_shim: mpsc::Sender<shim::AttachIn>,
    exec_id: String,
    io: Io,
    tty: bool,
    close_stdin: bool,
) -> End {
    let Io {
        stdin,
        stdout,
        stderr,
        resize,
    } = io;
    let wants_stdin = stdin.is_some();
    let (eof_tx, mut eof_rx) = watch::channel(false);
    let input = tokio::spawn(async move {
        let (mut stdin, mut resize) = (stdin, resize);
        loop {
            let msg = tokio::select! {
                // Sizes first: a size sent before some input applies before it.
                biased;
                s = recv(&mut resize) => match s {
                    Some((w, h)) => shim::AttachIn {
                        exec_id: exec_id.clone(),
                        width: w as u32,
                        height: h as u32,
                        ..Default::default()
                    },
                    None => {
                        resize = None;
                        continue;
                    }
                },
                d = recv(&mut stdin) => match d {
                    Some(d) => shim::AttachIn {
                        exec_id: exec_id.clone(),
                        stdin: d,
                        ..Default::default()
                    },
                    None => {
                        stdin = None;
                        let _ = eof_tx.send(true);
                        if !close_stdin {
                            continue;
                        }
                        shim::AttachIn {
                            exec_id: exec_id.clone(),
                            close_stdin: true,
                            ..Default::default()
                        }
                    }
                },
            };
            if to_shim.send(msg).await.is_err() {
                return;
            }
        }
    });
    let gone = client_gone(stdout.clone(), stderr.clone());
    tokio::pin!(gone);
    let end = loop {
        tokio::select! {
            m = out.message() => match m {
                Ok(Some(m)) => {
                    // With a terminal there is one output.
                    let (o, e) = if tty {
                        ([m.stdout, m.stderr].concat(), Vec::new())
                    } else {
                        (m.stdout, m.stderr)
                    };
                    for (data, to) in [(o, &stdout), (e, &stderr)] {
                        if let (false, Some(to)) = (data.is_empty(), to) {
                            let _ = to.send(data).await;
                        }
                    }
                }
                Ok(None) => break End::Output,
                Err(e) => {
                    tracing::debug!("attach stream ended: {}", e.message());
                    break End::Output;
                }
            },
            _ = &mut gone => break End::ClientGone,
            _ = async {
                if eof_rx.wait_for(|e| *e).await.is_err() {
                    std::future::pending::<()>().await;
                }
            }, if wants_stdin && !close_stdin => {
                break End::StdinDone
            }
        }
    };
    input.abort();
    end
}

impl CriStreaming {
    async fn run_exec(
        &self,
        container_id: &str,
        cmd: Vec<String>,
        tty: bool,
        mut io: Io,
    ) -> Result<i32, Status> {
        let m = &self.containers;
        let id = running(m, container_id)?;
        let (r, mut sh) = m.running_shim(&id).await?;
        if r.phase == Phase::Paused {
            return Err(Status::failed_precondition(format!(
                "container {} is paused",
                r.id
            )));
        }
        let spec = m.bundle_spec(&r.id)?;
        let input = api::ExecInput {
            id: r.id.clone(),
            cmd,
            tty,
            stdin: io.stdin.is_some(),
            ..Default::default()
        };
        let mut process = crate::spec::exec_process(&spec, &m.rootfs(&r.id), &input)?;
        if tty {
            if let Some(sizes) = io.resize.as_mut() {
                if let Ok(Some((w, h))) = tokio::time::timeout(FIRST_SIZE_WAIT, sizes.recv()).await
                {
                    process["consoleSize"] = serde_json::json!({"height": h, "width": w});
                }
            }
        }
        let exec_id = format!("cri-{}", crate::containers::random_hex(8));
        let (to_shim, mut out) =
            start_exec(&mut sh, &exec_id, &process, io.stdin.is_some()).await?;
        let end = relay(&mut out, to_shim, exec_id.clone(), io, tty, true).await;
        if end == End::ClientGone {
            tracing::info!(container = %r.id, exec_id, "exec: the client went away, killing the process");
            kill_exec(&mut sh, &exec_id).await;
            while let Ok(Some(_)) = out.message().await {}
        }
        drop(out);
        let code = sh
            .wait(shim::ProcessRef {
                exec_id: exec_id.clone(),
            })
            .await
            .map(|x| x.into_inner().exit_code);
        let _ = sh
            .delete(shim::DeleteRequest {
                exec_id,
                force: true,
            })
            .await;
        code.map_err(|e| Status::internal(format!("exec: {}", e.message())))
    }

    async fn run_attach(&self, container_id: &str, tty: bool, mut io: Io) -> Result<i32, Status> {
        let m = &self.containers;
        let id = running(m, container_id)?;
        let mut exits = m.exit_watch(&id)?;
        let seen = exits.borrow().0;
        let guard = m.attach_guard(&id);
        let (to_shim, from_us) = mpsc::channel(16);
        let mut first = shim::AttachIn::default();
        if let Some(Ok((w, h))) = io.resize.as_mut().map(|r| r.try_recv()) {
            (first.width, first.height) = (w as u32, h as u32);
        }
        let _ = to_shim.send(first).await;
        let (_, mut out) = m.attach(&id, from_us).await?;
        let end = relay(&mut out, to_shim, String::new(), io, tty, false).await;
        // Closing the stream detaches; the container goes on (unless it has exited).
        drop(out);
        drop(guard);
        if end != End::Output {
            return Ok(0);
        }
        let code =
            tokio::time::timeout(Duration::from_secs(10), exits.wait_for(|(n, _)| *n != seen))
                .await;
        Ok(match code {
            Ok(Ok(v)) => v.1,
            _ => 0,
        })
    }

    async fn connect_port(
        &self,
        pod_sandbox_id: &str,
        port: u16,
    ) -> Result<tokio::net::TcpStream, Status> {
        let (pod, _) = self.pods.for_container(pod_sandbox_id)?;
        let netns = (!pod.host_network && !pod.netns.is_empty()).then(|| PathBuf::from(&pod.netns));
        let (tx, rx) = tokio::sync::oneshot::channel();
        // A thread of its own: it joins the pod's network namespace and is gone afterwards.
        std::thread::Builder::new()
            .name("berthd-portfwd".into())
            .spawn(move || {
                let _ = tx.send(connect(netns.as_deref(), port));
            })
            .map_err(|e| Status::internal(format!("port forward thread: {e}")))?;
        let std_stream = rx
            .await
            .map_err(|_| Status::internal("port forward thread died"))??;
        tokio::net::TcpStream::from_std(std_stream)
            .map_err(|e| Status::internal(format!("port forward socket: {e}")))
    }
}

#[async_trait::async_trait]
impl Backend for CriStreaming {
    async fn exec(
        &self,
        container_id: &str,
        cmd: Vec<String>,
        tty: bool,
        io: Io,
    ) -> Result<i32, streaming::Error> {
        self.run_exec(container_id, cmd, tty, io)
            .await
            .map_err(to_streaming)
    }

    async fn attach(&self, container_id: &str, tty: bool, io: Io) -> Result<i32, streaming::Error> {
        self.run_attach(container_id, tty, io)
            .await
            .map_err(to_streaming)
    }

    async fn port_forward(
        &self,
        pod_sandbox_id: &str,
        port: u16,
    ) -> Result<tokio::net::TcpStream, streaming::Error> {
        self.connect_port(pod_sandbox_id, port)
            .await
            .map_err(to_streaming)
    }
}

/// A connection to `port` on localhost (IPv4, else IPv6), in the network namespace `netns`
/// (this thread joins it) or the host's.
fn connect(netns: Option<&Path>, port: u16) -> Result<std::net::TcpStream, Status> {
    if let Some(ns) = netns {
        let f = std::fs::File::open(ns).map_err(|e| {
            Status::unavailable(format!(
                "open the pod's network namespace {}: {e}",
                ns.display()
            ))
        })?;
        nix::sched::setns(&f, nix::sched::CloneFlags::CLONE_NEWNET).map_err(|e| {
            Status::internal(format!(
                "join the pod's network namespace {}: {e}",
                ns.display()
            ))
        })?;
    }
    let mut errors = Vec::new();
    for addr in [
        SocketAddr::from(([127, 0, 0, 1], port)),
        SocketAddr::from((Ipv6Addr::LOCALHOST, port)),
    ] {
        match std::net::TcpStream::connect_timeout(&addr, CONNECT_TIMEOUT) {
            Ok(s) => {
                s.set_nonblocking(true)
                    .map_err(|e| Status::internal(format!("port forward socket: {e}")))?;
                let _ = s.set_nodelay(true);
                return Ok(s);
            }
            Err(e) => errors.push(format!("{addr}: {e}")),
        }
    }
    Err(Status::unavailable(format!(
        "failed to connect to localhost:{port} {}: {}",
        if netns.is_some() {
            "inside the pod's network namespace"
        } else {
            "(host network)"
        },
        errors.join("; ")
    )))
}
