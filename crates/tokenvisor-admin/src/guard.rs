//! Who may talk to the admin API at all, before any route or credential is looked at: the
//! `Host` and `Origin` checks that stop a DNS-rebinding web page (a name the attacker
//! controls, resolving to 127.0.0.1) and cross-origin browser requests.
//!
//! - `Host` (and the authority of an absolute-form request target) must name this listener:
//!   `localhost`, `127.0.0.1`, `[::1]`, the listener's own IP, or the IP the connection
//!   arrived on (which matters when listening on `0.0.0.0`); with a port, the listener's
//!   port. A missing `Host` on HTTP/1.1, two of them, or any other name is refused with 400.
//! - `Origin`, when present, must be `http://` + one of those hosts + the listener's port
//!   (an absent port means 80, as browsers mean it); anything else (`null`, `https://…`,
//!   another name or port) is refused with 403. Non-browser clients send no `Origin`.
//!
//! The answers never echo the presented values.

use std::net::{IpAddr, SocketAddr};

use axum::http::{HeaderMap, StatusCode, Uri, Version, header};

/// The address the connection of a request arrived on (inserted by the listener).
#[derive(Debug, Clone, Copy)]
pub(crate) struct ConnLocal(pub(crate) SocketAddr);

/// Why a request is refused before routing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Refusal {
    /// HTTP/1.1 without `Host`, or several `Host` headers.
    MissingHost,
    /// `Host` (or the request target's authority) names something else.
    ForeignHost,
    /// `Origin` present and not this listener's.
    ForeignOrigin,
}

impl Refusal {
    /// The status and message of the answer.
    pub(crate) fn answer(self) -> (StatusCode, &'static str) {
        match self {
            Refusal::MissingHost => (
                StatusCode::BAD_REQUEST,
                "exactly one Host header is required",
            ),
            Refusal::ForeignHost => (
                StatusCode::BAD_REQUEST,
                "the Host header does not name this admin API (use localhost, 127.0.0.1, [::1] \
                 or the listener's address)",
            ),
            Refusal::ForeignOrigin => (StatusCode::FORBIDDEN, "cross-origin requests are refused"),
        }
    }
}

/// Checks a request's `Host`, target authority and `Origin` against the listener `listen`
/// (its bound address) and the connection's local address `conn`.
pub(crate) fn check(
    version: Version,
    uri: &Uri,
    headers: &HeaderMap,
    listen: SocketAddr,
    conn: Option<SocketAddr>,
) -> Result<(), Refusal> {
    let allowed = Allowed { listen, conn };
    let mut hosts = headers.get_all(header::HOST).iter();
    match (hosts.next(), hosts.next()) {
        (Some(_), Some(_)) => return Err(Refusal::MissingHost),
        (None, _) => {
            if version >= Version::HTTP_11 {
                return Err(Refusal::MissingHost);
            }
        }
        (Some(host), None) => {
            let ok = host.to_str().ok().is_some_and(|h| allowed.host(h));
            if !ok {
                return Err(Refusal::ForeignHost);
            }
        }
    }
    if let Some(authority) = uri.authority()
        && !allowed.host(authority.as_str())
    {
        return Err(Refusal::ForeignHost);
    }
    for origin in headers.get_all(header::ORIGIN) {
        let ok = origin.to_str().ok().is_some_and(|o| allowed.origin(o));
        if !ok {
            return Err(Refusal::ForeignOrigin);
        }
    }
    Ok(())
}

struct Allowed {
    listen: SocketAddr,
    conn: Option<SocketAddr>,
}

impl Allowed {
    /// `host[:port]` names this listener.
    fn host(&self, value: &str) -> bool {
        let Some((name, port)) = split_host_port(value) else {
            return false;
        };
        port.is_none_or(|p| p == self.listen.port()) && self.name(name)
    }

    /// `http://host[:port]` is this listener's origin (an absent port is 80).
    fn origin(&self, value: &str) -> bool {
        let Some(rest) = value.strip_prefix("http://") else {
            return false;
        };
        let Some((name, port)) = split_host_port(rest) else {
            return false;
        };
        port.unwrap_or(80) == self.listen.port() && self.name(name)
    }

    /// A host name (IPv6 in brackets) that is a loopback name or one of our addresses.
    fn name(&self, name: &str) -> bool {
        if ["localhost", "127.0.0.1", "[::1]"]
            .iter()
            .any(|n| name.eq_ignore_ascii_case(n))
        {
            return true;
        }
        let ip = match name.strip_prefix('[').and_then(|n| n.strip_suffix(']')) {
            Some(v6) => v6.parse::<std::net::Ipv6Addr>().ok().map(IpAddr::V6),
            None => name.parse::<std::net::Ipv4Addr>().ok().map(IpAddr::V4),
        };
        ip.is_some_and(|ip| {
            (ip == self.listen.ip() && !ip.is_unspecified())
                || self.conn.is_some_and(|c| c.ip() == ip)
        })
    }
}

