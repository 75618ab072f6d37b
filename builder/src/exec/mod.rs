//! Build execution: stage planning, per-instruction execution, layers and the final image.
//!
//! Every step gets a content-true cache key before anything is copied or mounted; a hit takes
//! the recorded image state (config, history, layers) as is, so a fully cached build mounts
//! nothing and yields the same image ID. A miss runs the step on an overlay of the parent's
//! layers with a fresh upper dir, which becomes the step's layer through `commit_upper`.

pub mod archive;
pub mod config;
mod copy;
pub mod fswrite;
mod git_source;
pub mod image;
pub mod plan;
pub mod precheck;
pub mod progress;
mod run;
pub mod run_mount;
mod run_mount_setup;
mod step;
pub mod users;

pub use progress::{Progress, Reporter, Silent};

use crate::cache::{CacheError, CacheIndex, CacheKey, KeyBuilder, LayerRef};
use crate::context::{BuildContext, ContextError, PathFilter, StatCache};
use crate::dockerfile::{Dockerfile, DockerfileError, ShellLex};
use config::ImageConfig;
use image::ImageState;
use plan::{Base, Plan};
use rbuild_layerfs::layer::{Compression, WriteOptions};
use rbuild_layerfs::mount::{mount_union, Driver, MountSpec};
use rbuild_layerfs::{Digest, Store};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{Instant, SystemTime};

