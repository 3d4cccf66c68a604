//! The [`Router`]: every known agent and conversation, the waiting line, and the
//! operations the desk calls. Owns the policy and its state; does not own time,
//! I/O or persistence (the caller hands in `now` and carries out the decisions).

use crate::estimate::{estimate, HandleTimes};
use crate::{
    AgentProfile, AgentView, ConversationView, Decision, Millis, Position, QueueItem, Request,
    RoutingConfig, RoutingError, TransferFailure, TransferView, WithdrawReason,
};
use pitboss_protocol::{AgentId, AgentStatus, ConversationId, TransferTarget};
use std::collections::{BTreeMap, BTreeSet};
use std::ops::Bound::{Excluded, Unbounded};

mod invariants;
mod lines;

use lines::{Lines, Listing, Member};

/// Where a waiting conversation sorts in the line: smaller is served first.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
struct QueueKey {
    /// 0 for the head lane (requeued conversations and department-transfer waiters),
    /// 1 for normal arrivals: a conversation put back at the head is ahead of every
    /// normal arrival whatever their tier.
    lane: u8,
    /// `arrival − tier × aging` for normal arrivals; 0 in the head lane, where only
    /// arrival order counts. i128 so that no tier or clock value can overflow it.
    priority: i128,
    /// Arrival counter: first come first served among equal priorities, and unique,
    /// so two keys never compare equal.
    seq: u64,
}

const HEAD_LANE: u8 = 0;
const NORMAL_LANE: u8 = 1;

/// An offer that has been made and not yet answered, withdrawn or expired.
#[derive(Debug, Clone)]
struct OpenOffer {
    agent: AgentId,
    expires_at: Millis,
}

/// A transfer the owner asked for and nobody has completed yet.
#[derive(Debug, Clone)]
enum Transfer {
    /// To a named agent: it lives exactly as long as its one offer.
    ToAgent { offer: OpenOffer },
    /// To a department: the conversation waits at `key` in that department's line
    /// until `deadline`, offered to one of its agents at a time.
    ToDepartment {
        department: String,
        key: QueueKey,
        deadline: Millis,
        offer: Option<OpenOffer>,
    },
}

/// A conversation is exactly one of these, which is the ownership invariant made
/// into a type: queued with at most one offer, or owned by one agent with at most
/// one transfer (itself with at most one offer).
#[derive(Debug, Clone)]
enum State {
    Queued {
        since: Millis,
        key: QueueKey,
        offer: Option<OpenOffer>,
    },
    Owned {
        agent: AgentId,
        since: Millis,
        /// Whether `since` is when the agent got it: false for a conversation
        /// restored after a restart, whose handle time is not known here.
        timed: bool,
        transfer: Option<Transfer>,
    },
}

#[derive(Debug, Clone)]
struct Conversation {
    request: Request,
    state: State,
    /// Agent → the time from which they may be offered this conversation again.
    /// Entries whose time has passed are dropped by `tick` (or when an offer is
    /// made to that agent); until then they are ignored by dispatch.
    cooldowns: BTreeMap<AgentId, Millis>,
}

#[derive(Debug, Clone)]
struct Agent {
    profile: AgentProfile,
    status: AgentStatus,
    /// Conversations this agent owns. A set, not a counter, so that load can be
    /// checked against the conversations themselves.
    owned: BTreeSet<ConversationId>,
    /// Conversations with an open offer to this agent (queued or transfer).
    offers: BTreeSet<ConversationId>,
    /// The last time their load went down or they came online: the tie-breaker
    /// that spreads work to whoever has been idle the longest.
    idle_since: Millis,
}

impl Agent {
    fn load(&self) -> u32 {
        u32::try_from(self.owned.len() + self.offers.len()).unwrap_or(u32::MAX)
    }
    fn free(&self) -> u32 {
        self.profile.capacity.saturating_sub(self.load())
    }
    fn speaks(&self, language: &str) -> bool {
        self.profile.languages.iter().any(|l| l == language)
    }
    fn serves(&self, department: &str, language: &str) -> bool {
        self.speaks(language) && self.profile.departments.iter().any(|d| d == department)
    }
}

/// What dispatch must find an agent for (see `Router::need`).
struct Need<'a> {
    department: &'a str,
    language: &'a str,
    owner: Option<&'a AgentId>,
}

/// The routing state of one desk (or of the cluster's leader). Plain data with no
/// locking of its own: every operation takes `&mut self`, so the caller serialises
/// access (a mutex held for one call, never across I/O).
#[derive(Debug, Clone)]
pub struct Router {
    config: RoutingConfig,
    /// BTreeMaps everywhere: iteration order feeds decisions, and decisions must not
    /// depend on a hasher's seed.
    agents: BTreeMap<AgentId, Agent>,
    conversations: BTreeMap<ConversationId, Conversation>,
    /// The line: every queued conversation and every department-transfer waiter,
    /// by key. Keys are unique, so a map is enough.
    waiting: BTreeMap<QueueKey, ConversationId>,
    /// The same line by department and language (see `lines`).
    lines: Lines,
    handle_times: HandleTimes,
    /// Source of `QueueKey::seq`; only ever grows.
    next_seq: u64,
}

impl Router {
    /// An empty router: no agents, no conversations, no handle-time history.
    pub fn new(config: RoutingConfig) -> Self {
        let handle_times = HandleTimes::new(config.handle_time_window);
        Self {
            config,
            agents: BTreeMap::new(),
            conversations: BTreeMap::new(),
            waiting: BTreeMap::new(),
            lines: Lines::default(),
            handle_times,
            next_seq: 0,
        }
    }

    /// The configuration it was built with.
    pub fn config(&self) -> &RoutingConfig {
        &self.config
    }

    // ----------------------------------------------------------------- agents

    /// Adds an agent (status Offline, load 0) or updates the profile of a known one
    /// (status and load kept). Open offers the new profile cannot serve, or that no
    /// longer fit its capacity (newest first), are withdrawn (Cancelled) and
    /// re-dispatched; owned conversations stay whatever the profile says. Dispatches.
    pub fn upsert_agent(
        &mut self,
        agent: AgentId,
        profile: AgentProfile,
        now: Millis,
    ) -> Vec<Decision> {
        let before = self.listing();
        let mut out = Vec::new();
        match self.agents.get_mut(&agent) {
            None => {
                self.agents.insert(
                    agent,
                    Agent {
                        profile,
                        status: AgentStatus::Offline,
                        owned: BTreeSet::new(),
                        offers: BTreeSet::new(),
                        idle_since: now,
                    },
                );
            }
            Some(known) => {
                known.profile = profile;
                let offers: Vec<ConversationId> = known.offers.iter().copied().collect();
                for id in offers {
                    if !self.offer_fits(id, &agent) {
                        self.withdraw(id, WithdrawReason::Cancelled, true, now, &mut out);
                    }
                }
                // A lowered capacity takes back the newest offers first: they are the
                // ones the agent has had the least time to look at.
                while let Some(id) = self.newest_offer_over_capacity(&agent) {
                    self.withdraw(id, WithdrawReason::Cancelled, true, now, &mut out);
                }
            }
        }
        self.finish(before, now, out)
    }

