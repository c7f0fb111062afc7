//! Starting, serving and stopping berthd.

use crate::api::containers_server::ContainersServer;
use crate::api::images_server::ImagesServer;
use crate::bundle::Bundles;
use crate::container_svc::ContainerService;
use crate::containers::{Config, Manager};
use crate::images::ImageService;
use anyhow::{bail, Context, Result};
use berth_imagestore::{RegistryConfig, Store, StoreOptions};
use std::os::fd::AsRawFd;
use std::path::PathBuf;

pub struct Options {
    pub address: PathBuf,
    pub root: PathBuf,
    pub state: PathBuf,
    /// Container logs (`<log_dir>/<id>.log`); None: from the config, else /var/log/berth.
    pub log_dir: Option<PathBuf>,
    /// `None`: `$BERTH_CONFIG` or `/etc/berth/config.toml` if it exists.
    pub config: Option<PathBuf>,
    /// The CRI streaming server's address (port 0: any free port).
    pub streaming_addr: std::net::SocketAddr,
}

/// Holds `<state>/berthd.lock` (flock) for the daemon's lifetime: one berthd per state dir.
fn lock(state: &std::path::Path) -> Result<std::fs::File> {
    let path = state.join("berthd.lock");
    let f = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .with_context(|| format!("open {}", path.display()))?;
    // SAFETY: flock on an fd we own.
    if unsafe { libc::flock(f.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } != 0 {
        let pid = std::fs::read_to_string(state.join("berthd.pid")).unwrap_or_default();
        bail!(
            "another berthd (pid {}) is running with state directory {}",
            pid.trim(),
            state.display()
        );
    }
    Ok(f)
}

pub async fn run(o: Options) -> Result<()> {
    std::fs::create_dir_all(&o.state).with_context(|| format!("create {}", o.state.display()))?;
    let _lock = lock(&o.state)?;
    std::fs::write(o.state.join("berthd.pid"), std::process::id().to_string())
        .context("write berthd.pid")?;
    let registry = match &o.config {
        Some(p) => RegistryConfig::load(p)?,
        None => RegistryConfig::load_default()?,
    };
    let store = Store::open_with(&o.root, StoreOptions { registry })
        .await
        .with_context(|| format!("open the image store at {}", o.root.display()))?;
    let bundles = Bundles::load(&o.state)?;
    let config_path = o.config.clone().or_else(|| {
        let p = std::env::var_os("BERTH_CONFIG")
            .map(PathBuf::from)
            .unwrap_or_else(|| PathBuf::from(berth_imagestore::config::DEFAULT_CONFIG_PATH));
        p.exists().then_some(p)
    });
    let dcfg = DaemonConfig::load(config_path.as_deref())?;
    let cni_conf_dir = dcfg
        .cri
        .cni_conf_dir
        .clone()
        .unwrap_or_else(|| PathBuf::from("/etc/cni/net.d"));
    let cfg = dcfg.resolve(&o)?;
    tracing::info!(
        runtime = %cfg.runtime.as_ref().map(|p| p.display().to_string()).unwrap_or_else(|| "library".into()),
        bridge = %cfg.network.bridge,
        subnet = %cfg.network.subnet,
        "containers"
    );
    let plugin_dirs = cfg.network.plugin_dirs.clone();
    let manager = Manager::open(store.clone(), cfg).await?;
    let pods = std::sync::Arc::new(
        crate::pods::Pods::open(store.clone(), &o.state, cni_conf_dir.clone(), plugin_dirs).await?,
    );
    let streaming = crate::cri_streaming::serve(o.streaming_addr, manager.clone(), pods.clone())
        .with_context(|| format!("streaming server: listen on {}", o.streaming_addr))?;

    if let Some(dir) = o.address.parent() {
        std::fs::create_dir_all(dir).with_context(|| format!("create {}", dir.display()))?;
    }
    // We hold the lock, so a socket left there is stale.
    let _ = std::fs::remove_file(&o.address);
    let listener = tokio::net::UnixListener::bind(&o.address)
        .with_context(|| format!("listen on {}", o.address.display()))?;
    tracing::info!(address = %o.address.display(), root = %o.root.display(), "berthd ready");

    let svc = ImageService {
        store,
        bundles,
        containers: Some(manager.clone()),
    };
    let csvc = ContainerService { m: manager.clone() };
    let cri_images = crate::cri_service::CriImages {
        store: svc.store.clone(),
    };
    let cri_runtime = crate::cri_service::CriRuntime {
        cni_conf_dir: cni_conf_dir.clone(),
        pods,
        containers: manager.clone(),
        store: svc.store.clone(),
        streaming: Some(streaming),
    };
    let stopping = std::sync::Arc::new(tokio::sync::Notify::new());
    let stop = stopping.clone();
    let shutdown = async move {
        use tokio::signal::unix::{signal, SignalKind};
        let mut term = signal(SignalKind::terminate()).expect("SIGTERM handler");
        let mut int = signal(SignalKind::interrupt()).expect("SIGINT handler");
        tokio::select! {
            _ = term.recv() => {}
            _ = int.recv() => {}
        }
        tracing::info!("shutting down");
        stop.notify_one();
    };
    // Calls in progress get a few seconds to finish; clients that keep their connections open
    // (a kubelet always does) do not hold berthd up.
    let grace = async move {
        stopping.notified().await;
        tokio::time::sleep(SHUTDOWN_GRACE).await;
        tracing::warn!("calls still open after {SHUTDOWN_GRACE:?}: stopping anyway");
    };
    let server = tonic::transport::Server::builder()
        .layer(crate::cri_alpha::AlphaLayer)
        .add_service(ImagesServer::new(svc).max_decoding_message_size(64 << 20))
        .add_service(ContainersServer::new(csvc).max_decoding_message_size(64 << 20))
        .add_service(
            crate::cri_service::RuntimeServiceServer::new(cri_runtime)
                .max_decoding_message_size(16 << 20),
        )
        .add_service(
            crate::cri_service::ImageServiceServer::new(cri_images)
                .max_decoding_message_size(16 << 20),
        )
        .serve_with_incoming_shutdown(
            // Clients that send the socket's path as the HTTP/2 authority are accepted.
            tokio_stream::StreamExt::map(
                tokio_stream::wrappers::UnixListenerStream::new(listener),
                |c| c.map(crate::uds_authority::FixAuthority::new),
            ),
            shutdown,
        );
    let served = tokio::select! {
        r = server => r,
        _ = grace => Ok(()),
    };
    let _ = std::fs::remove_file(&o.address);
    let _ = std::fs::remove_file(o.state.join("berthd.pid"));
    served.context("serve")?;
    Ok(())
}

/// How long berthd waits for calls in progress when it is told to stop.
const SHUTDOWN_GRACE: std::time::Duration = std::time::Duration::from_secs(3);

/// The `[daemon]` and `[network]` sections of config.toml (the `[registry]` section belongs to
/// the image store). Every key is optional; docs/config.md lists them with their defaults.
#[derive(serde::Deserialize, Default)]
struct DaemonConfig {
    #[serde(default)]
    daemon: DaemonSection,
    #[serde(default)]
    network: NetworkSection,
    #[serde(default)]
    cri: CriSection,
}

#[derive(serde::Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct CriSection {
    /// Where the CRI looks for CNI network configurations (default /etc/cni/net.d).
    cni_conf_dir: Option<PathBuf>,
}

