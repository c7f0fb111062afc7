//! berth-shim against real containers (run as root): the runtime library in process, the
//! berth-runtime binary and runc (`--runtime`). Every test uses its own ids and directories, and
//! a guard that ends what it started even when the test fails.

use berth_shim::api::shim_client::ShimClient;
use berth_shim::api::{
    AttachIn, AttachOut, DeleteRequest, Empty, ExecRequest, ExitStatus, KillRequest, ProcessRef,
    StateRequest, UpdateRequest,
};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;
use tonic::transport::Channel;

const T: Duration = Duration::from_secs(30);
const CGROUP_PARENT: &str = "berth-shim-test";

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Mode {
    Library,
    BerthRuntime,
    Runc,
}

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn berth_runtime_bin() -> PathBuf {
    static BIN: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();
    BIN.get_or_init(|| {
        let target = std::env::var_os("CARGO_TARGET_DIR")
            .map(PathBuf::from)
            .unwrap_or_else(|| workspace().join("target"));
        let bin = target.join("debug").join("berth-runtime");
        if !bin.exists() {
            let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
            let st = std::process::Command::new(cargo)
                .args(["build", "-p", "berth-runtime"])
                .current_dir(workspace())
                .status()
                .expect("run cargo build -p berth-runtime");
            assert!(st.success(), "cargo build -p berth-runtime failed");
        }
        bin.canonicalize().expect("berth-runtime binary")
    })
    .clone()
}

const RUNC: &str = "/usr/sbin/runc";

impl Mode {
    fn runtime(self) -> Option<PathBuf> {
        match self {
            Mode::Library => None,
            Mode::BerthRuntime => Some(berth_runtime_bin()),
            Mode::Runc => Some(PathBuf::from(RUNC)),
        }
    }

    /// The binary that cleans up after a test.
    fn cleanup_bin(self) -> PathBuf {
        match self {
            Mode::Runc => PathBuf::from(RUNC),
            _ => berth_runtime_bin(),
        }
    }

    fn available(self) -> bool {
        if self == Mode::Runc && !Path::new(RUNC).exists() {
            eprintln!("skipped: {RUNC} is not installed");
            return false;
        }
        true
    }
}

fn busybox_bundle() -> PathBuf {
    if let Some(b) = std::env::var_os("BUSYBOX_BUNDLE") {
        return PathBuf::from(b);
    }
    let env = std::fs::read_to_string("/var/cache/berth-fixtures/fixtures.env")
        .expect("fixtures.env: build the fixtures (/work/shared/fixtures/build.sh)");
    env.lines()
        .find_map(|l| l.strip_prefix("BUSYBOX_BUNDLE="))
        .map(|v| PathBuf::from(v.trim()))
        .expect("BUSYBOX_BUNDLE in fixtures.env")
}

fn unique_id(name: &str) -> String {
    static N: AtomicU32 = AtomicU32::new(0);
    format!(
        "shimtest-{name}-{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    )
}

/// How a test container is made.
struct Spec<'a> {
    args: &'a [&'a str],
    tty: bool,
    stdin: bool,
    /// Replace root.path (to make create fail).
    rootfs: Option<&'a str>,
    /// Without a PID namespace (so that signals reach the program without a handler).
    no_pid_ns: bool,
    memory_limit: Option<i64>,
}

impl<'a> Spec<'a> {
    fn new(args: &'a [&'a str]) -> Spec<'a> {
        Spec {
            args,
            tty: false,
            stdin: false,
            rootfs: None,
            no_pid_ns: false,
            memory_limit: None,
        }
    }
}

/// A test container and its shim; the guard ends both.
struct Ctr {
    id: String,
    mode: Mode,
    _tmp: tempfile::TempDir,
    bundle: PathBuf,
    dir: PathBuf,
    root: PathBuf,
    log: PathBuf,
    tty: bool,
    stdin: bool,
    shim_pid: Option<i32>,
}