    /// Online: receives offers. Away/Offline: pending offers to them are withdrawn
    /// (Cancelled) and re-dispatched to others (a transfer offer to them fails with
    /// `TransferFailed{Cancelled}`); conversations they own stay theirs (the desk
    /// decides when to requeue them). Dispatches.
    pub fn set_status(
        &mut self,
        agent: &AgentId,
        status: AgentStatus,
        now: Millis,
    ) -> Result<Vec<Decision>, RoutingError> {
        if !self.agents.contains_key(agent) {
            return Err(RoutingError::UnknownAgent);
        }
        let before = self.listing();
        let mut out = Vec::new();
        self.apply_status(agent, status, now, &mut out);
        Ok(self.finish(before, now, out))
    }

    /// Forgets the agent: like set_status(Offline), and every conversation they
    /// owned goes back to the HEAD of its queue (ahead of everyone; in the order
    /// they were assigned), its pending transfer cancelled without a
    /// `TransferFailed` (there is no owner left to tell). The desk learns which
    /// conversations those were from [`Router::owned_by`] before the call.
    /// Unknown agent → empty Vec (cooldowns it holds are dropped all the same).
    /// Dispatches.
    pub fn remove_agent(&mut self, agent: &AgentId, now: Millis) -> Vec<Decision> {
        if !self.agents.contains_key(agent) {
            // Unknown here, yet it may hold cooldowns: declines of offers an
            // earlier router made (`decline_earlier_offer`). They go too.
            for conversation in self.conversations.values_mut() {
                conversation.cooldowns.remove(agent);
            }
            return Vec::new();
        }
        let before = self.listing();
        let mut out = Vec::new();
        self.apply_status(agent, AgentStatus::Offline, now, &mut out);
        let mut owned: Vec<(Millis, ConversationId)> = self
            .agents
            .get(agent)
            .map(|a| a.owned.iter().copied().collect::<Vec<_>>())
            .unwrap_or_default()
            .into_iter()
            .filter_map(|id| match self.conversations.get(&id).map(|c| &c.state) {
                Some(State::Owned { since, .. }) => Some((*since, id)),
                _ => None,
            })
            .collect();
        owned.sort();
        for (_, id) in owned {
            self.end_transfer(id, None, now, &mut out);
            self.unown(id, now);
            self.put_in_line(id, HEAD_LANE, 0, now);
        }
        self.agents.remove(agent);
        for conversation in self.conversations.values_mut() {
            conversation.cooldowns.remove(agent);
        }
        self.finish(before, now, out)
    }

    /// True when at least one agent with status Online serves this department and
    /// language (regardless of free capacity). When false, the desk turns the chat
    /// into an offline message instead of queueing.
    pub fn can_serve(&self, department: &str, language: &str) -> bool {
        self.agents
            .values()
            .any(|a| a.status == AgentStatus::Online && a.serves(department, language))
    }

    // ---------------------------------------------------------- conversations

    /// A new waiting player. Err(AlreadyKnown) if the conversation is known.
    /// Dispatches (may immediately Offer).
    pub fn enqueue(
        &mut self,
        conversation: ConversationId,
        request: Request,
        now: Millis,
    ) -> Result<Vec<Decision>, RoutingError> {
        if self.conversations.contains_key(&conversation) {
            return Err(RoutingError::AlreadyKnown);
        }
        // In i128 so that no clock value or tier can overflow it: u64 − 255 × u64
        // fits with room to spare.
        let priority =
            i128::from(now) - i128::from(request.tier) * i128::from(self.config.aging_per_tier_ms);
        self.insert_queued(conversation, request, NORMAL_LANE, priority, now);
        // A new conversation in the line always changes what a listing shows, so
        // no before-and-after comparison (O(queue) per arrival) is needed.
        let mut out = Vec::new();
        self.dispatch(now, &mut out);
        out.push(Decision::QueueChanged);
        Ok(out)
    }

    /// Puts back a conversation that was waiting before this router existed (a
    /// restart, or a new routing node rebuilding the queue from the store) where
    /// it was: `head` — it had been put back at the head of the queue — at the
    /// back of the head lane (restore those in the order they were put there);
    /// otherwise in the normal lane at the place `enqueue` gave it when it arrived
    /// `waited` ms ago. `cooldowns` are (agent, ms the cooldown still runs);
    /// ended ones are ignored. Err(AlreadyKnown). Dispatches.
    pub fn restore_queued(
        &mut self,
        conversation: ConversationId,
        request: Request,
        head: bool,
        waited: Millis,
        cooldowns: &[(AgentId, Millis)],
        now: Millis,
    ) -> Result<Vec<Decision>, RoutingError> {
        if self.conversations.contains_key(&conversation) {
            return Err(RoutingError::AlreadyKnown);
        }
        let (lane, priority) = if head {
            (HEAD_LANE, 0)
        } else {
            // As `enqueue` at the arrival time, which may be before this
            // router's clock began (hence i128, and no saturation).
            let arrived = i128::from(now) - i128::from(waited);
            let tier = i128::from(request.tier) * i128::from(self.config.aging_per_tier_ms);
            (NORMAL_LANE, arrived - tier)
        };
        self.insert_queued(
            conversation,
            request,
            lane,
            priority,
            now.saturating_sub(waited),
        );
        if let Some(c) = self.conversations.get_mut(&conversation) {
            for (agent, left) in cooldowns {
                if *left > 0 {
                    c.cooldowns.insert(agent.clone(), now.saturating_add(*left));
                }
            }
        }
        let mut out = Vec::new();
        self.dispatch(now, &mut out);
        out.push(Decision::QueueChanged);
        Ok(out)
    }

