//! The [`Store`] facade: what berthd and the CLI use.
//!
//! ```no_run
//! # async fn demo() -> Result<(), berth_imagestore::Error> {
//! use berth_imagestore::{PullOptions, Store};
//! let store = Store::open("/var/lib/berth").await?;
//! let image = store.pull("127.0.0.1:5000/library/nginx:latest", &PullOptions::default()).await?;
//! let spec = store.rootfs_for(&image.name, "container-1").await?;
//! spec.mount(std::path::Path::new("/run/berth/c1/rootfs"))?;
//! # Ok(()) }
//! ```
//!
//! A `Store` is cheap to clone and safe to use from many tasks at once. Pulls of the same
//! layer are serialized per chain ID (the second waits and then finds it present); a pull
//! holds a shared lock that [`Store::gc`] takes exclusively, so GC never removes what a pull
//! in progress just wrote.

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, Weak};

use crate::content::ContentStore;
use crate::error::{Error, Result};
use crate::manifest::{ImageConfig, MAX_DOCUMENT_SIZE};
use crate::metadata::{ImageRecord, Metadata, SnapshotKind};
use crate::reference::Reference;
use crate::registry::{Registry, RegistryConfig};
use crate::snapshot::{MountSpec, Snapshotter};

/// Options for [`Store::open_with`].
#[derive(Debug, Clone, Default)]
pub struct StoreOptions {
    pub registry: RegistryConfig,
}

/// What [`Store::gc`] removed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct GcStats {
    pub blobs: usize,
    pub snapshots: usize,
}

/// The image store.
#[derive(Clone)]
pub struct Store {
    pub(crate) inner: Arc<Inner>,
}

pub(crate) struct Inner {
    pub(crate) root: PathBuf,
    pub(crate) content: ContentStore,
    pub(crate) meta: Metadata,
    pub(crate) snapshots: Snapshotter,
    pub(crate) registry: Registry,
    /// Held shared by pulls, exclusively by GC.
    pub(crate) gc_lock: tokio::sync::RwLock<()>,
    locks: Mutex<HashMap<String, Weak<tokio::sync::Mutex<()>>>>,
}

impl Inner {
    /// A per-key async lock (chain ID or blob digest), so concurrent pulls do work once.
    pub(crate) fn key_lock(&self, key: &str) -> Arc<tokio::sync::Mutex<()>> {
        let mut locks = self.locks.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(l) = locks.get(key).and_then(Weak::upgrade) {
            return l;
        }
        locks.retain(|_, w| w.strong_count() > 0);
        let l = Arc::new(tokio::sync::Mutex::new(()));
        locks.insert(key.to_string(), Arc::downgrade(&l));
        l
    }
}

pub(crate) async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> T + Send + 'static,
) -> Result<T> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| Error::Internal(format!("blocking task failed: {e}")))
}

impl Store {
    /// Opens (creating if needed) the store at `root` with default options.
    pub async fn open(root: impl AsRef<Path>) -> Result<Self> {
        Self::open_with(root, StoreOptions::default()).await
    }

    /// Opens the store at `root`, takes the database lock (one process per store), and
    /// removes whatever an interrupted write left: ingest files and snapshot directories
    /// without a record.
    pub async fn open_with(root: impl AsRef<Path>, opts: StoreOptions) -> Result<Self> {
        let root = root.as_ref().to_path_buf();
        let r = root.clone();
        let (content, meta, snapshots) = blocking(move || -> Result<_> {
            std::fs::create_dir_all(&r)
                .map_err(|e| Error::Internal(format!("create store root {}: {e}", r.display())))?;
            let meta = Metadata::open(&r.join("meta.db"))?;
            let content = ContentStore::open(&r)?;
            content.cleanup_ingest()?;
            let snapshots = Snapshotter::open(&r, meta.clone())?;
            snapshots.cleanup()?;
            Ok((content, meta, snapshots))
        })
        .await??;
        Ok(Store {
            inner: Arc::new(Inner {
                root,
                content,
                meta,
                snapshots,
                registry: Registry::new(opts.registry),
                gc_lock: tokio::sync::RwLock::new(()),
                locks: Mutex::new(HashMap::new()),
            }),
        })
    }

