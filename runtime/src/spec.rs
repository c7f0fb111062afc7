//! Loading and checking a bundle's `config.json`.
//!
//! Unknown fields are ignored with a warning naming each one: the runtime spec says a runtime
//! MUST ignore properties it does not know (runc ignores them silently), and config.json files
//! written for newer spec versions carry fields this runtime has no use for. The warning still
//! tells a user whose misspelt setting is not applied.

use oci_spec::runtime::{LinuxNamespaceType, Spec};
use std::collections::HashSet;
use std::path::{Path, PathBuf};

#[derive(Debug, thiserror::Error)]
pub enum SpecError {
    #[error("cannot read {path:?}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("invalid {path:?}: {msg}")]
    Parse { path: PathBuf, msg: String },
    #[error("config.json: {0}")]
    Invalid(String),
    #[error("invalid rootfs {path:?}: {msg}")]
    Rootfs { path: PathBuf, msg: String },
}

/// Reads `<bundle>/config.json`.
pub fn load(bundle: &Path) -> Result<Spec, SpecError> {
    let path = bundle.join("config.json");
    let data = std::fs::read(&path).map_err(|source| SpecError::Read {
        path: path.clone(),
        source,
    })?;
    parse(&data).map_err(|e| match e {
        SpecError::Parse { msg, .. } => SpecError::Parse { path, msg },
        e => e,
    })
}

/// Parses config.json bytes; warns about (and ignores) unknown fields, and capabilities this
/// runtime has no name for (as runc does: a config written for a newer kernel still runs).
pub fn parse(data: &[u8]) -> Result<Spec, SpecError> {
    let (spec, unknown) = match parse_collecting(data) {
        Ok(r) => r,
        // Only a config that failed pays for the second look.
        Err(e) => match without_unknown_capabilities(data) {
            Some((fixed, caps)) => {
                let r = parse_collecting(&fixed).map_err(|_| e)?;
                for cap in caps {
                    crate::container::warn(&format!(
                        "config.json: unknown capability {cap:?} is ignored"
                    ));
                }
                r
            }
            None => return Err(e),
        },
    };
    for field in unknown {
        crate::container::warn(&format!("config.json: unknown field {field:?} is ignored"));
    }
    Ok(spec)
}

/// config.json with the capabilities this runtime does not know taken out of
/// `process.capabilities`, and their names; `None` when there are none (or it is not JSON).
fn without_unknown_capabilities(data: &[u8]) -> Option<(Vec<u8>, Vec<String>)> {
    let mut doc: serde_json::Value = serde_json::from_slice(data).ok()?;
    let sets = doc.pointer_mut("/process/capabilities")?.as_object_mut()?;
    let mut dropped = Vec::new();
    for set in sets.values_mut() {
        let Some(list) = set.as_array_mut() else {
            continue;
        };
        list.retain(|c| {
            let known = serde_json::from_value::<oci_spec::runtime::Capability>(c.clone()).is_ok();
            if !known {
                let name = c.as_str().unwrap_or_default().to_string();
                if !dropped.contains(&name) {
                    dropped.push(name);
                }
            }
            known
        });
    }
    if dropped.is_empty() {
        return None;
    }
    Some((serde_json::to_vec(&doc).ok()?, dropped))
}

/// Parses config.json bytes; returns the spec and the paths of the fields it does not know
/// (`process.colour`).
fn parse_collecting(data: &[u8]) -> Result<(Spec, Vec<String>), SpecError> {
    let mut unknown = Vec::new();
    let de = &mut serde_json::Deserializer::from_slice(data);
    let spec: Spec =
        serde_ignored::deserialize(de, |p| unknown.push(p.to_string().replace(".?", ""))).map_err(
            |e| SpecError::Parse {
                path: PathBuf::from("config.json"),
                msg: e.to_string(),
            },
        )?;
    Ok((spec, unknown))
}

