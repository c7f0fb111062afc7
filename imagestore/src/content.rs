//! Content-addressed blob store.
//!
//! ```text
//! <root>/content/blobs/sha256/<hex>   committed blobs, named by the sha256 of their bytes
//! <root>/content/ingest/<random>      writes in flight
//! ```
//!
//! A [`Writer`] hashes bytes as they stream in. [`Writer::commit`] flushes and fsyncs the ingest
//! file, checks size and digest against what the caller expected and only then renames it into
//! `blobs/`, so a blob that exists is always complete and correct. A writer dropped without a
//! successful commit removes its ingest file; files left by a crash are removed by
//! [`ContentStore::cleanup_ingest`], which the owner of the store calls at startup.

use std::io;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};

use sha2::{Digest as _, Sha256};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncSeekExt, AsyncWrite, AsyncWriteExt};

use crate::digest::Digest;

/// Errors of the content store. Each names the digest or path it is about.
#[derive(Debug, thiserror::Error)]
pub enum ContentError {
    #[error("blob {0} not found")]
    NotFound(Digest),
    #[error("blob digest mismatch: expected {expected}, got {actual}")]
    DigestMismatch { expected: Digest, actual: Digest },
    #[error("blob {digest} size mismatch: expected {expected} bytes, got {actual}")]
    SizeMismatch {
        digest: Digest,
        expected: u64,
        actual: u64,
    },
    #[error("blob {digest} is {size} bytes, more than the {limit} allowed here")]
    TooLarge {
        digest: Digest,
        size: u64,
        limit: u64,
    },
    #[error("{op} {path}: {source}")]
    Io {
        op: &'static str,
        path: PathBuf,
        source: io::Error,
    },
}

fn io_err(op: &'static str, path: &Path) -> impl FnOnce(io::Error) -> ContentError {
    let path = path.to_path_buf();
    move |source| ContentError::Io { op, path, source }
}

/// Handle to the content store; cheap to clone and safe to use from many tasks at once.
#[derive(Debug, Clone)]
pub struct ContentStore {
    blobs: PathBuf,
    ingest: PathBuf,
}

static INGEST_SEQ: AtomicU64 = AtomicU64::new(0);

impl ContentStore {
    /// Opens (creating if needed) the store under `<root>/content`.
    pub fn open(root: &Path) -> Result<Self, ContentError> {
        let content = root.join("content");
        let blobs = content.join("blobs").join("sha256");
        let ingest = content.join("ingest");
        for dir in [&blobs, &ingest] {
            std::fs::create_dir_all(dir).map_err(io_err("create", dir))?;
        }
        Ok(Self { blobs, ingest })
    }

    /// Removes every file under `ingest/`. Only the process that owns the store (it holds the
    /// metadata database lock) may call this, at startup: any ingest file then is a leftover of
    /// an interrupted write. Returns how many were removed.
    pub fn cleanup_ingest(&self) -> Result<usize, ContentError> {
        let mut n = 0;
        let rd = std::fs::read_dir(&self.ingest).map_err(io_err("read", &self.ingest))?;
        for e in rd {
            let e = e.map_err(io_err("read", &self.ingest))?;
            let p = e.path();
            let r = if e.file_type().map(|t| t.is_dir()).unwrap_or(false) {
                std::fs::remove_dir_all(&p)
            } else {
                std::fs::remove_file(&p)
            };
            r.map_err(io_err("remove", &p))?;
            n += 1;
        }
        Ok(n)
    }

    /// Path of a committed blob (it may not exist).
    pub fn path(&self, digest: &Digest) -> PathBuf {
        self.blobs.join(digest.hex())
    }

    /// Whether the blob is present.
    pub async fn exists(&self, digest: &Digest) -> bool {
        tokio::fs::try_exists(self.path(digest))
            .await
            .unwrap_or(false)
    }

