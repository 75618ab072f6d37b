//! Differential test: one random sequence of file operations applied to a kernel overlay mount
//! and to a FUSE mount of the same layers must give the same results, the same merged tree and
//! the same layer tar from the two upper dirs.

mod fuse_support;

use std::collections::{BTreeMap, HashMap};
use std::fs;
use std::io::{self, Read, Write};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use fuse_support::{assert_same_tree, make_layers, snapshot, MountDirs, Rng};
use rbuild_layerfs::layer::{write_layer, Compression, WriteOptions};
use rbuild_layerfs::mount::Driver;

const NAMES: [&str; 6] = ["a", "b", "c", "dd", "etc", "x"];
const MODES: [u32; 6] = [0o644, 0o600, 0o755, 0o4755, 0o700, 0o640];

/// One file operation, with paths relative to the mount root.
#[derive(Clone)]
enum Op {
    Create(PathBuf, Vec<u8>),
    Write(PathBuf, u64, Vec<u8>),
    Rename(PathBuf, PathBuf),
    Unlink(PathBuf),
    Mkdir(PathBuf),
    Rmdir(PathBuf),
    Symlink(PathBuf, String),
    Link(PathBuf, PathBuf),
    Chmod(PathBuf, u32),
    Truncate(PathBuf, u64),
    /// lchown (extended runs only).
    Chown(PathBuf, u32, u32),
    /// lsetxattr of a user.* name (extended runs only).
    SetXattr(PathBuf, String, Vec<u8>),
    /// rename(2) with RENAME_EXCHANGE (extended runs only).
    Exchange(PathBuf, PathBuf),
}

impl std::fmt::Debug for Op {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Op::Create(p, d) => write!(f, "Create({p:?}, {} bytes)", d.len()),
            Op::Write(p, o, d) => write!(f, "Write({p:?}, at {o}, {} bytes)", d.len()),
            Op::Rename(a, b) => write!(f, "Rename({a:?}, {b:?})"),
            Op::Unlink(p) => write!(f, "Unlink({p:?})"),
            Op::Mkdir(p) => write!(f, "Mkdir({p:?})"),
            Op::Rmdir(p) => write!(f, "Rmdir({p:?})"),
            Op::Symlink(p, t) => write!(f, "Symlink({p:?}, {t:?})"),
            Op::Link(a, b) => write!(f, "Link({a:?}, {b:?})"),
            Op::Chmod(p, m) => write!(f, "Chmod({p:?}, {m:o})"),
            Op::Truncate(p, l) => write!(f, "Truncate({p:?}, {l})"),
            Op::Chown(p, u, g) => write!(f, "Chown({p:?}, {u}:{g})"),
            Op::SetXattr(p, n, v) => write!(f, "SetXattr({p:?}, {n}, {} bytes)", v.len()),
            Op::Exchange(a, b) => write!(f, "Exchange({a:?}, {b:?})"),
        }
    }
}

fn errno(err: io::Error) -> i32 {
    err.raw_os_error().unwrap_or(-1)
}

fn apply(root: &Path, op: &Op) -> Result<(), i32> {
    let p = |rel: &PathBuf| root.join(rel);
    match op {
        // O_NONBLOCK everywhere a file is opened for writing: an exchange or rename may have
        // put the fixture's fifo under a name the (periodically refreshed) listing still takes
        // for a file, and opening a fifo without a reader would wait forever (ENXIO instead).
        Op::Create(path, data) => fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .custom_flags(libc::O_NONBLOCK)
            .open(p(path))
            .and_then(|mut f| f.write_all(data)),
        Op::Write(path, offset, data) => fs::OpenOptions::new()
            .write(true)
            .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK)
            .open(p(path))
            .and_then(|f| f.write_all_at(data, *offset)),
        Op::Rename(from, to) => fs::rename(p(from), p(to)),
        Op::Unlink(path) => fs::remove_file(p(path)),
        Op::Mkdir(path) => fs::create_dir(p(path)),
        Op::Rmdir(path) => fs::remove_dir(p(path)),
        Op::Symlink(path, target) => std::os::unix::fs::symlink(target, p(path)),
        Op::Link(from, to) => fs::hard_link(p(from), p(to)),
        Op::Chmod(path, mode) => fs::set_permissions(p(path), fs::Permissions::from_mode(*mode)),
        Op::Truncate(path, len) => fs::OpenOptions::new()
            .write(true)
            .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK)
            .open(p(path))
            .and_then(|f| f.set_len(*len)),
        Op::Chown(path, uid, gid) => std::os::unix::fs::lchown(p(path), Some(*uid), Some(*gid)),
        Op::SetXattr(path, name, value) => rustix::fs::lsetxattr(
            p(path).as_path(),
            name.as_str(),
            value,
            rustix::fs::XattrFlags::empty(),
        )
        .map_err(io::Error::from),
        Op::Exchange(a, b) => rustix::fs::renameat_with(
            rustix::fs::CWD,
            p(a).as_path(),
            rustix::fs::CWD,
            p(b).as_path(),
            rustix::fs::RenameFlags::EXCHANGE,
        )
        .map_err(io::Error::from),
    }
    .map_err(errno)
}