/// Checks what `create` needs and returns the absolute rootfs path.
pub fn validate(spec: &Spec, bundle: &Path) -> Result<PathBuf, SpecError> {
    let invalid = |m: String| Err(SpecError::Invalid(m));
    if !spec.version().starts_with("1.") {
        return invalid(format!(
            "unsupported ociVersion {:?} (want 1.x)",
            spec.version()
        ));
    }
    let Some(root) = spec.root() else {
        return invalid("root is missing".into());
    };
    let rootfs = if root.path().is_absolute() {
        root.path().clone()
    } else {
        bundle.join(root.path())
    };
    let meta = std::fs::metadata(&rootfs).map_err(|e| SpecError::Rootfs {
        path: rootfs.clone(),
        msg: e.to_string(),
    })?;
    if !meta.is_dir() {
        return Err(SpecError::Rootfs {
            path: rootfs,
            msg: "not a directory".into(),
        });
    }
    let rootfs = rootfs.canonicalize().map_err(|e| SpecError::Rootfs {
        path: rootfs,
        msg: e.to_string(),
    })?;

    let Some(process) = spec.process() else {
        return invalid("process is missing".into());
    };
    match process.args() {
        Some(a) if !a.is_empty() && !a[0].is_empty() => {}
        _ => return invalid("process.args must not be empty".into()),
    }
    if let Some(e) = crate::apparmor::check(process.apparmor_profile().as_deref()) {
        return invalid(e);
    }
    if !process.cwd().is_absolute() {
        return invalid(format!("process.cwd {:?} is not absolute", process.cwd()));
    }
    for e in process.env().iter().flatten() {
        if !e.contains('=') {
            return invalid(format!("process.env entry {e:?} is not KEY=VALUE"));
        }
    }
    if let Some(linux) = spec.linux() {
        let mut seen = HashSet::new();
        let mut has_userns = false;
        for ns in linux.namespaces().iter().flatten() {
            if !seen.insert(ns.typ()) {
                return invalid(format!("namespace {:?} listed twice", ns.typ()));
            }
            has_userns |= ns.typ() == LinuxNamespaceType::User;
        }
        let maps = linux.uid_mappings().as_ref().is_some_and(|m| !m.is_empty())
            || linux.gid_mappings().as_ref().is_some_and(|m| !m.is_empty());
        if maps && !has_userns {
            return invalid("uidMappings/gidMappings need a user namespace".into());
        }
        if has_userns
            && linux
                .namespaces()
                .iter()
                .flatten()
                .any(|n| n.typ() == LinuxNamespaceType::User && n.path().is_none())
            && !maps
        {
            return invalid("a new user namespace needs uidMappings and gidMappings".into());
        }
        if let Some(hn) = spec.hostname() {
            if !hn.is_empty() && !seen.contains(&LinuxNamespaceType::Uts) {
                return invalid("hostname needs a new uts namespace".into());
            }
        }
    }
    if let Some(hooks) = spec.hooks() {
        #[allow(deprecated)]
        let all = [
            hooks.prestart(),
            hooks.create_runtime(),
            hooks.create_container(),
            hooks.start_container(),
            hooks.poststart(),
            hooks.poststop(),
        ];
        for h in all.into_iter().flatten().flatten() {
            if !h.path().is_absolute() {
                return invalid(format!("hook path {:?} is not absolute", h.path()));
            }
            if h.timeout().is_some_and(|t| t <= 0) {
                return invalid(format!(
                    "hook {:?}: timeout must be greater than zero",
                    h.path()
                ));
            }
        }
    }
    Ok(rootfs)
}

#[cfg(test)]
mod tests {
    use super::*;

    const MINIMAL: &str = r#"{"ociVersion":"1.0.2","root":{"path":"/"},"process":{"user":{"uid":0,"gid":0},"args":["sh"],"cwd":"/"}}"#;

    #[test]
    fn minimal_spec_parses_and_validates() {
        let spec = parse(MINIMAL.as_bytes()).unwrap();
        assert_eq!(validate(&spec, Path::new("/")).unwrap(), PathBuf::from("/"));
    }

    #[test]
    fn unknown_capabilities_are_taken_out_and_named() {
        let odd = MINIMAL.replace(
            "\"cwd\":\"/\"",
            "\"cwd\":\"/\",\"capabilities\":{\"bounding\":[\"CAP_CHOWN\",\"CAP_BOGUS\"],\"effective\":[\"CAP_BOGUS\"]}",
        );
        assert!(parse_collecting(odd.as_bytes()).is_err());
        let (fixed, dropped) = without_unknown_capabilities(odd.as_bytes()).unwrap();
        assert_eq!(dropped, ["CAP_BOGUS"]);
        let spec = parse(odd.as_bytes()).unwrap();
        let caps = spec
            .process()
            .as_ref()
            .unwrap()
            .capabilities()
            .clone()
            .unwrap();
        assert_eq!(caps.bounding().as_ref().unwrap().len(), 1);
        assert!(caps.effective().as_ref().unwrap().is_empty());
        assert!(parse_collecting(&fixed).is_ok());
        // Nothing unknown: no second look, and a broken config stays an error.
        assert!(without_unknown_capabilities(MINIMAL.as_bytes()).is_none());
        assert!(parse(b"{").is_err());
    }

    #[test]
    fn unknown_fields_are_ignored_and_named() {
        let odd = MINIMAL
            .replace("\"cwd\":\"/\"", "\"cwd\":\"/\",\"colour\":1")
            .replace("\"ociVersion\"", "\"future\":{\"a\":[1]},\"ociVersion\"");
        let (spec, mut unknown) = parse_collecting(odd.as_bytes()).unwrap();
        unknown.sort();
        assert_eq!(unknown, ["future", "process.colour"]);
        assert_eq!(
            spec.process().as_ref().unwrap().args().as_ref().unwrap()[0],
            "sh"
        );
        let (_, none) = parse_collecting(MINIMAL.as_bytes()).unwrap();
        assert!(none.is_empty());
    }

    #[test]
    fn malformed_json_is_one_line() {
        let err = parse(b"{\"ociVersion\": ").unwrap_err().to_string();
        assert!(!err.contains('\n') && err.contains("EOF"), "{err}");
    }

    #[test]
    fn missing_rootfs_is_named() {
        let spec = parse(
            MINIMAL
                .replace("\"path\":\"/\"", "\"path\":\"/nonexistent-rootfs\"")
                .as_bytes(),
        )
        .unwrap();
        let err = validate(&spec, Path::new("/")).unwrap_err().to_string();
        assert!(err.contains("nonexistent-rootfs"), "{err}");
    }

    #[test]
    fn relative_cwd_is_rejected() {
        let spec = parse(
            MINIMAL
                .replace("\"cwd\":\"/\"", "\"cwd\":\"tmp\"")
                .as_bytes(),
        )
        .unwrap();
        assert!(validate(&spec, Path::new("/"))
            .unwrap_err()
            .to_string()
            .contains("cwd"));
    }
}
