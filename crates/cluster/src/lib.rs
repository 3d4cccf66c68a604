//! What Pitboss nodes share: the event bus that fans events out to the other nodes,
//! the lease that lets exactly one node run the router at a time, and presence
//! (which nodes are alive, with which agents online).
//!
//! The desk uses only the traits here. [`memory`] is the in-process implementation
//! (the default: a single node, or several nodes inside one process for tests);
//! [`redis`] fills in the same traits for a real cluster. [`conformance`] checks
//! that both behave alike. Nothing here is durable: anything that must not be lost
//! lives in the transcript store, and everything here can be rebuilt from the
//! store and from the live nodes (see [`redis`] for what happens when Redis
//! restarts empty).

use std::sync::Arc;

pub mod conformance;
pub mod memory;
pub mod redis;

/// Identifies one node of a cluster.
pub type NodeId = String;

/// What can go wrong on the bus or with a lease.
#[derive(Debug, thiserror::Error)]
pub enum ClusterError {
    /// The outgoing queue is full; the event was not sent. Events on the bus are
    /// at-most-once anyway: receivers recover what they miss from the store.
    #[error("bus queue full")]
    Full,
    /// The shared backend is unreachable.
    #[error("cluster backend unavailable: {0}")]
    Unavailable(String),
}

/// One event on the bus: a topic (what it is about, e.g. a conversation id) and
/// an opaque payload the desk encodes and decodes itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Envelope {
    /// The node that published it.
    pub from: NodeId,
    /// What it is about.
    pub topic: String,
    /// The desk's encoding of the event.
    pub payload: Arc<str>,
}

/// Receives the events other nodes published. Called from the bus's own task; it
/// must not block (hand off to bounded queues and return).
pub trait BusHandler: Send + Sync + 'static {
    /// One event from another node.
    fn deliver(&self, envelope: Envelope);
    /// The bus may have lost events (a reconnect, a subscriber that fell behind, a
    /// publisher that dropped events): the handler must recover from durable state
    /// whatever it may have missed. Also called once when the subscription becomes
    /// live, since events published before that were not seen either. What a call
    /// covers was published before the next event delivered; events delivered after
    /// it may also be among what the handler recovers, so it deduplicates them (by
    /// the store's sequence numbers).
    fn lost(&self);
}

/// Fans events out to every other node. At-most-once, in publish order per
/// publisher; never blocks the publisher.
pub trait Bus: Send + Sync + 'static {
    /// This node's id.
    fn node(&self) -> &NodeId;
    /// Queues an event for the other nodes. Fails with [`ClusterError::Full`]
    /// instead of waiting when the outgoing queue is full.
    fn publish(&self, topic: &str, payload: Arc<str>) -> Result<(), ClusterError>;
    /// Installs the handler for events from other nodes, and calls its `lost()` once
    /// the subscription is live (a test can wait for that before publishing). Called
    /// once, within a tokio runtime.
    fn subscribe(&self, handler: Arc<dyn BusHandler>);
    /// Events dropped so far because a queue was full.
    fn dropped(&self) -> u64;
}

/// A lease term: who holds the lease and under which epoch. The epoch grows at every
/// new term (by one, unless a floor pushes it higher), so a deposed holder's writes
/// can be fenced. What exactly is guaranteed across a restart of the backend is the
/// backend's to say (see [`redis`]); [`Lease::raise_epoch_floor`] is how a caller
/// that knows higher epochs (from the store) keeps them growing regardless.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Epoch(pub u64);

/// Exclusive, expiring leadership (to run the router on one node at a time).
#[async_trait::async_trait]
pub trait Lease: Send + Sync + 'static {
    /// Takes the lease if it is free or expired, or renews it if this node holds
    /// it; returns the epoch held, or `None` if another node holds it.
    /// `ttl_ms` is how long the lease lasts without renewal.
    async fn acquire_or_renew(&self, ttl_ms: u64) -> Result<Option<Epoch>, ClusterError>;
    /// Gives the lease up (on shutdown), if held.
    async fn release(&self) -> Result<(), ClusterError>;
    /// The epoch this handle holds right now, by its own clock: the term of the last
    /// successful [`Lease::acquire_or_renew`], until that call's start plus its
    /// `ttl_ms` has passed (or the lease was released). No round trip; a holder
    /// checks it before acting, the store's compare-and-set fences what slips past.
    fn current_epoch(&self) -> Option<Epoch>;
    /// Every term this handle starts from now on gets an epoch above `floor`. The
    /// desk passes the highest epoch the store has seen, so epochs keep growing even
    /// after the backend lost its counter. Lowering the floor has no effect.
    fn raise_epoch_floor(&self, floor: Epoch);
}

/// One node as presence last heard of it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodePresence {
    /// The node.
    pub node: NodeId,
    /// The agents it announced as online in its last heartbeat, as the desk names
    /// them (agent ids).
    pub agents: Vec<String>,
}

/// Which nodes are alive, and which agents are online on each. Every node calls
/// [`Presence::heartbeat`] periodically with its full list of online agents and a
/// ttl of a few heartbeat periods; a node whose heartbeats stop is no longer listed
/// once its ttl runs out. With a ttl of 3 heartbeat periods, the router stops
/// offering chats to the agents of a dead node within 3 heartbeats. Each heartbeat
/// carries the whole state, so presence that the backend lost is complete again one
/// heartbeat period later.
#[async_trait::async_trait]
pub trait Presence: Send + Sync + 'static {
    /// This node is alive with exactly these agents online, for `ttl_ms` from now.
    /// Replaces what the previous heartbeat announced.
    async fn heartbeat(&self, agents_online: Vec<String>, ttl_ms: u64) -> Result<(), ClusterError>;
    /// The nodes whose last heartbeat has not expired (this one included), sorted by
    /// node id.
    async fn alive(&self) -> Result<Vec<NodePresence>, ClusterError>;
    /// Withdraws this node at once (on shutdown), instead of waiting for its ttl.
    async fn leave(&self) -> Result<(), ClusterError>;
}
