//! The streaming server behind the CRI's Exec, Attach and PortForward (in progress): the
//! protocols the kubelet's streaming clients speak.

mod dictionary;
pub mod spdy;
pub mod ws;
