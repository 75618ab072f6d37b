//! Store::commit_upper and Store::unpack_layer against a real store.

mod common;

use std::fs;

use common::{assert_same_tree, snapshot};
use rbuild_layerfs::layer::{Compression, WriteOptions};
use rbuild_layerfs::{Digest, Store, StoreError};

#[test]
fn committed_upper_becomes_blob_and_layer_and_unpacks_again() {
    let tmp = tempfile::tempdir().unwrap();
    let store = Store::open(&tmp.path().join("root")).unwrap();
    let scratch = store.scratch_dir("upper").unwrap();
    let upper = scratch.path().join("upper");
    fs::create_dir_all(upper.join("etc")).unwrap();
    fs::write(upper.join("etc/motd"), b"hello").unwrap();
    std::os::unix::fs::symlink("motd", upper.join("etc/greeting")).unwrap();
    let before = snapshot(&upper);

    for compression in [Compression::Gzip, Compression::Zstd] {
        let upper_copy = scratch.path().join(format!("{compression:?}"));
        let status = std::process::Command::new("cp")
            .arg("-a")
            .arg(&upper)
            .arg(&upper_copy)
            .status()
            .unwrap();
        assert!(status.success());
        let opts = WriteOptions {
            compression,
            mtime_clamp: None,
        };
        let info = store.commit_upper(&upper_copy, &opts).unwrap();
        assert!(store.has_blob(&info.digest));
        assert_eq!(
            Digest::of_bytes(&store.read_blob(&info.digest).unwrap()),
            info.digest
        );
        assert!(store.has_layer(&info.diff_id));
        assert!(!upper_copy.exists(), "the upper dir is moved, not copied");
        assert_same_tree(&before, &snapshot(&store.layer_dir(&info.diff_id)));

        // Lose the unpacked layer; unpack it again from the blob.
        fs::remove_dir_all(store.layer_dir(&info.diff_id)).unwrap();
        store.unpack_layer(&info.digest, &info.diff_id).unwrap();
        assert_same_tree(&before, &snapshot(&store.layer_dir(&info.diff_id)));
        // Unpacking a present layer is a no-op.
        store.unpack_layer(&info.digest, &info.diff_id).unwrap();

        // A blob that does not match the diff ID it is announced with is refused.
        let wrong = Digest::of_bytes(b"not this layer");
        let err = store.unpack_layer(&info.digest, &wrong).unwrap_err();
        assert!(matches!(err, StoreError::DigestMismatch { .. }), "{err}");
        assert!(!store.has_layer(&wrong));
        fs::remove_dir_all(store.layer_dir(&info.diff_id)).unwrap();
    }
}
