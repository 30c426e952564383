//! Metric names. Recorded through the `metrics` facade; the daemon installs a Prometheus
//! recorder. No metric is ever labelled by workload name (100,000 series would follow):
//! labels are states, outcomes and kinds — closed sets.

/// Gauge: live workloads per status (`status` label: running, auth_retrying, …), set from
/// the runtime's list when metrics are rendered (tokenvisor-admin), never counted by events.
pub const WORKLOADS: &str = "tokenvisor_workloads";
/// Counter: refresh attempts by `outcome` (ok, transient, permanent, not_sent: kept back by
/// the endpoint's own gate, `kind` rate_limited) and `kind`.
pub const REFRESH_ATTEMPTS: &str = "tokenvisor_refresh_attempts_total";
/// Histogram: seconds from sending a token request to its classified result.
pub const REFRESH_DURATION: &str = "tokenvisor_refresh_duration_seconds";
/// Counter: status files written durably.
pub const STATUS_WRITES: &str = "tokenvisor_status_writes_total";
/// Counter: failed status-file writes (each is retried).
pub const STATUS_WRITE_FAILURES: &str = "tokenvisor_status_write_failures_total";
/// Counter: status writes deferred because another process (ToolHive) held the file's lock.
pub const STATUS_WRITES_DEFERRED: &str = "tokenvisor_status_writes_deferred_total";
/// Gauge: status records waiting to be committed or written, once per place they wait (at
/// most three per workload: `persistence::PersistStats::pending`).
pub const STATUS_PENDING: &str = "tokenvisor_status_pending";
/// Counter: times an endpoint was put on hold by `Retry-After` (429/503).
pub const ENDPOINT_HOLDS: &str = "tokenvisor_endpoint_holds_total";
/// Counter: attempts not sent because their endpoint was on hold longer than they could wait.
pub const ENDPOINT_HELD_ATTEMPTS: &str = "tokenvisor_endpoint_held_attempts_total";
/// Counter: attempts that waited out their endpoint's hold, then were sent.
pub const ENDPOINT_HOLD_WAITS: &str = "tokenvisor_endpoint_hold_waits_total";
/// Attempts not sent: their endpoint is paced and had no start for them within their budget.
pub const ENDPOINT_PACED_ATTEMPTS: &str = "tokenvisor_endpoint_paced_attempts_total";
/// Attempts not sent: every request slot of their endpoint stayed busy for their whole budget.
pub const ENDPOINT_BUSY_ATTEMPTS: &str = "tokenvisor_endpoint_busy_attempts_total";
/// Attempts not sent: the token a `jwt_bearer` or `token_exchange` grant presents could not
/// be read, was empty, or is a JWT past its `exp`.
pub const CREDENTIAL_FILE_NOT_SENT: &str = "tokenvisor_credential_file_not_sent_total";
/// Counter: 429/503 answers judged sporadic (a small share of the endpoint's answers): only
/// their workload waited their `Retry-After`; the endpoint was neither held nor slowed.
pub const ENDPOINT_SPORADIC_THROTTLES: &str = "tokenvisor_endpoint_sporadic_throttles_total";
/// Refreshes retried with a refresh token that changed while the first try was answered
/// with a final error (someone else rotated or replaced it).
pub const REFRESH_TOKEN_ADOPTED: &str = "tokenvisor_refresh_token_adopted_total";
/// Counter: token actors restarted after a crash.
pub const ACTOR_RESTARTS: &str = "tokenvisor_actor_restarts_total";
/// Counter: workloads that spent their restart budget (status `error`).
pub const ACTOR_GAVE_UP: &str = "tokenvisor_actor_gave_up_total";
/// Counter: rotated refresh tokens that could not be written back (kept in memory).
pub const CREDENTIAL_WRITE_FAILURES: &str = "tokenvisor_credential_write_failures_total";
/// Counter: token sink file writes that failed.
pub const TOKEN_SINK_FAILURES: &str = "tokenvisor_token_sink_failures_total";
/// Histogram: seconds between the instant a token actor's timer was armed for and the
/// instant its message was handled (how late refreshes, retries and deadlines start).
pub const TIMER_LATENESS: &str = "tokenvisor_timer_lateness_seconds";
/// Gauge: 1 while the timer service runs, 0 while it is down (no timer can fire).
pub const TIMER_SERVICE_UP: &str = "tokenvisor_timer_service_up";
/// Counter: times the timer service was restarted after it ended.
pub const TIMER_SERVICE_RESTARTS: &str = "tokenvisor_timer_service_restarts_total";

