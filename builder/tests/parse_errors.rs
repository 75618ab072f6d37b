//! Bad Dockerfiles are rejected before anything runs, with an error naming `Dockerfile:LINE`.

use std::collections::HashMap;

use rbuild_builder::dockerfile::{parse, DockerfileError, ExpandError, ShellLex};

/// Parses `text`, expects failure, checks the reported line and that the message contains
/// `needle` (case-insensitive).
fn assert_rejected(text: &str, line: usize, needle: &str) -> DockerfileError {
    let err = match parse(text) {
        Ok(df) => panic!("expected an error for {text:?}, got {df:#?}"),
        Err(e) => e,
    };
    let message = err.to_string();
    assert!(
        message.starts_with(&format!("Dockerfile:{line}: ")),
        "error for {text:?} should start with Dockerfile:{line}: got {message:?}"
    );
    assert_eq!(err.line(), line);
    assert!(
        message.to_lowercase().contains(&needle.to_lowercase()),
        "error for {text:?} should mention {needle:?}: got {message:?}"
    );
    err
}

#[test]
fn unknown_instruction() {
    assert_rejected(
        "FROM busybox\nRUN true\nFOO bar\n",
        3,
        "unknown instruction: FOO: expected one of FROM",
    );
}

#[test]
fn unknown_instruction_after_continuation_reports_its_first_line() {
    assert_rejected(
        "FROM busybox\nRUN a \\\n  b\nCOPPY x \\\n  y\n",
        4,
        "unknown instruction: COPPY (did you mean COPY?)",
    );
}

#[test]
fn missing_from() {
    assert_rejected("ARG A=1\nARG B\n", 2, "no FROM instruction");
}

#[test]
fn instruction_before_from() {
    assert_rejected("ARG V=1\nRUN echo hi\nFROM busybox\n", 2, "RUN before FROM");
}

#[test]
fn warnings_for_empty_continuation_lines() {
    let df = parse("FROM busybox\nRUN echo a \\\n\n  b\n").unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(df.warnings.len(), 1);
    assert!(
        df.warnings[0].starts_with("Dockerfile:4: empty continuation line"),
        "{:?}",
        df.warnings
    );
}

#[test]
fn empty_and_comment_only_files() {
    assert!(matches!(parse(""), Err(DockerfileError::Syntax { .. })));
    let err = parse("# only\n# comments\n\n").expect_err("comments only");
    assert!(err.to_string().contains("no instructions"), "{err}");
}

#[test]
fn from_argument_counts() {
    assert_rejected("FROM\n", 1, "FROM requires either one or three arguments");
    assert_rejected(
        "FROM a b\n",
        1,
        "FROM requires either one or three arguments",
    );
    assert_rejected("FROM a IS b\n", 1, "can't find AS");
    assert_rejected("FROM a AS 1stage\n", 1, "invalid name for build stage");
}

#[test]
fn duplicate_stage_name() {
    assert_rejected("FROM a AS x\nFROM b AS X\n", 2, "duplicate stage name");
}

#[test]
fn env_without_value() {
    assert_rejected(
        "FROM busybox\n\nENV PATH\n",
        3,
        "ENV must have two arguments",
    );
    assert_rejected(
        "FROM busybox\nENV\n",
        2,
        "ENV requires at least one argument",
    );
    assert_rejected("FROM busybox\nENV a=1 b\n", 2, "can't find =");
    assert_rejected(
        "FROM busybox\nLABEL\n",
        2,
        "LABEL requires at least one argument",
    );
}

#[test]
fn single_argument_instructions() {
    assert_rejected(
        "FROM busybox\nWORKDIR\n",
        2,
        "WORKDIR requires exactly one argument",
    );
    assert_rejected(
        "FROM busybox\nUSER\n",
        2,
        "USER requires exactly one argument",
    );
    assert_rejected(
        "FROM busybox\nSTOPSIGNAL\n",
        2,
        "STOPSIGNAL requires exactly one argument",
    );
    assert_rejected(
        "FROM busybox\nMAINTAINER\n",
        2,
        "MAINTAINER requires exactly one argument",
    );
    assert_rejected(
        "FROM busybox\nEXPOSE\n",
        2,
        "EXPOSE requires at least one argument",
    );
    assert_rejected(
        "FROM busybox\nVOLUME\n",
        2,
        "VOLUME requires at least one argument",
    );
    assert_rejected(
        "FROM busybox\nVOLUME [\"\"]\n",
        2,
        "can not be an empty string",
    );
    assert_rejected(
        "FROM busybox\nARG\n",
        2,
        "ARG requires at least one argument",
    );
    assert_rejected(
        "FROM busybox\nRUN\n",
        2,
        "RUN requires at least one argument",
    );
}

