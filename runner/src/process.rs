//! Forking helpers shared by `run` and `exec`: the intermediate process that waits for the
//! container's first process, pipes that report the pid and setup errors, and stdio wiring.

use crate::error::{IoContext, Result, RunnerError, SysContext};
use crate::spec::Stdio;
use nix::sys::signal::{SigSet, SigmaskHow, Signal};
use std::io::{Read, Write};
use std::os::fd::{AsFd, AsRawFd, OwnedFd, RawFd};

/// Signals the parent receives through a signalfd while it waits (and forwards).
pub fn wait_signals() -> SigSet {
    let mut s = SigSet::empty();
    for sig in [
        Signal::SIGINT,
        Signal::SIGTERM,
        Signal::SIGHUP,
        Signal::SIGQUIT,
        Signal::SIGWINCH,
    ] {
        s.add(sig);
    }
    s
}

/// Blocks [`wait_signals`] and returns the previous mask.
pub fn block_signals() -> Result<SigSet> {
    let mut old = SigSet::empty();
    nix::sys::signal::pthread_sigmask(SigmaskHow::SIG_BLOCK, Some(&wait_signals()), Some(&mut old))
        .sys(|| "block signals".into())?;
    Ok(old)
}

/// The calling thread's signal mask (what a new container process starts with).
pub fn current_mask() -> Result<SigSet> {
    let mut cur = SigSet::empty();
    nix::sys::signal::pthread_sigmask(SigmaskHow::SIG_BLOCK, None, Some(&mut cur))
        .sys(|| "read signal mask".into())?;
    Ok(cur)
}

/// Restores a mask saved by [`block_signals`].
pub fn restore_signals(old: &SigSet) {
    let _ = nix::sys::signal::pthread_sigmask(SigmaskHow::SIG_SETMASK, Some(old), None);
}

/// Sets every signal's disposition back to the default. Ignored signals stay ignored across
/// execve, and Rust's runtime ignores SIGPIPE, so without this a container process would start
/// with SIGPIPE ignored (`yes | head -n1` then ends with "yes: Broken pipe" instead of a quiet
/// SIGPIPE), unlike under Docker. Handlers are reset by execve anyway. Async-signal-safe.
pub fn default_signal_dispositions() {
    /// The kernel's `struct sigaction` on x86_64 (glibc's wrapper refuses the signals it
    /// reserves for itself, 32 and 33, which a caller may still have ignored).
    #[repr(C)]
    struct KernelSigaction {
        handler: usize,
        flags: u64,
        restorer: usize,
        mask: u64,
    }
    let dfl = KernelSigaction {
        handler: libc::SIG_DFL,
        flags: 0,
        restorer: 0,
        mask: 0,
    };
    for sig in 1..=64 {
        if sig == libc::SIGKILL || sig == libc::SIGSTOP {
            continue;
        }
        // SAFETY: rt_sigaction with a valid struct and the kernel's sigset size; numbers the
        // kernel refuses just fail with EINVAL.
        unsafe {
            libc::syscall(
                libc::SYS_rt_sigaction,
                sig,
                &dfl as *const KernelSigaction,
                std::ptr::null_mut::<KernelSigaction>(),
                8usize,
            )
        };
    }
}

/// File descriptors prepared in the parent for the child's stdio.
#[derive(Debug)]
pub enum ChildStdio {
    /// Keep the parent's.
    Inherit,
    /// stdin from /dev/null, stdout+stderr inherited.
    NullStdin {
        /// /dev/null.
        null: OwnedFd,
    },
    /// stdin from /dev/null, stdout+stderr to a log file.
    Log {
        /// /dev/null.
        null: OwnedFd,
        /// The log file (append).
        log: OwnedFd,
    },
    /// stdin from /dev/null (or inherited when `None`), stdout and stderr to pipes the parent
    /// reads ([`crate::Stdio::Tee`]).
    Pipes {
        /// /dev/null, or `None` to keep the parent's stdin.
        stdin: Option<OwnedFd>,
        /// Write end of the stdout pipe.
        stdout: OwnedFd,
        /// Write end of the stderr pipe.
        stderr: OwnedFd,
    },
    /// A pty allocated inside the container (its own devpts), whose master is sent back on
    /// this socket; the slave becomes the controlling terminal.
    Pty {
        /// The child's end of the socket pair.
        sock: OwnedFd,
    },
}

