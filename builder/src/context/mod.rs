//! The build context: a directory, filtered by `.dockerignore`, whose files are selected by
//! ADD/COPY sources and content-hashed (memoised in a persistent [`StatCache`]).

mod statcache;

pub use statcache::{StatCache, StatKey};

use rbuild_layerfs::Digest;
use sha2::{Digest as _, Sha256};
use std::fs::{self, File};
use std::io::{self, Read};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Component, Path, PathBuf};
use std::sync::Mutex;

/// Errors of reading the build context.
#[derive(Debug, thiserror::Error)]
pub enum ContextError {
    /// The context directory cannot be used.
    #[error("build context {path}: {source} (pass an existing directory)")]
    Root {
        /// Context directory.
        path: PathBuf,
        /// Cause.
        source: io::Error,
    },
    /// A file in the context could not be read.
    #[error("build context file {path}: {source}")]
    Io {
        /// Path of the file.
        path: PathBuf,
        /// Cause.
        source: io::Error,
    },
    /// A source matched nothing (or only excluded files).
    #[error("{source_path}: no such file or directory in the build context (check the path and .dockerignore)")]
    NotFound {
        /// The source as written.
        source_path: String,
    },
    /// A glob source is not a valid pattern.
    #[error("invalid source pattern {pattern:?}: {reason}")]
    Pattern {
        /// The pattern.
        pattern: String,
        /// Why it is invalid.
        reason: String,
    },
}

/// Decides which context paths `.dockerignore` excludes.
pub trait PathFilter: Send + Sync {
    /// True when the context-relative path `rel` (slash separated, no leading `/`) is excluded.
    fn excluded(&self, rel: &str) -> bool;
    /// True when some pattern re-includes paths (`!pattern`), so excluded dirs must still be walked.
    fn has_exceptions(&self) -> bool;
    /// True when the excluded dir `rel` holds nothing that could be re-included, so a walk may
    /// skip it.
    fn can_skip_dir(&self, rel: &str) -> bool {
        self.excluded(rel) && !self.has_exceptions()
    }
}

/// What a context entry is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EntryKind {
    /// Regular file with its sha256 content hash.
    File([u8; 32]),
    /// Directory.
    Dir,
    /// Symbolic link with its target.
    Symlink(PathBuf),
}

/// One entry below a selected source.
#[derive(Debug, Clone)]
pub struct ContextEntry {
    /// Path relative to the source (`""` for the source itself), slash separated.
    pub rel: String,
    /// Kind and content identity.
    pub kind: EntryKind,
    /// Permission bits (0o7777).
    pub mode: u32,
    /// Size in bytes (files).
    pub size: u64,
    /// Modification time (seconds, nanoseconds) of the context file.
    pub mtime: (i64, i64),
    /// Owner (uid, gid). Not part of any digest: context files are copied as root's, and
    /// COPY --from keeps the owners of the source image.
    pub owner: (u32, u32),
    /// (device, inode) of a regular file with more than one link: files of one source that
    /// share it are hard links of each other, and are copied as hard links (as BuildKit).
    pub link: Option<(u64, u64)>,
    /// Extended attributes (name, value) of a context file or dir, sorted by name, that COPY
    /// keeps (user.*, security.capability, ...; not SELinux labels or trusted.*), as BuildKit
    /// does; part of the digest when present. Not read for unhashed trees (COPY --from copies
    /// them from the open file).
    pub xattrs: Vec<(Vec<u8>, Vec<u8>)>,
}

/// One source of an ADD/COPY after glob expansion, with the content of everything below it.
#[derive(Debug, Clone)]
pub struct SourceTree {
    /// Context-relative path of the source (`""` for the context root); for a source that is a
    /// symlink, the path it resolves to inside the context.
    pub rel: String,
    /// The source's own file name (what a file source is called at a directory destination).
    pub name: String,
    /// Entries, the source itself first, then its contents in sorted order.
    pub entries: Vec<ContextEntry>,
    /// Hash over path, kind, mode and content of every entry (not mtime, not owner).
    pub digest: Digest,
}

impl SourceTree {
    /// True when the source is a directory (its contents are copied, as docker does).
    pub fn is_dir(&self) -> bool {
        matches!(self.entries.first().map(|e| &e.kind), Some(EntryKind::Dir))
    }
}

