//! Registry access through `oci-client`: manifests with all four `Accept` types, blobs
//! streamed into the content store (resumed with a `Range` request when a connection drops),
//! blob and manifest upload, and the `/v2/` check behind `login`.
//!
//! Each request goes to a list of *endpoints*: the registry's mirrors in configured order,
//! then the registry itself (see [`RegistryConfig`]). A pull resolves its manifest on the
//! first endpoint that has it and fetches blobs from that endpoint first. Plain HTTP is used
//! for hosts listed in [`RegistryConfig::plain_http`] and, by default, for loopback registries
//! (`127.0.0.0/8`, `localhost`, `[::1]`), as docker does; every other host is HTTPS. One
//! `oci_client::Client` is kept per endpoint so connections and bearer tokens are reused.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, RwLock};

use futures_util::StreamExt as _;
use oci_client::client::{BlobResponse, ClientConfig, ClientProtocol};
use oci_client::secrets::RegistryAuth;
use tokio::io::AsyncWriteExt as _;

use crate::auth::{read_auth_file, Credentials};
use crate::content::Writer;
use crate::digest::Digest;
use crate::manifest::{Descriptor, MANIFEST_ACCEPT};
use crate::reference::Reference;

pub use crate::config::{ConfigError, RegistryConfig};

/// A registry request failed; the message is the registry's or the transport's, on one line.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct RegistryError(pub String);

impl From<oci_client::errors::OciDistributionError> for RegistryError {
    fn from(e: oci_client::errors::OciDistributionError) -> Self {
        if let oci_client::errors::OciDistributionError::RegistryError { envelope, url } = &e {
            // What the registry said, as docker prints it: "manifest unknown: <message>".
            let what: Vec<String> = envelope
                .errors
                .iter()
                .map(|x| {
                    let code = serde_json::to_string(&x.code)
                        .unwrap_or_default()
                        .trim_matches('"')
                        .to_lowercase()
                        .replace('_', " ");
                    if x.message.is_empty() || x.message.eq_ignore_ascii_case(&code) {
                        code
                    } else {
                        format!("{code}: {}", x.message)
                    }
                })
                .collect();
            return RegistryError(
                format!("{} ({url})", what.join("; ")).replace(['\n', '\r'], " "),
            );
        }
        let mut msg = e.to_string();
        let mut src = std::error::Error::source(&e);
        while let Some(s) = src {
            let s_msg = s.to_string();
            if !msg.contains(&s_msg) {
                msg.push_str(": ");
                msg.push_str(&s_msg);
            }
            src = s.source();
        }
        RegistryError(msg.replace(['\n', '\r'], " "))
    }
}

/// Per-call overrides of the configuration for the registry named in the reference (like
/// docker's and nerdctl's `--insecure-registry` / `--plain-http` flags). Mirrors keep their
/// configured settings.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RegistryOverrides {
    /// Speak plain HTTP to the registry.
    pub plain_http: bool,
    /// Use HTTPS without verifying the registry's certificate.
    pub insecure: bool,
}

/// One place to send requests for a registry: a mirror or the registry itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Endpoint {
    /// `host[:port]`.
    pub(crate) host: String,
    pub(crate) plain_http: bool,
    pub(crate) insecure: bool,
    pub(crate) mirror: bool,
    /// Credentials given for this one call (the CRI's PullImage auth), over the configured.
    pub(crate) creds: Option<Credentials>,
}

/// The endpoints of one operation, preferred first.
#[derive(Debug, Clone)]
pub(crate) struct Route {
    pub(crate) endpoints: Vec<Endpoint>,
}

impl Route {
    /// The same endpoints with `i` moved to the front.
    fn prefer(&self, i: usize) -> Route {
        let mut endpoints = self.endpoints.clone();
        let e = endpoints.remove(i);
        endpoints.insert(0, e);
        Route { endpoints }
    }
}

