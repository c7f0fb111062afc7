//! The server over real TCP and HTTP, with a backend of the tests' own: tokens, handshakes,
//! the SPDY and WebSocket sessions and the statuses they end with. (berthd's backend, with
//! real containers and the clients kubectl uses, is tested in cri/tests/cri_streaming.rs.)

use super::*;
use futures_util::{SinkExt, StreamExt};
use spdy::{Frame, Headers};
use std::sync::atomic::{AtomicBool, Ordering};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::Message;

#[test]
fn ports_from_the_query() {
    assert_eq!(
        query_ports("port=80&port=8080,9090").unwrap(),
        vec![80, 8080, 9090]
    );
    assert_eq!(query_ports("a=1&port=%38%30").unwrap(), vec![80]);
    assert!(query_ports("").is_err());
    assert!(query_ports("port=").is_err());
    assert!(query_ports("port=0").is_err());
    assert!(query_ports("port=70000").is_err());
    assert_eq!(
        query_values("command=sh&command=-c&command=echo+hi%21%", "command"),
        vec!["sh", "-c", "echo hi!%"]
    );
}

/// Commands: `exit N` (writes out/err, exits N), `cat` (stdin to stdout), `size` (the first
/// terminal size), `fail` (an error), `hang` (until the client goes).
struct Fake {
    gone: AtomicBool,
    echo_port: u16,
}

#[async_trait::async_trait]
impl Backend for Fake {
    async fn exec(
        &self,
        container_id: &str,
        cmd: Vec<String>,
        _tty: bool,
        mut io: Io,
    ) -> Result<i32, Error> {
        assert_eq!(container_id, "c1");
        let out = io.stdout.clone();
        let send = |to: &Option<mpsc::Sender<Vec<u8>>>, d: &[u8]| {
            let to = to.clone();
            let d = d.to_vec();
            async move {
                if let Some(t) = to {
                    let _ = t.send(d).await;
                }
            }
        };
        match cmd[0].as_str() {
            "exit" => {
                send(&io.stdout, b"out\n").await;
                send(&io.stderr, b"err\n").await;
                Ok(cmd[1].parse().unwrap())
            }
            "cat" => {
                let mut stdin = io.stdin.take().unwrap();
                while let Some(d) = stdin.recv().await {
                    send(&out, &d).await;
                }
                Ok(0)
            }
            "size" => {
                let (w, h) = io.resize.as_mut().unwrap().recv().await.unwrap();
                send(&out, format!("{w}x{h}").as_bytes()).await;
                Ok(0)
            }
            "fail" => Err(Error::not_found("no such thing")),
            "hang" => {
                out.unwrap().closed().await;
                self.gone.store(true, Ordering::SeqCst);
                Ok(137)
            }
            c => panic!("{c}"),
        }
    }

    async fn attach(&self, c: &str, tty: bool, io: Io) -> Result<i32, Error> {
        self.exec(c, vec!["cat".into()], tty, io).await.map(|_| 3)
    }

    async fn port_forward(&self, pod: &str, port: u16) -> Result<TcpStream, Error> {
        assert_eq!(pod, "p1");
        if port != 80 {
            return Err(Error::unavailable("connection refused"));
        }
        TcpStream::connect(("127.0.0.1", self.echo_port))
            .await
            .map_err(|e| Error::unavailable(e.to_string()))
    }
}

/// A server on a free loopback port, and a TCP server there that answers each connection
/// with "echo: " and what it read until EOF.
async fn server(ttl: Duration) -> (Arc<Server>, Arc<Fake>) {
    let echo = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let echo_port = echo.local_addr().unwrap().port();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = echo.accept().await {
            tokio::spawn(async move {
                let mut got = Vec::new();
                let _ = s.read_to_end(&mut got).await;
                let _ = s.write_all(&[b"echo: ", &got[..]].concat()).await;
            });
        }
    });
    let fake = Arc::new(Fake {
        gone: AtomicBool::new(false),
        echo_port,
    });
    let s = Server::bind_with_ttl("127.0.0.1:0".parse().unwrap(), fake.clone(), ttl).unwrap();
    (s, fake)
}

fn exec_req(cmd: &[&str], stdin: bool, stdout: bool, stderr: bool, tty: bool) -> ExecRequest {
    ExecRequest {
        container_id: "c1".into(),
        cmd: cmd.iter().map(|s| s.to_string()).collect(),
        tty,
        stdin,
        stdout,
        stderr,
    }
}

