//! The image service: every RPC is a thin translation onto `berth_imagestore::Store`.

use crate::api::images_server::Images;
use crate::api::*;
use berth_imagestore::{
    ArchiveFormat, Error as StoreError, Image, ImportOptions, ProgressEvent as StoreEvent,
    ProgressSink, PullOptions, PushOptions, RegistryOverrides, Store,
};
use std::path::PathBuf;
use std::pin::Pin;
use tokio_stream::wrappers::UnboundedReceiverStream;
use tokio_stream::{Stream, StreamExt};
use tonic::{Request, Response, Status};

pub struct ImageService {
    pub store: Store,
    pub bundles: crate::bundle::Bundles,
    pub containers: Option<std::sync::Arc<crate::containers::Manager>>,
}

impl ImageService {
    /// Fails if a container or a bundle uses the image named `rec.name`.
    async fn check_unused(&self, rec: &Image) -> Result<(), Status> {
        if let Some(m) = &self.containers {
            if let Some((_, id)) = m.images_in_use().into_iter().find(|(i, _)| *i == rec.name) {
                return Err(Status::failed_precondition(format!(
                    "conflict: unable to remove {:?}: container {} is using it (remove the container first, or force)",
                    rec.name,
                    &id[..12]
                )));
            }
        }
        if let Some(dir) = self.bundles.using(&rec.name).await {
            return Err(Status::failed_precondition(format!(
                "image {:?} is in use by the bundle at {dir} (remove it first, or force)",
                rec.name
            )));
        }
        Ok(())
    }
}

/// One line, with the gRPC code a client can act on.
pub fn status(e: StoreError) -> Status {
    let msg = e.to_string().replace('\n', " ");
    match e {
        StoreError::ImageNotFound(_) => Status::not_found(msg),
        StoreError::Reference(_) => Status::invalid_argument(msg),
        StoreError::Login { .. } | StoreError::Auth(_) => Status::permission_denied(msg),
        // What the registry says about a name or tag it does not have.
        StoreError::Pull {
            cause: berth_imagestore::PullCause::Registry(_),
            ..
        } if ["manifest unknown", "name unknown"]
            .iter()
            .any(|w| msg.contains(w)) =>
        {
            Status::not_found(msg)
        }
        _ => Status::unknown(msg),
    }
}

pub fn info(r: &Image) -> ImageInfo {
    ImageInfo {
        name: r.name.clone(),
        digest: r.manifest.to_string(),
        index_digest: r.index.as_ref().map(|d| d.to_string()).unwrap_or_default(),
        config_digest: r.config.to_string(),
        size: r.size,
        created: r.created.clone().unwrap_or_default(),
        platform: r.platform.to_string(),
        layers: r.layers.len() as u32,
        untagged: Vec::new(),
    }
}

fn event(e: &StoreEvent) -> ProgressEvent {
    ProgressEvent {
        digest: e.digest.to_string(),
        kind: format!("{:?}", e.kind).to_lowercase(),
        phase: format!("{:?}", e.phase).to_lowercase(),
        done: e.done,
        total: e.total,
        image: None,
        pushed: String::new(),
    }
}

fn overrides(plain_http: bool, insecure: bool) -> RegistryOverrides {
    RegistryOverrides {
        plain_http,
        insecure,
    }
}

type EventStream = Pin<Box<dyn Stream<Item = Result<ProgressEvent, Status>> + Send>>;

/// Runs `work` with a progress sink, streaming its events and then the final event (or error).
fn progress_stream<F, Fut>(work: F) -> EventStream
where
    F: FnOnce(ProgressSink) -> Fut + Send + 'static,
    Fut: std::future::Future<Output = Result<ProgressEvent, Status>> + Send + 'static,
{
    let (sink, rx) = ProgressSink::channel();
    let (tx, out) = tokio::sync::mpsc::unbounded_channel();
    let done_tx = tx.clone();
    tokio::spawn(async move {
        let mut rx = UnboundedReceiverStream::new(rx);
        let fwd = tokio::spawn(async move {
            while let Some(e) = rx.next().await {
                if tx.send(Ok(event(&e))).is_err() {
                    break;
                }
            }
        });
        // The work runs to the end even if the client goes away: a pull half done is worth
        // finishing for the next caller (and the store cleans up a failed one itself).
        let result = work(sink).await;
        let _ = fwd.await;
        let _ = done_tx.send(result);
    });
    Box::pin(UnboundedReceiverStream::new(out))
}

