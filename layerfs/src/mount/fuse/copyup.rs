//! Copy-up: reproducing a lower-layer entry (data and metadata) in the upper dir, once.

use std::ffi::{OsStr, OsString};
use std::fs::{self, File, Metadata, OpenOptions};
use std::io;
use std::os::fd::AsFd;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileTypeExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::Path;

use rustix::fs::{AtFlags, Timespec, Timestamps, XattrFlags, CWD};

use super::whiteout::is_private_xattr;

/// Copies the entry at `src` (described by `meta`) to the not yet existing path `dst`, with
/// owner, mode, timestamps and xattrs. Directories are created empty.
pub fn copy_up(src: &Path, meta: &Metadata, dst: &Path) -> io::Result<()> {
    let kind = meta.file_type();
    if kind.is_file() {
        return copy_up_file(src, meta, dst);
    }
    if kind.is_dir() {
        fs::create_dir(dst)?;
    } else if kind.is_symlink() {
        std::os::unix::fs::symlink(fs::read_link(src)?, dst)?;
    } else {
        let file_type = if kind.is_fifo() {
            rustix::fs::FileType::Fifo
        } else if kind.is_socket() {
            rustix::fs::FileType::Socket
        } else if kind.is_block_device() {
            rustix::fs::FileType::BlockDevice
        } else {
            rustix::fs::FileType::CharacterDevice
        };
        rustix::fs::mknodat(CWD, dst, file_type, rustix::fs::Mode::empty(), meta.rdev())?;
    }
    copy_metadata(src, meta, dst)
}

/// Applies owner, permission bits, xattrs and timestamps of `src` to `dst` (not following links).
pub fn copy_metadata(src: &Path, meta: &Metadata, dst: &Path) -> io::Result<()> {
    std::os::unix::fs::lchown(dst, Some(meta.uid()), Some(meta.gid()))?;
    if !meta.file_type().is_symlink() {
        fs::set_permissions(dst, fs::Permissions::from_mode(meta.mode() & 0o7777))?;
    }
    copy_xattrs(src, dst)?;
    set_times(dst, meta)
}

fn copy_up_file(src: &Path, meta: &Metadata, dst: &Path) -> io::Result<()> {
    let input = crate::rootless::open_as_owner(OpenOptions::new().read(true), src, 0o400)?;
    let parent = dst.parent().unwrap_or(Path::new("."));
    match OpenOptions::new()
        .read(true)
        .write(true)
        .custom_flags(libc::O_TMPFILE)
        .mode(0o600)
        .open(parent)
    {
        Ok(output) => {
            copy_data(&input, &output, meta.len())?;
            std::os::unix::fs::fchown(&output, Some(meta.uid()), Some(meta.gid()))?;
            output.set_permissions(fs::Permissions::from_mode(meta.mode() & 0o7777))?;
            for (name, value) in read_xattrs(src)? {
                rustix::fs::fsetxattr(&output, &name, &value, XattrFlags::empty())?;
            }
            rustix::fs::futimens(&output, &timestamps(meta))?;
            rustix::fs::linkat(output.as_fd(), "", CWD, dst, AtFlags::EMPTY_PATH)?;
            Ok(())
        }
        Err(err)
            if matches!(
                err.raw_os_error(),
                Some(libc::EOPNOTSUPP) | Some(libc::EISDIR) | Some(libc::EINVAL)
            ) =>
        {
            let output = OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(dst)?;
            copy_data(&input, &output, meta.len())?;
            drop(output);
            copy_metadata(src, meta, dst)
        }
        Err(err) => Err(err),
    }
}

/// Copies the `len` bytes of `input` to the empty file `output`, keeping holes as holes (as
/// overlayfs's copy-up does): only the data extents that SEEK_DATA/SEEK_HOLE report are
/// copied, and the size is set at the end. A sparse 5 GiB file costs what its data costs.
fn copy_data(input: &File, output: &File, len: u64) -> io::Result<()> {
    let mut pos = 0;
    while pos < len {
        let start = match rustix::fs::seek(input, rustix::fs::SeekFrom::Data(pos)) {
            Ok(start) => start,
            // No data after `pos`: the rest is a hole.
            Err(rustix::io::Errno::NXIO) => break,
            // No SEEK_DATA on this filesystem: everything is data.
            Err(rustix::io::Errno::INVAL) | Err(rustix::io::Errno::OPNOTSUPP) => pos,
            Err(err) => return Err(err.into()),
        };
        let end = match rustix::fs::seek(input, rustix::fs::SeekFrom::Hole(start)) {
            Ok(end) => end.min(len),
            Err(rustix::io::Errno::INVAL) | Err(rustix::io::Errno::OPNOTSUPP) => len,
            Err(err) => return Err(err.into()),
        };
        copy_range(input, output, start, end)?;
        pos = end.max(start + 1);
    }
    output.set_len(len)
}

