//! The bearer-token flow and every transfer fault, through the in-process fake registry.

mod fake;
mod support;

use fake::{Bearer, FakeRegistry};
use rbuild_layerfs::{Image, Store};
use rbuild_registry::{pull, push, CredentialStore, ImageRef, NoProgress, Platform, RegistryError};
use std::sync::Arc;
use support::*;

const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";

/// A two-layer image (the second one big enough to arrive in many chunks) made in a store.
struct Fixture {
    src: TempStore,
    image: Image,
    big: Vec<u8>,
}

fn fixture() -> Fixture {
    let src = TempStore::new();
    let big = noise(400_000, 7);
    let image = make_image(
        &src.store,
        "app:1",
        &[&[("etc/os", b"fake\n")], &[("big.bin", &big)]],
    );
    Fixture { src, image, big }
}

/// Pushes the fixture's `app:1` to `lib/pushed:1` on `fake`, with the credentials kept in
/// `creds` and the test's push options as `tune` adjusts them.
fn push_app(
    fake: &FakeRegistry,
    fx: &Fixture,
    creds: &std::path::Path,
    tune: impl FnOnce(&mut rbuild_registry::PushOptions),
) -> rbuild_registry::Result<rbuild_registry::Pushed> {
    let dest = ImageRef::parse(&format!("{}/lib/pushed:1", fake.host())).unwrap();
    let mut opts = push_options(creds);
    tune(&mut opts);
    rt().block_on(push(
        &fx.src.store,
        "app:1",
        &dest,
        &opts,
        Arc::new(NoProgress),
    ))
}

/// The fake holds every layer blob of the fixture, byte for byte, and the pushed manifest.
fn assert_pushed(fake: &FakeRegistry, fx: &Fixture) {
    let s = fake.state();
    for d in fx.image.layer_digests() {
        assert_eq!(
            s.blobs.get(d.as_str()).map(|b| b.to_vec()),
            Some(fx.src.store.read_blob(&d).unwrap())
        );
    }
    assert!(s.manifests.contains_key("lib/pushed:1"));
}

/// Puts the fixture's blobs and manifest (as `lib/app:1`) into a fake registry.
fn load(fake: &FakeRegistry, fx: &Fixture) {
    for d in fx
        .image
        .layer_digests()
        .into_iter()
        .chain([fx.image.config_digest.clone()])
    {
        fake.put_blob(d.as_str(), fx.src.store.read_blob(&d).unwrap());
    }
    let manifest = fx.src.store.read_blob(&fx.image.manifest_digest).unwrap();
    fake.put_manifest("lib/app", "1", OCI_MANIFEST, manifest);
}

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap()
}

fn pull_from(
    fake: &FakeRegistry,
    dst: &Store,
    creds: &std::path::Path,
) -> Result<rbuild_registry::Pulled, RegistryError> {
    let r = ImageRef::parse(&format!("{}/lib/app:1", fake.host())).unwrap();
    rt().block_on(pull(dst, &r, &pull_options(creds), Arc::new(NoProgress)))
}

fn assert_pulled(dst: &Store, fx: &Fixture, fake: &FakeRegistry) {
    let image = dst
        .resolve_image(&format!("{}/lib/app:1", fake.host()))
        .expect("tag written");
    assert_eq!(image.manifest_digest, fx.image.manifest_digest);
    let dirs = dst.image_layer_dirs(&image).unwrap();
    assert_eq!(std::fs::read(dirs[0].join("etc/os")).unwrap(), b"fake\n");
    assert_eq!(std::fs::read(dirs[1].join("big.bin")).unwrap(), fx.big);
}

fn assert_nothing_committed(dst: &Store, fx: &Fixture) {
    assert!(dst.tags().unwrap().is_empty(), "no tag after a failed pull");
    let big_layer = &fx.image.layer_digests()[1];
    assert!(!dst.has_blob(big_layer), "the bad blob was not committed");
    assert!(
        !dst.has_layer(&fx.image.diff_ids()[1]),
        "the bad layer was not committed"
    );
    assert!(!dst.has_blob(&fx.image.manifest_digest));
}

#[test]
fn bearer_token_flow_with_login() {
    let fake = FakeRegistry::start();
    let fx = fixture();
    load(&fake, &fx);
    fake.state().bearer = Some(Bearer {
        user: Some(("alice".into(), "pw".into())),
        token: "tok-123".into(),
    });
    let creds = tempfile::tempdir().unwrap();
    let dst = TempStore::new();
    let err =
        pull_from(&fake, &dst.store, creds.path()).expect_err("the token server wants a login");
    assert!(matches!(err, RegistryError::Unauthorized { .. }), "{err}");
    CredentialStore::at(creds.path().join("config.json"))
        .login(&fake.host(), "alice", "pw")
        .unwrap();
    pull_from(&fake, &dst.store, creds.path()).expect("pull with a token");
    assert_pulled(&dst.store, &fx, &fake);
    let seen = fake.seen();
    assert!(seen.iter().any(|s| s.path == "/token"));
    assert!(seen
        .iter()
        .filter(|s| s.path.contains("/blobs/"))
        .all(|s| s.authorization.as_deref() == Some("Bearer tok-123")));
    // Push with the same token flow.
    let dest = ImageRef::parse(&format!("{}/lib/copy:2", fake.host())).unwrap();
    let mut opts = push_options(creds.path());
    opts.chunk_size = 100_000;
    rt().block_on(push(
        &fx.src.store,
        "app:1",
        &dest,
        &opts,
        Arc::new(NoProgress),
    ))
    .expect("push with a token");
    assert!(fake.state().manifests.contains_key("lib/copy:2"));
}

#[test]
fn anonymous_bearer_token() {
    let fake = FakeRegistry::start();
    let fx = fixture();
    load(&fake, &fx);
    fake.state().bearer = Some(Bearer {
        user: None,
        token: "anon".into(),
    });
    let creds = tempfile::tempdir().unwrap();
    let dst = TempStore::new();
    pull_from(&fake, &dst.store, creds.path()).expect("anonymous token pull");
    assert_pulled(&dst.store, &fx, &fake);
}

#[test]
fn dropped_connection_resumes_with_range() {
    let fake = FakeRegistry::start();
    let fx = fixture();
    load(&fake, &fx);
    fake.state().faults.drop_after = Some((150_000, 2));
    let creds = tempfile::tempdir().unwrap();
    let dst = TempStore::new();
    pull_from(&fake, &dst.store, creds.path()).expect("pull resumes");
    assert_pulled(&dst.store, &fx, &fake);
    assert!(
        fake.seen().iter().any(|s| s
            .range
            .as_deref()
            .is_some_and(|r| r.starts_with("bytes=") && r != "bytes=0-")),
        "a Range request resumed the download: {:?}",
        fake.seen()
    );
}

