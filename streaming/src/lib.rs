//! The streaming server behind the CRI's Exec, Attach and PortForward: as with containerd and
//! CRI-O, those RPCs only answer a URL on this HTTP server; the kubelet (or a client it
//! redirects) then connects there and speaks the Kubernetes streaming protocols:
//!
//! - remote commands (exec, attach) over SPDY/3.1 (`v4.channel.k8s.io` down to
//!   `channel.k8s.io`, one SPDY stream each for error, stdin, stdout, stderr and resize) or
//!   over WebSocket (`v5.channel.k8s.io`, `v4.channel.k8s.io`, `channel.k8s.io` and their
//!   base64 variants, one channel byte in front of each message);
//! - port forwarding over SPDY (`portforward.k8s.io`, a data and an error stream per
//!   forwarded connection) or WebSocket (`v4.channel.k8s.io`, two channels per port).
//!
//! What a URL does is fixed by the CRI request it was made for, which waits behind a random
//! single-use token for at most a minute (see [`cache`]): `http://<addr>/exec/<token>`,
//! `/attach/<token>`, `/portforward/<token>`. Unknown, used and expired tokens are 404.
//! The containers and pods themselves are reached through a [`Backend`].

mod cache;
mod dictionary;
mod portforward;
mod remotecommand;
mod request;
pub mod spdy;
pub mod ws;

pub use cache::TOKEN_TTL;
pub use request::{AttachRequest, Code, Error, ExecRequest, PortForwardRequest};

use bytes::Bytes;
use cache::{Cache, Request};
use http_body_util::Full;
use hyper::header::{HeaderMap, HeaderValue};
use hyper::{Method, Response, StatusCode};
use hyper_util::rt::TokioIo;
use std::io;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::mpsc;

/// The client's side of a remote command.
pub struct Io {
    /// What the client types; closed = EOF.
    pub stdin: Option<mpsc::Receiver<Vec<u8>>>,
    /// With a terminal everything goes to stdout. Closed when the client has gone.
    pub stdout: Option<mpsc::Sender<Vec<u8>>>,
    pub stderr: Option<mpsc::Sender<Vec<u8>>>,
    /// Terminal sizes (width, height) the client sends.
    pub resize: Option<mpsc::Receiver<(u16, u16)>>,
}

/// What the streaming server runs its requests on.
#[async_trait::async_trait]
pub trait Backend: Send + Sync + 'static {
    /// Runs `cmd` in the container with the client's stdio until it exits; its exit code.
    async fn exec(
        &self,
        container_id: &str,
        cmd: Vec<String>,
        tty: bool,
        io: Io,
    ) -> Result<i32, Error>;
    /// Connects the client to the container's own stdio until it exits (its exit code) or
    /// the client detaches (0).
    async fn attach(&self, container_id: &str, tty: bool, io: Io) -> Result<i32, Error>;
    /// A connection to `port` on the pod's loopback, inside its network namespace.
    async fn port_forward(
        &self,
        pod_sandbox_id: &str,
        port: u16,
    ) -> Result<tokio::net::TcpStream, Error>;
}

/// Where a stream's output goes: a SPDY stream or a WebSocket channel.
#[derive(Clone)]
enum Sink {
    Spdy(spdy::StreamWriter),
    Ws(ws::ChannelWriter),
}

impl Sink {
    async fn write(&self, data: &[u8]) -> io::Result<()> {
        match self {
            Sink::Spdy(w) => w.write(data).await,
            Sink::Ws(w) => w.write(data).await,
        }
    }

    /// The end of this output: FIN on a SPDY stream (a WebSocket channel just stops).
    async fn finish(&self) {
        if let Sink::Spdy(w) = self {
            let _ = w.close().await;
        }
    }
}

/// The streaming server: serves its URLs in a task of its own.
pub struct Server {
    addr: SocketAddr,
    backend: Arc<dyn Backend>,
    cache: Mutex<Cache>,
}

type Body = Full<Bytes>;