#[test]
fn copy_and_add_need_a_destination() {
    assert_rejected(
        "FROM busybox\nCOPY onlyone\n",
        2,
        "COPY requires at least two arguments",
    );
    assert_rejected(
        "FROM busybox\nADD [\"onlyone\"]\n",
        2,
        "ADD requires at least two arguments",
    );
    assert_rejected(
        "FROM busybox\nCOPY a <<EOF\nx\nEOF\n",
        2,
        "heredoc as a destination",
    );
}

#[test]
fn unknown_flags() {
    assert_rejected("FROM busybox\nCOPY --frm=a x y\n", 2, "unknown flag: --frm");
    assert_rejected(
        "FROM busybox\nCOPY --chwon=1 x y\n",
        2,
        "did you mean --chown?",
    );
    assert_rejected(
        "FROM busybox\nRUN --from=a true\n",
        2,
        "unknown flag: --from",
    );
    assert_rejected(
        "FROM busybox\nWORKDIR --x=1 /a\n",
        2,
        "WORKDIR takes no flags",
    );
    assert_rejected("FROM --plat=x busybox\n", 1, "unknown flag: --plat");
    assert_rejected(
        "FROM busybox\nADD --from=x a b\n",
        2,
        "unknown flag: --from",
    );
}

#[test]
fn bad_flag_values() {
    assert_rejected(
        "FROM busybox\nCOPY --from x y\n",
        2,
        "missing a value on flag: --from",
    );
    assert_rejected(
        "FROM busybox\nCOPY --link=maybe x y\n",
        2,
        "expecting boolean value",
    );
    assert_rejected(
        "FROM busybox\nCOPY --from=a --from=b x y\n",
        2,
        "duplicate flag",
    );
    assert_rejected(
        "FROM busybox\nHEALTHCHECK --interval=5 CMD true\n",
        2,
        "invalid duration",
    );
    assert_rejected(
        "FROM busybox\nHEALTHCHECK --retries=-1 CMD true\n",
        2,
        "cannot be negative",
    );
}

#[test]
fn shell_requires_json() {
    assert_rejected(
        "FROM busybox\nSHELL /bin/bash -c\n",
        2,
        "SHELL requires the arguments to be in JSON form",
    );
}

#[test]
fn json_arrays_must_hold_strings() {
    assert_rejected(
        "FROM busybox\nCMD [ \"echo\", [ \"nested json\" ] ]\n",
        2,
        "JSON arrays must contain only strings",
    );
    assert_rejected(
        "FROM busybox\nRUN [\"a\", 1]\n",
        2,
        "JSON arrays must contain only strings",
    );
}

#[test]
fn healthcheck_forms() {
    assert_rejected(
        "FROM busybox\nHEALTHCHECK\n",
        2,
        "HEALTHCHECK requires an argument",
    );
    assert_rejected(
        "FROM busybox\nHEALTHCHECK CMD\n",
        2,
        "missing command after HEALTHCHECK CMD",
    );
    assert_rejected(
        "FROM busybox\nHEALTHCHECK CONNECT TCP 7000\n",
        2,
        "unknown type \"CONNECT\"",
    );
    assert_rejected(
        "FROM busybox\nHEALTHCHECK NONE extra\n",
        2,
        "takes no arguments",
    );
}

#[test]
fn onbuild_restrictions() {
    assert_rejected(
        "FROM busybox\nONBUILD ONBUILD RUN x\n",
        2,
        "ONBUILD ONBUILD",
    );
    assert_rejected(
        "FROM busybox\nONBUILD FROM x\n",
        2,
        "FROM isn't allowed as an ONBUILD trigger",
    );
    assert_rejected(
        "FROM busybox\nONBUILD MAINTAINER x\n",
        2,
        "MAINTAINER isn't allowed",
    );
    assert_rejected(
        "FROM busybox\nONBUILD BOGUS x\n",
        2,
        "unknown instruction: BOGUS",
    );
    assert_rejected(
        "FROM busybox\nONBUILD\n",
        2,
        "ONBUILD requires at least one argument",
    );
}

#[test]
fn unterminated_heredoc() {
    assert_rejected(
        "FROM busybox\nRUN <<EOF\necho hi\n",
        2,
        "unterminated heredoc",
    );
}

#[test]
fn lines_after_heredoc_bodies_are_counted() {
    assert_rejected(
        "FROM busybox\nRUN <<EOF\na\nb\nEOF\nNOPE\n",
        6,
        "unknown instruction: NOPE",
    );
}

#[test]
fn bad_escape_directive() {
    assert_rejected("# escape=x\nFROM busybox\n", 1, "invalid escape token");
    assert_rejected(
        "# escape=`\n# escape=`\nFROM busybox\n",
        2,
        "only one escape parser directive",
    );
}

