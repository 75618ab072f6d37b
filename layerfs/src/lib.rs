//! rbuild-layerfs: content store, image model, layer diff/apply and union mounts.
