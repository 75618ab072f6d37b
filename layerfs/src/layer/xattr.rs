//! Extended-attribute helpers (rustix) used by the writer and the applier.

use std::ffi::OsStr;
use std::io;
use std::os::fd::AsFd;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

use rustix::fs::XattrFlags;

/// Reads every xattr of `path` (not following a final symlink) as (name, value) pairs.
pub(crate) fn list_path(path: &Path) -> io::Result<Vec<(Vec<u8>, Vec<u8>)>> {
    let mut names = vec![0u8; 1024];
    let len = loop {
        match rustix::fs::llistxattr(path, &mut names[..]) {
            Ok(n) => break n,
            Err(rustix::io::Errno::RANGE) => {
                let need = rustix::fs::llistxattr_query(path)?;
                names.resize(need.max(names.len() * 2), 0);
            }
            Err(rustix::io::Errno::NOTSUP) => return Ok(Vec::new()),
            Err(e) => return Err(e.into()),
        }
    };
    let mut out = Vec::new();
    for name in names[..len].split(|b| *b == 0).filter(|n| !n.is_empty()) {
        let name_os = OsStr::from_bytes(name);
        match get_path(path, name_os)? {
            Some(value) => out.push((name.to_vec(), value)),
            None => continue,
        }
    }
    Ok(out)
}

/// Reads one xattr of `path` (not following a final symlink); `None` when absent.
pub(crate) fn get_path(path: &Path, name: &OsStr) -> io::Result<Option<Vec<u8>>> {
    let mut value = vec![0u8; 256];
    loop {
        match rustix::fs::lgetxattr(path, name, &mut value[..]) {
            Ok(n) => {
                value.truncate(n);
                return Ok(Some(value));
            }
            Err(rustix::io::Errno::RANGE) => {
                let need = rustix::fs::lgetxattr_query(path, name)?;
                value.resize(need.max(value.len() * 2), 0);
            }
            Err(rustix::io::Errno::NODATA) | Err(rustix::io::Errno::NOTSUP) => return Ok(None),
            Err(e) => return Err(e.into()),
        }
    }
}

/// Sets an xattr on an open file or directory.
pub(crate) fn set_fd(fd: impl AsFd, name: &[u8], value: &[u8]) -> io::Result<()> {
    let name = OsStr::from_bytes(name);
    rustix::fs::fsetxattr(fd, name, value, XattrFlags::empty())?;
    Ok(())
}
