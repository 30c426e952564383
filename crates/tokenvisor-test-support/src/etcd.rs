//! A real etcd cluster for tests: `n` members of Debian's `etcd-server` (3.4, `/usr/bin/etcd`)
//! on 127.0.0.1, each with its own data directory (removed on drop) and free client and
//! peer ports, formed with `--initial-cluster`; started and waited for (every member's
//! `/health`, bounded), killed by PID (SIGKILL through `Child::kill`) and reaped on drop.
//! A member killed ([`EtcdCluster::kill`]) can be started again over its data directory
//! ([`EtcdCluster::restart`]): it rejoins with its identity and catches up.
//! Without etcd installed, starting fails with the command that installs it.
//!
//! [`EtcdCluster::start_tls`] serves clients over TLS only ([`EtcdTls`]: the server's
//! certificate and key, and the CA whose client certificates it requires); its health is
//! then read on a plain-HTTP metrics port of its own (`--listen-metrics-urls`).

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use crate::wait::poll_until;

/// The package that provides the binary (Debian 12: etcd 3.4.23).
pub const INSTALL: &str = "apt-get install -y etcd-server";

/// How long a cluster may take to elect a leader and answer `/health`.
pub const START_LIMIT: Duration = Duration::from_secs(30);

/// One etcd member.
#[derive(Debug)]
struct Member {
    name: String,
    client: u16,
    peer: u16,
    /// The plain-HTTP port `/health` is read on (the client port unless TLS).
    health: u16,
    child: Option<Child>,
}

/// TLS for the client port: etcd serves `cert`/`key` and requires a client certificate
/// issued by `ca` (PEM files).
#[derive(Debug, Clone)]
pub struct EtcdTls {
    /// The CA that issued the server's certificate and the clients'.
    pub ca: PathBuf,
    /// The server's certificate (for 127.0.0.1).
    pub cert: PathBuf,
    /// Its key.
    pub key: PathBuf,
}

/// A running etcd cluster on 127.0.0.1.
#[derive(Debug)]
pub struct EtcdCluster {
    members: Vec<Member>,
    dir: tempfile::TempDir,
    scheme: &'static str,
    launch: Launch,
}

/// What every member is started with (kept to start a killed one again).
#[derive(Debug)]
struct Launch {
    bin: PathBuf,
    /// `--initial-cluster`.
    initial: String,
    /// `--initial-cluster-token`.
    token: String,
    tls: Option<EtcdTls>,
}

/// The etcd binary: `$ETCD_BIN`, else `/usr/bin/etcd`, else `etcd` on `PATH`.
fn binary() -> Option<PathBuf> {
    let candidates = [
        std::env::var_os("ETCD_BIN").map(PathBuf::from),
        Some(PathBuf::from("/usr/bin/etcd")),
    ];
    candidates
        .into_iter()
        .flatten()
        .find(|p| p.is_file())
        .or_else(|| {
            let path = std::env::var_os("PATH")?;
            std::env::split_paths(&path)
                .map(|d| d.join("etcd"))
                .find(|p| p.is_file())
        })
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .unwrap_or_else(|e| panic!("no free port on 127.0.0.1: {e}"))
}

/// Whether the member at `port` answers `/health` with `"health":"true"` (a blocking check,
/// bounded by short timeouts).
fn healthy(port: u16) -> bool {
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let Ok(mut s) = TcpStream::connect_timeout(&addr, Duration::from_millis(200)) else {
        return false;
    };
    let _ = s.set_read_timeout(Some(Duration::from_millis(500)));
    let request = format!("GET /health HTTP/1.0\r\nHost: 127.0.0.1:{port}\r\n\r\n");
    let mut answer = String::new();
    s.write_all(request.as_bytes()).is_ok()
        && s.read_to_string(&mut answer).is_ok()
        && answer.contains("\"health\":\"true\"")
}

impl EtcdCluster {
    /// Starts `n` members and waits (bounded) until each answers healthy.
    pub async fn start(n: usize) -> EtcdCluster {
        Self::start_with(n, None).await
    }

    /// Starts `n` members serving clients over TLS only, requiring client certificates.
    pub async fn start_tls(n: usize, tls: &EtcdTls) -> EtcdCluster {
        Self::start_with(n, Some(tls)).await
    }

