//! Checking credentials against a registry before `rbuild login` saves them.

use crate::client::{status_error, ClientOptions, Session};
use crate::config::{endpoints, RegistryConfig};
use crate::credentials::Credential;
use crate::error::{RegistryError, Result};
use reqwest::Method;

/// Verifies that `credential` is accepted by `registry` (`GET /v2/` with it, after answering a
/// basic or token challenge).
pub async fn verify_login(
    registry: &str,
    credential: Credential,
    config: &RegistryConfig,
    tls_verify: bool,
    options: &ClientOptions,
) -> Result<()> {
    let ep = endpoints(config, registry, tls_verify, false)
        .pop()
        .ok_or_else(|| RegistryError::BadContent("no endpoint".into()))?;
    let session = Session::connect_without_scope(&ep, registry, Some(credential), options).await?;
    let resp = session
        .send(Method::GET, session.url("/v2/")?, |r| r)
        .await?;
    if resp.status().is_success() {
        Ok(())
    } else {
        Err(status_error(resp, "GET", "registry API", registry).await)
    }
}
