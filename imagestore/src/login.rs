//! `login` and `logout`: check credentials against a registry and keep them in berth's auth
//! file (see [`crate::auth`] for where that is and its format).

use crate::auth::{normalize_registry_key, update_auth_file, Credentials};
use crate::error::{Error, Result};
use crate::registry::RegistryOverrides;
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