#[test]
fn stalled_connection_times_out_and_resumes_with_range() {
    let fake = FakeRegistry::start();
    let fx = fixture();
    load(&fake, &fx);
    // The body goes silent after 150 kB; the client's read timeout (2 s in tests) ends the wait.
    fake.state().faults.stall_after = Some((150_000, 1));
    let creds = tempfile::tempdir().unwrap();
    let dst = TempStore::new();
    pull_from(&fake, &dst.store, creds.path()).expect("pull resumes after the stall");
    assert_pulled(&dst.store, &fx, &fake);
    assert!(
        fake.seen()
            .iter()
            .any(|s| s.range.as_deref().is_some_and(|r| r != "bytes=0-")),
        "a Range request resumed the stalled download: {:?}",
        fake.seen()
    );
}

#[test]
fn endless_error_body_is_cut_short() {
    let fake = FakeRegistry::start();
    let fx = fixture();
    load(&fake, &fx);
    {
        let mut s = fake.state();
        s.faults.blob_statuses = std::iter::repeat_n(400, 100).collect();
        s.faults.endless_error_body = true;
    }
    let creds = tempfile::tempdir().unwrap();
    let dst = TempStore::new();
    let err = pull_from(&fake, &dst.store, creds.path()).expect_err("400 with an endless body");
    match &err {
        RegistryError::Status { status, body, .. } => {
            assert_eq!(*status, 400);
            assert!(body.len() <= 300 && body.starts_with("xxx"), "{body}");
        }
        other => panic!("expected a status error, got {other}"),
    }
    assert_nothing_committed(&dst.store, &fx);
}

#[test]
fn upload_answered_202_without_progress_fails_instead_of_looping() {
    let fake = FakeRegistry::start();
    let fx = fixture();
    fake.state().faults.stuck_patches = true;
    let creds = tempfile::tempdir().unwrap();
    let err = push_app(&fake, &fx, creds.path(), |o| o.chunk_size = 64 << 10)
        .expect_err("a registry that never advances");
    assert!(err.to_string().contains("kept failing"), "{err}");
    assert!(!fake.state().manifests.contains_key("lib/pushed:1"));
}

#[test]
fn dropped_connection_without_range_support_restarts_the_body() {
    let fake = FakeRegistry::start();
    let fx = fixture();
    load(&fake, &fx);
    fake.state().faults.drop_after = Some((150_000, 1));
    fake.state().faults.ignore_range = true;
    let creds = tempfile::tempdir().unwrap();
    let dst = TempStore::new();
    pull_from(&fake, &dst.store, creds.path()).expect("pull completes");
    assert_pulled(&dst.store, &fx, &fake);
}

#[test]
fn server_errors_and_429_are_retried() {
    let fake = FakeRegistry::start();
    let fx = fixture();
    load(&fake, &fx);
    {
        let mut s = fake.state();
        s.faults.blob_statuses = [500, 503, 429].into_iter().collect();
        s.faults.retry_after = Some("0".into());
    }
    let creds = tempfile::tempdir().unwrap();
    let dst = TempStore::new();
    pull_from(&fake, &dst.store, creds.path()).expect("pull after retries");
    assert_pulled(&dst.store, &fx, &fake);
}

#[test]
fn retry_after_replaces_the_backoff() {
    // The backoff is an hour; the registry's Retry-After (seconds, or an HTTP date already past)
    // says to retry at once. The pull finishing at all shows which one was used.
    for retry_after in ["0", "Thu, 01 Jan 2015 00:00:00 GMT"] {
        let fake = FakeRegistry::start();
        let fx = fixture();
        load(&fake, &fx);
        {
            let mut s = fake.state();
            s.faults.blob_statuses = [429, 503, 500].into_iter().collect();
            s.faults.retry_after = Some(retry_after.into());
        }
        let creds = tempfile::tempdir().unwrap();
        let dst = TempStore::new();
        let mut opts = pull_options(creds.path());
        opts.client.retry = rbuild_registry::RetryPolicy {
            attempts: 4,
            base_delay: std::time::Duration::from_secs(3600),
            max_delay: std::time::Duration::from_secs(3600),
        };
        let r = ImageRef::parse(&format!("{}/lib/app:1", fake.host())).unwrap();
        let pulled = rt().block_on(async {
            tokio::time::timeout(
                std::time::Duration::from_secs(30),
                pull(&dst.store, &r, &opts, Arc::new(NoProgress)),
            )
            .await
        });
        pulled
            .unwrap_or_else(|_| panic!("Retry-After {retry_after:?} ignored: still in backoff"))
            .expect("pull after the retries");
        assert_pulled(&dst.store, &fx, &fake);
        assert!(fake.state().faults.blob_statuses.is_empty());
    }
}

#[test]
fn persistent_500_fails_and_commits_nothing() {
    let fake = FakeRegistry::start();
    let fx = fixture();
    load(&fake, &fx);
    fake.state().faults.blob_statuses = std::iter::repeat_n(500, 100).collect();
    let creds = tempfile::tempdir().unwrap();
    let dst = TempStore::new();
    let err = pull_from(&fake, &dst.store, creds.path()).expect_err("500s");
    assert!(
        matches!(err, RegistryError::Status { status: 500, .. }),
        "{err}"
    );
    assert_nothing_committed(&dst.store, &fx);
}

#[test]
fn wrong_digest_is_rejected_and_nothing_committed() {
    let fake = FakeRegistry::start();
    let fx = fixture();
    load(&fake, &fx);
    fake.state().faults.corrupt = true;
    let creds = tempfile::tempdir().unwrap();
    let dst = TempStore::new();
    let err = pull_from(&fake, &dst.store, creds.path()).expect_err("corrupt blobs");
    let msg = err.to_string();
    assert!(msg.contains("digest") || msg.contains("hashes"), "{msg}");
    assert_nothing_committed(&dst.store, &fx);
}

#[test]
fn truncated_body_is_rejected_and_nothing_committed() {
    let fake = FakeRegistry::start();
    let fx = fixture();
    load(&fake, &fx);
    fake.state().faults.truncate = true;
    let creds = tempfile::tempdir().unwrap();
    let dst = TempStore::new();
    let err = pull_from(&fake, &dst.store, creds.path()).expect_err("short bodies");
    assert!(err.to_string().contains("truncated"), "{err}");
    assert_nothing_committed(&dst.store, &fx);
}

#[test]
fn redirect_to_another_host_carries_no_credentials() {
    let fake = FakeRegistry::start();
    let cdn = FakeRegistry::start();
    let fx = fixture();
    load(&fake, &fx);
    load(&cdn, &fx);
    fake.state().bearer = Some(Bearer {
        user: Some(("alice".into(), "pw".into())),
        token: "secret-token".into(),
    });
    fake.state().faults.redirect_blobs = Some(cdn.url());
    let creds = tempfile::tempdir().unwrap();
    CredentialStore::at(creds.path().join("config.json"))
        .login(&fake.host(), "alice", "pw")
        .unwrap();
    let dst = TempStore::new();
    pull_from(&fake, &dst.store, creds.path()).expect("pull through the redirect");
    assert_pulled(&dst.store, &fx, &fake);
    let cdn_seen = cdn.seen();
    assert!(
        cdn_seen.iter().any(|s| s.path.contains("/blobs/")),
        "blobs came from the other host"
    );
    assert!(
        cdn_seen.iter().all(|s| s.authorization.is_none()),
        "credentials leaked: {cdn_seen:?}"
    );
}

