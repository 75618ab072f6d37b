//! BuildKit's per-instruction argument splitters (the raw AST level: no expansion, quotes kept).

use super::ast::Node;

/// The arguments an instruction line splits into.
#[derive(Debug, Default)]
pub(crate) struct ParsedArgs {
    /// Argument values in order.
    pub args: Vec<String>,
    /// The arguments were a JSON array.
    pub json: bool,
    /// The nested instruction of `ONBUILD`.
    pub sub: Option<Box<Node>>,
}

impl ParsedArgs {
    fn values(args: Vec<String>) -> Self {
        ParsedArgs {
            args,
            json: false,
            sub: None,
        }
    }
}

/// `[\t\v\f\r ]`, BuildKit's `reWhitespace` class.
pub(crate) fn is_ws(c: char) -> bool {
    matches!(c, '\t' | '\u{b}' | '\u{c}' | '\r' | ' ')
}

/// Splits on runs of `[\t\v\f\r ]` (Go's `regexp.Split(s, n)`; `n == 0` means no limit).
pub(crate) fn split_ws(s: &str, limit: usize) -> Vec<String> {
    let mut parts = Vec::new();
    let mut rest = s;
    loop {
        if limit != 0 && parts.len() + 1 == limit {
            parts.push(rest.to_string());
            return parts;
        }
        match rest.find(is_ws) {
            Some(start) => {
                let after = rest[start..]
                    .find(|c: char| !is_ws(c))
                    .map_or(rest.len(), |i| start + i);
                parts.push(rest[..start].to_string());
                rest = &rest[after..];
            }
            None => {
                parts.push(rest.to_string());
                return parts;
            }
        }
    }
}

/// Splits leading `--flag` words off an instruction's argument text (quotes removed from
/// the flags). Returns the remaining text and the flags.
pub(crate) fn extract_builder_flags(line: &str) -> (String, Vec<String>) {
    #[derive(PartialEq)]
    enum Phase {
        Spaces,
        Word,
        Quote,
    }
    let chars: Vec<(usize, char)> = line.char_indices().collect();
    let mut words = Vec::new();
    let mut phase = Phase::Spaces;
    let mut word = String::new();
    let mut quote = '\0';
    let mut blank_ok = false;
    let mut i = 0;
    loop {
        let at_end = i >= chars.len();
        let ch = if at_end { '\0' } else { chars[i].1 };
        if phase == Phase::Spaces {
            if at_end {
                break;
            }
            if ch.is_whitespace() {
                i += 1;
                continue;
            }
            if ch != '-' || chars.get(i + 1).map(|c| c.1) != Some('-') {
                return (line[chars[i].0..].to_string(), words);
            }
            phase = Phase::Word;
        }
        if at_end {
            if word != "--" && (blank_ok || !word.is_empty()) {
                words.push(word);
            }
            break;
        }
        if phase == Phase::Word {
            if ch.is_whitespace() {
                phase = Phase::Spaces;
                if word == "--" {
                    return (line[chars[i].0..].to_string(), words);
                }
                if blank_ok || !word.is_empty() {
                    words.push(std::mem::take(&mut word));
                }
                word.clear();
                blank_ok = false;
                i += 1;
                continue;
            }
            if ch == '\'' || ch == '"' {
                quote = ch;
                blank_ok = true;
                phase = Phase::Quote;
                i += 1;
                continue;
            }
            let mut c = ch;
            if ch == '\\' {
                if i + 1 == chars.len() {
                    i += 1;
                    continue;
                }
                i += 1;
                c = chars[i].1;
            }
            word.push(c);
            i += 1;
            continue;
        }
        // Phase::Quote
        if ch == quote {
            phase = Phase::Word;
            i += 1;
            continue;
        }
        let mut c = ch;
        if ch == '\\' {
            if i + 1 == chars.len() {
                phase = Phase::Word;
                i += 1;
                continue;
            }
            i += 1;
            c = chars[i].1;
        }
        word.push(c);
        i += 1;
    }
    (String::new(), words)
}

/// Splits on whitespace, respecting quotes and the escape character, keeping both in the
/// words (BuildKit's `parseWords`).
pub(crate) fn parse_words(rest: &str, escape: char) -> Vec<String> {
    #[derive(PartialEq)]
    enum Phase {
        Spaces,
        Word,
        Quote,
    }
    let chars: Vec<char> = rest.chars().collect();
    let mut words = Vec::new();
    let mut phase = Phase::Spaces;
    let mut word = String::new();
    let mut quote = '\0';
    let mut blank_ok = false;
    let mut i = 0;
    loop {
        let at_end = i >= chars.len();
        let mut ch = if at_end { '\0' } else { chars[i] };
        if phase == Phase::Spaces {
            if at_end {
                break;
            }
            if ch.is_whitespace() {
                i += 1;
                continue;
            }
            phase = Phase::Word;
        }
        if at_end {
            if blank_ok || !word.is_empty() {
                words.push(word);
            }
            break;
        }
        if phase == Phase::Word {
            if ch.is_whitespace() {
                phase = Phase::Spaces;
                if blank_ok || !word.is_empty() {
                    words.push(std::mem::take(&mut word));
                }
                blank_ok = false;
                i += 1;
                continue;
            }
            if ch == '\'' || ch == '"' {
                quote = ch;
                blank_ok = true;
                phase = Phase::Quote;
            }
            if ch == escape {
                if i + 1 == chars.len() {
                    i += 1;
                    continue;
                }
                word.push(ch);
                i += 1;
                ch = chars[i];
            }
            word.push(ch);
            i += 1;
            continue;
        }
        // Phase::Quote
        if ch == quote {
            phase = Phase::Word;
        }
        if ch == escape && quote != '\'' {
            if i + 1 == chars.len() {
                phase = Phase::Word;
                i += 1;
                continue;
            }
            word.push(ch);
            i += 1;
            ch = chars[i];
        }
        word.push(ch);
        i += 1;
    }
    words
}

