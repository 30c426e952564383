//! `[[workload]]`: a workload's own keys → a [`WorkloadSpec`]: name, token URL, client,
//! the client secret (one source of three), the grant and its refresh token, token sink,
//! scopes, `resource`, `audience`; and the checks across workloads (names, files that
//! tokenvisor writes, one endpoint concurrency per token URL).

use std::collections::HashMap;
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use tokenvisor_core::{Secret, TokenUrl, WorkloadName};
use toml::Spanned;

use crate::policy::EffPolicy;
use crate::problems::Cx;
use crate::read::join_key;
use crate::schema::{RawGrant, RawSecret, RawWorkload};
use crate::secrets::read_secret_env;
use crate::service::resolve_path;
use crate::spec::{GrantSpec, SecretOrigin, WorkloadSpec};

/// What the workloads seen so far use, for the checks across workloads.
#[derive(Default)]
pub(crate) struct Seen {
    names: HashMap<String, (String, Option<usize>)>,
    /// Files, by normalised path: the key that uses it, its line, and whether it is written.
    files: HashMap<PathBuf, (String, Option<usize>, bool)>,
    /// Token URL → the workload that first used it and its endpoint concurrency.
    endpoints: HashMap<TokenUrl, (String, usize)>,
}

pub(crate) struct WorkloadCx<'a> {
    pub(crate) path: &'a str,
    pub(crate) header: Range<usize>,
    pub(crate) base: &'a Path,
    pub(crate) env: &'a dyn Fn(&str) -> Option<String>,
}

