//! The runtime's modules form layers: no two modules import each other, directly or through
//! others, except the four that make up the contract the macros implement (`actor`, `context`,
//! `handle`, `mailbox`: the traits name the context and handle types, which are generic over
//! the traits). ARCHITECTURE.md lists the layers; `scripts/module-cycles` prints the graph.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// The one cycle allowed: the contract between generated code and the runtime.
const CONTRACT: &[&str] = &["actor", "context", "handle", "mailbox"];

/// Modules that are not part of the runtime's structure (a test-only fuzz target, the root).
const IGNORED: &[&str] = &["lib", "codec_fuzz"];

fn rust_files(dir: &Path, found: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).expect("read runtime/src") {
        let path = entry.expect("dir entry").path();
        if path.is_dir() {
            rust_files(&path, found);
        } else if path.extension().is_some_and(|e| e == "rs") {
            found.push(path);
        }
    }
}

/// The top-level module a file belongs to: `foo.rs` and `foo/bar.rs` are both `foo`.
fn module_of(root: &Path, file: &Path) -> String {
    let first = file
        .strip_prefix(root)
        .expect("under root")
        .components()
        .next()
        .expect("a component");
    let name = first.as_os_str().to_string_lossy();
    name.strip_suffix(".rs").unwrap_or(&name).to_string()
}

/// Every `crate::name` a file mentions outside its unit tests, and every `name::` inside a
/// `use crate::{...}` group.
fn mentions(text: &str) -> BTreeSet<String> {
    let text = text.split("#[cfg(test)]\nmod tests").next().unwrap_or(text);
    let ident = |s: &str| -> String {
        s.chars()
            .take_while(|c| c.is_ascii_lowercase() || *c == '_' || c.is_ascii_digit())
            .collect()
    };
    let mut found = BTreeSet::new();
    for (at, _) in text.match_indices("crate::") {
        let rest = &text[at + "crate::".len()..];
        if let Some(group) = rest.strip_prefix('{') {
            let group = &group[..group.find('}').unwrap_or(group.len())];
            for item in group.split(',') {
                let item = item.trim();
                if let Some((module, _)) = item.split_once("::") {
                    found.insert(ident(module));
                }
            }
        } else {
            found.insert(ident(rest));
        }
    }
    found.retain(|m| !m.is_empty());
    found
}

fn import_graph() -> BTreeMap<String, BTreeSet<String>> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../runtime/src");
    let mut files = Vec::new();
    rust_files(&root, &mut files);
    let mut graph: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for file in &files {
        let module = module_of(&root, file);
        if IGNORED.contains(&module.as_str()) {
            continue;
        }
        let text = std::fs::read_to_string(file).expect("read a source file");
        let deps = graph.entry(module.clone()).or_default();
        deps.extend(mentions(&text).into_iter().filter(|d| *d != module));
    }
    let modules: BTreeSet<String> = graph.keys().cloned().collect();
    for deps in graph.values_mut() {
        deps.retain(|d| modules.contains(d));
    }
    graph
}

/// Modules reachable from `start` (itself excluded unless on a cycle).
fn reachable(graph: &BTreeMap<String, BTreeSet<String>>, start: &str) -> BTreeSet<String> {
    let mut seen = BTreeSet::new();
    let mut stack: Vec<&String> = graph[start].iter().collect();
    while let Some(next) = stack.pop() {
        if seen.insert(next.clone()) {
            stack.extend(graph[next].iter());
        }
    }
    seen
}

#[test]
fn the_only_import_cycle_is_the_macro_contract() {
    let graph = import_graph();
    assert!(
        graph.len() > 20 && graph.contains_key("directory") && graph.contains_key("store"),
        "the scan found too few modules: {:?}",
        graph.keys()
    );
    let mut cycles: BTreeSet<BTreeSet<String>> = BTreeSet::new();
    for module in graph.keys() {
        let from = reachable(&graph, module);
        let cycle: BTreeSet<String> = from
            .iter()
            .filter(|other| reachable(&graph, other).contains(module))
            .cloned()
            .collect();
        if !cycle.is_empty() {
            cycles.insert(cycle);
        }
    }
    let contract: BTreeSet<String> = CONTRACT.iter().map(|s| s.to_string()).collect();
    let unexpected: Vec<_> = cycles.iter().filter(|c| **c != contract).collect();
    assert!(
        unexpected.is_empty(),
        "modules importing each other in a circle: {unexpected:?}\nthe graph: {graph:#?}"
    );
}

#[test]
fn the_lower_layers_do_not_reach_the_runtime() {
    let graph = import_graph();
    // Storage and its formats know nothing of actors, turns or the runtime.
    for low in ["codec", "store", "commit", "placement", "version", "error"] {
        let reached = reachable(&graph, low);
        for high in [
            "runtime",
            "builder",
            "shared",
            "directory",
            "activation",
            "actor",
        ] {
            assert!(
                !reached.contains(high),
                "`{low}` reaches `{high}`: {reached:?}"
            );
        }
    }
    // The shared parts do not know the contract or the turns.
    let reached = reachable(&graph, "shared");
    for high in CONTRACT
        .iter()
        .chain(&["directory", "activation", "runtime", "shard"])
    {
        assert!(
            !reached.contains(*high),
            "`shared` reaches `{high}`: {reached:?}"
        );
    }
}
