//! Seccomp filters from the OCI `linux.seccomp` profile, through libseccomp.
//!
//! OWNER: process-attributes helper. The runtime builds the filter in the parent before clone
//! (`Filter::build`), and the init loads it as the last step before execve (`Filter::load`).

use oci_spec::runtime::LinuxSeccomp;
use std::os::fd::OwnedFd;

#[derive(Debug, thiserror::Error)]
pub enum SeccompError {
    #[error("seccomp: {0}")]
    Other(String),
}

/// A compiled, not yet loaded, filter.
pub struct Filter {}

impl Filter {
    /// Compiles the profile. Fails with a message naming the bad syscall/arch/action.
    pub fn build(_profile: &LinuxSeccomp) -> Result<Filter, SeccompError> {
        todo!()
    }
    /// Whether the profile asks for a listener (an action SCMP_ACT_NOTIFY): then `load` returns
    /// the notify fd, which the runtime sends to `listenerPath`.
    pub fn wants_listener(&self) -> bool {
        todo!()
    }
    /// Loads the filter into the calling process (flags from the profile are honoured).
    pub fn load(self) -> Result<Option<OwnedFd>, SeccompError> {
        todo!()
    }
}

/// Sends the notify fd to the listener at `listener_path` (SCM_RIGHTS) with the container state
/// JSON as the message body, per the runtime spec's "seccomp listener" section.
pub fn send_listener_fd(
    _listener_path: &std::path::Path,
    _fd: &OwnedFd,
    _state_json: &[u8],
) -> Result<(), SeccompError> {
    todo!()
}
