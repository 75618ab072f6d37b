//! An authenticated, retrying HTTP session with one registry endpoint and repository.
//!
//! Blob and manifest transfers use reqwest directly, not oci-client's `Client` (0.18). That one
//! does stream a blob (`pull_blob_stream`) and can ask for it from an offset
//! (`pull_blob_stream_partial`), but it retries nothing (no backoff on 429/5xx, no
//! `Retry-After`, no resumption after a dropped connection: a caller would rebuild all of it
//! around each call); it reads a manifest whole with no size cap; its `mount_blob` takes the 202
//! that opens an upload instead of a mount for an error; its chunked upload stops at the first
//! failed chunk (it never asks the registry for its offset); and its monolithic push takes the
//! whole blob as one in-memory `Bytes`.
//!
//! Credentials are attached only to requests for the registry's own origin (scheme, host, port).
//! reqwest drops `Authorization` on a redirect to another origin, and URLs outside the registry
//! (a descriptor's foreign `urls`, an upload `Location` on another host) get no credentials.

use crate::challenge::{parse_challenge, Challenge};
use crate::config::Endpoint;
use crate::credentials::Credential;
use crate::error::{RegistryError, Result};
use base64::Engine;
use reqwest::header::{HeaderValue, AUTHORIZATION, RETRY_AFTER, WWW_AUTHENTICATE};
use reqwest::{Method, RequestBuilder, Response, StatusCode, Url};
use std::sync::Mutex;
use std::time::Duration;

/// How often and how long to retry 429, 5xx and connection failures.
#[derive(Debug, Clone)]
pub struct RetryPolicy {
    /// Attempts in total (1 = no retry).
    pub attempts: u32,
    /// First backoff delay; doubled each retry.
    pub base_delay: Duration,
    /// Longest delay, also the cap on a server's `Retry-After`.
    pub max_delay: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            attempts: 5,
            base_delay: Duration::from_millis(250),
            max_delay: Duration::from_secs(30),
        }
    }
}

impl RetryPolicy {
    /// The delay before retry number `n` (0-based), honouring `Retry-After` seconds if given.
    pub fn delay(&self, n: u32, retry_after: Option<Duration>) -> Duration {
        let backoff = self.base_delay.saturating_mul(1u32 << n.min(16));
        retry_after.unwrap_or(backoff).min(self.max_delay)
    }
}

/// What a session is allowed to do in its repository.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// Read only.
    Pull,
    /// Read and write.
    Push,
}

/// Settings shared by every session of one command.
#[derive(Debug, Clone, Default)]
pub struct ClientOptions {
    /// Retry behaviour.
    pub retry: RetryPolicy,
    /// Per-request connect timeout (None: reqwest's default).
    pub connect_timeout: Option<Duration>,
    /// Longest wait for the next bytes of a response (None: [`DEFAULT_READ_TIMEOUT`]). A stalled
    /// connection fails after it and is retried or resumed like a dropped one.
    pub read_timeout: Option<Duration>,
}

/// How long a response may stay silent before the request fails.
pub const DEFAULT_READ_TIMEOUT: Duration = Duration::from_secs(60);

/// A session with one repository on one registry endpoint.
#[derive(Debug)]
pub struct Session {
    http: reqwest::Client,
    base: Url,
    registry: String,
    repository: String,
    scopes: Mutex<Vec<String>>,
    credential: Option<Credential>,
    authorization: Mutex<Option<HeaderValue>>,
    retry: RetryPolicy,
}

impl Session {
    /// Opens a session: builds the HTTP client, pings `/v2/` (falling back to plain HTTP for
    /// insecure endpoints) and authenticates if the registry asks to.
    pub async fn connect(
        endpoint: &Endpoint,
        registry: &str,
        repository: &str,
        access: Access,
        credential: Option<Credential>,
        options: &ClientOptions,
    ) -> Result<Self> {
        let scope = match access {
            Access::Pull => vec![format!("repository:{repository}:pull")],
            Access::Push => vec![format!("repository:{repository}:pull,push")],
        };
        Self::open(endpoint, registry, repository, scope, credential, options).await
    }

