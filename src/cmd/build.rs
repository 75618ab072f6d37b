//! `rbuild build` (and `rbuild -t NAME CONTEXT`).

use super::{ExitStatusError, Globals};
use anyhow::{bail, Context};
use rbuild_builder::exec::{self, BuildError, BuildOptions, Network, Progress};
use std::collections::BTreeMap;
use std::io::{IsTerminal, Read, Write};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

/// Arguments of `rbuild build`.
#[derive(Debug, clap::Args)]
pub struct BuildArgs {
    /// Name (and optionally tag) of the image, `name:tag`; may be given more than once.
    #[arg(short = 't', long = "tag")]
    pub tags: Vec<String>,
    /// The Dockerfile (default CONTEXT/Dockerfile); `-` reads it from stdin.
    #[arg(short = 'f', long = "file")]
    pub file: Option<String>,
    /// Build-time variable `KEY=VALUE` (`KEY` alone takes the value from the environment).
    #[arg(long = "build-arg")]
    pub build_args: Vec<String>,
    /// Secret for `RUN --mount=type=secret`: `id=ID,src=FILE` or `id=ID,env=VAR`; may be given
    /// more than once. Never stored in the image or the build cache.
    #[arg(long = "secret")]
    pub secrets: Vec<String>,
    /// Build this stage (and the stages it needs) instead of the last one.
    #[arg(long)]
    pub target: Option<String>,
    /// Run every step, ignoring the build cache.
    #[arg(long)]
    pub no_cache: bool,
    /// Refresh base images from their registry before building.
    #[arg(long)]
    pub pull: bool,
    /// Print only the image ID.
    #[arg(short = 'q', long)]
    pub quiet: bool,
    /// Write the image ID to this file.
    #[arg(long)]
    pub iidfile: Option<PathBuf>,
    /// Also export the built filesystem: `DIR`, `type=local,dest=DIR` or
    /// `type=tar,dest=FILE` (`-`: stdout).
    #[arg(short = 'o', long = "output")]
    pub output: Option<String>,
    /// Progress output: auto, plain or tty.
    #[arg(long, default_value = "auto")]
    pub progress: String,
    /// Network of RUN steps: default (private: its own namespace behind slirp4netns, which
    /// reaches out but not the host's loopback services; the host's when slirp4netns is
    /// missing), private, host or none.
    #[arg(long, default_value = "default")]
    pub network: String,
    /// Extra privilege for the Dockerfile, as BuildKit's entitlements: `network.host` lets
    /// `RUN --network=host` use the host's network; may be given more than once.
    #[arg(long = "allow")]
    pub allow: Vec<String>,
    /// Label `KEY=VALUE` added to the image; may be given more than once.
    #[arg(long = "label")]
    pub labels: Vec<String>,
    /// Layer compression: gzip or zstd.
    #[arg(long, default_value = "gzip")]
    pub compression: String,
    /// Creation time for reproducible builds (seconds since the epoch or RFC 3339); also clamps
    /// file mtimes in new layers. Defaults to SOURCE_DATE_EPOCH (environment or build arg).
    #[arg(long)]
    pub timestamp: Option<String>,
    /// Target platform (only the host's, linux/amd64, is supported).
    #[arg(long, default_value = "linux/amd64")]
    pub platform: String,
    /// Import build cache entries from this registry reference (repeatable); layers are pulled
    /// only when a step or the final image needs them.
    #[arg(long = "cache-from")]
    pub cache_from: Vec<String>,
    /// Export the build's cache entries (and their layers) to this registry reference.
    #[arg(long = "cache-to")]
    pub cache_to: Option<String>,
    /// Push every `-t` tag to its registry after the build.
    #[arg(long)]
    pub push: bool,
    /// Write the image ID, manifest digest, tags and pushed references as JSON to this file.
    #[arg(long)]
    pub metadata_file: Option<PathBuf>,
    /// Build context directory.
    pub context: PathBuf,
}

/// Plain-line progress on stdout (the RUN output passes through unchanged).
struct LineProgress;

impl Progress for LineProgress {
    fn step(&mut self, n: usize, total: usize, text: &str) {
        let _ = writeln!(std::io::stdout().lock(), "STEP {n}/{total}: {text}");
    }
    fn cached(&mut self) {
        let _ = writeln!(std::io::stdout().lock(), "--> CACHED");
    }
    fn finished(&mut self, elapsed: Duration) {
        let _ = writeln!(
            std::io::stdout().lock(),
            "--> {:.3}s",
            elapsed.as_secs_f64()
        );
    }
    fn output(&mut self, data: &[u8]) {
        let mut out = std::io::stdout().lock();
        let _ = out.write_all(data);
        let _ = out.flush();
    }
    fn note(&mut self, text: &str) {
        let _ = writeln!(std::io::stdout().lock(), "{text}");
    }
}

