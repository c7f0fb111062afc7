//! Exec and attach sessions: the streams set up over SPDY or WebSocket, the command run on
//! the backend, and its end reported on the error stream (v4 and later: a JSON
//! `metav1.Status` with the exit code; before: the error text, nothing on success).

use super::{spdy, spdy_handshake, upgrade, ws, ws_handshake, Backend, Body, Io, Sink};
use crate::Error;
use hyper::Response;
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::sync::Arc;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::{mpsc, watch};

const V4: &str = "v4.channel.k8s.io";
const V3: &str = "v3.channel.k8s.io";
const V5: &str = "v5.channel.k8s.io";

/// What the kubelet's streaming server accepts, SPDY and WebSocket (`""`: no subprotocol,
/// binary).
const SPDY_PROTOCOLS: &[&str] = &[V4, V3, "v2.channel.k8s.io", "channel.k8s.io"];
const WS_PROTOCOLS: &[&str] = &[
    V5,
    V4,
    "v4.base64.channel.k8s.io",
    "channel.k8s.io",
    "base64.channel.k8s.io",
    "",
];

pub enum Action {
    Exec { container: String, cmd: Vec<String> },
    Attach { container: String },
}

#[derive(Debug, Clone, Copy)]
pub struct Opts {
    pub stdin: bool,
    pub stdout: bool,
    pub stderr: bool,
    pub tty: bool,
}

/// The handshake, then the session in a task of its own.
pub fn serve(
    req: &mut hyper::Request<hyper::body::Incoming>,
    websocket: bool,
    backend: Arc<dyn Backend>,
    action: Action,
    opts: Opts,
) -> Response<Body> {
    if websocket {
        match ws_handshake(req.headers(), WS_PROTOCOLS) {
            Ok((proto, resp)) => upgrade(req, resp, move |io| {
                over_websocket(backend, io, proto, action, opts)
            }),
            Err(resp) => *resp,
        }
    } else {
        match spdy_handshake(req.headers(), SPDY_PROTOCOLS) {
            Ok((proto, resp)) => upgrade(req, resp, move |io| {
                over_spdy(backend, io, proto, action, opts)
            }),
            Err(resp) => *resp,
        }
    }
}

/// How the end of the command is told.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Report {
    /// v4 and later: a JSON `metav1.Status`.
    Json,
    /// Before: the error's text; nothing on success.
    Text,
}

#[derive(Serialize)]
struct Empty {}

#[derive(Serialize)]
struct Cause {
    #[serde(skip_serializing_if = "str::is_empty")]
    reason: &'static str,
    message: String,
}

#[derive(Serialize)]
struct Details {
    causes: Vec<Cause>,
}

/// A `metav1.Status`, its fields in Go's order.
#[derive(Serialize)]
struct StatusJson {
    metadata: Empty,
    status: &'static str,
    #[serde(skip_serializing_if = "String::is_empty")]
    message: String,
    #[serde(skip_serializing_if = "str::is_empty")]
    reason: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    details: Option<Details>,
    #[serde(skip_serializing_if = "Option::is_none")]
    code: Option<i32>,
}

/// The status of a command that ended with `res` (`what` names the action for errors).
fn status(res: &Result<i32, Error>, what: &str) -> StatusJson {
    let base = StatusJson {
        metadata: Empty {},
        status: "Success",
        message: String::new(),
        reason: "",
        details: None,
        code: None,
    };
    match res {
        Ok(0) => base,
        Ok(code) => StatusJson {
            status: "Failure",
            message: format!("command terminated with non-zero exit code: exit status {code}"),
            reason: "NonZeroExitCode",
            details: Some(Details {
                causes: vec![Cause {
                    reason: "ExitCode",
                    message: code.to_string(),
                }],
            }),
            ..base
        },
        Err(e) => {
            let msg = format!("{what}: {}", e.message());
            StatusJson {
                status: "Failure",
                message: format!("Internal error occurred: {msg}"),
                reason: "InternalError",
                details: Some(Details {
                    causes: vec![Cause {
                        reason: "",
                        message: msg,
                    }],
                }),
                code: Some(500),
                ..base
            }
        }
    }
}

/// What goes on the error stream, if anything.
fn report(res: &Result<i32, Error>, what: &str, how: Report) -> Option<Vec<u8>> {
    let s = status(res, what);
    match how {
        Report::Json => Some(serde_json::to_vec(&s).expect("status JSON")),
        Report::Text if s.status == "Success" => None,
        Report::Text => Some(s.message.into_bytes()),
    }
}

/// The terminal size messages: `{"Width":80,"Height":24}`, one after the other in a byte
/// stream (so possibly split or joined).
#[derive(Default)]
pub(super) struct SizeDecoder {
    buf: Vec<u8>,
}

#[derive(Deserialize)]
struct Size {
    #[serde(rename = "Width", alias = "width", default)]
    width: u16,
    #[serde(rename = "Height", alias = "height", default)]
    height: u16,
}

