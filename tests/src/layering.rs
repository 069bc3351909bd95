//! No import circles: in each crate, the modules form layers, each using only the ones
//! below it. A child module may use its ancestors' items (the `super::X` of a module
//! tree); any other circle (`a` uses `b` uses `a`) fails here with the modules named.
//!
//! The check reads the sources: every `use crate::…` and `use super::…` tree, and every
//! `crate::…` path in code, resolved to the longest module it names.

use std::{
    collections::{BTreeMap, BTreeSet},
    path::Path,
};

/// A module path, `""` for the crate root.
type Module = String;

fn modules_of(src: &Path) -> BTreeMap<Module, String> {
    let mut out = BTreeMap::new();
    let mut stack = vec![src.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let p = entry.unwrap().path();
            if p.is_dir() {
                // Binaries are crates of their own.
                if p.file_name().is_some_and(|n| n != "bin") {
                    stack.push(p);
                }
                continue;
            }
            if p.extension().is_none_or(|e| e != "rs") {
                continue;
            }
            let rel = p.strip_prefix(src).unwrap().with_extension("");
            let mut parts: Vec<String> = rel
                .iter()
                .map(|s| s.to_string_lossy().into_owned())
                .collect();
            if parts.last().is_some_and(|l| l == "mod" || l == "lib") {
                parts.pop();
            }
            out.insert(parts.join("::"), std::fs::read_to_string(&p).unwrap());
        }
    }
    out
}

/// Expands a use tree (`a::{b, c::{d, self}}`) into paths.
fn expand(tree: &str) -> Vec<String> {
    let tree: String = tree.chars().filter(|c| !c.is_whitespace()).collect();
    let Some(open) = tree.find('{') else {
        return vec![tree.split(" as ").next().unwrap_or("").to_string()];
    };
    let prefix = &tree[..open];
    let inner = &tree[open + 1..tree.len().saturating_sub(1)];
    let mut parts = Vec::new();
    let (mut depth, mut start) = (0, 0);
    for (i, c) in inner.char_indices() {
        match c {
            '{' => depth += 1,
            '}' => depth -= 1,
            ',' if depth == 0 => {
                parts.push(&inner[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    parts.push(&inner[start..]);
    parts
        .into_iter()
        .filter(|p| !p.is_empty())
        .flat_map(|p| {
            expand(p)
                .into_iter()
                .map(|e| {
                    format!("{prefix}{e}")
                        .trim_end_matches("::self")
                        .to_string()
                })
                .collect::<Vec<_>>()
        })
        .collect()
}

/// Every module path `module` refers to (absolute, from the crate root).
fn references(module: &str, text: &str) -> Vec<String> {
    let code: String = text
        .lines()
        .filter(|l| !l.trim_start().starts_with("//"))
        .collect::<Vec<_>>()
        .join("\n");
    let mut out = Vec::new();
    let parent = module.rsplit_once("::").map_or("", |(p, _)| p);
    let under = |base: &str, rest: &str| {
        if base.is_empty() {
            rest.to_string()
        } else {
            format!("{base}::{rest}")
        }
    };
    let absolute = |p: &str| -> Option<String> {
        if let Some(rest) = p.strip_prefix("crate::") {
            Some(rest.to_string())
        } else if let Some(rest) = p.strip_prefix("super::") {
            Some(under(parent, rest))
        } else {
            p.strip_prefix("self::").map(|rest| under(module, rest))
        }
    };
    for stmt in code.split(';') {
        let s = stmt.trim();
        let s = s.strip_prefix("pub(crate) ").unwrap_or(s);
        let s = s.strip_prefix("pub ").unwrap_or(s);
        if let Some(tree) = s.strip_prefix("use ") {
            out.extend(expand(tree).iter().filter_map(|p| absolute(p)));
        }
    }
    let mut rest = code.as_str();
    while let Some(at) = rest.find("crate::") {
        let tail = &rest[at..];
        let end = tail
            .find(|c: char| !(c.is_alphanumeric() || c == '_' || c == ':'))
            .unwrap_or(tail.len());
        if let Some(p) = absolute(&tail[..end]) {
            out.push(p);
        }
        rest = &tail[end..];
    }
    out
}

fn module_named(path: &str, modules: &BTreeMap<Module, String>) -> Option<Module> {
    let mut p = path.trim_end_matches("::").to_string();
    loop {
        if modules.contains_key(&p) {
            return Some(p);
        }
        match p.rsplit_once("::") {
            Some((head, _)) => p = head.to_string(),
            None => return None,
        }
    }
}

fn is_ancestor(a: &str, of: &str) -> bool {
    a.is_empty() || of.starts_with(&format!("{a}::"))
}

/// The circles among `src`'s modules.
fn circles(src: &Path) -> Vec<Vec<Module>> {
    let modules = modules_of(src);
    let mut edges: BTreeMap<Module, BTreeSet<Module>> = BTreeMap::new();
    for (m, text) in &modules {
        for r in references(m, text) {
            if let Some(t) = module_named(&r, &modules)
                && t != *m
                && !is_ancestor(&t, m)
            {
                edges.entry(m.clone()).or_default().insert(t);
            }
        }
    }
    let mut found = Vec::new();
    for start in modules.keys() {
        // Depth-first from each module: a path back to it is a circle.
        let mut stack = vec![(start.clone(), vec![start.clone()])];
        let mut seen = BTreeSet::new();
        while let Some((m, path)) = stack.pop() {
            for next in edges.get(&m).into_iter().flatten() {
                if next == start {
                    let mut c = path.clone();
                    c.push(start.clone());
                    found.push(c);
                } else if seen.insert(next.clone()) {
                    let mut p = path.clone();
                    p.push(next.clone());
                    stack.push((next.clone(), p));
                }
            }
        }
    }
    found
}

#[test]
fn use_trees_expand_to_every_path() {
    assert_eq!(
        expand("crate::{a::{b, c::{self, D}}, e}"),
        ["crate::a::b", "crate::a::c", "crate::a::c::D", "crate::e"]
    );
}

#[test]
fn a_circle_is_found() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("lib.rs"), "mod a; mod b;").unwrap();
    std::fs::write(dir.path().join("a.rs"), "use crate::b::X;").unwrap();
    std::fs::write(dir.path().join("b.rs"), "use crate::{a::{Y}};").unwrap();
    assert_eq!(circles(dir.path()), [["a", "b", "a"], ["b", "a", "b"]]);
}

#[test]
fn no_crate_has_an_import_circle() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    for krate in ["protocol", "keyserver", "local-client"] {
        let c = circles(&root.join(krate).join("src"));
        assert!(c.is_empty(), "{krate} has import circles: {c:?}");
    }
}
