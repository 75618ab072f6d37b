//! CLI: save -> skopeo (docker-archive) and umoci (OCI layout) agree with rbuild on files and
//! config; load of rbuild's archive and of an OCI archive made by skopeo.

mod common;

use common::TestRoot;
use std::path::Path;
use std::process::Command;

fn run_ok(cmd: &mut Command) -> Vec<u8> {
    let out = cmd.output().expect("run tool");
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}

fn json(bytes: &[u8]) -> serde_json::Value {
    serde_json::from_slice(bytes).expect("valid JSON")
}

/// Relative path -> (kind, content or link target) for every entry below `root`.
fn tree(root: &Path) -> std::collections::BTreeMap<String, String> {
    let mut out = std::collections::BTreeMap::new();
    for e in walkdir::WalkDir::new(root).min_depth(1) {
        let e = e.unwrap();
        let rel = e
            .path()
            .strip_prefix(root)
            .unwrap()
            .to_string_lossy()
            .into_owned();
        let ft = e.file_type();
        let v = if ft.is_symlink() {
            format!("link:{}", std::fs::read_link(e.path()).unwrap().display())
        } else if ft.is_dir() {
            "dir".to_string()
        } else {
            let data = std::fs::read(e.path()).unwrap();
            format!("file:{}", rbuild_layerfs::Digest::of_bytes(&data))
        };
        out.insert(rel, v);
    }
    out
}

#[test]
fn saved_archive_is_read_by_skopeo_and_umoci_like_rbuild_sees_it() {
    let t = TestRoot::new();
    let id = t.import_busybox("busybox");
    let work = tempfile::tempdir().unwrap();
    let archive = work.path().join("busybox.tar");
    t.ok(&["save", "-o", archive.to_str().unwrap(), "busybox"]);

    // docker-archive face.
    let da = format!("docker-archive:{}", archive.display());
    let cfg = json(&run_ok(
        Command::new("skopeo").args(["inspect", "--config", &da]),
    ));
    let rb: serde_json::Value = json(t.ok(&["inspect", "busybox"]).as_bytes());
    assert_eq!(cfg["config"]["Cmd"], rb[0]["Config"]["Cmd"]);
    assert_eq!(cfg["rootfs"]["diff_ids"], rb[0]["RootFS"]["Layers"]);
    let raw_cfg = run_ok(Command::new("skopeo").args(["inspect", "--raw", "--config", &da]));
    assert_eq!(rbuild_layerfs::Digest::of_bytes(&raw_cfg).as_str(), id);
    let info = json(&run_ok(Command::new("skopeo").args(["inspect", &da])));
    assert_eq!(info["Layers"].as_array().unwrap().len(), 1);

    // OCI layout face: extract the same tar and unpack it with umoci.
    let layout = work.path().join("layout");
    std::fs::create_dir(&layout).unwrap();
    run_ok(
        Command::new("tar")
            .arg("-xf")
            .arg(&archive)
            .arg("-C")
            .arg(&layout),
    );
    let bundle = work.path().join("bundle");
    run_ok(
        Command::new("umoci")
            .arg("unpack")
            .arg("--image")
            .arg(format!("{}:busybox:latest", layout.display()))
            .arg(&bundle),
    );
    let runtime = json(&std::fs::read(bundle.join("config.json")).unwrap());
    assert_eq!(runtime["process"]["args"], serde_json::json!(["sh"]));

    // Files: umoci's rootfs == rbuild's read-only mount of the image.
    let mounted = t.ok(&["mount", "busybox"]);
    let mounted = Path::new(mounted.trim());
    let rbuild_tree = tree(mounted);
    let umoci_tree = tree(&bundle.join("rootfs"));
    t.ok(&["umount", "busybox"]);
    assert!(rbuild_tree.contains_key("bin/busybox"));
    assert_eq!(rbuild_tree, umoci_tree);
}

