//! The registry-shared build cache (`--cache-from REF`, `--cache-to REF`).
//!
//! A cache is an OCI artifact in a repository: an image manifest whose `artifactType` and config
//! media type are [`CACHE_MEDIA_TYPE`], whose config blob is a [`CacheArtifact`] (cache key ->
//! layer and image state after the step), and whose layers are the layer blobs the steps
//! produced, so the registry keeps them and pushes can skip or cross-mount them. Base image
//! layers are not in the artifact: a cache key includes the base image ID, so whoever hits an
//! entry has that base image (and its layers) in the store already.
//!
//! Import reads only the manifest and the config: entries become a [`SharedCache`] view for the
//! build, and a layer blob is downloaded only when the executor mounts it or writes the final
//! image. Export merges the build's entries into what the artifact already holds.

use super::shared::SharedCache;
use super::{CacheError, CacheKey, CacheRecord, LayerRef};
use rbuild_layerfs::{Digest, Store};
use rbuild_registry::artifact::{ArtifactOptions, ArtifactRepo, FetchedManifest};
use rbuild_registry::media::OCI_MANIFEST;
use rbuild_registry::{Access, ImageRef, RegistryConfig};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};

/// Media type of the cache artifact and of its config blob.
pub const CACHE_MEDIA_TYPE: &str = "application/vnd.rbuild.cache.v1+json";

/// Largest cache config blob accepted on import.
const MAX_CACHE_CONFIG: u64 = 64 << 20;

/// The config blob of a cache artifact: the entries it carries.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct CacheArtifact {
    /// Format version (1).
    pub version: u32,
    /// Cache key (`sha256:...`) -> what the step produced.
    pub entries: BTreeMap<String, ArtifactEntry>,
}

/// One entry of a cache artifact.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ArtifactEntry {
    /// What the step produced.
    #[serde(flatten)]
    pub record: CacheRecord,
    /// When a build last exported it (seconds since the epoch): the oldest go first when the
    /// artifact grows past [`MAX_ENTRIES`].
    #[serde(default)]
    pub exported: u64,
}

/// Most entries an artifact keeps (bounds the config blob and the manifest's layer list).
pub const MAX_ENTRIES: usize = 5000;

impl CacheArtifact {
    /// Every layer a step of the entries produced, each once (base image layers are not
    /// included; see the module docs).
    pub fn layers(&self) -> Vec<LayerRef> {
        let mut seen = HashMap::new();
        let mut out = Vec::new();
        for l in self
            .entries
            .values()
            .filter_map(|e| e.record.layer.as_ref())
        {
            if seen.insert(l.digest.clone(), ()).is_none() {
                out.push(l.clone());
            }
        }
        out
    }

    /// Drops the least recently exported entries beyond `max`; returns how many.
    pub fn keep_newest(&mut self, max: usize) -> usize {
        let excess = self.entries.len().saturating_sub(max);
        if excess == 0 {
            return 0;
        }
        let mut by_age: Vec<(u64, String)> = self
            .entries
            .iter()
            .map(|(k, e)| (e.exported, k.clone()))
            .collect();
        by_age.sort();
        for (_, k) in by_age.into_iter().take(excess) {
            self.entries.remove(&k);
        }
        excess
    }

    /// The OCI image manifest of this artifact, given its encoded config blob.
    pub fn manifest(&self, config: &[u8]) -> Vec<u8> {
        let layers: Vec<_> = self
            .layers()
            .iter()
            .map(|l| {
                serde_json::json!({
                    "mediaType": l.media_type,
                    "digest": l.digest.as_str(),
                    "size": l.size,
                })
            })
            .collect();
        let doc = serde_json::json!({
            "schemaVersion": 2,
            "mediaType": OCI_MANIFEST,
            "artifactType": CACHE_MEDIA_TYPE,
            "config": {
                "mediaType": CACHE_MEDIA_TYPE,
                "digest": Digest::of_bytes(config).as_str(),
                "size": config.len(),
            },
            "layers": layers,
        });
        serde_json::to_vec(&doc).unwrap_or_default()
    }
}

