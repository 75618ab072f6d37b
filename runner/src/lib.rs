//! rbuild-runner: namespace sandbox, cgroup limits and container processes.
//!
//! The runner takes a root filesystem path and a process description and knows nothing of
//! images or layers. It forks (no async runtime needed):
//!
//! ```no_run
//! use rbuild_runner::{run, ProcessSpec, SandboxSpec, Network};
//! let sandbox = SandboxSpec {
//!     rootfs: "/path/to/rootfs".into(),
//!     hostname: "box".into(),
//!     network: Network::None,
//!     ..Default::default()
//! };
//! let process = ProcessSpec {
//!     args: vec!["/bin/sh".into(), "-c".into(), "echo hi".into()],
//!     env: vec!["PATH=/bin".into()],
//!     ..Default::default()
//! };
//! let status = run(&sandbox, &process)?;
//! assert_eq!(status.code, 0);
//! # Ok::<(), rbuild_runner::RunnerError>(())
//! ```
#![warn(missing_docs)]

pub mod caps;
pub mod cgroup;
pub mod error;
pub mod exec;
pub mod launch;
pub mod net;
pub mod process;
pub mod resolve;
pub mod rootfs;
pub mod sandbox;
pub mod seccomp;
pub mod slirp;
pub mod spec;
pub mod stale;
pub mod syscall;
pub mod tee;
pub mod user;

pub use cgroup::{Cgroup, Stats};
pub use error::{Result, RunnerError};
pub use exec::{exec, spawn_exec};
pub use sandbox::{run, spawn, ExitStatus, Running};
pub use spec::{BindMount, Network, ProcessSpec, ResourceLimits, SandboxSpec, Stdio};
