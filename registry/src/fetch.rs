//! Streaming blob download: foreign URLs without credentials, `Range` resumption after a dropped
//! connection, and refusal of bodies longer or shorter than the descriptor says.

use crate::client::{status_error, Session};
use crate::error::{RegistryError, Result};
use crate::progress::Progress;
use bytes::Bytes;
use rbuild_layerfs::Digest;
use reqwest::header::{CONTENT_RANGE, RANGE};
use reqwest::{Method, Response, StatusCode, Url};
use std::sync::{Arc, Mutex};

/// Where downloaded bytes go.
pub enum BlobSink {
    /// Collected in memory (configs), up to the descriptor size.
    Memory(Vec<u8>),
    /// Sent chunk by chunk to a consumer (layers: ingest and extraction).
    Channel(tokio::sync::mpsc::Sender<Bytes>),
    /// Every chunk sent to several consumers (shared, not copied), which run in parallel.
    Fanout(Vec<tokio::sync::mpsc::Sender<Bytes>>),
}

impl BlobSink {
    async fn accept(&mut self, chunk: Bytes) -> Result<()> {
        match self {
            BlobSink::Memory(v) => {
                v.extend_from_slice(&chunk);
                Ok(())
            }
            BlobSink::Channel(tx) => tx
                .send(chunk)
                .await
                .map_err(|_| RegistryError::BadContent("the layer consumer stopped early".into())),
            BlobSink::Fanout(txs) => {
                for tx in txs.iter() {
                    tx.send(chunk.clone()).await.map_err(|_| {
                        RegistryError::BadContent("the layer consumer stopped early".into())
                    })?;
                }
                Ok(())
            }
        }
    }

    /// Whether a consumer has gone away (it failed and dropped its receiver).
    pub fn consumer_gone(&self) -> bool {
        match self {
            BlobSink::Memory(_) => false,
            BlobSink::Channel(tx) => tx.is_closed(),
            BlobSink::Fanout(txs) => txs.iter().any(|t| t.is_closed()),
        }
    }
}

/// Size of the buffers the network chunks are gathered into before they go to a consumer.
const GATHER_BUFFER: usize = 512 << 10;
/// Gather buffers kept for reuse.
const POOLED_BUFFERS: usize = 48;

/// Gathers the network's chunks (often a few KiB to a few hundred KiB each) into reused
/// [`GATHER_BUFFER`]-sized buffers before they go to a streaming sink. The copy costs less than
/// it saves: the HTTP client's read buffer is free again at once (so it is reused instead of a
/// fresh allocation per read, whose pages the kernel must fault in and zero), the consumers'
/// buffers come from a pool, and the consumers wake once per half MiB, not once per read.
struct Gatherer {
    pool: Arc<Mutex<Vec<Vec<u8>>>>,
    pending: Vec<u8>,
}

/// A gathered buffer; dropping its last `Bytes` returns it to the pool.
struct Pooled {
    data: Vec<u8>,
    pool: Arc<Mutex<Vec<Vec<u8>>>>,
}

impl AsRef<[u8]> for Pooled {
    fn as_ref(&self) -> &[u8] {
        &self.data
    }
}

impl Drop for Pooled {
    fn drop(&mut self) {
        let mut data = std::mem::take(&mut self.data);
        data.clear();
        if let Ok(mut pool) = self.pool.lock() {
            if pool.len() < POOLED_BUFFERS {
                pool.push(data);
            }
        }
    }
}

impl Gatherer {
    fn new() -> Gatherer {
        Gatherer {
            pool: Arc::new(Mutex::new(Vec::new())),
            pending: Vec::new(),
        }
    }

