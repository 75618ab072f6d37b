//! `run`: the sandbox sequence of DESIGN.md, from fork to exec, and waiting for the result.

use crate::cgroup::Cgroup;
use crate::error::{Result, RunnerError, SysContext};
use crate::launch::Launch;
use crate::process::{self, ChildStdio, PtyMaster};
use crate::resolve;
use crate::rootfs;
use crate::spec::{Network, ProcessSpec, SandboxSpec};
use crate::syscall::{LinuxSyscall, Syscall};
use crate::tee::TeePipes;
use nix::sched::CloneFlags;
use nix::sys::signal::{SigSet, Signal};
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU32, Ordering};

/// How a sandboxed process ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ExitStatus {
    /// Exit code as a shell reports it (128 + signal when killed).
    pub code: i32,
    /// The signal that killed the process, if any.
    pub signal: Option<i32>,
    /// The kernel's OOM killer killed a process of the sandbox.
    pub oom_killed: bool,
}

/// A started sandbox (or exec'd process). Dropping it without [`Running::wait`] kills it and
/// cleans up.
#[derive(Debug)]
pub struct Running {
    outer: i32,
    init: i32,
    cgroup: Option<Cgroup>,
    owns_cgroup: bool,
    rootfs: PathBuf,
    created: resolve::Created,
    pty: Option<PtyMaster>,
    tee: Option<TeePipes>,
    /// slirp4netns of a private network, and the resolv.conf and hosts it binds.
    slirp: Option<crate::slirp::Slirp>,
    net_files: Option<crate::slirp::NetworkFiles>,
    done: bool,
}

static SEQ: AtomicU32 = AtomicU32::new(0);

/// A sandbox without a cgroup name gets `<this><pid>-<n>`.
const DEFAULT_CGROUP_PREFIX: &str = "rbuild-";

/// Runs `process` in a new sandbox and waits for it (see [`spawn`] and [`Running::wait`]).
pub fn run(sandbox: &SandboxSpec, process: &ProcessSpec) -> Result<ExitStatus> {
    spawn(sandbox, process)?.wait()
}

