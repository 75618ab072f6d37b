//! fd-relative access to an upper dir that may change while it is read (a running container).
//!
//! Every lookup is one name relative to an open directory fd, with `O_NOFOLLOW` /
//! `AT_SYMLINK_NOFOLLOW`, so no path is ever resolved again after the upper dir itself was
//! opened: renaming a directory and a symlink into each other's place cannot lead outside it.

use std::ffi::{CStr, CString, OsStr};
use std::io;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

use rustix::fs::{AtFlags, FileType, Mode, OFlags, Stat, CWD};
use rustix::io::Errno;

/// The parts of `stat` the tar writer needs.
#[derive(Debug, Clone, Copy)]
pub(super) struct EntryStat {
    pub(super) kind: FileType,
    pub(super) mode: u32,
    pub(super) uid: u32,
    pub(super) gid: u32,
    pub(super) mtime: i64,
    pub(super) size: u64,
    pub(super) rdev: u64,
    pub(super) dev: u64,
    pub(super) ino: u64,
    pub(super) nlink: u64,
}

impl EntryStat {
    #[allow(clippy::unnecessary_cast, clippy::useless_conversion)]
    fn from_stat(st: &Stat) -> Self {
        let (uid, gid) = crate::rootless::image_owner(st.st_uid as u32, st.st_gid as u32);
        EntryStat {
            kind: FileType::from_raw_mode(st.st_mode as _),
            mode: st.st_mode as u32,
            uid,
            gid,
            mtime: st.st_mtime as i64,
            size: u64::try_from(st.st_size).unwrap_or(0),
            rdev: st.st_rdev as u64,
            dev: st.st_dev as u64,
            ino: st.st_ino as u64,
            nlink: st.st_nlink as u64,
        }
    }
}

/// Opens the upper dir itself (the only path resolution of the walk).
pub(super) fn open_root(path: &Path) -> io::Result<OwnedFd> {
    Ok(rustix::fs::openat(
        CWD,
        path,
        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
        Mode::empty(),
    )?)
}

/// `fstat` of an open fd.
pub(super) fn stat_fd(fd: impl AsFd) -> io::Result<EntryStat> {
    Ok(EntryStat::from_stat(&rustix::fs::fstat(fd)?))
}

/// `fstatat(dir, name, AT_SYMLINK_NOFOLLOW)`.
pub(super) fn stat_at(dir: impl AsFd, name: &CStr) -> Result<EntryStat, Errno> {
    rustix::fs::statat(dir, name, AtFlags::SYMLINK_NOFOLLOW).map(|st| EntryStat::from_stat(&st))
}

/// Opens the directory `name` in `dir`; fails (ENOTDIR / ELOOP) if it is no longer a directory.
pub(super) fn open_dir_at(dir: impl AsFd, name: &CStr) -> Result<OwnedFd, Errno> {
    rustix::fs::openat(
        dir,
        name,
        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
        Mode::empty(),
    )
}

/// Opens `name` in `dir` for reading without following a symlink, blocking on a FIFO or
/// becoming a controlling terminal; the caller checks with `fstat` what it got. Without root, a
/// file of the caller's whose mode denies reading (e.g. `chmod 000` in a RUN step) is readable
/// for an instant, as root (CAP_DAC_OVERRIDE) would read it, and then gets its mode back.
pub(super) fn open_file_at(dir: impl AsFd, name: &CStr) -> Result<OwnedFd, Errno> {
    let open = || {
        rustix::fs::openat(
            &dir,
            name,
            OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::NONBLOCK | OFlags::NOCTTY | OFlags::CLOEXEC,
            Mode::empty(),
        )
    };
    match open() {
        Err(Errno::ACCESS) if crate::rootless::is_rootless() => {}
        other => return other,
    }
    let handle = open_path_at(&dir, name)?;
    let st = rustix::fs::fstat(&handle)?;
    if FileType::from_raw_mode(st.st_mode as _) != FileType::RegularFile {
        return Err(Errno::ACCESS);
    }
    // chmod through the O_PATH handle's magic link: it names exactly this inode.
    let magic = format!("/proc/self/fd/{}", handle.as_raw_fd());
    let mode = st.st_mode as u32 & 0o7777;
    rustix::fs::chmod(magic.as_str(), Mode::from_raw_mode(mode | 0o400))?;
    let opened = open();
    rustix::fs::chmod(magic.as_str(), Mode::from_raw_mode(mode))?;
    opened
}

