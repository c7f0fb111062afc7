//! The Kubernetes CRI v1 API on berthd's socket (types from the `k8s-cri` crate).
//!
//! Done: the ImageService on the image store (PullImage, ImageStatus, ListImages, RemoveImage,
//! ImageFsInfo), the RuntimeService's Version and Status, pod sandboxes ([`crate::pods`]),
//! containers in them ([`crate::cri_containers`], their security context and resources in
//! [`crate::cri_spec`]), stats and container events; Exec, Attach and PortForward answer URLs
//! on the streaming server ([`crate::cri_streaming`]). What is not implemented answers
//! `Unimplemented` with the name of the call, never a panic.

use berth_imagestore::metadata::ImageRecord;
use berth_imagestore::Store;
use k8s_cri::v1;
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use tonic::{Request, Response, Status};

pub use v1::image_service_server::ImageServiceServer;
pub use v1::runtime_service_server::RuntimeServiceServer;

/// The runtime handlers (RuntimeClass handlers) berthd has: the default one, also by name.
pub const RUNTIME_HANDLERS: &[&str] = &["", "berth"];

/// The CRI version berth speaks.
pub const CRI_API_VERSION: &str = "v1";

fn not_yet(rpc: &str) -> Status {
    Status::unimplemented(format!("{rpc} is not implemented by berthd yet"))
}

/// Credentials from PullImage's AuthConfig: user name and password, or docker's `auth`
/// (base64 of `user:password`). Tokens are not supported (berth speaks basic auth and the
/// registry's token flow with those); none at all is anonymous or the configured ones.
fn pull_credentials(
    a: &v1::AuthConfig,
) -> Result<Option<berth_imagestore::auth::Credentials>, Status> {
    use base64::Engine as _;
    if !a.identity_token.is_empty() || !a.registry_token.is_empty() {
        return Err(Status::unimplemented(
            "PullImage with an identity or registry token is not implemented by berthd \
             (give a user name and password)",
        ));
    }
    let (username, password) = if !a.auth.is_empty() {
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(a.auth.trim())
            .map_err(|e| Status::invalid_argument(format!("PullImage auth: not base64: {e}")))?;
        let text = String::from_utf8(bytes)
            .map_err(|_| Status::invalid_argument("PullImage auth: not UTF-8"))?;
        let (u, p) = text
            .split_once(':')
            .ok_or_else(|| Status::invalid_argument("PullImage auth: not user:password"))?;
        (u.to_string(), p.to_string())
    } else {
        (a.username.clone(), a.password.clone())
    };
    if username.is_empty() && password.is_empty() {
        return Ok(None);
    }
    Ok(Some(berth_imagestore::auth::Credentials {
        username,
        password,
    }))
}

/// The RuntimeService.
pub struct CriRuntime {
    /// Where CNI network configurations are looked for (default /etc/cni/net.d).
    pub cni_conf_dir: PathBuf,
    pub pods: std::sync::Arc<crate::pods::Pods>,
    pub containers: std::sync::Arc<crate::containers::Manager>,
    pub store: Store,
    /// Where Exec, Attach and PortForward send the client (None: they are unavailable).
    pub streaming: Option<std::sync::Arc<berth_streaming::Server>>,
}

/// The first CNI network configuration in `dir` (`*.conf`, `*.conflist`, `*.json`, by name,
/// as the kubelet's runtimes pick it), if any.
pub fn first_cni_config(dir: &Path) -> Option<PathBuf> {
    let mut found: Vec<PathBuf> = std::fs::read_dir(dir)
        .ok()?
        .flatten()
        .map(|e| e.path())
        .filter(|p| {
            matches!(
                p.extension().and_then(|e| e.to_str()),
                Some("conf" | "conflist" | "json")
            ) && p.is_file()
        })
        .collect();
    found.sort();
    found.into_iter().next()
}