    /// Puts a conversation (new to the router, or currently Owned — then the owner's
    /// slot is freed and a pending transfer cancelled, its offer withdrawn without a
    /// `TransferFailed`, as the owner is losing it anyway) at the head of its queue,
    /// ahead of every normal arrival (several such keep FIFO among themselves). A
    /// conversation already queued moves to the back of the head lane and keeps its
    /// offer if the offered agent still fits `request`. Used when an agent's grace
    /// period runs out and after a restart for conversations that were queued.
    /// Dispatches.
    pub fn requeue_at_head(
        &mut self,
        conversation: ConversationId,
        request: Request,
        now: Millis,
    ) -> Result<Vec<Decision>, RoutingError> {
        let before = self.listing();
        let mut out = Vec::new();
        match self.conversations.get_mut(&conversation) {
            None => {
                self.insert_queued(conversation, request, HEAD_LANE, 0, now);
            }
            Some(known) => {
                known.request = request;
                match &known.state {
                    State::Queued { key, offer, .. } => {
                        let key = *key;
                        let offered = offer.as_ref().map(|o| o.agent.clone());
                        self.leave_line(&key);
                        let key = self.next_key(HEAD_LANE, 0);
                        if let Some(State::Queued { key: k, .. }) = self
                            .conversations
                            .get_mut(&conversation)
                            .map(|c| &mut c.state)
                        {
                            *k = key;
                        }
                        self.join_line(key, conversation);
                        if let Some(agent) = offered {
                            if !self.offer_fits(conversation, &agent) {
                                self.withdraw(
                                    conversation,
                                    WithdrawReason::Cancelled,
                                    false,
                                    now,
                                    &mut out,
                                );
                            }
                        }
                    }
                    State::Owned { .. } => {
                        self.end_transfer(conversation, None, now, &mut out);
                        self.unown(conversation, now);
                        self.put_in_line(conversation, HEAD_LANE, 0, now);
                    }
                }
            }
        }
        Ok(self.finish(before, now, out))
    }

    /// Restores an owned conversation after a restart: counts against the agent's
    /// load (even above capacity if it must — it already exists).
    /// Err(UnknownAgent) if agent not known, Err(AlreadyKnown) if the conversation
    /// is. `now` stands for the time the agent got it; as that is not known, its
    /// release records no handle time (the store's history holds the real one).
    /// Does not dispatch: it only adds load, so it cannot make an offer possible.
    pub fn restore_owned(
        &mut self,
        conversation: ConversationId,
        agent: &AgentId,
        request: Request,
        now: Millis,
    ) -> Result<(), RoutingError> {
        if self.conversations.contains_key(&conversation) {
            return Err(RoutingError::AlreadyKnown);
        }
        let Some(owner) = self.agents.get_mut(agent) else {
            return Err(RoutingError::UnknownAgent);
        };
        owner.owned.insert(conversation);
        self.conversations.insert(
            conversation,
            Conversation {
                request,
                state: State::Owned {
                    agent: agent.clone(),
                    since: now,
                    timed: false,
                    transfer: None,
                },
                cooldowns: BTreeMap::new(),
            },
        );
        Ok(())
    }

    /// The offered agent accepts: queued offer -> Assigned{previous: None}; transfer
    /// offer -> Assigned{previous: Some(old owner)} (old owner's slot freed; after a
    /// department transfer the conversation belongs to the new department).
    /// Err(NotOffered) if the conversation has no open offer to this agent (an offer
    /// past its expiry is still open until `tick` expires it). Dispatches after.
    pub fn accept(
        &mut self,
        conversation: ConversationId,
        agent: &AgentId,
        now: Millis,
    ) -> Result<Vec<Decision>, RoutingError> {
        let known = self
            .conversations
            .get(&conversation)
            .ok_or(RoutingError::UnknownConversation)?;
        let offered_to =
            |offer: &Option<OpenOffer>| offer.as_ref().is_some_and(|o| &o.agent == agent);
        let accepted = match &known.state {
            State::Queued { key, offer, .. } if offered_to(offer) => Accepted::Queued { key: *key },
            State::Owned {
                agent: owner,
                transfer: Some(Transfer::ToAgent { offer }),
                ..
            } if &offer.agent == agent => Accepted::Transfer {
                owner: owner.clone(),
                department: None,
            },
            State::Owned {
                agent: owner,
                transfer:
                    Some(Transfer::ToDepartment {
                        department,
                        key,
                        offer,
                        ..
                    }),
                ..
            } if offered_to(offer) => Accepted::Transfer {
                owner: owner.clone(),
                department: Some((department.clone(), *key)),
            },
            _ => return Err(RoutingError::NotOffered),
        };
        let before = self.listing();
        let mut out = Vec::new();
        let previous = match accepted {
            Accepted::Queued { key } => {
                self.leave_line(&key);
                None
            }
            Accepted::Transfer { owner, department } => {
                if let Some(previous) = self.agents.get_mut(&owner) {
                    previous.owned.remove(&conversation);
                    previous.idle_since = now;
                }
                if let Some((department, key)) = department {
                    self.leave_line(&key);
                    if let Some(c) = self.conversations.get_mut(&conversation) {
                        c.request.department = department;
                    }
                }
                Some(owner)
            }
        };
        if let Some(new_owner) = self.agents.get_mut(agent) {
            // The reserved slot of the offer becomes the owned slot: load unchanged.
            new_owner.offers.remove(&conversation);
            new_owner.owned.insert(conversation);
        }
        self.make_owned(conversation, agent, previous, now, &mut out);
        Ok(self.finish(before, now, out))
    }

    /// The agent accepts an offer that an earlier router made (routing moved to
    /// another node while it was open, and this router has not offered the
    /// conversation to anyone yet): assigned as by `accept` if the conversation
    /// waits in the queue with no open offer and the agent could be offered it now
    /// (online, serves it, a free slot, no cooldown). Err(NotOffered) otherwise.
    /// Dispatches after.
    pub fn accept_earlier_offer(
        &mut self,
        conversation: ConversationId,
        agent: &AgentId,
        now: Millis,
    ) -> Result<Vec<Decision>, RoutingError> {
        let c = self
            .conversations
            .get(&conversation)
            .ok_or(RoutingError::UnknownConversation)?;
        let State::Queued {
            key, offer: None, ..
        } = &c.state
        else {
            return Err(RoutingError::NotOffered);
        };
        let key = *key;
        let need = self.need(c).ok_or(RoutingError::NotOffered)?;
        let a = self.agents.get(agent).ok_or(RoutingError::UnknownAgent)?;
        if !Self::eligible(agent, a, c, &need, now) {
            return Err(RoutingError::NotOffered);
        }
        let before = self.listing();
        let mut out = Vec::new();
        self.leave_line(&key);
        if let Some(owner) = self.agents.get_mut(agent) {
            owner.owned.insert(conversation);
        }
        self.make_owned(conversation, agent, None, now, &mut out);
        Ok(self.finish(before, now, out))
    }

