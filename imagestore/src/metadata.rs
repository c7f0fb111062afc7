//! The metadata database (`<root>/meta.db`, redb): image names and snapshot records.
//!
//! ```text
//! schema v1 (table "meta", key "schema_version")
//!   meta       "schema_version" -> 1, "next_snapshot_id" -> n      (JSON numbers)
//!   images     image name (normalized reference) -> ImageRecord   (JSON)
//!   snapshots  snapshot key (chain ID or caller's key) -> SnapshotRecord (JSON)
//! ```
//!
//! Blobs are not listed: what an image references (index, manifest, config, layers) is in its
//! record, and [`crate::Store::gc`] derives the set of live blobs and snapshots from images and
//! active snapshots. redb allows one writer at a time and locks the file, so one process (berthd)
//! owns a store; every write here is one transaction, committed durably.

use std::path::Path;
use std::sync::Arc;

use redb::{ReadableDatabase, ReadableTable, TableDefinition};
use serde::{de::DeserializeOwned, Deserialize, Serialize};

use crate::digest::Digest;
use crate::manifest::Platform;

const META: TableDefinition<&str, &[u8]> = TableDefinition::new("meta");
const IMAGES: TableDefinition<&str, &[u8]> = TableDefinition::new("images");
const SNAPSHOTS: TableDefinition<&str, &[u8]> = TableDefinition::new("snapshots");
const CONTAINERS: TableDefinition<&str, &[u8]> = TableDefinition::new("containers");
const PODS: TableDefinition<&str, &[u8]> = TableDefinition::new("pods");

/// Tables the daemon keeps its own records in (JSON values it defines), in the same
/// transactional database as the images, so there is one writer and one file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Records {
    Containers,
    Pods,
}

impl Records {
    fn table(self) -> TableDefinition<'static, &'static str, &'static [u8]> {
        match self {
            Records::Containers => CONTAINERS,
            Records::Pods => PODS,
        }
    }
}
const SCHEMA_VERSION: u64 = 1;

/// Errors of the metadata database.
#[derive(Debug, thiserror::Error)]
pub enum MetadataError {
    #[error("metadata database: {0}")]
    Db(String),
    #[error("metadata record {key:?} is corrupt: {source}")]
    Corrupt {
        key: String,
        source: serde_json::Error,
    },
    #[error("metadata database has schema version {0}; this build knows {SCHEMA_VERSION}")]
    Schema(u64),
}

fn db_err(e: impl Into<redb::Error>) -> MetadataError {
    MetadataError::Db(e.into().to_string())
}

/// An image: a name pointing at a manifest, and what that manifest references.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ImageRecord {
    /// Normalized reference, e.g. `127.0.0.1:5000/library/nginx:latest`.
    pub name: String,
    /// Digest of the platform manifest.
    pub manifest: Digest,
    /// Digest of the index / manifest list the manifest was selected from, if any.
    pub index: Option<Digest>,
    pub media_type: String,
    pub config: Digest,
    /// Compressed layer blobs, base first.
    pub layers: Vec<Digest>,
    /// Snapshot keys (chain IDs), base first; the last one is the image's root filesystem.
    pub chain_ids: Vec<Digest>,
    pub platform: Platform,
    /// Sum of config and compressed layer sizes, as the manifest states them.
    pub size: u64,
    /// `created` from the image config (RFC 3339), if it has one.
    pub created: Option<String>,
    /// When this name was last set here (seconds since the epoch).
    pub updated_unix: u64,
    /// When the image came from an index whose other platforms were fetched too (import of
    /// a layout, push/export of the whole index): their manifests, configs and layers. Kept
    /// so the index can be pushed or exported as it was; never unpacked.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub other_platforms: Vec<Digest>,
}

impl ImageRecord {
    /// Every blob this image needs kept.
    pub fn blobs(&self) -> impl Iterator<Item = &Digest> {
        self.index
            .iter()
            .chain([&self.manifest, &self.config])
            .chain(&self.layers)
            .chain(&self.other_platforms)
    }
}

/// What kind of snapshot a record is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SnapshotKind {
    /// Read-only, complete (an unpacked layer).
    Committed,
    /// Writable: has an upper and a work dir (a container's root filesystem).
    Active,
    /// Read-only view of a committed chain.
    View,
}

