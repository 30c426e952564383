//! The workload-identity grants' local rules (`jwt_bearer`, RFC 7523 §2.1;
//! `token_exchange`, RFC 8693): what tokenvisor checks about a token it presents — an
//! assertion, a subject token, an actor token — before it sends it.
//!
//! Those tokens are the platform's (a Kubernetes projected service-account token, a SPIFFE
//! JWT-SVID, a CI job's OIDC token): the runtime reads their file at every attempt, because
//! the platform rotates it. A JWT (three base64url segments, the middle one a JSON object)
//! whose numeric `exp` is at or before `now` is expired ([`expired_at`]): the attempt is not
//! sent (the provider could only refuse it) and the failure is transient, as the platform
//! replaces the file. Nothing is verified: tokenvisor is not the token's audience and holds
//! no key for it; a token that is not a JWT (opaque, SAML, a five-part JWE) has no readable
//! `exp` and is presented as it is.

use base64::Engine as _;

use crate::time::Timestamp;

/// The `exp` of `token` when it is a JWT with a numeric `exp` claim (seconds since the
/// epoch; a fraction is kept to the millisecond, a negative value is the epoch); `None`
/// otherwise. The signature is not checked.
pub fn jwt_expiry(token: &str) -> Option<Timestamp> {
    let mut parts = token.split('.');
    let (Some(_header), Some(payload), Some(_signature), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return None;
    };
    // Base64url without padding (RFC 7515 §2); tolerate padding some issuers add.
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(payload.trim_end_matches('='))
        .ok()?;
    let claims: serde_json::Value = serde_json::from_slice(&bytes).ok()?;
    let exp = claims.as_object()?.get("exp")?.as_f64()?;
    if !exp.is_finite() {
        return None;
    }
    // Saturating float → integer conversion: a huge `exp` is the far future.
    let ms = (exp.max(0.0) * 1000.0) as u64;
    Some(Timestamp::from_millis(ms))
}

/// When `token` is a JWT that expired at or before `now`: its `exp`.
pub fn expired_at(token: &str, now: Timestamp) -> Option<Timestamp> {
    jwt_expiry(token).filter(|&exp| exp <= now)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn jwt(claims: &str) -> String {
        let e = |s: &str| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(s);
        format!("{}.{}.{}", e(r#"{"alg":"RS256"}"#), e(claims), e("sig"))
    }

    #[test]
    fn expiry_table() {
        let t = Timestamp::from_millis;
        let rows: [(&str, String, Option<Timestamp>); 10] = [
            (
                "integer exp",
                jwt(r#"{"exp":1700000000}"#),
                Some(t(1_700_000_000_000)),
            ),
            (
                "fractional exp",
                jwt(r#"{"exp":1700000000.5}"#),
                Some(t(1_700_000_000_500)),
            ),
            ("negative exp", jwt(r#"{"exp":-5}"#), Some(t(0))),
            ("no exp", jwt(r#"{"sub":"x"}"#), None),
            ("string exp", jwt(r#"{"exp":"1700000000"}"#), None),
            ("payload not an object", jwt("[1,2]"), None),
            ("payload not JSON", jwt("not json"), None),
            ("opaque token", "abc123opaque".to_owned(), None),
            (
                "a JWE has five parts",
                format!("{}.x.y", jwt(r#"{"exp":1}"#)),
                None,
            ),
            (
                "padded payload",
                {
                    let p =
                        base64::engine::general_purpose::URL_SAFE.encode(r#"{"exp":1700000000}"#);
                    format!("a.{p}.c")
                },
                Some(t(1_700_000_000_000)),
            ),
        ];
        for (what, token, want) in rows {
            assert_eq!(jwt_expiry(&token), want, "{what}");
        }
    }

    #[test]
    fn expired_is_at_or_before_now() {
        let token = jwt(r#"{"exp":1700000000}"#);
        let at = Timestamp::from_millis(1_700_000_000_000);
        assert_eq!(expired_at(&token, at), Some(at), "exp == now is expired");
        assert_eq!(
            expired_at(&token, at.plus(std::time::Duration::from_secs(1))),
            Some(at)
        );
        assert_eq!(
            expired_at(&token, Timestamp::from_millis(1_699_999_999_999)),
            None
        );
        assert_eq!(expired_at("opaque", at), None, "no exp: presented as is");
    }

    /// `invalid_grant` judges the one token presented: transient for these grants (unless
    /// the workload lists it in `permanent_codes`); the codes about the configuration stay
    /// final; other verdicts pass unchanged.
    #[test]
    fn a_rejected_assertion_is_transient_and_a_rejected_client_final() {
        use crate::classify::{
            ClassifyPolicy, Failure, FailureKind, Verdict, for_presented_credential,
        };
        let rejected = |code: &str| {
            Verdict::Permanent(Failure {
                kind: FailureKind::OauthRejected,
                http_status: Some(400),
                error_code: Some(code.to_owned()),
                retry_after: None,
                summary: format!("HTTP 400 {code}"),
            })
        };
        let policy = ClassifyPolicy::default();
        match for_presented_credential(rejected("invalid_grant"), &policy) {
            Verdict::Transient(f) => {
                assert_eq!(f.kind, FailureKind::OauthUnknownCode);
                assert_eq!(f.error_code.as_deref(), Some("invalid_grant"));
                assert_eq!(f.summary, "HTTP 400 invalid_grant");
            }
            other @ (Verdict::Success(_) | Verdict::Permanent(_)) => panic!("{other:?}"),
        }
        for code in [
            "invalid_client",
            "unauthorized_client",
            "unsupported_grant_type",
            "invalid_scope",
            "invalid_target",
        ] {
            assert_eq!(
                for_presented_credential(rejected(code), &policy),
                rejected(code),
                "{code}"
            );
        }
        let listed = ClassifyPolicy {
            permanent_codes: vec!["invalid_grant".to_owned()],
            ..ClassifyPolicy::default()
        };
        assert_eq!(
            for_presented_credential(rejected("invalid_grant"), &listed),
            rejected("invalid_grant"),
            "permanent_codes makes it final again"
        );
    }
}
