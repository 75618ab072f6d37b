//! Writing image configs: the same config always gives the same bytes (and so the same image
//! ID), whatever order its hash maps (labels) iterate in; raw configs are stored as given.

mod store_support;

use oci_spec::image::{Config, ImageConfiguration};
use rbuild_layerfs::import::{import_rootfs, ImportOptions};
use rbuild_layerfs::layer::LayerInfo;
use std::collections::HashMap;
use store_support::{small_image, small_tree, TempStore};

const LABELS: usize = 24;

/// Labels k00=v00 .. k23=v23, inserted in a fresh map (own hash seed) in the order of `keys`.
fn labels_in_order(keys: impl Iterator<Item = usize>) -> HashMap<String, String> {
    let mut labels = HashMap::new();
    for i in keys {
        labels.insert(format!("k{i:02}"), format!("v{i:02}"));
    }
    labels
}

/// Byte offsets of `"k00"`, `"k01"`, ... in `text`; panics if one is missing.
fn label_positions(text: &str) -> Vec<usize> {
    (0..LABELS)
        .map(|i| {
            text.find(&format!("\"k{i:02}\""))
                .unwrap_or_else(|| panic!("label k{i:02} missing from {text}"))
        })
        .collect()
}

#[test]
fn imports_with_the_same_label_changes_give_the_same_config_bytes() {
    let t = TempStore::new();
    let src = tempfile::tempdir().unwrap();
    small_tree(src.path(), "labels");
    let mut changes = vec!["LABEL a=1".to_string(), "LABEL b=2".to_string()];
    changes.extend((0..LABELS).map(|i| format!("LABEL k{i:02}=v{i:02}")));
    let opts = ImportOptions {
        changes,
        message: Some("labelled".into()),
        ..ImportOptions::default()
    };
    let mut normalised = Vec::new();
    for _ in 0..4 {
        let image = import_rootfs(&t.store, src.path(), &opts).expect("import");
        let bytes = t.store.read_blob(&image.config_digest).unwrap();
        let text = String::from_utf8(bytes).expect("config is UTF-8 JSON");
        // Import stamps the current time; everything else must be byte for byte the same.
        let created = image.config.created().clone().expect("created is set");
        let text = text.replace(&created, "CREATED");
        let positions = label_positions(&text);
        assert!(
            positions.windows(2).all(|w| w[0] < w[1]),
            "labels not in sorted order: {text}"
        );
        assert!(
            text.find("\"a\":\"1\"") < text.find("\"b\":\"2\""),
            "{text}"
        );
        normalised.push(text);
    }
    assert!(
        normalised.windows(2).all(|w| w[0] == w[1]),
        "config bytes differ between imports: {normalised:#?}"
    );
}

#[test]
fn equal_configs_get_the_same_image_id_whatever_the_label_map_order() {
    let t = TempStore::new();
    let base = small_image(&t.store, "base");
    let layer = LayerInfo {
        diff_id: base.diff_ids()[0].clone(),
        digest: base.layer_digests()[0].clone(),
        size: base.manifest.layers()[0].size(),
        media_type: base.manifest.layers()[0].media_type().to_string(),
    };
    let orders: Vec<Vec<usize>> = vec![
        (0..LABELS).collect(),
        (0..LABELS).rev().collect(),
        (0..LABELS).map(|i| (i * 7) % LABELS).collect(),
        (0..LABELS).map(|i| (i * 5 + 3) % LABELS).collect(),
    ];
    let mut ids = Vec::new();
    for order in orders {
        let mut cfg = Config::default();
        cfg.set_labels(Some(labels_in_order(order.into_iter())));
        let mut config = ImageConfiguration::default();
        config.set_created(Some("2024-01-02T03:04:05Z".into()));
        config.set_config(Some(cfg));
        let image = t
            .store
            .write_image(&config, std::slice::from_ref(&layer))
            .unwrap();
        let text = String::from_utf8(t.store.read_blob(&image.config_digest).unwrap()).unwrap();
        let positions = label_positions(&text);
        assert!(positions.windows(2).all(|w| w[0] < w[1]), "{text}");
        ids.push(image.config_digest);
    }
    assert!(ids.windows(2).all(|w| w[0] == w[1]), "{ids:?}");
}

#[test]
fn raw_configs_are_stored_as_given_and_put_image_leaves_the_index_alone() {
    let t = TempStore::new();
    let base = small_image(&t.store, "raw");
    let layers = base.manifest.layers().clone();
    // Keys out of order and a field oci-spec does not model: both must survive.
    let raw = format!(
        r#"{{"rootfs":{{"type":"layers","diff_ids":["{}"]}},"os":"linux","architecture":"amd64","config":{{"Healthcheck":{{"Test":["NONE"]}}}}}}"#,
        base.diff_ids()[0]
    );
    let before = t.store.list_images().unwrap().len();
    let put = t.store.put_image(raw.as_bytes(), layers.clone()).unwrap();
    assert_eq!(
        t.store.read_blob(&put.config_digest).unwrap(),
        raw.as_bytes()
    );
    assert_eq!(put.diff_ids(), base.diff_ids());
    assert_eq!(t.store.list_images().unwrap().len(), before);

    let written = t.store.write_image_raw(raw.as_bytes(), layers).unwrap();
    assert_eq!(written.manifest_digest, put.manifest_digest);
    let listed = t.store.list_images().unwrap();
    assert_eq!(listed.len(), before + 1);
    let (image, tags) = listed
        .iter()
        .find(|(i, _)| i.manifest_digest == written.manifest_digest)
        .expect("written image is listed");
    assert!(tags.is_empty());
    assert_eq!(image.layer_digests(), base.layer_digests());

    // A config that does not list one diff ID per layer is refused.
    let err = t
        .store
        .put_image(
            br#"{"architecture":"amd64","os":"linux","rootfs":{"type":"layers","diff_ids":[]}}"#,
            base.manifest.layers().clone(),
        )
        .unwrap_err();
    assert!(err.to_string().contains("diff IDs"), "{err}");
}
