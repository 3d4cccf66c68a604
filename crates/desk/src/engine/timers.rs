//! Timers: router ticks under the lease, agents' grace periods, abandoned players, queue positions and snapshots.

use super::*;

/// How soon a requeue the store refused (an agent's grace period over) is tried again.
const REQUEUE_RETRY_MS: u64 = 5_000;

impl Desk {
    // ----------------------------------------------------------------- timers

    pub(super) async fn on_tick(self: &Arc<Self>) {
        // Only the lease holder runs the router's timers; alone, that is us.
        if self.config.cluster && !self.cluster_tick().await {
            return;
        }
        let now = self.now();
        let decisions = self.router().tick(now);
        self.carry_out(decisions).await;
        self.resume_transfers(now).await;

        let grace: Vec<AgentId> = self
            .agent_gone
            .iter()
            .filter(|e| now.saturating_sub(*e.value()) >= self.config.agent_grace_ms)
            .map(|e| e.key().clone())
            .collect();
        for agent in grace {
            self.agent_gone.remove(&agent);
            if self.agent_nodes.contains_key(&agent) {
                continue;
            }
            let owned = self.router().owned_by(&agent);
            for conversation in owned {
                self.requeue_from(conversation, &agent, Requeue::AgentGone)
                    .await;
            }
        }

        let abandoned: Vec<ConversationId> = self
            .player_gone
            .iter()
            .filter(|e| now.saturating_sub(*e.value()) >= self.config.abandon_after_ms)
            .map(|e| *e.key())
            .collect();
        for conversation in abandoned {
            self.abandon(conversation).await;
        }

        if self.queue_dirty.swap(false, Ordering::Relaxed) {
            self.send_queue_updates();
        }
    }

    /// Transfers to a named agent that were pending when this router was built
    /// (a restart, routing moving): each is offered to its receiver again, with
    /// its note, as soon as they are online with room. One whose receiver is not
    /// within an offer's timeout (as long as they would have had to answer) ends
    /// as expired, and its owner hears so. One whose owner has moved on meanwhile
    /// (closed the chat, asked for another transfer) is dropped.
    async fn resume_transfers(self: &Arc<Self>, now: u64) {
        if self.resuming.is_empty() {
            return;
        }
        let settle = self.config.routing.offer_timeout_ms;
        let waiting: Vec<(ConversationId, PendingTransfer, u64)> = self
            .resuming
            .iter()
            .map(|e| (*e.key(), e.value().0.clone(), e.value().1))
            .collect();
        for (id, pending, since) in waiting {
            let attempt = self
                .router()
                .transfer(id, &pending.from, pending.to.clone(), now);
            match attempt {
                Ok(decisions) => {
                    self.resuming.remove(&id);
                    self.transfers.insert(id, pending);
                    self.carry_out(decisions).await;
                }
                Err(RoutingError::TargetUnavailable) if now.saturating_sub(since) < settle => {}
                Err(RoutingError::TargetUnavailable) => {
                    self.resuming.remove(&id);
                    let owner = pending.from.clone();
                    self.transfers.insert(id, pending);
                    self.transfer_failed(id, owner, TransferFailure::Expired)
                        .await;
                }
                Err(_) => {
                    self.resuming.remove(&id);
                }
            }
        }
    }

