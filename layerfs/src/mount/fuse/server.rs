//! A FUSE union mount served by a separate, detached process, for mounts that must outlive the
//! command that made them (`rbuild mount`, the root filesystem of a detached container).
//!
//! The caller ([`spawn`]) starts the server program (the rbuild binary's hidden `__fuse-serve`
//! subcommand) in its own session with the mount point as its last argument and a
//! [`ServeRequest`] as JSON on stdin. The server ([`serve`]) mounts, answers `ok` (or
//! `error: <why>`) on its stdout and closes it, then serves until the mount goes away: an
//! unmount of the mount point (`umount`, `fusermount -u`), SIGTERM/SIGINT/SIGHUP, or the removal
//! of its owner record (a container's state.json, an image mount's record). After a signal or
//! the loss of its owner it detaches the mount and, when users keep a lazily detached mount
//! alive past a grace period, aborts the connection, so it never lives forever.
//!
//! Records keep the server's pid; [`end_server`] checks that a pid still is the server of a
//! given mount point (its command line) before signalling it, so a reused pid is never hit. A
//! server killed with SIGKILL leaves a dead mount (ENOTCONN) that [`super::detach_stale`]
//! clears.

use std::ffi::OsString;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Write};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use super::super::{Driver, MountError, MountSpec};
use super::control::AbortHandle;

/// The argument that selects the server in the rbuild binary (hidden from its help).
pub const SERVE_ARG: &str = "__fuse-serve";

/// How long a server lets users of a detached mount finish before it aborts the connection.
const ABORT_GRACE: Duration = Duration::from_secs(2);

/// How often a server checks that its owner record still exists.
const OWNER_POLL: Duration = Duration::from_secs(1);

/// What a server mounts (sent as JSON on its stdin; the mount point is its last argument).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServeRequest {
    /// Layer directories, lowest first.
    pub layers: Vec<PathBuf>,
    /// Writable upper dir; `None` makes a read-only mount.
    pub upper: Option<PathBuf>,
    /// Work dir paired with `upper` (unused by FUSE, kept for the spec's checks).
    pub work: Option<PathBuf>,
    /// A file whose removal ends the server (e.g. the container's state.json).
    pub owner: Option<PathBuf>,
}

impl ServeRequest {
    /// The mount spec of this request at `target`.
    pub fn spec(&self, target: &Path) -> MountSpec {
        MountSpec {
            layers: self.layers.clone(),
            upper: self.upper.clone(),
            work: self.work.clone(),
            target: target.to_path_buf(),
        }
    }
}

/// How to start a server process.
#[derive(Debug, Clone)]
pub struct ServerCommand {
    /// The program (e.g. `/proc/self/exe`, the running rbuild binary).
    pub program: PathBuf,
    /// argv[0] to show in `ps`.
    pub arg0: OsString,
    /// Arguments before the mount point (e.g. `["__fuse-serve"]`).
    pub args: Vec<OsString>,
    /// File that receives the server's stderr (appended); `None` discards it.
    pub log: Option<PathBuf>,
}

impl ServerCommand {
    /// The running program itself with [`SERVE_ARG`], its stderr appended to `log`.
    pub fn this_program(log: Option<PathBuf>) -> ServerCommand {
        let arg0 = std::env::args_os()
            .next()
            .unwrap_or_else(|| OsString::from("rbuild"));
        ServerCommand {
            // The kernel's link to our own image works even when the binary was replaced.
            program: PathBuf::from("/proc/self/exe"),
            arg0,
            args: vec![OsString::from(SERVE_ARG)],
            log,
        }
    }
}

/// A running server process (our child until it exits). Dropping it waits briefly for the
/// server to exit (it does once its mount is gone) and reaps it; a server that still serves a
/// lazily detached mount is left to finish on its own.
#[derive(Debug)]
pub struct FuseServer {
    child: Option<Child>,
    pid: u32,
    target: PathBuf,
}

impl FuseServer {
    /// The server's process id (record it so other commands can find the server).
    pub fn pid(&self) -> u32 {
        self.pid
    }

    /// The mount point it serves.
    pub fn target(&self) -> &Path {
        &self.target
    }
}

impl Drop for FuseServer {
    fn drop(&mut self) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        let deadline = Instant::now() + Duration::from_secs(2);
        while Instant::now() < deadline {
            match child.try_wait() {
                Ok(Some(_)) | Err(_) => return,
                Ok(None) => std::thread::sleep(Duration::from_millis(2)),
            }
        }
    }
}