    /// Size in bytes of a committed blob.
    pub async fn size(&self, digest: &Digest) -> Result<u64, ContentError> {
        match tokio::fs::metadata(self.path(digest)).await {
            Ok(m) => Ok(m.len()),
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                Err(ContentError::NotFound(digest.clone()))
            }
            Err(e) => Err(io_err("stat", &self.path(digest))(e)),
        }
    }

    /// Opens a committed blob for reading (blocking `std::fs::File`, for use in
    /// `spawn_blocking` readers such as the layer unpacker).
    pub fn open_blob_sync(&self, digest: &Digest) -> Result<std::fs::File, ContentError> {
        let p = self.path(digest);
        std::fs::File::open(&p).map_err(|e| {
            if e.kind() == io::ErrorKind::NotFound {
                ContentError::NotFound(digest.clone())
            } else {
                io_err("open", &p)(e)
            }
        })
    }

    /// Opens a committed blob for async reading.
    pub async fn open_blob(&self, digest: &Digest) -> Result<tokio::fs::File, ContentError> {
        let p = self.path(digest);
        tokio::fs::File::open(&p).await.map_err(|e| {
            if e.kind() == io::ErrorKind::NotFound {
                ContentError::NotFound(digest.clone())
            } else {
                io_err("open", &p)(e)
            }
        })
    }

    /// Reads a whole (small) blob, such as a manifest or config, refusing ones over `limit`.
    pub async fn read(&self, digest: &Digest, limit: u64) -> Result<Vec<u8>, ContentError> {
        let mut f = self.open_blob(digest).await?;
        let size = f
            .metadata()
            .await
            .map_err(io_err("stat", &self.path(digest)))?
            .len();
        if size > limit {
            return Err(ContentError::TooLarge {
                digest: digest.clone(),
                size,
                limit,
            });
        }
        let mut buf = Vec::with_capacity(size as usize);
        f.read_to_end(&mut buf)
            .await
            .map_err(io_err("read", &self.path(digest)))?;
        Ok(buf)
    }

    /// Removes a blob. Returns whether it existed.
    pub async fn delete(&self, digest: &Digest) -> Result<bool, ContentError> {
        let p = self.path(digest);
        match tokio::fs::remove_file(&p).await {
            Ok(()) => Ok(true),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(false),
            Err(e) => Err(io_err("remove", &p)(e)),
        }
    }

    /// Every committed blob. Files whose names are not digests are ignored.
    pub fn list(&self) -> Result<Vec<Digest>, ContentError> {
        let mut out = Vec::new();
        let rd = std::fs::read_dir(&self.blobs).map_err(io_err("read", &self.blobs))?;
        for e in rd {
            let e = e.map_err(io_err("read", &self.blobs))?;
            if let Some(name) = e.file_name().to_str() {
                if let Ok(d) = format!("sha256:{name}").parse() {
                    out.push(d);
                }
            }
        }
        out.sort();
        Ok(out)
    }

    /// Starts a new write under `ingest/`.
    pub async fn writer(&self) -> Result<Writer, ContentError> {
        let name = format!(
            "{}-{}-{}",
            std::process::id(),
            INGEST_SEQ.fetch_add(1, Ordering::Relaxed),
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_nanos())
                .unwrap_or(0)
        );
        let path = self.ingest.join(name);
        let file = tokio::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&path)
            .await
            .map_err(io_err("create", &path))?;
        Ok(Writer {
            store: self.clone(),
            file: Some(file),
            path,
            hasher: Sha256::new(),
            written: 0,
        })
    }

    /// Writes `data` as a blob that must have digest `expected`.
    pub async fn write_all(&self, data: &[u8], expected: &Digest) -> Result<(), ContentError> {
        if self.exists(expected).await {
            return Ok(());
        }
        let mut w = self.writer().await?;
        w.write_all(data)
            .await
            .map_err(io_err("write", &w.path.clone()))?;
        w.commit(expected, Some(data.len() as u64)).await
    }

    /// Copies everything from `reader` into a blob that must have digest `expected`.
    pub async fn ingest<R: AsyncRead + Unpin>(
        &self,
        reader: &mut R,
        expected: &Digest,
        size: Option<u64>,
    ) -> Result<(), ContentError> {
        let mut w = self.writer().await?;
        tokio::io::copy(reader, &mut w)
            .await
            .map_err(io_err("write", &w.path.clone()))?;
        w.commit(expected, size).await
    }
}