/// Runs a call that changes state to its end even when the client goes away: tonic drops a
/// handler's future when the client cancels or its deadline passes, which would leave a pod or
/// container half made (reserved, never listed) or half removed. The client that retries finds
/// it done, as the kubelet expects.
async fn to_the_end<T: Send + 'static>(
    f: impl std::future::Future<Output = Result<T, Status>> + Send + 'static,
) -> Result<T, Status> {
    tokio::spawn(async move {
        let r = f.await;
        // Said here too: the client may be gone, and with it the answer.
        if let Err(s) = &r {
            tracing::warn!(code = ?s.code(), "{}", s.message());
        }
        r
    })
    .await
    .map_err(|e| Status::internal(format!("the call's task failed: {e}")))?
}

fn condition(kind: &str, ready: bool, reason: &str, message: String) -> v1::RuntimeCondition {
    v1::RuntimeCondition {
        r#type: kind.into(),
        status: ready,
        reason: reason.into(),
        message,
    }
}

#[tonic::async_trait]
impl v1::runtime_service_server::RuntimeService for CriRuntime {
    async fn version(
        &self,
        req: Request<v1::VersionRequest>,
    ) -> Result<Response<v1::VersionResponse>, Status> {
        Ok(Response::new(v1::VersionResponse {
            version: "0.1.0".into(),
            runtime_name: "berth".into(),
            runtime_version: env!("CARGO_PKG_VERSION").into(),
            runtime_api_version: crate::cri_alpha::api_version(&req).into(),
        }))
    }

    async fn status(
        &self,
        req: Request<v1::StatusRequest>,
    ) -> Result<Response<v1::StatusResponse>, Status> {
        let network = match first_cni_config(&self.cni_conf_dir) {
            Some(_) => condition("NetworkReady", true, "", String::new()),
            None => condition(
                "NetworkReady",
                false,
                "NetworkPluginNotReady",
                format!(
                    "Network plugin returns error: no CNI network configuration in {}",
                    self.cni_conf_dir.display()
                ),
            ),
        };
        let mut info = HashMap::new();
        if req.get_ref().verbose {
            info.insert(
                "config".into(),
                serde_json::json!({ "cniConfDir": self.cni_conf_dir }).to_string(),
            );
        }
        Ok(Response::new(v1::StatusResponse {
            status: Some(v1::RuntimeStatus {
                conditions: vec![condition("RuntimeReady", true, "", String::new()), network],
            }),
            info,
            runtime_handlers: RUNTIME_HANDLERS
                .iter()
                .map(|name| v1::RuntimeHandler {
                    name: name.to_string(),
                    features: Some(v1::RuntimeHandlerFeatures {
                        recursive_read_only_mounts: crate::cri_containers::rro_supported(
                            &self.containers,
                        ),
                        user_namespaces: false,
                    }),
                })
                .collect(),
            features: Some(v1::RuntimeFeatures {
                supplemental_groups_policy: true,
            }),
        }))
    }

    type GetContainerEventsStream = std::pin::Pin<
        Box<dyn tokio_stream::Stream<Item = Result<v1::ContainerEventResponse, Status>> + Send>,
    >;

    async fn get_container_events(
        &self,
        _: Request<v1::GetEventsRequest>,
    ) -> Result<Response<Self::GetContainerEventsStream>, Status> {
        let mut rx = self.containers.subscribe();
        let (m, pods) = (self.containers.clone(), self.pods.clone());
        let (tx, out) = tokio::sync::mpsc::channel(64);
        tokio::spawn(async move {
            loop {
                let ev = match rx.recv().await {
                    Ok(ev) => ev,
                    Err(tokio::sync::broadcast::error::RecvError::Lagged(n)) => {
                        tracing::warn!("container events: a slow subscriber lost {n}");
                        continue;
                    }
                    Err(tokio::sync::broadcast::error::RecvError::Closed) => break,
                };
                let Some(e) = crate::cri_containers::event(&m, &pods, &ev) else {
                    continue;
                };
                if tx.send(Ok(e)).await.is_err() {
                    break; // the kubelet went away
                }
            }
        });
        Ok(Response::new(Box::pin(
            tokio_stream::wrappers::ReceiverStream::new(out),
        )))
    }

    async fn run_pod_sandbox(
        &self,
        req: Request<v1::RunPodSandboxRequest>,
    ) -> Result<Response<v1::RunPodSandboxResponse>, Status> {
        let pods = self.pods.clone();
        let id = to_the_end(async move { pods.run(req.into_inner()).await }).await?;
        Ok(Response::new(v1::RunPodSandboxResponse {
            pod_sandbox_id: id,
        }))
    }

