//! Stage planning: which stages the target needs, what each stage is based on, and the values
//! of the ARGs declared before the first FROM.

use super::BuildError;
use crate::dockerfile::{CopySource, Dockerfile, DockerfileError, InstructionKind, ShellLex};
use std::collections::BTreeMap;

/// What a stage starts from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Base {
    /// The empty image.
    Scratch,
    /// An earlier stage of the same Dockerfile (its index).
    Stage(usize),
    /// An image reference (after ARG expansion).
    Image(String),
}

/// Where `COPY --from` reads.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FromSource {
    /// An earlier stage.
    Stage(usize),
    /// An image reference.
    Image(String),
}

/// The plan of a build.
#[derive(Debug, Clone)]
pub struct Plan {
    /// Index of the target stage.
    pub target: usize,
    /// Indices of the stages to build, in file order (the target last).
    pub needed: Vec<usize>,
    /// Base of every stage (indexed like the Dockerfile's stages).
    pub bases: Vec<Base>,
    /// Values of the ARGs declared before the first FROM (after `--build-arg`s).
    pub global_args: BTreeMap<String, String>,
    /// Number of steps of the needed stages (FROM lines included).
    pub total_steps: usize,
}

/// Resolves `--from` of COPY in stage `current`: a stage name or index before it, else an image.
pub fn resolve_from(df: &Dockerfile, current: usize, from: &str) -> FromSource {
    let lower = from.to_ascii_lowercase();
    if let Some(s) = df.stages[..current]
        .iter()
        .find(|s| s.name.as_deref() == Some(lower.as_str()))
    {
        return FromSource::Stage(s.index);
    }
    if let Ok(i) = lower.parse::<usize>() {
        if i < current {
            return FromSource::Stage(i);
        }
    }
    FromSource::Image(from.to_string())
}

/// Plans the build of `target` (a stage name or index; the last stage when `None`).
pub fn plan(
    df: &Dockerfile,
    build_args: &BTreeMap<String, String>,
    target: Option<&str>,
) -> Result<Plan, BuildError> {
    let lex = ShellLex::new(df.directives.escape);
    // BuildKit's automatic platform ARGs (BUILDPLATFORM, TARGETARCH, ...) are in scope for FROM
    // lines, and `ARG NAME` in a stage takes their value.
    let mut global_args: BTreeMap<String, String> = super::precheck::platform_args()
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    for instr in &df.global_args {
        if let InstructionKind::Arg(decls) = &instr.kind {
            for d in decls {
                let value = match (build_args.get(&d.name), &d.default) {
                    (Some(v), _) => Some(v.clone()),
                    (None, Some(def)) => {
                        Some(lex.process_word(def, &global_args).map_err(|source| {
                            DockerfileError::Expansion {
                                line: instr.line,
                                source,
                            }
                        })?)
                    }
                    (None, None) => None,
                };
                if let Some(v) = value {
                    global_args.insert(d.name.clone(), v);
                }
            }
        }
    }
    if df.stages.is_empty() {
        return Err(BuildError::Usage(
            "the Dockerfile has no FROM instruction: a Dockerfile needs at least one stage".into(),
        ));
    }
    let mut bases = Vec::with_capacity(df.stages.len());
    for stage in &df.stages {
        let name = lex
            .process_word(&stage.base, &global_args)
            .map_err(|source| DockerfileError::Expansion {
                line: stage.line,
                source,
            })?;
        if name.is_empty() {
            return Err(DockerfileError::syntax(
                stage.line,
                format!(
                    "FROM {:?} expands to an empty image name: pass --build-arg",
                    stage.base
                ),
            )
            .into());
        }
        let base = if name.eq_ignore_ascii_case("scratch") {
            Base::Scratch
        } else {
            match resolve_from(df, stage.index, &name) {
                FromSource::Stage(i) => Base::Stage(i),
                FromSource::Image(r) => Base::Image(r),
            }
        };
        bases.push(base);
    }
    let target = match target {
        None => df.stages.len() - 1,
        Some(t) => df.stage(t).map(|s| s.index).ok_or_else(|| {
            BuildError::Usage(format!(
                "target stage {t:?} could not be found: name one of the FROM ... AS stages"
            ))
        })?,
    };
    // Dependencies: FROM <stage>, COPY --from=<stage> and RUN --mount=...,from=<stage>.
    let mut needed = vec![false; df.stages.len()];
    let mut todo = vec![target];
    while let Some(i) = todo.pop() {
        if needed[i] {
            continue;
        }
        needed[i] = true;
        if let Base::Stage(b) = bases[i] {
            todo.push(b);
        }
        for instr in &df.stages[i].instructions {
            let froms: Vec<String> = match &instr.kind {
                InstructionKind::Copy(c) => c.from.iter().cloned().collect(),
                InstructionKind::Run(r) => r
                    .mounts
                    .iter()
                    .filter_map(|m| {
                        let m = lex.process_word(m, &global_args).unwrap_or(m.clone());
                        match super::run_mount::parse(&m, "/") {
                            Ok(super::run_mount::RunMount::Bind { from, .. }) => from,
                            _ => None,
                        }
                    })
                    .collect(),
                _ => Vec::new(),
            };
            for from in froms {
                let from = lex
                    .process_word(&from, &global_args)
                    .unwrap_or(from.clone());
                if let FromSource::Stage(s) = resolve_from(df, i, &from) {
                    todo.push(s);
                }
            }
        }
    }
    let needed: Vec<usize> = (0..df.stages.len()).filter(|i| needed[*i]).collect();
    let total_steps = needed
        .iter()
        .map(|i| 1 + df.stages[*i].instructions.len())
        .sum();
    Ok(Plan {
        target,
        needed,
        bases,
        global_args,
        total_steps,
    })
}

/// True when a COPY/ADD source list contains a heredoc (inline file).
pub fn has_heredoc(sources: &[CopySource]) -> bool {
    sources.iter().any(|s| matches!(s, CopySource::Heredoc(_)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plan_of(text: &str, args: &[(&str, &str)], target: Option<&str>) -> Plan {
        let df = crate::dockerfile::parse(text).unwrap();
        let args = args
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        plan(&df, &args, target).unwrap()
    }

    const MULTI: &str = "ARG BASE=alpine\nFROM $BASE AS a\nRUN x\nFROM scratch AS b\nCOPY --from=a /x /x\nFROM a AS c\nRUN y\nFROM b\n";

    #[test]
    fn needed_stages_follow_from_and_copy_from() {
        let p = plan_of(MULTI, &[], None);
        assert_eq!(p.needed, [0, 1, 3]);
        assert_eq!(p.target, 3);
        assert_eq!(p.bases[0], Base::Image("alpine".into()));
        assert_eq!(p.bases[1], Base::Scratch);
        assert_eq!(p.bases[2], Base::Stage(0));
        assert_eq!(p.total_steps, 2 + 2 + 1);
        let p = plan_of(MULTI, &[("BASE", "busybox")], Some("c"));
        assert_eq!(p.needed, [0, 2]);
        assert_eq!(p.bases[0], Base::Image("busybox".into()));
    }

    #[test]
    fn unknown_target_and_empty_base_are_errors() {
        let df = crate::dockerfile::parse(MULTI).unwrap();
        assert!(plan(&df, &BTreeMap::new(), Some("nope")).is_err());
        let df = crate::dockerfile::parse("ARG B\nFROM $B\n").unwrap();
        let err = plan(&df, &BTreeMap::new(), None).unwrap_err();
        assert!(err.to_string().contains("Dockerfile:2"), "{err}");
    }
}
