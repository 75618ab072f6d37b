//! One instruction: its cache key, then (on a miss) its effect on the image config or files.

use super::config::{Empty, HealthConfig, History};
use super::image::ImageState;
use super::{BuildError, Builder};
use crate::cache::{CacheKey, CacheRecord, KeyBuilder, LayerRef};
use crate::dockerfile::{
    CommandLine, Healthcheck, HeredocRun, Instruction, InstructionKind, RunInstruction,
};
use std::collections::BTreeMap;
use std::time::Instant;

/// Build args Docker predefines: usable without `ARG`, passed to RUN, left out of cache keys.
pub(crate) const PROXY_ARGS: &[&str] = &[
    "HTTP_PROXY",
    "http_proxy",
    "HTTPS_PROXY",
    "https_proxy",
    "FTP_PROXY",
    "ftp_proxy",
    "NO_PROXY",
    "no_proxy",
    "ALL_PROXY",
    "all_proxy",
];

/// Per-stage state while its instructions run.
#[derive(Debug)]
pub(crate) struct StageCtx {
    /// Stage index.
    pub index: usize,
    /// The image state so far.
    pub state: ImageState,
    /// Cache key of the last step.
    pub key: CacheKey,
    /// ARGs declared in this stage, with their values.
    pub args: BTreeMap<String, String>,
    /// Values of the global ARGs (what `ARG name` without default inherits).
    pub global_args: BTreeMap<String, String>,
    /// CMD was set in this stage (ENTRYPOINT then keeps it).
    pub cmd_set: bool,
}

impl StageCtx {
    pub fn new(
        index: usize,
        state: ImageState,
        key: CacheKey,
        global_args: BTreeMap<String, String>,
    ) -> StageCtx {
        StageCtx {
            index,
            state,
            key,
            args: BTreeMap::new(),
            global_args,
            cmd_set: false,
        }
    }

    /// Variables for word expansion: ENV wins over ARG, as in Docker.
    pub fn expansion_env(&self) -> Vec<(String, String)> {
        let mut v = self.state.config.env_pairs();
        for (k, val) in &self.args {
            if !v.iter().any(|(ek, _)| ek == k) {
                v.push((k.clone(), val.clone()));
            }
        }
        v
    }

    /// The environment of a RUN: the image's plus the stage's ARGs (not overriding ENV).
    pub fn run_env(&self, build_args: &BTreeMap<String, String>) -> Vec<String> {
        let mut env = self.expansion_env();
        if !env.iter().any(|(k, _)| k == "PATH") {
            // As Docker: an image without PATH runs its commands with the default one.
            env.insert(0, ("PATH".into(), super::config::DEFAULT_PATH.into()));
        }
        for p in PROXY_ARGS {
            if let Some(v) = build_args.get(*p) {
                if !env.iter().any(|(k, _)| k == p) {
                    env.push((p.to_string(), v.clone()));
                }
            }
        }
        env.into_iter().map(|(k, v)| format!("{k}={v}")).collect()
    }

    /// The (name, value) pairs of the ARGs in scope that go into a RUN's cache key.
    pub fn key_args(&self) -> Vec<(&str, &str)> {
        self.args
            .iter()
            .filter(|(k, _)| !PROXY_ARGS.contains(&k.as_str()))
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect()
    }

    /// The shell of shell-form commands.
    pub fn shell(&self) -> Vec<String> {
        self.state
            .config
            .config
            .shell
            .clone()
            .unwrap_or_else(|| vec!["/bin/sh".into(), "-c".into()])
    }

    /// The working directory (absolute).
    pub fn workdir(&self) -> String {
        self.state
            .config
            .config
            .working_dir
            .clone()
            .filter(|w| !w.is_empty())
            .unwrap_or_else(|| "/".into())
    }
}

/// What a step does once its key missed.
pub(crate) enum Work {
    /// Only changes the image config.
    Meta(Box<dyn FnOnce(&mut StageCtx)>),
    /// Runs a command.
    Run(Box<RunJob>),
    /// Copies files.
    Copy(Box<super::copy::CopyJob>),
    /// WORKDIR: sets the working directory and creates it when the image lacks it.
    Workdir(Box<WorkdirJob>),
}

/// A prepared WORKDIR other than `/`.
pub(crate) struct WorkdirJob {
    /// The absolute, normalized directory.
    pub path: String,
    /// The USER in effect, who owns the directories WORKDIR creates (as in BuildKit).
    pub user: Option<String>,
}

