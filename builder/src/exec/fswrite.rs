//! Writing files into an image root filesystem without ever leaving it.
//!
//! Every directory is resolved with `pathrs` inside the root, so symlinks of the image resolve
//! inside the image (a `/app -> /etc` link in the image points at the image's `/etc`, never the
//! host's), and each final component is created relative to that directory fd with `O_NOFOLLOW`,
//! so a symlink swapped in during the copy cannot redirect a write either.

use pathrs::flags::OpenFlags;
use pathrs::Root;
use rustix::fs::{AtFlags, Mode, OFlags, Timestamps};
use std::fs::{File, Permissions};
use std::io;
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

/// Owner, permission bits and modification time for a new entry.
#[derive(Debug, Clone, Copy)]
pub struct Attrs {
    /// Owner uid.
    pub uid: u32,
    /// Owner gid.
    pub gid: u32,
    /// Permission bits (0o7777).
    pub mode: u32,
    /// Modification time (seconds, nanoseconds); `None` keeps "now".
    pub mtime: Option<(i64, i64)>,
}

/// A root filesystem opened for safe writes.
pub struct RootWriter {
    root: Root,
    host: PathBuf,
    /// Without root: directories whose mode denies their owner (the caller) writing, kept
    /// writable while they are filled, with the mode each gets back when the writer is dropped.
    deferred_modes: std::cell::RefCell<Vec<(OwnedFd, u32)>>,
}

impl Drop for RootWriter {
    fn drop(&mut self) {
        // Deepest first: a directory is made after its parent.
        for (dir, mode) in self.deferred_modes.take().into_iter().rev() {
            if let Err(e) = rustix::fs::fchmod(&dir, Mode::from_raw_mode(mode & 0o7777)) {
                tracing::warn!(root = %self.host.display(), error = %e, "restoring a directory mode failed");
            }
        }
    }
}

impl std::fmt::Debug for RootWriter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RootWriter")
            .field("root", &self.host)
            .finish()
    }
}

/// Refuses anything but one normal path component: `.`, `..`, an empty name or one with `/` would
/// make an `*at` call act on the directory itself or on its parent (outside the image root).
fn check_name(name: &str) -> io::Result<()> {
    if name.is_empty() || name == "." || name == ".." || name.contains('/') {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("invalid file name {name:?}: a name must be one path component, not . or .."),
        ));
    }
    Ok(())
}

fn perr(e: pathrs::error::Error) -> io::Error {
    io::Error::other(e.to_string())
}

/// Splits an absolute in-image path into (parent, final name); `None` for `/`.
pub fn split_path(path: &str) -> Option<(String, String)> {
    let trimmed = path.trim_end_matches('/');
    if trimmed.is_empty() {
        return None;
    }
    let (parent, name) = trimmed.rsplit_once('/').unwrap_or(("", trimmed));
    let parent = if parent.is_empty() { "/" } else { parent };
    Some((parent.to_string(), name.to_string()))
}

impl RootWriter {
    /// Opens the root filesystem at host path `root`.
    pub fn open(root: &Path) -> io::Result<RootWriter> {
        Ok(RootWriter {
            root: Root::open(root).map_err(perr)?,
            host: root.to_path_buf(),
            deferred_modes: Default::default(),
        })
    }

    /// What `path` (inside the root, symlinks followed inside the root) is, if it exists.
    pub fn kind(&self, path: &str) -> Option<std::fs::FileType> {
        let h = self.root.resolve(path).ok()?;
        let f = h.reopen(OpenFlags::O_PATH).ok()?;
        f.metadata().ok().map(|m| m.file_type())
    }

    /// Opens an in-root file for reading (symlinks followed inside the root).
    pub fn open_read(&self, path: &str) -> io::Result<File> {
        let h = self.root.resolve(path).map_err(perr)?;
        h.reopen(OpenFlags::O_RDONLY).map_err(perr)
    }

