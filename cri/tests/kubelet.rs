//! A real kubelet on berthd. Kubernetes 1.20.2's kubelet, built from Debian 12's kubernetes
//! source package by `scripts/kubelet.sh` (scripts/setup.sh runs it), in standalone mode: it
//! runs the static pod whose manifest the test writes, through berthd's CRI socket, as on a
//! node. That kubelet speaks CRI v1alpha2 and names the socket's path as the HTTP/2 authority.
//!
//! The pod: nginx with a hostPort, an exec liveness probe and an HTTP readiness probe (which
//! the kubelet sends to the pod's IP); a busybox sidecar that reaches nginx on localhost; a
//! container that exits 3 and is restarted; one that writes its log fast enough for the
//! kubelet to rotate it (ReopenContainerLog). Checked through the kubelet's own API, as kubectl
//! would see it: pod and container states, logs, exec (SPDY, the kubelet proxying berthd's
//! streaming server), port-forward, stats; then berthd is killed with -9 and restarted under
//! the running kubelet (nothing restarts), the kubelet is restarted (it finds its pod again by
//! the labels and annotations berthd kept; nothing restarts), and the manifest is removed (the
//! kubelet stops and removes the pod; nothing is left).
//!
//! What the kubelet changes on the host is put back by [`Host`]: the sysctls it sets at start
//! (vm.overcommit_memory, kernel.panic, ...), /var/log/pods and /var/log/containers entries,
//! its fixed /var/lib/kubelet/device-plugins socket. Its iptables chains are not made
//! (makeIPTablesUtilChains: false).

use berth_tests_support::cri::*;
use berth_tests_support::*;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const N: u8 = 19;
const POD: &str = "berth-kubelet-test";
const API: &str = "127.0.0.1:10350";
const READ_ONLY: &str = "127.0.0.1:10355";
const HOST_PORT: u16 = 18090;

fn kubelet_bin() -> PathBuf {
    let p = std::env::var_os("BERTH_TEST_KUBELET")
        .map(PathBuf::from)
        .unwrap_or_else(|| "/var/cache/berth-k8s/kubelet".into());
    assert!(
        p.exists(),
        "no kubelet at {}: scripts/kubelet.sh builds it (scripts/setup.sh runs it)",
        p.display()
    );
    p
}

/// What the kubelet changes on the host, recorded before and put back when dropped.
struct Host {
    sysctls: Vec<(String, String)>,
    made: Vec<PathBuf>,
    /// The kubelet's `/kubepods` cgroups (pod cgroups under QoS classes) in the hierarchies
    /// where there was none before.
    kubepods: Vec<PathBuf>,
}

/// `/kubepods` in every cgroup hierarchy of this host.
fn kubepods_dirs() -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir("/sys/fs/cgroup")
        .map(|rd| rd.flatten().map(|e| e.path().join("kubepods")).collect())
        .unwrap_or_default();
    v.push("/sys/fs/cgroup/kubepods".into());
    v
}

/// Directories below `dir` (itself included), deepest first.
fn tree(dir: &Path, out: &mut Vec<PathBuf>) {
    if let Ok(rd) = std::fs::read_dir(dir) {
        for e in rd.flatten() {
            if e.file_type().is_ok_and(|t| t.is_dir()) {
                tree(&e.path(), out);
            }
        }
        out.push(dir.to_path_buf());
    }
}

const SYSCTLS: &[&str] = &[
    "vm/overcommit_memory",
    "vm/panic_on_oom",
    "kernel/panic",
    "kernel/panic_on_oops",
    "kernel/keys/root_maxkeys",
    "kernel/keys/root_maxbytes",
];
/// Directories the kubelet makes if they are missing (the device-plugin one is fixed in 1.20).
const KUBELET_DIRS: &[&str] = &[
    "/var/log/pods",
    "/var/log/containers",
    "/var/lib/kubelet/device-plugins",
    "/var/lib/kubelet",
];

impl Host {
    fn record() -> Host {
        // Kubelet 1.20 takes /var/lib/kubelet/device-plugins/kubelet.sock whatever its root
        // directory: not on a host where a kubelet runs.
        assert!(
            !Path::new("/var/lib/kubelet/device-plugins").exists(),
            "/var/lib/kubelet/device-plugins exists: a kubelet runs here, and the test's own \
             would take its device-plugin socket"
        );
        let sysctls = SYSCTLS
            .iter()
            .map(|k| {
                let v = std::fs::read_to_string(Path::new("/proc/sys").join(k)).unwrap();
                (k.to_string(), v.trim().to_string())
            })
            .collect();
        let made = KUBELET_DIRS
            .iter()
            .map(PathBuf::from)
            .filter(|p| !p.exists())
            .collect();
        let kubepods = kubepods_dirs()
            .into_iter()
            .filter(|p| !p.exists())
            .collect();
        Host {
            sysctls,
            made,
            kubepods,
        }
    }
}