    /// An agent declines an offer that an earlier router made and this one has not
    /// replaced (routing moved while it was open; see [`Router::accept_earlier_offer`]):
    /// the agent gets the cooldown a decline gives, OfferWithdrawn{Declined} reports
    /// the offer gone, and the conversation goes to the next eligible agent.
    /// Err(NotOffered) unless the conversation is queued with no offer of this
    /// router's.
    pub fn decline_earlier_offer(
        &mut self,
        conversation: ConversationId,
        agent: &AgentId,
        now: Millis,
    ) -> Result<Vec<Decision>, RoutingError> {
        let before = self.listing();
        let until = now.saturating_add(self.config.decline_cooldown_ms);
        let c = self
            .conversations
            .get_mut(&conversation)
            .ok_or(RoutingError::UnknownConversation)?;
        if !matches!(c.state, State::Queued { offer: None, .. }) {
            return Err(RoutingError::NotOffered);
        }
        c.cooldowns.insert(agent.clone(), until);
        let out = vec![Decision::OfferWithdrawn {
            conversation,
            agent: agent.clone(),
            reason: WithdrawReason::Declined,
        }];
        Ok(self.finish(before, now, out))
    }

    /// The offered agent declines: OfferWithdrawn{Declined}; agent gets a cooldown
    /// for this conversation; a queued conversation goes to the next eligible agent;
    /// a transfer to a named agent fails (TransferFailed{Declined}); a department
    /// transfer goes to the next eligible agent in that department. Err(NotOffered).
    pub fn decline(
        &mut self,
        conversation: ConversationId,
        agent: &AgentId,
        now: Millis,
    ) -> Result<Vec<Decision>, RoutingError> {
        let known = self
            .conversations
            .get(&conversation)
            .ok_or(RoutingError::UnknownConversation)?;
        if open_offer(&known.state).map(|o| &o.agent) != Some(agent) {
            return Err(RoutingError::NotOffered);
        }
        let before = self.listing();
        let mut out = Vec::new();
        self.withdraw(conversation, WithdrawReason::Declined, true, now, &mut out);
        Ok(self.finish(before, now, out))
    }

    /// The conversation closed, or the queued player abandoned: removes it;
    /// withdraws any offer (Cancelled); cancels a pending transfer (OfferWithdrawn
    /// Cancelled to the offered agent, no TransferFailed); frees the owner's slot and
    /// records the handle time (now − since assigned; none for a conversation
    /// restored after a restart) for its department. Unknown
    /// conversation → empty Vec (idempotent). Dispatches (the freed slot goes at once
    /// to the longest-waiting eligible player).
    pub fn release(&mut self, conversation: ConversationId, now: Millis) -> Vec<Decision> {
        let Some(known) = self.conversations.get(&conversation) else {
            return Vec::new();
        };
        let before = self.listing();
        let mut out = Vec::new();
        match &known.state {
            State::Queued { key, .. } => {
                let key = *key;
                self.withdraw(
                    conversation,
                    WithdrawReason::Cancelled,
                    false,
                    now,
                    &mut out,
                );
                self.leave_line(&key);
            }
            State::Owned { since, timed, .. } => {
                let handled = timed.then(|| now.saturating_sub(*since));
                let department = known.request.department.clone();
                self.end_transfer(conversation, None, now, &mut out);
                self.unown(conversation, now);
                if let Some(handled) = handled {
                    self.handle_times.record(&department, handled);
                }
            }
        }
        self.conversations.remove(&conversation);
        self.finish(before, now, out)
    }

    /// Owner asks for a transfer. Agent target: must be a known agent, Online, not
    /// the owner, serving the conversation's language (departments don't matter for
    /// a named agent), with load < capacity, else Err(TargetUnavailable); produces an
    /// immediate Offer{transfer_from: Some(owner)} reserving a slot. Department
    /// target: at least one agent of that department other than the owner must be
    /// Online, speak the conversation's language and have a capacity above 0 (full
    /// or not), else
    /// Err(DepartmentUnstaffed); the conversation waits at the head of that
    /// department's queue (with its language) while the owner keeps it, until
    /// `transfer_timeout_ms`; dispatched to an eligible agent other than the owner.
    /// Err(NotOwner) if `from` is not the owner (or the conversation is queued);
    /// Err(InvalidState) if a transfer is already pending.
    pub fn transfer(
        &mut self,
        conversation: ConversationId,
        from: &AgentId,
        to: TransferTarget,
        now: Millis,
    ) -> Result<Vec<Decision>, RoutingError> {
        let timeout = self.config.transfer_timeout_ms;
        self.start_transfer(conversation, from, to, timeout, true, now)
    }

    /// A department transfer that was pending when this router was built (after a
    /// restart or a routing move): as [`Router::transfer`] to that department, but
    /// with `left_ms` of its timeout left (at most the configured timeout; 0 fails
    /// it with TransferFailed{Expired} at the next tick).
    pub fn restore_department_transfer(
        &mut self,
        conversation: ConversationId,
        owner: &AgentId,
        department: String,
        left_ms: Millis,
        now: Millis,
    ) -> Result<Vec<Decision>, RoutingError> {
        let left = left_ms.min(self.config.transfer_timeout_ms);
        self.start_transfer(
            conversation,
            owner,
            TransferTarget::Department(department),
            left,
            false,
            now,
        )
    }

    /// [`Router::transfer`], a department transfer failing after `timeout_ms`; with
    /// `staffed`, refused unless the department has someone online to take it (a
    /// restored transfer waits for agents who have not reconnected yet).
    fn start_transfer(
        &mut self,
        conversation: ConversationId,
        from: &AgentId,
        to: TransferTarget,
        timeout_ms: Millis,
        staffed: bool,
        now: Millis,
    ) -> Result<Vec<Decision>, RoutingError> {
        let known = self
            .conversations
            .get(&conversation)
            .ok_or(RoutingError::UnknownConversation)?;
        let State::Owned {
            agent: owner,
            transfer,
            ..
        } = &known.state
        else {
            return Err(RoutingError::NotOwner);
        };
        if owner != from {
            return Err(RoutingError::NotOwner);
        }
        if transfer.is_some() {
            return Err(RoutingError::InvalidState);
        }
        if let TransferTarget::Agent(target) = &to {
            let available = target != owner
                && self.agents.get(target).is_some_and(|a| {
                    a.status == AgentStatus::Online
                        && a.speaks(&known.request.language)
                        && a.load() < a.profile.capacity
                });
            if !available {
                return Err(RoutingError::TargetUnavailable);
            }
        }
        if let TransferTarget::Department(department) = &to {
            let staffed_now = self.agents.iter().any(|(id, a)| {
                id != owner
                    && a.status == AgentStatus::Online
                    && a.profile.capacity > 0
                    && a.serves(department, &known.request.language)
            });
            if staffed && !staffed_now {
                return Err(RoutingError::DepartmentUnstaffed);
            }
        }
        let before = self.listing();
        let mut out = Vec::new();
        match to {
            TransferTarget::Agent(target) => {
                let expires_at = now.saturating_add(self.config.offer_timeout_ms);
                if let Some(c) = self.conversations.get_mut(&conversation) {
                    // An explicit request from the owner overrides the target's
                    // cooldown; the offer itself ends it.
                    c.cooldowns.remove(&target);
                    if let State::Owned { transfer, .. } = &mut c.state {
                        *transfer = Some(Transfer::ToAgent {
                            offer: OpenOffer {
                                agent: target.clone(),
                                expires_at,
                            },
                        });
                    }
                }
                if let Some(a) = self.agents.get_mut(&target) {
                    a.offers.insert(conversation);
                }
                out.push(Decision::Offer {
                    conversation,
                    agent: target,
                    expires_at,
                    transfer_from: Some(from.clone()),
                });
            }
            TransferTarget::Department(department) => {
                let key = self.next_key(HEAD_LANE, 0);
                let deadline = now.saturating_add(timeout_ms);
                if let Some(c) = self.conversations.get_mut(&conversation) {
                    if let State::Owned { transfer, .. } = &mut c.state {
                        *transfer = Some(Transfer::ToDepartment {
                            department,
                            key,
                            deadline,
                            offer: None,
                        });
                    }
                }
                self.join_line(key, conversation);
            }
        }
        Ok(self.finish(before, now, out))
    }

