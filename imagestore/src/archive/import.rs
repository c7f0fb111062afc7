//! Import: a layout directory or a (compressed) tar streamed into the content store, then
//! each named entry materialized as a pull would.

use std::collections::HashMap;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde::Deserialize;

use super::{blob_path, clean_rel, ImportOptions, IMAGE_NAME, REF_NAME};
use crate::digest::Digest;
use crate::manifest::{
    parse_document, Descriptor, Document, Index, Manifest, MAX_DOCUMENT_SIZE, OCI_CONFIG,
    OCI_MANIFEST,
};
use crate::metadata::ImageRecord;
use crate::pull::{materialize, PullOptions, PullReport, Target};
use crate::reference::Reference;
use crate::store::{blocking, Inner};
use crate::unpack::{sniff, Compression};

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct DockerEntry {
    config: String,
    #[serde(default)]
    repo_tags: Option<Vec<String>>,
    layers: Vec<String>,
}

/// Where import reads from: a directory, or what a tar was turned into while streaming it.
enum Source {
    Dir(PathBuf),
    /// Small metadata files by path, and every other file already in the content store.
    Tar {
        small: HashMap<String, Vec<u8>>,
        blobs: HashMap<String, (Digest, u64)>,
    },
}

const SMALL_FILES: [&str; 4] = ["index.json", "oci-layout", "manifest.json", "repositories"];

impl Source {
    async fn small(&self, rel: &str) -> std::result::Result<Option<Vec<u8>>, String> {
        match self {
            Source::Tar { small, .. } => Ok(small.get(rel).cloned()),
            Source::Dir(dir) => {
                let p = dir.join(rel);
                match tokio::fs::metadata(&p).await {
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
                    Err(e) => Err(format!("{rel}: {e}")),
                    Ok(m) if m.len() > MAX_DOCUMENT_SIZE => Err(format!("{rel} is too large")),
                    Ok(_) => tokio::fs::read(&p)
                        .await
                        .map(Some)
                        .map_err(|e| format!("{rel}: {e}")),
                }
            }
        }
    }

    /// Makes sure blob `d` (of `size`, when known) is in the content store.
    async fn blob(
        &self,
        inner: &Inner,
        d: &Digest,
        size: Option<u64>,
    ) -> std::result::Result<(), String> {
        let present = inner.content.exists(d).await;
        match self {
            Source::Tar { blobs, .. } => {
                if !present && !blobs.contains_key(&blob_path(d)) {
                    return Err(format!("blob {d} is missing"));
                }
            }
            Source::Dir(dir) if !present => {
                let p = dir.join(blob_path(d));
                let mut f = tokio::fs::File::open(&p)
                    .await
                    .map_err(|e| format!("blob {d}: {e}"))?;
                inner
                    .content
                    .ingest(&mut f, d, size)
                    .await
                    .map_err(|e| format!("{}: {e}", blob_path(d)))?;
            }
            Source::Dir(_) => {}
        }
        if let Some(size) = size {
            let actual = inner.content.size(d).await.map_err(|e| e.to_string())?;
            if actual != size {
                return Err(format!(
                    "blob {d} is {actual} bytes, its descriptor says {size}"
                ));
            }
        }
        Ok(())
    }

    /// A file named by path (docker archives): into the content store, digest computed.
    async fn file(&self, inner: &Inner, rel: &str) -> std::result::Result<(Digest, u64), String> {
        let clean = clean_rel(rel).ok_or_else(|| format!("path {rel:?} leaves the archive"))?;
        match self {
            Source::Tar { blobs, .. } => blobs
                .get(&clean)
                .cloned()
                .ok_or_else(|| format!("{rel} is missing")),
            Source::Dir(dir) => {
                let p = dir.join(&clean);
                let meta = tokio::fs::symlink_metadata(&p)
                    .await
                    .map_err(|e| format!("{rel}: {e}"))?;
                if !meta.is_file() {
                    return Err(format!("{rel} is not a regular file"));
                }
                let mut f = tokio::fs::File::open(&p)
                    .await
                    .map_err(|e| format!("{rel}: {e}"))?;
                let mut w = inner.content.writer().await.map_err(|e| e.to_string())?;
                tokio::io::copy(&mut f, &mut w)
                    .await
                    .map_err(|e| format!("{rel}: {e}"))?;
                let n = w.written();
                let d = w.commit_computed(None).await.map_err(|e| e.to_string())?;
                Ok((d, n))
            }
        }
    }
}

