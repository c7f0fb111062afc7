//! [`Containerd`]: a private containerd and `ctr` (see the parent module's docs).

use super::{
    assert_nothing_left, entries, kill_processes_naming, peer_dir, retry, strings, try_exe,
    try_exe_tty, unmount_all_under,
};
use crate::{
    fixtures_dir, force_remove_cgroups, mounts_under, process_alive, processes_mentioning,
    runtime_path, Output, CMD_TIMEOUT,
};
use serde_json::{json, Value};
use std::fs;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

/// The containerd namespace the tests use (ctr's cgroups become `/berth-test/<id>`).
pub const CONTAINERD_NS: &str = "berth-test";

/// A private containerd (see the module docs), killed by its pid on drop.
pub struct Containerd {
    pub dir: PathBuf,
    pub sock: PathBuf,
    child: Child,
    ids: std::sync::Mutex<Vec<String>>,
}

impl Containerd {
    /// Writes the config and starts containerd; waits (bounded) until `ctr version` answers.
    pub fn start(name: &str) -> Containerd {
        let dir = peer_dir(&format!("containerd-{name}"));
        let sock = dir.join("containerd.sock");
        let d = |s: &str| dir.join(s).display().to_string();
        let config = format!(
            r#"version = 2
root = "{root}"
state = "{state}"
disabled_plugins = ["io.containerd.grpc.v1.cri", "io.containerd.snapshotter.v1.btrfs",
  "io.containerd.snapshotter.v1.zfs", "io.containerd.snapshotter.v1.devmapper",
  "io.containerd.snapshotter.v1.aufs", "io.containerd.internal.v1.tracing",
  "io.containerd.tracing.processor.v1.otlp"]
[grpc]
  address = "{sock}"
  tcp_address = ""
[ttrpc]
  address = "{sock}.ttrpc"
[debug]
  address = ""
[metrics]
  address = ""
[plugins."io.containerd.internal.v1.opt"]
  path = "{opt}"
[plugins."io.containerd.monitor.v1.cgroups"]
  no_prometheus = true
"#,
            root = d("root"),
            state = d("state"),
            sock = sock.display(),
            opt = d("opt"),
        );
        fs::write(dir.join("config.toml"), config).unwrap();
        let log = fs::File::create(dir.join("containerd.log")).unwrap();
        let child = Command::new("containerd")
            .arg("--config")
            .arg(dir.join("config.toml"))
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("start containerd");
        let c = Containerd {
            dir,
            sock,
            child,
            ids: Default::default(),
        };
        let up = retry(100, Duration::from_millis(50), || {
            (c.sock.exists() && c.try_ctr(&["version"], CMD_TIMEOUT).ok()?.ok()).then_some(())
        });
        assert!(
            up.is_some(),
            "containerd did not come up: {}",
            fs::read_to_string(c.dir.join("containerd.log")).unwrap_or_default()
        );
        c
    }

    /// A container id unique to this test process: `<name>-<pid>` (remembered for cleanup).
    pub fn id(&self, name: &str) -> String {
        let id = format!("{name}-{}", std::process::id());
        self.ids.lock().unwrap().push(id.clone());
        id
    }

    /// The runtime's `--root` (the runc shim's `--runc-root`).
    pub fn runtime_root(&self) -> PathBuf {
        self.dir.join("runc")
    }

    fn try_ctr(&self, args: &[&str], timeout: Duration) -> Result<Output, String> {
        let mut full = strings(&["-a", &self.sock.display().to_string(), "-n", CONTAINERD_NS]);
        full.extend(strings(args));
        try_exe("ctr", &full, &self.dir, &[], timeout)
    }

    /// `ctr -a SOCK -n berth-test args…`.
    pub fn ctr(&self, args: &[&str]) -> Output {
        self.try_ctr(args, CMD_TIMEOUT)
            .unwrap_or_else(|e| panic!("{e}"))
    }

    /// `ctr … args…` on a terminal (see [`super::try_exe_tty`]).
    pub fn ctr_tty(&self, args: &[&str]) -> Output {
        let mut line = strings(&[
            "ctr",
            "-a",
            &self.sock.display().to_string(),
            "-n",
            CONTAINERD_NS,
        ]);
        line.extend(strings(args));
        try_exe_tty(&line, &self.dir, &[])
    }

    /// The `ctr run` flags that make the runc shim use the runtime under test.
    pub fn runtime_flags(&self) -> Vec<String> {
        strings(&[
            "--runc-binary",
            &runtime_path().display().to_string(),
            "--runc-root",
            &self.runtime_root().display().to_string(),
            "--fifo-dir",
            &self.dir.join("fifo").display().to_string(),
        ])
    }

    /// `ctr run --runc-binary <runtime> --runc-root D/runc --fifo-dir D/fifo <flags…> image id
    /// args…`: `flags` go before the image (e.g. `--rm`, `-d`).
    pub fn run(&self, flags: &[&str], image: &str, id: &str, args: &[&str]) -> Output {
        let mut a = vec!["run".to_string()];
        a.extend(self.runtime_flags());
        a.extend(strings(flags));
        a.extend(strings(&[image, id]));
        a.extend(strings(args));
        let a: Vec<&str> = a.iter().map(String::as_str).collect();
        self.ctr(&a)
    }