    /// The metadata database (the daemon keeps its container and pod records there too).
    pub fn metadata(&self) -> &Metadata {
        &self.inner.meta
    }

    /// The store's root directory.
    pub fn root(&self) -> &Path {
        &self.inner.root
    }
    /// The content store.
    pub fn content(&self) -> &ContentStore {
        &self.inner.content
    }
    /// The snapshotter.
    pub fn snapshots(&self) -> &Snapshotter {
        &self.inner.snapshots
    }

    /// Normalizes a user-supplied name (`nginx` -> `docker.io/library/nginx:latest`).
    pub fn normalize(name: &str) -> Result<String> {
        Ok(name.parse::<Reference>()?.to_string())
    }

    /// All images, sorted by name.
    pub async fn images(&self) -> Result<Vec<ImageRecord>> {
        let meta = self.inner.meta.clone();
        Ok(blocking(move || meta.images()).await??)
    }

    /// The image `name` names: a name (normalized first), or an image ID or unique ID prefix
    /// ([`Store::find`]).
    pub async fn image(&self, name: &str) -> Result<ImageRecord> {
        let normalized = Self::normalize(name).ok();
        if let Some(n) = normalized.clone() {
            let meta = self.inner.meta.clone();
            if let Some(rec) = blocking(move || meta.image(&n)).await?? {
                return Ok(rec);
            }
        }
        // Not a name it has: the rest of what `find` takes (the name is not looked up again).
        match self.find_unnamed(name.trim()).await? {
            Some(found) => Ok(found.record().clone()),
            None => Err(Error::ImageNotFound(
                normalized.unwrap_or_else(|| name.to_string()),
            )),
        }
    }

    /// Removes the name `name`. Blobs and snapshots stay until [`Store::gc`].
    pub async fn remove(&self, name: &str) -> Result<ImageRecord> {
        let name = Self::normalize(name)?;
        let meta = self.inner.meta.clone();
        let n = name.clone();
        blocking(move || meta.remove_image(&n))
            .await??
            .ok_or(Error::ImageNotFound(name))
    }

    /// Gives image `src` the additional name `dst` (replacing what `dst` named).
    pub async fn tag(&self, src: &str, dst: &str) -> Result<ImageRecord> {
        let mut rec = self.image(src).await?;
        let dst: Reference = dst.parse()?;
        if dst.digest().is_some() {
            return Err(Error::Internal(format!(
                "tag {dst}: a tag cannot carry a digest"
            )));
        }
        rec.name = dst.to_string();
        rec.updated_unix = crate::metadata::now_unix();
        let meta = self.inner.meta.clone();
        let r = rec.clone();
        blocking(move || meta.put_image(&r)).await??;
        Ok(rec)
    }

    /// The parsed config blob of an image.
    pub async fn image_config(&self, name: &str) -> Result<ImageConfig> {
        let rec = self.image(name).await?;
        let body = self
            .inner
            .content
            .read(&rec.config, MAX_DOCUMENT_SIZE)
            .await?;
        Ok(ImageConfig::parse(&body, rec.layers.len())?)
    }

    /// The defaults a container of this image runs with (Entrypoint, Cmd, Env, WorkingDir,
    /// User, ExposedPorts, Volumes, StopSignal, Labels).
    pub async fn config(&self, name: &str) -> Result<crate::manifest::RuntimeConfig> {
        Ok(self.image_config(name).await?.config.unwrap_or_default())
    }

