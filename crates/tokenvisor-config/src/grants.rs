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
//! Token types are absolute URIs (RFC 8693 §3), or one of the short aliases that resolve to
//! the RFC's URNs (`tokenvisor_core::spec::rules::token_type`).

use std::collections::BTreeMap;
use std::ops::Range;
use std::path::Path;
use std::sync::Arc;

use tokenvisor_core::Timestamp;
use tokenvisor_core::spec::rules::token_type;
use tokenvisor_core::spec::{GrantSpec, PresentedToken, TokenExchangeSpec};

use crate::problems::Cx;
use crate::schema::{RawGrant, RawPolicy};
use crate::under;

/// The grant keys in force at one level (`[defaults]`, then a workload over it): each set
/// key's value (a resolved path, or a token type with its alias resolved), with its dotted
/// key and span (for "set here" and messages).
pub(crate) type GrantKeys = BTreeMap<&'static str, (String, String, Range<usize>)>;

/// The keys each grant uses (the others' are [`RawGrant::RefreshToken`]'s: none).
const USES: [(RawGrant, &[&str]); 2] = [
    (RawGrant::JwtBearer, &["assertion_file"]),
    (
        RawGrant::TokenExchange,
        &[
            "subject_token_file",
            "subject_token_type",
            "actor_token_file",
            "actor_token_type",
            "requested_token_type",
        ],
    ),
];

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
    let keys = [
        ("assertion_file", &raw.assertion_file),
        ("subject_token_file", &raw.subject_token_file),
        ("actor_token_file", &raw.actor_token_file),
        ("subject_token_type", &raw.subject_token_type),
        ("actor_token_type", &raw.actor_token_type),
        ("requested_token_type", &raw.requested_token_type),
    ];
    for (name, raw) in keys {
        let Some(raw) = raw else { continue };
        let file = name.ends_with("_file");
        let value = cx.check(name, raw, |p| match (file, p.is_empty()) {
            (true, true) => Err("must not be empty".to_owned()),
            (true, false) => Ok(under(base, p).to_string_lossy().into_owned()),
            (false, _) => token_type(p),
        });
        let Some(value) = value else { continue };
        if let Some(why) = file.then(|| look(Path::new(&value), now)).flatten() {
            cx.warn(name, Some(raw.span()), why);
        }
        out.insert(name, (value, cx.key(name), raw.span()));
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
) -> Option<Option<GrantSpec>> {
    let name = <&str>::from(grant);
    let mut ok = true;
    // A key set in this workload that its grant does not use is a mistake; one inherited
    // from [defaults] is not (the defaults serve every grant).
    let here = |key: &str, cx: &Cx| key == cx.key(key.rsplit('.').next().unwrap_or(key));
    let uses = (USES.iter().find(|(g, _)| *g == grant)).map_or(&[][..], |u| u.1);
    for (k, (_, key, span)) in keys {
        if here(key, cx) && !uses.contains(k) {
            ok = false;
            let owner = USES.iter().find(|(_, u)| u.contains(k));
            let owner: &str = owner.map_or("token_exchange", |u| u.0.into());
            let why =
                format!("applies only to grant = \"{owner}\"; this workload's grant is {name:?}");
            cx.report(k, Some(span.clone()), why);
        }
    }
    let mut get = |cx: &mut Cx, k: &str, what: &str| {
        let v = keys.get(k).map(|(v, ..)| v.clone());
        if v.is_none() && !what.is_empty() {
            ok = false;
            if !cx.broken_here(&[k]) {
                let why = format!("missing: grant = {name:?} needs {k} ({what})");
                cx.report(k, at.cloned(), why);
            }
        }
        v
    };
    let presented = |file: String, t: String| PresentedToken {
        file: file.into(),
        token_type: Arc::from(t),
    };
    let spec = match grant {
        RawGrant::RefreshToken | RawGrant::ClientCredentials => None,
        RawGrant::JwtBearer => {
            let what = "the file the platform writes the assertion to; read at every attempt";
            let assertion_file = get(cx, "assertion_file", what)?.into();
            Some(GrantSpec::JwtBearer { assertion_file })
        }
        RawGrant::TokenExchange => {
            let what = "the file holding the subject token; read at every attempt";
            let file = get(cx, "subject_token_file", what);
            let what = "its token type: a URI, or jwt, id_token, access_token, …";
            let subject = file.zip(get(cx, "subject_token_type", what));
            let actor = match (keys.get("actor_token_file"), keys.get("actor_token_type")) {
                (Some((f, ..)), Some((t, ..))) => Some(Some(presented(f.clone(), t.clone()))),
                (None, None) => Some(None),
                (Some((_, key, span)), None) => {
                    let why = "actor_token_file needs actor_token_type (RFC 8693 §2.1)";
                    if !cx.broken_here(&["actor_token_type"]) {
                        cx.problem(key.clone(), Some(span.clone()), why);
                    }
                    None
                }
                // A type inherited from [defaults] without a file is unused; set here, a mistake.
                (None, Some((_, key, span))) if here(key, cx) => {
                    let why = "actor_token_type applies to actor_token_file, which is not set";
                    cx.problem(key.clone(), Some(span.clone()), why);
                    None
                }
                (None, Some(_)) => Some(None),
            };
            let requested_token_type = get(cx, "requested_token_type", "").map(Arc::from);
            let ((f, t), actor) = subject.zip(actor)?;
            let subject = presented(f, t);
            let spec = TokenExchangeSpec {
                subject,
                actor,
                requested_token_type,
            };
            Some(GrantSpec::TokenExchange(Arc::new(spec)))
        }
    };
    ok.then_some(spec)
}
