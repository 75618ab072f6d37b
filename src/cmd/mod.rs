//! Subcommand definitions and dispatch. Each area owns one module with its own subcommand enum.

pub mod build;
pub mod build_output;
pub mod builder_cache;
pub mod container;
pub mod fuse_serve;
pub mod image;
pub mod pipeline;
pub mod publish;
pub mod registry;

use clap::{Parser, Subcommand};
use std::ffi::OsString;
use std::path::PathBuf;
use std::process::ExitCode;

/// rbuild: build, run and ship container images.
#[derive(Debug, Parser)]
#[command(
    name = "rbuild",
    version,
    about,
    args_conflicts_with_subcommands = false
)]
pub struct Cli {
    /// Options shared by every subcommand.
    #[command(flatten)]
    pub globals: Globals,
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// Options shared by every subcommand.
#[derive(Debug, Clone, clap::Args)]
pub struct Globals {
    /// Store root (default /var/lib/rbuild for root, else $XDG_DATA_HOME/rbuild).
    #[arg(long, global = true, env = "RBUILD_ROOT")]
    pub root: Option<PathBuf>,
    /// Union filesystem driver: overlay, fuse or auto.
    #[arg(
        long,
        global = true,
        env = "RBUILD_STORAGE_DRIVER",
        default_value = "auto"
    )]
    pub storage_driver: String,
}

impl Globals {
    /// The store root to use, after flags, environment and defaults.
    pub fn store_root(&self) -> PathBuf {
        if let Some(root) = &self.root {
            return root.clone();
        }
        if nix::unistd::geteuid().is_root() {
            return PathBuf::from("/var/lib/rbuild");
        }
        if let Some(data) = std::env::var_os("XDG_DATA_HOME").filter(|v| !v.is_empty()) {
            return PathBuf::from(data).join("rbuild");
        }
        let home = std::env::var_os("HOME").unwrap_or_else(|| "/".into());
        PathBuf::from(home).join(".local/share/rbuild")
    }
}

/// Every subcommand, grouped by the module that implements it.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Build an image from a Dockerfile.
    Build(Box<build::BuildArgs>),
    /// Image management commands.
    #[command(flatten)]
    Image(image::ImageCommand),
    /// Container commands.
    #[command(flatten)]
    Container(container::ContainerCommand),
    /// Registry commands.
    #[command(flatten)]
    Registry(registry::RegistryCommand),
    /// Build a set of images described by rbuild.yaml.
    Pipeline(pipeline::PipelineArgs),
    /// Build cache commands.
    Builder {
        /// What to do.
        #[command(subcommand)]
        command: builder_cache::BuilderCommand,
    },
    /// Serve a FUSE mount that outlives the command that made it (internal).
    #[command(name = "__fuse-serve", hide = true)]
    FuseServe(fuse_serve::FuseServeArgs),
}

/// Runs the parsed command line; the returned code is the process exit code.
pub fn dispatch(cli: Cli) -> anyhow::Result<ExitCode> {
    let g = cli.globals;
    match cli.command {
        Command::Build(args) => build::run(&g, *args),
        Command::Image(c) => image::run(&g, c),
        Command::Container(c) => container::run(&g, c),
        Command::Registry(c) => registry::run(&g, c),
        Command::Pipeline(args) => pipeline::run(&g, args),
        Command::FuseServe(args) => fuse_serve::run(args),
        Command::Builder { command } => builder_cache::run(&g, command),
    }
}

/// Exit code for an error: a wrapped [`ExitStatusError`] keeps its code, anything else is 1.
pub fn exit_code_of(err: &anyhow::Error) -> u8 {
    err.chain()
        .find_map(|e| e.downcast_ref::<ExitStatusError>())
        .map(|e| e.code)
        .unwrap_or(1)
}

/// An error that carries the exit code rbuild should end with (e.g. a failing RUN step's code).
#[derive(Debug)]
pub struct ExitStatusError {
    /// Process exit code to use.
    pub code: u8,
    /// One-line reason.
    pub message: String,
}

impl std::fmt::Display for ExitStatusError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for ExitStatusError {}

/// Makes `rbuild -t name .` mean `rbuild build -t name .`: when the first argument after the
/// global options is not a subcommand, `build` is inserted.
pub fn normalize_args(mut args: Vec<OsString>) -> Vec<OsString> {
    use clap::CommandFactory;
    let cmd = Cli::command();
    let mut i = 1;
    while i < args.len() {
        let a = args[i].to_string_lossy().into_owned();
        if a == "--root" || a == "--storage-driver" {
            i += 2;
            continue;
        }
        if a.starts_with("--root=") || a.starts_with("--storage-driver=") {
            i += 1;
            continue;
        }
        let is_sub = cmd
            .get_subcommands()
            .any(|s| s.get_name() == a || s.get_all_aliases().any(|al| al == a));
        let is_help = matches!(a.as_str(), "-h" | "--help" | "-V" | "--version" | "help");
        if !is_sub && !is_help {
            args.insert(i, OsString::from("build"));
        }
        break;
    }
    args
}
