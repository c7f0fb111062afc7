//! berth-runtime: an OCI runtime library.
//!
//! Terms used throughout:
//! - **bundle**: a directory with `config.json` (the OCI runtime spec) and a root filesystem.
//! - **init**: the container's first process. `create` clones it into new namespaces, it sets up
//!   the root filesystem and the process attributes, then waits until `start` releases it, and
//!   execs the user's program.
//! - **state dir**: `<root>/<id>/`, holding `state.json` (written atomically) and the socket
//!   that `start` uses to release the init.
//!
//! The runtime never re-executes itself and runs no async runtime: `create` clones the init
//! directly (clone3, with `CLONE_INTO_CGROUP` on cgroup v2) and talks to it over a typed
//! socketpair protocol (`sync`), which also carries the init's errors back to the caller.

pub mod apparmor;
pub mod capabilities;
pub mod cgroups;
pub mod container;
pub mod error;
pub mod hooks;
pub mod log;
pub mod namespaces;
pub mod process;
pub mod rlimits;
pub mod rootfs;
pub mod seccomp;
pub mod signal;
pub mod spec;
pub mod state;
pub mod sync;
pub mod tty;
pub mod utils;

pub use error::{Error, IoContext, Result, SysContext};
