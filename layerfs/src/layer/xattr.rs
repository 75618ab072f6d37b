//! Extended-attribute helpers (rustix) used by the applier (the writer reads xattrs through
//! fds, see `upper_walk`).

use std::ffi::OsStr;
use std::io;
use std::os::fd::AsFd;
use std::os::unix::ffi::OsStrExt;

use rustix::fs::XattrFlags;

/// Sets an xattr on an open file or directory.
pub(crate) fn set_fd(fd: impl AsFd, name: &[u8], value: &[u8]) -> io::Result<()> {
    let name = OsStr::from_bytes(name);
    rustix::fs::fsetxattr(fd, name, value, XattrFlags::empty())?;
    Ok(())
}
