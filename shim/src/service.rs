//! The shim's state (the init and the exec processes, their stdio, exits) and the gRPC service.
//!
//! Everything runs on one thread (a current-thread tokio runtime): the runtime library clones
//! processes from this one, which must not have other threads. State is behind a std `Mutex`
//! that is never held across an await.

use crate::crilog::{CriLog, Stream};
use crate::rt::{RtError, Runtime};
use crate::sys;
use berth_shim::api::shim_server::Shim as ShimApi;
use berth_shim::api::{
    AttachIn, AttachOut, DeleteRequest, Empty, ExecRequest, ExitStatus, KillRequest, PidsResponse,
    ProcessRef, ResizeRequest, StateRequest, StateResponse, StatsResponse, UpdateRequest,
};
use std::collections::HashMap;
use std::io;
use std::os::fd::{AsFd, OwnedFd};
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;
use tokio::io::unix::AsyncFd;
use tokio::io::Interest;
use tokio::sync::{mpsc, watch};
use tonic::{Request, Response, Status};

/// Output of an exec process kept until its first Attach.
const MAX_PENDING: usize = 4 << 20;
/// How long a process's output may go on after it exited before Wait reports the exit anyway
/// (a child that inherited its stdout may keep the pipe open).
const DRAIN_GRACE: Duration = Duration::from_secs(2);
/// Messages queued for one attached client; a client that falls this far behind is dropped.
const ATTACH_QUEUE: usize = 256;
/// Size of the read buffer of each output stream.
const READ_BUF: usize = 16 * 1024;

/// Key of the init in `Inner::procs`.
const INIT: u64 = 0;

pub struct Config {
    pub id: String,
    pub dir: PathBuf,
    pub terminal: bool,
    /// The container's cgroup path (`linux.cgroupsPath`), for the OOM check.
    pub cgroup: Option<String>,
}

/// A process's stdio as set up before it started: the shim's ends.
#[derive(Default)]
pub struct ProcIo {
    /// Write end of the stdin pipe.
    pub stdin: Option<OwnedFd>,
    /// Read ends of the output pipes.
    pub stdout: Option<OwnedFd>,
    pub stderr: Option<OwnedFd>,
    /// The pty master: output, input and window size.
    pub pty: Option<OwnedFd>,
    /// With a pty, whether input goes to it.
    pub pty_stdin: bool,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum InitStatus {
    Created,
    Running,
    Paused,
}

struct Pending {
    msgs: Vec<AttachOut>,
    bytes: usize,
    dropped: bool,
}

struct Proc {
    exec_id: String,
    pid: i32,
    terminal: bool,
    /// Set when reaped.
    exit: Option<ExitStatus>,
    /// The exit was reported (Wait, State): output drained, or DRAIN_GRACE passed.
    published: bool,
    drain_expired: bool,
    open_outputs: u8,
    stdin: Option<Arc<AsyncFd<OwnedFd>>>,
    pty: Option<Arc<AsyncFd<OwnedFd>>>,
    subs: Vec<mpsc::Sender<AttachOut>>,
    /// Exec processes: output kept until the first Attach.
    pending: Option<Pending>,
    exit_tx: watch::Sender<Option<ExitStatus>>,
}

impl Proc {
    fn drained(&self) -> bool {
        self.exit.is_some() && self.open_outputs == 0
    }