/// Starts `process` in a new sandbox; returns once it has been executed (setup errors and an
/// unknown command are returned as errors).
pub fn spawn(sandbox: &SandboxSpec, process: &ProcessSpec) -> Result<Running> {
    let root_fd = resolve::open_root(&sandbox.rootfs)?;
    let launch = Launch::prepare(process, &root_fd)?;
    let mut running = Running {
        outer: 0,
        init: 0,
        cgroup: None,
        owns_cgroup: true,
        rootfs: sandbox.rootfs.clone(),
        created: resolve::Created::default(),
        pty: None,
        tee: None,
        slirp: None,
        net_files: None,
        done: false,
    };
    for (rel, kind) in rootfs::mount_points(sandbox) {
        resolve::open_in_root(&root_fd, &rel, kind, &mut running.created)?;
    }
    for (rel, kind) in rootfs::host_network_files(sandbox) {
        let _ = resolve::open_in_root(&root_fd, &rel, kind, &mut running.created);
    }
    drop(root_fd);
    // Once per process: the cgroups that sandboxes of killed processes left go.
    static SWEPT: std::sync::Once = std::sync::Once::new();
    SWEPT.call_once(|| {
        crate::cgroup::remove_orphaned(DEFAULT_CGROUP_PREFIX);
    });
    let name = sandbox.cgroup_name.clone().unwrap_or_else(|| {
        format!(
            "{DEFAULT_CGROUP_PREFIX}{}-{}",
            std::process::id(),
            SEQ.fetch_add(1, Ordering::Relaxed)
        )
    });
    let is_root = nix::unistd::geteuid().is_root();
    running.cgroup = match Cgroup::create(&name, &sandbox.limits) {
        Ok(cg) => Some(cg),
        Err(_) if !is_root && sandbox.limits.is_empty() => None,
        Err(e) if !is_root => return Err(rootless_cgroup_error(&sandbox.limits, e)),
        Err(e) => return Err(e),
    };
    let (child_stdio, parent_stdio) = process::prepare_stdio(&sandbox.stdio)?;
    let (pid_r, pid_w) = process::pipe()?;
    let (err_r, err_w) = process::pipe()?;
    // The parent moves the container process into its cgroup while it sets up its mounts (a
    // cgroup migration waits for an RCU grace period); "go" says it is done.
    let (go_r, go_w) = process::pipe()?;
    let mut flags = CloneFlags::CLONE_NEWNS
        | CloneFlags::CLONE_NEWPID
        | CloneFlags::CLONE_NEWUTS
        | CloneFlags::CLONE_NEWIPC;
    if matches!(sandbox.network, Network::None | Network::Private) {
        flags |= CloneFlags::CLONE_NEWNET;
    }
    if sandbox.network == Network::Private {
        running.net_files = Some(crate::slirp::NetworkFiles::create(&sandbox.hostname)?);
    }
    let net_dir = running.net_files.as_ref().map(|f| f.dir().to_path_buf());
    let private = sandbox.network == Network::Private;
    if !is_root {
        flags |= CloneFlags::CLONE_NEWUSER;
    }
    let (uid, gid) = (nix::unistd::geteuid(), nix::unistd::getegid());
    let cgroup = running.cgroup.clone();
    let setup = || -> Result<()> {
        LinuxSyscall.unshare(flags)?;
        if !is_root {
            write_id_maps(uid.as_raw(), gid.as_raw())?;
        }
        Ok(())
    };
    let child = || -> (i32, String) {
        // The container process starts with no blocked or ignored signals, whatever the caller
        // blocks or ignores.
        process::restore_signals(&SigSet::empty());
        process::default_signal_dispositions();
        let r = (|| -> Result<()> {
            // SAFETY: closing this process's copy of the parent's end.
            unsafe { libc::close(go_w.as_raw_fd()) };
            process::new_session()?;
            process::apply_stdio(&child_stdio)?;
            process::close_fds_except(&[
                err_w.as_raw_fd(),
                go_r.as_raw_fd(),
                child_stdio.socket_fd(),
            ]);
            rootfs::setup_with(&LinuxSyscall, sandbox, net_dir.as_deref())?;
            if matches!(sandbox.network, Network::None | Network::Private) {
                crate::net::loopback_up()?;
            }
            let mut go = [0u8; 1];
            if (cgroup.is_some() || private) && !matches!(nix::unistd::read(&go_r, &mut go), Ok(1))
            {
                return Err(RunnerError::Setup(NOT_PLACED.into()));
            }
            if let ChildStdio::Pty { sock } = &child_stdio {
                process::attach_pty(sock)?;
            }
            Ok(())
        })();
        if let Err(e) = r {
            return (125, e.to_string());
        }
        let f = launch.exec();
        (f.code, f.message)
    };
    // SAFETY: the child only runs the prepared closures and exits or execs.
    running.outer = unsafe { process::fork_intermediate(&pid_w, &err_w, setup, child)? };
    drop((pid_w, err_w, child_stdio, go_r));
    let pid = process::read_pid(pid_r);
    if let Some(pid) = pid {
        running.init = pid;
        let placed = match &running.cgroup {
            Some(cg) => cg.add_process(pid),
            None => Ok(()),
        };
        let connected = placed.and_then(|()| {
            if private {
                running.slirp = Some(crate::slirp::Slirp::start(pid, !is_root)?);
            }
            Ok(())
        });
        if let Err(e) = connected {
            drop(go_w);
            running.finish();
            // The process may have failed its own setup first (a RUN --mount target that
            // cannot be mounted), and that is why it could not be placed in its cgroup ('No
            // such process') or network: its own message says what is wrong.
            return Err(match process::read_failure(err_r) {
                Some((code, message)) if !message.contains(NOT_PLACED) => {
                    process::failure_error(code, message)
                }
                _ => e,
            });
        }
        let _ = nix::unistd::write(&go_w, b"g");
    }
    drop(go_w);
    running.pty = parent_stdio.pty.and_then(process::PtyParent::receive);
    running.tee = parent_stdio.tee;
    let failure = process::read_failure(err_r);
    if let Some((code, message)) = failure {
        running.finish();
        return Err(process::failure_error(code, message));
    }
    if pid.is_none() {
        running.finish();
        return Err(RunnerError::Setup(
            "the sandbox process exited before starting the command".into(),
        ));
    }
    Ok(running)
}

