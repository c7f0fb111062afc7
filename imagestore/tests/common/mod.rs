//! Shared helpers for the registry tests: where the fixture registry is, fixture digests.
#![allow(dead_code)]

use std::collections::HashMap;
use std::time::Duration;

/// `host:port` of the fixture registry: `BERTH_TEST_REGISTRY`, default `127.0.0.1:5000`.
/// Panics with instructions when nothing listens there: these tests must not pass silently.
pub fn registry() -> String {
    let addr = std::env::var("BERTH_TEST_REGISTRY").unwrap_or_else(|_| "127.0.0.1:5000".into());
    let host = addr.split(':').next().unwrap_or("");
    assert!(
        host == "127.0.0.1" || host == "localhost",
        "BERTH_TEST_REGISTRY={addr}: tests only talk to a registry on 127.0.0.1"
    );
    let sock: std::net::SocketAddr = addr
        .replace("localhost", "127.0.0.1")
        .parse()
        .expect("BERTH_TEST_REGISTRY must be 127.0.0.1:PORT");
    if std::net::TcpStream::connect_timeout(&sock, Duration::from_secs(2)).is_err() {
        let port = sock.port();
        panic!(
            "no fixture registry at {addr}. Start one with:\n  \
             /work/shared/fixtures/build.sh /var/cache/berth-fixtures   # if fixtures.env is missing\n  \
             FIXTURES_REGISTRY_PORT={port} ../shared/fixtures/registry.sh start /tmp/berth-reg-{port}\n  \
             FIXTURES_REGISTRY_PORT={port} ../shared/fixtures/registry.sh push /var/cache/berth-fixtures\n\
             and set BERTH_TEST_REGISTRY=127.0.0.1:{port}"
        );
    }
    addr
}