    /// The host path that `path` resolves to inside the root (for reading a mounted image).
    pub fn host_path_of(&self, path: &str) -> io::Result<PathBuf> {
        let h = self.root.resolve(path).map_err(perr)?;
        let f = h.reopen(OpenFlags::O_PATH).map_err(perr)?;
        let real = std::fs::read_link(format!("/proc/self/fd/{}", {
            use std::os::fd::AsRawFd;
            f.as_raw_fd()
        }))?;
        if !real.starts_with(&self.host) {
            return Err(io::Error::other(format!(
                "{path} resolves outside the image root"
            )));
        }
        Ok(real)
    }

    /// Opens directory `path`, creating it and its missing parents (mode 0755, or `attrs` for the
    /// directories this call creates).
    pub fn ensure_dir(&self, path: &str, attrs: Option<Attrs>) -> io::Result<OwnedFd> {
        self.ensure_dir_depth(path, attrs, 0)
    }

    fn ensure_dir_depth(
        &self,
        path: &str,
        attrs: Option<Attrs>,
        depth: u32,
    ) -> io::Result<OwnedFd> {
        if depth > 40 {
            return Err(io::Error::other(format!(
                "{path}: too many levels of symbolic links"
            )));
        }
        let mut existing = String::from("/");
        let mut fd: OwnedFd = self
            .root
            .resolve("/")
            .map_err(perr)?
            .reopen(OpenFlags::O_DIRECTORY | OpenFlags::O_RDONLY)
            .map_err(perr)?
            .into();
        for comp in path.split('/').filter(|c| !c.is_empty() && *c != ".") {
            let next = if existing == "/" {
                format!("/{comp}")
            } else {
                format!("{existing}/{comp}")
            };
            match self.root.resolve(&next) {
                Ok(h) => {
                    fd = h
                        .reopen(OpenFlags::O_DIRECTORY | OpenFlags::O_RDONLY)
                        .map_err(|e| {
                            io::Error::other(format!("{next}: not a directory in the image ({e})"))
                        })?
                        .into();
                }
                Err(_) if self.root.readlink(&next).is_ok() => {
                    // A dangling symlink of the image: create its target, inside the root.
                    let target = self.root.readlink(&next).map_err(perr)?;
                    let target = target.to_string_lossy();
                    let resolved = if target.starts_with('/') {
                        target.into_owned()
                    } else {
                        format!("{existing}/{target}")
                    };
                    fd = self.ensure_dir_depth(&resolved, attrs, depth + 1)?;
                }
                Err(_) => {
                    let a = attrs.unwrap_or(Attrs {
                        uid: 0,
                        gid: 0,
                        mode: 0o755,
                        mtime: None,
                    });
                    fd = self.mkdir_at(&fd, comp, a)?;
                }
            }
            existing = next;
        }
        Ok(fd)
    }

    /// Creates (or reuses) directory `name` inside `dir` and returns it opened.
    pub fn mkdir_at(&self, dir: &OwnedFd, name: &str, a: Attrs) -> io::Result<OwnedFd> {
        check_name(name)?;
        match rustix::fs::mkdirat(dir, name, Mode::from_raw_mode(a.mode)) {
            Ok(()) => {}
            Err(rustix::io::Errno::EXIST) => {
                let st = rustix::fs::statat(dir, name, AtFlags::SYMLINK_NOFOLLOW)?;
                if (st.st_mode & libc::S_IFMT) != libc::S_IFDIR {
                    remove_at(dir, name)?;
                    rustix::fs::mkdirat(dir, name, Mode::from_raw_mode(a.mode))?;
                } else {
                    let fd = rustix::fs::openat(
                        dir,
                        name,
                        OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::RDONLY | OFlags::CLOEXEC,
                        Mode::empty(),
                    )?;
                    return Ok(fd);
                }
            }
            Err(e) => return Err(e.into()),
        }
        let fd = rustix::fs::openat(
            dir,
            name,
            OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::RDONLY | OFlags::CLOEXEC,
            Mode::empty(),
        )?;
        apply_attrs(&fd, a)?;
        self.keep_writable(&fd, a.mode)?;
        Ok(fd)
    }

