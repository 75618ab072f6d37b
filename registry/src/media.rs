//! Media types of manifests, configs and layers, and the checks that content matches them.

use crate::error::{RegistryError, Result};

/// OCI image index.
pub const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
/// OCI image manifest.
pub const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
/// OCI image config.
pub const OCI_CONFIG: &str = "application/vnd.oci.image.config.v1+json";
/// Docker manifest list.
pub const DOCKER_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";
/// Docker image manifest, schema 2.
pub const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
/// Docker image config.
pub const DOCKER_CONFIG: &str = "application/vnd.docker.container.image.v1+json";
/// Docker gzip layer.
pub const DOCKER_LAYER_GZIP: &str = "application/vnd.docker.image.rootfs.diff.tar.gzip";
/// Docker foreign (non-distributable) gzip layer.
pub const DOCKER_FOREIGN_LAYER_GZIP: &str =
    "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip";
/// Docker schema 1 (signed), which rbuild does not pull.
pub const DOCKER_SCHEMA1: &str = "application/vnd.docker.distribution.manifest.v1+prettyjws";

/// The `Accept` header for manifest requests.
pub const MANIFEST_ACCEPT: &str = "application/vnd.oci.image.index.v1+json, application/vnd.docker.distribution.manifest.list.v2+json, application/vnd.oci.image.manifest.v1+json, application/vnd.docker.distribution.manifest.v2+json";

/// Largest manifest or index rbuild reads.
pub const MAX_MANIFEST_BYTES: u64 = 4 << 20;
/// Largest image config rbuild reads.
pub const MAX_CONFIG_BYTES: u64 = 32 << 20;

/// What kind of document a manifest response is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ManifestKind {
    /// An index / manifest list (one manifest per platform).
    Index,
    /// A single-image manifest.
    Image,
}

/// Whether `media_type` is an index or an image manifest.
pub fn manifest_kind(media_type: &str) -> Option<ManifestKind> {
    match media_type {
        OCI_INDEX | DOCKER_LIST => Some(ManifestKind::Index),
        OCI_MANIFEST | DOCKER_MANIFEST => Some(ManifestKind::Image),
        _ => None,
    }
}

/// Works out the media type of a fetched manifest from the `Content-Type` header, the
/// document's own `mediaType` and its shape, and refuses any contradiction between them.
pub fn classify_manifest(
    content_type: Option<&str>,
    body: &[u8],
) -> Result<(String, ManifestKind)> {
    let bad = |m: String| RegistryError::BadContent(m);
    let doc: serde_json::Value =
        serde_json::from_slice(body).map_err(|e| bad(format!("manifest is not JSON: {e}")))?;
    let declared = doc.get("mediaType").and_then(|v| v.as_str());
    let header = content_type
        .map(|c| c.split(';').next().unwrap_or(c).trim())
        .filter(|c| manifest_kind(c).is_some() || *c == DOCKER_SCHEMA1);
    if header == Some(DOCKER_SCHEMA1)
        || doc.get("schemaVersion").and_then(|v| v.as_u64()) == Some(1)
    {
        return Err(bad("Docker schema 1 manifests are not supported; push the image again with a current client".into()));
    }
    if let (Some(h), Some(d)) = (header, declared) {
        if h != d {
            return Err(bad(format!(
                "Content-Type {h} contradicts the manifest's mediaType {d}"
            )));
        }
    }
    let shape = match (
        doc.get("manifests").is_some(),
        doc.get("layers").is_some() || doc.get("config").is_some(),
    ) {
        (true, false) => ManifestKind::Index,
        (false, true) => ManifestKind::Image,
        _ => {
            return Err(bad(
                "manifest is neither an image manifest nor an index".into()
            ))
        }
    };
    let media_type = declared
        .or(header)
        .map(str::to_string)
        .unwrap_or_else(|| match shape {
            ManifestKind::Index => OCI_INDEX.to_string(),
            ManifestKind::Image => OCI_MANIFEST.to_string(),
        });
    match manifest_kind(&media_type) {
        Some(kind) if kind == shape => Ok((media_type, kind)),
        Some(_) => Err(bad(format!(
            "media type {media_type} contradicts the document's content"
        ))),
        None => Err(bad(format!("unsupported manifest media type {media_type}"))),
    }
}

