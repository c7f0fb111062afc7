//! Overlay snapshots, one per layer, keyed by chain ID.
//!
//! Terms (as in containerd's snapshotter):
//! - a **committed** snapshot is a read-only directory tree, e.g. one unpacked layer; its
//!   `parent` is the snapshot of the layer below;
//! - an **active** snapshot is writable: an overlayfs upper and work dir on top of its parent
//!   chain (a container's root filesystem);
//! - a **view** is a read-only mount of a committed chain.
//!
//! ```text
//! <root>/snapshots/<id>/fs      layer contents / upper dir
//! <root>/snapshots/<id>/work    overlayfs work dir (active snapshots)
//! <root>/snapshots/tmp-*        unpacks in progress; renamed to <id> when complete
//! ```
//!
//! Example: for an image with chain IDs `c1, c2, c3`, `prepare("ctr1", Some(c3))` returns an
//! overlay mount with `lowerdir=<c3>/fs:<c2>/fs:<c1>/fs`, `upperdir=<ctr1>/fs`,
//! `workdir=<ctr1>/work`; the caller mounts it with [`MountSpec::mount`].
//!
//! Records live in the metadata database. Directory first, record second when creating;
//! record first, directory second when removing: a crash leaves at worst a directory with no
//! record, which [`Snapshotter::cleanup`] removes at startup.

use std::io;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use crate::metadata::{now_unix, Metadata, MetadataError, SnapshotKind, SnapshotRecord};
use crate::unpack::remove_tree;

/// Errors of the snapshotter; each names the snapshot key.
#[derive(Debug, thiserror::Error)]
pub enum SnapshotError {
    #[error("snapshot {0:?} not found")]
    NotFound(String),
    #[error("snapshot {0:?} already exists")]
    Exists(String),
    #[error("snapshot {key:?} is {kind:?}, not {wanted}")]
    WrongKind {
        key: String,
        kind: SnapshotKind,
        wanted: &'static str,
    },
    #[error("snapshot {key:?} has dependent snapshot {child:?}")]
    HasChildren { key: String, child: String },
    #[error("snapshot {key:?}: {op} {path}: {source}")]
    Io {
        key: String,
        op: &'static str,
        path: PathBuf,
        source: io::Error,
    },
    #[error("mount {target}: {source}")]
    Mount { target: PathBuf, source: io::Error },
    #[error(
        "overlay mount options for {target} are {len} bytes, over the kernel's page-size limit"
    )]
    OptionsTooLong { target: PathBuf, len: usize },
    #[error(transparent)]
    Metadata(#[from] MetadataError),
}

/// How to mount a snapshot: the arguments of mount(2).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct MountSpec {
    /// `overlay` or `bind`.
    pub fstype: String,
    pub source: String,
    /// For overlay: `lowerdir=...`, `upperdir=...`, `workdir=...`; for bind: `rbind`, `ro`/`rw`.
    pub options: Vec<String>,
}

impl MountSpec {
    /// Mounts at `target` (an existing directory).
    pub fn mount(&self, target: &Path) -> Result<(), SnapshotError> {
        use rustix::mount::{mount, mount_bind, mount_remount, MountFlags};
        let err = |e: rustix::io::Errno| SnapshotError::Mount {
            target: target.to_path_buf(),
            source: e.into(),
        };
        if self.fstype == "bind" {
            mount_bind(self.source.as_str(), target).map_err(err)?;
            if self.options.iter().any(|o| o == "ro") {
                mount_remount(target, MountFlags::BIND | MountFlags::RDONLY, "").map_err(err)?;
            }
            return Ok(());
        }
        let data = self.options.join(",");
        // mount(2) copies at most one page of options.
        if data.len() >= 4096 {
            return Err(SnapshotError::OptionsTooLong {
                target: target.to_path_buf(),
                len: data.len(),
            });
        }
        let data = std::ffi::CString::new(data).map_err(|e| SnapshotError::Mount {
            target: target.to_path_buf(),
            source: io::Error::new(io::ErrorKind::InvalidInput, e),
        })?;
        mount(
            self.source.as_str(),
            target,
            self.fstype.as_str(),
            MountFlags::empty(),
            data.as_c_str(),
        )
        .map_err(err)
    }
}

/// Unmounts `target` (not lazily: a busy mount is an error the caller should see).
pub fn unmount(target: &Path) -> Result<(), SnapshotError> {
    rustix::mount::unmount(target, rustix::mount::UnmountFlags::empty()).map_err(|e| {
        SnapshotError::Mount {
            target: target.to_path_buf(),
            source: e.into(),
        }
    })
}

static TMP_SEQ: AtomicU64 = AtomicU64::new(0);

/// The snapshotter. Cheap to clone; methods block (directory and database work), so async
/// callers run them in `spawn_blocking`.
#[derive(Debug, Clone)]
pub struct Snapshotter {
    dir: PathBuf,
    meta: Metadata,
}