#[test]
fn syntax_directive_must_name_the_dockerfile_frontend() {
    for ok in [
        "docker/dockerfile:1",
        "docker/dockerfile:1.7",
        "docker/dockerfile:1-labs",
        "docker.io/docker/dockerfile:1.4@sha256:0123",
        "docker/dockerfile",
    ] {
        parse(&format!("# syntax={ok}\nFROM scratch\n")).unwrap_or_else(|e| panic!("{ok}: {e}"));
    }
    assert_rejected(
        "# escape=`\n# syntax=example.com/my/frontend:2\nFROM scratch\n",
        2,
        "unsupported syntax directive",
    );
    assert_rejected(
        "# syntax=docker/dockerfile:0.9\nFROM scratch\n",
        1,
        "docker/dockerfile:1 only",
    );
}

#[test]
fn copy_from_a_later_or_missing_stage_index() {
    let err = assert_rejected(
        "FROM busybox AS a\nCOPY --from=b /x /y\nFROM busybox AS b\n",
        2,
        "unknown stage",
    );
    assert!(matches!(err, DockerfileError::UnknownStage { ref name, .. } if name == "b"));
    assert_rejected(
        "FROM busybox\nCOPY --from=0 /x /y\n",
        2,
        "unknown stage \"0\"",
    );
    assert_rejected(
        "FROM busybox\nFROM busybox\nCOPY --from=3 /x /y\n",
        3,
        "unknown stage",
    );
    // Earlier stages, images and ARG-expanded names are accepted here.
    parse("FROM busybox AS a\nFROM busybox\nCOPY --from=a /x /y\nCOPY --from=0 /x /y\nCOPY --from=alpine:3 /x /y\nCOPY --from=$S /x /y\n")
        .unwrap_or_else(|e| panic!("{e}"));
}

#[test]
fn required_variable_expansion_error() {
    let env: HashMap<String, String> = HashMap::new();
    let err = ShellLex::new('\\')
        .process_word("${TAG:?set TAG with --build-arg}", &env)
        .expect_err("unset");
    assert_eq!(
        err,
        ExpandError::Required {
            name: "TAG".into(),
            message: "set TAG with --build-arg".into()
        }
    );
    let wrapped = DockerfileError::Expansion {
        line: 7,
        source: err,
    };
    assert_eq!(
        wrapped.to_string(),
        "Dockerfile:7: TAG: set TAG with --build-arg"
    );
}

#[test]
fn valid_file_with_every_instruction_parses() {
    let text = r#"# syntax=docker/dockerfile:1
ARG BASE=busybox
FROM ${BASE} AS base
MAINTAINER someone
LABEL a=b "c d"=e
ENV X=1 \
    Y="two words"
ARG Z
WORKDIR /app
USER 1000:1000
RUN --network=none echo hi && \
    echo there
COPY --chown=1:1 --chmod=644 a b /dst/
ADD --checksum=sha256:abc https://example.com/x /x
EXPOSE 80/tcp 443
VOLUME ["/data"]
SHELL ["/bin/sh", "-c"]
STOPSIGNAL SIGTERM
HEALTHCHECK --interval=30s --timeout=3s --retries=3 CMD wget -q localhost || exit 1
ONBUILD COPY . /src
CMD ["run"]
ENTRYPOINT ["/entry"]
FROM base
COPY --from=base /app /app
"#;
    let df = parse(text).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(df.directives.syntax.as_deref(), Some("docker/dockerfile:1"));
    assert_eq!(df.stages.len(), 2);
    let lines: Vec<usize> = df.stages[0].instructions.iter().map(|i| i.line).collect();
    assert_eq!(
        lines,
        vec![4, 5, 6, 8, 9, 10, 11, 13, 14, 15, 16, 17, 18, 19, 20, 21, 22]
    );
    let keywords: Vec<&str> = df.stages[0]
        .instructions
        .iter()
        .map(|i| i.kind.keyword())
        .collect();
    assert_eq!(
        keywords,
        vec![
            "MAINTAINER",
            "LABEL",
            "ENV",
            "ARG",
            "WORKDIR",
            "USER",
            "RUN",
            "COPY",
            "ADD",
            "EXPOSE",
            "VOLUME",
            "SHELL",
            "STOPSIGNAL",
            "HEALTHCHECK",
            "ONBUILD",
            "CMD",
            "ENTRYPOINT"
        ]
    );
    assert_eq!(df.stages[0].instructions[6].end_line, 12);
    assert_eq!(df.stages[1].base, "base");
    assert_eq!(df.stages[1].line, 23);
}
