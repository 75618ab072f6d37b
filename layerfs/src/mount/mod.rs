//! Union mounts of layer chains: kernel overlayfs (and a FUSE fallback driver).
//!
//! A [`MountSpec`] names the layer dirs (lowest first), an optional upper/work pair and the
//! target. [`mount_union`] picks the driver and returns a [`UnionMount`] guard that unmounts
//! when dropped, so a failing caller never leaks a mount.

pub mod fuse;
mod overlay;

use std::fmt;
use std::path::{Path, PathBuf};
use std::str::FromStr;

/// What to mount where.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MountSpec {
    /// Layer directories, lowest (base) first.
    pub layers: Vec<PathBuf>,
    /// Writable upper dir; `None` makes a read-only mount.
    pub upper: Option<PathBuf>,
    /// Overlay work dir on the same filesystem as `upper`; required with `upper`.
    pub work: Option<PathBuf>,
    /// Mount point (an existing directory).
    pub target: PathBuf,
}

/// Union filesystem implementation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Driver {
    /// Kernel overlayfs.
    Overlay,
    /// The FUSE copy-on-write driver (same layer and upper-dir formats).
    Fuse,
    /// Overlay when the kernel allows it, otherwise FUSE.
    #[default]
    Auto,
}

impl FromStr for Driver {
    type Err = MountError;
    fn from_str(s: &str) -> Result<Self, MountError> {
        match s {
            "overlay" | "overlayfs" => Ok(Driver::Overlay),
            "fuse" => Ok(Driver::Fuse),
            "auto" => Ok(Driver::Auto),
            other => Err(MountError::UnknownDriver(other.to_string())),
        }
    }
}

impl fmt::Display for Driver {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Driver::Overlay => "overlay",
            Driver::Fuse => "fuse",
            Driver::Auto => "auto",
        })
    }
}

/// Errors from mounting and unmounting.
#[derive(Debug, thiserror::Error)]
pub enum MountError {
    /// Unknown driver name.
    #[error("unknown storage driver {0:?}: use overlay, fuse or auto")]
    UnknownDriver(String),
    /// The spec cannot be mounted as given.
    #[error("mount at {target}: {reason}")]
    BadSpec {
        /// The mount point.
        target: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// The kernel refused the mount.
    #[error("{driver} mount at {target} failed: {source}{detail}")]
    Mount {
        /// The driver used.
        driver: Driver,
        /// The mount point.
        target: PathBuf,
        /// The error.
        #[source]
        source: std::io::Error,
        /// Kernel log lines from the mount context, if any (prefixed with ": ").
        detail: String,
    },
    /// A driver is not available on this machine or in this build.
    #[error("storage driver {driver} is unavailable: {reason}")]
    DriverUnavailable {
        /// The driver.
        driver: Driver,
        /// Why.
        reason: String,
    },
    /// Unmounting failed.
    #[error(
        "unmount of {target} failed: {source}; check `findmnt {target}` and what still uses it"
    )]
    Unmount {
        /// The mount point.
        target: PathBuf,
        /// The error.
        #[source]
        source: std::io::Error,
    },
    /// The mount was still busy; it has been detached lazily instead.
    #[error("{0} was busy and has been detached lazily; processes may still use it")]
    Busy(PathBuf),
}

/// Result type of this module.
pub type Result<T, E = MountError> = std::result::Result<T, E>;

/// A mounted union filesystem; dropping it unmounts (lazily, so it never fails).
#[must_use = "dropping the guard unmounts immediately"]
pub struct UnionMount {
    target: PathBuf,
    driver: Driver,
    mounted: bool,
    /// Driver state that must live as long as the mount (e.g. a FUSE session).
    session: Option<Box<dyn std::any::Any + Send>>,
}

impl fmt::Debug for UnionMount {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("UnionMount")
            .field("target", &self.target)
            .field("driver", &self.driver)
            .field("mounted", &self.mounted)
            .finish()
    }
}

impl UnionMount {
    /// Wraps a kernel mount at `target` made by `driver`, plus any driver state to keep alive.
    pub(crate) fn new(
        target: PathBuf,
        driver: Driver,
        session: Option<Box<dyn std::any::Any + Send>>,
    ) -> Self {
        UnionMount {
            target,
            driver,
            mounted: true,
            session,
        }
    }