/// Error text for a JSON array with a non-string element.
pub(crate) const NOT_STRING_ARRAY: &str =
    "JSON arrays must contain only strings: quote every element, e.g. [\"echo\", \"hi\"]";

/// Result of trying the JSON form.
enum JsonForm {
    /// A valid array of strings.
    Strings(Vec<String>),
    /// Not JSON (or not an array): use the shell form.
    ShellForm,
    /// A JSON array with a non-string element: an error.
    NotStringArray,
}

fn parse_json(rest: &str) -> JsonForm {
    let rest = rest.trim_start();
    if !rest.starts_with('[') {
        return JsonForm::ShellForm;
    }
    let Ok(values) = serde_json::from_str::<Vec<serde_json::Value>>(rest) else {
        return JsonForm::ShellForm;
    };
    let mut strings = Vec::with_capacity(values.len());
    for value in values {
        match value {
            serde_json::Value::String(s) => strings.push(s),
            _ => return JsonForm::NotStringArray,
        }
    }
    JsonForm::Strings(strings)
}

/// `parseMaybeJSON`: a JSON array of strings, or else the whole text as one argument.
pub(crate) fn parse_maybe_json(rest: &str) -> Result<ParsedArgs, String> {
    if rest.is_empty() {
        return Ok(ParsedArgs::default());
    }
    match parse_json(rest) {
        JsonForm::Strings(args) => Ok(ParsedArgs {
            args,
            json: true,
            sub: None,
        }),
        JsonForm::NotStringArray => Err(NOT_STRING_ARRAY.to_string()),
        JsonForm::ShellForm => Ok(ParsedArgs::values(vec![rest.to_string()])),
    }
}

/// `parseMaybeJSONToList`: a JSON array of strings, or else whitespace-separated words.
pub(crate) fn parse_maybe_json_to_list(rest: &str) -> Result<ParsedArgs, String> {
    match parse_json(rest) {
        JsonForm::Strings(args) => Ok(ParsedArgs {
            args,
            json: true,
            sub: None,
        }),
        JsonForm::NotStringArray => Err(NOT_STRING_ARRAY.to_string()),
        JsonForm::ShellForm => Ok(parse_strings_whitespace_delimited(rest)),
    }
}

/// `parseStringsWhitespaceDelimited`.
pub(crate) fn parse_strings_whitespace_delimited(rest: &str) -> ParsedArgs {
    if rest.is_empty() {
        return ParsedArgs::default();
    }
    ParsedArgs::values(split_ws(rest, 0))
}

/// `parseString`: the whole text as one argument.
pub(crate) fn parse_string(rest: &str) -> ParsedArgs {
    if rest.is_empty() {
        return ParsedArgs::default();
    }
    ParsedArgs::values(vec![rest.to_string()])
}

/// `parseNameOrNameVal` (ARG): the words, quotes kept.
pub(crate) fn parse_name_or_name_val(rest: &str, escape: char) -> ParsedArgs {
    ParsedArgs::values(parse_words(rest, escape))
}

/// `parseNameVal` (ENV, LABEL): key/value/separator triples.
pub(crate) fn parse_name_val(
    rest: &str,
    keyword: &str,
    escape: char,
) -> Result<ParsedArgs, String> {
    let words = parse_words(rest, escape);
    if words.is_empty() {
        return Ok(ParsedArgs::default());
    }
    if !words[0].contains('=') {
        let parts = split_ws(rest, 2);
        if parts.len() < 2 {
            return Err(format!(
                "{keyword} must have two arguments: write `{keyword} name=value` (or `{keyword} name value`)"
            ));
        }
        return Ok(ParsedArgs::values(vec![
            parts[0].clone(),
            parts[1].clone(),
            String::new(),
        ]));
    }
    let mut args = Vec::with_capacity(words.len() * 3);
    for word in words {
        let Some((key, value)) = word.split_once('=') else {
            return Err(format!(
                "syntax error - can't find = in {word:?}: {keyword} arguments must be of the form name=value"
            ));
        };
        args.push(key.to_string());
        args.push(value.to_string());
        args.push("=".to_string());
    }
    Ok(ParsedArgs::values(args))
}

/// `parseHealthConfig`: the type word (`CMD`, `NONE`) then the command.
pub(crate) fn parse_health_config(rest: &str) -> Result<ParsedArgs, String> {
    let sep = rest.find(char::is_whitespace).unwrap_or(rest.len());
    if sep == 0 {
        return Ok(ParsedArgs::default());
    }
    let typ = &rest[..sep];
    let command = rest[sep..].trim_start();
    let mut parsed = parse_maybe_json(command)?;
    parsed.args.insert(0, typ.to_string());
    Ok(parsed)
}