impl Drop for Host {
    fn drop(&mut self) {
        for (k, v) in &self.sysctls {
            let _ = std::fs::write(Path::new("/proc/sys").join(k), v);
        }
        // The pod's logs, if the kubelet did not remove them.
        for dir in ["/var/log/pods", "/var/log/containers"] {
            if let Ok(rd) = std::fs::read_dir(dir) {
                for e in rd.flatten() {
                    let name = e.file_name().to_string_lossy().into_owned();
                    if name.contains(POD) {
                        let p = e.path();
                        let _ = std::fs::remove_dir_all(&p).or_else(|_| std::fs::remove_file(&p));
                    }
                }
            }
        }
        let plugins = Path::new("/var/lib/kubelet/device-plugins");
        if self.made.iter().any(|m| m == plugins) {
            let _ = std::fs::remove_file(plugins.join("kubelet.sock"));
            let _ = std::fs::remove_file(plugins.join("DEPRECATION"));
        }
        for d in &self.made {
            let _ = std::fs::remove_dir(d);
        }
        for k in &self.kubepods {
            let mut dirs = Vec::new();
            tree(k, &mut dirs);
            for d in dirs {
                let _ = std::fs::remove_dir(d);
            }
        }
    }
}

/// The kubelet process; stopped (by its pid) and its mounts undone when dropped.
struct Kubelet {
    child: Child,
    root: PathBuf,
    log: PathBuf,
}

impl Kubelet {
    fn start(d: &Daemon) -> Kubelet {
        let dir = d.dir.join("k8s");
        let manifests = dir.join("manifests");
        std::fs::create_dir_all(&manifests).unwrap();
        let config = format!(
            r#"apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
staticPodPath: {manifests}
fileCheckFrequency: 1s
syncFrequency: 5s
cgroupDriver: cgroupfs
failSwapOn: false
makeIPTablesUtilChains: false
volumePluginDir: {plugins}
address: 127.0.0.1
port: 10350
readOnlyPort: 10355
healthzPort: 10348
healthzBindAddress: 127.0.0.1
authentication: {{anonymous: {{enabled: true}}, webhook: {{enabled: false}}}}
authorization: {{mode: AlwaysAllow}}
evictionHard: {{memory.available: "1Mi", nodefs.available: "1%", imagefs.available: "1%", nodefs.inodesFree: "1%"}}
imageGCHighThresholdPercent: 100
containerLogMaxSize: 1Ki
containerLogMaxFiles: 3
imageGCLowThresholdPercent: 99
"#,
            manifests = manifests.display(),
            plugins = dir.join("volume-plugins").display(),
        );
        std::fs::write(dir.join("kubelet.yaml"), config).unwrap();
        let log = dir.join("kubelet.log");
        let root = dir.join("root");
        let mut cmd = Command::new(kubelet_bin());
        // SAFETY: prctl only, between fork and exec.
        unsafe {
            use std::os::unix::process::CommandExt;
            // It ends with the test, also a test killed for taking too long.
            cmd.pre_exec(|| {
                libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGTERM);
                Ok(())
            });
        }
        let child = cmd
            .arg("--config")
            .arg(dir.join("kubelet.yaml"))
            .arg("--container-runtime=remote")
            .arg(format!(
                "--container-runtime-endpoint=unix://{}",
                d.sock().display()
            ))
            .arg("--root-dir")
            .arg(&root)
            .arg("--cert-dir")
            .arg(dir.join("pki"))
            .arg("--hostname-override=berth-node")
            .arg("--v=2")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .unwrap();
        Kubelet { child, root, log }
    }

    fn manifest(&self, d: &Daemon) -> PathBuf {
        d.dir.join("k8s/manifests").join(format!("{POD}.json"))
    }

    /// The last errors and warnings of the kubelet's log, for failure messages.
    fn tail(&self) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text
            .lines()
            .filter(|l| l.starts_with('E') || l.starts_with('W'))
            .collect();
        lines[lines.len().saturating_sub(15)..].join("\n")
    }
}

