//! CLI: import, images, inspect, history, tag, rmi, system check, and skopeo reading the store.

mod common;

use common::TestRoot;
use std::process::Command;

#[test]
fn import_then_list_inspect_history_and_check() {
    let t = TestRoot::new();
    let id = t.import_busybox("busybox");

    let quiet = t.ok(&["images", "-q"]);
    assert_eq!(quiet.trim(), &id[7..19]);
    let table = t.ok(&["images"]);
    assert!(table.starts_with("REPOSITORY"), "{table}");
    assert!(
        table.contains("busybox") && table.contains(&id[7..19]),
        "{table}"
    );

    let json_line = t.ok(&["images", "--format", "json"]);
    let row: serde_json::Value = serde_json::from_str(json_line.trim()).unwrap();
    assert_eq!(row["Repository"], "busybox");
    assert_eq!(row["Tag"], "latest");
    assert_eq!(row["ID"], &id[7..19]);

    assert_eq!(t.ok(&["inspect", "-f", "{{.Id}}", "busybox"]).trim(), id);
    assert_eq!(
        t.ok(&["inspect", "-f", "{{.Config.Cmd}}", "busybox"])
            .trim(),
        "[sh]"
    );
    assert_eq!(
        t.ok(&["inspect", "-f", "{{json .Config.Cmd}}", id.as_str()])
            .trim(),
        r#"["sh"]"#
    );
    let doc: serde_json::Value =
        serde_json::from_str(&t.ok(&["inspect", "busybox:latest"])).unwrap();
    assert_eq!(doc[0]["Id"], id.as_str());
    assert_eq!(doc[0]["RepoTags"][0], "busybox:latest");
    assert_eq!(doc[0]["Os"], "linux");
    assert_eq!(doc[0]["RootFS"]["Layers"].as_array().unwrap().len(), 1);

    t.ok(&["tag", "busybox", "team/app:1.0"]);
    let refs = |f: &str| {
        t.ok(&[
            "images",
            "--filter",
            f,
            "--format",
            "{{.Repository}}:{{.Tag}}",
        ])
    };
    assert_eq!(refs("reference=team/*").trim(), "team/app:1.0");
    assert_eq!(refs("reference=busy*").trim(), "busybox:latest");
    assert_eq!(refs("dangling=true").trim(), "");
    assert_eq!(refs("label=nothing").trim(), "");
    let err = t.fails(&["images", "--filter", "bogus=1"]);
    assert!(err.contains("unsupported filter"), "{err}");

    // Docker's `image` group spellings.
    assert_eq!(t.ok(&["image", "ls", "-q", "busybox"]).trim(), &id[7..19]);
    assert_eq!(
        t.ok(&["image", "inspect", "-f", "{{.Id}}", "busybox"])
            .trim(),
        id
    );
    t.ok(&["image", "rm", "team/app:1.0"]);

    let history = t.ok(&["history", "busybox"]);
    assert!(history.contains("Imported from"), "{history}");

    let check = t.ok(&["system", "check"]);
    assert!(check.contains("consistent"), "{check}");
    t.ok(&["system", "df"]);
}

#[test]
fn import_applies_changes_and_message_and_reads_tars() {
    let t = TestRoot::new();
    let src = tempfile::tempdir().unwrap();
    common::busybox_rootfs(src.path());
    let tar_dir = tempfile::tempdir().unwrap();
    let tar_path = tar_dir.path().join("rootfs.tar.gz");
    let status = Command::new("tar")
        .arg("-czf")
        .arg(&tar_path)
        .arg("-C")
        .arg(src.path())
        .arg(".")
        .status()
        .unwrap();
    assert!(status.success());
    let out = t.ok(&[
        "import",
        "-c",
        "ENV GREETING=hello",
        "--change",
        "WORKDIR /srv",
        "--change",
        r#"ENTRYPOINT ["/bin/sh", "-c"]"#,
        "-m",
        "from a tarball",
        tar_path.to_str().unwrap(),
        "example.com/team/base:1",
    ]);
    let id = out.trim().to_string();
    let env = t.ok(&[
        "inspect",
        "-f",
        "{{.Config.Env}}",
        "example.com/team/base:1",
    ]);
    assert_eq!(env.trim(), "[GREETING=hello]");
    let wd = t.ok(&["inspect", "-f", "{{.Config.WorkingDir}} {{.Comment}}", &id]);
    assert_eq!(wd.trim(), "/srv from a tarball");
    // The tar's files are in the image.
    let mounted = t.ok(&["mount", &id]);
    let merged = std::path::Path::new(mounted.trim());
    assert!(merged.join("bin/busybox").is_file());
    assert_eq!(
        std::fs::read_to_string(merged.join("etc/group")).unwrap(),
        std::fs::read_to_string(src.path().join("etc/group")).unwrap()
    );
    t.ok(&["umount", &id]);
    let err = t.fails(&[
        "import",
        "--change",
        "RUN echo",
        src.path().to_str().unwrap(),
    ]);
    assert!(err.contains("RUN is not supported"), "{err}");
    let err = t.fails(&["import", src.path().to_str().unwrap(), "Bad:Name:x"]);
    assert!(err.contains("invalid image reference"), "{err}");
}

