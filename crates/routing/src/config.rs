//! The routing knobs and the unit of time. Owns defaults; does not read files or
//! the environment (the server's config layer fills a [`RoutingConfig`]).

/// Milliseconds on a monotonic clock chosen by the caller. The router never reads a
/// clock itself: every operation is handed `now`, which keeps it deterministic.
pub type Millis = u64;

/// Timeouts and weights of the routing policy.
#[derive(Debug, Clone)]
pub struct RoutingConfig {
    /// An offer not accepted within this expires and moves on to the next agent
    /// (and the agent who let it expire is set away).
    pub offer_timeout_ms: u64,
    /// One VIP tier is worth this much waiting: a tier-2 player arriving now sorts
    /// as if they had arrived `2 × aging_per_tier_ms` earlier, never more.
    pub aging_per_tier_ms: u64,
    /// An agent who declined or let expire a conversation is not offered it again
    /// for this long, so the same player does not bounce back to them at once.
    pub decline_cooldown_ms: u64,
    /// A department transfer not accepted by anyone within this fails (`Expired`)
    /// and the owner keeps the conversation.
    pub transfer_timeout_ms: u64,
    /// How many recent handle times are kept per department for wait estimates:
    /// enough to smooth one long chat, few enough to follow a change of pace.
    pub handle_time_window: usize,
}

impl Default for RoutingConfig {
    fn default() -> Self {
        Self {
            offer_timeout_ms: 20_000,
            aging_per_tier_ms: 60_000,
            decline_cooldown_ms: 30_000,
            transfer_timeout_ms: 120_000,
            handle_time_window: 50,
        }
    }
}
