//! Watching the fleet: `/v1/summary`, `/v1/endpoints`, `/v1/events` (SSE with resume), the
//! dashboard page, and `tokenvisor_workloads{status}` as the live count.

use axum::body::Body;
use axum::http::{Method, Request, StatusCode, header};
use futures_util::StreamExt as _;
use serde_json::Value;
use tokenvisor::testing::FakeReply;
use tokenvisor_core::WorkloadStatus;
use tower::ServiceExt as _;

use super::*;
use crate::EventLimits;

/// A fixture whose event stream has the given bounds.
async fn fixture_limits(limits: EventLimits) -> Fixture {
    fixture_full(Some(ADMIN), None, limits).await
}

/// A workload of another endpoint, whose URL carries a secret in its query (credentials in
/// userinfo are refused by `Runtime::add`, as by the configuration).
fn other_endpoint_spec(name: &str) -> WorkloadSpec {
    let mut spec = rt_spec(name);
    spec.token_url = "https://other.example.test/token?key=SECRETKEY&pw=pw-SECRET-url"
        .parse()
        .unwrap();
    spec
}

/// One parsed server-sent event.
#[derive(Debug, Clone)]
struct Sse {
    event: String,
    id: Option<u64>,
    data: String,
}

impl Sse {
    fn json(&self) -> Value {
        serde_json::from_str(&self.data).unwrap_or_else(|e| panic!("{e}: {}", self.data))
    }
}

/// An open `/v1/events` stream.
struct Stream {
    body: axum::body::BodyDataStream,
    buf: String,
}

impl Stream {
    /// The next event (comments skipped), waiting at most [`WAIT`].
    async fn next(&mut self) -> Sse {
        loop {
            if let Some(i) = self.buf.find("\n\n") {
                let block: String = self.buf.drain(..i + 2).collect();
                let mut ev = Sse {
                    event: "message".into(),
                    id: None,
                    data: String::new(),
                };
                let mut any = false;
                for line in block.lines() {
                    if line.is_empty() || line.starts_with(':') {
                        continue;
                    }
                    any = true;
                    let (k, v) = line.split_once(':').unwrap_or((line, ""));
                    let v = v.strip_prefix(' ').unwrap_or(v);
                    match k {
                        "event" => ev.event = v.to_owned(),
                        "id" => ev.id = Some(v.parse().unwrap()),
                        "data" => ev.data.push_str(v),
                        other => panic!("unexpected field {other}"),
                    }
                }
                if any {
                    for s in SECRETS {
                        assert!(!block.contains(s), "event carries a secret: {block}");
                    }
                    return ev;
                }
                continue;
            }
            let chunk = tokio::time::timeout(WAIT, self.body.next())
                .await
                .expect("no event in time")
                .expect("stream ended")
                .unwrap();
            self.buf.push_str(std::str::from_utf8(&chunk).unwrap());
        }
    }

    /// The next `change` event for `name` with status `to` (skipping others).
    async fn until(&mut self, name: &str, to: &str) -> Sse {
        loop {
            let e = self.next().await;
            if e.event == "change" && e.json()["name"] == name && e.json()["to"] == to {
                return e;
            }
        }
    }
}

impl Fixture {
    /// Opens `/v1/events`, resuming after `last` if given; the answer when it is not a stream.
    async fn events(&self, last: Option<&str>) -> Result<Stream, Answer> {
        let mut req = Request::builder()
            .uri("/v1/events")
            .header(header::HOST, LISTEN)
            .header(header::AUTHORIZATION, format!("Bearer {ADMIN}"));
        if let Some(id) = last {
            req = req.header("last-event-id", id);
        }
        let resp = self
            .app
            .clone()
            .oneshot(req.body(Body::empty()).unwrap())
            .await
            .unwrap();
        if resp.status() != StatusCode::OK {
            let status = resp.status();
            let headers = resp.headers().clone();
            let body = axum::body::to_bytes(resp.into_body(), usize::MAX)
                .await
                .unwrap()
                .to_vec();
            return Err(Answer {
                status,
                headers,
                body,
            });
        }
        assert_eq!(
            resp.headers().get(header::CONTENT_TYPE).unwrap(),
            "text/event-stream"
        );
        Ok(Stream {
            body: resp.into_body().into_data_stream(),
            buf: String::new(),
        })
    }

