//! `system prune`: removes dangling (untagged) images, then every blob and unpacked layer that
//! nothing references. Objects written or touched since the oldest other live process started
//! are kept, so a concurrent build's fresh blobs are not pulled from under it.

use super::error::{IoContext, Result};
use super::fsutil::remove_any;
use super::index::descriptor_ref_name;
use super::Store;
use crate::digest::Digest;
use std::fs;
use std::path::Path;
use std::time::SystemTime;

/// What `system prune` removed.
#[derive(Debug, Default, Clone)]
pub struct PruneReport {
    /// Manifest digests of dangling images removed from the index.
    pub images_removed: Vec<Digest>,
    /// Blobs deleted.
    pub blobs_removed: usize,
    /// Unpacked layers deleted.
    pub layers_removed: usize,
    /// Bytes freed (apparent file sizes).
    pub bytes_freed: u64,
}

impl Store {
    /// Prunes the store (see the module documentation).
    pub fn prune(&self) -> Result<PruneReport> {
        // Drops the records of image mounts that are gone (or dead: a killed FUSE server), so
        // they no longer keep their images; takes the lock itself, so before ours.
        self.image_mounts()?;
        let lock = self.lock()?;
        let cutoff: Option<SystemTime> = self.other_live_sessions()?.into_iter().min();
        let is_fresh = |path: &Path| match (
            cutoff,
            fs::symlink_metadata(path).and_then(|m| m.modified()),
        ) {
            (Some(c), Ok(m)) => m >= c,
            _ => false,
        };
        let mut report = PruneReport::default();
        // Dangling images.
        let mut index = self.read_index()?;
        let mut kept = Vec::new();
        for desc in index.manifests() {
            if descriptor_ref_name(desc).is_none() {
                if let Ok(d) = super::index::descriptor_digest(desc) {
                    if !is_fresh(&self.blob_path(&d)) {
                        report.images_removed.push(d);
                        continue;
                    }
                }
            }
            kept.push(desc.clone());
        }
        if !report.images_removed.is_empty() {
            index.set_manifests(kept);
            self.write_index_locked(&lock, &index)?;
        }
        let reachable = self.reachable(true)?;
        let blobs = self.root().join("blobs/sha256");
        for entry in fs::read_dir(&blobs).at("list", &blobs)? {
            let entry = entry.at("list", &blobs)?;
            let name = entry.file_name().to_string_lossy().into_owned();
            let keep = Digest::from_hex(&name)
                .map(|d| reachable.blobs.contains(&d))
                .unwrap_or(false);
            if keep || is_fresh(&entry.path()) {
                continue;
            }
            report.bytes_freed += entry.metadata().map(|m| m.len()).unwrap_or(0);
            remove_any(&entry.path())?;
            report.blobs_removed += 1;
        }
        let layers = self.root().join("layers");
        for entry in fs::read_dir(&layers).at("list", &layers)? {
            let entry = entry.at("list", &layers)?;
            let name = entry.file_name().to_string_lossy().into_owned();
            let keep = Digest::from_hex(&name)
                .map(|d| reachable.layers.contains(&d))
                .unwrap_or(false);
            if keep || is_fresh(&entry.path()) {
                continue;
            }
            report.bytes_freed += super::df::tree_size(&entry.path());
            remove_any(&entry.path())?;
            report.layers_removed += 1;
        }
        drop(lock);
        Ok(report)
    }
}