/// Streams a tar (maybe compressed) into the content store: every regular file but the small
/// metadata ones becomes a blob (a file under `blobs/sha256/` must match its name).
fn scan_tar(inner: &Inner, path: &Path) -> std::result::Result<Source, String> {
    let mut f = std::fs::File::open(path).map_err(|e| e.to_string())?;
    let mut head = [0u8; 4];
    let n = f.read(&mut head).map_err(|e| e.to_string())?;
    let f = std::fs::File::open(path).map_err(|e| e.to_string())?;
    let reader: Box<dyn Read> = match sniff(&head[..n]) {
        Compression::Gzip => Box::new(flate2::read::MultiGzDecoder::new(f)),
        Compression::Zstd => Box::new(zstd::Decoder::new(f).map_err(|e| e.to_string())?),
        Compression::None => Box::new(f),
    };
    let rt = tokio::runtime::Handle::current();
    let mut ar = tar::Archive::new(std::io::BufReader::with_capacity(1 << 20, reader));
    let mut small = HashMap::new();
    let mut blobs = HashMap::new();
    let entries = ar.entries().map_err(|e| format!("not a tar: {e}"))?;
    for entry in entries {
        let mut entry = entry.map_err(|e| format!("bad tar: {e}"))?;
        if entry.header().entry_type() != tar::EntryType::Regular {
            continue; // directories; links and devices have no place in an image archive
        }
        let raw = entry.path().map_err(|e| format!("bad tar: {e}"))?;
        let Some(rel) = raw.to_str().and_then(clean_rel) else {
            return Err(format!("tar entry {:?} leaves the archive", raw.display()));
        };
        if SMALL_FILES.contains(&rel.as_str()) {
            if entry.size() > MAX_DOCUMENT_SIZE {
                return Err(format!("{rel} is too large"));
            }
            let mut buf = Vec::new();
            entry
                .read_to_end(&mut buf)
                .map_err(|e| format!("{rel}: {e}"))?;
            small.insert(rel, buf);
            continue;
        }
        let size = entry.size();
        let named: Option<Digest> = rel
            .strip_prefix("blobs/sha256/")
            .and_then(|h| format!("sha256:{h}").parse().ok());
        if let Some(d) = &named {
            if rt.block_on(inner.content.exists(d)) {
                blobs.insert(rel, (d.clone(), size));
                continue;
            }
        }
        let mut w = rt
            .block_on(inner.content.writer())
            .map_err(|e| e.to_string())?;
        let mut buf = vec![0u8; 1 << 20];
        loop {
            let n = entry.read(&mut buf).map_err(|e| format!("{rel}: {e}"))?;
            if n == 0 {
                break;
            }
            rt.block_on(tokio::io::AsyncWriteExt::write_all(&mut w, &buf[..n]))
                .map_err(|e| format!("{rel}: {e}"))?;
        }
        let d = match &named {
            Some(d) => rt.block_on(w.commit(d, Some(size))).map(|()| d.clone()),
            None => rt.block_on(w.commit_computed(Some(size))),
        }
        .map_err(|e| format!("{rel}: {e}"))?;
        blobs.insert(rel, (d, size));
    }
    Ok(Source::Tar { small, blobs })
}

fn json<T: for<'de> Deserialize<'de>>(rel: &str, body: &[u8]) -> std::result::Result<T, String> {
    serde_json::from_slice(body).map_err(|e| format!("{rel} is not valid: {e}"))
}

