//! ps, stop, kill, rm and exec.

use super::state::{self, ContainerState, Status};
use crate::cmd::image::list::human_duration_since;
use crate::cmd::image::open_store;
use crate::cmd::{ExitStatusError, Globals};
use anyhow::{anyhow, bail, Context};
use nix::sys::signal::Signal;
use rbuild_layerfs::mount::fuse;
use rbuild_runner::{ProcessSpec, RunnerError, Stdio};
use std::path::Path;
use std::process::ExitCode;
use std::time::{Duration, Instant};

/// Docker's "3 seconds"-style age of an RFC 3339 time (the text itself if it does not parse).
fn age(rfc3339: &str) -> String {
    match rbuild_layerfs::image::parse_rfc3339(rfc3339) {
        Some(t) => human_duration_since(t),
        None => rfc3339.to_string(),
    }
}

/// The STATUS column: `Up 3 seconds`, `Exited (0) 2 minutes ago`, or `Exited (-1)` for a
/// container whose process died unrecorded (killed with its monitor: no exit code, no time).
fn status_text(
    status: Status,
    exit_code: Option<i32>,
    started_at: Option<&str>,
    finished_at: Option<&str>,
) -> String {
    match status {
        Status::Created => "Created".into(),
        Status::Running => match started_at {
            Some(t) => format!("Up {}", age(t)),
            None => "Up".into(),
        },
        Status::Exited => {
            let code = exit_code.unwrap_or(-1);
            match finished_at {
                Some(t) => format!("Exited ({code}) {} ago", age(t)),
                None => format!("Exited ({code})"),
            }
        }
    }
}

/// `rbuild ps`.
pub fn ps(g: &Globals, all: bool, quiet: bool) -> anyhow::Result<ExitCode> {
    let root = g.store_root();
    let list: Vec<ContainerState> = state::list(&root)?
        .into_iter()
        .filter(|c| all || c.effective_status() == Status::Running)
        .collect();
    if quiet {
        for c in &list {
            println!("{}", c.short_id());
        }
        return Ok(ExitCode::SUCCESS);
    }
    // Columns as wide as their longest cell, as docker's tabwriter makes them: "Less than a
    // second ago" ran into the status column of fixed widths.
    let mut table = vec![[
        "CONTAINER ID",
        "IMAGE",
        "COMMAND",
        "CREATED",
        "STATUS",
        "NAMES",
    ]
    .map(String::from)
    .to_vec()];
    for c in &list {
        let mut cmd = format!("\"{}\"", c.config.args.join(" "));
        if cmd.len() > 22 {
            cmd = format!(
                "{}…\"",
                &cmd[..cmd.char_indices().nth(19).map(|x| x.0).unwrap_or(19)]
            );
        }
        table.push(vec![
            c.short_id().to_string(),
            c.image.clone(),
            cmd,
            format!("{} ago", age(&c.created)),
            status_text(
                c.effective_status(),
                c.exit_code,
                c.started_at.as_deref(),
                c.finished_at.as_deref(),
            ),
            c.name.clone(),
        ]);
    }
    crate::cmd::image::list::print_table(table);
    Ok(ExitCode::SUCCESS)
}

/// Parses "TERM", "SIGTERM", "15".
pub fn parse_signal(s: &str) -> anyhow::Result<Signal> {
    if let Ok(n) = s.parse::<i32>() {
        return Signal::try_from(n).map_err(|_| anyhow!("invalid signal {s}"));
    }
    let upper = s.to_ascii_uppercase();
    let name = if upper.starts_with("SIG") {
        upper
    } else {
        format!("SIG{upper}")
    };
    name.parse::<Signal>()
        .map_err(|_| anyhow!("invalid signal {s}: use a name like TERM or a number"))
}

/// How long `stop` and `rm` wait for a FUSE server to exit after its mount is gone.
const SERVER_EXIT_WAIT: Duration = Duration::from_secs(3);

/// Waits until the container's monitor has finished (state written, mounts released).
fn wait_stopped(root: &Path, c: &ContainerState, timeout: Duration) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        let running = c.pid > 0 && state::pid_alive(c.pid);
        let monitoring = c.monitor_pid > 0
            && c.monitor_pid != std::process::id() as i32
            && state::pid_alive(c.monitor_pid)
            && c.reload(root).is_ok_and(|s| s.status == Status::Running);
        if !running && !monitoring {
            return true;
        }
        if Instant::now() > deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Makes sure nothing of a stopped container is left running or mounted; fixes its record if
