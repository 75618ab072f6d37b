//! Detached containers: exec, logs, top, stats, stop, start, kill, rm, and nothing left behind.

mod common;

use common::{mounts_below, poll_until, TestRoot};

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
use std::path::PathBuf;

fn inspect(root: &TestRoot, name: &str, field: &str) -> String {
    root.ok(&["container-inspect", "-f", field, name])
        .trim()
        .to_string()
}

#[test]
fn detach_exec_stop_rm_leaves_nothing_behind() {
    let root = TestRoot::new();
    let _cleanup = RemoveContainers(&root);
    root.import_busybox("bb");
    let id = root
        .ok(&[
            "run",
            "-d",
            "--name",
            "svc",
            "--pids-limit",
            "50",
            "bb",
            "sh",
            "-c",
            "echo hello-log; exec tail -f /dev/null",
        ])
        .trim()
        .to_string();
    assert_eq!(id.len(), 64, "{id}");
    assert_eq!(inspect(&root, "svc", "{{.State.Status}}"), "running");
    let pid: i32 = inspect(&root, "svc", "{{.State.Pid}}").parse().unwrap();
    let cgroups: Vec<PathBuf> = {
        let v: serde_json::Value =
            serde_json::from_str(&root.ok(&["container-inspect", "svc"])).unwrap();
        v[0]["Cgroup"]["dirs"]
            .as_array()
            .unwrap()
            .iter()
            .map(|d| PathBuf::from(d[1].as_str().unwrap()))
            .collect()
    };
    assert!(!cgroups.is_empty());
    assert!(cgroups.iter().all(|d| d.exists()));
    assert_eq!(
        mounts_below(root.path()).len(),
        1,
        "the container's root filesystem"
    );
    // exec joins the namespaces: same hostname, pid 1 is the container's process.
    let out = root.ok(&[
        "exec",
        "svc",
        "sh",
        "-c",
        "hostname; cat /proc/1/cmdline | tr '\\0' ' '; echo; echo $$",
    ]);
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines[0], &id[..12]);
    assert_eq!(lines[1].trim(), "tail -f /dev/null");
    assert_ne!(lines[2], "1");
    let out = root.ok(&["exec", "-t", "svc", "tty"]);
    assert!(out.starts_with("/dev/pts/"), "{out:?}");
    // exec -d: the command outlives the rbuild that started it.
    root.ok(&[
        "exec",
        "-d",
        "svc",
        "sh",
        "-c",
        "sleep 1; touch /tmp/detached-done; sleep 1000000",
    ]);
    let done = poll_until(1000, || {
        root.rbuild(&["exec", "svc", "test", "-e", "/tmp/detached-done"])
            .status
            .success()
    });
    assert!(done, "exec -d command was killed with its rbuild");
    let out = root.rbuild(&["exec", "svc", "sh", "-c", "exit 5"]);
    assert_eq!(out.status.code(), Some(5));
    // the exec'd process was in the container's cgroup: pids.max is the container's
    let out = root.ok(&["exec", "svc", "cat", "/proc/self/cgroup"]);
    assert!(out.contains(&format!("rbuild-{}", &id[..12])), "{out}");
    let ps = root.ok(&["ps"]);
    assert!(ps.contains("svc"), "{ps}");
    // Columns line up with their headers, however long a cell ("Less than a second ago").
    let header = ps.lines().next().unwrap();
    let row: Vec<char> = ps.lines().nth(1).unwrap().chars().collect();
    for column in ["IMAGE", "CREATED", "STATUS", "NAMES"] {
        let at = header.find(column).unwrap(); // the header is ASCII: bytes are chars
        assert!(
            at > 0 && row[at - 1] == ' ' && row[at] != ' ',
            "{column} column misaligned:\n{ps}"
        );
    }
    let status: String = row[header.find("STATUS").unwrap()..].iter().collect();
    assert!(status.starts_with("Up "), "{ps}");
    assert!(root.ok(&["top", "svc"]).contains("tail -f /dev/null"));
    let stats = root.ok(&["stats", "--no-stream", "svc"]);
    assert!(stats.lines().nth(1).unwrap().contains("svc"), "{stats}");
    assert!(root.ok(&["logs", "svc"]).contains("hello-log"));
    root.ok(&["stop", "-t", "1", "svc"]);
    assert_eq!(inspect(&root, "svc", "{{.State.Status}}"), "exited");
    assert_eq!(inspect(&root, "svc", "{{.State.ExitCode}}"), "137");
    assert!(!std::path::Path::new(&format!("/proc/{pid}")).exists());
    assert!(mounts_below(root.path()).is_empty());
    assert!(cgroups.iter().all(|d| !d.exists()));
    // start again, then rm -f a running container.
    root.ok(&["start", "svc"]);
    assert_eq!(inspect(&root, "svc", "{{.State.Status}}"), "running");
    let pid2: i32 = inspect(&root, "svc", "{{.State.Pid}}").parse().unwrap();
    let err = root.fails(&["rm", "svc"]);
    assert!(err.contains("stop it first"), "{err}");
    root.ok(&["rm", "-f", "svc"]);
    assert!(!std::path::Path::new(&format!("/proc/{pid2}")).exists());
    assert!(mounts_below(root.path()).is_empty());
    assert!(cgroups.iter().all(|d| !d.exists()));
    assert!(!root.path().join("containers").join(&id).exists());
    assert_eq!(root.ok(&["ps", "-aq"]), "");
}

#[test]
fn kill_sends_the_signal_and_detached_rm_cleans_up() {
    let root = TestRoot::new();
    let _cleanup = RemoveContainers(&root);
    root.import_busybox("bb");
    root.ok(&[
        "run",
        "-d",
        "--rm",
        "--name",
        "k",
        "bb",
        "sh",
        "-c",
        "trap 'exit 42' TERM; touch /trapped; while true; do sleep 1; done",
    ]);
    // pid 1 ignores a TERM that comes before its handler is installed: wait for it.
    root.wait_for_success(&["exec", "k", "test", "-e", "/trapped"]);
    // pid 1 with a TERM handler: the signal reaches it.
    root.ok(&["kill", "-s", "TERM", "k"]);
    poll_until(500, || root.ok(&["ps", "-aq"]).is_empty());
    assert_eq!(root.ok(&["ps", "-aq"]), "", "--rm removed the container");
    assert!(mounts_below(root.path()).is_empty());
}

#[test]
fn detached_tty_output_goes_to_the_log() {
    let root = TestRoot::new();
    let _cleanup = RemoveContainers(&root);
    root.import_busybox("bb");
    root.ok(&[
        "run",
        "-d",
        "-t",
        "--name",
        "t",
        "bb",
        "sh",
        "-c",
        "tty; exec sleep 1000000",
    ]);
    let mut log = String::new();
    poll_until(500, || {
        log = root.ok(&["logs", "t"]);
        !log.is_empty()
    });
    assert_eq!(log, "/dev/pts/0\r\n");
    root.ok(&["rm", "-f", "t"]);
    assert!(mounts_below(root.path()).is_empty());
}
