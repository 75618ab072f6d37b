//! OCI layer blob (gzip, zstd or plain tar) -> unpacked layer dir in overlay upper-dir format.
//!
//! Every inode is created through a `pathrs::Root` opened on the destination, so no entry name,
//! symlink or hard link can make a write land outside it. Whiteouts become overlay whiteouts
//! (character devices 0/0) and opaque markers become `trusted.overlay.opaque=y`; both only hide
//! lower layers, so an opaque marker never removes entries of its own layer, wherever it sits.
//! Where the filesystem refuses whiteout devices (a store on overlayfs), whiteouts take the
//! xattr form instead (see `whiteout`): a zero-size file marked `overlay.whiteout` whose
//! directory is marked `overlay.opaque=x`.

use std::cell::Cell;
use std::ffi::OsStr;
use std::fs::{File, Permissions};
use std::io::{self, Read, Write};
use std::os::fd::{AsFd, AsRawFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::rc::Rc;

use pathrs::flags::OpenFlags;
use pathrs::{InodeType, Root};
use rustix::fs::{AtFlags, FileType, Gid, Mode, Timespec, Timestamps, Uid};
use tar::EntryType;

use super::whiteout::{
    classify, device_whiteout_refused, marker_names, MarkerNames, NameKind, OPAQUE_VALUE,
    WHITEOUT_PREFIX, XWHITEOUTS_VALUE,
};
use super::{xattr, ApplyLimits, ApplyStats, LayerError, Result};
use crate::digest::HashingReader;

const GZIP_MAGIC: &[u8] = &[0x1f, 0x8b];
const ZSTD_MAGIC: &[u8] = &[0x28, 0xb5, 0x2f, 0xfd];
const COPY_BUFFER: usize = 256 << 10;
const PARENT_DIR_MODE: u32 = 0o755;

/// Applies the layer blob read from `input` into `dest`, which must be absent or empty.
///
/// The compression (gzip, zstd or none) is detected from the first bytes. On any error,
/// including an exceeded budget, everything written below `dest` is removed again (and `dest`
/// itself if this call created it).
pub fn apply_layer(input: impl Read, dest: &Path, limits: &ApplyLimits) -> Result<ApplyStats> {
    apply_layer_with(input, dest, limits, WhiteoutForm::Device)
}

/// Applies an uncompressed tar stream into `dest`, like [`apply_layer`] but without looking for
/// compression magic: for a caller that decompressed the blob itself (e.g. on another thread),
/// so a tar whose first entry name starts with gzip's or zstd's magic bytes is not decoded twice.
/// `input` is read in pieces as small as a tar header: give a buffered or in-memory reader.
pub fn apply_tar(input: impl Read, dest: &Path, limits: &ApplyLimits) -> Result<ApplyStats> {
    apply_stream(dest, limits, WhiteoutForm::Device, || {
        Ok(Box::new(input) as Box<dyn Read>)
    })
}

/// How the applier writes whiteouts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum WhiteoutForm {
    /// Character devices 0/0, falling back to the xattr form if the filesystem refuses them.
    Device,
    /// Zero-size files with the `overlay.whiteout` xattr (tests of that form on any filesystem).
    #[cfg_attr(not(test), allow(dead_code))]
    Xattr,
}

fn apply_layer_with(
    input: impl Read,
    dest: &Path,
    limits: &ApplyLimits,
    form: WhiteoutForm,
) -> Result<ApplyStats> {
    apply_stream(dest, limits, form, || decompressor(input))
}

/// Prepares `dest` and applies the tar stream `open` gives (decoded as it needs); cleans up on
/// any error.
fn apply_stream<'a>(
    dest: &Path,
    limits: &ApplyLimits,
    form: WhiteoutForm,
    open: impl FnOnce() -> io::Result<Box<dyn Read + 'a>>,
) -> Result<ApplyStats> {
    let created = prepare_dest(dest)?;
    let applied = open()
        .map_err(LayerError::Stream)
        .and_then(|stream| apply_into(stream, dest, limits, form));
    match applied {
        Ok(stats) => Ok(stats),
        Err(err) => {
            remove_partial(dest, created);
            Err(err)
        }
    }
}

/// Creates `dest` if needed and checks it is empty; returns whether it was created.
fn prepare_dest(dest: &Path) -> Result<bool> {
    match std::fs::create_dir(dest) {
        Ok(()) => return Ok(true),
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
        Err(e) => return Err(LayerError::io(dest, e)),
    }
    let mut entries = std::fs::read_dir(dest).map_err(|e| LayerError::io(dest, e))?;
    if entries.next().is_some() {
        return Err(LayerError::DestNotEmpty(dest.to_path_buf()));
    }
    Ok(false)
}

