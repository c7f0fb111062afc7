//! berth's image store: what turns `nginx` into a root filesystem a container can run on.
//!
//! ```text
//! Store::pull("127.0.0.1:5000/library/nginx:latest")
//!   registry   GET manifest (all four Accept types) -> index? select platform -> manifest
//!   content    blobs streamed to <root>/content/ingest/, sha256 checked, renamed to blobs/sha256/
//!   unpack     each layer (tar/gzip/zstd) into its own directory, whiteouts in overlayfs form,
//!              every path resolved inside the layer root (openat2 RESOLVE_IN_ROOT)
//!   snapshot   <root>/snapshots/<n>/fs keyed by chain ID; prepare() gives an overlay mount
//!   metadata   <root>/meta.db (redb): image name -> manifest, config, layers, chain IDs
//! ```
//!
//! Modules, bottom up: [`digest`], [`reference`], [`content`], [`manifest`], [`unpack`],
//! [`snapshot`], [`metadata`], [`registry`]; [`Store`] ties them together.

pub mod content;
pub mod digest;
mod error;
pub mod manifest;
pub mod metadata;
mod pull;
pub mod reference;
pub mod registry;
pub mod snapshot;
mod store;
pub mod unpack;

pub use digest::Digest;
pub use error::{Error, PullCause, Result};
pub use manifest::{Platform, RuntimeConfig};
pub use metadata::ImageRecord as Image;
pub use pull::{PullOptions, PullReport};
pub use reference::Reference;
pub use registry::RegistryConfig;
pub use snapshot::{unmount, MountSpec};
pub use store::{GcStats, Store, StoreOptions};
