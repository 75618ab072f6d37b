//! `rbuild build` (and `rbuild -t NAME CONTEXT`).

use super::Globals;
use std::path::PathBuf;
use std::process::ExitCode;

/// Arguments of `rbuild build`.
#[derive(Debug, clap::Args)]
pub struct BuildArgs {
    /// Build context directory.
    pub context: PathBuf,
}

/// Runs `rbuild build`.
pub fn run(_g: &Globals, _args: BuildArgs) -> anyhow::Result<ExitCode> {
    anyhow::bail!("build is not implemented yet")
}
