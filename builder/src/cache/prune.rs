//! Build-cache clean-up (`rbuild builder prune`, and the dangling part of `system prune`).

use super::{shared::layers_at_hand, CacheError, CacheIndex, CacheRecord};
use crate::exec::image::ImageState;
use rbuild_layerfs::{Digest, Store};
use std::fs;
use std::io;
use std::path::Path;

/// What a build-cache prune removed.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct CachePruneReport {
    /// Cache records removed.
    pub records_removed: u64,
    /// Other files removed (stat caches, build logs; only with `all`).
    pub files_removed: u64,
    /// Bytes those files took.
    pub bytes_freed: u64,
}

/// Removes build-cache records of the store at `store`: with `all`, every record, every
/// context stat cache, every build log and every `RUN --mount=type=cache` directory (the next
/// build runs every step again, with empty cache mounts); otherwise only
/// dangling records: those needing a layer that no image, container or mount of the store holds
/// (intermediate steps, images since removed) or that is gone already. Records of steps whose
/// layers images still hold cost nothing and stay. A later store prune frees the layers that only
/// removed records kept. Take the store lock around it when builds may run concurrently: a record
/// is replaced atomically, so a concurrent build sees either the record or a miss.
pub fn prune_build_cache(store: &Store, all: bool) -> Result<CachePruneReport, CacheError> {
    let cache_dir = store.root().join("cache");
    let index = CacheIndex::new(&cache_dir);
    let held = store.layers_held_by_images()?;
    let mut report = CachePruneReport::default();
    for entry in list(index.dir())? {
        let path = entry.path();
        let name = entry.file_name();
        let is_record = name.to_string_lossy().ends_with(".json");
        // Non-record files are records being written by a running build: left alone unless
        // everything goes.
        let remove = all
            || is_record
                && !fs::read(&path)
                    .ok()
                    .and_then(|data| serde_json::from_slice::<CacheRecord>(&data).ok())
                    .is_some_and(|rec| {
                        layers_at_hand(store, None, &rec)
                            && record_diff_ids(&rec).iter().all(|d| held.contains(d))
                    });
        if remove {
            report.bytes_freed += remove_file(&path)?;
            report.records_removed += u64::from(is_record);
            report.files_removed += u64::from(!is_record);
        }
    }
    if all {
        for sub in ["statcache", "logs"] {
            for entry in list(&cache_dir.join(sub))? {
                report.bytes_freed += remove_file(&entry.path())?;
                report.files_removed += 1;
            }
        }
        // RUN --mount=type=cache directories, as `docker builder prune --all` removes them,
        // except those a running step uses (it holds their lock; see exec::run_mount_setup):
        // BuildKit prunes no cache mount in use either.
        for entry in list(&cache_dir.join("run-mounts"))? {
            let lock = fs::File::open(entry.path().join("lock")).ok();
            if let Some(lock) = &lock {
                let op = rustix::fs::FlockOperation::NonBlockingLockExclusive;
                if rustix::fs::flock(lock, op).is_err() {
                    continue;
                }
            }
            for file in walkdir::WalkDir::new(entry.path()).into_iter().flatten() {
                if !file.file_type().is_dir() {
                    report.bytes_freed += file.metadata().map_or(0, |m| m.len());
                    report.files_removed += 1;
                }
            }
            rbuild_layerfs::rootless::remove_dir_all(&entry.path()).map_err(|source| {
                CacheError::Io {
                    path: entry.path(),
                    source,
                }
            })?;
        }
    }
    Ok(report)
}

/// Diff IDs of every layer a record refers to (its own and its image state's).
fn record_diff_ids(rec: &CacheRecord) -> Vec<Digest> {
    let state_layers = serde_json::from_value::<ImageState>(rec.state.clone())
        .map(|s| s.layers.into_iter().map(|l| l.diff_id).collect::<Vec<_>>())
        .unwrap_or_default();
    rec.layer
        .iter()
        .map(|l| l.diff_id.clone())
        .chain(state_layers)
        .collect()
}

/// The entries of `dir` (none when it does not exist).
fn list(dir: &Path) -> Result<Vec<fs::DirEntry>, CacheError> {
    let io_err = |source| CacheError::Io {
        path: dir.to_path_buf(),
        source,
    };
    match fs::read_dir(dir) {
        Ok(rd) => rd.collect::<io::Result<Vec<_>>>().map_err(io_err),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(Vec::new()),
        Err(e) => Err(io_err(e)),
    }
}

/// Removes one file, returning its size (0 when it was already gone).
fn remove_file(path: &Path) -> Result<u64, CacheError> {
    let size = fs::symlink_metadata(path).map_or(0, |m| m.len());
    match fs::remove_file(path) {
        Ok(()) => Ok(size),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(0),
        Err(source) => Err(CacheError::Io {
            path: path.to_path_buf(),
            source,
        }),
    }
}
