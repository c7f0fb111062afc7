//! berthd: berth's daemon. It owns the image store (one writer, many concurrent callers) and
//! serves berth's own gRPC API (`proto/berth/v1/images.proto`) on a unix socket; the container
//! service and the CRI join it on the same socket later.

pub use berth_api as api;
pub mod apparmor;
pub mod bundle;
pub mod container_svc;
pub mod containers;
pub mod containers_util;
pub mod cri_alpha;
pub mod cri_containers;
pub mod cri_service;
pub mod cri_spec;
pub mod cri_streaming;
pub mod daemon;
pub mod images;
pub mod network;
pub mod pause;
pub mod pods;
pub mod spec;
pub mod uds_authority;

pub use berth_api::DEFAULT_SOCKET;
