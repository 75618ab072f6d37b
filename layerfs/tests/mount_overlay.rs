//! Real union mounts through mount_union (run as root): kernel overlayfs, or the driver named
//! by RBUILD_STORAGE_DRIVER (CI runs this file again with `fuse`).

mod common;

use std::fs;
use std::path::{Path, PathBuf};

use common::storage_driver;
use rbuild_layerfs::mount::{mount_union, unmount_target, Driver, MountError, MountSpec};

/// True when `target` is a mount point of this mount namespace.
fn is_mounted(target: &Path) -> bool {
    let info = fs::read_to_string("/proc/self/mountinfo").unwrap();
    let target = target.to_str().unwrap();
    info.lines()
        .any(|line| line.split(' ').nth(4) == Some(target))
}

/// Layer dirs named like store layers (64 hex characters) below `base`.
fn make_layers(base: &Path, count: usize) -> Vec<PathBuf> {
    (0..count)
        .map(|i| {
            let dir = base.join(format!("{i:064x}"));
            fs::create_dir_all(&dir).unwrap();
            fs::write(dir.join(format!("f{i}")), i.to_string()).unwrap();
            fs::write(dir.join("common"), i.to_string()).unwrap();
            dir
        })
        .collect()
}

struct Dirs {
    tmp: tempfile::TempDir,
}

impl Dirs {
    fn new() -> Self {
        Dirs {
            tmp: tempfile::tempdir().unwrap(),
        }
    }
    fn dir(&self, name: &str) -> PathBuf {
        let p = self.tmp.path().join(name);
        fs::create_dir_all(&p).unwrap();
        p
    }
}

#[test]
fn writable_mount_writes_only_the_upper_dir_and_unmounts_on_drop() {
    let dirs = Dirs::new();
    let layers = make_layers(&dirs.dir("layers"), 2);
    let spec = MountSpec {
        layers: layers.clone(),
        upper: Some(dirs.dir("upper")),
        work: Some(dirs.dir("work")),
        target: dirs.dir("merged"),
    };
    let mount = mount_union(&spec, storage_driver()).unwrap();
    assert_eq!(mount.driver(), storage_driver());
    let merged = mount.target().to_path_buf();
    assert!(is_mounted(&merged));
    assert_eq!(fs::read_to_string(merged.join("common")).unwrap(), "1");
    assert_eq!(fs::read_to_string(merged.join("f0")).unwrap(), "0");
    fs::write(merged.join("new"), b"n").unwrap();
    fs::remove_file(merged.join("f0")).unwrap();
    drop(mount);
    assert!(!is_mounted(&merged));
    let upper = spec.upper.unwrap();
    assert_eq!(fs::read(upper.join("new")).unwrap(), b"n");
    let whiteout = fs::symlink_metadata(upper.join("f0")).unwrap();
    use std::os::unix::fs::{FileTypeExt, MetadataExt};
    assert!(whiteout.file_type().is_char_device() && whiteout.rdev() == 0);
    assert!(
        layers[0].join("f0").exists(),
        "lower layers are never written"
    );
}

#[test]
fn mounts_without_upper_are_read_only() {
    let dirs = Dirs::new();
    let layers = make_layers(&dirs.dir("layers"), 2);
    for layers in [layers.clone(), layers[..1].to_vec()] {
        let spec = MountSpec {
            layers,
            upper: None,
            work: None,
            target: dirs.dir("ro"),
        };
        let mount = mount_union(&spec, storage_driver()).unwrap();
        assert!(fs::read_to_string(mount.target().join("common")).is_ok());
        let err = fs::write(mount.target().join("x"), b"x").unwrap_err();
        assert_eq!(err.raw_os_error(), Some(libc::EROFS), "{err}");
        mount.unmount().unwrap();
        assert!(!is_mounted(&spec.target));
    }
}

#[test]
fn upper_without_layers_is_mounted_writable() {
    let dirs = Dirs::new();
    let spec = MountSpec {
        layers: Vec::new(),
        upper: Some(dirs.dir("upper")),
        work: Some(dirs.dir("work")),
        target: dirs.dir("merged"),
    };
    let mount = mount_union(&spec, storage_driver()).unwrap();
    fs::write(mount.target().join("x"), b"x").unwrap();
    mount.unmount().unwrap();
    assert_eq!(fs::read(dirs.dir("upper").join("x")).unwrap(), b"x");
}

