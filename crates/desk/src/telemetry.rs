//! What a node reports to Prometheus: names and labels of every metric the desk and
//! the gateway record, in one place. The `metrics` facade records nothing until the
//! binary installs an exporter, so libraries and tests pay nothing.

use std::time::Duration;

/// WebSocket connections open now, by role (`player`, `agent`).
pub const CONNECTIONS: &str = "pitboss_connections";
/// Conversations waiting in the queue, by department (set by the routing node).
pub const QUEUE_LENGTH: &str = "pitboss_queue_length";
/// Seconds from arrival in the queue to assignment, by department.
pub const QUEUE_WAIT: &str = "pitboss_queue_wait_seconds";
/// Transcript entries committed by this node, by kind (`text`, `note`, `event`).
pub const ENTRIES: &str = "pitboss_entries_total";
/// Seconds from receiving a `send`/`note` to its ack being queued.
pub const ACK_LATENCY: &str = "pitboss_ack_latency_seconds";
/// Store operations that failed, by error (`unavailable`, `overloaded`, …).
pub const STORE_ERRORS: &str = "pitboss_store_errors_total";
/// Seconds a Redis round trip took, by operation (`heartbeat`, `lease`, `presence`).
pub const REDIS_LATENCY: &str = "pitboss_redis_seconds";
/// Redis operations that failed, by operation.
pub const REDIS_ERRORS: &str = "pitboss_redis_errors_total";
/// Bus events this node could not publish (queue full) since it started.
pub const BUS_DROPPED: &str = "pitboss_bus_dropped_total";
/// Times this node recovered from the store what the bus may have lost.
pub const RESYNCS: &str = "pitboss_resyncs_total";
/// 1 while this node runs routing, else 0.
pub const LEADER: &str = "pitboss_routing_leader";
/// Connections closed as slow consumers.
pub const SLOW_CONSUMERS: &str = "pitboss_slow_consumer_disconnects_total";
/// Frames or connections refused by a rate limit, by limit.
pub const RATE_LIMITED: &str = "pitboss_rate_limited_total";
/// Frames refused with an error frame, by code.
pub const REFUSED: &str = "pitboss_refused_total";
/// Rows the scheduled retention purge deleted on this node, by kind
/// (`conversations`, `entries`, `events`, `handoffs`, `audit_records`).
pub const RETENTION_PURGED: &str = "pitboss_retention_purged_total";
/// Scheduled retention purges this node ran, by outcome (`ok`, `failed`).
pub const RETENTION_RUNS: &str = "pitboss_retention_runs_total";

/// Histogram buckets in seconds, from a millisecond to ten minutes: ack latency
/// lives at the low end, queue waits at the high end.
pub const BUCKETS: &[f64] = &[
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
    120.0, 300.0, 600.0,
];

/// Records a Redis round trip and its outcome.
pub(crate) fn redis<T, E>(op: &'static str, took: Duration, result: &Result<T, E>) {
    metrics::histogram!(REDIS_LATENCY, "op" => op).record(took.as_secs_f64());
    if result.is_err() {
        metrics::counter!(REDIS_ERRORS, "op" => op).increment(1);
    }
}

/// A role's label.
pub(crate) fn role(player: bool) -> &'static str {
    if player {
        "player"
    } else {
        "agent"
    }
}
