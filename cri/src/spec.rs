//! The OCI runtime spec (`config.json`) of a container: runc's defaults, laid over with the
//! image's config and then with what the user asked for, the way docker composes them.

use crate::api::ContainerConfig;
use berth_imagestore::RuntimeConfig;
use serde_json::{json, Value};
use std::path::Path;
use tonic::Status;

/// runc's default config (`berth-runtime spec`).
const DEFAULT_CONFIG: &str = include_str!("default-config.json");

/// The capabilities docker and containerd give a container by default (runc's `spec` gives
/// only three, too few for images such as nginx that switch users).
pub const DEFAULT_CAPS: &[&str] = &[
    "CAP_CHOWN",
    "CAP_DAC_OVERRIDE",
    "CAP_FSETID",
    "CAP_FOWNER",
    "CAP_MKNOD",
    "CAP_NET_RAW",
    "CAP_SETGID",
    "CAP_SETUID",
    "CAP_SETFCAP",
    "CAP_SETPCAP",
    "CAP_NET_BIND_SERVICE",
    "CAP_SYS_CHROOT",
    "CAP_KILL",
    "CAP_AUDIT_WRITE",
];

/// Every capability a privileged container gets.
pub const ALL_CAPS: &[&str] = &[
    "CAP_CHOWN",
    "CAP_DAC_OVERRIDE",
    "CAP_DAC_READ_SEARCH",
    "CAP_FOWNER",
    "CAP_FSETID",
    "CAP_KILL",
    "CAP_SETGID",
    "CAP_SETUID",
    "CAP_SETPCAP",
    "CAP_LINUX_IMMUTABLE",
    "CAP_NET_BIND_SERVICE",
    "CAP_NET_BROADCAST",
    "CAP_NET_ADMIN",
    "CAP_NET_RAW",
    "CAP_IPC_LOCK",
    "CAP_IPC_OWNER",
    "CAP_SYS_MODULE",
    "CAP_SYS_RAWIO",
    "CAP_SYS_CHROOT",
    "CAP_SYS_PTRACE",
    "CAP_SYS_PACCT",
    "CAP_SYS_ADMIN",
    "CAP_SYS_BOOT",
    "CAP_SYS_NICE",
    "CAP_SYS_RESOURCE",
    "CAP_SYS_TIME",
    "CAP_SYS_TTY_CONFIG",
    "CAP_MKNOD",
    "CAP_LEASE",
    "CAP_AUDIT_WRITE",
    "CAP_AUDIT_CONTROL",
    "CAP_SETFCAP",
    "CAP_MAC_OVERRIDE",
    "CAP_MAC_ADMIN",
    "CAP_SYSLOG",
    "CAP_WAKE_ALARM",
    "CAP_BLOCK_SUSPEND",
    "CAP_AUDIT_READ",
    "CAP_PERFMON",
    "CAP_BPF",
    "CAP_CHECKPOINT_RESTORE",
];

const DEFAULT_PATH: &str = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// `chown`, `CAP_CHOWN` or `ALL` as `CAP_CHOWN` / `ALL`.
pub fn cap_name(c: &str) -> Result<String, Status> {
    let up = c.trim().to_ascii_uppercase();
    if up == "ALL" {
        return Ok(up);
    }
    let name = if up.starts_with("CAP_") {
        up
    } else {
        format!("CAP_{up}")
    };
    if ALL_CAPS.contains(&name.as_str()) {
        Ok(name)
    } else {
        Err(Status::invalid_argument(format!(
            "unknown capability: {c:?}"
        )))
    }
}

/// The capability set from docker's defaults, `--cap-add` and `--cap-drop`.
pub fn capabilities(c: &ContainerConfig) -> Result<Vec<String>, Status> {
    if c.privileged {
        return Ok(ALL_CAPS.iter().map(|s| s.to_string()).collect());
    }
    let add: Vec<String> = c
        .cap_add
        .iter()
        .map(|s| cap_name(s))
        .collect::<Result<_, _>>()?;
    let drop: Vec<String> = c
        .cap_drop
        .iter()
        .map(|s| cap_name(s))
        .collect::<Result<_, _>>()?;
    let mut caps: Vec<String> = if drop.iter().any(|d| d == "ALL") {
        Vec::new()
    } else {
        DEFAULT_CAPS
            .iter()
            .map(|s| s.to_string())
            .filter(|s| !drop.contains(s))
            .collect()
    };
    if add.iter().any(|a| a == "ALL") {
        caps = ALL_CAPS
            .iter()
            .map(|s| s.to_string())
            .filter(|s| !drop.contains(s))
            .collect();
    }
    for a in add {
        if a != "ALL" && !caps.contains(&a) {
            caps.push(a);
        }
    }
    Ok(caps)
}

