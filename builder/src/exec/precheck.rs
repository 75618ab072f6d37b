//! Checks made on the whole plan before any step runs: flags rbuild knows but cannot honour,
//! a `FROM --platform` other than the host's, and values (`STOPSIGNAL`, `EXPOSE`) that are
//! invalid as written. Docker (BuildKit) converts the whole Dockerfile before it runs anything,
//! so these fail there before the first RUN too. Values that need expansion (`$VAR`) are checked
//! again, expanded, when their step runs.

use super::plan::Plan;
use super::BuildError;
use crate::dockerfile::{CopySource, Dockerfile, Instruction, InstructionKind, ShellLex};

/// The platform rbuild builds for (the host's).
pub const HOST_PLATFORM: &str = "linux/amd64";

/// Whether `platform` (as `--platform` or `FROM --platform=` give it) names the host platform.
pub fn is_host_platform(platform: &str) -> bool {
    matches!(
        platform.to_ascii_lowercase().as_str(),
        "linux/amd64" | "linux/x86_64" | "linux/amd64/v1" | "linux/x86-64"
    )
}

/// BuildKit's automatic platform ARGs, with the host platform's values: usable in `FROM` lines
/// without a declaration, and inside a stage after `ARG NAME`.
pub fn platform_args() -> [(&'static str, &'static str); 8] {
    [
        ("BUILDPLATFORM", HOST_PLATFORM),
        ("BUILDOS", "linux"),
        ("BUILDARCH", "amd64"),
        ("BUILDVARIANT", ""),
        ("TARGETPLATFORM", HOST_PLATFORM),
        ("TARGETOS", "linux"),
        ("TARGETARCH", "amd64"),
        ("TARGETVARIANT", ""),
    ]
}

/// Checks every stage the plan builds; the first problem is an error naming its line.
pub fn check(df: &Dockerfile, plan: &Plan) -> Result<(), BuildError> {
    let lex = ShellLex::new(df.directives.escape);
    for &i in &plan.needed {
        let stage = &df.stages[i];
        if let Some(platform) = &stage.platform {
            let expanded = lex
                .process_word(platform, &plan.global_args)
                .unwrap_or_else(|_| platform.clone());
            if !expanded.is_empty() && !is_host_platform(&expanded) {
                return Err(BuildError::Step {
                    line: stage.line,
                    instruction: stage.original.clone(),
                    message: format!(
                        "platform {expanded:?} is not supported: rbuild builds for the host \
                         platform {HOST_PLATFORM}; drop --platform or use $BUILDPLATFORM"
                    ),
                });
            }
        }
        for instr in &stage.instructions {
            check_instruction(instr)?;
        }
    }
    Ok(())
}

