//! `COPY --exclude` / `ADD --exclude`: dockerignore-style patterns, relative to a directory
//! source (a matching directory takes its contents along; `!` re-includes), a file source by
//! its name; also for `COPY --from`, and part of the cache key.

mod build_support;
mod common;

use build_support::{build_ok, run_sh, Context};
use common::TestRoot;

#[test]
fn excluded_paths_are_not_copied() {
    let root = TestRoot::new();
    root.import_busybox("busybox");
    let ctx = Context::new(
        "FROM busybox AS src\n\
         RUN mkdir -p /tree/sub && echo a > /tree/a.txt && echo b > /tree/b.md && echo c > /tree/sub/c.txt\n\
         FROM busybox\n\
         COPY --exclude=*.md --exclude=node_modules --exclude=!keep.md app /app/\n\
         COPY --exclude=*.txt hom* /files/\n\
         COPY --from=src --exclude=sub /tree /fromsrc/\n\
         ADD --exclude=**/*.log logs /logs/\n",
    );
    for (path, body) in [
        ("app/main.sh", "main"),
        ("app/README.md", "readme"),
        ("app/keep.md", "kept"),
        ("app/node_modules/dep/index.js", "dep"),
        ("app/lib/util.sh", "util"),
        ("home.txt", "t"),
        ("homepage.html", "h"),
        ("logs/x/run.log", "log"),
        ("logs/x/run.cfg", "cfg"),
    ] {
        ctx.write(path, body);
    }
    let (id, _) = build_ok(&root, &ctx, &[]);
    assert_eq!(
        run_sh(
            &root,
            &id,
            "cd / && find app files fromsrc logs -type f | sort"
        ),
        "app/keep.md\napp/lib/util.sh\napp/main.sh\nfiles/homepage.html\nfromsrc/a.txt\nfromsrc/b.md\nlogs/x/run.cfg\n"
    );
    // A change of an excluded file changes nothing copied: every step hits, as in BuildKit.
    ctx.write("app/README.md", "edited readme");
    ctx.write("logs/x/run.log", "more log");
    let (id2, out) = build_ok(&root, &ctx, &[]);
    assert_eq!(out.matches("--> CACHED").count(), 5, "{out}");
    assert_eq!(id2, id);
    // A change of a copied one misses (and so do the steps after it).
    ctx.write("app/main.sh", "main 2");
    let (_, out) = build_ok(&root, &ctx, &[]);
    assert_eq!(out.matches("--> CACHED").count(), 1, "{out}");
    // Other patterns are another step.
    std::fs::write(
        ctx.path().join("Dockerfile"),
        "FROM busybox\nCOPY --exclude=lib app /app/\n",
    )
    .unwrap();
    let (id, out) = build_ok(&root, &ctx, &[]);
    assert!(!out.contains("--> CACHED"), "{out}");
    assert_eq!(
        run_sh(&root, &id, "cd / && find app -type f | sort"),
        "app/README.md\napp/keep.md\napp/main.sh\napp/node_modules/dep/index.js\n"
    );
}
