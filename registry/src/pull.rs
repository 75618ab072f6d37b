//! Pulling an image into the store: manifest (index resolved to a platform), config, and the
//! layers in parallel, each streamed into the store while it is hashed and unpacked. The tag is
//! written last, so a failed pull leaves no tag and no unverified content.

use crate::client::{read_limited, status_error, Access, ClientOptions, Session};
use crate::config::{endpoints, RegistryConfig};
use crate::credentials::CredentialStore;
use crate::error::{RegistryError, Result};
use crate::fetch::{fetch_blob, BlobRequest, BlobSink};
use crate::media::{
    check_config_media_type, classify_manifest, layer_compression, ManifestKind, MANIFEST_ACCEPT,
    MAX_CONFIG_BYTES, MAX_MANIFEST_BYTES,
};
use crate::platform::Platform;
use crate::progress::Progress;
use crate::reference::ImageRef;
use crate::unpack::{apply_chunks, commit_layer, ingest_chunks, LayerJob};
use futures_util::{StreamExt, TryStreamExt};
use oci_spec::image::{Descriptor, ImageConfiguration, ImageIndex, ImageManifest, MediaType};
use rbuild_layerfs::store::SealedBlob;
use rbuild_layerfs::{Digest, Store};
use reqwest::header::{ACCEPT, CONTENT_TYPE};
use reqwest::Method;
use std::sync::Arc;

/// Downloaded buffers (half a MiB each) queued for each consumer of a layer.
const LAYER_CHANNEL: usize = 16;

/// Settings of a pull.
#[derive(Debug, Clone)]
pub struct PullOptions {
    /// The platform to pick from an index (default: this machine's).
    pub platform: Option<Platform>,
    /// Verify TLS certificates (false = `--tls-verify=false`).
    pub tls_verify: bool,
    /// Insecure registries and mirrors.
    pub config: RegistryConfig,
    /// Where credentials come from.
    pub credentials: CredentialStore,
    /// Retry and timeout settings.
    pub client: ClientOptions,
    /// Layers downloaded at once.
    pub jobs: usize,
}

impl Default for PullOptions {
    fn default() -> Self {
        PullOptions {
            platform: None,
            tls_verify: true,
            config: RegistryConfig::default(),
            credentials: CredentialStore::from_env(),
            client: ClientOptions::default(),
            jobs: 4,
        }
    }
}

/// The result of a pull.
#[derive(Debug, Clone)]
pub struct Pulled {
    /// Descriptor of the image manifest now in the store.
    pub descriptor: Descriptor,
    /// Digest of that manifest.
    pub manifest_digest: Digest,
    /// Digest of the config (the image ID).
    pub config_digest: Digest,
    /// The digest the reference resolved to (the index's when it was an index).
    pub resolved_digest: Digest,
    /// Local tag written, if the reference had a tag.
    pub tag: Option<String>,
}

/// Pulls `reference` into `store`, trying Docker Hub mirrors first when configured.
pub async fn pull(
    store: &Store,
    reference: &ImageRef,
    options: &PullOptions,
    progress: Arc<dyn Progress>,
) -> Result<Pulled> {
    let eps = endpoints(
        &options.config,
        reference.registry(),
        options.tls_verify,
        true,
    );
    let mut last_err = None;
    for (i, ep) in eps.iter().enumerate() {
        let is_last = i + 1 == eps.len();
        let host = ep
            .base_url
            .split_once("://")
            .map_or(ep.base_url.as_str(), |(_, h)| h);
        let cred_name = if is_last { reference.registry() } else { host };
        let credential = options.credentials.get(cred_name)?;
        let attempt = async {
            let session = Session::connect(
                ep,
                reference.registry(),
                reference.repository(),
                Access::Pull,
                credential,
                &options.client,
            )
            .await?;
            pull_from(store, &session, reference, options, progress.clone()).await
        };
        match attempt.await {
            Ok(p) => return Ok(p),
            Err(e) if !is_last => {
                progress.message(&format!(
                    "mirror {} failed ({e}); trying the next source",
                    ep.base_url
                ));
                last_err = Some(e);
            }
            Err(e) => return Err(e),
        }
    }
    Err(last_err.unwrap_or_else(|| RegistryError::BadContent("no endpoint to pull from".into())))
}

/// A fetched manifest document.
struct FetchedManifest {
    body: Vec<u8>,
    digest: Digest,
    media_type: String,
    kind: ManifestKind,
}