    /// The mount point.
    pub fn target(&self) -> &Path {
        &self.target
    }

    /// The driver that made this mount (never [`Driver::Auto`]).
    pub fn driver(&self) -> Driver {
        self.driver
    }

    /// Leaves the filesystem mounted after the guard is gone; returns the mount point.
    pub fn persist(mut self) -> PathBuf {
        self.mounted = false;
        if let Some(session) = self.session.take() {
            // Driver state of a persisted mount must outlive this guard.
            std::mem::forget(session);
        }
        std::mem::take(&mut self.target)
    }

    /// Unmounts now and reports failure; a busy mount is detached and reported as
    /// [`MountError::Busy`].
    pub fn unmount(mut self) -> Result<()> {
        self.mounted = false;
        let result = unmount_target(&self.target);
        self.session.take();
        result
    }
}

impl Drop for UnionMount {
    fn drop(&mut self) {
        if self.mounted {
            self.mounted = false;
            if let Err(e) =
                rustix::mount::unmount(&self.target, rustix::mount::UnmountFlags::DETACH)
            {
                tracing::warn!(target = %self.target.display(), error = %e, "unmount failed");
            }
        }
        self.session.take();
    }
}

/// Mounts `spec` with `driver` (for [`Driver::Auto`]: overlay, else FUSE).
pub fn mount_union(spec: &MountSpec, driver: Driver) -> Result<UnionMount> {
    // A FUSE mount left by a killed process fails every access with ENOTCONN; clear it.
    fuse::detach_stale(&spec.target);
    validate(spec)?;
    match driver {
        Driver::Overlay => overlay::mount(spec),
        Driver::Fuse => mount_fuse(spec),
        Driver::Auto => match overlay::mount(spec) {
            Ok(mount) => Ok(mount),
            Err(overlay_err) if overlay::unavailable(&overlay_err) => match mount_fuse(spec) {
                Ok(mount) => {
                    eprintln!("notice: using the FUSE storage driver: {overlay_err}");
                    Ok(mount)
                }
                Err(_) => Err(overlay_err),
            },
            Err(e) => Err(e),
        },
    }
}

/// The FUSE driver entry point (see [`fuse`]).
fn mount_fuse(spec: &MountSpec) -> Result<UnionMount> {
    let mount = fuse::mount(spec)?;
    Ok(UnionMount::new(
        spec.target.clone(),
        Driver::Fuse,
        Some(Box::new(mount)),
    ))
}

/// Unmounts whatever is mounted at `target` (e.g. a mount left by [`UnionMount::persist`]).
pub fn unmount_target(target: &Path) -> Result<()> {
    use rustix::mount::{unmount, UnmountFlags};
    match unmount(target, UnmountFlags::empty()) {
        Ok(()) => Ok(()),
        Err(rustix::io::Errno::BUSY) => {
            unmount(target, UnmountFlags::DETACH).map_err(|e| MountError::Unmount {
                target: target.to_path_buf(),
                source: e.into(),
            })?;
            Err(MountError::Busy(target.to_path_buf()))
        }
        Err(e) => Err(MountError::Unmount {
            target: target.to_path_buf(),
            source: e.into(),
        }),
    }
}

fn validate(spec: &MountSpec) -> Result<()> {
    let bad = |reason: String| MountError::BadSpec {
        target: spec.target.clone(),
        reason,
    };
    if !spec.target.is_dir() {
        return Err(bad("the mount point is not an existing directory".into()));
    }
    match (&spec.upper, &spec.work) {
        (Some(_), None) => return Err(bad("an upper dir needs a work dir".into())),
        (None, Some(_)) => return Err(bad("a work dir was given without an upper dir".into())),
        _ => {}
    }
    if spec.layers.is_empty() && spec.upper.is_none() {
        return Err(bad("nothing to mount: no layers and no upper dir".into()));
    }
    for dir in spec.layers.iter().chain(&spec.upper).chain(&spec.work) {
        if !dir.is_dir() {
            return Err(bad(format!("{} is not a directory", dir.display())));
        }
    }
    Ok(())
}