/// The container process's error when the parent gave up placing it (see [`spawn`]).
const NOT_PLACED: &str = "the parent did not place the process in its cgroup or network";

fn write_id_maps(uid: u32, gid: u32) -> Result<()> {
    use crate::error::IoContext;
    std::fs::write("/proc/self/setgroups", "deny").at("/proc/self/setgroups")?;
    std::fs::write("/proc/self/uid_map", format!("0 {uid} 1")).at("/proc/self/uid_map")?;
    std::fs::write("/proc/self/gid_map", format!("0 {gid} 1")).at("/proc/self/gid_map")?;
    Ok(())
}

impl Running {
    /// Builds the handle for an exec'd process (no cgroup or mount points owned).
    pub(crate) fn for_exec(outer: i32, pty: Option<PtyMaster>, tee: Option<TeePipes>) -> Running {
        Running {
            outer,
            init: 0,
            cgroup: None,
            owns_cgroup: false,
            rootfs: PathBuf::new(),
            created: resolve::Created::default(),
            pty,
            tee,
            slirp: None,
            net_files: None,
            done: false,
        }
    }

    /// Sets the pid of the process signals are forwarded to.
    pub(crate) fn set_init(&mut self, pid: i32) {
        self.init = pid;
    }

    /// Marks this handle as done without cleanup (used on setup failure paths of exec).
    pub(crate) fn finish(&mut self) -> (i32, Option<i32>) {
        if self.done {
            return (0, None);
        }
        self.done = true;
        if self.init > 0 {
            let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(self.init), Signal::SIGKILL);
        }
        let status = if self.outer > 0 {
            process::exit_code(process::wait_blocking(self.outer))
        } else {
            (125, None)
        };
        if self.owns_cgroup {
            if let Some(cg) = &self.cgroup {
                let _ = cg.destroy();
            }
        }
        self.slirp.take();
        self.net_files.take();
        if !self.created.is_empty() {
            resolve::remove_created(&self.rootfs, &self.created);
        }
        status
    }

    /// Host pid of the container's first process (pid 1 inside).
    pub fn init_pid(&self) -> i32 {
        self.init
    }

    /// The sandbox's cgroup.
    pub fn cgroup(&self) -> Option<&Cgroup> {
        self.cgroup.as_ref()
    }

    /// Waits for the process, forwarding SIGINT/SIGTERM/SIGHUP/SIGQUIT to it and relaying the pty
    /// or copying the output pipes (to their end, so output written just before the exit is
    /// kept); then kills what is left, removes the cgroup and the created mount points. May be
    /// called on another thread than [`spawn`]; the signals are blocked in the waiting thread
    /// (and the output copiers it starts) only while it waits, so forwarding is complete in
    /// single-threaded callers (in others, a signal the kernel delivers to another thread takes
    /// its default action there).
    pub fn wait(mut self) -> Result<ExitStatus> {
        let status = self.wait_loop();
        let oom = self
            .cgroup
            .as_ref()
            .is_some_and(|cg| self.owns_cgroup && cg.oom_killed());
        let (code, signal) = match status {
            Ok(s) => s,
            Err(e) => {
                self.finish();
                return Err(e);
            }
        };
        self.outer = 0;
        self.init = 0;
        self.finish();
        Ok(ExitStatus {
            code,
            signal,
            oom_killed: oom,
        })
    }

    fn wait_loop(&mut self) -> Result<(i32, Option<i32>)> {
        // Signals are taken through a signalfd while this thread waits (and forwarded).
        let previous = process::block_signals()?;
        let result = self.wait_loop_blocked();
        process::restore_signals(&previous);
        result
    }

    fn wait_loop_blocked(&mut self) -> Result<(i32, Option<i32>)> {
        use nix::poll::{PollFd, PollFlags, PollTimeout};
        use nix::sys::signalfd::{SfdFlags, SignalFd};
        let sfd = SignalFd::with_flags(
            &process::wait_signals(),
            SfdFlags::SFD_CLOEXEC | SfdFlags::SFD_NONBLOCK,
        )
        .sys(|| "signalfd".into())?;
        let stdin = std::io::stdin();
        let interactive = self.pty.as_ref().is_some_and(|p| p.relay);
        let _raw = if interactive {
            RawMode::enable(stdin.as_fd())
        } else {
            None
        };
        let mut stdin_open = interactive;
        // A pidfd wakes us when the intermediate exits, even when SIGCHLD went to another thread.
        // SAFETY: pidfd_open on our own child; the fd is owned below.
        let raw = unsafe { libc::syscall(libc::SYS_pidfd_open, self.outer, 0) };
        if raw < 0 {
            return Err(nix::Error::last()).sys(|| format!("pidfd_open {}", self.outer));
        }
        // SAFETY: a fresh fd returned by the kernel.
        let pidfd = unsafe { <OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(raw as i32) };
        // Started here, with the forwarded signals blocked: the copier threads inherit the mask,
        // so no such signal is delivered to them.
        let copiers = match self.tee.take() {
            Some(tee) => Some(tee.start().map_err(|e| RunnerError::Io {
                path: "output copier thread".into(),
                source: e,
            })?),
            None => None,
        };
        let mut buf = vec![0u8; 32 * 1024];
        loop {
            if let Some(code) = self.try_reap() {
                self.drain_pty(&mut buf);
                if let Some(c) = copiers {
                    c.finish();
                }
                return Ok(code);
            }
            let mut fds = vec![
                PollFd::new(sfd.as_fd(), PollFlags::POLLIN),
                PollFd::new(pidfd.as_fd(), PollFlags::POLLIN),
            ];
            if let Some(p) = &self.pty {
                fds.push(PollFd::new(p.master.as_fd(), PollFlags::POLLIN));
                if stdin_open {
                    fds.push(PollFd::new(stdin.as_fd(), PollFlags::POLLIN));
                }
            }
            match nix::poll::poll(&mut fds, PollTimeout::NONE) {
                Ok(_) | Err(nix::Error::EINTR) => {}
                Err(e) => return Err(e).sys(|| "poll".into()),
            }
            let ready: Vec<bool> = fds
                .iter()
                .map(|f| f.revents().is_some_and(|r| !r.is_empty()))
                .collect();
            drop(fds);
            if ready[0] {
                while let Ok(Some(info)) = sfd.read_signal() {
                    let sig = info.ssi_signo as i32;
                    if sig == libc::SIGWINCH {
                        if let Some(p) = &self.pty {
                            process::copy_winsize(stdin.as_fd(), p.master.as_fd());
                        }
                    } else if self.init > 0 {
                        // SAFETY: kill with a signal number we received.
                        unsafe { libc::kill(self.init, sig) };
                    }
                }
            }
            if ready.get(2).copied().unwrap_or(false) {
                self.pump_pty(&mut buf);
            }
            if ready.get(3).copied().unwrap_or(false) {
                if let Some(p) = &self.pty {
                    match nix::unistd::read(stdin.as_fd(), &mut buf) {
                        Ok(0) | Err(_) => stdin_open = false,
                        Ok(n) => {
                            let _ = write_all(p.master.as_fd(), &buf[..n]);
                        }
                    }
                }
            }
        }
    }

    fn try_reap(&mut self) -> Option<(i32, Option<i32>)> {
        let mut status = 0;
        // SAFETY: non-blocking waitpid on our own child.
        let r = unsafe { libc::waitpid(self.outer, &mut status, libc::WNOHANG) };
        if r == self.outer {
            let (code, _) = process::exit_code(status);
            let signal = (code > 128).then_some(code - 128);
            return Some((code, signal));
        }
        if r < 0 {
            return Some((255, None));
        }
        None
    }

    /// Copies what the pty has to the log and/or stdout; false at EOF/EIO.
    fn pump_pty(&mut self, buf: &mut [u8]) -> bool {
        let Some(p) = &mut self.pty else {
            return false;
        };
        match nix::unistd::read(p.master.as_fd(), buf) {
            Ok(0) | Err(_) => false,
            Ok(n) => {
                if let Some(f) = &mut p.log {
                    let _ = std::io::Write::write_all(f, &buf[..n]);
                }
                if p.relay {
                    let mut out = std::io::stdout().lock();
                    let _ = std::io::Write::write_all(&mut out, &buf[..n]);
                    let _ = std::io::Write::flush(&mut out);
                }
                true
            }
        }
    }

    fn drain_pty(&mut self, buf: &mut [u8]) {
        let Some(p) = &self.pty else { return };
        // SAFETY: making our own master fd non-blocking.
        unsafe {
            let fd = p.master.as_raw_fd();
            let fl = libc::fcntl(fd, libc::F_GETFL);
            libc::fcntl(fd, libc::F_SETFL, fl | libc::O_NONBLOCK);
        }
        while self.pump_pty(buf) {}
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        self.finish();
    }
}