    fn deliver(&mut self, msg: AttachOut, dir: &std::path::Path) {
        let len = msg.stdout.len() + msg.stderr.len();
        if let Some(p) = &mut self.pending {
            if p.bytes + len <= MAX_PENDING {
                p.bytes += len;
                p.msgs.push(msg);
            } else if !p.dropped {
                p.dropped = true;
                sys::shim_log(
                    dir,
                    &format!(
                        "exec {:?}: more than {MAX_PENDING} bytes of output before anyone \
                         attached; the rest is dropped",
                        self.exec_id
                    ),
                );
            }
            return;
        }
        let exec_id = &self.exec_id;
        self.subs.retain(|tx| match tx.try_send(msg.clone()) {
            Ok(()) => true,
            Err(mpsc::error::TrySendError::Full(_)) => {
                sys::shim_log(
                    dir,
                    &format!("attach to {exec_id:?}: the client fell behind; detached it"),
                );
                false
            }
            Err(mpsc::error::TrySendError::Closed(_)) => false,
        });
    }
}

struct Inner {
    procs: HashMap<u64, Proc>,
    /// exec id → key; the init is "" → INIT.
    names: HashMap<String, u64>,
    next_key: u64,
    status: InitStatus,
    deleted: bool,
    log: Option<CriLog>,
    /// Reaped pids that matched no process (yet): (pid, code, signal, time).
    unmatched: Vec<(i32, i32, i32, i64)>,
}

pub struct Shim {
    cfg: Config,
    rt: Runtime,
    inner: Mutex<Inner>,
    shutdown: watch::Sender<bool>,
}

fn lookup(inner: &Inner, exec_id: &str) -> Result<u64, Status> {
    inner
        .names
        .get(exec_id)
        .copied()
        .ok_or_else(|| Status::not_found(format!("no exec process {exec_id:?} in this container")))
}

impl Shim {
    /// The shim for a created container whose init is `pid`. Must run inside the tokio runtime.
    pub fn new(
        cfg: Config,
        rt: Runtime,
        log: Option<CriLog>,
        pid: i32,
        io: ProcIo,
    ) -> io::Result<Arc<Shim>> {
        let shim = Arc::new(Shim {
            cfg,
            rt,
            inner: Mutex::new(Inner {
                procs: HashMap::new(),
                names: HashMap::new(),
                next_key: INIT + 1,
                status: InitStatus::Created,
                deleted: false,
                log,
                unmatched: Vec::new(),
            }),
            shutdown: watch::channel(false).0,
        });
        let terminal = shim.cfg.terminal;
        shim.add_proc(INIT, String::new(), pid, terminal, io, false)?;
        Ok(shim)
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn log_error(&self, msg: &str) {
        sys::shim_log(&self.cfg.dir, msg);
    }

    /// Resolves when Shutdown was called.
    pub async fn shutdown_requested(&self) {
        let mut rx = self.shutdown.subscribe();
        let _ = rx.wait_for(|v| *v).await;
    }

    /// Registers a process and starts copying its output.
    fn add_proc(
        self: &Arc<Self>,
        key: u64,
        exec_id: String,
        pid: i32,
        terminal: bool,
        io: ProcIo,
        buffer: bool,
    ) -> io::Result<()> {
        let reg = |fd: OwnedFd, interest: Interest| -> io::Result<Arc<AsyncFd<OwnedFd>>> {
            sys::set_nonblocking(fd.as_fd())?;
            // SAFETY: the OwnedFd is a valid descriptor that the AsyncFd owns from here on;
            // it is never replaced or closed behind its back.
            Ok(Arc::new(unsafe {
                AsyncFd::register_with_interest(fd, interest)?
            }))
        };
        let mut outputs = Vec::new();
        let mut stdin = None;
        let mut pty = None;
        if let Some(m) = io.pty {
            let m = reg(m, Interest::READABLE | Interest::WRITABLE)?;
            outputs.push((m.clone(), Stream::Stdout));
            if io.pty_stdin {
                stdin = Some(m.clone());
            }
            pty = Some(m);
        }
        if let Some(fd) = io.stdout {
            outputs.push((reg(fd, Interest::READABLE)?, Stream::Stdout));
        }
        if let Some(fd) = io.stderr {
            outputs.push((reg(fd, Interest::READABLE)?, Stream::Stderr));
        }
        if let Some(fd) = io.stdin {
            stdin = Some(reg(fd, Interest::WRITABLE)?);
        }
        let proc = Proc {
            exec_id: exec_id.clone(),
            pid,
            terminal,
            exit: None,
            published: false,
            drain_expired: false,
            open_outputs: outputs.len() as u8,
            stdin,
            pty,
            subs: Vec::new(),
            pending: buffer.then(|| Pending {
                msgs: Vec::new(),
                bytes: 0,
                dropped: false,
            }),
            exit_tx: watch::channel(None).0,
        };
        {
            let mut inner = self.lock();
            inner.procs.insert(key, proc);
            inner.names.insert(exec_id, key);
            // It may have been reaped already (the reaper saw a pid it did not know yet).
            if let Some(i) = inner.unmatched.iter().position(|u| u.0 == pid) {
                let (_, code, signal, at) = inner.unmatched.remove(i);
                drop(inner);
                self.exited(key, code, signal, at);
            }
        }
        for (fd, stream) in outputs {
            tokio::spawn(pump(self.clone(), key, fd, stream));
        }
        Ok(())
    }

    fn output(&self, key: u64, stream: Stream, data: &[u8]) {
        let mut guard = self.lock();
        let inner = &mut *guard;
        if key == INIT {
            if let Some(log) = inner.log.as_mut() {
                if let Err(e) = log.write(stream, data) {
                    sys::shim_log(
                        &self.cfg.dir,
                        &format!("write log {}: {e}", log.path().display()),
                    );
                }
            }
        }
        let Some(p) = inner.procs.get_mut(&key) else {
            return;
        };
        let mut msg = AttachOut::default();
        match stream {
            Stream::Stdout => msg.stdout = data.to_vec(),
            Stream::Stderr => msg.stderr = data.to_vec(),
        }
        p.deliver(msg, &self.cfg.dir);
    }

    fn output_closed(&self, key: u64, stream: Stream) {
        let mut guard = self.lock();
        let inner = &mut *guard;
        if key == INIT {
            if let Some(log) = inner.log.as_mut() {
                if let Err(e) = log.close_stream(stream) {
                    sys::shim_log(
                        &self.cfg.dir,
                        &format!("write log {}: {e}", log.path().display()),
                    );
                }
            }
        }
        if let Some(p) = inner.procs.get_mut(&key) {
            p.open_outputs = p.open_outputs.saturating_sub(1);
        }
        self.check_done(inner, key);
    }

    /// Reaps every exited child.
    fn reap(self: &Arc<Self>) {
        use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
        loop {
            let (pid, code, signal) = match waitpid(None, Some(WaitPidFlag::WNOHANG)) {
                Ok(WaitStatus::Exited(pid, code)) => (pid.as_raw(), code, 0),
                Ok(WaitStatus::Signaled(pid, sig, _)) => {
                    (pid.as_raw(), 128 + sig as i32, sig as i32)
                }
                Ok(WaitStatus::StillAlive) | Err(_) => return,
                Ok(_) => continue,
            };
            let at = sys::now_nanos();
            let key = {
                let mut inner = self.lock();
                let key = inner
                    .procs
                    .iter()
                    .find(|(_, p)| p.pid == pid && p.exit.is_none())
                    .map(|(k, _)| *k);
                if key.is_none() {
                    inner.unmatched.push((pid, code, signal, at));
                    if inner.unmatched.len() > 32 {
                        inner.unmatched.remove(0);
                    }
                }
                key
            };
            if let Some(key) = key {
                self.exited(key, code, signal, at);
            }
        }
    }

    fn exited(self: &Arc<Self>, key: u64, code: i32, signal: i32, at: i64) {
        let reason = if key == INIT && self.oom_killed() {
            "OOMKilled".to_string()
        } else {
            String::new()
        };
        let exit = ExitStatus {
            exit_code: code,
            signal,
            exited_at_unix_nano: at,
            reason,
            exited: true,
        };
        if key == INIT {
            let rec = berth_shim::ExitRecord {
                exit_code: exit.exit_code,
                signal: exit.signal,
                exited_at_unix_nano: exit.exited_at_unix_nano,
                reason: exit.reason.clone(),
            };
            if let Err(e) = rec.write(&self.cfg.dir) {
                self.log_error(&format!("write {}: {e}", berth_shim::EXIT_FILE));
            }
        }
        let mut guard = self.lock();
        let inner = &mut *guard;
        let Some(p) = inner.procs.get_mut(&key) else {
            return;
        };
        p.exit = Some(exit);
        p.stdin = None;
        let shim = self.clone();
        tokio::spawn(async move {
            tokio::time::sleep(DRAIN_GRACE).await;
            let mut guard = shim.lock();
            if let Some(p) = guard.procs.get_mut(&key) {
                p.drain_expired = true;
            }
            shim.check_done(&mut guard, key);
        });
        self.check_done(inner, key);
    }

    /// Ends attach streams once a process exited and its output is drained; reports the exit.
    fn check_done(&self, inner: &mut Inner, key: u64) {
        let Some(p) = inner.procs.get_mut(&key) else {
            return;
        };
        let Some(exit) = p.exit.clone() else {
            return;
        };
        let drained = p.drained();
        if drained {
            p.subs.clear();
        }
        if !p.published && (drained || p.drain_expired) {
            p.published = true;
            p.exit_tx.send_replace(Some(exit));
        }
    }

    /// Whether the container's memory cgroup recorded an OOM kill (v1 or v2; best effort).
    fn oom_killed(&self) -> bool {
        let Some(cg) = &self.cfg.cgroup else {
            return false;
        };
        let rel = cg.trim_start_matches('/');
        let files = [
            std::path::Path::new("/sys/fs/cgroup/memory")
                .join(rel)
                .join("memory.oom_control"),
            std::path::Path::new("/sys/fs/cgroup")
                .join(rel)
                .join("memory.events"),
        ];
        files.iter().any(|f| {
            std::fs::read_to_string(f).is_ok_and(|s| {
                s.lines().any(|l| {
                    l.strip_prefix("oom_kill ")
                        .and_then(|n| n.trim().parse::<u64>().ok())
                        .is_some_and(|n| n > 0)
                })
            })
        })
    }

    fn state_of(&self, inner: &Inner, key: u64) -> StateResponse {
        let p = &inner.procs[&key];
        let status = if p.published {
            "stopped"
        } else if key != INIT {
            "running"
        } else {
            match inner.status {
                InitStatus::Created => "created",
                InitStatus::Running => "running",
                InitStatus::Paused => "paused",
            }
        };
        StateResponse {
            id: self.cfg.id.clone(),
            exec_id: p.exec_id.clone(),
            pid: p.pid as u32,
            status: status.into(),
            terminal: p.terminal,
            exit: if p.published { p.exit.clone() } else { None },
        }
    }

    /// Waits until the process's exit is reported; None if it was forgotten meanwhile.
    async fn wait_exit(&self, key: u64) -> Option<ExitStatus> {
        let mut rx = {
            let inner = self.lock();
            inner.procs.get(&key)?.exit_tx.subscribe()
        };
        let r = rx.wait_for(|v| v.is_some()).await.ok()?.clone();
        r
    }

    /// Writes stdin, closes it, resizes: one message of an Attach stream.
    async fn attach_input(&self, key: u64, m: AttachIn) {
        let (stdin, pty) = {
            let inner = self.lock();
            match inner.procs.get(&key) {
                Some(p) => (p.stdin.clone(), p.pty.clone()),
                None => return,
            }
        };
        if m.width > 0 && m.height > 0 {
            if let Some(pty) = &pty {
                sys::set_winsize(pty.get_ref().as_fd(), m.width, m.height);
            }
        }
        if !m.stdin.is_empty() {
            if let Some(fd) = &stdin {
                if let Err(e) = write_all(fd, &m.stdin).await {
                    if e.raw_os_error() != Some(libc::EPIPE) {
                        self.log_error(&format!("write stdin: {e}"));
                    }
                }
            }
        }
        if m.close_stdin {
            self.close_stdin_of(key);
        }
    }

    fn close_stdin_of(&self, key: u64) {
        let mut inner = self.lock();
        if let Some(p) = inner.procs.get_mut(&key) {
            // A pty is also the output: closing it would end that too. Input just stops.
            p.stdin = None;
        }
    }
}

/// Copies one output stream of a process to the log and the attached clients, until EOF.
async fn pump(shim: Arc<Shim>, key: u64, fd: Arc<AsyncFd<OwnedFd>>, stream: Stream) {
    let mut buf = vec![0u8; READ_BUF];
    loop {
        let r = loop {
            let mut g = match fd.readable().await {
                Ok(g) => g,
                Err(e) => break Err(e),
            };
            match g.try_io(|inner| {
                nix::unistd::read(inner.get_ref(), &mut buf).map_err(io::Error::from)
            }) {
                Ok(r) => break r,
                Err(_would_block) => continue,
            }
        };
        match r {
            Ok(0) => break,
            Ok(n) => shim.output(key, stream, &buf[..n]),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            // EIO from a pty master: the last holder of the slave closed it (EOF).
            Err(_) => break,
        }
    }
    // A pty master is also the process's input: it stays open (in `stdin`) until the
    // process is reaped; dropping our reference here is enough.
    drop(fd);
    shim.output_closed(key, stream);
}

async fn write_all(fd: &AsyncFd<OwnedFd>, data: &[u8]) -> io::Result<()> {
    let mut off = 0;
    while off < data.len() {
        let mut g = fd.writable().await?;
        match g.try_io(|inner| {
            nix::unistd::write(inner.get_ref(), &data[off..]).map_err(io::Error::from)
        }) {
            Ok(Ok(n)) => off += n,
            Ok(Err(e)) if e.kind() == io::ErrorKind::Interrupted => {}
            Ok(Err(e)) => return Err(e),
            Err(_would_block) => {}
        }
    }
    Ok(())
}

/// Reaps children on SIGCHLD for as long as the shim runs.
pub async fn reaper(shim: Arc<Shim>) {
    let mut sig = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::child()) {
        Ok(s) => s,
        Err(e) => {
            shim.log_error(&format!("SIGCHLD handler: {e}"));
            // Poll instead.
            loop {
                shim.reap();
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    };
    loop {
        shim.reap();
        if sig.recv().await.is_none() {
            return;
        }
    }
}

/// Whether `pid` is alive (not gone, not a zombie).
fn alive(pid: i32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(s) => s
            .rsplit_once(')')
            .and_then(|(_, rest)| rest.trim_start().chars().next())
            .is_some_and(|c| c != 'Z' && c != 'X'),
        Err(_) => false,
    }
}

fn send_signal(pid: i32, signal: i32) -> Result<(), Status> {
    // SAFETY: kill(2) with a pid we started and a signal number; no memory is involved.
    if unsafe { libc::kill(pid, signal) } < 0 {
        let e = io::Error::last_os_error();
        if e.raw_os_error() == Some(libc::ESRCH) {
            return Ok(());
        }
        return Err(Status::internal(format!("kill pid {pid}: {e}")));
    }
    Ok(())
}

/// The gRPC service over the shared shim state.
pub struct Service(pub Arc<Shim>);

type AttachStream =
    Pin<Box<dyn tokio_stream::Stream<Item = Result<AttachOut, Status>> + Send + 'static>>;

#[tonic::async_trait]
impl ShimApi for Service {
    async fn state(&self, req: Request<StateRequest>) -> Result<Response<StateResponse>, Status> {
        let inner = self.0.lock();
        let key = lookup(&inner, &req.get_ref().exec_id)?;
        Ok(Response::new(self.0.state_of(&inner, key)))
    }

