//! Registry-shared build cache (`--cache-to`, `--cache-from`, pipeline `cache:`) against a real
//! registry: a fresh store reuses layers without running steps, pulls a layer only when a step
//! mounts it or the final image needs it, and a missing or corrupt cache only warns.

mod build_support;
mod common;
#[path = "common/registry.rs"]
mod registry_server;

use build_support::Context;
use common::{describe, TestRoot};
use registry_server::TestRegistry;
use std::collections::BTreeSet;
use std::fs;
use std::path::Path;
use std::process::Output;

/// A RUN whose output differs on every run (busybox `date` has no %N).
const STAMP: &str = "date +%s > /t && cat /proc/sys/kernel/random/uuid >> /t";

/// Imports busybox into a store as `HOST/lib/busybox:1` and pushes it, so that every fresh store
/// can pull the very same base image (import itself is not deterministic).
fn publish_base(reg: &TestRegistry) -> String {
    let name = format!("{}/lib/busybox:1", reg.host());
    let seed = TestRoot::new();
    seed.import_busybox(&name);
    seed.ok(&["push", &name]);
    name
}

/// A fresh store holding only the pulled base image.
fn fresh_root(base: &str) -> TestRoot {
    let root = TestRoot::new();
    root.ok(&["pull", base]);
    root
}

fn build(root: &TestRoot, ctx: &Context, args: &[&str]) -> Output {
    let dir = ctx.dir();
    let mut full = vec!["build", "--progress", "plain"];
    full.extend_from_slice(args);
    full.push(&dir);
    root.rbuild(&full)
}

/// Builds and returns (image ID, stdout, stderr).
fn build_ok(root: &TestRoot, ctx: &Context, args: &[&str]) -> (String, String, String) {
    let out = build(root, ctx, args);
    assert!(out.status.success(), "{}", describe(args, &out));
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    let id = stdout.lines().last().unwrap_or_default().trim().to_string();
    assert!(id.starts_with("sha256:"), "{stdout}");
    (id, stdout, stderr)
}

/// The steps (after FROM) of plain progress output, each with whether it was cached.
fn steps(out: &str, prefix: &str) -> Vec<(String, bool)> {
    let lines: Vec<&str> = out.lines().filter_map(|l| l.strip_prefix(prefix)).collect();
    let mut v = Vec::new();
    for (i, l) in lines.iter().enumerate() {
        if let Some(step) = l.strip_prefix("STEP ") {
            if step.contains(": FROM ") {
                continue;
            }
            let cached = lines.get(i + 1) == Some(&"--> CACHED");
            v.push((step.to_string(), cached));
        }
    }
    v
}

fn file_in_image(root: &TestRoot, image: &str, path: &str) -> String {
    let merged = root.ok(&["mount", image]);
    let text = fs::read_to_string(Path::new(merged.trim()).join(path.trim_start_matches('/')));
    root.ok(&["umount", image]);
    text.unwrap_or_else(|e| panic!("{path} in {image}: {e}"))
}

/// Layer blob digests of a stored image, base first (from the store's OCI layout).
fn layer_digests(root: &TestRoot, id: &str) -> Vec<String> {
    let blob = |d: &str| -> serde_json::Value {
        let p = root
            .path()
            .join("blobs/sha256")
            .join(d.trim_start_matches("sha256:"));
        serde_json::from_slice(&fs::read(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display())))
            .expect("json blob")
    };
    let index: serde_json::Value =
        serde_json::from_slice(&fs::read(root.path().join("index.json")).unwrap()).unwrap();
    for m in index["manifests"].as_array().unwrap() {
        let manifest = blob(m["digest"].as_str().unwrap());
        if manifest["config"]["digest"].as_str() == Some(id) {
            return manifest["layers"]
                .as_array()
                .unwrap()
                .iter()
                .map(|l| l["digest"].as_str().unwrap().to_string())
                .collect();
        }
    }
    panic!("image {id} not in the store index");
}

fn blobs(root: &TestRoot) -> BTreeSet<String> {
    fs::read_dir(root.path().join("blobs/sha256"))
        .unwrap()
        .map(|e| format!("sha256:{}", e.unwrap().file_name().to_string_lossy()))
        .collect()
}

