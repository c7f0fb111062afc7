//! [`Podman`]: a private podman (see the parent module's docs).

use super::{
    assert_nothing_left, entries, kill_processes_naming, peer_dir, strings, try_exe, try_exe_tty,
    unmount_all_under,
};
use crate::{
    fixtures_dir, mounts_under, process_alive, processes_mentioning, runtime_path, Output,
    CMD_TIMEOUT,
};
use serde_json::{json, Value};
use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// A private podman (see the module docs).
pub struct Podman {
    pub dir: PathBuf,
    conf: PathBuf,
}

impl Podman {
    /// A podman for the test `name` (short: it becomes part of `D`).
    pub fn new(name: &str) -> Podman {
        let dir = peer_dir(&format!("podman-{name}"));
        let conf = dir.join("containers.conf");
        let nofile = hard_limit(libc::RLIMIT_NOFILE);
        let nproc = hard_limit(libc::RLIMIT_NPROC).min(32768);
        fs::write(
            &conf,
            format!(
                "[containers]\ndefault_ulimits = [\"nofile={nofile}:{nofile}\", \
                 \"nproc={nproc}:{nproc}\"]\n[engine]\nlock_type = \"file\"\n"
            ),
        )
        .unwrap();
        let wrapper = dir.join("runtime");
        fs::write(
            &wrapper,
            format!(
                "#!/bin/sh\nexec '{}' --root '{}' \"$@\"\n",
                runtime_path().display(),
                dir.join("rt").display()
            ),
        )
        .unwrap();
        fs::set_permissions(&wrapper, fs::Permissions::from_mode(0o755)).unwrap();
        Podman { dir, conf }
    }

    /// The runtime's `--root` (set by the `D/runtime` wrapper).
    pub fn runtime_root(&self) -> PathBuf {
        self.dir.join("rt")
    }

    /// podman's global flags.
    pub fn global_args(&self) -> Vec<String> {
        let d = |s: &str| self.dir.join(s).display().to_string();
        vec![
            "--root".into(),
            d("storage"),
            "--runroot".into(),
            d("run"),
            "--tmpdir".into(),
            d("tmp"),
            "--cgroup-manager".into(),
            "cgroupfs".into(),
            "--events-backend".into(),
            "file".into(),
            "--runtime".into(),
            d("runtime"),
        ]
    }

    fn try_cmd(&self, args: &[&str], timeout: Duration) -> Result<Output, String> {
        let mut full = self.global_args();
        full.extend(strings(args));
        let conf = self.conf.display().to_string();
        try_exe(
            "podman",
            &full,
            &self.dir,
            &[("CONTAINERS_CONF", &conf)],
            timeout,
        )
    }

    /// `podman <global flags> args…`.
    pub fn cmd(&self, args: &[&str]) -> Output {
        self.try_cmd(args, CMD_TIMEOUT)
            .unwrap_or_else(|e| panic!("{e}"))
    }

    /// `podman … args…` on a terminal: through `script -qc CMD /dev/null`, which gives it a pty
    /// (what `exec -it` needs). stdout is what the terminal showed.
    pub fn cmd_tty(&self, args: &[&str]) -> Output {
        let mut line = vec!["podman".to_string()];
        line.extend(self.global_args());
        line.extend(strings(args));
        let conf = self.conf.display().to_string();
        try_exe_tty(&line, &self.dir, &[("CONTAINERS_CONF", &conf)])
    }

    /// Loads the fixture image `name` (busybox, nginx) from its OCI layout as
    /// `localhost/<name>:latest`.
    pub fn load_image(&self, name: &str) {
        let layout = fixtures_dir().join("oci").join(name);
        let src = format!("oci:{}:latest", layout.display());
        let id = self.cmd(&["pull", "-q", &src]).assert_ok().stdout.clone();
        self.cmd(&["tag", id.trim(), &format!("localhost/{name}:latest")])
            .assert_ok();
    }

