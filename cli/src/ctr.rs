//! Container commands: create, start, run, ps, logs, exec, stop, kill, rm, cp, stats, top,
//! pause, unpause, wait — with docker's flags, output and exit codes.

use anyhow::{anyhow, bail, Context, Result};
use berth_cri::api::containers_client::ContainersClient;
use berth_cri::api::*;
use clap::{ArgAction, Args};
use std::io::{IsTerminal, Read, Write};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::Channel;

pub type Client = ContainersClient<Channel>;

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
fn expand_env(e: &str) -> Option<String> {
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
    let mut ic = berth_cri::api::images_client::ImagesClient::new(ch.clone());
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

/// Raw terminal mode for `-it`, restored on drop.
struct RawMode(Option<nix::sys::termios::Termios>);

impl RawMode {
    fn enable() -> RawMode {
        use nix::sys::termios::*;
        let stdin = std::io::stdin();
        let Ok(orig) = tcgetattr(&stdin) else {
            return RawMode(None);
        };
        let mut raw = orig.clone();
        cfmakeraw(&mut raw);
        let _ = tcsetattr(&stdin, SetArg::TCSANOW, &raw);
        RawMode(Some(orig))
    }
}

impl Drop for RawMode {
    fn drop(&mut self) {
        if let Some(t) = &self.0 {
            let _ = nix::sys::termios::tcsetattr(
                std::io::stdin(),
                nix::sys::termios::SetArg::TCSANOW,
                t,
            );
        }
    }
}

fn term_size() -> (u32, u32) {
    // SAFETY: winsize is plain integers; all zeros is a valid value.
    let mut ws: libc::winsize = unsafe { std::mem::zeroed() };
    // SAFETY: TIOCGWINSZ fills a winsize.
    if unsafe { libc::ioctl(libc::STDOUT_FILENO, libc::TIOCGWINSZ, &mut ws) } == 0 && ws.ws_col > 0
    {
        (ws.ws_col as u32, ws.ws_row as u32)
    } else {
        (0, 0)
    }
}

/// What a stdin reader sends: data, EOF, or a new terminal size.
pub enum Input {
    Data(Vec<u8>),
    Eof,
    Resize(u32, u32),
}

/// Reads our stdin on a thread (and SIGWINCH with a tty) into a channel.
fn input(stdin: bool, tty: bool) -> mpsc::Receiver<Input> {
    let (tx, rx) = mpsc::channel(16);
    if stdin {
        let tx = tx.clone();
        std::thread::spawn(move || {
            let mut buf = [0u8; 8192];
            let mut si = std::io::stdin().lock();
            loop {
                match si.read(&mut buf) {
                    Ok(0) | Err(_) => {
                        let _ = tx.blocking_send(Input::Eof);
                        return;
                    }
                    Ok(n) => {
                        if tx.blocking_send(Input::Data(buf[..n].to_vec())).is_err() {
                            return;
                        }
                    }
                }
            }
        });
    }
    if tty {
        tokio::spawn(async move {
            let Ok(mut s) =
                tokio::signal::unix::signal(tokio::signal::unix::SignalKind::window_change())
            else {
                return;
            };
            while s.recv().await.is_some() {
                let (w, h) = term_size();
                if tx.send(Input::Resize(w, h)).await.is_err() {
                    return;
                }
            }
        });
    }
    rx
}

/// Copies output to our stdout/stderr until the exit message; returns the exit code.
async fn output(mut s: tonic::Streaming<AttachOutput>) -> Result<Option<i32>> {
    let mut so = std::io::stdout();
    let mut se = std::io::stderr();
    while let Some(m) = s.message().await? {
        if !m.stdout.is_empty() {
            so.write_all(&m.stdout)?;
            so.flush()?;
        }
        if !m.stderr.is_empty() {
            se.write_all(&m.stderr)?;
            se.flush()?;
        }
        if m.exited {
            return Ok(Some(m.exit_code));
        }
    }
    Ok(None)
}

/// Forwards SIGINT/SIGTERM to the container (docker's --sig-proxy) while attached without a tty.
fn proxy_signals(mut c: Client, id: String) {
    tokio::spawn(async move {
        use tokio::signal::unix::{signal, SignalKind};
        let (Ok(mut i), Ok(mut t)) = (
            signal(SignalKind::interrupt()),
            signal(SignalKind::terminate()),
        ) else {
            return;
        };
        loop {
            let sig = tokio::select! {
                _ = i.recv() => "SIGINT",
                _ = t.recv() => "SIGTERM",
            };
            let _ = c
                .kill(KillRequest {
                    id: id.clone(),
                    signal: sig.into(),
                })
                .await;
        }
    });
}

/// Attaches (starting the container when `start`) and returns its exit code.
pub async fn attach(ch: &Channel, id: &str, start: bool, stdin: bool, tty: bool) -> Result<i32> {
    let mut c = crate::client::containers(ch.clone());
    let tty = tty && std::io::stdin().is_terminal();
    let (w, h) = if tty { term_size() } else { (0, 0) };
    let (tx, rx) = mpsc::channel(16);
    tx.send(AttachInput {
        id: id.to_string(),
        start,
        width: w,
        height: h,
        ..Default::default()
    })
    .await?;
    let out = c.attach(ReceiverStream::new(rx)).await?.into_inner();
    let _raw = (tty && stdin).then(RawMode::enable);
    let inp = input(stdin, tty);
    forward_input(inp, tx, |i| match i {
        Input::Data(d) => AttachInput {
            stdin: d,
            ..Default::default()
        },
        Input::Eof => AttachInput {
            close_stdin: true,
            ..Default::default()
        },
        Input::Resize(w, h) => AttachInput {
            width: w,
            height: h,
            ..Default::default()
        },
    });
    if !tty {
        proxy_signals(c.clone(), id.to_string());
    }
    match output(out).await? {
        Some(code) => Ok(code),
        None => Ok(c
            .wait(ContainerRef { id: id.to_string() })
            .await?
            .into_inner()
            .exit_code),
    }
}

/// `berth exec`.
#[derive(Args, Debug)]
pub struct ExecArgs {
    /// Detached mode: run the command in the background
    #[arg(short = 'd', long)]
    pub detach: bool,
    /// Keep STDIN open
    #[arg(short = 'i', long)]
    pub interactive: bool,
    /// Allocate a pseudo-TTY
    #[arg(short = 't', long)]
    pub tty: bool,
    /// Set environment variables
    #[arg(short = 'e', long = "env")]
    pub env: Vec<String>,
    /// Username or UID
    #[arg(short = 'u', long)]
    pub user: Option<String>,
    /// Working directory inside the container
    #[arg(short = 'w', long)]
    pub workdir: Option<String>,
    /// Give extended privileges to the command
    #[arg(long)]
    pub privileged: bool,
    pub container: String,
    #[arg(trailing_var_arg = true, allow_hyphen_values = true, required = true)]
    pub command: Vec<String>,
}

pub async fn exec(ch: &Channel, a: ExecArgs) -> Result<i32> {
    let mut c = crate::client::containers(ch.clone());
    let tty = a.tty && std::io::stdin().is_terminal();
    let (w, h) = if tty { term_size() } else { (0, 0) };
    let (tx, rx) = mpsc::channel(16);
    tx.send(ExecInput {
        id: a.container.clone(),
        cmd: a.command.clone(),
        env: a.env.iter().filter_map(|e| expand_env(e)).collect(),
        user: a.user.clone().unwrap_or_default(),
        workdir: a.workdir.clone().unwrap_or_default(),
        tty: a.tty,
        stdin: a.interactive,
        detach: a.detach,
        width: w,
        height: h,
        privileged: a.privileged,
        ..Default::default()
    })
    .await?;
    let out = c.exec(ReceiverStream::new(rx)).await?.into_inner();
    if a.detach {
        output(out).await?;
        return Ok(0);
    }
    let _raw = (tty && a.interactive).then(RawMode::enable);
    let inp = input(a.interactive, tty);
    forward_input(inp, tx, |i| match i {
        Input::Data(d) => ExecInput {
            data: d,
            ..Default::default()
        },
        Input::Eof => ExecInput {
            close_stdin: true,
            ..Default::default()
        },
        Input::Resize(w, h) => ExecInput {
            width: w,
            height: h,
            ..Default::default()
        },
    });
    Ok(output(out).await?.unwrap_or(126))
}

/// `inspect --format`: docker's template subset — `{{.A.B}}` (a string as is, other values as
/// JSON, a missing field as `<no value>`), `{{json .A.B}}` and `{{json .}}`; other text is
/// copied. Anything else inside `{{ }}` is an error naming it.
pub fn render_template(tpl: &str, doc: &serde_json::Value) -> anyhow::Result<String> {
    let mut out = String::new();
    let mut rest = tpl;
    while let Some(i) = rest.find("{{") {
        out.push_str(&rest[..i]);
        let after = &rest[i + 2..];
        let j = after
            .find("}}")
            .ok_or_else(|| anyhow::anyhow!("template: unclosed {{{{ in {tpl:?}"))?;
        let action = after[..j].trim();
        let (json, path) = match action.strip_prefix("json ") {
            Some(p) => (true, p.trim()),
            None => (false, action),
        };
        if !path.starts_with('.') {
            anyhow::bail!("template: unsupported action {{{{{action}}}}}");
        }
        let mut v = Some(doc);
        for key in path[1..].split('.').filter(|k| !k.is_empty()) {
            v = v.and_then(|x| x.get(key));
        }
        match (v, json) {
            (None, true) => out.push_str("null"),
            (None, false) => out.push_str("<no value>"),
            (Some(v), true) => out.push_str(&v.to_string()),
            (Some(serde_json::Value::String(s)), false) => out.push_str(s),
            (Some(v), false) => out.push_str(&v.to_string()),
        }
        rest = &after[j + 2..];
    }
    out.push_str(rest);
    Ok(out.replace("\\t", "\t").replace("\\n", "\n"))
}

/// `ps --format` with Go-template-like `{{.Field}}` placeholders, `table` and `json`.
pub fn ps(
    out: &mut impl Write,
    list: &[ContainerSummary],
    quiet: bool,
    no_trunc: bool,
    format: &str,
) -> Result<()> {
    let id = |c: &ContainerSummary| {
        if no_trunc {
            c.id.clone()
        } else {
            c.id.chars().take(12).collect()
        }
    };
    let ports = |c: &ContainerSummary| {
        c.ports
            .iter()
            .map(|p| {
                if p.host_port == 0 {
                    format!("{}/{}", p.container_port, p.protocol)
                } else {
                    format!(
                        "{}:{}->{}/{}",
                        if p.host_ip.is_empty() {
                            "0.0.0.0"
                        } else {
                            &p.host_ip
                        },
                        p.host_port,
                        p.container_port,
                        p.protocol
                    )
                }
            })
            .collect::<Vec<_>>()
            .join(", ")
    };
    let created = |c: &ContainerSummary| {
        crate::fmt::ago(&berth_cri::containers_util::rfc3339_nanos(
            c.created_unix * 1_000_000_000,
        ))
    };
    let command = |c: &ContainerSummary| {
        let s = if no_trunc || c.command.chars().count() <= 20 {
            c.command.clone()
        } else {
            format!("{}…", c.command.chars().take(19).collect::<String>())
        };
        format!("\"{s}\"")
    };
    if quiet {
        for c in list {
            writeln!(out, "{}", id(c))?;
        }
        return Ok(());
    }
    match format {
        "" | "table" => {
            let mut rows = vec![vec![
                "CONTAINER ID".to_string(),
                "IMAGE".into(),
                "COMMAND".into(),
                "CREATED".into(),
                "STATUS".into(),
                "PORTS".into(),
                "NAMES".into(),
            ]];
            for c in list {
                rows.push(vec![
                    id(c),
                    crate::fmt::short_name(&c.image).to_string(),
                    command(c),
                    created(c),
                    c.status.clone(),
                    ports(c),
                    c.name.clone(),
                ]);
            }
            crate::fmt::table(out, &rows)?;
        }
        "json" | "{{json .}}" => {
            for c in list {
                let v = serde_json::json!({
                    "ID": id(c), "Image": c.image, "Command": command(c),
                    "CreatedAt": berth_cri::containers_util::rfc3339_nanos(c.created_unix * 1_000_000_000),
                    "RunningFor": created(c), "Ports": ports(c), "State": c.state,
                    "Status": c.status, "Names": c.name, "Labels": c.labels,
                });
                writeln!(out, "{v}")?;
            }
        }
        t => {
            let t = t.strip_prefix("table ").unwrap_or(t);
            for c in list {
                let line = t
                    .replace("\\t", "\t")
                    .replace("{{.ID}}", &id(c))
                    .replace("{{.Names}}", &c.name)
                    .replace("{{.Image}}", &c.image)
                    .replace("{{.Command}}", &command(c))
                    .replace("{{.Status}}", &c.status)
                    .replace("{{.State}}", &c.state)
                    .replace("{{.Ports}}", &ports(c))
                    .replace("{{.RunningFor}}", &created(c))
                    .replace(
                        "{{.CreatedAt}}",
                        &berth_cri::containers_util::rfc3339_nanos(c.created_unix * 1_000_000_000),
                    );
                writeln!(out, "{line}")?;
            }
        }
    }
    Ok(())
}

/// `--since`: RFC 3339, a unix timestamp, or a duration ago (`10m`, `1h30m`, `45s`).
pub fn parse_since(s: &str) -> Result<i64> {
    if let Some(t) = berth_cri::containers_util::parse_rfc3339(s) {
        return Ok(t);
    }
    if let Ok(secs) = s.parse::<f64>() {
        return Ok((secs * 1e9) as i64);
    }
    let mut total = 0f64;
    let mut num = String::new();
    for ch in s.chars() {
        if ch.is_ascii_digit() || ch == '.' {
            num.push(ch);
            continue;
        }
        let n: f64 = num.parse().map_err(|_| anyhow!("invalid --since {s:?}"))?;
        num.clear();
        total += n * match ch {
            's' => 1.0,
            'm' => 60.0,
            'h' => 3600.0,
            'd' => 86400.0,
            _ => bail!("invalid --since {s:?}: use RFC 3339, a unix time or a duration like 10m"),
        };
    }
    if !num.is_empty() {
        bail!("invalid --since {s:?}: a duration needs a unit (s, m, h)");
    }
    Ok(berth_cri::containers::now_nanos() - (total * 1e9) as i64)
}

pub async fn logs(
    c: &mut Client,
    id: String,
    follow: bool,
    tail: &str,
    since: Option<&str>,
    timestamps: bool,
) -> Result<()> {
    let tail = if tail == "all" {
        -1
    } else {
        tail.parse::<i64>()
            .map_err(|_| anyhow!("invalid --tail {tail:?}: a number or \"all\""))?
    };
    let since = since.map(parse_since).transpose()?.unwrap_or(0);
    let mut s = c
        .logs(LogsRequest {
            id,
            follow,
            tail,
            since_unix_nano: since,
            timestamps,
        })
        .await?
        .into_inner();
    let mut so = std::io::stdout();
    let mut se = std::io::stderr();
    while let Some(l) = s.message().await? {
        let w: &mut dyn Write = if l.stream == "stderr" {
            &mut se
        } else {
            &mut so
        };
        if timestamps {
            w.write_all(l.timestamp.as_bytes())?;
            w.write_all(b" ")?;
        }
        w.write_all(&l.data)?;
        w.flush()?;
    }
    Ok(())
}

/// One `stats` table for the containers, from two samples `gap` apart.
pub async fn stats(c: &mut Client, ids: &[String], stream: bool, format: &str) -> Result<()> {
    let mut prev: std::collections::HashMap<String, StatsSample> = Default::default();
    loop {
        let mut rows = vec![vec![
            "CONTAINER ID".to_string(),
            "NAME".into(),
            "CPU %".into(),
            "MEM USAGE / LIMIT".into(),
            "MEM %".into(),
            "NET I/O".into(),
            "BLOCK I/O".into(),
            "PIDS".into(),
        ]];
        let targets: Vec<String> = if ids.is_empty() {
            c.list(ListContainersRequest { all: false })
                .await?
                .into_inner()
                .containers
                .into_iter()
                .map(|s| s.id)
                .collect()
        } else {
            ids.to_vec()
        };
        let mut samples = Vec::new();
        for id in &targets {
            let s = c.stats(ContainerRef { id: id.clone() }).await?.into_inner();
            samples.push(s);
        }
        if prev.is_empty() && !samples.is_empty() {
            for s in &samples {
                prev.insert(s.id.clone(), s.clone());
            }
            tokio::time::sleep(std::time::Duration::from_millis(500)).await;
            continue;
        }
        let mut json = Vec::new();
        for s in &samples {
            let cpu = match prev.get(&s.id) {
                Some(p) if s.system_ns > p.system_ns => {
                    (s.cpu_total_ns.saturating_sub(p.cpu_total_ns)) as f64
                        / (s.system_ns - p.system_ns) as f64
                        * s.online_cpus as f64
                        * 100.0
                }
                _ => 0.0,
            };
            let memp = if s.memory_limit > 0 {
                s.memory_usage as f64 / s.memory_limit as f64 * 100.0
            } else {
                0.0
            };
            let hs = crate::fmt::human_size;
            let row = vec![
                s.id.chars().take(12).collect(),
                s.name.clone(),
                format!("{cpu:.2}%"),
                format!("{} / {}", hs(s.memory_usage), hs(s.memory_limit)),
                format!("{memp:.2}%"),
                format!("{} / {}", hs(s.net_rx), hs(s.net_tx)),
                format!("{} / {}", hs(s.blk_read), hs(s.blk_write)),
                s.pids.to_string(),
            ];
            json.push(serde_json::json!({
                "ID": row[0], "Name": row[1], "CPUPerc": row[2], "MemUsage": row[3],
                "MemPerc": row[4], "NetIO": row[5], "BlockIO": row[6], "PIDs": row[7],
            }));
            rows.push(row);
            prev.insert(s.id.clone(), s.clone());
        }
        let mut out = std::io::stdout().lock();
        if stream {
            write!(out, "\x1b[2J\x1b[H")?;
        }
        if format == "json" || format == "{{json .}}" {
            for j in json {
                writeln!(out, "{j}")?;
            }
        } else {
            crate::fmt::table(&mut out, &rows)?;
        }
        out.flush()?;
        if !stream {
            return Ok(());
        }
        tokio::time::sleep(std::time::Duration::from_secs(1)).await;
    }
}

/// `berth cp`: one side is `CONTAINER:PATH`.
pub async fn cp(c: &mut Client, src: &str, dst: &str) -> Result<()> {
    let split = |s: &str| -> Option<(String, String)> {
        if s.starts_with('/') || s.starts_with('.') {
            return None;
        }
        let (c, p) = s.split_once(':')?;
        Some((c.to_string(), p.to_string()))
    };
    match (split(src), split(dst)) {
        (Some((ctr, path)), None) => {
            let mut s = c
                .copy_from(CopyFromRequest { id: ctr, path })
                .await?
                .into_inner();
            let dest = std::path::Path::new(dst);
            let (dir, rename) = if dest.is_dir() {
                (dest.to_path_buf(), None)
            } else {
                let parent = dest
                    .parent()
                    .filter(|p| !p.as_os_str().is_empty())
                    .unwrap_or(std::path::Path::new("."));
                if !parent.is_dir() {
                    bail!("destination directory {} does not exist", parent.display());
                }
                let tmp = parent.join(format!(".berth-cp-{}", std::process::id()));
                std::fs::create_dir(&tmp)?;
                (tmp, Some(dest.to_path_buf()))
            };
            let (tx, rx) = std::sync::mpsc::sync_channel::<Vec<u8>>(16);
            let d2 = dir.clone();
            let job = std::thread::spawn(move || -> Result<Vec<std::path::PathBuf>> {
                let r = berth_cri::containers_util::ChanReader::new(rx);
                let mut a = tar::Archive::new(r);
                a.set_preserve_permissions(true);
                let mut tops = Vec::new();
                for e in a.entries()? {
                    let mut e = e?;
                    let p = e.path()?.into_owned();
                    if let Some(std::path::Component::Normal(t)) = p.components().next() {
                        let t = std::path::PathBuf::from(t);
                        if !tops.contains(&t) {
                            tops.push(t);
                        }
                    }
                    e.unpack_in(&d2)?;
                }
                Ok(tops)
            });
            let mut err = None;
            loop {
                match s.message().await {
                    Ok(Some(ch)) => {
                        if tx.send(ch.data).is_err() {
                            break;
                        }
                    }
                    Ok(None) => break,
                    Err(e) => {
                        err = Some(e);
                        break;
                    }
                }
            }
            drop(tx);
            let tops = job.join().map_err(|_| anyhow!("copy failed"))?;
            let res = match (err, tops) {
                (Some(e), _) => Err(e.into()),
                (None, Err(e)) => Err(e),
                (None, Ok(tops)) => match &rename {
                    Some(dest) => {
                        if tops.len() != 1 {
                            Err(anyhow!("unexpected archive from berthd"))
                        } else {
                            std::fs::rename(dir.join(&tops[0]), dest)
                                .with_context(|| format!("copy to {}", dest.display()))
                        }
                    }
                    None => Ok(()),
                },
            };
            if rename.is_some() {
                let _ = std::fs::remove_dir_all(&dir);
            }
            res
        }
        (None, Some((ctr, path))) => {
            let srcp = std::path::Path::new(src);
            let md = std::fs::symlink_metadata(srcp)
                .with_context(|| format!("no such file or directory: {src}"))?;
            let name = srcp
                .file_name()
                .map(|n| n.to_owned())
                .unwrap_or_else(|| ".".into());
            let (tx, rx) = mpsc::channel(16);
            tx.send(CopyToInput {
                id: ctr,
                path,
                data: vec![],
            })
            .await?;
            let src_owned = srcp.to_path_buf();
            let txb = tx.clone();
            let job = std::thread::spawn(move || -> Result<()> {
                let w = std::io::BufWriter::with_capacity(64 << 10, ChanWrite(txb));
                let mut b = tar::Builder::new(w);
                b.follow_symlinks(false);
                if md.is_dir() {
                    b.append_dir_all(&name, &src_owned)?;
                } else {
                    b.append_path_with_name(&src_owned, &name)?;
                }
                b.into_inner()?.flush()?;
                Ok(())
            });
            drop(tx);
            let res = c.copy_to(ReceiverStream::new(rx)).await;
            job.join().map_err(|_| anyhow!("copy failed"))??;
            res?;
            Ok(())
        }
        (Some(_), Some(_)) => bail!("copying between containers is not supported"),
        (None, None) => bail!("one of SRC and DEST must be CONTAINER:PATH"),
    }
}

/// Sends the terminal's input (as `msg` makes it into a request) to berthd, then keeps the
/// request stream open until the output ends.
fn forward_input<T: Send + 'static>(
    mut inp: mpsc::Receiver<Input>,
    tx: mpsc::Sender<T>,
    msg: impl Fn(Input) -> T + Send + 'static,
) {
    tokio::spawn(async move {
        while let Some(i) = inp.recv().await {
            if tx.send(msg(i)).await.is_err() {
                return;
            }
        }
        tx.closed().await;
    });
}