#[test]
fn foreign_layer_urls_get_no_credentials() {
    let fake = FakeRegistry::start();
    let cdn = FakeRegistry::start();
    let fx = fixture();
    load(&fake, &fx);
    load(&cdn, &fx);
    // Rewrite the manifest so the big layer lists a foreign URL.
    let mut doc: serde_json::Value =
        serde_json::from_slice(&fx.src.store.read_blob(&fx.image.manifest_digest).unwrap())
            .unwrap();
    let big = fx.image.layer_digests()[1].clone();
    doc["layers"][1]["urls"] = serde_json::json!([format!("{}/foreign/{big}", cdn.url())]);
    fake.put_manifest(
        "lib/app",
        "1",
        OCI_MANIFEST,
        serde_json::to_vec(&doc).unwrap(),
    );
    fake.state().blobs.remove(big.as_str());
    fake.state().bearer = Some(Bearer {
        user: Some(("alice".into(), "pw".into())),
        token: "secret-token".into(),
    });
    let creds = tempfile::tempdir().unwrap();
    CredentialStore::at(creds.path().join("config.json"))
        .login(&fake.host(), "alice", "pw")
        .unwrap();
    let dst = TempStore::new();
    pull_from(&fake, &dst.store, creds.path()).expect("pull with a foreign layer");
    let cdn_seen = cdn.seen();
    assert!(cdn_seen.iter().any(|s| s.path.starts_with("/foreign/")));
    assert!(
        cdn_seen.iter().all(|s| s.authorization.is_none()),
        "credentials leaked: {cdn_seen:?}"
    );
    assert!(dst.store.has_blob(&big));
}

#[test]
fn oversized_manifest_is_refused() {
    let fake = FakeRegistry::start();
    let fx = fixture();
    load(&fake, &fx);
    let mut doc: serde_json::Value =
        serde_json::from_slice(&fx.src.store.read_blob(&fx.image.manifest_digest).unwrap())
            .unwrap();
    doc["annotations"] = serde_json::json!({ "padding": "x".repeat(5 << 20) });
    fake.put_manifest(
        "lib/app",
        "1",
        OCI_MANIFEST,
        serde_json::to_vec(&doc).unwrap(),
    );
    let creds = tempfile::tempdir().unwrap();
    let dst = TempStore::new();
    let err = pull_from(&fake, &dst.store, creds.path()).expect_err("5 MiB manifest");
    assert!(err.to_string().contains("allowed"), "{err}");
    assert!(dst.store.tags().unwrap().is_empty());
}

#[test]
fn media_type_contradicting_content_is_refused() {
    let fake = FakeRegistry::start();
    let fx = fixture();
    load(&fake, &fx);
    fake.state().faults.manifest_content_type = Some(OCI_INDEX.into());
    let creds = tempfile::tempdir().unwrap();
    let dst = TempStore::new();
    let err =
        pull_from(&fake, &dst.store, creds.path()).expect_err("index content type on a manifest");
    assert!(err.to_string().contains("contradicts"), "{err}");
    // A layer whose bytes are not what its media type says is refused too.
    fake.state().faults.manifest_content_type = None;
    let mut doc: serde_json::Value =
        serde_json::from_slice(&fx.src.store.read_blob(&fx.image.manifest_digest).unwrap())
            .unwrap();
    doc["layers"][1]["mediaType"] =
        serde_json::json!("application/vnd.oci.image.layer.v1.tar+zstd");
    fake.put_manifest(
        "lib/app",
        "1",
        OCI_MANIFEST,
        serde_json::to_vec(&doc).unwrap(),
    );
    let err = pull_from(&fake, &dst.store, creds.path()).expect_err("gzip bytes announced as zstd");
    assert!(err.to_string().contains("media type"), "{err}");
    assert_nothing_committed(&dst.store, &fx);
}

#[test]
fn index_resolves_to_the_wanted_platform() {
    let fake = FakeRegistry::start();
    let fx = fixture();
    load(&fake, &fx);
    let manifest = fx.src.store.read_blob(&fx.image.manifest_digest).unwrap();
    fake.put_manifest(
        "lib/app",
        fx.image.manifest_digest.as_str(),
        OCI_MANIFEST,
        manifest.clone(),
    );
    let host = Platform::host();
    let index = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": OCI_INDEX,
        "manifests": [
            {"mediaType": OCI_MANIFEST, "size": 7, "digest": format!("sha256:{}", "1".repeat(64)),
             "platform": {"os": "linux", "architecture": "s390x"}},
            {"mediaType": OCI_MANIFEST, "size": manifest.len(), "digest": fx.image.manifest_digest.to_string(),
             "platform": {"os": host.os, "architecture": host.architecture}},
        ]
    });
    let index_bytes = serde_json::to_vec(&index).unwrap();
    fake.put_manifest("lib/app", "1", OCI_INDEX, index_bytes.clone());
    let creds = tempfile::tempdir().unwrap();
    let dst = TempStore::new();
    let pulled = pull_from(&fake, &dst.store, creds.path()).expect("pull an index");
    assert_eq!(pulled.manifest_digest, fx.image.manifest_digest);
    assert_eq!(
        pulled.resolved_digest,
        rbuild_layerfs::Digest::of_bytes(&index_bytes)
    );
    assert_pulled(&dst.store, &fx, &fake);
    let r = ImageRef::parse(&format!("{}/lib/app:1", fake.host())).unwrap();
    let mut opts = pull_options(creds.path());
    opts.platform = Some(Platform::parse("linux/riscv64").unwrap());
    let err = rt()
        .block_on(pull(&dst.store, &r, &opts, Arc::new(NoProgress)))
        .expect_err("no riscv64");
    assert!(
        matches!(err, RegistryError::NoMatchingPlatform { .. }),
        "{err}"
    );
}

#[test]
fn upload_resumes_from_the_registry_offset_after_a_failed_chunk() {
    // Small chunks, and the default: the whole blob streamed in one request.
    for chunk in [Some(64 << 10), None] {
        let fake = FakeRegistry::start();
        let fx = fixture();
        fake.state().faults.fail_patches = 1;
        let creds = tempfile::tempdir().unwrap();
        push_app(&fake, &fx, creds.path(), |o| {
            o.chunk_size = chunk.unwrap_or(o.chunk_size);
            o.jobs = 1;
        })
        .expect("push resumes");
        assert_eq!(fake.state().faults.fail_patches, 0, "a PATCH failed");
        assert_pushed(&fake, &fx);
    }
}

