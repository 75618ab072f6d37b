//! Killing rbuild (SIGKILL) while it serves a FUSE mount leaves no dead mount that blocks the
//! next command and no process behind: the RUN step's sandbox dies with it, and the next
//! sandbox removes the cgroups the killed rbuild could not. The kill lands at different moments
//! of a RUN step: right after the mount appears (before the sandbox starts), while the RUN
//! process sleeps, and while the RUN process is busy on the mount.

mod common;

use common::{KillOnDrop, TestRoot};
use rbuild_runner::cgroup::Hierarchy;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

/// Mount points of rbuild FUSE mounts at or below `dir`.
fn fuse_mounts_below(dir: &Path) -> Vec<PathBuf> {
    common::mounts_below(dir)
        .into_iter()
        .filter(|m| m.source == "rbuild" && (m.fstype == "fuse" || m.fstype == "fuse.rbuild"))
        .map(|m| m.point)
        .collect()
}

/// The parent pid of `pid`, if it still exists.
fn parent_of(pid: i32) -> Option<i32> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // "pid (comm) state ppid ...": comm may hold spaces and parentheses.
    let rest = &stat[stat.rfind(')')? + 2..];
    rest.split(' ').nth(1)?.parse().ok()
}

/// Whether `pid` is alive and not a zombie.
fn is_running(pid: i32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|s| {
            s.rfind(')')
                .and_then(|i| s.get(i + 2..i + 3))
                .map(|state| state != "Z" && state != "X")
        })
        .unwrap_or(false)
}

/// Pids of the processes whose parent is `parent`.
fn children_of(parent: i32) -> Vec<i32> {
    std::fs::read_dir("/proc")
        .expect("list /proc")
        .flatten()
        .filter_map(|e| e.file_name().to_string_lossy().parse::<i32>().ok())
        .filter(|&pid| parent_of(pid) == Some(parent))
        .collect()
}

/// Pids of every live descendant of `pid`.
fn descendants_of(pid: i32) -> Vec<i32> {
    let mut found = Vec::new();
    let mut queue = vec![pid];
    while let Some(p) = queue.pop() {
        for child in children_of(p) {
            found.push(child);
            queue.push(child);
        }
    }
    found
}

/// The command line of `pid`, arguments separated by spaces.
fn cmdline(pid: i32) -> String {
    std::fs::read(format!("/proc/{pid}/cmdline"))
        .map(|c| {
            String::from_utf8_lossy(&c)
                .trim_end_matches('\0')
                .replace('\0', " ")
        })
        .unwrap_or_default()
}

/// This test process adopts the orphans of the builds it starts (a child subreaper), so that
/// what a killed rbuild leaves running can be found, waited for and, on drop, killed and reaped.
struct Adopter {
    me: i32,
    /// Name prefixes of cgroups below ours to remove on drop: the sandbox cgroups of killed
    /// builds (`rbuild-<pid>-<n>`) and containers (`rbuild-<id>`).
    cgroups: Vec<String>,
}

