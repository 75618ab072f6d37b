//! Layers and upper dirs that live on overlayfs, as when rbuild's store sits on a container's
//! overlay root (run as root, real kernel >= 6.7). Overlayfs refuses whiteout devices in its own
//! tree (`mknod c 0 0` is EPERM), so the applier and the FUSE driver write xattr whiteouts there
//! instead (zero-size files with `trusted.overlay.whiteout` in directories marked
//! `trusted.overlay.opaque=x`). Checked: the applied layer and the FUSE upper dir hold that form
//! (escaped one level down, as the kernel nests overlay xattrs); kernel overlay mounts of those
//! layers and FUSE mounts both hide what they delete; the layer writer turns them back into the
//! same OCI tar as the whiteout devices on a plain filesystem.
//!
//! Each test picks its drivers itself, so scripts/test leaves this binary out of its FUSE pass.

mod common;
mod fuse_support;

use std::collections::BTreeSet;
use std::fs;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};

use common::RawTar;
use fuse_support::{assert_same_tree, make_layers, snapshot, MountDirs};
use rbuild_layerfs::layer::{apply_layer, write_layer, ApplyLimits, Compression, WriteOptions};
use rbuild_layerfs::mount::{mount_union, Driver, MountSpec, UnionMount};
use rbuild_layerfs::Digest;

const WHITEOUT_XATTR: &str = "trusted.overlay.whiteout";
const OPAQUE_XATTR: &str = "trusted.overlay.opaque";

/// An overlay mount standing in for a container's root filesystem; the tests put their layers,
/// upper dirs and mount points below [`HostOverlay::root`]. Unmounted (lazily) on drop; mounts
/// made inside it are declared after it, so they are dropped first.
struct HostOverlay {
    mount: Option<UnionMount>,
    tmp: tempfile::TempDir,
}

impl HostOverlay {
    fn new() -> HostOverlay {
        let tmp = tempfile::tempdir().expect("temp dir");
        let dir = |name: &str| {
            let p = tmp.path().join(name);
            fs::create_dir_all(&p).expect("create host overlay dir");
            p
        };
        let spec = MountSpec {
            layers: vec![dir("lower")],
            upper: Some(dir("upper")),
            work: Some(dir("work")),
            target: dir("merged"),
        };
        let mount = mount_union(&spec, Driver::Overlay).expect("mount the host overlay");
        HostOverlay {
            mount: Some(mount),
            tmp,
        }
    }

    /// The merged view: a directory on overlayfs.
    fn root(&self) -> &Path {
        self.mount.as_ref().expect("mounted").target()
    }

    /// Where the host overlay really stores what is written below [`HostOverlay::root`].
    fn real_upper(&self) -> PathBuf {
        self.tmp.path().join("upper")
    }
}

impl Drop for HostOverlay {
    fn drop(&mut self) {
        if let Some(mount) = self.mount.take() {
            if let Err(e) = mount.unmount() {
                eprintln!("unmounting the host overlay: {e}");
            }
        }
    }
}

fn xattr(path: &Path, name: &str) -> Option<Vec<u8>> {
    let mut value = vec![0u8; 64];
    let n = rustix::fs::lgetxattr(path, name, &mut value[..]).ok()?;
    value.truncate(n);
    Some(value)
}

