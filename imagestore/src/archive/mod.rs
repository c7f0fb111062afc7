//! Import and export: OCI image layout directories, OCI archives (a layout in a tar) and
//! docker archives (`docker save`: `manifest.json` + `repositories` + blobs).
//!
//! ```text
//! OCI layout                          docker archive
//!   oci-layout                          manifest.json  [{Config, RepoTags, Layers}]
//!   index.json   manifests + names      repositories   {repo: {tag: id}}
//!   blobs/sha256/<hex>                  blobs/sha256/<hex> (or <id>/layer.tar, <id>.json)
//! ```
//!
//! **Import** reads a directory or a tar (optionally gzip- or zstd-compressed). Every blob is
//! streamed into the content store and its digest checked before it is visible (a blob named
//! by digest must have that digest); docker archives' files get their digest computed. Then
//! each named entry becomes an image exactly as a pull would: layers unpacked into snapshots,
//! name recorded last. Names come from the `io.containerd.image.name` annotation, else
//! `org.opencontainers.image.ref.name` (a full reference, or a tag appended to
//! [`ImportOptions::name`]), else [`ImportOptions::name`]; docker archives use `RepoTags`.
//! From an index every platform present in the layout is kept (so it can be exported or
//! pushed again as the same index); the host's (or [`ImportOptions::platform`]) is unpacked.
//! On failure no image is recorded and blobs nothing references are removed.
//!
//! **Export** writes everything to `<path>.tmp-<pid>` and renames it to `path` (which must not
//! exist) when complete. An image whose whole index is stored is exported as that index, so
//! digests survive a round trip. Docker archives keep layers compressed, as stored; `docker
//! load` and `skopeo` decompress them.

mod export;
mod import;

use std::path::{Component, Path};

use crate::digest::Digest;
use crate::error::{Error, Result};
use crate::manifest::Platform;
use crate::metadata::ImageRecord;
use crate::store::{blocking, gc_locked, Store};

const REF_NAME: &str = "org.opencontainers.image.ref.name";
const IMAGE_NAME: &str = "io.containerd.image.name";

/// The on-disk formats of [`Store::export`] (import detects them).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ArchiveFormat {
    /// An OCI image layout directory.
    OciDir,
    /// An OCI image layout in a tar file.
    OciArchive,
    /// A `docker save` tar file.
    DockerArchive,
}

impl std::str::FromStr for ArchiveFormat {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Self, String> {
        match s {
            "oci" | "oci-dir" => Ok(Self::OciDir),
            "oci-archive" => Ok(Self::OciArchive),
            "docker-archive" | "docker" => Ok(Self::DockerArchive),
            _ => Err(format!(
                "unknown format {s:?} (oci-dir, oci-archive, docker-archive)"
            )),
        }
    }
}

/// Options of [`Store::import`].
#[derive(Debug, Clone, Default)]
pub struct ImportOptions {
    /// Repository (`localhost/app`) for entries named only by a tag, or the full name for an
    /// archive whose single entry has no name.
    pub name: Option<String>,
    /// Platform to unpack from an index (default: the host's).
    pub platform: Platform,
}

/// A relative path from an archive, cleaned; `None` if it would leave the archive.
fn clean_rel(p: &str) -> Option<String> {
    let mut out = Vec::new();
    for c in Path::new(p).components() {
        match c {
            Component::Normal(s) => out.push(s.to_str()?),
            Component::CurDir => {}
            _ => return None,
        }
    }
    (!out.is_empty()).then(|| out.join("/"))
}

fn blob_path(d: &Digest) -> String {
    format!("blobs/sha256/{}", d.hex())
}

impl Store {
    /// Imports an OCI layout directory, OCI archive or docker archive (format detected).
    /// Returns the images recorded, in archive order.
    pub async fn import(
        &self,
        path: impl AsRef<Path>,
        opts: &ImportOptions,
    ) -> Result<Vec<ImageRecord>> {
        let path = path.as_ref().to_path_buf();
        let guard = self.inner.gc_lock.read().await;
        let result = import::import_inner(&self.inner, &path, opts).await;
        drop(guard);
        // Remove blobs nothing references (unused files of the archive, or all of a failed
        // import).
        let _g = self.inner.gc_lock.write().await;
        let inner = self.inner.clone();
        if let Ok(Err(e)) = blocking(move || gc_locked(&inner)).await {
            tracing::warn!(path = %path.display(), error = %e, "cleanup after import");
        }
        result.map_err(|cause| Error::Import {
            path: path.display().to_string(),
            cause: cause.replace(['\n', '\r'], " "),
        })
    }

    /// Exports `images` to `path` in `format`. `path` must not exist.
    pub async fn export(
        &self,
        images: &[&str],
        path: impl AsRef<Path>,
        format: ArchiveFormat,
    ) -> Result<()> {
        let path = path.as_ref().to_path_buf();
        let fail = |cause: String| Error::Export {
            path: path.display().to_string(),
            cause: cause.replace(['\n', '\r'], " "),
        };
        if images.is_empty() {
            return Err(fail("no image given".into()));
        }
        if path.symlink_metadata().is_ok() {
            return Err(fail("already exists".into()));
        }
        let mut recs = Vec::new();
        for name in images {
            recs.push(self.image(name).await?);
        }
        let _guard = self.inner.gc_lock.read().await;
        let mut plans = Vec::new();
        for rec in &recs {
            let (children, top) = crate::push::plan(&self.inner, rec)
                .await
                .map_err(|e| fail(format!("{}: {e}", rec.name)))?;
            plans.push((rec.clone(), children, top));
        }
        let inner = self.inner.clone();
        let p = path.clone();
        blocking(move || export::write_export(&inner, &p, format, &plans))
            .await?
            .map_err(fail)
    }
}
