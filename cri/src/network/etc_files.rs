//! A container's `/etc/hosts`, `/etc/hostname` and `/etc/resolv.conf`, and host ports.

use anyhow::{anyhow, bail, Result};
use std::io::Write;
use std::net::IpAddr;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};

/// Fails with "port 8080/tcp is already in use on 0.0.0.0" when something on the host holds
/// the port (host_ip "" = 0.0.0.0).
pub fn check_port_free(host_ip: &str, port: u16, protocol: &str) -> Result<()> {
    let ip: IpAddr = if host_ip.is_empty() {
        IpAddr::from([0, 0, 0, 0])
    } else {
        host_ip
            .trim_start_matches('[')
            .trim_end_matches(']')
            .parse()
            .map_err(|_| anyhow!("invalid host IP {host_ip:?} for port {port}/{protocol}"))?
    };
    let addr = std::net::SocketAddr::new(ip, port);
    let r = match protocol {
        "tcp" | "" => std::net::TcpListener::bind(addr).map(drop),
        "udp" => std::net::UdpSocket::bind(addr).map(drop),
        "sctp" => return Ok(()),
        _ => bail!("port {port}/{protocol}: unknown protocol"),
    };
    let protocol = if protocol.is_empty() { "tcp" } else { protocol };
    match r {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::AddrInUse => {
            bail!("port {port}/{protocol} is already in use on {ip}")
        }
        Err(e) if e.kind() == std::io::ErrorKind::AddrNotAvailable => {
            bail!("cannot publish port {port}/{protocol} on {ip}: no such address on this host")
        }
        Err(e) => bail!("cannot publish port {port}/{protocol} on {ip}: {e}"),
    }
}

/// Writes `<dir>/hostname`, `<dir>/hosts` and `<dir>/resolv.conf` for a container, each by
/// temp file + rename. `extra_hosts` are (name, address) pairs, as `--add-host name:address`.
/// resolv.conf is the host's without loopback nameservers ([`container_resolv_conf`]).
pub fn write_etc_files(
    dir: &Path,
    hostname: &str,
    ip: Option<IpAddr>,
    extra_hosts: &[(String, String)],
) -> Result<()> {
    if hostname.is_empty() || hostname.contains(|c: char| c.is_whitespace() || c == '/') {
        bail!("invalid hostname {hostname:?}");
    }
    std::fs::create_dir_all(dir).map_err(|e| anyhow!("create {}: {e}", dir.display()))?;
    let mut hosts =
        String::from("127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n");
    if let Some(ip) = ip {
        hosts.push_str(&format!("{ip}\t{hostname}\n"));
    }
    for (name, addr) in extra_hosts {
        if name.is_empty() || name.contains(char::is_whitespace) {
            bail!("invalid extra host name {name:?}");
        }
        addr.parse::<IpAddr>()
            .map_err(|_| anyhow!("invalid address {addr:?} for extra host {name}"))?;
        hosts.push_str(&format!("{addr}\t{name}\n"));
    }
    let resolv = container_resolv_conf(&host_resolv_conf());
    for (name, data) in [
        ("hostname", format!("{hostname}\n")),
        ("hosts", hosts),
        ("resolv.conf", resolv),
    ] {
        let path = dir.join(name);
        write_atomic(&path, data.as_bytes(), 0o644)
            .map_err(|e| anyhow!("write {}: {e:#}", path.display()))?;
    }
    Ok(())
}

/// The host's resolv.conf; with systemd-resolved's stub (only 127.0.0.53), the file listing
/// the servers it forwards to, as docker does.
pub(super) fn host_resolv_conf() -> String {
    let text = std::fs::read_to_string("/etc/resolv.conf").unwrap_or_default();
    let stub_only = {
        let ns: Vec<&str> = nameservers(&text).collect();
        !ns.is_empty() && ns.iter().all(|n| *n == "127.0.0.53")
    };
    if stub_only {
        if let Ok(t) = std::fs::read_to_string("/run/systemd/resolve/resolv.conf") {
            return t;
        }
    }
    text
}

pub(super) fn nameservers(text: &str) -> impl Iterator<Item = &str> {
    text.lines().filter_map(|l| {
        let mut w = l.split_whitespace();
        (w.next() == Some("nameserver")).then(|| w.next()).flatten()
    })
}

/// A container's resolv.conf from the host's: loopback nameservers (127.0.0.0/8, ::1), which
/// would mean the container itself, are dropped; everything else is kept. If no nameserver is
/// left, none is written (never a public one): only search, domain and options.
pub fn container_resolv_conf(host: &str) -> String {
    let mut out = String::new();
    for line in host.lines() {
        let mut w = line.split_whitespace();
        if w.next() == Some("nameserver") {
            let addr = w.next().unwrap_or("");
            // A scoped IPv6 address (fe80::1%eth0) names a link the container does not have.
            let addr_only = addr.split('%').next().unwrap_or("");
            match addr_only.parse::<IpAddr>() {
                Ok(ip) if ip.is_loopback() => continue,
                Ok(_) if addr.contains('%') => continue,
                Err(_) => continue,
                Ok(_) => {}
            }
        }
        out.push_str(line);
        out.push('\n');
    }
    out
}

/// Writes `path` via a temp file in the same directory, fsync and rename.
pub(super) fn write_atomic(path: &Path, data: &[u8], mode: u32) -> Result<()> {
    let dir = path
        .parent()
        .ok_or_else(|| anyhow!("no parent directory"))?;
    std::fs::create_dir_all(dir).map_err(|e| anyhow!("create {}: {e}", dir.display()))?;
    let name = path
        .file_name()
        .ok_or_else(|| anyhow!("no file name"))?
        .to_string_lossy();
    static SEQ: AtomicUsize = AtomicUsize::new(0);
    let n = SEQ.fetch_add(1, Ordering::Relaxed);
    let tmp = dir.join(format!(".{name}.tmp{}-{n}", std::process::id()));
    let res = (|| -> std::io::Result<()> {
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(mode)
            .open(&tmp)?;
        f.write_all(data)?;
        f.set_permissions(std::fs::Permissions::from_mode(mode))?;
        f.sync_all()?;
        std::fs::rename(&tmp, path)
    })();
    if let Err(e) = res {
        let _ = std::fs::remove_file(&tmp);
        bail!("{e}");
    }
    Ok(())
}