fn write_all(fd: std::os::fd::BorrowedFd<'_>, mut data: &[u8]) -> nix::Result<()> {
    while !data.is_empty() {
        let n = nix::unistd::write(fd, data)?;
        data = &data[n..];
    }
    Ok(())
}

/// Puts a terminal in raw mode; restores it on drop.
struct RawMode {
    fd: OwnedFd,
    saved: nix::sys::termios::Termios,
}

impl RawMode {
    fn enable(fd: std::os::fd::BorrowedFd<'_>) -> Option<RawMode> {
        use nix::sys::termios;
        let saved = termios::tcgetattr(fd).ok()?;
        let mut raw = saved.clone();
        termios::cfmakeraw(&mut raw);
        termios::tcsetattr(fd, termios::SetArg::TCSANOW, &raw).ok()?;
        Some(RawMode {
            fd: fd.try_clone_to_owned().ok()?,
            saved,
        })
    }
}

impl Drop for RawMode {
    fn drop(&mut self) {
        let _ =
            nix::sys::termios::tcsetattr(&self.fd, nix::sys::termios::SetArg::TCSANOW, &self.saved);
    }
}

/// A cgroup a rootless caller could not create for `limits`: the limits cannot be enforced, and
/// the error says why (no cgroup of the user's own to create it in) rather than a bare EACCES.
fn rootless_cgroup_error(limits: &crate::spec::ResourceLimits, cause: RunnerError) -> RunnerError {
    let cause = match cause {
        RunnerError::Io { path, source } => format!("creating {}: {source}", path.display()),
        RunnerError::Unsupported { reason, .. } => reason,
        other => other.to_string(),
    };
    RunnerError::Unsupported {
        limit: limits.flags(),
        reason: format!(
            "without root, resource limits need a cgroup delegated to your user (cgroup v2 with \
             systemd's user delegation, e.g. run under `systemd-run --user --scope`), and none \
             is writable here ({cause}); run without the limit or as root"
        ),
    }
}
