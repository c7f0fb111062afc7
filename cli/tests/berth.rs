//! berthd and berth together, for real: a private berthd per test (own socket, store and state
//! under a temp dir), images pulled from the fixture registry ($BERTH_TEST_REGISTRY, default
//! 127.0.0.1:5000, which scripts/test.sh starts), and nginx run from a bundle with
//! berth-runtime. Needs root.

use berth_tests_support::*;
use std::io::{BufRead, BufReader, Read, Write};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

#[test]
fn pull_every_fixture_tag_and_manage_images() {
    let d = Daemon::new("manage");
    let reg = registry();
    let tags = [
        "library/busybox:latest",
        "library/nginx:latest",
        "library/nginx:v2s2",
        "library/nginx:multiarch",
        "library/nginx:multiarch-v2s2",
        "library/pause:3.9",
    ];
    for t in tags {
        let out = d.berth(&["pull", &format!("{reg}/{t}")]).ok();
        assert!(
            out.stdout().contains(&format!("{reg}/{t}")),
            "{}",
            out.stdout()
        );
    }
    // Pulled again: nothing to download.
    let again = d.berth(&["pull", &format!("{reg}/library/busybox")]).ok();
    assert!(again.stdout().contains("up to date"), "{}", again.stdout());

    let json: serde_json::Value =
        serde_json::from_str(&d.berth(&["images", "--format", "json"]).ok().stdout()).unwrap();
    assert_eq!(json.as_array().unwrap().len(), tags.len(), "{json}");
    let table = d.berth(&["images"]).ok().stdout();
    let head: Vec<&str> = table
        .lines()
        .next()
        .unwrap()
        .split("   ")
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .collect();
    assert_eq!(
        head,
        ["REPOSITORY", "TAG", "IMAGE ID", "CREATED", "SIZE"],
        "{table}"
    );
    assert!(
        table.contains(&format!("{reg}/library/nginx")) && table.contains("multiarch-v2s2"),
        "{table}"
    );

    // `images REPOSITORY[:TAG]` as docker: every tag of a repository, or one.
    let only = |f: &str| {
        let v: serde_json::Value =
            serde_json::from_str(&d.berth(&["images", "--format", "json", f]).ok().stdout())
                .unwrap();
        v.as_array().unwrap().len()
    };
    assert_eq!(only(&format!("{reg}/library/nginx")), 4);
    assert_eq!(only(&format!("{reg}/library/nginx:v2s2")), 1);
    assert_eq!(only("nginx"), 0, "nginx is docker.io/library/nginx");

    // nginx:latest and nginx:v2s2 are the same image in two manifest formats: same config.
    let ids: Vec<String> = d
        .berth(&["images", "-q"])
        .ok()
        .stdout()
        .lines()
        .map(String::from)
        .collect();
    assert_eq!(ids.len(), tags.len());
    assert!(ids.iter().all(|i| i.len() == 12));

    d.berth(&["tag", &format!("{reg}/library/busybox"), "mybox:1"])
        .ok();
    let insp: serde_json::Value =
        serde_json::from_str(&d.berth(&["inspect", "mybox:1"]).ok().stdout()).unwrap();
    assert_eq!(
        insp[0]["Config"]["Cmd"],
        serde_json::json!(["sh"]),
        "{insp}"
    );
    assert_eq!(insp[0]["RepoTags"][0], "docker.io/library/mybox:1");

    let hist = d
        .berth(&["history", &format!("{reg}/library/nginx")])
        .ok()
        .stdout();
    assert!(hist.starts_with("IMAGE"), "{hist}");
    assert!(hist.lines().count() >= 3, "{hist}");
    assert!(hist.contains("<missing>"), "{hist}");

    let rm = d.berth(&["rmi", "mybox:1"]).ok();
    assert!(rm.stdout().contains("Untagged: mybox:1"), "{}", rm.stdout());
    let err = d.berth(&["rmi", "mybox:1"]).one_line_error();
    assert!(err.contains("not found"), "{err}");
    // The other name of the image is still there.
    d.berth(&["inspect", &format!("{reg}/library/busybox")])
        .ok();
}