/// Variables of `fixtures.env` (digests of the fixture images), if the file is there.
pub fn fixtures_env() -> HashMap<String, String> {
    let path = std::env::var("BERTH_FIXTURES_ENV")
        .unwrap_or_else(|_| "/var/cache/berth-fixtures/fixtures.env".into());
    let Ok(text) = std::fs::read_to_string(path) else {
        return HashMap::new();
    };
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

/// Whether `path` is a mount point according to /proc/self/mounts.
pub fn is_mounted(path: &std::path::Path) -> bool {
    let mounts = std::fs::read_to_string("/proc/self/mounts").unwrap();
    let p = path.display().to_string();
    mounts
        .lines()
        .any(|l| l.split(' ').nth(1) == Some(p.as_str()))
}

/// Where the fixtures are: `BERTH_FIXTURES`, default `/var/cache/berth-fixtures`.
pub fn fixtures_dir() -> std::path::PathBuf {
    std::env::var_os("BERTH_FIXTURES")
        .map(Into::into)
        .unwrap_or_else(|| "/var/cache/berth-fixtures".into())
}

/// User and password accepted by [`PrivateRegistry::start_with_auth`].
pub const REG_USER: &str = "berth";
pub const REG_PASS: &str = "s3cret-pw";
/// bcrypt of [`REG_PASS`] (docker-registry's htpasswd accepts only bcrypt).
const REG_HTPASSWD: &str = "berth:$2b$05$60BMBDTiUQoTsu4ZSxXUsOFu1iCY5E6VtVScklQiveimDO2f40d8q\n";

/// A private `docker-registry` on a free loopback port, started by a test and killed (by its
/// own pid) when dropped.
pub struct PrivateRegistry {
    pub addr: String,
    child: std::process::Child,
    _dir: tempfile::TempDir,
}

impl PrivateRegistry {
    pub fn start() -> Self {
        Self::spawn(false)
    }

    /// With htpasswd (basic) auth for [`REG_USER`]/[`REG_PASS`].
    pub fn start_with_auth() -> Self {
        Self::spawn(true)
    }

    fn spawn(auth: bool) -> Self {
        let dir = tempfile::tempdir().unwrap();
        // A free port: bind, read it, release. Another process could take it meanwhile;
        // the readiness check below would then fail loudly.
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let addr = format!("127.0.0.1:{port}");
        let mut cfg = format!(
            "version: 0.1\nlog:\n  level: warn\nstorage:\n  filesystem:\n    rootdirectory: {}\n  delete:\n    enabled: true\nhttp:\n  addr: {addr}\n",
            dir.path().join("storage").display()
        );
        if auth {
            let htpasswd = dir.path().join("htpasswd");
            std::fs::write(&htpasswd, REG_HTPASSWD).unwrap();
            cfg.push_str(&format!(
                "auth:\n  htpasswd:\n    realm: berth-test\n    path: {}\n",
                htpasswd.display()
            ));
        }
        let cfg_path = dir.path().join("config.yml");
        std::fs::write(&cfg_path, cfg).unwrap();
        let log = std::fs::File::create(dir.path().join("registry.log")).unwrap();
        let mut cmd = std::process::Command::new("docker-registry");
        cmd.arg("serve")
            .arg(&cfg_path)
            .stdout(log.try_clone().unwrap())
            .stderr(log);
        // The binary reads REGISTRY_* variables as config overrides.
        for (k, _) in std::env::vars() {
            if k.starts_with("REGISTRY_") {
                cmd.env_remove(k);
            }
        }
        let mut child = cmd
            .spawn()
            .expect("docker-registry (Debian package docker-registry)");
        let sock: std::net::SocketAddr = addr.parse().unwrap();
        for _ in 0..100 {
            if std::net::TcpStream::connect_timeout(&sock, Duration::from_millis(200)).is_ok() {
                return Self {
                    addr,
                    child,
                    _dir: dir,
                };
            }
            if let Ok(Some(st)) = child.try_wait() {
                let log = std::fs::read_to_string(dir.path().join("registry.log")).unwrap();
                panic!("docker-registry exited ({st}): {log}");
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

/// A store config that reads no credential files except `auth_file`.
pub fn hermetic_config(auth_file: Option<std::path::PathBuf>) -> berth_imagestore::RegistryConfig {
    berth_imagestore::RegistryConfig {
        auth_file,
        docker_config: None,
        ..Default::default()
    }
}

/// A request as the fake server saw it (header names lower-case).
#[derive(Debug, Clone)]
pub struct FakeRequest {
    pub method: String,
    pub path: String,
    pub headers: HashMap<String, String>,
}

/// A fake server's answer. `cut_after` sends only that many body bytes (after a header that
/// announces all of them) and closes the connection.
#[derive(Debug, Clone, Default)]
pub struct FakeResponse {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
    pub cut_after: Option<usize>,
    /// With `cut_after`: keep the connection open (stalled) instead of closing it.
    pub stall: bool,
}

impl FakeResponse {
    pub fn new(status: u16, content_type: &str, body: impl Into<Vec<u8>>) -> Self {
        Self {
            status,
            headers: vec![("Content-Type".into(), content_type.into())],
            body: body.into(),
            cut_after: None,
            stall: false,
        }
    }
    pub fn header(mut self, k: &str, v: &str) -> Self {
        self.headers.push((k.into(), v.into()));
        self
    }
}

/// A fake HTTP/1.1 server on 127.0.0.1 for fault injection (answers a real registry does not
/// give on demand). Returns `host:port`.
pub async fn fake_http<F>(handler: F) -> String
where
    F: Fn(&FakeRequest) -> FakeResponse + Send + Sync + 'static,
{
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let handler = std::sync::Arc::new(handler);
    tokio::spawn(async move {
        while let Ok((mut sock, _)) = listener.accept().await {
            let handler = handler.clone();
            tokio::spawn(async move {
                let mut pending = Vec::new();
                loop {
                    let mut buf = [0u8; 4096];
                    let end = loop {
                        if let Some(i) = pending.windows(4).position(|w| w == b"\r\n\r\n") {
                            break i + 4;
                        }
                        match sock.read(&mut buf).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => pending.extend_from_slice(&buf[..n]),
                        }
                    };
                    let head = String::from_utf8_lossy(&pending[..end]).to_string();
                    let mut lines = head.lines();
                    let first = lines.next().unwrap_or("");
                    let mut parts = first.split(' ');
                    let method = parts.next().unwrap_or("").to_string();
                    let path = parts.next().unwrap_or("").to_string();
                    let headers: HashMap<String, String> = lines
                        .filter_map(|l| l.split_once(':'))
                        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string()))
                        .collect();
                    let body_len: usize = headers
                        .get("content-length")
                        .and_then(|v| v.parse().ok())
                        .unwrap_or(0);
                    while pending.len() < end + body_len {
                        match sock.read(&mut buf).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => pending.extend_from_slice(&buf[..n]),
                        }
                    }
                    pending.drain(..end + body_len);
                    let req = FakeRequest {
                        method,
                        path,
                        headers,
                    };
                    let resp = handler(&req);
                    let mut out = format!("HTTP/1.1 {} X\r\n", resp.status);
                    for (k, v) in &resp.headers {
                        out.push_str(&format!("{k}: {v}\r\n"));
                    }
                    out.push_str(&format!("Content-Length: {}\r\n\r\n", resp.body.len()));
                    if sock.write_all(out.as_bytes()).await.is_err() {
                        return;
                    }
                    if req.method == "HEAD" {
                        continue;
                    }
                    let n = resp
                        .cut_after
                        .unwrap_or(resp.body.len())
                        .min(resp.body.len());
                    if sock.write_all(&resp.body[..n]).await.is_err() {
                        return;
                    }
                    if resp.stall {
                        let _ = sock.flush().await;
                        tokio::time::sleep(Duration::from_secs(3600)).await;
                        return;
                    }
                    if resp.cut_after.is_some() {
                        let _ = sock.shutdown().await;
                        return;
                    }
                }
            });
        }
    });
    addr
}

/// A one-layer image for fake registries: (layer tar, config, manifest) bytes.
pub fn tiny_image(content: &[u8]) -> (Vec<u8>, Vec<u8>, Vec<u8>) {
    use berth_imagestore::Digest;
    let mut b = tar::Builder::new(Vec::new());
    let mut h = tar::Header::new_ustar();
    h.set_path("hello").unwrap();
    h.set_size(content.len() as u64);
    h.set_mode(0o644);
    h.set_uid(0);
    h.set_gid(0);
    h.set_mtime(0);
    h.set_cksum();
    b.append(&h, content).unwrap();
    let layer = b.into_inner().unwrap();
    let layer_d = Digest::of(&layer);
    let config = format!(
        r#"{{"architecture":"{}","os":"linux","rootfs":{{"type":"layers","diff_ids":["{layer_d}"]}},"history":[{{"created_by":"ADD hello"}}]}}"#,
        berth_imagestore::Platform::host().architecture
    )
    .into_bytes();
    let manifest = format!(
        r#"{{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"{}","size":{}}},"layers":[{{"mediaType":"application/vnd.oci.image.layer.v1.tar","digest":"{layer_d}","size":{}}}]}}"#,
        Digest::of(&config),
        config.len(),
        layer.len()
    )
    .into_bytes();
    (layer, config, manifest)
}