/// Errors that stop a build. `Display` is one line that names the Dockerfile line when there is
/// one, so it can be the last line a CI log shows.
#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    /// The Dockerfile is invalid (reported before anything runs).
    #[error(transparent)]
    Dockerfile(#[from] DockerfileError),
    /// The build context could not be read.
    #[error(transparent)]
    Context(#[from] ContextError),
    /// The build cache could not be written.
    #[error(transparent)]
    Cache(#[from] CacheError),
    /// A step failed.
    #[error("Dockerfile:{line}: {instruction}: {message}")]
    Step {
        /// 1-based Dockerfile line.
        line: usize,
        /// The instruction as written.
        instruction: String,
        /// What went wrong and what to do.
        message: String,
    },
    /// A RUN step exited with a non-zero code.
    #[error("Dockerfile:{line}: `{instruction}` returned a non-zero code: {code}")]
    RunFailed {
        /// 1-based Dockerfile line.
        line: usize,
        /// The instruction as written.
        instruction: String,
        /// The command's exit code.
        code: i32,
        /// The last lines of its output.
        tail: Vec<String>,
    },
    /// The store (blobs, layers, mounts, images) failed.
    #[error("{what}: {source}")]
    Store {
        /// What was being done.
        what: String,
        /// Cause.
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// The build was asked for something the Dockerfile does not have (e.g. an unknown target).
    #[error("{0}")]
    Usage(String),
    /// A file outside the store could not be used.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// Cause.
        source: std::io::Error,
    },
}

impl BuildError {
    /// Wraps a store-side error with what was being done.
    pub fn store(
        what: impl Into<String>,
        e: impl std::error::Error + Send + Sync + 'static,
    ) -> Self {
        BuildError::Store {
            what: what.into(),
            source: Box::new(e),
        }
    }

    /// The exit code a CLI should end with: a failing RUN's own code, else 1.
    pub fn exit_code(&self) -> u8 {
        match self {
            BuildError::RunFailed { code, .. } if (1..=255).contains(code) => *code as u8,
            _ => 1,
        }
    }
}

/// Network of RUN steps.
pub use rbuild_runner::Network;

/// Everything `rbuild build` can be asked to do.
#[derive(Debug, Clone)]
pub struct BuildOptions {
    /// The build context directory.
    pub context: PathBuf,
    /// The Dockerfile text (from `-f FILE`, `-f -` or `<context>/Dockerfile`).
    pub dockerfile: String,
    /// Name under which the Dockerfile is reported in errors.
    pub dockerfile_name: String,
    /// Where the Dockerfile was read from (`None` for stdin): a `<Dockerfile>.dockerignore`
    /// beside it takes the place of the context's `.dockerignore`, as in Docker.
    pub dockerfile_path: Option<PathBuf>,
    /// Tags to give the image.
    pub tags: Vec<String>,
    /// `--build-arg`s.
    pub build_args: BTreeMap<String, String>,
    /// `--target` stage.
    pub target: Option<String>,
    /// `--no-cache`: run every step.
    pub no_cache: bool,
    /// `--pull`: refresh base images from their registry.
    pub pull: bool,
    /// Network of RUN steps (host by default, as Docker).
    pub network: Network,
    /// `--allow network.host`: a Dockerfile's `RUN --network=host` may use the host's network
    /// (as BuildKit's entitlement; also granted when [`BuildOptions::network`] is the host's).
    pub allow_network_host: bool,
    /// `--label`s added to the final image.
    pub labels: BTreeMap<String, String>,
    /// Layer compression.
    pub compression: Compression,
    /// `--timestamp` / SOURCE_DATE_EPOCH: clamps mtimes and sets created times.
    pub timestamp: Option<i64>,
    /// Target platform (`linux/amd64`).
    pub platform: String,
    /// Union filesystem driver.
    pub driver: Driver,
    /// Registry-shared cache (`--cache-from`/`--cache-to`): extra records, layers on demand.
    pub shared_cache: Option<std::sync::Arc<dyn crate::cache::shared::SharedCache>>,
    /// The context is a temporary directory (unpacked from stdin): its stat cache is kept in
    /// memory only, since no later build sees the same directory.
    pub temporary_context: bool,
    /// Secrets for `RUN --mount=type=secret` (`--secret`), by id.
    pub secrets: Secrets,
}

/// Build secrets by id; their values never show in debug output, a layer or a cache key.
#[derive(Clone, Default)]
pub struct Secrets(pub BTreeMap<String, Vec<u8>>);

impl std::fmt::Debug for Secrets {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list().entries(self.0.keys()).finish()
    }
}

impl BuildOptions {
    /// Options for building `context` with `dockerfile` text, Docker's defaults otherwise.
    pub fn new(context: &Path, dockerfile: String) -> BuildOptions {
        BuildOptions {
            context: context.to_path_buf(),
            dockerfile,
            dockerfile_name: "Dockerfile".into(),
            dockerfile_path: None,
            tags: Vec::new(),
            build_args: BTreeMap::new(),
            target: None,
            no_cache: false,
            pull: false,
            network: Network::Host,
            allow_network_host: false,
            labels: BTreeMap::new(),
            compression: Compression::Gzip,
            timestamp: None,
            platform: "linux/amd64".into(),
            driver: Driver::Auto,
            shared_cache: None,
            secrets: Secrets::default(),
            temporary_context: false,
        }
    }
}

/// What a finished build produced.
#[derive(Debug, Clone)]
pub struct BuildOutcome {
    /// The image ID (config digest).
    pub image_id: Digest,
    /// The manifest digest.
    pub manifest_digest: Digest,
    /// Steps executed or taken from the cache.
    pub steps: usize,
    /// Steps taken from the cache.
    pub cached: usize,
    /// Where the full build log is kept.
    pub log: Option<PathBuf>,
}

/// Result of a finished stage.
#[derive(Debug, Clone)]
struct StageResult {
    state: ImageState,
    key: CacheKey,
}

/// Builds an image as `opts` says, reporting to `progress`.
pub fn build(
    store: &Store,
    opts: &BuildOptions,
    progress: &mut dyn Progress,
) -> Result<BuildOutcome, BuildError> {
    let df = crate::dockerfile::parse(&opts.dockerfile)?;
    let plan = plan::plan(&df, &opts.build_args, opts.target.as_deref())?;
    precheck::check(&df, &plan)?;
    let cache_dir = store.root().join("cache");
    let started = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap_or_default();
    let log_path =
        cache_dir
            .join("logs")
            .join(format!("{}-{}.log", started.as_secs(), std::process::id()));
    let mut reporter = Reporter::new(progress, Some(&log_path));
    let images = resolve_images(store, &df, &plan, opts, &mut reporter)?;
    let filter = load_dockerignore(&opts.context, opts.dockerfile_path.as_deref())?;
    let stat_cache = if opts.temporary_context {
        StatCache::in_memory()
    } else {
        StatCache::load(&BuildContext::stat_cache_path(&cache_dir, &opts.context))
            .unwrap_or_else(|_| StatCache::in_memory())
    };
    let ctx = BuildContext::open(&opts.context, filter, stat_cache)?;
    let mut b = Builder {
        store,
        opts,
        lex: ShellLex::new(df.directives.escape),
        df: &df,
        plan: &plan,
        ctx,
        cache: CacheIndex::new(&cache_dir),
        results: vec![None; df.stages.len()],
        step_no: 0,
        total: plan.total_steps,
        cached: 0,
        images,
        reporter: &mut reporter,
    };
    let result = b.run_all();
    let _ = b.ctx.save_cache();
    let (steps, cached) = (b.step_no, b.cached);
    let mut state = result?;
    let unused = unused_build_args(&df, &opts.build_args);
    if !unused.is_empty() {
        reporter.note(&format!(
            "warning: build args not consumed by any ARG: {}",
            unused.join(", ")
        ));
    }
    if !opts.labels.is_empty() {
        let labels = state.config.config.labels.get_or_insert_with(BTreeMap::new);
        labels.extend(opts.labels.iter().map(|(k, v)| (k.clone(), v.clone())));
    }
    crate::cache::shared::fetch_missing(store, opts.shared_cache.as_deref(), &state.layers)?;
    let (image_id, manifest_digest) = image::write_image(store, &state, &opts.tags)?;
    if opts.tags.is_empty() {
        reporter.note("COMMIT (untagged)");
    } else {
        reporter.note(&format!("COMMIT {}", opts.tags.join(", ")));
    }
    reporter.note(&format!("--> {}", image_id.short()));
    Ok(BuildOutcome {
        image_id,
        manifest_digest,
        steps,
        cached,
        log: reporter.log_path().map(Path::to_path_buf),
    })
}

/// Resolves, before any step runs, every image the needed stages start from or copy from: from
/// the store, or pulled from its registry when it is missing (always with `--pull`). A typo or an
/// unreachable image fails fast with its Dockerfile line. Returns name -> image ID.
fn resolve_images(
    store: &Store,
    df: &Dockerfile,
    plan: &Plan,
    opts: &BuildOptions,
    reporter: &mut Reporter<'_>,
) -> Result<BTreeMap<String, Digest>, BuildError> {
    let lex = ShellLex::new(df.directives.escape);
    let mut wanted: Vec<(String, usize, String)> = Vec::new();
    for &i in &plan.needed {
        let stage = &df.stages[i];
        if let Base::Image(name) = &plan.bases[i] {
            wanted.push((name.clone(), stage.line, stage.original.clone()));
        }
        for instr in &stage.instructions {
            if let crate::dockerfile::InstructionKind::Copy(c) = &instr.kind {
                let Some(from) = &c.from else { continue };
                let from = lex
                    .process_word(from, &plan.global_args)
                    .unwrap_or_else(|_| from.clone());
                if let plan::FromSource::Image(name) = plan::resolve_from(df, i, &from) {
                    wanted.push((name, instr.line, instr.original.clone()));
                }
            }
        }
    }
    let mut resolved = BTreeMap::new();
    for (name, line, instruction) in wanted {
        if resolved.contains_key(&name) {
            continue;
        }
        let local = store.resolve_image(&name);
        if let (false, Ok(img)) = (opts.pull, &local) {
            resolved.insert(name, img.config_digest.clone());
            continue;
        }
        let fail = |message: String| BuildError::Step {
            line,
            instruction: instruction.clone(),
            message,
        };
        let reference = rbuild_registry::reference::ImageRef::parse(&name)
            .map_err(|e| fail(format!("invalid image reference {name:?}: {e}")))?;
        reporter.note(&format!("pulling {name}"));
        let options = rbuild_registry::PullOptions {
            config: rbuild_registry::RegistryConfig::load_default().unwrap_or_default(),
            ..rbuild_registry::PullOptions::default()
        };
        let progress = std::sync::Arc::new(rbuild_registry::NoProgress);
        match rbuild_registry::pull_blocking(store, &reference, &options, progress) {
            Ok(pulled) => {
                resolved.insert(name, pulled.config_digest);
            }
            Err(e) => {
                let why = match local {
                    Ok(_) => format!("--pull could not refresh image {name:?}: {e}"),
                    Err(_) => format!(
                        "image {name:?} is not in the local store and pulling it failed ({e}): \
                         name an earlier stage, import the image, or check the registry"
                    ),
                };
                return Err(fail(why));
            }
        }
    }
    Ok(resolved)
}

/// `--build-arg` names no ARG declares (Docker warns about them; proxy args and
/// SOURCE_DATE_EPOCH are exempt).
fn unused_build_args(df: &Dockerfile, build_args: &BTreeMap<String, String>) -> Vec<String> {
    let mut declared = std::collections::BTreeSet::new();
    let instructions = df
        .global_args
        .iter()
        .chain(df.stages.iter().flat_map(|s| s.instructions.iter()));
    for instr in instructions {
        if let crate::dockerfile::InstructionKind::Arg(decls) = &instr.kind {
            declared.extend(decls.iter().map(|d| d.name.as_str()));
        }
    }
    build_args
        .keys()
        .filter(|k| {
            !declared.contains(k.as_str())
                && !step::PROXY_ARGS.contains(&k.as_str())
                // Consumed by the build itself (the reproducible timestamp).
                && k.as_str() != "SOURCE_DATE_EPOCH"
        })
        .cloned()
        .collect()
}

/// The ignore file of the build: `<Dockerfile>.dockerignore` beside the Dockerfile when there is
/// one (Docker's per-Dockerfile ignore file), else the context's `.dockerignore`, if any.
fn load_dockerignore(
    context: &Path,
    dockerfile: Option<&Path>,
) -> Result<Option<Box<dyn PathFilter>>, BuildError> {
    let specific = dockerfile.and_then(|d| {
        let name = d.file_name()?.to_string_lossy().into_owned();
        Some(d.with_file_name(format!("{name}.dockerignore")))
    });
    let mut text = None;
    for path in specific.into_iter().chain([context.join(".dockerignore")]) {
        match std::fs::read_to_string(&path) {
            Ok(t) => {
                text = Some(t);
                break;
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(source) => return Err(BuildError::Io { path, source }),
        }
    }
    let Some(text) = text else {
        return Ok(None);
    };
    // The error names `.dockerignore:LINE` itself.
    let matcher = crate::dockerignore::IgnoreMatcher::parse(&text)
        .map_err(|e| BuildError::Usage(e.to_string()))?;
    Ok(Some(Box::new(IgnoreFilter(matcher))))
}

/// `.dockerignore` as the context's path filter.
struct IgnoreFilter(crate::dockerignore::IgnoreMatcher);

impl PathFilter for IgnoreFilter {
    fn excluded(&self, rel: &str) -> bool {
        self.0.is_excluded(rel)
    }
    fn has_exceptions(&self) -> bool {
        self.0.has_exceptions()
    }
    fn can_skip_dir(&self, rel: &str) -> bool {
        self.0.can_skip_dir(rel)
    }
}

/// The state of one build.
struct Builder<'a, 'r> {
    store: &'a Store,
    opts: &'a BuildOptions,
    lex: ShellLex,
    df: &'a Dockerfile,
    plan: &'a Plan,
    ctx: BuildContext,
    cache: CacheIndex,
    results: Vec<Option<StageResult>>,
    step_no: usize,
    total: usize,
    cached: usize,
    /// Image name -> ID of every base and `--from` image, resolved (or pulled) up front.
    images: BTreeMap<String, Digest>,
    reporter: &'a mut Reporter<'r>,
}

impl Builder<'_, '_> {
    fn run_all(&mut self) -> Result<ImageState, BuildError> {
        for &i in &self.plan.needed.clone() {
            let r = self.run_stage(i)?;
            self.results[i] = Some(r);
        }
        let target = self.results[self.plan.target]
            .as_ref()
            .map(|r| r.state.clone());
        target.ok_or_else(|| BuildError::Step {
            line: 0,
            instruction: "FROM".into(),
            message: "target stage was not built".into(),
        })
    }

    /// What every key of this build depends on besides the steps: the platform, the timestamp
    /// and (when not the default gzip) the layer compression, so a cached gzip layer is never
    /// handed to a build that asked for zstd.
    fn base_salt(&self) -> String {
        let mut salt = format!("{}|ts={:?}", self.opts.platform, self.opts.timestamp);
        if self.opts.compression != Compression::Gzip {
            salt.push_str(&format!("|compression={:?}", self.opts.compression));
        }
        salt
    }

    /// The created time of new history entries and images.
    fn now(&self) -> String {
        match self.opts.timestamp {
            Some(t) => rbuild_layerfs::image::rfc3339(
                SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(t.max(0) as u64),
            ),
            None => rbuild_layerfs::image::rfc3339(SystemTime::now()),
        }
    }

    fn run_stage(&mut self, idx: usize) -> Result<StageResult, BuildError> {
        let stage = &self.df.stages[idx];
        self.step_no += 1;
        self.reporter
            .step(self.step_no, self.total, &stage.original);
        let start = Instant::now();
        let (state, key) = match &self.plan.bases[idx] {
            Base::Scratch => (
                ImageState {
                    config: ImageConfig::scratch(&self.opts.platform),
                    layers: Vec::new(),
                },
                KeyBuilder::base("scratch", &self.base_salt()),
            ),
            Base::Stage(i) => {
                let r = self.results[*i].clone().ok_or_else(|| BuildError::Step {
                    line: stage.line,
                    instruction: stage.original.clone(),
                    message: format!("stage {i} was not built before it was used"),
                })?;
                (r.state, r.key)
            }
            Base::Image(name) => {
                let (id, mut state) = self.base_image(name, stage.line, &stage.original)?;
                // As BuildKit: a stage whose base image sets no PATH gets the default one in
                // its config, so `ENV PATH=/x:$PATH` extends it and the image runs as built.
                let mut salt = self.base_salt();
                if !state.config.env_pairs().iter().any(|(k, _)| k == "PATH") {
                    state.config.set_env("PATH", config::DEFAULT_PATH);
                    salt.push_str("|default-path");
                }
                (state, KeyBuilder::base(id.as_str(), &salt))
            }
        };
        self.reporter.finished(start.elapsed());
        let mut sc = step::StageCtx::new(idx, state, key, self.plan.global_args.clone());
        let triggers = sc.state.config.config.on_build.take().unwrap_or_default();
        if !triggers.is_empty() {
            self.total += triggers.len();
            let text = format!("FROM scratch\n{}\n", triggers.join("\n"));
            let parsed = crate::dockerfile::parse(&text).map_err(|e| BuildError::Step {
                line: stage.line,
                instruction: stage.original.clone(),
                message: format!("ONBUILD trigger of the base image is invalid: {e}"),
            })?;
            for mut instr in parsed.stages[0].instructions.clone() {
                instr.line = stage.line;
                self.exec_instruction(&mut sc, &instr)?;
            }
        }
        for instr in &stage.instructions {
            self.exec_instruction(&mut sc, instr)?;
        }
        Ok(StageResult {
            state: sc.state,
            key: sc.key,
        })
    }

    /// Loads a base image (FROM or COPY --from) from the store.
    fn base_image(
        &mut self,
        name: &str,
        line: usize,
        instruction: &str,
    ) -> Result<(Digest, ImageState), BuildError> {
        let id = self.images.get(name).map(|d| d.to_string());
        image::load_image(self.store, id.as_deref().unwrap_or(name)).map_err(|e| BuildError::Step {
            line,
            instruction: instruction.to_string(),
            message: format!(
                "base image {name:?} is not in the local store ({e}): pull it first with `rbuild pull {name}` or import it with `rbuild import`"
            ),
        })
    }

    /// Unpacked layer dirs of `layers` (unpacking blobs whose dirs are missing).
    fn layer_dirs(&self, layers: &[LayerRef]) -> Result<Vec<PathBuf>, BuildError> {
        layers
            .iter()
            .map(|l| {
                if !self.store.has_layer(&l.diff_id) {
                    let shared = self.opts.shared_cache.as_deref();
                    crate::cache::shared::fetch_missing(
                        self.store,
                        shared,
                        std::slice::from_ref(l),
                    )?;
                    self.store
                        .unpack_layer(&l.digest, &l.diff_id)
                        .map_err(|e| {
                            BuildError::store(format!("unpacking layer {}", l.diff_id), e)
                        })?;
                }
                Ok(self.store.layer_dir(&l.diff_id))
            })
            .collect()
    }

    /// Mounts `layers` with a fresh upper dir, lets `f` change the tree, and turns the upper dir
    /// into a new layer.
    fn with_rootfs<T>(
        &mut self,
        layers: &[LayerRef],
        f: impl FnOnce(&mut Self, &Path) -> Result<T, BuildError>,
    ) -> Result<(T, LayerRef), BuildError> {
        let (out, layer) = self.mount_and_commit(layers, true, f)?;
        let layer = layer.ok_or_else(|| {
            BuildError::store(
                "writing the layer",
                std::io::Error::other("no layer was written"),
            )
        })?;
        Ok((out, layer))
    }

    /// Like [`Self::with_rootfs`], but no layer when `f` changed nothing (the upper dir stayed
    /// empty), as BuildKit drops empty layers.
    fn with_rootfs_if_changed<T>(
        &mut self,
        layers: &[LayerRef],
        f: impl FnOnce(&mut Self, &Path) -> Result<T, BuildError>,
    ) -> Result<(T, Option<LayerRef>), BuildError> {
        self.mount_and_commit(layers, false, f)
    }

    fn mount_and_commit<T>(
        &mut self,
        layers: &[LayerRef],
        keep_empty: bool,
        f: impl FnOnce(&mut Self, &Path) -> Result<T, BuildError>,
    ) -> Result<(T, Option<LayerRef>), BuildError> {
        let mut dirs = self.layer_dirs(layers)?;
        let scratch = self
            .store
            .scratch_dir("build")
            .map_err(|e| BuildError::store("creating a scratch dir", e))?;
        let mk = |name: &str| -> Result<PathBuf, BuildError> {
            let p = scratch.path().join(name);
            std::fs::create_dir_all(&p).map_err(|source| BuildError::Io {
                path: p.clone(),
                source,
            })?;
            Ok(p)
        };
        let (upper, work, merged) = (mk("upper")?, mk("work")?, mk("merged")?);
        if dirs.is_empty() {
            dirs.push(mk("empty")?);
        }
        self.reporter.log_only(&format!(
            "mount: {} layer(s) with a fresh upper dir",
            dirs.len()
        ));
        let mount = mount_union(
            &MountSpec {
                layers: dirs.clone(),
                upper: Some(upper.clone()),
                work: Some(work),
                target: merged,
            },
            self.opts.driver,
        )
        .map_err(|e| BuildError::store("mounting the parent layers", e))?;
        let out = f(self, mount.target())?;
        mount
            .unmount()
            .map_err(|e| BuildError::store("unmounting the build rootfs", e))?;
        // Directories copied up only for the sandbox's mount points (removed again), with
        // nothing changed in them, are no change (as with BuildKit's mount stubs).
        rbuild_layerfs::layer::prune_unchanged_dirs(&upper, &dirs).map_err(|source| {
            BuildError::Io {
                path: upper.clone(),
                source,
            }
        })?;
        if !keep_empty {
            let mut entries = std::fs::read_dir(&upper).map_err(|source| BuildError::Io {
                path: upper.clone(),
                source,
            })?;
            if entries.next().is_none() {
                return Ok((out, None));
            }
        }
        let opts = WriteOptions {
            compression: self.opts.compression,
            mtime_clamp: self.opts.timestamp,
        };
        let info = self
            .store
            .commit_upper(&upper, &opts)
            .map_err(|e| BuildError::store("writing the layer", e))?;
        Ok((
            out,
            Some(LayerRef {
                diff_id: info.diff_id,
                digest: info.digest,
                size: info.size,
                media_type: info.media_type,
            }),
        ))
    }

    /// Mounts `layers` read-only (for COPY --from) and runs `f` on the tree.
    fn with_readonly<T>(
        &self,
        layers: &[LayerRef],
        f: impl FnOnce(&Path) -> Result<T, BuildError>,
    ) -> Result<T, BuildError> {
        let mut dirs = self.layer_dirs(layers)?;
        let scratch = self
            .store
            .scratch_dir("from")
            .map_err(|e| BuildError::store("creating a scratch dir", e))?;
        let merged = scratch.path().join("merged");
        let empty = scratch.path().join("empty");
        for p in [&merged, &empty] {
            std::fs::create_dir_all(p).map_err(|source| BuildError::Io {
                path: p.to_path_buf(),
                source,
            })?;
        }
        if dirs.is_empty() {
            return f(&empty);
        }
        if dirs.len() == 1 {
            // A single layer dir already is the tree.
            return f(&dirs.remove(0));
        }
        let mount = mount_union(
            &MountSpec {
                layers: dirs,
                upper: None,
                work: None,
                target: merged,
            },
            self.opts.driver,
        )
        .map_err(|e| BuildError::store("mounting a COPY --from source", e))?;
        let out = f(mount.target());
        drop(mount);
        out
    }
}
