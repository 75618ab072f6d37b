//! A private Docker engine for interop tests: Debian's `dockerd` (package docker.io) with its own
//! containerd, data root, exec root, pid file, unix socket, daemon config and cgroup parent, all in
//! one temporary directory, so several test processes can each run one at the same time and none
//! of them touches a system Docker or containerd. No iptables rules, no bridge, no ip forwarding.
//!
//! On drop: dockerd gets SIGTERM (SIGKILL after a bound), then containerd; any process still
//! running with the temporary directory in its command line (containerd shims) is killed; every
//! mount below the directory is lazily unmounted; the cgroups made below the test's own cgroup are
//! removed; then the directory goes.
//!
//! Use from a test file with `#[path = "common/dockerd.rs"] mod dockerd;`.
#![allow(dead_code)]

use std::fs;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

use crate::common::unmount_below;

/// Where Debian's docker.io package installs the engine.
pub const DOCKERD_BIN: &str = "/usr/sbin/dockerd";
/// Debian's containerd (a dependency of docker.io).
pub const CONTAINERD_BIN: &str = "/usr/bin/containerd";
/// The docker client of the docker.io package (the one matching the engine).
pub const DOCKER_CLIENT_BIN: &str = "/usr/bin/docker";

/// How long the engine may take to answer `docker info`.
const START_TIMEOUT: Duration = Duration::from_secs(40);
/// How long dockerd and containerd get to exit after SIGTERM before SIGKILL.
const STOP_TIMEOUT: Duration = Duration::from_secs(15);

/// A running private Docker engine; stopped and cleaned up on drop.
pub struct TestDockerd {
    dir: tempfile::TempDir,
    containerd: Option<Child>,
    dockerd: Option<Child>,
    socket: PathBuf,
    client: PathBuf,
    cgroup_parent: String,
}

impl TestDockerd {
    /// Starts containerd and dockerd, trusting `insecure_registries` (`host:port`) over plain
    /// HTTP, and waits until `docker info` answers. Panics naming the missing package when the
    /// engine is not installed, or with the daemon logs when it does not come up.
    pub fn start(insecure_registries: &[&str]) -> TestDockerd {
        for (bin, what) in [
            (DOCKERD_BIN, "dockerd"),
            (CONTAINERD_BIN, "containerd"),
            (DOCKER_CLIENT_BIN, "the docker client"),
        ] {
            assert!(
                Path::new(bin).exists(),
                "{bin} ({what}) not found: install the Debian package docker.io \
                 (`apt-get install -y docker.io`; scripts/install-deps installs it)"
            );
        }
        // Short prefix: unix socket paths are limited to 108 bytes.
        let dir = tempfile::Builder::new()
            .prefix("rbd-")
            .tempdir_in("/tmp")
            .expect("create dockerd temp dir");
        let d = dir.path().to_path_buf();
        let name = d
            .file_name()
            .expect("temp dir name")
            .to_string_lossy()
            .into_owned();
        for sub in [
            "data",
            "exec",
            "containerd-root",
            "containerd-state",
            "client",
        ] {
            fs::create_dir_all(d.join(sub)).expect("create dockerd dirs");
        }
        let mut guard = TestDockerd {
            socket: d.join("docker.sock"),
            client: PathBuf::from(DOCKER_CLIENT_BIN),
            cgroup_parent: format!("rbuild-test-{name}"),
            containerd: None,
            dockerd: None,
            dir,
        };
        guard.start_containerd();
        guard.start_dockerd(insecure_registries);
        guard
    }

    fn path(&self, rel: &str) -> PathBuf {
        self.dir.path().join(rel)
    }