#[test]
fn upload_goes_on_when_the_registry_reports_0_0_after_a_failed_chunk() {
    // The registry then reports `Range: 0-0`, the reference registry's answer both for an empty
    // upload and for one byte held. Nothing held: the upload goes on from byte 0, not 1. One byte
    // held: the chunk from byte 0 is refused (416) and a new upload starts.
    for (kept, chunk) in [
        (0, Some(64 << 10)),
        (0, None),
        (1, Some(64 << 10)),
        (1, None),
    ] {
        let fake = FakeRegistry::start();
        let fx = fixture();
        {
            let mut s = fake.state();
            s.faults.fail_patches = 1;
            s.faults.failed_patch_keeps = Some(kept);
        }
        let creds = tempfile::tempdir().unwrap();
        push_app(&fake, &fx, creds.path(), |o| {
            o.chunk_size = chunk.unwrap_or(o.chunk_size);
            o.jobs = 1;
        })
        .unwrap_or_else(|e| panic!("push (chunk {chunk:?}) after a failed chunk left {kept}: {e}"));
        assert_pushed(&fake, &fx);
        let s = fake.state();
        assert_eq!(s.faults.fail_patches, 0, "a PATCH failed");
        let posts = s
            .seen
            .iter()
            .filter(|r| r.method == "POST" && r.path.ends_with("/blobs/uploads/"))
            .count();
        // One upload per blob (config and two layers), plus the new one after a 416.
        let blobs = fx.image.layer_digests().len() + 1;
        assert_eq!(
            posts,
            blobs + kept,
            "uploads started (chunk {chunk:?}, kept {kept})"
        );
    }
}

#[test]
fn bad_upload_location_is_an_error() {
    let fake = FakeRegistry::start();
    let fx = fixture();
    fake.state().faults.upload_location = Some("http://[::1".into());
    let creds = tempfile::tempdir().unwrap();
    let err = push_app(&fake, &fx, creds.path(), |_| {}).expect_err("bad Location");
    assert!(err.to_string().contains("Location"), "{err}");
    assert!(
        !fake.state().manifests.contains_key("lib/pushed:1"),
        "no manifest after a failed push"
    );
}

#[test]
fn docker_hub_references_use_a_configured_mirror() {
    let mirror = FakeRegistry::start();
    let fx = fixture();
    for d in fx
        .image
        .layer_digests()
        .into_iter()
        .chain([fx.image.config_digest.clone()])
    {
        mirror.put_blob(d.as_str(), fx.src.store.read_blob(&d).unwrap());
    }
    let manifest = fx.src.store.read_blob(&fx.image.manifest_digest).unwrap();
    mirror.put_manifest("library/app", "1", OCI_MANIFEST, manifest);
    let creds = tempfile::tempdir().unwrap();
    let mut opts = pull_options(creds.path());
    // The first mirror is down; the second one serves the image.
    let dead = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let dead_url = format!("http://{}", dead.local_addr().unwrap());
    drop(dead);
    opts.config.registry_mirrors = vec![dead_url, mirror.url()];
    let dst = TempStore::new();
    let r = ImageRef::parse("app:1").unwrap();
    let pulled = rt()
        .block_on(pull(&dst.store, &r, &opts, Arc::new(NoProgress)))
        .expect("pull via mirror");
    assert_eq!(pulled.manifest_digest, fx.image.manifest_digest);
    assert_eq!(pulled.tag.as_deref(), Some("docker.io/library/app:1"));
    assert!(dst.store.resolve_image("app:1").is_ok(), "tagged as app:1");
}

#[test]
fn cross_repo_mount_answered_202_falls_back_to_upload() {
    let fake = FakeRegistry::start();
    let fx = fixture();
    // A local tag of another repository on the same registry names the same blobs.
    let base = format!("{}/lib/base:1", fake.host());
    fx.src.store.set_tag(&base, &fx.image.descriptor()).unwrap();
    let dest = ImageRef::parse(&format!("{}/lib/app:2", fake.host())).unwrap();
    let creds = tempfile::tempdir().unwrap();
    rt().block_on(push(
        &fx.src.store,
        "app:1",
        &dest,
        &push_options(creds.path()),
        Arc::new(NoProgress),
    ))
    .expect("push falls back to an upload");
    let seen = fake.seen();
    for d in fx.image.layer_digests() {
        let mount = format!("mount={}&from=lib/base", d.as_str().replace(':', "%3A"));
        let mount_plain = format!("mount={}&from=lib/base", d.as_str());
        assert!(
            seen.iter().any(|s| s.method == "POST"
                && s.path == "/v2/lib/app/blobs/uploads/"
                && (s.query == mount || s.query == mount_plain)),
            "mount of {d} from lib/base attempted: {seen:?}"
        );
    }
    let s = fake.state();
    for d in fx.image.layer_digests() {
        assert!(
            s.blobs.contains_key(d.as_str()),
            "{d} uploaded after the 202"
        );
    }
    assert!(s.manifests.contains_key("lib/app:2"));
    // The manifest goes last: after every blob upload was finished.
    let last = seen.last().expect("requests");
    assert_eq!(
        (last.method.as_str(), last.path.as_str()),
        ("PUT", "/v2/lib/app/manifests/2")
    );
    let finished = seen
        .iter()
        .filter(|s| s.method == "PUT" && s.path.contains("/blobs/uploads/"))
        .count();
    assert_eq!(finished, fx.image.layer_digests().len() + 1, "{seen:?}");
}

#[test]
fn insecure_endpoint_falls_back_from_https_to_http() {
    use rbuild_registry::config::Endpoint;
    use rbuild_registry::{Access, Session};
    let fake = FakeRegistry::start();
    let fx = fixture();
    load(&fake, &fx);
    let endpoint = Endpoint {
        base_url: format!("https://{}", fake.host()),
        skip_tls_verify: true,
        http_fallback: true,
        https_fallback: false,
    };
    let session = rt()
        .block_on(Session::connect(
            &endpoint,
            &fake.host(),
            "lib/app",
            Access::Pull,
            None,
            &fast_client(),
        ))
        .expect("connect falls back to plain HTTP");
    assert!(session.url("/v2/").unwrap().as_str().starts_with("http://"));
    // The failed TLS handshake is not retried: one connection for it, one for plain HTTP.
    assert_eq!(fake.state().connections, 2);
    let strict = Endpoint {
        base_url: format!("https://{}", fake.host()),
        skip_tls_verify: false,
        http_fallback: false,
        https_fallback: false,
    };
    let err = rt()
        .block_on(Session::connect(
            &strict,
            &fake.host(),
            "lib/app",
            Access::Pull,
            None,
            &fast_client(),
        ))
        .expect_err("verified HTTPS to a plain-HTTP registry");
    assert!(matches!(err, RegistryError::Https { .. }), "{err}");
    assert!(err.to_string().contains("--tls-verify=false"), "{err}");
    assert_eq!(fake.state().connections, 3, "one more, not retried");
}

