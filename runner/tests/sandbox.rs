//! The sandbox against the real kernel (needs root): isolation, escapes, limits, cleanup.

mod support;

use rbuild_runner::{Network, ResourceLimits, RunnerError};
use std::os::fd::{AsRawFd, OwnedFd};
use support::{run_logged, sh, Rootfs};

#[test]
fn shell_is_pid_1_and_sees_only_its_own_processes() {
    let rootfs = Rootfs::busybox();
    // ps writes to a file: in a pipeline it may run before the shell has forked wc.
    let (status, out) = rootfs.sh("echo pid=$$; ps -o pid= > /tmp/ps; wc -l < /tmp/ps");
    assert_eq!(status.code, 0, "{out}");
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines[0], "pid=1");
    // sh and ps: two processes, nothing from the host.
    assert_eq!(lines[1].trim(), "2", "{out}");
}

#[test]
fn hostname_is_the_sandbox_one() {
    let rootfs = Rootfs::busybox();
    let (status, out) = rootfs.sh("hostname");
    assert_eq!(status.code, 0);
    assert_eq!(out.trim(), "box");
    assert_ne!(nix::unistd::gethostname().unwrap().to_string_lossy(), "box");
}

#[test]
fn environment_is_exactly_the_given_one() {
    std::env::set_var("RBUILD_HOST_CANARY", "leaked");
    let rootfs = Rootfs::busybox();
    let (sandbox, log) = rootfs.sandbox();
    let mut p = sh("env | sort");
    p.env.push("FOO=bar".into());
    let (status, out) = run_logged(&sandbox, &log, &p);
    assert_eq!(status.code, 0);
    assert!(!out.contains("RBUILD_HOST_CANARY"), "{out}");
    let names: Vec<&str> = out
        .lines()
        .filter_map(|l| l.split('=').next())
        .filter(|n| *n != "PWD" && *n != "SHLVL")
        .collect();
    // HOME comes from the image's /etc/passwd, as docker does.
    assert_eq!(names, ["FOO", "HOME", "PATH"], "{out}");
    assert!(out.contains("HOME=/root"));
}

/// Opens `path` `n` times without O_CLOEXEC so the fds would leak into a forked child.
fn leaky_fds(path: &std::path::Path, n: usize) -> Vec<OwnedFd> {
    (0..n)
        .map(|_| {
            let fd: OwnedFd = std::fs::File::open(path).unwrap().into();
            // SAFETY: clearing FD_CLOEXEC on our own fd.
            unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_SETFD, 0) };
            fd
        })
        .collect()
}

#[test]
fn only_fds_0_to_2_are_open() {
    let rootfs = Rootfs::busybox();
    let _leaks = leaky_fds(rootfs.path(), 5);
    // pid 1 is a plain `sleep` (a shell would hold pipe fds while it starts a pipeline); list its
    // fds from an exec'd process.
    let (sandbox, _log) = rootfs.sandbox();
    let running = rbuild_runner::spawn(&sandbox, &sh("exec sleep 1000000")).unwrap();
    let exec_log = tempfile::NamedTempFile::new().unwrap();
    let mut out = String::new();
    for _ in 0..500 {
        let status = rbuild_runner::exec(
            running.init_pid(),
            running.cgroup(),
            &sh("cat /proc/1/cmdline | tr '\\0' ' '; echo; ls /proc/1/fd | sort -n | tr '\\n' ' '"),
            &rbuild_runner::Stdio::Log(exec_log.path().into()),
        )
        .unwrap();
        assert_eq!(status.code, 0);
        out = std::fs::read_to_string(exec_log.path()).unwrap();
        if out.starts_with("sleep") {
            break;
        }
        std::fs::write(exec_log.path(), "").unwrap();
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines[0].trim(), "sleep 1000000", "{out}");
    assert_eq!(lines[1].trim(), "0 1 2", "{out}");
}

#[test]
fn sysrq_trigger_and_kcore_are_protected() {
    let rootfs = Rootfs::busybox();
    let (status, out) = rootfs.sh("echo h > /proc/sysrq-trigger && echo WROTE");
    assert_ne!(status.code, 0, "{out}");
    assert!(!out.contains("WROTE"));
    // /proc/kcore is masked the same way where the kernel has it.
    let (status, out) = rootfs.sh("wc -c < /proc/interrupts");
    assert_eq!(status.code, 0, "{out}");
    assert_eq!(out.trim(), "0", "/proc/interrupts is masked with /dev/null");
    let (status, _) = rootfs.sh("echo 1 > /proc/sys/kernel/panic");
    assert_ne!(status.code, 0, "/proc/sys is read-only");
}

