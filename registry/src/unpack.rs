//! The consumer side of a layer download: every chunk goes into a store ingest (hashing) and
//! into the layer applier at once, on a blocking thread; nothing is committed until the blob
//! digest, size and diff_id are all verified.

use crate::data_sync::DataSyncer;
use crate::decode::{decode_while, ChunkReader};
use crate::error::{RegistryError, Result};
use crate::media::LayerEncoding;
use crate::pull::store_err;
use bytes::Bytes;
use rbuild_layerfs::layer::{apply_tar, ApplyLimits};
use rbuild_layerfs::store::{ScratchDir, SealedBlob};
use rbuild_layerfs::{Digest, Store};
use std::io::{self, BufRead, Write};
use std::path::{Path, PathBuf};
use tokio::sync::mpsc::Receiver;

/// Read size for a blob already in the store.
const BLOB_READ_BUFFER: usize = 1 << 20;

/// One layer to pull.
#[derive(Debug, Clone)]
pub struct LayerJob {
    /// Blob digest (compressed).
    pub digest: Digest,
    /// Uncompressed digest from the config.
    pub diff_id: Digest,
    /// Blob size from the descriptor.
    pub size: u64,
    /// Compression the media type announces.
    pub encoding: LayerEncoding,
    /// Foreign URLs of the descriptor.
    pub urls: Vec<String>,
}

/// Writes a layer's chunks into a store ingest (hashing them) as they arrive, checking that the
/// first bytes match the compression the media type announces; at the end of the stream checks
/// digest and size and fsyncs. The blob is not published yet.
pub fn ingest_chunks(store: &Store, job: &LayerJob, mut rx: Receiver<Bytes>) -> Result<SealedBlob> {
    let mut ingest = store.ingest().map_err(store_err)?;
    let mut syncer = DataSyncer::start(ingest.path(), job.size);
    let mut first = true;
    while let Some(chunk) = rx.blocking_recv() {
        if first && !chunk.is_empty() {
            first = false;
            if !job.encoding.matches_magic(&chunk) {
                return Err(RegistryError::BadContent(format!(
                    "layer {} content is not {} as its media type says",
                    job.digest,
                    job.encoding.name()
                )));
            }
        }
        ingest
            .write_all(&chunk)
            .map_err(|e| RegistryError::io(format!("write blob {}", job.digest), e))?;
        syncer.written(ingest.written());
    }
    // Verified and fsynced while the layer may still be unpacking; published by commit_layer.
    // The background flushes left little for this fsync to wait for.
    let sealed = ingest
        .seal(Some(&job.digest), Some(job.size))
        .map_err(store_err);
    syncer.finish();
    sealed
}

/// An unpacked, diff_id-verified layer waiting in a scratch dir.
pub struct AppliedLayer {
    _scratch: ScratchDir,
    dir: PathBuf,
}

/// Unpacks a layer's chunks into a scratch dir as they arrive and checks the diff_id. The chunks
/// are decompressed on one thread while the tar stream is hashed and applied on another.
pub fn apply_chunks(store: &Store, job: &LayerJob, rx: Receiver<Bytes>) -> Result<AppliedLayer> {
    let scratch = store.scratch_dir("pull").map_err(store_err)?;
    let dir = scratch.path().join("layer");
    let input = ChunkReader::new(rx);
    apply_decoded(&job.digest, &job.diff_id, job.encoding, input, &dir)?;
    Ok(AppliedLayer {
        _scratch: scratch,
        dir,
    })
}

/// Decodes `input` (layer `digest`, compressed as `encoding`) on one thread while applying the
/// tar stream into `dir` on this one, then checks the diff_id.
fn apply_decoded(
    digest: &Digest,
    diff_id: &Digest,
    encoding: LayerEncoding,
    input: impl BufRead + Send,
    dir: &Path,
) -> Result<()> {
    let (decoded, applied) = decode_while(encoding, input, |tar| {
        apply_tar(tar, dir, &ApplyLimits::default())
    });
    // A damaged compressed stream explains whatever the applier saw.
    decoded.map_err(|e| {
        RegistryError::BadContent(format!(
            "layer {digest}: its {} stream is damaged: {e}",
            encoding.name()
        ))
    })?;
    let stats = applied.map_err(|e| RegistryError::BadContent(format!("layer {digest}: {e}")))?;
    if stats.diff_id != *diff_id {
        return Err(RegistryError::BadContent(format!(
            "layer {digest} unpacks to diff_id {}, the config says {diff_id}",
            stats.diff_id
        )));
    }
    Ok(())
}

/// Publishes the verified blob, then the unpacked layer.
pub fn commit_layer(
    store: &Store,
    job: &LayerJob,
    blob: SealedBlob,
    applied: Option<AppliedLayer>,
) -> Result<()> {
    blob.publish().map_err(store_err)?;
    if let Some(layer) = applied {
        store
            .commit_layer_dir_of_blob(&layer.dir, &job.diff_id, Some(&job.digest))
            .map_err(store_err)?;
    }
    Ok(())
}

/// Unpacks a layer whose blob is already in the store (verifying its diff_id); the compression
/// is recognised by its magic bytes.
pub fn unpack_local(store: &Store, digest: &Digest, diff_id: &Digest) -> Result<()> {
    let blob = store.open_blob(digest).map_err(store_err)?;
    let mut input = io::BufReader::with_capacity(BLOB_READ_BUFFER, blob);
    let head = input
        .fill_buf()
        .map_err(|e| RegistryError::io(format!("read blob {digest}"), e))?;
    let encoding = LayerEncoding::from_magic(head);
    let scratch = store.scratch_dir("unpack").map_err(store_err)?;
    let dest = scratch.path().join("layer");
    apply_decoded(digest, diff_id, encoding, input, &dest)?;
    store.commit_layer_dir(&dest, diff_id).map_err(store_err)
}