    async fn start(&self, _: Request<Empty>) -> Result<Response<StateResponse>, Status> {
        let shim = &self.0;
        {
            let inner = shim.lock();
            let init = &inner.procs[&INIT];
            if inner.deleted || init.exit.is_some() || inner.status != InitStatus::Created {
                let st = shim.state_of(&inner, INIT).status;
                let st = if inner.deleted { "deleted".into() } else { st };
                return Err(Status::failed_precondition(format!(
                    "container {} is {st}: start needs it created",
                    shim.cfg.id
                )));
            }
        }
        shim.rt.start()?;
        let mut inner = shim.lock();
        inner.status = InitStatus::Running;
        Ok(Response::new(shim.state_of(&inner, INIT)))
    }

    async fn kill(&self, req: Request<KillRequest>) -> Result<Response<Empty>, Status> {
        let shim = &self.0;
        let req = req.into_inner();
        if req.signal <= 0 || req.signal > 64 {
            return Err(Status::invalid_argument(format!(
                "bad signal {}",
                req.signal
            )));
        }
        let (key, pid, exited, deleted) = {
            let inner = shim.lock();
            let key = lookup(&inner, &req.exec_id)?;
            let p = &inner.procs[&key];
            (key, p.pid, p.exit.is_some(), inner.deleted)
        };
        if exited || (key == INIT && deleted) {
            return Ok(Response::new(Empty {}));
        }
        if key != INIT {
            send_signal(pid, req.signal)?;
            return Ok(Response::new(Empty {}));
        }
        match shim.rt.kill(req.signal, req.all) {
            Ok(()) => Ok(Response::new(Empty {})),
            // It exited and is not reaped yet.
            Err(_) if !alive(pid) => Ok(Response::new(Empty {})),
            Err(e) => Err(e.into()),
        }
    }

