//! Container networking through the real CNI plugins (bridge, host-local, portmap from
//! /usr/lib/cni) and through fake plugins that record what they were given.
//!
//! Run as root, in parallel: every test has its own bridge (`bt<pid><n>`), subnet, state
//! directory and container ids, and a guard that tears down what the test made (and only
//! that) even when it fails.

use berth_cri::network::*;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

static SEQ: AtomicUsize = AtomicUsize::new(0);

fn is_root() -> bool {
    nix::unistd::geteuid().is_root()
}

macro_rules! require_root {
    () => {
        if !is_root() {
            eprintln!("skipped: needs root");
            return;
        }
    };
}

fn temp_dir(tag: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!(
        "berth-net-{tag}-{}-{}",
        std::process::id(),
        SEQ.fetch_add(1, Ordering::SeqCst)
    ));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn routes() -> String {
    let out = Command::new("ip").args(["-4", "route"]).output().unwrap();
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// One test's network objects; Drop takes them all away.
struct Env {
    net: Network,
    state: PathBuf,
    bridge: String,
    /// "10.201.X."
    prefix: String,
    ids: Mutex<Vec<String>>,
    children: Mutex<Vec<Child>>,
}

impl Env {
    fn new(n: u32) -> Env {
        let pid = std::process::id();
        let bridge = format!("bt{}{n}", pid % 10000);
        // A /24 nobody routes yet, picked from the pid and the test's number.
        let have = routes();
        let mut third = ((pid % 30) * 8 + n) % 250;
        for _ in 0..250 {
            if !have.contains(&format!("10.201.{third}.")) {
                break;
            }
            third = (third + 1) % 250;
        }
        let prefix = format!("10.201.{third}.");
        let state = temp_dir(&format!("t{n}"));
        let net = Network::bridge(NetworkOptions {
            name: format!("berth-test{n}"),
            bridge: bridge.clone(),
            subnet: format!("{prefix}0/24"),
            plugin_dirs: default_plugin_dirs(),
            state_dir: state.clone(),
        });
        Env {
            net,
            state,
            bridge,
            prefix,
            ids: Mutex::new(Vec::new()),
            children: Mutex::new(Vec::new()),
        }
    }

    /// A container id unique to this test run, torn down by Drop.
    fn id(&self, what: &str) -> String {
        let id = format!(
            "{what}-{}-{}",
            std::process::id(),
            SEQ.fetch_add(1, Ordering::SeqCst)
        );
        self.ids.lock().unwrap().push(id.clone());
        id
    }

    fn spawn(&self, cmd: &mut Command) -> u32 {
        let child = cmd
            .stdin(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("spawn {cmd:?}: {e}"));
        let pid = child.id();
        self.children.lock().unwrap().push(child);
        pid
    }

    fn kill_children(&self) {
        for mut c in self.children.lock().unwrap().drain(..) {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    fn ipam_dir(&self) -> PathBuf {
        self.state.join("ipam").join(self.net.name())
    }
}

impl Drop for Env {
    fn drop(&mut self) {
        self.kill_children();
        let ids: Vec<String> = self.ids.lock().unwrap().clone();
        let net = &self.net;
        // del is async; run it on a runtime of its own (Drop may run inside a test's runtime).
        std::thread::scope(|s| {
            s.spawn(|| {
                let rt = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .unwrap();
                for id in &ids {
                    if let Err(e) = rt.block_on(net.del(id, None)) {
                        eprintln!("cleanup: del {id}: {e:#}");
                    }
                    if let Err(e) = net.remove_netns(id) {
                        eprintln!("cleanup: remove netns {id}: {e:#}");
                    }
                }
            });
        });
        // Only this test's own bridge.
        if Path::new("/sys/class/net").join(&self.bridge).exists() {
            let _ = Command::new("ip")
                .args(["link", "del", "dev", &self.bridge, "type", "bridge"])
                .status();
        }
        let netns_dir = self.state.join("netns");
        for _ in 0..8 {
            if nix::mount::umount2(&netns_dir, nix::mount::MntFlags::MNT_DETACH).is_err() {
                break;
            }
        }
        let _ = std::fs::remove_dir_all(&self.state);
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn curl(url: &str) -> Result<String, String> {
    let out = Command::new("curl")
        .args(["-sS", "--noproxy", "*", "--max-time", "3", url])
        .output()
        .map_err(|e| e.to_string())?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        Err(String::from_utf8_lossy(&out.stderr).into_owned())
    }
}

fn curl_retry(url: &str) -> String {
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        match curl(url) {
            Ok(body) => return body,
            Err(e) if Instant::now() > deadline => panic!("curl {url}: {e}"),
            Err(_) => std::thread::sleep(Duration::from_millis(100)),
        }
    }
}

fn iptables_save() -> String {
    let mut all = String::new();
    for bin in ["iptables-save", "ip6tables-save"] {
        if let Ok(o) = Command::new(bin).output() {
            all.push_str(&String::from_utf8_lossy(&o.stdout));
        }
    }
    all
}

fn mountinfo(pid: &str) -> String {
    std::fs::read_to_string(format!("/proc/{pid}/mountinfo")).unwrap()
}

fn mounted_at(info: &str, path: &Path) -> bool {
    let p = path.to_str().unwrap();
    info.lines().any(|l| l.split_whitespace().nth(4) == Some(p))
}

fn link_exists(name: &str) -> bool {
    Path::new("/sys/class/net").join(name).exists()
}

fn httpd(env: &Env, ns: &Path, page: &str) {
    let www = env
        .state
        .join(format!("www-{}", SEQ.fetch_add(1, Ordering::SeqCst)));
    std::fs::create_dir_all(&www).unwrap();
    std::fs::write(www.join("index.html"), page).unwrap();
    env.spawn(
        Command::new("nsenter")
            .arg(format!("--net={}", ns.display()))
            .args(["busybox", "httpd", "-f", "-p", "80", "-h"])
            .arg(&www),
    );
}

fn tcp(host_port: u16, container_port: u16) -> PortMapping {
    PortMapping {
        host_ip: String::new(),
        host_port,
        container_port,
        protocol: "tcp".into(),
    }
}

/// Everything that names the container in the host's state is gone.
fn assert_torn_down(env: &Env, id: &str, att: &Attachment) {
    if let Some(veth) = &att.host_interface {
        assert!(!link_exists(veth), "veth {veth} left on the host");
    }
    let ip = att.ip.unwrap().to_string();
    assert!(
        !env.ipam_dir().join(&ip).exists(),
        "host-local still holds {ip}"
    );
    if let Ok(rd) = std::fs::read_dir(env.ipam_dir()) {
        for e in rd.flatten() {
            let text = std::fs::read_to_string(e.path()).unwrap_or_default();
            assert!(
                !text.contains(id),
                "{} still names {id}",
                e.path().display()
            );
        }
    }
    let rules = iptables_save();
    for chain in [
        cni_chain_name(env.net.name(), id, ""),
        cni_chain_name(env.net.name(), id, "DN-"),
    ] {
        assert!(
            !rules.contains(&chain),
            "iptables still has {chain}:\n{rules}"
        );
    }
    assert!(
        !rules.contains(id),
        "iptables still mentions {id}:\n{rules}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn published_port_on_localhost_and_teardown_leaves_nothing() {
    require_root!();
    let env = Env::new(1);
    let net = &env.net;
    let id = env.id("web");
    let ns = net.create_netns(&id).await.unwrap();
    assert_eq!(ns, env.state.join("netns").join(&id));
    let port = free_port();
    let att = net.add(&id, &ns, "eth0", &[tcp(port, 80)]).await.unwrap();

    // The attachment: an address in the subnet, the bridge's as gateway, a veth on the bridge.
    let ip = att.ip.expect("an IP");
    assert!(
        ip.to_string().starts_with(&env.prefix),
        "{ip} not in {}0/24",
        env.prefix
    );
    assert_eq!(att.prefix, 24);
    assert_eq!(
        att.gateway,
        Some(format!("{}1", env.prefix).parse::<IpAddr>().unwrap())
    );
    assert_eq!(att.interface, "eth0");
    assert!(
        att.mac.as_deref().is_some_and(|m| m.len() == 17),
        "{:?}",
        att.mac
    );
    let veth = att.host_interface.clone().expect("host veth");
    let master = std::fs::read_link(format!("/sys/class/net/{veth}/master")).unwrap();
    assert!(
        master.ends_with(&env.bridge),
        "{veth} is on {}",
        master.display()
    );
    assert!(env.ipam_dir().join(ip.to_string()).exists());
    // The plugins' per-container chains are named as berth computes them.
    let rules = iptables_save();
    for chain in [
        cni_chain_name(net.name(), &id, ""),
        cni_chain_name(net.name(), &id, "DN-"),
    ] {
        assert!(rules.contains(&chain), "no {chain} in:\n{rules}");
    }
    // The cache holds the ADD.
    assert_eq!(net.cached_ids().unwrap(), vec![id.clone()]);

    let page = format!("hello from {id}\n");
    httpd(&env, &ns, &page);
    assert_eq!(curl_retry(&format!("http://127.0.0.1:{port}/")), page);
    assert_eq!(curl_retry(&format!("http://{ip}/")), page);

    // A second ADD of the same container is refused, and the port is taken for others.
    let again = net
        .add(&id, &ns, "eth0", &[])
        .await
        .unwrap_err()
        .to_string();
    assert!(again.contains("already attached"), "{again}");
    let other = env.id("other");
    let other_ns = net.create_netns(&other).await.unwrap();
    let taken = net
        .add(&other, &other_ns, "eth0", &[tcp(port, 8080)])
        .await
        .unwrap_err()
        .to_string();
    assert_eq!(
        taken,
        format!("port {port}/tcp is already allocated to container {id} on 0.0.0.0")
    );
    net.remove_netns(&other).unwrap();

    env.kill_children();
    net.del(&id, Some(&ns)).await.unwrap();
    assert_torn_down(&env, &id, &att);
    assert!(net.cached_ids().unwrap().is_empty());
    assert!(curl(&format!("http://127.0.0.1:{port}/")).is_err());

    net.remove_netns(&id).unwrap();
    assert!(!ns.exists());
    assert!(!mounted_at(&mountinfo("self"), &ns));
    assert!(link_exists(&env.bridge));
    net.remove_bridge_if_unused().unwrap();
    assert!(!link_exists(&env.bridge), "bridge {} left", env.bridge);
    // Nothing to remove is fine.
    net.remove_bridge_if_unused().unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn del_is_idempotent() {
    require_root!();
    let env = Env::new(2);
    let net = &env.net;
    // Never added, no netns at all.
    let never = env.id("never");
    net.del(&never, None).await.unwrap();
    net.del(&never, Some(&env.state.join("netns/nope")))
        .await
        .unwrap();

    let id = env.id("twice");
    let ns = net.create_netns(&id).await.unwrap();
    let att = net
        .add(&id, &ns, "eth0", &[tcp(free_port(), 80)])
        .await
        .unwrap();
    net.del(&id, Some(&ns)).await.unwrap();
    net.del(&id, Some(&ns)).await.unwrap();
    net.del(&id, None).await.unwrap();
    assert_torn_down(&env, &id, &att);
    // The namespace is reusable for a new ADD after a DEL, and then the address comes back.
    let att2 = net.add(&id, &ns, "eth0", &[]).await.unwrap();
    assert!(att2.ip.is_some());
    // CHECK passes (Debian's portmap 1.1.1 fails CHECK of published ports on IPv4-only
    // networks: "could not check ipv6 dnat", so none here).
    net.check(&id).await.unwrap();
    net.del(&id, None).await.unwrap();
    assert_torn_down(&env, &id, &att2);
    net.remove_netns(&id).unwrap();
    net.remove_netns(&id).unwrap();
    net.remove_bridge_if_unused().unwrap();
    assert!(!link_exists(&env.bridge));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn del_after_the_netns_is_gone() {
    require_root!();
    let env = Env::new(3);
    let net = &env.net;
    let id = env.id("gone");
    let ns = net.create_netns(&id).await.unwrap();
    let port = free_port();
    let att = net.add(&id, &ns, "eth0", &[tcp(port, 80)]).await.unwrap();
    // The namespace goes first (the container died and its pin was removed, or a reboot).
    net.remove_netns(&id).unwrap();
    net.del(&id, Some(&ns)).await.unwrap();
    // With no namespace the bridge plugin cannot find the addresses to unmasquerade; berth
    // removes its chain, so nothing is left here either.
    assert_torn_down(&env, &id, &att);
    net.del(&id, Some(&ns)).await.unwrap();
    net.remove_bridge_if_unused().unwrap();
    assert!(!link_exists(&env.bridge));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn del_after_a_restart_uses_the_cache() {
    require_root!();
    let env = Env::new(4);
    let id = env.id("restart");
    let ns = env.net.create_netns(&id).await.unwrap();
    let port = free_port();
    let att = env
        .net
        .add(&id, &ns, "eth0", &[tcp(port, 80)])
        .await
        .unwrap();
    // A new berthd with another configuration of the same network: DEL still undoes what the
    // first ADD did (its ports, its addresses), from the cache.
    let restarted = Network::bridge(NetworkOptions {
        name: env.net.name().into(),
        bridge: env.bridge.clone(),
        subnet: "10.202.254.0/24".into(),
        plugin_dirs: default_plugin_dirs(),
        state_dir: env.state.clone(),
    });
    assert_eq!(restarted.cached_ids().unwrap(), vec![id.clone()]);
    restarted.del(&id, None).await.unwrap();
    assert_torn_down(&env, &id, &att);
    restarted.remove_netns(&id).unwrap();
    restarted.remove_bridge_if_unused().unwrap();
    assert!(!link_exists(&env.bridge));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_containers_on_one_bridge() {
    require_root!();
    let env = Env::new(5);
    let net = &env.net;
    let (a, b) = (env.id("a"), env.id("b"));
    let (ns_a, ns_b) = (
        net.create_netns(&a).await.unwrap(),
        net.create_netns(&b).await.unwrap(),
    );
    let (pa, pb) = (free_port(), free_port());
    let (ports_a, ports_b) = ([tcp(pa, 80)], [tcp(pb, 80)]);
    let (att_a, att_b) = tokio::join!(
        net.add(&a, &ns_a, "eth0", &ports_a),
        net.add(&b, &ns_b, "eth0", &ports_b),
    );
    let (att_a, att_b) = (att_a.unwrap(), att_b.unwrap());
    assert_ne!(att_a.ip, att_b.ip);
    httpd(&env, &ns_a, "page a\n");
    httpd(&env, &ns_b, "page b\n");
    assert_eq!(curl_retry(&format!("http://127.0.0.1:{pa}/")), "page a\n");
    assert_eq!(curl_retry(&format!("http://127.0.0.1:{pb}/")), "page b\n");
    // b reaches a across the bridge.
    let out = Command::new("nsenter")
        .arg(format!("--net={}", ns_b.display()))
        .args(["curl", "-sS", "--noproxy", "*", "--max-time", "5"])
        .arg(format!("http://{}/", att_a.ip.unwrap()))
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&out.stdout), "page a\n", "{out:?}");

    env.kill_children();
    net.del(&a, None).await.unwrap();
    net.remove_netns(&a).unwrap();
    // b is still on the bridge.
    net.remove_bridge_if_unused().unwrap();
    assert!(link_exists(&env.bridge));
    assert!(link_exists(att_b.host_interface.as_deref().unwrap()));
    net.del(&b, None).await.unwrap();
    net.remove_netns(&b).unwrap();
    assert_torn_down(&env, &a, &att_a);
    assert_torn_down(&env, &b, &att_b);
    net.remove_bridge_if_unused().unwrap();
    assert!(!link_exists(&env.bridge));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn udp_port_on_localhost() {
    require_root!();
    let env = Env::new(6);
    let net = &env.net;
    let id = env.id("udp");
    let ns = net.create_netns(&id).await.unwrap();
    let port = {
        let s = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        s.local_addr().unwrap().port()
    };
    let mapping = PortMapping {
        host_ip: "127.0.0.1".into(),
        host_port: port,
        container_port: 5353,
        protocol: "udp".into(),
    };
    let att = net.add(&id, &ns, "eth0", &[mapping]).await.unwrap();
    // A UDP socket bound inside the namespace (busybox nc has no -u): made on a thread that
    // enters the namespace; the socket stays in it.
    let listener = std::thread::scope(|s| {
        s.spawn(|| {
            let f = std::fs::File::open(&ns).unwrap();
            nix::sched::setns(&f, nix::sched::CloneFlags::CLONE_NEWNET).unwrap();
            std::net::UdpSocket::bind("0.0.0.0:5353").unwrap()
        })
        .join()
        .unwrap()
    });
    listener
        .set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    let sock = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut buf = [0u8; 64];
    let got = loop {
        sock.send_to(b"ping", ("127.0.0.1", port)).unwrap();
        if let Ok((n, from)) = listener.recv_from(&mut buf) {
            break (buf[..n].to_vec(), from);
        }
        assert!(
            Instant::now() < deadline,
            "no datagram reached the container"
        );
    };
    assert_eq!(got.0, b"ping");
    // Sent from 127.0.0.1, it arrives from the bridge's address (portmap's snat).
    assert_eq!(got.1.ip().to_string(), format!("{}1", env.prefix));
    // And the answer finds its way back.
    listener.send_to(b"pong", got.1).unwrap();
    sock.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let (n, _) = sock.recv_from(&mut buf).unwrap();
    assert_eq!(&buf[..n], b"pong");
    drop(listener);
    net.del(&id, None).await.unwrap();
    assert_torn_down(&env, &id, &att);
    net.remove_netns(&id).unwrap();
    net.remove_bridge_if_unused().unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn netns_pins() {
    require_root!();
    let env = Env::new(7);
    let net = &env.net;
    let id = env.id("ns");
    let ns = net.create_netns(&id).await.unwrap();
    assert_eq!(net.create_netns(&id).await.unwrap(), ns, "idempotent");
    let info = mountinfo("self");
    assert!(mounted_at(&info, &ns));
    // The pin directory is a shared mount point, as /run/netns is for `ip netns`.
    let dir = env.state.join("netns");
    let line = info
        .lines()
        .find(|l| l.split_whitespace().nth(4) == Some(dir.to_str().unwrap()))
        .expect("netns dir is a mount point");
    assert!(line.contains(" shared:"), "{line}");
    // Only lo, and up.
    let out = Command::new("nsenter")
        .arg(format!("--net={}", ns.display()))
        .args(["ip", "-o", "link", "show"])
        .output()
        .unwrap();
    let links = String::from_utf8_lossy(&out.stdout);
    assert_eq!(links.lines().count(), 1, "{links}");
    assert!(links.contains(": lo:") && links.contains(",UP"), "{links}");

    // A process in a mount namespace made since (as a container is, with slave propagation)
    // loses its copy of the pin when berth removes it.
    let holder = env.spawn(Command::new("unshare").args([
        "--mount",
        "--propagation",
        "slave",
        "sleep",
        "60",
    ]));
    let holder = holder.to_string();
    let deadline = Instant::now() + Duration::from_secs(5);
    while !mounted_at(&mountinfo(&holder), &ns) {
        assert!(
            Instant::now() < deadline,
            "pin not seen in the new mount namespace"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    net.remove_netns(&id).unwrap();
    assert!(!ns.exists());
    assert!(!mounted_at(&mountinfo("self"), &ns));
    assert!(
        !mounted_at(&mountinfo(&holder), &ns),
        "the pin stayed in the container's mounts"
    );
    net.remove_netns(&id).unwrap();

    // Bad ids never make paths.
    for bad in ["", "..", "a/b", "x y"] {
        let e = net.create_netns(bad).await.unwrap_err().to_string();
        assert!(e.contains("invalid container id"), "{e}");
    }
}

#[test]
fn check_port_free_sees_bound_ports() {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = l.local_addr().unwrap().port();
    let e = check_port_free("127.0.0.1", port, "tcp")
        .unwrap_err()
        .to_string();
    assert_eq!(e, format!("port {port}/tcp is already in use on 127.0.0.1"));
    let e = check_port_free("", port, "tcp").unwrap_err().to_string();
    assert_eq!(e, format!("port {port}/tcp is already in use on 0.0.0.0"));
    drop(l);
    check_port_free("", port, "tcp").unwrap();

    let u = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let uport = u.local_addr().unwrap().port();
    let e = check_port_free("127.0.0.1", uport, "udp")
        .unwrap_err()
        .to_string();
    assert_eq!(
        e,
        format!("port {uport}/udp is already in use on 127.0.0.1")
    );
    drop(u);
    check_port_free("127.0.0.1", uport, "udp").unwrap();

    let e = check_port_free("not-an-ip", 80, "tcp")
        .unwrap_err()
        .to_string();
    assert!(e.contains("invalid host IP"), "{e}");
    let e = check_port_free("192.0.2.254", port, "tcp")
        .unwrap_err()
        .to_string();
    assert!(e.contains("no such address on this host"), "{e}");
}

#[test]
fn etc_files() {
    let dir = temp_dir("etc");
    write_etc_files(
        &dir,
        "web1",
        Some("10.89.0.7".parse().unwrap()),
        &[("db".into(), "10.89.0.9".into())],
    )
    .unwrap();
    assert_eq!(
        std::fs::read_to_string(dir.join("hostname")).unwrap(),
        "web1\n"
    );
    assert_eq!(
        std::fs::read_to_string(dir.join("hosts")).unwrap(),
        "127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n10.89.0.7\tweb1\n10.89.0.9\tdb\n"
    );
    let host = std::fs::read_to_string("/etc/resolv.conf").unwrap_or_default();
    assert_eq!(
        std::fs::read_to_string(dir.join("resolv.conf")).unwrap(),
        container_resolv_conf(&host)
    );
    // No address: no line for the hostname.
    write_etc_files(&dir, "solo", None, &[]).unwrap();
    assert_eq!(
        std::fs::read_to_string(dir.join("hosts")).unwrap(),
        "127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n"
    );
    let e = write_etc_files(&dir, "x", None, &[("db".into(), "nope".into())]).unwrap_err();
    assert!(e.to_string().contains("invalid address \"nope\""), "{e}");
    // No temp files left behind.
    let mut names: Vec<String> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    names.sort();
    assert_eq!(names, ["hostname", "hosts", "resolv.conf"]);
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn resolv_conf_drops_loopback_nameservers() {
    let host = "# generated\nnameserver 127.0.0.53\nnameserver 10.0.0.2\nnameserver ::1\n\
                nameserver 127.1.2.3\nnameserver fe80::1%eth0\nnameserver 2001:db8::53\n\
                search example.com\noptions edns0 trust-ad\n";
    assert_eq!(
        container_resolv_conf(host),
        "# generated\nnameserver 10.0.0.2\nnameserver 2001:db8::53\nsearch example.com\noptions edns0 trust-ad\n"
    );
    // Nothing left: no nameserver at all, never a public one.
    assert_eq!(
        container_resolv_conf("nameserver 127.0.0.53\nsearch lan\noptions ndots:2\n"),
        "search lan\noptions ndots:2\n"
    );
    assert_eq!(container_resolv_conf(""), "");
}

#[test]
fn port_mapping_syntax() {
    let p = PortMapping::parse("8080:80").unwrap();
    assert_eq!(p, tcp(8080, 80));
    let p = PortMapping::parse("127.0.0.1:53:5353/udp").unwrap();
    assert_eq!(
        (
            p.host_ip.as_str(),
            p.host_port,
            p.container_port,
            p.protocol.as_str()
        ),
        ("127.0.0.1", 53, 5353, "udp")
    );
    let p = PortMapping::parse("[::1]:8443:443").unwrap();
    assert_eq!((p.host_ip.as_str(), p.host_port), ("::1", 8443));
    for bad in [
        "80",
        "0:80",
        "8080:80/sctpx",
        "host:80:80",
        "70000:80",
        "a:b",
    ] {
        let e = PortMapping::parse(bad).unwrap_err().to_string();
        assert!(
            e.starts_with(&format!("invalid port mapping {bad:?}")),
            "{e}"
        );
    }
    assert_eq!("host".parse::<NetworkMode>().unwrap(), NetworkMode::Host);
    assert_eq!("".parse::<NetworkMode>().unwrap(), NetworkMode::Bridge);
    assert!("weird".parse::<NetworkMode>().is_err());
}

#[test]
fn futures_are_send() {
    fn assert_send<T: Send>(_: &T) {}
    let net = Network::bridge(NetworkOptions::new("/nonexistent"));
    assert_send(&net.add("x", Path::new("/x"), "eth0", &[]));
    assert_send(&net.del("x", None));
    assert_send(&net.create_netns("x"));
    assert_send(&net.check("x"));
    fn assert_sync<T: Send + Sync>(_: &T) {}
    assert_sync(&net);
}

#[test]
fn default_bridge_network_config() {
    let net = Network::bridge(NetworkOptions::new("/var/lib/berth-test-state"));
    let c = net.config();
    assert_eq!(net.name(), "berth");
    assert_eq!(c["cniVersion"], "1.0.0");
    assert_eq!(c["plugins"][0]["type"], "bridge");
    assert_eq!(c["plugins"][0]["bridge"], "berth0");
    assert_eq!(c["plugins"][0]["isGateway"], true);
    assert_eq!(c["plugins"][0]["ipMasq"], true);
    assert_eq!(c["plugins"][0]["hairpinMode"], true);
    assert_eq!(c["plugins"][0]["ipam"]["type"], "host-local");
    assert_eq!(
        c["plugins"][0]["ipam"]["ranges"][0][0]["subnet"],
        "10.89.0.0/16"
    );
    assert_eq!(
        c["plugins"][0]["ipam"]["dataDir"],
        "/var/lib/berth-test-state/ipam"
    );
    assert_eq!(c["plugins"][1]["type"], "portmap");
    assert_eq!(c["plugins"][1]["capabilities"]["portMappings"], true);
    assert_eq!(c["plugins"][1]["snat"], true);
}

// ---- fake plugins: what the plugins are given, in which order ----

/// A plugin dir with shell-script plugins that log their env and stdin to `<dir>/log/`.
struct Fakes {
    dir: PathBuf,
}

impl Fakes {
    fn new() -> Fakes {
        let dir = temp_dir("fake");
        std::fs::create_dir_all(dir.join("bin")).unwrap();
        std::fs::create_dir_all(dir.join("log")).unwrap();
        Fakes { dir }
    }

    /// A plugin that records its call and prints a result with address `ip`.
    fn ok(&self, name: &str, ip: &str) {
        let log = self.dir.join("log");
        self.script(
            name,
            &format!(
                r#"n=$(ls {log} | wc -l)
cat > {log}/$(printf %03d $n)-{name}-$CNI_COMMAND.json
printf '%s|%s|%s|%s|%s|%s\n' "$CNI_COMMAND" "$CNI_CONTAINERID" "$CNI_NETNS" "$CNI_IFNAME" "$CNI_ARGS" "$CNI_PATH" > {log}/.env-$$
mv {log}/.env-$$ {log}/$(printf %03d $n)-{name}-$CNI_COMMAND.env
if [ "$CNI_COMMAND" = ADD ]; then
  printf '{{"cniVersion":"1.0.0","interfaces":[{{"name":"veth{name}"}},{{"name":"%s","mac":"02:00:00:00:00:01","sandbox":"%s"}}],"ips":[{{"address":"{ip}/24","gateway":"10.9.9.1","interface":1}}]}}' "$CNI_IFNAME" "$CNI_NETNS"
fi
"#,
                log = log.display()
            ),
        );
    }

    fn script(&self, name: &str, body: &str) {
        use std::os::unix::fs::PermissionsExt;
        let p = self.dir.join("bin").join(name);
        std::fs::write(&p, format!("#!/bin/sh\n{body}")).unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).unwrap();
    }

    /// (plugin, command, stdin, env line) of every call, in order. A call is recorded once its
    /// `.env` file is there: the plugin renames it into place after writing its `.json`, so a
    /// call still being written (a test may look while a plugin runs) is not one yet.
    fn calls(&self) -> Vec<(String, String, serde_json::Value, String)> {
        let log = self.dir.join("log");
        let mut names: Vec<String> = std::fs::read_dir(&log)
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .filter(|n| n.ends_with(".json") && log.join(n.replace(".json", ".env")).exists())
            .collect();
        names.sort();
        names
            .iter()
            .map(|n| {
                let parts: Vec<&str> = n.trim_end_matches(".json").splitn(3, '-').collect();
                let stdin = std::fs::read_to_string(self.dir.join("log").join(n)).unwrap();
                let env =
                    std::fs::read_to_string(self.dir.join("log").join(n.replace(".json", ".env")))
                        .unwrap();
                (
                    parts[1].to_string(),
                    parts[2].to_string(),
                    serde_json::from_str(&stdin).unwrap(),
                    env.trim().to_string(),
                )
            })
            .collect()
    }

    fn clear(&self) {
        for e in std::fs::read_dir(self.dir.join("log")).unwrap() {
            std::fs::remove_file(e.unwrap().path()).unwrap();
        }
    }

    fn network(&self, conflist: serde_json::Value) -> Network {
        Network::from_json(
            &conflist.to_string(),
            &[self.dir.join("nothing-here"), self.dir.join("bin")],
            &self.dir.join("state"),
        )
        .unwrap()
    }
}

impl Drop for Fakes {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

#[tokio::test]
async fn plugin_protocol_add_del_and_cache() {
    let f = Fakes::new();
    f.ok("fakea", "10.9.9.2");
    f.ok("fakeb", "10.9.9.3");
    f.ok("fakec", "10.9.9.4");
    let net = f.network(serde_json::json!({
        "cniVersion": "1.0.0",
        "name": "fakenet",
        "plugins": [
            { "type": "fakea", "opt": 1 },
            { "type": "fakeb", "capabilities": { "portMappings": true } },
        ]
    }));
    let ports = [
        tcp(8080, 80),
        PortMapping::parse("127.0.0.1:5353:53/udp").unwrap(),
    ];
    let args = [("K8S_POD_NAME".to_string(), "web".to_string())];
    let att = net
        .add_with_args("c1", Path::new("/run/fake-ns"), "net1", &ports, &args)
        .await
        .unwrap();
    assert_eq!(
        att.ip,
        Some("10.9.9.3".parse().unwrap()),
        "the last plugin's result"
    );
    assert_eq!(att.prefix, 24);
    assert_eq!(att.gateway, Some("10.9.9.1".parse().unwrap()));
    assert_eq!(att.mac.as_deref(), Some("02:00:00:00:00:01"));
    assert_eq!(att.interface, "net1");
    assert_eq!(att.host_interface.as_deref(), Some("vethfakeb"));

    let calls = f.calls();
    assert_eq!(calls.len(), 2);
    let (p, cmd, stdin, env) = &calls[0];
    assert_eq!((p.as_str(), cmd.as_str()), ("fakea", "ADD"));
    assert_eq!(stdin["name"], "fakenet");
    assert_eq!(stdin["cniVersion"], "1.0.0");
    assert_eq!(stdin["opt"], 1);
    assert!(stdin.get("prevResult").is_none());
    assert!(
        stdin.get("runtimeConfig").is_none(),
        "fakea has no portMappings capability"
    );
    let cni_path = format!(
        "{}:{}",
        f.dir.join("nothing-here").display(),
        f.dir.join("bin").display()
    );
    assert_eq!(
        env,
        &format!("ADD|c1|/run/fake-ns|net1|IgnoreUnknown=1;K8S_POD_NAME=web|{cni_path}")
    );
    let (p, _, stdin, _) = &calls[1];
    assert_eq!(p, "fakeb");
    assert_eq!(stdin["prevResult"]["ips"][0]["address"], "10.9.9.2/24");
    assert_eq!(
        stdin["runtimeConfig"]["portMappings"],
        serde_json::json!([
            { "hostPort": 8080, "containerPort": 80, "protocol": "tcp" },
            { "hostPort": 5353, "containerPort": 53, "protocol": "udp", "hostIP": "127.0.0.1" },
        ])
    );

    // The same port for another container of this network is refused before any plugin runs.
    f.clear();
    let e = net
        .add("c2", Path::new("/run/fake-ns2"), "eth0", &[tcp(8080, 8080)])
        .await
        .unwrap_err()
        .to_string();
    assert_eq!(
        e,
        "port 8080/tcp is already allocated to container c1 on 0.0.0.0"
    );
    assert!(f.calls().is_empty());
    // A different host address does not clash with 127.0.0.1:5353/udp... but 0.0.0.0 does.
    let e = net
        .add(
            "c2",
            Path::new("/run/fake-ns2"),
            "eth0",
            &[PortMapping::parse("5353:1/udp").unwrap()],
        )
        .await
        .unwrap_err()
        .to_string();
    assert!(e.contains("already allocated to container c1"), "{e}");

    // CHECK runs in order with the cached result.
    f.clear();
    net.check("c1").await.unwrap();
    let calls = f.calls();
    assert_eq!(
        calls
            .iter()
            .map(|c| (c.0.as_str(), c.1.as_str()))
            .collect::<Vec<_>>(),
        [("fakea", "CHECK"), ("fakeb", "CHECK")]
    );
    assert_eq!(calls[0].2["prevResult"]["ips"][0]["address"], "10.9.9.3/24");

    // "Restart": another network object whose conflist changed. DEL runs the cached config's
    // plugins in reverse with the cached result and ports; the namespace path that is not a
    // namespace is passed as none.
    f.clear();
    let cache = f.dir.join("state/cache/fakenet/c1.json");
    let cached: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&cache).unwrap()).unwrap();
    assert_eq!(cached["result"]["ips"][0]["address"], "10.9.9.3/24");
    let restarted = f.network(serde_json::json!({
        "cniVersion": "1.0.0", "name": "fakenet", "plugins": [{ "type": "fakec" }]
    }));
    restarted.del("c1", None).await.unwrap();
    let calls = f.calls();
    assert_eq!(
        calls
            .iter()
            .map(|c| (c.0.as_str(), c.1.as_str()))
            .collect::<Vec<_>>(),
        [("fakeb", "DEL"), ("fakea", "DEL")]
    );
    for c in &calls {
        assert_eq!(c.2["prevResult"]["ips"][0]["address"], "10.9.9.3/24");
        assert_eq!(
            c.3,
            format!("DEL|c1||net1|IgnoreUnknown=1;K8S_POD_NAME=web|{cni_path}")
        );
    }
    assert_eq!(
        calls[0].2["runtimeConfig"]["portMappings"][0]["hostPort"],
        8080
    );
    assert!(!cache.exists());
    // And the port is free again.
    restarted.del("c1", None).await.unwrap();
    f.clear();
    net.add("c2", Path::new("/run/fake-ns2"), "eth0", &[tcp(8080, 8080)])
        .await
        .unwrap();
    net.del("c2", None).await.unwrap();

    // DEL of a container never added runs the current config, without prevResult.
    f.clear();
    restarted.del("c9", None).await.unwrap();
    let calls = f.calls();
    assert_eq!(calls.len(), 1);
    assert_eq!((calls[0].0.as_str(), calls[0].1.as_str()), ("fakec", "DEL"));
    assert!(calls[0].2.get("prevResult").is_none());
    assert_eq!(calls[0].3, format!("DEL|c9||eth0||{cni_path}"));
}

/// Starts an ADD of c1 and drops it while its second plugin runs.
async fn interrupt(f: &Fakes, net: std::sync::Arc<Network>) {
    let task = tokio::spawn(async move {
        net.add("c1", Path::new("/run/fake-ns"), "eth0", &[tcp(8080, 80)])
            .await
    });
    let deadline = Instant::now() + Duration::from_secs(10);
    while f.calls().is_empty() {
        assert!(Instant::now() < deadline, "fakea never ran");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    tokio::time::sleep(Duration::from_millis(100)).await;
    task.abort();
    assert!(task.await.unwrap_err().is_cancelled());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_interrupted_add_is_undone() {
    let f = Fakes::new();
    f.ok("fakea", "10.9.9.2");
    // Hangs in ADD until <dir>/go exists: berthd dies (here: the task is dropped) meanwhile.
    f.script(
        "fakeslow",
        &format!(
            "cat >/dev/null\n[ \"$CNI_COMMAND\" = ADD ] && [ ! -e {go} ] && exec sleep 30\n\
             [ \"$CNI_COMMAND\" = ADD ] && echo '{{\"cniVersion\":\"1.0.0\",\"ips\":[{{\"address\":\"10.9.9.5/24\"}}]}}'\n\
             echo \"$CNI_COMMAND\" >> {log}\nexit 0\n",
            go = f.dir.join("go").display(),
            log = f.dir.join("slow.log").display()
        ),
    );
    let conf = serde_json::json!({
        "cniVersion": "1.0.0", "name": "slownet",
        "plugins": [{ "type": "fakea" }, { "type": "fakeslow" }]
    });
    let net = std::sync::Arc::new(f.network(conf.clone()));
    interrupt(&f, net.clone()).await;
    // The cache was written before the plugins ran, with no result yet.
    let cache = f.dir.join("state/cache/slownet/c1.json");
    let cached: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&cache).unwrap()).unwrap();
    assert!(cached["result"].is_null());
    assert_eq!(cached["portMappings"][0]["host_port"], 8080);
    assert!(net.cached_attachment("c1").unwrap().is_none());
    // ... so a restarted berthd undoes it: every plugin in reverse, without prevResult.
    f.clear();
    let restarted = f.network(conf.clone());
    assert_eq!(restarted.cached_ids().unwrap(), ["c1"]);
    restarted.del("c1", None).await.unwrap();
    let calls = f.calls();
    assert_eq!(calls.len(), 1);
    assert_eq!((calls[0].0.as_str(), calls[0].1.as_str()), ("fakea", "DEL"));
    assert!(calls[0].2.get("prevResult").is_none());
    assert_eq!(calls[0].2["runtimeConfig"], serde_json::Value::Null);
    assert_eq!(
        std::fs::read_to_string(f.dir.join("slow.log")).unwrap(),
        "DEL\n"
    );
    assert!(!cache.exists());

    // An ADD of a container whose previous ADD was interrupted first undoes that one.
    f.clear();
    interrupt(&f, net.clone()).await;
    std::fs::write(f.dir.join("go"), "").unwrap();
    f.clear();
    let att = net
        .add("c1", Path::new("/run/fake-ns"), "eth0", &[tcp(8080, 80)])
        .await
        .unwrap();
    assert_eq!(att.ip, Some("10.9.9.5".parse().unwrap()));
    let calls = f.calls();
    assert_eq!(
        calls
            .iter()
            .map(|c| (c.0.as_str(), c.1.as_str()))
            .collect::<Vec<_>>(),
        [("fakea", "DEL"), ("fakea", "ADD")]
    );
    assert_eq!(
        std::fs::read_to_string(f.dir.join("slow.log")).unwrap(),
        "DEL\nDEL\nADD\n"
    );
    let cached = net.cached_attachment("c1").unwrap().unwrap();
    assert_eq!(cached.ip, att.ip);
    net.del("c1", None).await.unwrap();
}

#[tokio::test]
async fn plugin_errors_are_one_line_and_failed_adds_are_undone() {
    let f = Fakes::new();
    f.ok("fakea", "10.9.9.2");
    f.script(
        "fakefail",
        r#"cat >/dev/null
[ "$CNI_COMMAND" = DEL ] && exit 0
echo "some log line" >&2
cat <<'EOF'
{"cniVersion":"1.0.0","code":11,"msg":"failed to set up\nthe thing","details":"because\nreasons"}
EOF
exit 1
"#,
    );
    f.script(
        "fakecrash",
        "cat >/dev/null\necho 'panic: oops' >&2\necho '  goroutine 1' >&2\nexit 2\n",
    );
    let net = f.network(serde_json::json!({
        "cniVersion": "1.0.0", "name": "failnet",
        "plugins": [{ "type": "fakea" }, { "type": "fakefail" }]
    }));
    let e = net
        .add("c1", Path::new("/run/fake-ns"), "eth0", &[tcp(8080, 80)])
        .await
        .unwrap_err();
    let msg = format!("{e:#}");
    assert_eq!(
        msg,
        "CNI plugin fakefail ADD of container c1 on network failnet failed: \
         failed to set up; the thing: because; reasons (code 11)"
    );
    // The plugins were undone in reverse order, and nothing stays cached or allocated.
    let calls = f.calls();
    assert_eq!(
        calls
            .iter()
            .map(|c| (c.0.as_str(), c.1.as_str()))
            .collect::<Vec<_>>(),
        [("fakea", "ADD"), ("fakea", "DEL")]
    );
    assert!(net.cached_ids().unwrap().is_empty());
    f.clear();
    net.add("c2", Path::new("/run/fake-ns"), "eth0", &[tcp(8080, 80)])
        .await
        .unwrap_err();

    // No error JSON: the last line of stderr and the exit status.
    let crash = f.network(serde_json::json!({
        "cniVersion": "1.0.0", "name": "crashnet", "plugins": [{ "type": "fakecrash" }]
    }));
    let msg = format!(
        "{:#}",
        crash
            .add("c1", Path::new("/x"), "eth0", &[])
            .await
            .unwrap_err()
    );
    assert_eq!(
        msg,
        "CNI plugin fakecrash ADD of container c1 on network crashnet failed: \
         goroutine 1 (exit status: 2)"
    );

    // A plugin that is not installed is named, with where it was looked for.
    let missing = f.network(serde_json::json!({
        "cniVersion": "1.0.0", "name": "missingnet",
        "plugins": [{ "type": "fakea" }, { "type": "no-such-plugin" }]
    }));
    let msg = format!(
        "{:#}",
        missing
            .add("c1", Path::new("/x"), "eth0", &[])
            .await
            .unwrap_err()
    );
    assert_eq!(
        msg,
        format!(
            "CNI plugin \"no-such-plugin\" of network missingnet not found in {}, {}",
            f.dir.join("nothing-here").display(),
            f.dir.join("bin").display()
        )
    );
    assert!(!msg.contains('\n'));
    // ... and DEL still succeeds (nothing it could undo there).
    missing.del("c1", None).await.unwrap();
}

#[tokio::test]
async fn missing_real_plugin_dir_names_the_plugin() {
    let state = temp_dir("missing");
    let net = Network::bridge(NetworkOptions {
        name: "nodirs".into(),
        bridge: "btnever0".into(),
        subnet: "10.203.0.0/24".into(),
        plugin_dirs: vec![state.join("no-plugins")],
        state_dir: state.clone(),
    });
    let msg = format!(
        "{:#}",
        net.add("c1", Path::new("/x"), "eth0", &[])
            .await
            .unwrap_err()
    );
    assert_eq!(
        msg,
        format!(
            "CNI plugin \"bridge\" of network nodirs not found in {}",
            state.join("no-plugins").display()
        )
    );
    assert!(!link_exists("btnever0"));
    net.remove_bridge_if_unused().unwrap();
    std::fs::remove_dir_all(&state).unwrap();
}

#[test]
fn conflist_loading() {
    let dir = temp_dir("conf");
    let state = dir.join("state");
    let dirs = default_plugin_dirs();
    assert!(Network::first_in_dir(&dir.join("absent"), &dirs, &state)
        .unwrap()
        .is_none());
    assert!(Network::first_in_dir(&dir, &dirs, &state)
        .unwrap()
        .is_none());

    std::fs::write(dir.join("00-notes.txt"), "not a config").unwrap();
    std::fs::write(dir.join("05-broken.conflist"), "{ nope").unwrap();
    std::fs::write(
        dir.join("10-single.conf"),
        r#"{"cniVersion":"0.4.0","name":"single","type":"bridge","bridge":"cni9","ipam":{"type":"host-local","subnet":"10.99.0.0/24"}}"#,
    )
    .unwrap();
    std::fs::write(
        dir.join("20-list.conflist"),
        r#"{"cniVersion":"1.0.0","name":"list","plugins":[{"type":"bridge"},{"type":"portmap","capabilities":{"portMappings":true}}]}"#,
    )
    .unwrap();
    let n = Network::first_in_dir(&dir, &dirs, &state).unwrap().unwrap();
    assert_eq!(n.name(), "single");
    assert_eq!(n.cni_version(), "0.4.0");
    let plugins = n.config()["plugins"].as_array().unwrap();
    assert_eq!(plugins.len(), 1);
    assert_eq!(plugins[0]["type"], "bridge");
    assert_eq!(plugins[0]["ipam"]["subnet"], "10.99.0.0/24");
    assert_eq!(n.config()["name"], "single");

    let l = Network::from_conflist(&dir.join("20-list.conflist"), &dirs, &state).unwrap();
    assert_eq!(l.name(), "list");
    assert_eq!(l.config()["plugins"].as_array().unwrap().len(), 2);
    // Networks loaded from a conflist never delete a bridge.
    l.remove_bridge_if_unused().unwrap();

    let e = Network::from_conflist(&dir.join("05-broken.conflist"), &dirs, &state)
        .unwrap_err()
        .to_string();
    assert!(
        e.starts_with(&format!(
            "CNI config {}: invalid JSON",
            dir.join("05-broken.conflist").display()
        )),
        "{e}"
    );
    assert!(!e.contains('\n'));
    for (text, why) in [
        (
            r#"{"cniVersion":"1.0.0","plugins":[{"type":"x"}]}"#,
            "missing \"name\"",
        ),
        (
            r#"{"name":"n","plugins":[{"type":"x"}]}"#,
            "missing \"cniVersion\"",
        ),
        (
            r#"{"cniVersion":"1.0.0","name":"n","plugins":[]}"#,
            "no plugins",
        ),
        (
            r#"{"cniVersion":"1.0.0","name":"n","plugins":[{}]}"#,
            "plugin 0: missing plugin \"type\"",
        ),
        (
            r#"{"cniVersion":"1.0.0","name":"../x","type":"bridge"}"#,
            "invalid network name",
        ),
    ] {
        let e = format!("{:#}", Network::from_json(text, &dirs, &state).unwrap_err());
        assert!(e.contains(why), "{text}: {e}");
    }
    std::fs::remove_dir_all(&dir).unwrap();
}
