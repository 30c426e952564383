//! The workload-identity grants at request time: `jwt_bearer` (RFC 7523 §2.1) and
//! `token_exchange` (RFC 8693).
//!
//! Their credential is a token the platform writes to a file and rotates (a Kubernetes
//! projected service-account token, a SPIFFE JWT-SVID, a CI job's OIDC token), so
//! [`present`] reads the file at every attempt, in the attempt's task and on the blocking
//! pool (never in an actor handler), through the one secret-file reader
//! (`tokenvisor_config::secrets`: at most 64 KiB, BOM and surrounding whitespace trimmed,
//! no control character inside). A file that cannot be read or is empty, or a JWT whose
//! `exp` has passed ([`tokenvisor_core::assertion`]; nothing is verified: we are not its
//! audience), is not sent: the attempt fails transiently with kind `credential_file` and a
//! context naming the key and the file ("assertion_file /run/token expired at …"), never the
//! token, and the workload is `auth_retrying` until the platform replaces the file.
//!
//! These grants keep no refresh token: one in a token response is ignored (`token.rs`
//! keeps only a refresh token presented by the `refresh_token` grant). A provider's
//! `invalid_grant` judges the one token presented, not the grant: it is transient
//! ([`tokenvisor_core::classify::for_presented_credential`]).
//!
//! An `unauthenticated` workload of these grants polls its file (`token.rs`) and tries again
//! when it holds a token whose [`stamp`] differs from the one last presented.
//!
//! [`grant_params`] is the grant's part of the form; `oauth.rs` adds scopes, `resource`,
//! `audience` and the client's authentication (any method, or none: a public client sends
//! its `client_id`).

use std::path::Path;

use tokenvisor_core::{Failure, FailureKind, Secret, Timestamp, Verdict};

use crate::spec::{GrantSpec, PresentedToken};
use crate::transport::{ExchangeTokens, Grant};

/// RFC 7523 §2.1's grant type.
pub(crate) const JWT_BEARER: &str = "urn:ietf:params:oauth:grant-type:jwt-bearer";

/// RFC 8693 §2.1's grant type.
pub(crate) const TOKEN_EXCHANGE: &str = "urn:ietf:params:oauth:grant-type:token-exchange";

/// The grant this attempt presents: for `jwt_bearer` and `token_exchange` the tokens read
/// now from their files (on the blocking pool), checked at `now`; for the other grants
/// `grant` (the credential snapshot's) unchanged. `Err`: the "not sent" verdict.
pub(crate) async fn present(
    spec: &GrantSpec,
    grant: Grant,
    now: Timestamp,
) -> Result<Grant, Verdict> {
    match spec {
        GrantSpec::RefreshToken { .. } | GrantSpec::ClientCredentials => Ok(grant),
        GrantSpec::JwtBearer { .. } | GrantSpec::TokenExchange(_) => {
            let spec = spec.clone();
            tokio::task::spawn_blocking(move || read(&spec, now))
                .await
                .unwrap_or_else(|e| {
                    Err(not_sent(&format!("reading the grant's files failed: {e}")))
                })
        }
    }
}

/// A stamp of the tokens `grant` presents (a hash of their values, never 0), to tell the
/// platform's next token from the one last presented; 0 for the other grants.
pub(crate) fn stamp(grant: &Grant) -> u64 {
    use std::hash::{Hash as _, Hasher as _};
    let mut h = std::hash::DefaultHasher::new();
    match grant {
        Grant::RefreshToken(_) | Grant::ClientCredentials => return 0,
        Grant::JwtBearer(t) => t.expose().hash(&mut h),
        Grant::TokenExchange(x) => {
            x.subject.expose().hash(&mut h);
            x.actor.as_ref().map(|(t, _)| t.expose()).hash(&mut h);
        }
    }
    h.finish().max(1)
}

/// The stamp of what the grant's files hold now (read on the blocking pool, at any `exp`),
/// `None` when a file cannot be read or the grant reads none.
pub(crate) async fn current_stamp(spec: &GrantSpec) -> Option<u64> {
    let spec = spec.clone();
    let read = tokio::task::spawn_blocking(move || read(&spec, Timestamp::EPOCH));
    read.await.ok()?.ok().map(|g| stamp(&g))
}

/// [`present`]'s blocking part.
fn read(spec: &GrantSpec, now: Timestamp) -> Result<Grant, Verdict> {
    match spec {
        GrantSpec::JwtBearer { assertion_file } => {
            token("assertion_file", assertion_file, now).map(Grant::JwtBearer)
        }
        GrantSpec::TokenExchange(x) => {
            let PresentedToken { file, token_type } = &x.subject;
            let subject = token("subject_token_file", file, now)?;
            let actor = match &x.actor {
                Some(a) => Some((
                    token("actor_token_file", &a.file, now)?,
                    a.token_type.clone(),
                )),
                None => None,
            };
            Ok(Grant::TokenExchange(Box::new(ExchangeTokens {
                subject,
                subject_type: token_type.clone(),
                actor,
                requested_type: x.requested_token_type.clone(),
            })))
        }
        GrantSpec::RefreshToken { .. } | GrantSpec::ClientCredentials => {
            Err(not_sent("internal error: this grant reads no token file"))
        }
    }
}

