//! Container networks through CNI plugins.
//!
//! berthd calls the CNI plugins itself (no CNI library): each plugin of a network's conflist is
//! executed with `CNI_COMMAND`, `CNI_CONTAINERID`, `CNI_NETNS`, `CNI_IFNAME`, `CNI_ARGS` and
//! `CNI_PATH` in its environment and its own config on stdin (the plugin's object plus the
//! network's `name` and `cniVersion`, `prevResult`, and `runtimeConfig.portMappings` for plugins
//! that declare the `portMappings` capability). ADD runs the plugins in order, each one getting
//! the previous one's result; DEL runs them in reverse with the cached result of the ADD.
//!
//! Files under the network's `state_dir`:
//!
//! | path | what |
//! | --- | --- |
//! | `netns/<id>` | the container's network namespace, pinned by a bind mount; `netns/` is a bind mount of itself with shared propagation (as `ip netns` does with `/run/netns`) |
//! | `cache/<network>/<id>.json` | the config, ifname, netns, port mappings and result of each ADD (temp file + rename); written before the plugins run, so a DEL after a crash or a restart uses the same config and ports |
//! | `ipam/<network>/` | host-local's allocations for [`Network::bridge`] networks |
//!
//! What the plugins change on the host: the bridge plugin with `isGateway` sets
//! `net.ipv4.ip_forward=1` (containers reaching beyond the host need it; published ports on
//! 127.0.0.1 and container-to-container traffic do not), and portmap with `snat` sets
//! `net.ipv4.conf.<bridge>.route_localnet=1` so that 127.0.0.1:<hostPort> is reachable. berth
//! itself changes no sysctl.

use anyhow::{anyhow, bail, Context, Result};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use std::collections::HashMap;
use std::net::IpAddr;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::io::AsyncWriteExt;

mod cni;
mod etc_files;
mod nat;
mod netns;

pub use cni::*;
pub use etc_files::*;
use nat::*;
pub use netns::*;

/// The name of berth's default network.
pub const DEFAULT_NETWORK: &str = "berth";
/// The bridge of berth's default network.
pub const DEFAULT_BRIDGE: &str = "berth0";
/// The subnet of berth's default network (podman's default is 10.88.0.0/16).
pub const DEFAULT_SUBNET: &str = "10.89.0.0/16";
/// Where CNI plugins are looked for unless told otherwise (Debian's package, then upstream's).
pub const DEFAULT_PLUGIN_DIRS: &[&str] = &["/usr/lib/cni", "/opt/cni/bin"];
/// The CNI version of the networks [`Network::bridge`] builds.
pub const CNI_VERSION: &str = "1.0.0";

/// How long one plugin may run before it is killed.
pub(super) const PLUGIN_TIMEOUT: Duration = Duration::from_secs(120);
/// Deletes a bridge that is down (linux/sockios.h).
pub(super) const SIOCBRDELBR: libc::c_ulong = 0x89a1;

/// A published port: `host_ip:host_port` on the host to `container_port` in the container.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PortMapping {
    /// "" = every address of the host.
    pub host_ip: String,
    pub host_port: u16,
    pub container_port: u16,
    /// "tcp" or "udp".
    pub protocol: String,
}

impl PortMapping {
    /// Parses docker's `-p` syntax: `[hostIP:]hostPort:containerPort[/tcp|/udp]`
    /// (an IPv6 host address in brackets).
    pub fn parse(spec: &str) -> Result<PortMapping> {
        let bad = |why: &str| anyhow!("invalid port mapping {spec:?}: {why}");
        let (rest, protocol) = match spec.rsplit_once('/') {
            Some((r, p)) => (r, p.to_ascii_lowercase()),
            None => (spec, "tcp".to_string()),
        };
        if protocol != "tcp" && protocol != "udp" {
            return Err(bad("the protocol must be tcp or udp"));
        }
        let (host, container) = rest
            .rsplit_once(':')
            .ok_or_else(|| bad("expected hostPort:containerPort"))?;
        let (host_ip, host_port) = match host.rsplit_once(':') {
            Some((ip, port)) => {
                let ip = ip.trim_start_matches('[').trim_end_matches(']');
                ip.parse::<IpAddr>()
                    .map_err(|_| bad("the host address is not an IP address"))?;
                (ip.to_string(), port)
            }
            None => (String::new(), host),
        };
        let port = |s: &str, what: &str| -> Result<u16> {
            match s.parse::<u16>() {
                Ok(p) if p > 0 => Ok(p),
                _ => Err(bad(&format!("{what} must be a number from 1 to 65535"))),
            }
        };
        Ok(PortMapping {
            host_ip,
            host_port: port(host_port, "the host port")?,
            container_port: port(container, "the container port")?,
            protocol,
        })
    }

