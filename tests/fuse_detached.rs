//! FUSE mounts that outlive the command: `run -d` and `rbuild mount` under the FUSE driver are
//! served by a separate `rbuild __fuse-serve` process, which `stop`/`rm`/`umount` end, and whose
//! death by SIGKILL leaves nothing that blocks the next command.

mod common;

use common::{mounts_below, poll_until, KillOnDrop, TestRoot};
use std::path::{Path, PathBuf};

/// `rbuild --root ROOT --storage-driver fuse ARGS...`, asserting success; returns stdout.
fn fuse_ok(root: &TestRoot, args: &[&str]) -> String {
    let mut full = vec!["--storage-driver", "fuse"];
    full.extend_from_slice(args);
    root.ok(&full)
}

/// Pids of live FUSE server processes serving a mount point below `dir`.
fn servers_below(dir: &Path) -> Vec<(i32, PathBuf)> {
    let dir = dir.canonicalize().expect("canonical root");
    let mut found = Vec::new();
    for entry in std::fs::read_dir("/proc").expect("list /proc").flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<i32>() else {
            continue;
        };
        // A zombie has an empty command line: it serves nothing any more.
        let Ok(cmdline) = std::fs::read(entry.path().join("cmdline")) else {
            continue;
        };
        let args: Vec<String> = cmdline
            .split(|&b| b == 0)
            .map(|a| String::from_utf8_lossy(a).into_owned())
            .collect();
        if !args.iter().any(|a| a == "__fuse-serve") {
            continue;
        }
        if let Some(target) = args.iter().rev().find(|a| !a.is_empty()) {
            if Path::new(target).starts_with(&dir) {
                found.push((pid, PathBuf::from(target)));
            }
        }
    }
    found
}

/// statfs always reaches the server (stat may come from the attribute cache).
fn is_dead(path: &Path) -> bool {
    matches!(
        nix::sys::statfs::statfs(path),
        Err(nix::errno::Errno::ENOTCONN)
    )
}

/// Cleans up after a test, also when it failed: removes every container, kills every FUSE
/// server serving below the root (then TestRoot unmounts what is left).
struct Cleanup<'a>(&'a TestRoot);

impl Drop for Cleanup<'_> {
    fn drop(&mut self) {
        let out = self.0.rbuild(&["ps", "-aq"]);
        for id in String::from_utf8_lossy(&out.stdout).split_whitespace() {
            let _ = self.0.rbuild(&["rm", "-f", id]);
        }
        for (pid, _) in servers_below(self.0.path()) {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid),
                nix::sys::signal::Signal::SIGKILL,
            );
        }
        common::unmount_below(self.0.path());
    }
}

fn kill9(pid: i32) {
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pid),
        nix::sys::signal::Signal::SIGKILL,
    )
    .expect("kill -9 the FUSE server");
}

fn assert_nothing_left(root: &TestRoot) {
    assert!(
        poll_until(500, || servers_below(root.path()).is_empty()),
        "FUSE servers left: {:?}",
        servers_below(root.path())
    );
    assert_eq!(mounts_below(root.path()), Vec::new(), "mounts left");
}