/// Registers descriptions for every metric (call once after installing a recorder).
pub fn describe() {
    use metrics::{describe_counter, describe_gauge, describe_histogram};
    describe_gauge!(WORKLOADS, "Workloads per status.");
    describe_counter!(REFRESH_ATTEMPTS, "Refresh attempts by outcome and kind.");
    describe_histogram!(
        REFRESH_DURATION,
        metrics::Unit::Seconds,
        "Token request latency, send to classified result."
    );
    describe_counter!(STATUS_WRITES, "Status files written durably.");
    describe_counter!(
        STATUS_WRITE_FAILURES,
        "Failed status-file writes (retried)."
    );
    describe_gauge!(
        STATUS_PENDING,
        "Status records waiting to be committed or written, once per place they wait (at most 3 per workload)."
    );
    describe_counter!(
        STATUS_WRITES_DEFERRED,
        "Status writes deferred: another process held the file's lock (retried)."
    );
    describe_counter!(
        ENDPOINT_HOLDS,
        "Endpoint holds started by Retry-After on 429/503."
    );
    describe_counter!(
        ENDPOINT_HELD_ATTEMPTS,
        "Attempts not sent: their endpoint was on hold longer than they could wait."
    );
    describe_counter!(
        ENDPOINT_HOLD_WAITS,
        "Attempts that waited out their endpoint's hold, then were sent."
    );
    describe_counter!(
        ENDPOINT_PACED_ATTEMPTS,
        "Attempts not sent: their paced endpoint had no start for them within their budget."
    );
    describe_counter!(
        ENDPOINT_BUSY_ATTEMPTS,
        "Attempts not sent: their endpoint's request slots stayed busy for their whole budget."
    );
    describe_counter!(
        CREDENTIAL_FILE_NOT_SENT,
        "Attempts not sent: the assertion, subject or actor token file was unreadable, empty or an expired JWT."
    );
    describe_counter!(
        ENDPOINT_SPORADIC_THROTTLES,
        "429/503 answers judged sporadic: only their workload waited; the endpoint was not held."
    );
    describe_counter!(
        REFRESH_TOKEN_ADOPTED,
        "Final answers not believed: the refresh token had changed since; retried with it."
    );
    describe_counter!(ACTOR_RESTARTS, "Token actors restarted after a crash.");
    describe_counter!(ACTOR_GAVE_UP, "Workloads whose restart budget is spent.");
    describe_counter!(
        CREDENTIAL_WRITE_FAILURES,
        "Rotated refresh tokens not written back (kept in memory)."
    );
    describe_counter!(TOKEN_SINK_FAILURES, "Token sink file writes that failed.");
    describe_histogram!(
        TIMER_LATENESS,
        metrics::Unit::Seconds,
        "How late token actor timers fire (armed-for instant to handling)."
    );
    describe_gauge!(
        TIMER_SERVICE_UP,
        "1 while the timer service runs; 0 while no timer can fire."
    );
    describe_counter!(
        TIMER_SERVICE_RESTARTS,
        "Timer service restarts after it ended."
    );
    describe_cluster();
}

// ---------------------------------------------------------------------------------------
// Cluster mode (issue 12): present in `/metrics` only when cluster mode is on (the admin API
// sets the shard and fence series from the cluster view at each scrape; the etcd latency is
// recorded only by the etcd store). No workload label: ops and directions are closed sets.

/// Gauge: shards this instance holds.
pub const CLUSTER_SHARDS_OWNED: &str = "tokenvisor_cluster_shards_owned";
/// Counter: shard handovers by `direction` (`acquired`: a shard claimed; `released`: one
/// given up after its drain).
pub const CLUSTER_HANDOVERS: &str = "tokenvisor_cluster_handovers_total";
/// Counter: writes refused by the fence (this instance no longer held the shard).
pub const CLUSTER_FENCE_REJECTIONS: &str = "tokenvisor_cluster_fence_rejections_total";
/// Counter: fenced writes to etcd done (credentials and status records).
pub const CLUSTER_WRITES: &str = "tokenvisor_cluster_writes_total";
/// Counter: credential writes refused by the revision check (someone wrote it since).
pub const CLUSTER_CONFLICTS: &str = "tokenvisor_cluster_conflicts_total";
/// Gauge: 1 while etcd answers (the member lease was renewed within half its TTL), else 0.
pub const CLUSTER_ETCD_CONNECTED: &str = "tokenvisor_cluster_etcd_connected";
/// Histogram: seconds of one etcd request (`op`: get, claim, release, credential write,
/// status write, …), each try of a request refused before it was sent included.
pub const ETCD_REQUEST_DURATION: &str = "tokenvisor_etcd_request_duration_seconds";

/// Buckets of [`ETCD_REQUEST_DURATION`]: a local etcd answers in about a millisecond; the
/// request bound is 2 s.
pub const ETCD_REQUEST_BUCKETS: &[f64] = &[
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.0, 5.0,
];

/// Records one etcd request's duration.
#[cfg(feature = "cluster")]
pub(crate) fn observe_etcd_request(op: &'static str, took: std::time::Duration) {
    metrics::histogram!(ETCD_REQUEST_DURATION, "op" => op).record(took.as_secs_f64());
}

fn describe_cluster() {
    use metrics::{describe_counter, describe_gauge, describe_histogram};
    describe_gauge!(
        CLUSTER_SHARDS_OWNED,
        "Shards this instance holds (cluster mode)."
    );
    describe_counter!(
        CLUSTER_HANDOVERS,
        "Shard handovers by direction: acquired (claimed), released (after the drain)."
    );
    describe_counter!(
        CLUSTER_FENCE_REJECTIONS,
        "Writes refused by the fence: the shard was no longer this instance's."
    );
    describe_counter!(CLUSTER_WRITES, "Fenced writes to etcd done.");
    describe_counter!(
        CLUSTER_CONFLICTS,
        "Credential writes refused by the revision check."
    );
    describe_gauge!(
        CLUSTER_ETCD_CONNECTED,
        "1 while etcd renews this member's lease (within half its TTL), else 0."
    );
    describe_histogram!(
        ETCD_REQUEST_DURATION,
        metrics::Unit::Seconds,
        "etcd request latency by operation."
    );
}