    /// Our own containerd, so a system containerd (which dockerd would otherwise pick up at
    /// /run/containerd/containerd.sock) is never shared between test processes.
    fn start_containerd(&mut self) {
        let p = |rel: &str| self.path(rel).display().to_string();
        let config = format!(
            "version = 2\nroot = \"{}\"\nstate = \"{}\"\n\
             disabled_plugins = [\"io.containerd.grpc.v1.cri\"]\n\
             [grpc]\n  address = \"{}\"\n[ttrpc]\n  address = \"{}\"\n[debug]\n  address = \"\"\n\
             [plugins.\"io.containerd.internal.v1.opt\"]\n  path = \"{}\"\n",
            p("containerd-root"),
            p("containerd-state"),
            p("containerd.sock"),
            p("containerd.sock.ttrpc"),
            p("containerd-opt"),
        );
        fs::write(self.path("containerd.toml"), config).expect("write containerd config");
        let child = spawn_logged(
            Command::new(CONTAINERD_BIN)
                .arg("--config")
                .arg(self.path("containerd.toml")),
            &self.path("containerd.log"),
        );
        self.containerd = Some(child);
        let deadline = Instant::now() + START_TIMEOUT;
        while !self.path("containerd.sock").exists() {
            if let Some(status) = self.containerd.as_mut().and_then(|c| c.try_wait().ok()?) {
                panic!(
                    "containerd exited with {status} before listening:\n{}",
                    tail(&self.path("containerd.log"))
                );
            }
            assert!(
                Instant::now() < deadline,
                "containerd did not create its socket within {START_TIMEOUT:?}:\n{}",
                tail(&self.path("containerd.log"))
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn start_dockerd(&mut self, insecure_registries: &[&str]) {
        // The trust key would otherwise go to /etc/docker/key.json; it is only settable here.
        let config = serde_json::json!({ "deprecated-key-path": self.path("key.json") });
        fs::write(self.path("daemon.json"), config.to_string()).expect("write daemon.json");
        let mut cmd = Command::new(DOCKERD_BIN);
        cmd.arg("--config-file")
            .arg(self.path("daemon.json"))
            .arg("--data-root")
            .arg(self.path("data"))
            .arg("--exec-root")
            .arg(self.path("exec"))
            .arg("--pidfile")
            .arg(self.path("docker.pid"))
            .arg("-H")
            .arg(format!("unix://{}", self.socket.display()))
            .arg("--containerd")
            .arg(self.path("containerd.sock"))
            .args([
                "--iptables=false",
                "--ip6tables=false",
                "--ip-forward=false",
                "--ip-masq=false",
                "--bridge=none",
                "--storage-driver",
                storage_driver(),
                "--shutdown-timeout",
                "3",
            ])
            // Relative: runc puts containers below its own cgroup (= this test's) per hierarchy.
            .arg("--cgroup-parent")
            .arg(&self.cgroup_parent);
        for registry in insecure_registries {
            cmd.arg("--insecure-registry").arg(registry);
        }
        self.dockerd = Some(spawn_logged(&mut cmd, &self.path("dockerd.log")));
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            if let Some(status) = self.dockerd.as_mut().and_then(|c| c.try_wait().ok()?) {
                panic!(
                    "dockerd exited with {status} during start-up:\n{}",
                    tail(&self.path("dockerd.log"))
                );
            }
            let info = self.docker(&["info", "--format", "{{.ServerVersion}}"]);
            if info.status.success() {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "dockerd did not answer `docker info` within {START_TIMEOUT:?}: {}\n{}",
                String::from_utf8_lossy(&info.stderr),
                tail(&self.path("dockerd.log"))
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// The engine's unix socket.
    pub fn socket(&self) -> &Path {
        &self.socket
    }

    /// A `docker -H unix://SOCKET` command with a private client config dir.
    pub fn command(&self) -> Command {
        let mut cmd = Command::new(&self.client);
        cmd.arg("-H")
            .arg(format!("unix://{}", self.socket.display()))
            .env("DOCKER_CONFIG", self.path("client"))
            .env_remove("DOCKER_HOST")
            .env_remove("DOCKER_CONTEXT")
            .stdin(Stdio::null());
        cmd
    }

    /// Runs `docker ARGS...` against this engine.
    pub fn docker(&self, args: &[&str]) -> Output {
        self.command()
            .args(args)
            .output()
            .unwrap_or_else(|e| panic!("run {}: {e}", self.client.display()))
    }

    /// Runs `docker ARGS...`, asserts success (showing the daemon log otherwise), returns stdout.
    pub fn ok(&self, args: &[&str]) -> String {
        let out = self.docker(args);
        assert!(
            out.status.success(),
            "docker {}\nexit: {:?}\nstdout:\n{}\nstderr:\n{}\ndockerd log:\n{}",
            args.join(" "),
            out.status.code(),
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr),
            self.log()
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// The last lines of the dockerd log.
    pub fn log(&self) -> String {
        tail(&self.path("dockerd.log"))
    }

    fn stop(&mut self) {
        for child in [self.dockerd.take(), self.containerd.take()]
            .into_iter()
            .flatten()
        {
            terminate(child);
        }
        // With the trailing slash, so another instance's directory never matches by prefix.
        let dir = format!("{}/", self.dir.path().display());
        kill_processes_mentioning(&dir);
        unmount_below(self.dir.path());
        remove_cgroups(&self.cgroup_parent);
    }
}

impl Drop for TestDockerd {
    fn drop(&mut self) {
        self.stop();
        // The TempDir field removes the directory after this.
    }
}

/// overlay2 where the kernel has overlayfs and /tmp is not itself an overlay (overlay on overlay
/// fails), else vfs (slow, but works anywhere).
fn storage_driver() -> &'static str {
    let kernel_has_overlay = fs::read_to_string("/proc/filesystems")
        .map(|f| f.lines().any(|l| l.trim_end().ends_with("overlay")))
        .unwrap_or(false);
    let tmp_is_overlay = nix::sys::statfs::statfs("/tmp")
        .map(|s| s.filesystem_type() == nix::sys::statfs::OVERLAYFS_SUPER_MAGIC)
        .unwrap_or(true);
    if kernel_has_overlay && !tmp_is_overlay {
        "overlay2"
    } else {
        "vfs"
    }
}

/// Spawns `cmd` with stdout and stderr going to `log`, killed by the kernel if the spawning
/// thread dies without running the guard's drop.
fn spawn_logged(cmd: &mut Command, log: &Path) -> Child {
    let file = fs::File::create(log).expect("create daemon log");
    cmd.stdin(Stdio::null())
        .stdout(file.try_clone().expect("dup log"))
        .stderr(file);
    // SAFETY: prctl is async-signal-safe; nothing else runs between fork and exec.
    unsafe {
        cmd.pre_exec(|| {
            nix::sys::prctl::set_pdeathsig(Signal::SIGKILL).map_err(std::io::Error::from)
        });
    }
    cmd.spawn()
        .unwrap_or_else(|e| panic!("start {:?} (package docker.io): {e}", cmd.get_program()))
}

/// SIGTERM, then SIGKILL once STOP_TIMEOUT has passed; always reaps the child.
fn terminate(mut child: Child) {
    let pid = Pid::from_raw(child.id() as i32);
    let _ = kill(pid, Signal::SIGTERM);
    let deadline = Instant::now() + STOP_TIMEOUT;
    while Instant::now() < deadline {
        if let Ok(Some(_)) = child.try_wait() {
            return;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let _ = child.kill();
    let _ = child.wait();
}

/// SIGKILLs every process (other than this one) whose command line mentions `needle`: the
/// containerd shims of our containerd carry its socket path in their arguments.
fn kill_processes_mentioning(needle: &str) {
    let me = std::process::id();
    let Ok(entries) = fs::read_dir("/proc") else {
        return;
    };
    for entry in entries.flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|s| s.parse::<u32>().ok())
        else {
            continue;
        };
        if pid == me {
            continue;
        }
        let Ok(cmdline) = fs::read(entry.path().join("cmdline")) else {
            continue;
        };
        if String::from_utf8_lossy(&cmdline).contains(needle) {
            let _ = kill(Pid::from_raw(pid as i32), Signal::SIGKILL);
        }
    }
}

/// Removes `name` (and anything below it, deepest first) under this process's own cgroup in
/// every mounted cgroup hierarchy: runc created the containers' cgroups there.
fn remove_cgroups(name: &str) {
    let Ok(own) = fs::read_to_string("/proc/self/cgroup") else {
        return;
    };
    let Ok(info) = fs::read_to_string("/proc/self/mountinfo") else {
        return;
    };
    for line in info.lines() {
        let Some((pre, post)) = line.split_once(" - ") else {
            continue;
        };
        let pre: Vec<&str> = pre.split(' ').collect();
        let post: Vec<&str> = post.split(' ').collect();
        let (Some(root), Some(mount_point), Some(fstype), Some(opts)) =
            (pre.get(3), pre.get(4), post.first(), post.get(2))
        else {
            continue;
        };
        // The /proc/self/cgroup line of this hierarchy: by controller list (v1) or "0::" (v2).
        let own_path = match *fstype {
            "cgroup2" => own
                .lines()
                .find_map(|l| l.strip_prefix("0::").map(str::to_string)),
            "cgroup" => own.lines().find_map(|l| {
                let mut parts = l.splitn(3, ':');
                let (_, ctrls, path) = (parts.next()?, parts.next()?, parts.next()?);
                let opts: Vec<&str> = opts.split(',').collect();
                let all = !ctrls.is_empty() && ctrls.split(',').all(|c| opts.contains(&c));
                all.then(|| path.to_string())
            }),
            _ => None,
        };
        let Some(own_path) = own_path else {
            continue;
        };
        let rel = own_path
            .strip_prefix(root)
            .unwrap_or(&own_path)
            .trim_start_matches('/');
        let base = Path::new(mount_point).join(rel).join(name);
        if !base.is_dir() {
            continue;
        }
        let mut dirs: Vec<PathBuf> = walkdir::WalkDir::new(&base)
            .into_iter()
            .flatten()
            .filter(|e| e.file_type().is_dir())
            .map(|e| e.into_path())
            .collect();
        dirs.sort_by_key(|d| std::cmp::Reverse(d.as_os_str().len()));
        for d in dirs {
            let _ = fs::remove_dir(d);
        }
    }
}

fn tail(path: &Path) -> String {
    let text = fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(30)..].join("\n")
}
