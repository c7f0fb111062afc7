//! Port forwarding sessions. Over SPDY (`portforward.k8s.io`) the client opens a data and an
//! error stream per forwarded connection, paired by their `requestID` header and naming the
//! port in a `port` header. Over WebSocket (`v4.channel.k8s.io`) each port of the request has
//! a data channel (2n) and an error channel (2n+1), each opened by the port in two
//! little-endian bytes.

use super::{spdy, spdy_handshake, upgrade, ws, ws_handshake, Backend, Body, Sink};
use crate::request::PortForwardRequest;
use hyper::Response;
use std::collections::HashMap;
use std::sync::Arc;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::{mpsc, watch};
use tokio::task::JoinSet;
use tokio::time::Instant;

const SPDY_PROTOCOLS: &[&str] = &["portforward.k8s.io"];
const WS_PROTOCOLS: &[&str] = &["v4.channel.k8s.io", "v4.base64.channel.k8s.io", ""];

/// WebSocket channels are numbered by a byte, two per port.
const MAX_WS_PORTS: usize = 127;

pub fn serve(
    req: &mut hyper::Request<hyper::body::Incoming>,
    websocket: bool,
    query: &str,
    backend: Arc<dyn Backend>,
    r: PortForwardRequest,
) -> Response<Body> {
    let pod = r.pod_sandbox_id;
    // The ports the CRI request named (validated when the URL was made).
    let requested: Vec<u16> = r.port.iter().map(|p| *p as u16).collect();
    if websocket {
        // The kubelet's own requests name the ports; a client given the URL may name them
        // in the query instead.
        let ports = if requested.is_empty() {
            match super::query_ports(query) {
                Ok(p) => p,
                Err(e) => return super::bad_request(&e),
            }
        } else {
            requested
        };
        if ports.len() > MAX_WS_PORTS {
            return super::bad_request(&format!("at most {MAX_WS_PORTS} ports"));
        }
        match ws_handshake(req.headers(), WS_PROTOCOLS) {
            Ok((proto, resp)) => upgrade(req, resp, move |io| {
                over_websocket(backend, io, proto, pod, ports)
            }),
            Err(resp) => *resp,
        }
    } else {
        match spdy_handshake(req.headers(), SPDY_PROTOCOLS) {
            Ok((_, resp)) => upgrade(req, resp, move |io| over_spdy(backend, io, pod, requested)),
            Err(resp) => *resp,
        }
    }
}

/// The client's side of one forwarded connection.
struct Ends {
    from_client: mpsc::Receiver<Vec<u8>>,
    to_client: Sink,
    error: Sink,
    /// Becomes true when the client resets the stream or goes away.
    stop: watch::Receiver<bool>,
}

/// Forwards one connection: `port` of the pod to and from the client, until the pod's side
/// ends (as containerd's does) or the client stops it. Failures are written to the error
/// stream as the kubelet words them.
async fn forward(
    backend: Arc<dyn Backend>,
    pod: String,
    port: u16,
    allowed: Arc<Vec<u16>>,
    ends: Ends,
) {
    let Ends {
        mut from_client,
        to_client,
        error,
        mut stop,
    } = ends;
    let conn = if !allowed.is_empty() && !allowed.contains(&port) {
        Err(crate::Error::permission_denied(format!(
            "port {port} is not one of the ports of the request"
        )))
    } else {
        tokio::select! {
            c = backend.port_forward(&pod, port) => c,
            _ = stop.wait_for(|s| *s) => return,
        }
    };
    let tcp = match conn {
        Ok(c) => c,
        Err(e) => {
            let msg = format!(
                "error forwarding port {port} to pod {pod}, uid : {}",
                e.message()
            );
            tracing::info!("{msg}");
            let _ = error.write(msg.as_bytes()).await;
            to_client.finish().await;
            error.finish().await;
            return;
        }
    };
    let (mut rd, mut wr) = tcp.into_split();
    let up = tokio::spawn(async move {
        while let Some(d) = from_client.recv().await {
            if wr.write_all(&d).await.is_err() {
                return;
            }
        }
        // The client sends no more: so the pod's side learns. (The socket stays open for
        // the other way until the read half goes.)
        let _ = wr.shutdown().await;
    });
    let down = async {
        let mut buf = vec![0u8; 32 * 1024];
        loop {
            match rd.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    if to_client.write(&buf[..n]).await.is_err() {
                        break;
                    }
                }
            }
        }
    };
    tokio::select! {
        _ = down => {}
        _ = stop.wait_for(|s| *s) => {}
    }
    up.abort();
    to_client.finish().await;
    error.finish().await;
}

struct Pair {
    data: Option<spdy::Stream>,
    error: Option<spdy::Stream>,
    since: Instant,
}