fn remove_partial(dest: &Path, created: bool) {
    let result = if created {
        std::fs::remove_dir_all(dest)
    } else {
        std::fs::read_dir(dest).and_then(|entries| {
            for entry in entries {
                let entry = entry?;
                if entry.file_type()?.is_dir() {
                    std::fs::remove_dir_all(entry.path())?;
                } else {
                    std::fs::remove_file(entry.path())?;
                }
            }
            Ok(())
        })
    };
    if let Err(e) = result {
        tracing::warn!(path = %dest.display(), error = %e, "could not remove a partly applied layer");
    }
}

fn apply_into(
    tar: Box<dyn Read + '_>,
    dest: &Path,
    limits: &ApplyLimits,
    form: WhiteoutForm,
) -> Result<ApplyStats> {
    let exceeded = Rc::new(Cell::new(false));
    let stream = HashingReader::new(tar);
    let budget = BudgetReader {
        inner: stream,
        remaining: limits.max_bytes,
        exceeded: exceeded.clone(),
    };
    let stream_err = |e: io::Error| {
        if exceeded.get() {
            LayerError::TooManyBytes {
                limit: limits.max_bytes,
            }
        } else {
            LayerError::Stream(e)
        }
    };

    let root = Root::open(dest).map_err(|source| LayerError::Confined {
        entry: String::from("."),
        op: "open layer root",
        source,
    })?;
    let is_root = rustix::process::geteuid().is_root();
    let mut applier = Applier {
        root,
        is_root,
        markers: marker_names(is_root),
        xattr_whiteouts: form == WhiteoutForm::Xattr,
        buffer: vec![0u8; COPY_BUFFER],
        dir_times: Vec::new(),
        dir_modes: Vec::new(),
        stats_entries: 0,
        whiteouts: 0,
        opaque_dirs: 0,
    };

    let mut archive = tar::Archive::new(budget);
    for entry in archive.entries().map_err(stream_err)? {
        let mut entry = entry.map_err(stream_err)?;
        applier.stats_entries += 1;
        if applier.stats_entries > limits.max_entries {
            return Err(LayerError::TooManyEntries {
                limit: limits.max_entries,
            });
        }
        if entry.size() > limits.max_bytes {
            return Err(LayerError::TooManyBytes {
                limit: limits.max_bytes,
            });
        }
        applier.apply_entry(&mut entry).map_err(|e| match e {
            LayerError::Stream(io) => stream_err(io),
            other => other,
        })?;
    }
    let mut budget = archive.into_inner();
    // Hash the end-of-archive padding too: the diff_id covers the whole stream.
    io::copy(&mut budget, &mut io::sink()).map_err(stream_err)?;
    let (_, diff_id, tar_bytes) = budget.inner.finish();
    applier.finish_dir_times()?;
    Ok(ApplyStats {
        diff_id,
        tar_bytes,
        entries: applier.stats_entries,
        whiteouts: applier.whiteouts,
        opaque_dirs: applier.opaque_dirs,
    })
}

/// Wraps `input` in the decoder its magic bytes call for.
fn decompressor<'a>(mut input: impl Read + 'a) -> io::Result<Box<dyn Read + 'a>> {
    let mut magic = Vec::with_capacity(4);
    (&mut input).take(4).read_to_end(&mut magic)?;
    let stream = io::Cursor::new(magic.clone()).chain(input);
    Ok(if magic.starts_with(GZIP_MAGIC) {
        Box::new(flate2::read::MultiGzDecoder::new(
            io::BufReader::with_capacity(COPY_BUFFER, stream),
        ))
    } else if magic.starts_with(ZSTD_MAGIC) {
        Box::new(zstd::stream::read::Decoder::new(stream)?)
    } else {
        Box::new(io::BufReader::with_capacity(COPY_BUFFER, stream))
    })
}

/// Stops the stream once more than `remaining` bytes would be read.
struct BudgetReader<R> {
    inner: R,
    remaining: u64,
    exceeded: Rc<Cell<bool>>,
}

impl<R: Read> Read for BudgetReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.remaining == 0 {
            // Allow a clean EOF exactly at the budget; any further byte is over it.
            let mut probe = [0u8; 1];
            return match self.inner.read(&mut probe)? {
                0 => Ok(0),
                _ => {
                    self.exceeded.set(true);
                    Err(io::Error::other("layer byte budget exceeded"))
                }
            };
        }
        let want = buf
            .len()
            .min(self.remaining.min(usize::MAX as u64) as usize);
        let n = self.inner.read(&mut buf[..want])?;
        self.remaining -= n as u64;
        Ok(n)
    }
}

/// Metadata of one tar entry, with PAX overrides applied.
struct Meta {
    mode: u32,
    uid: u32,
    gid: u32,
    mtime: i64,
    xattrs: Vec<(Vec<u8>, Vec<u8>)>,
}

