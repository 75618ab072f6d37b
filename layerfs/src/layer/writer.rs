//! Overlay upper dir -> OCI layer blob, in one pass: tar -> sha256 (diff_id) -> compress ->
//! sha256 (blob digest).

use std::collections::HashMap;
use std::ffi::{CStr, CString, OsStr};
use std::fs::File;
use std::io::{self, Write};
use std::os::fd::OwnedFd;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::sync::mpsc::{self, Receiver, SyncSender};

use rustix::fs::FileType;
use rustix::io::Errno;
use tar::{EntryType, Header};

use super::upper_walk::{self, EntryStat};

#[path = "parallel_gzip.rs"]
mod parallel_gzip;
use parallel_gzip::{BufferPool, ParallelGzip};

use super::whiteout::{
    is_opaque_value, is_overlay_xattr, OPAQUE_MARKER, OVL_OPAQUE_TRUSTED, OVL_OPAQUE_USER,
    OVL_WHITEOUT_TRUSTED, OVL_WHITEOUT_USER, WHITEOUT_PREFIX,
};
use super::{Compression, LayerError, LayerInfo, Result, WriteOptions};
use crate::digest::{Digest, HashingWriter};
use sha2::{Digest as _, Sha256};

/// Size of the tar pieces handed from the tar thread to the compressor: the parallel gzip
/// compressor's chunk, so it takes each piece over without copying it.
const STREAM_CHUNK: usize = parallel_gzip::CHUNK_SIZE;

/// Tar chunks in flight between the tar thread and the compressor.
const CHANNEL_DEPTH: usize = 4;

/// Attempts at an entry that changes type between `fstatat` and `openat` before giving up.
const TYPE_RACE_ATTEMPTS: usize = 8;

/// zstd level used for layers (zstd's own default).
const ZSTD_LEVEL: i32 = 3;

/// Writes the overlay upper dir `upper` as an OCI layer blob to `out`.
///
/// Entries are sorted (depth first, byte order of names), ids are numeric with no user or group
/// names, overlay whiteouts become `.wh.<name>` files, opaque directories get a `.wh..wh..opq`
/// marker, hard links inside the upper dir are kept as links, `security.capability` and other
/// xattrs are kept as PAX `SCHILY.xattr.*` records, and overlay's own xattrs are dropped.
///
/// The upper dir may belong to a running container and change during the walk: every entry is
/// looked up by name relative to its parent's open directory fd, never following a symlink, and
/// its header comes from `fstat` of the fd its content is read from, so concurrent renames
/// (even directory/symlink exchanges) cannot make the walk read anything outside `upper`.
///
/// Two threads share the work: one walks the upper dir and produces the tar stream (hashing it
/// into the diff_id), the calling thread compresses it (gzip in parallel chunks on worker
/// threads, zstd multithreaded), hashes the blob and writes `out`, so the compressor
/// never waits for file I/O.
pub fn write_layer(upper: &Path, opts: &WriteOptions, out: impl Write) -> Result<LayerInfo> {
    let (blob, diff_id) = write_blob(upper, opts, HashingWriter::new(out))?;
    let (mut out, digest, size) = blob.finish();
    out.flush().map_err(LayerError::Stream)?;
    Ok(LayerInfo {
        diff_id,
        digest,
        size,
        media_type: opts.compression.media_type().to_string(),
    })
}

/// [`write_layer`] for a destination that hashes the blob itself (a store ingest, whose commit
/// returns the digest and size): the blob is not hashed twice. Returns the diff_id.
pub(crate) fn write_layer_unhashed(
    upper: &Path,
    opts: &WriteOptions,
    out: impl Write,
) -> Result<Digest> {
    let (mut out, diff_id) = write_blob(upper, opts, out)?;
    out.flush().map_err(LayerError::Stream)?;
    Ok(diff_id)
}