    /// A supervisor (must be a known agent, any status) takes the conversation now,
    /// queued or owned, ignoring capacity (but it counts in their load): withdraws
    /// any offer (Cancelled), cancels any pending transfer (TransferFailed{Cancelled}
    /// to the old owner), Assigned{previous: old owner or None}. Taking over a
    /// conversation one already owns only cancels its pending transfer.
    pub fn take_over(
        &mut self,
        conversation: ConversationId,
        agent: &AgentId,
        now: Millis,
    ) -> Result<Vec<Decision>, RoutingError> {
        let known = self
            .conversations
            .get(&conversation)
            .ok_or(RoutingError::UnknownConversation)?;
        if !self.agents.contains_key(agent) {
            return Err(RoutingError::UnknownAgent);
        }
        let before = self.listing();
        let mut out = Vec::new();
        let previous = match &known.state {
            State::Queued { key, .. } => {
                let key = *key;
                self.withdraw(
                    conversation,
                    WithdrawReason::Cancelled,
                    false,
                    now,
                    &mut out,
                );
                self.leave_line(&key);
                None
            }
            State::Owned { agent: owner, .. } => {
                let owner = owner.clone();
                self.end_transfer(
                    conversation,
                    Some(TransferFailure::Cancelled),
                    now,
                    &mut out,
                );
                if &owner == agent {
                    return Ok(self.finish(before, now, out));
                }
                self.unown(conversation, now);
                Some(owner)
            }
        };
        if let Some(a) = self.agents.get_mut(agent) {
            a.owned.insert(conversation);
        }
        self.make_owned(conversation, agent, previous, now, &mut out);
        Ok(self.finish(before, now, out))
    }

    // ------------------------------------------------------------------- time

    /// Expires offers whose time passed (OfferWithdrawn{Expired}, then the agent is
    /// set Away with AgentAway{agent} and their other pending offers withdrawn
    /// (Cancelled) and redistributed; a queued conversation moves on to the next
    /// agent; a named-agent transfer fails with TransferFailed{Expired}; a department
    /// transfer offer moves to the next agent), fails department transfers past
    /// their deadline (TransferFailed{Expired}, any open offer withdrawn Cancelled),
    /// drops ended cooldowns, and dispatches.
    ///
    /// A tick with nothing due ([`Router::next_deadline`] later than `now`) only
    /// drops ended cooldowns, in two passes over the conversations without
    /// comparing listings: nothing a listing shows changes with time alone, and
    /// the last operation's dispatch already offered all that could be offered
    /// (only an ended cooldown that held a waiting conversation back frees more,
    /// and that one is due).
    pub fn tick(&mut self, now: Millis) -> Vec<Decision> {
        if self.next_deadline().is_none_or(|due| due > now) {
            for conversation in self.conversations.values_mut() {
                conversation.cooldowns.retain(|_, until| *until > now);
            }
            return Vec::new();
        }
        self.tick_in_full(now)
    }

    /// [`Router::tick`] without its shortcut for a tick with nothing due: what the
    /// fuzzer holds the shortcut to.
    #[doc(hidden)]
    pub fn tick_in_full(&mut self, now: Millis) -> Vec<Decision> {
        let before = self.listing();
        let mut out = Vec::new();

        let mut expired: Vec<(Millis, ConversationId, AgentId)> = self
            .conversations
            .iter()
            .filter_map(|(id, c)| {
                open_offer(&c.state).map(|o| (o.expires_at, *id, o.agent.clone()))
            })
            .filter(|(expires_at, _, _)| *expires_at <= now)
            .collect();
        expired.sort();
        // Every expired offer is withdrawn as Expired first, so that an agent with
        // two expired offers hears "expired" for both, not "cancelled" for one.
        let mut afk: Vec<AgentId> = Vec::new();
        for (_, id, agent) in expired {
            self.withdraw(id, WithdrawReason::Expired, true, now, &mut out);
            if !afk.contains(&agent) {
                afk.push(agent);
            }
        }
        for agent in afk {
            if self.agents.get(&agent).map(|a| a.status) == Some(AgentStatus::Online) {
                out.push(Decision::AgentAway {
                    agent: agent.clone(),
                });
                self.apply_status(&agent, AgentStatus::Away, now, &mut out);
            }
        }

        let overdue: Vec<ConversationId> = self
            .conversations
            .iter()
            .filter(|(_, c)| {
                matches!(&c.state, State::Owned {
                    transfer: Some(Transfer::ToDepartment { deadline, .. }),
                    ..
                } if *deadline <= now)
            })
            .map(|(id, _)| *id)
            .collect();
        for id in overdue {
            self.end_transfer(id, Some(TransferFailure::Expired), now, &mut out);
        }

        for conversation in self.conversations.values_mut() {
            conversation.cooldowns.retain(|_, until| *until > now);
        }
        self.finish(before, now, out)
    }

    /// The earliest time at which tick() would do something (offer expiry, transfer
    /// deadline, end of a cooldown that keeps a waiting conversation from an agent),
    /// if any. May be in the past when `tick` is overdue.
    pub fn next_deadline(&self) -> Option<Millis> {
        let mut next: Option<Millis> = None;
        let mut consider = |t: Millis| next = Some(next.map_or(t, |n| n.min(t)));
        for c in self.conversations.values() {
            if let Some(offer) = open_offer(&c.state) {
                consider(offer.expires_at);
            }
            if let State::Owned {
                transfer: Some(Transfer::ToDepartment { deadline, .. }),
                ..
            } = &c.state
            {
                consider(*deadline);
            }
            if self.need(c).is_some() {
                for until in c.cooldowns.values() {
                    consider(*until);
                }
            }
        }
        next
    }