    fn host_ip_or_any(&self) -> &str {
        if self.host_ip.is_empty() {
            "0.0.0.0"
        } else {
            &self.host_ip
        }
    }

    fn overlaps(&self, other: &PortMapping) -> bool {
        let any = |ip: &str| ip.is_empty() || ip == "0.0.0.0" || ip == "::";
        self.host_port == other.host_port
            && self.protocol == other.protocol
            && (any(&self.host_ip) || any(&other.host_ip) || self.host_ip == other.host_ip)
    }

    /// The object portmap expects in `runtimeConfig.portMappings`.
    fn to_cni(&self) -> Value {
        let mut m = json!({
            "hostPort": self.host_port,
            "containerPort": self.container_port,
            "protocol": self.protocol,
        });
        if !self.host_ip.is_empty() {
            m["hostIP"] = json!(self.host_ip);
        }
        m
    }
}

/// What ADD gave the container on one network.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Attachment {
    /// The container's address (the first IPv4 one if there are several).
    pub ip: Option<IpAddr>,
    pub prefix: u8,
    pub gateway: Option<IpAddr>,
    pub mac: Option<String>,
    /// The interface in the container (CNI_IFNAME).
    pub interface: String,
    /// The host end of the container's veth, when the result names one.
    pub host_interface: Option<String>,
    /// The CNI result of the last plugin, as it printed it.
    pub result: Value,
}

/// How to build berth's own bridge network ([`Network::bridge`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NetworkOptions {
    /// The CNI network name (also names the cache and host-local directories).
    pub name: String,
    /// The bridge link, at most 15 characters.
    pub bridge: String,
    /// e.g. 10.89.0.0/16; the gateway is its first address.
    pub subnet: String,
    /// Where the plugins are looked for, in order.
    pub plugin_dirs: Vec<PathBuf>,
    /// netns pins, the CNI cache and host-local data.
    pub state_dir: PathBuf,
}

impl NetworkOptions {
    /// berth's default network (`berth`, `berth0`, 10.89.0.0/16) with its state in `state_dir`.
    pub fn new(state_dir: impl Into<PathBuf>) -> NetworkOptions {
        NetworkOptions {
            name: DEFAULT_NETWORK.into(),
            bridge: DEFAULT_BRIDGE.into(),
            subnet: DEFAULT_SUBNET.into(),
            plugin_dirs: default_plugin_dirs(),
            state_dir: state_dir.into(),
        }
    }
}

/// [`DEFAULT_PLUGIN_DIRS`] as paths.
pub fn default_plugin_dirs() -> Vec<PathBuf> {
    DEFAULT_PLUGIN_DIRS.iter().map(PathBuf::from).collect()
}

/// `--network` of `berth run`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NetworkMode {
    /// A new netns attached to berth's bridge network (the default).
    Bridge,
    /// The host's network namespace.
    Host,
    /// A new netns with only lo.
    None,
}

impl std::str::FromStr for NetworkMode {
    type Err = anyhow::Error;
    fn from_str(s: &str) -> Result<NetworkMode> {
        match s {
            "" | "bridge" | "default" => Ok(NetworkMode::Bridge),
            "host" => Ok(NetworkMode::Host),
            "none" => Ok(NetworkMode::None),
            _ => bail!("network {s:?} not found (bridge, host or none)"),
        }
    }
}

/// One CNI network (a conflist) and the state berth keeps for it.
pub struct Network {
    name: String,
    cni_version: String,
    /// The whole conflist: name, cniVersion, plugins (and whatever else it had).
    config: Value,
    plugin_dirs: Vec<PathBuf>,
    state_dir: PathBuf,
    /// The bridge berth created and may delete (only for [`Network::bridge`]).
    owned_bridge: Option<String>,
    /// One ADD/DEL at a time per container.
    id_locks: Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
    /// Port allocation check + cache write of an ADD; bridge removal vs. ADDs in flight.
    alloc: Mutex<()>,
    adds_in_flight: AtomicUsize,
}