    async fn exec(&self, req: Request<ExecRequest>) -> Result<Response<StateResponse>, Status> {
        let shim = &self.0;
        let req = req.into_inner();
        if req.exec_id.is_empty() {
            return Err(Status::invalid_argument("exec_id is required"));
        }
        let key = {
            let mut inner = shim.lock();
            if inner.names.contains_key(&req.exec_id) {
                return Err(Status::already_exists(format!(
                    "exec process {:?} already exists",
                    req.exec_id
                )));
            }
            if inner.deleted || inner.procs[&INIT].exit.is_some() {
                return Err(Status::failed_precondition(format!(
                    "container {} is stopped: exec needs it running",
                    shim.cfg.id
                )));
            }
            let k = inner.next_key;
            inner.next_key += 1;
            k
        };
        let process: oci_spec::runtime::Process = serde_json::from_slice(&req.process_json)
            .map_err(|e| Status::invalid_argument(format!("process_json: {e}")))?;
        let terminal = process.terminal().unwrap_or(false);
        let io_err = |what: &str, e: io::Error| Status::internal(format!("{what}: {e}"));
        let null = sys::devnull().map_err(|e| io_err("open /dev/null", e))?;
        let (err_r, err_w) = sys::pipe().map_err(|e| io_err("pipe", e))?;
        let mut io = ProcIo::default();
        let console = if terminal {
            Some(
                sys::Console::listen(&shim.cfg.dir, &format!("exec-{key}-console.sock"))
                    .map_err(|e| io_err("console socket", e))?,
            )
        } else {
            None
        };
        let (stdin_r, stdout_w);
        if terminal {
            io.pty_stdin = req.stdin;
            stdin_r = None;
            stdout_w = None;
        } else {
            let (or, ow) = sys::pipe().map_err(|e| io_err("pipe", e))?;
            io.stdout = Some(or);
            stdout_w = Some(ow);
            if req.stdin {
                let (ir, iw) = sys::pipe().map_err(|e| io_err("pipe", e))?;
                io.stdin = Some(iw);
                stdin_r = Some(ir);
            } else {
                stdin_r = None;
            }
        }
        let stdio = crate::rt::Stdio {
            stdin: stdin_r.as_ref().map_or(null.as_fd(), |f| f.as_fd()),
            stdout: stdout_w.as_ref().map_or(err_w.as_fd(), |f| f.as_fd()),
            stderr: err_w.as_fd(),
        };
        let scratch = shim.cfg.dir.join(format!("exec-{key}"));
        let r = shim.rt.exec(
            &process,
            &req.process_json,
            console.as_ref().map(|c| c.path.as_path()),
            &scratch,
            &stdio,
        );
        // The process has its copies; ours would keep its output open.
        drop((stdout_w, stdin_r, err_w));
        let pid = match r {
            Ok(pid) => pid,
            Err(e) => {
                let early = sys::read_available(err_r.as_fd(), 64 << 10);
                let msg = match &shim.rt.bin {
                    Some(bin) => {
                        crate::rt::error_line(bin, &early).unwrap_or_else(|| e.to_string())
                    }
                    None => e.to_string(),
                };
                return Err(match e {
                    RtError::NotFound(_) | RtError::BadState(_) => Status::failed_precondition(msg),
                    RtError::Other(_) => Status::internal(msg),
                });
            }
        };
        if terminal {
            // Anything the runtime said (warnings) went to this pipe, not to the process.
            let early = sys::read_available(err_r.as_fd(), 64 << 10);
            for l in String::from_utf8_lossy(&early).lines() {
                if !l.trim().is_empty() {
                    shim.log_error(&format!("exec {:?}: {l}", req.exec_id));
                }
            }
            drop(err_r);
            match console.as_ref().map(|c| c.receive()) {
                Some(Ok(m)) => io.pty = Some(m),
                Some(Err(e)) => {
                    let _ = send_signal(pid, libc::SIGKILL);
                    return Err(Status::internal(format!("exec terminal: {e}")));
                }
                None => {}
            }
        } else {
            io.stderr = Some(err_r);
        }
        drop(console);
        if let Err(e) = shim.add_proc(key, req.exec_id.clone(), pid, terminal, io, true) {
            let _ = send_signal(pid, libc::SIGKILL);
            return Err(io_err("exec stdio", e));
        }
        let inner = shim.lock();
        Ok(Response::new(shim.state_of(&inner, key)))
    }

