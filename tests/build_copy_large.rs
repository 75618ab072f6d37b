//! COPY/ADD of large files (copied several at a time on worker threads) keeps every file's
//! content, owner, mode and mtime, next to small files copied in order; umoci unpacks the
//! (parallel gzip) layers; a second uncached build of the same context gives the same image ID.

mod build_support;
mod common;

use build_support::{build_ok, inspect, run_sh, Context};
use common::TestRoot;
use rbuild_layerfs::Digest;

/// Deterministic bytes that do not compress (xorshift64*).
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

#[test]
fn large_files_keep_content_owner_mode_and_mtime() {
    let root = TestRoot::new();
    root.import_busybox("busybox");
    let ctx = Context::new(
        "FROM busybox\nCOPY --chown=7:8 data /data/\nADD single.bin /single.bin\nCOPY small.txt data/nested/c.bin /mixed/\n",
    );
    let files: Vec<(&str, Vec<u8>)> = vec![
        ("data/a.bin", noise(3 << 20, 1)),
        ("data/b.bin", noise((1 << 20) + 13, 2)),
        ("data/nested/c.bin", noise(5 << 20, 3)),
        ("data/nested/small.txt", b"small\n".to_vec()),
        ("single.bin", noise(2 << 20, 4)),
        ("small.txt", b"tiny\n".to_vec()),
    ];
    for (rel, content) in &files {
        ctx.write(rel, content);
    }
    ctx.chmod("data/b.bin", 0o751);
    let old = std::time::UNIX_EPOCH + std::time::Duration::from_secs(1_600_000_000);
    std::fs::File::options()
        .write(true)
        .open(ctx.path().join("data/a.bin"))
        .and_then(|f| f.set_modified(old))
        .expect("set mtime");

    let stamp = ["--timestamp", "1700000000", "-t", "large"];
    let (id, _) = build_ok(&root, &ctx, &stamp);
    let sums = run_sh(
        &root,
        &id,
        "sha256sum /data/a.bin /data/b.bin /data/nested/c.bin /data/nested/small.txt /single.bin /mixed/small.txt /mixed/c.bin",
    );
    let expect: String = [
        ("/data/a.bin", 0),
        ("/data/b.bin", 1),
        ("/data/nested/c.bin", 2),
        ("/data/nested/small.txt", 3),
        ("/single.bin", 4),
        ("/mixed/small.txt", 5),
        ("/mixed/c.bin", 2),
    ]
    .iter()
    .map(|(path, i)| format!("{}  {path}\n", Digest::of_bytes(&files[*i].1).hex()))
    .collect();
    assert_eq!(sums, expect);
    assert_eq!(
        run_sh(
            &root,
            &id,
            "stat -c '%n %u %g %a' /data/a.bin /data/b.bin /single.bin; stat -c %Y /data/a.bin"
        ),
        "/data/a.bin 7 8 644\n/data/b.bin 7 8 751\n/single.bin 0 0 644\n1600000000\n"
    );

    // umoci (Go's gzip) unpacks the layers from the store, stored-block segments and all.
    let work = tempfile::tempdir().expect("tempdir");
    let bundle = work.path().join("bundle");
    let out = std::process::Command::new("umoci")
        .args(["unpack", "--image"])
        .arg(format!("{}:large:latest", root.root_str()))
        .arg(&bundle)
        .output()
        .expect("run umoci");
    assert!(
        out.status.success(),
        "umoci unpack: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    for (rel, content) in &files[..3] {
        let unpacked = std::fs::read(bundle.join("rootfs").join(rel)).expect("unpacked file");
        assert!(&unpacked == content, "{rel} differs after umoci unpack");
    }

    // The same context built again without the cache gives the same image.
    let (again, _) = build_ok(&root, &ctx, &["--no-cache", "--timestamp", "1700000000"]);
    assert_eq!(
        inspect(&root, &again, "{{.Id}}"),
        inspect(&root, &id, "{{.Id}}")
    );
}
