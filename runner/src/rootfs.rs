//! The mount sequence inside the new mount namespace: private propagation, the rootfs bind,
//! /proc, a minimal /dev, /sys, bind mounts, pivot_root, hostname and docker's masked paths.

use crate::error::Result;
use crate::resolve::Kind;
use crate::spec::{Network, SandboxSpec};
use crate::syscall::{
    Syscall, MOUNT_ATTR_NODEV, MOUNT_ATTR_NOEXEC, MOUNT_ATTR_NOSUID, MOUNT_ATTR_RDONLY,
};
use nix::mount::{MntFlags, MsFlags};
use std::path::Path;

/// Device nodes bound from the host into the container's /dev ("tty" only with a pty, see
/// [`devices`]).
pub const DEVICES: &[&str] = &["null", "zero", "full", "random", "urandom", "tty"];

/// The [`DEVICES`] bound for `spec`: /dev/tty only when the container gets its own pty (without
/// one the container has no controlling terminal, and nothing should point at the host's).
pub fn devices(spec: &SandboxSpec) -> impl Iterator<Item = &'static str> {
    let pty = matches!(
        spec.stdio,
        crate::spec::Stdio::Pty { .. } | crate::spec::Stdio::PtyTee { .. }
    );
    DEVICES.iter().copied().filter(move |d| pty || *d != "tty")
}

/// Paths docker hides from containers (a /dev/null bind for files, an empty read-only tmpfs for
/// directories).
pub const MASKED_PATHS: &[&str] = &[
    "/proc/asound",
    "/proc/acpi",
    "/proc/interrupts",
    "/proc/kcore",
    "/proc/keys",
    "/proc/latency_stats",
    "/proc/timer_list",
    "/proc/timer_stats",
    "/proc/sched_debug",
    "/proc/scsi",
    "/sys/firmware",
    "/sys/devices/virtual/powercap",
];

/// Paths docker makes read-only inside containers.
pub const READONLY_PATHS: &[&str] = &[
    "/proc/bus",
    "/proc/fs",
    "/proc/irq",
    "/proc/sys",
    "/proc/sysrq-trigger",
];

/// Mount points below the rootfs the sequence needs, with their kinds (the caller may create them
/// ahead of time, to remove them again afterwards).
pub fn mount_points(spec: &SandboxSpec) -> Vec<(String, Kind)> {
    let mut v: Vec<(String, Kind)> = vec![
        ("proc".into(), Kind::Dir),
        ("dev".into(), Kind::Dir),
        ("sys".into(), Kind::Dir),
    ];
    for m in &spec.mounts {
        let kind = if m.source.is_dir() {
            Kind::Dir
        } else {
            Kind::File
        };
        v.push((m.target.clone(), kind));
    }
    v
}

/// Files bound from the host when the network is shared (created when missing, best effort).
pub fn host_network_files(spec: &SandboxSpec) -> Vec<(String, Kind)> {
    if !matches!(spec.network, Network::Host | Network::Private) {
        return Vec::new();
    }
    vec![
        ("etc/resolv.conf".into(), Kind::File),
        ("etc/hosts".into(), Kind::File),
    ]
}

fn bind(sys: &dyn Syscall, source: &Path, root: &Path, rel: &str, kind: Kind) -> Result<()> {
    let t = sys.target(root, rel, kind)?;
    sys.mount(
        Some(source),
        &t.path,
        None,
        MsFlags::MS_BIND | MsFlags::MS_REC,
        None,
    )
}

/// Sets `attrs` on the mount at `rel` below `root` and on every mount below it.
fn set_attrs_recursive(sys: &dyn Syscall, root: &Path, rel: &str, attrs: u64) -> Result<()> {
    let t = sys.target(root, rel, Kind::Existing)?;
    sys.mount_setattr(&t.path, attrs, true)
}