/// A host directory with a sentinel file that no container may read or change.
struct Sentinel {
    dir: tempfile::TempDir,
}

impl Sentinel {
    fn new() -> Sentinel {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("sentinel"), "host-secret").unwrap();
        Sentinel { dir }
    }
    fn assert_untouched(&self) {
        let entries: Vec<_> = std::fs::read_dir(self.dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(
            entries,
            ["sentinel"],
            "nothing was added next to the sentinel"
        );
        assert_eq!(
            std::fs::read_to_string(self.dir.path().join("sentinel")).unwrap(),
            "host-secret"
        );
    }
}

#[test]
fn host_sentinel_is_unreachable_through_proc_1_root() {
    let rootfs = Rootfs::busybox();
    let sentinel = Sentinel::new();
    let path = sentinel.dir.path().join("sentinel");
    let (_, out) = rootfs.sh(&format!(
        "cat /proc/1/root{p}; echo pwned > /proc/1/root{p}; cat /proc/1/root/../../..{p}",
        p = path.display()
    ));
    assert!(!out.contains("host-secret"), "{out}");
    sentinel.assert_untouched();
}

#[test]
fn working_dir_through_proc_self_fd_cannot_escape() {
    let rootfs = Rootfs::busybox();
    let sentinel = Sentinel::new();
    // Host fds 3..20 point at the sentinel's directory.
    let _leaks = leaky_fds(sentinel.dir.path(), 18);
    for n in 3..=20 {
        let (sandbox, log) = rootfs.sandbox();
        let mut p = sh("cat sentinel; echo pwned > escaped; ls");
        p.cwd = format!("/proc/self/fd/{n}");
        match rbuild_runner::run(&sandbox, &p) {
            Ok(_) => {
                let out = std::fs::read_to_string(&log).unwrap_or_default();
                assert!(!out.contains("host-secret"), "fd {n}: {out}");
            }
            Err(e) => assert!(e.to_string().contains("working directory"), "fd {n}: {e}"),
        }
    }
    sentinel.assert_untouched();
}

#[test]
fn image_symlinks_do_not_redirect_the_runner() {
    let rootfs = Rootfs::busybox();
    let core_pattern = std::fs::read_to_string("/proc/sys/kernel/core_pattern").unwrap();
    let sentinel = Sentinel::new();
    std::fs::create_dir(rootfs.path().join("dev")).unwrap();
    std::os::unix::fs::symlink(
        "/proc/sys/kernel/core_pattern",
        rootfs.path().join("dev/null"),
    )
    .unwrap();
    std::os::unix::fs::symlink(
        sentinel.dir.path().join("sentinel"),
        rootfs.path().join("etc/hosts"),
    )
    .unwrap();
    std::os::unix::fs::symlink(sentinel.dir.path(), rootfs.path().join("sys")).unwrap();
    let (mut sandbox, log) = rootfs.sandbox();
    sandbox.network = Network::Host;
    let script = sh("echo '|/tmp/pwn' > /dev/null; cat /etc/hosts; echo x > /etc/hosts; echo done");
    // /sys points outside the root: refused.
    let err = rbuild_runner::run(&sandbox, &script).unwrap_err();
    assert!(
        err.to_string().contains("resolve sys inside the container"),
        "{err}"
    );
    std::fs::remove_file(rootfs.path().join("sys")).unwrap();
    let (status, out) = run_logged(&sandbox, &log, &script);
    assert_eq!(status.code, 0, "{out}");
    assert!(out.ends_with("done\n"), "{out}");
    assert!(!out.contains("host-secret"), "{out}");
    assert_eq!(
        std::fs::read_to_string("/proc/sys/kernel/core_pattern").unwrap(),
        core_pattern
    );
    sentinel.assert_untouched();
}

#[test]
fn exit_code_user_and_workdir() {
    let rootfs = Rootfs::busybox();
    let (status, _) = rootfs.sh("exit 42");
    assert_eq!(status.code, 42);
    let (sandbox, log) = rootfs.sandbox();
    let mut p = sh("id; pwd; touch mine && echo wrote; true");
    p.user = "nobody".into();
    p.cwd = "/work/sub".into();
    let (status, out) = run_logged(&sandbox, &log, &p);
    assert_eq!(status.code, 0, "{out}");
    assert!(
        out.contains("uid=65534(nobody) gid=65534(nogroup) groups="),
        "{out}"
    );
    assert!(
        out.contains("50(staff)"),
        "supplementary group from /etc/group: {out}"
    );
    assert!(out.contains("/work/sub"));
    // Created by root: the user cannot write there (as in docker).
    assert!(!out.contains("wrote"));
    assert!(rootfs.path().join("work/sub").is_dir());
}