    async fn stop_pod_sandbox(
        &self,
        req: Request<v1::StopPodSandboxRequest>,
    ) -> Result<Response<v1::StopPodSandboxResponse>, Status> {
        let (pods, containers) = (self.pods.clone(), self.containers.clone());
        to_the_end(async move {
            // Stopping what is gone succeeds (pods.stop says why).
            let id = match pods.resolve(&req.into_inner().pod_sandbox_id) {
                Ok(id) => id,
                Err(s) if s.code() == tonic::Code::NotFound => return Ok(()),
                Err(s) => return Err(s),
            };
            // Its containers first, forcibly (the kubelet has stopped them gracefully already).
            for c in crate::cri_containers::of_pod(&containers, &id) {
                // One removed meanwhile is stopped enough.
                match containers.stop(&c, Some(0), "").await {
                    Err(s) if s.code() != tonic::Code::NotFound => return Err(s),
                    _ => {}
                }
            }
            pods.stop(&id).await
        })
        .await?;
        Ok(Response::new(v1::StopPodSandboxResponse {}))
    }

    async fn remove_pod_sandbox(
        &self,
        req: Request<v1::RemovePodSandboxRequest>,
    ) -> Result<Response<v1::RemovePodSandboxResponse>, Status> {
        let (pods, containers) = (self.pods.clone(), self.containers.clone());
        to_the_end(async move {
            let id = req.into_inner().pod_sandbox_id;
            if let Ok(full) = pods.resolve(&id) {
                for c in crate::cri_containers::of_pod(&containers, &full) {
                    containers.remove(&c, true).await?;
                }
            }
            pods.remove(&id).await
        })
        .await?;
        Ok(Response::new(v1::RemovePodSandboxResponse {}))
    }

    async fn pod_sandbox_status(
        &self,
        req: Request<v1::PodSandboxStatusRequest>,
    ) -> Result<Response<v1::PodSandboxStatusResponse>, Status> {
        let status = self.pods.status(&req.into_inner().pod_sandbox_id)?;
        Ok(Response::new(v1::PodSandboxStatusResponse {
            status: Some(status),
            timestamp: crate::containers::now_nanos(),
            ..Default::default()
        }))
    }

    async fn list_pod_sandbox(
        &self,
        req: Request<v1::ListPodSandboxRequest>,
    ) -> Result<Response<v1::ListPodSandboxResponse>, Status> {
        let items = self.pods.list(req.into_inner().filter);
        Ok(Response::new(v1::ListPodSandboxResponse { items }))
    }

    async fn create_container(
        &self,
        req: Request<v1::CreateContainerRequest>,
    ) -> Result<Response<v1::CreateContainerResponse>, Status> {
        let (pods, containers, store) = (
            self.pods.clone(),
            self.containers.clone(),
            self.store.clone(),
        );
        let id = to_the_end(async move {
            crate::cri_containers::create(&containers, &pods, &store, req.into_inner()).await
        })
        .await?;
        Ok(Response::new(v1::CreateContainerResponse {
            container_id: id,
        }))
    }

    async fn start_container(
        &self,
        req: Request<v1::StartContainerRequest>,
    ) -> Result<Response<v1::StartContainerResponse>, Status> {
        let containers = self.containers.clone();
        let id = req.into_inner().container_id;
        to_the_end(async move { containers.start(&id).await }).await?;
        Ok(Response::new(v1::StartContainerResponse {}))
    }

    async fn stop_container(
        &self,
        req: Request<v1::StopContainerRequest>,
    ) -> Result<Response<v1::StopContainerResponse>, Status> {
        let (containers, r) = (self.containers.clone(), req.into_inner());
        to_the_end(async move {
            crate::cri_containers::stop(&containers, &r.container_id, r.timeout).await
        })
        .await?;
        Ok(Response::new(v1::StopContainerResponse {}))
    }

    async fn remove_container(
        &self,
        req: Request<v1::RemoveContainerRequest>,
    ) -> Result<Response<v1::RemoveContainerResponse>, Status> {
        let containers = self.containers.clone();
        to_the_end(async move {
            crate::cri_containers::remove(&containers, &req.into_inner().container_id).await
        })
        .await?;
        Ok(Response::new(v1::RemoveContainerResponse {}))
    }

