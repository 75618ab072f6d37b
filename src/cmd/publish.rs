//! Pushing a freshly built image to every tag it was given (`build --push`, `pipeline --push`).

use anyhow::Context;
use rbuild_layerfs::{Digest, Store};
use rbuild_registry::progress::NoProgress;
use rbuild_registry::push::PushOptions;
use rbuild_registry::reference::ImageRef;
use std::sync::Arc;

/// Pushes image `image_id` to each of `tags`; returns `name:tag@digest` for each pushed tag.
/// `report` receives one line per tag.
pub fn push_tags(
    store: &Store,
    image_id: &Digest,
    tags: &[String],
    report: &mut dyn FnMut(&str),
) -> anyhow::Result<Vec<String>> {
    if tags.is_empty() {
        anyhow::bail!(
            "--push needs at least one tag: give the image a name with -t REGISTRY/NAME:TAG"
        );
    }
    let mut pushed = Vec::new();
    for tag in tags {
        let dest = ImageRef::parse(tag).with_context(|| format!("tag {tag:?}"))?;
        let result = rbuild_registry::blocking::push_blocking(
            store,
            image_id.as_str(),
            &dest,
            &PushOptions::default(),
            Arc::new(NoProgress),
        )
        .with_context(|| format!("pushing {tag}"))?;
        report(&format!("pushed {tag}@{}", result.digest));
        pushed.push(format!("{}@{}", dest.tagged_name(), result.digest));
    }
    Ok(pushed)
}
