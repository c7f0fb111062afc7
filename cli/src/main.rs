//! `berth`: the command people type. Talks to berthd over its unix socket.

mod client;
mod ctr;
mod fmt;

use anyhow::{bail, Context, Result};
use berth_api::*;
use clap::{Parser, Subcommand};
use std::io::{Read, Write};

#[derive(Parser)]
#[command(
    name = "berth",
    version,
    about = "Pull and run containers (with berthd)"
)]
struct Cli {
    /// berthd's socket
    #[arg(
        short = 'H',
        long,
        global = true,
        env = "BERTH_HOST",
        default_value = "unix:///run/berth/berthd.sock"
    )]
    host: String,
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Download an image from a registry
    Pull {
        reference: String,
        /// os/arch[/variant] to pick from a multi-platform image
        #[arg(long)]
        platform: Option<String>,
        /// Talk plain HTTP to the registry
        #[arg(long)]
        plain_http: bool,
        /// HTTPS without certificate verification
        #[arg(long)]
        insecure: bool,
        /// Print only the image name
        #[arg(short, long)]
        quiet: bool,
    },
    /// Upload an image to a registry
    Push {
        name: String,
        /// Push under another name (registry/repo:tag)
        destination: Option<String>,
        #[arg(long)]
        plain_http: bool,
        #[arg(long)]
        insecure: bool,
        #[arg(short, long)]
        quiet: bool,
    },
    /// List images
    Images {
        /// Only this repository (all its tags), or one REPOSITORY:TAG
        repository: Option<String>,
        /// Only image IDs
        #[arg(short, long)]
        quiet: bool,
        /// Show digests
        #[arg(long)]
        digests: bool,
        /// Do not truncate IDs
        #[arg(long)]
        no_trunc: bool,
        /// table (default) or json
        #[arg(long, default_value = "table")]
        format: String,
    },
    /// Remove images
    Rmi {
        #[arg(required = true)]
        names: Vec<String>,
        /// Remove even if a bundle uses it
        #[arg(short, long)]
        force: bool,
    },
    /// Give an image another name
    Tag { source: String, target: String },
    /// Low-level information on containers or images (JSON)
    Inspect {
        #[arg(required = true)]
        names: Vec<String>,
        /// container or image (default: a container if one has the name, else an image)
        #[arg(long = "type")]
        kind: Option<String>,
        /// A template applied to each object: '{{.State.Status}}', '{{json .Config.Env}}'
        #[arg(short, long)]
        format: Option<String>,
    },
    /// The history of an image
    History {
        name: String,
        #[arg(long)]
        no_trunc: bool,
        /// Only image IDs
        #[arg(short, long)]
        quiet: bool,
    },
    /// Log in to a registry
    Login {
        server: String,
        #[arg(short, long)]
        username: Option<String>,
        #[arg(short, long)]
        password: Option<String>,
        /// Read the password from stdin
        #[arg(long)]
        password_stdin: bool,
        #[arg(long)]
        plain_http: bool,
        #[arg(long)]
        insecure: bool,
    },
    /// Log out from a registry
    Logout { server: String },
    /// Save images to an archive (docker-archive by default)
    #[command(alias = "export")]
    Save {
        #[arg(required = true)]
        names: Vec<String>,
        /// Output file (or directory for oci-dir)
        #[arg(short, long)]
        output: String,
        /// docker-archive, oci-archive or oci-dir
        #[arg(long, default_value = "docker-archive")]
        format: String,
    },
    /// Load images from an archive or OCI layout directory
    #[command(alias = "import")]
    Load {
        /// Archive file or OCI layout directory
        #[arg(short, long)]
        input: String,
        /// Name for images the archive does not name
        #[arg(long)]
        name: Option<String>,
    },
    /// Remove blobs and snapshots no image uses
    Gc,
    /// Make an OCI runtime bundle of an image in DIR (rootfs mounted, config.json written),
    /// to run with berth-runtime; with --rm, unmount and remove it
    Bundle {
        /// IMAGE DIR, or DIR with --rm
        #[arg(required = true, num_args = 1..=2)]
        args: Vec<String>,
        #[arg(long)]
        rm: bool,
    },
    /// Create a new container
    #[command(disable_help_flag = true)]
    Create {
        #[command(flatten)]
        args: ctr::CreateArgs,
    },
    /// Create and run a new container from an image
    #[command(disable_help_flag = true)]
    Run {
        /// Run the container in the background and print its ID
        #[arg(short = 'd', long)]
        detach: bool,
        #[command(flatten)]
        args: ctr::CreateArgs,
    },
    /// Start one or more stopped containers
    Start {
        /// Attach STDOUT/STDERR and forward signals
        #[arg(short = 'a', long)]
        attach: bool,
        /// Attach the container's STDIN
        #[arg(short = 'i', long)]
        interactive: bool,
        #[arg(required = true)]
        containers: Vec<String>,
    },
    /// List containers
    Ps {
        /// Show all containers (default shows just running)
        #[arg(short, long)]
        all: bool,
        /// Only display container IDs
        #[arg(short, long)]
        quiet: bool,
        /// Don't truncate output
        #[arg(long)]
        no_trunc: bool,
        /// table (default), json, or a template such as '{{.ID}}\t{{.Names}}'
        #[arg(long, default_value = "table")]
        format: String,
    },
    /// Fetch the logs of a container
    Logs {
        /// Follow log output
        #[arg(short, long)]
        follow: bool,
        /// Number of lines to show from the end of the logs, or "all"
        #[arg(short = 'n', long, default_value = "all")]
        tail: String,
        /// Show logs since a timestamp (RFC 3339) or relative (e.g. 42m)
        #[arg(long)]
        since: Option<String>,
        /// Show timestamps
        #[arg(short, long)]
        timestamps: bool,
        container: String,
    },
    /// Execute a command in a running container
    Exec(ctr::ExecArgs),
    /// Stop one or more running containers
    Stop {
        /// Seconds to wait before killing the container
        #[arg(short = 't', long = "time", alias = "timeout")]
        time: Option<i32>,
        /// Signal to send (default: the image's StopSignal, else SIGTERM)
        #[arg(short, long)]
        signal: Option<String>,
        #[arg(required = true)]
        containers: Vec<String>,
    },
    /// Kill one or more running containers
    Kill {
        /// Signal to send
        #[arg(short, long, default_value = "KILL")]
        signal: String,
        #[arg(required = true)]
        containers: Vec<String>,
    },
    /// Remove one or more containers
    Rm {
        /// Force the removal of a running container (uses SIGKILL)
        #[arg(short, long)]
        force: bool,
        #[arg(required = true)]
        containers: Vec<String>,
    },
    /// Copy files/folders between a container and the local filesystem
    Cp {
        /// CONTAINER:SRC_PATH or a local path
        src: String,
        /// CONTAINER:DEST_PATH or a local path
        dest: String,
    },
    /// Display a live stream of container resource usage statistics
    Stats {
        /// Disable streaming stats and only pull the first result
        #[arg(long)]
        no_stream: bool,
        /// table (default) or json
        #[arg(long, default_value = "table")]
        format: String,
        containers: Vec<String>,
    },
    /// Display the running processes of a container
    Top { container: String },
    /// Pause all processes within one or more containers
    Pause {
        #[arg(required = true)]
        containers: Vec<String>,
    },
    /// Unpause all processes within one or more containers
    Unpause {
        #[arg(required = true)]
        containers: Vec<String>,
    },
    /// Block until one or more containers stop, then print their exit codes
    Wait {
        #[arg(required = true)]
        containers: Vec<String>,
    },
    /// Client and daemon versions
    Version,
    /// Daemon information
    Info,
}