    /// Opens a session for registry-wide requests (login checks): no repository scope.
    pub async fn connect_without_scope(
        endpoint: &Endpoint,
        registry: &str,
        credential: Option<Credential>,
        options: &ClientOptions,
    ) -> Result<Self> {
        Self::open(endpoint, registry, "", Vec::new(), credential, options).await
    }

    async fn open(
        endpoint: &Endpoint,
        registry: &str,
        repository: &str,
        scopes: Vec<String>,
        credential: Option<Credential>,
        options: &ClientOptions,
    ) -> Result<Self> {
        let http = http_client(endpoint, endpoint.skip_tls_verify, options)?;
        let parse = |s: &str| {
            Url::parse(s).map_err(|e| RegistryError::Config {
                path: "registry endpoint".into(),
                reason: format!("bad URL {s}: {e}"),
            })
        };
        let mut session = Session {
            http,
            base: parse(&endpoint.base_url)?,
            registry: registry.to_string(),
            repository: repository.to_string(),
            scopes: Mutex::new(scopes),
            credential,
            authorization: Mutex::new(None),
            retry: options.retry.clone(),
        };
        let mut answer = session.ping_answer().await;
        if endpoint.https_fallback && session.base.scheme() == "http" {
            // What answers on a loopback port may speak only TLS: it refuses the plain request
            // with a 400 (Go's and nginx's servers) or by closing the connection.
            let tls_only = match &answer {
                Ok((status, _)) => *status == StatusCode::BAD_REQUEST,
                Err(RegistryError::Http { source, .. }) => !source.is_connect(),
                Err(_) => false,
            };
            if tls_only {
                session.http = http_client(endpoint, true, options)?;
                session.base = parse(&endpoint.base_url.replacen("http://", "https://", 1))?;
                answer = session.ping_answer().await;
            }
        }
        let ping = match answer.map(|(_, challenge)| challenge) {
            Err(RegistryError::Http { .. }) if endpoint.http_fallback => {
                let plain = endpoint.base_url.replacen("https://", "http://", 1);
                session.base = parse(&plain)?;
                session.ping().await?
            }
            Err(RegistryError::Http { url, source })
                if source.is_connect()
                    && session.base.scheme() == "https"
                    && !endpoint.skip_tls_verify =>
            {
                return Err(RegistryError::Https {
                    registry: registry.to_string(),
                    url,
                    cause: error_chain(&source),
                });
            }
            other => other?,
        };
        if let Some(challenge) = ping {
            session.authenticate(&challenge).await?;
        }
        Ok(session)
    }

    /// Registry name (for messages and credentials).
    pub fn registry(&self) -> &str {
        &self.registry
    }

    /// Repository of this session.
    pub fn repository(&self) -> &str {
        &self.repository
    }

    /// Adds pull access to another repository of the same registry (for cross-repo mounts).
    pub async fn add_pull_scope(&self, repository: &str) -> Result<()> {
        let scope = format!("repository:{repository}:pull");
        {
            let mut scopes = self.scopes.lock().unwrap_or_else(|p| p.into_inner());
            if scopes.contains(&scope) {
                return Ok(());
            }
            scopes.push(scope);
        }
        if let Some(challenge) = self.ping().await? {
            self.authenticate(&challenge).await?;
        }
        Ok(())
    }

    /// `GET /v2/`: Ok(None) when open, Ok(Some(challenge)) when authentication is required.
    async fn ping(&self) -> Result<Option<Challenge>> {
        self.ping_answer().await.map(|(_, challenge)| challenge)
    }

    /// `GET /v2/`: the status, and the challenge of a 401.
    async fn ping_answer(&self) -> Result<(StatusCode, Option<Challenge>)> {
        let url = self.url("/v2/")?;
        let resp = self.send_raw(Method::GET, url, |r| r, false).await?;
        match resp.status() {
            StatusCode::UNAUTHORIZED => Ok((resp.status(), challenge_of(&resp))),
            // Some registries answer 404 on /v2/ for a path prefix; go on unauthenticated.
            s => Ok((s, None)),
        }
    }

