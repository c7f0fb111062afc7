//! OCI runtime bundles made from images, for running an image with `berth-runtime` (or runc)
//! by hand until `berth run` exists: a writable overlay snapshot of the image mounted at
//! `<dir>/rootfs` and a `config.json` from the image's defaults.
//!
//! Bundles are recorded in `<state>/bundles.json` (temp file + rename), so a restarted berthd
//! still knows which snapshots and mounts are whose.

use berth_imagestore::Store;
use serde::{Deserialize, Serialize};
use sha2::Digest as _;
use std::collections::BTreeMap;
use std::path::{Component, Path, PathBuf};
use tokio::sync::Mutex;
use tonic::Status;

/// runc's default config (`berth-runtime spec`), which images' defaults are laid over.
const DEFAULT_CONFIG: &str = include_str!("default-config.json");

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Entry {
    pub image: String,
    pub key: String,
}

pub struct Bundles {
    file: PathBuf,
    entries: Mutex<BTreeMap<String, Entry>>,
}

fn internal(what: &str, e: impl std::fmt::Display) -> Status {
    Status::internal(format!("{what}: {e}").replace('\n', " "))
}

impl Bundles {
    /// Loads the record under `state` (berthd's state directory).
    pub fn load(state: &Path) -> anyhow::Result<Bundles> {
        let file = state.join("bundles.json");
        let entries = match std::fs::read(&file) {
            Ok(b) => serde_json::from_slice(&b)
                .map_err(|e| anyhow::anyhow!("{}: {e}", file.display()))?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => BTreeMap::new(),
            Err(e) => anyhow::bail!("read {}: {e}", file.display()),
        };
        Ok(Bundles {
            file,
            entries: Mutex::new(entries),
        })
    }

    fn save(&self, entries: &BTreeMap<String, Entry>) -> Result<(), Status> {
        let tmp = self.file.with_extension("json.tmp");
        let data = serde_json::to_vec_pretty(entries).map_err(|e| internal("encode", e))?;
        std::fs::write(&tmp, data).map_err(|e| internal("write bundles.json", e))?;
        std::fs::rename(&tmp, &self.file).map_err(|e| internal("rename bundles.json", e))
    }

    /// The bundle directory using `image`, if one does.
    pub async fn using(&self, image: &str) -> Option<String> {
        let entries = self.entries.lock().await;
        entries
            .iter()
            .find(|(_, e)| e.image == image)
            .map(|(d, _)| d.clone())
    }

    pub async fn prepare(&self, store: &Store, image: &str, dir: &str) -> Result<String, Status> {
        let dir = absolute(dir)?;
        let key = format!(
            "bundle-{}",
            &hex::encode(sha2::Sha256::digest(dir.as_bytes()))[..16]
        );
        let mut entries = self.entries.lock().await;
        if entries.contains_key(&dir) {
            return Err(Status::already_exists(format!(
                "{dir} is already a bundle (remove it with: berth bundle --rm {dir})"
            )));
        }
        let rec = store.image(image).await.map_err(crate::images::status)?;
        let cfg = store
            .config(&rec.name)
            .await
            .map_err(crate::images::status)?;
        let dirp = Path::new(&dir);
        let rootfs = dirp.join("rootfs");
        if rootfs.exists()
            && std::fs::read_dir(&rootfs)
                .map(|mut d| d.next().is_some())
                .unwrap_or(true)
        {
            return Err(Status::already_exists(format!(
                "{} exists and is not empty",
                rootfs.display()
            )));
        }
        std::fs::create_dir_all(&rootfs)
            .map_err(|e| internal(&format!("create {}", rootfs.display()), e))?;
        let mount = store
            .rootfs_for(&rec.name, &key)
            .await
            .map_err(crate::images::status)?;
        let undo = |store: &Store| {
            let _ = berth_imagestore::unmount(&rootfs);
            let store = store.clone();
            let key = key.clone();
            async move {
                let _ = store.remove_rootfs(&key).await;
            }
        };
        if let Err(e) = mount.mount(&rootfs) {
            undo(store).await;
            return Err(internal(&format!("mount {}", rootfs.display()), e));
        }
        let config = match config_json(&cfg, &rootfs, dirp) {
            Ok(c) => c,
            Err(e) => {
                undo(store).await;
                return Err(e);
            }
        };
        let path = dirp.join("config.json");
        let tmp = dirp.join(".config.json.tmp");
        let written = std::fs::write(&tmp, &config).and_then(|_| std::fs::rename(&tmp, &path));
        if let Err(e) = written {
            undo(store).await;
            return Err(internal(&format!("write {}", path.display()), e));
        }
        entries.insert(
            dir.clone(),
            Entry {
                image: rec.name.clone(),
                key,
            },
        );
        self.save(&entries)?;
        tracing::info!(image = %rec.name, bundle = %dir, "bundle prepared");
        Ok(path.display().to_string())
    }

