//! Shared helpers for the runner's integration tests: a busybox-static rootfs in a temp dir and
//! a way to run a command in it and capture its output. When RBUILD_STORAGE_DRIVER is set (CI's
//! second pass sets `fuse`), the rootfs is a union mount made by that driver over the busybox
//! tree, as a container's root is.
#![allow(dead_code)]

use rbuild_layerfs::mount::{mount_union, Driver, MountSpec, UnionMount, DRIVER_ENV};
use rbuild_runner::{ExitStatus, ProcessSpec, SandboxSpec, Stdio};
use std::fs;
use std::os::unix::fs::{symlink, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::Command;

/// A busybox rootfs in a temporary directory (unmounted and removed on drop).
pub struct Rootfs {
    /// The union mount when RBUILD_STORAGE_DRIVER names a driver; dropped (unmounted) first.
    union: Option<UnionMount>,
    root: PathBuf,
    dir: tempfile::TempDir,
    log_dir: tempfile::TempDir,
}

impl Rootfs {
    /// /bin/busybox, its applets as symlinks, /etc/passwd and /etc/group.
    /// No /proc, /dev or /sys directories: the runner creates (and removes) its mount points.
    pub fn busybox() -> Rootfs {
        let dir = tempfile::Builder::new()
            .prefix("runner-rootfs-")
            .tempdir()
            .expect("temp rootfs");
        let driver = union_driver();
        let tree = match driver {
            Some(_) => dir.path().join("layer"),
            None => dir.path().to_path_buf(),
        };
        let dest = tree.as_path();
        for d in ["bin", "sbin", "usr/bin", "usr/sbin", "etc", "root", "tmp"] {
            fs::create_dir_all(dest.join(d)).expect("create rootfs dir");
        }
        fs::set_permissions(dest.join("tmp"), fs::Permissions::from_mode(0o1777))
            .expect("chmod tmp");
        fs::copy("/bin/busybox", dest.join("bin/busybox")).expect("copy busybox");
        let list = Command::new("/bin/busybox")
            .arg("--list-full")
            .output()
            .expect("busybox --list-full");
        for applet in String::from_utf8_lossy(&list.stdout).lines() {
            if applet.is_empty() || applet == "bin/busybox" {
                continue;
            }
            let link = dest.join(applet);
            fs::create_dir_all(link.parent().expect("applet parent")).expect("applet dir");
            let _ = fs::remove_file(&link);
            symlink("/bin/busybox", &link).expect("applet symlink");
        }
        fs::write(
            dest.join("etc/passwd"),
            "root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/home/nobody:/bin/false\n",
        )
        .expect("passwd");
        fs::write(
            dest.join("etc/group"),
            "root:x:0:\nstaff:x:50:nobody\nnogroup:x:65534:\n",
        )
        .expect("group");
        let (union, root) = match driver {
            Some(driver) => {
                let mount = mount_over(&tree, dir.path(), driver);
                let root = mount.target().to_path_buf();
                (Some(mount), root)
            }
            None => (None, tree),
        };
        Rootfs {
            union,
            root,
            dir,
            log_dir: tempfile::tempdir().expect("log dir"),
        }
    }

    /// The rootfs path (the union mount point under RBUILD_STORAGE_DRIVER).
    pub fn path(&self) -> &Path {
        &self.root
    }

    /// A sandbox over this rootfs with hostname "box", logging to a fresh file.
    pub fn sandbox(&self) -> (SandboxSpec, PathBuf) {
        let log = self.log_dir.path().join(format!(
            "log-{}",
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .expect("clock")
                .as_nanos()
        ));
        (
            SandboxSpec {
                rootfs: self.path().to_path_buf(),
                hostname: "box".into(),
                stdio: Stdio::Log(log.clone()),
                ..Default::default()
            },
            log,
        )
    }

    /// Runs `sh -c SCRIPT` with default settings; returns the status and the output.
    pub fn sh(&self, script: &str) -> (ExitStatus, String) {
        let (sandbox, log) = self.sandbox();
        run_logged(&sandbox, &log, &sh(script))
    }
}

/// The driver RBUILD_STORAGE_DRIVER names, if it is set; `None` means a plain directory.
fn union_driver() -> Option<Driver> {
    std::env::var_os(DRIVER_ENV).filter(|v| !v.is_empty())?;
    Some(
        Driver::from_env_or(Driver::Auto)
            .expect("RBUILD_STORAGE_DRIVER must be overlay, fuse or auto"),
    )
}

/// Mounts `layer` plus a fresh upper dir below `scratch` with `driver`, read-write.
fn mount_over(layer: &Path, scratch: &Path, driver: Driver) -> UnionMount {
    let dir = |name: &str| {
        let p = scratch.join(name);
        fs::create_dir_all(&p).expect("create mount dir");
        p
    };
    let spec = MountSpec {
        layers: vec![layer.to_path_buf()],
        upper: Some(dir("upper")),
        work: Some(dir("work")),
        target: dir("merged"),
    };
    let mount = mount_union(&spec, driver).unwrap_or_else(|e| panic!("{driver} rootfs mount: {e}"));
    assert!(
        driver == Driver::Auto || mount.driver() == driver,
        "{driver} was asked for, {} mounted",
        mount.driver()
    );
    mount
}

/// `sh -c SCRIPT` with PATH set.
pub fn sh(script: &str) -> ProcessSpec {
    ProcessSpec {
        args: vec!["sh".into(), "-c".into(), script.into()],
        env: vec!["PATH=/usr/sbin:/usr/bin:/sbin:/bin".into()],
        ..Default::default()
    }
}

/// Runs and reads the log back.
pub fn run_logged(
    sandbox: &SandboxSpec,
    log: &Path,
    process: &ProcessSpec,
) -> (ExitStatus, String) {
    let status = rbuild_runner::run(sandbox, process).expect("run sandbox");
    let out = fs::read_to_string(log).unwrap_or_default();
    (status, out)
}
