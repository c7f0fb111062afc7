//! berth-shim: one per container. It creates the container (through the runtime library, or a
//! runc-compatible binary with `--runtime`), owns its stdio and log, reaps it, records its exit
//! status and serves the API of `proto/berth/shim/v1/shim.proto` on `<dir>/shim.sock`.
//!
//! Start-up: the process forks at once; the parent waits for one line from the child on a pipe
//! ("ok", or "error <message>") and exits 0, or 1 printing `berth-shim: <message>`. The child
//! becomes a session leader and a child subreaper, creates the container, binds the socket,
//! writes its pid file, reports, and serves. Since its parent is gone, it outlives its caller.

mod args;
mod crilog;
mod rt;
mod service;
mod sys;

use std::io::{Read, Write};
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::os::unix::net::UnixListener;
use std::path::{Path, PathBuf};

fn main() {
    let a = match args::parse(std::env::args_os().skip(1)) {
        Ok(args::Parsed::Run(a)) => a,
        Ok(args::Parsed::Help) => {
            println!("{}", args::USAGE);
            return;
        }
        Ok(args::Parsed::Version) => {
            println!("berth-shim {}", env!("CARGO_PKG_VERSION"));
            return;
        }
        Err(e) => fail(&e),
    };
    let (r, w) = match sys::pipe() {
        Ok(p) => p,
        Err(e) => fail(&format!("pipe: {e}")),
    };
    // SAFETY: the process has one thread here (no runtime, no other threads yet): the child
    // may go on running ordinary code.
    match unsafe { nix::unistd::fork() } {
        Ok(nix::unistd::ForkResult::Parent { child }) => {
            drop(w);
            std::process::exit(parent(r, child));
        }
        Ok(nix::unistd::ForkResult::Child) => {
            drop(r);
            child(a, w)
        }
        Err(e) => fail(&format!("fork: {e}")),
    }
}

fn fail(msg: &str) -> ! {
    eprintln!("berth-shim: {msg}");
    std::process::exit(1)
}

/// Waits for the child's one-line report; returns the exit code.
fn parent(r: OwnedFd, child: nix::unistd::Pid) -> i32 {
    let mut buf = Vec::new();
    let mut f = std::fs::File::from(r);
    let mut child_gone = false;
    loop {
        let mut p = libc::pollfd {
            fd: f.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        };
        // SAFETY: one valid pollfd.
        let n = unsafe { libc::poll(&mut p, 1, 200) };
        if n > 0 {
            let mut chunk = [0u8; 4096];
            match f.read(&mut chunk) {
                Ok(0) => break,
                Ok(k) => {
                    buf.extend_from_slice(&chunk[..k]);
                    if buf.contains(&b'\n') {
                        break;
                    }
                }
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(_) => break,
            }
            continue;
        }
        if child_gone {
            break;
        }
        // The container's init may hold a copy of the pipe (it was cloned from the child), so
        // EOF is not enough to tell that the child died: ask.
        use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
        match waitpid(child, Some(WaitPidFlag::WNOHANG)) {
            Ok(WaitStatus::StillAlive) => {}
            // Gone: read what it may have written, once more.
            _ => child_gone = true,
        }
    }
    let text = String::from_utf8_lossy(&buf);
    let line = text.lines().next().unwrap_or("");
    if line == "ok" {
        return 0;
    }
    match line.strip_prefix("error ") {
        Some(msg) => eprintln!("berth-shim: {msg}"),
        None => eprintln!("berth-shim: the shim exited during start-up"),
    }
    1
}

fn child(a: args::Args, report: OwnedFd) -> ! {
    // SAFETY: setsid and prctl with integer arguments.
    unsafe {
        libc::setsid();
        libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0);
    }
    sys::close_inherited(report.as_raw_fd());
    let mut report = std::fs::File::from(report);
    let null = sys::devnull().and_then(|n| {
        for fd in 0..3 {
            sys::dup2(n.as_raw_fd(), fd)?;
        }
        Ok(n)
    });
    if let Err(e) = null {
        let _ = writeln!(report, "error /dev/null: {e}");
        std::process::exit(1);
    }
    drop(null);
    let ready = match startup(&a) {
        Ok(r) => r,
        Err(msg) => {
            let _ = writeln!(report, "error {}", msg.replace('\n', " "));
            std::process::exit(1);
        }
    };
    let dir = a.dir.clone();
    let _ = writeln!(report, "ok");
    drop(report);
    if let Err(e) = serve(ready) {
        sys::shim_log(&dir, &format!("serve: {e}"));
        std::process::exit(1);
    }
    std::process::exit(0)
}

/// What start-up hands to the server.
struct Ready {
    cfg: service::Config,
    rt: rt::Runtime,
    log: Option<crilog::CriLog>,
    pid: i32,
    io: service::ProcIo,
    listener: UnixListener,
}

