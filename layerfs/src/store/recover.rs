//! Recovery of layer directories published before a crash or reboot, run by
//! [`Store::open`]: every layer the journal of unsynced layers (`unsynced`) lists under another
//! boot is unpacked again from its blob into a scratch dir, its diff ID checked, and swapped in
//! with `renameat2(RENAME_EXCHANGE)` (the layer is never missing for a concurrent reader); then
//! `syncfs` and the entries are dropped. A `kill -9` at any point leaves the entries in place,
//! so the next open does the work again (it is idempotent).
//!
//! A listed layer whose blob cannot be found (in the journal line, else through the image
//! manifests in the store) is removed when no image names it (nothing can verify it, and
//! whoever needs it later unpacks it from a blob of its own), and otherwise kept and marked
//! unrecovered, which `system check` reports.

use super::error::{IoContext, Result, StoreError};
use super::unsynced::{boot_id, Entry, UNRECOVERED};
use super::Store;
use crate::digest::Digest;
use crate::layer::{apply_layer, ApplyLimits};
use std::collections::{BTreeSet, HashMap};
use std::path::Path;

/// Environment variable naming a point (`applied`, `swapped`) at which recovery kills its own
/// process with SIGKILL: the fault injection of the crash-recovery tests.
pub const KILL_DURING_RECOVERY_ENV: &str = "RBUILD_TEST_KILL_DURING_RECOVERY";

/// What [`Store::open`] did about layers published before a crash or reboot.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct RecoveryReport {
    /// Layers unpacked again from their blobs and swapped in.
    pub recreated: Vec<Digest>,
    /// Layers removed: no blob and no image names them.
    pub removed: Vec<Digest>,
    /// Layers left as they were, with the reason (reported by `system check`).
    pub unrecovered: Vec<(Digest, String)>,
}

impl Store {
    /// Re-creates the layers published under an earlier boot; a failure is logged and left in
    /// the journal for the next open (and `system check`) instead of failing the open.
    pub(crate) fn recover_unsynced_layers(&self, journal_entries: &[Entry]) -> RecoveryReport {
        let boot = boot_id();
        let stale = |e: &Entry| e.boot != boot && e.boot != UNRECOVERED;
        if !journal_entries.iter().any(stale) {
            return RecoveryReport::default();
        }
        match self.recover_locked() {
            Ok(report) => report,
            Err(e) => {
                tracing::warn!("could not re-create the layers published before the last reboot: {e}; `rbuild system check` lists them");
                RecoveryReport::default()
            }
        }
    }

    /// Takes the store lock, re-reads the journal and recovers what is still listed.
    fn recover_locked(&self) -> Result<RecoveryReport> {
        let _lock = self.lock()?;
        let journal = self.unsynced_journal();
        let entries = journal.read()?;
        let boot = boot_id();
        let mut report = RecoveryReport::default();
        let stale: BTreeSet<Digest> = entries
            .iter()
            .filter(|e| e.boot != boot && e.boot != UNRECOVERED)
            .map(|e| e.diff_id.clone())
            .collect();
        if stale.is_empty() {
            return Ok(report);
        }
        // Entries of this boot are covered by the syncfs below too.
        let mut done: Vec<Entry> = entries.iter().filter(|e| e.boot == boot).cloned().collect();
        let mut replace = Vec::new();
        let mut by_manifest: Option<HashMap<Digest, Vec<Digest>>> = None;
        for diff_id in &stale {
            let listed: Vec<&Entry> = entries.iter().filter(|e| e.diff_id == *diff_id).collect();
            let finished = |done: &mut Vec<Entry>| {
                done.extend(
                    listed
                        .iter()
                        .filter(|e| e.boot != UNRECOVERED)
                        .map(|e| (*e).clone()),
                )
            };
            if !self.layer_dir(diff_id).exists() {
                finished(&mut done);
                continue;
            }
            // The blob the journal names; only without one are the manifests read (once).
            let named = listed
                .iter()
                .filter_map(|e| e.blob.clone())
                .find(|b| self.has_blob(b));
            let (blob, in_images) = match named {
                Some(b) => (Some(b), Vec::new()),
                None => {
                    let manifests =
                        by_manifest.get_or_insert_with(|| self.layer_blobs_by_diff_id());
                    let in_images = manifests.get(diff_id).cloned().unwrap_or_default();
                    let found = in_images.iter().find(|b| self.has_blob(b)).cloned();
                    (found, in_images)
                }
            };
            let outcome = match blob {
                Some(blob) => self.recreate_layer(diff_id, &blob),
                None if in_images.is_empty() => {
                    super::fsutil::remove_any(&self.layer_dir(diff_id))?;
                    report.removed.push(diff_id.clone());
                    tracing::warn!("removed layer {diff_id}: published before the last reboot, its files may be incomplete, and no blob or image in the store can restore it");
                    finished(&mut done);
                    continue;
                }
                None => Err(StoreError::BlobMissing(in_images[0].clone())),
            };
            match outcome {
                Ok(()) => {
                    report.recreated.push(diff_id.clone());
                    finished(&mut done);
                }
                Err(e @ (StoreError::BlobMissing(_) | StoreError::DigestMismatch { .. })) => {
                    let note = e.to_string();
                    tracing::warn!("layer {diff_id} was published before the last reboot and cannot be re-created: {note}");
                    finished(&mut done);
                    replace.push(Entry {
                        boot: UNRECOVERED.to_string(),
                        secs: 0,
                        diff_id: diff_id.clone(),
                        blob: blob_of(&listed),
                        note: note.clone(),
                    });
                    report.unrecovered.push((diff_id.clone(), note));
                }
                // Left listed: the next open tries again.
                Err(e) => {
                    tracing::warn!("layer {diff_id} was published before the last reboot and could not be re-created now: {e}");
                    report.unrecovered.push((diff_id.clone(), e.to_string()));
                }
            }
        }
        syncfs(self.root())?;
        journal.rewrite(self.session_dir(), &done, &replace)?;
        Ok(report)
    }

