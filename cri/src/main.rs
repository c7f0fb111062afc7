//! `berthd`: berth's daemon.

use clap::Parser;
use std::path::PathBuf;

#[derive(Parser)]
#[command(
    name = "berthd",
    version,
    about = "berth's daemon: images and containers, through one berth-shim per container"
)]
struct Args {
    /// Unix socket to serve berth's API on
    #[arg(long, default_value = berth_cri::DEFAULT_SOCKET)]
    address: PathBuf,
    /// Where images, snapshots and metadata live
    #[arg(long, default_value = "/var/lib/berth")]
    root: PathBuf,
    /// Runtime state (pid, lock, bundles)
    #[arg(long, default_value = "/run/berth")]
    state: PathBuf,
    /// Container logs directory (default: [daemon] log_dir of the config, else /var/log/berth)
    #[arg(long)]
    log_dir: Option<PathBuf>,
    /// Configuration file (default: $BERTH_CONFIG or /etc/berth/config.toml if it exists)
    #[arg(long)]
    config: Option<PathBuf>,
    /// Address of the CRI streaming server (exec, attach, port-forward URLs); port 0 picks
    /// a free port
    #[arg(long, default_value = "127.0.0.1:0")]
    streaming_addr: std::net::SocketAddr,
    /// Log filter (tracing's env-filter syntax; also $BERTH_LOG)
    #[arg(long, env = "BERTH_LOG", default_value = "info")]
    log: String,
}

fn main() {
    if std::env::args().nth(1).as_deref() == Some(berth_cri::pause::ARG) {
        berth_cri::pause::main();
    }
    let a = Args::parse();
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::new(&a.log))
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    let r = rt.block_on(berth_cri::daemon::run(berth_cri::daemon::Options {
        address: a.address,
        root: a.root,
        state: a.state,
        log_dir: a.log_dir,
        config: a.config,
        streaming_addr: a.streaming_addr,
    }));
    if let Err(e) = r {
        eprintln!("berthd: {}", format!("{e:#}").replace('\n', " "));
        std::process::exit(1);
    }
}