struct Applier {
    root: Root,
    is_root: bool,
    /// Overlay marker xattr names (trusted.* as root, user.* otherwise).
    markers: MarkerNames,
    /// Whiteouts take the xattr form: set when the filesystem refused a whiteout device.
    xattr_whiteouts: bool,
    buffer: Vec<u8>,
    /// Directory mtimes, set last (creating children changes them).
    dir_times: Vec<(PathBuf, i64)>,
    /// Without root: modes of directories the owner could not write to, set last.
    dir_modes: Vec<(PathBuf, u32)>,
    stats_entries: u64,
    whiteouts: u64,
    opaque_dirs: u64,
}

impl Applier {
    fn apply_entry<R: Read>(&mut self, entry: &mut tar::Entry<'_, R>) -> Result<()> {
        let raw = entry.path_bytes().into_owned();
        let shown = String::from_utf8_lossy(&raw).into_owned();
        let bad = |reason: &str| LayerError::BadEntry {
            entry: shown.clone(),
            reason: reason.to_string(),
        };
        let kind = entry.header().entry_type();
        match kind {
            EntryType::XGlobalHeader | EntryType::XHeader => return Ok(()),
            EntryType::GNULongName | EntryType::GNULongLink => return Ok(()),
            _ => {}
        }
        let components = clean_path(&raw).map_err(bad)?;
        for dir in components.iter().rev().skip(1) {
            if dir.starts_with(WHITEOUT_PREFIX) {
                return Err(bad("a whiteout name is used as a directory"));
            }
        }
        let meta = read_meta(entry).map_err(LayerError::Stream)?;

        let Some((name, parents)) = components.split_last() else {
            // The layer root itself.
            if kind != EntryType::Directory {
                return Err(bad("the layer root can only be a directory"));
            }
            return self.apply_dir_meta(Path::new("."), &shown, &meta);
        };
        let parent: PathBuf = parents.iter().map(|c| OsStr::from_bytes(c)).collect();
        match classify(name) {
            NameKind::Invalid(reason) => Err(bad(reason)),
            NameKind::Meta => Ok(()),
            NameKind::Opaque => self.mark_opaque(&parent, &shown),
            NameKind::Whiteout(target) => {
                self.whiteout(&parent.join(OsStr::from_bytes(target)), &shown)
            }
            NameKind::Plain => {
                let path = parent.join(OsStr::from_bytes(name));
                self.create(entry, kind, &path, &shown, &meta)
            }
        }
    }

    fn create<R: Read>(
        &mut self,
        entry: &mut tar::Entry<'_, R>,
        kind: EntryType,
        path: &Path,
        shown: &str,
        meta: &Meta,
    ) -> Result<()> {
        match kind {
            EntryType::Directory => {
                self.make_inode(
                    path,
                    shown,
                    &InodeType::Directory(perm(PARENT_DIR_MODE)),
                    true,
                )?;
                self.apply_dir_meta(path, shown, meta)
            }
            EntryType::Regular | EntryType::Continuous | EntryType::GNUSparse => {
                let mut file = self.create_file(path, shown)?;
                self.copy_data(entry, &mut file, path)?;
                self.apply_fd_meta(&file, shown, meta, true)
            }
            EntryType::Symlink => {
                let target = entry
                    .link_name_bytes()
                    .ok_or_else(|| bad_entry(shown, "symlink without a target"))?
                    .into_owned();
                let target = PathBuf::from(OsStr::from_bytes(&target));
                self.make_inode(path, shown, &InodeType::Symlink(target), false)?;
                self.apply_path_meta(path, shown, meta, false)
            }
            EntryType::Link => {
                let target = entry
                    .link_name_bytes()
                    .ok_or_else(|| bad_entry(shown, "hard link without a target"))?
                    .into_owned();
                let components = clean_path(&target)
                    .map_err(|r| bad_entry(shown, &format!("hard link target {r}")))?;
                if components.is_empty() {
                    return Err(bad_entry(shown, "hard link to the layer root"));
                }
                let target: PathBuf = components.iter().map(|c| OsStr::from_bytes(c)).collect();
                if target == path {
                    return Ok(());
                }
                self.make_inode(path, shown, &InodeType::Hardlink(target), false)
            }
            EntryType::Char | EntryType::Block | EntryType::Fifo => {
                let major = entry.header().device_major().ok().flatten().unwrap_or(0);
                let minor = entry.header().device_minor().ok().flatten().unwrap_or(0);
                let dev = rustix::fs::makedev(major, minor);
                let inode = match kind {
                    EntryType::Char => InodeType::CharacterDevice(perm(0o600), dev),
                    EntryType::Block => InodeType::BlockDevice(perm(0o600), dev),
                    _ => InodeType::Fifo(perm(0o600)),
                };
                match self.make_inode(path, shown, &inode, false) {
                    Err(LayerError::Confined { source, .. })
                        if !self.is_root
                            && kind != EntryType::Fifo
                            && errno(&source) == Some(libc::EPERM) =>
                    {
                        // Only root may make device nodes: skipped, as podman and rootless
                        // docker do (a container's /dev comes from the sandbox anyway).
                        crate::rootless::announce_skipped_device(shown);
                        return Ok(());
                    }
                    other => other?,
                }
                self.apply_path_meta(path, shown, meta, true)
            }
            other => Err(bad_entry(
                shown,
                &format!("unsupported tar entry type {other:?}"),
            )),
        }
    }

