//! Pull progress: one stream of events per blob, for progress bars in the CLI and for berthd to
//! forward over gRPC.
//!
//! ```no_run
//! # async fn demo(store: berth_imagestore::Store) -> Result<(), berth_imagestore::Error> {
//! use berth_imagestore::{ProgressSink, PullOptions};
//! let (sink, mut events) = ProgressSink::channel();
//! let opts = PullOptions { progress: Some(sink), ..Default::default() };
//! let pull = tokio::spawn(async move { store.pull("127.0.0.1:5000/library/nginx", &opts).await });
//! while let Some(ev) = events.recv().await {
//!     println!("{} {:?} {}/{}", ev.digest, ev.phase, ev.done, ev.total);
//! }
//! let image = pull.await.unwrap()?;
//! # Ok(()) }
//! ```
//!
//! For every layer (and the config) a pull sends `Waiting`, then either `Exists` (already in
//! the store) or `Downloading` events with growing `done` (at most one per 256 KiB) and
//! `Downloaded`, then `Unpacking` for layers whose snapshot is missing, and finally `Done`.
//! The channel closes when the pull returns and the options (holding the sink) are dropped.
//!
//! A push sends, per blob, `Exists` (the registry has it) or `Uploading` events, then `Done`.

use std::sync::Arc;

use crate::digest::Digest;

/// What a blob is to the image.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum BlobKind {
    Config,
    Layer,
}

/// Where a blob is in the pull.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ProgressPhase {
    /// Queued behind other layers.
    Waiting,
    /// Already in the store (blob, or for a layer its unpacked snapshot): nothing to fetch.
    Exists,
    /// Bytes arriving; `done` grows.
    Downloading,
    /// Complete and verified.
    Downloaded,
    /// Being unpacked into its snapshot.
    Unpacking,
    /// Push: bytes leaving; `done` grows (the registry already having it is `Exists`).
    Uploading,
    /// Finished.
    Done,
}

/// One progress event.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ProgressEvent {
    /// The image being pulled (normalized reference).
    pub image: String,
    pub digest: Digest,
    pub kind: BlobKind,
    pub phase: ProgressPhase,
    /// Bytes downloaded so far.
    pub done: u64,
    /// Size of the blob as the manifest states it.
    pub total: u64,
}

impl ProgressEvent {
    /// Whether this blob is finished.
    pub fn is_done(&self) -> bool {
        self.phase == ProgressPhase::Done
    }
}

/// Where progress events go: a callback, or the sending half of a channel.
#[derive(Clone)]
pub struct ProgressSink(Arc<dyn Fn(ProgressEvent) + Send + Sync>);

impl ProgressSink {
    /// Calls `f` for each event (from the pull's tasks: keep it quick).
    pub fn new(f: impl Fn(ProgressEvent) + Send + Sync + 'static) -> Self {
        Self(Arc::new(f))
    }

    /// A sink and the receiver of its events. Unbounded, but events are few: a handful per
    /// blob plus one per 256 KiB downloaded.
    pub fn channel() -> (Self, tokio::sync::mpsc::UnboundedReceiver<ProgressEvent>) {
        let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
        (
            Self::new(move |ev| {
                let _ = tx.send(ev);
            }),
            rx,
        )
    }

    pub(crate) fn send(&self, ev: ProgressEvent) {
        (self.0)(ev)
    }
}

impl std::fmt::Debug for ProgressSink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ProgressSink")
    }
}

/// Minimum bytes between two `Downloading` events of one blob.
pub(crate) const PROGRESS_STEP: u64 = 256 << 10;

/// Sends the events of one blob (no-op without a sink).
#[derive(Clone)]
pub(crate) struct BlobProgress {
    sink: Option<ProgressSink>,
    image: String,
    digest: Digest,
    kind: BlobKind,
    total: u64,
}

impl BlobProgress {
    pub(crate) fn new(
        sink: Option<&ProgressSink>,
        image: &str,
        digest: &Digest,
        kind: BlobKind,
        total: u64,
    ) -> Self {
        Self {
            sink: sink.cloned(),
            image: image.to_string(),
            digest: digest.clone(),
            kind,
            total,
        }
    }

    pub(crate) fn send(&self, phase: ProgressPhase, done: u64) {
        if let Some(s) = &self.sink {
            s.send(ProgressEvent {
                image: self.image.clone(),
                digest: self.digest.clone(),
                kind: self.kind,
                phase,
                done,
                total: self.total,
            });
        }
    }

    /// A callback for byte counts that sends a `Downloading` event per [`PROGRESS_STEP`].
    pub(crate) fn bytes_callback(&self) -> impl Fn(u64) + Send + Sync + '_ {
        self.throttled(ProgressPhase::Downloading)
    }

    /// Like [`Self::bytes_callback`], owning its state (for `'static` streams).
    pub(crate) fn owned_callback(self, phase: ProgressPhase) -> impl Fn(u64) + Send + Sync {
        let last = std::sync::atomic::AtomicU64::new(0);
        move |done| self.maybe_send(&last, phase, done)
    }

    fn throttled(&self, phase: ProgressPhase) -> impl Fn(u64) + Send + Sync + '_ {
        let last = std::sync::atomic::AtomicU64::new(0);
        move |done| self.maybe_send(&last, phase, done)
    }

    fn maybe_send(&self, last: &std::sync::atomic::AtomicU64, phase: ProgressPhase, done: u64) {
        use std::sync::atomic::Ordering::Relaxed;
        let prev = last.load(Relaxed);
        if done < prev || done - prev >= PROGRESS_STEP || done == self.total {
            last.store(done, Relaxed);
            self.send(phase, done);
        }
    }
}
