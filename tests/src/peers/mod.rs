//! Peers: Debian's podman and containerd driving the runtime under test, each in a private world.
//!
//! Terms:
//! - **peer dir** `D`: `/tmp/berth-<name>-<pid>-<n>`, everything a peer writes goes below it.
//! - **[`Podman`]**: `podman --root D/storage --runroot D/run --tmpdir D/tmp --cgroup-manager
//!   cgroupfs --events-backend file --runtime D/runtime`, with `CONTAINERS_CONF=D/containers.conf`.
//!   podman 4.3 passes no `--root` to the runtime (runc would use `/run/runc`, berth
//!   `/run/berth-runtime`), and its `--runtime-flag root=…` is not handed on to the exit command
//!   (`podman container cleanup`, which conmon runs when the container ends), which then looks in
//!   the default root and leaves the state behind. So `D/runtime` is a two-line script that
//!   execs the runtime under test with `--root D/rt` and the arguments podman gave. The private
//!   config takes file locks in `D/tmp/locks` instead of the host-wide `/dev/shm/libpod_lock`,
//!   and sets the default `nofile`/`nproc` ulimits to what the runtime can grant: podman asks
//!   for 1048576 as root, which runc refuses without CAP_SYS_RESOURCE (CI VMs withhold it), and
//!   starts conmon (so the runtime) with RLIMIT_NPROC 32768. Containers get cgroups
//!   `/libpod_parent/libpod-<id>`; their ids come from podman's own events log.
//! - **[`Containerd`]**: a `containerd` process with root, state, socket and plugin dirs in `D`,
//!   grpc only on `D/containerd.sock`, no CRI; `ctr -a D/containerd.sock -n berth-test`. `ctr run`
//!   gets `--runc-binary <runtime> --runc-root D/runc --fifo-dir D/fifo`; cgroups are
//!   `/berth-test/<id>` (ctr's `/<namespace>/<id>`).
//!
//! Dropping either removes its containers through the peer, stops what the test started (only
//! processes whose command line names `D`), detaches mounts under `D` deepest first and removes
//! `D`. Images come from the fixtures' OCI layouts, never from a network registry.
//!
//! ```no_run
//! use berth_tests::peers::Podman;
//! let p = Podman::new("hello");
//! p.load_image("busybox");
//! let out = p.cmd(&["run", "--rm", "--network", "none", "localhost/busybox", "echo", "hi"]);
//! assert_eq!(out.assert_ok().stdout.trim(), "hi");
//! p.assert_no_leftovers();
//! ```

mod containerd;
mod podman;

pub use containerd::{Containerd, CONTAINERD_NS};
pub use podman::Podman;

use crate::{mounts_under, process_alive, processes_mentioning, Output, Runtime, CMD_TIMEOUT};
use std::fs;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

static COUNTER: AtomicUsize = AtomicUsize::new(0);

/// A fresh, empty peer dir for the test `name`.
fn peer_dir(name: &str) -> PathBuf {
    let n = COUNTER.fetch_add(1, Ordering::SeqCst);
    let d = PathBuf::from(format!("/tmp/berth-{name}-{}-{n}", std::process::id()));
    let _ = fs::remove_dir_all(&d);
    fs::create_dir_all(&d).unwrap();
    d
}

/// Runs `program args…` in `dir` (stdout and stderr to files there, stdin null), killed after
/// `timeout`; `Err` if it cannot start or overruns.
pub fn try_exe(
    program: &str,
    args: &[String],
    dir: &Path,
    env: &[(&str, &str)],
    timeout: Duration,
) -> Result<Output, String> {
    // Runtime::try_raw is the harness's one command runner; `root` is unused by it.
    let exe = Runtime {
        bin: PathBuf::from(program),
        root: PathBuf::new(),
        dir: dir.to_path_buf(),
    };
    exe.try_raw(args, timeout, env)
}