    /// Passes `chunk` on: straight into a memory sink, else gathered and sent per full buffer.
    async fn push(&mut self, sink: &mut BlobSink, chunk: Bytes) -> Result<()> {
        if let BlobSink::Memory(v) = sink {
            v.extend_from_slice(&chunk);
            return Ok(());
        }
        let mut rest = &chunk[..];
        while !rest.is_empty() {
            if self.pending.capacity() == 0 {
                let reused = self.pool.lock().ok().and_then(|mut p| p.pop());
                self.pending = reused.unwrap_or_else(|| Vec::with_capacity(GATHER_BUFFER));
            }
            let n = (GATHER_BUFFER - self.pending.len()).min(rest.len());
            self.pending.extend_from_slice(&rest[..n]);
            rest = &rest[n..];
            if self.pending.len() >= GATHER_BUFFER {
                self.flush(sink).await?;
            }
        }
        Ok(())
    }

    /// Sends what is gathered so far.
    async fn flush(&mut self, sink: &mut BlobSink) -> Result<()> {
        if self.pending.is_empty() {
            return Ok(());
        }
        let data = std::mem::take(&mut self.pending);
        let pool = self.pool.clone();
        sink.accept(Bytes::from_owner(Pooled { data, pool })).await
    }
}

/// What to fetch.
pub struct BlobRequest<'a> {
    /// The blob digest.
    pub digest: &'a Digest,
    /// The size from the descriptor.
    pub size: u64,
    /// Foreign URLs from the descriptor, tried first without credentials.
    pub urls: &'a [String],
}

/// Downloads a blob into `sink`, resuming with `Range` after a connection drops (up to the
/// session's retry attempts). Returns the number of bytes delivered, always `req.size`.
pub async fn fetch_blob(
    session: &Session,
    req: &BlobRequest<'_>,
    sink: &mut BlobSink,
    progress: &dyn Progress,
) -> Result<u64> {
    let registry_url = session.repo_url(&format!("blobs/{}", req.digest))?;
    let mut sources: Vec<(Url, bool)> = req
        .urls
        .iter()
        .filter_map(|u| Url::parse(u).ok())
        .filter(|u| matches!(u.scheme(), "http" | "https"))
        .map(|u| (u, true))
        .collect();
    sources.push((registry_url, false));
    let mut delivered = 0u64;
    let mut failures = 0u32;
    let attempts = session.retry_policy().attempts.max(1);
    let mut last_error: Option<RegistryError> = None;
    let mut source_idx = 0;
    let mut gatherer = Gatherer::new();
    while source_idx < sources.len() {
        let (url, foreign) = &sources[source_idx];
        let resp = match open(session, url, *foreign, delivered).await {
            Ok(r) => r,
            Err(e) if *foreign => {
                tracing::debug!(%url, error = %e, "foreign layer URL failed; trying the next source");
                last_error = Some(e);
                source_idx += 1;
                continue;
            }
            Err(e) => return Err(e),
        };
        let skip = match resp.status() {
            StatusCode::OK => delivered,
            StatusCode::PARTIAL_CONTENT => {
                let start = content_range_start(&resp).unwrap_or(delivered);
                if start > delivered {
                    return Err(RegistryError::BadContent(format!(
                        "blob {}: registry resumed at byte {start}, not {delivered}",
                        req.digest
                    )));
                }
                delivered - start
            }
            _ if *foreign => {
                last_error = Some(
                    status_error(
                        resp,
                        "GET",
                        &format!("blob {}", req.digest),
                        session.repository(),
                    )
                    .await,
                );
                source_idx += 1;
                continue;
            }
            _ => {
                return Err(status_error(
                    resp,
                    "GET",
                    &format!("blob {}", req.digest),
                    session.repository(),
                )
                .await);
            }
        };
        let streamed = stream_body(
            resp,
            skip,
            req,
            &mut delivered,
            &mut gatherer,
            sink,
            progress,
        );
        match streamed.await {
            Ok(()) if delivered == req.size => {
                gatherer.flush(sink).await?;
                return Ok(delivered);
            }
            Ok(()) => {
                last_error = Some(RegistryError::BadContent(format!(
                    "blob {} truncated: got {delivered} of {} bytes",
                    req.digest, req.size
                )));
            }
            Err(StreamError::Fatal(e)) => return Err(e),
            Err(StreamError::Dropped(e)) => last_error = Some(e),
        }
        failures += 1;
        if failures >= attempts {
            break;
        }
        let delay = session.retry_policy().delay(failures - 1, None);
        progress.message(&format!(
            "blob {}: connection lost after {delivered} bytes; resuming in {delay:?}",
            req.digest.short()
        ));
        tokio::time::sleep(delay).await;
    }
    Err(last_error.unwrap_or_else(|| {
        RegistryError::BadContent(format!("blob {}: no source could deliver it", req.digest))
    }))
}

