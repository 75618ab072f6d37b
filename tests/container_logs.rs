//! `rbuild logs` of containers run in the foreground: their output is shown and kept, as docker
//! keeps the output of every container; `--rm` keeps nothing; `--tail`.

mod common;

use common::{mounts_below, poll_until, KillOnDrop, TestRoot};
use std::io::Read;
use std::process::{Command, Stdio};

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

/// `rbuild --root ROOT ARGS...` with stdin from /dev/null, not yet started.
fn command(root: &TestRoot, args: &[&str]) -> Command {
    let mut c = Command::new(common::rbuild_bin());
    c.args(["--root", &root.root_str()])
        .args(args)
        .stdin(Stdio::null());
    c
}

fn logs(root: &TestRoot, args: &[&str]) -> Vec<u8> {
    let mut full = vec!["logs"];
    full.extend_from_slice(args);
    let out = root.rbuild(&full);
    assert!(out.status.success(), "{}", common::describe(&full, &out));
    out.stdout
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// The lines of `log` that `keep` selects, in their order.
fn lines_of<'a>(log: &'a str, keep: &str) -> Vec<&'a str> {
    log.lines().filter(|l| l.starts_with(keep)).collect()
}

#[test]
fn foreground_output_is_shown_and_kept_and_start_appends() {
    let root = TestRoot::new();
    let _cleanup = RemoveContainers(&root);
    root.import_busybox("bb");
    // rbuild's own stdout is a file: the container's is a pipe all the same, as under docker.
    let out_file = root.path().join("stdout");
    let script = r#"echo out-1; echo err-1 >&2; echo out-2; echo err-2 >&2
        echo "out-fd1 $(readlink /proc/$$/fd/1 | sed 's/:.*//')"
        echo "err-fd2 $(readlink /proc/$$/fd/2 | sed 's/:.*//')" >&2"#;
    let status = command(&root, &["run", "--name", "fg", "bb", "sh", "-c", script])
        .stdout(std::fs::File::create(&out_file).unwrap())
        .stderr(Stdio::piped())
        .output()
        .unwrap();
    assert!(status.status.success(), "{status:?}");
    assert_eq!(
        std::fs::read_to_string(&out_file).unwrap(),
        "out-1\nout-2\nout-fd1 pipe\n"
    );
    assert_eq!(text(&status.stderr), "err-1\nerr-2\nerr-fd2 pipe\n");

    // Both streams are in the log, each in its order (the two may interleave either way).
    let first = text(&logs(&root, &["fg"]));
    assert_eq!(
        first.len(),
        "out-1\nout-2\nout-fd1 pipe\nerr-1\nerr-2\nerr-fd2 pipe\n".len()
    );
    assert_eq!(
        lines_of(&first, "out"),
        ["out-1", "out-2", "out-fd1 pipe"],
        "{first}"
    );
    assert_eq!(
        lines_of(&first, "err"),
        ["err-1", "err-2", "err-fd2 pipe"],
        "{first}"
    );
    assert_eq!(
        root.ok(&["container-inspect", "-f", "{{.State.Status}}", "fg"])
            .trim(),
        "exited"
    );

    // start (in the background, as docker start without -a) appends to the same log.
    root.ok(&["start", "fg"]);
    let exited = poll_until(1000, || {
        root.ok(&["container-inspect", "-f", "{{.State.Status}}", "fg"])
            .trim()
            == "exited"
    });
    assert!(exited, "the started container did not exit");
    let both = text(&logs(&root, &["fg"]));
    let second = both
        .strip_prefix(&first)
        .unwrap_or_else(|| panic!("the log was not appended to:\n{both}"));
    // In the background stdout and stderr are the log file itself, so they stay in order.
    let log_path = root.ok(&["container-inspect", "-f", "{{.LogPath}}", "fg"]);
    let log_path = log_path.trim();
    assert!(log_path.ends_with("/log"), "{log_path}");
    assert_eq!(
        second,
        format!("out-1\nerr-1\nout-2\nerr-2\nout-fd1 {log_path}\nerr-fd2 {log_path}\n")
    );

    // --tail counts lines from the end of the whole log.
    assert_eq!(
        text(&logs(&root, &["--tail", "2", "fg"])),
        second
            .lines()
            .skip(4)
            .map(|l| format!("{l}\n"))
            .collect::<String>()
    );
    assert_eq!(text(&logs(&root, &["-n", "0", "fg"])), "");
    assert_eq!(text(&logs(&root, &["--tail", "all", "fg"])), both);
    assert!(root
        .fails(&["logs", "--tail", "many", "fg"])
        .contains("--tail"));
}