async fn over_spdy<T: AsyncRead + AsyncWrite + Send + 'static>(
    backend: Arc<dyn Backend>,
    io: T,
    pod: String,
    requested: Vec<u16>,
) {
    let mut conn = match spdy::Conn::serve(io) {
        Ok(c) => c,
        Err(e) => {
            tracing::warn!("streaming: SPDY: {e}");
            return;
        }
    };
    let allowed = Arc::new(requested);
    let mut pairs: HashMap<String, Pair> = HashMap::new();
    let mut forwards = JoinSet::new();
    loop {
        let expiry = pairs
            .values()
            .map(|p| p.since + super::STREAM_CREATION_TIMEOUT)
            .min();
        let s = tokio::select! {
            s = conn.accept() => s,
            Some(_) = forwards.join_next(), if !forwards.is_empty() => continue,
            _ = tokio::time::sleep_until(expiry.unwrap_or_else(Instant::now)), if expiry.is_some() => {
                let now = Instant::now();
                let late: Vec<String> = pairs
                    .iter()
                    .filter(|(_, p)| p.since + super::STREAM_CREATION_TIMEOUT <= now)
                    .map(|(k, _)| k.clone())
                    .collect();
                for k in late {
                    let p = pairs.remove(&k).expect("listed");
                    if let Some(e) = p.error {
                        let _ = e.tx.write(format!("timed out waiting for streams of request {k}").as_bytes()).await;
                        let _ = e.tx.close().await;
                    }
                    if let Some(d) = p.data {
                        let _ = d.tx.reset(spdy::CANCEL).await;
                    }
                }
                continue;
            }
        };
        let Some(s) = s else { break };
        let port = match s.headers.get("port").map(|p| p.parse::<u16>()) {
            Some(Ok(p)) if p > 0 => p,
            _ => {
                tracing::debug!("streaming: port forward stream without a valid port header");
                let _ = s.tx.reset(spdy::PROTOCOL_ERROR).await;
                continue;
            }
        };
        let kind = s
            .headers
            .get("streamtype")
            .unwrap_or_default()
            .to_ascii_lowercase();
        if kind != "data" && kind != "error" {
            let _ = s.tx.reset(spdy::PROTOCOL_ERROR).await;
            continue;
        }
        // Old clients send no request id: their data stream follows its error stream.
        let id = match s.headers.get("requestid").filter(|r| !r.is_empty()) {
            Some(r) => r.to_string(),
            None if kind == "error" => s.id.to_string(),
            None => s.id.saturating_sub(2).to_string(),
        };
        if s.tx.reply().await.is_err() {
            break;
        }
        let p = pairs.entry(id.clone()).or_insert_with(|| Pair {
            data: None,
            error: None,
            since: Instant::now(),
        });
        let slot = if kind == "data" {
            &mut p.data
        } else {
            &mut p.error
        };
        if slot.is_some() {
            let msg = format!("{kind} stream already assigned for request {id}");
            if let Some(e) = &p.error {
                let _ = e.tx.write(msg.as_bytes()).await;
            }
            let _ = s.tx.reset(spdy::PROTOCOL_ERROR).await;
            continue;
        }
        *slot = Some(s);
        if p.data.is_some() && p.error.is_some() {
            let p = pairs.remove(&id).expect("just there");
            let (data, error) = (p.data.expect("complete"), p.error.expect("complete"));
            let port = data
                .headers
                .get("port")
                .and_then(|p| p.parse().ok())
                .unwrap_or(port);
            // The client sends nothing on the error stream.
            drop(error.rx);
            let ends = Ends {
                from_client: data.rx,
                to_client: Sink::Spdy(data.tx),
                error: Sink::Spdy(error.tx),
                stop: data.reset,
            };
            forwards.spawn(forward(
                backend.clone(),
                pod.clone(),
                port,
                allowed.clone(),
                ends,
            ));
        }
    }
    // The client has gone: so have the streams of the forwards.
    while forwards.join_next().await.is_some() {}
    conn.close().await;
}

async fn over_websocket<T: AsyncRead + AsyncWrite + Unpin + Send + 'static>(
    backend: Arc<dyn Backend>,
    io: T,
    proto: String,
    pod: String,
    ports: Vec<u16>,
) {
    let codec = if proto.contains("base64") {
        ws::Codec::Base64
    } else {
        ws::Codec::Binary
    };
    let mut routes = HashMap::new();
    let mut inputs = Vec::new();
    for i in 0..ports.len() {
        let (tx, rx) = mpsc::channel(16);
        routes.insert((2 * i) as u8, tx);
        inputs.push(rx);
    }
    let mut conn = ws::Conn::serve(io, codec, false, routes).await;
    let mut forwards = JoinSet::new();
    let allowed = Arc::new(Vec::new());
    for (i, (port, rx)) in ports.iter().zip(inputs).enumerate() {
        let data = conn.writer((2 * i) as u8);
        let error = conn.writer((2 * i + 1) as u8);
        let le = port.to_le_bytes();
        let _ = data.write(&le).await;
        let _ = error.write(&le).await;
        let ends = Ends {
            from_client: rx,
            to_client: Sink::Ws(data),
            error: Sink::Ws(error),
            stop: conn.closed(),
        };
        forwards.spawn(forward(
            backend.clone(),
            pod.clone(),
            *port,
            allowed.clone(),
            ends,
        ));
    }
    while forwards.join_next().await.is_some() {}
    conn.close().await;
}
