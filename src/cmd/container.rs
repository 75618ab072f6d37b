//! Container commands (run, ps, exec, ...)

use super::Globals;
use std::process::ExitCode;

/// Container commands (run, ps, exec, ...)
#[derive(Debug, clap::Subcommand)]
pub enum ContainerCommand {
    /// Placeholder until implemented.
    Ps,
}

/// Runs one of these commands.
pub fn run(_g: &Globals, cmd: ContainerCommand) -> anyhow::Result<ExitCode> {
    anyhow::bail!("{cmd:?} is not implemented yet")
}
