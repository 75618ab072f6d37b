//! Build cache: hits and misses decided by content (not mtime), including a change that keeps
//! size and mtime; `--no-cache`; a fully cached build mounts nothing and gives the same ID.

mod build_support;
mod common;

use build_support::{build_ok, run_sh, Context};
use common::TestRoot;
use std::fs;
use std::time::{Duration, SystemTime};

const DOCKERFILE: &str = "FROM busybox\nCOPY data.txt /data.txt\nRUN cat /data.txt > /copy.txt\n";

fn set_mtime(path: &std::path::Path, t: SystemTime) {
    let f = fs::File::options().write(true).open(path).expect("open");
    f.set_modified(t).expect("set mtime");
}

/// The build log a build's output points to.
fn build_log(out: &str) -> String {
    let path = out
        .lines()
        .find_map(|l| l.strip_prefix("Build log: "))
        .expect("build log line");
    fs::read_to_string(path).expect("read build log")
}

fn cached_steps(out: &str) -> usize {
    out.lines().filter(|l| *l == "--> CACHED").count()
}

#[test]
fn unchanged_context_is_fully_cached_with_the_same_id() {
    let root = TestRoot::new();
    root.import_busybox("busybox");
    let ctx = Context::new(DOCKERFILE);
    ctx.write("data.txt", "one\n");
    let (id1, out1) = build_ok(&root, &ctx, &["-t", "c"]);
    assert_eq!(cached_steps(&out1), 0, "{out1}");
    let (id2, out2) = build_ok(&root, &ctx, &["-t", "c"]);
    assert_eq!(id1, id2);
    assert_eq!(cached_steps(&out2), 2, "{out2}");
    // Touching the file (new mtime, same content) still hits: keys are content-based.
    set_mtime(
        &ctx.path().join("data.txt"),
        SystemTime::now() + Duration::from_secs(5),
    );
    let (id3, out3) = build_ok(&root, &ctx, &[]);
    assert_eq!(id1, id3);
    assert_eq!(cached_steps(&out3), 2, "{out3}");
    // A fully cached build mounts nothing: its build log records no mount (the first has some).
    assert!(build_log(&out1).contains("mount: "), "{out1}");
    assert!(!build_log(&out3).contains("mount: "), "{out3}");
    let mounts = fs::read_to_string("/proc/self/mountinfo").expect("mountinfo");
    assert!(!mounts.contains(&root.root_str()), "{mounts}");
    // --no-cache runs everything again.
    let (_, out4) = build_ok(&root, &ctx, &["--no-cache"]);
    assert_eq!(cached_steps(&out4), 0, "{out4}");
}

#[test]
fn content_change_with_same_size_and_mtime_misses() {
    let root = TestRoot::new();
    root.import_busybox("busybox");
    let ctx = Context::new(DOCKERFILE);
    let path = ctx.write("data.txt", "aaaa\n");
    let mtime = SystemTime::UNIX_EPOCH + Duration::from_secs(1_600_000_000);
    set_mtime(&path, mtime);
    let (id1, _) = build_ok(&root, &ctx, &[]);
    // Second build: the stat cache now trusts the entry.
    let (id1b, out) = build_ok(&root, &ctx, &[]);
    assert_eq!(id1, id1b);
    assert_eq!(cached_steps(&out), 2, "{out}");
    // Same size, same mtime, different content.
    fs::write(&path, "bbbb\n").expect("rewrite");
    set_mtime(&path, mtime);
    let (id2, out2) = build_ok(&root, &ctx, &[]);
    assert_ne!(id1, id2, "{out2}");
    assert_eq!(cached_steps(&out2), 0, "{out2}");
    assert_eq!(run_sh(&root, &id2, "cat /copy.txt"), "bbbb\n");
}

#[test]
fn changes_only_invalidate_later_steps_and_ignored_files_do_not_count() {
    let root = TestRoot::new();
    root.import_busybox("busybox");
    let ctx =
        Context::new("FROM busybox\nRUN echo base > /base\nCOPY . /ctx/\nRUN ls /ctx > /listing\n");
    ctx.write(".dockerignore", "*.log\nbuild/\n!build/keep.txt\n");
    ctx.write("src.txt", "src\n");
    ctx.write("debug.log", "log\n");
    ctx.write("build/out.bin", "bin\n");
    ctx.write("build/keep.txt", "keep\n");
    let (id1, _) = build_ok(&root, &ctx, &[]);
    assert_eq!(
        run_sh(&root, &id1, "cd /ctx && find . -type f | sort"),
        "./.dockerignore\n./Dockerfile\n./build/keep.txt\n./src.txt\n"
    );
    // An ignored file changes: everything is still cached.
    ctx.write("debug.log", "other log\n");
    ctx.write("build/out.bin", "other bin\n");
    let (id2, out2) = build_ok(&root, &ctx, &[]);
    assert_eq!(id1, id2, "{out2}");
    // A copied file changes: the RUN before the COPY stays cached, the rest runs.
    ctx.write("src.txt", "changed\n");
    let (id3, out3) = build_ok(&root, &ctx, &[]);
    assert_ne!(id1, id3);
    assert_eq!(cached_steps(&out3), 1, "{out3}");
}

