//! Harness for the end-to-end tests: real containers, run as root, through the runtime's CLI.
//!
//! Terms:
//! - **runtime**: the binary under test. `BERTH_RUNTIME` names it (e.g. `/usr/sbin/runc`, to check
//!   the tests themselves against the reference); by default `target/<profile>/berth-runtime` of
//!   this workspace, `<profile>` being `BERTH_PROFILE` (default `debug`) and `target/` being
//!   `CARGO_TARGET_DIR` when that is set.
//! - **fixtures**: what `../shared/fixtures/build.sh` made, in `BERTH_FIXTURES` (default
//!   `/var/cache/berth-fixtures`); the busybox rootfs is read-only to the tests.
//! - **[`Ctx`]**: one test's world: a temp dir (`/tmp/berth-t-<pid>-<n>`) holding the bundle and
//!   the runtime's `--root`, a unique container id `t-<name>-<pid>`, and a cgroup path
//!   `/berth-test/<id>`. Dropping it (also while a test panics) force-deletes every container
//!   the test made, kills what is left in their cgroups, removes those cgroups, detaches mounts
//!   under the temp dir and removes it.
//!
//! ```no_run
//! use berth_tests::*;
//! let t = Ctx::new("hostname");
//! t.write_spec(&t.spec().sh("hostname").hostname("box"));
//! let out = t.run();
//! out.assert_ok();
//! assert_eq!(out.stdout.trim(), "box");
//! t.assert_no_leftovers(&t.id);
//! ```

pub mod peers;

use serde_json::{json, Value};
use std::fs;
use std::io::Read;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// How long one runtime command may take before the harness kills it and fails the test.
pub const CMD_TIMEOUT: Duration = Duration::from_secs(60);

static COUNTER: AtomicUsize = AtomicUsize::new(0);

/// The workspace root (the parent of this crate).
pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests/ has a parent")
        .to_path_buf()
}

/// The runtime binary under test (see the module docs).
pub fn runtime_path() -> PathBuf {
    if let Some(p) = std::env::var_os("BERTH_RUNTIME") {
        return PathBuf::from(p);
    }
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .map(|t| {
            if t.is_absolute() {
                t
            } else {
                workspace_root().join(t)
            }
        })
        .unwrap_or_else(|| workspace_root().join("target"));
    let profile = std::env::var("BERTH_PROFILE").unwrap_or_else(|_| "debug".into());
    let p = target.join(profile).join("berth-runtime");
    assert!(
        p.exists(),
        "{} is not built: run `cargo build --workspace --bins` (or set BERTH_RUNTIME)",
        p.display()
    );
    p
}

/// Whether the runtime under test is runc or crun (the reference), not berth. Tests of behaviour
/// only berth has (warnings where runc fails, exact error wording) skip themselves then.
pub fn is_reference_runtime() -> bool {
    let p = runtime_path();
    let name = p.file_name().and_then(|n| n.to_str()).unwrap_or("");
    name == "runc" || name == "crun"
}

/// Skip the rest of a berth-only test when running against runc/crun.
#[macro_export]
macro_rules! berth_only {
    () => {
        if $crate::is_reference_runtime() {
            eprintln!(
                "skipped: berth-only behaviour, runtime is {:?}",
                $crate::runtime_path()
            );
            return;
        }
    };
}

/// The fixtures directory (see the module docs); panics with instructions if it is not built.
pub fn fixtures_dir() -> PathBuf {
    let d = PathBuf::from(
        std::env::var_os("BERTH_FIXTURES").unwrap_or_else(|| "/var/cache/berth-fixtures".into()),
    );
    assert!(
        d.join("fixtures.env").exists(),
        "no fixtures in {}: run scripts/setup.sh (or set BERTH_FIXTURES)",
        d.display()
    );
    d
}

/// The fixture busybox rootfs (read-only to tests: never write into it).
pub fn busybox_rootfs() -> PathBuf {
    fixtures_dir().join("busybox/bundle/rootfs")
}

/// Whether `/sys/fs/cgroup` is a pure cgroup v2 mount.
pub fn cgroup_v2_only() -> bool {
    Path::new("/sys/fs/cgroup/cgroup.controllers").exists()
}

