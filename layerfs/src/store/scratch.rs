//! Scratch directories under the session's tmp dir (same filesystem as the store, so their
//! content can be renamed into place), and atomic commit of unpacked layer directories.

use super::error::{IoContext, Result};
use super::fsutil::{ensure_dir, random_hex, remove_any};
use super::Store;
use crate::digest::Digest;
use std::fs;
use std::path::{Path, PathBuf};

/// A temporary directory inside the store; removed on drop unless [`ScratchDir::keep`] is called.
#[derive(Debug)]
pub struct ScratchDir {
    path: PathBuf,
    keep: bool,
}

impl ScratchDir {
    /// The directory.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Keeps the directory after the guard is dropped and returns its path. It lives in this
    /// process's session dir, which is removed when the store is dropped (or by the next process
    /// if this one dies), so move it out (e.g. [`Store::commit_layer_dir`]) to keep it longer.
    pub fn keep(mut self) -> PathBuf {
        self.keep = true;
        self.path.clone()
    }
}

impl Drop for ScratchDir {
    fn drop(&mut self) {
        if !self.keep {
            let _ = remove_any(&self.path);
        }
    }
}

impl Store {
    /// Creates a fresh scratch directory named `<prefix>-<random>` under the session's tmp dir.
    pub fn scratch_dir(&self, prefix: &str) -> Result<ScratchDir> {
        let safe: String = prefix
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() || c == '-' {
                    c
                } else {
                    '_'
                }
            })
            .collect();
        let path = self.session_dir().join(format!("{safe}-{}", random_hex(6)));
        fs::create_dir(&path).at("create scratch directory", &path)?;
        Ok(ScratchDir { path, keep: false })
    }

    /// Directory of an unpacked layer (whether or not it exists).
    pub fn layer_dir(&self, diff_id: &Digest) -> PathBuf {
        self.root().join("layers").join(diff_id.hex())
    }

    /// True when the layer is unpacked in the store.
    pub fn has_layer(&self, diff_id: &Digest) -> bool {
        self.layer_dir(diff_id).is_dir()
    }

    /// Atomically renames an unpacked layer directory `src` (inside the store's tmp dir) to
    /// `layers/<hex>`. If the layer already exists, `src` is removed instead.
    ///
    /// Neither the files of `src` nor the rename are synced: the layer is first listed (durably)
    /// in the journal of unsynced layers, so that after a crash it is re-created from its blob
    /// (found through the images in the store; [`Store::commit_layer_dir_of_blob`] names it),
    /// and a rename the crash lost leaves only a missing layer, which every user of layers
    /// unpacks again from its blob (as after a prune).
    pub fn commit_layer_dir(&self, src: &Path, diff_id: &Digest) -> Result<()> {
        self.commit_layer_dir_of_blob(src, diff_id, None)
    }

    /// [`Store::commit_layer_dir`] for a layer whose compressed blob `blob` is already in the
    /// store (durably): recovery after a crash re-creates the layer from that blob even when no
    /// image names it yet.
    pub fn commit_layer_dir_of_blob(
        &self,
        src: &Path,
        diff_id: &Digest,
        blob: Option<&Digest>,
    ) -> Result<()> {
        let layers = self.root().join("layers");
        ensure_dir(&layers, 0o700)?;
        let dest = self.layer_dir(diff_id);
        if dest.is_dir() {
            remove_any(src)?;
            self.touch(&dest);
            return Ok(());
        }
        self.unsynced_journal().append(diff_id, blob)?;
        match fs::rename(src, &dest) {
            Ok(()) => {}
            Err(e) if dest.is_dir() => {
                // Another process committed the same layer first.
                tracing::debug!("layer {diff_id} committed concurrently: {e}");
                remove_any(src)?;
            }
            Err(e) => return Err(e).at("commit layer directory", &dest),
        }
        self.touch(&dest);
        Ok(())
    }
}
