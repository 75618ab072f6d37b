//! `rbuild run`: ENTRYPOINT/CMD/USER/WORKDIR as docker combines them, environment, exit codes,
//! --rm, limits.

mod common;

use common::{describe, mounts_below, poll_until, KillOnDrop, TestRoot};

/// Removes every container of the store on drop (also when an assertion failed), so no
/// container process, cgroup or mount outlives the test.
struct RemoveContainers<'a>(&'a TestRoot);

impl Drop for RemoveContainers<'_> {
    fn drop(&mut self) {
        let out = self.0.rbuild(&["ps", "-aq"]);
        for id in String::from_utf8_lossy(&out.stdout).split_whitespace() {
            let _ = self.0.rbuild(&["rm", "-f", id]);
        }
    }
}

/// Imports a busybox rootfs as `name` with Dockerfile-style config changes.
fn image_with(root: &TestRoot, name: &str, changes: &[&str]) {
    let src = tempfile::tempdir().unwrap();
    common::busybox_rootfs(src.path());
    std::fs::create_dir_all(src.path().join("home/app")).unwrap();
    std::fs::write(
        src.path().join("etc/passwd"),
        "root:x:0:0:root:/root:/bin/sh\napp:x:1000:1000::/home/app:/bin/sh\n",
    )
    .unwrap();
    std::fs::write(
        src.path().join("etc/group"),
        "root:x:0:\napp:x:1000:\nstaff:x:50:app\n",
    )
    .unwrap();
    let mut args: Vec<String> = vec!["import".into()];
    for c in changes {
        args.push("--change".into());
        args.push(c.to_string());
    }
    args.push(src.path().to_string_lossy().into_owned());
    args.push(name.into());
    let a: Vec<&str> = args.iter().map(String::as_str).collect();
    root.ok(&a);
}

