//! berthd's CRI Exec, Attach and PortForward with the clients kubectl and the kubelet use: the
//! RPCs answer URLs on berthd's streaming server, where a Go program on spdystream (SPDY/3.1,
//! client-go's remotecommand and portforward protocols) and a Python one on python3-websocket
//! (the channel.k8s.io WebSocket protocols) run commands in a busybox container of a pod,
//! attach to it and forward ports of the pod.
//!
//! The clients live in `streaming-client/`; the tests build the Go one (Debian's golang-go and
//! golang-github-docker-spdystream-dev, offline in GOPATH mode) and skip, saying so, only when
//! `go` or `python3` is missing.

use berth_tests_support::cri::*;
use berth_tests_support::*;
use k8s_cri::v1::runtime_service_client::RuntimeServiceClient;
use k8s_cri::v1::*;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};
use tonic::transport::Channel;

/// The two clients, ready to run.
struct Clients {
    spdy: PathBuf,
    python: PathBuf,
    ws: PathBuf,
}

fn found(cmd: &str, args: &[&str]) -> bool {
    Command::new(cmd)
        .args(args)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

impl Clients {
    /// Builds the Go client (None, with a message, if go or python3 is not installed).
    fn get() -> Option<Clients> {
        let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/streaming-client");
        if !found("go", &["version"]) {
            eprintln!(
                "SKIP: no `go` here (apt-get install golang-go golang-github-docker-spdystream-dev)"
            );
            return None;
        }
        let Some(python) = ["/usr/bin/python3", "python3"]
            .into_iter()
            .find(|p| found(p, &["-c", "pass"]))
        else {
            eprintln!("SKIP: no `python3` here (apt-get install python3 python3-websocket)");
            return None;
        };
        let python = ["/usr/bin/python3", "python3"]
            .into_iter()
            .find(|p| found(p, &["-c", "import websocket"]))
            .unwrap_or_else(|| {
                panic!("{python} has no `websocket` module: apt-get install python3-websocket")
            });
        let spdy = build_spdy_client(&src);
        Some(Clients {
            spdy,
            python: python.into(),
            ws: src.join("ws_client.py"),
        })
    }

    fn spdy_cmd(&self, args: &[&str]) -> Command {
        let mut c = Command::new(&self.spdy);
        c.args(args);
        c
    }

    fn ws_cmd(&self, args: &[&str]) -> Command {
        let mut c = Command::new(&self.python);
        c.arg(&self.ws).args(args);
        c
    }

    fn spdy(&self, args: &[&str], input: &[u8]) -> Done {
        Running::start(self.spdy_cmd(args)).feed(input).finish()
    }

    fn ws(&self, args: &[&str], input: &[u8]) -> Done {
        Running::start(self.ws_cmd(args)).feed(input).finish()
    }
}

/// The status line of a plain GET of `url`.
fn http_status(url: &str) -> u16 {
    let rest = url.strip_prefix("http://").unwrap();
    let (host, path) = rest.split_at(rest.find('/').unwrap());
    let mut s = std::net::TcpStream::connect(host).unwrap();
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut resp = String::new();
    s.read_to_string(&mut resp).unwrap();
    resp[9..12].parse().unwrap()
}

/// Host processes whose command line is exactly `args`.
fn processes(args: &[&str]) -> usize {
    let want: Vec<u8> = args
        .iter()
        .flat_map(|a| [a.as_bytes(), b"\0"].concat())
        .collect();
    std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter(|p| std::fs::read(p.path().join("cmdline")).is_ok_and(|c| c == want))
        .count()
}

/// A started container of `image` in `pod` running `cmd`.
async fn start(
    rt: &mut RuntimeServiceClient<Channel>,
    pod: &str,
    image: &str,
    name: &str,
    cmd: &[&str],
    stdin: bool,
) -> String {
    let config = ContainerConfig {
        command: cmd.iter().map(|s| s.to_string()).collect(),
        stdin,
        ..Default::default()
    };
    run_container(rt, pod, name, image, config).await
}

async fn state(rt: &mut RuntimeServiceClient<Channel>, id: &str) -> ContainerStatus {
    rt.container_status(ContainerStatusRequest {
        container_id: id.into(),
        verbose: false,
    })
    .await
    .unwrap()
    .into_inner()
    .status
    .unwrap()
}

fn exec_req(id: &str, cmd: &[&str], stdin: bool, stderr: bool, tty: bool) -> ExecRequest {
    ExecRequest {
        container_id: id.into(),
        cmd: cmd.iter().map(|s| s.to_string()).collect(),
        tty,
        stdin,
        stdout: true,
        stderr,
    }
}

async fn exec_url(rt: &mut RuntimeServiceClient<Channel>, r: ExecRequest) -> String {
    rt.exec(r).await.unwrap().into_inner().url
}

/// Stops and removes the pod, then checks that nothing of it is left.
async fn remove_pod(rt: &mut RuntimeServiceClient<Channel>, d: &Daemon, pod: &str) {
    stop_and_remove(rt, pod).await;
    let left = d.leftovers();
    assert!(left.is_empty(), "{left:#?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exec_over_spdy_and_websocket() {
    let Some(c) = Clients::get() else { return };
    let n = 11;
    let (_bridge, d) = networked_daemon("cri-exec", n);
    let mut rt = RuntimeServiceClient::new(channel(&d).await);
    let image = pull(&d, "busybox").await;
    let (pod, _pod_gone) = run_pod(&mut rt, &d, "execpod").await;
    let id = start(&mut rt, &pod, &image, "box", &["sleep", "1000"], false).await;
    let exit3 = ["sh", "-c", "echo out; echo err >&2; exit 3"];

    // SPDY (v4): stdout, stderr, and the exit code in the status on the error stream.
    let url = exec_url(&mut rt, exec_req(&id, &exit3, false, true, false)).await;
    assert!(url.starts_with("http://127.0.0.1:"), "{url}");
    let status = d.dir.join("status.json");
    let r = c.spdy(&["exec", "-status", status.to_str().unwrap(), &url], b"");
    assert_eq!(
        (r.code, &*r.stdout, &*r.stderr),
        (3, "out\n", "err\n"),
        "{r:?}"
    );
    let st: serde_json::Value = serde_json::from_slice(&std::fs::read(&status).unwrap()).unwrap();
    assert_eq!(
        st,
        serde_json::json!({
            "metadata": {}, "status": "Failure",
            "message": "command terminated with non-zero exit code: exit status 3",
            "reason": "NonZeroExitCode",
            "details": {"causes": [{"reason": "ExitCode", "message": "3"}]},
        })
    );
    // A URL is good once; an unknown one never.
    let r = c.spdy(&["exec", &url], b"");
    assert_eq!(r.code, 3, "{r:?}");
    assert!(r.stderr.starts_with("HTTP 404"), "{r:?}");
    let token = url.rsplit('/').next().unwrap();
    assert_eq!(http_status(&url.replace(token, "nosuchtoken")), 404);

    // stdin to its end.
    let url = exec_url(&mut rt, exec_req(&id, &["cat"], true, false, false)).await;
    let r = c.spdy(
        &["exec", "-stdin", "-stderr=false", &url],
        b"hello\nworld\n",
    );
    assert_eq!((r.code, &*r.stdout), (0, "hello\nworld\n"), "{r:?}");

    // A terminal: the size the client sends at once is there from the start; a resize.
    let url = exec_url(
        &mut rt,
        exec_req(
            &id,
            &["sh", "-c", "stty size; sleep 1; stty size"],
            false,
            false,
            true,
        ),
    )
    .await;
    let r = c.spdy(
        &[
            "exec",
            "-tty",
            "-stderr=false",
            "-resize",
            "123x45",
            "-resize",
            "100x50",
            "-resize-on-output",
            &url,
        ],
        b"",
    );
    assert_eq!((r.code, &*r.stdout), (0, "45 123\r\n50 100\r\n"), "{r:?}");

    // v3: the failure as text.
    let url = exec_url(&mut rt, exec_req(&id, &exit3, false, true, false)).await;
    let r = c.spdy(&["exec", "-protocols", "v3.channel.k8s.io", &url], b"");
    assert_eq!(r.code, 1, "{r:?}");
    assert!(
        r.stderr
            .contains("error: command terminated with non-zero exit code: exit status 3"),
        "{r:?}"
    );

    // A command that is not there: an internal error, as the kubelet reports it.
    let url = exec_url(
        &mut rt,
        exec_req(&id, &["nosuchcommand"], false, true, false),
    )
    .await;
    let r = c.spdy(&["exec", &url], b"");
    assert_eq!(r.code, 1, "{r:?}");
    assert!(
        r.stderr
            .contains("Internal error occurred: error executing command in container:"),
        "{r:?}"
    );

    // WebSocket v5: the exit code; stdin ended by the close signal; a terminal's size.
    let url = exec_url(&mut rt, exec_req(&id, &exit3, false, true, false)).await;
    let r = c.ws(&["exec", &url, "--stderr"], b"");
    assert_eq!(
        (r.code, &*r.stdout, &*r.stderr),
        (3, "out\n", "err\n"),
        "{r:?}"
    );
    let url = exec_url(&mut rt, exec_req(&id, &["cat"], true, false, false)).await;
    let r = c.ws(&["exec", &url, "--stdin"], b"over websocket\n");
    assert_eq!((r.code, &*r.stdout), (0, "over websocket\n"), "{r:?}");
    let url = exec_url(
        &mut rt,
        exec_req(&id, &["stty", "size"], false, false, true),
    )
    .await;
    let r = c.ws(&["exec", &url, "--tty", "--resize", "77x22"], b"");
    assert_eq!((r.code, &*r.stdout), (0, "22 77\r\n"), "{r:?}");
    // v4 (no close signal: the command reads one line) and base64.channel.k8s.io.
    let url = exec_url(
        &mut rt,
        exec_req(
            &id,
            &["sh", "-c", "read l; echo got $l; exit 5"],
            true,
            false,
            false,
        ),
    )
    .await;
    let r = c.ws(
        &["exec", &url, "--protocol", "v4.channel.k8s.io", "--stdin"],
        b"line\n",
    );
    assert_eq!((r.code, &*r.stdout), (5, "got line\n"), "{r:?}");
    let url = exec_url(
        &mut rt,
        exec_req(&id, &["echo", "b64"], false, false, false),
    )
    .await;
    let r = c.ws(&["exec", &url, "--protocol", "base64.channel.k8s.io"], b"");
    assert_eq!((r.code, &*r.stdout), (0, "b64\n"), "{r:?}");

    // The client goes away: the process is killed.
    let sleeper = ["sleep", "3117"];
    let url = exec_url(&mut rt, exec_req(&id, &sleeper, false, false, false)).await;
    let client = Running::start(c.spdy_cmd(&["exec", "-stderr=false", &url]));
    let deadline = Instant::now() + Duration::from_secs(20);
    while processes(&sleeper) == 0 {
        assert!(Instant::now() < deadline, "the exec did not start");
        std::thread::sleep(Duration::from_millis(20));
    }
    drop(client);
    while processes(&sleeper) > 0 {
        assert!(Instant::now() < deadline, "the exec outlived its client");
        std::thread::sleep(Duration::from_millis(20));
    }

    // The RPC's own checks.
    let code = |r: Result<tonic::Response<ExecResponse>, tonic::Status>| r.unwrap_err().code();
    assert_eq!(
        code(
            rt.exec(exec_req("nosuch", &["true"], false, false, false))
                .await
        ),
        tonic::Code::NotFound
    );
    assert_eq!(
        code(rt.exec(exec_req(&id, &[], false, false, false)).await),
        tonic::Code::InvalidArgument
    );
    assert_eq!(
        code(rt.exec(exec_req(&id, &["true"], false, true, true)).await),
        tonic::Code::InvalidArgument
    );
    rt.stop_container(StopContainerRequest {
        container_id: id.clone(),
        timeout: 0,
    })
    .await
    .unwrap();
    assert_eq!(
        code(rt.exec(exec_req(&id, &["true"], false, false, false)).await),
        tonic::Code::FailedPrecondition
    );
    remove_pod(&mut rt, &d, &pod).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn attach_over_spdy_and_websocket() {
    let Some(c) = Clients::get() else { return };
    let n = 12;
    let (_bridge, d) = networked_daemon("cri-attach", n);
    let mut rt = RuntimeServiceClient::new(channel(&d).await);
    let image = pull(&d, "busybox").await;
    let (pod, _pod_gone) = run_pod(&mut rt, &d, "attachpod").await;
    let id = start(&mut rt, &pod, &image, "shell", &["sh"], true).await;
    let attach = AttachRequest {
        container_id: id.clone(),
        stdin: true,
        tty: false,
        stdout: true,
        stderr: true,
    };

    // SPDY: what the client types reaches the container's shell, its output comes back; the
    // end of the client's stdin detaches, and the container goes on.
    let url = rt.attach(attach.clone()).await.unwrap().into_inner().url;
    assert!(url.contains("/attach/"), "{url}");
    let mut client = Running::start(c.spdy_cmd(&["attach", "-stdin", &url]));
    client.write(b"echo attached-out; echo attached-err >&2\n");
    client.wait_for(false, "attached-out\n");
    client.wait_for(true, "attached-err\n");
    let r = client.finish();
    assert_eq!(r.code, 0, "{r:?}");
    assert_eq!(
        state(&mut rt, &id).await.state,
        ContainerState::ContainerRunning as i32
    );

    // WebSocket v5: the shell exits, and the attach ends with it (a success, as the kubelet
    // reports it); the container's exit code is its status's.
    let url = rt.attach(attach.clone()).await.unwrap().into_inner().url;
    let r = c.ws(
        &["attach", &url, "--stdin", "--no-close", "--stderr"],
        b"echo ws-attached; exit 4\n",
    );
    assert_eq!((r.code, &*r.stdout), (0, "ws-attached\n"), "{r:?}");
    let deadline = Instant::now() + Duration::from_secs(10);
    let st = loop {
        let st = state(&mut rt, &id).await;
        if st.state == ContainerState::ContainerExited as i32 || Instant::now() > deadline {
            break st;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(
        (st.state, st.exit_code),
        (ContainerState::ContainerExited as i32, 4)
    );
    let e = rt.attach(attach).await.unwrap_err();
    assert_eq!(e.code(), tonic::Code::FailedPrecondition, "{}", e.message());
    remove_pod(&mut rt, &d, &pod).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn port_forward_over_spdy_and_websocket() {
    let Some(c) = Clients::get() else { return };
    let n = 13;
    let (_bridge, d) = networked_daemon("cri-portforward", n);
    let mut rt = RuntimeServiceClient::new(channel(&d).await);
    let image = pull(&d, "busybox").await;
    let (pod, _pod_gone) = run_pod(&mut rt, &d, "pfpod").await;
    // A server on the pod's port 8080: one line in, one line out, per connection.
    let server = [
        "nc",
        "-ll",
        "-p",
        "8080",
        "-e",
        "sh",
        "-c",
        "read l; echo got $l",
    ];
    start(&mut rt, &pod, &image, "server", &server, false).await;
    let pf = |ports: Vec<i32>| PortForwardRequest {
        pod_sandbox_id: pod.clone(),
        port: ports,
    };

    // SPDY: two connections over one session (once the server listens).
    let deadline = Instant::now() + Duration::from_secs(20);
    let r = loop {
        let url = rt.port_forward(pf(vec![])).await.unwrap().into_inner().url;
        let r = c.spdy(
            &[
                "portforward",
                "-port",
                "8080",
                "-send",
                "hello\n",
                "-send",
                "again\n",
                &url,
            ],
            b"",
        );
        if r.code == 0 || Instant::now() > deadline {
            break r;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!((r.code, &*r.stdout), (0, "got hello\ngot again\n"), "{r:?}");
    // Nothing listens there: the error stream says so.
    let url = rt.port_forward(pf(vec![])).await.unwrap().into_inner().url;
    let r = c.spdy(&["portforward", "-port", "8081", "-send", "x\n", &url], b"");
    assert_eq!(r.code, 1, "{r:?}");
    assert!(
        r.stderr
            .contains(&format!("error forwarding port 8081 to pod {pod}")),
        "{r:?}"
    );
    // A port the request did not name.
    let url = rt
        .port_forward(pf(vec![8080]))
        .await
        .unwrap()
        .into_inner()
        .url;
    let r = c.spdy(&["portforward", "-port", "9", "-send", "x\n", &url], b"");
    assert_eq!(r.code, 1, "{r:?}");

    // WebSocket: the ports of the request, each channel opened by its port.
    let url = rt
        .port_forward(pf(vec![8080]))
        .await
        .unwrap()
        .into_inner()
        .url;
    let r = c.ws(
        &[
            "portforward",
            &url,
            "--protocol",
            "v4.channel.k8s.io",
            "--send",
            "ws\n",
        ],
        b"",
    );
    assert_eq!((r.code, &*r.stdout), (0, "got ws\n"), "{r:?}");
    assert!(r.stderr.contains("ports: [8080]"), "{r:?}");
    // The ports of the query, when the request had none.
    let url = rt.port_forward(pf(vec![])).await.unwrap().into_inner().url;
    let r = c.ws(
        &[
            "portforward",
            &url,
            "--port",
            "8080",
            "--send",
            "query\n",
            "--protocol",
            "v4.channel.k8s.io",
        ],
        b"",
    );
    assert_eq!((r.code, &*r.stdout), (0, "got query\n"), "{r:?}");

    let e = rt
        .port_forward(PortForwardRequest {
            pod_sandbox_id: "nosuch".into(),
            port: vec![80],
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), tonic::Code::NotFound, "{}", e.message());
    remove_pod(&mut rt, &d, &pod).await;
}