/// Registry clients, one per endpoint, and the credentials to use.
pub(crate) struct Registry {
    config: RegistryConfig,
    clients: Mutex<HashMap<String, Arc<oci_client::Client>>>,
    /// Credentials from the files, by registry; refreshed by login/logout.
    file_creds: RwLock<HashMap<String, Credentials>>,
}

/// Attempts on one endpoint when a blob download keeps failing mid-stream (each attempt after
/// the first resumes where the previous one stopped).
const BLOB_ATTEMPTS: usize = 4;

impl Registry {
    pub(crate) fn new(config: RegistryConfig) -> Self {
        // reqwest is built without a default TLS provider; install ring once per process
        // (an error means one is installed already, which is fine).
        let _ = rustls::crypto::ring::default_provider().install_default();
        let this = Self {
            config,
            clients: Mutex::new(HashMap::new()),
            file_creds: RwLock::new(HashMap::new()),
        };
        this.reload_credentials();
        this
    }

    pub(crate) fn config(&self) -> &RegistryConfig {
        &self.config
    }

    /// Re-reads the credential files. An unreadable file is logged and skipped: a broken
    /// `~/.docker/config.json` must not stop pulls from registries that need no login.
    pub(crate) fn reload_credentials(&self) {
        let mut creds = HashMap::new();
        // docker's file first, so berth's own file wins on conflicts.
        for path in [&self.config.docker_config, &self.config.auth_file]
            .into_iter()
            .flatten()
        {
            match read_auth_file(path) {
                Ok(m) => creds.extend(m),
                Err(e) => tracing::warn!(error = %e, "ignoring credentials file"),
            }
        }
        *self.file_creds.write().unwrap_or_else(|e| e.into_inner()) = creds;
        // Clients remember the credentials they were first given: start over.
        self.clients
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clear();
    }

    /// Credentials for `host` (explicit ones first, then the files).
    pub(crate) fn credentials(&self, host: &str) -> Option<Credentials> {
        self.config.explicit_credentials(host).or_else(|| {
            self.file_creds
                .read()
                .unwrap_or_else(|e| e.into_inner())
                .get(host)
                .cloned()
        })
    }

    pub(crate) fn endpoint(
        &self,
        host: &str,
        ov: Option<&RegistryOverrides>,
        mirror: bool,
    ) -> Endpoint {
        let (host, scheme) = match host.split_once("://") {
            Some((s, h)) => (h.trim_end_matches('/'), Some(s)),
            None => (host, None),
        };
        let ov = ov.copied().unwrap_or_default();
        Endpoint {
            host: host.to_string(),
            plain_http: match scheme {
                Some("http") => true,
                Some(_) => false,
                None => ov.plain_http || self.config.is_plain_http(host),
            },
            insecure: ov.insecure || self.config.is_insecure(host),
            mirror,
            creds: None,
        }
    }

    /// Where requests for `r` go: its mirrors, then the registry itself.
    pub(crate) fn route(&self, r: &Reference, ov: &RegistryOverrides) -> Route {
        let reg = r.registry();
        let mut endpoints: Vec<Endpoint> = self
            .config
            .mirrors_of(reg)
            .iter()
            .map(|m| self.endpoint(m, None, true))
            .collect();
        if !self.config.is_mirror_only(reg) || endpoints.is_empty() {
            endpoints.push(self.endpoint(reg, Some(ov), false));
        }
        Route { endpoints }
    }

    /// The registry itself, never a mirror (push and login go there).
    pub(crate) fn direct(&self, registry: &str, ov: &RegistryOverrides) -> Route {
        Route {
            endpoints: vec![self.endpoint(registry, Some(ov), false)],
        }
    }

