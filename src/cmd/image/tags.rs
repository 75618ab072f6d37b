//! `tag` and `rmi`.

use anyhow::{bail, Context};
use rbuild_layerfs::store::normalize_tag;
use rbuild_layerfs::Store;
use std::process::ExitCode;

/// `rbuild tag SOURCE TARGET`.
pub fn tag(store: &Store, source: &str, target: &str) -> anyhow::Result<ExitCode> {
    let image = store.resolve_image(source)?;
    store
        .set_tag(target, &image.descriptor())
        .with_context(|| format!("tagging {source} as {target}"))?;
    Ok(ExitCode::SUCCESS)
}

/// `rbuild rmi [-f] IMAGE...`: untags; an image is deleted with its last tag. Blobs and layers
/// that nothing references any more are freed by `rbuild system prune`.
pub fn rmi(store: &Store, force: bool, images: &[String]) -> anyhow::Result<ExitCode> {
    let mut failures = Vec::new();
    for name in images {
        if let Err(e) = rmi_one(store, force, name) {
            failures.push(format!("{e:#}"));
        }
    }
    if failures.is_empty() {
        Ok(ExitCode::SUCCESS)
    } else {
        bail!("{}", failures.join("; "))
    }
}

fn rmi_one(store: &Store, force: bool, name: &str) -> anyhow::Result<()> {
    let image = match store.resolve_image(name) {
        Ok(image) => image,
        Err(e) => {
            // A tag whose image is unreadable (see `system check`) can still be removed.
            let tag = normalize_tag(name).ok();
            let tagged = tag.as_ref().is_some_and(|t| {
                store
                    .tags()
                    .is_ok_and(|all| all.iter().any(|(n, _)| n == t))
            });
            if let (true, Some(tag)) = (tagged, tag) {
                store.remove_tag(&tag)?;
                println!("Untagged: {tag}");
                return Ok(());
            }
            return Err(e.into());
        }
    };
    let tags: Vec<String> = store
        .images_with_tags()?
        .into_iter()
        .filter(|(d, _)| d.digest().as_ref() == image.manifest_digest.as_str())
        .flat_map(|(_, t)| t)
        .collect();
    let by_tag = normalize_tag(name).ok().filter(|t| tags.contains(t));
    let last = by_tag.is_none() || tags.len() <= 1;
    if last && store.is_image_mounted(&image) {
        if !force {
            bail!(
                "image {name} is mounted (rbuild mount): run `rbuild umount {name}` first, or use rmi -f"
            );
        }
        store.unmount_image(&image)?;
    }
    if last {
        let users = store.containers_using(&image);
        if !users.is_empty() && !force {
            bail!(
                "conflict: unable to remove {name}: containers {} use it; remove them first, or use rmi -f",
                users.join(", ")
            );
        }
    }
    if let Some(tag) = by_tag {
        store.remove_tag(&tag)?;
        println!("Untagged: {tag}");
        if tags.len() <= 1 {
            println!("Deleted: {}", image.id());
        }
        return Ok(());
    }
    if tags.len() > 1 && !force {
        bail!(
            "conflict: unable to delete {} (must be forced) - image is referenced in multiple repositories ({})",
            image.id().short(),
            tags.join(", ")
        );
    }
    for tag in store.remove_image_entries(&image.manifest_digest)? {
        println!("Untagged: {tag}");
    }
    println!("Deleted: {}", image.id());
    Ok(())
}
