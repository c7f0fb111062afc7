//! Starting, serving and stopping berthd.

use crate::api::images_server::ImagesServer;
use crate::bundle::Bundles;
use crate::images::ImageService;
use anyhow::{bail, Context, Result};
use berth_imagestore::{RegistryConfig, Store, StoreOptions};
use std::os::fd::AsRawFd;
use std::path::PathBuf;

pub struct Options {
    pub address: PathBuf,
    pub root: PathBuf,
    pub state: PathBuf,
    /// `None`: `$BERTH_CONFIG` or `/etc/berth/config.toml` if it exists.
    pub config: Option<PathBuf>,
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

    if let Some(dir) = o.address.parent() {
        std::fs::create_dir_all(dir).with_context(|| format!("create {}", dir.display()))?;
    }
    // We hold the lock, so a socket left there is stale.
    let _ = std::fs::remove_file(&o.address);
    let listener = tokio::net::UnixListener::bind(&o.address)
        .with_context(|| format!("listen on {}", o.address.display()))?;
    tracing::info!(address = %o.address.display(), root = %o.root.display(), "berthd ready");

    let svc = ImageService { store, bundles };
    let shutdown = async {
        use tokio::signal::unix::{signal, SignalKind};
        let mut term = signal(SignalKind::terminate()).expect("SIGTERM handler");
        let mut int = signal(SignalKind::interrupt()).expect("SIGINT handler");
        tokio::select! {
            _ = term.recv() => {}
            _ = int.recv() => {}
        }
        tracing::info!("shutting down");
    };
    let served = tonic::transport::Server::builder()
        .add_service(ImagesServer::new(svc))
        .serve_with_incoming_shutdown(
            tokio_stream::wrappers::UnixListenerStream::new(listener),
            shutdown,
        )
        .await;
    let _ = std::fs::remove_file(&o.address);
    let _ = std::fs::remove_file(o.state.join("berthd.pid"));
    served.context("serve")?;
    Ok(())
}