/// A build context directory.
pub struct BuildContext {
    root: PathBuf,
    filter: Option<Box<dyn PathFilter>>,
    cache: Mutex<StatCache>,
    hash_content: bool,
}

impl std::fmt::Debug for BuildContext {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BuildContext")
            .field("root", &self.root)
            .finish()
    }
}

impl BuildContext {
    /// Opens the context at `root` with an optional `.dockerignore` filter and a stat cache.
    pub fn open(
        root: &Path,
        filter: Option<Box<dyn PathFilter>>,
        cache: StatCache,
    ) -> Result<BuildContext, ContextError> {
        let root = fs::canonicalize(root).map_err(|source| ContextError::Root {
            path: root.to_path_buf(),
            source,
        })?;
        let meta = fs::metadata(&root).map_err(|source| ContextError::Root {
            path: root.clone(),
            source,
        })?;
        if !meta.is_dir() {
            return Err(ContextError::Root {
                path: root,
                source: io::Error::other("not a directory"),
            });
        }
        Ok(BuildContext {
            root,
            filter,
            cache: Mutex::new(cache),
            hash_content: true,
        })
    }

    /// Opens a tree whose file contents need no hashing (e.g. a `COPY --from` source, whose
    /// cache key is its stage's key): selection and walking work, file hashes are all zero.
    pub fn open_unhashed(root: &Path) -> Result<BuildContext, ContextError> {
        let mut ctx = BuildContext::open(root, None, StatCache::in_memory())?;
        ctx.hash_content = false;
        Ok(ctx)
    }

    /// The context directory (canonical).
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Host path of a context-relative path.
    pub fn host_path(&self, rel: &str) -> PathBuf {
        if rel.is_empty() {
            self.root.clone()
        } else {
            self.root.join(rel)
        }
    }

    /// Where the stat cache of the context at `root` lives inside a store's `cache/` dir.
    pub fn stat_cache_path(cache_dir: &Path, root: &Path) -> PathBuf {
        let canon = fs::canonicalize(root).unwrap_or_else(|_| root.to_path_buf());
        let h = Sha256::digest(canon.as_os_str().as_encoded_bytes());
        cache_dir.join("statcache").join(&hex::encode(h)[..32])
    }

    /// Saves the stat cache; returns (hits, misses) of this run.
    pub fn save_cache(&self) -> io::Result<(u64, u64)> {
        let mut c = self.cache.lock().unwrap_or_else(|p| p.into_inner());
        c.save()?;
        Ok(c.stats())
    }

    fn is_excluded(&self, rel: &str) -> bool {
        !rel.is_empty() && self.filter.as_ref().is_some_and(|f| f.excluded(rel))
    }

    fn has_exceptions(&self) -> bool {
        self.filter.as_ref().is_some_and(|f| f.has_exceptions())
    }

    /// Expands one ADD/COPY source (a path or glob, relative to the context) into source trees.
    /// A literal source that does not exist is an error; a wildcard matching nothing gives an
    /// empty list.
    pub fn select(&self, source: &str) -> Result<Vec<SourceTree>, ContextError> {
        let clean = clean_rel(source);
        let not_found = || ContextError::NotFound {
            source_path: source.to_string(),
        };
        let rels = if has_glob(&clean) {
            // A wildcard may match nothing (Docker's `COPY package.json yarn.lock* ./` idiom):
            // the caller decides whether the sources together selected anything.
            let mut out = Vec::new();
            for rel in self.glob(&clean, source)? {
                let tree = self.tree(&rel)?;
                if !tree.entries.is_empty() {
                    out.push(tree);
                }
            }
            return Ok(out);
        } else {
            if self.is_excluded(&clean) && !self.has_exceptions() {
                return Err(not_found());
            }
            // As BuildKit: symlinks on the way to a source (and the source itself) are followed
            // inside the context, never out of it.
            let resolved = self.resolve_in_context(&clean).ok_or_else(not_found)?;
            if resolved != clean {
                if self.is_excluded(&resolved) && !self.has_exceptions() {
                    return Err(not_found());
                }
                let mut trees = vec![self.tree(&resolved)?];
                let name = clean.rsplit('/').next().unwrap_or(&clean).to_string();
                for t in &mut trees {
                    t.name = name.clone();
                }
                trees.retain(|t| !t.entries.is_empty());
                if trees.is_empty() {
                    return Err(not_found());
                }
                return Ok(trees);
            }
            match fs::symlink_metadata(self.host_path(&clean)) {
                Ok(_) => vec![clean],
                Err(e) if e.kind() == io::ErrorKind::NotFound => return Err(not_found()),
                Err(source) => {
                    return Err(ContextError::Io {
                        path: self.host_path(&clean),
                        source,
                    })
                }
            }
        };
        let mut out = Vec::new();
        for rel in rels {
            let tree = self.tree(&rel)?;
            if tree.entries.is_empty() {
                continue;
            }
            out.push(tree);
        }
        if out.is_empty() {
            return Err(not_found());
        }
        Ok(out)
    }