    async fn list_containers(
        &self,
        req: Request<v1::ListContainersRequest>,
    ) -> Result<Response<v1::ListContainersResponse>, Status> {
        let containers = crate::cri_containers::list(&self.containers, req.into_inner().filter);
        Ok(Response::new(v1::ListContainersResponse { containers }))
    }

    async fn container_status(
        &self,
        req: Request<v1::ContainerStatusRequest>,
    ) -> Result<Response<v1::ContainerStatusResponse>, Status> {
        let status =
            crate::cri_containers::status(&self.containers, &req.into_inner().container_id)?;
        Ok(Response::new(v1::ContainerStatusResponse {
            status: Some(status),
            ..Default::default()
        }))
    }

    async fn update_container_resources(
        &self,
        req: Request<v1::UpdateContainerResourcesRequest>,
    ) -> Result<Response<v1::UpdateContainerResourcesResponse>, Status> {
        let r = req.into_inner();
        crate::cri_containers::update_resources(&self.containers, &r.container_id, r.linux).await?;
        Ok(Response::new(v1::UpdateContainerResourcesResponse {}))
    }

    async fn reopen_container_log(
        &self,
        req: Request<v1::ReopenContainerLogRequest>,
    ) -> Result<Response<v1::ReopenContainerLogResponse>, Status> {
        crate::cri_containers::reopen_log(&self.containers, &req.into_inner().container_id).await?;
        Ok(Response::new(v1::ReopenContainerLogResponse {}))
    }

    async fn exec_sync(
        &self,
        req: Request<v1::ExecSyncRequest>,
    ) -> Result<Response<v1::ExecSyncResponse>, Status> {
        let r = req.into_inner();
        let out =
            crate::cri_containers::exec_sync(&self.containers, &r.container_id, r.cmd, r.timeout)
                .await?;
        Ok(Response::new(out))
    }

    async fn exec(
        &self,
        req: Request<v1::ExecRequest>,
    ) -> Result<Response<v1::ExecResponse>, Status> {
        let s = self.streaming.as_deref();
        let r = crate::cri_streaming::exec_url(s, &self.containers, req.into_inner())?;
        Ok(Response::new(r))
    }

    async fn attach(
        &self,
        req: Request<v1::AttachRequest>,
    ) -> Result<Response<v1::AttachResponse>, Status> {
        let s = self.streaming.as_deref();
        let r = crate::cri_streaming::attach_url(s, &self.containers, req.into_inner())?;
        Ok(Response::new(r))
    }

    async fn port_forward(
        &self,
        req: Request<v1::PortForwardRequest>,
    ) -> Result<Response<v1::PortForwardResponse>, Status> {
        let s = self.streaming.as_deref();
        let r = crate::cri_streaming::port_forward_url(s, &self.pods, req.into_inner())?;
        Ok(Response::new(r))
    }

    async fn container_stats(
        &self,
        req: Request<v1::ContainerStatsRequest>,
    ) -> Result<Response<v1::ContainerStatsResponse>, Status> {
        let stats = crate::cri_containers::stats(
            &self.containers,
            &self.store,
            &req.into_inner().container_id,
        )
        .await?;
        Ok(Response::new(v1::ContainerStatsResponse {
            stats: Some(stats),
        }))
    }

    async fn list_container_stats(
        &self,
        req: Request<v1::ListContainerStatsRequest>,
    ) -> Result<Response<v1::ListContainerStatsResponse>, Status> {
        let stats = crate::cri_containers::list_stats(
            &self.containers,
            &self.store,
            req.into_inner().filter,
        )
        .await;
        Ok(Response::new(v1::ListContainerStatsResponse { stats }))
    }

    async fn pod_sandbox_stats(
        &self,
        req: Request<v1::PodSandboxStatsRequest>,
    ) -> Result<Response<v1::PodSandboxStatsResponse>, Status> {
        let stats = crate::cri_containers::pod_stats(
            &self.containers,
            &self.store,
            &self.pods,
            &req.into_inner().pod_sandbox_id,
        )
        .await?;
        Ok(Response::new(v1::PodSandboxStatsResponse {
            stats: Some(stats),
        }))
    }

