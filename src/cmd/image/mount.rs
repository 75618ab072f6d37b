//! `mount` and `umount` of images (read-only merged views that outlive the command).

use crate::cmd::Globals;
use anyhow::{bail, Context};
use rbuild_layerfs::mount::Driver;
use rbuild_layerfs::Store;
use std::process::ExitCode;

/// `rbuild mount [IMAGE]`: mounts and prints the path; without IMAGE lists mounted images.
pub fn mount(g: &Globals, store: &Store, name: Option<&str>) -> anyhow::Result<ExitCode> {
    let Some(name) = name else {
        for rec in store.image_mounts()? {
            println!("{} {}", rec.image_id, rec.target.display());
        }
        return Ok(ExitCode::SUCCESS);
    };
    let driver: Driver = g
        .storage_driver
        .parse()
        .with_context(|| format!("--storage-driver {}", g.storage_driver))?;
    let image = store.resolve_image(name)?;
    // A FUSE mount is served by a separate process that outlives this command.
    let server = crate::cmd::fuse_serve::server_command(None);
    let path = store
        .mount_image_served(&image, driver, &server)
        .with_context(|| format!("mounting {name}"))?;
    println!("{}", path.display());
    Ok(ExitCode::SUCCESS)
}

/// `rbuild umount IMAGE...`.
pub fn umount(store: &Store, names: &[String]) -> anyhow::Result<ExitCode> {
    let mut not_mounted = Vec::new();
    for name in names {
        let image = store.resolve_image(name)?;
        if store.unmount_image(&image)? {
            println!("{}", image.id());
        } else {
            not_mounted.push(name.clone());
        }
    }
    if !not_mounted.is_empty() {
        bail!(
            "not mounted: {} (see `rbuild mount`)",
            not_mounted.join(", ")
        );
    }
    Ok(ExitCode::SUCCESS)
}