    async fn resize(&self, req: Request<ResizeRequest>) -> Result<Response<Empty>, Status> {
        let req = req.into_inner();
        let inner = self.0.lock();
        let key = lookup(&inner, &req.exec_id)?;
        if let Some(pty) = &inner.procs[&key].pty {
            sys::set_winsize(pty.get_ref().as_fd(), req.width, req.height);
        }
        Ok(Response::new(Empty {}))
    }

    async fn close_stdin(&self, req: Request<ProcessRef>) -> Result<Response<Empty>, Status> {
        let key = lookup(&self.0.lock(), &req.get_ref().exec_id)?;
        self.0.close_stdin_of(key);
        Ok(Response::new(Empty {}))
    }

    async fn wait(&self, req: Request<ProcessRef>) -> Result<Response<ExitStatus>, Status> {
        let exec_id = req.into_inner().exec_id;
        let key = lookup(&self.0.lock(), &exec_id)?;
        match self.0.wait_exit(key).await {
            Some(x) => Ok(Response::new(x)),
            None => Err(Status::not_found(format!(
                "exec process {exec_id:?} was deleted"
            ))),
        }
    }

    type AttachStream = AttachStream;

    async fn attach(
        &self,
        req: Request<tonic::Streaming<AttachIn>>,
    ) -> Result<Response<Self::AttachStream>, Status> {
        use tokio_stream::StreamExt;
        let shim = self.0.clone();
        let mut inbound = req.into_inner();
        let first = inbound
            .message()
            .await?
            .ok_or_else(|| Status::invalid_argument("attach: no first message"))?;
        let (key, rx) = {
            let mut inner = shim.lock();
            let key = lookup(&inner, &first.exec_id)?;
            let p = inner.procs.get_mut(&key).expect("looked up");
            let pending = p.pending.take();
            let n = pending.as_ref().map_or(0, |p| p.msgs.len());
            let (tx, rx) = mpsc::channel(ATTACH_QUEUE + n + 1);
            let _ = tx.try_send(AttachOut {
                attached: true,
                ..Default::default()
            });
            for m in pending.into_iter().flat_map(|p| p.msgs) {
                let _ = tx.try_send(m);
            }
            if !p.drained() {
                p.subs.push(tx);
            }
            (key, rx)
        };
        let s2 = shim.clone();
        tokio::spawn(async move {
            s2.attach_input(key, first).await;
            while let Ok(Some(m)) = inbound.message().await {
                s2.attach_input(key, m).await;
            }
        });
        let out = tokio_stream::wrappers::ReceiverStream::new(rx).map(Ok);
        Ok(Response::new(Box::pin(out)))
    }

