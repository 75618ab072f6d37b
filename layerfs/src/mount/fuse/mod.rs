//! The FUSE copy-on-write union driver: mounts the same layer dirs as the overlay driver plus a
//! writable upper dir, and leaves the same upper-dir format (whiteouts, opaque dirs), so the
//! layer writer is shared. Used for [`Driver::Fuse`](super::Driver::Fuse) and as the
//! [`Driver::Auto`](super::Driver::Auto) fallback when overlayfs cannot be mounted.
//!
//! One file per job: [`layers`] (resolution across layers), [`inodes`] (inode table),
//! [`copyup`], [`whiteout`], [`unionfs`] (the fuser `Filesystem`), [`server`] (a separate
//! server process for mounts that outlive the command), [`watchdog`] (ends the connection of a
//! killed rbuild), [`control`] (aborting one connection) and this file (mount, unmount,
//! stale-mount recovery).

pub mod control;
pub mod copyup;
pub mod inodes;
pub mod layers;
pub mod server;
pub mod unionfs;
pub mod watchdog;
pub mod whiteout;

use std::fs;
use std::io;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use fuser::{BackgroundSession, MountOption, SessionACL};

use super::{lower_first, Driver, MountError, MountSpec};
use control::AbortHandle;
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
        if rustix::mount::unmount(&self.target, rustix::mount::UnmountFlags::DETACH)
            == Err(rustix::io::Errno::PERM)
        {
            let _ = fusermount_unmount(&self.target, true);
        }
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

/// A FUSE mount failure at `target`: `cause` (lower case, naming what failed) and `hint` (what
/// to do, starting with "; ", or empty).
fn mount_error(target: &Path, cause: io::Error, hint: &str) -> MountError {
    MountError::Mount {
        driver: Driver::Fuse,
        target: target.to_path_buf(),
        cause,
        detail: hint.to_string(),
    }
}

/// What to say when the FUSE driver cannot be used on this machine at all.
const OTHER_DRIVER: &str = "or use --storage-driver overlay";

/// Mounts `spec` with the FUSE driver: `spec.layers` read-only (lowest first) and
/// `spec.upper`, when given, as the writable layer (`spec.work` is not needed). The mount is
/// served by threads of this process (see [`server`] for a mount that outlives it).
pub fn mount(spec: &MountSpec) -> Result<FuseMount, MountError> {
    let (session, point) = new_session(spec)?;
    // The watchdog starts before anything is served: from here on a thread of this process may
    // wait on its own mount, and a kill then needs the watchdog to end the connection.
    let watchdog =
        AbortHandle::of_mount(&point).and_then(|abort| watchdog::Watchdog::start(abort).ok());
    if watchdog.is_none() {
        tracing::warn!(target = %spec.target.display(), "no FUSE watchdog: a killed rbuild may hang on this mount");
    }
    let session = session.spawn().map_err(|e| {
        mount_error(
            &spec.target,
            io::Error::new(
                e.kind(),
                format!("starting the FUSE server threads: {}", lower_first(&e)),
            ),
            "",
        )
    })?;
    Ok(FuseMount {
        target: spec.target.clone(),
        session: Some(session),
        watchdog,
    })
}

/// Mounts `spec` and returns the session, not yet serving, and the canonical mount point (as
/// /proc/self/mountinfo shows it). The caller must start serving the session before anything
/// touches the mount point.
pub(crate) fn new_session(
    spec: &MountSpec,
) -> Result<(fuser::Session<UnionFs>, PathBuf), MountError> {
    let target = &spec.target;
    check_fuse_device(target)?;
    detach_stale(target);
    // Resolved while it is a plain directory: once mounted, resolving it asks the server.
    let point = resolve_mount_point(target)?;
    for dir in spec.layers.iter().chain(&spec.upper) {
        check_layer_dir(target, dir)?;
    }
    let layers = LayerSet::new(&spec.layers, spec.upper.as_deref())
        .map_err(|e| mount_error(target, e, ""))?;
    let filesystem = UnionFs::new(layers).map_err(|e| mount_error(target, e, ""))?;
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
    let session = fuser::Session::new(filesystem, &point, &config)
        .map_err(|e| kernel_refusal(target, e, root))?;
    widen_readahead(&point);
    Ok((session, point))
}

/// Readahead window of our mounts, in KiB. The kernel's default (128 KiB) turns a sequential
/// read of a served (lower-layer) file into one 128 KiB READ request at a time; 4 MiB lets it
/// send 1 MiB requests (the FUSE maximum) several at a time, to all server threads.
const READAHEAD_KB: u32 = 4096;

