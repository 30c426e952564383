//! The configuration crate's place and shape: it depends on `tokenvisor-core` and nothing
//! else of ours (above the core, below the runtime), on no async runtime or HTTP stack, and
//! its schema is serde-derived: no hand-written `Deserializer` or `Visitor`. Fails naming
//! the dependency, or the file and line, that breaks the rule.

use std::path::{Path, PathBuf};

/// Crates that would put the configuration beside or above the runtime.
const FORBIDDEN_DEPS: &[&str] = &[
    "tokenvisor",
    "tokenvisor-cli",
    "tokenvisor-idp",
    "tokio",
    "reqwest",
    "ractor",
    "axum",
    "hyper",
];

/// Source patterns of a hand-written deserializer.
const FORBIDDEN_CODE: &[&str] = &[
    "impl<'de> Deserialize<'de> for",
    "impl<'de> de::Deserializer<'de> for",
    "impl<'de> serde::Deserializer<'de> for",
    "Visitor<'de> for",
    "Visitor<'_> for",
    "forward_to_deserialize_any",
];

fn crate_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

#[test]
fn depends_on_the_core_only_of_ours_and_on_no_runtime() {
    let manifest = std::fs::read_to_string(crate_dir().join("Cargo.toml")).expect("manifest");
    let doc: toml::Table = manifest.parse().expect("Cargo.toml parses");
    let deps = doc
        .get("dependencies")
        .and_then(toml::Value::as_table)
        .expect("[dependencies]");
    let bad: Vec<&String> = deps
        .keys()
        .filter(|k| FORBIDDEN_DEPS.contains(&k.as_str()))
        .collect();
    assert!(bad.is_empty(), "tokenvisor-config depends on {bad:?}");
    assert!(
        deps.contains_key("tokenvisor-core"),
        "expected tokenvisor-core"
    );
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).expect("read_dir") {
        let path = entry.expect("entry").path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

#[test]
fn the_schema_is_derived_not_hand_written() {
    let mut files = Vec::new();
    rust_files(&crate_dir().join("src"), &mut files);
    assert!(files.len() > 3, "sources not found");
    let mut found = Vec::new();
    for file in files {
        let text = std::fs::read_to_string(&file).expect("read");
        for (i, line) in text.lines().enumerate() {
            if let Some(p) = FORBIDDEN_CODE.iter().find(|p| line.contains(**p)) {
                found.push(format!("{}:{}: {p}", file.display(), i + 1));
            }
        }
    }
    assert!(
        found.is_empty(),
        "hand-written deserialization:\n{}",
        found.join("\n")
    );
}
