//! From the raw syntax tree to the typed, validated [`Dockerfile`]: stages, argument counts,
//! flags, forms, heredoc sources. Every error names `Dockerfile:LINE`.

use super::ast::{is_heredoc_word, is_known, parse_ast, Ast, Node};
use super::error::DockerfileError;
use super::flags::Flags;
use super::heredoc::{chomp_heredoc_content, parse_heredoc_word};
use super::model::*;

/// Parses and validates Dockerfile text.
pub fn parse(text: &str) -> Result<Dockerfile, DockerfileError> {
    let ast = parse_ast(text)?;
    from_ast(&ast)
}

/// Builds the typed model from a raw syntax tree, validating it.
pub fn from_ast(ast: &Ast) -> Result<Dockerfile, DockerfileError> {
    if let Some(syntax) = &ast.directives.syntax {
        check_syntax(syntax)
            .map_err(|m| DockerfileError::syntax(ast.syntax_line.unwrap_or(1), m))?;
    }
    let mut global_args = Vec::new();
    let mut stages: Vec<Stage> = Vec::new();
    let names = stages_names(&ast.nodes);
    for node in &ast.nodes {
        let line = node.start_line;
        let err = |m: String| DockerfileError::syntax(line, m);
        if !is_known(&node.keyword) {
            return Err(err(unknown_instruction(&node.keyword)));
        }
        if node.keyword == "from" {
            let stage = convert_from(node, stages.len()).map_err(err)?;
            if let Some(name) = &stage.name {
                if let Some(prev) = stages.iter().find(|s| s.name.as_ref() == Some(name)) {
                    return Err(DockerfileError::syntax(
                        line,
                        format!(
                            "duplicate stage name {name:?}, first defined on line {}: rename one",
                            prev.line
                        ),
                    ));
                }
            }
            stages.push(stage);
            continue;
        }
        let instruction = convert_instruction(node, &node.heredocs).map_err(err)?;
        if let Some(stage) = stages.last_mut() {
            if let InstructionKind::Copy(CopyInstruction {
                from: Some(from), ..
            }) = &instruction.kind
            {
                check_copy_from(from, stage.index, &names, line)?;
            }
            stage.instructions.push(instruction);
        } else if matches!(instruction.kind, InstructionKind::Arg(_)) {
            global_args.push(instruction);
        } else {
            return Err(err(format!(
                "{} before FROM: only ARG may come before the first FROM instruction",
                node.keyword.to_uppercase()
            )));
        }
    }
    if stages.is_empty() {
        let line = ast.nodes.last().map_or(0, |n| n.end_line);
        return Err(DockerfileError::syntax(
            line,
            "no FROM instruction: a Dockerfile must have a FROM (use `FROM scratch` for an empty base)",
        ));
    }
    Ok(Dockerfile {
        directives: ast.directives.clone(),
        global_args,
        stages,
        warnings: ast.warnings.clone(),
    })
}

/// Accepts `# syntax=` only for Docker's own Dockerfile frontend (version 1.x or unversioned),
/// which this parser implements; any other frontend would change the language.
fn check_syntax(syntax: &str) -> Result<(), String> {
    let reference = syntax.split('@').next().unwrap_or(syntax);
    let (name, tag) = match reference.rsplit_once(':') {
        Some((n, t)) if !t.contains('/') => (n, Some(t)),
        _ => (reference, None),
    };
    let name = name.strip_prefix("docker.io/").unwrap_or(name);
    let frontend = matches!(name, "docker/dockerfile" | "docker/dockerfile-upstream");
    let version_ok = match tag {
        None => true,
        Some(t) => {
            t == "latest" || t == "labs" || t == "1" || t.starts_with("1.") || t.starts_with("1-")
        }
    };
    if frontend && version_ok {
        return Ok(());
    }
    Err(format!(
        "unsupported syntax directive {syntax:?}: rbuild implements docker/dockerfile:1 only; \
         remove the `# syntax=` line or point it at docker/dockerfile:1"
    ))
}

/// Stage names in file order (`None` for unnamed stages).
fn stages_names(nodes: &[Node]) -> Vec<Option<String>> {
    nodes
        .iter()
        .filter(|n| n.keyword == "from")
        .map(|n| match n.args.as_slice() {
            [_, as_kw, name] if as_kw.eq_ignore_ascii_case("as") => Some(name.to_ascii_lowercase()),
            _ => None,
        })
        .collect()
}

