//! The journal of unsynced layer directories, `state/unsynced`.
//!
//! A layer directory is published by a rename without syncing its files (a `syncfs` per pull
//! would cost too much), so after a power loss its files can be empty or missing. Before the
//! rename, one line naming the layer and the current boot is appended to this journal and
//! `fdatasync`ed. The next [`super::Store::open`] after a reboot re-creates every layer listed
//! under another boot from its blob (see `recover`); within a boot, entries old enough to have
//! been written back by the kernel are dropped after a `syncfs` (compaction).
//!
//! Line format: `<boot-id> <boottime-secs> <diff-id-hex> <blob-hex|-> [note]`. The boot id is
//! `/proc/sys/kernel/random/boot_id`, or [`UNRECOVERED`] for a layer that could not be
//! re-created (the note says why; `system check` reports it). Lines that do not parse (a torn
//! append of a process that died before its rename) are ignored.
//!
//! Appenders hold a shared `flock` on `state/unsynced.lock`; rewrites hold it exclusively and
//! remove only the lines they handled, so an entry appended meanwhile is never lost.

use super::error::{IoContext, Result};
use super::fsutil::{atomic_write, fsync_dir, random_hex};
use super::lock::open_lock_file;
use super::Store;
use crate::digest::Digest;
use nix::fcntl::{Flock, FlockArg};
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

/// Boot id of entries whose layer could not be re-created; they stay until the layer dir is
/// removed.
pub(crate) const UNRECOVERED: &str = "unrecovered";

/// One journal line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Entry {
    /// Boot id at publish time, or [`UNRECOVERED`].
    pub boot: String,
    /// `CLOCK_BOOTTIME` seconds at publish time.
    pub secs: u64,
    /// The layer.
    pub diff_id: Digest,
    /// Its compressed blob, when the publisher knew it.
    pub blob: Option<Digest>,
    /// Why recovery failed (only for [`UNRECOVERED`] entries).
    pub note: String,
}

impl Entry {
    /// The journal line (with its newline).
    fn line(&self) -> String {
        let blob = self
            .blob
            .as_ref()
            .map_or("-".to_string(), |b| b.hex().to_string());
        let mut line = format!(
            "{} {} {} {}",
            self.boot,
            self.secs,
            self.diff_id.hex(),
            blob
        );
        if !self.note.is_empty() {
            line.push(' ');
            line.push_str(&self.note.replace('\n', " "));
        }
        line.push('\n');
        line
    }

    /// Parses one line (without its newline); `None` when malformed.
    fn parse(line: &str) -> Option<Entry> {
        let mut fields = line.splitn(5, ' ');
        let boot = fields.next()?.to_string();
        let secs = fields.next()?.parse().ok()?;
        let diff_id = Digest::from_hex(fields.next()?).ok()?;
        let blob = match fields.next()? {
            "-" => None,
            hex => Some(Digest::from_hex(hex).ok()?),
        };
        let note = fields.next().unwrap_or("").to_string();
        if boot.is_empty() {
            return None;
        }
        Some(Entry {
            boot,
            secs,
            diff_id,
            blob,
            note,
        })
    }
}

/// This machine's boot id (`/proc/sys/kernel/random/boot_id`); `unknown-boot` when unreadable,
/// which disables recovery (every entry looks current) but not compaction.
pub(crate) fn boot_id() -> &'static str {
    static BOOT: OnceLock<String> = OnceLock::new();
    BOOT.get_or_init(|| {
        std::fs::read_to_string("/proc/sys/kernel/random/boot_id")
            .map(|s| s.trim().to_string())
            .ok()
            .filter(|s| !s.is_empty() && !s.contains(char::is_whitespace))
            .unwrap_or_else(|| "unknown-boot".to_string())
    })
}

/// Seconds since boot (`CLOCK_BOOTTIME`, which counts suspend and never jumps).
pub(crate) fn boottime_secs() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes only into the timespec we pass, which lives for the call.
    let rc = unsafe { libc::clock_gettime(libc::CLOCK_BOOTTIME, &mut ts) };
    if rc == 0 {
        ts.tv_sec.max(0) as u64
    } else {
        0
    }
}

/// The journal file and its lock.
#[derive(Debug)]
pub(crate) struct Journal {
    path: PathBuf,
    lock: PathBuf,
}

impl Journal {
    /// The journal of the store rooted at `root`.
    pub(crate) fn of(root: &Path) -> Journal {
        Journal {
            path: root.join("state/unsynced"),
            lock: root.join("state/unsynced.lock"),
        }
    }

    /// The journal file.
    pub(crate) fn path(&self) -> &Path {
        &self.path
    }

