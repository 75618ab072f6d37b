//! A store on overlayfs (rbuild inside a container) end to end, as root on the real kernel:
//! overlayfs refuses whiteout devices in its own tree, so layers unpacked there and the FUSE
//! upper dirs of RUN steps hold xattr whiteouts (kernel >= 6.7). A loaded image that deletes
//! base files unpacks and hides them (in containers and in the kernel overlay of `rbuild
//! mount`); RUN steps under `--storage-driver auto` (FUSE there) delete and rename base files,
//! the layers carry `.wh.` entries, and the image ID is the one a plain store builds.

mod common;

use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use common::{describe, TestRoot};

/// An overlay mount standing in for a container's root filesystem, with a store inside;
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
        let outer = StoreOnOverlay { _tmp: tmp, merged };
        fs::create_dir_all(outer.store()).expect("create store dir");
        outer
    }

    fn store(&self) -> PathBuf {
        self.merged.join("store")
    }

    /// Runs `rbuild --root STORE --storage-driver auto ARGS...`, asserting success; returns
    /// stdout.
    fn ok(&self, args: &[&str]) -> String {
        let store = self.store();
        let mut full = vec![
            "--root",
            store.to_str().expect("utf-8 path"),
            "--storage-driver",
            "auto",
        ];
        full.extend_from_slice(args);
        let out = common::rbuild(&full);
        assert!(out.status.success(), "{}", describe(&full, &out));
        String::from_utf8_lossy(&out.stdout).into_owned()
    }
}

impl Drop for StoreOnOverlay {
    fn drop(&mut self) {
        common::unmount_below(&self.store());
        let _ = nix::mount::umount2(&self.merged, nix::mount::MntFlags::MNT_DETACH);
    }
}

/// Saves a freshly imported busybox image to `dir/busybox.tar`, so every store loads the very
/// same base (same image ID).
fn saved_busybox(dir: &Path) -> PathBuf {
    let origin = TestRoot::new();
    origin.import_busybox("bb");
    let archive = dir.join("busybox.tar");
    origin.ok(&["save", "-o", archive.to_str().expect("utf-8 path"), "bb"]);
    archive
}

fn context(dockerfile: &str) -> tempfile::TempDir {
    let ctx = tempfile::tempdir().expect("context dir");
    fs::write(ctx.path().join("Dockerfile"), dockerfile).expect("write Dockerfile");
    ctx
}