    async fn list_pod_sandbox_stats(
        &self,
        req: Request<v1::ListPodSandboxStatsRequest>,
    ) -> Result<Response<v1::ListPodSandboxStatsResponse>, Status> {
        let f = req.into_inner().filter;
        let filter = f.map(|f| v1::PodSandboxFilter {
            id: f.id,
            label_selector: f.label_selector,
            ..Default::default()
        });
        let mut stats = Vec::new();
        for p in self.pods.list(filter) {
            if let Ok(s) =
                crate::cri_containers::pod_stats(&self.containers, &self.store, &self.pods, &p.id)
                    .await
            {
                stats.push(s);
            }
        }
        Ok(Response::new(v1::ListPodSandboxStatsResponse { stats }))
    }

    async fn update_runtime_config(
        &self,
        req: Request<v1::UpdateRuntimeConfigRequest>,
    ) -> Result<Response<v1::UpdateRuntimeConfigResponse>, Status> {
        // The kubelet sends the node's pod CIDR here; berth's pod addresses come from the CNI
        // configuration (as with containerd's default), so it is only logged.
        if let Some(cidr) = req
            .into_inner()
            .runtime_config
            .and_then(|c| c.network_config)
            .map(|n| n.pod_cidr)
            .filter(|c| !c.is_empty())
        {
            tracing::info!(pod_cidr = %cidr, "runtime config from the kubelet");
        }
        Ok(Response::new(v1::UpdateRuntimeConfigResponse {}))
    }

    async fn checkpoint_container(
        &self,
        _: Request<v1::CheckpointContainerRequest>,
    ) -> Result<Response<v1::CheckpointContainerResponse>, Status> {
        Err(not_yet("CheckpointContainer"))
    }

    async fn list_metric_descriptors(
        &self,
        _: Request<v1::ListMetricDescriptorsRequest>,
    ) -> Result<Response<v1::ListMetricDescriptorsResponse>, Status> {
        Err(not_yet("ListMetricDescriptors"))
    }

    async fn list_pod_sandbox_metrics(
        &self,
        _: Request<v1::ListPodSandboxMetricsRequest>,
    ) -> Result<Response<v1::ListPodSandboxMetricsResponse>, Status> {
        Err(not_yet("ListPodSandboxMetrics"))
    }

    async fn runtime_config(
        &self,
        req: Request<v1::RuntimeConfigRequest>,
    ) -> Result<Response<v1::RuntimeConfigResponse>, Status> {
        let _ = req;
        // berth manages cgroups through cgroupfs (berth-runtime refuses --systemd-cgroup).
        Ok(Response::new(v1::RuntimeConfigResponse {
            linux: Some(v1::LinuxRuntimeConfiguration {
                cgroup_driver: v1::CgroupDriver::Cgroupfs as i32,
            }),
        }))
    }
}

/// The ImageService, on berthd's image store.
pub struct CriImages {
    pub store: Store,
}

impl CriImages {
    async fn to_cri(&self, id: &str, recs: &[ImageRecord]) -> v1::Image {
        let mut tags: Vec<String> = recs
            .iter()
            .filter(|r| !r.name.contains('@'))
            .map(|r| r.name.clone())
            .collect();
        tags.sort();
        let mut digests: Vec<String> = recs
            .iter()
            .map(|r| berth_imagestore::find::repo_digest(&r.name, &r.manifest.to_string()))
            .collect();
        digests.sort();
        digests.dedup();
        let user = match recs.first() {
            Some(r) => self
                .store
                .config(&r.name)
                .await
                .map(|c| c.user.unwrap_or_default())
                .unwrap_or_default(),
            None => String::new(),
        };
        let user = user.split(':').next().unwrap_or("").to_string();
        let (uid, username) = match user.parse::<i64>() {
            Ok(n) => (Some(v1::Int64Value { value: n }), String::new()),
            Err(_) if user.is_empty() => (Some(v1::Int64Value { value: 0 }), String::new()),
            Err(_) => (None, user),
        };
        v1::Image {
            id: id.to_string(),
            repo_tags: tags,
            repo_digests: digests,
            size: recs.first().map(|r| r.size).unwrap_or(0),
            uid,
            username,
            spec: Some(v1::ImageSpec {
                image: id.to_string(),
                ..Default::default()
            }),
            pinned: false,
        }
    }