impl ChildStdio {
    /// The pty socket's fd (-1 without a pty): kept open in the child until the pty is attached.
    pub fn socket_fd(&self) -> RawFd {
        match self {
            ChildStdio::Pty { sock } => sock.as_raw_fd(),
            _ => -1,
        }
    }
}

/// The parent's side of a pty, if any.
#[derive(Debug)]
pub struct PtyMaster {
    /// Master fd.
    pub master: OwnedFd,
    /// Append output here.
    pub log: Option<std::fs::File>,
    /// Relay output to stdout and stdin to the pty.
    pub relay: bool,
}

/// What the parent keeps of the stdio it prepared: a pty being set up, output pipes to copy.
#[derive(Debug, Default)]
pub struct ParentStdio {
    /// The pty of [`Stdio::Pty`] and [`Stdio::PtyTee`].
    pub pty: Option<PtyParent>,
    /// The output pipes of [`Stdio::Tee`].
    pub tee: Option<crate::tee::TeePipes>,
}

fn open_log(path: &std::path::Path) -> Result<std::fs::File> {
    std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .at(path)
}

fn open_null() -> Result<OwnedFd> {
    Ok(std::fs::File::open("/dev/null").at("/dev/null")?.into())
}

/// Opens files, pipes or a pty for `stdio`.
pub fn prepare_stdio(stdio: &Stdio) -> Result<(ChildStdio, ParentStdio)> {
    let none = ParentStdio::default();
    match stdio {
        Stdio::Inherit => Ok((ChildStdio::Inherit, none)),
        Stdio::NullStdin => Ok((ChildStdio::NullStdin { null: open_null()? }, none)),
        Stdio::Log(path) => Ok((
            ChildStdio::Log {
                null: open_null()?,
                log: open_log(path)?.into(),
            },
            none,
        )),
        Stdio::Tee { log, stdin } => {
            let log = open_log(log)?;
            let stdin = if *stdin { None } else { Some(open_null()?) };
            let (out_r, out_w) = pipe()?;
            let (err_r, err_w) = pipe()?;
            Ok((
                ChildStdio::Pipes {
                    stdin,
                    stdout: out_w,
                    stderr: err_w,
                },
                ParentStdio {
                    pty: None,
                    tee: Some(crate::tee::TeePipes {
                        stdout: out_r,
                        stderr: err_r,
                        log,
                    }),
                },
            ))
        }
        Stdio::Pty { log } => {
            let log = log.as_deref().map(open_log).transpose()?;
            let relay = log.is_none();
            pty_stdio(log, relay)
        }
        Stdio::PtyTee { log } => pty_stdio(Some(open_log(log)?), true),
    }
}

fn pty_stdio(log: Option<std::fs::File>, relay: bool) -> Result<(ChildStdio, ParentStdio)> {
    use nix::sys::socket::{socketpair, AddressFamily, SockFlag, SockType};
    let (parent, child) = socketpair(
        AddressFamily::Unix,
        SockType::Stream,
        None,
        SockFlag::SOCK_CLOEXEC,
    )
    .sys(|| "socketpair for the pty".into())?;
    Ok((
        ChildStdio::Pty { sock: child },
        ParentStdio {
            pty: Some(PtyParent {
                sock: parent,
                log,
                relay,
            }),
            tee: None,
        },
    ))
}

/// The parent's end of a pty being set up: receives the master from the container.
#[derive(Debug)]
pub struct PtyParent {
    sock: OwnedFd,
    log: Option<std::fs::File>,
    relay: bool,
}

impl PtyParent {
    /// Waits for the container's pty master; `None` when the container failed before sending it.
    pub fn receive(self) -> Option<PtyMaster> {
        use nix::sys::socket::{recvmsg, ControlMessageOwned, MsgFlags};
        let mut buf = [0u8; 1];
        let mut iov = [std::io::IoSliceMut::new(&mut buf)];
        let mut space = nix::cmsg_space!(std::os::fd::RawFd);
        let msg = recvmsg::<()>(
            self.sock.as_raw_fd(),
            &mut iov,
            Some(&mut space),
            MsgFlags::MSG_CMSG_CLOEXEC,
        )
        .ok()?;
        let mut master = None;
        for c in msg.cmsgs().ok()? {
            if let ControlMessageOwned::ScmRights(fds) = c {
                for fd in fds {
                    // SAFETY: the kernel just gave us this fd.
                    let owned = unsafe { <OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(fd) };
                    master.get_or_insert(owned);
                }
            }
        }
        let master = master?;
        if self.relay {
            copy_winsize(std::io::stdin().as_fd(), master.as_fd());
        }
        Some(PtyMaster {
            master,
            log: self.log,
            relay: self.relay,
        })
    }
}