#[test]
fn concurrent_pulls_of_one_image() {
    let d = Daemon::new("concurrent");
    let r = format!("{}/library/nginx:multiarch", registry());
    let kids: Vec<Child> = (0..3)
        .map(|_| {
            d.cmd(&["pull", "-q", &r])
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    for k in kids {
        let out = k.wait_with_output().unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), r);
    }
    assert_eq!(d.berth(&["images", "-q"]).ok().stdout().lines().count(), 1);
}

/// A registry that answers every request with 500.
fn broken_registry() -> (String, std::thread::JoinHandle<()>) {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap().to_string();
    let h = std::thread::spawn(move || {
        l.set_nonblocking(false).unwrap();
        for _ in 0..8 {
            let Ok((mut s, _)) = l.accept() else { return };
            let mut r = BufReader::new(s.try_clone().unwrap());
            let mut line = String::new();
            while r.read_line(&mut line).map(|n| n > 2).unwrap_or(false) {
                line.clear();
            }
            let _ = s.write_all(b"HTTP/1.1 500 Internal Server Error\r\ncontent-length: 4\r\nconnection: close\r\n\r\noops");
        }
    });
    (addr, h)
}

#[test]
fn bad_input_gives_one_line_and_stores_nothing() {
    let d = Daemon::new("errors");
    let reg = registry();
    let err = d
        .berth(&["pull", &format!("{reg}/library/nosuch:1")])
        .one_line_error();
    assert!(err.contains("nosuch"), "{err}");
    let (addr, _h) = broken_registry();
    let err = d
        .berth(&["pull", "--plain-http", &format!("{addr}/library/x:1")])
        .one_line_error();
    assert!(err.contains("500") || err.contains("Internal"), "{err}");
    let err = d.berth(&["inspect", "nothing-here"]).one_line_error();
    assert!(err.contains("not found"), "{err}");
    let err = d.berth(&["pull", "UPPER/Case"]).one_line_error();
    assert!(!err.is_empty());
    assert_eq!(d.berth(&["images", "-q"]).ok().stdout(), "");
    // berthd not running: says how to start it.
    let err = Out(
        Command::new(bin("berth"))
            .args(["-H", "unix:///nonexistent/berthd.sock", "images"])
            .output()
            .unwrap(),
        "images".into(),
    )
    .one_line_error();
    assert!(
        err.contains("is it running") && err.contains("berthd"),
        "{err}"
    );
}

#[test]
fn second_daemon_on_the_same_state_is_refused() {
    let d = Daemon::new("twice");
    let out = d.spawn().wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    let log = d.log();
    assert!(log.contains("another berthd"), "{log}");
}

#[test]
fn kill_9_during_pull_then_restart() {
    let mut d = Daemon::new("kill9");
    let r = format!("{}/library/nginx:multiarch-v2s2", registry());
    let mut pull = d
        .cmd(&["pull", &r])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Wait until blobs are moving, then kill berthd mid-pull.
    let mut err = BufReader::new(pull.stderr.take().unwrap());
    let mut line = String::new();
    while err.read_line(&mut line).unwrap_or(0) > 0 && !line.contains("download") {
        line.clear();
    }
    d.kill9();
    let mut rest = String::new();
    let _ = err.read_to_string(&mut rest);
    let status = pull.wait().unwrap();
    assert!(!status.success());
    d.start();
    // The store opens clean; the pull works now; the image is whole (runs below would fail
    // otherwise: check its layers unpacked by making a bundle).
    d.berth(&["pull", &r]).ok();
    let bundle = d.dir.join("b");
    d.berth(&["bundle", &r, bundle.to_str().unwrap()]).ok();
    assert!(bundle.join("rootfs/usr/sbin/nginx").exists());
    d.berth(&["bundle", "--rm", bundle.to_str().unwrap()]).ok();
    assert_eq!(mounts_under(&d.dir), Vec::<String>::new());
}

