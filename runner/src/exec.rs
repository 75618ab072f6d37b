//! `exec`: a new process in a running sandbox, joining its namespaces and cgroup with setns.

use crate::cgroup::Cgroup;
use crate::error::{Result, RunnerError, SysContext};
use crate::launch::Launch;
use crate::process;
use crate::resolve;
use crate::sandbox::{ExitStatus, Running};
use crate::spec::{ProcessSpec, Stdio};
use nix::sched::CloneFlags;
use std::os::fd::{AsRawFd, OwnedFd};
use std::path::Path;

/// Namespaces joined, in order (mount last: it changes the root).
const NAMESPACES: &[(&str, CloneFlags)] = &[
    // First: the other namespaces of a rootless sandbox belong to its user namespace.
    ("user", CloneFlags::CLONE_NEWUSER),
    ("ipc", CloneFlags::CLONE_NEWIPC),
    ("uts", CloneFlags::CLONE_NEWUTS),
    ("net", CloneFlags::CLONE_NEWNET),
    ("pid", CloneFlags::CLONE_NEWPID),
    ("mnt", CloneFlags::CLONE_NEWNS),
];

/// Starts `process` inside the sandbox whose first process has host pid `init_pid`, in its
/// cgroup; returns once it has been executed.
pub fn spawn_exec(
    init_pid: i32,
    cgroup: Option<&Cgroup>,
    process: &ProcessSpec,
    stdio: &Stdio,
) -> Result<Running> {
    let proc_dir = format!("/proc/{init_pid}");
    let root = resolve::open_root(Path::new(&format!("{proc_dir}/root"))).map_err(|e| {
        RunnerError::Invalid(format!("container process {init_pid} is not running ({e})"))
    })?;
    let launch = Launch::prepare(process, &root)?;
    drop(root);
    let mut ns: Vec<(OwnedFd, CloneFlags)> = Vec::new();
    for (name, flag) in NAMESPACES {
        let path = format!("{proc_dir}/ns/{name}");
        let own = std::fs::read_link(format!("/proc/self/ns/{name}")).ok();
        let theirs = std::fs::read_link(&path).ok();
        if own.is_some() && own == theirs {
            continue;
        }
        let fd = rustix::fs::open(
            path.as_str(),
            rustix::fs::OFlags::RDONLY | rustix::fs::OFlags::CLOEXEC,
            rustix::fs::Mode::empty(),
        )
        .sys(|| format!("open {path}"))?;
        ns.push((fd, *flag));
    }
    let (child_stdio, parent_stdio) = process::prepare_stdio(stdio)?;
    let (pid_r, pid_w) = process::pipe()?;
    let (err_r, err_w) = process::pipe()?;
    let cgroup = cgroup.cloned();
    let setup = || -> Result<()> {
        // Not dumpable while it holds the caller's fds and runs the host binary in the container's
        // namespaces: no ptrace or /proc/PID/{fd,mem,exe} from inside (execve restores it).
        // SAFETY: plain prctl with integer arguments.
        if unsafe { libc::prctl(libc::PR_SET_DUMPABLE, 0, 0, 0, 0) } != 0 {
            return Err(nix::Error::last()).sys(|| "prctl(PR_SET_DUMPABLE)".into());
        }
        if let Some(cg) = &cgroup {
            cg.add_process(0)?;
        }
        for (fd, flag) in &ns {
            nix::sched::setns(fd, *flag).sys(|| format!("setns {flag:?}"))?;
        }
        Ok(())
    };
    let child = || -> (i32, String) {
        process::restore_signals(&nix::sys::signal::SigSet::empty());
        process::default_signal_dispositions();
        if let Err(e) = process::new_session().and_then(|()| process::apply_stdio(&child_stdio)) {
            return (125, e.to_string());
        }
        process::close_fds_except(&[err_w.as_raw_fd(), child_stdio.socket_fd()]);
        if let process::ChildStdio::Pty { sock } = &child_stdio {
            if let Err(e) = process::attach_pty(sock) {
                return (125, e.to_string());
            }
        }
        let f = launch.exec();
        (f.code, f.message)
    };
    // SAFETY: the child only runs the prepared closures and exits or execs.
    let outer = unsafe { process::fork_intermediate(&pid_w, &err_w, setup, child)? };
    drop((pid_w, err_w, child_stdio, ns));
    let pty = parent_stdio.pty.and_then(process::PtyParent::receive);
    let mut running = Running::for_exec(outer, pty, parent_stdio.tee);
    let pid = process::read_pid(pid_r);
    let failure = process::read_failure(err_r);
    if let Some(pid) = pid {
        running.set_init(pid);
    }
    if let Some((code, message)) = failure {
        running.finish();
        return Err(process::failure_error(code, message));
    }
    Ok(running)
}

/// Runs `process` in a running sandbox and waits for it.
pub fn exec(
    init_pid: i32,
    cgroup: Option<&Cgroup>,
    process: &ProcessSpec,
    stdio: &Stdio,
) -> Result<ExitStatus> {
    spawn_exec(init_pid, cgroup, process, stdio)?.wait()
}