/// What `mv` does when rename(2) says EXDEV (overlay with redirect_dir=off, for directories
/// that are not purely upper): copy the tree (hard-linking multiply linked files so they keep
/// their identity, as a rename would), then remove the source.
fn move_by_copy(from: &Path, to: &Path) -> io::Result<()> {
    if let Ok(meta) = fs::symlink_metadata(to) {
        if meta.is_dir() {
            fs::remove_dir(to)?;
        } else {
            fs::remove_file(to)?;
        }
    }
    copy_tree(from, to)?;
    fs::remove_dir_all(from)
}

fn copy_tree(from: &Path, to: &Path) -> io::Result<()> {
    let meta = fs::symlink_metadata(from)?;
    let kind = meta.file_type();
    if kind.is_dir() {
        fs::create_dir(to)?;
        for entry in fs::read_dir(from)? {
            let entry = entry?;
            copy_tree(&entry.path(), &to.join(entry.file_name()))?;
        }
    } else if kind.is_symlink() {
        std::os::unix::fs::symlink(fs::read_link(from)?, to)?;
        return std::os::unix::fs::lchown(to, Some(meta.uid()), Some(meta.gid()));
    } else if kind.is_file() && meta.nlink() > 1 {
        return fs::hard_link(from, to);
    } else if kind.is_file() {
        fs::copy(from, to)?;
    } else {
        rustix::fs::mknodat(
            rustix::fs::CWD,
            to,
            rustix::fs::FileType::Fifo,
            rustix::fs::Mode::empty(),
            0,
        )?;
    }
    // What `mv` keeps when it copies (as root): owner, xattrs, then the mode.
    std::os::unix::fs::lchown(to, Some(meta.uid()), Some(meta.gid()))?;
    let mut names = vec![0u8; 4096];
    let n = rustix::fs::llistxattr(from, &mut names)?;
    for name in names[..n]
        .split(|&b| b == 0)
        .filter(|n| n.starts_with(b"user."))
    {
        let name = std::ffi::OsStr::from_bytes(name);
        let mut value = vec![0u8; 65536];
        let len = rustix::fs::lgetxattr(from, name, &mut value)?;
        rustix::fs::lsetxattr(to, name, &value[..len], rustix::fs::XattrFlags::empty())?;
    }
    fs::set_permissions(to, fs::Permissions::from_mode(meta.mode() & 0o7777))
}

/// Entries of the merged tree: (path, is_dir, is_regular_file), root first.
fn listing(root: &Path) -> Vec<(PathBuf, bool, bool)> {
    let mut out = vec![(PathBuf::new(), true, false)];
    for entry in walkdir::WalkDir::new(root).sort_by_file_name().min_depth(1) {
        let Ok(entry) = entry else { continue };
        let ft = entry.file_type();
        let rel = entry
            .path()
            .strip_prefix(root)
            .expect("prefix")
            .to_path_buf();
        out.push((rel, ft.is_dir(), ft.is_file()));
    }
    out
}