/// The process arguments: docker's rules for Entrypoint and Cmd.
pub fn args(c: &ContainerConfig, img: &RuntimeConfig) -> Result<Vec<String>, Status> {
    let entry: Vec<String> = if c.entrypoint_set {
        c.entrypoint
            .iter()
            .filter(|s| !s.is_empty())
            .cloned()
            .collect()
    } else {
        img.entrypoint.clone().unwrap_or_default()
    };
    let cmd: Vec<String> = if !c.cmd.is_empty() {
        c.cmd.clone()
    } else if c.entrypoint_set {
        Vec::new()
    } else {
        img.cmd.clone().unwrap_or_default()
    };
    let all: Vec<String> = entry.into_iter().chain(cmd).collect();
    if all.is_empty() {
        return Err(Status::invalid_argument(
            "no command specified: the image has neither Entrypoint nor Cmd",
        ));
    }
    Ok(all)
}

/// Environment: PATH, the image's, HOSTNAME, TERM with a tty, then `-e` (later wins per key).
pub fn env(base: &[String], extra: &[String], hostname: &str, tty: bool) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    let mut set = |kv: &str| {
        let key = kv.split('=').next().unwrap_or(kv);
        out.retain(|e| e.split('=').next() != Some(key));
        out.push(kv.to_string());
    };
    set(DEFAULT_PATH);
    for e in base {
        set(e);
    }
    if !hostname.is_empty() {
        set(&format!("HOSTNAME={hostname}"));
    }
    if tty {
        set("TERM=xterm");
    }
    for e in extra {
        set(e);
    }
    out
}

/// Where the container's network namespace comes from.
pub enum NetNs<'a> {
    /// The host's (`--network host`).
    Host,
    /// A new one made by the runtime, with only lo (`--network none`).
    New,
    /// A namespace berthd set up (bridge network), pinned at this path.
    Path(&'a Path),
}

pub struct Inputs<'a> {
    pub id: &'a str,
    pub config: &'a ContainerConfig,
    pub image: &'a RuntimeConfig,
    pub rootfs: &'a Path,
    /// The directory with `hosts`, `hostname` and `resolv.conf` for the container.
    pub etc_dir: Option<&'a Path>,
    pub netns: NetNs<'a>,
    pub hostname: &'a str,
}