fn main() {
    let cli = Cli::parse();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    let code = match rt.block_on(run(cli)) {
        Ok(c) => c,
        Err(e) => {
            let msg = match e.downcast_ref::<tonic::Status>() {
                Some(s) => s.message().to_string(),
                None => format!("{e:#}"),
            };
            eprintln!("berth: {}", msg.replace('\n', " "));
            1
        }
    };
    std::process::exit(code);
}

fn print_err(e: &anyhow::Error) {
    let msg = match e.downcast_ref::<tonic::Status>() {
        Some(s) => s.message().to_string(),
        None => format!("{e:#}"),
    };
    eprintln!("berth: {}", msg.replace('\n', " "));
}

/// `run`/`create` errors: print them and exit with docker's code (125, 126, 127).
fn run_step<T>(r: std::result::Result<T, ctr::RunError>) -> Result<T> {
    match r {
        Ok(v) => Ok(v),
        Err(ctr::RunError::Usage(e)) => {
            print_err(&e);
            std::process::exit(125)
        }
        Err(ctr::RunError::Daemon(e)) => {
            let code = ctr::run_error_code(&e);
            print_err(&e);
            std::process::exit(code)
        }
    }
}

/// docker's way with a verb on several containers: each one done is named on stdout, each
/// failure is one line on stderr (and the exit code is 1), and the others still go on.
fn report<T>(
    out: &mut impl Write,
    id: &str,
    r: std::result::Result<T, tonic::Status>,
    failed: &mut bool,
) -> std::io::Result<()> {
    match r {
        Ok(_) => writeln!(out, "{id}"),
        Err(s) => {
            eprintln!("berth: {}", s.message());
            *failed = true;
            Ok(())
        }
    }
}