/// A parsed cache manifest: its config descriptor and the blobs it keeps.
#[derive(Debug)]
struct CacheManifest {
    config_digest: Digest,
    config_size: u64,
    blobs: Vec<Digest>,
}

fn parse_manifest(m: &FetchedManifest) -> Result<CacheManifest, String> {
    let doc: serde_json::Value =
        serde_json::from_slice(&m.body).map_err(|e| format!("manifest is not JSON: {e}"))?;
    let config = &doc["config"];
    let config_type = config["mediaType"].as_str().unwrap_or_default();
    if config_type != CACHE_MEDIA_TYPE {
        return Err(format!(
            "manifest {} is not an rbuild cache (config media type {config_type:?}, expected \
             {CACHE_MEDIA_TYPE})",
            m.digest
        ));
    }
    let digest = |v: &serde_json::Value| -> Result<Digest, String> {
        Digest::parse(v["digest"].as_str().unwrap_or_default())
            .map_err(|e| format!("manifest {}: bad descriptor digest: {e}", m.digest))
    };
    let blobs = doc["layers"]
        .as_array()
        .map(|ls| ls.iter().map(digest).collect::<Result<Vec<_>, _>>())
        .transpose()?
        .unwrap_or_default();
    Ok(CacheManifest {
        config_digest: digest(config)?,
        config_size: config["size"].as_u64().unwrap_or_default(),
        blobs,
    })
}

/// Reads the cache artifact at `repo`'s reference; None when there is none yet.
fn read_artifact(repo: &ArtifactRepo) -> Result<Option<(CacheArtifact, Vec<Digest>)>, String> {
    let Some(m) = repo.fetch_manifest().map_err(|e| e.to_string())? else {
        return Ok(None);
    };
    let parsed = parse_manifest(&m)?;
    let config = repo
        .fetch_blob_bytes(&parsed.config_digest, parsed.config_size, MAX_CACHE_CONFIG)
        .map_err(|e| e.to_string())?;
    let artifact: CacheArtifact = serde_json::from_slice(&config)
        .map_err(|e| format!("cache config {} is corrupt: {e}", parsed.config_digest))?;
    if artifact.version != 1 {
        return Err(format!(
            "cache format version {} is not supported (this rbuild reads version 1)",
            artifact.version
        ));
    }
    Ok(Some((artifact, parsed.blobs)))
}

fn parse_ref(reference: &str) -> Result<ImageRef, CacheError> {
    ImageRef::parse(reference).map_err(|e| CacheError::Shared {
        reference: reference.to_string(),
        message: e.to_string(),
    })
}

/// The diff ID (sha256 of the uncompressed tar) of a stored layer blob, whatever its
/// compression (gzip, zstd or none, told by its magic bytes).
fn diff_id_of_blob(store: &Store, digest: &Digest) -> std::io::Result<Digest> {
    use sha2::Digest as _;
    use std::io::{BufRead, BufReader, Read};
    let file = store
        .open_blob(digest)
        .map_err(|e| std::io::Error::other(e.to_string()))?;
    let mut input = BufReader::new(file);
    let head = input.fill_buf()?;
    let mut reader: Box<dyn Read> = if head.starts_with(&[0x1f, 0x8b]) {
        Box::new(flate2::bufread::MultiGzDecoder::new(input))
    } else if head.starts_with(&[0x28, 0xb5, 0x2f, 0xfd]) {
        Box::new(zstd::stream::read::Decoder::with_buffer(input)?)
    } else {
        Box::new(input)
    };
    let mut hasher = sha2::Sha256::new();
    let mut buf = vec![0u8; 1 << 16];
    loop {
        let n = reader.read(&mut buf)?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
    }
    Ok(Digest::from_hasher(hasher))
}

