//! Multi-stage builds: COPY --from, --target, and stages the target does not need are skipped.

mod build_support;
mod common;

use build_support::{build_ok, get_xattr, run_sh, set_xattr, Context};
use common::TestRoot;

const MULTI: &str = r#"FROM busybox AS builder
RUN mkdir -p /out && echo built > /out/artifact && ln -s /etc/passwd /out/link
FROM busybox AS broken
RUN echo this stage fails && exit 3
FROM builder AS tester
RUN test -f /out/artifact
FROM busybox
COPY --from=builder /out/artifact /app/artifact
COPY --from=0 /out/ /app/all/
CMD ["cat", "/app/artifact"]
"#;

#[test]
fn final_stage_builds_only_what_it_needs() {
    let root = TestRoot::new();
    root.import_busybox("busybox");
    let ctx = Context::new(MULTI);
    let (id, out) = build_ok(&root, &ctx, &["-t", "multi"]);
    assert!(!out.contains("this stage fails"), "{out}");
    assert!(!out.contains("RUN test -f"), "{out}");
    assert_eq!(
        run_sh(
            &root,
            &id,
            "cat /app/artifact; readlink /app/all/link; ls /app/all"
        ),
        "built\n/etc/passwd\nartifact\nlink\n"
    );
}

#[test]
fn target_selects_a_stage_and_skips_the_failing_one() {
    let root = TestRoot::new();
    root.import_busybox("busybox");
    let ctx = Context::new(MULTI);
    let (id, out) = build_ok(&root, &ctx, &["--target", "tester"]);
    assert!(out.contains("RUN test -f /out/artifact"), "{out}");
    assert!(!out.contains("this stage fails"), "{out}");
    assert_eq!(run_sh(&root, &id, "cat /out/artifact"), "built\n");
    // The failing stage fails when it is the target, with its code.
    let out = build_support::build(&root, &ctx, &["--target", "broken"]);
    assert_eq!(out.status.code(), Some(3));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("Dockerfile:4"), "{err}");
    // An unknown target is an error naming it.
    let out = build_support::build(&root, &ctx, &["--target", "nope"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("nope"));
}

#[test]
fn copy_from_an_image_and_arg_expanded_from() {
    let root = TestRoot::new();
    root.import_busybox("busybox");
    let ctx = Context::new(
        "ARG BASE=busybox\nFROM ${BASE} AS first\nRUN echo first > /first\nFROM scratch\nCOPY --from=busybox /bin/ /bin/\nCOPY --from=first /first /first\n",
    );
    let (id, _) = build_ok(&root, &ctx, &[]);
    assert_eq!(
        run_sh(&root, &id, "cat /first; test -x /bin/busybox && echo ok"),
        "first\nok\n"
    );
}

#[test]
fn automatic_platform_args_name_the_host_platform() {
    let root = TestRoot::new();
    root.import_busybox("busybox");
    // BuildKit's pattern for cross builds: FROM --platform=$BUILDPLATFORM, ARG TARGETARCH.
    let ctx = Context::new(
        "FROM --platform=$BUILDPLATFORM busybox AS build\nARG TARGETARCH\nARG TARGETPLATFORM\n\
         RUN echo \"$TARGETARCH $TARGETPLATFORM [$BUILDOS]\" > /arch\n\
         FROM --platform=$TARGETPLATFORM busybox\nCOPY --from=build /arch /arch\n",
    );
    let (id, _) = build_ok(&root, &ctx, &[]);
    // BUILDOS was not declared in the stage, so the RUN does not see it.
    assert_eq!(run_sh(&root, &id, "cat /arch"), "amd64 linux/amd64 []\n");
}

#[test]
fn copy_from_with_a_wildcard_matching_one_file_copies_that_file() {
    let root = TestRoot::new();
    root.import_busybox("busybox");
    let ctx = Context::new(
        "FROM busybox AS b\nRUN mkdir /o && echo one > /o/x.bin && echo 2 > /o/y.txt\n\
         FROM busybox\nCOPY --from=b /o/*.bin /app\nCOPY --from=b /o/* /all/\n",
    );
    let (id, _) = build_ok(&root, &ctx, &[]);
    assert_eq!(
        run_sh(&root, &id, "cat /app; ls /all"),
        "one\nx.bin\ny.txt\n"
    );
    // Several matches still need a directory destination.
    let many = Context::new(
        "FROM busybox AS b\nRUN mkdir /o && echo 1 > /o/x.bin && echo 2 > /o/y.bin\n\
         FROM busybox\nCOPY --from=b /o/*.bin /app\n",
    );
    let out = build_support::build(&root, &many, &[]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("Dockerfile:4") && err.contains("destination must be a directory"),
        "{err}"
    );
}

