//! Runs BuildKit's own parser and shell-lexer test data (../shared/conformance/buildkit) and
//! prints the pass counts; any mismatch fails the test.

use std::collections::HashMap;
use std::fs;
use std::path::{Path, PathBuf};

use rbuild_builder::dockerfile::{parse_ast, ShellLex};

fn corpus_dir() -> Option<PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../shared/conformance/buildkit");
    dir.is_dir().then_some(dir)
}

fn sorted_dirs(dir: &Path) -> Vec<PathBuf> {
    let mut dirs: Vec<PathBuf> = fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("read {}: {e}", dir.display()))
        .map(|e| e.expect("read dir entry").path())
        .filter(|p| p.is_dir())
        .collect();
    dirs.sort();
    dirs
}

/// Returns (passed, total, failure descriptions).
fn run_testfiles(root: &Path) -> (usize, usize, Vec<String>) {
    let mut failures = Vec::new();
    let cases = sorted_dirs(&root.join("testfiles"));
    for case in &cases {
        let name = case
            .file_name()
            .unwrap_or_default()
            .to_string_lossy()
            .to_string();
        let text =
            String::from_utf8_lossy(&fs::read(case.join("Dockerfile")).expect("read Dockerfile"))
                .into_owned();
        let expected =
            String::from_utf8_lossy(&fs::read(case.join("result")).expect("read result"))
                .replace("\r\n", "\n");
        match parse_ast(&text) {
            Ok(ast) => {
                let got = ast.dump();
                if got != expected {
                    failures.push(format!(
                        "testfiles/{name}: dump differs\n--- expected\n{expected}--- got\n{got}"
                    ));
                }
            }
            Err(e) => failures.push(format!("testfiles/{name}: parse failed: {e}")),
        }
    }
    (cases.len() - failures.len(), cases.len(), failures)
}

fn run_negative(root: &Path) -> (usize, usize, Vec<String>) {
    let mut failures = Vec::new();
    let cases = sorted_dirs(&root.join("testfiles-negative"));
    for case in &cases {
        let name = case
            .file_name()
            .unwrap_or_default()
            .to_string_lossy()
            .to_string();
        let text =
            String::from_utf8_lossy(&fs::read(case.join("Dockerfile")).expect("read Dockerfile"))
                .into_owned();
        if let Ok(ast) = parse_ast(&text) {
            failures.push(format!(
                "testfiles-negative/{name}: parsed but must fail:\n{}",
                ast.dump()
            ));
        }
    }
    (cases.len() - failures.len(), cases.len(), failures)
}