/// A manifest's bytes as the registry sent them, size-capped and verified against the digest the
/// caller expects (else the registry's Docker-Content-Digest header).
pub(crate) struct RawManifest {
    /// The manifest bytes.
    pub body: Vec<u8>,
    /// Their digest.
    pub digest: Digest,
    /// The Content-Type header, if any.
    pub content_type: Option<String>,
}

/// GETs manifest `reference` with `accept`; `Ok(None)` for a 404 when `missing_ok`, otherwise every
/// failure status is an error.
pub(crate) async fn fetch_raw_manifest(
    session: &Session,
    reference: &str,
    expected: Option<&Digest>,
    accept: &str,
    missing_ok: bool,
) -> Result<Option<RawManifest>> {
    let url = session.repo_url(&format!("manifests/{reference}"))?;
    let resp = session
        .send(Method::GET, url, |r| r.header(ACCEPT, accept))
        .await?;
    if missing_ok && resp.status() == reqwest::StatusCode::NOT_FOUND {
        return Ok(None);
    }
    if !resp.status().is_success() {
        return Err(status_error(
            resp,
            "GET",
            &format!("manifest {reference}"),
            session.repository(),
        )
        .await);
    }
    let content_type = resp
        .headers()
        .get(CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    let header_digest = resp
        .headers()
        .get("docker-content-digest")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| Digest::parse(v.trim()).ok());
    let body = read_limited(resp, MAX_MANIFEST_BYTES, &format!("manifest {reference}")).await?;
    let digest = Digest::of_bytes(&body);
    if let Some(want) = expected.or(header_digest.as_ref()) {
        if *want != digest {
            return Err(RegistryError::BadContent(format!(
                "manifest {reference} hashes to {digest}, not {want}"
            )));
        }
    }
    Ok(Some(RawManifest {
        body,
        digest,
        content_type,
    }))
}

async fn fetch_manifest(
    session: &Session,
    reference: &str,
    expected: Option<&Digest>,
) -> Result<FetchedManifest> {
    let RawManifest {
        body,
        digest,
        content_type,
    } = fetch_raw_manifest(session, reference, expected, MANIFEST_ACCEPT, false)
        .await?
        .ok_or_else(|| RegistryError::BadContent(format!("manifest {reference} is missing")))?;
    let (media_type, kind) = classify_manifest(content_type.as_deref(), &body)?;
    Ok(FetchedManifest {
        body,
        digest,
        media_type,
        kind,
    })
}

fn descriptor_digest(desc: &Descriptor) -> Result<Digest> {
    Digest::parse(desc.digest().as_ref())
        .map_err(|e| RegistryError::BadContent(format!("descriptor digest {}: {e}", desc.digest())))
}

fn choose_platform(
    index: &ImageIndex,
    wanted: &Platform,
    reference: &ImageRef,
) -> Result<Descriptor> {
    let mut available = Vec::new();
    let mut candidates = Vec::new();
    for m in index.manifests() {
        let Some(p) = m.platform() else { continue };
        let (os, arch) = (p.os().to_string(), p.architecture().to_string());
        available.push(match p.variant() {
            Some(v) => format!("{os}/{arch}/{v}"),
            None => format!("{os}/{arch}"),
        });
        if wanted.matches(&os, &arch, p.variant().as_deref()) {
            candidates.push(m.clone());
        }
    }
    // Prefer an exact variant match (arm/v7 before arm/v6 listed first).
    candidates.sort_by_key(|m| {
        let v = m.platform().as_ref().and_then(|p| p.variant().clone());
        (v != wanted.variant) as u8
    });
    candidates
        .into_iter()
        .next()
        .ok_or_else(|| RegistryError::NoMatchingPlatform {
            wanted: wanted.to_string(),
            reference: reference.to_string(),
            available: if available.is_empty() {
                "none".into()
            } else {
                available.join(", ")
            },
        })
}

