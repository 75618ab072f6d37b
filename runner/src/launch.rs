//! The last steps in the container, shared by `run` and `exec`: capabilities, no_new_privs,
//! groups/gid/uid, seccomp, working directory, closing fds, exec.

use crate::caps;
use crate::error::{Result, RunnerError, SysContext};
use crate::resolve::{self, Kind};
use crate::spec::ProcessSpec;
use crate::user::{self, ResolvedUser};
use nix::unistd::{Gid, Uid};
use std::ffi::CString;
use std::os::fd::AsFd;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

/// A process ready to be launched: everything that can fail on bad input resolved up front.
#[derive(Debug, Clone)]
pub struct Launch {
    /// argv.
    pub args: Vec<String>,
    /// Environment (with HOME added from passwd when missing, as docker does).
    pub env: Vec<String>,
    /// Working directory inside the container.
    pub cwd: String,
    /// Ids to run as.
    pub user: ResolvedUser,
}

/// Why exec failed, with docker's exit codes (126 not executable, 127 not found).
#[derive(Debug)]
pub struct ExecFailure {
    /// Exit code to report.
    pub code: i32,
    /// Message for the user.
    pub message: String,
}

impl Launch {
    /// Validates `process` and resolves its user from /etc/passwd and /etc/group below `root`
    /// (an O_PATH handle of the container's root directory).
    pub fn prepare(process: &ProcessSpec, root: impl AsFd) -> Result<Launch> {
        if process.args.is_empty() || process.args[0].is_empty() {
            return Err(RunnerError::Invalid(
                "no command given: the image has no ENTRYPOINT or CMD, so pass one".into(),
            ));
        }
        let root = root.as_fd();
        let text = |rel: &str| -> Result<String> {
            Ok(resolve::read_in_root(root, rel)?
                .map(|b| String::from_utf8_lossy(&b).into_owned())
                .unwrap_or_default())
        };
        let passwd = user::parse_passwd(&text("etc/passwd")?);
        let groups = user::parse_group(&text("etc/group")?);
        let user = user::resolve(&process.user, &passwd, &groups)?;
        let mut env = process.env.clone();
        if !env.iter().any(|e| e.starts_with("HOME=")) {
            env.push(format!("HOME={}", user.home));
        }
        let cwd = if process.cwd.is_empty() {
            "/".to_string()
        } else {
            process.cwd.clone()
        };
        if !cwd.starts_with('/') {
            return Err(RunnerError::Invalid(format!(
                "working directory {cwd:?} is not an absolute path"
            )));
        }
        Ok(Launch {
            args: process.args.clone(),
            env,
            cwd,
            user,
        })
    }

    fn path_var(&self) -> &str {
        self.env
            .iter()
            .find_map(|e| e.strip_prefix("PATH="))
            .unwrap_or("/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin")
    }

    /// Finds argv[0] in the container's PATH (the container's, not the host's).
    fn program(&self) -> std::result::Result<String, ExecFailure> {
        let arg0 = &self.args[0];
        if arg0.contains('/') {
            return Ok(arg0.clone());
        }
        for dir in self.path_var().split(':').filter(|d| !d.is_empty()) {
            let candidate = format!("{}/{arg0}", dir.trim_end_matches('/'));
            if let Ok(m) = std::fs::metadata(&candidate) {
                if m.is_file() && m.permissions().mode() & 0o111 != 0 {
                    return Ok(candidate);
                }
            }
        }
        Err(ExecFailure {
            code: 127,
            message: format!("exec: {arg0:?}: executable file not found in $PATH"),
        })
    }

