//! Pushing an image from the store: blobs first (skipped when present, cross-mounted from
//! another repository of the same registry when possible, else uploaded in chunks that resume
//! from the offset the registry reports), the manifest last.

use crate::client::{status_error, Access, ClientOptions, Session};
use crate::config::{endpoints, RegistryConfig};
use crate::credentials::CredentialStore;
use crate::error::{RegistryError, Result};
use crate::media::{DOCKER_CONFIG, DOCKER_LAYER_GZIP, DOCKER_MANIFEST, OCI_CONFIG, OCI_MANIFEST};
use crate::progress::Progress;
use crate::pull::store_err;
use crate::reference::ImageRef;
use bytes::Bytes;
use futures_util::{StreamExt, TryStreamExt};
use oci_spec::image::{Descriptor, ImageManifest};
use rbuild_layerfs::{Digest, Store};
use reqwest::header::{CONTENT_LENGTH, CONTENT_RANGE, CONTENT_TYPE, LOCATION, RANGE};
use reqwest::{Method, Response, StatusCode, Url};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::sync::Mutex;

/// Which manifest format to push.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ManifestFormat {
    /// OCI image manifest.
    Oci,
    /// Docker image manifest v2 schema 2.
    Docker,
}

impl std::str::FromStr for ManifestFormat {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Self, String> {
        match s {
            "oci" => Ok(ManifestFormat::Oci),
            "docker" | "v2s2" => Ok(ManifestFormat::Docker),
            other => Err(format!(
                "unknown manifest format {other:?}: use oci or docker"
            )),
        }
    }
}

/// Settings of a push.
#[derive(Debug, Clone)]
pub struct PushOptions {
    /// Manifest format; None pushes the manifest as stored.
    pub format: Option<ManifestFormat>,
    /// Verify TLS certificates.
    pub tls_verify: bool,
    /// Insecure registries.
    pub config: RegistryConfig,
    /// Where credentials come from.
    pub credentials: CredentialStore,
    /// Retry and timeout settings.
    pub client: ClientOptions,
    /// Bytes per upload request (PATCH); the default sends the whole blob in one streamed
    /// request (what the reference registry ingests fastest).
    pub chunk_size: u64,
    /// Blobs uploaded at once.
    pub jobs: usize,
}

impl Default for PushOptions {
    fn default() -> Self {
        PushOptions {
            format: None,
            tls_verify: true,
            config: RegistryConfig::default(),
            credentials: CredentialStore::from_env(),
            client: ClientOptions::default(),
            chunk_size: u64::MAX,
            jobs: 4,
        }
    }
}

/// What a push produced.
#[derive(Debug, Clone)]
pub struct Pushed {
    /// Digest of the manifest pushed.
    pub digest: Digest,
    /// Its size in bytes.
    pub size: u64,
}

pub(crate) struct BlobJob {
    pub(crate) digest: Digest,
    pub(crate) size: u64,
    pub(crate) mount_from: Option<String>,
}

/// Pushes the local image `source` (name, tag or ID) to `dest`.
pub async fn push(
    store: &Store,
    source: &str,
    dest: &ImageRef,
    options: &PushOptions,
    progress: Arc<dyn Progress>,
) -> Result<Pushed> {
    let image = store.resolve_image(source).map_err(store_err)?;
    let stored = store.read_blob(&image.manifest_digest).map_err(store_err)?;
    let stored_type = image.descriptor().media_type().to_string();
    let (manifest_bytes, media_type) = match options.format {
        None => (stored, stored_type),
        Some(f) => convert_manifest(&image.manifest, &stored, &stored_type, f)?,
    };
    let ep = endpoints(&options.config, dest.registry(), options.tls_verify, false)
        .pop()
        .ok_or_else(|| RegistryError::BadContent("no endpoint to push to".into()))?;
    let credential = options.credentials.get(dest.registry())?;
    let session = Session::connect(
        &ep,
        dest.registry(),
        dest.repository(),
        Access::Push,
        credential,
        &options.client,
    )
    .await?;

    let sources = mount_sources(store, dest)?;
    let mut jobs = vec![BlobJob {
        digest: image.config_digest.clone(),
        size: image.manifest.config().size(),
        mount_from: sources.get(&image.config_digest).cloned(),
    }];
    for (d, desc) in image
        .layer_digests()
        .into_iter()
        .zip(image.manifest.layers())
    {
        if !jobs.iter().any(|j| j.digest == d) {
            jobs.push(BlobJob {
                mount_from: sources.get(&d).cloned(),
                size: desc.size(),
                digest: d,
            });
        }
    }
    let session = &session;
    futures_util::stream::iter(jobs.into_iter().map(|job| {
        let progress = progress.clone();
        async move { push_blob(store, session, &job, options.chunk_size, progress.as_ref()).await }
    }))
    .buffer_unordered(options.jobs.max(1))
    .try_collect::<Vec<()>>()
    .await?;

    let digest = Digest::of_bytes(&manifest_bytes);
    if let Some(want) = dest.digest() {
        if *want != digest {
            return Err(RegistryError::BadContent(format!(
                "the manifest to push is {digest}, but the reference names {want}"
            )));
        }
    }
    let url = session.repo_url(&format!("manifests/{}", dest.manifest_reference()))?;
    let body = Bytes::from(manifest_bytes);
    let size = body.len() as u64;
    let resp = session
        .send(Method::PUT, url, |r| {
            r.header(CONTENT_TYPE, media_type.as_str())
                .body(body.clone())
        })
        .await?;
    if !resp.status().is_success() {
        return Err(status_error(resp, "PUT", "manifest", dest.repository()).await);
    }
    Ok(Pushed { digest, size })
}

