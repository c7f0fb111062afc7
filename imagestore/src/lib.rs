//! berth image store. (module docs below are filled in as modules land)

pub mod content;
pub mod digest;
pub mod manifest;
pub mod reference;
pub mod unpack;

pub use digest::Digest;
pub use reference::Reference;
