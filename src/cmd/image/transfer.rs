//! `import`, `save` and `load`.

use super::ImportArgs;
use anyhow::Context;
use rbuild_layerfs::archive::{load_archive, save_images, SaveRequest};
use rbuild_layerfs::import::{import_rootfs, ImportOptions};
use rbuild_layerfs::layer::WriteOptions;
use rbuild_layerfs::store::normalize_tag;
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
        normalize_tag(name)?;
    }
    let image = import_rootfs(store, &args.source, &opts)
        .with_context(|| format!("importing {}", args.source.display()))?;
    if let Some(name) = &args.name {
        store.set_tag(name, &image.descriptor())?;
    }
    println!("{}", image.id());
    Ok(ExitCode::SUCCESS)
}

/// `rbuild save -o FILE IMAGE...`: writes to a temporary file beside FILE and renames it, so
/// a failed save leaves no partial archive.
pub fn save(store: &Store, output: Option<&Path>, images: &[String]) -> anyhow::Result<ExitCode> {
    let mut requests: Vec<SaveRequest> = Vec::new();
    for name in images {
        let image = store.resolve_image(name)?;
        let tag = normalize_tag(name).ok().filter(|t| {
            store
                .tags()
                .is_ok_and(|tags| tags.iter().any(|(n, _)| n == t))
        });
        match requests
            .iter_mut()
            .find(|r| r.image.manifest_digest == image.manifest_digest)
        {
            Some(r) => r.tags.extend(tag),
            None => requests.push(SaveRequest {
                image,
                tags: tag.into_iter().collect(),
            }),
        }
    }
    let Some(output) = output else {
        use std::io::IsTerminal;
        if std::io::stdout().is_terminal() {
            anyhow::bail!(
                "refusing to write an image archive to a terminal: use -o FILE or redirect stdout"
            );
        }
        let stdout = std::io::stdout().lock();
        save_images(
            store,
            &requests,
            std::io::BufWriter::with_capacity(1 << 20, stdout),
        )
        .context("saving to stdout")?;
        return Ok(ExitCode::SUCCESS);
    };
    let dir = output
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let tmp = tempfile::Builder::new()
        .prefix(".rbuild-save-")
        .tempfile_in(dir)
        .with_context(|| format!("creating a temporary file in {}", dir.display()))?;
    let writer = std::io::BufWriter::with_capacity(1 << 20, tmp.as_file());
    save_images(store, &requests, writer)
        .with_context(|| format!("saving to {}", output.display()))?;
    tmp.as_file().sync_all()?;
    tmp.persist(output)
        .with_context(|| format!("writing {}", output.display()))?;
    Ok(ExitCode::SUCCESS)
}

/// `rbuild load [-i FILE]` (stdin without -i).
pub fn load(store: &Store, input: Option<&Path>, quiet: bool) -> anyhow::Result<ExitCode> {
    let loaded = match input {
        Some(path) => {
            let file =
                std::fs::File::open(path).with_context(|| format!("opening {}", path.display()))?;
            load_archive(store, file).with_context(|| format!("loading {}", path.display()))?
        }
        None => load_archive(store, std::io::stdin().lock()).context("loading from stdin")?,
    };
    for l in loaded {
        if l.tags.is_empty() {
            println!("Loaded image ID: {}", l.image.id());
        }
        for t in l.tags {
            if quiet {
                println!("{t}");
            } else {
                println!("Loaded image: {t}");
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}
