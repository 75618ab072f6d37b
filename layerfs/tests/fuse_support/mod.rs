//! Shared helpers for the FUSE driver tests: layer fixtures, mount pairs, tree snapshots.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::fs;
use std::io::Read;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use rbuild_layerfs::mount::{mount_union, Driver, MountSpec, UnionMount};

/// A tiny deterministic PRNG (SplitMix64), so seeds give the same sequence everywhere.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed)
    }
    pub fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
    pub fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
    pub fn bytes(&mut self, n: usize) -> Vec<u8> {
        (0..n).map(|_| self.next() as u8).collect()
    }
}

/// Makes an overlay whiteout at `path`.
pub fn whiteout(path: &Path) {
    rustix::fs::mknodat(
        rustix::fs::CWD,
        path,
        rustix::fs::FileType::CharacterDevice,
        rustix::fs::Mode::empty(),
        0,
    )
    .expect("mknod whiteout");
}

/// Marks a directory opaque.
pub fn opaque(path: &Path) {
    rustix::fs::lsetxattr(
        path,
        "trusted.overlay.opaque",
        b"y",
        rustix::fs::XattrFlags::empty(),
    )
    .expect("set opaque xattr");
}

pub fn write(path: &Path, data: &[u8], mode: u32) {
    if let Some(parent) = path.parent() {
        fs::create_dir_all(parent).expect("create parent");
    }
    fs::write(path, data).expect("write fixture file");
    fs::set_permissions(path, fs::Permissions::from_mode(mode)).expect("chmod fixture");
}

/// Two lower layers exercising whiteouts, an opaque dir, overrides and every file type.
pub fn make_layers(root: &Path) -> Vec<PathBuf> {
    let base = root.join("layer0");
    let top = root.join("layer1");
    for dir in [
        "etc",
        "usr/bin",
        "usr/lib/deep/er",
        "var/cache",
        "opaque/sub",
        "data",
    ] {
        fs::create_dir_all(base.join(dir)).expect("mkdir fixture");
    }
    write(
        &base.join("etc/passwd"),
        b"root:x:0:0::/root:/bin/sh\n",
        0o644,
    );
    write(&base.join("etc/shadow"), b"root:*:1::::::\n", 0o600);
    write(&base.join("usr/bin/tool"), &vec![7u8; 70_000], 0o755);
    write(&base.join("usr/lib/deep/er/lib.so"), b"ELF", 0o644);
    write(&base.join("var/cache/old"), b"stale", 0o644);
    write(&base.join("opaque/sub/hidden"), b"hidden", 0o644);
    write(&base.join("opaque/gone"), b"gone", 0o644);
    write(&base.join("data/a"), b"data a", 0o640);
    write(&base.join("data/b"), b"data b", 0o640);
    std::os::unix::fs::symlink("../etc/passwd", base.join("data/link")).expect("symlink");
    std::os::unix::fs::symlink("usr/bin", base.join("bin")).expect("symlink");
    rustix::fs::mknodat(
        rustix::fs::CWD,
        base.join("data/fifo"),
        rustix::fs::FileType::Fifo,
        rustix::fs::Mode::from_raw_mode(0o644),
        0,
    )
    .expect("mkfifo");

    for dir in ["etc", "opaque", "var", "data", "new/dir"] {
        fs::create_dir_all(top.join(dir)).expect("mkdir fixture");
    }
    write(
        &top.join("etc/passwd"),
        b"root:x:0:0::/root:/bin/ash\n",
        0o644,
    );
    whiteout(&top.join("etc/shadow"));
    whiteout(&top.join("var/cache"));
    opaque(&top.join("opaque"));
    write(&top.join("opaque/visible"), b"visible", 0o644);
    write(&top.join("data/c"), b"data c", 0o600);
    write(&top.join("new/dir/file"), b"new", 0o644);
    vec![base, top]
}

/// What a merged entry looks like, for comparing two mounts.
#[derive(Debug, PartialEq, Eq, Clone)]
pub struct EntryShape {
    pub kind: String,
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
    pub size: u64,
    pub nlink: u64,
    pub content: Vec<u8>,
}

/// Snapshot of the merged tree at `root`: relative path -> shape.
pub fn snapshot(root: &Path) -> BTreeMap<PathBuf, EntryShape> {
    let mut out = BTreeMap::new();
    for entry in walkdir::WalkDir::new(root).sort_by_file_name().min_depth(1) {
        let entry = entry.expect("walk merged tree");
        let meta = entry
            .path()
            .symlink_metadata()
            .unwrap_or_else(|e| panic!("lstat {}: {e}", entry.path().display()));
        let ft = meta.file_type();
        let (kind, content) = if ft.is_dir() {
            ("dir", Vec::new())
        } else if ft.is_symlink() {
            (
                "symlink",
                fs::read_link(entry.path())
                    .expect("readlink")
                    .into_os_string()
                    .into_encoded_bytes(),
            )
        } else if ft.is_file() {
            let mut data = Vec::new();
            fs::File::open(entry.path())
                .and_then(|mut f| f.read_to_end(&mut data))
                .expect("read merged file");
            ("file", data)
        } else {
            ("special", Vec::new())
        };
        out.insert(
            entry
                .path()
                .strip_prefix(root)
                .expect("prefix")
                .to_path_buf(),
            EntryShape {
                kind: kind.to_string(),
                mode: meta.mode(),
                uid: meta.uid(),
                gid: meta.gid(),
                size: if ft.is_dir() { 0 } else { meta.size() },
                nlink: if ft.is_dir() { 0 } else { meta.nlink() },
                content,
            },
        );
    }
    out
}

/// Panics with the first differences between two snapshots.
pub fn assert_same_tree(
    a: &BTreeMap<PathBuf, EntryShape>,
    b: &BTreeMap<PathBuf, EntryShape>,
    context: &str,
) {
    let mut problems = Vec::new();
    for (path, shape) in a {
        match b.get(path) {
            None => problems.push(format!("{}: only on overlay", path.display())),
            Some(other) if other != shape => problems.push(format!(
                "{}: overlay {:?} vs fuse {:?}",
                path.display(),
                (&shape.kind, shape.mode, shape.size, shape.nlink, shape.uid),
                (&other.kind, other.mode, other.size, other.nlink, other.uid)
            )),
            _ => {}
        }
    }
    for path in b.keys() {
        if !a.contains_key(path) {
            problems.push(format!("{}: only on fuse", path.display()));
        }
    }
    assert!(
        problems.is_empty(),
        "{context}: merged trees differ:\n{}",
        problems[..problems.len().min(20)].join("\n")
    );
}

/// A scratch area with an upper, work and mount dir for one mount.
pub struct MountDirs {
    pub upper: PathBuf,
    pub work: PathBuf,
    pub target: PathBuf,
}

impl MountDirs {
    pub fn new(root: &Path, name: &str) -> MountDirs {
        let dirs = MountDirs {
            upper: root.join(name).join("upper"),
            work: root.join(name).join("work"),
            target: root.join(name).join("merged"),
        };
        for d in [&dirs.upper, &dirs.work, &dirs.target] {
            fs::create_dir_all(d).expect("create mount dirs");
        }
        dirs
    }

    pub fn mount(&self, layers: &[PathBuf], driver: Driver) -> UnionMount {
        mount_union(
            &MountSpec {
                layers: layers.to_vec(),
                upper: Some(self.upper.clone()),
                work: Some(self.work.clone()),
                target: self.target.clone(),
            },
            driver,
        )
        .unwrap_or_else(|e| panic!("{driver} mount failed: {e}"))
    }
}
