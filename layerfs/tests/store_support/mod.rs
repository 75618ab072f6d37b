//! Helpers for the store tests: a temporary store and small images made from a directory tree.
#![allow(dead_code)]

use rbuild_layerfs::import::{import_rootfs, ImportOptions};
use rbuild_layerfs::{Image, Store};
use std::fs;
use std::path::Path;

/// A store in a fresh temporary directory (removed on drop).
pub struct TempStore {
    pub dir: tempfile::TempDir,
    pub store: Store,
}

impl TempStore {
    pub fn new() -> TempStore {
        let dir = tempfile::Builder::new()
            .prefix("rbuild-store-test-")
            .tempdir()
            .expect("temp dir");
        let store = Store::open(&dir.path().join("root")).expect("open store");
        TempStore { dir, store }
    }
}

/// Writes a small tree: a file with `content`, a subdirectory, a symlink.
pub fn small_tree(dir: &Path, content: &str) {
    fs::create_dir_all(dir.join("etc")).unwrap();
    fs::write(dir.join("etc/hello"), content).unwrap();
    fs::create_dir_all(dir.join("bin")).unwrap();
    std::os::unix::fs::symlink("../etc/hello", dir.join("bin/link")).unwrap();
}

/// Imports a small tree holding `content` as an untagged image.
pub fn small_image(store: &Store, content: &str) -> Image {
    let src = tempfile::tempdir().unwrap();
    small_tree(src.path(), content);
    let opts = ImportOptions {
        changes: vec![r#"CMD ["sh"]"#.into(), "ENV A=1".into()],
        message: Some(format!("image with {content}")),
        ..ImportOptions::default()
    };
    import_rootfs(store, src.path(), &opts).expect("import small tree")
}
