//! `rbuild commit`: the container's upper dir becomes a new layer on top of its image.

use super::state;
use crate::cmd::image::open_store;
use crate::cmd::Globals;
use anyhow::{bail, Context};
use oci_spec::image::HistoryBuilder;
use rbuild_layerfs::layer::{write_layer, LayerInfo, WriteOptions};
use rbuild_layerfs::Digest;
use std::process::ExitCode;

/// `rbuild commit CONTAINER [NAME]`: prints the new image ID.
pub fn commit(g: &Globals, container: &str, name: Option<&str>) -> anyhow::Result<ExitCode> {
    let store = open_store(g)?;
    let c = state::find(store.root(), container)?;
    let manifest: Digest = c
        .manifest
        .parse()
        .context("container record: manifest digest")?;
    let image = store
        .load_image(&manifest)
        .with_context(|| format!("loading image {} of container {}", c.image, c.name))?;
    let upper = c.dir(store.root()).join("upper");
    if !upper.is_dir() {
        bail!(
            "container {container} has no upper dir at {}",
            upper.display()
        );
    }
    // A running container is frozen while its upper dir is read, so the layer is one consistent
    // snapshot (thawed when `_frozen` is dropped, also on error).
    let _frozen = match (&c.cgroup, c.is_running()) {
        (Some(cg), true) => match cg.freeze() {
            Ok(f) => Some(f),
            Err(e) => {
                eprintln!("warning: committing {} without pausing it: {e}", c.name);
                None
            }
        },
        _ => None,
    };
    // The upper dir stays the container's: write the blob from it, then unpack the blob into
    // layers/ (cost grows with the changed files only).
    let mut ingest = store.ingest()?;
    let info = write_layer(&upper, &WriteOptions::default(), &mut ingest)
        .with_context(|| format!("writing a layer from {}", upper.display()))?;
    ingest.commit(Some(&info.digest), Some(info.size))?;
    store.unpack_layer(&info.digest, &info.diff_id)?;
    let mut layers: Vec<LayerInfo> = Vec::new();
    for (desc, diff_id) in image.manifest.layers().iter().zip(image.diff_ids()) {
        layers.push(LayerInfo {
            diff_id,
            digest: desc.digest().to_string().parse()?,
            size: desc.size(),
            media_type: desc.media_type().to_string(),
        });
    }
    layers.push(info);
    let mut config = image.config.clone();
    let mut history = config.history().clone().unwrap_or_default();
    history.push(
        HistoryBuilder::default()
            .created(state::now())
            .created_by(format!("rbuild commit {}", c.name))
            .build()?,
    );
    config.set_history(Some(history));
    config.set_created(Some(state::now()));
    let new = store.write_image(&config, &layers)?;
    if let Some(n) = name {
        let tag = rbuild_layerfs::store::normalize_tag(n)?;
        store.set_tag(&tag, &new.descriptor())?;
    }
    println!("{}", new.id());
    Ok(ExitCode::SUCCESS)
}
