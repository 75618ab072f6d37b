//! Setting up a RUN's `--mount`s (see [`super::run_mount`]) as bind mounts of its sandbox, and
//! the guards that keep their sources alive until the command has finished.

use std::fs;
use std::io;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use rbuild_layerfs::mount::{mount_union, MountSpec};
use rbuild_runner::BindMount;

use super::fswrite::RootWriter;
use super::run_mount::{RunMount, Sharing};
use super::step::{BindSource, PreparedMount};
use super::{BuildError, Builder};
use crate::cache::LayerRef;
use crate::context::{EntryKind, SourceTree};

/// Directory of the store that holds `type=cache` mounts, one subdirectory per id.
const CACHE_MOUNTS: &str = "cache/run-mounts";

/// Whatever must outlive the command: scratch dirs, union mounts, cache locks.
pub(crate) type MountGuards = Vec<Box<dyn std::any::Any>>;

/// What a RUN's mounts give its command: bind mounts, `NAME=VALUE` environment entries (secrets
/// with `env=`), and the guards to drop once the command has finished.
pub(crate) type RunMountSetup = (Vec<BindMount>, Vec<String>, MountGuards);

impl Builder<'_, '_> {
    /// The bind mounts and environment entries for `mounts`, and the guards to drop once the
    /// command has finished. `fail` turns a message into the step's error.
    pub(crate) fn set_up_run_mounts(
        &mut self,
        mounts: &[PreparedMount],
        fail: &dyn Fn(String) -> BuildError,
    ) -> Result<RunMountSetup, BuildError> {
        let mut binds = Vec::new();
        let mut env = Vec::new();
        let mut guards: MountGuards = Vec::new();
        for prepared in mounts {
            let what = prepared.mount.key_text();
            let at = |e: io::Error| fail(format!("--mount {what}: {e}"));
            let bind = match (&prepared.mount, &prepared.source) {
                (RunMount::Bind { target, rw, .. }, BindSource::Context(trees)) => {
                    let tree = match trees.as_slice() {
                        [tree] => tree,
                        _ => {
                            return Err(fail(format!(
                                "--mount {what}: the source must name exactly one path of the \
                                 context ({} matched)",
                                trees.len()
                            )))
                        }
                    };
                    let scratch = self.scratch("run-bind")?;
                    // A copy of what the context holds there, dockerignore applied: binding the
                    // directory itself would show ignored files (and let rw writes through).
                    let copy = scratch.path().join("source");
                    materialize(self.ctx.root(), tree, &copy).map_err(at)?;
                    guards.push(Box::new(scratch));
                    BindMount {
                        source: copy,
                        target: target.clone(),
                        readonly: !rw,
                    }
                }
                (
                    RunMount::Bind {
                        target, source, rw, ..
                    },
                    BindSource::Layers(layers),
                ) => {
                    let root = self.mount_layers(layers, *rw, &mut guards)?;
                    let reader = RootWriter::open(&root).map_err(at)?;
                    let path = format!("/{}", source.trim_start_matches('/'));
                    let host = reader.host_path_of(&path).map_err(|_| {
                        fail(format!(
                            "--mount {what}: {source}: no such file or directory in the from= source"
                        ))
                    })?;
                    BindMount {
                        source: host,
                        target: target.clone(),
                        readonly: !rw,
                    }
                }
                (
                    RunMount::Cache {
                        target,
                        id,
                        sharing,
                        mode,
                        uid,
                        gid,
                    },
                    _,
                ) => {
                    let dir = self
                        .cache_mount_dir(id, *sharing, &mut guards)
                        .map_err(at)?;
                    let dir = match dir {
                        Some(dir) => dir,
                        // private, and another build holds it: a fresh one of our own.
                        None => {
                            let scratch = self.scratch("run-cache")?;
                            let dir = scratch.path().join("data");
                            guards.push(Box::new(scratch));
                            dir
                        }
                    };
                    if !dir.exists() {
                        make_dir(&dir, *mode, *uid, *gid).map_err(at)?;
                    }
                    BindMount {
                        source: dir,
                        target: target.clone(),
                        readonly: false,
                    }
                }
                (RunMount::Tmpfs { target }, _) => {
                    let scratch = self.scratch("run-tmpfs")?;
                    let dir = scratch.path().join("tmp");
                    make_dir(&dir, 0o1777, 0, 0).map_err(at)?;
                    guards.push(Box::new(scratch));
                    BindMount {
                        source: dir,
                        target: target.clone(),
                        readonly: false,
                    }
                }
                (
                    RunMount::Secret {
                        target,
                        env: env_name,
                        id,
                        required,
                        mode,
                        uid,
                        gid,
                    },
                    _,
                ) => {
                    let Some(value) = self.opts.secrets.0.get(id) else {
                        if *required {
                            return Err(fail(format!(
                                "secret {id} is required but was not given: pass \
                                 --secret id={id},src=FILE"
                            )));
                        }
                        continue;
                    };
                    if let Some(name) = env_name {
                        // Never the value in the message.
                        let text = std::str::from_utf8(value)
                            .ok()
                            .filter(|v| !v.contains('\0'))
                            .ok_or_else(|| {
                                fail(format!(
                                    "secret {id} cannot be the environment variable {name}: its \
                                     value is not UTF-8 text without NUL bytes"
                                ))
                            })?;
                        env.push(format!("{name}={text}"));
                    }
                    let Some(target) = target else {
                        continue;
                    };
                    // In memory, as BuildKit's tmpfs: never on the store's disk (a killed
                    // build would leave it there, and its blocks after that).
                    let file = match SecretDir::create() {
                        Some(dir) => {
                            let file = dir.0.join("secret");
                            guards.push(Box::new(dir));
                            file
                        }
                        None => {
                            let scratch = self.scratch("run-secret")?;
                            let file = scratch.path().join("secret");
                            guards.push(Box::new(scratch));
                            file
                        }
                    };
                    fs::OpenOptions::new()
                        .write(true)
                        .create_new(true)
                        .mode(0o600)
                        .open(&file)
                        .and_then(|mut f| std::io::Write::write_all(&mut f, value))
                        .map_err(at)?;
                    set_owner_and_mode(&file, *mode, *uid, *gid).map_err(at)?;
                    BindMount {
                        source: file,
                        target: target.clone(),
                        readonly: true,
                    }
                }
                (RunMount::Bind { .. }, BindSource::None) => {
                    unreachable!("bind mounts are prepared with their source")
                }
            };
            binds.push(bind);
        }
        Ok((binds, env, guards))
    }