    async fn stats(&self, _: Request<Empty>) -> Result<Response<StatsResponse>, Status> {
        let json = self.0.rt.stats()?;
        Ok(Response::new(StatsResponse { json }))
    }

    async fn pids(&self, _: Request<Empty>) -> Result<Response<PidsResponse>, Status> {
        let pids = self.0.rt.pids()?;
        Ok(Response::new(PidsResponse { pids }))
    }

    async fn pause(&self, _: Request<Empty>) -> Result<Response<Empty>, Status> {
        self.0.rt.pause()?;
        let mut inner = self.0.lock();
        if inner.status == InitStatus::Running {
            inner.status = InitStatus::Paused;
        }
        Ok(Response::new(Empty {}))
    }

    async fn resume(&self, _: Request<Empty>) -> Result<Response<Empty>, Status> {
        self.0.rt.resume()?;
        let mut inner = self.0.lock();
        if inner.status == InitStatus::Paused {
            inner.status = InitStatus::Running;
        }
        Ok(Response::new(Empty {}))
    }

    async fn update(&self, req: Request<UpdateRequest>) -> Result<Response<Empty>, Status> {
        for w in self.0.rt.update(&req.get_ref().resources_json)? {
            self.0.log_error(&format!("update: {w}"));
        }
        Ok(Response::new(Empty {}))
    }