#[test]
fn tty_output_is_shown_and_kept() {
    let root = TestRoot::new();
    let _cleanup = RemoveContainers(&root);
    root.import_busybox("bb");
    let out = root.ok(&[
        "run",
        "-t",
        "--name",
        "t",
        "bb",
        "sh",
        "-c",
        "tty; echo to-stderr >&2; echo last",
    ]);
    assert_eq!(out, "/dev/pts/0\r\nto-stderr\r\nlast\r\n");
    assert_eq!(text(&logs(&root, &["t"])), out);
}

#[test]
fn run_rm_keeps_nothing_and_gives_the_process_the_callers_stdout() {
    let root = TestRoot::new();
    let _cleanup = RemoveContainers(&root);
    root.import_busybox("bb");
    let out_file = root.path().join("stdout");
    let status = command(
        &root,
        &[
            "run",
            "--rm",
            "--name",
            "gone",
            "bb",
            "sh",
            "-c",
            "echo hi; readlink /proc/self/fd/1",
        ],
    )
    .stdout(std::fs::File::create(&out_file).unwrap())
    .status()
    .unwrap();
    assert!(status.success());
    let out = std::fs::read_to_string(&out_file).unwrap();
    // Nothing is copied: the process writes to the caller's file itself (no pipe).
    assert!(out.starts_with("hi\n") && !out.contains("pipe:"), "{out}");
    assert!(root.fails(&["logs", "gone"]).contains("no such container"));
    let left: Vec<_> = std::fs::read_dir(root.path().join("containers"))
        .unwrap()
        .flatten()
        .map(|e| e.file_name())
        .collect();
    assert!(left.is_empty(), "{left:?}");
}

/// What `seq 1 N` prints.
fn seq(from: u64, to: u64) -> String {
    (from..=to).map(|i| format!("{i}\n")).collect()
}

#[test]
fn large_output_arrives_whole_on_both_sides() {
    let root = TestRoot::new();
    let _cleanup = RemoveContainers(&root);
    root.import_busybox("bb");
    let out = command(
        &root,
        &[
            "run",
            "--name",
            "big",
            "bb",
            "sh",
            "-c",
            // stderr in other bytes than stdout (letters and ';' for digits and newlines),
            // so each stream can be picked out of the log.
            "seq 1 300000 | tr '0-9\\n' 'a-j;' >&2 & seq 1 800000; wait",
        ],
    )
    .stdout(Stdio::piped())
    .stderr(Stdio::piped())
    .output()
    .unwrap();
    assert!(out.status.success(), "{:?}", out.status);
    let want_out = seq(1, 800_000);
    assert!(want_out.len() > 5 << 20);
    assert!(out.stdout == want_out.as_bytes(), "stdout differs");
    let want_err: String = seq(1, 300_000)
        .chars()
        .map(|c| match c {
            '\n' => ';',
            d => (b'a' + (d as u8 - b'0')) as char,
        })
        .collect();
    assert!(out.stderr == want_err.as_bytes(), "stderr differs");
    // The log has both, their chunks interleaved; each stream is whole and in order.
    let log = logs(&root, &["big"]);
    assert_eq!(log.len(), want_out.len() + want_err.len());
    let (log_out, log_err): (Vec<u8>, Vec<u8>) =
        log.iter().partition(|b| b.is_ascii_digit() || **b == b'\n');
    assert!(log_out == want_out.as_bytes(), "stdout in the log differs");
    assert!(log_err == want_err.as_bytes(), "stderr in the log differs");
}