/// The host path of a cgroup controller file of `cgroups_path` (e.g. `("memory",
/// "/berth-test/x", "memory.limit_in_bytes")`). On a pure v2 host the controller is ignored.
pub fn cgroup_file(controller: &str, cgroups_path: &str, file: &str) -> PathBuf {
    let rel = cgroups_path.trim_start_matches('/');
    if cgroup_v2_only() {
        Path::new("/sys/fs/cgroup").join(rel).join(file)
    } else {
        Path::new("/sys/fs/cgroup")
            .join(controller)
            .join(rel)
            .join(file)
    }
}

// ---------------------------------------------------------------------------------------------
// config.json builder

/// A config.json under construction: `serde_json::Value` edits with a few named shortcuts.
#[derive(Clone, Debug)]
pub struct Spec(pub Value);

impl Spec {
    /// A config like `runc spec`'s (the fixture bundle's), running `/bin/true` on `rootfs` (an
    /// absolute `root.path`), read-only, with `cgroupsPath` set, and a tmpfs on `/tmp`.
    pub fn base(rootfs: &Path, cgroups_path: &str) -> Spec {
        let text = fs::read_to_string(fixtures_dir().join("busybox/bundle/config.json"))
            .expect("fixture config.json");
        let mut v: Value = serde_json::from_str(&text).expect("fixture config.json is JSON");
        v["root"] = json!({"path": rootfs.to_str().unwrap(), "readonly": true});
        v["linux"]["cgroupsPath"] = json!(cgroups_path);
        v["process"]["args"] = json!(["/bin/true"]);
        v["process"]["terminal"] = json!(false);
        v["mounts"].as_array_mut().unwrap().push(json!({
            "destination": "/tmp", "type": "tmpfs", "source": "tmpfs",
            "options": ["nosuid", "nodev", "mode=1777", "size=16m"]
        }));
        Spec(v)
    }

    /// Sets the value at a JSON pointer (`/process/env`), creating objects on the way.
    pub fn set(mut self, pointer: &str, value: Value) -> Self {
        let mut cur = &mut self.0;
        for part in pointer.trim_start_matches('/').split('/') {
            if !cur.is_object() {
                *cur = json!({});
            }
            cur = cur
                .as_object_mut()
                .unwrap()
                .entry(part.to_string())
                .or_insert(Value::Null);
        }
        *cur = value;
        self
    }

    /// Removes the value at a JSON pointer, if present.
    pub fn remove(mut self, pointer: &str) -> Self {
        let (parent, key) = pointer.rsplit_once('/').unwrap();
        if let Some(Value::Object(m)) = self.0.pointer_mut(parent) {
            m.remove(key);
        }
        self
    }

    /// Appends to the array at a JSON pointer (created if missing).
    pub fn push(mut self, pointer: &str, value: Value) -> Self {
        if !matches!(self.0.pointer(pointer), Some(Value::Array(_))) {
            self = self.set(pointer, json!([]));
        }
        self.0
            .pointer_mut(pointer)
            .unwrap()
            .as_array_mut()
            .unwrap()
            .push(value);
        self
    }

    pub fn args(self, args: &[&str]) -> Self {
        self.set("/process/args", json!(args))
    }

    /// `sh -c script`.
    pub fn sh(self, script: &str) -> Self {
        self.args(&["sh", "-c", script])
    }

    pub fn env(self, kv: &str) -> Self {
        self.push("/process/env", json!(kv))
    }

    pub fn cwd(self, cwd: &str) -> Self {
        self.set("/process/cwd", json!(cwd))
    }

    pub fn user(self, uid: u32, gid: u32) -> Self {
        self.set("/process/user", json!({"uid": uid, "gid": gid}))
    }

    pub fn hostname(self, h: &str) -> Self {
        self.set("/hostname", json!(h))
    }

    pub fn readonly(self, ro: bool) -> Self {
        self.set("/root/readonly", json!(ro))
    }

    pub fn mount(self, dest: &str, typ: &str, source: &str, options: &[&str]) -> Self {
        self.push(
            "/mounts",
            json!({"destination": dest, "type": typ, "source": source, "options": options}),
        )
    }

    /// Sets `linux.resources.<key>`.
    pub fn resources(self, key: &str, value: Value) -> Self {
        self.set(&format!("/linux/resources/{key}"), value)
    }