impl Drop for Kubelet {
    fn drop(&mut self) {
        let pid = self.child.id() as i32;
        // SAFETY: kill(2) on the pid of our own child, not yet reaped.
        unsafe { libc::kill(pid, libc::SIGTERM) };
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                break;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
        // The kubelet bind-mounts its root directory onto itself (to make it shared).
        let mounts = std::fs::read_to_string("/proc/mounts").unwrap_or_default();
        let mut below: Vec<&str> = mounts
            .lines()
            .filter_map(|l| l.split(' ').nth(1))
            .filter(|m| Path::new(m).starts_with(&self.root))
            .collect();
        below.sort_by_key(|m| std::cmp::Reverse(m.len()));
        for m in below {
            let _ = Command::new("umount").arg("-l").arg(m).status();
        }
    }
}

fn curl(args: &[&str]) -> Option<String> {
    let out = Command::new("curl")
        .args(["-sS", "-k", "-m", "10", "--fail"])
        .args(args)
        .output()
        .ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).into_owned())
}

/// The kubelet's view of our pod (its read-only API's /pods), if it has it.
fn pod() -> Option<serde_json::Value> {
    let list: serde_json::Value =
        serde_json::from_str(&curl(&[&format!("http://{READ_ONLY}/pods")])?).ok()?;
    list["items"]
        .as_array()?
        .iter()
        .find(|p| p["metadata"]["name"].as_str() == Some(&format!("{POD}-berth-node")))
        .cloned()
}

fn container<'a>(pod: &'a serde_json::Value, name: &str) -> Option<&'a serde_json::Value> {
    pod["status"]["containerStatuses"]
        .as_array()?
        .iter()
        .find(|c| c["name"].as_str() == Some(name))
}

/// Waits (up to `secs`) until `check` holds for the kubelet's view of the pod; that view.
fn wait_for(
    k: &Kubelet,
    what: &str,
    secs: u64,
    check: impl Fn(&serde_json::Value) -> bool,
) -> serde_json::Value {
    let deadline = Instant::now() + Duration::from_secs(secs);
    let mut last = None;
    while Instant::now() < deadline {
        if let Some(p) = pod() {
            if check(&p) {
                return p;
            }
            last = Some(p);
        }
        std::thread::sleep(Duration::from_millis(500));
    }
    panic!(
        "kubelet: {what} not seen in {secs}s; last status: {}\nkubelet log:\n{}",
        last.map(|p| p["status"].to_string()).unwrap_or_default(),
        k.tail()
    );
}

fn running_and_ready(p: &serde_json::Value, name: &str) -> bool {
    container(p, name).is_some_and(|c| c["state"]["running"].is_object() && c["ready"] == true)
}