/// Sets the readahead window of the mount at `point` through its backing device info in
/// sysfs (root only; without it the kernel's default stays, which is only slower).
fn widen_readahead(point: &Path) {
    let Some(connection) = mount_connection(point) else {
        return;
    };
    let knob = format!("/sys/class/bdi/0:{connection}/read_ahead_kb");
    if let Err(err) = fs::write(&knob, READAHEAD_KB.to_string()) {
        tracing::debug!("cannot widen FUSE readahead ({knob}): {err}");
    }
}

/// Checks that /dev/fuse is there, is the FUSE device and can be opened, so that these
/// failures are reported as such (the kernel only says "invalid argument" for a wrong device).
fn check_fuse_device(target: &Path) -> Result<(), MountError> {
    const DEVICE: &str = "/dev/fuse";
    let fail = |kind: io::ErrorKind, cause: String, hint: String| {
        Err(mount_error(target, io::Error::new(kind, cause), &hint))
    };
    let meta = match fs::metadata(DEVICE) {
        Ok(meta) => meta,
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            return fail(
                e.kind(),
                format!("{DEVICE} does not exist"),
                format!("; load the fuse module (modprobe fuse) {OTHER_DRIVER}"),
            )
        }
        Err(e) => {
            return fail(
                e.kind(),
                format!("cannot stat {DEVICE}: {}", lower_first(&e)),
                format!("; check the device {OTHER_DRIVER}"),
            )
        }
    };
    let rdev = meta.rdev();
    if !meta.file_type().is_char_device()
        || rustix::fs::major(rdev) != 10
        || rustix::fs::minor(rdev) != 229
    {
        return fail(
            io::ErrorKind::InvalidInput,
            format!("{DEVICE} is not the FUSE device (character device 10:229)"),
            format!("; recreate it with `mknod -m 666 {DEVICE} c 10 229` {OTHER_DRIVER}"),
        );
    }
    if let Err(e) = fs::OpenOptions::new().read(true).write(true).open(DEVICE) {
        return fail(
            e.kind(),
            format!("cannot open {DEVICE}: {}", lower_first(&e)),
            format!("; give this user (or container) access to {DEVICE} {OTHER_DRIVER}"),
        );
    }
    Ok(())
}

/// The canonical path of the mount point `target`, which must be an existing directory.
fn resolve_mount_point(target: &Path) -> Result<PathBuf, MountError> {
    match fs::metadata(target) {
        Ok(meta) if meta.is_dir() => {
            fs::canonicalize(target).map_err(|e| mount_error(target, e, ""))
        }
        Ok(_) => Err(mount_error(
            target,
            io::Error::new(
                io::ErrorKind::NotADirectory,
                "the mount point is not a directory",
            ),
            "; mount on a directory",
        )),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Err(mount_error(
            target,
            io::Error::new(e.kind(), "the mount point does not exist"),
            "; create the directory first",
        )),
        Err(e) => Err(mount_error(
            target,
            io::Error::new(e.kind(), format!("the mount point: {}", lower_first(&e))),
            "",
        )),
    }
}

/// Checks that the layer (or upper) dir `dir` of a mount at `target` is a directory.
fn check_layer_dir(target: &Path, dir: &Path) -> Result<(), MountError> {
    let cause = match fs::metadata(dir) {
        Ok(meta) if meta.is_dir() => return Ok(()),
        Ok(_) => io::Error::new(
            io::ErrorKind::NotADirectory,
            format!("layer dir {} is not a directory", dir.display()),
        ),
        Err(e) => io::Error::new(
            e.kind(),
            format!("layer dir {}: {}", dir.display(), lower_first(&e)),
        ),
    };
    Err(mount_error(target, cause, ""))
}

/// The failure of fuser's mount call (mount(2), or fusermount3 without root) as one lower-case
/// cause with what to do. fuser's own texts repeat the mount point and its option string
/// ("Error calling mount() at ... with ... and flags=...: EINVAL: Invalid argument") or are
/// fusermount3's stderr.
fn kernel_refusal(target: &Path, e: io::Error, root: bool) -> MountError {
    let text = e.to_string();
    let kind = e.kind();
    if let Some(errno) = text
        .strip_prefix("Error calling mount()")
        .and_then(|rest| rest.rsplit_once("): ").map(|(_, errno)| errno))
    {
        return mount_error(
            target,
            io::Error::new(kind, format!("mount(2) refused it: {errno}")),
            "; the kernel log (dmesg) may say why",
        );
    }
    if !root && kind == io::ErrorKind::NotFound {
        return mount_error(
            target,
            io::Error::new(
                kind,
                "fusermount3 was not found (it mounts FUSE for non-root users)",
            ),
            &format!("; install it (Debian: fuse3) {OTHER_DRIVER}"),
        );
    }
    let one_line = text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect::<Vec<_>>()
        .join("; ");
    let hint = if root {
        ""
    } else {
        "; check that fusermount3 may mount here"
    };
    mount_error(target, io::Error::new(kind, lower_first(&one_line)), hint)
}

