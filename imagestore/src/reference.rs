//! Image references, parsed and normalized the way docker does.
//!
//! ```text
//! nginx                          -> docker.io/library/nginx:latest
//! user/app:1.2                   -> docker.io/user/app:1.2
//! 127.0.0.1:5000/library/nginx   -> 127.0.0.1:5000/library/nginx:latest
//! repo@sha256:<hex>              -> docker.io/library/repo@sha256:<hex>   (no tag)
//! repo:tag@sha256:<hex>          -> both kept; the digest is what is pulled
//! ```
//!
//! The first path component is a registry host when it contains `.` or `:`, is `localhost`,
//! or contains upper-case letters (as in docker's `splitDockerDomain`); otherwise the
//! registry is `docker.io`, and a one-component repository on docker.io gets `library/`.

use std::fmt;
use std::str::FromStr;

use crate::digest::{Digest, DigestError};

/// The registry that short names resolve to.
pub const DEFAULT_REGISTRY: &str = "docker.io";
/// The tag used when a reference has neither tag nor digest.
pub const DEFAULT_TAG: &str = "latest";
const MAX_NAME_LEN: usize = 255;
const MAX_TAG_LEN: usize = 128;

/// Why a string is not an image reference.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ReferenceError {
    #[error("invalid reference {0:?}: empty")]
    Empty(String),
    #[error("invalid reference {reference:?}: repository name must be lowercase")]
    Uppercase { reference: String },
    #[error("invalid reference {reference:?}: bad registry host {host:?}")]
    BadHost { reference: String, host: String },
    #[error("invalid reference {reference:?}: bad path component {component:?}")]
    BadComponent {
        reference: String,
        component: String,
    },
    #[error("invalid reference {reference:?}: bad tag {tag:?}")]
    BadTag { reference: String, tag: String },
    #[error("invalid reference {reference:?}: {source}")]
    BadDigest {
        reference: String,
        source: DigestError,
    },
    #[error("invalid reference {0:?}: repository name longer than 255 characters")]
    TooLong(String),
}

/// A fully qualified image reference.
#[derive(Clone, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Reference {
    registry: String,
    repository: String,
    tag: Option<String>,
    digest: Option<Digest>,
}

impl Reference {
    /// Registry host, with port if any (`docker.io`, `127.0.0.1:5000`).
    pub fn registry(&self) -> &str {
        &self.registry
    }
    /// Repository path inside the registry (`library/nginx`).
    pub fn repository(&self) -> &str {
        &self.repository
    }
    /// The tag, if any. A reference parsed without tag or digest has `latest`.
    pub fn tag(&self) -> Option<&str> {
        self.tag.as_deref()
    }
    /// The pinned digest, if any.
    pub fn digest(&self) -> Option<&Digest> {
        self.digest.as_ref()
    }
    /// `registry/repository`, the name without tag or digest.
    pub fn name(&self) -> String {
        format!("{}/{}", self.registry, self.repository)
    }
    /// Host part of the registry, without port (`127.0.0.1`, `[::1]`, `docker.io`).
    pub fn host(&self) -> &str {
        split_port(&self.registry).0
    }
    /// The same repository pinned to `digest` (tag dropped), e.g. a platform manifest of an index.
    pub fn with_digest(&self, digest: Digest) -> Reference {
        Reference {
            tag: None,
            digest: Some(digest),
            ..self.clone()
        }
    }
    /// The reference in the form oci-client takes.
    pub(crate) fn to_oci(&self) -> oci_client::Reference {
        match (&self.tag, &self.digest) {
            (_, Some(d)) => oci_client::Reference::with_digest(
                self.registry.clone(),
                self.repository.clone(),
                d.to_string(),
            ),
            (Some(t), None) => oci_client::Reference::with_tag(
                self.registry.clone(),
                self.repository.clone(),
                t.clone(),
            ),
            (None, None) => oci_client::Reference::with_tag(
                self.registry.clone(),
                self.repository.clone(),
                DEFAULT_TAG.into(),
            ),
        }
    }
}

/// Host part of a `host[:port]` registry name.
pub(crate) fn split_host(registry: &str) -> &str {
    split_port(registry).0
}

fn split_port(registry: &str) -> (&str, Option<&str>) {
    if let Some(rest) = registry.strip_prefix('[') {
        // [v6addr]:port
        if let Some(end) = rest.find(']') {
            let host = &registry[..end + 2];
            let port = registry[end + 2..].strip_prefix(':');
            return (host, port);
        }
        return (registry, None);
    }
    match registry.rsplit_once(':') {
        Some((h, p)) => (h, Some(p)),
        None => (registry, None),
    }
}

