//! Image management commands: import, images, tag, rmi, inspect, history, save, load, mount,
//! umount and system df/prune/check.

mod inspect;
pub(crate) mod list;
mod mount;
mod system;
mod tags;
pub(crate) mod template;
mod transfer;

pub(crate) use list::human_size;

use super::Globals;
use anyhow::Context;
use rbuild_layerfs::Store;
use std::path::PathBuf;
use std::process::ExitCode;

/// Image management commands (import, images, tag, ...)
#[derive(Debug, clap::Subcommand)]
pub enum ImageCommand {
    /// Create a base image from a root filesystem (a directory, a tar or - for stdin).
    Import(ImportArgs),
    /// List images.
    #[command(alias = "image-ls")]
    Images(ImagesArgs),
    /// Give an image another name: tag SOURCE TARGET.
    Tag(TagArgs),
    /// Remove images (untag; the image goes with its last tag).
    Rmi(RmiArgs),
    /// Show image details as JSON (like docker image inspect), or format them with -f.
    Inspect(InspectArgs),
    /// Show the history of an image.
    History(HistoryArgs),
    /// Write images to a tar (loadable by docker load, and an OCI image layout).
    Save(SaveArgs),
    /// Load images from a docker-archive or OCI archive tar.
    Load(LoadArgs),
    /// Mount an image read-only and print the mount point.
    Mount {
        /// Image (name, tag or ID); without it, list mounted images.
        image: Option<String>,
    },
    /// Unmount an image mounted with `rbuild mount`.
    Umount {
        /// Images (names, tags or IDs).
        #[arg(required = true)]
        images: Vec<String>,
    },
    /// Docker's `image` command group: ls, rm, inspect, history, tag, save, load, import, prune.
    Image {
        /// What to do.
        #[command(subcommand)]
        command: ImageGroupCommand,
    },
    /// Store maintenance: df, prune, check.
    System {
        /// What to do.
        #[command(subcommand)]
        command: SystemCommand,
    },
}

/// Arguments of `rbuild tag`.
#[derive(Debug, clap::Args)]
pub struct TagArgs {
    /// Existing image (name, tag or ID).
    pub source: String,
    /// New name[:tag].
    pub target: String,
}

/// Arguments of `rbuild rmi`.
#[derive(Debug, clap::Args)]
pub struct RmiArgs {
    /// Remove an image with several tags or a mounted image too.
    #[arg(short, long)]
    pub force: bool,
    /// Images (names, tags or IDs).
    #[arg(required = true)]
    pub images: Vec<String>,
}

/// Arguments of `rbuild inspect`.
#[derive(Debug, clap::Args)]
pub struct InspectArgs {
    /// Go template, e.g. '{{.Id}}' or '{{json .Config}}'.
    #[arg(short, long)]
    pub format: Option<String>,
    /// Images (names, tags or IDs).
    #[arg(required = true)]
    pub images: Vec<String>,
}

/// Arguments of `rbuild history`.
#[derive(Debug, clap::Args)]
pub struct HistoryArgs {
    /// Do not truncate output.
    #[arg(long)]
    pub no_trunc: bool,
    /// Only show image IDs.
    #[arg(short, long)]
    pub quiet: bool,
    /// Image (name, tag or ID).
    pub image: String,
}

/// Arguments of `rbuild save`.
#[derive(Debug, clap::Args)]
pub struct SaveArgs {
    /// Output file (default: stdout, when it is not a terminal).
    #[arg(short, long)]
    pub output: Option<PathBuf>,
    /// Images (names, tags or IDs).
    #[arg(required = true)]
    pub images: Vec<String>,
}

/// Arguments of `rbuild load`.
#[derive(Debug, clap::Args)]
pub struct LoadArgs {
    /// Input file (default: stdin).
    #[arg(short, long)]
    pub input: Option<PathBuf>,
    /// Print only the loaded image names.
    #[arg(short, long)]
    pub quiet: bool,
}

/// Arguments of `rbuild system prune` (and `image prune`).
#[derive(Debug, clap::Args)]
pub struct PruneArgs {
    /// Do not prompt (rbuild never prompts; accepted for docker compatibility).
    #[arg(short, long)]
    pub force: bool,
}

/// Arguments of `rbuild import`.
#[derive(Debug, clap::Args)]
pub struct ImportArgs {
    /// Apply a Dockerfile instruction to the config (CMD, ENTRYPOINT, ENV, EXPOSE, LABEL, USER,
    /// VOLUME, WORKDIR, STOPSIGNAL).
    #[arg(short, long = "change")]
    pub change: Vec<String>,
    /// Commit message.
    #[arg(short, long)]
    pub message: Option<String>,
    /// Layer compression: gzip, zstd or none.
    #[arg(long, default_value = "gzip")]
    pub compression: String,
    /// Root filesystem: a directory, a tar file (plain, gzip or zstd) or - for stdin.
    pub source: PathBuf,
    /// Name[:tag] for the image.
    pub name: Option<String>,
}