    pub async fn remove(&self, store: &Store, dir: &str) -> Result<(), Status> {
        let dir = absolute(dir)?;
        let mut entries = self.entries.lock().await;
        let Some(entry) = entries.get(&dir).cloned() else {
            return Err(Status::not_found(format!(
                "{dir} is not a bundle berthd made"
            )));
        };
        let dirp = Path::new(&dir);
        let rootfs = dirp.join("rootfs");
        match berth_imagestore::unmount(&rootfs) {
            Ok(()) => {}
            // Not mounted (any more): fine.
            Err(e) if e.to_string().contains("Invalid argument") || !rootfs.exists() => {}
            Err(e) => {
                return Err(Status::failed_precondition(format!(
                    "unmount {}: {e} (is a container still running on it?)",
                    rootfs.display()
                )))
            }
        }
        store
            .remove_rootfs(&entry.key)
            .await
            .map_err(crate::images::status)?;
        let _ = std::fs::remove_dir(&rootfs);
        let _ = std::fs::remove_file(dirp.join("config.json"));
        let _ = std::fs::remove_dir(dirp);
        entries.remove(&dir);
        self.save(&entries)?;
        tracing::info!(bundle = %dir, "bundle removed");
        Ok(())
    }
}

fn absolute(dir: &str) -> Result<String, Status> {
    let p = Path::new(dir);
    if !p.is_absolute() || p.components().any(|c| matches!(c, Component::ParentDir)) {
        return Err(Status::invalid_argument(format!(
            "bundle directory {dir:?} must be an absolute path without \"..\""
        )));
    }
    Ok(p.display().to_string().trim_end_matches('/').to_string())
}

/// Reads `rel` inside `root` without following symlinks (an image's /etc/passwd must not
/// make berthd read a host file), if it is a regular file of at most 1 MiB (an image's FIFO or
/// device there must not block or fill berthd).
fn read_in_root(root: &Path, rel: &str) -> Option<String> {
    use std::io::Read;
    use std::os::unix::fs::OpenOptionsExt;
    const MAX: u64 = 1 << 20;
    let mut p = root.to_path_buf();
    for part in rel.split('/').filter(|s| !s.is_empty()) {
        p.push(part);
        if std::fs::symlink_metadata(&p).ok()?.file_type().is_symlink() {
            return None;
        }
    }
    let f = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK)
        .open(&p)
        .ok()?;
    let md = f.metadata().ok()?;
    if !md.is_file() || md.len() > MAX {
        return None;
    }
    let mut text = String::new();
    f.take(MAX).read_to_string(&mut text).ok()?;
    Some(text)
}

/// `name` or number, looked up in an /etc/passwd- or /etc/group-style file.
fn lookup(file: Option<&str>, name: &str) -> Option<(u32, Option<u32>)> {
    if let Ok(n) = name.parse() {
        return Some((n, None));
    }
    file?.lines().find_map(|l| {
        let f: Vec<&str> = l.split(':').collect();
        (f.len() >= 4 && f[0] == name)
            .then(|| Some((f[2].parse().ok()?, f[3].parse().ok())))
            .flatten()
    })
}

/// The groups the image's /etc/group lists user `uid` in (by its name in /etc/passwd).
pub fn member_of(rootfs: &Path, uid: u32) -> Vec<u32> {
    let Some(passwd) = read_in_root(rootfs, "etc/passwd") else {
        return Vec::new();
    };
    let Some(name) = passwd.lines().find_map(|l| {
        let f: Vec<&str> = l.split(':').collect();
        (f.len() >= 4 && f[2].parse() == Ok(uid)).then(|| f[0].to_string())
    }) else {
        return Vec::new();
    };
    read_in_root(rootfs, "etc/group")
        .unwrap_or_default()
        .lines()
        .filter_map(|l| {
            let f: Vec<&str> = l.split(':').collect();
            (f.len() >= 4 && f[3].split(',').any(|m| m == name))
                .then(|| f[2].parse().ok())
                .flatten()
        })
        .collect()
}

/// The image's `User` (`name`, `uid`, `name:group`, `uid:gid`) as numbers.
pub fn resolve_user(rootfs: &Path, user: &str) -> Result<(u32, u32), Status> {
    if user.is_empty() {
        return Ok((0, 0));
    }
    let (u, g) = match user.split_once(':') {
        Some((u, g)) => (u, Some(g)),
        None => (user, None),
    };
    let passwd = read_in_root(rootfs, "etc/passwd");
    let (uid, primary) = lookup(passwd.as_deref(), u).ok_or_else(|| {
        Status::invalid_argument(format!("user {u:?} is not in the image's /etc/passwd"))
    })?;
    let gid = match g {
        Some(g) => {
            let group = read_in_root(rootfs, "etc/group");
            lookup(group.as_deref(), g)
                .ok_or_else(|| {
                    Status::invalid_argument(format!(
                        "group {g:?} is not in the image's /etc/group"
                    ))
                })?
                .0
        }
        // A uid with an entry in /etc/passwd has its group there, as with runc and docker.
        None => primary
            .or_else(|| {
                passwd.as_deref()?.lines().find_map(|l| {
                    let f: Vec<&str> = l.split(':').collect();
                    (f.len() >= 4 && f[2].parse() == Ok(uid))
                        .then(|| f[3].parse().ok())
                        .flatten()
                })
            })
            .unwrap_or(0),
    };
    Ok((uid, gid))
}