/// Runs the command line `line` on a terminal: through `script -qc LINE /dev/null`, which gives
/// it a pty (what `exec -it` needs); stdout is what the terminal showed. Panics if it cannot run.
pub fn try_exe_tty(line: &[String], dir: &Path, env: &[(&str, &str)]) -> Output {
    let quoted: Vec<String> = line
        .iter()
        .map(|a| format!("'{}'", a.replace('\'', r"'\''")))
        .collect();
    let args = vec!["-qc".to_string(), quoted.join(" "), "/dev/null".into()];
    try_exe("script", &args, dir, env, CMD_TIMEOUT).unwrap_or_else(|e| panic!("{e}"))
}

/// Whether terminal output shows a line `/dev/pts/N` (what `tty` prints on a pty). script echoes
/// its stdin's end as `^@` somewhere around the output, with runc too.
pub fn shows_pts(out: &str) -> bool {
    out.split("/dev/pts/").skip(1).any(|rest| {
        let n: String = rest.chars().take_while(char::is_ascii_digit).collect();
        !n.is_empty() && rest[n.len()..].starts_with('\r')
    })
}

fn strings(args: &[&str]) -> Vec<String> {
    args.iter().map(|s| s.to_string()).collect()
}

/// Calls `f` up to `tries` times, `pause` apart, until it gives `Some`.
pub fn retry<T>(tries: usize, pause: Duration, mut f: impl FnMut() -> Option<T>) -> Option<T> {
    for i in 0..tries {
        if let Some(v) = f() {
            return Some(v);
        }
        if i + 1 < tries {
            std::thread::sleep(pause);
        }
    }
    None
}

/// Fetches `http://127.0.0.1/` inside the network namespace of `pid` until the nginx welcome page
/// comes (bounded retries); panics with the last answer otherwise.
#[track_caller]
pub fn assert_nginx_welcome(pid: i32, dir: &Path) {
    let pid_s = pid.to_string();
    let args = strings(&[
        "-t",
        &pid_s,
        "-n",
        "curl",
        "-s",
        "--max-time",
        "5",
        "http://127.0.0.1/",
    ]);
    let mut last = None;
    let ok = retry(50, Duration::from_millis(100), || {
        let out = try_exe("nsenter", &args, dir, &[], CMD_TIMEOUT).ok()?;
        let hit = out.stdout.contains("Welcome to nginx!");
        last = Some(out);
        hit.then_some(())
    });
    assert!(
        ok.is_some(),
        "no nginx welcome page in the netns of pid {pid}: {last:?}"
    );
}

/// Lazily detaches every mount at or under `dir`, deepest path first, until none is left (a few
/// passes: mounts may be stacked).
pub fn unmount_all_under(dir: &Path) {
    for _ in 0..5 {
        let mut ms = mounts_under(dir);
        if ms.is_empty() {
            return;
        }
        ms.sort_by_key(|m| std::cmp::Reverse(m.matches('/').count()));
        for m in ms {
            let Ok(c) = std::ffi::CString::new(m) else {
                continue;
            };
            // SAFETY: c is a valid NUL-terminated path that outlives the call.
            unsafe { libc::umount2(c.as_ptr(), libc::MNT_DETACH) };
        }
    }
}

/// SIGKILLs live processes whose command line names `dir` (what the peer started for this test:
/// conmon, shims, cleanup commands, the runtime), never anything else.
fn kill_processes_naming(dir: &Path) {
    let d = dir.display().to_string();
    for (pid, _) in processes_mentioning(&[&d]) {
        if process_alive(pid) {
            // SAFETY: kill(2) of a pid whose command line names this test's private dir.
            unsafe { libc::kill(pid, libc::SIGKILL) };
        }
    }
}

/// Entries of a directory (empty if it does not exist).
fn entries(dir: &Path) -> Vec<String> {
    fs::read_dir(dir)
        .map(|rd| {
            rd.flatten()
                .map(|e| e.path().display().to_string())
                .collect()
        })
        .unwrap_or_default()
}

/// Waits (bounded) for `check` to find nothing, then panics with what it still finds.
#[track_caller]
fn assert_nothing_left(what: &str, check: impl Fn() -> Vec<String>) {
    let left = retry(100, Duration::from_millis(100), || {
        let l = check();
        l.is_empty().then_some(())
    });
    if left.is_none() {
        panic!("{what} left behind: {:#?}", check());
    }
}
