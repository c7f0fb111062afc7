//! Running the CNI plugins: their config, environment, errors and results.

use anyhow::{bail, Result};
use serde_json::{json, Map, Value};
use sha2::{Digest, Sha512};
use std::net::IpAddr;
use std::path::PathBuf;

use super::*;

pub(super) fn plugins(config: &Value) -> impl Iterator<Item = &Value> {
    config["plugins"].as_array().into_iter().flatten()
}

/// The bridges named by the plugins of a conflist (to tell a host veth from its bridge).
pub(super) fn bridge_names(config: &Value) -> Vec<String> {
    plugins(config)
        .filter_map(|p| p.get("bridge").and_then(Value::as_str).map(str::to_string))
        .collect()
}

pub(super) fn plugin_type(p: &Value) -> Result<&str> {
    match p.get("type") {
        Some(Value::String(t)) if !t.is_empty() => Ok(t),
        _ => bail!("missing plugin \"type\""),
    }
}

/// The config one plugin gets on stdin.
pub(super) fn plugin_conf(entry: &CacheEntry, plugin: &Value, prev: Option<&Value>) -> Value {
    let mut m: Map<String, Value> = plugin.as_object().cloned().unwrap_or_default();
    m.insert("name".into(), entry.config["name"].clone());
    m.insert("cniVersion".into(), entry.config["cniVersion"].clone());
    if let Some(prev) = prev {
        m.insert("prevResult".into(), prev.clone());
    }
    let caps = &plugin["capabilities"];
    if caps["portMappings"] == json!(true) && !entry.port_mappings.is_empty() {
        let pm: Vec<Value> = entry
            .port_mappings
            .iter()
            .map(PortMapping::to_cni)
            .collect();
        let rc = m
            .entry("runtimeConfig")
            .or_insert_with(|| json!({}))
            .as_object_mut();
        if let Some(rc) = rc {
            rc.insert("portMappings".into(), Value::Array(pm));
        }
    }
    Value::Object(m)
}

pub(super) fn cni_args(args: &[(String, String)]) -> String {
    if args.is_empty() {
        return String::new();
    }
    let mut parts: Vec<String> = Vec::new();
    if !args.iter().any(|(k, _)| k == "IgnoreUnknown") {
        parts.push("IgnoreUnknown=1".into());
    }
    parts.extend(args.iter().map(|(k, v)| format!("{k}={v}")));
    parts.join(";")
}

/// The parent's PATH plus the usual sbin directories (the plugins run iptables).
pub(super) fn search_path() -> String {
    let mut path = std::env::var("PATH").unwrap_or_default();
    for d in [
        "/usr/local/sbin",
        "/usr/local/bin",
        "/usr/sbin",
        "/usr/bin",
        "/sbin",
        "/bin",
    ] {
        if !path.split(':').any(|p| p == d) {
            if !path.is_empty() {
                path.push(':');
            }
            path.push_str(d);
        }
    }
    path
}

/// The message of a failed plugin: its error JSON (`{code, msg, details}`) if it printed one,
/// else the end of its stderr, else its exit status.
pub(super) fn plugin_error(stdout: &str, stderr: &str, status: std::process::ExitStatus) -> String {
    if let Ok(v) = serde_json::from_str::<Value>(stdout.trim()) {
        if let Some(msg) = v.get("msg").and_then(Value::as_str) {
            let mut s = msg.to_string();
            if let Some(d) = v.get("details").and_then(Value::as_str) {
                if !d.is_empty() {
                    s.push_str(": ");
                    s.push_str(d);
                }
            }
            if let Some(code) = v.get("code").and_then(Value::as_u64) {
                s.push_str(&format!(" (code {code})"));
            }
            return s;
        }
    }
    let last = |s: &str| {
        s.lines()
            .rev()
            .find(|l| !l.trim().is_empty())
            .map(str::to_string)
    };
    if let Some(l) = last(stderr) {
        return format!("{} ({status})", l.trim());
    }
    if let Some(l) = last(stdout) {
        return format!("{} ({status})", truncate(l.trim(), 300));
    }
    status.to_string()
}

pub(super) fn one_line(s: &str) -> String {
    s.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect::<Vec<_>>()
        .join("; ")
}

pub(super) fn truncate(s: &str, n: usize) -> String {
    if s.chars().count() <= n {
        return s.to_string();
    }
    let t: String = s.chars().take(n).collect();
    format!("{t}…")
}

