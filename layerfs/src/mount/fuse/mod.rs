//! The FUSE copy-on-write union driver: mounts the same layer dirs as the overlay driver plus a
//! writable upper dir, and leaves the same upper-dir format (whiteouts, opaque dirs), so the
//! layer writer is shared. Used for [`Driver::Fuse`](super::Driver::Fuse) and as the
//! [`Driver::Auto`](super::Driver::Auto) fallback when overlayfs cannot be mounted.
//!
//! One file per job: [`layers`] (resolution across layers), [`inodes`] (inode table),
//! [`copyup`], [`whiteout`], [`unionfs`] (the fuser `Filesystem`), [`server`] (a separate
//! server process for mounts that outlive the command) and this file (mount, unmount,
//! stale-mount recovery).

pub mod copyup;
pub mod inodes;
pub mod layers;
pub mod server;
pub mod unionfs;
pub mod watchdog;
pub mod whiteout;

use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use fuser::{BackgroundSession, MountOption, SessionACL};

use super::{Driver, MountError, MountSpec};
use layers::LayerSet;
use unionfs::UnionFs;

/// File system type shown in /proc/self/mountinfo for our mounts made through fusermount3.
pub const FSTYPE: &str = "fuse.rbuild";
/// Source ("fsname") shown in /proc/self/mountinfo for our mounts.
pub const FSNAME: &str = "rbuild";

/// A live FUSE union mount; dropping it unmounts lazily and stops the serving threads.
#[derive(Debug)]
pub struct FuseMount {
    target: PathBuf,
    session: Option<BackgroundSession>,
    watchdog: Option<watchdog::Watchdog>,
}

impl FuseMount {
    /// The mount point.
    pub fn target(&self) -> &Path {
        &self.target
    }
}

impl Drop for FuseMount {
    fn drop(&mut self) {
        // Already unmounted by the UnionMount guard in the common case; EINVAL is expected.
        let _ = rustix::mount::unmount(&self.target, rustix::mount::UnmountFlags::DETACH);
        if let Some(session) = self.session.take() {
            // The serving threads end when the kernel drops the connection; a lazily detached
            // mount still in use keeps them serving until its last user is gone.
            let deadline = Instant::now() + Duration::from_secs(2);
            while !session.guard.is_finished() && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(5));
            }
            if session.guard.is_finished() {
                let _ = session.join();
            }
        }
        self.watchdog.take();
    }
}

fn mount_error(target: &Path, source: io::Error) -> MountError {
    MountError::Mount {
        driver: Driver::Fuse,
        target: target.to_path_buf(),
        source,
        detail: String::new(),
    }
}

/// Mounts `spec` with the FUSE driver: `spec.layers` read-only (lowest first) and
/// `spec.upper`, when given, as the writable layer (`spec.work` is not needed). The mount is
/// served by threads of this process (see [`server`] for a mount that outlives it).
pub fn mount(spec: &MountSpec) -> Result<FuseMount, MountError> {
    let session = new_session(spec)?;
    let session = session.spawn().map_err(|e| mount_error(&spec.target, e))?;
    // The kernel connection number is the minor of the mount's anonymous device.
    let watchdog = connection_of(&spec.target).and_then(|c| watchdog::Watchdog::start(c).ok());
    if watchdog.is_none() {
        tracing::warn!(target = %spec.target.display(), "no FUSE watchdog: a killed rbuild may hang on this mount");
    }
    Ok(FuseMount {
        target: spec.target.clone(),
        session: Some(session),
        watchdog,
    })
}

/// Mounts `spec` and returns the session, not yet serving: the caller must start serving it
/// before anything touches the mount point.
pub(crate) fn new_session(spec: &MountSpec) -> Result<fuser::Session<UnionFs>, MountError> {
    if !Path::new("/dev/fuse").exists() {
        return Err(MountError::DriverUnavailable {
            driver: Driver::Fuse,
            reason: "/dev/fuse does not exist: load the fuse module (modprobe fuse)".into(),
        });
    }
    detach_stale(&spec.target);
    let layers = LayerSet::new(&spec.layers, spec.upper.as_deref())
        .map_err(|e| mount_error(&spec.target, e))?;
    let filesystem = UnionFs::new(layers).map_err(|e| mount_error(&spec.target, e))?;
    let root = rustix::process::geteuid().is_root();
    let mut config = fuser::Config::default();
    config.mount_options = vec![
        MountOption::FSName(FSNAME.into()),
        MountOption::Subtype("rbuild".into()),
        MountOption::DefaultPermissions,
        MountOption::Exec,
    ];
    if root {
        config.mount_options.push(MountOption::Dev);
        config.mount_options.push(MountOption::Suid);
    }
    if spec.upper.is_none() {
        config.mount_options.push(MountOption::RO);
    }
    config.acl = if root {
        SessionACL::All
    } else {
        SessionACL::Owner
    };
    let threads = std::thread::available_parallelism().map_or(2, |n| n.get().clamp(2, 4));
    config.n_threads = Some(threads);
    fuser::Session::new(filesystem, &spec.target, &config).map_err(|e| mount_error(&spec.target, e))
}

