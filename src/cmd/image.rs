//! Image management commands (import, images, tag, ...)

use super::Globals;
use std::process::ExitCode;

/// Image management commands (import, images, tag, ...)
#[derive(Debug, clap::Subcommand)]
pub enum ImageCommand {
    /// Placeholder until implemented.
    Images,
}

/// Runs one of these commands.
pub fn run(_g: &Globals, cmd: ImageCommand) -> anyhow::Result<ExitCode> {
    anyhow::bail!("{cmd:?} is not implemented yet")
}
