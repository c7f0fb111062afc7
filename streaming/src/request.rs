//! What a streaming URL stands for, and why a request can fail: plain types, so that any
//! front door (the CRI, the Docker API) can fill them in from its own wire messages. The fields
//! are named as the CRI's `ExecRequest`, `AttachRequest` and `PortForwardRequest` name them.

use std::fmt;

/// Run `cmd` in a container with the client's stdio.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ExecRequest {
    pub container_id: String,
    pub cmd: Vec<String>,
    pub tty: bool,
    pub stdin: bool,
    pub stdout: bool,
    pub stderr: bool,
}

/// Connect the client to a container's own stdio.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct AttachRequest {
    pub container_id: String,
    pub tty: bool,
    pub stdin: bool,
    pub stdout: bool,
    pub stderr: bool,
}

/// Forward connections to ports on a pod's loopback (no ports: the client names them).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct PortForwardRequest {
    pub pod_sandbox_id: String,
    pub port: Vec<i32>,
}

/// The kind of a failure, as gRPC codes name them (the CRI answers with these; an HTTP front
/// door maps them to statuses).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Code {
    InvalidArgument,
    NotFound,
    FailedPrecondition,
    PermissionDenied,
    ResourceExhausted,
    Unavailable,
    Internal,
}

/// A failed request or backend call: its kind and a one-line message.
#[derive(Debug, Clone, PartialEq)]
pub struct Error {
    code: Code,
    message: String,
}

impl Error {
    pub fn new(code: Code, message: impl Into<String>) -> Error {
        Error {
            code,
            message: message.into(),
        }
    }
    pub fn invalid_argument(m: impl Into<String>) -> Error {
        Error::new(Code::InvalidArgument, m)
    }
    pub fn not_found(m: impl Into<String>) -> Error {
        Error::new(Code::NotFound, m)
    }
    pub fn failed_precondition(m: impl Into<String>) -> Error {
        Error::new(Code::FailedPrecondition, m)
    }
    pub fn permission_denied(m: impl Into<String>) -> Error {
        Error::new(Code::PermissionDenied, m)
    }
    pub fn resource_exhausted(m: impl Into<String>) -> Error {
        Error::new(Code::ResourceExhausted, m)
    }
    pub fn unavailable(m: impl Into<String>) -> Error {
        Error::new(Code::Unavailable, m)
    }
    pub fn internal(m: impl Into<String>) -> Error {
        Error::new(Code::Internal, m)
    }
    pub fn code(&self) -> Code {
        self.code
    }
    pub fn message(&self) -> &str {
        &self.message
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}: {}", self.code, self.message)
    }
}

impl std::error::Error for Error {}