fn abs(p: &str) -> Result<String> {
    let p = std::path::Path::new(p);
    Ok(if p.is_absolute() {
        p.display().to_string()
    } else {
        std::env::current_dir()?.join(p).display().to_string()
    })
}

async fn run(cli: Cli) -> Result<i32> {
    let ch = client::channel(&cli.host).await?;
    let mut c =
        berth_api::images_client::ImagesClient::new(ch.clone()).max_decoding_message_size(64 << 20);
    let mut cc = client::containers(ch.clone());
    let mut out = std::io::stdout().lock();
    match cli.cmd {
        Cmd::Create { args } => {
            let id = run_step(ctr::create(&ch, &args).await)?;
            writeln!(out, "{id}")?;
        }
        Cmd::Run { detach, args } => {
            let id = run_step(ctr::create(&ch, &args).await)?;
            if detach {
                if let Err(e) = cc.start(ContainerRef { id: id.clone() }).await {
                    let e: anyhow::Error = e.into();
                    let code = ctr::run_error_code(&e);
                    print_err(&e);
                    return Ok(code);
                }
                writeln!(out, "{id}")?;
                return Ok(0);
            }
            drop(out);
            return match ctr::attach(&ch, &id, true, args.interactive, args.tty).await {
                Ok(code) => Ok(code),
                Err(e) => {
                    let code = ctr::run_error_code(&e);
                    print_err(&e);
                    Ok(code)
                }
            };
        }
        Cmd::Start {
            attach,
            interactive,
            containers,
        } => {
            if attach || interactive {
                if containers.len() != 1 {
                    bail!("you cannot start and attach multiple containers at once");
                }
                let r = cc
                    .inspect_container(ContainerRef {
                        id: containers[0].clone(),
                    })
                    .await?
                    .into_inner();
                let v: serde_json::Value = serde_json::from_str(&r.json)?;
                let tty = v["Config"]["tty"].as_bool().unwrap_or(false);
                drop(out);
                return ctr::attach(&ch, &containers[0], true, interactive, tty).await;
            }
            let mut failed = false;
            for id in containers {
                let r = cc.start(ContainerRef { id: id.clone() }).await;
                report(&mut out, &id, r, &mut failed)?;
            }
            return Ok(failed as i32);
        }
        Cmd::Ps {
            all,
            quiet,
            no_trunc,
            format,
        } => {
            let list = cc
                .list(ListContainersRequest { all })
                .await?
                .into_inner()
                .containers;
            ctr::ps(&mut out, &list, quiet, no_trunc, &format)?;
        }
        Cmd::Logs {
            follow,
            tail,
            since,
            timestamps,
            container,
        } => {
            drop(out);
            ctr::logs(
                &mut cc,
                container,
                follow,
                &tail,
                since.as_deref(),
                timestamps,
            )
            .await?;
            return Ok(0);
        }
        Cmd::Exec(a) => {
            drop(out);
            return ctr::exec(&ch, a).await.or_else(|e| {
                let code = ctr::run_error_code(&e).max(126);
                print_err(&e);
                Ok(code)
            });
        }
        Cmd::Stop {
            time,
            signal,
            containers,
        } => {
            let mut failed = false;
            for id in containers {
                let r = cc
                    .stop(StopRequest {
                        id: id.clone(),
                        timeout: time.unwrap_or(0),
                        timeout_set: time.is_some(),
                        signal: signal.clone().unwrap_or_default(),
                    })
                    .await;
                report(&mut out, &id, r, &mut failed)?;
            }
            return Ok(failed as i32);
        }
        Cmd::Kill { signal, containers } => {
            let mut failed = false;
            for id in containers {
                let r = cc
                    .kill(KillRequest {
                        id: id.clone(),
                        signal: signal.clone(),
                    })
                    .await;
                report(&mut out, &id, r, &mut failed)?;
            }
            return Ok(failed as i32);
        }
        Cmd::Rm { force, containers } => {
            let mut failed = false;
            for id in containers {
                let r = cc
                    .remove(RemoveContainerRequest {
                        id: id.clone(),
                        force,
                    })
                    .await;
                report(&mut out, &id, r, &mut failed)?;
            }
            return Ok(failed as i32);
        }
        Cmd::Cp { src, dest } => {
            ctr::cp(&mut cc, &src, &dest).await?;
        }
        Cmd::Stats {
            no_stream,
            format,
            containers,
        } => {
            drop(out);
            ctr::stats(&mut cc, &containers, !no_stream, &format).await?;
            return Ok(0);
        }
        Cmd::Top { container } => {
            let r = cc.top(ContainerRef { id: container }).await?.into_inner();
            let mut rows = vec![r.titles];
            rows.extend(r.rows.into_iter().map(|r| r.fields));
            fmt::table(&mut out, &rows)?;
        }
        Cmd::Pause { containers } => {
            for id in containers {
                cc.pause(ContainerRef { id: id.clone() }).await?;
                writeln!(out, "{id}")?;
            }
        }
        Cmd::Unpause { containers } => {
            for id in containers {
                cc.unpause(ContainerRef { id: id.clone() }).await?;
                writeln!(out, "{id}")?;
            }
        }
        Cmd::Wait { containers } => {
            for id in containers {
                let r = cc.wait(ContainerRef { id }).await?.into_inner();
                writeln!(out, "{}", r.exit_code)?;
            }
        }
        Cmd::Pull {
            reference,
            platform,
            plain_http,
            insecure,
            quiet,
        } => {
            let stream = c
                .pull(PullRequest {
                    reference,
                    platform: platform.unwrap_or_default(),
                    plain_http,
                    insecure,
                })
                .await?
                .into_inner();
            let last = fmt::progress(stream, quiet).await?;
            let img = last.image.context("berthd sent no result")?;
            if quiet {
                writeln!(out, "{}", img.name)?;
            } else {
                writeln!(
                    out,
                    "Digest: {}",
                    if img.index_digest.is_empty() {
                        &img.digest
                    } else {
                        &img.index_digest
                    }
                )?;
                if last.phase == "downloaded" {
                    writeln!(out, "Status: Downloaded newer image for {}", img.name)?;
                } else {
                    writeln!(out, "Status: Image is up to date for {}", img.name)?;
                }
                writeln!(out, "{}", img.name)?;
            }
        }
        Cmd::Push {
            name,
            destination,
            plain_http,
            insecure,
            quiet,
        } => {
            let stream = c
                .push(PushRequest {
                    name,
                    destination: destination.unwrap_or_default(),
                    plain_http,
                    insecure,
                })
                .await?
                .into_inner();
            let last = fmt::progress(stream, quiet).await?;
            writeln!(out, "{}", last.pushed)?;
        }
        Cmd::Images {
            repository,
            quiet,
            digests,
            no_trunc,
            format,
        } => {
            let mut images = c.list(ListRequest {}).await?.into_inner().images;
            if let Some(want) = repository {
                images.retain(|i| fmt::repository_matches(&want, &i.name));
            }
            images.sort_by(|a, b| a.name.cmp(&b.name));
            fmt::images(&mut out, &images, quiet, digests, no_trunc, &format)?;
        }
        Cmd::Rmi { names, force } => {
            let mut failed = false;
            for name in names {
                match c.remove(RemoveRequest { name, force }).await {
                    Ok(r) => {
                        let r = r.into_inner();
                        if r.untagged.is_empty() {
                            writeln!(out, "Untagged: {}", fmt::short_name(&r.name))?;
                        }
                        for name in &r.untagged {
                            writeln!(out, "Untagged: {}", fmt::short_name(name))?;
                        }
                    }
                    Err(s) => {
                        eprintln!("berth: {}", s.message());
                        failed = true;
                    }
                }
            }
            return Ok(failed as i32);
        }
        Cmd::Tag { source, target } => {
            c.tag(TagRequest { source, target }).await?;
        }
        Cmd::Inspect {
            names,
            kind,
            format,
        } => {
            let mut docs = Vec::new();
            let mut failed = false;
            for name in names {
                if kind.as_deref() != Some("image") {
                    match cc
                        .inspect_container(ContainerRef { id: name.clone() })
                        .await
                    {
                        Ok(r) => {
                            docs.push(serde_json::from_str::<serde_json::Value>(
                                &r.into_inner().json,
                            )?);
                            continue;
                        }
                        Err(s) if kind.as_deref() == Some("container") => {
                            eprintln!("berth: {}", s.message());
                            failed = true;
                            continue;
                        }
                        Err(_) => {}
                    }
                }
                match c.inspect(ImageRef { name }).await {
                    Ok(r) => docs.push(serde_json::from_str::<serde_json::Value>(
                        &r.into_inner().json,
                    )?),
                    Err(s) => {
                        eprintln!("berth: {}", s.message());
                        failed = true;
                    }
                }
            }
            match format.as_deref() {
                None | Some("") => writeln!(out, "{}", serde_json::to_string_pretty(&docs)?)?,
                Some(t) => {
                    for d in &docs {
                        writeln!(out, "{}", ctr::render_template(t, d)?)?;
                    }
                }
            }
            return Ok(failed as i32);
        }
        Cmd::History {
            name,
            no_trunc,
            quiet,
        } => {
            let id = c
                .inspect(ImageRef { name: name.clone() })
                .await?
                .into_inner()
                .json;
            let id: serde_json::Value = serde_json::from_str(&id)?;
            let entries = c.history(ImageRef { name }).await?.into_inner().entries;
            fmt::history(
                &mut out,
                id["Id"].as_str().unwrap_or(""),
                &entries,
                no_trunc,
                quiet,
            )?;
        }
        Cmd::Login {
            server,
            username,
            password,
            password_stdin,
            plain_http,
            insecure,
        } => {
            let username = match username {
                Some(u) => u,
                None => bail!("login needs --username (-u)"),
            };
            let password = match (password, password_stdin) {
                (Some(p), false) => p,
                (None, true) => {
                    let mut s = String::new();
                    std::io::stdin().read_to_string(&mut s)?;
                    s.trim_end_matches(['\n', '\r']).to_string()
                }
                (Some(_), true) => bail!("--password and --password-stdin are exclusive"),
                (None, false) => bail!("login needs --password (-p) or --password-stdin"),
            };
            c.login(LoginRequest {
                registry: server,
                username,
                password,
                plain_http,
                insecure,
            })
            .await?;
            writeln!(out, "Login Succeeded")?;
        }
        Cmd::Logout { server } => {
            let r = c
                .logout(LogoutRequest {
                    registry: server.clone(),
                })
                .await?
                .into_inner();
            if r.removed {
                writeln!(out, "Removing login credentials for {server}")?;
            } else {
                writeln!(out, "Not logged in to {server}")?;
            }
        }
        Cmd::Save {
            names,
            output,
            format,
        } => {
            c.export(ExportRequest {
                names,
                path: abs(&output)?,
                format,
            })
            .await?;
        }
        Cmd::Load { input, name } => {
            let r = c
                .import(ImportRequest {
                    path: abs(&input)?,
                    name: name.unwrap_or_default(),
                })
                .await?
                .into_inner();
            for i in r.images {
                writeln!(out, "Loaded image: {}", fmt::short_name(&i.name))?;
            }
        }
        Cmd::Gc => {
            let r = c.gc(Empty {}).await?.into_inner();
            writeln!(
                out,
                "Removed {} blobs and {} snapshots",
                r.blobs_removed, r.snapshots_removed
            )?;
        }
        Cmd::Bundle { args, rm } => match (rm, args.as_slice()) {
            (true, [dir]) => {
                c.remove_bundle(BundleRequest {
                    image: String::new(),
                    dir: abs(dir)?,
                })
                .await?;
            }
            (false, [image, dir]) => {
                let r = c
                    .prepare_bundle(BundleRequest {
                        image: image.clone(),
                        dir: abs(dir)?,
                    })
                    .await?
                    .into_inner();
                writeln!(out, "{}", r.config)?;
            }
            _ => bail!("usage: berth bundle IMAGE DIR | berth bundle --rm DIR"),
        },
        Cmd::Version => {
            let v = c.version(Empty {}).await?.into_inner();
            writeln!(out, "Client: berth {}", env!("CARGO_PKG_VERSION"))?;
            writeln!(out, "Server: berthd {} (API {})", v.version, v.api)?;
        }
        Cmd::Info => {
            let v = c.version(Empty {}).await?.into_inner();
            let i: serde_json::Value =
                serde_json::from_str(&cc.info(Empty2 {}).await?.into_inner().json)?;
            let s = |k: &str| match &i[k] {
                serde_json::Value::String(s) => s.clone(),
                v => v.to_string(),
            };
            writeln!(out, "Containers: {}", s("Containers"))?;
            writeln!(out, " Running: {}", s("ContainersRunning"))?;
            writeln!(out, " Paused: {}", s("ContainersPaused"))?;
            writeln!(out, " Stopped: {}", s("ContainersStopped"))?;
            writeln!(out, "Images: {}", s("Images"))?;
            writeln!(out, "Server Version: {} (API {})", v.version, v.api)?;
            writeln!(out, "Storage Driver: {}", s("Driver"))?;
            writeln!(out, "Cgroup Version: {}", s("CgroupVersion"))?;
            writeln!(out, "Runtime: {}", s("Runtime"))?;
            writeln!(
                out,
                "Network: bridge {} {}",
                i["Network"]["Bridge"].as_str().unwrap_or(""),
                i["Network"]["Subnet"].as_str().unwrap_or("")
            )?;
            writeln!(out, "Kernel Version: {}", s("KernelVersion"))?;
            writeln!(out, "CPUs: {}", s("NCPU"))?;
            writeln!(out, "Root Dir: {}", s("DockerRootDir"))?;
            writeln!(out, "State Dir: {}", s("StateDir"))?;
            writeln!(out, "Log Dir: {}", s("LogDir"))?;
            writeln!(out, "Socket: {}", client::socket_path(&cli.host))?;
        }
    }
    Ok(0)
}
