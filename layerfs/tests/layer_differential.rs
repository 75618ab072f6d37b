//! Differential test: changes made through a real overlay mount, snapshotted with write_layer
//! and applied with apply_layer, must give the same merged tree as the mount itself. The mounts
//! use the driver named by RBUILD_STORAGE_DRIVER when set (CI runs this file again with `fuse`).

mod common;

use std::ffi::OsStr;
use std::fs;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{symlink, PermissionsExt};
use std::path::{Path, PathBuf};

use common::{assert_same_tree, snapshot};
use rbuild_layerfs::layer::{apply_layer, write_layer, ApplyLimits, Compression, WriteOptions};
use rbuild_layerfs::mount::{mount_union, MountSpec, UnionMount};
use rustix::fs::XattrFlags;

/// A vfs_cap_data v2 value granting cap_net_raw (bit 13), effective.
const CAP_NET_RAW: [u8; 20] = [
    0x01, 0x00, 0x00, 0x02, 0x00, 0x20, 0x00, 0x00, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
];

fn mkdirs(base: &Path, names: &[&str]) -> Vec<PathBuf> {
    names
        .iter()
        .map(|n| {
            let p = base.join(n);
            fs::create_dir_all(&p).unwrap();
            p
        })
        .collect()
}

fn mount(layers: &[PathBuf], upper: Option<(&Path, &Path)>, target: &Path) -> UnionMount {
    let spec = MountSpec {
        layers: layers.to_vec(),
        upper: upper.map(|u| u.0.to_path_buf()),
        work: upper.map(|u| u.1.to_path_buf()),
        target: target.to_path_buf(),
    };
    mount_union(&spec, common::storage_driver()).unwrap()
}

/// Renames, falling back to copy + delete where overlay (redirect_dir=off) says EXDEV, as
/// `mv` does.
fn move_path(from: &Path, to: &Path) {
    match fs::rename(from, to) {
        Ok(()) => {}
        Err(e) if e.raw_os_error() == Some(libc::EXDEV) => {
            let status = std::process::Command::new("cp")
                .arg("-a")
                .arg(from)
                .arg(to)
                .status()
                .unwrap();
            assert!(status.success());
            fs::remove_dir_all(from).unwrap();
        }
        Err(e) => panic!("rename {from:?}: {e}"),
    }
}

/// The base layer, written directly.
fn make_base(l0: &Path) {
    let p = |s: &str| l0.join(s);
    fs::create_dir_all(p("a/sub/deeper")).unwrap();
    fs::write(p("a/1"), b"a1").unwrap();
    fs::write(p("a/2"), b"a2").unwrap();
    fs::write(p("a/sub/x"), b"x").unwrap();
    fs::write(p("a/sub/deeper/y"), b"y").unwrap();
    fs::write(p("b"), b"b").unwrap();
    fs::create_dir(p("c")).unwrap();
    fs::write(p("c/keep-me-not"), b"c").unwrap();
    fs::write(p("c/also-gone"), b"c").unwrap();
    symlink("a", p("d")).unwrap();
    fs::write(p("e"), b"file that becomes a dir").unwrap();
    fs::create_dir_all(p("f/inner")).unwrap();
    fs::write(p("f/inner/z"), b"dir that becomes a file").unwrap();
    fs::write(p("g"), b"renamed file").unwrap();
    fs::create_dir_all(p("h/hh")).unwrap();
    fs::write(p("h/hh/content"), b"renamed dir").unwrap();
    symlink("b", p("link1")).unwrap();
    symlink("/nonexistent/target", p("dangling")).unwrap();
    fs::write(p("log"), b"line1\n").unwrap();
    fs::create_dir(p("shadowed")).unwrap();
    fs::write(p("shadowed/base-only"), b"base").unwrap();
}

/// The second layer, made through an overlay mount over the base.
fn make_second(merged: &Path) {
    let p = |s: &str| merged.join(s);
    fs::write(p("a/3"), b"a3 from l1").unwrap();
    fs::write(p("b"), b"b rewritten in l1").unwrap();
    fs::remove_file(p("a/sub/x")).unwrap();
    fs::create_dir(p("only-l1")).unwrap();
    fs::write(p("only-l1/file"), b"l1").unwrap();
    fs::write(p("shadowed/l1-only"), b"l1").unwrap();
    rustix::fs::lsetxattr(p("log"), "user.origin", b"l1", XattrFlags::empty()).unwrap();
}

