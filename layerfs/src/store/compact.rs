//! What [`Store::open`] does with the journal of unsynced layers (`unsynced`): recovery of the
//! layers of earlier boots (`recover`), then compaction, so the journal stays short: when an
//! entry of this boot is older than [`COMPACT_AGE_SECS`] (the kernel has long written its files
//! back, so `syncfs` finds little to do) or there are more than [`COMPACT_MAX_ENTRIES`], the
//! filesystem is synced and the entries it covers are dropped. Unrecovered entries whose layer
//! dir is gone are dropped as well. The normal open reads one small file and nothing else.

use super::error::Result;
use super::recover::{syncfs, RecoveryReport};
use super::unsynced::{boot_id, boottime_secs, Entry, UNRECOVERED};
use super::Store;

/// Age (seconds since boot) after which the entries of this boot are synced and dropped.
pub(crate) const COMPACT_AGE_SECS: u64 = 60;
/// Number of entries of this boot above which they are synced and dropped whatever their age.
pub(crate) const COMPACT_MAX_ENTRIES: usize = 512;

impl Store {
    /// Recovers the layers of earlier boots, then compacts the journal; problems are logged
    /// (and left for `system check`), never fail the open.
    pub(crate) fn settle_unsynced_layers(&self) -> RecoveryReport {
        let journal = self.unsynced_journal();
        let entries = match journal.read() {
            Ok(e) if e.is_empty() => return RecoveryReport::default(),
            Ok(e) => e,
            Err(e) => {
                tracing::warn!("reading the journal of unsynced layers: {e}");
                return RecoveryReport::default();
            }
        };
        let report = self.recover_unsynced_layers(&entries);
        let compacted = if report == RecoveryReport::default() {
            self.compact_unsynced(entries)
        } else {
            journal.read().and_then(|e| self.compact_unsynced(e))
        };
        if let Err(e) = compacted {
            tracing::warn!("compacting the journal of unsynced layers: {e}");
        }
        report
    }

    /// Drops the entries of this boot after a syncfs when they are old or many, and the
    /// unrecovered entries of layers that are gone.
    fn compact_unsynced(&self, entries: Vec<Entry>) -> Result<()> {
        let boot = boot_id();
        let now = boottime_secs();
        let current: Vec<Entry> = entries.iter().filter(|e| e.boot == boot).cloned().collect();
        let due = current.len() > COMPACT_MAX_ENTRIES
            || current
                .iter()
                .any(|e| now.saturating_sub(e.secs) >= COMPACT_AGE_SECS);
        let mut done: Vec<Entry> = entries
            .into_iter()
            .filter(|e| e.boot == UNRECOVERED && !self.layer_dir(&e.diff_id).exists())
            .collect();
        if due {
            syncfs(self.root())?;
            done.extend(current);
        }
        if done.is_empty() {
            return Ok(());
        }
        self.unsynced_journal()
            .rewrite(self.session_dir(), &done, &[])
    }
}