impl Ctr {
    fn new(mode: Mode, name: &str, spec: &Spec<'_>) -> Ctr {
        let id = unique_id(name);
        let tmp = tempfile::Builder::new()
            .prefix("shimt")
            .tempdir_in("/tmp")
            .unwrap();
        let bundle = tmp.path().join("bundle");
        std::fs::create_dir(&bundle).unwrap();
        let fixture = busybox_bundle();
        let mut cfg: serde_json::Value =
            serde_json::from_slice(&std::fs::read(fixture.join("config.json")).unwrap()).unwrap();
        let rootfs = match spec.rootfs {
            Some(r) => r.to_string(),
            None => fixture.join("rootfs").display().to_string(),
        };
        cfg["root"] = serde_json::json!({"path": rootfs, "readonly": true});
        cfg["process"]["args"] = serde_json::json!(spec.args);
        cfg["process"]["terminal"] = serde_json::json!(spec.tty);
        cfg["linux"]["cgroupsPath"] = serde_json::json!(format!("/{CGROUP_PARENT}/{id}"));
        if spec.no_pid_ns {
            let ns = cfg["linux"]["namespaces"].as_array_mut().unwrap();
            ns.retain(|n| n["type"] != "pid");
        }
        if let Some(limit) = spec.memory_limit {
            cfg["linux"]["resources"]["memory"] =
                serde_json::json!({"limit": limit, "swap": limit});
        }
        std::fs::write(
            bundle.join("config.json"),
            serde_json::to_vec_pretty(&cfg).unwrap(),
        )
        .unwrap();
        Ctr {
            mode,
            dir: tmp.path().join("shim"),
            root: tmp.path().join("root"),
            log: tmp.path().join("logs").join("c.log"),
            bundle,
            _tmp: tmp,
            tty: spec.tty,
            stdin: spec.stdin,
            shim_pid: None,
            id,
        }
    }

    /// Runs berth-shim as berthd does; returns its output (the parent's).
    fn spawn(&mut self) -> std::process::Output {
        let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_berth-shim"));
        cmd.arg("--id")
            .arg(&self.id)
            .arg("--bundle")
            .arg(&self.bundle)
            .arg("--dir")
            .arg(&self.dir)
            .arg("--runtime-root")
            .arg(&self.root)
            .arg("--log")
            .arg(&self.log);
        if let Some(rt) = self.mode.runtime() {
            cmd.arg("--runtime").arg(rt);
        }
        if self.stdin {
            cmd.arg("--stdin");
        }
        if self.tty {
            cmd.arg("--tty");
        }
        let out = cmd
            .stdin(std::process::Stdio::null())
            .output()
            .expect("run berth-shim");
        if let Ok(p) = std::fs::read_to_string(self.dir.join(berth_shim::PID_FILE)) {
            self.shim_pid = p.trim().parse().ok();
        }
        out
    }