/// In the child, first thing: a new session without a controlling terminal, whatever the stdio
/// mode, so the container cannot reach the caller's terminal (TIOCSTI, /dev/tty).
pub fn new_session() -> Result<()> {
    nix::unistd::setsid().sys(|| "setsid".into())?;
    Ok(())
}

/// In a forked child, right away: closes every fd above stderr except `keep` (the error pipe and
/// the like), so nothing the caller had open is reachable in the container, not even before exec.
pub fn close_fds_except(keep: &[RawFd]) {
    let mut keep: Vec<u32> = keep
        .iter()
        .filter_map(|fd| u32::try_from(*fd).ok())
        .filter(|fd| *fd > 2)
        .collect();
    keep.sort_unstable();
    keep.dedup();
    let mut from = 3u32;
    for k in keep.into_iter().chain(std::iter::once(u32::MAX)) {
        if k > from {
            let to = if k == u32::MAX { u32::MAX } else { k - 1 };
            // SAFETY: closes fd numbers this forked child owns and will not use again.
            let r = unsafe { libc::syscall(libc::SYS_close_range, from, to, 0u32) };
            if r != 0 {
                // Kernels before 5.9: one by one, up to the fd limit.
                let max = nix::unistd::sysconf(nix::unistd::SysconfVar::OPEN_MAX)
                    .ok()
                    .flatten()
                    .unwrap_or(1024)
                    .min(1 << 20) as u32;
                for fd in from..=to.min(max) {
                    // SAFETY: as above; closing an unused number is harmless.
                    unsafe { libc::close(fd as RawFd) };
                }
            }
        }
        from = k.saturating_add(1);
    }
}

/// In the container (its /dev/ptmx is the container's devpts): allocates a pty, sends the master
/// to the parent and makes the slave the controlling terminal and fds 0-2 (the process must be a
/// session leader without a terminal: [`new_session`]).
pub fn attach_pty(sock: &OwnedFd) -> Result<()> {
    use nix::sys::socket::{sendmsg, ControlMessage, MsgFlags};
    let master = rustix::fs::open(
        "/dev/ptmx",
        rustix::fs::OFlags::RDWR | rustix::fs::OFlags::NOCTTY | rustix::fs::OFlags::CLOEXEC,
        rustix::fs::Mode::empty(),
    )
    .sys(|| "open /dev/ptmx in the container".into())?;
    let unlock: libc::c_int = 0;
    // SAFETY: TIOCSPTLCK/TIOCGPTPEER on the master we just opened.
    let slave = unsafe {
        if libc::ioctl(master.as_raw_fd(), libc::TIOCSPTLCK, &unlock) < 0 {
            return Err(nix::Error::last()).sys(|| "unlock the pty".into());
        }
        let fd = libc::ioctl(
            master.as_raw_fd(),
            libc::TIOCGPTPEER,
            libc::O_RDWR | libc::O_NOCTTY,
        );
        if fd < 0 {
            return Err(nix::Error::last()).sys(|| "open the pty slave".into());
        }
        <OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(fd)
    };
    let ws = libc::winsize {
        ws_row: 24,
        ws_col: 80,
        ws_xpixel: 0,
        ws_ypixel: 0,
    };
    // SAFETY: TIOCSWINSZ with a valid winsize.
    unsafe { libc::ioctl(master.as_raw_fd(), libc::TIOCSWINSZ, &ws) };
    let fds = [master.as_raw_fd()];
    sendmsg::<()>(
        sock.as_raw_fd(),
        &[std::io::IoSlice::new(b"m")],
        &[ControlMessage::ScmRights(&fds)],
        MsgFlags::empty(),
        None,
    )
    .sys(|| "send the pty master".into())?;
    drop(master);
    // The caller already made this process a session leader (see new_session).
    // SAFETY: TIOCSCTTY on our slave; dup2 onto the standard descriptors.
    unsafe {
        if libc::ioctl(slave.as_raw_fd(), libc::TIOCSCTTY, 0) < 0 {
            return Err(nix::Error::last()).sys(|| "set controlling terminal".into());
        }
        for fd in 0..3 {
            if libc::dup2(slave.as_raw_fd(), fd) < 0 {
                return Err(nix::Error::last()).sys(|| format!("dup2 onto fd {fd}"));
            }
        }
    }
    Ok(())
}

