//! The bare ceilings tokenvisor is compared with, measured in the same run:
//! - [`refresh_loop`]: N refresh requests through one shared `reqwest::Client` built with the
//!   same settings as tokenvisor's `HttpTransport`, at a fixed concurrency;
//! - [`refresh_loop`] with a [`DurableSink`]: the same, plus a durable write of each rotated
//!   refresh token through tokenvisor's state journal (SQLite, one writer thread committing
//!   everything ready in one transaction: group commit) before the request counts — the
//!   ceiling of a durable refresh;
//! - [`write_loops`]: `status_store::write_atomic` over N files, sequentially and with K
//!   threads.

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

use tokio::time::Instant;

use crate::Context as _;
use tokenvisor::HttpConfig;
use tokenvisor_core::{StatusRecord, WorkloadName};

use super::harness::Client;

/// What the bare refresh loop measured.
#[derive(Debug, Clone, Copy)]
pub(crate) struct LoopResult {
    /// Wall time for all N requests.
    pub(crate) elapsed: Duration,
    /// Answers 200.
    pub(crate) ok: u64,
    /// Everything else (other statuses, transport errors, timeouts).
    pub(crate) failed: u64,
}

/// The client tokenvisor's transport builds (`oauth.rs`, `build_client`): same user agent,
/// no redirects, same connect timeout, pool and keepalive settings, no referer, no proxy.
/// Keep the two in step.
fn client_like_tokenvisor(http: &HttpConfig) -> crate::Result<reqwest::Client> {
    let mut builder = reqwest::Client::builder()
        .user_agent(http.user_agent.clone())
        .redirect(reqwest::redirect::Policy::none())
        .connect_timeout(http.connect_timeout)
        .pool_idle_timeout(http.pool_idle_timeout)
        .pool_max_idle_per_host(http.pool_max_idle_per_host)
        .tcp_keepalive(http.tcp_keepalive)
        .referer(false);
    if !http.use_env_proxy {
        builder = builder.no_proxy();
    }
    builder.build().context("cannot build the baseline client")
}

/// `application/x-www-form-urlencoded` for one value (what oauth2 sends).
fn form_value(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'*' => {
                out.push(char::from(b));
            }
            b' ' => out.push('+'),
            other => out.push_str(&format!("%{other:02X}")),
        }
    }
    out
}

/// A writer thread holding a state journal: each rotated token sent to it is committed
/// (everything ready in one transaction) and acknowledged once durable.
pub(crate) struct DurableSink {
    tx: std::sync::Mutex<
        std::sync::mpsc::Sender<(String, String, tokio::sync::oneshot::Sender<bool>)>,
    >,
}

impl DurableSink {
    /// Opens a journal in `dir` and starts its writer thread (it ends when the sink is dropped).
    pub(crate) fn open(dir: &Path) -> crate::Result<Arc<Self>> {
        let mut journal =
            tokenvisor::journal::Journal::open(dir).context("cannot open the baseline journal")?;
        let (tx, rx) =
            std::sync::mpsc::channel::<(String, String, tokio::sync::oneshot::Sender<bool>)>();
        std::thread::spawn(move || {
            while let Ok(first) = rx.recv() {
                let mut batch = vec![first];
                batch.extend(rx.try_iter());
                let patches: Vec<(WorkloadName, tokenvisor::journal::Patch)> = batch
                    .iter()
                    .filter_map(|(name, token, _)| {
                        let name = WorkloadName::new(name).ok()?;
                        Some((
                            name,
                            tokenvisor::journal::Patch {
                                credential: Some(tokenvisor::journal::StoredCredential {
                                    refresh_token: Some(tokenvisor_core::Secret::from(
                                        token.as_str(),
                                    )),
                                    generation: 1,
                                }),
                                ..Default::default()
                            },
                        ))
                    })
                    .collect();
                let ok = journal.commit(patches.iter().map(|(n, p)| (n, p))).is_ok();
                for (_, _, reply) in batch {
                    let _ = reply.send(ok);
                }
            }
        });
        Ok(Arc::new(DurableSink {
            tx: std::sync::Mutex::new(tx),
        }))
    }

    /// Commits `token` for `name`; true once durable.
    async fn save(&self, name: &str, token: String) -> bool {
        let (reply, done) = tokio::sync::oneshot::channel();
        let sent = self
            .tx
            .lock()
            .map(|tx| tx.send((name.to_owned(), token, reply)).is_ok())
            .unwrap_or(false);
        sent && done.await.unwrap_or(false)
    }
}

