//! Manifests, indexes, image configs and platforms: the JSON documents of an image.
//!
//! Both the OCI and the Docker schema 2 forms are accepted; they differ only in media types.
//! Parsing is strict where it matters for safety (digests, known media types) and lenient about
//! fields berth does not use.

use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::digest::Digest;

pub const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
pub const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
pub const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
pub const DOCKER_MANIFEST_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";
pub const OCI_CONFIG: &str = "application/vnd.oci.image.config.v1+json";
pub const DOCKER_CONFIG: &str = "application/vnd.docker.container.image.v1+json";

/// The four manifest media types, sent in every manifest `Accept` header.
pub const MANIFEST_ACCEPT: [&str; 4] = [
    OCI_MANIFEST,
    OCI_INDEX,
    DOCKER_MANIFEST,
    DOCKER_MANIFEST_LIST,
];

/// Largest manifest or config accepted (containerd uses 4 MiB for manifests too).
pub const MAX_DOCUMENT_SIZE: u64 = 4 << 20;

/// Why a document cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum ManifestError {
    #[error("manifest is not valid JSON: {0}")]
    NotJson(String),
    #[error("unsupported manifest media type {0:?}")]
    UnknownMediaType(String),
    #[error("unsupported manifest schema version {0}")]
    SchemaVersion(u32),
    #[error("unsupported layer media type {0:?}")]
    UnknownLayerType(String),
    #[error("unsupported config media type {0:?}")]
    UnknownConfigType(String),
    #[error("no manifest for platform {wanted} in index (available: {available})")]
    NoPlatform { wanted: Platform, available: String },
    #[error("invalid platform {0:?}: expected os/arch[/variant]")]
    BadPlatform(String),
    #[error("image config is not valid: {0}")]
    BadConfig(String),
    #[error("image config lists {diff_ids} layer diff IDs but the manifest has {layers} layers")]
    LayerCount { diff_ids: usize, layers: usize },
}

/// A content descriptor: what a manifest or index points at.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Descriptor {
    #[serde(default)]
    pub media_type: String,
    pub digest: Digest,
    pub size: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub platform: Option<Platform>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub urls: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub annotations: Option<BTreeMap<String, String>>,
}

/// An OCI or Docker schema 2 image manifest.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Manifest {
    pub schema_version: u32,
    #[serde(default)]
    pub media_type: Option<String>,
    pub config: Descriptor,
    #[serde(default)]
    pub layers: Vec<Descriptor>,
}

/// An OCI image index or Docker manifest list.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Index {
    pub schema_version: u32,
    #[serde(default)]
    pub media_type: Option<String>,
    pub manifests: Vec<Descriptor>,
}

/// What a manifest document turned out to be.
#[derive(Debug, Clone)]
pub enum Document {
    Manifest(Manifest),
    Index(Index),
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Probe {
    #[serde(default)]
    schema_version: Option<u32>,
    #[serde(default)]
    media_type: Option<String>,
    #[serde(default)]
    manifests: Option<serde_json::Value>,
    #[serde(default)]
    config: Option<serde_json::Value>,
}

/// Parses a manifest or index. `content_type` is the registry's Content-Type when known; the
/// document's own `mediaType` wins when both are present (some registries answer
/// `application/json`), and an OCI document without `mediaType` is recognised by its shape.
pub fn parse_document(body: &[u8], content_type: Option<&str>) -> Result<Document, ManifestError> {
    let probe: Probe =
        serde_json::from_slice(body).map_err(|e| ManifestError::NotJson(one_line(&e)))?;
    if let Some(v) = probe.schema_version {
        if v != 2 {
            return Err(ManifestError::SchemaVersion(v));
        }
    }
    let header = content_type
        .map(|c| c.split(';').next().unwrap_or("").trim())
        .filter(|c| !c.is_empty() && *c != "application/json" && *c != "text/plain");
    let media_type = match (probe.media_type.as_deref(), header) {
        (Some(m), _) => m.to_string(),
        (None, Some(h)) => h.to_string(),
        (None, None) if probe.manifests.is_some() => OCI_INDEX.to_string(),
        (None, None) if probe.config.is_some() => OCI_MANIFEST.to_string(),
        (None, None) => return Err(ManifestError::UnknownMediaType(String::new())),
    };
    let bad = |e: serde_json::Error| ManifestError::NotJson(one_line(&e));
    match media_type.as_str() {
        OCI_MANIFEST | DOCKER_MANIFEST => {
            let m: Manifest = serde_json::from_slice(body).map_err(bad)?;
            for l in &m.layers {
                LayerCompression::from_media_type(&l.media_type)?;
            }
            match m.config.media_type.as_str() {
                OCI_CONFIG | DOCKER_CONFIG | "" => {}
                other => return Err(ManifestError::UnknownConfigType(other.to_string())),
            }
            Ok(Document::Manifest(m))
        }
        OCI_INDEX | DOCKER_MANIFEST_LIST => {
            Ok(Document::Index(serde_json::from_slice(body).map_err(bad)?))
        }
        other => Err(ManifestError::UnknownMediaType(other.to_string())),
    }
}

fn one_line(e: &dyn fmt::Display) -> String {
    e.to_string().replace('\n', " ")
}

/// How a layer blob is compressed, from its media type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LayerCompression {
    None,
    Gzip,
    Zstd,
}

