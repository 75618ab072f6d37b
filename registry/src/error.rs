//! The error type of the registry crate.

use std::path::PathBuf;

/// Everything that can go wrong while talking to a registry or moving content.
#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    /// An image reference could not be parsed.
    #[error("invalid image reference {reference:?}: {reason}; use [HOST[:PORT]/]NAME[:TAG][@sha256:HEX]")]
    InvalidReference {
        /// What the user wrote.
        reference: String,
        /// Why it was refused.
        reason: String,
    },
    /// A platform string could not be parsed.
    #[error("invalid platform {0:?}: use OS/ARCH[/VARIANT], e.g. linux/amd64 or linux/arm64/v8")]
    InvalidPlatform(String),
    /// A configuration file could not be read or written.
    #[error("config file {path}: {reason}")]
    Config {
        /// The file.
        path: PathBuf,
        /// What went wrong.
        reason: String,
    },
    /// The registry needs credentials that were not given or not accepted.
    #[error("authentication to {registry} failed: {reason}; run `rbuild login {registry}`")]
    Unauthorized {
        /// Registry host.
        registry: String,
        /// Server's answer or local reason.
        reason: String,
    },
    /// The connection itself failed (after retries).
    #[error("request to {url} failed: {source}")]
    Http {
        /// The URL requested.
        url: String,
        /// The transport error.
        #[source]
        source: reqwest::Error,
    },
    /// A verified HTTPS connection to a registry not marked insecure could not be made.
    #[error("cannot reach {registry} over verified HTTPS ({url}): {cause}; if it serves plain HTTP or a certificate this machine does not trust, pass --tls-verify=false or list it in \"insecure-registries\" of rbuild's config file ($RBUILD_CONFIG, ~/.config/rbuild/config.json or /etc/rbuild/config.json)")]
    Https {
        /// Registry host.
        registry: String,
        /// The URL requested.
        url: String,
        /// The transport error with its causes, on one line.
        cause: String,
    },
    /// The registry answered with a status we cannot use (after retries).
    #[error("{method} {url}: registry answered {status}: {body}")]
    Status {
        /// HTTP method.
        method: String,
        /// The URL requested.
        url: String,
        /// Status code.
        status: u16,
        /// First part of the body.
        body: String,
    },
    /// The named manifest or blob does not exist.
    #[error("{what} not found in {repository}: check the name and tag")]
    NotFound {
        /// Manifest or blob.
        what: String,
        /// Repository.
        repository: String,
    },
    /// Content did not match its descriptor (digest, size, media type, truncation).
    #[error("content from registry rejected: {0}")]
    BadContent(String),
    /// No manifest in an index matches the wanted platform.
    #[error(
        "no image for platform {wanted} in {reference} (available: {available}); pass --platform"
    )]
    NoMatchingPlatform {
        /// Wanted platform.
        wanted: String,
        /// Reference.
        reference: String,
        /// Platforms in the index.
        available: String,
    },
    /// The local store failed.
    #[error("store: {0}")]
    Store(#[from] rbuild_layerfs::StoreError),
    /// Local I/O failed.
    #[error("{context}: {source}")]
    Io {
        /// What was being done.
        context: String,
        /// The error.
        #[source]
        source: std::io::Error,
    },
    /// A credential helper or the docker config failed.
    #[error("credentials for {registry}: {reason}")]
    Credentials {
        /// Registry.
        registry: String,
        /// Reason.
        reason: String,
    },
}

/// Result alias of this crate.
pub type Result<T, E = RegistryError> = std::result::Result<T, E>;

impl RegistryError {
    /// Wraps an I/O error with a description of what was being done.
    pub fn io(context: impl Into<String>, source: std::io::Error) -> Self {
        RegistryError::Io {
            context: context.into(),
            source,
        }
    }
}
