//! `rbuild pipeline`: a DAG of images from rbuild.yaml, built in parallel, pushed to a real
//! registry, with a summary, metadata file, `--print`, and per-image failure isolation.

mod common;
#[path = "common/registry.rs"]
mod registry_server;

use common::{describe, TestRoot};
use registry_server::TestRegistry;
use std::fs;
use std::path::Path;
use std::process::Command;

fn write(dir: &Path, rel: &str, text: &str) {
    let p = dir.join(rel);
    fs::create_dir_all(p.parent().unwrap()).unwrap();
    fs::write(p, text).unwrap();
}

/// Reads a file of an image through `rbuild mount`.
fn file_in_image(root: &TestRoot, image: &str, path: &str) -> String {
    let merged = root.ok(&["mount", image]);
    let text = fs::read_to_string(Path::new(merged.trim()).join(path.trim_start_matches('/')));
    root.ok(&["umount", image]);
    text.unwrap_or_else(|e| panic!("{path} in {image}: {e}"))
}

#[test]
fn three_image_pipeline_builds_in_dependency_order_and_pushes() {
    let root = TestRoot::new();
    root.import_busybox("busybox");
    let reg = TestRegistry::start();
    let host = reg.host().to_string();
    let proj = tempfile::tempdir().unwrap();
    let p = proj.path();
    write(
        p,
        "base/Dockerfile",
        "FROM busybox\nRUN echo from-base > /base.txt\n",
    );
    write(
        p,
        "app/app.Dockerfile",
        &format!(
            "FROM busybox AS broken\nRUN exit 7\n\
             FROM {host}/team/base:1 AS final\nARG VERSION\nRUN echo \"app $VERSION\" > /app.txt\n"
        ),
    );
    write(
        p,
        "tool/Dockerfile",
        "FROM busybox\nRUN echo tool > /tool.txt\n",
    );
    write(
        p,
        "rbuild.yaml",
        &format!(
            "images:\n  base:\n    context: base\n    tags: [{host}/team/base:1]\n  app:\n    context: app\n    dockerfile: app.Dockerfile\n    target: final\n    args: {{VERSION: \"7\"}}\n    labels: {{org.opencontainers.image.source: \"https://example.com/app\"}}\n    depends_on: [base]\n    tags: [{host}/team/app:1, {host}/team/app:latest]\n  tool:\n    context: tool\n    tags: [{host}/team/tool:1]\n"
        ),
    );
    let yaml = p.join("rbuild.yaml");
    let meta = p.join("meta.json");
    let args = [
        "pipeline",
        "-f",
        yaml.to_str().unwrap(),
        "--push",
        "--metadata-file",
        meta.to_str().unwrap(),
    ];
    let out = root.ok(&args);
    assert!(out.contains("SUMMARY"), "{out}");
    for name in ["base", "app", "tool"] {
        assert!(
            out.lines()
                .any(|l| l.starts_with(name) && l.contains("yes")),
            "{name} pushed?\n{out}"
        );
    }
    let meta: serde_json::Value = serde_json::from_slice(&fs::read(&meta).unwrap()).unwrap();
    for name in ["base", "app", "tool"] {
        let id = meta[name]["image_id"].as_str().unwrap_or_default();
        assert!(id.starts_with("sha256:"), "{name}: {meta}");
    }
    assert_eq!(meta["app"]["pushed"].as_array().unwrap().len(), 2, "{meta}");
    // app is built on base (by its pipeline tag), with its build arg, and skips the broken stage.
    let app_tag = format!("{host}/team/app:1");
    assert_eq!(file_in_image(&root, &app_tag, "/base.txt"), "from-base\n");
    assert_eq!(file_in_image(&root, &app_tag, "/app.txt"), "app 7\n");
    let labels = root.ok(&["inspect", "-f", "{{json .Config.Labels}}", &app_tag]);
    assert!(labels.contains("https://example.com/app"), "{labels}");
    // The registry really has what the pipeline pushed.
    let sk = Command::new("skopeo")
        .args([
            "inspect",
            "--tls-verify=false",
            &format!("docker://{host}/team/app:latest"),
        ])
        .output()
        .unwrap();
    assert!(
        sk.status.success(),
        "{}",
        String::from_utf8_lossy(&sk.stderr)
    );
    let sk: serde_json::Value = serde_json::from_slice(&sk.stdout).unwrap();
    assert_eq!(
        sk["Labels"]["org.opencontainers.image.source"],
        "https://example.com/app"
    );
}

#[test]
fn a_broken_image_is_reported_and_the_others_still_build() {
    let root = TestRoot::new();
    root.import_busybox("busybox");
    let proj = tempfile::tempdir().unwrap();
    let p = proj.path();
    write(p, "ok/Dockerfile", "FROM busybox\nRUN echo ok > /ok.txt\n");
    write(
        p,
        "broken/Dockerfile",
        "FROM busybox\nRUN echo about to fail && exit 3\n",
    );
    write(p, "after/Dockerfile", "FROM broken:1\n");
    write(
        p,
        "rbuild.yaml",
        "images:\n  ok: {context: ok, tags: [ok:1]}\n  broken: {context: broken, tags: [broken:1]}\n  after: {context: after, depends_on: [broken], tags: [after:1]}\n",
    );
    let yaml = p.join("rbuild.yaml");
    let args = ["pipeline", "-f", yaml.to_str().unwrap()];
    let out = root.rbuild(&args);
    assert!(!out.status.success(), "{}", describe(&args, &out));
    let stderr = String::from_utf8_lossy(&out.stderr);
    let last = stderr.lines().last().unwrap_or_default();
    assert!(
        last.contains("broken") && last.contains("Dockerfile:2"),
        "{stderr}"
    );
    assert!(last.contains("after (skipped: broken failed)"), "{stderr}");
    let images = root.ok(&["images"]);
    assert!(images.contains("ok "), "{images}");
    assert!(!images.contains("after"), "{images}");
}

#[test]
fn print_shows_the_resolved_plan_and_builds_nothing() {
    let root = TestRoot::new();
    let proj = tempfile::tempdir().unwrap();
    let p = proj.path();
    write(p, "a/Dockerfile", "FROM busybox\n");
    write(p, "b/Dockerfile", "FROM a:1\n");
    write(
        p,
        "rbuild.yaml",
        "images:\n  b: {context: b, depends_on: [a]}\n  a: {context: a, tags: [a:1]}\n",
    );
    let yaml = p.join("rbuild.yaml");
    let out = root.ok(&["pipeline", "-f", yaml.to_str().unwrap(), "--print"]);
    let plan: serde_json::Value = serde_json::from_str(&out).unwrap();
    let names: Vec<_> = plan["images"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["a", "b"]);
    assert_eq!(plan["images"][1]["context"], p.join("b").to_str().unwrap());
    assert!(
        !root.path().join("index.json").exists() || root.ok(&["images", "-q"]).trim().is_empty()
    );
    let err = root.fails(&["pipeline", "-f", yaml.to_str().unwrap(), "--print", "zzz"]);
    assert!(err.contains("no image \"zzz\""), "{err}");
}