    /// Resolves every symlink in `rel` with the context as the root (absolute targets start at
    /// the context, `..` cannot leave it), so no source can reach a file outside the context;
    /// `None` when a link dangles or loops.
    fn resolve_in_context(&self, rel: &str) -> Option<String> {
        let mut todo: Vec<String> = rel
            .split('/')
            .filter(|c| !c.is_empty())
            .map(String::from)
            .collect();
        todo.reverse();
        let mut done: Vec<String> = Vec::new();
        let mut hops = 0;
        while let Some(comp) = todo.pop() {
            match comp.as_str() {
                "." => continue,
                ".." => {
                    done.pop();
                    continue;
                }
                _ => {}
            }
            done.push(comp);
            let host = self.host_path(&done.join("/"));
            let meta = fs::symlink_metadata(&host).ok()?;
            if meta.file_type().is_symlink() {
                hops += 1;
                if hops > 40 {
                    return None;
                }
                let target = fs::read_link(&host).ok()?;
                let target = target.to_string_lossy().into_owned();
                done.pop();
                if target.starts_with('/') {
                    done.clear();
                }
                for c in target.split('/').filter(|c| !c.is_empty()).rev() {
                    todo.push(c.to_string());
                }
            }
        }
        Some(done.join("/"))
    }

    fn glob(&self, pattern: &str, source: &str) -> Result<Vec<String>, ContextError> {
        let glob = globset::GlobBuilder::new(pattern)
            .literal_separator(true)
            .backslash_escape(true)
            .build()
            .map_err(|e| ContextError::Pattern {
                pattern: source.to_string(),
                reason: e.kind().to_string(),
            })?
            .compile_matcher();
        let depth = pattern.split('/').count();
        let mut out = Vec::new();
        let walker = walkdir::WalkDir::new(&self.root)
            .min_depth(1)
            .max_depth(depth)
            .sort_by_file_name();
        for entry in walker {
            let entry = entry.map_err(|e| self.walk_error(e))?;
            let rel = rel_of(&self.root, entry.path());
            if glob.is_match(&rel) && !self.is_excluded(&rel) {
                out.push(rel);
            }
        }
        Ok(out)
    }

    fn walk_error(&self, e: walkdir::Error) -> ContextError {
        let path = e.path().map(Path::to_path_buf).unwrap_or(self.root.clone());
        ContextError::Io {
            path,
            source: e
                .into_io_error()
                .unwrap_or_else(|| io::Error::other("walk loop")),
        }
    }

