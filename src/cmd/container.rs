//! Container commands: run, ps, start, stop, kill, rm, exec, logs, container-inspect, top, stats,
//! commit. Each container lives in containers/<id>/ of the store (see `container/state.rs`).

mod commit;
mod info;
mod lifecycle;
mod run;
mod start;
mod state;

use super::Globals;
use std::process::ExitCode;

pub use info::inspect_value;
pub(crate) use lifecycle::remove_orphaned_auto_remove;

/// Options of `run` that describe the container.
#[derive(Debug, Clone, clap::Args)]
pub struct RunArgs {
    /// Remove the container when it exits.
    #[arg(long)]
    pub rm: bool,
    /// Run in the background and print the container ID; output goes to the log.
    #[arg(short, long)]
    pub detach: bool,
    /// Keep stdin open.
    #[arg(short, long)]
    pub interactive: bool,
    /// Allocate a pseudo-terminal.
    #[arg(short, long)]
    pub tty: bool,
    /// Container name.
    #[arg(long)]
    pub name: Option<String>,
    /// Set an environment variable (KEY=VALUE, or KEY to take it from this environment).
    #[arg(short, long = "env", value_name = "KEY=VALUE")]
    pub env: Vec<String>,
    /// Read environment variables from a file (KEY=VALUE lines, # comments).
    #[arg(long)]
    pub env_file: Vec<std::path::PathBuf>,
    /// Bind mount HOST:CONTAINER[:ro|rw].
    #[arg(short, long = "volume")]
    pub volume: Vec<String>,
    /// Working directory inside the container.
    #[arg(short, long)]
    pub workdir: Option<String>,
    /// User (name or uid, optionally :group).
    #[arg(short, long)]
    pub user: Option<String>,
    /// Override the image's ENTRYPOINT ("" clears it).
    #[arg(long)]
    pub entrypoint: Option<String>,
    /// Hostname (default: the short container ID).
    #[arg(long)]
    pub hostname: Option<String>,
    /// Network: none (loopback only, the default), private (own namespace behind
    /// slirp4netns: reaches out, not the host's loopback services; also "bridge") or host.
    #[arg(long, default_value = "none")]
    pub network: String,
    /// Mount the root filesystem read-only.
    #[arg(long)]
    pub read_only: bool,
    /// Memory limit (e.g. 64m, 1g).
    #[arg(short, long)]
    pub memory: Option<String>,
    /// CPU quota in CPUs (e.g. 1.5).
    #[arg(long)]
    pub cpus: Option<f64>,
    /// Relative CPU weight.
    #[arg(long, short = 'c')]
    pub cpu_shares: Option<u64>,
    /// CPUs allowed (e.g. 0-1,3).
    #[arg(long)]
    pub cpuset_cpus: Option<String>,
    /// Maximum number of processes.
    #[arg(long)]
    pub pids_limit: Option<i64>,
    /// Block I/O weight (10-1000).
    #[arg(long)]
    pub blkio_weight: Option<u16>,
    /// Image (name, tag or ID).
    pub image: String,
    /// Command and arguments (replace the image's CMD).
    #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
    pub command: Vec<String>,
}