/// its monitor died.
fn reap(root: &Path, c: &ContainerState) {
    if let Some(cg) = &c.cgroup {
        let _ = cg.destroy();
    }
    let merged = c.dir(root).join("merged");
    // A FUSE mount whose server was killed is dead (ENOTCONN) and only needs detaching.
    if !fuse::detach_stale(&merged) {
        let _ = rbuild_layerfs::mount::unmount_target(&merged);
    }
    let server = c
        .reload(root)
        .ok()
        .and_then(|s| s.fuse_server_pid)
        .or(c.fuse_server_pid);
    if let Some(pid) = server {
        // The server exits once its mount is gone; one that lingers is told to stop.
        if !fuse::server::wait_gone(pid, &merged, SERVER_EXIT_WAIT) {
            fuse::server::end_server(pid, &merged, SERVER_EXIT_WAIT);
        }
    }
    if let Ok(mut s) = c.reload(root) {
        if s.status == Status::Running {
            s.status = Status::Exited;
            s.exit_code = s.exit_code.or(Some(137));
            s.finished_at = Some(state::now());
            s.pid = 0;
            s.cgroup = None;
            s.fuse_server_pid = None;
            let _ = s.save(root);
        }
    }
}

/// How long a command waits for the process of a `--rm` container whose rbuild was killed.
const ORPHAN_EXIT_WAIT: Duration = Duration::from_secs(2);

/// Removes `--rm` containers that ended without being removed: their record says running, but
/// the container process and the rbuild process waiting for it (a foreground `run --rm` or a
/// detached monitor) are both gone, as after `kill -9` of rbuild. Docker removes a `--rm`
/// container whenever it exits, so no later command should find one (`ps`, `rm`, `rmi`, prune).
/// Their mount, FUSE server and cgroup go with them.
pub(crate) fn remove_orphaned_auto_remove(root: &Path) {
    for c in state::list(root).unwrap_or_default() {
        let monitor_alive = c.monitor_pid > 0 && state::pid_alive(c.monitor_pid);
        if !c.config.auto_remove || c.status != Status::Running || monitor_alive {
            continue;
        }
        if c.monitor_pid > 0 {
            // Its process dies with the rbuild that waited for it (parent-death signal), a few
            // milliseconds later: a command right after the kill must not find it running.
            let deadline = Instant::now() + ORPHAN_EXIT_WAIT;
            while c.is_running() && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(2));
            }
        }
        if !c.is_running() {
            reap(root, &c);
            // Another command may be removing it at the same moment.
            let _ = std::fs::remove_dir_all(c.dir(root));
        }
    }
}

/// Stops one container: `signal`, then SIGKILL after `grace`.
fn stop_one(root: &Path, c: &ContainerState, grace: Duration) -> anyhow::Result<()> {
    if c.is_running() {
        let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(c.pid), Signal::SIGTERM);
        if !wait_stopped(root, c, grace) {
            if let Some(cg) = &c.cgroup {
                cg.signal_all(Signal::SIGKILL);
            }
            let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(c.pid), Signal::SIGKILL);
            if !wait_stopped(root, c, Duration::from_secs(10)) {
                bail!("container {} did not stop after SIGKILL", c.name);
            }
        }
    }
    reap(root, c);
    Ok(())
}

/// `rbuild stop`.
pub fn stop(g: &Globals, secs: u64, names: &[String]) -> anyhow::Result<ExitCode> {
    let root = g.store_root();
    for name in names {
        let c = state::find(&root, name)?;
        stop_one(&root, &c, Duration::from_secs(secs))?;
        println!("{name}");
    }
    Ok(ExitCode::SUCCESS)
}

/// `rbuild kill`.
pub fn kill(g: &Globals, signal: &str, names: &[String]) -> anyhow::Result<ExitCode> {
    let root = g.store_root();
    let sig = parse_signal(signal)?;
    for name in names {
        let c = state::find(&root, name)?;
        if !c.is_running() {
            bail!("cannot kill container {name}: it is not running");
        }
        nix::sys::signal::kill(nix::unistd::Pid::from_raw(c.pid), sig)
            .with_context(|| format!("signalling container {name}"))?;
        if sig == Signal::SIGKILL {
            wait_stopped(&root, &c, Duration::from_secs(10));
        }
        println!("{name}");
    }
    Ok(ExitCode::SUCCESS)
}

/// `rbuild rm`.
pub fn rm(g: &Globals, force: bool, names: &[String]) -> anyhow::Result<ExitCode> {
    let root = g.store_root();
    for name in names {
        let c = state::find(&root, name)?;
        if c.is_running() {
            if !force {
                bail!("cannot remove running container {name}: stop it first, or use rm -f");
            }
            if let Some(cg) = &c.cgroup {
                cg.signal_all(Signal::SIGKILL);
            }
            let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(c.pid), Signal::SIGKILL);
            wait_stopped(&root, &c, Duration::from_secs(10));
        }
        reap(&root, &c);
        let dir = c.dir(&root);
        std::fs::remove_dir_all(&dir)
            .or_else(|e| {
                if e.kind() == std::io::ErrorKind::NotFound {
                    Ok(())
                } else {
                    Err(e)
                }
            })
            .with_context(|| format!("removing {}", dir.display()))?;
        println!("{name}");
    }
    Ok(ExitCode::SUCCESS)
}

/// Arguments of `rbuild exec`.
#[derive(Debug)]
pub struct ExecArgs {
    /// -i
    pub interactive: bool,
    /// -t
    pub tty: bool,
    /// -d
    pub detach: bool,
    /// -e
    pub env: Vec<String>,
    /// -u
    pub user: Option<String>,
    /// -w
    pub workdir: Option<String>,
    /// Container.
    pub container: String,
    /// Command.
    pub command: Vec<String>,
}