/// The kernel connection number of the FUSE mount at `target` (the minor of its anonymous
/// device), as named in /sys/fs/fuse/connections. The mount must be served already.
pub(crate) fn connection_of(target: &Path) -> Option<u32> {
    rustix::fs::stat(target)
        .ok()
        .map(|st| rustix::fs::minor(st.st_dev))
}

/// Whether `path` is a mount point whose FUSE server is gone (every access fails ENOTCONN).
/// Asks with statfs, which always reaches the server: stat may be answered from the kernel's
/// attribute cache long after the server died.
pub fn is_stale(path: &Path) -> bool {
    matches!(rustix::fs::statfs(path), Err(rustix::io::Errno::NOTCONN))
        || matches!(fs::symlink_metadata(path), Err(e) if e.raw_os_error() == Some(libc::ENOTCONN))
}

/// Lazily unmounts `path` if it is a FUSE mount whose server died (e.g. a killed rbuild);
/// returns whether it did.
pub fn detach_stale(path: &Path) -> bool {
    if !is_stale(path) {
        return false;
    }
    let detached = rustix::mount::unmount(path, rustix::mount::UnmountFlags::DETACH).is_ok();
    if detached {
        tracing::info!(target = %path.display(), "detached a stale FUSE mount");
    }
    detached
}

/// rbuild FUSE mounts at or below `dir`: (mount point, kernel connection number).
pub(crate) fn rbuild_mounts_below(dir: &Path) -> Vec<(PathBuf, Option<u32>)> {
    let Ok(mountinfo) = fs::read_to_string("/proc/self/mountinfo") else {
        return Vec::new();
    };
    // mountinfo shows canonical paths.
    let dir = fs::canonicalize(dir).unwrap_or_else(|_| dir.to_path_buf());
    let mut found = Vec::new();
    for line in mountinfo.lines() {
        let Some((left, right)) = line.split_once(" - ") else {
            continue;
        };
        // Mounted directly the type is plain "fuse"; through fusermount3 it is "fuse.rbuild".
        let mut fields = right.split(' ');
        let (fstype, source) = (fields.next(), fields.next());
        if !matches!(fstype, Some("fuse") | Some(FSTYPE)) || source != Some(FSNAME) {
            continue;
        }
        let left: Vec<&str> = left.split(' ').collect();
        let (Some(device), Some(point)) = (left.get(2), left.get(4)) else {
            continue;
        };
        // An anonymous device 0:N is connection N in /sys/fs/fuse/connections.
        let connection = device
            .strip_prefix("0:")
            .and_then(|minor| minor.parse().ok());
        let point = PathBuf::from(unescape_mountinfo(point));
        if point.starts_with(&dir) {
            found.push((point, connection));
        }
    }
    found
}

/// Lazily unmounts every stale rbuild FUSE mount at or below `dir`; returns the mount points.
pub fn detach_stale_below(dir: &Path) -> Vec<PathBuf> {
    rbuild_mounts_below(dir)
        .into_iter()
        .filter(|(point, _)| detach_stale(point))
        .map(|(point, _)| point)
        .collect()
}

/// Aborts and lazily unmounts every rbuild FUSE mount at or below `dir`, which must belong to
/// a process known to be dead (e.g. a dead session's work dir): its server died with it, even
/// if leftover processes still keep the kernel connection from noticing. Returns the mount
/// points.
pub fn detach_dead_below(dir: &Path) -> Vec<PathBuf> {
    let mut detached = Vec::new();
    for (point, connection) in rbuild_mounts_below(dir) {
        if let Some(connection) = connection {
            // Fails harmlessly when fusectl is not mounted or the connection is already gone.
            let _ = fs::write(format!("/sys/fs/fuse/connections/{connection}/abort"), b"1");
        }
        if rustix::mount::unmount(&point, rustix::mount::UnmountFlags::DETACH).is_ok() {
            tracing::info!(target = %point.display(), "detached a FUSE mount of a dead process");
            detached.push(point);
        }
    }
    detached
}

/// Decodes the octal escapes (`\040` etc.) of a mountinfo path.
fn unescape_mountinfo(field: &str) -> String {
    let bytes = field.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'\\' && i + 4 <= bytes.len() {
            if let Some(v) = field
                .get(i + 1..i + 4)
                .and_then(|d| u8::from_str_radix(d, 8).ok())
            {
                out.push(v);
                i += 4;
                continue;
            }
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}
