//! `load`: reads a docker-archive (manifest.json; blobs/sha256 or legacy `<id>/layer.tar`
//! layouts) or an OCI archive (index.json + blobs) from a stream, optionally gzip or zstd
//! compressed. Every `blobs/sha256/<hex>` entry is verified against its name as it is ingested,
//! and every layer is unpacked and checked against the config's diff IDs before any tag is set,
//! so a corrupt archive never leaves a tag behind.

use super::{io_err, ArchiveError, Result};
use crate::digest::Digest;
use crate::image::{layer_descriptor, Image};
use crate::layer::{MEDIA_TYPE_TAR, MEDIA_TYPE_TAR_GZIP, MEDIA_TYPE_TAR_ZSTD};
use crate::store::{descriptor_digest, normalize_tag, Store, REF_NAME};
use oci_spec::image::{Descriptor, ImageIndex, MediaType};
use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read};
use std::path::{Component, Path};

/// Largest non-blob file kept in memory (manifest.json, legacy configs...).
const MAX_SMALL_FILE: u64 = 16 << 20;

/// An image that was loaded, with the tags that were set for it.
#[derive(Debug, Clone)]
pub struct LoadedImage {
    /// The image.
    pub image: Image,
    /// Tags set (normalised `name:tag`); empty when the archive named none.
    pub tags: Vec<String>,
}

/// Symlink hops followed when resolving an archive path.
const MAX_LINK_HOPS: usize = 16;

/// What was found in the archive: small files by path, large ones ingested as blobs, and
/// symlinks (`docker save` before Docker 25 writes a layer shared by several images once and
/// links the others to it: `<id>/layer.tar -> ../<other id>/layer.tar`) by path, with their
/// targets resolved to archive paths.
#[derive(Default)]
struct Contents {
    small: HashMap<String, Vec<u8>>,
    blobs: HashMap<String, (Digest, u64)>,
    links: HashMap<String, String>,
}

impl Contents {
    /// The archive path `path` names after following symlinks inside the archive.
    fn resolve(&self, path: &str) -> String {
        let mut path = clean(path);
        for _ in 0..MAX_LINK_HOPS {
            match self.links.get(&path) {
                Some(target) => path = target.clone(),
                None => break,
            }
        }
        path
    }

    /// The digest of the file at `path`, storing it as a blob if it was kept in memory.
    fn blob_of(&self, store: &Store, path: &str) -> Result<(Digest, u64)> {
        let path = self.resolve(path);
        if let Some(b) = self.blobs.get(&path) {
            return Ok(b.clone());
        }
        if let Some(data) = self.small.get(&path) {
            return Ok((store.put_blob(data)?, data.len() as u64));
        }
        Err(ArchiveError::Invalid(format!(
            "{path} is referenced but not in the archive"
        )))
    }

    fn bytes_of(&self, store: &Store, path: &str) -> Result<Vec<u8>> {
        let path = self.resolve(path);
        if let Some(data) = self.small.get(&path) {
            return Ok(data.clone());
        }
        if let Some((d, _)) = self.blobs.get(&path) {
            return Ok(store.read_blob(d)?);
        }
        Err(ArchiveError::Invalid(format!(
            "{path} is referenced but not in the archive"
        )))
    }
}

/// Loads every image in the archive read from `input`.
pub fn load_archive(store: &Store, input: impl Read) -> Result<Vec<LoadedImage>> {
    let contents = read_contents(store, decompress(input)?)?;
    let images = if contents.small.contains_key("manifest.json") {
        load_docker(store, &contents)?
    } else if contents.small.contains_key("index.json") {
        load_oci(store, &contents)?
    } else {
        return Err(ArchiveError::Invalid(
            "neither manifest.json (docker-archive) nor index.json (OCI layout) found".into(),
        ));
    };
    // Unpack (and so verify) every layer before any tag is set.
    for (image, _) in &images {
        store.image_layer_dirs(image)?;
    }
    let mut loaded = Vec::new();
    for (image, names) in images {
        if names.is_empty() {
            store.add_untagged(&image.descriptor())?;
        }
        let mut tags = Vec::new();
        for name in names {
            store.set_tag(&name, &image.descriptor())?;
            tags.push(name);
        }
        loaded.push(LoadedImage { image, tags });
    }
    Ok(loaded)
}

