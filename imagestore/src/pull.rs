//! Pulling an image: manifest (and platform selection from an index), config, then every
//! layer in parallel: download into the content store unless present, and unpack into its
//! snapshot unless present. A layer's snapshot does not depend on the layers below it (each
//! is its own overlay lowerdir), so layers download and unpack independently and download of
//! one overlaps unpack of another.
//!
//! A warm pull (all snapshots present) costs one manifest GET (two for an index) and a few
//! database reads: no blob is downloaded or opened.
//!
//! On failure nothing of this pull stays visible: the image name is only written once
//! everything is in place, and blobs and snapshots that no image references are then
//! removed (GC, which waits for other pulls in progress).

use std::sync::Arc;
use std::time::Instant;

use tokio::sync::Semaphore;

use crate::digest::{chain_ids, Digest};
use crate::error::{Error, PullCause, Result};
use crate::manifest::{
    parse_document, Descriptor, Document, ImageConfig, Platform, MAX_DOCUMENT_SIZE,
};
use crate::metadata::{now_unix, ImageRecord};
use crate::progress::{BlobKind, BlobProgress, ProgressPhase, ProgressSink};
use crate::reference::Reference;
use crate::registry::{RegistryOverrides, Route};
use crate::store::{blocking, gc_locked, Inner, Store};
use crate::unpack::unpack_layer;

/// Options of one pull.
#[derive(Debug, Clone)]
pub struct PullOptions {
    /// Platform to select from an index (default: the host's, e.g. `linux/amd64`).
    pub platform: Platform,
    /// Layers downloaded/unpacked at once (default 4).
    pub max_concurrent_layers: usize,
    /// Plain HTTP / unverified HTTPS for this pull's registry, over the configuration.
    pub registry: RegistryOverrides,
    /// Where per-blob progress goes (see [`crate::progress`]).
    pub progress: Option<ProgressSink>,
    /// From an index, also download (not unpack) every other platform, so the image can be
    /// pushed or exported as the same index (`docker pull --all-platforms`).
    pub all_platforms: bool,
    /// Credentials for the image's registry for this pull only (not its mirrors), over
    /// the configured ones: what a kubelet sends in PullImage.
    pub credentials: Option<crate::auth::Credentials>,
}

impl Default for PullOptions {
    fn default() -> Self {
        Self {
            platform: Platform::host(),
            max_concurrent_layers: 4,
            registry: RegistryOverrides::default(),
            progress: None,
            all_platforms: false,
            credentials: None,
        }
    }
}

/// Timings and counts of a pull (for progress output and benchmarks).
#[derive(Debug, Clone, Default)]
pub struct PullReport {
    pub layers_downloaded: usize,
    pub layers_unpacked: usize,
    pub bytes_downloaded: u64,
    pub elapsed: std::time::Duration,
}

impl Store {
    /// Pulls `reference` and records it under its normalized name.
    pub async fn pull(&self, reference: &str, opts: &PullOptions) -> Result<ImageRecord> {
        Ok(self.pull_with_report(reference, opts).await?.0)
    }

    /// Like [`Store::pull`], also returning what was done.
    pub async fn pull_with_report(
        &self,
        reference: &str,
        opts: &PullOptions,
    ) -> Result<(ImageRecord, PullReport)> {
        let r: Reference = reference.parse()?;
        let guard = self.inner.gc_lock.read().await;
        let started = Instant::now();
        let result = pull_inner(&self.inner, &r, opts).await;
        drop(guard);
        match result {
            Ok((rec, mut report)) => {
                report.elapsed = started.elapsed();
                Ok((rec, report))
            }
            Err(cause) => {
                // Remove what this pull left that nothing references.
                let _g = self.inner.gc_lock.write().await;
                let inner = self.inner.clone();
                if let Ok(Err(e)) = blocking(move || gc_locked(&inner)).await {
                    tracing::warn!(image = %r, error = %e, "cleanup after failed pull");
                }
                Err(Error::Pull {
                    image: r.to_string(),
                    cause,
                })
            }
        }
    }
}

