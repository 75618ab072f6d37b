//! File changes across steps (deletions, replaced directories, renames, symlink removals) show
//! correctly in the final image, and a symlink in the image cannot send COPY outside it.

mod build_support;
mod common;

use build_support::{build_ok, run_sh, Context};
use common::TestRoot;

#[test]
fn deletions_replacements_renames_and_symlinks_across_steps() {
    let root = TestRoot::new();
    root.import_busybox("busybox");
    let ctx = Context::new(
        r#"FROM busybox
RUN mkdir -p /d/sub /gone /moved && echo 1 > /d/sub/f && echo x > /gone/x \
 && echo r > /moved/r && ln -s /d/sub/f /link && echo keep > /d/keep
RUN rm -rf /gone && rm /link && mv /moved /renamed && rm -rf /d/sub && mkdir /d/sub \
 && echo new > /d/sub/g && rm /bin/vi
RUN rm -rf /d && echo file > /d
"#,
    );
    let (id, _) = build_ok(&root, &ctx, &[]);
    let out = run_sh(
        &root,
        &id,
        "ls -d /gone /link /moved /bin/vi 2>&1 | grep -c 'No such'; cat /renamed/r /d; test -f /d && echo d-is-file",
    );
    assert_eq!(out, "4\nr\nfile\nd-is-file\n");
}

#[test]
fn copy_resolves_image_symlinks_inside_the_image() {
    let root = TestRoot::new();
    root.import_busybox("busybox");
    let marker = tempfile::tempdir().expect("host dir");
    let host_dir = marker.path().to_string_lossy().into_owned();
    let ctx = Context::new(&format!(
        "FROM busybox\nRUN ln -s {host_dir} /escape\nCOPY f.txt /escape/f.txt\n"
    ));
    ctx.write("f.txt", "inside\n");
    let (id, _) = build_ok(&root, &ctx, &[]);
    // Nothing was written on the host; the file is in the image under the link's target.
    assert!(std::fs::read_dir(marker.path())
        .expect("read")
        .next()
        .is_none());
    assert_eq!(
        run_sh(&root, &id, &format!("cat {host_dir}/f.txt")),
        "inside\n"
    );
}

#[test]
fn copy_directory_contents_and_file_into_existing_dir() {
    let root = TestRoot::new();
    root.import_busybox("busybox");
    let ctx = Context::new(
        "FROM busybox\nRUN mkdir /target\nCOPY dir /target\nCOPY one.txt /target\nCOPY one.txt /renamed.txt\nWORKDIR /w\nCOPY one.txt rel/\n",
    );
    ctx.write("dir/a/b.txt", "b\n");
    ctx.write("one.txt", "one\n");
    // Directory mtimes are kept (set after the directory's contents are written).
    let old = std::time::UNIX_EPOCH + std::time::Duration::from_secs(1_500_000_000);
    std::fs::File::open(ctx.path().join("dir/a"))
        .and_then(|d| d.set_modified(old))
        .expect("set dir mtime");
    let (id, _) = build_ok(&root, &ctx, &[]);
    assert_eq!(run_sh(&root, &id, "stat -c %Y /target/a"), "1500000000\n");
    assert_eq!(
        run_sh(
            &root,
            &id,
            "cd /target && find . | sort; cat /renamed.txt /w/rel/one.txt"
        ),
        ".\n./a\n./a/b.txt\n./one.txt\none\none\n"
    );
}

#[test]
fn a_layer_repeated_in_one_chain_mounts_and_shows_its_files() {
    let root = TestRoot::new();
    root.import_busybox("busybox");
    // COPY, delete, the same COPY again: the third step's layer is byte-identical to the
    // first's (one diff_id, one layer dir), so the chain under the last RUN holds it twice.
    // The same happens to `RUN true` steps once timestamps are clamped.
    let ctx = Context::new(
        "FROM busybox\nCOPY a.txt /a.txt\nRUN rm /a.txt\nCOPY a.txt /a.txt\nRUN cat /a.txt > /b.txt\n\
         RUN true\nRUN true\nRUN true\n",
    );
    ctx.write("a.txt", "again\n");
    let (id, _) = build_ok(&root, &ctx, &["--timestamp", "1700000000"]);
    assert_eq!(run_sh(&root, &id, "cat /a.txt /b.txt"), "again\nagain\n");
    let c = build_support::config_json(&root, &id);
    let diff_ids = c["rootfs"]["diff_ids"].as_array().expect("diff_ids");
    assert_eq!(
        diff_ids[1], diff_ids[3],
        "the two COPY layers are one layer"
    );
}

