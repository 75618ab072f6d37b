//! The `auto` storage driver against real kernel refusals (run as root): overlayfs refuses an
//! upper dir that lives on another overlay mount (EINVAL, as when rbuild's store sits on a
//! container's overlay root), a chain of more than 500 layers (EINVAL) and any mount without
//! CAP_SYS_ADMIN (EPERM); in each case `auto` mounts the same spec with FUSE, says why, and the
//! mount works.

use std::fs;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};

use rbuild_layerfs::mount::{mount_union, Driver, MountError, MountSpec, UnionMount};
use rustix::thread::{capabilities, set_capabilities, CapabilitySet};

/// A scratch dir with one layer holding `kept` and `removed`.
struct Scratch {
    tmp: tempfile::TempDir,
    layer: PathBuf,
}

impl Scratch {
    fn new() -> Scratch {
        let tmp = tempfile::tempdir().expect("temp dir");
        let layer = tmp.path().join("layer");
        fs::create_dir_all(&layer).expect("create layer");
        fs::write(layer.join("kept"), b"kept").expect("write layer file");
        fs::write(layer.join("removed"), b"removed").expect("write layer file");
        Scratch { tmp, layer }
    }

    /// A spec over the layer with upper, work and mount point created below `base`.
    fn spec_below(&self, base: &Path) -> MountSpec {
        let dir = |name: &str| {
            let p = base.join(name);
            fs::create_dir_all(&p).expect("create mount dir");
            p
        };
        MountSpec {
            layers: vec![self.layer.clone()],
            upper: Some(dir("upper")),
            work: Some(dir("work")),
            target: dir("merged"),
        }
    }
}

/// Writes a file and deletes a layer file through `mount`, then checks the upper dir holds
/// the new file and an overlay whiteout after unmounting.
fn check_writes_land_in_the_upper_dir(mount: UnionMount, spec: &MountSpec) {
    let merged = mount.target().to_path_buf();
    assert_eq!(
        fs::read(merged.join("kept")).expect("read layer file"),
        b"kept"
    );
    fs::write(merged.join("new"), b"new").expect("write through the mount");
    fs::remove_file(merged.join("removed")).expect("delete a layer file");
    assert!(!merged.join("removed").exists());
    mount.unmount().expect("unmount");
    let upper = spec.upper.as_ref().expect("upper");
    assert_eq!(fs::read(upper.join("new")).expect("upper file"), b"new");
    let whiteout = fs::symlink_metadata(upper.join("removed")).expect("whiteout");
    assert!(whiteout.file_type().is_char_device() && whiteout.rdev() == 0);
}

#[test]
fn auto_falls_back_to_fuse_when_the_upper_dir_is_on_overlayfs() {
    let scratch = Scratch::new();
    // The outer overlay stands in for a container's root filesystem holding rbuild's store.
    let outer_spec = scratch.spec_below(&scratch.tmp.path().join("outer"));
    let outer = mount_union(&outer_spec, Driver::Overlay).expect("outer overlay mount");
    let spec = scratch.spec_below(outer.target());

    let err = mount_union(&spec, Driver::Overlay).expect_err("overlay refuses the upper dir");
    assert!(
        matches!(&err, MountError::Mount { cause, .. } if cause.raw_os_error() == Some(libc::EINVAL)),
        "{err}"
    );
    assert!(
        err.to_string().contains("not supported as upperdir"),
        "the error carries the kernel's reason: {err}"
    );

    let mount = mount_union(&spec, Driver::Auto).expect("auto mounts with FUSE");
    assert_eq!(mount.driver(), Driver::Fuse);
    let reason = mount.fallback_reason().expect("auto says why");
    assert!(
        reason.contains("overlayfs refuses these dirs")
            && reason.contains("not supported as upperdir"),
        "{reason}"
    );
    assert!(!reason.contains('\n'), "{reason}");
    let merged = mount.target().to_path_buf();
    assert_eq!(
        fs::read(merged.join("kept")).expect("read layer file"),
        b"kept"
    );
    fs::create_dir(merged.join("dir")).expect("mkdir through the mount");
    fs::write(merged.join("dir/new"), b"new").expect("write through the mount");
    fs::rename(merged.join("dir/new"), merged.join("renamed")).expect("rename");
    fs::write(merged.join("kept"), b"changed").expect("copy-up a layer file");
    // Deleting a layer file needs a whiteout device, which overlayfs refuses to create in its
    // own tree (mknod c 0 0 is EPERM there), so that is not checked on this upper dir.
    mount.unmount().expect("unmount");
    let upper = spec.upper.as_ref().expect("upper");
    assert_eq!(fs::read(upper.join("renamed")).expect("upper file"), b"new");
    assert_eq!(fs::read(upper.join("kept")).expect("copied up"), b"changed");
    assert!(upper.join("dir").is_dir() && !upper.join("dir/new").exists());
    assert_eq!(
        fs::read(scratch.layer.join("kept")).expect("layer"),
        b"kept"
    );
    outer.unmount().expect("unmount the outer overlay");
}

