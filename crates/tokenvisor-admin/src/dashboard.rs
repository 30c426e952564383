//! `GET /`: a read-only dashboard, one static HTML page (inline CSS, JS and SVG charts)
//! embedded in the binary. No build step, no external request.
//!
//! A browser cannot put a bearer header on a navigation or on an `EventSource`, and the
//! admin token must not travel in a URL a server logs. So the page itself carries no data
//! and needs no token: it is the same bytes for everyone (guarded by Host/Origin like every
//! route). It takes the admin token from the URL fragment (`/#token=…`, which browsers never
//! send to a server) or from a prompt, keeps it in `sessionStorage` (this tab only), removes
//! the fragment from the address bar, and calls the protected routes with `fetch` and an
//! `Authorization: Bearer` header: `/v1/summary` and `/v1/endpoints` every few seconds, and
//! `/v1/events` read as a fetch stream (Server-Sent Events parsed by the page, resumed with
//! `Last-Event-ID`; a `reset` re-lists). The API keeps requiring the bearer token on every
//! data route; nothing is weakened for the page.
//!
//! The answer carries a Content-Security-Policy that allows only the page's own inline
//! script and style and requests to its own origin (`connect-src 'self'`), and forbids
//! framing.

use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Response};

/// The page.
const PAGE: &str = include_str!("dashboard.html");

/// The page's Content-Security-Policy.
const CSP: &str = "default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; \
                   connect-src 'self'; img-src data:; base-uri 'none'; form-action 'none'; \
                   frame-ancestors 'none'";

/// `GET /`.
pub(crate) async fn page() -> Response {
    let mut resp = PAGE.into_response();
    let h = resp.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/html; charset=utf-8"),
    );
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CSP),
    );
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    resp
}
