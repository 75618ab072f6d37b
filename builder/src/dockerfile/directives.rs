//! Parser directives: `# syntax=`, `# escape=`, `# check=` at the top of a Dockerfile.

use std::collections::BTreeSet;

use super::model::Directives;

/// Recognises directive lines until the first line that is not one.
#[derive(Debug, Default)]
pub(crate) struct DirectiveParser {
    done: bool,
    seen: BTreeSet<String>,
    /// The directives found so far.
    pub(crate) directives: Directives,
    /// Lines looked at so far.
    line: usize,
    /// 1-based line of the `# syntax=` directive.
    pub(crate) syntax_line: Option<usize>,
}

impl DirectiveParser {
    /// Looks at one line (newline and leading whitespace already trimmed). Returns an error
    /// message for a repeated directive or an invalid escape character.
    pub(crate) fn parse_line(&mut self, line: &str) -> Result<(), String> {
        self.line += 1;
        if self.done {
            return Ok(());
        }
        let Some((key, value)) = split_directive(line) else {
            self.done = true;
            return Ok(());
        };
        let key = key.to_ascii_lowercase();
        if !matches!(key.as_str(), "syntax" | "escape" | "check") {
            self.done = true;
            return Ok(());
        }
        if !self.seen.insert(key.clone()) {
            return Err(format!("only one {key} parser directive can be used"));
        }
        match key.as_str() {
            "escape" => match value {
                "\\" => self.directives.escape = '\\',
                "`" => self.directives.escape = '`',
                other => {
                    return Err(format!(
                        "invalid escape token '{other}' does not match ` or \\: use `# escape=\\` or `# escape=``"
                    ))
                }
            },
            "syntax" => {
                self.directives.syntax = Some(value.to_string());
                self.syntax_line = Some(self.line);
            }
            _ => self.directives.check = Some(value.to_string()),
        }
        Ok(())
    }
}

/// Matches `^#\s*([a-zA-Z][a-zA-Z0-9]*)\s*=\s*(.+?)\s*$`.
fn split_directive(line: &str) -> Option<(&str, &str)> {
    let rest = line.strip_prefix('#')?.trim_start();
    let key_end = rest
        .find(|c: char| !c.is_ascii_alphanumeric())
        .unwrap_or(rest.len());
    let key = &rest[..key_end];
    if !key.chars().next()?.is_ascii_alphabetic() {
        return None;
    }
    let value = rest[key_end..].trim_start().strip_prefix('=')?.trim();
    if value.is_empty() {
        return None;
    }
    Some((key, value))
}