async fn pull_from(
    store: &Store,
    session: &Session,
    reference: &ImageRef,
    options: &PullOptions,
    progress: Arc<dyn Progress>,
) -> Result<Pulled> {
    let top = fetch_manifest(session, &reference.manifest_reference(), reference.digest()).await?;
    let resolved_digest = top.digest.clone();
    let wanted = options.platform.clone().unwrap_or_else(Platform::host);
    let manifest = match top.kind {
        ManifestKind::Image => top,
        ManifestKind::Index => {
            let index: ImageIndex = serde_json::from_slice(&top.body)
                .map_err(|e| RegistryError::BadContent(format!("image index: {e}")))?;
            let desc = choose_platform(&index, &wanted, reference)?;
            let digest = descriptor_digest(&desc)?;
            let child = fetch_manifest(session, digest.as_str(), Some(&digest)).await?;
            if child.body.len() as u64 != desc.size() {
                return Err(RegistryError::BadContent(format!(
                    "manifest {digest} is {} bytes, the index says {}",
                    child.body.len(),
                    desc.size()
                )));
            }
            if child.kind != ManifestKind::Image
                || child.media_type != desc.media_type().to_string()
            {
                return Err(RegistryError::BadContent(format!(
                    "manifest {digest} is {}, the index says {}",
                    child.media_type,
                    desc.media_type()
                )));
            }
            progress.message(&format!("{reference}: platform {wanted} -> {digest}"));
            child
        }
    };
    let image: ImageManifest = serde_json::from_slice(&manifest.body).map_err(|e| {
        RegistryError::BadContent(format!("image manifest {}: {e}", manifest.digest))
    })?;

    // Config: small, fetched into memory and verified before anything else is written.
    let config_desc = image.config();
    check_config_media_type(config_desc.media_type().as_ref())?;
    let config_digest = descriptor_digest(config_desc)?;
    if config_desc.size() > MAX_CONFIG_BYTES {
        return Err(RegistryError::BadContent(format!(
            "config {config_digest} is {} bytes, more than the {MAX_CONFIG_BYTES} allowed",
            config_desc.size()
        )));
    }
    let mut sink = BlobSink::Memory(Vec::new());
    let req = BlobRequest {
        digest: &config_digest,
        size: config_desc.size(),
        urls: &[],
    };
    fetch_blob(session, &req, &mut sink, progress.as_ref()).await?;
    let BlobSink::Memory(config_bytes) = sink else {
        unreachable!("memory sink")
    };
    if Digest::of_bytes(&config_bytes) != config_digest {
        return Err(RegistryError::BadContent(format!(
            "config hashes to {}, not {config_digest}",
            Digest::of_bytes(&config_bytes)
        )));
    }
    let config: ImageConfiguration = serde_json::from_slice(&config_bytes)
        .map_err(|e| RegistryError::BadContent(format!("image config {config_digest}: {e}")))?;
    if let Some(p) = &options.platform {
        let (os, arch) = (config.os().to_string(), config.architecture().to_string());
        if !p.matches(&os, &arch, config.variant().as_deref()) {
            return Err(RegistryError::NoMatchingPlatform {
                wanted: p.to_string(),
                reference: reference.to_string(),
                available: format!("{os}/{arch}"),
            });
        }
    }
    let diff_ids = config.rootfs().diff_ids();
    if diff_ids.len() != image.layers().len() {
        return Err(RegistryError::BadContent(format!(
            "manifest has {} layers but the config lists {} diff_ids",
            image.layers().len(),
            diff_ids.len()
        )));
    }

    // Config and manifest blobs are written and fsynced while the layers download, and moved
    // into place (one directory fsync) only after every layer is committed.
    let sealing = {
        let store = store.clone();
        let docs = [
            (config_bytes.clone(), config_digest.clone()),
            (manifest.body.clone(), manifest.digest.clone()),
        ];
        tokio::task::spawn_blocking(move || {
            docs.iter()
                .filter(|(_, digest)| !store.has_blob(digest))
                .map(|(data, digest)| seal_verified(&store, data, digest))
                .collect::<Result<Vec<SealedBlob>>>()
        })
    };

    // Layers, in parallel; each one is verified and committed on its own.
    let mut jobs = Vec::new();
    for (desc, diff_id) in image.layers().iter().zip(diff_ids) {
        let digest = descriptor_digest(desc)?;
        let diff_id = Digest::parse(diff_id)
            .map_err(|e| RegistryError::BadContent(format!("config diff_id {diff_id}: {e}")))?;
        let encoding = layer_compression(desc.media_type().as_ref())?;
        jobs.push(LayerJob {
            digest,
            diff_id,
            size: desc.size(),
            encoding,
            urls: desc.urls().clone().unwrap_or_default(),
        });
    }
    let layers = futures_util::stream::iter(
        jobs.into_iter()
            .map(|job| pull_layer(store, session, job, progress.clone())),
    )
    .buffer_unordered(options.jobs.max(1))
    .try_collect::<Vec<()>>()
    .await;
    // Waited for also after a layer failed, so the sealed files are gone when pull returns.
    let sealed = sealing
        .await
        .map_err(|e| RegistryError::BadContent(format!("blob task failed: {e}")))?;
    layers?;

    // Config and manifest blobs, then the tag (last).
    store.publish_blobs(sealed?).map_err(store_err)?;
    let oci_digest: oci_spec::image::Digest = manifest
        .digest
        .as_str()
        .parse()
        .map_err(|e| RegistryError::BadContent(format!("manifest digest: {e}")))?;
    let descriptor = Descriptor::new(
        MediaType::from(manifest.media_type.as_str()),
        manifest.body.len() as u64,
        oci_digest,
    );
    let tag = match reference.tag() {
        Some(_) => {
            let name = reference.tagged_name();
            store.set_tag(&name, &descriptor).map_err(store_err)?;
            Some(name)
        }
        None => {
            store.add_untagged(&descriptor).map_err(store_err)?;
            None
        }
    };
    Ok(Pulled {
        descriptor,
        manifest_digest: manifest.digest,
        config_digest,
        resolved_digest,
        tag,
    })
}