/// The tar/compress pipeline: writes the blob to `out`, returns `out` and the diff_id.
fn write_blob<W: Write>(upper: &Path, opts: &WriteOptions, out: W) -> Result<(W, Digest)> {
    let (tx, rx) = mpsc::sync_channel::<Vec<u8>>(CHANNEL_DEPTH);
    let mtime_clamp = opts.mtime_clamp;
    let pool = BufferPool::default();
    let chunks = TarSink::new(tx, pool.clone());
    let (produced, consumed) = std::thread::scope(|scope| {
        let producer = std::thread::Builder::new()
            .name("layer-tar".into())
            .spawn_scoped(scope, move || produce_tar(upper, mtime_clamp, chunks));
        let producer = match producer {
            Ok(handle) => handle,
            Err(e) => {
                return (
                    Err(LayerError::Stream(e)),
                    Err(LayerError::Stream(io::Error::other("no tar thread"))),
                )
            }
        };
        let consumed = compress_stream(rx, opts.compression, out, pool);
        let produced = producer.join().unwrap_or_else(|_| {
            Err(LayerError::Stream(io::Error::other(
                "the layer tar thread panicked",
            )))
        });
        (produced, consumed)
    });
    // A failed consumer stops the producer (its sends fail), so the consumer's error is the
    // root cause; a failed producer just ends the stream early, so its error wins otherwise.
    let out = consumed?;
    let diff_id = produced?;
    Ok((out, diff_id))
}

/// Walks `upper` and writes the tar stream into `tx` in chunks; returns its sha256.
///
/// The walk is an explicit stack of open directory fds (no recursion, so depth costs no stack),
/// each child looked up by name relative to its parent's fd: see [`upper_walk`].
fn produce_tar(upper: &Path, mtime_clamp: Option<i64>, sink: TarSink) -> Result<Digest> {
    let mut builder = tar::Builder::new(sink);
    let mut writer = EntryWriter {
        upper,
        mtime_clamp,
        hard_links: HashMap::new(),
    };
    let root = upper_walk::open_root(upper).map_err(|e| LayerError::io(upper, e))?;
    let root_names = upper_walk::sorted_names(&root).map_err(|e| LayerError::io(upper, e))?;
    let mut stack = vec![DirFrame {
        fd: root,
        rel: PathBuf::new(),
        names: root_names.into_iter(),
    }];
    while let Some(frame) = stack.last_mut() {
        let Some(name) = frame.names.next() else {
            stack.pop();
            continue;
        };
        let rel = frame.rel.join(OsStr::from_bytes(name.as_bytes()));
        if let Some(dir) = writer.append(&mut builder, &frame.fd, &name, &rel)? {
            let names = upper_walk::sorted_names(&dir).map_err(|e| writer.error(&rel, e))?;
            stack.push(DirFrame {
                fd: dir,
                rel,
                names: names.into_iter(),
            });
        }
    }
    let sink = builder.into_inner().map_err(LayerError::Stream)?;
    sink.finish().map_err(LayerError::Stream)
}

/// One open directory of the walk and the names in it still to visit.
struct DirFrame {
    fd: OwnedFd,
    rel: PathBuf,
    names: std::vec::IntoIter<CString>,
}

/// Compresses the chunks from `rx` into `out`; returns `out`.
fn compress_stream<W: Write>(
    rx: Receiver<Vec<u8>>,
    compression: Compression,
    out: W,
    pool: BufferPool,
) -> Result<W> {
    let mut compressor =
        Compressor::new(compression, out, pool.clone()).map_err(LayerError::Stream)?;
    for chunk in rx {
        compressor
            .write_chunk(chunk, &pool)
            .map_err(LayerError::Stream)?;
    }
    compressor.finish().map_err(LayerError::Stream)
}

/// Where the tar thread writes the stream: [`STREAM_CHUNK`] pieces in pooled buffers, each hashed
/// into the diff_id and handed to the compressing thread when full. File contents are read
/// straight into the buffers ([`TarSink::append_body`]), so each byte is copied once.
struct TarSink {
    tx: SyncSender<Vec<u8>>,
    chunk: Vec<u8>,
    /// Where the buffers come from (and go back to once compressed).
    pool: BufferPool,
    /// sha256 of the stream so far (the diff_id).
    hasher: Sha256,
}