    /// Walks and hashes the source at context-relative `rel`.
    fn tree(&self, rel: &str) -> Result<SourceTree, ContextError> {
        let base = self.host_path(rel);
        let mut entries = Vec::new();
        let mut hasher = Sha256::new();
        let mut walker = walkdir::WalkDir::new(&base)
            .follow_links(false)
            .sort_by_file_name()
            .into_iter();
        let exceptions = self.has_exceptions();
        // Files whose content hash the stat cache does not know: hashed after the walk, several
        // at a time (entry index, path, stat key).
        let mut unhashed: Vec<(usize, PathBuf, StatKey, u64)> = Vec::new();
        while let Some(entry) = walker.next() {
            let entry = entry.map_err(|e| self.walk_error(e))?;
            let sub = rel_of(&base, entry.path());
            let ctx_rel = join_rel(rel, &sub);
            let is_dir = entry.file_type().is_dir();
            if self.is_excluded(&ctx_rel) {
                if !is_dir {
                    continue;
                }
                if self
                    .filter
                    .as_ref()
                    .is_some_and(|f| f.can_skip_dir(&ctx_rel))
                {
                    walker.skip_current_dir();
                    continue;
                }
                // An excluded dir that may hold re-included files: walk it, but keep the dir
                // entry only when something inside it is kept (decided below by parents).
            }
            let meta = entry.metadata().map_err(|e| self.walk_error(e))?;
            // A file the stat cache knows as unchanged and without xattrs costs no xattr call.
            let mut read_xattrs_of = self.hash_content && (meta.is_file() || meta.is_dir());
            let kind = if meta.is_dir() {
                EntryKind::Dir
            } else if meta.file_type().is_symlink() {
                let target = fs::read_link(entry.path()).map_err(|source| ContextError::Io {
                    path: entry.path().to_path_buf(),
                    source,
                })?;
                EntryKind::Symlink(target)
            } else if meta.is_file() {
                match self.cached_hash(&meta) {
                    Some((hash, xattrs)) => {
                        read_xattrs_of &= xattrs;
                        EntryKind::File(hash)
                    }
                    None => {
                        let key = StatKey::of(&meta);
                        unhashed.push((
                            entries.len(),
                            entry.path().to_path_buf(),
                            key,
                            meta.size(),
                        ));
                        EntryKind::File([0; 32])
                    }
                }
            } else {
                continue; // sockets, fifos and devices are not copied (as docker)
            };
            let e = ContextEntry {
                rel: sub,
                kind,
                mode: meta.permissions().mode() & 0o7777,
                size: if meta.is_file() { meta.size() } else { 0 },
                mtime: (meta.mtime(), meta.mtime_nsec()),
                owner: (meta.uid(), meta.gid()),
                link: (meta.is_file() && meta.nlink() > 1).then(|| (meta.dev(), meta.ino())),
                xattrs: if read_xattrs_of {
                    read_xattrs(entry.path()).map_err(|source| ContextError::Io {
                        path: entry.path().to_path_buf(),
                        source,
                    })?
                } else {
                    Vec::new()
                },
            };
            entries.push(e);
        }
        let hashed = hash_files(&unhashed)?;
        {
            let mut cache = self.cache.lock().unwrap_or_else(|p| p.into_inner());
            for ((index, _, key, _), hash) in unhashed.into_iter().zip(hashed) {
                entries[index].kind = EntryKind::File(hash);
                cache.put(key, hash, !entries[index].xattrs.is_empty());
            }
        }
        if exceptions {
            prune_excluded_dirs(&mut entries, rel, self);
        }
        // A file that is a hard link of an earlier one in this source is hashed as that link
        // (its content is the same), so linking or unlinking files changes the digest.
        let mut first_of: std::collections::HashMap<(u64, u64), &str> =
            std::collections::HashMap::new();
        for e in &entries {
            hash_entry(&mut hasher, e);
            if let Some(id) = e.link {
                match first_of.get(&id) {
                    Some(first) => {
                        hasher.update(b"\0hardlink\0");
                        hasher.update(first.as_bytes());
                        hasher.update([0]);
                    }
                    None => {
                        first_of.insert(id, &e.rel);
                    }
                }
            }
        }
        Ok(SourceTree {
            rel: rel.to_string(),
            name: rel.rsplit('/').next().unwrap_or(rel).to_string(),
            entries,
            digest: Digest::from_hasher(hasher),
        })
    }

    /// The content hash of a file with metadata `meta` when no hashing is needed, and whether
    /// it has xattrs to read: all zeros for an unhashed tree (whose xattrs are not read), else
    /// what the stat cache remembers.
    fn cached_hash(&self, meta: &fs::Metadata) -> Option<([u8; 32], bool)> {
        if !self.hash_content {
            return Some(([0; 32], false));
        }
        self.cache
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(&StatKey::of(meta))
    }
}

/// Contexts with at least this many bytes to hash are hashed on several threads.
const PARALLEL_HASH_MIN_BYTES: u64 = 8 << 20;

/// Most threads hashing context files at once.
const MAX_HASH_THREADS: usize = 4;

/// Content hashes one hashing thread computed, by index in the list it was given.
type HashedFiles = Result<Vec<(usize, [u8; 32])>, ContextError>;