fn remount_readonly(sys: &dyn Syscall, root: &Path, rel: &str, extra: MsFlags) -> Result<()> {
    let t = sys.target(root, rel, Kind::Existing)?;
    sys.mount(
        None,
        &t.path,
        None,
        MsFlags::MS_BIND | MsFlags::MS_REMOUNT | MsFlags::MS_RDONLY | extra,
        None,
    )
}

/// Builds the container's filesystem view and pivots into it; the caller is already in its own
/// mount namespace (and pid namespace, for /proc).
pub fn setup(sys: &dyn Syscall, spec: &SandboxSpec) -> Result<()> {
    setup_with(sys, spec, None)
}

/// [`setup`], with `net_dir` holding the resolv.conf and hosts of a private network.
pub fn setup_with(sys: &dyn Syscall, spec: &SandboxSpec, net_dir: Option<&Path>) -> Result<()> {
    let root = spec.rootfs.as_path();
    sys.mount(
        None,
        Path::new("/"),
        None,
        MsFlags::MS_REC | MsFlags::MS_PRIVATE,
        None,
    )?;
    sys.mount(
        Some(root),
        root,
        None,
        MsFlags::MS_BIND | MsFlags::MS_REC,
        None,
    )?;
    // No device node in the image (or one created by the container) can be opened; the host
    // devices bound into /dev below are separate mounts. A read-only rootfs is made read-only
    // here, submounts included, before /proc, /dev, /sys and the volumes are mounted on it (their
    // mount points exist already, see mount_points).
    let root_attrs = if spec.readonly_rootfs {
        MOUNT_ATTR_NODEV | MOUNT_ATTR_RDONLY
    } else {
        MOUNT_ATTR_NODEV
    };
    sys.mount_setattr(root, root_attrs, true)?;
    let network_files = match (spec.network, net_dir) {
        (Network::Host, _) => Some(Path::new("/etc")),
        (Network::Private, Some(dir)) => Some(dir),
        _ => None,
    };
    if let Some(source_dir) = network_files {
        // Before /proc and /dev exist in the new root, so an image symlink such as
        // /etc/hosts -> /proc/... resolves to nothing and the bind is skipped.
        for f in ["resolv.conf", "hosts"] {
            let host = source_dir.join(f);
            let rel = format!("etc/{f}");
            if !host.exists() {
                continue;
            }
            let Ok(t) = sys.target(root, &rel, Kind::File) else {
                continue;
            };
            sys.mount(Some(&host), &t.path, None, MsFlags::MS_BIND, None)?;
            drop(t);
            remount_readonly(sys, root, &rel, MsFlags::empty())?;
        }
    }
    let nosuid_nodev_noexec = MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC;
    let proc_t = sys.target(root, "proc", Kind::Dir)?;
    sys.mount(
        Some(Path::new("proc")),
        &proc_t.path,
        Some("proc"),
        nosuid_nodev_noexec,
        None,
    )?;
    drop(proc_t);
    let dev_t = sys.target(root, "dev", Kind::Dir)?;
    sys.mount(
        Some(Path::new("tmpfs")),
        &dev_t.path,
        Some("tmpfs"),
        MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_STRICTATIME,
        Some("mode=755,size=65536k"),
    )?;
    drop(dev_t);
    for dev in devices(spec) {
        bind(
            sys,
            &Path::new("/dev").join(dev),
            root,
            &format!("dev/{dev}"),
            Kind::File,
        )?;
    }
    for (link, dest) in [
        ("dev/fd", "/proc/self/fd"),
        ("dev/stdin", "/proc/self/fd/0"),
        ("dev/stdout", "/proc/self/fd/1"),
        ("dev/stderr", "/proc/self/fd/2"),
        ("dev/ptmx", "pts/ptmx"),
        ("dev/core", "/proc/kcore"),
    ] {
        sys.symlink(root, link, dest)?;
    }
    let pts = sys.target(root, "dev/pts", Kind::Dir)?;
    let devpts = |data: &str| {
        sys.mount(
            Some(Path::new("devpts")),
            &pts.path,
            Some("devpts"),
            MsFlags::MS_NOSUID | MsFlags::MS_NOEXEC,
            Some(data),
        )
    };
    // gid 5 (tty) does not exist in a user namespace that maps only the caller.
    devpts("newinstance,ptmxmode=0666,mode=0620,gid=5")
        .or_else(|_| devpts("newinstance,ptmxmode=0666,mode=0620"))?;
    drop(pts);
    let shm = sys.target(root, "dev/shm", Kind::Dir)?;
    sys.mount(
        Some(Path::new("shm")),
        &shm.path,
        Some("tmpfs"),
        nosuid_nodev_noexec,
        Some("mode=1777,size=65536k"),
    )?;
    drop(shm);
    let sys_t = sys.target(root, "sys", Kind::Dir)?;
    let sysfs = sys.mount(
        Some(Path::new("sysfs")),
        &sys_t.path,
        Some("sysfs"),
        nosuid_nodev_noexec | MsFlags::MS_RDONLY,
        None,
    );
    drop(sys_t);
    if sysfs.is_err() {
        // A rootless sandbox sharing the host network may not mount sysfs: bind the host's,
        // read-only.
        bind(sys, Path::new("/sys"), root, "sys", Kind::Dir)?;
        set_attrs_recursive(
            sys,
            root,
            "sys",
            MOUNT_ATTR_RDONLY | MOUNT_ATTR_NOSUID | MOUNT_ATTR_NODEV | MOUNT_ATTR_NOEXEC,
        )?;
    }
    for m in &spec.mounts {
        let kind = if m.source.is_dir() {
            Kind::Dir
        } else {
            Kind::File
        };
        // The fd path the mount went through says nothing: name the container's path.
        bind(sys, &m.source, root, &m.target, kind).map_err(|e| match e {
            crate::error::RunnerError::Sys { what, source } => crate::error::RunnerError::Sys {
                what: format!("{what} (for {})", m.target),
                source,
            },
            other => other,
        })?;
        // Recursively: a read-only volume's submounts are read-only too.
        let attrs = if m.readonly {
            MOUNT_ATTR_NODEV | MOUNT_ATTR_RDONLY
        } else {
            MOUNT_ATTR_NODEV
        };
        set_attrs_recursive(sys, root, &m.target, attrs)?;
    }
    // pivot_root(".", ".") then detach the old root: no put_old directory inside the image.
    sys.chdir(root)?;
    sys.pivot_root(Path::new("."), Path::new("."))?;
    sys.mount(
        None,
        Path::new("."),
        None,
        MsFlags::MS_SLAVE | MsFlags::MS_REC,
        None,
    )?;
    sys.umount2(Path::new("."), MntFlags::MNT_DETACH)?;
    sys.chdir(Path::new("/"))?;
    sys.sethostname(&spec.hostname)?;
    mask_paths(sys)
}

