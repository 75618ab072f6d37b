//! `rbuild build` flags and the images they give, checked by running them with `rbuild run`:
//! ENTRYPOINT/CMD as Docker combines them, `-f -`, CONTEXT `-`, `--compression zstd`,
//! `--platform`, `--label`, `--progress`, `--network host`, SHELL, and `rbuild -t NAME CONTEXT`
//! without the subcommand.

mod build_support;
mod common;

use build_support::{build, build_ok, config_json, run_image, run_sh, Context};
use common::{describe, TestRoot};
use std::io::Write;
use std::process::{Command, Stdio};

fn stdout_of(root: &TestRoot, image: &str, args: &[&str]) -> String {
    let out = run_image(root, image, args);
    assert!(out.status.success(), "{}", describe(args, &out));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn entrypoint_and_cmd_combine_as_docker() {
    let root = TestRoot::new();
    root.import_busybox("busybox");
    let both =
        Context::new("FROM busybox\nENTRYPOINT [\"/bin/echo\", \"entry\"]\nCMD [\"default\"]\n");
    build_ok(&root, &both, &["-t", "both"]);
    assert_eq!(stdout_of(&root, "both", &[]), "entry default\n");
    assert_eq!(stdout_of(&root, "both", &["given"]), "entry given\n");
    // ENTRYPOINT set after an inherited CMD drops that CMD.
    let child = Context::new("FROM both\nENTRYPOINT [\"/bin/echo\", \"child\"]\n");
    build_ok(&root, &child, &["-t", "child"]);
    assert_eq!(stdout_of(&root, "child", &[]), "child\n");
    // Shell forms go through SHELL (default /bin/sh -c).
    let shell = Context::new("FROM busybox\nENV WHO=shell\nCMD echo hello $WHO\n");
    build_ok(&root, &shell, &["-t", "shellform"]);
    assert_eq!(stdout_of(&root, "shellform", &[]), "hello shell\n");
    assert_eq!(
        config_json(&root, "shellform")["config"]["Cmd"],
        serde_json::json!(["/bin/sh", "-c", "echo hello $WHO"])
    );
}

#[test]
fn dockerfile_from_stdin_and_stdin_only_context() {
    let root = TestRoot::new();
    root.import_busybox("busybox");
    let ctx = Context::new("FROM busybox\nRUN false\n");
    ctx.write("data.txt", "from context\n");
    let feed = |args: Vec<String>, text: &str| {
        let mut child = Command::new(common::rbuild_bin())
            .args(["--root", &root.root_str(), "build", "-q"])
            .args(&args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn rbuild");
        child
            .stdin
            .take()
            .expect("stdin")
            .write_all(text.as_bytes())
            .expect("write stdin");
        child.wait_with_output().expect("wait")
    };
    // -f -: the Dockerfile from stdin, the files from the context.
    let out = feed(
        vec![
            "-f".into(),
            "-".into(),
            "-t".into(),
            "stdin-df".into(),
            ctx.dir(),
        ],
        "FROM busybox\nCOPY data.txt /data.txt\n",
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(run_sh(&root, "stdin-df", "cat /data.txt"), "from context\n");
    // CONTEXT -: no files at all.
    let out = feed(
        vec!["-t".into(), "stdin-ctx".into(), "-".into()],
        "FROM busybox\nRUN echo ok > /ok\n",
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(run_sh(&root, "stdin-ctx", "cat /ok"), "ok\n");
}

/// Runs `rbuild build -q ARGS...` with `input` on stdin.
fn build_with_stdin(root: &TestRoot, args: &[&str], input: &[u8]) -> std::process::Output {
    let mut child = Command::new(common::rbuild_bin())
        .args(["--root", &root.root_str(), "build", "-q"])
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn rbuild");
    let mut stdin = child.stdin.take().expect("stdin");
    // A failing build may stop reading early: a broken pipe here is its business.
    let _ = stdin.write_all(input);
    drop(stdin);
    child.wait_with_output().expect("wait")
}

#[test]
fn a_tar_context_on_stdin_in_every_compression() {
    let root = TestRoot::new();
    root.import_busybox("busybox");
    let ctx = Context::new("FROM busybox\nCOPY . /ctx/\n");
    ctx.write("data.txt", "from the archive\n");
    ctx.write(
        "sub/Alt.df",
        "FROM busybox\nCOPY data.txt /alt.txt\nRUN echo alt > /which\n",
    );
    ctx.write("sub/Bad.df", "FROM busybox\nNOTANINSTRUCTION x\n");
    ctx.write(".dockerignore", "sub\n");
    for flag in ["", "-z", "-j", "-J", "--zstd"] {
        let mut cmd = Command::new("tar");
        cmd.arg("-C").arg(ctx.path()).arg("-c");
        if !flag.is_empty() {
            cmd.arg(flag);
        }
        let tar = cmd.args(["-f", "-", "."]).output().expect("run tar");
        assert!(tar.status.success(), "tar {flag}");
        // The context's own Dockerfile, and its .dockerignore.
        let out = build_with_stdin(&root, &["-t", "from-tar", "-"], &tar.stdout);
        assert!(out.status.success(), "{flag}: {}", describe(&["-"], &out));
        assert_eq!(
            run_sh(&root, "from-tar", "cat /ctx/data.txt; ls /ctx"),
            "from the archive\nDockerfile\ndata.txt\n",
            "{flag}"
        );
        // -f names a Dockerfile inside the archive.
        let out = build_with_stdin(&root, &["-t", "alt", "-f", "sub/Alt.df", "-"], &tar.stdout);
        assert!(out.status.success(), "{flag}: {}", describe(&["-f"], &out));
        assert_eq!(
            run_sh(&root, "alt", "cat /alt.txt /which"),
            "from the archive\nalt\n",
            "{flag}"
        );
    }
    let tar = Command::new("tar")
        .arg("-C")
        .arg(ctx.path())
        .args(["-czf", "-", "."])
        .output()
        .expect("run tar");
    // A bad Dockerfile named by -f in the archive fails before anything runs, with its line.
    let out = build_with_stdin(&root, &["-f", "sub/Bad.df", "-"], &tar.stdout);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("Dockerfile:2") && err.contains("NOTANINSTRUCTION"),
        "{err}"
    );
    // A missing Dockerfile is named inside the archive, not by where it was unpacked.
    let out = build_with_stdin(&root, &["-f", "sub/None.df", "-"], &tar.stdout);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("Dockerfile sub/None.df in the context archive from stdin"),
        "{err}"
    );
    // The Dockerfile cannot come from stdin too.
    let out = build_with_stdin(&root, &["-f", "-", "-"], &tar.stdout);
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("-f PATH inside the archive"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn zstd_layers_labels_platform_and_the_short_form() {
    let root = TestRoot::new();
    root.import_busybox("busybox");
    let ctx = Context::new("FROM busybox\nRUN echo zstd > /z\n");
    // `rbuild -t NAME CONTEXT` is `rbuild build -t NAME CONTEXT`.
    let out = root.rbuild(&[
        "-t",
        "short",
        "--compression",
        "zstd",
        "--label",
        "a=b",
        "-q",
        &ctx.dir(),
    ]);
    assert!(out.status.success(), "{}", describe(&["-t"], &out));
    assert_eq!(stdout_of(&root, "short", &["cat", "/z"]), "zstd\n");
    let manifest = root.ok(&["inspect", "-f", "{{json .Descriptor}}", "short"]);
    assert!(!manifest.is_empty());
    let c = config_json(&root, "short");
    assert_eq!(c["config"]["Labels"]["a"], "b");
    let layers = std::fs::read_dir(root.path().join("blobs/sha256"))
        .expect("blobs")
        .filter_map(|e| e.ok())
        .filter(|e| {
            std::fs::read(e.path())
                .map(|d| d.starts_with(&[0x28, 0xb5, 0x2f, 0xfd]))
                .unwrap_or(false)
        })
        .count();
    assert!(layers >= 1, "no zstd layer blob in the store");
    let out = build(&root, &ctx, &["--platform", "linux/arm64"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("linux/arm64"));
    let out = build(&root, &ctx, &["--compression", "lz4"]);
    assert!(!out.status.success());
}

/// Media types of the layers of `image`'s manifest.
fn layer_media_types(root: &TestRoot, image: &str) -> Vec<String> {
    let d = root.ok(&["inspect", "-f", "{{json .Descriptor}}", image]);
    let d: serde_json::Value = serde_json::from_str(&d).expect("descriptor JSON");
    let hex = d["digest"]
        .as_str()
        .expect("digest")
        .trim_start_matches("sha256:");
    let m = std::fs::read(root.path().join("blobs/sha256").join(hex)).expect("manifest blob");
    let m: serde_json::Value = serde_json::from_slice(&m).expect("manifest JSON");
    m["layers"]
        .as_array()
        .expect("layers")
        .iter()
        .map(|l| l["mediaType"].as_str().unwrap_or_default().to_string())
        .collect()
}

#[test]
fn compression_is_honoured_when_the_steps_are_cached_in_another_one() {
    let root = TestRoot::new();
    root.import_busybox("busybox");
    let ctx = Context::new("FROM busybox\nRUN echo z > /z\nCOPY f /f\n");
    ctx.write("f", "f\n");
    let gzip = "application/vnd.oci.image.layer.v1.tar+gzip";
    let zstd = "application/vnd.oci.image.layer.v1.tar+zstd";
    build_ok(&root, &ctx, &["-t", "gz"]);
    assert_eq!(layer_media_types(&root, "gz"), [gzip, gzip, gzip]);
    // The gzip build's cache must not hand its gzip layers to a zstd build.
    let (_, out) = build_ok(&root, &ctx, &["-t", "zs", "--compression", "zstd"]);
    assert!(!out.contains("CACHED"), "{out}");
    // The base image's layer is kept as it is; the new ones are zstd.
    assert_eq!(layer_media_types(&root, "zs"), [gzip, zstd, zstd]);
    assert_eq!(stdout_of(&root, "zs", &["cat", "/z", "/f"]), "z\nf\n");
    // Each compression then hits its own cache entries.
    let (_, out) = build_ok(&root, &ctx, &["-t", "zs2", "--compression", "zstd"]);
    assert_eq!(out.matches("--> CACHED").count(), 2, "{out}");
    assert_eq!(layer_media_types(&root, "zs2"), [gzip, zstd, zstd]);
    let (_, out) = build_ok(&root, &ctx, &["-t", "gz2", "--compression", "gzip"]);
    assert_eq!(out.matches("--> CACHED").count(), 2, "{out}");
    assert_eq!(layer_media_types(&root, "gz2"), [gzip, gzip, gzip]);
}

#[test]
fn progress_modes_network_host_and_platform() {
    let root = TestRoot::new();
    root.import_busybox("busybox");
    let ctx = Context::new("FROM busybox\nRUN echo streamed-output && ls /sys/class/net > /nets\n");
    // --progress tty: the live view's finished-step lines (bold, with the step's time), the
    // RUN output among them; a cached step says CACHED.
    let out = root.ok(&[
        "build",
        "--progress",
        "tty",
        "--network",
        "host",
        &ctx.dir(),
    ]);
    assert!(
        out.contains("\x1b[1mSTEP 1/2: FROM busybox\x1b[0m  "),
        "{out:?}"
    );
    assert!(
        out.contains("\x1b[1mSTEP 2/2: RUN echo streamed-output"),
        "{out:?}"
    );
    assert!(out.contains("streamed-output\n"), "{out:?}");
    let step_line = out
        .lines()
        .find(|l| l.contains("STEP 2/2"))
        .expect("step line");
    assert!(step_line.ends_with('s'), "no step time in {step_line:?}");
    let again = root.ok(&[
        "build",
        "--progress",
        "tty",
        "--network",
        "host",
        &ctx.dir(),
    ]);
    assert!(again.contains("CACHED"), "{again:?}");
    // --progress auto on a pipe is the plain view.
    let out = root.ok(&[
        "build",
        "--progress",
        "auto",
        "--network",
        "host",
        "--no-cache",
        "--platform",
        "linux/amd64",
        "-t",
        "hostnet",
        &ctx.dir(),
    ]);
    assert!(!out.contains('\x1b'), "{out:?}");
    assert!(out.contains("STEP 2/2: RUN echo streamed-output"), "{out}");
    assert!(out.contains("\n--> "), "{out}");
    // The host network: the RUN saw the host's interfaces.
    let mut host: Vec<String> = std::fs::read_dir("/sys/class/net")
        .expect("host interfaces")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .collect();
    host.sort();
    let seen = run_sh(&root, "hostnet", "cat /nets");
    assert_eq!(seen.lines().collect::<Vec<_>>(), host);
    let c = config_json(&root, "hostnet");
    assert_eq!(
        (c["os"].as_str(), c["architecture"].as_str()),
        (Some("linux"), Some("amd64"))
    );
}

#[test]
fn shell_changes_how_run_and_cmd_shell_forms_run() {
    let root = TestRoot::new();
    root.import_busybox("busybox");
    let ctx = Context::new(
        "FROM busybox\nSHELL [\"/bin/sh\", \"-xc\"]\nRUN echo traced > /t\nCMD echo from-cmd\n\
         SHELL [\"/bin/echo\", \"shell-is-echo\"]\nRUN ignored words\n",
    );
    let (_, out) = build_ok(&root, &ctx, &["-t", "shells"]);
    // The first RUN ran with -x; the second RUN's "shell" was echo.
    assert!(out.contains("+ echo traced\n"), "{out}");
    assert!(out.contains("shell-is-echo ignored words\n"), "{out}");
    // CMD kept the shell it was written under.
    let run = run_image(&root, "shells", &[]);
    assert!(run.status.success(), "{}", describe(&["run"], &run));
    assert_eq!(String::from_utf8_lossy(&run.stdout), "from-cmd\n");
    assert!(
        String::from_utf8_lossy(&run.stderr).contains("+ echo from-cmd"),
        "{}",
        describe(&["run"], &run)
    );
}

#[test]
fn build_arg_without_value_comes_from_the_environment() {
    let root = TestRoot::new();
    root.import_busybox("busybox");
    let ctx = Context::new("FROM busybox\nARG X=default\nRUN echo \"x=$X\" > /x\n");
    let run = |env: Option<&str>| {
        let mut cmd = Command::new(common::rbuild_bin());
        cmd.args([
            "--root",
            &root.root_str(),
            "build",
            "-q",
            "--build-arg",
            "X",
        ])
        .arg(ctx.dir())
        .env_remove("X");
        if let Some(v) = env {
            cmd.env("X", v);
        }
        let out = cmd.output().expect("run rbuild");
        assert!(out.status.success(), "{}", describe(&["build"], &out));
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    };
    let id = run(Some("from-env"));
    assert_eq!(run_sh(&root, &id, "cat /x"), "x=from-env\n");
    // Unset in the environment: the ARG keeps its default.
    let id = run(None);
    assert_eq!(run_sh(&root, &id, "cat /x"), "x=default\n");
}

#[test]
fn run_output_is_streamed_whole() {
    let root = TestRoot::new();
    root.import_busybox("busybox");
    // One 1 MiB line and 20,000 short ones: nothing is cut, on the console or in the log.
    let ctx = Context::new(
        "FROM busybox\nRUN head -c 1048576 /dev/zero | tr '\\0' x; echo; seq 1 20000\n",
    );
    let (_, out) = build_ok(&root, &ctx, &[]);
    let long = "x".repeat(1 << 20);
    assert!(out.contains(&format!("\n{long}\n1\n2\n")), "long line cut");
    assert!(out.contains("\n19999\n20000\n"), "short lines cut");
    let log = out
        .lines()
        .find_map(|l| l.strip_prefix("Build log: "))
        .expect("build log line");
    let log = std::fs::read_to_string(log).expect("read build log");
    assert!(log.contains(&format!("{long}\n1\n")) && log.contains("\n20000\n"));
}

#[test]
fn a_reader_that_goes_away_does_not_fail_the_build() {
    let root = TestRoot::new();
    root.import_busybox("busybox");
    let ctx = Context::new("FROM busybox\nRUN echo one && echo two\n");
    // Like `rbuild build . | head -1`, at its harshest: the reading end is closed before
    // rbuild writes anything, so every write to stdout meets a closed pipe.
    let mut child = Command::new(common::rbuild_bin())
        .args([
            "--root",
            &root.root_str(),
            "build",
            "--progress",
            "plain",
            "-t",
            "gone",
        ])
        .arg(ctx.dir())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn rbuild");
    drop(child.stdout.take().expect("stdout"));
    let out = child.wait_with_output().expect("wait");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
    assert_eq!(stdout_of(&root, "gone", &["echo", "ok"]), "ok\n");
}