    /// Creates a non-regular inode, replacing whatever the layer already has at `path`
    /// (a later tar entry wins), except that an existing directory stays for a directory.
    fn make_inode(&self, path: &Path, shown: &str, inode: &InodeType, is_dir: bool) -> Result<()> {
        let confined = |op, source| LayerError::Confined {
            entry: shown.to_string(),
            op,
            source,
        };
        for attempt in 0..3 {
            match self.root.create(path, inode) {
                Ok(()) => return Ok(()),
                Err(e) if errno(&e) == Some(libc::EEXIST) && attempt < 2 => {
                    if is_dir && self.existing_type(path, shown)? == Some(FileType::Directory) {
                        return Ok(());
                    }
                    self.remove_existing(path, shown)?;
                }
                Err(e) if errno(&e) == Some(libc::ENOENT) && attempt < 2 => {
                    if matches!(inode, InodeType::Hardlink(_)) && self.parent_exists(path) {
                        return Err(confined("hard link (target missing?)", e));
                    }
                    self.make_parents(path, shown)?;
                }
                Err(e) => return Err(confined("create", e)),
            }
        }
        Err(bad_entry(shown, "path keeps changing while it is created"))
    }

    fn create_file(&self, path: &Path, shown: &str) -> Result<File> {
        let flags =
            OpenFlags::O_WRONLY | OpenFlags::O_EXCL | OpenFlags::O_NOFOLLOW | OpenFlags::O_CLOEXEC;
        for attempt in 0..3 {
            match self.root.create_file(path, flags, &perm(0o600)) {
                Ok(file) => return Ok(file),
                Err(e) if errno(&e) == Some(libc::EEXIST) && attempt < 2 => {
                    self.remove_existing(path, shown)?;
                }
                Err(e) if errno(&e) == Some(libc::ENOENT) && attempt < 2 => {
                    self.make_parents(path, shown)?;
                }
                Err(source) => {
                    return Err(LayerError::Confined {
                        entry: shown.to_string(),
                        op: "create file",
                        source,
                    })
                }
            }
        }
        Err(bad_entry(shown, "path keeps changing while it is created"))
    }

    fn parent_exists(&self, path: &Path) -> bool {
        match path.parent() {
            Some(p) if !p.as_os_str().is_empty() => self.root.resolve(p).is_ok(),
            _ => true,
        }
    }