    /// Sets owner/mode/mtime of the existing directory fd (used for the top of a copied tree).
    pub fn set_dir_attrs(&self, dir: &OwnedFd, a: Attrs) -> io::Result<()> {
        apply_attrs(dir, a)?;
        self.keep_writable(dir, a.mode)
    }

    /// Without root, a directory given a `mode` that denies its owner writing could not be
    /// filled (the caller has no CAP_DAC_OVERRIDE): it stays writable until the writer is
    /// dropped, then gets `mode`.
    fn keep_writable(&self, dir: &OwnedFd, mode: u32) -> io::Result<()> {
        if mode & 0o300 == 0o300 || !rbuild_layerfs::rootless::is_rootless() {
            return Ok(());
        }
        rustix::fs::fchmod(dir, Mode::from_raw_mode((mode | 0o300) & 0o7777))?;
        self.deferred_modes
            .borrow_mut()
            .push((dir.try_clone()?, mode));
        Ok(())
    }

    /// Sets the modification time of an open directory (after its contents are written).
    pub fn set_mtime(&self, dir: &OwnedFd, mtime: (i64, i64)) -> io::Result<()> {
        rustix::fs::futimens(dir, &timestamps(mtime))?;
        Ok(())
    }

    /// Writes regular file `name` in `dir` from `data`, replacing whatever was there.
    pub fn write_file_at(
        &self,
        dir: &OwnedFd,
        name: &str,
        data: &mut dyn io::Read,
        a: Attrs,
    ) -> io::Result<u64> {
        let mut f = self.create_at(dir, name)?;
        let n = io::copy(data, &mut f)?;
        apply_attrs(&f, a)?;
        Ok(n)
    }

    /// Copies the host file `src` to `name` in `dir` (in-kernel with copy_file_range when the
    /// filesystems allow it), replacing whatever was there.
    pub fn copy_file_at(
        &self,
        dir: &OwnedFd,
        name: &str,
        src: &mut File,
        a: Attrs,
    ) -> io::Result<u64> {
        let mut f = self.create_at(dir, name)?;
        let n = io::copy(src, &mut f)?;
        apply_attrs(&f, a)?;
        Ok(n)
    }

    /// Creates regular file `name` in `dir` (mode 0600, empty), replacing whatever was there;
    /// write it, then give it its attributes with [`set_file_attrs`].
    pub fn create_file_at(&self, dir: &OwnedFd, name: &str) -> io::Result<File> {
        self.create_at(dir, name)
    }

    fn create_at(&self, dir: &OwnedFd, name: &str) -> io::Result<File> {
        check_name(name)?;
        let flags =
            OFlags::WRONLY | OFlags::CREATE | OFlags::EXCL | OFlags::NOFOLLOW | OFlags::CLOEXEC;
        let fd = match rustix::fs::openat(dir, name, flags, Mode::from_raw_mode(0o600)) {
            Ok(fd) => fd,
            Err(rustix::io::Errno::EXIST) => {
                remove_at(dir, name)?;
                rustix::fs::openat(dir, name, flags, Mode::from_raw_mode(0o600))?
            }
            Err(e) => return Err(e.into()),
        };
        Ok(File::from(fd))
    }