/// sha256 of each listed file (index, path, stat key, size), in list order; large sets of files
/// are hashed on several threads, each taking the next file.
fn hash_files(files: &[(usize, PathBuf, StatKey, u64)]) -> Result<Vec<[u8; 32]>, ContextError> {
    let total: u64 = files.iter().map(|f| f.3).sum();
    let threads = std::thread::available_parallelism()
        .map_or(1, |n| n.get())
        .min(MAX_HASH_THREADS)
        .min(files.len());
    if threads <= 1 || total < PARALLEL_HASH_MIN_BYTES {
        return files.iter().map(|f| hash_file(&f.1)).collect();
    }
    let next = std::sync::atomic::AtomicUsize::new(0);
    let mut hashes = vec![[0u8; 32]; files.len()];
    let results: Vec<HashedFiles> = std::thread::scope(|scope| {
        let workers: Vec<_> = (0..threads)
            .map(|_| {
                scope.spawn(|| {
                    let mut done = Vec::new();
                    loop {
                        let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                        let Some(file) = files.get(i) else {
                            return Ok(done);
                        };
                        done.push((i, hash_file(&file.1)?));
                    }
                })
            })
            .collect();
        workers
            .into_iter()
            .map(|w| {
                w.join().unwrap_or_else(|_| {
                    Err(ContextError::Io {
                        path: PathBuf::new(),
                        source: io::Error::other("a context hashing thread panicked"),
                    })
                })
            })
            .collect()
    });
    for done in results {
        for (i, hash) in done? {
            hashes[i] = hash;
        }
    }
    Ok(hashes)
}

/// sha256 of the content of the file at `path`.
fn hash_file(path: &Path) -> Result<[u8; 32], ContextError> {
    let io_err = |source| ContextError::Io {
        path: path.to_path_buf(),
        source,
    };
    let mut f = File::open(path).map_err(io_err)?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = f.read(&mut buf).map_err(io_err)?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
    }
    Ok(hasher.finalize().into())
}

/// Drops excluded directories that contain no kept entry (only used with `!` exceptions).
fn prune_excluded_dirs(entries: &mut Vec<ContextEntry>, base: &str, ctx: &BuildContext) {
    let kept: Vec<bool> = entries
        .iter()
        .map(|e| {
            let full = join_rel(base, &e.rel);
            if !matches!(e.kind, EntryKind::Dir) || !ctx.is_excluded(&full) {
                return true;
            }
            let prefix = if e.rel.is_empty() {
                String::new()
            } else {
                format!("{}/", e.rel)
            };
            entries.iter().any(|o| {
                o.rel.starts_with(&prefix)
                    && o.rel != e.rel
                    && !matches!(o.kind, EntryKind::Dir)
                    && !ctx.is_excluded(&join_rel(base, &o.rel))
            })
        })
        .collect();
    let mut i = 0;
    entries.retain(|_| {
        i += 1;
        kept[i - 1]
    });
}

/// True for the extended attributes a copy keeps: not SELinux labels (the destination's
/// policy decides them) nor `trusted.*` (overlayfs' own).
pub fn xattr_is_copied(name: &[u8]) -> bool {
    !name.starts_with(b"trusted.") && name != b"security.selinux"
}

/// The copied extended attributes of `path` (not following a symlink), sorted by name; none
/// where the filesystem has no xattr support.
fn read_xattrs(path: &Path) -> io::Result<Vec<(Vec<u8>, Vec<u8>)>> {
    let mut buf = vec![0u8; 4096];
    let n = loop {
        match rustix::fs::llistxattr(path, &mut buf[..]) {
            Ok(n) => break n,
            Err(rustix::io::Errno::RANGE) if buf.len() < 1 << 16 => buf.resize(1 << 16, 0),
            Err(rustix::io::Errno::NOTSUP) => return Ok(Vec::new()),
            Err(e) => return Err(e.into()),
        }
    };
    if n == 0 {
        return Ok(Vec::new());
    }
    let mut out = Vec::new();
    let mut value = vec![0u8; 1 << 16];
    for name in buf[..n].split(|b| *b == 0).filter(|n| !n.is_empty()) {
        if !xattr_is_copied(name) {
            continue;
        }
        let os = std::ffi::OsStr::from_bytes(name);
        match rustix::fs::lgetxattr(path, os, &mut value[..]) {
            Ok(len) => out.push((name.to_vec(), value[..len].to_vec())),
            Err(rustix::io::Errno::NODATA) => {}
            Err(e) => return Err(e.into()),
        }
    }
    out.sort();
    Ok(out)
}

