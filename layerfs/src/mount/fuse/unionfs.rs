//! The fuser `Filesystem` implementation of the copy-on-write union: namespace operations go
//! through one lock over the inode table; file data goes straight to the real files (kernel
//! passthrough when offered, otherwise positional reads and writes on the real file).

use std::collections::{HashMap, HashSet};
use std::ffi::{OsStr, OsString};
use std::fs::{self, File, Metadata, OpenOptions};
use std::io;
use std::os::unix::fs::{FileExt, FileTypeExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use fuser::{
    BackingId, Errno, FileAttr, FileHandle, FileType, Filesystem, FopenFlags, Generation, INodeNo,
    InitFlags, KernelConfig, LockOwner, OpenFlags, RenameFlags, ReplyAttr, ReplyCreate, ReplyData,
    ReplyDirectory, ReplyEmpty, ReplyEntry, ReplyLseek, ReplyOpen, ReplyStatfs, ReplyWrite,
    ReplyXattr, Request, TimeOrNow, WriteFlags,
};
use rustix::fs::{AtFlags, Timespec, Timestamps, XattrFlags, CWD};

use super::copyup::{copy_up, get_xattr, list_xattrs};
use super::inodes::{InodeTable, ROOT_INO};
use super::layers::{LayerIndex, LayerSet, Resolved};
use super::whiteout::{
    could_be_xattr_whiteout, has_whiteout_xattr, holds_xattr_whiteouts, is_private_xattr,
    is_whiteout, is_whiteout_at, make_whiteout, opaque_xattr, set_opaque,
};
use crate::rootless::WritableDir;

/// How long the kernel may cache entries (also negative ones) and attributes. Every change goes
/// through this mount, and the kernel updates its cache from our replies, so the cache is only
/// stale for changes made to the real dirs behind our back, which the design rules out.
const TTL: Duration = Duration::from_secs(60);

thread_local! {
    /// Each server thread's buffer for the data of served (not passed through) reads.
    static READ_BUFFER: std::cell::RefCell<Vec<u8>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// An open regular file.
struct OpenFile {
    file: Arc<File>,
    /// The inode the handle was opened on.
    ino: u64,
    /// Layer of the real file: attribute changes through the handle go to its descriptor
    /// only when this is the upper layer.
    layer: LayerIndex,
    /// Whether the kernel serves this handle through the page cache (not passed through).
    cached: bool,
    /// Keeps the kernel passthrough registration alive while the handle is open.
    _backing: Option<Arc<BackingId>>,
}

/// Where a setattr applies its changes.
enum AttrTarget {
    /// The open upper file of the caller's handle.
    Handle(Arc<File>),
    /// The upper file by path.
    Path(PathBuf),
}

/// Mutable state, guarded by one lock.
struct State {
    inodes: InodeTable,
    files: HashMap<u64, OpenFile>,
    dirs: HashMap<u64, Vec<(u64, FileType, OsString)>>,
    /// Passthrough registration per inode: the layer of the backing file and the registration.
    backing: HashMap<u64, (LayerIndex, Weak<BackingId>)>,
    /// Open cached (not passed through) handles per inode.
    cached: HashMap<u64, usize>,
    /// Inodes that have had a passthrough handle.
    passed_through: HashSet<u64>,
    next_fh: u64,
}

/// The union filesystem served over FUSE.
pub struct UnionFs {
    layers: LayerSet,
    state: Mutex<State>,
    passthrough: AtomicBool,
}

type Res<T> = Result<T, Errno>;

fn errno(err: io::Error) -> Errno {
    Errno::from(err)
}

fn kind_of(file_type: fs::FileType) -> FileType {
    if file_type.is_dir() {
        FileType::Directory
    } else if file_type.is_symlink() {
        FileType::Symlink
    } else if file_type.is_char_device() {
        FileType::CharDevice
    } else if file_type.is_block_device() {
        FileType::BlockDevice
    } else if file_type.is_fifo() {
        FileType::NamedPipe
    } else if file_type.is_socket() {
        FileType::Socket
    } else {
        FileType::RegularFile
    }
}

fn time(secs: i64, nsecs: i64) -> SystemTime {
    if secs >= 0 {
        UNIX_EPOCH + Duration::new(secs as u64, nsecs as u32)
    } else {
        UNIX_EPOCH - Duration::from_secs(secs.unsigned_abs()) + Duration::from_nanos(nsecs as u64)
    }
}

/// FUSE attributes of a real file shown as inode `ino`; `merged_dir` reports nlink 1 like overlay.
fn attr_of(ino: u64, meta: &Metadata, merged_dir: bool) -> FileAttr {
    FileAttr {
        ino: INodeNo(ino),
        size: meta.size(),
        blocks: meta.blocks(),
        atime: time(meta.atime(), meta.atime_nsec()),
        mtime: time(meta.mtime(), meta.mtime_nsec()),
        ctime: time(meta.ctime(), meta.ctime_nsec()),
        crtime: UNIX_EPOCH,
        kind: kind_of(meta.file_type()),
        perm: (meta.mode() & 0o7777) as u16,
        nlink: if merged_dir { 1 } else { meta.nlink() as u32 },
        uid: meta.uid(),
        gid: meta.gid(),
        rdev: meta.rdev() as u32,
        blksize: meta.blksize() as u32,
        flags: 0,
    }
}

fn to_timespec(time: Option<TimeOrNow>) -> Timespec {
    match time {
        None => Timespec {
            tv_sec: 0,
            tv_nsec: libc::UTIME_OMIT as _,
        },
        Some(TimeOrNow::Now) => Timespec {
            tv_sec: 0,
            tv_nsec: libc::UTIME_NOW as _,
        },
        Some(TimeOrNow::SpecificTime(t)) => match t.duration_since(UNIX_EPOCH) {
            Ok(d) => Timespec {
                tv_sec: d.as_secs() as i64,
                tv_nsec: d.subsec_nanos() as _,
            },
            // A time before 1970. fuser 0.18 decodes the kernel's (tv_sec < 0, tv_nsec) as
            // UNIX_EPOCH - (-tv_sec s + tv_nsec ns) (its system_time_from_time), not as
            // tv_sec s + tv_nsec ns, so invert exactly that to get the caller's timespec back
            // (utimensat {-100, 250} would otherwise land as -100.00000025 s).
            Err(e) => {
                let d = e.duration();
                Timespec {
                    tv_sec: -(d.as_secs() as i64),
                    tv_nsec: d.subsec_nanos() as _,
                }
            }
        },
    }
}

fn lstat(path: &Path) -> Res<Metadata> {
    fs::symlink_metadata(path).map_err(errno)
}

/// Removes a whiteout (either form) at `path` if there is one; returns whether one was removed.
fn remove_whiteout(path: &Path) -> Res<bool> {
    match fs::symlink_metadata(path) {
        Ok(meta) if is_whiteout_at(path, &meta) => {
            fs::remove_file(path).map_err(errno)?;
            Ok(true)
        }
        Ok(_) => Err(Errno::EEXIST),
        Err(err) if err.kind() == io::ErrorKind::NotFound => Ok(false),
        Err(err) => Err(errno(err)),
    }
}

/// Removes every whiteout inside the real directory `dir` (recursively).
fn remove_whiteouts_below(dir: &Path) -> Res<()> {
    remove_markers_below(dir, false)
}

/// Removes every whiteout (either form) inside the real directory `dir` and, with `opaque`,
/// the opaque markers (`y` and `x`) of `dir` and every directory below it: what a copy of the
/// merged tree looks like.
fn remove_markers_below(dir: &Path, opaque: bool) -> Res<()> {
    let xattr_whiteouts = holds_xattr_whiteouts(dir);
    if opaque {
        match rustix::fs::lremovexattr(dir, opaque_xattr()) {
            Ok(()) | Err(rustix::io::Errno::NODATA) => {}
            Err(e) => return Err(errno(e.into())),
        }
    }
    for entry in fs::read_dir(dir).map_err(errno)? {
        let entry = entry.map_err(errno)?;
        let kind = entry.file_type().map_err(errno)?;
        if kind.is_dir() {
            remove_markers_below(&entry.path(), opaque)?;
            continue;
        }
        let whiteout = if kind.is_char_device() {
            is_whiteout(&entry.metadata().map_err(errno)?)
        } else {
            xattr_whiteouts
                && kind.is_file()
                && could_be_xattr_whiteout(&entry.metadata().map_err(errno)?)
                && has_whiteout_xattr(&entry.path())
        };
        if whiteout {
            fs::remove_file(entry.path()).map_err(errno)?;
        }
    }
    Ok(())
}

impl UnionFs {
    /// A filesystem over `layers`.
    pub fn new(layers: LayerSet) -> io::Result<UnionFs> {
        let root = layers.resolve_root()?;
        let inodes = InodeTable::new((root.meta.dev(), root.meta.ino()), root.dir_layers);
        Ok(UnionFs {
            layers,
            state: Mutex::new(State {
                inodes,
                files: HashMap::new(),
                dirs: HashMap::new(),
                backing: HashMap::new(),
                cached: HashMap::new(),
                passed_through: HashSet::new(),
                next_fh: 1,
            }),
            passthrough: AtomicBool::new(false),
        })
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn upper(&self) -> Res<LayerIndex> {
        self.layers.upper().ok_or(Errno::EROFS)
    }

    /// Path, layer and merged layers of live inode `ino`.
    fn node_info(&self, st: &State, ino: u64) -> Res<(PathBuf, LayerIndex, Vec<LayerIndex>)> {
        let node = st.inodes.get(ino).ok_or(Errno::ENOENT)?;
        let path = st.inodes.path(ino).ok_or(Errno::ENOENT)?;
        Ok((path, node.layer, node.dir_layers.clone()))
    }

    /// Path and merged layers of directory `ino`.
    fn dir_info(&self, st: &State, ino: u64) -> Res<(PathBuf, Vec<LayerIndex>)> {
        let node = st.inodes.get(ino).ok_or(Errno::ENOENT)?;
        if !node.is_dir {
            return Err(Errno::ENOTDIR);
        }
        let path = st.inodes.path(ino).ok_or(Errno::ENOENT)?;
        Ok((path, node.dir_layers.clone()))
    }

    fn resolve(&self, st: &State, parent: u64, name: &OsStr) -> Res<Option<Resolved>> {
        let (dir, dir_layers) = self.dir_info(st, parent)?;
        self.layers.lookup(&dir, &dir_layers, name).map_err(errno)
    }

    /// Whether a layer below the upper one shows an entry `name` in directory `parent`.
    fn lower_positive(&self, st: &State, parent: u64, name: &OsStr) -> Res<bool> {
        let (dir, dir_layers) = self.dir_info(st, parent)?;
        let upper = self.layers.upper();
        let lowers: Vec<LayerIndex> = dir_layers
            .into_iter()
            .filter(|&l| Some(l) != upper)
            .collect();
        Ok(self
            .layers
            .lookup(&dir, &lowers, name)
            .map_err(errno)?
            .is_some())
    }

    /// Records `resolved` as the entry `name` of `parent`; returns its inode and attributes.
    fn remember(
        &self,
        st: &mut State,
        parent: u64,
        name: &OsStr,
        resolved: &Resolved,
        count_lookup: bool,
    ) -> (u64, FileAttr) {
        let ino = st
            .inodes
            .ino_for((resolved.meta.dev(), resolved.meta.ino()));
        st.inodes.remember(
            ino,
            parent,
            name,
            resolved.layer,
            resolved.meta.is_dir(),
            resolved.dir_layers.clone(),
            count_lookup,
        );
        (
            ino,
            attr_of(ino, &resolved.meta, resolved.dir_layers.len() > 1),
        )
    }

    /// Records a freshly created upper entry (new identity) and returns its attributes.
    fn remember_new(
        &self,
        st: &mut State,
        parent: u64,
        name: &OsStr,
        path: &Path,
    ) -> Res<FileAttr> {
        let meta = lstat(path)?;
        Ok(self.remember_created(st, parent, name, meta))
    }

    /// Records a freshly created upper entry with metadata `meta` under a new inode number.
    /// A new entry is always purely upper: anything below it was hidden or it would exist.
    fn remember_created(
        &self,
        st: &mut State,
        parent: u64,
        name: &OsStr,
        meta: Metadata,
    ) -> FileAttr {
        let upper = self.layers.upper().unwrap_or(0);
        st.inodes.unbind_key((meta.dev(), meta.ino()));
        let resolved = Resolved {
            layer: upper,
            dir_layers: if meta.is_dir() {
                vec![upper]
            } else {
                Vec::new()
            },
            meta,
        };
        self.remember(st, parent, name, &resolved, true).1
    }

    /// Makes sure inode `ino` exists in the upper dir (copying it up with its parents if needed)
    /// and returns its merged path.
    fn ensure_upper(&self, st: &mut State, ino: u64) -> Res<PathBuf> {
        let upper = self.upper()?;
        let node = st.inodes.get(ino).ok_or(Errno::ENOENT)?;
        if node.layer == upper {
            return st.inodes.path(ino).ok_or(Errno::ENOENT);
        }
        let (parent, _) = node
            .aliases
            .iter()
            .find(|(p, _)| st.inodes.path(*p).is_some())
            .cloned()
            .ok_or(Errno::ENOENT)?;
        self.ensure_upper(st, parent)?;
        let node = st.inodes.get(ino).ok_or(Errno::ENOENT)?;
        let (parent, name) = node
            .aliases
            .iter()
            .find(|(p, _)| *p == parent)
            .cloned()
            .ok_or(Errno::ENOENT)?;
        let rel = st.inodes.path(parent).ok_or(Errno::ENOENT)?.join(&name);
        let src = self.layers.real(node.layer, &rel);
        let dst = self.layers.real(upper, &rel);
        let meta = lstat(&src)?;
        let _writable = WritableDir::new(dst.parent().unwrap_or(&dst)).map_err(errno)?;
        copy_up(&src, &meta, &dst).map_err(errno)?;
        let new_meta = lstat(&dst)?;
        st.inodes.unbind_key((meta.dev(), meta.ino()));
        st.inodes.bind_key((new_meta.dev(), new_meta.ino()), ino);
        if let Some(node) = st.inodes.get_mut(ino) {
            node.layer = upper;
            if node.is_dir {
                node.dir_layers.insert(0, upper);
            } else {
                node.aliases = vec![(parent, name)];
            }
        }
        Ok(rel)
    }

    /// Copies every lower-only entry below the merged directory `rel` into the upper dir, which
    /// already holds `rel` itself, and drops the whiteouts there.
    fn copy_up_tree(&self, st: &mut State, rel: &Path, dir_layers: &[LayerIndex]) -> Res<()> {
        let upper = self.upper()?;
        let entries = self.layers.list(rel, dir_layers).map_err(errno)?;
        let _writable = WritableDir::new(&self.layers.real(upper, rel)).map_err(errno)?;
        for entry in entries {
            let child = self
                .layers
                .lookup(rel, dir_layers, &entry.name)
                .map_err(errno)?
                .ok_or(Errno::EIO)?;
            let child_rel = rel.join(&entry.name);
            if child.layer != upper {
                let dst = self.layers.real(upper, &child_rel);
                copy_up(
                    &self.layers.real(child.layer, &child_rel),
                    &child.meta,
                    &dst,
                )
                .map_err(errno)?;
                let old_key = (child.meta.dev(), child.meta.ino());
                let new_meta = lstat(&dst)?;
                let ino = st.inodes.ino_for(old_key);
                st.inodes.unbind_key(old_key);
                st.inodes.bind_key((new_meta.dev(), new_meta.ino()), ino);
            }
            if child.meta.is_dir() && child.dir_layers.iter().any(|&l| l != upper) {
                self.copy_up_tree(st, &child_rel, &child.dir_layers)?;
            }
        }
        Ok(())
    }

    /// [`Self::refresh`] of every known inode below directory `ino` (after it moved), parents
    /// before their children.
    fn refresh_below(&self, st: &mut State, ino: u64) -> Res<()> {
        let mut below = st.inodes.descendants(ino);
        below.sort_by_key(|&ino| {
            st.inodes
                .path(ino)
                .map(|p| p.components().count())
                .unwrap_or(0)
        });
        for ino in below {
            self.refresh(st, ino)?;
        }
        Ok(())
    }

    /// Re-resolves live inode `ino` after its entry moved or was copied up.
    fn refresh(&self, st: &mut State, ino: u64) -> Res<()> {
        let Some(node) = st.inodes.get(ino) else {
            return Ok(());
        };
        let Some((parent, name)) = node.aliases.first().cloned() else {
            return Ok(());
        };
        if let Some(resolved) = self.resolve(st, parent, &name)? {
            st.inodes
                .bind_key((resolved.meta.dev(), resolved.meta.ino()), ino);
            if let Some(node) = st.inodes.get_mut(ino) {
                node.layer = resolved.layer;
                node.dir_layers = resolved.dir_layers;
            }
        }
        Ok(())
    }

    fn next_fh(st: &mut State) -> u64 {
        st.next_fh += 1;
        st.next_fh
    }

    /// Owner for a new entry: the caller, with the parent's group when it is setgid.
    fn new_owner(&self, req: &Request, parent_meta: &Metadata) -> (u32, u32, bool) {
        let sgid = parent_meta.mode() & libc::S_ISGID != 0;
        let gid = if sgid { parent_meta.gid() } else { req.gid() };
        (req.uid(), gid, sgid)
    }

    /// Prepares creation of `name` in `parent`: copies the parent up, checks the name is free,
    /// removes a whiteout. Returns (real path, whether a whiteout was replaced, parent metadata).
    fn prepare_create(
        &self,
        st: &mut State,
        parent: u64,
        name: &OsStr,
    ) -> Res<(PathBuf, bool, Metadata, WritableDir)> {
        let upper = self.upper()?;
        if self.resolve(st, parent, name)?.is_some() {
            return Err(Errno::EEXIST);
        }
        let dir = self.ensure_upper(st, parent)?;
        let parent_real = self.layers.real(upper, &dir);
        let parent_meta = lstat(&parent_real)?;
        let writable = WritableDir::new(&parent_real).map_err(errno)?;
        let path = parent_real.join(name);
        let replaced = remove_whiteout(&path)?;
        Ok((path, replaced, parent_meta, writable))
    }

    /// Opens the real file behind `ino` and registers it for passthrough when possible.
    fn open_file(
        &self,
        st: &mut State,
        ino: u64,
        flags: i32,
        backing_open: &dyn Fn(&File) -> io::Result<BackingId>,
    ) -> Res<(u64, FopenFlags, Option<Arc<BackingId>>)> {
        let write = flags & libc::O_ACCMODE != libc::O_RDONLY || flags & libc::O_TRUNC != 0;
        let (rel, layer) = if write {
            let rel = self.ensure_upper(st, ino)?;
            (rel, self.upper()?)
        } else {
            let (rel, layer, _) = self.node_info(st, ino)?;
            (rel, layer)
        };
        let path = self.layers.real(layer, &rel);
        let writable_layer = Some(layer) == self.layers.upper();
        let mut options = OpenOptions::new();
        options.read(true).write(writable_layer);
        options.custom_flags(
            flags & (libc::O_SYNC | libc::O_DSYNC | libc::O_NOATIME) & !libc::O_NOATIME,
        );
        let need = if writable_layer { 0o600 } else { 0o400 };
        let file = crate::rootless::open_as_owner(&options, &path, need).map_err(errno)?;
        Ok(self.register_handle(st, ino, layer, file, backing_open))
    }

    /// Makes an open real file a FUSE file handle, passed through to the kernel when possible.
    ///
    /// The kernel (>= 6.9) keeps one io mode per inode while it is open: every open of an
    /// inode that has a passthrough handle must be passed through to the same backing file,
    /// and none may be while it has a cached (served) handle; a server that breaks either rule
    /// makes open(2) fail with EIO. Only files of the upper dir are passed through (and, on a
    /// read-only mount, any file): a lower file may be copied up while it is open, and the
    /// copy would then need a second backing file for the same inode. Its reads are served
    /// here, from the copy once there is one (see [`Self::read_file`]), as overlayfs does.
    fn register_handle(
        &self,
        st: &mut State,
        ino: u64,
        layer: LayerIndex,
        file: File,
        backing_open: &dyn Fn(&File) -> io::Result<BackingId>,
    ) -> (u64, FopenFlags, Option<Arc<BackingId>>) {
        let file = Arc::new(file);
        let fh = Self::next_fh(st);
        // No flush requests: data never lingers in this process, and locks are kernel-local.
        let mut fopen = FopenFlags::FOPEN_NOFLUSH;
        let mut backing = None;
        let final_layer = self.layers.upper().is_none_or(|upper| upper == layer);
        let cached_open = st.cached.get(&ino).is_some_and(|&n| n > 0);
        // An inode passed through stays so while open, even if passthrough has since been
        // turned off for new inodes. Its real file cannot have changed: a file in its final
        // layer stays there.
        let live = st.backing.get(&ino).and_then(|(_, weak)| weak.upgrade());
        if live.is_some() {
            backing = live;
        } else if self.passthrough.load(Ordering::Relaxed) && final_layer && !cached_open {
            match backing_open(&file) {
                Ok(id) => {
                    let id = Arc::new(id);
                    st.backing.insert(ino, (layer, Arc::downgrade(&id)));
                    st.passed_through.insert(ino);
                    backing = Some(id);
                }
                Err(err) => {
                    // Unsupported for good (no privilege, old kernel) or for this file only
                    // (e.g. a backing file on a stacked filesystem): serve it ourselves.
                    if matches!(
                        err.raw_os_error(),
                        Some(libc::EPERM) | Some(libc::ENOTTY) | Some(libc::EOPNOTSUPP)
                    ) {
                        tracing::debug!("fuse passthrough unavailable: {err}");
                        self.passthrough.store(false, Ordering::Relaxed);
                    }
                }
            }
        }
        if backing.is_none() {
            *st.cached.entry(ino).or_insert(0) += 1;
            // Pages cached before a passthrough open may be stale: passthrough writes bypass
            // the page cache. Keep the cache only for inodes never passed through.
            if !st.passed_through.contains(&ino) {
                fopen |= FopenFlags::FOPEN_KEEP_CACHE;
            }
        }
        st.files.insert(
            fh,
            OpenFile {
                file,
                ino,
                layer,
                cached: backing.is_none(),
                _backing: backing.clone(),
            },
        );
        (fh, fopen, backing)
    }

    /// Some open handle of inode `ino` on its real file in `layer`: what is left of a file
    /// unlinked while open.
    fn handle_of(st: &State, ino: u64, layer: LayerIndex) -> Option<Arc<File>> {
        st.files
            .values()
            .find(|f| f.ino == ino && f.layer == layer)
            .map(|f| f.file.clone())
    }

    /// The file a read through handle `fh` reads: its own or, when its inode was copied up
    /// after it was opened, the copy (reopened once), as overlayfs reads through a descriptor
    /// opened before a copy-up. A hard-linked lower file keeps its own: the copy-up gave only
    /// one of its names the copy (overlayfs breaks such links too), maybe not this handle's.
    fn read_file(&self, fh: FileHandle) -> Res<Arc<File>> {
        let mut st = self.lock();
        let open = st.files.get(&fh.0).ok_or(Errno::EBADF)?;
        let (ino, layer, file) = (open.ino, open.layer, open.file.clone());
        let Some(node_layer) = st.inodes.get(ino).map(|node| node.layer) else {
            return Ok(file);
        };
        if node_layer == layer || file.metadata().map_err(errno)?.nlink() > 1 {
            return Ok(file);
        }
        let Some(rel) = st.inodes.path(ino) else {
            return Ok(file);
        };
        let real = self.layers.real(node_layer, &rel);
        let copy = crate::rootless::open_as_owner(OpenOptions::new().read(true), &real, 0o400)
            .map_err(errno)?;
        let copy = Arc::new(copy);
        if let Some(open) = st.files.get_mut(&fh.0) {
            open.file = copy.clone();
            open.layer = node_layer;
        }
        Ok(copy)
    }

    fn file(&self, fh: FileHandle) -> Res<Arc<File>> {
        let st = self.lock();
        st.files
            .get(&fh.0)
            .map(|f| f.file.clone())
            .ok_or(Errno::EBADF)
    }

    /// The entry `name` of `parent` and how long the kernel may keep it.
    ///
    /// A lower file with several names is shared by one inode until one name is copied up:
    /// then, as in overlayfs, only that name has the copy and the others still show the lower
    /// file, so they must stop meaning this inode. Their entries are therefore not cached (the
    /// kernel asks again at each use and learns the new inode of those names); caching them
    /// would show the copy under every name, which the upper dir does not hold. Because every
    /// path-based use of such a name looks it up first, the name looked up last is the one a
    /// copy-up of the shared inode gives the copy.
    fn do_lookup(&self, parent: u64, name: &OsStr) -> Res<(FileAttr, Duration)> {
        let mut st = self.lock();
        let resolved = self.resolve(&st, parent, name)?.ok_or(Errno::ENOENT)?;
        let shared_lower = self
            .layers
            .upper()
            .is_some_and(|upper| upper != resolved.layer)
            && !resolved.meta.is_dir()
            && resolved.meta.nlink() > 1;
        let (ino, attr) = self.remember(&mut st, parent, name, &resolved, true);
        if !shared_lower {
            return Ok((attr, TTL));
        }
        st.inodes.prefer_alias(ino, parent, name);
        Ok((attr, Duration::ZERO))
    }

    fn do_getattr(&self, ino: u64, fh: Option<FileHandle>) -> Res<FileAttr> {
        let st = self.lock();
        // A handle opened before a copy-up still holds the lower file: not this inode's data.
        // (An unlinked open file has no path any more; its handle is all there is.)
        let node_layer = st.inodes.get(ino).map(|node| node.layer);
        if let Some(open) = fh
            .and_then(|fh| st.files.get(&fh.0))
            .filter(|f| node_layer.is_none_or(|layer| layer == f.layer))
        {
            let meta = open.file.metadata().map_err(errno)?;
            return Ok(attr_of(ino, &meta, false));
        }
        let (rel, layer, dir_layers) = match self.node_info(&st, ino) {
            Ok(info) => info,
            // fstat of a file unlinked while open.
            Err(Errno::ENOENT) => {
                let file = node_layer
                    .and_then(|layer| Self::handle_of(&st, ino, layer))
                    .ok_or(Errno::ENOENT)?;
                return Ok(attr_of(ino, &file.metadata().map_err(errno)?, false));
            }
            Err(e) => return Err(e),
        };
        let meta = lstat(&self.layers.real(layer, &rel))?;
        Ok(attr_of(ino, &meta, dir_layers.len() > 1))
    }

    #[allow(clippy::too_many_arguments)]
    fn do_setattr(
        &self,
        ino: u64,
        mode: Option<u32>,
        uid: Option<u32>,
        gid: Option<u32>,
        size: Option<u64>,
        atime: Option<TimeOrNow>,
        mtime: Option<TimeOrNow>,
        fh: Option<FileHandle>,
    ) -> Res<FileAttr> {
        let mut st = self.lock();
        let upper = self.upper()?;
        // Through the handle's descriptor when it holds the upper file (fchown, fchmod,
        // futimens as the caller did: no path walks, and right for an unlinked open file too);
        // otherwise by path, after a copy-up.
        let open = fh
            .and_then(|fh| st.files.get(&fh.0))
            .filter(|f| f.layer == upper)
            .map(|f| f.file.clone());
        let target = match open {
            Some(file) => AttrTarget::Handle(file),
            None => match self.ensure_upper(&mut st, ino) {
                Ok(rel) => AttrTarget::Path(self.layers.real(upper, &rel)),
                // fchmod, fchown, futimens of a file unlinked while open: no path, no fh.
                Err(Errno::ENOENT) => {
                    AttrTarget::Handle(Self::handle_of(&st, ino, upper).ok_or(Errno::ENOENT)?)
                }
                Err(e) => return Err(e),
            },
        };
        if uid.is_some() || gid.is_some() {
            match &target {
                AttrTarget::Handle(file) => std::os::unix::fs::fchown(&**file, uid, gid),
                AttrTarget::Path(path) => std::os::unix::fs::lchown(path, uid, gid),
            }
            .map_err(errno)?;
        }
        if let Some(mode) = mode {
            let perm = fs::Permissions::from_mode(mode & 0o7777);
            match &target {
                AttrTarget::Handle(file) => file.set_permissions(perm).map_err(errno)?,
                AttrTarget::Path(path) => {
                    if !lstat(path)?.file_type().is_symlink() {
                        fs::set_permissions(path, perm).map_err(errno)?;
                    }
                }
            }
        }
        if let Some(size) = size {
            match &target {
                AttrTarget::Handle(file) => file.set_len(size).map_err(errno)?,
                AttrTarget::Path(path) => OpenOptions::new()
                    .write(true)
                    .open(path)
                    .and_then(|f| f.set_len(size))
                    .map_err(errno)?,
            }
        }
        if atime.is_some() || mtime.is_some() {
            let times = Timestamps {
                last_access: to_timespec(atime),
                last_modification: to_timespec(mtime),
            };
            match &target {
                AttrTarget::Handle(file) => rustix::fs::futimens(&**file, &times),
                AttrTarget::Path(path) => {
                    rustix::fs::utimensat(CWD, path, &times, AtFlags::SYMLINK_NOFOLLOW)
                }
            }
            .map_err(|e| errno(e.into()))?;
        }
        let meta = match &target {
            AttrTarget::Handle(file) => file.metadata().map_err(errno)?,
            AttrTarget::Path(path) => lstat(path)?,
        };
        let merged = st.inodes.get(ino).is_some_and(|n| n.dir_layers.len() > 1);
        Ok(attr_of(ino, &meta, merged))
    }

    fn do_mknod(
        &self,
        req: &Request,
        parent: u64,
        name: &OsStr,
        mode: u32,
        umask: u32,
        rdev: u32,
    ) -> Res<FileAttr> {
        // A character device 0/0 is a whiteout in the upper dir: it would hide the name (and
        // the layer would delete it) instead of creating it. overlayfs refuses it the same way.
        if mode & libc::S_IFMT == libc::S_IFCHR && rdev == 0 {
            return Err(Errno::EPERM);
        }
        let mut st = self.lock();
        let (path, _, parent_meta, _writable) = self.prepare_create(&mut st, parent, name)?;
        let (uid, gid, _) = self.new_owner(req, &parent_meta);
        let kind = match mode & libc::S_IFMT {
            libc::S_IFREG | 0 => rustix::fs::FileType::RegularFile,
            libc::S_IFIFO => rustix::fs::FileType::Fifo,
            libc::S_IFSOCK => rustix::fs::FileType::Socket,
            libc::S_IFCHR => rustix::fs::FileType::CharacterDevice,
            libc::S_IFBLK => rustix::fs::FileType::BlockDevice,
            _ => return Err(Errno::EINVAL),
        };
        rustix::fs::mknodat(
            CWD,
            &path,
            kind,
            rustix::fs::Mode::from_raw_mode(mode & !umask & 0o7777),
            rdev as u64,
        )
        .map_err(|e| errno(e.into()))?;
        std::os::unix::fs::lchown(&path, Some(uid), Some(gid)).map_err(errno)?;
        self.remember_new(&mut st, parent, name, &path)
    }

    fn do_mkdir(
        &self,
        req: &Request,
        parent: u64,
        name: &OsStr,
        mode: u32,
        umask: u32,
    ) -> Res<FileAttr> {
        let mut st = self.lock();
        let (path, replaced, parent_meta, _writable) =
            self.prepare_create(&mut st, parent, name)?;
        let (uid, gid, sgid) = self.new_owner(req, &parent_meta);
        fs::create_dir(&path).map_err(errno)?;
        std::os::unix::fs::lchown(&path, Some(uid), Some(gid)).map_err(errno)?;
        let mut perm = mode & !umask & 0o7777;
        if sgid {
            perm |= libc::S_ISGID;
        }
        fs::set_permissions(&path, fs::Permissions::from_mode(perm)).map_err(errno)?;
        if replaced {
            set_opaque(&path).map_err(errno)?;
        }
        self.remember_new(&mut st, parent, name, &path)
    }

    fn do_symlink(&self, req: &Request, parent: u64, name: &OsStr, target: &Path) -> Res<FileAttr> {
        let mut st = self.lock();
        let (path, _, parent_meta, _writable) = self.prepare_create(&mut st, parent, name)?;
        let (uid, gid, _) = self.new_owner(req, &parent_meta);
        std::os::unix::fs::symlink(target, &path).map_err(errno)?;
        std::os::unix::fs::lchown(&path, Some(uid), Some(gid)).map_err(errno)?;
        self.remember_new(&mut st, parent, name, &path)
    }

    fn do_unlink(&self, parent: u64, name: &OsStr, dir: bool) -> Res<()> {
        let mut st = self.lock();
        let upper = self.upper()?;
        let resolved = self.resolve(&st, parent, name)?.ok_or(Errno::ENOENT)?;
        if resolved.meta.is_dir() != dir {
            return Err(if dir { Errno::ENOTDIR } else { Errno::EISDIR });
        }
        let rel = self.ensure_upper(&mut st, parent)?.join(name);
        if dir
            && !self
                .layers
                .list(&rel, &resolved.dir_layers)
                .map_err(errno)?
                .is_empty()
        {
            return Err(Errno::ENOTEMPTY);
        }
        let path = self.layers.real(upper, &rel);
        let _writable = WritableDir::new(path.parent().unwrap_or(&path)).map_err(errno)?;
        if resolved.layer == upper {
            if dir {
                let _inner = WritableDir::new(&path).map_err(errno)?;
                remove_whiteouts_below(&path)?;
                fs::remove_dir(&path).map_err(errno)?;
            } else {
                fs::remove_file(&path).map_err(errno)?;
            }
        }
        if self.lower_positive(&st, parent, name)? {
            make_whiteout(&path).map_err(errno)?;
        }
        let ino = st
            .inodes
            .ino_for((resolved.meta.dev(), resolved.meta.ino()));
        st.inodes.drop_alias(ino, parent, name);
        Ok(())
    }

    fn do_link(&self, ino: u64, new_parent: u64, new_name: &OsStr) -> Res<FileAttr> {
        let mut st = self.lock();
        let upper = self.upper()?;
        if st.inodes.get(ino).is_some_and(|n| n.is_dir) {
            return Err(Errno::EPERM);
        }
        let src = self.layers.real(upper, &self.ensure_upper(&mut st, ino)?);
        let (path, _, _, _writable) = self.prepare_create(&mut st, new_parent, new_name)?;
        fs::hard_link(&src, &path).map_err(errno)?;
        let meta = lstat(&path)?;
        let node = st.inodes.get(ino).ok_or(Errno::ENOENT)?;
        let (layer, is_dir) = (node.layer, node.is_dir);
        st.inodes
            .remember(ino, new_parent, new_name, layer, is_dir, Vec::new(), true);
        Ok(attr_of(ino, &meta, false))
    }

    fn do_rename(
        &self,
        parent: u64,
        name: &OsStr,
        new_parent: u64,
        new_name: &OsStr,
        flags: RenameFlags,
    ) -> Res<()> {
        if flags == RenameFlags::RENAME_EXCHANGE {
            return self.do_exchange(parent, name, new_parent, new_name);
        }
        if !(flags - RenameFlags::RENAME_NOREPLACE).is_empty() {
            return Err(Errno::EINVAL);
        }
        let mut st = self.lock();
        let upper = self.upper()?;
        let src = self.resolve(&st, parent, name)?.ok_or(Errno::ENOENT)?;
        let dst = self.resolve(&st, new_parent, new_name)?;
        let is_dir = src.meta.is_dir();
        let src_key = (src.meta.dev(), src.meta.ino());
        if let Some(dst) = &dst {
            if (dst.meta.dev(), dst.meta.ino()) == src_key {
                return Ok(());
            }
            if flags.contains(RenameFlags::RENAME_NOREPLACE) {
                return Err(Errno::EEXIST);
            }
            match (is_dir, dst.meta.is_dir()) {
                (true, false) => return Err(Errno::ENOTDIR),
                (false, true) => return Err(Errno::EISDIR),
                (true, true) => {
                    let dst_rel = self.dir_info(&st, new_parent)?.0.join(new_name);
                    if !self
                        .layers
                        .list(&dst_rel, &dst.dir_layers)
                        .map_err(errno)?
                        .is_empty()
                    {
                        self.mark_like_failed_overlay_rename(
                            &st, upper, parent, name, &src, new_parent, dst,
                        )?;
                        return Err(Errno::ENOTEMPTY);
                    }
                }
                (false, false) => {}
            }
        }
        // The source must be a live node to be copied up.
        let src_ino = st.inodes.ino_for(src_key);
        let was_live = st.inodes.get(src_ino).is_some();
        if !was_live {
            self.remember(&mut st, parent, name, &src, false);
        }
        let result = self.rename_live(
            &mut st,
            upper,
            (parent, name),
            src_ino,
            &src,
            (new_parent, new_name),
            dst.as_ref(),
        );
        if !was_live {
            st.inodes.forget(src_ino, 0);
        }
        result
    }

    /// rename(2) with RENAME_EXCHANGE, as overlayfs does it with redirect_dir=off: both entries
    /// are copied up and swapped in the upper dir (no whiteouts: both names stay taken); a
    /// directory that is not purely upper cannot move (EXDEV), and a purely upper one that
    /// lands in a merged directory becomes opaque.
    fn do_exchange(&self, parent: u64, name: &OsStr, new_parent: u64, new_name: &OsStr) -> Res<()> {
        let mut st = self.lock();
        let upper = self.upper()?;
        let a = self.resolve(&st, parent, name)?.ok_or(Errno::ENOENT)?;
        let b = self
            .resolve(&st, new_parent, new_name)?
            .ok_or(Errno::ENOENT)?;
        let pure_upper =
            |r: &Resolved| r.layer == upper && r.dir_layers.iter().all(|&l| l == upper);
        if [&a, &b].iter().any(|r| r.meta.is_dir() && !pure_upper(r)) {
            return Err(Errno::EXDEV);
        }
        let merged = |st: &State, dir: u64| -> Res<bool> {
            Ok(self.dir_info(st, dir)?.1.iter().any(|&l| l != upper))
        };
        let a_opaque = a.meta.is_dir() && merged(&st, new_parent)?;
        let b_opaque = b.meta.is_dir() && merged(&st, parent)?;
        let mut temporary = Vec::new();
        let mut inos = Vec::new();
        for (dir, entry, resolved) in [(parent, name, &a), (new_parent, new_name, &b)] {
            let ino = st
                .inodes
                .ino_for((resolved.meta.dev(), resolved.meta.ino()));
            // The source must be a live node to be copied up, under this very name.
            if st.inodes.get(ino).is_none() {
                self.remember(&mut st, dir, entry, resolved, false);
                temporary.push(ino);
            }
            st.inodes.prefer_alias(ino, dir, entry);
            inos.push(ino);
        }
        let result = self.exchange_live(
            &mut st,
            upper,
            (parent, name, inos[0], a_opaque),
            (new_parent, new_name, inos[1], b_opaque),
        );
        for ino in temporary {
            st.inodes.forget(ino, 0);
        }
        result
    }

    fn exchange_live(
        &self,
        st: &mut State,
        upper: LayerIndex,
        (parent, name, a_ino, a_opaque): (u64, &OsStr, u64, bool),
        (new_parent, new_name, b_ino, b_opaque): (u64, &OsStr, u64, bool),
    ) -> Res<()> {
        self.ensure_upper(st, a_ino)?;
        self.ensure_upper(st, b_ino)?;
        let a_real = self.layers.real(
            upper,
            &st.inodes.path(parent).ok_or(Errno::ENOENT)?.join(name),
        );
        let b_real = self.layers.real(
            upper,
            &st.inodes
                .path(new_parent)
                .ok_or(Errno::ENOENT)?
                .join(new_name),
        );
        rustix::fs::renameat_with(
            CWD,
            &a_real,
            CWD,
            &b_real,
            rustix::fs::RenameFlags::EXCHANGE,
        )
        .map_err(|e| errno(e.into()))?;
        // Each entry is now at the other's path.
        if a_opaque {
            set_opaque(&b_real).map_err(errno)?;
        }
        if b_opaque {
            set_opaque(&a_real).map_err(errno)?;
        }
        st.inodes
            .move_alias(b_ino, new_parent, new_name, parent, name);
        st.inodes
            .move_alias(a_ino, parent, name, new_parent, new_name);
        for ino in [a_ino, b_ino] {
            self.refresh(st, ino)?;
            self.refresh_below(st, ino)?;
        }
        Ok(())
    }

    /// overlayfs marks a purely upper directory opaque (it is moving into a merged parent)
    /// before the upper rename finds a purely upper target non-empty; the marker stays. Doing
    /// the same keeps the upper dirs of both drivers byte-identical.
    #[allow(clippy::too_many_arguments)]
    fn mark_like_failed_overlay_rename(
        &self,
        st: &State,
        upper: LayerIndex,
        parent: u64,
        name: &OsStr,
        src: &Resolved,
        new_parent: u64,
        dst: &Resolved,
    ) -> Res<()> {
        let pure_upper =
            |r: &Resolved| r.layer == upper && r.dir_layers.iter().all(|&l| l == upper);
        let parent_merged = self.dir_info(st, new_parent)?.1.iter().any(|&l| l != upper);
        if pure_upper(src) && pure_upper(dst) && parent_merged {
            let src_rel = st.inodes.path(parent).ok_or(Errno::ENOENT)?.join(name);
            set_opaque(&self.layers.real(upper, &src_rel)).map_err(errno)?;
        }
        Ok(())
    }

    #[allow(clippy::too_many_arguments)]
    fn rename_live(
        &self,
        st: &mut State,
        upper: LayerIndex,
        (parent, name): (u64, &OsStr),
        src_ino: u64,
        src: &Resolved,
        (new_parent, new_name): (u64, &OsStr),
        dst: Option<&Resolved>,
    ) -> Res<()> {
        let is_dir = src.meta.is_dir();
        // Opaque rules of overlayfs (redirect_dir=off): a purely upper directory moved into a
        // merged directory becomes opaque; a merged one (which overlay refuses with EXDEV and
        // `mv` then recreates) is opaque when a lower layer shows the target name.
        let make_opaque = is_dir
            && if src.dir_layers.iter().all(|&l| l == upper) {
                self.dir_info(st, new_parent)?.1.iter().any(|&l| l != upper)
            } else {
                self.lower_positive(st, new_parent, new_name)?
            };
        self.ensure_upper(st, src_ino)?;
        // The name being renamed, not whichever alias a hard-linked inode was found under.
        let src_rel = st.inodes.path(parent).ok_or(Errno::ENOENT)?.join(name);
        if is_dir && src.dir_layers.iter().any(|&l| l != upper) {
            self.copy_up_tree(st, &src_rel, &src.dir_layers)?;
            remove_markers_below(&self.layers.real(upper, &src_rel), true)?;
        }
        let dst_dir = self.ensure_upper(st, new_parent)?;
        let dst_real = self.layers.real(upper, &dst_dir.join(new_name));
        let src_parent_real = self.layers.real(
            upper,
            st.inodes.path(parent).ok_or(Errno::ENOENT)?.as_path(),
        );
        let _writable = (
            WritableDir::new(&src_parent_real).map_err(errno)?,
            WritableDir::new(&self.layers.real(upper, &dst_dir)).map_err(errno)?,
        );
        let mut dst_ino = None;
        match dst {
            Some(dst) => {
                dst_ino = Some(st.inodes.ino_for((dst.meta.dev(), dst.meta.ino())));
                if dst.meta.is_dir() && dst.layer == upper {
                    remove_whiteouts_below(&dst_real)?;
                }
            }
            None => {
                remove_whiteout(&dst_real)?;
            }
        }
        let src_real = self.layers.real(upper, &src_rel);
        // Moving a directory to another parent rewrites its "..".
        let mut moving = WritableDir::new(&src_real).map_err(errno)?;
        fs::rename(&src_real, &dst_real).map_err(errno)?;
        moving.moved_to(&dst_real);
        if is_dir && make_opaque {
            set_opaque(&dst_real).map_err(errno)?;
        }
        if let Some(dst_ino) = dst_ino {
            st.inodes.drop_alias(dst_ino, new_parent, new_name);
        }
        st.inodes
            .move_alias(src_ino, parent, name, new_parent, new_name);
        if self.lower_positive(st, parent, name)? {
            make_whiteout(&src_real).map_err(errno)?;
        }
        self.refresh(st, src_ino)?;
        if is_dir {
            self.refresh_below(st, src_ino)?;
        }
        Ok(())
    }

    #[allow(clippy::too_many_arguments)]
    fn do_create(
        &self,
        req: &Request,
        parent: u64,
        name: &OsStr,
        mode: u32,
        umask: u32,
        _flags: i32,
        backing_open: &dyn Fn(&File) -> io::Result<BackingId>,
    ) -> Res<(FileAttr, u64, FopenFlags, Option<Arc<BackingId>>)> {
        let mut st = self.lock();
        let (path, _, parent_meta, _writable) = self.prepare_create(&mut st, parent, name)?;
        let (uid, gid, _) = self.new_owner(req, &parent_meta);
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .mode(mode & !umask & 0o7777)
            .open(&path)
            .map_err(errno)?;
        if uid != 0 || gid != 0 {
            std::os::unix::fs::fchown(&file, Some(uid), Some(gid)).map_err(errno)?;
        }
        // The daemon's own umask applied at creation; set the caller's bits exactly.
        file.set_permissions(fs::Permissions::from_mode(mode & !umask & 0o7777))
            .map_err(errno)?;
        let meta = file.metadata().map_err(errno)?;
        let attr = self.remember_created(&mut st, parent, name, meta);
        let upper = self.upper()?;
        let (fh, fopen, backing) =
            self.register_handle(&mut st, attr.ino.0, upper, file, backing_open);
        Ok((attr, fh, fopen, backing))
    }

    fn do_opendir(&self, ino: u64) -> Res<u64> {
        let mut st = self.lock();
        let (rel, dir_layers) = self.dir_info(&st, ino)?;
        let entries = self.layers.list(&rel, &dir_layers).map_err(errno)?;
        let parent_ino = st
            .inodes
            .get(ino)
            .and_then(|n| n.aliases.first().map(|(p, _)| *p))
            .unwrap_or(ROOT_INO);
        let mut list = Vec::with_capacity(entries.len() + 2);
        list.push((ino, FileType::Directory, OsString::from(".")));
        list.push((parent_ino, FileType::Directory, OsString::from("..")));
        for entry in entries {
            let child = st.inodes.ino_for(entry.key);
            list.push((child, kind_of(entry.kind), entry.name));
        }
        let fh = Self::next_fh(&mut st);
        st.dirs.insert(fh, list);
        Ok(fh)
    }

    fn real_path(&self, ino: u64) -> Res<PathBuf> {
        let st = self.lock();
        let (rel, layer, _) = self.node_info(&st, ino)?;
        Ok(self.layers.real(layer, &rel))
    }

    fn upper_path(&self, ino: u64) -> Res<PathBuf> {
        let mut st = self.lock();
        let upper = self.upper()?;
        let rel = self.ensure_upper(&mut st, ino)?;
        Ok(self.layers.real(upper, &rel))
    }
}

/// Attributes of a cached miss: node id 0.
fn negative_entry() -> FileAttr {
    FileAttr {
        ino: INodeNo(0),
        size: 0,
        blocks: 0,
        atime: UNIX_EPOCH,
        mtime: UNIX_EPOCH,
        ctime: UNIX_EPOCH,
        crtime: UNIX_EPOCH,
        kind: FileType::RegularFile,
        perm: 0,
        nlink: 0,
        uid: 0,
        gid: 0,
        rdev: 0,
        blksize: 0,
        flags: 0,
    }
}

fn reply_xattr(reply: ReplyXattr, size: u32, data: &[u8]) {
    if size == 0 {
        reply.size(data.len() as u32);
    } else if data.len() > size as usize {
        reply.error(Errno::ERANGE);
    } else {
        reply.data(data);
    }
}

impl Filesystem for UnionFs {
    fn init(&mut self, _req: &Request, config: &mut KernelConfig) -> io::Result<()> {
        let enabled = config.add_capabilities(InitFlags::FUSE_PASSTHROUGH).is_ok()
            && config.set_max_stack_depth(2).is_ok();
        self.passthrough.store(enabled, Ordering::Relaxed);
        Ok(())
    }

    fn lookup(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEntry) {
        match self.do_lookup(parent.0, name) {
            Ok((attr, ttl)) => reply.entry(&ttl, &attr, Generation(0)),
            // Node id 0 makes the kernel cache the miss (a negative dentry) for TTL.
            Err(Errno::ENOENT) => reply.entry(&TTL, &negative_entry(), Generation(0)),
            Err(e) => reply.error(e),
        }
    }

    fn forget(&self, _req: &Request, ino: INodeNo, nlookup: u64) {
        let mut st = self.lock();
        st.inodes.forget(ino.0, nlookup);
        if st.inodes.get(ino.0).is_none() {
            // The kernel dropped the inode and its page cache: nothing stale can be kept.
            st.passed_through.remove(&ino.0);
        }
    }

    fn getattr(&self, _req: &Request, ino: INodeNo, fh: Option<FileHandle>, reply: ReplyAttr) {
        match self.do_getattr(ino.0, fh) {
            Ok(attr) => reply.attr(&TTL, &attr),
            Err(e) => reply.error(e),
        }
    }

    fn setattr(
        &self,
        _req: &Request,
        ino: INodeNo,
        mode: Option<u32>,
        uid: Option<u32>,
        gid: Option<u32>,
        size: Option<u64>,
        atime: Option<TimeOrNow>,
        mtime: Option<TimeOrNow>,
        _ctime: Option<SystemTime>,
        fh: Option<FileHandle>,
        _crtime: Option<SystemTime>,
        _chgtime: Option<SystemTime>,
        _bkuptime: Option<SystemTime>,
        _flags: Option<fuser::BsdFileFlags>,
        reply: ReplyAttr,
    ) {
        match self.do_setattr(ino.0, mode, uid, gid, size, atime, mtime, fh) {
            Ok(attr) => reply.attr(&TTL, &attr),
            Err(e) => reply.error(e),
        }
    }

    fn readlink(&self, _req: &Request, ino: INodeNo, reply: ReplyData) {
        match self
            .real_path(ino.0)
            .and_then(|p| fs::read_link(p).map_err(errno))
        {
            Ok(target) => reply.data(target.as_os_str().as_encoded_bytes()),
            Err(e) => reply.error(e),
        }
    }

    fn mknod(
        &self,
        req: &Request,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
        umask: u32,
        rdev: u32,
        reply: ReplyEntry,
    ) {
        match self.do_mknod(req, parent.0, name, mode, umask, rdev) {
            Ok(attr) => reply.entry(&TTL, &attr, Generation(0)),
            Err(e) => reply.error(e),
        }
    }

    fn mkdir(
        &self,
        req: &Request,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
        umask: u32,
        reply: ReplyEntry,
    ) {
        match self.do_mkdir(req, parent.0, name, mode, umask) {
            Ok(attr) => reply.entry(&TTL, &attr, Generation(0)),
            Err(e) => reply.error(e),
        }
    }

    fn unlink(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        match self.do_unlink(parent.0, name, false) {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(e),
        }
    }

    fn rmdir(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        match self.do_unlink(parent.0, name, true) {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(e),
        }
    }

    fn symlink(
        &self,
        req: &Request,
        parent: INodeNo,
        link_name: &OsStr,
        target: &Path,
        reply: ReplyEntry,
    ) {
        match self.do_symlink(req, parent.0, link_name, target) {
            Ok(attr) => reply.entry(&TTL, &attr, Generation(0)),
            Err(e) => reply.error(e),
        }
    }

    fn rename(
        &self,
        _req: &Request,
        parent: INodeNo,
        name: &OsStr,
        newparent: INodeNo,
        newname: &OsStr,
        flags: RenameFlags,
        reply: ReplyEmpty,
    ) {
        match self.do_rename(parent.0, name, newparent.0, newname, flags) {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(e),
        }
    }

    fn link(
        &self,
        _req: &Request,
        ino: INodeNo,
        newparent: INodeNo,
        newname: &OsStr,
        reply: ReplyEntry,
    ) {
        match self.do_link(ino.0, newparent.0, newname) {
            Ok(attr) => reply.entry(&TTL, &attr, Generation(0)),
            Err(e) => reply.error(e),
        }
    }

    fn open(&self, _req: &Request, ino: INodeNo, flags: OpenFlags, reply: ReplyOpen) {
        let mut st = self.lock();
        let result = self.open_file(&mut st, ino.0, flags.0, &|file| reply.open_backing(file));
        drop(st);
        match result {
            Ok((fh, fopen, Some(backing))) => {
                reply.opened_passthrough(FileHandle(fh), fopen, &backing)
            }
            Ok((fh, fopen, None)) => reply.opened(FileHandle(fh), fopen),
            Err(e) => reply.error(e),
        }
    }

    fn read(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        size: u32,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyData,
    ) {
        let file = match self.read_file(fh) {
            Ok(file) => file,
            Err(e) => return reply.error(e),
        };
        READ_BUFFER.with_borrow_mut(|buf| {
            // Grown once per server thread and reused: a fresh buffer per request costs a
            // page fault and a zeroed page for every 4 KiB read.
            if buf.len() < size as usize {
                buf.resize(size as usize, 0);
            }
            let buf = &mut buf[..size as usize];
            let mut filled = 0;
            while filled < buf.len() {
                match file.read_at(&mut buf[filled..], offset + filled as u64) {
                    Ok(0) => break,
                    Ok(n) => filled += n,
                    Err(err) if err.kind() == io::ErrorKind::Interrupted => continue,
                    Err(err) => return reply.error(errno(err)),
                }
            }
            reply.data(&buf[..filled]);
        })
    }

    fn write(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        data: &[u8],
        _write_flags: WriteFlags,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyWrite,
    ) {
        match self
            .file(fh)
            .and_then(|file| file.write_all_at(data, offset).map_err(errno))
        {
            Ok(()) => reply.written(data.len() as u32),
            Err(e) => reply.error(e),
        }
    }

    fn flush(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _fh: FileHandle,
        _lock_owner: LockOwner,
        reply: ReplyEmpty,
    ) {
        reply.ok();
    }

    fn release(
        &self,
        _req: &Request,
        ino: INodeNo,
        fh: FileHandle,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        _flush: bool,
        reply: ReplyEmpty,
    ) {
        let mut st = self.lock();
        if st.files.remove(&fh.0).is_some_and(|open| open.cached) {
            if let Some(count) = st.cached.get_mut(&ino.0) {
                *count -= 1;
                if *count == 0 {
                    st.cached.remove(&ino.0);
                }
            }
        }
        if st
            .backing
            .get(&ino.0)
            .is_some_and(|(_, weak)| weak.strong_count() == 0)
        {
            st.backing.remove(&ino.0);
        }
        reply.ok();
    }

    fn fsync(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        datasync: bool,
        reply: ReplyEmpty,
    ) {
        let result = self.file(fh).and_then(|file| {
            if datasync {
                file.sync_data().map_err(errno)
            } else {
                file.sync_all().map_err(errno)
            }
        });
        match result {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(e),
        }
    }

    fn opendir(&self, _req: &Request, ino: INodeNo, _flags: OpenFlags, reply: ReplyOpen) {
        match self.do_opendir(ino.0) {
            Ok(fh) => reply.opened(FileHandle(fh), FopenFlags::empty()),
            Err(e) => reply.error(e),
        }
    }

    fn readdir(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        mut reply: ReplyDirectory,
    ) {
        let st = self.lock();
        let Some(list) = st.dirs.get(&fh.0) else {
            return reply.error(Errno::EBADF);
        };
        for (index, (ino, kind, name)) in list.iter().enumerate().skip(offset as usize) {
            if reply.add(INodeNo(*ino), index as u64 + 1, *kind, name) {
                break;
            }
        }
        reply.ok();
    }

    fn releasedir(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        _flags: OpenFlags,
        reply: ReplyEmpty,
    ) {
        self.lock().dirs.remove(&fh.0);
        reply.ok();
    }

    fn fsyncdir(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        _datasync: bool,
        reply: ReplyEmpty,
    ) {
        let result = self
            .real_path(ino.0)
            .and_then(|p| File::open(p).and_then(|d| d.sync_all()).map_err(errno));
        match result {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(e),
        }
    }

    fn statfs(&self, _req: &Request, _ino: INodeNo, reply: ReplyStatfs) {
        match rustix::fs::statvfs(self.layers.real(0, Path::new(""))) {
            Ok(s) => reply.statfs(
                s.f_blocks,
                s.f_bfree,
                s.f_bavail,
                s.f_files,
                s.f_ffree,
                s.f_bsize as u32,
                s.f_namemax as u32,
                s.f_frsize as u32,
            ),
            Err(e) => reply.error(errno(e.into())),
        }
    }

    fn setxattr(
        &self,
        _req: &Request,
        ino: INodeNo,
        name: &OsStr,
        value: &[u8],
        flags: i32,
        _position: u32,
        reply: ReplyEmpty,
    ) {
        if is_private_xattr(name.as_encoded_bytes()) {
            return reply.error(Errno::EPERM);
        }
        let result = self.upper_path(ino.0).and_then(|path| {
            rustix::fs::lsetxattr(
                &path,
                name,
                value,
                XattrFlags::from_bits_truncate(flags as _),
            )
            .map_err(|e| errno(e.into()))
        });
        match result {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(e),
        }
    }

    fn getxattr(&self, _req: &Request, ino: INodeNo, name: &OsStr, size: u32, reply: ReplyXattr) {
        if is_private_xattr(name.as_encoded_bytes()) {
            return reply.error(Errno::NO_XATTR);
        }
        match self
            .real_path(ino.0)
            .and_then(|p| get_xattr(&p, name).map_err(errno))
        {
            Ok(value) => reply_xattr(reply, size, &value),
            Err(e) => reply.error(e),
        }
    }

    fn listxattr(&self, _req: &Request, ino: INodeNo, size: u32, reply: ReplyXattr) {
        match self
            .real_path(ino.0)
            .and_then(|p| list_xattrs(&p).map_err(errno))
        {
            Ok(names) => {
                let mut visible = Vec::with_capacity(names.len());
                for name in names.split(|&b| b == 0).filter(|n| !n.is_empty()) {
                    if !is_private_xattr(name) {
                        visible.extend_from_slice(name);
                        visible.push(0);
                    }
                }
                reply_xattr(reply, size, &visible)
            }
            Err(e) => reply.error(e),
        }
    }

    fn removexattr(&self, _req: &Request, ino: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        if is_private_xattr(name.as_encoded_bytes()) {
            return reply.error(Errno::NO_XATTR);
        }
        let result = self
            .upper_path(ino.0)
            .and_then(|path| rustix::fs::lremovexattr(&path, name).map_err(|e| errno(e.into())));
        match result {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(e),
        }
    }

    fn create(
        &self,
        req: &Request,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
        umask: u32,
        flags: i32,
        reply: ReplyCreate,
    ) {
        let result = self.do_create(req, parent.0, name, mode, umask, flags, &|file| {
            reply.open_backing(file)
        });
        match result {
            Ok((attr, fh, fopen, Some(backing))) => reply.created_passthrough(
                &TTL,
                &attr,
                Generation(0),
                FileHandle(fh),
                fopen,
                &backing,
            ),
            Ok((attr, fh, fopen, None)) => {
                reply.created(&TTL, &attr, Generation(0), FileHandle(fh), fopen)
            }
            Err(e) => reply.error(e),
        }
    }

    /// SEEK_DATA and SEEK_HOLE on the real file (the kernel answers SEEK_SET/CUR/END itself),
    /// so `cp`, `tar --sparse` and friends see the holes of sparse files.
    fn lseek(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        offset: i64,
        whence: i32,
        reply: ReplyLseek,
    ) {
        let result = self.file(fh).and_then(|file| {
            let pos = match whence {
                libc::SEEK_DATA => rustix::fs::SeekFrom::Data(offset as u64),
                libc::SEEK_HOLE => rustix::fs::SeekFrom::Hole(offset as u64),
                _ => return Err(Errno::EINVAL),
            };
            // The descriptor's own offset is not the caller's: only the answer matters.
            rustix::fs::seek(&*file, pos).map_err(|e| errno(e.into()))
        });
        match result {
            Ok(pos) => reply.offset(pos as i64),
            Err(e) => reply.error(e),
        }
    }

    fn fallocate(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        length: u64,
        mode: i32,
        reply: ReplyEmpty,
    ) {
        let result = self.file(fh).and_then(|file| {
            rustix::fs::fallocate(
                &*file,
                rustix::fs::FallocateFlags::from_bits_retain(mode as _),
                offset,
                length,
            )
            .map_err(|e| errno(e.into()))
        });
        match result {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(e),
        }
    }
}
