//! COPY and ADD: source selection and cache-key parts (before any work), then the copy into
//! the mounted parent rootfs with Docker's directory-content semantics.

use super::archive;
use super::fswrite::{copy_xattrs, set_file_attrs, set_xattrs, split_path, Attrs, RootWriter};
use super::plan::{resolve_from, FromSource};
use super::step::{normalize_abs, StageCtx};
use super::users::resolve_owner;
use super::{BuildError, Builder};
use crate::cache::{KeyBuilder, LayerRef};
use crate::context::{clean_rel, BuildContext, ContextEntry, EntryKind, SourceTree};
use crate::dockerfile::{AddInstruction, CopyInstruction, CopySource, Instruction};
use rbuild_layerfs::store::ScratchDir;
use sha2::{Digest as _, Sha256};
use std::collections::HashMap;
use std::fs::File;
use std::io::Write;
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

/// Files at least this large are copied on worker threads, several at a time: the in-kernel
/// copy of a large file keeps one core busy.
const PARALLEL_COPY_MIN: u64 = 1 << 20;

/// Large files queued (each with two open fds) before the queue is copied.
const COPY_QUEUE_FILES: usize = 64;

/// Most threads copying at once.
const MAX_COPY_THREADS: usize = 4;

/// The parts of COPY and ADD that matter here.
pub(crate) struct CopySpec<'a> {
    sources: &'a [CopySource],
    dest: &'a str,
    from: Option<&'a str>,
    chown: Option<&'a str>,
    chmod: Option<&'a str>,
    checksum: Option<&'a str>,
    add: bool,
    unpack: bool,
    parents: bool,
    excludes: &'a [String],
    keep_git_dir: bool,
}