/// Repositories of the same registry known locally (from tags) to hold each blob.
pub(crate) fn mount_sources(store: &Store, dest: &ImageRef) -> Result<HashMap<Digest, String>> {
    let mut out = HashMap::new();
    for (name, desc) in store.tags().map_err(store_err)? {
        let Ok(r) = ImageRef::parse(&name) else {
            continue;
        };
        if r.registry() != dest.registry() || r.repository() == dest.repository() {
            continue;
        }
        let Ok(d) = Digest::parse(desc.digest().as_ref()) else {
            continue;
        };
        let Ok(image) = store.load_image(&d) else {
            continue;
        };
        for blob in image
            .layer_digests()
            .into_iter()
            .chain([image.config_digest.clone()])
        {
            out.entry(blob)
                .or_insert_with(|| r.repository().to_string());
        }
    }
    Ok(out)
}

pub(crate) async fn push_blob(
    store: &Store,
    session: &Session,
    job: &BlobJob,
    chunk: u64,
    progress: &dyn Progress,
) -> Result<()> {
    if blob_exists(session, &job.digest).await? {
        progress.blob_done(&job.digest, "Layer already exists");
        return Ok(());
    }
    progress.blob_started(&job.digest, job.size);
    let location = match &job.mount_from {
        Some(from) => {
            session.add_pull_scope(from).await?;
            let url =
                session.repo_url(&format!("blobs/uploads/?mount={}&from={from}", job.digest))?;
            let resp = session
                .send(Method::POST, url, |r| r.header(CONTENT_LENGTH, 0))
                .await?;
            if resp.status() == StatusCode::CREATED {
                progress.blob_advanced(&job.digest, job.size);
                progress.blob_done(&job.digest, &format!("Mounted from {from}"));
                return Ok(());
            }
            // 202: the registry did not mount, but opened an upload session instead.
            upload_location(session, resp).await?
        }
        None => start_upload(session).await?,
    };
    upload(store, session, job, location, chunk, progress).await?;
    progress.blob_done(&job.digest, "Pushed");
    Ok(())
}

async fn start_upload(session: &Session) -> Result<Url> {
    let url = session.repo_url("blobs/uploads/")?;
    let resp = session
        .send(Method::POST, url, |r| r.header(CONTENT_LENGTH, 0))
        .await?;
    upload_location(session, resp).await
}

async fn upload_location(session: &Session, resp: Response) -> Result<Url> {
    if resp.status() != StatusCode::ACCEPTED {
        return Err(status_error(resp, "POST", "upload", session.repository()).await);
    }
    location_of(&resp)
}

fn location_of(resp: &Response) -> Result<Url> {
    let loc = resp
        .headers()
        .get(LOCATION)
        .ok_or_else(|| RegistryError::BadContent("registry sent no upload Location".into()))?
        .to_str()
        .map_err(|_| {
            RegistryError::BadContent("registry sent an upload Location that is not text".into())
        })?;
    // Relative to the URL that answered (RFC 9110), which is not the registry's when the upload
    // session lives on another host.
    let url = resp
        .url()
        .join(loc)
        .map_err(|e| RegistryError::BadContent(format!("bad upload Location {loc:?}: {e}")))?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err(RegistryError::BadContent(format!(
            "registry sent a bad upload Location {loc:?}"
        )));
    }
    Ok(url)
}

