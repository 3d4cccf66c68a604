//! The Pitboss routing policy: the order in which waiting players are served and
//! which agent is offered which conversation. It owns the queue, agent load and
//! offers; it does not own time, I/O, storage or sessions (the `desk` crate carries
//! out the [`Decision`]s it returns and hands it the time).
//!
//! Everything here is pure and deterministic: the same calls with the same `now`
//! values give the same decisions, which is what lets one node in a cluster run the
//! policy under a lease and lets the tests replay any sequence of events.
//!
//! # Policy in brief
//!
//! * **Queue order.** A queued conversation's priority key is
//!   `arrival − tier × aging_per_tier_ms`; smaller is served first, ties go to the
//!   earlier arrival. A VIP tier is therefore worth a fixed amount of waiting and
//!   never more, so nobody starves. Conversations put back with
//!   [`Router::requeue_at_head`] (and department-transfer waiters) are ahead of every
//!   normal arrival, first come first served among themselves.
//! * **Dispatch** runs after every state change: waiting conversations without an
//!   open offer are walked in key order, and each is offered to the eligible agent
//!   (online, serves its department and language, below capacity, not in cooldown
//!   for it, not its current owner) with the least load, then idle the longest, then
//!   the smallest id. A pending offer reserves a slot.
//! * **Offers** expire after `offer_timeout_ms`; the agent who let one expire is set
//!   away (an AFK agent must not keep receiving offers). An agent who declined or let
//!   an offer expire is not offered that conversation again for
//!   `decline_cooldown_ms`; if only such agents could take it, it waits.
//! * **Time** is whatever the caller says: [`Millis`] from a monotonic clock of its
//!   choosing. Offers and deadlines only expire in [`Router::tick`]; the caller calls
//!   it at [`Router::next_deadline`].
//!
//! # Estimated wait
//!
//! A queued conversation's *position* is its 1-based place in priority order among
//! the waiting conversations of the same department and language (department-transfer
//! waiters for that department and language included, since they are ahead of it).
//!
//! Its *estimate*: a conversation with an open offer is being answered now, so its
//! estimate is `Some(0)`. Otherwise let `p` be its place counting only the
//! conversations up to it that have **no** open offer (an offer already holds its
//! agent's slot), and
//!
//! * `C` = total capacity of the `Online` agents serving that department and
//!   language,
//! * `F` = their free slots, `Σ max(0, capacity − load)` (load counts pending offers),
//! * `H` = mean of the department's recent handle times (the last
//!   `handle_time_window` closed conversations, see [`Router::record_handle_time`]),
//! * if `p ≤ F` → `Some(0)`, with or without history;
//! * else, with no handle time recorded or `C == 0` → `None`;
//! * else `Some(ceil((p − F) × H / C))`, computed exactly in integers
//!   (`H` is not rounded before the multiplication).
//!
//! That is: the first `F` players get a free slot at once, and each further place in
//! line costs the mean handle time shared among all `C` slots.
//!
//! Its *agents online* flag is whether any `Online` agent serves the line, of
//! whatever capacity (0 included), with or without an offer: it tells an
//! estimate missing for want of history from one missing because nobody online
//! serves the line, and a change of it alone is a change of the listing.

mod config;
mod estimate;
#[doc(hidden)]
pub mod fuzzing;
mod model;
mod router;

pub use config::{Millis, RoutingConfig};
pub use model::{
    AgentProfile, AgentView, ConversationView, Decision, Position, QueueItem, Request,
    RoutingError, TransferFailure, TransferView, WithdrawReason,
};
pub use router::Router;
