//! Push and pull against Debian's reference registry (distribution 2.8), open and with
//! htpasswd basic auth.

#[path = "../../tests/common/registry.rs"]
mod registry_server;
mod support;

use rbuild_registry::{
    pull, push, CredentialStore, ImageRef, ManifestFormat, NoProgress, RegistryError,
};
use registry_server::TestRegistry;
use std::sync::Arc;
use support::*;

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime")
}

#[test]
fn push_then_pull_round_trip_with_chunks_and_skips() {
    let registry = TestRegistry::start();
    let creds = tempfile::tempdir().unwrap();
    let src = TempStore::new();
    let big = noise(300_000, 1);
    let image = make_image(
        &src.store,
        "app:1",
        &[
            &[("etc/hello", b"hello\n")],
            &[("data/big.bin", &big), ("etc/hello", b"bye\n")],
        ],
    );
    let dest = ImageRef::parse(&format!("{}/team/app:1", registry.host())).unwrap();
    let mut opts = push_options(creds.path());
    opts.chunk_size = 64 << 10; // several PATCH requests for the big layer
    let rt = rt();
    let pushed = rt
        .block_on(push(
            &src.store,
            "app:1",
            &dest,
            &opts,
            Arc::new(NoProgress),
        ))
        .expect("push");
    assert_eq!(
        pushed.digest, image.manifest_digest,
        "OCI manifest pushed byte for byte"
    );
    // Pushing again only HEADs the blobs.
    rt.block_on(push(
        &src.store,
        "app:1",
        &dest,
        &opts,
        Arc::new(NoProgress),
    ))
    .expect("second push");

    let dst = TempStore::new();
    let pulled = rt
        .block_on(pull(
            &dst.store,
            &dest,
            &pull_options(creds.path()),
            Arc::new(NoProgress),
        ))
        .expect("pull");
    assert_eq!(pulled.manifest_digest, image.manifest_digest);
    assert_eq!(pulled.config_digest, image.config_digest);
    let local = dst
        .store
        .resolve_image(&dest.tagged_name())
        .expect("tag written");
    let dirs = dst.store.image_layer_dirs(&local).expect("layer dirs");
    assert_eq!(
        std::fs::read(dirs[0].join("etc/hello")).unwrap(),
        b"hello\n"
    );
    assert_eq!(std::fs::read(dirs[1].join("data/big.bin")).unwrap(), big);
    // Pull by digest into the same store: everything is already there.
    let by_digest = dest.with_digest(image.manifest_digest.clone());
    let again = rt
        .block_on(pull(
            &dst.store,
            &by_digest,
            &pull_options(creds.path()),
            Arc::new(NoProgress),
        ))
        .expect("pull by digest");
    assert_eq!(again.manifest_digest, image.manifest_digest);
}

#[test]
fn docker_format_push_and_cross_repo_mount() {
    let registry = TestRegistry::start();
    let creds = tempfile::tempdir().unwrap();
    let src = TempStore::new();
    make_image(
        &src.store,
        &format!("{}/base:1", registry.host()),
        &[&[("base.txt", b"base")]],
    );
    let rt = rt();
    let base = ImageRef::parse(&format!("{}/base:1", registry.host())).unwrap();
    rt.block_on(push(
        &src.store,
        &base.tagged_name(),
        &base,
        &push_options(creds.path()),
        Arc::new(NoProgress),
    ))
    .expect("push base");
    // Same layer under another name: pushed to another repository, it is mounted.
    let local = src.store.resolve_image(&base.tagged_name()).unwrap();
    src.store.set_tag("other:1", &local.descriptor()).unwrap();
    let dest = ImageRef::parse(&format!("{}/other:1", registry.host())).unwrap();
    let mut opts = push_options(creds.path());
    opts.format = Some(ManifestFormat::Docker);
    let recorder = Arc::new(Recorder::default());
    let pushed = rt
        .block_on(push(&src.store, "other:1", &dest, &opts, recorder.clone()))
        .expect("push other");
    assert!(
        recorder.statuses().iter().any(|s| s == "Mounted from base"),
        "statuses: {:?}",
        recorder.statuses()
    );
    assert_ne!(
        pushed.digest, local.manifest_digest,
        "a v2s2 manifest is a different document"
    );
    // The v2s2 manifest pulls back to the same config.
    let dst = TempStore::new();
    let pulled = rt
        .block_on(pull(
            &dst.store,
            &dest,
            &pull_options(creds.path()),
            Arc::new(NoProgress),
        ))
        .expect("pull v2s2");
    assert_eq!(pulled.manifest_digest, pushed.digest);
    assert_eq!(
        pulled.descriptor.media_type().to_string(),
        "application/vnd.docker.distribution.manifest.v2+json"
    );
    assert_eq!(pulled.config_digest, local.config_digest);
}

#[test]
fn basic_auth_registry_needs_login() {
    let registry = TestRegistry::start_with_auth("alice", "wonderland");
    let creds = tempfile::tempdir().unwrap();
    let src = TempStore::new();
    make_image(&src.store, "secret:1", &[&[("s", b"s")]]);
    let dest = ImageRef::parse(&format!("{}/secret:1", registry.host())).unwrap();
    let rt = rt();
    let err = rt
        .block_on(push(
            &src.store,
            "secret:1",
            &dest,
            &push_options(creds.path()),
            Arc::new(NoProgress),
        ))
        .expect_err("push without credentials");
    assert!(matches!(err, RegistryError::Unauthorized { .. }), "{err}");
    let store = CredentialStore::at(creds.path().join("config.json"));
    store.login(registry.host(), "alice", "wrong").unwrap();
    let err = rt
        .block_on(push(
            &src.store,
            "secret:1",
            &dest,
            &push_options(creds.path()),
            Arc::new(NoProgress),
        ))
        .expect_err("push with a wrong password");
    assert!(matches!(err, RegistryError::Unauthorized { .. }), "{err}");
    store.login(registry.host(), "alice", "wonderland").unwrap();
    rt.block_on(push(
        &src.store,
        "secret:1",
        &dest,
        &push_options(creds.path()),
        Arc::new(NoProgress),
    ))
    .expect("push after login");
    let dst = TempStore::new();
    rt.block_on(pull(
        &dst.store,
        &dest,
        &pull_options(creds.path()),
        Arc::new(NoProgress),
    ))
    .expect("pull after login");
    assert!(store.logout(registry.host()).unwrap());
    let dst = TempStore::new();
    let err = rt
        .block_on(pull(
            &dst.store,
            &dest,
            &pull_options(creds.path()),
            Arc::new(NoProgress),
        ))
        .expect_err("pull after logout");
    assert!(matches!(err, RegistryError::Unauthorized { .. }), "{err}");
    assert!(dst.store.tags().unwrap().is_empty());
}

/// Records blob statuses.
#[derive(Default)]
struct Recorder(std::sync::Mutex<Vec<String>>);

impl Recorder {
    fn statuses(&self) -> Vec<String> {
        self.0.lock().unwrap().clone()
    }
}

impl rbuild_registry::Progress for Recorder {
    fn blob_done(&self, _digest: &rbuild_layerfs::Digest, status: &str) {
        self.0.lock().unwrap().push(status.to_string());
    }
}