impl SizeDecoder {
    pub fn push(&mut self, data: &[u8]) -> Vec<(u16, u16)> {
        self.buf.extend_from_slice(data);
        let mut out = Vec::new();
        let mut used = 0;
        let mut it = serde_json::Deserializer::from_slice(&self.buf).into_iter::<Size>();
        loop {
            match it.next() {
                Some(Ok(s)) => {
                    out.push((s.width, s.height));
                    used = it.byte_offset();
                }
                // The rest of a message is still to come.
                Some(Err(e)) if e.is_eof() => break,
                // Not a size: dropped, with whatever came with it.
                Some(Err(_)) | None => {
                    used = self.buf.len();
                    break;
                }
            }
        }
        self.buf.drain(..used);
        out
    }
}

fn sizes(mut raw: mpsc::Receiver<Vec<u8>>) -> mpsc::Receiver<(u16, u16)> {
    let (tx, rx) = mpsc::channel(4);
    tokio::spawn(async move {
        let mut dec = SizeDecoder::default();
        while let Some(b) = raw.recv().await {
            for s in dec.push(&b) {
                if tx.send(s).await.is_err() {
                    return;
                }
            }
        }
    });
    rx
}

/// Copies what the backend writes to `sink` until the backend is done (then the output ends:
/// FIN on SPDY) or the client has gone (then the backend's sender is closed).
fn output(
    sink: Option<Sink>,
    mut closed: watch::Receiver<bool>,
) -> (
    Option<mpsc::Sender<Vec<u8>>>,
    Option<tokio::task::JoinHandle<()>>,
) {
    let Some(sink) = sink else {
        return (None, None);
    };
    let (tx, mut rx) = mpsc::channel::<Vec<u8>>(16);
    let h = tokio::spawn(async move {
        loop {
            let d = tokio::select! {
                d = rx.recv() => d,
                _ = closed.wait_for(|c| *c) => None,
            };
            let Some(d) = d else { break };
            if !d.is_empty() && sink.write(&d).await.is_err() {
                break;
            }
        }
        drop(rx);
        sink.finish().await;
    });
    (Some(tx), Some(h))
}

/// The streams of a session, however they came.
struct Streams {
    stdin: Option<mpsc::Receiver<Vec<u8>>>,
    stdout: Option<Sink>,
    stderr: Option<Sink>,
    /// Raw resize messages.
    resize: Option<mpsc::Receiver<Vec<u8>>>,
    error: Sink,
    report: Report,
    closed: watch::Receiver<bool>,
}

async fn run(backend: &dyn Backend, action: Action, tty: bool, s: Streams) {
    let (stdout, h1) = output(s.stdout, s.closed.clone());
    let (stderr, h2) = output(s.stderr, s.closed.clone());
    let io = Io {
        stdin: s.stdin,
        stdout,
        stderr,
        resize: s.resize.map(sizes),
    };
    let (res, what) = match &action {
        Action::Exec { container, cmd } => (
            backend.exec(container, cmd.clone(), tty, io).await,
            "error executing command in container",
        ),
        Action::Attach { container } => {
            // As the kubelet's: an attach that ended is a success, whatever the container's
            // exit code.
            let r = backend.attach(container, tty, io).await;
            if let Ok(code) = &r {
                tracing::debug!(container = %container, exit_code = code, "attach ended");
            }
            (r.map(|_| 0), "error attaching to container")
        }
    };
    if let Err(e) = &res {
        tracing::info!("{what}: {}", e.message());
    }
    for h in [h1, h2].into_iter().flatten() {
        let _ = h.await;
    }
    if let Some(msg) = report(&res, what, s.report) {
        let _ = s.error.write(&msg).await;
    }
    s.error.finish().await;
}

async fn over_spdy<T: AsyncRead + AsyncWrite + Send + 'static>(
    backend: Arc<dyn Backend>,
    io: T,
    proto: String,
    action: Action,
    o: Opts,
) {
    let mut conn = match spdy::Conn::serve(io) {
        Ok(c) => c,
        Err(e) => {
            tracing::warn!("streaming: SPDY: {e}");
            return;
        }
    };
    let resize = o.tty && (proto == V4 || proto == V3);
    let wanted = |t: &str| match t {
        "error" => true,
        "stdin" => o.stdin,
        "stdout" => o.stdout,
        "stderr" => o.stderr,
        "resize" => resize,
        _ => false,
    };
    let expected = [true, o.stdin, o.stdout, o.stderr, resize]
        .iter()
        .filter(|x| **x)
        .count();
    let mut got: HashMap<String, spdy::Stream> = HashMap::new();
    // Streams the server never writes to: reset at the end, as the kubelet resets them all.
    let mut idle: Vec<spdy::StreamWriter> = Vec::new();
    let deadline = tokio::time::Instant::now() + super::STREAM_CREATION_TIMEOUT;
    while got.len() < expected {
        let s = tokio::select! {
            s = conn.accept() => s,
            _ = tokio::time::sleep_until(deadline) => {
                tracing::info!("streaming: timed out waiting for the client to create streams");
                conn.close().await;
                return;
            }
        };
        let Some(s) = s else { return };
        let kind = s
            .headers
            .get("streamtype")
            .unwrap_or_default()
            .to_ascii_lowercase();
        if !["error", "stdin", "stdout", "stderr", "resize"].contains(&kind.as_str()) {
            tracing::debug!(kind, "streaming: unexpected stream type");
            let _ = s.tx.reset(spdy::REFUSED_STREAM).await;
            continue;
        }
        if s.tx.reply().await.is_err() {
            return;
        }
        if wanted(&kind) && !got.contains_key(&kind) {
            got.insert(kind, s);
        } else {
            // Not asked for: accepted, and what comes on it is dropped.
            idle.push(s.tx);
        }
    }
    conn.refuse_new().await;
    let Some(error) = got.remove("error") else {
        return;
    };
    let mut input = |kind: &str| {
        got.remove(kind).map(|s| {
            idle.push(s.tx);
            s.rx
        })
    };
    let stdin = input("stdin");
    let resize = input("resize");
    let streams = Streams {
        stdin,
        stdout: got.remove("stdout").map(|s| Sink::Spdy(s.tx)),
        stderr: got.remove("stderr").map(|s| Sink::Spdy(s.tx)),
        resize,
        error: Sink::Spdy(error.tx),
        report: if proto == V4 {
            Report::Json
        } else {
            Report::Text
        },
        closed: conn.closed(),
    };
    run(&*backend, action, o.tty, streams).await;
    for w in idle {
        let _ = w.reset(spdy::CANCEL).await;
    }
    conn.close().await;
}