fn conformance_env() -> HashMap<String, String> {
    [
        ("PWD", "/home"),
        ("SHELL", "bash"),
        ("KOREAN", "한국어"),
        ("NULL", ""),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect()
}

fn run_env_var_test(root: &Path) -> (usize, usize, Vec<String>) {
    let text = fs::read_to_string(root.join("envVarTest")).expect("read envVarTest");
    let env = conformance_env();
    let lex = ShellLex::new('\\');
    let (mut passed, mut total, mut failures) = (0, 0, Vec::new());
    for (n, line) in text.lines().enumerate() {
        if line.starts_with('#') || line.trim().is_empty() {
            continue;
        }
        let fields: Vec<&str> = line.split('|').collect();
        assert_eq!(fields.len(), 3, "envVarTest line {}: {line:?}", n + 1);
        let (platform, source, expected) = (fields[0].trim(), fields[1].trim(), fields[2].trim());
        if platform == "W" {
            continue;
        }
        total += 1;
        let got = lex.process_word(source, &env);
        let ok = match (&got, expected) {
            (Err(_), "error") => true,
            (Ok(word), expected) => word == expected && expected != "error",
            _ => false,
        };
        if ok {
            passed += 1;
        } else {
            failures.push(format!(
                "envVarTest line {}: {source:?} expected {expected:?}, got {got:?}",
                n + 1
            ));
        }
    }
    (passed, total, failures)
}

fn run_words_test(root: &Path) -> (usize, usize, Vec<String>) {
    let text = fs::read_to_string(root.join("wordsTest")).expect("read wordsTest");
    let mut env: Vec<(String, String)> = Vec::new();
    let lex = ShellLex::new('\\');
    let (mut passed, mut total, mut failures) = (0, 0, Vec::new());
    for (n, line) in text.lines().enumerate() {
        if line.starts_with('#') || line.trim().is_empty() {
            continue;
        }
        if let Some(assignment) = line.strip_prefix("ENV ") {
            let assignment = assignment.trim_start_matches(' ');
            let (k, v) = assignment.split_once('=').unwrap_or((assignment, ""));
            // Later definitions replace earlier ones.
            env.retain(|(name, _)| name != k);
            env.insert(0, (k.to_string(), v.to_string()));
            continue;
        }
        let fields: Vec<&str> = line.split('|').collect();
        assert_eq!(fields.len(), 2, "wordsTest line {}: {line:?}", n + 1);
        let source = fields[0].trim();
        let expected_text = fields[1].trim_start_matches(' ');
        total += 1;
        let got = lex.process_words(source, &env);
        let ok = match &got {
            Err(_) => expected_text == "error",
            Ok(words) => {
                let expected: Vec<&str> = expected_text.split(',').collect();
                *words == expected
            }
        };
        if ok {
            passed += 1;
        } else {
            failures.push(format!(
                "wordsTest line {}: {source:?} expected {expected_text:?}, got {got:?}",
                n + 1
            ));
        }
    }
    (passed, total, failures)
}

#[test]
fn buildkit_conformance_corpus() {
    let Some(root) = corpus_dir() else {
        eprintln!("conformance: ../shared/conformance/buildkit not found, corpus skipped");
        return;
    };
    let (tf_pass, tf_total, mut failures) = run_testfiles(&root);
    let (neg_pass, neg_total, neg_fail) = run_negative(&root);
    let (env_pass, env_total, env_fail) = run_env_var_test(&root);
    let (words_pass, words_total, words_fail) = run_words_test(&root);
    failures.extend(neg_fail);
    failures.extend(env_fail);
    failures.extend(words_fail);
    println!(
        "conformance: testfiles {tf_pass}/{tf_total}, negative {neg_pass}/{neg_total}, envVarTest {env_pass}/{env_total}, wordsTest {words_pass}/{words_total}"
    );
    assert!(
        tf_total > 0 && neg_total > 0 && env_total > 0 && words_total > 0,
        "corpus is empty"
    );
    assert!(
        failures.is_empty(),
        "{} conformance failures:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

/// Byte-level mutations of every corpus Dockerfile must parse or fail cleanly, never panic,
/// and every error must name a line inside the file.
#[test]
fn mutated_corpus_never_panics() {
    let Some(root) = corpus_dir() else {
        return;
    };
    let alphabet: &[u8] = b"\\`\"'$ {}[]<>-=#\n\t\r:,/*?!ab\x00";
    let mut seed: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut next = move || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed
    };
    let mut inputs = 0;
    for dir in ["testfiles", "testfiles-negative"] {
        for case in sorted_dirs(&root.join(dir)) {
            let original = fs::read(case.join("Dockerfile")).expect("read Dockerfile");
            for _ in 0..40 {
                let mut bytes = original.clone();
                for _ in 0..(1 + next() % 4) {
                    let pos = if bytes.is_empty() {
                        0
                    } else {
                        (next() as usize) % bytes.len()
                    };
                    let byte = alphabet[(next() as usize) % alphabet.len()];
                    match next() % 3 {
                        0 if !bytes.is_empty() => bytes[pos] = byte,
                        1 if !bytes.is_empty() => {
                            bytes.remove(pos);
                        }
                        _ => bytes.insert(pos, byte),
                    }
                }
                let text = String::from_utf8_lossy(&bytes).into_owned();
                let lines = text.lines().count().max(1);
                if let Err(e) = rbuild_builder::dockerfile::parse(&text) {
                    assert!(
                        e.line() <= lines + 1,
                        "error line {} beyond {lines} lines: {e}",
                        e.line()
                    );
                    assert!(e.to_string().starts_with("Dockerfile:"), "{e}");
                }
                inputs += 1;
            }
        }
    }
    assert!(inputs > 1000);
}
