//! The harness shared by berthd's end-to-end tests (`cri/tests`) and berth's (`cli/tests`): a
//! private berthd per test (own socket, store, state, logs and network under a temp dir), and
//! the berth CLI pointed at it; CRI clients of it in [`cri`].

pub mod cri;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::Duration;

pub fn bin(name: &str) -> PathBuf {
    // target/<profile>/deps/<test> → target/<profile>/<name>
    let exe = std::env::current_exe().unwrap();
    let p = exe.parent().unwrap().parent().unwrap().join(name);
    assert!(
        p.exists(),
        "{} missing: run `cargo build --workspace --bins` first",
        p.display()
    );
    p
}

pub fn registry() -> String {
    std::env::var("BERTH_TEST_REGISTRY").unwrap_or_else(|_| "127.0.0.1:5000".into())
}

pub struct Daemon {
    pub dir: PathBuf,
    pub child: Option<Child>,
    /// Containers on: remove them all on drop and check nothing is left.
    pub containers: bool,
}

impl Daemon {
    pub fn new(name: &str) -> Daemon {
        Self::with_store_size(name, None)
    }

    /// With `size`, the store lives on a tmpfs of that size (to fill the disk on purpose).
    pub fn with_store_size(name: &str, size: Option<&str>) -> Daemon {
        let dir = fresh_dir(name, size);
        let mut d = Daemon {
            dir,
            child: None,
            containers: false,
        };
        d.start();
        d
    }

    /// A daemon that runs containers: its own bridge `bt<n>` and subnet 10.210.<n>.0/24 (so
    /// tests run in parallel), logs under its dir. `n` must be unique among the tests.
    pub fn with_containers(name: &str, n: u8) -> Daemon {
        Self::with_containers_sized(name, n, None)
    }

    /// [`Daemon::with_containers`] with the store on a tmpfs of `size`.
    pub fn with_containers_sized(name: &str, n: u8, size: Option<&str>) -> Daemon {
        let dir = fresh_dir(name, size);
        std::fs::write(
            dir.join("config.toml"),
            format!(
                "[daemon]\nlog_dir = \"{}\"\n\n[network]\nbridge = \"bt{n}\"\nsubnet = \"10.210.{n}.0/24\"\n",
                dir.join("logs").display()
            ),
        )
        .unwrap();
        let mut d = Daemon {
            dir,
            child: None,
            containers: true,
        };
        d.start();
        d
    }

    pub fn bridge(&self) -> Option<String> {
        let c = std::fs::read_to_string(self.dir.join("config.toml")).ok()?;
        c.lines()
            .find_map(|l| l.strip_prefix("bridge = "))
            .map(|b| b.trim_matches('"').to_string())
    }

    pub fn config_path(&self) -> PathBuf {
        if self.containers {
            self.dir.join("config.toml")
        } else {
            self.dir.join("no-config.toml")
        }
    }

    /// Removes every container (berthd restarted first if a test killed it).
    pub fn remove_all_containers(&mut self) {
        if self.child.is_none() {
            self.start();
        }
        let ids = self.berth(&["ps", "-aq", "--no-trunc"]).stdout();
        for id in ids.lines().filter(|l| !l.is_empty()) {
            let _ = self.berth(&["rm", "-f", id]);
        }
    }

    /// What this daemon's containers could have left on the host: shim processes, mounts
    /// under its dir, network namespaces pinned by it, its bridge, veths on its bridge, iptables
    /// chains of its containers. Empty when all is clean.
    /// The pids of the pause processes (the PID namespace inits of pods) this daemon started:
    /// their command line names the pod's directory, in the test's. Not their parents, which
    /// reap them (this VM's init does not reap orphans).
    pub fn pause_processes(&self) -> Vec<i32> {
        let dir = self.dir.display().to_string();
        std::fs::read_dir("/proc")
            .unwrap()
            .flatten()
            .filter_map(|e| e.file_name().to_str()?.parse().ok())
            .filter(|pid: &i32| {
                let cmd = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
                let cmd = String::from_utf8_lossy(&cmd).replace('\0', " ");
                let comm = std::fs::read_to_string(format!("/proc/{pid}/comm")).unwrap_or_default();
                comm.trim() == "berth-pause" && cmd.contains("--berth-pause") && cmd.contains(&dir)
            })
            .collect()
    }

