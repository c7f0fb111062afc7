//! The crate's error type: one variant per module error, plus the pull error that names the
//! image.

use crate::auth::AuthError;
use crate::config::ConfigError;
use crate::content::ContentError;
use crate::manifest::ManifestError;
use crate::metadata::MetadataError;
use crate::reference::ReferenceError;
use crate::registry::RegistryError;
use crate::snapshot::SnapshotError;
use crate::unpack::UnpackError;

/// Any error of the image store. Messages are one line and name the image, digest or path.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Reference(#[from] ReferenceError),
    #[error(transparent)]
    Content(#[from] ContentError),
    #[error(transparent)]
    Manifest(#[from] ManifestError),
    #[error(transparent)]
    Metadata(#[from] MetadataError),
    #[error(transparent)]
    Snapshot(#[from] SnapshotError),
    #[error(transparent)]
    Unpack(#[from] UnpackError),
    #[error("pull {image}: {cause}")]
    Pull { image: String, cause: PullCause },
    #[error("image {0:?} not found")]
    ImageNotFound(String),
    #[error("image ID prefix {prefix:?} is ambiguous: {} and {} (give more of it)", ids[0], ids[1])]
    AmbiguousId { prefix: String, ids: [String; 2] },
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error(transparent)]
    Auth(#[from] AuthError),
    #[error("login {registry}: {cause}")]
    Login { registry: String, cause: String },
    #[error("push {image}: {cause}")]
    Push { image: String, cause: String },
    #[error("import {path}: {cause}")]
    Import { path: String, cause: String },
    #[error("export {path}: {cause}")]
    Export { path: String, cause: String },
    #[error("{0}")]
    Internal(String),
}

/// Why a pull failed.
#[derive(Debug, thiserror::Error)]
pub enum PullCause {
    #[error("registry: {0}")]
    Registry(#[from] RegistryError),
    #[error(transparent)]
    Manifest(#[from] ManifestError),
    #[error(transparent)]
    Content(#[from] ContentError),
    #[error("layer {layer}: {source}")]
    Unpack { layer: String, source: UnpackError },
    #[error(transparent)]
    Snapshot(#[from] SnapshotError),
    #[error(transparent)]
    Metadata(#[from] MetadataError),
    #[error("image is for {found}, not {wanted}")]
    WrongPlatform { found: String, wanted: String },
    #[error("{0}")]
    Other(String),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
