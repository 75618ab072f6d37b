//! Union mounts of layer chains: kernel overlayfs (and a FUSE fallback driver).
//!
//! A [`MountSpec`] names the layer dirs (lowest first), an optional upper/work pair and the
//! target. [`mount_union`] picks the driver and returns a [`UnionMount`] guard that unmounts
//! when dropped, so a failing caller never leaks a mount.
//!
//! [`Driver::Auto`] mounts overlayfs and, when the kernel refuses it for a reason the FUSE
//! driver does not share (no overlayfs, no privilege, an upper dir on a filesystem overlayfs
//! will not write to, too many layers, ...), mounts the same spec with FUSE and prints a
//! one-line notice saying why (once per process; every fallback is also logged with tracing).

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

/// Environment variable naming the storage driver (`overlay`, `fuse` or `auto`): the CLI's
/// `--storage-driver` default, and what tests that mount read through [`Driver::from_env_or`].
pub const DRIVER_ENV: &str = "RBUILD_STORAGE_DRIVER";

impl Driver {
    /// The driver named by `$RBUILD_STORAGE_DRIVER`, or `default` when it is unset or empty;
    /// an unknown name is an error. Tests that mount use this so CI can run them under each
    /// driver.
    pub fn from_env_or(default: Driver) -> Result<Driver> {
        match std::env::var(DRIVER_ENV) {
            Ok(name) if !name.trim().is_empty() => name.trim().parse(),
            _ => Ok(default),
        }
    }
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
    /// The kernel (or the driver) refused the mount.
    #[error("{driver} mount at {target} failed: {}{detail}", lower_first(cause))]
    Mount {
        /// The driver used.
        driver: Driver,
        /// The mount point.
        target: PathBuf,
        /// The error (part of the message, so not repeated as a source).
        cause: std::io::Error,
        /// More about it, prefixed with ": " or "; ": the kernel's log lines from the mount
        /// context, or what to do.
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
        "unmount of {target} failed: {}; check `findmnt {target}` and what still uses it",
        lower_first(cause)
    )]
    Unmount {
        /// The mount point.
        target: PathBuf,
        /// The error (part of the message, so not repeated as a source).
        cause: std::io::Error,
    },
    /// [`Driver::Auto`]: overlayfs refused the mount and the FUSE fallback failed as well.
    #[error("{overlay}; the FUSE fallback failed as well: {fuse}")]
    NoDriver {
        /// Why overlayfs failed.
        overlay: Box<MountError>,
        /// Why the FUSE driver failed.
        fuse: Box<MountError>,
    },
    /// The mount was still busy; it has been detached lazily instead.
    #[error("{0} was busy and has been detached lazily; processes may still use it")]
    Busy(PathBuf),
    /// The FUSE server process of a mount at `target` could not mount; `message` is its own
    /// error, which names the mount point.
    #[error("{message}")]
    Server {
        /// The mount point.
        target: PathBuf,
        /// The server's error message.
        message: String,
    },
}

/// An error's message with its first letter in lower case, as rbuild's messages are ("No such
/// file or directory (os error 2)" reads "no such file ...").
fn lower_first(err: &impl fmt::Display) -> String {
    let text = err.to_string();
    let mut chars = text.chars();
    match chars.next() {
        Some(first) if first.is_uppercase() && !chars.next().is_some_and(char::is_uppercase) => {
            first
                .to_lowercase()
                .chain(text[first.len_utf8()..].chars())
                .collect()
        }
        _ => text,
    }
}

/// Result type of this module.
pub type Result<T, E = MountError> = std::result::Result<T, E>;

/// A mounted union filesystem; dropping it unmounts (lazily, so it never fails).
#[must_use = "dropping the guard unmounts immediately"]
pub struct UnionMount {
    target: PathBuf,
    driver: Driver,
    mounted: bool,
    /// Why [`Driver::Auto`] fell back to FUSE, if it did.
    fallback: Option<String>,
    /// Driver state that must live as long as the mount (e.g. a FUSE session).
    session: Option<Box<dyn std::any::Any + Send>>,
}

impl fmt::Debug for UnionMount {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("UnionMount")
            .field("target", &self.target)
            .field("driver", &self.driver)
            .field("mounted", &self.mounted)
            .field("fallback", &self.fallback)
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
            fallback: None,
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