    pub fn leftovers(&self) -> Vec<String> {
        let mut out = Vec::new();
        for p in self.pause_processes() {
            out.push(format!("pause process: {p}"));
        }
        let dir = self.dir.display().to_string();
        for p in std::fs::read_dir("/proc").unwrap().flatten() {
            let Ok(cmd) = std::fs::read(p.path().join("cmdline")) else {
                continue;
            };
            let cmd = String::from_utf8_lossy(&cmd).replace('\0', " ");
            if cmd.contains("berth-shim") && cmd.contains(&dir) {
                out.push(format!("shim process: {cmd}"));
            }
        }
        // The netns directory is a shared bind mount of itself (as /run/netns is for `ip
        // netns`), there while berthd runs; the pins inside it are what must not stay. `root`
        // is the test's own tmpfs when it has one.
        let netns_dir = self.dir.join("state/net/netns");
        for m in mounts_under(&self.dir) {
            if Path::new(&m) == netns_dir
                || Path::new(&m) == self.dir.join("state/cri-net/netns")
                || Path::new(&m) == self.dir.join("state/cri-ns")
                || Path::new(&m) == self.dir.join("root")
            {
                continue;
            }
            out.push(format!("mount: {m}"));
        }
        if let Some(b) = self.bridge() {
            let links = Command::new("ip").args(["-o", "link"]).output().unwrap();
            for l in String::from_utf8_lossy(&links.stdout).lines() {
                if l.contains(&format!(" {b}:")) || l.contains(&format!("master {b} ")) {
                    out.push(format!("link: {l}"));
                }
            }
        }
        for ns in ["state/net/netns", "state/cri-net/netns"] {
            if let Ok(rd) = std::fs::read_dir(self.dir.join(ns)) {
                for e in rd.flatten() {
                    out.push(format!("netns pin: {}", e.path().display()));
                }
            }
        }
        out
    }

    /// Cgroups of container `id` still on the host (any hierarchy).
    pub fn cgroup_leftovers(id: &str) -> Vec<String> {
        let mut out = Vec::new();
        for h in std::fs::read_dir("/sys/fs/cgroup").unwrap().flatten() {
            let p = h.path().join("berth").join(id);
            if p.exists() {
                out.push(p.display().to_string());
            }
        }
        let p = Path::new("/sys/fs/cgroup/berth").join(id);
        if p.exists() {
            out.push(p.display().to_string());
        }
        out
    }

    pub fn sock(&self) -> PathBuf {
        self.dir.join("berthd.sock")
    }