async fn open(session: &Session, url: &Url, foreign: bool, offset: u64) -> Result<Response> {
    let with_range = |r: reqwest::RequestBuilder| {
        if offset > 0 {
            r.header(RANGE, format!("bytes={offset}-"))
        } else {
            r
        }
    };
    if foreign {
        session.send_foreign(url.clone(), with_range).await
    } else {
        session.send(Method::GET, url.clone(), with_range).await
    }
}

enum StreamError {
    /// The connection broke; resuming may help.
    Dropped(RegistryError),
    /// The content is wrong or the consumer failed; stop.
    Fatal(RegistryError),
}

async fn stream_body(
    mut resp: Response,
    mut skip: u64,
    req: &BlobRequest<'_>,
    delivered: &mut u64,
    gatherer: &mut Gatherer,
    sink: &mut BlobSink,
    progress: &dyn Progress,
) -> std::result::Result<(), StreamError> {
    let url = resp.url().to_string();
    loop {
        let chunk = match resp.chunk().await {
            Ok(Some(c)) => c,
            Ok(None) => return Ok(()),
            Err(e) => return Err(StreamError::Dropped(RegistryError::Http { url, source: e })),
        };
        let mut chunk = chunk;
        if skip > 0 {
            let n = skip.min(chunk.len() as u64) as usize;
            skip -= n as u64;
            chunk = chunk.slice(n..);
            if chunk.is_empty() {
                continue;
            }
        }
        let n = chunk.len() as u64;
        if *delivered + n > req.size {
            return Err(StreamError::Fatal(RegistryError::BadContent(format!(
                "blob {} is longer than the {} bytes its descriptor says",
                req.digest, req.size
            ))));
        }
        gatherer
            .push(sink, chunk)
            .await
            .map_err(StreamError::Fatal)?;
        *delivered += n;
        progress.blob_advanced(req.digest, n);
    }
}

fn content_range_start(resp: &Response) -> Option<u64> {
    let v = resp.headers().get(CONTENT_RANGE)?.to_str().ok()?;
    let range = v.trim().strip_prefix("bytes")?.trim_start();
    range.split('-').next()?.trim().parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn gathered_buffers_keep_the_bytes_in_order_and_are_reused() {
        let data: Vec<u8> = (0..3 * GATHER_BUFFER + 777)
            .map(|i| (i % 253) as u8)
            .collect();
        let (tx, mut rx) = tokio::sync::mpsc::channel(64);
        let mut sink = BlobSink::Channel(tx);
        let mut gatherer = Gatherer::new();
        for piece in data.chunks(100_001) {
            gatherer
                .push(&mut sink, Bytes::copy_from_slice(piece))
                .await
                .unwrap();
        }
        gatherer.flush(&mut sink).await.unwrap();
        drop(sink);
        let mut out = Vec::new();
        let mut sizes = Vec::new();
        while let Some(chunk) = rx.recv().await {
            sizes.push(chunk.len());
            out.extend_from_slice(&chunk);
        }
        assert!(out == data, "bytes changed on the way");
        assert_eq!(sizes, [GATHER_BUFFER, GATHER_BUFFER, GATHER_BUFFER, 777]);
        // Every buffer went back to the pool once its last reader dropped it.
        assert_eq!(gatherer.pool.lock().unwrap().len(), 4);
        let mut memory = BlobSink::Memory(Vec::new());
        gatherer
            .push(&mut memory, Bytes::from_static(b"abc"))
            .await
            .unwrap();
        let BlobSink::Memory(v) = memory else {
            unreachable!()
        };
        assert_eq!(v, b"abc");
    }
}