/// The container's config.json.
pub fn build(i: &Inputs) -> Result<Value, Status> {
    let c = i.config;
    let mut spec: Value = serde_json::from_str(DEFAULT_CONFIG).expect("built-in default config");
    let args = args(c, i.image)?;
    let env = env(
        &i.image.env.clone().unwrap_or_default(),
        &c.env,
        i.hostname,
        c.tty,
    );
    let user = if c.user.is_empty() {
        i.image.user.clone().unwrap_or_default()
    } else {
        c.user.clone()
    };
    let (uid, gid) = crate::bundle::resolve_user(i.rootfs, &user)?;
    let cwd = if !c.workdir.is_empty() {
        c.workdir.clone()
    } else {
        i.image
            .working_dir
            .clone()
            .filter(|w| !w.is_empty())
            .unwrap_or_else(|| "/".into())
    };
    if !cwd.starts_with('/') {
        return Err(Status::invalid_argument(format!(
            "the working directory {cwd:?} is not an absolute path"
        )));
    }
    let caps = capabilities(c)?;
    let p = &mut spec["process"];
    p["terminal"] = c.tty.into();
    p["args"] = json!(args);
    p["env"] = json!(env);
    p["cwd"] = cwd.into();
    p["user"] = json!({"uid": uid, "gid": gid});
    p["capabilities"] = json!({"bounding": caps, "effective": caps, "permitted": caps});
    p["noNewPrivileges"] = false.into();
    // berthd's own open-files limit, as docker's containers inherit dockerd's (a fixed value
    // above the host's hard limit could not be set, and would be lowered with a warning).
    let (soft, hard) = nix::sys::resource::getrlimit(nix::sys::resource::Resource::RLIMIT_NOFILE)
        .unwrap_or((1024, 4096));
    p["rlimits"] = json!([{"type": "RLIMIT_NOFILE", "hard": hard, "soft": soft}]);
    spec["root"] = json!({"path": i.rootfs, "readonly": c.read_only});
    spec["hostname"] = i.hostname.into();

    let mounts = spec["mounts"].as_array_mut().expect("default mounts");
    if c.privileged {
        // Read-write sysfs and cgroups, as docker gives privileged containers.
        for m in mounts.iter_mut() {
            if let Some(opts) = m["options"].as_array_mut() {
                opts.retain(|o| o != "ro");
            }
        }
    }
    if let Some(dir) = i.etc_dir {
        for f in ["hosts", "hostname", "resolv.conf"] {
            mounts.push(json!({
                "destination": format!("/etc/{f}"),
                "type": "bind",
                "source": dir.join(f),
                "options": ["rbind", "rprivate"],
            }));
        }
    }
    for m in &c.mounts {
        if !m.target.starts_with('/') {
            return Err(Status::invalid_argument(format!(
                "invalid mount target {:?}: must be an absolute path",
                m.target
            )));
        }
        match m.r#type.as_str() {
            "bind" | "" => {
                let src = Path::new(&m.source);
                if !src.is_absolute() {
                    return Err(Status::invalid_argument(format!(
                        "invalid bind source {:?}: must be an absolute path",
                        m.source
                    )));
                }
                if !src.exists() {
                    return Err(Status::invalid_argument(format!(
                        "bind source path does not exist: {}",
                        m.source
                    )));
                }
                // Private unless the mount asks for a propagation (the CRI's rslave/rshared).
                let propagation = m.options.iter().any(|o| {
                    matches!(
                        o.as_str(),
                        "rslave" | "rshared" | "slave" | "shared" | "private" | "rprivate"
                    )
                });
                let mut opts = vec!["rbind".to_string()];
                if !propagation {
                    opts.push("rprivate".into());
                }
                if m.readonly {
                    opts.push("ro".into());
                }
                opts.extend(m.options.iter().cloned());
                mounts.push(json!({"destination": m.target, "type": "bind", "source": m.source, "options": opts}));
            }
            "tmpfs" => {
                let mut opts = vec!["nosuid".to_string(), "nodev".to_string()];
                if m.readonly {
                    opts.push("ro".into());
                }
                opts.extend(m.options.iter().cloned());
                mounts.push(json!({"destination": m.target, "type": "tmpfs", "source": "tmpfs", "options": opts}));
            }
            t => {
                return Err(Status::invalid_argument(format!(
                    "unsupported mount type {t:?} (bind or tmpfs)"
                )))
            }
        }
    }

    // A mount that propagates back to the host needs a shared root (and one that receives from
    // it at least a slave root), as containerd sets it.
    let opts: Vec<&str> = c
        .mounts
        .iter()
        .flat_map(|m| m.options.iter().map(String::as_str))
        .collect();
    let linux = &mut spec["linux"];
    if opts.contains(&"rshared") {
        linux["rootfsPropagation"] = "rshared".into();
    } else if opts.contains(&"rslave") {
        linux["rootfsPropagation"] = "rslave".into();
    }
    linux["cgroupsPath"] = format!("/berth/{}", i.id).into();
    let ns = linux["namespaces"]
        .as_array_mut()
        .expect("default namespaces");
    match i.netns {
        NetNs::Host => ns.retain(|n| n["type"] != "network"),
        NetNs::New => {}
        NetNs::Path(p) => {
            for n in ns.iter_mut() {
                if n["type"] == "network" {
                    n["path"] = json!(p);
                }
            }
        }
    }
    if matches!(i.netns, NetNs::Host) {
        // The host's network: the hostname stays the host's too (docker does the same).
        ns.retain(|n| n["type"] != "uts");
        spec.as_object_mut().expect("object").remove("hostname");
    }
    let linux = &mut spec["linux"];
    let mut res = json!({});
    if c.memory > 0 {
        res["memory"] = json!({"limit": c.memory});
    }
    if c.cpus > 0.0 {
        let period = 100_000u64;
        res["cpu"] = json!({"quota": (c.cpus * period as f64) as i64, "period": period});
    }
    if c.pids_limit > 0 {
        res["pids"] = json!({"limit": c.pids_limit});
    }
    if c.privileged {
        res["devices"] = json!([{"allow": true, "access": "rwm"}]);
        linux["maskedPaths"] = json!([]);
        linux["readonlyPaths"] = json!([]);
    } else {
        res["devices"] = json!([{"allow": false, "access": "rwm"}]);
    }
    linux["resources"] = res;
    let stop = if !c.stop_signal.is_empty() {
        Some(c.stop_signal.clone())
    } else {
        i.image.stop_signal.clone()
    };
    if let Some(sig) = stop {
        spec["annotations"]["org.opencontainers.image.stopSignal"] = sig.into();
    }
    if !c.cri_linux.is_empty() {
        let cri: crate::cri_spec::CriLinux = serde_json::from_str(&c.cri_linux)
            .map_err(|e| Status::internal(format!("the container's CRI settings: {e}")))?;
        crate::cri_spec::apply(&mut spec, &cri, i.id, c.memory, c.privileged)?;
        crate::cri_spec::groups(&mut spec, &cri, i.rootfs);
    } else {
        let opts = security_opts(c)?;
        if let Some(p) = crate::apparmor::profile_for(&opts.apparmor, c.privileged)? {
            spec["process"]["apparmorProfile"] = p.into();
        }
        if opts.no_new_privileges {
            spec["process"]["noNewPrivileges"] = true.into();
        }
        // As docker: a privileged container runs without a seccomp filter.
        if let (Some(profile), false) = (opts.seccomp, c.privileged) {
            spec["linux"]["seccomp"] = profile;
        }
    }
    Ok(spec)
}

