//! The typed instruction model: what a parsed and validated Dockerfile means.
//!
//! Every string here is *unexpanded*: `$VAR`, quotes and escapes are kept as written so the
//! executor can expand them with the environment in effect at that step (see
//! [`crate::dockerfile::ShellLex`]). Exceptions, as in BuildKit: flag values have had their quotes
//! removed by the flag scanner, and JSON (exec) form arguments are already decoded.

/// A parsed, validated Dockerfile.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Dockerfile {
    /// Parser directives found at the top of the file (`# syntax=`, `# escape=`, `# check=`).
    pub directives: Directives,
    /// `ARG` instructions that appear before the first `FROM` (usable in `FROM` lines).
    pub global_args: Vec<Instruction>,
    /// Build stages in file order; stage `i` has `index == i`.
    pub stages: Vec<Stage>,
    /// Non-fatal findings worth showing to the user (e.g. empty continuation lines), each
    /// starting with `Dockerfile:LINE:`.
    pub warnings: Vec<String>,
}

impl Dockerfile {
    /// Finds a stage by its `AS` name (case-insensitive) or by its decimal index.
    pub fn stage(&self, name_or_index: &str) -> Option<&Stage> {
        let lower = name_or_index.to_ascii_lowercase();
        if let Some(stage) = self
            .stages
            .iter()
            .find(|s| s.name.as_deref() == Some(lower.as_str()))
        {
            return Some(stage);
        }
        lower.parse::<usize>().ok().and_then(|i| self.stages.get(i))
    }
}

/// Parser directives (`# key=value` lines at the very top of a Dockerfile).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Directives {
    /// Value of `# syntax=`, if present (accepted and otherwise ignored).
    pub syntax: Option<String>,
    /// The escape character: `\` by default, or `` ` `` with `# escape=``.
    pub escape: char,
    /// Value of `# check=`, if present (lint configuration; ignored).
    pub check: Option<String>,
}

impl Default for Directives {
    fn default() -> Self {
        Directives {
            syntax: None,
            escape: '\\',
            check: None,
        }
    }
}

/// One build stage: a `FROM` line and the instructions up to the next `FROM`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stage {
    /// Position of the stage in the file, from 0.
    pub index: usize,
    /// The `AS` name, lower-cased, if any.
    pub name: Option<String>,
    /// The base image reference as written (may contain `$ARG`s; `scratch` is the empty base).
    pub base: String,
    /// The `--platform` flag of `FROM`, unexpanded.
    pub platform: Option<String>,
    /// 1-based line of the `FROM` instruction.
    pub line: usize,
    /// The `FROM` line as written (continuations joined).
    pub original: String,
    /// The instructions of this stage, in order (not including `FROM`).
    pub instructions: Vec<Instruction>,
}

/// One instruction with its location.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Instruction {
    /// 1-based line where the instruction starts.
    pub line: usize,
    /// 1-based line where it ends (after continuations and heredoc bodies).
    pub end_line: usize,
    /// The instruction as written, continuations joined (e.g. `RUN make all`); heredoc bodies
    /// are not included.
    pub original: String,
    /// What the instruction does.
    pub kind: InstructionKind,
}

/// The instruction itself, with its flags parsed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum InstructionKind {
    /// `ARG name[=default] ...`
    Arg(Vec<ArgDecl>),
    /// `ENV key=value ...` or legacy `ENV key value`.
    Env(Vec<KeyValue>),
    /// `LABEL key=value ...` or legacy `LABEL key value`.
    Label(Vec<KeyValue>),
    /// `RUN`
    Run(RunInstruction),
    /// `COPY`
    Copy(CopyInstruction),
    /// `ADD`
    Add(AddInstruction),
    /// `WORKDIR path` (unexpanded).
    Workdir(String),
    /// `USER user[:group]` (unexpanded).
    User(String),
    /// `CMD` in shell or exec form.
    Cmd(CommandLine),
    /// `ENTRYPOINT` in shell or exec form.
    Entrypoint(CommandLine),
    /// `EXPOSE port[/proto] ...` (unexpanded words).
    Expose(Vec<String>),
    /// `VOLUME path ...` (unexpanded; JSON form decoded).
    Volume(Vec<String>),
    /// `SHELL ["exe", "arg", ...]` (always JSON form).
    Shell(Vec<String>),
    /// `STOPSIGNAL signal` (unexpanded).
    Stopsignal(String),
    /// `HEALTHCHECK NONE` or `HEALTHCHECK [flags] CMD ...`.
    Healthcheck(Healthcheck),
    /// `ONBUILD INSTRUCTION ...`: stored in the image, triggered by a later `FROM`.
    Onbuild(OnbuildTrigger),
    /// `MAINTAINER name` (deprecated; becomes the image author).
    Maintainer(String),
}