/// A prepared RUN.
pub(crate) struct RunJob {
    pub argv: Vec<String>,
    pub env: Vec<String>,
    pub cwd: String,
    pub user: String,
    pub network: super::Network,
    /// A heredoc script to place in the rootfs first: (in-image path, content).
    pub script: Option<(String, String)>,
    /// `--mount`s, parsed and with their bind sources resolved.
    pub mounts: Vec<PreparedMount>,
}

/// A `RUN --mount` ready to set up: the spec, plus where a bind mount's files come from.
pub(crate) struct PreparedMount {
    pub mount: super::run_mount::RunMount,
    pub source: BindSource,
}

/// Where the files of a bind mount come from.
pub(crate) enum BindSource {
    /// Not a bind mount.
    None,
    /// Trees of the build context (dockerignore applied), already hashed.
    Context(Vec<crate::context::SourceTree>),
    /// A path inside the layers of another stage or image.
    Layers(Vec<LayerRef>),
}

fn word_list(cl: &CommandLine, shell: &[String]) -> Vec<String> {
    cl.to_argv(shell)
}

impl Builder<'_, '_> {
    fn step_err(instr: &Instruction, message: impl Into<String>) -> BuildError {
        BuildError::Step {
            line: instr.line,
            instruction: instr.original.clone(),
            message: message.into(),
        }
    }

    pub(crate) fn expand(
        &self,
        instr: &Instruction,
        word: &str,
        env: &Vec<(String, String)>,
    ) -> Result<String, BuildError> {
        self.lex.process_word(word, env).map_err(|source| {
            BuildError::Dockerfile(crate::dockerfile::DockerfileError::Expansion {
                line: instr.line,
                source,
            })
        })
    }

    fn expand_words(
        &self,
        instr: &Instruction,
        word: &str,
        env: &Vec<(String, String)>,
    ) -> Result<Vec<String>, BuildError> {
        self.lex.process_words(word, env).map_err(|source| {
            BuildError::Dockerfile(crate::dockerfile::DockerfileError::Expansion {
                line: instr.line,
                source,
            })
        })
    }