impl std::fmt::Debug for Network {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Network")
            .field("name", &self.name)
            .field("cni_version", &self.cni_version)
            .field("state_dir", &self.state_dir)
            .field("owned_bridge", &self.owned_bridge)
            .finish_non_exhaustive()
    }
}

/// What is cached per ADD at `<state_dir>/cache/<network>/<id>.json`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(super) struct CacheEntry {
    kind: String,
    network: String,
    container_id: String,
    if_name: String,
    #[serde(default)]
    netns: String,
    #[serde(default)]
    port_mappings: Vec<PortMapping>,
    #[serde(default)]
    cni_args: Vec<(String, String)>,
    /// The conflist the ADD ran with.
    config: Value,
    /// None until the ADD completed.
    #[serde(default)]
    result: Option<Value>,
}

pub(super) const CACHE_KIND: &str = "berth-cni-attachment/v1";

impl Network {
    /// berth's bridge network: the bridge plugin (isGateway, ipMasq, hairpinMode, host-local
    /// IPAM with its data under `state_dir/ipam`), portmap (portMappings, snat) and, when the
    /// host's FORWARD chain does not accept by default (e.g. docker is installed), firewall.
    pub fn bridge(opts: NetworkOptions) -> Network {
        let v6 = opts.subnet.contains(':');
        let default_route = if v6 { "::/0" } else { "0.0.0.0/0" };
        let mut plugins = vec![
            json!({
                "type": "bridge",
                "bridge": opts.bridge,
                "isGateway": true,
                "ipMasq": true,
                "hairpinMode": true,
                "ipam": {
                    "type": "host-local",
                    "ranges": [[{ "subnet": opts.subnet }]],
                    "routes": [{ "dst": default_route }],
                    "dataDir": opts.state_dir.join("ipam"),
                },
            }),
            json!({
                "type": "portmap",
                "capabilities": { "portMappings": true },
                "snat": true,
            }),
        ];
        if !forward_policy_accepts(v6) {
            plugins.push(json!({ "type": "firewall" }));
        }
        let config = json!({
            "cniVersion": CNI_VERSION,
            "name": opts.name,
            "plugins": plugins,
        });
        Network::new(
            opts.name,
            CNI_VERSION.into(),
            config,
            opts.plugin_dirs,
            opts.state_dir,
            Some(opts.bridge),
        )
    }

    fn new(
        name: String,
        cni_version: String,
        config: Value,
        plugin_dirs: Vec<PathBuf>,
        state_dir: PathBuf,
        owned_bridge: Option<String>,
    ) -> Network {
        Network {
            name,
            cni_version,
            config,
            plugin_dirs,
            state_dir,
            owned_bridge,
            id_locks: Mutex::new(HashMap::new()),
            alloc: Mutex::new(()),
            adds_in_flight: AtomicUsize::new(0),
        }
    }

