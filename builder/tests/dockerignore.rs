//! `.dockerignore` semantics. Most cases are ported from moby/patternmatcher
//! (`patternmatcher_test.go`, `ignorefile/ignorefile_test.go`, Apache-2.0); the rest check
//! Docker's documented behaviour and the walker helpers.

use std::fs;

use rbuild_builder::dockerignore::{read_ignore_patterns, DockerignoreError, IgnoreMatcher};

fn matcher(patterns: &[&str]) -> IgnoreMatcher {
    IgnoreMatcher::from_patterns(patterns).unwrap_or_else(|e| panic!("patterns {patterns:?}: {e}"))
}

/// moby's package-level `Matches(file, patterns)`: cleans the file, never matches ".".
fn matches(file: &str, patterns: &[&str]) -> Result<bool, DockerignoreError> {
    let pm = IgnoreMatcher::from_patterns(patterns)?;
    let cleaned = clean(file);
    Ok(cleaned != "." && pm.is_excluded(&cleaned))
}

fn clean(p: &str) -> String {
    let rooted = p.starts_with('/');
    let mut parts: Vec<&str> = Vec::new();
    for part in p.split('/') {
        match part {
            "" | "." => {}
            ".." if parts.last().is_some_and(|l| *l != "..") => {
                parts.pop();
            }
            other => parts.push(other),
        }
    }
    let joined = parts.join("/");
    if rooted {
        format!("/{joined}")
    } else if joined.is_empty() {
        ".".into()
    } else {
        joined
    }
}

#[test]
fn wildcard_matches() {
    assert!(matches("fileutils.go", &["*"]).unwrap());
}

#[test]
fn pattern_matches() {
    assert!(matches("fileutils.go", &["*.go"]).unwrap());
}

#[test]
fn exclusion_pattern_matches_pattern_before() {
    assert!(matches("fileutils.go", &["!fileutils.go", "*.go"]).unwrap());
}

#[test]
fn pattern_matches_folder_exclusions() {
    assert!(!matches("docs/README.md", &["docs", "!docs/README.md"]).unwrap());
    assert!(!matches("docs/README.md", &["docs/", "!docs/README.md"]).unwrap());
    assert!(!matches("docs/README.md", &["docs/*", "!docs/README.md"]).unwrap());
}

#[test]
fn exclusion_pattern_matches_pattern_after() {
    assert!(!matches("fileutils.go", &["*.go", "!fileutils.go"]).unwrap());
}

#[test]
fn exclusion_pattern_matches_whole_directory() {
    assert!(!matches(".", &["*.go"]).unwrap());
}

#[test]
fn single_exclamation_error() {
    assert!(matches("fileutils.go", &["!"]).is_err());
}

#[test]
fn matches_with_no_patterns() {
    assert!(!matches("/any/path/there", &[]).unwrap());
}

#[test]
fn matches_with_malformed_patterns() {
    assert!(matches("/any/path/there", &["["]).is_err());
}

#[derive(Clone, Copy, PartialEq, Debug)]
enum Pass {
    Fail,
    Exact,
    Inexact,
}
use Pass::*;

