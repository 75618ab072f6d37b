//! Kernel overlayfs mounts.
//!
//! Options are always `redirect_dir=off,index=off,metacopy=off` so an upper dir stays a plain,
//! self-describing layer. Short chains use mount(2) with a legacy option string; when that
//! string would not fit in a page (long chains, e.g. 128 layers) or a path needs escaping, the
//! new mount API is used (fsopen/fsconfig with one `lowerdir+` per layer, fsmount, move_mount).

use std::io::Read;
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

use rustix::mount::{
    fsconfig_create, fsconfig_set_string, fsmount, fsopen, move_mount, FsMountFlags, FsOpenFlags,
    MountAttrFlags, MountFlags, MoveMountFlags,
};

use super::{Driver, MountError, MountSpec, Result, UnionMount};

/// Options that keep upper dirs self-describing.
const FIXED_OPTIONS: [(&str, &str); 3] = [
    ("redirect_dir", "off"),
    ("index", "off"),
    ("metacopy", "off"),
];

/// mount(2) copies at most one page of option data, including the terminating NUL.
const LEGACY_OPTIONS_MAX: usize = 4095;

/// Mounts `spec` with kernel overlayfs.
pub(super) fn mount(spec: &MountSpec) -> Result<UnionMount> {
    let spec = &distinct_layers(spec);
    match (spec.layers.len(), &spec.upper) {
        // Overlay needs a lower layer; with none, the upper dir is the whole filesystem.
        (0, Some(upper)) => bind(upper, &spec.target, false)?,
        // Overlay needs two lower layers when read-only; one layer is its own view.
        (1, None) => bind(&spec.layers[0], &spec.target, true)?,
        _ => match legacy_options(spec) {
            Some(options) => mount_legacy(&options, &spec.target)?,
            None => mount_fsconfig(spec)?,
        },
    }
    Ok(UnionMount::new(spec.target.clone(), Driver::Overlay, None))
}

/// The kernel's reason for refusing `spec` (e.g. ": overlay: filesystem on /u not supported
/// as upperdir"), read from a mount context configured like [`mount`] does but never mounted;
/// empty when the kernel gives none. mount(2) only writes its reason to the kernel log.
pub(super) fn explain(spec: &MountSpec) -> String {
    let spec = &distinct_layers(spec);
    let Ok(fs) = fsopen("overlay", FsOpenFlags::FSOPEN_CLOEXEC) else {
        return String::new();
    };
    let configured = (|| -> rustix::io::Result<()> {
        fsconfig_set_string(&fs, "source", "overlay")?;
        for layer in spec.layers.iter().rev() {
            fsconfig_set_string(&fs, "lowerdir+", layer.as_path())?;
        }
        if let (Some(upper), Some(work)) = (&spec.upper, &spec.work) {
            fsconfig_set_string(&fs, "upperdir", upper.as_path())?;
            fsconfig_set_string(&fs, "workdir", work.as_path())?;
        }
        for (key, value) in FIXED_OPTIONS {
            fsconfig_set_string(&fs, key, value)?;
        }
        // Creates (and, when `fs` is closed, drops) a superblock that is never mounted.
        fsconfig_create(&fs)
    })();
    match configured {
        Ok(()) => String::new(),
        Err(_) => context_log(&fs),
    }
}

/// `spec` with each layer dir listed once, at its topmost place. Overlayfs refuses a lowerdir
/// given twice (ELOOP), yet a chain can hold one layer twice: two steps whose changes are
/// byte-identical (e.g. `RUN true` twice in a build with clamped timestamps) give one diff_id.
/// Dropping the lower copy changes nothing: every name, whiteout and opaque dir it holds is
/// already decided by the identical copy above it.
fn distinct_layers(spec: &MountSpec) -> MountSpec {
    let mut seen = std::collections::HashSet::new();
    let mut layers: Vec<_> = spec
        .layers
        .iter()
        .rev()
        .filter(|layer| seen.insert(layer.as_path()))
        .cloned()
        .collect();
    layers.reverse();
    MountSpec {
        layers,
        ..spec.clone()
    }
}

fn mount_error(target: &Path, source: std::io::Error, detail: String) -> MountError {
    MountError::Mount {
        driver: Driver::Overlay,
        target: target.to_path_buf(),
        cause: source,
        detail,
    }
}

/// The legacy option string, or `None` when it would overflow a page or a path needs escaping.
fn legacy_options(spec: &MountSpec) -> Option<String> {
    let plain = |p: &Path| -> Option<String> {
        let bytes = p.as_os_str().as_bytes();
        if bytes.iter().any(|b| matches!(b, b',' | b':' | b'\\')) {
            return None;
        }
        p.to_str().map(str::to_string)
    };
    let mut lower = Vec::with_capacity(spec.layers.len());
    for layer in spec.layers.iter().rev() {
        lower.push(plain(layer)?);
    }
    let mut options = format!("lowerdir={}", lower.join(":"));
    if let (Some(upper), Some(work)) = (&spec.upper, &spec.work) {
        options.push_str(&format!(
            ",upperdir={},workdir={}",
            plain(upper)?,
            plain(work)?
        ));
    }
    for (key, value) in FIXED_OPTIONS {
        options.push_str(&format!(",{key}={value}"));
    }
    (options.len() <= LEGACY_OPTIONS_MAX).then_some(options)
}

fn mount_legacy(options: &str, target: &Path) -> Result<()> {
    let data = std::ffi::CString::new(options)
        .map_err(|e| mount_error(target, std::io::Error::other(e), String::new()))?;
    rustix::mount::mount(
        "overlay",
        target,
        "overlay",
        MountFlags::empty(),
        Some(data.as_c_str()),
    )
    .map_err(|e| mount_error(target, e.into(), String::new()))
}

