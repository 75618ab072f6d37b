//! Instruction flags (`--from=x`, `--link`): BuildKit's `BFlags` rules, per instruction.

use std::collections::BTreeMap;

/// The value type of a flag.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum FlagKind {
    /// `--flag` or `--flag=true|false`.
    Bool,
    /// `--flag=value`, at most once.
    String,
    /// `--flag=value`, repeatable.
    Strings,
}

/// The flags an instruction accepts.
pub(crate) fn allowed_flags(keyword: &str) -> &'static [(&'static str, FlagKind)] {
    use FlagKind::*;
    match keyword {
        "from" => &[("platform", String)],
        "run" => &[
            ("mount", Strings),
            ("network", String),
            ("security", String),
        ],
        "copy" => &[
            ("from", String),
            ("chown", String),
            ("chmod", String),
            ("link", Bool),
            ("parents", Bool),
            ("exclude", Strings),
        ],
        "add" => &[
            ("chown", String),
            ("chmod", String),
            ("checksum", String),
            ("link", Bool),
            ("keep-git-dir", Bool),
            ("exclude", Strings),
            ("unpack", Bool),
        ],
        "healthcheck" => &[
            ("interval", String),
            ("timeout", String),
            ("start-period", String),
            ("start-interval", String),
            ("retries", String),
        ],
        _ => &[],
    }
}

/// Parsed flag values of one instruction.
#[derive(Debug, Default)]
pub(crate) struct Flags {
    values: BTreeMap<String, Vec<String>>,
}

impl Flags {
    /// Parses `flags` (as split off the line) against the instruction's allowed set.
    pub(crate) fn parse(keyword: &str, flags: &[String]) -> Result<Flags, String> {
        let allowed = allowed_flags(keyword);
        let upper = keyword.to_ascii_uppercase();
        let mut parsed = Flags::default();
        for raw in flags {
            let Some(arg) = raw.strip_prefix("--") else {
                return Err(format!("flag {raw:?} of {upper} should start with --"));
            };
            if arg.is_empty() {
                break;
            }
            let (name, value) = match arg.split_once('=') {
                Some((n, v)) => (n, Some(v)),
                None => (arg, None),
            };
            let Some((_, kind)) = allowed.iter().find(|(n, _)| *n == name) else {
                let known: Vec<String> = allowed.iter().map(|(n, _)| format!("--{n}")).collect();
                let hint = if known.is_empty() {
                    format!("{upper} takes no flags")
                } else if let Some(best) = closest(name, allowed.iter().map(|(n, _)| *n)) {
                    format!("did you mean --{best}?")
                } else {
                    format!("{upper} accepts {}", known.join(", "))
                };
                return Err(format!("unknown flag: --{name} ({hint})"));
            };
            if *kind != FlagKind::Strings && parsed.values.contains_key(name) {
                return Err(format!("duplicate flag specified: --{name}"));
            }
            let value = match (kind, value) {
                (FlagKind::Bool, None) => "true".to_string(),
                (FlagKind::Bool, Some("")) => {
                    return Err(format!("missing a value on flag: --{name}"))
                }
                (FlagKind::Bool, Some(v)) => match v.to_ascii_lowercase().as_str() {
                    "true" => "true".to_string(),
                    "false" => "false".to_string(),
                    other => {
                        return Err(format!(
                            "expecting boolean value for flag --{name}, not: {other}"
                        ))
                    }
                },
                (_, None) => {
                    return Err(format!(
                        "missing a value on flag: --{name}: write --{name}=VALUE"
                    ))
                }
                (_, Some(v)) => v.to_string(),
            };
            parsed
                .values
                .entry(name.to_string())
                .or_default()
                .push(value);
        }
        Ok(parsed)
    }

    /// The value of a string flag, if given.
    pub(crate) fn string(&self, name: &str) -> Option<String> {
        self.values.get(name).and_then(|v| v.last().cloned())
    }

    /// Every value of a repeatable flag.
    pub(crate) fn strings(&self, name: &str) -> Vec<String> {
        self.values.get(name).cloned().unwrap_or_default()
    }

    /// A boolean flag: `None` when absent.
    pub(crate) fn bool(&self, name: &str) -> Option<bool> {
        self.string(name).map(|v| v == "true")
    }
}

/// The candidate closest to `word` (case-insensitive) when it is a likely typo: at most one
/// edit (insert, delete, substitute or swap of neighbours) per three characters.
pub(crate) fn closest<'a>(
    word: &str,
    candidates: impl Iterator<Item = &'a str>,
) -> Option<&'a str> {
    let word = word.to_ascii_lowercase();
    let limit = (word.chars().count() / 3).max(1);
    candidates
        .map(|c| (edit_distance(&word, &c.to_ascii_lowercase()), c))
        .filter(|(d, _)| *d <= limit)
        .min_by_key(|(d, _)| *d)
        .map(|(_, c)| c)
}

/// Optimal-string-alignment distance (Levenshtein plus adjacent transpositions).
fn edit_distance(a: &str, b: &str) -> usize {
    let a: Vec<char> = a.chars().collect();
    let b: Vec<char> = b.chars().collect();
    let mut d = vec![vec![0usize; b.len() + 1]; a.len() + 1];
    for (i, row) in d.iter_mut().enumerate() {
        row[0] = i;
    }
    for (j, cell) in d[0].iter_mut().enumerate() {
        *cell = j;
    }
    for i in 1..=a.len() {
        for j in 1..=b.len() {
            let cost = usize::from(a[i - 1] != b[j - 1]);
            let mut best = (d[i - 1][j] + 1)
                .min(d[i][j - 1] + 1)
                .min(d[i - 1][j - 1] + cost);
            if i > 1 && j > 1 && a[i - 1] == b[j - 2] && a[i - 2] == b[j - 1] {
                best = best.min(d[i - 2][j - 2] + 1);
            }
            d[i][j] = best;
        }
    }
    d[a.len()][b.len()]
}
