//! Watching the fleet through the real daemon (`tokenvisor run`, our own admin listener) on
//! 127.0.0.1: `/v1/events` numbers start-up's changes (the admin API is served before the
//! workloads start), resumes with `Last-Event-ID` and streams a rejection live; the dashboard
//! page is served; `tokenvisor_workloads{status}` stays the live count across a reload that
//! removes one workload and restarts another.

use std::path::{Path, PathBuf};

use std::time::Duration;

use crate::harness::{Admin, Daemon, Launch, PATIENCE, metric, start_daemon, write};
use tokenvisor_idp::{ClientSpec, Fault, FaultScope, IdpConfig, IdpServer, Times};

const ADMIN_TOKEN: &str = "admin-token-watch-0123456789";

/// A configuration of client_credentials workloads `names` against `idp`; `scope` is
/// added to `names[0]` (a change that restarts it on reload).
fn config(dir: &Path, idp: &IdpServer, names: &[&str], scope: Option<&str>) -> PathBuf {
    write(&dir.join("admin.token"), ADMIN_TOKEN);
    let mut text = format!(
        r#"[service]
status_dir = "{status}"
admin_listen = "127.0.0.1:0"
admin_token_file = "admin.token"

[defaults]
request_timeout = "2s"
connect_timeout = "1s"
backoff_initial = "200ms"
backoff_max = "1s"
"#,
        status = dir.join("statuses").display()
    );
    for (i, n) in names.iter().enumerate() {
        idp.register_client(ClientSpec::new(*n, format!("secret-{n}")));
        write(&dir.join(format!("{n}.secret")), &format!("secret-{n}\n"));
        let scopes = match (i, scope) {
            (0, Some(s)) => format!("scopes = [\"{s}\"]\n"),
            _ => String::new(),
        };
        text.push_str(&format!(
            r#"
[[workload]]
name = "{n}"
token_url = "{url}"
client_id = "{n}"
client_secret_file = "{n}.secret"
grant = "client_credentials"
{scopes}"#,
            url = idp.token_url()
        ));
    }
    let path = dir.join("tokenvisor.toml");
    write(&path, &text);
    path
}

/// An open event stream over real HTTP.
struct Events {
    resp: reqwest::Response,
    buf: String,
    /// Every change received, for failure messages.
    seen: Vec<String>,
}

impl Events {
    /// Opens a stream (its own client: no overall request timeout on a stream).
    async fn open(daemon: &Daemon, last: Option<&str>) -> Events {
        let http = reqwest::Client::builder().no_proxy().build().unwrap();
        let mut req = http
            .get(format!(
                "http://{}/v1/events",
                daemon.admin.as_deref().unwrap()
            ))
            .header("authorization", format!("Bearer {ADMIN_TOKEN}"));
        if let Some(id) = last {
            req = req.header("last-event-id", id);
        }
        let resp = req.send().await.expect("/v1/events answers");
        assert_eq!(resp.status().as_u16(), 200);
        assert_eq!(
            resp.headers().get("content-type").unwrap(),
            "text/event-stream"
        );
        Events {
            resp,
            buf: String::new(),
            seen: Vec::new(),
        }
    }

    /// The next `change` event's data, waiting at most [`PATIENCE`].
    async fn next_change(&mut self) -> serde_json::Value {
        loop {
            if let Some(i) = self.buf.find("\n\n") {
                let block: String = self.buf.drain(..i + 2).collect();
                if block.contains("event: change") {
                    let data = block
                        .lines()
                        .find_map(|l| l.strip_prefix("data: "))
                        .expect("a data line");
                    let c: serde_json::Value = serde_json::from_str(data).unwrap();
                    self.seen
                        .push(format!("{} {}→{}", c["name"], c["from"], c["to"]));
                    return c;
                }
                continue;
            }
            let chunk = tokio::time::timeout(PATIENCE, self.resp.chunk())
                .await
                .unwrap_or_else(|_| panic!("no event in time; seen: {:?}", self.seen))
                .expect("the stream reads")
                .expect("the stream stays open");
            self.buf.push_str(std::str::from_utf8(&chunk).unwrap());
        }
    }

