//! `login` and `logout`: check credentials against a registry and keep them in berth's auth
//! file (see [`crate::auth`] for where that is and its format).

use std::collections::HashMap;

use crate::auth::{normalize_registry_key, update_auth_file, Credentials};
use crate::error::{Error, Result};
use crate::registry::{one_line, Registry, RegistryError, RegistryOverrides};
use crate::store::{blocking, Store};

impl Store {
    /// Checks `username`/`password` against `registry` (`host[:port]`, or a docker-style key
    /// such as `https://index.docker.io/v1/`) with basic auth or the registry's bearer-token
    /// challenge, then stores them in the auth file (mode 0600, written atomically). Later
    /// pulls and pushes of this store use them at once.
    pub async fn login(&self, registry: &str, username: &str, password: &str) -> Result<()> {
        self.login_with(registry, username, password, &RegistryOverrides::default())
            .await
    }

    /// [`Store::login`] with per-call plain-HTTP / insecure settings.
    pub async fn login_with(
        &self,
        registry: &str,
        username: &str,
        password: &str,
        ov: &RegistryOverrides,
    ) -> Result<()> {
        let reg = normalize_registry_key(registry);
        let fail = |cause: String| Error::Login {
            registry: reg.clone(),
            cause,
        };
        if reg.is_empty() {
            return Err(fail("no registry given".into()));
        }
        if username.is_empty() || username.contains(':') {
            return Err(fail("user name must be non-empty and without ':'".into()));
        }
        let creds = Credentials {
            username: username.into(),
            password: password.into(),
        };
        self.inner
            .registry
            .verify_login(&reg, &creds, ov)
            .await
            .map_err(|e| fail(e.0))?;
        let path = self
            .inner
            .registry
            .config()
            .auth_file
            .clone()
            .ok_or_else(|| fail("no auth file configured".into()))?;
        let r = reg.clone();
        blocking(move || update_auth_file(&path, &r, Some(&creds))).await??;
        self.inner.registry.reload_credentials();
        Ok(())
    }

    /// Removes the stored credentials of `registry` from berth's auth file. Returns whether
    /// there were any. (Credentials in docker's config are not touched.)
    pub async fn logout(&self, registry: &str) -> Result<bool> {
        let reg = normalize_registry_key(registry);
        let Some(path) = self.inner.registry.config().auth_file.clone() else {
            return Ok(false);
        };
        if !path.exists() {
            return Ok(false);
        }
        let existed = blocking(move || update_auth_file(&path, &reg, None)).await??;
        self.inner.registry.reload_credentials();
        Ok(existed)
    }
}