pub(super) fn dirs_list(dirs: &[PathBuf]) -> String {
    if dirs.is_empty() {
        return "(no plugin directories)".into();
    }
    dirs.iter()
        .map(|d| d.display().to_string())
        .collect::<Vec<_>>()
        .join(", ")
}

pub(super) fn version_at_least(v: &str, want: (u32, u32, u32)) -> bool {
    let mut it = v.split('.').map(|p| p.parse::<u32>().unwrap_or(0));
    let got = (
        it.next().unwrap_or(0),
        it.next().unwrap_or(0),
        it.next().unwrap_or(0),
    );
    got >= want
}

pub(super) fn valid_name(s: &str) -> bool {
    !s.is_empty()
        && s != "."
        && s != ".."
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '.' || c == '-')
}

pub(super) fn validate_id(id: &str) -> Result<()> {
    if !valid_name(id) || id.len() > 255 {
        bail!("invalid container id {id:?} (letters, digits, '_', '.', '-')");
    }
    Ok(())
}

pub(super) fn validate_ifname(ifname: &str) -> Result<()> {
    if ifname.is_empty()
        || ifname.len() > 15
        || ifname == "."
        || ifname == ".."
        || ifname.contains(['/', ':'])
        || ifname.chars().any(char::is_whitespace)
    {
        bail!("invalid interface name {ifname:?}");
    }
    Ok(())
}

/// The name CNI plugins give a per-container iptables chain (libcni's
/// `utils.MustFormatChainNameWithPrefix`): bridge's masquerade chain is `CNI-<hash>`
/// (prefix ""), portmap's DNAT chain `CNI-DN-<hash>` (prefix "DN-").
pub fn cni_chain_name(network: &str, id: &str, prefix: &str) -> String {
    let digest = Sha512::digest(format!("{network}{id}").as_bytes());
    let mut s = format!("CNI-{prefix}{}", hex::encode(digest));
    s.truncate(28);
    s
}

/// The ADD result turned into an [`Attachment`] for interface `ifname`.
pub(super) fn attachment(result: &Value, ifname: &str, bridges: &[String]) -> Attachment {
    let empty = Vec::new();
    let ifaces = result["interfaces"].as_array().unwrap_or(&empty);
    let sandboxed = |i: &Value| i["sandbox"].as_str().is_some_and(|s| !s.is_empty());
    let ours = ifaces
        .iter()
        .position(|i| i["name"].as_str() == Some(ifname) && sandboxed(i));
    let mac = ours.and_then(|i| ifaces[i]["mac"].as_str().map(str::to_string));
    let host_interface = ifaces
        .iter()
        .filter(|i| !sandboxed(i))
        .filter_map(|i| i["name"].as_str())
        .rfind(|n| !bridges.iter().any(|b| b == n))
        .map(str::to_string);

    // (address, prefix, gateway) of every IP, 0.3.0+ "ips" or 0.1/0.2 "ip4"/"ip6".
    let mut ips: Vec<(IpAddr, u8, Option<IpAddr>, Option<usize>)> = Vec::new();
    let parse_cidr = |s: &str| -> Option<(IpAddr, u8)> {
        let (a, p) = s.split_once('/')?;
        Some((a.parse().ok()?, p.parse().ok()?))
    };
    let gw = |v: &Value| v["gateway"].as_str().and_then(|g| g.parse().ok());
    for ip in result["ips"].as_array().unwrap_or(&empty) {
        if let Some((a, p)) = ip["address"].as_str().and_then(parse_cidr) {
            let idx = ip["interface"].as_u64().map(|i| i as usize);
            ips.push((a, p, gw(ip), idx));
        }
    }
    for key in ["ip4", "ip6"] {
        if let Some((a, p)) = result[key]["ip"].as_str().and_then(parse_cidr) {
            ips.push((a, p, gw(&result[key]), None));
        }
    }
    let mut mine: Vec<_> = ips
        .iter()
        .filter(|(_, _, _, idx)| idx.is_none() || *idx == ours)
        .collect();
    if mine.is_empty() {
        mine = ips.iter().collect();
    }
    let pick = mine
        .iter()
        .find(|(a, ..)| a.is_ipv4())
        .or_else(|| mine.first())
        .copied();
    Attachment {
        ip: pick.map(|p| p.0),
        prefix: pick.map(|p| p.1).unwrap_or(0),
        gateway: pick.and_then(|p| p.2),
        mac,
        interface: ifname.into(),
        host_interface,
        result: result.clone(),
    }
}