    /// Loads a `.conflist`, or a `.conf`/`.json` holding one plugin, as the CRI does.
    pub fn from_conflist(
        path: &Path,
        plugin_dirs: &[PathBuf],
        state_dir: &Path,
    ) -> Result<Network> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("read CNI config {}", path.display()))?;
        Network::from_json(&text, plugin_dirs, state_dir)
            .map_err(|e| anyhow!("CNI config {}: {e:#}", path.display()))
    }

    /// The whole network configuration (a conflist), to make the same network again with
    /// [`Network::from_json`] (CNI: DEL runs with the configuration ADD ran with).
    pub fn config_json(&self) -> String {
        self.config.to_string()
    }

    /// [`Network::from_conflist`] from the file's text.
    pub fn from_json(text: &str, plugin_dirs: &[PathBuf], state_dir: &Path) -> Result<Network> {
        let v: Value = serde_json::from_str(text).map_err(|e| anyhow!("invalid JSON: {e}"))?;
        let Value::Object(mut obj) = v else {
            bail!("not a JSON object");
        };
        let name = match obj.get("name") {
            Some(Value::String(n)) => n.clone(),
            _ => bail!("missing \"name\""),
        };
        if !valid_name(&name) {
            bail!("invalid network name {name:?} (letters, digits, '_', '.', '-')");
        }
        let cni_version = match obj.get("cniVersion") {
            Some(Value::String(v)) if !v.is_empty() => v.clone(),
            _ => bail!("missing \"cniVersion\""),
        };
        let config = if obj.contains_key("plugins") {
            let Some(Value::Array(plugins)) = obj.get("plugins") else {
                bail!("\"plugins\" is not a list");
            };
            if plugins.is_empty() {
                bail!("no plugins");
            }
            for (i, p) in plugins.iter().enumerate() {
                plugin_type(p).with_context(|| format!("plugin {i}"))?;
            }
            Value::Object(obj)
        } else {
            plugin_type(&Value::Object(obj.clone()))?;
            let plugin = obj.clone();
            obj.retain(|k, _| k == "name" || k == "cniVersion" || k == "disableCheck");
            obj.insert("plugins".into(), Value::Array(vec![Value::Object(plugin)]));
            Value::Object(obj)
        };
        Ok(Network::new(
            name,
            cni_version,
            config,
            plugin_dirs.to_vec(),
            state_dir.to_path_buf(),
            None,
        ))
    }

    /// The lexically first `.conflist`/`.conf`/`.json` in `dir` that loads (others are skipped
    /// with a warning), as kubelet runtimes pick their network. None: no usable file.
    pub fn first_in_dir(
        dir: &Path,
        plugin_dirs: &[PathBuf],
        state_dir: &Path,
    ) -> Result<Option<Network>> {
        let rd = match std::fs::read_dir(dir) {
            Ok(rd) => rd,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => bail!("read CNI config directory {}: {e}", dir.display()),
        };
        let mut files: Vec<PathBuf> = rd
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| {
                matches!(
                    p.extension().and_then(|e| e.to_str()),
                    Some("conflist" | "conf" | "json")
                ) && p.is_file()
            })
            .collect();
        files.sort();
        for f in files {
            match Network::from_conflist(&f, plugin_dirs, state_dir) {
                Ok(n) => return Ok(Some(n)),
                Err(e) => tracing::warn!("skipping {e:#}"),
            }
        }
        Ok(None)
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn cni_version(&self) -> &str {
        &self.cni_version
    }

    /// The conflist (name, cniVersion, plugins).
    pub fn config(&self) -> &Value {
        &self.config
    }

    pub fn state_dir(&self) -> &Path {
        &self.state_dir
    }

    /// Where [`Network::create_netns`] pins the namespace of `id`.
    pub fn netns_path(&self, id: &str) -> PathBuf {
        self.state_dir.join("netns").join(id)
    }

    fn cache_dir(&self) -> PathBuf {
        let name: String = self
            .name
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() || "_.-".contains(c) {
                    c
                } else {
                    '_'
                }
            })
            .collect();
        let name = if name.is_empty() || name == "." || name == ".." {
            "_".into()
        } else {
            name
        };
        self.state_dir.join("cache").join(name)
    }

    fn cache_path(&self, id: &str) -> PathBuf {
        self.cache_dir().join(format!("{id}.json"))
    }

    /// A new network namespace with lo up, pinned at `<state_dir>/netns/<id>`. If it is already
    /// pinned there, returns it as it is.
    pub async fn create_netns(&self, id: &str) -> Result<PathBuf> {
        validate_id(id)?;
        let dir = self.state_dir.join("netns");
        let path = dir.join(id);
        let p = path.clone();
        on_own_thread(format!("create network namespace for {id}"), move || {
            create_netns_blocking(&dir, &p)
        })
        .await?;
        Ok(path)
    }

    /// Unmounts and removes the pin of `id`'s namespace (the namespace goes when nothing else
    /// holds it). Nothing there is fine.
    pub fn remove_netns(&self, id: &str) -> Result<()> {
        validate_id(id)?;
        unpin(&self.netns_path(id))
    }

    /// Attaches `id`'s namespace `netns` to the network as `ifname` and publishes `ports`.
    pub async fn add(
        &self,
        id: &str,
        netns: &Path,
        ifname: &str,
        ports: &[PortMapping],
    ) -> Result<Attachment> {
        self.add_with_args(id, netns, ifname, ports, &[]).await
    }

    /// [`Network::add`] with `CNI_ARGS` (e.g. K8S_POD_NAMESPACE, K8S_POD_NAME for the CRI).
    pub async fn add_with_args(
        &self,
        id: &str,
        netns: &Path,
        ifname: &str,
        ports: &[PortMapping],
        cni_args: &[(String, String)],
    ) -> Result<Attachment> {
        validate_id(id)?;
        validate_ifname(ifname)?;
        for p in ports {
            if p.protocol != "tcp" && p.protocol != "udp" && p.protocol != "sctp" {
                bail!("port {}/{}: unknown protocol", p.host_port, p.protocol);
            }
        }
        let _in_flight = self.begin_add();
        let _g = self.lock_id(id).await;
        self.add_locked(id, netns, ifname, ports, cni_args).await
    }

    async fn add_locked(
        &self,
        id: &str,
        netns: &Path,
        ifname: &str,
        ports: &[PortMapping],
        cni_args: &[(String, String)],
    ) -> Result<Attachment> {
        match self.read_cache(id) {
            Ok(Some(c)) if c.result.is_some() => bail!(
                "container {id} is already attached to network {} (detach it first)",
                self.name
            ),
            Ok(Some(c)) => {
                // An ADD that never finished (berthd died during it): undo it first.
                self.run_del(&c, Some(Path::new(&c.netns)))
                    .await
                    .map_err(|e| anyhow!("clean up an interrupted attach of {id}: {e:#}"))?;
            }
            Ok(None) => {}
            Err(e) => tracing::warn!(id, "ignoring an unreadable CNI cache entry: {e:#}"),
        }
        let mut entry = CacheEntry {
            kind: CACHE_KIND.into(),
            network: self.name.clone(),
            container_id: id.into(),
            if_name: ifname.into(),
            netns: netns.display().to_string(),
            port_mappings: ports.to_vec(),
            cni_args: cni_args.to_vec(),
            config: self.config_for(ports),
            result: None,
        };
        {
            let _a = self.alloc.lock().unwrap_or_else(|e| e.into_inner());
            self.check_allocations(id, ports)?;
            self.write_cache(&entry)?;
        }
        match self.run_add(&entry).await {
            Ok(result) => {
                let att = attachment(&result, ifname, &bridge_names(&entry.config));
                entry.result = Some(result);
                if let Err(e) = self.write_cache(&entry) {
                    let _ = self.run_del(&entry, Some(netns)).await;
                    let _ = std::fs::remove_file(self.cache_path(id));
                    return Err(e);
                }
                Ok(att)
            }
            Err(e) => {
                // Undo whatever the plugins that ran did (CNI: DEL after a failed ADD).
                match self.run_del(&entry, Some(netns)).await {
                    Ok(()) => {
                        let _ = std::fs::remove_file(self.cache_path(id));
                    }
                    Err(de) => tracing::warn!(id, "cleanup after a failed attach: {de:#}"),
                }
                Err(e)
            }
        }
    }

    /// Detaches `id` from the network: the plugins' DEL in reverse order with the config and
    /// result cached by its ADD. Succeeds when there is nothing to undo: never attached,
    /// already detached, or its namespace already gone (`netns` None: the cached one).
    pub async fn del(&self, id: &str, netns: Option<&Path>) -> Result<()> {
        validate_id(id)?;
        let _g = self.lock_id(id).await;
        self.del_locked(id, netns).await
    }

    async fn del_locked(&self, id: &str, netns: Option<&Path>) -> Result<()> {
        let entry = match self.read_cache(id) {
            Ok(Some(c)) => c,
            Ok(None) => self.fresh_entry(id),
            Err(e) => {
                tracing::warn!(id, "ignoring an unreadable CNI cache entry: {e:#}");
                self.fresh_entry(id)
            }
        };
        let netns = netns
            .map(Path::to_path_buf)
            .or_else(|| (!entry.netns.is_empty()).then(|| PathBuf::from(&entry.netns)));
        self.run_del(&entry, netns.as_deref()).await?;
        match std::fs::remove_file(self.cache_path(id)) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => bail!("remove CNI cache entry of {id}: {e}"),
        }
    }

    /// CNI CHECK of an attached container (plugins in order, with the cached result). A
    /// network older than CNI 0.4.0 or with `disableCheck` passes without running anything.
    /// Note: Debian's portmap 1.1.1 fails CHECK of published ports on an IPv4-only network
    /// ("could not check ipv6 dnat"), a bug of that plugin.
    pub async fn check(&self, id: &str) -> Result<()> {
        validate_id(id)?;
        let Some(entry) = self.read_cache(id)? else {
            bail!("container {id} is not attached to network {}", self.name);
        };
        let Some(result) = &entry.result else {
            bail!(
                "container {id}: its attach to network {} did not finish",
                self.name
            );
        };
        let version = entry.config["cniVersion"].as_str().unwrap_or("");
        if !version_at_least(version, (0, 4, 0)) || entry.config["disableCheck"] == json!(true) {
            return Ok(());
        }
        let netns = PathBuf::from(&entry.netns);
        for p in plugins(&entry.config) {
            let conf = plugin_conf(&entry, p, Some(result));
            self.exec_plugin(&entry, p, "CHECK", &netns, &conf).await?;
        }
        Ok(())
    }

    /// The attachment of `id` as its ADD cached it (e.g. for `inspect` after a restart); None
    /// if it is not attached or its ADD did not finish.
    pub fn cached_attachment(&self, id: &str) -> Result<Option<Attachment>> {
        validate_id(id)?;
        Ok(self.read_cache(id)?.and_then(|c| {
            c.result
                .as_ref()
                .map(|r| attachment(r, &c.if_name, &bridge_names(&c.config)))
        }))
    }

    /// Containers with an attachment (complete or interrupted) in the cache: what a restarted
    /// berthd may have to tear down.
    pub fn cached_ids(&self) -> Result<Vec<String>> {
        let dir = self.cache_dir();
        let rd = match std::fs::read_dir(&dir) {
            Ok(rd) => rd,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => bail!("read CNI cache {}: {e}", dir.display()),
        };
        let mut ids: Vec<String> = rd
            .filter_map(|e| e.ok())
            .filter_map(|e| {
                let name = e.file_name().into_string().ok()?;
                name.strip_suffix(".json").map(str::to_string)
            })
            .collect();
        ids.sort();
        Ok(ids)
    }

    /// Deletes the bridge of a [`Network::bridge`] network when no interface is enslaved to it
    /// and no ADD is in progress. Does nothing for networks loaded from a conflist, or when the
    /// link is missing; refuses to delete a link of that name that is not a bridge.
    pub fn remove_bridge_if_unused(&self) -> Result<()> {
        let Some(br) = &self.owned_bridge else {
            return Ok(());
        };
        let _a = self.alloc.lock().unwrap_or_else(|e| e.into_inner());
        if self.adds_in_flight.load(Ordering::SeqCst) > 0 {
            return Ok(());
        }
        let sys = Path::new("/sys/class/net").join(br);
        if !sys.exists() {
            return Ok(());
        }
        if !sys.join("bridge").exists() {
            bail!("remove bridge {br}: the link {br} is not a bridge, leaving it alone");
        }
        let ports = std::fs::read_dir(sys.join("brif"))
            .map_err(|e| anyhow!("remove bridge {br}: read its ports: {e}"))?
            .count();
        if ports > 0 {
            return Ok(());
        }
        delete_bridge(br).map_err(|e| anyhow!("remove bridge {br}: {e:#}"))
    }

    fn begin_add(&self) -> InFlight<'_> {
        let _a = self.alloc.lock().unwrap_or_else(|e| e.into_inner());
        self.adds_in_flight.fetch_add(1, Ordering::SeqCst);
        InFlight(&self.adds_in_flight)
    }

    /// Waits for and holds the lock of container `id` (also when the future is dropped midway,
    /// the guard gives it back).
    async fn lock_id(&self, id: &str) -> IdGuard<'_> {
        let lock = {
            let mut m = self.id_locks.lock().unwrap_or_else(|e| e.into_inner());
            m.entry(id.to_string()).or_default().clone()
        };
        let guard = lock.clone().lock_owned().await;
        IdGuard {
            net: self,
            id: id.to_string(),
            lock,
            guard: Some(guard),
        }
    }

    /// The conflist an ADD runs (and its DEL, from the cache). berth's own bridge network
    /// leaves portmap out for a container that publishes no port: its ADD would do nothing,
    /// but its DEL runs iptables several times to look for rules that cannot exist (~30 ms of
    /// every `run --rm`). Conflists from elsewhere run as written.
    fn config_for(&self, ports: &[PortMapping]) -> Value {
        let mut config = self.config.clone();
        if ports.is_empty() && self.owned_bridge.is_some() {
            if let Some(list) = config["plugins"].as_array_mut() {
                list.retain(|p| plugin_type(p).ok() != Some("portmap"));
            }
        }
        config
    }

    fn fresh_entry(&self, id: &str) -> CacheEntry {
        CacheEntry {
            kind: CACHE_KIND.into(),
            network: self.name.clone(),
            container_id: id.into(),
            if_name: "eth0".into(),
            netns: String::new(),
            port_mappings: Vec::new(),
            cni_args: Vec::new(),
            config: self.config.clone(),
            result: None,
        }
    }

    fn read_cache(&self, id: &str) -> Result<Option<CacheEntry>> {
        let path = self.cache_path(id);
        let text = match std::fs::read(&path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => bail!("read {}: {e}", path.display()),
        };
        let c: CacheEntry =
            serde_json::from_slice(&text).map_err(|e| anyhow!("parse {}: {e}", path.display()))?;
        if c.kind != CACHE_KIND || c.container_id != id {
            bail!("{}: not a cache entry for {id}", path.display());
        }
        Ok(Some(c))
    }

    fn write_cache(&self, entry: &CacheEntry) -> Result<()> {
        let path = self.cache_path(&entry.container_id);
        let data = serde_json::to_vec_pretty(entry)?;
        write_atomic(&path, &data, 0o600)
            .map_err(|e| anyhow!("write CNI cache {}: {e:#}", path.display()))
    }

    /// Host ports taken by other containers of this network (from the cache).
    fn check_allocations(&self, id: &str, ports: &[PortMapping]) -> Result<()> {
        for (i, p) in ports.iter().enumerate() {
            if ports[..i].iter().any(|q| q.overlaps(p)) {
                bail!(
                    "port {}/{} is published twice on {}",
                    p.host_port,
                    p.protocol,
                    p.host_ip_or_any()
                );
            }
        }
        if ports.is_empty() {
            return Ok(());
        }
        for other in self.cached_ids()? {
            if other == id {
                continue;
            }
            let Ok(Some(c)) = self.read_cache(&other) else {
                continue;
            };
            for p in ports {
                if c.port_mappings.iter().any(|q| q.overlaps(p)) {
                    bail!(
                        "port {}/{} is already allocated to container {other} on {}",
                        p.host_port,
                        p.protocol,
                        p.host_ip_or_any()
                    );
                }
            }
        }
        Ok(())
    }

    async fn run_add(&self, entry: &CacheEntry) -> Result<Value> {
        let netns = PathBuf::from(&entry.netns);
        let mut prev: Option<Value> = None;
        for p in plugins(&entry.config) {
            let conf = plugin_conf(entry, p, prev.as_ref());
            if let Some(r) = self.exec_plugin(entry, p, "ADD", &netns, &conf).await? {
                prev = Some(r);
            }
        }
        prev.ok_or_else(|| anyhow!("network {}: no plugin printed a result", self.name))
    }

    /// DEL of every plugin in reverse order; all of them run, the first failure is returned.
    /// Then takes away the masquerade chain of a bridge plugin that could not (it finds the
    /// container's addresses in its netns, which may be gone).
    async fn run_del(&self, entry: &CacheEntry, netns: Option<&Path>) -> Result<()> {
        // A path that is not a live namespace (removed, or a bare file after an unmount) is
        // passed as no namespace at all, which the plugins take as "already gone".
        let netns = match netns {
            Some(p) if is_netns(p) => p.to_path_buf(),
            _ => PathBuf::new(),
        };
        let version = entry.config["cniVersion"].as_str().unwrap_or("");
        let prev = entry
            .result
            .as_ref()
            .filter(|_| version_at_least(version, (0, 4, 0)));
        let mut first_err = None;
        let list: Vec<&Value> = plugins(&entry.config).collect();
        for p in list.iter().rev() {
            let conf = plugin_conf(entry, p, prev);
            if let Err(e) = self.exec_plugin(entry, p, "DEL", &netns, &conf).await {
                first_err.get_or_insert(e);
            }
        }
        // The bridge plugin finds the addresses whose masquerade rules it removes on the
        // interface in the namespace: with the namespace gone (or a failed DEL) the rules would
        // stay, so berth removes the chain itself. Otherwise the plugin did, and berth saves
        // the two iptables-save runs (~40 ms of every container exit).
        let masq_may_remain = netns.as_os_str().is_empty() || first_err.is_some();
        for p in list.iter().filter(|_| masq_may_remain) {
            if plugin_type(p).ok() == Some("bridge") && p["ipMasq"] == json!(true) {
                let chain = cni_chain_name(&self.name, &entry.container_id, "");
                if let Err(e) = remove_nat_chain(&chain).await {
                    first_err.get_or_insert(e);
                }
            }
        }
        match first_err {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }

    fn find_plugin(&self, ty: &str) -> Result<PathBuf> {
        if ty.is_empty() || ty.contains('/') || ty == "." || ty == ".." {
            bail!("invalid CNI plugin type {ty:?}");
        }
        for d in &self.plugin_dirs {
            let p = d.join(ty);
            if let Ok(md) = std::fs::metadata(&p) {
                if md.is_file() && md.permissions().mode() & 0o111 != 0 {
                    return Ok(p);
                }
            }
        }
        bail!(
            "CNI plugin {ty:?} of network {} not found in {}",
            self.name,
            dirs_list(&self.plugin_dirs)
        )
    }

    /// Runs one plugin. Ok(None): it succeeded and printed nothing.
    async fn exec_plugin(
        &self,
        entry: &CacheEntry,
        plugin: &Value,
        command: &str,
        netns: &Path,
        conf: &Value,
    ) -> Result<Option<Value>> {
        let ty = plugin_type(plugin)?;
        let id = &entry.container_id;
        let fail = |msg: String| {
            anyhow!(
                "CNI plugin {ty} {command} of container {id} on network {} failed: {}",
                self.name,
                one_line(&msg)
            )
        };
        let bin = match self.find_plugin(ty) {
            Ok(b) => b,
            // Nothing to undo with a plugin that is not there (and no other way to go on).
            Err(e) if command == "DEL" => {
                tracing::warn!(id, "DEL skipped: {e:#}");
                return Ok(None);
            }
            Err(e) => return Err(e),
        };
        let stdin = serde_json::to_vec(conf)?;
        let mut cmd = tokio::process::Command::new(&bin);
        cmd.env("CNI_COMMAND", command)
            .env("CNI_CONTAINERID", id)
            .env("CNI_NETNS", netns)
            .env("CNI_IFNAME", &entry.if_name)
            .env("CNI_ARGS", cni_args(&entry.cni_args))
            .env("CNI_PATH", std::env::join_paths(&self.plugin_dirs)?)
            .env("PATH", search_path())
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .kill_on_drop(true);
        let mut child = cmd
            .spawn()
            .map_err(|e| fail(format!("cannot run {}: {e}", bin.display())))?;
        let t0 = std::time::Instant::now();
        let mut pipe = child.stdin.take();
        let feed = async {
            if let Some(p) = pipe.as_mut() {
                // A plugin may exit without reading; its exit status says what went wrong.
                let _ = p.write_all(&stdin).await;
            }
            drop(pipe);
        };
        let (_, out) = tokio::time::timeout(PLUGIN_TIMEOUT, async {
            tokio::join!(feed, child.wait_with_output())
        })
        .await
        .map_err(|_| fail(format!("timed out after {}s", PLUGIN_TIMEOUT.as_secs())))?;
        let out = out.map_err(|e| fail(format!("wait: {e}")))?;
        tracing::debug!(plugin = ty, command, id, elapsed = ?t0.elapsed(), "CNI plugin ran");
        let stdout = String::from_utf8_lossy(&out.stdout);
        let stderr = String::from_utf8_lossy(&out.stderr);
        if !stderr.trim().is_empty() {
            tracing::debug!(plugin = ty, command, id, "stderr: {}", one_line(&stderr));
        }
        if !out.status.success() {
            return Err(fail(plugin_error(&stdout, &stderr, out.status)));
        }
        let text = stdout.trim();
        if text.is_empty() || command != "ADD" {
            return Ok(None);
        }
        let v: Value = serde_json::from_str(text)
            .map_err(|e| fail(format!("unparsable result ({e}): {}", truncate(text, 200))))?;
        Ok(Some(v))
    }
}

/// The lock of one container; dropping it forgets the lock when nobody else wants it.
pub(super) struct IdGuard<'a> {
    net: &'a Network,
    id: String,
    lock: Arc<tokio::sync::Mutex<()>>,
    guard: Option<tokio::sync::OwnedMutexGuard<()>>,
}

impl Drop for IdGuard<'_> {
    fn drop(&mut self) {
        self.guard.take();
        let mut m = self.net.id_locks.lock().unwrap_or_else(|e| e.into_inner());
        // The map's reference and ours: nobody else holds or waits for it.
        if Arc::strong_count(&self.lock) <= 2 {
            m.remove(&self.id);
        }
    }
}

/// Decrements the count of ADDs in flight when dropped.
pub(super) struct InFlight<'a>(&'a AtomicUsize);

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}