#[test]
fn auto_falls_back_to_fuse_for_more_layers_than_overlayfs_stacks() {
    let scratch = Scratch::new();
    // Linux overlayfs stacks at most 500 lower layers.
    let mut layers = vec![scratch.layer.clone()];
    for i in 1..=500 {
        let layer = scratch.tmp.path().join(format!("layers/{i:03}"));
        fs::create_dir_all(&layer).expect("create layer");
        fs::write(layer.join(format!("f{i}")), i.to_string()).expect("write layer file");
        layers.push(layer);
    }
    let mut spec = scratch.spec_below(&scratch.tmp.path().join("mount"));
    spec.layers = layers;

    let err = mount_union(&spec, Driver::Overlay).expect_err("overlay refuses 501 layers");
    assert!(
        matches!(&err, MountError::Mount { cause, .. } if cause.raw_os_error() == Some(libc::EINVAL)),
        "{err}"
    );
    let mount = mount_union(&spec, Driver::Auto).expect("auto mounts with FUSE");
    assert_eq!(mount.driver(), Driver::Fuse);
    let reason = mount.fallback_reason().expect("auto says why");
    assert!(reason.contains("overlayfs refuses these dirs"), "{reason}");
    assert!(reason.contains("too many lower directories"), "{reason}");
    for i in [1, 250, 500] {
        let found = fs::read_to_string(mount.target().join(format!("f{i}"))).expect("layer file");
        assert_eq!(found, i.to_string());
    }
    check_writes_land_in_the_upper_dir(mount, &spec);
}

/// Clears CAP_SYS_ADMIN from the calling thread's effective set (capabilities are per thread)
/// and raises it again on drop, so the mounts' guards can unmount.
struct WithoutSysAdmin;

impl WithoutSysAdmin {
    fn new() -> WithoutSysAdmin {
        let mut sets = capabilities(None).expect("read capabilities");
        assert!(
            sets.permitted.contains(CapabilitySet::SYS_ADMIN),
            "run as root"
        );
        sets.effective.remove(CapabilitySet::SYS_ADMIN);
        set_capabilities(None, sets).expect("drop CAP_SYS_ADMIN");
        WithoutSysAdmin
    }
}

impl Drop for WithoutSysAdmin {
    fn drop(&mut self) {
        if let Ok(mut sets) = capabilities(None) {
            sets.effective.insert(CapabilitySet::SYS_ADMIN);
            let _ = set_capabilities(None, sets);
        }
    }
}

#[test]
fn auto_falls_back_to_fuse_without_the_privilege_to_mount_overlayfs() {
    let scratch = Scratch::new();
    let spec = scratch.spec_below(&scratch.tmp.path().join("mount"));
    // Declared before the capability guard, so it is dropped (unmounted) after CAP_SYS_ADMIN
    // is back, also when an assertion fails.
    let mount: UnionMount;
    let unprivileged = WithoutSysAdmin::new();
    let err = mount_union(&spec, Driver::Overlay).expect_err("overlay needs CAP_SYS_ADMIN");
    assert!(
        matches!(&err, MountError::Mount { cause, .. } if cause.raw_os_error() == Some(libc::EPERM)),
        "{err}"
    );
    // FUSE mounts through the setuid fusermount3 helper when mount(2) is not allowed.
    mount = mount_union(&spec, Driver::Auto).expect("auto mounts with FUSE");
    drop(unprivileged);
    assert_eq!(mount.driver(), Driver::Fuse);
    let reason = mount.fallback_reason().expect("auto says why");
    assert!(
        reason.contains("no privilege to mount overlayfs") && reason.contains("not permitted"),
        "{reason}"
    );
    check_writes_land_in_the_upper_dir(mount, &spec);
}

#[test]
fn auto_uses_overlayfs_where_the_kernel_allows_it() {
    let scratch = Scratch::new();
    let spec = scratch.spec_below(&scratch.tmp.path().join("mount"));
    let mount = mount_union(&spec, Driver::Auto).expect("auto mount");
    assert_eq!(mount.driver(), Driver::Overlay);
    assert_eq!(mount.fallback_reason(), None);
    check_writes_land_in_the_upper_dir(mount, &spec);
}
