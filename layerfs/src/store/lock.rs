//! The store-wide lock: an exclusive `flock` on `<root>/lock`. The kernel drops it when the holder
//! exits, so a process killed with -9 never blocks the next one.

use super::error::{IoContext, Result, StoreError};
use nix::fcntl::{Flock, FlockArg};
use std::fs::{File, OpenOptions};
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

/// Guard for the exclusive store lock; released on drop (or when the process dies).
#[derive(Debug)]
pub struct StoreLock {
    _flock: Flock<File>,
}

impl StoreLock {
    /// Blocks until the exclusive lock on `path` is held.
    pub(crate) fn acquire(path: &Path) -> Result<StoreLock> {
        let file = open_lock_file(path)?;
        let flock =
            Flock::lock(file, FlockArg::LockExclusive).map_err(|(_, errno)| StoreError::Io {
                action: "lock",
                path: path.to_path_buf(),
                cause: errno.into(),
            })?;
        Ok(StoreLock { _flock: flock })
    }
}

impl StoreLock {
    /// Takes the lock on `path` if it is free right now; `None` when another process holds it.
    pub(crate) fn try_acquire(path: &Path) -> Result<Option<StoreLock>> {
        let file = open_lock_file(path)?;
        Ok(try_lock(file, path)?.map(|flock| StoreLock { _flock: flock }))
    }
}

/// Opens (creating if needed) a lock file, close-on-exec.
pub(crate) fn open_lock_file(path: &Path) -> Result<File> {
    OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .mode(0o600)
        .open(path)
        .at("open lock file", path)
}

/// Tries to take an exclusive lock without blocking; `None` when someone else holds it.
pub(crate) fn try_lock(file: File, path: &Path) -> Result<Option<Flock<File>>> {
    match Flock::lock(file, FlockArg::LockExclusiveNonblock) {
        Ok(lock) => Ok(Some(lock)),
        Err((_, nix::errno::Errno::EWOULDBLOCK)) => Ok(None),
        Err((_, errno)) => Err(StoreError::Io {
            action: "lock",
            path: path.to_path_buf(),
            cause: errno.into(),
        }),
    }
}
