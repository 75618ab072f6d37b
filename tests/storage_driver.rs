//! `--storage-driver` / RBUILD_STORAGE_DRIVER end to end: RUN steps and containers get their
//! root filesystem from the driver the environment names (CI runs this under `auto` and again
//! under `fuse`), and `auto` on a store that sits on overlayfs (rbuild inside a container)
//! falls back to FUSE with a single one-line notice, and builds and runs work.

mod common;

use std::fs;
use std::path::{Path, PathBuf};

use common::{describe, storage_driver, TestRoot};

/// Prints the filesystem type of `/` from inside the container.
const ROOT_FSTYPE: &str = r#"awk '$5 == "/" { for (i = 7; i <= NF; i++) if ($i == "-") t = $(i + 1) } END { print t }' /proc/self/mountinfo"#;

/// The root filesystem type a container gets from `driver` on this machine.
fn expected_fstype(driver: &str) -> &'static str {
    match driver {
        "fuse" => "fuse",
        // auto: overlayfs works on the test machines (auto's fallback is tested below).
        _ => "overlay",
    }
}

/// `fuse.rbuild` (mounted through fusermount3) and `fuse` (mounted directly) are one driver.
fn normalise(fstype: &str) -> &str {
    fstype.trim().split('.').next().unwrap_or_default()
}

#[test]
fn run_steps_and_containers_use_the_driver_from_the_environment() {
    let driver = storage_driver();
    let want = expected_fstype(&driver);
    let root = TestRoot::new();
    root.import_busybox("bb");
    let ctx = tempfile::tempdir().expect("context dir");
    fs::write(
        ctx.path().join("Dockerfile"),
        format!("FROM bb\nRUN {ROOT_FSTYPE} > /run-step-fstype\n"),
    )
    .expect("write Dockerfile");
    let ctx_s = ctx.path().to_str().expect("utf-8 path");
    root.ok(&["build", "-t", "probe", ctx_s]);
    let in_run_step = root.ok(&["run", "--rm", "probe", "cat", "/run-step-fstype"]);
    assert_eq!(normalise(&in_run_step), want, "RUN step under {driver}");
    let in_container = root.ok(&["run", "--rm", "probe", "sh", "-c", ROOT_FSTYPE]);
    assert_eq!(normalise(&in_container), want, "container under {driver}");
}

/// An overlay mount standing in for a container's root filesystem, with rbuild's store inside;
/// unmounts everything below it, then itself, on drop.
struct StoreOnOverlay {
    /// Holds the lower, upper and work dirs; removed after the unmount in `drop`.
    _tmp: tempfile::TempDir,
    merged: PathBuf,
}

impl StoreOnOverlay {
    fn new() -> StoreOnOverlay {
        let tmp = tempfile::tempdir().expect("temp dir");
        let dir = |name: &str| {
            let p = tmp.path().join(name);
            fs::create_dir_all(&p).expect("create dir");
            p
        };
        let (lower, upper, work, merged) = (dir("lower"), dir("upper"), dir("work"), dir("merged"));
        let options = format!(
            "lowerdir={},upperdir={},workdir={}",
            lower.display(),
            upper.display(),
            work.display()
        );
        nix::mount::mount(
            Some("overlay"),
            &merged,
            Some("overlay"),
            nix::mount::MsFlags::empty(),
            Some(options.as_str()),
        )
        .expect("mount the outer overlay");
        StoreOnOverlay { _tmp: tmp, merged }
    }

    fn store(&self) -> PathBuf {
        self.merged.join("store")
    }

    /// Runs `rbuild --root STORE --storage-driver auto ARGS...`.
    fn rbuild(&self, args: &[&str]) -> std::process::Output {
        let store = self.store();
        let mut full = vec![
            "--root",
            store.to_str().expect("utf-8 path"),
            "--storage-driver",
            "auto",
        ];
        full.extend_from_slice(args);
        common::rbuild(&full)
    }

    /// Like [`StoreOnOverlay::rbuild`], asserting success; returns (stdout, stderr).
    fn ok(&self, args: &[&str]) -> (String, String) {
        let out = self.rbuild(args);
        assert!(out.status.success(), "{}", describe(args, &out));
        (
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    }
}

impl Drop for StoreOnOverlay {
    fn drop(&mut self) {
        common::unmount_below(&self.store());
        let _ = nix::mount::umount2(&self.merged, nix::mount::MntFlags::MNT_DETACH);
    }
}

/// The fallback notices in `stderr`, checked to be one line each and to give the reason.
fn notices(stderr: &str) -> Vec<&str> {
    let found: Vec<&str> = stderr
        .lines()
        .filter(|l| l.starts_with("notice: using the FUSE storage driver"))
        .collect();
    for line in &found {
        assert!(
            line.contains("not supported as upperdir"),
            "the notice says why: {line}"
        );
    }
    found
}

#[test]
fn auto_falls_back_to_fuse_when_the_store_is_on_overlayfs() {
    let outer = StoreOnOverlay::new();
    fs::create_dir_all(outer.store()).expect("create store");
    common::import_busybox(&outer.store(), "bb");

    let (stdout, stderr) = outer.ok(&["run", "--rm", "bb", "sh", "-c", "echo hi > /f && cat /f"]);
    assert_eq!(stdout.trim(), "hi");
    assert_eq!(
        notices(&stderr).len(),
        1,
        "one notice per command:\n{stderr}"
    );
    let (fstype, _) = outer.ok(&["run", "--rm", "bb", "sh", "-c", ROOT_FSTYPE]);
    assert_eq!(normalise(&fstype), "fuse");

    let ctx = tempfile::tempdir().expect("context dir");
    fs::write(
        ctx.path().join("Dockerfile"),
        "FROM bb\nRUN echo one > /one\nRUN echo two > /two && mkdir -p /d && echo three > /d/three\n",
    )
    .expect("write Dockerfile");
    let ctx_s = ctx.path().to_str().expect("utf-8 path");
    let (_, stderr) = outer.ok(&["build", "--progress", "plain", "-t", "built", ctx_s]);
    assert_eq!(
        notices(&stderr).len(),
        1,
        "one notice for a build of two RUN steps:\n{stderr}"
    );
    let (stdout, _) = outer.ok(&["run", "--rm", "built", "cat", "/one", "/two", "/d/three"]);
    assert_eq!(stdout, "one\ntwo\nthree\n");
    assert!(store_layers_exist(&outer.store()));
}

/// True when the store holds unpacked layers (the RUN steps' upper dirs moved into place).
fn store_layers_exist(store: &Path) -> bool {
    fs::read_dir(store.join("layers")).is_ok_and(|d| d.count() >= 3)
}