    /// Why [`Driver::Auto`] mounted with FUSE instead of overlayfs (the reason of the notice);
    /// `None` when the requested driver made the mount.
    pub fn fallback_reason(&self) -> Option<&str> {
        self.fallback.as_deref()
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
            let result =
                match rustix::mount::unmount(&self.target, rustix::mount::UnmountFlags::DETACH) {
                    Err(rustix::io::Errno::PERM) if self.session.is_some() => {
                        fuse::fusermount_unmount(&self.target, true)
                    }
                    other => other.map_err(Into::into),
                };
            if let Err(e) = result {
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
        Driver::Overlay => mount_overlay(spec),
        Driver::Fuse => mount_fuse(spec),
        Driver::Auto => mount_auto(spec, mount_overlay, mount_fuse),
    }
}

/// The overlay driver; a refusal carries the kernel's own reason when it gave one.
fn mount_overlay(spec: &MountSpec) -> Result<UnionMount> {
    overlay::mount(spec).map_err(|err| match err {
        MountError::Mount {
            driver,
            target,
            cause,
            detail,
        } if detail.is_empty() => MountError::Mount {
            driver,
            target,
            // mount(2) leaves its reason in the kernel log only: replay it in a mount context.
            detail: overlay::explain(spec),
            cause,
        },
        other => other,
    })
}

/// [`Driver::Auto`]: `overlay`, and `fuse` when overlayfs refuses this mount (see
/// [`overlay_refusal`]).
fn mount_auto(
    spec: &MountSpec,
    overlay: impl FnOnce(&MountSpec) -> Result<UnionMount>,
    fuse: impl FnOnce(&MountSpec) -> Result<UnionMount>,
) -> Result<UnionMount> {
    let overlay_err = match overlay(spec) {
        Ok(mount) => return Ok(mount),
        Err(e) => e,
    };
    let Some(why) = overlay_refusal(&overlay_err) else {
        return Err(overlay_err);
    };
    match fuse(spec) {
        Ok(mut mount) => {
            let reason = format!("{why} ({overlay_err})").replace('\n', "; ");
            announce_fallback(&reason);
            mount.fallback = Some(reason);
            Ok(mount)
        }
        Err(fuse_err) => Err(MountError::NoDriver {
            overlay: Box::new(overlay_err),
            fuse: Box::new(fuse_err),
        }),
    }
}

/// Why overlayfs failed with `err` in words for the notice, when the failure is one the FUSE
/// driver does not share; `None` otherwise (e.g. EBUSY: the upper dir is in use by another
/// mount, which FUSE must not share either).
///
/// What the kernel returns: ENODEV without overlayfs; EPERM without CAP_SYS_ADMIN (or in a user
/// namespace before Linux 5.11); ENOSYS without the mount API; EINVAL when it refuses the dirs
/// (an upper dir on overlayfs, FUSE, NFS or a read-only filesystem, upper and work dirs on
/// different mounts, more than 500 layers, stacking too deep); EOPNOTSUPP when a filesystem
/// lacks a feature overlayfs needs.
fn overlay_refusal(err: &MountError) -> Option<&'static str> {
    let MountError::Mount { cause, .. } = err else {
        return None;
    };
    Some(match cause.raw_os_error()? {
        libc::ENODEV => "this kernel has no overlayfs",
        libc::EPERM => "no privilege to mount overlayfs",
        libc::ENOSYS => "this kernel lacks a mount call overlayfs needs",
        libc::EINVAL => "overlayfs refuses these dirs",
        libc::EOPNOTSUPP => "a filesystem lacks a feature overlayfs needs",
        _ => return None,
    })
}

/// Prints the one-line fallback notice the first time in this process; later fallbacks are
/// only logged.
fn announce_fallback(reason: &str) {
    use std::sync::atomic::{AtomicBool, Ordering};
    static ANNOUNCED: AtomicBool = AtomicBool::new(false);
    tracing::info!(%reason, "overlayfs refused a mount; using the FUSE storage driver");
    if !ANNOUNCED.swap(true, Ordering::Relaxed) {
        eprintln!(
            "notice: using the FUSE storage driver (slower): {reason}; \
             choose one with --storage-driver overlay|fuse"
        );
    }
}

/// Like [`mount_union`], but a FUSE mount is served by a separate process started with
/// `server` (see [`fuse::server`]), so it outlives this process; the server ends itself when
/// `owner` (if given) disappears. The guard's drop or [`UnionMount::unmount`] unmount it (the
/// server then exits); [`UnionMount::persist`] leaves it to a later command.
pub fn mount_union_served(
    spec: &MountSpec,
    driver: Driver,
    server: &fuse::server::ServerCommand,
    owner: Option<&Path>,
) -> Result<UnionMount> {
    let served = |spec: &MountSpec| -> Result<UnionMount> {
        fuse::detach_stale(&spec.target);
        validate(spec)?;
        let process = fuse::server::spawn(server, spec, owner)?;
        Ok(UnionMount::new(
            spec.target.clone(),
            Driver::Fuse,
            Some(Box::new(process)),
        ))
    };
    match driver {
        Driver::Fuse => served(spec),
        Driver::Overlay => mount_union(spec, Driver::Overlay),
        Driver::Auto => mount_auto(spec, |spec| mount_union(spec, Driver::Overlay), served),
    }
}

