//! `berth-runtime`: runc's command line over the berth runtime library.
//!
//! Parsing and printing only; every verb lives in `commands/<verb>.rs`, the work in the library.

mod cli;
mod commands;
mod relay;
mod sealed;

use clap::Parser;
use std::io::Write;

fn main() {
    let cli = cli::Cli::parse();
    if let Err(e) = berth_runtime::log::init(cli.log.clone(), cli.log_format == "json", cli.debug)
    {
        let _ = writeln!(std::io::stderr(), "berth-runtime: {e}");
        std::process::exit(1);
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
            let msg = e.to_string();
            let one_line = msg.replace('\n', " ");
            let _ = writeln!(std::io::stderr(), "berth-runtime: {one_line}");
            berth_runtime::log::write("error", &one_line);
            1
        }
    };
    std::process::exit(code);
}