impl LayerCompression {
    /// Maps a layer media type; anything that is not a (possibly compressed) tar is an error.
    pub fn from_media_type(mt: &str) -> Result<Self, ManifestError> {
        Ok(match mt {
            "application/vnd.oci.image.layer.v1.tar"
            | "application/vnd.oci.image.layer.nondistributable.v1.tar" => Self::None,
            "application/vnd.oci.image.layer.v1.tar+gzip"
            | "application/vnd.oci.image.layer.nondistributable.v1.tar+gzip"
            | "application/vnd.docker.image.rootfs.diff.tar.gzip"
            | "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip" => Self::Gzip,
            "application/vnd.oci.image.layer.v1.tar+zstd"
            | "application/vnd.oci.image.layer.nondistributable.v1.tar+zstd"
            | "application/vnd.docker.image.rootfs.diff.tar.zstd" => Self::Zstd,
            other => return Err(ManifestError::UnknownLayerType(other.to_string())),
        })
    }
}

/// A platform: `os/arch[/variant]`, e.g. `linux/amd64`, `linux/arm64/v8`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Platform {
    pub os: String,
    pub architecture: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub variant: Option<String>,
}

impl Platform {
    /// The platform of the running host, in OCI (GOARCH) names.
    pub fn host() -> Self {
        let (architecture, variant) = match std::env::consts::ARCH {
            "x86_64" => ("amd64", None),
            "aarch64" => ("arm64", Some("v8")),
            "arm" => ("arm", Some("v7")),
            "x86" => ("386", None),
            "powerpc64" => ("ppc64le", None),
            "s390x" => ("s390x", None),
            "riscv64" => ("riscv64", None),
            other => (other, None),
        };
        Platform {
            os: "linux".into(),
            architecture: architecture.into(),
            variant: variant.map(Into::into),
        }
    }

    fn normalized_variant(&self) -> Option<&str> {
        match (self.architecture.as_str(), self.variant.as_deref()) {
            // arm64 has one variant in practice; treat missing and v8 as the same.
            ("arm64", None | Some("v8")) => None,
            (_, Some("")) => None,
            (_, v) => v,
        }
    }

    /// Whether an index entry for `candidate` can run here. A wanted variant must match; a
    /// wanted platform without variant accepts any variant.
    pub fn matches(&self, candidate: &Platform) -> bool {
        self.os == candidate.os
            && self.architecture == candidate.architecture
            && (self.normalized_variant().is_none()
                || self.normalized_variant() == candidate.normalized_variant())
    }

