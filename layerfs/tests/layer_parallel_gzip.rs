//! Gzip layers from the parallel compressor: standard gzip that gzip(1), flate2 and apply_layer
//! read, and the same bytes on every run for the same upper dir.

use std::io::{Read, Write};
use std::path::Path;
use std::process::{Command, Stdio};

use rbuild_layerfs::layer::{apply_layer, write_layer, ApplyLimits, Compression, WriteOptions};
use rbuild_layerfs::Digest;
use sha2::{Digest as _, Sha256};

/// Deterministic incompressible bytes (xorshift64*).
fn noise(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed | 1;
    (0..len)
        .map(|_| {
            x ^= x >> 12;
            x ^= x << 25;
            x ^= x >> 27;
            (x.wrapping_mul(0x2545_F491_4F6C_DD1D) >> 56) as u8
        })
        .collect()
}

/// An upper dir mixing incompressible files (several chunks, odd sizes), text and small files,
/// so both the stored and the deflate paths and chunk boundaries inside files are exercised.
fn make_upper(upper: &Path) {
    std::fs::create_dir_all(upper.join("data/text")).unwrap();
    std::fs::write(
        upper.join("data/random-a.bin"),
        noise(3 * (1 << 20) + 777, 1),
    )
    .unwrap();
    std::fs::write(upper.join("data/random-b.bin"), noise(100_001, 2)).unwrap();
    let text: String = (0..60_000)
        .map(|i| format!("entry {i}: value {}\n", i * 7))
        .collect();
    std::fs::write(upper.join("data/text/log.txt"), &text).unwrap();
    for i in 0..50 {
        std::fs::write(upper.join(format!("data/text/small-{i}")), format!("{i}\n")).unwrap();
    }
    std::fs::write(upper.join("data/zeros"), vec![0u8; 1 << 20]).unwrap();
}

fn gzip_layer(upper: &Path) -> (Vec<u8>, rbuild_layerfs::layer::LayerInfo) {
    let opts = WriteOptions {
        compression: Compression::Gzip,
        mtime_clamp: Some(1_700_000_000),
    };
    let mut blob = Vec::new();
    let info = write_layer(upper, &opts, &mut blob).unwrap();
    (blob, info)
}

#[test]
fn gzip_layers_are_standard_gzip_and_reproducible() {
    let tmp = tempfile::tempdir().unwrap();
    let upper = tmp.path().join("upper");
    make_upper(&upper);
    let (blob, info) = gzip_layer(&upper);
    assert_eq!(
        info.media_type,
        "application/vnd.oci.image.layer.v1.tar+gzip"
    );
    assert_eq!(info.size, blob.len() as u64);
    assert_eq!(info.digest, Digest::of_bytes(&blob));

    // One gzip member that flate2 decodes to the tar whose sha256 is the diff_id.
    let mut tar = Vec::new();
    flate2::read::GzDecoder::new(&blob[..])
        .read_to_end(&mut tar)
        .unwrap();
    let diff_id = Digest::from_hex(&hex::encode(Sha256::digest(&tar))).unwrap();
    assert_eq!(diff_id, info.diff_id);
    // Incompressible content is not inflated much by stored blocks, text still compresses.
    assert!(blob.len() < tar.len(), "{} >= {}", blob.len(), tar.len());

    // gzip(1) agrees (CRC and length in the trailer checked).
    let mut gzip = Command::new("gzip")
        .arg("-t")
        .stdin(Stdio::piped())
        .spawn()
        .unwrap();
    gzip.stdin.take().unwrap().write_all(&blob).unwrap();
    assert!(gzip.wait().unwrap().success(), "gzip -t rejected the layer");

    // apply_layer unpacks it with the same diff_id and the same file contents.
    let dest = tmp.path().join("applied");
    let stats = apply_layer(&blob[..], &dest, &ApplyLimits::default()).unwrap();
    assert_eq!(stats.diff_id, info.diff_id);
    for file in [
        "data/random-a.bin",
        "data/random-b.bin",
        "data/text/log.txt",
        "data/zeros",
    ] {
        assert!(
            std::fs::read(upper.join(file)).unwrap() == std::fs::read(dest.join(file)).unwrap(),
            "{file} differs after the round trip"
        );
    }

    // The same upper dir gives the same bytes again.
    let (again, info_again) = gzip_layer(&upper);
    assert_eq!(info_again, info);
    assert!(
        again == blob,
        "a second write of the same upper dir differs"
    );
}