    /// Removes the namespace of this type from `linux.namespaces`.
    pub fn without_namespace(mut self, typ: &str) -> Self {
        if let Some(a) = self.0["linux"]["namespaces"].as_array_mut() {
            a.retain(|n| n["type"] != typ);
        }
        self
    }

    /// Adds (or replaces) a namespace of this type, joined by `path` when given.
    pub fn namespace(self, typ: &str, path: Option<&str>) -> Self {
        let ns = match path {
            Some(p) => json!({"type": typ, "path": p}),
            None => json!({"type": typ}),
        };
        self.without_namespace(typ).push("/linux/namespaces", ns)
    }

    /// Adds a hook of `kind` (prestart, createRuntime, …): `path` with `args`, `env` and timeout.
    pub fn hook(
        self,
        kind: &str,
        path: &str,
        args: &[&str],
        env: &[&str],
        timeout: Option<u32>,
    ) -> Self {
        let mut h = json!({"path": path, "args": args});
        if !env.is_empty() {
            h["env"] = json!(env);
        }
        if let Some(t) = timeout {
            h["timeout"] = json!(t);
        }
        self.push(&format!("/hooks/{kind}"), h)
    }

    /// Sets all five capability sets to `caps` (ambient needs them inheritable too).
    pub fn caps(self, caps: &[&str]) -> Self {
        self.set(
            "/process/capabilities",
            json!({"bounding": caps, "effective": caps, "permitted": caps, "ambient": caps, "inheritable": caps}),
        )
    }

    pub fn seccomp(self, profile: Value) -> Self {
        self.set("/linux/seccomp", profile)
    }

    pub fn to_json(&self) -> String {
        serde_json::to_string_pretty(&self.0).unwrap()
    }
}

// ---------------------------------------------------------------------------------------------
// running the CLI

/// What one runtime command did.
#[derive(Debug, Clone)]
pub struct Output {
    /// The command line, for messages.
    pub cmdline: String,
    /// Exit code, or `128 + signal` when a signal ended the runtime.
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

impl Output {
    pub fn ok(&self) -> bool {
        self.code == 0
    }

    /// Panics with everything the command said unless it exited 0.
    #[track_caller]
    pub fn assert_ok(&self) -> &Self {
        assert!(self.ok(), "`{}` failed: {self}", self.cmdline);
        self
    }

    /// Panics unless the command exited with a non-zero code.
    #[track_caller]
    pub fn assert_failed(&self) -> &Self {
        assert!(!self.ok(), "`{}` should have failed: {self}", self.cmdline);
        self
    }

    /// Panics unless stderr mentions at least one of `nouns` (case-insensitive).
    #[track_caller]
    pub fn assert_stderr_mentions(&self, nouns: &[&str]) -> &Self {
        let err = self.stderr.to_lowercase();
        assert!(
            nouns.iter().any(|n| err.contains(&n.to_lowercase())),
            "`{}`: stderr should mention one of {nouns:?}: {self}",
            self.cmdline
        );
        self
    }

    /// Berth only: the error is exactly one non-empty line on stderr.
    #[track_caller]
    pub fn assert_one_line_error(&self) -> &Self {
        if !is_reference_runtime() {
            let lines: Vec<_> = self
                .stderr
                .lines()
                .filter(|l| !l.trim().is_empty())
                .collect();
            assert_eq!(
                lines.len(),
                1,
                "`{}`: want a one-line error: {self}",
                self.cmdline
            );
        }
        self
    }

    /// stdout parsed as JSON.
    #[track_caller]
    pub fn json(&self) -> Value {
        serde_json::from_str(&self.stdout)
            .unwrap_or_else(|e| panic!("`{}`: stdout is not JSON ({e}): {self}", self.cmdline))
    }
}

impl std::fmt::Display for Output {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "exit {}\n--- stdout\n{}--- stderr\n{}---",
            self.code, self.stdout, self.stderr
        )
    }
}

/// The runtime binary with a private `--root`; every call writes its stdout and stderr to files
/// (not pipes: a detached container keeps its stdio open), waits at most [`CMD_TIMEOUT`].
#[derive(Debug)]
pub struct Runtime {
    pub bin: PathBuf,
    pub root: PathBuf,
    /// Where output files go.
    pub dir: PathBuf,
}