fn check_instruction(instr: &Instruction) -> Result<(), BuildError> {
    let fail = |message: String| BuildError::Step {
        line: instr.line,
        instruction: instr.original.clone(),
        message,
    };
    let literal = |w: &str| !w.contains('$');
    match &instr.kind {
        InstructionKind::Run(r) => {
            // Specs with variables are checked once expanded, when the step is prepared.
            for m in r.mounts.iter().filter(|m| literal(m)) {
                super::run_mount::parse(m, "/").map_err(fail)?;
            }
            if let Some(n) = &r.network {
                run_network(n).map_err(fail)?;
            }
            match r.security.as_deref() {
                None | Some("sandbox") => {}
                Some("insecure") => {
                    return Err(fail(
                        "RUN --security=insecure is not supported: rbuild runs every step \
                         sandboxed; remove the flag"
                            .into(),
                    ))
                }
                Some(other) => {
                    return Err(fail(format!(
                        "unknown --security={other}: use sandbox or insecure"
                    )))
                }
            }
        }
        InstructionKind::Copy(c) => {
            if c.parents {
                return Err(fail(
                    "--parents is not supported by rbuild yet: name the destination dirs \
                     explicitly"
                        .into(),
                ));
            }
            check_excludes(&c.excludes).map_err(fail)?;
            if c.from.is_some()
                && c.sources
                    .iter()
                    .any(|s| matches!(s, CopySource::Heredoc(_)))
            {
                return Err(fail("COPY --from cannot take a heredoc source".into()));
            }
            if let Some(m) = c.chmod.as_deref().filter(|m| literal(m)) {
                chmod_mode(m).map_err(fail)?;
            }
            check_sources(&c.sources, &c.dest).map_err(fail)?;
        }
        InstructionKind::Add(a) => {
            if let Some(m) = a.chmod.as_deref().filter(|m| literal(m)) {
                chmod_mode(m).map_err(fail)?;
            }
            if let Some(sum) = a.checksum.as_deref().filter(|c| literal(c)) {
                checksum(sum).map_err(fail)?;
                let local = a.sources.iter().find_map(|s| match s {
                    CopySource::Path(p) if literal(p) && !is_url(p) => Some(p.as_str()),
                    CopySource::Heredoc(h) => Some(h.name.as_str()),
                    _ => None,
                });
                if let Some(p) = local {
                    return Err(fail(format!(
                        "--checksum applies to HTTP(S) sources only, not {p}: drop the flag"
                    )));
                }
            }
            check_excludes(&a.excludes).map_err(fail)?;
            check_sources(&a.sources, &a.dest).map_err(fail)?;
        }
        InstructionKind::Stopsignal(s) if literal(s) => stop_signal(s).map_err(fail)?,
        InstructionKind::Expose(ports) => {
            for p in ports.iter().filter(|p| literal(p)) {
                for w in p.split_whitespace() {
                    exposed_port(w).map_err(fail)?;
                }
            }
        }
        _ => {}
    }
    Ok(())
}

/// Whether a COPY/ADD destination (expanded) names a directory: a trailing `/`, or `.`.
pub fn dest_is_dir(dest: &str) -> bool {
    dest.ends_with('/') || dest.ends_with("/.") || dest == "."
}

/// More than one source needs a directory destination (a destination with `$` is checked when
/// the step runs, expanded).
fn check_sources(sources: &[CopySource], dest: &str) -> Result<(), String> {
    if sources.len() > 1 && !dest.contains('$') && !dest_is_dir(dest) {
        return Err(format!(
            "with more than one source the destination must be a directory ending in /: \
             write {dest}/"
        ));
    }
    Ok(())
}

/// A `--chmod` value: an octal mode, or a symbolic one (`u+x`, `g-w,o=r`, ...) applied to each
/// copied entry's own mode, as BuildKit (dockerfile 1.10 and later) accepts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Chmod {
    /// The permission bits every entry gets.
    Octal(u32),
    /// chmod(1) clauses, applied in order; the value as written.
    Symbolic(Vec<ChmodClause>, String),
}

/// One clause of a symbolic mode: who it affects and its actions.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChmodClause {
    /// Bits the clause may touch (u: 04700, g: 02070, o: 01007; all when none is named).
    who: u32,
    /// Operator (`+`, `-` or `=`) and what follows it.
    actions: Vec<(char, ChmodPerm)>,
}

/// What an operator of a symbolic mode applies.
#[derive(Debug, Clone, PartialEq, Eq)]
enum ChmodPerm {
    /// Any of r, w, x, X, s, t.
    Bits { bits: u32, cond_x: bool },
    /// The current bits of u, g or o (`g=u`), by their shift.
    Copy(u32),
}

impl Chmod {
    /// The mode an entry whose own mode is `mode` (and which is a directory when `dir`) gets.
    pub fn apply(&self, mode: u32, dir: bool) -> u32 {
        let clauses = match self {
            Chmod::Octal(m) => return *m,
            Chmod::Symbolic(c, _) => c,
        };
        let mut mode = mode & 0o7777;
        for clause in clauses {
            for (op, perm) in &clause.actions {
                let bits = match perm {
                    ChmodPerm::Bits { bits, cond_x } => {
                        let x = if *cond_x && (dir || mode & 0o111 != 0) {
                            0o111
                        } else {
                            0
                        };
                        bits | x
                    }
                    ChmodPerm::Copy(shift) => ((mode >> shift) & 0o7) * 0o111,
                };
                let bits = bits & clause.who;
                mode = match op {
                    '+' => mode | bits,
                    '-' => mode & !bits,
                    _ => (mode & !clause.who) | bits,
                };
            }
        }
        mode
    }

