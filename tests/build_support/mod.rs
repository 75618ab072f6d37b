//! Helpers for the `rbuild build` integration tests: a context folder, builds through the CLI,
//! and running a command inside a built image.
#![allow(dead_code)]

use crate::common::{describe, KillOnDrop, TestRoot};
use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Output;

/// A temporary build context folder, removed on drop.
pub struct Context {
    dir: tempfile::TempDir,
}

impl Context {
    /// An empty context with the given Dockerfile.
    pub fn new(dockerfile: &str) -> Context {
        let dir = tempfile::Builder::new()
            .prefix("rbuild-ctx-")
            .tempdir()
            .expect("create context dir");
        fs::write(dir.path().join("Dockerfile"), dockerfile).expect("write Dockerfile");
        Context { dir }
    }

    /// The folder.
    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    /// The folder as a string.
    pub fn dir(&self) -> String {
        self.path().to_string_lossy().into_owned()
    }

    /// Writes a file (creating parent dirs) and returns its path.
    pub fn write(&self, rel: &str, content: impl AsRef<[u8]>) -> PathBuf {
        let p = self.path().join(rel);
        fs::create_dir_all(p.parent().expect("parent")).expect("create parent dirs");
        fs::write(&p, content).expect("write context file");
        p
    }

    /// Sets the permission bits of a context file.
    pub fn chmod(&self, rel: &str, mode: u32) {
        fs::set_permissions(self.path().join(rel), fs::Permissions::from_mode(mode))
            .expect("chmod");
    }
}

/// Runs `rbuild build ARGS... CONTEXT`.
pub fn build(root: &TestRoot, ctx: &Context, args: &[&str]) -> Output {
    let dir = ctx.dir();
    let mut full: Vec<&str> = vec!["build", "--progress", "plain"];
    full.extend_from_slice(args);
    full.push(&dir);
    root.rbuild(&full)
}

/// Builds and returns (image ID, stdout); panics with the whole output on failure.
pub fn build_ok(root: &TestRoot, ctx: &Context, args: &[&str]) -> (String, String) {
    let out = build(root, ctx, args);
    assert!(out.status.success(), "{}", describe(args, &out));
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let id = stdout.lines().last().unwrap_or_default().trim().to_string();
    assert!(
        id.starts_with("sha256:"),
        "no image ID at the end of:\n{stdout}"
    );
    (id, stdout)
}

/// Runs `sh -c SCRIPT` inside `image` (as its USER, in its WORKDIR, with its ENV) and returns
/// the script's stdout, asserting success. The script runs in the runner's sandbox as a RUN
/// step of a throw-away build `FROM image`, so it needs nothing but `rbuild build`.
pub fn run_sh(root: &TestRoot, image: &str, script: &str) -> String {
    let wrapper =
        "printf '==BEGIN==\\n'; /bin/sh -c \"$0\"; rc=$?; printf '\\n==END==\\n'; exit $rc";
    let argv = serde_json::to_string(&["/bin/sh", "-c", wrapper, script]).expect("json");
    let ctx = Context::new(&format!("FROM {image}\nRUN {argv}\n"));
    let out = build(root, &ctx, &["--no-cache"]);
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "script {script:?} failed in {image}:\n{}",
        describe(&["build"], &out)
    );
    let start = stdout.find("==BEGIN==\n").expect("begin marker") + "==BEGIN==\n".len();
    let end = stdout.rfind("\n==END==").expect("end marker");
    stdout[start..end].to_string()
}

/// Runs `image` with its own ENTRYPOINT/CMD (and extra args) and returns the output.
pub fn run_image(root: &TestRoot, image: &str, args: &[&str]) -> Output {
    let mut full = vec!["run", "--rm", image];
    full.extend_from_slice(args);
    root.rbuild(&full)
}

/// `rbuild inspect -f TEMPLATE IMAGE`, trimmed.
pub fn inspect(root: &TestRoot, image: &str, template: &str) -> String {
    root.ok(&["inspect", "-f", template, image])
        .trim()
        .to_string()
}

/// The image config JSON of `image`, read from the store's blobs (so Docker-only fields such
/// as Healthcheck show exactly as written).
pub fn config_json(root: &TestRoot, image: &str) -> serde_json::Value {
    let id = inspect(root, image, "{{.Id}}");
    let hex = id.trim_start_matches("sha256:");
    let data = fs::read(root.path().join("blobs/sha256").join(hex)).expect("read config blob");
    serde_json::from_slice(&data).expect("config JSON")
}

