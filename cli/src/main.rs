//! `berth`: the command people type. Talks to berthd over its unix socket.

mod client;
mod fmt;

use anyhow::{bail, Context, Result};
use berth_cri::api::*;
use clap::{Parser, Subcommand};
use std::io::{IsTerminal, Read, Write};

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
    /// Low-level information on images (JSON)
    Inspect {
        #[arg(required = true)]
        names: Vec<String>,
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

fn abs(p: &str) -> Result<String> {
    let p = std::path::Path::new(p);
    Ok(if p.is_absolute() {
        p.display().to_string()
    } else {
        std::env::current_dir()?.join(p).display().to_string()
    })
}

async fn run(cli: Cli) -> Result<i32> {
    let mut c = client::connect(&cli.host).await?;
    let mut out = std::io::stdout().lock();
    match cli.cmd {
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
            quiet,
            digests,
            no_trunc,
            format,
        } => {
            let mut images = c.list(ListRequest {}).await?.into_inner().images;
            images.sort_by(|a, b| a.name.cmp(&b.name));
            fmt::images(&mut out, &images, quiet, digests, no_trunc, &format)?;
        }
        Cmd::Rmi { names, force } => {
            let mut failed = false;
            for name in names {
                match c.remove(RemoveRequest { name, force }).await {
                    Ok(r) => {
                        let r = r.into_inner();
                        writeln!(out, "Untagged: {}", fmt::short_name(&r.name))?;
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
        Cmd::Inspect { names } => {
            let mut docs = Vec::new();
            let mut failed = false;
            for name in names {
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
            writeln!(out, "{}", serde_json::to_string_pretty(&docs)?)?;
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
            let n = c.list(ListRequest {}).await?.into_inner().images.len();
            writeln!(out, "Server Version: {}", v.version)?;
            writeln!(out, "API: {}", v.api)?;
            writeln!(out, "Socket: {}", client::socket_path(&cli.host))?;
            writeln!(out, "Images: {n}")?;
            writeln!(
                out,
                "Stdout is a terminal: {}",
                std::io::stdout().is_terminal()
            )?;
        }
    }
    Ok(0)
}