impl<'a> CopySpec<'a> {
    pub fn from_copy(c: &'a CopyInstruction) -> CopySpec<'a> {
        CopySpec {
            sources: &c.sources,
            dest: &c.dest,
            from: c.from.as_deref(),
            chown: c.chown.as_deref(),
            chmod: c.chmod.as_deref(),
            checksum: None,
            add: false,
            unpack: false,
            parents: c.parents,
            excludes: &c.excludes,
            keep_git_dir: false,
        }
    }

    pub fn from_add(a: &'a AddInstruction) -> CopySpec<'a> {
        CopySpec {
            sources: &a.sources,
            dest: &a.dest,
            from: None,
            chown: a.chown.as_deref(),
            chmod: a.chmod.as_deref(),
            checksum: a.checksum.as_deref(),
            add: true,
            unpack: a.unpack != Some(false),
            parents: false,
            excludes: &a.excludes,
            keep_git_dir: a.keep_git_dir,
        }
    }
}

/// One thing to copy.
pub(crate) enum Item {
    /// A source of the build context (a file, dir or symlink and what is below it).
    Context(SourceTree),
    /// Inline heredoc content.
    Inline { name: String, content: Vec<u8> },
    /// A URL with a `--checksum`, downloaded only when the step runs.
    Url { url: String, checksum: String },
    /// A git repository at a resolved commit, fetched only when the step runs.
    Git {
        source: super::git_source::GitSource,
        commit: String,
        keep_git_dir: bool,
    },
    /// A downloaded URL, kept in a scratch dir until the copy.
    Download {
        name: String,
        path: PathBuf,
        /// The response's Last-Modified time, which the file gets (as docker and BuildKit);
        /// without one the file gets the current time (clamped like every new mtime by
        /// --timestamp/SOURCE_DATE_EPOCH). Not part of the cache key, which is the content.
        mtime: Option<(i64, i64)>,
        _dir: ScratchDir,
    },
}

/// A prepared COPY/ADD.
pub(crate) struct CopyJob {
    items: Vec<Item>,
    /// `--from`: the layers to read, and the source paths in them.
    from: Option<(Vec<LayerRef>, Vec<String>)>,
    dest: String,
    dest_dir: bool,
    chown: Option<String>,
    chmod: Option<super::precheck::Chmod>,
    unpack: bool,
    /// `--exclude` patterns.
    excludes: Option<crate::dockerignore::IgnoreMatcher>,
}

use super::precheck::is_url;

/// A digest of what `tree` holds now (after `--exclude`): path, kind and content, mode and
/// xattrs of every entry, as the context's own tree digest counts them.
fn entries_digest(tree: &SourceTree) -> String {
    use crate::context::EntryKind;
    let mut h = Sha256::new();
    for e in &tree.entries {
        h.update(e.rel.as_bytes());
        h.update([0]);
        match &e.kind {
            EntryKind::File(sum) => {
                h.update(b"f");
                h.update(sum);
            }
            EntryKind::Dir => h.update(b"d"),
            EntryKind::Symlink(target) => {
                h.update(b"l");
                h.update(target.as_os_str().as_encoded_bytes());
            }
        }
        h.update(e.mode.to_le_bytes());
        for (name, value) in &e.xattrs {
            h.update(name);
            h.update([0]);
            h.update(value);
            h.update([0]);
        }
        h.update([0xff]);
    }
    hex::encode(h.finalize())
}

/// `tree` without what `--exclude` patterns match, as BuildKit: paths below a directory source
/// are matched relative to it (a matching directory takes its contents along), a file source
/// by its name; `None` when the source itself is excluded.
fn without_excluded(
    mut tree: SourceTree,
    excludes: Option<&crate::dockerignore::IgnoreMatcher>,
) -> Option<SourceTree> {
    let Some(excludes) = excludes else {
        return Some(tree);
    };
    if !tree.is_dir() {
        return (!excludes.is_excluded(&tree.name)).then_some(tree);
    }
    tree.entries
        .retain(|e| e.rel.is_empty() || !excludes.is_excluded(&e.rel));
    Some(tree)
}

impl Builder<'_, '_> {
    /// Expands sources and destination, selects and hashes the sources, adds the key parts.
    pub(crate) fn prepare_copy(
        &mut self,
        sc: &StageCtx,
        instr: &Instruction,
        spec: &CopySpec<'_>,
        key: &mut KeyBuilder,
    ) -> Result<CopyJob, BuildError> {
        let err = |m: String| BuildError::Step {
            line: instr.line,
            instruction: instr.original.clone(),
            message: m,
        };
        if spec.parents {
            return Err(err(
                "--parents is not supported by rbuild yet: name the destination dirs explicitly"
                    .into(),
            ));
        }
        let env = sc.expansion_env();
        let excludes = if spec.excludes.is_empty() {
            None
        } else {
            let mut patterns = Vec::new();
            for e in spec.excludes {
                patterns.push(self.expand(instr, e, &env)?);
            }
            key.part("exclude");
            for p in &patterns {
                key.part(p);
            }
            Some(
                crate::dockerignore::IgnoreMatcher::from_patterns(&patterns)
                    .map_err(|e| err(format!("invalid --exclude: {e}")))?,
            )
        };
        let dest_raw = self.expand(instr, spec.dest, &env)?;
        let trailing = super::precheck::dest_is_dir(&dest_raw);
        let dest = if dest_raw.starts_with('/') {
            normalize_abs(&dest_raw)
        } else {
            normalize_abs(&format!("{}/{}", sc.workdir(), dest_raw))
        };
        let chmod = match spec.chmod {
            None => None,
            Some(m) => {
                let m = self.expand(instr, m, &env)?;
                Some(super::precheck::chmod_mode(&m).map_err(err)?)
            }
        };
        let checksum = match spec.checksum {
            None => None,
            Some(c) => {
                let c = self.expand(instr, c, &env)?;
                super::precheck::checksum(&c).map_err(err)?;
                Some(c)
            }
        };
        let chown = match spec.chown {
            None => None,
            Some(c) => Some(self.expand(instr, c, &env)?),
        };
        key.part(&dest).part(&format!("trailing={trailing}"));
        key.part(chown.as_deref().unwrap_or(""))
            .part(&chmod.as_ref().map_or("None".to_string(), |c| c.key()));
        key.part(if spec.add { "add" } else { "copy" });
        key.part(&format!("unpack={}", spec.unpack));
        let mut items = Vec::new();
        let mut from = None;
        let count;
        if let Some(f) = spec.from {
            let name = self.expand(instr, f, &env)?;
            let mut paths = Vec::new();
            for s in spec.sources {
                match s {
                    CopySource::Path(p) => paths.push(self.expand(instr, p, &env)?),
                    CopySource::Heredoc(_) => {
                        return Err(err("COPY --from cannot take a heredoc source".into()))
                    }
                }
            }
            let layers = self.stage_or_image_layers(sc, instr, &name)?;
            // The copied files are the source's layers and nothing else: keyed by their
            // diff IDs, a stage rebuilt to the same content (or an image with the same layers
            // under another config) still hits.
            key.part("from-layers");
            for layer in &layers {
                key.part(layer.diff_id.as_str());
            }
            for p in &paths {
                key.part(p);
            }
            // Records made before symlink sources kept their names, and before entries kept
            // their source owners and xattrs, hold the wrong tree.
            key.part("symlink-sources-keep-their-names")
                .part("source-owners-kept")
                .part("source-xattrs-kept")
                .part("hard-links-kept");
            // A wildcard counts once here: how many it matched is known at copy time.
            count = paths.len();
            from = Some((layers, paths));
        } else {
            for s in spec.sources {
                match s {
                    CopySource::Heredoc(doc) => {
                        let content = if doc.expand {
                            self.expand(instr, &doc.content, &env)
                                .unwrap_or_else(|_| doc.content.clone())
                        } else {
                            doc.content.clone()
                        };
                        key.part("heredoc").part(&doc.name).part(&content);
                        items.push(Item::Inline {
                            name: doc.name.clone(),
                            content: content.into_bytes(),
                        });
                    }
                    CopySource::Path(p) => {
                        let p = self.expand(instr, p, &env)?;
                        if spec.add && super::precheck::is_git(&p) {
                            let source = super::git_source::GitSource::parse(&p);
                            let commit = source.resolve().map_err(err)?;
                            key.part("git")
                                .part(&source.url)
                                .part(&commit)
                                .part(&source.subdir)
                                .part(&format!("keep-git-dir={}", spec.keep_git_dir));
                            items.push(Item::Git {
                                source,
                                commit,
                                keep_git_dir: spec.keep_git_dir,
                            });
                            continue;
                        }
                        if is_url(&p) {
                            if !spec.add {
                                return Err(err(format!(
                                    "COPY cannot fetch {p}: use ADD for URLs"
                                )));
                            }
                            key.part("url").part(&p);
                            match checksum.as_deref() {
                                // The checksum names the content: no download before a hit.
                                Some(sum) => {
                                    key.part(sum);
                                    items.push(Item::Url {
                                        url: p.clone(),
                                        checksum: sum.to_string(),
                                    });
                                }
                                None => {
                                    let (item, digest) = self.download(instr, &p, None)?;
                                    key.part(&digest);
                                    items.push(item);
                                }
                            }
                            continue;
                        }
                        if checksum.is_some() {
                            return Err(err(format!(
                                "--checksum applies to HTTP(S) sources only, not {p}: drop the flag"
                            )));
                        }
                        for tree in self.ctx.select(&p).map_err(|e| err(e.to_string()))? {
                            key.part(&tree.rel);
                            if excludes.is_none() {
                                key.part(tree.digest.as_str());
                                items.push(Item::Context(tree));
                            } else if let Some(tree) = without_excluded(tree, excludes.as_ref()) {
                                // Keyed by what is copied: a change of an excluded file hits,
                                // as in BuildKit.
                                key.part(&entries_digest(&tree));
                                items.push(Item::Context(tree));
                            } else {
                                key.part("excluded");
                            }
                        }
                    }
                }
            }
            // Sources that are all wildcards matching nothing copy nothing, without error, as
            // BuildKit (its copies allow empty wildcards; the classic builder failed with 'no
            // source files were specified'). A literal source that is missing fails in select.
            count = items.len();
        }
        let dest_dir = trailing || count > 1;
        if count > 1 && !trailing {
            return Err(err(format!(
                "with more than one source the destination must be a directory ending in /: write {dest_raw}/"
            )));
        }
        Ok(CopyJob {
            items,
            from,
            dest,
            dest_dir,
            chown,
            chmod,
            unpack: spec.unpack,
            excludes,
        })
    }

    /// The layers of `name` as a `--from` source: an earlier stage (by name or index) or an
    /// image.
    pub(crate) fn stage_or_image_layers(
        &mut self,
        sc: &StageCtx,
        instr: &Instruction,
        name: &str,
    ) -> Result<Vec<LayerRef>, BuildError> {
        match resolve_from(self.df, sc.index, name) {
            FromSource::Stage(i) => {
                let r = self.results[i].as_ref().ok_or_else(|| BuildError::Step {
                    line: instr.line,
                    instruction: instr.original.clone(),
                    message: format!("stage {name:?} was not built before this step"),
                })?;
                Ok(r.state.layers.clone())
            }
            FromSource::Image(r) => Ok(self.base_image(&r, instr.line, &instr.original)?.1.layers),
        }
    }

    fn download(
        &self,
        instr: &Instruction,
        url: &str,
        checksum: Option<&str>,
    ) -> Result<(Item, String), BuildError> {
        let err = |m: String| BuildError::Step {
            line: instr.line,
            instruction: instr.original.clone(),
            message: m,
        };
        let dir = self
            .store
            .scratch_dir("add-url")
            .map_err(|e| BuildError::store("creating a scratch dir", e))?;
        let path = dir.path().join("download");
        let mut resp = reqwest::blocking::get(url)
            .and_then(|r| r.error_for_status())
            .map_err(|e| err(format!("downloading {url}: {e}")))?;
        let mtime = resp
            .headers()
            .get(reqwest::header::LAST_MODIFIED)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| httpdate::parse_http_date(v).ok())
            .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
            .map(|d| (d.as_secs() as i64, 0));
        let mut file = File::create(&path).map_err(|source| BuildError::Io {
            path: path.clone(),
            source,
        })?;
        let mut hasher = HashWriter {
            inner: &mut file,
            hasher: Sha256::new(),
        };
        resp.copy_to(&mut hasher)
            .map_err(|e| err(format!("downloading {url}: {e}")))?;
        let digest = format!("sha256:{}", hex::encode(hasher.hasher.finalize()));
        if let Some(want) = checksum {
            let got = match want.split_once(':').map(|(algo, _)| algo) {
                Some(algo @ ("sha384" | "sha512")) => {
                    // Read back, streaming: the sha256 above is what cache keys use.
                    let io_err = |source| BuildError::Io {
                        path: path.clone(),
                        source,
                    };
                    let mut f = File::open(&path).map_err(io_err)?;
                    let hex = if algo == "sha384" {
                        let mut h = sha2::Sha384::new();
                        std::io::copy(&mut f, &mut h).map_err(io_err)?;
                        hex::encode(h.finalize())
                    } else {
                        let mut h = sha2::Sha512::new();
                        std::io::copy(&mut f, &mut h).map_err(io_err)?;
                        hex::encode(h.finalize())
                    };
                    format!("{algo}:{hex}")
                }
                _ => digest.clone(),
            };
            if want != got {
                let digest = got;
                return Err(err(format!(
                    "checksum of {url} is {digest}, not the expected {want}"
                )));
            }
        }
        let name = url
            .split(['?', '#'])
            .next()
            .and_then(|u| u.rsplit('/').next())
            .filter(|n| !n.is_empty() && *n != "." && *n != ".." && !n.contains(':'))
            .unwrap_or("download")
            .to_string();
        Ok((
            Item::Download {
                name,
                path,
                mtime,
                _dir: dir,
            },
            digest,
        ))
    }

    /// Performs a prepared COPY/ADD into the mounted rootfs at `root`.
    pub(crate) fn copy_into(
        &mut self,
        root: &Path,
        instr: &Instruction,
        job: &CopyJob,
    ) -> Result<(), BuildError> {
        let err = |m: String| BuildError::Step {
            line: instr.line,
            instruction: instr.original.clone(),
            message: m,
        };
        let writer = RootWriter::open(root).map_err(|e| err(format!("opening the rootfs: {e}")))?;
        let owner = match &job.chown {
            Some(c) => Some(resolve_owner(Some(&writer), c).map_err(err)?),
            None => None,
        };
        let mut copier = Copier {
            writer: &writer,
            job,
            owner,
            keep_owner: job.from.is_some(),
            dirs: HashMap::new(),
            queue: Vec::new(),
            links: HashMap::new(),
        };
        if let Some((layers, paths)) = &job.from {
            return self.with_readonly(layers, |src_root| {
                let src = BuildContext::open_unhashed(src_root).map_err(|e| err(e.to_string()))?;
                let reader = RootWriter::open(src_root).map_err(|e| err(e.to_string()))?;
                let mut trees = Vec::new();
                for p in paths {
                    let rel = if p.contains(['*', '?', '[']) {
                        clean_rel(p)
                    } else {
                        // Resolve inside the source image: its symlinks never reach the host.
                        let host =
                            reader
                                .host_path_of(&format!("/{}", clean_rel(p)))
                                .map_err(|_| {
                                    err(format!(
                                        "{p}: no such file or directory in the --from source"
                                    ))
                                })?;
                        host.strip_prefix(src.root())
                            .unwrap_or(Path::new(""))
                            .to_string_lossy()
                            .into_owned()
                    };
                    let mut selected = src.select(&rel).map_err(|e| err(e.to_string()))?;
                    // A symlink source keeps its own name (`COPY --from=img /bin/ls /x/` makes
                    // /x/ls, not /x/busybox), as a context source does.
                    let cleaned = clean_rel(p);
                    if !p.contains(['*', '?', '[']) && rel != cleaned && !cleaned.is_empty() {
                        let name = cleaned.rsplit('/').next().unwrap_or(&cleaned).to_string();
                        for t in &mut selected {
                            t.name = name.clone();
                        }
                    }
                    trees.extend(
                        selected
                            .into_iter()
                            .filter_map(|t| without_excluded(t, job.excludes.as_ref())),
                    );
                }
                // Wildcards that all matched nothing: nothing to copy, as BuildKit.
                if trees.is_empty() {
                    return Ok(());
                }
                if trees.len() > 1 && !job.dest_dir {
                    return Err(err(
                        "with more than one source the destination must be a directory ending in /"
                            .into(),
                    ));
                }
                let multi = trees.len() > 1;
                for t in &trees {
                    copier
                        .tree(src.root(), t, multi)
                        .map_err(|e| err(format!("copying {}: {e}", t.rel)))?;
                }
                Ok(())
            });
        }
        for item in &job.items {
            match item {
                Item::Context(t) => copier.tree(self.ctx.root(), t, false).map_err(|e| {
                    err(format!(
                        "copying {}: {e}",
                        if t.rel.is_empty() { "." } else { &t.rel }
                    ))
                })?,
                Item::Inline { name, content } => copier
                    .single_file(name, &mut &content[..], 0o644, None)
                    .map_err(|e| err(format!("writing {name}: {e}")))?,
                Item::Url { url, checksum } => {
                    let (item, _) = self.download(instr, url, Some(checksum))?;
                    if let Item::Download {
                        name, path, mtime, ..
                    } = &item
                    {
                        copier.downloaded_file(name, path, *mtime, &err)?;
                    }
                }
                Item::Download {
                    name, path, mtime, ..
                } => copier.downloaded_file(name, path, *mtime, &err)?,
                Item::Git {
                    source,
                    commit,
                    keep_git_dir,
                } => {
                    let scratch = self
                        .store
                        .scratch_dir("add-git")
                        .map_err(|e| BuildError::store("creating a scratch dir", e))?;
                    let checkout = scratch.path().join("checkout");
                    std::fs::create_dir(&checkout).map_err(|e| err(e.to_string()))?;
                    source
                        .fetch(commit, &checkout, *keep_git_dir)
                        .map_err(&err)?;
                    // The subdirectory, resolved inside the checkout: its symlinks stay there.
                    let root = RootWriter::open(&checkout)
                        .and_then(|r| r.host_path_of(&format!("/{}", source.subdir)))
                        .map_err(|_| {
                            err(format!(
                                "{}: no directory {} in commit {commit}",
                                source.url, source.subdir
                            ))
                        })?;
                    let tree = BuildContext::open_unhashed(&root)
                        .and_then(|c| c.select(""))
                        .map_err(|e| err(e.to_string()))?;
                    for t in &tree {
                        copier
                            .tree(&root, t, false)
                            .map_err(|e| err(format!("copying {}: {e}", source.url)))?;
                    }
                }
            }
        }
        Ok(())
    }
}

struct HashWriter<'a> {
    inner: &'a mut File,
    hasher: Sha256,
}