/// A blob being written. Implements [`AsyncWrite`]; hashes what it writes.
#[derive(Debug)]
pub struct Writer {
    store: ContentStore,
    file: Option<tokio::fs::File>,
    path: PathBuf,
    hasher: Sha256,
    written: u64,
}

impl Writer {
    /// Bytes written so far.
    pub fn written(&self) -> u64 {
        self.written
    }

    /// Discards what was written so far (a download that has to start over).
    pub async fn reset(&mut self) -> io::Result<()> {
        if self.written == 0 {
            return Ok(());
        }
        let file = self
            .file
            .as_mut()
            .ok_or_else(|| io::Error::other("blob writer already committed"))?;
        file.flush().await?;
        file.set_len(0).await?;
        file.seek(io::SeekFrom::Start(0)).await?;
        self.hasher = Sha256::new();
        self.written = 0;
        Ok(())
    }

    /// Verifies and commits the blob: flush, fsync, check size and digest, then rename into
    /// `blobs/` and fsync the directory. On a mismatch the ingest file is removed and nothing
    /// becomes visible. Committing a blob that another writer committed meanwhile is fine: the
    /// bytes are the same by construction.
    pub async fn commit(self, expected: &Digest, size: Option<u64>) -> Result<(), ContentError> {
        self.commit_inner(Some(expected), size).await.map(drop)
    }

    /// Commits the blob under the digest of what was written (for content whose digest is
    /// not known in advance, such as the files of a docker archive). Returns the digest.
    pub async fn commit_computed(self, size: Option<u64>) -> Result<Digest, ContentError> {
        self.commit_inner(None, size).await
    }

    async fn commit_inner(
        mut self,
        expected: Option<&Digest>,
        size: Option<u64>,
    ) -> Result<Digest, ContentError> {
        let mut file = self.file.take().expect("writer used after commit");
        file.flush().await.map_err(io_err("flush", &self.path))?;
        file.sync_all().await.map_err(io_err("fsync", &self.path))?;
        drop(file);
        let actual = Digest::from_hasher(std::mem::take(&mut self.hasher));
        let expected = match expected {
            Some(e) => e,
            None => &actual,
        };
        if let Some(expected_size) = size {
            if expected_size != self.written {
                return Err(ContentError::SizeMismatch {
                    digest: expected.clone(),
                    expected: expected_size,
                    actual: self.written,
                });
            }
        }
        if &actual != expected {
            return Err(ContentError::DigestMismatch {
                expected: expected.clone(),
                actual,
            });
        }
        let target = self.store.path(expected);
        tokio::fs::rename(&self.path, &target)
            .await
            .map_err(io_err("rename", &target))?;
        // The ingest file is gone now: make Drop a no-op.
        self.path = PathBuf::new();
        let dir = self.store.blobs.clone();
        tokio::task::spawn_blocking(move || std::fs::File::open(&dir).and_then(|d| d.sync_all()))
            .await
            .map_err(|e| io_err("fsync", &self.store.blobs)(io::Error::other(e)))?
            .map_err(io_err("fsync", &self.store.blobs))?;
        Ok(expected.clone())
    }
}

impl Drop for Writer {
    fn drop(&mut self) {
        if !self.path.as_os_str().is_empty() {
            let _ = std::fs::remove_file(&self.path);
        }
    }
}

