//! Export: a layout directory or a tar written under a temporary name, renamed when done.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use super::{blob_path, ArchiveFormat, IMAGE_NAME, REF_NAME};
use crate::digest::Digest;
use crate::manifest::OCI_INDEX;
use crate::metadata::ImageRecord;
use crate::reference::Reference;
use crate::store::Inner;

/// Where export writes: a directory tree or a tar stream, with the same relative paths.
enum Sink {
    Dir(PathBuf),
    Tar(tar::Builder<std::io::BufWriter<std::fs::File>>),
}

impl Sink {
    fn header(size: u64) -> tar::Header {
        let mut h = tar::Header::new_ustar();
        h.set_size(size);
        h.set_mode(0o644);
        h.set_mtime(0);
        h.set_uid(0);
        h.set_gid(0);
        h.set_entry_type(tar::EntryType::Regular);
        h
    }

    fn bytes(&mut self, rel: &str, data: &[u8]) -> std::io::Result<()> {
        match self {
            Sink::Dir(d) => {
                let p = d.join(rel);
                std::fs::create_dir_all(p.parent().unwrap_or(d))?;
                std::fs::write(p, data)
            }
            Sink::Tar(t) => t.append_data(&mut Self::header(data.len() as u64), rel, data),
        }
    }

    fn file(&mut self, rel: &str, src: &Path) -> std::io::Result<()> {
        match self {
            Sink::Dir(d) => {
                let p = d.join(rel);
                std::fs::create_dir_all(p.parent().unwrap_or(d))?;
                std::fs::copy(src, p).map(drop)
            }
            Sink::Tar(t) => {
                let f = std::fs::File::open(src)?;
                let len = f.metadata()?.len();
                t.append_data(&mut Self::header(len), rel, f)
            }
        }
    }

    fn finish(self) -> std::io::Result<()> {
        match self {
            Sink::Dir(_) => Ok(()),
            Sink::Tar(t) => {
                let w = t.into_inner()?;
                w.into_inner().map_err(|e| e.into_error())?.sync_all()
            }
        }
    }
}

pub(super) type Plan = (ImageRecord, Vec<crate::push::Doc>, crate::push::Doc);

pub(super) fn write_export(
    inner: &Inner,
    path: &Path,
    format: ArchiveFormat,
    plans: &[Plan],
) -> std::result::Result<(), String> {
    let tmp = {
        let mut s = path.as_os_str().to_os_string();
        s.push(format!(".tmp-{}", std::process::id()));
        PathBuf::from(s)
    };
    let _ = crate::unpack::remove_tree(&tmp);
    let res = (|| -> std::io::Result<()> {
        let mut sink = match format {
            ArchiveFormat::OciDir => {
                std::fs::create_dir(&tmp)?;
                Sink::Dir(tmp.clone())
            }
            _ => {
                let f = std::fs::File::create(&tmp)?;
                Sink::Tar(tar::Builder::new(std::io::BufWriter::with_capacity(
                    1 << 20,
                    f,
                )))
            }
        };
        let mut written = std::collections::HashSet::new();
        let mut blob = |sink: &mut Sink, d: &Digest| -> std::io::Result<()> {
            if written.insert(d.clone()) {
                sink.file(&blob_path(d), &inner.content.path(d))?;
            }
            Ok(())
        };
        match format {
            ArchiveFormat::OciDir | ArchiveFormat::OciArchive => {
                let mut manifests = Vec::new();
                for (rec, children, top) in plans {
                    for doc in children.iter().chain([top]) {
                        for (d, _) in &doc.blobs {
                            blob(&mut sink, d)?;
                        }
                        blob(&mut sink, &doc.digest)?;
                    }
                    let r: Reference = rec.name.parse().map_err(std::io::Error::other)?;
                    let mut ann = BTreeMap::new();
                    ann.insert(IMAGE_NAME.to_string(), rec.name.clone());
                    if let Some(t) = r.tag() {
                        ann.insert(REF_NAME.to_string(), t.to_string());
                    }
                    manifests.push(serde_json::json!({
                        "mediaType": top.media_type,
                        "digest": top.digest,
                        "size": top.body.len(),
                        "annotations": ann,
                    }));
                }
                let index = serde_json::json!({
                    "schemaVersion": 2,
                    "mediaType": OCI_INDEX,
                    "manifests": manifests,
                });
                sink.bytes("oci-layout", br#"{"imageLayoutVersion":"1.0.0"}"#)?;
                sink.bytes("index.json", &serde_json::to_vec(&index)?)?;
            }
            ArchiveFormat::DockerArchive => {
                let mut entries = Vec::new();
                let mut repos: BTreeMap<String, BTreeMap<String, String>> = BTreeMap::new();
                for (rec, _, _) in plans {
                    blob(&mut sink, &rec.config)?;
                    for l in &rec.layers {
                        blob(&mut sink, l)?;
                    }
                    let r: Reference = rec.name.parse().map_err(std::io::Error::other)?;
                    let tags: Vec<String> = r
                        .tag()
                        .map(|t| format!("{}:{t}", r.name()))
                        .into_iter()
                        .collect();
                    if let (Some(t), Some(top)) = (r.tag(), rec.layers.last()) {
                        repos
                            .entry(r.name())
                            .or_default()
                            .insert(t.to_string(), top.hex().to_string());
                    }
                    entries.push(serde_json::json!({
                        "Config": blob_path(&rec.config),
                        "RepoTags": tags,
                        "Layers": rec.layers.iter().map(blob_path).collect::<Vec<_>>(),
                    }));
                }
                sink.bytes("manifest.json", &serde_json::to_vec(&entries)?)?;
                sink.bytes("repositories", &serde_json::to_vec(&repos)?)?;
            }
        }
        sink.finish()?;
        if format == ArchiveFormat::OciDir {
            // Make the tree durable before it gets its name.
            let f = std::fs::File::open(&tmp)?;
            rustix::fs::syncfs(&f)?;
        }
        std::fs::rename(&tmp, path)?;
        if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
            std::fs::File::open(parent)?.sync_all()?;
        }
        Ok(())
    })();
    if let Err(e) = res {
        let _ = crate::unpack::remove_tree(&tmp);
        let _ = std::fs::remove_file(&tmp);
        return Err(e.to_string());
    }
    Ok(())
}