    /// `conversation` leaves `agent` for the head of the queue, for the reason
    /// given: the store records it (its `requeued` event, for the player and the
    /// history), every node hears of it, and the router queues it if it has not.
    pub(super) async fn requeue_from(
        self: &Arc<Self>,
        conversation: ConversationId,
        agent: &AgentId,
        why: Requeue,
    ) {
        let Some(live) = self.live.get(&conversation).map(|l| l.clone()) else {
            return;
        };
        if let Err(err) = self.record_requeue(conversation, agent, why).await {
            match why {
                Requeue::AgentGone | Requeue::SignedOut => {
                    tracing::warn!(%err, conversation = %conversation, "requeue not stored; will retry");
                    // Tried again in a few seconds, not after a whole new grace
                    // period: the player has waited through one already.
                    let again = self
                        .now()
                        .saturating_add(REQUEUE_RETRY_MS)
                        .saturating_sub(self.config.agent_grace_ms);
                    self.agent_gone.insert(agent.clone(), again);
                }
                // The router queues it all the same; its next assignment stores
                // the new owner over the state the store holds.
                Requeue::AccountRemoved => {
                    tracing::warn!(%err, conversation = %conversation, "requeue of a removed account's chat not stored");
                }
            }
            return;
        }
        if let Some((_, pending)) = self.transfers.remove(&conversation) {
            self.transfer_cancelled(conversation, pending).await;
        }
        if why != Requeue::AccountRemoved {
            let request = live.lock().request.clone();
            let decisions = self
                .router()
                .requeue_at_head(conversation, request, self.now())
                .unwrap_or_default();
            self.carry_out(decisions).await;
        }
        self.send_position(conversation, true);
        self.watch_player_presence(&live);
    }

    /// Stores that `conversation` left `agent` for the head of the queue (its
    /// `requeued` event, for the player and the history) and tells every node.
    async fn record_requeue(
        self: &Arc<Self>,
        conversation: ConversationId,
        agent: &AgentId,
        why: Requeue,
    ) -> Result<(), StoreError> {
        self.store
            .apply(Change {
                conversation,
                expect: Some(Expect {
                    state: ConversationState::Active,
                    agent: Some(agent.clone()),
                }),
                set: Some(SetState {
                    state: ConversationState::Queued,
                    agent: None,
                    close_reason: None,
                    department: None,
                }),
                entry: Some(system_entry("requeued", why.text().into())),
                events: vec![LifecycleEvent {
                    kind: LifecycleKind::Requeued,
                    agent: Some(agent.clone()),
                    detail: serde_json::json!({ "reason": why.reason() }),
                    at: now_ms(),
                }],
                fence: self.fence(None),
                ..Default::default()
            })
            .await?;
        self.broadcast(Event::Requeued { conversation }).await;
        Ok(())
    }

    /// A queued conversation whose player has no connection starts its
    /// abandonment clock.
    pub(super) fn watch_player_presence(&self, live: &Live) {
        if self.config.cluster {
            // The leader's presence check starts the clock in a cluster.
            return;
        }
        let player = live.lock().player.id.clone();
        if !self.users.contains_key(&UserKey::Player(player)) {
            self.player_gone
                .entry(live.id)
                .or_insert_with(|| self.now());
        }
    }

    pub(super) async fn abandon(self: &Arc<Self>, conversation: ConversationId) {
        self.player_gone.remove(&conversation);
        let Some(live) = self.live.get(&conversation).map(|l| l.clone()) else {
            return;
        };
        let (state, player) = {
            let s = live.lock();
            (s.state, s.player.id.clone())
        };
        if state != ConversationState::Queued {
            return;
        }
        let result = self
            .store
            .apply(Change {
                conversation,
                expect: Some(Expect {
                    state: ConversationState::Queued,
                    agent: None,
                }),
                set: Some(SetState {
                    state: ConversationState::Closed,
                    agent: None,
                    close_reason: Some("abandoned".into()),
                    department: None,
                }),
                entry: Some(system_entry(
                    "closed",
                    "The player left before an agent was free.".into(),
                )),
                events: vec![
                    LifecycleEvent {
                        kind: LifecycleKind::Abandoned,
                        agent: None,
                        detail: serde_json::json!({ "by": "timeout" }),
                        at: now_ms(),
                    },
                    LifecycleEvent {
                        kind: LifecycleKind::Closed,
                        agent: None,
                        detail: serde_json::json!({ "reason": "abandoned", "by": "system" }),
                        at: now_ms(),
                    },
                ],
                fence: self.fence(None),
                ..Default::default()
            })
            .await;
        match result {
            Ok(_) => {
                self.finish_close(
                    conversation,
                    Some("abandoned".into()),
                    Role::System,
                    None,
                    player,
                )
                .await
            }
            Err(err) => tracing::warn!(%err, conversation = %conversation, "abandon not stored"),
        }
    }