/// The pid of the process serving `mount` when it is a FUSE mount made by
/// [`mount_union_served`]; record it so later commands can end the server.
pub fn server_pid(mount: &UnionMount) -> Option<u32> {
    mount
        .session
        .as_ref()
        .and_then(|s| s.downcast_ref::<fuse::server::FuseServer>())
        .map(fuse::server::FuseServer::pid)
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

/// Unmounts whatever is mounted at `target` (e.g. a mount left by [`UnionMount::persist`]);
/// without privilege, through fusermount3 (only our FUSE mounts can be there then).
pub fn unmount_target(target: &Path) -> Result<()> {
    use rustix::mount::{unmount, UnmountFlags};
    match unmount(target, UnmountFlags::empty()) {
        Ok(()) => Ok(()),
        Err(rustix::io::Errno::PERM) if crate::rootless::is_rootless() => {
            match fuse::fusermount_unmount(target, false) {
                Ok(()) => Ok(()),
                Err(e) if e.kind() == std::io::ErrorKind::ResourceBusy => {
                    fuse::fusermount_unmount(target, true).map_err(|cause| {
                        MountError::Unmount {
                            target: target.to_path_buf(),
                            cause,
                        }
                    })?;
                    Err(MountError::Busy(target.to_path_buf()))
                }
                Err(cause) => Err(MountError::Unmount {
                    target: target.to_path_buf(),
                    cause,
                }),
            }
        }
        Err(rustix::io::Errno::BUSY) => {
            unmount(target, UnmountFlags::DETACH).map_err(|e| MountError::Unmount {
                target: target.to_path_buf(),
                cause: e.into(),
            })?;
            Err(MountError::Busy(target.to_path_buf()))
        }
        Err(e) => Err(MountError::Unmount {
            target: target.to_path_buf(),
            cause: e.into(),
        }),
    }
}

/// Lazily detaches every mount at or below `dir`, innermost first, whatever its type: for the
/// work dir of a process known to be dead, whose overlay and bind mounts (made in this mount
/// namespace, so they outlive it) would otherwise keep the dir from being removed (EBUSY).
/// Without privilege nothing but our FUSE mounts can be there (see
/// [`fuse::detach_dead_below`]), and the attempts fail harmlessly. Returns the mount points.
pub fn detach_all_below(dir: &Path) -> Vec<PathBuf> {
    let dir = std::fs::canonicalize(dir).unwrap_or_else(|_| dir.to_path_buf());
    let Ok(mountinfo) = std::fs::read_to_string("/proc/self/mountinfo") else {
        return Vec::new();
    };
    let points: Vec<PathBuf> = mountinfo
        .lines()
        .filter_map(|line| line.split(' ').nth(4))
        .map(|p| PathBuf::from(fuse::unescape_mountinfo(p)))
        .filter(|p| p.starts_with(&dir))
        .collect();
    let mut detached = Vec::new();
    for point in points.into_iter().rev() {
        if rustix::mount::unmount(&point, rustix::mount::UnmountFlags::DETACH).is_ok() {
            tracing::info!(target = %point.display(), "detached a mount of a dead process");
            detached.push(point);
        }
    }
    detached
}

fn validate(spec: &MountSpec) -> Result<()> {
    let bad = |reason: String| MountError::BadSpec {
        target: spec.target.clone(),
        reason,
    };
    if !spec.target.is_dir() {
        return Err(bad(
            "the mount point is not an existing directory; create the directory first".into(),
        ));
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

#[cfg(test)]
mod tests {
    //! [`Driver::Auto`] with overlay failures injected (the real refusals are in
    //! tests/mount_auto.rs): each errno that FUSE does not share falls back, the others do not.

    use super::*;
    use std::fs;

    /// One layer with a file, an empty upper/work pair and a mount point below `root`.
    fn spec(root: &Path) -> MountSpec {
        let dir = |name: &str| {
            let p = root.join(name);
            fs::create_dir_all(&p).expect("create test dir");
            p
        };
        let layer = dir("layer");
        fs::write(layer.join("base"), b"from the layer").expect("write layer file");
        MountSpec {
            layers: vec![layer],
            upper: Some(dir("upper")),
            work: Some(dir("work")),
            target: dir("merged"),
        }
    }

    /// An overlay driver that fails with `errno`, as the kernel would.
    fn refusing(errno: i32) -> impl FnOnce(&MountSpec) -> Result<UnionMount> {
        move |spec| {
            Err(MountError::Mount {
                driver: Driver::Overlay,
                target: spec.target.clone(),
                cause: std::io::Error::from_raw_os_error(errno),
                detail: String::new(),
            })
        }
    }

    #[test]
    fn auto_falls_back_to_a_working_fuse_mount_when_overlay_is_missing_or_forbidden() {
        for (errno, why) in [
            (libc::ENODEV, "this kernel has no overlayfs"),
            (libc::EPERM, "no privilege to mount overlayfs"),
            (libc::ENOSYS, "lacks a mount call"),
            (libc::EINVAL, "overlayfs refuses these dirs"),
            (libc::EOPNOTSUPP, "lacks a feature overlayfs needs"),
        ] {
            let tmp = tempfile::tempdir().expect("temp dir");
            let spec = spec(tmp.path());
            let mount =
                mount_auto(&spec, refusing(errno), mount_fuse).expect("FUSE fallback mount");
            assert_eq!(mount.driver(), Driver::Fuse);
            let reason = mount.fallback_reason().expect("a fallback reason");
            assert!(reason.contains(why), "errno {errno}: {reason}");
            let os_error = lower_first(&std::io::Error::from_raw_os_error(errno));
            assert!(reason.contains(&os_error), "{reason}");
            assert!(!reason.contains('\n'), "the notice is one line: {reason}");
            assert_eq!(
                fs::read(spec.target.join("base")).expect("read through FUSE"),
                b"from the layer"
            );
            fs::write(spec.target.join("new"), b"n").expect("write through FUSE");
            mount.unmount().expect("unmount");
            let upper = spec.upper.as_ref().expect("upper");
            assert_eq!(fs::read(upper.join("new")).expect("upper file"), b"n");
        }
    }

    #[test]
    fn auto_keeps_overlay_errors_that_fuse_would_share() {
        // EBUSY: the upper dir is in use by another mount; ENOENT/EROFS: the dirs themselves.
        for errno in [libc::EBUSY, libc::ENOENT, libc::EROFS, libc::ELOOP] {
            let tmp = tempfile::tempdir().expect("temp dir");
            let spec = spec(tmp.path());
            let err = mount_auto(&spec, refusing(errno), mount_fuse).expect_err("no fallback");
            assert!(
                matches!(&err, MountError::Mount { driver: Driver::Overlay, cause, .. }
                    if cause.raw_os_error() == Some(errno)),
                "{err}"
            );
            assert!(!fuse::is_stale(&spec.target));
            assert_eq!(
                fs::read_dir(&spec.target).expect("mount point").count(),
                0,
                "nothing is mounted"
            );
        }
    }

    #[test]
    fn auto_reports_both_drivers_when_the_fallback_fails_too() {
        let tmp = tempfile::tempdir().expect("temp dir");
        let mut spec = spec(tmp.path());
        // A layer that is not there defeats the FUSE driver as well.
        spec.layers.push(tmp.path().join("missing-layer"));
        let err = mount_auto(&spec, refusing(libc::ENODEV), mount_fuse).expect_err("both fail");
        let MountError::NoDriver { overlay, fuse } = &err else {
            panic!("expected NoDriver, got {err}");
        };
        assert!(matches!(
            **overlay,
            MountError::Mount {
                driver: Driver::Overlay,
                ..
            }
        ));
        assert!(
            matches!(&**fuse, MountError::Mount { driver: Driver::Fuse, cause, .. }
                if cause.kind() == std::io::ErrorKind::NotFound),
            "{fuse}"
        );
        let message = err.to_string();
        assert!(
            message.contains("the FUSE fallback failed as well"),
            "{message}"
        );
    }

    #[test]
    fn only_kernel_refusals_count_as_overlay_refusals() {
        let bad_spec = MountError::BadSpec {
            target: "/t".into(),
            reason: "x".into(),
        };
        assert_eq!(overlay_refusal(&bad_spec), None);
        let unavailable = MountError::DriverUnavailable {
            driver: Driver::Overlay,
            reason: "x".into(),
        };
        assert_eq!(overlay_refusal(&unavailable), None);
    }

    #[test]
    fn driver_comes_from_the_environment_or_the_default() {
        // The only test in this binary that touches the variable.
        std::env::remove_var(DRIVER_ENV);
        assert_eq!(
            Driver::from_env_or(Driver::Overlay).unwrap(),
            Driver::Overlay
        );
        std::env::set_var(DRIVER_ENV, " fuse ");
        assert_eq!(Driver::from_env_or(Driver::Overlay).unwrap(), Driver::Fuse);
        std::env::set_var(DRIVER_ENV, "zfs");
        let err = Driver::from_env_or(Driver::Auto).unwrap_err();
        assert!(err.to_string().contains("overlay, fuse or auto"), "{err}");
        std::env::remove_var(DRIVER_ENV);
    }
}