fn valid_host(host: &str) -> bool {
    let (h, port) = split_port(host);
    if let Some(p) = port {
        if p.is_empty() || !p.bytes().all(|b| b.is_ascii_digit()) || p.len() > 5 {
            return false;
        }
    }
    if let Some(inner) = h.strip_prefix('[') {
        let Some(inner) = inner.strip_suffix(']') else {
            return false;
        };
        return inner.parse::<std::net::Ipv6Addr>().is_ok();
    }
    !h.is_empty()
        && h.split('.').all(|label| {
            !label.is_empty()
                && label
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-')
                && !label.starts_with('-')
                && !label.ends_with('-')
        })
}

/// A path component: `[a-z0-9]+((\.|_|__|-+)[a-z0-9]+)*`.
fn valid_component(c: &str) -> bool {
    let b = c.as_bytes();
    if b.is_empty() || !b[0].is_ascii_alphanumeric() || !b[b.len() - 1].is_ascii_alphanumeric() {
        return false;
    }
    let mut i = 0;
    while i < b.len() {
        let ch = b[i];
        if ch.is_ascii_lowercase() || ch.is_ascii_digit() {
            i += 1;
            continue;
        }
        // A separator run, which must be followed by an alphanumeric.
        let start = i;
        while i < b.len() && matches!(b[i], b'.' | b'_' | b'-') {
            i += 1;
        }
        let sep = &c[start..i];
        let ok = sep == "." || sep == "_" || sep == "__" || sep.bytes().all(|x| x == b'-');
        if !ok || sep.is_empty() {
            return false;
        }
    }
    true
}

fn valid_tag(t: &str) -> bool {
    let b = t.as_bytes();
    !b.is_empty()
        && b.len() <= MAX_TAG_LEN
        && (b[0].is_ascii_alphanumeric() || b[0] == b'_')
        && b.iter()
            .all(|&c| c.is_ascii_alphanumeric() || b"_.-".contains(&c))
}

impl FromStr for Reference {
    type Err = ReferenceError;

    fn from_str(s: &str) -> Result<Self, ReferenceError> {
        let reference = s.to_string();
        if s.is_empty() {
            return Err(ReferenceError::Empty(reference));
        }
        let (rest, digest) = match s.split_once('@') {
            Some((r, d)) => {
                let d = d
                    .parse::<Digest>()
                    .map_err(|source| ReferenceError::BadDigest {
                        reference: reference.clone(),
                        source,
                    })?;
                (r, Some(d))
            }
            None => (s, None),
        };
        // A tag is after the last ':' that comes after the last '/'.
        let last_slash = rest.rfind('/').map_or(0, |i| i + 1);
        let (name, tag) = match rest[last_slash..].rfind(':') {
            Some(i) => (&rest[..last_slash + i], Some(&rest[last_slash + i + 1..])),
            None => (rest, None),
        };
        if let Some(t) = tag {
            if !valid_tag(t) {
                return Err(ReferenceError::BadTag {
                    reference,
                    tag: t.to_string(),
                });
            }
        }
        if name.is_empty() {
            return Err(ReferenceError::Empty(reference));
        }
        let (mut registry, mut repository) = match name.split_once('/') {
            Some((first, remainder))
                if first.contains(['.', ':'])
                    || first == "localhost"
                    || first.bytes().any(|b| b.is_ascii_uppercase()) =>
            {
                (first.to_string(), remainder.to_string())
            }
            _ => (DEFAULT_REGISTRY.to_string(), name.to_string()),
        };
        if !valid_host(&registry) {
            return Err(ReferenceError::BadHost {
                reference,
                host: registry,
            });
        }
        if registry == "index.docker.io" {
            registry = DEFAULT_REGISTRY.to_string();
        }
        if repository.bytes().any(|b| b.is_ascii_uppercase()) {
            return Err(ReferenceError::Uppercase { reference });
        }
        for c in repository.split('/') {
            if !valid_component(c) {
                return Err(ReferenceError::BadComponent {
                    reference,
                    component: c.to_string(),
                });
            }
        }
        if registry == DEFAULT_REGISTRY && !repository.contains('/') {
            repository = format!("library/{repository}");
        }
        if registry.len() + 1 + repository.len() > MAX_NAME_LEN {
            return Err(ReferenceError::TooLong(reference));
        }
        let tag = match (tag, &digest) {
            (Some(t), _) => Some(t.to_string()),
            (None, Some(_)) => None,
            (None, None) => Some(DEFAULT_TAG.to_string()),
        };
        Ok(Reference {
            registry,
            repository,
            tag,
            digest,
        })
    }
}

