//! `.dockerignore` with Docker's semantics, matched with `globset`.
//!
//! Follows moby's `ignorefile` + `patternmatcher`: lines starting with `#` are comments, patterns
//! are trimmed, cleaned (`path.Clean`) and anchored at the context root (a leading `/` is
//! dropped); `*` and `?` never cross `/`; `**` matches any number of directories (also inside
//! a name: `a**/x`); `[...]` classes; `\` escapes; `!pattern` re-includes, and the last matching
//! pattern wins. A path is also excluded when one of its parent directories matches.
//!
//! Each Docker pattern is translated into one or more globset globs (literal separators,
//! backslash escapes) that together match exactly what Docker's regular expression matches.
//! globset matches `?` and `[...]` per byte, while Docker matches them per character, so the
//! few patterns using those are matched by a small character-level matcher instead.
//!
//! Docker still *reads* the Dockerfile and `.dockerignore` when they are excluded, but does not
//! make them visible to `COPY`/`ADD`: load them directly from the context directory, and use
//! [`IgnoreMatcher::is_excluded`] only for what instructions can see.

use std::path::{Path, PathBuf};

use globset::{GlobBuilder, GlobSet, GlobSetBuilder};

/// Errors reading or compiling a `.dockerignore`.
#[derive(Debug, thiserror::Error)]
pub enum DockerignoreError {
    /// The file could not be read.
    #[error("cannot read {path}: {source}")]
    Io {
        /// The `.dockerignore` path.
        path: PathBuf,
        /// The I/O failure.
        source: std::io::Error,
    },
    /// A pattern is malformed.
    #[error(".dockerignore:{line}: invalid pattern {pattern:?}: {reason}")]
    BadPattern {
        /// 1-based line in the file (0 when patterns were given directly).
        line: usize,
        /// The pattern as cleaned.
        pattern: String,
        /// What is wrong and how to fix it.
        reason: String,
    },
}

/// One cleaned pattern.
#[derive(Debug, Clone)]
struct Pattern {
    /// Cleaned pattern text without the leading `!`.
    text: String,
    /// `!pattern`: re-includes what earlier patterns excluded.
    exclusion: bool,
    /// Literal text before the first wildcard (used to decide whether a directory may hold
    /// re-included paths).
    literal_prefix: String,
    /// Tokens, kept for patterns with `?` or `[...]` (matched per character, not by globset).
    char_tokens: Option<Vec<Token>>,
}

/// A compiled `.dockerignore`.
#[derive(Debug, Clone)]
pub struct IgnoreMatcher {
    patterns: Vec<Pattern>,
    /// All globs of all patterns.
    set: GlobSet,
    /// For each glob in `set`, the index of the pattern it belongs to.
    owner: Vec<usize>,
}

/// The name used by the executor.
pub type DockerIgnore = IgnoreMatcher;

impl IgnoreMatcher {
    /// Reads and compiles a `.dockerignore` file; a missing file gives an empty matcher.
    pub fn from_file(path: &Path) -> Result<Self, DockerignoreError> {
        match std::fs::read(path) {
            Ok(bytes) => Self::parse(&String::from_utf8_lossy(&bytes)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                Self::new(Vec::<(usize, String)>::new())
            }
            Err(source) => Err(DockerignoreError::Io {
                path: path.to_path_buf(),
                source,
            }),
        }
    }

    /// Compiles the text of a `.dockerignore` file.
    pub fn parse(text: &str) -> Result<Self, DockerignoreError> {
        Self::new(read_patterns(text))
    }

    /// Compiles patterns given directly (as `patternmatcher.New` does), numbered from line 0.
    pub fn from_patterns<S: AsRef<str>>(patterns: &[S]) -> Result<Self, DockerignoreError> {
        Self::new(
            patterns
                .iter()
                .map(|p| (0, p.as_ref().to_string()))
                .collect(),
        )
    }

