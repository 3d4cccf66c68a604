//! What Pitboss nodes share: the event bus that fans events out to the other nodes,
//! and the lease that lets exactly one node run the router at a time.
//!
//! The desk uses only the traits here. [`memory`] is the in-process implementation
//! (the default: a single node, or several nodes inside one process for tests);
//! the Redis implementation fills in the same traits for a real cluster. Nothing
//! here is durable: anything that must not be lost lives in the transcript store.

use std::sync::Arc;

pub mod memory;

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
    /// The bus lost events (a reconnect, or a subscriber that fell behind): the
    /// handler must recover from durable state whatever it may have missed.
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
    /// Installs the handler for events from other nodes. Called once.
    fn subscribe(&self, handler: Arc<dyn BusHandler>);
    /// Events dropped so far because a queue was full.
    fn dropped(&self) -> u64;
}

/// A lease term: who holds the lease and under which epoch. The epoch grows by one
/// at every change of holder, so a deposed holder's writes can be fenced.
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
}
