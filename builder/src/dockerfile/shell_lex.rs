//! Word expansion and splitting with BuildKit's shell-lexer semantics.
//!
//! Supports `$VAR`, `${VAR}`, `${VAR:-x}`, `${VAR-x}`, `${VAR:+x}`, `${VAR+x}`, `${VAR:?x}`,
//! `${VAR?x}`, `${VAR%pat}`, `${VAR%%pat}`, `${VAR#pat}`, `${VAR##pat}`, `${VAR/pat/repl}`,
//! `${VAR//pat/repl}`, single and double quotes, and the escape character (`\` or `` ` ``).
//! Positional and special parameters (`$1`, `$@`, `$?`...) expand to nothing unless set.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use super::error::ExpandError;

/// A source of variable values for expansion.
pub trait Env {
    /// The value of `name`, or `None` when it is unset.
    fn get_var(&self, name: &str) -> Option<&str>;
}

impl Env for HashMap<String, String> {
    fn get_var(&self, name: &str) -> Option<&str> {
        self.get(name).map(String::as_str)
    }
}

impl Env for BTreeMap<String, String> {
    fn get_var(&self, name: &str) -> Option<&str> {
        self.get(name).map(String::as_str)
    }
}

/// An ordered list of `(name, value)` pairs; the first entry for a name wins.
impl Env for [(String, String)] {
    fn get_var(&self, name: &str) -> Option<&str> {
        self.iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }
}

impl Env for Vec<(String, String)> {
    fn get_var(&self, name: &str) -> Option<&str> {
        self.as_slice().get_var(name)
    }
}

/// An environment in which no variable is set.
#[derive(Debug, Clone, Copy, Default)]
pub struct EmptyEnv;

impl Env for EmptyEnv {
    fn get_var(&self, _name: &str) -> Option<&str> {
        None
    }
}

/// The result of expanding a word.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Expansion {
    /// The expanded word, quotes removed, whitespace kept (what `ENV`, `WORKDIR`... use).
    pub word: String,
    /// The expanded text split into words on unquoted whitespace (what `EXPOSE`, `COPY` use).
    pub words: Vec<String>,
    /// Names looked up that were set.
    pub used: BTreeSet<String>,
    /// Names looked up that were not set.
    pub unset: BTreeSet<String>,
}

impl Expansion {
    /// Every variable name the word referred to, set or not (for cache keys).
    pub fn referenced(&self) -> impl Iterator<Item = &String> {
        self.used.iter().chain(self.unset.iter())
    }
}

/// BuildKit's shell lexer: expands variables and removes quotes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ShellLex {
    /// The escape character (`\` or `` ` ``).
    pub escape: char,
    /// Keep quote characters in the output (they still group words).
    pub raw_quotes: bool,
    /// Keep escape characters in the output.
    pub raw_escapes: bool,
    /// Leave references to unset variables as written instead of expanding them to "".
    pub skip_unset_env: bool,
    /// Treat quotes as ordinary characters.
    pub skip_process_quotes: bool,
}

impl ShellLex {
    /// A lexer with the given escape character and BuildKit's default options.
    pub fn new(escape: char) -> Self {
        ShellLex {
            escape,
            raw_quotes: false,
            raw_escapes: false,
            skip_unset_env: false,
            skip_process_quotes: false,
        }
    }

    /// Expands `word` with `env`, returning both the joined word and the split words, plus
    /// the variables it referenced.
    pub fn process<E: Env + ?Sized>(&self, word: &str, env: &E) -> Result<Expansion, ExpandError> {
        let mut lexer = Lexer {
            chars: word.chars().collect(),
            pos: 0,
            env,
            opts: *self,
            raw_escapes: self.raw_escapes,
            used: BTreeSet::new(),
            unset: BTreeSet::new(),
        };
        let (text, words) = lexer.process_stop_on_any(&[], self.raw_escapes)?;
        Ok(Expansion {
            word: text,
            words,
            used: lexer.used,
            unset: lexer.unset,
        })
    }