    /// Picks the manifest for this platform from an index: the first matching entry, or the
    /// first with exactly the same variant when there are several.
    pub fn select<'a>(&self, index: &'a Index) -> Result<&'a Descriptor, ManifestError> {
        let candidates: Vec<&Descriptor> = index
            .manifests
            .iter()
            .filter(|d| matches!(d.media_type.as_str(), OCI_MANIFEST | DOCKER_MANIFEST | ""))
            .filter(|d| d.platform.as_ref().is_some_and(|p| self.matches(p)))
            .collect();
        if let Some(exact) = candidates
            .iter()
            .find(|d| d.platform.as_ref().map(|p| &p.variant) == Some(&self.variant))
        {
            return Ok(exact);
        }
        candidates.first().copied().ok_or_else(|| {
            let available: Vec<String> = index
                .manifests
                .iter()
                .filter_map(|d| d.platform.as_ref().map(|p| p.to_string()))
                .collect();
            ManifestError::NoPlatform {
                wanted: self.clone(),
                available: if available.is_empty() {
                    "none".into()
                } else {
                    available.join(", ")
                },
            }
        })
    }
}

impl Default for Platform {
    fn default() -> Self {
        Self::host()
    }
}

impl fmt::Display for Platform {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.os, self.architecture)?;
        if let Some(v) = &self.variant {
            write!(f, "/{v}")?;
        }
        Ok(())
    }
}

impl FromStr for Platform {
    type Err = ManifestError;
    fn from_str(s: &str) -> Result<Self, ManifestError> {
        let parts: Vec<&str> = s.split('/').collect();
        if parts.iter().any(|p| p.is_empty()) || !(2..=3).contains(&parts.len()) {
            return Err(ManifestError::BadPlatform(s.to_string()));
        }
        Ok(Platform {
            os: parts[0].to_string(),
            architecture: parts[1].to_string(),
            variant: parts.get(2).map(|v| v.to_string()),
        })
    }
}

/// The image config blob (the parts berth uses).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct ImageConfig {
    #[serde(default)]
    pub created: Option<String>,
    #[serde(default)]
    pub architecture: String,
    #[serde(default)]
    pub os: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub variant: Option<String>,
    #[serde(default)]
    pub config: Option<RuntimeConfig>,
    pub rootfs: RootFs,
    #[serde(default)]
    pub history: Vec<History>,
}

/// The `rootfs` section: uncompressed digests of the layers, base first.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct RootFs {
    #[serde(rename = "type", default)]
    pub kind: String,
    pub diff_ids: Vec<Digest>,
}

/// One `history` entry.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct History {
    #[serde(default)]
    pub created: Option<String>,
    #[serde(default)]
    pub created_by: Option<String>,
    #[serde(default)]
    pub comment: Option<String>,
    #[serde(default)]
    pub empty_layer: bool,
}

/// The defaults a container of this image runs with (the config's `config` section).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct RuntimeConfig {
    #[serde(rename = "User", default, skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
    #[serde(
        rename = "ExposedPorts",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub exposed_ports: Option<BTreeMap<String, serde_json::Value>>,
    #[serde(rename = "Env", default, skip_serializing_if = "Option::is_none")]
    pub env: Option<Vec<String>>,
    #[serde(
        rename = "Entrypoint",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub entrypoint: Option<Vec<String>>,
    #[serde(rename = "Cmd", default, skip_serializing_if = "Option::is_none")]
    pub cmd: Option<Vec<String>>,
    #[serde(rename = "Volumes", default, skip_serializing_if = "Option::is_none")]
    pub volumes: Option<BTreeMap<String, serde_json::Value>>,
    #[serde(
        rename = "WorkingDir",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub working_dir: Option<String>,
    #[serde(rename = "Labels", default, skip_serializing_if = "Option::is_none")]
    pub labels: Option<BTreeMap<String, String>>,
    #[serde(
        rename = "StopSignal",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub stop_signal: Option<String>,
}

impl ImageConfig {
    /// Parses a config blob and checks it against the manifest's layer count.
    pub fn parse(body: &[u8], layers: usize) -> Result<Self, ManifestError> {
        let c: ImageConfig =
            serde_json::from_slice(body).map_err(|e| ManifestError::BadConfig(one_line(&e)))?;
        if c.rootfs.diff_ids.len() != layers {
            return Err(ManifestError::LayerCount {
                diff_ids: c.rootfs.diff_ids.len(),
                layers,
            });
        }
        Ok(c)
    }