    /// Runs one instruction of a stage (cache lookup first).
    pub(crate) fn exec_instruction(
        &mut self,
        sc: &mut StageCtx,
        instr: &Instruction,
    ) -> Result<(), BuildError> {
        self.step_no += 1;
        self.reporter
            .step(self.step_no, self.total, &instr.original);
        let start = Instant::now();
        let env = sc.expansion_env();
        let mut key = KeyBuilder::new(&sc.key);
        key.part(instr.kind.keyword());
        let work: Work = match &instr.kind {
            InstructionKind::Arg(decls) => {
                let mut resolved = Vec::new();
                for d in decls {
                    let value = match (self.opts.build_args.get(&d.name), &d.default) {
                        (Some(v), _) => Some(v.clone()),
                        (None, Some(def)) => Some(self.expand(instr, def, &sc.expansion_env())?),
                        (None, None) => sc.global_args.get(&d.name).cloned(),
                    };
                    if let Some(v) = &value {
                        sc.args.insert(d.name.clone(), v.clone());
                    }
                    resolved.push((d.name.clone(), value));
                }
                for (k, v) in &resolved {
                    key.part(k).part(v.as_deref().unwrap_or("\0unset"));
                }
                Work::Meta(Box::new(|_| {}))
            }
            InstructionKind::Env(kvs) => {
                // As Docker: every value of one ENV sees the environment from before it
                // (`ENV a=bye b=$a` sets b to the old a).
                let mut pairs = Vec::new();
                for kv in kvs {
                    let k = self.expand(instr, &kv.key, &env)?;
                    let v = self.expand(instr, &kv.value, &env)?;
                    key.part(&k).part(&v);
                    pairs.push((k, v));
                }
                Work::Meta(Box::new(move |sc| {
                    for (k, v) in pairs {
                        sc.state.config.set_env(&k, &v);
                    }
                }))
            }
            InstructionKind::Label(kvs) => {
                let mut pairs = Vec::new();
                for kv in kvs {
                    let k = self.expand(instr, &kv.key, &env)?;
                    let v = self.expand(instr, &kv.value, &env)?;
                    key.part(&k).part(&v);
                    pairs.push((k, v));
                }
                Work::Meta(Box::new(move |sc| {
                    let labels = sc
                        .state
                        .config
                        .config
                        .labels
                        .get_or_insert_with(BTreeMap::new);
                    labels.extend(pairs);
                }))
            }
            InstructionKind::Workdir(w) => {
                let w = self.expand(instr, w, &env)?;
                let abs = if w.starts_with('/') {
                    w
                } else {
                    format!("{}/{}", sc.workdir().trim_end_matches('/'), w)
                };
                let abs = normalize_abs(&abs);
                key.part(&abs);
                if abs == "/" {
                    Work::Meta(Box::new(move |sc| {
                        sc.state.config.config.working_dir = Some(abs);
                    }))
                } else {
                    // Docker creates the directory (owned by the USER in effect): a step
                    // that changes files when the image does not have it yet.
                    let user = sc
                        .state
                        .config
                        .config
                        .user
                        .clone()
                        .filter(|u| !u.is_empty());
                    key.part("mkdir").part(user.as_deref().unwrap_or(""));
                    Work::Workdir(Box::new(WorkdirJob { path: abs, user }))
                }
            }
            InstructionKind::User(u) => {
                let u = self.expand(instr, u, &env)?;
                key.part(&u);
                Work::Meta(Box::new(move |sc| sc.state.config.config.user = Some(u)))
            }
            InstructionKind::Cmd(cl) => {
                sc.cmd_set = true;
                let argv = word_list(cl, &sc.shell());
                key.part(&serde_json::to_string(&argv).unwrap_or_default());
                Work::Meta(Box::new(move |sc| sc.state.config.config.cmd = Some(argv)))
            }
            InstructionKind::Entrypoint(cl) => {
                let argv = word_list(cl, &sc.shell());
                let keep_cmd = sc.cmd_set;
                key.part(&serde_json::to_string(&argv).unwrap_or_default())
                    .part(if keep_cmd { "keep-cmd" } else { "reset-cmd" });
                Work::Meta(Box::new(move |sc| {
                    sc.state.config.config.entrypoint = Some(argv);
                    if !keep_cmd {
                        sc.state.config.config.cmd = None;
                    }
                }))
            }
            InstructionKind::Expose(ports) => {
                let mut out = Vec::new();
                for p in ports {
                    for w in self.expand_words(instr, p, &env)? {
                        let w = super::precheck::exposed_port(&w)
                            .map_err(|m| Self::step_err(instr, m))?;
                        key.part(&w);
                        out.push(w);
                    }
                }
                Work::Meta(Box::new(move |sc| {
                    let m = sc
                        .state
                        .config
                        .config
                        .exposed_ports
                        .get_or_insert_with(BTreeMap::new);
                    for p in out {
                        m.insert(p, Empty {});
                    }
                }))
            }
            InstructionKind::Volume(vols) => {
                let mut out = Vec::new();
                for v in vols {
                    for w in self.expand_words(instr, v, &env)? {
                        if w.is_empty() {
                            return Err(Self::step_err(instr, "VOLUME needs a non-empty path"));
                        }
                        key.part(&w);
                        out.push(w);
                    }
                }
                Work::Meta(Box::new(move |sc| {
                    let m = sc
                        .state
                        .config
                        .config
                        .volumes
                        .get_or_insert_with(BTreeMap::new);
                    for v in out {
                        m.insert(v, Empty {});
                    }
                }))
            }
            InstructionKind::Shell(sh) => {
                let sh = sh.clone();
                key.part(&serde_json::to_string(&sh).unwrap_or_default());
                Work::Meta(Box::new(move |sc| sc.state.config.config.shell = Some(sh)))
            }
            InstructionKind::Stopsignal(s) => {
                let s = self.expand(instr, s, &env)?;
                super::precheck::stop_signal(&s).map_err(|m| Self::step_err(instr, m))?;
                key.part(&s);
                Work::Meta(Box::new(move |sc| {
                    sc.state.config.config.stop_signal = Some(s)
                }))
            }
            InstructionKind::Healthcheck(hc) => {
                let cfg = match hc {
                    Healthcheck::None => HealthConfig {
                        test: vec!["NONE".into()],
                        ..HealthConfig::default()
                    },
                    Healthcheck::Check(c) => HealthConfig {
                        test: c.test(),
                        interval: c.interval_ns.unwrap_or(0),
                        timeout: c.timeout_ns.unwrap_or(0),
                        start_period: c.start_period_ns.unwrap_or(0),
                        start_interval: c.start_interval_ns.unwrap_or(0),
                        retries: c.retries.unwrap_or(0),
                    },
                };
                key.part(&serde_json::to_string(&cfg).unwrap_or_default());
                Work::Meta(Box::new(move |sc| {
                    sc.state.config.config.healthcheck = Some(cfg)
                }))
            }
            InstructionKind::Onbuild(t) => {
                let e = t.expression.clone();
                key.part(&e);
                Work::Meta(Box::new(move |sc| {
                    sc.state
                        .config
                        .config
                        .on_build
                        .get_or_insert_with(Vec::new)
                        .push(e)
                }))
            }
            InstructionKind::Maintainer(m) => {
                let m = self.expand(instr, m, &env)?;
                key.part(&m);
                Work::Meta(Box::new(move |sc| sc.state.config.author = Some(m)))
            }
            InstructionKind::Run(r) => {
                let job = self.prepare_run(sc, instr, r)?;
                key.part(&serde_json::to_string(&job.argv).unwrap_or_default());
                if let Some((p, c)) = &job.script {
                    key.part(p).part(c);
                }
                key.pairs(sc.key_args());
                key.part(match job.network {
                    super::Network::Host => "net:host",
                    super::Network::None => "net:none",
                    super::Network::Private => "net:private",
                });
                for m in &job.mounts {
                    key.part("mount").part(&m.mount.key_text());
                    match &m.source {
                        BindSource::None => {}
                        BindSource::Context(trees) => {
                            for t in trees {
                                key.part(&t.rel).part(t.digest.as_str());
                            }
                        }
                        BindSource::Layers(layers) => {
                            for l in layers {
                                key.part(l.diff_id.as_str());
                            }
                        }
                    }
                }
                Work::Run(Box::new(job))
            }
            InstructionKind::Copy(c) => {
                let job =
                    self.prepare_copy(sc, instr, &super::copy::CopySpec::from_copy(c), &mut key)?;
                Work::Copy(Box::new(job))
            }
            InstructionKind::Add(a) => {
                let job =
                    self.prepare_copy(sc, instr, &super::copy::CopySpec::from_add(a), &mut key)?;
                Work::Copy(Box::new(job))
            }
        };
        let key = key.finish();
        // Cache lookup: decided before any file is copied or any rootfs is mounted.
        if !self.opts.no_cache {
            if let Some(state) = self.cache_hit(&key) {
                sc.state = state;
                sc.key = key;
                self.cached += 1;
                self.reporter.cached();
                self.reporter.finished(start.elapsed());
                return Ok(());
            }
        }
        let layers = sc.state.layers.clone();
        let layer: Option<LayerRef> = match work {
            Work::Meta(apply) => {
                apply(sc);
                None
            }
            Work::Run(job) => {
                let (_, layer) =
                    self.with_rootfs(&layers, |b, root| b.run_in(root, instr, &job))?;
                Some(layer)
            }
            Work::Copy(job) => {
                let (_, layer) =
                    self.with_rootfs(&layers, |b, root| b.copy_into(root, instr, &job))?;
                Some(layer)
            }
            Work::Workdir(job) => {
                let (_, layer) = self.with_rootfs_if_changed(&layers, |_, root| {
                    make_workdir(root, &job).map_err(|m| Self::step_err(instr, m))
                })?;
                sc.state.config.config.working_dir = Some(job.path.clone());
                layer
            }
        };
        let now = self.now();
        if let Some(l) = &layer {
            sc.state.layers.push(l.clone());
            sc.state.config.rootfs.diff_ids.push(l.diff_id.to_string());
        }
        sc.state.config.history.push(History {
            created: Some(now.clone()),
            created_by: Some(history_text(instr)),
            author: None,
            comment: Some("rbuild".into()),
            empty_layer: layer.is_none(),
        });
        sc.state.config.created = Some(now);
        let record = CacheRecord {
            layer,
            state: serde_json::to_value(&sc.state)
                .map_err(|e| BuildError::store("encoding the cache record", e))?,
        };
        self.cache.put(&key, &record)?;
        crate::cache::shared::note_created(self.opts.shared_cache.as_deref(), &key, &record);
        sc.key = key;
        self.reporter.finished(start.elapsed());
        Ok(())
    }