    /// `inspect -f FORMAT name`, trimmed (panics if it fails).
    pub fn inspect(&self, name: &str, format: &str) -> String {
        self.cmd(&["inspect", "-f", format, name])
            .assert_ok()
            .stdout
            .trim()
            .to_string()
    }

    /// Every container id podman's events log names.
    pub fn container_ids(&self) -> Vec<String> {
        let log = fs::read_to_string(self.dir.join("tmp/events/events.log")).unwrap_or_default();
        let mut ids: Vec<String> = log
            .lines()
            .filter_map(|l| serde_json::from_str::<Value>(l).ok())
            .filter(|v| v["Type"] == json!("container"))
            .filter_map(|v| v["ID"].as_str().map(str::to_string))
            .collect();
        ids.sort();
        ids.dedup();
        ids
    }

    /// The cgroup dirs podman gives container `id` that exist, in every hierarchy.
    fn cgroups_of(id: &str) -> Vec<PathBuf> {
        let leaf = format!("libpod_parent/libpod-{id}");
        let mut dirs = vec![Path::new("/sys/fs/cgroup").join(&leaf)];
        for e in fs::read_dir("/sys/fs/cgroup")
            .into_iter()
            .flatten()
            .flatten()
        {
            dirs.push(e.path().join(&leaf));
        }
        dirs.into_iter().filter(|d| d.is_dir()).collect()
    }

    /// What podman and the runtime left on the host for this test's containers: state under the
    /// runtime root, cgroups, processes (the runtime, conmon, cleanup commands), mounts under D
    /// (but the storage driver's own home, which podman bind-mounts while it runs).
    pub fn leftovers(&self) -> Vec<String> {
        let mut found: Vec<String> = entries(&self.runtime_root())
            .into_iter()
            .map(|e| format!("runtime state {e}"))
            .collect();
        let ids = self.container_ids();
        for id in &ids {
            for d in Self::cgroups_of(id) {
                found.push(format!("cgroup {}", d.display()));
            }
        }
        let home = self.dir.join("storage/overlay").display().to_string();
        for m in mounts_under(&self.dir) {
            if m != home {
                found.push(format!("mount {m}"));
            }
        }
        let d = self.dir.display().to_string();
        let mut needles: Vec<String> = ids.iter().map(|i| format!("libpod-{i}")).collect();
        needles.push(d);
        let needles: Vec<&str> = needles.iter().map(String::as_str).collect();
        for (pid, what) in processes_mentioning(&needles) {
            if process_alive(pid) {
                found.push(format!("process {pid}: {what}"));
            }
        }
        found
    }

    /// Panics if anything of this test's containers is left (waits a bounded while first:
    /// conmon and podman's cleanup command exit just after the container).
    #[track_caller]
    pub fn assert_no_leftovers(&self) {
        assert_nothing_left("podman", || self.leftovers());
    }
}

impl Drop for Podman {
    // Never panics: a panic here while a test unwinds would abort the test binary.
    fn drop(&mut self) {
        let t = Duration::from_secs(30);
        for args in [&["rm", "-af", "-t", "0"][..], &["rmi", "-af"][..]] {
            if let Err(e) = self.try_cmd(args, t) {
                eprintln!("cleanup: {e}");
            }
        }
        kill_processes_naming(&self.dir);
        for id in self.container_ids() {
            for d in Self::cgroups_of(&id) {
                let _ = fs::remove_dir(d);
            }
        }
        unmount_all_under(&self.dir);
        if mounts_under(&self.dir).is_empty() {
            let _ = fs::remove_dir_all(&self.dir);
        } else {
            eprintln!("not removing {}: mounts remain", self.dir.display());
        }
    }
}

/// The host's hard limit of a resource (for podman's default ulimits).
fn hard_limit(resource: libc::__rlimit_resource_t) -> u64 {
    let mut r = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes into the rlimit we own.
    unsafe { libc::getrlimit(resource, &mut r) };
    r.rlim_max
}
