//! Identifiers on the wire. Each is a newtype so that a player id can never be
//! passed where an agent id is meant.

use serde::{Deserialize, Serialize};
use std::fmt;
use uuid::Uuid;

/// One conversation between a player and support, from first message to close.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct ConversationId(pub Uuid);

impl ConversationId {
    /// A fresh id. Version 7 UUIDs sort by creation time, which keeps the store's
    /// index append-mostly.
    pub fn new() -> Self {
        Self(Uuid::now_v7())
    }
}

impl Default for ConversationId {
    fn default() -> Self {
        Self::new()
    }
}

impl fmt::Display for ConversationId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

impl std::str::FromStr for ConversationId {
    type Err = uuid::Error;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Ok(Self(s.parse()?))
    }
}

/// An agent or supervisor account, by its login name.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct AgentId(pub String);

impl fmt::Display for AgentId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A player: `v:<uuid>` for an anonymous visitor, `p:<casino id>` for a player the
/// casino backend vouched for with a signed token.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct PlayerId(pub String);

impl PlayerId {
    /// The id of an anonymous visitor.
    pub fn visitor(id: Uuid) -> Self {
        Self(format!("v:{id}"))
    }
    /// The id of a player identified by the casino backend.
    pub fn verified(casino_id: &str) -> Self {
        Self(format!("p:{casino_id}"))
    }
    /// Whether the casino backend vouched for this player.
    pub fn is_verified(&self) -> bool {
        self.0.starts_with("p:")
    }
}

impl fmt::Display for PlayerId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A conversation's sequence number: 1 for its first entry, then gap-free. Assigned
/// by the store in the transaction that appends the entry.
pub type Seq = u64;