/// `rbuild exec`: joins the container's namespaces and cgroup.
pub fn exec(g: &Globals, a: ExecArgs) -> anyhow::Result<ExitCode> {
    let store = open_store(g)?;
    let c = state::find(store.root(), &a.container)?;
    if !c.is_running() {
        bail!("container {} is not running: start it first", a.container);
    }
    let mut env = c.config.env.clone();
    super::run::merge_env(&mut env, &a.env);
    let process = ProcessSpec {
        args: a.command.clone(),
        env,
        cwd: a.workdir.clone().unwrap_or_else(|| c.config.cwd.clone()),
        user: a.user.clone().unwrap_or_else(|| c.config.user.clone()),
    };
    let stdio = if a.detach {
        Stdio::Log(c.dir(store.root()).join("log"))
    } else if a.tty {
        Stdio::Pty { log: None }
    } else if a.interactive {
        Stdio::Inherit
    } else {
        Stdio::NullStdin
    };
    let result = if a.detach {
        return exec_detached(&c, &process, &stdio);
    } else {
        // Signals to rbuild from the start on are forwarded to the exec'd process.
        let previous = rbuild_runner::process::block_signals()?;
        let r = rbuild_runner::exec(c.pid, c.cgroup.as_ref(), &process, &stdio);
        rbuild_runner::process::restore_signals(&previous);
        r
    };
    match result {
        Ok(status) => Ok(ExitCode::from(status.code.clamp(0, 255) as u8)),
        Err(RunnerError::Exec { code, message }) => Err(anyhow!(ExitStatusError {
            code: code as u8,
            message,
        })),
        Err(e) => Err(anyhow!(ExitStatusError {
            code: 126,
            message: format!("exec in container {}: {e}", a.container),
        })),
    }
}

/// `exec -d`: a monitor process (its own session) starts the command and waits for it, so the
/// command outlives this rbuild; returns once the command runs (or failed to start).
fn exec_detached(
    c: &ContainerState,
    process: &ProcessSpec,
    stdio: &Stdio,
) -> anyhow::Result<ExitCode> {
    use std::io::{Read, Write};
    use std::os::fd::AsRawFd;
    let (r, w) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).context("pipe")?;
    // SAFETY: the CLI is single-threaded here; the child only runs the exec and exits.
    match unsafe { nix::unistd::fork() }.context("fork")? {
        nix::unistd::ForkResult::Child => {
            drop(r);
            let _ = nix::unistd::setsid();
            super::start::close_inherited_fds();
            if let Ok(null) = std::fs::OpenOptions::new()
                .read(true)
                .write(true)
                .open("/dev/null")
            {
                for fd in 0..3 {
                    // SAFETY: dup2 onto the standard descriptors.
                    unsafe { libc::dup2(null.as_raw_fd(), fd) };
                }
            }
            let mut pipe = std::fs::File::from(w);
            let code = match rbuild_runner::spawn_exec(c.pid, c.cgroup.as_ref(), process, stdio) {
                Ok(running) => {
                    let _ = pipe.write_all(b"ok");
                    drop(pipe);
                    running.wait().map(|s| s.code).unwrap_or(1)
                }
                Err(e) => {
                    let _ = pipe.write_all(e.to_string().as_bytes());
                    1
                }
            };
            // SAFETY: leave the forked monitor without running the parent's exit handlers.
            unsafe { libc::_exit(code) }
        }
        nix::unistd::ForkResult::Parent { .. } => {
            drop(w);
            let mut msg = String::new();
            std::fs::File::from(r).read_to_string(&mut msg)?;
            if msg == "ok" {
                Ok(ExitCode::SUCCESS)
            } else {
                Err(anyhow!(ExitStatusError {
                    code: 126,
                    message: format!("exec in container {}: {msg}", c.name),
                }))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rfc3339_secs_ago(secs: u64) -> String {
        let t = std::time::SystemTime::now() - Duration::from_secs(secs);
        rbuild_layerfs::image::rfc3339(t)
    }

    #[test]
    fn status_column_reads_like_dockers() {
        let two_min = rfc3339_secs_ago(150);
        assert_eq!(status_text(Status::Created, None, None, None), "Created");
        assert_eq!(
            status_text(Status::Running, None, Some(&two_min), None),
            "Up 2 minutes"
        );
        assert_eq!(
            status_text(Status::Exited, Some(3), Some(&two_min), Some(&two_min)),
            "Exited (3) 2 minutes ago"
        );
        // Killed together with its monitor: nothing recorded the end.
        assert_eq!(
            status_text(Status::Exited, None, Some(&two_min), None),
            "Exited (-1)"
        );
        assert_eq!(
            status_text(Status::Exited, Some(0), None, Some("garbage")),
            "Exited (0) garbage ago"
        );
        assert_eq!(age(&rfc3339_secs_ago(7200)), "2 hours");
    }
}
