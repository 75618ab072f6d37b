//! The runner's error type.

use std::path::PathBuf;

/// Everything that can go wrong while preparing, running or inspecting a sandboxed process.
#[derive(Debug, thiserror::Error)]
pub enum RunnerError {
    /// A system call failed; `what` names the call and the thing it was applied to.
    #[error("{what}: {source}")]
    Sys {
        /// The operation and its object, e.g. "mount proc on /proc".
        what: String,
        /// The errno.
        #[source]
        source: nix::Error,
    },
    /// File I/O failed on `path`.
    #[error("{path}: {source}")]
    Io {
        /// The file or directory involved.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// The user/group spec could not be resolved from the image's /etc/passwd and /etc/group.
    #[error("user {spec:?}: {reason}")]
    User {
        /// The `user[:group]` spec as given.
        spec: String,
        /// Why it did not resolve.
        reason: String,
    },
    /// A resource limit was requested that the host's cgroups cannot enforce.
    #[error("cannot enforce {limit}: {reason}")]
    Unsupported {
        /// The limit, e.g. "--blkio-weight".
        limit: String,
        /// Why, and what to do about it.
        reason: String,
    },
    /// The process description is unusable (empty argv, bad working dir, ...).
    #[error("{0}")]
    Invalid(String),
    /// The command could not be executed (126: not executable, 127: not found), as docker reports.
    #[error("{message}")]
    Exec {
        /// Exit code docker would use.
        code: i32,
        /// What failed.
        message: String,
    },
    /// The sandbox failed while setting itself up, before the process was executed.
    #[error("container setup failed: {0}")]
    Setup(String),
}

/// Shorthand for results in this crate.
pub type Result<T, E = RunnerError> = std::result::Result<T, E>;

/// Adds "what was being done" context to nix results.
pub(crate) trait SysContext<T> {
    /// Wraps an errno with the operation that produced it.
    fn sys(self, what: impl FnOnce() -> String) -> Result<T>;
}

impl<T> SysContext<T> for nix::Result<T> {
    fn sys(self, what: impl FnOnce() -> String) -> Result<T> {
        self.map_err(|source| RunnerError::Sys {
            what: what(),
            source,
        })
    }
}

impl<T> SysContext<T> for rustix::io::Result<T> {
    fn sys(self, what: impl FnOnce() -> String) -> Result<T> {
        self.map_err(|e| RunnerError::Sys {
            what: what(),
            source: nix::Error::from_raw(e.raw_os_error()),
        })
    }
}

/// Adds the path to std::io results.
pub(crate) trait IoContext<T> {
    /// Wraps an I/O error with the path involved.
    fn at(self, path: impl Into<PathBuf>) -> Result<T>;
}

impl<T> IoContext<T> for std::io::Result<T> {
    fn at(self, path: impl Into<PathBuf>) -> Result<T> {
        self.map_err(|source| RunnerError::Io {
            path: path.into(),
            source,
        })
    }
}