/// One refresh-token grant per client (each client's own grant, so every request is a valid
/// refresh with rotation, exactly the server work tokenvisor's refreshes cause), `concurrency`
/// requests in flight, each bounded by `timeout` like tokenvisor's; the body of every answer
/// is read in full.
pub(crate) async fn refresh_loop(
    http: &HttpConfig,
    token_url: &str,
    clients: Vec<Client>,
    concurrency: usize,
    timeout: Duration,
    durable: Option<Arc<DurableSink>>,
) -> crate::Result<LoopResult> {
    let client = client_like_tokenvisor(http)?;
    let clients = Arc::new(clients);
    let next = Arc::new(AtomicUsize::new(0));
    let ok = Arc::new(AtomicU64::new(0));
    let failed = Arc::new(AtomicU64::new(0));
    let url: Arc<str> = token_url.into();
    let started = tokio::time::Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..concurrency.max(1) {
        let durable = durable.clone();
        let (client, clients, next, ok, failed, url) = (
            client.clone(),
            Arc::clone(&clients),
            Arc::clone(&next),
            Arc::clone(&ok),
            Arc::clone(&failed),
            Arc::clone(&url),
        );
        tasks.spawn(async move {
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                let Some(c) = clients.get(i) else {
                    break;
                };
                let body = format!(
                    "grant_type=refresh_token&refresh_token={}",
                    form_value(c.refresh_token())
                );
                let request = client
                    .post(&*url)
                    .basic_auth(form_value(&c.id), Some(form_value(c.secret())))
                    .header(reqwest::header::ACCEPT, "application/json")
                    .header(
                        reqwest::header::CONTENT_TYPE,
                        "application/x-www-form-urlencoded",
                    )
                    .body(body);
                let answer = tokio::time::timeout(timeout, async {
                    let resp = request.send().await?;
                    let status = resp.status();
                    let body = resp.bytes().await?;
                    Ok::<_, reqwest::Error>((status, body))
                })
                .await;
                let saved = match (&durable, &answer) {
                    (Some(sink), Ok(Ok((_, body)))) => {
                        let token = serde_json::from_slice::<serde_json::Value>(body)
                            .ok()
                            .and_then(|v| v.get("refresh_token")?.as_str().map(str::to_owned));
                        match token {
                            Some(token) => sink.save(&c.id, token).await,
                            None => false,
                        }
                    }
                    (Some(_), Ok(Err(_)) | Err(_)) | (None, _) => true,
                };
                match answer {
                    Ok(Ok((status, _))) if status == reqwest::StatusCode::OK && saved => {
                        ok.fetch_add(1, Ordering::Relaxed);
                    }
                    Ok(Ok(_) | Err(_)) | Err(_) => {
                        failed.fetch_add(1, Ordering::Relaxed);
                    }
                }
            }
        });
    }
    while let Some(done) = tasks.join_next().await {
        done.context("a baseline task failed")?;
    }
    Ok(LoopResult {
        elapsed: started.elapsed(),
        ok: ok.load(Ordering::Relaxed),
        failed: failed.load(Ordering::Relaxed),
    })
}

/// What the bare write loops measured (files per second).
#[derive(Debug, Clone)]
pub(crate) struct WriteLoops {
    /// Files written by each loop.
    pub(crate) files: usize,
    /// One thread.
    pub(crate) sequential_per_sec: f64,
    /// (threads, files/s) for each K.
    pub(crate) parallel: Vec<(usize, f64)>,
    /// Write errors (any loop).
    pub(crate) errors: u64,
}

impl WriteLoops {
    /// The best parallel loop: (threads, files/s).
    pub(crate) fn best_parallel(&self) -> (usize, f64) {
        self.parallel
            .iter()
            .copied()
            .fold((0, 0.0), |best, p| if p.1 > best.1 { p } else { best })
    }
}

/// Thread counts of the parallel loops.
pub(crate) const THREADS: [usize; 4] = [2, 4, 8, 16];

/// `write_atomic` of `records` into `dir` (existing files are replaced, as tokenvisor's
/// writes replace them): first an untimed pass that creates every file, then a timed
/// sequential pass, then a timed pass with each K of [`THREADS`]. Blocking: call it from
/// `spawn_blocking`.
pub(crate) fn write_loops(
    dir: &Path,
    records: &[(WorkloadName, StatusRecord)],
) -> crate::Result<WriteLoops> {
    tokenvisor::ensure_status_dir(dir)?;
    let errors = AtomicU64::new(0);
    let pass = |threads: usize| -> Duration {
        let started = Instant::now();
        let next = AtomicUsize::new(0);
        std::thread::scope(|s| {
            for _ in 0..threads {
                s.spawn(|| {
                    loop {
                        let i = next.fetch_add(1, Ordering::Relaxed);
                        let Some((name, record)) = records.get(i) else {
                            break;
                        };
                        if tokenvisor::write_status(dir, name, record).is_err() {
                            errors.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                });
            }
        });
        started.elapsed()
    };
    let per_sec = |d: Duration| records.len() as f64 / d.as_secs_f64().max(1e-9);
    // Create the files (untimed), so every timed pass replaces existing files.
    pass(16);
    // The sequential loop runs on this thread alone (no scope overhead worth counting).
    let sequential = {
        let started = Instant::now();
        for (name, record) in records {
            if tokenvisor::write_status(dir, name, record).is_err() {
                errors.fetch_add(1, Ordering::Relaxed);
            }
        }
        started.elapsed()
    };
    let parallel = THREADS.iter().map(|&k| (k, per_sec(pass(k)))).collect();
    Ok(WriteLoops {
        files: records.len(),
        sequential_per_sec: per_sec(sequential),
        parallel,
        errors: errors.load(Ordering::Relaxed),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn form_values_are_encoded_like_oauth2_does() {
        assert_eq!(form_value("rt_abc-XYZ.09"), "rt_abc-XYZ.09");
        assert_eq!(form_value("a b+c/d"), "a+b%2Bc%2Fd");
    }

    #[test]
    fn write_loops_write_every_file() {
        let dir = tempfile::tempdir().unwrap();
        let record = StatusRecord {
            status: tokenvisor_core::WorkloadStatus::Running,
            status_context: String::new(),
            created_at: tokenvisor_core::Timestamp::from_millis(1),
            updated_at: tokenvisor_core::Timestamp::from_millis(2),
            process_id: 1,
            token: None,
        };
        let records: Vec<_> = (0..20)
            .map(|i| (WorkloadName::new(&format!("w{i}")).unwrap(), record.clone()))
            .collect();
        let out = write_loops(dir.path(), &records).unwrap();
        assert_eq!(out.errors, 0);
        assert_eq!(out.files, 20);
        assert_eq!(out.parallel.len(), THREADS.len());
        // Each file and its lock file (kept between writes).
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 40);
    }
}
