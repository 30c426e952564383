//! The credential store and secret files, on a real filesystem (a temporary directory).

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use tokenvisor::Grant;
use tokenvisor::config::secrets::SecretError;
use tokenvisor::credentials::{
    CredentialError, CredentialStore, NewCredentials, RotateOutcome, SECRET_FILE_LIMIT,
    read_secret_env, read_secret_file, write_secret_file,
};
use tokenvisor::spec::{GrantSpec, WorkloadSpec};
use tokenvisor_core::{Secret, WorkloadName};

const CLIENT_SECRET: &str = "client-secret-value";

fn spec(grant: GrantSpec) -> WorkloadSpec {
    WorkloadSpec::new(
        WorkloadName::new("github-mcp").expect("valid name"),
        "http://127.0.0.1:9/token".parse().unwrap(),
        "app",
        grant,
    )
    .with_client_secret(CLIENT_SECRET)
}

/// A refresh-token workload whose token is kept in `dir/rt` (written with mode 0644).
fn rt_store(dir: &Path, token: &str) -> (Arc<CredentialStore>, PathBuf) {
    let path = dir.join("rt");
    std::fs::write(&path, format!("{token}\n")).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
    let store = CredentialStore::new(&spec(GrantSpec::RefreshToken {
        token: read_secret_file(&path).unwrap(),
        file: Some(path.clone()),
    }));
    (store, path)
}

fn current_rt(store: &CredentialStore) -> String {
    match store.snapshot().grant {
        Grant::RefreshToken(token) => token.expose().to_owned(),
        Grant::ClientCredentials | Grant::JwtBearer(_) | Grant::TokenExchange(_) => {
            panic!("not a refresh-token grant")
        }
    }
}

fn mode(path: &Path) -> u32 {
    std::fs::metadata(path).unwrap().permissions().mode() & 0o777
}

fn file_names(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

#[tokio::test]
async fn a_rotated_token_is_written_back_atomically_with_mode_0600() {
    let dir = tempfile::tempdir().unwrap();
    let (store, path) = rt_store(dir.path(), "rt-old");
    let snap = store.snapshot();
    assert_eq!(snap.generation, 0);
    assert_eq!(snap.client_secret, Some(Secret::from(CLIENT_SECRET)));
    assert_eq!(current_rt(&store), "rt-old");

    let outcome = store
        .store_rotated(snap.generation, Secret::from("rt-new"))
        .await;
    assert_eq!(outcome, RotateOutcome::Stored);
    assert_eq!(std::fs::read_to_string(&path).unwrap(), "rt-new");
    assert_eq!(mode(&path), 0o600);
    assert_eq!(current_rt(&store), "rt-new");
    assert_eq!(store.generation(), 1);
    assert_eq!(file_names(dir.path()), vec!["rt"], "no temporary file left");
    assert_eq!(read_secret_file(&path).unwrap().expose(), "rt-new");
}

#[tokio::test]
async fn the_same_token_again_changes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let (store, _path) = rt_store(dir.path(), "rt-same");
    let outcome = store.store_rotated(0, Secret::from("rt-same")).await;
    assert_eq!(outcome, RotateOutcome::Stored);
    assert_eq!(store.generation(), 0);
}

#[tokio::test]
async fn a_stale_generation_is_not_written() {
    let dir = tempfile::tempdir().unwrap();
    let (store, path) = rt_store(dir.path(), "rt-old");
    let attempt = store.snapshot();
    let generation = store
        .replace(NewCredentials {
            refresh_token: Some(Secret::from("rt-operator")),
            client_secret: None,
        })
        .await
        .unwrap();
    assert_eq!(generation, 1);

    let outcome = store
        .store_rotated(attempt.generation, Secret::from("rt-from-old-attempt"))
        .await;
    assert_eq!(outcome, RotateOutcome::Stale);
    assert_eq!(std::fs::read_to_string(&path).unwrap(), "rt-operator");
    assert_eq!(current_rt(&store), "rt-operator");
    assert_eq!(store.generation(), 1);
}