#[test]
fn large_stdout_alone_is_logged_byte_for_byte() {
    let root = TestRoot::new();
    let _cleanup = RemoveContainers(&root);
    root.import_busybox("bb");
    let out = command(&root, &["run", "--name", "big", "bb", "seq", "1", "900000"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{:?}", out.status);
    let want = seq(1, 900_000);
    assert!(out.stdout == want.as_bytes(), "stdout differs");
    assert!(logs(&root, &["big"]) == want.as_bytes(), "log differs");
    assert_eq!(
        text(&logs(&root, &["--tail", "2", "big"])),
        "899999\n900000\n"
    );
}

#[test]
fn a_container_killed_mid_output_keeps_its_log_and_output_is_held_back_meanwhile() {
    let root = TestRoot::new();
    let _cleanup = RemoveContainers(&root);
    root.import_busybox("bb");
    // Nobody reads rbuild's stdout yet: the container must be held back (backpressure), not
    // buffered without bound.
    let mut run = KillOnDrop(
        command(
            &root,
            &["run", "--name", "k", "bb", "seq", "1", "1000000000"],
        )
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap(),
    );
    // The record appears a moment after rbuild started.
    let started = poll_until(1000, || {
        let out = root.rbuild(&["logs", "k"]);
        out.status.success() && !out.stdout.is_empty()
    });
    assert!(started, "no output logged");
    // seq would write far more than 1 MiB in this time if rbuild kept reading; with
    // backpressure the log holds at most the pipes' and one copy chunk's worth, however long
    // this waits (so the bound does not depend on timing).
    std::thread::sleep(std::time::Duration::from_millis(300));
    let held = logs(&root, &["k"]).len();
    assert!(
        held < 1 << 20,
        "{held} bytes logged while nobody read the output"
    );
    let pid: i32 = root
        .ok(&["container-inspect", "-f", "{{.State.Pid}}", "k"])
        .trim()
        .parse()
        .unwrap();
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pid),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
    let mut shown = Vec::new();
    run.0
        .stdout
        .take()
        .unwrap()
        .read_to_end(&mut shown)
        .unwrap();
    let status = run.0.wait().unwrap();
    assert_eq!(status.code(), Some(137));
    let log = logs(&root, &["k"]);
    assert!(!log.is_empty());
    assert!(log == shown, "log and shown output differ");
    // A prefix of seq's output (the last line may be cut where seq's buffer ended).
    let mut want = String::new();
    let mut i = 0;
    while want.len() < log.len() {
        i += 1;
        want.push_str(&format!("{i}\n"));
    }
    assert!(want.as_bytes().starts_with(&log), "not seq's output");
    assert_eq!(
        root.ok(&["container-inspect", "-f", "{{.State.ExitCode}}", "k"])
            .trim(),
        "137"
    );
    assert_eq!(mounts_below(root.path()), vec![], "mounts left behind");
}

#[test]
fn signals_and_stdin_are_forwarded_when_output_is_kept() {
    let root = TestRoot::new();
    let _cleanup = RemoveContainers(&root);
    root.import_busybox("bb");
    // stdin with -i.
    let mut cat = command(&root, &["run", "-i", "--name", "cat", "bb", "cat"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    {
        use std::io::Write;
        let mut stdin = cat.stdin.take().unwrap();
        stdin.write_all(b"from stdin\n").unwrap();
    }
    let out = cat.wait_with_output().unwrap();
    assert!(out.status.success());
    assert_eq!(text(&out.stdout), "from stdin\n");
    assert_eq!(text(&logs(&root, &["cat"])), "from stdin\n");

    // SIGTERM to rbuild reaches pid 1 even while rbuild's stdout is not being read.
    let ready = root.path().join("ready");
    let vol = format!("{}:/out", root.path().display());
    let mut run = KillOnDrop(
        command(
            &root,
            &[
                "run",
                "--name",
                "term",
                "-v",
                &vol,
                "bb",
                "sh",
                "-c",
                "trap 'echo got-term; exit 42' TERM; echo busy; touch /out/ready; \
                 while true; do echo busy; done",
            ],
        )
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap(),
    );
    assert!(
        poll_until(1000, || ready.exists()),
        "container did not start"
    );
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(run.0.id() as i32),
        nix::sys::signal::Signal::SIGTERM,
    )
    .unwrap();
    let mut shown = Vec::new();
    run.0
        .stdout
        .take()
        .unwrap()
        .read_to_end(&mut shown)
        .unwrap();
    assert_eq!(run.0.wait().unwrap().code(), Some(42));
    let shown = text(&shown);
    assert!(
        shown.ends_with("busy\ngot-term\n"),
        "{}",
        &shown[shown.len().saturating_sub(100)..]
    );
    assert!(
        text(&logs(&root, &["term"])) == shown,
        "log and shown output differ"
    );
}