/// The digests a build reported as fetched from the shared cache.
fn fetched(stderr: &str) -> Vec<String> {
    stderr
        .lines()
        .filter_map(|l| l.strip_prefix("cache: fetched "))
        .flat_map(|l| {
            l.split_once(": ")
                .map(|x| x.1)
                .unwrap_or_default()
                .split(' ')
        })
        .map(str::to_string)
        .collect()
}

fn assert_consistent(root: &TestRoot) {
    let out = root.ok(&["system", "check"]);
    assert!(out.contains("consistent"), "{out}");
}

#[test]
fn a_fresh_store_reuses_the_registry_cache_without_running_any_step() {
    let reg = TestRegistry::start();
    let base = publish_base(&reg);
    let cache = format!("{}/team/cache", reg.host());
    let ctx = Context::new(&format!(
        "FROM {base}\nRUN {STAMP}\nRUN echo two > /u\nENV MODE=cached\nCOPY f.txt /f.txt\n"
    ));
    ctx.write("f.txt", "context file\n");

    let first = fresh_root(&base);
    let (id1, out1, err1) = build_ok(&first, &ctx, &["-t", "app", "--cache-to", &cache]);
    assert!(steps(&out1, "").iter().all(|(_, c)| !c), "{out1}");
    assert!(err1.contains("cache: exported 4 entries"), "{err1}");
    let stamp = file_in_image(&first, "app", "/t");

    let second = fresh_root(&base);
    let before = blobs(&second);
    let (id2, out2, err2) = build_ok(&second, &ctx, &["-t", "app", "--cache-from", &cache]);
    let s = steps(&out2, "");
    assert_eq!(s.len(), 4, "{out2}");
    assert!(s.iter().all(|(_, c)| *c), "every step CACHED:\n{out2}");
    assert_eq!(id1, id2, "same image ID\n{out2}\n{err2}");
    // The final image needs its layers: exactly the two new ones were fetched.
    let layers = layer_digests(&second, &id2);
    let new: Vec<String> = layers
        .iter()
        .filter(|d| !before.contains(*d))
        .cloned()
        .collect();
    let mut got = fetched(&err2);
    got.sort();
    let mut want = new.clone();
    want.sort();
    assert_eq!(got, want, "{err2}");
    assert_eq!(new.len(), 3, "RUN, RUN, COPY layers: {layers:?}");
    assert_eq!(file_in_image(&second, "app", "/t"), stamp);
    assert_consistent(&second);
    // The imported entries were kept locally: the next build needs no --cache-from.
    let (id3, out3, _) = build_ok(&second, &ctx, &["-t", "app"]);
    assert!(steps(&out3, "").iter().all(|(_, c)| *c), "{out3}");
    assert_eq!(id3, id1);
}

#[test]
fn a_miss_after_remote_hits_pulls_only_the_layers_it_mounts() {
    let reg = TestRegistry::start();
    let base = publish_base(&reg);
    let cache = format!("{}/team/cache", reg.host());
    let first = fresh_root(&base);
    let ctx_a = Context::new(&format!(
        "FROM {base}\nRUN {STAMP}\nRUN cat /proc/sys/kernel/random/uuid > /u\n"
    ));
    let (id_a, _, _) = build_ok(&first, &ctx_a, &["-t", "a", "--cache-to", &cache]);
    let layers_a = layer_digests(&first, &id_a);
    let (t_layer, u_layer) = (&layers_a[1], &layers_a[2]);
    let stamp = file_in_image(&first, "a", "/t");

    // Same first RUN (a remote hit), then a RUN that misses and needs the rootfs mounted.
    let ctx_b = Context::new(&format!("FROM {base}\nRUN {STAMP}\nRUN cat /t > /v\n"));
    let second = fresh_root(&base);
    let (_, out, err) = build_ok(&second, &ctx_b, &["-t", "b", "--cache-from", &cache]);
    let s = steps(&out, "");
    assert_eq!(
        s.iter().map(|(_, c)| *c).collect::<Vec<_>>(),
        [true, false],
        "{out}"
    );
    assert_eq!(fetched(&err), vec![t_layer.clone()], "{err}");
    let have = blobs(&second);
    assert!(have.contains(t_layer), "the hit's layer was fetched");
    assert!(
        !have.contains(u_layer),
        "a layer no step needs is not fetched"
    );
    assert_eq!(file_in_image(&second, "b", "/v"), stamp);
    assert_consistent(&second);
}

