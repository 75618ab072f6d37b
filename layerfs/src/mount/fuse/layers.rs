//! The stack of real directories behind a union mount and how a merged path resolves in it:
//! topmost entry wins, whiteouts (devices 0/0 or xattr whiteouts) hide lower entries,
//! directories merge until an opaque one.

use std::collections::HashSet;
use std::ffi::{OsStr, OsString};
use std::fs::{self, FileType, Metadata};
use std::io;
use std::os::unix::fs::{DirEntryExt, FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};

use super::whiteout::{
    could_be_xattr_whiteout, has_whiteout_xattr, holds_xattr_whiteouts, is_opaque, is_whiteout,
    is_whiteout_at,
};

/// Index of a real directory in a [`LayerSet`]; 0 is the upper dir when there is one.
pub type LayerIndex = usize;

/// Identity of a real file: (st_dev, st_ino).
pub type RealKey = (u64, u64);

/// The real directories of a union mount, topmost first.
#[derive(Debug)]
pub struct LayerSet {
    roots: Vec<PathBuf>,
    devs: Vec<u64>,
    has_upper: bool,
}

/// The topmost real entry a merged name resolves to.
#[derive(Debug)]
pub struct Resolved {
    /// Layer holding the topmost entry.
    pub layer: LayerIndex,
    /// lstat of the topmost entry.
    pub meta: Metadata,
    /// For directories: every layer merged into it, topmost first.
    pub dir_layers: Vec<LayerIndex>,
}

/// One visible entry of a merged directory.
#[derive(Debug)]
pub struct MergedEntry {
    /// Entry name.
    pub name: OsString,
    /// File type of the topmost entry.
    pub kind: FileType,
    /// Identity of the topmost entry.
    pub key: RealKey,
}

fn not_found(err: &io::Error) -> bool {
    matches!(err.raw_os_error(), Some(libc::ENOENT) | Some(libc::ENOTDIR))
}

impl LayerSet {
    /// Builds the stack from the read-only layers (lowest first) and an optional upper dir.
    pub fn new(lowers: &[PathBuf], upper: Option<&Path>) -> io::Result<LayerSet> {
        let mut roots = Vec::with_capacity(lowers.len() + 1);
        if let Some(upper) = upper {
            roots.push(upper.to_path_buf());
        }
        roots.extend(lowers.iter().rev().cloned());
        let devs = roots
            .iter()
            .map(|root| fs::metadata(root).map(|m| m.dev()))
            .collect::<io::Result<Vec<u64>>>()?;
        Ok(LayerSet {
            roots,
            devs,
            has_upper: upper.is_some(),
        })
    }

    /// The writable layer, if the mount has one.
    pub fn upper(&self) -> Option<LayerIndex> {
        self.has_upper.then_some(0)
    }

    /// Real path of the merged relative path `rel` inside layer `layer`.
    pub fn real(&self, layer: LayerIndex, rel: &Path) -> PathBuf {
        if rel.as_os_str().is_empty() {
            self.roots[layer].clone()
        } else {
            self.roots[layer].join(rel)
        }
    }

    /// Resolution of the merged root directory.
    pub fn resolve_root(&self) -> io::Result<Resolved> {
        let meta = fs::symlink_metadata(&self.roots[0])?;
        let mut dir_layers = Vec::new();
        for layer in 0..self.roots.len() {
            dir_layers.push(layer);
            if is_opaque(&self.roots[layer]) {
                break;
            }
        }
        Ok(Resolved {
            layer: 0,
            meta,
            dir_layers,
        })
    }

    /// Resolves `name` inside the merged directory `dir` (made of `dir_layers`).
    pub fn lookup(
        &self,
        dir: &Path,
        dir_layers: &[LayerIndex],
        name: &OsStr,
    ) -> io::Result<Option<Resolved>> {
        let rel = dir.join(name);
        let mut found: Option<Resolved> = None;
        for &layer in dir_layers {
            let path = self.real(layer, &rel);
            let meta = match fs::symlink_metadata(&path) {
                Ok(meta) => meta,
                Err(err) if not_found(&err) => continue,
                Err(err) => return Err(err),
            };
            if is_whiteout_at(&path, &meta) {
                break;
            }
            let is_dir = meta.is_dir();
            match &mut found {
                None => {
                    found = Some(Resolved {
                        layer,
                        meta,
                        dir_layers: if is_dir { vec![layer] } else { Vec::new() },
                    });
                    if !is_dir || is_opaque(&path) {
                        break;
                    }
                }
                Some(top) => {
                    if !is_dir {
                        break;
                    }
                    top.dir_layers.push(layer);
                    if is_opaque(&path) {
                        break;
                    }
                }
            }
        }
        Ok(found)
    }

    /// Whether any layer below the upper one has an entry (or whiteout) named `name` in `dir`.
    pub fn lower_has(&self, dir: &Path, dir_layers: &[LayerIndex], name: &OsStr) -> bool {
        let rel = dir.join(name);
        dir_layers
            .iter()
            .filter(|&&layer| Some(layer) != self.upper())
            .any(|&layer| fs::symlink_metadata(self.real(layer, &rel)).is_ok())
    }

    /// Visible entries of the merged directory `dir`, without `.` and `..`.
    pub fn list(&self, dir: &Path, dir_layers: &[LayerIndex]) -> io::Result<Vec<MergedEntry>> {
        let mut seen: HashSet<OsString> = HashSet::new();
        let mut entries = Vec::new();
        for &layer in dir_layers {
            let path = self.real(layer, dir);
            let reader = match fs::read_dir(&path) {
                Ok(reader) => reader,
                Err(err) if not_found(&err) => continue,
                Err(err) => return Err(err),
            };
            // Only a directory marked `x` holds xattr whiteouts: elsewhere regular files are
            // not even stat'ed.
            let xattr_whiteouts = holds_xattr_whiteouts(&path);
            for entry in reader {
                let entry = entry?;
                let name = entry.file_name();
                if !seen.insert(name.clone()) {
                    continue;
                }
                let kind = entry.file_type()?;
                if kind.is_char_device() && is_whiteout(&entry.metadata()?) {
                    continue;
                }
                if xattr_whiteouts
                    && kind.is_file()
                    && could_be_xattr_whiteout(&entry.metadata()?)
                    && has_whiteout_xattr(&entry.path())
                {
                    continue;
                }
                entries.push(MergedEntry {
                    name,
                    kind,
                    key: (self.devs[layer], entry.ino()),
                });
            }
        }
        Ok(entries)
    }
}
