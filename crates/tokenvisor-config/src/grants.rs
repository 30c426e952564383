//! The workload-identity grants' keys: `grant = "jwt_bearer"` (RFC 7523 §2.1, the assertion
//! in `assertion_file`) and `grant = "token_exchange"` (RFC 8693, `subject_token_file` and
//! `subject_token_type`, optionally `actor_token_file` and `actor_token_type`, and
//! `requested_token_type`). Each key may be set under `[defaults]` or in a `[[workload]]` (a
//! workload's value wins); [`level`] checks a level's values, [`resolve`] a workload's
//! grant once it is known.
//!
//! The files are the platform's and rotated under the daemon, so they are named by path and
//! read by the runtime at every attempt. Here a file that cannot be read now, or that holds
//! a JWT already expired, is a warning, not an error: the daemon must not refuse to start (or
//! reload) because the platform is between two tokens, and the workload reports it
//! (`auth_retrying`) until the file is usable.
//!
//! Token types are absolute URIs (RFC 8693 §3), or one of the short [`TOKEN_TYPE_ALIASES`],
//! which resolve to the RFC's URNs.

use std::ops::Range;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use tokenvisor_core::Timestamp;
use tokenvisor_core::spec::{PresentedToken, TOKEN_TYPE_ALIASES, TokenExchangeSpec};
use toml::Spanned;

use crate::problems::Cx;
use crate::schema::{RawGrant, RawPolicy};

/// One key's value at a level, with its dotted key and span (for "set here" and messages).
#[derive(Debug, Clone)]
struct Set<T> {
    value: T,
    key: String,
    span: Range<usize>,
}

/// The grant keys in force at one level (`[defaults]`, then a workload over it).
#[derive(Debug, Clone, Default)]
pub(crate) struct GrantKeys {
    assertion_file: Option<Set<PathBuf>>,
    subject_token_file: Option<Set<PathBuf>>,
    subject_token_type: Option<Set<Arc<str>>>,
    actor_token_file: Option<Set<PathBuf>>,
    actor_token_type: Option<Set<Arc<str>>>,
    requested_token_type: Option<Set<Arc<str>>>,
}

/// A token type: an alias of [`TOKEN_TYPE_ALIASES`] or an absolute URI.
fn token_type(s: &str) -> Result<Arc<str>, String> {
    if let Some((_, urn)) = TOKEN_TYPE_ALIASES.iter().find(|(alias, _)| *alias == s) {
        return Ok(Arc::from(*urn));
    }
    let aliases: Vec<&str> = TOKEN_TYPE_ALIASES.iter().map(|(a, _)| *a).collect();
    match url::Url::parse(s) {
        Ok(_) if s.trim() == s && !s.chars().any(char::is_control) => Ok(Arc::from(s)),
        Ok(_) | Err(_) => Err(format!(
            "{s:?} is neither an absolute URI (e.g. \"urn:ietf:params:oauth:token-type:jwt\") nor \
             one of {}",
            aliases.join(", ")
        )),
    }
}

/// What reading `path` now says, as a warning: unreadable, empty, or a JWT already expired.
fn look(path: &Path, now: Timestamp) -> Option<String> {
    match crate::secrets::read_secret_file(path) {
        Err(e) => Some(format!(
            "{e}; the daemon starts anyway and the workload reports it (auth_retrying) until \
             the file can be read"
        )),
        Ok(token) => tokenvisor_core::assertion::expired_at(token.expose(), now).map(|exp| {
            format!(
                "{} holds a JWT that expired at {exp}; nothing is sent with it (auth_retrying) \
                 until the platform replaces it",
                path.display()
            )
        }),
    }
}

/// The grant keys set at one level (`[defaults]`, a workload) over `out`.
pub(crate) fn level(cx: &mut Cx, base: &Path, raw: &RawPolicy, out: &mut GrantKeys) {
    let now = Timestamp::from_system_time(std::time::SystemTime::now());
    let files = [
        (
            "assertion_file",
            &raw.assertion_file,
            &mut out.assertion_file,
        ),
        (
            "subject_token_file",
            &raw.subject_token_file,
            &mut out.subject_token_file,
        ),
        (
            "actor_token_file",
            &raw.actor_token_file,
            &mut out.actor_token_file,
        ),
    ];
    for (name, raw, slot) in files {
        let Some(raw) = raw else { continue };
        let path = cx.check(name, raw, |p| match p.is_empty() {
            true => Err("must not be empty".to_owned()),
            false => Ok(base.join(p).components().collect::<PathBuf>()),
        });
        if let Some(path) = path {
            if let Some(why) = look(&path, now) {
                cx.warn(name, Some(raw.span()), why);
            }
            *slot = Some(set(cx, name, raw, path));
        }
    }
    let types = [
        (
            "subject_token_type",
            &raw.subject_token_type,
            &mut out.subject_token_type,
        ),
        (
            "actor_token_type",
            &raw.actor_token_type,
            &mut out.actor_token_type,
        ),
        (
            "requested_token_type",
            &raw.requested_token_type,
            &mut out.requested_token_type,
        ),
    ];
    for (name, raw, slot) in types {
        let Some(raw) = raw else { continue };
        if let Some(t) = cx.check(name, raw, |s| token_type(s)) {
            *slot = Some(set(cx, name, raw, t));
        }
    }
}

