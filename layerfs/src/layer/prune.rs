//! Copy-up leftovers in an upper dir: directories that overlayfs (or the FUSE driver) copied up
//! only because something was created in them and removed again, such as the runner's mount
//! points for /etc/hosts and /etc/resolv.conf on an image that has neither. Left in the upper
//! dir, each would put an unchanged directory entry into the layer, so a RUN that changes
//! nothing would still make a layer.

use std::io;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use super::upper_walk::{self, Xattrs};
use super::whiteout::{is_overlay_xattr, OVL_OPAQUE_TRUSTED, OVL_OPAQUE_USER};
use crate::mount::fuse::whiteout::is_opaque;

/// Removes the directories of the upper dir `upper` that are empty, carry no overlay marker and
/// equal the directory the layers below show at the same path (type, mode, owner, mtime to the
/// nanosecond, xattrs other than overlay's), deepest first, so that a chain of such directories
/// goes too. `lowers` are the mount's layer dirs, lowest first. A directory under an opaque
/// upper directory, or one the lower layers do not show, is a change and stays. `upper` must not
/// be mounted. Returns how many directories were removed.
pub fn prune_unchanged_dirs(upper: &Path, lowers: &[PathBuf]) -> io::Result<usize> {
    if lowers.is_empty() {
        return Ok(0);
    }
    let mut removed = 0;
    prune_below(upper, Path::new(""), lowers, &mut removed)?;
    Ok(removed)
}

/// Prunes the children of `upper/rel` (not `rel` itself); true when `upper/rel` is left empty.
fn prune_below(
    upper: &Path,
    rel: &Path,
    lowers: &[PathBuf],
    removed: &mut usize,
) -> io::Result<bool> {
    let dir = upper.join(rel);
    let mut empty = true;
    for entry in std::fs::read_dir(&dir)? {
        let entry = entry?;
        let child = rel.join(entry.file_name());
        if !entry.file_type()?.is_dir() {
            empty = false;
            continue;
        }
        let path = upper.join(&child);
        if crate::rootless::is_rootless() && !owner_can_list(&entry.metadata()?) {
            // Without root such a directory cannot be read: not pruned (it is left to the
            // layer writer, whose error names it).
            empty = false;
            continue;
        }
        if has_overlay_marker(&path)? {
            // An opaque directory hides the lower layers below it: everything in it is new.
            empty = false;
            continue;
        }
        // Its metadata as it was before its own children went (which changes its mtime).
        let before = std::fs::symlink_metadata(&path)?;
        let child_empty = prune_below(upper, &child, lowers, removed)?;
        if child_empty && same_as_lower(&path, &before, &child, lowers)? {
            std::fs::remove_dir(&path)?;
            *removed += 1;
        } else {
            empty = false;
        }
    }
    Ok(empty)
}

/// Whether a directory's owner may list and enter it (mode u+rx).
fn owner_can_list(md: &std::fs::Metadata) -> bool {
    md.mode() & 0o500 == 0o500
}

/// Every xattr of directory `path`.
fn dir_xattrs(path: &Path) -> io::Result<Xattrs> {
    upper_walk::xattrs_fd(upper_walk::open_root(path)?)
}

/// The value of the opaque marker of directory `path`, if it has one.
fn opaque_marker(path: &Path) -> io::Result<Option<Vec<u8>>> {
    Ok(dir_xattrs(path)?
        .into_iter()
        .find(|(name, _)| {
            name == OVL_OPAQUE_TRUSTED.as_bytes() || name == OVL_OPAQUE_USER.as_bytes()
        })
        .map(|(_, value)| value))
}

/// True when directory `path` carries an overlay opaque marker (of either value).
fn has_overlay_marker(path: &Path) -> io::Result<bool> {
    Ok(opaque_marker(path)?.is_some())
}

/// True when the lower layers show a directory at `rel` whose metadata equals `a`, that of the
/// upper directory `path`.
fn same_as_lower(
    path: &Path,
    a: &std::fs::Metadata,
    rel: &Path,
    lowers: &[PathBuf],
) -> io::Result<bool> {
    let Some(lower) = lower_dir(rel, lowers)? else {
        return Ok(false);
    };
    let b = std::fs::symlink_metadata(&lower)?;
    let same_stat = a.mode() == b.mode()
        && a.uid() == b.uid()
        && a.gid() == b.gid()
        && a.mtime() == b.mtime()
        && a.mtime_nsec() == b.mtime_nsec();
    Ok(same_stat && visible_xattrs(path)? == visible_xattrs(&lower)?)
}

/// The directory the layers show at `rel` (the topmost layer that has it, when nothing above
/// hides it), or `None` when they show none there. Every component is looked at without
/// following symlinks, so no layer's symlink leads outside it.
fn lower_dir(rel: &Path, lowers: &[PathBuf]) -> io::Result<Option<PathBuf>> {
    for layer in lowers.iter().rev() {
        let mut at = layer.clone();
        let mut components = rel.components().peekable();
        while let Some(component) = components.next() {
            at.push(component);
            let md = match std::fs::symlink_metadata(&at) {
                Ok(md) => md,
                // Not in this layer: look in the next one down, unless a directory of this layer
                // above `rel` is opaque (checked on the way down).
                Err(e) if e.kind() == io::ErrorKind::NotFound => break,
                Err(e) => return Err(e),
            };
            if !md.is_dir() {
                // A file, symlink or whiteout here: the upper directory replaces it.
                return Ok(None);
            }
            if components.peek().is_none() {
                return Ok(Some(at));
            }
            if is_opaque(&at) {
                // Below an opaque directory of this layer, lower layers do not show.
                let rest: PathBuf = components.collect();
                return Ok(std::fs::symlink_metadata(at.join(&rest))
                    .ok()
                    .filter(|m| m.is_dir())
                    .map(|_| at.join(rest)));
            }
        }
    }
    Ok(None)
}

