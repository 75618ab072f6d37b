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
    let recorder = Arc::new(Recorder::default());
    rt.block_on(push(&src.store, "app:1", &dest, &opts, recorder.clone()))
        .expect("second push");
    assert_eq!(
        recorder.statuses(),
        vec!["Layer already exists"; 3],
        "config and two layers skipped"
    );

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

/// Which PATCH to cut, from its Content-Range start and its body length; and how many of its
/// body bytes get through first.
#[derive(Clone, Copy)]
struct Cut {
    starting_at: u64,
    keep: usize,
}

/// A TCP proxy in front of a registry that cuts the connection of the first PATCH whose
/// Content-Range starts at `cut.starting_at` (and whose body is 64 KiB or more) after its
/// head and `cut.keep` bytes of its body, and logs every request line with its Content-Range.
struct CuttingProxy {
    addr: std::net::SocketAddr,
    log: Arc<std::sync::Mutex<Vec<String>>>,
}

impl CuttingProxy {
    fn start(upstream: &str, cut: Cut) -> CuttingProxy {
        use std::net::{TcpListener, TcpStream};
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind proxy");
        let addr = listener.local_addr().expect("proxy addr");
        let log = Arc::new(std::sync::Mutex::new(Vec::new()));
        let armed = Arc::new(std::sync::atomic::AtomicBool::new(true));
        let upstream = upstream.to_string();
        let l = log.clone();
        // The thread ends with the test process (the listener is never closed early).
        std::thread::spawn(move || {
            for client in listener.incoming() {
                let Ok(client) = client else { continue };
                let Ok(server) = TcpStream::connect(&upstream) else {
                    continue;
                };
                let (mut c2, mut s2) = (client.try_clone().unwrap(), server.try_clone().unwrap());
                std::thread::spawn(move || {
                    let _ = std::io::copy(&mut s2, &mut c2);
                    let _ = c2.shutdown(std::net::Shutdown::Both);
                });
                let (log, armed) = (l.clone(), armed.clone());
                std::thread::spawn(move || forward_requests(client, server, cut, &log, &armed));
            }
        });
        CuttingProxy { addr, log }
    }

    fn host(&self) -> String {
        self.addr.to_string()
    }

    fn log(&self) -> Vec<String> {
        self.log.lock().unwrap().clone()
    }
}