/// `tar -tvf` of each layer blob of `image` (lowest first), one listing per layer; the blobs
/// are gzip or zstd, which GNU tar recognises by content. Times are shown in UTC.
pub fn layer_listings(root: &TestRoot, image: &str) -> Vec<String> {
    let store = rbuild_layerfs::store::Store::open(root.path()).expect("open store");
    let img = store.resolve_image(image).expect("resolve image");
    img.manifest
        .layers()
        .iter()
        .map(|layer| {
            let digest = layer.digest().to_string();
            let hex = digest.strip_prefix("sha256:").expect("sha256 digest");
            let blob = root.path().join("blobs/sha256").join(hex);
            let out = std::process::Command::new("tar")
                .env("TZ", "UTC")
                .arg("-tvf")
                .arg(&blob)
                .output()
                .expect("run tar");
            assert!(out.status.success(), "tar -tvf {}", blob.display());
            String::from_utf8_lossy(&out.stdout).into_owned()
        })
        .collect()
}

/// Sets xattr `name` on `path` (libc: std has no xattr API).
pub fn set_xattr(path: &std::path::Path, name: &str, value: &[u8]) {
    let p = std::ffi::CString::new(path.as_os_str().as_encoded_bytes()).expect("path");
    let n = std::ffi::CString::new(name).expect("name");
    // SAFETY: valid C strings and a buffer of the given length.
    let r = unsafe {
        libc::setxattr(
            p.as_ptr(),
            n.as_ptr(),
            value.as_ptr().cast(),
            value.len(),
            0,
        )
    };
    assert_eq!(r, 0, "setxattr {name} on {}", path.display());
}

/// The value of xattr `name` on `path`, if it has one.
pub fn get_xattr(path: &std::path::Path, name: &str) -> Option<Vec<u8>> {
    let p = std::ffi::CString::new(path.as_os_str().as_encoded_bytes()).expect("path");
    let n = std::ffi::CString::new(name).expect("name");
    let mut buf = vec![0u8; 256];
    // SAFETY: valid C strings and a buffer of the given length.
    let r = unsafe { libc::getxattr(p.as_ptr(), n.as_ptr(), buf.as_mut_ptr().cast(), buf.len()) };
    (r >= 0).then(|| {
        buf.truncate(r as usize);
        buf
    })
}

/// The step lines of a plain build output that were cache hits (followed by `--> CACHED`).
pub fn cache_hits(out: &str) -> Vec<String> {
    out.lines()
        .zip(out.lines().skip(1))
        .filter(|(_, next)| *next == "--> CACHED")
        .map(|(step, _)| step.to_string())
        .collect()
}

/// Starts `rbuild --root ROOT build ARGS... CONTEXT` in the background (killed on drop, its
/// output discarded) and waits until its RUN step has made `started` in one of the store's
/// cache mounts (the step must `touch /<cache target>/started`); panics when it never does.
pub fn build_until_started(root: &TestRoot, ctx: &Context, args: &[&str]) -> KillOnDrop {
    let root_s = root.root_str();
    let dir = ctx.dir();
    let child = std::process::Command::new(crate::common::rbuild_bin())
        .args(["--root", &root_s, "build"])
        .args(args)
        .arg(&dir)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("start rbuild build");
    let child = KillOnDrop(child);
    assert!(
        crate::common::poll_until(6000, || step_started(root)),
        "the RUN step never started"
    );
    child
}

/// Whether one of the store's cache mounts holds `started` (see [`build_until_started`]).
pub fn step_started(root: &TestRoot) -> bool {
    std::fs::read_dir(root.path().join("cache/run-mounts"))
        .map(|d| d.flatten().any(|e| e.path().join("data/started").exists()))
        .unwrap_or(false)
}

/// Pids of the slirp4netns processes whose parent is `parent`.
pub fn slirp_children_of(parent: i32) -> Vec<i32> {
    std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter_map(|e| e.file_name().to_string_lossy().parse::<i32>().ok())
        .filter(|pid| {
            let comm = std::fs::read_to_string(format!("/proc/{pid}/comm")).unwrap_or_default();
            let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
            let ppid = stat
                .rfind(')')
                .and_then(|i| stat[i + 2..].split(' ').nth(1))
                .and_then(|p| p.parse::<i32>().ok());
            comm.trim() == "slirp4netns" && ppid == Some(parent)
        })
        .collect()
}