/// What an export did.
#[derive(Debug, Clone)]
pub struct ExportReport {
    /// The reference written.
    pub reference: String,
    /// Digest of the cache manifest.
    pub digest: Digest,
    /// Entries in the artifact (old and new).
    pub entries: usize,
    /// Layer blobs uploaded or mounted (the others were already there).
    pub blobs_pushed: usize,
    /// Entries left out, and why.
    pub warnings: Vec<String>,
}

/// The shared cache of one command (a build or a whole pipeline): the entries imported from
/// `--cache-from` sources and the entries the builds used, for `--cache-to`.
#[derive(Debug)]
pub struct RemoteCache {
    sources: Vec<ArtifactRepo>,
    entries: HashMap<CacheKey, CacheRecord>,
    blobs: HashMap<Digest, usize>,
    used: Mutex<BTreeMap<String, CacheRecord>>,
    fetched: Mutex<Vec<LayerRef>>,
    /// One gate per blob being fetched, so parallel builds download it once.
    inflight: Mutex<HashMap<Digest, Arc<Mutex<()>>>>,
    options: ArtifactOptions,
}

impl RemoteCache {
    /// Imports the entries of every reference in `from` (first source wins a key). A source that
    /// is missing, unreachable or corrupt is skipped with a warning (returned), never an error.
    pub fn import(from: &[String], options: &ArtifactOptions) -> (RemoteCache, Vec<String>) {
        let mut cache = RemoteCache {
            sources: Vec::new(),
            entries: HashMap::new(),
            blobs: HashMap::new(),
            used: Mutex::new(BTreeMap::new()),
            fetched: Mutex::new(Vec::new()),
            inflight: Mutex::new(HashMap::new()),
            options: options.clone(),
        };
        let mut warnings = Vec::new();
        for reference in from {
            let warn = |m: String| format!("cache-from {reference}: {m}; building without it");
            let repo = match parse_ref(reference)
                .map_err(|e| e.to_string())
                .and_then(|r| {
                    ArtifactRepo::open(&r, Access::Pull, options).map_err(|e| e.to_string())
                }) {
                Ok(r) => r,
                Err(e) => {
                    warnings.push(warn(e));
                    continue;
                }
            };
            let (artifact, blobs) = match read_artifact(&repo) {
                Ok(Some(a)) => a,
                Ok(None) => {
                    warnings.push(warn("no cache found there".into()));
                    continue;
                }
                Err(e) => {
                    warnings.push(warn(e));
                    continue;
                }
            };
            let idx = cache.sources.len();
            cache.sources.push(repo);
            for b in blobs {
                cache.blobs.entry(b).or_insert(idx);
            }
            let mut bad = 0;
            for (k, rec) in artifact.entries {
                match Digest::parse(&k) {
                    Ok(d) => {
                        cache.entries.entry(CacheKey(d)).or_insert(rec.record);
                    }
                    Err(_) => bad += 1,
                }
            }
            if bad > 0 {
                warnings.push(format!(
                    "cache-from {reference}: {bad} entries with invalid keys ignored"
                ));
            }
        }
        (cache, warnings)
    }

    /// The shared cache of a command given `--cache-from` refs and a `--cache-to` ref (None when
    /// neither is given). Import warnings go to `notes`.
    pub fn for_command(
        from: &[String],
        to: Option<&str>,
        notes: &mut dyn FnMut(String),
    ) -> Option<Arc<RemoteCache>> {
        if from.is_empty() && to.is_none() {
            return None;
        }
        let options = ArtifactOptions {
            config: RegistryConfig::load_default().unwrap_or_default(),
            ..ArtifactOptions::default()
        };
        let (cache, warnings) = RemoteCache::import(from, &options);
        for w in warnings {
            notes(format!("warning: {w}"));
        }
        if !from.is_empty() {
            notes(format!(
                "cache: {} entries imported from {}",
                cache.imported(),
                from.join(", ")
            ));
        }
        Some(Arc::new(cache))
    }