/// Grant loss: an operator's new client secret (and nothing else) while a refresh was in
/// flight used to drop the token that refresh rotated to; the provider had consumed the old
/// one, so the next refresh presented a dead token (reuse detection revokes the grant).
#[tokio::test]
async fn a_new_client_secret_keeps_the_rotated_refresh_token() {
    let dir = tempfile::tempdir().unwrap();
    let (store, path) = rt_store(dir.path(), "rt-old");
    let attempt = store.snapshot();
    store
        .replace(NewCredentials {
            refresh_token: None,
            client_secret: Some(Secret::from("new-client-secret")),
        })
        .await
        .unwrap();
    let outcome = store
        .store_rotated(attempt.generation, Secret::from("rt-rotated"))
        .await;
    assert_eq!(outcome, RotateOutcome::Stored);
    assert_eq!(std::fs::read_to_string(&path).unwrap(), "rt-rotated");
    assert_eq!(current_rt(&store), "rt-rotated");
    let snap = store.snapshot();
    assert_eq!(snap.client_secret, Some(Secret::from("new-client-secret")));
}

/// After a final answer an attempt asks for the durable refresh token: an edit of the file
/// since the snapshot is adopted and returned.
#[tokio::test]
async fn the_durable_refresh_token_follows_an_edited_file() {
    let dir = tempfile::tempdir().unwrap();
    let (store, path) = rt_store(dir.path(), "rt-old");
    assert_eq!(
        store.current_durable_refresh_token().await,
        Some(Secret::from("rt-old"))
    );
    std::fs::write(&path, "rt-elsewhere\n").unwrap();
    assert_eq!(
        store.current_durable_refresh_token().await,
        Some(Secret::from("rt-elsewhere"))
    );
    assert_eq!(current_rt(&store), "rt-elsewhere");
}

#[tokio::test]
async fn replace_writes_the_refresh_token_file() {
    let dir = tempfile::tempdir().unwrap();
    let (store, path) = rt_store(dir.path(), "rt-old");
    let generation = store
        .replace(NewCredentials {
            refresh_token: Some(Secret::from("rt-operator")),
            client_secret: Some(Secret::from("new-client-secret")),
        })
        .await
        .unwrap();
    assert_eq!(generation, 1);
    assert_eq!(std::fs::read_to_string(&path).unwrap(), "rt-operator");
    assert_eq!(mode(&path), 0o600);
    let snap = store.snapshot();
    assert_eq!(snap.generation, 1);
    assert_eq!(snap.client_secret, Some(Secret::from("new-client-secret")));
    assert_eq!(snap.grant, Grant::RefreshToken(Secret::from("rt-operator")));
    // The operator's own write is not mistaken for an edit.
    assert_eq!(store.reload_from_file().await.unwrap(), None);
}

#[tokio::test]
async fn replace_without_a_file_keeps_the_token_in_memory() {
    let store = CredentialStore::new(&spec(GrantSpec::RefreshToken {
        token: Secret::from("rt-inline"),
        file: None,
    }));
    assert!(!store.watches_file());
    assert_eq!(store.file_path(), None);
    let generation = store
        .replace(NewCredentials {
            refresh_token: Some(Secret::from("rt-operator")),
            client_secret: None,
        })
        .await
        .unwrap();
    assert_eq!(generation, 1);
    assert_eq!(current_rt(&store), "rt-operator");
    assert_eq!(
        store.store_rotated(1, Secret::from("rt-rotated")).await,
        RotateOutcome::Stored
    );
    assert_eq!(current_rt(&store), "rt-rotated");
    assert_eq!(store.reload_from_file().await.unwrap(), None);
}

#[tokio::test]
async fn client_credentials_workloads_take_secrets_but_no_refresh_token() {
    let store = CredentialStore::new(&spec(GrantSpec::ClientCredentials));
    assert_eq!(store.snapshot().grant, Grant::ClientCredentials);

    let err = store
        .replace(NewCredentials {
            refresh_token: Some(Secret::from("rt-wrong")),
            client_secret: None,
        })
        .await
        .unwrap_err();
    assert!(
        matches!(err, CredentialError::NotRefreshTokenGrant { .. }),
        "{err}"
    );
    assert_eq!(store.generation(), 0);

    let generation = store
        .replace(NewCredentials {
            refresh_token: None,
            client_secret: Some(Secret::from("rotated-client-secret")),
        })
        .await
        .unwrap();
    assert_eq!(generation, 1);
    let snap = store.snapshot();
    assert_eq!(snap.grant, Grant::ClientCredentials);
    assert_eq!(
        snap.client_secret,
        Some(Secret::from("rotated-client-secret"))
    );

    // A refresh token sent with a client_credentials answer is ignored.
    assert_eq!(
        store.store_rotated(1, Secret::from("rt-unasked")).await,
        RotateOutcome::Stored
    );
    assert_eq!(store.snapshot().grant, Grant::ClientCredentials);
    assert_eq!(store.generation(), 1);
}

