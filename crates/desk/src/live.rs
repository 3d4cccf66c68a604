//! Conversations that are not closed, in memory: their state, owner and the
//! connections attached to them. The store is the truth; this is the index the
//! message path reads without touching the database.

use crate::ConnRef;
use pitboss_protocol::{AgentId, ConversationId, ConversationState, PlayerCard};
use pitboss_routing::Request;
use std::sync::{Arc, Mutex};

/// One live conversation.
pub(crate) struct Live {
    pub(crate) id: ConversationId,
    /// A std mutex: every critical section is a few field reads or writes.
    pub(crate) state: Mutex<LiveState>,
}

pub(crate) struct LiveState {
    pub(crate) player: PlayerCard,
    pub(crate) request: Request,
    pub(crate) state: ConversationState,
    pub(crate) agent: Option<AgentId>,
    /// Connections receiving its entries. Replaced, never mutated in place, so the
    /// commit path clones one `Arc` under the lock and fans out after releasing it.
    pub(crate) subscribers: Arc<Vec<ConnRef>>,
    /// The last `queued` update sent to the player (position, estimate), to send
    /// only changes.
    pub(crate) last_position: Option<(u32, Option<u64>, bool)>,
}

impl Live {
    pub(crate) fn new(id: ConversationId, state: LiveState) -> Arc<Self> {
        Arc::new(Self {
            id,
            state: Mutex::new(state),
        })
    }

    pub(crate) fn lock(&self) -> std::sync::MutexGuard<'_, LiveState> {
        self.state.lock().expect("live conversation lock poisoned")
    }

    /// Adds a subscriber (once).
    pub(crate) fn subscribe(&self, conn: &ConnRef) {
        let mut s = self.lock();
        if s.subscribers.iter().any(|c| c.id() == conn.id()) {
            return;
        }
        let mut next = Vec::with_capacity(s.subscribers.len() + 1);
        next.extend(s.subscribers.iter().cloned());
        next.push(conn.clone());
        s.subscribers = Arc::new(next);
    }

    /// Removes a subscriber.
    pub(crate) fn unsubscribe(&self, conn_id: u64) {
        let mut s = self.lock();
        if !s.subscribers.iter().any(|c| c.id() == conn_id) {
            return;
        }
        let next: Vec<ConnRef> = s
            .subscribers
            .iter()
            .filter(|c| c.id() != conn_id)
            .cloned()
            .collect();
        s.subscribers = Arc::new(next);
    }
}
