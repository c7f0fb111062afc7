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
//! Modules, bottom up: [`digest`], [`reference`](mod@reference), [`content`], [`manifest`], [`unpack`],
//! [`snapshot`], [`metadata`], [`config`] and [`auth`] (registry settings, mirrors,
//! credentials), [`registry`], [`progress`]; [`Store`] ties them together and has one file
//! per verb: pull, push, login/logout, history, import/export.
//!
//! What berthd and the CLI call, all on [`Store`] (cheap to clone, safe from many tasks):
//!
//! ```text
//! open_with(root, StoreOptions { registry: RegistryConfig::load_default()? })
//! pull(ref, &PullOptions { platform, registry: RegistryOverrides, progress: Some(sink), .. })
//! push(name, &PushOptions) / push_to(name, dest, &PushOptions) -> PushReport
//! login(registry, user, password) / login_with(.., &RegistryOverrides) / logout(registry)
//! images() image(name) tag(src, dst) remove(name) gc() history(name) config(name)
//! import(path, &ImportOptions) -> Vec<Image>     export(&[names], path, ArchiveFormat)
//! rootfs_for(image, key) view_for(image, key) remove_rootfs(key)
//! ```

mod archive;
pub mod auth;
pub mod config;
pub mod content;
pub mod digest;
mod error;
pub mod find;
mod history;
mod login;
pub mod manifest;
pub mod metadata;
pub mod progress;
mod pull;
mod push;
pub mod reference;
pub mod registry;
pub mod snapshot;
mod store;
pub mod unpack;

pub use archive::{ArchiveFormat, ImportOptions};
pub use digest::Digest;
pub use error::{Error, PullCause, Result};
pub use find::Found;
pub use history::HistoryEntry;
pub use manifest::{Platform, RuntimeConfig};
pub use metadata::ImageRecord as Image;
pub use progress::{ProgressEvent, ProgressPhase, ProgressSink};
pub use pull::{PullOptions, PullReport};
pub use push::{PushOptions, PushReport};
pub use reference::Reference;
pub use registry::{RegistryConfig, RegistryOverrides};
pub use snapshot::{unmount, MountSpec};
pub use store::{GcStats, Store, StoreOptions};