fn hash_entry(h: &mut Sha256, e: &ContextEntry) {
    h.update(e.rel.as_bytes());
    h.update([0]);
    match &e.kind {
        EntryKind::File(c) => {
            h.update(b"f");
            h.update(c);
        }
        EntryKind::Dir => h.update(b"d"),
        EntryKind::Symlink(t) => {
            h.update(b"l");
            h.update(t.as_os_str().as_encoded_bytes());
        }
    }
    h.update(format!("\0{:o}\n", e.mode).as_bytes());
    // Only when present, so the digests of trees without xattrs stay as they were.
    for (name, value) in &e.xattrs {
        h.update(b"\0xattr\0");
        h.update(name);
        h.update([0]);
        h.update((value.len() as u64).to_le_bytes());
        h.update(value);
    }
}

fn rel_of(base: &Path, p: &Path) -> String {
    p.strip_prefix(base)
        .unwrap_or(Path::new(""))
        .to_string_lossy()
        .into_owned()
}

fn join_rel(a: &str, b: &str) -> String {
    match (a.is_empty(), b.is_empty()) {
        (true, _) => b.to_string(),
        (_, true) => a.to_string(),
        _ => format!("{a}/{b}"),
    }
}

fn has_glob(s: &str) -> bool {
    s.contains(['*', '?', '['])
}