/// A failure to start or talk to the server of a mount at `target`: `cause` in lower case,
/// `hint` what to do (starting with "; ", or empty).
fn server_error(target: &Path, cause: String, hint: &str) -> MountError {
    MountError::Mount {
        driver: Driver::Fuse,
        target: target.to_path_buf(),
        cause: io::Error::other(cause),
        detail: hint.to_string(),
    }
}

/// Starts a detached server that mounts `spec` and returns once the mount is live (or with the
/// server's own error). The server ends itself when `owner` (if given) disappears.
pub fn spawn(
    command: &ServerCommand,
    spec: &MountSpec,
    owner: Option<&Path>,
) -> Result<FuseServer, MountError> {
    let target = &canonical_mount_point(&spec.target);
    let request = ServeRequest {
        layers: spec.layers.clone(),
        upper: spec.upper.clone(),
        work: spec.work.clone(),
        owner: owner.map(Path::to_path_buf),
    };
    let json = serde_json::to_vec(&request)
        .map_err(|e| server_error(target, format!("encoding the FUSE server request: {e}"), ""))?;
    let stderr = match &command.log {
        Some(log) => OpenOptions::new().create(true).append(true).open(log),
        None => OpenOptions::new().write(true).open("/dev/null"),
    }
    .map_err(|e| {
        server_error(
            target,
            format!("opening the FUSE server log: {}", super::lower_first(&e)),
            "",
        )
    })?;
    let mut cmd = Command::new(&command.program);
    cmd.arg0(&command.arg0)
        .args(&command.args)
        .arg(target)
        // Holding no directory of the caller's busy.
        .current_dir("/")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(stderr);
    // SAFETY: setsid and close_range are async-signal-safe system calls. setsid detaches the
    // server from our terminal and process group, so signals meant for this command do not
    // reach it; descriptors our own caller leaked to us (a shell's pipes, say) are marked
    // close-on-exec so the long-lived server does not hold them open.
    unsafe {
        cmd.pre_exec(|| {
            libc::setsid();
            libc::syscall(
                libc::SYS_close_range,
                3u32,
                u32::MAX,
                libc::CLOSE_RANGE_CLOEXEC,
            );
            Ok(())
        });
    }
    let mut child = cmd.spawn().map_err(|e| {
        server_error(
            target,
            format!(
                "starting the FUSE server {}: {}",
                command.program.display(),
                super::lower_first(&e)
            ),
            "",
        )
    })?;
    let pid = child.id();
    let written = child
        .stdin
        .take()
        .map(|mut stdin| stdin.write_all(&json))
        .unwrap_or(Ok(()));
    let mut answer = String::new();
    if let Some(mut stdout) = child.stdout.take() {
        // Ends when the server closes its readiness pipe (or dies).
        let _ = stdout.read_to_string(&mut answer);
    }
    let answer = answer.trim();
    if answer == "ok" {
        return Ok(FuseServer {
            child: Some(child),
            pid,
            target: target.clone(),
        });
    }
    let status = child.wait();
    if let Some(message) = answer.strip_prefix("error: ") {
        // The server's own mount error, which already names the mount point: passed on as it
        // is, not wrapped in a second "fuse mount at ... failed".
        return Err(MountError::Server {
            target: target.clone(),
            message: message.to_string(),
        });
    }
    let why = if let Err(e) = written {
        format!(
            "the FUSE server did not take its request: {}",
            super::lower_first(&e)
        )
    } else {
        match status {
            Ok(status) => format!("the FUSE server exited before mounting ({status})"),
            Err(e) => format!(
                "the FUSE server exited before mounting: {}",
                super::lower_first(&e)
            ),
        }
    };
    let hint = match &command.log {
        Some(log) => format!("; its log is {}", log.display()),
        None => String::new(),
    };
    Err(server_error(target, why, &hint))
}

