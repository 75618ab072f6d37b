//! Path resolution confined to a root directory (openat2 `RESOLVE_IN_ROOT`), so that no symlink,
//! `..` or magic link in an image can make the runner touch a file outside the container.

use crate::error::{Result, SysContext};
use rustix::fs::{Mode, OFlags, ResolveFlags};
use std::os::fd::{AsFd, OwnedFd};
use std::path::{Component, Path, PathBuf};

/// What to create when a path does not exist yet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// Create missing components as directories (mode 0755).
    Dir,
    /// Create missing parents as directories and the last component as an empty file (0644).
    File,
    /// Create nothing; a missing path is an error (ENOENT).
    Existing,
}

/// Flags for every resolution: stay inside the root, never follow /proc magic links.
fn resolve_flags() -> ResolveFlags {
    ResolveFlags::IN_ROOT | ResolveFlags::NO_MAGICLINKS
}

/// Normalises `rel` to a relative path below the root ("" for the root itself).
pub fn relative(rel: &str) -> PathBuf {
    Path::new(rel)
        .components()
        .filter(|c| matches!(c, Component::Normal(_) | Component::ParentDir))
        .collect()
}

/// Opens the directory `root` as an O_PATH handle.
pub fn open_root(root: &Path) -> Result<OwnedFd> {
    rustix::fs::open(
        root,
        OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC,
        Mode::empty(),
    )
    .sys(|| format!("open root {}", root.display()))
}

/// What [`open_in_root`] created (mount points), so that [`remove_created`] can take it away
/// again without a trace: the created paths (relative to the root, parents first) and the times
/// of the existing directories they were created in.
#[derive(Debug, Default, Clone)]
pub struct Created {
    /// Created paths, parents first.
    pub paths: Vec<PathBuf>,
    /// Existing directories something was created in.
    parents: Vec<ParentTimes>,
}

/// An existing directory's times before the first creation in it, and its mtime right after the
/// last one (if it still has that mtime at removal, nothing else changed the directory).
#[derive(Debug, Clone)]
struct ParentTimes {
    dir: PathBuf,
    before: rustix::fs::Timestamps,
    mtime_after: rustix::fs::Timespec,
}

impl Created {
    /// Nothing was created.
    pub fn is_empty(&self) -> bool {
        self.paths.is_empty()
    }
}

fn mtime(st: &rustix::fs::Stat) -> rustix::fs::Timespec {
    rustix::fs::Timespec {
        tv_sec: st.st_mtime as _,
        tv_nsec: st.st_mtime_nsec as _,
    }
}

fn times(st: &rustix::fs::Stat) -> rustix::fs::Timestamps {
    rustix::fs::Timestamps {
        last_access: rustix::fs::Timespec {
            tv_sec: st.st_atime as _,
            tv_nsec: st.st_atime_nsec as _,
        },
        last_modification: mtime(st),
    }
}

/// Opens `rel` below `root` (O_PATH), resolving every component inside the root; missing parts are
/// created according to `kind`, and recorded in `created`.
pub fn open_in_root(
    root: impl AsFd,
    rel: &str,
    kind: Kind,
    created: &mut Created,
) -> Result<OwnedFd> {
    let rel = relative(rel);
    open_rel(root.as_fd(), &rel, kind, created)
}

fn open_rel(
    root: std::os::fd::BorrowedFd<'_>,
    rel: &Path,
    kind: Kind,
    created: &mut Created,
) -> Result<OwnedFd> {
    let target = if rel.as_os_str().is_empty() {
        Path::new(".")
    } else {
        rel
    };
    let open = || {
        rustix::fs::openat2(
            root,
            target,
            OFlags::PATH | OFlags::CLOEXEC,
            Mode::empty(),
            resolve_flags(),
        )
    };
    match open() {
        Ok(fd) => return Ok(fd),
        Err(rustix::io::Errno::NOENT) if kind != Kind::Existing => {}
        Err(e) => {
            return Err(e).sys(|| format!("resolve {} inside the container", rel.display()));
        }
    }
    let (Some(parent), Some(name)) = (rel.parent(), rel.file_name()) else {
        return Err(rustix::io::Errno::NOENT)
            .sys(|| format!("resolve {} inside the container", rel.display()));
    };
    let parent_fd = open_rel(root, parent, Kind::Dir, created)?;
    // Re-open the parent as a real directory (O_PATH fds cannot be used for mkdirat? they can,
    // but an O_DIRECTORY check makes a non-directory parent a clear error).
    let dir = rustix::fs::openat(
        &parent_fd,
        ".",
        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
        Mode::empty(),
    )
    .sys(|| format!("open directory {} inside the container", parent.display()))?;
    // The times of an existing directory, before the first entry is created in it.
    let existing_parent = !created.paths.iter().any(|p| p == parent);
    let before = if existing_parent {
        rustix::fs::fstat(&dir).ok()
    } else {
        None
    };
    let made = match kind {
        Kind::Dir => rustix::fs::mkdirat(&dir, name, Mode::from_raw_mode(0o755)),
        _ => rustix::fs::openat(
            &dir,
            name,
            OFlags::CREATE | OFlags::EXCL | OFlags::NOFOLLOW | OFlags::WRONLY | OFlags::CLOEXEC,
            Mode::from_raw_mode(0o644),
        )
        .map(drop),
    };
    match made {
        Ok(()) => {
            created.paths.push(rel.to_path_buf());
            if let (Some(before), Ok(after)) = (before, rustix::fs::fstat(&dir)) {
                match created.parents.iter_mut().find(|t| t.dir == parent) {
                    Some(t) => t.mtime_after = mtime(&after),
                    None => created.parents.push(ParentTimes {
                        dir: parent.to_path_buf(),
                        before: times(&before),
                        mtime_after: mtime(&after),
                    }),
                }
            }
        }
        Err(rustix::io::Errno::EXIST) => {}
        Err(e) => return Err(e).sys(|| format!("create {} inside the container", rel.display())),
    }
    open().sys(|| format!("resolve {} inside the container", rel.display()))
}