const MATCH_TESTS: &[(&str, &str, Pass)] = &[
    ("**", "file", Exact),
    ("**", "file/", Exact),
    ("**/", "file", Exact),
    ("**/", "file/", Exact),
    ("**", "/", Exact),
    ("**/", "/", Exact),
    ("**", "dir/file", Exact),
    ("**/", "dir/file", Exact),
    ("**", "dir/file/", Exact),
    ("**/", "dir/file/", Exact),
    ("**/**", "dir/file", Exact),
    ("**/**", "dir/file/", Exact),
    ("dir/**", "dir/file", Exact),
    ("dir/**", "dir/file/", Exact),
    ("dir/**", "dir/dir2/file", Exact),
    ("dir/**", "dir/dir2/file/", Exact),
    ("**/dir", "dir", Exact),
    ("**/dir", "dir/file", Inexact),
    ("**/dir2/*", "dir/dir2/file", Exact),
    ("**/dir2/*", "dir/dir2/file/", Inexact),
    ("**/dir2/**", "dir/dir2/dir3/file", Exact),
    ("**/dir2/**", "dir/dir2/dir3/file/", Exact),
    ("**file", "file", Exact),
    ("**file", "dir/file", Exact),
    ("**/file", "dir/file", Exact),
    ("**file", "dir/dir/file", Exact),
    ("**/file", "dir/dir/file", Exact),
    ("**/file*", "dir/dir/file", Exact),
    ("**/file*", "dir/dir/file.txt", Exact),
    ("**/file*txt", "dir/dir/file.txt", Exact),
    ("**/file*.txt", "dir/dir/file.txt", Exact),
    ("**/file*.txt*", "dir/dir/file.txt", Exact),
    ("**/**/*.txt", "dir/dir/file.txt", Exact),
    ("**/**/*.txt2", "dir/dir/file.txt", Fail),
    ("**/*.txt", "file.txt", Exact),
    ("**/**/*.txt", "file.txt", Exact),
    ("a**/*.txt", "a/file.txt", Exact),
    ("a**/*.txt", "a/dir/file.txt", Exact),
    ("a**/*.txt", "a/dir/dir/file.txt", Exact),
    ("a/*.txt", "a/dir/file.txt", Fail),
    ("a/*.txt", "a/file.txt", Exact),
    ("a/*.txt**", "a/file.txt", Exact),
    ("a[b-d]e", "ae", Fail),
    ("a[b-d]e", "ace", Exact),
    ("a[b-d]e", "aae", Fail),
    ("a[^b-d]e", "aze", Exact),
    (".*", ".foo", Exact),
    (".*", "foo", Fail),
    ("abc.def", "abcdef", Fail),
    ("abc.def", "abc.def", Exact),
    ("abc.def", "abcZdef", Fail),
    ("abc?def", "abcZdef", Exact),
    ("abc?def", "abcdef", Fail),
    ("**/foo/bar", "foo/bar", Exact),
    ("**/foo/bar", "dir/foo/bar", Exact),
    ("**/foo/bar", "dir/dir2/foo/bar", Exact),
    ("abc/**", "abc", Fail),
    ("abc/**", "abc/def", Exact),
    ("abc/**", "abc/def/ghi", Exact),
    ("**/.foo", ".foo", Exact),
    ("**/.foo", "bar.foo", Fail),
    ("a(b)c/def", "a(b)c/def", Exact),
    ("a(b)c/def", "a(b)c/xyz", Fail),
    ("a.|)$(}+{bc", "a.|)$(}+{bc", Exact),
    (
        "dist/proxy.py-2.4.0rc3.dev36+g08acad9-py3-none-any.whl",
        "dist/proxy.py-2.4.0rc3.dev36+g08acad9-py3-none-any.whl",
        Exact,
    ),
    (
        "dist/*.whl",
        "dist/proxy.py-2.4.0rc3.dev36+g08acad9-py3-none-any.whl",
        Exact,
    ),
    // Unix-only cases.
    ("a\\\\", "a\\", Exact),
    ("a\\*b", "a*b", Exact),
];

const MULTI_PATTERN_TESTS: &[(&[&str], &str, Pass)] = &[
    (&["**", "!util/docker/web"], "util/docker/web/foo", Fail),
    (
        &["**", "!util/docker/web", "util/docker/web/foo"],
        "util/docker/web/foo",
        Exact,
    ),
    (
        &[
            "**",
            "!dist/proxy.py-2.4.0rc3.dev36+g08acad9-py3-none-any.whl",
        ],
        "dist/proxy.py-2.4.0rc3.dev36+g08acad9-py3-none-any.whl",
        Fail,
    ),
    (
        &["**", "!dist/*.whl"],
        "dist/proxy.py-2.4.0rc3.dev36+g08acad9-py3-none-any.whl",
        Fail,
    ),
];