    async fn reopen_log(&self, _: Request<Empty>) -> Result<Response<Empty>, Status> {
        let mut inner = self.0.lock();
        if let Some(log) = inner.log.as_mut() {
            log.reopen().map_err(|e| {
                Status::internal(format!("reopen log {}: {e}", log.path().display()))
            })?;
        }
        Ok(Response::new(Empty {}))
    }

    async fn delete(&self, req: Request<DeleteRequest>) -> Result<Response<ExitStatus>, Status> {
        let shim = &self.0;
        let req = req.into_inner();
        let (key, pid, running, status, deleted) = {
            let inner = shim.lock();
            let key = lookup(&inner, &req.exec_id)?;
            let p = &inner.procs[&key];
            (key, p.pid, !p.published, inner.status, inner.deleted)
        };
        if key == INIT && deleted {
            let inner = shim.lock();
            return Ok(Response::new(
                inner.procs[&INIT].exit.clone().unwrap_or_default(),
            ));
        }
        let exit = if running {
            let reaped = shim.lock().procs[&key].exit.is_some();
            if !reaped {
                let created = key == INIT && status == InitStatus::Created;
                if !req.force && !created {
                    return Err(Status::failed_precondition(format!(
                        "{} is running: stop it first, or delete with force",
                        if key == INIT {
                            format!("container {}", shim.cfg.id)
                        } else {
                            format!("exec process {:?}", req.exec_id)
                        }
                    )));
                }
                if key == INIT {
                    if shim.rt.kill(libc::SIGKILL, true).is_err() {
                        let _ = send_signal(pid, libc::SIGKILL);
                    }
                } else {
                    send_signal(pid, libc::SIGKILL)?;
                }
            }
            match tokio::time::timeout(Duration::from_secs(10), shim.wait_exit(key)).await {
                Ok(Some(x)) => x,
                Ok(None) => return Err(Status::not_found("the process was deleted meanwhile")),
                Err(_) => {
                    return Err(Status::deadline_exceeded(format!(
                        "pid {pid} did not exit within 10s of SIGKILL"
                    )))
                }
            }
        } else {
            shim.lock().procs[&key].exit.clone().unwrap_or_default()
        };
        if key == INIT {
            shim.rt.delete(req.force)?;
            shim.lock().deleted = true;
        } else {
            let mut inner = shim.lock();
            inner.procs.remove(&key);
            inner.names.remove(&req.exec_id);
        }
        Ok(Response::new(exit))
    }

    async fn shutdown(&self, _: Request<Empty>) -> Result<Response<Empty>, Status> {
        let shim = &self.0;
        let deleted = shim.lock().deleted;
        if !deleted && shim.rt.has_state() {
            return Err(Status::failed_precondition(format!(
                "container {} is not deleted: Delete it before Shutdown",
                shim.cfg.id
            )));
        }
        if let Err(e) = std::fs::remove_dir_all(&shim.cfg.dir) {
            if e.kind() != io::ErrorKind::NotFound {
                return Err(Status::internal(format!(
                    "remove {}: {e}",
                    shim.cfg.dir.display()
                )));
            }
        }
        shim.shutdown.send_replace(true);
        Ok(Response::new(Empty {}))
    }
}