impl Registry {
    /// Checks `creds` against `registry`'s `/v2/`: basic auth, or the bearer-token challenge
    /// (token requested from the realm with the credentials).
    pub(crate) async fn verify_login(
        &self,
        registry: &str,
        creds: &Credentials,
        ov: &RegistryOverrides,
    ) -> Result<(), RegistryError> {
        let ep = self.endpoint(registry, Some(ov), false);
        let http = reqwest::Client::builder()
            .danger_accept_invalid_certs(ep.insecure)
            .connect_timeout(self.config().connect_timeout)
            .timeout(self.config().read_timeout)
            .user_agent(concat!("berth/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| RegistryError(one_line(&e)))?;
        let scheme = if ep.plain_http { "http" } else { "https" };
        // docker.io's registry API answers on index.docker.io (as oci-client resolves it).
        let host = if ep.host == "docker.io" {
            "index.docker.io"
        } else {
            ep.host.as_str()
        };
        let url = format!("{scheme}://{host}/v2/");
        let send = |req: reqwest::RequestBuilder| async move {
            req.send().await.map_err(|e| RegistryError(one_line(&e)))
        };
        let res = send(http.get(&url)).await?;
        if res.status().is_success() {
            // The registry needs no login; docker accepts this too.
            return Ok(());
        }
        if res.status() != reqwest::StatusCode::UNAUTHORIZED {
            return Err(RegistryError(format!("GET {url}: HTTP {}", res.status())));
        }
        let challenge = res
            .headers()
            .get(reqwest::header::WWW_AUTHENTICATE)
            .and_then(|h| h.to_str().ok())
            .unwrap_or("")
            .to_string();
        let denied = || RegistryError("unauthorized: invalid username or password".into());
        match parse_challenge(&challenge) {
            Some((scheme, params)) if scheme.eq_ignore_ascii_case("bearer") => {
                let realm = params.get("realm").ok_or_else(|| {
                    RegistryError(format!("bearer challenge without realm: {challenge}"))
                })?;
                let mut q: Vec<(&str, &str)> = vec![("account", creds.username.as_str())];
                if let Some(s) = params.get("service") {
                    q.push(("service", s));
                }
                let res = send(
                    http.get(realm.as_str())
                        .query(&q)
                        .basic_auth(&creds.username, Some(&creds.password)),
                )
                .await?;
                match res.status() {
                    s if s.is_success() => {
                        let body = res.bytes().await.map_err(|e| RegistryError(one_line(&e)))?;
                        let v: serde_json::Value = serde_json::from_slice(&body).map_err(|_| {
                            RegistryError(format!("token from {realm} is not JSON"))
                        })?;
                        let token = v
                            .get("token")
                            .or_else(|| v.get("access_token"))
                            .and_then(|t| t.as_str())
                            .ok_or_else(|| RegistryError(format!("no token from {realm}")))?;
                        let res = send(http.get(&url).bearer_auth(token)).await?;
                        if res.status().is_success() {
                            Ok(())
                        } else {
                            Err(denied())
                        }
                    }
                    reqwest::StatusCode::UNAUTHORIZED | reqwest::StatusCode::FORBIDDEN => {
                        Err(denied())
                    }
                    s => Err(RegistryError(format!("token request to {realm}: HTTP {s}"))),
                }
            }
            _ => {
                let res = send(
                    http.get(&url)
                        .basic_auth(&creds.username, Some(&creds.password)),
                )
                .await?;
                if res.status().is_success() {
                    Ok(())
                } else if res.status() == reqwest::StatusCode::UNAUTHORIZED {
                    Err(denied())
                } else {
                    Err(RegistryError(format!("GET {url}: HTTP {}", res.status())))
                }
            }
        }
    }
}

/// Parses `Scheme k="v",k2=v2` (one challenge) into the scheme and its parameters.
fn parse_challenge(h: &str) -> Option<(String, HashMap<String, String>)> {
    let h = h.trim();
    let (scheme, rest) = h.split_once(' ').unwrap_or((h, ""));
    if scheme.is_empty() {
        return None;
    }
    let mut params = HashMap::new();
    let mut rest = rest.trim();
    while !rest.is_empty() {
        let Some((k, after)) = rest.split_once('=') else {
            break;
        };
        let k = k.trim().trim_start_matches(',').trim().to_ascii_lowercase();
        let after = after.trim_start();
        let (v, next) = if let Some(q) = after.strip_prefix('"') {
            let end = q.find('"').unwrap_or(q.len());
            (q[..end].to_string(), q.get(end + 1..).unwrap_or(""))
        } else {
            let end = after.find(',').unwrap_or(after.len());
            (after[..end].trim().to_string(), &after[end..])
        };
        params.insert(k, v);
        rest = next.trim_start_matches([',', ' ']);
    }
    Some((scheme.to_string(), params))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn challenges() {
        let (s, p) =
            parse_challenge(r#"Bearer realm="http://127.0.0.1:1/token",service="reg",scope="repository:a:pull,push""#)
                .unwrap();
        assert_eq!(s, "Bearer");
        assert_eq!(p["realm"], "http://127.0.0.1:1/token");
        assert_eq!(p["service"], "reg");
        assert_eq!(p["scope"], "repository:a:pull,push");
        let (s, p) = parse_challenge("Basic realm=Registry").unwrap();
        assert_eq!(s, "Basic");
        assert_eq!(p["realm"], "Registry");
    }
}
