//! berth's own gRPC API, which the `berth` CLI speaks to berthd on its unix socket
//! (`proto/berth/v1/images.proto`, `containers.proto`): the generated messages, clients and
//! servers at the crate root, and [`wire`] helpers both ends share.
//!
//! The CLI depends on this crate alone; berthd implements the servers over its engine.

mod pb {
    #![allow(clippy::all, missing_docs)]
    tonic::include_proto!("berth.v1");
}
pub use pb::*;

pub mod wire;

/// Where berthd listens unless told otherwise.
pub const DEFAULT_SOCKET: &str = "/run/berth/berthd.sock";
