//! `rbuild pipeline`: builds the images of an `rbuild.yaml` as a DAG (independent ones in
//! parallel), optionally pushes their tags, and ends with a summary table.

use super::{ExitStatusError, Globals};
use anyhow::Context;
use rbuild_builder::cache::remote::RemoteCache;
use rbuild_builder::exec::{self, BuildOptions, Progress};
use rbuild_builder::pipeline::{load_plan, run_dag, OutcomeStatus, Plan, PlannedImage};
use rbuild_layerfs::Store;
use serde::Serialize;
use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

/// Arguments of `rbuild pipeline`.
#[derive(Debug, clap::Args)]
pub struct PipelineArgs {
    /// Pipeline file.
    #[arg(short = 'f', long, default_value = "rbuild.yaml")]
    pub file: PathBuf,
    /// Push every tag of every built image.
    #[arg(long)]
    pub push: bool,
    /// Print the resolved plan as JSON and build nothing.
    #[arg(long)]
    pub print: bool,
    /// Write image IDs, manifest digests and pushed references as JSON to this file.
    #[arg(long)]
    pub metadata_file: Option<PathBuf>,
    /// How many images build at once.
    #[arg(long, default_value_t = 2)]
    pub jobs: usize,
    /// Ignore the build cache.
    #[arg(long)]
    pub no_cache: bool,
    /// Import build cache entries from this registry reference (repeatable; added to the
    /// file's `cache.from`).
    #[arg(long = "cache-from")]
    pub cache_from: Vec<String>,
    /// Export the cache entries of all images to this registry reference (overrides `cache.to`).
    #[arg(long = "cache-to")]
    pub cache_to: Option<String>,
    /// Build only these images (and what they depend on).
    pub images: Vec<String>,
}

/// What one image of the pipeline produced.
#[derive(Debug, Clone, Serialize)]
struct Built {
    image_id: String,
    manifest_digest: String,
    tags: Vec<String>,
    steps: usize,
    cached_steps: usize,
    pushed: Vec<String>,
}

/// Runs `rbuild pipeline`.
pub fn run(g: &Globals, args: PipelineArgs) -> anyhow::Result<ExitCode> {
    let plan = load_plan(&args.file, &args.images)?;
    if args.print {
        println!("{}", serde_json::to_string_pretty(&plan)?);
        return Ok(ExitCode::SUCCESS);
    }
    let store = super::image::open_store(g)?;
    let driver = g
        .storage_driver
        .parse()
        .map_err(|e| anyhow::anyhow!("--storage-driver: {e}"))?;
    let timestamp = match std::env::var("SOURCE_DATE_EPOCH") {
        Ok(v) if !v.trim().is_empty() => Some(
            v.trim()
                .parse::<i64>()
                .context("SOURCE_DATE_EPOCH must be seconds since the epoch")?,
        ),
        _ => None,
    };
    let mut cache_from = args.cache_from.clone();
    cache_from.extend(plan.cache.from.iter().cloned());
    let cache_to = args.cache_to.clone().or_else(|| plan.cache.to.clone());
    let shared =
        RemoteCache::for_command(&cache_from, cache_to.as_deref(), &mut |m| eprintln!("{m}"));
    let outcomes = run_dag(&plan, args.jobs, |img| {
        build_one(&store, img, &args, driver, timestamp, shared.as_ref())
            .map_err(|e| format!("{e:#}"))
    });
    if let Some(c) = &shared {
        c.finish(&store, cache_to.as_deref(), &mut |m| eprintln!("{m}"));
    }
    print_summary(&plan, &outcomes);
    if let Some(path) = &args.metadata_file {
        let meta: serde_json::Map<String, serde_json::Value> = outcomes
            .iter()
            .filter_map(|o| match &o.status {
                OutcomeStatus::Built(b) => Some((o.name.clone(), serde_json::to_value(b).ok()?)),
                _ => None,
            })
            .collect();
        std::fs::write(path, serde_json::to_vec_pretty(&meta)?)
            .with_context(|| format!("writing --metadata-file {}", path.display()))?;
    }
    let failed: Vec<String> = outcomes
        .iter()
        .filter_map(|o| match &o.status {
            OutcomeStatus::Built(_) => None,
            OutcomeStatus::Failed(e) => Some(format!("{} ({e})", o.name)),
            OutcomeStatus::Skipped(deps) => {
                Some(format!("{} (skipped: {} failed)", o.name, deps.join(", ")))
            }
        })
        .collect();
    if failed.is_empty() {
        return Ok(ExitCode::SUCCESS);
    }
    Err(anyhow::Error::new(ExitStatusError {
        code: 1,
        message: format!(
            "{}: {} of {} images failed: {}",
            plan.file.display(),
            failed.len(),
            outcomes.len(),
            failed.join("; ")
        ),
    }))
}

