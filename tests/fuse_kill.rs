//! Killing rbuild while it serves a FUSE mount (a RUN step in progress) leaves no dead mount
//! that blocks the next command.

mod common;

use common::TestRoot;
use std::path::Path;
use std::process::{Child, Command};
use std::time::{Duration, Instant};

/// Mount points of rbuild FUSE mounts at or below `dir`.
fn fuse_mounts_below(dir: &Path) -> Vec<String> {
    let dir = dir.canonicalize().expect("canonical root");
    let info = std::fs::read_to_string("/proc/self/mountinfo").expect("read mountinfo");
    info.lines()
        .filter(|l| l.contains(" - fuse rbuild ") || l.contains(" - fuse.rbuild rbuild "))
        .filter_map(|l| l.split(' ').nth(4).map(str::to_string))
        .filter(|p| Path::new(p).starts_with(&dir))
        .collect()
}

fn is_dead(path: &str) -> bool {
    matches!(std::fs::symlink_metadata(path), Err(e) if e.raw_os_error() == Some(libc::ENOTCONN))
}

/// Kills the build on drop, also when an assertion fails first.
struct KillOnDrop(Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn killed_build_leaves_no_blocking_fuse_mount() {
    let root = TestRoot::new();
    root.import_busybox("busybox");
    let ctx = tempfile::tempdir().expect("context dir");
    std::fs::write(
        ctx.path().join("Dockerfile"),
        "FROM busybox\nRUN sleep 300\n",
    )
    .expect("write Dockerfile");
    let mut build = KillOnDrop(
        Command::new(common::rbuild_bin())
            .args([
                "--root",
                &root.root_str(),
                "--storage-driver",
                "fuse",
                "build",
            ])
            .args(["--progress", "plain", "--no-cache"])
            .arg(ctx.path())
            .spawn()
            .expect("start rbuild build"),
    );
    let deadline = Instant::now() + Duration::from_secs(60);
    while fuse_mounts_below(root.path()).is_empty() {
        assert!(
            Instant::now() < deadline,
            "the build never mounted its FUSE rootfs"
        );
        assert!(
            build.0.try_wait().expect("poll build").is_none(),
            "build ended early"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    build.0.kill().expect("kill rbuild");
    build.0.wait().expect("reap rbuild");

    // The next command works and sweeps the dead mount away.
    std::fs::write(
        ctx.path().join("Dockerfile"),
        "FROM busybox\nRUN echo ok > /ok\n",
    )
    .expect("rewrite Dockerfile");
    let out = Command::new(common::rbuild_bin())
        .args([
            "--root",
            &root.root_str(),
            "--storage-driver",
            "fuse",
            "build",
            "-q",
        ])
        .arg(ctx.path())
        .output()
        .expect("run the next build");
    assert!(
        out.status.success(),
        "the build after the kill failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let dead: Vec<String> = fuse_mounts_below(root.path())
        .into_iter()
        .filter(|p| is_dead(p))
        .collect();
    assert!(dead.is_empty(), "dead FUSE mounts left behind: {dead:?}");
}
