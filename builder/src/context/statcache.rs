//! Persistent memo of file content hashes, keyed by stat data, with git's racy-entry rule.
//!
//! An entry is trusted only when (dev, inode, size, mtime_ns, ctime_ns) all match and the file's
//! ctime and mtime are strictly older than the moment the run that hashed it started (measured on
//! the filesystem's own clock). A file changed in the same clock tick as the hashing run could keep
//! identical stat data, so such "racy" entries are hashed again by the next run.

use std::collections::HashMap;
use std::fs::{self, File};
use std::io::{BufReader, BufWriter, Read, Write};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

/// Version 02 added the has-xattrs byte (version 01 files are dropped: one re-hash).
const MAGIC: &[u8; 8] = b"RBSTAT02";
const ENTRY_LEN: usize = 8 * 5 + 32 + 1;
/// Width of the window before the run start in which changed files count as racy: the
/// coarsest timestamp granularity of a common filesystem (FAT's 2 seconds).
const RACY_WINDOW_NS: i64 = 2_000_000_000;
/// Upper bound of remembered entries per context; older ones are dropped past it.
const MAX_ENTRIES: usize = 2_000_000;

/// Stat data identifying one version of a file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StatKey {
    /// Device number.
    pub dev: u64,
    /// Inode number.
    pub ino: u64,
    /// Size in bytes.
    pub size: u64,
    /// Modification time, nanoseconds since the epoch.
    pub mtime_ns: i64,
    /// Status change time, nanoseconds since the epoch.
    pub ctime_ns: i64,
}

impl StatKey {
    /// Stat data of `meta`.
    pub fn of(meta: &fs::Metadata) -> StatKey {
        StatKey {
            dev: meta.dev(),
            ino: meta.ino(),
            size: meta.size(),
            mtime_ns: meta.mtime() * 1_000_000_000 + meta.mtime_nsec(),
            ctime_ns: meta.ctime() * 1_000_000_000 + meta.ctime_nsec(),
        }
    }
}

#[derive(Debug, Clone, Copy)]
struct Entry {
    key: StatKey,
    hash: [u8; 32],
    /// The file had extended attributes a copy keeps (so they must be read); when false and
    /// the stat data match, there are none (setting one changes the ctime).
    xattrs: bool,
    /// Racy when recorded: re-hash next time even if stat data matches.
    racy: bool,
}

/// In-memory stat cache loaded from (and saved to) one file.
#[derive(Debug)]
pub struct StatCache {
    path: Option<PathBuf>,
    /// Filesystem time at which the current run started; later-changed files are racy.
    run_start_ns: i64,
    entries: HashMap<(u64, u64), Entry>,
    dirty: bool,
    hits: u64,
    misses: u64,
}

impl StatCache {
    /// A cache that remembers nothing across runs.
    pub fn in_memory() -> StatCache {
        StatCache {
            path: None,
            run_start_ns: i64::MAX,
            entries: HashMap::new(),
            dirty: false,
            hits: 0,
            misses: 0,
        }
    }

    /// Loads the cache file at `path` (a missing or damaged file gives an empty cache). The run
    /// start time is read from the filesystem clock by touching a stamp file beside `path`.
    pub fn load(path: &Path) -> std::io::Result<StatCache> {
        let dir = path.parent().unwrap_or(Path::new("."));
        fs::create_dir_all(dir)?;
        let run_start_ns = fs_now_ns(dir)?;
        let mut cache = StatCache {
            path: Some(path.to_path_buf()),
            run_start_ns,
            entries: HashMap::new(),
            dirty: false,
            hits: 0,
            misses: 0,
        };
        if let Ok(f) = File::open(path) {
            if read_entries(f, &mut cache.entries).is_err() {
                cache.entries.clear();
            }
        }
        Ok(cache)
    }

    /// The remembered content hash for a file with stat data `key`, and whether it has
    /// extended attributes to read, when they can be trusted.
    pub fn get(&mut self, key: &StatKey) -> Option<([u8; 32], bool)> {
        match self.entries.get(&(key.dev, key.ino)) {
            Some(e) if !e.racy && e.key == *key => {
                self.hits += 1;
                Some((e.hash, e.xattrs))
            }
            _ => {
                self.misses += 1;
                None
            }
        }
    }

    /// Records the content hash of a file with stat data `key`, and whether it has extended
    /// attributes.
    pub fn put(&mut self, key: StatKey, hash: [u8; 32], xattrs: bool) {
        // The run start is read on the store's filesystem; the context's may keep coarser
        // times (1 s on ext3, 2 s on FAT), where a file changed just after it was hashed can
        // keep the very same mtime and ctime. So anything changed in the 2-second window of
        // the run start counts as racy too.
        let horizon = self.run_start_ns - self.run_start_ns.rem_euclid(RACY_WINDOW_NS);
        let racy = key.mtime_ns >= horizon || key.ctime_ns >= horizon;
        self.entries.insert(
            (key.dev, key.ino),
            Entry {
                key,
                hash,
                xattrs,
                racy,
            },
        );
        self.dirty = true;
    }

    /// (hits, misses) of this run.
    pub fn stats(&self) -> (u64, u64) {
        (self.hits, self.misses)
    }