#[test]
fn detached_container_outlives_the_cli_and_leaves_nothing_behind() {
    let root = TestRoot::new();
    let _cleanup = Cleanup(&root);
    root.import_busybox("bb");
    let id = fuse_ok(
        &root,
        &[
            "run",
            "-d",
            "--name",
            "svc",
            "bb",
            "sh",
            "-c",
            "echo hello-log; echo data > /made-here; exec tail -f /dev/null",
        ],
    )
    .trim()
    .to_string();
    assert_eq!(id.len(), 64, "{id}");
    // The CLI has exited; the root filesystem is a FUSE mount served by its own process.
    let servers = servers_below(root.path());
    assert_eq!(servers.len(), 1, "one server: {servers:?}");
    let merged = root.path().join("containers").join(&id).join("merged");
    assert_eq!(servers[0].1, merged.canonicalize().expect("merged"));
    let mounts = mounts_below(root.path());
    assert_eq!(mounts.len(), 1, "{mounts:?}");
    assert!(mounts[0].fstype.starts_with("fuse"), "{mounts:?}");
    let record: serde_json::Value = serde_json::from_slice(
        &std::fs::read(root.path().join("containers").join(&id).join("state.json"))
            .expect("state.json"),
    )
    .expect("parse state.json");
    assert_eq!(record["fuse_server_pid"], servers[0].0);

    // exec reads and writes through the server; logs has the output.
    let out = root.ok(&[
        "exec",
        "svc",
        "sh",
        "-c",
        "cat /made-here; echo more > /from-exec; cat /from-exec",
    ]);
    assert_eq!(out, "data\nmore\n");
    assert!(poll_until(500, || root
        .ok(&["logs", "svc"])
        .contains("hello-log")));
    assert!(root
        .path()
        .join("containers")
        .join(&id)
        .join("upper/from-exec")
        .exists());

    root.ok(&["stop", "-t", "1", "svc"]);
    assert_nothing_left(&root);
    // Started again, it gets a new server; rm -f ends it.
    root.ok(&["start", "svc"]);
    assert_eq!(servers_below(root.path()).len(), 1);
    assert_eq!(root.ok(&["exec", "svc", "cat", "/from-exec"]), "more\n");
    root.ok(&["rm", "-f", "svc"]);
    assert_nothing_left(&root);
    assert!(!root.path().join("containers").join(&id).exists());
}

#[test]
fn killed_container_server_blocks_nothing() {
    let root = TestRoot::new();
    let _cleanup = Cleanup(&root);
    root.import_busybox("bb");
    let id = fuse_ok(&root, &["run", "-d", "bb", "tail", "-f", "/dev/null"])
        .trim()
        .to_string();
    let servers = servers_below(root.path());
    assert_eq!(servers.len(), 1, "{servers:?}");
    kill9(servers[0].0);
    let merged = root.path().join("containers").join(&id).join("merged");
    // The mount is dead, or already gone: the container's process dies of SIGBUS at its next
    // page fault into a lower file (served through the dead server, not passed through), and
    // its monitor then unmounts it.
    assert!(
        poll_until(500, || is_dead(&merged) || mounts_below(&merged).is_empty()),
        "the mount should be dead or gone"
    );
    // rm -f detaches the dead mount and removes everything.
    root.ok(&["rm", "-f", &id]);
    assert_nothing_left(&root);
    assert!(!root.path().join("containers").join(&id).exists());
    // And the next container works.
    let out = fuse_ok(&root, &["run", "--rm", "bb", "echo", "next"]);
    assert_eq!(out, "next\n");
    let id = fuse_ok(&root, &["run", "-d", "bb", "tail", "-f", "/dev/null"])
        .trim()
        .to_string();
    assert_eq!(root.ok(&["exec", &id, "echo", "ok"]), "ok\n");
    root.ok(&["rm", "-f", &id]);
    assert_nothing_left(&root);
}

#[test]
fn image_mount_and_umount_under_fuse() {
    let root = TestRoot::new();
    let _cleanup = Cleanup(&root);
    root.import_busybox("bb");
    let path = PathBuf::from(fuse_ok(&root, &["mount", "bb"]).trim());
    // The mount outlives the command that made it.
    assert!(path.join("bin/busybox").is_file(), "{}", path.display());
    let servers = servers_below(root.path());
    assert_eq!(servers.len(), 1, "{servers:?}");
    assert_eq!(servers[0].1, path);
    // Read-only, like the overlay driver's image mounts.
    assert!(std::fs::write(path.join("new-file"), b"x").is_err());
    let listed = root.ok(&["mount"]);
    assert!(listed.contains(&path.display().to_string()), "{listed}");
    // Mounting again returns the same mount, served by the same process.
    assert_eq!(PathBuf::from(fuse_ok(&root, &["mount", "bb"]).trim()), path);
    assert_eq!(servers_below(root.path()), servers);
    root.ok(&["umount", "bb"]);
    assert_nothing_left(&root);
    assert!(root.ok(&["mount"]).trim().is_empty());
}