impl Runtime {
    /// Runs `bin --root ROOT args…`.
    pub fn cmd(&self, args: &[&str]) -> Output {
        self.cmd_with(args, CMD_TIMEOUT, &[])
    }

    /// Runs `bin --root ROOT args…` with extra environment, killing it after `timeout`.
    pub fn cmd_with(&self, args: &[&str], timeout: Duration, env: &[(&str, &str)]) -> Output {
        let mut full: Vec<String> = vec!["--root".into(), self.root.display().to_string()];
        full.extend(args.iter().map(|s| s.to_string()));
        self.raw(&full, timeout, env)
    }

    /// Runs the binary with exactly these arguments (no `--root`); panics if it cannot be
    /// started or overruns `timeout`.
    pub fn raw(&self, args: &[String], timeout: Duration, env: &[(&str, &str)]) -> Output {
        self.try_raw(args, timeout, env)
            .unwrap_or_else(|e| panic!("{e}"))
    }

    /// Like [`Runtime::raw`], but returns an error instead of panicking (for Drop).
    pub fn try_raw(
        &self,
        args: &[String],
        timeout: Duration,
        env: &[(&str, &str)],
    ) -> Result<Output, String> {
        let n = COUNTER.fetch_add(1, Ordering::SeqCst);
        let out_path = self.dir.join(format!("cmd-{n}.out"));
        let err_path = self.dir.join(format!("cmd-{n}.err"));
        let cmdline = format!("{} {}", self.bin.display(), args.join(" "));
        let file = |p: &Path| fs::File::create(p).map_err(|e| format!("{}: {e}", p.display()));
        let mut cmd = Command::new(&self.bin);
        cmd.args(args)
            .stdin(Stdio::null())
            .stdout(file(&out_path)?)
            .stderr(file(&err_path)?)
            .current_dir(&self.dir);
        for (k, v) in env {
            cmd.env(k, v);
        }
        let mut child = cmd
            .spawn()
            .map_err(|e| format!("cannot start `{cmdline}`: {e}"))?;
        let start = Instant::now();
        let status = loop {
            if let Some(s) = child
                .try_wait()
                .map_err(|e| format!("wait `{cmdline}`: {e}"))?
            {
                break s;
            }
            if start.elapsed() > timeout {
                let _ = child.kill();
                let _ = child.wait();
                return Err(format!("`{cmdline}` did not finish within {timeout:?}"));
            }
            std::thread::sleep(Duration::from_millis(5));
        };
        use std::os::unix::process::ExitStatusExt;
        let code = status
            .code()
            .unwrap_or_else(|| 128 + status.signal().unwrap_or(0));
        Ok(Output {
            cmdline,
            code,
            stdout: read_lossy(&out_path),
            stderr: read_lossy(&err_path),
        })
    }
}

fn read_lossy(p: &Path) -> String {
    let mut b = Vec::new();
    if let Ok(mut f) = fs::File::open(p) {
        let _ = f.read_to_end(&mut b);
    }
    String::from_utf8_lossy(&b).into_owned()
}

// ---------------------------------------------------------------------------------------------
// one test's world

/// One test's temp dir, runtime, container id(s) and cleanup (see the module docs).
pub struct Ctx {
    /// `t-<name>-<pid>`: the main container id of this test.
    pub id: String,
    /// The temp dir; holds `bundle/`, `root/` and command output.
    pub dir: PathBuf,
    /// The bundle directory (`config.json` goes here).
    pub bundle: PathBuf,
    pub rt: Runtime,
    ids: Mutex<Vec<String>>,
}

impl Ctx {
    /// A fresh world for the test `name` (short: it becomes part of ids and paths).
    pub fn new(name: &str) -> Ctx {
        let n = COUNTER.fetch_add(1, Ordering::SeqCst);
        let pid = std::process::id();
        let dir = PathBuf::from(format!("/tmp/berth-t-{pid}-{n}"));
        let _ = fs::remove_dir_all(&dir);
        let bundle = dir.join("bundle");
        let root = dir.join("root");
        fs::create_dir_all(&bundle).unwrap();
        fs::create_dir_all(&root).unwrap();
        let id = format!("t-{name}-{pid}");
        let rt = Runtime {
            bin: runtime_path(),
            root,
            dir: dir.clone(),
        };
        Ctx {
            ids: Mutex::new(vec![id.clone()]),
            id,
            dir,
            bundle,
            rt,
        }
    }

