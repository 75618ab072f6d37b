//! `rbuild build --output` (`-o`): the built filesystem to a directory or a tar archive (file or
//! stdout), merged across layers (whiteouts applied, none written), modes and symlinks kept.

mod build_support;
mod common;

use build_support::{build_ok, Context};
use common::{describe, TestRoot};
use std::fs;
use std::os::unix::fs::PermissionsExt;

const DOCKERFILE: &str = "\
FROM busybox AS build
RUN mkdir /out && echo artifact > /out/a && ln -s a /out/link && chmod 600 /out/a
FROM scratch AS artifacts
COPY --from=build /out /
FROM busybox AS trimmed
RUN rm /bin/ls && echo new > /etc/new
";

fn tar_names(data: &[u8]) -> Vec<String> {
    let mut names: Vec<String> = tar::Archive::new(data)
        .entries()
        .expect("tar entries")
        .map(|e| e.unwrap().path().unwrap().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

#[test]
fn the_built_filesystem_goes_to_a_directory_or_a_tar() {
    let root = TestRoot::new();
    root.import_busybox("busybox");
    let ctx = Context::new(DOCKERFILE);
    let out_dir = tempfile::tempdir().unwrap();
    let local = out_dir.path().join("local");
    let dest = format!("type=local,dest={}", local.display());
    build_ok(&root, &ctx, &["--target", "artifacts", "--output", &dest]);
    assert_eq!(fs::read_to_string(local.join("a")).unwrap(), "artifact\n");
    assert_eq!(
        fs::metadata(local.join("a")).unwrap().permissions().mode() & 0o7777,
        0o600
    );
    assert_eq!(
        fs::read_link(local.join("link")).unwrap().to_str(),
        Some("a")
    );

    // A tar file, and a tar on stdout with nothing else there.
    let tar_path = out_dir.path().join("fs.tar");
    let dest = format!("type=tar,dest={}", tar_path.display());
    build_ok(&root, &ctx, &["--target", "artifacts", "--output", &dest]);
    assert_eq!(tar_names(&fs::read(&tar_path).unwrap()), ["a", "link"]);
    let args = ["build", "--target", "artifacts", "-o", "-", &ctx.dir()];
    let out = root.rbuild(&args);
    assert!(out.status.success(), "{}", describe(&args, &out));
    assert_eq!(tar_names(&out.stdout), ["a", "link"]);

    // Layers merged: a file removed by a later step is not there, and no whiteout is.
    let trimmed = out_dir.path().join("trimmed");
    build_ok(
        &root,
        &ctx,
        &["--target", "trimmed", "-o", trimmed.to_str().unwrap()],
    );
    assert!(trimmed.join("bin/sh").exists());
    assert!(fs::symlink_metadata(trimmed.join("bin/ls")).is_err());
    assert_eq!(
        fs::read_to_string(trimmed.join("etc/new")).unwrap(),
        "new\n"
    );
    let whiteouts = walkdir::WalkDir::new(&trimmed)
        .into_iter()
        .flatten()
        .filter(|e| {
            e.file_name().to_string_lossy().starts_with(".wh.")
                || std::os::unix::fs::FileTypeExt::is_char_device(&e.file_type())
        })
        .count();
    assert_eq!(whiteouts, 0);

    let args = ["build", "-o", "type=oci,dest=x", &ctx.dir()];
    let out = root.rbuild(&args);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("type=oci is not supported"));
}

#[test]
fn an_export_into_a_used_directory_writes_nothing_through_its_symlinks() {
    let root = TestRoot::new();
    root.import_busybox("busybox");
    let outside = tempfile::tempdir().unwrap();
    // The first export leaves a symlink to a directory outside the destination (as an image
    // may hold one, e.g. a /var/run -> /run of its own); the second holds a directory there.
    let ctx = Context::new(&format!(
        "FROM busybox AS one\nRUN mkdir /o && ln -s {} /o/d\n\
         FROM scratch AS first\nCOPY --from=one /o /\n\
         FROM busybox AS two\nRUN mkdir -p /o/d && echo planted > /o/d/f\n\
         FROM scratch AS second\nCOPY --from=two /o /\n",
        outside.path().display()
    ));
    let out_dir = tempfile::tempdir().unwrap();
    let dest = out_dir.path().join("out");
    let dest_s = dest.to_str().unwrap();
    build_ok(&root, &ctx, &["--target", "first", "-o", dest_s]);
    assert!(dest.join("d").symlink_metadata().unwrap().is_symlink());
    build_ok(&root, &ctx, &["--target", "second", "-o", dest_s]);
    assert!(
        !outside.path().join("f").exists(),
        "the export wrote through dest/d into {}",
        outside.path().display()
    );
    assert!(dest.join("d").symlink_metadata().unwrap().is_dir());
    assert_eq!(fs::read_to_string(dest.join("d/f")).unwrap(), "planted\n");
}

#[test]
fn fifos_are_exported_to_a_tar_and_a_directory() {
    let root = TestRoot::new();
    root.import_busybox("busybox");
    let ctx = Context::new("FROM busybox\nRUN mkdir /o && mkfifo -m 640 /o/p && echo f > /o/f\n");
    let out_dir = tempfile::tempdir().unwrap();
    let tar_path = out_dir.path().join("fs.tar");
    let dest = format!("type=tar,dest={}", tar_path.display());
    build_ok(&root, &ctx, &["-o", &dest]);
    let mut archive = tar::Archive::new(fs::File::open(&tar_path).unwrap());
    let fifo = archive
        .entries()
        .unwrap()
        .map(|e| e.unwrap())
        .find(|e| e.path().unwrap().to_str() == Some("o/p"))
        .map(|e| (e.header().entry_type(), e.header().mode().unwrap() & 0o7777));
    assert_eq!(fifo, Some((tar::EntryType::Fifo, 0o640)));
    let local = out_dir.path().join("local");
    build_ok(&root, &ctx, &["-o", local.to_str().unwrap()]);
    let meta = fs::symlink_metadata(local.join("o/p")).unwrap();
    assert!(std::os::unix::fs::FileTypeExt::is_fifo(&meta.file_type()));
}