    /// See [`find_image`].
    async fn find(&self, reference: &str) -> Result<Option<(String, Vec<ImageRecord>)>, Status> {
        find_image(&self.store, reference).await
    }
}

/// The image `reference` names, with every name it has: a name (normalized as docker does),
/// an id (`sha256:…` of the config, or a unique prefix of it without `sha256:`), or
/// `repo@sha256:…` of its manifest ([`Store::find`]). Returns its id and records.
pub(crate) async fn find_image(
    store: &Store,
    reference: &str,
) -> Result<Option<(String, Vec<ImageRecord>)>, Status> {
    if reference.trim().is_empty() {
        return Err(Status::invalid_argument("image: empty reference"));
    }
    match store.find(reference).await {
        Ok(found) => Ok(found.map(|f| (f.id, f.records))),
        Err(e @ berth_imagestore::Error::AmbiguousId { .. }) => {
            Err(Status::invalid_argument(e.to_string()))
        }
        Err(berth_imagestore::Error::Reference(e)) => Err(Status::invalid_argument(format!(
            "image {:?}: {e}",
            reference.trim()
        ))),
        Err(e) => Err(crate::images::status(e)),
    }
}

fn image_ref(spec: Option<&v1::ImageSpec>) -> Result<&str, Status> {
    match spec.map(|s| s.image.as_str()) {
        Some(s) if !s.trim().is_empty() => Ok(s),
        _ => Err(Status::invalid_argument("image: no image reference given")),
    }
}

/// Bytes and inodes used below `dir` (hard links counted once), without following symlinks or
/// leaving the file system.
pub(crate) fn usage(dir: &Path) -> (u64, u64) {
    use std::os::unix::fs::MetadataExt;
    let Ok(root) = std::fs::symlink_metadata(dir) else {
        return (0, 0);
    };
    let dev = root.dev();
    let mut seen = std::collections::HashSet::new();
    let (mut bytes, mut inodes) = (0u64, 0u64);
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(rd) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in rd.flatten() {
            let Ok(md) = e.metadata() else { continue };
            if md.dev() != dev || !seen.insert(md.ino()) {
                continue;
            }
            inodes += 1;
            bytes += md.blocks() * 512;
            if md.is_dir() {
                stack.push(e.path());
            }
        }
    }
    (bytes, inodes)
}

#[tonic::async_trait]
impl v1::image_service_server::ImageService for CriImages {
    async fn list_images(
        &self,
        req: Request<v1::ListImagesRequest>,
    ) -> Result<Response<v1::ListImagesResponse>, Status> {
        let filter = req
            .into_inner()
            .filter
            .and_then(|f| f.image)
            .map(|s| s.image)
            .filter(|s| !s.is_empty());
        let mut images = Vec::new();
        match filter {
            Some(f) => {
                if let Some((id, recs)) = self.find(&f).await? {
                    images.push(self.to_cri(&id, &recs).await);
                }
            }
            None => {
                let all = self.store.images().await.map_err(crate::images::status)?;
                for (id, recs) in berth_imagestore::find::group(all) {
                    images.push(self.to_cri(&id, &recs).await);
                }
            }
        }
        Ok(Response::new(v1::ListImagesResponse { images }))
    }

    async fn image_status(
        &self,
        req: Request<v1::ImageStatusRequest>,
    ) -> Result<Response<v1::ImageStatusResponse>, Status> {
        let req = req.into_inner();
        let reference = image_ref(req.image.as_ref())?;
        let Some((id, recs)) = self.find(reference).await? else {
            // The kubelet asks before pulling: absent is an empty answer, not an error.
            return Ok(Response::new(v1::ImageStatusResponse::default()));
        };
        let image = self.to_cri(&id, &recs).await;
        let mut info = HashMap::new();
        if req.verbose {
            let cfg = self
                .store
                .config(&recs[0].name)
                .await
                .map_err(crate::images::status)?;
            info.insert(
                "info".into(),
                serde_json::json!({
                    "imageSpec": { "config": cfg },
                    "chainID": recs[0].chain_ids.last().map(|c| c.to_string()),
                })
                .to_string(),
            );
        }
        Ok(Response::new(v1::ImageStatusResponse {
            image: Some(image),
            info,
        }))
    }

