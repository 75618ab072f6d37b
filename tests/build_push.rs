//! `rbuild build --push --metadata-file --iidfile`: the machine-readable output CI pipelines use.

mod common;
#[path = "common/registry.rs"]
mod registry_server;

use common::TestRoot;
use registry_server::TestRegistry;
use std::fs;

#[test]
fn build_push_writes_metadata_and_iidfile_and_the_registry_has_the_image() {
    let root = TestRoot::new();
    root.import_busybox("busybox");
    let reg = TestRegistry::start();
    let ctx = tempfile::tempdir().unwrap();
    fs::write(
        ctx.path().join("Dockerfile"),
        "FROM busybox\nRUN echo pushed > /p.txt\n",
    )
    .unwrap();
    let tag1 = format!("{}/ci/app:1", reg.host());
    let tag2 = format!("{}/ci/app:latest", reg.host());
    let meta = ctx.path().join("meta.json");
    let iid = ctx.path().join("iid");
    let c = ctx.path().to_str().unwrap();
    let out = root.ok(&[
        "build",
        "--progress",
        "plain",
        "-t",
        &tag1,
        "-t",
        &tag2,
        "--push",
        "--metadata-file",
        meta.to_str().unwrap(),
        "--iidfile",
        iid.to_str().unwrap(),
        c,
    ]);
    assert!(out.contains(&format!("pushed {tag1}@sha256:")), "{out}");
    let meta: serde_json::Value = serde_json::from_slice(&fs::read(&meta).unwrap()).unwrap();
    let id = fs::read_to_string(&iid).unwrap();
    assert_eq!(meta["image_id"], id.as_str());
    assert!(meta["manifest_digest"]
        .as_str()
        .unwrap()
        .starts_with("sha256:"));
    let pushed: Vec<&str> = meta["pushed"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect();
    assert_eq!(pushed.len(), 2, "{meta}");
    assert!(pushed[0].starts_with(&format!("{tag1}@sha256:")), "{meta}");
    // Pull into a fresh store: same image ID, same file.
    let fresh = TestRoot::new();
    fresh.ok(&["pull", "-q", &tag2]);
    let pulled = fresh.ok(&["inspect", "-f", "{{.Id}}", &tag2]);
    assert_eq!(pulled.trim(), id.trim());
    // Without a tag, --push is refused with a reason.
    let err = root.fails(&["build", "-q", "--push", c]);
    assert!(err.contains("--push needs at least one tag"), "{err}");
}
