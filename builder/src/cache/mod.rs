//! The build cache: content-true step keys and the on-disk index `<store>/cache/keys/`.
//!
//! A step's key hashes its parent's key, the instruction after ARG/ENV expansion, the build args
//! it can see, and for ADD/COPY the path, mode and content hash of every selected file (not mtime,
//! not owner). The index maps a key to the layer the step produced (if any) and the image state
//! after the step, so a hit needs no file copy and no mount.

pub mod prune;
pub mod remote;
pub mod shared;

use rbuild_layerfs::Digest;
use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};
use std::fs;
use std::io::{self, Write};
use std::path::{Path, PathBuf};

/// Errors of the build cache index.
#[derive(Debug, thiserror::Error)]
pub enum CacheError {
    /// The index could not be written.
    #[error("build cache {path}: {source} (check free space and permissions of the store)")]
    Io {
        /// File involved.
        path: PathBuf,
        /// Cause.
        source: io::Error,
    },
    /// A record could not be encoded.
    #[error("build cache record {key}: {source}")]
    Encode {
        /// Key of the record.
        key: String,
        /// Cause.
        source: serde_json::Error,
    },
    /// The image store could not be read.
    #[error(transparent)]
    Store(#[from] rbuild_layerfs::StoreError),
    /// The shared (registry) cache could not deliver or take content.
    #[error("shared build cache {reference}: {message}")]
    Shared {
        /// The cache reference involved.
        reference: String,
        /// What went wrong and what to do.
        message: String,
    },
}

/// Key of one build step.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct CacheKey(pub Digest);

impl std::fmt::Display for CacheKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.fmt(f)
    }
}

/// Builds a [`CacheKey`] from its parts, each length-prefixed so parts cannot run together.
#[derive(Debug, Clone)]
pub struct KeyBuilder {
    hasher: Sha256,
}

impl KeyBuilder {
    /// Starts the key of a step below `parent`.
    pub fn new(parent: &CacheKey) -> KeyBuilder {
        let mut k = KeyBuilder {
            hasher: Sha256::new(),
        };
        k.part("rbuild-step-v1");
        k.part(parent.0.as_str());
        k
    }

    /// The root key of a stage whose base is `base` (an image ID, or "scratch").
    pub fn base(base: &str, platform: &str) -> CacheKey {
        let mut h = Sha256::new();
        for p in ["rbuild-base-v1", base, platform] {
            h.update((p.len() as u64).to_le_bytes());
            h.update(p.as_bytes());
        }
        CacheKey(Digest::from_hasher(h))
    }

    /// Adds one part (an instruction, a flag, an arg, a content digest).
    pub fn part(&mut self, s: &str) -> &mut KeyBuilder {
        self.hasher.update((s.len() as u64).to_le_bytes());
        self.hasher.update(s.as_bytes());
        self
    }

    /// Adds named values (build args, options), in sorted order.
    pub fn pairs<'a>(&mut self, pairs: impl IntoIterator<Item = (&'a str, &'a str)>) -> &mut Self {
        let mut v: Vec<_> = pairs.into_iter().collect();
        v.sort();
        self.part(&format!("pairs:{}", v.len()));
        for (k, val) in v {
            self.part(k);
            self.part(val);
        }
        self
    }

    /// The finished key.
    pub fn finish(&self) -> CacheKey {
        CacheKey(Digest::from_hasher(self.hasher.clone()))
    }
}

/// A layer as recorded in the cache (and in manifests).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LayerRef {
    /// Digest of the uncompressed tar.
    pub diff_id: Digest,
    /// Digest of the compressed blob.
    pub digest: Digest,
    /// Size of the compressed blob.
    pub size: u64,
    /// OCI media type of the blob.
    pub media_type: String,
}

/// What a cached step produced.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CacheRecord {
    /// The layer the step added, or none for metadata-only steps.
    pub layer: Option<LayerRef>,
    /// The image state (config, history, layers) after the step, as the executor encodes it.
    pub state: serde_json::Value,
}

/// The cache index directory.
#[derive(Debug, Clone)]
pub struct CacheIndex {
    dir: PathBuf,
}

impl CacheIndex {
    /// The index kept in `cache_dir/keys` (the store's `cache/` dir).
    pub fn new(cache_dir: &Path) -> CacheIndex {
        CacheIndex {
            dir: cache_dir.join("keys"),
        }
    }

    /// The directory holding the records.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    fn path(&self, key: &CacheKey) -> PathBuf {
        self.dir.join(format!("{}.json", key.0.hex()))
    }

    /// The record of `key`, if one was stored (an unreadable record counts as a miss).
    pub fn get(&self, key: &CacheKey) -> Option<CacheRecord> {
        let data = fs::read(self.path(key)).ok()?;
        serde_json::from_slice(&data).ok()
    }

    /// Stores the record of `key` (atomically replacing an older one).
    pub fn put(&self, key: &CacheKey, record: &CacheRecord) -> Result<(), CacheError> {
        let io_err = |path: &Path| {
            let path = path.to_path_buf();
            move |source| CacheError::Io { path, source }
        };
        fs::create_dir_all(&self.dir).map_err(io_err(&self.dir))?;
        let data = serde_json::to_vec(record).map_err(|source| CacheError::Encode {
            key: key.to_string(),
            source,
        })?;
        let path = self.path(key);
        let tmp = self
            .dir
            .join(format!(".{}.{}.tmp", key.0.hex(), std::process::id()));
        let write = || -> io::Result<()> {
            let mut f = fs::File::create(&tmp)?;
            f.write_all(&data)?;
            f.sync_all()?;
            fs::rename(&tmp, &path)
        };
        write().map_err(|e| {
            let _ = fs::remove_file(&tmp);
            CacheError::Io {
                path: path.clone(),
                source: e,
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_depend_on_every_part() {
        let base = KeyBuilder::base("scratch", "linux/amd64");
        let k1 = KeyBuilder::new(&base).part("RUN a").finish();
        let k2 = KeyBuilder::new(&base).part("RUN b").finish();
        let k3 = KeyBuilder::new(&k1).part("RUN a").finish();
        assert_ne!(k1, k2);
        assert_ne!(k1, k3);
        let a = KeyBuilder::new(&base)
            .pairs([("A", "1"), ("B", "2")])
            .finish();
        let b = KeyBuilder::new(&base)
            .pairs([("B", "2"), ("A", "1")])
            .finish();
        assert_eq!(a, b);
        // Length prefixes keep "ab"+"c" apart from "a"+"bc".
        let x = KeyBuilder::new(&base).part("ab").part("c").finish();
        let y = KeyBuilder::new(&base).part("a").part("bc").finish();
        assert_ne!(x, y);
    }

    #[test]
    fn index_roundtrip() {
        let dir = tempfile::tempdir().unwrap();
        let idx = CacheIndex::new(dir.path());
        let key = KeyBuilder::base("x", "y");
        assert!(idx.get(&key).is_none());
        let rec = CacheRecord {
            layer: None,
            state: serde_json::json!({"a": 1}),
        };
        idx.put(&key, &rec).unwrap();
        assert_eq!(idx.get(&key).unwrap().state, rec.state);
    }
}
