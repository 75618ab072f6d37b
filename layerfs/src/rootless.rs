//! File owners under a rootless (non-root) rbuild.
//!
//! Without privilege a process cannot give files to other users, so every file rbuild writes
//! belongs to its caller. Its sandboxes map the caller to root in a one-id user namespace, so
//! the caller's own ids stand for the image's root: layers record them as 0, and a chown to
//! another owner is skipped (the file stays root's). This is podman's `ignore_chown_errors`
//! mode for a user without subordinate ids.

use std::io;
use std::sync::OnceLock;

/// The caller's (uid, gid) when it is not root; `None` for root.
fn rootless_ids() -> Option<(u32, u32)> {
    static IDS: OnceLock<Option<(u32, u32)>> = OnceLock::new();
    *IDS.get_or_init(|| {
        let uid = rustix::process::geteuid();
        (!uid.is_root()).then(|| (uid.as_raw(), rustix::process::getegid().as_raw()))
    })
}

/// Whether this process runs without root privilege.
pub fn is_rootless() -> bool {
    rootless_ids().is_some()
}

/// The owner a layer records for a file owned by (`uid`, `gid`) on disk: when rootless, the
/// caller's own ids are root's; otherwise unchanged.
pub fn image_owner(uid: u32, gid: u32) -> (u32, u32) {
    match rootless_ids() {
        Some((me, my_group)) => (
            if uid == me { 0 } else { uid },
            if gid == my_group { 0 } else { gid },
        ),
        None => (uid, gid),
    }
}

/// Whether a failed chown may be skipped: rootless, where the kernel refuses other owners.
pub fn skippable_chown_error(err: &io::Error) -> bool {
    is_rootless() && matches!(err.raw_os_error(), Some(libc::EPERM) | Some(libc::EINVAL))
}

/// Opens `path` with `options`, which ask for the owner permission bits `need` (0o400 to read,
/// 0o600 to read and write). Without root, a file of the caller's whose mode denies that (mode
/// 000, as Fedora's /etc/shadow has) gets them for the instant it is opened and then its mode
/// back, as root opens it through CAP_DAC_OVERRIDE.
pub fn open_as_owner(
    options: &std::fs::OpenOptions,
    path: &std::path::Path,
    need: u32,
) -> io::Result<std::fs::File> {
    use std::os::fd::AsRawFd;
    use std::os::unix::fs::OpenOptionsExt;
    let denied = |e: &io::Error| e.raw_os_error() == Some(libc::EACCES) && is_rootless();
    // A few tries: another process (a second mount of the same lower layer) may be opening the
    // same file this way, and gives it its mode back at any moment.
    for _ in 0..3 {
        match options.open(path) {
            Err(e) if denied(&e) => {}
            other => return other,
        }
        let handle = std::fs::OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_PATH | libc::O_NOFOLLOW)
            .open(path)?;
        let st = rustix::fs::fstat(&handle)?;
        let mode = st.st_mode & 0o7777;
        if st.st_uid != rustix::process::geteuid().as_raw() {
            break;
        }
        if mode & need == need {
            // Another opener's instant (never taken for the file's own mode): try again.
            continue;
        }
        // chmod through the O_PATH handle's magic link: it names exactly this inode.
        let magic = format!("/proc/self/fd/{}", handle.as_raw_fd());
        let mode = rustix::fs::Mode::from_raw_mode(mode);
        rustix::fs::chmod(magic.as_str(), mode | rustix::fs::Mode::from_raw_mode(need))?;
        let opened = options.open(path);
        rustix::fs::chmod(magic.as_str(), mode)?;
        match opened {
            Err(e) if denied(&e) => {}
            other => return other,
        }
    }
    Err(io::Error::from_raw_os_error(libc::EACCES))
}

/// Keeps a directory of the caller's writable for its owner (u+wx) while the guard lives, then
/// gives it its mode back: without root, a directory whose mode denies its owner writing (a
/// 0555 /usr/lib) cannot otherwise be changed, where root (CAP_DAC_OVERRIDE) can. A no-op for
/// root, for a directory that is writable already and for anything else.
#[derive(Debug)]
pub struct WritableDir {
    path: std::path::PathBuf,
    mode: Option<u32>,
}

