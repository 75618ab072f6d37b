//! rbuild-layerfs: content store, image model, layer diff/apply and union mounts.
#![warn(missing_docs)]

pub mod archive;
pub mod digest;
pub mod image;
pub mod import;
pub mod layer;
pub mod mount;
pub mod rootless;
pub mod store;

pub use digest::{Digest, DigestError};
pub use image::Image;
pub use store::{Store, StoreError};
