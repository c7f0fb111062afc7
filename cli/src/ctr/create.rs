//! `create` and `run`: docker's flags turned into a container config, the create call, and
//! docker's exit codes for what went wrong.

use anyhow::{anyhow, bail, Context, Result};
use berth_api::*;
use clap::{ArgAction, Args};
use tonic::transport::Channel;

/// Flags of `create` and `run`.
#[derive(Args, Debug, Clone)]
pub struct CreateArgs {
    /// Print help
    #[arg(long, action = ArgAction::Help)]
    help: Option<bool>,
    /// Keep STDIN open
    #[arg(short = 'i', long)]
    pub interactive: bool,
    /// Allocate a pseudo-TTY
    #[arg(short = 't', long)]
    pub tty: bool,
    /// Remove the container when it exits
    #[arg(long)]
    pub rm: bool,
    /// Container name
    #[arg(long)]
    pub name: Option<String>,
    /// Set environment variables (KEY=VALUE, or KEY to take it from here)
    #[arg(short = 'e', long = "env")]
    pub env: Vec<String>,
    /// Read environment variables from a file
    #[arg(long)]
    pub env_file: Vec<String>,
    /// Bind mount a volume (HOST:CONTAINER[:ro])
    #[arg(short = 'v', long = "volume")]
    pub volumes: Vec<String>,
    /// Attach a mount (type=bind|tmpfs,source=…,target=…[,readonly])
    #[arg(long)]
    pub mount: Vec<String>,
    /// Publish a container's port ([IP:]HOSTPORT:CONTAINERPORT[/udp], or CONTAINERPORT)
    #[arg(short = 'p', long = "publish")]
    pub publish: Vec<String>,
    /// bridge (default), host or none
    #[arg(long, alias = "net", default_value = "bridge")]
    pub network: String,
    /// Working directory inside the container
    #[arg(short = 'w', long)]
    pub workdir: Option<String>,
    /// Username or UID (name|uid[:group|gid])
    #[arg(short = 'u', long)]
    pub user: Option<String>,
    /// Override the image's ENTRYPOINT
    #[arg(long)]
    pub entrypoint: Option<String>,
    /// Memory limit (e.g. 512m, 1g)
    #[arg(short = 'm', long)]
    pub memory: Option<String>,
    /// Number of CPUs
    #[arg(long)]
    pub cpus: Option<f64>,
    /// Tune the container's pids limit
    #[arg(long)]
    pub pids_limit: Option<i64>,
    /// Mount the root filesystem read-only
    #[arg(long)]
    pub read_only: bool,
    /// Add Linux capabilities
    #[arg(long)]
    pub cap_add: Vec<String>,
    /// Drop Linux capabilities
    #[arg(long)]
    pub cap_drop: Vec<String>,
    /// Restart policy: no, on-failure[:max-retries], always, unless-stopped
    #[arg(long, default_value = "no")]
    pub restart: String,
    /// Container host name
    #[arg(short = 'h', long)]
    pub hostname: Option<String>,
    /// Give extended privileges to this container
    #[arg(long)]
    pub privileged: bool,
    /// Security options: apparmor=PROFILE|unconfined, seccomp=unconfined|PROFILE.json,
    /// no-new-privileges
    #[arg(long = "security-opt")]
    pub security_opt: Vec<String>,
    /// Signal to stop the container
    #[arg(long)]
    pub stop_signal: Option<String>,
    /// Timeout (in seconds) to stop the container
    #[arg(long)]
    pub stop_timeout: Option<i32>,
    /// Set metadata (KEY=VALUE)
    #[arg(short = 'l', long = "label")]
    pub labels: Vec<String>,
    /// Pull the image before creating: missing, always, never
    #[arg(long, default_value = "missing")]
    pub pull: String,
    /// Suppress the pull output
    #[arg(short = 'q', long)]
    pub quiet: bool,
    pub image: String,
    /// The command and its arguments
    #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
    pub command: Vec<String>,
}