/// Copies HTTP/1.1 requests (head, then Content-Length bytes of body) from `client` to `server`.
fn forward_requests(
    client: std::net::TcpStream,
    mut server: std::net::TcpStream,
    cut: Cut,
    log: &std::sync::Mutex<Vec<String>>,
    armed: &std::sync::atomic::AtomicBool,
) {
    use std::io::{BufRead, Read, Write};
    let mut reader = std::io::BufReader::new(client.try_clone().unwrap());
    loop {
        let mut head = Vec::new();
        loop {
            let mut line = Vec::new();
            match reader.read_until(b'\n', &mut line) {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
            head.extend_from_slice(&line);
            if line == b"\r\n" {
                break;
            }
        }
        let text = String::from_utf8_lossy(&head).into_owned();
        let header = |name: &str| {
            text.lines().find_map(|l| {
                let (k, v) = l.split_once(':')?;
                k.trim()
                    .eq_ignore_ascii_case(name)
                    .then(|| v.trim().to_string())
            })
        };
        let length: usize = header("content-length")
            .and_then(|v| v.parse().ok())
            .unwrap_or(0);
        let range = header("content-range").unwrap_or_default();
        let start: Option<u64> = range.split('-').next().and_then(|n| n.parse().ok());
        let request_line = text.lines().next().unwrap_or_default().to_string();
        let method = request_line
            .split(' ')
            .next()
            .unwrap_or_default()
            .to_string();
        let path = request_line.split(' ').nth(1).unwrap_or_default();
        let path = path.split('?').next().unwrap_or_default();
        log.lock().unwrap().push(format!("{method} {path} {range}"));
        // Only layer chunks (the config blob is a few hundred bytes).
        let cut_this = method == "PATCH"
            && start == Some(cut.starting_at)
            && length > cut.keep
            && length >= 64 << 10
            && armed.swap(false, std::sync::atomic::Ordering::SeqCst);
        if server.write_all(&head).is_err() {
            return;
        }
        let forward = if cut_this { cut.keep } else { length };
        if std::io::copy(&mut (&mut reader).take(forward as u64), &mut server).is_err() {
            return;
        }
        if cut_this {
            let _ = server.flush();
            // Let the registry read what arrived before the connection goes.
            std::thread::sleep(std::time::Duration::from_millis(200));
            let _ = server.shutdown(std::net::Shutdown::Both);
            let _ = client.shutdown(std::net::Shutdown::Both);
            return;
        }
    }
}

/// Pushes a one-layer image of 1 MiB through a proxy that makes `cut`; checks that the push
/// finishes and the image pulls back intact; returns the proxy's request log.
fn push_through_a_cut(cut: Cut, chunk_size: Option<u64>) -> Vec<String> {
    let registry = TestRegistry::start();
    let proxy = CuttingProxy::start(registry.host(), cut);
    let creds = tempfile::tempdir().unwrap();
    let src = TempStore::new();
    let big = noise(1 << 20, 9);
    let image = make_image(&src.store, "cut:1", &[&[("big.bin", &big)]]);
    let dest = ImageRef::parse(&format!("{}/cut/app:1", proxy.host())).unwrap();
    let mut opts = push_options(creds.path());
    opts.jobs = 1;
    if let Some(c) = chunk_size {
        opts.chunk_size = c;
    }
    let rt = rt();
    rt.block_on(push(
        &src.store,
        "cut:1",
        &dest,
        &opts,
        Arc::new(NoProgress),
    ))
    .unwrap_or_else(|e| panic!("push through the cut: {e}\n{:#?}", proxy.log()));
    let log = proxy.log();
    let direct = ImageRef::parse(&format!("{}/cut/app:1", registry.host())).unwrap();
    let dst = TempStore::new();
    let pulled = rt
        .block_on(pull(
            &dst.store,
            &direct,
            &pull_options(creds.path()),
            Arc::new(NoProgress),
        ))
        .expect("pull what was pushed");
    assert_eq!(pulled.manifest_digest, image.manifest_digest);
    let local = dst.store.resolve_image(&direct.tagged_name()).unwrap();
    let dirs = dst.store.image_layer_dirs(&local).unwrap();
    assert_eq!(std::fs::read(dirs[0].join("big.bin")).unwrap(), big);
    log
}

fn count(log: &[String], prefix: &str) -> usize {
    log.iter().filter(|l| l.starts_with(prefix)).count()
}

#[test]
fn chunk_cut_before_its_body_resumes_at_the_offset_the_registry_reports() {
    // 256 KiB chunks; the chunk at 512 KiB loses its connection before any of its body arrives.
    // The registry reports 0-524287; the upload goes on from there in the same session.
    let log = push_through_a_cut(
        Cut {
            starting_at: 512 << 10,
            keep: 0,
        },
        Some(256 << 10),
    );
    let sent = log
        .iter()
        .filter(|l| l.starts_with("PATCH ") && l.ends_with(" 524288-786431"))
        .count();
    assert_eq!(sent, 2, "the cut chunk was sent again: {log:#?}");
    assert_eq!(
        count(&log, "POST "),
        2,
        "one upload per blob, none restarted: {log:#?}"
    );
    assert!(
        count(&log, "GET /v2/cut/app/blobs/uploads/") >= 1,
        "{log:#?}"
    );
}

#[test]
fn whole_blob_patch_cut_before_its_body_goes_on_from_byte_0() {
    // The reference registry reports an empty upload as `0-0`; the upload goes on from byte 0
    // in the same session (it went on from byte 1 and was refused until it gave up before).
    let log = push_through_a_cut(
        Cut {
            starting_at: 0,
            keep: 0,
        },
        None,
    );
    assert_eq!(
        count(&log, "POST "),
        2,
        "one upload per blob, none restarted: {log:#?}"
    );
    assert!(
        count(&log, "GET /v2/cut/app/blobs/uploads/") >= 1,
        "{log:#?}"
    );
}

#[test]
fn whole_blob_patch_cut_mid_body_is_uploaded_again() {
    // 300 kB of the layer arrive before the connection breaks. The reference registry keeps them,
    // but the upload's signed state (in its Location) still says 0, so asking for the offset
    // cancels the session; the blob is uploaded again in a new one.
    let log = push_through_a_cut(
        Cut {
            starting_at: 0,
            keep: 300_000,
        },
        None,
    );
    assert_eq!(
        count(&log, "POST "),
        3,
        "a new upload after the cut: {log:#?}"
    );
}

/// A pull lists each layer it unpacks in the store's journal of unsynced layers, naming its
/// blob. After a simulated power loss (a layer file truncated to 0 bytes, the journal's boot id
/// rewritten to an earlier boot, and the manifest lost as if the crash came before it was
/// stored) the next open re-creates the layer from that blob.
#[test]
fn pulled_layer_is_recreated_from_its_blob_after_a_power_loss() {
    let registry = TestRegistry::start();
    let creds = tempfile::tempdir().unwrap();
    let src = TempStore::new();
    let big = noise(200_000, 7);
    let image = make_image(&src.store, "app:1", &[&[("data/big.bin", &big)]]);
    let dest = ImageRef::parse(&format!("{}/team/power:1", registry.host())).unwrap();
    let rt = rt();
    rt.block_on(push(
        &src.store,
        "app:1",
        &dest,
        &push_options(creds.path()),
        Arc::new(NoProgress),
    ))
    .expect("push");
    let dst = TempStore::new();
    rt.block_on(pull(
        &dst.store,
        &dest,
        &pull_options(creds.path()),
        Arc::new(NoProgress),
    ))
    .expect("pull");
    let (diff_id, blob) = (
        image.diff_ids()[0].clone(),
        image.layer_digests()[0].clone(),
    );
    let journal = dst.store.root().join("state/unsynced");
    let line = std::fs::read_to_string(&journal).unwrap();
    assert!(
        line.contains(&format!("{} {}", diff_id.hex(), blob.hex())),
        "the pull names the blob: {line}"
    );

    let file = dst.store.layer_dir(&diff_id).join("data/big.bin");
    std::fs::OpenOptions::new()
        .write(true)
        .open(&file)
        .unwrap()
        .set_len(0)
        .unwrap();
    let (_, rest) = line.split_once(' ').unwrap();
    std::fs::write(
        &journal,
        format!("00000000-0000-4000-8000-0000000000aa {rest}"),
    )
    .unwrap();
    std::fs::remove_file(dst.store.blob_path(&image.manifest_digest)).unwrap();

    let reopened = rbuild_layerfs::Store::open(dst.store.root()).unwrap();
    assert_eq!(reopened.recovered_at_open().recreated, vec![diff_id]);
    assert_eq!(std::fs::read(&file).unwrap(), big);
    assert_eq!(std::fs::read_to_string(&journal).unwrap(), "");
}