#[test]
fn killed_mount_server_blocks_nothing() {
    let root = TestRoot::new();
    let _cleanup = Cleanup(&root);
    root.import_busybox("bb");
    // Listing after a kill drops the dead mount and its record.
    let path = PathBuf::from(fuse_ok(&root, &["mount", "bb"]).trim());
    kill9(servers_below(root.path())[0].0);
    assert!(
        poll_until(500, || is_dead(&path)),
        "the mount should be dead"
    );
    assert!(root.ok(&["mount"]).trim().is_empty());
    assert_nothing_left(&root);
    // umount after a kill succeeds and cleans up.
    fuse_ok(&root, &["mount", "bb"]);
    kill9(servers_below(root.path())[0].0);
    assert!(
        poll_until(500, || is_dead(&path)),
        "the mount should be dead"
    );
    root.ok(&["umount", "bb"]);
    assert_nothing_left(&root);
    // mount after a kill replaces the dead mount with a working one.
    fuse_ok(&root, &["mount", "bb"]);
    kill9(servers_below(root.path())[0].0);
    assert!(
        poll_until(500, || is_dead(&path)),
        "the mount should be dead"
    );
    assert_eq!(PathBuf::from(fuse_ok(&root, &["mount", "bb"]).trim()), path);
    assert!(path.join("bin/busybox").is_file());
    root.ok(&["umount", "bb"]);
    assert_nothing_left(&root);
    // prune runs fine after a kill and leaves nothing mounted.
    fuse_ok(&root, &["mount", "bb"]);
    kill9(servers_below(root.path())[0].0);
    assert!(
        poll_until(500, || is_dead(&path)),
        "the mount should be dead"
    );
    root.ok(&["system", "prune"]);
    assert_nothing_left(&root);
}

#[test]
fn server_ends_when_its_record_is_gone() {
    let root = TestRoot::new();
    let _cleanup = Cleanup(&root);
    root.import_busybox("bb");
    let path = PathBuf::from(fuse_ok(&root, &["mount", "bb"]).trim());
    assert_eq!(servers_below(root.path()).len(), 1);
    let mounts_dir = root.path().join("mounts");
    for entry in std::fs::read_dir(&mounts_dir)
        .expect("list mounts")
        .flatten()
    {
        if entry.path().extension().is_some_and(|e| e == "json") {
            std::fs::remove_file(entry.path()).expect("remove the mount record");
        }
    }
    // The server notices within about a second, unmounts and exits.
    assert!(
        poll_until(1000, || servers_below(root.path()).is_empty()),
        "the server outlived its record"
    );
    assert!(mounts_below(root.path()).is_empty(), "{}", path.display());
}

#[test]
fn killed_monitor_leaves_a_server_that_start_and_rm_end() {
    let root = TestRoot::new();
    let _cleanup = Cleanup(&root);
    root.import_busybox("bb");
    let id = fuse_ok(&root, &["run", "-d", "bb", "tail", "-f", "/dev/null"])
        .trim()
        .to_string();
    let state = root.path().join("containers").join(&id).join("state.json");
    let record: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&state).expect("state.json")).expect("parse");
    let monitor = record["monitor_pid"].as_i64().expect("monitor pid") as i32;
    let server = servers_below(root.path());
    assert_eq!(server.len(), 1, "{server:?}");
    kill9(monitor);
    // The server outlives the monitor (the container dies with it).
    assert!(poll_until(500, || root.ok(&["ps", "-q"]).trim().is_empty()));
    assert_eq!(servers_below(root.path()), server);
    // start replaces the old mount and server instead of stacking a new mount on them.
    root.ok(&["start", &id]);
    let restarted = servers_below(root.path());
    assert_eq!(restarted.len(), 1, "{restarted:?}");
    assert_ne!(restarted[0].0, server[0].0);
    assert_eq!(mounts_below(root.path()).len(), 1);
    assert_eq!(root.ok(&["exec", &id, "echo", "ok"]), "ok\n");
    kill9(
        serde_json::from_slice::<serde_json::Value>(&std::fs::read(&state).expect("state"))
            .expect("parse")["monitor_pid"]
            .as_i64()
            .expect("monitor pid") as i32,
    );
    assert!(poll_until(500, || root.ok(&["ps", "-q"]).trim().is_empty()));
    // rm ends the orphaned server.
    root.ok(&["rm", &id]);
    assert_nothing_left(&root);
}

