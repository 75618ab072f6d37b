//! An in-process fake registry (hyper on 127.0.0.1:0, its own thread and runtime) with
//! optional bearer-token auth and fault injection: dropped connections, 500/429, corrupt or
//! truncated blobs, redirects, bad upload Locations, failing upload chunks.
#![allow(dead_code)]

use bytes::Bytes;
use http_body_util::{combinators::BoxBody, BodyExt, Full, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

type Body = BoxBody<Bytes, std::io::Error>;

/// One request the fake saw.
#[derive(Debug, Clone)]
pub struct Seen {
    pub method: String,
    pub path: String,
    pub query: String,
    pub authorization: Option<String>,
    pub range: Option<String>,
}

/// Faults to inject; each counter is consumed by the requests it affects.
#[derive(Debug, Default)]
pub struct Faults {
    /// Statuses to answer blob GETs with, in order, before serving normally (500, 429...).
    pub blob_statuses: VecDeque<u16>,
    /// Retry-After value (seconds or an HTTP date) sent with the statuses of `blob_statuses`.
    pub retry_after: Option<String>,
    /// Drop the connection after this many body bytes, for this many blob GETs.
    pub drop_after: Option<(usize, u32)>,
    /// Serve blobs with one byte flipped.
    pub corrupt: bool,
    /// Serve blobs (chunked, no Content-Length) missing their last bytes, every time.
    pub truncate: bool,
    /// Ignore Range headers (always answer 200 with the whole blob).
    pub ignore_range: bool,
    /// Redirect blob GETs to this base URL (same path).
    pub redirect_blobs: Option<String>,
    /// Location header sent when an upload starts.
    pub upload_location: Option<String>,
    /// This many finishing PUTs of uploads commit the blob but answer 500 (a lost answer).
    pub lose_finish_answers: u32,
    /// Upload Locations point to this base URL (another server; the path and upload ID as here).
    pub uploads_elsewhere: Option<String>,
    /// Fail this many PATCHes with 500 after storing half of their bytes.
    pub fail_patches: u32,
    /// Bytes of a failed PATCH stored (default: half). The reference registry reports both 0 and
    /// 1 byte held as `Range: 0-0`; so does this fake.
    pub failed_patch_keeps: Option<usize>,
    /// Content-Type sent with manifests instead of the stored one.
    pub manifest_content_type: Option<String>,
    /// Send this many body bytes, then go silent (connection open, nothing more), for this many
    /// blob GETs.
    pub stall_after: Option<(usize, u32)>,
    /// Answer error statuses from `blob_statuses` with a body that never ends.
    pub endless_error_body: bool,
    /// Answer every PATCH with 202 but keep none of its bytes (an upload that never advances).
    pub stuck_patches: bool,
    /// GETs of these blobs wait until `gate_width` of them are in flight at once (or 3 s pass),
    /// so the client's download parallelism shows in `gated_max_in_flight`.
    pub gated_blobs: std::collections::HashSet<String>,
    /// See `gated_blobs`.
    pub gate_width: usize,
}

/// Bearer-token auth settings.
#[derive(Debug, Clone)]
pub struct Bearer {
    /// Basic credentials the token endpoint requires (None: anonymous tokens).
    pub user: Option<(String, String)>,
    /// The token handed out.
    pub token: String,
}

#[derive(Debug, Default)]
pub struct State {
    pub blobs: HashMap<String, Bytes>,
    pub manifests: HashMap<String, (String, Bytes)>,
    pub uploads: HashMap<String, Vec<u8>>,
    pub faults: Faults,
    pub bearer: Option<Bearer>,
    pub seen: Vec<Seen>,
    /// TCP connections accepted.
    pub connections: usize,
    /// The refresh token the token endpoint accepts in a POSTed refresh-token grant.
    pub refresh_token: Option<String>,
    /// Bodies of the forms POSTed to the token endpoint.
    pub token_forms: Vec<String>,
    /// GETs of gated blobs being answered now, and the most there ever were at once.
    pub gated_in_flight: usize,
    pub gated_max_in_flight: usize,
    next_upload: u64,
}

/// A running fake registry; stopped on drop.
pub struct FakeRegistry {
    addr: SocketAddr,
    pub state: Arc<Mutex<State>>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl FakeRegistry {
    pub fn start() -> FakeRegistry {
        let state = Arc::new(Mutex::new(State::default()));
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind fake registry");
        listener.set_nonblocking(true).expect("nonblocking");
        let addr = listener.local_addr().expect("addr");
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let st = state.clone();
        let thread = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("runtime");
            rt.block_on(async move {
                let listener = tokio::net::TcpListener::from_std(listener).expect("tokio listener");
                let serve = async {
                    loop {
                        let Ok((stream, _)) = listener.accept().await else {
                            continue;
                        };
                        st.lock().unwrap().connections += 1;
                        let st = st.clone();
                        tokio::spawn(async move {
                            let svc = hyper::service::service_fn(move |req| {
                                let st = st.clone();
                                async move {
                                    Ok::<_, std::convert::Infallible>(handle(req, st, addr).await)
                                }
                            });
                            let _ = hyper::server::conn::http1::Builder::new()
                                .serve_connection(TokioIo::new(stream), svc)
                                .await;
                        });
                    }
                };
                tokio::select! {
                    _ = serve => {}
                    _ = stopped => {}
                }
            });
        });
        FakeRegistry {
            addr,
            state,
            stop: Some(stop),
            thread: Some(thread),
        }
    }

    /// `127.0.0.1:PORT`.
    pub fn host(&self) -> String {
        self.addr.to_string()
    }

    /// `http://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap()
    }

    /// Opens empty upload sessions `u1`..=`uN` (for uploads another fake sends here).
    pub fn open_uploads(&self, n: u64) {
        let mut s = self.state();
        for i in 1..=n {
            s.uploads.insert(format!("u{i}"), Vec::new());
        }
    }

    /// Stores a blob.
    pub fn put_blob(&self, digest: &str, data: Vec<u8>) {
        self.state()
            .blobs
            .insert(digest.to_string(), Bytes::from(data));
    }

    /// Stores a manifest under `repo` for `reference` (tag or digest).
    pub fn put_manifest(&self, repo: &str, reference: &str, content_type: &str, data: Vec<u8>) {
        self.state().manifests.insert(
            format!("{repo}:{reference}"),
            (content_type.to_string(), Bytes::from(data)),
        );
    }

    /// Requests seen so far.
    pub fn seen(&self) -> Vec<Seen> {
        self.state().seen.clone()
    }
}