    /// The absolute URL of `path` (which starts with `/v2/`) on this endpoint.
    pub fn url(&self, path: &str) -> Result<Url> {
        self.base
            .join(path)
            .map_err(|e| RegistryError::BadContent(format!("bad URL path {path}: {e}")))
    }

    /// `/v2/<repository>/<rest>`.
    pub fn repo_url(&self, rest: &str) -> Result<Url> {
        self.url(&format!("/v2/{}/{}", self.repository, rest))
    }

    /// Resolves a `Location` header (absolute or relative) against this endpoint.
    pub fn resolve_location(&self, location: &str) -> Result<Url> {
        self.base
            .join(location)
            .map_err(|e| RegistryError::BadContent(format!("bad Location {location:?}: {e}")))
    }

    /// Whether `url` is on the registry's own origin (and may carry credentials).
    pub fn same_origin(&self, url: &Url) -> bool {
        url.scheme() == self.base.scheme()
            && url.host_str() == self.base.host_str()
            && url.port_or_known_default() == self.base.port_or_known_default()
    }

    async fn authenticate(&self, challenge: &Challenge) -> Result<()> {
        let value = match challenge {
            Challenge::Basic => match &self.credential {
                Some(Credential::Basic { username, password }) => basic_header(username, password),
                _ => {
                    return Err(RegistryError::Unauthorized {
                        registry: self.registry.clone(),
                        reason: "the registry wants a user name and password".into(),
                    })
                }
            },
            Challenge::Bearer {
                realm,
                service,
                scope,
            } => {
                let token = self
                    .fetch_token(realm, service.as_deref(), scope.as_deref())
                    .await?;
                HeaderValue::from_str(&format!("Bearer {token}")).map_err(|_| {
                    RegistryError::Unauthorized {
                        registry: self.registry.clone(),
                        reason: "token server sent a token that is not a valid header".into(),
                    }
                })?
            }
        };
        *self.authorization.lock().unwrap_or_else(|p| p.into_inner()) = Some(value);
        Ok(())
    }

    async fn fetch_token(
        &self,
        realm: &str,
        service: Option<&str>,
        extra: Option<&str>,
    ) -> Result<String> {
        let mut scopes = self
            .scopes
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        if let Some(s) = extra {
            if !scopes.iter().any(|x| x == s) {
                scopes.push(s.to_string());
            }
        }
        let url = Url::parse(realm).map_err(|e| RegistryError::Unauthorized {
            registry: self.registry.clone(),
            reason: format!("bad token realm {realm:?}: {e}"),
        })?;
        let mut query: Vec<(&str, &str)> = scopes.iter().map(|s| ("scope", s.as_str())).collect();
        if let Some(s) = service {
            query.push(("service", s));
        }
        let resp = match &self.credential {
            Some(Credential::IdentityToken(refresh)) => {
                let mut form = query.clone();
                form.extend([
                    ("grant_type", "refresh_token"),
                    ("refresh_token", refresh.as_str()),
                    ("client_id", "rbuild"),
                ]);
                self.send_raw(Method::POST, url.clone(), |r| r.form(&form), false)
                    .await?
            }
            cred => {
                let basic = match cred {
                    Some(Credential::Basic { username, password }) => {
                        Some(basic_header(username, password))
                    }
                    _ => None,
                };
                self.send_raw(
                    Method::GET,
                    url.clone(),
                    |r| {
                        let r = r.query(&query);
                        match &basic {
                            Some(b) => r.header(AUTHORIZATION, b.clone()),
                            None => r,
                        }
                    },
                    false,
                )
                .await?
            }
        };
        if !resp.status().is_success() {
            let status = resp.status();
            let body = error_body(resp).await;
            return Err(RegistryError::Unauthorized {
                registry: self.registry.clone(),
                reason: format!("token server {realm} answered {status}: {}", clip(&body)),
            });
        }
        #[derive(serde::Deserialize)]
        struct TokenResponse {
            token: Option<String>,
            access_token: Option<String>,
        }
        let body = read_limited(resp, 1 << 20, "token response").await?;
        let parsed: TokenResponse =
            serde_json::from_slice(&body).map_err(|e| RegistryError::Unauthorized {
                registry: self.registry.clone(),
                reason: format!("token server sent no JSON token: {e}"),
            })?;
        parsed
            .token
            .or(parsed.access_token)
            .filter(|t| !t.is_empty())
            .ok_or_else(|| RegistryError::Unauthorized {
                registry: self.registry.clone(),
                reason: "token server sent an empty token".into(),
            })
    }

