//! Image model and tags: write/load, index.json annotations, docker-style name and ID
//! resolution, dangling images.

mod store_support;

use rbuild_layerfs::store::REF_NAME;
use rbuild_layerfs::StoreError;
use store_support::{small_image, TempStore};

#[test]
fn imported_image_is_a_valid_oci_image_whose_id_is_the_config_digest() {
    let t = TempStore::new();
    let image = small_image(&t.store, "one");
    assert_eq!(image.id(), &image.config_digest);
    let config_blob = t.store.read_blob(&image.config_digest).unwrap();
    assert_eq!(
        rbuild_layerfs::Digest::of_bytes(&config_blob),
        image.config_digest
    );
    let loaded = t.store.load_image(&image.manifest_digest).unwrap();
    assert_eq!(loaded.diff_ids(), image.diff_ids());
    assert_eq!(loaded.diff_ids().len(), 1);
    let cfg = loaded.config.config().clone().unwrap();
    assert_eq!(cfg.cmd().clone().unwrap(), ["sh"]);
    assert_eq!(cfg.env().clone().unwrap(), ["A=1"]);
    // Layer unpacked and readable.
    let dirs = t.store.image_layer_dirs(&loaded).unwrap();
    assert_eq!(
        std::fs::read_to_string(dirs[0].join("etc/hello")).unwrap(),
        "one"
    );
    let report = t.store.check().unwrap();
    assert!(report.is_consistent(), "{:?}", report.problems);
}

#[test]
fn tags_resolve_like_docker_names_and_ids() {
    let t = TempStore::new();
    let a = small_image(&t.store, "a");
    let b = small_image(&t.store, "b");
    t.store.set_tag("busybox", &a.descriptor()).unwrap();
    t.store
        .set_tag("example.com:5000/team/app:1.0", &b.descriptor())
        .unwrap();

    let by = |n: &str| t.store.resolve_image(n).map(|i| i.id().clone());
    assert_eq!(by("busybox").unwrap(), *a.id());
    assert_eq!(by("busybox:latest").unwrap(), *a.id());
    assert_eq!(by("docker.io/library/busybox:latest").unwrap(), *a.id());
    assert_eq!(by("example.com:5000/team/app:1.0").unwrap(), *b.id());
    assert_eq!(by(a.id().as_str()).unwrap(), *a.id());
    assert_eq!(by(a.id().hex()).unwrap(), *a.id());
    assert_eq!(by(a.id().short()).unwrap(), *a.id());
    assert_eq!(by(a.manifest_digest.as_str()).unwrap(), *a.id());
    assert!(matches!(
        by("busybox:other"),
        Err(StoreError::ImageNotFound(_))
    ));
    assert!(matches!(by("nothing"), Err(StoreError::ImageNotFound(_))));

    // index.json carries the ref.name annotations (what skopeo/umoci read).
    let tags = t.store.tags().unwrap();
    let names: Vec<&str> = tags.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(names, ["busybox:latest", "example.com:5000/team/app:1.0"]);
    for (name, desc) in &tags {
        assert_eq!(
            desc.annotations().as_ref().unwrap().get(REF_NAME),
            Some(name)
        );
    }
    assert!(t.store.set_tag("Bad Name", &a.descriptor()).is_err());
}

#[test]
fn retagging_leaves_the_old_image_dangling_and_removing_the_last_tag_removes_it() {
    let t = TempStore::new();
    let a = small_image(&t.store, "a");
    let b = small_image(&t.store, "b");
    t.store.set_tag("app", &a.descriptor()).unwrap();
    t.store.set_tag("app:2", &a.descriptor()).unwrap();
    t.store.set_tag("app", &b.descriptor()).unwrap();
    let listed = t.store.images_with_tags().unwrap();
    assert_eq!(listed.len(), 2, "each image listed once: {listed:?}");
    let tags_of = |id: &rbuild_layerfs::Digest| {
        t.store
            .list_images()
            .unwrap()
            .into_iter()
            .find(|(i, _)| i.id() == id)
            .map(|(_, t)| t)
    };
    assert_eq!(tags_of(a.id()).unwrap(), ["app:2"]);
    assert_eq!(tags_of(b.id()).unwrap(), ["app:latest"]);
    assert!(t.store.remove_tag("app:2").unwrap());
    assert!(!t.store.remove_tag("app:2").unwrap());
    assert_eq!(tags_of(a.id()), None, "image goes with its last tag");
    // Retagging b away from "app" leaves b dangling (listed with no tags).
    t.store.set_tag("app", &a.descriptor()).unwrap();
    assert_eq!(tags_of(b.id()).unwrap(), Vec::<String>::new());
    assert!(t.store.resolve_image(b.id().short()).is_ok());
}