/// The xattrs of directory `path` that a layer would carry (not overlay's own), sorted.
fn visible_xattrs(path: &Path) -> io::Result<Xattrs> {
    let mut out: Xattrs = dir_xattrs(path)?
        .into_iter()
        .filter(|(name, _)| !is_overlay_xattr(name) && name != b"security.selinux")
        .collect();
    out.sort();
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::layer::whiteout::OVL_WHITEOUT_TRUSTED;
    use std::fs;

    fn set_mtime(path: &Path, secs: i64, nsecs: i64) {
        let t = rustix::fs::Timestamps {
            last_access: rustix::fs::Timespec {
                tv_sec: secs,
                tv_nsec: nsecs,
            },
            last_modification: rustix::fs::Timespec {
                tv_sec: secs,
                tv_nsec: nsecs,
            },
        };
        rustix::fs::utimensat(rustix::fs::CWD, path, &t, rustix::fs::AtFlags::empty()).unwrap();
    }

    fn set_xattr(path: &Path, name: &str, value: &[u8]) {
        rustix::fs::lsetxattr(path, name, value, rustix::fs::XattrFlags::empty()).unwrap();
    }

    /// A lower layer with /etc and /usr/share, an upper with unchanged copies of both chains.
    fn setup() -> (tempfile::TempDir, PathBuf, PathBuf) {
        let t = tempfile::tempdir().unwrap();
        let (lower, upper) = (t.path().join("lower"), t.path().join("upper"));
        for root in [&lower, &upper] {
            fs::create_dir_all(root.join("etc")).unwrap();
            fs::create_dir_all(root.join("usr/share")).unwrap();
        }
        fs::write(lower.join("etc/passwd"), "root\n").unwrap();
        for root in [&lower, &upper] {
            for d in ["etc", "usr/share", "usr"] {
                set_mtime(&root.join(d), 1_000_000, 5);
            }
        }
        (t, lower, upper)
    }

    #[test]
    fn unchanged_copied_up_directories_go_and_changed_ones_stay() {
        let (_t, lower, upper) = setup();
        assert_eq!(
            prune_unchanged_dirs(&upper, std::slice::from_ref(&lower)).unwrap(),
            3
        );
        assert_eq!(fs::read_dir(&upper).unwrap().count(), 0);

        // An mtime that differs by a nanosecond, a mode, a new directory, a file: all stay.
        let (_t, lower, upper) = setup();
        set_mtime(&upper.join("etc"), 1_000_000, 6);
        fs::create_dir(upper.join("new")).unwrap();
        fs::write(upper.join("usr/share/f"), "x").unwrap();
        assert_eq!(
            prune_unchanged_dirs(&upper, std::slice::from_ref(&lower)).unwrap(),
            0
        );
        assert!(upper.join("etc").is_dir() && upper.join("new").is_dir());

        let (_t, lower, upper) = setup();
        fs::set_permissions(
            upper.join("etc"),
            std::os::unix::fs::PermissionsExt::from_mode(0o700),
        )
        .unwrap();
        set_mtime(&upper.join("etc"), 1_000_000, 5);
        assert_eq!(
            prune_unchanged_dirs(&upper, &[lower]).unwrap(),
            2,
            "usr/share and usr"
        );
        assert!(upper.join("etc").is_dir());
    }

    #[test]
    fn directories_the_lowers_do_not_show_stay() {
        // A whiteout of /etc in a higher layer, or a file there: the upper /etc is new.
        let (_t, lower, upper) = setup();
        let top = lower.parent().unwrap().join("top");
        fs::create_dir(&top).unwrap();
        fs::write(top.join("etc"), "").unwrap();
        set_xattr(&top.join("etc"), OVL_WHITEOUT_TRUSTED, b"");
        fs::create_dir_all(top.join("usr")).unwrap();
        set_mtime(&top.join("usr"), 1_000_000, 5);
        set_xattr(&top.join("usr"), OVL_OPAQUE_TRUSTED, b"y");
        // usr is opaque in `top`, which has no usr/share: the lower one does not show.
        assert_eq!(prune_unchanged_dirs(&upper, &[lower, top]).unwrap(), 0);
        assert!(upper.join("etc").is_dir() && upper.join("usr/share").is_dir());
    }

    #[test]
    fn opaque_upper_directories_and_their_contents_stay() {
        let (_t, lower, upper) = setup();
        set_xattr(&upper.join("usr"), OVL_OPAQUE_TRUSTED, b"y");
        assert_eq!(
            prune_unchanged_dirs(&upper, &[lower]).unwrap(),
            1,
            "only etc"
        );
        assert!(upper.join("usr/share").is_dir());
    }
}
