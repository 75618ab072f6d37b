//! Overlay-format markers in layer and upper dirs, as the kernel overlay driver reads them:
//! opaque directories (`trusted.overlay.opaque=y`) and whiteouts, which are character devices
//! 0/0 or, where the filesystem refuses those (an upper dir on overlayfs: rbuild inside a
//! container), zero-size regular files with `trusted.overlay.whiteout` in a directory marked
//! `trusted.overlay.opaque=x` (kernel >= 6.7 "xattr whiteouts"). Processes that are not root
//! use the `user.overlay.*` names, as the layer applier does.

use std::fs::Metadata;
use std::io;
use std::os::fd::AsFd;
use std::os::unix::fs::{FileTypeExt, MetadataExt, OpenOptionsExt};
use std::path::Path;
use std::sync::OnceLock;

use rustix::fs::XattrFlags;

use crate::layer::whiteout::{
    device_whiteout_refused, marker_names, MarkerNames, OPAQUE_VALUE, XWHITEOUTS_VALUE,
};

/// Name of the xattr that marks a directory opaque (as root; see [`opaque_xattr`]).
pub const OPAQUE_XATTR: &str = "trusted.overlay.opaque";
/// Prefix of the overlay-private xattrs, which are hidden from the merged view.
pub const OVERLAY_XATTR_PREFIX: &[u8] = b"trusted.overlay.";

/// The marker names this process uses (trusted.* as root, user.* otherwise), decided once.
fn markers() -> MarkerNames {
    static MARKERS: OnceLock<MarkerNames> = OnceLock::new();
    *MARKERS.get_or_init(|| marker_names(rustix::process::geteuid().is_root()))
}

/// Name of the opaque-directory xattr this process reads and writes.
pub fn opaque_xattr() -> &'static str {
    markers().opaque
}

/// Whether `meta` describes a whiteout device (a character device with device number 0/0).
/// The xattr form needs the path as well: see [`is_whiteout_at`].
pub fn is_whiteout(meta: &Metadata) -> bool {
    meta.file_type().is_char_device() && meta.rdev() == 0
}

/// Whether the entry at `path`, whose lstat is `meta`, is a whiteout in either form. Only a
/// zero-size regular file costs a `getxattr` (and its directory a second one when it has the
/// whiteout xattr: like the kernel, only directories marked `x` hold xattr whiteouts).
pub fn is_whiteout_at(path: &Path, meta: &Metadata) -> bool {
    is_whiteout(meta)
        || (could_be_xattr_whiteout(meta)
            && has_whiteout_xattr(path)
            && path.parent().is_some_and(holds_xattr_whiteouts))
}

/// Whether `meta` is shaped like an xattr whiteout (a zero-size regular file).
pub fn could_be_xattr_whiteout(meta: &Metadata) -> bool {
    meta.file_type().is_file() && meta.len() == 0
}

/// Whether the file at `path` carries the `overlay.whiteout` xattr.
pub fn has_whiteout_xattr(path: &Path) -> bool {
    rustix::fs::lgetxattr_query(path, markers().whiteout).is_ok()
}

/// The one-byte `overlay.opaque` value of the directory at `path`, if it has one.
fn opaque_value(path: &Path) -> Option<u8> {
    let mut buf = [0u8; 4];
    match rustix::fs::lgetxattr(path, markers().opaque, &mut buf) {
        Ok(1) => Some(buf[0]),
        _ => None,
    }
}

/// Whether the directory at `path` carries the opaque marker (`y`; `x` is not opaque).
pub fn is_opaque(path: &Path) -> bool {
    opaque_value(path) == Some(OPAQUE_VALUE[0])
}

/// Whether the directory at `path` is marked as holding xattr whiteouts (`overlay.opaque=x`).
pub fn holds_xattr_whiteouts(path: &Path) -> bool {
    opaque_value(path) == Some(XWHITEOUTS_VALUE[0])
}

/// Marks the directory at `path` opaque so lower layers are not merged below it.
pub fn set_opaque(path: &Path) -> io::Result<()> {
    rustix::fs::lsetxattr(path, markers().opaque, OPAQUE_VALUE, XattrFlags::empty())?;
    Ok(())
}

/// Creates a whiteout at `path` (which must not exist): a whiteout device, or, where the
/// filesystem refuses those (overlayfs answers EPERM), the xattr form.
pub fn make_whiteout(path: &Path) -> io::Result<()> {
    match rustix::fs::mknodat(
        rustix::fs::CWD,
        path,
        rustix::fs::FileType::CharacterDevice,
        rustix::fs::Mode::empty(),
        0,
    ) {
        Ok(()) => Ok(()),
        Err(err) if device_whiteout_refused(err.raw_os_error()) => make_xattr_whiteout(path),
        Err(err) => Err(err.into()),
    }
}

/// Creates the xattr form of a whiteout at `path` (which must not exist): the directory gets
/// `overlay.opaque=x` unless it is opaque already (then nothing below it is merged, and callers
/// only make whiteouts where a lower layer shows the name), then a zero-size file with mode 0
/// gets the `overlay.whiteout` xattr. The marker comes first, so an interruption leaves at most
/// a harmless marker.
pub fn make_xattr_whiteout(path: &Path) -> io::Result<()> {
    let names = markers();
    if let Some(dir) = path.parent() {
        if opaque_value(dir).is_none() {
            match rustix::fs::lsetxattr(dir, names.opaque, XWHITEOUTS_VALUE, XattrFlags::CREATE) {
                Ok(()) | Err(rustix::io::Errno::EXIST) => {}
                Err(err) => return Err(err.into()),
            }
        }
    }
    // Mode 0600 until the xattr is set: user.* xattrs need write permission on the file.
    let file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .custom_flags(libc::O_NOFOLLOW)
        .open(path)?;
    let marked = rustix::fs::fsetxattr(file.as_fd(), names.whiteout, b"", XattrFlags::empty())
        .and_then(|()| rustix::fs::fchmod(file.as_fd(), rustix::fs::Mode::empty()));
    if let Err(err) = marked {
        // Do not leave an empty file where a whiteout should be.
        let _ = std::fs::remove_file(path);
        return Err(err.into());
    }
    Ok(())
}

/// Whether an xattr name is overlay-private (never shown or copied through the merged view).
pub fn is_private_xattr(name: &[u8]) -> bool {
    name.starts_with(OVERLAY_XATTR_PREFIX)
}
