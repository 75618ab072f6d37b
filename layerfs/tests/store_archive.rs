//! save -> load round trips through the docker-archive/OCI-layout tar, and a corrupt archive
//! never leaves a tag or a wrong blob behind.

mod store_support;

use rbuild_layerfs::archive::{load_archive, save_images, SaveRequest};
use store_support::{small_image, TempStore};

#[test]
fn save_then_load_into_another_store_keeps_ids_tags_and_files() {
    let a = TempStore::new();
    let image = small_image(&a.store, "round trip");
    a.store.set_tag("app:1", &image.descriptor()).unwrap();
    let mut tar = Vec::new();
    save_images(
        &a.store,
        &[SaveRequest {
            image: image.clone(),
            tags: vec!["app:1".into()],
        }],
        &mut tar,
    )
    .unwrap();

    // The archive has both faces: docker's manifest.json and an OCI layout.
    let mut names = Vec::new();
    for e in tar::Archive::new(&tar[..]).entries().unwrap() {
        names.push(e.unwrap().path().unwrap().to_string_lossy().into_owned());
    }
    for want in ["manifest.json", "index.json", "oci-layout"] {
        assert!(names.iter().any(|n| n == want), "{want} missing: {names:?}");
    }

    let b = TempStore::new();
    let loaded = load_archive(&b.store, &tar[..]).unwrap();
    assert_eq!(loaded.len(), 1);
    assert_eq!(loaded[0].tags, ["app:1"]);
    assert_eq!(
        loaded[0].image.id(),
        image.id(),
        "image ID survives save/load"
    );
    let got = b.store.resolve_image("app:1").unwrap();
    let dirs = b.store.image_layer_dirs(&got).unwrap();
    assert_eq!(
        std::fs::read_to_string(dirs[0].join("etc/hello")).unwrap(),
        "round trip"
    );
    assert!(b.store.check().unwrap().is_consistent());
}

#[test]
fn an_archive_with_a_tampered_blob_is_refused_and_tags_nothing() {
    let a = TempStore::new();
    let image = small_image(&a.store, "original");
    let mut tar = Vec::new();
    save_images(
        &a.store,
        &[SaveRequest {
            image: image.clone(),
            tags: vec!["app:1".into()],
        }],
        &mut tar,
    )
    .unwrap();
    // Rewrite the archive with the config blob's content changed (same name, same size).
    let config_name = format!("blobs/sha256/{}", image.config_digest.hex());
    let mut out = tar::Builder::new(Vec::new());
    for e in tar::Archive::new(&tar[..]).entries().unwrap() {
        let mut e = e.unwrap();
        let path = e.path().unwrap().to_string_lossy().into_owned();
        let mut data = Vec::new();
        std::io::Read::read_to_end(&mut e, &mut data).unwrap();
        if path == config_name {
            data[0] ^= 0x20;
        }
        let mut h = e.header().clone();
        out.append_data(&mut h, &path, &data[..]).unwrap();
    }
    let tampered = out.into_inner().unwrap();
    let b = TempStore::new();
    let err = load_archive(&b.store, &tampered[..]).unwrap_err();
    assert!(err.to_string().contains("digest mismatch"), "{err}");
    assert!(b.store.tags().unwrap().is_empty());
    assert!(!b.store.has_blob(&image.config_digest));
    assert!(b.store.check().unwrap().is_consistent());
}

#[test]
fn an_archive_whose_layer_does_not_match_its_diff_id_adds_no_image() {
    let a = TempStore::new();
    let image = small_image(&a.store, "original");
    let other = small_image(&a.store, "other");
    // A docker-archive whose manifest pairs image's config with other's layer.
    let mut out = tar::Builder::new(Vec::new());
    let mut add = |path: &str, data: &[u8]| {
        let mut h = tar::Header::new_gnu();
        h.set_size(data.len() as u64);
        h.set_mode(0o644);
        out.append_data(&mut h, path, data).unwrap();
    };
    let config = a.store.read_blob(&image.config_digest).unwrap();
    let layer = a.store.read_blob(&other.layer_digests()[0]).unwrap();
    add(&format!("{}.json", image.config_digest.hex()), &config);
    add("layer0/layer.tar", &layer);
    let manifest = serde_json::json!([{
        "Config": format!("{}.json", image.config_digest.hex()),
        "RepoTags": null,
        "Layers": ["layer0/layer.tar"],
    }]);
    add("manifest.json", manifest.to_string().as_bytes());
    let archive = out.into_inner().unwrap();
    let b = TempStore::new();
    let err = load_archive(&b.store, &archive[..]).unwrap_err();
    assert!(err.to_string().contains("digest mismatch"), "{err}");
    assert!(b.store.images_with_tags().unwrap().is_empty());
    assert!(b.store.check().unwrap().is_consistent());
}
