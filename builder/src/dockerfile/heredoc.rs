//! Here-document detection: which words of an instruction line start a heredoc.

use super::model::Heredoc;
use super::shell_lex::{EmptyEnv, ShellLex};

/// A heredoc reference found on an instruction line (`<<EOF`, `<<-"EOF"`, `3<<EOF`), before its
/// body has been read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct HeredocWord {
    /// Delimiter with quotes removed.
    pub name: String,
    /// Unquoted delimiter: the body is subject to expansion.
    pub expand: bool,
    /// `<<-`: strip leading tabs.
    pub chomp: bool,
    /// Descriptor digits before `<<`.
    pub file_descriptor: u32,
}

impl HeredocWord {
    /// Attaches a body, kept exactly as read (use [`chomp_heredoc_content`] for `<<-`).
    pub(crate) fn with_content(self, content: String) -> Heredoc {
        Heredoc {
            name: self.name,
            content,
            expand: self.expand,
            chomp: self.chomp,
            file_descriptor: self.file_descriptor,
        }
    }
}

/// Removes leading tabs from every line (the `<<-` form).
pub(crate) fn chomp_heredoc_content(src: &str) -> String {
    src.split_inclusive('\n')
        .map(|line| line.trim_start_matches('\t'))
        .collect()
}

/// Parses one word as a heredoc reference: `^(\d*)<<(-?)([^<]*)$` with a non-empty delimiter
/// that lexes as a single word. Returns `None` for anything else.
pub(crate) fn parse_heredoc_word(word: &str) -> Option<HeredocWord> {
    let digits_end = word
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(word.len());
    let (digits, rest) = word.split_at(digits_end);
    let rest = rest.strip_prefix("<<")?;
    let (chomp, rest) = match rest.strip_prefix('-') {
        Some(r) => (true, r),
        None => (false, rest),
    };
    if rest.is_empty() || rest.contains('<') {
        return None;
    }
    let file_descriptor = if digits.is_empty() {
        0
    } else {
        digits.parse().ok()?
    };
    let mut lex = ShellLex::new('\\');
    lex.skip_unset_env = true;
    let words = lex.process_words(rest, &EmptyEnv).ok()?;
    if words.len() != 1 {
        return None;
    }
    lex.raw_quotes = true;
    let raw_words = lex.process_words(rest, &EmptyEnv).ok()?;
    if raw_words.len() != 1 {
        return None;
    }
    let count_quotes = |s: &str| s.chars().filter(|c| *c == '\'' || *c == '"').count();
    let expand = count_quotes(&words[0]) == count_quotes(&raw_words[0]);
    Some(HeredocWord {
        name: words[0].clone(),
        expand,
        chomp,
        file_descriptor,
    })
}

/// All heredoc references on an instruction line, in order.
pub(crate) fn heredocs_from_line(line: &str) -> Vec<HeredocWord> {
    let mut lex = ShellLex::new('\\');
    lex.raw_quotes = true;
    lex.raw_escapes = true;
    let words = lex
        .process(line, &EmptyEnv)
        .map(|e| e.words)
        .unwrap_or_default();
    words.iter().filter_map(|w| parse_heredoc_word(w)).collect()
}
