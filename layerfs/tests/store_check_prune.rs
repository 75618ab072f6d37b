//! `system check` finds corruption and names it; `system prune` frees what nothing references
//! and keeps what tags reference.

mod store_support;

use std::os::unix::fs::PermissionsExt;
use store_support::{small_image, TempStore};

#[test]
fn check_names_a_corrupt_blob_a_missing_blob_and_a_bad_layer_entry() {
    let t = TempStore::new();
    let image = small_image(&t.store, "content");
    t.store.set_tag("app", &image.descriptor()).unwrap();
    assert!(t.store.check().unwrap().is_consistent());

    // Flip the config blob's content.
    let config = t.store.blob_path(&image.config_digest);
    std::fs::set_permissions(&config, std::fs::Permissions::from_mode(0o644)).unwrap();
    std::fs::write(&config, b"{}").unwrap();
    // Remove the layer blob.
    let layer = image.layer_digests()[0].clone();
    std::fs::remove_file(t.store.blob_path(&layer)).unwrap();
    // A stray file in layers/.
    std::fs::write(t.store.root().join("layers/not-a-digest"), "x").unwrap();

    let report = t.store.check().unwrap();
    let text = report.problems.join("\n");
    assert!(!report.is_consistent());
    assert!(
        text.contains(&format!("blob {}", image.config_digest)) && text.contains("corrupt"),
        "{text}"
    );
    assert!(text.contains(&format!("{layer} is missing")), "{text}");
    assert!(text.contains("layers/not-a-digest"), "{text}");
}

#[test]
fn prune_removes_dangling_images_and_unreferenced_blobs_and_layers_only() {
    let t = TempStore::new();
    let kept = small_image(&t.store, "kept");
    let dangling = small_image(&t.store, "dangling");
    t.store.set_tag("kept", &kept.descriptor()).unwrap();
    let stray = t.store.put_blob(b"stray blob").unwrap();

    let report = t.store.prune().unwrap();
    assert_eq!(
        report.images_removed,
        vec![dangling.manifest_digest.clone()]
    );
    assert!(report.blobs_removed >= 4, "{report:?}");
    assert_eq!(report.layers_removed, 1, "{report:?}");
    assert!(!t.store.has_blob(&stray));
    assert!(!t.store.has_blob(&dangling.manifest_digest));
    assert!(!t.store.has_blob(&dangling.config_digest));
    assert!(!t.store.has_layer(&dangling.diff_ids()[0]));
    assert!(t.store.has_blob(&kept.manifest_digest));
    assert!(t.store.has_blob(&kept.config_digest));
    assert!(t.store.has_blob(&kept.layer_digests()[0]));
    assert!(t.store.has_layer(&kept.diff_ids()[0]));
    assert!(t.store.resolve_image("kept").is_ok());
    let check = t.store.check().unwrap();
    assert!(check.is_consistent(), "{:?}", check.problems);
    let usage = t.store.disk_usage().unwrap();
    assert_eq!((usage.images, usage.images_tagged), (1, 1));
    assert_eq!(usage.images_reclaimable, 0);
}

#[test]
fn prune_keeps_blobs_another_live_process_may_be_using() {
    let t = TempStore::new();
    let other = rbuild_layerfs::Store::open(t.store.root()).unwrap();
    // Written after the other process's session started: it could be that process's
    // in-flight work, so prune must keep it.
    let fresh = t.store.put_blob(b"in flight").unwrap();
    let report = t.store.prune().unwrap();
    assert_eq!(report.blobs_removed, 0);
    assert!(t.store.has_blob(&fresh));
    drop(other);
    let report = t.store.prune().unwrap();
    assert_eq!(report.blobs_removed, 1);
    assert!(!t.store.has_blob(&fresh));
}

#[test]
fn prune_keeps_an_untagged_image_whose_id_a_container_record_mentions() {
    let t = TempStore::new();
    let image = small_image(&t.store, "in use");
    t.store.set_tag("app", &image.descriptor()).unwrap();
    let c = t.store.root().join("containers/abc");
    std::fs::create_dir_all(&c).unwrap();
    std::fs::write(
        c.join("state.json"),
        format!(r#"{{"image_id":"{}"}}"#, image.id()),
    )
    .unwrap();
    assert_eq!(t.store.containers_using(&image), ["abc"]);
    t.store
        .remove_image_entries(&image.manifest_digest)
        .unwrap();
    let report = t.store.prune().unwrap();
    assert_eq!(report.blobs_removed, 0, "{report:?}");
    assert_eq!(report.layers_removed, 0, "{report:?}");
    assert!(t.store.has_blob(&image.manifest_digest));
    assert!(t.store.has_blob(&image.layer_digests()[0]));
    assert!(t.store.has_layer(&image.diff_ids()[0]));
    std::fs::remove_dir_all(&c).unwrap();
    let report = t.store.prune().unwrap();
    assert_eq!((report.blobs_removed, report.layers_removed), (3, 1));
}
