//! Helpers shared by the CLI integration tests: a temporary store root, a runner for the
//! `rbuild` binary, and a busybox-static rootfs to import as a base image.
//!
//! Use from a test file with `mod common;`. Not every test uses every helper.
#![allow(dead_code)]

use std::fs;
use std::os::unix::fs::{symlink, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

/// Path of the rbuild binary under test.
pub fn rbuild_bin() -> &'static str {
    env!("CARGO_BIN_EXE_rbuild")
}

/// Runs `rbuild ARGS...` (no implicit --root) and returns its output.
pub fn rbuild(args: &[&str]) -> Output {
    Command::new(rbuild_bin())
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("run rbuild binary")
}

/// Describes a finished command for assertion messages.
pub fn describe(args: &[&str], out: &Output) -> String {
    format!(
        "rbuild {}\nexit: {:?}\nstdout:\n{}\nstderr:\n{}",
        args.join(" "),
        out.status.code(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// A temporary store root, removed (after unmounting anything left below it) on drop.
pub struct TestRoot {
    dir: tempfile::TempDir,
}

impl TestRoot {
    /// A fresh, empty store root.
    pub fn new() -> TestRoot {
        TestRoot {
            dir: tempfile::Builder::new()
                .prefix("rbuild-test-")
                .tempdir()
                .expect("create temp store root"),
        }
    }

    /// The store root path (pass as --root).
    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    /// The store root as a string.
    pub fn root_str(&self) -> String {
        self.path().to_string_lossy().into_owned()
    }

    /// Runs `rbuild --root ROOT ARGS...`.
    pub fn rbuild(&self, args: &[&str]) -> Output {
        let mut full = vec!["--root", self.path().to_str().expect("utf-8 temp path")];
        full.extend_from_slice(args);
        rbuild(&full)
    }

    /// Runs `rbuild --root ROOT ARGS...`, asserts success and returns stdout.
    pub fn ok(&self, args: &[&str]) -> String {
        let out = self.rbuild(args);
        assert!(out.status.success(), "{}", describe(args, &out));
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Runs `rbuild --root ROOT ARGS...`, asserts failure and returns stderr.
    pub fn fails(&self, args: &[&str]) -> String {
        let out = self.rbuild(args);
        assert!(
            !out.status.success(),
            "expected failure\n{}",
            describe(args, &out)
        );
        String::from_utf8_lossy(&out.stderr).into_owned()
    }

    /// Runs `rbuild --root ROOT ARGS...` until it succeeds (up to ~5 s); whether it did.
    pub fn wait_for_success(&self, args: &[&str]) -> bool {
        poll_until(500, || self.rbuild(args).status.success())
    }

    /// Imports a busybox-static rootfs as NAME and returns the image ID.
    pub fn import_busybox(&self, name: &str) -> String {
        import_busybox(self.path(), name)
    }
}

impl Default for TestRoot {
    fn default() -> Self {
        Self::new()
    }
}

impl Drop for TestRoot {
    fn drop(&mut self) {
        unmount_below(self.path());
    }
}

/// One line of /proc/self/mountinfo.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MountEntry {
    /// Mount point.
    pub point: PathBuf,
    /// Filesystem type (`overlay`, `fuse`, `fuse.rbuild`, ...).
    pub fstype: String,
    /// Mount source (`rbuild` for rbuild's FUSE mounts).
    pub source: String,
}

/// The mounts at or below `dir` (none when `dir` does not exist), in mount order.
pub fn mounts_below(dir: &Path) -> Vec<MountEntry> {
    let Ok(canon) = dir.canonicalize() else {
        return Vec::new();
    };
    let info = fs::read_to_string("/proc/self/mountinfo").expect("read /proc/self/mountinfo");
    info.lines()
        .filter_map(|l| {
            let point = PathBuf::from(l.split(' ').nth(4)?.replace("\\040", " "));
            let mut after = l.split_once(" - ")?.1.split(' ');
            let fstype = after.next()?.to_string();
            let source = after.next()?.to_string();
            point.starts_with(&canon).then_some(MountEntry {
                point,
                fstype,
                source,
            })
        })
        .collect()
}

/// Lazily unmounts every mount point at or below `dir`, deepest first.
pub fn unmount_below(dir: &Path) {
    let mut targets: Vec<PathBuf> = mounts_below(dir).into_iter().map(|m| m.point).collect();
    targets.sort_by_key(|t| std::cmp::Reverse(t.as_os_str().len()));
    for t in targets {
        let _ = nix::mount::umount2(&t, nix::mount::MntFlags::MNT_DETACH);
    }
}

/// Kills and reaps a child process on drop (also when an assertion failed first).
pub struct KillOnDrop(pub std::process::Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Builds a minimal busybox-static rootfs in `dest`: /bin/busybox, every applet as a symlink,
/// /etc/passwd and /etc/group, and the usual empty directories.
pub fn busybox_rootfs(dest: &Path) {
    let bb = Path::new("/bin/busybox");
    assert!(
        bb.exists(),
        "/bin/busybox not found: install busybox-static"
    );
    for d in [
        "bin", "sbin", "usr/bin", "usr/sbin", "etc", "root", "tmp", "home", "var/tmp", "proc",
        "sys", "dev",
    ] {
        fs::create_dir_all(dest.join(d)).expect("create rootfs dir");
    }
    for d in ["tmp", "var/tmp"] {
        fs::set_permissions(dest.join(d), fs::Permissions::from_mode(0o1777)).expect("chmod tmp");
    }
    fs::copy(bb, dest.join("bin/busybox")).expect("copy busybox");
    let list = Command::new(bb)
        .arg("--list-full")
        .output()
        .expect("busybox --list-full");
    for applet in String::from_utf8_lossy(&list.stdout).lines() {
        let applet = applet.trim();
        if applet.is_empty() || applet == "bin/busybox" {
            continue;
        }
        let link = dest.join(applet);
        if let Some(parent) = link.parent() {
            fs::create_dir_all(parent).expect("create applet dir");
        }
        let _ = fs::remove_file(&link);
        symlink("/bin/busybox", &link).expect("create applet symlink");
    }
    fs::write(
        dest.join("etc/passwd"),
        "root:x:0:0:root:/root:/bin/sh\ndaemon:x:1:1:daemon:/usr/sbin:/bin/false\n\
         nobody:x:65534:65534:nobody:/nonexistent:/bin/false\n",
    )
    .expect("write passwd");
    fs::write(
        dest.join("etc/group"),
        "root:x:0:\ndaemon:x:1:\nnogroup:x:65534:\n",
    )
    .expect("write group");
}

/// Imports a busybox-static rootfs into the store at `root` as `name` (with `CMD ["sh"]`) and
/// returns the image ID (`sha256:...`).
pub fn import_busybox(root: &Path, name: &str) -> String {
    let src = tempfile::tempdir().expect("temp rootfs dir");
    busybox_rootfs(src.path());
    let root_s = root.to_str().expect("utf-8 root");
    let src_s = src.path().to_str().expect("utf-8 rootfs path");
    let args = [
        "--root",
        root_s,
        "import",
        "--change",
        r#"CMD ["sh"]"#,
        src_s,
        name,
    ];
    let out = rbuild(&args);
    assert!(out.status.success(), "{}", describe(&args, &out));
    let id = String::from_utf8_lossy(&out.stdout).trim().to_string();
    assert!(
        id.starts_with("sha256:"),
        "import printed {id:?}, expected an image ID"
    );
    id
}

/// Calls `done` every 10 ms, at most `tries` times, until it returns true; whether it did.
pub fn poll_until(tries: u32, mut done: impl FnMut() -> bool) -> bool {
    for _ in 0..tries {
        if done() {
            return true;
        }
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    false
}

/// The storage driver the tests' `rbuild` commands use: `$RBUILD_STORAGE_DRIVER` (which they
/// inherit as their `--storage-driver`; CI's second pass sets it to `fuse`), else `auto`.
pub fn storage_driver() -> String {
    std::env::var("RBUILD_STORAGE_DRIVER")
        .ok()
        .map(|d| d.trim().to_string())
        .filter(|d| !d.is_empty())
        .unwrap_or_else(|| "auto".into())
}

/// A non-loopback IPv4 address of this machine (of an interface that is up). Traffic to it
/// stays on the machine, like loopback traffic, but rbuild must treat it as a remote host.
pub fn non_loopback_ipv4() -> String {
    use nix::net::if_::InterfaceFlags;
    let addrs = nix::ifaddrs::getifaddrs().expect("getifaddrs");
    addrs
        .filter(|a| a.flags.contains(InterfaceFlags::IFF_UP))
        .filter_map(|a| a.address?.as_sockaddr_in().map(|s| s.ip()))
        .find(|ip| !ip.is_loopback() && !ip.is_unspecified())
        .expect("this test needs a non-loopback IPv4 address on an interface that is up")
        .to_string()
}
