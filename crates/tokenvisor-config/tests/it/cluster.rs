//! `[cluster]`: absent is the single-process mode; present, its defaults and each rule,
//! every problem as `FILE:LINE: KEY: reason`.

use std::path::PathBuf;
use std::time::Duration;

use tokenvisor_config::cluster::{ClusterBackend, ClusterConfig};
use tokenvisor_config::{self as config, Config, ConfigError};

/// A workload whose request bound plus the etcd write (1 + 1 + 1 + 2 = 5 s) fits the
/// default 15 s lease between keepalives (5 < 2/3 × 15).
const WORKLOAD: &str = r#"
[defaults]
request_timeout = "1s"
connect_timeout = "1s"

[[workload]]
name = "app"
token_url = "https://idp.example.com/token"
client_id = "app"
grant = "client_credentials"
client_secret = "s3cret-value"
"#;

struct Dir(tempfile::TempDir);

impl Dir {
    fn new() -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        for f in ["ca.pem", "cert.pem", "key.pem"] {
            std::fs::write(dir.path().join(f), "-----BEGIN-----\n").expect("write");
        }
        std::fs::write(dir.path().join("etcd.password"), "etcd-pass\n").expect("write");
        Dir(dir)
    }

    fn source(&self) -> PathBuf {
        self.0.path().join("tokenvisor.toml")
    }

    fn parse(&self, text: &str) -> Result<Config, ConfigError> {
        config::parse(text, &self.source(), &|k| {
            (k == "HOME").then(|| "/home/op".to_owned())
        })
    }

    fn ok(&self, cluster: &str) -> Option<ClusterConfig> {
        let text = format!("{WORKLOAD}{cluster}");
        self.parse(&text)
            .unwrap_or_else(|e| panic!("expected a valid config, got:\n{e}"))
            .cluster
    }

    /// The one line of the error for `cluster`, which must start `FILE:LINE: KEY: ` and
    /// contain `reason`.
    #[track_caller]
    fn err(&self, cluster: &str, key: &str, needle: &str, reason: &str) {
        let text = format!("{WORKLOAD}{cluster}");
        let e = self.parse(&text).expect_err("an error");
        let line = text
            .lines()
            .position(|l| l.contains(needle))
            .expect("needle")
            + 1;
        let prefix = format!("{}:{line}: {key}: ", self.source().display());
        let rendered = e.to_string();
        assert!(
            rendered
                .lines()
                .any(|l| l.starts_with(&prefix) && l.contains(reason)),
            "no line starting {prefix:?} containing {reason:?} in:\n{rendered}"
        );
    }
}

/// A second workload with the default timeouts (30 s + 5 s).
const SLOW: &str = r#"
[[workload]]
name = "slow"
token_url = "https://idp.example.com/token"
client_id = "slow"
grant = "client_credentials"
client_secret = "s3cret-value"
request_timeout = "30s"
connect_timeout = "5s"
"#;

const MINIMAL: &str = r#"
[cluster]
backend = "etcd"
endpoints = ["http://127.0.0.1:2379"]
"#;

#[test]
fn no_cluster_section_is_the_single_process_mode() {
    assert_eq!(Dir::new().ok(""), None);
}

#[test]
fn check_config_shows_the_section_with_its_defaults() {
    let d = Dir::new();
    let text = format!("{WORKLOAD}{MINIMAL}");
    let shown = d.parse(&text).expect("valid").describe_masked();
    let section = shown
        .split_once("[cluster]\n")
        .expect("a [cluster] section")
        .1;
    assert!(
        section.contains("lease_ttl = \"15s\"\nshards = 256"),
        "{section}"
    );
    assert!(
        !d.parse(WORKLOAD)
            .expect("valid")
            .describe_masked()
            .contains("[cluster]")
    );
}

#[test]
fn defaults() {
    let c = Dir::new().ok(MINIMAL).expect("a cluster");
    assert_eq!(c.backend, ClusterBackend::Etcd);
    assert_eq!(c.endpoints, ["http://127.0.0.1:2379"]);
    assert_eq!(c.prefix, "tokenvisor/");
    assert_eq!(c.member, None);
    assert_eq!(c.lease_ttl, Duration::from_secs(15));
    assert_eq!(c.shards.get(), 256);
    assert_eq!((c.ca_file, c.client_cert, c.auth), (None, None, None));
}

