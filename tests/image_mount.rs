//! CLI: `mount NAME` prints a read-only merged view that outlives the command; `umount NAME`
//! (another process) finds and removes it; a mounted image is not removed without -f.

mod common;

use common::TestRoot;
use std::path::Path;

#[test]
fn mount_persists_until_umount_and_is_read_only() {
    let t = TestRoot::new();
    t.import_busybox("busybox");
    let path = t.ok(&["mount", "busybox"]);
    let path = Path::new(path.trim()).to_path_buf();
    assert!(path.starts_with(t.path().canonicalize().unwrap()));
    assert!(path.join("bin/busybox").is_file());
    assert!(path.join("etc/passwd").is_file());
    let err = std::fs::write(path.join("etc/new"), "x").unwrap_err();
    assert_eq!(err.raw_os_error(), Some(libc::EROFS), "{err}");
    // Mounting again returns the same path; `mount` alone lists it.
    assert_eq!(t.ok(&["mount", "busybox"]).trim(), path.to_str().unwrap());
    assert!(t.ok(&["mount"]).contains(path.to_str().unwrap()));

    let err = t.fails(&["rmi", "busybox"]);
    assert!(err.contains("is mounted"), "{err}");
    t.ok(&["system", "check"]);

    t.ok(&["umount", "busybox"]);
    assert!(!path.join("bin/busybox").exists());
    assert!(t.ok(&["mount"]).trim().is_empty());
    let err = t.fails(&["umount", "busybox"]);
    assert!(err.contains("not mounted"), "{err}");
}

#[test]
fn rmi_force_unmounts_first() {
    let t = TestRoot::new();
    t.import_busybox("busybox");
    let path = t.ok(&["mount", "busybox"]);
    t.ok(&["rmi", "-f", "busybox"]);
    assert!(!Path::new(path.trim()).join("bin/busybox").exists());
    t.ok(&["system", "prune"]);
    t.ok(&["system", "check"]);
}
