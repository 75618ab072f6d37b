//! The content store at `$RBUILD_ROOT`: an OCI image layout (oci-layout, index.json,
//! blobs/sha256) plus unpacked layers, build cache, containers and tmp space.
//!
//! One job per file: verified blob ingest, the store-wide lock, tags in index.json, name
//! normalisation, process sessions and the cleanup of incomplete work, scratch dirs, image
//! mounts, reachability, the journal of unsynced layer dirs with its crash recovery and
//! compaction, and the check, prune and df maintenance commands.

mod check;
mod compact;
mod df;
mod error;
mod fsutil;
mod index;
mod ingest;
mod lock;
mod mounts;
mod prune;
mod recover;
mod reference;
mod roots;
mod scratch;
mod session;
mod unsynced;

pub use check::CheckReport;
pub(crate) use df::tree_size;
pub use df::DiskUsage;
pub use error::{Result, StoreError};
pub use index::{descriptor_digest, descriptor_ref_name, REF_NAME};
pub use ingest::{Ingest, SealedBlob};
pub use lock::StoreLock;
pub use mounts::MountRecord;
pub use prune::PruneReport;
pub use recover::{RecoveryReport, KILL_DURING_RECOVERY_ENV};
pub use reference::{normalize_tag, split_tag};
pub use scratch::ScratchDir;

use error::IoContext;
use fsutil::{atomic_write, ensure_dir, random_hex};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// Sub-directories every store has.
const LAYOUT_DIRS: &[&str] = &[
    "blobs/sha256",
    "layers",
    "cache",
    "containers",
    "tmp",
    "mounts",
    "state",
];

/// An open content store. Cheap to clone; the process's session ends when the last clone drops.
#[derive(Debug, Clone)]
pub struct Store {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    root: PathBuf,
    session: session::Session,
    incomplete_removed: usize,
    recovery: std::sync::OnceLock<RecoveryReport>,
}

impl Store {
    /// Opens the store at `root`, creating the layout (root mode 0700) if needed, removes
    /// the incomplete work of processes that died, and re-creates the layers published before
    /// a crash or reboot from their blobs (see [`Store::recovered_at_open`]).
    pub fn open(root: &Path) -> Result<Store> {
        ensure_dir(root, 0o700)?;
        let meta = std::fs::metadata(root).at("stat store root", root)?;
        if meta.permissions().mode() & 0o7777 != 0o700 {
            std::fs::set_permissions(root, std::fs::Permissions::from_mode(0o700))
                .at("chmod 0700", root)?;
        }
        for dir in LAYOUT_DIRS {
            ensure_dir(&root.join(dir), 0o700)?;
        }
        let root = root.canonicalize().at("resolve store root", root)?;
        let tmp = root.join("tmp");
        let session = start_session(&tmp)?;
        let incomplete_removed = session::clean_dead_sessions(&tmp, &session)?;
        let store = Store {
            inner: Arc::new(Inner {
                root,
                session,
                incomplete_removed,
                recovery: std::sync::OnceLock::new(),
            }),
        };
        store.init_layout_files()?;
        let recovery = store.settle_unsynced_layers();
        let _ = store.inner.recovery.set(recovery);
        Ok(store)
    }

    /// The store root directory.
    pub fn root(&self) -> &Path {
        &self.inner.root
    }

    /// Takes the exclusive store-wide lock (blocks until free). Released when the guard drops.
    /// Not re-entrant: do not call other locking store methods while holding it; use their
    /// `_locked` variants.
    pub fn lock(&self) -> Result<StoreLock> {
        StoreLock::acquire(&self.root().join("lock"))
    }

    /// How many incomplete items of dead processes were removed when this store was opened.
    pub fn incomplete_removed_at_open(&self) -> usize {
        self.inner.incomplete_removed
    }

    /// What this open did about layers published before a crash or reboot.
    pub fn recovered_at_open(&self) -> &RecoveryReport {
        static NONE: RecoveryReport = RecoveryReport {
            recreated: Vec::new(),
            removed: Vec::new(),
            unrecovered: Vec::new(),
        };
        self.inner.recovery.get().unwrap_or(&NONE)
    }

    /// Takes the store lock if it is free right now; `None` when another process holds it.
    pub fn try_lock(&self) -> Result<Option<StoreLock>> {
        StoreLock::try_acquire(&self.root().join("lock"))
    }

    /// This process's private work directory under tmp/.
    pub(crate) fn session_dir(&self) -> &Path {
        self.inner.session.dir()
    }

    /// Start times of other processes that have the store open right now.
    pub(crate) fn other_live_sessions(&self) -> Result<Vec<std::time::SystemTime>> {
        session::live_sessions(&self.root().join("tmp"), &self.inner.session)
    }

    /// Writes oci-layout and an empty index.json when they are missing.
    fn init_layout_files(&self) -> Result<()> {
        let layout = self.root().join("oci-layout");
        let index = self.root().join("index.json");
        if layout.is_file() && index.is_file() {
            return Ok(());
        }
        let lock = self.lock()?;
        if !layout.is_file() {
            let tmp = self
                .session_dir()
                .join(format!("oci-layout-{}", random_hex(4)));
            atomic_write(&tmp, &layout, br#"{"imageLayoutVersion":"1.0.0"}"#)?;
        }
        if !index.is_file() {
            self.write_index_locked(&lock, &index::empty_index()?)?;
        }
        Ok(())
    }
}

/// Starts a session, retrying when a concurrent cleanup removed the pending lock file.
fn start_session(tmp: &Path) -> Result<session::Session> {
    let mut last = None;
    for _ in 0..5 {
        match session::Session::start(tmp) {
            Ok(s) => return Ok(s),
            Err(e) => last = Some(e),
        }
    }
    Err(last.unwrap_or_else(|| StoreError::Other("could not start a store session".into())))
}