fn run_out(root: &TestRoot, args: &[&str]) -> (i32, String, String) {
    let out = root.rbuild(args);
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn entrypoint_cmd_user_workdir_combinations() {
    let root = TestRoot::new();
    let _cleanup = RemoveContainers(&root);
    image_with(
        &root,
        "ep",
        &[
            r#"ENTRYPOINT ["echo", "ep"]"#,
            r#"CMD ["default"]"#,
            "USER app",
            "WORKDIR /srv/data",
        ],
    );
    assert_eq!(root.ok(&["run", "--rm", "ep"]), "ep default\n");
    assert_eq!(root.ok(&["run", "--rm", "ep", "x", "y"]), "ep x y\n");
    // --entrypoint drops the image's CMD.
    assert_eq!(
        root.ok(&["run", "--rm", "--entrypoint", "pwd", "ep"]),
        "/srv/data\n"
    );
    assert_eq!(
        root.ok(&["run", "--rm", "--entrypoint", "", "ep", "id", "-u"]),
        "1000\n"
    );
    assert_eq!(
        root.ok(&["run", "--rm", "-u", "0:50", "--entrypoint", "id", "ep"]),
        "uid=0(root) gid=50(staff) groups=50(staff)\n"
    );
    assert_eq!(
        root.ok(&["run", "--rm", "-w", "/tmp/new", "--entrypoint", "pwd", "ep"]),
        "/tmp/new\n"
    );
    // A shell-form CMD without ENTRYPOINT.
    image_with(
        &root,
        "shellform",
        &["CMD echo from $0 in $PWD", "WORKDIR /w"],
    );
    assert_eq!(
        root.ok(&["run", "--rm", "shellform"]),
        "from /bin/sh in /w\n"
    );
    // No ENTRYPOINT and no CMD: an error, as docker.
    image_with(&root, "nocmd", &[]);
    let err = root.fails(&["run", "--rm", "nocmd"]);
    assert!(err.contains("no command specified"), "{err}");
}

#[test]
fn environment_exit_codes_and_errors() {
    let root = TestRoot::new();
    let _cleanup = RemoveContainers(&root);
    root.import_busybox("bb");
    let out = std::process::Command::new(common::rbuild_bin())
        .args([
            "--root",
            &root.root_str(),
            "run",
            "--rm",
            "-e",
            "A=1",
            "-e",
            "FROM_HOST",
            "bb",
            "env",
        ])
        .env("RBUILD_CANARY", "leak")
        .env("FROM_HOST", "yes")
        .output()
        .unwrap();
    let env = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{env}");
    assert!(!env.contains("RBUILD_CANARY"), "{env}");
    assert!(
        env.contains("A=1\n") && env.contains("FROM_HOST=yes\n"),
        "{env}"
    );
    assert!(
        env.contains("PATH=/usr/local/sbin:"),
        "docker's default PATH: {env}"
    );
    let (code, _, _) = run_out(&root, &["run", "--rm", "bb", "sh", "-c", "exit 7"]);
    assert_eq!(code, 7);
    let (code, _, err) = run_out(&root, &["run", "--rm", "bb", "no-such-binary"]);
    assert_eq!(code, 127, "{err}");
    assert!(err.contains("not found"), "{err}");
    let (code, _, err) = run_out(&root, &["run", "--rm", "-u", "ghost", "bb", "true"]);
    assert_eq!(code, 125, "{err}");
    assert!(err.contains("unable to find user ghost"), "{err}");
    // --rm leaves no container behind; without it the container stays listed.
    root.ok(&["run", "--name", "kept", "bb", "true"]);
    let ps = root.ok(&["ps", "-a"]);
    assert_eq!(ps.lines().count(), 2, "{ps}");
    assert!(ps.contains("kept") && ps.contains("Exited (0)"), "{ps}");
}

#[test]
fn memory_limit_reports_oom() {
    let root = TestRoot::new();
    let _cleanup = RemoveContainers(&root);
    root.import_busybox("bb");
    let args = [
        "run",
        "--rm",
        "--memory",
        "64m",
        "bb",
        "sh",
        "-c",
        "head -c 200m /dev/zero | tail",
    ];
    let out = root.rbuild(&args);
    assert_eq!(out.status.code(), Some(137), "{}", describe(&args, &out));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("killed: out of memory"),
        "{}",
        describe(&args, &out)
    );
    // Either the host can weight block I/O, or a clear error - never silently ignored.
    let args = ["run", "--rm", "--blkio-weight", "300", "bb", "true"];
    let out = root.rbuild(&args);
    if !out.status.success() {
        assert!(
            String::from_utf8_lossy(&out.stderr).contains("--blkio-weight"),
            "{}",
            describe(&args, &out)
        );
    }
}

#[test]
fn volumes_and_read_only_rootfs() {
    let root = TestRoot::new();
    let _cleanup = RemoveContainers(&root);
    root.import_busybox("bb");
    let vol = tempfile::tempdir().unwrap();
    std::fs::write(vol.path().join("in"), "from host").unwrap();
    let v = format!("{}:/data", vol.path().display());
    let out = root.ok(&[
        "run",
        "--rm",
        "-v",
        &v,
        "bb",
        "sh",
        "-c",
        "cat /data/in; echo out > /data/out",
    ]);
    assert_eq!(out, "from host");
    assert_eq!(
        std::fs::read_to_string(vol.path().join("out")).unwrap(),
        "out\n"
    );
    let vro = format!("{}:/data:ro", vol.path().display());
    let (code, _, _) = run_out(
        &root,
        &[
            "run",
            "--rm",
            "-v",
            &vro,
            "bb",
            "sh",
            "-c",
            "echo x > /data/x",
        ],
    );
    assert_ne!(code, 0);
    let (code, _, _) = run_out(
        &root,
        &["run", "--rm", "--read-only", "bb", "touch", "/etc/x"],
    );
    assert_ne!(code, 0);
    assert_eq!(
        root.ok(&[
            "run",
            "--rm",
            "--read-only",
            "bb",
            "sh",
            "-c",
            "touch /dev/shm/x && echo ok"
        ]),
        "ok\n"
    );
}