    /// The form that goes into cache keys (octal as before symbolic modes were accepted).
    pub fn key(&self) -> String {
        match self {
            Chmod::Octal(m) => format!("Some({m})"),
            Chmod::Symbolic(_, text) => format!("Some(symbolic {text})"),
        }
    }
}

/// Parses `--chmod=MODE`: octal (at most 07777), or symbolic as chmod(1) writes it:
/// comma-separated clauses `[ugoa]*([-+=]([rwxXst]*|[ugo]))+`.
pub fn chmod_mode(value: &str) -> Result<Chmod, String> {
    let bad = || {
        format!(
            "invalid --chmod={value}: give an octal mode such as 0755 or a symbolic one such \
             as u+x,g-w"
        )
    };
    if !value.is_empty() && value.bytes().all(|b| b.is_ascii_digit()) {
        return u32::from_str_radix(value, 8)
            .ok()
            .filter(|v| *v <= 0o7777)
            .map(Chmod::Octal)
            .ok_or_else(bad);
    }
    let mut clauses = Vec::new();
    for text in value.split(',') {
        let mut chars = text.chars().peekable();
        let mut who = 0;
        while let Some(c) = chars.peek() {
            who |= match c {
                'u' => 0o4700,
                'g' => 0o2070,
                'o' => 0o1007,
                'a' => 0o7777,
                _ => break,
            };
            chars.next();
        }
        if who == 0 {
            who = 0o7777;
        }
        let mut actions = Vec::new();
        while let Some(op) = chars.next() {
            if !matches!(op, '+' | '-' | '=') {
                return Err(bad());
            }
            let perm = match chars.peek() {
                Some(c @ ('u' | 'g' | 'o')) => {
                    let shift = match c {
                        'u' => 6,
                        'g' => 3,
                        _ => 0,
                    };
                    chars.next();
                    ChmodPerm::Copy(shift)
                }
                _ => {
                    let (mut bits, mut cond_x) = (0, false);
                    while let Some(c) = chars.peek() {
                        bits |= match c {
                            'r' => 0o444,
                            'w' => 0o222,
                            'x' => 0o111,
                            's' => 0o6000,
                            't' => 0o1000,
                            'X' => {
                                cond_x = true;
                                0
                            }
                            _ => break,
                        };
                        chars.next();
                    }
                    ChmodPerm::Bits { bits, cond_x }
                }
            };
            actions.push((op, perm));
        }
        if actions.is_empty() {
            return Err(bad());
        }
        clauses.push(ChmodClause { who, actions });
    }
    Ok(Chmod::Symbolic(clauses, value.to_string()))
}

/// Whether a COPY/ADD source is a URL.
pub fn is_url(s: &str) -> bool {
    s.starts_with("http://") || s.starts_with("https://")
}

/// Whether an ADD source names a git repository, as BuildKit recognises them (`git@host:...`,
/// `git://...`, `ssh://...`, or an HTTP(S) URL whose path ends in `.git` or has a `.git#ref`).
pub fn is_git(s: &str) -> bool {
    if s.starts_with("git@") || s.starts_with("git://") || s.starts_with("ssh://") {
        return true;
    }
    if !is_url(s) {
        return false;
    }
    let path = s.split(['?', '#']).next().unwrap_or(s);
    path.ends_with(".git") || path.ends_with(".git/")
}