fn mount_fsconfig(spec: &MountSpec) -> Result<()> {
    let target = &spec.target;
    let fs = fsopen("overlay", FsOpenFlags::FSOPEN_CLOEXEC)
        .map_err(|e| mount_error(target, e.into(), String::new()))?;
    let fail = |fs: &OwnedFd, e: rustix::io::Errno, what: &str| {
        mount_error(
            target,
            std::io::Error::from(e),
            format!(" ({what}){}", context_log(fs)),
        )
    };
    fsconfig_set_string(&fs, "source", "overlay").map_err(|e| fail(&fs, e, "source"))?;
    for layer in spec.layers.iter().rev() {
        fsconfig_set_string(&fs, "lowerdir+", layer.as_path())
            .map_err(|e| fail(&fs, e, &format!("lowerdir+ {}", layer.display())))?;
    }
    if let (Some(upper), Some(work)) = (&spec.upper, &spec.work) {
        fsconfig_set_string(&fs, "upperdir", upper.as_path())
            .map_err(|e| fail(&fs, e, "upperdir"))?;
        fsconfig_set_string(&fs, "workdir", work.as_path()).map_err(|e| fail(&fs, e, "workdir"))?;
    }
    for (key, value) in FIXED_OPTIONS {
        fsconfig_set_string(&fs, key, value).map_err(|e| fail(&fs, e, key))?;
    }
    fsconfig_create(&fs).map_err(|e| fail(&fs, e, "create"))?;
    let attrs = if spec.upper.is_none() {
        MountAttrFlags::MOUNT_ATTR_RDONLY
    } else {
        MountAttrFlags::empty()
    };
    let mnt =
        fsmount(&fs, FsMountFlags::FSMOUNT_CLOEXEC, attrs).map_err(|e| fail(&fs, e, "fsmount"))?;
    move_mount(
        mnt.as_fd(),
        "",
        rustix::fs::CWD,
        target.as_path(),
        MoveMountFlags::MOVE_MOUNT_F_EMPTY_PATH,
    )
    .map_err(|e| mount_error(target, e.into(), " (move_mount)".into()))
}

/// Messages the kernel left in a mount context ("e overlay: ..."), without their severity
/// letter, joined for an error.
fn context_log(fs: &OwnedFd) -> String {
    let mut lines = Vec::new();
    let mut file = std::fs::File::from(match fs.try_clone() {
        Ok(fd) => fd,
        Err(_) => return String::new(),
    });
    let mut buf = [0u8; 1024];
    while let Ok(n) = file.read(&mut buf) {
        if n == 0 {
            break;
        }
        let line = String::from_utf8_lossy(&buf[..n]).trim().to_string();
        // Each message starts with its severity ("e ", "w ", "i "): keep only the words.
        let words = match line.split_once(' ') {
            Some(("e" | "w" | "i", words)) => words.to_string(),
            _ => line,
        };
        lines.push(words);
        if lines.len() > 8 {
            break;
        }
    }
    if lines.is_empty() {
        String::new()
    } else {
        format!(": {}", lines.join("; "))
    }
}

/// Bind-mounts `source` on `target`, read-only if asked.
fn bind(source: &Path, target: &Path, read_only: bool) -> Result<()> {
    rustix::mount::mount_bind(source, target)
        .map_err(|e| mount_error(target, e.into(), " (bind)".into()))?;
    if read_only {
        let flags = MountFlags::BIND | MountFlags::RDONLY;
        if let Err(e) = rustix::mount::mount_remount(target, flags, "") {
            let _ = rustix::mount::unmount(target, rustix::mount::UnmountFlags::DETACH);
            return Err(mount_error(target, e.into(), " (read-only remount)".into()));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::PathBuf;

    fn spec(layers: usize, len: usize) -> MountSpec {
        MountSpec {
            layers: (0..layers)
                .map(|i| PathBuf::from(format!("/{}{i:03}", "l".repeat(len))))
                .collect(),
            upper: Some("/u".into()),
            work: Some("/w".into()),
            target: "/t".into(),
        }
    }

    #[test]
    fn legacy_options_list_top_layer_first() {
        let options = legacy_options(&spec(2, 1)).unwrap();
        assert_eq!(
            options,
            "lowerdir=/l001:/l000,upperdir=/u,workdir=/w,redirect_dir=off,index=off,metacopy=off"
        );
    }

    #[test]
    fn a_repeated_layer_is_kept_once_at_its_topmost_place() {
        let mut repeated = spec(3, 1);
        repeated.layers.push(repeated.layers[1].clone());
        repeated.layers.push(repeated.layers[0].clone());
        let distinct = distinct_layers(&repeated);
        assert_eq!(
            distinct.layers,
            vec![
                PathBuf::from("/l002"),
                PathBuf::from("/l001"),
                PathBuf::from("/l000")
            ]
        );
        assert_eq!(
            legacy_options(&distinct).unwrap(),
            "lowerdir=/l000:/l001:/l002,upperdir=/u,workdir=/w,redirect_dir=off,index=off,metacopy=off"
        );
    }

    #[test]
    fn long_chains_and_odd_paths_need_the_new_api() {
        assert!(legacy_options(&spec(128, 60)).is_none());
        let mut odd = spec(2, 1);
        odd.layers[0] = PathBuf::from("/a:b");
        assert!(legacy_options(&odd).is_none());
    }
}
