//! Starting a container: mount its root filesystem (its own upper dir over the image's layers),
//! run it in a sandbox, record its state, wait, clean up. Detached containers get a monitor
//! process that does the waiting.

use super::state::{ContainerState, Status};
use crate::cmd::image::open_store;
use crate::cmd::{ExitStatusError, Globals};
use anyhow::{anyhow, Context};
use rbuild_layerfs::mount::{
    fuse, mount_union, mount_union_served, server_pid, unmount_target, Driver, MountSpec,
};
use rbuild_layerfs::{Digest, Store};
use rbuild_runner::{Network, ProcessSpec, RunnerError, SandboxSpec, Stdio};
use std::io::{Read, Write};
use std::os::fd::{AsRawFd, OwnedFd};
use std::process::ExitCode;

/// Where the container's stdio goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Attach {
    /// This terminal; rbuild waits and exits with the container's code.
    Foreground,
    /// The container's log; a monitor process waits.
    Detached,
}

/// Exit code docker uses when the container could not be started.
const START_FAILED: u8 = 125;

/// Starts `st` and either waits for it (foreground) or returns once it runs (detached).
pub fn start_container(
    store: &Store,
    st: ContainerState,
    attach: Attach,
) -> anyhow::Result<ExitCode> {
    match attach {
        Attach::Foreground => {
            let auto_remove = st.config.auto_remove;
            // Blocked from before the start: a SIGTERM/SIGINT arriving at any moment is
            // forwarded to the container (by the runner's wait), never lost or fatal to rbuild.
            let previous = rbuild_runner::process::block_signals()?;
            let result = supervise(store, st, attach, None);
            rbuild_runner::process::restore_signals(&previous);
            match result {
                Ok(status) => {
                    if status.oom_killed {
                        eprintln!("killed: out of memory");
                    }
                    Ok(ExitCode::from(status.code.clamp(0, 255) as u8))
                }
                Err(e) => Err(start_error(e, auto_remove)),
            }
        }
        Attach::Detached => {
            let id = st.id.clone();
            detach(store, st)?;
            println!("{id}");
            Ok(ExitCode::SUCCESS)
        }
    }
}

fn start_error(e: anyhow::Error, _auto_remove: bool) -> anyhow::Error {
    let code = match e.downcast_ref::<RunnerError>() {
        Some(RunnerError::Exec { code, .. }) => *code as u8,
        _ => START_FAILED,
    };
    anyhow!(ExitStatusError {
        code,
        message: format!("{e:#}"),
    })
}

/// Forks the monitor and waits until the container runs (or failed to start).
fn detach(store: &Store, st: ContainerState) -> anyhow::Result<()> {
    let (r, w) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).context("pipe")?;
    // SAFETY: the CLI is single-threaded here; the child only runs the monitor and exits.
    match unsafe { nix::unistd::fork() }.context("fork")? {
        nix::unistd::ForkResult::Child => {
            drop(r);
            let _ = nix::unistd::setsid();
            close_inherited_fds();
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
            let code = match supervise(store, st, Attach::Detached, Some(w)) {
                Ok(_) => 0,
                Err(_) => 1,
            };
            // SAFETY: leave the forked monitor without running the parent's exit handlers.
            unsafe { libc::_exit(code) }
        }
        nix::unistd::ForkResult::Parent { .. } => {
            drop(w);
            let mut msg = String::new();
            std::fs::File::from(r).read_to_string(&mut msg)?;
            match msg.split_once('\t') {
                Some(("ok", notice)) => {
                    // The monitor's own stderr is /dev/null: its notice is printed here.
                    if !notice.is_empty() {
                        eprintln!("notice: {notice}");
                    }
                    Ok(())
                }
                Some((code, m)) => Err(anyhow!(ExitStatusError {
                    code: code.parse().unwrap_or(START_FAILED),
                    message: m.to_string(),
                })),
                None => Err(anyhow!(ExitStatusError {
                    code: START_FAILED,
                    message: "the container monitor exited before the container started".into(),
                })),
            }
        }
    }
}

fn notify(ready: &mut Option<OwnedFd>, code: &str, message: &str) {
    if let Some(fd) = ready.take() {
        let _ = std::fs::File::from(fd).write_all(format!("{code}\t{message}").as_bytes());
    }
}

/// Mounts, runs and waits for the container, keeping state.json current.
fn supervise(
    store: &Store,
    mut st: ContainerState,
    attach: Attach,
    mut ready: Option<OwnedFd>,
) -> anyhow::Result<rbuild_runner::ExitStatus> {
    let store_root = store.root();
    let result = run_and_wait(store, &mut st, attach, &mut ready);
    if let Err(e) = &result {
        let code = match e.downcast_ref::<RunnerError>() {
            Some(RunnerError::Exec { code, .. }) => *code,
            _ => START_FAILED as i32,
        };
        st.status = Status::Exited;
        st.exit_code = Some(code);
        st.error = Some(format!("{e:#}"));
        st.finished_at = Some(super::state::now());
        st.pid = 0;
        st.cgroup = None;
        // The mount (and with it any FUSE server) went with the failed start.
        st.fuse_server_pid = None;
        notify(&mut ready, &code.to_string(), &format!("{e:#}"));
    }
    if st.config.auto_remove {
        let _ = std::fs::remove_dir_all(st.dir(store_root));
    } else {
        let _ = st.save(store_root);
    }
    result
}