/// The offset after the last byte the registry has, from its `Range: 0-N` header.
fn next_offset(resp: &Response) -> Option<u64> {
    upload_offset(resp.headers().get(RANGE)?.to_str().ok()?)
}

/// The offset an upload `Range` value (`0-N`, inclusive) reports. `0-0` means an empty upload:
/// the reference registry (distribution) answers `0-0` both when it holds no bytes and when it
/// holds one, and reading it as one byte would resume a chunk that never arrived at byte 1, which
/// the registry refuses again and again. Should it really hold one byte, the chunk sent from byte
/// 0 is refused with 416, and a 416 starts a new upload.
fn upload_offset(range: &str) -> Option<u64> {
    let (start, end) = range.trim().trim_start_matches("bytes=").split_once('-')?;
    let (start, end) = (
        start.trim().parse::<u64>().ok()?,
        end.trim().parse::<u64>().ok()?,
    );
    match (start, end) {
        (0, 0) => Some(0),
        (0, end) => end.checked_add(1),
        _ => None,
    }
}

/// Bytes per piece of an upload body: the unit of progress reporting.
const BODY_PIECE: usize = 1 << 20;

/// A request body streaming `len` bytes of the blob at `path` from `offset`, counting what was
/// sent in `sent`. The blob is memory-mapped when the body is first polled and handed out in
/// [`BODY_PIECE`] slices of the mapping, so nothing is copied before the socket write.
fn file_body(path: PathBuf, offset: u64, len: u64, sent: Arc<AtomicU64>) -> reqwest::Body {
    let stream = futures_util::stream::once(async move { map_blob_range(&path, offset, len) })
        .map_ok(move |mapped| {
            let sent = sent.clone();
            futures_util::stream::iter((0..mapped.len()).step_by(BODY_PIECE).map(move |start| {
                let piece = mapped.slice(start..(start + BODY_PIECE).min(mapped.len()));
                sent.fetch_add(piece.len() as u64, Ordering::Relaxed);
                Ok::<Bytes, std::io::Error>(piece)
            }))
        })
        .try_flatten();
    reqwest::Body::wrap_stream(stream)
}

/// Bytes `offset..offset + len` of the blob at `path`, memory-mapped.
fn map_blob_range(path: &Path, offset: u64, len: u64) -> std::io::Result<Bytes> {
    let file = std::fs::File::open(path)?;
    let size = file.metadata()?.len();
    if offset.checked_add(len).is_none_or(|end| end > size) {
        return Err(std::io::Error::new(
            std::io::ErrorKind::UnexpectedEof,
            format!(
                "blob {} has {size} bytes, fewer than the {} to upload; run `rbuild system check`",
                path.display(),
                offset.saturating_add(len)
            ),
        ));
    }
    if len == 0 {
        return Ok(Bytes::new());
    }
    let len = usize::try_from(len).map_err(std::io::Error::other)?;
    // SAFETY: committed blobs are immutable: written in full, fsynced and renamed into place,
    // never written or truncated afterwards (a removed blob stays readable through the map).
    // So the mapped bytes cannot change or vanish while the upload reads them.
    let map = unsafe {
        memmap2::MmapOptions::new()
            .offset(offset)
            .len(len)
            .map(&file)?
    };
    // Read-ahead hints only; their failure changes nothing but speed.
    let _ = map.advise(memmap2::Advice::Sequential);
    let _ = map.advise(memmap2::Advice::WillNeed);
    Ok(Bytes::from_owner(map))
}

