//! `RUN --mount`: bind (context, dockerignore applied, and another stage), cache (kept across
//! builds), tmpfs and secret (never in a layer); none leaves anything in the image, bind
//! sources count in the cache key, and bad specs fail before anything runs.

mod build_support;
mod common;

use build_support::{
    build, build_ok, build_until_started, cache_hits as cached, run_sh, slirp_children_of,
    step_started, Context,
};
use common::{describe, TestRoot};
use std::fs;

const DOCKERFILE: &str = "\
FROM busybox AS gen
RUN mkdir /out && echo generated > /out/g.txt
FROM busybox
WORKDIR /work
RUN --mount=type=bind,source=src,target=/src cat /src/a.txt > /from-bind && ls /src > /bind-list
RUN --mount=type=bind,from=gen,source=/out,target=gen cat /work/gen/g.txt > /from-stage
RUN --mount=type=cache,target=/cache,id=c1 echo run >> /cache/count && wc -l < /cache/count > /cache-count
RUN --mount=type=tmpfs,target=/scratch touch /scratch/x && ls /scratch > /tmpfs-list
RUN --mount=type=secret,id=token,required=true stat -c %a /run/secrets/token > /secret-mode && wc -c < /run/secrets/token > /secret-len
RUN --mount=type=bind,source=src,target=/src,rw echo changed > /src/a.txt && cat /src/a.txt > /rw
";

#[test]
fn every_mount_type_works_and_leaves_nothing_in_the_image() {
    let root = TestRoot::new();
    root.import_busybox("busybox");
    let ctx = Context::new(DOCKERFILE);
    ctx.write("src/a.txt", "context file\n");
    ctx.write("src/ignored.txt", "must not be seen\n");
    ctx.write(".dockerignore", "src/ignored.txt\n");
    ctx.write("other.txt", "1\n");
    let secrets = tempfile::tempdir().unwrap();
    let secret = secrets.path().join("token");
    fs::write(&secret, "s3cr3t-value").unwrap();
    let secret_flag = format!("id=token,src={}", secret.display());
    let (id, _) = build_ok(&root, &ctx, &["--secret", &secret_flag]);

    let seen = run_sh(
        &root,
        &id,
        "cat /from-bind /bind-list /from-stage /cache-count /tmpfs-list /secret-mode \
         /secret-len /rw; ls -d /src /work/gen /cache /scratch /run 2>&1 | wc -l; ls /work",
    );
    assert_eq!(
        seen, "context file\na.txt\ngenerated\n1\nx\n400\n12\nchanged\n5\n",
        "mounted contents, then no mount point left (5 errors of ls -d) and an empty /work"
    );
    // The rw bind wrote to a copy: the context is untouched.
    assert_eq!(
        fs::read_to_string(ctx.path().join("src/a.txt")).unwrap(),
        "context file\n"
    );
    // The secret is nowhere in the store: not in an unpacked layer, a cache record or a log.
    for entry in walkdir::WalkDir::new(root.path()) {
        let entry = entry.unwrap();
        if entry.file_type().is_file() {
            let data = fs::read(entry.path()).unwrap_or_default();
            assert!(
                !data.windows(12).any(|w| w == b"s3cr3t-value"),
                "the secret is in {}",
                entry.path().display()
            );
        }
    }

    // Another build without the cache: the cache mount kept its contents.
    let (id2, _) = build_ok(&root, &ctx, &["--no-cache", "--secret", &secret_flag]);
    assert_eq!(run_sh(&root, &id2, "cat /cache-count"), "2\n");
    // `builder prune --all` empties cache mounts too.
    root.ok(&["builder", "prune", "--all", "--force"]);
    let (id2, _) = build_ok(&root, &ctx, &["--secret", &secret_flag]);
    assert_eq!(run_sh(&root, &id2, "cat /cache-count"), "1\n");

    // A change elsewhere in the context: every step hits. A change of the bound file: the
    // first bind step misses (and so every step after it).
    ctx.write("other.txt", "2\n");
    let (_, out) = build_ok(&root, &ctx, &["--secret", &secret_flag]);
    assert_eq!(cached(&out).len(), 8, "{out}");
    ctx.write("src/a.txt", "edited\n");
    let (id3, out) = build_ok(&root, &ctx, &["--secret", &secret_flag]);
    let hits = cached(&out);
    assert!(
        hits.len() == 2 && hits[1].contains("WORKDIR"),
        "only the steps before the bind step hit: {hits:?}"
    );
    assert_eq!(run_sh(&root, &id3, "cat /from-bind"), "edited\n");
}