/// `COPY --from` must not name the current or a later stage, nor a stage index out of range.
/// Other names are image references, resolved by the executor.
fn check_copy_from(
    from: &str,
    current: usize,
    names: &[Option<String>],
    line: usize,
) -> Result<(), DockerfileError> {
    if from.contains('$') {
        return Ok(());
    }
    let unknown = || DockerfileError::UnknownStage {
        line,
        name: from.to_string(),
    };
    if let Ok(index) = from.parse::<usize>() {
        return if index < current {
            Ok(())
        } else {
            Err(unknown())
        };
    }
    let lower = from.to_ascii_lowercase();
    match names
        .iter()
        .position(|n| n.as_deref() == Some(lower.as_str()))
    {
        Some(index) if index >= current => Err(unknown()),
        _ => Ok(()),
    }
}

const KEYWORDS: [&str; 18] = [
    "FROM",
    "RUN",
    "COPY",
    "ADD",
    "ENV",
    "ARG",
    "WORKDIR",
    "USER",
    "CMD",
    "ENTRYPOINT",
    "LABEL",
    "EXPOSE",
    "VOLUME",
    "SHELL",
    "STOPSIGNAL",
    "HEALTHCHECK",
    "ONBUILD",
    "MAINTAINER",
];

fn unknown_instruction(keyword: &str) -> String {
    let upper = keyword.to_uppercase();
    match super::flags::closest(&upper, KEYWORDS.iter().copied()) {
        Some(best) => format!("unknown instruction: {upper} (did you mean {best}?)"),
        None => format!(
            "unknown instruction: {upper}: expected one of {}",
            KEYWORDS.join(", ")
        ),
    }
}

fn is_valid_stage_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars.next().is_some_and(|c| c.is_ascii_lowercase())
        && chars
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, '-' | '_' | '.'))
}

fn convert_from(node: &Node, index: usize) -> Result<Stage, String> {
    let flags = Flags::parse("from", &node.flags)?;
    let (base, name) = match node.args.as_slice() {
        [base] => (base.clone(), None),
        [base, as_kw, name] if as_kw.eq_ignore_ascii_case("as") => {
            let name = name.to_ascii_lowercase();
            if !is_valid_stage_name(&name) {
                return Err(format!(
                    "invalid name for build stage: {name:?}, name can't start with a number or contain symbols"
                ));
            }
            (base.clone(), Some(name))
        }
        [_, other, _] => {
            return Err(format!(
                "syntax error - can't find AS in FROM line (found {other:?})"
            ))
        }
        _ => {
            return Err(
                "FROM requires either one or three arguments: FROM image [AS name]".to_string(),
            )
        }
    };
    Ok(Stage {
        index,
        name,
        base,
        platform: flags.string("platform"),
        line: node.start_line,
        original: node.original.clone(),
        instructions: Vec::new(),
    })
}

fn exactly_one(node: &Node) -> Result<String, String> {
    match node.args.as_slice() {
        [one] => Ok(one.clone()),
        _ => Err(format!(
            "{} requires exactly one argument",
            node.keyword.to_uppercase()
        )),
    }
}

fn at_least_one(node: &Node) -> Result<(), String> {
    if node.args.is_empty() {
        return Err(format!(
            "{} requires at least one argument",
            node.keyword.to_uppercase()
        ));
    }
    Ok(())
}

fn command_line(node: &Node, args: &[String]) -> CommandLine {
    if node.json {
        CommandLine::Exec(args.to_vec())
    } else if let Some(first) = args.first() {
        CommandLine::Shell(first.clone())
    } else {
        CommandLine::Exec(Vec::new())
    }
}

fn key_values(node: &Node) -> Result<Vec<KeyValue>, String> {
    at_least_one(node)?;
    let mut out = Vec::new();
    for triple in node.args.chunks(3) {
        let [key, value, _] = triple else {
            return Err(format!(
                "{} has an odd number of arguments",
                node.keyword.to_uppercase()
            ));
        };
        if key.is_empty() {
            return Err(format!(
                "{} names can not be blank",
                node.keyword.to_uppercase()
            ));
        }
        out.push(KeyValue {
            key: key.clone(),
            value: value.clone(),
        });
    }
    Ok(out)
}