/// Runs `rbuild --storage-driver fuse ARGS` with an extra inherited descriptor (the write end of
/// a pipe, without close-on-exec, as shells leak them) and returns stdout once it exits, and
/// whether the pipe then reads end-of-file: no process left behind holds the descriptor.
fn run_with_leaked_pipe(root: &TestRoot, args: &[&str]) -> (String, bool) {
    use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
    use std::os::fd::AsFd;
    let (read_end, write_end) = nix::unistd::pipe().expect("pipe");
    let out = std::process::Command::new(common::rbuild_bin())
        .args(["--root", &root.root_str(), "--storage-driver", "fuse"])
        .args(args)
        .stdin(std::process::Stdio::null())
        .output()
        .expect("run rbuild");
    assert!(out.status.success(), "{}", common::describe(args, &out));
    drop(write_end);
    let mut fds = [PollFd::new(read_end.as_fd(), PollFlags::POLLIN)];
    let ready = poll(&mut fds, PollTimeout::from(2000u16)).expect("poll");
    let eof = ready == 1
        && fds[0]
            .revents()
            .is_some_and(|r| r.contains(PollFlags::POLLHUP));
    (String::from_utf8_lossy(&out.stdout).into_owned(), eof)
}

#[test]
fn detached_processes_keep_no_descriptor_of_the_caller() {
    let root = TestRoot::new();
    let _cleanup = Cleanup(&root);
    root.import_busybox("bb");
    let (id, eof) = run_with_leaked_pipe(&root, &["run", "-d", "bb", "tail", "-f", "/dev/null"]);
    assert!(
        eof,
        "the container monitor or its FUSE server holds the caller's pipe"
    );
    assert_eq!(servers_below(root.path()).len(), 1);
    root.ok(&["rm", "-f", id.trim()]);
    let (_, eof) = run_with_leaked_pipe(&root, &["mount", "bb"]);
    assert!(eof, "the image mount's FUSE server holds the caller's pipe");
    assert_eq!(servers_below(root.path()).len(), 1);
    root.ok(&["umount", "bb"]);
    assert_nothing_left(&root);
}

/// A store root inside an overlayfs mount (overlayfs refuses an upper dir there, so `auto`
/// falls back to FUSE); unmounts everything below it on drop.
struct OverlayBackedRoot {
    dir: tempfile::TempDir,
}

impl OverlayBackedRoot {
    fn new() -> OverlayBackedRoot {
        let dir = tempfile::Builder::new()
            .prefix("rbuild-test-ovl-")
            .tempdir()
            .expect("temp dir");
        for sub in ["lower", "upper", "work", "merged"] {
            std::fs::create_dir(dir.path().join(sub)).expect("overlay dir");
        }
        let options = format!(
            "lowerdir={0}/lower,upperdir={0}/upper,workdir={0}/work",
            dir.path().display()
        );
        nix::mount::mount(
            Some("overlay"),
            &dir.path().join("merged"),
            Some("overlay"),
            nix::mount::MsFlags::empty(),
            Some(options.as_str()),
        )
        .expect("mount the overlay that holds the store");
        OverlayBackedRoot { dir }
    }