    fn new(lines: Vec<(usize, String)>) -> Result<Self, DockerignoreError> {
        let mut patterns = Vec::new();
        let mut builder = GlobSetBuilder::new();
        let mut owner = Vec::new();
        for (line, raw) in lines {
            let trimmed = raw.trim();
            if trimmed.is_empty() {
                continue;
            }
            let cleaned = clean(trimmed);
            let bad = |reason: &str| DockerignoreError::BadPattern {
                line,
                pattern: cleaned.clone(),
                reason: reason.to_string(),
            };
            let (exclusion, text) = match cleaned.strip_prefix('!') {
                Some("") => return Err(bad("a lone \"!\" re-includes nothing: remove the line")),
                Some(rest) => (true, rest.to_string()),
                None => (false, cleaned.clone()),
            };
            let tokens = tokenize(&text).map_err(|r| bad(&r))?;
            let Some(globs) = to_globs(&text, &tokens) else {
                patterns.push(Pattern {
                    literal_prefix: literal_prefix(&text),
                    text,
                    exclusion,
                    char_tokens: Some(tokens),
                });
                continue;
            };
            for glob in globs {
                let compiled = GlobBuilder::new(&glob)
                    .literal_separator(true)
                    .backslash_escape(true)
                    .build()
                    .map_err(|e| bad(&format!("cannot compile glob {glob:?}: {e}")))?;
                builder.add(compiled);
                owner.push(patterns.len());
            }
            patterns.push(Pattern {
                literal_prefix: literal_prefix(&text),
                text,
                exclusion,
                char_tokens: None,
            });
        }
        let set = builder.build().map_err(|e| DockerignoreError::BadPattern {
            line: 0,
            pattern: String::new(),
            reason: e.to_string(),
        })?;
        Ok(IgnoreMatcher {
            patterns,
            set,
            owner,
        })
    }

    /// The cleaned patterns in order, `!` kept on re-inclusions.
    pub fn patterns(&self) -> Vec<String> {
        self.patterns
            .iter()
            .map(|p| {
                if p.exclusion {
                    format!("!{}", p.text)
                } else {
                    p.text.clone()
                }
            })
            .collect()
    }

    /// True when there are no patterns at all.
    pub fn is_empty(&self) -> bool {
        self.patterns.is_empty()
    }

    /// True when some pattern re-includes paths (`!pattern`).
    pub fn has_exceptions(&self) -> bool {
        self.patterns.iter().any(|p| p.exclusion)
    }

    /// Which patterns match `path` itself (no parent matching).
    fn direct_matches(&self, path: &str) -> Vec<bool> {
        let mut hits = vec![false; self.patterns.len()];
        for glob in self.set.matches(path) {
            hits[self.owner[glob]] = true;
        }
        let chars: Vec<char> = path.chars().collect();
        for (hit, pattern) in hits.iter_mut().zip(&self.patterns) {
            if let Some(tokens) = &pattern.char_tokens {
                *hit = match_chars(tokens, &chars);
            }
        }
        hits
    }

    /// Docker's `MatchesExact`: the last pattern matching `path` itself decides.
    pub fn matches_exact(&self, path: &str) -> bool {
        fold(&self.patterns, &self.direct_matches(path))
    }

    /// Whether the context-relative, slash-separated `rel` is excluded: Docker's
    /// `MatchesOrParentMatches` (a pattern matches a path or one of its parent directories;
    /// the last matching pattern wins). `""` and `.` (the context root) are never excluded.
    pub fn is_excluded(&self, rel: &str) -> bool {
        if rel.is_empty() || rel == "." || self.patterns.is_empty() {
            return false;
        }
        let mut hits = self.direct_matches(rel);
        let parent = go_dir(rel);
        if parent != "." {
            let dirs: Vec<&str> = parent.split('/').collect();
            for i in 0..dirs.len() {
                let prefix = dirs[..=i].join("/");
                for (hit, parent_hit) in hits.iter_mut().zip(self.direct_matches(&prefix)) {
                    *hit |= parent_hit;
                }
            }
        }
        fold(&self.patterns, &hits)
    }