impl Snapshotter {
    /// Opens `<root>/snapshots`.
    pub fn open(root: &Path, meta: Metadata) -> Result<Self, SnapshotError> {
        let dir = root.join("snapshots");
        std::fs::create_dir_all(&dir).map_err(|source| SnapshotError::Io {
            key: String::new(),
            op: "create",
            path: dir.clone(),
            source,
        })?;
        Ok(Self { dir, meta })
    }

    /// Removes directories that have no record (interrupted unpacks and removals). Only the
    /// owner of the store calls this, at startup. Returns how many were removed.
    pub fn cleanup(&self) -> Result<usize, SnapshotError> {
        let known: std::collections::HashSet<u64> = self
            .meta
            .snapshots()?
            .into_iter()
            .map(|(_, r)| r.id)
            .collect();
        let mut n = 0;
        let rd = std::fs::read_dir(&self.dir).map_err(|e| self.io("", "read", &self.dir, e))?;
        for e in rd.flatten() {
            let name = e.file_name();
            let keep = name
                .to_str()
                .and_then(|s| s.parse::<u64>().ok())
                .is_some_and(|id| known.contains(&id));
            if !keep {
                remove_tree(&e.path()).map_err(|err| self.io("", "remove", &e.path(), err))?;
                n += 1;
            }
        }
        Ok(n)
    }

    fn io(&self, key: &str, op: &'static str, path: &Path, source: io::Error) -> SnapshotError {
        SnapshotError::Io {
            key: key.to_string(),
            op,
            path: path.to_path_buf(),
            source,
        }
    }

    fn id_dir(&self, id: u64) -> PathBuf {
        self.dir.join(id.to_string())
    }

    /// The record of `key`.
    pub fn stat(&self, key: &str) -> Result<SnapshotRecord, SnapshotError> {
        self.meta
            .snapshot(key)?
            .ok_or_else(|| SnapshotError::NotFound(key.to_string()))
    }

    /// Whether `key` exists.
    pub fn exists(&self, key: &str) -> Result<bool, SnapshotError> {
        Ok(self.meta.snapshot(key)?.is_some())
    }

    /// The directory holding the contents (or upper dir) of `key`.
    pub fn fs_path(&self, key: &str) -> Result<PathBuf, SnapshotError> {
        Ok(self.id_dir(self.stat(key)?.id).join("fs"))
    }

    /// All snapshots.
    pub fn list(&self) -> Result<Vec<(String, SnapshotRecord)>, SnapshotError> {
        Ok(self.meta.snapshots()?)
    }

    /// Creates committed snapshot `key` by letting `fill` populate a fresh directory (created
    /// 0755 beside the snapshots, renamed into place only if `fill` succeeds). If `key` got
    /// committed meanwhile by someone else, the new copy is discarded. `fill`'s error is
    /// returned as is, with the directory removed.
    pub fn commit_with<T, E>(
        &self,
        key: &str,
        parent: Option<&str>,
        fill: impl FnOnce(&Path) -> Result<T, E>,
    ) -> Result<Result<T, E>, SnapshotError> {
        let tmp = self.dir.join(format!(
            "tmp-{}-{}",
            std::process::id(),
            TMP_SEQ.fetch_add(1, Ordering::Relaxed)
        ));
        let fs = tmp.join("fs");
        std::fs::create_dir_all(&fs).map_err(|e| self.io(key, "create", &fs, e))?;
        let cleanup = |s: &Self| remove_tree(&tmp).map_err(|e| s.io(key, "remove", &tmp, e));
        let out = match fill(&fs) {
            Ok(v) => v,
            Err(e) => {
                cleanup(self)?;
                return Ok(Err(e));
            }
        };
        // Make the unpacked files durable before the record says they are there.
        let sync =
            std::fs::File::open(&fs).and_then(|f| rustix::fs::syncfs(&f).map_err(io::Error::from));
        if let Err(e) = sync {
            cleanup(self)?;
            return Err(self.io(key, "syncfs", &fs, e));
        }
        let id = self.meta.next_snapshot_id()?;
        let dst = self.id_dir(id);
        std::fs::rename(&tmp, &dst).map_err(|e| self.io(key, "rename", &dst, e))?;
        let rec = SnapshotRecord {
            id,
            kind: SnapshotKind::Committed,
            parent: parent.map(Into::into),
            created_unix: now_unix(),
        };
        if !self.meta.insert_snapshot(key, &rec)? {
            remove_tree(&dst).map_err(|e| self.io(key, "remove", &dst, e))?;
        }
        Ok(Ok(out))
    }

    /// Lower directories of a committed chain, topmost first.
    fn lowers(&self, parent: &str) -> Result<Vec<String>, SnapshotError> {
        let mut out = Vec::new();
        let mut next = Some(parent.to_string());
        while let Some(key) = next {
            let rec = self.stat(&key)?;
            if rec.kind != SnapshotKind::Committed {
                return Err(SnapshotError::WrongKind {
                    key,
                    kind: rec.kind,
                    wanted: "committed",
                });
            }
            out.push(self.id_dir(rec.id).join("fs").display().to_string());
            next = rec.parent;
            if out.len() > 500 {
                return Err(SnapshotError::NotFound(format!(
                    "{parent} (parent chain loops)"
                )));
            }
        }
        Ok(out)
    }

