//! Several nodes as one desk: routing commands sent to the lease holder, the events
//! every node applies to its own connections, presence, taking over and giving up
//! the router, and recovering from the store what the bus lost.
//!
//! One node at a time runs the router: the holder of the routing lease ("the
//! leader"). Every other node sends it [`Command`]s over the bus and waits for the
//! [`Reply`]; alone, a node is always the leader and runs them directly. What a
//! decision changes for connections is an [`Event`] that every node applies to its
//! own connections (the node that makes it applies it at once, the others when the
//! bus delivers it). The bus is at-most-once: whatever it loses is recovered from
//! the store by [`Desk::resync`], and every decision that changes a conversation's
//! owner is fenced in the store by the lease epoch.

use super::*;
use pitboss_cluster::{BusHandler, Envelope, Epoch, NodeId};
use pitboss_transcripts::Fence;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeSet, HashMap, HashSet};
use tokio::sync::oneshot;

/// Events one node's bus inbox holds before it counts as fallen behind.
const INBOX: usize = 4096;
/// Remote commands the leader holds waiting; more are refused (the sender retries).
const COMMAND_QUEUE: usize = 4096;
/// Leader heartbeats between two checks of the router against the store.
const REPAIR_EVERY: u32 = 10;

/// A request to the router, from any node to the leader.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "c", rename_all = "snake_case")]
pub(super) enum Command {
    /// Whether someone could serve this department and language.
    CanServe {
        department: String,
        language: String,
    },
    /// A conversation just created as queued enters the queue.
    Enqueue { conversation: ConversationId },
    /// An agent connected to a node (their first connection there).
    AgentUp {
        agent: AgentId,
        node: String,
        status: Option<AgentStatus>,
    },
    /// An agent's last connection to a node closed.
    AgentDown { agent: AgentId, node: String },
    /// An account changed: read it again.
    Refresh { agent: AgentId },
    /// An agent signs out: their conversations go back to the queue at once.
    SignOut { agent: AgentId },
    /// An agent sets online or away.
    SetStatus { agent: AgentId, status: AgentStatus },
    /// An agent's status now.
    Status { agent: AgentId },
    /// Status and load of these agents now, in the same order.
    Roster { agents: Vec<AgentId> },
    /// An agent accepts an offer.
    Accept {
        agent: AgentId,
        conversation: ConversationId,
    },
    /// An agent declines an offer.
    Decline {
        agent: AgentId,
        conversation: ConversationId,
    },
    /// The owner asks for a transfer.
    Transfer {
        conversation: ConversationId,
        owner: AgentId,
        to: TransferTarget,
        note: Option<String>,
    },
    /// A supervisor takes a conversation over.
    TakeOver {
        conversation: ConversationId,
        supervisor: AgentId,
    },
    /// An agent answered an offline message: it is theirs now.
    RestoreOwned {
        conversation: ConversationId,
        agent: AgentId,
    },
    /// Send the player of a queued conversation their position.
    TellPosition { conversation: ConversationId },
}

/// The router's answer to a [`Command`].
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub(super) enum Reply {
    Done,
    Bool(bool),
    Status(AgentStatus),
    /// Per agent asked: status, and owned conversations plus open offers.
    Roster(Vec<(AgentStatus, u32)>),
}

/// What travels on the bus.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "e", rename_all = "snake_case")]
pub(super) enum Event {
    /// Entries just committed, in commit order.
    Entries { entries: Vec<StoredEntry> },
    /// A frame for every connection of a user.
    User { user: UserKey, frame: ServerFrame },
    /// Typing or a read receipt for the connections attached to a conversation.
    Signal {
        conversation: ConversationId,
        frame: ServerFrame,
    },
    /// A conversation is offered to an agent.
    Offered {
        conversation: ConversationId,
        agent: AgentId,
        expires_in_ms: u64,
        frame: ServerFrame,
    },
    /// An offer ended without an assignment.
    Withdrawn {
        conversation: ConversationId,
        agent: AgentId,
        frame: ServerFrame,
    },
    /// A conversation has a new owner (durable already).
    Assigned {
        conversation: ConversationId,
        agent: AgentId,
        previous: Option<AgentId>,
        department: Option<String>,
    },
    /// A conversation went back to the queue (durable already).
    Requeued { conversation: ConversationId },
    /// An agent signed out: every connection of theirs closes.
    SignedOut { agent: AgentId },
    /// A conversation was closed (durable already).
    Closed {
        conversation: ConversationId,
        reason: Option<String>,
        by: Role,
        agent: Option<AgentId>,
        player: PlayerId,
    },
    /// A command for the leader. `deadline_ms` (Unix ms) is when its sender stops
    /// waiting: the leader drops it unrun after that, so a sender told "no answer"
    /// can rely on nothing having changed (up to the nodes' clock skew).
    Command {
        req: u64,
        from: String,
        deadline_ms: u64,
        command: Command,
    },
    /// The leader's answer to a command.
    Reply {
        req: u64,
        to: String,
        result: Result<Reply, (ErrorCode, String)>,
    },
}

/// An offer as every node knows it: who may read the conversation before
/// accepting, and the frame to show again to a console that reconnects.
#[derive(Clone)]
pub(super) struct OfferNote {
    pub(super) agent: AgentId,
    pub(super) deadline: Instant,
    pub(super) frame: ServerFrame,
}

/// A command from another node: request id, sender, deadline (Unix ms), command.
pub(super) type RemoteCommand = (u64, String, u64, Command);
/// Where the leader's answer to one of this node's commands goes.
pub(super) type ReplySlot = oneshot::Sender<Result<Reply, (ErrorCode, String)>>;

/// What the bus hands to the desk's inbox task.
pub(super) enum Inbound {
    Event(Envelope),
    Lost,
}

/// The desk's end of the bus: a bounded inbox, drained by one task in order.
pub(super) struct Inbox {
    tx: mpsc::Sender<Inbound>,
    /// Set when the inbox overflowed: the task recovers from the store.
    overflowed: Arc<AtomicBool>,
}

impl BusHandler for Inbox {
    fn deliver(&self, envelope: Envelope) {
        if self.tx.try_send(Inbound::Event(envelope)).is_err() {
            self.overflowed.store(true, Ordering::Relaxed);
        }
    }
    fn lost(&self) {
        if self.tx.try_send(Inbound::Lost).is_err() {
            self.overflowed.store(true, Ordering::Relaxed);
        }
    }
}