    /// Unpacks `blob` into a scratch dir, checks it gives `diff_id` and swaps it with
    /// `layers/<diff_id>`; the old tree is removed with the scratch dir.
    fn recreate_layer(&self, diff_id: &Digest, blob: &Digest) -> Result<()> {
        let scratch = self.scratch_dir("recover")?;
        let fresh = scratch.path().join("layer");
        let input = std::io::BufReader::with_capacity(1 << 20, self.open_blob(blob)?);
        let stats = apply_layer(input, &fresh, &ApplyLimits::default())
            .map_err(|e| StoreError::Layer(Box::new(e)))?;
        if stats.diff_id != *diff_id {
            return Err(StoreError::DigestMismatch {
                expected: diff_id.clone(),
                actual: stats.diff_id,
            });
        }
        fault_point("applied");
        exchange(
            &fresh,
            &self.layer_dir(diff_id),
            &scratch.path().join("old"),
        )?;
        fault_point("swapped");
        Ok(())
    }

    /// For every image manifest among the blobs: diff ID -> layer blob digests.
    fn layer_blobs_by_diff_id(&self) -> HashMap<Digest, Vec<Digest>> {
        let mut map: HashMap<Digest, Vec<Digest>> = HashMap::new();
        for (digest, _) in self.manifest_blobs() {
            let Ok(image) = self.load_image(&digest) else {
                continue;
            };
            for (blob, diff_id) in image.layer_digests().into_iter().zip(image.diff_ids()) {
                let blobs = map.entry(diff_id).or_default();
                if !blobs.contains(&blob) {
                    blobs.push(blob);
                }
            }
        }
        map
    }
}

/// The blob named by any of the entries.
fn blob_of(entries: &[&Entry]) -> Option<Digest> {
    entries.iter().find_map(|e| e.blob.clone())
}

/// Swaps `fresh` into `dest` atomically; where the filesystem cannot exchange, moves `dest` to
/// `aside` first (the layer is missing for that moment).
fn exchange(fresh: &Path, dest: &Path, aside: &Path) -> Result<()> {
    use rustix::fs::{renameat_with, RenameFlags, CWD};
    match renameat_with(CWD, fresh, CWD, dest, RenameFlags::EXCHANGE) {
        Ok(()) => Ok(()),
        Err(rustix::io::Errno::INVAL | rustix::io::Errno::NOSYS) => {
            std::fs::rename(dest, aside).at("move aside", dest)?;
            std::fs::rename(fresh, dest).at("rename into place", dest)
        }
        Err(e) => Err(std::io::Error::from(e)).at("exchange layer directory", dest),
    }
}

/// Flushes everything of the filesystem holding `root` to disk.
pub(crate) fn syncfs(root: &Path) -> Result<()> {
    let dir = std::fs::File::open(root).at("open", root)?;
    rustix::fs::syncfs(&dir)
        .map_err(std::io::Error::from)
        .at("syncfs", root)
}

/// Fault injection: SIGKILLs this process when [`KILL_DURING_RECOVERY_ENV`] names `point`.
fn fault_point(point: &str) {
    if std::env::var_os(KILL_DURING_RECOVERY_ENV).is_some_and(|v| v == point) {
        let _ = nix::sys::signal::kill(nix::unistd::getpid(), nix::sys::signal::Signal::SIGKILL);
    }
}