    /// After the builds: reports the layers fetched and exports to `to` (a failed export is a
    /// warning: the images are built). Messages go to `notes`.
    pub fn finish(&self, store: &Store, to: Option<&str>, notes: &mut dyn FnMut(String)) {
        if let Some(to) = to {
            match self.export(store, to) {
                Ok(r) => {
                    for w in &r.warnings {
                        notes(format!("warning: cache-to {to}: {w}"));
                    }
                    notes(format!(
                        "cache: exported {} entries to {} ({}, {} layer blob(s) pushed)",
                        r.entries, r.reference, r.digest, r.blobs_pushed
                    ));
                }
                Err(e) => notes(format!("warning: {e}; the cache was not exported")),
            }
        }
        // Listed last, so that blobs an export had to download are counted too.
        let fetched = self.fetched();
        if !fetched.is_empty() {
            let list: Vec<&str> = fetched.iter().map(|l| l.digest.as_str()).collect();
            notes(format!(
                "cache: fetched {} layer(s): {}",
                fetched.len(),
                list.join(" ")
            ));
        }
    }

    /// Number of imported entries.
    pub fn imported(&self) -> usize {
        self.entries.len()
    }

    /// Layers whose blobs were downloaded so far.
    pub fn fetched(&self) -> Vec<LayerRef> {
        self.fetched.lock().map(|v| v.clone()).unwrap_or_default()
    }

    /// Entries the builds used or created so far.
    pub fn used(&self) -> BTreeMap<String, CacheRecord> {
        self.used.lock().map(|m| m.clone()).unwrap_or_default()
    }

    /// Exports the used entries to `to`, merged with what the artifact there already holds.
    pub fn export(&self, store: &Store, to: &str) -> Result<ExportReport, CacheError> {
        let dest = parse_ref(to)?;
        let shared = |message: String| CacheError::Shared {
            reference: to.to_string(),
            message,
        };
        let repo = ArtifactRepo::open(&dest, Access::Push, &self.options)
            .map_err(|e| shared(e.to_string()))?;
        let mut warnings = Vec::new();
        let mut artifact = match read_artifact(&repo) {
            Ok(Some((a, _))) => a,
            Ok(None) => CacheArtifact::default(),
            Err(e) => {
                warnings.push(format!("the cache there is unreadable ({e}); replacing it"));
                CacheArtifact::default()
            }
        };
        artifact.version = 1;
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        artifact
            .entries
            .extend(self.used().into_iter().map(|(k, record)| {
                (
                    k,
                    ArtifactEntry {
                        record,
                        exported: now,
                    },
                )
            }));
        let dropped = artifact.keep_newest(MAX_ENTRIES);
        if dropped > 0 {
            warnings.push(format!(
                "{dropped} least recently exported entries dropped (at most {MAX_ENTRIES} are kept)"
            ));
        }
        let mounts = repo.mount_sources(store).unwrap_or_default();
        let mut pushed = 0;
        let mut missing = Vec::new();
        for l in artifact.layers() {
            let there = repo
                .has_blob(&l.digest)
                .map_err(|e| shared(e.to_string()))?;
            if there {
                continue;
            }
            if !store.has_blob(&l.digest) {
                if let Some(src) = self.source_of(&l) {
                    let r = src.reference();
                    if r.registry() == dest.registry()
                        && repo.mount_blob(&l.digest, r.repository()).unwrap_or(false)
                    {
                        pushed += 1;
                        continue;
                    }
                    self.ensure_local(store, &l)?;
                }
            }
            if !store.has_blob(&l.digest) {
                missing.push(l.digest.clone());
                continue;
            }
            repo.push_store_blob(
                store,
                &l.digest,
                l.size,
                mounts.get(&l.digest).map(String::as_str),
            )
            .map_err(|e| shared(format!("pushing layer {}: {e}", l.digest)))?;
            pushed += 1;
        }
        if !missing.is_empty() {
            let before = artifact.entries.len();
            artifact.entries.retain(|_, e| {
                e.record
                    .layer
                    .as_ref()
                    .is_none_or(|l| !missing.contains(&l.digest))
            });
            warnings.push(format!(
                "{} entries left out: their layers ({}) are neither in the store nor in the \
                 registry",
                before - artifact.entries.len(),
                missing
                    .iter()
                    .map(|d| d.short().to_string())
                    .collect::<Vec<_>>()
                    .join(", ")
            ));
        }
        let config = serde_json::to_vec(&artifact).map_err(|e| shared(format!("encoding: {e}")))?;
        repo.push_bytes(&config)
            .map_err(|e| shared(format!("pushing the cache config: {e}")))?;
        let manifest = artifact.manifest(&config);
        let digest = repo
            .put_manifest(&manifest, OCI_MANIFEST)
            .map_err(|e| shared(format!("pushing the cache manifest: {e}")))?;
        Ok(ExportReport {
            reference: dest.to_string(),
            digest,
            entries: artifact.entries.len(),
            blobs_pushed: pushed,
            warnings,
        })
    }
}