    /// The next change of `name` to `to` (others skipped), within [`PATIENCE`] in all.
    async fn until(&mut self, name: &str, to: &str) -> serde_json::Value {
        let wait = async {
            loop {
                let c = self.next_change().await;
                if c["name"] == name && c["to"] == to {
                    return c;
                }
            }
        };
        match tokio::time::timeout(Duration::from_secs(20), wait).await {
            Ok(c) => c,
            Err(_) => panic!("no change of {name} to {to}; seen: {:?}", self.seen),
        }
    }
}

fn gauge(metrics: &str, status: &str) -> f64 {
    metric(
        metrics,
        &format!("tokenvisor_workloads{{status=\"{status}\"}}"),
    )
    .unwrap_or_else(|| panic!("no gauge for {status}:\n{metrics}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_daemon_streams_events_serves_the_dashboard_and_counts_live() {
    let idp = IdpServer::start(IdpConfig::default()).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let names = ["ev-a", "ev-b", "ev-c"];
    let cfg = config(dir.path(), &idp, &names, None);
    let daemon = start_daemon(&cfg, Launch::default()).await;
    let admin = Admin::new(&daemon, Some(ADMIN_TOKEN));

    // Start-up's changes were numbered from 1: a resume from 0 replays them.
    let mut replay = Events::open(&daemon, Some("0")).await;
    let mut running = std::collections::BTreeSet::new();
    let mut last_id = 0;
    while running.len() < names.len() {
        let c = tokio::time::timeout(Duration::from_secs(20), replay.next_change())
            .await
            .unwrap_or_else(|_| panic!("start-up not replayed; seen: {:?}", replay.seen));
        let id = c["id"].as_u64().unwrap();
        assert_eq!(id, last_id + 1, "consecutive ids from 1: {c}");
        last_id = id;
        if c["to"] == "running" {
            running.insert(c["name"].as_str().unwrap().to_owned());
        }
    }

    // A rejection arrives live, with its reason.
    let mut live = Events::open(&daemon, None).await;
    idp.set_fault(
        FaultScope::Client("ev-b".into()),
        Fault::OAuthError {
            status: 401,
            code: "invalid_client".into(),
        },
        Times::Always,
    );
    let a = admin.call("POST", "/v1/workloads/ev-b/refresh", None).await;
    assert_eq!(a.status, 202, "{a:?}");
    let c = live.until("ev-b", "unauthenticated").await;
    assert_eq!(c["from"], "running");
    assert!(
        c["reason"].as_str().unwrap().contains("invalid_client"),
        "{c}"
    );
    assert!(!c.to_string().contains("secret-ev-b"), "{c}");

    // The dashboard page through the daemon's own listener, without a token.
    let page = admin.call_as(None, "GET", "/", None).await;
    assert_eq!(page.status, 200, "{page:?}");
    assert!(page.body.contains("<title>tokenvisor</title>"));

    // A reload that removes ev-c and restarts ev-a (a changed scope): the gauges are the
    // live counts, nothing is left in `stopped`.
    let cfg = config(dir.path(), &idp, &names[..2], Some("extra"));
    daemon.signal("-HUP");
    live.until("ev-c", "stopped").await;
    live.until("ev-a", "stopped").await;
    live.until("ev-a", "running").await;
    let m = admin.metrics().await;
    assert_eq!(gauge(&m, "running"), 1.0, "{m}");
    assert_eq!(gauge(&m, "unauthenticated"), 1.0, "{m}");
    assert_eq!(gauge(&m, "stopped"), 0.0, "{m}");
    let s = admin.call("GET", "/v1/summary", None).await.json();
    assert_eq!(s["total"], 2, "{s}");
    assert_eq!(s["attention"][0]["name"], "ev-b", "{s}");
    drop(cfg);
}