#[test]
fn non_root_user_has_no_capabilities_and_root_has_dockers() {
    let rootfs = Rootfs::busybox();
    let (_, out) = rootfs.sh("grep -E 'CapEff|CapBnd|NoNewPrivs' /proc/self/status");
    assert!(out.contains("CapEff:\t00000000a80425fb"), "{out}");
    assert!(out.contains("CapBnd:\t00000000a80425fb"), "{out}");
    assert!(out.contains("NoNewPrivs:\t1"), "{out}");
    let (sandbox, log) = rootfs.sandbox();
    let mut p = sh("grep CapEff /proc/self/status");
    p.user = "65534:65534".into();
    let (_, out) = run_logged(&sandbox, &log, &p);
    assert!(out.contains("CapEff:\t0000000000000000"), "{out}");
}

#[test]
fn unknown_command_and_user_are_errors() {
    let rootfs = Rootfs::busybox();
    let (sandbox, _) = rootfs.sandbox();
    let mut p = sh("true");
    p.args = vec!["no-such-command".into()];
    match rbuild_runner::run(&sandbox, &p) {
        Err(RunnerError::Exec { code, message }) => {
            assert_eq!(code, 127);
            assert!(message.contains("not found"), "{message}");
        }
        other => panic!("expected exec error, got {other:?}"),
    }
    let mut p = sh("true");
    p.user = "ghost".into();
    let err = rbuild_runner::run(&sandbox, &p).unwrap_err();
    assert!(
        err.to_string().contains("unable to find user ghost"),
        "{err}"
    );
}

#[test]
fn network_none_has_only_loopback_up() {
    let rootfs = Rootfs::busybox();
    let (status, out) =
        rootfs.sh("ls /sys/class/net; cat /sys/class/net/lo/operstate /sys/class/net/lo/flags");
    assert_eq!(status.code, 0, "{out}");
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines[0], "lo", "{out}");
    // IFF_UP is bit 0 of the flags.
    let flags = u32::from_str_radix(lines[2].trim_start_matches("0x"), 16).unwrap();
    assert_eq!(flags & 1, 1, "{out}");
}

#[test]
fn mount_points_and_cgroup_are_removed_afterwards() {
    let rootfs = Rootfs::busybox();
    let (mut sandbox, log) = rootfs.sandbox();
    sandbox.cgroup_name = Some(format!("rbuild-test-{}", std::process::id()));
    let (status, out) = run_logged(&sandbox, &log, &sh("cat /proc/self/cgroup"));
    assert_eq!(status.code, 0);
    assert!(
        out.contains(&format!("rbuild-test-{}", std::process::id())),
        "{out}"
    );
    for d in ["proc", "dev", "sys"] {
        assert!(
            !rootfs.path().join(d).exists(),
            "{d} mount point left behind"
        );
    }
    let hierarchy = rbuild_runner::cgroup::detect().unwrap();
    let dirs: Vec<std::path::PathBuf> = match hierarchy {
        rbuild_runner::cgroup::Hierarchy::V1(hs) => hs.into_iter().map(|(_, d)| d).collect(),
        rbuild_runner::cgroup::Hierarchy::V2(d) => vec![d],
    };
    for d in dirs {
        assert!(!d.join(sandbox.cgroup_name.as_ref().unwrap()).exists());
    }
}

#[test]
fn memory_limit_kills_a_big_allocation() {
    let rootfs = Rootfs::busybox();
    let (mut sandbox, log) = rootfs.sandbox();
    sandbox.limits = ResourceLimits {
        memory: Some(64 << 20),
        ..Default::default()
    };
    // tail keeps the whole (newline-free) 200 MB line in memory.
    let (status, out) = run_logged(
        &sandbox,
        &log,
        &sh("head -c 200m /dev/zero | tail; echo rc=$?"),
    );
    assert!(status.oom_killed, "{status:?} {out}");
    assert!(out.contains("rc=137"), "{out}");
}

#[test]
fn pids_limit_stops_a_fork_loop() {
    let rootfs = Rootfs::busybox();
    let (mut sandbox, log) = rootfs.sandbox();
    sandbox.limits = ResourceLimits {
        pids: Some(20),
        ..Default::default()
    };
    let (status, out) = run_logged(
        &sandbox,
        &log,
        &sh("i=0; while [ $i -lt 100 ]; do sleep 30 & i=$((i+1)); done; echo all-started"),
    );
    assert!(out.contains("can't fork"), "{out}");
    assert!(!out.contains("all-started"), "{out}");
    assert_ne!(status.code, 0);
}