/// Copies the terminal size of `from` to `to` (ignored when `from` is not a terminal).
pub fn copy_winsize(from: std::os::fd::BorrowedFd<'_>, to: std::os::fd::BorrowedFd<'_>) {
    // SAFETY: TIOCGWINSZ/TIOCSWINSZ with a valid winsize struct.
    unsafe {
        let mut ws: libc::winsize = std::mem::zeroed();
        if libc::ioctl(from.as_raw_fd(), libc::TIOCGWINSZ, &mut ws) == 0 {
            libc::ioctl(to.as_raw_fd(), libc::TIOCSWINSZ, &ws);
        }
    }
}

/// In the child: wires fds 0-2 as prepared.
pub fn apply_stdio(stdio: &ChildStdio) -> Result<()> {
    let dup = |from: &OwnedFd, to: i32| -> Result<()> {
        // SAFETY: dup2 onto a standard descriptor.
        if unsafe { libc::dup2(from.as_raw_fd(), to) } < 0 {
            return Err(nix::Error::last()).sys(|| format!("dup2 onto fd {to}"));
        }
        Ok(())
    };
    match stdio {
        ChildStdio::Inherit => Ok(()),
        ChildStdio::NullStdin { null } => dup(null, 0),
        ChildStdio::Log { null, log } => {
            dup(null, 0)?;
            dup(log, 1)?;
            dup(log, 2)
        }
        ChildStdio::Pipes {
            stdin,
            stdout,
            stderr,
        } => {
            if let Some(null) = stdin {
                dup(null, 0)?;
            }
            dup(stdout, 1)?;
            dup(stderr, 2)
        }
        // Set up later, inside the container (see attach_pty).
        ChildStdio::Pty { .. } => Ok(()),
    }
}

/// Writes a setup failure ("CODE\tmessage") to the error pipe.
pub fn report_failure(pipe: &OwnedFd, code: i32, message: &str) {
    let mut f = std::fs::File::from(pipe.try_clone().unwrap_or_else(|_| {
        // SAFETY: fallback dup of a valid fd.
        unsafe { std::os::fd::FromRawFd::from_raw_fd(libc::dup(pipe.as_raw_fd())) }
    }));
    let _ = f.write_all(format!("{code}\t{message}").as_bytes());
}

/// Reads the error pipe to EOF (EOF without data = exec succeeded).
pub fn read_failure(pipe: OwnedFd) -> Option<(i32, String)> {
    let mut s = String::new();
    let _ = std::fs::File::from(pipe).read_to_string(&mut s);
    if s.is_empty() {
        return None;
    }
    let (code, msg) = s.split_once('\t').unwrap_or(("125", s.as_str()));
    Some((code.parse().unwrap_or(125), msg.to_string()))
}

/// Reads the 4-byte pid the intermediate process sends.
pub fn read_pid(pipe: OwnedFd) -> Option<i32> {
    let mut buf = [0u8; 4];
    std::fs::File::from(pipe).read_exact(&mut buf).ok()?;
    Some(i32::from_ne_bytes(buf))
}

/// Creates an O_CLOEXEC pipe.
pub fn pipe() -> Result<(OwnedFd, OwnedFd)> {
    nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).sys(|| "pipe".into())
}

/// Exit code for a wait status: the code, or 128 + signal.
pub fn exit_code(status: i32) -> (i32, Option<i32>) {
    if libc::WIFEXITED(status) {
        (libc::WEXITSTATUS(status), None)
    } else if libc::WIFSIGNALED(status) {
        let sig = libc::WTERMSIG(status);
        (128 + sig, Some(sig))
    } else {
        (255, None)
    }
}

/// waitpid() retrying on EINTR; returns the raw status.
pub fn wait_blocking(pid: i32) -> i32 {
    let mut status = 0;
    loop {
        // SAFETY: waitpid on our own child.
        let r = unsafe { libc::waitpid(pid, &mut status, 0) };
        if r == pid {
            return status;
        }
        if r < 0 && nix::Error::last() != nix::Error::EINTR {
            return 255 << 8;
        }
    }
}

