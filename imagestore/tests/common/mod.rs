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