    /// Creates symlink `name` -> `target` in `dir`, replacing whatever was there.
    pub fn symlink_at(&self, dir: &OwnedFd, name: &str, target: &Path, a: Attrs) -> io::Result<()> {
        check_name(name)?;
        match rustix::fs::symlinkat(target, dir, name) {
            Ok(()) => {}
            Err(rustix::io::Errno::EXIST) => {
                remove_at(dir, name)?;
                rustix::fs::symlinkat(target, dir, name)?;
            }
            Err(e) => return Err(e.into()),
        }
        skip_rootless_chown(rustix::fs::chownat(
            dir,
            name,
            Some(rustix::fs::Uid::from_raw(a.uid)),
            Some(rustix::fs::Gid::from_raw(a.gid)),
            AtFlags::SYMLINK_NOFOLLOW,
        ))?;
        if let Some(t) = a.mtime {
            let ts = timestamps(t);
            rustix::fs::utimensat(dir, name, &ts, AtFlags::SYMLINK_NOFOLLOW)?;
        }
        Ok(())
    }

    /// Creates hard link `name` in `dir` to the existing in-root path `target_dir`/`target_name`.
    pub fn hardlink_at(
        &self,
        target_dir: &OwnedFd,
        target_name: &str,
        dir: &OwnedFd,
        name: &str,
    ) -> io::Result<()> {
        check_name(name)?;
        check_name(target_name)?;
        let _ = remove_at(dir, name);
        rustix::fs::linkat(target_dir, target_name, dir, name, AtFlags::empty())?;
        Ok(())
    }

    /// Creates parent dirs of `path` and returns (parent fd, final name).
    pub fn parent_of(&self, path: &str) -> io::Result<(OwnedFd, String)> {
        let (parent, name) = split_path(path)
            .ok_or_else(|| io::Error::other("cannot replace the root directory"))?;
        Ok((self.ensure_dir(&parent, None)?, name))
    }

    /// Sets mode bits of an existing in-root path (for `--chmod` on directories).
    pub fn permissions(mode: u32) -> Permissions {
        Permissions::from_mode(mode)
    }
}

fn timestamps((s, ns): (i64, i64)) -> Timestamps {
    let t = rustix::fs::Timespec {
        tv_sec: s,
        tv_nsec: ns as _,
    };
    Timestamps {
        last_access: t,
        last_modification: t,
    }
}

/// Copies the extended attributes of the open file `src` to the open file `dest` (file
/// capabilities above all, which a chown clears: call this after the owner is set), except
/// SELinux labels and `trusted.*` (overlay's own). An attribute the destination filesystem or
/// the caller's privileges do not allow is skipped.
pub fn copy_xattrs(src: &File, dest: &File) -> io::Result<()> {
    let mut small = [0u8; 4096];
    let mut big = Vec::new();
    let list = match rustix::fs::flistxattr(src, &mut small[..]) {
        Ok(0) => return Ok(()),
        Ok(n) => small[..n].to_vec(),
        Err(rustix::io::Errno::RANGE) => {
            big.resize(1 << 16, 0);
            let n = rustix::fs::flistxattr(src, &mut big[..])?;
            big[..n].to_vec()
        }
        Err(rustix::io::Errno::NOTSUP) => return Ok(()),
        Err(e) => return Err(e.into()),
    };
    let mut value = vec![0u8; 1 << 16];
    for name in list.split(|b| *b == 0).filter(|n| !n.is_empty()) {
        if !crate::context::xattr_is_copied(name) {
            continue;
        }
        let name = std::ffi::OsStr::from_bytes(name);
        let n = match rustix::fs::fgetxattr(src, name, &mut value[..]) {
            Ok(n) => n,
            Err(rustix::io::Errno::NODATA) => continue,
            Err(e) => return Err(e.into()),
        };
        match rustix::fs::fsetxattr(dest, name, &value[..n], rustix::fs::XattrFlags::empty()) {
            Ok(()) | Err(rustix::io::Errno::NOTSUP) | Err(rustix::io::Errno::PERM) => {}
            Err(e) => return Err(e.into()),
        }
    }
    Ok(())
}

