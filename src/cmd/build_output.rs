//! `rbuild build --output` (`-o`): the built filesystem exported as BuildKit does, to a local
//! directory (`type=local,dest=DIR`, or just `DIR`) or as a tar archive (`type=tar,dest=FILE`,
//! `-` for stdout). The image is stored and tagged as usual.

use std::fs;
use std::io::{self, Write};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use anyhow::{bail, Context};
use rbuild_layerfs::mount::{mount_union, Driver, MountSpec};
use rbuild_layerfs::Store;

/// Where `--output` sends the filesystem.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Output {
    /// A directory (created when missing).
    Local(PathBuf),
    /// A tar archive; `None` writes it to stdout.
    Tar(Option<PathBuf>),
}

impl Output {
    /// Parses `type=local,dest=DIR`, `type=tar,dest=FILE|-` or a bare `DIR` (`-` is a tar on
    /// stdout, as docker).
    pub fn parse(spec: &str) -> anyhow::Result<Output> {
        if !spec.contains('=') {
            return Ok(if spec == "-" {
                Output::Tar(None)
            } else {
                Output::Local(PathBuf::from(spec))
            });
        }
        let mut kind = None;
        let mut dest = None;
        for part in spec.split(',') {
            match part.split_once('=') {
                Some(("type", v)) => kind = Some(v.to_string()),
                Some(("dest", v)) => dest = Some(v.to_string()),
                _ => bail!("--output {spec}: unknown part {part:?}: use type=local|tar,dest=PATH"),
            }
        }
        let dest = dest.with_context(|| format!("--output {spec}: dest=PATH is required"))?;
        match kind.as_deref() {
            Some("local") => Ok(Output::Local(PathBuf::from(dest))),
            Some("tar") => Ok(Output::Tar((dest != "-").then(|| PathBuf::from(dest)))),
            Some(other) => {
                bail!("--output {spec}: type={other} is not supported: use local or tar")
            }
            None => bail!("--output {spec}: type=local or type=tar is required"),
        }
    }

    /// Writes the filesystem of image `image_id` of `store` here.
    pub fn export(&self, store: &Store, image_id: &str, driver: Driver) -> anyhow::Result<()> {
        let image = store.resolve_image(image_id)?;
        let mut dirs = store.image_layer_dirs(&image)?;
        let layers = Layers(dirs.clone());
        let scratch = store.scratch_dir("export")?;
        let merged = scratch.path().join("merged");
        fs::create_dir(&merged)?;
        let mount = match dirs.len() {
            0 => None,
            1 => None,
            _ => Some(
                mount_union(
                    &MountSpec {
                        layers: dirs.clone(),
                        upper: None,
                        work: None,
                        target: merged.clone(),
                    },
                    driver,
                )
                .context("mounting the built image to export it")?,
            ),
        };
        let root = match (&mount, dirs.len()) {
            (Some(m), _) => m.target().to_path_buf(),
            (None, 1) => dirs.remove(0),
            (None, _) => merged.clone(),
        };
        let result = match self {
            Output::Local(dest) => copy_tree(&root, &layers, dest)
                .with_context(|| format!("--output: writing {}", dest.display())),
            Output::Tar(Some(path)) => fs::File::create(path)
                .map_err(anyhow::Error::from)
                .and_then(|f| write_tar(&root, &layers, io::BufWriter::new(f)))
                .with_context(|| format!("--output: writing {}", path.display())),
            Output::Tar(None) => {
                write_tar(&root, &layers, io::stdout().lock()).context("--output: stdout")
            }
        };
        drop(mount);
        result
    }
}

/// The image's layer dirs, lowest first: where a file the merged tree shows comes from.
struct Layers(Vec<PathBuf>);

impl Layers {
    /// Opens file `rel` of the merged tree at `root` for reading. Without root, a file whose
    /// mode denies its owner reading (mode 000, as Fedora's /etc/shadow) cannot be opened
    /// through the mount: it is opened in the topmost layer that holds it (the one the merged
    /// tree shows), given the read bit for that instant, as root reads it through
    /// CAP_DAC_OVERRIDE.
    fn open(&self, root: &Path, rel: &Path) -> io::Result<fs::File> {
        match fs::File::open(root.join(rel)) {
            Err(e)
                if e.raw_os_error() == Some(libc::EACCES)
                    && rbuild_layerfs::rootless::is_rootless() =>
            {
                let Some(layer) = self
                    .0
                    .iter()
                    .rev()
                    .find(|l| l.join(rel).symlink_metadata().is_ok())
                else {
                    return Err(e);
                };
                rbuild_layerfs::rootless::open_as_owner(
                    fs::OpenOptions::new().read(true),
                    &layer.join(rel),
                    0o400,
                )
            }
            other => other,
        }
    }
}

/// The tree below `root` as a tar archive (owners, modes, times and symlinks kept).
fn write_tar(root: &Path, layers: &Layers, out: impl Write) -> anyhow::Result<()> {
    let mut tar = tar::Builder::new(out);
    tar.follow_symlinks(false);
    tar.mode(tar::HeaderMode::Complete);
    for entry in walkdir::WalkDir::new(root).min_depth(1).sort_by_file_name() {
        let entry = entry?;
        let rel = entry.path().strip_prefix(root)?;
        let kind = entry.file_type();
        let appended = if kind.is_dir() || kind.is_symlink() {
            tar.append_path_with_name(entry.path(), rel)
        } else {
            // Its header from the path's metadata (type, mode, owner, times, device numbers),
            // its data from wherever it can be read. tar's own append_path_with_name fails on
            // fifos and devices ('paths in archives must be relative when setting path for').
            let meta = entry.path().symlink_metadata()?;
            let mut header = tar::Header::new_gnu();
            header.set_metadata_in_mode(&meta, tar::HeaderMode::Complete);
            if kind.is_file() {
                layers
                    .open(root, rel)
                    .and_then(|mut file| tar.append_data(&mut header, rel, &mut file))
            } else {
                header.set_size(0);
                tar.append_data(&mut header, rel, io::empty())
            }
        };
        appended.with_context(|| rel.display().to_string())?;
    }
    tar.into_inner()?.flush()?;
    Ok(())
}