    /// Sends a request to the registry with credentials, answering one authentication
    /// challenge and retrying 429/5xx and connection failures. `build` is called for every attempt.
    pub async fn send(
        &self,
        method: Method,
        url: Url,
        build: impl Fn(RequestBuilder) -> RequestBuilder,
    ) -> Result<Response> {
        self.send_authenticated(method, url, build, true).await
    }

    /// Like [`Session::send`] but without retrying 5xx, 429 or connection failures: for
    /// requests that are not idempotent (upload chunks), whose caller recovers by asking the
    /// registry what it has.
    pub async fn send_once(
        &self,
        method: Method,
        url: Url,
        build: impl Fn(RequestBuilder) -> RequestBuilder,
    ) -> Result<Response> {
        self.send_authenticated(method, url, build, false).await
    }

    async fn send_authenticated(
        &self,
        method: Method,
        url: Url,
        build: impl Fn(RequestBuilder) -> RequestBuilder,
        retry: bool,
    ) -> Result<Response> {
        let mut reauthenticated = false;
        loop {
            let resp = self
                .send_raw_with(method.clone(), url.clone(), &build, true, retry)
                .await?;
            // Only the registry's own challenges are answered: a 401 from the host a redirect
            // led to could name any token realm, which would then get the credentials.
            if resp.status() == StatusCode::UNAUTHORIZED
                && !reauthenticated
                && self.same_origin(resp.url())
            {
                if let Some(challenge) = challenge_of(&resp) {
                    reauthenticated = true;
                    self.authenticate(&challenge).await?;
                    continue;
                }
            }
            if resp.status() == StatusCode::UNAUTHORIZED || resp.status() == StatusCode::FORBIDDEN {
                let status = resp.status();
                let resp_url = resp.url().clone();
                let body = error_body(resp).await;
                let answered = if resp_url == url {
                    String::new()
                } else {
                    format!(" (redirected to {resp_url})")
                };
                return Err(RegistryError::Unauthorized {
                    registry: self.registry.clone(),
                    reason: format!(
                        "{method} {url}{answered} answered {status}: {}",
                        clip(&body)
                    ),
                });
            }
            return Ok(resp);
        }
    }

    /// One request with retries but no challenge handling; credentials only when `with_auth`
    /// and the URL is on the registry's origin.
    async fn send_raw(
        &self,
        method: Method,
        url: Url,
        build: impl Fn(RequestBuilder) -> RequestBuilder,
        with_auth: bool,
    ) -> Result<Response> {
        self.send_raw_with(method, url, build, with_auth, true)
            .await
    }

    async fn send_raw_with(
        &self,
        method: Method,
        url: Url,
        build: impl Fn(RequestBuilder) -> RequestBuilder,
        with_auth: bool,
        retry: bool,
    ) -> Result<Response> {
        let mut attempt = 0;
        loop {
            let mut req = build(self.http.request(method.clone(), url.clone()));
            if with_auth && self.same_origin(&url) {
                if let Some(h) = self
                    .authorization
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .clone()
                {
                    req = req.header(AUTHORIZATION, h);
                }
            }
            let last = !retry || attempt + 1 >= self.retry.attempts;
            match req.send().await {
                Ok(resp) if is_retryable_status(resp.status()) && !last => {
                    let delay = self.retry.delay(attempt, retry_after(&resp));
                    tracing::debug!(%url, status = %resp.status(), ?delay, "retrying");
                    drop(resp);
                    tokio::time::sleep(delay).await;
                }
                Ok(resp) => return Ok(resp),
                Err(e)
                    if !last
                        && (e.is_connect() || e.is_timeout() || e.is_request())
                        && !is_tls_failure(&e) =>
                {
                    let delay = self.retry.delay(attempt, None);
                    tracing::debug!(%url, error = %e, ?delay, "retrying");
                    tokio::time::sleep(delay).await;
                }
                Err(e) => {
                    return Err(RegistryError::Http {
                        url: url.to_string(),
                        source: e,
                    })
                }
            }
            attempt += 1;
        }
    }