/// The path of a URL of ours.
fn path(url: &str) -> String {
    let rest = url.strip_prefix("http://").unwrap();
    rest[rest.find('/').unwrap()..].to_string()
}

/// Sends a request; the status, the header block, and the connection.
async fn request(
    s: &Server,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
) -> (u16, String, TcpStream) {
    let mut tcp = TcpStream::connect(s.addr()).await.unwrap();
    let mut req = format!("{method} {path} HTTP/1.1\r\nHost: {}\r\n", s.addr());
    for (n, v) in headers {
        req.push_str(&format!("{n}: {v}\r\n"));
    }
    req.push_str("\r\n");
    tcp.write_all(req.as_bytes()).await.unwrap();
    let mut head = Vec::new();
    while !head.ends_with(b"\r\n\r\n") {
        let mut b = [0u8];
        assert_eq!(tcp.read(&mut b).await.unwrap(), 1, "{head:?}");
        head.push(b[0]);
    }
    let head = String::from_utf8(head).unwrap();
    let status = head[9..12].parse().unwrap();
    (status, head.to_ascii_lowercase(), tcp)
}

const SPDY_V4: &[(&str, &str)] = &[
    ("Connection", "Upgrade"),
    ("Upgrade", "SPDY/3.1"),
    ("X-Stream-Protocol-Version", "v4.channel.k8s.io"),
    ("X-Stream-Protocol-Version", "v3.channel.k8s.io"),
];

#[tokio::test]
async fn tokens_are_single_use_and_expire() {
    let (s, _) = server(Duration::from_millis(300)).await;
    let url = s
        .exec_url(exec_req(&["exit", "0"], false, true, false, false))
        .unwrap();
    assert!(
        url.starts_with(&format!("http://{}/exec/", s.addr())),
        "{url}"
    );
    // Unknown token, unknown path, wrong kind (the token is used up by it too).
    for p in ["/exec/nosuch", "/", "/exec/", "/other/x"] {
        assert_eq!(request(&s, "GET", p, &[]).await.0, 404, "{p}");
    }
    let attach_path = path(&url).replace("/exec/", "/attach/");
    assert_eq!(request(&s, "GET", &attach_path, &[]).await.0, 404);
    assert_eq!(request(&s, "GET", &path(&url), SPDY_V4).await.0, 404);
    // Used once: then 404. A plain request (no upgrade) uses it too.
    let url = s
        .exec_url(exec_req(&["exit", "0"], false, true, false, false))
        .unwrap();
    assert_eq!(request(&s, "GET", &path(&url), SPDY_V4).await.0, 101);
    assert_eq!(request(&s, "GET", &path(&url), SPDY_V4).await.0, 404);
    // Expired.
    let url = s
        .exec_url(exec_req(&["exit", "0"], false, true, false, false))
        .unwrap();
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert_eq!(request(&s, "GET", &path(&url), SPDY_V4).await.0, 404);
    let url = s
        .exec_url(exec_req(&["exit", "0"], false, true, false, false))
        .unwrap();
    assert_eq!(request(&s, "DELETE", &path(&url), SPDY_V4).await.0, 405);
}

#[tokio::test]
async fn requests_are_validated_as_the_kubelet_does() {
    let (s, _) = server(TOKEN_TTL).await;
    let code = |r: Result<String, Error>| r.unwrap_err().code();
    let inv = crate::Code::InvalidArgument;
    assert_eq!(
        code(s.exec_url(exec_req(&[], false, true, false, false))),
        inv
    );
    assert_eq!(
        code(s.exec_url(exec_req(&["sh"], false, true, true, true))),
        inv
    );
    assert_eq!(
        code(s.exec_url(exec_req(&["sh"], false, false, false, false))),
        inv
    );
    let mut r = exec_req(&["sh"], false, true, false, false);
    r.container_id.clear();
    assert_eq!(code(s.exec_url(r)), inv);
    let a = AttachRequest {
        container_id: "c1".into(),
        stdin: true,
        tty: true,
        stderr: true,
        stdout: true,
    };
    assert_eq!(code(s.attach_url(a)), inv);
    let pf = |pod: &str, port: Vec<i32>| PortForwardRequest {
        pod_sandbox_id: pod.into(),
        port,
    };
    assert_eq!(code(s.port_forward_url(pf("", vec![]))), inv);
    assert_eq!(code(s.port_forward_url(pf("p1", vec![0]))), inv);
    assert_eq!(code(s.port_forward_url(pf("p1", vec![70000]))), inv);
    assert!(s.port_forward_url(pf("p1", vec![80])).is_ok());
}

