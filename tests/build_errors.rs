//! Bad Dockerfiles are reported with their line before anything runs; a failing RUN stops the
//! build with its exit code, instruction, line and last output lines; exit codes fit CI.

mod build_support;
mod common;

use build_support::{build, Context};
use common::TestRoot;

fn stderr_of(root: &TestRoot, dockerfile: &str, args: &[&str]) -> (Option<i32>, String, String) {
    let ctx = Context::new(dockerfile);
    let out = build(root, &ctx, args);
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn bad_dockerfiles_name_their_line() {
    let root = TestRoot::new();
    root.import_busybox("busybox");
    let cases = [
        ("FROM busybox\nRUN true\nFROBNICATE x\n", "Dockerfile:3"),
        ("RUN echo no from\n", "Dockerfile:1"),
        ("FROM busybox\n\n# comment\nCOPY onlyone\n", "Dockerfile:4"),
        (
            "FROM busybox\nCOPY --from=nowhere /a /b\nRUN true\n",
            "Dockerfile:2",
        ),
        ("FROM busybox\nRUN --bogus-flag=1 true\n", "Dockerfile:2"),
    ];
    for (df, want) in cases {
        let (code, stdout, stderr) = stderr_of(&root, df, &[]);
        assert_eq!(code, Some(1), "{df}\n{stdout}\n{stderr}");
        let last = stderr
            .trim_end()
            .lines()
            .last()
            .unwrap_or_default()
            .to_string();
        assert!(
            last.contains(want),
            "{df}: last line {last:?} lacks {want}\n{stderr}"
        );
        assert!(
            !stdout.contains("STEP 2/"),
            "{df}: ran steps before failing:\n{stdout}"
        );
    }
}

#[test]
fn missing_copy_source_names_line_and_file() {
    let root = TestRoot::new();
    root.import_busybox("busybox");
    let (code, _, stderr) = stderr_of(&root, "FROM busybox\nRUN true\nCOPY missing.txt /x\n", &[]);
    assert_eq!(code, Some(1));
    let last = stderr.trim_end().lines().last().unwrap_or_default();
    assert!(
        last.contains("Dockerfile:3") && last.contains("missing.txt"),
        "{stderr}"
    );
}

#[test]
fn failing_run_reports_code_line_and_output() {
    let root = TestRoot::new();
    root.import_busybox("busybox");
    let df = "FROM busybox\nRUN echo before\nRUN echo about to fail && echo oops >&2 && exit 7\nRUN echo never\n";
    let (code, stdout, stderr) = stderr_of(&root, df, &[]);
    assert_eq!(code, Some(7));
    assert!(stdout.contains("oops"), "{stdout}");
    assert!(!stdout.contains("never"), "{stdout}");
    let last = stderr.trim_end().lines().last().unwrap_or_default();
    assert!(last.contains("Dockerfile:3"), "{stderr}");
    assert!(last.contains("exit 7"), "{stderr}");
    assert!(last.contains('7'), "{stderr}");
    // -q shows the last output lines on stderr instead.
    let (code, stdout, stderr) = stderr_of(&root, df, &["-q"]);
    assert_eq!(code, Some(7));
    assert!(stdout.is_empty(), "{stdout}");
    assert!(stderr.contains("oops"), "{stderr}");
}

#[test]
fn quiet_prints_only_the_id_and_iidfile_gets_it() {
    let root = TestRoot::new();
    root.import_busybox("busybox");
    let ctx = Context::new("FROM busybox\nRUN echo noisy\n");
    let iid = ctx.path().join("iid");
    let iid_s = iid.to_string_lossy().into_owned();
    let out = build(&root, &ctx, &["-q", "--iidfile", &iid_s]);
    assert!(out.status.success());
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(stdout.lines().count(), 1, "{stdout}");
    assert!(stdout.starts_with("sha256:"));
    assert_eq!(
        std::fs::read_to_string(&iid).expect("iidfile"),
        stdout.trim()
    );
}

#[test]
fn unsupported_flags_and_invalid_values_fail_before_anything_runs() {
    let root = TestRoot::new();
    root.import_busybox("busybox");
    // Each bad line comes after a RUN whose output must not appear: nothing ran.
    let cases = [
        (
            "RUN --mount=type=ssh true",
            "--mount=type=ssh: type=ssh is not supported",
        ),
        ("RUN --network=bogus true", "unknown --network=bogus"),
        ("RUN --security=insecure true", "--security=insecure is not supported"),

        ("COPY --parents a /p/", "--parents is not supported"),
        ("COPY --exclude=[ . /p/", "invalid --exclude"),
        ("ADD --exclude=a/[ . /p/", "invalid --exclude"),
        ("COPY a b /notdir", "destination must be a directory"),
        ("COPY --chmod=999 a /x", "invalid --chmod=999"),
        ("ADD --checksum=md5:00 http://127.0.0.1:9/x /f", "invalid --checksum=md5:00"),
        (
            "ADD --checksum=sha256:aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa a /f",
            "--checksum applies to HTTP(S) sources only, not a",
        ),
        ("EXPOSE 80/xyz", "invalid protocol \"xyz\""),
        ("EXPOSE 70000", "invalid port"),
        ("STOPSIGNAL SIGFOO", "invalid signal \"SIGFOO\""),
        (
            "FROM --platform=linux/arm64 busybox",
            "platform \"linux/arm64\"",
        ),
    ];
    for (bad, want) in cases {
        let df = format!("FROM busybox\nRUN echo ran-before-the-error\n{bad}\n");
        let (code, stdout, stderr) = stderr_of(&root, &df, &[]);
        assert_eq!(code, Some(1), "{df}\n{stdout}\n{stderr}");
        let last = stderr.trim_end().lines().last().unwrap_or_default();
        assert!(
            last.contains("Dockerfile:3") && last.contains(want),
            "{df}: last line {last:?} lacks Dockerfile:3 or {want:?}\n{stderr}"
        );
        assert!(
            !stdout.contains("ran-before-the-error"),
            "{df}: ran:\n{stdout}"
        );
    }
    // A value known only once expanded is checked when its step runs, with its line.
    let (code, _, stderr) = stderr_of(&root, "FROM busybox\nENV S=SIGBAR\nSTOPSIGNAL $S\n", &[]);
    assert_eq!(code, Some(1));
    let last = stderr.trim_end().lines().last().unwrap_or_default();
    assert!(
        last.contains("Dockerfile:3") && last.contains("SIGBAR"),
        "{stderr}"
    );
    // Valid spellings pass: numbers, ranges, upper-case protocols, `./` and `.` destinations.
    let ctx = Context::new(
        "FROM --platform=linux/amd64 busybox\nWORKDIR /w\nEXPOSE 80 53/UDP 8000-8001/sctp\n\
         STOPSIGNAL 9\nCOPY a b ./\nCOPY a b .\n",
    );
    ctx.write("a", "a");
    ctx.write("b", "b");
    let out = build(&root, &ctx, &[]);
    assert!(
        out.status.success(),
        "{}",
        common::describe(&["build"], &out)
    );
}

#[test]
fn a_malformed_dockerignore_names_its_own_line() {
    let root = TestRoot::new();
    root.import_busybox("busybox");
    let ctx = Context::new("FROM busybox\nCOPY . /ctx/\n");
    ctx.write(".dockerignore", "ok\n[abc\n");
    let out = build(&root, &ctx, &[]);
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    let last = stderr.trim_end().lines().last().unwrap_or_default();
    assert!(
        last.starts_with("error: .dockerignore:2: invalid pattern \"[abc\""),
        "{stderr}"
    );
}