/// Reads a whole file below `root` (resolved inside the root); `Ok(None)` when it does not exist.
pub fn read_in_root(root: impl AsFd, rel: &str) -> Result<Option<Vec<u8>>> {
    let relp = relative(rel);
    match rustix::fs::openat2(
        root,
        &relp,
        OFlags::RDONLY | OFlags::CLOEXEC,
        Mode::empty(),
        resolve_flags(),
    ) {
        Ok(fd) => {
            let mut data = Vec::new();
            std::io::Read::read_to_end(&mut std::fs::File::from(fd), &mut data).map_err(
                |source| crate::RunnerError::Io {
                    path: PathBuf::from(rel),
                    source,
                },
            )?;
            Ok(Some(data))
        }
        Err(rustix::io::Errno::NOENT) => Ok(None),
        Err(e) => Err(e).sys(|| format!("read {rel} inside the container")),
    }
}

/// Removes mount points that [`open_in_root`] created, children first; only empty directories
/// and empty files are removed, anything else is left alone. An existing directory they were
/// created in gets its times back when nothing else changed it meanwhile, so that (as with
/// BuildKit's mount stubs) a RUN that changes nothing leaves no trace in the image.
pub fn remove_created(root: &Path, created: &Created) {
    let Ok(root_fd) = open_root(root) else {
        return;
    };
    let open_dir = |rel: &Path| {
        rustix::fs::openat2(
            &root_fd,
            if rel.as_os_str().is_empty() {
                Path::new(".")
            } else {
                rel
            },
            OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
            Mode::empty(),
            resolve_flags(),
        )
    };
    // Decided before the removals, which change the mtimes themselves.
    let untouched: Vec<(OwnedFd, rustix::fs::Timestamps)> = created
        .parents
        .iter()
        .filter_map(|t| {
            let fd = open_dir(&t.dir).ok()?;
            let st = rustix::fs::fstat(&fd).ok()?;
            (mtime(&st) == t.mtime_after).then_some((fd, t.before.clone()))
        })
        .collect();
    for rel in created.paths.iter().rev() {
        let (Some(parent), Some(name)) = (rel.parent(), rel.file_name()) else {
            continue;
        };
        let Ok(dir) = open_dir(parent) else {
            continue;
        };
        let Ok(st) = rustix::fs::statat(&dir, name, rustix::fs::AtFlags::SYMLINK_NOFOLLOW) else {
            continue;
        };
        let ftype = rustix::fs::FileType::from_raw_mode(st.st_mode);
        let _ = match ftype {
            rustix::fs::FileType::Directory => {
                rustix::fs::unlinkat(&dir, name, rustix::fs::AtFlags::REMOVEDIR)
            }
            rustix::fs::FileType::RegularFile if st.st_size == 0 => {
                rustix::fs::unlinkat(&dir, name, rustix::fs::AtFlags::empty())
            }
            _ => Ok(()),
        };
    }
    for (fd, before) in untouched {
        let _ = rustix::fs::futimens(&fd, &before);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn symlinks_stay_inside_the_root() {
        let host = tempfile::tempdir().unwrap();
        let root = tempfile::tempdir().unwrap();
        std::fs::write(host.path().join("secret"), "x").unwrap();
        std::os::unix::fs::symlink(host.path(), root.path().join("escape")).unwrap();
        std::os::unix::fs::symlink("../../../..", root.path().join("up")).unwrap();
        let fd = open_root(root.path()).unwrap();
        let mut created = Created::default();
        // The symlink's target is looked up inside the root, where it does not exist.
        assert!(open_in_root(&fd, "escape/new", Kind::File, &mut created).is_err());
        assert!(!host.path().join("new").exists());
        open_in_root(&fd, "escape/secret", Kind::Existing, &mut created).unwrap_err();
        open_in_root(&fd, "up/newdir", Kind::Dir, &mut created).unwrap();
        assert!(root.path().join("newdir").is_dir());
        assert_eq!(created.paths, vec![PathBuf::from("up/newdir")]);
        remove_created(root.path(), &created);
        assert!(!root.path().join("newdir").exists());
        assert_eq!(std::fs::read(host.path().join("secret")).unwrap(), b"x");
    }

    #[test]
    fn reads_missing_file_as_none() {
        let root = tempfile::tempdir().unwrap();
        let fd = open_root(root.path()).unwrap();
        assert!(read_in_root(&fd, "/etc/passwd").unwrap().is_none());
    }
}
