//! The member lease's keepalive: one task per store, one request in flight at a time, every
//! `ttl / 3`. Each answer confirms the lease until *the time its request was sent* plus the
//! TTL granted (`tokenvisor_core::cluster::lease_confirmed_until`): the server renewed it when
//! the request reached it, later than that, so our end is never after the server's. The
//! result is published in a `watch` channel, read without awaiting by whoever decides
//! whether a refresh may be sent (`tokenvisor_core::cluster::may_send`).
//!
//! A failed or silent stream (etcd unreachable, the member we talk to killed) is reopened;
//! while it is down nothing is confirmed, so the confirmed end stays where it was and the
//! send rule stops sends as it nears. An answer with TTL 0 means the lease is gone on the
//! server (expired or revoked): the state becomes `lost` and the task ends.

use std::time::Duration;

use etcd_client::LeaseClient;
use tokenvisor_core::Timestamp;
use tokenvisor_core::cluster::lease_confirmed_until;
use tokio::sync::watch;
use tokio::time::{Instant, sleep_until, timeout};

use crate::clock::Clock;

/// The member lease as this instance last confirmed it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct LeaseState {
    /// The lease's end as last confirmed (request sent + TTL granted); `None` before any
    /// confirmation.
    pub confirmed_until: Option<Timestamp>,
    /// The server said the lease is gone (expired or revoked).
    pub lost: bool,
    /// Keepalive answers received.
    pub renewals: u64,
}

/// Runs the keepalive of lease `id` (TTL `ttl`) until the lease is lost or every receiver
/// of `tx` is gone.
pub(super) async fn keep_alive(
    mut client: LeaseClient,
    id: i64,
    ttl: Duration,
    clock: Clock,
    tx: watch::Sender<LeaseState>,
) {
    let interval = (ttl / 3).max(Duration::from_millis(200));
    loop {
        if tx.is_closed() {
            return;
        }
        let Ok((mut keeper, mut stream)) = client.keep_alive(id).await else {
            tokio::time::sleep(interval / 4).await;
            continue;
        };
        loop {
            let (sent, sent_at) = (clock.now(), Instant::now());
            if keeper.keep_alive().await.is_err() {
                break;
            }
            match timeout(interval, stream.message()).await {
                Ok(Ok(Some(answer))) if answer.ttl() > 0 => {
                    let granted = Duration::from_secs(answer.ttl().unsigned_abs());
                    let until = lease_confirmed_until(sent, granted);
                    tx.send_modify(|s| {
                        s.confirmed_until = Some(s.confirmed_until.map_or(until, |u| u.max(until)));
                        s.renewals += 1;
                    });
                }
                Ok(Ok(Some(_))) => {
                    tx.send_modify(|s| s.lost = true);
                    return;
                }
                // the stream ended, failed, or did not answer in time: open a new one
                Ok(Ok(None) | Err(_)) | Err(_) => break,
            }
            if tx.is_closed() {
                return;
            }
            sleep_until(sent_at + interval).await;
        }
        tokio::time::sleep(interval / 4).await;
    }
}