    async fn pull_image(
        &self,
        req: Request<v1::PullImageRequest>,
    ) -> Result<Response<v1::PullImageResponse>, Status> {
        let req = req.into_inner();
        let reference = image_ref(req.image.as_ref())?.to_string();
        let credentials = req
            .auth
            .as_ref()
            .map(pull_credentials)
            .transpose()?
            .flatten();
        let opts = berth_imagestore::PullOptions {
            credentials,
            ..Default::default()
        };
        let rec = self
            .store
            .pull(&reference, &opts)
            .await
            .map_err(crate::images::status)?;
        Ok(Response::new(v1::PullImageResponse {
            image_ref: rec.config.to_string(),
        }))
    }

    async fn remove_image(
        &self,
        req: Request<v1::RemoveImageRequest>,
    ) -> Result<Response<v1::RemoveImageResponse>, Status> {
        let req = req.into_inner();
        let reference = image_ref(req.image.as_ref())?;
        // Removing an image that is not there succeeds (the kubelet retries removals).
        if let Some((_, recs)) = self.find(reference).await? {
            for r in recs {
                match self.store.remove(&r.name).await {
                    Ok(_) => {}
                    Err(e) => {
                        let s = crate::images::status(e);
                        if s.code() != tonic::Code::NotFound {
                            return Err(s);
                        }
                    }
                }
            }
        }
        Ok(Response::new(v1::RemoveImageResponse {}))
    }

    async fn image_fs_info(
        &self,
        _: Request<v1::ImageFsInfoRequest>,
    ) -> Result<Response<v1::ImageFsInfoResponse>, Status> {
        let dir = self.store.root().join("snapshots");
        let d = dir.clone();
        let (bytes, inodes) = tokio::task::spawn_blocking(move || usage(&d))
            .await
            .map_err(|e| Status::internal(format!("image fs usage: {e}")))?;
        let now = crate::containers::now_nanos();
        let fs = v1::FilesystemUsage {
            timestamp: now,
            fs_id: Some(v1::FilesystemIdentifier {
                mountpoint: dir.display().to_string(),
            }),
            used_bytes: Some(v1::UInt64Value { value: bytes }),
            inodes_used: Some(v1::UInt64Value { value: inodes }),
        };
        Ok(Response::new(v1::ImageFsInfoResponse {
            image_filesystems: vec![fs.clone()],
            container_filesystems: vec![fs],
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cni_config_choice() {
        let d = std::env::temp_dir().join(format!("berth-cri-conf-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        assert_eq!(first_cni_config(&d), None);
        std::fs::write(d.join("README"), "").unwrap();
        std::fs::write(d.join("20-b.conflist"), "{}").unwrap();
        std::fs::write(d.join("10-a.conf"), "{}").unwrap();
        assert_eq!(first_cni_config(&d), Some(d.join("10-a.conf")));
        std::fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn pull_credentials_as_the_kubelet_sends_them() {
        let c =
            |a: v1::AuthConfig| pull_credentials(&a).map(|o| o.map(|c| (c.username, c.password)));
        assert_eq!(c(v1::AuthConfig::default()).unwrap(), None);
        let both = v1::AuthConfig {
            username: "u".into(),
            password: "p:w".into(),
            ..Default::default()
        };
        assert_eq!(c(both).unwrap(), Some(("u".into(), "p:w".into())));
        let auth = v1::AuthConfig {
            auth: "dTpwOnc=".into(), // u:p:w
            ..Default::default()
        };
        assert_eq!(c(auth).unwrap(), Some(("u".into(), "p:w".into())));
        let bad = v1::AuthConfig {
            auth: "%%%".into(),
            ..Default::default()
        };
        assert_eq!(c(bad).unwrap_err().code(), tonic::Code::InvalidArgument);
        let token = v1::AuthConfig {
            registry_token: "t".into(),
            ..Default::default()
        };
        assert_eq!(c(token).unwrap_err().code(), tonic::Code::Unimplemented);
    }
}