    async fn scrape_workloads(&self) -> Vec<(String, f64)> {
        let a = self.call(Method::GET, "/metrics", None).await;
        assert_eq!(a.status, StatusCode::OK, "{}", a.text());
        a.text()
            .lines()
            .filter_map(|l| l.strip_prefix("tokenvisor_workloads{status=\""))
            .map(|l| {
                let (status, rest) = l.split_once("\"}").unwrap();
                (status.to_owned(), rest.trim().parse().unwrap())
            })
            .collect::<std::collections::BTreeMap<_, _>>()
            .into_iter()
            .collect()
    }
}

fn gauge(scraped: &[(String, f64)], status: &str) -> f64 {
    scraped
        .iter()
        .find(|(s, _)| s == status)
        .map_or_else(|| panic!("no gauge for {status}: {scraped:?}"), |(_, v)| *v)
}

#[tokio::test]
async fn the_workloads_gauge_is_the_live_count_after_removals_and_restarts() {
    let handle = crate::install_metrics_recorder().unwrap();
    let f = fixture_with(Some(ADMIN), Some(handle)).await;
    for name in ["g1", "g2", "g3"] {
        f.add(rt_spec(name)).await;
        f.wait_status(name, WorkloadStatus::Running).await;
    }
    // A restart (as a reload does it: remove, then add again) and a removal.
    assert!(f.runtime.remove(&wn("g1")).await.unwrap());
    f.add(rt_spec("g1")).await;
    f.wait_status("g1", WorkloadStatus::Running).await;
    assert!(f.runtime.remove(&wn("g2")).await.unwrap());

    let scraped = f.scrape_workloads().await;
    assert_eq!(gauge(&scraped, "running"), 2.0, "{scraped:?}");
    assert_eq!(
        gauge(&scraped, "stopped"),
        0.0,
        "a removed or restarted workload is not a stopped one: {scraped:?}"
    );
    for status in ["auth_retrying", "unauthenticated", "starting", "error"] {
        assert_eq!(gauge(&scraped, status), 0.0, "{status}: {scraped:?}");
    }
    // Scraping again changes nothing.
    assert_eq!(f.scrape_workloads().await, scraped);
    f.shutdown().await;
}

#[tokio::test]
async fn summary_counts_per_status_and_endpoint_with_attention_first() {
    let f = fixture(Some(ADMIN)).await;
    f.fake
        .set_client("dead", FakeReply::oauth_error(400, "invalid_grant"));
    f.fake.set_client("busy", FakeReply::too_many(300));
    for name in ["ok1", "ok2", "busy"] {
        f.add(rt_spec(name)).await;
    }
    f.add(other_endpoint_spec("dead")).await;
    f.wait_status("ok1", WorkloadStatus::Running).await;
    f.wait_status("ok2", WorkloadStatus::Running).await;
    f.wait_status("dead", WorkloadStatus::Unauthenticated).await;
    f.wait_status("busy", WorkloadStatus::AuthRetrying).await;

    let a = f.call(Method::GET, "/v1/summary", None).await;
    assert_eq!(a.status, StatusCode::OK, "{}", a.text());
    a.assert_no_secret("summary");
    let text = a.text();
    assert!(
        !text.contains("SECRETKEY") && !text.contains("pw-SECRET-url"),
        "{text}"
    );
    let s = a.json();
    assert_eq!(s["total"], 4);
    assert_eq!(s["counts"]["running"], 2);
    assert_eq!(s["counts"]["unauthenticated"], 1);
    assert_eq!(s["counts"]["auth_retrying"], 1);
    assert_eq!(s["counts"]["stopped"], 0);
    assert_eq!(s["counts"]["error"], 0);
    let eps = s["endpoints"].as_array().unwrap();
    assert_eq!(eps.len(), 2, "{eps:?}");
    let idp = eps
        .iter()
        .find(|e| e["endpoint"] == "https://idp.example.test/oauth/token")
        .unwrap();
    assert_eq!(idp["workloads"], 3);
    assert_eq!(idp["counts"]["running"], 2);
    assert_eq!(idp["counts"]["auth_retrying"], 1);
    assert_eq!(s["attention_total"], 2);
    let att = s["attention"].as_array().unwrap();
    assert_eq!(
        att[0]["name"], "dead",
        "unauthenticated comes first: {att:?}"
    );
    assert_eq!(att[0]["status"], "unauthenticated");
    assert!(att[0]["reason"].as_str().unwrap().contains("invalid_grant"));
    assert_eq!(att[1]["name"], "busy");
    assert!(!att[1]["reason"].as_str().unwrap().is_empty());

    let one = f.call(Method::GET, "/v1/summary?attention=1", None).await;
    assert_eq!(one.json()["attention"].as_array().unwrap().len(), 1);
    assert_eq!(one.json()["attention"][0]["name"], "dead");
    assert_eq!(one.json()["attention_total"], 2);
    assert_json_error(
        &f.call(Method::GET, "/v1/summary?attention=x", None).await,
        StatusCode::BAD_REQUEST,
    );
    assert_json_error(
        &f.call_as(None, Method::GET, "/v1/summary", None).await,
        StatusCode::UNAUTHORIZED,
    );
    f.shutdown().await;
}