    fn make_parents(&self, path: &Path, shown: &str) -> Result<()> {
        if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
            self.root
                .mkdir_all(parent, &perm(PARENT_DIR_MODE))
                .map_err(|source| LayerError::Confined {
                    entry: shown.to_string(),
                    op: "create parent directories",
                    source,
                })?;
        }
        Ok(())
    }

    /// The type of what is at `path` (a final symlink is not followed), if anything.
    fn existing_type(&self, path: &Path, shown: &str) -> Result<Option<FileType>> {
        match self.root.resolve_nofollow(path) {
            Ok(handle) => {
                let st = rustix::fs::fstat(handle.as_fd())
                    .map_err(|e| LayerError::io(PathBuf::from(shown), e.into()))?;
                Ok(Some(FileType::from_raw_mode(st.st_mode)))
            }
            Err(e) if errno(&e) == Some(libc::ENOENT) => Ok(None),
            Err(source) => Err(LayerError::Confined {
                entry: shown.to_string(),
                op: "look up",
                source,
            }),
        }
    }

    fn remove_existing(&self, path: &Path, shown: &str) -> Result<()> {
        let result = match self.existing_type(path, shown)? {
            None => return Ok(()),
            Some(FileType::Directory) => self.root.remove_all(path),
            Some(_) => self.root.remove_file(path),
        };
        result.map_err(|source| LayerError::Confined {
            entry: shown.to_string(),
            op: "replace existing entry",
            source,
        })
    }

    fn whiteout(&mut self, path: &Path, shown: &str) -> Result<()> {
        // A whiteout hides lower layers only: if this layer already has the path, keep it.
        if self.existing_type(path, shown)?.is_some() {
            return Ok(());
        }
        if !self.xattr_whiteouts {
            let inode = InodeType::CharacterDevice(perm(0), rustix::fs::makedev(0, 0));
            match self.make_inode(path, shown, &inode, false) {
                Ok(()) => {
                    self.whiteouts += 1;
                    return Ok(());
                }
                Err(LayerError::Confined { source, .. })
                    if errno(&source).is_some_and(device_whiteout_refused) =>
                {
                    tracing::debug!(
                        entry = shown,
                        error = %source,
                        "whiteout devices refused here (overlayfs?); writing xattr whiteouts"
                    );
                    self.xattr_whiteouts = true;
                }
                Err(err) => return Err(err),
            }
        }
        if self.make_xattr_whiteout(path, shown)? {
            self.whiteouts += 1;
        }
        Ok(())
    }

    /// Creates the xattr form of a whiteout at `path`: its directory is marked
    /// `overlay.opaque=x` first (so an interrupted apply leaves at most a harmless marker), then
    /// a zero-size file with mode 0 gets the `overlay.whiteout` xattr. In an opaque directory a
    /// whiteout has nothing to hide and the kernel would show the file (it only looks for xattr
    /// whiteouts in `x` directories), so none is made there; returns whether one was made.
    fn make_xattr_whiteout(&self, path: &Path, shown: &str) -> Result<bool> {
        let io_err = |e: io::Error| LayerError::io(PathBuf::from(shown), e);
        let parent = path
            .parent()
            .filter(|p| !p.as_os_str().is_empty())
            .unwrap_or(Path::new("."));
        if !self.parent_exists(path) {
            self.make_parents(path, shown)?;
        }
        let dir = self
            .root
            .open_subpath(parent, dir_flags())
            .map_err(|source| LayerError::Confined {
                entry: shown.to_string(),
                op: "open whiteout directory",
                source,
            })?;
        match dir_marker(&dir, self.markers.opaque) {
            Some(value) if value == OPAQUE_VALUE[0] => return Ok(false),
            Some(value) if value == XWHITEOUTS_VALUE[0] => {}
            _ => xattr::set_fd(&dir, self.markers.opaque.as_bytes(), XWHITEOUTS_VALUE)
                .map_err(io_err)?,
        }
        // Mode 0600 until the xattr is set: user.* xattrs need write permission on the file.
        let file = self.create_file(path, shown)?;
        xattr::set_fd(&file, self.markers.whiteout.as_bytes(), b"").map_err(io_err)?;
        rustix::fs::fchmod(&file, Mode::empty()).map_err(|e| io_err(e.into()))?;
        Ok(true)
    }

    /// Removes the xattr whiteouts directly inside the open directory `dir`, which is becoming
    /// opaque: they hide nothing there, and the kernel would list them as empty files.
    fn drop_xattr_whiteouts(&self, dir: &File, shown: &str) -> Result<()> {
        let io_err = |e: io::Error| LayerError::io(PathBuf::from(shown), e);
        let mut names = Vec::new();
        let mut reader = rustix::fs::Dir::read_from(dir).map_err(|e| io_err(e.into()))?;
        while let Some(entry) = reader.read() {
            let entry = entry.map_err(|e| io_err(e.into()))?;
            let kind = entry.file_type();
            if kind == FileType::RegularFile || kind == FileType::Unknown {
                names.push(entry.file_name().to_owned());
            }
        }
        for name in names {
            let st = match rustix::fs::statat(dir, &name, AtFlags::SYMLINK_NOFOLLOW) {
                Ok(st) => st,
                Err(rustix::io::Errno::NOENT) => continue,
                Err(e) => return Err(io_err(e.into())),
            };
            if FileType::from_raw_mode(st.st_mode) != FileType::RegularFile || st.st_size != 0 {
                continue;
            }
            // f*xattr needs a file opened for I/O (a mode-0 file is not, for a non-root
            // process); the directory fd's magic link plus one name component is this entry.
            let mut link = format!("/proc/self/fd/{}/", dir.as_raw_fd()).into_bytes();
            link.extend_from_slice(name.to_bytes());
            let link = OsStr::from_bytes(&link);
            match rustix::fs::lgetxattr_query(link, self.markers.whiteout) {
                Ok(_) => rustix::fs::unlinkat(dir, &name, AtFlags::empty())
                    .map_err(|e| io_err(e.into()))?,
                Err(rustix::io::Errno::NODATA) => {}
                Err(e) => return Err(io_err(e.into())),
            }
        }
        Ok(())
    }

    fn mark_opaque(&mut self, dir: &Path, shown: &str) -> Result<()> {
        let confined = |op, source| LayerError::Confined {
            entry: shown.to_string(),
            op,
            source,
        };
        let dir = if dir.as_os_str().is_empty() {
            Path::new(".")
        } else {
            dir
        };
        if dir != Path::new(".") && self.existing_type(dir, shown)? != Some(FileType::Directory) {
            self.remove_existing(dir, shown)?;
            self.make_parents(dir, shown)?;
            self.root
                .create(dir, &InodeType::Directory(perm(PARENT_DIR_MODE)))
                .map_err(|e| confined("create opaque directory", e))?;
        }
        let file = self
            .root
            .open_subpath(dir, dir_flags())
            .map_err(|e| confined("open opaque directory", e))?;
        let previous = dir_marker(&file, self.markers.opaque);
        xattr::set_fd(&file, self.markers.opaque.as_bytes(), OPAQUE_VALUE)
            .map_err(|e| LayerError::io(PathBuf::from(shown), e))?;
        if previous == Some(XWHITEOUTS_VALUE[0]) {
            self.drop_xattr_whiteouts(&file, shown)?;
        }
        self.opaque_dirs += 1;
        Ok(())
    }

    fn copy_data<R: Read>(
        &mut self,
        entry: &mut tar::Entry<'_, R>,
        file: &mut File,
        path: &Path,
    ) -> Result<()> {
        loop {
            let n = match entry.read(&mut self.buffer) {
                Ok(0) => return Ok(()),
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(LayerError::Stream(e)),
            };
            file.write_all(&self.buffer[..n])
                .map_err(|e| LayerError::io(path, e))?;
        }
    }

    fn apply_dir_meta(&mut self, path: &Path, shown: &str, meta: &Meta) -> Result<()> {
        let file = self
            .root
            .open_subpath(path, dir_flags())
            .map_err(|source| LayerError::Confined {
                entry: shown.to_string(),
                op: "open directory",
                source,
            })?;
        self.apply_fd_meta(&file, shown, meta, false)?;
        if !self.is_root && meta.mode & 0o300 != 0o300 {
            // Without root a read-only directory could not be filled: it stays writable
            // for its owner until the layer is complete.
            rustix::fs::fchmod(&file, Mode::from_raw_mode((meta.mode | 0o300) & 0o7777))
                .map_err(|e| LayerError::io(PathBuf::from(shown), e.into()))?;
            self.dir_modes.push((path.to_path_buf(), meta.mode));
        }
        self.dir_times.push((path.to_path_buf(), meta.mtime));
        Ok(())
    }

    /// Owner, mode, xattrs and (unless deferred) mtime, through an open fd.
    fn apply_fd_meta(&self, file: &File, shown: &str, meta: &Meta, set_time: bool) -> Result<()> {
        let io_err = |e: io::Error| LayerError::io(PathBuf::from(shown), e);
        if self.is_root {
            rustix::fs::fchown(
                file,
                Some(Uid::from_raw(meta.uid)),
                Some(Gid::from_raw(meta.gid)),
            )
            .map_err(|e| io_err(e.into()))?;
        }
        rustix::fs::fchmod(file, Mode::from_raw_mode(meta.mode & 0o7777))
            .map_err(|e| io_err(e.into()))?;
        for (name, value) in &meta.xattrs {
            match xattr::set_fd(file, name, value) {
                // File capabilities (security.*) and trusted.* need privilege: without root
                // they are skipped, as chowns are (a rootless FUSE mount is nosuid, so a
                // file capability would not take effect anyway).
                Err(e) if !self.is_root && e.raw_os_error() == Some(libc::EPERM) => {
                    crate::rootless::announce_skipped_xattr(&String::from_utf8_lossy(name), shown);
                }
                other => other.map_err(io_err)?,
            }
        }
        if set_time {
            rustix::fs::futimens(file, &times(meta.mtime)).map_err(|e| io_err(e.into()))?;
        }
        Ok(())
    }

    /// Owner, mode (unless a symlink) and mtime of an inode that cannot be opened for I/O.
    fn apply_path_meta(&self, path: &Path, shown: &str, meta: &Meta, set_mode: bool) -> Result<()> {
        let io_err = |e: io::Error| LayerError::io(PathBuf::from(shown), e);
        let handle = self
            .root
            .resolve_nofollow(path)
            .map_err(|source| LayerError::Confined {
                entry: shown.to_string(),
                op: "look up",
                source,
            })?;
        let empty = AtFlags::EMPTY_PATH | AtFlags::SYMLINK_NOFOLLOW;
        if self.is_root {
            rustix::fs::chownat(
                &handle,
                "",
                Some(Uid::from_raw(meta.uid)),
                Some(Gid::from_raw(meta.gid)),
                empty,
            )
            .map_err(|e| io_err(e.into()))?;
        }
        if set_mode {
            // chmod through the O_PATH handle's magic link: it names exactly this inode.
            let fd_path = format!(
                "/proc/self/fd/{}",
                std::os::fd::AsRawFd::as_raw_fd(&handle.as_fd())
            );
            rustix::fs::chmod(fd_path.as_str(), Mode::from_raw_mode(meta.mode & 0o7777))
                .map_err(|e| io_err(e.into()))?;
        }
        rustix::fs::utimensat(&handle, "", &times(meta.mtime), empty)
            .map_err(|e| io_err(e.into()))?;
        Ok(())
    }

    fn finish_dir_times(&mut self) -> Result<()> {
        // Deepest first (a directory without search permission would hide what is below it);
        // the last entry of a path wins.
        let mut done = std::collections::HashSet::new();
        for (path, mode) in self.dir_modes.drain(..).rev() {
            if !done.insert(path.clone()) {
                continue;
            }
            let Ok(dir) = self.root.open_subpath(&path, dir_flags()) else {
                // Replaced by a later entry of the same layer.
                continue;
            };
            rustix::fs::fchmod(&dir, Mode::from_raw_mode(mode & 0o7777))
                .map_err(|e| LayerError::io(path.clone(), e.into()))?;
        }
        for (path, mtime) in self.dir_times.drain(..).rev() {
            let Ok(handle) = self.root.resolve_nofollow(&path) else {
                // Replaced by a later entry of the same layer.
                continue;
            };
            let flags = AtFlags::EMPTY_PATH | AtFlags::SYMLINK_NOFOLLOW;
            rustix::fs::utimensat(&handle, "", &times(mtime), flags)
                .map_err(|e| LayerError::io(path.clone(), e.into()))?;
        }
        Ok(())
    }
}