impl Write for HashWriter<'_> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.hasher.update(&buf[..n]);
        Ok(n)
    }
    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}

/// Copies selected trees into the rootfs.
struct Copier<'w> {
    writer: &'w RootWriter,
    job: &'w CopyJob,
    owner: Option<(u32, u32)>,
    /// COPY --from without --chown: entries keep their owners from the source.
    keep_owner: bool,
    /// Opened in-image directories by path.
    dirs: HashMap<String, OwnedFd>,
    /// Large files created and waiting for their content (see [`Copier::copy_queued`]).
    queue: Vec<QueuedCopy>,
    /// Where the first file of each hard-link group of the current source went (by the source's
    /// device and inode): the others are linked to it, as BuildKit's copy does.
    links: HashMap<(u64, u64), String>,
}

/// A large file whose destination exists (empty) and whose content is still to be copied.
struct QueuedCopy {
    src: File,
    dest: File,
    attrs: Attrs,
    /// Which xattrs the copy gets.
    xattrs: Xattrs,
}

/// The extended attributes a copied file gets.
enum Xattrs {
    /// None (a context file without any).
    None,
    /// Those of the source file, read from it (COPY --from).
    FromSource,
    /// These, read (and hashed) with the context.
    Given(Vec<(Vec<u8>, Vec<u8>)>),
}