fn build_one(
    store: &Store,
    img: &PlannedImage,
    args: &PipelineArgs,
    driver: rbuild_layerfs::mount::Driver,
    timestamp: Option<i64>,
    shared: Option<&Arc<RemoteCache>>,
) -> anyhow::Result<Built> {
    let dockerfile = std::fs::read_to_string(&img.dockerfile)
        .with_context(|| format!("image {:?}: reading {}", img.name, img.dockerfile.display()))?;
    let mut opts = BuildOptions::new(&img.context, dockerfile);
    opts.dockerfile_name = img.dockerfile.display().to_string();
    opts.dockerfile_path = Some(img.dockerfile.clone());
    for t in &img.tags {
        let tag = rbuild_layerfs::store::normalize_tag(t)
            .with_context(|| format!("image {:?}: tags: invalid tag {t:?}", img.name))?;
        opts.tags.push(tag);
    }
    opts.build_args = img.args.clone();
    opts.labels = img.labels.clone();
    opts.target = img.target.clone();
    opts.no_cache = args.no_cache;
    opts.network = super::build::default_run_network(false);
    opts.driver = driver;
    opts.timestamp = timestamp;
    opts.shared_cache = shared.map(|c| c.clone() as _);
    let mut progress = PrefixedProgress::new(&img.name);
    let outcome = exec::build(store, &opts, &mut progress)?;
    progress.flush();
    let pushed = if args.push && !img.tags.is_empty() {
        let prefix = format!("[{}] ", img.name);
        super::publish::push_tags(store, &outcome.image_id, &img.tags, &mut |line| {
            println!("{prefix}{line}")
        })
        .with_context(|| format!("image {:?}", img.name))?
    } else {
        Vec::new()
    };
    Ok(Built {
        image_id: outcome.image_id.to_string(),
        manifest_digest: outcome.manifest_digest.to_string(),
        tags: opts.tags,
        steps: outcome.steps,
        cached_steps: outcome.cached,
        pushed,
    })
}

fn print_summary(plan: &Plan, outcomes: &[rbuild_builder::pipeline::ImageOutcome<Built>]) {
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "\nSUMMARY {}", plan.file.display());
    let _ = writeln!(
        out,
        "{:<16} {:<14} {:>8} {:>7} {:<7} TAGS",
        "IMAGE", "ID", "TIME", "CACHED", "PUSHED"
    );
    for o in outcomes {
        let tags = plan
            .image(&o.name)
            .map(|i| i.tags.join(","))
            .unwrap_or_default();
        let (id, cached, pushed) = match &o.status {
            OutcomeStatus::Built(b) => (
                b.image_id[7..19].to_string(),
                format!("{}/{}", b.cached_steps, b.steps),
                if b.pushed.is_empty() { "no" } else { "yes" }.to_string(),
            ),
            OutcomeStatus::Failed(_) => ("FAILED".into(), "-".into(), "no".into()),
            OutcomeStatus::Skipped(_) => ("SKIPPED".into(), "-".into(), "no".into()),
        };
        let _ = writeln!(
            out,
            "{:<16} {:<14} {:>7.2}s {:>7} {:<7} {}",
            o.name,
            id,
            o.elapsed.as_secs_f64(),
            cached,
            pushed,
            tags
        );
    }
}

/// Build progress for one image of a pipeline: every line prefixed with `[name]`, so parallel
/// builds stay readable in a CI log.
struct PrefixedProgress {
    prefix: String,
    partial: Vec<u8>,
}

impl PrefixedProgress {
    fn new(name: &str) -> Self {
        PrefixedProgress {
            prefix: format!("[{name}] "),
            partial: Vec::new(),
        }
    }

    fn line(&self, text: &str) {
        let _ = writeln!(std::io::stdout().lock(), "{}{text}", self.prefix);
    }

    fn flush(&mut self) {
        if !self.partial.is_empty() {
            let text = String::from_utf8_lossy(&self.partial).into_owned();
            self.partial.clear();
            self.line(&text);
        }
    }
}

impl Progress for PrefixedProgress {
    fn step(&mut self, n: usize, total: usize, text: &str) {
        self.flush();
        self.line(&format!("STEP {n}/{total}: {text}"));
    }
    fn cached(&mut self) {
        self.line("--> CACHED");
    }
    fn finished(&mut self, elapsed: Duration) {
        self.flush();
        self.line(&format!("--> {:.3}s", elapsed.as_secs_f64()));
    }
    fn output(&mut self, data: &[u8]) {
        self.partial.extend_from_slice(data);
        while let Some(pos) = self.partial.iter().position(|b| *b == b'\n') {
            let rest = self.partial.split_off(pos + 1);
            let line = std::mem::replace(&mut self.partial, rest);
            self.line(String::from_utf8_lossy(&line[..line.len() - 1]).as_ref());
        }
    }
    fn note(&mut self, text: &str) {
        self.line(text);
    }
}