/// Opens `name` in `dir` as an `O_PATH` handle (symlinks, FIFOs and devices: never opened for
/// I/O, so opening one has no side effect).
pub(super) fn open_path_at(dir: impl AsFd, name: &CStr) -> Result<OwnedFd, Errno> {
    rustix::fs::openat(
        dir,
        name,
        OFlags::PATH | OFlags::NOFOLLOW | OFlags::CLOEXEC,
        Mode::empty(),
    )
}

/// The target of the symlink behind an `O_PATH` fd.
pub(super) fn read_link_fd(fd: impl AsFd) -> io::Result<CString> {
    Ok(rustix::fs::readlinkat(fd, c"", Vec::new())?)
}

/// The names in directory `dir` (without `.` and `..`), sorted by bytes.
pub(super) fn sorted_names(dir: impl AsFd) -> io::Result<Vec<CString>> {
    let mut reader = rustix::fs::Dir::read_from(dir)?;
    let mut names = Vec::new();
    while let Some(entry) = reader.read() {
        let entry = entry?;
        let name = entry.file_name();
        if name == c"." || name == c".." {
            continue;
        }
        names.push(name.to_owned());
    }
    names.sort_unstable_by(|a, b| a.as_bytes().cmp(b.as_bytes()));
    Ok(names)
}

/// One entry's xattrs as (name, value) pairs.
pub(super) type Xattrs = Vec<(Vec<u8>, Vec<u8>)>;

/// Every xattr of a file or directory opened for reading.
pub(super) fn xattrs_fd(fd: impl AsFd) -> io::Result<Xattrs> {
    let fd = fd.as_fd();
    read_xattrs(
        |buf| rustix::fs::flistxattr(fd, buf),
        || rustix::fs::flistxattr_query(fd),
        |name, buf| rustix::fs::fgetxattr(fd, name, buf),
        |name| rustix::fs::fgetxattr_query(fd, name),
    )
}

/// Every xattr of the inode behind an `O_PATH` fd (f*xattr refuse `O_PATH` fds, so this goes
/// through the fd's `/proc/self/fd` magic link, which names that inode and no path). Without
/// /proc the entry gets no xattrs.
pub(super) fn xattrs_path_fd(fd: impl AsFd) -> io::Result<Xattrs> {
    let link = format!("/proc/self/fd/{}", fd.as_fd().as_raw_fd());
    let link = Path::new(&link);
    let result = read_xattrs(
        |buf| rustix::fs::listxattr(link, buf),
        || rustix::fs::listxattr_query(link),
        |name, buf| rustix::fs::getxattr(link, name, buf),
        |name| rustix::fs::getxattr_query(link, name),
    );
    match result {
        Err(e) if e.raw_os_error() == Some(Errno::NOENT.raw_os_error()) => Ok(Vec::new()),
        other => other,
    }
}

fn read_xattrs(
    list: impl Fn(&mut [u8]) -> Result<usize, Errno>,
    list_query: impl Fn() -> Result<usize, Errno>,
    get: impl Fn(&OsStr, &mut [u8]) -> Result<usize, Errno>,
    get_query: impl Fn(&OsStr) -> Result<usize, Errno>,
) -> io::Result<Xattrs> {
    let mut names = vec![0u8; 1024];
    let len = loop {
        match list(&mut names[..]) {
            Ok(n) => break n,
            Err(Errno::RANGE) => {
                let need = list_query()?;
                names.resize(need.max(names.len() * 2), 0);
            }
            Err(Errno::NOTSUP) => return Ok(Vec::new()),
            Err(e) => return Err(e.into()),
        }
    };
    let mut out = Vec::new();
    for name in names[..len].split(|b| *b == 0).filter(|n| !n.is_empty()) {
        let name_os = OsStr::from_bytes(name);
        let mut value = vec![0u8; 256];
        loop {
            match get(name_os, &mut value[..]) {
                Ok(n) => {
                    value.truncate(n);
                    out.push((name.to_vec(), value));
                    break;
                }
                Err(Errno::RANGE) => {
                    let need = get_query(name_os)?;
                    value.resize(need.max(value.len() * 2), 0);
                }
                Err(Errno::NODATA) | Err(Errno::NOTSUP) => break,
                Err(e) => return Err(e.into()),
            }
        }
    }
    Ok(out)
}
