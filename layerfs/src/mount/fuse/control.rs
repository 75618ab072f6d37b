//! Aborting one FUSE kernel connection through the control filesystem (fusectl).
//!
//! fusectl names a connection by a number, the minor of its mount's anonymous device, and the
//! kernel hands that number to the next mount as soon as the connection is gone. Writing to
//! `/sys/fs/fuse/connections/<n>/abort` later, by number, may therefore abort somebody else's
//! newer mount (a killed rbuild's watchdog used to abort the mount of the very next build).
//! An [`AbortHandle`] is the `abort` file opened while the connection is known to be ours: the
//! open file stays bound to that connection, and once the connection has ended, writing to it
//! does nothing (the kernel clears the file's link to the connection when it removes it).

use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::os::fd::{AsRawFd, RawFd};
use std::path::Path;

/// Where fusectl exposes connections.
pub const FUSECTL: &str = "/sys/fs/fuse/connections";

/// The `abort` file of one FUSE connection, bound to that connection (see the module docs).
#[derive(Debug)]
pub struct AbortHandle {
    file: File,
    connection: u32,
}

impl AbortHandle {
    /// Opens the abort file of connection `connection`, mounting fusectl when it is not
    /// mounted yet. The caller must know that the connection is the one it means right now
    /// (e.g. its mount is still there; see [`AbortHandle::of_mount`]).
    pub fn open(connection: u32) -> io::Result<AbortHandle> {
        let path = format!("{FUSECTL}/{connection}/abort");
        let open = || OpenOptions::new().write(true).open(&path);
        let file = match open() {
            Ok(file) => file,
            Err(first) => {
                let mounted = rustix::mount::mount(
                    "fusectl",
                    FUSECTL,
                    "fusectl",
                    rustix::mount::MountFlags::empty(),
                    None,
                );
                match mounted {
                    Ok(()) => open()?,
                    Err(_) => return Err(first),
                }
            }
        };
        Ok(AbortHandle { file, connection })
    }

    /// The abort handle of the rbuild FUSE mount at `point` (as listed in mountinfo), checked
    /// to belong to that mount: the mount is still listed with the same connection after the
    /// open, so the number cannot have passed to another mount in between.
    pub fn of_mount(point: &Path) -> Option<AbortHandle> {
        let connection = super::mount_connection(point)?;
        let handle = AbortHandle::open(connection).ok()?;
        (super::mount_connection(point) == Some(connection)).then_some(handle)
    }

    /// The connection number this handle aborts.
    pub fn connection(&self) -> u32 {
        self.connection
    }

    /// Aborts the connection (every waiting and future request fails, its server's reads
    /// end); does nothing when the connection has already ended.
    pub fn abort(&self) -> io::Result<()> {
        (&self.file).write_all(b"1")
    }

    /// The open abort file (for a forked watchdog that writes to it with raw system calls).
    pub fn as_raw_fd(&self) -> RawFd {
        self.file.as_raw_fd()
    }
}
