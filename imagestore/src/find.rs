//! What a user's image reference names, as docker reads it: a name (`nginx`, normalized to
//! `docker.io/library/nginx:latest`), `repo@sha256:…` (a manifest digest), or an image ID —
//! the config digest, `sha256:…` in full or as a prefix, or a prefix of its hex without
//! `sha256:` (`99071bbcc1cf`, what `images -q` prints). A name that exists wins over an ID
//! prefix that happens to look like one; an ID prefix two images share is an error.
//!
//! Nothing here asks a registry: an ID never turns into a name to pull.

use crate::error::{Error, Result};
use crate::metadata::ImageRecord;
use crate::store::{blocking, Store};
use std::collections::BTreeMap;

/// The image a reference names.
#[derive(Debug, Clone)]
pub struct Found {
    /// The image ID (`sha256:…` of its config).
    pub id: String,
    /// Every name the image has (at least one), sorted by name.
    pub records: Vec<ImageRecord>,
    /// The record the reference named, when it was a name (not an ID).
    pub named: Option<ImageRecord>,
}

impl Found {
    /// The record to act on: the one named, else the first.
    pub fn record(&self) -> &ImageRecord {
        self.named.as_ref().unwrap_or(&self.records[0])
    }

    /// The ID's first 12 hex digits, as `images` shows it.
    pub fn short_id(&self) -> &str {
        let hex = self.id.trim_start_matches("sha256:");
        &hex[..hex.len().min(12)]
    }
}

/// `repo@sha256:…` of a normalized name and its manifest digest.
pub fn repo_digest(name: &str, manifest: &str) -> String {
    let repo = match name.rsplit_once(':') {
        Some((r, tag)) if !tag.contains('/') => r,
        _ => name,
    };
    let repo = repo.split('@').next().unwrap_or(repo);
    format!("{repo}@{manifest}")
}

/// `nginx` -> `docker.io/library/nginx`, as a prefix to compare repo digests with.
pub fn normalize_repo(repo: &str) -> String {
    match Store::normalize(&format!("{repo}:x")) {
        Ok(n) => n.trim_end_matches(":x").to_string(),
        Err(_) => repo.to_string(),
    }
}

/// Records grouped by image ID (the config digest), as containerd's CRI groups them.
pub fn group(records: Vec<ImageRecord>) -> BTreeMap<String, Vec<ImageRecord>> {
    let mut by_id: BTreeMap<String, Vec<ImageRecord>> = BTreeMap::new();
    for r in records {
        by_id.entry(r.config.to_string()).or_default().push(r);
    }
    by_id
}

/// An ID or ID prefix: lowercase hex, with or without `sha256:`.
fn id_prefix(s: &str) -> Option<&str> {
    let hex = s.strip_prefix("sha256:").unwrap_or(s);
    let ok = !hex.is_empty()
        && hex.len() <= 64
        && hex
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b));
    ok.then_some(hex)
}

impl Store {
    /// The image `reference` names (see the module docs); `None` if none does.
    pub async fn find(&self, reference: &str) -> Result<Option<Found>> {
        let want = reference.trim();
        if want.is_empty() {
            return Err(Error::ImageNotFound(String::new()));
        }
        let meta = self.metadata().clone();
        // A name: one lookup, the common case.
        let name = if want.starts_with("sha256:") {
            None
        } else {
            Store::normalize(want).ok()
        };
        if let Some(n) = name {
            if let Some(rec) = blocking(move || meta.image(&n)).await?? {
                let id = rec.config.to_string();
                let mut records: Vec<ImageRecord> =
                    group(self.images().await?).remove(&id).unwrap_or_default();
                if records.is_empty() {
                    records.push(rec.clone());
                }
                return Ok(Some(Found {
                    id,
                    records,
                    named: Some(rec),
                }));
            }
        }
        self.find_unnamed(want).await
    }

    /// [`Store::find`] past the name lookup: `repo@digest`, or an image ID or ID prefix.
    pub(crate) async fn find_unnamed(&self, want: &str) -> Result<Option<Found>> {
        let groups = group(self.images().await?);
        if let Some((repo, digest)) = want.split_once('@') {
            let repo = normalize_repo(repo);
            for (id, recs) in groups {
                let hit = recs.iter().find(|r| {
                    r.manifest.to_string() == digest
                        && repo_digest(&r.name, digest).starts_with(&repo)
                });
                if let Some(r) = hit {
                    let named = Some(r.clone());
                    return Ok(Some(Found {
                        id,
                        records: recs,
                        named,
                    }));
                }
            }
            return Ok(None);
        }
        let Some(hex) = id_prefix(want) else {
            // Not a name we have, and not an ID: say why if it is no reference at all.
            Store::normalize(want)?;
            return Ok(None);
        };
        let id = match by_id_prefix(groups.keys(), hex) {
            Ok(Some(id)) => id.clone(),
            Ok(None) => return Ok(None),
            Err(ids) => {
                return Err(Error::AmbiguousId {
                    prefix: want.to_string(),
                    ids,
                })
            }
        };
        let records = groups.get(&id).cloned().unwrap_or_default();
        Ok(Some(Found {
            id,
            records,
            named: None,
        }))
    }
}

/// The one ID (`sha256:…`) among `ids` whose hex starts with `hex`; two of them if more do.
fn by_id_prefix<'a>(
    ids: impl Iterator<Item = &'a String>,
    hex: &str,
) -> std::result::Result<Option<&'a String>, [String; 2]> {
    let mut hits = ids.filter(|id| id.trim_start_matches("sha256:").starts_with(hex));
    let first = hits.next();
    match (first, hits.next()) {
        (Some(a), Some(b)) => Err([a.clone(), b.clone()]),
        (a, _) => Ok(a),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn id_prefixes() {
        assert_eq!(id_prefix("99071bbcc1cf"), Some("99071bbcc1cf"));
        assert_eq!(id_prefix("sha256:99071b"), Some("99071b"));
        assert_eq!(id_prefix("nginx"), None);
        assert_eq!(id_prefix("ABCD"), None);
        assert_eq!(id_prefix(""), None);
        assert_eq!(id_prefix(&"a".repeat(65)), None);
    }

    #[test]
    fn unique_and_ambiguous_id_prefixes() {
        let ids: Vec<String> = ["sha256:99071bbcc1cf00", "sha256:99aa00", "sha256:12ab"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        assert_eq!(by_id_prefix(ids.iter(), "990"), Ok(Some(&ids[0])));
        assert_eq!(by_id_prefix(ids.iter(), "12ab"), Ok(Some(&ids[2])));
        assert_eq!(by_id_prefix(ids.iter(), "77"), Ok(None));
        assert_eq!(
            by_id_prefix(ids.iter(), "99"),
            Err([ids[0].clone(), ids[1].clone()])
        );
    }

    #[test]
    fn repo_digests() {
        assert_eq!(
            repo_digest("127.0.0.1:5000/library/nginx:latest", "sha256:ab"),
            "127.0.0.1:5000/library/nginx@sha256:ab"
        );
        assert_eq!(normalize_repo("nginx"), "docker.io/library/nginx");
    }
}