async fn pull_inner(
    inner: &Arc<Inner>,
    r: &Reference,
    opts: &PullOptions,
) -> Result<(ImageRecord, PullReport), PullCause> {
    let mut report = PullReport::default();
    let mut route = inner.registry.route(r, &opts.registry);
    if let Some(c) = &opts.credentials {
        for ep in route.endpoints.iter_mut().filter(|e| !e.mirror) {
            ep.creds = Some(c.clone());
        }
    }
    let (body, digest, route) = inner.registry.manifest(&route, r).await?;
    let mut whole_index = None;
    let (index, manifest_digest, manifest, media_type) = match parse_document(&body, None)? {
        Document::Manifest(m) => {
            let mt = m.media_type.clone().unwrap_or_default();
            inner.content.write_all(&body, &digest).await?;
            (None, digest, m, mt)
        }
        Document::Index(idx) => {
            let desc = opts.platform.select(&idx)?.clone();
            let child = r.with_digest(desc.digest.clone());
            let (mbody, mdigest, _) = inner.registry.manifest(&route, &child).await?;
            let Document::Manifest(m) = parse_document(&mbody, None)? else {
                return Err(PullCause::Other(format!(
                    "index entry {} for {} is itself an index",
                    desc.digest, opts.platform
                )));
            };
            if mbody.len() as u64 != desc.size {
                return Err(PullCause::Other(format!(
                    "manifest {mdigest} is {} bytes, index says {}",
                    mbody.len(),
                    desc.size
                )));
            }
            inner.content.write_all(&body, &digest).await?;
            inner.content.write_all(&mbody, &mdigest).await?;
            let mt = m.media_type.clone().unwrap_or(desc.media_type.clone());
            if opts.all_platforms {
                whole_index = Some(idx);
            }
            (Some(digest), mdigest, m, mt)
        }
    };
    let other_platforms = match whole_index {
        Some(idx) => {
            fetch_other_platforms(inner, &route, r, &idx, &manifest_digest, opts, &mut report)
                .await?
        }
        None => Vec::new(),
    };
    let target = Target {
        index,
        manifest_digest,
        manifest,
        media_type,
        other_platforms,
    };
    let rec = materialize(inner, Some(&route), r, target, opts, true, &mut report).await?;
    Ok((rec, report))
}

/// Downloads the manifests, configs and layers of every platform of `idx` but `chosen` (not
/// unpacked), so the image can later be pushed or exported as the whole index. Returns their
/// digests.
async fn fetch_other_platforms(
    inner: &Arc<Inner>,
    route: &Route,
    r: &Reference,
    idx: &crate::manifest::Index,
    chosen: &Digest,
    opts: &PullOptions,
    report: &mut PullReport,
) -> Result<Vec<Digest>, PullCause> {
    let mut out = Vec::new();
    let mut blobs: Vec<Descriptor> = Vec::new();
    for d in idx.manifests.iter().filter(|d| &d.digest != chosen) {
        let child = r.with_digest(d.digest.clone());
        let (mbody, mdigest, _) = inner.registry.manifest(route, &child).await?;
        let Document::Manifest(m) = parse_document(&mbody, None)? else {
            return Err(PullCause::Other(format!(
                "index entry {} is itself an index",
                d.digest
            )));
        };
        inner.content.write_all(&mbody, &mdigest).await?;
        out.push(mdigest);
        blobs.push(m.config.clone());
        blobs.extend(m.layers.iter().cloned());
    }
    let sem = Arc::new(Semaphore::new(opts.max_concurrent_layers.max(1)));
    let mut tasks = tokio::task::JoinSet::new();
    for b in blobs {
        out.push(b.digest.clone());
        let (inner, route, r, sem) = (inner.clone(), route.clone(), r.clone(), sem.clone());
        let progress = BlobProgress::new(
            opts.progress.as_ref(),
            &r.to_string(),
            &b.digest,
            BlobKind::Layer,
            b.size,
        );
        tasks.spawn(async move {
            let _permit = sem
                .acquire()
                .await
                .map_err(|e| PullCause::Other(e.to_string()))?;
            let n = fetch_blob_locked(&inner, Some(&route), &r, &b, &progress).await?;
            progress.send(ProgressPhase::Done, b.size);
            Ok::<_, PullCause>(n)
        });
    }
    while let Some(res) = tasks.join_next().await {
        let n = res.map_err(|e| PullCause::Other(format!("blob task: {e}")))??;
        report.bytes_downloaded += n;
    }
    out.sort();
    out.dedup();
    Ok(out)
}

