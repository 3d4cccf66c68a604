//! The commit path (entries fanned out in commit order) and carrying out routing decisions: offers, withdrawals, assignments, failed transfers, reconciliation.

use super::*;

/// How long [`Desk::reconcile`] waits for the store's view of a conversation
/// before taking it for queued.
const RECONCILE_READ: Duration = Duration::from_secs(1);

impl Desk {
    // ------------------------------------------------------------ commit path

    /// Called by the store's writer right after a commit, in commit order: every
    /// attached connection gets the entry, the writer's own connection its ack.
    pub(super) fn fan_out(&self, entries: &[(StoredEntry, u64)]) {
        if self.config.cluster && !entries.is_empty() {
            // After commit, in commit order: the other nodes' subscribers too.
            self.publish(&Event::Entries {
                entries: entries.iter().map(|(e, _)| e.clone()).collect(),
            });
        }
        for (entry, origin) in entries {
            self.stats.entries.fetch_add(1, Ordering::Relaxed);
            let kind = match entry.kind {
                MessageKind::Text => "text",
                MessageKind::Note => "note",
                MessageKind::Event => "event",
            };
            metrics::counter!(telemetry::ENTRIES, "kind" => kind).increment(1);
            let entry = Arc::new(entry.clone());
            let subscribers = self
                .live
                .get(&entry.conversation)
                .map(|l| l.lock().subscribers.clone());
            if let Some(subscribers) = subscribers {
                for c in subscribers.iter() {
                    if c.id() == *origin || (c.is_player() && !entry.is_public()) {
                        continue;
                    }
                    c.push(Outbound::Entry(entry.clone()));
                }
            }
            if *origin != 0 {
                if let Some(c) = self.conns.get(origin).map(|c| c.clone()) {
                    c.push(Outbound::Ack(entry));
                }
            }
        }
    }

    // ------------------------------------------------------------- decisions

    /// Carries out what the router decided: offers, withdrawals, assignments
    /// (made durable with a compare-and-set), failed transfers.
    pub(super) async fn carry_out(self: &Arc<Self>, decisions: Vec<Decision>) {
        for decision in decisions {
            match decision {
                Decision::QueueChanged => {
                    self.queue_dirty.store(true, Ordering::Relaxed);
                }
                Decision::Offer {
                    conversation,
                    agent,
                    expires_at,
                    transfer_from,
                } => {
                    self.offer(conversation, agent, expires_at, transfer_from)
                        .await
                }
                Decision::OfferWithdrawn {
                    conversation,
                    agent,
                    reason,
                } => {
                    let reason = match reason {
                        pitboss_routing::WithdrawReason::Expired => {
                            // On record before the agent hears of it, as a decline
                            // is: a router built meanwhile keeps the cooldown.
                            self.record_now(
                                conversation,
                                LifecycleKind::OfferExpired,
                                Some(&agent),
                                serde_json::Value::Null,
                            )
                            .await;
                            WithdrawReason::Expired
                        }
                        pitboss_routing::WithdrawReason::Declined => WithdrawReason::Declined,
                        pitboss_routing::WithdrawReason::Cancelled => WithdrawReason::Cancelled,
                    };
                    self.broadcast(Event::Withdrawn {
                        conversation,
                        agent,
                        frame: ServerFrame::OfferWithdrawn {
                            conversation,
                            reason,
                        },
                    })
                    .await;
                }
                Decision::Assigned {
                    conversation,
                    agent,
                    previous,
                } => self.assign(conversation, agent, previous).await,
                Decision::TransferFailed {
                    conversation,
                    owner,
                    reason,
                } => self.transfer_failed(conversation, owner, reason).await,
                Decision::AgentAway { agent } => {
                    tracing::info!(agent = %agent, "offer expired unanswered: agent set away");
                    self.tell(
                        &UserKey::Agent(agent),
                        ServerFrame::Status {
                            status: AgentStatus::Away,
                        },
                    );
                }
            }
        }
    }

    pub(super) async fn offer(
        self: &Arc<Self>,
        conversation: ConversationId,
        agent: AgentId,
        expires_at: u64,
        transfer_from: Option<AgentId>,
    ) {
        let Some(frame) = self.offer_frame(conversation, expires_at, transfer_from) else {
            return;
        };
        self.record(
            conversation,
            LifecycleKind::Offered,
            Some(&agent),
            serde_json::Value::Null,
        );
        self.broadcast(Event::Offered {
            conversation,
            agent,
            expires_in_ms: expires_at.saturating_sub(self.now()),
            frame,
        })
        .await;
    }

