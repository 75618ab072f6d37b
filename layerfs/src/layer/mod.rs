//! OCI layers: write an overlay upper dir as a layer blob, apply a layer blob as an overlay dir.
//!
//! The on-disk form of an unpacked layer is the overlayfs upper-dir format: deletions are
//! character devices 0/0 (or, on filesystems that refuse those such as overlayfs, zero-size
//! files with `trusted.overlay.whiteout` in a directory marked `trusted.overlay.opaque=x`) and
//! opaque directories carry `trusted.overlay.opaque=y`. The tar form is the OCI one:
//! `.wh.<name>` files and `.wh..wh..opq` markers.

mod apply;
mod commit;
mod prune;
mod upper_walk;
pub(crate) mod whiteout;
mod writer;
mod xattr;

use std::io;
use std::path::PathBuf;

use crate::digest::Digest;

pub use apply::{apply_layer, apply_tar};
pub use prune::prune_unchanged_dirs;
pub use writer::write_layer;

/// OCI media type of an uncompressed layer.
pub const MEDIA_TYPE_TAR: &str = "application/vnd.oci.image.layer.v1.tar";
/// OCI media type of a gzip-compressed layer.
pub const MEDIA_TYPE_TAR_GZIP: &str = "application/vnd.oci.image.layer.v1.tar+gzip";
/// OCI media type of a zstd-compressed layer.
pub const MEDIA_TYPE_TAR_ZSTD: &str = "application/vnd.oci.image.layer.v1.tar+zstd";

/// How a layer blob is compressed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Compression {
    /// gzip (flate2 with the zlib-rs backend), the OCI default.
    #[default]
    Gzip,
    /// zstd, multithreaded.
    Zstd,
    /// A plain tar.
    None,
}

impl Compression {
    /// The OCI layer media type for this compression.
    pub fn media_type(self) -> &'static str {
        match self {
            Compression::Gzip => MEDIA_TYPE_TAR_GZIP,
            Compression::Zstd => MEDIA_TYPE_TAR_ZSTD,
            Compression::None => MEDIA_TYPE_TAR,
        }
    }
}

impl std::str::FromStr for Compression {
    type Err = LayerError;
    fn from_str(s: &str) -> Result<Self, LayerError> {
        match s {
            "gzip" => Ok(Compression::Gzip),
            "zstd" => Ok(Compression::Zstd),
            "none" | "uncompressed" => Ok(Compression::None),
            other => Err(LayerError::UnknownCompression(other.to_string())),
        }
    }
}

/// Identity of a written layer blob.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LayerInfo {
    /// sha256 of the uncompressed tar stream.
    pub diff_id: Digest,
    /// sha256 of the blob as stored (compressed).
    pub digest: Digest,
    /// Size in bytes of the blob as stored.
    pub size: u64,
    /// OCI media type of the blob.
    pub media_type: String,
}

/// Options for [`write_layer`].
#[derive(Debug, Clone, Default)]
pub struct WriteOptions {
    /// Blob compression.
    pub compression: Compression,
    /// Clamp every mtime to at most this many seconds since the epoch (SOURCE_DATE_EPOCH).
    pub mtime_clamp: Option<i64>,
}

/// Budgets for [`apply_layer`]; exceeding one stops the apply and removes the partial output.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ApplyLimits {
    /// Maximum number of uncompressed tar bytes read.
    pub max_bytes: u64,
    /// Maximum number of tar entries (including whiteouts).
    pub max_entries: u64,
}

impl Default for ApplyLimits {
    fn default() -> Self {
        ApplyLimits {
            max_bytes: 256 << 30,
            max_entries: 10_000_000,
        }
    }
}

/// What [`apply_layer`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApplyStats {
    /// sha256 of the uncompressed tar stream.
    pub diff_id: Digest,
    /// Uncompressed tar bytes read.
    pub tar_bytes: u64,
    /// Tar entries processed.
    pub entries: u64,
    /// Whiteouts (deletions) recorded.
    pub whiteouts: u64,
    /// Directories marked opaque.
    pub opaque_dirs: u64,
}

/// Errors from writing or applying layers.
#[derive(Debug, thiserror::Error)]
pub enum LayerError {
    /// An I/O error on a named path.
    #[error("{path}: {source}")]
    Io {
        /// The path involved.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: io::Error,
    },
    /// An I/O error on the layer stream.
    #[error("layer stream: {0}")]
    Stream(#[source] io::Error),
    /// A tar entry that cannot be applied safely or makes no sense.
    #[error("tar entry {entry:?}: {reason}")]
    BadEntry {
        /// The entry name, lossily decoded.
        entry: String,
        /// What is wrong with it.
        reason: String,
    },
    /// A filesystem operation inside the layer root failed (pathrs).
    #[error("tar entry {entry:?}: {op} inside the layer root failed: {source}")]
    Confined {
        /// The entry name, lossily decoded.
        entry: String,
        /// The operation.
        op: &'static str,
        /// The underlying error.
        #[source]
        source: pathrs::error::Error,
    },
    /// The byte budget was exceeded.
    #[error("layer expands beyond the {limit}-byte budget (decompression bomb?); raise ApplyLimits::max_bytes if it is genuine")]
    TooManyBytes {
        /// The budget.
        limit: u64,
    },
    /// The entry budget was exceeded.
    #[error(
        "layer has more than {limit} tar entries; raise ApplyLimits::max_entries if it is genuine"
    )]
    TooManyEntries {
        /// The budget.
        limit: u64,
    },
    /// The apply destination already has content.
    #[error("{0}: destination of a layer apply must be absent or empty")]
    DestNotEmpty(PathBuf),
    /// A file in the upper dir changed while it was being written.
    #[error("{0}: file changed size while the layer was written; do not modify an upper dir during a snapshot")]
    Changed(PathBuf),
    /// Unknown compression name.
    #[error("unknown compression {0:?}: use gzip, zstd or none")]
    UnknownCompression(String),
}

impl LayerError {
    fn io(path: impl Into<PathBuf>, source: io::Error) -> Self {
        LayerError::Io {
            path: path.into(),
            source,
        }
    }
}

/// Result type of this module.
pub type Result<T, E = LayerError> = std::result::Result<T, E>;