    /// The platform the config says the image is for.
    pub fn platform(&self) -> Platform {
        Platform {
            os: self.os.clone(),
            architecture: self.architecture.clone(),
            variant: self.variant.clone(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn d(n: u8) -> String {
        format!("sha256:{}", format!("{n:02x}").repeat(32))
    }

    fn index() -> Index {
        let body = format!(
            r#"{{"schemaVersion":2,"mediaType":"{OCI_INDEX}","manifests":[
            {{"mediaType":"{OCI_MANIFEST}","digest":"{}","size":1,"platform":{{"os":"linux","architecture":"amd64"}}}},
            {{"mediaType":"{OCI_MANIFEST}","digest":"{}","size":1,"platform":{{"os":"linux","architecture":"arm64","variant":"v8"}}}},
            {{"mediaType":"{OCI_MANIFEST}","digest":"{}","size":1,"platform":{{"os":"linux","architecture":"arm","variant":"v6"}}}},
            {{"mediaType":"{OCI_MANIFEST}","digest":"{}","size":1,"platform":{{"os":"linux","architecture":"arm","variant":"v7"}}}}]}}"#,
            d(1),
            d(2),
            d(3),
            d(4)
        );
        match parse_document(body.as_bytes(), None).unwrap() {
            Document::Index(i) => i,
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn platform_selection() {
        let i = index();
        let pick = |p: &str| {
            p.parse::<Platform>()
                .unwrap()
                .select(&i)
                .map(|d| d.digest.to_string())
        };
        assert_eq!(pick("linux/amd64").unwrap(), d(1));
        assert_eq!(pick("linux/arm64").unwrap(), d(2));
        assert_eq!(pick("linux/arm64/v8").unwrap(), d(2));
        assert_eq!(pick("linux/arm/v7").unwrap(), d(4));
        assert_eq!(pick("linux/arm").unwrap(), d(3));
        let e = pick("linux/s390x").unwrap_err().to_string();
        assert!(
            e.contains("linux/s390x") && e.contains("linux/arm64/v8"),
            "{e}"
        );
        assert!("linux".parse::<Platform>().is_err());
        assert!("linux//x".parse::<Platform>().is_err());
    }

    #[test]
    fn document_kinds() {
        let m = format!(
            r#"{{"schemaVersion":2,"config":{{"mediaType":"{DOCKER_CONFIG}","digest":"{}","size":3}},
            "layers":[{{"mediaType":"application/vnd.docker.image.rootfs.diff.tar.gzip","digest":"{}","size":4}}]}}"#,
            d(1),
            d(2)
        );
        assert!(matches!(
            parse_document(m.as_bytes(), Some(DOCKER_MANIFEST)),
            Ok(Document::Manifest(_))
        ));
        assert!(matches!(
            parse_document(m.as_bytes(), None),
            Ok(Document::Manifest(_))
        ));
        assert!(matches!(
            parse_document(b"<html>", None),
            Err(ManifestError::NotJson(_))
        ));
        let e = parse_document(
            br#"{"schemaVersion":2,"mediaType":"application/x-weird"}"#,
            None,
        )
        .unwrap_err();
        assert!(matches!(e, ManifestError::UnknownMediaType(_)), "{e}");
        let e = parse_document(br#"{"schemaVersion":1,"name":"x"}"#, None).unwrap_err();
        assert!(matches!(e, ManifestError::SchemaVersion(1)), "{e}");
        let weird_layer = m.replace("rootfs.diff.tar.gzip", "rootfs.diff.tar.lz4");
        assert!(matches!(
            parse_document(weird_layer.as_bytes(), None),
            Err(ManifestError::UnknownLayerType(_))
        ));
    }

    #[test]
    fn config_checks_layer_count() {
        let body = format!(
            r#"{{"architecture":"amd64","os":"linux","rootfs":{{"type":"layers","diff_ids":["{}"]}},
            "config":{{"Cmd":["sh"],"StopSignal":"SIGQUIT","ExposedPorts":{{"80/tcp":{{}}}}}}}}"#,
            d(9)
        );
        let c = ImageConfig::parse(body.as_bytes(), 1).unwrap();
        let rc = c.config.unwrap();
        assert_eq!(rc.cmd.unwrap(), vec!["sh"]);
        assert_eq!(rc.stop_signal.as_deref(), Some("SIGQUIT"));
        assert!(matches!(
            ImageConfig::parse(body.as_bytes(), 2),
            Err(ManifestError::LayerCount { .. })
        ));
    }
}