impl RemoteCache {
    /// The imported source that holds the blob of `layer`.
    fn source_of(&self, layer: &LayerRef) -> Option<&ArtifactRepo> {
        self.blobs.get(&layer.digest).map(|&i| &self.sources[i])
    }
}

impl SharedCache for RemoteCache {
    fn lookup(&self, key: &CacheKey) -> Option<CacheRecord> {
        self.entries.get(key).cloned()
    }

    fn can_fetch(&self, layer: &LayerRef) -> bool {
        self.blobs.contains_key(&layer.digest)
    }

    fn ensure_local(&self, store: &Store, layer: &LayerRef) -> Result<(), CacheError> {
        let gate = self
            .inflight
            .lock()
            .map(|mut m| m.entry(layer.digest.clone()).or_default().clone())
            .ok();
        let _fetching = gate.as_ref().map(|g| g.lock());
        if store.has_blob(&layer.digest) {
            return Ok(());
        }
        let Some(repo) = self.source_of(layer) else {
            return Err(CacheError::Shared {
                reference: "--cache-from".into(),
                message: format!("no source has layer {}", layer.digest),
            });
        };
        repo.fetch_blob_to_store(store, &layer.digest, layer.size)
            .map_err(|e| CacheError::Shared {
                reference: repo.reference().to_string(),
                message: format!(
                    "fetching layer {}: {e}; retry, or build with --no-cache",
                    layer.digest
                ),
            })?;
        let diff_id = diff_id_of_blob(store, &layer.digest).map_err(|e| CacheError::Shared {
            reference: repo.reference().to_string(),
            message: format!("reading layer {}: {e}", layer.digest),
        })?;
        if diff_id != layer.diff_id {
            return Err(CacheError::Shared {
                reference: repo.reference().to_string(),
                message: format!(
                    "layer {} unpacks to {diff_id}, but the cache says {}: the cache is \
                     corrupt; build with --no-cache and export it again",
                    layer.digest, layer.diff_id
                ),
            });
        }
        if let Ok(mut f) = self.fetched.lock() {
            f.push(layer.clone());
        }
        Ok(())
    }

