//! OCI artifacts (such as rbuild's shared build cache) in a repository: fetch a manifest or a
//! blob by reference or digest without unpacking anything, push blobs from the store or from
//! memory, and put a manifest. Built on the same [`Session`] (auth, retries, resumption) and
//! blob transfer code as pull and push; synchronous, for callers without a tokio runtime.

use crate::client::{status_error, Access, ClientOptions, Session};
use crate::config::{endpoints, RegistryConfig};
use crate::credentials::CredentialStore;
use crate::error::{RegistryError, Result};
use crate::fetch::{fetch_blob, BlobRequest, BlobSink};
use crate::media::{MANIFEST_ACCEPT, OCI_MANIFEST};
use crate::progress::NoProgress;
use crate::pull::{fetch_raw_manifest, store_err};
use crate::push::{mount_sources, push_blob, BlobJob};
use crate::reference::ImageRef;
use bytes::Bytes;
use rbuild_layerfs::{Digest, Store};
use reqwest::header::{CONTENT_LENGTH, CONTENT_TYPE, LOCATION};
use reqwest::{Method, StatusCode};
use std::collections::HashMap;
use std::future::Future;
use std::io::Write;

/// Settings for talking to an artifact repository.
#[derive(Debug, Clone)]
pub struct ArtifactOptions {
    /// Verify TLS certificates.
    pub tls_verify: bool,
    /// Insecure registries and mirrors.
    pub config: RegistryConfig,
    /// Where credentials come from.
    pub credentials: CredentialStore,
    /// Retry and timeout settings.
    pub client: ClientOptions,
    /// Bytes per upload request (PATCH).
    pub chunk_size: u64,
}

impl Default for ArtifactOptions {
    fn default() -> Self {
        ArtifactOptions {
            tls_verify: true,
            config: RegistryConfig::default(),
            credentials: CredentialStore::from_env(),
            client: ClientOptions::default(),
            chunk_size: 64 << 20,
        }
    }
}

/// A manifest as fetched: its bytes, digest and media type.
#[derive(Debug, Clone)]
pub struct FetchedManifest {
    /// The manifest document.
    pub body: Vec<u8>,
    /// Its digest (verified against the registry's header or the reference).
    pub digest: Digest,
    /// The Content-Type the registry sent.
    pub media_type: String,
}

/// An open, authenticated connection to one repository, with its own small runtime.
#[derive(Debug)]
pub struct ArtifactRepo {
    rt: tokio::runtime::Runtime,
    session: Session,
    reference: ImageRef,
    chunk_size: u64,
}

impl ArtifactRepo {
    /// Connects to the repository of `reference` with pull (or pull and push) access.
    /// Must not be called from inside a tokio runtime.
    pub fn open(reference: &ImageRef, access: Access, options: &ArtifactOptions) -> Result<Self> {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .map_err(|e| RegistryError::io("start the async runtime", e))?;
        let ep = endpoints(
            &options.config,
            reference.registry(),
            options.tls_verify,
            false,
        )
        .pop()
        .ok_or_else(|| {
            RegistryError::BadContent(format!("no endpoint for {}", reference.registry()))
        })?;
        let credential = options.credentials.get(reference.registry())?;
        let session = rt.block_on(Session::connect(
            &ep,
            reference.registry(),
            reference.repository(),
            access,
            credential,
            &options.client,
        ))?;
        Ok(ArtifactRepo {
            rt,
            session,
            reference: reference.clone(),
            chunk_size: options.chunk_size.max(1),
        })
    }

    /// The reference this repository was opened for.
    pub fn reference(&self) -> &ImageRef {
        &self.reference
    }

    fn block_on<T>(&self, fut: impl Future<Output = Result<T>>) -> Result<T> {
        self.rt.block_on(fut)
    }