/// What docker's `--security-opt` asked for (berth run; the CRI has its own fields).
#[derive(Debug, Default, PartialEq)]
pub struct SecurityOpts {
    pub apparmor: crate::cri_spec::AppArmor,
    /// An OCI `linux.seccomp` profile; None: no filter.
    pub seccomp: Option<Value>,
    pub no_new_privileges: bool,
}

/// Parses `security_opt` (`KEY=VALUE`, or docker's older `KEY:VALUE`).
pub fn security_opts(c: &ContainerConfig) -> Result<SecurityOpts, Status> {
    use crate::cri_spec::AppArmor;
    let mut o = SecurityOpts::default();
    for opt in &c.security_opt {
        let (key, value) = match opt.split_once(['=', ':']) {
            Some((k, v)) => (k, Some(v)),
            None => (opt.as_str(), None),
        };
        let bad = |why: &str| {
            Status::invalid_argument(format!("invalid --security-opt {:?}: {why}", short(opt)))
        };
        match (key, value) {
            ("apparmor", Some("unconfined")) => o.apparmor = AppArmor::Unconfined,
            ("apparmor", Some(p)) if !p.is_empty() => o.apparmor = AppArmor::Localhost(p.into()),
            ("seccomp", Some("unconfined")) => o.seccomp = None,
            ("seccomp", Some(json)) => {
                let profile: Value = serde_json::from_str(json)
                    .map_err(|e| bad(&format!("the seccomp profile is not JSON: {e}")))?;
                if !profile.get("defaultAction").is_some_and(Value::is_string) {
                    return Err(bad("the seccomp profile has no defaultAction"));
                }
                o.seccomp = Some(profile);
            }
            ("no-new-privileges", None | Some("true")) => o.no_new_privileges = true,
            ("no-new-privileges", Some("false")) => o.no_new_privileges = false,
            ("label", _) => return Err(bad("SELinux labels are not supported")),
            _ => {
                return Err(bad(
                    "want apparmor=PROFILE, seccomp=unconfined|PROFILE.json or no-new-privileges",
                ))
            }
        }
    }
    Ok(o)
}

/// `s` cut to 60 characters, for an error message that stays one line.
fn short(s: &str) -> String {
    let one: String = s.split_whitespace().collect::<Vec<_>>().join(" ");
    match one.char_indices().nth(60) {
        Some((i, _)) => format!("{}…", &one[..i]),
        None => one,
    }
}