    /// Sends a request to a URL outside the registry (a foreign layer URL): never with
    /// credentials, with retries.
    pub async fn send_foreign(
        &self,
        url: Url,
        build: impl Fn(RequestBuilder) -> RequestBuilder,
    ) -> Result<Response> {
        self.send_raw(Method::GET, url, build, false).await
    }

    /// The retry policy of this session.
    pub fn retry_policy(&self) -> &RetryPolicy {
        &self.retry
    }
}

/// The HTTP client for `endpoint`, verifying certificates unless `skip_tls_verify`.
fn http_client(
    endpoint: &Endpoint,
    skip_tls_verify: bool,
    options: &ClientOptions,
) -> Result<reqwest::Client> {
    let mut builder = reqwest::Client::builder()
        .user_agent(concat!("rbuild/", env!("CARGO_PKG_VERSION")))
        .danger_accept_invalid_certs(skip_tls_verify);
    if let Some(t) = options.connect_timeout {
        builder = builder.connect_timeout(t);
    }
    builder = builder.read_timeout(options.read_timeout.unwrap_or(DEFAULT_READ_TIMEOUT));
    builder.build().map_err(|e| RegistryError::Http {
        url: endpoint.base_url.clone(),
        source: e,
    })
}

/// Turns an unexpected response into an error (NotFound for 404).
pub async fn status_error(
    resp: Response,
    method: &str,
    what: &str,
    repository: &str,
) -> RegistryError {
    let status = resp.status();
    let url = resp.url().to_string();
    if status == StatusCode::NOT_FOUND {
        return RegistryError::NotFound {
            what: what.to_string(),
            repository: repository.to_string(),
        };
    }
    let body = error_body(resp).await;
    RegistryError::Status {
        method: method.to_string(),
        url,
        status: status.as_u16(),
        body: clip(&body),
    }
}

/// Most bytes of an error response body read for a message: a server that answers an error with
/// an endless body cannot make the client read (or hold) it all.
const ERROR_BODY_LIMIT: usize = 64 * 1024;

