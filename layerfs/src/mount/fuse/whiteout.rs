//! Overlay-format markers in layer and upper dirs: whiteouts (char device 0/0) and opaque
//! directories (`trusted.overlay.opaque=y`), exactly as the kernel overlay driver writes them.

use std::fs::Metadata;
use std::io;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::Path;

/// Name of the xattr that marks a directory opaque.
pub const OPAQUE_XATTR: &str = "trusted.overlay.opaque";
/// Prefix of the overlay-private xattrs, which are hidden from the merged view.
pub const OVERLAY_XATTR_PREFIX: &[u8] = b"trusted.overlay.";

/// Whether `meta` describes an overlay whiteout (a character device with device number 0/0).
pub fn is_whiteout(meta: &Metadata) -> bool {
    meta.file_type().is_char_device() && meta.rdev() == 0
}

/// Whether the directory at `path` carries the opaque marker.
pub fn is_opaque(path: &Path) -> bool {
    let mut buf = [0u8; 4];
    matches!(rustix::fs::lgetxattr(path, OPAQUE_XATTR, &mut buf), Ok(1) if buf[0] == b'y')
}

/// Marks the directory at `path` opaque so lower layers are not merged below it.
pub fn set_opaque(path: &Path) -> io::Result<()> {
    rustix::fs::lsetxattr(path, OPAQUE_XATTR, b"y", rustix::fs::XattrFlags::empty())?;
    Ok(())
}

/// Creates a whiteout at `path` (which must not exist).
pub fn make_whiteout(path: &Path) -> io::Result<()> {
    rustix::fs::mknodat(
        rustix::fs::CWD,
        path,
        rustix::fs::FileType::CharacterDevice,
        rustix::fs::Mode::empty(),
        0,
    )?;
    Ok(())
}

/// Whether an xattr name is overlay-private (never shown or copied through the merged view).
pub fn is_private_xattr(name: &[u8]) -> bool {
    name.starts_with(OVERLAY_XATTR_PREFIX)
}