#[test]
fn a_missing_required_secret_and_bad_specs_fail_with_the_line() {
    let root = TestRoot::new();
    root.import_busybox("busybox");
    let ctx = Context::new(
        "FROM busybox\nRUN echo first > /f\nRUN --mount=type=secret,id=nope,required true\n",
    );
    let out = build(&root, &ctx, &[]);
    assert!(!out.status.success(), "{}", describe(&["build"], &out));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("Dockerfile:3") && err.contains("secret nope is required"),
        "{err}"
    );
    for (line, want) in [
        (
            "RUN --mount=type=cache echo",
            "type=cache needs target=PATH",
        ),
        ("RUN --mount=type=ssh echo", "type=ssh is not supported"),
        (
            "RUN --mount=type=cache,target=/c,sharing=sometimes echo",
            "sharing=sometimes",
        ),
        (
            "RUN --mount=type=bind,source=missing,target=/m echo",
            "missing",
        ),
    ] {
        fs::write(
            ctx.path().join("Dockerfile"),
            format!("FROM busybox\nRUN echo first > /f\n{line}\n"),
        )
        .unwrap();
        let out = build(&root, &ctx, &[]);
        assert!(!out.status.success(), "{line}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            err.contains("Dockerfile:3") && err.contains(want),
            "{line}: {err}"
        );
    }
}

/// The state letter of process `pid` ('Z' for a zombie), if it exists.
fn process_state(pid: i32) -> Option<char> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    stat[stat.rfind(')')? + 2..].chars().next()
}

#[test]
fn a_build_killed_mid_run_leaves_a_usable_store_and_nothing_behind() {
    let root = TestRoot::new();
    root.import_busybox("busybox");
    let ctx = Context::new(
        "FROM busybox\nRUN --mount=type=secret,id=tok --mount=type=cache,target=/c,id=k \
         cat /run/secrets/tok > /dev/null && touch /c/started && sleep 300\n",
    );
    let secrets = tempfile::tempdir().unwrap();
    let secret = secrets.path().join("tok");
    fs::write(&secret, "k1ll3d-s3cr3t").unwrap();
    let secret_flag = format!("id=tok,src={}", secret.display());
    let mut child = build_until_started(
        &root,
        &ctx,
        &["--progress", "plain", "--secret", &secret_flag],
    );
    let pid = child.0.id() as i32;
    let slirps = slirp_children_of(pid);
    child.0.kill().unwrap(); // SIGKILL, mid-RUN
    child.0.wait().unwrap();

    // The next command opens the store: the killed build's rootfs mount (and anything below
    // its work dir) is no obstacle, and nothing of it stays mounted.
    root.ok(&["images"]);
    assert_eq!(common::mounts_below(root.path()), Vec::new());
    // slirp4netns ended with rbuild (its exit pipe closed).
    for p in slirps {
        assert!(
            common::poll_until(3000, || !matches!(process_state(p), Some(s) if s != 'Z')),
            "slirp4netns {p} outlived the killed build"
        );
    }
    // The secret written for the killed step is gone from the store.
    for entry in walkdir::WalkDir::new(root.path()) {
        let entry = entry.unwrap();
        if entry.file_type().is_file() {
            let data = fs::read(entry.path()).unwrap_or_default();
            assert!(
                !data.windows(13).any(|w| w == b"k1ll3d-s3cr3t"),
                "the secret is in {}",
                entry.path().display()
            );
        }
    }
}

#[test]
fn a_secret_with_env_is_an_environment_variable_of_that_step_only() {
    let root = TestRoot::new();
    root.import_busybox("busybox");
    let ctx = Context::new(
        "FROM busybox\nENV KEY=image-value\n\
         RUN --mount=type=secret,id=k,env=KEY sh -c 'echo \"${#KEY}\" > /env-len; \
         ls /run/secrets 2>/dev/null | wc -l > /files'\n\
         RUN --mount=type=secret,id=k,env=OTHER,target=/k sh -c 'test \"$OTHER\" = \"$(cat /k)\" \
         && echo same > /both'\n\
         RUN echo \"$KEY\" > /after\n",
    );
    let secrets = tempfile::tempdir().unwrap();
    let secret = secrets.path().join("k");
    fs::write(&secret, "env-s3cr3t-value").unwrap();
    let flag = format!("id=k,src={}", secret.display());
    let (id, out) = build_ok(&root, &ctx, &["--secret", &flag]);
    assert_eq!(
        run_sh(&root, &id, "cat /env-len /files /both /after; echo $KEY"),
        "16\n0\nsame\nimage-value\nimage-value\n",
        "the secret replaced KEY in its step only, with no file unless a target is given"
    );
    assert!(!out.contains("env-s3cr3t-value"), "{out}");
    for entry in walkdir::WalkDir::new(root.path()) {
        let entry = entry.unwrap();
        if entry.file_type().is_file() {
            let data = fs::read(entry.path()).unwrap_or_default();
            assert!(
                !data.windows(16).any(|w| w == b"env-s3cr3t-value"),
                "the secret is in {}",
                entry.path().display()
            );
        }
    }
    // Another value of the secret: every step hits (the value is in no cache key).
    fs::write(&secret, "another-value").unwrap();
    let (_, out) = build_ok(&root, &ctx, &["--secret", &flag]);
    assert_eq!(
        build_support::cache_hits(&out).len(),
        4,
        "ENV and the 3 RUNs hit: {out}"
    );
}