/// Serves the fixture with its big layer replaced by `blob` (the manifest names the new blob's
/// digest and size, so only the content itself is wrong) and pulls it; returns the error and the
/// replaced digest.
fn pull_with_layer_blob(blob: Vec<u8>) -> (RegistryError, rbuild_layerfs::Digest, TempStore) {
    let fake = FakeRegistry::start();
    let fx = fixture();
    load(&fake, &fx);
    let digest = rbuild_layerfs::Digest::of_bytes(&blob);
    let size = blob.len();
    fake.put_blob(digest.as_str(), blob);
    let mut doc: serde_json::Value =
        serde_json::from_slice(&fx.src.store.read_blob(&fx.image.manifest_digest).unwrap())
            .unwrap();
    doc["layers"][1]["digest"] = serde_json::json!(digest.as_str());
    doc["layers"][1]["size"] = serde_json::json!(size);
    fake.put_manifest(
        "lib/app",
        "1",
        OCI_MANIFEST,
        serde_json::to_vec(&doc).unwrap(),
    );
    let creds = tempfile::tempdir().unwrap();
    let dst = TempStore::new();
    let err = pull_from(&fake, &dst.store, creds.path()).expect_err("damaged layer accepted");
    assert!(
        dst.store.tags().unwrap().is_empty(),
        "no tag after a failed pull"
    );
    assert!(
        !dst.store.has_blob(&digest),
        "the damaged blob was not committed"
    );
    assert!(
        !dst.store.has_layer(&fx.image.diff_ids()[1]),
        "the damaged layer was not committed"
    );
    (err, digest, dst)
}

#[test]
fn damaged_gzip_with_a_matching_blob_digest_is_refused_naming_the_layer() {
    let fx = fixture();
    let good = fx
        .src
        .store
        .read_blob(&fx.image.layer_digests()[1])
        .unwrap();
    // The CRC32 of the gzip trailer: the data (and so the diff_id) is intact, only the gzip
    // check can tell.
    let mut bad_crc = good.clone();
    let n = bad_crc.len();
    bad_crc[n - 8] ^= 0x55;
    // Cut short inside the deflate data: no trailer at all.
    let truncated = good[..good.len() / 2].to_vec();
    // Not gzip past the header.
    let mut garbage = good[..10].to_vec();
    garbage.extend(support::noise(5000, 3));
    for (what, blob) in [
        ("bad crc", bad_crc),
        ("truncated", truncated),
        ("garbage", garbage),
    ] {
        let (err, digest, _dst) = pull_with_layer_blob(blob);
        let msg = err.to_string();
        assert!(msg.contains(digest.as_str()), "{what}: {msg}");
        assert!(msg.contains("damaged"), "{what}: {msg}");
    }
}

#[test]
fn layer_whose_content_disagrees_with_the_config_diff_id_is_refused() {
    // A valid gzip of a different tar: blob digest and gzip check pass, the diff_id does not.
    let other = TempStore::new();
    let image = make_image(&other.store, "x:1", &[&[("big.bin", b"other content")]]);
    let blob = other.store.read_blob(&image.layer_digests()[0]).unwrap();
    let (err, digest, _dst) = pull_with_layer_blob(blob);
    let msg = err.to_string();
    assert!(msg.contains(digest.as_str()), "{msg}");
    assert!(msg.contains("diff_id"), "{msg}");
}

#[test]
fn blobs_already_in_the_store_are_unpacked_locally_not_downloaded() {
    let fake = FakeRegistry::start();
    let fx = fixture();
    load(&fake, &fx);
    // The image's blobs are in the source store, its layers are not unpacked there.
    for diff_id in fx.image.diff_ids() {
        assert!(!fx.src.store.has_layer(&diff_id), "fixture layer unpacked");
    }
    let creds = tempfile::tempdir().unwrap();
    pull_from(&fake, &fx.src.store, creds.path()).expect("pull");
    let layers = fx.image.layer_digests();
    let layer_gets = fake
        .seen()
        .iter()
        .filter(|s| layers.iter().any(|d| s.path.ends_with(d.as_str())))
        .count();
    assert_eq!(
        layer_gets, 0,
        "a layer blob already in the store was downloaded"
    );
    assert_pulled(&fx.src.store, &fx, &fake);
}

#[test]
fn decompressed_tar_is_not_sniffed_for_compression_again() {
    use std::io::Write;
    use std::os::unix::ffi::OsStrExt;
    // A tar whose first entry name begins with gzip's magic bytes, gzipped: the layer is decoded
    // once, as its media type says, never a second time because of what the tar looks like.
    let name = std::ffi::OsStr::from_bytes(b"\x1f\x8b-not-gzip");
    let content = b"plain file\n";
    let mut builder = tar::Builder::new(Vec::new());
    let mut header = tar::Header::new_ustar();
    header.set_path(name).unwrap();
    header.set_size(content.len() as u64);
    header.set_mode(0o644);
    header.set_cksum();
    builder.append(&header, &content[..]).unwrap();
    let tar = builder.into_inner().unwrap();
    assert!(tar.starts_with(b"\x1f\x8b"));
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    gz.write_all(&tar).unwrap();
    let blob = gz.finish().unwrap();

    let digest = rbuild_layerfs::Digest::of_bytes(&blob);
    let diff_id = rbuild_layerfs::Digest::of_bytes(&tar);
    let config = serde_json::to_vec(&serde_json::json!({
        "architecture": host_arch().to_string(),
        "os": "linux",
        "config": {},
        "rootfs": {"type": "layers", "diff_ids": [diff_id.as_str()]},
    }))
    .unwrap();
    let config_digest = rbuild_layerfs::Digest::of_bytes(&config);
    let manifest = serde_json::to_vec(&serde_json::json!({
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "config": {
            "mediaType": "application/vnd.oci.image.config.v1+json",
            "digest": config_digest.as_str(),
            "size": config.len(),
        },
        "layers": [{
            "mediaType": "application/vnd.oci.image.layer.v1.tar+gzip",
            "digest": digest.as_str(),
            "size": blob.len(),
        }],
    }))
    .unwrap();
    let fake = FakeRegistry::start();
    fake.put_blob(digest.as_str(), blob);
    fake.put_blob(config_digest.as_str(), config);
    fake.put_manifest("lib/app", "1", OCI_MANIFEST, manifest);
    let creds = tempfile::tempdir().unwrap();
    let dst = TempStore::new();
    pull_from(&fake, &dst.store, creds.path()).expect("pull");
    let image = dst
        .store
        .resolve_image(&format!("{}/lib/app:1", fake.host()))
        .expect("tag written");
    let dirs = dst.store.image_layer_dirs(&image).unwrap();
    assert_eq!(std::fs::read(dirs[0].join(name)).unwrap(), content);
}

/// Serves the fixture with the big layer's descriptor size changed by `delta` bytes (the blob is
/// unchanged) and pulls it; returns the error.
fn pull_with_layer_size_off_by(delta: i64) -> RegistryError {
    let fake = FakeRegistry::start();
    let fx = fixture();
    load(&fake, &fx);
    let mut doc: serde_json::Value =
        serde_json::from_slice(&fx.src.store.read_blob(&fx.image.manifest_digest).unwrap())
            .unwrap();
    let size = doc["layers"][1]["size"].as_i64().unwrap();
    doc["layers"][1]["size"] = serde_json::json!(size + delta);
    fake.put_manifest(
        "lib/app",
        "1",
        OCI_MANIFEST,
        serde_json::to_vec(&doc).unwrap(),
    );
    let creds = tempfile::tempdir().unwrap();
    let dst = TempStore::new();
    let err = pull_from(&fake, &dst.store, creds.path()).expect_err("wrong size accepted");
    assert_nothing_committed(&dst.store, &fx);
    err
}