#[test]
fn a_kubelet_runs_a_static_pod_on_berthd() {
    kubelet_bin();
    let spdy =
        build_spdy_client(&Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/streaming-client"));
    // Put back last: after the daemon has removed what is left of the pod.
    let _host = Host::record();
    let (_bridge, mut d) = networked_daemon("kubelet", N);
    let k = Kubelet::start(&d);

    let reg = registry();
    let manifest = serde_json::json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": POD, "namespace": "default"},
        "spec": {
            "containers": [
                {
                    "name": "web",
                    "image": format!("{reg}/library/nginx:latest"),
                    "ports": [{"containerPort": 80, "hostPort": HOST_PORT}],
                    "livenessProbe": {"exec": {"command": ["test", "-e", "/run/nginx.pid"]},
                                      "periodSeconds": 2},
                    "readinessProbe": {"httpGet": {"path": "/", "port": 80}, "periodSeconds": 1},
                },
                {
                    "name": "side",
                    "image": format!("{reg}/library/busybox:latest"),
                    "command": ["sh", "-c", "echo side started; exec sleep 100000"],
                },
                {
                    "name": "chatty",
                    "image": format!("{reg}/library/busybox:latest"),
                    "command": ["sh", "-c",
                                "i=0; while true; do echo line $i; i=$((i+1)); sleep 0.05; done"],
                },
                {
                    "name": "crash",
                    "image": format!("{reg}/library/busybox:latest"),
                    "command": ["sh", "-c", "echo crashing; exit 3"],
                },
            ],
        },
    });
    std::fs::write(k.manifest(&d), manifest.to_string()).unwrap();

    // Pulled, created and started by the kubelet through berthd; nginx ready by the kubelet's
    // HTTP probe of the pod's IP.
    let p = wait_for(&k, "web and side running and ready", 120, |p| {
        running_and_ready(p, "web") && running_and_ready(p, "side")
    });
    let ip = p["status"]["podIP"].as_str().unwrap().to_string();
    assert!(ip.starts_with(&format!("10.213.{N}.")), "pod IP {ip}");
    let web = container(&p, "web").unwrap();
    assert_eq!(web["restartCount"], 0);
    let web_id = web["containerID"].as_str().unwrap().to_string();
    assert!(web_id.starts_with("berth://"), "{web_id}");
    assert!(
        web["imageID"].as_str().unwrap().starts_with("sha256:"),
        "{web}"
    );
    let page = curl(&[&format!("http://127.0.0.1:{HOST_PORT}/")]).expect("the hostPort");
    assert!(page.contains("Welcome to nginx"), "{page}");
    // In the pod cgroup the kubelet made and named (cgroupfs driver, QoS class BestEffort).
    let uid = p["metadata"]["uid"].as_str().unwrap().to_string();
    let cgroup = cgroup_of(&d, web_id.trim_start_matches("berth://"));
    let pod_cgroup = format!("/kubepods/besteffort/pod{uid}/");
    assert!(cgroup.lines().all(|l| l.contains(&pod_cgroup)), "{cgroup}");

    // Through the kubelet's API, as kubectl reaches it: logs, exec, port-forward, stats.
    let logs = curl(&[&format!(
        "https://{API}/containerLogs/default/{POD}-berth-node/side"
    )])
    .unwrap();
    assert_eq!(logs.trim(), "side started");
    let exec = |container: &str, cmd: &[&str], stdin: Option<&str>| {
        let mut c = Command::new(&spdy);
        c.args(["exec", "-kubelet"]);
        if stdin.is_some() {
            c.arg("-stdin");
        }
        for a in cmd {
            c.args(["-command", a]);
        }
        c.arg(format!(
            "https://{API}/exec/default/{POD}-berth-node/{container}"
        ));
        c.stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = c.spawn().unwrap();
        {
            use std::io::Write;
            let mut i = child.stdin.take().unwrap();
            if let Some(s) = stdin {
                i.write_all(s.as_bytes()).unwrap();
            }
        }
        let out = child.wait_with_output().unwrap();
        (
            out.status.code().unwrap_or(-1),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    // The sidecar reaches nginx on the pod's localhost.
    let (code, out, err) = exec(
        "side",
        &["wget", "-q", "-O", "-", "http://127.0.0.1/"],
        None,
    );
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("Welcome to nginx"), "{out}");
    let (code, out, err) = exec(
        "side",
        &["sh", "-c", "cat; echo oops >&2; exit 7"],
        Some("in"),
    );
    assert_eq!((code, out.as_str()), (7, "in"), "{err}");
    assert!(err.contains("oops"), "{err}");
    let (code, out, _) = exec("web", &["cat", "/etc/hostname"], None);
    assert_eq!(
        (code, out.trim()),
        (0, format!("{POD}-berth-node").as_str())
    );
    let fwd = Command::new(&spdy)
        .args([
            "portforward",
            "-port",
            "80",
            "-send",
            "GET / HTTP/1.0\r\n\r\n",
        ])
        .arg(format!(
            "https://{API}/portForward/default/{POD}-berth-node"
        ))
        .output()
        .unwrap();
    let fwd_out = String::from_utf8_lossy(&fwd.stdout);
    assert!(fwd_out.starts_with("HTTP/1.1 200 OK"), "{fwd_out}");
    let stats: serde_json::Value =
        serde_json::from_str(&curl(&[&format!("http://{READ_ONLY}/stats/summary")]).unwrap())
            .unwrap();
    let pod_stats = stats["pods"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["podRef"]["name"] == format!("{POD}-berth-node"))
        .unwrap_or_else(|| panic!("no stats for the pod: {stats}"));
    let web_stats = pod_stats["containers"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == "web")
        .unwrap();
    assert!(
        web_stats["memory"]["workingSetBytes"].as_u64().unwrap() > 0,
        "{web_stats}"
    );
    assert!(web_stats["rootfs"]["usedBytes"].is_u64(), "{web_stats}");

    // Log rotation: the kubelet renames a log over containerLogMaxSize and calls
    // ReopenContainerLog; the shim goes on in a new file, which the kubelet reads.
    let dir = format!("/var/log/pods/default_{POD}-berth-node_{uid}/chatty");
    let rotated = || {
        std::fs::read_dir(&dir)
            .map(|rd| {
                rd.flatten()
                    .filter(|e| e.file_name().to_string_lossy().starts_with("0.log."))
                    .count()
            })
            .unwrap_or(0)
    };
    let deadline = Instant::now() + Duration::from_secs(45);
    while rotated() < 2 {
        assert!(
            Instant::now() < deadline,
            "the kubelet did not rotate {dir}: {:?}\n{}",
            std::fs::read_dir(&dir)
                .map(|rd| rd.flatten().map(|e| e.file_name()).collect::<Vec<_>>()),
            k.tail()
        );
        std::thread::sleep(Duration::from_millis(500));
    }
    // The number of the last line the kubelet answers with. With tailLines=1 that is usually
    // the only one, but the kubelet reads on to the end of the file after finding where the
    // last line starts, so a line the container writes meanwhile comes too.
    let line = |text: &str| -> u64 {
        let l = text.lines().rfind(|l| !l.trim().is_empty()).unwrap_or("");
        l.trim()
            .strip_prefix("line ")
            .and_then(|n| n.parse().ok())
            .unwrap_or_else(|| panic!("{l:?}"))
    };
    let tail = || {
        curl(&[&format!(
            "https://{API}/containerLogs/default/{POD}-berth-node/chatty?tailLines=1"
        )])
        .unwrap()
    };
    let before = line(&tail());
    std::thread::sleep(Duration::from_secs(1));
    let after = line(&tail());
    assert!(
        after > before,
        "the log stopped at line {before} after a rotation"
    );
    let current = std::fs::read_to_string(format!("{dir}/0.log")).unwrap();
    assert!(current.contains(" stdout F line "), "{current}");

    // The container that exits: its exit code reported, restarted by the kubelet.
    let p = wait_for(&k, "crash restarted after exiting 3", 60, |p| {
        container(p, "crash").is_some_and(|c| {
            c["restartCount"].as_u64() >= Some(1) && c["lastState"]["terminated"]["exitCode"] == 3
        })
    });
    assert_eq!(
        container(&p, "crash").unwrap()["lastState"]["terminated"]["reason"],
        "Error"
    );

    // berthd killed with -9 under the kubelet, and started again: the kubelet sees the same
    // containers, restarts none of them, and the hostPort still answers.
    d.kill9();
    std::thread::sleep(Duration::from_secs(2));
    d.start();
    std::thread::sleep(Duration::from_secs(12));
    let p = wait_for(
        &k,
        "web and side still ready after berthd's restart",
        45,
        |p| running_and_ready(p, "web") && running_and_ready(p, "side"),
    );
    for name in ["web", "side"] {
        assert_eq!(container(&p, name).unwrap()["restartCount"], 0, "{name}");
    }
    assert_eq!(
        container(&p, "web").unwrap()["containerID"],
        web_id.as_str()
    );
    assert_eq!(p["status"]["podIP"], ip.as_str());
    let page = curl(&[&format!("http://127.0.0.1:{HOST_PORT}/")]).expect("the hostPort");
    assert!(page.contains("Welcome to nginx"), "{page}");

    // The kubelet itself restarted: it finds its pod in berthd by the labels and annotations
    // it gave (container hash, restart count) and restarts nothing.
    let crashes = container(&p, "crash").unwrap()["restartCount"]
        .as_u64()
        .unwrap();
    drop(k);
    let k = Kubelet::start(&d);
    std::thread::sleep(Duration::from_secs(10));
    let p = wait_for(&k, "web and side ready under a new kubelet", 45, |p| {
        running_and_ready(p, "web") && running_and_ready(p, "side")
    });
    for name in ["web", "side"] {
        assert_eq!(container(&p, name).unwrap()["restartCount"], 0, "{name}");
    }
    assert_eq!(
        container(&p, "web").unwrap()["containerID"],
        web_id.as_str()
    );
    let crash = container(&p, "crash").unwrap()["restartCount"]
        .as_u64()
        .unwrap();
    assert!(crash >= crashes, "restart count {crash}, was {crashes}");

    // The manifest removed: the kubelet stops the pod and removes it from berthd.
    std::fs::remove_file(k.manifest(&d)).unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let listed = d.berth(&["ps", "-a", "-q"]).stdout();
        let sandboxes = std::fs::read_dir(d.dir.join("state/pods"))
            .map(|rd| rd.count())
            .unwrap_or(0);
        if pod().is_none() && listed.trim().is_empty() && sandboxes == 0 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the kubelet did not remove the pod: containers {listed:?}, {sandboxes} sandboxes\n{}",
            k.tail()
        );
        std::thread::sleep(Duration::from_millis(500));
    }
    // On a hybrid host the pod cgroup's twin in the unified hierarchy (made by berth, unknown
    // to the kubelet) is gone too.
    let unified = Path::new("/sys/fs/cgroup/unified");
    if unified.join("cgroup.controllers").exists() {
        let twin = unified.join(pod_cgroup.trim_matches('/'));
        assert!(!twin.exists(), "{} left", twin.display());
    }
    drop(k);
    let left = d.leftovers();
    assert!(left.is_empty(), "{left:#?}");
}