/// The server side: mounts `request` at `target`, writes `ok` (or `error: <why>`) to `ready`
/// and closes it, then serves until the mount is gone (see the module documentation).
/// Call it from a single-threaded process: it blocks SIGTERM, SIGINT and SIGHUP for every
/// thread it starts and handles them itself.
pub fn serve(target: &Path, request: &ServeRequest, mut ready: File) -> Result<(), MountError> {
    let spec = request.spec(target);
    let stop_signals = stop_signal_set();
    // SAFETY: sigprocmask on a fully initialised set, before any thread exists.
    unsafe { libc::sigprocmask(libc::SIG_BLOCK, &stop_signals, std::ptr::null_mut()) };
    let started = super::super::validate(&spec).and_then(|()| {
        let (session, point) = super::new_session(&spec)?;
        // Opened while the mount is surely ours; bound to its connection (see control.rs).
        let connection = super::mount_connection(&point);
        let abort = AbortHandle::of_mount(&point);
        let session = session.spawn().map_err(|e| {
            server_error(
                target,
                format!("starting the FUSE session: {}", super::lower_first(&e)),
                "",
            )
        })?;
        Ok((session, point, connection, abort))
    });
    let (session, point, connection, abort) = match started {
        Ok(started) => started,
        Err(e) => {
            let _ = writeln!(ready, "error: {}", e.to_string().replace('\n', "; "));
            return Err(e);
        }
    };
    if let Err(e) = ready.write_all(b"ok\n") {
        // The caller died before it could record this mount: nobody would ever end it.
        take_down(&point, connection, abort.as_ref(), Duration::ZERO);
        return Err(server_error(
            target,
            format!(
                "the caller is gone, mount taken down: {}",
                super::lower_first(&e)
            ),
            "",
        ));
    }
    drop(ready);
    let owner = request.owner.clone();
    let _control = std::thread::Builder::new()
        .name("fuse-control".into())
        .spawn(move || {
            control(
                &point,
                owner.as_deref(),
                connection,
                abort.as_ref(),
                &stop_signals,
            )
        })
        .map_err(|e| {
            server_error(
                target,
                format!("starting the control thread: {}", super::lower_first(&e)),
                "",
            )
        })?;
    // Returns when the kernel ends the connection: unmounted, or detached and unused.
    session
        .join()
        .map_err(|e| server_error(target, format!("serving: {}", super::lower_first(&e)), ""))
}

/// SIGTERM, SIGINT and SIGHUP.
fn stop_signal_set() -> libc::sigset_t {
    // SAFETY: sigemptyset initialises the set before sigaddset uses it.
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        for signal in [libc::SIGTERM, libc::SIGINT, libc::SIGHUP] {
            libc::sigaddset(&mut set, signal);
        }
        set
    }
}

/// Waits for a stop signal or the loss of the owner record, then takes the mount at `point`
/// down.
fn control(
    point: &Path,
    owner: Option<&Path>,
    connection: Option<u32>,
    abort: Option<&AbortHandle>,
    signals: &libc::sigset_t,
) {
    let timeout = libc::timespec {
        tv_sec: OWNER_POLL.as_secs() as libc::time_t,
        tv_nsec: 0,
    };
    loop {
        // SAFETY: waits for signals blocked in every thread of this process.
        let signal = unsafe { libc::sigtimedwait(signals, std::ptr::null_mut(), &timeout) };
        if signal > 0 {
            break;
        }
        if owner.is_some_and(|owner| !owner.exists()) {
            break;
        }
    }
    take_down(point, connection, abort, ABORT_GRACE);
}

/// Detaches our mount at `point`, connection `connection` (never someone else's mount there),
/// waits `grace` for its last users, then aborts our connection through `abort` (never a later
/// mount that got its number) so the serving threads end.
fn take_down(point: &Path, connection: Option<u32>, abort: Option<&AbortHandle>, grace: Duration) {
    let ours = connection.is_some() && super::mount_connection(point) == connection;
    if ours {
        super::lazy_unmount(point);
    }
    std::thread::sleep(grace);
    if let Some(abort) = abort {
        let _ = abort.abort();
    }
}

/// `path` with its parent directory canonicalized: the form a server gets as its argument.
/// The mount point itself is not resolved, so a dead or busy mount there is never touched.
pub fn canonical_mount_point(path: &Path) -> PathBuf {
    match (path.parent(), path.file_name()) {
        (Some(parent), Some(name)) => parent
            .canonicalize()
            .map(|p| p.join(name))
            .unwrap_or_else(|_| path.to_path_buf()),
        _ => path.to_path_buf(),
    }
}

/// Whether `pid` is a live server of the mount point `target` (checked through its command
/// line, so a reused pid never matches).
pub fn is_server(pid: u32, target: &Path) -> bool {
    let target = canonical_mount_point(target);
    let Ok(cmdline) = fs::read(format!("/proc/{pid}/cmdline")) else {
        return false;
    };
    let args: Vec<&[u8]> = cmdline.split(|&b| b == 0).collect();
    let serve_at = args.iter().position(|a| *a == SERVE_ARG.as_bytes());
    let last = cmdline
        .strip_suffix(b"\0")
        .unwrap_or(&cmdline)
        .rsplit(|&b| b == 0)
        .next();
    serve_at.is_some() && last == Some(target.as_os_str().as_bytes())
}

