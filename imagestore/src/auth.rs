//! Registry credentials: where they come from, and `login`/`logout`.
//!
//! Credentials for a registry host (`host[:port]`) are looked up, first match wins, in:
//!
//! 1. [`RegistryConfig::credentials`](crate::RegistryConfig::credentials) (given in code);
//! 2. berth's own auth file, written by [`crate::Store::login`]: `/etc/berth/auth.json` for
//!    root, `$XDG_CONFIG_HOME/berth/auth.json` (or `~/.config/berth/auth.json`) otherwise
//!    ([`default_auth_file`]);
//! 3. docker's `$DOCKER_CONFIG/config.json` or `~/.docker/config.json`
//!    ([`default_docker_config`]), read only.
//!
//! Both files have docker's format, so either tool can read the other's:
//!
//! ```json
//! {"auths": {"127.0.0.1:5002": {"auth": "<base64 of user:password>"}}}
//! ```
//!
//! Entries with `username`/`password` fields instead of `auth` are read too. Keys may be
//! written the way docker writes them (`https://index.docker.io/v1/`, `http://host:port/v2/`):
//! they are reduced to `host[:port]`, with docker's hub aliases mapped to `docker.io`.
//! Credential helpers (`credHelpers`, `credsStore`) are not run: berthd would have to execute
//! programs from a user's config as root. Entries served only by a helper are ignored with a
//! debug message; use `berth login` instead.
//!
//! The auth file is written with mode 0600 to a temporary file in the same directory, fsynced
//! and renamed over the old one, so a crash leaves the old or the new file, never a mix.

use std::collections::{BTreeMap, HashMap};
use std::io::Write as _;
use std::path::{Path, PathBuf};

use base64::Engine as _;
use serde::{Deserialize, Serialize};

/// A user name and password (or token) for one registry.
#[derive(Clone, PartialEq, Eq)]
pub struct Credentials {
    pub username: String,
    pub password: String,
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Credentials({:?}, <redacted>)", self.username)
    }
}

/// Why an auth file cannot be read or written.
#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    #[error("auth file {path}: {cause}")]
    File { path: PathBuf, cause: String },
    #[error("auth file {path}: entry {key:?}: {cause}")]
    Entry {
        path: PathBuf,
        key: String,
        cause: String,
    },
}

#[derive(Debug, Default, Serialize, Deserialize)]
struct ConfigFile {
    #[serde(default)]
    auths: BTreeMap<String, AuthEntry>,
    /// Everything else in the file (docker's other settings), kept as is when rewriting.
    #[serde(flatten)]
    other: BTreeMap<String, serde_json::Value>,
}

#[derive(Debug, Default, Clone, Serialize, Deserialize)]
struct AuthEntry {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    auth: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    username: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    password: Option<String>,
    #[serde(flatten)]
    other: BTreeMap<String, serde_json::Value>,
}

/// Reduces a docker config key (`https://index.docker.io/v1/`, `http://h:5000/v2/`, `h:5000`)
/// to the registry name berth uses (`docker.io`, `h:5000`).
pub fn normalize_registry_key(key: &str) -> String {
    let k = key
        .trim()
        .trim_start_matches("https://")
        .trim_start_matches("http://");
    let k = k.split('/').next().unwrap_or("").to_ascii_lowercase();
    match k.as_str() {
        "index.docker.io" | "registry-1.docker.io" | "registry.hub.docker.com" => {
            "docker.io".into()
        }
        _ => k,
    }
}

/// berth's own auth file: `/etc/berth/auth.json` when running as root, else
/// `$XDG_CONFIG_HOME/berth/auth.json` or `~/.config/berth/auth.json`.
pub fn default_auth_file() -> PathBuf {
    if rustix::process::geteuid().is_root() {
        return PathBuf::from("/etc/berth/auth.json");
    }
    if let Some(x) = std::env::var_os("XDG_CONFIG_HOME").filter(|x| !x.is_empty()) {
        return PathBuf::from(x).join("berth/auth.json");
    }
    let home = std::env::var_os("HOME").unwrap_or_else(|| "/".into());
    PathBuf::from(home).join(".config/berth/auth.json")
}

/// docker's client config: `$DOCKER_CONFIG/config.json` or `~/.docker/config.json`.
pub fn default_docker_config() -> PathBuf {
    if let Some(d) = std::env::var_os("DOCKER_CONFIG").filter(|x| !x.is_empty()) {
        return PathBuf::from(d).join("config.json");
    }
    let home = std::env::var_os("HOME").unwrap_or_else(|| "/root".into());
    PathBuf::from(home).join(".docker/config.json")
}

fn read_file(path: &Path) -> Result<Option<ConfigFile>, AuthError> {
    let text = match std::fs::read(path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => {
            return Err(AuthError::File {
                path: path.into(),
                cause: e.to_string(),
            })
        }
    };
    serde_json::from_slice(&text)
        .map(Some)
        .map_err(|e| AuthError::File {
            path: path.into(),
            cause: format!("not valid JSON: {e}"),
        })
}

fn decode_entry(path: &Path, key: &str, e: &AuthEntry) -> Result<Option<Credentials>, AuthError> {
    let bad = |cause: &str| AuthError::Entry {
        path: path.into(),
        key: key.into(),
        cause: cause.into(),
    };
    if let Some(auth) = e.auth.as_deref().filter(|a| !a.is_empty()) {
        let raw = base64::engine::general_purpose::STANDARD
            .decode(auth.trim())
            .map_err(|_| bad("\"auth\" is not base64"))?;
        let s = String::from_utf8(raw).map_err(|_| bad("\"auth\" is not UTF-8"))?;
        let (u, p) = s
            .split_once(':')
            .ok_or_else(|| bad("\"auth\" is not user:password"))?;
        return Ok(Some(Credentials {
            username: u.into(),
            password: p.into(),
        }));
    }
    match (&e.username, &e.password) {
        (Some(u), Some(p)) if !u.is_empty() => Ok(Some(Credentials {
            username: u.clone(),
            password: p.clone(),
        })),
        _ => Ok(None),
    }
}