impl WritableDir {
    /// Makes `dir` writable for its owner until the guard is dropped (see [`WritableDir`]).
    pub fn new(dir: &std::path::Path) -> io::Result<WritableDir> {
        let mut guard = WritableDir {
            path: dir.to_path_buf(),
            mode: None,
        };
        let Some((me, _)) = rootless_ids() else {
            return Ok(guard);
        };
        let Ok(st) = rustix::fs::lstat(dir) else {
            return Ok(guard);
        };
        let mode = st.st_mode & 0o7777;
        let is_dir =
            rustix::fs::FileType::from_raw_mode(st.st_mode) == rustix::fs::FileType::Directory;
        if !is_dir || st.st_uid != me || mode & 0o300 == 0o300 {
            return Ok(guard);
        }
        rustix::fs::chmod(dir, rustix::fs::Mode::from_raw_mode(mode | 0o300))?;
        guard.mode = Some(mode);
        Ok(guard)
    }

    /// The directory was renamed to `path`: its mode is given back there.
    pub fn moved_to(&mut self, path: &std::path::Path) {
        self.path = path.to_path_buf();
    }
}

impl Drop for WritableDir {
    fn drop(&mut self) {
        if let Some(mode) = self.mode {
            // Gone (an rmdir) or replaced: nothing to give back.
            let _ = rustix::fs::chmod(&self.path, rustix::fs::Mode::from_raw_mode(mode));
        }
    }
}

/// Says once per process, on stderr, that device nodes are left out of what a rootless caller
/// unpacks (only root may create them; a pulled or loaded layer's blob keeps them); `entry`
/// names the first one.
pub fn announce_skipped_device(entry: &str) {
    use std::sync::atomic::{AtomicBool, Ordering};
    static ANNOUNCED: AtomicBool = AtomicBool::new(false);
    tracing::info!(%entry, "skipped a device node: no privilege to create it");
    if !ANNOUNCED.swap(true, Ordering::Relaxed) {
        eprintln!(
            "notice: device nodes are skipped without root (only root may create them; \
             containers get /dev from the sandbox): {entry}"
        );
    }
}

/// Says once per process, on stderr, that extended attributes only root may set (file
/// capabilities, `trusted.*`) are left out of what a rootless caller unpacks (a pulled or loaded
/// layer's blob keeps them); `name` and `entry` name the first one.
pub fn announce_skipped_xattr(name: &str, entry: &str) {
    use std::sync::atomic::{AtomicBool, Ordering};
    static ANNOUNCED: AtomicBool = AtomicBool::new(false);
    tracing::info!(%name, %entry, "skipped an xattr: no privilege to set it");
    if !ANNOUNCED.swap(true, Ordering::Relaxed) {
        eprintln!(
            "notice: extended attributes only root may set (file capabilities, trusted.*) are \
             skipped without root: {name} of {entry}"
        );
    }
}

/// Removes the directory tree `dir`. Without root, directories of the caller's whose mode
/// denies their owner writing or listing (a 0555 Go module cache) are given u+rwx first, as
/// root removes them through CAP_DAC_OVERRIDE.
pub fn remove_dir_all(dir: &std::path::Path) -> io::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    match std::fs::remove_dir_all(dir) {
        Err(e) if e.kind() == io::ErrorKind::PermissionDenied && is_rootless() => {
            // Parents first (walkdir's order), so that each directory can be listed in turn.
            for entry in walkdir::WalkDir::new(dir).into_iter().flatten() {
                if entry.file_type().is_dir() {
                    if let Ok(meta) = entry.metadata() {
                        let mode = meta.permissions().mode();
                        if mode & 0o700 != 0o700 {
                            let _ = std::fs::set_permissions(
                                entry.path(),
                                std::fs::Permissions::from_mode(mode | 0o700),
                            );
                        }
                    }
                }
            }
            std::fs::remove_dir_all(dir)
        }
        other => other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn root_keeps_owners_and_chown_errors() {
        // The test suite runs as root: nothing is mapped or skipped.
        if is_rootless() {
            return;
        }
        assert_eq!(image_owner(1001, 1002), (1001, 1002));
        assert_eq!(image_owner(0, 0), (0, 0));
        assert!(!skippable_chown_error(&io::Error::from_raw_os_error(
            libc::EPERM
        )));
    }
}
