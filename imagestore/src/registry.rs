//! Registry access through `oci-client`: manifests with all four `Accept` types, blobs
//! streamed into the content store.
//!
//! Plain HTTP is used for hosts listed in [`RegistryConfig::plain_http`] (as `host` or
//! `host:port`) and, by default, for loopback registries (`127.0.0.0/8`, `localhost`,
//! `[::1]`), which is what docker does for its "insecure registries" default; every other
//! host is HTTPS. One `oci_client::Client` is kept per registry host so connections and
//! bearer tokens are reused across pulls.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use oci_client::client::{ClientConfig, ClientProtocol};
use oci_client::secrets::RegistryAuth;

use crate::content::Writer;
use crate::digest::Digest;
use crate::manifest::MANIFEST_ACCEPT;
use crate::reference::Reference;

/// A registry request failed; the message is the registry's or the transport's, on one line.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct RegistryError(pub String);

impl From<oci_client::errors::OciDistributionError> for RegistryError {
    fn from(e: oci_client::errors::OciDistributionError) -> Self {
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

/// Which registries to reach how.
#[derive(Debug, Clone)]
pub struct RegistryConfig {
    /// Hosts (`host` or `host:port`) spoken to over plain HTTP.
    pub plain_http: Vec<String>,
    /// Whether loopback registries are plain HTTP without being listed (default true).
    pub loopback_plain_http: bool,
    /// Basic-auth credentials by registry (`host[:port]` -> (user, password)).
    pub credentials: HashMap<String, (String, String)>,
    pub connect_timeout: Duration,
    pub read_timeout: Duration,
}

impl Default for RegistryConfig {
    fn default() -> Self {
        Self {
            plain_http: Vec::new(),
            loopback_plain_http: true,
            credentials: HashMap::new(),
            connect_timeout: Duration::from_secs(30),
            read_timeout: Duration::from_secs(120),
        }
    }
}

impl RegistryConfig {
    /// Whether `registry` (`host[:port]`) is spoken to over plain HTTP.
    pub fn is_plain_http(&self, registry: &str) -> bool {
        let host = crate::reference::split_host(registry);
        if self.plain_http.iter().any(|h| h == registry || h == host) {
            return true;
        }
        self.loopback_plain_http
            && (host == "localhost"
                || host == "[::1]"
                || host
                    .parse::<std::net::Ipv4Addr>()
                    .is_ok_and(|ip| ip.is_loopback()))
    }
}

/// Registry clients, one per host.
pub(crate) struct Registry {
    config: RegistryConfig,
    clients: Mutex<HashMap<String, Arc<oci_client::Client>>>,
}

impl Registry {
    pub(crate) fn new(config: RegistryConfig) -> Self {
        // reqwest is built without a default TLS provider; install ring once per process
        // (an error means one is installed already, which is fine).
        let _ = rustls::crypto::ring::default_provider().install_default();
        Self {
            config,
            clients: Mutex::new(HashMap::new()),
        }
    }

    fn client(&self, r: &Reference) -> Arc<oci_client::Client> {
        let mut clients = self.clients.lock().unwrap_or_else(|e| e.into_inner());
        clients
            .entry(r.registry().to_string())
            .or_insert_with(|| {
                let protocol = if self.config.is_plain_http(r.registry()) {
                    ClientProtocol::Http
                } else {
                    ClientProtocol::Https
                };
                Arc::new(oci_client::Client::new(ClientConfig {
                    protocol,
                    platform_resolver: None,
                    connect_timeout: Some(self.config.connect_timeout),
                    read_timeout: Some(self.config.read_timeout),
                    user_agent: concat!("berth/", env!("CARGO_PKG_VERSION")),
                    ..Default::default()
                }))
            })
            .clone()
    }

    fn auth(&self, r: &Reference) -> RegistryAuth {
        match self.config.credentials.get(r.registry()) {
            Some((u, p)) => RegistryAuth::Basic(u.clone(), p.clone()),
            None => RegistryAuth::Anonymous,
        }
    }

    /// GETs a manifest (any of the four types). The digest is checked against
    /// `Docker-Content-Digest` and against the reference's digest when either is present.
    pub(crate) async fn manifest(&self, r: &Reference) -> Result<(Vec<u8>, Digest), RegistryError> {
        let client = self.client(r);
        let (body, digest) = client
            .pull_manifest_raw(&r.to_oci(), &self.auth(r), &MANIFEST_ACCEPT)
            .await?;
        let digest: Digest = digest
            .parse()
            .map_err(|e| RegistryError(format!("manifest digest: {e}")))?;
        Ok((body.to_vec(), digest))
    }

    /// Streams blob `digest` of repository `r` into `out`. oci-client checks the digest (and
    /// `Docker-Content-Digest`) at the end; the content writer checks it again on commit.
    pub(crate) async fn blob(
        &self,
        r: &Reference,
        digest: &Digest,
        out: &mut Writer,
    ) -> Result<(), RegistryError> {
        let client = self.client(r);
        let auth = self.auth(r);
        let oci = r.to_oci();
        client
            .store_auth_if_needed(oci.resolve_registry(), &auth)
            .await;
        client
            .pull_blob(&oci, digest.to_string().as_str(), out)
            .await?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_http_hosts() {
        let mut c = RegistryConfig::default();
        assert!(c.is_plain_http("127.0.0.1:5000"));
        assert!(c.is_plain_http("127.1.2.3"));
        assert!(c.is_plain_http("localhost:5000"));
        assert!(c.is_plain_http("[::1]:5000"));
        assert!(!c.is_plain_http("docker.io"));
        assert!(!c.is_plain_http("reg.example:5000"));
        c.plain_http.push("reg.example".into());
        assert!(c.is_plain_http("reg.example:5000"));
        c.loopback_plain_http = false;
        assert!(!c.is_plain_http("127.0.0.1:5000"));
    }
}