    /// Creates a writable snapshot `container_key` on top of the image's layers and returns
    /// how to mount it. Remove it with [`Store::remove_rootfs`] when the container is gone.
    pub async fn rootfs_for(&self, image: &str, container_key: &str) -> Result<MountSpec> {
        let rec = self.image(image).await?;
        let top = rec.chain_ids.last().map(|d| d.to_string());
        let snaps = self.inner.snapshots.clone();
        let key = container_key.to_string();
        Ok(blocking(move || snaps.prepare(&key, top.as_deref())).await??)
    }

    /// A read-only view `key` of the image's root filesystem.
    pub async fn view_for(&self, image: &str, key: &str) -> Result<MountSpec> {
        let rec = self.image(image).await?;
        let top = rec
            .chain_ids
            .last()
            .map(|d| d.to_string())
            .ok_or_else(|| Error::Internal(format!("image {image} has no layers")))?;
        let snaps = self.inner.snapshots.clone();
        let key = key.to_string();
        Ok(blocking(move || snaps.view(&key, &top)).await??)
    }

    /// Removes a container's snapshot (made by [`Store::rootfs_for`] or [`Store::view_for`]).
    /// It must be unmounted first.
    pub async fn remove_rootfs(&self, key: &str) -> Result<()> {
        let snaps = self.inner.snapshots.clone();
        let key = key.to_string();
        Ok(blocking(move || snaps.remove(&key)).await??)
    }

    /// Removes blobs and snapshots that no image (and no active snapshot or view) needs.
    /// Waits for pulls in progress.
    pub async fn gc(&self) -> Result<GcStats> {
        let _guard = self.inner.gc_lock.write().await;
        let inner = self.inner.clone();
        blocking(move || gc_locked(&inner)).await?
    }
}

/// GC with the lock held (also used to clean up after a failed pull).
pub(crate) fn gc_locked(inner: &Inner) -> Result<GcStats> {
    let images = inner.meta.images()?;
    let mut live_blobs: HashSet<String> = HashSet::new();
    let mut live_snaps: HashSet<String> = HashSet::new();
    for img in &images {
        live_blobs.extend(img.blobs().map(|d| d.to_string()));
        live_snaps.extend(img.chain_ids.iter().map(|d| d.to_string()));
    }
    let snaps = inner.snapshots.list()?;
    let parent_of: HashMap<&str, Option<&str>> = snaps
        .iter()
        .map(|(k, r)| (k.as_str(), r.parent.as_deref()))
        .collect();
    // Containers' snapshots are roots too, and keep their parent chains alive.
    let mut roots: Vec<&str> = snaps
        .iter()
        .filter(|(_, r)| r.kind != SnapshotKind::Committed)
        .map(|(k, _)| k.as_str())
        .collect();
    roots.extend(live_snaps.iter().map(String::as_str));
    let mut keep: HashSet<String> = HashSet::new();
    for root in roots {
        let mut cur = Some(root);
        while let Some(k) = cur {
            if !keep.insert(k.to_string()) {
                break;
            }
            cur = parent_of.get(k).copied().flatten();
        }
    }
    let mut stats = GcStats::default();
    // Remove children before parents: repeat until nothing more can go.
    let mut dead: Vec<&str> = snaps
        .iter()
        .map(|(k, _)| k.as_str())
        .filter(|k| !keep.contains(*k))
        .collect();
    loop {
        let before = dead.len();
        let mut still = Vec::new();
        for k in dead {
            match inner.snapshots.remove(k) {
                Ok(()) => stats.snapshots += 1,
                Err(crate::snapshot::SnapshotError::HasChildren { .. }) => still.push(k),
                Err(e) => return Err(e.into()),
            }
        }
        dead = still;
        if dead.is_empty() || dead.len() == before {
            break;
        }
    }
    for d in inner.content.list()? {
        if !live_blobs.contains(&d.to_string()) {
            let p = inner.content.path(&d);
            match std::fs::remove_file(&p) {
                Ok(()) => stats.blobs += 1,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => {
                    return Err(crate::content::ContentError::Io {
                        op: "remove",
                        path: p,
                        source: e,
                    }
                    .into())
                }
            }
        }
    }
    Ok(stats)
}