/// Detects gzip or zstd compression of the whole archive.
fn decompress<'a>(input: impl Read + 'a) -> Result<Box<dyn Read + 'a>> {
    let mut reader = BufReader::with_capacity(1 << 20, input);
    let head = reader.fill_buf().map_err(io_err("reading the archive"))?;
    if head.starts_with(&[0x1f, 0x8b]) {
        Ok(Box::new(flate2::bufread::MultiGzDecoder::new(reader)))
    } else if head.starts_with(&[0x28, 0xb5, 0x2f, 0xfd]) {
        Ok(Box::new(
            zstd::stream::read::Decoder::with_buffer(reader)
                .map_err(io_err("reading the archive"))?,
        ))
    } else {
        Ok(Box::new(reader))
    }
}

/// The archive path a relative symlink at `link` points to, or None when the target is absolute
/// or climbs out of the archive (such a link is ignored, so a reference to it fails as missing).
fn link_target(link: &str, target: &Path) -> Option<String> {
    let mut parts: Vec<String> = link.split('/').map(str::to_string).collect();
    parts.pop();
    for c in target.components() {
        match c {
            Component::Normal(p) => parts.push(p.to_string_lossy().into_owned()),
            Component::CurDir => {}
            Component::ParentDir => {
                parts.pop()?;
            }
            Component::RootDir | Component::Prefix(_) => return None,
        }
    }
    Some(parts.join("/"))
}

/// Normalises an archive path (`./a//b` -> `a/b`); `..` and absolute paths are refused later.
fn clean(path: &str) -> String {
    let mut parts = Vec::new();
    for c in Path::new(path).components() {
        if let Component::Normal(p) = c {
            parts.push(p.to_string_lossy().into_owned());
        }
    }
    parts.join("/")
}

fn read_contents(store: &Store, input: impl Read) -> Result<Contents> {
    let mut contents = Contents::default();
    let mut archive = tar::Archive::new(input);
    for entry in archive.entries().map_err(io_err("reading the archive"))? {
        let mut entry = entry.map_err(io_err("reading the archive"))?;
        let kind = entry.header().entry_type();
        if !kind.is_file() && !kind.is_symlink() {
            continue;
        }
        let raw = entry
            .path()
            .map_err(io_err("reading an archive entry name"))?
            .to_string_lossy()
            .into_owned();
        if Path::new(&raw)
            .components()
            .any(|c| matches!(c, Component::ParentDir))
        {
            return Err(ArchiveError::Invalid(format!(
                "entry {raw:?} escapes the archive"
            )));
        }
        let path = clean(&raw);
        if kind.is_symlink() {
            let target = entry
                .link_name()
                .map_err(io_err(format!("reading the target of {raw}")))?;
            if let Some(resolved) = target.and_then(|t| link_target(&path, &t)) {
                contents.links.insert(path, resolved);
            }
            continue;
        }
        let size = entry
            .header()
            .size()
            .map_err(io_err("reading an archive entry size"))?;
        if let Some(hex) = path.strip_prefix("blobs/sha256/") {
            let expected = Digest::from_hex(hex).map_err(|_| {
                ArchiveError::Invalid(format!("{path}: blob name is not a sha256 digest"))
            })?;
            let committed = if store.has_blob(&expected) {
                std::io::copy(&mut entry, &mut std::io::sink())
                    .map_err(io_err(format!("reading {path}")))?;
                (expected, size)
            } else {
                store.put_blob_from(&mut entry, Some(&expected), Some(size))?
            };
            contents.blobs.insert(path, committed);
        } else if size <= MAX_SMALL_FILE && is_metadata_file(&path) {
            let mut data = Vec::with_capacity(size as usize);
            entry
                .read_to_end(&mut data)
                .map_err(io_err(format!("reading {path}")))?;
            contents.small.insert(path, data);
        } else {
            let committed = store.put_blob_from(&mut entry, None, Some(size))?;
            contents.blobs.insert(path, committed);
        }
    }
    Ok(contents)
}

/// JSON documents and layout files are read into memory; anything else (layer tars) is stored
/// as a blob as it streams by.
fn is_metadata_file(path: &str) -> bool {
    path.ends_with(".json") || path == "repositories" || path == "oci-layout"
}

/// The layer media type of a stored blob, from its first bytes.
fn sniff_layer_media_type(store: &Store, digest: &Digest) -> Result<&'static str> {
    let mut head = [0u8; 4];
    let mut f = store.open_blob(digest)?;
    let n = f
        .read(&mut head)
        .map_err(io_err(format!("reading blob {digest}")))?;
    Ok(if head[..n].starts_with(&[0x1f, 0x8b]) {
        MEDIA_TYPE_TAR_GZIP
    } else if head[..n].starts_with(&[0x28, 0xb5, 0x2f, 0xfd]) {
        MEDIA_TYPE_TAR_ZSTD
    } else {
        MEDIA_TYPE_TAR
    })
}