#[test]
fn a_missing_or_corrupt_cache_warns_and_the_build_runs_normally() {
    let reg = TestRegistry::start();
    let base = publish_base(&reg);
    let ctx = Context::new(&format!("FROM {base}\nRUN {STAMP}\n"));

    // Nothing at that reference yet.
    let root = fresh_root(&base);
    let missing = format!("{}/team/nothing", reg.host());
    let (_, out, err) = build_ok(&root, &ctx, &["--cache-from", &missing]);
    assert!(
        err.contains(&format!(
            "warning: cache-from {missing}: no cache found there"
        )),
        "{err}"
    );
    assert!(steps(&out, "").iter().all(|(_, c)| !c), "{out}");

    // An image where a cache is expected.
    let (_, out, err) = build_ok(&fresh_root(&base), &ctx, &["--cache-from", &base]);
    assert!(err.contains("is not an rbuild cache"), "{err}");
    assert!(steps(&out, "").iter().all(|(_, c)| !c), "{out}");

    // A cache whose config blob was damaged in the registry's storage.
    let cache = format!("{}/team/cache", reg.host());
    build_ok(&root, &ctx, &["--cache-to", &cache]);
    let config_blob = walk_blob_files(&reg.storage())
        .into_iter()
        .find(|p| {
            fs::read(p)
                .map(|d| d.starts_with(b"{\"version\":1,\"entries\""))
                .unwrap_or(false)
        })
        .expect("cache config blob in the registry storage");
    fs::write(&config_blob, b"{\"version\":1,\"entries\":{\"broken").unwrap();
    let (_, out, err) = build_ok(&fresh_root(&base), &ctx, &["--cache-from", &cache]);
    assert!(
        err.contains(&format!("warning: cache-from {cache}:"))
            && err.contains("building without it"),
        "{err}"
    );
    assert!(steps(&out, "").iter().all(|(_, c)| !c), "{out}");
    // Exporting over a damaged cache replaces it.
    let (_, _, err) = build_ok(&fresh_root(&base), &ctx, &["--cache-to", &cache]);
    assert!(
        err.contains("unreadable") && err.contains("cache: exported 1 entries"),
        "{err}"
    );
}

fn walk_blob_files(dir: &Path) -> Vec<std::path::PathBuf> {
    walkdir::WalkDir::new(dir)
        .into_iter()
        .filter_map(Result::ok)
        .filter(|e| e.file_type().is_file() && e.file_name() == "data")
        .map(|e| e.into_path())
        .collect()
}

fn write(dir: &Path, rel: &str, text: &str) {
    let p = dir.join(rel);
    fs::create_dir_all(p.parent().unwrap()).unwrap();
    fs::write(p, text).unwrap();
}

fn pipeline_project(dir: &Path, host: &str, base: &str, cache: &str) {
    write(
        dir,
        "base/Dockerfile",
        &format!("FROM {base}\nRUN {STAMP}\n"),
    );
    write(
        dir,
        "app/app.Dockerfile",
        &format!(
            "FROM {base} AS broken\nRUN exit 7\n\
             FROM {host}/team/base:1 AS final\nARG VERSION\n\
             RUN cat /proc/sys/kernel/random/uuid > /app.txt && echo \"app $VERSION\" >> /app.txt\n"
        ),
    );
    write(
        dir,
        "tool/Dockerfile",
        &format!("FROM {base}\nRUN cat /proc/sys/kernel/random/uuid > /tool.txt\n"),
    );
    let images = format!(
        "images:\n  base:\n    context: base\n    tags: [{host}/team/base:1]\n  app:\n    context: app\n    dockerfile: app.Dockerfile\n    target: final\n    args: {{VERSION: \"7\"}}\n    depends_on: [base]\n    tags: [{host}/team/app:1]\n  tool:\n    context: tool\n    tags: [{host}/team/tool:1]\n"
    );
    write(
        dir,
        "export.yaml",
        &format!("{images}cache:\n  to: {cache}\n"),
    );
    write(
        dir,
        "import.yaml",
        &format!("{images}cache:\n  from: [{cache}]\n"),
    );
}

