//! `berth-runtime`: runc's command line over the berth runtime library.
//!
//! Parsing and printing only; every verb lives in `commands/<verb>.rs`, the work in the library.
//!
//! Exit codes are runc's: 0 on success (and for `--help`, `--version`), 1 for an error or a
//! usage error, 3 for an unknown command ("No help topic for 'x'"), 255 when `exec` fails
//! (any other `exec` code is the process's own), and the container's code for `run`.

mod cli;
mod commands;
mod relay;
mod sealed;

use clap::error::ErrorKind;
use clap::Parser;
use std::io::Write;

fn main() {
    let cli = match cli::Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => usage_error(e),
    };
    if !matches!(cli.log_format.as_str(), "text" | "json") {
        fail(&format!("invalid log-format: {}", cli.log_format), 1);
    }
    if let Err(e) = berth_runtime::log::init(cli.log.clone(), cli.log_format == "json", cli.debug) {
        fail(&e.to_string(), 1);
    }
    let code = match commands::run(&cli) {
        Ok(code) => code,
        // A reader that went away (`berth-runtime list | head -1`) is not an error.
        Err(e)
            if e.chain().any(|c| {
                c.downcast_ref::<std::io::Error>()
                    .is_some_and(|io| io.kind() == std::io::ErrorKind::BrokenPipe)
            }) =>
        {
            0
        }
        Err(e) => {
            let code = if matches!(cli.command, cli::Command::Exec(_)) {
                255
            } else {
                1
            };
            fail(&e.to_string(), code)
        }
    };
    std::process::exit(code);
}

/// Prints a one-line error on stderr, logs it, and exits with `code`.
fn fail(msg: &str, code: i32) -> ! {
    let one_line = msg.trim().replace('\n', " ");
    let _ = writeln!(std::io::stderr(), "berth-runtime: {one_line}");
    berth_runtime::log::write("error", &one_line);
    std::process::exit(code)
}

/// Help and version go to stdout with 0; no arguments at all prints the help, as runc does; an
/// unknown command is runc's "No help topic" with 3; any other usage error is one line (clap's
/// message and the usage) with 1.
fn usage_error(e: clap::Error) -> ! {
    match e.kind() {
        ErrorKind::DisplayHelp | ErrorKind::DisplayVersion => e.exit(),
        ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand | ErrorKind::MissingSubcommand
            if std::env::args_os().len() == 1 =>
        {
            let mut cmd = <cli::Cli as clap::CommandFactory>::command();
            let _ = cmd.print_help();
            std::process::exit(0)
        }
        ErrorKind::InvalidSubcommand => {
            let name = match e.get(clap::error::ContextKind::InvalidSubcommand) {
                Some(clap::error::ContextValue::String(s)) => s.clone(),
                _ => String::new(),
            };
            fail(&format!("No help topic for '{name}'"), 3)
        }
        _ => {
            // clap's message, e.g. "error: the following required arguments were not
            // provided:\n  <ID>\n\nUsage: …\n\nFor more information, try '--help'.", on one line.
            let text = e.render().to_string();
            let text = text.strip_prefix("error: ").unwrap_or(&text);
            let (msg, rest) = text.split_once("Usage: ").unwrap_or((text, ""));
            let msg = msg.replace("For more information, try '--help'.", "");
            let msg = msg.split_whitespace().collect::<Vec<_>>().join(" ");
            match rest.lines().next().map(str::trim) {
                Some(usage) if !usage.is_empty() => fail(&format!("{msg} (usage: {usage})"), 1),
                _ => fail(&msg, 1),
            }
        }
    }
}
