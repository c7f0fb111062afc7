//! Image history: the config's `history` entries with the layers they made.

use serde::{Deserialize, Serialize};

use crate::digest::Digest;
use crate::error::Result;
use crate::manifest::{parse_document, Document, MAX_DOCUMENT_SIZE};
use crate::store::Store;

/// One step of an image's history, oldest first (as in the config; `docker history` shows
/// them newest first).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HistoryEntry {
    pub created: Option<String>,
    pub created_by: Option<String>,
    pub comment: Option<String>,
    /// The step changed only the config (ENV, CMD, ...), no layer.
    pub empty_layer: bool,
    /// The layer this step made (compressed blob digest), unless `empty_layer`.
    pub layer: Option<Digest>,
    /// Its uncompressed digest (diff ID).
    pub diff_id: Option<Digest>,
    /// Size of the layer blob as the manifest states it (compressed); 0 for empty layers.
    pub size: u64,
}

impl Store {
    /// The history of image `name`. Non-empty history entries are matched to layers in
    /// order; an image whose config has no history gets one entry per layer.
    pub async fn history(&self, name: &str) -> Result<Vec<HistoryEntry>> {
        let rec = self.image(name).await?;
        let config = self.image_config(name).await?;
        let body = self
            .inner
            .content
            .read(&rec.manifest, MAX_DOCUMENT_SIZE)
            .await?;
        let sizes: Vec<u64> = match parse_document(&body, None)? {
            Document::Manifest(m) => m.layers.iter().map(|l| l.size).collect(),
            Document::Index(_) => Vec::new(),
        };
        let layer = |i: usize| {
            (
                rec.layers.get(i).cloned(),
                config.rootfs.diff_ids.get(i).cloned(),
                sizes.get(i).copied().unwrap_or(0),
            )
        };
        let mut out = Vec::new();
        let mut next = 0;
        for h in &config.history {
            let (layer, diff_id, size) = if h.empty_layer {
                (None, None, 0)
            } else {
                next += 1;
                layer(next - 1)
            };
            out.push(HistoryEntry {
                created: h.created.clone(),
                created_by: h.created_by.clone(),
                comment: h.comment.clone(),
                empty_layer: h.empty_layer,
                layer,
                diff_id,
                size,
            });
        }
        // Layers the history does not account for (no history, or a short one).
        while next < rec.layers.len() {
            let (layer, diff_id, size) = layer(next);
            out.push(HistoryEntry {
                created: None,
                created_by: None,
                comment: None,
                empty_layer: false,
                layer,
                diff_id,
                size,
            });
            next += 1;
        }
        Ok(out)
    }
}