#[test]
fn blob_whose_size_differs_from_its_descriptor_is_rejected_and_nothing_committed() {
    let err = pull_with_layer_size_off_by(-10);
    assert!(err.to_string().contains("longer than"), "{err}");
    let err = pull_with_layer_size_off_by(10);
    assert!(err.to_string().contains("truncated"), "{err}");
}

/// Puts into `fake` a copy of the fixture whose config says `architecture`/`variant`, under its
/// digest in `lib/app`; returns the manifest bytes and digest.
fn platform_image(
    fake: &FakeRegistry,
    fx: &Fixture,
    architecture: &str,
    variant: Option<&str>,
) -> (Vec<u8>, rbuild_layerfs::Digest) {
    let mut config: serde_json::Value =
        serde_json::from_slice(&fx.src.store.read_blob(&fx.image.config_digest).unwrap()).unwrap();
    config["architecture"] = serde_json::json!(architecture);
    if let Some(v) = variant {
        config["variant"] = serde_json::json!(v);
    }
    let config = serde_json::to_vec(&config).unwrap();
    let config_digest = rbuild_layerfs::Digest::of_bytes(&config);
    let mut manifest: serde_json::Value =
        serde_json::from_slice(&fx.src.store.read_blob(&fx.image.manifest_digest).unwrap())
            .unwrap();
    manifest["config"]["digest"] = serde_json::json!(config_digest.as_str());
    manifest["config"]["size"] = serde_json::json!(config.len());
    let manifest = serde_json::to_vec(&manifest).unwrap();
    let digest = rbuild_layerfs::Digest::of_bytes(&manifest);
    fake.put_blob(config_digest.as_str(), config);
    fake.put_manifest("lib/app", digest.as_str(), OCI_MANIFEST, manifest.clone());
    (manifest, digest)
}

#[test]
fn index_entries_are_chosen_by_variant() {
    let fake = FakeRegistry::start();
    let fx = fixture();
    load(&fake, &fx);
    let v6 = platform_image(&fake, &fx, "arm", Some("v6"));
    let v7 = platform_image(&fake, &fx, "arm", Some("v7"));
    let arm64 = platform_image(&fake, &fx, "arm64", None);
    let entry = |(m, d): &(Vec<u8>, rbuild_layerfs::Digest), arch: &str, variant: Option<&str>| {
        let mut platform = serde_json::json!({"os": "linux", "architecture": arch});
        if let Some(v) = variant {
            platform["variant"] = serde_json::json!(v);
        }
        serde_json::json!({"mediaType": OCI_MANIFEST, "size": m.len(), "digest": d.as_str(),
                           "platform": platform})
    };
    let index = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": OCI_INDEX,
        "manifests": [
            entry(&v6, "arm", Some("v6")),
            entry(&v7, "arm", Some("v7")),
            entry(&arm64, "arm64", None),
        ]
    });
    fake.put_manifest(
        "lib/app",
        "1",
        OCI_INDEX,
        serde_json::to_vec(&index).unwrap(),
    );
    let creds = tempfile::tempdir().unwrap();
    let r = ImageRef::parse(&format!("{}/lib/app:1", fake.host())).unwrap();
    let pull_for = |platform: &str| {
        let dst = TempStore::new();
        let mut opts = pull_options(creds.path());
        opts.platform = Some(Platform::parse(platform).unwrap());
        let pulled = rt().block_on(pull(&dst.store, &r, &opts, Arc::new(NoProgress)));
        pulled.map(|p| p.manifest_digest)
    };
    // v7 listed after v6 is still the one picked for arm/v7; arm64 without a variant is v8.
    assert_eq!(pull_for("linux/arm/v7").unwrap(), v7.1);
    assert_eq!(pull_for("linux/arm/v6").unwrap(), v6.1);
    assert_eq!(pull_for("linux/arm64/v8").unwrap(), arm64.1);
    assert_eq!(pull_for("linux/arm64").unwrap(), arm64.1);
    match pull_for("linux/arm/v5") {
        Err(RegistryError::NoMatchingPlatform { available, .. }) => {
            assert_eq!(available, "linux/arm/v6, linux/arm/v7, linux/arm64")
        }
        other => panic!("arm/v5 from an index without it: {other:?}"),
    }
}

#[test]
fn layers_download_four_at_a_time() {
    // Six layers; the fake holds each layer GET until four are in flight (or 3 s pass).
    let src = TempStore::new();
    let files: Vec<(String, Vec<u8>)> = (0..6)
        .map(|i| (format!("layer{i}.bin"), noise(20_000, i as u64)))
        .collect();
    let layers: Vec<Vec<(&str, &[u8])>> = files
        .iter()
        .map(|(n, d)| vec![(n.as_str(), d.as_slice())])
        .collect();
    let layer_refs: Vec<&[(&str, &[u8])]> = layers.iter().map(|l| l.as_slice()).collect();
    let image = make_image(&src.store, "app:1", &layer_refs);
    let fake = FakeRegistry::start();
    let fx = Fixture {
        src,
        image,
        big: Vec::new(),
    };
    load(&fake, &fx);
    {
        let mut s = fake.state();
        s.faults.gated_blobs = fx
            .image
            .layer_digests()
            .iter()
            .map(|d| d.to_string())
            .collect();
        s.faults.gate_width = 4;
    }
    let creds = tempfile::tempdir().unwrap();
    let dst = TempStore::new();
    let opts = pull_options(creds.path());
    assert_eq!(opts.jobs, 4, "the default");
    let r = ImageRef::parse(&format!("{}/lib/app:1", fake.host())).unwrap();
    rt().block_on(pull(&dst.store, &r, &opts, Arc::new(NoProgress)))
        .expect("pull");
    assert_eq!(
        fake.state().gated_max_in_flight,
        4,
        "layer downloads in flight at once"
    );
    let image = dst
        .store
        .resolve_image(&format!("{}/lib/app:1", fake.host()))
        .unwrap();
    let dirs = dst.store.image_layer_dirs(&image).unwrap();
    for (dir, (name, data)) in dirs.iter().zip(&files) {
        assert_eq!(&std::fs::read(dir.join(name)).unwrap(), data);
    }
}

/// Files named `name` anywhere below `dir`, with their contents.
fn find_files(dir: &std::path::Path, name: &str, out: &mut Vec<Vec<u8>>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        let Ok(kind) = entry.file_type() else {
            continue;
        };
        if kind.is_dir() {
            find_files(&path, name, out);
        } else if kind.is_file() && entry.file_name() == name {
            out.extend(std::fs::read(&path).ok());
        }
    }
}