fn chomped(doc: &Heredoc) -> Heredoc {
    let mut doc = doc.clone();
    if doc.chomp {
        doc.content = chomp_heredoc_content(&doc.content);
    }
    doc
}

/// Splits COPY/ADD arguments into sources (paths or heredocs) and the destination.
fn sources_and_dest(
    node: &Node,
    heredocs: &[Heredoc],
) -> Result<(Vec<CopySource>, String), String> {
    let keyword = node.keyword.to_uppercase();
    if node.args.len() < 2 {
        return Err(format!(
            "{keyword} requires at least two arguments, but only {} provided: add a destination",
            if node.args.is_empty() {
                "none was".to_string()
            } else {
                "one was".to_string()
            }
        ));
    }
    let (srcs, dest) = node.args.split_at(node.args.len() - 1);
    let dest = dest[0].clone();
    if !node.json && is_heredoc_word(&dest) {
        return Err(format!(
            "{keyword} cannot accept a heredoc as a destination"
        ));
    }
    let mut sources = Vec::with_capacity(srcs.len());
    for src in srcs {
        match parse_heredoc_word(src).filter(|_| !node.json) {
            Some(word) => {
                let doc = heredocs
                    .iter()
                    .find(|d| d.name == word.name)
                    .ok_or_else(|| format!("heredoc {:?} has no body", word.name))?;
                sources.push(CopySource::Heredoc(chomped(doc)));
            }
            None => sources.push(CopySource::Path(src.clone())),
        }
    }
    Ok((sources, dest))
}

/// Go's `time.ParseDuration`, in nanoseconds (non-negative durations only).
fn parse_go_duration(s: &str) -> Option<u64> {
    if s == "0" {
        return Some(0);
    }
    let mut rest = s;
    let mut total: f64 = 0.0;
    if rest.is_empty() {
        return None;
    }
    while !rest.is_empty() {
        let num_end = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(rest.len());
        if num_end == 0 {
            return None;
        }
        let number: f64 = rest[..num_end].parse().ok()?;
        rest = &rest[num_end..];
        let unit_end = rest
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(rest.len());
        let scale = match &rest[..unit_end] {
            "ns" => 1.0,
            "us" | "µs" | "μs" => 1e3,
            "ms" => 1e6,
            "s" => 1e9,
            "m" => 60e9,
            "h" => 3600e9,
            _ => return None,
        };
        rest = &rest[unit_end..];
        total += number * scale;
    }
    Some(total as u64)
}

fn duration_flag(flags: &Flags, name: &str) -> Result<Option<u64>, String> {
    let Some(value) = flags.string(name) else {
        return Ok(None);
    };
    let ns = parse_go_duration(&value).ok_or_else(|| {
        format!("invalid duration {value:?} for --{name}: use e.g. 30s, 1m30s, 500ms")
    })?;
    if ns != 0 && ns < 1_000_000 {
        return Err(format!("--{name} {value:?} cannot be less than 1ms"));
    }
    Ok(Some(ns))
}

fn convert_healthcheck(node: &Node, flags: &Flags) -> Result<Healthcheck, String> {
    let Some(kind) = node.args.first() else {
        return Err("HEALTHCHECK requires an argument: HEALTHCHECK [options] CMD command, or HEALTHCHECK NONE".into());
    };
    match kind.to_ascii_uppercase().as_str() {
        "NONE" => {
            if node.args.len() > 1 || !node.flags.is_empty() {
                return Err("HEALTHCHECK NONE takes no arguments or flags".into());
            }
            Ok(Healthcheck::None)
        }
        "CMD" => {
            let rest = &node.args[1..];
            if rest.is_empty() || (!node.json && rest[0].trim().is_empty()) {
                return Err("missing command after HEALTHCHECK CMD".into());
            }
            let retries = match flags.string("retries") {
                None => None,
                Some(v) => {
                    let n: i64 = v
                        .parse()
                        .map_err(|_| format!("invalid --retries {v:?}: use a whole number"))?;
                    if n < 0 {
                        return Err("--retries cannot be negative".into());
                    }
                    Some(u32::try_from(n).map_err(|_| format!("--retries {v} is too large"))?)
                }
            };
            Ok(Healthcheck::Check(HealthcheckCheck {
                command: command_line(node, rest),
                interval_ns: duration_flag(flags, "interval")?,
                timeout_ns: duration_flag(flags, "timeout")?,
                start_period_ns: duration_flag(flags, "start-period")?,
                start_interval_ns: duration_flag(flags, "start-interval")?,
                retries,
            }))
        }
        other => Err(format!(
            "unknown type {other:?} in HEALTHCHECK (try CMD or NONE)"
        )),
    }
}