#[test]
fn copy_from_a_symlink_source_keeps_the_symlink_name() {
    let root = TestRoot::new();
    root.import_busybox("busybox");
    // /bin/ls and /bin/cat are symlinks to /bin/busybox in the image: each is copied as the
    // file it points to, under its own name.
    let ctx = Context::new(
        "FROM busybox AS b\nRUN mkdir -p /real/dir && echo data > /real/dir/f && ln -s /real/dir /linkdir\n\
         FROM busybox\nCOPY --from=busybox /bin/ls /bin/cat /two/\nCOPY --from=b /linkdir /copied\n\
         COPY --from=b /linkdir /into/\n",
    );
    let (id, _) = build_ok(&root, &ctx, &[]);
    assert_eq!(
        run_sh(
            &root,
            &id,
            "ls /two; test -f /two/ls && test ! -L /two/ls && echo file; cat /copied/f; ls /into"
        ),
        "cat\nls\nfile\ndata\nf\n"
    );
}

#[test]
fn copy_from_keeps_the_owners_of_the_source() {
    let root = TestRoot::new();
    root.import_busybox("busybox");
    // As Docker (moby#38599, and BuildKit): between stages and from images, owners are kept
    // unless --chown says otherwise; only what comes from the context is root's.
    let ctx = Context::new(
        "FROM busybox AS b\nRUN mkdir -p /o/d && echo a > /o/a && chown 1234:5678 /o/a \
         && chown 99:98 /o/d && chmod 4755 /o/a\n\
         FROM busybox\nCOPY --from=b /o /kept\nCOPY --from=b --chown=7:8 /o /chowned\n\
         COPY f /ctx\n",
    );
    ctx.write("f", "f\n");
    std::os::unix::fs::chown(ctx.path().join("f"), Some(4321), Some(4321)).expect("chown");
    let (id, _) = build_ok(&root, &ctx, &[]);
    assert_eq!(
        run_sh(
            &root,
            &id,
            "stat -c '%u:%g %a %n' /kept /kept/a /kept/d /chowned/a /chowned/d /ctx"
        ),
        "0:0 755 /kept\n1234:5678 4755 /kept/a\n99:98 755 /kept/d\n7:8 4755 /chowned/a\n\
         7:8 755 /chowned/d\n0:0 644 /ctx\n"
    );
}

#[test]
fn copy_from_keeps_file_capabilities_and_xattrs() {
    let root = TestRoot::new();
    root.import_busybox("busybox");
    // A base image whose file has a capability (cap_net_bind_service, effective) and a user
    // xattr, as `setcap` in a build stage would leave it.
    let src = tempfile::tempdir().expect("rootfs dir");
    common::busybox_rootfs(src.path());
    let tool = src.path().join("bin/tool");
    std::fs::write(&tool, "#!/bin/sh\necho tool\n").expect("write tool");
    let mut cap = Vec::new();
    for word in [0x0200_0001u32, 1 << 10, 0, 0, 0] {
        cap.extend_from_slice(&word.to_le_bytes());
    }
    set_xattr(&tool, "security.capability", &cap);
    set_xattr(&tool, "user.rbuild.note", b"kept");
    root.ok(&["import", &src.path().to_string_lossy(), "capbase"]);
    let ctx = Context::new(
        "FROM busybox\nCOPY --from=capbase /bin/tool /tool\nCOPY --from=capbase --chown=1:1 /bin/tool /owned\n",
    );
    let (id, _) = build_ok(&root, &ctx, &[]);
    let merged = std::path::PathBuf::from(root.ok(&["mount", &id]).trim());
    for f in ["tool", "owned"] {
        let p = merged.join(f);
        // Set after the owner: a chown would have cleared the capability.
        assert_eq!(
            get_xattr(&p, "security.capability").as_deref(),
            Some(&cap[..]),
            "{f}"
        );
        assert_eq!(
            get_xattr(&p, "user.rbuild.note").as_deref(),
            Some(&b"kept"[..]),
            "{f}"
        );
    }
    root.ok(&["umount", &id]);
}