fn plain(status: StatusCode, msg: &str) -> Response<Body> {
    let mut r = Response::new(Full::new(Bytes::from(format!("{msg}\n"))));
    *r.status_mut() = status;
    r.headers_mut().insert(
        hyper::header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    r.headers_mut().insert(
        "x-content-type-options",
        HeaderValue::from_static("nosniff"),
    );
    r
}

fn not_found() -> Response<Body> {
    plain(StatusCode::NOT_FOUND, "404 page not found")
}

fn bad_request(msg: &str) -> Response<Body> {
    plain(StatusCode::BAD_REQUEST, msg)
}

/// Every value of header `name`, comma-separated lists split, trimmed, empty ones dropped.
fn header_values(h: &HeaderMap, name: &str) -> Vec<String> {
    h.get_all(name)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(|v| v.trim().to_string())
        .filter(|v| !v.is_empty())
        .collect()
}

fn has_token(h: &HeaderMap, name: &str, token: &str) -> bool {
    header_values(h, name)
        .iter()
        .any(|v| v.eq_ignore_ascii_case(token))
}

fn is_websocket(h: &HeaderMap) -> bool {
    h.get(hyper::header::UPGRADE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.trim().eq_ignore_ascii_case("websocket"))
        && has_token(h, "connection", "upgrade")
}

fn switching(headers: &[(&'static str, &str)]) -> Response<Body> {
    let mut r = Response::new(Full::new(Bytes::new()));
    *r.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
    for (n, v) in headers {
        if let Ok(v) = HeaderValue::from_str(v) {
            r.headers_mut().append(*n, v);
        }
    }
    r
}

/// The SPDY upgrade: the first protocol of the client's (`X-Stream-Protocol-Version`, in its
/// order of preference) that `server` has, and the 101 answer; or the error answer.
fn spdy_handshake(
    h: &HeaderMap,
    server: &[&'static str],
) -> Result<(String, Response<Body>), Box<Response<Body>>> {
    let client = header_values(h, "x-stream-protocol-version");
    if client.is_empty() {
        return Err(Box::new(bad_request(
            "unable to upgrade: X-Stream-Protocol-Version is required",
        )));
    }
    let Some(proto) = client.iter().find(|c| server.contains(&c.as_str())) else {
        let mut r = plain(
            StatusCode::FORBIDDEN,
            &format!(
                "unable to upgrade: unable to negotiate protocol: client supports {client:?}, \
                 server accepts {server:?}"
            ),
        );
        for s in server {
            r.headers_mut().append(
                "x-accepted-stream-protocol-versions",
                HeaderValue::from_static(s),
            );
        }
        return Err(Box::new(r));
    };
    let upgrade = h
        .get(hyper::header::UPGRADE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_ascii_lowercase();
    if !has_token(h, "connection", "upgrade") || !upgrade.contains("spdy/3.1") {
        return Err(Box::new(bad_request(
            "unable to upgrade: missing upgrade headers in request",
        )));
    }
    let resp = switching(&[
        ("connection", "Upgrade"),
        ("upgrade", "SPDY/3.1"),
        ("x-stream-protocol-version", proto),
    ]);
    Ok((proto.clone(), resp))
}

/// The WebSocket upgrade: the first subprotocol of the client's that `server` has (`""`, no
/// subprotocol, when the client offers none), and the 101 answer; or the error answer.
fn ws_handshake(
    h: &HeaderMap,
    server: &[&str],
) -> Result<(String, Response<Body>), Box<Response<Body>>> {
    if h.get("sec-websocket-version").and_then(|v| v.to_str().ok()) != Some("13") {
        let mut r = bad_request("unsupported WebSocket version (13 is)");
        r.headers_mut()
            .insert("sec-websocket-version", HeaderValue::from_static("13"));
        return Err(Box::new(r));
    }
    let Some(key) = h.get("sec-websocket-key").and_then(|v| v.to_str().ok()) else {
        return Err(Box::new(bad_request("missing Sec-WebSocket-Key")));
    };
    let mut client = header_values(h, "sec-websocket-protocol");
    if client.is_empty() {
        client.push(String::new());
    }
    let Some(proto) = client.iter().find(|c| server.contains(&c.as_str())) else {
        return Err(Box::new(plain(
            StatusCode::FORBIDDEN,
            &format!("requested protocol(s) are not supported: {client:?}; supports {server:?}"),
        )));
    };
    let accept = ws::accept_key(key);
    let mut headers = vec![
        ("upgrade", "websocket"),
        ("connection", "Upgrade"),
        ("sec-websocket-accept", accept.as_str()),
    ];
    if !proto.is_empty() {
        headers.push(("sec-websocket-protocol", proto.as_str()));
    }
    Ok((proto.clone(), switching(&headers)))
}

/// The values of `key` in a query string (percent-decoded).
fn query_values(query: &str, key: &str) -> Vec<String> {
    fn hex(c: u8) -> Option<u8> {
        (c as char).to_digit(16).map(|d| d as u8)
    }
    fn decode(s: &str) -> String {
        let b = s.as_bytes();
        let mut out = Vec::with_capacity(b.len());
        let mut i = 0;
        while i < b.len() {
            match b[i] {
                b'+' => out.push(b' '),
                b'%' if i + 2 < b.len() => match (hex(b[i + 1]), hex(b[i + 2])) {
                    (Some(h), Some(l)) => {
                        out.push(h << 4 | l);
                        i += 2;
                    }
                    _ => out.push(b'%'),
                },
                c => out.push(c),
            }
            i += 1;
        }
        String::from_utf8_lossy(&out).into_owned()
    }
    query
        .split('&')
        .filter_map(|kv| {
            let (k, v) = kv.split_once('=').unwrap_or((kv, ""));
            (decode(k) == key).then(|| decode(v))
        })
        .collect()
}

/// The ports of a WebSocket port forward's query (`port=80&port=443` or `port=80,443`).
fn query_ports(query: &str) -> Result<Vec<u16>, String> {
    let values = query_values(query, "port");
    if values.is_empty() {
        return Err("query parameter \"port\" is required".into());
    }
    let mut ports = Vec::new();
    for v in values {
        if v.is_empty() {
            return Err("query parameter \"port\" cannot be empty".into());
        }
        for p in v.split(',') {
            match p.parse::<u16>() {
                Ok(0) => return Err(format!("port {v:?} must be > 0")),
                Ok(n) => ports.push(n),
                Err(e) => return Err(format!("unable to parse {v:?} as a port: {e}")),
            }
        }
    }
    Ok(ports)
}

fn validate_stdio(
    container_id: &str,
    stdin: bool,
    stdout: bool,
    stderr: bool,
    tty: bool,
) -> Result<(), Error> {
    if container_id.is_empty() {
        return Err(Error::invalid_argument("missing required container_id"));
    }
    if tty && stderr {
        // A terminal has one output: stderr cannot be told apart from stdout.
        return Err(Error::invalid_argument(
            "tty and stderr cannot both be true",
        ));
    }
    if !stdin && !stdout && !stderr {
        return Err(Error::invalid_argument(
            "one of stdin, stdout, or stderr must be set",
        ));
    }
    Ok(())
}

/// How long a client may take to open the streams of a request (the kubelet's default).
const STREAM_CREATION_TIMEOUT: Duration = Duration::from_secs(30);

impl Server {
    /// Listens on `addr` (port 0: any free port) and serves there from a task of the current
    /// tokio runtime (it must be called inside one).
    pub fn bind(addr: SocketAddr, backend: Arc<dyn Backend>) -> io::Result<Arc<Server>> {
        Self::bind_with_ttl(addr, backend, TOKEN_TTL)
    }

    /// [`Server::bind`] with tokens good for `ttl`.
    pub fn bind_with_ttl(
        addr: SocketAddr,
        backend: Arc<dyn Backend>,
        ttl: Duration,
    ) -> io::Result<Arc<Server>> {
        let std_listener = std::net::TcpListener::bind(addr)?;
        std_listener.set_nonblocking(true)?;
        let listener = tokio::net::TcpListener::from_std(std_listener)?;
        let server = Arc::new(Server {
            addr: listener.local_addr()?,
            backend,
            cache: Mutex::new(Cache::new(ttl)),
        });
        tokio::spawn(server.clone().accept_loop(listener));
        Ok(server)
    }

    /// The address served (with the port picked when 0 was asked for).
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    fn url(&self, r: Request) -> Result<String, Error> {
        let kind = match &r {
            Request::Exec(_) => "exec",
            Request::Attach(_) => "attach",
            Request::PortForward(_) => "portforward",
        };
        let token = self
            .cache
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(r)?;
        Ok(format!("http://{}/{kind}/{token}", self.addr))
    }

    /// The URL that runs this exec (validated as the kubelet validates it).
    pub fn exec_url(&self, r: ExecRequest) -> Result<String, Error> {
        validate_stdio(&r.container_id, r.stdin, r.stdout, r.stderr, r.tty)?;
        if r.cmd.is_empty() {
            return Err(Error::invalid_argument("missing required cmd"));
        }
        self.url(Request::Exec(r))
    }

    pub fn attach_url(&self, r: AttachRequest) -> Result<String, Error> {
        validate_stdio(&r.container_id, r.stdin, r.stdout, r.stderr, r.tty)?;
        self.url(Request::Attach(r))
    }

    pub fn port_forward_url(&self, r: PortForwardRequest) -> Result<String, Error> {
        if r.pod_sandbox_id.is_empty() {
            return Err(Error::invalid_argument("missing required pod_sandbox_id"));
        }
        if let Some(p) = r.port.iter().find(|p| !(1..=65535).contains(*p)) {
            return Err(Error::invalid_argument(format!("invalid port {p}")));
        }
        self.url(Request::PortForward(r))
    }

    async fn accept_loop(self: Arc<Self>, listener: tokio::net::TcpListener) {
        tracing::info!(address = %self.addr, "streaming server ready");
        loop {
            let (tcp, peer) = match listener.accept().await {
                Ok(x) => x,
                Err(e) => {
                    // Out of descriptors, usually: try again a little later.
                    tracing::warn!("streaming server: accept: {e}");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            };
            let _ = tcp.set_nodelay(true);
            let me = self.clone();
            tokio::spawn(async move {
                let svc = hyper::service::service_fn(move |req| {
                    let me = me.clone();
                    async move { Ok::<_, std::convert::Infallible>(me.handle(req).await) }
                });
                let conn = hyper::server::conn::http1::Builder::new()
                    .timer(hyper_util::rt::TokioTimer::new())
                    .header_read_timeout(Duration::from_secs(30))
                    .serve_connection(TokioIo::new(tcp), svc)
                    .with_upgrades();
                if let Err(e) = conn.await {
                    tracing::debug!(%peer, "streaming server: {e}");
                }
            });
        }
    }

    async fn handle(&self, mut req: hyper::Request<hyper::body::Incoming>) -> Response<Body> {
        let path = req.uri().path().to_string();
        let Some((kind, token)) = path.strip_prefix('/').and_then(|p| p.split_once('/')) else {
            return not_found();
        };
        if !matches!(kind, "exec" | "attach" | "portforward")
            || token.is_empty()
            || token.contains('/')
        {
            return not_found();
        }
        if req.method() != Method::GET && req.method() != Method::POST {
            return plain(StatusCode::METHOD_NOT_ALLOWED, "405: Method Not Allowed");
        }
        let cached = self
            .cache
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .consume(token);
        let query = req.uri().query().unwrap_or("").to_string();
        let websocket = is_websocket(req.headers());
        let backend = self.backend.clone();
        match (kind, cached) {
            ("exec", Some(Request::Exec(r))) => {
                let opts = remotecommand::Opts {
                    stdin: r.stdin,
                    stdout: r.stdout,
                    stderr: r.stderr,
                    tty: r.tty,
                };
                let action = remotecommand::Action::Exec {
                    container: r.container_id,
                    cmd: r.cmd,
                };
                remotecommand::serve(&mut req, websocket, backend, action, opts)
            }
            ("attach", Some(Request::Attach(r))) => {
                let opts = remotecommand::Opts {
                    stdin: r.stdin,
                    stdout: r.stdout,
                    stderr: r.stderr,
                    tty: r.tty,
                };
                let action = remotecommand::Action::Attach {
                    container: r.container_id,
                };
                remotecommand::serve(&mut req, websocket, backend, action, opts)
            }
            ("portforward", Some(Request::PortForward(r))) => {
                portforward::serve(&mut req, websocket, &query, backend, r)
            }
            _ => not_found(),
        }
    }
}

/// Answers `resp` (a 101) and runs `session` on the connection once hyper has switched it.
fn upgrade<F, Fut>(
    req: &mut hyper::Request<hyper::body::Incoming>,
    resp: Response<Body>,
    session: F,
) -> Response<Body>
where
    F: FnOnce(TokioIo<hyper::upgrade::Upgraded>) -> Fut + Send + 'static,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    let on = hyper::upgrade::on(req);
    tokio::spawn(async move {
        match on.await {
            Ok(up) => session(TokioIo::new(up)).await,
            Err(e) => tracing::debug!("streaming server: upgrade: {e}"),
        }
    });
    resp
}

/// A streaming connection's two tasks: one reads what the client sends, one writes to it.
/// Both are stopped when dropped.
pub(crate) struct Pumps {
    pub reader: tokio::task::JoinHandle<()>,
    pub writer: tokio::task::JoinHandle<()>,
}

impl Pumps {
    /// How long a closing connection waits for the client to close its side.
    const LINGER: Duration = Duration::from_secs(5);

    /// Once the writer has been told to close: waits for it to send what is queued, then (at
    /// most [`Self::LINGER`]) for the client's side to end, so that nothing the client still
    /// sends resets the connection before it has read ours.
    pub async fn finish(&mut self) {
        let _ = (&mut self.writer).await;
        let _ = tokio::time::timeout(Self::LINGER, &mut self.reader).await;
        self.reader.abort();
    }
}

impl Drop for Pumps {
    fn drop(&mut self) {
        self.reader.abort();
        self.writer.abort();
    }
}

#[cfg(test)]
mod tests;