#[tonic::async_trait]
impl Images for ImageService {
    type PullStream = EventStream;
    type PushStream = EventStream;

    async fn pull(&self, req: Request<PullRequest>) -> Result<Response<EventStream>, Status> {
        let r = req.into_inner();
        let mut opts = PullOptions {
            registry: overrides(r.plain_http, r.insecure),
            ..Default::default()
        };
        if !r.platform.is_empty() {
            opts.platform = r
                .platform
                .parse()
                .map_err(|e| Status::invalid_argument(format!("--platform {}: {e}", r.platform)))?;
        }
        let store = self.store.clone();
        tracing::info!(image = %r.reference, "pull");
        Ok(Response::new(progress_stream(move |sink| async move {
            opts.progress = Some(sink);
            let (rec, report) = store
                .pull_with_report(&r.reference, &opts)
                .await
                .map_err(status)?;
            Ok(ProgressEvent {
                // What docker's last line says: a newer image, or up to date.
                phase: if report.layers_downloaded > 0 || report.bytes_downloaded > 0 {
                    "downloaded".into()
                } else {
                    "uptodate".into()
                },
                image: Some(info(&rec)),
                ..Default::default()
            })
        })))
    }

    async fn push(&self, req: Request<PushRequest>) -> Result<Response<EventStream>, Status> {
        let r = req.into_inner();
        let store = self.store.clone();
        tracing::info!(image = %r.name, "push");
        Ok(Response::new(progress_stream(move |sink| async move {
            let opts = PushOptions {
                registry: overrides(r.plain_http, r.insecure),
                progress: Some(sink),
                ..Default::default()
            };
            let report = if r.destination.is_empty() {
                store.push(&r.name, &opts).await
            } else {
                store.push_to(&r.name, &r.destination, &opts).await
            }
            .map_err(status)?;
            Ok(ProgressEvent {
                phase: "done".into(),
                pushed: format!("{}@{}", report.reference, report.digest),
                ..Default::default()
            })
        })))
    }

    async fn list(&self, _: Request<ListRequest>) -> Result<Response<ListResponse>, Status> {
        let images = self.store.images().await.map_err(status)?;
        Ok(Response::new(ListResponse {
            images: images.iter().map(info).collect(),
        }))
    }

    async fn inspect(&self, req: Request<ImageRef>) -> Result<Response<InspectResponse>, Status> {
        let name = req.into_inner().name;
        let rec = self.store.image(&name).await.map_err(status)?;
        let config = self.store.image_config(&name).await.map_err(status)?;
        let json = serde_json::json!({
            "Id": rec.config.to_string(),
            "RepoTags": [rec.name],
            "RepoDigests": [format!("{}@{}", repo_of(&rec.name), rec.index.as_ref().unwrap_or(&rec.manifest))],
            "Created": rec.created,
            "Size": rec.size,
            "Architecture": rec.platform.architecture,
            "Os": rec.platform.os,
            "Variant": rec.platform.variant,
            "Manifest": rec.manifest.to_string(),
            "Config": serde_json::to_value(&config).unwrap_or_default().get("config").cloned(),
            "RootFS": {"Type": "layers", "Layers": rec.layers.iter().map(|d| d.to_string()).collect::<Vec<_>>()},
        });
        Ok(Response::new(InspectResponse {
            json: json.to_string(),
        }))
    }

    async fn remove(&self, req: Request<RemoveRequest>) -> Result<Response<ImageInfo>, Status> {
        let r = req.into_inner();
        let Some(found) = self.store.find(&r.name).await.map_err(status)? else {
            let name = Store::normalize(&r.name).unwrap_or_else(|_| r.name.clone());
            return Err(status(StoreError::ImageNotFound(name)));
        };
        // A name takes off that name; an ID every name of the image, as docker does: with
        // more than one only when forced.
        let targets = match &found.named {
            Some(rec) => vec![rec.clone()],
            None if found.records.len() == 1 || r.force => found.records.clone(),
            None => {
                return Err(Status::failed_precondition(format!(
                    "conflict: unable to delete {} (must be forced) - image is referenced in multiple repositories",
                    found.short_id()
                )))
            }
        };
        if !r.force {
            for rec in &targets {
                self.check_unused(rec).await?;
            }
        }
        let mut untagged = Vec::new();
        for rec in &targets {
            let rec = self.store.remove(&rec.name).await.map_err(status)?;
            tracing::info!(image = %rec.name, "removed");
            untagged.push(rec.name);
        }
        let mut out = info(&targets[0]);
        out.untagged = untagged;
        Ok(Response::new(out))
    }