fn run_pipeline(root: &TestRoot, yaml: &Path, meta: &Path) -> (serde_json::Value, String, String) {
    let args = [
        "pipeline",
        "-f",
        yaml.to_str().unwrap(),
        "--metadata-file",
        meta.to_str().unwrap(),
    ];
    let out = root.rbuild(&args);
    assert!(out.status.success(), "{}", describe(&args, &out));
    let meta: serde_json::Value = serde_json::from_slice(&fs::read(meta).unwrap()).unwrap();
    (
        meta,
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn a_pipeline_shares_its_cache_through_the_registry() {
    let reg = TestRegistry::start();
    let host = reg.host().to_string();
    let base = publish_base(&reg);
    let cache = format!("{host}/team/cache");
    let proj = tempfile::tempdir().unwrap();
    pipeline_project(proj.path(), &host, &base, &cache);

    let first = fresh_root(&base);
    let (meta1, out1, err1) = run_pipeline(
        &first,
        &proj.path().join("export.yaml"),
        &proj.path().join("meta1.json"),
    );
    // base RUN, app ARG + RUN, tool RUN: all entries of the three images in one artifact.
    assert!(err1.contains("cache: exported 4 entries"), "{err1}\n{out1}");

    let second = fresh_root(&base);
    let (meta2, out2, err2) = run_pipeline(
        &second,
        &proj.path().join("import.yaml"),
        &proj.path().join("meta2.json"),
    );
    for name in ["base", "app", "tool"] {
        let s = steps(&out2, &format!("[{name}] "));
        assert!(!s.is_empty(), "{name}: no steps\n{out2}");
        assert!(
            s.iter().all(|(_, c)| *c),
            "{name}: a step ran\n{out2}\n{err2}"
        );
        let id = meta1[name]["image_id"].as_str().unwrap_or_default();
        assert!(id.starts_with("sha256:"), "{name}: {meta1}");
        assert_eq!(
            meta1[name]["image_id"], meta2[name]["image_id"],
            "{name}: same image ID"
        );
    }
    let app = format!("{host}/team/app:1");
    assert_eq!(
        file_in_image(&second, &app, "/app.txt"),
        file_in_image(&first, &app, "/app.txt")
    );
    assert_consistent(&second);
}

#[test]
fn exports_from_several_builds_merge_into_one_cache() {
    let reg = TestRegistry::start();
    let base = publish_base(&reg);
    let cache = format!("{}/team/cache", reg.host());
    let one = Context::new(&format!("FROM {base}\nRUN {STAMP}\n"));
    let two = Context::new(&format!("FROM {base}\nRUN {STAMP} && echo two >> /t\n"));
    let (id1, _, _) = build_ok(&fresh_root(&base), &one, &["--cache-to", &cache]);
    let (id2, _, err) = build_ok(&fresh_root(&base), &two, &["--cache-to", &cache]);
    assert!(err.contains("cache: exported 2 entries"), "{err}");
    let reader = fresh_root(&base);
    for (ctx, id) in [(&one, &id1), (&two, &id2)] {
        let (got, out, _) = build_ok(&reader, ctx, &["--cache-from", &cache]);
        assert!(steps(&out, "").iter().all(|(_, c)| *c), "{out}");
        assert_eq!(&got, id);
    }
    assert_consistent(&reader);
}

#[test]
fn exporting_to_another_repository_mounts_layers_that_were_never_fetched() {
    let reg = TestRegistry::start();
    let base = publish_base(&reg);
    let main = format!("{}/team/cache-main", reg.host());
    let branch = format!("{}/team/cache-branch", reg.host());
    let ctx = Context::new(&format!(
        "FROM {base} AS stamp\nRUN {STAMP}\nFROM {base}\nCOPY --from=stamp /t /t\n"
    ));
    let (id1, _, _) = build_ok(&fresh_root(&base), &ctx, &["--cache-to", &main]);

    // All hits: the COPY needs no mount, so the stamp stage's layer is never fetched; the export
    // to another repository of the registry mounts it from the imported one.
    let second = fresh_root(&base);
    let (id2, out, err) = build_ok(
        &second,
        &ctx,
        &["--cache-from", &main, "--cache-to", &branch],
    );
    assert_eq!(id1, id2);
    assert!(steps(&out, "").iter().all(|(_, c)| *c), "{out}");
    let final_layers = layer_digests(&second, &id2);
    assert_eq!(fetched(&err), vec![final_layers[1].clone()], "{err}");
    assert!(err.contains("cache: exported 2 entries"), "{err}");

    let (id3, out, _) = build_ok(&fresh_root(&base), &ctx, &["--cache-from", &branch]);
    assert_eq!(id1, id3);
    assert!(steps(&out, "").iter().all(|(_, c)| *c), "{out}");
}

/// Runs rbuild with a store root and a Docker config dir (credentials) of its own.
fn rb_with_config(root: &TestRoot, docker_config: &Path, args: &[&str]) -> Output {
    std::process::Command::new(common::rbuild_bin())
        .arg("--root")
        .arg(root.path())
        .args(args)
        .env("DOCKER_CONFIG", docker_config)
        .env("RBUILD_CONFIG", docker_config.join("no-rbuild-config.json"))
        .stdin(std::process::Stdio::null())
        .output()
        .expect("run rbuild")
}

#[test]
fn a_cache_behind_basic_auth_uses_the_saved_credentials() {
    let reg = TestRegistry::start_with_auth("alice", "wonderland");
    let host = reg.host().to_string();
    let with_creds = tempfile::tempdir().unwrap();
    let without = tempfile::tempdir().unwrap();
    let auth = "YWxpY2U6d29uZGVybGFuZA=="; // alice:wonderland
    fs::write(
        with_creds.path().join("config.json"),
        format!("{{\"auths\":{{\"{host}\":{{\"auth\":\"{auth}\"}}}}}}"),
    )
    .unwrap();
    let ok = |root: &TestRoot, args: &[&str]| -> (String, String) {
        let out = rb_with_config(root, with_creds.path(), args);
        assert!(out.status.success(), "{}", describe(args, &out));
        (
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let base = format!("{host}/lib/busybox:1");
    let seed = TestRoot::new();
    seed.import_busybox(&base);
    ok(&seed, &["push", &base]);
    let ctx = Context::new(&format!("FROM {base}\nRUN {STAMP}\n"));
    let dir = ctx.dir();
    let cache = format!("{host}/team/cache");
    let (_, err) = ok(&seed, &["build", "--cache-to", &cache, &dir]);
    assert!(err.contains("cache: exported 1 entries"), "{err}");

    let fresh = || {
        let r = TestRoot::new();
        ok(&r, &["pull", &base]);
        r
    };
    let (out, _) = ok(
        &fresh(),
        &["build", "--progress", "plain", "--cache-from", &cache, &dir],
    );
    assert!(steps(&out, "").iter().all(|(_, c)| *c), "{out}");

    // Without credentials the cache is not readable: a warning, and the step runs.
    let r = fresh();
    let args = ["build", "--progress", "plain", "--cache-from", &cache, &dir];
    let out = rb_with_config(&r, without.path(), &args);
    assert!(out.status.success(), "{}", describe(&args, &out));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(&format!("warning: cache-from {cache}:")) && err.contains("rbuild login"),
        "{err}"
    );
    let out = String::from_utf8_lossy(&out.stdout);
    assert!(steps(&out, "").iter().all(|(_, c)| !c), "{out}");
}

#[test]
fn a_copy_from_a_remote_cached_stage_fetches_that_stage_layer_to_read_it() {
    let reg = TestRegistry::start();
    let base = publish_base(&reg);
    let cache = format!("{}/team/cache", reg.host());
    let stage = format!("FROM {base} AS stamp\nRUN {STAMP}\n");
    let first = fresh_root(&base);
    let (_, _, _) = build_ok(
        &first,
        &Context::new(&format!("{stage}FROM {base}\nCOPY --from=stamp /t /t\n")),
        &["-t", "one", "--cache-to", &cache],
    );
    let stamp = file_in_image(&first, "one", "/t");

    // The stage is a remote hit; the COPY (to another path) misses and reads the stage's tree.
    let second = fresh_root(&base);
    let (id, out, err) = build_ok(
        &second,
        &Context::new(&format!(
            "{stage}FROM {base}\nCOPY --from=stamp /t /copied\n"
        )),
        &["-t", "two", "--cache-from", &cache],
    );
    let s = steps(&out, "");
    assert_eq!(
        s.iter().map(|(_, c)| *c).collect::<Vec<_>>(),
        [true, false],
        "{out}"
    );
    // Fetched: the stage's layer (to read /t); the COPY layer was made here.
    assert_eq!(fetched(&err).len(), 1, "{err}");
    assert!(!layer_digests(&second, &id).contains(&fetched(&err)[0]));
    assert_eq!(file_in_image(&second, "two", "/copied"), stamp);
    assert_consistent(&second);
}
