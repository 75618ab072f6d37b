//! The build context as COPY sees it: `.dockerignore` with Docker's semantics (names anchored at
//! the root, `*` not crossing `/`, `**`, `!` re-inclusion, the Dockerfile and .dockerignore
//! themselves excludable), globs in sources, and symlinks that cannot leave the context.

mod build_support;
mod common;

use build_support::{build, build_ok, get_xattr, run_sh, set_xattr, Context};
use common::TestRoot;

#[test]
fn dockerignore_semantics_decide_what_copy_sees() {
    let root = TestRoot::new();
    root.import_busybox("busybox");
    let ctx = Context::new("FROM busybox\nCOPY . /ctx/\n");
    ctx.write(
        ".dockerignore",
        "# comment\ndocs\n*/*.tmp\n**/*.bak\nsecrets/\n!secrets/public.txt\nDockerfile\n.dockerignore\n",
    );
    for f in [
        "docs/a.md",
        "sub/docs/kept.md",
        "top.tmp",
        "sub/x.tmp",
        "sub/deeper/y.tmp",
        "a.bak",
        "sub/deeper/b.bak",
        "secrets/key",
        "secrets/public.txt",
        "keep.txt",
    ] {
        ctx.write(f, f);
    }
    let (id, _) = build_ok(&root, &ctx, &[]);
    assert_eq!(
        run_sh(&root, &id, "cd /ctx && find . -type f | sort"),
        "./keep.txt\n./secrets/public.txt\n./sub/deeper/y.tmp\n./sub/docs/kept.md\n./top.tmp\n"
    );
    // An excluded source named directly is "not found", like Docker.
    let direct = Context::new("FROM busybox\nCOPY secrets/key /key\n");
    direct.write(".dockerignore", "secrets\n");
    direct.write("secrets/key", "k");
    let out = build(&root, &direct, &[]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("secrets/key"));
}

#[test]
fn glob_sources_and_symlinks_stay_in_the_context() {
    let root = TestRoot::new();
    root.import_busybox("busybox");
    let outside = tempfile::tempdir().expect("outside dir");
    std::fs::write(outside.path().join("host-secret"), "host").expect("write");
    let ctx = Context::new(
        "FROM busybox\nCOPY src/*.c /c/\nCOPY src/?.h /h/\nCOPY link.txt /linked/\nCOPY dirlink/inner.txt /inner.txt\n",
    );
    ctx.write("src/a.c", "a");
    ctx.write("src/b.c", "b");
    ctx.write("src/x.h", "x");
    ctx.write("src/long.h", "long");
    ctx.write("real/inner.txt", "inner\n");
    ctx.write("target.txt", "target\n");
    std::os::unix::fs::symlink("target.txt", ctx.path().join("link.txt")).expect("symlink");
    std::os::unix::fs::symlink("/real", ctx.path().join("dirlink")).expect("symlink");
    let (id, _) = build_ok(&root, &ctx, &[]);
    assert_eq!(
        run_sh(&root, &id, "ls /c; ls /h; cat /linked/link.txt /inner.txt"),
        "a.c\nb.c\nx.h\ntarget\ninner\n"
    );
    let escape = Context::new("FROM busybox\nCOPY out/host-secret /s\n");
    std::os::unix::fs::symlink(outside.path(), escape.path().join("out")).expect("symlink");
    let out = build(&root, &escape, &[]);
    assert!(
        !out.status.success(),
        "a context symlink reached a host file"
    );
}

#[test]
fn a_dockerfile_specific_ignore_file_replaces_the_context_one() {
    let root = TestRoot::new();
    root.import_busybox("busybox");
    let df = "FROM busybox\nCOPY . /ctx/\n";
    let ctx = Context::new(df);
    ctx.write(".dockerignore", "a.txt\n");
    ctx.write("a.txt", "a");
    ctx.write("b.txt", "b");
    ctx.write("c.txt", "c");
    ctx.write("build/app.Dockerfile", df);
    ctx.write(
        "build/app.Dockerfile.dockerignore",
        "b.txt\nbuild\n.dockerignore\n",
    );
    let list = "cd /ctx && find . -type f | sort";
    // The context's .dockerignore for the default Dockerfile.
    let (id, _) = build_ok(&root, &ctx, &[]);
    assert_eq!(
        run_sh(&root, &id, list),
        "./.dockerignore\n./Dockerfile\n./b.txt\n./build/app.Dockerfile\n\
         ./build/app.Dockerfile.dockerignore\n./c.txt\n"
    );
    // build/app.Dockerfile.dockerignore for -f build/app.Dockerfile, instead of .dockerignore.
    let file = ctx.path().join("build/app.Dockerfile");
    let (id, _) = build_ok(&root, &ctx, &["-f", &file.to_string_lossy()]);
    assert_eq!(run_sh(&root, &id, list), "./Dockerfile\n./a.txt\n./c.txt\n");
    // Dockerfile.dockerignore beside the default Dockerfile wins too.
    ctx.write("Dockerfile.dockerignore", "c.txt\nbuild\n");
    let (id, _) = build_ok(&root, &ctx, &[]);
    assert_eq!(
        run_sh(&root, &id, list),
        "./.dockerignore\n./Dockerfile\n./Dockerfile.dockerignore\n./a.txt\n./b.txt\n"
    );
}