impl WorkloadCx<'_> {
    fn key(&self, name: &str) -> String {
        join_key(self.path, name)
    }

    /// Reports a missing required key, unless it was present but already reported.
    fn missing<T>(&self, cx: &mut Cx, name: &str, reason: &str) -> Option<T> {
        let key = self.key(name);
        if !cx.is_broken(&key) {
            cx.problem(key, Some(self.header.clone()), reason);
        }
        None
    }

    /// `raw`'s value through `f`; a failure is reported at `name`, on `raw`'s line.
    fn check<S, T>(
        &self,
        cx: &mut Cx,
        name: &str,
        raw: &Spanned<S>,
        f: impl FnOnce(&S) -> Result<T, String>,
    ) -> Option<T> {
        f(raw.get_ref())
            .map_err(|reason| cx.problem(self.key(name), Some(raw.span()), reason))
            .ok()
    }

    /// A non-empty string without control characters.
    fn text(&self, cx: &mut Cx, name: &str, raw: Option<&Spanned<String>>) -> Option<Arc<str>> {
        self.check(cx, name, raw?, |s| {
            if s.trim().is_empty() {
                Err("must not be empty".to_owned())
            } else if s.chars().any(char::is_control) {
                Err("must not contain control characters".to_owned())
            } else {
                Ok(Arc::from(s.as_str()))
            }
        })
    }

    fn path_of(&self, cx: &mut Cx, name: &str, raw: &Spanned<String>) -> Option<PathBuf> {
        self.check(cx, name, raw, |p| match p.is_empty() {
            true => Err("must not be empty".to_owned()),
            false => Ok(resolve_path(self.base, p)),
        })
    }

    /// Registers a file this workload reads or writes; two users of one file conflict when
    /// either writes it.
    fn use_file(
        &self,
        cx: &mut Cx,
        seen: &mut Seen,
        name: &str,
        path: &Path,
        span: Range<usize>,
        writes: bool,
    ) {
        let norm: PathBuf = path.components().collect();
        let key = self.key(name);
        let line = cx.line(span.start);
        match seen.files.get(&norm) {
            Some((other, other_line, other_writes)) if writes || *other_writes => {
                let at = other_line
                    .map(|l| format!(" (line {l})"))
                    .unwrap_or_default();
                cx.problem(
                    key,
                    Some(span),
                    format!(
                        "{} is also {other}{at}; tokenvisor writes refresh-token and token sink \
                         files, so each needs a file of its own",
                        path.display()
                    ),
                );
            }
            Some(_) => {}
            None => {
                seen.files.insert(norm, (key, Some(line), writes));
            }
        }
    }

    pub(crate) fn resolve(
        &self,
        cx: &mut Cx,
        raw: &RawWorkload,
        policy: EffPolicy,
        seen: &mut Seen,
    ) -> Option<WorkloadSpec> {
        let before = cx.problems.len();

        let name = match &raw.name {
            None => self.missing(
                cx,
                "name",
                "missing: every workload needs a name ([A-Za-z0-9._-], 1–100 characters)",
            ),
            Some(s) => {
                let (key, line) = (self.key("name"), cx.line(s.span().start));
                self.check(cx, "name", s, |s| {
                    let n = WorkloadName::new(s).map_err(|e| e.to_string())?;
                    if let Some((other, other_line)) = seen.names.get(n.as_str()) {
                        let at = other_line.map(|l| format!(" (line {l})"));
                        let (n, at) = (n.as_str(), at.unwrap_or_default());
                        return Err(format!(
                            "duplicate workload name {n:?}: {other}{at} has it too"
                        ));
                    }
                    seen.names.insert(n.as_str().to_owned(), (key, Some(line)));
                    Ok(n)
                })
            }
        };
        let token_url = match &raw.token_url {
            None => self.missing(
                cx,
                "token_url",
                "missing: the provider's token endpoint, e.g. \"https://idp.example.com/oauth/token\"",
            ),
            Some(u) => {
                let url = self.check(cx, "token_url", u, |s| check_http_url(s));
                if let (Some(_), Some(host)) = (&url, plain_http_remote_host(u.get_ref())) {
                    cx.warning(
                        self.key("token_url"),
                        Some(u.span()),
                        format!(
                            "http:// to {host}, which is not a loopback address: tokens and \
                             secrets cross the network unencrypted (use https)"
                        ),
                    );
                }
                url
            }
        };
        let client_id = match &raw.client_id {
            None => self.missing(cx, "client_id", "missing: the OAuth client id"),
            Some(_) => self.text(cx, "client_id", raw.client_id.as_ref()),
        };

        // client secret: at most one source
        let secret = self.client_secret(cx, seen, raw);

        let auth_method = raw
            .auth_method
            .as_ref()
            .map(|m| *m.get_ref())
            .unwrap_or_default();

        // grant and refresh token
        let grant = self.grant(cx, seen, raw, secret.as_ref().map(|(s, _)| s));

        // token sink
        let token_sink_file = raw.token_sink_file.as_ref().and_then(|f| {
            let p = self.path_of(cx, "token_sink_file", f)?;
            self.use_file(cx, seen, "token_sink_file", &p, f.span(), true);
            Some(p)
        });

        // scopes, resource, audience
        // RFC 6749 §3.3: scope-token = 1*( %x21 / %x23-5B / %x5D-7E )
        let scope = |s: &str| {
            !s.is_empty()
                && s.bytes()
                    .all(|b| matches!(b, 0x21 | 0x23..=0x5B | 0x5D..=0x7E))
        };
        let scopes = match &raw.scopes {
            Some(list) => cx.each_valid(
                &self.key("scopes"),
                list,
                scope,
                "a scope token (one scope per string: printable ASCII, no spaces, '\"' or '\\')",
            ),
            None => Some(Vec::new()),
        };
        let resource = raw.resource.as_ref().and_then(|r| {
            self.check(cx, "resource", r, |s| match url::Url::parse(s) {
                Ok(u) if u.fragment().is_none() && s.trim() == s => Ok(Arc::from(s.as_str())),
                Ok(_) | Err(_) => Err("must be an absolute URI without a fragment (RFC 8707), \
                     e.g. \"https://mcp.example.com\""
                    .to_owned()),
            })
        });
        let audience = self.text(cx, "audience", raw.audience.as_ref());

        // one gate per token endpoint: its workloads must agree on the limit
        if let Some(url) = &token_url {
            let n = policy.policy.endpoint_concurrency;
            match seen.endpoints.get(url) {
                Some((other, m)) if *m != n && !cx.is_broken(&self.key("endpoint_concurrency")) => {
                    let from = policy
                        .from
                        .get("endpoint_concurrency")
                        .map_or_else(|| "the default".to_owned(), |(key, _)| key.clone());
                    let span = match policy.from.get("endpoint_concurrency") {
                        Some((key, span)) if *key == self.key("endpoint_concurrency") => {
                            span.clone()
                        }
                        Some(_) | None => self.header.clone(),
                    };
                    cx.problem(
                        self.key("endpoint_concurrency"),
                        Some(span),
                        format!(
                            "is {n} (from {from}) but {other} uses {m} for the same token_url; \
                             the limit is shared by every workload of one token endpoint, so they must agree"
                        ),
                    );
                }
                Some(_) => {}
                None => {
                    seen.endpoints
                        .insert(url.clone(), (self.path.to_owned(), n));
                }
            }
        }

        if cx.problems.len() > before {
            return None;
        }
        let (client_secret, client_secret_origin) = match secret {
            Some((s, o)) => (Some(s), Some(o)),
            None => (None, None),
        };
        Some(WorkloadSpec {
            name: name?,
            token_url: token_url?,
            client_id: client_id?,
            client_secret,
            client_secret_origin,
            auth_method,
            grant: grant?,
            scopes: Arc::from(scopes?),
            resource,
            audience,
            token_sink_file,
            policy: policy.policy,
        })
    }

    /// At most one of `keys` (with the span where each is set, if it is) may be set; the
    /// second one in the file is reported. False when more than one is.
    fn at_most_one(&self, cx: &mut Cx, keys: &[(&str, Option<Range<usize>>)], list: &str) -> bool {
        let mut given: Vec<_> = keys
            .iter()
            .filter_map(|(k, span)| Some((*k, span.clone()?)))
            .collect();
        given.sort_by_key(|(_, span)| span.start);
        if let [(first, _), (k, span), ..] = given.as_slice() {
            cx.problem(
                self.key(k),
                Some(span.clone()),
                format!("set only one of {list} (this workload also sets {first})"),
            );
            return false;
        }
        true
    }

    /// An inline secret, which must not be empty.
    fn inline(&self, cx: &mut Cx, name: &str, raw: &Spanned<RawSecret>) -> Option<Secret> {
        self.check(cx, name, raw, |s| match s.0.is_empty() {
            true => Err("is empty".to_owned()),
            false => Ok(s.0.clone()),
        })
    }

    /// A secret file: registered with the files in use (`writes`: tokenvisor writes it),
    /// then read; its notes become warnings.
    fn secret_file(
        &self,
        cx: &mut Cx,
        seen: &mut Seen,
        name: &str,
        raw: &Spanned<String>,
        writes: bool,
    ) -> Option<(Secret, PathBuf)> {
        let path = self.path_of(cx, name, raw)?;
        self.use_file(cx, seen, name, &path, raw.span(), writes);
        cx.secret_file(&self.key(name), raw.span(), &path)
            .map_err(|reason| cx.problem(self.key(name), Some(raw.span()), reason))
            .ok()
            .map(|secret| (secret, path))
    }

    fn client_secret(
        &self,
        cx: &mut Cx,
        seen: &mut Seen,
        raw: &RawWorkload,
    ) -> Option<(Secret, SecretOrigin)> {
        let sources = [
            (
                "client_secret",
                raw.client_secret.as_ref().map(Spanned::span),
            ),
            (
                "client_secret_file",
                raw.client_secret_file.as_ref().map(Spanned::span),
            ),
            (
                "client_secret_env",
                raw.client_secret_env.as_ref().map(Spanned::span),
            ),
        ];
        let list = "client_secret, client_secret_file and client_secret_env";
        if !self.at_most_one(cx, &sources, list) {
            return None;
        }
        if let Some(s) = &raw.client_secret {
            return Some((self.inline(cx, "client_secret", s)?, SecretOrigin::Inline));
        }
        if let Some(f) = &raw.client_secret_file {
            let (secret, path) = self.secret_file(cx, seen, "client_secret_file", f, false)?;
            return Some((secret, SecretOrigin::File(path)));
        }
        self.check(
            cx,
            "client_secret_env",
            raw.client_secret_env.as_ref()?,
            |var| {
                if var.is_empty() || var.contains(['=', '\0']) {
                    return Err(format!("{var:?} is not an environment variable name"));
                }
                read_secret_env(var, self.env).map(|s| (s, SecretOrigin::Env(var.clone())))
            },
        )
    }

    fn grant(
        &self,
        cx: &mut Cx,
        seen: &mut Seen,
        raw: &RawWorkload,
        client_secret: Option<&Secret>,
    ) -> Option<GrantSpec> {
        // The refresh token, read whatever the grant, so that a missing file is reported.
        let refresh = [
            (
                "refresh_token_file",
                raw.refresh_token_file.as_ref().map(Spanned::span),
            ),
            (
                "refresh_token",
                raw.refresh_token.as_ref().map(Spanned::span),
            ),
        ];
        let both = !self.at_most_one(cx, &refresh, "refresh_token_file and refresh_token");
        let token = match (&raw.refresh_token_file, &raw.refresh_token) {
            (Some(_), Some(_)) | (None, None) => None,
            (Some(f), None) => self
                .secret_file(cx, seen, "refresh_token_file", f, true)
                .map(|(s, path)| (s, Some(path))),
            (None, Some(t)) => self.inline(cx, "refresh_token", t).map(|s| (s, None)),
        };

        let Some(grant) = &raw.grant else {
            return self.missing(
                cx,
                "grant",
                "missing: set grant = \"refresh_token\" or grant = \"client_credentials\"",
            );
        };
        match grant.get_ref() {
            RawGrant::RefreshToken => {
                let reported = both
                    || cx.is_broken(&self.key("refresh_token_file"))
                    || cx.is_broken(&self.key("refresh_token"));
                match token {
                    Some((token, file)) => Some(GrantSpec::RefreshToken { token, file }),
                    None => {
                        if !reported {
                            cx.problem(
                                self.key("refresh_token_file"),
                                Some(self.header.clone()),
                                "missing: grant = \"refresh_token\" needs refresh_token_file \
                                 (or an inline refresh_token)",
                            );
                        }
                        None
                    }
                }
            }
            RawGrant::ClientCredentials => {
                let mut ok = true;
                for (k, span) in refresh {
                    if let Some(span) = span {
                        ok = false;
                        if !cx.is_broken(&self.key(k)) {
                            cx.problem(
                                self.key(k),
                                Some(span),
                                format!(
                                    "grant = \"client_credentials\" takes no refresh token; \
                                     remove {k} or set grant = \"refresh_token\""
                                ),
                            );
                        }
                    }
                }
                let secret_reported = ["client_secret", "client_secret_file", "client_secret_env"]
                    .iter()
                    .any(|k| cx.is_broken(&self.key(k)));
                if client_secret.is_none() && !secret_reported {
                    ok = false;
                    cx.problem(
                        self.key("grant"),
                        Some(grant.span()),
                        "grant = \"client_credentials\" needs a client secret (client_secret, \
                         client_secret_file or client_secret_env): public clients cannot use it",
                    );
                }
                ok.then_some(GrantSpec::ClientCredentials)
            }
        }
    }
}