#[test]
fn nginx_pulled_by_berth_serves_under_berth_runtime() {
    let d = Daemon::new("nginx");
    let r = format!("{}/library/nginx", registry());
    d.berth(&["pull", &r]).ok();
    let bundle = d.dir.join("web");
    let b = bundle.to_str().unwrap();
    d.berth(&["bundle", &r, b]).ok();
    let err = d.berth(&["rmi", &r]).one_line_error();
    assert!(err.contains("in use"), "{err}");
    let rt = bin("berth-runtime");
    let root = d.dir.join("rt");
    let id = format!("berth-cli-nginx-{}", std::process::id());
    // The container inherits the runtime's stdio: files, not pipes that would stay open.
    let log = d.dir.join("runtime.log");
    let runtime = |args: &[&str]| {
        let f = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log)
            .unwrap();
        let status = Command::new(&rt)
            .arg("--root")
            .arg(&root)
            .args(args)
            .stdin(Stdio::null())
            .stdout(f.try_clone().unwrap())
            .stderr(f)
            .status()
            .unwrap();
        (status, std::fs::read_to_string(&log).unwrap_or_default())
    };
    // Deletes the container even if an assertion below fails.
    struct Ctr(PathBuf, PathBuf, String);
    impl Drop for Ctr {
        fn drop(&mut self) {
            let _ = Command::new(&self.0)
                .arg("--root")
                .arg(&self.1)
                .args(["delete", "-f", &self.2])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status();
        }
    }
    let _guard = Ctr(rt.clone(), root.clone(), id.clone());
    let (st, log_text) = runtime(&["run", "-d", "--bundle", b, &id]);
    assert!(st.success(), "{log_text}");
    let state = Command::new(&rt)
        .arg("--root")
        .arg(&root)
        .args(["state", &id])
        .output()
        .unwrap();
    let pid =
        serde_json::from_slice::<serde_json::Value>(&state.stdout).unwrap()["pid"].to_string();
    let mut page = String::new();
    for _ in 0..100 {
        let o = Command::new("nsenter")
            .args(["-t", &pid, "-n", "curl", "-s", "http://127.0.0.1/"])
            .output()
            .unwrap();
        page = String::from_utf8_lossy(&o.stdout).into_owned();
        if page.contains("Welcome to nginx!") {
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let (del, log_text) = runtime(&["delete", "-f", &id]);
    assert!(page.contains("Welcome to nginx!"), "{page}");
    assert!(del.success(), "{log_text}");
    d.berth(&["bundle", "--rm", b]).ok();
    assert_eq!(mounts_under(&d.dir), Vec::<String>::new());
    assert!(!bundle.exists());
    d.berth(&["rmi", &r]).ok();
}

#[test]
fn full_disk_fails_cleanly_and_keeps_earlier_images() {
    // 8 MB: room for busybox (1 MB compressed, 2 MB unpacked), not for nginx.
    let d = Daemon::with_store_size("fulldisk", Some("8m"));
    let reg = registry();
    let busybox = format!("{reg}/library/busybox");
    d.berth(&["pull", &busybox]).ok();
    let err = d
        .berth(&["pull", "-q", &format!("{reg}/library/nginx")])
        .one_line_error();
    assert!(
        err.contains("nginx") && err.to_lowercase().contains("space"),
        "{err}"
    );
    let left = d.berth(&["images", "-q"]).ok().stdout();
    assert_eq!(left.lines().count(), 1, "{left}");
    // Nothing half-written stays behind to fill the disk: the ingest area is empty again.
    let ingest = d.dir.join("root/content/ingest");
    let n = std::fs::read_dir(&ingest).map(|r| r.count()).unwrap_or(0);
    assert_eq!(n, 0, "partial downloads left in {}", ingest.display());
    // The earlier image is intact: it still makes a working root filesystem.
    let bundle = d.dir.join("box");
    d.berth(&["bundle", &busybox, bundle.to_str().unwrap()])
        .ok();
    assert!(bundle.join("rootfs/bin/busybox").exists());
    d.berth(&["bundle", "--rm", bundle.to_str().unwrap()]).ok();
}

/// A private docker-registry on a free loopback port for one test, killed (by its pid) on drop.
struct PrivateRegistry {
    addr: String,
    child: std::process::Child,
    _dir: tempfile::TempDir,
}

impl PrivateRegistry {
    fn start() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let port = free_port();
        let addr = format!("127.0.0.1:{port}");
        let cfg = dir.path().join("config.yml");
        std::fs::write(
            &cfg,
            format!(
                "version: 0.1\nlog:\n  level: warn\nstorage:\n  filesystem:\n    rootdirectory: {}\nhttp:\n  addr: {addr}\n",
                dir.path().join("data").display()
            ),
        )
        .unwrap();
        let mut cmd = std::process::Command::new("docker-registry");
        cmd.arg("serve")
            .arg(&cfg)
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        for (k, _) in std::env::vars().filter(|(k, _)| k.starts_with("REGISTRY_")) {
            cmd.env_remove(k);
        }
        let mut child = cmd.spawn().expect("docker-registry");
        let sock: std::net::SocketAddr = addr.parse().unwrap();
        for _ in 0..100 {
            if std::net::TcpStream::connect_timeout(&sock, Duration::from_millis(100)).is_ok() {
                return Self {
                    addr,
                    child,
                    _dir: dir,
                };
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        let _ = child.kill();
        let _ = child.wait();
        panic!("docker-registry did not listen on {addr}");
    }
}

impl Drop for PrivateRegistry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn push_then_pull_back_through_the_cli() {
    let reg = PrivateRegistry::start();
    let d = Daemon::new("push");
    let src = format!("{}/library/busybox:latest", registry());
    d.berth(&["pull", "-q", &src]).ok();
    let dst = format!("{}/team/box:v1", reg.addr);
    d.berth(&["tag", &src, &dst]).ok();
    let out = d.berth(&["push", &dst]).ok().stdout();
    assert!(out.contains("sha256:"), "{out}");
    // Gone here, then pulled back from where it was pushed: the same image.
    let id = |d: &Daemon, name: &str| {
        d.berth(&["inspect", "--type", "image", "-f", "{{.Id}}", name])
            .ok()
            .stdout()
            .trim()
            .to_string()
    };
    let before = id(&d, &src);
    d.berth(&["rmi", &dst]).ok();
    d.berth(&["pull", "-q", &dst]).ok();
    assert_eq!(id(&d, &dst), before);
    // A tag the registry does not have: one line, nothing stored.
    let e = d
        .berth(&["pull", &format!("{}/team/box:nope", reg.addr)])
        .one_line_error();
    assert!(e.contains("manifest unknown"), "{e}");
}

/// An image is named by its ID everywhere a name is taken, as in docker: the 12 digits
/// `images -q` prints, `sha256:` and a prefix, or the whole ID. `run` of an ID runs the local
/// image (no pull of `docker.io/library/<id>`); `rmi` of an ID with several names is a conflict
/// unless forced, and forced takes every name off.
#[test]
fn images_are_named_by_their_id() {
    let d = Daemon::with_containers("by-id", 40);
    let reg = registry();
    let busybox = format!("{reg}/library/busybox");
    d.berth(&["pull", "-q", &busybox]).ok();
    let id = d.berth(&["images", "-q", &busybox]).ok().stdout();
    let id = id.trim().to_string();
    assert_eq!(id.len(), 12, "{id}");
    let insp: serde_json::Value =
        serde_json::from_str(&d.berth(&["inspect", &id]).ok().stdout()).unwrap();
    let full = insp[0]["Id"].as_str().unwrap().to_string();
    assert!(full.starts_with(&format!("sha256:{id}")), "{insp}");
    for name in [full.as_str(), &full[..19], &full[7..]] {
        let i: serde_json::Value =
            serde_json::from_str(&d.berth(&["inspect", name]).ok().stdout()).unwrap();
        assert_eq!(i[0]["Id"], full, "inspect {name}");
    }
    d.berth(&["history", &id]).ok();
    d.berth(&["tag", &id, "mybox:1"]).ok();

    // run by ID: the local image, nothing pulled (the daemon would say so on stderr).
    let out = d.berth(&["run", "--rm", &id, "echo", "ran by id"]).ok();
    assert_eq!(out.stdout().trim(), "ran by id");
    assert!(!out.stderr().contains("Unable to find"), "{}", out.stderr());

    // Two names: rmi of the ID is a conflict, and nothing is removed.
    let err = d.berth(&["rmi", &id]).one_line_error();
    assert!(
        err.contains(&format!("unable to delete {id} (must be forced)")),
        "{err}"
    );
    assert_eq!(d.berth(&["images", "-q"]).ok().stdout().lines().count(), 2);
    // Forced: both names go.
    let rm = d.berth(&["rmi", "-f", &id]).ok().stdout();
    assert!(rm.contains("Untagged: mybox:1"), "{rm}");
    assert!(rm.contains(&format!("Untagged: {busybox}")), "{rm}");
    assert_eq!(d.berth(&["images", "-q"]).ok().stdout(), "");

    // An ID no image has is not found (and never a name to pull for inspect or rmi).
    let err = d.berth(&["rmi", &id]).one_line_error();
    assert!(err.contains("not found"), "{err}");
}