/// `512m`, `1g`, `1024` (bytes), as docker parses them.
pub fn parse_bytes(s: &str) -> Result<i64> {
    let t = s.trim().to_ascii_lowercase();
    let t = t.strip_suffix('b').unwrap_or(&t);
    let (num, mult) = match t.chars().last() {
        Some('k') => (&t[..t.len() - 1], 1i64 << 10),
        Some('m') => (&t[..t.len() - 1], 1 << 20),
        Some('g') => (&t[..t.len() - 1], 1 << 30),
        Some('t') => (&t[..t.len() - 1], 1 << 40),
        _ => (t, 1),
    };
    let n: f64 = num
        .parse()
        .map_err(|_| anyhow!("invalid size: {s:?} (e.g. 512m, 1g)"))?;
    if n < 0.0 {
        bail!("invalid size: {s:?}");
    }
    Ok((n * mult as f64) as i64)
}

/// `-p` as docker reads it.
pub fn parse_publish(s: &str) -> Result<Vec<PortMapping>> {
    let bad = || anyhow!("invalid publish spec {s:?}: use [IP:]HOSTPORT:CONTAINERPORT[/udp]");
    let (spec, proto) = match s.rsplit_once('/') {
        Some((a, p)) => (a, p.to_ascii_lowercase()),
        None => (s, "tcp".to_string()),
    };
    if proto != "tcp" && proto != "udp" {
        bail!("invalid protocol {proto:?} in {s:?}: tcp or udp");
    }
    let parts: Vec<&str> = spec.rsplitn(3, ':').collect();
    let (ip, host, ctr) = match parts.as_slice() {
        [c] => ("", "", *c),
        [c, h] => ("", *h, *c),
        [c, h, ip] => (*ip, *h, *c),
        _ => return Err(bad()),
    };
    let ip = ip.trim_start_matches('[').trim_end_matches(']');
    if !ip.is_empty() && ip.parse::<std::net::IpAddr>().is_err() {
        return Err(bad());
    }
    let port = |p: &str| -> Result<u32> {
        let n: u32 = p.parse().map_err(|_| bad())?;
        if n == 0 || n > 65535 {
            return Err(bad());
        }
        Ok(n)
    };
    Ok(vec![PortMapping {
        host_ip: ip.to_string(),
        host_port: if host.is_empty() { 0 } else { port(host)? },
        container_port: port(ctr)?,
        protocol: proto,
    }])
}

/// `-v host:ctr[:ro]`.
pub fn parse_volume(s: &str) -> Result<Mount> {
    let parts: Vec<&str> = s.split(':').collect();
    let (src, dst, opts) = match parts.as_slice() {
        [src, dst] => (*src, *dst, ""),
        [src, dst, o] => (*src, *dst, *o),
        _ => bail!("invalid volume {s:?}: use /host/path:/container/path[:ro]"),
    };
    if !src.starts_with('/') {
        bail!("invalid volume {s:?}: named volumes are not supported, give an absolute host path");
    }
    let mut ro = false;
    for o in opts.split(',').filter(|o| !o.is_empty()) {
        match o {
            "ro" => ro = true,
            "rw" => ro = false,
            "z" | "Z" => {}
            _ => bail!("invalid volume option {o:?} in {s:?}"),
        }
    }
    Ok(Mount {
        r#type: "bind".into(),
        source: src.into(),
        target: dst.into(),
        readonly: ro,
        options: vec![],
    })
}

/// `--mount type=bind,source=/a,target=/b,readonly`.
pub fn parse_mount(s: &str) -> Result<Mount> {
    let mut m = Mount {
        r#type: "bind".into(),
        ..Default::default()
    };
    for kv in s.split(',') {
        let (k, v) = kv.split_once('=').unwrap_or((kv, ""));
        match k {
            "type" => m.r#type = v.into(),
            "source" | "src" => m.source = v.into(),
            "target" | "destination" | "dst" => m.target = v.into(),
            "readonly" | "ro" => m.readonly = v.is_empty() || v == "true" || v == "1",
            "tmpfs-size" => m.options.push(format!("size={v}")),
            _ => bail!("unexpected key {k:?} in --mount {s:?}"),
        }
    }
    if m.target.is_empty() {
        bail!("--mount {s:?}: target is required");
    }
    if m.r#type == "bind" && m.source.is_empty() {
        bail!("--mount {s:?}: source is required for a bind mount");
    }
    Ok(m)
}