    fn client(&self, ep: &Endpoint) -> Arc<oci_client::Client> {
        // A client remembers the credentials it was first given: one per set of call-given
        // credentials (keyed by a hash, not the password itself).
        let creds = ep.creds.as_ref().map(|c| {
            use sha2::Digest as _;
            hex::encode(sha2::Sha256::digest(format!(
                "{}\0{}",
                c.username, c.password
            )))
        });
        let key = format!(
            "{}|{}|{}|{}",
            ep.host,
            ep.plain_http,
            ep.insecure,
            creds.unwrap_or_default()
        );
        let mut clients = self.clients.lock().unwrap_or_else(|e| e.into_inner());
        clients
            .entry(key)
            .or_insert_with(|| {
                let protocol = if ep.plain_http {
                    ClientProtocol::Http
                } else {
                    ClientProtocol::Https
                };
                Arc::new(oci_client::Client::new(ClientConfig {
                    protocol,
                    accept_invalid_certificates: ep.insecure,
                    platform_resolver: None,
                    connect_timeout: Some(self.config.connect_timeout),
                    read_timeout: Some(self.config.read_timeout),
                    user_agent: concat!("berth/", env!("CARGO_PKG_VERSION")),
                    ..Default::default()
                }))
            })
            .clone()
    }

    /// The client, the reference as oci-client wants it (pointing at the mirror if `ep` is
    /// one) and the credentials, stored in the client.
    async fn prepare(
        &self,
        ep: &Endpoint,
        r: &Reference,
    ) -> (Arc<oci_client::Client>, oci_client::Reference, RegistryAuth) {
        let client = self.client(ep);
        let mut oci = r.to_oci();
        if ep.mirror {
            oci.set_mirror_registry(ep.host.clone());
        }
        let auth = match ep.creds.clone().or_else(|| self.credentials(&ep.host)) {
            Some(c) => RegistryAuth::Basic(c.username, c.password),
            None => RegistryAuth::Anonymous,
        };
        client
            .store_auth_if_needed(oci.resolve_registry(), &auth)
            .await;
        (client, oci, auth)
    }

    /// Runs `op` on each endpoint of `route` in turn until one succeeds. The error, if all
    /// fail, lists each endpoint's; the route returned puts the one that worked first.
    async fn each<T, F, Fut>(&self, route: &Route, mut op: F) -> Result<(T, Route), RegistryError>
    where
        F: FnMut(Endpoint) -> Fut,
        Fut: std::future::Future<Output = Result<T, RegistryError>>,
    {
        let mut errors = Vec::new();
        for (i, ep) in route.endpoints.iter().enumerate() {
            match op(ep.clone()).await {
                Ok(v) => return Ok((v, route.prefer(i))),
                Err(e) if route.endpoints.len() == 1 => return Err(e),
                Err(e) => {
                    let what = if ep.mirror { "mirror" } else { "registry" };
                    tracing::debug!(endpoint = %ep.host, error = %e, "trying next endpoint");
                    errors.push(format!("{what} {}: {e}", ep.host));
                }
            }
        }
        Err(RegistryError(errors.join("; ")))
    }

    /// GETs a manifest (any of the four types) from the first endpoint that has it. The
    /// digest is checked against `Docker-Content-Digest` and against the reference's digest
    /// when either is present.
    pub(crate) async fn manifest(
        &self,
        route: &Route,
        r: &Reference,
    ) -> Result<(Vec<u8>, Digest, Route), RegistryError> {
        let ((body, digest), route) = self
            .each(route, |ep| async move {
                let (client, oci, auth) = self.prepare(&ep, r).await;
                let (body, digest) = client
                    .pull_manifest_raw(&oci, &auth, &MANIFEST_ACCEPT)
                    .await?;
                let digest: Digest = digest
                    .parse()
                    .map_err(|e| RegistryError(format!("manifest digest: {e}")))?;
                Ok((body.to_vec(), digest))
            })
            .await?;
        Ok((body, digest, route))
    }

