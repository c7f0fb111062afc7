//! The crate's error type: one enum per module, gathered here.

use std::path::PathBuf;

/// Every error the runtime library returns. Messages are one line and name the id, path or
/// field involved, because the CLI prints them as they are.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Cgroup(#[from] crate::cgroups::CgroupError),
    #[error(transparent)]
    Rootfs(#[from] crate::rootfs::RootfsError),
    #[error(transparent)]
    Seccomp(#[from] crate::seccomp::SeccompError),
    #[error(transparent)]
    Spec(#[from] crate::spec::SpecError),
    #[error(transparent)]
    Hook(#[from] crate::hooks::HookError),
    #[error("container {0:?} does not exist")]
    NotFound(String),
    #[error("container {0:?} already exists")]
    AlreadyExists(String),
    #[error("invalid container id {0:?}: {1}")]
    InvalidId(String, &'static str),
    /// For a stopped container the message starts with runc's "container not running", which
    /// callers match (containerd takes it as "process already finished" after a kill).
    #[error("{}container {id:?} is {status}: {op} needs it {expected}", if status == "stopped" { "container not running: " } else { "" })]
    BadState {
        id: String,
        status: String,
        op: &'static str,
        expected: &'static str,
    },
    #[error("{0}")]
    Other(String),
    #[error("{context}: {source}")]
    Sys { context: String, source: nix::Error },
    #[error("{context} {path:?}: {source}")]
    Io {
        context: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Adds context to a `nix` result: `mount(...).ctx(|| format!("mount {dst:?}"))`.
pub trait SysContext<T> {
    fn ctx<F: FnOnce() -> String>(self, f: F) -> Result<T>;
}

impl<T> SysContext<T> for nix::Result<T> {
    fn ctx<F: FnOnce() -> String>(self, f: F) -> Result<T> {
        self.map_err(|source| Error::Sys {
            context: f(),
            source,
        })
    }
}

/// Adds context to an `std::io` result, naming the path.
pub trait IoContext<T> {
    fn io_ctx(self, context: &'static str, path: impl Into<PathBuf>) -> Result<T>;
}

impl<T> IoContext<T> for std::io::Result<T> {
    fn io_ctx(self, context: &'static str, path: impl Into<PathBuf>) -> Result<T> {
        self.map_err(|source| Error::Io {
            context,
            path: path.into(),
            source,
        })
    }
}