impl InstructionKind {
    /// The upper-case keyword of this instruction (`RUN`, `COPY`, ...).
    pub fn keyword(&self) -> &'static str {
        match self {
            InstructionKind::Arg(_) => "ARG",
            InstructionKind::Env(_) => "ENV",
            InstructionKind::Label(_) => "LABEL",
            InstructionKind::Run(_) => "RUN",
            InstructionKind::Copy(_) => "COPY",
            InstructionKind::Add(_) => "ADD",
            InstructionKind::Workdir(_) => "WORKDIR",
            InstructionKind::User(_) => "USER",
            InstructionKind::Cmd(_) => "CMD",
            InstructionKind::Entrypoint(_) => "ENTRYPOINT",
            InstructionKind::Expose(_) => "EXPOSE",
            InstructionKind::Volume(_) => "VOLUME",
            InstructionKind::Shell(_) => "SHELL",
            InstructionKind::Stopsignal(_) => "STOPSIGNAL",
            InstructionKind::Healthcheck(_) => "HEALTHCHECK",
            InstructionKind::Onbuild(_) => "ONBUILD",
            InstructionKind::Maintainer(_) => "MAINTAINER",
        }
    }
}

/// One `ARG` declaration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ArgDecl {
    /// The argument name.
    pub name: String,
    /// The default value as written (unexpanded, quotes kept), if `=` was given.
    pub default: Option<String>,
}

/// One key/value pair of `ENV` or `LABEL`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyValue {
    /// The key as written (unexpanded).
    pub key: String,
    /// The value as written (unexpanded, quotes kept); expand it with
    /// [`crate::dockerfile::ShellLex::process_word`].
    pub value: String,
}

/// A command in shell form (`CMD echo hi`) or exec form (`CMD ["echo", "hi"]`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CommandLine {
    /// Shell form: run with the stage's `SHELL` (default `/bin/sh -c`). Unexpanded.
    Shell(String),
    /// Exec form: decoded JSON array, run as is (no expansion for RUN/CMD/ENTRYPOINT).
    Exec(Vec<String>),
}

impl CommandLine {
    /// Whether this is the shell form.
    pub fn is_shell(&self) -> bool {
        matches!(self, CommandLine::Shell(_))
    }

    /// The argument vector to execute, prepending `shell` for the shell form.
    pub fn to_argv(&self, shell: &[String]) -> Vec<String> {
        match self {
            CommandLine::Shell(script) => {
                let mut argv = shell.to_vec();
                argv.push(script.clone());
                argv
            }
            CommandLine::Exec(argv) => argv.clone(),
        }
    }
}

/// A here-document attached to `RUN`, `COPY` or `ADD` (`<<EOF ... EOF`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Heredoc {
    /// The delimiter word with quotes removed (`EOF` for `<<"EOF"`).
    pub name: String,
    /// The body, each line with its trailing newline, delimiter line excluded. For `<<-`
    /// heredocs, leading tabs are already removed.
    pub content: String,
    /// True when the delimiter was unquoted, so `$VAR` in the body is expanded (COPY/ADD).
    pub expand: bool,
    /// True for `<<-`: leading tabs are stripped from the body lines.
    pub chomp: bool,
    /// The file descriptor number written before `<<` (0 when none).
    pub file_descriptor: u32,
}

/// `RUN [--mount=...] [--network=...] [--security=...] command`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunInstruction {
    /// The command (shell form unexpanded).
    pub command: CommandLine,
    /// Here-documents referenced by the command line, in order.
    pub heredocs: Vec<Heredoc>,
    /// `--mount` values as written (quotes removed).
    pub mounts: Vec<String>,
    /// `--network` value (`default`, `none`, `host`).
    pub network: Option<String>,
    /// `--security` value (`sandbox`, `insecure`).
    pub security: Option<String>,
}

/// What a `RUN` with heredocs executes, following BuildKit's rules.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HeredocRun {
    /// `RUN <<EOF` whose body starts with `#!`: write the body to a file named `name`
    /// (mode 0755) and execute that file directly, without the shell.
    Script {
        /// File name of the script (the heredoc delimiter).
        name: String,
        /// The script body.
        content: String,
    },
    /// Run this text with the stage's shell (`SHELL ... -c TEXT`).
    ShellText(String),
}

