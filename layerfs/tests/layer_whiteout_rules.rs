//! OCI whiteout rules, checked through a real overlay mount of the applied layer over a lower
//! layer: whiteouts and opaque markers hide lower layers only, never entries of their own
//! layer, wherever they sit in the tar. The mount uses the driver named by
//! RBUILD_STORAGE_DRIVER when set (CI runs this file again with `fuse`).

mod common;

use std::fs;
use std::path::Path;

use common::RawTar;
use rbuild_layerfs::layer::{apply_layer, ApplyLimits};
use rbuild_layerfs::mount::{mount_union, MountSpec};

fn names(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    v.sort();
    v
}

#[test]
fn opaque_marker_and_whiteouts_apply_before_same_layer_siblings() {
    let tmp = tempfile::tempdir().unwrap();
    let lower = tmp.path().join("lower");
    fs::create_dir_all(lower.join("dir")).unwrap();
    fs::write(lower.join("dir/lower-only"), b"hidden").unwrap();
    fs::write(lower.join("dir/a"), b"lower a").unwrap();
    fs::write(lower.join("x"), b"lower x").unwrap();
    fs::write(lower.join("y"), b"lower y").unwrap();
    fs::write(lower.join("z"), b"lower z").unwrap();

    let tar = RawTar::new()
        .dir(b"dir")
        .file(b"dir/a", b"layer a")
        // The marker comes after a sibling and before another: neither may be hidden.
        .file(b"dir/.wh..wh..opq", b"")
        .file(b"dir/b", b"layer b")
        // Whiteout before and after a same-layer file of the same name.
        .file(b".wh.x", b"")
        .file(b"x", b"layer x")
        .file(b"y", b"layer y")
        .file(b".wh.y", b"")
        // A plain deletion of a lower file.
        .file(b".wh.z", b"")
        .finish();
    let layer = tmp.path().join("layer");
    let stats = apply_layer(&tar[..], &layer, &ApplyLimits::default()).unwrap();
    assert_eq!(stats.opaque_dirs, 1);

    let target = tmp.path().join("view");
    fs::create_dir(&target).unwrap();
    let spec = MountSpec {
        layers: vec![lower, layer],
        upper: None,
        work: None,
        target,
    };
    let mount = mount_union(&spec, common::storage_driver()).unwrap();
    let view = mount.target();
    assert_eq!(names(&view.join("dir")), ["a", "b"]);
    assert_eq!(fs::read(view.join("dir/a")).unwrap(), b"layer a");
    assert_eq!(fs::read(view.join("x")).unwrap(), b"layer x");
    assert_eq!(fs::read(view.join("y")).unwrap(), b"layer y");
    assert!(!view.join("z").exists());
    assert_eq!(names(view), ["dir", "x", "y"]);
}

#[test]
fn opaque_marker_without_directory_entry_creates_the_directory() {
    let tmp = tempfile::tempdir().unwrap();
    let tar = RawTar::new().file(b"new/sub/.wh..wh..opq", b"").finish();
    let layer = tmp.path().join("layer");
    apply_layer(&tar[..], &layer, &ApplyLimits::default()).unwrap();
    let value = common::xattrs(&layer.join("new/sub"));
    assert_eq!(
        value.get(&b"trusted.overlay.opaque"[..]).map(Vec::as_slice),
        Some(&b"y"[..])
    );
    assert!(fs::read_dir(layer.join("new/sub"))
        .unwrap()
        .next()
        .is_none());
}
