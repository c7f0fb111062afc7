//! One module per verb.

mod create;
mod exec;
mod features;
mod info;
mod spec;
mod update;

use crate::cli::{Cli, Command};
use anyhow::{bail, Result};
use berth_runtime::container;

/// Runs the command; returns the process exit code.
pub fn run(cli: &Cli) -> Result<i32> {
    if cli.systemd_cgroup {
        bail!("--systemd-cgroup is not supported: berth-runtime manages cgroups through cgroupfs (use the cgroupfs cgroup manager)");
    }
    let root = &cli.root;
    berth_runtime::log::debug(&format!(
        "berth-runtime {} (root {}): {:?}",
        env!("CARGO_PKG_VERSION"),
        root.display(),
        cli.command
    ));
    match &cli.command {
        Command::Create(a) => create::create(root, a).map(|_| 0),
        Command::Run {
            create: a,
            detach,
            keep,
            ..
        } => create::run(root, a, *detach, *keep),
        Command::Start { id } => container::start::start(root, id)
            .map(|_| 0)
            .map_err(Into::into),
        Command::State { id } => {
            out(&container::info::state_json(root, id)?)?;
            Ok(0)
        }
        Command::Kill { all, id, signal } => {
            // Signal 0 is the liveness probe: nothing is sent, the init's existence is checked.
            let signo = berth_runtime::signal::parse_number(signal)?;
            container::kill::kill_number(root, id, signo, *all)?;
            Ok(0)
        }
        Command::Delete { force, id } => container::delete::delete(root, id, *force)
            .map(|_| 0)
            .map_err(Into::into),
        Command::List { format, quiet } => info::list(root, format, *quiet),
        Command::Exec(a) => exec::exec(root, a),
        Command::Ps {
            format,
            id,
            ps_args,
        } => info::ps(root, id, format, ps_args),
        Command::Pause { id } => container::pause::pause(root, id)
            .map(|_| 0)
            .map_err(Into::into),
        Command::Resume { id } => container::pause::resume(root, id)
            .map(|_| 0)
            .map_err(Into::into),
        Command::Update(a) => update::update(root, a),
        Command::Events {
            stats,
            interval,
            id,
        } => info::events(root, id, *stats, interval),
        Command::Spec { bundle, rootless } => spec::spec(bundle, *rootless),
        Command::Features => features::features(),
        Command::Checkpoint { args } => {
            check_parent_path(args)?;
            bail!("checkpoint/restore is not supported by berth-runtime")
        }
        Command::Restore { .. } => {
            bail!("checkpoint/restore is not supported by berth-runtime")
        }
    }
}

/// runc checks `checkpoint --parent-path` before it calls CRIU, and callers (and runc's tests)
/// see that error first: relative, and a directory under `--image-path`.
fn check_parent_path(args: &[String]) -> anyhow::Result<()> {
    let flag = |name: &str| {
        args.iter().enumerate().find_map(|(i, a)| {
            a.strip_prefix(&format!("{name}="))
                .map(str::to_string)
                .or_else(|| (a == name).then(|| args.get(i + 1).cloned()).flatten())
        })
    };
    let Some(parent) = flag("--parent-path").filter(|p| !p.is_empty()) else {
        return Ok(());
    };
    if parent.starts_with('/') {
        bail!("--parent-path must be relative");
    }
    let image = flag("--image-path").unwrap_or_else(|| "checkpoint".into());
    let real = std::path::Path::new(&image).join(&parent);
    match std::fs::metadata(&real) {
        Ok(m) if m.is_dir() => Ok(()),
        Ok(_) => bail!("invalid --parent-path: {}: not a directory", real.display()),
        Err(e) => bail!("invalid --parent-path: stat {}: {e}", real.display()),
    }
}

/// Prints one line to stdout; a closed pipe comes back as an error (see `main`).
pub fn out(line: &str) -> std::io::Result<()> {
    use std::io::Write;
    let mut o = std::io::stdout().lock();
    writeln!(o, "{line}")?;
    o.flush()
}
