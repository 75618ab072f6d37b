//! Persistent read-only mounts of images (`rbuild mount NAME`): each is recorded as
//! `mounts/<image-id-hex>.json` beside its mount point `mounts/<image-id-hex>/merged`, so a later
//! process (`rbuild umount NAME`) finds it, and prune keeps the image's blobs and layers.

use super::error::{IoContext, Result, StoreError};
use super::fsutil::{atomic_write, ensure_dir, random_hex, remove_any};
use super::Store;
use crate::image::Image;
use crate::mount::fuse::server::{self as fuse_server, ServerCommand};
use crate::mount::{
    fuse, mount_union, mount_union_served, server_pid, unmount_target, Driver, MountError,
    MountSpec,
};
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
    /// The process serving a FUSE mount (see [`crate::mount::fuse::server`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub server_pid: Option<u32>,
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
    /// [`Store::image_mounts`]) rather than an unrecorded mount. The FUSE driver is refused: its
    /// server would die with this process (see [`Store::mount_image_served`]).
    pub fn mount_image(&self, image: &Image, driver: Driver) -> Result<PathBuf> {
        self.mount_image_with(image, driver, None)
    }

    /// [`Store::mount_image`], where a FUSE mount is served by a separate process started with
    /// `server`; its pid is kept in the record, and the server ends itself when the record goes.
    pub fn mount_image_served(
        &self,
        image: &Image,
        driver: Driver,
        server: &ServerCommand,
    ) -> Result<PathBuf> {
        self.mount_image_with(image, driver, Some(server))
    }

    fn mount_image_with(
        &self,
        image: &Image,
        driver: Driver,
        server: Option<&ServerCommand>,
    ) -> Result<PathBuf> {
        let layers = self.image_layer_dirs(image)?;
        let _lock = self.lock()?;
        let (record_path, target) = self.mount_paths(image);
        // A mount whose server was killed fails every access; clear it first.
        fuse::detach_stale(&target);
        let write_record = |driver: Driver, server_pid: Option<u32>| -> Result<()> {
            let record = MountRecord {
                image_id: image.id().to_string(),
                manifest: image.manifest_digest.to_string(),
                layers: image.diff_ids().iter().map(|d| d.to_string()).collect(),
                target: target.clone(),
                driver: driver.to_string(),
                server_pid,
            };
            let data = serde_json::to_vec_pretty(&record)
                .map_err(|e| StoreError::json("mount record", e))?;
            let tmp = self.session_dir().join(format!("mount-{}", random_hex(6)));
            atomic_write(&tmp, &record_path, &data)
        };
        if is_mount_point(&target) {
            if !record_path.exists() {
                write_record(driver, None)?;
            }
            return Ok(target);
        }
        ensure_dir(&target, 0o755)?;
        write_record(driver, None)?;
        let spec = MountSpec {
            layers,
            upper: None,
            work: None,
            target: target.clone(),
        };
        let mounted = match server {
            Some(server) => {
                let mut command = server.clone();
                if command.log.is_none() {
                    command.log = target.parent().map(|dir| dir.join("fuse.log"));
                }
                mount_union_served(&spec, driver, &command, Some(&record_path))
            }
            None => mount_union(&spec, driver),
        };
        let mount = match mounted {
            Ok(m) => m,
            Err(e) => {
                let _ = remove_any(&record_path);
                return Err(mount_err(e));
            }
        };
        let server_pid = server_pid(&mount);
        if mount.driver() == Driver::Fuse && server_pid.is_none() {
            // A FUSE mount is served by this process and would die with it.
            drop(mount);
            let _ = remove_any(&record_path);
            return Err(StoreError::Other(format!(
                "cannot keep {} mounted with the FUSE driver: its server lives only as long as this process; use --storage-driver overlay",
                target.display()
            )));
        }
        if mount.driver() != driver || server_pid.is_some() {
            write_record(mount.driver(), server_pid)?;
        }
        Ok(mount.persist())
    }

    /// Unmounts a mount made by [`Store::mount_image`] and removes its record. Returns false
    /// when the image was not mounted.
    pub fn unmount_image(&self, image: &Image) -> Result<bool> {
        let _lock = self.lock()?;
        let (record_path, target) = self.mount_paths(image);
        let server = read_record(&record_path).and_then(|r| r.server_pid);
        // A mount whose server was killed is dead (ENOTCONN): detaching it is all there is to do.
        let was_dead = fuse::detach_stale(&target);
        let was_mounted = was_dead || is_mount_point(&target);
        let mut busy = false;
        if was_mounted && !was_dead {
            match unmount_target(&target) {
                Ok(()) => {}
                Err(MountError::Busy(_)) => busy = true,
                Err(e) => return Err(mount_err(e)),
            }
        }
        if let Some(pid) = server {
            // It exits once its mount is gone. One serving a busy, lazily detached mount would
            // serve its users on: it is told to stop (it cuts them off after a short grace).
            if busy || !fuse_server::wait_gone(pid, &target, SERVER_EXIT_WAIT) {
                fuse_server::end_server(pid, &target, SERVER_EXIT_WAIT);
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
            // A mount whose server was killed is dead: detach it, then drop its record.
            fuse::detach_stale(&record.target);
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

/// How long `umount` waits for a FUSE server to exit before telling it to stop.
const SERVER_EXIT_WAIT: std::time::Duration = std::time::Duration::from_secs(3);

fn read_record(path: &Path) -> Option<MountRecord> {
    std::fs::read(path)
        .ok()
        .and_then(|data| serde_json::from_slice(&data).ok())
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