impl AsyncWrite for Writer {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = &mut *self;
        let file = this
            .file
            .as_mut()
            .ok_or_else(|| io::Error::other("blob writer already committed"))?;
        match Pin::new(file).poll_write(cx, buf) {
            Poll::Ready(Ok(n)) => {
                this.hasher.update(&buf[..n]);
                this.written += n as u64;
                Poll::Ready(Ok(n))
            }
            other => other,
        }
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.file.as_mut() {
            Some(f) => Pin::new(f).poll_flush(cx),
            None => Poll::Ready(Ok(())),
        }
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.file.as_mut() {
            Some(f) => Pin::new(f).poll_shutdown(cx),
            None => Poll::Ready(Ok(())),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ingest_count(root: &Path) -> usize {
        std::fs::read_dir(root.join("content/ingest"))
            .unwrap()
            .count()
    }

    #[tokio::test]
    async fn write_read_list_delete() {
        let tmp = tempfile::tempdir().unwrap();
        let cs = ContentStore::open(tmp.path()).unwrap();
        let d = Digest::of(b"hello");
        assert!(!cs.exists(&d).await);
        cs.write_all(b"hello", &d).await.unwrap();
        assert!(cs.exists(&d).await);
        assert_eq!(cs.size(&d).await.unwrap(), 5);
        assert_eq!(cs.read(&d, 100).await.unwrap(), b"hello");
        assert!(matches!(
            cs.read(&d, 2).await,
            Err(ContentError::TooLarge { .. })
        ));
        assert_eq!(cs.list().unwrap(), vec![d.clone()]);
        assert!(cs
            .path(&d)
            .ends_with(format!("content/blobs/sha256/{}", d.hex())));
        assert!(cs.delete(&d).await.unwrap());
        assert!(!cs.delete(&d).await.unwrap());
        assert!(matches!(cs.size(&d).await, Err(ContentError::NotFound(_))));
        assert_eq!(ingest_count(tmp.path()), 0);
    }

    #[tokio::test]
    async fn digest_mismatch_leaves_nothing() {
        let tmp = tempfile::tempdir().unwrap();
        let cs = ContentStore::open(tmp.path()).unwrap();
        let claimed = Digest::of(b"good");
        let err = cs.write_all(b"evil", &claimed).await.unwrap_err();
        assert!(matches!(err, ContentError::DigestMismatch { .. }));
        assert!(err.to_string().contains(&claimed.to_string()), "{err}");
        assert!(!cs.exists(&claimed).await);
        assert!(cs.list().unwrap().is_empty());
        assert_eq!(ingest_count(tmp.path()), 0);
    }

    #[tokio::test]
    async fn size_mismatch_leaves_nothing() {
        let tmp = tempfile::tempdir().unwrap();
        let cs = ContentStore::open(tmp.path()).unwrap();
        let d = Digest::of(b"abc");
        let mut w = cs.writer().await.unwrap();
        w.write_all(b"abc").await.unwrap();
        let err = w.commit(&d, Some(4)).await.unwrap_err();
        assert!(matches!(err, ContentError::SizeMismatch { .. }), "{err}");
        assert!(!cs.exists(&d).await);
        assert_eq!(ingest_count(tmp.path()), 0);
    }

    #[tokio::test]
    async fn streaming_writer_and_abandoned_writes() {
        let tmp = tempfile::tempdir().unwrap();
        let cs = ContentStore::open(tmp.path()).unwrap();
        let data: Vec<u8> = (0..1_000_000u32).map(|i| (i % 251) as u8).collect();
        let d = Digest::of(&data);
        cs.ingest(&mut &data[..], &d, Some(data.len() as u64))
            .await
            .unwrap();
        assert_eq!(cs.size(&d).await.unwrap(), 1_000_000);

        let mut w = cs.writer().await.unwrap();
        w.write_all(b"partial").await.unwrap();
        assert_eq!(ingest_count(tmp.path()), 1);
        drop(w);
        assert_eq!(ingest_count(tmp.path()), 0);

        // A crash leaves files behind; startup cleanup removes them.
        std::fs::write(tmp.path().join("content/ingest/stale"), b"x").unwrap();
        assert_eq!(cs.cleanup_ingest().unwrap(), 1);
        assert_eq!(ingest_count(tmp.path()), 0);
        assert!(cs.exists(&d).await);
    }
}
