//! Benchmark of the union drivers, not a test: kernel overlayfs, rbuild's FUSE driver and
//! fuse-overlayfs on the same layers, in one run. Started by bench/fuse/run.sh (release build);
//! ignored in normal test runs. Prints seconds per row and the ratios.

mod fuse_support;

use std::fs::{self, File};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use fuse_support::MountDirs;
use rbuild_layerfs::mount::{mount_union, Driver, MountSpec, UnionMount};

const SMALL_FILES: usize = 20_000;
const ARCHIVE_FILES: usize = 10_000;
const BIG_BYTES: usize = 1 << 30;

enum Mounted {
    Union(#[allow(dead_code)] UnionMount),
    FuseOverlayfs(PathBuf),
}

impl Drop for Mounted {
    fn drop(&mut self) {
        if let Mounted::FuseOverlayfs(target) = self {
            let _ = Command::new("fusermount3").arg("-u").arg(&*target).status();
        }
    }
}

fn mount(name: &str, layers: &[PathBuf], dirs: &MountDirs) -> Mounted {
    match name {
        "overlay" | "rbuild-fuse" => {
            let driver = if name == "overlay" {
                Driver::Overlay
            } else {
                Driver::Fuse
            };
            Mounted::Union(
                mount_union(
                    &MountSpec {
                        layers: layers.to_vec(),
                        upper: Some(dirs.upper.clone()),
                        work: Some(dirs.work.clone()),
                        target: dirs.target.clone(),
                    },
                    driver,
                )
                .expect("mount"),
            )
        }
        _ => {
            let lower: Vec<String> = layers
                .iter()
                .rev()
                .map(|p| p.display().to_string())
                .collect();
            let status = Command::new("fuse-overlayfs")
                .arg("-o")
                .arg(format!(
                    "lowerdir={},upperdir={},workdir={}",
                    lower.join(":"),
                    dirs.upper.display(),
                    dirs.work.display()
                ))
                .arg(&dirs.target)
                .status()
                .expect("run fuse-overlayfs");
            assert!(status.success(), "fuse-overlayfs mount failed");
            Mounted::FuseOverlayfs(dirs.target.clone())
        }
    }
}

fn timed(f: impl FnOnce()) -> f64 {
    let start = Instant::now();
    f();
    start.elapsed().as_secs_f64()
}

fn create_stat_unlink(root: &Path) {
    let dir = root.join("small");
    fs::create_dir(&dir).expect("mkdir");
    for i in 0..SMALL_FILES {
        File::create(dir.join(format!("f{i}"))).expect("create");
    }
    for i in 0..SMALL_FILES {
        fs::symlink_metadata(dir.join(format!("f{i}"))).expect("stat");
    }
    for i in 0..SMALL_FILES {
        fs::remove_file(dir.join(format!("f{i}"))).expect("unlink");
    }
}

fn write_big(path: &Path) {
    let chunk = vec![0x5au8; 1 << 20];
    let mut file = File::create(path).expect("create big");
    for _ in 0..BIG_BYTES / chunk.len() {
        file.write_all(&chunk).expect("write big");
    }
    file.sync_all().expect("fsync big");
}

fn read_big(path: &Path) {
    let mut chunk = vec![0u8; 1 << 20];
    let mut file = File::open(path).expect("open big");
    let mut total = 0;
    loop {
        let n = file.read(&mut chunk).expect("read big");
        if n == 0 {
            break;
        }
        total += n;
    }
    assert_eq!(total, BIG_BYTES);
}

/// An uncompressed tar of ARCHIVE_FILES small files in 100 directories.
fn make_archive(path: &Path) {
    let mut builder = tar::Builder::new(File::create(path).expect("create archive"));
    for i in 0..ARCHIVE_FILES {
        let data = vec![b'x'; 512 + (i * 37) % 3000];
        let mut header = tar::Header::new_gnu();
        header.set_size(data.len() as u64);
        header.set_mode(0o644);
        header.set_mtime(1_700_000_000);
        header.set_cksum();
        builder
            .append_data(&mut header, format!("pkg/d{}/file{i}", i % 100), &data[..])
            .expect("append to archive");
    }
    builder.finish().expect("finish archive");
}

/// A base layer with a 1 GiB file (for cold reads of lower data) and some directories.
fn make_layer(root: &Path) -> Vec<PathBuf> {
    let layer = root.join("layer0");
    fs::create_dir_all(layer.join("usr/share")).expect("mkdir layer");
    write_big(&layer.join("usr/share/big-lower"));
    // One read now, so the virtual disk's host-side cache treats every driver alike later.
    drop_caches();
    read_big(&layer.join("usr/share/big-lower"));
    vec![layer]
}

fn drop_caches() {
    // Cold reads of lower-layer data; harmless for other users of the machine apart from speed.
    let _ = Command::new("sync").status();
    let _ = fs::write("/proc/sys/vm/drop_caches", "3");
}

#[test]
#[ignore = "benchmark: run bench/fuse/run.sh"]
fn union_driver_benchmark() {
    let base = std::env::var_os("RBUILD_BENCH_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/var/tmp"));
    let tmp = tempfile::tempdir_in(&base).expect("bench dir");
    let layers = make_layer(tmp.path());
    let archive = tmp.path().join("archive.tar");
    make_archive(&archive);
    let drivers = ["overlay", "rbuild-fuse", "fuse-overlayfs"];
    let only = std::env::var("RBUILD_BENCH_ONLY").ok();
    let rows = [
        "20k create+stat+unlink",
        "1 GiB sequential write",
        "1 GiB seq. read (warm, best/3)",
        "1 GiB lower read (cold)",
        "unpack 10k-file archive",
    ];
    let mut results = vec![vec![0f64; drivers.len()]; rows.len()];
    for (d, name) in drivers.iter().enumerate() {
        if only.as_deref().is_some_and(|o| o != *name) {
            continue;
        }
        let dirs = MountDirs::new(tmp.path(), name);
        let mounted = mount(name, &layers, &dirs);
        let root = dirs.target.clone();
        results[0][d] = timed(|| create_stat_unlink(&root));
        let big = root.join("big");
        results[1][d] = timed(|| write_big(&big));
        // Best of three: a sub-second row is easily disturbed on a shared machine.
        results[2][d] = (0..3)
            .map(|_| timed(|| read_big(&big)))
            .fold(f64::INFINITY, f64::min);
        drop_caches();
        results[3][d] = timed(|| read_big(&root.join("usr/share/big-lower")));
        fs::create_dir(root.join("unpack")).expect("mkdir unpack");
        results[4][d] = timed(|| {
            let status = Command::new("tar")
                .arg("-xf")
                .arg(&archive)
                .arg("-C")
                .arg(root.join("unpack"))
                .status()
                .expect("run tar");
            assert!(status.success(), "tar failed on {name}");
        });
        drop(mounted);
        fs::remove_dir_all(tmp.path().join(name)).expect("clean bench dirs");
    }
    println!(
        "\n{:<30} {:>10} {:>12} {:>15} {:>13} {:>15}",
        "row (seconds)", drivers[0], drivers[1], drivers[2], "fuse/overlay", "fuse/fuse-ovl"
    );
    for (r, row) in rows.iter().enumerate() {
        let t = &results[r];
        println!(
            "{:<30} {:>10.3} {:>12.3} {:>15.3} {:>12.2}x {:>14.2}x",
            row,
            t[0],
            t[1],
            t[2],
            t[1] / t[0],
            t[1] / t[2]
        );
    }
}
