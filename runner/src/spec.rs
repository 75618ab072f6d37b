//! What to run ([`ProcessSpec`]) and in which sandbox ([`SandboxSpec`]).

use std::path::PathBuf;

/// The process to execute inside the sandbox.
#[derive(Debug, Clone, Default)]
pub struct ProcessSpec {
    /// argv; `args[0]` is looked up in the container's PATH (from `env`) when it has no slash.
    pub args: Vec<String>,
    /// The complete environment as `KEY=VALUE`; nothing is inherited from the host.
    pub env: Vec<String>,
    /// Working directory inside the container (created when missing); empty means "/".
    pub cwd: String,
    /// `user[:group]`, names or numeric ids, resolved from the image's /etc/passwd and /etc/group;
    /// empty means root.
    pub user: String,
}

/// How the sandbox is connected to the network.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Network {
    /// A new network namespace with only the loopback interface, up.
    #[default]
    None,
    /// The host's network namespace; /etc/resolv.conf and /etc/hosts come from the host.
    Host,
    /// A new network namespace connected to the outside through slirp4netns (user-mode NAT;
    /// see [`crate::slirp`]): outbound connections and DNS work, the host's loopback services
    /// do not; /etc/resolv.conf names slirp's DNS forwarder.
    Private,
}

/// A host path bind-mounted into the container.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BindMount {
    /// Path on the host.
    pub source: PathBuf,
    /// Absolute path inside the container.
    pub target: String,
    /// Mount read-only.
    pub readonly: bool,
}

/// cgroup limits; `None` leaves a resource unlimited.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ResourceLimits {
    /// Memory limit in bytes (`--memory`); swap is limited to the same amount.
    pub memory: Option<u64>,
    /// CPU quota in CPUs (`--cpus 1.5`), enforced as a CFS quota over a 100 ms period.
    pub cpus: Option<f64>,
    /// Relative CPU weight (`--cpu-shares`, docker's 2..262144 scale; 1024 is the default).
    pub cpu_shares: Option<u64>,
    /// CPUs the process may run on (`--cpuset-cpus 0-1,3`).
    pub cpuset_cpus: Option<String>,
    /// Maximum number of tasks (`--pids-limit`).
    pub pids: Option<u64>,
    /// Relative block I/O weight, 10..1000 (`--blkio-weight`).
    pub blkio_weight: Option<u16>,
}

impl ResourceLimits {
    /// True when no limit is set (no cgroup is then strictly needed).
    pub fn is_empty(&self) -> bool {
        *self == ResourceLimits::default()
    }

    /// The command-line flags of the limits that are set, e.g. "--memory, --pids-limit".
    pub fn flags(&self) -> String {
        let set = [
            (self.memory.is_some(), "--memory"),
            (self.cpus.is_some(), "--cpus"),
            (self.cpu_shares.is_some(), "--cpu-shares"),
            (self.cpuset_cpus.is_some(), "--cpuset-cpus"),
            (self.pids.is_some(), "--pids-limit"),
            (self.blkio_weight.is_some(), "--blkio-weight"),
        ];
        let flags: Vec<&str> = set.iter().filter(|(on, _)| *on).map(|(_, f)| *f).collect();
        flags.join(", ")
    }
}

/// Where the process's stdin, stdout and stderr go.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum Stdio {
    /// The caller's own stdin, stdout and stderr.
    #[default]
    Inherit,
    /// stdin from /dev/null, stdout and stderr inherited (docker run without -i).
    NullStdin,
    /// stdin from /dev/null, stdout and stderr appended to this file.
    Log(PathBuf),
    /// A new pseudo-terminal, relayed to the caller's stdin/stdout (`-t`); with `log` set, the
    /// terminal output is appended to that file instead and stdin is not read.
    Pty {
        /// Append output here instead of relaying it to stdout.
        log: Option<PathBuf>,
    },
    /// The caller's stdout and stderr and a log both (`docker run` in the foreground): the
    /// process writes to two pipes, which [`crate::Running::wait`] copies to the caller's stdout
    /// and stderr and appends to `log` (both streams into the one file, each in order). Reading
    /// stops while the caller's side does not take more (backpressure); when the caller's stream
    /// is closed, the process's pipe is closed too, so it gets EPIPE/SIGPIPE as it would on the
    /// caller's own stream. stdin is the caller's with `stdin`, else /dev/null.
    Tee {
        /// Append both output streams here.
        log: PathBuf,
        /// Keep the caller's stdin (`-i`).
        stdin: bool,
    },
    /// A new pseudo-terminal relayed to the caller's stdin and stdout as with `Pty { log: None }`
    /// (`-t` in the foreground), its output also appended to `log`.
    PtyTee {
        /// Append the terminal output here as well.
        log: PathBuf,
    },
}

/// The sandbox around a process: root filesystem, namespaces, mounts, limits, stdio.
#[derive(Debug, Clone, Default)]
pub struct SandboxSpec {
    /// The prepared root filesystem (e.g. a union mount); it is bind-mounted, never modified
    /// except for creating missing mount points (which are removed again afterwards).
    pub rootfs: PathBuf,
    /// Hostname inside the UTS namespace.
    pub hostname: String,
    /// Network mode.
    pub network: Network,
    /// Extra bind mounts (`-v`).
    pub mounts: Vec<BindMount>,
    /// Mount the root filesystem read-only (`--read-only`).
    pub readonly_rootfs: bool,
    /// cgroup limits.
    pub limits: ResourceLimits,
    /// Name of the cgroup to create below the caller's own cgroup (e.g. "rbuild-<id>"); when
    /// `None` a unique name is chosen. A cgroup is always created so the sandbox can be measured
    /// and killed as a whole.
    pub cgroup_name: Option<String>,
    /// Process I/O.
    pub stdio: Stdio,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flags_name_the_limits_that_are_set() {
        assert_eq!(ResourceLimits::default().flags(), "");
        let limits = ResourceLimits {
            memory: Some(64 << 20),
            pids: Some(10),
            ..ResourceLimits::default()
        };
        assert_eq!(limits.flags(), "--memory, --pids-limit");
    }
}