    /// True when the directory `rel_dir` is excluded and no `!` pattern can re-include
    /// anything below it, so a walker may skip it without looking inside.
    pub fn can_skip_dir(&self, rel_dir: &str) -> bool {
        if !self.is_excluded(rel_dir) {
            return false;
        }
        let dir_slash = format!("{}/", rel_dir.trim_end_matches('/'));
        !self.patterns.iter().filter(|p| p.exclusion).any(|p| {
            let prefix = &p.literal_prefix;
            dir_slash.starts_with(prefix.as_str()) || prefix.starts_with(&dir_slash)
        })
    }
}

/// Applies Docker's "last matching pattern wins" rule.
fn fold(patterns: &[Pattern], hits: &[bool]) -> bool {
    let mut matched = false;
    for (pattern, hit) in patterns.iter().zip(hits) {
        if pattern.exclusion != matched {
            continue;
        }
        if *hit {
            matched = !pattern.exclusion;
        }
    }
    matched
}

/// moby's `ignorefile.ReadAll`: the patterns of a `.dockerignore` text, comments and blank
/// lines dropped, each cleaned and made relative (`/a` becomes `a`), `!` kept.
pub fn read_ignore_patterns(text: &str) -> Vec<String> {
    read_patterns(text).into_iter().map(|(_, p)| p).collect()
}

/// [`read_ignore_patterns`] with 1-based line numbers.
fn read_patterns(text: &str) -> Vec<(usize, String)> {
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    let mut out = Vec::new();
    for (i, line) in text.lines().enumerate() {
        if line.starts_with('#') {
            continue;
        }
        let mut pattern = line.trim();
        if pattern.is_empty() {
            continue;
        }
        let invert = pattern.starts_with('!');
        if invert {
            pattern = pattern[1..].trim();
        }
        let mut cleaned = String::new();
        if !pattern.is_empty() {
            cleaned = clean(pattern);
            if cleaned.len() > 1 && cleaned.starts_with('/') {
                cleaned.remove(0);
            }
        }
        if invert {
            cleaned.insert(0, '!');
        }
        out.push((i + 1, cleaned));
    }
    out
}

/// Go's `path.Clean`.
pub(crate) fn clean(path: &str) -> String {
    if path.is_empty() {
        return ".".to_string();
    }
    let rooted = path.starts_with('/');
    let mut parts: Vec<&str> = Vec::new();
    for part in path.split('/') {
        match part {
            "" | "." => {}
            ".." => {
                if parts.last().is_some_and(|p| *p != "..") {
                    parts.pop();
                } else if !rooted {
                    parts.push("..");
                }
            }
            other => parts.push(other),
        }
    }
    let joined = parts.join("/");
    match (rooted, joined.is_empty()) {
        (true, _) => format!("/{joined}"),
        (false, true) => ".".to_string(),
        (false, false) => joined,
    }
}

/// Go's `filepath.Dir` for slash-separated paths.
fn go_dir(path: &str) -> String {
    match path.rfind('/') {
        Some(i) => clean(&path[..=i]),
        None => ".".to_string(),
    }
}

/// A piece of a Docker pattern.
#[derive(Debug, Clone, PartialEq)]
enum Token {
    Literal(char),
    /// `*`: any run of non-`/` characters.
    Star,
    /// `?`: one non-`/` character.
    Quest,
    /// `[...]`.
    Class {
        negated: bool,
        ranges: Vec<(char, char)>,
    },
    /// `**` (and `**/`) inside the pattern: `(.*/)?`.
    AnyDirs,
    /// `**` at the end: `.*`.
    AnyRest,
}