    /// The recorded state of `key`, when the record and its layer blob are still there.
    /// (Checks moved to `cache::shared::usable_record`, which also consults `--cache-from`.)
    fn cache_hit(&self, key: &CacheKey) -> Option<ImageState> {
        let shared = self.opts.shared_cache.as_deref();
        let rec = crate::cache::shared::usable_record(self.store, &self.cache, shared, key)?;
        serde_json::from_value(rec.state).ok()
    }

    fn prepare_run(
        &mut self,
        sc: &StageCtx,
        instr: &Instruction,
        r: &RunInstruction,
    ) -> Result<RunJob, BuildError> {
        let shell = sc.shell();
        let mut script = None;
        let argv = match r.heredoc_run() {
            Some(HeredocRun::Script { name, content }) => {
                // Named by its content, not by anything of this process: the path is part of
                // the step's cache key.
                use sha2::Digest as _;
                let digest = hex::encode(sha2::Sha256::digest(content.as_bytes()));
                let path = format!("/.rbuild-heredoc-{}-{}", &digest[..16], sanitize(&name));
                script = Some((path.clone(), content));
                vec![path]
            }
            Some(HeredocRun::ShellText(text)) => {
                let mut v = shell.clone();
                v.push(text);
                v
            }
            None => r.command.to_argv(&shell),
        };
        if argv.is_empty() {
            return Err(Self::step_err(instr, "RUN needs a command"));
        }
        let network = match r.network.as_deref() {
            Some(n) => super::precheck::run_network(n).map_err(|m| Self::step_err(instr, m))?,
            None => None,
        }
        .unwrap_or(self.opts.network);
        // As BuildKit: the Dockerfile (which may come from anyone) gets the host's network,
        // and with it the host's loopback services, only when the one building grants it.
        if network == super::Network::Host
            && self.opts.network != super::Network::Host
            && !self.opts.allow_network_host
        {
            return Err(Self::step_err(
                instr,
                "RUN --network=host needs the network.host entitlement: pass --allow \
                 network.host (or --network host) to let this Dockerfile use the host's network",
            ));
        }
        let mut mounts = Vec::new();
        let env = sc.expansion_env();
        for spec in &r.mounts {
            let spec = self.expand(instr, spec, &env)?;
            let mount = super::run_mount::parse(&spec, &sc.workdir())
                .map_err(|m| Self::step_err(instr, m))?;
            let source = match &mount {
                super::run_mount::RunMount::Bind {
                    source, from: None, ..
                } => BindSource::Context(
                    self.ctx
                        .select(source)
                        .map_err(|e| Self::step_err(instr, format!("--mount={spec}: {e}")))?,
                ),
                super::run_mount::RunMount::Bind {
                    from: Some(from), ..
                } => BindSource::Layers(self.stage_or_image_layers(sc, instr, from)?),
                _ => BindSource::None,
            };
            mounts.push(PreparedMount { mount, source });
        }
        Ok(RunJob {
            argv,
            env: sc.run_env(&self.opts.build_args),
            cwd: sc.workdir(),
            user: sc.state.config.config.user.clone().unwrap_or_default(),
            network,
            script,
            mounts,
        })
    }
}