fn parse_env(a: &CreateArgs) -> Result<Vec<String>> {
    let mut env = Vec::new();
    for f in &a.env_file {
        let text = std::fs::read_to_string(f).with_context(|| format!("read env file {f}"))?;
        for l in text.lines() {
            let l = l.trim();
            if l.is_empty() || l.starts_with('#') {
                continue;
            }
            env.push(expand_env(l));
        }
    }
    for e in &a.env {
        env.push(expand_env(e));
    }
    Ok(env.into_iter().flatten().collect())
}

/// `KEY=VALUE` as is; `KEY` from this environment (dropped if unset), as docker does.
pub(super) fn expand_env(e: &str) -> Option<String> {
    if e.contains('=') {
        Some(e.to_string())
    } else {
        std::env::var(e).ok().map(|v| format!("{e}={v}"))
    }
}

pub fn config(a: &CreateArgs) -> Result<ContainerConfig> {
    let mut ports = Vec::new();
    for p in &a.publish {
        ports.extend(parse_publish(p)?);
    }
    let mut mounts = Vec::new();
    for v in &a.volumes {
        mounts.push(parse_volume(v)?);
    }
    for m in &a.mount {
        mounts.push(parse_mount(m)?);
    }
    let restart = {
        let (name, n) = match a.restart.split_once(':') {
            Some((name, n)) => (
                name,
                n.parse::<u32>()
                    .map_err(|_| anyhow!("invalid restart policy {:?}", a.restart))?,
            ),
            None => (a.restart.as_str(), 0),
        };
        if !matches!(name, "no" | "on-failure" | "always" | "unless-stopped") {
            bail!(
                "invalid restart policy {:?}: no, on-failure[:max-retries], always or unless-stopped",
                a.restart
            );
        }
        if n > 0 && name != "on-failure" {
            bail!("maximum retry count cannot be used with restart policy {name:?}");
        }
        RestartPolicy {
            name: name.into(),
            max_retries: n,
        }
    };
    let mut labels = std::collections::HashMap::new();
    for l in &a.labels {
        let (k, v) = l.split_once('=').unwrap_or((l, ""));
        labels.insert(k.to_string(), v.to_string());
    }
    Ok(ContainerConfig {
        name: a.name.clone().unwrap_or_default(),
        image: a.image.clone(),
        cmd: a.command.clone(),
        entrypoint: a
            .entrypoint
            .as_ref()
            .map(|e| vec![e.clone()])
            .unwrap_or_default(),
        entrypoint_set: a.entrypoint.is_some(),
        env: parse_env(a)?,
        workdir: a.workdir.clone().unwrap_or_default(),
        user: a.user.clone().unwrap_or_default(),
        hostname: a.hostname.clone().unwrap_or_default(),
        tty: a.tty,
        stdin: a.interactive,
        auto_remove: a.rm,
        network: a.network.clone(),
        ports,
        mounts,
        memory: a
            .memory
            .as_deref()
            .map(parse_bytes)
            .transpose()?
            .unwrap_or(0),
        cpus: a.cpus.unwrap_or(0.0),
        pids_limit: a.pids_limit.unwrap_or(0),
        read_only: a.read_only,
        cap_add: a.cap_add.clone(),
        cap_drop: a.cap_drop.clone(),
        restart: Some(restart),
        stop_signal: a.stop_signal.clone().unwrap_or_default(),
        stop_timeout: a.stop_timeout.unwrap_or(-1),
        labels,
        privileged: a.privileged,
        security_opt: a
            .security_opt
            .iter()
            .map(|o| security_opt(o))
            .collect::<Result<_>>()?,
        ..Default::default()
    })
}

/// One `--security-opt` as berthd takes it: a seccomp profile's file is read here and its
/// content sent, as docker's client does.
fn security_opt(o: &str) -> Result<String> {
    match o.split_once(['=', ':']) {
        Some(("seccomp", path)) if path != "unconfined" => {
            let json = std::fs::read_to_string(path)
                .with_context(|| format!("opening seccomp profile ({path}) failed"))?;
            Ok(format!("seccomp={json}"))
        }
        _ => Ok(o.to_string()),
    }
}