#[test]
fn tag_and_rmi_follow_docker_semantics() {
    let t = TestRoot::new();
    let id = t.import_busybox("busybox");
    t.ok(&["tag", "busybox", "mirror/busybox:1"]);
    assert_eq!(
        t.ok(&["inspect", "-f", "{{.Id}}", "mirror/busybox:1"])
            .trim(),
        id
    );

    // By ID with two tags: refused without -f.
    let err = t.fails(&["rmi", &id[7..19]]);
    assert!(err.contains("must be forced"), "{err}");
    // By tag: untag only.
    let out = t.ok(&["rmi", "mirror/busybox:1"]);
    assert!(
        out.contains("Untagged: mirror/busybox:1") && !out.contains("Deleted"),
        "{out}"
    );
    t.ok(&["inspect", "busybox"]);
    // Last tag: the image goes.
    let out = t.ok(&["rmi", "busybox"]);
    assert!(out.contains(&format!("Deleted: {id}")), "{out}");
    let err = t.fails(&["inspect", "busybox"]);
    assert!(err.contains("no such image"), "{err}");
    assert_eq!(t.ok(&["images", "-q"]).trim(), "");
    // prune frees the blobs; the store stays consistent.
    t.ok(&["system", "prune", "-f"]);
    assert!(std::fs::read_dir(t.path().join("blobs/sha256"))
        .unwrap()
        .next()
        .is_none());
    t.ok(&["system", "check"]);
}

#[test]
fn skopeo_reads_the_store_as_an_oci_layout() {
    let t = TestRoot::new();
    let id = t.import_busybox("busybox");
    let manifest_digest = t.ok(&["inspect", "-f", "{{.Descriptor.digest}}", "busybox"]);
    let out = Command::new("skopeo")
        .args(["inspect", &format!("oci:{}:busybox:latest", t.root_str())])
        .output()
        .expect("run skopeo");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let doc: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(doc["Digest"], manifest_digest.trim());
    let out = Command::new("skopeo")
        .args([
            "inspect",
            "--config",
            &format!("oci:{}:busybox:latest", t.root_str()),
        ])
        .output()
        .unwrap();
    assert!(out.status.success());
    let cfg: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(cfg["config"]["Cmd"][0], "sh");
    // The config skopeo reads is the one whose digest is the image ID.
    let raw = Command::new("skopeo")
        .args([
            "inspect",
            "--raw",
            "--config",
            &format!("oci:{}:busybox:latest", t.root_str()),
        ])
        .output()
        .unwrap();
    let digest = rbuild_layerfs::Digest::of_bytes(&raw.stdout);
    assert_eq!(digest.as_str(), id);
}

#[test]
fn rmi_refuses_an_image_a_container_uses_and_prune_keeps_it() {
    let t = TestRoot::new();
    let id = t.import_busybox("busybox");
    // A container record that names the image (the runner keeps containers/<id>/*.json).
    let c = t.path().join("containers/c0ffee");
    std::fs::create_dir_all(&c).unwrap();
    std::fs::write(c.join("state.json"), format!(r#"{{"image":"{id}"}}"#)).unwrap();
    let err = t.fails(&["rmi", "busybox"]);
    assert!(err.contains("containers c0ffee use it"), "{err}");
    t.ok(&["rmi", "-f", "busybox"]);
    // Untagged now, but the container still references it: prune keeps its blobs.
    t.ok(&["system", "prune"]);
    let id_hex = &id[7..];
    assert!(t.path().join("blobs/sha256").join(id_hex).is_file());
    let blobs = std::fs::read_dir(t.path().join("blobs/sha256"))
        .unwrap()
        .count();
    assert_eq!(blobs, 3, "config, manifest and layer blob are all kept");
    let layers = std::fs::read_dir(t.path().join("layers")).unwrap().count();
    assert_eq!(layers, 1, "the unpacked layer is kept");
    t.ok(&["system", "check"]);
    std::fs::remove_dir_all(&c).unwrap();
    t.ok(&["system", "prune"]);
    assert!(!t.path().join("blobs/sha256").join(id_hex).exists());
}

#[test]
fn import_reads_a_tar_from_stdin() {
    let t = TestRoot::new();
    let src = tempfile::tempdir().unwrap();
    common::busybox_rootfs(src.path());
    let mut tar = Command::new("tar")
        .arg("-cf")
        .arg("-")
        .arg("-C")
        .arg(src.path())
        .arg(".")
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let out = Command::new(common::rbuild_bin())
        .args(["--root", &t.root_str(), "import", "-", "fromstdin:1"])
        .stdin(tar.stdout.take().unwrap())
        .output()
        .unwrap();
    assert!(tar.wait().unwrap().success());
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let id = String::from_utf8_lossy(&out.stdout).trim().to_string();
    assert_eq!(
        t.ok(&["inspect", "-f", "{{.Id}}", "fromstdin:1"]).trim(),
        id
    );
    let mounted = t.ok(&["mount", "fromstdin:1"]);
    assert!(std::path::Path::new(mounted.trim())
        .join("etc/passwd")
        .is_file());
    t.ok(&["umount", "fromstdin:1"]);
}

#[test]
fn system_check_exits_1_naming_a_corrupt_blob() {
    let t = TestRoot::new();
    let id = t.import_busybox("busybox");
    let config = t.path().join("blobs/sha256").join(&id[7..]);
    let mut data = std::fs::read(&config).unwrap();
    data[0] ^= 0x20;
    std::fs::write(&config, data).unwrap();
    let out = t.rbuild(&["system", "check"]);
    assert_eq!(
        out.status.code(),
        Some(1),
        "{}",
        common::describe(&["system", "check"], &out)
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains(&format!("blob {id}: content hashes to")),
        "{stdout}"
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("problem(s)"), "{stderr}");
    // The broken image can still be untagged, and prune then clears its blobs.
    let out = t.ok(&["rmi", "busybox"]);
    assert!(out.contains("Untagged: busybox:latest"), "{out}");
    t.ok(&["system", "prune"]);
    t.ok(&["system", "check"]);
}