fn config_json(
    cfg: &berth_imagestore::RuntimeConfig,
    rootfs: &Path,
    dir: &Path,
) -> Result<String, Status> {
    let mut spec: serde_json::Value =
        serde_json::from_str(DEFAULT_CONFIG).map_err(|e| internal("default config", e))?;
    let args: Vec<String> = cfg
        .entrypoint
        .clone()
        .unwrap_or_default()
        .into_iter()
        .chain(cfg.cmd.clone().unwrap_or_default())
        .collect();
    if args.is_empty() {
        return Err(Status::invalid_argument(
            "the image has neither Entrypoint nor Cmd: nothing to run",
        ));
    }
    let mut env = cfg.env.clone().unwrap_or_default();
    if !env.iter().any(|e| e.starts_with("PATH=")) {
        env.push("PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin".into());
    }
    let (uid, gid) = resolve_user(rootfs, cfg.user.as_deref().unwrap_or(""))?;
    let caps = serde_json::json!(crate::spec::DEFAULT_CAPS);
    let hostname = dir
        .file_name()
        .map(|n| n.to_string_lossy().chars().take(63).collect::<String>())
        .unwrap_or_else(|| "berth".into());
    let p = &mut spec["process"];
    p["terminal"] = false.into();
    p["args"] = serde_json::json!(args);
    p["env"] = serde_json::json!(env);
    p["cwd"] = cfg
        .working_dir
        .clone()
        .filter(|w| !w.is_empty())
        .unwrap_or_else(|| "/".into())
        .into();
    p["user"] = serde_json::json!({"uid": uid, "gid": gid});
    p["capabilities"] = serde_json::json!({"bounding": caps, "effective": caps, "permitted": caps});
    spec["root"] = serde_json::json!({"path": "rootfs", "readonly": false});
    spec["hostname"] = hostname.into();
    if let Some(sig) = &cfg.stop_signal {
        spec["annotations"]["org.opencontainers.image.stopSignal"] = sig.clone().into();
    }
    serde_json::to_string_pretty(&spec).map_err(|e| internal("encode config", e))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn users_resolve_from_the_image_files() {
        let d = tempfile_dir();
        std::fs::create_dir_all(d.join("etc")).unwrap();
        std::fs::write(
            d.join("etc/passwd"),
            "root:x:0:0::/root:/bin/sh\nwww-data:x:33:34::/var/www:/bin/false\n",
        )
        .unwrap();
        std::fs::write(d.join("etc/group"), "root:x:0:\nstaff:x:50:\n").unwrap();
        assert_eq!(resolve_user(&d, "").unwrap(), (0, 0));
        assert_eq!(resolve_user(&d, "www-data").unwrap(), (33, 34));
        assert_eq!(resolve_user(&d, "www-data:staff").unwrap(), (33, 50));
        assert_eq!(resolve_user(&d, "1000:1000").unwrap(), (1000, 1000));
        // A uid with a passwd entry has its group; one without, group 0.
        assert_eq!(resolve_user(&d, "33").unwrap(), (33, 34));
        assert_eq!(resolve_user(&d, "1001").unwrap(), (1001, 0));
        assert!(resolve_user(&d, "nobody").is_err());
        // The groups that list a user by name.
        std::fs::write(
            d.join("etc/group"),
            "root:x:0:\nstaff:x:50:www-data,root\nweb:x:51:www-data\nother:x:52:www\n",
        )
        .unwrap();
        assert_eq!(member_of(&d, 33), vec![50, 51]);
        assert_eq!(member_of(&d, 0), vec![50]);
        assert_eq!(member_of(&d, 1001), Vec::<u32>::new());
        // A FIFO as /etc/group is not read (it would block), nor is a directory.
        std::fs::remove_file(d.join("etc/group")).unwrap();
        nix::unistd::mkfifo(
            &d.join("etc/group"),
            nix::sys::stat::Mode::from_bits_truncate(0o644),
        )
        .unwrap();
        assert_eq!(member_of(&d, 33), Vec::<u32>::new());
        std::fs::remove_file(d.join("etc/group")).unwrap();
        std::fs::create_dir(d.join("etc/group")).unwrap();
        assert_eq!(member_of(&d, 33), Vec::<u32>::new());
        std::fs::remove_dir(d.join("etc/group")).unwrap();
        // A symlinked /etc/passwd is not followed out of the image.
        std::fs::remove_file(d.join("etc/passwd")).unwrap();
        std::os::unix::fs::symlink("/etc/passwd", d.join("etc/passwd")).unwrap();
        assert!(resolve_user(&d, "root").is_err());
        std::fs::remove_dir_all(&d).unwrap();
    }

    fn tempfile_dir() -> PathBuf {
        let d = std::env::temp_dir().join(format!("berth-bundle-unit-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        d
    }

    #[test]
    fn bundle_dirs_must_be_absolute() {
        assert!(absolute("rel/dir").is_err());
        assert!(absolute("/a/../b").is_err());
        assert_eq!(absolute("/a/b/").unwrap(), "/a/b");
    }
}
