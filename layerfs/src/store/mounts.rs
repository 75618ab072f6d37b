//! Persistent read-only mounts of images (`rbuild mount NAME`): each is recorded as
//! `mounts/<image-id-hex>.json` beside its mount point `mounts/<image-id-hex>/merged`, so a later
//! process (`rbuild umount NAME`) finds it, and prune keeps the image's blobs and layers.

use super::error::{IoContext, Result, StoreError};
use super::fsutil::{atomic_write, ensure_dir, random_hex, remove_any};
use super::Store;
use crate::image::Image;
use crate::mount::{mount_union, unmount_target, Driver, MountError, MountSpec};
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

/// The record of a persistent image mount.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct MountRecord {
    /// The image ID (config digest).
    pub image_id: String,
    /// The manifest digest.
    pub manifest: String,
    /// The layer diff IDs, lowest first.
    pub layers: Vec<String>,
    /// The mount point.
    pub target: PathBuf,
    /// The driver that made the mount.
    pub driver: String,
}

impl Store {
    fn mount_paths(&self, image: &Image) -> (PathBuf, PathBuf) {
        let dir = self.root().join("mounts");
        let hex = image.id().hex();
        (
            dir.join(format!("{hex}.json")),
            dir.join(hex).join("merged"),
        )
    }

    /// Mounts the image read-only and leaves it mounted; returns the mount point. Mounting an
    /// image that is already mounted returns the existing mount point. The record is written
    /// before the mount, so a process killed in between leaves a stale record (dropped by
    /// [`Store::image_mounts`]) rather than an unrecorded mount.
    pub fn mount_image(&self, image: &Image, driver: Driver) -> Result<PathBuf> {
        let layers = self.image_layer_dirs(image)?;
        let _lock = self.lock()?;
        let (record_path, target) = self.mount_paths(image);
        let write_record = |driver: Driver| -> Result<()> {
            let record = MountRecord {
                image_id: image.id().to_string(),
                manifest: image.manifest_digest.to_string(),
                layers: image.diff_ids().iter().map(|d| d.to_string()).collect(),
                target: target.clone(),
                driver: driver.to_string(),
            };
            let data = serde_json::to_vec_pretty(&record)
                .map_err(|e| StoreError::json("mount record", e))?;
            let tmp = self.session_dir().join(format!("mount-{}", random_hex(6)));
            atomic_write(&tmp, &record_path, &data)
        };
        if is_mount_point(&target) {
            if !record_path.exists() {
                write_record(driver)?;
            }
            return Ok(target);
        }
        ensure_dir(&target, 0o755)?;
        write_record(driver)?;
        let spec = MountSpec {
            layers,
            upper: None,
            work: None,
            target: target.clone(),
        };
        let mount = match mount_union(&spec, driver) {
            Ok(m) => m,
            Err(e) => {
                let _ = remove_any(&record_path);
                return Err(mount_err(e));
            }
        };
        if mount.driver() == Driver::Fuse {
            // A FUSE mount is served by this process and would die with it.
            drop(mount);
            let _ = remove_any(&record_path);
            return Err(StoreError::Other(format!(
                "cannot keep {} mounted with the FUSE driver: its server lives only as long as this process; use --storage-driver overlay",
                target.display()
            )));
        }
        if mount.driver() != driver {
            write_record(mount.driver())?;
        }
        Ok(mount.persist())
    }

    /// Unmounts a mount made by [`Store::mount_image`] and removes its record. Returns false
    /// when the image was not mounted.
    pub fn unmount_image(&self, image: &Image) -> Result<bool> {
        let _lock = self.lock()?;
        let (record_path, target) = self.mount_paths(image);
        let was_mounted = is_mount_point(&target);
        if was_mounted {
            match unmount_target(&target) {
                Ok(()) | Err(MountError::Busy(_)) => {}
                Err(e) => return Err(mount_err(e)),
            }
        }
        let had_record = record_path.exists();
        remove_any(&record_path)?;
        if let Some(dir) = target.parent() {
            remove_any(dir)?;
        }
        Ok(was_mounted || had_record)
    }

    /// Every live image mount. Records whose mount is gone (e.g. after a reboot) are removed.
    pub fn image_mounts(&self) -> Result<Vec<MountRecord>> {
        let dir = self.root().join("mounts");
        let mut out = Vec::new();
        let mut stale = Vec::new();
        for entry in std::fs::read_dir(&dir).at("list", &dir)? {
            let path = entry.at("list", &dir)?.path();
            if path.extension().and_then(|e| e.to_str()) != Some("json") {
                continue;
            }
            let data = std::fs::read(&path).at("read", &path)?;
            let record: MountRecord = serde_json::from_slice(&data)
                .map_err(|e| StoreError::json(path.display().to_string(), e))?;
            if is_mount_point(&record.target) {
                out.push(record);
            } else {
                stale.push(path);
            }
        }
        if !stale.is_empty() {
            let _lock = self.lock()?;
            for path in stale {
                // Re-check under the lock: a concurrent `mount` may have just made it live.
                let live = std::fs::read(&path)
                    .ok()
                    .and_then(|d| serde_json::from_slice::<MountRecord>(&d).ok())
                    .is_some_and(|r| is_mount_point(&r.target));
                if !live {
                    remove_any(&path)?;
                    if let Some(stem) = path.file_stem() {
                        remove_any(&dir.join(stem))?;
                    }
                }
            }
        }
        Ok(out)
    }

    /// True when the image has a live persistent mount.
    pub fn is_image_mounted(&self, image: &Image) -> bool {
        is_mount_point(&self.mount_paths(image).1)
    }
}

fn mount_err(e: MountError) -> StoreError {
    StoreError::Other(e.to_string())
}

/// True when `path` is a mount point listed in /proc/self/mountinfo.
pub(crate) fn is_mount_point(path: &Path) -> bool {
    let Ok(canon) = path.canonicalize() else {
        return false;
    };
    let Ok(info) = std::fs::read_to_string("/proc/self/mountinfo") else {
        return false;
    };
    let wanted = canon.to_string_lossy().replace(' ', "\\040");
    info.lines()
        .any(|l| l.split(' ').nth(4) == Some(wanted.as_str()))
}