    /// Writes the cache back (atomically) when something changed.
    pub fn save(&mut self) -> std::io::Result<()> {
        let Some(path) = self.path.clone() else {
            return Ok(());
        };
        if !self.dirty {
            return Ok(());
        }
        let tmp = path.with_extension(format!("tmp{}", std::process::id()));
        let result = (|| {
            let mut w = BufWriter::new(File::create(&tmp)?);
            w.write_all(MAGIC)?;
            let n = self.entries.len().min(MAX_ENTRIES);
            w.write_all(&(n as u64).to_le_bytes())?;
            for e in self.entries.values().take(n) {
                let mut buf = [0u8; ENTRY_LEN];
                buf[0..8].copy_from_slice(&e.key.dev.to_le_bytes());
                buf[8..16].copy_from_slice(&e.key.ino.to_le_bytes());
                buf[16..24].copy_from_slice(&e.key.size.to_le_bytes());
                // A racy entry is stored with an impossible mtime so it never matches.
                let mtime = if e.racy { i64::MIN } else { e.key.mtime_ns };
                buf[24..32].copy_from_slice(&mtime.to_le_bytes());
                buf[32..40].copy_from_slice(&e.key.ctime_ns.to_le_bytes());
                buf[40..72].copy_from_slice(&e.hash);
                buf[72] = u8::from(e.xattrs);
                w.write_all(&buf)?;
            }
            w.into_inner().map_err(|e| e.into_error())?.sync_all()?;
            fs::rename(&tmp, &path)
        })();
        if result.is_err() {
            let _ = fs::remove_file(&tmp);
        }
        result?;
        self.dirty = false;
        Ok(())
    }
}

fn read_entries(f: File, out: &mut HashMap<(u64, u64), Entry>) -> std::io::Result<()> {
    let mut r = BufReader::with_capacity(1 << 16, f);
    let mut magic = [0u8; 8];
    r.read_exact(&mut magic)?;
    if &magic != MAGIC {
        return Err(std::io::Error::other("bad stat cache magic"));
    }
    let mut n = [0u8; 8];
    r.read_exact(&mut n)?;
    let n = u64::from_le_bytes(n) as usize;
    out.reserve(n.min(MAX_ENTRIES));
    let u = |b: &[u8]| u64::from_le_bytes(b.try_into().unwrap_or([0; 8]));
    let mut buf = [0u8; ENTRY_LEN];
    for _ in 0..n.min(MAX_ENTRIES) {
        r.read_exact(&mut buf)?;
        let key = StatKey {
            dev: u(&buf[0..8]),
            ino: u(&buf[8..16]),
            size: u(&buf[16..24]),
            mtime_ns: u(&buf[24..32]) as i64,
            ctime_ns: u(&buf[32..40]) as i64,
        };
        let mut hash = [0u8; 32];
        hash.copy_from_slice(&buf[40..72]);
        let racy = key.mtime_ns == i64::MIN;
        let xattrs = buf[72] != 0;
        out.insert(
            (key.dev, key.ino),
            Entry {
                key,
                hash,
                xattrs,
                racy,
            },
        );
    }
    Ok(())
}

/// The filesystem's current time (the clock that stamps mtimes and ctimes in `dir`).
fn fs_now_ns(dir: &Path) -> std::io::Result<i64> {
    let stamp = dir.join(format!(".stamp{}", std::process::id()));
    let f = File::create(&stamp)?;
    let meta = f.metadata();
    drop(f);
    let _ = fs::remove_file(&stamp);
    let meta = meta?;
    Ok(meta.mtime() * 1_000_000_000 + meta.mtime_nsec())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roundtrip_and_racy_entries() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sc");
        let mut c = StatCache::load(&path).unwrap();
        let old = StatKey {
            dev: 1,
            ino: 2,
            size: 3,
            mtime_ns: 10,
            ctime_ns: 11,
        };
        let racy = StatKey {
            dev: 1,
            ino: 3,
            size: 3,
            mtime_ns: i64::MAX - 1,
            ctime_ns: 11,
        };
        let with_xattrs = StatKey { ino: 4, ..old };
        c.put(old, [7; 32], false);
        c.put(racy, [8; 32], false);
        c.put(with_xattrs, [9; 32], true);
        c.save().unwrap();
        let mut c = StatCache::load(&path).unwrap();
        assert_eq!(c.get(&old), Some(([7; 32], false)));
        assert_eq!(c.get(&with_xattrs), Some(([9; 32], true)));
        assert_eq!(c.get(&racy), None);
        let changed = StatKey {
            ctime_ns: 12,
            ..old
        };
        assert_eq!(c.get(&changed), None);
    }

    #[test]
    fn files_changed_in_the_seconds_before_the_run_are_racy() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sc");
        let mut c = StatCache::load(&path).unwrap();
        let start = c.run_start_ns;
        // On a filesystem with whole-second times, a file changed after this run hashed it
        // can show a time just below the run start: it must be hashed again next time.
        let window_start = start - start.rem_euclid(RACY_WINDOW_NS);
        let coarse = StatKey {
            dev: 1,
            ino: 2,
            size: 3,
            mtime_ns: window_start,
            ctime_ns: window_start,
        };
        let settled = StatKey {
            ino: 3,
            mtime_ns: window_start - 1,
            ctime_ns: window_start - 1,
            ..coarse
        };
        c.put(coarse, [1; 32], false);
        c.put(settled, [2; 32], false);
        c.save().unwrap();
        let mut c = StatCache::load(&path).unwrap();
        assert_eq!(c.get(&coarse), None);
        assert_eq!(c.get(&settled), Some(([2; 32], false)));
    }
}