/// The kernel connection number of the rbuild FUSE mount at `point` (canonical, as mountinfo
/// shows it), read from /proc/self/mountinfo, so nothing asks the mount's server; the topmost
/// such mount when several are stacked there.
pub(crate) fn mount_connection(point: &Path) -> Option<u32> {
    rbuild_mounts()
        .into_iter()
        .rev()
        .find(|(p, _)| p == point)
        .and_then(|(_, connection)| connection)
}

/// Unmounts our FUSE mount at `target` through fusermount3, as a non-root user must (umount2
/// needs CAP_SYS_ADMIN; fusermount3 unmounts FUSE mounts its caller made); `lazy` detaches a
/// busy mount (`-z`). The error carries fusermount3's own message.
pub(crate) fn fusermount_unmount(target: &Path, lazy: bool) -> io::Result<()> {
    let mut command = std::process::Command::new("fusermount3");
    command
        .arg(if lazy { "-uz" } else { "-u" })
        .arg("--")
        .arg(target);
    let output = command
        .stdin(std::process::Stdio::null())
        .output()
        .map_err(|e| io::Error::new(e.kind(), format!("running fusermount3: {e}")))?;
    if output.status.success() {
        return Ok(());
    }
    let message = String::from_utf8_lossy(&output.stderr).trim().to_string();
    let kind = if message.contains("busy") {
        io::ErrorKind::ResourceBusy
    } else {
        io::ErrorKind::Other
    };
    Err(io::Error::new(kind, format!("fusermount3: {message}")))
}

/// Lazily unmounts (detaches) the mount at `path`; returns whether it did. Without privilege
/// umount2 fails with EPERM, so a rootless caller detaches its own FUSE mount through
/// `fusermount3 -uz` instead.
pub(crate) fn lazy_unmount(path: &Path) -> bool {
    match rustix::mount::unmount(path, rustix::mount::UnmountFlags::DETACH) {
        Ok(()) => true,
        Err(rustix::io::Errno::PERM) if crate::rootless::is_rootless() => {
            match fusermount_unmount(path, true) {
                Ok(()) => true,
                Err(e) => {
                    tracing::warn!(target = %path.display(), error = %e, "detaching failed");
                    false
                }
            }
        }
        Err(_) => false,
    }
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
    let detached = lazy_unmount(path);
    if detached {
        tracing::info!(target = %path.display(), "detached a stale FUSE mount");
    }
    detached
}

/// rbuild FUSE mounts at or below `dir`: (mount point, kernel connection number).
pub(crate) fn rbuild_mounts_below(dir: &Path) -> Vec<(PathBuf, Option<u32>)> {
    // mountinfo shows canonical paths.
    let dir = fs::canonicalize(dir).unwrap_or_else(|_| dir.to_path_buf());
    rbuild_mounts()
        .into_iter()
        .filter(|(point, _)| point.starts_with(&dir))
        .collect()
}

/// Every rbuild FUSE mount of this mount namespace, in mount order: (mount point, kernel
/// connection number).
fn rbuild_mounts() -> Vec<(PathBuf, Option<u32>)> {
    let Ok(mountinfo) = fs::read_to_string("/proc/self/mountinfo") else {
        return Vec::new();
    };
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
        found.push((PathBuf::from(unescape_mountinfo(point)), connection));
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
    for (point, _) in rbuild_mounts_below(dir) {
        // Bound to this mount's connection (never a later mount that reuses its number); fails
        // harmlessly when the connection is already gone.
        if let Some(abort) = AbortHandle::of_mount(&point) {
            let _ = abort.abort();
        }
        if lazy_unmount(&point) {
            tracing::info!(target = %point.display(), "detached a FUSE mount of a dead process");
            detached.push(point);
        }
    }
    detached
}

/// Decodes the octal escapes (`\040` etc.) of a mountinfo path.
pub(crate) fn unescape_mountinfo(field: &str) -> String {
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
