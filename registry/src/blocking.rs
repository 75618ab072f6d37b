//! Synchronous entry points for callers without a tokio runtime (the CLI, the builder's FROM).

use crate::client::ClientOptions;
use crate::config::RegistryConfig;
use crate::credentials::Credential;
use crate::error::{RegistryError, Result};
use crate::progress::Progress;
use crate::pull::{PullOptions, Pulled};
use crate::push::{PushOptions, Pushed};
use crate::reference::ImageRef;
use rbuild_layerfs::Store;
use std::future::Future;
use std::sync::Arc;

fn block_on<T>(fut: impl Future<Output = Result<T>>) -> Result<T> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(4)
        .enable_all()
        .build()
        .map_err(|e| RegistryError::io("start the async runtime", e))?;
    rt.block_on(fut)
}

/// [`crate::pull::pull`] on a private runtime. Must not be called from inside a tokio runtime.
pub fn pull_blocking(
    store: &Store,
    reference: &ImageRef,
    options: &PullOptions,
    progress: Arc<dyn Progress>,
) -> Result<Pulled> {
    block_on(crate::pull::pull(store, reference, options, progress))
}

/// [`crate::push::push`] on a private runtime. Must not be called from inside a tokio runtime.
pub fn push_blocking(
    store: &Store,
    source: &str,
    dest: &ImageRef,
    options: &PushOptions,
    progress: Arc<dyn Progress>,
) -> Result<Pushed> {
    block_on(crate::push::push(store, source, dest, options, progress))
}

/// [`crate::login::verify_login`] on a private runtime.
pub fn verify_login_blocking(
    registry: &str,
    credential: Credential,
    config: &RegistryConfig,
    tls_verify: bool,
    options: &ClientOptions,
) -> Result<()> {
    block_on(crate::login::verify_login(
        registry, credential, config, tls_verify, options,
    ))
}