/// Undoes a failed start-up: the container, the files, the shim directory if it made it.
struct Undo<'a> {
    dir: &'a Path,
    created_dir: bool,
    rt: Option<&'a rt::Runtime>,
    armed: bool,
}

impl Drop for Undo<'_> {
    fn drop(&mut self) {
        if !self.armed {
            return;
        }
        if let Some(rt) = self.rt {
            if rt.has_state() {
                let _ = rt.delete(true);
            }
        }
        if self.created_dir {
            let _ = std::fs::remove_dir_all(self.dir);
        } else {
            for f in [
                berth_shim::SOCKET,
                berth_shim::PID_FILE,
                berth_shim::EXIT_FILE,
                INIT_PID_FILE,
            ] {
                let _ = std::fs::remove_file(self.dir.join(f));
            }
        }
    }
}

const INIT_PID_FILE: &str = "init.pid";

fn startup(a: &args::Args) -> Result<Ready, String> {
    berth_runtime::state::validate_id(&a.id).map_err(|e| e.to_string())?;
    let dir = &a.dir;
    let rt = rt::Runtime::new(a.runtime_root.clone(), a.id.clone(), a.runtime.clone())
        .map_err(|e| format!("open /dev/null: {e}"))?;
    let mut undo = Undo {
        dir,
        created_dir: false,
        rt: None,
        armed: true,
    };
    match std::fs::metadata(dir) {
        Ok(_) => {
            if let Some(pid) = live_shim(dir) {
                undo.armed = false;
                return Err(format!(
                    "a shim (pid {pid}) already serves {}",
                    dir.display()
                ));
            }
            for f in [
                berth_shim::SOCKET,
                berth_shim::PID_FILE,
                berth_shim::EXIT_FILE,
            ] {
                let _ = std::fs::remove_file(dir.join(f));
            }
        }
        Err(_) => {
            if let Some(parent) = dir.parent() {
                std::fs::create_dir_all(parent)
                    .map_err(|e| format!("create {}: {e}", parent.display()))?;
            }
            std::fs::create_dir(dir).map_err(|e| format!("create {}: {e}", dir.display()))?;
            undo.created_dir = true;
        }
    }
    if rt.has_state() {
        return Err(format!(
            "container {:?} already exists in {}",
            a.id,
            a.runtime_root.display()
        ));
    }
    let bundle = std::fs::canonicalize(&a.bundle)
        .map_err(|e| format!("bundle {}: {e}", a.bundle.display()))?;

    // The container's stdio. With a terminal the runtime's own output goes to `err` only.
    let pipe = || sys::pipe().map_err(|e| format!("pipe: {e}"));
    let null = sys::devnull().map_err(|e| format!("open /dev/null: {e}"))?;
    let (err_r, err_w) = pipe()?;
    let mut io = service::ProcIo::default();
    let (mut out_w, mut in_r) = (None, None);
    let console = if a.tty {
        io.pty_stdin = a.stdin;
        Some(
            sys::Console::listen(dir, "console.sock")
                .map_err(|e| format!("console socket: {e}"))?,
        )
    } else {
        let (r, w) = pipe()?;
        io.stdout = Some(r);
        out_w = Some(w);
        if a.stdin {
            let (r, w) = pipe()?;
            io.stdin = Some(w);
            in_r = Some(r);
        }
        None
    };
    let stdio = rt::Stdio {
        stdin: in_r.as_ref().map_or(null.as_fd(), |f| f.as_fd()),
        stdout: out_w.as_ref().map_or(err_w.as_fd(), |f| f.as_fd()),
        stderr: err_w.as_fd(),
    };
    let created = rt.create(
        &bundle,
        console.as_ref().map(|c| c.path.as_path()),
        &dir.join(INIT_PID_FILE),
        &stdio,
    );
    undo.rt = Some(&rt);
    drop((out_w, in_r, err_w));
    // Until `start` the container runs nothing of its own: what is in the pipes now came from
    // the runtime (warnings, or why create failed).
    let mut early = Vec::new();
    if let Some(r) = &io.stdout {
        early.extend(sys::read_available(r.as_fd(), 1 << 20));
    }
    early.extend(sys::read_available(err_r.as_fd(), 1 << 20));
    let pid = match created {
        Ok(pid) => pid,
        Err(e) => {
            let msg = match &a.runtime {
                Some(bin) => rt::error_line(bin, &early).unwrap_or_else(|| e.to_string()),
                None => e.to_string(),
            };
            drop(undo);
            return Err(msg);
        }
    };
    let early: Vec<String> = String::from_utf8_lossy(&early)
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| format!("create: {}", l.trim()))
        .collect();
    if a.tty {
        let master = console
            .as_ref()
            .expect("tty")
            .receive()
            .map_err(|e| format!("terminal: {e}"))?;
        io.pty = Some(master);
    } else {
        io.stderr = Some(err_r);
    }
    drop(console);
    let log = match &a.log {
        Some(p) => Some(
            crilog::CriLog::open(p, a.tty).map_err(|e| format!("open log {}: {e}", p.display()))?,
        ),
        None => None,
    };
    let sock = dir.join(berth_shim::SOCKET);
    let listener =
        UnixListener::bind(&sock).map_err(|e| format!("listen on {}: {e}", sock.display()))?;
    sys::write_atomic(
        &dir.join(berth_shim::PID_FILE),
        std::process::id().to_string().as_bytes(),
    )
    .map_err(|e| format!("write pid file: {e}"))?;
    for l in early {
        sys::shim_log(dir, &l);
    }
    undo.armed = false;
    drop(undo);
    Ok(Ready {
        cfg: service::Config {
            id: a.id.clone(),
            dir: dir.clone(),
            terminal: a.tty,
            cgroup: cgroups_path(&bundle, &a.id),
        },
        rt,
        log,
        pid,
        io,
        listener,
    })
}

