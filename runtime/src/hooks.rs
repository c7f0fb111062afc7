//! OCI hooks.
#[derive(Debug, thiserror::Error)]
pub enum HookError {
    #[error("hook: {0}")]
    Other(String),
}
