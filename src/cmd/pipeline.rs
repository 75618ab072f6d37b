//! `rbuild pipeline`: build a DAG of images from rbuild.yaml.

use super::Globals;
use std::process::ExitCode;

/// Arguments of `rbuild pipeline`.
#[derive(Debug, clap::Args)]
pub struct PipelineArgs {
    /// Pipeline file.
    #[arg(short = 'f', long, default_value = "rbuild.yaml")]
    pub file: std::path::PathBuf,
}

/// Runs `rbuild pipeline`.
pub fn run(_g: &Globals, _args: PipelineArgs) -> anyhow::Result<ExitCode> {
    anyhow::bail!("pipeline is not implemented yet")
}
