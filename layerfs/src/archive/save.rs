//! `save`: one tar that is a docker-archive and an OCI image layout at the same time.

use super::{io_err, Result};
use crate::image::Image;
use crate::store::{Store, REF_NAME};
use oci_spec::image::{Descriptor, ImageIndexBuilder, MediaType};
use std::collections::{BTreeSet, HashMap};
use std::io::Write;

/// One image to save and the names (normalised `name:tag`) to record for it.
#[derive(Debug, Clone)]
pub struct SaveRequest {
    /// The image.
    pub image: Image,
    /// Its names in the archive (may be empty: saved by ID).
    pub tags: Vec<String>,
}

/// Writes the images as a docker-archive + OCI layout tar to `out`.
pub fn save_images(store: &Store, requests: &[SaveRequest], out: impl Write) -> Result<()> {
    let mut tar = tar::Builder::new(out);
    tar.mode(tar::HeaderMode::Deterministic);
    append_dir(&mut tar, "blobs/")?;
    append_dir(&mut tar, "blobs/sha256/")?;
    append_bytes(&mut tar, "oci-layout", br#"{"imageLayoutVersion":"1.0.0"}"#)?;
    let mut written = BTreeSet::new();
    let mut docker_manifest = Vec::new();
    let mut index_entries: Vec<Descriptor> = Vec::new();
    for req in requests {
        let image = &req.image;
        let mut blobs = vec![image.manifest_digest.clone(), image.config_digest.clone()];
        blobs.extend(image.layer_digests());
        for digest in blobs {
            if !written.insert(digest.clone()) {
                continue;
            }
            let path = store.blob_path(&digest);
            let mut file = store.open_blob(&digest)?;
            let len = file
                .metadata()
                .map_err(io_err(format!("stat {}", path.display())))?
                .len();
            let mut header = tar::Header::new_gnu();
            header.set_entry_type(tar::EntryType::Regular);
            header.set_size(len);
            header.set_mode(0o644);
            header.set_mtime(0);
            tar.append_data(
                &mut header,
                format!("blobs/sha256/{}", digest.hex()),
                &mut file,
            )
            .map_err(io_err(format!("writing blob {digest} to the archive")))?;
        }
        docker_manifest.push(serde_json::json!({
            "Config": format!("blobs/sha256/{}", image.config_digest.hex()),
            "RepoTags": req.tags,
            "Layers": image
                .layer_digests()
                .iter()
                .map(|d| format!("blobs/sha256/{}", d.hex()))
                .collect::<Vec<_>>(),
        }));
        let names: Vec<Option<&String>> = if req.tags.is_empty() {
            vec![None]
        } else {
            req.tags.iter().map(Some).collect()
        };
        for name in names {
            let mut desc = image.descriptor();
            if let Some(name) = name {
                let mut a = HashMap::new();
                a.insert(REF_NAME.to_string(), name.clone());
                a.insert(
                    "io.containerd.image.name".to_string(),
                    containerd_name(name),
                );
                desc.set_annotations(Some(a));
            }
            index_entries.push(desc);
        }
    }
    let index = ImageIndexBuilder::default()
        .schema_version(2u32)
        .media_type(MediaType::ImageIndex)
        .manifests(index_entries)
        .build()
        .map_err(crate::store::StoreError::from)?;
    let index_json = serde_json::to_vec(&index)
        .map_err(|e| super::ArchiveError::Invalid(format!("serialising index.json: {e}")))?;
    append_bytes(&mut tar, "index.json", &index_json)?;
    let manifest_json = serde_json::to_vec(&docker_manifest)
        .map_err(|e| super::ArchiveError::Invalid(format!("serialising manifest.json: {e}")))?;
    append_bytes(&mut tar, "manifest.json", &manifest_json)?;
    let mut out = tar.into_inner().map_err(io_err("finishing the archive"))?;
    out.flush().map_err(io_err("finishing the archive"))?;
    Ok(())
}

/// The fully qualified name containerd and docker record (`docker.io/library/busybox:latest`).
fn containerd_name(name: &str) -> String {
    let first = name.split('/').next().unwrap_or("");
    let has_host =
        name.contains('/') && (first.contains('.') || first.contains(':') || first == "localhost");
    if has_host {
        name.to_string()
    } else if name.contains('/') {
        format!("docker.io/{name}")
    } else {
        format!("docker.io/library/{name}")
    }
}

fn append_bytes<W: Write>(tar: &mut tar::Builder<W>, path: &str, data: &[u8]) -> Result<()> {
    let mut header = tar::Header::new_gnu();
    header.set_entry_type(tar::EntryType::Regular);
    header.set_size(data.len() as u64);
    header.set_mode(0o644);
    header.set_mtime(0);
    tar.append_data(&mut header, path, data)
        .map_err(io_err(format!("writing {path} to the archive")))
}

fn append_dir<W: Write>(tar: &mut tar::Builder<W>, path: &str) -> Result<()> {
    let mut header = tar::Header::new_gnu();
    header.set_entry_type(tar::EntryType::Directory);
    header.set_size(0);
    header.set_mode(0o755);
    header.set_mtime(0);
    tar.append_data(&mut header, path, std::io::empty())
        .map_err(io_err(format!("writing {path} to the archive")))
}