/// One snapshot: a directory `<root>/snapshots/<id>` and its parent chain.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SnapshotRecord {
    pub id: u64,
    pub kind: SnapshotKind,
    pub parent: Option<String>,
    pub created_unix: u64,
}

/// Handle to the database; cheap to clone.
#[derive(Clone)]
pub struct Metadata {
    inner: Arc<Inner>,
}

struct Inner {
    path: std::path::PathBuf,
    db: std::sync::RwLock<Option<Arc<redb::Database>>>,
    /// An I/O error (a full disk, say) poisons a redb database until it is opened again:
    /// the next transaction reopens it first.
    poisoned: std::sync::atomic::AtomicBool,
}

impl std::fmt::Debug for Metadata {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Metadata")
    }
}

fn decode<T: DeserializeOwned>(key: &str, v: &[u8]) -> Result<T, MetadataError> {
    serde_json::from_slice(v).map_err(|source| MetadataError::Corrupt {
        key: key.to_string(),
        source,
    })
}

fn encode<T: Serialize>(v: &T) -> Vec<u8> {
    serde_json::to_vec(v).expect("metadata records always serialize")
}

pub(crate) fn now_unix() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

impl Metadata {
    /// Opens or creates `path`. Fails if another process has it open.
    pub fn open(path: &Path) -> Result<Self, MetadataError> {
        let db = redb::Database::create(path).map_err(db_err)?;
        let txn = db.begin_write().map_err(db_err)?;
        {
            let mut meta = txn.open_table(META).map_err(db_err)?;
            let version = match meta.get("schema_version").map_err(db_err)? {
                Some(v) => Some(decode::<u64>("schema_version", v.value())?),
                None => None,
            };
            match version {
                None => {
                    meta.insert("schema_version", encode(&SCHEMA_VERSION).as_slice())
                        .map_err(db_err)?;
                }
                Some(SCHEMA_VERSION) => {}
                Some(v) => return Err(MetadataError::Schema(v)),
            }
            txn.open_table(IMAGES).map_err(db_err)?;
            txn.open_table(SNAPSHOTS).map_err(db_err)?;
            txn.open_table(CONTAINERS).map_err(db_err)?;
            txn.open_table(PODS).map_err(db_err)?;
        }
        txn.commit().map_err(db_err)?;
        Ok(Self {
            inner: Arc::new(Inner {
                path: path.to_path_buf(),
                db: std::sync::RwLock::new(Some(Arc::new(db))),
                poisoned: std::sync::atomic::AtomicBool::new(false),
            }),
        })
    }

    /// The database, reopened first if an I/O error poisoned it.
    fn db(&self) -> Result<Arc<redb::Database>, MetadataError> {
        use std::sync::atomic::Ordering;
        if self.inner.poisoned.load(Ordering::SeqCst) {
            let mut g = self.inner.db.write().unwrap_or_else(|e| e.into_inner());
            if self.inner.poisoned.load(Ordering::SeqCst) {
                // Close it (the last reference goes once running transactions end), then open.
                *g = None;
                let db = redb::Database::create(&self.inner.path).map_err(db_err)?;
                *g = Some(Arc::new(db));
                self.inner.poisoned.store(false, Ordering::SeqCst);
            }
        }
        let g = self.inner.db.read().unwrap_or_else(|e| e.into_inner());
        g.clone()
            .ok_or_else(|| MetadataError::Db("database closed after an I/O error".into()))
    }

    /// [`db_err`], noting an I/O error so that the database is reopened.
    fn fail(&self, e: impl Into<redb::Error>) -> MetadataError {
        let e: redb::Error = e.into();
        if matches!(e, redb::Error::Io(_) | redb::Error::PreviousIo) {
            self.inner
                .poisoned
                .store(true, std::sync::atomic::Ordering::SeqCst);
        }
        db_err(e)
    }

    fn get<T: DeserializeOwned>(
        &self,
        table: TableDefinition<&str, &[u8]>,
        key: &str,
    ) -> Result<Option<T>, MetadataError> {
        let txn = self.db()?.begin_read().map_err(|e| self.fail(e))?;
        let t = txn.open_table(table).map_err(|e| self.fail(e))?;
        match t.get(key).map_err(|e| self.fail(e))? {
            Some(v) => Ok(Some(decode(key, v.value())?)),
            None => Ok(None),
        }
    }