/// Ends the server `pid` of `target` if it is still running: SIGTERM, up to `grace` for it to
/// exit (it detaches its mount), then SIGKILL, after which a dead mount left at `target` is
/// detached. Returns whether a server was found.
pub fn end_server(pid: u32, target: &Path, grace: Duration) -> bool {
    if pid == 0 || !is_server(pid, target) {
        return false;
    }
    let raw = pid as libc::pid_t;
    // SAFETY: kill(2) on a pid just checked to be the server.
    unsafe { libc::kill(raw, libc::SIGTERM) };
    if !wait_gone(pid, target, grace) {
        // SAFETY: as above.
        unsafe { libc::kill(raw, libc::SIGKILL) };
        wait_gone(pid, target, Duration::from_secs(5));
    }
    super::detach_stale(target);
    true
}

/// Waits up to `timeout` until `pid` no longer is a server of `target`; true when it is gone.
pub fn wait_gone(pid: u32, target: &Path, timeout: Duration) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        if !is_server(pid, target) {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_round_trips_as_json() {
        let request = ServeRequest {
            layers: vec!["/s/layers/a".into(), "/s/layers/b".into()],
            upper: Some("/s/c/upper".into()),
            work: Some("/s/c/work".into()),
            owner: Some("/s/c/state.json".into()),
        };
        let json = serde_json::to_string(&request).expect("encode");
        let back: ServeRequest = serde_json::from_str(&json).expect("decode");
        assert_eq!(back, request);
        let spec = back.spec(Path::new("/s/c/merged"));
        assert_eq!(spec.target, Path::new("/s/c/merged"));
        assert_eq!(spec.layers.len(), 2);
    }

    fn shell_server(script: &str) -> ServerCommand {
        ServerCommand {
            program: PathBuf::from("/bin/sh"),
            arg0: OsString::from("sh"),
            args: vec!["-c".into(), script.into(), "sh".into()],
            log: None,
        }
    }

    fn spec_in(dir: &Path) -> MountSpec {
        let target = dir.join("merged");
        fs::create_dir_all(&target).expect("mount point");
        MountSpec {
            layers: vec![dir.to_path_buf()],
            upper: None,
            work: None,
            target,
        }
    }

    #[test]
    fn the_server_error_text_reaches_the_caller() {
        let dir = tempfile::tempdir().expect("temp dir");
        let server = shell_server("cat >/dev/null; echo 'error: no luck with the layers'");
        let err = spawn(&server, &spec_in(dir.path()), None).expect_err("the server failed");
        assert!(err.to_string().contains("no luck with the layers"), "{err}");
    }

    #[test]
    fn a_server_that_dies_before_answering_is_an_error() {
        let dir = tempfile::tempdir().expect("temp dir");
        let err = spawn(&shell_server("exit 3"), &spec_in(dir.path()), None)
            .expect_err("the server died");
        assert!(err.to_string().contains("FUSE server"), "{err}");
    }

    #[test]
    fn the_request_and_mount_point_reach_the_server() {
        let dir = tempfile::tempdir().expect("temp dir");
        let seen = dir.path().join("seen");
        let script = format!("cat > {0}; echo \"$1\" >> {0}; echo ok", seen.display());
        let spec = spec_in(dir.path());
        let owner = dir.path().join("owner.json");
        let server = spawn(&shell_server(&script), &spec, Some(&owner)).expect("answered ok");
        drop(server);
        let text = fs::read_to_string(&seen).expect("what the server got");
        let (json, target) = text.split_once('}').expect("request then target");
        let request: ServeRequest =
            serde_json::from_str(&format!("{json}}}")).expect("request JSON");
        assert_eq!(request.layers, spec.layers);
        assert_eq!(request.owner.as_deref(), Some(owner.as_path()));
        assert_eq!(
            Path::new(target.trim()),
            canonical_mount_point(&spec.target)
        );
    }

    #[test]
    fn our_own_process_is_not_a_server() {
        assert!(!is_server(std::process::id(), Path::new("/")));
        assert!(!is_server(0, Path::new("/")));
        assert!(!end_server(
            std::process::id(),
            Path::new("/"),
            Duration::ZERO
        ));
    }
}