    /// The `offer` frame for a conversation, as it stands now.
    pub(super) fn offer_frame(
        &self,
        conversation: ConversationId,
        expires_at: u64,
        transfer_from: Option<AgentId>,
    ) -> Option<ServerFrame> {
        let live = self.live.get(&conversation).map(|l| l.clone())?;
        let (card, request) = {
            let s = live.lock();
            (s.player.clone(), s.request.clone())
        };
        let now = self.now();
        let since = match self.router().conversation(conversation) {
            Some(ConversationView::Queued { since, .. })
            | Some(ConversationView::Owned { since, .. }) => since,
            None => now,
        };
        // A department transfer is offered in the department it is moving to.
        let pending = transfer_from
            .as_ref()
            .and_then(|_| self.transfers.get(&conversation))
            .map(|t| {
                let to = match &t.to {
                    TransferTarget::Department(department) => Some(department.clone()),
                    TransferTarget::Agent(_) => None,
                };
                (t.note.clone(), to)
            });
        let (note, moving_to) = pending.unwrap_or_default();
        let transfer = transfer_from.map(|from| TransferInfo {
            from: self.agent_participant(&from),
            note,
        });
        Some(ServerFrame::Offer(Offer {
            conversation,
            player: card,
            department: moving_to.unwrap_or(request.department),
            language: request.language,
            waited_ms: now.saturating_sub(since),
            expires_in_ms: expires_at.saturating_sub(now),
            transfer,
        }))
    }

    /// The `offer` frames open to `agent` now, with the time left (a console that
    /// reconnects shows them again).
    pub(super) fn open_offers(&self, agent: &AgentId) -> Vec<ServerFrame> {
        let now = Instant::now();
        self.offers
            .iter()
            .filter(|o| &o.agent == agent && o.deadline > now)
            .map(|o| {
                let mut frame = o.frame.clone();
                if let ServerFrame::Offer(offer) = &mut frame {
                    offer.expires_in_ms =
                        o.deadline.saturating_duration_since(now).as_millis() as u64;
                }
                frame
            })
            .collect()
    }