/// `rbuild --root ROOT [--storage-driver DRIVER] build -q -t built CTX` with
/// SOURCE_DATE_EPOCH set; returns the image ID. Without a driver the environment's applies.
fn build(root: &Path, driver: Option<&str>, ctx: &Path) -> String {
    let mut cmd = Command::new(common::rbuild_bin());
    cmd.arg("--root").arg(root);
    if let Some(driver) = driver {
        cmd.args(["--storage-driver", driver]);
    }
    let out = cmd
        .args(["build", "-q", "-t", "built"])
        .arg(ctx)
        .env("SOURCE_DATE_EPOCH", "1700000000")
        .output()
        .expect("run rbuild build");
    assert!(
        out.status.success(),
        "build in {} failed:\n{}",
        root.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    let id = String::from_utf8_lossy(&out.stdout).trim().to_string();
    assert!(id.starts_with("sha256:"), "unexpected build output {id:?}");
    id
}

/// The layer blobs of image `name` in the store at `root`, lowest first.
fn layer_blobs(root: &Path, name: &str) -> Vec<PathBuf> {
    let store = rbuild_layerfs::store::Store::open(root).expect("open store");
    let image = store.resolve_image(name).expect("resolve image");
    image
        .manifest
        .layers()
        .iter()
        .map(|layer| {
            let digest = layer.digest().to_string();
            let hex = digest.strip_prefix("sha256:").expect("sha256 digest");
            root.join("blobs/sha256").join(hex)
        })
        .collect()
}

/// The entry names of a gzip layer blob (`tar -tzf`), and whether its uncompressed stream
/// mentions any overlay xattr.
fn tar_listing(blob: &Path) -> (Vec<String>, bool) {
    let list = Command::new("tar")
        .arg("-tzf")
        .arg(blob)
        .output()
        .expect("run tar");
    assert!(list.status.success(), "tar -tzf {}", blob.display());
    let names = String::from_utf8_lossy(&list.stdout)
        .lines()
        .map(|l| l.trim_start_matches("./").trim_end_matches('/').to_string())
        .collect();
    let raw = Command::new("gzip")
        .arg("-dc")
        .arg(blob)
        .output()
        .expect("run gzip");
    let leaks = raw.stdout.windows(8).any(|w| w == b"overlay.");
    (names, leaks)
}

/// The filesystem type of the mount at `path` (from /proc/self/mountinfo).
fn fstype_at(path: &Path) -> Option<String> {
    let info = fs::read_to_string("/proc/self/mountinfo").ok()?;
    let path = path.to_str()?;
    info.lines().rev().find_map(|line| {
        let (left, right) = line.split_once(" - ")?;
        (left.split(' ').nth(4)? == path).then(|| right.split(' ').next().map(str::to_string))?
    })
}

/// True when `path` is an xattr whiteout: a zero-size regular file with mode 0 marked
/// `trusted.overlay.whiteout`.
fn is_xattr_whiteout(path: &Path) -> bool {
    let Ok(md) = fs::symlink_metadata(path) else {
        return false;
    };
    md.is_file()
        && md.size() == 0
        && md.mode() & 0o7777 == 0
        && has_xattr(path, "trusted.overlay.whiteout")
}

/// Whether `path` (not followed if a symlink) has the xattr `name` (libc: the binary's
/// dependencies have no xattr API).
fn has_xattr(path: &Path, name: &str) -> bool {
    use std::ffi::CString;
    use std::os::unix::ffi::OsStrExt;
    let (Ok(path), Ok(name)) = (
        CString::new(path.as_os_str().as_bytes()),
        CString::new(name),
    ) else {
        return false;
    };
    // SAFETY: both strings are NUL-terminated and outlive the call; a null buffer of size 0
    // only asks for the value's size.
    let n = unsafe { libc::lgetxattr(path.as_ptr(), name.as_ptr(), std::ptr::null_mut(), 0) };
    n >= 0
}

#[test]
fn a_loaded_image_that_deletes_base_files_unpacks_into_a_store_on_overlayfs() {
    let tmp = tempfile::tempdir().expect("temp dir");
    let base = saved_busybox(tmp.path());
    // Built on a plain store: the layer has `bin/.wh.ls` and an opaque /usr/sbin. (Not /etc:
    // RUN steps get /etc/hosts and /etc/resolv.conf bound in, as with docker.)
    let plain = TestRoot::new();
    plain.ok(&["load", "-i", base.to_str().expect("utf-8 path")]);
    let ctx = context(
        "FROM bb\nRUN rm /bin/ls && rm -rf /usr/sbin && mkdir /usr/sbin \
         && echo fresh > /usr/sbin/only\n",
    );
    plain.ok(&[
        "build",
        "-q",
        "-t",
        "deleter",
        ctx.path().to_str().expect("utf-8"),
    ]);
    let archive = tmp.path().join("deleter.tar");
    plain.ok(&["save", "-o", archive.to_str().expect("utf-8"), "deleter"]);

    let outer = StoreOnOverlay::new();
    outer.ok(&["load", "-i", archive.to_str().expect("utf-8")]);
    let shown = outer.ok(&[
        "run",
        "--rm",
        "deleter",
        "sh",
        "-c",
        "test ! -e /bin/ls && test -e /bin/cat && /bin/busybox ls /usr/sbin",
    ]);
    assert_eq!(shown, "only\n");
    // The unpacked layer holds the xattr form (whiteout devices are refused on overlayfs).
    let layers: Vec<PathBuf> = fs::read_dir(outer.store().join("layers"))
        .expect("layers dir")
        .map(|e| e.expect("layer").path())
        .collect();
    assert!(
        layers.iter().any(|l| is_xattr_whiteout(&l.join("bin/ls"))),
        "no layer holds an xattr whiteout for bin/ls: {layers:?}"
    );

    // `rbuild mount` is read-only: the kernel overlay mounts layers that live on overlayfs
    // and honours their xattr whiteouts.
    let path = PathBuf::from(outer.ok(&["mount", "deleter"]).trim());
    assert_eq!(fstype_at(&path).as_deref(), Some("overlay"));
    assert!(path.join("bin/cat").exists());
    assert!(!path.join("bin/ls").exists());
    let sbin: Vec<String> = fs::read_dir(path.join("usr/sbin"))
        .expect("read usr/sbin")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(sbin, ["only"]);
    let bin: Vec<String> = fs::read_dir(path.join("bin"))
        .expect("read bin")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .collect();
    assert!(!bin.iter().any(|n| n == "ls"), "readdir lists the whiteout");
    outer.ok(&["umount", "deleter"]);
}

const DELETING_DOCKERFILE: &str = "FROM bb
RUN rm /bin/ls && mkdir /x && mv /bin/cat /x/cat && mv /etc/group /x/group \\
    && rm -rf /usr/sbin && mkdir /usr/sbin && echo hi > /usr/sbin/hi
RUN test ! -e /bin/ls && test ! -e /bin/cat && rm /x/cat && /bin/busybox ls /x > /x-listing
";

#[test]
fn run_steps_on_a_store_on_overlayfs_delete_base_files_and_build_the_plain_store_image() {
    let tmp = tempfile::tempdir().expect("temp dir");
    let base = saved_busybox(tmp.path());
    let ctx = context(DELETING_DOCKERFILE);

    let outer = StoreOnOverlay::new();
    outer.ok(&["load", "-i", base.to_str().expect("utf-8 path")]);
    let on_overlayfs = build(&outer.store(), Some("auto"), ctx.path());
    let shown = outer.ok(&[
        "run",
        "--rm",
        "built",
        "/bin/busybox",
        "sh",
        "-c",
        "test ! -e /bin/ls && test ! -e /bin/cat && test ! -e /x/cat \
         && /bin/busybox cat /x-listing /usr/sbin/hi && /bin/busybox ls /usr/sbin",
    ]);
    assert_eq!(shown, "group\nhi\nhi\n");

    let blobs = layer_blobs(&outer.store(), "built");
    assert_eq!(blobs.len(), 3, "busybox plus two RUN layers");
    let (first, leaks) = tar_listing(&blobs[1]);
    assert!(!leaks, "overlay xattrs in the first RUN layer: {first:?}");
    for expected in [
        "bin/.wh.ls",
        "bin/.wh.cat",
        "etc/.wh.group",
        "usr/sbin/.wh..wh..opq",
        "x/cat",
        "x/group",
    ] {
        assert!(
            first.iter().any(|n| n == expected),
            "{expected} missing from the first RUN layer: {first:?}"
        );
    }
    let (second, leaks) = tar_listing(&blobs[2]);
    assert!(!leaks, "overlay xattrs in the second RUN layer: {second:?}");
    assert!(
        second.iter().any(|n| n == "x/.wh.cat"),
        "x/.wh.cat missing from the second RUN layer: {second:?}"
    );

    // A plain store (the environment's driver) builds the same image.
    let plain = TestRoot::new();
    plain.ok(&["load", "-i", base.to_str().expect("utf-8 path")]);
    let on_plain = build(plain.path(), None, ctx.path());
    assert_eq!(
        on_overlayfs, on_plain,
        "a store on overlayfs builds a different image"
    );
}
