//! `import`, `save` and `load`.

use super::ImportArgs;
use anyhow::Context;
use rbuild_layerfs::import::{import_rootfs, ImportOptions};
use rbuild_layerfs::layer::WriteOptions;
use rbuild_layerfs::Store;
use std::path::Path;
use std::process::ExitCode;

/// `rbuild import [--change ...] [-m MSG] SOURCE [NAME[:TAG]]`: prints the image ID.
pub fn import(store: &Store, args: ImportArgs) -> anyhow::Result<ExitCode> {
    let opts = ImportOptions {
        changes: args.change,
        message: args.message,
        write: WriteOptions {
            compression: args.compression.parse()?,
            ..WriteOptions::default()
        },
    };
    if let Some(name) = &args.name {
        // Reject a bad name before doing any work.
        rbuild_layerfs::store::normalize_tag(name)?;
    }
    let image = import_rootfs(store, &args.source, &opts)
        .with_context(|| format!("importing {}", args.source.display()))?;
    if let Some(name) = &args.name {
        store.set_tag(name, &image.descriptor())?;
    }
    println!("{}", image.id());
    Ok(ExitCode::SUCCESS)
}

/// `rbuild save -o FILE IMAGE...`.
pub fn save(_store: &Store, _output: &Path, _images: &[String]) -> anyhow::Result<ExitCode> {
    anyhow::bail!("save is being implemented")
}

/// `rbuild load [-i FILE]`.
pub fn load(_store: &Store, _input: Option<&Path>, _quiet: bool) -> anyhow::Result<ExitCode> {
    anyhow::bail!("load is being implemented")
}