/// Copies the tree below `root` into `dest`: directories, files, symlinks, fifos and devices,
/// with modes and times, and owners when run as root.
fn copy_tree(root: &Path, layers: &Layers, dest: &Path) -> anyhow::Result<()> {
    fs::create_dir_all(dest)?;
    let as_root = rustix::process::geteuid().is_root();
    let mut dirs = Vec::new();
    for entry in walkdir::WalkDir::new(root).min_depth(1).sort_by_file_name() {
        let entry = entry?;
        let rel = entry.path().strip_prefix(root)?;
        copy_entry(root, layers, rel, dest, as_root, &mut dirs)
            .with_context(|| rel.display().to_string())?;
    }
    // Directory modes and times last: a read-only directory is filled first (without root
    // nothing can be written into it), and filling a directory changes its mtime.
    for (dir, meta) in dirs.iter().rev() {
        fs::set_permissions(dir, fs::Permissions::from_mode(meta.mode() & 0o7777))?;
        set_times(dir, meta)?;
    }
    Ok(())
}

/// Copies entry `rel` of `root` to `dest` (see [`copy_tree`]); a directory is left writable
/// and pushed to `dirs` for its mode and times.
fn copy_entry(
    root: &Path,
    layers: &Layers,
    rel: &Path,
    dest: &Path,
    as_root: bool,
    dirs: &mut Vec<(PathBuf, fs::Metadata)>,
) -> anyhow::Result<()> {
    {
        let to = dest.join(rel);
        let meta = root.join(rel).symlink_metadata()?;
        let kind = meta.file_type();
        // Whatever is in the way goes, a symlink too (never followed: a symlink left by an
        // earlier export would otherwise let this one write outside `dest`). Parents come
        // first in the walk, so every parent of `to` is a real directory by now.
        if let Ok(existing) = to.symlink_metadata() {
            if !(kind.is_dir() && existing.is_dir()) {
                fs::remove_file(&to).or_else(|_| fs::remove_dir_all(&to))?;
            }
        }
        if kind.is_dir() {
            fs::create_dir_all(&to)?;
            fs::set_permissions(&to, fs::Permissions::from_mode(0o700))?;
            dirs.push((to.clone(), meta.clone()));
        } else if kind.is_symlink() {
            std::os::unix::fs::symlink(fs::read_link(root.join(rel))?, &to)?;
        } else if kind.is_file() {
            let mut from = layers.open(root, rel)?;
            let mut file = fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(&to)?;
            io::copy(&mut from, &mut file)?;
        } else {
            let mode = rustix::fs::Mode::from_raw_mode(meta.mode());
            let file_type = rustix::fs::FileType::from_raw_mode(meta.mode());
            rustix::fs::mknodat(rustix::fs::CWD, &to, file_type, mode, meta.rdev())?;
        }
        if as_root {
            rustix::fs::chownat(
                rustix::fs::CWD,
                &to,
                Some(rustix::fs::Uid::from_raw(meta.uid())),
                Some(rustix::fs::Gid::from_raw(meta.gid())),
                rustix::fs::AtFlags::SYMLINK_NOFOLLOW,
            )?;
        }
        if !kind.is_symlink() && !kind.is_dir() {
            fs::set_permissions(&to, fs::Permissions::from_mode(meta.mode() & 0o7777))?;
            set_times(&to, &meta)?;
        }
    }
    Ok(())
}

fn set_times(path: &Path, meta: &fs::Metadata) -> io::Result<()> {
    let ts = |s: i64, ns: i64| rustix::fs::Timespec {
        tv_sec: s,
        tv_nsec: ns as _,
    };
    rustix::fs::utimensat(
        rustix::fs::CWD,
        path,
        &rustix::fs::Timestamps {
            last_access: ts(meta.atime(), meta.atime_nsec()),
            last_modification: ts(meta.mtime(), meta.mtime_nsec()),
        },
        rustix::fs::AtFlags::SYMLINK_NOFOLLOW,
    )?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_docker_forms() {
        assert_eq!(Output::parse("out").unwrap(), Output::Local("out".into()));
        assert_eq!(Output::parse("-").unwrap(), Output::Tar(None));
        assert_eq!(
            Output::parse("type=local,dest=/x").unwrap(),
            Output::Local("/x".into())
        );
        assert_eq!(
            Output::parse("type=tar,dest=a.tar").unwrap(),
            Output::Tar(Some("a.tar".into()))
        );
        assert_eq!(Output::parse("type=tar,dest=-").unwrap(), Output::Tar(None));
        for (bad, want) in [
            ("type=oci,dest=x", "type=oci is not supported"),
            ("type=local", "dest=PATH is required"),
            ("dest=x", "type=local or type=tar is required"),
            ("type=local,dest=x,color=red", "unknown part"),
        ] {
            let err = Output::parse(bad).unwrap_err().to_string();
            assert!(err.contains(want), "{bad}: {err}");
        }
    }
}
