//! The raw syntax tree: Dockerfile text split into instruction nodes exactly as BuildKit's
//! parser does (directives, continuations, comments, flags, JSON vs shell form, heredocs),
//! before any validation. [`Node::dump`] prints BuildKit's conformance dump format.

use super::directives::DirectiveParser;
use super::error::DockerfileError;
use super::heredoc::{heredocs_from_line, parse_heredoc_word};
use super::line_parsers::{self as lp, ParsedArgs};
use super::model::{Directives, Heredoc};

/// One instruction as written, split into flags and arguments.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Node {
    /// The instruction keyword, lower-cased (`run`, `copy`, ...; unknown words kept as is).
    pub keyword: String,
    /// Leading `--flag[=value]` words, quotes removed.
    pub flags: Vec<String>,
    /// Arguments: decoded JSON strings, or raw text pieces per the instruction's splitter.
    pub args: Vec<String>,
    /// The arguments were a JSON array.
    pub json: bool,
    /// The nested instruction of `ONBUILD`.
    pub sub: Option<Box<Node>>,
    /// Here-documents read after this line (raw bodies, tabs not stripped).
    pub heredocs: Vec<Heredoc>,
    /// The instruction text with continuations joined.
    pub original: String,
    /// 1-based first line.
    pub start_line: usize,
    /// 1-based last line (including continuation lines and heredoc bodies).
    pub end_line: usize,
}

/// The result of parsing Dockerfile text into nodes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ast {
    /// Parser directives found at the top.
    pub directives: Directives,
    /// The instructions in order.
    pub nodes: Vec<Node>,
    /// Non-fatal findings (e.g. empty continuation lines).
    pub warnings: Vec<String>,
    /// 1-based line of the `# syntax=` directive, if any.
    pub syntax_line: Option<usize>,
}

impl Ast {
    /// BuildKit's dump of the whole file: one parenthesised instruction per line, ending in a
    /// newline.
    pub fn dump(&self) -> String {
        let mut out = String::new();
        for node in &self.nodes {
            out.push_str(&node.dump());
            out.push('\n');
        }
        out
    }
}

impl Node {
    /// BuildKit's dump of one instruction: `(keyword ["--flag"] "arg" ...)`.
    pub fn dump(&self) -> String {
        let mut s = String::from("(");
        s.push_str(&self.dump_inner());
        s.push(')');
        s
    }

    fn dump_inner(&self) -> String {
        let mut s = self.keyword.to_lowercase();
        if !self.flags.is_empty() {
            let quoted: Vec<String> = self.flags.iter().map(|f| go_quote(f)).collect();
            s.push_str(&format!(" [{}]", quoted.join(" ")));
        }
        if let Some(sub) = &self.sub {
            s.push(' ');
            s.push_str(&sub.dump());
        }
        for arg in &self.args {
            s.push(' ');
            s.push_str(&go_quote(arg));
        }
        s.trim().to_string()
    }

    /// Whether heredocs on this line are read (RUN/COPY/ADD in shell form, also under ONBUILD).
    fn can_contain_heredoc(&self) -> bool {
        let node = match (&self.keyword[..], &self.sub) {
            ("onbuild", Some(sub)) => sub,
            _ => self,
        };
        matches!(node.keyword.as_str(), "run" | "copy" | "add") && !node.json
    }
}

/// Parses Dockerfile text into raw nodes. Fails on an empty file, bad directives, non-string
/// JSON arrays, `ENV`/`LABEL` without values and unterminated heredocs.
pub fn parse_ast(text: &str) -> Result<Ast, DockerfileError> {
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    let mut lines = text.split_inclusive('\n');
    let mut directives = DirectiveParser::default();
    let mut nodes = Vec::new();
    let mut warnings = Vec::new();
    let mut current_line = 0usize;

    while let Some(raw) = lines.next() {
        let processed = process_line(&mut directives, raw, true)
            .map_err(|m| DockerfileError::syntax(current_line + 1, m))?;
        current_line += 1;
        let start_line = current_line;
        let escape = directives.directives.escape;
        let (mut line, mut at_end) = trim_continuation(processed, escape);
        if at_end && line.is_empty() {
            continue;
        }
        let mut has_empty_continuation = false;
        while !at_end {
            let Some(raw) = lines.next() else { break };
            let processed = process_line(&mut directives, raw, false)
                .map_err(|m| DockerfileError::syntax(current_line + 1, m))?;
            current_line += 1;
            if is_comment(raw) {
                continue;
            }
            if processed.trim_start().is_empty() {
                has_empty_continuation = true;
                continue;
            }
            let (piece, end) = trim_continuation(processed, escape);
            line.push_str(&piece);
            at_end = end;
        }
        if has_empty_continuation {
            warnings.push(format!(
                "Dockerfile:{current_line}: empty continuation line found in: {line}"
            ));
        }
        let mut node =
            node_from_line(&line, escape).map_err(|m| DockerfileError::syntax(start_line, m))?;
        node.start_line = start_line;
        if node.can_contain_heredoc() && line.contains("<<") {
            for word in heredocs_from_line(&line) {
                let mut content = String::new();
                let mut terminated = false;
                for raw in lines.by_ref() {
                    current_line += 1;
                    let mut candidate = trim_newline(raw);
                    if word.chomp {
                        candidate = candidate.trim_start_matches('\t');
                    }
                    if candidate == word.name {
                        terminated = true;
                        break;
                    }
                    // As BuildKit's line scanner: a CRLF line ending reads as LF.
                    match raw.strip_suffix("\r\n") {
                        Some(body) => {
                            content.push_str(body);
                            content.push('\n');
                        }
                        None => content.push_str(raw),
                    }
                }
                if !terminated {
                    return Err(DockerfileError::syntax(
                        start_line,
                        format!("unterminated heredoc: add a line `{}` to end it", word.name),
                    ));
                }
                node.heredocs.push(word.with_content(content));
            }
        }
        node.end_line = current_line;
        nodes.push(node);
    }
    if nodes.is_empty() {
        return Err(DockerfileError::syntax(
            current_line,
            "file with no instructions: a Dockerfile needs at least a FROM instruction",
        ));
    }
    Ok(Ast {
        syntax_line: directives.syntax_line,
        directives: directives.directives,
        nodes,
        warnings,
    })
}

