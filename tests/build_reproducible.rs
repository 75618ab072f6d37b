//! Reproducible builds: with SOURCE_DATE_EPOCH or --timestamp, one context in two folders on
//! two fresh stores gives one image ID.

mod build_support;
mod common;

use build_support::{build_ok, Context};
use common::TestRoot;
use std::process::Command;

/// New files, dirs (WORKDIR, COPY, RUN), symlinks, hard links, a deletion, a heredoc file and
/// a COPY --from: every kind of entry a layer holds gets its time from the build.
const DOCKERFILE: &str = r#"FROM busybox AS build
WORKDIR /work/dir
COPY . ./
RUN mkdir -p /out && cp -a /work/dir /out/ && ln -s x /out/y && ln /out/dir/c.txt /out/hard && rm /bin/vi
COPY <<EOF /etc/motd
hello
EOF
FROM busybox
LABEL a=1 b=2 c=3
COPY --from=build /out /out
COPY . /src/
RUN echo built > /built && touch /stamp
ENV X=y
"#;

/// A fresh store holding the very same busybox image (loaded from `base`).
fn fresh_store(base: &std::path::Path) -> TestRoot {
    let root = TestRoot::new();
    root.ok(&["load", "-i", &base.to_string_lossy()]);
    root
}

/// How the build is told its timestamp.
#[derive(Clone, Copy)]
enum Epoch {
    /// `SOURCE_DATE_EPOCH` in the environment.
    Env,
    /// `--timestamp`.
    Flag,
    /// `--build-arg SOURCE_DATE_EPOCH=...`, as docker buildx passes it.
    BuildArg,
}

fn build_in_fresh_store(base: &std::path::Path, epoch: Epoch) -> String {
    let root = fresh_store(base);
    let ctx = Context::new(DOCKERFILE);
    ctx.write("a/b.txt", "content\n");
    ctx.write("c.txt", "more\n");
    if let Epoch::Env = epoch {
        let out = Command::new(common::rbuild_bin())
            .args(["--root", &root.root_str(), "build", "-q", &ctx.dir()])
            .env("SOURCE_DATE_EPOCH", "1700000000")
            .output()
            .expect("run rbuild");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    } else if let Epoch::Flag = epoch {
        build_ok(&root, &ctx, &["--timestamp", "1700000000"]).0
    } else {
        let (id, out) = build_ok(
            &root,
            &ctx,
            &["--build-arg", "SOURCE_DATE_EPOCH=1700000000"],
        );
        assert!(!out.contains("not consumed"), "{out}");
        id
    }
}

#[test]
fn same_id_from_two_folders_on_fresh_stores() {
    let origin = TestRoot::new();
    origin.import_busybox("busybox");
    let dir = tempfile::tempdir().expect("tempdir");
    let base = dir.path().join("busybox.tar");
    origin.ok(&["save", "-o", &base.to_string_lossy(), "busybox"]);
    let a = build_in_fresh_store(&base, Epoch::Env);
    let b = build_in_fresh_store(&base, Epoch::Env);
    assert_eq!(a, b);
    let c = build_in_fresh_store(&base, Epoch::Flag);
    assert_eq!(a, c);
    let d = build_in_fresh_store(&base, Epoch::BuildArg);
    assert_eq!(a, d);
}

#[test]
fn base_image_layers_and_history_are_never_rewritten() {
    let root = TestRoot::new();
    root.import_busybox("busybox");
    let ctx = Context::new(DOCKERFILE);
    ctx.write("c.txt", "more\n");
    // A timestamp before the base image was made: only the new layers are clamped.
    let (id, _) = build_ok(&root, &ctx, &["--timestamp", "1000"]);
    let base = build_support::config_json(&root, "busybox");
    let built = build_support::config_json(&root, &id);
    let base_ids = base["rootfs"]["diff_ids"]
        .as_array()
        .expect("base diff_ids");
    let built_ids = built["rootfs"]["diff_ids"].as_array().expect("diff_ids");
    assert_eq!(&built_ids[..base_ids.len()], &base_ids[..]);
    assert!(built_ids.len() > base_ids.len());
    let base_history = base["history"].as_array().expect("base history");
    let built_history = built["history"].as_array().expect("history");
    assert_eq!(&built_history[..base_history.len()], &base_history[..]);
    assert_eq!(built["created"], "1970-01-01T00:16:40.000000000Z");
    assert!(built_history[base_history.len()..]
        .iter()
        .all(|h| h["created"] == "1970-01-01T00:16:40.000000000Z"));
    // The base's layer blobs are the manifest's first layers, as they were.
    let layers = |image: &str| -> Vec<serde_json::Value> {
        let d = root.ok(&["inspect", "-f", "{{json .Descriptor}}", image]);
        let d: serde_json::Value = serde_json::from_str(&d).expect("descriptor JSON");
        let hex = d["digest"]
            .as_str()
            .expect("digest")
            .trim_start_matches("sha256:");
        let m = std::fs::read(root.path().join("blobs/sha256").join(hex)).expect("manifest");
        let m: serde_json::Value = serde_json::from_slice(&m).expect("manifest JSON");
        m["layers"].as_array().expect("layers").clone()
    };
    let (base_layers, built_layers) = (layers("busybox"), layers(&id));
    assert_eq!(&built_layers[..base_layers.len()], &base_layers[..]);
}

#[test]
fn source_date_epoch_from_the_environment_is_a_build_arg_too() {
    let root = TestRoot::new();
    root.import_busybox("busybox");
    let ctx = Context::new(
        "FROM busybox\nARG SOURCE_DATE_EPOCH\nRUN echo \"$SOURCE_DATE_EPOCH\" > /epoch\n",
    );
    let out = Command::new(common::rbuild_bin())
        .args(["--root", &root.root_str(), "build", "-q", &ctx.dir()])
        .env("SOURCE_DATE_EPOCH", "1234567890")
        .output()
        .expect("run rbuild");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let id = String::from_utf8_lossy(&out.stdout).trim().to_string();
    assert_eq!(
        build_support::run_sh(&root, &id, "cat /epoch"),
        "1234567890\n"
    );
    assert_eq!(
        build_support::config_json(&root, &id)["created"],
        "2009-02-13T23:31:30.000000000Z"
    );
}
