//! `rbuild run` of an image the store lacks pulls it first, as `docker run` does.

mod common;
#[path = "common/registry.rs"]
mod registry_server;

use common::TestRoot;
use registry_server::TestRegistry;

#[test]
fn run_pulls_a_missing_image_and_a_missing_remote_is_an_error() {
    let registry = TestRegistry::start();
    let origin = TestRoot::new();
    origin.import_busybox("busybox");
    let remote = format!("{}/run/busybox:1", registry.host());
    origin.ok(&["tag", "busybox", &remote]);
    origin.ok(&["push", "-q", &remote]);

    let root = TestRoot::new();
    let out = root.rbuild(&["run", "--rm", &remote, "echo", "from-pulled"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert_eq!(String::from_utf8_lossy(&out.stdout), "from-pulled\n");
    assert!(stderr.contains("Unable to find image"), "{stderr}");
    // Now local: no second pull.
    let out = root.rbuild(&["run", "--rm", &remote, "true"]);
    assert!(out.status.success());
    assert!(!String::from_utf8_lossy(&out.stderr).contains("Unable to find image"));

    let absent = format!("{}/run/absent:1", registry.host());
    let err = root.fails(&["run", "--rm", &absent, "true"]);
    assert!(err.contains("pulling") && err.contains("absent"), "{err}");
}
