//! `system df`: disk usage of images, unpacked layers, containers, build cache and tmp.

use super::error::Result;
use super::Store;
use std::collections::BTreeSet;
use std::path::Path;

/// Disk usage by category (apparent sizes in bytes).
#[derive(Debug, Default, Clone)]
pub struct DiskUsage {
    /// Images in the index.
    pub images: usize,
    /// Images with at least one tag.
    pub images_tagged: usize,
    /// Bytes of blobs plus unpacked layers.
    pub images_bytes: u64,
    /// Bytes of blobs and layers that prune would free.
    pub images_reclaimable: u64,
    /// Container directories.
    pub containers: usize,
    /// Bytes below containers/.
    pub containers_bytes: u64,
    /// Bytes below cache/.
    pub cache_bytes: u64,
    /// Bytes below tmp/ (work in progress).
    pub tmp_bytes: u64,
}

impl Store {
    /// Measures disk usage.
    pub fn disk_usage(&self) -> Result<DiskUsage> {
        let index = self.read_index()?;
        let digests: BTreeSet<String> = index
            .manifests()
            .iter()
            .map(|d| d.digest().to_string())
            .collect();
        let tagged: BTreeSet<String> = index
            .manifests()
            .iter()
            .filter(|d| super::index::descriptor_ref_name(d).is_some())
            .map(|d| d.digest().to_string())
            .collect();
        let tagged_reach = self.reachable(false)?;
        let mut usage = DiskUsage {
            images: digests.len(),
            images_tagged: tagged.len(),
            ..DiskUsage::default()
        };
        for (dir, is_layer) in [("blobs/sha256", false), ("layers", true)] {
            let path = self.root().join(dir);
            for entry in std::fs::read_dir(&path).into_iter().flatten().flatten() {
                let size = tree_size(&entry.path());
                usage.images_bytes += size;
                let name = entry.file_name().to_string_lossy().into_owned();
                let needed = crate::digest::Digest::from_hex(&name).is_ok_and(|d| {
                    if is_layer {
                        tagged_reach.layers.contains(&d)
                    } else {
                        tagged_reach.blobs.contains(&d)
                    }
                });
                if !needed {
                    usage.images_reclaimable += size;
                }
            }
        }
        let containers = self.root().join("containers");
        usage.containers = std::fs::read_dir(&containers)
            .map(|r| r.flatten().filter(|e| e.path().is_dir()).count())
            .unwrap_or(0);
        usage.containers_bytes = tree_size(&containers);
        usage.cache_bytes = tree_size(&self.root().join("cache"));
        usage.tmp_bytes = tree_size(&self.root().join("tmp"));
        Ok(usage)
    }
}

/// Apparent size of a file or directory tree (files counted once per inode).
pub(crate) fn tree_size(path: &Path) -> u64 {
    use std::os::unix::fs::MetadataExt;
    let mut seen = BTreeSet::new();
    let mut total = 0;
    for entry in walkdir::WalkDir::new(path).into_iter().flatten() {
        if let Ok(meta) = entry.metadata() {
            if meta.is_file() && (meta.nlink() == 1 || seen.insert((meta.dev(), meta.ino()))) {
                total += meta.len();
            }
        }
    }
    total
}