/// Splits a cleaned pattern into tokens the way `patternmatcher.compile` reads it, after
/// validating it as Go's `filepath.Match` does.
fn tokenize(pattern: &str) -> Result<Vec<Token>, String> {
    let chars: Vec<char> = pattern.chars().collect();
    let mut tokens = Vec::new();
    let mut i = 0;
    while i < chars.len() {
        let ch = chars[i];
        i += 1;
        match ch {
            '*' if chars.get(i) == Some(&'*') => {
                i += 1;
                if chars.get(i) == Some(&'/') {
                    i += 1;
                }
                tokens.push(if i >= chars.len() {
                    Token::AnyRest
                } else {
                    Token::AnyDirs
                });
            }
            '*' => tokens.push(Token::Star),
            '?' => tokens.push(Token::Quest),
            '\\' => match chars.get(i) {
                Some(&next) => {
                    tokens.push(Token::Literal(next));
                    i += 1;
                }
                None => return Err("a trailing \\ escapes nothing: remove it or write \\\\".into()),
            },
            '[' => {
                let (class, next) = parse_class(&chars, i)?;
                tokens.push(class);
                i = next;
            }
            ']' => return Err("unmatched ]: escape it as \\]".into()),
            other => tokens.push(Token::Literal(other)),
        }
    }
    Ok(tokens)
}

/// Docker's regular-expression semantics on characters: `*` and `?` stop at `/`, `**` in the
/// middle is `(.*/)?`, at the end `.*`; classes match any character (even `/`).
fn match_chars(tokens: &[Token], text: &[char]) -> bool {
    let Some(token) = tokens.first() else {
        return text.is_empty();
    };
    let rest = &tokens[1..];
    match token {
        Token::Star => {
            let limit = text.iter().position(|c| *c == '/').unwrap_or(text.len());
            (0..=limit).any(|n| match_chars(rest, &text[n..]))
        }
        Token::AnyRest => true,
        Token::AnyDirs => {
            match_chars(rest, text)
                || text
                    .iter()
                    .enumerate()
                    .filter(|(_, c)| **c == '/')
                    .any(|(i, _)| match_chars(rest, &text[i + 1..]))
        }
        Token::Quest => text.first().is_some_and(|c| *c != '/') && match_chars(rest, &text[1..]),
        Token::Literal(l) => text.first() == Some(l) && match_chars(rest, &text[1..]),
        Token::Class { negated, ranges } => {
            text.first()
                .is_some_and(|c| ranges.iter().any(|(lo, hi)| lo <= c && c <= hi) != *negated)
                && match_chars(rest, &text[1..])
        }
    }
}

/// Parses a class body starting after `[` with `filepath.Match`'s rules.
fn parse_class(chars: &[char], mut i: usize) -> Result<(Token, usize), String> {
    let bad = || "malformed character class: write it as [abc], [a-z] or [^abc]".to_string();
    let mut negated = false;
    if chars.get(i) == Some(&'^') {
        negated = true;
        i += 1;
    }
    let mut ranges = Vec::new();
    loop {
        if chars.get(i) == Some(&']') && !ranges.is_empty() {
            return Ok((Token::Class { negated, ranges }, i + 1));
        }
        let (lo, next) = class_char(chars, i).ok_or_else(bad)?;
        i = next;
        let mut hi = lo;
        if chars.get(i) == Some(&'-') {
            let (h, next) = class_char(chars, i + 1).ok_or_else(bad)?;
            hi = h;
            i = next;
        }
        if lo > hi {
            return Err(format!(
                "character class range {lo}-{hi} is reversed: write {hi}-{lo}"
            ));
        }
        ranges.push((lo, hi));
    }
}

/// `getEsc`: one possibly escaped class character; not `-` or `]`, and not at the end.
fn class_char(chars: &[char], mut i: usize) -> Option<(char, usize)> {
    let mut ch = *chars.get(i)?;
    if ch == '-' || ch == ']' {
        return None;
    }
    if ch == '\\' {
        i += 1;
        ch = *chars.get(i)?;
    }
    i += 1;
    // A class must be closed, so something has to follow.
    chars.get(i)?;
    Some((ch, i))
}