#[tokio::test]
async fn endpoints_report_requests_failures_holds_and_latency() {
    let f = fixture(Some(ADMIN)).await;
    f.fake.set_client("held", FakeReply::too_many(300));
    f.add(other_endpoint_spec("fine")).await;
    f.add(rt_spec("held")).await;
    f.wait_status("fine", WorkloadStatus::Running).await;
    f.wait_status("held", WorkloadStatus::AuthRetrying).await;

    let a = f.call(Method::GET, "/v1/endpoints", None).await;
    assert_eq!(a.status, StatusCode::OK, "{}", a.text());
    a.assert_no_secret("endpoints");
    let text = a.text();
    assert!(
        !text.contains("SECRETKEY") && !text.contains("pw-SECRET-url"),
        "{text}"
    );
    let v = a.json();
    let eps = v["endpoints"].as_array().unwrap();
    assert_eq!(eps.len(), 2);
    let held = eps
        .iter()
        .find(|e| e["endpoint"] == "https://idp.example.test/oauth/token")
        .unwrap();
    assert_eq!(held["requests"], 1);
    assert_eq!(held["failures"], 1);
    assert_eq!(held["holds"], 1);
    assert!(held["held_until"].is_string(), "{held}");
    let fine = eps.iter().find(|e| e != &held).unwrap();
    assert_eq!(fine["requests"], 1);
    assert_eq!(fine["failures"], 0);
    assert_eq!(fine["holds"], 0);
    assert!(fine["held_until"].is_null());
    let lat = &fine["latency"];
    assert_eq!(lat["buckets"].as_array().unwrap().len(), 13);
    assert_eq!(
        lat["buckets"]
            .as_array()
            .unwrap()
            .iter()
            .map(|b| b.as_u64().unwrap())
            .sum::<u64>(),
        1
    );
    assert!(lat["p50_ms"].is_u64() && lat["p95_ms"].is_u64(), "{lat}");
    f.shutdown().await;
}

#[tokio::test]
async fn events_stream_state_changes_and_resume_from_last_event_id() {
    let f = fixture(Some(ADMIN)).await;
    let mut live = f.events(None).await.map_err(|a| a.text()).unwrap();
    f.fake
        .push("beta", [FakeReply::oauth_error(400, "invalid_grant")]);
    f.add(rt_spec("alpha")).await;
    let running = live.until("alpha", "running").await;
    let c = running.json();
    assert_eq!(c["id"].as_u64(), running.id);
    assert!(c["at"].is_string() && c["state"].is_string(), "{c}");

    f.add(rt_spec("beta")).await;
    let dead = live.until("beta", "unauthenticated").await;
    let d = dead.json();
    assert!(
        d["reason"].as_str().unwrap().contains("invalid_grant"),
        "{d}"
    );
    assert!(d["from"].is_string(), "beta was seen before: {d}");
    assert!(dead.id > running.id);

    // Resume from the running event: everything after it, in order, then live.
    let mut resumed = f
        .events(Some(&running.id.unwrap().to_string()))
        .await
        .map_err(|a| a.text())
        .unwrap();
    let mut ids = Vec::new();
    loop {
        let e = resumed.next().await;
        assert_eq!(e.event, "change");
        ids.push(e.id.unwrap());
        if e.id == dead.id {
            break;
        }
    }
    let want: Vec<u64> = (running.id.unwrap() + 1..=dead.id.unwrap()).collect();
    assert_eq!(ids, want, "every event after the resume point, once");
    // Both streams then see the next change live.
    assert!(f.runtime.remove(&wn("alpha")).await.unwrap());
    let a = live.until("alpha", "stopped").await;
    let b = resumed.until("alpha", "stopped").await;
    assert_eq!(a.id, b.id);
    assert_eq!(a.json()["from"], "running");

    // A malformed id is refused.
    let bad = f.events(Some("yesterday")).await.err().unwrap();
    assert_json_error(&bad, StatusCode::BAD_REQUEST);
    f.shutdown().await;
}