impl TarSink {
    fn new(tx: SyncSender<Vec<u8>>, pool: BufferPool) -> Self {
        TarSink {
            tx,
            chunk: pool.take(),
            pool,
            hasher: Sha256::new(),
        }
    }

    fn send(&mut self) -> io::Result<()> {
        let full = std::mem::replace(&mut self.chunk, self.pool.take());
        self.hasher.update(&full);
        self.tx
            .send(full)
            .map_err(|_| io::Error::new(io::ErrorKind::BrokenPipe, "the layer compressor stopped"))
    }

    /// Appends exactly `size` bytes of `file` and the zero padding to the next tar block. A file
    /// shorter than `size` is an `UnexpectedEof` error; whether it is longer is for the caller
    /// to check (see [`grew`]).
    fn append_body(&mut self, file: &File, size: u64) -> io::Result<()> {
        let mut remaining = size;
        while remaining > 0 {
            if self.chunk.len() == STREAM_CHUNK {
                self.send()?;
            }
            let len = self.chunk.len();
            let room = (STREAM_CHUNK - len).min(usize::try_from(remaining).unwrap_or(usize::MAX));
            let spare = &mut self.chunk.spare_capacity_mut()[..room];
            let read = match rustix::io::read(file, spare) {
                Ok((filled, _)) => filled.len(),
                Err(Errno::INTR) => continue,
                Err(e) => return Err(e.into()),
            };
            if read == 0 {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "file shrank while it was archived",
                ));
            }
            // SAFETY: read(2) initialized the first `read` bytes of the spare capacity, and
            // `read <= room <= spare capacity`.
            unsafe { self.chunk.set_len(len + read) };
            remaining -= read as u64;
        }
        let padding = (512 - size % 512) % 512;
        self.write_all(&[0u8; 512][..padding as usize])
    }

    /// Sends the last, partly filled piece; returns the sha256 of the whole stream.
    fn finish(mut self) -> io::Result<Digest> {
        if !self.chunk.is_empty() {
            self.send()?;
        }
        Ok(Digest::from_hasher(self.hasher))
    }
}

/// True when `file` has more to read (it grew after its size was taken).
fn grew(file: &File) -> bool {
    let mut probe = [0u8; 1];
    matches!(rustix::io::read(file, &mut probe), Ok(n) if n > 0)
}

impl Write for TarSink {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        if self.chunk.len() == STREAM_CHUNK {
            self.send()?;
        }
        let n = buf.len().min(STREAM_CHUNK - self.chunk.len());
        self.chunk.extend_from_slice(&buf[..n]);
        Ok(n)
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// The compression stage of the pipeline.
enum Compressor<W: Write> {
    Gzip(ParallelGzip<W>),
    Zstd(zstd::stream::write::Encoder<'static, W>),
    Plain(W),
}

impl<W: Write> Compressor<W> {
    fn new(compression: Compression, inner: W, pool: BufferPool) -> io::Result<Self> {
        Ok(match compression {
            Compression::Gzip => Compressor::Gzip(ParallelGzip::new(
                inner,
                flate2::Compression::default(),
                parallel_gzip::default_workers(),
                pool,
            )?),
            Compression::Zstd => {
                let mut enc = zstd::stream::write::Encoder::new(inner, ZSTD_LEVEL)?;
                let workers = std::thread::available_parallelism().map_or(1, |n| n.get());
                if workers > 1 {
                    enc.multithread(workers as u32)?;
                }
                Compressor::Zstd(enc)
            }
            Compression::None => Compressor::Plain(inner),
        })
    }