/// Copies bytes `start..end` of `input` to the same offsets of `output`: copy_file_range
/// (reflinks where the filesystem can), else positional reads and writes.
fn copy_range(input: &File, output: &File, start: u64, end: u64) -> io::Result<()> {
    let mut pos = start;
    while pos < end {
        let (mut off_in, mut off_out) = (pos, pos);
        let want = (end - pos).min(1 << 30) as usize;
        match rustix::fs::copy_file_range(
            input,
            Some(&mut off_in),
            output,
            Some(&mut off_out),
            want,
        ) {
            Ok(0) => break,
            Ok(n) => pos += n as u64,
            Err(rustix::io::Errno::INTR) => {}
            Err(
                rustix::io::Errno::XDEV
                | rustix::io::Errno::INVAL
                | rustix::io::Errno::OPNOTSUPP
                | rustix::io::Errno::NOSYS,
            ) => return copy_range_by_io(input, output, pos, end),
            Err(err) => return Err(err.into()),
        }
    }
    Ok(())
}

fn copy_range_by_io(input: &File, output: &File, start: u64, end: u64) -> io::Result<()> {
    use std::os::unix::fs::FileExt;
    let mut buf = vec![0u8; 1 << 20];
    let mut pos = start;
    while pos < end {
        let want = ((end - pos) as usize).min(buf.len());
        let n = match input.read_at(&mut buf[..want], pos) {
            Ok(0) => break,
            Ok(n) => n,
            Err(err) if err.kind() == io::ErrorKind::Interrupted => continue,
            Err(err) => return Err(err),
        };
        output.write_all_at(&buf[..n], pos)?;
        pos += n as u64;
    }
    Ok(())
}

/// Every xattr of `src` (not following links) except the overlay-private ones.
fn read_xattrs(src: &Path) -> io::Result<Vec<(OsString, Vec<u8>)>> {
    let names = list_xattrs(src)?;
    let mut out = Vec::new();
    for name in names.split(|&b| b == 0).filter(|n| !n.is_empty()) {
        if is_private_xattr(name) {
            continue;
        }
        let name = OsStr::from_bytes(name);
        out.push((name.to_os_string(), get_xattr(src, name)?));
    }
    Ok(out)
}

/// Copies every xattr of `src` except the overlay-private ones onto `dst`.
pub fn copy_xattrs(src: &Path, dst: &Path) -> io::Result<()> {
    for (name, value) in read_xattrs(src)? {
        rustix::fs::lsetxattr(dst, &name, &value, XattrFlags::empty())?;
    }
    Ok(())
}

/// Calls `read` with growing buffers until the value fits (xattr values are at most 64 KiB,
/// name lists at most the kernel's limit).
fn read_growing(
    mut read: impl FnMut(&mut [u8]) -> rustix::io::Result<usize>,
) -> io::Result<Vec<u8>> {
    let mut size = 256;
    loop {
        let mut buf = vec![0u8; size];
        match read(&mut buf[..]) {
            Ok(n) => {
                buf.truncate(n);
                return Ok(buf);
            }
            Err(rustix::io::Errno::RANGE) if size < (1 << 24) => size *= 4,
            Err(err) => return Err(err.into()),
        }
    }
}

/// The NUL-separated xattr name list of `path` (not following links).
pub fn list_xattrs(path: &Path) -> io::Result<Vec<u8>> {
    match read_growing(|buf| rustix::fs::llistxattr(path, buf)) {
        Err(err) if err.raw_os_error() == Some(libc::EOPNOTSUPP) => Ok(Vec::new()),
        other => other,
    }
}

/// The value of xattr `name` of `path` (not following links).
pub fn get_xattr(path: &Path, name: &OsStr) -> io::Result<Vec<u8>> {
    read_growing(|buf| rustix::fs::lgetxattr(path, name, buf))
}

fn timestamps(meta: &Metadata) -> Timestamps {
    Timestamps {
        last_access: Timespec {
            tv_sec: meta.atime(),
            tv_nsec: meta.atime_nsec() as _,
        },
        last_modification: Timespec {
            tv_sec: meta.mtime(),
            tv_nsec: meta.mtime_nsec() as _,
        },
    }
}

/// Sets atime and mtime of `path` (not following links) to those in `meta`.
pub fn set_times(path: &Path, meta: &Metadata) -> io::Result<()> {
    rustix::fs::utimensat(CWD, path, &timestamps(meta), AtFlags::SYMLINK_NOFOLLOW)?;
    Ok(())
}