    /// Expands `word` into a single string (quotes removed, whitespace kept).
    pub fn process_word<E: Env + ?Sized>(
        &self,
        word: &str,
        env: &E,
    ) -> Result<String, ExpandError> {
        self.process(word, env).map(|e| e.word)
    }

    /// Expands `word` and splits it into words on unquoted whitespace.
    pub fn process_words<E: Env + ?Sized>(
        &self,
        word: &str,
        env: &E,
    ) -> Result<Vec<String>, ExpandError> {
        self.process(word, env).map(|e| e.words)
    }
}

impl Default for ShellLex {
    fn default() -> Self {
        ShellLex::new('\\')
    }
}

/// Accumulates split words the way BuildKit's `wordsStruct` does.
#[derive(Default)]
struct Words {
    word: String,
    words: Vec<String>,
    in_word: bool,
}

impl Words {
    fn add_char(&mut self, ch: char) {
        if ch.is_whitespace() {
            if self.in_word && !self.word.is_empty() {
                self.words.push(std::mem::take(&mut self.word));
                self.in_word = false;
            }
        } else {
            self.add_raw_char(ch);
        }
    }

    fn add_raw_char(&mut self, ch: char) {
        self.word.push(ch);
        self.in_word = true;
    }

    fn add_string(&mut self, s: &str) {
        for ch in s.chars() {
            self.add_char(ch);
        }
    }

    fn add_raw_string(&mut self, s: &str) {
        self.word.push_str(s);
        self.in_word = true;
    }

    fn finish(mut self) -> Vec<String> {
        if !self.word.is_empty() {
            self.words.push(std::mem::take(&mut self.word));
        }
        self.words
    }
}

struct Lexer<'e, E: Env + ?Sized> {
    chars: Vec<char>,
    pos: usize,
    env: &'e E,
    opts: ShellLex,
    raw_escapes: bool,
    used: BTreeSet<String>,
    unset: BTreeSet<String>,
}

fn syntax(msg: impl Into<String>) -> ExpandError {
    ExpandError::Syntax(msg.into())
}

