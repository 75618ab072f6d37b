//! Test helpers: images made in a temporary store, and quiet, fast-retrying options.
#![allow(dead_code)]

use oci_spec::image::{Arch, ImageConfiguration, Os};
use rbuild_layerfs::layer::{write_layer, WriteOptions};
use rbuild_layerfs::{Image, Store};
use rbuild_registry::{ClientOptions, CredentialStore, PullOptions, PushOptions, RetryPolicy};
use std::io::Write;
use std::path::Path;
use std::time::Duration;

/// A store in a fresh temporary directory (removed on drop).
pub struct TempStore {
    pub store: Store,
    _dir: tempfile::TempDir,
}

impl TempStore {
    pub fn new() -> TempStore {
        let dir = tempfile::Builder::new()
            .prefix("rbuild-regtest-")
            .tempdir()
            .expect("temp dir");
        let store = Store::open(dir.path()).expect("open store");
        TempStore { store, _dir: dir }
    }
}

/// Deterministic, incompressible bytes.
pub fn noise(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed
        .wrapping_mul(6364136223846793005)
        .wrapping_add(1442695040888963407)
        | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 24) as u8
        })
        .collect()
}

/// Writes one layer per file list into the store and tags the image as `name`.
pub fn make_image(store: &Store, name: &str, layers: &[&[(&str, &[u8])]]) -> Image {
    let mut infos = Vec::new();
    for files in layers {
        let upper = tempfile::tempdir().expect("upper dir");
        for (path, content) in files.iter() {
            write_file(upper.path(), path, content);
        }
        let mut ingest = store.ingest().expect("ingest");
        let info =
            write_layer(upper.path(), &WriteOptions::default(), &mut ingest).expect("write layer");
        ingest
            .commit(Some(&info.digest), Some(info.size))
            .expect("commit layer blob");
        infos.push(info);
    }
    let mut config = ImageConfiguration::default();
    config.set_os(Os::Linux);
    config.set_architecture(host_arch());
    let image = store.write_image(&config, &infos).expect("write image");
    store.set_tag(name, &image.descriptor()).expect("tag image");
    image
}

pub fn host_arch() -> Arch {
    match std::env::consts::ARCH {
        "aarch64" => Arch::ARM64,
        _ => Arch::Amd64,
    }
}

fn write_file(root: &Path, rel: &str, content: &[u8]) {
    let path = root.join(rel);
    std::fs::create_dir_all(path.parent().expect("parent")).expect("mkdir");
    std::fs::File::create(&path)
        .and_then(|mut f| f.write_all(content))
        .expect("write file");
}

/// Retries quickly so fault tests stay fast.
pub fn fast_client() -> ClientOptions {
    ClientOptions {
        retry: RetryPolicy {
            attempts: 4,
            base_delay: Duration::from_millis(5),
            max_delay: Duration::from_millis(50),
        },
        connect_timeout: Some(Duration::from_secs(5)),
        read_timeout: Some(Duration::from_secs(2)),
    }
}

/// Pull options with an isolated credentials file.
pub fn pull_options(creds: &Path) -> PullOptions {
    PullOptions {
        credentials: CredentialStore::at(creds.join("config.json")),
        client: fast_client(),
        ..PullOptions::default()
    }
}

/// Push options with an isolated credentials file.
pub fn push_options(creds: &Path) -> PushOptions {
    PushOptions {
        credentials: CredentialStore::at(creds.join("config.json")),
        client: fast_client(),
        ..PushOptions::default()
    }
}
