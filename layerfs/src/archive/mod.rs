//! Image archives: `save` writes a tar that is both a docker-archive (manifest.json, loadable by
//! `docker load` and `skopeo docker-archive:`) and an OCI image layout (oci-layout, index.json,
//! blobs/sha256); `load` reads docker-archives (current and legacy layouts) and OCI archives.

mod load;
mod save;

pub use load::{load_archive, LoadedImage};
pub use save::{save_images, SaveRequest};

use crate::store::StoreError;
use std::io;

/// Why saving or loading an archive failed.
#[derive(Debug, thiserror::Error)]
pub enum ArchiveError {
    /// The store failed (including digest/size mismatches of archive blobs).
    #[error(transparent)]
    Store(#[from] StoreError),
    /// Reading or writing the archive failed.
    #[error("{context}: {cause}")]
    Io {
        /// What was being done.
        context: String,
        /// The OS error.
        cause: io::Error,
    },
    /// The archive content is malformed or incomplete.
    #[error("invalid image archive: {0}")]
    Invalid(String),
}

/// Result type of this module.
pub type Result<T, E = ArchiveError> = std::result::Result<T, E>;

pub(crate) fn io_err(context: impl Into<String>) -> impl FnOnce(io::Error) -> ArchiveError {
    let context = context.into();
    move |cause| ArchiveError::Io { context, cause }
}