/// What [`materialize`] turns into an image.
pub(crate) struct Target {
    pub(crate) index: Option<Digest>,
    pub(crate) manifest_digest: Digest,
    pub(crate) manifest: crate::manifest::Manifest,
    pub(crate) media_type: String,
    /// Blobs of an index's other platforms, kept with the image (see [`ImageRecord`]).
    pub(crate) other_platforms: Vec<Digest>,
}

/// Given a manifest already in the content store: fetch its config and layers from `route`
/// unless present (with no route they must be present), unpack every layer whose snapshot is
/// missing, and record the image as `r`. Pull and import share this. `check_platform`
/// refuses a single manifest for another platform than `opts.platform` (pull does; import
/// records what the archive holds, as `docker load` does).
pub(crate) async fn materialize(
    inner: &Arc<Inner>,
    route: Option<&Route>,
    r: &Reference,
    target: Target,
    opts: &PullOptions,
    check_platform: bool,
    report: &mut PullReport,
) -> Result<ImageRecord, PullCause> {
    let Target {
        index,
        manifest_digest,
        manifest,
        media_type,
        other_platforms,
    } = target;
    // Config: small, fetched whole.
    let cfg = &manifest.config;
    if cfg.size > MAX_DOCUMENT_SIZE {
        return Err(PullCause::Other(format!(
            "config {} is {} bytes, too large",
            cfg.digest, cfg.size
        )));
    }
    let cfg_progress = BlobProgress::new(
        opts.progress.as_ref(),
        &r.to_string(),
        &cfg.digest,
        BlobKind::Config,
        cfg.size,
    );
    cfg_progress.send(ProgressPhase::Waiting, 0);
    fetch_blob(inner, route, r, cfg, &cfg_progress, report).await?;
    cfg_progress.send(ProgressPhase::Done, cfg.size);
    let cfg_body = inner.content.read(&cfg.digest, MAX_DOCUMENT_SIZE).await?;
    let config = ImageConfig::parse(&cfg_body, manifest.layers.len())?;
    let found = config.platform();
    if check_platform && !opts.platform.matches(&found) && index.is_none() {
        return Err(PullCause::WrongPlatform {
            found: found.to_string(),
            wanted: opts.platform.to_string(),
        });
    }

    let chains = chain_ids(&config.rootfs.diff_ids);
    let sem = Arc::new(Semaphore::new(opts.max_concurrent_layers.max(1)));
    let mut tasks = tokio::task::JoinSet::new();
    let progress: Vec<BlobProgress> = manifest
        .layers
        .iter()
        .map(|l| {
            BlobProgress::new(
                opts.progress.as_ref(),
                &r.to_string(),
                &l.digest,
                BlobKind::Layer,
                l.size,
            )
        })
        .collect();
    for p in &progress {
        p.send(ProgressPhase::Waiting, 0);
    }
    for (i, layer) in manifest.layers.iter().enumerate() {
        let inner = inner.clone();
        let r = r.clone();
        let route = route.cloned();
        let progress = progress[i].clone();
        let layer = layer.clone();
        let diff_id = config.rootfs.diff_ids[i].clone();
        let chain = chains[i].clone();
        let parent = i.checked_sub(1).map(|p| chains[p].clone());
        let sem = sem.clone();
        tasks.spawn(async move {
            let _permit = sem
                .acquire()
                .await
                .map_err(|e| PullCause::Other(e.to_string()))?;
            layer_task(
                &inner,
                route.as_ref(),
                &r,
                &layer,
                diff_id,
                chain,
                parent,
                &progress,
            )
            .await
        });
    }
    while let Some(res) = tasks.join_next().await {
        let (downloaded, unpacked) =
            res.map_err(|e| PullCause::Other(format!("layer task: {e}")))??;
        report.bytes_downloaded += downloaded;
        report.layers_downloaded += usize::from(downloaded > 0);
        report.layers_unpacked += usize::from(unpacked);
    }

    let rec = ImageRecord {
        name: r.to_string(),
        manifest: manifest_digest,
        index,
        media_type,
        config: cfg.digest.clone(),
        layers: manifest.layers.iter().map(|l| l.digest.clone()).collect(),
        chain_ids: chains,
        platform: found,
        size: cfg.size + manifest.layers.iter().map(|l| l.size).sum::<u64>(),
        created: config.created.clone(),
        updated_unix: now_unix(),
        other_platforms,
    };
    let meta = inner.meta.clone();
    let r2 = rec.clone();
    blocking(move || meta.put_image(&r2))
        .await
        .map_err(|e| PullCause::Other(e.to_string()))??;
    Ok(rec)
}