    /// Compresses the next piece of the stream; its buffer goes back to `pool` once used.
    fn write_chunk(&mut self, chunk: Vec<u8>, pool: &BufferPool) -> io::Result<()> {
        match self {
            Compressor::Gzip(enc) => return enc.write_owned(chunk),
            Compressor::Zstd(enc) => enc.write_all(&chunk)?,
            Compressor::Plain(w) => w.write_all(&chunk)?,
        }
        pool.give(chunk);
        Ok(())
    }

    fn finish(self) -> io::Result<W> {
        match self {
            Compressor::Gzip(enc) => enc.finish(),
            Compressor::Zstd(enc) => enc.finish(),
            Compressor::Plain(w) => Ok(w),
        }
    }
}

/// Turns upper-dir inodes into tar entries.
struct EntryWriter<'a> {
    upper: &'a Path,
    mtime_clamp: Option<i64>,
    /// First path written for each multiply-linked regular file, by (dev, ino).
    hard_links: HashMap<(u64, u64), PathBuf>,
}

/// How one attempt at an entry ended.
enum Attempt {
    /// Written (or skipped on purpose); a directory comes back open for the walk to enter.
    Done(Option<OwnedFd>),
    /// The entry changed type between `fstatat` and `openat`: look again.
    Raced,
}

/// The errors of `openat` that mean the name now holds a different kind of inode.
fn is_type_race(e: Errno) -> bool {
    matches!(
        e,
        Errno::LOOP | Errno::NOTDIR | Errno::ISDIR | Errno::NXIO | Errno::NODEV
    )
}

impl EntryWriter<'_> {
    /// The error for entry `rel`, naming its full path.
    fn error(&self, rel: &Path, e: io::Error) -> LayerError {
        LayerError::io(self.upper.join(rel), e)
    }

    /// Writes entry `name` of the open directory `dir` (at `rel` in the layer); returns the
    /// entry opened as a directory when it is one. An entry that disappears is skipped; one
    /// that keeps changing type under the writer is an error.
    fn append(
        &mut self,
        builder: &mut tar::Builder<TarSink>,
        dir: &OwnedFd,
        name: &CStr,
        rel: &Path,
    ) -> Result<Option<OwnedFd>> {
        for _ in 0..TYPE_RACE_ATTEMPTS {
            let md = match upper_walk::stat_at(dir, name) {
                Ok(md) => md,
                Err(Errno::NOENT) => return Ok(None),
                Err(e) => return Err(self.error(rel, e.into())),
            };
            match self.try_append(builder, dir, name, rel, md)? {
                Attempt::Done(opened) => return Ok(opened),
                Attempt::Raced => continue,
            }
        }
        Err(LayerError::io(
            self.upper.join(rel),
            io::Error::other(
                "entry kept changing type while the layer was written; \
                 pause or stop the container before committing it",
            ),
        ))
    }

