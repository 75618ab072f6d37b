//! Registry commands (pull, push, login, logout)

use super::Globals;
use std::process::ExitCode;

/// Registry commands (pull, push, login, logout)
#[derive(Debug, clap::Subcommand)]
pub enum RegistryCommand {
    /// Placeholder until implemented.
    Pull,
}

/// Runs one of these commands.
pub fn run(_g: &Globals, cmd: RegistryCommand) -> anyhow::Result<ExitCode> {
    anyhow::bail!("{cmd:?} is not implemented yet")
}