    fn create(
        &self,
        key: &str,
        parent: Option<&str>,
        kind: SnapshotKind,
    ) -> Result<MountSpec, SnapshotError> {
        if self.exists(key)? {
            return Err(SnapshotError::Exists(key.to_string()));
        }
        if let Some(p) = parent {
            self.lowers(p)?; // parent chain must be complete and committed
        }
        let id = self.meta.next_snapshot_id()?;
        let dir = self.id_dir(id);
        let dirs: &[&str] = match kind {
            SnapshotKind::Active => &["fs", "work"],
            _ => &["fs"],
        };
        for d in dirs {
            let p = dir.join(d);
            std::fs::create_dir_all(&p).map_err(|e| self.io(key, "create", &p, e))?;
        }
        let rec = SnapshotRecord {
            id,
            kind,
            parent: parent.map(Into::into),
            created_unix: now_unix(),
        };
        if !self.meta.insert_snapshot(key, &rec)? {
            let _ = remove_tree(&dir);
            return Err(SnapshotError::Exists(key.to_string()));
        }
        self.mounts(key)
    }

    /// A writable snapshot on top of committed `parent` (or empty).
    pub fn prepare(&self, key: &str, parent: Option<&str>) -> Result<MountSpec, SnapshotError> {
        self.create(key, parent, SnapshotKind::Active)
    }

    /// A read-only view of committed `parent`.
    pub fn view(&self, key: &str, parent: &str) -> Result<MountSpec, SnapshotError> {
        self.create(key, Some(parent), SnapshotKind::View)
    }

    /// The mount for an existing snapshot.
    pub fn mounts(&self, key: &str) -> Result<MountSpec, SnapshotError> {
        let rec = self.stat(key)?;
        let dir = self.id_dir(rec.id);
        let lowers = match &rec.parent {
            Some(p) => self.lowers(p)?,
            None => Vec::new(),
        };
        let bind = |src: String, ro: bool| MountSpec {
            fstype: "bind".into(),
            source: src,
            options: vec!["rbind".into(), if ro { "ro" } else { "rw" }.into()],
        };
        Ok(match rec.kind {
            SnapshotKind::Active if lowers.is_empty() => {
                bind(dir.join("fs").display().to_string(), false)
            }
            SnapshotKind::Active => MountSpec {
                fstype: "overlay".into(),
                source: "overlay".into(),
                options: vec![
                    format!("lowerdir={}", lowers.join(":")),
                    format!("upperdir={}", dir.join("fs").display()),
                    format!("workdir={}", dir.join("work").display()),
                ],
            },
            SnapshotKind::View | SnapshotKind::Committed if lowers.len() <= 1 => {
                let src = match rec.kind {
                    SnapshotKind::Committed => dir.join("fs").display().to_string(),
                    _ => lowers[0].clone(),
                };
                bind(src, true)
            }
            SnapshotKind::Committed => {
                let mut all = vec![dir.join("fs").display().to_string()];
                all.extend(lowers);
                MountSpec {
                    fstype: "overlay".into(),
                    source: "overlay".into(),
                    options: vec![format!("lowerdir={}", all.join(":"))],
                }
            }
            SnapshotKind::View => MountSpec {
                fstype: "overlay".into(),
                source: "overlay".into(),
                options: vec![format!("lowerdir={}", lowers.join(":"))],
            },
        })
    }

    /// Turns active snapshot `key` into committed snapshot `name` (its upper dir becomes a
    /// layer). The active snapshot must not be mounted.
    pub fn commit(&self, name: &str, key: &str) -> Result<(), SnapshotError> {
        let rec = self.stat(key)?;
        if rec.kind != SnapshotKind::Active {
            return Err(SnapshotError::WrongKind {
                key: key.into(),
                kind: rec.kind,
                wanted: "active",
            });
        }
        let new = SnapshotRecord {
            kind: SnapshotKind::Committed,
            created_unix: now_unix(),
            ..rec.clone()
        };
        if !self.meta.rename_snapshot(key, name, &new)? {
            return Err(SnapshotError::Exists(name.to_string()));
        }
        let work = self.id_dir(rec.id).join("work");
        let _ = remove_tree(&work);
        Ok(())
    }

    /// Removes a snapshot that no other snapshot has as parent. It must not be mounted.
    pub fn remove(&self, key: &str) -> Result<(), SnapshotError> {
        let rec = self.stat(key)?;
        if let Some((child, _)) = self
            .meta
            .snapshots()?
            .into_iter()
            .find(|(_, r)| r.parent.as_deref() == Some(key))
        {
            return Err(SnapshotError::HasChildren {
                key: key.to_string(),
                child,
            });
        }
        self.meta.remove_snapshot(key)?;
        let dir = self.id_dir(rec.id);
        remove_tree(&dir).map_err(|e| self.io(key, "remove", &dir, e))
    }
}
