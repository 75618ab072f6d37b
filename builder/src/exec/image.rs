//! Reading base images from the store and writing built images to it.

use super::config::ImageConfig;
use super::BuildError;
use crate::cache::LayerRef;
use rbuild_layerfs::image::layer_descriptor;
use rbuild_layerfs::{Digest, Store};
use serde::{Deserialize, Serialize};

/// An image's configuration and layers, as a build stage starts from it or ends with it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ImageState {
    /// The configuration (Docker fields kept).
    pub config: ImageConfig,
    /// The layers, base first.
    pub layers: Vec<LayerRef>,
}

/// Loads image `name_or_id` from the store: its raw configuration (so Docker-only fields such as
/// Healthcheck and OnBuild survive) and its layers. Returns the image ID too.
pub fn load_image(store: &Store, name_or_id: &str) -> Result<(Digest, ImageState), BuildError> {
    let what = || format!("image {name_or_id}");
    let image = store
        .resolve_image(name_or_id)
        .map_err(|e| BuildError::store(what(), e))?;
    let raw = store
        .read_blob(&image.config_digest)
        .map_err(|e| BuildError::store(what(), e))?;
    let config: ImageConfig =
        serde_json::from_slice(&raw).map_err(|e| BuildError::store(what(), e))?;
    let diff_ids = image.diff_ids();
    let layers = image
        .manifest
        .layers()
        .iter()
        .zip(diff_ids)
        .map(|(d, diff_id)| {
            Ok(LayerRef {
                diff_id,
                digest: Digest::parse(d.digest().as_ref())
                    .map_err(|e| BuildError::store(what(), e))?,
                size: d.size(),
                media_type: d.media_type().to_string(),
            })
        })
        .collect::<Result<Vec<_>, BuildError>>()?;
    Ok((image.config_digest.clone(), ImageState { config, layers }))
}

/// Writes the config and manifest of `state` and records the image: tagged with each of `tags`,
/// or untagged when there are none. Returns (image ID, manifest digest).
pub fn write_image(
    store: &Store,
    state: &ImageState,
    tags: &[String],
) -> Result<(Digest, Digest), BuildError> {
    let err = |e: Box<dyn std::error::Error + Send + Sync>| BuildError::Store {
        what: "writing the image".into(),
        source: e,
    };
    let mut config = state.config.clone();
    config.rootfs.diff_ids = state.layers.iter().map(|l| l.diff_id.to_string()).collect();
    let layers = state
        .layers
        .iter()
        .map(|l| layer_descriptor(&l.media_type, l.size, &l.digest))
        .collect();
    let image = store
        .put_image(&config.to_json(), layers)
        .map_err(|e| err(e.into()))?;
    let desc = image.descriptor();
    if tags.is_empty() {
        store.add_untagged(&desc).map_err(|e| err(e.into()))?;
    }
    for tag in tags {
        store.set_tag(tag, &desc).map_err(|e| err(e.into()))?;
    }
    Ok((image.config_digest, image.manifest_digest))
}