fn run_and_wait(
    store: &Store,
    st: &mut ContainerState,
    attach: Attach,
    ready: &mut Option<OwnedFd>,
) -> anyhow::Result<rbuild_runner::ExitStatus> {
    let store_root = store.root();
    let manifest: Digest = st
        .manifest
        .parse()
        .context("container record: manifest digest")?;
    let image = store
        .load_image(&manifest)
        .with_context(|| format!("loading image {} of container {}", st.image, st.name))?;
    let layers = store.image_layer_dirs(&image)?;
    let dir = st.dir(store_root);
    let driver: Driver = st
        .driver
        .parse()
        .with_context(|| format!("--storage-driver {}", st.driver))?;
    let merged = dir.join("merged");
    std::fs::create_dir_all(&merged)?;
    clear_leftover_mount(st, &merged);
    let spec = MountSpec {
        layers,
        upper: Some(dir.join("upper")),
        work: Some(dir.join("work")),
        target: merged.clone(),
    };
    let mount = match attach {
        // In the foreground the FUSE server lives in this process (no start-up cost); a
        // detached container's is a process of its own that outlives this monitor and ends
        // when its mount or this container's record goes.
        Attach::Foreground => mount_union(&spec, driver),
        Attach::Detached => {
            let server = crate::cmd::fuse_serve::server_command(Some(dir.join("fuse.log")));
            mount_union_served(&spec, driver, &server, Some(&dir.join("state.json")))
        }
    }
    .with_context(|| format!("mounting the root filesystem of container {}", st.name))?;
    st.fuse_server_pid = server_pid(&mount);
    let log = dir.join("log");
    let stdio = match (attach, st.config.tty) {
        // --rm: nothing is kept, so the process gets this terminal directly (no copying).
        (Attach::Foreground, true) if st.config.auto_remove => Stdio::Pty { log: None },
        (Attach::Foreground, false) if st.config.auto_remove && st.config.interactive => {
            Stdio::Inherit
        }
        (Attach::Foreground, false) if st.config.auto_remove => Stdio::NullStdin,
        // Kept for `logs`, as docker keeps the output of every container: shown here and
        // appended to the log (without -t the process's stdout and stderr are then pipes).
        (Attach::Foreground, true) => Stdio::PtyTee { log },
        (Attach::Foreground, false) => Stdio::Tee {
            log,
            stdin: st.config.interactive,
        },
        (Attach::Detached, true) => Stdio::Pty { log: Some(log) },
        (Attach::Detached, false) => Stdio::Log(log),
    };
    let sandbox = SandboxSpec {
        rootfs: merged,
        hostname: st.config.hostname.clone(),
        network: match st.config.network.as_str() {
            "host" => Network::Host,
            "private" => Network::Private,
            _ => Network::None,
        },
        mounts: st.config.mounts.iter().map(Into::into).collect(),
        readonly_rootfs: st.config.readonly,
        limits: (&st.config.limits).into(),
        cgroup_name: Some(format!("rbuild-{}", st.short_id())),
        stdio,
    };
    let process = ProcessSpec {
        args: st.config.args.clone(),
        env: st.config.env.clone(),
        cwd: st.config.cwd.clone(),
        user: st.config.user.clone(),
    };
    let running = rbuild_runner::spawn(&sandbox, &process)?;
    st.status = Status::Running;
    st.pid = running.init_pid();
    st.monitor_pid = std::process::id() as i32;
    st.cgroup = running.cgroup().cloned();
    st.started_at = Some(super::state::now());
    st.finished_at = None;
    st.exit_code = None;
    st.oom_killed = false;
    st.error = None;
    st.save(store_root)?;
    let notice = mount
        .fallback_reason()
        .map(|why| format!("using the FUSE storage driver (slower): {why}"))
        .unwrap_or_default();
    notify(ready, "ok", &notice);
    let status = running.wait()?;
    st.status = Status::Exited;
    st.exit_code = Some(status.code);
    st.oom_killed = status.oom_killed;
    st.finished_at = Some(super::state::now());
    st.pid = 0;
    st.cgroup = None;
    // Unmounts; a FUSE server exits with its mount.
    drop(mount);
    st.fuse_server_pid = None;
    Ok(status)
}

/// Closes the descriptors above stderr that this process inherited from its caller: those
/// without close-on-exec, as everything rbuild opens has it. A detached monitor then does not
/// hold its caller's pipes open (a shell waiting on `$(rbuild run -d ...)` could wait for them).
pub(super) fn close_inherited_fds() {
    let Ok(dir) = std::fs::read_dir("/proc/self/fd") else {
        return;
    };
    let fds: Vec<i32> = dir
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse().ok())
        .filter(|&fd| fd > 2)
        .collect();
    for fd in fds {
        // SAFETY: F_GETFD/close on descriptor numbers; one that is already closed (the
        // directory listing's own) fails harmlessly.
        unsafe {
            let flags = libc::fcntl(fd, libc::F_GETFD);
            if flags >= 0 && flags & libc::FD_CLOEXEC == 0 {
                libc::close(fd);
            }
        }
    }
}

/// Removes what a killed monitor left at `merged`: its mount (possibly dead, when it was a
/// FUSE mount served by the monitor itself) and the FUSE server of a detached start, so a new
/// mount is not stacked on top of the old one.
fn clear_leftover_mount(st: &mut ContainerState, merged: &std::path::Path) {
    if !fuse::detach_stale(merged) {
        // EINVAL (nothing mounted) is the common case.
        let _ = unmount_target(merged);
    }
    if let Some(pid) = st.fuse_server_pid.take() {
        fuse::server::end_server(pid, merged, std::time::Duration::from_secs(3));
    }
}

/// `rbuild start`: starts each stopped container in the background.
pub fn start_many(g: &Globals, names: &[String]) -> anyhow::Result<ExitCode> {
    let store = open_store(g)?;
    for name in names {
        let st = super::state::find(store.root(), name)?;
        if st.is_running() {
            println!("{name}");
            continue;
        }
        detach(&store, st)?;
        println!("{name}");
    }
    Ok(ExitCode::SUCCESS)
}