/// A random operation on the entries of `list`; `extended` adds chown, setxattr and
/// RENAME_EXCHANGE.
fn random_op(rng: &mut Rng, list: &[(PathBuf, bool, bool)], extended: bool) -> Op {
    let dirs: Vec<&PathBuf> = list.iter().filter(|e| e.1).map(|e| &e.0).collect();
    let files: Vec<&PathBuf> = list.iter().filter(|e| e.2).map(|e| &e.0).collect();
    let any: Vec<&PathBuf> = list.iter().skip(1).map(|e| &e.0).collect();
    let pick = |rng: &mut Rng, v: &[&PathBuf]| -> PathBuf {
        if v.is_empty() {
            PathBuf::from("missing")
        } else {
            v[rng.below(v.len())].clone()
        }
    };
    let new_name = |rng: &mut Rng, dirs: &[&PathBuf]| -> PathBuf {
        let dir = dirs[rng.below(dirs.len())].clone();
        dir.join(NAMES[rng.below(NAMES.len())])
    };
    match rng.below(if extended { 24 } else { 20 }) {
        0..=3 => {
            let len = [0, 1, 100, 4096, 5000, 70_000][rng.below(6)];
            Op::Create(new_name(rng, &dirs), rng.bytes(len))
        }
        4..=6 => {
            let len = 1 + rng.below(3000);
            Op::Write(pick(rng, &files), rng.below(8000) as u64, rng.bytes(len))
        }
        7..=8 => {
            let from = if rng.below(3) == 0 {
                pick(rng, &dirs[1.min(dirs.len())..])
            } else {
                pick(rng, &any)
            };
            Op::Rename(from, new_name(rng, &dirs))
        }
        9..=10 => Op::Unlink(pick(rng, &any)),
        11..=12 => Op::Mkdir(new_name(rng, &dirs)),
        13 => Op::Rmdir(pick(rng, &dirs[1.min(dirs.len())..])),
        14 => {
            let target = NAMES[rng.below(NAMES.len())].to_string();
            Op::Symlink(new_name(rng, &dirs), target)
        }
        15 => Op::Link(pick(rng, &files), new_name(rng, &dirs)),
        16..=17 => Op::Chmod(pick(rng, &any), MODES[rng.below(MODES.len())]),
        18..=19 => Op::Truncate(pick(rng, &files), rng.below(9000) as u64),
        20..=21 => Op::Chown(
            pick(rng, &any),
            [0, 1, 1000][rng.below(3)],
            [0, 50][rng.below(2)],
        ),
        22 => {
            let name = ["user.a", "user.b"][rng.below(2)].to_string();
            let len = rng.below(40);
            Op::SetXattr(pick(rng, &any), name, rng.bytes(len))
        }
        _ => Op::Exchange(pick(rng, &any), pick(rng, &any)),
    }
}

/// (path, type, mode, uid, size, link target, content hash) of every tar entry.
fn tar_listing(upper: &Path) -> (String, BTreeMap<String, String>) {
    let mut tar = Vec::new();
    let opts = WriteOptions {
        compression: Compression::None,
        mtime_clamp: Some(0),
    };
    let info = write_layer(upper, &opts, &mut tar).expect("write layer from upper dir");
    let mut entries = BTreeMap::new();
    let mut archive = tar::Archive::new(&tar[..]);
    for entry in archive.entries().expect("read tar") {
        let mut entry = entry.expect("tar entry");
        let header = entry.header().clone();
        let path = entry.path().expect("tar path").display().to_string();
        let link = entry
            .link_name()
            .ok()
            .flatten()
            .map(|l| l.display().to_string());
        let mut xattrs = Vec::new();
        if let Ok(Some(pax)) = entry.pax_extensions() {
            for ext in pax.flatten() {
                if let Ok(key) = ext.key() {
                    if key.starts_with("SCHILY.xattr.") {
                        xattrs.push(format!("{key}={:?}", ext.value_bytes()));
                    }
                }
            }
        }
        let mut data = Vec::new();
        entry.read_to_end(&mut data).expect("tar data");
        entries.insert(
            path,
            format!(
                "{:?} mode={:o} uid={:?} gid={:?} size={} link={:?} data={} xattrs={xattrs:?}",
                header.entry_type(),
                header.mode().unwrap_or(0),
                header.uid().ok(),
                header.gid().ok(),
                data.len(),
                link,
                rbuild_layerfs::Digest::of_bytes(&data).short()
            ),
        );
    }
    (info.diff_id.to_string(), entries)
}