#[test]
fn wildcards_may_match_nothing_but_literal_sources_must_exist() {
    let root = TestRoot::new();
    root.import_busybox("busybox");
    // The `COPY package.json yarn.lock* ./` idiom: the lock file is optional.
    let ctx = Context::new(
        "FROM busybox AS b\nRUN mkdir /o && echo 1 > /o/one\nFROM busybox\nWORKDIR /app\n\
         COPY package.json yarn.lock* ./\nCOPY --from=b /o/one /o/*.none /from/\n",
    );
    ctx.write("package.json", "{}\n");
    let (id, _) = build_ok(&root, &ctx, &[]);
    assert_eq!(
        run_sh(&root, &id, "ls /app /from"),
        "/app:\npackage.json\n\n/from:\none\n"
    );
    ctx.write("yarn.lock", "lock\n");
    let (id, _) = build_ok(&root, &ctx, &[]);
    assert_eq!(run_sh(&root, &id, "ls /app"), "package.json\nyarn.lock\n");
    // Wildcards that all match nothing copy nothing, without error, as BuildKit does (its
    // COPY allows empty wildcards; moby#26332): the destination is not even created.
    let none = Context::new(
        "FROM busybox AS b\nFROM busybox\nCOPY *.none other*.md /d/\n\
         COPY --from=b /*.none /e/\nRUN test ! -e /d && test ! -e /e && echo nothing-copied\n",
    );
    let (_, out) = build_ok(&root, &none, &[]);
    assert!(out.contains("nothing-copied"), "{out}");
    // A missing literal source is still an error, even beside a wildcard.
    for df in [
        "FROM busybox\nCOPY *.none missing.txt /d/\n",
        "FROM busybox AS b\nFROM busybox\nCOPY --from=b /*.none /missing /d/\n",
    ] {
        let bad = Context::new(df);
        let out = build(&root, &bad, &[]);
        assert!(!out.status.success(), "{df}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            err.contains("missing") && err.contains("Dockerfile:"),
            "{df}: {err}"
        );
    }
}

#[test]
fn context_files_keep_their_xattrs_and_a_changed_xattr_misses_the_cache() {
    let root = TestRoot::new();
    root.import_busybox("busybox");
    let ctx = Context::new("FROM busybox\nCOPY tool /tool\nCOPY d /d/\nCOPY plain /plain\n");
    let tool = ctx.write("tool", "#!/bin/sh\necho tool\n");
    ctx.write("plain", "plain\n");
    let inner = ctx.write("d/sub/f", "f\n");
    // cap_net_bind_service, effective, as `setcap` leaves it; and user xattrs on a file and a dir.
    let mut cap = Vec::new();
    for word in [0x0200_0001u32, 1 << 10, 0, 0, 0] {
        cap.extend_from_slice(&word.to_le_bytes());
    }
    set_xattr(&tool, "security.capability", &cap);
    set_xattr(&tool, "user.rbuild.note", b"one");
    set_xattr(&inner, "user.rbuild.inner", b"in");
    set_xattr(&ctx.path().join("d/sub"), "user.rbuild.dir", b"dir");
    let check = |id: &str, note: &[u8]| {
        let merged = std::path::PathBuf::from(root.ok(&["mount", id]).trim());
        let got = [
            get_xattr(&merged.join("tool"), "security.capability"),
            get_xattr(&merged.join("tool"), "user.rbuild.note"),
            get_xattr(&merged.join("d/sub/f"), "user.rbuild.inner"),
            get_xattr(&merged.join("d/sub"), "user.rbuild.dir"),
            get_xattr(&merged.join("plain"), "user.rbuild.note"),
        ];
        root.ok(&["umount", id]);
        let want = [
            Some(cap.clone()),
            Some(note.to_vec()),
            Some(b"in".to_vec()),
            Some(b"dir".to_vec()),
            None,
        ];
        assert_eq!(got, want);
    };
    let (first, _) = build_ok(&root, &ctx, &[]);
    check(&first, b"one");
    // The xattr is part of the source's content: changing it alone misses the cache.
    set_xattr(&tool, "user.rbuild.note", b"two");
    let (second, out) = build_ok(&root, &ctx, &[]);
    assert_ne!(first, second, "{out}");
    check(&second, b"two");
}