/// Sets the extended attributes `xattrs` (name, value) on the open file or dir `dest` (after
/// its owner is set: a chown clears file capabilities). One the destination filesystem or the
/// caller's privileges do not allow is skipped, as in [`copy_xattrs`].
pub fn set_xattrs(dest: &impl AsFd, xattrs: &[(Vec<u8>, Vec<u8>)]) -> io::Result<()> {
    for (name, value) in xattrs {
        let name = std::ffi::OsStr::from_bytes(name);
        match rustix::fs::fsetxattr(dest, name, value, rustix::fs::XattrFlags::empty()) {
            Ok(()) | Err(rustix::io::Errno::NOTSUP) | Err(rustix::io::Errno::PERM) => {}
            Err(e) => return Err(e.into()),
        }
    }
    Ok(())
}

/// Sets owner, mode and (when given) mtime of a file written after [`RootWriter::create_file_at`].
pub fn set_file_attrs(file: &File, a: Attrs) -> io::Result<()> {
    apply_attrs(file, a)
}

/// A chown's result, with the refusal of a rootless caller skipped: the file then stays the
/// caller's, which its layer records as root's (see [`rbuild_layerfs::rootless`]).
fn skip_rootless_chown(result: rustix::io::Result<()>) -> io::Result<()> {
    match result.map_err(io::Error::from) {
        Err(e) if rbuild_layerfs::rootless::skippable_chown_error(&e) => Ok(()),
        other => other,
    }
}

fn apply_attrs(fd: &impl AsFd, a: Attrs) -> io::Result<()> {
    skip_rootless_chown(rustix::fs::fchown(
        fd,
        Some(rustix::fs::Uid::from_raw(a.uid)),
        Some(rustix::fs::Gid::from_raw(a.gid)),
    ))?;
    // chown clears setuid/setgid bits, so the mode is set after it.
    rustix::fs::fchmod(fd, Mode::from_raw_mode(a.mode & 0o7777))?;
    if let Some(t) = a.mtime {
        rustix::fs::futimens(fd, &timestamps(t))?;
    }
    Ok(())
}