/// The one-byte `overlay.opaque` value of the open directory `dir`, if it has one.
fn dir_marker(dir: &File, name: &str) -> Option<u8> {
    let mut value = [0u8; 1];
    match rustix::fs::fgetxattr(dir, name, &mut value) {
        Ok(1) => Some(value[0]),
        _ => None,
    }
}

fn dir_flags() -> OpenFlags {
    OpenFlags::O_RDONLY | OpenFlags::O_DIRECTORY | OpenFlags::O_NOFOLLOW | OpenFlags::O_CLOEXEC
}

fn perm(mode: u32) -> Permissions {
    Permissions::from_mode(mode)
}

fn times(mtime: i64) -> Timestamps {
    let ts = Timespec {
        tv_sec: mtime,
        tv_nsec: 0,
    };
    Timestamps {
        last_access: ts,
        last_modification: ts,
    }
}

fn errno(e: &pathrs::error::Error) -> Option<i32> {
    match e.kind() {
        pathrs::error::ErrorKind::OsError(n) => n,
        _ => None,
    }
}

fn bad_entry(shown: &str, reason: &str) -> LayerError {
    LayerError::BadEntry {
        entry: shown.to_string(),
        reason: reason.to_string(),
    }
}

/// Splits a tar path into normal components: leading `/` and `.` parts are dropped (tar paths
/// are relative to the layer root), `..` is refused.
fn clean_path(raw: &[u8]) -> std::result::Result<Vec<&[u8]>, &'static str> {
    let mut out = Vec::new();
    for part in raw.split(|b| *b == b'/') {
        match part {
            b"" | b"." => continue,
            b".." => return Err("has a .. component; a layer cannot reach outside its root"),
            _ => out.push(part),
        }
    }
    Ok(out)
}

