//! `rbuild builder prune`: build-cache clean-up, as `docker builder prune`.

use super::image::open_store;
use super::Globals;
use rbuild_builder::cache::prune::prune_build_cache;
use std::process::ExitCode;

/// `rbuild builder ...`
#[derive(Debug, clap::Subcommand)]
pub enum BuilderCommand {
    /// Remove build cache: dangling records (whose layers are gone), or everything with --all.
    Prune {
        /// Remove all build cache (records, context stat caches, build logs), not only dangling.
        #[arg(short, long)]
        all: bool,
        /// Do not prompt (rbuild never prompts; accepted for docker compatibility).
        #[arg(short, long)]
        force: bool,
    },
}

/// Runs one `builder` command.
pub fn run(g: &Globals, cmd: BuilderCommand) -> anyhow::Result<ExitCode> {
    let store = open_store(g)?;
    match cmd {
        BuilderCommand::Prune { all, force: _ } => {
            let lock = store.lock()?;
            let r = prune_build_cache(&store, all)?;
            drop(lock);
            println!(
                "Removed {} build cache records and {} other files; total reclaimed space: {}",
                r.records_removed,
                r.files_removed,
                super::image::human_size(r.bytes_freed)
            );
            Ok(ExitCode::SUCCESS)
        }
    }
}