fn convert_onbuild(node: &Node, heredocs: &[Heredoc]) -> Result<OnbuildTrigger, String> {
    Flags::parse("onbuild", &node.flags)?;
    let Some(sub) = &node.sub else {
        return Err("ONBUILD requires at least one argument: ONBUILD INSTRUCTION ...".into());
    };
    match sub.keyword.as_str() {
        "onbuild" => return Err("chaining ONBUILD via `ONBUILD ONBUILD` isn't allowed".into()),
        "maintainer" | "from" => {
            return Err(format!(
                "{} isn't allowed as an ONBUILD trigger",
                sub.keyword.to_uppercase()
            ))
        }
        k if !is_known(k) => return Err(unknown_instruction(k)),
        _ => {}
    }
    let original = node.original.trim_start();
    let mut expression = original
        .get(..7)
        .filter(|p| p.eq_ignore_ascii_case("onbuild"))
        .map_or(original, |_| original[7..].trim_start())
        .to_string();
    for doc in heredocs {
        expression.push('\n');
        expression.push_str(&doc.content);
        expression.push_str(&doc.name);
    }
    let mut inner = (**sub).clone();
    inner.start_line = node.start_line;
    inner.end_line = node.end_line;
    let instruction = convert_instruction(&inner, heredocs)?;
    Ok(OnbuildTrigger {
        expression,
        instruction: Box::new(instruction),
    })
}