/// An http(s) URL with a host, no credentials and no fragment. The value is not echoed (it
/// might carry credentials).
fn check_http_url(s: &str) -> Result<TokenUrl, String> {
    if s.trim().is_empty() {
        return Err("must not be empty".to_owned());
    }
    if s.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err("must not contain whitespace or control characters".to_owned());
    }
    let url = url::Url::parse(s).map_err(|e| format!("is not a valid URL: {e}"))?;
    match url.scheme() {
        "https" | "http" => {}
        other => {
            return Err(format!(
                "must be an http or https URL, not {other:?} (use https; http only for a local \
                 test provider)"
            ));
        }
    }
    // The URL standard forgives "https:/host" and "https:///host"; a token URL should not.
    let authority = s.split_once("://").map_or("/", |(_, rest)| rest);
    if url.host_str().is_none_or(str::is_empty) || authority.starts_with(['/', '\\']) {
        return Err("has no host (write e.g. \"https://idp.example.com/oauth/token\")".to_owned());
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err(
            "must not contain credentials (user:password@); use client_id and a client secret"
                .to_owned(),
        );
    }
    if url.fragment().is_some() {
        return Err("must not contain a fragment (#…) (RFC 6749 §3.2)".to_owned());
    }
    TokenUrl::parse(s).map_err(|e| e.to_string())
}

/// The host of an `http://` URL whose host is not loopback (`localhost`, 127.0.0.0/8,
/// `::1`); `None` for https, loopback or an unparseable URL.
fn plain_http_remote_host(s: &str) -> Option<String> {
    let url = url::Url::parse(s).ok()?;
    if url.scheme() != "http" {
        return None;
    }
    let host = url.host_str()?;
    let bare = host.trim_start_matches('[').trim_end_matches(']');
    let loopback = match bare.parse::<std::net::IpAddr>() {
        Ok(ip) => ip.is_loopback(),
        Err(_) => bare.eq_ignore_ascii_case("localhost"),
    };
    (!loopback).then(|| host.to_owned())
}