impl TryFrom<String> for Reference {
    type Error = ReferenceError;
    fn try_from(s: String) -> Result<Self, ReferenceError> {
        s.parse()
    }
}

impl From<Reference> for String {
    fn from(r: Reference) -> String {
        r.to_string()
    }
}

impl fmt::Display for Reference {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.registry, self.repository)?;
        if let Some(t) = &self.tag {
            write!(f, ":{t}")?;
        }
        if let Some(d) = &self.digest {
            write!(f, "@{d}")?;
        }
        Ok(())
    }
}

impl fmt::Debug for Reference {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Reference({self})")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn norm(s: &str) -> String {
        s.parse::<Reference>()
            .unwrap_or_else(|e| panic!("{s}: {e}"))
            .to_string()
    }

    const D: &str = "sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

    #[test]
    fn docker_normalization() {
        assert_eq!(norm("nginx"), "docker.io/library/nginx:latest");
        assert_eq!(norm("nginx:1.25"), "docker.io/library/nginx:1.25");
        assert_eq!(norm("user/app"), "docker.io/user/app:latest");
        assert_eq!(norm("docker.io/nginx"), "docker.io/library/nginx:latest");
        assert_eq!(
            norm("index.docker.io/nginx"),
            "docker.io/library/nginx:latest"
        );
        assert_eq!(norm("quay.io/a/b/c:v1"), "quay.io/a/b/c:v1");
        assert_eq!(norm("localhost/app"), "localhost/app:latest");
        assert_eq!(norm("localhost:5000/app"), "localhost:5000/app:latest");
        assert_eq!(
            norm("127.0.0.1:5000/library/nginx:multiarch"),
            "127.0.0.1:5000/library/nginx:multiarch"
        );
        assert_eq!(norm("[::1]:5000/x"), "[::1]:5000/x:latest");
        assert_eq!(
            norm("my_repo/a__b/c-d--e.f"),
            "docker.io/my_repo/a__b/c-d--e.f:latest"
        );
    }

    #[test]
    fn digests() {
        let r: Reference = format!("nginx@{D}").parse().unwrap();
        assert_eq!(r.tag(), None);
        assert_eq!(r.digest().unwrap().to_string(), D);
        assert_eq!(r.to_string(), format!("docker.io/library/nginx@{D}"));
        let r: Reference = format!("127.0.0.1:5000/x:v1@{D}").parse().unwrap();
        assert_eq!(r.tag(), Some("v1"));
        assert_eq!(r.registry(), "127.0.0.1:5000");
        assert_eq!(r.host(), "127.0.0.1");
        assert_eq!(r.to_string(), format!("127.0.0.1:5000/x:v1@{D}"));
    }

    #[test]
    fn invalid() {
        for bad in [
            "",
            ":tag",
            "Nginx",
            "docker.io/Nginx",
            "nginx:",
            "nginx:-bad",
            "nginx@sha256:abc",
            "nginx@",
            "a//b",
            "a/",
            "/a",
            "-a",
            "a-",
            "a..b",
            "a___b",
            "host:port/x",
            "host:99999999/x",
            "bad_host.com/x",
            "[::1/x",
            "nginx:a:b",
            &format!("nginx:{}", "t".repeat(129)),
            &format!("x/{}", "a".repeat(300)),
        ] {
            assert!(
                bad.parse::<Reference>().is_err(),
                "{bad:?} should be rejected"
            );
        }
    }

    #[test]
    fn errors_name_the_reference() {
        let e = "Nginx".parse::<Reference>().unwrap_err().to_string();
        assert!(e.contains("\"Nginx\"") && e.contains("lowercase"), "{e}");
        let e = "x@sha256:12".parse::<Reference>().unwrap_err().to_string();
        assert!(e.contains("x@sha256:12"), "{e}");
    }

    #[test]
    fn round_trips() {
        for s in [
            "docker.io/library/nginx:latest",
            "127.0.0.1:5001/library/busybox:latest",
            &format!("quay.io/a/b@{D}"),
        ] {
            assert_eq!(norm(s), s);
            assert_eq!(norm(&norm(s)), s);
        }
    }
}