#[test]
fn chain_of_128_layers_mounts() {
    let dirs = Dirs::new();
    let layers = make_layers(&dirs.dir("layers"), 128);
    // A deletion in the middle of the chain: layer 100 whites out f3.
    rustix::fs::mknodat(
        rustix::fs::CWD,
        layers[100].join("f3"),
        rustix::fs::FileType::CharacterDevice,
        rustix::fs::Mode::empty(),
        rustix::fs::makedev(0, 0),
    )
    .unwrap();
    let legacy_len: usize = layers.iter().map(|l| l.as_os_str().len() + 1).sum();
    assert!(
        legacy_len > 4096,
        "the chain must not fit a legacy option page"
    );
    for upper in [false, true] {
        let spec = MountSpec {
            layers: layers.clone(),
            upper: upper.then(|| dirs.dir(&format!("upper{upper}"))),
            work: upper.then(|| dirs.dir(&format!("work{upper}"))),
            target: dirs.dir("merged"),
        };
        let mount = mount_union(&spec, storage_driver()).unwrap();
        let merged = mount.target();
        assert_eq!(fs::read_to_string(merged.join("common")).unwrap(), "127");
        for i in (0..128).filter(|i| *i != 3) {
            assert_eq!(
                fs::read_to_string(merged.join(format!("f{i}"))).unwrap(),
                i.to_string()
            );
        }
        assert!(
            !merged.join("f3").exists(),
            "whiteout in layer 100 hides f3"
        );
        assert_eq!(fs::write(merged.join("w"), b"w").is_ok(), upper);
    }
    assert!(!is_mounted(&dirs.dir("merged")));
}

#[test]
fn guard_unmounts_when_the_caller_panics() {
    let dirs = Dirs::new();
    let layers = make_layers(&dirs.dir("layers"), 2);
    let spec = MountSpec {
        layers,
        upper: Some(dirs.dir("upper")),
        work: Some(dirs.dir("work")),
        target: dirs.dir("merged"),
    };
    let result = std::panic::catch_unwind(|| {
        let _mount = mount_union(&spec, storage_driver()).unwrap();
        assert!(is_mounted(&spec.target));
        panic!("caller failed while mounted");
    });
    assert!(result.is_err());
    assert!(
        !is_mounted(&spec.target),
        "the guard must unmount during unwinding"
    );
}

#[test]
fn persisted_mount_stays_until_unmounted_by_path() {
    let dirs = Dirs::new();
    let spec = MountSpec {
        layers: make_layers(&dirs.dir("layers"), 2),
        upper: None,
        work: None,
        target: dirs.dir("merged"),
    };
    let target = mount_union(&spec, storage_driver()).unwrap().persist();
    assert!(is_mounted(&target));
    unmount_target(&target).unwrap();
    assert!(!is_mounted(&target));
}

#[test]
fn bad_specs_are_refused_with_clear_errors() {
    let dirs = Dirs::new();
    let layers = make_layers(&dirs.dir("layers"), 2);
    let base = MountSpec {
        layers: layers.clone(),
        upper: Some(dirs.dir("upper")),
        work: None,
        target: dirs.dir("merged"),
    };
    let err = mount_union(&base, storage_driver()).unwrap_err();
    assert!(err.to_string().contains("needs a work dir"), "{err}");
    let missing = MountSpec {
        layers: vec![layers[0].clone(), dirs.tmp.path().join("nope")],
        upper: None,
        work: None,
        target: dirs.dir("merged"),
    };
    let err = mount_union(&missing, storage_driver()).unwrap_err();
    assert!(matches!(err, MountError::BadSpec { .. }) && err.to_string().contains("nope"));
    let nothing = MountSpec {
        layers: Vec::new(),
        upper: None,
        work: None,
        target: dirs.dir("merged"),
    };
    assert!(mount_union(&nothing, storage_driver()).is_err());
    assert!(!is_mounted(&dirs.dir("merged")));
}

#[test]
fn driver_names_parse() {
    assert_eq!("overlay".parse::<Driver>().unwrap(), Driver::Overlay);
    assert_eq!("fuse".parse::<Driver>().unwrap(), Driver::Fuse);
    assert_eq!("auto".parse::<Driver>().unwrap(), Driver::Auto);
    let err = "btrfs".parse::<Driver>().unwrap_err();
    assert!(err.to_string().contains("overlay, fuse or auto"));
    assert_eq!(Driver::Overlay.to_string(), "overlay");
}