    pub fn spawn(&self) -> Child {
        Command::new(bin("berthd"))
            .arg("--address")
            .arg(self.sock())
            .arg("--root")
            .arg(self.dir.join("root"))
            .arg("--state")
            .arg(self.dir.join("state"))
            .env("BERTH_CONFIG", self.config_path())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(self.dir.join("berthd.log")).unwrap())
            .spawn()
            .unwrap()
    }

    pub fn start(&mut self) {
        let _ = std::fs::remove_file(self.sock());
        self.child = Some(self.spawn());
        // Up to 30 s: berthd takes well under a second here, but much longer in an emulated VM
        // (scripts/apparmor-vm.sh).
        for _ in 0..3000 {
            if std::os::unix::net::UnixStream::connect(self.sock()).is_ok() {
                return;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        panic!("berthd did not come up: {}", self.log());
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("berthd.log")).unwrap_or_default()
    }

    pub fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    pub fn cmd(&self, args: &[&str]) -> Command {
        let mut c = Command::new(bin("berth"));
        c.arg("-H")
            .arg(format!("unix://{}", self.sock().display()))
            .args(args);
        c
    }

    pub fn berth(&self, args: &[&str]) -> Out {
        Out(
            self.cmd(args).stdin(Stdio::null()).output().unwrap(),
            args.join(" "),
        )
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if self.containers {
            // Pods a failed test left: their CNI DEL (iptables rules, addresses) and pins.
            if self.child.is_some() {
                cri::remove_pods(&self.sock(), None);
            }
            self.remove_all_containers();
        }
        // Pause processes of pods the test left (they are the daemon's children's children).
        for pid in self.pause_processes() {
            // SAFETY: kill(2) of a process our daemon started, by its pid.
            unsafe { libc_kill(pid, 9) };
        }
        for _ in 0..100 {
            if self.pause_processes().is_empty() {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        if let Some(mut c) = self.child.take() {
            // SAFETY: kill(2) of the child we started, by its pid.
            unsafe { libc_kill(c.id() as i32, 15) };
            let _ = c.wait();
        }
        umount_under(&self.dir);
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

extern "C" {
    #[link_name = "kill"]
    pub fn libc_kill(pid: i32, sig: i32) -> i32;
}

/// The test's directory, empty, with `root/` for the store (on a tmpfs of `size` if given,
/// to fill the disk on purpose).
fn fresh_dir(name: &str, size: Option<&str>) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("berth-cli-{name}-{}", std::process::id()));
    umount_under(&dir);
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(dir.join("root")).unwrap();
    if let Some(size) = size {
        let ok = Command::new("mount")
            .args([
                "-t",
                "tmpfs",
                "-o",
                &format!("size={size}"),
                "berth-test-store",
            ])
            .arg(dir.join("root"))
            .status()
            .unwrap();
        assert!(ok.success());
    }
    dir
}

/// Unmounts everything below `dir`, deepest first.
pub fn umount_under(dir: &Path) {
    let info = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    let mut points: Vec<String> = info
        .lines()
        .filter_map(|l| l.split(' ').nth(4).map(str::to_string))
        .filter(|p| Path::new(p).starts_with(dir))
        .collect();
    points.sort_by_key(|p| std::cmp::Reverse(p.len()));
    for p in points {
        let _ = Command::new("umount").arg("-l").arg(&p).status();
    }
}

pub fn mounts_under(dir: &Path) -> Vec<String> {
    std::fs::read_to_string("/proc/self/mountinfo")
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.split(' ').nth(4).map(str::to_string))
        .filter(|p| Path::new(p).starts_with(dir))
        .collect()
}

/// A free TCP port on the host.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// GET / from `addr`: the status line and body, or the error.
pub fn http_get(addr: &str) -> std::io::Result<String> {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect_timeout(
        &addr.parse().expect("address"),
        std::time::Duration::from_secs(2),
    )?;
    s.set_read_timeout(Some(std::time::Duration::from_secs(5)))?;
    s.write_all(b"GET / HTTP/1.0\r\nHost: berth\r\n\r\n")?;
    let mut out = String::new();
    s.read_to_string(&mut out)?;
    Ok(out)
}

pub struct Out(pub Output, pub String);

impl Out {
    pub fn stdout(&self) -> String {
        String::from_utf8_lossy(&self.0.stdout).into_owned()
    }
    pub fn stderr(&self) -> String {
        String::from_utf8_lossy(&self.0.stderr).into_owned()
    }
    pub fn ok(self) -> Self {
        assert!(
            self.0.status.success(),
            "berth {} failed: {:?}\n{}{}",
            self.1,
            self.0.status,
            self.stdout(),
            self.stderr()
        );
        self
    }
    /// Failed with exit `code`, and exactly one of its stderr lines is berth's (`berth: …`,
    /// returned); others may be a pull's progress or the container's own output.
    pub fn berth_error(self, code: i32) -> String {
        assert_eq!(
            self.0.status.code(),
            Some(code),
            "berth {}: {}",
            self.1,
            self.stderr()
        );
        let e = self.stderr();
        let lines: Vec<&str> = e.lines().filter(|l| l.starts_with("berth: ")).collect();
        assert_eq!(lines.len(), 1, "berth {}: {e}", self.1);
        lines[0].to_string()
    }
    /// Failed with exit 1 and exactly one line on stderr.
    pub fn one_line_error(self) -> String {
        assert_eq!(
            self.0.status.code(),
            Some(1),
            "berth {}: {}",
            self.1,
            self.stderr()
        );
        let err = self.stderr();
        assert_eq!(err.trim_end().lines().count(), 1, "berth {}: {err}", self.1);
        assert!(err.starts_with("berth: "), "{err}");
        err
    }
}