#[test]
fn every_key() {
    let d = Dir::new();
    let c = d
        .ok(r#"
[cluster]
backend = "etcd"
endpoints = ["https://10.0.0.1:2379", "https://10.0.0.2:2379"]
prefix = "/prod/tokenvisor"
member = "node-1"
lease_ttl = "20s"
shards = 1024
ca_file = "ca.pem"
cert_file = "cert.pem"
key_file = "key.pem"
user = "tokenvisor"
password_file = "etcd.password"
"#)
        .expect("a cluster");
    assert_eq!(c.prefix, "/prod/tokenvisor/");
    assert_eq!(c.member.as_deref(), Some("node-1"));
    assert_eq!(
        (c.lease_ttl, c.shards.get()),
        (Duration::from_secs(20), 1024)
    );
    assert_eq!(c.ca_file, Some(d.0.path().join("ca.pem")));
    assert_eq!(
        c.client_cert,
        Some((d.0.path().join("cert.pem"), d.0.path().join("key.pem")))
    );
    let shown = config::cluster::cluster_section(&c);
    for line in [
        "[cluster]",
        "endpoints = [\"https://10.0.0.1:2379\", \"https://10.0.0.2:2379\"]",
        "prefix = \"/prod/tokenvisor/\"",
        "lease_ttl = \"20s\"",
        "shards = 1024",
        "user = \"tokenvisor\"",
        "password = \"…\"  # from password_file",
    ] {
        assert!(
            shown.lines().any(|l| l == line),
            "{line:?} not in:\n{shown}"
        );
    }
    assert!(!shown.contains("etcd-pass"), "{shown}");
    assert!(
        !format!("{c:?}").contains("etcd-pass"),
        "the password never prints"
    );
    let (user, password) = c.auth.expect("auth");
    assert_eq!(
        (user.as_str(), password.expose()),
        ("tokenvisor", "etcd-pass")
    );
}

#[test]
fn rules() {
    let d = Dir::new();
    let head = "[cluster]\nbackend = \"etcd\"\n";
    let eps = "endpoints = [\"http://127.0.0.1:2379\"]\n";
    let rows: &[(&str, &str, &str, &str)] = &[
        // (cluster section, key, the line's text, reason)
        (
            "[cluster]\nendpoints = [\"http://a:1\"]\n",
            "cluster.backend",
            "[cluster]",
            "is required",
        ),
        (
            "[cluster]\nbackend = \"zookeeper\"\n",
            "cluster.backend",
            "zookeeper",
            "unknown variant",
        ),
        (head, "cluster.endpoints", "[cluster]", "is required"),
        (
            &format!("{head}endpoints = []\n"),
            "cluster.endpoints",
            "endpoints",
            "at least one",
        ),
        (
            &format!("{head}endpoints = [\"127.0.0.1:2379\"]\n"),
            "cluster.endpoints[0]",
            "endpoints",
            "host:port URL",
        ),
        (
            &format!("{head}endpoints = [\"http://u:p@h:1\"]\n"),
            "cluster.endpoints[0]",
            "endpoints",
            "host:port URL",
        ),
        (
            &format!("{head}endpoints = [\"http://a:1\", \"https://b:1\"]\nca_file = \"ca.pem\"\n"),
            "cluster.endpoints",
            "endpoints",
            "all http:// or all https://",
        ),
        (
            &format!("{head}endpoints = [\"https://a:1\"]\n"),
            "cluster.endpoints",
            "endpoints",
            "ca_file go together",
        ),
        (
            &format!("{head}{eps}lease_ttl = \"1s\"\n"),
            "cluster.lease_ttl",
            "lease_ttl",
            "at least 2s",
        ),
        (
            &format!("{head}{eps}lease_ttl = \"2500ms\"\n"),
            "cluster.lease_ttl",
            "lease_ttl",
            "whole seconds",
        ),
        (
            &format!("{head}{eps}lease_ttl = \"7s\"\n"),
            "cluster.lease_ttl",
            "lease_ttl",
            "workload \"app\"'s take 5s",
        ),
        (
            &format!("{head}{eps}shards = 0\n"),
            "cluster.shards",
            "shards",
            "between 1 and 65536",
        ),
        (
            &format!("{head}{eps}member = \"no spaces\"\n"),
            "cluster.member",
            "member",
            "",
        ),
        (
            &format!("{head}{eps}prefix = \"\"\n"),
            "cluster.prefix",
            "prefix",
            "non-empty",
        ),
        (
            &format!("{head}{eps}ca_file = \"missing.pem\"\n"),
            "cluster.ca_file",
            "missing.pem",
            "not a readable file",
        ),
        (
            &format!("{head}{eps}cert_file = \"cert.pem\"\n"),
            "cluster.cert_file",
            "[cluster]",
            "go together",
        ),
        (
            &format!("{head}{eps}user = \"u\"\n"),
            "cluster.user",
            "[cluster]",
            "go together",
        ),
        (
            &format!("{head}{eps}leas_ttl = \"5s\"\n"),
            "cluster.leas_ttl",
            "leas_ttl",
            "did you mean `lease_ttl`",
        ),
        // the default lease (15 s) with the default timeouts (30 + 5 + 1 + 2 = 38 s)
        (
            &format!("{head}{eps}{SLOW}"),
            "cluster.lease_ttl",
            "[cluster]",
            "workload \"slow\"'s take 38s (request_timeout + connect_timeout + 1s, + 2s to write the result to etcd): raise lease_ttl above 57s",
        ),
        ("[clustr]\n", "clustr", "[clustr]", "did you mean `cluster`"),
    ];
    for &(cluster, key, needle, reason) in rows {
        d.err(cluster, key, needle, reason);
    }
}