impl QueuedCopy {
    fn run(mut self) -> std::io::Result<()> {
        // In-kernel (copy_file_range, else sendfile) where the filesystems allow it.
        std::io::copy(&mut self.src, &mut self.dest)?;
        set_file_attrs(&self.dest, self.attrs)?;
        match &self.xattrs {
            Xattrs::None => {}
            Xattrs::FromSource => copy_xattrs(&self.src, &self.dest)?,
            Xattrs::Given(x) => set_xattrs(&self.dest, x)?,
        }
        Ok(())
    }
}

impl Copier<'_> {
    fn attrs(&self, mode: u32, mtime: Option<(i64, i64)>) -> Attrs {
        self.attrs_owned(mode, mtime, (0, 0), false)
    }

    /// Attributes of a copied entry whose source is owned by `source_owner`: the `--chown`
    /// owner, else the source's owner for COPY --from (as Docker keeps it between stages and
    /// images), else root.
    /// `--chmod` applies to `mode` (symbolic modes relative to it; `X` looks at `dir`).
    fn attrs_owned(
        &self,
        mode: u32,
        mtime: Option<(i64, i64)>,
        source_owner: (u32, u32),
        dir: bool,
    ) -> Attrs {
        let (uid, gid) = match (self.owner, self.keep_owner) {
            (Some(o), _) => o,
            (None, true) => source_owner,
            (None, false) => (0, 0),
        };
        Attrs {
            uid,
            gid,
            mode: self.job.chmod.as_ref().map_or(mode, |c| c.apply(mode, dir)),
            mtime,
        }
    }

    fn dir(&mut self, path: &str) -> std::io::Result<&OwnedFd> {
        if !self.dirs.contains_key(path) {
            // Directories this copy creates belong to the --chown owner (as BuildKit).
            let created = self.owner.map(|(uid, gid)| Attrs {
                uid,
                gid,
                mode: 0o755,
                mtime: None,
            });
            let fd = self.writer.ensure_dir(path, created)?;
            self.dirs.insert(path.to_string(), fd);
        }
        Ok(&self.dirs[path])
    }

    /// Where a single (non-directory) source named `name` goes.
    fn file_target(&self, name: &str, multi: bool) -> String {
        let into_dir = self.job.dest_dir
            || multi
            || self.writer.kind(&self.job.dest).is_some_and(|k| k.is_dir());
        if into_dir {
            format!("{}/{}", self.job.dest.trim_end_matches('/'), name)
        } else {
            self.job.dest.clone()
        }
    }

    /// Writes a downloaded ADD source (kept at `path` outside the image) as `name`, mode 0600
    /// like docker, with the mtime of its Last-Modified header (else now).
    fn downloaded_file(
        &mut self,
        name: &str,
        path: &Path,
        mtime: Option<(i64, i64)>,
        err: &dyn Fn(String) -> BuildError,
    ) -> Result<(), BuildError> {
        let mut f = File::open(path).map_err(|source| BuildError::Io {
            path: path.to_path_buf(),
            source,
        })?;
        self.single_file(name, &mut f, 0o600, mtime)
            .map_err(|e| err(format!("writing {name}: {e}")))
    }

    fn single_file(
        &mut self,
        name: &str,
        data: &mut dyn std::io::Read,
        mode: u32,
        mtime: Option<(i64, i64)>,
    ) -> std::io::Result<()> {
        let target = self.file_target(name, false);
        let (parent, fname) =
            split_path(&target).ok_or_else(|| std::io::Error::other("cannot write to /"))?;
        let a = self.attrs(mode, mtime);
        let w = self.writer;
        let dir = self.dir(&parent)?;
        w.write_file_at(dir, &fname, data, a)?;
        Ok(())
    }

    /// Copies the content of the queued large files, several at a time. The files already exist
    /// with their final names, so the order in which they fill does not matter.
    fn copy_queued(&mut self) -> std::io::Result<()> {
        let queue = std::mem::take(&mut self.queue);
        let threads = std::thread::available_parallelism()
            .map_or(1, |n| n.get())
            .min(MAX_COPY_THREADS)
            .min(queue.len());
        if threads <= 1 {
            return queue.into_iter().try_for_each(QueuedCopy::run);
        }
        let jobs = Mutex::new(queue.into_iter());
        let next = || jobs.lock().unwrap_or_else(|p| p.into_inner()).next();
        std::thread::scope(|scope| {
            let workers: Vec<_> = (0..threads)
                .map(|_| {
                    scope.spawn(|| {
                        while let Some(job) = next() {
                            job.run()?;
                        }
                        Ok(())
                    })
                })
                .collect();
            workers.into_iter().try_for_each(|w| {
                w.join()
                    .unwrap_or_else(|_| Err(std::io::Error::other("a copy thread panicked")))
            })
        })
    }

    fn tree(&mut self, base: &Path, tree: &SourceTree, multi: bool) -> std::io::Result<()> {
        // Hard links are kept within one source (BuildKit copies each source on its own).
        self.links.clear();
        let copied = self.tree_entries(base, tree, multi);
        // Queued files are filled even after an error, so no fd is left open; the first error
        // is the one reported.
        let filled = self.copy_queued();
        copied.and(filled)
    }

    fn tree_entries(&mut self, base: &Path, tree: &SourceTree, multi: bool) -> std::io::Result<()> {
        let src_root = if tree.rel.is_empty() {
            base.to_path_buf()
        } else {
            base.join(&tree.rel)
        };
        if tree.is_dir() {
            let dest = self.job.dest.clone();
            self.dir(&dest)?;
            for e in tree.entries.iter().skip(1) {
                let target = format!("{}/{}", dest.trim_end_matches('/'), e.rel);
                self.entry(&src_root.join(&e.rel), &target, e)?;
            }
            self.copy_queued()?;
            // Directory mtimes last (writing inside a dir changes its mtime), deepest first.
            for e in tree.entries.iter().skip(1).rev() {
                if matches!(e.kind, EntryKind::Dir) {
                    let target = format!("{}/{}", dest.trim_end_matches('/'), e.rel);
                    if let Some(fd) = self.dirs.get(&target) {
                        self.writer.set_mtime(fd, e.mtime)?;
                    }
                }
            }
            return Ok(());
        }
        let Some(top) = tree.entries.first() else {
            return Ok(());
        };
        if self.job.unpack && matches!(top.kind, EntryKind::File(_)) {
            if let Some(kind) = archive::detect(&src_root)? {
                archive::extract(&src_root, kind, self.writer, &self.job.dest, self.owner)?;
                return Ok(());
            }
        }
        let name = tree.name.clone();
        let target = self.file_target(&name, multi);
        self.entry(&src_root, &target, top)
    }

    fn entry(&mut self, src: &Path, target: &str, e: &ContextEntry) -> std::io::Result<()> {
        let (parent, name) =
            split_path(target).ok_or_else(|| std::io::Error::other("cannot replace /"))?;
        let a = self.attrs_owned(
            e.mode,
            Some(e.mtime),
            e.owner,
            matches!(e.kind, EntryKind::Dir),
        );
        let w = self.writer;
        match &e.kind {
            EntryKind::Dir => {
                let dir = self.dir(&parent)?;
                let fd = w.mkdir_at(dir, &name, a)?;
                w.set_dir_attrs(&fd, a)?;
                set_xattrs(&fd, &e.xattrs)?;
                self.dirs.insert(target.to_string(), fd);
            }
            EntryKind::File(_) => {
                if let Some(id) = e.link {
                    if let Some(first) = self.links.get(&id).cloned() {
                        let (fparent, fname) = split_path(&first)
                            .ok_or_else(|| std::io::Error::other("cannot link to /"))?;
                        let fdir = self.dir(&fparent)?.try_clone()?;
                        let dir = self.dir(&parent)?;
                        return w.hardlink_at(&fdir, &fname, dir, &name);
                    }
                    self.links.insert(id, target.to_string());
                }
                let mut f = File::open(src)?;
                // Files keep their xattrs (file capabilities above all, as BuildKit keeps
                // them): from an image read from the file, from the context those hashed.
                let xattrs = if self.keep_owner {
                    Xattrs::FromSource
                } else if e.xattrs.is_empty() {
                    Xattrs::None
                } else {
                    Xattrs::Given(e.xattrs.clone())
                };
                let dir = self.dir(&parent)?;
                if e.size < PARALLEL_COPY_MIN && matches!(xattrs, Xattrs::None) {
                    w.copy_file_at(dir, &name, &mut f, a)?;
                } else if e.size < PARALLEL_COPY_MIN {
                    QueuedCopy {
                        src: f,
                        dest: w.create_file_at(dir, &name)?,
                        attrs: a,
                        xattrs,
                    }
                    .run()?;
                } else {
                    let dest = w.create_file_at(dir, &name)?;
                    self.queue.push(QueuedCopy {
                        src: f,
                        dest,
                        attrs: a,
                        xattrs,
                    });
                    if self.queue.len() >= COPY_QUEUE_FILES {
                        self.copy_queued()?;
                    }
                }
            }
            EntryKind::Symlink(t) => {
                let dir = self.dir(&parent)?;
                w.symlink_at(dir, &name, t, a)?;
            }
        }
        Ok(())
    }
}
