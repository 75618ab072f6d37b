//! Whiteout naming (OCI tar form) and overlay markers (upper-dir form).
//!
//! A whiteout in a layer or upper dir is a character device 0/0, or, where the filesystem
//! refuses to create those (overlayfs refuses `mknod c 0 0` in its own tree, so a store that sits
//! on a container's overlay root cannot hold them), an "xattr whiteout" (kernel >= 6.7): a
//! zero-size regular file with the `overlay.whiteout` xattr, in a directory whose
//! `overlay.opaque` xattr is `x` (merged with lower layers, but holding xattr whiteouts; the
//! kernel only looks for them there). Set through an overlay mount, these xattrs are stored
//! escaped (`trusted.overlay.overlay.*`) and read back unescaped, which is what lets an overlay
//! of layers that live on overlayfs honour them.

/// Prefix of an OCI whiteout file name.
pub(crate) const WHITEOUT_PREFIX: &[u8] = b".wh.";
/// Prefix of OCI/aufs whiteout metadata names (`.wh..wh.*`).
pub(crate) const WHITEOUT_META_PREFIX: &[u8] = b".wh..wh.";
/// Name of the OCI opaque-directory marker.
pub(crate) const OPAQUE_MARKER: &[u8] = b".wh..wh..opq";

/// Overlay xattr that marks an opaque directory (root mounts).
pub(crate) const OVL_OPAQUE_TRUSTED: &str = "trusted.overlay.opaque";
/// Overlay xattr that marks an opaque directory (userxattr mounts).
pub(crate) const OVL_OPAQUE_USER: &str = "user.overlay.opaque";
/// Overlay xattr that marks a zero-size regular file as a whiteout (kernel >= 6.7).
pub(crate) const OVL_WHITEOUT_TRUSTED: &str = "trusted.overlay.whiteout";
/// Overlay xattr whiteout marker for userxattr mounts.
pub(crate) const OVL_WHITEOUT_USER: &str = "user.overlay.whiteout";

/// What a tar entry's final path component means.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum NameKind<'a> {
    /// A plain file name.
    Plain,
    /// `.wh.<name>`: delete `<name>` from the lower layers.
    Whiteout(&'a [u8]),
    /// `.wh..wh..opq`: hide the lower layers' content of the parent directory.
    Opaque,
    /// Other `.wh..wh.*` metadata (aufs hard-link dirs and the like): ignored, as docker does.
    Meta,
    /// A malformed whiteout name.
    Invalid(&'static str),
}

/// Classifies a final path component.
pub(crate) fn classify(name: &[u8]) -> NameKind<'_> {
    if name == OPAQUE_MARKER {
        return NameKind::Opaque;
    }
    if name.starts_with(WHITEOUT_META_PREFIX) {
        return NameKind::Meta;
    }
    match name.strip_prefix(WHITEOUT_PREFIX) {
        None => NameKind::Plain,
        Some(b"") => NameKind::Invalid("whiteout names nothing (.wh. alone)"),
        Some(b".") | Some(b"..") => NameKind::Invalid("whiteout of . or .. is not allowed"),
        Some(target) if target.contains(&b'/') => NameKind::Invalid("whiteout target has a slash"),
        Some(target) => NameKind::Whiteout(target),
    }
}

/// `overlay.opaque` value of an opaque directory (lower layers are not merged below it).
pub(crate) const OPAQUE_VALUE: &[u8] = b"y";
/// `overlay.opaque` value of a merged directory that holds xattr whiteouts.
pub(crate) const XWHITEOUTS_VALUE: &[u8] = b"x";

/// True for an overlay opaque-dir xattr value (`x`, "holds xattr whiteouts", is not opaque).
pub(crate) fn is_opaque_value(value: &[u8]) -> bool {
    value == OPAQUE_VALUE
}

