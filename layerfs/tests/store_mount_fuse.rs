//! A persistent image mount (`Store::mount_image`) with the FUSE driver and no server process:
//! the FUSE server would be threads of this process and die with it, so the mount is refused
//! with an error that says what to use instead, and nothing is left mounted or recorded.
//! (The CLI's `rbuild mount` passes a server command: `Store::mount_image_served`.)

mod store_support;

use rbuild_layerfs::mount::Driver;
use store_support::{small_image, TempStore};

#[test]
fn persistent_fuse_mount_without_a_server_is_refused_and_leaves_nothing() {
    let t = TempStore::new();
    let image = small_image(&t.store, "content");
    let err = t
        .store
        .mount_image(&image, Driver::Fuse)
        .expect_err("a persistent in-process FUSE mount must be refused");
    let message = err.to_string();
    assert!(
        message.contains("cannot keep") && message.contains("FUSE driver"),
        "{message}"
    );
    assert!(message.contains("--storage-driver overlay"), "{message}");
    assert!(!t.store.is_image_mounted(&image));
    assert!(t.store.image_mounts().expect("list mounts").is_empty());
    let mountinfo = std::fs::read_to_string("/proc/self/mountinfo").expect("mountinfo");
    let root = t.dir.path().canonicalize().expect("store dir");
    assert!(
        !mountinfo.contains(root.to_str().expect("utf-8 path")),
        "nothing is mounted below the store:\n{mountinfo}"
    );
}