    /// Imports the fixture image `name` as `localhost/<name>:latest` from its OCI layout: a tar of
    /// the layout whose index keeps only the `latest` manifest (the nginx layout also names
    /// arm64 manifests whose blobs are not there, which `ctr images import` trips over).
    pub fn import(&self, name: &str) {
        let layout = fixtures_dir().join("oci").join(name);
        let index: Value =
            serde_json::from_str(&fs::read_to_string(layout.join("index.json")).unwrap()).unwrap();
        let latest: Vec<Value> = index["manifests"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|m| m["annotations"]["org.opencontainers.image.ref.name"] == json!("latest"))
            .cloned()
            .collect();
        let stage = self.dir.join(format!("import-{name}"));
        fs::create_dir_all(&stage).unwrap();
        let mut idx = index.clone();
        idx["manifests"] = json!(latest);
        fs::write(stage.join("index.json"), idx.to_string()).unwrap();
        let tar = self.dir.join(format!("{name}.tar"));
        let tar_s = tar.display().to_string();
        let l = layout.display().to_string();
        let s = stage.display().to_string();
        for args in [
            vec!["-C", &l, "-cf", &tar_s, "oci-layout", "blobs"],
            vec!["-C", &s, "-rf", &tar_s, "index.json"],
        ] {
            try_exe("tar", &strings(&args), &self.dir, &[], CMD_TIMEOUT)
                .unwrap()
                .assert_ok();
        }
        let base = format!("localhost/{name}");
        self.ctr(&["images", "import", "--base-name", &base, &tar_s])
            .assert_ok();
    }

    /// `ctr task ls` as (id, pid, status) rows.
    pub fn tasks(&self) -> Vec<(String, i32, String)> {
        self.ctr(&["task", "ls"])
            .assert_ok()
            .stdout
            .lines()
            .skip(1)
            .filter_map(|l| {
                let f: Vec<&str> = l.split_whitespace().collect();
                Some((
                    f.first()?.to_string(),
                    f.get(1)?.parse().ok()?,
                    f.get(2)?.to_string(),
                ))
            })
            .collect()
    }

    /// The (pid, status) of task `id` (panics if there is none).
    pub fn task(&self, id: &str) -> (i32, String) {
        self.tasks()
            .into_iter()
            .find(|t| t.0 == id)
            .map(|t| (t.1, t.2))
            .unwrap_or_else(|| panic!("no task {id} in `ctr task ls`"))
    }

    /// Polls `ctr task ls` (bounded) until task `id` is `want` (RUNNING, PAUSED, STOPPED).
    #[track_caller]
    pub fn wait_task_status(&self, id: &str, want: &str) {
        let got = retry(200, Duration::from_millis(50), || {
            (self.task(id).1 == want).then_some(())
        });
        assert!(
            got.is_some(),
            "task {id} is {}, not {want}",
            self.task(id).1
        );
    }

    /// What container `id` left: runtime state, cgroups `/berth-test/<id>`, any mount under D,
    /// the shim's bundle dir, processes but the daemon naming the id (its shim, the runtime) or in
    /// its cgroup.
    pub fn leftovers(&self, id: &str) -> Vec<String> {
        let mut found: Vec<String> = entries(&self.runtime_root().join(CONTAINERD_NS))
            .into_iter()
            .map(|e| format!("runtime state {e}"))
            .collect();
        for d in ["/sys/fs/cgroup"]
            .iter()
            .map(PathBuf::from)
            .chain(
                fs::read_dir("/sys/fs/cgroup")
                    .into_iter()
                    .flatten()
                    .flatten()
                    .map(|e| e.path()),
            )
            .map(|h| h.join(CONTAINERD_NS).join(id))
            .filter(|d| d.is_dir())
        {
            found.push(format!("cgroup {}", d.display()));
        }
        for m in mounts_under(&self.dir) {
            found.push(format!("mount {m}"));
        }
        let shim_state = self
            .dir
            .join("state/io.containerd.runtime.v2.task")
            .join(CONTAINERD_NS)
            .join(id);
        if shim_state.exists() {
            found.push(format!("shim state {}", shim_state.display()));
        }
        let daemon = self.child.id() as i32;
        for (pid, what) in processes_mentioning(&[id]) {
            if pid != daemon && process_alive(pid) {
                found.push(format!("process {pid}: {what}"));
            }
        }
        found
    }

    /// Panics if anything of container `id` is left (after a bounded wait for the shim to exit).
    #[track_caller]
    pub fn assert_no_leftovers(&self, id: &str) {
        assert_nothing_left(&format!("container {id}"), || self.leftovers(id));
    }
}

impl Drop for Containerd {
    // Never panics (see Podman's Drop).
    fn drop(&mut self) {
        let t = Duration::from_secs(20);
        let ids = match self.ids.lock() {
            Ok(g) => g.clone(),
            Err(p) => p.into_inner().clone(),
        };
        for id in &ids {
            for args in [
                &["task", "kill", "-s", "SIGKILL", id][..],
                &["task", "delete", "--force", id][..],
                &["container", "delete", id][..],
            ] {
                let _ = self.try_ctr(args, t);
            }
        }
        // SAFETY: kill(2) of the containerd this value started (still our child: not reaped).
        unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
        let stopped = retry(100, Duration::from_millis(50), || {
            self.child.try_wait().ok().flatten()
        });
        if stopped.is_none() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
        kill_processes_naming(&self.dir);
        for id in &ids {
            force_remove_cgroups(&format!("/{CONTAINERD_NS}/{id}"));
        }
        unmount_all_under(&self.dir);
        if mounts_under(&self.dir).is_empty() {
            let _ = fs::remove_dir_all(&self.dir);
        } else {
            eprintln!("not removing {}: mounts remain", self.dir.display());
        }
    }
}
