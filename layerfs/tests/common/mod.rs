//! Helpers shared by the layerfs integration tests: raw tar crafting (including names a
//! well-behaved writer refuses to produce) and tree snapshots for comparisons.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::Path;

use rbuild_layerfs::Digest;
use tar::{EntryType, Header};

/// Builds a tar stream entry by entry, with raw byte names (no validation at all).
#[derive(Default)]
pub struct RawTar {
    pub bytes: Vec<u8>,
}

impl RawTar {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn dir(&mut self, name: &[u8]) -> &mut Self {
        self.entry(name, EntryType::Directory, b"", b"", 0o755)
    }

    pub fn file(&mut self, name: &[u8], data: &[u8]) -> &mut Self {
        self.entry(name, EntryType::Regular, b"", data, 0o644)
    }

    pub fn symlink(&mut self, name: &[u8], target: &[u8]) -> &mut Self {
        self.entry(name, EntryType::Symlink, target, b"", 0o777)
    }

    pub fn hardlink(&mut self, name: &[u8], target: &[u8]) -> &mut Self {
        self.entry(name, EntryType::Link, target, b"", 0o644)
    }

    /// Appends one entry; names and link targets longer than 100 bytes use GNU long-name
    /// records.
    pub fn entry(
        &mut self,
        name: &[u8],
        kind: EntryType,
        link: &[u8],
        data: &[u8],
        mode: u32,
    ) -> &mut Self {
        if name.len() > 100 {
            self.long_record(b'L', name);
        }
        if link.len() > 100 {
            self.long_record(b'K', link);
        }
        let mut header = Header::new_gnu();
        {
            let old = header.as_old_mut();
            let n = name.len().min(100);
            old.name[..n].copy_from_slice(&name[..n]);
            let l = link.len().min(100);
            old.linkname[..l].copy_from_slice(&link[..l]);
        }
        header.set_entry_type(kind);
        header.set_mode(mode);
        header.set_uid(0);
        header.set_gid(0);
        header.set_mtime(1_600_000_000);
        header.set_size(data.len() as u64);
        header.set_cksum();
        self.bytes.extend_from_slice(header.as_bytes());
        self.data(data);
        self
    }

    fn long_record(&mut self, kind: u8, value: &[u8]) {
        let mut payload = value.to_vec();
        payload.push(0);
        let mut header = Header::new_gnu();
        header.as_old_mut().name[..13].copy_from_slice(b"././@LongLink");
        header.set_entry_type(EntryType::new(kind));
        header.set_mode(0o644);
        header.set_size(payload.len() as u64);
        header.set_cksum();
        self.bytes.extend_from_slice(header.as_bytes());
        self.data(&payload);
    }

    fn data(&mut self, data: &[u8]) {
        self.bytes.extend_from_slice(data);
        let pad = (512 - data.len() % 512) % 512;
        self.bytes.extend(std::iter::repeat_n(0u8, pad));
    }

    /// The archive with its end-of-archive blocks.
    pub fn finish(&mut self) -> Vec<u8> {
        let mut out = std::mem::take(&mut self.bytes);
        out.extend(std::iter::repeat_n(0u8, 1024));
        out
    }
}

/// One inode as seen by the comparisons.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Node {
    pub kind: &'static str,
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
    pub content: Option<Digest>,
    pub target: Option<Vec<u8>>,
    pub rdev: u64,
    pub xattrs: BTreeMap<Vec<u8>, Vec<u8>>,
}

/// Every path below `root` (not `root` itself) with type, mode, owner, content, symlink
/// target, device number and xattrs; overlay's private xattrs except opaque are left out.
pub fn snapshot(root: &Path) -> BTreeMap<Vec<u8>, Node> {
    let mut out = BTreeMap::new();
    for entry in walkdir::WalkDir::new(root).min_depth(1).follow_links(false) {
        let entry = entry.unwrap();
        let md = entry.metadata().unwrap();
        let ft = md.file_type();
        let kind = if ft.is_dir() {
            "dir"
        } else if ft.is_symlink() {
            "symlink"
        } else if ft.is_file() {
            "file"
        } else if ft.is_char_device() {
            "char"
        } else if ft.is_block_device() {
            "block"
        } else if ft.is_fifo() {
            "fifo"
        } else {
            "other"
        };
        let content = ft
            .is_file()
            .then(|| Digest::of_bytes(&std::fs::read(entry.path()).unwrap()));
        let target = ft.is_symlink().then(|| {
            std::fs::read_link(entry.path())
                .unwrap()
                .as_os_str()
                .as_bytes()
                .to_vec()
        });
        let rel = entry
            .path()
            .strip_prefix(root)
            .unwrap()
            .as_os_str()
            .as_bytes()
            .to_vec();
        out.insert(
            rel,
            Node {
                kind,
                mode: md.mode() & 0o7777,
                uid: md.uid(),
                gid: md.gid(),
                content,
                target,
                rdev: md.rdev(),
                xattrs: xattrs(entry.path()),
            },
        );
    }
    out
}

/// The xattrs of `path` (not following symlinks), without overlay bookkeeping other than
/// the opaque marker.
pub fn xattrs(path: &Path) -> BTreeMap<Vec<u8>, Vec<u8>> {
    let mut out = BTreeMap::new();
    let mut names = vec![0u8; 4096];
    let Ok(n) = rustix::fs::llistxattr(path, &mut names[..]) else {
        return out;
    };
    for name in names[..n].split(|b| *b == 0).filter(|n| !n.is_empty()) {
        let keep = !name.starts_with(b"trusted.overlay.") || name == b"trusted.overlay.opaque";
        if !keep || name == b"security.selinux" {
            continue;
        }
        let mut value = vec![0u8; 4096];
        if let Ok(len) = rustix::fs::lgetxattr(path, OsStr::from_bytes(name), &mut value[..]) {
            value.truncate(len);
            out.insert(name.to_vec(), value);
        }
    }
    out
}

/// Asserts two snapshots are equal, naming the first differing path.
pub fn assert_same_tree(left: &BTreeMap<Vec<u8>, Node>, right: &BTreeMap<Vec<u8>, Node>) {
    for (path, node) in left {
        let shown = String::from_utf8_lossy(path);
        match right.get(path) {
            None => panic!("{shown} is only on the left: {node:?}"),
            Some(other) => assert_eq!(node, other, "{shown} differs"),
        }
    }
    for path in right.keys() {
        assert!(
            left.contains_key(path),
            "{} is only on the right",
            String::from_utf8_lossy(path)
        );
    }
}

/// True when `dir` has no entries (or does not exist).
pub fn empty_or_absent(dir: &Path) -> bool {
    match std::fs::read_dir(dir) {
        Ok(mut it) => it.next().is_none(),
        Err(e) => e.kind() == std::io::ErrorKind::NotFound,
    }
}

/// The union driver for tests that mount: `$RBUILD_STORAGE_DRIVER` (CI's second pass sets it
/// to `fuse`), else kernel overlayfs.
pub fn storage_driver() -> rbuild_layerfs::mount::Driver {
    rbuild_layerfs::mount::Driver::from_env_or(rbuild_layerfs::mount::Driver::Overlay)
        .expect("RBUILD_STORAGE_DRIVER must be overlay, fuse or auto")
}
