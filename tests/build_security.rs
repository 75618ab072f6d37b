//! Hostile Dockerfiles: file names that would make COPY/ADD act outside the image root.

mod common;

use common::TestRoot;
use std::fs;

#[test]
fn heredoc_named_dotdot_is_refused_and_touches_nothing_outside_the_image() {
    let root = TestRoot::new();
    root.import_busybox("busybox");
    let ctx = tempfile::tempdir().unwrap();
    let sentinel = root.path().join("sentinel-outside-image");
    fs::write(&sentinel, "keep me").unwrap();
    for name in ["..", "."] {
        fs::write(
            ctx.path().join("Dockerfile"),
            format!("FROM busybox\nCOPY <<{name} /\nhello\n{name}\n"),
        )
        .unwrap();
        let err = root.fails(&["build", "-t", "evil", ctx.path().to_str().unwrap()]);
        let last = err.lines().last().unwrap_or_default();
        assert!(last.contains("Dockerfile:2"), "{err}");
        assert!(last.contains("invalid file name"), "{err}");
    }
    assert_eq!(fs::read_to_string(&sentinel).unwrap(), "keep me");
    // The store is intact: a normal build still works and check finds nothing wrong.
    fs::write(
        ctx.path().join("Dockerfile"),
        "FROM busybox\nCOPY <<ok /ok\nfine\nok\n",
    )
    .unwrap();
    root.ok(&["build", "-q", "-t", "good", ctx.path().to_str().unwrap()]);
    root.ok(&["system", "check"]);
}