    fn scratch(&self, prefix: &str) -> Result<rbuild_layerfs::store::ScratchDir, BuildError> {
        self.store
            .scratch_dir(prefix)
            .map_err(|e| BuildError::store("creating a scratch dir", e))
    }

    /// The merged tree of `layers`: read-only, or writable with a throw-away upper dir.
    fn mount_layers(
        &mut self,
        layers: &[LayerRef],
        writable: bool,
        guards: &mut MountGuards,
    ) -> Result<PathBuf, BuildError> {
        let mut dirs = self.layer_dirs(layers)?;
        let scratch = self.scratch("run-from")?;
        let dir = |name: &str| -> Result<PathBuf, BuildError> {
            let p = scratch.path().join(name);
            fs::create_dir_all(&p).map_err(|source| BuildError::Io {
                path: p.clone(),
                source,
            })?;
            Ok(p)
        };
        if dirs.is_empty() {
            dirs.push(dir("empty")?);
        }
        if !writable && dirs.len() == 1 {
            // One layer dir is the tree already (the bind is read-only).
            let only = dirs.remove(0);
            guards.push(Box::new(scratch));
            return Ok(only);
        }
        let (upper, work) = if writable {
            (Some(dir("upper")?), Some(dir("work")?))
        } else {
            (None, None)
        };
        let mount = mount_union(
            &MountSpec {
                layers: dirs,
                upper,
                work,
                target: dir("merged")?,
            },
            self.opts.driver,
        )
        .map_err(|e| BuildError::store("mounting a RUN --mount from= source", e))?;
        let root = mount.target().to_path_buf();
        // Dropped in order: the mount, then its scratch dir.
        guards.push(Box::new(mount));
        guards.push(Box::new(scratch));
        Ok(root)
    }