impl Drop for FakeRegistry {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn full(status: StatusCode, body: impl Into<Bytes>) -> Response<Body> {
    let mut r = Response::new(
        Full::new(body.into())
            .map_err(|never| match never {})
            .boxed(),
    );
    *r.status_mut() = status;
    r
}

fn header(req: &Request<Incoming>, name: &str) -> Option<String> {
    req.headers()
        .get(name)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string)
}

async fn handle(req: Request<Incoming>, st: Arc<Mutex<State>>, addr: SocketAddr) -> Response<Body> {
    let method = req.method().as_str().to_string();
    let path = req.uri().path().to_string();
    let query = req.uri().query().unwrap_or("").to_string();
    let auth = header(&req, "authorization");
    let range = header(&req, "range");
    st.lock().unwrap().seen.push(Seen {
        method: method.clone(),
        path: path.clone(),
        query: query.clone(),
        authorization: auth.clone(),
        range: range.clone(),
    });
    // Token endpoint.
    if path == "/token" {
        let bearer = st.lock().unwrap().bearer.clone();
        let Some(bearer) = bearer else {
            return full(StatusCode::NOT_FOUND, "");
        };
        if method == "POST" {
            // OAuth2 refresh-token grant (an `identitytoken` in config.json).
            let form = req
                .into_body()
                .collect()
                .await
                .map(|b| b.to_bytes())
                .unwrap_or_default();
            let form = String::from_utf8_lossy(&form).into_owned();
            let field = |k: &str| {
                form.split('&')
                    .find_map(|kv| kv.strip_prefix(&format!("{k}=")))
                    .map(str::to_string)
            };
            st.lock().unwrap().token_forms.push(form.clone());
            let wanted = st.lock().unwrap().refresh_token.clone();
            let granted = field("grant_type").as_deref() == Some("refresh_token")
                && wanted.is_some()
                && field("refresh_token") == wanted;
            if !granted {
                return full(StatusCode::UNAUTHORIZED, r#"{"error":"invalid_grant"}"#);
            }
            return full(
                StatusCode::OK,
                format!(r#"{{"access_token":"{}","expires_in":300}}"#, bearer.token),
            );
        }
        if let Some((u, p)) = &bearer.user {
            use base64::Engine;
            let want = format!(
                "Basic {}",
                base64::engine::general_purpose::STANDARD.encode(format!("{u}:{p}"))
            );
            if auth.as_deref() != Some(want.as_str()) {
                return full(
                    StatusCode::UNAUTHORIZED,
                    r#"{"errors":[{"code":"UNAUTHORIZED"}]}"#,
                );
            }
        }
        return full(
            StatusCode::OK,
            format!(r#"{{"token":"{}","expires_in":300}}"#, bearer.token),
        );
    }
    if !path.starts_with("/v2/") && !path.starts_with("/foreign/") {
        return full(StatusCode::NOT_FOUND, "");
    }
    // Bearer auth on the API.
    let bearer = st.lock().unwrap().bearer.clone();
    if let (Some(b), true) = (bearer, path.starts_with("/v2/")) {
        if auth.as_deref() != Some(format!("Bearer {}", b.token).as_str()) {
            let mut r = full(
                StatusCode::UNAUTHORIZED,
                r#"{"errors":[{"code":"UNAUTHORIZED"}]}"#,
            );
            let challenge =
                format!(r#"Bearer realm="http://{addr}/token",service="fake-registry""#);
            r.headers_mut()
                .insert("www-authenticate", challenge.parse().unwrap());
            return r;
        }
    }
    if path == "/v2/" {
        return full(StatusCode::OK, "{}");
    }
    if let Some(digest) = path.strip_prefix("/foreign/") {
        return serve_blob(&st, digest, range, &method);
    }
    let rest = &path["/v2/".len()..];
    if let Some(i) = rest.rfind("/manifests/") {
        let (repo, reference) = (&rest[..i], &rest[i + "/manifests/".len()..]);
        if method == "PUT" {
            let ct = header(&req, "content-type").unwrap_or_default();
            let body = req
                .into_body()
                .collect()
                .await
                .map(|b| b.to_bytes())
                .unwrap_or_default();
            let digest = rbuild_layerfs::Digest::of_bytes(&body).to_string();
            let mut s = st.lock().unwrap();
            s.manifests
                .insert(format!("{repo}:{reference}"), (ct.clone(), body.clone()));
            s.manifests.insert(format!("{repo}:{digest}"), (ct, body));
            let mut r = full(StatusCode::CREATED, "");
            r.headers_mut()
                .insert("docker-content-digest", digest.parse().unwrap());
            return r;
        }
        let s = st.lock().unwrap();
        let Some((ct, body)) = s.manifests.get(&format!("{repo}:{reference}")).cloned() else {
            return full(
                StatusCode::NOT_FOUND,
                r#"{"errors":[{"code":"MANIFEST_UNKNOWN"}]}"#,
            );
        };
        let ct = s.faults.manifest_content_type.clone().unwrap_or(ct);
        let mut r = full(StatusCode::OK, body);
        r.headers_mut().insert("content-type", ct.parse().unwrap());
        return r;
    }
    if let Some(i) = rest.rfind("/blobs/uploads/") {
        let (repo, id) = (&rest[..i], &rest[i + "/blobs/uploads/".len()..]);
        return upload(req, &st, repo, id, &query, &method).await;
    }
    if let Some(i) = rest.rfind("/blobs/") {
        let digest = &rest[i + "/blobs/".len()..];
        let redirect = st.lock().unwrap().faults.redirect_blobs.clone();
        if let (Some(base), "GET") = (redirect, method.as_str()) {
            let mut r = full(StatusCode::TEMPORARY_REDIRECT, "");
            r.headers_mut()
                .insert("location", format!("{base}{path}").parse().unwrap());
            return r;
        }
        let gated = method == "GET" && st.lock().unwrap().faults.gated_blobs.contains(digest);
        if gated {
            let width = {
                let mut s = st.lock().unwrap();
                s.gated_in_flight += 1;
                s.gated_max_in_flight = s.gated_max_in_flight.max(s.gated_in_flight);
                s.faults.gate_width
            };
            let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(3);
            // Until `width` are in flight; once they were, the rest need not wait.
            while {
                let s = st.lock().unwrap();
                s.gated_in_flight < width && s.gated_max_in_flight < width
            } && tokio::time::Instant::now() < deadline
            {
                tokio::time::sleep(std::time::Duration::from_millis(10)).await;
            }
            // Held a little longer, so the others see this one in flight too.
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
            let r = serve_blob(&st, digest, range, &method);
            st.lock().unwrap().gated_in_flight -= 1;
            return r;
        }
        return serve_blob(&st, digest, range, &method);
    }
    full(StatusCode::NOT_FOUND, "")
}

fn serve_blob(
    st: &Arc<Mutex<State>>,
    digest: &str,
    range: Option<String>,
    method: &str,
) -> Response<Body> {
    let mut s = st.lock().unwrap();
    let Some(data) = s.blobs.get(digest).cloned() else {
        return full(
            StatusCode::NOT_FOUND,
            r#"{"errors":[{"code":"BLOB_UNKNOWN"}]}"#,
        );
    };
    if method == "HEAD" {
        let mut r = full(StatusCode::OK, "");
        r.headers_mut().insert("content-length", data.len().into());
        return r;
    }
    if let Some(code) = s.faults.blob_statuses.pop_front() {
        if s.faults.endless_error_body {
            let junk = Bytes::from(vec![b'x'; 64 * 1024]);
            let endless = futures_util::stream::repeat_with(move || {
                Ok::<_, std::io::Error>(Frame::data(junk.clone()))
            });
            let mut r = Response::new(BodyExt::boxed(StreamBody::new(endless)));
            *r.status_mut() = StatusCode::from_u16(code).unwrap();
            return r;
        }
        let mut r = full(StatusCode::from_u16(code).unwrap(), "try later");
        if let Some(value) = &s.faults.retry_after {
            r.headers_mut()
                .insert("retry-after", value.parse().expect("Retry-After value"));
        }
        return r;
    }
    let mut data = data.to_vec();
    if s.faults.corrupt {
        let last = data.len() - 1;
        data[last] ^= 0xff;
    }
    let start = match (&range, s.faults.ignore_range) {
        (Some(r), false) => r
            .trim_start_matches("bytes=")
            .split('-')
            .next()
            .and_then(|n| n.parse::<usize>().ok())
            .unwrap_or(0),
        _ => 0,
    };
    let total = data.len();
    let body = Bytes::from(data).slice(start.min(total)..);
    if s.faults.truncate {
        let short = body.slice(..body.len().saturating_sub(7));
        let stream = futures_util::stream::iter(vec![Ok::<_, std::io::Error>(Frame::data(short))]);
        return Response::new(BodyExt::boxed(StreamBody::new(stream)));
    }
    let drop_at = match &mut s.faults.drop_after {
        Some((n, times)) if *times > 0 && *n < body.len() => {
            *times -= 1;
            Some(*n)
        }
        _ => None,
    };
    let stall_at = match &mut s.faults.stall_after {
        Some((n, times)) if *times > 0 && *n < body.len() => {
            *times -= 1;
            Some(*n)
        }
        _ => None,
    };
    if let Some(n) = stall_at {
        use futures_util::StreamExt;
        let len = body.len();
        let data = futures_util::stream::iter(vec![Ok(Frame::data(body.slice(..n)))]);
        let silence = futures_util::stream::pending::<Result<Frame<Bytes>, std::io::Error>>();
        let mut r = Response::new(BodyExt::boxed(StreamBody::new(data.chain(silence))));
        r.headers_mut().insert("content-length", len.into());
        return r;
    }
    let status = if start > 0 {
        StatusCode::PARTIAL_CONTENT
    } else {
        StatusCode::OK
    };
    let len = body.len();
    let mut r = match drop_at {
        Some(n) if n < len => {
            use futures_util::StreamExt;
            // The data goes out first; the error (which makes hyper drop the connection) later.
            let data = futures_util::stream::iter(vec![Ok(Frame::data(body.slice(..n)))]);
            let fail = futures_util::stream::once(async {
                tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                Err(std::io::Error::new(
                    std::io::ErrorKind::ConnectionReset,
                    "fault: connection dropped",
                ))
            });
            Response::new(BodyExt::boxed(StreamBody::new(data.chain(fail))))
        }
        _ => full(status, body),
    };
    *r.status_mut() = status;
    r.headers_mut().insert("content-length", len.into());
    if start > 0 {
        r.headers_mut().insert(
            "content-range",
            format!("bytes {start}-{}/{total}", total - 1)
                .parse()
                .unwrap(),
        );
    }
    r
}

async fn upload(
    req: Request<Incoming>,
    st: &Arc<Mutex<State>>,
    repo: &str,
    id: &str,
    query: &str,
    method: &str,
) -> Response<Body> {
    let location = |id: &str| format!("/v2/{repo}/blobs/uploads/{id}");
    match method {
        "POST" => {
            let mut s = st.lock().unwrap();
            s.next_upload += 1;
            let id = format!("u{}", s.next_upload);
            s.uploads.insert(id.clone(), Vec::new());
            let loc = match (&s.faults.upload_location, &s.faults.uploads_elsewhere) {
                (Some(fixed), _) => fixed.clone(),
                (None, Some(base)) => format!("{base}{}", location(&id)),
                (None, None) => location(&id),
            };
            let mut r = full(StatusCode::ACCEPTED, "");
            r.headers_mut().insert("location", loc.parse().unwrap());
            r.headers_mut().insert("range", "0-0".parse().unwrap());
            r
        }
        "PATCH" => {
            let start = header(&req, "content-range")
                .and_then(|r| r.split('-').next().and_then(|n| n.parse::<usize>().ok()));
            let body = req
                .into_body()
                .collect()
                .await
                .map(|b| b.to_bytes())
                .unwrap_or_default();
            let mut s = st.lock().unwrap();
            if let (Some(start), Some(buf)) = (start, s.uploads.get(id)) {
                if start != buf.len() {
                    return full(StatusCode::RANGE_NOT_SATISFIABLE, "chunk out of order");
                }
            }
            if s.faults.stuck_patches {
                let have = s.uploads.get(id).map_or(0, Vec::len);
                let mut r = full(StatusCode::ACCEPTED, "");
                r.headers_mut()
                    .insert("location", location(id).parse().unwrap());
                r.headers_mut().insert(
                    "range",
                    format!("0-{}", have.saturating_sub(1)).parse().unwrap(),
                );
                return r;
            }
            let fail = s.faults.fail_patches > 0;
            let keep = s.faults.failed_patch_keeps;
            if fail {
                s.faults.fail_patches -= 1;
            }
            let Some(buf) = s.uploads.get_mut(id) else {
                return full(StatusCode::NOT_FOUND, "");
            };
            if fail {
                let kept = keep.unwrap_or(body.len() / 2).min(body.len());
                buf.extend_from_slice(&body[..kept]);
                return full(StatusCode::INTERNAL_SERVER_ERROR, "fault: chunk lost");
            }
            buf.extend_from_slice(&body);
            let end = buf.len();
            let mut r = full(StatusCode::ACCEPTED, "");
            r.headers_mut()
                .insert("location", location(id).parse().unwrap());
            r.headers_mut().insert(
                "range",
                format!("0-{}", end.saturating_sub(1)).parse().unwrap(),
            );
            r
        }
        "GET" => {
            let s = st.lock().unwrap();
            let Some(buf) = s.uploads.get(id) else {
                return full(StatusCode::NOT_FOUND, "");
            };
            let mut r = full(StatusCode::NO_CONTENT, "");
            r.headers_mut()
                .insert("location", location(id).parse().unwrap());
            r.headers_mut().insert(
                "range",
                format!("0-{}", buf.len().saturating_sub(1))
                    .parse()
                    .unwrap(),
            );
            r
        }
        "PUT" => {
            let body = req
                .into_body()
                .collect()
                .await
                .map(|b| b.to_bytes())
                .unwrap_or_default();
            let digest = query
                .split('&')
                .find_map(|kv| kv.strip_prefix("digest="))
                .map(|d| d.replace("%3A", ":"))
                .unwrap_or_default();
            let mut s = st.lock().unwrap();
            let Some(mut buf) = s.uploads.remove(id) else {
                return full(StatusCode::NOT_FOUND, "");
            };
            buf.extend_from_slice(&body);
            if rbuild_layerfs::Digest::of_bytes(&buf).to_string() != digest {
                return full(
                    StatusCode::BAD_REQUEST,
                    r#"{"errors":[{"code":"DIGEST_INVALID"}]}"#,
                );
            }
            s.blobs.insert(digest, Bytes::from(buf));
            if s.faults.lose_finish_answers > 0 {
                s.faults.lose_finish_answers -= 1;
                return full(StatusCode::INTERNAL_SERVER_ERROR, "fault: answer lost");
            }
            full(StatusCode::CREATED, "")
        }
        _ => full(StatusCode::METHOD_NOT_ALLOWED, ""),
    }
}
