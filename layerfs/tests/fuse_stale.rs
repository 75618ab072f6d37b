//! A killed process that held a FUSE mount leaves a dead (ENOTCONN) mount behind; the next
//! mount at the same place, or a sweep of the store, detaches it instead of failing.

mod fuse_support;

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::time::{Duration, Instant};

use fuse_support::{make_layers, MountDirs};
use rbuild_layerfs::mount::fuse::{detach_stale, detach_stale_below, is_stale};
use rbuild_layerfs::mount::{mount_union, Driver, MountSpec};

const CHILD_ENV: &str = "RBUILD_FUSE_TEST_CHILD_DIR";

/// Kills the helper process and detaches whatever it left mounted, also when the test fails.
struct ChildGuard {
    child: Child,
    target: PathBuf,
}

impl Drop for ChildGuard {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        detach_stale(&self.target);
    }
}

/// Starts this test binary's helper in another process, mounting FUSE at `root`/fuse/merged.
fn spawn_mount_holder(root: &Path) -> ChildGuard {
    let child = Command::new(std::env::current_exe().expect("test binary path"))
        .args([
            "--exact",
            "helper_process_holding_a_fuse_mount",
            "--ignored",
            "--nocapture",
        ])
        .env(CHILD_ENV, root)
        .spawn()
        .expect("spawn helper process");
    let guard = ChildGuard {
        child,
        target: root.join("fuse/merged"),
    };
    let ready = root.join("ready");
    let deadline = Instant::now() + Duration::from_secs(60);
    while !ready.exists() {
        assert!(Instant::now() < deadline, "helper process never mounted");
        std::thread::sleep(Duration::from_millis(20));
    }
    fs::remove_file(&ready).expect("remove ready marker");
    guard
}

fn kill(guard: &mut ChildGuard) {
    guard.child.kill().expect("kill helper");
    guard.child.wait().expect("reap helper");
}

#[test]
fn killed_mount_holder_does_not_block_the_next_mount() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let layers = make_layers(tmp.path());
    let dirs = MountDirs::new(tmp.path(), "fuse");
    let mut holder = spawn_mount_holder(tmp.path());
    kill(&mut holder);
    assert!(
        is_stale(&dirs.target),
        "a killed FUSE server leaves an ENOTCONN mount"
    );

    let mount = dirs.mount(&layers, Driver::Fuse);
    assert_eq!(
        fs::read(mount.target().join("written-before-kill")).expect("read through new mount"),
        b"kept"
    );
    drop(mount);
    assert!(!is_stale(&dirs.target));
}

#[test]
fn sweeping_a_directory_detaches_dead_mounts_below_it() {
    let tmp = tempfile::tempdir().expect("tempdir");
    make_layers(tmp.path());
    let dirs = MountDirs::new(tmp.path(), "fuse");
    let mut holder = spawn_mount_holder(tmp.path());
    kill(&mut holder);
    assert!(is_stale(&dirs.target));
    let detached = detach_stale_below(tmp.path());
    assert_eq!(detached, vec![dirs.target.clone()]);
    assert!(!is_stale(&dirs.target));
    fs::remove_dir_all(tmp.path().join("fuse")).expect("remove former mount point");
}

/// Not a test of its own: the process the tests above kill while it serves a FUSE mount.
#[test]
#[ignore = "helper process started by the stale-mount tests"]
fn helper_process_holding_a_fuse_mount() {
    let Some(root) = std::env::var_os(CHILD_ENV).map(PathBuf::from) else {
        return;
    };
    let spec = MountSpec {
        layers: vec![root.join("layer0"), root.join("layer1")],
        upper: Some(root.join("fuse/upper")),
        work: Some(root.join("fuse/work")),
        target: root.join("fuse/merged"),
    };
    let mount = mount_union(&spec, Driver::Fuse).expect("helper mount");
    fs::write(mount.target().join("written-before-kill"), b"kept").expect("write via mount");
    fs::write(root.join("ready"), b"").expect("ready marker");
    loop {
        std::thread::sleep(Duration::from_secs(1));
    }
}