/// Removes `name` in `dir` whatever it is (directories recursively).
pub fn remove_at(dir: &impl AsFd, name: &str) -> io::Result<()> {
    check_name(name)?;
    match rustix::fs::unlinkat(dir, name, AtFlags::empty()) {
        Ok(()) => return Ok(()),
        Err(rustix::io::Errno::NOENT) => return Ok(()),
        Err(rustix::io::Errno::ISDIR) | Err(rustix::io::Errno::PERM) => {}
        Err(e) => return Err(e.into()),
    }
    let st = rustix::fs::statat(dir, name, AtFlags::SYMLINK_NOFOLLOW)?;
    if (st.st_mode & libc::S_IFMT) != libc::S_IFDIR {
        return Err(io::Error::other(format!("cannot remove {name}")));
    }
    {
        let sub = rustix::fs::openat(
            dir,
            name,
            OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::RDONLY | OFlags::CLOEXEC,
            Mode::empty(),
        )?;
        let names: Vec<String> = {
            let mut d = rustix::fs::Dir::read_from(&sub)?;
            let mut v = Vec::new();
            while let Some(ent) = d.read() {
                let ent = ent?;
                let n = ent.file_name().to_string_lossy().into_owned();
                if n != "." && n != ".." {
                    v.push(n);
                }
            }
            v
        };
        for n in names {
            remove_at(&sub, &n)?;
        }
    }
    rustix::fs::unlinkat(dir, name, AtFlags::REMOVEDIR)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dot_and_dotdot_names_are_refused_by_every_primitive() {
        let outer = tempfile::tempdir().unwrap();
        let root = outer.path().join("root");
        std::fs::create_dir(&root).unwrap();
        std::fs::write(outer.path().join("sentinel"), "host").unwrap();
        let w = RootWriter::open(&root).unwrap();
        let dir = w.ensure_dir("/", None).unwrap();
        let a = Attrs {
            uid: 0,
            gid: 0,
            mode: 0o644,
            mtime: None,
        };
        for bad in ["..", ".", "", "a/b"] {
            assert!(w.mkdir_at(&dir, bad, a).is_err(), "mkdir_at {bad:?}");
            assert!(w.create_at(&dir, bad).is_err(), "create_at {bad:?}");
            assert!(
                w.symlink_at(&dir, bad, Path::new("x"), a).is_err(),
                "symlink_at {bad:?}"
            );
            let e = remove_at(&dir, bad).unwrap_err();
            assert_eq!(e.kind(), io::ErrorKind::InvalidInput, "remove_at {bad:?}");
        }
        assert_eq!(
            std::fs::read_to_string(outer.path().join("sentinel")).unwrap(),
            "host"
        );
        assert!(root.is_dir());
    }

    #[test]
    fn writes_stay_inside_root_through_image_symlinks() {
        let root = tempfile::tempdir().unwrap();
        let outside = tempfile::tempdir().unwrap();
        // An image symlink pointing at an absolute host path.
        std::os::unix::fs::symlink(outside.path(), root.path().join("app")).unwrap();
        let w = RootWriter::open(root.path()).unwrap();
        let (dir, name) = w.parent_of("/app/sub/file").unwrap();
        let a = Attrs {
            uid: 0,
            gid: 0,
            mode: 0o644,
            mtime: Some((1000, 0)),
        };
        w.write_file_at(&dir, &name, &mut &b"hi"[..], a).unwrap();
        assert!(std::fs::read_dir(outside.path()).unwrap().next().is_none());
        let inside = root
            .path()
            .join(outside.path().strip_prefix("/").unwrap())
            .join("sub/file");
        assert_eq!(std::fs::read(inside).unwrap(), b"hi");
        assert_eq!(split_path("/a/b/"), Some(("/a".into(), "b".into())));
        assert_eq!(split_path("/a"), Some(("/".into(), "a".into())));
    }

    #[test]
    fn a_symlink_swapped_in_during_a_copy_cannot_redirect_writes() {
        let root = tempfile::tempdir().unwrap();
        let outside = tempfile::tempdir().unwrap();
        std::fs::write(outside.path().join("target"), "host").unwrap();
        let w = RootWriter::open(root.path()).unwrap();
        let a = Attrs {
            uid: 0,
            gid: 0,
            mode: 0o644,
            mtime: None,
        };
        // A directory resolved, then swapped for a symlink to the host before the write: the
        // write lands in the directory that was resolved (now moved), not behind the link.
        let (dir, name) = w.parent_of("/app/sub/file").unwrap();
        std::fs::rename(root.path().join("app/sub"), root.path().join("app/moved")).unwrap();
        std::os::unix::fs::symlink(outside.path(), root.path().join("app/sub")).unwrap();
        w.write_file_at(&dir, &name, &mut &b"in image"[..], a)
            .unwrap();
        assert_eq!(
            std::fs::read(root.path().join("app/moved/file")).unwrap(),
            b"in image"
        );
        // The final name swapped for a symlink to a host file: replaced, never followed.
        std::os::unix::fs::symlink(
            outside.path().join("target"),
            root.path().join("app/moved/f2"),
        )
        .unwrap();
        w.write_file_at(&dir, "f2", &mut &b"two"[..], a).unwrap();
        let meta = std::fs::symlink_metadata(root.path().join("app/moved/f2")).unwrap();
        assert!(meta.is_file());
        // A directory name swapped for a symlink to a host dir: replaced by a real directory.
        std::os::unix::fs::symlink(outside.path(), root.path().join("app/moved/d")).unwrap();
        let d = w.mkdir_at(&dir, "d", a).unwrap();
        w.write_file_at(&d, "inner", &mut &b"three"[..], a).unwrap();
        assert!(std::fs::symlink_metadata(root.path().join("app/moved/d"))
            .unwrap()
            .is_dir());
        // Nothing reached the host.
        let names: Vec<_> = std::fs::read_dir(outside.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, ["target"]);
        assert_eq!(
            std::fs::read_to_string(outside.path().join("target")).unwrap(),
            "host"
        );
    }
}
