//! Content digests (`sha256:<64 hex>`), the names of everything in the store.

use std::fmt;
use std::str::FromStr;

use sha2::{Digest as _, Sha256};

/// Why a string is not a digest this store can use.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum DigestError {
    #[error("invalid digest {0:?}: expected sha256:<64 lowercase hex digits>")]
    Invalid(String),
    #[error("unsupported digest algorithm {0:?} (only sha256 is supported)")]
    UnsupportedAlgorithm(String),
}

/// A validated sha256 digest. Only sha256 is accepted: it is what every registry and image
/// builder uses, and one algorithm keeps the blob layout (`blobs/sha256/<hex>`) simple.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Digest {
    hex: String,
}

impl Digest {
    /// Digest of `data`.
    pub fn of(data: &[u8]) -> Self {
        Self::from_hasher(Sha256::new_with_prefix(data))
    }

    /// Finishes a running sha256 hasher.
    pub fn from_hasher(hasher: Sha256) -> Self {
        Self {
            hex: hex::encode(hasher.finalize()),
        }
    }

    /// The 64 hex digits, without the `sha256:` prefix.
    pub fn hex(&self) -> &str {
        &self.hex
    }

    /// `sha256`.
    pub fn algorithm(&self) -> &'static str {
        "sha256"
    }
}

impl FromStr for Digest {
    type Err = DigestError;

    fn from_str(s: &str) -> Result<Self, DigestError> {
        let Some((alg, hex)) = s.split_once(':') else {
            return Err(DigestError::Invalid(s.to_string()));
        };
        if alg != "sha256" {
            let valid_alg = !alg.is_empty()
                && alg
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"+._-".contains(&b));
            return Err(if valid_alg && !hex.is_empty() {
                DigestError::UnsupportedAlgorithm(alg.to_string())
            } else {
                DigestError::Invalid(s.to_string())
            });
        }
        if hex.len() != 64
            || !hex
                .bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
        {
            return Err(DigestError::Invalid(s.to_string()));
        }
        Ok(Self {
            hex: hex.to_string(),
        })
    }
}

impl TryFrom<String> for Digest {
    type Error = DigestError;
    fn try_from(s: String) -> Result<Self, DigestError> {
        s.parse()
    }
}

impl From<Digest> for String {
    fn from(d: Digest) -> String {
        d.to_string()
    }
}

impl fmt::Display for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "sha256:{}", self.hex)
    }
}

impl fmt::Debug for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

/// Chain IDs of a layer stack (OCI image spec, "Layer ChainID"): `chain[0] = diff_id[0]`,
/// `chain[n] = sha256(chain[n-1] + " " + diff_id[n])`. A chain ID names a layer *together with
/// everything under it*, so it is the key of the snapshot that holds that layer.
pub fn chain_ids(diff_ids: &[Digest]) -> Vec<Digest> {
    let mut out: Vec<Digest> = Vec::with_capacity(diff_ids.len());
    for d in diff_ids {
        let next = match out.last() {
            None => d.clone(),
            Some(parent) => Digest::of(format!("{parent} {d}").as_bytes()),
        };
        out.push(next);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_and_display() {
        let s = format!("sha256:{}", "ab".repeat(32));
        let d: Digest = s.parse().unwrap();
        assert_eq!(d.to_string(), s);
        assert_eq!(d.hex(), "ab".repeat(32));
    }

    #[test]
    fn rejects_bad_digests() {
        for bad in [
            "",
            "sha256:",
            "sha256:abc",
            "abc",
            &format!("sha256:{}", "AB".repeat(32)),
        ] {
            assert!(
                matches!(bad.parse::<Digest>(), Err(DigestError::Invalid(_))),
                "{bad}"
            );
        }
        assert_eq!(
            format!("sha512:{}", "a".repeat(128)).parse::<Digest>(),
            Err(DigestError::UnsupportedAlgorithm("sha512".into()))
        );
    }

    #[test]
    fn of_empty() {
        assert_eq!(
            Digest::of(b"").to_string(),
            "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
    }

    #[test]
    fn chain_ids_follow_the_spec() {
        let a = Digest::of(b"a");
        let b = Digest::of(b"b");
        let chain = chain_ids(&[a.clone(), b.clone()]);
        assert_eq!(chain[0], a);
        assert_eq!(chain[1], Digest::of(format!("{a} {b}").as_bytes()));
        assert!(chain_ids(&[]).is_empty());
    }
}