    /// Streams blob `desc` of repository `r` into `out`, calling `progress` with the bytes
    /// written so far. A connection that drops mid-blob is resumed with a `Range` request
    /// (restarted from zero if the registry ignores the range); the content writer checks the
    /// digest of the whole on commit.
    pub(crate) async fn blob(
        &self,
        route: &Route,
        r: &Reference,
        desc: &Descriptor,
        out: &mut Writer,
        progress: &(dyn Fn(u64) + Send + Sync),
    ) -> Result<(), RegistryError> {
        let digest = desc.digest.to_string();
        let mut errors = Vec::new();
        for ep in &route.endpoints {
            // Each endpoint starts from zero: another server's partial bytes are not trusted
            // to line up.
            out.reset()
                .await
                .map_err(|e| RegistryError(format!("reset ingest: {e}")))?;
            match self.blob_from(ep, r, desc, &digest, out, progress).await {
                Ok(()) => return Ok(()),
                Err(e) if route.endpoints.len() == 1 => return Err(e),
                Err(e) => {
                    let what = if ep.mirror { "mirror" } else { "registry" };
                    errors.push(format!("{what} {}: {e}", ep.host));
                }
            }
        }
        Err(RegistryError(errors.join("; ")))
    }

    async fn blob_from(
        &self,
        ep: &Endpoint,
        r: &Reference,
        desc: &Descriptor,
        digest: &str,
        out: &mut Writer,
        progress: &(dyn Fn(u64) + Send + Sync),
    ) -> Result<(), RegistryError> {
        let (client, oci, _auth) = self.prepare(ep, r).await;
        let mut last_err = None;
        for attempt in 0..BLOB_ATTEMPTS {
            let offset = out.written();
            let stream = if offset == 0 {
                client.pull_blob_stream(&oci, digest).await
            } else {
                tracing::debug!(%digest, offset, attempt, "resuming blob download");
                match client
                    .pull_blob_stream_partial(&oci, digest, offset, None)
                    .await
                {
                    Ok(BlobResponse::Partial(s)) => Ok(s),
                    Ok(BlobResponse::Full(s)) => {
                        out.reset()
                            .await
                            .map_err(|e| RegistryError(format!("reset ingest: {e}")))?;
                        Ok(s)
                    }
                    Err(e) => Err(e),
                }
            };
            // An HTTP error (404, 401, 500...) is the registry's answer: no retry.
            let mut stream = stream?.stream;
            let before = out.written();
            let mut failed = None;
            while let Some(chunk) = stream.next().await {
                let chunk = match chunk {
                    Ok(c) => c,
                    Err(e) => {
                        failed = Some(format!(
                            "download interrupted after {} of {} bytes: {}",
                            out.written(),
                            desc.size,
                            one_line(&e)
                        ));
                        break;
                    }
                };
                if out.written() + chunk.len() as u64 > desc.size {
                    return Err(RegistryError(format!(
                        "blob {digest} is larger than the {} bytes the manifest says",
                        desc.size
                    )));
                }
                out.write_all(&chunk)
                    .await
                    .map_err(|e| RegistryError(format!("write ingest: {e}")))?;
                progress(out.written());
            }
            match failed {
                None if out.written() == desc.size => return Ok(()),
                None => {
                    failed = Some(format!(
                        "download interrupted: connection closed after {} of {} bytes",
                        out.written(),
                        desc.size
                    ))
                }
                Some(_) => {}
            }
            let e = failed.unwrap_or_default().replace(['\n', '\r'], " ");
            // A verification error from oci-client means the bytes are wrong: no retry.
            // Otherwise retry only while attempts make progress.
            if e.to_lowercase().contains("digest") || (out.written() == before && attempt > 0) {
                return Err(RegistryError(e));
            }
            last_err = Some(e);
        }
        Err(RegistryError(last_err.unwrap_or_default()))
    }

    /// Whether the registry has blob `digest` in repository `r` (HEAD).
    pub(crate) async fn blob_exists(
        &self,
        route: &Route,
        r: &Reference,
        digest: &Digest,
    ) -> Result<bool, RegistryError> {
        let (client, oci, _auth) = self.prepare(&route.endpoints[0], r).await;
        Ok(client.blob_exists(&oci, &digest.to_string()).await?)
    }