    /// Another container id owned (and cleaned up) by this test: `<id>-<suffix>`.
    pub fn other_id(&self, suffix: &str) -> String {
        let id = format!("{}-{suffix}", self.id);
        self.ids.lock().unwrap().push(id.clone());
        id
    }

    /// The cgroupsPath tests give container `id`.
    pub fn cgroups_path(id: &str) -> String {
        format!("/berth-test/{id}")
    }

    /// The base spec for the main container, on the shared read-only busybox rootfs.
    pub fn spec(&self) -> Spec {
        Spec::base(&busybox_rootfs(), &Self::cgroups_path(&self.id))
    }

    /// The base spec on a private writable copy of the busybox rootfs (`<dir>/rootfs`, made with
    /// `cp -a` on first use), with `root.readonly` false.
    pub fn spec_writable(&self) -> Spec {
        let copy = self.writable_rootfs();
        Spec::base(&copy, &Self::cgroups_path(&self.id)).readonly(false)
    }

    /// The private copy of the busybox rootfs (made on first use).
    pub fn writable_rootfs(&self) -> PathBuf {
        let copy = self.dir.join("rootfs");
        if !copy.exists() {
            let st = Command::new("cp")
                .arg("-a")
                .arg(busybox_rootfs())
                .arg(&copy)
                .status()
                .unwrap();
            assert!(st.success(), "cp -a of the busybox rootfs failed");
        }
        copy
    }

    /// Writes `config.json` into the bundle.
    pub fn write_spec(&self, spec: &Spec) {
        self.write_spec_in(&self.bundle, spec);
    }

    /// Writes `config.json` into another bundle dir (created if needed).
    pub fn write_spec_in(&self, bundle: &Path, spec: &Spec) {
        fs::create_dir_all(bundle).unwrap();
        fs::write(bundle.join("config.json"), spec.to_json()).unwrap();
    }

    /// A new bundle dir `<dir>/<name>` with this spec in it.
    pub fn bundle_with(&self, name: &str, spec: &Spec) -> PathBuf {
        let b = self.dir.join(name);
        self.write_spec_in(&b, spec);
        b
    }