#[test]
fn matches_exact_table() {
    let mut failures = Vec::new();
    for &(pattern, text, pass) in MATCH_TESTS {
        let got = matcher(&[pattern]).matches_exact(text);
        if got != (pass == Exact) {
            failures.push(format!(
                "pattern={pattern:?} text={text:?}: expected {pass:?}, got {got}"
            ));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn matches_or_parent_matches_table() {
    let mut failures = Vec::new();
    for &(pattern, text, pass) in MATCH_TESTS {
        let got = matcher(&[pattern]).is_excluded(text);
        if got != (pass != Fail) {
            failures.push(format!(
                "pattern={pattern:?} text={text:?}: expected {pass:?}, got {got}"
            ));
        }
    }
    for &(patterns, text, pass) in MULTI_PATTERN_TESTS {
        let got = matcher(patterns).is_excluded(text);
        if got != (pass != Fail) {
            failures.push(format!(
                "patterns={patterns:?} text={text:?}: expected {pass:?}, got {got}"
            ));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn clean_patterns() {
    assert_eq!(matcher(&["docs", "config"]).patterns().len(), 2);
    assert_eq!(matcher(&["docs", "config", ""]).patterns().len(), 2);
    assert!(matcher(&["docs", "!docs/README.md"]).has_exceptions());
    assert!(matcher(&["docs", "  !docs/README.md"]).has_exceptions());
    assert!(matcher(&["docs", "!docs/README.md  "]).has_exceptions());
    assert!(!matcher(&["docs", "config"]).has_exceptions());
    assert!(IgnoreMatcher::from_patterns(&["!"]).is_err());
}

/// Go's `filepath.Match` tests as moby runs them through `Matches`; `None` = bad pattern.
const FILEPATH_MATCH_TESTS: &[(&str, &str, Option<bool>)] = &[
    ("abc", "abc", Some(true)),
    ("*", "abc", Some(true)),
    ("*c", "abc", Some(true)),
    ("a*", "a", Some(true)),
    ("a*", "abc", Some(true)),
    ("a*", "ab/c", Some(true)),
    ("a*/b", "abc/b", Some(true)),
    ("a*/b", "a/c/b", Some(false)),
    ("a*b*c*d*e*/f", "axbxcxdxe/f", Some(true)),
    ("a*b*c*d*e*/f", "axbxcxdxexxx/f", Some(true)),
    ("a*b*c*d*e*/f", "axbxcxdxe/xxx/f", Some(false)),
    ("a*b*c*d*e*/f", "axbxcxdxexxx/fff", Some(false)),
    ("a*b?c*x", "abxbbxdbxebxczzx", Some(true)),
    ("a*b?c*x", "abxbbxdbxebxczzy", Some(false)),
    ("ab[c]", "abc", Some(true)),
    ("ab[b-d]", "abc", Some(true)),
    ("ab[e-g]", "abc", Some(false)),
    ("ab[^c]", "abc", Some(false)),
    ("ab[^b-d]", "abc", Some(false)),
    ("ab[^e-g]", "abc", Some(true)),
    ("a\\*b", "a*b", Some(true)),
    ("a\\*b", "ab", Some(false)),
    ("a?b", "a☺b", Some(true)),
    ("a[^a]b", "a☺b", Some(true)),
    ("a???b", "a☺b", Some(false)),
    ("a[^a][^a][^a]b", "a☺b", Some(false)),
    ("[a-ζ]*", "α", Some(true)),
    ("*[a-ζ]", "A", Some(false)),
    ("a?b", "a/b", Some(false)),
    ("a*b", "a/b", Some(false)),
    ("[\\]a]", "]", Some(true)),
    ("[\\-]", "-", Some(true)),
    ("[x\\-]", "x", Some(true)),
    ("[x\\-]", "-", Some(true)),
    ("[x\\-]", "z", Some(false)),
    ("[\\-x]", "x", Some(true)),
    ("[\\-x]", "-", Some(true)),
    ("[\\-x]", "a", Some(false)),
    ("[]a]", "]", None),
    ("[-]", "-", None),
    ("[x-]", "x", None),
    ("[x-]", "-", None),
    ("[x-]", "z", None),
    ("[-x]", "x", None),
    ("[-x]", "-", None),
    ("[-x]", "a", None),
    ("\\", "a", None),
    ("[a-b-c]", "a", None),
    ("[", "a", None),
    ("[^", "a", None),
    ("[^bc", "a", None),
    ("a[", "a", None),
    ("a[", "ab", None),
    ("*x", "xxx", Some(true)),
];

#[test]
fn filepath_match_table() {
    let mut failures = Vec::new();
    for &(pattern, text, want) in FILEPATH_MATCH_TESTS {
        let got = matches(text, &[pattern]).ok();
        if got != want {
            failures.push(format!(
                "Match({pattern:?}, {text:?}) = {got:?}, want {want:?}"
            ));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn malformed_range_is_rejected_up_front() {
    // moby accepts "[Local-Only]/" at New() and fails on every match (moby/moby#52203);
    // here the reversed range l-O is reported when the file is read.
    let err = IgnoreMatcher::from_patterns(&["[Local-Only]/"]).expect_err("reversed range");
    assert!(err.to_string().contains("reversed"), "{err}");
}

#[test]
fn read_all() {
    assert!(read_ignore_patterns("").is_empty());
    let content =
        "test1\n/test2\n/a/file/here\n\nlastfile\n# this is a comment\n! /inverted/abs/path\n!\n! ";
    assert_eq!(
        read_ignore_patterns(content),
        vec![
            "test1",
            "test2",
            "a/file/here",
            "lastfile",
            "!inverted/abs/path",
            "!",
            "!"
        ]
    );
    // The lone "!" lines make the file as a whole invalid, naming the line.
    let err = IgnoreMatcher::parse(content).expect_err("lone !");
    assert!(err.to_string().starts_with(".dockerignore:8:"), "{err}");
}

#[test]
fn docker_documentation_examples() {
    let m = IgnoreMatcher::parse("# comment\n*/temp*\n*/*/temp*\ntemp?\n").expect("valid");
    assert!(m.is_excluded("somedir/temporary.txt"));
    assert!(m.is_excluded("somedir/temp"));
    assert!(m.is_excluded("somedir/subdir/temporary.txt"));
    assert!(m.is_excluded("tempa"));
    assert!(m.is_excluded("tempb"));
    assert!(!m.is_excluded("temp"));
    assert!(
        !m.is_excluded("temporary.txt"),
        "*/temp* is anchored one level down"
    );
    assert!(!m.is_excluded("a/b/c/temp"));

    let m = IgnoreMatcher::parse("*.md\n!README*.md\nREADME-secret.md\n").expect("valid");
    assert!(m.is_excluded("CHANGES.md"));
    assert!(!m.is_excluded("README.md"));
    assert!(!m.is_excluded("README-public.md"));
    assert!(
        m.is_excluded("README-secret.md"),
        "the last matching line wins"
    );

    let m = IgnoreMatcher::parse("*.md\nREADME-secret.md\n!README*.md\n").expect("valid");
    assert!(!m.is_excluded("README-secret.md"));

    let m = IgnoreMatcher::parse("**/*.go\n").expect("valid");
    assert!(m.is_excluded("main.go"));
    assert!(m.is_excluded("a/b/c.go"));
    assert!(!m.is_excluded("a/b/c.gox"));
}

#[test]
fn patterns_are_anchored_at_the_root() {
    let m = IgnoreMatcher::parse("/build\nnode_modules\n./tmp/../cache/\n").expect("valid");
    assert_eq!(m.patterns(), vec!["build", "node_modules", "cache"]);
    assert!(m.is_excluded("build"));
    assert!(m.is_excluded("build/out/bin"));
    assert!(m.is_excluded("node_modules/x/index.js"));
    assert!(
        !m.is_excluded("src/node_modules"),
        "names are not matched at any depth"
    );
    assert!(m.is_excluded("cache/a"));
    assert!(!m.is_excluded("src/build"));
}

#[test]
fn comments_only_at_line_start_and_spaces_trimmed() {
    let m = IgnoreMatcher::parse("#ignored\n  spaced  \n #x\n").expect("valid");
    assert_eq!(m.patterns(), vec!["spaced", "#x"]);
    assert!(m.is_excluded("spaced"));
    assert!(m.is_excluded("#x"));
    assert!(!m.is_excluded("ignored"));
    assert!(IgnoreMatcher::parse("\u{feff}bom\n")
        .expect("valid")
        .is_excluded("bom"));
}

#[test]
fn star_does_not_cross_slash_but_double_star_does() {
    let m = matcher(&["*.log"]);
    assert!(m.is_excluded("a.log"));
    assert!(!m.is_excluded("dir/a.log"));
    let m = matcher(&["**/*.log"]);
    assert!(m.is_excluded("dir/sub/a.log"));
    let m = matcher(&["dir/**/x"]);
    assert!(m.is_excluded("dir/x"));
    assert!(m.is_excluded("dir/a/b/x"));
    assert!(!m.is_excluded("other/x"));
}

#[test]
fn skipping_directories() {
    let m = matcher(&["vendor", "build", "!build/keep.txt"]);
    assert!(m.can_skip_dir("vendor"), "no ! rule can reach into vendor");
    assert!(!m.can_skip_dir("build"), "build/keep.txt is re-included");
    assert!(!m.is_excluded("build/keep.txt"));
    assert!(m.is_excluded("build/other.txt"));
    assert!(!m.can_skip_dir("src"), "src is not excluded at all");

    let m = matcher(&["*", "!**/*.rs"]);
    assert!(
        !m.can_skip_dir("anything"),
        "a ! rule starting with ** may match anywhere"
    );
    assert!(!m.is_excluded("anything/deep/lib.rs"));
    assert!(m.is_excluded("anything/deep/lib.c"));

    let m = matcher(&["foo", "!foobar"]);
    assert!(m.can_skip_dir("foo"), "!foobar cannot match below foo/");
    let m = matcher(&["foo", "!foo"]);
    assert!(!m.is_excluded("foo/x"));
}

#[test]
fn dockerfile_and_dockerignore_are_matched_like_any_file() {
    // Docker reads them regardless, but COPY does not see them when excluded.
    let m = IgnoreMatcher::parse(".dockerignore\nDockerfile\n").expect("valid");
    assert!(m.is_excluded("Dockerfile"));
    assert!(m.is_excluded(".dockerignore"));
    assert!(!m.is_excluded("src/Dockerfile"));
}

#[test]
fn from_file_reads_and_tolerates_a_missing_file() {
    let dir = tempfile::tempdir().expect("tempdir");
    let missing =
        IgnoreMatcher::from_file(&dir.path().join(".dockerignore")).expect("missing is fine");
    assert!(missing.is_empty());
    assert!(!missing.is_excluded("anything"));
    let path = dir.path().join(".dockerignore");
    fs::write(&path, "target\n!target/keep\n").expect("write");
    let m = IgnoreMatcher::from_file(&path).expect("valid");
    assert!(m.is_excluded("target/debug/x"));
    assert!(!m.is_excluded("target/keep"));
    fs::write(&path, "ok\n[bad\n").expect("write");
    let err = IgnoreMatcher::from_file(&path).expect_err("bad pattern");
    assert!(err.to_string().starts_with(".dockerignore:2:"), "{err}");
}
