//! rbuild-registry: OCI distribution client (references, auth, pull, push).
//!
//! References follow Docker's grammar and normalisation, parsed by hand (see [`reference`](mod@reference)):
//! oci-client's `Reference` (used until commit 547fb33) compiles a regex in every process
//! (no-op pull 59 -> 11 ms without it) and does not know bracketed IPv6 hosts; oci-client stays
//! a dev-dependency as the grammar oracle (tests/reference_oracle.rs). Transfers use reqwest
//! directly (see [`client`] for why). Credentials are read with docker_credential (`auths`,
//! `credsStore`, `credHelpers`); `login`/`logout` write config.json or run the helper themselves,
//! as docker_credential only reads.
#![warn(missing_docs)]

pub mod artifact;
pub mod blocking;
pub mod challenge;
pub mod client;
pub mod config;
pub mod credentials;
pub mod data_sync;
pub mod decode;
pub mod error;
pub mod fetch;
pub mod login;
pub mod media;
pub mod platform;
pub mod progress;
pub mod pull;
pub mod push;
pub mod reference;
pub mod unpack;

pub use blocking::{pull_blocking, push_blocking, verify_login_blocking};
pub use client::{Access, ClientOptions, RetryPolicy, Session};
pub use config::RegistryConfig;
pub use credentials::{Credential, CredentialStore};
pub use error::{RegistryError, Result};
pub use platform::Platform;
pub use progress::{NoProgress, Progress};
pub use pull::{pull, PullOptions, Pulled};
pub use push::{push, ManifestFormat, PushOptions, Pushed};
pub use reference::ImageRef;