/// Downloads a blob into the content store unless present. Returns bytes downloaded.
async fn fetch_blob(
    inner: &Inner,
    route: Option<&Route>,
    r: &Reference,
    desc: &Descriptor,
    progress: &BlobProgress,
    report: &mut PullReport,
) -> Result<u64, PullCause> {
    let n = fetch_blob_locked(inner, route, r, desc, progress).await?;
    report.bytes_downloaded += n;
    Ok(n)
}

async fn fetch_blob_locked(
    inner: &Inner,
    route: Option<&Route>,
    r: &Reference,
    desc: &Descriptor,
    progress: &BlobProgress,
) -> Result<u64, PullCause> {
    let lock = inner.key_lock(&format!("blob:{}", desc.digest));
    let _held = lock.lock().await;
    if inner.content.exists(&desc.digest).await {
        progress.send(ProgressPhase::Exists, desc.size);
        return Ok(0);
    }
    let Some(route) = route else {
        return Err(crate::content::ContentError::NotFound(desc.digest.clone()).into());
    };
    let mut w = inner.content.writer().await?;
    progress.send(ProgressPhase::Downloading, 0);
    inner
        .registry
        .blob(route, r, desc, &mut w, &progress.bytes_callback())
        .await?;
    let n = w.written();
    w.commit(&desc.digest, Some(desc.size)).await?;
    progress.send(ProgressPhase::Downloaded, n);
    Ok(n)
}

/// One layer: make sure snapshot `chain` exists. Returns (bytes downloaded, unpacked?).
#[allow(clippy::too_many_arguments)]
async fn layer_task(
    inner: &Arc<Inner>,
    route: Option<&Route>,
    r: &Reference,
    layer: &Descriptor,
    diff_id: Digest,
    chain: Digest,
    parent: Option<Digest>,
    progress: &BlobProgress,
) -> Result<(u64, bool), PullCause> {
    let key = chain.to_string();
    let lock = inner.key_lock(&format!("snapshot:{key}"));
    let _held = lock.lock().await;
    let snaps = inner.snapshots.clone();
    let k = key.clone();
    if blocking(move || snaps.exists(&k))
        .await
        .map_err(|e| PullCause::Other(e.to_string()))??
    {
        progress.send(ProgressPhase::Exists, layer.size);
        progress.send(ProgressPhase::Done, layer.size);
        return Ok((0, false));
    }
    let downloaded = fetch_blob_locked(inner, route, r, layer, progress).await?;
    progress.send(ProgressPhase::Unpacking, layer.size);
    let content = inner.content.clone();
    let snaps = inner.snapshots.clone();
    let blob = layer.digest.clone();
    let parent = parent.map(|p| p.to_string());
    let unpacked = blocking(move || {
        let file = content.open_blob_sync(&blob)?;
        snaps
            .commit_with(&key, parent.as_deref(), |dir| {
                unpack_layer(
                    std::io::BufReader::with_capacity(1 << 20, file),
                    dir,
                    Some(&diff_id),
                )
            })?
            .map_err(|source| PullCause::Unpack {
                layer: blob.to_string(),
                source,
            })
    })
    .await
    .map_err(|e| PullCause::Other(e.to_string()))?;
    unpacked?;
    progress.send(ProgressPhase::Done, layer.size);
    Ok((downloaded, true))
}
