//! rbuild-registry: OCI distribution client (references, auth, pull, push).
#![warn(missing_docs)]

pub mod challenge;
pub mod client;
pub mod config;
pub mod credentials;
pub mod error;
pub mod reference;

pub use client::{Access, ClientOptions, RetryPolicy, Session};
pub use config::RegistryConfig;
pub use credentials::{Credential, CredentialStore};
pub use error::{RegistryError, Result};
pub use reference::ImageRef;
