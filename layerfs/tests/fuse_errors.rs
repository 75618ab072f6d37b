//! FUSE mount failures name the mount point and the cause once, in lower case, with what to do;
//! and aborting a connection never reaches a later mount that got the same connection number.

use std::fs;
use std::path::{Path, PathBuf};

use rbuild_layerfs::mount::fuse::{self, control::AbortHandle};
use rbuild_layerfs::mount::{mount_union, Driver, MountSpec};

/// A layer with one file and an upper/work pair below `root`; the mount point is `target`.
fn spec(root: &Path, target: PathBuf) -> MountSpec {
    let dir = |name: &str| {
        let p = root.join(name);
        fs::create_dir_all(&p).expect("create test dir");
        p
    };
    let layer = dir("layer");
    fs::write(layer.join("base"), b"from the layer").expect("write layer file");
    MountSpec {
        layers: vec![layer],
        upper: Some(dir("upper")),
        work: Some(dir("work")),
        target,
    }
}

/// Asserts that `message` names `target` once, says "fuse mount" once and is lower case
/// where rbuild wrote it.
fn assert_named_once(message: &str, target: &Path) {
    let target = target.to_str().expect("utf-8 path");
    assert_eq!(message.matches(target).count(), 1, "{message}");
    assert_eq!(message.matches("fuse mount").count(), 1, "{message}");
    let cause = message
        .split_once("failed: ")
        .map_or(message, |(_, cause)| cause);
    assert!(
        !cause.starts_with(|c: char| c.is_uppercase()),
        "the cause starts in lower case: {message}"
    );
}

#[test]
fn a_missing_mount_point_is_named_once_with_what_to_do() {
    let tmp = tempfile::tempdir().expect("temp dir");
    let target = tmp.path().join("no-such-dir");
    let spec = spec(tmp.path(), target.clone());
    let err = fuse::mount(&spec).expect_err("nothing to mount on");
    let message = err.to_string();
    assert_named_once(&message, &target);
    assert!(
        message.contains("the mount point does not exist"),
        "{message}"
    );
    assert!(message.contains("create the directory first"), "{message}");
    assert!(
        std::error::Error::source(&err).is_none(),
        "the cause is in the message, not repeated as a source: {message}"
    );

    // Through mount_union the spec check says the same.
    let err = mount_union(&spec, Driver::Fuse).expect_err("nothing to mount on");
    let message = err.to_string();
    assert_eq!(
        message.matches(target.to_str().unwrap()).count(),
        1,
        "{message}"
    );
    assert!(message.contains("create the directory first"), "{message}");
}

#[test]
fn a_missing_layer_dir_is_named() {
    let tmp = tempfile::tempdir().expect("temp dir");
    let target = tmp.path().join("merged");
    fs::create_dir(&target).expect("mount point");
    let mut spec = spec(tmp.path(), target.clone());
    let missing = tmp.path().join("missing-layer");
    spec.layers.push(missing.clone());
    let err = fuse::mount(&spec).expect_err("a layer is missing");
    let message = err.to_string();
    assert_named_once(&message, &target);
    assert!(
        message.contains(&format!("layer dir {}", missing.display())),
        "{message}"
    );
    assert!(!fuse::is_stale(&target), "nothing was left mounted");
}

#[test]
fn an_abort_handle_never_reaches_a_later_mount_with_the_same_number() {
    let tmp = tempfile::tempdir().expect("temp dir");
    let root = tmp.path().canonicalize().expect("canonical temp dir");
    let target = root.join("merged");
    fs::create_dir(&target).expect("mount point");
    let spec = spec(&root, target.clone());
    // The kernel gives a new mount the lowest free number, so the second mount nearly always
    // gets the first one's; a few tries make it certain on a busy machine.
    let mut reused = false;
    for _ in 0..20 {
        let first = mount_union(&spec, Driver::Fuse).expect("first mount");
        let old = AbortHandle::of_mount(&target).expect("abort handle of the first mount");
        first.unmount().expect("unmount the first mount");
        let second = mount_union(&spec, Driver::Fuse).expect("second mount");
        let new = AbortHandle::of_mount(&target).expect("abort handle of the second mount");
        reused = new.connection() == old.connection();
        old.abort()
            .expect("writing to a handle of an ended connection is harmless");
        assert_eq!(
            fs::read(target.join("base")).expect("the second mount still works"),
            b"from the layer"
        );
        assert!(!fuse::is_stale(&target));
        second.unmount().expect("unmount the second mount");
        if reused {
            break;
        }
    }
    assert!(reused, "no mount ever got the number of the one before");
}