/// Process JSON for `exec`: the container's process with the exec's changes.
pub fn exec_process(
    container_spec: &Value,
    rootfs: &Path,
    e: &crate::api::ExecInput,
) -> Result<Value, Status> {
    let (cmd, extra_env, user, workdir, tty, privileged) =
        (&e.cmd, &e.env, &e.user, &e.workdir, e.tty, e.privileged);
    let mut p = container_spec["process"].clone();
    if cmd.is_empty() {
        return Err(Status::invalid_argument("exec: no command given"));
    }
    p["args"] = json!(cmd);
    let base: Vec<String> = serde_json::from_value(p["env"].clone()).unwrap_or_default();
    let mut env = env(&base, extra_env, "", tty);
    if !tty {
        env.retain(|e| !e.starts_with("TERM=") || base.contains(e));
    }
    p["env"] = json!(env);
    p["terminal"] = tty.into();
    if !workdir.is_empty() {
        p["cwd"] = workdir.as_str().into();
    }
    if !user.is_empty() {
        let (uid, gid) = crate::bundle::resolve_user(rootfs, user)?;
        p["user"] = json!({"uid": uid, "gid": gid});
    }
    if privileged {
        p["capabilities"] =
            json!({"bounding": ALL_CAPS, "effective": ALL_CAPS, "permitted": ALL_CAPS});
    }
    Ok(p)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn img(entry: Option<&[&str]>, cmd: Option<&[&str]>) -> RuntimeConfig {
        let v = |o: Option<&[&str]>| o.map(|a| a.iter().map(|s| s.to_string()).collect());
        RuntimeConfig {
            entrypoint: v(entry),
            cmd: v(cmd),
            ..Default::default()
        }
    }

    fn cfg() -> ContainerConfig {
        ContainerConfig::default()
    }

    #[test]
    fn security_opts_as_docker_spells_them() {
        use crate::cri_spec::AppArmor;
        let opts = |o: &[&str]| {
            let mut c = cfg();
            c.security_opt = o.iter().map(|s| s.to_string()).collect();
            security_opts(&c)
        };
        assert_eq!(opts(&[]).unwrap(), SecurityOpts::default());
        let o = opts(&["apparmor=p1", "no-new-privileges", "seccomp=unconfined"]).unwrap();
        assert_eq!(o.apparmor, AppArmor::Localhost("p1".into()));
        assert!(o.no_new_privileges && o.seccomp.is_none());
        assert_eq!(
            opts(&["apparmor:unconfined"]).unwrap().apparmor,
            AppArmor::Unconfined
        );
        let o = opts(&[r#"seccomp={"defaultAction": "SCMP_ACT_ALLOW", "x": "a:b=c"}"#]).unwrap();
        assert_eq!(o.seccomp.unwrap()["x"], "a:b=c");
        // The last of a repeated option counts.
        assert!(
            !opts(&["no-new-privileges", "no-new-privileges=false"])
                .unwrap()
                .no_new_privileges
        );
        for (bad, want) in [
            ("apparmor=", "want apparmor=PROFILE"),
            ("seccomp={", "not JSON"),
            ("seccomp={}", "defaultAction"),
            ("label=disable", "SELinux"),
            ("no-new-privileges=maybe", "want"),
            ("nope", "\"nope\""),
        ] {
            let e = opts(&[bad]).unwrap_err();
            assert_eq!(e.code(), tonic::Code::InvalidArgument, "{bad}");
            assert!(e.message().contains(want), "{bad}: {}", e.message());
        }
    }

    #[test]
    fn entrypoint_and_cmd_follow_docker() {
        let i = img(
            Some(&["/docker-entrypoint.sh"]),
            Some(&["nginx", "-g", "daemon off;"]),
        );
        assert_eq!(args(&cfg(), &i).unwrap()[0], "/docker-entrypoint.sh");
        let mut c = cfg();
        c.cmd = vec!["sh".into()];
        assert_eq!(args(&c, &i).unwrap(), vec!["/docker-entrypoint.sh", "sh"]);
        // --entrypoint resets the image's Cmd.
        let mut c = cfg();
        c.entrypoint_set = true;
        c.entrypoint = vec!["/bin/true".into()];
        assert_eq!(args(&c, &i).unwrap(), vec!["/bin/true"]);
        // --entrypoint "" with a command runs just the command.
        let mut c = cfg();
        c.entrypoint_set = true;
        c.entrypoint = vec!["".into()];
        c.cmd = vec!["ls".into()];
        assert_eq!(args(&c, &i).unwrap(), vec!["ls"]);
        assert!(args(&cfg(), &img(None, None)).is_err());
    }

    #[test]
    fn env_later_wins_and_path_defaults() {
        let e = env(
            &["PATH=/x".into(), "A=1".into()],
            &["A=2".into(), "B=3".into()],
            "h",
            true,
        );
        assert_eq!(e, vec!["PATH=/x", "HOSTNAME=h", "TERM=xterm", "A=2", "B=3"]);
        assert!(env(&[], &[], "", false)[0].starts_with("PATH=/usr/local/sbin"));
    }

    #[test]
    fn capabilities_add_and_drop() {
        let mut c = cfg();
        c.cap_add = vec!["net_admin".into()];
        c.cap_drop = vec!["CAP_CHOWN".into()];
        let caps = capabilities(&c).unwrap();
        assert!(caps.contains(&"CAP_NET_ADMIN".to_string()));
        assert!(!caps.contains(&"CAP_CHOWN".to_string()));
        let mut c = cfg();
        c.cap_drop = vec!["all".into()];
        c.cap_add = vec!["kill".into()];
        assert_eq!(capabilities(&c).unwrap(), vec!["CAP_KILL"]);
        let mut c = cfg();
        c.cap_add = vec!["bogus".into()];
        assert!(capabilities(&c).is_err());
    }
}