async fn upload(
    store: &Store,
    session: &Session,
    job: &BlobJob,
    mut location: Url,
    chunk: u64,
    progress: &dyn Progress,
) -> Result<()> {
    let path = store.blob_path(&job.digest);
    if !path.exists() {
        return Err(RegistryError::io(
            format!("open blob {}", path.display()),
            std::io::Error::from(std::io::ErrorKind::NotFound),
        ));
    }
    let mut offset = 0u64;
    let mut failures = 0u32;
    let attempts = session.retry_policy().attempts.max(1);
    while offset < job.size {
        let len = chunk.max(1).min(job.size - offset);
        let range = format!("{}-{}", offset, offset + len - 1);
        let sent = Arc::new(AtomicU64::new(0));
        // The body can be sent once; a re-sent request (after a new token) gets an empty body,
        // fails on its length, and the upload resumes from what the registry has.
        let body = Mutex::new(Some(file_body(path.clone(), offset, len, sent.clone())));
        let patch = session.send_once(Method::PATCH, location.clone(), |r| {
            let body = body
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .take()
                .unwrap_or_else(|| reqwest::Body::from(Vec::new()));
            r.header(CONTENT_TYPE, "application/octet-stream")
                .header(CONTENT_RANGE, range.as_str())
                .header(CONTENT_LENGTH, len)
                .body(body)
        });
        tokio::pin!(patch);
        let mut restart = false;
        let mut reported = 0u64;
        let mut tick = tokio::time::interval(std::time::Duration::from_millis(200));
        let result = loop {
            tokio::select! {
                r = &mut patch => break r,
                _ = tick.tick() => {
                    let now = sent.load(Ordering::Relaxed);
                    progress.blob_advanced(&job.digest, now.saturating_sub(reported));
                    reported = now;
                }
            }
        };
        match result {
            Ok(resp) if resp.status() == StatusCode::ACCEPTED => {
                let new_offset = next_offset(&resp).unwrap_or(offset + len);
                location = location_of(&resp).unwrap_or(location);
                if new_offset > job.size {
                    return Err(RegistryError::BadContent(format!(
                        "upload of {}: the registry claims {new_offset} bytes of a {}-byte blob",
                        job.digest, job.size
                    )));
                }
                if new_offset > offset {
                    progress.blob_advanced(
                        &job.digest,
                        new_offset.saturating_sub(offset).saturating_sub(reported),
                    );
                    offset = new_offset;
                    failures = 0;
                    continue;
                }
                // A 202 that does not move the offset is no progress: count it as a failure so a
                // registry that keeps answering 202 cannot keep the push looping forever.
                tracing::debug!(offset, "upload chunk accepted without progress");
            }
            Ok(resp) if resp.status() == StatusCode::RANGE_NOT_SATISFIABLE => {
                tracing::debug!(
                    offset,
                    "the registry refused the chunk's offset; starting a new upload"
                );
                restart = true;
            }
            Ok(resp) if resp.status().is_client_error() => {
                return Err(status_error(
                    resp,
                    "PATCH",
                    &format!("upload of {}", job.digest),
                    session.repository(),
                )
                .await);
            }
            Ok(resp) => {
                tracing::debug!(status = %resp.status(), "upload chunk failed; asking the registry for its offset")
            }
            Err(e) => {
                tracing::debug!(error = %e, "upload chunk failed; asking the registry for its offset")
            }
        }
        failures += 1;
        if failures >= attempts {
            return Err(RegistryError::BadContent(format!(
                "upload of {} kept failing at byte {offset}; try again",
                job.digest
            )));
        }
        tokio::time::sleep(session.retry_policy().delay(failures - 1, None)).await;
        if restart {
            location = start_upload(session).await?;
            offset = 0;
            continue;
        }
        // Resume from what the registry actually has.
        let status = session.send(Method::GET, location.clone(), |r| r).await?;
        if status.status() == StatusCode::NO_CONTENT || status.status().is_success() {
            let have = next_offset(&status).unwrap_or(0);
            location = location_of(&status).unwrap_or(location);
            offset = have;
        } else {
            // The upload session is gone: start a new one from the beginning.
            location = start_upload(session).await?;
            offset = 0;
        }
    }
    let mut finish = location.clone();
    finish
        .query_pairs_mut()
        .append_pair("digest", job.digest.as_str());
    let resp = session
        .send(Method::PUT, finish, |r| r.header(CONTENT_LENGTH, 0))
        .await;
    let failure = match resp {
        Ok(resp) if resp.status().is_success() => return Ok(()),
        Ok(resp) => {
            status_error(
                resp,
                "PUT",
                &format!("upload of {}", job.digest),
                session.repository(),
            )
            .await
        }
        Err(e) => e,
    };
    // The registry may have committed the blob and lost its answer; the retried PUT then finds
    // the upload gone. Whether the blob is there decides.
    if blob_exists(session, &job.digest).await.unwrap_or(false) {
        return Ok(());
    }
    Err(failure)
}

/// Whether the repository has blob `digest` (HEAD answered with a success).
async fn blob_exists(session: &Session, digest: &Digest) -> Result<bool> {
    let head = session
        .send(
            Method::HEAD,
            session.repo_url(&format!("blobs/{digest}"))?,
            |r| r,
        )
        .await?;
    Ok(head.status().is_success())
}

