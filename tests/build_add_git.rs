//! `ADD` of a git repository served on loopback by `git daemon`: a branch, a tag, a commit and
//! a subdirectory; `.git` only with `--keep-git-dir`; the resolved commit is the cache key (a
//! moved branch misses, an unchanged one hits); a missing ref names the repository.

mod build_support;
mod common;

use build_support::{build, build_ok, run_sh, Context};
use common::{describe, KillOnDrop, TestRoot};
use std::net::TcpListener;
use std::path::Path;
use std::process::Command;

fn git(dir: &Path, args: &[&str]) -> String {
    let out = Command::new("git")
        .arg("-C")
        .arg(dir)
        .args(args)
        .env("GIT_AUTHOR_NAME", "t")
        .env("GIT_AUTHOR_EMAIL", "t@example.invalid")
        .env("GIT_COMMITTER_NAME", "t")
        .env("GIT_COMMITTER_EMAIL", "t@example.invalid")
        .output()
        .expect("run git");
    assert!(
        out.status.success(),
        "git {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// A repository `repo.git` below `base` with two commits on `main` (tag v1 on the first), and
/// a `git daemon` serving it on 127.0.0.1; returns the daemon and its port.
fn serve_repo(base: &Path) -> (KillOnDrop, u16) {
    let work = base.join("work");
    std::fs::create_dir_all(work.join("docs")).unwrap();
    git(&work, &["init", "-q", "-b", "main"]);
    std::fs::write(work.join("README"), "first\n").unwrap();
    std::fs::write(work.join("docs/guide.txt"), "guide\n").unwrap();
    git(&work, &["add", "."]);
    git(&work, &["commit", "-q", "-m", "one"]);
    git(&work, &["tag", "v1"]);
    std::fs::write(work.join("README"), "second\n").unwrap();
    git(&work, &["commit", "-q", "-am", "two"]);
    git(base, &["clone", "-q", "--bare", "work", "repo.git"]);
    let port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let daemon = Command::new("git")
        .args([
            "daemon",
            "--reuseaddr",
            "--export-all",
            "--listen=127.0.0.1",
        ])
        .arg(format!("--port={port}"))
        .arg(format!("--base-path={}", base.display()))
        .arg(base)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("start git daemon");
    let daemon = KillOnDrop(daemon);
    let url = format!("git://127.0.0.1:{port}/repo.git");
    assert!(
        common::poll_until(500, || Command::new("git")
            .args(["ls-remote", &url])
            .output()
            .is_ok_and(|o| o.status.success())),
        "git daemon did not come up"
    );
    (daemon, port)
}

#[test]
fn add_fetches_branches_tags_commits_and_subdirs() {
    let tmp = tempfile::tempdir().unwrap();
    let (_daemon, port) = serve_repo(tmp.path());
    let url = format!("git://127.0.0.1:{port}/repo.git");
    let first = git(&tmp.path().join("work"), &["rev-parse", "v1"]);
    let root = TestRoot::new();
    root.import_busybox("busybox");
    let ctx = Context::new(&format!(
        "FROM busybox\n\
         ADD {url} /head\n\
         ADD {url}#v1 /tag\n\
         ADD {url}#{first}:docs /docs\n\
         ADD --keep-git-dir {url}#main /kept\n"
    ));
    let (id, out) = build_ok(&root, &ctx, &[]);
    assert!(!out.contains("CACHED"), "{out}");
    assert_eq!(
        run_sh(
            &root,
            &id,
            "cat /head/README /tag/README /docs/guide.txt; ls -a /head | grep -c '^.git$'; \
             test -d /kept/.git && echo kept"
        ),
        "second\nfirst\nguide\n0\nkept\n"
    );
    // Unchanged refs: every step hits. A moved branch: the steps that follow it miss.
    let (_, out) = build_ok(&root, &ctx, &[]);
    assert_eq!(out.matches("--> CACHED").count(), 4, "{out}");
    let work = tmp.path().join("work");
    std::fs::write(work.join("README"), "third\n").unwrap();
    git(&work, &["commit", "-q", "-am", "three"]);
    git(&work, &["push", "-q", "../repo.git", "main"]);
    let (id, out) = build_ok(&root, &ctx, &[]);
    assert_eq!(out.matches("--> CACHED").count(), 0, "{out}");
    assert_eq!(
        run_sh(&root, &id, "cat /head/README /kept/README"),
        "third\nthird\n"
    );

    std::fs::write(
        ctx.path().join("Dockerfile"),
        format!("FROM busybox\nADD {url}#nope /x\n"),
    )
    .unwrap();
    let out = build(&root, &ctx, &[]);
    assert!(!out.status.success(), "{}", describe(&["build"], &out));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("Dockerfile:2") && err.contains("no branch or tag nope"),
        "{err}"
    );
}