    async fn start_with(n: usize, tls: Option<&EtcdTls>) -> EtcdCluster {
        let bin = binary().unwrap_or_else(|| {
            panic!("etcd is not installed (these tests need a real etcd 3.4): {INSTALL}")
        });
        let dir = crate::fs::tempdir();
        let members: Vec<Member> = (0..n)
            .map(|i| {
                let client = free_port();
                Member {
                    name: format!("m{i}"),
                    client,
                    peer: free_port(),
                    health: if tls.is_some() { free_port() } else { client },
                    child: None,
                }
            })
            .collect();
        let initial: Vec<String> = members
            .iter()
            .map(|m| format!("{}=http://127.0.0.1:{}", m.name, m.peer))
            .collect();
        let token = format!("tv-{}", dir.path().display()).replace(['/', '.'], "-");
        let mut cluster = EtcdCluster {
            members,
            dir,
            scheme: if tls.is_some() { "https" } else { "http" },
            launch: Launch {
                bin,
                initial: initial.join(","),
                token,
                tls: tls.cloned(),
            },
        };
        for i in 0..n {
            let child = cluster.spawn_member(i);
            cluster.members[i].child = Some(child);
        }
        let ports: Vec<u16> = cluster.members.iter().map(|m| m.health).collect();
        let up = poll_until(START_LIMIT, Duration::from_millis(100), || {
            ports.iter().all(|&p| healthy(p))
        })
        .await;
        assert!(
            up,
            "etcd did not get healthy within {START_LIMIT:?}; logs: {}",
            cluster.logs()
        );
        cluster
    }

    /// Starts member `i`'s process over its data directory (a new member at the cluster's
    /// formation; the same member again after [`EtcdCluster::kill`]: etcd then ignores the
    /// `--initial-*` flags and rejoins from its data). Its log is appended to.
    fn spawn_member(&self, i: usize) -> Child {
        let m = &self.members[i];
        let l = &self.launch;
        let data = self.dir.path().join(&m.name);
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.path().join(format!("{}.log", m.name)))
            .unwrap_or_else(|e| panic!("etcd log file: {e}"));
        let client = format!("{}://127.0.0.1:{}", self.scheme, m.client);
        let peer = format!("http://127.0.0.1:{}", m.peer);
        let mut command = Command::new(&l.bin);
        if let Some(tls) = &l.tls {
            command
                .arg("--cert-file")
                .arg(&tls.cert)
                .arg("--key-file")
                .arg(&tls.key)
                .arg("--trusted-ca-file")
                .arg(&tls.ca)
                .arg("--client-cert-auth")
                .arg("--listen-metrics-urls")
                .arg(format!("http://127.0.0.1:{}", m.health));
        }
        command
            .arg("--name")
            .arg(&m.name)
            .arg("--data-dir")
            .arg(&data)
            .args([
                "--listen-client-urls",
                &client,
                "--advertise-client-urls",
                &client,
            ])
            .args([
                "--listen-peer-urls",
                &peer,
                "--initial-advertise-peer-urls",
                &peer,
            ])
            .args(["--initial-cluster", &l.initial])
            .args([
                "--initial-cluster-state",
                "new",
                "--initial-cluster-token",
                &l.token,
            ])
            .args(["--log-outputs", "stderr", "--logger", "zap"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {}: {e} ({INSTALL})", l.bin.display()))
    }

    /// Every member's client endpoint, `http://127.0.0.1:PORT` (`https://` with TLS).
    pub fn endpoints(&self) -> Vec<String> {
        (0..self.members.len()).map(|i| self.endpoint(i)).collect()
    }

    /// Member `i`'s client endpoint.
    pub fn endpoint(&self, i: usize) -> String {
        format!("{}://127.0.0.1:{}", self.scheme, self.members[i].client)
    }

    /// Whether member `i` answers healthy now.
    pub fn is_healthy(&self, i: usize) -> bool {
        healthy(self.members[i].health)
    }

    /// Member `i`'s PID, while it runs.
    pub fn pid(&self, i: usize) -> Option<u32> {
        self.members[i].child.as_ref().map(Child::id)
    }

    /// `kill -9` member `i` (by its PID) and reap it.
    pub fn kill(&mut self, i: usize) {
        if let Some(mut child) = self.members[i].child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts member `i` again after [`EtcdCluster::kill`] (same name, ports and data
    /// directory: it rejoins the cluster and catches up from the leader), and waits (bounded)
    /// until it answers healthy. Nothing happens while it runs.
    pub async fn restart(&mut self, i: usize) {
        if self.members[i].child.is_some() {
            return;
        }
        let child = self.spawn_member(i);
        self.members[i].child = Some(child);
        let port = self.members[i].health;
        let up = poll_until(START_LIMIT, Duration::from_millis(100), || healthy(port)).await;
        assert!(
            up,
            "etcd member {i} did not get healthy again within {START_LIMIT:?}; logs: {}",
            self.logs()
        );
    }

    /// Where the members' data directories and logs are.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// The tail of every member's log (for a failure message).
    pub fn logs(&self) -> String {
        let mut out = String::new();
        for m in &self.members {
            let text = std::fs::read_to_string(self.dir.path().join(format!("{}.log", m.name)))
                .unwrap_or_default();
            let tail: Vec<&str> = text.lines().rev().take(5).collect();
            out.push_str(&format!(
                "\n--- {}:\n{}",
                m.name,
                tail.into_iter().rev().collect::<Vec<_>>().join("\n")
            ));
        }
        out
    }
}

impl Drop for EtcdCluster {
    fn drop(&mut self) {
        for i in 0..self.members.len() {
            self.kill(i);
        }
    }
}
