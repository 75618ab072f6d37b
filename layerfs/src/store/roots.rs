//! Reachability: which blobs and unpacked layers the store still needs (shared by check, prune
//! and df).

use super::error::Result;
use super::index::descriptor_digest;
use super::Store;
use crate::digest::Digest;
use std::collections::BTreeSet;
use std::path::Path;

/// Blobs and layers reachable from a set of roots.
#[derive(Debug, Default, Clone)]
pub(crate) struct Reachable {
    /// Blob digests (manifests, configs, layers).
    pub blobs: BTreeSet<Digest>,
    /// Layer diff IDs.
    pub layers: BTreeSet<Digest>,
}

impl Store {
    /// Everything reachable from index.json (tags and dangling images), and from any digest
    /// mentioned in the JSON files of cache/, containers/ and mounts/ (other components' records).
    pub(crate) fn reachable(&self, include_dangling: bool) -> Result<Reachable> {
        self.reachable_from(include_dangling, &["cache", "containers", "mounts"])
    }

    /// Diff IDs of the layers that images (tagged or dangling), containers and mounts need,
    /// leaving out what only the build cache mentions: the layers a build-cache prune can let go
    /// of are those outside this set.
    pub fn layers_held_by_images(&self) -> Result<BTreeSet<Digest>> {
        Ok(self.reachable_from(true, &["containers", "mounts"])?.layers)
    }

    /// Everything reachable from index.json and from digests in the JSON files of `record_dirs`.
    fn reachable_from(&self, include_dangling: bool, record_dirs: &[&str]) -> Result<Reachable> {
        let mut r = Reachable::default();
        for desc in self.read_index()?.manifests() {
            if !include_dangling && super::index::descriptor_ref_name(desc).is_none() {
                continue;
            }
            let digest = descriptor_digest(desc)?;
            self.mark_manifest(&digest, &mut r);
        }
        let mut by_config: Option<Vec<(Digest, Digest)>> = None;
        for dir in record_dirs {
            for digest in digests_in_json_files(&self.root().join(dir)) {
                if self.has_blob(&digest) && !self.mark_manifest(&digest, &mut r) {
                    r.blobs.insert(digest.clone());
                    // An image ID (config digest): keep every manifest built on that config,
                    // even when no tag names it any more.
                    let map = by_config.get_or_insert_with(|| self.manifests_by_config());
                    for (config, manifest) in map.iter() {
                        if *config == digest {
                            self.mark_manifest(&manifest.clone(), &mut r);
                        }
                    }
                }
                if self.has_layer(&digest) {
                    r.layers.insert(digest);
                }
            }
        }
        Ok(r)
    }

    /// Names of the containers/ entries whose JSON records mention the image (its ID or
    /// manifest digest): containers created from it.
    pub fn containers_using(&self, image: &crate::image::Image) -> Vec<String> {
        let dir = self.root().join("containers");
        let mut users = Vec::new();
        for entry in std::fs::read_dir(&dir).into_iter().flatten().flatten() {
            if !entry.path().is_dir() {
                continue;
            }
            let mentioned = digests_in_json_files(&entry.path())
                .iter()
                .any(|d| *d == image.config_digest || *d == image.manifest_digest);
            if mentioned {
                users.push(entry.file_name().to_string_lossy().into_owned());
            }
        }
        users
    }

    /// (config digest, manifest digest) of every image manifest blob in the store.
    fn manifests_by_config(&self) -> Vec<(Digest, Digest)> {
        self.manifest_blobs()
            .filter_map(|(digest, m)| Some((descriptor_digest(m.config()).ok()?, digest)))
            .collect()
    }

    /// Every blob of the store that is an image manifest (at most 1 MiB and parses as one),
    /// with its digest; unreadable blobs are skipped.
    pub(crate) fn manifest_blobs(
        &self,
    ) -> impl Iterator<Item = (Digest, oci_spec::image::ImageManifest)> {
        let dir = self.root().join("blobs/sha256");
        std::fs::read_dir(dir)
            .into_iter()
            .flatten()
            .flatten()
            .filter_map(|entry| {
                let digest = Digest::from_hex(&entry.file_name().to_string_lossy()).ok()?;
                if !entry.metadata().is_ok_and(|m| m.len() <= 1 << 20) {
                    return None;
                }
                let data = std::fs::read(entry.path()).ok()?;
                let manifest = serde_json::from_slice(&data).ok()?;
                Some((digest, manifest))
            })
    }

    /// Marks a manifest and what it references; false when the blob is not a readable image.
    fn mark_manifest(&self, digest: &Digest, r: &mut Reachable) -> bool {
        r.blobs.insert(digest.clone());
        let Ok(image) = self.load_image(digest) else {
            return false;
        };
        r.blobs.insert(image.config_digest.clone());
        r.blobs.extend(image.layer_digests());
        r.layers.extend(image.diff_ids());
        true
    }
}

/// Every `sha256:<hex>` found in `*.json` files below `dir` (not descending into container
/// root filesystems).
fn digests_in_json_files(dir: &Path) -> Vec<Digest> {
    let mut out = Vec::new();
    let walker = walkdir::WalkDir::new(dir)
        .max_depth(4)
        .into_iter()
        .filter_entry(|e| {
            !(e.file_type().is_dir()
                && matches!(
                    e.file_name().to_str(),
                    Some("upper" | "work" | "merged" | "rootfs")
                ))
        });
    for entry in walker.flatten() {
        if !entry.file_type().is_file()
            || entry.path().extension().and_then(|e| e.to_str()) != Some("json")
        {
            continue;
        }
        let Ok(text) = std::fs::read_to_string(entry.path()) else {
            continue;
        };
        let mut rest = text.as_str();
        while let Some(pos) = rest.find("sha256:") {
            let candidate = rest[pos..].get(..71).unwrap_or("");
            if let Ok(d) = Digest::parse(candidate) {
                out.push(d);
            }
            rest = &rest[pos + 7..];
        }
    }
    out
}