    /// One attempt at an entry whose `fstatat` gave `md`. Nothing is written to `builder`
    /// before every open and `fstat` succeeded, so a raced attempt can be repeated.
    fn try_append(
        &mut self,
        builder: &mut tar::Builder<TarSink>,
        dir: &OwnedFd,
        name: &CStr,
        rel: &Path,
        md: EntryStat,
    ) -> Result<Attempt> {
        let path = self.upper.join(rel);
        let stream = |e: io::Error| LayerError::io(&path, e);
        let kind = md.kind;

        if kind == FileType::CharacterDevice && md.rdev == 0 {
            self.append_whiteout(builder, rel, &md).map_err(stream)?;
            return Ok(Attempt::Done(None));
        }
        if kind == FileType::Socket {
            // Sockets cannot be archived; docker skips them too.
            return Ok(Attempt::Done(None));
        }
        // Open the inode itself; from here on only the fd is used, never the name again.
        let opened = match kind {
            FileType::Directory => upper_walk::open_dir_at(dir, name),
            FileType::RegularFile => upper_walk::open_file_at(dir, name),
            _ => upper_walk::open_path_at(dir, name),
        };
        let fd = match opened {
            Ok(fd) => fd,
            Err(Errno::NOENT) => return Ok(Attempt::Done(None)),
            Err(e) if is_type_race(e) => return Ok(Attempt::Raced),
            Err(Errno::MFILE) => {
                return Err(stream(io::Error::other(
                    "too many open files: the walk keeps one fd per directory level and this \
                     tree is nested deeper than the open-file limit; raise it with `ulimit -n`",
                )))
            }
            Err(Errno::ACCESS) if kind == FileType::Directory && crate::rootless::is_rootless() => {
                return Err(stream(io::Error::new(
                    io::ErrorKind::PermissionDenied,
                    format!(
                        "without root, a directory whose mode ({:03o}) denies its owner reading \
                         cannot be put into a layer: give it u+rx (e.g. chmod 700) before the \
                         step ends",
                        md.mode & 0o7777
                    ),
                )))
            }
            Err(e) => return Err(stream(e.into())),
        };
        let md = upper_walk::stat_fd(&fd).map_err(stream)?;
        if md.kind != kind || (kind == FileType::CharacterDevice && md.rdev == 0) {
            return Ok(Attempt::Raced);
        }
        let xattrs = match kind {
            FileType::Directory | FileType::RegularFile => upper_walk::xattrs_fd(&fd),
            _ => upper_walk::xattrs_path_fd(&fd),
        }
        .map_err(stream)?;
        let link_target = if kind == FileType::Symlink {
            Some(upper_walk::read_link_fd(&fd).map_err(stream)?)
        } else {
            None
        };

        if kind == FileType::RegularFile
            && md.size == 0
            && has_xattr(&xattrs, &[OVL_WHITEOUT_TRUSTED, OVL_WHITEOUT_USER])
        {
            self.append_whiteout(builder, rel, &md).map_err(stream)?;
            return Ok(Attempt::Done(None));
        }
        let opaque = kind == FileType::Directory
            && xattrs.iter().any(|(name, value)| {
                (name == OVL_OPAQUE_TRUSTED.as_bytes() || name == OVL_OPAQUE_USER.as_bytes())
                    && is_opaque_value(value)
            });
        let hard_link_key = (md.dev, md.ino);
        let first_link = if kind == FileType::RegularFile && md.nlink > 1 {
            self.hard_links.get(&hard_link_key).cloned()
        } else {
            None
        };
        let mut kept: Vec<&(Vec<u8>, Vec<u8>)> = xattrs
            .iter()
            .filter(|(name, _)| !is_overlay_xattr(name) && name != b"security.selinux")
            .collect();
        // By name: listxattr gives the filesystem's order, which depends on how the xattrs were
        // set (a copy-up by overlayfs or by the FUSE driver, setfattr order), not on the file.
        kept.sort_by(|a, b| a.0.cmp(&b.0));
        if !kept.is_empty() {
            append_pax_xattrs(builder, &kept).map_err(stream)?;
        }

        let mut header = self.header(&md);
        match kind {
            FileType::Directory => {
                header.set_entry_type(EntryType::Directory);
                let mut dir_path = rel.to_path_buf().into_os_string();
                dir_path.push("/");
                builder
                    .append_data(&mut header, &dir_path, io::empty())
                    .map_err(stream)?;
                if opaque {
                    let mut marker = self.header(&md);
                    marker.set_entry_type(EntryType::Regular);
                    marker.set_mode(0o644);
                    let marker_path = rel.join(OsStr::from_bytes(OPAQUE_MARKER));
                    builder
                        .append_data(&mut marker, &marker_path, io::empty())
                        .map_err(stream)?;
                }
                return Ok(Attempt::Done(Some(fd)));
            }
            FileType::Symlink => {
                let target = link_target.unwrap_or_default();
                header.set_entry_type(EntryType::Symlink);
                builder
                    .append_link(&mut header, rel, OsStr::from_bytes(target.as_bytes()))
                    .map_err(stream)?;
            }
            FileType::RegularFile => {
                if let Some(first) = first_link {
                    header.set_entry_type(EntryType::Link);
                    builder
                        .append_link(&mut header, rel, &first)
                        .map_err(stream)?;
                    return Ok(Attempt::Done(None));
                }
                if md.nlink > 1 {
                    self.hard_links.insert(hard_link_key, rel.to_path_buf());
                }
                // The header's size is the open file's own fstat size; exactly that many bytes
                // follow it or the write fails, so the tar stays consistent. The tar crate
                // writes the header (and a long-name entry when the path needs one) for an empty
                // body, which appends no data and no padding; the body is then read straight
                // into the stream's buffers.
                header.set_entry_type(EntryType::Regular);
                header.set_size(md.size);
                builder
                    .append_data(&mut header, rel, io::empty())
                    .map_err(stream)?;
                let file = File::from(fd);
                builder.get_mut().append_body(&file, md.size).map_err(|e| {
                    if e.kind() == io::ErrorKind::UnexpectedEof {
                        LayerError::Changed(path.clone())
                    } else {
                        LayerError::io(&path, e)
                    }
                })?;
                if grew(&file) {
                    return Err(LayerError::Changed(path));
                }
            }
            FileType::Fifo => {
                header.set_entry_type(EntryType::Fifo);
                builder
                    .append_data(&mut header, rel, io::empty())
                    .map_err(stream)?;
            }
            FileType::CharacterDevice | FileType::BlockDevice => {
                header.set_entry_type(if kind == FileType::CharacterDevice {
                    EntryType::Char
                } else {
                    EntryType::Block
                });
                header
                    .set_device_major(rustix::fs::major(md.rdev))
                    .map_err(stream)?;
                header
                    .set_device_minor(rustix::fs::minor(md.rdev))
                    .map_err(stream)?;
                builder
                    .append_data(&mut header, rel, io::empty())
                    .map_err(stream)?;
            }
            _ => {}
        }
        Ok(Attempt::Done(None))
    }

