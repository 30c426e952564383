//! The JSON shapes of the admin API. Built from specs and status records; nothing here ever
//! reads a secret's value (secrets appear only as their origin: inline, a file, a variable).

use std::path::Path;

use serde::Serialize;
use tokenvisor::WorkloadView;
use tokenvisor::spec::{AuthMethod, GrantSpec, SecretOrigin, WorkloadPolicy, WorkloadSpec};
use tokenvisor_core::status::{LastError, TokenState};
use tokenvisor_core::{StatusRecord, Timestamp, WorkloadName, WorkloadStatus};

/// One workload in `GET /v1/workloads`: the status record's fields, the token URL and the
/// grant.
#[derive(Debug, Serialize)]
pub(super) struct Summary<'a> {
    pub(super) name: &'a WorkloadName,
    /// `starting` until the workload's first status record exists.
    pub(super) status: WorkloadStatus,
    pub(super) status_context: &'a str,
    pub(super) token_state: Option<TokenState>,
    pub(super) expires_at: Option<Timestamp>,
    pub(super) next_attempt_at: Option<Timestamp>,
    pub(super) attempt: u32,
    pub(super) last_error: Option<&'a LastError>,
    pub(super) token_url: String,
    pub(super) grant: &'static str,
}

impl<'a> Summary<'a> {
    pub(super) fn of(view: &'a WorkloadView) -> Self {
        Self::from_parts(&view.spec.name, view.record.as_deref(), Some(&view.spec))
    }

    /// The summary of `name` from a status record (`None`: `starting`) and its spec
    /// (`None`: a workload this instance's configuration does not list, seen in the
    /// cluster: empty `token_url` and `grant`).
    pub(super) fn from_parts(
        name: &'a WorkloadName,
        record: Option<&'a StatusRecord>,
        spec: Option<&'a WorkloadSpec>,
    ) -> Self {
        let token = record.and_then(|r| r.token.as_ref());
        Summary {
            name,
            status: record.map_or(WorkloadStatus::Starting, |r| r.status),
            status_context: record.map_or("", |r| r.status_context.as_str()),
            token_state: token.map(|t| t.state),
            expires_at: token.and_then(|t| t.expires_at),
            next_attempt_at: token.and_then(|t| t.next_attempt_at),
            attempt: token.map_or(0, |t| t.attempt),
            last_error: token.and_then(|t| t.last_error.as_ref()),
            token_url: spec.map_or_else(String::new, |s| s.token_url.redacted()),
            grant: spec.map_or("", |s| s.grant.as_str()),
        }
    }
}

/// `GET /v1/workloads/{name}`: the summary, the record's times, and the resolved settings.
#[derive(Debug, Serialize)]
pub(super) struct Detail<'a> {
    #[serde(flatten)]
    summary: Summary<'a>,
    created_at: Option<Timestamp>,
    updated_at: Option<Timestamp>,
    first_failure_at: Option<Timestamp>,
    /// Whether the token endpoint would serve a token now.
    token_available: bool,
    client_id: &'a str,
    auth_method: AuthMethod,
    scopes: &'a [String],
    resource: Option<&'a str>,
    audience: Option<&'a str>,
    /// Where the client secret comes from; `null` for a public client.
    client_secret_origin: Option<Origin<'a>>,
    /// Where the refresh token comes from; `null` for client_credentials.
    refresh_token_origin: Option<Origin<'a>>,
    token_sink_file: Option<&'a Path>,
    policy: PolicyView<'a>,
}

impl<'a> Detail<'a> {
    pub(super) fn of(view: &'a WorkloadView) -> Self {
        let spec = &*view.spec;
        let record = view.record.as_deref();
        Detail {
            summary: Summary::of(view),
            created_at: record.map(|r| r.created_at),
            updated_at: record.map(|r| r.updated_at),
            first_failure_at: record
                .and_then(|r| r.token.as_ref())
                .and_then(|t| t.first_failure_at),
            token_available: view.handle.current().is_ok(),
            client_id: &spec.client_id,
            auth_method: spec.auth_method,
            scopes: &spec.scopes,
            resource: spec.resource.as_deref(),
            audience: spec.audience.as_deref(),
            client_secret_origin: spec.client_secret_origin.as_ref().map(Origin::of),
            refresh_token_origin: match &spec.grant {
                GrantSpec::RefreshToken {
                    file: Some(path), ..
                } => Some(Origin::File { path }),
                GrantSpec::RefreshToken { file: None, .. } => Some(Origin::Inline),
                GrantSpec::ClientCredentials
                | GrantSpec::JwtBearer { .. }
                | GrantSpec::TokenExchange(_) => None,
            },
            token_sink_file: spec.token_sink_file.as_deref(),
            policy: PolicyView::of(&spec.policy),
        }
    }
}

/// Where a secret comes from (never its value).
#[derive(Debug, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
enum Origin<'a> {
    /// Inline in the configuration (or supplied in code).
    Inline,
    /// A file.
    File { path: &'a Path },
    /// An environment variable.
    Env { var: &'a str },
}

impl<'a> Origin<'a> {
    fn of(origin: &'a SecretOrigin) -> Self {
        match origin {
            SecretOrigin::Inline => Origin::Inline,
            SecretOrigin::File(path) => Origin::File { path },
            SecretOrigin::Env(var) => Origin::Env { var },
        }
    }
}

/// The `[defaults]` keys in effect, named as in the configuration file.
#[derive(Debug, Serialize)]
struct PolicyView<'a> {
    request_timeout: String,
    connect_timeout: String,
    refresh_at: f64,
    refresh_jitter: f64,
    default_lifetime: String,
    backoff_initial: String,
    backoff_max: String,
    backoff_multiplier: f64,
    give_up_after: String,
    max_retry_after: String,
    endpoint_concurrency: usize,
    transient_codes: &'a [String],
    permanent_codes: &'a [String],
}

impl<'a> PolicyView<'a> {
    fn of(p: &'a WorkloadPolicy) -> Self {
        let d = |d: std::time::Duration| humantime::format_duration(d).to_string();
        PolicyView {
            request_timeout: d(p.request_timeout),
            connect_timeout: d(p.connect_timeout),
            refresh_at: p.schedule.refresh_at,
            refresh_jitter: p.schedule.refresh_jitter,
            default_lifetime: d(p.default_lifetime),
            backoff_initial: d(p.backoff.initial),
            backoff_max: d(p.backoff.max),
            backoff_multiplier: p.backoff.multiplier,
            give_up_after: d(p.give_up_after),
            max_retry_after: d(p.max_retry_after),
            endpoint_concurrency: p.endpoint_concurrency,
            transient_codes: &p.transient_codes,
            permanent_codes: &p.permanent_codes,
        }
    }
}