/// Asserts `path` is an xattr whiteout: a zero-size regular file with mode 0 and the whiteout
/// xattr, in a directory marked `x`.
fn assert_xattr_whiteout(path: &Path) {
    let md = fs::symlink_metadata(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    assert!(
        md.is_file() && md.len() == 0 && md.mode() & 0o7777 == 0,
        "{}: not a zero-size mode-0 file: {md:?}",
        path.display()
    );
    assert!(
        xattr(path, WHITEOUT_XATTR).is_some(),
        "{}: no {WHITEOUT_XATTR}",
        path.display()
    );
    let dir = path.parent().expect("parent");
    assert_eq!(
        xattr(dir, OPAQUE_XATTR).as_deref(),
        Some(&b"x"[..]),
        "{}: not marked as holding xattr whiteouts",
        dir.display()
    );
}

fn assert_device_whiteout(path: &Path) {
    let md = fs::symlink_metadata(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    assert!(
        md.file_type().is_char_device() && md.rdev() == 0,
        "{}: not a whiteout device",
        path.display()
    );
}

fn names(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| {
            e.expect("dir entry")
                .file_name()
                .to_string_lossy()
                .into_owned()
        })
        .collect();
    v.sort();
    v
}

/// Writes `dir` as an uncompressed layer with every mtime clamped; returns the diff ID, the
/// entry names and the tar bytes.
fn layer_tar(dir: &Path) -> (Digest, BTreeSet<String>, Vec<u8>) {
    let opts = WriteOptions {
        compression: Compression::None,
        mtime_clamp: Some(1_000_000_000),
    };
    let mut bytes = Vec::new();
    let info = write_layer(dir, &opts, &mut bytes)
        .unwrap_or_else(|e| panic!("write layer of {}: {e}", dir.display()));
    let mut archive = tar::Archive::new(&bytes[..]);
    let entries = archive
        .entries()
        .expect("read written tar")
        .map(|e| {
            let e = e.expect("tar entry");
            String::from_utf8_lossy(&e.path_bytes())
                .trim_end_matches('/')
                .to_string()
        })
        .collect();
    (info.diff_id, entries, bytes)
}

fn assert_no_overlay_xattrs(tar: &[u8]) {
    assert!(
        !tar.windows(8).any(|w| w == b"overlay."),
        "overlay xattrs leaked into a layer tar"
    );
}

fn read_only(layers: Vec<PathBuf>, target: PathBuf) -> MountSpec {
    fs::create_dir_all(&target).expect("create mount point");
    MountSpec {
        layers,
        upper: None,
        work: None,
        target,
    }
}

fn base_tar() -> Vec<u8> {
    RawTar::new()
        .file(b"gone", b"1")
        .file(b"kept", b"2")
        .dir(b"dir")
        .file(b"dir/gone", b"3")
        .file(b"dir/kept", b"4")
        .dir(b"opq")
        .file(b"opq/old", b"5")
        .dir(b"deep")
        .dir(b"deep/sub")
        .file(b"deep/sub/gone", b"6")
        .file(b"deep/sub/kept", b"7")
        .finish()
}

fn top_tar() -> Vec<u8> {
    RawTar::new()
        .file(b".wh.gone", b"")
        .file(b"dir/.wh.gone", b"")
        .dir(b"opq")
        .file(b"opq/.wh..wh..opq", b"")
        .file(b"opq/new", b"8")
        // No entries for the parents: the applier creates them.
        .file(b"deep/sub/.wh.gone", b"")
        .finish()
}

#[test]
fn layers_applied_on_overlayfs_get_xattr_whiteouts_that_overlay_and_fuse_mounts_honour() {
    let host = HostOverlay::new();
    let limits = ApplyLimits::default();
    let base = host.root().join("layers/base");
    let top = host.root().join("layers/top");
    fs::create_dir_all(host.root().join("layers")).expect("create layers dir");
    apply_layer(&base_tar()[..], &base, &limits).expect("apply the base layer");
    let stats = apply_layer(&top_tar()[..], &top, &limits).expect("apply a layer with whiteouts");
    assert_eq!((stats.whiteouts, stats.opaque_dirs), (3, 1));

    for deleted in ["gone", "dir/gone", "deep/sub/gone"] {
        assert_xattr_whiteout(&top.join(deleted));
    }
    assert_eq!(
        xattr(&top.join("opq"), OPAQUE_XATTR).as_deref(),
        Some(&b"y"[..])
    );
    assert_eq!(xattr(&top.join("deep"), OPAQUE_XATTR), None);
    // Below the host overlay the markers are escaped, so the host overlay itself ignores them.
    let real_top = host.real_upper().join("layers/top");
    assert!(xattr(&real_top.join("gone"), "trusted.overlay.overlay.whiteout").is_some());
    assert_eq!(
        xattr(&real_top, "trusted.overlay.overlay.opaque").as_deref(),
        Some(&b"x"[..])
    );

    // The kernel (read-only mounts of layers on overlayfs are allowed) and the FUSE driver
    // show the same merged tree, without the deleted files and without the whiteouts.
    for driver in [Driver::Overlay, Driver::Fuse] {
        let target = host.root().join(format!("view-{driver}"));
        let mount = mount_union(&read_only(vec![base.clone(), top.clone()], target), driver)
            .unwrap_or_else(|e| panic!("{driver} mount of layers on overlayfs: {e}"));
        assert_eq!(mount.driver(), driver);
        let view = mount.target();
        assert_eq!(names(view), ["deep", "dir", "kept", "opq"], "{driver}");
        assert_eq!(names(&view.join("dir")), ["kept"], "{driver}");
        assert_eq!(names(&view.join("opq")), ["new"], "{driver}");
        assert_eq!(names(&view.join("deep/sub")), ["kept"], "{driver}");
        for deleted in ["gone", "dir/gone", "deep/sub/gone", "opq/old"] {
            let err = fs::symlink_metadata(view.join(deleted)).expect_err(deleted);
            assert_eq!(
                err.raw_os_error(),
                Some(libc::ENOENT),
                "{driver}: {deleted}"
            );
        }
        assert_eq!(fs::read(view.join("deep/sub/kept")).expect("kept"), b"7");
        mount.unmount().expect("unmount the view");
    }

    // The same layer applied on a plain filesystem gets whiteout devices; both forms are
    // written back as the same OCI tar.
    let plain = tempfile::tempdir().expect("temp dir");
    let plain_top = plain.path().join("top");
    apply_layer(&top_tar()[..], &plain_top, &limits).expect("apply on a plain filesystem");
    assert_device_whiteout(&plain_top.join("dir/gone"));
    let (on_overlayfs, entries, tar) = layer_tar(&top);
    let (on_plain, plain_entries, _) = layer_tar(&plain_top);
    for expected in [
        ".wh.gone",
        "dir/.wh.gone",
        "deep/sub/.wh.gone",
        "opq/.wh..wh..opq",
    ] {
        assert!(
            entries.contains(expected),
            "{expected} missing: {entries:?}"
        );
    }
    assert_eq!(entries, plain_entries);
    assert_eq!(
        on_overlayfs, on_plain,
        "the two whiteout forms give different tars"
    );
    assert_no_overlay_xattrs(&tar);
}

/// Deletes, renames and re-creates lower entries of the `fuse_support::make_layers` fixture,
/// including entries over whiteouts the mount made itself. A merged directory is moved with
/// `mv`, which copies it where overlayfs refuses the rename (EXDEV) and renames it on FUSE.
fn change_lower_entries(root: &Path) {
    let p = |rel: &str| root.join(rel);
    let step = |what: &str, result: std::io::Result<()>| {
        result.unwrap_or_else(|e| panic!("{} on {}: {e}", what, root.display()))
    };
    step("rm data/a", fs::remove_file(p("data/a")));
    step("mv data/b moved-b", fs::rename(p("data/b"), p("moved-b")));
    step("rm usr/bin/tool", fs::remove_file(p("usr/bin/tool")));
    step("rm -r usr/lib", fs::remove_dir_all(p("usr/lib")));
    step("rm -r opaque", fs::remove_dir_all(p("opaque")));
    step("mkdir opaque", fs::create_dir(p("opaque")));
    step("write opaque/again", fs::write(p("opaque/again"), b"again"));
    step("write data/a", fs::write(p("data/a"), b"back"));
    step("rm etc/passwd", fs::remove_file(p("etc/passwd")));
    step("mv data/c data/c2", fs::rename(p("data/c"), p("data/c2")));
    step("write fresh", fs::write(p("fresh"), b"fresh"));
    step("rm fresh", fs::remove_file(p("fresh")));
    step("rm bin", fs::remove_file(p("bin")));
    step("rm data/fifo", fs::remove_file(p("data/fifo")));
    step(
        "mv new/dir/file new/file2",
        fs::rename(p("new/dir/file"), p("new/file2")),
    );
    step("rm -r new/dir", fs::remove_dir_all(p("new/dir")));
    // Over whiteouts this mount made: a rename, a merged directory's move (its whiteouts
    // must not travel), a hard link and a symlink.
    step("mv moved-b data/b", fs::rename(p("moved-b"), p("data/b")));
    let mv = std::process::Command::new("mv")
        .arg(p("data"))
        .arg(p("data2"))
        .status()
        .expect("run mv");
    assert!(mv.success(), "mv data data2 on {}", root.display());
    step(
        "ln data2/b usr/bin/tool",
        fs::hard_link(p("data2/b"), p("usr/bin/tool")),
    );
    step(
        "ln -s usr/bin bin",
        std::os::unix::fs::symlink("usr/bin", p("bin")),
    );
}

#[test]
fn fuse_with_its_upper_dir_on_overlayfs_deletes_and_renames_lower_files_like_overlay() {
    let plain = tempfile::tempdir().expect("temp dir");
    let layers = make_layers(plain.path());
    // Reference: kernel overlay with its upper dir on a plain filesystem.
    let reference_dirs = MountDirs::new(plain.path(), "overlay");
    let reference = reference_dirs.mount(&layers, Driver::Overlay);
    change_lower_entries(reference.target());
    let want = snapshot(reference.target());
    reference.unmount().expect("unmount the reference");

    let host = HostOverlay::new();
    let fuse_dirs = MountDirs::new(host.root(), "fuse");
    let fuse = fuse_dirs.mount(&layers, Driver::Auto);
    assert_eq!(
        fuse.driver(),
        Driver::Fuse,
        "overlayfs refuses an upper dir on overlayfs, so auto falls back to FUSE"
    );
    change_lower_entries(fuse.target());
    assert_same_tree(&want, &snapshot(fuse.target()), "FUSE on overlayfs");
    assert_eq!(
        names(&fuse.target().join("data2")),
        ["a", "b", "c2", "link"]
    );
    fuse.unmount().expect("unmount FUSE");

    let upper = &fuse_dirs.upper;
    for deleted in ["data", "usr/lib", "etc/passwd", "new/dir"] {
        assert_xattr_whiteout(&upper.join(deleted));
    }
    // The moved directory took none of its whiteouts or markers along.
    assert_eq!(names(&upper.join("data2")), ["a", "b", "c2", "link"]);
    assert_eq!(xattr(&upper.join("data2"), OPAQUE_XATTR), None);
    assert_eq!(
        xattr(&upper.join("opaque"), OPAQUE_XATTR).as_deref(),
        Some(&b"y"[..])
    );
    assert_eq!(
        fs::read(upper.join("data2/a")).expect("re-created file"),
        b"back"
    );
    assert_eq!(
        fs::symlink_metadata(upper.join("usr/bin/tool"))
            .expect("link")
            .nlink(),
        2
    );
    assert!(!upper.join("fresh").exists());
    let real = host.real_upper().join("fuse/upper/usr/lib");
    assert!(xattr(&real, "trusted.overlay.overlay.whiteout").is_some());

    // The writer turns the upper dir into the same layer tar as overlay's upper dir.
    let (from_fuse, entries, tar) = layer_tar(upper);
    let (from_overlay, overlay_entries, _) = layer_tar(&reference_dirs.upper);
    for expected in [
        ".wh.data",
        "usr/.wh.lib",
        "opaque/.wh..wh..opq",
        "data2/b",
        "bin",
    ] {
        assert!(
            entries.contains(expected),
            "{expected} missing: {entries:?}"
        );
    }
    assert_eq!(entries, overlay_entries);
    assert_eq!(
        from_fuse, from_overlay,
        "the upper dirs give different layer tars"
    );
    assert_no_overlay_xattrs(&tar);

    // As a lower layer (the next RUN step, or an image mount), the FUSE upper dir hides the
    // same entries under the kernel driver: it honours the xattr whiteouts of layers that
    // live on overlayfs.
    let mut stacked = layers.clone();
    stacked.push(upper.clone());
    let view = mount_union(
        &read_only(stacked, host.root().join("stacked")),
        Driver::Overlay,
    )
    .expect("overlay mount of the FUSE upper dir as a layer");
    assert_same_tree(
        &want,
        &snapshot(view.target()),
        "kernel overlay of the FUSE upper",
    );
}