    fn append_whiteout(
        &self,
        builder: &mut tar::Builder<TarSink>,
        rel: &Path,
        md: &EntryStat,
    ) -> io::Result<()> {
        let name = rel.file_name().unwrap_or_default().as_bytes();
        let mut wh_name = WHITEOUT_PREFIX.to_vec();
        wh_name.extend_from_slice(name);
        let wh_path = match rel.parent() {
            Some(parent) => parent.join(std::ffi::OsStr::from_bytes(&wh_name)),
            None => PathBuf::from(std::ffi::OsStr::from_bytes(&wh_name)),
        };
        let mut header = self.header(md);
        header.set_entry_type(EntryType::Regular);
        header.set_mode(0o644);
        builder.append_data(&mut header, &wh_path, io::empty())
    }

    /// A ustar header with numeric ids, permission bits and the (clamped) mtime.
    fn header(&self, md: &EntryStat) -> Header {
        let mut header = Header::new_ustar();
        header.set_mode(md.mode & 0o7777);
        header.set_uid(u64::from(md.uid));
        header.set_gid(u64::from(md.gid));
        let mut mtime = md.mtime;
        if let Some(clamp) = self.mtime_clamp {
            mtime = mtime.min(clamp);
        }
        header.set_mtime(mtime.max(0) as u64);
        header.set_size(0);
        header
    }
}

fn has_xattr(xattrs: &[(Vec<u8>, Vec<u8>)], names: &[&str]) -> bool {
    xattrs
        .iter()
        .any(|(name, _)| names.iter().any(|n| name == n.as_bytes()))
}

