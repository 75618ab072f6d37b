//! The executor's view of a shared (registry) build cache: extra cache records beyond the local
//! index, whose layer blobs are fetched only when a step mounts them or the final image needs
//! them. The executor calls the three functions here; [`super::remote`] implements the trait.

use super::{CacheError, CacheIndex, CacheKey, CacheRecord, LayerRef};
use crate::exec::image::ImageState;
use rbuild_layerfs::Store;

/// A source of cache records and layer blobs besides the local store (`--cache-from`), and the
/// recorder of the entries a build used (`--cache-to`).
pub trait SharedCache: Send + Sync + std::fmt::Debug {
    /// The imported record of `key`, if a source has one.
    fn lookup(&self, key: &CacheKey) -> Option<CacheRecord>;
    /// Whether the blob of `layer` can be fetched into the store on demand.
    fn can_fetch(&self, layer: &LayerRef) -> bool;
    /// Fetches the blob of `layer` into `store` (verified, not unpacked).
    fn ensure_local(&self, store: &Store, layer: &LayerRef) -> Result<(), CacheError>;
    /// Notes that the build used or created the entry `key` -> `record`.
    fn record_used(&self, key: &CacheKey, record: &CacheRecord);
}

/// The usable record of `key`: the local one when its layers are all at hand, else an imported
/// one whose missing layers the shared cache can fetch (then also written to the local index).
/// A hit is noted for export.
pub fn usable_record(
    store: &Store,
    index: &CacheIndex,
    shared: Option<&dyn SharedCache>,
    key: &CacheKey,
) -> Option<CacheRecord> {
    let usable = |rec: &CacheRecord| layers_at_hand(store, shared, rec);
    let rec = match index.get(key).filter(usable) {
        Some(local) => local,
        None => {
            let imported = shared?.lookup(key).filter(usable)?;
            // Kept locally too, so later builds in this store hit without --cache-from (the
            // record counts once its layer blobs are here). Best effort: a miss is no error.
            let _ = index.put(key, &imported);
            imported
        }
    };
    if let Some(s) = shared {
        s.record_used(key, &rec);
    }
    Some(rec)
}

/// Whether every layer `rec` needs is in `store` (or fetchable from `shared`): its own layer as a
/// blob, the image state's layers as blobs or unpacked layers. An unreadable state counts as not.
pub fn layers_at_hand(store: &Store, shared: Option<&dyn SharedCache>, rec: &CacheRecord) -> bool {
    let at_hand =
        |l: &LayerRef| store.has_blob(&l.digest) || shared.is_some_and(|s| s.can_fetch(l));
    if rec.layer.as_ref().is_some_and(|l| !at_hand(l)) {
        return false;
    }
    let Ok(state) = serde_json::from_value::<ImageState>(rec.state.clone()) else {
        return false;
    };
    state
        .layers
        .iter()
        .all(|l| at_hand(l) || store.has_layer(&l.diff_id))
}

/// Fetches the blobs of those `layers` that are missing from the store and that the shared cache
/// can provide (others are left for the caller's usual error).
pub fn fetch_missing(
    store: &Store,
    shared: Option<&dyn SharedCache>,
    layers: &[LayerRef],
) -> Result<(), CacheError> {
    let Some(shared) = shared else {
        return Ok(());
    };
    for l in layers {
        if !store.has_blob(&l.digest) && shared.can_fetch(l) {
            shared.ensure_local(store, l)?;
        }
    }
    Ok(())
}

/// Notes a newly created entry for export (no-op without a shared cache).
pub fn note_created(shared: Option<&dyn SharedCache>, key: &CacheKey, record: &CacheRecord) {
    if let Some(s) = shared {
        s.record_used(key, record);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cache::KeyBuilder;
    use rbuild_layerfs::Digest;
    use std::collections::HashMap;
    use std::sync::Mutex;

    #[derive(Debug, Default)]
    struct Fake {
        records: HashMap<CacheKey, CacheRecord>,
        fetchable: Vec<Digest>,
        used: Mutex<Vec<CacheKey>>,
    }

    impl SharedCache for Fake {
        fn lookup(&self, key: &CacheKey) -> Option<CacheRecord> {
            self.records.get(key).cloned()
        }
        fn can_fetch(&self, layer: &LayerRef) -> bool {
            self.fetchable.contains(&layer.digest)
        }
        fn ensure_local(&self, _: &Store, layer: &LayerRef) -> Result<(), CacheError> {
            Err(CacheError::Shared {
                reference: "fake".into(),
                message: format!("not fetching {}", layer.digest),
            })
        }
        fn record_used(&self, key: &CacheKey, _: &CacheRecord) {
            self.used.lock().unwrap().push(key.clone());
        }
    }

    fn layer(n: u8) -> LayerRef {
        LayerRef {
            diff_id: Digest::of_bytes(&[n, n]),
            digest: Digest::of_bytes(&[n]),
            size: 1,
            media_type: "application/vnd.oci.image.layer.v1.tar+gzip".into(),
        }
    }

    fn record(l: LayerRef, tag: &str) -> CacheRecord {
        CacheRecord {
            layer: Some(l.clone()),
            state: serde_json::json!({
                "config": {"architecture": "amd64", "os": "linux", "author": tag,
                           "rootfs": {"type": "layers", "diff_ids": [l.diff_id.as_str()]}},
                "layers": [l],
            }),
        }
    }

    #[test]
    fn imported_records_count_when_their_layers_can_be_fetched() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let index = CacheIndex::new(&dir.path().join("cache"));
        let key = KeyBuilder::base("a", "b");
        let other = KeyBuilder::base("c", "d");
        let mut fake = Fake {
            fetchable: vec![layer(1).digest],
            ..Fake::default()
        };
        fake.records.insert(key.clone(), record(layer(1), "remote"));
        fake.records
            .insert(other.clone(), record(layer(2), "unfetchable"));
        let shared: Option<&dyn SharedCache> = Some(&fake);
        // Without the shared cache nothing is known.
        assert!(usable_record(&store, &index, None, &key).is_none());
        let hit = usable_record(&store, &index, shared, &key).unwrap();
        assert_eq!(hit.state["config"]["author"], "remote");
        // ... and is kept in the local index.
        assert_eq!(index.get(&key).unwrap().state["config"]["author"], "remote");
        // A record whose layer nobody can provide is a miss.
        assert!(usable_record(&store, &index, shared, &other).is_none());
        // A local record with a missing blob gives way to a usable imported one.
        index.put(&key, &record(layer(3), "local")).unwrap();
        let hit = usable_record(&store, &index, shared, &key).unwrap();
        assert_eq!(hit.state["config"]["author"], "remote");
        assert_eq!(*fake.used.lock().unwrap(), vec![key.clone(), key]);
        // fetch_missing asks only for what can be fetched and is missing.
        let err = fetch_missing(&store, shared, &[layer(2), layer(1)]).unwrap_err();
        assert!(err.to_string().contains(layer(1).digest.as_str()), "{err}");
        fetch_missing(&store, shared, &[layer(2)]).unwrap();
    }
}
