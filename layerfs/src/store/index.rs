//! Tags: the store's `index.json`, an OCI image index whose manifest descriptors carry the
//! `org.opencontainers.image.ref.name` annotation (`name:tag`). Untagged (dangling) images are
//! entries without the annotation. index.json is only ever replaced atomically, under the store
//! lock, and is written last, after every blob it references.

use super::error::{IoContext, Result, StoreError};
use super::fsutil::{atomic_write, random_hex};
use super::lock::StoreLock;
use super::reference::normalize_tag;
use super::Store;
use crate::digest::Digest;
use oci_spec::image::{Descriptor, ImageIndex, ImageIndexBuilder, MediaType};
use std::collections::HashMap;

/// The annotation that names a tag in an OCI layout index.
pub const REF_NAME: &str = "org.opencontainers.image.ref.name";

/// An empty OCI image index.
pub(crate) fn empty_index() -> Result<ImageIndex> {
    Ok(ImageIndexBuilder::default()
        .schema_version(2u32)
        .media_type(MediaType::ImageIndex)
        .manifests(Vec::<Descriptor>::new())
        .build()?)
}

/// The manifest digest a descriptor points to.
pub fn descriptor_digest(desc: &Descriptor) -> Result<Digest> {
    Ok(Digest::parse(desc.digest().as_ref())?)
}

/// The tag name a descriptor carries, if any.
pub fn descriptor_ref_name(desc: &Descriptor) -> Option<&str> {
    desc.annotations()
        .as_ref()
        .and_then(|a| a.get(REF_NAME))
        .map(String::as_str)
}

impl Store {
    /// Reads index.json.
    pub fn read_index(&self) -> Result<ImageIndex> {
        let path = self.root().join("index.json");
        let data = std::fs::read(&path).at("read", &path)?;
        serde_json::from_slice(&data).map_err(|e| StoreError::json(path.display().to_string(), e))
    }

    /// Atomically replaces index.json; the caller must hold the store lock.
    pub fn write_index_locked(&self, _lock: &StoreLock, index: &ImageIndex) -> Result<()> {
        let data =
            serde_json::to_vec_pretty(index).map_err(|e| StoreError::json("index.json", e))?;
        let tmp = self
            .session_dir()
            .join(format!("index.json-{}", random_hex(6)));
        atomic_write(&tmp, &self.root().join("index.json"), &data)
    }

    /// Every tag with the manifest descriptor it points to, sorted by name.
    pub fn tags(&self) -> Result<Vec<(String, Descriptor)>> {
        let mut tags: Vec<(String, Descriptor)> = self
            .read_index()?
            .manifests()
            .iter()
            .filter_map(|d| descriptor_ref_name(d).map(|n| (n.to_string(), d.clone())))
            .collect();
        tags.sort_by(|a, b| a.0.cmp(&b.0));
        Ok(tags)
    }

    /// Every image in the index (tagged or dangling) with its tags, in index order.
    pub fn images_with_tags(&self) -> Result<Vec<(Descriptor, Vec<String>)>> {
        let mut order: Vec<String> = Vec::new();
        let mut by_digest: HashMap<String, (Descriptor, Vec<String>)> = HashMap::new();
        for d in self.read_index()?.manifests() {
            let key = d.digest().to_string();
            let entry = by_digest.entry(key.clone()).or_insert_with(|| {
                order.push(key);
                (d.clone(), Vec::new())
            });
            if let Some(name) = descriptor_ref_name(d) {
                entry.1.push(name.to_string());
            }
        }
        Ok(order
            .into_iter()
            .filter_map(|k| by_digest.remove(&k))
            .collect())
    }

    /// Points tag `name` at the manifest `desc` (replacing what it pointed to; that image stays
    /// as a dangling image if nothing else names it).
    pub fn set_tag(&self, name: &str, desc: &Descriptor) -> Result<()> {
        let lock = self.lock()?;
        self.set_tag_locked(&lock, name, desc)
    }

    /// [`Store::set_tag`] for a caller that already holds the store lock.
    pub fn set_tag_locked(&self, lock: &StoreLock, name: &str, desc: &Descriptor) -> Result<()> {
        let name = normalize_tag(name)?;
        let digest = descriptor_digest(desc)?;
        if !self.has_blob(&digest) {
            return Err(StoreError::BlobMissing(digest));
        }
        let mut index = self.read_index()?;
        let mut manifests: Vec<Descriptor> = index.manifests().clone();
        let old = manifests
            .iter()
            .position(|d| descriptor_ref_name(d) == Some(name.as_str()));
        if let Some(pos) = old {
            let old_desc = manifests.remove(pos);
            let old_digest = old_desc.digest().clone();
            if old_digest != *desc.digest() && !manifests.iter().any(|d| *d.digest() == old_digest)
            {
                // Keep the image that lost its last tag as a dangling image, like docker.
                manifests.push(strip_ref_name(&old_desc));
            }
        }
        // The tagged entry replaces a dangling entry of the same image.
        manifests.retain(|d| !(d.digest() == desc.digest() && descriptor_ref_name(d).is_none()));
        let mut tagged = desc.clone();
        let mut annotations = tagged.annotations().clone().unwrap_or_default();
        annotations.insert(REF_NAME.to_string(), name);
        tagged.set_annotations(Some(annotations));
        manifests.push(tagged);
        index.set_manifests(manifests);
        self.write_index_locked(lock, &index)
    }

    /// Records an image in the index without a tag (a dangling image), unless it is already there.
    pub fn add_untagged(&self, desc: &Descriptor) -> Result<()> {
        let lock = self.lock()?;
        let mut index = self.read_index()?;
        if index
            .manifests()
            .iter()
            .any(|d| d.digest() == desc.digest())
        {
            return Ok(());
        }
        let mut manifests = index.manifests().clone();
        manifests.push(strip_ref_name(desc));
        index.set_manifests(manifests);
        self.write_index_locked(&lock, &index)
    }

    /// Removes a tag; the image goes away with its last tag. Returns false if there was no such tag.
    pub fn remove_tag(&self, name: &str) -> Result<bool> {
        let name = normalize_tag(name)?;
        let lock = self.lock()?;
        let mut index = self.read_index()?;
        let mut manifests = index.manifests().clone();
        let before = manifests.len();
        manifests.retain(|d| descriptor_ref_name(d) != Some(name.as_str()));
        if manifests.len() == before {
            return Ok(false);
        }
        index.set_manifests(manifests);
        self.write_index_locked(&lock, &index)?;
        Ok(true)
    }

    /// Removes every index entry (tags and dangling entry) of a manifest. Returns the removed tags.
    pub fn remove_image_entries(&self, manifest: &Digest) -> Result<Vec<String>> {
        let lock = self.lock()?;
        let mut index = self.read_index()?;
        let mut removed = Vec::new();
        let manifests: Vec<Descriptor> = index
            .manifests()
            .iter()
            .filter(|d| {
                if d.digest().as_ref() == manifest.as_str() {
                    removed.extend(descriptor_ref_name(d).map(String::from));
                    false
                } else {
                    true
                }
            })
            .cloned()
            .collect();
        index.set_manifests(manifests);
        self.write_index_locked(&lock, &index)?;
        Ok(removed)
    }
}

/// A copy of the descriptor without the ref.name annotation.
fn strip_ref_name(desc: &Descriptor) -> Descriptor {
    let mut d = desc.clone();
    if let Some(mut a) = d.annotations().clone() {
        a.remove(REF_NAME);
        d.set_annotations(if a.is_empty() { None } else { Some(a) });
    }
    d
}