    /// Spawns and expects success.
    fn start_shim(&mut self) -> i32 {
        let out = self.spawn();
        assert!(
            out.status.success(),
            "berth-shim failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(out.stdout.is_empty() && out.stderr.is_empty(), "{out:?}");
        self.shim_pid.expect("shim.pid written")
    }

    async fn client(&self) -> ShimClient<Channel> {
        berth_shim::connect(&self.dir).await.expect("connect")
    }

    fn cgroup_dirs(&self) -> Vec<PathBuf> {
        let mut v = Vec::new();
        for e in std::fs::read_dir("/sys/fs/cgroup").unwrap().flatten() {
            let d = e.path().join(CGROUP_PARENT).join(&self.id);
            if d.exists() {
                v.push(d);
            }
        }
        v
    }

    fn records(&self) -> Vec<(String, String, String)> {
        log_records(&self.log)
    }

    /// Waits until the log has a record whose content contains `s`.
    async fn wait_log(&self, s: &str) {
        let deadline = tokio::time::Instant::now() + T;
        while !self.records().iter().any(|r| r.2.contains(s)) {
            assert!(
                tokio::time::Instant::now() < deadline,
                "{s:?} never in the log: {:?}",
                self.records()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Delete + Shutdown, then checks that nothing is left.
    async fn delete_and_shutdown(&mut self, c: &mut ShimClient<Channel>) -> ExitStatus {
        let x = c
            .delete(DeleteRequest {
                exec_id: String::new(),
                force: true,
            })
            .await
            .expect("delete")
            .into_inner();
        c.shutdown(Empty {}).await.expect("shutdown");
        let pid = self.shim_pid.unwrap();
        let deadline = std::time::Instant::now() + T;
        while alive(pid) {
            assert!(
                std::time::Instant::now() < deadline,
                "shim {pid} still runs"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        self.shim_pid = None;
        assert!(!self.dir.exists(), "shim dir left: {}", self.dir.display());
        assert!(
            !self.root.join(&self.id).exists(),
            "runtime state left: {}",
            self.root.join(&self.id).display()
        );
        assert!(
            self.cgroup_dirs().is_empty(),
            "cgroups left: {:?}",
            self.cgroup_dirs()
        );
        x
    }
}

impl Drop for Ctr {
    fn drop(&mut self) {
        if let Some(pid) = self.shim_pid {
            let ours = std::fs::read(format!("/proc/{pid}/cmdline"))
                .map(|c| c.split(|b| *b == 0).any(|a| a == self.id.as_bytes()))
                .unwrap_or(false);
            if ours {
                // SAFETY: kill(2) of the shim this test started (checked by its command line).
                unsafe { libc::kill(pid, libc::SIGKILL) };
            }
        }
        if self.root.join(&self.id).exists() {
            let _ = std::process::Command::new(self.mode.cleanup_bin())
                .arg("--root")
                .arg(&self.root)
                .args(["delete", "--force"])
                .arg(&self.id)
                .stdout(std::process::Stdio::null())
                .stderr(std::process::Stdio::null())
                .status();
        }
        for d in self.cgroup_dirs() {
            let _ = std::fs::remove_dir(d);
        }
    }
}

/// Whether a process is alive (a zombie is not).
fn alive(pid: i32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .map(|s| {
            let st = s.rsplit_once(')').map(|x| x.1.trim_start().chars().next());
            !matches!(st, Some(Some('Z' | 'X')))
        })
        .unwrap_or(false)
}

fn ppid(pid: i32) -> i32 {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    s.lines()
        .find_map(|l| l.strip_prefix("PPid:"))
        .unwrap()
        .trim()
        .parse()
        .unwrap()
}

fn threads(pid: i32) -> u32 {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    s.lines()
        .find_map(|l| l.strip_prefix("Threads:"))
        .unwrap()
        .trim()
        .parse()
        .unwrap()
}

/// (stream, tag, content) of each CRI record, checking the time stamp format.
fn log_records(path: &Path) -> Vec<(String, String, String)> {
    let Ok(data) = std::fs::read_to_string(path) else {
        return vec![];
    };
    data.lines()
        .map(|l| {
            let mut it = l.splitn(4, ' ');
            let ts = it.next().unwrap();
            let b = ts.as_bytes();
            assert!(
                ts.len() == 30
                    && b[4] == b'-'
                    && b[10] == b'T'
                    && b[19] == b'.'
                    && ts.ends_with('Z'),
                "bad time stamp in {l:?}"
            );
            let stream = it.next().unwrap().to_string();
            let tag = it.next().unwrap().to_string();
            assert!(stream == "stdout" || stream == "stderr", "{l:?}");
            assert!(tag == "F" || tag == "P", "{l:?}");
            (stream, tag, it.next().unwrap_or("").to_string())
        })
        .collect()
}

fn process_json(args: &[&str], terminal: bool) -> Vec<u8> {
    serde_json::to_vec(&serde_json::json!({
        "terminal": terminal,
        "user": {"uid": 0, "gid": 0},
        "args": args,
        "env": ["PATH=/usr/sbin:/usr/bin:/sbin:/bin", "TERM=xterm"],
        "cwd": "/",
    }))
    .unwrap()
}

/// An attach stream: the sender for stdin, and the output.
struct Attached {
    tx: tokio::sync::mpsc::Sender<AttachIn>,
    out: tonic::Streaming<AttachOut>,
}

async fn attach(c: &mut ShimClient<Channel>, exec_id: &str) -> Attached {
    let (tx, rx) = tokio::sync::mpsc::channel(16);
    tx.send(AttachIn {
        exec_id: exec_id.into(),
        ..Default::default()
    })
    .await
    .unwrap();
    let mut out =
        tokio::time::timeout(T, c.attach(tokio_stream::wrappers::ReceiverStream::new(rx)))
            .await
            .expect("attach timed out")
            .expect("attach")
            .into_inner();
    let first = tokio::time::timeout(T, out.message())
        .await
        .expect("attached timed out")
        .unwrap()
        .unwrap();
    assert!(first.attached, "first message must be `attached`");
    Attached { tx, out }
}

impl Attached {
    /// Reads until the stream ends: (stdout, stderr).
    async fn collect(mut self) -> (String, String) {
        let (mut o, mut e) = (Vec::new(), Vec::new());
        loop {
            let m = tokio::time::timeout(T, self.out.message())
                .await
                .expect("attach output timed out")
                .expect("attach stream");
            match m {
                Some(m) => {
                    o.extend(m.stdout);
                    e.extend(m.stderr);
                }
                None => break,
            }
        }
        (
            String::from_utf8_lossy(&o).into_owned(),
            String::from_utf8_lossy(&e).into_owned(),
        )
    }
}

async fn wait(c: &mut ShimClient<Channel>, exec_id: &str) -> ExitStatus {
    tokio::time::timeout(
        T,
        c.wait(ProcessRef {
            exec_id: exec_id.into(),
        }),
    )
    .await
    .expect("wait timed out")
    .expect("wait")
    .into_inner()
}

async fn status(c: &mut ShimClient<Channel>) -> String {
    c.state(StateRequest::default())
        .await
        .unwrap()
        .into_inner()
        .status
}

// ---- the tests, one function per behaviour, run for each mode below ----

/// Exit code, exit.json, the CRI log with both streams, the shim outliving its caller and
/// staying single-threaded, Delete + Shutdown leaving nothing behind.
async fn exit_code_and_log(mode: Mode) {
    let mut ct = Ctr::new(
        mode,
        "basic",
        &Spec::new(&["sh", "-c", "echo out; echo err >&2; exit 3"]),
    );
    let pid = ct.start_shim();
    assert_ne!(
        ppid(pid),
        std::process::id() as i32,
        "the shim is our child"
    );
    assert_eq!(threads(pid), 1, "the shim must stay single-threaded");
    let mut c = ct.client().await;
    let st = c.state(StateRequest::default()).await.unwrap().into_inner();
    assert_eq!(st.status, "created");
    assert_eq!(st.id, ct.id);
    assert!(st.pid > 0);
    let st = c.start(Empty {}).await.expect("start").into_inner();
    assert_eq!(st.status, "running");
    let x = wait(&mut c, "").await;
    assert!(x.exited);
    assert_eq!((x.exit_code, x.signal), (3, 0));
    assert!(x.exited_at_unix_nano > 0);
    let rec = berth_shim::ExitRecord::read(&ct.dir).expect("exit.json");
    assert_eq!(rec.exit_code, 3);
    assert_eq!(rec.exited_at_unix_nano, x.exited_at_unix_nano);
    let st = c.state(StateRequest::default()).await.unwrap().into_inner();
    assert_eq!(st.status, "stopped");
    assert_eq!(st.exit.unwrap().exit_code, 3);
    let recs = ct.records();
    assert!(
        recs.contains(&("stdout".into(), "F".into(), "out".into())),
        "{recs:?}"
    );
    assert!(
        recs.contains(&("stderr".into(), "F".into(), "err".into())),
        "{recs:?}"
    );
    assert_eq!(recs.len(), 2, "{recs:?}");
    // Kill after exit is fine; Start again is not.
    c.kill(KillRequest {
        signal: 15,
        ..Default::default()
    })
    .await
    .expect("kill of an exited container");
    assert!(c.start(Empty {}).await.is_err());
    assert_eq!(threads(pid), 1);
    let x = ct.delete_and_shutdown(&mut c).await;
    assert_eq!(x.exit_code, 3);
}

async fn long_line(mode: Mode) {
    let mut ct = Ctr::new(
        mode,
        "long",
        &Spec::new(&[
            "sh",
            "-c",
            "head -c 40960 /dev/zero | tr '\\0' x; echo; printf tail",
        ]),
    );
    ct.start_shim();
    let mut c = ct.client().await;
    c.start(Empty {}).await.unwrap();
    assert_eq!(wait(&mut c, "").await.exit_code, 0);
    let recs = ct.records();
    let shape: Vec<(&str, &str, usize)> = recs
        .iter()
        .map(|r| (r.0.as_str(), r.1.as_str(), r.2.len()))
        .collect();
    assert_eq!(
        shape,
        [
            ("stdout", "P", 16384),
            ("stdout", "P", 16384),
            ("stdout", "F", 8192),
            ("stdout", "P", 4)
        ]
    );
    assert!(recs[..3].iter().all(|r| r.2.bytes().all(|b| b == b'x')));
    assert_eq!(recs[3].2, "tail");
    ct.delete_and_shutdown(&mut c).await;
}

async fn attach_before_start(mode: Mode) {
    let mut ct = Ctr::new(
        mode,
        "attach",
        &Spec::new(&["sh", "-c", "echo hello-attach; echo oops >&2"]),
    );
    ct.start_shim();
    let mut c = ct.client().await;
    let a = attach(&mut c, "").await;
    c.start(Empty {}).await.unwrap();
    let (out, err) = a.collect().await;
    assert_eq!(out, "hello-attach\n");
    assert_eq!(err, "oops\n");
    assert_eq!(wait(&mut c, "").await.exit_code, 0);
    ct.delete_and_shutdown(&mut c).await;
}

async fn stdin_echo(mode: Mode) {
    let mut spec = Spec::new(&["cat"]);
    spec.stdin = true;
    let mut ct = Ctr::new(mode, "stdin", &spec);
    ct.start_shim();
    let mut c = ct.client().await;
    let a = attach(&mut c, "").await;
    c.start(Empty {}).await.unwrap();
    a.tx.send(AttachIn {
        stdin: b"hello\n".to_vec(),
        ..Default::default()
    })
    .await
    .unwrap();
    a.tx.send(AttachIn {
        close_stdin: true,
        ..Default::default()
    })
    .await
    .unwrap();
    let (out, _) = a.collect().await;
    assert_eq!(out, "hello\n");
    assert_eq!(wait(&mut c, "").await.exit_code, 0);
    assert!(ct
        .records()
        .contains(&("stdout".into(), "F".into(), "hello".into())));
    ct.delete_and_shutdown(&mut c).await;
}

async fn terminal(mode: Mode) {
    let mut spec = Spec::new(&["sh", "-c", "tty; stty size"]);
    spec.tty = true;
    spec.stdin = true;
    let mut ct = Ctr::new(mode, "tty", &spec);
    ct.start_shim();
    let mut c = ct.client().await;
    let (tx, rx) = tokio::sync::mpsc::channel(4);
    tx.send(AttachIn {
        width: 100,
        height: 30,
        ..Default::default()
    })
    .await
    .unwrap();
    let mut out = c
        .attach(tokio_stream::wrappers::ReceiverStream::new(rx))
        .await
        .unwrap()
        .into_inner();
    assert!(out.message().await.unwrap().unwrap().attached);
    c.start(Empty {}).await.unwrap();
    let a = Attached { tx, out };
    let (out, err) = a.collect().await;
    assert!(err.is_empty());
    assert!(out.starts_with("/dev/pts/"), "{out:?}");
    assert!(out.contains("30 100"), "{out:?}");
    assert_eq!(wait(&mut c, "").await.exit_code, 0);
    let recs = ct.records();
    assert!(
        recs.iter().any(|r| r.0 == "stdout"
            && r.1 == "F"
            && r.2.starts_with("/dev/pts/")
            && !r.2.ends_with('\r')),
        "{recs:?}"
    );
    assert!(recs.iter().all(|r| r.0 == "stdout"));
    let st = c.state(StateRequest::default()).await.unwrap().into_inner();
    assert!(st.terminal);
    ct.delete_and_shutdown(&mut c).await;
}

async fn exec(mode: Mode) {
    let mut ct = Ctr::new(mode, "exec", &Spec::new(&["sleep", "1000"]));
    ct.start_shim();
    let mut c = ct.client().await;
    c.start(Empty {}).await.unwrap();
    // Output before anyone attached is kept for the first Attach.
    let st = c
        .exec(ExecRequest {
            exec_id: "e1".into(),
            process_json: process_json(&["sh", "-c", "echo hi; echo there >&2; exit 7"], false),
            stdin: false,
        })
        .await
        .expect("exec")
        .into_inner();
    assert!(st.pid > 0);
    assert_eq!(st.exec_id, "e1");
    tokio::time::sleep(Duration::from_millis(200)).await;
    let (out, err) = attach(&mut c, "e1").await.collect().await;
    assert_eq!((out.as_str(), err.as_str()), ("hi\n", "there\n"));
    let x = wait(&mut c, "e1").await;
    assert_eq!(x.exit_code, 7);
    let st = c
        .state(StateRequest {
            exec_id: "e1".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(st.status, "stopped");
    assert!(c
        .exec(ExecRequest {
            exec_id: "e1".into(),
            process_json: process_json(&["true"], false),
            stdin: false,
        })
        .await
        .is_err());
    let x = c
        .delete(DeleteRequest {
            exec_id: "e1".into(),
            force: false,
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(x.exit_code, 7);
    assert!(c
        .state(StateRequest {
            exec_id: "e1".into()
        })
        .await
        .is_err());
    // With stdin, and with a terminal.
    c.exec(ExecRequest {
        exec_id: "e2".into(),
        process_json: process_json(&["cat"], false),
        stdin: true,
    })
    .await
    .unwrap();
    let a = attach(&mut c, "e2").await;
    a.tx.send(AttachIn {
        stdin: b"typed\n".to_vec(),
        close_stdin: true,
        ..Default::default()
    })
    .await
    .unwrap();
    assert_eq!(a.collect().await.0, "typed\n");
    assert_eq!(wait(&mut c, "e2").await.exit_code, 0);
    c.exec(ExecRequest {
        exec_id: "e3".into(),
        process_json: process_json(&["tty"], true),
        stdin: false,
    })
    .await
    .unwrap();
    let (out, _) = attach(&mut c, "e3").await.collect().await;
    assert!(out.starts_with("/dev/pts/"), "{out:?}");
    assert_eq!(wait(&mut c, "e3").await.exit_code, 0);
    // Exec output is not logged.
    assert!(ct.records().is_empty(), "{:?}", ct.records());
    // A command that does not exist.
    assert!(c
        .exec(ExecRequest {
            exec_id: "bad".into(),
            process_json: process_json(&["/no/such/command"], false),
            stdin: false,
        })
        .await
        .is_err());
    // A running exec: kill it by its id.
    c.exec(ExecRequest {
        exec_id: "e4".into(),
        process_json: process_json(&["sleep", "1000"], false),
        stdin: false,
    })
    .await
    .unwrap();
    assert!(c
        .delete(DeleteRequest {
            exec_id: "e4".into(),
            force: false
        })
        .await
        .is_err());
    c.kill(KillRequest {
        exec_id: "e4".into(),
        signal: 9,
        all: false,
    })
    .await
    .unwrap();
    let x = wait(&mut c, "e4").await;
    assert_eq!((x.exit_code, x.signal), (137, 9));
    assert_eq!(status(&mut c).await, "running");
    assert!(c
        .delete(DeleteRequest {
            exec_id: String::new(),
            force: false
        })
        .await
        .is_err());
    let x = ct.delete_and_shutdown(&mut c).await;
    assert_eq!((x.exit_code, x.signal), (137, 9));
}

async fn kill_sigterm(mode: Mode) {
    let mut spec = Spec::new(&["sleep", "1000"]);
    // A PID namespace's init ignores signals it has no handler for.
    spec.no_pid_ns = true;
    let mut ct = Ctr::new(mode, "kill", &spec);
    ct.start_shim();
    let mut c = ct.client().await;
    c.start(Empty {}).await.unwrap();
    c.kill(KillRequest {
        signal: 15,
        ..Default::default()
    })
    .await
    .expect("kill");
    let x = wait(&mut c, "").await;
    assert_eq!((x.exit_code, x.signal), (143, 15));
    assert_eq!(
        berth_shim::ExitRecord::read(&ct.dir).unwrap().exit_code,
        143
    );
    ct.delete_and_shutdown(&mut c).await;
}

async fn failed_create(mode: Mode, spec: Spec<'_>, expect: &str) {
    let mut ct = Ctr::new(mode, "fail", &spec);
    let out = ct.spawn();
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.ends_with('\n') && err.lines().count() == 1, "{err:?}");
    assert!(err.starts_with("berth-shim: "), "{err:?}");
    assert!(err.contains(expect), "{err:?} should mention {expect:?}");
    assert!(out.stdout.is_empty());
    assert!(!ct.dir.exists(), "shim dir left");
    assert!(!ct.root.join(&ct.id).exists(), "runtime state left");
    assert!(
        ct.cgroup_dirs().is_empty(),
        "cgroups: {:?}",
        ct.cgroup_dirs()
    );
    assert!(!ct.log.exists(), "log file left");
}

async fn bad_rootfs(mode: Mode) {
    let mut spec = Spec::new(&["true"]);
    spec.rootfs = Some("/nonexistent-berth-rootfs");
    failed_create(mode, spec, "nonexistent-berth-rootfs").await;
}

async fn missing_command(mode: Mode) {
    failed_create(mode, Spec::new(&["/no/such/cmd"]), "/no/such/cmd").await;
}

async fn stats_pids_pause_update(mode: Mode) {
    let mut ct = Ctr::new(mode, "stats", &Spec::new(&["sleep", "1000"]));
    ct.start_shim();
    let mut c = ct.client().await;
    let st = c.start(Empty {}).await.unwrap().into_inner();
    let pids = c.pids(Empty {}).await.expect("pids").into_inner().pids;
    assert!(pids.contains(&st.pid), "{pids:?} lacks {}", st.pid);
    let stats = c.stats(Empty {}).await.expect("stats").into_inner().json;
    let v: serde_json::Value = serde_json::from_slice(&stats).expect("stats JSON");
    assert_eq!(v["type"], "stats", "{v}");
    c.pause(Empty {}).await.expect("pause");
    assert_eq!(status(&mut c).await, "paused");
    c.resume(Empty {}).await.expect("resume");
    assert_eq!(status(&mut c).await, "running");
    c.update(UpdateRequest {
        resources_json: br#"{"pids":{"limit":77}}"#.to_vec(),
    })
    .await
    .expect("update");
    let max = format!("/sys/fs/cgroup/pids/{CGROUP_PARENT}/{}/pids.max", ct.id);
    if Path::new(&max).exists() {
        assert_eq!(std::fs::read_to_string(&max).unwrap().trim(), "77");
    }
    // Delete without force refuses a running container.
    assert!(c
        .delete(DeleteRequest {
            exec_id: String::new(),
            force: false
        })
        .await
        .is_err());
    // Shutdown refuses before Delete.
    assert!(c.shutdown(Empty {}).await.is_err());
    ct.delete_and_shutdown(&mut c).await;
}

async fn reopen_log(mode: Mode) {
    let mut spec = Spec::new(&["sh", "-c", "echo one; read x; echo two"]);
    spec.stdin = true;
    let mut ct = Ctr::new(mode, "reopen", &spec);
    ct.start_shim();
    let mut c = ct.client().await;
    c.start(Empty {}).await.unwrap();
    ct.wait_log("one").await;
    let old = ct.log.with_extension("1");
    std::fs::rename(&ct.log, &old).unwrap();
    c.reopen_log(Empty {}).await.expect("reopen");
    let a = attach(&mut c, "").await;
    a.tx.send(AttachIn {
        stdin: b"go\n".to_vec(),
        ..Default::default()
    })
    .await
    .unwrap();
    let (out, _) = a.collect().await;
    assert_eq!(out, "two\n");
    wait(&mut c, "").await;
    assert_eq!(
        log_records(&old),
        [("stdout".into(), "F".into(), "one".into())]
    );
    assert_eq!(ct.records(), [("stdout".into(), "F".into(), "two".into())]);
    ct.delete_and_shutdown(&mut c).await;
}

async fn oom_killed(mode: Mode) {
    let mut spec = Spec::new(&[
        "sh",
        "-c",
        "x=$(head -c 200000000 /dev/zero | tr '\\0' a); echo survived",
    ]);
    spec.memory_limit = Some(16 << 20);
    let mut ct = Ctr::new(mode, "oom", &spec);
    ct.start_shim();
    let mut c = ct.client().await;
    c.start(Empty {}).await.unwrap();
    let x = wait(&mut c, "").await;
    assert_eq!(x.reason, "OOMKilled", "{x:?}");
    assert_eq!(
        berth_shim::ExitRecord::read(&ct.dir).unwrap().reason,
        "OOMKilled"
    );
    ct.delete_and_shutdown(&mut c).await;
}

/// A shim killed with -9 leaves its container; a new shim for the same id refuses to take over
/// the runtime state (it is not its own), and the guard cleans up.
async fn existing_container_refused(mode: Mode) {
    let mut ct = Ctr::new(mode, "dup", &Spec::new(&["sleep", "1000"]));
    ct.start_shim();
    let mut c = ct.client().await;
    c.start(Empty {}).await.unwrap();
    let dir2 = ct.dir.with_file_name("shim2");
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_berth-shim"))
        .arg("--id")
        .arg(&ct.id)
        .arg("--bundle")
        .arg(&ct.bundle)
        .arg("--dir")
        .arg(&dir2)
        .arg("--runtime-root")
        .arg(&ct.root)
        .args(
            ct.mode
                .runtime()
                .map(|r| vec!["--runtime".into(), r])
                .unwrap_or_default(),
        )
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("already exists"),
        "{out:?}"
    );
    assert!(!dir2.exists());
    // The first container is untouched.
    assert_eq!(status(&mut c).await, "running");
    ct.delete_and_shutdown(&mut c).await;
}

/// A container deleted before it was started: killed, reported, and nothing left.
async fn delete_created(mode: Mode) {
    let mut ct = Ctr::new(mode, "delcreated", &Spec::new(&["sleep", "1000"]));
    ct.start_shim();
    let mut c = ct.client().await;
    assert_eq!(status(&mut c).await, "created");
    let x = c
        .delete(DeleteRequest {
            exec_id: String::new(),
            force: false,
        })
        .await
        .expect("delete of a created container")
        .into_inner();
    assert!(x.exited);
    assert_eq!(x.exit_code, 137);
    assert_eq!(status(&mut c).await, "stopped");
    // Delete again is harmless; then the usual end.
    ct.delete_and_shutdown(&mut c).await;
}

macro_rules! for_modes {
    ($($name:ident),* $(,)?) => {
        mod library {
            $(#[tokio::test] async fn $name() { super::$name(super::Mode::Library).await })*
        }
        mod berth_runtime {
            $(#[tokio::test] async fn $name() { super::$name(super::Mode::BerthRuntime).await })*
        }
        mod runc {
            $(#[tokio::test] async fn $name() {
                if super::Mode::Runc.available() {
                    super::$name(super::Mode::Runc).await
                }
            })*
        }
    };
}

for_modes!(
    exit_code_and_log,
    long_line,
    attach_before_start,
    stdin_echo,
    terminal,
    exec,
    kill_sigterm,
    bad_rootfs,
    missing_command,
    stats_pids_pause_update,
    reopen_log,
    oom_killed,
    existing_container_refused,
    delete_created,
);