    /// The manifest the reference names (tag or digest), or None when the registry has none.
    pub fn fetch_manifest(&self) -> Result<Option<FetchedManifest>> {
        let reference = self.reference.manifest_reference();
        let session = &self.session;
        let expected = self.reference.digest();
        self.block_on(async move {
            let accept = format!("{OCI_MANIFEST}, {MANIFEST_ACCEPT}");
            let raw = fetch_raw_manifest(session, &reference, expected, &accept, true).await?;
            Ok(raw.map(|m| FetchedManifest {
                body: m.body,
                digest: m.digest,
                media_type: m.content_type.unwrap_or_default(),
            }))
        })
    }

    /// Downloads a small blob into memory (at most `limit` bytes) and verifies its digest.
    pub fn fetch_blob_bytes(&self, digest: &Digest, size: u64, limit: u64) -> Result<Vec<u8>> {
        if size > limit {
            return Err(RegistryError::BadContent(format!(
                "blob {digest} is {size} bytes, more than the {limit} allowed"
            )));
        }
        let session = &self.session;
        self.block_on(async move {
            let mut sink = BlobSink::Memory(Vec::new());
            let req = BlobRequest {
                digest,
                size,
                urls: &[],
            };
            fetch_blob(session, &req, &mut sink, &NoProgress).await?;
            let BlobSink::Memory(data) = sink else {
                return Err(RegistryError::BadContent("memory sink expected".into()));
            };
            let got = Digest::of_bytes(&data);
            if got != *digest {
                return Err(RegistryError::BadContent(format!(
                    "blob hashes to {got}, not {digest}"
                )));
            }
            Ok(data)
        })
    }

    /// Downloads a blob straight into the store's verified ingest (nothing is unpacked).
    /// Does nothing when the store already has it.
    pub fn fetch_blob_to_store(&self, store: &Store, digest: &Digest, size: u64) -> Result<()> {
        if store.has_blob(digest) {
            return Ok(());
        }
        let session = &self.session;
        self.block_on(async move {
            let (tx, mut rx) = tokio::sync::mpsc::channel::<Bytes>(32);
            let consumer = {
                let (store, digest) = (store.clone(), digest.clone());
                tokio::task::spawn_blocking(move || -> Result<()> {
                    let mut ingest = store.ingest().map_err(store_err)?;
                    while let Some(chunk) = rx.blocking_recv() {
                        ingest
                            .write_all(&chunk)
                            .map_err(|e| RegistryError::io(format!("write blob {digest}"), e))?;
                    }
                    ingest
                        .commit(Some(&digest), Some(size))
                        .map_err(store_err)?;
                    Ok(())
                })
            };
            let mut sink = BlobSink::Channel(tx);
            let req = BlobRequest {
                digest,
                size,
                urls: &[],
            };
            let fetched = fetch_blob(session, &req, &mut sink, &NoProgress).await;
            drop(sink);
            let consumed = consumer
                .await
                .map_err(|e| RegistryError::BadContent(format!("blob task failed: {e}")))?;
            fetched?;
            consumed
        })
    }

    /// Whether the repository has the blob `digest`.
    pub fn has_blob(&self, digest: &Digest) -> Result<bool> {
        let session = &self.session;
        self.block_on(async move {
            let url = session.repo_url(&format!("blobs/{digest}"))?;
            let resp = session.send(Method::HEAD, url, |r| r).await?;
            Ok(resp.status().is_success())
        })
    }

    /// Repositories of this registry that locally tagged images say hold each blob (sources
    /// for cross-repository mounts).
    pub fn mount_sources(&self, store: &Store) -> Result<HashMap<Digest, String>> {
        mount_sources(store, &self.reference)
    }

    /// Pushes the store's blob `digest` unless the repository has it, mounting it from
    /// `mount_from` (another repository of the registry) when given.
    pub fn push_store_blob(
        &self,
        store: &Store,
        digest: &Digest,
        size: u64,
        mount_from: Option<&str>,
    ) -> Result<()> {
        let job = BlobJob {
            digest: digest.clone(),
            size,
            mount_from: mount_from.map(str::to_string),
        };
        self.block_on(push_blob(
            store,
            &self.session,
            &job,
            self.chunk_size,
            &NoProgress,
        ))
    }