#[tokio::test]
async fn spdy_protocol_negotiation() {
    let (s, _) = server(TOKEN_TTL).await;
    let url = || {
        s.exec_url(exec_req(&["exit", "0"], false, true, false, false))
            .unwrap()
    };
    let (st, _, _) = request(
        &s,
        "POST",
        &path(&url()),
        &[("Connection", "Upgrade"), ("Upgrade", "SPDY/3.1")],
    )
    .await;
    assert_eq!(st, 400);
    let (st, head, _) = request(
        &s,
        "POST",
        &path(&url()),
        &[
            ("Connection", "Upgrade"),
            ("Upgrade", "SPDY/3.1"),
            ("X-Stream-Protocol-Version", "v9.channel.k8s.io"),
        ],
    )
    .await;
    assert_eq!(st, 403);
    assert!(
        head.contains("x-accepted-stream-protocol-versions: v4.channel.k8s.io"),
        "{head}"
    );
    let (st, _, _) = request(
        &s,
        "POST",
        &path(&url()),
        &[("X-Stream-Protocol-Version", "v4.channel.k8s.io")],
    )
    .await;
    assert_eq!(st, 400, "no upgrade headers");
    // The client's order of preference wins.
    let (st, head, _) = request(
        &s,
        "POST",
        &path(&url()),
        &[
            ("Connection", "Upgrade"),
            ("Upgrade", "SPDY/3.1"),
            (
                "X-Stream-Protocol-Version",
                "v2.channel.k8s.io, v4.channel.k8s.io",
            ),
        ],
    )
    .await;
    assert_eq!(st, 101);
    assert!(
        head.contains("x-stream-protocol-version: v2.channel.k8s.io"),
        "{head}"
    );
}

/// A SPDY client over `tcp`: opens streams of these types, in order.
struct SpdyClient {
    r: tokio::io::ReadHalf<TcpStream>,
    w: tokio::io::WriteHalf<TcpStream>,
    enc: spdy::Encoder,
    dec: spdy::Decoder,
    next: u32,
}

impl SpdyClient {
    fn new(tcp: TcpStream) -> SpdyClient {
        let (r, w) = tokio::io::split(tcp);
        SpdyClient {
            r,
            w,
            enc: spdy::Encoder::new().unwrap(),
            dec: spdy::Decoder::default(),
            next: 1,
        }
    }

    async fn send(&mut self, f: Frame) {
        let b = self.enc.encode(&f).unwrap();
        self.w.write_all(&b).await.unwrap();
    }

    async fn open(&mut self, pairs: &[(&str, &str)]) -> u32 {
        let id = self.next;
        self.next += 2;
        let mut headers = Headers::default();
        for (n, v) in pairs {
            headers.add(n, v);
        }
        self.send(Frame::SynStream {
            stream_id: id,
            associated_to: 0,
            priority: 0,
            flags: 0,
            headers,
        })
        .await;
        id
    }

    async fn data(&mut self, id: u32, data: &[u8], fin: bool) {
        self.send(Frame::Data {
            stream_id: id,
            flags: if fin { spdy::FLAG_FIN } else { 0 },
            data: data.to_vec(),
        })
        .await;
    }

    /// Reads until GOAWAY: what came on each stream, the streams replied to, finished and
    /// reset.
    async fn run_out(&mut self) -> Outcome {
        let mut o = Outcome::default();
        loop {
            let f = tokio::time::timeout(
                Duration::from_secs(10),
                spdy::read_frame(&mut self.r, &mut self.dec),
            )
            .await
            .expect("frames in time")
            .unwrap()
            .expect("GOAWAY before the end");
            match o.record(f) {
                None => {}
                Some(Frame::RstStream { stream_id, .. }) => o.reset.push(stream_id),
                Some(Frame::GoAway { .. }) => return o,
                Some(f) => panic!("{f:?}"),
            }
        }
    }
}