#[test]
fn load_restores_an_image_with_the_same_id_and_reads_oci_archives() {
    let a = TestRoot::new();
    let id = a.import_busybox("busybox:1");
    let work = tempfile::tempdir().unwrap();
    let archive = work.path().join("busybox.tar");
    a.ok(&["save", "-o", archive.to_str().unwrap(), "busybox:1"]);

    let b = TestRoot::new();
    let out = b.ok(&["load", "-i", archive.to_str().unwrap()]);
    assert_eq!(out.trim(), "Loaded image: busybox:1");
    assert_eq!(b.ok(&["inspect", "-f", "{{.Id}}", "busybox:1"]).trim(), id);
    b.ok(&["system", "check"]);

    // An OCI archive written by skopeo from rbuild's docker-archive.
    let oci = work.path().join("oci.tar");
    run_ok(Command::new("skopeo").args([
        "copy",
        &format!("docker-archive:{}", archive.display()),
        &format!("oci-archive:{}:other/busybox:2", oci.display()),
    ]));
    let c = TestRoot::new();
    let out = c.ok(&["load", "-i", oci.to_str().unwrap()]);
    assert_eq!(out.trim(), "Loaded image: other/busybox:2");
    // skopeo may rewrite the config while converting, so the expected ID is the digest of the
    // config in the OCI archive it wrote.
    let raw = run_ok(Command::new("skopeo").args([
        "inspect",
        "--raw",
        "--config",
        &format!("oci-archive:{}:other/busybox:2", oci.display()),
    ]));
    let expected = rbuild_layerfs::Digest::of_bytes(&raw);
    assert_eq!(
        c.ok(&["inspect", "-f", "{{.Id}}", "other/busybox:2"])
            .trim(),
        expected.as_str()
    );
    let diff_ids = |r: &TestRoot, n: &str| r.ok(&["inspect", "-f", "{{json .RootFS.Layers}}", n]);
    assert_eq!(diff_ids(&c, "other/busybox:2"), diff_ids(&a, &id));
    let mounted = c.ok(&["mount", "other/busybox:2"]);
    assert!(Path::new(mounted.trim()).join("bin/busybox").is_file());
    c.ok(&["umount", "other/busybox:2"]);
    c.ok(&["system", "check"]);
}

#[test]
fn load_reads_skopeo_docker_archives_and_save_streams_to_stdout() {
    let a = TestRoot::new();
    let id = a.import_busybox("busybox");
    let work = tempfile::tempdir().unwrap();
    // skopeo writes a docker-archive with uncompressed layers from the store's OCI layout.
    let da = work.path().join("skopeo-docker.tar");
    run_ok(Command::new("skopeo").args([
        "copy",
        &format!("oci:{}:busybox:latest", a.root_str()),
        &format!("docker-archive:{}:mirror/busybox:3", da.display()),
    ]));
    let b = TestRoot::new();
    let out = b.ok(&["load", "-i", da.to_str().unwrap()]);
    assert_eq!(out.trim(), "Loaded image: mirror/busybox:3");
    assert_eq!(
        b.ok(&["inspect", "-f", "{{.Id}}", "mirror/busybox:3"])
            .trim(),
        id
    );
    b.ok(&["system", "check"]);

    // save with no -o streams the archive to stdout; load reads stdin.
    let streamed = work.path().join("streamed.tar");
    let status = Command::new(common::rbuild_bin())
        .args(["--root", &a.root_str(), "save", "busybox"])
        .stdout(std::fs::File::create(&streamed).unwrap())
        .status()
        .unwrap();
    assert!(status.success());
    let c = TestRoot::new();
    let out = Command::new(common::rbuild_bin())
        .args(["--root", &c.root_str(), "load"])
        .stdin(std::fs::File::open(&streamed).unwrap())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(c.ok(&["inspect", "-f", "{{.Id}}", "busybox"]).trim(), id);
}
