//! The image model: an OCI manifest and its config, read from and written to the store, and
//! name/ID resolution (tags, full or short image IDs, manifest digests).

use crate::digest::Digest;
use crate::layer::LayerInfo;
use crate::store::{descriptor_digest, normalize_tag, Result, Store, StoreError};
use oci_spec::image::{
    Descriptor, ImageConfiguration, ImageManifest, ImageManifestBuilder, MediaType, RootFsBuilder,
};
use std::path::PathBuf;
use std::str::FromStr;

/// An image in the store: its manifest and config, with their digests.
#[derive(Debug, Clone)]
pub struct Image {
    /// Digest of the manifest blob.
    pub manifest_digest: Digest,
    /// Size of the manifest blob in bytes.
    pub manifest_size: u64,
    /// The manifest.
    pub manifest: ImageManifest,
    /// Digest of the config blob: the image ID.
    pub config_digest: Digest,
    /// The config.
    pub config: ImageConfiguration,
}

impl Image {
    /// The image ID (the config digest, as in docker).
    pub fn id(&self) -> &Digest {
        &self.config_digest
    }

    /// The layer diff IDs, lowest (base) first. Validated when the image was loaded.
    pub fn diff_ids(&self) -> Vec<Digest> {
        self.config
            .rootfs()
            .diff_ids()
            .iter()
            .filter_map(|d| Digest::parse(d).ok())
            .collect()
    }

    /// The layer blob digests, lowest (base) first. Validated when the image was loaded.
    pub fn layer_digests(&self) -> Vec<Digest> {
        self.manifest
            .layers()
            .iter()
            .filter_map(|d| descriptor_digest(d).ok())
            .collect()
    }

    /// A descriptor of the manifest (media type, digest, size), without annotations.
    pub fn descriptor(&self) -> Descriptor {
        let media_type = self
            .manifest
            .media_type()
            .clone()
            .unwrap_or(MediaType::ImageManifest);
        Descriptor::new(
            media_type,
            self.manifest_size,
            oci_digest(&self.manifest_digest),
        )
    }

    /// Total size of the layer blobs as stored (compressed).
    pub fn layers_size(&self) -> u64 {
        self.manifest.layers().iter().map(|l| l.size()).sum()
    }
}

/// Converts a validated digest to oci-spec's digest type.
pub fn oci_digest(d: &Digest) -> oci_spec::image::Digest {
    // A validated sha256 digest always parses; the fallback is never taken.
    oci_spec::image::Digest::from_str(d.as_str())
        .unwrap_or_else(|_| unreachable!("validated digest {d} rejected by oci-spec"))
}

/// A manifest's descriptor of a layer blob.
pub fn layer_descriptor(media_type: &str, size: u64, digest: &Digest) -> Descriptor {
    Descriptor::new(MediaType::from(media_type), size, oci_digest(digest))
}

/// Serialises `value` as compact JSON with every object's keys in sorted order, so that maps
/// kept in hash order (oci-spec's labels, annotations, ...) give the same bytes every time.
pub fn canonical_json(value: &impl serde::Serialize) -> serde_json::Result<Vec<u8>> {
    let mut value = serde_json::to_value(value)?;
    // A no-op unless some crate turns on serde_json's `preserve_order`; then it is needed.
    value.sort_all_objects();
    serde_json::to_vec(&value)
}

/// Parses and validates an image config against its manifest: every digest well formed and one
/// diff ID per layer.
fn image_from_parts(
    manifest_digest: Digest,
    manifest_size: u64,
    manifest: ImageManifest,
    config_digest: Digest,
    config_bytes: &[u8],
) -> Result<Image> {
    let config: ImageConfiguration = serde_json::from_slice(config_bytes)
        .map_err(|e| StoreError::json(format!("image config {config_digest}"), e))?;
    for l in manifest.layers() {
        descriptor_digest(l)?;
    }
    for d in config.rootfs().diff_ids() {
        Digest::parse(d)?;
    }
    if config.rootfs().diff_ids().len() != manifest.layers().len() {
        return Err(StoreError::Corrupt(format!(
            "image {manifest_digest} lists {} layers but its config {config_digest} lists {} diff IDs",
            manifest.layers().len(),
            config.rootfs().diff_ids().len()
        )));
    }
    Ok(Image {
        manifest_digest,
        manifest_size,
        manifest,
        config_digest,
        config,
    })
}