#[derive(Default, Debug)]
struct Outcome {
    replied: Vec<u32>,
    data: HashMap<u32, Vec<u8>>,
    fin: Vec<u32>,
    reset: Vec<u32>,
}

impl Outcome {
    /// Records a SYN_REPLY or a DATA frame; any other frame is given back.
    fn record(&mut self, f: Frame) -> Option<Frame> {
        match f {
            Frame::SynReply { stream_id, .. } => self.replied.push(stream_id),
            Frame::Data {
                stream_id,
                flags,
                data,
            } => {
                self.data.entry(stream_id).or_default().extend(data);
                if flags & spdy::FLAG_FIN != 0 {
                    self.fin.push(stream_id);
                }
            }
            f => return Some(f),
        }
        None
    }

    fn text(&self, id: u32) -> String {
        String::from_utf8_lossy(self.data.get(&id).map(|d| &d[..]).unwrap_or(b"")).into_owned()
    }
}

use std::collections::HashMap;

#[tokio::test]
async fn spdy_exec_reports_the_exit_code() {
    let (s, _) = server(TOKEN_TTL).await;
    let url = s
        .exec_url(exec_req(&["exit", "3"], false, true, true, false))
        .unwrap();
    let (st, head, tcp) = request(&s, "POST", &path(&url), SPDY_V4).await;
    assert_eq!(st, 101);
    assert!(
        head.contains("upgrade: spdy/3.1")
            && head.contains("x-stream-protocol-version: v4.channel.k8s.io"),
        "{head}"
    );
    let mut c = SpdyClient::new(tcp);
    let err = c.open(&[("streamType", "error")]).await;
    let out = c.open(&[("streamType", "stdout")]).await;
    let errout = c.open(&[("streamType", "stderr")]).await;
    let o = c.run_out().await;
    assert_eq!(o.replied, [err, out, errout]);
    assert_eq!(o.text(out), "out\n");
    assert_eq!(o.text(errout), "err\n");
    assert_eq!(
        o.text(err),
        r#"{"metadata":{},"status":"Failure","message":"command terminated with non-zero exit code: exit status 3","reason":"NonZeroExitCode","details":{"causes":[{"reason":"ExitCode","message":"3"}]}}"#
    );
    for id in [err, out, errout] {
        assert!(o.fin.contains(&id), "{o:?}");
    }
}