    // ------------------------------------------------------------------ views

    /// Position (1-based) among the conversations waiting for the same department
    /// and language, in priority order, and the estimate. None if not queued (a
    /// department-transfer waiter is owned, so None too).
    pub fn position(&self, conversation: ConversationId) -> Option<Position> {
        let c = self.conversations.get(&conversation)?;
        let State::Queued { key, offer, .. } = &c.state else {
            return None;
        };
        let (department, language) = line_group(c)?;
        // The same counting as `positions`, from whichever end of this line is
        // nearer.
        let (position, unoffered) = self.lines.line(department, language)?.rank(key)?;
        let position = u32::try_from(position).unwrap_or(u32::MAX);
        let unoffered = u32::try_from(unoffered).unwrap_or(u32::MAX);
        let (online, capacity, free) = self.slots_for(department, language);
        let estimated_wait_ms = if offer.is_some() {
            Some(0)
        } else {
            estimate(
                unoffered,
                capacity,
                free,
                self.handle_times.mean(department),
            )
        };
        Some(Position {
            position,
            estimated_wait_ms,
            agents_online: online,
        })
    }

    /// Every queued conversation's position, in priority order: what to re-send
    /// after a [`Decision::QueueChanged`], computed in one pass over each line.
    pub fn positions(&self) -> Vec<(ConversationId, Position)> {
        self.listing().positions()
    }

    /// Every queued conversation (not owned ones, so not department-transfer
    /// waiters) in priority order.
    pub fn queue(&self) -> Vec<QueueItem> {
        self.queued_items().collect()
    }

    /// The first `limit` queued conversations in priority order, and how many are
    /// queued in all: a supervisor's view of the line, without copying all of it.
    pub fn queue_head(&self, limit: usize) -> (usize, Vec<QueueItem>) {
        let total = self
            .lines
            .iter()
            .map(|(_, _, line)| line.members.values().filter(|m| m.queued).count())
            .sum();
        (total, self.queued_items().take(limit).collect())
    }

    /// How many conversations are queued for each department that has any.
    pub fn queue_lengths(&self) -> BTreeMap<String, usize> {
        let mut lengths = BTreeMap::new();
        for (department, _, members) in self.lines.iter() {
            let queued = members.members.values().filter(|m| m.queued).count();
            if queued > 0 {
                *lengths.entry(department.to_owned()).or_default() += queued;
            }
        }
        lengths
    }

    /// The queued conversations this agent could serve (their departments and
    /// languages), in priority order, at most `limit`; also returns the total count.
    /// Unknown agent → (0, empty).
    pub fn queue_for(&self, agent: &AgentId, limit: usize) -> (usize, Vec<QueueItem>) {
        let Some(a) = self.agents.get(agent) else {
            return (0, Vec::new());
        };
        self.served_queue(&a.profile.languages, &a.profile.departments, limit)
    }

    /// A read-only picture of one conversation, None if unknown.
    pub fn conversation(&self, conversation: ConversationId) -> Option<ConversationView> {
        let c = self.conversations.get(&conversation)?;
        let pair = |o: &OpenOffer| (o.agent.clone(), o.expires_at);
        Some(match &c.state {
            State::Queued { since, offer, .. } => ConversationView::Queued {
                request: c.request.clone(),
                since: *since,
                offer: offer.as_ref().map(pair),
            },
            State::Owned {
                agent,
                since,
                transfer,
                ..
            } => ConversationView::Owned {
                request: c.request.clone(),
                agent: agent.clone(),
                since: *since,
                transfer: transfer.as_ref().map(|t| match t {
                    Transfer::ToAgent { offer } => TransferView {
                        target: TransferTarget::Agent(offer.agent.clone()),
                        offer: Some(pair(offer)),
                        deadline: offer.expires_at,
                    },
                    Transfer::ToDepartment {
                        department,
                        deadline,
                        offer,
                        ..
                    } => TransferView {
                        target: TransferTarget::Department(department.clone()),
                        offer: offer.as_ref().map(pair),
                        deadline: *deadline,
                    },
                }),
            },
        })
    }

    /// A read-only picture of one agent, None if unknown.
    pub fn agent(&self, agent: &AgentId) -> Option<AgentView> {
        self.agents.get(agent).map(|a| AgentView {
            status: a.status,
            profile: a.profile.clone(),
            load: a.load(),
        })
    }

    /// Conversations owned by this agent, by id.
    pub fn owned_by(&self, agent: &AgentId) -> Vec<ConversationId> {
        self.agents
            .get(agent)
            .map(|a| a.owned.iter().copied().collect())
            .unwrap_or_default()
    }

    /// Seeds a recent handle time (used at startup from the store). Keeps only the
    /// last `handle_time_window` per department, like closes do.
    pub fn record_handle_time(&mut self, department: &str, ms: u64) {
        self.handle_times.record(department, ms);
    }

    // -------------------------------------------------------------- internals

    fn next_key(&mut self, lane: u8, priority: i128) -> QueueKey {
        let seq = self.next_seq;
        self.next_seq += 1;
        QueueKey {
            lane,
            priority,
            seq,
        }
    }

    /// Adds a conversation new to the router, queued without an offer.
    fn insert_queued(
        &mut self,
        id: ConversationId,
        request: Request,
        lane: u8,
        priority: i128,
        now: Millis,
    ) {
        let key = self.next_key(lane, priority);
        self.conversations.insert(
            id,
            Conversation {
                request,
                state: State::Queued {
                    since: now,
                    key,
                    offer: None,
                },
                cooldowns: BTreeMap::new(),
            },
        );
        self.join_line(key, id);
    }

    /// Makes `id` (already in `conversations`, not in the line, owning nothing)
    /// queued, without an offer, at a fresh key in `lane`.
    fn put_in_line(&mut self, id: ConversationId, lane: u8, priority: i128, now: Millis) {
        let key = self.next_key(lane, priority);
        if let Some(c) = self.conversations.get_mut(&id) {
            c.state = State::Queued {
                since: now,
                key,
                offer: None,
            };
            self.join_line(key, id);
        }
    }

    /// Puts `id`, whose state already says it waits at `key`, in the line.
    fn join_line(&mut self, key: QueueKey, id: ConversationId) {
        let Some(c) = self.conversations.get(&id) else {
            return;
        };
        let Some((department, language)) = line_group(c) else {
            return;
        };
        let member = Member {
            id,
            queued: matches!(c.state, State::Queued { .. }),
            offered: open_offer(&c.state).is_some(),
        };
        self.lines.insert(department, language, key, member);
        self.waiting.insert(key, id);
    }

    /// Takes whatever waits at `key` out of the line.
    fn leave_line(&mut self, key: &QueueKey) {
        self.waiting.remove(key);
        self.lines.remove(key);
    }

