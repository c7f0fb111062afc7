//! Pushing an image from the store to a registry: for each blob a `HEAD` (skip what the
//! registry has), else an upload streamed from the content store; then the manifest `PUT`.
//!
//! An image pulled from an index is pushed as that index when every platform's content is in
//! the store (an image imported from a layout, see [`crate::ImageRecord::other_platforms`]):
//! blobs of every platform, each platform manifest by digest, then the index under the tag,
//! so the pushed tag has the same digest. Otherwise only the platform manifest is pushed,
//! and the tag then names that manifest (the report says which).

use std::collections::HashSet;
use std::sync::Arc;

use crate::digest::Digest;
use crate::error::{Error, Result};
use crate::manifest::{parse_document, Document, Index, Manifest, MAX_DOCUMENT_SIZE, OCI_INDEX};
use crate::progress::{BlobKind, BlobProgress, ProgressPhase, ProgressSink};
use crate::reference::Reference;
use crate::registry::{RegistryError, RegistryOverrides, Route};
use crate::store::{Inner, Store};

/// Options of one push.
#[derive(Debug, Clone)]
pub struct PushOptions {
    /// Plain HTTP / unverified HTTPS for the destination registry, over the configuration.
    pub registry: RegistryOverrides,
    /// Blobs uploaded at once (default 4).
    pub max_concurrent_uploads: usize,
    /// Where per-blob progress goes (see [`crate::progress`]).
    pub progress: Option<ProgressSink>,
}

impl Default for PushOptions {
    fn default() -> Self {
        Self {
            registry: RegistryOverrides::default(),
            max_concurrent_uploads: 4,
            progress: None,
        }
    }
}

/// What a push did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PushReport {
    /// Where it went (normalized).
    pub reference: String,
    /// Digest the pushed tag now names (index or manifest).
    pub digest: Digest,
    /// Whether the whole index was pushed (else a single manifest).
    pub whole_index: bool,
    pub blobs_uploaded: usize,
    /// Blobs the registry already had.
    pub blobs_skipped: usize,
    pub bytes_uploaded: u64,
}

/// One document to PUT and the blobs it needs.
pub(crate) struct Doc {
    pub(crate) digest: Digest,
    pub(crate) body: Vec<u8>,
    pub(crate) media_type: String,
    pub(crate) blobs: Vec<(Digest, u64)>,
}

impl Store {
    /// Pushes image `image` to the registry and name it has.
    pub async fn push(&self, image: &str, opts: &PushOptions) -> Result<PushReport> {
        self.push_to(image, image, opts).await
    }

    /// Pushes image `image` as `dest` (a full reference; `host:port/repo:tag`).
    pub async fn push_to(&self, image: &str, dest: &str, opts: &PushOptions) -> Result<PushReport> {
        let rec = self.image(image).await?;
        let dest: Reference = dest.parse()?;
        let fail = |cause: String| Error::Push {
            image: dest.to_string(),
            cause: cause.replace(['\n', '\r'], " "),
        };
        // Blobs must not be collected while they are being read.
        let _guard = self.inner.gc_lock.read().await;
        let (children, top) = plan(&self.inner, &rec).await.map_err(&fail)?;
        if let Some(d) = dest.digest() {
            if d != &top.digest {
                return Err(fail(format!(
                    "destination digest {d} is not the image's {}",
                    top.digest
                )));
            }
        }
        let route = self.inner.registry.direct(dest.registry(), &opts.registry);
        let mut report = PushReport {
            reference: dest.to_string(),
            digest: top.digest.clone(),
            whole_index: !children.is_empty(),
            blobs_uploaded: 0,
            blobs_skipped: 0,
            bytes_uploaded: 0,
        };
        let mut seen = HashSet::new();
        // The first blob of each document is its config.
        let blobs: Vec<(Digest, u64, BlobKind)> = children
            .iter()
            .chain([&top])
            .flat_map(|d| {
                d.blobs.iter().enumerate().map(|(i, (b, n))| {
                    let kind = if i == 0 {
                        BlobKind::Config
                    } else {
                        BlobKind::Layer
                    };
                    (b.clone(), *n, kind)
                })
            })
            .filter(|(d, _, _)| seen.insert(d.clone()))
            .collect();
        upload_blobs(&self.inner, &route, &dest, blobs, opts, &mut report)
            .await
            .map_err(|e| fail(e.0))?;
        for c in &children {
            self.inner
                .registry
                .push_manifest(
                    &route,
                    &dest.with_digest(c.digest.clone()),
                    &c.body,
                    &c.media_type,
                )
                .await
                .map_err(|e| fail(format!("manifest {}: {e}", c.digest)))?;
        }
        self.inner
            .registry
            .push_manifest(&route, &dest, &top.body, &top.media_type)
            .await
            .map_err(|e| fail(format!("manifest {}: {e}", top.digest)))?;
        Ok(report)
    }
}

