//! Content store: layout, verified ingest, scratch dirs and the cleanup of dead processes' work.

mod store_support;

use rbuild_layerfs::{Digest, Store, StoreError};
use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use store_support::TempStore;

#[test]
fn open_creates_an_oci_layout_with_mode_0700() {
    let t = TempStore::new();
    let root = t.store.root();
    assert_eq!(
        std::fs::metadata(root).unwrap().permissions().mode() & 0o7777,
        0o700
    );
    for d in ["blobs/sha256", "layers", "cache", "containers", "tmp"] {
        assert!(root.join(d).is_dir(), "{d} missing");
    }
    let layout: serde_json::Value =
        serde_json::from_slice(&std::fs::read(root.join("oci-layout")).unwrap()).unwrap();
    assert_eq!(layout["imageLayoutVersion"], "1.0.0");
    let index: serde_json::Value =
        serde_json::from_slice(&std::fs::read(root.join("index.json")).unwrap()).unwrap();
    assert_eq!(index["schemaVersion"], 2);
    assert_eq!(index["manifests"].as_array().unwrap().len(), 0);
}

#[test]
fn ingest_commits_verified_content_only() {
    let t = TempStore::new();
    let data = b"hello blob";
    let good = Digest::of_bytes(data);

    // Wrong digest: refused, nothing committed, no temp file left.
    let wrong = Digest::of_bytes(b"something else");
    let mut ing = t.store.ingest().unwrap();
    ing.write_all(data).unwrap();
    let err = ing.commit(Some(&wrong), None).unwrap_err();
    assert!(matches!(err, StoreError::DigestMismatch { .. }), "{err}");
    assert!(!t.store.has_blob(&wrong));
    assert!(!t.store.has_blob(&good));

    // Wrong size: refused too.
    let mut ing = t.store.ingest().unwrap();
    ing.write_all(data).unwrap();
    let err = ing
        .commit(Some(&good), Some(data.len() as u64 + 1))
        .unwrap_err();
    assert!(matches!(err, StoreError::SizeMismatch { .. }), "{err}");
    assert!(!t.store.has_blob(&good));

    // A dropped ingest leaves nothing behind.
    let mut ing = t.store.ingest().unwrap();
    ing.write_all(b"abandoned").unwrap();
    drop(ing);
    assert!(!t.store.has_blob(&Digest::of_bytes(b"abandoned")));

    // Right digest and size: committed with exactly that content.
    let mut ing = t.store.ingest().unwrap();
    ing.write_all(data).unwrap();
    let (d, n) = ing.commit(Some(&good), Some(data.len() as u64)).unwrap();
    assert_eq!((d.clone(), n), (good.clone(), data.len() as u64));
    assert_eq!(t.store.read_blob(&good).unwrap(), data);
    assert_eq!(
        t.store.put_blob(data).unwrap(),
        good,
        "put_blob is idempotent"
    );

    // Only the blob is in blobs/; no ingest temp files remain in tmp/.
    let blobs: Vec<_> = std::fs::read_dir(t.store.root().join("blobs/sha256"))
        .unwrap()
        .collect();
    assert_eq!(blobs.len(), 1);
    let report = t.store.check().unwrap();
    assert!(report.is_consistent(), "{:?}", report.problems);
}

#[test]
fn put_blob_from_verifies_a_stream() {
    let t = TempStore::new();
    let data = vec![7u8; 300_000];
    let d = Digest::of_bytes(&data);
    let err = t
        .store
        .put_blob_from(&mut &data[..1000], Some(&d), Some(data.len() as u64))
        .unwrap_err();
    assert!(matches!(err, StoreError::SizeMismatch { .. }), "{err}");
    assert!(!t.store.has_blob(&d));
    let (got, n) = t
        .store
        .put_blob_from(&mut &data[..], Some(&d), Some(data.len() as u64))
        .unwrap();
    assert_eq!((got, n), (d, 300_000));
}

#[test]
fn scratch_dirs_are_removed_unless_kept_and_layers_commit_atomically() {
    let t = TempStore::new();
    let scratch = t.store.scratch_dir("unit").unwrap();
    let path = scratch.path().to_path_buf();
    assert!(path.starts_with(t.store.root().join("tmp")));
    drop(scratch);
    assert!(!path.exists());

    let diff_id = Digest::of_bytes(b"layer");
    let scratch = t.store.scratch_dir("layer").unwrap();
    let layer = scratch.path().join("l");
    std::fs::create_dir(&layer).unwrap();
    std::fs::write(layer.join("f"), "x").unwrap();
    t.store.commit_layer_dir(&layer, &diff_id).unwrap();
    assert!(t.store.has_layer(&diff_id));
    assert_eq!(
        std::fs::read_to_string(t.store.layer_dir(&diff_id).join("f")).unwrap(),
        "x"
    );
    // Committing the same layer again drops the new copy and keeps the first.
    let again = scratch.path().join("again");
    std::fs::create_dir(&again).unwrap();
    t.store.commit_layer_dir(&again, &diff_id).unwrap();
    assert!(!again.exists());
}

#[test]
fn work_of_a_dead_process_is_removed_by_the_next_open() {
    let t = TempStore::new();
    let root = t.store.root().to_path_buf();
    let tmp = root.join("tmp");
    // A dead session: its lock file is not held by anyone, its dir has half-written work.
    std::fs::write(tmp.join("deadbeefdeadbeef.lock"), "").unwrap();
    std::fs::create_dir(tmp.join("deadbeefdeadbeef")).unwrap();
    std::fs::write(tmp.join("deadbeefdeadbeef/ingest-1"), "partial").unwrap();
    // Stray work with no session at all.
    std::fs::create_dir(tmp.join("orphan")).unwrap();
    let second = Store::open(&root).unwrap();
    assert!(second.incomplete_removed_at_open() >= 2);
    assert!(!tmp.join("deadbeefdeadbeef").exists());
    assert!(!tmp.join("deadbeefdeadbeef.lock").exists());
    assert!(!tmp.join("orphan").exists());
    // The first store's session is alive (its lock is held) and was left alone.
    let scratch = t.store.scratch_dir("still-mine").unwrap();
    assert!(scratch.path().is_dir());
    drop(second);
    let third = Store::open(&root).unwrap();
    assert!(
        scratch.path().is_dir(),
        "a live session's work must survive"
    );
    drop(third);
}