/// Forks the intermediate process: it runs `setup` (namespaces), forks the container process
/// (which runs `child` and must never return), sends its pid on `pid_w`, waits for it and exits
/// with its code (128 + signal when killed). Returns the intermediate's pid in the parent.
///
/// # Safety
/// Must be called from a process where forking is sound (the child only uses the prepared data).
pub unsafe fn fork_intermediate(
    pid_w: &OwnedFd,
    err_w: &OwnedFd,
    setup: impl FnOnce() -> Result<()>,
    child: impl FnOnce() -> (i32, String),
) -> Result<i32> {
    // SAFETY: getpid cannot fail.
    let caller = unsafe { libc::getpid() };
    // SAFETY: the caller guarantees fork is sound here.
    let a = unsafe { libc::fork() };
    if a < 0 {
        return Err(nix::Error::last()).sys(|| "fork".into());
    }
    if a > 0 {
        return Ok(a);
    }
    // Intermediate process.
    // SAFETY: prctl with integer args.
    unsafe { libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL as libc::c_ulong) };
    // SAFETY: getppid cannot fail. A caller that died (e.g. kill -9) before the prctl sends no
    // death signal: leave now instead of starting an orphaned container.
    if unsafe { libc::getppid() } != caller {
        // SAFETY: exiting the forked child without running the parent's destructors.
        unsafe { libc::_exit(125) };
    }
    if let Err(e) = setup() {
        report_failure(err_w, 125, &e.to_string());
        // SAFETY: exiting the forked child without running the parent's destructors.
        unsafe { libc::_exit(125) };
    }
    // The container process watches this process through a pidfd (it cannot see our pid from
    // inside its pid namespace). SAFETY: pidfd_open of our own pid.
    let me = unsafe { libc::syscall(libc::SYS_pidfd_open, libc::getpid(), 0) } as libc::c_int;
    // SAFETY: single-threaded after fork.
    let b = unsafe { libc::fork() };
    if b < 0 {
        report_failure(err_w, 125, &format!("fork: {}", nix::Error::last()));
        // SAFETY: as above.
        unsafe { libc::_exit(125) };
    }
    if b == 0 {
        // SAFETY: prctl with integer args.
        unsafe { libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL as libc::c_ulong) };
        // As above: if this process already died (killed with the caller), no death signal
        // comes, and its pidfd is readable.
        if me >= 0 {
            let mut gone = libc::pollfd {
                fd: me,
                events: libc::POLLIN,
                revents: 0,
            };
            // SAFETY: poll of our inherited pidfd, without waiting.
            if unsafe { libc::poll(&mut gone, 1, 0) } > 0 {
                // SAFETY: as above.
                unsafe { libc::_exit(125) };
            }
            // SAFETY: closing our copy of the pidfd.
            unsafe { libc::close(me) };
        }
        let (code, msg) = child();
        report_failure(err_w, code, &msg);
        // SAFETY: as above.
        unsafe { libc::_exit(code) };
    }
    let _ = nix::unistd::write(pid_w, &b.to_ne_bytes());
    // SAFETY: the intermediate only waits from here on: close every fd above stderr (the pipes
    // included, so the parent sees EOF when the container process execs, and nothing the
    // caller opened stays held by this long-lived process).
    unsafe {
        libc::close(pid_w.as_raw_fd());
        libc::close(err_w.as_raw_fd());
        libc::syscall(libc::SYS_close_range, 3u32, u32::MAX, 0u32);
    }
    let (code, _) = exit_code(wait_blocking(b));
    // SAFETY: as above.
    unsafe { libc::_exit(code) }
}

/// Maps an error pipe report to the error returned to the caller.
pub fn failure_error(code: i32, message: String) -> RunnerError {
    if code == 126 || code == 127 {
        RunnerError::Exec { code, message }
    } else {
        RunnerError::Setup(message)
    }
}

#[cfg(test)]
mod tests {
    use std::os::fd::AsRawFd;

    #[test]
    fn close_fds_except_keeps_only_the_given_fds() {
        // SAFETY: the child only opens and closes fds, lists /proc/self/fd and exits.
        let pid = unsafe { libc::fork() };
        assert!(pid >= 0);
        if pid == 0 {
            let files: Vec<std::fs::File> = (0..6)
                .filter_map(|_| std::fs::File::open("/dev/null").ok())
                .collect();
            let keep = files[2].as_raw_fd();
            super::close_fds_except(&[keep]);
            // SAFETY: F_GETFD only asks whether the fd number is open.
            let open = |fd: i32| unsafe { libc::fcntl(fd, libc::F_GETFD) } >= 0;
            let ok = open(keep) && (3..256).filter(|fd| *fd != keep).all(|fd| !open(fd));
            std::mem::forget(files);
            // SAFETY: leaving the forked child.
            unsafe { libc::_exit(if ok { 0 } else { 1 }) };
        }
        assert_eq!(super::wait_blocking(pid), 0);
    }
}
