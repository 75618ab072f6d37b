//! Exploits a security review found, each now refused: host devices, the host's controlling
//! terminal, writable submounts of read-only volumes, leaks into exec'd processes, huge user ids,
//! inheritable capabilities.

mod support;

use rbuild_runner::{BindMount, Stdio};
use support::{run_logged, sh, Rootfs};

/// Unmounts a tmpfs on drop.
struct TmpfsMount(std::path::PathBuf);

impl TmpfsMount {
    fn new(at: &std::path::Path) -> TmpfsMount {
        std::fs::create_dir_all(at).unwrap();
        nix::mount::mount(
            Some("tmpfs"),
            at,
            Some("tmpfs"),
            nix::mount::MsFlags::empty(),
            Some("size=1m"),
        )
        .expect("mount tmpfs");
        TmpfsMount(at.to_path_buf())
    }
}

impl Drop for TmpfsMount {
    fn drop(&mut self) {
        let _ = nix::mount::umount2(&self.0, nix::mount::MntFlags::MNT_DETACH);
    }
}

#[test]
fn host_block_and_char_devices_cannot_be_used() {
    let rootfs = Rootfs::busybox();
    // mknod itself is allowed (docker's "b *:* m"); opening the node is not.
    let (status, out) = rootfs.sh("mknod /x b 7 0 && head -c1 /x && echo BLOCK-READ; \
         mknod /k c 1 11 && echo x > /k && echo KMSG-WRITTEN; \
         mknod /dev/shm/k c 1 11 && echo x > /dev/shm/k && echo SHM-KMSG-WRITTEN; \
         mknod /tmp/n c 1 3 && echo x > /tmp/n && echo OWN-NULL-WRITTEN; \
         echo x > /dev/null && head -c4 /dev/zero | wc -c && head -c4 /dev/urandom | wc -c \
         && echo x > /dev/full; echo done");
    assert_eq!(status.code, 0, "{out}");
    for leak in [
        "BLOCK-READ",
        "KMSG-WRITTEN",
        "SHM-KMSG-WRITTEN",
        "OWN-NULL-WRITTEN",
    ] {
        assert!(!out.contains(leak), "{leak}: {out}");
    }
    assert!(out.contains("done"), "{out}");
    let counts: Vec<&str> = out.lines().filter(|l| l.trim() == "4").collect();
    assert_eq!(
        counts.len(),
        2,
        "/dev/zero and /dev/urandom readable: {out}"
    );
    assert!(out.contains("No space left"), "/dev/full usable: {out}");
}

#[test]
fn devices_in_volumes_cannot_be_used() {
    let rootfs = Rootfs::busybox();
    let vol = tempfile::tempdir().unwrap();
    let (mut sandbox, log) = rootfs.sandbox();
    sandbox.mounts.push(BindMount {
        source: vol.path().into(),
        target: "/vol".into(),
        readonly: false,
    });
    let (status, out) = run_logged(
        &sandbox,
        &log,
        &sh("mknod /vol/k c 1 11 && echo x > /vol/k && echo WRITTEN; echo done"),
    );
    assert_eq!(status.code, 0, "{out}");
    assert!(!out.contains("WRITTEN") && out.contains("done"), "{out}");
}

#[test]
fn dev_tty_works_with_a_pty() {
    let rootfs = Rootfs::busybox();
    let (mut sandbox, log) = rootfs.sandbox();
    sandbox.stdio = Stdio::Pty {
        log: Some(log.clone()),
    };
    let (status, out) = run_logged(&sandbox, &log, &sh("echo via-tty > /dev/tty"));
    assert_eq!(status.code, 0, "{out}");
    assert!(out.contains("via-tty"), "{out}");
}

#[test]
fn read_only_volume_submounts_are_read_only() {
    let rootfs = Rootfs::busybox();
    let vol = tempfile::tempdir().unwrap();
    let _sub = TmpfsMount::new(&vol.path().join("sub"));
    let (mut sandbox, log) = rootfs.sandbox();
    sandbox.mounts.push(BindMount {
        source: vol.path().into(),
        target: "/vol".into(),
        readonly: true,
    });
    let (status, out) = run_logged(
        &sandbox,
        &log,
        &sh("echo x > /vol/top; echo x > /vol/sub/file; ls /vol/sub; echo done"),
    );
    assert_eq!(status.code, 0, "{out}");
    assert!(out.contains("done"), "{out}");
    assert_eq!(out.matches("Read-only file system").count(), 2, "{out}");
    assert!(!vol.path().join("sub/file").exists());
    assert!(!vol.path().join("top").exists());
}

/// `pid session tty_nr` of the shell, then whether /dev/tty could be opened, into FILE.
const SESSION_PROBE: &str = "set -- $(sed 's/.*) //' /proc/$$/stat); \
     echo \"$$ $4 $5\" > FILE; (exec 3</dev/tty) 2>/dev/null && echo TTY-OPENED >> FILE; true";

