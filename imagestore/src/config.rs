//! Registry configuration: which hosts are plain HTTP or unverified HTTPS, mirrors, where
//! credentials are, timeouts. Loaded from the `[registry]` section of berth's TOML config
//! (default `/etc/berth/config.toml`, see [`RegistryConfig::load_default`]):
//!
//! ```toml
//! [registry]
//! plain_http = ["reg.lan:5000"]          # spoken to over http://
//! insecure = ["selfsigned.lan"]          # https:// without certificate verification
//! loopback_plain_http = true             # 127.0.0.0/8, localhost, [::1] are plain HTTP (default)
//! mirrors_only = ["docker.io"]           # never contact these upstreams, only their mirrors
//! auth_file = "/etc/berth/auth.json"     # berth login writes here (default depends on user)
//! docker_config = "/root/.docker/config.json"   # read-only credentials; "" to not read one
//! connect_timeout_secs = 30
//! read_timeout_secs = 120
//!
//! [registry.mirrors]
//! "docker.io" = ["mirror.lan:5000", "http://10.0.0.5:5000"]
//! ```
//!
//! Mirrors of a registry are tried in order, then the registry itself (unless it is listed in
//! `mirrors_only`). A mirror written as `http://host:port` is plain HTTP; `https://host` is
//! HTTPS even on loopback; a bare `host:port` follows the same rules as any registry.
//! Hosts in lists are `host` (any port) or `host:port`. Unknown keys in `[registry]` are an
//! error that names the key; other sections of the file belong to other parts of berth and are
//! ignored here.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

use crate::auth::{default_auth_file, default_docker_config, Credentials};

/// The default location of berth's config file.
pub const DEFAULT_CONFIG_PATH: &str = "/etc/berth/config.toml";

/// Why a config file cannot be used. One line, naming the file.
#[derive(Debug, thiserror::Error)]
#[error("config {path}: {cause}")]
pub struct ConfigError {
    pub path: PathBuf,
    pub cause: String,
}

/// Which registries to reach how.
#[derive(Debug, Clone)]
pub struct RegistryConfig {
    /// Hosts (`host` or `host:port`) spoken to over plain HTTP.
    pub plain_http: Vec<String>,
    /// Hosts spoken to over HTTPS without verifying their certificate.
    pub insecure: Vec<String>,
    /// Whether loopback registries are plain HTTP without being listed (default true).
    pub loopback_plain_http: bool,
    /// Mirrors by registry (`docker.io` -> [`mirror:5000`, ...]), tried in order.
    pub mirrors: HashMap<String, Vec<String>>,
    /// Registries that are only reached through their mirrors, never directly.
    pub mirrors_only: Vec<String>,
    /// Basic-auth credentials by registry (`host[:port]` -> (user, password)); these win over
    /// the files.
    pub credentials: HashMap<String, (String, String)>,
    /// berth's auth file (read, and written by `login`/`logout`); `None`: none.
    pub auth_file: Option<PathBuf>,
    /// docker's `config.json`, read for credentials; `None`: not read.
    pub docker_config: Option<PathBuf>,
    pub connect_timeout: Duration,
    pub read_timeout: Duration,
}

impl Default for RegistryConfig {
    /// docker-like defaults without reading a config file: loopback is plain HTTP, no mirrors,
    /// credentials from [`default_auth_file`] and [`default_docker_config`].
    fn default() -> Self {
        Self {
            plain_http: Vec::new(),
            insecure: Vec::new(),
            loopback_plain_http: true,
            mirrors: HashMap::new(),
            mirrors_only: Vec::new(),
            credentials: HashMap::new(),
            auth_file: Some(default_auth_file()),
            docker_config: Some(default_docker_config()),
            connect_timeout: Duration::from_secs(30),
            read_timeout: Duration::from_secs(120),
        }
    }
}

#[derive(Deserialize, Default)]
struct FileConfig {
    #[serde(default)]
    registry: Option<RegistrySection>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RegistrySection {
    #[serde(default)]
    plain_http: Vec<String>,
    #[serde(default)]
    insecure: Vec<String>,
    #[serde(default)]
    loopback_plain_http: Option<bool>,
    #[serde(default)]
    mirrors: HashMap<String, Vec<String>>,
    #[serde(default)]
    mirrors_only: Vec<String>,
    #[serde(default)]
    auth_file: Option<PathBuf>,
    #[serde(default)]
    docker_config: Option<PathBuf>,
    #[serde(default)]
    connect_timeout_secs: Option<u64>,
    #[serde(default)]
    read_timeout_secs: Option<u64>,
}

fn host_matches(list: &[String], registry: &str) -> bool {
    let host = crate::reference::split_host(registry);
    list.iter()
        .any(|h| h.eq_ignore_ascii_case(registry) || h.eq_ignore_ascii_case(host))
}

impl RegistryConfig {
    /// Parses the `[registry]` section of a TOML document (`origin` names it in errors).
    pub fn from_toml(text: &str, origin: &Path) -> Result<Self, ConfigError> {
        let err = |cause: String| ConfigError {
            path: origin.to_path_buf(),
            cause: cause.replace('\n', " ").trim().to_string(),
        };
        let file: FileConfig = toml::from_str(text).map_err(|e| err(e.message().to_string()))?;
        let s = file.registry.unwrap_or_default();
        let mut c = Self::default();
        for (reg, mirrors) in &s.mirrors {
            for m in mirrors {
                let host = m
                    .strip_prefix("http://")
                    .or_else(|| m.strip_prefix("https://"))
                    .unwrap_or(m)
                    .trim_end_matches('/');
                if host.is_empty() || host.contains('/') {
                    return Err(err(format!(
                        "mirror {m:?} of {reg:?}: expected host[:port], optionally with http:// or https://"
                    )));
                }
            }
        }
        c.plain_http = s.plain_http;
        c.insecure = s.insecure;
        if let Some(b) = s.loopback_plain_http {
            c.loopback_plain_http = b;
        }
        c.mirrors = s.mirrors;
        c.mirrors_only = s.mirrors_only;
        if let Some(p) = s.auth_file {
            c.auth_file = Some(p);
        }
        if let Some(p) = s.docker_config {
            c.docker_config = (!p.as_os_str().is_empty()).then_some(p);
        }
        if let Some(t) = s.connect_timeout_secs {
            c.connect_timeout = Duration::from_secs(t);
        }
        if let Some(t) = s.read_timeout_secs {
            c.read_timeout = Duration::from_secs(t);
        }
        Ok(c)
    }