#[test]
fn a_layer_is_unpacked_while_it_downloads() {
    // One layer: a small file, then 3 MiB. The body stops after 2 MiB (until the client's read
    // timeout resumes it): by then the small file must already be unpacked in the store. (The
    // network chunks reach the unpacker in 512 KiB buffers: a stall before the first one is full
    // would show nothing.)
    let src = TempStore::new();
    let big = noise(3 << 20, 11);
    let image = make_image(
        &src.store,
        "app:1",
        &[&[("a-first.txt", b"first\n"), ("z-big.bin", &big)]],
    );
    let fake = FakeRegistry::start();
    let fx = Fixture { src, image, big };
    load(&fake, &fx);
    fake.state().faults.stall_after = Some((2 << 20, 1));
    let creds = tempfile::tempdir().unwrap();
    let dst = TempStore::new();
    let unpacked_early = std::thread::scope(|s| {
        let pulling = s.spawn(|| pull_from(&fake, &dst.store, creds.path()));
        let seen = loop {
            let mut found = Vec::new();
            find_files(dst.store.root(), "a-first.txt", &mut found);
            if found.iter().any(|c| c == b"first\n") {
                // Still in the stall: the resuming Range request has not been made.
                let resumed = fake
                    .seen()
                    .iter()
                    .any(|s| s.range.as_deref().is_some_and(|r| r != "bytes=0-"));
                break !resumed;
            }
            if pulling.is_finished() {
                break false;
            }
            std::thread::sleep(std::time::Duration::from_millis(5));
        };
        pulling.join().unwrap().expect("pull");
        seen
    });
    assert!(
        unpacked_early,
        "the first file appeared only after the download went on"
    );
    let image = dst
        .store
        .resolve_image(&format!("{}/lib/app:1", fake.host()))
        .unwrap();
    let dirs = dst.store.image_layer_dirs(&image).unwrap();
    assert_eq!(std::fs::read(dirs[0].join("z-big.bin")).unwrap(), fx.big);
    // The download did stop midway and was resumed.
    assert!(fake
        .seen()
        .iter()
        .any(|s| s.range.as_deref().is_some_and(|r| r != "bytes=0-")));
}

#[test]
fn identity_token_from_config_json_gets_a_bearer_token() {
    let fake = FakeRegistry::start();
    let fx = fixture();
    load(&fake, &fx);
    {
        let mut s = fake.state();
        s.bearer = Some(Bearer {
            user: Some(("alice".into(), "pw".into())),
            token: "from-refresh".into(),
        });
        s.refresh_token = Some("rt-1".into());
    }
    let creds = tempfile::tempdir().unwrap();
    // What `docker login` leaves for registries that hand out refresh tokens.
    let config = |token: &str| {
        std::fs::write(
            creds.path().join("config.json"),
            format!(
                r#"{{"auths":{{"{}":{{"auth":"","identitytoken":"{token}"}}}}}}"#,
                fake.host()
            ),
        )
        .unwrap()
    };
    config("stale");
    let dst = TempStore::new();
    let err = pull_from(&fake, &dst.store, creds.path()).expect_err("a refresh token refused");
    assert!(matches!(err, RegistryError::Unauthorized { .. }), "{err}");
    config("rt-1");
    pull_from(&fake, &dst.store, creds.path()).expect("pull with the refresh token");
    assert_pulled(&dst.store, &fx, &fake);
    let s = fake.state();
    let form = s.token_forms.last().expect("a POSTed refresh-token grant");
    assert!(form.contains("grant_type=refresh_token"), "{form}");
    assert!(form.contains("refresh_token=rt-1"), "{form}");
    assert!(form.contains("service=fake-registry"), "{form}");
    assert!(
        form.contains("scope=repository%3Alib%2Fapp%3Apull"),
        "{form}"
    );
    assert!(s
        .seen
        .iter()
        .filter(|r| r.path.contains("/blobs/"))
        .all(|r| r.authorization.as_deref() == Some("Bearer from-refresh")));
}

#[test]
fn cross_repo_mount_under_token_auth_asks_for_pull_on_the_source() {
    let fake = FakeRegistry::start();
    let fx = fixture();
    fake.state().bearer = Some(Bearer {
        user: None,
        token: "anon".into(),
    });
    let base = format!("{}/lib/base:1", fake.host());
    fx.src.store.set_tag(&base, &fx.image.descriptor()).unwrap();
    let dest = ImageRef::parse(&format!("{}/lib/app:2", fake.host())).unwrap();
    let creds = tempfile::tempdir().unwrap();
    rt().block_on(push(
        &fx.src.store,
        "app:1",
        &dest,
        &push_options(creds.path()),
        Arc::new(NoProgress),
    ))
    .expect("push with a mount attempt under token auth");
    let seen = fake.seen();
    let token_queries: Vec<&str> = seen
        .iter()
        .filter(|s| s.path == "/token")
        .map(|s| s.query.as_str())
        .collect();
    assert!(
        token_queries.iter().any(|q| {
            q.contains("scope=repository%3Alib%2Fapp%3Apull%2Cpush")
                && q.contains("scope=repository%3Alib%2Fbase%3Apull")
        }),
        "a token for push here and pull on the source: {token_queries:?}"
    );
    assert!(fake.state().manifests.contains_key("lib/app:2"));
}

#[test]
fn a_config_that_is_not_an_image_config_is_refused() {
    let fake = FakeRegistry::start();
    let fx = fixture();
    load(&fake, &fx);
    let mut doc: serde_json::Value =
        serde_json::from_slice(&fx.src.store.read_blob(&fx.image.manifest_digest).unwrap())
            .unwrap();
    doc["config"]["mediaType"] = serde_json::json!("application/vnd.example.artifact+json");
    fake.put_manifest(
        "lib/app",
        "1",
        OCI_MANIFEST,
        serde_json::to_vec(&doc).unwrap(),
    );
    let creds = tempfile::tempdir().unwrap();
    let dst = TempStore::new();
    let err = pull_from(&fake, &dst.store, creds.path()).expect_err("an artifact as an image");
    assert!(err.to_string().contains("not an image config"), "{err}");
    assert_nothing_committed(&dst.store, &fx);
}

#[test]
fn an_upload_location_on_another_host_gets_no_credentials() {
    let fake = FakeRegistry::start();
    let storage = FakeRegistry::start();
    let fx = fixture();
    fake.state().bearer = Some(Bearer {
        user: Some(("alice".into(), "pw".into())),
        token: "secret-token".into(),
    });
    // The registry hands uploads to another server (as some do, to their storage backend).
    fake.state().faults.uploads_elsewhere = Some(storage.url());
    storage.open_uploads(3);
    let creds = tempfile::tempdir().unwrap();
    CredentialStore::at(creds.path().join("config.json"))
        .login(&fake.host(), "alice", "pw")
        .unwrap();
    push_app(&fake, &fx, creds.path(), |o| o.jobs = 1)
        .expect("push through uploads on another host");
    let elsewhere = storage.seen();
    assert!(
        elsewhere.iter().any(|s| s.method == "PATCH")
            && elsewhere.iter().any(|s| s.method == "PUT"),
        "the blobs went to the other host: {elsewhere:?}"
    );
    assert!(
        elsewhere.iter().all(|s| s.authorization.is_none()),
        "credentials leaked: {elsewhere:?}"
    );
    for d in fx.image.layer_digests() {
        assert!(storage.state().blobs.contains_key(d.as_str()), "{d}");
    }
    assert!(fake.state().manifests.contains_key("lib/pushed:1"));
}