impl<E: Env + ?Sized> Lexer<'_, E> {
    fn peek(&self) -> Option<char> {
        self.chars.get(self.pos).copied()
    }

    fn next(&mut self) -> Option<char> {
        let ch = self.peek();
        if ch.is_some() {
            self.pos += 1;
        }
        ch
    }

    fn get_env(&mut self, name: &str) -> Option<String> {
        match self.env.get_var(name) {
            Some(v) => {
                self.used.insert(name.to_string());
                Some(v.to_string())
            }
            None => {
                self.unset.insert(name.to_string());
                None
            }
        }
    }

    fn process_stop_on_any(
        &mut self,
        stops: &[char],
        raw_escapes: bool,
    ) -> Result<(String, Vec<String>), ExpandError> {
        let saved = self.raw_escapes;
        self.raw_escapes = raw_escapes;
        let result = self.stop_on_any_inner(stops);
        self.raw_escapes = saved;
        result
    }

    fn stop_on_any_inner(&mut self, stops: &[char]) -> Result<(String, Vec<String>), ExpandError> {
        let mut result = String::new();
        let mut words = Words::default();
        while let Some(ch) = self.peek() {
            if stops.contains(&ch) {
                self.next();
                return Ok((result, words.finish()));
            }
            let quotes = !self.opts.skip_process_quotes;
            if ch == '$' {
                let tmp = self.process_dollar()?;
                result.push_str(&tmp);
                words.add_string(&tmp);
            } else if quotes && ch == '\'' {
                let tmp = self.process_single_quote()?;
                result.push_str(&tmp);
                words.add_raw_string(&tmp);
            } else if quotes && ch == '"' {
                let tmp = self.process_double_quote()?;
                result.push_str(&tmp);
                words.add_raw_string(&tmp);
            } else {
                self.next();
                let mut ch = ch;
                if ch == self.opts.escape {
                    if self.raw_escapes {
                        words.add_raw_char(ch);
                        result.push(ch);
                    }
                    match self.next() {
                        None => break,
                        Some(escaped) => ch = escaped,
                    }
                    words.add_raw_char(ch);
                } else {
                    words.add_char(ch);
                }
                result.push(ch);
            }
        }
        if let Some(stop) = stops.last() {
            return Err(syntax(format!(
                "unexpected end of statement while looking for matching {stop}"
            )));
        }
        Ok((result, words.finish()))
    }

    fn process_single_quote(&mut self) -> Result<String, ExpandError> {
        let mut result = String::new();
        let open = self.next();
        if self.opts.raw_quotes {
            result.extend(open);
        }
        loop {
            match self.next() {
                None => {
                    return Err(syntax(
                        "unexpected end of statement while looking for matching single-quote",
                    ))
                }
                Some('\'') => {
                    if self.opts.raw_quotes {
                        result.push('\'');
                    }
                    return Ok(result);
                }
                Some(ch) => result.push(ch),
            }
        }
    }

    fn process_double_quote(&mut self) -> Result<String, ExpandError> {
        let mut result = String::new();
        let open = self.next();
        if self.opts.raw_quotes {
            result.extend(open);
        }
        loop {
            match self.peek() {
                None => {
                    return Err(syntax(
                        "unexpected end of statement while looking for matching double-quote",
                    ))
                }
                Some('"') => {
                    self.next();
                    if self.opts.raw_quotes {
                        result.push('"');
                    }
                    return Ok(result);
                }
                Some('$') => {
                    let value = self.process_dollar()?;
                    result.push_str(&value);
                }
                Some(_) => {
                    let mut ch = self.next().unwrap_or_default();
                    if ch == self.opts.escape {
                        if self.raw_escapes {
                            result.push(ch);
                        }
                        match self.peek() {
                            None => continue,
                            Some(p) if p == '"' || p == '$' || p == self.opts.escape => {
                                ch = p;
                                self.next();
                            }
                            Some(_) => {}
                        }
                    }
                    result.push(ch);
                }
            }
        }
    }

    fn process_dollar(&mut self) -> Result<String, ExpandError> {
        self.next();
        if self.peek() != Some('{') {
            let name = self.process_name();
            if name.is_empty() {
                return Ok("$".to_string());
            }
            return Ok(match self.get_env(&name) {
                Some(v) => v,
                None if self.opts.skip_unset_env => format!("${name}"),
                None => String::new(),
            });
        }
        self.next();
        match self.peek() {
            None => return Err(syntax("syntax error: missing '}'")),
            Some('{') | Some('}') | Some(':') => {
                return Err(syntax("syntax error: bad substitution"))
            }
            _ => {}
        }
        let name = self.process_name();
        let ch = self.next();
        let Some(mut ch) = ch else {
            return Err(syntax("syntax error: missing '}'"));
        };
        let mut modifier = ch.to_string();
        match ch {
            '}' => Ok(match self.get_env(&name) {
                Some(v) => v,
                None if self.opts.skip_unset_env => format!("${{{name}}}"),
                None => String::new(),
            }),
            ':' | '+' | '-' | '?' | '#' | '%' => {
                let null_is_unset = ch == ':';
                if null_is_unset {
                    match self.next() {
                        Some(c) => {
                            ch = c;
                            modifier.push(c);
                        }
                        None => return Err(syntax("syntax error: missing '}'")),
                    }
                }
                let raw = ch == '#' || ch == '%';
                if null_is_unset && raw {
                    return Err(syntax(format!(
                        "unsupported modifier ({modifier}) in substitution"
                    )));
                }
                let word = self.word_until_brace(&['}'], raw)?;
                let value = self.get_env(&name);
                if self.opts.skip_unset_env && value.is_none() {
                    return Ok(format!("${{{name}{modifier}{word}}}"));
                }
                let is_null =
                    |v: &Option<String>| v.is_none() || (null_is_unset && v.as_deref() == Some(""));
                match ch {
                    '-' => Ok(if is_null(&value) {
                        word
                    } else {
                        value.unwrap_or_default()
                    }),
                    '+' => Ok(if is_null(&value) { String::new() } else { word }),
                    '?' => match value {
                        None => Err(ExpandError::Required {
                            name,
                            message: if word.is_empty() {
                                "is not allowed to be unset".into()
                            } else {
                                word
                            },
                        }),
                        Some(v) if null_is_unset && v.is_empty() => Err(ExpandError::Required {
                            name,
                            message: if word.is_empty() {
                                "is not allowed to be empty".into()
                            } else {
                                word
                            },
                        }),
                        Some(v) => Ok(v),
                    },
                    '%' | '#' => {
                        let value = value.unwrap_or_default();
                        let (greedy, pattern) = match word.strip_prefix(ch) {
                            Some(rest) => (true, rest.to_string()),
                            None => (false, word),
                        };
                        let pattern =
                            super::shell_pattern::Pattern::new(&pattern, self.opts.escape);
                        Ok(if ch == '%' {
                            pattern.trim_suffix(&value, greedy)
                        } else {
                            pattern.trim_prefix(&value, greedy)
                        })
                    }
                    _ => Err(syntax(format!(
                        "unsupported modifier ({modifier}) in substitution"
                    ))),
                }
            }
            '/' => {
                let replace_all = self.peek() == Some('/');
                if replace_all {
                    self.next();
                }
                let pattern = self.word_until_brace(&['/', '}'], true)?;
                let stopped_on_slash = self.pos > 0 && self.chars.get(self.pos - 1) == Some(&'/');
                let replacement = if stopped_on_slash {
                    self.word_until_brace(&['}'], true)?
                } else {
                    String::new()
                };
                let value = self.get_env(&name);
                if self.opts.skip_unset_env && value.is_none() {
                    return Ok(format!("${{{name}/{pattern}/{replacement}}}"));
                }
                let value = value.unwrap_or_default();
                let pattern = super::shell_pattern::Pattern::new(&pattern, self.opts.escape);
                Ok(pattern.replace(&value, &replacement, replace_all))
            }
            _ => Err(syntax(format!(
                "unsupported modifier ({modifier}) in substitution"
            ))),
        }
    }

    /// Reads the word of a `${name<op>word}` up to one of `stops`, mapping a premature end of
    /// input to "missing '}'".
    fn word_until_brace(
        &mut self,
        stops: &[char],
        raw_escapes: bool,
    ) -> Result<String, ExpandError> {
        match self.process_stop_on_any(stops, raw_escapes) {
            Ok((word, _)) => Ok(word),
            Err(err) => {
                if self.peek().is_none() {
                    Err(syntax("syntax error: missing '}'"))
                } else {
                    Err(err)
                }
            }
        }
    }

    fn process_name(&mut self) -> String {
        let mut name = String::new();
        while let Some(ch) = self.peek() {
            if name.is_empty() && ch.is_ascii_digit() {
                while let Some(d) = self.peek().filter(|c| c.is_ascii_digit()) {
                    self.next();
                    name.push(d);
                }
                return name;
            }
            if name.is_empty() && is_special_param(ch) {
                self.next();
                return ch.to_string();
            }
            if !ch.is_alphanumeric() && ch != '_' {
                break;
            }
            self.next();
            name.push(ch);
        }
        name
    }
}