    /// Runs the final steps in the current process, which is already inside the container's
    /// mount namespace with its root at "/". Returns only on failure.
    pub fn exec(&self) -> ExecFailure {
        let fail = |e: RunnerError| ExecFailure {
            code: 126,
            message: e.to_string(),
        };
        // Working dir resolved inside the container before anything is dropped: magic links
        // (/proc/self/fd/N) are refused, symlinks cannot leave the root.
        let cwd = match resolve::open_root(Path::new("/")).and_then(|root| {
            resolve::open_in_root(
                &root,
                &self.cwd,
                Kind::Dir,
                &mut resolve::Created::default(),
            )
        }) {
            Ok(fd) => fd,
            Err(e) => {
                return fail(RunnerError::Invalid(format!(
                    "working directory {}: {e}",
                    self.cwd
                )))
            }
        };
        if let Err(e) = drop_privileges(&self.user) {
            return fail(e);
        }
        if let Err(e) = nix::unistd::fchdir(&cwd).sys(|| format!("chdir {}", self.cwd)) {
            return fail(e);
        }
        drop(cwd);
        let program = match self.program() {
            Ok(p) => p,
            Err(f) => return f,
        };
        let cstrings = |v: &[String]| -> Vec<CString> {
            v.iter()
                .map(|s| CString::new(s.replace('\0', "")).unwrap_or_default())
                .collect()
        };
        let argv = cstrings(&self.args);
        let envp = cstrings(&self.env);
        let Ok(prog) = CString::new(program.clone()) else {
            return ExecFailure {
                code: 127,
                message: format!("exec: {program:?}: invalid path"),
            };
        };
        close_fds_above_stderr();
        let err = nix::unistd::execve(&prog, &argv, &envp).unwrap_err();
        let code = if err == nix::Error::ENOENT { 127 } else { 126 };
        ExecFailure {
            code,
            message: format!("exec {program:?}: {err}"),
        }
    }
}

/// Capabilities to docker's default set, no_new_privs, groups, gid and uid, then seccomp.
fn drop_privileges(u: &ResolvedUser) -> Result<()> {
    caps::apply(caps::default_mask())?;
    caps::set_no_new_privs()?;
    let groups: Vec<Gid> = u.groups.iter().map(|g| Gid::from_raw(*g)).collect();
    if let Err(e) = nix::unistd::setgroups(&groups) {
        // In a user namespace with setgroups denied (rootless), groups cannot change.
        let denied =
            std::fs::read_to_string("/proc/self/setgroups").is_ok_and(|s| s.trim() == "deny");
        if !(e == nix::Error::EPERM && denied) {
            return Err(e).sys(|| format!("setgroups {:?}", u.groups));
        }
    }
    let gid = Gid::from_raw(u.gid);
    nix::unistd::setresgid(gid, gid, gid).map_err(|e| id_error("setgid", u.gid, e))?;
    let uid = Uid::from_raw(u.uid);
    nix::unistd::setresuid(uid, uid, uid).map_err(|e| id_error("setuid", u.uid, e))?;
    crate::seccomp::install()
}

/// A failed setuid/setgid to `id`. EINVAL means the id has no mapping in this user namespace:
/// a rootless sandbox maps only its caller, as root.
fn id_error(what: &str, id: u32, source: nix::Error) -> crate::RunnerError {
    let what = if source == nix::Error::EINVAL {
        format!(
            "{what} {id}: without root, the sandbox's user namespace holds only root (your own \
             user), so other user and group ids cannot be used"
        )
    } else {
        format!("{what} {id}")
    };
    crate::RunnerError::Sys { what, source }
}

/// Marks every fd above 2 close-on-exec (the error pipe still works until exec succeeds).
pub fn close_fds_above_stderr() {
    // SAFETY: close_range with CLOSE_RANGE_CLOEXEC only changes fd flags.
    let r = unsafe { libc::syscall(libc::SYS_close_range, 3u32, u32::MAX, 4u32) };
    if r != 0 {
        // Old kernels: close_range flags unsupported; set FD_CLOEXEC one by one.
        if let Ok(dir) = std::fs::read_dir("/proc/self/fd") {
            let fds: Vec<i32> = dir
                .filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
                .filter(|fd| *fd > 2)
                .collect();
            for fd in fds {
                // SAFETY: fcntl on an fd number; harmless if it is already closed.
                unsafe { libc::fcntl(fd, libc::F_SETFD, libc::FD_CLOEXEC) };
            }
        }
    }
}
