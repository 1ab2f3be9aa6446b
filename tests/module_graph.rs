//! The relay's top-level modules import each other without loops: the layers stay layers.
//!
//! Reads `src/`, takes every `crate::MODULE` path outside comments as an edge from the file's
//! top-level module to `MODULE`, and fails naming a cycle and the lines that make it. (`ids`,
//! `wire` and `e2e` are `relaybox-core`'s, re-exported; they import nothing of the relay.)

#![allow(clippy::unwrap_used)]

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// Top-level module → imported top-level module → where (file:line).
type Graph = BTreeMap<String, BTreeMap<String, Vec<String>>>;

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

fn module_of(src: &Path, file: &Path) -> String {
    let first = file.strip_prefix(src).unwrap().components().next().unwrap();
    let name = first.as_os_str().to_str().unwrap();
    name.trim_end_matches(".rs").to_owned()
}

fn graph(src: &Path) -> Graph {
    let mut files = Vec::new();
    rust_files(src, &mut files);
    let modules: BTreeSet<String> = files
        .iter()
        .map(|f| module_of(src, f))
        .filter(|m| !["lib", "main"].contains(&m.as_str()))
        .collect();
    let mut g = Graph::new();
    for file in &files {
        let from = module_of(src, file);
        if !modules.contains(&from) {
            continue;
        }
        let text = std::fs::read_to_string(file).unwrap();
        for (no, line) in text.lines().enumerate() {
            if line.trim_start().starts_with("//") {
                continue;
            }
            for (at, _) in line.match_indices("crate::") {
                let rest = &line[at + "crate::".len()..];
                let to: String = rest
                    .chars()
                    .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                    .collect();
                if to != from && modules.contains(&to) {
                    let place = format!("{}:{}", file.strip_prefix(src).unwrap().display(), no + 1);
                    g.entry(from.clone())
                        .or_default()
                        .entry(to)
                        .or_default()
                        .push(place);
                }
            }
        }
    }
    g
}

/// A cycle through `start`, if any: the modules in order.
fn cycle_from(g: &Graph, start: &str) -> Option<Vec<String>> {
    fn walk(
        g: &Graph,
        at: &str,
        start: &str,
        path: &mut Vec<String>,
        seen: &mut BTreeSet<String>,
    ) -> bool {
        for next in g.get(at).map(|m| m.keys()).into_iter().flatten() {
            if next == start {
                return true;
            }
            if seen.insert(next.clone()) {
                path.push(next.clone());
                if walk(g, next, start, path, seen) {
                    return true;
                }
                path.pop();
            }
        }
        false
    }
    let mut path = vec![start.to_owned()];
    let mut seen = BTreeSet::new();
    walk(g, start, start, &mut path, &mut seen).then_some(path)
}

#[test]
fn the_top_level_modules_import_each_other_without_a_loop() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let g = graph(&src);
    // The scan itself works: the wiring imports the layers below it.
    assert!(g["app"].contains_key("store") && g["edge"].contains_key("actors"));
    for module in g.keys() {
        if let Some(cycle) = cycle_from(&g, module) {
            let mut edges = Vec::new();
            for (i, from) in cycle.iter().enumerate() {
                let to = &cycle[(i + 1) % cycle.len()];
                edges.push(format!("{from} -> {to} ({})", g[from][to].join(", ")));
            }
            panic!(
                "import loop {} -> {module}:\n  {}\nMove what the lower module needs down (see the crate map in lib.rs).",
                cycle.join(" -> "),
                edges.join("\n  ")
            );
        }
    }
}

#[test]
fn the_check_finds_a_loop_when_there_is_one() {
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path();
    std::fs::create_dir(src.join("store")).unwrap();
    std::fs::write(src.join("store/mod.rs"), "use crate::edge::RelayCtx;\n").unwrap();
    std::fs::write(
        src.join("edge.rs"),
        "// crate::app in a comment is no edge\nuse crate::store::Store;\n",
    )
    .unwrap();
    std::fs::write(src.join("app.rs"), "use crate::edge::X;\n").unwrap();
    let g = graph(src);
    assert_eq!(
        cycle_from(&g, "store"),
        Some(vec!["store".to_owned(), "edge".to_owned()])
    );
    assert_eq!(cycle_from(&g, "app"), None);
}