#[derive(serde::Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct DaemonSection {
    /// Container logs directory (default /var/log/berth).
    log_dir: Option<PathBuf>,
    /// The berth-shim binary (default: beside berthd, else on $PATH).
    shim: Option<PathBuf>,
    /// A runc-compatible runtime binary for the shims (default: the runtime library).
    runtime: Option<PathBuf>,
}

#[derive(serde::Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct NetworkSection {
    /// Bridge name (default berth0).
    bridge: Option<String>,
    /// Subnet of the default network (default 10.89.0.0/16).
    subnet: Option<String>,
    /// Where CNI plugins are looked for (default /usr/lib/cni, /opt/cni/bin).
    plugin_dirs: Option<Vec<PathBuf>>,
}

impl DaemonConfig {
    fn load(path: Option<&std::path::Path>) -> Result<DaemonConfig> {
        let Some(path) = path else {
            return Ok(DaemonConfig::default());
        };
        let text =
            std::fs::read_to_string(path).with_context(|| format!("read {}", path.display()))?;
        toml::from_str(&text)
            .map_err(|e| anyhow::anyhow!("{}: {}", path.display(), e.message().replace('\n', " ")))
    }

    fn resolve(self, o: &Options) -> Result<Config> {
        let shim = match self.daemon.shim {
            Some(p) => p,
            None => {
                let beside = std::env::current_exe()
                    .ok()
                    .and_then(|e| e.parent().map(|d| d.join("berth-shim")));
                match beside {
                    Some(p) if p.exists() => p,
                    _ => PathBuf::from("berth-shim"),
                }
            }
        };
        Ok(Config {
            root: o.root.clone(),
            state: o.state.clone(),
            log_dir: o
                .log_dir
                .clone()
                .or(self.daemon.log_dir)
                .unwrap_or_else(|| PathBuf::from("/var/log/berth")),
            shim,
            runtime: self.daemon.runtime,
            network: crate::network::NetworkOptions {
                name: "berth".into(),
                bridge: self.network.bridge.unwrap_or_else(|| "berth0".into()),
                subnet: self.network.subnet.unwrap_or_else(|| "10.89.0.0/16".into()),
                plugin_dirs: self.network.plugin_dirs.unwrap_or_else(|| {
                    vec![PathBuf::from("/usr/lib/cni"), PathBuf::from("/opt/cni/bin")]
                }),
                state_dir: o.state.join("net"),
            },
        })
    }
}