fn assert_own_session_without_tty(report: &str) {
    let first: Vec<&str> = report.lines().next().unwrap_or("").split(' ').collect();
    assert_eq!(first.len(), 3, "{report}");
    assert_eq!(
        first[0], first[1],
        "the shell leads its own session: {report}"
    );
    assert_eq!(first[2], "0", "no controlling terminal: {report}");
    assert!(!report.contains("TTY-OPENED"), "{report}");
}

#[test]
fn container_process_has_no_controlling_terminal_in_every_stdio_mode() {
    let rootfs = Rootfs::busybox();
    for stdio in [Stdio::Inherit, Stdio::NullStdin, Stdio::Log("LOG".into())] {
        let (mut sandbox, log) = rootfs.sandbox();
        sandbox.stdio = match stdio {
            Stdio::Log(_) => Stdio::Log(log.clone()),
            other => other,
        };
        let status = rbuild_runner::run(
            &sandbox,
            &sh(&SESSION_PROBE.replace("FILE", "/tmp/session")),
        )
        .unwrap();
        assert_eq!(status.code, 0);
        let report = std::fs::read_to_string(rootfs.path().join("tmp/session")).unwrap();
        assert_own_session_without_tty(&report);
    }
}

#[test]
fn exec_process_has_no_controlling_terminal() {
    let rootfs = Rootfs::busybox();
    let (sandbox, _log) = rootfs.sandbox();
    let running = rbuild_runner::spawn(&sandbox, &sh("exec sleep 30")).unwrap();
    let status = rbuild_runner::exec(
        running.init_pid(),
        running.cgroup(),
        &sh(&SESSION_PROBE.replace("FILE", "/tmp/exec-session")),
        &Stdio::Inherit,
    )
    .unwrap();
    assert_eq!(status.code, 0);
    let report = std::fs::read_to_string(rootfs.path().join("tmp/exec-session")).unwrap();
    assert_own_session_without_tty(&report);
}

#[test]
fn read_only_rootfs_submounts_are_read_only() {
    let rootfs = Rootfs::busybox();
    let _sub = TmpfsMount::new(&rootfs.path().join("mnt"));
    let (mut sandbox, log) = rootfs.sandbox();
    sandbox.readonly_rootfs = true;
    let (status, out) = run_logged(
        &sandbox,
        &log,
        &sh("echo x > /top; echo x > /mnt/file; echo x > /dev/shm/ok && echo SHM-OK; echo done"),
    );
    assert_eq!(status.code, 0, "{out}");
    assert!(out.contains("done") && out.contains("SHM-OK"), "{out}");
    assert_eq!(out.matches("Read-only file system").count(), 2, "{out}");
    assert!(!rootfs.path().join("mnt/file").exists());
}

#[test]
fn exec_process_gets_none_of_the_callers_fds() {
    use std::os::fd::{AsRawFd, OwnedFd};
    let rootfs = Rootfs::busybox();
    // Without O_CLOEXEC: only the explicit close after fork keeps them out.
    let _leaks: Vec<OwnedFd> = (0..4)
        .map(|_| {
            let fd: OwnedFd = std::fs::File::open(rootfs.path()).unwrap().into();
            // SAFETY: clearing FD_CLOEXEC on our own fd.
            unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_SETFD, 0) };
            fd
        })
        .collect();
    let (sandbox, _log) = rootfs.sandbox();
    let running = rbuild_runner::spawn(&sandbox, &sh("exec sleep 30")).unwrap();
    let exec_log = tempfile::NamedTempFile::new().unwrap();
    let status = rbuild_runner::exec(
        running.init_pid(),
        running.cgroup(),
        &rbuild_runner::ProcessSpec {
            args: vec!["ls".into(), "/proc/self/fd".into()],
            env: vec!["PATH=/bin".into()],
            ..Default::default()
        },
        &Stdio::Log(exec_log.path().into()),
    )
    .unwrap();
    let out = std::fs::read_to_string(exec_log.path()).unwrap();
    assert_eq!(status.code, 0, "{out}");
    // ls's own directory fd is the only extra one.
    let fds: Vec<&str> = out.split_whitespace().collect();
    assert_eq!(fds.len(), 4, "{out}");
    assert_eq!(&fds[..3], ["0", "1", "2"], "{out}");
}

#[test]
fn user_ids_of_2_pow_31_and_above_are_refused() {
    let rootfs = Rootfs::busybox();
    for user in ["4294967295", "0:4294967295", "2147483648"] {
        let (sandbox, _log) = rootfs.sandbox();
        let mut p = sh("id");
        p.user = user.into();
        let e = rbuild_runner::run(&sandbox, &p).unwrap_err().to_string();
        assert!(e.contains("out of range"), "{user}: {e}");
    }
}