/// Writes a PAX extended header carrying `SCHILY.xattr.<name>=<value>` records.
fn append_pax_xattrs<W: Write>(
    builder: &mut tar::Builder<W>,
    xattrs: &[&(Vec<u8>, Vec<u8>)],
) -> io::Result<()> {
    let mut data = Vec::new();
    for (name, value) in xattrs {
        let mut key = b"SCHILY.xattr.".to_vec();
        key.extend_from_slice(name);
        pax_record(&mut data, &key, value);
    }
    let mut header = Header::new_ustar();
    header.set_entry_type(EntryType::XHeader);
    header.set_path("PaxHeaders/xattrs")?;
    header.set_mode(0o644);
    header.set_mtime(0);
    header.set_size(data.len() as u64);
    header.set_cksum();
    builder.append(&header, &data[..])
}

/// Appends one PAX record: "<len> <key>=<value>\n" where len counts the whole record.
fn pax_record(out: &mut Vec<u8>, key: &[u8], value: &[u8]) {
    let body = key.len() + value.len() + 3; // ' ', '=', '\n'
    let mut len = body + 1;
    while len.to_string().len() + body != len {
        len = body + len.to_string().len();
    }
    out.extend_from_slice(len.to_string().as_bytes());
    out.push(b' ');
    out.extend_from_slice(key);
    out.push(b'=');
    out.extend_from_slice(value);
    out.push(b'\n');
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file_of(len: usize) -> (tempfile::TempDir, File) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        std::fs::write(&path, vec![7u8; len]).unwrap();
        let file = File::open(&path).unwrap();
        (dir, file)
    }

    /// A sink whose chunks are collected; returns (stream, sha256 the sink reported).
    fn sink_stream(fill: impl FnOnce(&mut TarSink) -> io::Result<()>) -> io::Result<Vec<u8>> {
        let (tx, rx) = mpsc::sync_channel(64);
        let mut sink = TarSink::new(tx, BufferPool::default());
        let filled = fill(&mut sink);
        let digest = sink.finish()?;
        let stream: Vec<u8> = rx.into_iter().flatten().collect();
        assert_eq!(digest, Digest::of_bytes(&stream));
        filled.map(|()| stream)
    }

    #[test]
    fn body_shorter_than_its_header_is_an_unexpected_eof() {
        let (_dir, file) = file_of(5);
        let err = sink_stream(|s| s.append_body(&file, 10)).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::UnexpectedEof);
    }

    #[test]
    fn body_stops_at_the_header_size_is_padded_and_growth_is_noticed() {
        let (_dir, file) = file_of(5);
        let stream = sink_stream(|s| s.append_body(&file, 3)).unwrap();
        assert_eq!(stream.len(), 512);
        assert_eq!(&stream[..4], &[7, 7, 7, 0]);
        assert!(grew(&file));

        let (_dir, file) = file_of(3);
        sink_stream(|s| s.append_body(&file, 3)).unwrap();
        assert!(!grew(&file));
    }

    #[test]
    fn bodies_span_chunks_byte_for_byte() {
        let len = 2 * STREAM_CHUNK + 1000;
        let (_dir, file) = file_of(len);
        let stream = sink_stream(|s| {
            s.write_all(b"header")?;
            s.append_body(&file, len as u64)
        })
        .unwrap();
        // The padding completes the body's last block (the body starts after a 6-byte write).
        assert_eq!(stream.len(), 6 + len + (512 - len % 512) % 512);
        assert_eq!(&stream[..6], b"header");
        assert!(stream[6..6 + len].iter().all(|&b| b == 7));
        assert!(stream[6 + len..].iter().all(|&b| b == 0));
    }

    #[test]
    fn pax_record_length_counts_itself() {
        let mut out = Vec::new();
        pax_record(&mut out, b"SCHILY.xattr.user.a", b"1");
        let text = String::from_utf8(out.clone()).unwrap();
        let (len, _) = text.split_once(' ').unwrap();
        assert_eq!(len.parse::<usize>().unwrap(), out.len());
        let mut long = Vec::new();
        pax_record(&mut long, b"k", &[b'v'; 95]);
        let text = String::from_utf8(long.clone()).unwrap();
        let (len, _) = text.split_once(' ').unwrap();
        assert_eq!(len.parse::<usize>().unwrap(), long.len());
    }
}