#[test]
fn platform_asked_of_a_single_manifest_image_must_match_its_config() {
    let fake = FakeRegistry::start();
    let fx = fixture();
    load(&fake, &fx);
    let creds = tempfile::tempdir().unwrap();
    let r = ImageRef::parse(&format!("{}/lib/app:1", fake.host())).unwrap();
    let dst = TempStore::new();
    let mut opts = pull_options(creds.path());
    opts.platform = Some(Platform::parse("linux/s390x").unwrap());
    let err = rt()
        .block_on(pull(&dst.store, &r, &opts, Arc::new(NoProgress)))
        .expect_err("an image of another architecture");
    match &err {
        RegistryError::NoMatchingPlatform { available, .. } => {
            assert_eq!(
                available,
                &format!("linux/{}", Platform::host().architecture)
            )
        }
        other => panic!("{other}"),
    }
    assert!(dst.store.tags().unwrap().is_empty());
    opts.platform = Some(Platform::host());
    rt().block_on(pull(&dst.store, &r, &opts, Arc::new(NoProgress)))
        .expect("the host's platform");
    assert_pulled(&dst.store, &fx, &fake);
}

#[test]
fn an_upload_committed_whose_answer_was_lost_is_not_an_error() {
    // The finishing PUT commits the blob but answers 500; its retry finds the upload gone (404).
    let fake = FakeRegistry::start();
    let fx = fixture();
    fake.state().faults.lose_finish_answers = 3;
    let creds = tempfile::tempdir().unwrap();
    push_app(&fake, &fx, creds.path(), |_| {}).expect("push whose upload answers were lost");
    assert_eq!(
        fake.state().faults.lose_finish_answers,
        0,
        "every finishing answer was lost"
    );
    assert_pushed(&fake, &fx);
}

#[test]
fn a_docker_manifest_list_resolves_to_a_v2s2_manifest() {
    const DOCKER_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";
    const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
    let fake = FakeRegistry::start();
    let fx = fixture();
    load(&fake, &fx);
    // The fixture's manifest in Docker's v2 schema 2 form (same config and layer blobs).
    let mut v2s2: serde_json::Value =
        serde_json::from_slice(&fx.src.store.read_blob(&fx.image.manifest_digest).unwrap())
            .unwrap();
    v2s2["mediaType"] = serde_json::json!(DOCKER_MANIFEST);
    v2s2["config"]["mediaType"] =
        serde_json::json!("application/vnd.docker.container.image.v1+json");
    for layer in v2s2["layers"].as_array_mut().unwrap() {
        layer["mediaType"] = serde_json::json!("application/vnd.docker.image.rootfs.diff.tar.gzip");
    }
    let v2s2 = serde_json::to_vec(&v2s2).unwrap();
    let digest = rbuild_layerfs::Digest::of_bytes(&v2s2);
    fake.put_manifest("lib/app", digest.as_str(), DOCKER_MANIFEST, v2s2.clone());
    let host = Platform::host();
    let list = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": DOCKER_LIST,
        "manifests": [
            {"mediaType": DOCKER_MANIFEST, "size": 7, "digest": format!("sha256:{}", "2".repeat(64)),
             "platform": {"os": "linux", "architecture": "ppc64le"}},
            {"mediaType": DOCKER_MANIFEST, "size": v2s2.len(), "digest": digest.as_str(),
             "platform": {"os": host.os, "architecture": host.architecture}},
        ]
    });
    let list = serde_json::to_vec(&list).unwrap();
    fake.put_manifest("lib/app", "1", DOCKER_LIST, list.clone());
    let creds = tempfile::tempdir().unwrap();
    let dst = TempStore::new();
    let pulled = pull_from(&fake, &dst.store, creds.path()).expect("pull a manifest list");
    assert_eq!(pulled.manifest_digest, digest);
    assert_eq!(
        pulled.resolved_digest,
        rbuild_layerfs::Digest::of_bytes(&list)
    );
    assert_eq!(pulled.descriptor.media_type().to_string(), DOCKER_MANIFEST);
    assert_eq!(pulled.config_digest, fx.image.config_digest);
    let image = dst
        .store
        .resolve_image(&format!("{}/lib/app:1", fake.host()))
        .expect("tag written");
    let dirs = dst.store.image_layer_dirs(&image).unwrap();
    assert_eq!(std::fs::read(dirs[1].join("big.bin")).unwrap(), fx.big);

    // A list entry whose media type contradicts the manifest it names is refused.
    let mut liar: serde_json::Value = serde_json::from_slice(&list).unwrap();
    liar["manifests"][1]["mediaType"] = serde_json::json!(OCI_MANIFEST);
    fake.put_manifest(
        "lib/app",
        "1",
        DOCKER_LIST,
        serde_json::to_vec(&liar).unwrap(),
    );
    let dst = TempStore::new();
    let err = pull_from(&fake, &dst.store, creds.path()).expect_err("a lying list entry");
    assert!(err.to_string().contains("the index says"), "{err}");
    assert!(dst.store.tags().unwrap().is_empty());
}

#[test]
fn a_challenge_from_the_host_a_redirect_led_to_gets_no_credentials() {
    // The registry redirects blobs to a host that answers 401 with its own token realm. rbuild
    // must not answer that challenge with the registry's credentials (the realm would get the
    // password); the pull fails instead.
    let fake = FakeRegistry::start();
    let cdn = FakeRegistry::start();
    let fx = fixture();
    load(&fake, &fx);
    load(&cdn, &fx);
    fake.state().bearer = Some(Bearer {
        user: Some(("alice".into(), "pw".into())),
        token: "registry-token".into(),
    });
    cdn.state().bearer = Some(Bearer {
        user: None,
        token: "cdn-token".into(),
    });
    fake.state().faults.redirect_blobs = Some(cdn.url());
    let creds = tempfile::tempdir().unwrap();
    CredentialStore::at(creds.path().join("config.json"))
        .login(&fake.host(), "alice", "pw")
        .unwrap();
    let dst = TempStore::new();
    let err = pull_from(&fake, &dst.store, creds.path()).expect_err("the other host wants auth");
    assert!(matches!(err, RegistryError::Unauthorized { .. }), "{err}");
    let cdn_seen = cdn.seen();
    assert!(
        cdn_seen.iter().any(|s| s.path.contains("/blobs/")),
        "the redirect was followed: {cdn_seen:?}"
    );
    assert!(
        cdn_seen.iter().all(|s| s.authorization.is_none()),
        "credentials sent to the other host: {cdn_seen:?}"
    );
    assert!(dst.store.tags().unwrap().is_empty());
}