struct ChanWrite(mpsc::Sender<CopyToInput>);

impl Write for ChanWrite {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        self.0
            .blocking_send(CopyToInput {
                data: b.to_vec(),
                ..Default::default()
            })
            .map_err(|_| std::io::Error::new(std::io::ErrorKind::BrokenPipe, "berthd went away"))?;
        Ok(b.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {

    #[test]
    fn inspect_templates() {
        let d = serde_json::json!({"State": {"Status": "running", "Pid": 7},
            "Config": {"Env": ["A=1"]}, "Name": "/web"});
        assert_eq!(
            render_template("{{.Name}} {{.State.Status}} {{.State.Pid}}", &d).unwrap(),
            "/web running 7"
        );
        assert_eq!(
            render_template("{{json .Config.Env}}", &d).unwrap(),
            r#"["A=1"]"#
        );
        assert_eq!(render_template("{{.Nope.X}}", &d).unwrap(), "<no value>");
        assert_eq!(render_template("a\\tb", &d).unwrap(), "a\tb");
        assert!(render_template("{{range .X}}", &d)
            .unwrap_err()
            .to_string()
            .contains("unsupported action {{range .X}}"));
        assert!(render_template("{{.A", &d).is_err());
    }
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
    fn sizes_and_since() {
        assert_eq!(parse_bytes("512m").unwrap(), 512 << 20);
        assert_eq!(parse_bytes("1g").unwrap(), 1 << 30);
        assert_eq!(parse_bytes("100").unwrap(), 100);
        assert!(parse_bytes("lots").is_err());
        let t = parse_since("10m").unwrap();
        let now = berth_cri::containers::now_nanos();
        assert!((now - t - 600_000_000_000).abs() < 5_000_000_000);
        assert!(parse_since("10x").is_err());
    }
}