    /// Copies whether `id` has an open offer into its place in the line.
    fn sync_offered(&mut self, id: ConversationId) {
        let Some(c) = self.conversations.get(&id) else {
            return;
        };
        let key = match &c.state {
            State::Queued { key, .. } => *key,
            State::Owned {
                transfer: Some(Transfer::ToDepartment { key, .. }),
                ..
            } => *key,
            State::Owned { .. } => return,
        };
        let offered = open_offer(&c.state).is_some();
        self.lines.set_offered(&key, offered);
    }

    /// Frees the owner's slot of an owned conversation (its state is left for the
    /// caller to replace).
    fn unown(&mut self, id: ConversationId, now: Millis) {
        if let Some(State::Owned { agent, .. }) = self.conversations.get(&id).map(|c| &c.state) {
            if let Some(a) = self.agents.get_mut(agent) {
                a.owned.remove(&id);
                a.idle_since = now;
            }
        }
    }

    fn apply_status(
        &mut self,
        agent: &AgentId,
        status: AgentStatus,
        now: Millis,
        out: &mut Vec<Decision>,
    ) {
        let Some(a) = self.agents.get_mut(agent) else {
            return;
        };
        let was = a.status;
        a.status = status;
        if status == AgentStatus::Online {
            if was != AgentStatus::Online {
                a.idle_since = now;
            }
            return;
        }
        let offers: Vec<ConversationId> = a.offers.iter().copied().collect();
        for id in offers {
            self.withdraw(id, WithdrawReason::Cancelled, true, now, out);
        }
    }

    /// Closes the open offer of `id` (queued or transfer), freeing the agent's slot,
    /// and says so (OfferWithdrawn). Declined and Expired also start that agent's
    /// cooldown for this conversation. A named-agent transfer has nothing left
    /// without its offer, so it ends too, with a `TransferFailed` when
    /// `fail_transfer`. A department-transfer or queued conversation stays in line.
    fn withdraw(
        &mut self,
        id: ConversationId,
        reason: WithdrawReason,
        fail_transfer: bool,
        now: Millis,
        out: &mut Vec<Decision>,
    ) {
        let Some(c) = self.conversations.get_mut(&id) else {
            return;
        };
        let mut transfer_owner = None;
        let offer = match &mut c.state {
            State::Queued { offer, .. } => offer.take(),
            State::Owned {
                agent: owner,
                transfer,
                ..
            } => match transfer {
                Some(Transfer::ToDepartment { offer, .. }) => offer.take(),
                Some(Transfer::ToAgent { offer }) => {
                    let offer = offer.clone();
                    transfer_owner = Some(owner.clone());
                    *transfer = None;
                    Some(offer)
                }
                None => None,
            },
        };
        let Some(offer) = offer else {
            return;
        };
        self.sync_offered(id);
        let Some(c) = self.conversations.get_mut(&id) else {
            return;
        };
        if reason != WithdrawReason::Cancelled {
            c.cooldowns.insert(
                offer.agent.clone(),
                now.saturating_add(self.config.decline_cooldown_ms),
            );
        }
        if let Some(a) = self.agents.get_mut(&offer.agent) {
            a.offers.remove(&id);
            a.idle_since = now;
        }
        out.push(Decision::OfferWithdrawn {
            conversation: id,
            agent: offer.agent,
            reason,
        });
        if let (Some(owner), true) = (transfer_owner, fail_transfer) {
            out.push(Decision::TransferFailed {
                conversation: id,
                owner,
                reason: match reason {
                    WithdrawReason::Expired => TransferFailure::Expired,
                    WithdrawReason::Declined => TransferFailure::Declined,
                    WithdrawReason::Cancelled => TransferFailure::Cancelled,
                },
            });
        }
    }

    /// Ends the pending transfer of an owned conversation, if any: its offer is
    /// withdrawn (Cancelled), it leaves the line, and the owner is told `failure`.
    fn end_transfer(
        &mut self,
        id: ConversationId,
        failure: Option<TransferFailure>,
        now: Millis,
        out: &mut Vec<Decision>,
    ) {
        let owner = match self.conversations.get(&id).map(|c| &c.state) {
            Some(State::Owned {
                agent,
                transfer: Some(_),
                ..
            }) => agent.clone(),
            _ => return,
        };
        self.withdraw(id, WithdrawReason::Cancelled, false, now, out);
        if let Some(State::Owned { transfer, .. }) =
            self.conversations.get_mut(&id).map(|c| &mut c.state)
        {
            if let Some(Transfer::ToDepartment { key, .. }) = transfer.take() {
                self.leave_line(&key);
            }
        }
        if let Some(reason) = failure {
            out.push(Decision::TransferFailed {
                conversation: id,
                owner,
                reason,
            });
        }
    }

    /// Whether the open offer of `id` to `agent` still fits the agent's profile.
    fn offer_fits(&self, id: ConversationId, agent: &AgentId) -> bool {
        let (Some(c), Some(a)) = (self.conversations.get(&id), self.agents.get(agent)) else {
            return false;
        };
        match &c.state {
            State::Queued { .. } => a.serves(&c.request.department, &c.request.language),
            State::Owned {
                transfer: Some(Transfer::ToDepartment { department, .. }),
                ..
            } => a.serves(department, &c.request.language),
            State::Owned { .. } => a.speaks(&c.request.language),
        }
    }

    fn newest_offer_over_capacity(&self, agent: &AgentId) -> Option<ConversationId> {
        let a = self.agents.get(agent)?;
        if a.load() <= a.profile.capacity {
            return None;
        }
        a.offers
            .iter()
            .filter_map(|id| {
                let c = self.conversations.get(id)?;
                open_offer(&c.state).map(|o| (o.expires_at, *id))
            })
            .max()
            .map(|(_, id)| id)
    }