impl Adopter {
    fn new() -> Adopter {
        // SAFETY: prctl with integer arguments.
        let r = unsafe { libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) };
        assert_eq!(r, 0, "PR_SET_CHILD_SUBREAPER");
        Adopter {
            me: std::process::id() as i32,
            cgroups: Vec::new(),
        }
    }

    /// Removes the sandbox cgroups of build `pid` on drop.
    fn remove_cgroups_of(&mut self, pid: i32) {
        self.cgroups.push(format!("rbuild-{pid}-"));
    }

    /// Removes the cgroup of container `short_id` on drop.
    fn remove_cgroup_of_container(&mut self, short_id: &str) {
        self.cgroups.push(format!("rbuild-{short_id}"));
    }

    /// Our children other than `known`, with their descendants, that are still running; zombies
    /// among them are reaped.
    fn orphans(&self, known: &[i32]) -> Vec<(i32, String)> {
        let mut live = Vec::new();
        for pid in children_of(self.me) {
            if known.contains(&pid) {
                continue;
            }
            if !is_running(pid) {
                // SAFETY: reaping a zombie child of this process.
                unsafe { libc::waitpid(pid, std::ptr::null_mut(), libc::WNOHANG) };
                continue;
            }
            for p in std::iter::once(pid).chain(descendants_of(pid)) {
                live.push((p, cmdline(p)));
            }
        }
        live
    }

    /// Waits up to `timeout` for every orphan to end; returns those still running.
    fn wait_orphans(&self, known: &[i32], timeout: Duration) -> Vec<(i32, String)> {
        let deadline = Instant::now() + timeout;
        loop {
            let live = self.orphans(known);
            if live.is_empty() || Instant::now() >= deadline {
                return live;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Adopter {
    fn drop(&mut self) {
        for (pid, _) in self.orphans(&[]) {
            // SAFETY: kill(2) on a process this test started (directly or through rbuild).
            unsafe { libc::kill(pid, libc::SIGKILL) };
        }
        // Reaps them (bounded: a process stuck on a dead mount must not hang the test).
        let deadline = Instant::now() + Duration::from_secs(10);
        while !self.orphans(&[]).is_empty() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
        }
        // SAFETY: prctl with integer arguments.
        unsafe { libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 0, 0, 0, 0) };
        for prefix in &self.cgroups {
            for dir in cgroups_named(prefix) {
                let _ = std::fs::remove_dir(dir);
            }
        }
    }
}

/// The cgroups below this process's own cgroups whose names start with `prefix`.
fn cgroups_named(prefix: &str) -> Vec<std::path::PathBuf> {
    let parents = match rbuild_runner::cgroup::detect() {
        Ok(Hierarchy::V1(hierarchies)) => hierarchies.into_iter().map(|(_, d)| d).collect(),
        Ok(Hierarchy::V2(own)) => vec![own],
        Err(_) => Vec::new(),
    };
    parents
        .iter()
        .flat_map(|parent| std::fs::read_dir(parent).into_iter().flatten().flatten())
        .filter(|entry| entry.file_name().to_string_lossy().starts_with(prefix))
        .map(|entry| entry.path())
        .collect()
}

/// When to kill the build.
#[derive(Debug, Clone, Copy)]
enum Moment {
    /// As soon as its FUSE mount appears (before the RUN step's sandbox exists).
    Mounted,
    /// Once the RUN step's process runs (a descendant of rbuild whose command line contains
    /// this text).
    Running(&'static str),
}

/// One test at a time in a process (each adopts every orphan of the process).
static ONE_AT_A_TIME: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn rbuild_fuse(root: &TestRoot, args: &[&str]) -> Output {
    Command::new(common::rbuild_bin())
        .args(["--root", &root.root_str(), "--storage-driver", "fuse"])
        .args(args)
        .stdin(std::process::Stdio::null())
        .output()
        .expect("run rbuild")
}

/// Starts `FROM busybox` + `run`, kills rbuild at `moment`, then checks that the next commands
/// work and that nothing of the killed build is left: no FUSE mount, no process, no cgroup.
fn kill_build_then_continue(run: &str, moment: Moment) {
    let _serial = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let mut adopter = Adopter::new();
    let root = TestRoot::new();
    root.import_busybox("busybox");
    let ctx = tempfile::tempdir().expect("context dir");
    std::fs::write(
        ctx.path().join("Dockerfile"),
        format!("FROM busybox\n{run}\n"),
    )
    .expect("write Dockerfile");
    let mut build = KillOnDrop(
        Command::new(common::rbuild_bin())
            .args(["--root", &root.root_str(), "--storage-driver", "fuse"])
            .args(["build", "--progress", "plain", "--no-cache"])
            .arg(ctx.path())
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .spawn()
            .expect("start rbuild build"),
    );
    let pid = build.0.id() as i32;
    adopter.remove_cgroups_of(pid);
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let reached = match moment {
            Moment::Mounted => !fuse_mounts_below(root.path()).is_empty(),
            Moment::Running(command) => descendants_of(pid)
                .into_iter()
                .any(|p| cmdline(p).contains(command)),
        };
        if reached {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the build never reached {moment:?}"
        );
        assert!(
            build.0.try_wait().expect("poll build").is_none(),
            "the build ended before {moment:?}"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
    build.0.kill().expect("kill rbuild");
    build.0.wait().expect("reap rbuild");

    // Right away, any command works: the next build mounts with FUSE and runs a step, and the
    // store is consistent.
    std::fs::write(
        ctx.path().join("Dockerfile"),
        "FROM busybox\nRUN echo ok > /ok\n",
    )
    .expect("rewrite Dockerfile");
    let ctx_arg = ctx.path().to_str().expect("utf-8 context path");
    for args in [
        &["build", "-q", ctx_arg][..],
        &["run", "--rm", "busybox", "cat", "/etc/passwd"][..],
        &["system", "df"][..],
        &["system", "check"][..],
    ] {
        let out = rbuild_fuse(&root, args);
        assert!(
            out.status.success(),
            "{} after the kill ({moment:?}) failed:\n{}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let left = fuse_mounts_below(root.path());
    assert!(left.is_empty(), "FUSE mounts left behind: {left:?}");
    // The killed build's sandbox and helpers end on their own (rbuild's death kills them).
    let live = adopter.wait_orphans(&[], Duration::from_secs(30));
    assert!(
        live.is_empty(),
        "processes of the killed build still run: {live:?}"
    );
    // The next sandbox removes the cgroups the killed build could not remove itself.
    let out = rbuild_fuse(&root, &["run", "--rm", "busybox", "true"]);
    assert!(
        out.status.success(),
        "run: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let left = cgroups_named(&format!("rbuild-{pid}-"));
    assert!(
        left.is_empty(),
        "cgroups of the killed build left: {left:?}"
    );
}

#[test]
fn killed_build_leaves_no_blocking_fuse_mount() {
    kill_build_then_continue("RUN sleep 300", Moment::Mounted);
}

#[test]
fn build_killed_while_its_run_step_sleeps_leaves_nothing_behind() {
    kill_build_then_continue("RUN sleep 300", Moment::Running("sleep 300"));
}

#[test]
fn build_killed_while_its_run_step_uses_the_mount_leaves_nothing_behind() {
    kill_build_then_continue(
        "RUN while :; do echo x > /f; cat /f > /dev/null; done",
        Moment::Running("while :; do echo x > /f"),
    );
}

#[test]
fn a_killed_foreground_run_rm_blocks_nothing_and_the_next_command_removes_it() {
    let _serial = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let mut adopter = Adopter::new();
    let root = TestRoot::new();
    root.import_busybox("busybox");
    let mut run = KillOnDrop(
        Command::new(common::rbuild_bin())
            .args(["--root", &root.root_str(), "--storage-driver", "fuse"])
            .args(["run", "--rm", "busybox", "sleep", "300"])
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .spawn()
            .expect("start rbuild run"),
    );
    let pid = run.0.id() as i32;
    let deadline = Instant::now() + Duration::from_secs(120);
    while !descendants_of(pid)
        .into_iter()
        .any(|p| cmdline(p) == "sleep 300")
    {
        assert!(Instant::now() < deadline, "the container never started");
        assert!(
            run.0.try_wait().expect("poll run").is_none(),
            "rbuild run ended early"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
    // While rbuild waits for it, it is a running container like any other (its record may be
    // written a moment after the process started).
    let mut ids = Vec::new();
    common::poll_until(1000, || {
        let out = rbuild_fuse(&root, &["ps", "-q"]);
        ids = String::from_utf8_lossy(&out.stdout)
            .split_whitespace()
            .map(str::to_string)
            .collect();
        ids.len() == 1
    });
    assert_eq!(ids.len(), 1, "the running container is listed: {ids:?}");
    adopter.remove_cgroup_of_container(&ids[0]);
    run.0.kill().expect("kill rbuild");
    run.0.wait().expect("reap rbuild");

    // The next command removes the --rm container the killed rbuild left (docker removes one
    // whenever it exits), with its dead FUSE mount.
    let listed = rbuild_fuse(&root, &["ps", "-aq"]);
    assert_eq!(
        String::from_utf8_lossy(&listed.stdout).trim(),
        "",
        "the killed --rm container is still listed"
    );
    for args in [
        &["run", "--rm", "busybox", "true"][..],
        &["system", "check"][..],
        &["rmi", "busybox"][..],
    ] {
        let out = rbuild_fuse(&root, args);
        assert!(
            out.status.success(),
            "{} after the kill failed:\n{}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let left = fuse_mounts_below(root.path());
    assert!(left.is_empty(), "FUSE mounts left behind: {left:?}");
    let live = adopter.wait_orphans(&[], Duration::from_secs(30));
    assert!(
        live.is_empty(),
        "processes of the killed run still run: {live:?}"
    );
}
