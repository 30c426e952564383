//! One `tokenvisor run` instance of a cluster on a real etcd, as the cluster tests
//! (`tests/real/cluster_run.rs`) and the chaos run (`cluster_chaos`, with the `real`
//! feature) start it.
//!
//! Every instance has a directory of its own under the run's work directory (`i<N>/`: its
//! status and state directories, its copies of the client secrets and of the minted refresh
//! tokens, as on a machine of its own) and the same workload list and `[cluster]` table as
//! every other; they share only etcd and one admin token file (`<work>/admin.token`: the
//! token route redirects between instances). Its member id is `member-<N>`.

use std::path::PathBuf;

use tokenvisor_test_support::config::{ConfigFile, Table, quote};
use tokenvisor_test_support::daemon::{Daemon, Launch};

use crate::oidc::{secret_of, uses_basic};

/// A workload of the shared list.
#[derive(Debug, Clone, Copy)]
pub struct Grant<'a> {
    /// Its name.
    pub name: &'a str,
    /// The provider's client it uses.
    pub client: &'a str,
    /// A rotating refresh_token grant, minted into `<work>/<name>.rt` (each instance
    /// copies it the first time it starts); else client_credentials.
    pub rotating: bool,
}

/// What every instance of a run shares.
#[derive(Debug, Clone)]
pub struct Cluster {
    /// The run's work directory: `admin.token`, the minted `<workload>.rt`, `i<N>/`.
    pub work: PathBuf,
    /// The token endpoint of every workload.
    pub token_url: String,
    /// etcd's client URLs.
    pub endpoints: Vec<String>,
    /// `[cluster] prefix`.
    pub prefix: String,
    /// `[cluster] lease_ttl`, seconds.
    pub lease_ttl: u64,
    /// `[cluster] shards`.
    pub shards: u32,
    /// `[defaults] request_timeout`, seconds.
    pub request_timeout: u64,
    /// `[defaults] connect_timeout`, seconds.
    pub connect_timeout: u64,
}

impl Cluster {
    /// Instance `i`'s directory.
    pub fn dir(&self, i: usize) -> PathBuf {
        self.work.join(format!("i{i}"))
    }

    /// Instance `i`'s status directory.
    pub fn status_dir(&self, i: usize) -> PathBuf {
        self.dir(i).join("statuses")
    }

    /// Writes instance `i`'s files (first time: its copies of the minted refresh tokens)
    /// and its configuration for `workloads`; returns the configuration's path.
    pub fn write_config(&self, i: usize, workloads: &[Grant<'_>]) -> PathBuf {
        let dir = self.dir(i);
        std::fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display()));
        let mut c = ConfigFile::new(&self.status_dir(i));
        let token = self.work.join("admin.token");
        if !token.exists() {
            std::fs::write(&token, "cluster-admin-token-0123456789\n")
                .unwrap_or_else(|e| panic!("{}: {e}", token.display()));
        }
        c.service
            .str("state_dir", dir.join("state").to_string_lossy())
            .str("admin_listen", "127.0.0.1:0")
            .str("admin_token_file", token.to_string_lossy());
        c.defaults
            .str("request_timeout", format!("{}s", self.request_timeout))
            .str("connect_timeout", format!("{}s", self.connect_timeout));
        for w in workloads {
            let secret = dir.join(format!("{}.secret", w.name));
            std::fs::write(&secret, format!("{}\n", secret_of(w.client)))
                .unwrap_or_else(|e| panic!("{}: {e}", secret.display()));
            let table = if w.rotating {
                let file = dir.join(format!("{}.rt", w.name));
                if !file.exists() {
                    std::fs::copy(self.work.join(format!("{}.rt", w.name)), &file)
                        .unwrap_or_else(|e| panic!("{}: {e}", file.display()));
                }
                c.refresh_workload(
                    w.name,
                    &self.token_url,
                    w.client,
                    &secret.to_string_lossy(),
                    &file.to_string_lossy(),
                )
            } else {
                let mut t = Table::default();
                t.str("name", w.name)
                    .str("token_url", &self.token_url)
                    .str("client_id", w.client)
                    .str("client_secret_file", secret.to_string_lossy())
                    .str("grant", "client_credentials");
                c.workloads.push(t);
                c.workloads.last_mut().expect("just pushed")
            };
            let method = if uses_basic(w.client) {
                "basic"
            } else {
                "post"
            };
            table.str("auth_method", method);
        }
        let endpoints: Vec<String> = self.endpoints.iter().map(quote).collect();
        let text = format!(
            "{}\n[cluster]\nbackend = \"etcd\"\nendpoints = [{}]\nprefix = \"{}\"\n\
             member = \"member-{i}\"\nlease_ttl = \"{}s\"\nshards = {}\n",
            c.text(),
            endpoints.join(", "),
            self.prefix,
            self.lease_ttl,
            self.shards,
        );
        let config = dir.join("tokenvisor.toml");
        std::fs::write(&config, text).unwrap_or_else(|e| panic!("{}: {e}", config.display()));
        config
    }

    /// Writes instance `i`'s configuration and starts it (the workspace's `tokenvisor`
    /// built with `cluster`), its log in `stderr_file` if given; waits for its ready line.
    pub async fn spawn(
        &self,
        i: usize,
        workloads: &[Grant<'_>],
        stderr_file: Option<PathBuf>,
    ) -> Daemon {
        let config = self.write_config(i, workloads);
        let launch = Launch {
            stderr_file,
            ..Launch::default()
        };
        Daemon::start(crate::binary::tokenvisor_cluster_bin(), &config, launch).await
    }
}