/// `host[:port]` → (host, port). IPv6 hosts keep their brackets. `None` when malformed
/// (empty host, a port that is not a number, an unbracketed IPv6 address, userinfo).
fn split_host_port(value: &str) -> Option<(&str, Option<u16>)> {
    if value.is_empty() || value.contains(['@', '/', ' ']) {
        return None;
    }
    let (host, port) = if value.starts_with('[') {
        let end = value.find(']')?;
        let (host, rest) = value.split_at(end + 1);
        match rest {
            "" => (host, None),
            _ => (host, Some(rest.strip_prefix(':')?)),
        }
    } else {
        match value.split_once(':') {
            None => (value, None),
            Some((host, port)) => (host, Some(port)),
        }
    };
    if host.is_empty() {
        return None;
    }
    let port = match port {
        None => None,
        Some(p) if !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()) => {
            Some(p.parse::<u16>().ok()?)
        }
        Some(_) => return None,
    };
    Some((host, port))
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    const LISTEN: &str = "127.0.0.1:7878";

    fn verdict(version: Version, host: &[&str], origin: &[&str]) -> Result<(), Refusal> {
        verdict_at(LISTEN, None, version, "/v1/workloads", host, origin)
    }

    fn verdict_at(
        listen: &str,
        conn: Option<&str>,
        version: Version,
        uri: &str,
        host: &[&str],
        origin: &[&str],
    ) -> Result<(), Refusal> {
        let mut headers = HeaderMap::new();
        for h in host {
            headers.append(header::HOST, HeaderValue::from_str(h).unwrap());
        }
        for o in origin {
            headers.append(header::ORIGIN, HeaderValue::from_str(o).unwrap());
        }
        check(
            version,
            &uri.parse().unwrap(),
            &headers,
            listen.parse().unwrap(),
            conn.map(|c| c.parse().unwrap()),
        )
    }

    #[test]
    fn loopback_names_and_the_listener_address_are_accepted() {
        for host in [
            "127.0.0.1:7878",
            "127.0.0.1",
            "localhost",
            "localhost:7878",
            "LocalHost:7878",
            "[::1]",
            "[::1]:7878",
        ] {
            assert_eq!(verdict(Version::HTTP_11, &[host], &[]), Ok(()), "{host}");
        }
        for origin in [
            "http://localhost:7878",
            "http://127.0.0.1:7878",
            "http://[::1]:7878",
        ] {
            assert_eq!(
                verdict(Version::HTTP_11, &["localhost:7878"], &[origin]),
                Ok(()),
                "{origin}"
            );
        }
        // HTTP/1.0 may omit Host.
        assert_eq!(verdict(Version::HTTP_10, &[], &[]), Ok(()));
    }

    #[test]
    fn dns_rebinding_and_foreign_hosts_are_refused() {
        for host in [
            "evil.example",
            "evil.example:7878",
            "localhost.evil.example:7878",
            "localhost:7879",
            "127.0.0.2:7878",
            "10.0.0.1:7878",
            "0.0.0.0:7878",
            "localhost:",
            "localhost:x",
            "localhost:99999",
            ":7878",
            "user@localhost:7878",
            "::1",
            "[::1]x",
            "[::2]:7878",
            "",
        ] {
            assert_eq!(
                verdict(Version::HTTP_11, &[host], &[]),
                Err(Refusal::ForeignHost),
                "{host:?}"
            );
        }
        assert_eq!(
            verdict(Version::HTTP_11, &[], &[]),
            Err(Refusal::MissingHost)
        );
        assert_eq!(
            verdict(Version::HTTP_11, &["localhost", "localhost"], &[]),
            Err(Refusal::MissingHost)
        );
        // An absolute-form target names the host too.
        assert_eq!(
            verdict_at(
                LISTEN,
                None,
                Version::HTTP_11,
                "http://evil.example:7878/v1/workloads",
                &["localhost:7878"],
                &[]
            ),
            Err(Refusal::ForeignHost)
        );
    }

    #[test]
    fn cross_origin_requests_are_refused() {
        for origin in [
            "http://evil.example",
            "http://evil.example:7878",
            "https://localhost:7878",
            "http://localhost",
            "http://localhost:7879",
            "null",
            "",
        ] {
            assert_eq!(
                verdict(Version::HTTP_11, &["localhost:7878"], &[origin]),
                Err(Refusal::ForeignOrigin),
                "{origin:?}"
            );
        }
    }

    #[test]
    fn a_non_loopback_listener_accepts_its_own_address() {
        assert_eq!(
            verdict_at(
                "10.1.2.3:7878",
                None,
                Version::HTTP_11,
                "/",
                &["10.1.2.3:7878"],
                &[]
            ),
            Ok(())
        );
        // On 0.0.0.0: the address the connection arrived on, not 0.0.0.0 itself.
        let any = |host: &str| {
            verdict_at(
                "0.0.0.0:7878",
                Some("192.168.1.5:7878"),
                Version::HTTP_11,
                "/",
                &[host],
                &[],
            )
        };
        assert_eq!(any("192.168.1.5:7878"), Ok(()));
        assert_eq!(any("0.0.0.0:7878"), Err(Refusal::ForeignHost));
        assert_eq!(any("192.168.1.6:7878"), Err(Refusal::ForeignHost));
    }
}