#[test]
fn sigterm_to_rbuild_reaches_pid_1() {
    let root = TestRoot::new();
    let _cleanup = RemoveContainers(&root);
    root.import_busybox("bb");
    let ready = root.path().join("ready");
    let vol = format!("{}:/out", root.path().display());
    let mut child = std::process::Command::new(common::rbuild_bin())
        .args([
            "--root",
            &root.root_str(),
            "run",
            "--rm",
            "-v",
            &vol,
            "bb",
            "sh",
            "-c",
            "trap 'exit 42' TERM; touch /out/ready; while true; do sleep 1; done",
        ])
        .stdin(std::process::Stdio::null())
        .spawn()
        .unwrap();
    assert!(
        poll_until(1000, || ready.exists()),
        "container did not start"
    );
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(child.id() as i32),
        nix::sys::signal::Signal::SIGTERM,
    )
    .unwrap();
    let status = child.wait().unwrap();
    assert_eq!(status.code(), Some(42));
}

#[test]
fn tty_gives_the_process_a_terminal() {
    let root = TestRoot::new();
    let _cleanup = RemoveContainers(&root);
    root.import_busybox("bb");
    let out = root.ok(&[
        "run",
        "--rm",
        "-t",
        "bb",
        "sh",
        "-c",
        "tty; [ -t 0 ] && [ -t 1 ] && [ -t 2 ] && echo is-a-tty; stty size",
    ]);
    // The terminal is allocated in the container's own devpts, as docker's.
    assert!(out.starts_with("/dev/pts/0\r\n"), "{out:?}");
    assert!(out.contains("is-a-tty"), "{out:?}");
    assert!(out.contains("24 80"), "default window size: {out:?}");
    let out = root.ok(&["run", "--rm", "bb", "sh", "-c", "[ -t 1 ] || echo no-tty"]);
    assert_eq!(out, "no-tty\n");
}

#[test]
fn a_killed_foreground_run_rm_is_removed_by_the_next_command() {
    let root = TestRoot::new();
    let _cleanup = RemoveContainers(&root);
    root.import_busybox("bb");
    let ready = root.path().join("ready");
    let vol = format!("{}:/out", root.path().display());
    let mut run = KillOnDrop(
        std::process::Command::new(common::rbuild_bin())
            .args(["--root", &root.root_str(), "run", "--rm", "-v", &vol, "bb"])
            .args(["sh", "-c", "touch /out/ready; exec sleep 300"])
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .spawn()
            .unwrap(),
    );
    assert!(
        poll_until(3000, || ready.exists()),
        "container did not start"
    );
    // While rbuild waits for it, it is a running container like any other (its record may be
    // written a moment after the process started).
    let listed = poll_until(1000, || {
        let (_, running, _) = run_out(&root, &["ps", "-q"]);
        running.split_whitespace().count() == 1
    });
    assert!(listed, "the running container is not listed");
    assert!(
        !mounts_below(root.path()).is_empty(),
        "the container's rootfs is not mounted"
    );

    run.0.kill().unwrap(); // SIGKILL: rbuild removes nothing itself
    run.0.wait().unwrap();
    // The container's pid 1 dies with rbuild (parent-death signal).
    let gone = poll_until(1000, || {
        let (_, all, _) = run_out(&root, &["ps", "-aq"]);
        all.trim().is_empty()
    });
    let (_, all, _) = run_out(&root, &["ps", "-a"]);
    assert!(gone, "the killed --rm container is still listed:\n{all}");
    assert_eq!(mounts_below(root.path()), vec![], "mounts left behind");
    let containers: Vec<_> = std::fs::read_dir(root.path().join("containers"))
        .unwrap()
        .flatten()
        .map(|e| e.file_name())
        .collect();
    assert!(containers.is_empty(), "container dirs left: {containers:?}");
    // Nothing holds its image any more.
    root.ok(&["rmi", "bb"]);
}
