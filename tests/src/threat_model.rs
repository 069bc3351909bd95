//! The threat model names the tests that show each mitigation: every one must exist, so
//! that renaming or deleting a test cannot leave a row pointing at nothing.
//!
//! A name is the test's module path and function (`service::rekey::f`, `seal::tests::f`):
//! its last module other than `tests` must be a source file (`rekey.rs`, or a directory
//! with `mod.rs` or `main.rs`) that defines `fn f`.

use std::path::{Path, PathBuf};

/// Every `.rs` file of the workspace, outside build output.
fn sources(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let p = entry.unwrap().path();
        let name = p.file_name().unwrap().to_string_lossy().into_owned();
        if p.is_dir() {
            if name != "target" && !name.starts_with('.') {
                sources(&p, out);
            }
        } else if name.ends_with(".rs") {
            out.push(p);
        }
    }
}

/// The module a file is: its stem, or its directory's name for `mod.rs` and `main.rs`.
fn module_of(p: &Path) -> String {
    let stem = p.file_stem().unwrap().to_string_lossy().into_owned();
    if stem == "mod" || stem == "main" || stem == "lib" {
        let dir = p.parent().unwrap().file_name().unwrap();
        return dir.to_string_lossy().into_owned();
    }
    stem
}

/// The test names of the threat model's tables: backquoted paths in the last column.
fn named_tests(doc: &str) -> Vec<String> {
    let mut names = Vec::new();
    for line in doc.lines().filter(|l| l.starts_with("| T")) {
        let cell = line.trim_end_matches('|').rsplit('|').next().unwrap();
        let mut quoted = cell.split('`').skip(1).step_by(2).peekable();
        assert!(quoted.peek().is_some(), "a row names no test: {line}");
        for q in quoted {
            let is_path = q.contains("::")
                && q.split("::").all(|s| {
                    !s.is_empty()
                        && s.chars()
                            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
                });
            if is_path {
                names.push(q.to_string());
            }
        }
    }
    names
}

#[test]
fn every_test_it_names_exists() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let doc = std::fs::read_to_string(root.join("spec/threat-model.md")).unwrap();
    let mut files = Vec::new();
    sources(&root, &mut files);
    let files: Vec<(String, String)> = files
        .iter()
        .map(|p| (module_of(p), std::fs::read_to_string(p).unwrap()))
        .collect();
    let names = named_tests(&doc);
    assert!(names.len() > 50, "only {} test names found", names.len());
    let missing: Vec<&String> = names
        .iter()
        .filter(|name| {
            let parts: Vec<&str> = name.split("::").collect();
            let (f, modules) = parts.split_last().unwrap();
            let module = modules.iter().rev().find(|m| **m != "tests").unwrap();
            let def = format!("fn {f}(");
            !files
                .iter()
                .any(|(m, text)| m == module && text.contains(&def))
        })
        .collect();
    assert!(
        missing.is_empty(),
        "the threat model names tests that do not exist: {missing:?}"
    );
}

#[test]
fn a_row_that_names_no_test_or_a_missing_one_is_caught() {
    let doc = "| T1 | a | b | c | `seal::tests::nothing_by_this_name` |\n";
    assert_eq!(named_tests(doc), ["seal::tests::nothing_by_this_name"]);
    let none = std::panic::catch_unwind(|| named_tests("| T2 | a | b | c | none |\n"));
    assert!(none.is_err());
}