/// The name an index.json entry gets.
fn entry_name(
    d: &Descriptor,
    opts: &ImportOptions,
    entries: usize,
) -> std::result::Result<Reference, String> {
    let ann = d.annotations.as_ref();
    let get = |k: &str| ann.and_then(|a| a.get(k)).filter(|v| !v.is_empty());
    let parse = |s: &str| {
        s.parse::<Reference>()
            .map_err(|e| format!("entry {}: {e}", d.digest))
    };
    if let Some(n) = get(IMAGE_NAME) {
        return parse(n);
    }
    match (get(REF_NAME), &opts.name) {
        (Some(r), _) if r.contains('/') => parse(r),
        (Some(tag), Some(repo)) => {
            let base: Reference = parse(repo)?;
            parse(&format!("{}:{tag}", base.name()))
        }
        (None, Some(name)) if entries == 1 => parse(name),
        (Some(tag), None) => Err(format!(
            "entry {} is named only by tag {tag:?}: give a repository name",
            d.digest
        )),
        _ => Err(format!("entry {} has no name: give one", d.digest)),
    }
}

pub(super) async fn import_inner(
    inner: &Arc<Inner>,
    path: &Path,
    opts: &ImportOptions,
) -> std::result::Result<Vec<ImageRecord>, String> {
    let meta = tokio::fs::metadata(path).await.map_err(|e| e.to_string())?;
    let source = if meta.is_dir() {
        Source::Dir(path.to_path_buf())
    } else {
        let (i, p) = (inner.clone(), path.to_path_buf());
        blocking(move || scan_tar(&i, &p))
            .await
            .map_err(|e| e.to_string())??
    };
    if let Some(body) = source.small("index.json").await? {
        import_oci(inner, &source, &body, opts).await
    } else if let Some(body) = source.small("manifest.json").await? {
        import_docker(inner, &source, &body, opts).await
    } else {
        Err("neither index.json (OCI layout) nor manifest.json (docker archive) found".into())
    }
}

async fn read_doc(
    inner: &Inner,
    source: &Source,
    d: &Descriptor,
) -> std::result::Result<(Vec<u8>, Document), String> {
    source.blob(inner, &d.digest, Some(d.size)).await?;
    let body = inner
        .content
        .read(&d.digest, MAX_DOCUMENT_SIZE)
        .await
        .map_err(|e| e.to_string())?;
    let doc =
        parse_document(&body, Some(&d.media_type)).map_err(|e| format!("{}: {e}", d.digest))?;
    Ok((body, doc))
}

/// Copies a manifest's config and layers into the store; returns their digests.
async fn manifest_blobs(
    inner: &Inner,
    source: &Source,
    m: &Manifest,
) -> std::result::Result<Vec<Digest>, String> {
    let mut out = Vec::new();
    for d in std::iter::once(&m.config).chain(&m.layers) {
        source.blob(inner, &d.digest, Some(d.size)).await?;
        out.push(d.digest.clone());
    }
    Ok(out)
}

async fn import_oci(
    inner: &Arc<Inner>,
    source: &Source,
    index_body: &[u8],
    opts: &ImportOptions,
) -> std::result::Result<Vec<ImageRecord>, String> {
    let index: Index = json("index.json", index_body)?;
    if index.manifests.is_empty() {
        return Err("index.json lists no images".into());
    }
    let pull_opts = PullOptions {
        platform: opts.platform.clone(),
        ..Default::default()
    };
    let mut out = Vec::new();
    for entry in &index.manifests {
        let name = entry_name(entry, opts, index.manifests.len())?;
        let (_, doc) = read_doc(inner, source, entry).await?;
        let target = match doc {
            Document::Manifest(m) => {
                manifest_blobs(inner, source, &m).await?;
                Target {
                    index: None,
                    manifest_digest: entry.digest.clone(),
                    media_type: m.media_type.clone().unwrap_or(entry.media_type.clone()),
                    manifest: m,
                    other_platforms: Vec::new(),
                }
            }
            Document::Index(idx) => {
                let chosen = opts
                    .platform
                    .select(&idx)
                    .map_err(|e| format!("{name}: {e}"))?
                    .clone();
                let mut chosen_manifest = None;
                let mut others = Vec::new();
                for d in &idx.manifests {
                    let (_, doc) = match read_doc(inner, source, d).await {
                        Ok(v) => v,
                        // A layout may hold only some platforms of an index.
                        Err(_) if d.digest != chosen.digest => continue,
                        Err(e) => return Err(e),
                    };
                    let Document::Manifest(m) = doc else {
                        return Err(format!("nested index {} is not supported", d.digest));
                    };
                    if d.digest == chosen.digest {
                        chosen_manifest = Some(m);
                        continue;
                    }
                    match manifest_blobs(inner, source, &m).await {
                        Ok(blobs) => {
                            others.push(d.digest.clone());
                            others.extend(blobs);
                        }
                        Err(e) => {
                            tracing::debug!(manifest = %d.digest, error = %e, "platform not in layout")
                        }
                    }
                }
                let m = chosen_manifest
                    .ok_or_else(|| format!("manifest {} is missing", chosen.digest))?;
                manifest_blobs(inner, source, &m).await?;
                Target {
                    index: Some(entry.digest.clone()),
                    manifest_digest: chosen.digest.clone(),
                    media_type: m.media_type.clone().unwrap_or(chosen.media_type.clone()),
                    manifest: m,
                    other_platforms: others,
                }
            }
        };
        let rec = materialize(
            inner,
            None,
            &name,
            target,
            &pull_opts,
            false,
            &mut PullReport::default(),
        )
        .await
        .map_err(|e| format!("{name}: {e}"))?;
        out.push(rec);
    }
    Ok(out)
}