    async fn tag(&self, req: Request<TagRequest>) -> Result<Response<ImageInfo>, Status> {
        let r = req.into_inner();
        let rec = self.store.tag(&r.source, &r.target).await.map_err(status)?;
        Ok(Response::new(info(&rec)))
    }

    async fn history(&self, req: Request<ImageRef>) -> Result<Response<HistoryResponse>, Status> {
        let entries = self
            .store
            .history(&req.into_inner().name)
            .await
            .map_err(status)?;
        Ok(Response::new(HistoryResponse {
            entries: entries
                .into_iter()
                .map(|h| HistoryEntry {
                    created: h.created.unwrap_or_default(),
                    created_by: h.created_by.unwrap_or_default(),
                    comment: h.comment.unwrap_or_default(),
                    empty_layer: h.empty_layer,
                    size: h.size,
                    layer: h.layer.map(|d| d.to_string()).unwrap_or_default(),
                })
                .collect(),
        }))
    }

    async fn login(&self, req: Request<LoginRequest>) -> Result<Response<Empty>, Status> {
        let r = req.into_inner();
        self.store
            .login_with(
                &r.registry,
                &r.username,
                &r.password,
                &overrides(r.plain_http, r.insecure),
            )
            .await
            .map_err(status)?;
        Ok(Response::new(Empty {}))
    }

    async fn logout(
        &self,
        req: Request<LogoutRequest>,
    ) -> Result<Response<LogoutResponse>, Status> {
        let removed = self
            .store
            .logout(&req.into_inner().registry)
            .await
            .map_err(status)?;
        Ok(Response::new(LogoutResponse { removed }))
    }

    async fn import(&self, req: Request<ImportRequest>) -> Result<Response<ListResponse>, Status> {
        let r = req.into_inner();
        let opts = ImportOptions {
            name: (!r.name.is_empty()).then_some(r.name),
            ..Default::default()
        };
        let images = self
            .store
            .import(PathBuf::from(&r.path), &opts)
            .await
            .map_err(status)?;
        Ok(Response::new(ListResponse {
            images: images.iter().map(info).collect(),
        }))
    }

    async fn export(&self, req: Request<ExportRequest>) -> Result<Response<Empty>, Status> {
        let r = req.into_inner();
        let format: ArchiveFormat = if r.format.is_empty() {
            "docker-archive"
        } else {
            &r.format
        }
        .parse()
        .map_err(|e| Status::invalid_argument(format!("format {:?}: {e}", r.format)))?;
        let names: Vec<&str> = r.names.iter().map(String::as_str).collect();
        self.store
            .export(&names, PathBuf::from(&r.path), format)
            .await
            .map_err(status)?;
        Ok(Response::new(Empty {}))
    }

    async fn gc(&self, _: Request<Empty>) -> Result<Response<GcResponse>, Status> {
        let s = self.store.gc().await.map_err(status)?;
        Ok(Response::new(GcResponse {
            blobs_removed: s.blobs as u64,
            snapshots_removed: s.snapshots as u64,
        }))
    }

    async fn prepare_bundle(
        &self,
        req: Request<BundleRequest>,
    ) -> Result<Response<BundleResponse>, Status> {
        let r = req.into_inner();
        let config = self.bundles.prepare(&self.store, &r.image, &r.dir).await?;
        Ok(Response::new(BundleResponse { config }))
    }

    async fn remove_bundle(&self, req: Request<BundleRequest>) -> Result<Response<Empty>, Status> {
        self.bundles
            .remove(&self.store, &req.into_inner().dir)
            .await?;
        Ok(Response::new(Empty {}))
    }

    async fn version(&self, _: Request<Empty>) -> Result<Response<VersionResponse>, Status> {
        Ok(Response::new(VersionResponse {
            version: env!("CARGO_PKG_VERSION").into(),
            api: "berth.v1".into(),
        }))
    }
}

/// `host/repo` of `host/repo:tag`.
pub fn repo_of(name: &str) -> &str {
    let slash = name.rfind('/').unwrap_or(0);
    match name[slash..].rfind(':') {
        Some(i) => &name[..slash + i],
        None => name,
    }
}