    /// Mounts blob `digest` from repository `from` of the same registry; false when the
    /// registry would not (the upload session it opened instead is cancelled).
    pub fn mount_blob(&self, digest: &Digest, from: &str) -> Result<bool> {
        let session = &self.session;
        self.block_on(async move {
            session.add_pull_scope(from).await?;
            let url = session.repo_url(&format!("blobs/uploads/?mount={digest}&from={from}"))?;
            let resp = session
                .send(Method::POST, url, |r| r.header(CONTENT_LENGTH, 0))
                .await?;
            match resp.status() {
                StatusCode::CREATED => Ok(true),
                StatusCode::ACCEPTED => {
                    let loc = resp
                        .headers()
                        .get(LOCATION)
                        .and_then(|v| v.to_str().ok())
                        .and_then(|l| session.resolve_location(l).ok());
                    if let Some(url) = loc {
                        let _ = session.send(Method::DELETE, url, |r| r).await;
                    }
                    Ok(false)
                }
                _ => Err(status_error(
                    resp,
                    "POST",
                    &format!("mount of {digest} from {from}"),
                    session.repository(),
                )
                .await),
            }
        })
    }

    /// Pushes a small blob from memory (unless the repository has it); returns its digest.
    pub fn push_bytes(&self, data: &[u8]) -> Result<Digest> {
        let digest = Digest::of_bytes(data);
        if self.has_blob(&digest)? {
            return Ok(digest);
        }
        let session = &self.session;
        let body = Bytes::copy_from_slice(data);
        let d = digest.clone();
        self.block_on(async move {
            let resp = session
                .send(Method::POST, session.repo_url("blobs/uploads/")?, |r| {
                    r.header(CONTENT_LENGTH, 0)
                })
                .await?;
            if resp.status() != StatusCode::ACCEPTED {
                return Err(status_error(resp, "POST", "upload", session.repository()).await);
            }
            let loc = resp
                .headers()
                .get(LOCATION)
                .and_then(|v| v.to_str().ok())
                .ok_or_else(|| {
                    RegistryError::BadContent("registry sent no upload Location".into())
                })?;
            let mut url = session.resolve_location(loc)?;
            url.query_pairs_mut().append_pair("digest", d.as_str());
            let len = body.len();
            let resp = session
                .send(Method::PUT, url, |r| {
                    r.header(CONTENT_TYPE, "application/octet-stream")
                        .header(CONTENT_LENGTH, len)
                        .body(body.clone())
                })
                .await?;
            if !resp.status().is_success() {
                return Err(status_error(
                    resp,
                    "PUT",
                    &format!("upload of {d}"),
                    session.repository(),
                )
                .await);
            }
            Ok(())
        })?;
        Ok(digest)
    }

    /// Puts `body` as the manifest the reference names; returns its digest.
    pub fn put_manifest(&self, body: &[u8], media_type: &str) -> Result<Digest> {
        let digest = Digest::of_bytes(body);
        if let Some(want) = self.reference.digest() {
            if *want != digest {
                return Err(RegistryError::BadContent(format!(
                    "the manifest to push is {digest}, but the reference names {want}"
                )));
            }
        }
        let session = &self.session;
        let reference = self.reference.manifest_reference();
        let body = Bytes::copy_from_slice(body);
        self.block_on(async move {
            let url = session.repo_url(&format!("manifests/{reference}"))?;
            let resp = session
                .send(Method::PUT, url, |r| {
                    r.header(CONTENT_TYPE, media_type).body(body.clone())
                })
                .await?;
            if !resp.status().is_success() {
                return Err(status_error(resp, "PUT", "manifest", session.repository()).await);
            }
            Ok(())
        })?;
        Ok(digest)
    }
}