#[tokio::test]
async fn events_resume_from_beyond_the_buffer_resets() {
    let f = fixture_limits(EventLimits {
        buffer: 2,
        max_clients: 4,
    })
    .await;
    let mut live = f.events(None).await.map_err(|a| a.text()).unwrap();
    for name in ["r1", "r2", "r3"] {
        f.add(rt_spec(name)).await;
        live.until(name, "running").await;
    }
    // Each workload made at least two events (starting, running): id 1 is long gone.
    let mut old = f.events(Some("1")).await.map_err(|a| a.text()).unwrap();
    let e = old.next().await;
    assert_eq!(e.event, "reset", "{e:?}");
    assert_eq!(e.json()["relist"], true);
    let newest = e.id.unwrap();
    assert!(newest >= 6, "{e:?}");
    // An id from the future (another daemon's numbering) resets too.
    let mut future = f
        .events(Some("999999"))
        .await
        .map_err(|a| a.text())
        .unwrap();
    assert_eq!(future.next().await.event, "reset");
    // Resuming from the newest replays nothing and carries on live.
    let mut fresh = f
        .events(Some(&newest.to_string()))
        .await
        .map_err(|a| a.text())
        .unwrap();
    f.add(rt_spec("r4")).await;
    let e = fresh.next().await;
    assert_eq!(e.event, "change");
    assert_eq!(e.id, Some(newest + 1));
    f.shutdown().await;
}

#[tokio::test]
async fn events_refuse_streams_over_the_client_cap() {
    let f = fixture_limits(EventLimits {
        buffer: 16,
        max_clients: 2,
    })
    .await;
    let first = f.events(None).await.map_err(|a| a.text()).unwrap();
    let second = f.events(None).await.map_err(|a| a.text()).unwrap();
    let refused = f
        .events(None)
        .await
        .err()
        .expect("a third stream is refused");
    let msg = assert_json_error(&refused, StatusCode::SERVICE_UNAVAILABLE);
    assert!(msg.contains("too many event streams"), "{msg}");
    // A closed stream frees its place.
    drop(first);
    let mut third = f.events(None).await.map_err(|a| a.text()).unwrap();
    f.add(rt_spec("capped")).await;
    third.until("capped", "running").await;
    drop(second);
    f.shutdown().await;
}

#[tokio::test]
async fn the_dashboard_page_is_static_and_the_data_still_needs_the_token() {
    let f = fixture(Some(ADMIN)).await;
    f.add(rt_spec("page-wl")).await;
    f.wait_status("page-wl", WorkloadStatus::Running).await;
    let a = f.call_as(None, Method::GET, "/", None).await;
    assert_eq!(a.status, StatusCode::OK, "{}", a.text());
    assert_eq!(
        a.header(header::CONTENT_TYPE),
        Some("text/html; charset=utf-8")
    );
    let csp = a.header(header::CONTENT_SECURITY_POLICY).unwrap();
    for part in [
        "default-src 'none'",
        "connect-src 'self'",
        "frame-ancestors 'none'",
    ] {
        assert!(csp.contains(part), "{csp}");
    }
    assert_eq!(a.header(header::X_FRAME_OPTIONS), Some("DENY"));
    let page = a.text();
    assert!(page.contains("/v1/events") && page.contains("Authorization"));
    assert!(!page.contains("page-wl"), "the page carries no data");
    // No external request: every URL the page names is its own.
    for external in ["http://", "https://", "//cdn", "src=\"http"] {
        let allowed = "http://www.w3.org/2000/svg";
        assert!(
            !page.replace(allowed, "").contains(external),
            "the page names {external}"
        );
    }
    a.assert_no_secret("dashboard");
    // The same bytes with a token.
    assert_eq!(f.call(Method::GET, "/", None).await.text(), page);
    // The guard still applies to the page.
    let req = Request::builder()
        .uri("/")
        .header(header::HOST, "evil.example")
        .body(Body::empty())
        .unwrap();
    assert_eq!(f.send_raw(req).await.status, StatusCode::BAD_REQUEST);
    // The data routes still need the bearer token.
    for uri in ["/v1/summary", "/v1/endpoints", "/v1/events"] {
        assert_json_error(
            &f.call_as(None, Method::GET, uri, None).await,
            StatusCode::UNAUTHORIZED,
        );
    }
    f.shutdown().await;
}