fn is_special_param(ch: char) -> bool {
    matches!(ch, '@' | '*' | '#' | '?' | '-' | '$' | '!' | '0')
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env() -> HashMap<String, String> {
        [
            ("FILE", "archive.tar.gz"),
            ("PATHV", "/usr/local/bin:/usr/bin"),
            ("EMPTY", ""),
            ("A", "a b"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
    }

    fn word(s: &str) -> Result<String, ExpandError> {
        ShellLex::new('\\').process_word(s, &env())
    }

    #[test]
    fn unset_versus_empty_modifiers() {
        assert_eq!(word("${EMPTY-x}").unwrap(), "");
        assert_eq!(word("${EMPTY:-x}").unwrap(), "x");
        assert_eq!(word("${UNSET-x}").unwrap(), "x");
        assert_eq!(word("${EMPTY+x}").unwrap(), "x");
        assert_eq!(word("${EMPTY:+x}").unwrap(), "");
        assert_eq!(word("${UNSET+x}").unwrap(), "");
        assert_eq!(word("${EMPTY?}").unwrap(), "");
        assert!(matches!(
            word("${EMPTY:?}"),
            Err(ExpandError::Required { .. })
        ));
        assert_eq!(
            word("${UNSET?give it}"),
            Err(ExpandError::Required {
                name: "UNSET".into(),
                message: "give it".into()
            })
        );
    }

    #[test]
    fn prefix_and_suffix_removal() {
        assert_eq!(word("${FILE%.*}").unwrap(), "archive.tar");
        assert_eq!(word("${FILE%%.*}").unwrap(), "archive");
        assert_eq!(word("${FILE#*.}").unwrap(), "tar.gz");
        assert_eq!(word("${FILE##*.}").unwrap(), "gz");
        assert_eq!(word("${FILE%.zip}").unwrap(), "archive.tar.gz");
        assert_eq!(word("${FILE#arch}").unwrap(), "ive.tar.gz");
        assert_eq!(word("${FILE%\\.gz}").unwrap(), "archive.tar");
        assert!(
            word("${FILE:%x}").is_err(),
            "':' cannot combine with % or #"
        );
    }

    #[test]
    fn substitution() {
        assert_eq!(word("${PATHV/:/;}").unwrap(), "/usr/local/bin;/usr/bin");
        assert_eq!(word("${PATHV//\\//|}").unwrap(), "|usr|local|bin:|usr|bin");
        assert_eq!(word("${FILE/t*r/X}").unwrap(), "archive.X.gz");
        assert_eq!(word("${FILE/nomatch/X}").unwrap(), "archive.tar.gz");
        assert_eq!(word("${FILE/.gz}").unwrap(), "archive.tar");
        assert_eq!(word("${UNSET/a/b}").unwrap(), "");
    }

    #[test]
    fn reports_referenced_variables() {
        let e = ShellLex::new('\\')
            .process("$FILE-${UNSET:-$EMPTY}-'$NOT'", &env())
            .unwrap();
        assert_eq!(e.word, "archive.tar.gz--$NOT");
        assert_eq!(
            e.used.iter().map(String::as_str).collect::<Vec<_>>(),
            vec!["EMPTY", "FILE"]
        );
        assert_eq!(
            e.unset.iter().map(String::as_str).collect::<Vec<_>>(),
            vec!["UNSET"]
        );
        assert_eq!(e.referenced().count(), 3);
    }

    #[test]
    fn words_split_after_expansion_but_not_inside_quotes() {
        let lex = ShellLex::new('\\');
        assert_eq!(
            lex.process_words("x $A \"$A\"", &env()).unwrap(),
            vec!["x", "a", "b", "a b"]
        );
    }

    #[test]
    fn backtick_escape() {
        let lex = ShellLex::new('`');
        assert_eq!(
            lex.process_word("C:\\dir`$FILE", &env()).unwrap(),
            "C:\\dir$FILE"
        );
        assert_eq!(lex.process_word("\"a`\"b\"", &env()).unwrap(), "a\"b");
    }

    #[test]
    fn skip_unset_keeps_references() {
        let mut lex = ShellLex::new('\\');
        lex.skip_unset_env = true;
        assert_eq!(
            lex.process_word("$FILE $NOPE ${NOPE:-x}", &env()).unwrap(),
            "archive.tar.gz $NOPE ${NOPE:-x}"
        );
    }
}
