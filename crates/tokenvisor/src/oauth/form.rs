//! A form POST to one of the provider's endpoints with a workload's client authentication,
//! for what is not a refresh: `tokenvisor login`'s authorization-code and device-code token
//! requests and its device authorization request ([`HttpTransport::post_form`]).
//!
//! The same guarantees as a refresh ([`crate::oauth`]): the workload's client for its TLS
//! identity, roots and proxy; no redirects; a bounded body; a total deadline; the answer
//! captured as a [`RawOutcome`] (status, headers, body) and scrubbed of every secret sent.
//! Client authentication as the workload's `auth_method` says: HTTP Basic, the form
//! (`client_id` and `client_secret`), a client assertion (`private_key_jwt`,
//! `client_secret_jwt`: `aud` is the token URL, or `client_assertion_audience`) or the TLS
//! client certificate (`client_id` in the form). A client without a secret sends its
//! `client_id` in the form (a public client).

use tokenvisor_core::{RawOutcome, Secret, TokenUrl, TransportKind};

use super::{
    DETAIL_LIMIT, HttpTransport, diagnose_tls, fmt_duration, scrub_outcome, send, truncate,
};
use crate::oauth_auth::ASSERTION_TYPE;
use crate::spec::AuthMethod;
use crate::transport::{ExchangeRequest, OutcomeFuture};

/// One field of a form; a secret one is scrubbed from everything the answer carries.
#[derive(Debug, Clone)]
pub struct FormField {
    /// The parameter's name.
    pub name: &'static str,
    /// Its value.
    pub value: Secret,
    /// Whether the value is a secret (an authorization code, a PKCE verifier, a device code).
    pub secret: bool,
}

impl FormField {
    /// A field whose value is not secret.
    pub fn plain(name: &'static str, value: impl Into<String>) -> Self {
        FormField {
            name,
            value: Secret::from(value.into()),
            secret: false,
        }
    }

    /// A field whose value is a secret.
    pub fn secret(name: &'static str, value: Secret) -> Self {
        FormField {
            name,
            value,
            secret: true,
        }
    }
}

impl HttpTransport {
    /// POSTs `form` to `url` with the client authentication, TLS profile and timeouts of
    /// `client` (its `grant`, `scopes`, `resource` and `audience` are not sent: `form` is the
    /// whole form besides client authentication). Never fails: a transport failure is an
    /// outcome too.
    pub fn post_form(
        &self,
        client: &ExchangeRequest,
        url: &TokenUrl,
        form: Vec<FormField>,
    ) -> OutcomeFuture {
        let this = self.clone();
        let client = client.clone();
        let url = url.clone();
        Box::pin(async move {
            let mut secrets = client.secrets();
            secrets.extend(form.iter().filter(|f| f.secret).map(|f| f.value.clone()));
            let (http, assertion) = match this.prepare_off_actor(&client).await {
                Ok(prepared) => prepared,
                Err(detail) => {
                    let outcome = RawOutcome::Transport {
                        kind: TransportKind::Io,
                        detail: truncate(detail, DETAIL_LIMIT),
                    };
                    return scrub_outcome(outcome, &secrets);
                }
            };
            secrets.extend(assertion.clone());
            let (request, basic) = request(&client, &url, &form, assertion.as_ref());
            secrets.extend(basic);
            let deadline = client.timeout;
            let outcome =
                match tokio::time::timeout(deadline, send(&http, &url.redacted(), request)).await {
                    Ok(outcome) => outcome,
                    Err(_elapsed) => RawOutcome::Transport {
                        kind: TransportKind::Timeout,
                        detail: format!("no complete answer within {}", fmt_duration(deadline)),
                    },
                };
            let at = ExchangeRequest {
                token_url: url,
                ..client
            };
            let outcome = diagnose_tls(outcome, &at).await;
            scrub_outcome(outcome, &secrets)
        })
    }
}

/// The request, and the Basic credential when one is sent (a secret too).
fn request(
    client: &ExchangeRequest,
    url: &TokenUrl,
    form: &[FormField],
    assertion: Option<&Secret>,
) -> (oauth2::HttpRequest, Option<Secret>) {
    let mut body = form_urlencoded::Serializer::new(String::new());
    for f in form {
        body.append_pair(f.name, f.value.expose());
    }
    let mut basic = None;
    match (client.auth_method, &client.client_secret, assertion) {
        (_, _, Some(assertion)) => {
            body.append_pair("client_id", &client.client_id);
            body.append_pair("client_assertion_type", ASSERTION_TYPE);
            body.append_pair("client_assertion", assertion.expose());
        }
        (AuthMethod::Basic, Some(secret), None) => {
            use base64::Engine as _;
            let enc = |s: &str| form_urlencoded::byte_serialize(s.as_bytes()).collect::<String>();
            let credential = format!("{}:{}", enc(&client.client_id), enc(secret.expose()));
            basic = Some(Secret::from(
                base64::engine::general_purpose::STANDARD.encode(credential),
            ));
        }
        (AuthMethod::Post, Some(secret), None) => {
            body.append_pair("client_id", &client.client_id);
            body.append_pair("client_secret", secret.expose());
        }
        (
            AuthMethod::Basic
            | AuthMethod::Post
            | AuthMethod::PrivateKeyJwt
            | AuthMethod::ClientSecretJwt
            | AuthMethod::TlsClientAuth
            | AuthMethod::SelfSignedTlsClientAuth,
            _,
            None,
        ) => {
            body.append_pair("client_id", &client.client_id);
        }
    }
    let mut builder = oauth2::http::Request::builder()
        .method(oauth2::http::Method::POST)
        .uri(url.expose())
        .header(
            oauth2::http::header::CONTENT_TYPE,
            "application/x-www-form-urlencoded",
        )
        .header(oauth2::http::header::ACCEPT, "application/json");
    if let Some(b) = &basic {
        builder = builder.header(
            oauth2::http::header::AUTHORIZATION,
            format!("Basic {}", b.expose()),
        );
    }
    let request = builder
        .body(body.finish().into_bytes())
        .unwrap_or_else(|_| oauth2::http::Request::new(Vec::new()));
    (request, basic)
}