/// Hides docker's masked paths and makes its read-only paths read-only (after pivot_root).
pub fn mask_paths(sys: &dyn Syscall) -> Result<()> {
    let root = Path::new("/");
    for p in MASKED_PATHS {
        let Ok(t) = sys.target(root, p, Kind::Existing) else {
            continue;
        };
        if Path::new(p).is_dir() {
            sys.mount(
                Some(Path::new("tmpfs")),
                &t.path,
                Some("tmpfs"),
                MsFlags::MS_RDONLY,
                None,
            )?;
        } else {
            sys.mount(
                Some(Path::new("/dev/null")),
                &t.path,
                None,
                MsFlags::MS_BIND,
                None,
            )?;
        }
    }
    for p in READONLY_PATHS {
        let Ok(t) = sys.target(root, p, Kind::Existing) else {
            continue;
        };
        sys.mount(
            Some(&t.path),
            &t.path,
            None,
            MsFlags::MS_BIND | MsFlags::MS_REC,
            None,
        )?;
        drop(t);
        remount_readonly(
            sys,
            root,
            p,
            MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC,
        )?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::spec::BindMount;
    use crate::syscall::RecordingSyscall;

    fn spec() -> SandboxSpec {
        SandboxSpec {
            rootfs: "/r".into(),
            hostname: "box".into(),
            stdio: crate::spec::Stdio::Pty { log: None },
            ..Default::default()
        }
    }

    fn index(calls: &[String], needle: &str) -> usize {
        calls
            .iter()
            .position(|c| c.contains(needle))
            .unwrap_or_else(|| panic!("no call containing {needle:?} in {calls:#?}"))
    }

    #[test]
    fn sequence_is_in_design_order() {
        let sys = RecordingSyscall::default();
        setup(&sys, &spec()).unwrap();
        let calls = sys.calls.borrow();
        assert!(calls[0].starts_with("mount - / - MS_REC | MS_PRIVATE"));
        assert!(calls[1].starts_with("mount /r /r - MS_BIND | MS_REC"));
        assert_eq!(calls[2], "mount_setattr /r 0x4 recursive");
        let order = [
            "/r/proc proc",
            "/r/dev tmpfs",
            "mount /dev/null /r/dev/null",
            "mount /dev/tty /r/dev/tty",
            "/r/dev/pts devpts",
            "/r/dev/shm tmpfs",
            "/r/sys sysfs",
            "pivot_root . .",
            "umount2 . MntFlags(MNT_DETACH)",
            "sethostname box",
            "mount /dev/null /proc/kcore - MS_BIND",
            "/proc/sysrq-trigger - MS_RDONLY",
        ];
        let positions: Vec<usize> = order.iter().map(|n| index(&calls, n)).collect();
        assert!(positions.windows(2).all(|w| w[0] < w[1]), "{calls:#?}");
        let sys_mount = &calls[index(&calls, "/r/sys sysfs")];
        assert!(sys_mount.contains("MS_RDONLY"));
        // No resolv.conf/hosts binds without the host network.
        assert!(!calls.iter().any(|c| c.contains("resolv.conf")));
    }

    #[test]
    fn host_tty_is_bound_only_with_a_pty() {
        let sys = RecordingSyscall::default();
        let mut s = spec();
        s.stdio = crate::spec::Stdio::Inherit;
        setup(&sys, &s).unwrap();
        let calls = sys.calls.borrow();
        assert!(!calls.iter().any(|c| c.contains("/dev/tty")), "{calls:#?}");
        assert!(calls
            .iter()
            .any(|c| c.contains("mount /dev/null /r/dev/null")));
    }

    #[test]
    fn host_network_binds_resolv_conf_read_only() {
        let sys = RecordingSyscall::default();
        let mut s = spec();
        s.network = Network::Host;
        setup(&sys, &s).unwrap();
        let calls = sys.calls.borrow();
        let bind = index(&calls, "mount /etc/resolv.conf /r/etc/resolv.conf");
        assert!(calls[bind + 1].contains("MS_RDONLY | MS_REMOUNT | MS_BIND"));
        assert!(bind < index(&calls, "/r/proc proc"));
    }

    #[test]
    fn volumes_and_readonly_rootfs() {
        let sys = RecordingSyscall::default();
        let mut s = spec();
        s.readonly_rootfs = true;
        s.mounts.push(BindMount {
            source: "/tmp".into(),
            target: "/data".into(),
            readonly: true,
        });
        setup(&sys, &s).unwrap();
        let calls = sys.calls.borrow();
        let vol = index(&calls, "mount /tmp /r/data - MS_BIND | MS_REC");
        assert_eq!(calls[vol + 1], "mount_setattr /r/data 0x5 recursive");
        let ro = index(&calls, "mount_setattr /r 0x5 recursive");
        assert!(ro < index(&calls, "/r/proc proc") && vol < index(&calls, "pivot_root"));
    }
}
