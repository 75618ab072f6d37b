//! `rbuild __fuse-serve TARGET` (hidden): the FUSE server process of a mount that outlives the
//! command that made it. The request (layers, upper dir, owner record) arrives as JSON on
//! stdin; readiness (`ok` or `error: ...`) goes back on stdout, which is then closed. See
//! `rbuild_layerfs::mount::fuse::server`.

use anyhow::Context;
use rbuild_layerfs::mount::fuse::server::{self, ServeRequest};
use std::fs::File;
use std::io::Read;
use std::os::fd::{AsRawFd, FromRawFd};
use std::path::PathBuf;
use std::process::ExitCode;

/// Arguments of the hidden server subcommand.
#[derive(Debug, clap::Args)]
pub struct FuseServeArgs {
    /// Mount point.
    pub target: PathBuf,
}

/// Runs the server until its mount is gone.
pub fn run(args: FuseServeArgs) -> anyhow::Result<ExitCode> {
    // Started as /proc/self/exe, the process would be called "exe" in ps and top.
    // SAFETY: PR_SET_NAME copies at most 16 bytes from a NUL-terminated string.
    unsafe { libc::prctl(libc::PR_SET_NAME, c"rbuild-fuse".as_ptr()) };
    let mut input = Vec::new();
    std::io::stdin()
        .read_to_end(&mut input)
        .context("reading the FUSE server request from stdin")?;
    let request: ServeRequest =
        serde_json::from_slice(&input).context("parsing the FUSE server request")?;
    // The readiness pipe moves off fd 1, which (like stdin) then points at /dev/null, so
    // closing it after the answer is the caller's end-of-file.
    // SAFETY: dup of our own stdout; the new descriptor is owned by `ready` alone.
    let ready_fd = unsafe { libc::fcntl(1, libc::F_DUPFD_CLOEXEC, 3) };
    if ready_fd < 0 {
        return Err(std::io::Error::last_os_error()).context("duplicating stdout");
    }
    // SAFETY: ready_fd was just created and nothing else owns it.
    let ready = unsafe { File::from_raw_fd(ready_fd) };
    let null = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/null")
        .context("opening /dev/null")?;
    for fd in [0, 1] {
        // SAFETY: dup2 onto the standard descriptors.
        unsafe { libc::dup2(null.as_raw_fd(), fd) };
    }
    drop(null);
    server::serve(&args.target, &request, ready)
        .with_context(|| format!("FUSE server of {}", args.target.display()))?;
    Ok(ExitCode::SUCCESS)
}

/// How this rbuild starts a FUSE server whose stderr goes to `log`.
pub fn server_command(log: Option<PathBuf>) -> server::ServerCommand {
    server::ServerCommand::this_program(log)
}