#[tokio::test]
async fn replace_refuses_nothing_and_empty_secrets() {
    let dir = tempfile::tempdir().unwrap();
    let (store, _path) = rt_store(dir.path(), "rt-old");
    let err = store.replace(NewCredentials::default()).await.unwrap_err();
    assert!(matches!(err, CredentialError::NothingSupplied), "{err}");
    let err = store
        .replace(NewCredentials {
            refresh_token: Some(Secret::from("")),
            client_secret: None,
        })
        .await
        .unwrap_err();
    assert!(matches!(err, CredentialError::EmptySecret { .. }), "{err}");
    assert_eq!(store.generation(), 0);
}

/// The file's directory is replaced by a regular file: every write fails (even as root).
#[tokio::test]
async fn a_failed_write_keeps_the_rotated_token_in_memory() {
    let dir = tempfile::tempdir().unwrap();
    let sub = dir.path().join("sub");
    std::fs::create_dir(&sub).unwrap();
    let (store, path) = rt_store(&sub, "rt-old");
    std::fs::remove_dir_all(&sub).unwrap();
    std::fs::write(&sub, "not a directory").unwrap();

    let outcome = store
        .store_rotated(0, Secret::from("rt-rotated-secret"))
        .await;
    let RotateOutcome::MemoryOnly { error } = outcome else {
        panic!("expected MemoryOnly, got {outcome:?}");
    };
    assert!(error.contains(&path.display().to_string()), "{error}");
    assert!(!error.contains("rt-rotated-secret"), "{error}");
    assert_eq!(current_rt(&store), "rt-rotated-secret");
    assert_eq!(store.generation(), 1);

    // An operator's replacement that cannot be written is refused and changes nothing.
    let err = store
        .replace(NewCredentials {
            refresh_token: Some(Secret::from("rt-operator-secret")),
            client_secret: None,
        })
        .await
        .unwrap_err();
    assert!(matches!(err, CredentialError::Write { .. }), "{err}");
    assert!(!err.to_string().contains("rt-operator-secret"));
    assert_eq!(current_rt(&store), "rt-rotated-secret");
    assert_eq!(store.generation(), 1);

    // The unreadable file is an error for a reload, not a change.
    assert!(store.reload_from_file().await.is_err());
    assert_eq!(store.generation(), 1);
}

