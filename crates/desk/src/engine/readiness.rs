//! Whether this node takes new conversations: not draining, its store answers,
//! and (in a cluster) Redis takes its heartbeats. A `start` on a node that is not
//! ready is refused at once with `overloaded` instead of waiting for a store or a
//! router that cannot answer; conversations already open carry on as far as the
//! failing dependency allows.

use super::*;

/// Why this node takes no new conversations now.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NotReady {
    /// The node is shutting down.
    #[error("draining")]
    Draining,
    /// The store did not answer a probe for three heartbeats (three seconds at
    /// least).
    #[error("store: {0}")]
    Store(String),
    /// Redis did not accept a heartbeat for three heartbeats.
    #[error("{0}")]
    Redis(String),
}

/// What the store probe last saw. Behind a std mutex: updated and read in short
/// critical sections, never across an await.
#[derive(Debug)]
pub(super) struct StoreHealth {
    /// When the store last answered a probe (or the desk started on it).
    last_ok: Instant,
    /// When the last probe was sent.
    last_probe: Option<Instant>,
    /// The last failure, for the refusal and `/readyz`.
    last_error: Option<String>,
}

impl StoreHealth {
    pub(super) fn new() -> Self {
        Self {
            last_ok: Instant::now(),
            last_probe: None,
            last_error: None,
        }
    }
}

impl Desk {
    /// The period of the store probe: a heartbeat.
    fn probe_period(&self) -> Duration {
        Duration::from_millis(self.config.heartbeat_ms.max(100))
    }

    /// How long the store may go without answering a probe before new
    /// conversations are refused: three probes, and never under three seconds,
    /// so that a busy machine (a probe late or slow for a moment) refuses nobody.
    fn store_tolerance(&self) -> Duration {
        (3 * self.probe_period())
            .max(3 * Duration::from_millis(self.config.tick_ms))
            .max(Duration::from_secs(3))
    }

    /// Probes the store once a heartbeat (called every tick). Bounded (a
    /// heartbeat, at least a second): a store that hangs counts as failing.
    pub(super) async fn probe_store(&self) {
        let period = self.probe_period();
        {
            let mut health = self.store_health();
            if health.last_probe.is_some_and(|t| t.elapsed() < period) {
                return;
            }
            health.last_probe = Some(Instant::now());
        }
        let bound = period.max(Duration::from_secs(1));
        let result = tokio::time::timeout(bound, self.store.ping()).await;
        let mut health = self.store_health();
        match result {
            Ok(Ok(())) => {
                if health.last_error.take().is_some() {
                    tracing::info!("the store answers again: taking new conversations");
                }
                health.last_ok = Instant::now();
            }
            Ok(Err(err)) => {
                tracing::debug!(%err, "store probe failed");
                health.last_error = Some(err.to_string());
            }
            Err(_) => {
                tracing::debug!("store probe timed out");
                health.last_error = Some("no answer in time".into());
            }
        }
    }

    fn store_health(&self) -> std::sync::MutexGuard<'_, StoreHealth> {
        self.store_health
            .lock()
            .expect("store health lock poisoned")
    }

    /// Whether this node takes new conversations now: not draining, the store
    /// answered a probe lately (see `store_tolerance`), and (in a cluster) Redis
    /// accepted a heartbeat within three heartbeats.
    pub fn readiness(&self) -> Result<(), NotReady> {
        if self.is_draining() {
            return Err(NotReady::Draining);
        }
        {
            let health = self.store_health();
            if health.last_ok.elapsed() > self.store_tolerance() {
                let why = health
                    .last_error
                    .clone()
                    .unwrap_or_else(|| "no answer in time".into());
                return Err(NotReady::Store(why));
            }
        }
        self.cluster_health().map_err(NotReady::Redis)
    }
}
