//! The examples/ projects and Dockerfile.examples build and run as their READMEs say.

mod common;

use common::{describe, TestRoot};

fn repo() -> &'static str {
    env!("CARGO_MANIFEST_DIR")
}

fn build_and_run(root: &TestRoot, tag: &str, args: &[&str]) -> String {
    let mut full = vec!["build", "-q", "-t", tag];
    full.extend_from_slice(args);
    root.ok(&full);
    let out = root.rbuild(&["run", "--rm", tag]);
    assert!(out.status.success(), "{}", describe(&["run", tag], &out));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn examples_build_and_run() {
    let root = TestRoot::new();
    root.import_busybox("busybox");
    let ex = |name: &str| format!("{}/examples/{name}", repo());
    let out = build_and_run(&root, "hello", &[&ex("hello")]);
    assert!(out.starts_with("Hello from an rbuild image"), "{out}");
    let out = build_and_run(&root, "words", &[&ex("multi-stage")]);
    assert_eq!(out, "4 unique words:\napple\nfig\npear\nplum\n");
    let out = build_and_run(&root, "site", &[&ex("add-archive")]);
    assert!(
        out.starts_with("<h1>served from an ADDed archive</h1>\n"),
        "{out}"
    );
}

#[test]
fn dockerfile_examples_builds_and_runs() {
    let root = TestRoot::new();
    root.import_busybox("busybox");
    let file = format!("{}/Dockerfile.examples", repo());
    let out = build_and_run(&root, "rbuild-demo", &["-f", &file, repo()]);
    for want in [
        "Welcome to the rbuild demo image.",
        "Hello from Dockerfile.examples",
        "an ONBUILD trigger ran",
        "served from an ADDed archive",
        "running as nobody",
    ] {
        assert!(out.contains(want), "{want:?} missing from:\n{out}");
    }
}
