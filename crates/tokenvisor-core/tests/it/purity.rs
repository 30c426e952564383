//! The core is sans-IO: no async runtime, no HTTP, no filesystem, no clock
//! reads, no threads. This test reads the crate's own manifest and sources and fails naming
//! the dependency, or the file and line, that breaks the rule.

use std::path::{Path, PathBuf};

/// Crates that would bring I/O, a runtime or the filesystem into the core.
const FORBIDDEN_DEPS: &[&str] = &[
    "tokio",
    "reqwest",
    "hyper",
    "ractor",
    "axum",
    "mio",
    "async-std",
    "tempfile",
    "atomic-write-file",
];

/// Source patterns that mean I/O, a clock read or a thread.
const FORBIDDEN_CODE: &[&str] = &[
    "std::fs",
    "std::net",
    "SystemTime::now",
    "Instant::now",
    "std::thread",
    "tokio",
];

fn crate_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// The forbidden crates named in a manifest's `[dependencies]` (and target-specific
/// `[target.*.dependencies]`), by key or by `package = "…"` rename.
fn forbidden_deps(manifest: &str) -> Vec<String> {
    let doc: toml::Table = manifest.parse().expect("Cargo.toml parses");
    let mut tables: Vec<&toml::Table> = Vec::new();
    if let Some(t) = doc.get("dependencies").and_then(toml::Value::as_table) {
        tables.push(t);
    }
    if let Some(targets) = doc.get("target").and_then(toml::Value::as_table) {
        for target in targets.values() {
            if let Some(t) = target.get("dependencies").and_then(toml::Value::as_table) {
                tables.push(t);
            }
        }
    }
    let mut found = Vec::new();
    for deps in tables {
        for (key, spec) in deps {
            let package = spec
                .get("package")
                .and_then(toml::Value::as_str)
                .unwrap_or(key);
            for name in [key.as_str(), package] {
                let normalised = name.replace('_', "-");
                if FORBIDDEN_DEPS.contains(&normalised.as_str())
                    && !found.contains(&name.to_owned())
                {
                    found.push(name.to_owned());
                }
            }
        }
    }
    found
}

/// Every forbidden pattern in `source` outside comments, as `(line number, pattern)`.
fn forbidden_code(source: &str) -> Vec<(usize, &'static str)> {
    let mut hits = Vec::new();
    let mut in_block_comment = false;
    for (i, line) in source.lines().enumerate() {
        let code = strip_comments(line, &mut in_block_comment);
        for pat in FORBIDDEN_CODE {
            if code.contains(pat) {
                hits.push((i + 1, *pat));
            }
        }
    }
    hits
}

/// The code part of a line: drops `// …` and `/* … */` (doc comments included), so that
/// prose such as "no tokio here" does not count. String literals are not parsed: a `//`
/// inside a string hides the rest of that line, which errs on the side of a miss only for
/// code written after a URL on the same line.
fn strip_comments(line: &str, in_block: &mut bool) -> String {
    let mut out = String::new();
    let mut rest = line;
    loop {
        if *in_block {
            match rest.find("*/") {
                Some(end) => {
                    rest = &rest[end + 2..];
                    *in_block = false;
                }
                None => return out,
            }
        }
        let line_comment = rest.find("//");
        let block = rest.find("/*");
        match (line_comment, block) {
            (Some(l), Some(b)) if b < l => {
                out.push_str(&rest[..b]);
                rest = &rest[b + 2..];
                *in_block = true;
            }
            (None, Some(b)) => {
                out.push_str(&rest[..b]);
                rest = &rest[b + 2..];
                *in_block = true;
            }
            (Some(l), Some(_) | None) => {
                out.push_str(&rest[..l]);
                return out;
            }
            (None, None) => {
                out.push_str(rest);
                return out;
            }
        }
    }
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    let mut entries: Vec<_> = std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.unwrap().path())
        .collect();
    entries.sort();
    for path in entries {
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|x| x == "rs") {
            out.push(path);
        }
    }
}

#[test]
fn the_manifest_has_no_io_dependencies() {
    let path = crate_dir().join("Cargo.toml");
    let manifest = std::fs::read_to_string(&path).unwrap();
    let found = forbidden_deps(&manifest);
    assert!(
        found.is_empty(),
        "{}: [dependencies] must stay sans-IO, found {found:?}",
        path.display()
    );
}

#[test]
fn the_sources_do_no_io_read_no_clock_and_spawn_no_thread() {
    let src = crate_dir().join("src");
    let mut files = Vec::new();
    rust_files(&src, &mut files);
    assert!(files.len() >= 8, "found only {files:?}");
    let mut breaches = Vec::new();
    for file in &files {
        let text = std::fs::read_to_string(file).unwrap();
        for (line, pat) in forbidden_code(&text) {
            breaches.push(format!("{}:{line}: `{pat}`", file.display()));
        }
    }
    assert!(
        breaches.is_empty(),
        "the core must stay sans-IO:\n{}",
        breaches.join("\n")
    );
}

// The checkers themselves catch what they are meant to catch.

#[test]
fn the_dependency_check_catches_forbidden_crates() {
    let manifest = r#"
        [package]
        name = "x"

        [dependencies]
        serde.workspace = true
        tokio = { workspace = true }
        http-client = { package = "reqwest", version = "0.13" }
        async_std = "1"

        [dev-dependencies]
        tempfile = "3"

        [target.'cfg(unix)'.dependencies]
        mio = "1"
    "#;
    let mut found = forbidden_deps(manifest);
    found.sort();
    assert_eq!(found, ["async_std", "mio", "reqwest", "tokio"]);
}

#[test]
fn the_source_check_catches_io_and_ignores_comments() {
    let source = "\
//! No tokio, no std::fs here.
use std::fs::File;
let t = std::time::SystemTime::now(); // a clock read
/* std::net in a block
   comment std::thread */ let i = Instant::now();
let ok = 1; // Instant::now() in a comment
std::thread::spawn(|| ());
let r = tokio::spawn(f);
";
    let hits = forbidden_code(source);
    assert_eq!(
        hits,
        [
            (2, "std::fs"),
            (3, "SystemTime::now"),
            (5, "Instant::now"),
            (7, "std::thread"),
            (8, "tokio"),
        ]
    );
}