#[test]
fn cpu_limits_are_written_and_blkio_weight_is_checked() {
    let rootfs = Rootfs::busybox();
    let (mut sandbox, _log) = rootfs.sandbox();
    sandbox.limits = ResourceLimits {
        cpus: Some(0.5),
        cpu_shares: Some(512),
        cpuset_cpus: Some("0".into()),
        ..Default::default()
    };
    let running = rbuild_runner::spawn(&sandbox, &sh("sleep 30")).unwrap();
    let cg = running.cgroup().unwrap().clone();
    let read = |ctrl: &str, file: &str| {
        std::fs::read_to_string(cg.dir_of(ctrl).unwrap().join(file))
            .unwrap()
            .trim()
            .to_string()
    };
    match cg.version {
        rbuild_runner::cgroup::Version::V1 => {
            assert_eq!(read("cpu", "cpu.cfs_quota_us"), "50000");
            assert_eq!(read("cpu", "cpu.shares"), "512");
            assert_eq!(read("cpuset", "cpuset.cpus"), "0");
        }
        rbuild_runner::cgroup::Version::V2 => {
            assert_eq!(read("cpu", "cpu.max"), "50000 100000");
        }
    }
    assert!(cg.pids().contains(&running.init_pid()));
    drop(running);
    assert!(cg.dirs.iter().all(|(_, d)| !d.exists()));
    let mut blk = sandbox.clone();
    blk.limits = ResourceLimits {
        blkio_weight: Some(500),
        ..Default::default()
    };
    match rbuild_runner::run(&blk, &sh("true")) {
        Ok(s) => assert_eq!(s.code, 0, "host supports blkio weights"),
        Err(e) => assert!(e.to_string().contains("--blkio-weight"), "{e}"),
    }
}

#[test]
fn exec_joins_the_running_sandbox() {
    let rootfs = Rootfs::busybox();
    let (sandbox, _log) = rootfs.sandbox();
    let running =
        rbuild_runner::spawn(&sandbox, &sh("echo hi > /tmp/marker; exec sleep 30")).unwrap();
    let exec_log = tempfile::NamedTempFile::new().unwrap();
    let mut p = sh("hostname; cat /proc/1/cmdline | tr '\\0' ' '; echo; echo pid=$$");
    p.cwd = "/tmp".into();
    let mut status = None;
    // The marker appears once the shell ran; exec until then.
    for _ in 0..200 {
        if rootfs.path().join("tmp/marker").exists() {
            status = Some(
                rbuild_runner::exec(
                    running.init_pid(),
                    running.cgroup(),
                    &p,
                    &rbuild_runner::Stdio::Log(exec_log.path().into()),
                )
                .unwrap(),
            );
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    let out = std::fs::read_to_string(exec_log.path()).unwrap();
    assert_eq!(status.expect("sandbox started").code, 0, "{out}");
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines[0], "box");
    assert_eq!(lines[1].trim(), "sleep 30");
    assert_ne!(lines[2], "pid=1");
}

#[test]
fn no_signal_is_ignored_in_the_container_process() {
    // This test process ignores SIGPIPE (Rust's runtime does), which execve would pass on.
    let rootfs = Rootfs::busybox();
    let (status, out) = rootfs.sh("grep SigIgn /proc/self/status; yes | head -n1");
    assert_eq!(status.code, 0, "{out}");
    assert_eq!(out, "SigIgn:\t0000000000000000\ny\n");
}

#[test]
fn no_signal_is_ignored_in_an_exec_process() {
    let rootfs = Rootfs::busybox();
    let (sandbox, _log) = rootfs.sandbox();
    let running = rbuild_runner::spawn(&sandbox, &sh("exec sleep 30")).unwrap();
    let log = rootfs.path().join("exec-sigign");
    let mut grep = sh("");
    grep.args = ["grep", "SigIgn", "/proc/self/status"]
        .map(String::from)
        .to_vec();
    let status = rbuild_runner::exec(
        running.init_pid(),
        running.cgroup(),
        &grep,
        &rbuild_runner::Stdio::Log(log.clone()),
    )
    .unwrap();
    assert_eq!(status.code, 0);
    let report = std::fs::read_to_string(&log).unwrap();
    assert_eq!(report, "SigIgn:\t0000000000000000\n");
}