impl Store {
    /// Loads and validates the image whose manifest is `manifest_digest`.
    pub fn load_image(&self, manifest_digest: &Digest) -> Result<Image> {
        let data = self.read_blob(manifest_digest)?;
        let manifest: ImageManifest = serde_json::from_slice(&data)
            .map_err(|e| StoreError::json(format!("manifest {manifest_digest}"), e))?;
        let config_digest = descriptor_digest(manifest.config())?;
        let config_data = self.read_blob(&config_digest)?;
        image_from_parts(
            manifest_digest.clone(),
            data.len() as u64,
            manifest,
            config_digest,
            &config_data,
        )
    }

    /// Writes the config (with rootfs.diff_ids set from `layers`, object keys sorted so the same
    /// config always gives the same image ID) and an OCI manifest for it, records the image in
    /// the index as untagged (if not already there) and returns it. Every layer blob must already
    /// be in the store.
    pub fn write_image(&self, config: &ImageConfiguration, layers: &[LayerInfo]) -> Result<Image> {
        let mut config = config.clone();
        let rootfs = RootFsBuilder::default()
            .typ("layers")
            .diff_ids(
                layers
                    .iter()
                    .map(|l| l.diff_id.to_string())
                    .collect::<Vec<_>>(),
            )
            .build()?;
        config.set_rootfs(rootfs);
        for l in layers {
            if !self.has_blob(&l.digest) {
                return Err(StoreError::BlobMissing(l.digest.clone()));
            }
        }
        let config_bytes =
            canonical_json(&config).map_err(|e| StoreError::json("image config", e))?;
        let descriptors: Vec<Descriptor> = layers
            .iter()
            .map(|l| layer_descriptor(&l.media_type, l.size, &l.digest))
            .collect();
        self.write_image_raw(&config_bytes, descriptors)
    }

    /// Stores `config_bytes` as given and an OCI manifest over it and `layers`, records the image
    /// in the index as untagged (if not already there) and returns it.
    pub fn write_image_raw(&self, config_bytes: &[u8], layers: Vec<Descriptor>) -> Result<Image> {
        let image = self.put_image(config_bytes, layers)?;
        self.add_untagged(&image.descriptor())?;
        Ok(image)
    }

    /// Stores `config_bytes` as given and an OCI manifest over it and `layers` (their blobs are
    /// not checked), without recording the image in the index; returns it. The config must list
    /// one diff ID per layer.
    pub fn put_image(&self, config_bytes: &[u8], layers: Vec<Descriptor>) -> Result<Image> {
        let config_digest = self.put_blob(config_bytes)?;
        let manifest = ImageManifestBuilder::default()
            .schema_version(2u32)
            .media_type(MediaType::ImageManifest)
            .config(Descriptor::new(
                MediaType::ImageConfig,
                config_bytes.len() as u64,
                oci_digest(&config_digest),
            ))
            .layers(layers)
            .build()?;
        let manifest_bytes =
            serde_json::to_vec(&manifest).map_err(|e| StoreError::json("image manifest", e))?;
        let manifest_digest = self.put_blob(&manifest_bytes)?;
        image_from_parts(
            manifest_digest,
            manifest_bytes.len() as u64,
            manifest,
            config_digest,
            config_bytes,
        )
    }

    /// Every image in the index with its tags (dangling images have none), in index order.
    /// Entries whose manifest or config cannot be read are skipped with a warning (`system
    /// check` names them).
    pub fn list_images(&self) -> Result<Vec<(Image, Vec<String>)>> {
        let mut out = Vec::new();
        for (desc, tags) in self.images_with_tags()? {
            match descriptor_digest(&desc).and_then(|d| self.load_image(&d)) {
                Ok(image) => out.push((image, tags)),
                Err(e) => {
                    tracing::warn!(digest = %desc.digest(), error = %e, "skipping unreadable image")
                }
            }
        }
        Ok(out)
    }

