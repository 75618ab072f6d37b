//! Whiteout naming (OCI tar form) and overlay markers (upper-dir form).

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

/// True for an overlay opaque-dir xattr value.
pub(crate) fn is_opaque_value(value: &[u8]) -> bool {
    value == b"y"
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
    }
}