/// Writes `data` into an ingest, verifies it against `digest` and fsyncs it, unpublished.
fn seal_verified(store: &Store, data: &[u8], digest: &Digest) -> Result<SealedBlob> {
    use std::io::Write;
    let mut ingest = store.ingest().map_err(store_err)?;
    ingest
        .write_all(data)
        .map_err(|e| RegistryError::io(format!("write blob {digest}"), e))?;
    ingest
        .seal(Some(digest), Some(data.len() as u64))
        .map_err(store_err)
}

/// Maps a store error into this crate's error.
pub(crate) fn store_err(e: rbuild_layerfs::StoreError) -> RegistryError {
    RegistryError::Store(e)
}

async fn pull_layer(
    store: &Store,
    session: &Session,
    job: LayerJob,
    progress: Arc<dyn Progress>,
) -> Result<()> {
    let have_blob = store.has_blob(&job.digest);
    let have_layer = store.has_layer(&job.diff_id);
    if have_blob && have_layer {
        progress.blob_done(&job.digest, "Already exists");
        return Ok(());
    }
    progress.blob_started(&job.digest, job.size);
    if have_blob {
        let (store, digest, diff_id) = (store.clone(), job.digest.clone(), job.diff_id.clone());
        tokio::task::spawn_blocking(move || crate::unpack::unpack_local(&store, &digest, &diff_id))
            .await
            .map_err(|e| RegistryError::BadContent(format!("layer task failed: {e}")))??;
        progress.blob_done(&job.digest, "Pull complete");
        return Ok(());
    }
    // The blob is written and hashed on one thread while it is unpacked on another.
    let (ingest_tx, ingest_rx) = tokio::sync::mpsc::channel(LAYER_CHANNEL);
    let ingester = {
        let (store, job) = (store.clone(), job.clone());
        tokio::task::spawn_blocking(move || ingest_chunks(&store, &job, ingest_rx))
    };
    let mut senders = vec![ingest_tx];
    let applier = if have_layer {
        None
    } else {
        let (apply_tx, apply_rx) = tokio::sync::mpsc::channel(LAYER_CHANNEL);
        senders.push(apply_tx);
        let (store, job) = (store.clone(), job.clone());
        Some(tokio::task::spawn_blocking(move || {
            apply_chunks(&store, &job, apply_rx)
        }))
    };
    let mut sink = BlobSink::Fanout(senders);
    let req = BlobRequest {
        digest: &job.digest,
        size: job.size,
        urls: &job.urls,
    };
    let downloaded = fetch_blob(session, &req, &mut sink, progress.as_ref()).await;
    let consumer_gone = sink.consumer_gone();
    drop(sink); // end of stream for the consumers
    let task_failed =
        |e: tokio::task::JoinError| RegistryError::BadContent(format!("layer task failed: {e}"));
    let ingested = ingester.await.map_err(task_failed)?;
    let applied = match applier {
        Some(a) => a.await.map_err(task_failed)?.map(Some),
        None => Ok(None),
    };
    let consumed = match (ingested, applied) {
        (Ok(ingest), Ok(applied)) => Ok((ingest, applied)),
        (Err(e), _) | (_, Err(e)) => Err(e),
    };
    let (ingest, applied) = match (downloaded, consumed) {
        (Ok(_), Ok(parts)) => parts,
        // A consumer stopped first (bad content): its error is the cause.
        (Err(_), Err(c)) if consumer_gone => return Err(c),
        // Otherwise a download error explains the consumers' (they saw a short stream).
        (Err(d), _) => return Err(d),
        (Ok(_), Err(c)) => return Err(c),
    };
    let (store, job2) = (store.clone(), job.clone());
    tokio::task::spawn_blocking(move || commit_layer(&store, &job2, ingest, applied))
        .await
        .map_err(task_failed)??;
    progress.blob_done(&job.digest, "Pull complete");
    Ok(())
}