    pub(super) async fn assign(
        self: &Arc<Self>,
        conversation: ConversationId,
        agent: AgentId,
        previous: Option<AgentId>,
    ) {
        let Some(live) = self.live.get(&conversation).map(|l| l.clone()) else {
            // Closed meanwhile: free the router's slot.
            let decisions = self.router().release(conversation, self.now());
            Box::pin(self.carry_out(decisions)).await;
            return;
        };
        let (state, owner) = {
            let s = live.lock();
            (s.state, s.agent.clone())
        };
        let transfer = self.transfers.remove(&conversation).map(|(_, t)| t);
        // An accepted department transfer moves the conversation there.
        let new_department = match (&previous, &transfer) {
            (Some(prev), Some(t)) if t.from == *prev => match &t.to {
                TransferTarget::Department(d) => Some(d.clone()),
                TransferTarget::Agent(_) => None,
            },
            _ => None,
        };
        let name = self.agent_name(&agent);
        let now = now_ms();
        let (events, handoff, text) = match (&previous, &transfer) {
            (None, _) => (
                vec![
                    LifecycleEvent {
                        kind: LifecycleKind::Accepted,
                        agent: Some(agent.clone()),
                        detail: serde_json::Value::Null,
                        at: now,
                    },
                    LifecycleEvent {
                        kind: LifecycleKind::Assigned,
                        agent: Some(agent.clone()),
                        detail: serde_json::Value::Null,
                        at: now,
                    },
                ],
                None,
                format!("{name} joined the chat"),
            ),
            (Some(prev), Some(t)) if t.from == *prev => (
                vec![
                    LifecycleEvent {
                        kind: LifecycleKind::Accepted,
                        agent: Some(agent.clone()),
                        detail: serde_json::Value::Null,
                        at: now,
                    },
                    LifecycleEvent {
                        kind: LifecycleKind::Transferred,
                        agent: Some(agent.clone()),
                        detail: serde_json::json!({ "from": prev }),
                        at: now,
                    },
                ],
                Some(Handoff {
                    from: prev.clone(),
                    to: format!("agent:{agent}"),
                    note: t.note.clone(),
                    outcome: "accepted".into(),
                    at: now,
                }),
                format!("{name} joined the chat"),
            ),
            (Some(prev), _) => (
                vec![LifecycleEvent {
                    kind: LifecycleKind::Transferred,
                    agent: Some(agent.clone()),
                    detail: serde_json::json!({ "from": prev, "takeover": true }),
                    at: now,
                }],
                Some(Handoff {
                    from: prev.clone(),
                    to: format!("agent:{agent}"),
                    note: None,
                    outcome: "takeover".into(),
                    at: now,
                }),
                format!("{name} took over the chat"),
            ),
        };
        // A supervisor taking over may exceed their capacity; anyone else may not.
        let takeover = previous.is_some() && transfer.is_none();
        let result = self
            .store
            .apply(Change {
                conversation,
                expect: Some(Expect {
                    state,
                    agent: owner.clone(),
                }),
                set: Some(SetState {
                    state: ConversationState::Active,
                    agent: Some(agent.clone()),
                    close_reason: None,
                    department: new_department.clone(),
                }),
                entry: Some(system_entry("joined", text)),
                events,
                handoff,
                fence: self.fence((!takeover).then_some(&agent)),
                ..Default::default()
            })
            .await;
        if let Err(err) = result {
            tracing::warn!(%err, conversation = %conversation, agent = %agent, "assignment not stored; reconciling");
            self.tell(
                &UserKey::Agent(agent.clone()),
                ServerFrame::Error {
                    code: ErrorCode::Overloaded,
                    message: "the assignment could not be stored; the conversation was put back"
                        .into(),
                    frame: Some("accept".into()),
                    conversation: Some(conversation),
                    client_id: None,
                },
            );
            Box::pin(self.reconcile(conversation)).await;
            return;
        }
        if let (Some(prev), Some(t)) = (&previous, &transfer) {
            self.tell(
                &UserKey::Agent(prev.clone()),
                ServerFrame::TransferUpdate {
                    conversation,
                    to: t.to.clone(),
                    outcome: TransferOutcome::Accepted,
                },
            );
        }
        self.broadcast(Event::Assigned {
            conversation,
            agent,
            previous,
            department: new_department,
        })
        .await;
    }

    /// After an assignment is durable: updates the live state, releases the former
    /// owner, tells the player, and attaches the new owner from the first entry.
    pub(super) fn assigned_now(&self, live: &Live, agent: &AgentId, previous: Option<AgentId>) {
        let player = {
            let mut s = live.lock();
            s.state = ConversationState::Active;
            s.agent = Some(agent.clone());
            s.last_position = None;
            s.player.clone()
        };
        self.player_gone.remove(&live.id);
        let who = self.agent_participant(agent);
        if let Some(prev) = previous.filter(|p| p != agent) {
            // Someone who may read every conversation keeps watching it.
            let keeps = self
                .agents
                .get(&prev)
                .is_some_and(|a| a.allows(Permission::ReadAnyConversation));
            self.each_conn(&UserKey::Agent(prev), |c| {
                if !keeps {
                    self.detach(c, live);
                }
                c.send(ServerFrame::Released {
                    conversation: live.id,
                    to: Some(who.clone()),
                });
            });
        }
        self.each_conn(&UserKey::Player(player.id.clone()), |c| {
            c.send(ServerFrame::Assigned {
                conversation: live.id,
                agent: who.clone(),
                player: None,
            });
        });
        self.each_conn(&UserKey::Agent(agent.clone()), |c| {
            c.send(ServerFrame::Assigned {
                conversation: live.id,
                agent: who.clone(),
                player: Some(player.clone()),
            });
            self.attach(c, live, 0);
        });
        self.queue_dirty.store(true, Ordering::Relaxed);
    }