/// The start of an error response's body, as text (empty when it cannot be read): at most
/// [`ERROR_BODY_LIMIT`] bytes are read, the rest is dropped with the connection.
pub async fn error_body(mut resp: Response) -> String {
    let mut out = Vec::new();
    while out.len() < ERROR_BODY_LIMIT {
        match resp.chunk().await {
            Ok(Some(chunk)) => {
                let room = ERROR_BODY_LIMIT - out.len();
                out.extend_from_slice(&chunk[..chunk.len().min(room)]);
            }
            _ => break,
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Reads a whole response body, refusing more than `limit` bytes.
pub async fn read_limited(mut resp: Response, limit: u64, what: &str) -> Result<Vec<u8>> {
    if resp.content_length().is_some_and(|n| n > limit) {
        return Err(RegistryError::BadContent(format!(
            "{what} is {} bytes, more than the {limit} allowed",
            resp.content_length().unwrap_or_default()
        )));
    }
    let url = resp.url().to_string();
    let mut out = Vec::new();
    while let Some(chunk) = resp.chunk().await.map_err(|e| RegistryError::Http {
        url: url.clone(),
        source: e,
    })? {
        if out.len() as u64 + chunk.len() as u64 > limit {
            return Err(RegistryError::BadContent(format!(
                "{what} is more than the {limit} bytes allowed"
            )));
        }
        out.extend_from_slice(&chunk);
    }
    Ok(out)
}

/// An error and its causes on one line, each message once (reqwest repeats the URL).
fn error_chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut parts: Vec<String> = Vec::new();
    let mut source = Some(e);
    while let Some(err) = source {
        let text = err.to_string();
        if !parts.contains(&text) {
            parts.push(text);
        }
        source = err.source();
    }
    parts.join(": ")
}

/// Whether a transport error is a TLS failure (a server that speaks no TLS, a certificate this
/// machine does not trust): asking again gets the same answer, so it is not retried, and an
/// insecure endpoint falls back to plain HTTP at once.
fn is_tls_failure(e: &reqwest::Error) -> bool {
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(err) = source {
        // rustls's error arrives wrapped in I/O errors, whose `source()` skips the wrapped error.
        let mut inner = err;
        loop {
            if inner.is::<rustls::Error>() {
                return true;
            }
            match inner
                .downcast_ref::<std::io::Error>()
                .and_then(|io| io.get_ref())
            {
                Some(wrapped) => inner = wrapped,
                None => break,
            }
        }
        source = err.source();
    }
    false
}

fn is_retryable_status(s: StatusCode) -> bool {
    s == StatusCode::TOO_MANY_REQUESTS || matches!(s.as_u16(), 500 | 502 | 503 | 504)
}

fn retry_after(resp: &Response) -> Option<Duration> {
    parse_retry_after(
        resp.headers().get(RETRY_AFTER)?.to_str().ok()?,
        std::time::SystemTime::now(),
    )
}

/// A `Retry-After` value: delay seconds, or an HTTP date (a date already past means at once).
fn parse_retry_after(value: &str, now: std::time::SystemTime) -> Option<Duration> {
    let value = value.trim();
    if let Ok(secs) = value.parse::<u64>() {
        return Some(Duration::from_secs(secs));
    }
    let at = httpdate::parse_http_date(value).ok()?;
    Some(at.duration_since(now).unwrap_or(Duration::ZERO))
}

fn challenge_of(resp: &Response) -> Option<Challenge> {
    resp.headers()
        .get_all(WWW_AUTHENTICATE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .filter_map(parse_challenge)
        .max_by_key(|c| matches!(c, Challenge::Bearer { .. }))
}

fn basic_header(username: &str, password: &str) -> HeaderValue {
    let enc = base64::engine::general_purpose::STANDARD.encode(format!("{username}:{password}"));
    let mut v = HeaderValue::from_str(&format!("Basic {enc}"))
        .unwrap_or_else(|_| HeaderValue::from_static("Basic"));
    v.set_sensitive(true);
    v
}

/// The first 300 characters of a server message, on one line.
pub fn clip(s: &str) -> String {
    let one_line: String = s.split_whitespace().collect::<Vec<_>>().join(" ");
    one_line.chars().take(300).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_after_is_seconds_or_an_http_date() {
        let now = std::time::UNIX_EPOCH + Duration::from_secs(1_420_070_400); // 2015-01-01
        assert_eq!(parse_retry_after(" 7 ", now), Some(Duration::from_secs(7)));
        assert_eq!(
            parse_retry_after("Thu, 01 Jan 2015 00:01:30 GMT", now),
            Some(Duration::from_secs(90))
        );
        assert_eq!(
            parse_retry_after("Wed, 31 Dec 2014 23:00:00 GMT", now),
            Some(Duration::ZERO),
            "a date already past: at once"
        );
        assert_eq!(parse_retry_after("soon", now), None);
        assert_eq!(parse_retry_after("-1", now), None);
    }

    #[test]
    fn backoff_doubles_and_retry_after_is_capped() {
        let p = RetryPolicy {
            attempts: 5,
            base_delay: Duration::from_millis(100),
            max_delay: Duration::from_secs(2),
        };
        assert_eq!(p.delay(0, None), Duration::from_millis(100));
        assert_eq!(p.delay(2, None), Duration::from_millis(400));
        assert_eq!(p.delay(10, None), Duration::from_secs(2));
        assert_eq!(
            p.delay(0, Some(Duration::from_secs(1))),
            Duration::from_secs(1)
        );
        assert_eq!(
            p.delay(0, Some(Duration::from_secs(3600))),
            Duration::from_secs(2)
        );
    }
}