/// Header metadata with PAX overrides (uid, gid, mtime) and `SCHILY.xattr.*` records.
fn read_meta<R: Read>(entry: &mut tar::Entry<'_, R>) -> io::Result<Meta> {
    let header = entry.header();
    let mut meta = Meta {
        mode: header.mode().unwrap_or(0o644),
        uid: header.uid().unwrap_or(0) as u32,
        gid: header.gid().unwrap_or(0) as u32,
        mtime: header.mtime().unwrap_or(0) as i64,
        xattrs: Vec::new(),
    };
    if let Some(pax) = entry.pax_extensions()? {
        for ext in pax {
            let ext = ext?;
            let key = ext.key_bytes();
            let value = ext.value_bytes();
            if let Some(name) = key.strip_prefix(b"SCHILY.xattr.") {
                if !super::whiteout::is_overlay_xattr(name) {
                    meta.xattrs.push((name.to_vec(), value.to_vec()));
                }
                continue;
            }
            let number = std::str::from_utf8(value).ok();
            match key {
                b"uid" => {
                    if let Some(v) = number.and_then(|s| s.parse().ok()) {
                        meta.uid = v;
                    }
                }
                b"gid" => {
                    if let Some(v) = number.and_then(|s| s.parse().ok()) {
                        meta.gid = v;
                    }
                }
                b"mtime" => {
                    let secs = number.and_then(|s| s.split('.').next()?.parse().ok());
                    if let Some(v) = secs {
                        meta.mtime = v;
                    }
                }
                _ => {}
            }
        }
    }
    Ok(meta)
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;
    use std::os::unix::fs::MetadataExt;

    use super::super::{write_layer, Compression, WriteOptions};
    use super::*;

    #[test]
    fn clean_path_refuses_parent_components() {
        assert_eq!(clean_path(b"/etc/x").unwrap(), vec![&b"etc"[..], b"x"]);
        assert_eq!(clean_path(b"./a//b/").unwrap(), vec![&b"a"[..], b"b"]);
        assert!(clean_path(b"./").unwrap().is_empty());
        assert!(clean_path(b"../../etc/x").is_err());
        assert!(clean_path(b"a/../../b").is_err());
    }

    /// A plain tar of empty entries (names ending in `/` are directories).
    fn tar_of(names: &[&str]) -> Vec<u8> {
        let mut builder = tar::Builder::new(Vec::new());
        for name in names {
            let mut header = tar::Header::new_ustar();
            if name.ends_with('/') {
                header.set_entry_type(EntryType::Directory);
                header.set_mode(0o755);
            } else {
                header.set_entry_type(EntryType::Regular);
                header.set_mode(0o644);
            }
            header.set_size(0);
            header.set_mtime(1_600_000_000);
            builder
                .append_data(&mut header, name, io::empty())
                .expect("append tar entry");
        }
        builder.into_inner().expect("finish tar")
    }

    fn marker(path: &Path, name: &str) -> Option<Vec<u8>> {
        let mut value = [0u8; 16];
        let n = rustix::fs::lgetxattr(path, name, &mut value).ok()?;
        Some(value[..n].to_vec())
    }

    fn is_xattr_whiteout(path: &Path, markers: MarkerNames) -> bool {
        let md = std::fs::symlink_metadata(path).expect("stat whiteout");
        md.is_file()
            && md.len() == 0
            && md.mode() & 0o7777 == 0
            && marker(path, markers.whiteout).is_some()
    }

    const XATTR_LAYER: &[&str] = &[
        ".wh.gone",
        "dir/",
        "dir/.wh.a",
        "dir/keep",
        // After a whiteout of the same directory: that whiteout goes, `keep` stays.
        "dir/.wh..wh..opq",
        "opq/.wh..wh..opq",
        // In an opaque directory: nothing to hide, so no file.
        "opq/.wh.b",
        "deep/sub/.wh.c",
    ];

    #[test]
    fn xattr_whiteouts_mark_their_directory_and_give_way_to_opaque_markers() {
        let tmp = tempfile::tempdir().expect("temp dir");
        let dest = tmp.path().join("layer");
        let tar = tar_of(XATTR_LAYER);
        let stats = apply_layer_with(
            &tar[..],
            &dest,
            &ApplyLimits::default(),
            WhiteoutForm::Xattr,
        )
        .expect("apply");
        let markers = marker_names(rustix::process::geteuid().is_root());
        // `dir/a` was made and then dropped by the opaque marker; `opq/b` was never made.
        assert_eq!((stats.whiteouts, stats.opaque_dirs), (3, 2));

        assert!(is_xattr_whiteout(&dest.join("gone"), markers));
        assert_eq!(marker(&dest, markers.opaque), Some(b"x".to_vec()));
        assert!(is_xattr_whiteout(&dest.join("deep/sub/c"), markers));
        assert_eq!(
            marker(&dest.join("deep/sub"), markers.opaque),
            Some(b"x".to_vec())
        );
        assert_eq!(marker(&dest.join("deep"), markers.opaque), None);

        assert_eq!(
            marker(&dest.join("dir"), markers.opaque),
            Some(b"y".to_vec())
        );
        assert!(!dest.join("dir/a").exists());
        let keep = std::fs::metadata(dest.join("dir/keep")).expect("same-layer empty file");
        assert_eq!((keep.len(), keep.mode() & 0o777), (0, 0o644));
        assert_eq!(
            marker(&dest.join("opq"), markers.opaque),
            Some(b"y".to_vec())
        );
        assert!(std::fs::read_dir(dest.join("opq"))
            .expect("read opq")
            .next()
            .is_none());
    }

    #[test]
    fn xattr_whiteouts_are_written_back_as_oci_whiteouts() {
        let tmp = tempfile::tempdir().expect("temp dir");
        let dest = tmp.path().join("layer");
        let tar = tar_of(XATTR_LAYER);
        apply_layer_with(
            &tar[..],
            &dest,
            &ApplyLimits::default(),
            WhiteoutForm::Xattr,
        )
        .expect("apply");
        let opts = WriteOptions {
            compression: Compression::None,
            mtime_clamp: None,
        };
        let mut written = Vec::new();
        write_layer(&dest, &opts, &mut written).expect("write layer");
        let mut archive = tar::Archive::new(&written[..]);
        let names: BTreeSet<String> = archive
            .entries()
            .expect("entries")
            .map(|e| {
                let e = e.expect("entry");
                String::from_utf8_lossy(&e.path_bytes())
                    .trim_end_matches('/')
                    .to_string()
            })
            .collect();
        for expected in [".wh.gone", "deep/sub/.wh.c", "dir/.wh..wh..opq", "dir/keep"] {
            assert!(
                names.contains(expected),
                "{expected} missing from {names:?}"
            );
        }
        for absent in [
            "gone",
            "deep/sub/c",
            "dir/.wh.a",
            "opq/.wh.b",
            "deep/.wh..wh..opq",
        ] {
            assert!(!names.contains(absent), "{absent} in {names:?}");
        }
        // Neither marker (`x` included) nor the whiteout xattr reaches the tar.
        assert!(
            !written.windows(8).any(|w| w == b"overlay."),
            "overlay xattrs leaked into the layer tar"
        );
    }
}