/// Literal text before the first wildcard.
fn literal_prefix(pattern: &str) -> String {
    let mut out = String::new();
    let mut chars = pattern.chars();
    while let Some(ch) = chars.next() {
        match ch {
            '*' | '?' | '[' => break,
            '\\' => match chars.next() {
                Some(next) => out.push(next),
                None => break,
            },
            other => out.push(other),
        }
    }
    out
}

fn push_literal(glob: &mut String, ch: char) {
    if matches!(ch, '\\' | '*' | '?' | '[' | ']' | '{' | '}') {
        glob.push('\\');
    }
    glob.push(ch);
}

/// Translates a Docker pattern into globset globs whose union matches what Docker matches;
/// `None` for patterns with `?` or `[...]`, which globset would match per byte.
fn to_globs(pattern: &str, tokens: &[Token]) -> Option<Vec<String>> {
    if tokens
        .iter()
        .any(|t| matches!(t, Token::Quest | Token::Class { .. }))
    {
        return None;
    }
    let literal_rest = |from: usize| {
        tokens[from..]
            .iter()
            .all(|t| matches!(t, Token::Literal(_)))
    };
    // Docker's suffix match: `**` first, then only literal text: HasSuffix(path, rest).
    if matches!(tokens.first(), Some(Token::AnyDirs) | Some(Token::AnyRest))
        && literal_rest(1)
        && !pattern.contains('\\')
    {
        let rest = pattern.get(2..).unwrap_or("");
        if rest.is_empty() {
            return Some(vec!["**".to_string()]);
        }
        let mut glob = String::from("**/");
        match rest.strip_prefix('/') {
            Some(after_slash) => after_slash.chars().for_each(|c| push_literal(&mut glob, c)),
            None => {
                glob.push('*');
                rest.chars().for_each(|c| push_literal(&mut glob, c));
            }
        }
        return Some(vec![glob]);
    }
    let mut globs = vec![String::new()];
    for token in tokens {
        match token {
            Token::Literal(c) => globs.iter_mut().for_each(|g| push_literal(g, *c)),
            Token::Star => globs.iter_mut().for_each(|g| g.push('*')),
            Token::Quest | Token::Class { .. } => return None,
            Token::AnyDirs => {
                globs = globs
                    .into_iter()
                    .flat_map(|g| {
                        if g.is_empty() || g.ends_with('/') {
                            vec![format!("{g}**/")]
                        } else {
                            vec![g.clone(), format!("{g}*/**/")]
                        }
                    })
                    .collect();
            }
            Token::AnyRest => {
                globs = globs
                    .into_iter()
                    .flat_map(|g| {
                        if g.is_empty() {
                            vec!["**".to_string()]
                        } else if g.ends_with('/') {
                            vec![format!("{g}**")]
                        } else {
                            vec![format!("{g}*"), format!("{g}*/**")]
                        }
                    })
                    .collect();
            }
        }
    }
    Some(globs)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn go_path_clean() {
        assert_eq!(clean("a/b/../c/"), "a/c");
        assert_eq!(clean("/../a"), "/a");
        assert_eq!(clean("../a"), "../a");
        assert_eq!(clean("./"), ".");
        assert_eq!(clean("**/"), "**");
        assert_eq!(go_dir("dir/file/"), "dir/file");
        assert_eq!(go_dir("file"), ".");
    }

    #[test]
    fn translation() {
        let globs = |p: &str| to_globs(p, &tokenize(p).expect("valid")).unwrap_or_default();
        assert_eq!(globs("**/dir"), vec!["**/dir"]);
        assert_eq!(globs("**file"), vec!["**/*file"]);
        assert_eq!(globs("dir/**"), vec!["dir/**"]);
        assert_eq!(globs("a**/*.txt"), vec!["a*.txt", "a*/**/*.txt"]);
        assert!(to_globs("a?e", &tokenize("a?e").expect("valid")).is_none());
    }
}