async fn over_websocket<T: AsyncRead + AsyncWrite + Unpin + Send + 'static>(
    backend: Arc<dyn Backend>,
    io: T,
    proto: String,
    action: Action,
    o: Opts,
) {
    let codec = if proto.contains("base64") {
        ws::Codec::Base64
    } else {
        ws::Codec::Binary
    };
    let mut routes = HashMap::new();
    let mut input = |on: bool, channel: u8| {
        on.then(|| {
            let (tx, rx) = mpsc::channel(16);
            routes.insert(channel, tx);
            rx
        })
    };
    let stdin = input(o.stdin, 0);
    let resize = input(o.tty, 4);
    let mut conn = ws::Conn::serve(io, codec, proto == V5, routes).await;
    // An empty message on the first output channel tells the client it is connected.
    let first = if o.stdout {
        1
    } else if o.stderr {
        2
    } else {
        3
    };
    let _ = conn.writer(first).write(&[]).await;
    let streams = Streams {
        stdin,
        stdout: o.stdout.then(|| Sink::Ws(conn.writer(1))),
        stderr: o.stderr.then(|| Sink::Ws(conn.writer(2))),
        resize,
        error: Sink::Ws(conn.writer(3)),
        report: if proto.starts_with("v4.") || proto.starts_with("v5.") {
            Report::Json
        } else {
            Report::Text
        },
        closed: conn.closed(),
    };
    run(&*backend, action, o.tty, streams).await;
    conn.close().await;
}

#[cfg(test)]
mod tests {
    use super::*;

    fn json(res: Result<i32, Error>) -> String {
        String::from_utf8(
            report(&res, "error executing command in container", Report::Json).unwrap(),
        )
        .unwrap()
    }

    #[test]
    fn status_json_is_metav1s() {
        assert_eq!(json(Ok(0)), r#"{"metadata":{},"status":"Success"}"#);
        assert_eq!(
            json(Ok(3)),
            r#"{"metadata":{},"status":"Failure","message":"command terminated with non-zero exit code: exit status 3","reason":"NonZeroExitCode","details":{"causes":[{"reason":"ExitCode","message":"3"}]}}"#
        );
        assert_eq!(
            json(Err(Error::failed_precondition(
                "container x is not running"
            ))),
            r#"{"metadata":{},"status":"Failure","message":"Internal error occurred: error executing command in container: container x is not running","reason":"InternalError","details":{"causes":[{"message":"error executing command in container: container x is not running"}]},"code":500}"#
        );
    }

    #[test]
    fn status_text_before_v4() {
        assert_eq!(report(&Ok(0), "x", Report::Text), None);
        assert_eq!(
            report(&Ok(2), "x", Report::Text).unwrap(),
            b"command terminated with non-zero exit code: exit status 2"
        );
        assert_eq!(
            report(
                &Err(Error::not_found("no such container")),
                "x",
                Report::Text
            )
            .unwrap(),
            b"Internal error occurred: x: no such container"
        );
    }

    #[test]
    fn sizes_split_and_joined() {
        let mut d = SizeDecoder::default();
        assert_eq!(d.push(br#"{"Width":80,"#), vec![]);
        assert_eq!(d.push(br#""Height":24}{"Width":1"#), vec![(80, 24)]);
        assert_eq!(
            d.push(b"00,\"Height\":50}\n{\"width\":7,\"height\":8}"),
            vec![(100, 50), (7, 8)]
        );
        assert_eq!(d.push(b"garbage"), vec![]);
        assert_eq!(
            d.push(br#" {"Width":3,"Height":4,"Other":1}"#),
            vec![(3, 4)]
        );
    }
}