#[tokio::test]
async fn spdy_exec_stdin_resize_and_errors() {
    let (s, _) = server(TOKEN_TTL).await;
    // stdin to EOF, and streams nobody asked for (refused or accepted and ignored).
    let url = s
        .exec_url(exec_req(&["cat"], true, true, false, false))
        .unwrap();
    let (_, _, tcp) = request(&s, "POST", &path(&url), SPDY_V4).await;
    let mut c = SpdyClient::new(tcp);
    let bogus = c.open(&[("streamType", "bogus")]).await;
    let err = c.open(&[("streamType", "error")]).await;
    let stdin = c.open(&[("streamType", "stdin")]).await;
    let out = c.open(&[("streamType", "stdout")]).await;
    c.data(stdin, b"hello ", false).await;
    c.data(stdin, b"world", true).await;
    let o = c.run_out().await;
    assert_eq!(o.text(out), "hello world");
    assert_eq!(o.text(err), r#"{"metadata":{},"status":"Success"}"#);
    assert!(
        o.reset.contains(&bogus) && o.reset.contains(&stdin),
        "{o:?}"
    );

    // A terminal: the resize stream's sizes.
    let url = s
        .exec_url(exec_req(&["size"], false, true, false, true))
        .unwrap();
    let (_, _, tcp) = request(&s, "POST", &path(&url), SPDY_V4).await;
    let mut c = SpdyClient::new(tcp);
    let _err = c.open(&[("streamType", "error")]).await;
    let out = c.open(&[("streamType", "stdout")]).await;
    let resize = c.open(&[("streamType", "resize")]).await;
    c.data(resize, br#"{"Width":132,"Height":43}"#, false).await;
    assert_eq!(c.run_out().await.text(out), "132x43");

    // v3: failures as text; an error of the backend as an internal error.
    let url = s
        .exec_url(exec_req(&["fail"], false, true, false, false))
        .unwrap();
    let mut h = SPDY_V4.to_vec();
    h.retain(|(_, v)| *v != "v4.channel.k8s.io");
    let (_, _, tcp) = request(&s, "POST", &path(&url), &h).await;
    let mut c = SpdyClient::new(tcp);
    let err = c.open(&[("streamType", "error")]).await;
    let _out = c.open(&[("streamType", "stdout")]).await;
    assert_eq!(
        c.run_out().await.text(err),
        "Internal error occurred: error executing command in container: no such thing"
    );
}

#[tokio::test]
async fn spdy_client_gone_closes_the_output() {
    let (s, fake) = server(TOKEN_TTL).await;
    let url = s
        .exec_url(exec_req(&["hang"], false, true, false, false))
        .unwrap();
    let (_, _, tcp) = request(&s, "POST", &path(&url), SPDY_V4).await;
    let mut c = SpdyClient::new(tcp);
    c.open(&[("streamType", "error")]).await;
    c.open(&[("streamType", "stdout")]).await;
    // Both replies, then the client hangs up.
    for _ in 0..2 {
        spdy::read_frame(&mut c.r, &mut c.dec)
            .await
            .unwrap()
            .unwrap();
    }
    drop(c);
    for _ in 0..100 {
        if fake.gone.load(Ordering::SeqCst) {
            return;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("the backend did not see the client go");
}

async fn ws_connect(
    s: &Server,
    url: &str,
    protocol: &str,
) -> tokio_tungstenite::WebSocketStream<TcpStream> {
    let mut req = url
        .replace("http://", "ws://")
        .into_client_request()
        .unwrap();
    req.headers_mut()
        .insert("sec-websocket-protocol", protocol.parse().unwrap());
    let tcp = TcpStream::connect(s.addr()).await.unwrap();
    let (ws, resp) = tokio_tungstenite::client_async(req, tcp).await.unwrap();
    assert_eq!(
        resp.headers().get("sec-websocket-protocol").unwrap(),
        protocol
    );
    ws
}

/// Reads messages to the close: what came on each channel, in order.
async fn ws_run_out(ws: &mut tokio_tungstenite::WebSocketStream<TcpStream>) -> Vec<Message> {
    let mut got = Vec::new();
    while let Some(m) = tokio::time::timeout(Duration::from_secs(10), ws.next())
        .await
        .unwrap()
    {
        let m = m.unwrap();
        if let Message::Close(_) = m {
            continue;
        }
        got.push(m);
    }
    got
}

#[tokio::test]
async fn websocket_exec_v5_and_v4() {
    let (s, _) = server(TOKEN_TTL).await;
    let url = s
        .exec_url(exec_req(&["cat"], true, true, false, false))
        .unwrap();
    let mut ws = ws_connect(&s, &url, "v5.channel.k8s.io").await;
    ws.send(Message::Binary(b"\x00hi".to_vec().into()))
        .await
        .unwrap();
    // v5's close signal: stdin's EOF.
    ws.send(Message::Binary(vec![255, 0].into())).await.unwrap();
    let got = ws_run_out(&mut ws).await;
    let status = [&[3u8][..], br#"{"metadata":{},"status":"Success"}"#].concat();
    assert_eq!(
        got,
        vec![
            Message::Binary(vec![1].into()),
            Message::Binary(b"\x01hi".to_vec().into()),
            Message::Binary(status.into()),
        ]
    );

    let url = s
        .exec_url(exec_req(&["exit", "7"], false, true, true, false))
        .unwrap();
    let mut ws = ws_connect(&s, &url, "v4.channel.k8s.io").await;
    let got = ws_run_out(&mut ws).await;
    assert_eq!(got[0], Message::Binary(vec![1].into()));
    assert!(got.contains(&Message::Binary(b"\x01out\n".to_vec().into())));
    assert!(got.contains(&Message::Binary(b"\x02err\n".to_vec().into())));
    let Message::Binary(status) = got.last().unwrap() else {
        panic!()
    };
    assert_eq!(status[0], 3);
    let v: serde_json::Value = serde_json::from_slice(&status[1..]).unwrap();
    assert_eq!(v["details"]["causes"][0]["message"], "7");

    // base64, with a terminal size on channel 4.
    let url = s
        .exec_url(exec_req(&["size"], false, true, false, true))
        .unwrap();
    let mut ws = ws_connect(&s, &url, "base64.channel.k8s.io").await;
    ws.send(Message::Text(r#"4eyJXaWR0aCI6MTAsIkhlaWdodCI6MjB9"#.into()))
        .await
        .unwrap();
    let got = ws_run_out(&mut ws).await;
    assert_eq!(
        got,
        vec![Message::Text("1".into()), Message::Text("1MTB4MjA=".into())]
    );
}

#[tokio::test]
async fn port_forward_over_spdy_and_websocket() {
    let (s, _) = server(TOKEN_TTL).await;
    let url = s
        .port_forward_url(PortForwardRequest {
            pod_sandbox_id: "p1".into(),
            port: vec![],
        })
        .unwrap();
    let (st, _, tcp) = request(
        &s,
        "POST",
        &path(&url),
        &[
            ("Connection", "Upgrade"),
            ("Upgrade", "SPDY/3.1"),
            ("X-Stream-Protocol-Version", "portforward.k8s.io"),
        ],
    )
    .await;
    assert_eq!(st, 101);
    let mut c = SpdyClient::new(tcp);
    let err = c
        .open(&[("streamType", "error"), ("port", "80"), ("requestID", "0")])
        .await;
    c.data(err, b"", true).await;
    let data = c
        .open(&[("streamType", "data"), ("port", "80"), ("requestID", "0")])
        .await;
    c.data(data, b"ping", true).await;
    // A second connection, to a port where nothing listens.
    let err2 = c
        .open(&[("streamType", "error"), ("port", "81"), ("requestID", "1")])
        .await;
    let data2 = c
        .open(&[("streamType", "data"), ("port", "81"), ("requestID", "1")])
        .await;
    // Once both are done, the client goes.
    let mut o = Outcome::default();
    while !(o.fin.contains(&data) && o.fin.contains(&err2)) {
        let f = spdy::read_frame(&mut c.r, &mut c.dec)
            .await
            .unwrap()
            .unwrap();
        if let Some(f) = o.record(f) {
            panic!("{f:?}");
        }
    }
    assert_eq!(o.text(data), "echo: ping");
    assert_eq!(o.text(err), "");
    assert_eq!(o.text(data2), "");
    assert_eq!(
        o.text(err2),
        "error forwarding port 81 to pod p1, uid : connection refused"
    );

    // WebSocket: the ports from the query when the request had none.
    let url = s
        .port_forward_url(PortForwardRequest {
            pod_sandbox_id: "p1".into(),
            port: vec![],
        })
        .unwrap();
    let mut ws = ws_connect(&s, &format!("{url}?port=80"), "v4.channel.k8s.io").await;
    assert_eq!(
        ws.next().await.unwrap().unwrap(),
        Message::Binary(vec![0, 80, 0].into())
    );
    assert_eq!(
        ws.next().await.unwrap().unwrap(),
        Message::Binary(vec![1, 80, 0].into())
    );
    ws.send(Message::Binary(b"\x00pong".to_vec().into()))
        .await
        .unwrap();
    // The echo server answers at EOF, which a WebSocket client cannot send: the port of the
    // request, then, over a new URL, with the client's close ending the forward.
    ws.close(None).await.unwrap();
    while ws.next().await.is_some() {}
    let url = s
        .port_forward_url(PortForwardRequest {
            pod_sandbox_id: "p1".into(),
            port: vec![81],
        })
        .unwrap();
    let mut ws = ws_connect(&s, &url, "v4.channel.k8s.io").await;
    let got = ws_run_out(&mut ws).await;
    assert_eq!(
        got[..2],
        [
            Message::Binary(vec![0, 81, 0].into()),
            Message::Binary(vec![1, 81, 0].into())
        ]
    );
    assert_eq!(
        got[2],
        Message::Binary(
            b"\x01error forwarding port 81 to pod p1, uid : connection refused"
                .to_vec()
                .into()
        )
    );
    // No port at all.
    let url = s
        .port_forward_url(PortForwardRequest {
            pod_sandbox_id: "p1".into(),
            port: vec![],
        })
        .unwrap();
    let (st, _, _) = request(
        &s,
        "GET",
        &path(&url),
        &[
            ("Connection", "Upgrade"),
            ("Upgrade", "websocket"),
            ("Sec-WebSocket-Version", "13"),
            ("Sec-WebSocket-Key", "dGhlIHNhbXBsZSBub25jZQ=="),
        ],
    )
    .await;
    assert_eq!(st, 400);
}
