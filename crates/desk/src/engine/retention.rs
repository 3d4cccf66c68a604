//! Scheduled retention: on the node that runs routing, every interval, deletes the
//! closed conversations that closed longer ago than the retention period, and the
//! audit records older than the audit retention period. It owns the schedule and
//! what is logged and counted; what a purge deletes, and how it keeps live chats
//! flowing while it does, is the store's `purge_closed` and `purge_audit`.

use super::Desk;
use crate::telemetry;
use pitboss_transcripts::{now_ms, PURGE_CHUNK};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// The first purge runs this long after the desk started (or after one interval,
/// if that is shorter): soon, but not in the middle of a start, while the lease is
/// still being settled and clients are reconnecting.
const FIRST_PURGE_AFTER: Duration = Duration::from_secs(10);

/// The shortest interval between purges, whatever is configured.
const MIN_INTERVAL: Duration = Duration::from_millis(100);

impl Desk {
    /// Starts the scheduled purge, if a retention period is configured. It runs on
    /// every node and purges only on the one that runs routing at the time, so
    /// one node purges at a time; should two overlap while the lease changes hands,
    /// the store's purge is harmless to repeat (each row is deleted once).
    pub(super) fn schedule_retention(self: &Arc<Self>) {
        let (keep_ms, keep_audit_ms) = (self.config.retention_ms, self.config.audit_retention_ms);
        if keep_ms.is_none() && keep_audit_ms.is_none() {
            return;
        }
        let every = Duration::from_millis(self.config.retention_interval_ms).max(MIN_INTERVAL);
        let weak = Arc::downgrade(self);
        tracing::info!(
            retention_days = keep_ms.map(|ms| ms / 86_400_000),
            audit_retention_days = keep_audit_ms.map(|ms| ms / 86_400_000),
            interval_secs = every.as_secs_f64(),
            "retention purges scheduled on the routing node"
        );
        tokio::spawn(async move {
            let mut next = tokio::time::Instant::now() + every.min(FIRST_PURGE_AFTER);
            loop {
                tokio::time::sleep_until(next).await;
                next = tokio::time::Instant::now() + every;
                let Some(desk) = weak.upgrade() else { break };
                if desk.draining.load(Ordering::Relaxed) {
                    break;
                }
                if !desk.is_leader() {
                    tracing::debug!("retention purge left to the routing node");
                    continue;
                }
                if let Some(keep_ms) = keep_ms {
                    desk.purge_expired(keep_ms).await;
                }
                if let Some(keep_ms) = keep_audit_ms {
                    desk.purge_expired_audit(keep_ms).await;
                }
            }
        });
    }

    /// One purge of everything closed more than `keep_ms` ago; logged and counted.
    /// A failure is logged: the next run carries on where this one stopped.
    async fn purge_expired(&self, keep_ms: u64) {
        let closed_before = now_ms().saturating_sub(keep_ms);
        let started = Instant::now();
        match self.store.purge_closed(closed_before, PURGE_CHUNK).await {
            Ok(purged) => {
                let d = purged.deleted;
                for (kind, count) in [
                    ("conversations", d.conversations),
                    ("entries", d.entries),
                    ("events", d.events),
                    ("handoffs", d.handoffs),
                ] {
                    metrics::counter!(telemetry::RETENTION_PURGED, "kind" => kind).increment(count);
                }
                metrics::counter!(telemetry::RETENTION_RUNS, "outcome" => "ok").increment(1);
                tracing::info!(
                    conversations = d.conversations,
                    entries = d.entries,
                    events = d.events,
                    handoffs = d.handoffs,
                    chunks = purged.chunks,
                    closed_before,
                    took_ms = started.elapsed().as_millis() as u64,
                    "retention purge done"
                );
            }
            Err(err) => {
                metrics::counter!(telemetry::RETENTION_RUNS, "outcome" => "failed").increment(1);
                tracing::warn!(%err, closed_before, "retention purge failed; the next run carries on");
            }
        }
    }

    /// One purge of the audit records older than `keep_ms`; logged and counted
    /// like [`Desk::purge_expired`].
    async fn purge_expired_audit(&self, keep_ms: u64) {
        let before = now_ms().saturating_sub(keep_ms);
        let started = Instant::now();
        match self.store.purge_audit(before, PURGE_CHUNK).await {
            Ok(records) => {
                metrics::counter!(telemetry::RETENTION_PURGED, "kind" => "audit_records")
                    .increment(records);
                metrics::counter!(telemetry::RETENTION_RUNS, "outcome" => "ok").increment(1);
                tracing::info!(
                    audit_records = records,
                    before,
                    took_ms = started.elapsed().as_millis() as u64,
                    "audit retention purge done"
                );
            }
            Err(err) => {
                metrics::counter!(telemetry::RETENTION_RUNS, "outcome" => "failed").increment(1);
                tracing::warn!(%err, before, "audit retention purge failed; the next run carries on");
            }
        }
    }
}
