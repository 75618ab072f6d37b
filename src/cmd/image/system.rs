//! `system df`, `system prune`, `system check`.

use super::list::{human_size, print_table};
use crate::cmd::ExitStatusError;
use rbuild_builder::cache::prune::prune_build_cache;
use rbuild_layerfs::Store;
use std::process::ExitCode;

/// `rbuild system df`.
pub fn df(store: &Store) -> anyhow::Result<ExitCode> {
    let u = store.disk_usage()?;
    let pct = |part: u64, total: u64| (part * 100).checked_div(total).unwrap_or(0);
    print_table(vec![
        vec![
            "TYPE".into(),
            "TOTAL".into(),
            "ACTIVE".into(),
            "SIZE".into(),
            "RECLAIMABLE".into(),
        ],
        vec![
            "Images".into(),
            u.images.to_string(),
            u.images_tagged.to_string(),
            human_size(u.images_bytes),
            format!(
                "{} ({}%)",
                human_size(u.images_reclaimable),
                pct(u.images_reclaimable, u.images_bytes)
            ),
        ],
        vec![
            "Containers".into(),
            u.containers.to_string(),
            "-".into(),
            human_size(u.containers_bytes),
            "-".into(),
        ],
        vec![
            "Build Cache".into(),
            "-".into(),
            "-".into(),
            human_size(u.cache_bytes),
            "-".into(),
        ],
        vec![
            "Temporary".into(),
            "-".into(),
            "-".into(),
            human_size(u.tmp_bytes),
            "-".into(),
        ],
    ]);
    Ok(ExitCode::SUCCESS)
}

/// `rbuild system prune`.
pub fn prune(store: &Store) -> anyhow::Result<ExitCode> {
    let r = store.prune()?;
    for d in &r.images_removed {
        println!("deleted dangling image {d}");
    }
    // Dangling build cache: records of layers no image holds any more. The layers only they
    // kept go in a second pass.
    let lock = store.lock()?;
    let cache = prune_build_cache(store, false)?;
    drop(lock);
    let freed = store.prune()?;
    println!(
        "Removed {} blobs, {} layers and {} dangling build cache records; total reclaimed space: {}",
        r.blobs_removed + freed.blobs_removed,
        r.layers_removed + freed.layers_removed,
        cache.records_removed,
        human_size(r.bytes_freed + freed.bytes_freed + cache.bytes_freed)
    );
    Ok(ExitCode::SUCCESS)
}

/// `rbuild system check`: exits 1 naming every problem.
pub fn check(store: &Store) -> anyhow::Result<ExitCode> {
    let r = store.check()?;
    if r.incomplete_removed > 0 {
        println!(
            "removed {} incomplete item(s) left by processes that died",
            r.incomplete_removed
        );
    }
    println!(
        "checked {} blobs, {} images, {} layers",
        r.blobs_checked, r.images_checked, r.layers_checked
    );
    if r.is_consistent() {
        println!("store is consistent");
        return Ok(ExitCode::SUCCESS);
    }
    for p in &r.problems {
        println!("problem: {p}");
    }
    Err(ExitStatusError {
        code: 1,
        message: format!(
            "store {} has {} problem(s), listed above",
            store.root().display(),
            r.problems.len()
        ),
    }
    .into())
}