    /// A temp file path inside this test's dir.
    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }

    pub fn cmd(&self, args: &[&str]) -> Output {
        self.rt.cmd(args)
    }

    fn bundle_str(&self) -> String {
        self.bundle.display().to_string()
    }

    /// `run --bundle B <id>` (foreground): the exit code is the container's.
    pub fn run(&self) -> Output {
        self.cmd(&["run", "--bundle", &self.bundle_str(), &self.id])
    }

    /// `run --detach --bundle B <id>`.
    pub fn run_detached(&self) -> Output {
        self.cmd(&["run", "--detach", "--bundle", &self.bundle_str(), &self.id])
    }

    /// `create --bundle B <id>`.
    pub fn create(&self) -> Output {
        self.cmd(&["create", "--bundle", &self.bundle_str(), &self.id])
    }

    pub fn start(&self) -> Output {
        self.cmd(&["start", &self.id])
    }

    /// `state <id>` parsed (panics if it fails).
    pub fn state(&self) -> Value {
        self.state_of(&self.id)
    }

    pub fn state_of(&self, id: &str) -> Value {
        let out = self.cmd(&["state", id]);
        out.assert_ok();
        out.json()
    }

    /// The `status` field of `state`.
    pub fn status(&self) -> String {
        self.state()["status"].as_str().unwrap_or("").to_string()
    }

    /// The init pid from `state`.
    pub fn pid(&self) -> i32 {
        self.state()["pid"].as_i64().expect("state has a pid") as i32
    }

    pub fn kill(&self, sig: &str) -> Output {
        self.cmd(&["kill", &self.id, sig])
    }

    pub fn delete(&self) -> Output {
        self.cmd(&["delete", &self.id])
    }

    pub fn delete_force(&self) -> Output {
        self.cmd(&["delete", "--force", &self.id])
    }

    /// `exec <id> args…`.
    pub fn exec(&self, args: &[&str]) -> Output {
        let mut a = vec!["exec", self.id.as_str()];
        a.extend_from_slice(args);
        self.cmd(&a)
    }

    /// Polls `state` until the status is `want` (panics after `timeout`).
    #[track_caller]
    pub fn wait_status(&self, want: &str, timeout: Duration) {
        let start = Instant::now();
        loop {
            let s = self.status();
            if s == want {
                return;
            }
            assert!(
                start.elapsed() < timeout,
                "container {} is {s:?}, not {want:?}, after {timeout:?}",
                self.id
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// What is left of container `id` on the host: state dir, cgroups, mounts, processes.
    pub fn leftovers(&self, id: &str) -> Vec<String> {
        let mut found = Vec::new();
        let state_dir = self.rt.root.join(id);
        if state_dir.exists() {
            found.push(format!("state dir {}", state_dir.display()));
        }
        for d in find_dirs_named(Path::new("/sys/fs/cgroup"), id) {
            found.push(format!("cgroup {}", d.display()));
        }
        let dir = self.dir.display().to_string();
        for l in fs::read_to_string("/proc/self/mounts")
            .unwrap_or_default()
            .lines()
        {
            if l.contains(id) || l.contains(&dir) {
                found.push(format!("mount {l}"));
            }
        }
        for (pid, what) in processes_mentioning(&[id, &dir]) {
            found.push(format!("process {pid}: {what}"));
        }
        found
    }

    /// Panics if anything of container `id` is left on the host.
    #[track_caller]
    pub fn assert_no_leftovers(&self, id: &str) {
        let l = self.leftovers(id);
        assert!(l.is_empty(), "container {id} left behind: {l:#?}");
    }

    /// Reads a cgroup file of container `id` on the host (trimmed).
    pub fn cgroup_value(&self, id: &str, controller: &str, file: &str) -> String {
        let p = cgroup_file(controller, &Self::cgroups_path(id), file);
        fs::read_to_string(&p)
            .unwrap_or_else(|e| panic!("read {}: {e}", p.display()))
            .trim()
            .to_string()
    }
}

impl Drop for Ctx {
    // Never panics: a panic here while a test unwinds would abort the whole test binary.
    fn drop(&mut self) {
        let ids = match self.ids.lock() {
            Ok(g) => g.clone(),
            Err(p) => p.into_inner().clone(),
        };
        for id in &ids {
            let args = [
                "--root".to_string(),
                self.rt.root.display().to_string(),
                "delete".into(),
                "--force".into(),
                id.clone(),
            ];
            if let Err(e) = self.rt.try_raw(&args, Duration::from_secs(20), &[]) {
                eprintln!("cleanup: {e}");
            }
            force_remove_cgroups(&Self::cgroups_path(id));
        }
        detach_mounts_under(&self.dir);
        if mounts_under(&self.dir).is_empty() {
            let _ = fs::remove_dir_all(&self.dir);
        } else {
            eprintln!(
                "not removing {}: mounts remain under it",
                self.dir.display()
            );
        }
    }
}

/// Directories named `name` anywhere under `top` (not following symlinks).
pub fn find_dirs_named(top: &Path, name: &str) -> Vec<PathBuf> {
    let mut found = Vec::new();
    let mut stack = vec![top.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(rd) = fs::read_dir(&d) else { continue };
        for e in rd.flatten() {
            let Ok(ft) = e.file_type() else { continue };
            if ft.is_dir() {
                if e.file_name().to_str() == Some(name) {
                    found.push(e.path());
                }
                stack.push(e.path());
            }
        }
    }
    found
}

/// Processes (other than this one) whose cmdline or cgroup mentions one of `needles`.
pub fn processes_mentioning(needles: &[&str]) -> Vec<(i32, String)> {
    let me = std::process::id() as i32;
    let mut found = Vec::new();
    let Ok(rd) = fs::read_dir("/proc") else {
        return found;
    };
    for e in rd.flatten() {
        let Some(pid) = e.file_name().to_str().and_then(|s| s.parse::<i32>().ok()) else {
            continue;
        };
        if pid == me {
            continue;
        }
        let cmdline = fs::read(e.path().join("cmdline"))
            .map(|b| String::from_utf8_lossy(&b).replace('\0', " "))
            .unwrap_or_default();
        let cgroup = fs::read_to_string(e.path().join("cgroup")).unwrap_or_default();
        if needles
            .iter()
            .any(|n| cmdline.contains(n) || cgroup.contains(&format!("/{n}\n")))
        {
            found.push((pid, cmdline.trim().to_string()));
        }
    }
    found
}

/// Kills whatever is left in the test cgroup `cgroups_path` and removes its directories, in
/// every hierarchy. Only ever called on `/berth-test/<id>` paths, which tests created.
pub fn force_remove_cgroups(cgroups_path: &str) {
    if !cgroups_path.starts_with("/berth-test/") || cgroups_path.contains("..") {
        return;
    }
    let rel = cgroups_path.trim_start_matches('/');
    let mut dirs = Vec::new();
    if cgroup_v2_only() {
        dirs.push(Path::new("/sys/fs/cgroup").join(rel));
    } else if let Ok(rd) = fs::read_dir("/sys/fs/cgroup") {
        for e in rd.flatten() {
            dirs.push(e.path().join(rel));
        }
    }
    let dirs: Vec<_> = dirs.into_iter().filter(|d| d.is_dir()).collect();
    if dirs.is_empty() {
        return;
    }
    // A frozen cgroup must be thawed for SIGKILL to take effect.
    for d in &dirs {
        let _ = fs::write(d.join("freezer.state"), "THAWED");
        let _ = fs::write(d.join("cgroup.freeze"), "0");
    }
    for _ in 0..100 {
        let mut any = false;
        for d in &dirs {
            for pid in fs::read_to_string(d.join("cgroup.procs"))
                .unwrap_or_default()
                .lines()
                .filter_map(|l| l.trim().parse::<i32>().ok())
            {
                any = true;
                // SAFETY: kill(2) with a pid read from our own test cgroup; no memory involved.
                unsafe { libc::kill(pid, libc::SIGKILL) };
            }
        }
        if !any {
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    for d in &dirs {
        // Children first (a runtime may nest), then the dir itself.
        let mut sub = Vec::new();
        let mut stack = vec![d.clone()];
        while let Some(x) = stack.pop() {
            if let Ok(rd) = fs::read_dir(&x) {
                for e in rd.flatten() {
                    if e.file_type().map(|t| t.is_dir()).unwrap_or(false) {
                        stack.push(e.path());
                        sub.push(e.path());
                    }
                }
            }
        }
        for s in sub.iter().rev() {
            let _ = fs::remove_dir(s);
        }
        let _ = fs::remove_dir(d);
    }
}

/// Mount points at or under `dir` in this mount namespace, deepest last.
pub fn mounts_under(dir: &Path) -> Vec<String> {
    let d = dir.display().to_string();
    fs::read_to_string("/proc/self/mounts")
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.split(' ').nth(1).map(unescape_mount_path))
        .filter(|m| m == &d || m.starts_with(&format!("{d}/")))
        .collect()
}

fn unescape_mount_path(s: &str) -> String {
    s.replace("\\040", " ")
        .replace("\\011", "\t")
        .replace("\\012", "\n")
        .replace("\\134", "\\")
}

/// Lazily detaches every mount at or under `dir` (deepest first).
pub fn detach_mounts_under(dir: &Path) {
    for m in mounts_under(dir).iter().rev() {
        let Ok(c) = std::ffi::CString::new(m.as_str()) else {
            continue;
        };
        // SAFETY: c is a valid NUL-terminated path that outlives the call.
        unsafe { libc::umount2(c.as_ptr(), libc::MNT_DETACH) };
    }
}

/// The device number of a path (to tell a mount point from its parent).
pub fn dev_of(p: &Path) -> u64 {
    fs::metadata(p).map(|m| m.dev()).unwrap_or(0)
}

/// The host's namespace inode link (e.g. `net:[4026531992]`) of this process.
pub fn host_ns(typ: &str) -> String {
    fs::read_link(format!("/proc/self/ns/{typ}"))
        .unwrap()
        .display()
        .to_string()
}

/// A seccomp profile allowing everything but `rules` (each a `syscalls` entry).
pub fn seccomp_allow_except(rules: Value) -> Value {
    json!({
        "defaultAction": "SCMP_ACT_ALLOW",
        "architectures": ["SCMP_ARCH_X86_64", "SCMP_ARCH_X86", "SCMP_ARCH_X32", "SCMP_ARCH_AARCH64"],
        "syscalls": rules
    })
}

/// The value of a `Name:\tvalue` line of /proc/<pid>/status-style text.
pub fn status_field<'a>(text: &'a str, name: &str) -> Option<&'a str> {
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(':'))
        .map(|v| v.trim())
}