/// Checks `ADD --checksum=ALGO:HEX` (sha256, sha384 or sha512, lower-case hex of the right
/// length) and returns the algorithm.
pub fn checksum(value: &str) -> Result<&str, String> {
    let (algo, hex) = value.split_once(':').unwrap_or(("", value));
    let len = match algo {
        "sha256" => 64,
        "sha384" => 96,
        "sha512" => 128,
        _ => {
            return Err(format!(
                "invalid --checksum={value}: write sha256:HEX (or sha384:, sha512:)"
            ))
        }
    };
    if hex.len() != len || !hex.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')) {
        return Err(format!(
            "invalid --checksum={value}: {algo} needs {len} lower-case hex digits"
        ));
    }
    Ok(algo)
}

/// Checks the `--exclude` patterns without variables (the others once expanded).
fn check_excludes(excludes: &[String]) -> Result<(), String> {
    let literal: Vec<&String> = excludes.iter().filter(|e| !e.contains('$')).collect();
    crate::dockerignore::IgnoreMatcher::from_patterns(&literal)
        .map(|_| ())
        .map_err(|e| format!("invalid --exclude: {e}"))
}

/// The network of `RUN --network=VALUE`.
pub fn run_network(value: &str) -> Result<Option<super::Network>, String> {
    match value {
        "none" => Ok(Some(super::Network::None)),
        "host" => Ok(Some(super::Network::Host)),
        "default" => Ok(None),
        other => Err(format!(
            "unknown --network={other}: use default, none or host"
        )),
    }
}

/// Signal names Docker's `STOPSIGNAL` accepts (without `SIG`, as in moby's signal map).
const SIGNALS: &[&str] = &[
    "ABRT", "ALRM", "BUS", "CHLD", "CLD", "CONT", "FPE", "HUP", "ILL", "INT", "IO", "IOT", "KILL",
    "PIPE", "POLL", "PROF", "PWR", "QUIT", "SEGV", "STKFLT", "STOP", "SYS", "TERM", "TRAP", "TSTP",
    "TTIN", "TTOU", "UNUSED", "URG", "USR1", "USR2", "VTALRM", "WINCH", "XCPU", "XFSZ", "RTMIN",
    "RTMAX",
];

/// Checks a `STOPSIGNAL` value as Docker does: a number from 1 to 64, or a signal name with
/// or without `SIG` in any case (`SIGTERM`, `term`, `SIGRTMIN+3`).
pub fn stop_signal(value: &str) -> Result<(), String> {
    if let Ok(n) = value.parse::<u32>() {
        if (1..=64).contains(&n) {
            return Ok(());
        }
    }
    let upper = value.to_ascii_uppercase();
    let name = upper.strip_prefix("SIG").unwrap_or(&upper);
    let ok = SIGNALS.contains(&name)
        || name
            .strip_prefix("RTMIN+")
            .and_then(|n| n.parse::<u32>().ok())
            .is_some_and(|n| (1..=15).contains(&n))
        || name
            .strip_prefix("RTMAX-")
            .and_then(|n| n.parse::<u32>().ok())
            .is_some_and(|n| (1..=14).contains(&n));
    if ok {
        Ok(())
    } else {
        Err(format!(
            "invalid signal {value:?}: name one such as SIGTERM or SIGQUIT, or give its number"
        ))
    }
}