    pub(super) async fn transfer_failed(
        &self,
        conversation: ConversationId,
        owner: AgentId,
        reason: TransferFailure,
    ) {
        let transfer = self.transfers.remove(&conversation).map(|(_, t)| t);
        let outcome = match reason {
            TransferFailure::Declined => TransferOutcome::Declined,
            TransferFailure::Expired | TransferFailure::Cancelled => TransferOutcome::Expired,
        };
        let word = match reason {
            TransferFailure::Declined => "declined",
            TransferFailure::Expired => "expired",
            TransferFailure::Cancelled => "cancelled",
        };
        let to = transfer.as_ref().map(|t| t.to.clone());
        let target = to.as_ref().map(handoff_target).unwrap_or_default();
        let owner_name = self.agent_name(&owner);
        let record = Change {
            conversation,
            events: vec![LifecycleEvent {
                kind: LifecycleKind::TransferFailed,
                agent: Some(owner.clone()),
                detail: serde_json::json!({ "to": target, "reason": word }),
                at: now_ms(),
            }],
            handoff: Some(Handoff {
                from: owner.clone(),
                to: target,
                note: transfer.as_ref().and_then(|t| t.note.clone()),
                outcome: word.into(),
                at: now_ms(),
            }),
            ..Default::default()
        };
        // "Stays with you" only while it does: a chat its owner closed (or lost)
        // meanwhile keeps the record of the failed transfer, without the event.
        let told = Change {
            expect: Some(Expect {
                state: ConversationState::Active,
                agent: Some(owner.clone()),
            }),
            entry: Some(system_entry(
                "transfer_cancelled",
                format!("The transfer did not happen; {owner_name} stays with you."),
            )),
            ..record.clone()
        };
        let stored = match self.store.apply(told).await {
            Err(StoreError::Precondition) => self.store.apply(record).await,
            other => other,
        };
        if let Err(err) = stored {
            tracing::warn!(%err, conversation = %conversation, "failed transfer not recorded");
        }
        if let Some(to) = to {
            self.tell(
                &UserKey::Agent(owner),
                ServerFrame::TransferUpdate {
                    conversation,
                    to,
                    outcome,
                },
            );
        }
    }

    /// Records that a pending transfer ended because its conversation left its
    /// owner (closed, or put back in the queue): the hand-off is `cancelled` and a
    /// `transfer_failed` event says so. Nobody is told: the owner no longer has
    /// the conversation, and the receiver's offer was withdrawn.
    pub(super) async fn transfer_cancelled(
        &self,
        conversation: ConversationId,
        pending: PendingTransfer,
    ) {
        let target = handoff_target(&pending.to);
        let stored = self
            .store
            .apply(Change {
                conversation,
                events: vec![LifecycleEvent {
                    kind: LifecycleKind::TransferFailed,
                    agent: Some(pending.from.clone()),
                    detail: serde_json::json!({ "to": target, "reason": "cancelled" }),
                    at: now_ms(),
                }],
                handoff: Some(Handoff {
                    from: pending.from,
                    to: target,
                    note: pending.note,
                    outcome: "cancelled".into(),
                    at: now_ms(),
                }),
                ..Default::default()
            })
            .await;
        if let Err(err) = stored {
            tracing::warn!(%err, conversation = %conversation, "cancelled transfer not recorded");
        }
    }

    /// Makes the router agree with the store about one conversation after a write
    /// that the router had already decided failed.
    pub(super) async fn reconcile(self: &Arc<Self>, conversation: ConversationId) {
        let now = self.now();
        let decisions = self.router().release(conversation, now);
        // Not for longer than a moment: a store that just refused a write may keep
        // a read waiting for a connection for seconds, and the command that led
        // here (an agent's accept, routed for another node) is answered only after.
        let record = tokio::time::timeout(RECONCILE_READ, self.store.conversation(conversation))
            .await
            .ok()
            .and_then(Result::ok)
            .flatten();
        let Some(live) = self.live.get(&conversation).map(|l| l.clone()) else {
            self.carry_out(decisions).await;
            return;
        };
        let request = live.lock().request.clone();
        let mut more = Vec::new();
        match record
            .as_ref()
            .map(|r| (r.summary.state, r.summary.agent.clone()))
        {
            Some((ConversationState::Active, Some(agent))) => {
                let _ = self
                    .router()
                    .restore_owned(conversation, &agent, request, now);
                let mut s = live.lock();
                s.state = ConversationState::Active;
                s.agent = Some(agent);
            }
            Some((ConversationState::Closed, _)) => {
                self.remove_live(conversation);
            }
            Some((ConversationState::Offline, _)) => {}
            // Queued, or the store cannot tell now: wait at the head of the queue.
            _ => {
                more = self
                    .router()
                    .requeue_at_head(conversation, request, now)
                    .unwrap_or_default();
                {
                    let mut s = live.lock();
                    s.state = ConversationState::Queued;
                    s.agent = None;
                }
                self.watch_player_presence(&live);
            }
        }
        self.carry_out(decisions).await;
        self.carry_out(more).await;
    }
}
