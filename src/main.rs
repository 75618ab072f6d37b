//! The `rbuild` command line: argument parsing and wiring only; all domain logic lives in the
//! library crates.

mod cmd;

use clap::Parser;
use std::process::ExitCode;

fn main() -> ExitCode {
    let cli = cmd::Cli::parse_from(cmd::normalize_args(std::env::args_os().collect()));
    match cmd::dispatch(cli) {
        Ok(code) => code,
        Err(err) => {
            // One-line reason last, as CI logs want it.
            eprintln!("error: {err:#}");
            ExitCode::from(cmd::exit_code_of(&err))
        }
    }
}