    fn record_used(&self, key: &CacheKey, record: &CacheRecord) {
        if let Ok(mut used) = self.used.lock() {
            used.insert(key.to_string(), record.clone());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn layer(n: u8) -> LayerRef {
        LayerRef {
            diff_id: Digest::of_bytes(&[n, 0]),
            digest: Digest::of_bytes(&[n]),
            size: n as u64,
            media_type: "application/vnd.oci.image.layer.v1.tar+gzip".into(),
        }
    }

    fn entry(record: CacheRecord) -> ArtifactEntry {
        ArtifactEntry {
            record,
            exported: 0,
        }
    }

    #[test]
    fn the_least_recently_exported_entries_go_first() {
        let mut a = CacheArtifact::default();
        for (k, t) in [("a", 30), ("b", 10), ("c", 20), ("d", 40)] {
            let mut e = entry(CacheRecord {
                layer: None,
                state: serde_json::Value::Null,
            });
            e.exported = t;
            a.entries.insert(k.into(), e);
        }
        assert_eq!(a.keep_newest(10), 0);
        assert_eq!(a.keep_newest(2), 2);
        assert_eq!(a.entries.keys().collect::<Vec<_>>(), ["a", "d"]);
        // The timestamp travels with the flattened record.
        let json = serde_json::to_value(&a).unwrap();
        assert_eq!(json["entries"]["d"]["exported"], 40);
        assert!(json["entries"]["d"].get("layer").is_some());
    }

    #[test]
    fn manifest_lists_each_layer_once_and_names_the_cache_type() {
        let state = |ls: Vec<LayerRef>| {
            serde_json::json!({
                "config": {"architecture": "amd64", "os": "linux", "rootfs": {"type": "layers", "diff_ids": []}},
                "layers": ls,
            })
        };
        let mut a = CacheArtifact {
            version: 1,
            ..Default::default()
        };
        a.entries.insert(
            "sha256:01".into(),
            entry(CacheRecord {
                layer: Some(layer(2)),
                state: state(vec![layer(1), layer(2)]),
            }),
        );
        a.entries.insert(
            "sha256:02".into(),
            entry(CacheRecord {
                layer: None,
                state: state(vec![layer(1), layer(2)]),
            }),
        );
        a.entries.insert(
            "sha256:03".into(),
            entry(CacheRecord {
                layer: Some(layer(3)),
                state: state(vec![layer(1), layer(2), layer(3)]),
            }),
        );
        a.entries.insert(
            "sha256:04".into(),
            entry(CacheRecord {
                layer: Some(layer(2)),
                state: state(vec![layer(1), layer(2)]),
            }),
        );
        // Step layers only (layer 1 is the base), each once.
        let layers = a.layers();
        assert_eq!(layers, vec![layer(2), layer(3)]);
        let config = serde_json::to_vec(&a).unwrap();
        let m = a.manifest(&config);
        let parsed = parse_manifest(&FetchedManifest {
            digest: Digest::of_bytes(&m),
            body: m,
            media_type: OCI_MANIFEST.into(),
        })
        .unwrap();
        assert_eq!(parsed.config_digest, Digest::of_bytes(&config));
        assert_eq!(parsed.config_size, config.len() as u64);
        assert_eq!(parsed.blobs, vec![layer(2).digest, layer(3).digest]);
        let back: CacheArtifact = serde_json::from_slice(&config).unwrap();
        assert_eq!(back.entries.len(), 4);
    }

    #[test]
    fn diff_ids_of_gzip_zstd_and_plain_blobs() {
        use std::io::Write;
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let content = b"pretend this is a tar stream".repeat(100);
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        gz.write_all(&content).unwrap();
        let gz = gz.finish().unwrap();
        let zst = zstd::encode_all(&content[..], 3).unwrap();
        for blob in [gz, zst, content.clone()] {
            let digest = store.put_blob(&blob).unwrap();
            assert_eq!(
                diff_id_of_blob(&store, &digest).unwrap(),
                Digest::of_bytes(&content)
            );
        }
    }

    #[test]
    fn an_image_manifest_is_not_taken_for_a_cache() {
        let body = br#"{"schemaVersion":2,"config":{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"sha256:0000000000000000000000000000000000000000000000000000000000000000","size":2},"layers":[]}"#.to_vec();
        let err = parse_manifest(&FetchedManifest {
            digest: Digest::of_bytes(&body),
            body,
            media_type: OCI_MANIFEST.into(),
        })
        .unwrap_err();
        assert!(err.contains("not an rbuild cache"), "{err}");
    }
}