#[tokio::test]
async fn reload_from_file_picks_up_an_operator_edit() {
    let dir = tempfile::tempdir().unwrap();
    let (store, path) = rt_store(dir.path(), "rt-old");
    assert!(store.watches_file());
    assert_eq!(store.file_path(), Some(path.clone()));
    assert_eq!(store.reload_from_file().await.unwrap(), None, "unchanged");

    std::fs::write(&path, "rt-edited\n").unwrap();
    assert_eq!(store.reload_from_file().await.unwrap(), Some(1));
    assert_eq!(current_rt(&store), "rt-edited");
    assert_eq!(
        store.reload_from_file().await.unwrap(),
        None,
        "already loaded"
    );

    // A rotation after the edit is written and not mistaken for another edit.
    assert_eq!(
        store.store_rotated(1, Secret::from("rt-rotated")).await,
        RotateOutcome::Stored
    );
    assert_eq!(store.reload_from_file().await.unwrap(), None);
    assert_eq!(current_rt(&store), "rt-rotated");

    // An emptied file is an error and changes nothing.
    std::fs::write(&path, "\n").unwrap();
    let err = store.reload_from_file().await.unwrap_err();
    assert!(
        matches!(err, CredentialError::Secret(SecretError::EmptyFile { .. })),
        "{err}"
    );
    assert_eq!(current_rt(&store), "rt-rotated");
    assert_eq!(store.generation(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn rotations_and_replacements_never_interleave() {
    let dir = tempfile::tempdir().unwrap();
    let (store, path) = rt_store(dir.path(), "rt-0");
    for i in 0..20 {
        let generation = store.generation();
        let rotate = {
            let store = store.clone();
            tokio::spawn(async move {
                store
                    .store_rotated(generation, Secret::from(format!("rt-rotated-{i}")))
                    .await
            })
        };
        let replace = {
            let store = store.clone();
            tokio::spawn(async move {
                store
                    .replace(NewCredentials {
                        refresh_token: Some(Secret::from(format!("rt-operator-{i}"))),
                        client_secret: None,
                    })
                    .await
            })
        };
        let rotated = rotate.await.unwrap();
        replace.await.unwrap().unwrap();
        assert!(
            matches!(rotated, RotateOutcome::Stored | RotateOutcome::Stale),
            "{rotated:?}"
        );
        // Whatever the order, memory and file agree.
        assert_eq!(std::fs::read_to_string(&path).unwrap(), current_rt(&store));
    }
}

#[test]
fn secret_files_are_trimmed_and_errors_name_the_path_only() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("secret");
    std::fs::write(&path, "  s3cret value \r\n\n").unwrap();
    assert_eq!(read_secret_file(&path).unwrap().expose(), "s3cret value");

    std::fs::write(&path, " \n\t\n").unwrap();
    let err = read_secret_file(&path).unwrap_err();
    assert!(
        matches!(err, CredentialError::Secret(SecretError::EmptyFile { .. })),
        "{err}"
    );
    assert!(
        err.to_string().contains(&path.display().to_string()),
        "{err}"
    );

    std::fs::write(&path, vec![b'a'; SECRET_FILE_LIMIT + 1]).unwrap();
    let err = read_secret_file(&path).unwrap_err();
    assert!(
        matches!(err, CredentialError::Secret(SecretError::TooLarge { .. })),
        "{err}"
    );
    assert!(!err.to_string().contains("aaaa"), "{err}");

    std::fs::write(&path, [0xff, 0xfe, b'x']).unwrap();
    let err = read_secret_file(&path).unwrap_err();
    assert!(
        matches!(err, CredentialError::Secret(SecretError::NotUtf8 { .. })),
        "{err}"
    );

    let missing = dir.path().join("missing");
    let err = read_secret_file(&missing).unwrap_err();
    assert!(
        matches!(err, CredentialError::Secret(SecretError::Read { .. })),
        "{err}"
    );
    assert!(err.to_string().contains("missing"), "{err}");
}

/// Trust §4: a byte order mark, CR/LF and surrounding whitespace are trimmed and noted; a
/// control character inside the value is an error; a loose mode is noted.
#[test]
fn secret_files_trim_bom_and_crlf_note_it_and_refuse_inner_control_characters() {
    use std::os::unix::fs::PermissionsExt as _;
    use tokenvisor::credentials::read_secret_file_noted;

    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("rt");
    let mode = |m: u32| {
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(m)).unwrap();
    };
    let cases: [(&[u8], &str, &[&str]); 6] = [
        (b"tok-1\n", "tok-1", &[]),
        (b"tok-1", "tok-1", &[]),
        (
            b"\xef\xbb\xbftok-1\n",
            "tok-1",
            &["a UTF-8 byte order mark"],
        ),
        (b"tok-1\r\n", "tok-1", &["a CR/LF line ending"]),
        (b"  tok-1 \n\n", "tok-1", &["surrounding whitespace"]),
        (
            b"\xef\xbb\xbf tok-1\r\n\r\n",
            "tok-1",
            &[
                "a UTF-8 byte order mark",
                "a CR/LF line ending",
                "surrounding whitespace",
            ],
        ),
    ];
    for (bytes, want, trimmed) in cases {
        std::fs::write(&path, bytes).unwrap();
        mode(0o600);
        let (secret, notes) = read_secret_file_noted(&path).unwrap();
        assert_eq!(secret.expose(), want, "{bytes:?}");
        assert_eq!(notes.trimmed, trimmed, "{bytes:?}");
        assert_eq!(notes.readable_by_others, None);
    }

    for inner in [
        "tok\r\n-1",
        "tok\u{7}1",
        "tok\t1",
        "tok\u{0}1",
        "tok\u{85}1",
    ] {
        std::fs::write(&path, format!("{inner}\n")).unwrap();
        let err = read_secret_file_noted(&path).unwrap_err();
        assert!(
            matches!(
                err,
                CredentialError::Secret(SecretError::ControlCharacter { .. })
            ),
            "{inner:?}: {err}"
        );
        assert!(
            err.to_string().contains(&path.display().to_string()),
            "{err}"
        );
        assert!(!err.to_string().contains("tok"), "{err}");
    }

    std::fs::write(&path, "tok-1\n").unwrap();
    mode(0o640);
    let (_, notes) = read_secret_file_noted(&path).unwrap();
    assert_eq!(notes.readable_by_others, Some(0o640));
    mode(0o604);
    let (_, notes) = read_secret_file_noted(&path).unwrap();
    assert_eq!(notes.readable_by_others, Some(0o604));
    mode(0o620);
    let (_, notes) = read_secret_file_noted(&path).unwrap();
    assert_eq!(notes.readable_by_others, None);
}

#[test]
fn secret_env_vars() {
    // Tests cannot set variables (no unsafe code); use one that every environment has.
    let path = std::env::var("PATH").expect("PATH is set");
    assert_eq!(read_secret_env("PATH").unwrap().expose(), path.trim_end());
    let err = read_secret_env("TOKENVISOR_TEST_SURELY_UNSET_VARIABLE").unwrap_err();
    assert!(matches!(err, CredentialError::EnvMissing { .. }), "{err}");
    assert!(
        err.to_string()
            .contains("TOKENVISOR_TEST_SURELY_UNSET_VARIABLE")
    );
}

#[test]
fn write_secret_file_replaces_content_and_mode() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("sink.token");
    std::fs::write(&path, "old old old old").unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o666)).unwrap();
    write_secret_file(&path, &Secret::from("access-token")).unwrap();
    assert_eq!(std::fs::read_to_string(&path).unwrap(), "access-token");
    assert_eq!(mode(&path), 0o600);
    assert_eq!(file_names(dir.path()), vec!["sink.token"]);

    let err = write_secret_file(&dir.path().join("no/such/dir"), &Secret::from("x")).unwrap_err();
    assert!(matches!(err, CredentialError::Write { .. }), "{err}");
}

