//! rbuild's own registry settings: insecure registries and Docker Hub mirrors.
//!
//! The file is JSON with the key names of Docker's `daemon.json`:
//!
//! ```json
//! { "insecure-registries": ["myreg.lan:5000"], "registry-mirrors": ["https://mirror.example"] }
//! ```
//!
//! It is read from the first of: `$RBUILD_CONFIG`, `$XDG_CONFIG_HOME/rbuild/config.json`
//! (`~/.config/rbuild/config.json` when XDG_CONFIG_HOME is unset), `/etc/rbuild/config.json`.
//! A missing file means no insecure registries and no mirrors.

use crate::error::{RegistryError, Result};
use crate::reference::{is_loopback_host, DOCKER_HUB, DOCKER_HUB_ENDPOINT};
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

/// Registry settings from rbuild's config file.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub struct RegistryConfig {
    /// Registries (`host[:port]`) reached without TLS verification, falling back to plain HTTP.
    #[serde(default)]
    pub insecure_registries: Vec<String>,
    /// Mirrors of Docker Hub (`https://host[:port]` or `host[:port]`), tried in order before it.
    #[serde(default)]
    pub registry_mirrors: Vec<String>,
}

impl RegistryConfig {
    /// The config file that applies, in the order documented on this module.
    pub fn default_path() -> Option<PathBuf> {
        if let Some(p) = std::env::var_os("RBUILD_CONFIG").filter(|v| !v.is_empty()) {
            return Some(PathBuf::from(p));
        }
        let user = std::env::var_os("XDG_CONFIG_HOME")
            .filter(|v| !v.is_empty())
            .map(PathBuf::from)
            .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".config")))
            .map(|d| d.join("rbuild/config.json"));
        if let Some(p) = user.filter(|p| p.exists()) {
            return Some(p);
        }
        let system = PathBuf::from("/etc/rbuild/config.json");
        system.exists().then_some(system)
    }

    /// Loads the default config file (empty settings when there is none).
    pub fn load_default() -> Result<Self> {
        match Self::default_path() {
            Some(p) if p.exists() => Self::load(&p),
            _ => Ok(Self::default()),
        }
    }

    /// Loads one config file.
    pub fn load(path: &Path) -> Result<Self> {
        let data = std::fs::read(path).map_err(|e| RegistryError::Config {
            path: path.to_path_buf(),
            reason: e.to_string(),
        })?;
        serde_json::from_slice(&data).map_err(|e| RegistryError::Config {
            path: path.to_path_buf(),
            reason: format!(
                "{e}; expected {{\"insecure-registries\": [..], \"registry-mirrors\": [..]}}"
            ),
        })
    }

    /// Whether `registry` (a `host[:port]` name) is listed as insecure.
    pub fn is_insecure(&self, registry: &str) -> bool {
        self.insecure_registries
            .iter()
            .any(|r| r.trim_end_matches('/') == registry)
    }
}

/// How to reach one registry endpoint.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoint {
    /// `http://host:port` or `https://host:port`, no trailing slash.
    pub base_url: String,
    /// Skip TLS certificate verification.
    pub skip_tls_verify: bool,
    /// When the HTTPS attempt fails at the connection level, try plain HTTP.
    pub http_fallback: bool,
    /// When the plain HTTP attempt meets a server that speaks only TLS, use HTTPS without
    /// verification (loopback registries, which docker treats as insecure).
    pub https_fallback: bool,
}

/// The endpoints to try for `registry`, in order: Docker Hub mirrors first (for pulls), then the
/// registry itself. Loopback registries use plain HTTP; insecure ones (listed, or `tls_verify`
/// false) use HTTPS without verification with a plain HTTP fallback; all others verified HTTPS.
pub fn endpoints(
    config: &RegistryConfig,
    registry: &str,
    tls_verify: bool,
    with_mirrors: bool,
) -> Vec<Endpoint> {
    let mut out = Vec::new();
    if registry == DOCKER_HUB && with_mirrors {
        for m in &config.registry_mirrors {
            let m = m.trim_end_matches('/');
            let host = m
                .trim_start_matches("https://")
                .trim_start_matches("http://");
            if m.starts_with("http://") {
                out.push(Endpoint {
                    base_url: m.to_string(),
                    skip_tls_verify: false,
                    http_fallback: false,
                    https_fallback: false,
                });
            } else {
                out.push(endpoint_for_host(config, host, tls_verify));
            }
        }
    }
    let host = if registry == DOCKER_HUB {
        DOCKER_HUB_ENDPOINT
    } else {
        registry
    };
    out.push(endpoint_for_host(config, host, tls_verify));
    out
}

fn endpoint_for_host(config: &RegistryConfig, host: &str, tls_verify: bool) -> Endpoint {
    if is_loopback_host(host) {
        Endpoint {
            base_url: format!("http://{host}"),
            skip_tls_verify: false,
            http_fallback: false,
            https_fallback: true,
        }
    } else if !tls_verify || config.is_insecure(host) {
        Endpoint {
            base_url: format!("https://{host}"),
            skip_tls_verify: true,
            http_fallback: true,
            https_fallback: false,
        }
    } else {
        Endpoint {
            base_url: format!("https://{host}"),
            skip_tls_verify: false,
            http_fallback: false,
            https_fallback: false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback_is_plain_http_and_others_https() {
        let c = RegistryConfig::default();
        assert_eq!(
            endpoints(&c, "127.0.0.1:5000", true, true)[0].base_url,
            "http://127.0.0.1:5000"
        );
        assert_eq!(
            endpoints(&c, "localhost:5000", true, true)[0].base_url,
            "http://localhost:5000"
        );
        let lo = &endpoints(&c, "127.3.2.1:5000", true, true)[0];
        assert_eq!(lo.base_url, "http://127.3.2.1:5000");
        assert!(lo.https_fallback && !lo.http_fallback);
        let e = &endpoints(&c, "ghcr.io", true, true)[0];
        assert_eq!(e.base_url, "https://ghcr.io");
        assert!(!e.skip_tls_verify && !e.http_fallback);
        assert!(endpoints(&c, "ghcr.io", false, true)[0].http_fallback);
    }

    #[test]
    fn insecure_list_and_docker_hub_mirrors() {
        let c: RegistryConfig = serde_json::from_str(
            r#"{"insecure-registries":["reg.lan:5000"],"registry-mirrors":["https://m1.example/","http://m2.lan:80"]}"#,
        )
        .unwrap();
        let e = &endpoints(&c, "reg.lan:5000", true, true)[0];
        assert!(e.skip_tls_verify && e.http_fallback);
        let hub = endpoints(&c, "docker.io", true, true);
        let urls: Vec<_> = hub.iter().map(|e| e.base_url.as_str()).collect();
        assert_eq!(
            urls,
            [
                "https://m1.example",
                "http://m2.lan:80",
                "https://registry-1.docker.io"
            ]
        );
        assert_eq!(endpoints(&c, "docker.io", true, false).len(), 1);
    }
}
