//! The error type of the content store and image model.

use crate::digest::{Digest, DigestError};
use std::io;
use std::path::{Path, PathBuf};

/// Result alias for store operations.
pub type Result<T, E = StoreError> = std::result::Result<T, E>;

/// Everything that can go wrong in the content store.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// A filesystem operation failed on a path.
    #[error("{action} {path}: {cause}")]
    Io {
        /// What was being done ("create", "rename", ...).
        action: &'static str,
        /// The path involved.
        path: PathBuf,
        /// The OS error (part of the message, so not repeated as a source).
        cause: io::Error,
    },
    /// Content did not hash to the digest it was announced with; nothing was committed.
    #[error("digest mismatch: expected {expected}, content hashes to {actual}; the blob was discarded (the source is corrupt or was tampered with)")]
    DigestMismatch {
        /// The announced digest.
        expected: Digest,
        /// The digest of the bytes received.
        actual: Digest,
    },
    /// Content did not have the size it was announced with; nothing was committed.
    #[error("size mismatch for {digest}: expected {expected} bytes, got {actual}; the blob was discarded")]
    SizeMismatch {
        /// The digest of the bytes received.
        digest: Digest,
        /// The announced size.
        expected: u64,
        /// The number of bytes received.
        actual: u64,
    },
    /// A blob needed by an operation is not in the store.
    #[error("blob {0} is not in the store; pull or load the image again")]
    BlobMissing(Digest),
    /// A JSON document (index, manifest, config) could not be read or written.
    #[error("invalid {what}: {cause}")]
    Json {
        /// Which document.
        what: String,
        /// The parse error.
        cause: serde_json::Error,
    },
    /// No image matches a name or ID.
    #[error("no such image: {0} (see `rbuild images`)")]
    ImageNotFound(String),
    /// A short ID matches more than one image.
    #[error("image ID prefix {0} is ambiguous: give more digits")]
    AmbiguousId(String),
    /// An image name or tag is malformed.
    #[error("invalid image reference {0:?}: {1}")]
    InvalidReference(String, &'static str),
    /// A digest string was invalid.
    #[error(transparent)]
    Digest(#[from] DigestError),
    /// The store content is inconsistent in a way an operation cannot work around.
    #[error("store is inconsistent: {0} (run `rbuild system check`)")]
    Corrupt(String),
    /// An operation is refused because the object is in use.
    #[error("{0}")]
    InUse(String),
    /// An OCI document could not be built.
    #[error("building OCI document: {0}")]
    Oci(#[from] oci_spec::OciSpecError),
    /// A layer could not be written, applied or unpacked.
    #[error(transparent)]
    Layer(Box<crate::layer::LayerError>),
    /// An error from another layerfs module (layer writer/applier, mounts).
    #[error("{0}")]
    Other(String),
}

/// Adds the action and path to an `io::Error`.
pub(crate) trait IoContext<T> {
    /// Wraps the error with what was done to which path.
    fn at(self, action: &'static str, path: &Path) -> Result<T>;
}

impl<T> IoContext<T> for io::Result<T> {
    fn at(self, action: &'static str, path: &Path) -> Result<T> {
        self.map_err(|cause| StoreError::Io {
            action,
            path: path.to_path_buf(),
            cause,
        })
    }
}

impl StoreError {
    /// Builds a [`StoreError::Json`] naming the document.
    pub(crate) fn json(what: impl Into<String>, cause: serde_json::Error) -> Self {
        StoreError::Json {
            what: what.into(),
            cause,
        }
    }

    /// True when this is a "not found" I/O error.
    pub fn is_not_found(&self) -> bool {
        matches!(self, StoreError::Io { cause, .. } if cause.kind() == io::ErrorKind::NotFound)
    }
}