    /// Finds an image by tag (`busybox` == `busybox:latest`), by full or unique short image ID
    /// (config digest, with or without `sha256:`), or by manifest digest.
    pub fn resolve_image(&self, name_or_id: &str) -> Result<Image> {
        let entries = self.images_with_tags()?;
        let not_found = || StoreError::ImageNotFound(name_or_id.to_string());
        // 1. A tag.
        if let Ok(tag) = normalize_tag(name_or_id) {
            for (desc, tags) in &entries {
                if tags.contains(&tag) {
                    return self.load_image(&descriptor_digest(desc)?);
                }
            }
        }
        // 2. An ID: full digest, bare hex or hex prefix.
        let hex = name_or_id.strip_prefix("sha256:").unwrap_or(name_or_id);
        if hex.is_empty()
            || hex.len() > 64
            || !hex
                .bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
        {
            return Err(not_found());
        }
        let mut matches: Vec<Image> = Vec::new();
        for (desc, _) in &entries {
            let Ok(manifest_digest) = descriptor_digest(desc) else {
                continue;
            };
            // An unreadable image cannot be the one asked for; `system check` reports it.
            let Ok(image) = self.load_image(&manifest_digest) else {
                continue;
            };
            let id_match = image.config_digest.hex().starts_with(hex)
                || (hex.len() == 64 && manifest_digest.hex() == hex);
            if id_match
                && !matches
                    .iter()
                    .any(|m| m.manifest_digest == image.manifest_digest)
            {
                matches.push(image);
            }
        }
        // Several manifests may share a config (same image, different layer compression):
        // any of them is the image.
        let distinct_ids: std::collections::BTreeSet<&Digest> =
            matches.iter().map(|m| &m.config_digest).collect();
        match distinct_ids.len() {
            0 => Err(not_found()),
            1 => Ok(matches.swap_remove(0)),
            _ => Err(StoreError::AmbiguousId(name_or_id.to_string())),
        }
    }

    /// Size of one layer: its unpacked size when unpacked, else its blob size.
    pub fn layer_size(&self, image: &Image, index: usize) -> u64 {
        let unpacked = image
            .diff_ids()
            .get(index)
            .map(|d| self.layer_dir(d))
            .filter(|d| d.is_dir());
        match unpacked {
            Some(dir) => crate::store::tree_size(&dir),
            None => image.manifest.layers().get(index).map_or(0, |l| l.size()),
        }
    }

    /// Size of an image as docker reports it: the sum of its layers' unpacked sizes (blob
    /// sizes for layers not unpacked).
    pub fn image_size(&self, image: &Image) -> u64 {
        (0..image.manifest.layers().len())
            .map(|i| self.layer_size(image, i))
            .sum()
    }

    /// The unpacked layer directories of an image, lowest (base) first; layers that are not
    /// unpacked yet are unpacked from their blobs.
    pub fn image_layer_dirs(&self, image: &Image) -> Result<Vec<PathBuf>> {
        let mut dirs = Vec::new();
        for (blob, diff_id) in image.layer_digests().iter().zip(image.diff_ids()) {
            if !self.has_layer(&diff_id) {
                self.unpack_layer(blob, &diff_id)?;
            }
            dirs.push(self.layer_dir(&diff_id));
        }
        Ok(dirs)
    }
}

/// Formats a time as RFC 3339 UTC with nanoseconds (`2024-01-02T03:04:05.123456789Z`), as docker
/// writes image creation times.
pub fn rfc3339(t: std::time::SystemTime) -> String {
    let d = t.duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
    let secs = d.as_secs() as i64;
    let (days, rem) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    // Civil-from-days (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{:09}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60,
        d.subsec_nanos()
    )
}

/// Parses the RFC 3339 times docker and rbuild write (`YYYY-MM-DDTHH:MM:SS[.frac](Z|±HH:MM)`)
/// into seconds since the epoch.
pub fn parse_rfc3339(s: &str) -> Option<i64> {
    let num = |r: std::ops::Range<usize>| s.get(r)?.parse::<i64>().ok();
    let (year, month, day) = (num(0..4)?, num(5..7)?, num(8..10)?);
    let (hour, min, sec) = (num(11..13)?, num(14..16)?, num(17..19)?);
    let tail = s.get(19..)?;
    let tail = tail.trim_start_matches(|c: char| c == '.' || c.is_ascii_digit());
    let offset = match tail {
        "Z" | "z" | "" => 0,
        t if t.len() == 6 => {
            let sign = if t.starts_with('-') { -1 } else { 1 };
            sign * (t.get(1..3)?.parse::<i64>().ok()? * 3600
                + t.get(4..6)?.parse::<i64>().ok()? * 60)
        }
        _ => return None,
    };
    // Days-from-civil.
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (month + 9) % 12;
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    Some(days * 86_400 + hour * 3600 + min * 60 + sec - offset)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc3339_round_trips() {
        let t = std::time::UNIX_EPOCH + std::time::Duration::new(1_700_000_000, 5);
        let s = rfc3339(t);
        assert_eq!(s, "2023-11-14T22:13:20.000000005Z");
        assert_eq!(parse_rfc3339(&s), Some(1_700_000_000));
        assert_eq!(
            parse_rfc3339("2023-11-14T23:13:20+01:00"),
            Some(1_700_000_000)
        );
        assert_eq!(parse_rfc3339("garbage"), None);
    }
}
