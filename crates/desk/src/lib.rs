//! The conversation engine: who is connected, which conversations are live and who
//! is attached to them, the lifecycle of a conversation (queue, offer, assignment,
//! transfer, close, rating), presence and grace periods.
//!
//! It uses `pitboss-routing` for every routing decision, `pitboss-transcripts` for
//! everything durable and `pitboss-cluster` for what nodes share. It knows nothing
//! of HTTP or WebSocket: the gateway hands it decoded frames and a connection
//! handle, and writes what it queues on that handle.

pub mod accounts;
pub mod audit;
pub mod auth;
pub mod connection;
mod engine;
pub mod kpis;
mod live;
pub mod masking;
pub mod permissions;
mod session;
pub mod telemetry;

pub use auth::{AuthError, Keys, PlayerTokenConfig, MAX_VIP_TIER};
pub use connection::{CloseSignal, ConnRef, Delivery, FrameSink, Outbound};
pub use engine::{Desk, DeskStats, NotReady};
pub use permissions::{allows, Permission};
pub use session::{conversation_role, Session, UserKey};

use pitboss_cluster::{Bus, Lease, Presence};
use pitboss_protocol::WireLimits;
use std::sync::Arc;

/// What a node shares with the others: the bus, the routing lease and presence
/// (Redis in a cluster; an in-process hub for one node).
pub struct Shared {
    /// Events to and from the other nodes.
    pub bus: Arc<dyn Bus>,
    /// Who runs the router.
    pub lease: Arc<dyn Lease>,
    /// Which nodes are alive, with which agents and queued players.
    pub presence: Arc<dyn Presence>,
}
use pitboss_routing::RoutingConfig;

/// How the desk behaves. Defaults suit production; tests shorten the timers.
#[derive(Clone)]
pub struct DeskConfig {
    /// This node's name, in logs and on the bus; unique in a cluster.
    pub node: String,
    /// Whether this node is one of several sharing the store, the queue and the
    /// bus. Alone, the node runs the router itself and never waits for the bus.
    pub cluster: bool,
    /// How often a cluster node announces itself; a node silent for three periods
    /// is presumed dead (its agents stop getting offers), and the routing lease
    /// lasts three periods without renewal.
    pub heartbeat_ms: u64,
    /// How long a node waits for the leader to answer a routing command.
    pub route_timeout_ms: u64,
    /// The department a `start` without one goes to.
    pub default_department: String,
    /// The language a player without one is served in.
    pub default_language: String,
    /// Offer timeout, VIP aging and the rest of the routing policy's knobs.
    pub routing: RoutingConfig,
    /// How long an agent who lost every connection keeps their conversations
    /// before they go back to the head of the queue.
    pub agent_grace_ms: u64,
    /// How long a queued player may be disconnected before the conversation is
    /// marked abandoned.
    pub abandon_after_ms: u64,
    /// Conversations one player may have open at once.
    pub max_open_per_player: usize,
    /// Items queued for one connection before it counts as a slow consumer.
    pub outbound_queue: usize,
    /// How long an agent session token lasts.
    pub agent_session_ms: u64,
    /// How players identified by the casino are checked; `None`: visitors only.
    pub player_tokens: Option<PlayerTokenConfig>,
    /// How often timers (offer expiry, grace periods, queue updates) are checked.
    pub tick_ms: u64,
    /// The limits the gateway enforces, repeated to clients in `welcome`.
    pub limits: WireLimits,
    /// What is hidden in message text before it is stored (card numbers always).
    pub masker: masking::Masker,
    /// How long a closed conversation is kept after it closed before the scheduled
    /// purge deletes it with everything keyed on it; `None` (the default): kept
    /// forever, no purge runs.
    pub retention_ms: Option<u64>,
    /// How long an audit record is kept before the scheduled purge deletes it;
    /// `None` (the default): kept forever.
    pub audit_retention_ms: Option<u64>,
    /// How often the scheduled purge runs, on the node that runs routing.
    pub retention_interval_ms: u64,
}

impl Default for DeskConfig {
    fn default() -> Self {
        Self {
            node: "pitboss".into(),
            cluster: false,
            heartbeat_ms: 1000,
            route_timeout_ms: 5000,
            default_department: "general".into(),
            default_language: "en".into(),
            routing: RoutingConfig::default(),
            agent_grace_ms: 60_000,
            abandon_after_ms: 120_000,
            max_open_per_player: 3,
            outbound_queue: 512,
            agent_session_ms: 12 * 3600 * 1000,
            player_tokens: None,
            tick_ms: 200,
            limits: WireLimits::default(),
            masker: masking::Masker::default(),
            retention_ms: None,
            audit_retention_ms: None,
            retention_interval_ms: 3600 * 1000,
        }
    }
}