/// Whether `pid` is a live process (a zombie counts as gone).
pub fn process_alive(pid: i32) -> bool {
    fs::read_to_string(format!("/proc/{pid}/stat"))
        .map(|s| {
            let state = s
                .rsplit_once(") ")
                .map(|(_, r)| r.chars().next())
                .unwrap_or(None);
            state != Some('Z') && state != Some('X')
        })
        .unwrap_or(false)
}

/// Waits until `pid` is gone (or a zombie); false after `timeout`.
pub fn wait_gone(pid: i32, timeout: Duration) -> bool {
    let start = Instant::now();
    while process_alive(pid) {
        if start.elapsed() > timeout {
            return false;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    true
}

/// A `--console-socket` receiver: a unix socket in the test dir and a thread that accepts one
/// connection, takes the pty master fd sent with SCM_RIGHTS, and reads from it until EOF or
/// `timeout`. `join` gives back what the container wrote to its terminal.
pub struct ConsoleSocket {
    pub path: PathBuf,
    handle: std::thread::JoinHandle<Result<String, String>>,
}

impl ConsoleSocket {
    pub fn new(path: PathBuf, timeout: Duration) -> ConsoleSocket {
        let listener = std::os::unix::net::UnixListener::bind(&path).expect("bind console socket");
        let handle = std::thread::spawn(move || {
            use std::os::fd::{AsRawFd, FromRawFd};
            let (conn, _) = listener.accept().map_err(|e| e.to_string())?;
            let mut buf = [0u8; 4096];
            let mut cbuf = [0u8; 64];
            let mut iov = libc::iovec {
                iov_base: buf.as_mut_ptr().cast(),
                iov_len: buf.len(),
            };
            // SAFETY: msghdr is plain data; zeroed is a valid empty header we then fill in.
            let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
            msg.msg_iov = &mut iov;
            msg.msg_iovlen = 1;
            msg.msg_control = cbuf.as_mut_ptr().cast();
            msg.msg_controllen = cbuf.len() as _;
            // SAFETY: msg points at buffers that live until the call returns.
            let n = unsafe { libc::recvmsg(conn.as_raw_fd(), &mut msg, 0) };
            if n < 0 {
                return Err(format!("recvmsg: {}", std::io::Error::last_os_error()));
            }
            // SAFETY: the control buffer was filled by recvmsg; CMSG_* walk it within bounds.
            let fd = unsafe {
                let c = libc::CMSG_FIRSTHDR(&msg);
                if c.is_null() || (*c).cmsg_type != libc::SCM_RIGHTS {
                    return Err("no SCM_RIGHTS fd on the console socket".into());
                }
                std::ptr::read_unaligned(libc::CMSG_DATA(c) as *const i32)
            };
            // SAFETY: fd was just received and is owned by nobody else.
            let mut master = unsafe { fs::File::from_raw_fd(fd) };
            let start = Instant::now();
            let mut out = Vec::new();
            let mut chunk = [0u8; 4096];
            // SAFETY: fcntl on the fd we own; makes reads non-blocking so the timeout holds.
            unsafe { libc::fcntl(fd, libc::F_SETFL, libc::O_NONBLOCK) };
            while start.elapsed() < timeout {
                match master.read(&mut chunk) {
                    Ok(0) => break,
                    Ok(n) => out.extend_from_slice(&chunk[..n]),
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                        std::thread::sleep(Duration::from_millis(10))
                    }
                    // EIO: the slave side closed (the container exited).
                    Err(_) => break,
                }
            }
            Ok(String::from_utf8_lossy(&out).into_owned())
        });
        ConsoleSocket { path, handle }
    }

    /// What the container wrote to its terminal (or why nothing came).
    pub fn join(self) -> Result<String, String> {
        self.handle
            .join()
            .map_err(|_| "console thread panicked".to_string())?
    }
}
