//! Base images missing from the store are pulled from their registry before any step runs;
//! `--pull` refreshes them; an unreachable image fails with its Dockerfile line.

mod build_support;
mod common;
#[path = "common/registry.rs"]
mod registry_server;

use build_support::{build, build_ok, run_sh, Context};
use common::TestRoot;
use registry_server::TestRegistry;

#[test]
fn from_pulls_a_missing_base_image_and_pull_refreshes_it() {
    let registry = TestRegistry::start();
    let origin = TestRoot::new();
    origin.import_busybox("busybox");
    let remote = format!("{}/base/busybox:1", registry.host());
    origin.ok(&["tag", "busybox", &remote]);
    origin.ok(&["push", "-q", &remote]);

    let root = TestRoot::new();
    let ctx = Context::new(&format!(
        "FROM {remote} AS base\nRUN echo pulled > /p\nFROM busybox-not-needed AS unused\nFROM base\n"
    ));
    let (id, out) = build_ok(&root, &ctx, &[]);
    assert!(out.contains(&format!("pulling {remote}")), "{out}");
    assert_eq!(run_sh(&root, &id, "cat /p"), "pulled\n");
    // Now local: no pull; with --pull: pulled again, same result from the cache.
    let (id2, out2) = build_ok(&root, &ctx, &[]);
    assert!(!out2.contains("pulling"), "{out2}");
    let (id3, out3) = build_ok(&root, &ctx, &["--pull"]);
    assert!(out3.contains("pulling"), "{out3}");
    assert_eq!(id, id2);
    assert_eq!(id, id3);

    let missing = Context::new(&format!(
        "FROM busybox-local-only\nFROM {}/base/absent:1\nRUN true\n",
        registry.host()
    ));
    root.ok(&["tag", &remote, "busybox-local-only"]);
    let out = build(&root, &missing, &[]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    let last = err.trim_end().lines().last().unwrap_or_default();
    assert!(
        last.contains("Dockerfile:2") && last.contains("absent"),
        "{err}"
    );
}