fn run_differential(seed: u64, steps: usize) {
    let tmp = tempfile::tempdir().expect("tempdir");
    run_differential_in(seed, steps, tmp.path(), tmp.path(), false);
}

/// [`run_differential`] with the layers and overlay's dirs below `root` and FUSE's upper,
/// work and mount dirs below `fuse_root`; `extended` adds hard links to the lowest layer and
/// chown, setxattr and RENAME_EXCHANGE to the operations.
fn run_differential_in(seed: u64, steps: usize, root: &Path, fuse_root: &Path, extended: bool) {
    let layers = make_layers(root);
    if extended {
        // Names of one lower file, in one directory and across directories.
        let base = &layers[0];
        for (from, to) in [
            ("data/a", "data/a2"),
            ("data/a", "usr/bin/a3"),
            ("usr/bin/tool", "usr/bin/tool2"),
            ("usr/lib/deep/er/lib.so", "data/lib.so"),
        ] {
            fs::hard_link(base.join(from), base.join(to)).expect("lower hard link");
        }
    }
    let ovl_dirs = MountDirs::new(root, "overlay");
    let fuse_dirs = MountDirs::new(fuse_root, "fuse");
    {
        let ovl = ovl_dirs.mount(&layers, Driver::Overlay);
        let fuse = fuse_dirs.mount(&layers, Driver::Fuse);
        let (o, f) = (ovl.target().to_path_buf(), fuse.target().to_path_buf());
        let mut rng = Rng::new(seed);
        let mut list = listing(&o);
        let mut outcomes: HashMap<String, usize> = HashMap::new();
        let mut history = Vec::new();
        for step in 0..steps {
            if step % 8 == 0 {
                list = listing(&o);
            }
            let op = random_op(&mut rng, &list, extended);
            let on_fuse = apply(&f, &op);
            let mut on_overlay = apply(&o, &op);
            // Overlay (redirect_dir=off) refuses to rename merged directories with EXDEV before
            // looking at the target; `mv` then copies and deletes. The FUSE driver renames them
            // itself, so it either succeeds (then do what mv does on overlay) or fails on a
            // check overlay never reached (then neither side changed).
            if let (Op::Rename(from, to), Err(libc::EXDEV)) = (&op, on_overlay) {
                if on_fuse.is_ok() {
                    move_by_copy(&o.join(from), &o.join(to)).expect("mv fallback on overlay");
                }
                on_overlay = on_fuse;
            }
            history.push(format!("{step}: {op:?} -> {on_fuse:?}"));
            if on_overlay != on_fuse {
                let upper_state = |dirs: &MountDirs| {
                    std::process::Command::new("sh")
                        .arg("-c")
                        .arg("find . -exec ls -ld {} + ; getfattr -R -d -m trusted . 2>/dev/null")
                        .current_dir(&dirs.upper)
                        .output()
                        .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
                        .unwrap_or_default()
                };
                panic!(
                    "seed {seed} step {step}: {op:?} gave {on_overlay:?} on overlay, {on_fuse:?} on fuse\nhistory:\n{}\noverlay upper:\n{}\nfuse upper:\n{}",
                    history.join("\n"),
                    upper_state(&ovl_dirs),
                    upper_state(&fuse_dirs)
                );
            }
            let name = format!("{op:?}")
                .split('(')
                .next()
                .unwrap_or("")
                .to_string();
            *outcomes
                .entry(format!(
                    "{name} {}",
                    if on_fuse.is_ok() { "ok" } else { "err" }
                ))
                .or_default() += 1;
            if std::env::var_os("FUSE_DIFF_EVERY_STEP").is_some() {
                eprintln!("{step}: {op:?} -> {on_fuse:?}");
            }
            if std::env::var_os("FUSE_DIFF_EVERY_STEP").is_some() {
                let (a, b) = (
                    tar_listing(&ovl_dirs.upper).1,
                    tar_listing(&fuse_dirs.upper).1,
                );
                let keys = |m: &BTreeMap<String, String>| -> Vec<String> {
                    m.keys().filter(|k| k.contains(".wh.")).cloned().collect()
                };
                assert_eq!(
                    keys(&a),
                    keys(&b),
                    "seed {seed} step {step}: whiteout/opaque markers differ"
                );
            }
            if step % 500 == 499 || std::env::var_os("FUSE_DIFF_EVERY_STEP").is_some() {
                assert_same_tree(
                    &snapshot(&o),
                    &snapshot(&f),
                    &format!("seed {seed} step {step}"),
                );
            }
        }
        assert_same_tree(&snapshot(&o), &snapshot(&f), &format!("seed {seed} end"));
        // The run must have exercised every operation successfully.
        let extra: &[&str] = if extended {
            &["Chown", "SetXattr", "Exchange"]
        } else {
            &[]
        };
        for name in [
            "Create", "Write", "Rename", "Unlink", "Mkdir", "Rmdir", "Symlink", "Link", "Chmod",
            "Truncate",
        ]
        .iter()
        .chain(extra)
        {
            assert!(
                outcomes.get(&format!("{name} ok")).copied().unwrap_or(0) > 0,
                "seed {seed}: no successful {name} in {outcomes:?}"
            );
        }
    }
    let (ovl_id, ovl_tar) = tar_listing(&ovl_dirs.upper);
    let (fuse_id, fuse_tar) = tar_listing(&fuse_dirs.upper);
    if ovl_id != fuse_id {
        let mut diffs = Vec::new();
        for (path, desc) in &ovl_tar {
            if fuse_tar.get(path) != Some(desc) {
                diffs.push(format!(
                    "{path}: overlay {desc} / fuse {:?}",
                    fuse_tar.get(path)
                ));
            }
        }
        for (path, desc) in &fuse_tar {
            if !ovl_tar.contains_key(path) {
                diffs.push(format!("{path}: only fuse {desc}"));
            }
        }
        panic!(
            "seed {seed}: layer tars differ ({ovl_id} vs {fuse_id}):\n{}",
            diffs[..diffs.len().min(30)].join("\n")
        );
    }
}

