//! A crate's module graph, read from its sources, and cycles in it.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// The module graph of the crate whose sources are in `src`: each top-level module (a
/// `name.rs` or a `name/` directory, `lib.rs` aside) and the other top-level modules its
/// non-test files name as `crate::…`.
///
/// # Panics
/// When `src` or a file in it cannot be read (a test helper: the test fails).
pub fn module_graph(src: &Path) -> BTreeMap<String, BTreeSet<String>> {
    let mods = modules(src);
    let known: BTreeSet<String> = mods.keys().cloned().collect();
    mods.iter()
        .map(|(name, files)| {
            let mut deps = BTreeSet::new();
            for f in files {
                let text = std::fs::read_to_string(f).expect("a source file is readable");
                deps.extend(uses(&text, &known));
            }
            deps.remove(name);
            (name.clone(), deps)
        })
        .collect()
}

/// The top-level modules and the non-test files of each.
fn modules(src: &Path) -> BTreeMap<String, Vec<PathBuf>> {
    let mut out: BTreeMap<String, Vec<PathBuf>> = BTreeMap::new();
    for entry in std::fs::read_dir(src).expect("src/ is readable") {
        let path = entry.expect("a directory entry").path();
        let stem = path
            .file_stem()
            .and_then(|s| s.to_str())
            .expect("a UTF-8 name")
            .to_owned();
        if path.is_file() && path.extension().is_some_and(|e| e == "rs") && stem != "lib" {
            out.entry(stem.clone()).or_default().push(path);
        } else if path.is_dir() {
            for sub in std::fs::read_dir(&path).expect("a module directory is readable") {
                let sub = sub.expect("a directory entry").path();
                let is_test = sub.file_stem().is_some_and(|s| s == "tests");
                if sub.extension().is_some_and(|e| e == "rs") && !is_test {
                    out.entry(stem.clone()).or_default().push(sub);
                }
            }
        }
    }
    out
}

/// The modules a source names as `crate::name` (or `crate::{a, b::c}`), outside `//`
/// comments and before its `#[cfg(test)]` section.
pub fn uses(source: &str, known: &BTreeSet<String>) -> BTreeSet<String> {
    let mut found = BTreeSet::new();
    for line in source.lines() {
        if line.trim_start().starts_with("#[cfg(test)]") {
            break;
        }
        let code = line.split("//").next().unwrap_or("");
        let mut rest = code;
        while let Some(i) = rest.find("crate::") {
            rest = &rest[i + "crate::".len()..];
            let names: Vec<&str> = match rest.strip_prefix('{') {
                Some(group) => group.split('}').next().unwrap_or("").split(',').collect(),
                None => vec![rest],
            };
            for n in names {
                let ident: String = n
                    .trim()
                    .chars()
                    .take_while(|c| c.is_alphanumeric() || *c == '_')
                    .collect();
                if known.contains(&ident) {
                    found.insert(ident);
                }
            }
        }
    }
    found
}

/// A cycle in `graph`, as the path that closes it, if there is one.
pub fn find_cycle(graph: &BTreeMap<String, BTreeSet<String>>) -> Option<Vec<String>> {
    fn visit(
        node: &str,
        graph: &BTreeMap<String, BTreeSet<String>>,
        path: &mut Vec<String>,
        done: &mut BTreeSet<String>,
    ) -> Option<Vec<String>> {
        if let Some(at) = path.iter().position(|n| n == node) {
            let mut cycle = path[at..].to_vec();
            cycle.push(node.to_owned());
            return Some(cycle);
        }
        if done.contains(node) {
            return None;
        }
        path.push(node.to_owned());
        for next in graph.get(node).into_iter().flatten() {
            if let Some(c) = visit(next, graph, path, done) {
                return Some(c);
            }
        }
        path.pop();
        done.insert(node.to_owned());
        None
    }
    let mut done = BTreeSet::new();
    graph
        .keys()
        .find_map(|n| visit(n, graph, &mut Vec::new(), &mut done))
}

/// The module graph of the crate whose sources are in `src` ([`module_graph`]), after
/// checking that it has more than `min_modules` modules (the reader found the crate) and no
/// cycle: the check every crate's layering test starts with.
///
/// # Panics
/// When the graph is that small, or has a cycle (named in the message).
pub fn assert_layered(src: &Path, min_modules: usize) -> BTreeMap<String, BTreeSet<String>> {
    let graph = module_graph(src);
    assert!(
        graph.len() > min_modules,
        "modules found: {:?}",
        graph.keys()
    );
    if let Some(cycle) = find_cycle(&graph) {
        panic!("module cycle: {}", cycle.join(" → "));
    }
    graph
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every crate of the workspace, the real-components suite's included: no module uses
    /// one that uses it back. (The core's and the runtime's own tests also pin edges.)
    #[test]
    fn every_crate_of_the_workspace_is_layered() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
        let mut srcs: Vec<PathBuf> = std::fs::read_dir(root.join("crates"))
            .expect("crates/ is readable")
            .map(|e| e.expect("a directory entry").path().join("src"))
            .collect();
        srcs.push(root.join("real/tests-rs/src"));
        assert!(srcs.len() >= 9, "crates found: {srcs:?}");
        for src in &srcs {
            let graph = module_graph(src);
            assert!(graph.len() > 1, "modules in {}: {graph:?}", src.display());
            if let Some(cycle) = find_cycle(&graph) {
                panic!("{}: module cycle: {}", src.display(), cycle.join(" → "));
            }
        }
    }

    #[test]
    fn the_scanner_sees_plain_grouped_and_nested_paths() {
        let known: BTreeSet<String> = ["a", "b", "c", "d"].map(String::from).into();
        let src = "use crate::a::X;\nuse crate::{b, c::Y};\n// crate::d in a comment\nfn f() { crate::c::g() }\n#[cfg(test)]\nuse crate::d;\n";
        assert_eq!(uses(src, &known), ["a", "b", "c"].map(String::from).into());
        let cyclic: BTreeMap<String, BTreeSet<String>> = [
            ("a".to_owned(), ["b".to_owned()].into()),
            ("b".to_owned(), ["a".to_owned()].into()),
        ]
        .into();
        assert_eq!(
            find_cycle(&cyclic),
            Some(vec!["a".into(), "b".into(), "a".into()])
        );
    }
}