/// Creates the WORKDIR directory (and missing parents) in the rootfs mounted at `root`, owned
/// by the job's user, unless it exists; an existing non-directory is an error, as in Docker.
fn make_workdir(root: &std::path::Path, job: &WorkdirJob) -> Result<(), String> {
    let w = super::fswrite::RootWriter::open(root).map_err(|e| e.to_string())?;
    match w.kind(&job.path) {
        Some(k) if k.is_dir() => return Ok(()),
        Some(_) => {
            return Err(format!(
                "{} exists in the image and is not a directory",
                job.path
            ))
        }
        None => {}
    }
    let (uid, gid) = match &job.user {
        None => (0, 0),
        Some(spec) => {
            let read = |p: &str| {
                let mut text = String::new();
                if let Ok(mut f) = w.open_read(p) {
                    let _ = std::io::Read::read_to_string(&mut f, &mut text);
                }
                text
            };
            let passwd = rbuild_runner::user::parse_passwd(&read("/etc/passwd"));
            let groups = rbuild_runner::user::parse_group(&read("/etc/group"));
            let u = rbuild_runner::user::resolve(spec, &passwd, &groups)
                .map_err(|e| format!("creating {} for USER {spec}: {e}", job.path))?;
            (u.uid, u.gid)
        }
    };
    let attrs = super::fswrite::Attrs {
        uid,
        gid,
        mode: 0o755,
        mtime: None,
    };
    w.ensure_dir(&job.path, Some(attrs))
        .map(drop)
        .map_err(|e| format!("creating {}: {e}", job.path))
}

fn sanitize(name: &str) -> String {
    name.chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
        .collect()
}

/// `created_by` of a history entry, in BuildKit's style.
fn history_text(instr: &Instruction) -> String {
    match &instr.kind {
        InstructionKind::Run(_) => format!("{} # rbuild", instr.original),
        _ => instr.original.clone(),
    }
}

/// Cleans an absolute path: no `.`, `..` or repeated slashes.
pub(crate) fn normalize_abs(p: &str) -> String {
    let mut parts: Vec<&str> = Vec::new();
    for c in p.split('/') {
        match c {
            "" | "." => {}
            ".." => {
                parts.pop();
            }
            c => parts.push(c),
        }
    }
    format!("/{}", parts.join("/"))
}