#[test]
fn a_run_that_changes_nothing_leaves_no_trace_of_the_sandbox_mount_points() {
    let root = TestRoot::new();
    root.import_busybox("busybox");
    // The base has /etc but neither /etc/hosts nor /etc/resolv.conf: the sandbox creates them
    // as mount points for the host network's files and removes them again, which copies /etc
    // up (and changes its mtime). Neither may end up in the layers: they stay empty.
    let ctx = Context::new("FROM busybox\nRUN true\nRUN ls /etc/hosts /etc/resolv.conf\n");
    let (id, _) = build_ok(&root, &ctx, &[]);
    let c = build_support::config_json(&root, &id);
    let diff_ids = c["rootfs"]["diff_ids"].as_array().expect("diff_ids");
    // sha256 of an empty tar (two zero blocks).
    let empty = "sha256:5f70bf18a086007016e948b04aed3b82103a36bea41755b6cddfaf10ace3c6ef";
    assert_eq!(diff_ids.len(), 3, "{diff_ids:?}");
    assert_eq!(diff_ids[1], empty, "RUN true");
    assert_eq!(diff_ids[2], empty, "RUN ls");
}

#[test]
fn hard_links_in_copy_and_add_sources_stay_hard_links() {
    let root = TestRoot::new();
    root.import_busybox("busybox");
    let ctx = Context::new(
        "FROM busybox AS b\nRUN mkdir /o && echo from > /o/f && ln /o/f /o/g\n\
         FROM busybox\nCOPY d /ctx/\nCOPY --from=b /o /from/\nADD links.tar /arch/\n",
    );
    let one = ctx.write("d/one", "linked\n");
    ctx.write("d/other", "linked\n");
    std::fs::create_dir_all(ctx.path().join("d/sub")).expect("mkdir");
    std::fs::hard_link(&one, ctx.path().join("d/sub/two")).expect("link");
    // An archive made by GNU tar from a dir whose two files are one inode.
    let src = tempfile::tempdir().expect("tempdir");
    std::fs::write(src.path().join("a"), "arch\n").expect("write");
    std::fs::hard_link(src.path().join("a"), src.path().join("b")).expect("link");
    let status = std::process::Command::new("tar")
        .arg("-C")
        .arg(src.path())
        .arg("-cf")
        .arg(ctx.path().join("links.tar"))
        .args(["a", "b"])
        .status()
        .expect("run tar");
    assert!(status.success());
    let (id, _) = build_ok(&root, &ctx, &[]);
    let stat = |paths: &str| {
        run_sh(
            &root,
            &id,
            &format!("stat -c '%h %i' {paths} | uniq -c | awk '{{print $1, $2}}'"),
        )
    };
    // Each pair: link count 2, one inode (uniq folds the two lines into one).
    assert_eq!(stat("/ctx/one /ctx/sub/two"), "2 2\n");
    assert_eq!(stat("/from/f /from/g"), "2 2\n");
    assert_eq!(stat("/arch/a /arch/b"), "2 2\n");
    assert_eq!(run_sh(&root, &id, "stat -c %h /ctx/other"), "1\n");
    let layers = build_support::layer_listings(&root, &id);
    assert_eq!(layers.len(), 4, "{layers:?}");
    for (layer, link) in [
        (&layers[1], "ctx/sub/two link to ctx/one"),
        (&layers[2], "from/g link to from/f"),
        (&layers[3], "arch/b link to arch/a"),
    ] {
        assert!(layer.contains(link), "{link} not in:\n{layer}");
    }
}
