//! The private network of a sandbox ([`crate::Network::Private`]): its own network namespace,
//! connected to the outside by slirp4netns, the user-mode NAT rootless podman and buildah use.
//! Outbound TCP and UDP work (DNS through slirp's forwarder), but the host's loopback services
//! are out of reach and nothing on the host changes: no bridge, no firewall rule. slirp4netns
//! exits with the sandbox, or with this process if it dies (its exit pipe closes).

use std::fs;
use std::io::Read;
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use crate::error::{Result, RunnerError};

/// The slirp4netns program.
pub const PROGRAM: &str = "slirp4netns";

/// Where slirp4netns's DNS forwarder answers inside the namespace.
pub const DNS: &str = "10.0.2.3";

/// How long slirp4netns may take to configure the namespace.
const READY_TIMEOUT: Duration = Duration::from_secs(10);

/// The TUN device slirp4netns opens (as the caller: a user needs it readable and writable).
const TUN: &str = "/dev/net/tun";

/// Whether a private network can be made: slirp4netns is installed (in PATH) and this process
/// may open the TUN device.
pub fn available() -> bool {
    let installed = std::env::var_os("PATH").is_some_and(|path| {
        std::env::split_paths(&path).any(|dir| {
            fs::metadata(dir.join(PROGRAM))
                .is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        })
    });
    installed
        && rustix::fs::access(
            TUN,
            rustix::fs::Access::READ_OK | rustix::fs::Access::WRITE_OK,
        )
        .is_ok()
}

/// The resolv.conf and hosts a private sandbox sees, in a private temporary directory.
#[derive(Debug)]
pub(crate) struct NetworkFiles {
    dir: PathBuf,
}

impl NetworkFiles {
    /// Writes the files (slirp's DNS forwarder as the only nameserver).
    pub(crate) fn create(hostname: &str) -> Result<NetworkFiles> {
        let io = |path: &Path, e: std::io::Error| RunnerError::Io {
            path: path.to_path_buf(),
            source: e,
        };
        let base = std::env::temp_dir();
        crate::stale::remove_dirs_of_dead_processes(&base, "rbuild-net-");
        let dir = (0..16)
            .map(|i| base.join(format!("rbuild-net-{}-{}", std::process::id(), nonce(i))))
            .find(|d| fs::DirBuilder::new().mode(0o700).create(d).is_ok())
            .ok_or_else(|| {
                io(
                    &base,
                    std::io::Error::other("cannot create a private directory for resolv.conf"),
                )
            })?;
        let files = NetworkFiles { dir };
        let resolv = files.resolv_conf();
        fs::write(&resolv, format!("nameserver {DNS}\n")).map_err(|e| io(&resolv, e))?;
        let hosts = files.hosts();
        let name = if hostname.is_empty() {
            "localhost"
        } else {
            hostname
        };
        fs::write(
            &hosts,
            format!("127.0.0.1\tlocalhost {name}\n::1\tlocalhost ip6-localhost ip6-loopback\n"),
        )
        .map_err(|e| io(&hosts, e))?;
        Ok(files)
    }

    /// The directory holding both files.
    pub(crate) fn dir(&self) -> &Path {
        &self.dir
    }

    /// The generated resolv.conf.
    pub(crate) fn resolv_conf(&self) -> PathBuf {
        self.dir.join("resolv.conf")
    }

    /// The generated hosts file.
    pub(crate) fn hosts(&self) -> PathBuf {
        self.dir.join("hosts")
    }
}

impl Drop for NetworkFiles {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.dir);
    }
}

/// A per-call varying number for temporary names (not secret: the directory is created
/// exclusively with mode 0700, and a name taken by someone else is skipped).
fn nonce(i: u32) -> u64 {
    let t = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos() as u64);
    t ^ (u64::from(i) << 32)
}

/// A running slirp4netns serving one sandbox's network namespace.
#[derive(Debug)]
pub(crate) struct Slirp {
    child: Child,
    /// Closing it (drop, or this process's death) makes slirp4netns exit.
    _exit: OwnedFd,
}