    /// The directory of cache mount `id`, locked as `sharing` asks (the lock is pushed to
    /// `guards`); `None` for a private mount that another build holds.
    fn cache_mount_dir(
        &self,
        id: &str,
        sharing: Sharing,
        guards: &mut MountGuards,
    ) -> io::Result<Option<PathBuf>> {
        use sha2::Digest as _;
        let name = hex::encode(sha2::Sha256::digest(id.as_bytes()));
        let base = self.store.root().join(CACHE_MOUNTS).join(&name[..32]);
        fs::create_dir_all(&base)?;
        let lock = fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(base.join("lock"))?;
        let mode = match sharing {
            Sharing::Shared => rustix::fs::FlockOperation::LockShared,
            Sharing::Locked => rustix::fs::FlockOperation::LockExclusive,
            Sharing::Private => rustix::fs::FlockOperation::NonBlockingLockExclusive,
        };
        match rustix::fs::flock(&lock, mode) {
            Ok(()) => {}
            Err(rustix::io::Errno::WOULDBLOCK) => return Ok(None),
            Err(e) => return Err(e.into()),
        }
        guards.push(Box::new(lock));
        Ok(Some(base.join("data")))
    }
}

/// Where secret files go when it is a memory filesystem (it is on every systemd system).
const SECRET_BASE: &str = "/dev/shm";

/// A directory of this process's for a secret file, in [`SECRET_BASE`] (mode 0700, named by
/// this process's pid); removed on drop, or by the next [`SecretDir::create`] after a kill.
struct SecretDir(PathBuf);

impl SecretDir {
    /// A new one; `None` when [`SECRET_BASE`] is not a tmpfs or cannot be written.
    fn create() -> Option<SecretDir> {
        use std::os::unix::fs::DirBuilderExt;
        let base = Path::new(SECRET_BASE);
        let fs = rustix::fs::statfs(base).ok()?;
        // TMPFS_MAGIC.
        if fs.f_type as u64 != 0x0102_1994 {
            return None;
        }
        rbuild_runner::stale::remove_dirs_of_dead_processes(base, "rbuild-secret-");
        let me = std::process::id();
        (0..16u32).find_map(|i| {
            let nanos = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.subsec_nanos());
            let dir = base.join(format!("rbuild-secret-{me}-{:x}", nanos ^ (i << 24)));
            fs::DirBuilder::new()
                .mode(0o700)
                .create(&dir)
                .ok()
                .map(|()| SecretDir(dir))
        })
    }
}

impl Drop for SecretDir {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

/// Creates directory `dir` with `mode`, owned by `uid`:`gid` (as far as the caller may).
fn make_dir(dir: &Path, mode: u32, uid: u32, gid: u32) -> io::Result<()> {
    fs::create_dir_all(dir)?;
    set_owner_and_mode(dir, mode, uid, gid)
}

/// chown (skipped where a rootless caller may not) then chmod: a chown clears setuid bits.
fn set_owner_and_mode(path: &Path, mode: u32, uid: u32, gid: u32) -> io::Result<()> {
    if let Err(e) = std::os::unix::fs::chown(path, Some(uid), Some(gid)) {
        if !rbuild_layerfs::rootless::skippable_chown_error(&e) {
            return Err(e);
        }
    }
    fs::set_permissions(path, fs::Permissions::from_mode(mode))
}

/// Writes the entries of context source `tree` (read below `context`) at `dest`: directories,
/// file copies and symlinks, with their modes, owned by root. Directories get their modes last,
/// once filled: without root a read-only (0555) one could not be filled.
fn materialize(context: &Path, tree: &SourceTree, dest: &Path) -> io::Result<()> {
    let base = context.join(&tree.rel);
    let mut dirs = Vec::new();
    for entry in &tree.entries {
        let (from, to) = if entry.rel.is_empty() {
            (base.clone(), dest.to_path_buf())
        } else {
            (base.join(&entry.rel), dest.join(&entry.rel))
        };
        match &entry.kind {
            EntryKind::Dir => {
                fs::create_dir_all(&to)?;
                dirs.push((to, entry.mode));
                continue;
            }
            EntryKind::File(_) => {
                fs::copy(&from, &to)?;
            }
            EntryKind::Symlink(target) => std::os::unix::fs::symlink(target, &to)?,
        }
        if !matches!(entry.kind, EntryKind::Symlink(_)) {
            set_owner_and_mode(&to, entry.mode, 0, 0)?;
        }
    }
    for (dir, mode) in dirs.iter().rev() {
        set_owner_and_mode(dir, *mode, 0, 0)?;
    }
    Ok(())
}