    fn store(&self) -> PathBuf {
        self.dir.path().join("merged/store")
    }

    /// `rbuild --root STORE ARGS` with the default (auto) driver.
    fn rbuild(&self, args: &[&str]) -> std::process::Output {
        let store = self.store();
        let mut full = vec!["--root", store.to_str().expect("utf-8 path")];
        full.extend_from_slice(args);
        std::process::Command::new(common::rbuild_bin())
            .args(&full)
            .env_remove("RBUILD_STORAGE_DRIVER")
            .stdin(std::process::Stdio::null())
            .output()
            .expect("run rbuild")
    }

    fn ok(&self, args: &[&str]) -> (String, String) {
        let out = self.rbuild(args);
        assert!(out.status.success(), "{}", common::describe(args, &out));
        (
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    }
}

impl Drop for OverlayBackedRoot {
    fn drop(&mut self) {
        if self.store().exists() {
            let out = self.rbuild(&["ps", "-aq"]);
            for id in String::from_utf8_lossy(&out.stdout).split_whitespace() {
                let _ = self.rbuild(&["rm", "-f", id]);
            }
            for (pid, _) in servers_below(&self.store()) {
                let _ = nix::sys::signal::kill(
                    nix::unistd::Pid::from_raw(pid),
                    nix::sys::signal::Signal::SIGKILL,
                );
            }
        }
        common::unmount_below(self.dir.path());
    }
}

#[test]
fn auto_falls_back_to_a_served_fuse_mount_for_detached_containers() {
    let root = OverlayBackedRoot::new();
    std::fs::create_dir(root.store()).expect("store dir");
    common::import_busybox(&root.store(), "bb");
    let (id, notice) = root.ok(&["run", "-d", "bb", "tail", "-f", "/dev/null"]);
    let id = id.trim().to_string();
    assert!(
        notice.contains("notice: using the FUSE storage driver"),
        "the fallback notice reaches the caller: {notice:?}"
    );
    let servers = servers_below(&root.store());
    assert_eq!(servers.len(), 1, "{servers:?}");
    assert_eq!(root.ok(&["exec", &id, "echo", "served"]).0, "served\n");
    root.ok(&["rm", "-f", &id]);
    assert!(poll_until(500, || servers_below(&root.store()).is_empty()));
    assert!(
        mounts_below(&root.store()).is_empty(),
        "{:?}",
        mounts_below(&root.store())
    );
}

#[test]
fn sigterm_or_a_busy_umount_still_ends_the_server() {
    let root = TestRoot::new();
    let _cleanup = Cleanup(&root);
    root.import_busybox("bb");
    // SIGTERM: the server unmounts and exits; the next listing drops the record.
    let path = PathBuf::from(fuse_ok(&root, &["mount", "bb"]).trim());
    let (pid, _) = servers_below(root.path())[0].clone();
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pid),
        nix::sys::signal::Signal::SIGTERM,
    )
    .expect("SIGTERM the server");
    assert!(poll_until(500, || servers_below(root.path()).is_empty()));
    assert!(mounts_below(root.path()).is_empty());
    assert!(root.ok(&["mount"]).trim().is_empty());
    // A process working inside the mount keeps it busy: umount detaches it lazily, and the
    // server, no longer owned by any record, cuts the last user off instead of serving forever.
    fuse_ok(&root, &["mount", "bb"]);
    let user = KillOnDrop(
        std::process::Command::new("/bin/busybox")
            .args(["sleep", "600"])
            .current_dir(&path)
            .spawn()
            .expect("start a process inside the mount"),
    );
    root.ok(&["umount", "bb"]);
    assert!(
        poll_until(1000, || servers_below(root.path()).is_empty()),
        "the server kept serving a detached mount"
    );
    assert!(mounts_below(root.path()).is_empty());
    drop(user);
}