/// Where a key of a level was set: its dotted key and span.
fn origin<T>(s: &Option<Set<T>>) -> Option<(&str, Range<usize>)> {
    s.as_ref().map(|s| (s.key.as_str(), s.span.clone()))
}

fn set<T, S>(cx: &Cx, name: &str, raw: &Spanned<S>, value: T) -> Set<T> {
    Set {
        value,
        key: cx.key(name),
        span: raw.span(),
    }
}

/// The grant of a workload whose `grant` is `jwt_bearer` or `token_exchange` (`None` for
/// the others), from the keys in force; reported: a required key missing (on `grant`'s line,
/// `at`), a key set in this workload that its grant does not use, a token file without its
/// type or a type without its file.
pub(crate) fn resolve(
    cx: &mut Cx,
    grant: RawGrant,
    keys: &GrantKeys,
    at: Option<&Range<usize>>,
) -> Option<Option<crate::spec::GrantSpec>> {
    use crate::spec::GrantSpec;
    let name = match grant {
        RawGrant::RefreshToken => "refresh_token",
        RawGrant::ClientCredentials => "client_credentials",
        RawGrant::JwtBearer => "jwt_bearer",
        RawGrant::TokenExchange => "token_exchange",
    };
    let mut ok = true;
    // A key set in this workload that its grant does not use is a mistake; one inherited
    // from [defaults] is not (the defaults serve every grant).
    let here = |key: &str, cx: &Cx| key == cx.key(key.rsplit('.').next().unwrap_or(key));
    let uses: &[&str] = match grant {
        RawGrant::RefreshToken | RawGrant::ClientCredentials => &[],
        RawGrant::JwtBearer => &["assertion_file"],
        RawGrant::TokenExchange => &[
            "subject_token_file",
            "subject_token_type",
            "actor_token_file",
            "actor_token_type",
            "requested_token_type",
        ],
    };
    let all = [
        ("assertion_file", origin(&keys.assertion_file)),
        ("subject_token_file", origin(&keys.subject_token_file)),
        ("subject_token_type", origin(&keys.subject_token_type)),
        ("actor_token_file", origin(&keys.actor_token_file)),
        ("actor_token_type", origin(&keys.actor_token_type)),
        ("requested_token_type", origin(&keys.requested_token_type)),
    ];
    for (k, set) in all {
        if let Some((key, span)) = set
            && here(key, cx)
            && !uses.contains(&k)
        {
            ok = false;
            let owner = match k {
                "assertion_file" => "grant = \"jwt_bearer\"",
                _ => "grant = \"token_exchange\"",
            };
            let why = format!("applies only to {owner}; this workload's grant is {name:?}");
            cx.report(k, Some(span), why);
        }
    }
    let mut missing = |cx: &mut Cx, k: &str, what: &str| {
        ok = false;
        if !cx.broken_here(&[k]) {
            let why = format!("missing: grant = {name:?} needs {k} ({what})");
            cx.report(k, at.cloned(), why);
        }
    };
    let spec = match grant {
        RawGrant::RefreshToken | RawGrant::ClientCredentials => None,
        RawGrant::JwtBearer => match &keys.assertion_file {
            Some(f) => Some(GrantSpec::JwtBearer {
                assertion_file: f.value.clone(),
            }),
            None => {
                let what = "the file the platform writes the assertion to; read at every attempt";
                missing(cx, "assertion_file", what);
                None
            }
        },
        RawGrant::TokenExchange => {
            let subject = match (&keys.subject_token_file, &keys.subject_token_type) {
                (Some(f), Some(t)) => Some(PresentedToken {
                    file: f.value.clone(),
                    token_type: t.value.clone(),
                }),
                (f, t) => {
                    if f.is_none() {
                        missing(
                            cx,
                            "subject_token_file",
                            "the file holding the subject token; read at every attempt",
                        );
                    }
                    if t.is_none() {
                        missing(
                            cx,
                            "subject_token_type",
                            "its token type: a URI, or jwt, id_token, access_token, …",
                        );
                    }
                    None
                }
            };
            let actor = match (&keys.actor_token_file, &keys.actor_token_type) {
                (Some(f), Some(t)) => Some(Some(PresentedToken {
                    file: f.value.clone(),
                    token_type: t.value.clone(),
                })),
                (None, None) => Some(None),
                (Some(f), None) => {
                    let why = "actor_token_file needs actor_token_type (RFC 8693 §2.1)";
                    if !cx.broken_here(&["actor_token_type"]) {
                        cx.problem(f.key.clone(), Some(f.span.clone()), why);
                    }
                    None
                }
                // A type inherited from [defaults] without a file is unused; set here, a mistake.
                (None, Some(t)) if here(&t.key, cx) => {
                    let why = "actor_token_type applies to actor_token_file, which is not set";
                    cx.problem(t.key.clone(), Some(t.span.clone()), why);
                    None
                }
                (None, Some(_)) => Some(None),
            };
            match (subject, actor) {
                (Some(subject), Some(actor)) => {
                    Some(GrantSpec::TokenExchange(Arc::new(TokenExchangeSpec {
                        subject,
                        actor,
                        requested_token_type: keys
                            .requested_token_type
                            .as_ref()
                            .map(|t| t.value.clone()),
                    })))
                }
                (Some(_) | None, Some(_) | None) => {
                    ok = false;
                    None
                }
            }
        }
    };
    ok.then_some(spec)
}
