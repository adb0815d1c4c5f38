//! `ctwa`: the command-line client of the ctwa HTTP API. Its command tree mirrors the
//! seed CLI's (`ctwa` = status, `capi`, `exchange-code`, `refresh-token`, `ads`, `ad`),
//! plus the rest of the API (datasets, conversions, conversations, webhooks, keys and
//! the operator's admin commands). `ctwa --help` lists them.

mod args;
mod client;
mod commands;
mod config;
mod error;
mod output;
mod webhook;

use clap::Parser;
use std::process::ExitCode;

fn main() -> ExitCode {
    // Usage errors exit 2 (clap's), --help and --version 0.
    let cli = args::Cli::parse_from(args::seed_spelling(std::env::args_os()));
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::from(error::EXIT_SERVER);
        }
    };
    match runtime.block_on(commands::run(cli)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprint!("{}", e.render());
            e.exit_code()
        }
    }
}