async fn read_doc(
    inner: &Inner,
    digest: &Digest,
) -> std::result::Result<(Vec<u8>, Document), String> {
    let body = inner
        .content
        .read(digest, MAX_DOCUMENT_SIZE)
        .await
        .map_err(|e| e.to_string())?;
    let doc = parse_document(&body, None).map_err(|e| format!("{digest}: {e}"))?;
    Ok((body, doc))
}

fn manifest_doc(digest: Digest, body: Vec<u8>, m: &Manifest, fallback_type: &str) -> Doc {
    Doc {
        digest,
        body,
        media_type: m
            .media_type
            .clone()
            .filter(|t| !t.is_empty())
            .unwrap_or_else(|| fallback_type.to_string()),
        blobs: [(m.config.digest.clone(), m.config.size)]
            .into_iter()
            .chain(m.layers.iter().map(|l| (l.digest.clone(), l.size)))
            .collect(),
    }
}

/// The documents to push: (platform manifests of the index, the document the tag names).
pub(crate) async fn plan(
    inner: &Inner,
    rec: &crate::metadata::ImageRecord,
) -> std::result::Result<(Vec<Doc>, Doc), String> {
    let (mbody, mdoc) = read_doc(inner, &rec.manifest).await?;
    let Document::Manifest(m) = mdoc else {
        return Err(format!("{} is an index, expected a manifest", rec.manifest));
    };
    let single = manifest_doc(rec.manifest.clone(), mbody, &m, &rec.media_type);
    let Some(index_digest) = &rec.index else {
        return Ok((Vec::new(), single));
    };
    match whole_index(inner, index_digest).await {
        Ok(Some((children, top))) => Ok((children, top)),
        Ok(None) => {
            tracing::info!(image = %rec.name, "not every platform of the index is stored: pushing the {} manifest only", rec.platform);
            Ok((Vec::new(), single))
        }
        Err(e) => Err(e),
    }
}

/// The index and all its manifests if every blob they need is in the store.
async fn whole_index(
    inner: &Inner,
    digest: &Digest,
) -> std::result::Result<Option<(Vec<Doc>, Doc)>, String> {
    let (body, doc) = read_doc(inner, digest).await?;
    let Document::Index(idx) = doc else {
        return Err(format!("{digest} is not an index"));
    };
    let mut children = Vec::new();
    for d in &idx.manifests {
        if !inner.content.exists(&d.digest).await {
            return Ok(None);
        }
        let (b, doc) = read_doc(inner, &d.digest).await?;
        let Document::Manifest(m) = doc else {
            return Err(format!("nested index {} is not supported", d.digest));
        };
        let c = manifest_doc(d.digest.clone(), b, &m, &d.media_type);
        for (blob, _) in &c.blobs {
            if !inner.content.exists(blob).await {
                return Ok(None);
            }
        }
        children.push(c);
    }
    Ok(Some((
        children,
        Doc {
            digest: digest.clone(),
            media_type: index_media_type(&idx),
            body,
            blobs: Vec::new(),
        },
    )))
}

fn index_media_type(idx: &Index) -> String {
    idx.media_type
        .clone()
        .filter(|t| !t.is_empty())
        .unwrap_or_else(|| OCI_INDEX.to_string())
}

async fn upload_blobs(
    inner: &Arc<Inner>,
    route: &Route,
    dest: &Reference,
    blobs: Vec<(Digest, u64, BlobKind)>,
    opts: &PushOptions,
    report: &mut PushReport,
) -> std::result::Result<(), RegistryError> {
    let sem = Arc::new(tokio::sync::Semaphore::new(
        opts.max_concurrent_uploads.max(1),
    ));
    let mut tasks = tokio::task::JoinSet::new();
    for (digest, size, kind) in blobs {
        let (inner, route, dest, sem) = (inner.clone(), route.clone(), dest.clone(), sem.clone());
        let progress = BlobProgress::new(
            opts.progress.as_ref(),
            &dest.to_string(),
            &digest,
            kind,
            size,
        );
        progress.send(ProgressPhase::Waiting, 0);
        tasks.spawn(async move {
            let _permit = sem
                .acquire()
                .await
                .map_err(|e| RegistryError(e.to_string()))?;
            let reg = &inner.registry;
            if reg.blob_exists(&route, &dest, &digest).await? {
                progress.send(ProgressPhase::Exists, size);
                progress.send(ProgressPhase::Done, size);
                return Ok::<_, RegistryError>(None);
            }
            let file = inner
                .content
                .open_blob(&digest)
                .await
                .map_err(|e| RegistryError(e.to_string()))?;
            let on_bytes = progress.clone().owned_callback(ProgressPhase::Uploading);
            reg.push_blob(&route, &dest, &digest, size, file, on_bytes)
                .await
                .map_err(|e| RegistryError(format!("blob {digest}: {e}")))?;
            progress.send(ProgressPhase::Done, size);
            Ok(Some(size))
        });
    }
    while let Some(res) = tasks.join_next().await {
        match res.map_err(|e| RegistryError(format!("upload task: {e}")))?? {
            Some(n) => {
                report.blobs_uploaded += 1;
                report.bytes_uploaded += n;
            }
            None => report.blobs_skipped += 1,
        }
    }
    Ok(())
}
