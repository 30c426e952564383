//! What a verdict means, in words: what tokenvisor would do with it ([`explain`]) and a
//! likely cause of a failure ([`hint`]), as `tokenvisor probe` prints them (the hints name
//! its flags). Pure: a verdict in, text out.

use crate::classify::not_final_note;
use crate::text::compact_duration;
use crate::{Failure, FailureKind, Verdict};

/// What tokenvisor would do with this verdict, and what the workload would show.
#[must_use]
pub fn explain(verdict: &Verdict) -> String {
    match verdict {
        Verdict::Success(_) => "ok: tokenvisor would serve this token and refresh it before it \
                                expires; the workload would show running"
            .to_owned(),
        Verdict::Transient(f) => match f.retry_after {
            Some(d) => format!(
                "transient: tokenvisor would back off and retry, not before the Retry-After of \
                 {}; the workload would show auth_retrying",
                compact_duration(d)
            ),
            None => "transient: tokenvisor would back off and retry; the workload would show \
                     auth_retrying"
                .to_owned(),
        },
        Verdict::Permanent(_) => "permanent: the workload would become unauthenticated until new \
                                  credentials are supplied"
            .to_owned(),
    }
}

/// A likely cause of a failure, for diagnosis; `None` for a success.
#[must_use]
pub fn hint(verdict: &Verdict) -> Option<String> {
    let f = verdict.failure()?;
    if let (FailureKind::OauthUnknownCode, Some(code)) = (f.kind, f.error_code.as_deref()) {
        return Some(format!(
            "{}; tokenvisor would retry until give_up_after",
            not_final_note(code)
        ));
    }
    Some(static_hint(f).to_owned())
}

/// The fixed hint of a failure's kind (and code).
fn static_hint(f: &Failure) -> &'static str {
    match f.kind {
        FailureKind::MalformedSuccess => {
            "a 2xx without an access_token: often a login page or a proxy; check --token-url"
        }
        FailureKind::Redirect => {
            "the endpoint redirects (often to a login page); redirects are never followed: \
             check --token-url"
        }
        FailureKind::RateLimited => "the provider (or a gateway) is rate limiting",
        FailureKind::RequestTimeout | FailureKind::Server5xx => {
            "the provider, or a gateway in front of it, is failing or overloaded"
        }
        FailureKind::OauthRetryable => "the provider asked to try again later",
        FailureKind::OauthUnknownCode => {
            "an OAuth error code that is not known to be final: tokenvisor would retry until \
             give_up_after; add it to permanent_codes if it is final"
        }
        FailureKind::Infrastructure4xx => {
            "a 4xx that is not an OAuth error response (no RFC 6749 error code, or a framework's \
             or gateway's error page): usually a WAF, proxy or CDN in front of the provider, not \
             the provider judging the credentials"
        }
        FailureKind::UnexpectedStatus => "an HTTP status outside 2xx-5xx",
        FailureKind::Connect => "nothing accepted the connection: check the host and port",
        FailureKind::Reset | FailureKind::Eof => {
            "the connection was closed before a full answer arrived (a proxy, a load balancer, \
             a crash)"
        }
        FailureKind::Dns => "the host name did not resolve",
        FailureKind::Tls => "the TLS handshake or the certificate check failed",
        FailureKind::Timeout => "no complete answer within --timeout",
        FailureKind::Io => "a network or request error; see the summary",
        FailureKind::OauthRejected => match f.error_code.as_deref() {
            Some("invalid_grant") => {
                "the refresh token is invalid, expired or revoked (a rotating provider revokes \
                 a token once it has been used)"
            }
            Some("invalid_client") => {
                "client authentication failed: check --client-id, the client secret and \
                 --auth-method"
            }
            Some("unauthorized_client") => "this client may not use this grant",
            Some("unsupported_grant_type") => "the provider does not support this grant",
            Some("invalid_scope") => "a requested --scope is invalid or not granted",
            Some("invalid_request") => {
                "the provider found the request malformed (parameters, --resource, --audience?); \
                 final only because it is listed in permanent_codes"
            }
            Some(_) | None => "the provider rejected the request with a structured error code",
        },
        FailureKind::CredentialFile => {
            "not sent: the grant's token file (assertion, subject or actor token) is unreadable, \
             empty or expired"
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn failure(kind: FailureKind, code: Option<&str>, retry_after: Option<u64>) -> Failure {
        Failure {
            kind,
            http_status: None,
            error_code: code.map(Into::into),
            retry_after: retry_after.map(Duration::from_secs),
            summary: String::new(),
        }
    }

    #[test]
    fn explanations_and_hints_by_table() {
        let table = [
            (
                Verdict::Transient(failure(FailureKind::RateLimited, None, Some(90))),
                "not before the Retry-After of 1m 30s",
                "rate limiting",
            ),
            (
                Verdict::Transient(failure(FailureKind::OauthUnknownCode, Some("odd"), None)),
                "transient: tokenvisor would back off and retry;",
                "unknown error code \"odd\" treated as transient",
            ),
            (
                Verdict::Permanent(failure(
                    FailureKind::OauthRejected,
                    Some("invalid_grant"),
                    None,
                )),
                "permanent: the workload would become unauthenticated",
                "invalid, expired or revoked",
            ),
            (
                Verdict::Permanent(failure(FailureKind::OauthRejected, Some("other"), None)),
                "permanent",
                "structured error code",
            ),
            (
                Verdict::Transient(failure(FailureKind::Infrastructure4xx, None, None)),
                "transient",
                "WAF, proxy or CDN",
            ),
        ];
        for (verdict, explained, hinted) in table {
            assert!(explain(&verdict).contains(explained), "{verdict:?}");
            let h = hint(&verdict).unwrap();
            assert!(h.contains(hinted), "{verdict:?}: {h}");
        }
    }
}