    fn list<T: DeserializeOwned>(
        &self,
        table: TableDefinition<&str, &[u8]>,
    ) -> Result<Vec<(String, T)>, MetadataError> {
        let txn = self.db()?.begin_read().map_err(|e| self.fail(e))?;
        let t = txn.open_table(table).map_err(|e| self.fail(e))?;
        let mut out = Vec::new();
        for item in t.iter().map_err(|e| self.fail(e))? {
            let (k, v) = item.map_err(|e| self.fail(e))?;
            out.push((k.value().to_string(), decode(k.value(), v.value())?));
        }
        Ok(out)
    }

    /// The image record for `name`.
    pub fn image(&self, name: &str) -> Result<Option<ImageRecord>, MetadataError> {
        self.get(IMAGES, name)
    }

    /// All images, by name.
    pub fn images(&self) -> Result<Vec<ImageRecord>, MetadataError> {
        Ok(self.list(IMAGES)?.into_iter().map(|(_, v)| v).collect())
    }

    /// Creates or replaces the image named `rec.name`.
    pub fn put_image(&self, rec: &ImageRecord) -> Result<(), MetadataError> {
        let txn = self.db()?.begin_write().map_err(|e| self.fail(e))?;
        txn.open_table(IMAGES)
            .map_err(|e| self.fail(e))?
            .insert(rec.name.as_str(), encode(rec).as_slice())
            .map_err(|e| self.fail(e))?;
        txn.commit().map_err(|e| self.fail(e))
    }

    /// Removes an image name; returns the record it had.
    pub fn remove_image(&self, name: &str) -> Result<Option<ImageRecord>, MetadataError> {
        let txn = self.db()?.begin_write().map_err(|e| self.fail(e))?;
        let old = {
            let mut t = txn.open_table(IMAGES).map_err(|e| self.fail(e))?;
            let old = t.remove(name).map_err(|e| self.fail(e))?;
            match old {
                Some(v) => Some(decode::<ImageRecord>(name, v.value())?),
                None => None,
            }
        };
        txn.commit().map_err(|e| self.fail(e))?;
        Ok(old)
    }

    /// The snapshot record for `key`.
    pub fn snapshot(&self, key: &str) -> Result<Option<SnapshotRecord>, MetadataError> {
        self.get(SNAPSHOTS, key)
    }

    /// All snapshots, by key.
    pub fn snapshots(&self) -> Result<Vec<(String, SnapshotRecord)>, MetadataError> {
        self.list(SNAPSHOTS)
    }

    /// Allocates the next snapshot directory number (never reused).
    pub fn next_snapshot_id(&self) -> Result<u64, MetadataError> {
        let txn = self.db()?.begin_write().map_err(|e| self.fail(e))?;
        let id = {
            let mut meta = txn.open_table(META).map_err(|e| self.fail(e))?;
            let id = match meta.get("next_snapshot_id").map_err(|e| self.fail(e))? {
                Some(v) => decode::<u64>("next_snapshot_id", v.value())?,
                None => 1,
            };
            meta.insert("next_snapshot_id", encode(&(id + 1)).as_slice())
                .map_err(|e| self.fail(e))?;
            id
        };
        txn.commit().map_err(|e| self.fail(e))?;
        Ok(id)
    }

    /// Inserts a snapshot record unless the key exists; returns false if it did.
    pub fn insert_snapshot(&self, key: &str, rec: &SnapshotRecord) -> Result<bool, MetadataError> {
        let txn = self.db()?.begin_write().map_err(|e| self.fail(e))?;
        let inserted = {
            let mut t = txn.open_table(SNAPSHOTS).map_err(|e| self.fail(e))?;
            if t.get(key).map_err(|e| self.fail(e))?.is_some() {
                false
            } else {
                t.insert(key, encode(rec).as_slice())
                    .map_err(|e| self.fail(e))?;
                true
            }
        };
        txn.commit().map_err(|e| self.fail(e))?;
        Ok(inserted)
    }