impl Slirp {
    /// Connects the network namespace of process `pid` (already in it) and waits until its
    /// interface is configured. `rootless`: the namespace belongs to the process's user
    /// namespace, which slirp4netns must join.
    pub(crate) fn start(pid: i32, rootless: bool) -> Result<Slirp> {
        let sys = |what: &str| {
            let what = what.to_string();
            move |e: nix::Error| RunnerError::Sys { what, source: e }
        };
        let (ready_r, ready_w) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC)
            .map_err(sys("pipe for slirp4netns"))?;
        let (exit_r, exit_w) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC)
            .map_err(sys("pipe for slirp4netns"))?;
        let mut command = Command::new(PROGRAM);
        command.args([
            "--configure",
            "--mtu=65520",
            "--disable-host-loopback",
            // As podman runs it: slirp4netns parses the container's packets, so it runs under
            // a seccomp filter and (as root) in a mount namespace of its own with every
            // capability dropped but CAP_NET_BIND_SERVICE. Without root it has no capability
            // to drop, and could not make the namespace ('parent failed').
            "--enable-seccomp",
            &format!("--ready-fd={}", ready_w.as_raw_fd()),
            &format!("--exit-fd={}", exit_r.as_raw_fd()),
        ]);
        if !rootless {
            command.arg("--enable-sandbox");
        }
        if rootless {
            command.arg(format!("--userns-path=/proc/{pid}/ns/user"));
            command.args(["--netns-type=path", &format!("/proc/{pid}/ns/net")]);
        } else {
            command.arg(pid.to_string());
        }
        command.arg("tap0");
        let inherit = [ready_w.as_raw_fd(), exit_r.as_raw_fd()];
        // With --enable-sandbox started from the host's mount namespace, slirp4netns broke
        // other software's mounts: containers of a dockerd started meanwhile failed with
        // 'exec: "sh": executable file not found' (tests/interop_docker.rs next to the
        // private-network tests: 4 of 4 runs failed). Its sandbox makes only "/" private
        // before it pivots and detaches the old root. So as root it starts in a mount
        // namespace of its own whose mounts are all private (0 of 3 runs failed since).
        let private_mounts = !rootless;
        // SAFETY: between fork and exec only fcntl, unshare and mount (async-signal-safe
        // system calls) on this child's own fds and namespaces.
        unsafe {
            command.pre_exec(move || {
                for fd in inherit {
                    if libc::fcntl(fd, libc::F_SETFD, 0) != 0 {
                        return Err(std::io::Error::last_os_error());
                    }
                }
                if private_mounts
                    && (libc::unshare(libc::CLONE_NEWNS) != 0
                        || libc::mount(
                            c"none".as_ptr(),
                            c"/".as_ptr(),
                            std::ptr::null(),
                            libc::MS_REC | libc::MS_PRIVATE,
                            std::ptr::null(),
                        ) != 0)
                {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let mut child = command
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| {
                RunnerError::Setup(format!(
                    "starting {PROGRAM} for the private network: {e} (install slirp4netns, or \
                     use --network host or none)"
                ))
            })?;
        drop((ready_w, exit_r));
        let ready = wait_readable(&ready_r, READY_TIMEOUT);
        let mut byte = [0u8; 1];
        if ready && matches!(nix::unistd::read(&ready_r, &mut byte), Ok(1)) {
            // Its stderr, kept for the error above, is drained from now on: a full pipe would
            // block slirp4netns and stall the network.
            if let Some(mut stderr) = child.stderr.take() {
                std::thread::spawn(move || std::io::copy(&mut stderr, &mut std::io::sink()));
            }
            return Ok(Slirp {
                child,
                _exit: exit_w,
            });
        }
        let _ = child.kill();
        let _ = child.wait();
        let mut stderr = String::new();
        if let Some(mut e) = child.stderr.take() {
            let _ = e.read_to_string(&mut stderr);
        }
        Err(RunnerError::Setup(format!(
            "{PROGRAM} did not set up the private network: {}",
            stderr.trim().lines().last().unwrap_or("no message")
        )))
    }
}

impl Drop for Slirp {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Whether `fd` becomes readable (or its writers all close) within `timeout`.
fn wait_readable(fd: &OwnedFd, timeout: Duration) -> bool {
    use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
    use std::os::fd::AsFd;
    let mut fds = [PollFd::new(fd.as_fd(), PollFlags::POLLIN)];
    let ms = PollTimeout::try_from(timeout.as_millis() as i32).unwrap_or(PollTimeout::MAX);
    matches!(poll(&mut fds, ms), Ok(n) if n > 0)
}
