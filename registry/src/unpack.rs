//! The consumer side of a layer download: every chunk goes into a store ingest (hashing) and
//! into the layer applier at once, on a blocking thread; nothing is committed until the blob
//! digest, size and diff_id are all verified.

use crate::error::{RegistryError, Result};
use crate::media::LayerEncoding;
use crate::pull::store_err;
use bytes::Bytes;
use rbuild_layerfs::layer::{apply_layer, ApplyLimits};
use rbuild_layerfs::store::Ingest;
use rbuild_layerfs::{Digest, Store};
use std::io::{self, Read, Write};
use tokio::sync::mpsc::Receiver;

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

/// A reader over the downloaded chunks that writes each chunk to the ingest as it passes.
struct TeeReader<'a> {
    rx: Receiver<Bytes>,
    ingest: &'a mut Ingest,
    current: Bytes,
    first: bool,
    encoding: LayerEncoding,
    digest: &'a Digest,
}

impl Read for TeeReader<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        while self.current.is_empty() {
            match self.rx.blocking_recv() {
                Some(chunk) => {
                    if self.first && !chunk.is_empty() {
                        self.first = false;
                        if !self.encoding.matches_magic(&chunk) {
                            return Err(io::Error::new(
                                io::ErrorKind::InvalidData,
                                format!(
                                    "layer {} content is not {:?} as its media type says",
                                    self.digest, self.encoding
                                ),
                            ));
                        }
                    }
                    self.ingest.write_all(&chunk)?;
                    self.current = chunk;
                }
                None => return Ok(0),
            }
        }
        let n = buf.len().min(self.current.len());
        buf[..n].copy_from_slice(&self.current[..n]);
        self.current = self.current.slice(n..);
        Ok(n)
    }
}

/// Consumes a layer's chunks: ingest (and, if `apply`, unpack into a scratch dir) while they
/// arrive, then verify and commit the blob and the unpacked layer.
pub fn consume_layer(
    store: &Store,
    job: &LayerJob,
    rx: Receiver<Bytes>,
    apply: bool,
) -> Result<()> {
    let mut ingest = store.ingest().map_err(store_err)?;
    let mut reader = TeeReader {
        rx,
        ingest: &mut ingest,
        current: Bytes::new(),
        first: true,
        encoding: job.encoding,
        digest: &job.digest,
    };
    let scratch = if apply {
        let scratch = store.scratch_dir("pull").map_err(store_err)?;
        let dest = scratch.path().join("layer");
        let stats = apply_layer(&mut reader, &dest, &ApplyLimits::default())
            .map_err(|e| RegistryError::BadContent(format!("layer {}: {e}", job.digest)))?;
        // Drain what the applier did not need (tar padding) so the whole blob is hashed.
        io::copy(&mut reader, &mut io::sink())
            .map_err(|e| RegistryError::BadContent(format!("layer {}: {e}", job.digest)))?;
        if stats.diff_id != job.diff_id {
            return Err(RegistryError::BadContent(format!(
                "layer {} unpacks to diff_id {}, the config says {}",
                job.digest, stats.diff_id, job.diff_id
            )));
        }
        Some((scratch, dest))
    } else {
        io::copy(&mut reader, &mut io::sink())
            .map_err(|e| RegistryError::BadContent(format!("layer {}: {e}", job.digest)))?;
        None
    };
    drop(reader);
    ingest
        .commit(Some(&job.digest), Some(job.size))
        .map_err(store_err)?;
    if let Some((_scratch, dest)) = scratch {
        store
            .commit_layer_dir(&dest, &job.diff_id)
            .map_err(store_err)?;
    }
    Ok(())
}

/// Unpacks a layer whose blob is already in the store (verifying its diff_id).
pub fn unpack_local(store: &Store, digest: &Digest, diff_id: &Digest) -> Result<()> {
    let blob = store.open_blob(digest).map_err(store_err)?;
    let scratch = store.scratch_dir("unpack").map_err(store_err)?;
    let dest = scratch.path().join("layer");
    let stats = apply_layer(io::BufReader::new(blob), &dest, &ApplyLimits::default())
        .map_err(|e| RegistryError::BadContent(format!("layer {digest}: {e}")))?;
    if stats.diff_id != *diff_id {
        return Err(RegistryError::BadContent(format!(
            "layer {digest} unpacks to diff_id {}, the config says {diff_id}",
            stats.diff_id
        )));
    }
    store.commit_layer_dir(&dest, diff_id).map_err(store_err)
}