    /// What dispatch must find for `c`, or None when it is not waiting for an offer.
    fn need<'a>(&self, c: &'a Conversation) -> Option<Need<'a>> {
        match &c.state {
            State::Queued { offer: None, .. } => Some(Need {
                department: &c.request.department,
                language: &c.request.language,
                owner: None,
            }),
            State::Owned {
                agent,
                transfer:
                    Some(Transfer::ToDepartment {
                        department,
                        offer: None,
                        ..
                    }),
                ..
            } => Some(Need {
                department,
                language: &c.request.language,
                owner: Some(agent),
            }),
            _ => None,
        }
    }

    /// Whether `agent` may be offered `c` now (cooldowns whose time has come count
    /// as over, even before `tick` drops them).
    fn eligible(id: &AgentId, a: &Agent, c: &Conversation, need: &Need<'_>, now: Millis) -> bool {
        a.status == AgentStatus::Online
            && a.serves(need.department, need.language)
            && a.load() < a.profile.capacity
            && need.owner != Some(id)
            && c.cooldowns.get(id).is_none_or(|until| *until <= now)
    }

    /// The agent to offer `c` to: least load, then idle the longest, then smallest id.
    fn pick(&self, c: &Conversation, need: &Need<'_>, now: Millis) -> Option<AgentId> {
        self.agents
            .iter()
            .filter(|(id, a)| Self::eligible(id, a, c, need, now))
            .min_by(|(ia, a), (ib, b)| {
                (a.load(), a.idle_since, *ia).cmp(&(b.load(), b.idle_since, *ib))
            })
            .map(|(id, _)| id.clone())
    }

    /// Offers every waiting conversation without an offer, in line order, to the
    /// best eligible agent. One pass is enough: offers only use up capacity, so a
    /// conversation skipped early could not be served later in the same pass.
    ///
    /// Only the lines some online agent with a free slot serves are walked (merged
    /// in priority order), and a line is left as soon as nobody free serves it:
    /// in any other line no conversation has an eligible agent.
    fn dispatch(&mut self, now: Millis, out: &mut Vec<Decision>) {
        // Per line still worth walking: (department, language, last key walked).
        let mut open: Vec<(String, String, Option<QueueKey>)> = self
            .lines
            .iter()
            .filter(|(department, language, _)| self.anyone_free(department, language))
            .map(|(department, language, _)| (department.to_owned(), language.to_owned(), None))
            .collect();
        loop {
            // The earliest member without an offer past each line's cursor.
            let next = open
                .iter()
                .enumerate()
                .filter_map(|(i, (department, language, after))| {
                    let members = &self.lines.line(department, language)?.members;
                    let rest = match after {
                        Some(k) => members.range((Excluded(*k), Unbounded)),
                        None => members.range(..),
                    };
                    rest.filter(|(_, m)| !m.offered)
                        .map(|(key, m)| (*key, m.id, i))
                        .next()
                })
                .min();
            let Some((key, id, line)) = next else {
                break;
            };
            open[line].2 = Some(key);
            let Some(c) = self.conversations.get(&id) else {
                continue;
            };
            let Some(need) = self.need(c) else {
                continue;
            };
            let owner = need.owner.cloned();
            if let Some(agent) = self.pick(c, &need, now) {
                self.offer(id, agent, owner, now, out);
                open.retain(|(department, language, _)| self.anyone_free(department, language));
            }
        }
    }

    /// Whether an online agent with a free slot serves this line.
    fn anyone_free(&self, department: &str, language: &str) -> bool {
        self.agents.values().any(|a| {
            a.status == AgentStatus::Online
                && a.load() < a.profile.capacity
                && a.serves(department, language)
        })
    }

    /// `agent` owns `conversation` from `now` (their slot already counted), and the
    /// assignment is reported.
    fn make_owned(
        &mut self,
        conversation: ConversationId,
        agent: &AgentId,
        previous: Option<AgentId>,
        now: Millis,
        out: &mut Vec<Decision>,
    ) {
        if let Some(c) = self.conversations.get_mut(&conversation) {
            c.state = State::Owned {
                agent: agent.clone(),
                since: now,
                timed: true,
                transfer: None,
            };
        }
        out.push(Decision::Assigned {
            conversation,
            agent: agent.clone(),
            previous,
        });
    }

    fn offer(
        &mut self,
        id: ConversationId,
        agent: AgentId,
        transfer_from: Option<AgentId>,
        now: Millis,
        out: &mut Vec<Decision>,
    ) {
        let expires_at = now.saturating_add(self.config.offer_timeout_ms);
        let Some(c) = self.conversations.get_mut(&id) else {
            return;
        };
        let open = OpenOffer {
            agent: agent.clone(),
            expires_at,
        };
        match &mut c.state {
            State::Queued { offer, .. }
            | State::Owned {
                transfer: Some(Transfer::ToDepartment { offer, .. }),
                ..
            } => *offer = Some(open),
            State::Owned { .. } => return,
        }
        // The cooldown is over (or the agent would not have been picked): forget it.
        c.cooldowns.remove(&agent);
        self.sync_offered(id);
        if let Some(a) = self.agents.get_mut(&agent) {
            a.offers.insert(id);
        }
        out.push(Decision::Offer {
            conversation: id,
            agent,
            expires_at,
            transfer_from,
        });
    }

    /// Capacity and free slots of the online agents serving a department and language.
    /// Whether any online agent serves a line (capacity 0 included), and the
    /// slots and free slots they have in all.
    fn slots_for(&self, department: &str, language: &str) -> (bool, u64, u64) {
        self.agents
            .values()
            .filter(|a| a.status == AgentStatus::Online && a.serves(department, language))
            .fold((false, 0, 0), |(_, c, f), a| {
                (
                    true,
                    c + u64::from(a.profile.capacity),
                    f + u64::from(a.free()),
                )
            })
    }

    fn queued_items(&self) -> impl Iterator<Item = QueueItem> + '_ {
        self.waiting.values().filter_map(|id| self.queue_item(*id))
    }

    /// The end of every mutating operation: dispatch, then QueueChanged if anything
    /// a queue listing shows has changed.
    fn finish(&mut self, before: Listing, now: Millis, mut out: Vec<Decision>) -> Vec<Decision> {
        self.dispatch(now, &mut out);
        if self.listing().differs(&before) {
            out.push(Decision::QueueChanged);
        }
        out
    }
}

/// Which kind of offer `accept` is completing.
enum Accepted {
    Queued {
        key: QueueKey,
    },
    Transfer {
        owner: AgentId,
        /// For a department transfer: the new department and the line entry to drop.
        department: Option<(String, QueueKey)>,
    },
}

/// The (department, language) a conversation waits for in the line: its own when
/// queued, the target department when waiting for a department transfer.
fn line_group(c: &Conversation) -> Option<(&str, &str)> {
    let department = match &c.state {
        State::Queued { .. } => c.request.department.as_str(),
        State::Owned {
            transfer: Some(Transfer::ToDepartment { department, .. }),
            ..
        } => department.as_str(),
        State::Owned { .. } => return None,
    };
    Some((department, c.request.language.as_str()))
}

/// The one open offer of a conversation, whichever kind.
fn open_offer(state: &State) -> Option<&OpenOffer> {
    match state {
        State::Queued { offer, .. } => offer.as_ref(),
        State::Owned {
            transfer: Some(Transfer::ToAgent { offer }),
            ..
        } => Some(offer),
        State::Owned {
            transfer: Some(Transfer::ToDepartment { offer, .. }),
            ..
        } => offer.as_ref(),
        State::Owned { transfer: None, .. } => None,
    }
}
