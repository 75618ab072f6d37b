//! FUSE mount failures through the CLI: the message names the mount point and the cause once,
//! in lower case, with what to do, whether this process or a FUSE server process mounts.

mod common;

use common::TestRoot;
use std::os::unix::process::CommandExt;
use std::process::{Command, Output, Stdio};

/// Runs `rbuild --root ROOT --storage-driver fuse ARGS...` in a mount namespace of its own
/// where /dev/null is bound over /dev/fuse (the host's /dev/fuse is untouched).
fn rbuild_without_fuse_device(root: &TestRoot, args: &[&str]) -> Output {
    let mut cmd = Command::new(common::rbuild_bin());
    cmd.args(["--root", &root.root_str(), "--storage-driver", "fuse"])
        .args(args)
        .stdin(Stdio::null());
    // SAFETY: only system calls on constant C strings between fork and exec.
    unsafe {
        cmd.pre_exec(|| {
            let fail = || Err(std::io::Error::last_os_error());
            if libc::unshare(libc::CLONE_NEWNS) != 0 {
                return fail();
            }
            let flags = libc::MS_REC | libc::MS_PRIVATE;
            if libc::mount(
                std::ptr::null(),
                c"/".as_ptr(),
                std::ptr::null(),
                flags,
                std::ptr::null(),
            ) != 0
            {
                return fail();
            }
            if libc::mount(
                c"/dev/null".as_ptr(),
                c"/dev/fuse".as_ptr(),
                std::ptr::null(),
                libc::MS_BIND,
                std::ptr::null(),
            ) != 0
            {
                return fail();
            }
            Ok(())
        });
    }
    cmd.output().expect("run rbuild")
}

/// Asserts the failure message of `args` names one mount point once and the cause once.
fn assert_one_clear_error(root: &TestRoot, args: &[&str]) {
    let out = rbuild_without_fuse_device(root, args);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "rbuild {args:?} worked:\n{stderr}");
    let message = stderr
        .lines()
        .find(|l| l.starts_with("error: "))
        .unwrap_or_else(|| panic!("no error line:\n{stderr}"));
    assert_eq!(
        message.matches("fuse mount at ").count(),
        1,
        "one mount named: {message}"
    );
    let target = message
        .split_once("fuse mount at ")
        .and_then(|(_, rest)| rest.split_once(" failed: "))
        .map(|(target, _)| target)
        .unwrap_or_else(|| panic!("no mount point in: {message}"));
    assert!(
        target.starts_with(&root.root_str()),
        "the mount point is in the store: {message}"
    );
    assert_eq!(message.matches(target).count(), 1, "{message}");
    assert_eq!(
        message
            .matches("/dev/fuse is not the FUSE device (character device 10:229)")
            .count(),
        1,
        "{message}"
    );
    assert!(
        message.ends_with("or use --storage-driver overlay"),
        "{message}"
    );
}

#[test]
fn a_wrong_fuse_device_is_one_clear_error_for_builds_containers_and_mounts() {
    let root = TestRoot::new();
    root.import_busybox("busybox");
    let ctx = tempfile::tempdir().expect("context dir");
    std::fs::write(
        ctx.path().join("Dockerfile"),
        "FROM busybox\nRUN echo ok > /ok\n",
    )
    .expect("write Dockerfile");
    let ctx_arg = ctx.path().to_str().expect("utf-8 context path");
    // Mounted by this process (build, run) and by a FUSE server process (run -d, mount).
    for args in [
        &["build", "-q", ctx_arg][..],
        &["run", "--rm", "busybox", "true"][..],
        &["run", "-d", "busybox", "true"][..],
        &["mount", "busybox"][..],
    ] {
        assert_one_clear_error(&root, args);
    }
}
