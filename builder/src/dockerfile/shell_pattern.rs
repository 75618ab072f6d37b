//! Shell glob patterns for `${VAR%pat}`, `${VAR#pat}` and `${VAR/pat/repl}`.

/// One element of a compiled pattern.
#[derive(Debug, Clone)]
enum Token {
    /// A literal character.
    Literal(char),
    /// `?`: any one character.
    Any,
    /// `*`: any run of characters.
    Star,
    /// `[...]`: a character class (negated with `!` or `^`).
    Class {
        negated: bool,
        ranges: Vec<(char, char)>,
    },
}

/// A compiled shell pattern.
#[derive(Debug, Clone)]
pub(crate) struct Pattern {
    tokens: Vec<Token>,
}

impl Pattern {
    /// Compiles `pattern`; `escape` makes the next character literal.
    pub(crate) fn new(pattern: &str, escape: char) -> Self {
        let chars: Vec<char> = pattern.chars().collect();
        let mut tokens = Vec::new();
        let mut i = 0;
        while i < chars.len() {
            let ch = chars[i];
            if ch == escape && i + 1 < chars.len() {
                tokens.push(Token::Literal(chars[i + 1]));
                i += 2;
                continue;
            }
            match ch {
                '*' => tokens.push(Token::Star),
                '?' => tokens.push(Token::Any),
                '[' => {
                    if let Some((class, next)) = parse_class(&chars, i, escape) {
                        tokens.push(class);
                        i = next;
                        continue;
                    }
                    tokens.push(Token::Literal('['));
                }
                _ => tokens.push(Token::Literal(ch)),
            }
            i += 1;
        }
        Pattern { tokens }
    }

    /// Whether the whole of `text` matches.
    fn matches(&self, text: &[char]) -> bool {
        match_tokens(&self.tokens, text)
    }

    /// `${v%pat}` / `${v%%pat}`: removes the shortest (or longest) matching suffix.
    pub(crate) fn trim_suffix(&self, value: &str, greedy: bool) -> String {
        let chars: Vec<char> = value.chars().collect();
        let starts: Box<dyn Iterator<Item = usize>> = if greedy {
            Box::new(0..=chars.len())
        } else {
            Box::new((0..=chars.len()).rev())
        };
        for start in starts {
            if self.matches(&chars[start..]) {
                return chars[..start].iter().collect();
            }
        }
        value.to_string()
    }

    /// `${v#pat}` / `${v##pat}`: removes the shortest (or longest) matching prefix.
    pub(crate) fn trim_prefix(&self, value: &str, greedy: bool) -> String {
        let chars: Vec<char> = value.chars().collect();
        let ends: Box<dyn Iterator<Item = usize>> = if greedy {
            Box::new((0..=chars.len()).rev())
        } else {
            Box::new(0..=chars.len())
        };
        for end in ends {
            if self.matches(&chars[..end]) {
                return chars[end..].iter().collect();
            }
        }
        value.to_string()
    }

    /// `${v/pat/repl}` / `${v//pat/repl}`: replaces the first (or every) leftmost-longest
    /// non-empty match.
    pub(crate) fn replace(&self, value: &str, replacement: &str, all: bool) -> String {
        let chars: Vec<char> = value.chars().collect();
        let mut out = String::new();
        let mut i = 0;
        let mut done = false;
        while i < chars.len() {
            if !done {
                if let Some(end) = (i + 1..=chars.len())
                    .rev()
                    .find(|&end| self.matches(&chars[i..end]))
                {
                    out.push_str(replacement);
                    done = !all;
                    i = end;
                    continue;
                }
            }
            out.push(chars[i]);
            i += 1;
        }
        out
    }
}

fn parse_class(chars: &[char], open: usize, escape: char) -> Option<(Token, usize)> {
    let mut i = open + 1;
    let mut negated = false;
    if matches!(chars.get(i), Some('!') | Some('^')) {
        negated = true;
        i += 1;
    }
    let mut ranges = Vec::new();
    let mut first = true;
    loop {
        let mut ch = *chars.get(i)?;
        if ch == ']' && !first {
            return Some((Token::Class { negated, ranges }, i + 1));
        }
        first = false;
        if ch == escape {
            i += 1;
            ch = *chars.get(i)?;
        }
        if chars.get(i + 1) == Some(&'-') && chars.get(i + 2).is_some_and(|c| *c != ']') {
            let mut hi = chars[i + 2];
            let mut skip = 3;
            if hi == escape {
                hi = *chars.get(i + 3)?;
                skip = 4;
            }
            ranges.push((ch, hi));
            i += skip;
        } else {
            ranges.push((ch, ch));
            i += 1;
        }
    }
}

fn match_tokens(tokens: &[Token], text: &[char]) -> bool {
    match tokens.first() {
        None => text.is_empty(),
        Some(Token::Star) => (0..=text.len()).any(|skip| match_tokens(&tokens[1..], &text[skip..])),
        Some(token) => {
            let Some(&ch) = text.first() else {
                return false;
            };
            let ok = match token {
                Token::Literal(l) => *l == ch,
                Token::Any => true,
                Token::Class { negated, ranges } => {
                    ranges.iter().any(|(lo, hi)| *lo <= ch && ch <= *hi) != *negated
                }
                Token::Star => unreachable!("handled above"),
            };
            ok && match_tokens(&tokens[1..], &text[1..])
        }
    }
}
