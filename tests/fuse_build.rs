//! The FUSE storage driver end to end: Dockerfile.examples builds to the same image ID under
//! overlay and under FUSE (SOURCE_DATE_EPOCH set), so the two drivers leave identical layers.

mod common;

use common::TestRoot;
use std::path::Path;
use std::process::Command;

fn build_examples(base: &Path, driver: &str) -> String {
    let root = TestRoot::new();
    root.ok(&["load", "-i", &base.to_string_lossy()]);
    let repo = env!("CARGO_MANIFEST_DIR");
    let out = Command::new(common::rbuild_bin())
        .args([
            "--root",
            &root.root_str(),
            "--storage-driver",
            driver,
            "build",
            "-q",
            "-f",
            &format!("{repo}/Dockerfile.examples"),
            repo,
        ])
        .env("SOURCE_DATE_EPOCH", "1700000000")
        .output()
        .expect("run rbuild build");
    assert!(
        out.status.success(),
        "build with --storage-driver {driver} failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

#[test]
fn dockerfile_examples_gives_the_same_image_id_under_overlay_and_fuse() {
    let origin = TestRoot::new();
    origin.import_busybox("busybox");
    let dir = tempfile::tempdir().expect("tempdir");
    let base = dir.path().join("busybox.tar");
    origin.ok(&["save", "-o", &base.to_string_lossy(), "busybox"]);
    let overlay = build_examples(&base, "overlay");
    let fuse = build_examples(&base, "fuse");
    assert!(
        overlay.starts_with("sha256:"),
        "unexpected build output {overlay:?}"
    );
    assert_eq!(
        overlay, fuse,
        "image IDs differ between the overlay and FUSE drivers"
    );
}

#[test]
fn run_steps_see_the_fuse_mount_as_their_root() {
    let root = TestRoot::new();
    root.import_busybox("busybox");
    let ctx = tempfile::tempdir().expect("context dir");
    std::fs::write(
        ctx.path().join("Dockerfile"),
        "FROM busybox\nRUN grep -E ' / / ' /proc/self/mountinfo\n",
    )
    .expect("write Dockerfile");
    let out = Command::new(common::rbuild_bin())
        .args([
            "--root",
            &root.root_str(),
            "--storage-driver",
            "fuse",
            "build",
        ])
        .args(["--progress", "plain", "--no-cache"])
        .arg(ctx.path())
        .output()
        .expect("run rbuild build");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "build failed:\n{text}");
    assert!(
        text.contains(" - fuse rbuild "),
        "the RUN step's root is not the rbuild FUSE mount:\n{text}"
    );
}