/// Cleans a source path against the context root: `..` cannot climb above it (as BuildKit).
pub fn clean_rel(source: &str) -> String {
    let mut parts: Vec<String> = Vec::new();
    for c in Path::new(source).components() {
        match c {
            Component::Normal(p) => parts.push(p.to_string_lossy().into_owned()),
            Component::ParentDir => {
                parts.pop();
            }
            _ => {}
        }
    }
    parts.join("/")
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Ignore(Vec<&'static str>);
    impl PathFilter for Ignore {
        fn excluded(&self, rel: &str) -> bool {
            self.0
                .iter()
                .any(|p| rel == *p || rel.starts_with(&format!("{p}/")))
        }
        fn has_exceptions(&self) -> bool {
            false
        }
    }

    #[test]
    fn select_hash_and_ignore() {
        let dir = tempfile::tempdir().unwrap();
        fs::create_dir_all(dir.path().join("src/sub")).unwrap();
        fs::write(dir.path().join("src/a.txt"), "a").unwrap();
        fs::write(dir.path().join("src/sub/b.txt"), "b").unwrap();
        fs::write(dir.path().join("top.txt"), "t").unwrap();
        fs::write(dir.path().join("secret"), "s").unwrap();
        let ctx = BuildContext::open(
            dir.path(),
            Some(Box::new(Ignore(vec!["secret"]))),
            StatCache::in_memory(),
        )
        .unwrap();
        let t = ctx.select("./src/../src").unwrap();
        assert_eq!(t.len(), 1);
        assert!(t[0].is_dir());
        let rels: Vec<_> = t[0].entries.iter().map(|e| e.rel.as_str()).collect();
        assert_eq!(rels, ["", "a.txt", "sub", "sub/b.txt"]);
        let g = ctx.select("*.txt").unwrap();
        assert_eq!(g.len(), 1);
        // A wildcard matching nothing (or only ignored files) selects nothing, without error.
        assert!(ctx.select("*.lock").unwrap().is_empty());
        assert!(ctx.select("secre?").unwrap().is_empty());
        assert!(ctx.select("missing.lock").is_err());
        assert_eq!(g[0].rel, "top.txt");
        assert!(ctx.select("secret").is_err());
        let root = ctx.select(".").unwrap();
        assert!(!root[0].entries.iter().any(|e| e.rel == "secret"));
        let before = t[0].digest.clone();
        fs::write(dir.path().join("src/a.txt"), "z").unwrap();
        let ctx = BuildContext::open(dir.path(), None, StatCache::in_memory()).unwrap();
        assert_ne!(ctx.select("src").unwrap()[0].digest, before);
        assert_eq!(clean_rel("../../x/./y"), "x/y");
        // Symlinks are followed inside the context only.
        let outside = tempfile::tempdir().unwrap();
        fs::write(outside.path().join("secret"), "host").unwrap();
        std::os::unix::fs::symlink(outside.path(), dir.path().join("out")).unwrap();
        std::os::unix::fs::symlink("src/sub", dir.path().join("sublink")).unwrap();
        std::os::unix::fs::symlink("/top.txt", dir.path().join("abs")).unwrap();
        let ctx = BuildContext::open(dir.path(), None, StatCache::in_memory()).unwrap();
        assert!(ctx.select("out/secret").is_err());
        let t = ctx.select("sublink/b.txt").unwrap();
        assert_eq!(
            (t[0].rel.as_str(), t[0].name.as_str()),
            ("src/sub/b.txt", "b.txt")
        );
        let t = ctx.select("abs").unwrap();
        assert_eq!((t[0].rel.as_str(), t[0].name.as_str()), ("top.txt", "abs"));
    }

    #[test]
    fn large_contexts_are_hashed_on_several_threads_with_the_same_hashes() {
        let dir = tempfile::tempdir().unwrap();
        let mut contents = Vec::new();
        for i in 0..5u8 {
            // 3 MiB files: together past the parallel threshold.
            let content: Vec<u8> = (0..3usize << 20)
                .map(|j| (j as u8).wrapping_mul(i + 1) ^ i)
                .collect();
            fs::write(dir.path().join(format!("f{i}")), &content).unwrap();
            contents.push(content);
        }
        fs::write(dir.path().join("small"), "s").unwrap();
        let ctx = BuildContext::open(dir.path(), None, StatCache::in_memory()).unwrap();
        let tree = ctx.select(".").unwrap().remove(0);
        for e in &tree.entries[1..] {
            let content = match e.rel.strip_prefix('f') {
                Some(i) => contents[i.parse::<usize>().unwrap()].clone(),
                None => b"s".to_vec(),
            };
            let want: [u8; 32] = Sha256::digest(&content).into();
            assert_eq!(e.kind, EntryKind::File(want), "{}", e.rel);
        }
        // The same tree again (now from the stat cache) has the same digest.
        assert_eq!(ctx.select(".").unwrap()[0].digest, tree.digest);
    }

    #[test]
    fn xattrs_are_read_unless_the_stat_cache_knows_there_are_none() {
        let dir = tempfile::tempdir().unwrap();
        let (a, b) = (dir.path().join("a"), dir.path().join("b"));
        fs::write(&a, "a").unwrap();
        fs::write(&b, "b").unwrap();
        rustix::fs::setxattr(&a, "user.rbuild.t", b"1", rustix::fs::XattrFlags::empty()).unwrap();
        let ctx = BuildContext::open(dir.path(), None, StatCache::in_memory()).unwrap();
        let names =
            |t: &SourceTree| -> Vec<usize> { t.entries.iter().map(|e| e.xattrs.len()).collect() };
        let first = ctx.select(".").unwrap().remove(0);
        assert_eq!(names(&first), [0, 1, 0]);
        // From the stat cache: a's xattrs are still read, b has none.
        let second = ctx.select(".").unwrap().remove(0);
        assert_eq!(names(&second), [0, 1, 0]);
        assert_eq!(second.digest, first.digest);
        // Setting one changes b's ctime, so the cache entry no longer holds.
        rustix::fs::setxattr(&b, "user.rbuild.t", b"2", rustix::fs::XattrFlags::empty()).unwrap();
        let third = ctx.select(".").unwrap().remove(0);
        assert_eq!(names(&third), [0, 1, 1]);
        assert_ne!(third.digest, first.digest);
        let (hits, misses) = ctx.save_cache().unwrap();
        assert_eq!((hits, misses), (3, 3));
    }

    #[test]
    fn hard_links_are_marked_and_change_the_digest() {
        let dir = tempfile::tempdir().unwrap();
        fs::write(dir.path().join("a"), "same").unwrap();
        fs::write(dir.path().join("b"), "same").unwrap();
        let ctx = BuildContext::open(dir.path(), None, StatCache::in_memory()).unwrap();
        let apart = ctx.select(".").unwrap().remove(0);
        assert!(apart.entries.iter().all(|e| e.link.is_none()));
        fs::remove_file(dir.path().join("b")).unwrap();
        fs::hard_link(dir.path().join("a"), dir.path().join("b")).unwrap();
        let ctx = BuildContext::open(dir.path(), None, StatCache::in_memory()).unwrap();
        let linked = ctx.select(".").unwrap().remove(0);
        assert_eq!(linked.entries[1].link, linked.entries[2].link);
        assert!(linked.entries[1].link.is_some());
        assert_ne!(linked.digest, apart.digest);
    }
}