/// The token in `file` (configuration key `key`), when it can be presented at `now`.
fn token(key: &str, file: &Path, now: Timestamp) -> Result<Secret, Verdict> {
    let secret = tokenvisor_config::secrets::read_secret_file(file)
        .map_err(|e| not_sent(&format!("{key}: {e}")))?;
    match tokenvisor_core::assertion::expired_at(secret.expose(), now) {
        Some(exp) => Err(not_sent(&format!(
            "{key} {} expired at {exp}; waiting for the platform to replace it",
            file.display()
        ))),
        None => Ok(secret),
    }
}

/// A transient "not sent" verdict about the grant's token file.
fn not_sent(reason: &str) -> Verdict {
    metrics::counter!(crate::metrics::CREDENTIAL_FILE_NOT_SENT).increment(1);
    Verdict::Transient(Failure {
        kind: FailureKind::CredentialFile,
        http_status: None,
        error_code: None,
        retry_after: None,
        summary: tokenvisor_core::classify::excerpt(format!("not sent: {reason}").as_bytes()),
    })
}

/// The grant's part of the token request's form: `grant_type` and its parameters; `None`
/// for the grants the oauth2 crate builds (`refresh_token`, `client_credentials`).
pub(crate) fn grant_params(grant: &Grant) -> Option<Vec<(&'static str, String)>> {
    match grant {
        Grant::RefreshToken(_) | Grant::ClientCredentials => None,
        Grant::JwtBearer(assertion) => Some(vec![
            ("grant_type", JWT_BEARER.to_owned()),
            ("assertion", assertion.expose().to_owned()),
        ]),
        Grant::TokenExchange(x) => {
            let mut form = vec![
                ("grant_type", TOKEN_EXCHANGE.to_owned()),
                ("subject_token", x.subject.expose().to_owned()),
                ("subject_token_type", x.subject_type.to_string()),
            ];
            if let Some((actor, actor_type)) = &x.actor {
                form.push(("actor_token", actor.expose().to_owned()));
                form.push(("actor_token_type", actor_type.to_string()));
            }
            form.extend(
                (x.requested_type.as_ref()).map(|t| ("requested_token_type", t.to_string())),
            );
            Some(form)
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use base64::Engine as _;

    use super::*;
    use crate::spec::TokenExchangeSpec;

    fn jwt(exp: u64) -> String {
        let e = |s: &str| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(s);
        format!(
            "{}.{}.sig",
            e(r#"{"alg":"ES256"}"#),
            e(&format!(r#"{{"exp":{exp}}}"#))
        )
    }

    fn summary(v: Verdict) -> String {
        match v {
            Verdict::Transient(f) => {
                assert_eq!(f.kind, FailureKind::CredentialFile);
                f.summary
            }
            other @ (Verdict::Success(_) | Verdict::Permanent(_)) => panic!("{other:?}"),
        }
    }

    const NOW: Timestamp = Timestamp::from_millis(1_800_000_000_000);

    #[test]
    fn an_expired_unreadable_or_empty_file_is_not_sent_and_names_the_key_not_the_token() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("token");
        let spec = GrantSpec::JwtBearer {
            assertion_file: file.clone(),
        };
        let missing = summary(read(&spec, NOW).unwrap_err());
        assert!(
            missing.contains("assertion_file") && missing.contains("cannot read"),
            "{missing}"
        );
        std::fs::write(&file, "\n").unwrap();
        let empty = summary(read(&spec, NOW).unwrap_err());
        assert!(empty.contains("empty"), "{empty}");
        let old = jwt(1_799_999_999);
        std::fs::write(&file, &old).unwrap();
        let expired = summary(read(&spec, NOW).unwrap_err());
        assert!(
            expired.starts_with("not sent: assertion_file "),
            "{expired}"
        );
        assert!(
            expired.contains("expired at 2027-01-15T07:59:59"),
            "{expired}"
        );
        assert!(
            !expired.contains(&old[..20]),
            "the token is quoted: {expired}"
        );
        let fresh = jwt(1_800_000_060);
        std::fs::write(&file, format!("{fresh}\n")).unwrap();
        assert_eq!(
            read(&spec, NOW).unwrap(),
            Grant::JwtBearer(Secret::from(fresh))
        );
    }

    #[test]
    fn token_exchange_reads_subject_and_actor_and_builds_the_form() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("subject"), "opaque-subject").unwrap();
        std::fs::write(dir.path().join("actor"), jwt(1_800_000_060)).unwrap();
        let jwt_type: Arc<str> = Arc::from("urn:ietf:params:oauth:token-type:jwt");
        let spec = GrantSpec::TokenExchange(Arc::new(TokenExchangeSpec {
            subject: PresentedToken {
                file: dir.path().join("subject"),
                token_type: Arc::from("urn:ietf:params:oauth:token-type:access_token"),
            },
            actor: Some(PresentedToken {
                file: dir.path().join("actor"),
                token_type: jwt_type.clone(),
            }),
            requested_token_type: Some(jwt_type),
        }));
        let grant = read(&spec, NOW).unwrap();
        let form = grant_params(&grant).unwrap();
        let names: Vec<&str> = form.iter().map(|(k, _)| *k).collect();
        assert_eq!(
            names,
            [
                "grant_type",
                "subject_token",
                "subject_token_type",
                "actor_token",
                "actor_token_type",
                "requested_token_type"
            ]
        );
        assert_eq!(form[0].1, TOKEN_EXCHANGE);
        assert_eq!(form[1].1, "opaque-subject");
        // An expired actor token stops the attempt too, naming its key.
        std::fs::write(dir.path().join("actor"), jwt(1)).unwrap();
        let why = summary(read(&spec, NOW).unwrap_err());
        assert!(why.contains("actor_token_file"), "{why}");
    }
}