/// `processLine`: trims the newline (and leading whitespace), blanks out comment lines, and
/// feeds the line to the directive parser.
fn process_line<'a>(
    directives: &mut DirectiveParser,
    raw: &'a str,
    strip_left: bool,
) -> Result<&'a str, String> {
    let mut token = trim_newline(raw);
    if strip_left {
        token = token.trim_start();
    }
    directives.parse_line(token)?;
    Ok(if is_comment(token) { "" } else { token })
}

fn trim_newline(s: &str) -> &str {
    s.trim_end_matches(['\r', '\n'])
}

fn is_comment(line: &str) -> bool {
    line.trim_start().starts_with('#')
}

/// Removes a trailing, unescaped escape character (plus spaces/tabs after it). Returns the
/// text and whether the logical line ends here.
fn trim_continuation(line: &str, escape: char) -> (String, bool) {
    let body = line.trim_end_matches([' ', '\t']);
    let trailing = body.chars().rev().take_while(|c| *c == escape).count();
    if trailing % 2 == 1 {
        (body[..body.len() - escape.len_utf8()].to_string(), false)
    } else {
        (line.to_string(), true)
    }
}

/// `newNodeFromLine`: splits keyword, flags and arguments.
fn node_from_line(line: &str, escape: char) -> Result<Node, String> {
    let trimmed = line.trim();
    let parts = lp::split_ws(trimmed, 2);
    let keyword = parts[0].clone();
    let (rest, flags) = match parts.get(1) {
        Some(rest) => lp::extract_builder_flags(rest),
        None => (String::new(), Vec::new()),
    };
    let rest = rest.trim();
    let lower = keyword.to_lowercase();
    let parsed: ParsedArgs = match lower.as_str() {
        "add" | "copy" | "volume" => lp::parse_maybe_json_to_list(rest)?,
        "arg" => lp::parse_name_or_name_val(rest, escape),
        "cmd" | "entrypoint" | "run" | "shell" => lp::parse_maybe_json(rest)?,
        "env" => lp::parse_name_val(rest, "ENV", escape)?,
        "label" => lp::parse_name_val(rest, "LABEL", escape)?,
        "expose" | "from" => lp::parse_strings_whitespace_delimited(rest),
        "healthcheck" => lp::parse_health_config(rest)?,
        "maintainer" | "stopsignal" | "user" | "workdir" => lp::parse_string(rest),
        "onbuild" => {
            if rest.is_empty() {
                ParsedArgs::default()
            } else {
                let child = node_from_line(rest, escape)?;
                ParsedArgs {
                    sub: Some(Box::new(child)),
                    ..ParsedArgs::default()
                }
            }
        }
        _ => ParsedArgs {
            args: vec![String::new()],
            ..ParsedArgs::default()
        },
    };
    Ok(Node {
        keyword: if is_known(&lower) { lower } else { keyword },
        flags,
        args: parsed.args,
        json: parsed.json,
        sub: parsed.sub,
        heredocs: Vec::new(),
        original: line.to_string(),
        start_line: 0,
        end_line: 0,
    })
}

/// Whether `keyword` (lower case) is a Dockerfile instruction.
pub(crate) fn is_known(keyword: &str) -> bool {
    matches!(
        keyword,
        "add"
            | "arg"
            | "cmd"
            | "copy"
            | "entrypoint"
            | "env"
            | "expose"
            | "from"
            | "healthcheck"
            | "label"
            | "maintainer"
            | "onbuild"
            | "run"
            | "shell"
            | "stopsignal"
            | "user"
            | "volume"
            | "workdir"
    )
}

/// Whether `word` is a heredoc reference such as `<<EOF` (used by COPY/ADD sources).
pub(crate) fn is_heredoc_word(word: &str) -> bool {
    parse_heredoc_word(word).is_some()
}

/// Go's `strconv.Quote`.
pub fn go_quote(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\u{7}' => out.push_str("\\a"),
            '\u{8}' => out.push_str("\\b"),
            '\u{c}' => out.push_str("\\f"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '\u{b}' => out.push_str("\\v"),
            ' ' => out.push(' '),
            c if (c as u32) < 0x20 || c == '\u{7f}' => {
                out.push_str(&format!("\\x{:02x}", c as u32))
            }
            c if c.is_control() || c.is_whitespace() => {
                if (c as u32) < 0x10000 {
                    out.push_str(&format!("\\u{:04x}", c as u32));
                } else {
                    out.push_str(&format!("\\U{:08x}", c as u32));
                }
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}
