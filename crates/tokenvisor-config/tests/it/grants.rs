//! The workload-identity grants' keys (`jwt_bearer`, `token_exchange`): each resolves, from
//! `[defaults]` or a workload, and each mistake names FILE:LINE: KEY: reason; a token file
//! that cannot be read now, or holds an expired JWT, is a warning (the platform rotates it).

use std::path::{Path, PathBuf};
use std::sync::Arc;

use tokenvisor_config::spec::{GrantSpec, PresentedToken, TokenExchangeSpec};
use tokenvisor_config::{Config, ConfigError};

const JWT: &str = "urn:ietf:params:oauth:token-type:jwt";

/// A JWT (unsigned: only `exp` is read) expiring at `exp` (seconds since the epoch).
fn jwt(exp: u64) -> String {
    let e = |s: &str| {
        // base64url without padding, by hand: the test needs no crate for three segments
        const A: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
        let b = s.as_bytes();
        let mut out = String::new();
        for chunk in b.chunks(3) {
            let n = chunk
                .iter()
                .enumerate()
                .fold(0u32, |n, (i, &c)| n | (u32::from(c) << (16 - 8 * i)));
            for i in 0..=chunk.len() {
                out.push(char::from(A[((n >> (18 - 6 * i)) & 63) as usize]));
            }
        }
        out
    };
    format!(
        "{}.{}.sig",
        e(r#"{"alg":"ES256"}"#),
        e(&format!(r#"{{"exp":{exp}}}"#))
    )
}

/// In a directory with `token` (a JWT valid until 2100) and `expired` (a JWT of 1970):
/// `[defaults]` of `defaults`, one workload of `grant` with `extra` keys.
fn parse(
    defaults: &str,
    grant: &str,
    extra: &str,
) -> (tempfile::TempDir, Result<Config, ConfigError>) {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    std::fs::write(dir.join("token"), jwt(4_102_444_800)).unwrap();
    std::fs::write(dir.join("expired"), jwt(1)).unwrap();
    let text = format!(
        "[defaults]\n{defaults}\n[[workload]]\nname = \"app\"\ntoken_url = \"https://idp.example.com/token\"\n\
         client_id = \"app\"\ngrant = \"{grant}\"\n{extra}\n"
    );
    let home = |k: &str| (k == "HOME").then(|| "/home/tv".to_owned());
    let c = tokenvisor_config::parse(&text, &dir.join("tv.toml"), &home);
    (tmp, c)
}

#[track_caller]
fn problem(defaults: &str, grant: &str, extra: &str, key: &str, line: usize, reason: &str) {
    let err = parse(defaults, grant, extra).1.expect_err("a problem");
    let rendered = err.to_string();
    let prefix = format!("{}:{line}: {key}: ", err.file().display());
    assert!(
        rendered
            .lines()
            .any(|l| l.starts_with(&prefix) && l.contains(reason)),
        "no line {prefix}…{reason}… in:\n{rendered}"
    );
}

fn path(dir: &Path, f: &str) -> PathBuf {
    dir.join(f)
}

#[test]
fn jwt_bearer_takes_its_assertion_file_from_defaults_and_needs_no_client_secret() {
    let (dir, c) = parse("assertion_file = \"token\"", "jwt_bearer", "");
    let c = c.unwrap_or_else(|e| panic!("{e}"));
    let w = &c.workloads[0];
    assert_eq!(
        w.grant,
        GrantSpec::JwtBearer {
            assertion_file: path(dir.path(), "token")
        }
    );
    assert_eq!(w.client_secret, None);
    assert!(c.warnings.is_empty(), "{:?}", c.warnings);
    // A workload's own value wins.
    let (dir, c) = parse(
        "assertion_file = \"nope\"",
        "jwt_bearer",
        "assertion_file = \"token\"",
    );
    let c = c.unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(
        c.workloads[0].grant,
        GrantSpec::JwtBearer {
            assertion_file: path(dir.path(), "token")
        }
    );
}

#[test]
fn token_exchange_resolves_aliases_and_uris() {
    let (dir, c) = parse(
        "subject_token_type = \"jwt\"\nrequested_token_type = \"access_token\"",
        "token_exchange",
        "subject_token_file = \"token\"\nactor_token_file = \"token\"\n\
         actor_token_type = \"urn:example:custom-type\"\naudience = \"https://api.test\"\n\
         resource = \"https://api.test/v1\"\nscopes = [\"api\"]",
    );
    let c = c.unwrap_or_else(|e| panic!("{e}"));
    let w = &c.workloads[0];
    let want = TokenExchangeSpec {
        subject: PresentedToken {
            file: path(dir.path(), "token"),
            token_type: Arc::from(JWT),
        },
        actor: Some(PresentedToken {
            file: path(dir.path(), "token"),
            token_type: Arc::from("urn:example:custom-type"),
        }),
        requested_token_type: Some(Arc::from("urn:ietf:params:oauth:token-type:access_token")),
    };
    assert_eq!(w.grant, GrantSpec::TokenExchange(Arc::new(want)));
    assert_eq!(w.audience.as_deref(), Some("https://api.test"));
    assert_eq!(w.resource.as_deref(), Some("https://api.test/v1"));
    assert_eq!(&*w.scopes, ["api".to_owned()]);
}

#[test]
fn mistakes_name_file_line_and_key() {
    // line 1 [defaults], 2 its keys, 3 [[workload]], 4 name, 5 token_url, 6 client_id,
    // 7 grant, 8… the workload's extra keys
    problem(
        "",
        "jwt_bearer",
        "",
        "workload[0].assertion_file",
        7,
        "missing: grant = \"jwt_bearer\" needs assertion_file",
    );
    problem(
        "",
        "token_exchange",
        "subject_token_file = \"token\"",
        "workload[0].subject_token_type",
        7,
        "needs subject_token_type",
    );
    problem(
        "",
        "token_exchange",
        "subject_token_type = \"jwt\"",
        "workload[0].subject_token_file",
        7,
        "needs subject_token_file",
    );
    problem(
        "subject_token_type = \"not a uri\"",
        "token_exchange",
        "",
        "defaults.subject_token_type",
        2,
        "is neither an absolute URI",
    );
    problem(
        "",
        "token_exchange",
        "subject_token_file = \"token\"\nsubject_token_type = \"jwt\"\nactor_token_file = \"token\"",
        "workload[0].actor_token_file",
        10,
        "needs actor_token_type",
    );
    problem(
        "",
        "token_exchange",
        "subject_token_file = \"token\"\nsubject_token_type = \"jwt\"\nactor_token_type = \"jwt\"",
        "workload[0].actor_token_type",
        10,
        "actor_token_file, which is not set",
    );
    problem(
        "",
        "client_credentials",
        "client_secret = \"s\"\nassertion_file = \"token\"",
        "workload[0].assertion_file",
        9,
        "applies only to grant = \"jwt_bearer\"",
    );
    problem(
        "",
        "jwt_bearer",
        "assertion_file = \"token\"\nsubject_token_type = \"jwt\"",
        "workload[0].subject_token_type",
        9,
        "applies only to grant = \"token_exchange\"",
    );
    problem(
        "",
        "jwt_bearer",
        "assertion_file = \"token\"\nrefresh_token = \"rt\"",
        "workload[0].refresh_token",
        9,
        "keeps no refresh token",
    );
    problem(
        "",
        "jwt_bearer",
        "assertion_file = \"\"",
        "workload[0].assertion_file",
        8,
        "must not be empty",
    );
    problem("", "password", "", "workload[0].grant", 7, "");
    // A key of [defaults] that a workload's grant does not use is no mistake.
    let (_, c) = parse(
        "assertion_file = \"token\"",
        "client_credentials",
        "client_secret = \"s\"",
    );
    c.unwrap_or_else(|e| panic!("{e}"));
}

#[test]
fn an_unreadable_or_expired_token_file_is_a_warning_not_an_error() {
    let (_, c) = parse("", "jwt_bearer", "assertion_file = \"missing\"");
    let c = c.unwrap_or_else(|e| panic!("{e}"));
    let w = &c.warnings;
    assert!(
        w.len() == 1
            && w[0].key == "workload[0].assertion_file"
            && w[0].line == Some(8)
            && w[0].reason.contains("cannot read")
            && w[0].reason.contains("auth_retrying"),
        "{w:?}"
    );
    let (_, c) = parse("", "jwt_bearer", "assertion_file = \"expired\"");
    let c = c.unwrap_or_else(|e| panic!("{e}"));
    let w = &c.warnings;
    assert!(
        w.len() == 1 && w[0].reason.contains("expired at 1970-01-01T00:00:01"),
        "{w:?}"
    );
}

#[test]
fn the_documented_example_shows_every_grant_key() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../config/tokenvisor.toml");
    let text = std::fs::read_to_string(root).expect("config/tokenvisor.toml");
    for key in [
        "assertion_file",
        "subject_token_file",
        "subject_token_type",
        "actor_token_file",
        "actor_token_type",
        "requested_token_type",
    ] {
        let shown = text.lines().any(|l| {
            l.trim_start_matches(['#', ' '])
                .starts_with(&format!("{key} ="))
        });
        assert!(shown, "config/tokenvisor.toml does not show `{key}`");
    }
    for grant in ["\"jwt_bearer\"", "\"token_exchange\""] {
        assert!(
            text.contains(grant),
            "config/tokenvisor.toml does not name {grant}"
        );
    }
}

#[test]
fn the_listing_shows_each_presented_token_file_and_type_in_order() {
    let (dir, c) = parse(
        "subject_token_type = \"jwt\"\nrequested_token_type = \"access_token\"",
        "token_exchange",
        "subject_token_file = \"token\"\nactor_token_file = \"token\"\nactor_token_type = \"jwt\"",
    );
    let out = c.unwrap_or_else(|e| panic!("{e}")).describe_masked();
    let token = format!("{:?}", path(dir.path(), "token").display().to_string());
    let want = format!(
        "grant = \"token_exchange\"\n\
         subject_token_file = {token}  # read at every attempt\n\
         subject_token_type = \"{JWT}\"\n\
         actor_token_file = {token}  # read at every attempt\n\
         actor_token_type = \"{JWT}\"\n\
         requested_token_type = \"urn:ietf:params:oauth:token-type:access_token\"\n\
         # token_sink_file: not set\n"
    );
    assert!(out.contains(&want), "no\n{want}in\n{out}");
    let (dir, c) = parse("", "jwt_bearer", "assertion_file = \"token\"");
    let out = c.unwrap_or_else(|e| panic!("{e}")).describe_masked();
    let token = format!("{:?}", path(dir.path(), "token").display().to_string());
    let want = format!(
        "grant = \"jwt_bearer\"\nassertion_file = {token}  # read at every attempt\n# token_sink"
    );
    assert!(out.contains(&want), "no\n{want}in\n{out}");
    assert!(!out.contains("refresh_token ="), "{out}");
}