    /// Uploads a blob from a file in the content store, calling `on_bytes` with the bytes
    /// read for upload so far.
    pub(crate) async fn push_blob(
        &self,
        route: &Route,
        r: &Reference,
        digest: &Digest,
        size: u64,
        file: tokio::fs::File,
        on_bytes: impl Fn(u64) + Send + Sync + 'static,
    ) -> Result<(), RegistryError> {
        let (client, oci, _auth) = self.prepare(&route.endpoints[0], r).await;
        let stream = futures_util::stream::unfold((file, 0u64, on_bytes), |mut st| async move {
            use tokio::io::AsyncReadExt as _;
            let mut buf = bytes::BytesMut::with_capacity(1 << 20);
            match st.0.read_buf(&mut buf).await {
                Ok(0) => None,
                Ok(n) => {
                    st.1 += n as u64;
                    (st.2)(st.1);
                    Some((Ok(buf.freeze()), st))
                }
                Err(e) => Some((
                    Err(oci_client::errors::OciDistributionError::IoError(e)),
                    st,
                )),
            }
        });
        if size == 0 {
            // Chunked upload refuses empty streams; an empty blob goes in one PUT.
            client
                .push_blob(&oci, Vec::new(), &digest.to_string())
                .await?;
            return Ok(());
        }
        client
            .push_blob_stream(&oci, stream, &digest.to_string(), Some(size))
            .await?;
        Ok(())
    }

    /// PUTs a manifest or index under `r`'s tag (or digest).
    pub(crate) async fn push_manifest(
        &self,
        route: &Route,
        r: &Reference,
        body: &[u8],
        media_type: &str,
    ) -> Result<(), RegistryError> {
        let (client, oci, _auth) = self.prepare(&route.endpoints[0], r).await;
        let ct = media_type
            .parse()
            .map_err(|_| RegistryError(format!("bad media type {media_type:?}")))?;
        client.push_manifest_raw(&oci, body.to_vec(), ct).await?;
        Ok(())
    }
}

pub(crate) fn one_line(e: &dyn std::error::Error) -> String {
    let mut msg = e.to_string();
    let mut src = e.source();
    while let Some(s) = src {
        let m = s.to_string();
        if !msg.contains(&m) {
            msg.push_str(": ");
            msg.push_str(&m);
        }
        src = s.source();
    }
    msg.replace(['\n', '\r'], " ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes_try_mirrors_first() {
        let mut c = RegistryConfig {
            auth_file: None,
            docker_config: None,
            ..Default::default()
        };
        c.mirrors.insert(
            "docker.io".into(),
            vec!["127.0.0.1:5001".into(), "https://m.lan".into()],
        );
        let reg = Registry::new(c.clone());
        let r: Reference = "nginx".parse().unwrap();
        let route = reg.route(&r, &RegistryOverrides::default());
        let hosts: Vec<(&str, bool, bool)> = route
            .endpoints
            .iter()
            .map(|e| (e.host.as_str(), e.plain_http, e.mirror))
            .collect();
        assert_eq!(
            hosts,
            [
                ("127.0.0.1:5001", true, true),
                ("m.lan", false, true),
                ("docker.io", false, false)
            ]
        );
        c.mirrors_only.push("docker.io".into());
        let reg = Registry::new(c);
        assert_eq!(
            reg.route(&r, &RegistryOverrides::default()).endpoints.len(),
            2
        );
        let r: Reference = "reg.lan:5000/a".parse().unwrap();
        let ov = RegistryOverrides {
            plain_http: true,
            insecure: true,
        };
        let e = &reg.route(&r, &ov).endpoints[0];
        assert!(e.plain_http && e.insecure && !e.mirror);
    }
}