/// Creates the container, pulling the image first when it is missing (as docker does).
pub async fn create(ch: &Channel, a: &CreateArgs) -> std::result::Result<String, RunError> {
    let cfg = config(a).map_err(RunError::Usage)?;
    let mut c = crate::client::containers(ch.clone());
    if a.pull == "always" {
        pull(ch, &a.image, a.quiet)
            .await
            .map_err(RunError::Daemon)?;
    }
    match c
        .create(CreateRequest {
            config: Some(cfg.clone()),
        })
        .await
    {
        Ok(r) => Ok(r.into_inner().id),
        Err(s) if s.code() == tonic::Code::NotFound && a.pull == "missing" => {
            eprintln!("Unable to find image '{}' locally", a.image);
            pull(ch, &a.image, a.quiet)
                .await
                .map_err(RunError::Daemon)?;
            let r = c
                .create(CreateRequest { config: Some(cfg) })
                .await
                .map_err(|s| RunError::Daemon(s.into()))?;
            Ok(r.into_inner().id)
        }
        Err(s) => Err(RunError::Daemon(s.into())),
    }
}

async fn pull(ch: &Channel, image: &str, quiet: bool) -> Result<()> {
    let mut ic = berth_api::images_client::ImagesClient::new(ch.clone());
    let stream = ic
        .pull(PullRequest {
            reference: image.to_string(),
            ..Default::default()
        })
        .await?
        .into_inner();
    let last = crate::fmt::progress(stream, true).await?;
    if !quiet {
        if let Some(img) = last.image {
            eprintln!("Pulled {}", img.name);
        }
    }
    Ok(())
}

/// Why `run` failed, for docker's exit codes: 125 the daemon or the flags, 126 the command
/// cannot be invoked, 127 the command was not found.
pub enum RunError {
    Usage(anyhow::Error),
    Daemon(anyhow::Error),
}

pub fn run_error_code(e: &anyhow::Error) -> i32 {
    let msg = match e.downcast_ref::<tonic::Status>() {
        Some(s) => s.message().to_string(),
        None => format!("{e:#}"),
    };
    if msg.contains("not found in $PATH")
        || msg.contains("no such file or directory")
        || msg.contains("No such file or directory")
        || msg.contains("executable file not found")
    {
        127
    } else if msg.contains("ermission denied") {
        126
    } else {
        125
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn publish_specs() {
        let p = &parse_publish("8080:80").unwrap()[0];
        assert_eq!(
            (p.host_port, p.container_port, p.protocol.as_str()),
            (8080, 80, "tcp")
        );
        let p = &parse_publish("127.0.0.1:53:53/udp").unwrap()[0];
        assert_eq!(
            (p.host_ip.as_str(), p.protocol.as_str()),
            ("127.0.0.1", "udp")
        );
        assert_eq!(parse_publish("80").unwrap()[0].host_port, 0);
        assert!(parse_publish("80:x").is_err());
        assert!(parse_publish("1:2/sctp").is_err());
        assert!(parse_publish("70000:80").is_err());
    }

    #[test]
    fn volumes_and_mounts() {
        let m = parse_volume("/data:/srv:ro").unwrap();
        assert!(m.readonly && m.source == "/data" && m.target == "/srv");
        assert!(parse_volume("named:/srv").is_err());
        let m = parse_mount("type=tmpfs,target=/run,tmpfs-size=1m").unwrap();
        assert_eq!(
            (m.r#type.as_str(), m.options[0].as_str()),
            ("tmpfs", "size=1m")
        );
        assert!(parse_mount("type=bind,target=/x").is_err());
    }

    #[test]
    fn sizes() {
        assert_eq!(parse_bytes("512m").unwrap(), 512 << 20);
        assert_eq!(parse_bytes("1g").unwrap(), 1 << 30);
        assert_eq!(parse_bytes("100").unwrap(), 100);
        assert!(parse_bytes("lots").is_err());
    }
}