impl RunInstruction {
    /// For a shell-form RUN with heredocs, what to execute: a lone `<<EOF` runs its body
    /// (as a script file if it starts with `#!`, else as shell text); anything more complex is
    /// reassembled into one shell text with the heredocs inline. `None` when there are no
    /// heredocs or the command is in exec form.
    pub fn heredoc_run(&self) -> Option<HeredocRun> {
        let CommandLine::Shell(line) = &self.command else {
            return None;
        };
        let first = self.heredocs.first()?;
        if super::heredoc::parse_heredoc_word(line.trim()).is_some() {
            if first.content.starts_with("#!") {
                return Some(HeredocRun::Script {
                    name: first.name.clone(),
                    content: first.content.clone(),
                });
            }
            return Some(HeredocRun::ShellText(first.content.clone()));
        }
        let mut full = line.clone();
        for doc in &self.heredocs {
            full.push('\n');
            full.push_str(&doc.content);
            full.push_str(&doc.name);
        }
        Some(HeredocRun::ShellText(full))
    }
}

/// A source of `COPY`/`ADD`: a path (glob, URL or git address) or inline heredoc content.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CopySource {
    /// A path relative to the context (or the `--from` stage/image), unexpanded.
    Path(String),
    /// An inline file from a heredoc (`COPY <<EOF /dest`); the file name is `name`.
    Heredoc(Heredoc),
}

/// `COPY [--from=..] [--chown=..] [--chmod=..] [--link] [--parents] [--exclude=..] src... dest`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CopyInstruction {
    /// The sources, in order.
    pub sources: Vec<CopySource>,
    /// The destination, unexpanded.
    pub dest: String,
    /// `--from`: a stage name, a stage index, or an image reference (unexpanded).
    pub from: Option<String>,
    /// `--chown=user[:group]`.
    pub chown: Option<String>,
    /// `--chmod=mode`.
    pub chmod: Option<String>,
    /// `--link`.
    pub link: bool,
    /// `--parents`.
    pub parents: bool,
    /// `--exclude` patterns.
    pub excludes: Vec<String>,
    /// True when the arguments were written as a JSON array.
    pub json_form: bool,
}

/// `ADD [--chown=..] [--chmod=..] [--checksum=..] [--link] [--keep-git-dir] [--exclude=..]
/// [--unpack] src... dest`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AddInstruction {
    /// The sources, in order (paths, URLs or heredocs).
    pub sources: Vec<CopySource>,
    /// The destination, unexpanded.
    pub dest: String,
    /// `--chown=user[:group]`.
    pub chown: Option<String>,
    /// `--chmod=mode`.
    pub chmod: Option<String>,
    /// `--checksum=sha256:...` for URL sources.
    pub checksum: Option<String>,
    /// `--link`.
    pub link: bool,
    /// `--keep-git-dir`.
    pub keep_git_dir: bool,
    /// `--unpack` (`Some(false)` to disable auto-extraction explicitly).
    pub unpack: Option<bool>,
    /// `--exclude` patterns.
    pub excludes: Vec<String>,
    /// True when the arguments were written as a JSON array.
    pub json_form: bool,
}

/// `HEALTHCHECK NONE` or `HEALTHCHECK [options] CMD command`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Healthcheck {
    /// `HEALTHCHECK NONE`: disable any inherited healthcheck.
    None,
    /// `HEALTHCHECK CMD ...` with its options.
    Check(HealthcheckCheck),
}

/// The options and command of `HEALTHCHECK CMD`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HealthcheckCheck {
    /// The test command (shell form becomes `CMD-SHELL` in the image config).
    pub command: CommandLine,
    /// `--interval` as a duration in nanoseconds.
    pub interval_ns: Option<u64>,
    /// `--timeout` in nanoseconds.
    pub timeout_ns: Option<u64>,
    /// `--start-period` in nanoseconds.
    pub start_period_ns: Option<u64>,
    /// `--start-interval` in nanoseconds.
    pub start_interval_ns: Option<u64>,
    /// `--retries`.
    pub retries: Option<u32>,
}

impl HealthcheckCheck {
    /// The `Test` array of the OCI/Docker config: `["CMD-SHELL", cmd]` or `["CMD", args...]`.
    pub fn test(&self) -> Vec<String> {
        match &self.command {
            CommandLine::Shell(s) => vec!["CMD-SHELL".to_string(), s.clone()],
            CommandLine::Exec(argv) => {
                let mut v = vec!["CMD".to_string()];
                v.extend(argv.iter().cloned());
                v
            }
        }
    }
}

/// `ONBUILD INSTRUCTION`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OnbuildTrigger {
    /// The trigger text as stored in the image config (`RUN echo hi`), heredoc bodies appended.
    pub expression: String,
    /// The parsed trigger instruction.
    pub instruction: Box<Instruction>,
}