/// Checks one `EXPOSE` word (`80`, `80/tcp`, `8000-8010/udp`) and returns it as the config
/// keeps it (`80/tcp`). Forms with `:` (ip:host:container) are passed on as written.
pub fn exposed_port(word: &str) -> Result<String, String> {
    if word.contains(':') {
        return Ok(if word.contains('/') {
            word.to_ascii_lowercase()
        } else {
            format!("{word}/tcp")
        });
    }
    let (ports, proto) = match word.split_once('/') {
        Some((p, proto)) => (p, proto.to_ascii_lowercase()),
        None => (word, "tcp".to_string()),
    };
    if !matches!(proto.as_str(), "tcp" | "udp" | "sctp") {
        return Err(format!(
            "invalid protocol {proto:?} in EXPOSE {word}: use tcp, udp or sctp"
        ));
    }
    let port = |p: &str| p.parse::<u16>().ok();
    let valid = match ports.split_once('-') {
        Some((a, b)) => matches!((port(a), port(b)), (Some(a), Some(b)) if a <= b),
        None => port(ports).is_some(),
    };
    if !valid {
        return Err(format!(
            "invalid port {ports:?} in EXPOSE {word}: give a number up to 65535 or a range such \
             as 8000-8010"
        ));
    }
    Ok(format!("{ports}/{proto}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chmod_takes_octal_and_symbolic_modes() {
        assert_eq!(chmod_mode("0755"), Ok(Chmod::Octal(0o755)));
        assert_eq!(chmod_mode("4755").unwrap().apply(0o600, false), 0o4755);
        let cases: &[(&str, u32, bool, u32)] = &[
            ("u+x", 0o644, false, 0o744),
            ("g-w", 0o664, false, 0o644),
            ("a=r", 0o755, false, 0o444),
            ("=r", 0o755, false, 0o444),
            ("+x", 0o644, false, 0o755),
            ("u+x,g-w,o=", 0o666, false, 0o740),
            ("go-rwx", 0o755, true, 0o700),
            ("a+X", 0o644, false, 0o644),
            ("a+X", 0o744, false, 0o755),
            ("a+X", 0o644, true, 0o755),
            ("u+s,+t", 0o755, false, 0o5755),
            ("o+s", 0o755, false, 0o755),
            ("g=u", 0o740, false, 0o770),
            ("u=rw,go=r", 0o777, false, 0o644),
            ("u-x+w", 0o500, false, 0o600),
            ("ug+x,o-r", 0o644, false, 0o750),
        ];
        for (text, from, dir, want) in cases {
            let got = chmod_mode(text).unwrap().apply(*from, *dir);
            assert_eq!(got, *want, "{text} on {from:o}: {got:o}");
        }
        for bad in [
            "", "u", "x+", "u+z", "0999", "17777", "u+x,", "u+x;g", "+rq", "-0755",
        ] {
            assert!(chmod_mode(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn stop_signals_as_docker_accepts_them() {
        for ok in [
            "SIGTERM",
            "term",
            "9",
            "SIGRTMIN+3",
            "RTMAX-1",
            "sigquit",
            "64",
        ] {
            assert!(stop_signal(ok).is_ok(), "{ok}");
        }
        for bad in ["SIGFOO", "0", "65", "", "SIGRTMIN+16", "-1"] {
            assert!(stop_signal(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn exposed_ports_and_protocols() {
        assert_eq!(exposed_port("80").unwrap(), "80/tcp");
        assert_eq!(exposed_port("53/UDP").unwrap(), "53/udp");
        assert_eq!(exposed_port("8000-8010/sctp").unwrap(), "8000-8010/sctp");
        for bad in ["80/xyz", "http", "70000", "90-80", "/tcp", ""] {
            assert!(exposed_port(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn checksums_name_a_known_algorithm_and_enough_hex() {
        assert_eq!(
            checksum(&format!("sha256:{}", "a".repeat(64))),
            Ok("sha256")
        );
        assert_eq!(
            checksum(&format!("sha512:{}", "0".repeat(128))),
            Ok("sha512")
        );
        for bad in [
            "md5:00".to_string(),
            format!("sha256:{}", "a".repeat(63)),
            format!("sha256:{}", "A".repeat(64)),
            "a".repeat(64),
        ] {
            assert!(checksum(&bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn git_sources() {
        for git in [
            "git@github.com:moby/buildkit.git",
            "https://github.com/moby/buildkit.git",
            "https://github.com/moby/buildkit.git#v0.10.1",
            "git://example.com/repo",
        ] {
            assert!(is_git(git), "{git}");
        }
        for not in [
            "https://example.com/file.tar.gz",
            "src/dir.git.bak",
            "a.git",
        ] {
            assert!(!is_git(not), "{not}");
        }
    }

    #[test]
    fn host_platform_spellings() {
        assert!(is_host_platform("linux/amd64"));
        assert!(is_host_platform("Linux/x86_64"));
        assert!(!is_host_platform("linux/arm64"));
        assert!(!is_host_platform("windows/amd64"));
    }
}