/// Converts one non-FROM node.
fn convert_instruction(node: &Node, heredocs: &[Heredoc]) -> Result<Instruction, String> {
    let keyword = node.keyword.as_str();
    let flags = Flags::parse(keyword, &node.flags)?;
    let kind = match keyword {
        "arg" => {
            at_least_one(node)?;
            let mut decls = Vec::new();
            for word in &node.args {
                let (name, default) = match word.split_once('=') {
                    Some((n, d)) => (n.to_string(), Some(d.to_string())),
                    None => (word.clone(), None),
                };
                if name.is_empty() {
                    return Err(format!("ARG {word:?} has an empty name"));
                }
                decls.push(ArgDecl { name, default });
            }
            InstructionKind::Arg(decls)
        }
        "env" => InstructionKind::Env(key_values(node)?),
        "label" => InstructionKind::Label(key_values(node)?),
        "run" => {
            if node.args.is_empty() && !node.json {
                return Err("RUN requires at least one argument: the command to run".into());
            }
            InstructionKind::Run(RunInstruction {
                command: command_line(node, &node.args),
                heredocs: if node.json {
                    Vec::new()
                } else {
                    heredocs.iter().map(chomped).collect()
                },
                mounts: flags.strings("mount"),
                network: flags.string("network"),
                security: flags.string("security"),
            })
        }
        "copy" => {
            let (sources, dest) = sources_and_dest(node, heredocs)?;
            InstructionKind::Copy(CopyInstruction {
                sources,
                dest,
                from: flags.string("from"),
                chown: flags.string("chown"),
                chmod: flags.string("chmod"),
                link: flags.bool("link").unwrap_or(false),
                parents: flags.bool("parents").unwrap_or(false),
                excludes: flags.strings("exclude"),
                json_form: node.json,
            })
        }
        "add" => {
            let (sources, dest) = sources_and_dest(node, heredocs)?;
            InstructionKind::Add(AddInstruction {
                sources,
                dest,
                chown: flags.string("chown"),
                chmod: flags.string("chmod"),
                checksum: flags.string("checksum"),
                link: flags.bool("link").unwrap_or(false),
                keep_git_dir: flags.bool("keep-git-dir").unwrap_or(false),
                unpack: flags.bool("unpack"),
                excludes: flags.strings("exclude"),
                json_form: node.json,
            })
        }
        "workdir" => InstructionKind::Workdir(exactly_one(node)?),
        "user" => InstructionKind::User(exactly_one(node)?),
        "stopsignal" => InstructionKind::Stopsignal(exactly_one(node)?),
        "maintainer" => InstructionKind::Maintainer(exactly_one(node)?),
        "cmd" => InstructionKind::Cmd(command_line(node, &node.args)),
        "entrypoint" => InstructionKind::Entrypoint(command_line(node, &node.args)),
        "expose" => {
            at_least_one(node)?;
            InstructionKind::Expose(node.args.clone())
        }
        "volume" => {
            at_least_one(node)?;
            if node.args.iter().any(|v| v.trim().is_empty()) {
                return Err("VOLUME specified can not be an empty string".into());
            }
            InstructionKind::Volume(node.args.clone())
        }
        "shell" => {
            if !node.json {
                return Err("SHELL requires the arguments to be in JSON form: SHELL [\"executable\", \"param\"]".into());
            }
            at_least_one(node)?;
            InstructionKind::Shell(node.args.clone())
        }
        "healthcheck" => InstructionKind::Healthcheck(convert_healthcheck(node, &flags)?),
        "onbuild" => InstructionKind::Onbuild(convert_onbuild(node, heredocs)?),
        other => return Err(unknown_instruction(other)),
    };
    Ok(Instruction {
        line: node.start_line,
        end_line: node.end_line,
        original: node.original.clone(),
        kind,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn go_durations() {
        assert_eq!(parse_go_duration("5s"), Some(5_000_000_000));
        assert_eq!(parse_go_duration("1m30s"), Some(90_000_000_000));
        assert_eq!(parse_go_duration("1.5s"), Some(1_500_000_000));
        assert_eq!(parse_go_duration("0s"), Some(0));
        assert_eq!(parse_go_duration("0"), Some(0));
        assert_eq!(parse_go_duration("10"), None);
        assert_eq!(parse_go_duration("abc"), None);
    }

    fn only_stage(text: &str) -> Stage {
        let df = parse(text).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(df.stages.len(), 1);
        df.stages.into_iter().next().expect("one stage")
    }

    #[test]
    fn heredoc_bodies_of_a_crlf_file_have_lf_line_ends() {
        let stage = only_stage(
            "FROM busybox\r\nCOPY <<EOF /f\r\nline one\r\nline two\r\nEOF\r\nRUN true\r\n",
        );
        assert_eq!(stage.instructions.len(), 2);
        let InstructionKind::Copy(copy) = &stage.instructions[0].kind else {
            panic!("not COPY")
        };
        let CopySource::Heredoc(doc) = &copy.sources[0] else {
            panic!("not a heredoc")
        };
        assert_eq!(doc.content, "line one\nline two\n");
    }

    #[test]
    fn run_heredoc_alone_runs_its_body() {
        let stage =
            only_stage("FROM busybox\nRUN <<EOF\necho hi\necho there\nEOF\nRUN echo after\n");
        assert_eq!(stage.instructions.len(), 2);
        let InstructionKind::Run(run) = &stage.instructions[0].kind else {
            panic!("not RUN")
        };
        assert_eq!(run.heredocs.len(), 1);
        assert_eq!(run.heredocs[0].name, "EOF");
        assert_eq!(run.heredocs[0].content, "echo hi\necho there\n");
        assert!(run.heredocs[0].expand);
        assert_eq!(
            run.heredoc_run(),
            Some(HeredocRun::ShellText("echo hi\necho there\n".into()))
        );
        assert_eq!(stage.instructions[0].line, 2);
        assert_eq!(stage.instructions[0].end_line, 5);
        assert_eq!(stage.instructions[1].line, 6);
    }

    #[test]
    fn run_heredoc_with_shebang_is_a_script() {
        let stage = only_stage("FROM busybox\nRUN <<'EOT'\n#!/bin/sh\necho $HOME\nEOT\n");
        let InstructionKind::Run(run) = &stage.instructions[0].kind else {
            panic!("not RUN")
        };
        assert!(
            !run.heredocs[0].expand,
            "quoted delimiter disables expansion"
        );
        assert_eq!(
            run.heredoc_run(),
            Some(HeredocRun::Script {
                name: "EOT".into(),
                content: "#!/bin/sh\necho $HOME\n".into()
            })
        );
    }

    #[test]
    fn chomped_and_multiple_heredocs() {
        let text = "FROM busybox\nRUN <<-A cat - && cat 3<<\"B\"\n\tone\n\tA\ntwo\nB\n";
        let stage = only_stage(text);
        let InstructionKind::Run(run) = &stage.instructions[0].kind else {
            panic!("not RUN")
        };
        let docs: Vec<_> = run
            .heredocs
            .iter()
            .map(|d| {
                (
                    d.name.as_str(),
                    d.content.as_str(),
                    d.expand,
                    d.chomp,
                    d.file_descriptor,
                )
            })
            .collect();
        assert_eq!(
            docs,
            vec![
                ("A", "one\n", true, true, 0),
                ("B", "two\n", false, false, 3)
            ]
        );
        let two = "FROM busybox\nRUN cat <<A <<B\na\nA\nb\nB\n";
        let stage = only_stage(two);
        let InstructionKind::Run(run) = &stage.instructions[0].kind else {
            panic!("not RUN")
        };
        let names: Vec<_> = run
            .heredocs
            .iter()
            .map(|d| (d.name.as_str(), d.content.as_str()))
            .collect();
        assert_eq!(names, vec![("A", "a\n"), ("B", "b\n")]);
        assert_eq!(
            run.heredoc_run(),
            Some(HeredocRun::ShellText("cat <<A <<B\na\nA\nb\nB".into()))
        );
    }

    #[test]
    fn copy_heredoc_source() {
        let stage = only_stage("FROM scratch\nCOPY --chmod=755 <<EOF /hello.sh\necho $X\nEOF\n");
        let InstructionKind::Copy(copy) = &stage.instructions[0].kind else {
            panic!("not COPY")
        };
        assert_eq!(copy.dest, "/hello.sh");
        assert_eq!(copy.chmod.as_deref(), Some("755"));
        match &copy.sources[..] {
            [CopySource::Heredoc(doc)] => {
                assert_eq!(doc.name, "EOF");
                assert_eq!(doc.content, "echo $X\n");
                assert!(doc.expand);
            }
            other => panic!("unexpected sources {other:?}"),
        }
    }

    #[test]
    fn json_run_has_no_heredocs() {
        // In exec form `<<EOF` is a plain argument, so the EOF line is an instruction of its own.
        let err = parse("FROM scratch\nRUN [\"cat\", \"<<EOF\"]\nEOF\n")
            .expect_err("EOF is not an instruction");
        assert_eq!(err.line(), 3);
        assert!(
            err.to_string().contains("unknown instruction: EOF"),
            "{err}"
        );
    }

    #[test]
    fn stages_args_and_forms() {
        let text = "ARG BASE=busybox\nFROM $BASE AS Build\nENV A=1 B=\"two words\"\nCMD [\"a\", \"b\"]\n\
                    ENTRYPOINT exec run\nFROM scratch\nCOPY --from=build /x /y\nHEALTHCHECK --interval=5s CMD true\n\
                    ONBUILD RUN echo hi\nSHELL [\"/bin/bash\", \"-c\"]\n";
        let df = parse(text).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(df.global_args.len(), 1);
        assert_eq!(df.stages.len(), 2);
        assert_eq!(df.stages[0].name.as_deref(), Some("build"));
        assert_eq!(df.stages[0].base, "$BASE");
        assert_eq!(df.stage("build").map(|s| s.index), Some(0));
        assert_eq!(df.stage("1").map(|s| s.index), Some(1));
        let kinds: Vec<_> = df.stages[0]
            .instructions
            .iter()
            .map(|i| i.kind.clone())
            .collect();
        assert_eq!(
            kinds[0],
            InstructionKind::Env(vec![
                KeyValue {
                    key: "A".into(),
                    value: "1".into()
                },
                KeyValue {
                    key: "B".into(),
                    value: "\"two words\"".into()
                },
            ])
        );
        assert_eq!(
            kinds[1],
            InstructionKind::Cmd(CommandLine::Exec(vec!["a".into(), "b".into()]))
        );
        assert_eq!(
            kinds[2],
            InstructionKind::Entrypoint(CommandLine::Shell("exec run".into()))
        );
        let second = &df.stages[1].instructions;
        let InstructionKind::Healthcheck(Healthcheck::Check(hc)) = &second[1].kind else {
            panic!()
        };
        assert_eq!(hc.interval_ns, Some(5_000_000_000));
        assert_eq!(hc.test(), vec!["CMD-SHELL".to_string(), "true".to_string()]);
        let InstructionKind::Onbuild(trigger) = &second[2].kind else {
            panic!()
        };
        assert_eq!(trigger.expression, "RUN echo hi");
        assert!(matches!(trigger.instruction.kind, InstructionKind::Run(_)));
    }
}