#[tokio::test]
async fn debug_prints_no_secret() {
    let dir = tempfile::tempdir().unwrap();
    let (store, _path) = rt_store(dir.path(), "rt-very-secret");
    let new = NewCredentials {
        refresh_token: Some(Secret::from("rt-new-secret")),
        client_secret: Some(Secret::from("cs-new-secret")),
    };
    let printed = format!("{store:?} {:?} {new:?}", store.snapshot());
    for secret in [
        "rt-very-secret",
        CLIENT_SECRET,
        "rt-new-secret",
        "cs-new-secret",
    ] {
        assert!(!printed.contains(secret), "{printed}");
    }
    assert!(printed.contains("github-mcp"), "{printed}");
}

/// A client-credentials workload whose served tokens go to `dir/out.token`.
fn sink_store(dir: &Path) -> (Arc<CredentialStore>, PathBuf) {
    let path = dir.join("out.token");
    let mut spec = spec(GrantSpec::ClientCredentials);
    spec.token_sink_file = Some(path.clone());
    (CredentialStore::new(&spec), path)
}

/// Waits (bounded, real time: the writes run on the blocking pool) until `cond` holds.
async fn wait_for(what: &str, mut cond: impl FnMut() -> bool) {
    for _ in 0..500 {
        if cond() {
            return;
        }
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    panic!("timed out waiting for: {what}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_token_sink_ends_with_the_newest_token_and_never_goes_back() {
    let dir = tempfile::tempdir().unwrap();
    let (store, path) = sink_store(dir.path());
    // Published faster than they can be written: most are replaced before their write begins.
    for i in 0..200 {
        store.write_token_sink(&Secret::from(format!("at-{i:03}")));
    }
    let newest = || std::fs::read_to_string(&path).is_ok_and(|t| t == "at-199");
    wait_for("the newest token in the sink", newest).await;
    // No write still queued or running brings an older token back.
    for _ in 0..20 {
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "at-199");
    }
    assert_eq!(mode(&path), 0o600);
    assert_eq!(
        file_names(dir.path()),
        vec!["out.token"],
        "no temporary file left"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_token_sink_removes_temp_files_a_killed_process_left() {
    let dir = tempfile::tempdir().unwrap();
    let (store, path) = sink_store(dir.path());
    // What an atomic write leaves when the process dies mid-write, and a look-alike that
    // is not ours.
    std::fs::write(dir.path().join(".out.token.Ab12Cd"), "at-old").unwrap();
    std::fs::write(dir.path().join(".out.token.keep-me"), "x").unwrap();
    store.write_token_sink(&Secret::from("at-new"));
    wait_for("the stale temp file removed", || {
        file_names(dir.path()) == vec![".out.token.keep-me", "out.token"]
    })
    .await;
    assert_eq!(std::fs::read_to_string(&path).unwrap(), "at-new");
}