/// Rewrites a manifest in the wanted format; unchanged bytes when it already is.
fn convert_manifest(
    manifest: &ImageManifest,
    stored: &[u8],
    stored_type: &str,
    format: ManifestFormat,
) -> Result<(Vec<u8>, String)> {
    let (manifest_type, config_type) = match format {
        ManifestFormat::Oci => (OCI_MANIFEST, OCI_CONFIG),
        ManifestFormat::Docker => (DOCKER_MANIFEST, DOCKER_CONFIG),
    };
    if stored_type == manifest_type {
        return Ok((stored.to_vec(), stored_type.to_string()));
    }
    let descriptor = |d: &Descriptor, media_type: String| {
        let mut v = serde_json::json!({
            "mediaType": media_type,
            "size": d.size(),
            "digest": d.digest().to_string(),
        });
        if let Some(urls) = d.urls() {
            v["urls"] = serde_json::json!(urls);
        }
        v
    };
    let mut layers = Vec::new();
    for l in manifest.layers() {
        let t = l.media_type().to_string();
        let mapped = match (format, t.as_str()) {
            (ManifestFormat::Docker, "application/vnd.oci.image.layer.v1.tar+gzip") => DOCKER_LAYER_GZIP.to_string(),
            (ManifestFormat::Docker, "application/vnd.oci.image.layer.v1.tar") => {
                "application/vnd.docker.image.rootfs.diff.tar".to_string()
            }
            (ManifestFormat::Docker, z) if z.contains("zstd") => {
                return Err(RegistryError::BadContent(
                    "zstd layers cannot be described by a Docker v2s2 manifest; push with --format oci".into(),
                ))
            }
            (ManifestFormat::Oci, DOCKER_LAYER_GZIP) => "application/vnd.oci.image.layer.v1.tar+gzip".to_string(),
            (ManifestFormat::Oci, "application/vnd.docker.image.rootfs.diff.tar") => {
                "application/vnd.oci.image.layer.v1.tar".to_string()
            }
            (_, other) => other.to_string(),
        };
        layers.push(descriptor(l, mapped));
    }
    let doc = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": manifest_type,
        "config": descriptor(manifest.config(), config_type.to_string()),
        "layers": layers,
    });
    let bytes = serde_json::to_vec(&doc)
        .map_err(|e| RegistryError::BadContent(format!("manifest: {e}")))?;
    Ok((bytes, manifest_type.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn upload_ranges_give_the_next_offset() {
        assert_eq!(
            upload_offset("0-0"),
            Some(0),
            "the reference registry's empty upload"
        );
        assert_eq!(upload_offset("0-1"), Some(2));
        assert_eq!(upload_offset("0-65535"), Some(65536));
        assert_eq!(upload_offset(" bytes=0-9 "), Some(10));
        assert_eq!(upload_offset("5-9"), None, "not a count from the start");
        assert_eq!(upload_offset("0-x"), None);
        assert_eq!(upload_offset("0-18446744073709551615"), None);
        assert_eq!(upload_offset(""), None);
    }

    #[test]
    fn mapped_blob_ranges_are_exact_and_checked() {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("blob");
        let data: Vec<u8> = (0..3 * BODY_PIECE + 17).map(|i| (i % 251) as u8).collect();
        std::fs::write(&path, &data).expect("write blob");

        let whole = map_blob_range(&path, 0, data.len() as u64).expect("map whole");
        assert_eq!(&whole[..], &data[..]);
        // An odd, unaligned offset (a resumed chunk).
        let part = map_blob_range(&path, 4097, 70_000).expect("map part");
        assert_eq!(&part[..], &data[4097..4097 + 70_000]);
        assert!(map_blob_range(&path, 5, 0).expect("empty").is_empty());

        let err = map_blob_range(&path, 10, data.len() as u64).expect_err("past the end");
        assert_eq!(err.kind(), std::io::ErrorKind::UnexpectedEof);
        assert!(err.to_string().contains("blob"), "{err}");
    }

    #[test]
    fn file_body_streams_the_range_and_counts_it() {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("blob");
        let data: Vec<u8> = (0..2 * BODY_PIECE + 5).map(|i| (i % 241) as u8).collect();
        std::fs::write(&path, &data).expect("write blob");
        let sent = Arc::new(AtomicU64::new(0));
        let len = data.len() as u64 - 3;
        let body = file_body(path, 3, len, sent.clone());
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .expect("runtime");
        let mut stream = http_body_util::BodyDataStream::new(body);
        let mut got = Vec::new();
        rt.block_on(async {
            while let Some(piece) = stream.next().await {
                let piece = piece.expect("piece");
                assert!(piece.len() <= BODY_PIECE);
                got.extend_from_slice(&piece);
            }
        });
        assert_eq!(got, &data[3..]);
        assert_eq!(sent.load(Ordering::Relaxed), len);
    }
}