/// The compression a layer media type announces, or an error for a type that is not a layer.
pub fn layer_compression(media_type: &str) -> Result<LayerEncoding> {
    match media_type {
        "application/vnd.oci.image.layer.v1.tar+gzip"
        | "application/vnd.oci.image.layer.nondistributable.v1.tar+gzip"
        | DOCKER_LAYER_GZIP
        | DOCKER_FOREIGN_LAYER_GZIP => Ok(LayerEncoding::Gzip),
        "application/vnd.oci.image.layer.v1.tar+zstd"
        | "application/vnd.oci.image.layer.nondistributable.v1.tar+zstd" => Ok(LayerEncoding::Zstd),
        "application/vnd.oci.image.layer.v1.tar"
        | "application/vnd.oci.image.layer.nondistributable.v1.tar"
        | "application/vnd.docker.image.rootfs.diff.tar" => Ok(LayerEncoding::Plain),
        other => Err(RegistryError::BadContent(format!(
            "{other} is not a layer media type rbuild can unpack"
        ))),
    }
}

/// How a layer blob is encoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LayerEncoding {
    /// gzip.
    Gzip,
    /// zstd.
    Zstd,
    /// Plain tar.
    Plain,
}

impl LayerEncoding {
    /// The encoding the first bytes of a blob show (plain tar when neither gzip nor zstd).
    pub fn from_magic(head: &[u8]) -> LayerEncoding {
        if head.starts_with(&[0x1f, 0x8b]) {
            LayerEncoding::Gzip
        } else if head.starts_with(&[0x28, 0xb5, 0x2f, 0xfd]) {
            LayerEncoding::Zstd
        } else {
            LayerEncoding::Plain
        }
    }

    /// The name used in messages: `gzip`, `zstd` or `tar`.
    pub fn name(self) -> &'static str {
        match self {
            LayerEncoding::Gzip => "gzip",
            LayerEncoding::Zstd => "zstd",
            LayerEncoding::Plain => "tar",
        }
    }

    /// Whether the first bytes of a blob agree with this encoding.
    pub fn matches_magic(self, head: &[u8]) -> bool {
        LayerEncoding::from_magic(head) == self
    }
}

/// Refuses a config descriptor whose media type is not an image config.
pub fn check_config_media_type(media_type: &str) -> Result<()> {
    match media_type {
        OCI_CONFIG | DOCKER_CONFIG => Ok(()),
        other => Err(RegistryError::BadContent(format!(
            "config media type {other} is not an image config (is this an artifact, not an image?)"
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn contradictions_are_refused() {
        let idx = br#"{"schemaVersion":2,"mediaType":"application/vnd.oci.image.index.v1+json","manifests":[]}"#;
        assert_eq!(
            classify_manifest(Some(OCI_INDEX), idx).unwrap().1,
            ManifestKind::Index
        );
        assert!(classify_manifest(Some(OCI_MANIFEST), idx).is_err());
        let liar = br#"{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","manifests":[]}"#;
        assert!(classify_manifest(None, liar).is_err());
        let img = br#"{"schemaVersion":2,"config":{},"layers":[]}"#;
        assert_eq!(
            classify_manifest(Some("application/json"), img).unwrap().0,
            OCI_MANIFEST
        );
        assert!(classify_manifest(None, br#"{"schemaVersion":1,"fsLayers":[]}"#).is_err());
        assert!(LayerEncoding::Gzip.matches_magic(&[0x1f, 0x8b, 8]));
        assert!(!LayerEncoding::Gzip.matches_magic(b"usr/"));
        assert!(LayerEncoding::Plain.matches_magic(b"usr/"));
    }
}