#[test]
fn inheritable_and_ambient_capabilities_are_empty() {
    let rootfs = Rootfs::busybox();
    let (status, out) = rootfs.sh("grep -E 'CapInh|CapAmb|CapEff' /proc/self/status");
    assert_eq!(status.code, 0, "{out}");
    assert!(out.contains("CapInh:\t0000000000000000"), "{out}");
    assert!(out.contains("CapAmb:\t0000000000000000"), "{out}");
    assert!(out.contains("CapEff:\t00000000a80425fb"), "{out}");
}

#[test]
fn seccomp_filter_refuses_new_user_namespaces() {
    let rootfs = Rootfs::busybox();
    let (status, out) = rootfs
        .sh("grep Seccomp: /proc/self/status; unshare -U true && echo USERNS-CREATED; echo done");
    assert_eq!(status.code, 0, "{out}");
    assert!(out.contains("Seccomp:\t2"), "{out}");
    assert!(!out.contains("USERNS-CREATED"), "{out}");
    assert!(out.contains("Operation not permitted"), "{out}");
    assert!(out.contains("done"), "{out}");
    // Ordinary process creation (fork, clone without CLONE_NEWUSER) still works.
    let (status, out) = rootfs.sh("echo $(echo nested) | cat; sleep 0 & wait");
    assert_eq!(status.code, 0, "{out}");
    assert!(out.contains("nested"), "{out}");
}

#[test]
fn freeze_stops_every_process_until_the_guard_is_dropped() {
    let rootfs = Rootfs::busybox();
    let (sandbox, _log) = rootfs.sandbox();
    let running = rbuild_runner::spawn(
        &sandbox,
        &sh("i=0; while true; do i=$((i+1)); echo $i > /tmp/count; done"),
    )
    .unwrap();
    let count = rootfs.path().join("tmp/count");
    let read = || std::fs::read_to_string(&count).unwrap_or_default();
    let changes = |within_ms: u64| {
        let before = read();
        let deadline = std::time::Instant::now() + std::time::Duration::from_millis(within_ms);
        while std::time::Instant::now() < deadline {
            let now = read();
            if !now.is_empty() && now != before {
                return true;
            }
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
        false
    };
    assert!(changes(5000), "the loop runs");
    let cgroup = running.cgroup().expect("a cgroup as root");
    {
        let _frozen = cgroup.freeze().unwrap();
        assert!(!changes(300), "nothing runs while frozen");
    }
    assert!(changes(5000), "the loop runs again after the thaw");
}

/// A cgroup v2 directory below this process's own unified cgroup; removed on drop.
struct UnifiedCgroup(std::path::PathBuf);

impl UnifiedCgroup {
    fn new() -> Option<UnifiedCgroup> {
        let own = std::fs::read_to_string("/proc/self/cgroup").ok()?;
        let rel = own.lines().find_map(|l| l.strip_prefix("0::"))?;
        let base = ["/sys/fs/cgroup/unified", "/sys/fs/cgroup"]
            .iter()
            .map(std::path::Path::new)
            .find(|b| b.join("cgroup.procs").exists() && b.join("cgroup.controllers").exists())?;
        let dir = base
            .join(rel.trim_start_matches('/'))
            .join(format!("rbuild-devtest-{}", std::process::id()));
        std::fs::create_dir(&dir).ok()?;
        Some(UnifiedCgroup(dir))
    }
}

impl Drop for UnifiedCgroup {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir(&self.0);
    }
}

#[test]
fn v2_device_program_allows_only_the_standard_devices() {
    use std::os::unix::process::CommandExt;
    let Some(cg) = UnifiedCgroup::new() else {
        eprintln!("no writable cgroup v2 hierarchy on this host");
        return;
    };
    rbuild_runner::cgroup::devices::restrict_devices_v2(&cg.0).unwrap();
    let procs = cg.0.join("cgroup.procs");
    let dir = tempfile::tempdir().unwrap();
    let script = format!(
        "cd {}; head -c4 /dev/zero | wc -c; echo x > /dev/null && echo NULL-OK; \
         (exec 3</dev/kmsg) 2>/dev/null && echo KMSG-OPENED; \
         mknod blk b 7 0 && echo MKNOD-OK; (exec 3<blk) 2>/dev/null && echo BLOCK-OPENED; true",
        dir.path().display()
    );
    let mut cmd = std::process::Command::new("/bin/busybox");
    cmd.args(["sh", "-c", &script]);
    // SAFETY: the child only writes its pid to a file before exec.
    unsafe {
        cmd.pre_exec(move || std::fs::write(&procs, std::process::id().to_string()));
    }
    let out = cmd.output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}");
    assert!(
        text.contains("NULL-OK") && text.contains("MKNOD-OK"),
        "{text}"
    );
    assert_eq!(text.lines().next(), Some("4"), "{text}");
    assert!(!text.contains("KMSG-OPENED"), "{text}");
    assert!(!text.contains("BLOCK-OPENED"), "{text}");
}