    /// Replaces snapshot `old` by `new` (used by commit). Fails if `new` exists.
    pub fn rename_snapshot(
        &self,
        old: &str,
        new: &str,
        rec: &SnapshotRecord,
    ) -> Result<bool, MetadataError> {
        let txn = self.db()?.begin_write().map_err(|e| self.fail(e))?;
        let ok = {
            let mut t = txn.open_table(SNAPSHOTS).map_err(|e| self.fail(e))?;
            if t.get(new).map_err(|e| self.fail(e))?.is_some() {
                false
            } else {
                t.remove(old).map_err(|e| self.fail(e))?;
                t.insert(new, encode(rec).as_slice())
                    .map_err(|e| self.fail(e))?;
                true
            }
        };
        if ok {
            txn.commit().map_err(|e| self.fail(e))?;
        }
        Ok(ok)
    }

    /// Removes a snapshot record.
    pub fn remove_snapshot(&self, key: &str) -> Result<Option<SnapshotRecord>, MetadataError> {
        let txn = self.db()?.begin_write().map_err(|e| self.fail(e))?;
        let old = {
            let mut t = txn.open_table(SNAPSHOTS).map_err(|e| self.fail(e))?;
            let old = t.remove(key).map_err(|e| self.fail(e))?;
            match old {
                Some(v) => Some(decode::<SnapshotRecord>(key, v.value())?),
                None => None,
            }
        };
        txn.commit().map_err(|e| self.fail(e))?;
        Ok(old)
    }

    /// A daemon record.
    pub fn record(&self, t: Records, key: &str) -> Result<Option<Vec<u8>>, MetadataError> {
        let txn = self.db()?.begin_read().map_err(|e| self.fail(e))?;
        let table = txn.open_table(t.table()).map_err(|e| self.fail(e))?;
        Ok(table
            .get(key)
            .map_err(|e| self.fail(e))?
            .map(|v| v.value().to_vec()))
    }

    /// All records of a table, by key.
    pub fn records(&self, t: Records) -> Result<Vec<(String, Vec<u8>)>, MetadataError> {
        let txn = self.db()?.begin_read().map_err(|e| self.fail(e))?;
        let table = txn.open_table(t.table()).map_err(|e| self.fail(e))?;
        let mut out = Vec::new();
        for item in table.iter().map_err(|e| self.fail(e))? {
            let (k, v) = item.map_err(|e| self.fail(e))?;
            out.push((k.value().to_string(), v.value().to_vec()));
        }
        Ok(out)
    }

    /// Writes a record (one transaction: the old value or the new one survives a crash).
    pub fn put_record(&self, t: Records, key: &str, value: &[u8]) -> Result<(), MetadataError> {
        let txn = self.db()?.begin_write().map_err(|e| self.fail(e))?;
        txn.open_table(t.table())
            .map_err(|e| self.fail(e))?
            .insert(key, value)
            .map_err(|e| self.fail(e))?;
        txn.commit().map_err(|e| self.fail(e))
    }

    /// Removes a record; true if it existed.
    pub fn remove_record(&self, t: Records, key: &str) -> Result<bool, MetadataError> {
        let txn = self.db()?.begin_write().map_err(|e| self.fail(e))?;
        let existed = txn
            .open_table(t.table())
            .map_err(|e| self.fail(e))?
            .remove(key)
            .map_err(|e| self.fail(e))?
            .is_some();
        txn.commit().map_err(|e| self.fail(e))?;
        Ok(existed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_round_trip_and_survive_reopen() {
        let dir = std::env::temp_dir().join(format!("berth-meta-records-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("meta.db");
        {
            let m = Metadata::open(&path).unwrap();
            assert_eq!(m.record(Records::Containers, "a").unwrap(), None);
            m.put_record(Records::Containers, "a", b"{\"x\":1}")
                .unwrap();
            m.put_record(Records::Containers, "b", b"{}").unwrap();
            m.put_record(Records::Pods, "p", b"{}").unwrap();
            assert!(m.remove_record(Records::Containers, "b").unwrap());
            assert!(!m.remove_record(Records::Containers, "b").unwrap());
        }
        let m = Metadata::open(&path).unwrap();
        let all = m.records(Records::Containers).unwrap();
        assert_eq!(all, vec![("a".to_string(), b"{\"x\":1}".to_vec())]);
        assert_eq!(m.records(Records::Pods).unwrap().len(), 1);
        drop(m);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
