//! The `tokenvisor` binary the suite's daemon tests and benchmark programs start: this
//! workspace's, in the target directory and profile the caller was built in.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;
use std::time::SystemTime;

/// The newest modification time of the sources the `tokenvisor` binary is built from (every
/// `.rs` and `Cargo.toml` under `crates/`, the workspace's `Cargo.toml` and `Cargo.lock`).
fn newest_source(root: &Path) -> SystemTime {
    fn walk(dir: &Path, newest: &mut SystemTime) {
        let Ok(entries) = std::fs::read_dir(dir) else {
            return;
        };
        for e in entries.flatten() {
            let p = e.path();
            if p.is_dir() {
                walk(&p, newest);
            } else if p.extension().is_some_and(|x| x == "rs" || x == "toml")
                && let Ok(t) = e.metadata().and_then(|m| m.modified())
            {
                *newest = (*newest).max(t);
            }
        }
    }
    let mut newest = SystemTime::UNIX_EPOCH;
    walk(&root.join("crates"), &mut newest);
    for f in ["Cargo.toml", "Cargo.lock"] {
        if let Ok(t) = std::fs::metadata(root.join(f)).and_then(|m| m.modified()) {
            newest = newest.max(t);
        }
    }
    newest
}

/// The `tokenvisor` binary of this workspace, in the target directory and profile this test
/// was built in. `$REAL_TOKENVISOR_BIN` names one explicitly. Otherwise a binary newer than
/// every source it is built from is used as it is (the workspace's test command builds it);
/// if there is none, `cargo build -p tokenvisor-cli --bin tokenvisor` builds it, once.
///
/// (Building it unconditionally would cost a partial rebuild on every run: cargo resolves the
/// features of shared dependencies differently for `-p tokenvisor-cli` and for this package,
/// and the two builds overwrite each other's artifacts.)
pub fn tokenvisor_bin() -> PathBuf {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| locate_or_build("REAL_TOKENVISOR_BIN", "tokenvisor", &[]))
        .clone()
}

/// The `tokenvisor` binary built with cluster mode (`-p tokenvisor-cli --features cluster`),
/// kept as `tokenvisor-cluster` next to [`tokenvisor_bin`]'s (a plain build overwrites
/// `tokenvisor`). `$REAL_TOKENVISOR_CLUSTER_BIN` names one explicitly. Built once when it is
/// missing or older than a source.
pub fn tokenvisor_cluster_bin() -> PathBuf {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| {
        locate_or_build(
            "REAL_TOKENVISOR_CLUSTER_BIN",
            "tokenvisor-cluster",
            &["--features", "cluster"],
        )
    })
    .clone()
}

/// `$<var>`'s binary when set; else `<profile dir>/<kept>` when it is newer than every
/// source; else `cargo build -p tokenvisor-cli <features> --bin tokenvisor` in this test's
/// target directory and profile, the result kept as `<kept>`.
fn locate_or_build(var: &str, kept: &str, features: &[&str]) -> PathBuf {
    if let Some(p) = std::env::var_os(var) {
        let p = PathBuf::from(p);
        assert!(p.is_file(), "${var}: {} is not a file", p.display());
        return p;
    }
    let exe = std::env::current_exe().unwrap_or_else(|e| panic!("current_exe: {e}"));
    // <target>/<profile>/deps/real-<hash>
    let unexpected = || panic!("unexpected test path {}", exe.display());
    let profile_dir = (exe.parent().and_then(Path::parent))
        .unwrap_or_else(unexpected)
        .to_owned();
    let target_dir = profile_dir.parent().unwrap_or_else(unexpected).to_owned();
    let kept = profile_dir.join(kept);
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let built = std::fs::metadata(&kept).and_then(|m| m.modified()).ok();
    if built.is_some_and(|t| t > newest_source(&root)) {
        return kept;
    }
    let profile = (profile_dir.file_name().and_then(|n| n.to_str()))
        .unwrap_or("debug")
        .to_owned();
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| env!("CARGO").into());
    let mut cmd = Command::new(cargo);
    cmd.args(["build", "--quiet", "-p", "tokenvisor-cli"])
        .args(features)
        .args(["--bin", "tokenvisor", "--target-dir"])
        .arg(&target_dir)
        .current_dir(&root);
    match profile.as_str() {
        "debug" => {}
        "release" => {
            cmd.arg("--release");
        }
        other => {
            cmd.args(["--profile", other]);
        }
    }
    let what = format!(
        "cargo build -p tokenvisor-cli {} --bin tokenvisor",
        features.join(" ")
    );
    let st = (cmd.status()).unwrap_or_else(|e| panic!("cannot run {what}: {e}"));
    assert!(st.success(), "{what} failed");
    let bin = profile_dir.join("tokenvisor");
    assert!(bin.is_file(), "{} was not built", bin.display());
    if bin != kept {
        // Copied under a name of this process's, then renamed over `kept`: tests in other
        // processes may be running the `kept` of a build before ("text file busy" when it
        // is written in place), and may be copying it too.
        let name = kept.file_name().unwrap_or_default().to_string_lossy();
        let part = profile_dir.join(format!(".{name}.{}", std::process::id()));
        std::fs::copy(&bin, &part).unwrap_or_else(|e| panic!("copy to {}: {e}", part.display()));
        std::fs::rename(&part, &kept)
            .unwrap_or_else(|e| panic!("rename to {}: {e}", kept.display()));
    }
    kept
}