/// The overlay marker xattr names a process writes and reads: `trusted.overlay.*` as root (what
/// overlayfs reads by default), `user.overlay.*` otherwise (overlayfs' `userxattr` mounts).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct MarkerNames {
    /// The opaque / xattr-whiteouts directory marker.
    pub(crate) opaque: &'static str,
    /// The xattr that makes a zero-size regular file a whiteout.
    pub(crate) whiteout: &'static str,
}

/// The marker names for a process that is root (`is_root`) or not.
pub(crate) fn marker_names(is_root: bool) -> MarkerNames {
    if is_root {
        MarkerNames {
            opaque: OVL_OPAQUE_TRUSTED,
            whiteout: OVL_WHITEOUT_TRUSTED,
        }
    } else {
        MarkerNames {
            opaque: OVL_OPAQUE_USER,
            whiteout: OVL_WHITEOUT_USER,
        }
    }
}

/// Whether `mknod(c 0 0)` failing with `errno` means the filesystem cannot hold whiteout
/// devices, so whiteouts take the xattr form: EPERM (overlayfs refuses them in its own tree;
/// also an unprivileged process on kernels before 5.8), EOPNOTSUPP or EINVAL (filesystems
/// without device nodes). Anything else (EEXIST, ENOENT, ENOSPC, EROFS...) is a real error.
pub(crate) fn device_whiteout_refused(errno: i32) -> bool {
    matches!(errno, libc::EPERM | libc::EOPNOTSUPP | libc::EINVAL)
}

/// True for xattrs that describe overlay state and must never appear in a layer tar.
pub(crate) fn is_overlay_xattr(name: &[u8]) -> bool {
    name.starts_with(b"trusted.overlay.") || name.starts_with(b"user.overlay.")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classifies_whiteout_names() {
        assert_eq!(classify(b"file"), NameKind::Plain);
        assert_eq!(classify(b".whx"), NameKind::Plain);
        assert_eq!(classify(b".wh.file"), NameKind::Whiteout(b"file"));
        assert_eq!(classify(b".wh..wh..opq"), NameKind::Opaque);
        assert_eq!(classify(b".wh..wh.plnk"), NameKind::Meta);
        assert!(matches!(classify(b".wh."), NameKind::Invalid(_)));
        assert!(matches!(classify(b".wh.."), NameKind::Invalid(_)));
        assert!(matches!(classify(b".wh..."), NameKind::Invalid(_)));
        assert_eq!(classify(b".wh....x"), NameKind::Whiteout(b"...x"));
    }

    #[test]
    fn overlay_xattrs_are_recognised() {
        assert!(is_overlay_xattr(b"trusted.overlay.opaque"));
        assert!(is_overlay_xattr(b"user.overlay.origin"));
        assert!(!is_overlay_xattr(b"security.capability"));
        assert!(!is_overlay_xattr(b"user.mime_type"));
        assert!(is_opaque_value(b"y"));
        assert!(!is_opaque_value(b"x"));
        assert!(!is_opaque_value(XWHITEOUTS_VALUE));
    }

    #[test]
    fn only_refusals_of_the_device_node_switch_to_xattr_whiteouts() {
        for refused in [libc::EPERM, libc::EOPNOTSUPP, libc::ENOTSUP, libc::EINVAL] {
            assert!(device_whiteout_refused(refused), "errno {refused}");
        }
        for real_error in [
            libc::EEXIST,
            libc::ENOENT,
            libc::ENOSPC,
            libc::EROFS,
            libc::EACCES,
            libc::EIO,
        ] {
            assert!(!device_whiteout_refused(real_error), "errno {real_error}");
        }
    }

    #[test]
    fn marker_names_follow_the_privilege() {
        let root = marker_names(true);
        assert_eq!(root.opaque, "trusted.overlay.opaque");
        assert_eq!(root.whiteout, "trusted.overlay.whiteout");
        let user = marker_names(false);
        assert_eq!(user.opaque, "user.overlay.opaque");
        assert_eq!(user.whiteout, "user.overlay.whiteout");
        assert!(is_overlay_xattr(root.whiteout.as_bytes()));
        assert!(is_overlay_xattr(user.whiteout.as_bytes()));
    }
}