    /// Sends each queued player their position when it changed, and each online
    /// agent the queue they could be offered from.
    pub(super) fn send_queue_updates(&self) {
        let (lengths, (queued, head), positions) = {
            let router = self.router();
            (
                router.queue_lengths(),
                router.queue_head(100),
                router.positions(),
            )
        };
        self.report_queue_lengths(lengths);
        for (conversation, position) in positions {
            self.tell_position(conversation, position, false);
        }
        // Every agent connected to some node (the leader's view).
        let agents: Vec<AgentId> = self.agent_nodes.iter().map(|e| e.key().clone()).collect();
        let now = self.now();
        for agent in agents {
            let whole_queue = self
                .agents
                .get(&agent)
                .is_some_and(|a| a.allows(Permission::ReadAnyConversation));
            let (total, items) = if whole_queue {
                (queued, head.clone())
            } else {
                self.router().queue_for(&agent, 100)
            };
            let entries = items
                .into_iter()
                .map(|i| QueueEntry {
                    conversation: i.conversation,
                    department: i.request.department,
                    language: i.request.language,
                    vip_tier: i.request.tier,
                    waited_ms: now.saturating_sub(i.since),
                    offered: i.offered_to.is_some(),
                })
                .collect::<Vec<_>>();
            self.tell(
                &UserKey::Agent(agent),
                ServerFrame::QueueSnapshot { total, entries },
            );
        }
    }

    /// Sets the queue-length gauge of every department, including those whose
    /// queue just emptied.
    pub(super) fn report_queue_lengths(&self, counts: std::collections::BTreeMap<String, usize>) {
        for department in self.reported_departments.iter() {
            if !counts.contains_key(department.key().as_str()) {
                metrics::gauge!(telemetry::QUEUE_LENGTH, "department" => department.key().clone())
                    .set(0.0);
            }
        }
        for (department, n) in counts {
            self.reported_departments.insert(department.clone(), ());
            metrics::gauge!(telemetry::QUEUE_LENGTH, "department" => department).set(n as f64);
        }
    }

    /// Sends the player of a queued conversation their position, if it changed
    /// (or always, with `force`).
    pub(super) fn send_position(&self, conversation: ConversationId, force: bool) {
        let Some(position) = self.router().position(conversation) else {
            return;
        };
        self.tell_position(conversation, position, force);
    }

    pub(super) fn tell_position(
        &self,
        conversation: ConversationId,
        position: Position,
        force: bool,
    ) {
        let Some(live) = self.live.get(&conversation).map(|l| l.clone()) else {
            return;
        };
        let estimate = position.estimated_wait_ms.map(|ms| ms.div_ceil(1000));
        let now = (position.position, estimate, position.agents_online);
        let player = {
            let mut s = live.lock();
            if !force && s.last_position == Some(now) {
                return;
            }
            s.last_position = Some(now);
            s.player.id.clone()
        };
        self.tell(
            &UserKey::Player(player),
            ServerFrame::Queued {
                conversation,
                position: position.position,
                estimated_wait_secs: estimate,
                agents_online: position.agents_online,
            },
        );
    }
}

/// Why a conversation leaves its owner for the head of the queue.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Requeue {
    /// The owner's grace period ran out.
    AgentGone,
    /// The owner's account was removed while routing was not running: the router,
    /// rebuilt from the store, has queued the conversation already.
    AccountRemoved,
    /// The owner signed out (`sign_out`).
    SignedOut,
}

impl Requeue {
    /// The `reason` its `requeued` event records.
    fn reason(self) -> &'static str {
        match self {
            Requeue::AgentGone => "agent_gone",
            Requeue::AccountRemoved => "account_removed",
            Requeue::SignedOut => "signed_out",
        }
    }

    /// The text of the `requeued` entry the player reads.
    fn text(self) -> &'static str {
        match self {
            Requeue::AgentGone | Requeue::AccountRemoved => {
                "Your agent was disconnected; you are first in line for the next one."
            }
            Requeue::SignedOut => {
                "Your agent has signed off; you are first in line for the next one."
            }
        }
    }
}
