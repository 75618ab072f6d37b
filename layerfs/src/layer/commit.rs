//! Store integration: a snapshot's upper dir becomes a blob plus an unpacked layer, and a blob
//! is unpacked into `layers/<diff_id>` with its diff ID checked.

use std::path::Path;

use super::{apply_layer, ApplyLimits, LayerInfo, WriteOptions};
use crate::digest::Digest;
use crate::store::{Result, Store, StoreError};

impl Store {
    /// Writes the layer blob of the overlay upper dir `upper` into the store (one pass: tar,
    /// diff_id, compression, digest; verified ingest) and renames `upper` into
    /// `layers/<diff_id>`, where it already is the unpacked layer. `upper` must be on the
    /// store's filesystem and no longer mounted; if the layer exists already, `upper` is removed.
    pub fn commit_upper(&self, upper: &Path, opts: &WriteOptions) -> Result<LayerInfo> {
        let mut ingest = self.ingest()?;
        // The ingest hashes what it is given, so the writer does not hash the blob again.
        let diff_id = super::writer::write_layer_unhashed(upper, opts, &mut ingest)
            .map_err(|e| StoreError::Layer(Box::new(e)))?;
        let (digest, size) = ingest.commit(None, None)?;
        self.commit_layer_dir_of_blob(upper, &diff_id, Some(&digest))?;
        Ok(LayerInfo {
            diff_id,
            digest,
            size,
            media_type: opts.compression.media_type().to_string(),
        })
    }

    /// Unpacks the layer blob `blob` into `layers/<expected_diff_id>` unless it is there
    /// already: applied into a scratch dir, diff ID checked, then renamed into place. A blob
    /// whose content does not hash to `expected_diff_id` is refused and nothing is kept.
    pub fn unpack_layer(&self, blob: &Digest, expected_diff_id: &Digest) -> Result<()> {
        if self.has_layer(expected_diff_id) {
            return Ok(());
        }
        let scratch = self.scratch_dir("unpack")?;
        let dest = scratch.path().join("layer");
        let input = self.open_blob(blob)?;
        let stats = apply_layer(input, &dest, &ApplyLimits::default())
            .map_err(|e| StoreError::Layer(Box::new(e)))?;
        if stats.diff_id != *expected_diff_id {
            return Err(StoreError::DigestMismatch {
                expected: expected_diff_id.clone(),
                actual: stats.diff_id,
            });
        }
        self.commit_layer_dir_of_blob(&dest, expected_diff_id, Some(blob))
    }
}