/// The leader's view of who is connected where, and its timers.
#[derive(Default)]
pub(super) struct Leadership {
    /// The epoch the router was rebuilt for; `None`: not leading.
    pub(super) epoch: Option<Epoch>,
    /// When this node last sent its heartbeat, looked at presence, read the store's
    /// epoch.
    pub(super) last_heartbeat: Option<Instant>,
    pub(super) last_presence: Option<Instant>,
    pub(super) last_floor: Option<Instant>,
    /// When Redis last accepted this node's heartbeat.
    pub(super) last_heartbeat_ok: Option<Instant>,
    /// When this node's current term began.
    pub(super) leading_since: Option<Instant>,
    pub(super) presence_rounds: u32,
    /// The nodes alive at the last look at presence in this term.
    pub(super) nodes_seen: Option<BTreeSet<NodeId>>,
}

impl Desk {
    // ------------------------------------------------------------- commands

    /// Runs a command on the router: here if this node leads, else on the leader,
    /// waiting for its answer for up to the route timeout.
    pub(super) async fn route(self: &Arc<Self>, command: Command) -> Result<Reply, Refusal> {
        let wait = Duration::from_millis(self.config.route_timeout_ms.max(10));
        self.route_within(command, wait).await
    }

    /// [`Desk::route`], waiting for the leader's answer for up to `wait`.
    async fn route_within(
        self: &Arc<Self>,
        command: Command,
        wait: Duration,
    ) -> Result<Reply, Refusal> {
        if self.is_leader() {
            return Box::pin(self.execute(command)).await;
        }
        if !self.config.cluster {
            return refuse(ErrorCode::Overloaded, "routing is not running; retry");
        }
        let req = self.next_req.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = oneshot::channel();
        self.pending.insert(req, tx);
        // The leader gives up a little before we do, so a late reply never
        // contradicts the refusal the client already got.
        let deadline_ms = now_ms() + u64::try_from(wait.as_millis() * 4 / 5).unwrap_or(u64::MAX);
        let event = Event::Command {
            req,
            from: self.config.node.clone(),
            deadline_ms,
            command: command.clone(),
        };
        if !self.publish(&event) {
            self.pending.remove(&req);
            return refuse(ErrorCode::Overloaded, "the cluster bus is busy; retry");
        }
        // Sent again until answered: the bus may drop it, or no node may lead at
        // this moment (the leader runs each request id once).
        let deadline = Instant::now() + wait;
        let again = Duration::from_millis((self.config.heartbeat_ms / 2).clamp(50, 500));
        let mut rx = rx;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                break;
            }
            match tokio::time::timeout(again.min(left), &mut rx).await {
                Ok(Ok(result)) => return result.map_err(|(code, message)| Refusal(code, message)),
                Ok(Err(_)) => break,
                Err(_) if Instant::now() >= deadline => break,
                Err(_) if self.is_leader() => {
                    // We lead now: whatever the old leader did is in our router.
                    self.pending.remove(&req);
                    return Box::pin(self.execute(command)).await;
                }
                Err(_) => {
                    self.publish(&event);
                }
            }
        }
        self.pending.remove(&req);
        refuse(
            ErrorCode::Overloaded,
            "routing did not answer in time (it may be moving to another node); retry",
        )
    }

    /// One try at an agent's accept on this router: of this router's offer or,
    /// with `earlier`, of the previous router's. With the decisions, how long the
    /// conversation waited and its department, for the queue-wait histogram.
    fn accept_now(
        &self,
        conversation: ConversationId,
        agent: &AgentId,
        earlier: bool,
        now: u64,
    ) -> Result<(Vec<Decision>, Option<Waited>), RoutingError> {
        let mut router = self.router();
        let waited = match router.conversation(conversation) {
            Some(ConversationView::Queued { since, request, .. }) => {
                Some((now.saturating_sub(since), request.department))
            }
            _ => None,
        };
        let decisions = match router.accept(conversation, agent, now) {
            Err(RoutingError::NotOffered) if earlier => {
                router.accept_earlier_offer(conversation, agent, now)
            }
            result => result,
        }?;
        Ok((decisions, waited))
    }

    /// [`Desk::route`], asked again while routing answers `overloaded` (it is
    /// starting on a node, or moving), for up to the route timeout in all, each
    /// try waiting only for what is left of it: for an agent's accept of an offer
    /// they saw, which a refusal would waste.
    pub(super) async fn route_patiently(
        self: &Arc<Self>,
        command: Command,
    ) -> Result<Reply, Refusal> {
        let deadline = Instant::now() + Duration::from_millis(self.config.route_timeout_ms.max(10));
        let again = Duration::from_millis((self.config.heartbeat_ms / 4).clamp(25, 250));
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.route_within(command.clone(), left).await {
                Err(Refusal(ErrorCode::Overloaded, _))
                    if deadline.saturating_duration_since(Instant::now()) > again =>
                {
                    tokio::time::sleep(again).await;
                }
                result => return result,
            }
        }
    }

    /// Whether `agent` holds an offer of `conversation` that has not expired, as
    /// this node heard of it (from whichever node routed at the time).
    pub(super) fn holds_open_offer(&self, conversation: ConversationId, agent: &AgentId) -> bool {
        self.offers
            .get(&conversation)
            .is_some_and(|o| &o.agent == agent && o.deadline > Instant::now())
    }

    /// Whether the leader sees this request for the first time (commands are
    /// sent again until answered, for at most the route timeout: a sighting older
    /// than that is forgotten).
    fn first_sight(&self, from: &str, req: u64) -> bool {
        let now = now_ms();
        let keep = self.config.route_timeout_ms.max(10);
        let mut seen = self.seen_commands.lock().expect("seen lock poisoned");
        if seen.len() > 4096 {
            seen.retain(|_, at| now.saturating_sub(*at) <= keep);
        }
        match seen.insert((from.to_owned(), req), now) {
            Some(at) => now.saturating_sub(at) > keep,
            None => true,
        }
    }

    /// Whether this node runs the router now.
    pub(super) fn is_leader(&self) -> bool {
        if !self.config.cluster {
            return true;
        }
        let held = self.lease.current_epoch();
        held.is_some() && held == self.leadership().epoch
    }

    pub(super) fn leadership(&self) -> std::sync::MutexGuard<'_, Leadership> {
        self.leadership.lock().expect("leadership lock poisoned")
    }

    /// The store fence for a routing decision: the epoch it is made under, and
    /// optionally the agent whose capacity must allow it. Alone: none.
    pub(super) fn fence(&self, capacity_of: Option<&AgentId>) -> Option<Fence> {
        if !self.config.cluster {
            return None;
        }
        let epoch = self.leadership().epoch?;
        Some(Fence {
            epoch: epoch.0,
            capacity_of: capacity_of.cloned(),
        })
    }

    /// Runs a command on this node's router (the leader's).
    pub(super) async fn execute(self: &Arc<Self>, command: Command) -> Result<Reply, Refusal> {
        if !self.is_leader() {
            return refuse(
                ErrorCode::Overloaded,
                "routing is moving to another node; retry",
            );
        }
        let now = self.now();
        match command {
            Command::CanServe {
                department,
                language,
            } => {
                let mut serve = self.router().can_serve(&department, &language);
                if !serve && self.config.cluster {
                    // Presence may know an agent the last round did not.
                    self.reconcile_presence().await;
                    serve = self.router().can_serve(&department, &language);
                }
                if !serve && self.settling() {
                    // Presence may still be filling in after a change of leader:
                    // do not turn the player into an offline message yet.
                    return refuse(
                        ErrorCode::Overloaded,
                        "routing is starting on this node; retry",
                    );
                }
                Ok(Reply::Bool(serve))
            }
            Command::Enqueue { conversation } => {
                let live = self
                    .live_or_load(conversation)
                    .await?
                    .ok_or_else(|| Refusal(ErrorCode::NotFound, "no such conversation".into()))?;
                let request = live.lock().request.clone();
                let decisions = self
                    .router()
                    .enqueue(conversation, request, now)
                    .map_err(routing_refusal)?;
                self.send_position(conversation, true);
                self.carry_out(decisions).await;
                Ok(Reply::Done)
            }
            Command::AgentUp {
                agent,
                node,
                status,
            } => {
                self.agent_moved.insert(agent.clone(), now);
                self.agent_nodes
                    .entry(agent.clone())
                    .or_default()
                    .insert(node);
                self.agent_gone.remove(&agent);
                // Refresh the profile: the account may have changed.
                if let Ok(Some(account)) = self.store.agent(&agent).await {
                    self.learn_agent(&account, self.now());
                }
                let offline = self
                    .router()
                    .agent(&agent)
                    .map(|a| a.status == AgentStatus::Offline)
                    .unwrap_or(false);
                if offline {
                    let decisions = self
                        .router()
                        .set_status(&agent, status.unwrap_or(AgentStatus::Online), self.now())
                        .unwrap_or_default();
                    self.carry_out(decisions).await;
                }
                self.queue_dirty.store(true, Ordering::Relaxed);
                Ok(Reply::Done)
            }
            Command::AgentDown { agent, node } => {
                self.agent_moved.insert(agent.clone(), now);
                let empty = {
                    let mut empty = true;
                    if let Some(mut nodes) = self.agent_nodes.get_mut(&agent) {
                        nodes.remove(&node);
                        empty = nodes.is_empty();
                    }
                    empty
                };
                if empty {
                    self.agent_nodes.remove_if(&agent, |_, n| n.is_empty());
                    self.agent_offline(&agent, now).await;
                }
                Ok(Reply::Done)
            }
            Command::Refresh { agent } => {
                if let Ok(Some(account)) = self.store.agent(&agent).await {
                    self.learn_agent(&account, now);
                }
                Ok(Reply::Done)
            }
            Command::SignOut { agent } => {
                // No more offers, those open withdrawn; then every chat they own
                // goes to the head of the queue, without the grace period a
                // dropped connection gets.
                let decisions = self
                    .router()
                    .set_status(&agent, AgentStatus::Offline, now)
                    .unwrap_or_default();
                self.carry_out(decisions).await;
                let owned = self.router().owned_by(&agent);
                for conversation in owned {
                    self.requeue_from(conversation, &agent, timers::Requeue::SignedOut)
                        .await;
                }
                self.queue_dirty.store(true, Ordering::Relaxed);
                Ok(Reply::Done)
            }
            Command::SetStatus { agent, status } => {
                let decisions = self
                    .router()
                    .set_status(&agent, status, now)
                    .map_err(routing_refusal)?;
                self.queue_dirty.store(true, Ordering::Relaxed);
                self.tell(&UserKey::Agent(agent), ServerFrame::Status { status });
                self.carry_out(decisions).await;
                Ok(Reply::Done)
            }
            Command::Status { agent } => Ok(Reply::Status(
                self.router()
                    .agent(&agent)
                    .map(|a| a.status)
                    .unwrap_or(AgentStatus::Offline),
            )),
            Command::Roster { agents } => {
                let router = self.router();
                Ok(Reply::Roster(
                    agents
                        .iter()
                        .map(|agent| {
                            router
                                .agent(agent)
                                .map_or((AgentStatus::Offline, 0), |a| (a.status, a.load))
                        })
                        .collect(),
                ))
            }
            Command::Accept {
                agent,
                conversation,
            } => {
                // An offer the previous routing node made and this one has not
                // replaced (routing moved while it was open) still counts.
                let earlier = self.holds_open_offer(conversation, &agent);
                let mut attempt = self.accept_now(conversation, &agent, earlier, now);
                if earlier && self.settling() && attempt.as_ref().is_err_and(is_not_yet) {
                    // Right after routing moved (Redis restarted empty, say), presence
                    // may not list the agent yet: look again, and if it still does
                    // not, have the agent's node ask again shortly rather than refuse
                    // an offer the agent saw.
                    self.reconcile_presence().await;
                    attempt = self.accept_now(conversation, &agent, earlier, now);
                    if attempt.as_ref().is_err_and(is_not_yet) {
                        return refuse(
                            ErrorCode::Overloaded,
                            "routing is starting on this node; retry",
                        );
                    }
                }
                let (decisions, waited) = attempt.map_err(|e| {
                    if e == RoutingError::UnknownConversation {
                        // A command or event may have been lost: check the
                        // router against the store soon.
                        self.repair_soon.store(true, Ordering::Relaxed);
                    }
                    routing_refusal(e)
                })?;
                if let Some((ms, department)) = waited {
                    metrics::histogram!(telemetry::QUEUE_WAIT, "department" => department)
                        .record(ms as f64 / 1000.0);
                }
                self.carry_out(decisions).await;
                Ok(Reply::Done)
            }
            Command::Decline {
                agent,
                conversation,
            } => {
                // An offer the previous routing node made and this one has not
                // replaced (routing moved while it was open) is declined all the
                // same: the agent gets the decline's cooldown here.
                let earlier = self.holds_open_offer(conversation, &agent);
                let attempt = self.router().decline(conversation, &agent, now);
                let decisions = match attempt {
                    Err(RoutingError::NotOffered) if earlier => self
                        .router()
                        .decline_earlier_offer(conversation, &agent, now),
                    result => result,
                }
                .map_err(routing_refusal)?;
                // On record before the agent hears of it: a router built after the
                // answer (a restart, routing moving) keeps the cooldown.
                self.record_now(
                    conversation,
                    LifecycleKind::Declined,
                    Some(&agent),
                    serde_json::Value::Null,
                )
                .await;
                self.carry_out(decisions).await;
                Ok(Reply::Done)
            }
            Command::Transfer {
                conversation,
                owner,
                to,
                note,
            } => {
                match self.transfers.entry(conversation) {
                    dashmap::Entry::Occupied(_) => {
                        return refuse(ErrorCode::InvalidState, "a transfer is already pending")
                    }
                    dashmap::Entry::Vacant(v) => {
                        v.insert(PendingTransfer {
                            from: owner.clone(),
                            to: to.clone(),
                            note: note.clone(),
                        });
                    }
                }
                let decisions = match self
                    .router()
                    .transfer(conversation, &owner, to.clone(), now)
                {
                    Ok(d) => d,
                    Err(e) => {
                        self.transfers.remove(&conversation);
                        return Err(routing_refusal(e));
                    }
                };
                // The request's entries first, then the offer: the receiver's answer,
                // and the entries it writes, always come after them.
                let recorded = self
                    .record_transfer_request(conversation, &owner, &to, note)
                    .await;
                self.carry_out(decisions).await;
                recorded?;
                Ok(Reply::Done)
            }
            Command::TakeOver {
                conversation,
                supervisor,
            } => {
                let decisions = self
                    .router()
                    .take_over(conversation, &supervisor, now)
                    .map_err(routing_refusal)?;
                self.carry_out(decisions).await;
                Ok(Reply::Done)
            }
            Command::RestoreOwned {
                conversation,
                agent,
            } => {
                let live = self
                    .live_or_load(conversation)
                    .await?
                    .ok_or_else(|| Refusal(ErrorCode::NotFound, "no such conversation".into()))?;
                let request = live.lock().request.clone();
                self.router()
                    .restore_owned(conversation, &agent, request, now)
                    .map_err(routing_refusal)?;
                self.queue_dirty.store(true, Ordering::Relaxed);
                Ok(Reply::Done)
            }
            Command::TellPosition { conversation } => {
                if let Some(live) = self.live.get(&conversation) {
                    live.lock().last_position = None;
                }
                self.send_position(conversation, true);
                Ok(Reply::Done)
            }
        }
    }

    /// An agent has no connection left anywhere: offline, with a grace period for
    /// their conversations.
    pub(super) async fn agent_offline(self: &Arc<Self>, agent: &AgentId, now: u64) {
        self.agent_gone.insert(agent.clone(), now);
        let decisions = self
            .router()
            .set_status(agent, AgentStatus::Offline, now)
            .unwrap_or_default();
        self.carry_out(decisions).await;
        self.queue_dirty.store(true, Ordering::Relaxed);
    }

    // --------------------------------------------------------------- events

    /// Sends a frame to every connection of a user, on every node.
    pub(super) fn tell(&self, user: &UserKey, frame: ServerFrame) {
        self.note_status(user, &frame);
        self.each_conn(user, |c| {
            c.send(frame.clone());
        });
        if self.config.cluster {
            self.publish(&Event::User {
                user: user.clone(),
                frame,
            });
        }
    }

    /// Remembers a status routing gave an agent connected here (set away when an
    /// offer expired unanswered, say), as this node announces it in its presence:
    /// a router that takes over after a failover then starts from it.
    fn note_status(&self, user: &UserKey, frame: &ServerFrame) {
        if let (UserKey::Agent(agent), ServerFrame::Status { status }) = (user, frame) {
            if *status != AgentStatus::Offline && self.users.contains_key(user) {
                self.statuses.insert(agent.clone(), *status);
            }
        }
    }

    /// Applies an event here and sends it to the other nodes.
    pub(super) async fn broadcast(self: &Arc<Self>, event: Event) {
        if self.config.cluster {
            self.publish(&event);
        }
        Box::pin(self.apply(event)).await;
    }

    /// Queues an event for the other nodes; `false` if the bus refused it.
    pub(super) fn publish(&self, event: &Event) -> bool {
        let topic = match event {
            Event::Entries { .. } => "entries",
            Event::Command { .. } => "command",
            Event::Reply { .. } => "reply",
            _ => "desk",
        };
        let payload = match serde_json::to_string(event) {
            Ok(p) => p,
            Err(err) => {
                tracing::error!(%err, "cannot encode a bus event");
                return false;
            }
        };
        match self.bus.publish(topic, payload.into()) {
            Ok(()) => true,
            Err(err) => {
                tracing::warn!(%err, topic, "bus event not sent");
                false
            }
        }
    }

    /// What an event changes on this node.
    pub(super) async fn apply(self: &Arc<Self>, event: Event) {
        match event {
            Event::Entries { entries } => {
                for entry in entries {
                    let entry = Arc::new(entry);
                    let subscribers = self
                        .live
                        .get(&entry.conversation)
                        .map(|l| l.lock().subscribers.clone());
                    for c in subscribers.iter().flat_map(|s| s.iter()) {
                        if c.is_player() && !entry.is_public() {
                            continue;
                        }
                        c.push(Outbound::Entry(entry.clone()));
                    }
                }
            }
            Event::User { user, frame } => {
                self.note_status(&user, &frame);
                self.each_conn(&user, |c| {
                    c.send(frame.clone());
                });
            }
            Event::Signal {
                conversation,
                frame,
            } => {
                let subscribers = self
                    .live
                    .get(&conversation)
                    .map(|l| l.lock().subscribers.clone());
                for c in subscribers.iter().flat_map(|s| s.iter()) {
                    c.send(frame.clone());
                }
            }
            Event::Offered {
                conversation,
                agent,
                expires_in_ms,
                frame,
            } => {
                self.offers.insert(
                    conversation,
                    OfferNote {
                        agent: agent.clone(),
                        deadline: Instant::now() + Duration::from_millis(expires_in_ms),
                        frame: frame.clone(),
                    },
                );
                self.each_conn(&UserKey::Agent(agent), |c| {
                    c.send(frame.clone());
                });
            }
            Event::Withdrawn {
                conversation,
                agent,
                frame,
            } => {
                self.offers
                    .remove_if(&conversation, |_, o| o.agent == agent);
                // An agent who read the conversation while it was offered stops
                // receiving it, unless it is theirs or they supervise.
                let live = self.live.get(&conversation).map(|l| l.clone());
                let keeps = live
                    .as_ref()
                    .is_none_or(|l| l.lock().agent.as_ref() == Some(&agent))
                    || self
                        .agents
                        .get(&agent)
                        .is_some_and(|a| a.allows(Permission::ReadAnyConversation));
                self.each_conn(&UserKey::Agent(agent), |c| {
                    if let (false, Some(live)) = (keeps, &live) {
                        self.detach(c, live);
                    }
                    c.send(frame.clone());
                });
            }
            Event::Assigned {
                conversation,
                agent,
                previous,
                department,
            } => {
                self.offers.remove(&conversation);
                let Ok(Some(live)) = self.live_or_load(conversation).await else {
                    return;
                };
                if let Some(d) = department {
                    live.lock().request.department = d;
                }
                self.know_agent(&agent).await;
                self.assigned_now(&live, &agent, previous);
            }
            Event::SignedOut { agent } => {
                self.each_conn(&UserKey::Agent(agent), |c| c.close(CloseCode::SignedOut));
            }
            Event::Requeued { conversation } => {
                if let Ok(Some(live)) = self.live_or_load(conversation).await {
                    let mut s = live.lock();
                    s.state = ConversationState::Queued;
                    s.agent = None;
                    s.last_position = None;
                }
            }
            Event::Closed {
                conversation,
                reason,
                by,
                agent,
                player,
            } => {
                self.offers.remove(&conversation);
                if let Some(live) = self.live.get(&conversation).map(|l| l.clone()) {
                    live.lock().state = ConversationState::Closed;
                }
                let frame = ServerFrame::Closed {
                    conversation,
                    reason,
                    by,
                };
                self.each_conn(&UserKey::Player(player), |c| {
                    c.send(frame.clone());
                });
                if let Some(agent) = agent {
                    self.each_conn(&UserKey::Agent(agent), |c| {
                        c.send(frame.clone());
                    });
                }
                let pending = self.transfers.get(&conversation).map(|t| t.clone());
                self.remove_live(conversation);
                if self.is_leader() {
                    // The leader frees the router's slot, wherever it was closed.
                    let decisions = self.router().release(conversation, self.now());
                    self.queue_dirty.store(true, Ordering::Relaxed);
                    self.carry_out(decisions).await;
                    if let Some(pending) = pending {
                        self.transfer_cancelled(conversation, pending).await;
                    }
                }
            }
            Event::Command {
                req,
                from,
                deadline_ms,
                command,
            } => {
                if self.is_leader()
                    && self.first_sight(&from, req)
                    && self
                        .commands
                        .try_send((req, from.clone(), deadline_ms, command))
                        .is_err()
                {
                    {
                        self.publish(&Event::Reply {
                            req,
                            to: from,
                            result: Err((ErrorCode::Overloaded, "routing is busy; retry".into())),
                        });
                    }
                }
            }
            Event::Reply { req, to, result } => {
                if to == self.config.node {
                    if let Some((_, tx)) = self.pending.remove(&req) {
                        let _ = tx.send(result);
                    }
                }
            }
        }
    }

    /// The live conversation, loading it from the store if another node opened it.
    pub(super) async fn live_or_load(
        &self,
        id: ConversationId,
    ) -> Result<Option<Arc<Live>>, StoreError> {
        if let Some(live) = self.live.get(&id) {
            return Ok(Some(live.clone()));
        }
        if !self.config.cluster {
            return Ok(None);
        }
        let Some(record) = self.store.conversation(id).await? else {
            return Ok(None);
        };
        if record.summary.state == ConversationState::Closed {
            return Ok(None);
        }
        self.insert_live(&record, request_of(&record));
        Ok(self.live.get(&id).map(|l| l.clone()))
    }

    // ------------------------------------------------------- starting up

    /// Subscribes to the bus and starts the tasks that apply events and run the
    /// commands other nodes send to the leader.
    pub(super) fn join_cluster(self: &Arc<Self>, commands: mpsc::Receiver<RemoteCommand>) {
        let (tx, mut rx) = mpsc::channel(INBOX);
        let overflowed = Arc::new(AtomicBool::new(false));
        let weak = Arc::downgrade(self);
        let flag = overflowed.clone();
        tokio::spawn(async move {
            let mut first_subscription = true;
            while let Some(item) = rx.recv().await {
                let Some(desk) = weak.upgrade() else { break };
                let lost = flag.swap(false, Ordering::Relaxed);
                match item {
                    Inbound::Lost => {
                        // The subscription was made again: Redis may have restarted and
                        // lost the lease. Look at it now, not at the next heartbeat, so
                        // that a deposed routing node stops before it answers commands
                        // the new one should. (The first subscription is the start's,
                        // which takes the lease itself.)
                        if !std::mem::replace(&mut first_subscription, false) {
                            desk.keep_lease(false).await;
                        }
                        desk.resync().await;
                    }
                    Inbound::Event(envelope) => {
                        if lost {
                            desk.resync().await;
                        }
                        match serde_json::from_str::<Event>(&envelope.payload) {
                            Ok(event) => desk.apply(event).await,
                            Err(err) => {
                                tracing::warn!(%err, from = %envelope.from, "undecodable bus event")
                            }
                        }
                    }
                }
            }
        });
        let weak = Arc::downgrade(self);
        let mut commands = commands;
        tokio::spawn(async move {
            while let Some((req, from, deadline_ms, command)) = commands.recv().await {
                let Some(desk) = weak.upgrade() else { break };
                if now_ms() > deadline_ms {
                    tracing::debug!(req, %from, "command arrived after its sender stopped waiting; dropped");
                    continue;
                }
                let result = desk
                    .execute(command)
                    .await
                    .map_err(|Refusal(code, message)| (code, message));
                desk.publish(&Event::Reply {
                    req,
                    to: from,
                    result,
                });
            }
        });
        self.bus.subscribe(Arc::new(Inbox { tx, overflowed }));
    }

    /// The bounded queue of remote commands for the leader.
    pub(super) fn command_queue() -> (mpsc::Sender<RemoteCommand>, mpsc::Receiver<RemoteCommand>) {
        mpsc::channel(COMMAND_QUEUE)
    }

    // ------------------------------------------------------------- recovery

    /// The bus may have lost events: make this node agree with the store about
    /// every open conversation, and send every attached connection what it missed.
    pub(super) async fn resync(self: &Arc<Self>) {
        // Presence may be gone too (Redis restarted empty): announce ourselves now.
        self.presence_dirty.store(true, Ordering::Relaxed);
        let open = match self.store.open_conversations().await {
            Ok(open) => open,
            Err(err) => {
                tracing::warn!(%err, "cannot resync from the store; will retry");
                let weak = Arc::downgrade(self);
                let retry = Duration::from_millis(self.config.heartbeat_ms.max(100));
                tokio::spawn(async move {
                    tokio::time::sleep(retry).await;
                    if let Some(desk) = weak.upgrade() {
                        desk.inbox_lost();
                    }
                });
                return;
            }
        };
        let leader = self.is_leader();
        let mut open_ids = HashSet::with_capacity(open.len());
        let mut changed = Vec::new();
        for record in &open {
            let id = record.summary.id;
            open_ids.insert(id);
            let Some(live) = self.live.get(&id).map(|l| l.clone()) else {
                self.insert_live(record, request_of(record));
                changed.push(id);
                continue;
            };
            let (state, agent) = {
                let s = live.lock();
                (s.state, s.agent.clone())
            };
            if state == record.summary.state && agent == record.summary.agent {
                continue;
            }
            changed.push(id);
            live.lock().request.department = record.summary.department.clone();
            match (record.summary.state, record.summary.agent.clone()) {
                (ConversationState::Active, Some(owner)) => {
                    self.assigned_now(&live, &owner, agent.filter(|a| *a != owner));
                }
                (state, owner) => {
                    let mut s = live.lock();
                    s.state = state;
                    s.agent = owner;
                    s.last_position = None;
                }
            }
        }
        let gone: Vec<ConversationId> = self
            .live
            .iter()
            .map(|e| *e.key())
            .filter(|id| !open_ids.contains(id))
            .collect();
        for id in gone {
            let Some(live) = self.live.get(&id).map(|l| l.clone()) else {
                continue;
            };
            let (player, agent) = {
                let s = live.lock();
                (s.player.id.clone(), s.agent.clone())
            };
            let reason = self
                .store
                .conversation(id)
                .await
                .ok()
                .flatten()
                .and_then(|r| r.close_reason);
            self.apply(Event::Closed {
                conversation: id,
                reason,
                by: Role::System,
                agent,
                player,
            })
            .await;
        }
        // Every attached connection reads what it may have missed.
        let conns: Vec<ConnRef> = self.conns.iter().map(|c| c.clone()).collect();
        for conn in conns {
            let attached = conn.0.attached.lock().expect("attached lock").clone();
            for conversation in attached {
                conn.push(Outbound::Catchup(conversation));
            }
        }
        if leader {
            for id in changed {
                self.reconcile(id).await;
            }
            self.queue_dirty.store(true, Ordering::Relaxed);
        }
        metrics::counter!(telemetry::RESYNCS).increment(1);
        tracing::info!(open = open.len(), "resynchronised with the store");
    }

    /// Asks for a resync at the next tick.
    fn inbox_lost(&self) {
        self.resync_requested.store(true, Ordering::Relaxed);
    }

    // ---------------------------------------------------------- leadership

    /// The presence heartbeat and the routing lease, on their own task so that a
    /// slow store or router never delays them. With `inline`, a new term's router
    /// is rebuilt before returning (at start); else on a task of its own.
    pub(super) async fn keep_lease(self: &Arc<Self>, inline: bool) {
        let heartbeat = Duration::from_millis(self.config.heartbeat_ms.max(10));
        let due = |last: Option<Instant>| last.is_none_or(|t| t.elapsed() >= heartbeat);
        let beat = self.presence_dirty.swap(false, Ordering::Relaxed)
            || due(self.leadership().last_heartbeat);
        if beat {
            let entries = self.presence_entries();
            let ttl = 3 * self.config.heartbeat_ms.max(10);
            let started = Instant::now();
            let result = self.presence.heartbeat(entries, ttl).await;
            telemetry::redis("heartbeat", started.elapsed(), &result);
            match result {
                Ok(()) => {
                    let mut l = self.leadership();
                    l.last_heartbeat = Some(started);
                    l.last_heartbeat_ok = Some(Instant::now());
                }
                // Tried again at the next tick.
                Err(err) => tracing::warn!(%err, "presence heartbeat failed"),
            }
        }

        let leading = self.leadership().epoch;
        if leading.is_none() && due(self.leadership().last_floor) {
            self.leadership().last_floor = Some(Instant::now());
            // Epochs keep growing even if Redis lost its counter. Bounded: a slow
            // store must not hold up the heartbeat.
            if let Ok(Ok(epoch)) = tokio::time::timeout(heartbeat, self.store.routing_epoch()).await
            {
                self.lease.raise_epoch_floor(Epoch(epoch));
            }
        }
        let ttl = 3 * self.config.heartbeat_ms.max(10);
        let started = Instant::now();
        let result = self.lease.acquire_or_renew(ttl).await;
        telemetry::redis("lease", started.elapsed(), &result);
        metrics::counter!(telemetry::BUS_DROPPED).absolute(self.bus.dropped());
        match result {
            Ok(Some(epoch)) if Some(epoch) != leading => {
                if self.taking_over.swap(true, Ordering::AcqRel) {
                    return;
                }
                if leading.is_some() {
                    // A new term of ours (the lease was lost and taken again): no
                    // command may run on the old term's router while the new one
                    // is built, or what it did would be lost with it.
                    self.step_down("a new routing term begins");
                }
                if inline {
                    self.take_over_routing(epoch).await;
                    self.taking_over.store(false, Ordering::Release);
                } else {
                    let desk = self.clone();
                    tokio::spawn(async move {
                        desk.take_over_routing(epoch).await;
                        desk.taking_over.store(false, Ordering::Release);
                    });
                }
            }
            Ok(Some(_)) => {}
            Ok(None) => {
                if leading.is_some() {
                    self.step_down("another node holds the routing lease");
                }
            }
            Err(err) => {
                tracing::warn!(%err, "cannot renew the routing lease");
                // Whoever holds the lease after Redis comes back, it may not be us:
                // stop at once rather than when our term would have ended.
                if leading.is_some() {
                    self.step_down("the routing lease cannot be renewed");
                }
            }
        }
        metrics::gauge!(telemetry::LEADER).set(if self.is_leader() { 1.0 } else { 0.0 });
    }

    /// The leader's periodic cluster work: presence every heartbeat, and a check of
    /// the router against the store now and then. Returns whether this node leads.
    pub(super) async fn cluster_tick(self: &Arc<Self>) -> bool {
        if self.resync_requested.swap(false, Ordering::Relaxed) {
            self.resync().await;
        }
        if !self.is_leader() {
            return false;
        }
        let heartbeat = Duration::from_millis(self.config.heartbeat_ms.max(10));
        let due = self
            .leadership()
            .last_presence
            .is_none_or(|t| t.elapsed() >= heartbeat);
        if due {
            let rounds = {
                let mut l = self.leadership();
                l.last_presence = Some(Instant::now());
                l.presence_rounds = l.presence_rounds.wrapping_add(1);
                l.presence_rounds
            };
            self.reconcile_presence().await;
            if rounds.is_multiple_of(REPAIR_EVERY)
                || self.repair_soon.swap(false, Ordering::Relaxed)
            {
                let _ = tokio::time::timeout(5 * heartbeat, self.repair()).await;
            }
        }
        self.is_leader()
    }

    /// Whether this node took the lease so recently that presence may not have
    /// caught up yet (right after Redis restarted empty, say).
    pub(super) fn settling(&self) -> bool {
        let settle = Duration::from_millis(3 * self.config.heartbeat_ms.max(10));
        self.leadership()
            .leading_since
            .is_some_and(|t| t.elapsed() < settle)
    }

    /// This node got the lease: fence older leaders in the store, then rebuild the
    /// router from the store and presence.
    async fn take_over_routing(self: &Arc<Self>, epoch: Epoch) {
        if let Err(err) = self.store.raise_routing_epoch(epoch.0).await {
            tracing::warn!(%err, "cannot record the routing epoch; not routing yet");
            return;
        }
        let open = match self.store.open_conversations().await {
            Ok(open) => open,
            Err(err) => {
                tracing::warn!(%err, "cannot read open conversations; not routing yet");
                return;
            }
        };
        for record in &open {
            self.insert_live(record, request_of(record));
        }
        let orphans = match self.rebuild_router(&open).await {
            Ok(orphans) => orphans,
            Err(err) => {
                tracing::warn!(%err, "cannot rebuild the router; not routing yet");
                return;
            }
        };
        // Offers made under an earlier term are void. The new router usually makes
        // the same offer again once presence is complete; those that it has not
        // made again by the end of the settling period are withdrawn then.
        let earlier: Vec<(ConversationId, AgentId, Instant)> = self
            .offers
            .iter()
            .map(|o| (*o.key(), o.agent.clone(), o.deadline))
            .collect();
        if !earlier.is_empty() {
            let desk = self.clone();
            let settle = Duration::from_millis(3 * self.config.heartbeat_ms.max(10));
            tokio::spawn(async move {
                tokio::time::sleep(settle).await;
                for (conversation, agent, deadline) in earlier {
                    let made_again = desk
                        .offers
                        .get(&conversation)
                        .is_some_and(|o| o.agent == agent && o.deadline != deadline);
                    if made_again {
                        continue;
                    }
                    desk.broadcast(Event::Withdrawn {
                        conversation,
                        agent,
                        frame: ServerFrame::OfferWithdrawn {
                            conversation,
                            reason: WithdrawReason::Cancelled,
                        },
                    })
                    .await;
                }
            });
        }
        {
            let mut l = self.leadership();
            l.epoch = Some(epoch);
            l.last_presence = None;
            l.leading_since = Some(Instant::now());
        }
        // Under this term's fence, now that it is ours.
        for (conversation, agent) in orphans {
            self.requeue_from(conversation, &agent, timers::Requeue::AccountRemoved)
                .await;
        }
        tracing::info!(node = %self.config.node, epoch = epoch.0, queued = self.router().queue().len(), "routing here now");
        self.reconcile_presence().await;
        self.queue_dirty.store(true, Ordering::Relaxed);
    }

    fn step_down(&self, why: &str) {
        tracing::warn!(node = %self.config.node, why, "no longer routing");
        {
            let mut l = self.leadership();
            l.epoch = None;
            l.nodes_seen = None;
        }
        *self.router() = Router::new(self.config.routing.clone());
        // The queue's length is the routing node's to report: zero here, so that
        // a sum over nodes counts each waiting player once.
        self.report_queue_lengths(Default::default());
        self.transfers.clear();
        self.agent_gone.clear();
        self.player_gone.clear();
        self.agent_nodes.clear();
        self.agent_moved.clear();
    }

    /// What this node announces: its agents (with the status they chose) and the
    /// players of queued conversations connected here.
    fn presence_entries(&self) -> Vec<String> {
        let mut entries = Vec::new();
        let mut players = Vec::new();
        for e in self.users.iter() {
            match e.key() {
                UserKey::Agent(a) => {
                    let status = self
                        .statuses
                        .get(a)
                        .map(|s| *s)
                        .unwrap_or(AgentStatus::Online);
                    let word = if status == AgentStatus::Away {
                        "away"
                    } else {
                        "online"
                    };
                    entries.push(format!("agent:{word}:{a}"));
                }
                UserKey::Player(p) => players.push(p.clone()),
            }
        }
        for p in players {
            let queued = self.player_live.get(&p).is_some_and(|list| {
                list.iter().any(|id| {
                    self.live
                        .get(id)
                        .is_some_and(|l| l.lock().state == ConversationState::Queued)
                })
            });
            if queued {
                entries.push(format!("player:{p}"));
            }
        }
        entries
    }

    /// The leader brings agents' statuses and players' presence in line with what
    /// the live nodes announce: an agent no live node lists goes offline (with
    /// their grace period); a queued player no node lists starts the abandonment
    /// clock.
    async fn reconcile_presence(self: &Arc<Self>) {
        let started = Instant::now();
        let result = self.presence.alive().await;
        telemetry::redis("presence", started.elapsed(), &result);
        let alive = match result {
            Ok(alive) => alive,
            Err(err) => {
                tracing::warn!(%err, "cannot read presence");
                return;
            }
        };
        self.note_nodes(alive.iter().map(|n| n.node.clone()).collect());
        let now = self.now();
        let mut agents: HashMap<AgentId, (AgentStatus, HashSet<String>)> = HashMap::new();
        let mut players: HashSet<String> = HashSet::new();
        for node in alive {
            for entry in node.agents {
                if let Some(rest) = entry.strip_prefix("agent:") {
                    let Some((word, id)) = rest.split_once(':') else {
                        continue;
                    };
                    let status = if word == "away" {
                        AgentStatus::Away
                    } else {
                        AgentStatus::Online
                    };
                    let slot = agents
                        .entry(AgentId(id.to_owned()))
                        .or_insert((status, HashSet::new()));
                    slot.1.insert(node.node.clone());
                } else if let Some(id) = entry.strip_prefix("player:") {
                    players.insert(id.to_owned());
                }
            }
        }
        // A heartbeat may predate an agent's arrival or departure that a command
        // already told: presence does not overrule a command younger than two
        // heartbeats.
        let settle = 2 * self.config.heartbeat_ms;
        self.agent_moved
            .retain(|_, at| now.saturating_sub(*at) < settle);
        let before: Vec<AgentId> = self.agent_nodes.iter().map(|e| e.key().clone()).collect();
        for agent in before {
            if self.agent_moved.contains_key(&agent) {
                continue;
            }
            if !agents.contains_key(&agent) {
                self.agent_nodes.remove(&agent);
                self.agent_offline(&agent, now).await;
            }
        }
        for (agent, (status, nodes)) in agents {
            if self.agent_moved.contains_key(&agent) {
                continue;
            }
            self.agent_nodes.insert(agent.clone(), nodes);
            self.agent_gone.remove(&agent);
            let offline = self
                .router()
                .agent(&agent)
                .map(|a| a.status == AgentStatus::Offline);
            if offline == Some(true) {
                let decisions = self
                    .router()
                    .set_status(&agent, status, now)
                    .unwrap_or_default();
                self.queue_dirty.store(true, Ordering::Relaxed);
                self.carry_out(decisions).await;
            }
        }
        // Queued players: present somewhere, or absent since when.
        let queue = self.router().queue();
        for item in queue {
            let Some(player) = self
                .live
                .get(&item.conversation)
                .map(|l| l.lock().player.id.clone())
            else {
                continue;
            };
            let here = self.users.contains_key(&UserKey::Player(player.clone()));
            if here || players.contains(&player.0) {
                self.player_gone.remove(&item.conversation);
            } else if now.saturating_sub(item.since) >= settle {
                self.player_gone.entry(item.conversation).or_insert(now);
            }
        }
    }

    /// Logs which nodes joined or left the cluster since the last look (the
    /// routing node's view; the first look of a term lists them all).
    fn note_nodes(&self, alive: BTreeSet<NodeId>) {
        let before = self.leadership().nodes_seen.replace(alive.clone());
        let Some(before) = before else {
            tracing::info!(nodes = ?alive, "nodes alive");
            return;
        };
        for node in before.difference(&alive) {
            tracing::warn!(
                left = %node,
                "a node left the cluster (it shut down, or sent no heartbeat for 3 heartbeats): \
                 its agents have their grace period to reconnect elsewhere"
            );
        }
        for node in alive.difference(&before) {
            tracing::info!(joined = %node, "a node joined the cluster");
        }
    }

    /// The leader checks its router against the store: conversations a lost
    /// command or event left out are queued, closed ones are released.
    async fn repair(self: &Arc<Self>) {
        let Ok(open) = self.store.open_conversations().await else {
            return;
        };
        let now = self.now();
        let mut open_ids = HashSet::new();
        for record in &open {
            open_ids.insert(record.summary.id);
            let known = self.router().conversation(record.summary.id).is_some();
            if known {
                continue;
            }
            match (record.summary.state, record.summary.agent.clone()) {
                (ConversationState::Queued, _) => {
                    self.insert_live(record, request_of(record));
                    let decisions = self
                        .router()
                        .enqueue(record.summary.id, request_of(record), now)
                        .unwrap_or_default();
                    self.carry_out(decisions).await;
                }
                (ConversationState::Active, Some(agent)) => {
                    self.insert_live(record, request_of(record));
                    let _ = self.router().restore_owned(
                        record.summary.id,
                        &agent,
                        request_of(record),
                        now,
                    );
                }
                _ => {}
            }
        }
        let stale: Vec<ConversationId> = self
            .router()
            .queue()
            .into_iter()
            .map(|i| i.conversation)
            .filter(|id| !open_ids.contains(id))
            .collect();
        for id in stale {
            let decisions = self.router().release(id, now);
            self.carry_out(decisions).await;
        }
    }

    /// Whether this node's link to what the nodes share works: alone, always; in a
    /// cluster, Redis accepted a heartbeat within the last three periods.
    pub fn cluster_health(&self) -> Result<(), String> {
        if !self.config.cluster {
            return Ok(());
        }
        let limit = Duration::from_millis(3 * self.config.heartbeat_ms.max(10));
        match self.leadership().last_heartbeat_ok {
            Some(t) if t.elapsed() <= limit => Ok(()),
            Some(t) => Err(format!(
                "redis: no heartbeat accepted for {} ms",
                t.elapsed().as_millis()
            )),
            None => Err("redis: no heartbeat accepted yet".into()),
        }
    }

    /// Leaves the cluster on shutdown: gives the lease up and withdraws presence at
    /// once, so another node takes over routing without waiting for the ttl.
    pub async fn leave(&self) {
        if !self.config.cluster {
            return;
        }
        // Stops the timers first, so the lease is not taken again meanwhile.
        self.draining.store(true, Ordering::Relaxed);
        if let Err(err) = self.lease.release().await {
            tracing::warn!(%err, "cannot release the routing lease");
        }
        if let Err(err) = self.presence.leave().await {
            tracing::warn!(%err, "cannot withdraw presence");
        }
    }
}

/// The routing request of a stored conversation.
pub(super) fn request_of(record: &ConversationRecord) -> Request {
    Request {
        department: record.summary.department.clone(),
        language: record.summary.language.clone(),
        tier: if record.player.verified {
            record.player.vip_tier
        } else {
            0
        },
    }
}

/// An accept the router cannot grant yet, but may once presence lists the agent.
fn is_not_yet(e: &RoutingError) -> bool {
    matches!(e, RoutingError::NotOffered | RoutingError::UnknownAgent)
}

/// How long an accepted conversation waited in the queue (ms), and its department.
type Waited = (u64, String);