#[test]
fn prune_removes_dangling_build_cache_and_builder_prune_all_clears_it() {
    let root = TestRoot::new();
    root.import_busybox("busybox");
    let ctx = Context::new(DOCKERFILE);
    ctx.write("data.txt", "one\n");
    let records = || {
        fs::read_dir(root.path().join("cache/keys"))
            .map(|d| d.count())
            .unwrap_or(0)
    };
    build_ok(&root, &ctx, &["-t", "c"]);
    let kept = records();
    assert!(kept > 0, "the build wrote cache records");
    // While the image is tagged its layers stay, so its records are not dangling.
    let out = root.ok(&["system", "prune"]);
    assert!(out.contains("0 dangling build cache records"), "{out}");
    assert_eq!(records(), kept);
    // Untagged and pruned: the layers go, and the records that needed them with them.
    root.ok(&["rmi", "c"]);
    let out = root.ok(&["system", "prune"]);
    assert!(!out.contains(" 0 dangling build cache records"), "{out}");
    assert!(
        !out.contains(" 0 layers"),
        "the layers of the build were freed: {out}"
    );
    assert!(records() < kept, "{out}");
    // builder prune --all leaves nothing to hit: the next build runs every step.
    build_ok(&root, &ctx, &["-t", "c"]);
    let out = root.ok(&["builder", "prune", "--all", "--force"]);
    assert!(out.contains("build cache records"), "{out}");
    assert_eq!(records(), 0, "{out}");
    let (_, again) = build_ok(&root, &ctx, &["-t", "c"]);
    assert_eq!(cached_steps(&again), 0, "{again}");
}

#[test]
fn heredoc_steps_hit_the_cache_and_miss_when_their_body_changes() {
    let root = TestRoot::new();
    root.import_busybox("busybox");
    let df = |word: &str| {
        format!(
            "FROM busybox\nRUN <<EOF\n#!/bin/sh\necho {word} > /script\nEOF\n\
             RUN <<EOF\necho {word} > /shell\nEOF\nCOPY <<EOF /copied\n{word}\nEOF\n"
        )
    };
    let ctx = Context::new(&df("one"));
    let (id1, out1) = build_ok(&root, &ctx, &[]);
    assert_eq!(cached_steps(&out1), 0, "{out1}");
    // Another process, the same Dockerfile: every step is a hit.
    let (id2, out2) = build_ok(&root, &ctx, &[]);
    assert_eq!(cached_steps(&out2), 3, "{out2}");
    assert_eq!(id1, id2);
    assert_eq!(
        run_sh(
            &root,
            &id2,
            "cat /script /shell /copied; ls -a / | grep -c heredoc || true"
        ),
        "one\none\none\n0\n"
    );
    // A changed body misses.
    std::fs::write(ctx.path().join("Dockerfile"), df("two")).expect("rewrite");
    let (id3, out3) = build_ok(&root, &ctx, &[]);
    assert_eq!(cached_steps(&out3), 0, "{out3}");
    assert_eq!(
        run_sh(&root, &id3, "cat /script /shell /copied"),
        "two\ntwo\ntwo\n"
    );
}

/// COPY --from is keyed by the source's layers (its content), not by how the source stage was
/// written: a stage rebuilt to the same layers still gives a hit downstream, and a stage whose
/// files changed gives a miss.
#[test]
fn copy_from_a_stage_rebuilt_to_the_same_layers_hits() {
    let root = TestRoot::new();
    root.import_busybox("busybox");
    let df = |run: &str| {
        format!(
            "FROM busybox AS tool\nCOPY data.txt /out/data.txt\nRUN {run}\n\
             FROM busybox\nCOPY --from=tool /out /out\n"
        )
    };
    let ctx = Context::new(&df("true"));
    ctx.write("data.txt", "one\n");
    let (_, out1) = build_ok(&root, &ctx, &[]);
    assert_eq!(cached_steps(&out1), 0, "{out1}");
    // Another RUN that changes nothing: it misses, yet its layer is the same (empty) one.
    fs::write(ctx.path().join("Dockerfile"), df(":")).expect("rewrite");
    let (id2, out2) = build_ok(&root, &ctx, &[]);
    let hits = build_support::cache_hits(&out2);
    assert!(
        hits.len() == 2 && hits[1].contains("COPY --from=tool /out /out"),
        "expected the context COPY and the COPY --from to hit:\n{out2}"
    );
    assert_eq!(run_sh(&root, &id2, "cat /out/data.txt"), "one\n");
    // Different files in the stage: the COPY --from misses and copies them.
    ctx.write("data.txt", "two\n");
    let (id3, out3) = build_ok(&root, &ctx, &[]);
    assert!(
        !out3.contains("COPY --from=tool /out /out\n--> CACHED"),
        "{out3}"
    );
    assert_eq!(run_sh(&root, &id3, "cat /out/data.txt"), "two\n");
}