/// Reads every usable entry of a docker-format auth file (missing file: empty map).
pub fn read_auth_file(path: &Path) -> Result<HashMap<String, Credentials>, AuthError> {
    let mut out = HashMap::new();
    let Some(file) = read_file(path)? else {
        return Ok(out);
    };
    for (key, entry) in &file.auths {
        match decode_entry(path, key, entry)? {
            Some(c) => {
                out.insert(normalize_registry_key(key), c);
            }
            None => {
                tracing::debug!(file = %path.display(), %key, "auth entry without credentials (credential helpers are not used)")
            }
        }
    }
    for k in ["credHelpers", "credsStore"] {
        if file.other.contains_key(k) {
            tracing::debug!(file = %path.display(), "{k} is set; berth does not run credential helpers");
        }
    }
    Ok(out)
}

/// Sets (`Some`) or removes (`None`) the entry for `registry` in a docker-format auth file,
/// keeping the file's other entries and settings. Written atomically with mode 0600.
/// Returns whether an entry was there before.
pub fn update_auth_file(
    path: &Path,
    registry: &str,
    creds: Option<&Credentials>,
) -> Result<bool, AuthError> {
    let ferr = |cause: String| AuthError::File {
        path: path.into(),
        cause,
    };
    let mut file = read_file(path)?.unwrap_or_default();
    let key = normalize_registry_key(registry);
    let before = file.auths.len();
    file.auths.retain(|k, _| normalize_registry_key(k) != key);
    let existed = file.auths.len() != before;
    if let Some(c) = creds {
        let auth = base64::engine::general_purpose::STANDARD
            .encode(format!("{}:{}", c.username, c.password));
        file.auths.insert(
            key,
            AuthEntry {
                auth: Some(auth),
                ..Default::default()
            },
        );
    }
    let body = serde_json::to_vec_pretty(&file).map_err(|e| ferr(e.to_string()))?;
    write_atomic(path, &body, 0o600).map_err(|e| ferr(e.to_string()))?;
    Ok(existed)
}

/// Writes `data` to `path` through a temporary file in the same directory: create with
/// `mode`, write, fsync, rename, fsync the directory.
pub(crate) fn write_atomic(path: &Path, data: &[u8], mode: u32) -> std::io::Result<()> {
    use std::os::unix::fs::OpenOptionsExt as _;
    let dir = path.parent().filter(|p| !p.as_os_str().is_empty());
    let dir = dir.unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir)?;
    let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("file");
    let tmp = dir.join(format!(".{name}.tmp-{}", std::process::id()));
    let res = (|| {
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(mode)
            .open(&tmp)?;
        // The mode given to open is masked by the umask; set it exactly.
        f.set_permissions(std::os::unix::fs::PermissionsExt::from_mode(mode))?;
        f.write_all(data)?;
        f.sync_all()?;
        std::fs::rename(&tmp, path)?;
        std::fs::File::open(dir)?.sync_all()
    })();
    if res.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    res
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_normalized() {
        assert_eq!(
            normalize_registry_key("https://index.docker.io/v1/"),
            "docker.io"
        );
        assert_eq!(
            normalize_registry_key("http://127.0.0.1:5002/v2/"),
            "127.0.0.1:5002"
        );
        assert_eq!(normalize_registry_key("Reg.Example:443"), "reg.example:443");
    }

    #[test]
    fn reads_docker_formats_and_writes_0600() {
        use std::os::unix::fs::PermissionsExt as _;
        let tmp = tempfile::tempdir().unwrap();
        let p = tmp.path().join("config.json");
        std::fs::write(
            &p,
            r#"{"auths":{
                "https://index.docker.io/v1/":{"auth":"dTE6cDE="},
                "r2:5000":{"username":"u2","password":"p:2"},
                "helper.example":{}},
              "credHelpers":{"helper.example":"secret"},"psFormat":"x"}"#,
        )
        .unwrap();
        let m = read_auth_file(&p).unwrap();
        assert_eq!(m["docker.io"].username, "u1");
        assert_eq!(m["docker.io"].password, "p1");
        assert_eq!(m["r2:5000"].password, "p:2");
        assert!(!m.contains_key("helper.example"));

        let c = Credentials {
            username: "me".into(),
            password: "pw:x".into(),
        };
        assert!(!update_auth_file(&p, "http://r3:5000", Some(&c)).unwrap());
        assert_eq!(
            std::fs::metadata(&p).unwrap().permissions().mode() & 0o777,
            0o600
        );
        let m = read_auth_file(&p).unwrap();
        assert_eq!(m["r3:5000"], c);
        assert_eq!(m.len(), 3);
        let text = std::fs::read_to_string(&p).unwrap();
        assert!(text.contains("psFormat"), "other settings kept: {text}");
        assert!(update_auth_file(&p, "r3:5000", None).unwrap());
        assert!(!read_auth_file(&p).unwrap().contains_key("r3:5000"));
        assert!(read_auth_file(&tmp.path().join("none.json"))
            .unwrap()
            .is_empty());

        std::fs::write(&p, r#"{"auths":{"x":{"auth":"!!"}}}"#).unwrap();
        let e = read_auth_file(&p).unwrap_err().to_string();
        assert!(e.contains("not base64") && e.contains("\"x\""), "{e}");
    }
}