/// Arguments of `rbuild images`.
#[derive(Debug, clap::Args)]
pub struct ImagesArgs {
    /// Only show image IDs.
    #[arg(short, long)]
    pub quiet: bool,
    /// Accepted for docker compatibility; dangling images are always listed.
    #[arg(short, long)]
    pub all: bool,
    /// Do not truncate IDs.
    #[arg(long)]
    pub no_trunc: bool,
    /// Output format: table, json, or a Go template.
    #[arg(long)]
    pub format: Option<String>,
    /// Filter: dangling=true|false, reference=PATTERN (`*` wildcards), label=KEY[=VALUE].
    #[arg(short, long)]
    pub filter: Vec<String>,
    /// Only images of this repository (name or name:tag).
    pub repository: Option<String>,
}

/// `rbuild image ...`: the docker spellings of the image commands.
#[derive(Debug, clap::Subcommand)]
pub enum ImageGroupCommand {
    /// List images (same as `rbuild images`).
    #[command(alias = "list")]
    Ls(ImagesArgs),
    /// Remove images (same as `rbuild rmi`).
    #[command(alias = "remove")]
    Rm(RmiArgs),
    /// Show image details (same as `rbuild inspect`).
    Inspect(InspectArgs),
    /// Show the history of an image (same as `rbuild history`).
    History(HistoryArgs),
    /// Give an image another name (same as `rbuild tag`).
    Tag(TagArgs),
    /// Write images to a tar (same as `rbuild save`).
    Save(SaveArgs),
    /// Load images from a tar (same as `rbuild load`).
    Load(LoadArgs),
    /// Create a base image from a root filesystem (same as `rbuild import`).
    Import(ImportArgs),
    /// Remove dangling images and unreferenced data (same as `rbuild system prune`).
    Prune(PruneArgs),
}

impl From<ImageGroupCommand> for ImageCommand {
    fn from(c: ImageGroupCommand) -> ImageCommand {
        match c {
            ImageGroupCommand::Ls(args) => ImageCommand::Images(args),
            ImageGroupCommand::Rm(args) => ImageCommand::Rmi(args),
            ImageGroupCommand::Inspect(args) => ImageCommand::Inspect(args),
            ImageGroupCommand::History(args) => ImageCommand::History(args),
            ImageGroupCommand::Tag(args) => ImageCommand::Tag(args),
            ImageGroupCommand::Save(args) => ImageCommand::Save(args),
            ImageGroupCommand::Load(args) => ImageCommand::Load(args),
            ImageGroupCommand::Import(args) => ImageCommand::Import(args),
            ImageGroupCommand::Prune(args) => ImageCommand::System {
                command: SystemCommand::Prune(args),
            },
        }
    }
}

/// `rbuild system ...`
#[derive(Debug, clap::Subcommand)]
pub enum SystemCommand {
    /// Show disk usage.
    Df,
    /// Remove dangling images and unreferenced blobs, layers and temporary files.
    Prune(PruneArgs),
    /// Re-hash every blob and check the index, images and layers; exit 1 naming any problem.
    Check,
}

/// Opens the store at the configured root.
pub(crate) fn open_store(g: &Globals) -> anyhow::Result<Store> {
    let root = g.store_root();
    let store = Store::open(&root)
        .with_context(|| format!("opening the image store at {}", root.display()))?;
    report_recovery(&store);
    Ok(store)
}

/// Says on stderr what opening the store did about layers published before a crash or reboot
/// (nothing in the normal case).
pub(crate) fn report_recovery(store: &Store) {
    let r = store.recovered_at_open();
    if !r.recreated.is_empty() {
        eprintln!(
            "re-created {} layer(s) published before the last reboot from their blobs",
            r.recreated.len()
        );
    }
    for d in &r.removed {
        eprintln!("removed layer {d}: published before the last reboot, its files may be incomplete, and no blob or image in the store can restore it");
    }
    for (d, why) in &r.unrecovered {
        eprintln!("warning: layer {d} was published before the last reboot and could not be re-created: {why} (see `rbuild system check`)");
    }
}

/// Runs one of these commands.
pub fn run(g: &Globals, cmd: ImageCommand) -> anyhow::Result<ExitCode> {
    if let ImageCommand::Image { command } = cmd {
        // The `image` group only re-spells the other commands.
        return run(g, command.into());
    }
    let store = open_store(g)?;
    if matches!(cmd, ImageCommand::Rmi(_) | ImageCommand::System { .. }) {
        // They count the containers that use images and layers.
        crate::cmd::container::remove_orphaned_auto_remove(store.root());
    }
    match cmd {
        ImageCommand::Import(args) => transfer::import(&store, args),
        ImageCommand::Images(args) => list::images(&store, args),
        ImageCommand::Tag(a) => tags::tag(&store, &a.source, &a.target),
        ImageCommand::Rmi(a) => tags::rmi(&store, a.force, &a.images),
        ImageCommand::Inspect(a) => inspect::inspect(&store, a.format.as_deref(), &a.images),
        ImageCommand::History(a) => inspect::history(&store, &a.image, a.no_trunc, a.quiet),
        ImageCommand::Save(a) => transfer::save(&store, a.output.as_deref(), &a.images),
        ImageCommand::Load(a) => transfer::load(&store, a.input.as_deref(), a.quiet),
        ImageCommand::Mount { image } => mount::mount(g, &store, image.as_deref()),
        ImageCommand::Umount { images } => mount::umount(&store, &images),
        ImageCommand::Image { command } => run(g, command.into()),
        ImageCommand::System { command } => match command {
            SystemCommand::Df => system::df(&store),
            SystemCommand::Prune(_) => system::prune(&store),
            SystemCommand::Check => system::check(&store),
        },
    }
}