/// Container commands.
#[derive(Debug, clap::Subcommand)]
pub enum ContainerCommand {
    /// Run a command in a new container.
    Run(Box<RunArgs>),
    /// List containers.
    Ps {
        /// Show all containers (default: running only).
        #[arg(short, long)]
        all: bool,
        /// Only print IDs.
        #[arg(short, long)]
        quiet: bool,
    },
    /// Start stopped containers (in the background).
    Start {
        /// Containers (names or IDs).
        #[arg(required = true)]
        containers: Vec<String>,
    },
    /// Stop running containers: SIGTERM, then SIGKILL after a grace period.
    Stop {
        /// Seconds to wait before killing.
        #[arg(short, long, default_value_t = 10)]
        time: u64,
        /// Containers (names or IDs).
        #[arg(required = true)]
        containers: Vec<String>,
    },
    /// Send a signal to running containers.
    Kill {
        /// Signal name or number.
        #[arg(short, long, default_value = "KILL")]
        signal: String,
        /// Containers (names or IDs).
        #[arg(required = true)]
        containers: Vec<String>,
    },
    /// Remove containers.
    Rm {
        /// Kill and remove running containers.
        #[arg(short, long)]
        force: bool,
        /// Containers (names or IDs).
        #[arg(required = true)]
        containers: Vec<String>,
    },
    /// Run a command in a running container.
    Exec {
        /// Keep stdin open.
        #[arg(short, long)]
        interactive: bool,
        /// Allocate a pseudo-terminal.
        #[arg(short, long)]
        tty: bool,
        /// Run in the background.
        #[arg(short, long)]
        detach: bool,
        /// Set environment variables.
        #[arg(short, long = "env")]
        env: Vec<String>,
        /// User (name or uid, optionally :group).
        #[arg(short, long)]
        user: Option<String>,
        /// Working directory.
        #[arg(short, long)]
        workdir: Option<String>,
        /// Container (name or ID).
        container: String,
        /// Command and arguments.
        #[arg(trailing_var_arg = true, allow_hyphen_values = true, required = true)]
        command: Vec<String>,
    },
    /// Print a container's output (stdout and stderr as they were written, both to stdout; the
    /// log holds raw bytes without times, so there is no --timestamps or --since).
    Logs {
        /// Keep following the output until the container exits.
        #[arg(short, long)]
        follow: bool,
        /// Only the last N lines ("all" for every line).
        #[arg(short = 'n', long, default_value = "all", value_name = "N")]
        tail: String,
        /// Container (name or ID).
        container: String,
    },
    /// Show container details as JSON (`inspect` also finds containers).
    #[command(name = "container-inspect")]
    ContainerInspect {
        /// Go template, e.g. '{{.State.Status}}'.
        #[arg(short, long)]
        format: Option<String>,
        /// Containers (names or IDs).
        #[arg(required = true)]
        containers: Vec<String>,
    },
    /// Show the processes of a running container.
    Top {
        /// Container (name or ID).
        container: String,
    },
    /// Show CPU, memory and pid usage of running containers (from their cgroups).
    Stats {
        /// Print one sample and exit.
        #[arg(long)]
        no_stream: bool,
        /// Containers (default: all running).
        containers: Vec<String>,
    },
    /// Create an image from a container's changes.
    Commit {
        /// Container (name or ID).
        container: String,
        /// Image name[:tag].
        name: Option<String>,
    },
}

/// Runs one of these commands.
pub fn run(g: &Globals, cmd: ContainerCommand) -> anyhow::Result<ExitCode> {
    remove_orphaned_auto_remove(&g.store_root());
    match cmd {
        ContainerCommand::Run(args) => run::run(g, *args),
        ContainerCommand::Ps { all, quiet } => lifecycle::ps(g, all, quiet),
        ContainerCommand::Start { containers } => start::start_many(g, &containers),
        ContainerCommand::Stop { time, containers } => lifecycle::stop(g, time, &containers),
        ContainerCommand::Kill { signal, containers } => lifecycle::kill(g, &signal, &containers),
        ContainerCommand::Rm { force, containers } => lifecycle::rm(g, force, &containers),
        ContainerCommand::Exec {
            interactive,
            tty,
            detach,
            env,
            user,
            workdir,
            container,
            command,
        } => lifecycle::exec(
            g,
            lifecycle::ExecArgs {
                interactive,
                tty,
                detach,
                env,
                user,
                workdir,
                container,
                command,
            },
        ),
        ContainerCommand::Logs {
            follow,
            tail,
            container,
        } => info::logs(g, follow, info::parse_tail(&tail)?, &container),
        ContainerCommand::ContainerInspect { format, containers } => {
            info::inspect(g, format.as_deref(), &containers)
        }
        ContainerCommand::Top { container } => info::top(g, &container),
        ContainerCommand::Stats {
            no_stream,
            containers,
        } => info::stats(g, no_stream, &containers),
        ContainerCommand::Commit { container, name } => {
            commit::commit(g, &container, name.as_deref())
        }
    }
}
