//! Reproducible builds: with SOURCE_DATE_EPOCH or --timestamp, one context in two folders on
//! two fresh stores gives one image ID.

mod build_support;
mod common;

use build_support::{build_ok, Context};
use common::TestRoot;
use std::process::Command;

const DOCKERFILE: &str = "FROM busybox\nLABEL a=1 b=2 c=3\nCOPY . /src/\nRUN echo built > /built && touch /stamp\nENV X=y\n";

/// A fresh store holding the very same busybox image (loaded from `base`).
fn fresh_store(base: &std::path::Path) -> TestRoot {
    let root = TestRoot::new();
    root.ok(&["load", "-i", &base.to_string_lossy()]);
    root
}

fn build_in_fresh_store(base: &std::path::Path, env_epoch: bool) -> String {
    let root = fresh_store(base);
    let ctx = Context::new(DOCKERFILE);
    ctx.write("a/b.txt", "content\n");
    ctx.write("c.txt", "more\n");
    if env_epoch {
        let out = Command::new(common::rbuild_bin())
            .args(["--root", &root.root_str(), "build", "-q", &ctx.dir()])
            .env("SOURCE_DATE_EPOCH", "1700000000")
            .output()
            .expect("run rbuild");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    } else {
        build_ok(&root, &ctx, &["--timestamp", "1700000000"]).0
    }
}

#[test]
fn same_id_from_two_folders_on_fresh_stores() {
    let origin = TestRoot::new();
    origin.import_busybox("busybox");
    let dir = tempfile::tempdir().expect("tempdir");
    let base = dir.path().join("busybox.tar");
    origin.ok(&["save", "-o", &base.to_string_lossy(), "busybox"]);
    let a = build_in_fresh_store(&base, true);
    let b = build_in_fresh_store(&base, true);
    assert_eq!(a, b);
    let c = build_in_fresh_store(&base, false);
    assert_eq!(a, c);
}