#[derive(serde::Deserialize)]
#[serde(rename_all = "PascalCase")]
struct DockerManifestEntry {
    config: String,
    #[serde(default)]
    repo_tags: Option<Vec<String>>,
    layers: Vec<String>,
}

/// docker-archive: each manifest.json entry becomes an OCI manifest over the same blobs; the
/// config bytes are kept, so the image ID is the one docker shows.
fn load_docker(store: &Store, contents: &Contents) -> Result<Vec<(Image, Vec<String>)>> {
    let entries: Vec<DockerManifestEntry> =
        serde_json::from_slice(&contents.small["manifest.json"])
            .map_err(|e| ArchiveError::Invalid(format!("manifest.json: {e}")))?;
    let mut images = Vec::new();
    for entry in entries {
        let config_bytes = contents.bytes_of(store, &entry.config)?;
        let mut layers = Vec::new();
        for l in &entry.layers {
            let (digest, size) = contents.blob_of(store, l)?;
            let media_type = sniff_layer_media_type(store, &digest)?;
            layers.push(layer_descriptor(media_type, size, &digest));
        }
        let image = store.put_image(&config_bytes, layers)?;
        let mut names = Vec::new();
        for t in entry.repo_tags.unwrap_or_default() {
            names.push(normalize_tag(&t)?);
        }
        images.push((image, names));
    }
    Ok(images)
}

/// OCI archive: the manifests listed in index.json (nested indexes are followed) with their
/// `io.containerd.image.name` or `org.opencontainers.image.ref.name` as the tag.
fn load_oci(store: &Store, contents: &Contents) -> Result<Vec<(Image, Vec<String>)>> {
    let index: ImageIndex = serde_json::from_slice(&contents.small["index.json"])
        .map_err(|e| ArchiveError::Invalid(format!("index.json: {e}")))?;
    let mut images: Vec<(Image, Vec<String>)> = Vec::new();
    let mut stack: Vec<(Descriptor, Option<String>)> = index
        .manifests()
        .iter()
        .map(|d| (d.clone(), name_of(d)))
        .collect();
    stack.reverse();
    while let Some((desc, name)) = stack.pop() {
        let digest = descriptor_digest(&desc)?;
        if !store.has_blob(&digest) {
            return Err(ArchiveError::Invalid(format!(
                "manifest {digest} listed in index.json is not in the archive"
            )));
        }
        if *desc.media_type() == MediaType::ImageIndex {
            let nested: ImageIndex = serde_json::from_slice(&store.read_blob(&digest)?)
                .map_err(|e| ArchiveError::Invalid(format!("index {digest}: {e}")))?;
            let platform_ok = |d: &Descriptor| {
                d.platform().as_ref().is_none_or(|p| {
                    p.os().to_string() == "linux"
                        && p.architecture().to_string()
                            == oci_spec::image::Arch::default().to_string()
                })
            };
            if let Some(d) = nested.manifests().iter().find(|d| platform_ok(d)) {
                stack.push((d.clone(), name.clone()));
            }
            continue;
        }
        let image = store.load_image(&digest)?;
        let names: Vec<String> = name.into_iter().collect();
        match images
            .iter_mut()
            .find(|(i, _)| i.manifest_digest == image.manifest_digest)
        {
            Some((_, existing)) => existing.extend(names),
            None => images.push((image, names)),
        }
    }
    Ok(images)
}

fn name_of(desc: &Descriptor) -> Option<String> {
    let a = desc.annotations().as_ref()?;
    let full = a
        .get("io.containerd.image.name")
        .or_else(|| a.get(REF_NAME))?;
    normalize_tag(full).ok()
}

#[cfg(test)]
mod tests {
    use super::link_target;
    use std::path::Path;

    #[test]
    fn link_targets_resolve_inside_the_archive_only() {
        // What `docker save` writes for a layer shared by two images.
        assert_eq!(
            link_target("aaa/layer.tar", Path::new("../bbb/layer.tar")).as_deref(),
            Some("bbb/layer.tar")
        );
        assert_eq!(
            link_target("a/b/l", Path::new("./c/../d")).as_deref(),
            Some("a/b/d")
        );
        assert_eq!(link_target("a/l", Path::new("../../etc/passwd")), None);
        assert_eq!(link_target("a/l", Path::new("/etc/passwd")), None);
    }
}