/// The pid of a live berth-shim whose pid file is in `dir`.
fn live_shim(dir: &Path) -> Option<i32> {
    let pid: i32 = std::fs::read_to_string(dir.join(berth_shim::PID_FILE))
        .ok()?
        .trim()
        .parse()
        .ok()?;
    let cmd = std::fs::read(format!("/proc/{pid}/cmdline")).ok()?;
    let argv0 = cmd.split(|b| *b == 0).next()?;
    (pid != std::process::id() as i32 && argv0.ends_with(b"berth-shim")).then_some(pid)
}

/// The container's cgroup (`linux.cgroupsPath`, as the runtime resolves it), for the OOM check.
fn cgroups_path(bundle: &Path, id: &str) -> Option<String> {
    let data = std::fs::read(bundle.join("config.json")).ok()?;
    let v: serde_json::Value = serde_json::from_slice(&data).ok()?;
    let p = v
        .get("linux")
        .and_then(|l| l.get("cgroupsPath"))
        .and_then(|p| p.as_str())
        .unwrap_or("");
    let parent = berth_runtime::cgroups::BERTH_PARENT;
    Some(if p.is_empty() {
        format!("{parent}/{id}")
    } else if p.starts_with('/') {
        p.to_string()
    } else if p.matches(':').count() == 2 {
        return None;
    } else {
        format!("{parent}/{p}")
    })
}

fn serve(r: Ready) -> std::io::Result<()> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_io()
        .enable_time()
        .build()?;
    let dir: PathBuf = r.cfg.dir.clone();
    runtime.block_on(async move {
        r.listener.set_nonblocking(true)?;
        let listener = tokio::net::UnixListener::from_std(r.listener)?;
        let shim = service::Shim::new(r.cfg, r.rt, r.log, r.pid, r.io)?;
        tokio::spawn(service::reaper(shim.clone()));
        let stop = shim.clone();
        let server = tonic::transport::Server::builder()
            .add_service(berth_shim::api::shim_server::ShimServer::new(
                service::Service(shim.clone()),
            ))
            .serve_with_incoming_shutdown(
                tokio_stream::wrappers::UnixListenerStream::new(listener),
                async move { stop.shutdown_requested().await },
            );
        let grace = async {
            shim.shutdown_requested().await;
            // Let the answer to Shutdown go out; do not wait for clients that stay.
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        };
        tokio::select! {
            r = server => r.map_err(std::io::Error::other)?,
            _ = grace => {}
        }
        Ok::<_, std::io::Error>(())
    })?;
    let _ = std::fs::remove_dir_all(&dir);
    Ok(())
}

#[cfg(test)]
mod tests {
    #[test]
    fn cgroup_paths() {
        let d = std::env::temp_dir().join(format!("shim-cg-{}", std::process::id()));
        std::fs::create_dir_all(&d).unwrap();
        let w = |v: &str| std::fs::write(d.join("config.json"), v).unwrap();
        w(r#"{"linux":{"cgroupsPath":"/berth/x"}}"#);
        assert_eq!(super::cgroups_path(&d, "x").as_deref(), Some("/berth/x"));
        w(r#"{"linux":{}}"#);
        assert_eq!(super::cgroups_path(&d, "x").as_deref(), Some("/berth/x"));
        w(r#"{"linux":{"cgroupsPath":"a:b:c"}}"#);
        assert_eq!(super::cgroups_path(&d, "x"), None);
        let _ = std::fs::remove_dir_all(&d);
    }
}