/// The live view on a terminal: a spinner with the running step and its time; finished steps
/// stay as one line each (with CACHED or their time); RUN output scrolls above the spinner.
struct TtyProgress {
    bar: Option<indicatif::ProgressBar>,
    current: String,
    cached: bool,
}

impl TtyProgress {
    fn new() -> TtyProgress {
        TtyProgress {
            bar: None,
            current: String::new(),
            cached: false,
        }
    }
}

impl Progress for TtyProgress {
    fn step(&mut self, n: usize, total: usize, text: &str) {
        self.current = format!("STEP {n}/{total}: {text}");
        self.cached = false;
        let bar = indicatif::ProgressBar::new_spinner();
        bar.set_style(
            indicatif::ProgressStyle::with_template("{spinner} {msg} {elapsed_precise}")
                .unwrap_or_else(|_| indicatif::ProgressStyle::default_spinner()),
        );
        bar.set_message(self.current.clone());
        bar.enable_steady_tick(Duration::from_millis(100));
        self.bar = Some(bar);
    }
    fn cached(&mut self) {
        self.cached = true;
    }
    fn finished(&mut self, elapsed: Duration) {
        if let Some(bar) = self.bar.take() {
            bar.finish_and_clear();
        }
        let tail = if self.cached {
            "\x1b[36mCACHED\x1b[0m".to_string()
        } else {
            format!("{:.3}s", elapsed.as_secs_f64())
        };
        let _ = writeln!(
            std::io::stdout().lock(),
            "\x1b[1m{}\x1b[0m  {tail}",
            self.current
        );
    }
    fn output(&mut self, data: &[u8]) {
        let write = || {
            let mut out = std::io::stdout().lock();
            let _ = out.write_all(data);
            let _ = out.flush();
        };
        match &self.bar {
            Some(bar) => bar.suspend(write),
            None => write(),
        }
    }
    fn note(&mut self, text: &str) {
        let _ = writeln!(std::io::stdout().lock(), "{text}");
    }
}

fn key_values(items: &[String], what: &str) -> anyhow::Result<BTreeMap<String, String>> {
    let mut map = BTreeMap::new();
    for item in items {
        match item.split_once('=') {
            Some((k, v)) if !k.is_empty() => {
                map.insert(k.to_string(), v.to_string());
            }
            None if what == "--build-arg" && !item.is_empty() => {
                // Docker: `--build-arg NAME` takes the value from the environment, if set.
                if let Ok(v) = std::env::var(item) {
                    map.insert(item.clone(), v);
                }
            }
            _ => bail!("invalid {what} {item:?}: write KEY=VALUE"),
        }
    }
    Ok(map)
}

fn parse_timestamp(t: &str) -> anyhow::Result<i64> {
    if let Ok(n) = t.trim().parse::<i64>() {
        return Ok(n);
    }
    rbuild_layerfs::image::parse_rfc3339(t.trim()).with_context(|| {
        format!("invalid timestamp {t:?}: give seconds since the epoch or an RFC 3339 time")
    })
}