/// The changes whose layer is under test.
fn make_changes(merged: &Path) {
    let p = |s: &str| merged.join(s);
    // Deletions: a file, a whole directory tree, a symlink, a file only in l1.
    fs::remove_file(p("a/1")).unwrap();
    fs::remove_dir_all(p("a/sub")).unwrap();
    fs::remove_file(p("link1")).unwrap();
    fs::remove_file(p("dangling")).unwrap();
    fs::remove_file(p("only-l1/file")).unwrap();
    // Replaced directories: dir -> file, file -> dir, symlink -> dir.
    fs::remove_dir_all(p("f")).unwrap();
    fs::write(p("f"), b"now a file").unwrap();
    fs::remove_file(p("e")).unwrap();
    fs::create_dir(p("e")).unwrap();
    fs::write(p("e/inner"), b"now a dir").unwrap();
    fs::remove_file(p("d")).unwrap();
    fs::create_dir(p("d")).unwrap();
    // A directory emptied and refilled (opaque in the upper dir).
    fs::remove_dir_all(p("c")).unwrap();
    fs::create_dir(p("c")).unwrap();
    fs::write(p("c/new"), b"fresh").unwrap();
    // A directory whose lower content is hidden while lower layers contribute siblings.
    fs::remove_dir_all(p("shadowed")).unwrap();
    fs::create_dir(p("shadowed")).unwrap();
    // Renames of a file and of a directory.
    move_path(&p("g"), &p("g2"));
    move_path(&p("h"), &p("h2"));
    // Metadata-only changes (copy-up).
    fs::set_permissions(p("a/2"), fs::Permissions::from_mode(0o600)).unwrap();
    std::os::unix::fs::chown(p("b"), Some(1234), Some(5678)).unwrap();
    rustix::fs::lsetxattr(p("a/2"), "user.test", b"v", XattrFlags::empty()).unwrap();
    // Content change of a file with an xattr from l1.
    let mut log = fs::read(p("log")).unwrap();
    log.extend_from_slice(b"line2\n");
    fs::write(p("log"), log).unwrap();
    // New entries of every kind.
    fs::create_dir_all(p("usr/bin")).unwrap();
    fs::write(p("usr/bin/pinger"), b"binary").unwrap();
    fs::set_permissions(p("usr/bin/pinger"), fs::Permissions::from_mode(0o4711)).unwrap();
    rustix::fs::lsetxattr(
        p("usr/bin/pinger"),
        "security.capability",
        &CAP_NET_RAW,
        XattrFlags::empty(),
    )
    .unwrap();
    fs::write(p("usr/n1"), b"linked").unwrap();
    fs::hard_link(p("usr/n1"), p("usr/n2")).unwrap();
    symlink("/etc/passwd", p("usr/abs")).unwrap();
    symlink("../a/2", p("usr/rel")).unwrap();
    rustix::fs::mknodat(
        rustix::fs::CWD,
        p("usr/fifo"),
        rustix::fs::FileType::Fifo,
        rustix::fs::Mode::from_raw_mode(0o620),
        0,
    )
    .unwrap();
    rustix::fs::mknodat(
        rustix::fs::CWD,
        p("usr/null"),
        rustix::fs::FileType::CharacterDevice,
        rustix::fs::Mode::from_raw_mode(0o666),
        rustix::fs::makedev(1, 3),
    )
    .unwrap();
    fs::write(merged.join(OsStr::from_bytes(b"usr/caf\xe9")), b"latin1").unwrap();
    let long = "x".repeat(120);
    fs::create_dir_all(p(&format!("usr/{long}"))).unwrap();
    fs::write(p(&format!("usr/{long}/{long}")), b"long path").unwrap();
}

#[test]
fn layer_of_overlay_changes_reproduces_the_merged_view() {
    for compression in [Compression::Gzip, Compression::Zstd] {
        let tmp = tempfile::tempdir().unwrap();
        let dirs = mkdirs(
            tmp.path(),
            &["l0", "u1", "w1", "u2", "w2", "m", "l2", "view"],
        );
        let [l0, u1, w1, u2, w2, m, _, view] = &dirs[..] else {
            unreachable!()
        };
        make_base(l0);
        {
            let mount1 = mount(std::slice::from_ref(l0), Some((u1, w1)), m);
            make_second(mount1.target());
        }
        let lowers = vec![l0.clone(), u1.clone()];
        let merged_snapshot = {
            let mount2 = mount(&lowers, Some((u2, w2)), m);
            make_changes(mount2.target());
            snapshot(mount2.target())
        };
        // Sanity: the changes are what the test intends.
        assert!(merged_snapshot.contains_key(&b"c/new"[..]));
        assert!(!merged_snapshot.contains_key(&b"c/also-gone"[..]));
        assert!(!merged_snapshot.contains_key(&b"shadowed/l1-only"[..]));
        assert!(!merged_snapshot.contains_key(&b"h"[..]));

        let mut blob = Vec::new();
        let info = write_layer(
            u2,
            &WriteOptions {
                compression,
                mtime_clamp: None,
            },
            &mut blob,
        )
        .unwrap();
        let applied = tmp.path().join("applied");
        let stats = apply_layer(&blob[..], &applied, &ApplyLimits::default()).unwrap();
        assert_eq!(stats.diff_id, info.diff_id);
        assert!(stats.whiteouts >= 5, "{stats:?}");
        assert!(stats.opaque_dirs >= 2, "{stats:?}");

        // The applied dir is the upper dir again (overlay's private bookkeeping aside).
        assert_same_tree(&snapshot(u2), &snapshot(&applied));

        // And the applied layer on the same lower layers gives the merged view.
        let applied_view = {
            let mount3 = mount(&[l0.clone(), u1.clone(), applied.clone()], None, view);
            snapshot(mount3.target())
        };
        assert_same_tree(&merged_snapshot, &applied_view);
    }
}
