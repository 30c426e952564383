//! The membership watch: the live members (the keys under `members/`, each bound to its
//! member's lease), listed once and then kept current by an etcd watch from the listed
//! revision on. A failed or cancelled watch (etcd unavailable, a compaction) lists again.
//! The list is published sorted in a `watch` channel; the task ends when every receiver is
//! gone.

use std::collections::BTreeSet;
use std::time::Duration;

use etcd_client::{Client, EventType, GetOptions, WatchOptions};
use tokio::sync::watch;

/// Lists the members under `prefix` (keys `prefix + id`): the ids and the revision read.
pub(super) async fn list(
    client: &mut Client,
    prefix: &str,
) -> Result<(BTreeSet<String>, i64), etcd_client::Error> {
    let answer = client
        .get(prefix, Some(GetOptions::new().with_prefix()))
        .await?;
    let revision = answer
        .header()
        .map_or(0, etcd_client::ResponseHeader::revision);
    let ids = answer
        .kvs()
        .iter()
        .filter_map(|kv| kv.key_str().ok()?.strip_prefix(prefix).map(str::to_owned))
        .collect();
    Ok((ids, revision))
}

/// Keeps `tx` equal to the live members under `prefix` until every receiver is gone.
pub(super) async fn watch_members(
    mut client: Client,
    prefix: String,
    tx: watch::Sender<Vec<String>>,
) {
    let retry = Duration::from_millis(500);
    while !tx.is_closed() {
        let Ok((mut ids, revision)) = list(&mut client, &prefix).await else {
            tokio::time::sleep(retry).await;
            continue;
        };
        tx.send_if_modified(|v| replace(v, &ids));
        let options = WatchOptions::new()
            .with_prefix()
            .with_start_revision(revision + 1);
        let Ok(mut stream) = client.watch(prefix.as_str(), Some(options)).await else {
            tokio::time::sleep(retry).await;
            continue;
        };
        loop {
            let message = tokio::select! {
                m = stream.message() => m,
                () = tx.closed() => return,
            };
            let Ok(Some(answer)) = message else { break };
            if answer.canceled() {
                break;
            }
            for event in answer.events() {
                let Some(id) = event
                    .kv()
                    .and_then(|kv| kv.key_str().ok()?.strip_prefix(prefix.as_str()))
                else {
                    continue;
                };
                match event.event_type() {
                    EventType::Put => ids.insert(id.to_owned()),
                    EventType::Delete => ids.remove(id),
                };
            }
            tx.send_if_modified(|v| replace(v, &ids));
        }
        tokio::time::sleep(retry).await;
    }
}

/// Sets `v` to `ids` (sorted); whether it changed.
fn replace(v: &mut Vec<String>, ids: &BTreeSet<String>) -> bool {
    let changed = v.len() != ids.len() || v.iter().zip(ids).any(|(a, b)| a != b);
    if changed {
        *v = ids.iter().cloned().collect();
    }
    changed
}