#[test]
fn random_operations_match_overlay_seed_1() {
    run_differential(1, 3000);
}

#[test]
fn random_operations_match_overlay_seed_2() {
    run_differential(0x5eed_0002, 3000);
}

#[test]
fn random_operations_match_overlay_seed_3() {
    run_differential(0xdead_beef, 3000);
}

/// Lower files with several names (their links split at copy-up), chown, xattrs and
/// RENAME_EXCHANGE on top of the usual operations; the layer tars also compare owners and
/// xattrs.
#[test]
fn random_operations_match_overlay_with_lower_hard_links_chown_xattrs_and_exchange() {
    let tmp = tempfile::tempdir().expect("tempdir");
    run_differential_in(0xc0ff_ee06, 3000, tmp.path(), tmp.path(), true);
}

/// The extended run whose layer tars once differed by the order of two xattrs.
#[test]
fn random_operations_match_overlay_with_lower_hard_links_chown_xattrs_and_exchange_2() {
    let tmp = tempfile::tempdir().expect("tempdir");
    run_differential_in(261_327, 3000, tmp.path(), tmp.path(), true);
}

/// FUSE's upper dir on overlayfs (a store in a container), where whiteouts are xattr
/// whiteouts because overlayfs refuses whiteout devices: the same results, merged tree and
/// layer tar as overlay with its upper dir on a plain filesystem.
#[test]
fn random_operations_match_overlay_with_the_fuse_upper_dir_on_overlayfs() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let host_dirs = MountDirs::new(tmp.path(), "host");
    let host_lower = tmp.path().join("host/lower");
    fs::create_dir(&host_lower).expect("create the host overlay's lower dir");
    let host = host_dirs.mount(&[host_lower], Driver::Overlay);
    run_differential_in(0x0f5_0f5, 3000, tmp.path(), host.target(), false);
    let xattr_whiteouts = walkdir::WalkDir::new(host.target().join("fuse/upper"))
        .into_iter()
        .filter_map(Result::ok)
        .filter(|e| {
            e.file_type().is_file()
                && rustix::fs::lgetxattr_query(e.path(), "trusted.overlay.whiteout").is_ok()
        })
        .count();
    assert!(xattr_whiteouts > 0, "the run made no xattr whiteouts");
    host.unmount().expect("unmount the host overlay");
}