async fn import_docker(
    inner: &Arc<Inner>,
    source: &Source,
    body: &[u8],
    opts: &ImportOptions,
) -> std::result::Result<Vec<ImageRecord>, String> {
    let entries: Vec<DockerEntry> = json("manifest.json", body)?;
    if entries.is_empty() {
        return Err("manifest.json lists no images".into());
    }
    let pull_opts = PullOptions {
        platform: opts.platform.clone(),
        ..Default::default()
    };
    let mut out = Vec::new();
    for e in &entries {
        let (cfg, cfg_size) = source.file(inner, &e.config).await?;
        let mut layers = Vec::new();
        for l in &e.layers {
            let (d, size) = source.file(inner, l).await?;
            let mut head = [0u8; 4];
            let n = {
                let mut f = inner
                    .content
                    .open_blob_sync(&d)
                    .map_err(|e| e.to_string())?;
                f.read(&mut head).map_err(|e| format!("{l}: {e}"))?
            };
            let media_type = match sniff(&head[..n]) {
                Compression::Gzip => "application/vnd.oci.image.layer.v1.tar+gzip",
                Compression::Zstd => "application/vnd.oci.image.layer.v1.tar+zstd",
                Compression::None => "application/vnd.oci.image.layer.v1.tar",
            };
            layers.push(serde_json::json!({"mediaType": media_type, "digest": d, "size": size}));
        }
        let manifest = serde_json::json!({
            "schemaVersion": 2,
            "mediaType": OCI_MANIFEST,
            "config": {"mediaType": OCI_CONFIG, "digest": cfg, "size": cfg_size},
            "layers": layers,
        });
        let mbody = serde_json::to_vec(&manifest).map_err(|e| e.to_string())?;
        let mdigest = Digest::of(&mbody);
        inner
            .content
            .write_all(&mbody, &mdigest)
            .await
            .map_err(|e| e.to_string())?;
        let Document::Manifest(m) = parse_document(&mbody, None).map_err(|e| e.to_string())? else {
            unreachable!("built a manifest");
        };
        let mut names: Vec<Reference> = Vec::new();
        for t in e.repo_tags.iter().flatten() {
            names.push(t.parse().map_err(|e| format!("RepoTags: {e}"))?);
        }
        if names.is_empty() {
            match (&opts.name, entries.len()) {
                (Some(n), 1) => names.push(n.parse().map_err(|e| format!("{e}"))?),
                _ => {
                    return Err(format!(
                        "image with config {} has no RepoTags: give a name",
                        e.config
                    ))
                }
            }
        }
        for name in names {
            let target = Target {
                index: None,
                manifest_digest: mdigest.clone(),
                media_type: OCI_MANIFEST.into(),
                manifest: m.clone(),
                other_platforms: Vec::new(),
            };
            let rec = materialize(
                inner,
                None,
                &name,
                target,
                &pull_opts,
                false,
                &mut PullReport::default(),
            )
            .await
            .map_err(|e| format!("{name}: {e}"))?;
            out.push(rec);
        }
    }
    Ok(out)
}
