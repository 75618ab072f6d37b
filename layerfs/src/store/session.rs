//! Process sessions and the cleanup of incomplete work.
//!
//! Every process that opens the store owns a session: a directory `tmp/<id>/` for its in-flight
//! work (ingests, scratch dirs, index updates) and a lock file `tmp/<id>.lock` it holds with
//! `flock` for as long as it lives. A session whose lock can be taken belongs to a dead process,
//! so its directory is incomplete work and is removed by the next process that opens the store.

use super::error::{IoContext, Result};
use super::fsutil::{ensure_dir, random_hex, remove_any};
use super::lock::{open_lock_file, try_lock};
use nix::fcntl::Flock;
use std::fs::{self, File};
use std::path::{Path, PathBuf};
use std::time::SystemTime;

const LOCK_SUFFIX: &str = ".lock";
const PENDING_PREFIX: &str = ".pending-";

/// A live session: its work directory and the held lock that proves it is alive.
#[derive(Debug)]
pub(crate) struct Session {
    dir: PathBuf,
    lock_path: PathBuf,
    _lock: Flock<File>,
}

impl Session {
    /// Starts a new session under `tmp`.
    pub(crate) fn start(tmp: &Path) -> Result<Session> {
        let id = random_hex(8);
        // Lock under a pending name first, then rename: a `<id>.lock` file is therefore always
        // locked by its owner from the moment it appears.
        let pending = tmp.join(format!("{PENDING_PREFIX}{id}"));
        let file = open_lock_file(&pending)?;
        let Some(lock) = try_lock(file, &pending)? else {
            return Err(super::StoreError::Other(format!(
                "session lock {} is unexpectedly held by another process",
                pending.display()
            )));
        };
        let lock_path = tmp.join(format!("{id}{LOCK_SUFFIX}"));
        fs::rename(&pending, &lock_path).at("rename session lock", &lock_path)?;
        let dir = tmp.join(&id);
        ensure_dir(&dir, 0o700)?;
        Ok(Session {
            dir,
            lock_path,
            _lock: lock,
        })
    }

    /// The session's work directory (same filesystem as the store's blobs and layers).
    pub(crate) fn dir(&self) -> &Path {
        &self.dir
    }
}

impl Drop for Session {
    fn drop(&mut self) {
        let _ = remove_any(&self.dir);
        let _ = fs::remove_file(&self.lock_path);
    }
}

/// Sessions of other live processes, with their start times (lock file mtimes).
pub(crate) fn live_sessions(tmp: &Path, own: &Session) -> Result<Vec<SystemTime>> {
    let mut starts = Vec::new();
    for entry in fs::read_dir(tmp).at("list", tmp)? {
        let entry = entry.at("list", tmp)?;
        let name = entry.file_name().to_string_lossy().into_owned();
        let path = entry.path();
        if !name.ends_with(LOCK_SUFFIX) || path == own.lock_path {
            continue;
        }
        let Ok(file) = File::open(&path) else {
            continue;
        };
        let started = file.metadata().and_then(|m| m.modified()).ok();
        match try_lock(file, &path)? {
            Some(_dead) => {}
            None => starts.extend(started),
        }
    }
    Ok(starts)
}

/// Removes the work of dead sessions and any stray entry in `tmp` that no live session owns.
/// Returns the number of entries removed.
pub(crate) fn clean_dead_sessions(tmp: &Path, own: &Session) -> Result<usize> {
    let mut removed = 0;
    let mut entries: Vec<(String, PathBuf)> = Vec::new();
    for entry in fs::read_dir(tmp).at("list", tmp)? {
        let entry = entry.at("list", tmp)?;
        entries.push((
            entry.file_name().to_string_lossy().into_owned(),
            entry.path(),
        ));
    }
    for (name, path) in entries {
        if path == own.lock_path || path == own.dir {
            continue;
        }
        if let Some(id) = name.strip_suffix(LOCK_SUFFIX) {
            let Ok(file) = File::open(&path) else {
                continue;
            };
            if let Some(_held) = try_lock(file, &path)? {
                // Owner is dead: remove its work, then its lock (still holding it). A FUSE
                // mount its process served is dead too (ENOTCONN) and would block removal, as
                // would the overlay and bind mounts it made as root (a build killed mid-RUN).
                crate::mount::fuse::detach_dead_below(&tmp.join(id));
                crate::mount::detach_all_below(&tmp.join(id));
                remove_any(&tmp.join(id))?;
                remove_any(&path)?;
                removed += 1;
            }
        } else if name.starts_with(PENDING_PREFIX) {
            // A process died between creating and publishing its session lock, or is doing so
            // right now; only remove it when nobody holds it.
            let Ok(file) = File::open(&path) else {
                continue;
            };
            if let Some(_held) = try_lock(file, &path)? {
                remove_any(&path)?;
                removed += 1;
            }
        } else if !tmp.join(format!("{name}{LOCK_SUFFIX}")).exists() {
            // Work without a session lock: its owner is gone (a live owner creates the lock first).
            remove_any(&path)?;
            removed += 1;
        }
    }
    Ok(removed)
}