/// Runs `rbuild build`.
pub fn run(g: &Globals, args: BuildArgs) -> anyhow::Result<ExitCode> {
    if args.platform != "linux/amd64" && args.platform != "linux/x86_64" {
        bail!(
            "platform {:?} is not supported: rbuild builds for the host platform linux/amd64",
            args.platform
        );
    }
    let store = super::image::open_store(g)?;
    // `rbuild build - < context.tar[.gz|.bz2|.xz|.zst]`: the context comes from stdin, with its
    // Dockerfile (-f names one inside it); `rbuild build - < Dockerfile`: anything that is not
    // a tar archive is the Dockerfile, and the context is empty. As `docker build -`.
    let mut stdin_dockerfile = None;
    let stdin_dir = if args.context.as_os_str() == "-" {
        let dir = store
            .scratch_dir("stdin-context")
            .context("creating a directory for the context from stdin")?;
        let input = rbuild_builder::exec::archive::read_stdin_input(
            &mut std::io::stdin().lock(),
            dir.path(),
        )
        .context("reading the build context from stdin")?;
        let context = match input {
            exec::archive::StdinInput::Context(ctx) => {
                if args.file.as_deref() == Some("-") {
                    bail!("the build context is read from stdin, so the Dockerfile cannot be: name it with -f PATH inside the archive");
                }
                ctx
            }
            exec::archive::StdinInput::Dockerfile(text) => {
                if args.file.is_some() {
                    bail!("with CONTEXT `-` and no tar archive on stdin the Dockerfile is read from stdin: drop -f");
                }
                stdin_dockerfile = Some(String::from_utf8(text).context(
                    "the Dockerfile read from stdin is not UTF-8 text (nor a tar archive)",
                )?);
                let empty = dir.path().join("empty");
                std::fs::create_dir(&empty).context("creating an empty build context")?;
                empty
            }
        };
        Some((dir, context))
    } else {
        None
    };
    let context = match &stdin_dir {
        Some((_, ctx)) => ctx.clone(),
        None => args.context.clone(),
    };
    // -f with a context from stdin names a file inside it.
    let file = match (&stdin_dir, args.file.clone()) {
        (Some(_), Some(f)) => Some(context.join(f).to_string_lossy().into_owned()),
        (_, f) => f,
    };
    if !context.is_dir() {
        bail!(
            "build context {} is not a directory: pass the folder that holds your files",
            context.display()
        );
    }
    // Paths inside a context from stdin are named relative to it, not by its scratch dir.
    let shown = |p: &std::path::Path| match (&stdin_dir, p.strip_prefix(&context)) {
        (Some(_), Ok(rel)) => format!("{} in the context archive from stdin", rel.display()),
        _ => p.display().to_string(),
    };
    let (dockerfile, dockerfile_name, dockerfile_path) = match file.as_deref() {
        _ if stdin_dockerfile.is_some() => (
            stdin_dockerfile.take().unwrap_or_default(),
            "-".to_string(),
            None,
        ),
        Some("-") => {
            let mut s = String::new();
            std::io::stdin()
                .read_to_string(&mut s)
                .context("reading the Dockerfile from stdin")?;
            (s, "-".to_string(), None)
        }
        Some(f) => (
            std::fs::read_to_string(f).with_context(|| {
                format!(
                    "reading Dockerfile {}: check the -f path",
                    shown(std::path::Path::new(f))
                )
            })?,
            f.to_string(),
            Some(PathBuf::from(f)),
        ),
        None => {
            let upper = context.join("Dockerfile");
            let lower = context.join("dockerfile");
            // Docker also takes a lower-case `dockerfile`; a missing file is named as
            // `Dockerfile`.
            let p = if !upper.exists() && lower.exists() {
                lower
            } else {
                upper
            };
            (
                std::fs::read_to_string(&p).with_context(|| {
                    format!("reading {}: add a Dockerfile or pass -f FILE", shown(&p))
                })?,
                "Dockerfile".to_string(),
                Some(p),
            )
        }
    };
    let output = args
        .output
        .as_deref()
        .map(super::build_output::Output::parse)
        .transpose()?;
    // A tar on stdout is all stdout carries (no progress, no image ID), as with docker.
    let tar_on_stdout = output == Some(super::build_output::Output::Tar(None));
    let mut opts = BuildOptions::new(&context, dockerfile);
    opts.temporary_context = stdin_dir.is_some();
    opts.dockerfile_name = dockerfile_name;
    if let (Some(_), Some(f)) = (&stdin_dir, &args.file) {
        // Named as given, not by the scratch dir the archive was unpacked into.
        opts.dockerfile_name = f.clone();
    }
    opts.dockerfile_path = dockerfile_path;
    for t in &args.tags {
        let tag = rbuild_layerfs::store::normalize_tag(t)
            .with_context(|| format!("invalid tag {t:?}: use name[:tag] in lower case"))?;
        opts.tags.push(tag);
    }
    opts.build_args = key_values(&args.build_args, "--build-arg")?;
    opts.labels = key_values(&args.labels, "--label")?;
    for flag in &args.secrets {
        let (id, value) =
            rbuild_builder::exec::run_mount::parse_secret_flag(flag).map_err(anyhow::Error::msg)?;
        opts.secrets.0.insert(id, value);
    }
    opts.target = args.target.clone();
    opts.no_cache = args.no_cache;
    opts.pull = args.pull;
    opts.network = match args.network.as_str() {
        "default" => default_run_network(true),
        "private" | "bridge" => Network::Private,
        "host" => Network::Host,
        "none" => Network::None,
        other => bail!("invalid --network {other:?}: use default, private, host or none"),
    };
    for entitlement in &args.allow {
        match entitlement.as_str() {
            "network.host" => opts.allow_network_host = true,
            other => bail!("--allow {other}: rbuild grants only network.host"),
        }
    }
    opts.compression = match args.compression.as_str() {
        "gzip" => rbuild_layerfs::layer::Compression::Gzip,
        "zstd" => rbuild_layerfs::layer::Compression::Zstd,
        other => bail!("invalid --compression {other:?}: use gzip or zstd"),
    };
    // As docker buildx: SOURCE_DATE_EPOCH from the environment is passed on as a build arg (so
    // `ARG SOURCE_DATE_EPOCH` sees it), and the build arg, however given, sets the epoch.
    if let Ok(e) = std::env::var("SOURCE_DATE_EPOCH") {
        if !e.trim().is_empty() {
            opts.build_args
                .entry("SOURCE_DATE_EPOCH".to_string())
                .or_insert(e);
        }
    }
    opts.timestamp = match (&args.timestamp, opts.build_args.get("SOURCE_DATE_EPOCH")) {
        (Some(t), _) => Some(parse_timestamp(t)?),
        (None, Some(e)) if !e.trim().is_empty() => {
            Some(parse_timestamp(e).context("SOURCE_DATE_EPOCH must be seconds since the epoch")?)
        }
        _ => None,
    };
    opts.driver = g
        .storage_driver
        .parse()
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    let tty = match args.progress.as_str() {
        "plain" => false,
        "tty" => true,
        "auto" => std::io::stdout().is_terminal(),
        other => bail!("invalid --progress {other:?}: use auto, plain or tty"),
    };
    let mut line = LineProgress;
    let mut live = TtyProgress::new();
    let mut silent = exec::Silent;
    let progress: &mut dyn Progress = match (args.quiet || tar_on_stdout, tty) {
        (true, _) => &mut silent,
        (false, true) => &mut live,
        (false, false) => &mut line,
    };
    let shared = rbuild_builder::cache::remote::RemoteCache::for_command(
        &args.cache_from,
        args.cache_to.as_deref(),
        &mut |m| eprintln!("{m}"),
    );
    opts.shared_cache = shared.clone().map(|c| c as _);
    let outcome = match exec::build(&store, &opts, progress) {
        Ok(o) => o,
        Err(e) => return Err(build_failure(e, args.quiet)),
    };
    if let Some(c) = &shared {
        c.finish(&store, args.cache_to.as_deref(), &mut |m| eprintln!("{m}"));
    }
    let id = outcome.image_id.to_string();
    let pushed = if args.push {
        let quiet = args.quiet;
        super::publish::push_tags(&store, &outcome.image_id, &opts.tags, &mut |line| {
            if !quiet {
                println!("{line}")
            }
        })?
    } else {
        Vec::new()
    };
    if let Some(f) = &args.metadata_file {
        let meta = serde_json::json!({
            "image_id": id,
            "manifest_digest": outcome.manifest_digest.to_string(),
            "tags": opts.tags,
            "steps": outcome.steps,
            "cached_steps": outcome.cached,
            "pushed": pushed,
        });
        std::fs::write(f, serde_json::to_vec_pretty(&meta)?)
            .with_context(|| format!("writing --metadata-file {}", f.display()))?;
    }
    if let Some(f) = &args.iidfile {
        std::fs::write(f, &id).with_context(|| format!("writing --iidfile {}", f.display()))?;
    }
    if let Some(output) = &output {
        output.export(&store, &id, opts.driver)?;
        if tar_on_stdout {
            return Ok(ExitCode::SUCCESS);
        }
    }
    // The image is built and tagged: a reader that went away (`rbuild build . | head -1`)
    // does not make that a failure, and never a panic.
    let mut out = std::io::stdout().lock();
    if !args.quiet {
        if let Some(log) = &outcome.log {
            let _ = writeln!(out, "Build log: {}", log.display());
        }
        for t in &opts.tags {
            let _ = writeln!(out, "Successfully tagged {t}");
        }
    }
    let _ = writeln!(out, "{id}");
    Ok(ExitCode::SUCCESS)
}

/// Turns a build error into the CLI's error: a failing RUN keeps its exit code, and its last
/// output lines are shown when they were not streamed (`-q`).
fn build_failure(e: BuildError, quiet: bool) -> anyhow::Error {
    if let BuildError::RunFailed { tail, .. } = &e {
        if quiet && !tail.is_empty() {
            let mut err = std::io::stderr().lock();
            let _ = writeln!(err, "last output lines:");
            for l in tail {
                let _ = writeln!(err, "  {l}");
            }
        }
    }
    anyhow::Error::new(ExitStatusError {
        code: e.exit_code(),
        message: e.to_string(),
    })
}

/// The network of RUN steps when none is asked for: a private one (slirp4netns) when it can be
/// made, else the host's, with a notice when `notice`.
pub fn default_run_network(notice: bool) -> Network {
    if rbuild_runner::slirp::available() {
        return Network::Private;
    }
    if notice {
        eprintln!(
            "notice: RUN steps share the host network: a private one needs slirp4netns and \
             access to /dev/net/tun"
        );
    }
    Network::Host
}