#[test]
fn a_mount_that_cannot_be_made_fails_with_its_own_reason() {
    let root = TestRoot::new();
    root.import_busybox("busybox");
    // A cache directory onto a file of the image: the kernel refuses (ENOTDIR). The sandbox's
    // failure used to be hidden behind the parent's next step failing on the dead process
    // ('cgroup.procs: No such process', 'slirp4netns did not set up the private network').
    let ctx = Context::new(
        "FROM busybox\nRUN echo keep > /etc/f\nRUN --mount=type=cache,target=/etc/f true\n",
    );
    for network in ["private", "none"] {
        let out = build(&root, &ctx, &["--network", network]);
        assert!(!out.status.success(), "{}", describe(&["build"], &out));
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            err.contains("Dockerfile:3")
                && err.contains("for /etc/f")
                && err.contains("Not a directory"),
            "--network {network}: {err}"
        );
    }
}

#[test]
fn builder_prune_leaves_a_cache_mount_that_a_running_step_uses() {
    let root = TestRoot::new();
    root.import_busybox("busybox");
    let ctx = Context::new(
        "FROM busybox\nRUN --mount=type=cache,target=/c,id=busy touch /c/started && sleep 300\n",
    );
    let mut child = build_until_started(&root, &ctx, &["--network", "none"]);
    // As BuildKit, which prunes no cache mount in use: the running step keeps its files.
    root.ok(&["builder", "prune", "--all", "--force"]);
    assert!(
        step_started(&root),
        "prune removed the cache mount of a running step"
    );
    child.0.kill().unwrap();
    child.0.wait().unwrap();
    root.ok(&["builder", "prune", "--all", "--force"]);
    assert!(!step_started(&root), "a cache mount nobody uses is pruned");
}

/// Whether `needle` is in any regular file below `dir`.
fn found_below(dir: &std::path::Path, needle: &[u8]) -> Vec<std::path::PathBuf> {
    walkdir::WalkDir::new(dir)
        .into_iter()
        .flatten()
        .filter(|e| e.file_type().is_file())
        .filter(|e| {
            fs::read(e.path())
                .unwrap_or_default()
                .windows(needle.len())
                .any(|w| w == needle)
        })
        .map(|e| e.path().to_path_buf())
        .collect()
}

#[test]
fn a_secret_is_never_written_to_the_store_even_while_its_step_runs() {
    let root = TestRoot::new();
    root.import_busybox("busybox");
    let ctx = Context::new(
        "FROM busybox\nRUN --mount=type=secret,id=tok --mount=type=cache,target=/c,id=s \
         cat /run/secrets/tok > /dev/null && touch /c/started && sleep 300\n",
    );
    let secrets = tempfile::tempdir().unwrap();
    let secret = secrets.path().join("tok");
    fs::write(&secret, "d1sk-fr33-s3cr3t").unwrap();
    let secret_flag = format!("id=tok,src={}", secret.display());
    let mut child = build_until_started(
        &root,
        &ctx,
        &["--network", "none", "--secret", &secret_flag],
    );
    let pid = child.0.id();
    // As BuildKit's (a tmpfs): the secret's file is in memory (/dev/shm), not on the store's
    // disk, where a kill would leave it until the next command and its blocks after that.
    assert_eq!(
        found_below(root.path(), b"d1sk-fr33-s3cr3t"),
        Vec::<std::path::PathBuf>::new()
    );
    let in_shm = || {
        fs::read_dir("/dev/shm")
            .unwrap()
            .flatten()
            .filter(|e| {
                e.file_name()
                    .to_string_lossy()
                    .starts_with(&format!("rbuild-secret-{pid}-"))
            })
            .count()
    };
    assert_eq!(in_shm(), 1);
    child.0.kill().unwrap(); // SIGKILL: nothing removes it now
    child.0.wait().unwrap();
    // The next step with a secret removes what the killed build left.
    let ctx2 = Context::new("FROM busybox\nRUN --mount=type=secret,id=tok true\n");
    build_ok(&root, &ctx2, &["--secret", &secret_flag]);
    assert_eq!(in_shm(), 0);
}