    /// Appends an entry for `diff_id` under the current boot and `fdatasync`s it.
    pub(crate) fn append(&self, diff_id: &Digest, blob: Option<&Digest>) -> Result<()> {
        let entry = Entry {
            boot: boot_id().to_string(),
            secs: boottime_secs(),
            diff_id: diff_id.clone(),
            blob: blob.cloned(),
            note: String::new(),
        };
        let _shared = self.flock(FlockArg::LockShared)?;
        let (mut file, created) = match OpenOptions::new()
            .append(true)
            .create_new(true)
            .mode(0o600)
            .open(&self.path)
        {
            Ok(f) => (f, true),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => (
                OpenOptions::new()
                    .append(true)
                    .open(&self.path)
                    .at("open", &self.path)?,
                false,
            ),
            Err(e) => return Err(e).at("create", &self.path),
        };
        // One write of a short line with O_APPEND: concurrent appenders do not interleave.
        file.write_all(entry.line().as_bytes())
            .at("append to", &self.path)?;
        file.sync_data().at("fdatasync", &self.path)?;
        if created {
            if let Some(state) = self.path.parent() {
                fsync_dir(state)?;
                if let Some(root) = state.parent() {
                    fsync_dir(root)?;
                }
            }
        }
        Ok(())
    }

    /// Every well-formed entry (an absent journal has none).
    pub(crate) fn read(&self) -> Result<Vec<Entry>> {
        let text = match std::fs::read(&self.path) {
            Ok(data) => data,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(e).at("read", &self.path),
        };
        let text = String::from_utf8_lossy(&text);
        // A last line without its newline is a torn append: ignore it.
        Ok(text
            .split_inclusive('\n')
            .filter_map(|l| l.strip_suffix('\n'))
            .filter_map(Entry::parse)
            .collect())
    }

    /// Replaces the entries in `done` by `replace` (holding the lock exclusively), keeping every
    /// other entry, including those appended since `done` was read. `tmp` is a directory on the
    /// store's filesystem for the new file.
    pub(crate) fn rewrite(&self, tmp: &Path, done: &[Entry], replace: &[Entry]) -> Result<()> {
        let _exclusive = self.flock(FlockArg::LockExclusive)?;
        let mut kept: Vec<Entry> = self
            .read()?
            .into_iter()
            .filter(|e| !done.contains(e))
            .collect();
        for r in replace {
            if !kept.contains(r) {
                kept.push(r.clone());
            }
        }
        if kept.is_empty() {
            return match OpenOptions::new().write(true).open(&self.path) {
                Ok(f) => {
                    f.set_len(0).at("truncate", &self.path)?;
                    f.sync_all().at("fsync", &self.path)
                }
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
                Err(e) => Err(e).at("open", &self.path),
            };
        }
        let text: String = kept.iter().map(Entry::line).collect();
        let tmp_file = tmp.join(format!("unsynced-{}", random_hex(4)));
        atomic_write(&tmp_file, &self.path, text.as_bytes())
    }

    /// Takes the journal lock.
    fn flock(&self, mode: FlockArg) -> Result<Flock<File>> {
        let file = open_lock_file(&self.lock)?;
        Flock::lock(file, mode).map_err(|(_, errno)| super::StoreError::Io {
            action: "lock",
            path: self.lock.clone(),
            cause: errno.into(),
        })
    }
}

impl Store {
    /// The journal of unsynced layer directories.
    pub(crate) fn unsynced_journal(&self) -> Journal {
        Journal::of(self.root())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(boot: &str, n: u8, blob: bool) -> Entry {
        Entry {
            boot: boot.into(),
            secs: 7,
            diff_id: Digest::of_bytes(&[n]),
            blob: blob.then(|| Digest::of_bytes(&[n, n])),
            note: String::new(),
        }
    }

    /// Lines round-trip, a note may hold spaces, and torn or foreign lines are skipped.
    #[test]
    fn lines_round_trip_and_torn_lines_are_ignored() {
        let mut noted = entry(UNRECOVERED, 3, false);
        noted.note = "no blob: not in any image".into();
        for e in [entry("b1", 1, true), entry("b1", 2, false), noted] {
            let line = e.line();
            assert_eq!(Entry::parse(line.trim_end_matches('\n')), Some(e));
        }
        let dir = tempfile::tempdir().expect("temp dir");
        std::fs::create_dir(dir.path().join("state")).expect("state dir");
        let j = Journal::of(dir.path());
        let good = entry("b1", 1, true);
        let torn = entry("b1", 2, true).line();
        let text = format!("{}garbage line\n{}", good.line(), &torn[..40]);
        std::fs::write(j.path(), text).expect("write journal");
        assert_eq!(j.read().expect("read"), vec![good]);
    }

    /// A rewrite removes what was handled and keeps what was appended in the meantime.
    #[test]
    fn rewrite_keeps_entries_appended_after_the_read() {
        let dir = tempfile::tempdir().expect("temp dir");
        std::fs::create_dir(dir.path().join("state")).expect("state dir");
        let j = Journal::of(dir.path());
        let a = Digest::of_bytes(b"a");
        j.append(&a, None).expect("append a");
        let seen = j.read().expect("read");
        let b = Digest::of_bytes(b"b");
        j.append(&b, Some(&a)).expect("append b");
        j.rewrite(dir.path(), &seen, &[]).expect("rewrite");
        let left = j.read().expect("read");
        assert_eq!(left.len(), 1);
        assert_eq!(
            (left[0].diff_id.clone(), left[0].blob.clone()),
            (b, Some(a))
        );
        assert_eq!(left[0].boot, boot_id());
        j.rewrite(dir.path(), &left, &[]).expect("rewrite all");
        assert_eq!(std::fs::metadata(j.path()).expect("stat").len(), 0);
    }
}