    /// Loads `path` (which must exist).
    pub fn load(path: impl AsRef<Path>) -> Result<Self, ConfigError> {
        let path = path.as_ref();
        let text = std::fs::read_to_string(path).map_err(|e| ConfigError {
            path: path.to_path_buf(),
            cause: e.to_string(),
        })?;
        Self::from_toml(&text, path)
    }

    /// Loads `$BERTH_CONFIG` or [`DEFAULT_CONFIG_PATH`] if that file exists, else the defaults.
    pub fn load_default() -> Result<Self, ConfigError> {
        let path = std::env::var_os("BERTH_CONFIG")
            .map(PathBuf::from)
            .unwrap_or_else(|| DEFAULT_CONFIG_PATH.into());
        if path.exists() {
            Self::load(path)
        } else {
            Ok(Self::default())
        }
    }

    /// Whether `registry` (`host[:port]`) is spoken to over plain HTTP.
    pub fn is_plain_http(&self, registry: &str) -> bool {
        if host_matches(&self.plain_http, registry) {
            return true;
        }
        let host = crate::reference::split_host(registry);
        self.loopback_plain_http
            && (host == "localhost"
                || host == "[::1]"
                || host
                    .parse::<std::net::Ipv4Addr>()
                    .is_ok_and(|ip| ip.is_loopback()))
    }

    /// Whether `registry` is HTTPS without certificate verification.
    pub fn is_insecure(&self, registry: &str) -> bool {
        host_matches(&self.insecure, registry)
    }

    /// The mirrors configured for `registry`, in order.
    pub fn mirrors_of(&self, registry: &str) -> &[String] {
        self.mirrors
            .iter()
            .find(|(k, _)| crate::auth::normalize_registry_key(k) == registry)
            .map(|(_, v)| v.as_slice())
            .unwrap_or(&[])
    }

    /// Whether `registry` itself must never be contacted (only its mirrors).
    pub fn is_mirror_only(&self, registry: &str) -> bool {
        self.mirrors_only.iter().any(|h| h == registry)
    }

    /// Credentials given in code for `registry`.
    pub(crate) fn explicit_credentials(&self, registry: &str) -> Option<Credentials> {
        self.credentials.get(registry).map(|(u, p)| Credentials {
            username: u.clone(),
            password: p.clone(),
        })
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

    #[test]
    fn parses_toml() {
        let p = Path::new("/x/config.toml");
        let c = RegistryConfig::from_toml(
            r#"
            [daemon]
            whatever = 1
            [registry]
            plain_http = ["reg.lan:5000"]
            insecure = ["self.lan"]
            loopback_plain_http = false
            mirrors_only = ["docker.io"]
            auth_file = "/tmp/a.json"
            docker_config = ""
            read_timeout_secs = 5
            [registry.mirrors]
            "docker.io" = ["m1:5000", "http://m2:5000"]
            "#,
            p,
        )
        .unwrap();
        assert!(c.is_plain_http("reg.lan:5000"));
        assert!(!c.is_plain_http("reg.lan:6000"));
        assert!(!c.is_plain_http("127.0.0.1:5000"));
        assert!(c.is_insecure("self.lan:443"));
        assert_eq!(c.mirrors_of("docker.io"), ["m1:5000", "http://m2:5000"]);
        assert!(c.mirrors_of("quay.io").is_empty());
        assert!(c.is_mirror_only("docker.io"));
        assert_eq!(c.auth_file.as_deref(), Some(Path::new("/tmp/a.json")));
        assert_eq!(c.docker_config, None);
        assert_eq!(c.read_timeout, Duration::from_secs(5));

        let e = RegistryConfig::from_toml("[registry]\nplain_htp = []\n", p).unwrap_err();
        let s = e.to_string();
        assert!(
            s.contains("/x/config.toml") && s.contains("plain_htp"),
            "{s}"
        );
        assert!(!s.contains('\n'));
        let e = RegistryConfig::from_toml("[registry.mirrors]\n\"a\" = [\"h/x\"]\n", p)
            .unwrap_err()
            .to_string();
        assert!(e.contains("mirror \"h/x\""), "{e}");
        assert!(RegistryConfig::from_toml("registry = [", p).is_err());
        assert!(
            RegistryConfig::from_toml("", p)
                .unwrap()
                .loopback_plain_http
        );
    }
}
