//! Progress events of pulls and pushes; the CLI turns them into bars or plain lines.

use rbuild_layerfs::Digest;

/// Receives progress of a transfer. Calls come from several tasks at once.
pub trait Progress: Send + Sync {
    /// A blob transfer starts (`size` from its descriptor).
    fn blob_started(&self, _digest: &Digest, _size: u64) {}
    /// `bytes` more bytes of a blob were transferred.
    fn blob_advanced(&self, _digest: &Digest, _bytes: u64) {}
    /// A blob is finished; `status` says how ("Pull complete", "Already exists", "Pushed",
    /// "Mounted from team/base", ...).
    fn blob_done(&self, _digest: &Digest, _status: &str) {}
    /// A one-line message about the whole operation (resolved digest, retries).
    fn message(&self, _text: &str) {}
}

/// Progress that shows nothing (`-q`, library callers).
#[derive(Debug, Default, Clone, Copy)]
pub struct NoProgress;

impl Progress for NoProgress {}
