//! Conversation flow: start, messages and notes, typing and receipts, resume, close, rating, transfer, take; who may do what; and the audit record of a supervisor reading someone else's conversation.

use super::*;
use crate::audit::{self, AuditAction};
use crate::connection::MAX_AUDITED_PER_CONN;

impl Desk {
    // ------------------------------------------------------- conversation flow

    pub(super) async fn start_conversation(
        self: &Arc<Self>,
        conn: &ConnRef,
        card: &PlayerCard,
        department: Option<String>,
        language: Option<String>,
    ) -> Outcome {
        let department = tag(department, &self.config.default_department, "department")?;
        let default_language = card
            .language
            .clone()
            .unwrap_or_else(|| self.config.default_language.clone());
        let language = tag(language, &default_language, "language")?;

        if self.config.cluster {
            self.load_open_of_player(&card.id).await;
        }

        // An open conversation in this department is returned, not duplicated: a
        // player who resends `start` after a reconnect (every tab of theirs may)
        // keeps their place.
        if self.rejoin_open(conn, &card.id, &department).await {
            return Ok(());
        }
        // Opening one: one at a time per player on this node. Two tabs starting
        // at once would both pass the checks below and open two conversations (or
        // more than `max_open_per_player`); the other is told to retry, and then
        // finds the conversation the first one opened.
        let Some(_starting) = StartGuard::take(&self.starting, &card.id) else {
            return refuse(
                ErrorCode::Overloaded,
                "another start of yours is in progress; retry shortly",
            );
        };
        // A start that finished between the look above and the guard.
        if self.rejoin_open(conn, &card.id, &department).await {
            return Ok(());
        }
        let open = self.player_live.get(&card.id).map_or(0, |l| l.len());
        // New work only on a node that can carry it: a store that does not answer
        // or a lost link to Redis would leave the player waiting for nothing.
        if let Err(why) = self.readiness() {
            return refuse(
                ErrorCode::Overloaded,
                format!("this node takes no new conversations now ({why}); retry shortly"),
            );
        }
        if open >= self.config.max_open_per_player {
            return self.too_many_open();
        }

        let id = ConversationId::new();
        // The gateway's span for this frame has no conversation until now.
        tracing::Span::current().record("conversation", tracing::field::display(id));
        let request = Request {
            department: department.clone(),
            language: language.clone(),
            tier: if card.verified { card.vip_tier } else { 0 },
        };
        let serve = match self
            .route(Command::CanServe {
                department: department.clone(),
                language: language.clone(),
            })
            .await?
        {
            Reply::Bool(serve) => serve,
            _ => false,
        };
        let state = if serve {
            ConversationState::Queued
        } else {
            ConversationState::Offline
        };
        let created_at = now_ms();
        let limit = u32::try_from(self.config.max_open_per_player).unwrap_or(u32::MAX);
        let created = self
            .store
            .create_conversation(NewConversation {
                id,
                player: card.clone(),
                department: department.clone(),
                language: language.clone(),
                state,
                created_at,
                open_limit: Some(limit),
            })
            .await;
        if let Err(StoreError::PlayerBusy) = created {
            // Another node opened one for this player since the look above (two
            // tabs on two nodes): join it if it is this department's.
            self.load_open_of_player(&card.id).await;
            if self.rejoin_open(conn, &card.id, &department).await {
                return Ok(());
            }
            return self.too_many_open();
        }
        created?;
        let record = ConversationRecord {
            summary: ConversationSummary {
                id,
                state,
                department,
                language,
                player: card.id.clone(),
                agent: None,
                last_seq: 0,
                last_public_seq: 0,
                created_at,
                closed_at: None,
                rating: None,
            },
            player: card.clone(),
            first_seq: 1,
            close_reason: None,
            rating_comment: None,
            read: Default::default(),
        };
        tracing::debug!(department = %record.summary.department, language = %record.summary.language, ?state, "conversation started");
        self.insert_live(&record, request.clone());
        let live = self
            .live
            .get(&id)
            .map(|l| l.clone())
            .expect("just inserted");
        self.attach(conn, &live, 0);
        if !serve {
            conn.send(ServerFrame::NoAgents { conversation: id });
            return Ok(());
        }
        drop(request);
        self.route(Command::Enqueue { conversation: id }).await?;
        Ok(())
    }

    /// The refusal of a start past `max_open_per_player`.
    fn too_many_open(&self) -> Outcome {
        refuse(
            ErrorCode::TooManyConversations,
            format!(
                "at most {} open conversations per player",
                self.config.max_open_per_player
            ),
        )
    }

    /// Takes into this node's live set the player's open conversations that the
    /// store knows and this node does not: those opened on another node.
    async fn load_open_of_player(&self, player: &PlayerId) {
        for record in self.latest_of_player(player).await.unwrap_or_default() {
            if record.summary.state != ConversationState::Closed {
                self.insert_live(&record, cluster::request_of(&record));
            }
        }
    }

    /// Attaches the player's connection to their open conversation in this
    /// department, if they have one here, and tells where it stands.
    async fn rejoin_open(
        self: &Arc<Self>,
        conn: &ConnRef,
        player: &PlayerId,
        department: &str,
    ) -> bool {
        let open: Vec<ConversationId> = self
            .player_live
            .get(player)
            .map(|l| l.clone())
            .unwrap_or_default();
        for id in open {
            let Some(live) = self.live.get(&id).map(|l| l.clone()) else {
                continue;
            };
            let (same, state, agent) = {
                let s = live.lock();
                (s.request.department == department, s.state, s.agent.clone())
            };
            if same {
                tracing::Span::current().record("conversation", tracing::field::display(id));
                self.attach(conn, &live, 0);
                self.tell_state(conn, id, state, agent).await;
                return true;
            }
        }
        false
    }

    /// Tells a (re)connected player where an existing conversation stands.
    pub(super) async fn tell_state(
        self: &Arc<Self>,
        conn: &ConnRef,
        id: ConversationId,
        state: ConversationState,
        agent: Option<AgentId>,
    ) {
        match (state, agent) {
            (ConversationState::Offline, _) => {
                conn.send(ServerFrame::NoAgents { conversation: id });
            }
            (_, Some(agent)) => {
                conn.send(ServerFrame::Assigned {
                    conversation: id,
                    agent: self.agent_participant(&agent),
                    player: None,
                });
            }
            _ => {
                let _ = self.route(Command::TellPosition { conversation: id }).await;
            }
        }
    }

    /// Validates and stores a message or note. The ack is sent by the commit path
    /// (in commit order with the other entries) unless the message is a resend.
    pub(super) async fn append(
        &self,
        conn: &ConnRef,
        session: &Session,
        conversation: ConversationId,
        client_id: String,
        text: String,
        kind: MessageKind,
    ) -> Outcome {
        if client_id.is_empty() || client_id.len() > MAX_CLIENT_ID_BYTES {
            return refuse(
                ErrorCode::InvalidField,
                format!("client_id must be 1 to {MAX_CLIENT_ID_BYTES} bytes"),
            );
        }
        if blank(&text) {
            return refuse(ErrorCode::InvalidField, "text is empty or shows nothing");
        }
        if text.chars().count() > MAX_TEXT_CHARS {
            return refuse(
                ErrorCode::TextTooLong,
                format!("text is longer than {MAX_TEXT_CHARS} characters"),
            );
        }
        // A closed conversation takes no new entries, but a resend of one it
        // already has must still get its original ack.
        let live = match self.participant_live(session, conversation).await {
            Ok(live) => Some(live),
            Err(Refusal(ErrorCode::InvalidState, _)) => None,
            Err(refusal) => return Err(refusal),
        };
        if let Some(live) = &live {
            let s = live.lock();
            let is_player = matches!(session, Session::Player { .. });
            match s.state {
                ConversationState::Closed => {
                    return refuse(ErrorCode::InvalidState, "the conversation is closed")
                }
                ConversationState::Offline if !is_player => {
                    return refuse(
                        ErrorCode::InvalidState,
                        "take the offline message before answering it",
                    )
                }
                _ => {}
            }
        }
        // For a closed conversation: a precondition no closed conversation meets,
        // so only a resend (recognised before preconditions) succeeds.
        let expect = live.is_none().then_some(Expect {
            state: ConversationState::Active,
            agent: None,
        });
        // Card numbers never reach the store or another screen.
        let masked = self.config.masker.mask(&text);
        let text = masked.clone().unwrap_or(text);
        let mut change = Change::append(
            conversation,
            NewEntry {
                kind,
                sender: session.participant(),
                text,
                client_id: Some(client_id.clone()),
                event: None,
                origin: conn.id(),
            },
        );
        change.expect = expect;
        // Checked again where it is written: a close or a take-over may commit
        // between the check above and this append.
        change.open = Some(Open {
            owner: match session {
                Session::Agent { id, role, .. }
                    if !allows(*role, Permission::JoinAnyConversation) =>
                {
                    Some(id.clone())
                }
                _ => None,
            },
        });
        let started = Instant::now();
        conn.begin_send(conversation, &client_id);
        let applied = self.store.apply(change).await.map_err(|e| {
            // No ack will come from the commit path.
            conn.end_send(conversation, &client_id);
            match e {
                StoreError::Precondition => Refusal(
                    ErrorCode::InvalidState,
                    "the conversation is closed, or has another owner now".into(),
                ),
                e => e.into(),
            }
        })?;
        metrics::histogram!(telemetry::ACK_LATENCY).record(started.elapsed().as_secs_f64());
        if let Some(appended) = applied.appended {
            let e = appended.entry;
            let client_id = e.client_id.clone().unwrap_or_default();
            if appended.duplicate {
                conn.end_send(conversation, &client_id);
                let prev = e.to_message(conn.is_player()).prev;
                conn.send(ServerFrame::Ack {
                    conversation,
                    client_id: client_id.clone(),
                    seq: e.seq,
                    prev,
                    duplicate: true,
                });
            }
            if masked.is_some() {
                // After the ack (queued by the commit path before `apply` returns).
                conn.send(ServerFrame::Masked {
                    conversation,
                    client_id,
                    seq: e.seq,
                    text: e.text,
                });
            }
        }
        Ok(())
    }

    /// Typing and read receipts go to the other connections attached to the
    /// conversation; they are droppable and not stored.
    pub(super) fn signal(&self, conn: &ConnRef, conversation: ConversationId, frame: ServerFrame) {
        let Some(live) = self.live.get(&conversation).map(|l| l.clone()) else {
            return;
        };
        let subscribers = live.lock().subscribers.clone();
        for c in subscribers.iter().filter(|c| c.id() != conn.id()) {
            c.send(frame.clone());
        }
        if self.config.cluster {
            self.publish(&Event::Signal {
                conversation,
                frame,
            });
        }
    }

    pub(super) async fn resume(
        &self,
        conn: &ConnRef,
        session: &Session,
        conversation: ConversationId,
        after: u64,
    ) -> Outcome {
        let live = self.live_or_load(conversation).await?;
        if let Some(live) = &live {
            if !self.may_view_live(session, live) {
                return refuse(ErrorCode::Forbidden, "not your conversation");
            }
        }
        let record = self
            .store
            .conversation(conversation)
            .await?
            .ok_or_else(|| Refusal(ErrorCode::NotFound, "no such conversation".into()))?;
        if live.is_none() && !may_view_record(session, &record) {
            return refuse(ErrorCode::Forbidden, "not your conversation");
        }
        // A range the client cannot have is answered before subscribing, so a
        // refused resume leaves no subscription behind.
        let for_player = conn.is_player();
        let last = if for_player {
            record.summary.last_public_seq
        } else {
            record.summary.last_seq
        };
        let ahead = after > last;
        if ahead || after + 1 < record.first_seq {
            conn.send(ServerFrame::CannotResume {
                conversation,
                reason: if ahead {
                    CannotResumeReason::Ahead
                } else {
                    CannotResumeReason::Purged
                },
                first_seq: record.first_seq,
                last_seq: last,
            });
            return Ok(());
        }
        // A supervisor reading someone else's conversation is recorded before the
        // replay is queued; no record, no replay.
        if let Some(reader) = supervisory_reader(session, live.as_deref(), &record) {
            self.audit_resume(conn, reader, conversation, after).await?;
        }
        match live {
            Some(live) => self.attach(conn, &live, after),
            None => {
                conn.push(Outbound::Attach {
                    conversation,
                    after,
                });
            }
        }
        Ok(())
    }

    /// Records a supervisory `resume` in the audit log, once per connection and
    /// conversation: a console re-resumes to fill gaps and after every reconnect,
    /// and each replay of one attachment is the same read (a new connection is a
    /// new attachment, so it is recorded again).
    async fn audit_resume(
        &self,
        conn: &ConnRef,
        reader: &AgentId,
        conversation: ConversationId,
        after: u64,
    ) -> Outcome {
        let seen = conn
            .0
            .audited
            .lock()
            .expect("audited lock")
            .contains(&conversation);
        if seen {
            return Ok(());
        }
        self.audit_read(
            reader,
            conversation,
            serde_json::json!({ "via": "resume", "after": after }),
        )
        .await?;
        let mut audited = conn.0.audited.lock().expect("audited lock");
        if audited.len() < MAX_AUDITED_PER_CONN && !audited.contains(&conversation) {
            audited.push(conversation);
        }
        Ok(())
    }

    /// Appends a `transcript.read` record for a read over the WebSocket. The
    /// caller sends the transcript only once this returned `Ok`; a record that
    /// cannot be written refuses the frame with `overloaded` (nothing was sent,
    /// retry), the WebSocket's code for "cannot store now"
    /// (`docs/decisions/0009-audit-log.md`).
    async fn audit_read(
        &self,
        reader: &AgentId,
        conversation: ConversationId,
        detail: serde_json::Value,
    ) -> Outcome {
        let target = conversation.to_string();
        audit::append(
            &*self.store,
            &reader.0,
            AuditAction::TranscriptRead,
            &target,
            detail,
        )
        .await
        .map_err(|e| {
            tracing::warn!(error = %e, "audit record not written: transcript not sent");
            Refusal(
                ErrorCode::Overloaded,
                "the audit log cannot be written, so the transcript was not sent; retry".into(),
            )
        })
    }

    /// Subscribes a connection to a live conversation, then queues the replay: the
    /// order that guarantees nothing committed meanwhile is missed.
    pub(super) fn attach(&self, conn: &ConnRef, live: &Live, after: u64) {
        live.subscribe(conn);
        {
            let mut attached = conn.0.attached.lock().expect("attached lock");
            if !attached.contains(&live.id) {
                attached.push(live.id);
            }
        }
        conn.push(Outbound::Attach {
            conversation: live.id,
            after,
        });
    }

    pub(super) fn detach(&self, conn: &ConnRef, live: &Live) {
        live.unsubscribe(conn.id());
        conn.0
            .attached
            .lock()
            .expect("attached lock")
            .retain(|c| *c != live.id);
        conn.push(Outbound::Detach(live.id));
    }

    pub(super) async fn close(
        self: &Arc<Self>,
        session: &Session,
        conversation: ConversationId,
        reason: Option<String>,
    ) -> Outcome {
        // Masked like a message: free text a player or agent typed.
        let reason = match reason {
            Some(r) if !blank(&r) => Some(self.config.masker.masked(short(r, "reason")?)),
            _ => None,
        };
        let live = self.participant_live(session, conversation).await?;
        let (state, agent, player) = {
            let s = live.lock();
            (s.state, s.agent.clone(), s.player.id.clone())
        };
        if state == ConversationState::Closed {
            return refuse(ErrorCode::InvalidState, "already closed");
        }
        let who = session.participant();
        let by = who.role;
        let mut events = vec![LifecycleEvent {
            kind: LifecycleKind::Closed,
            agent: agent.clone(),
            detail: serde_json::json!({ "reason": reason, "by": who.id }),
            at: now_ms(),
        }];
        if by == Role::Player && state == ConversationState::Queued {
            events.push(LifecycleEvent {
                kind: LifecycleKind::Abandoned,
                agent: None,
                detail: serde_json::json!({ "by": "player" }),
                at: now_ms(),
            });
        }
        // A player's display name is theirs to choose: it never goes into a line
        // the server writes in its own name (it could read "Pitboss: identity
        // verified…"). Staff names are set by an admin.
        let name = match by {
            Role::Player => None,
            _ => who.name.clone(),
        }
        .unwrap_or_else(|| role_name(by).to_owned());
        self.store
            .apply(Change {
                conversation,
                expect: Some(Expect {
                    state,
                    agent: agent.clone(),
                }),
                set: Some(SetState {
                    state: ConversationState::Closed,
                    agent: agent.clone(),
                    close_reason: reason.clone(),
                    department: None,
                }),
                entry: Some(system_entry("closed", format!("{name} closed the chat"))),
                events,
                ..Default::default()
            })
            .await?;
        self.finish_close(conversation, reason.clone(), by, agent.clone(), player)
            .await;
        if let Session::Agent { id, .. } = session {
            if agent.as_ref() != Some(id) {
                // A supervisor closing someone else's conversation is told too.
                self.each_conn(&UserKey::Agent(id.clone()), |c| {
                    c.send(ServerFrame::Closed {
                        conversation,
                        reason: reason.clone(),
                        by,
                    });
                });
            }
        }
        Ok(())
    }

    /// After a close is durable: every node tells its connections and forgets the
    /// conversation; the leader frees the router's slot.
    pub(super) async fn finish_close(
        self: &Arc<Self>,
        conversation: ConversationId,
        reason: Option<String>,
        by: Role,
        agent: Option<AgentId>,
        player: PlayerId,
    ) {
        self.broadcast(Event::Closed {
            conversation,
            reason,
            by,
            agent,
            player,
        })
        .await;
    }

    pub(super) async fn rate(
        &self,
        conn: &ConnRef,
        session: &Session,
        conversation: ConversationId,
        score: u8,
        comment: Option<String>,
    ) -> Outcome {
        let Session::Player { card, .. } = session else {
            return refuse(ErrorCode::Forbidden, "only players rate conversations");
        };
        if !(1..=5).contains(&score) {
            return refuse(ErrorCode::InvalidField, "score must be 1 to 5");
        }
        let comment = match comment {
            Some(c) if !blank(&c) => Some(self.config.masker.masked(short(c, "comment")?)),
            _ => None,
        };
        let record = self
            .store
            .conversation(conversation)
            .await?
            .ok_or_else(|| Refusal(ErrorCode::NotFound, "no such conversation".into()))?;
        if record.summary.player != card.id {
            return refuse(ErrorCode::Forbidden, "not your conversation");
        }
        if record.summary.rating.is_some() {
            return refuse(ErrorCode::InvalidState, "already rated");
        }
        let answered = match record.summary.state {
            ConversationState::Active => true,
            // Closed with an owner, or owned once before it went back to the
            // queue: a chat nobody answered has no service to rate.
            ConversationState::Closed => {
                record.summary.agent.is_some()
                    || self
                        .store
                        .events(conversation)
                        .await?
                        .iter()
                        .any(|e| e.kind == LifecycleKind::Assigned)
            }
            ConversationState::Queued | ConversationState::Offline => false,
        };
        if !answered {
            return refuse(
                ErrorCode::InvalidState,
                "a conversation is rated once an agent has answered it",
            );
        }
        self.store
            .apply(Change {
                conversation,
                rating: Some((score, comment.clone())),
                events: vec![LifecycleEvent {
                    kind: LifecycleKind::Rated,
                    agent: record.summary.agent.clone(),
                    detail: serde_json::json!({ "score": score, "comment": comment }),
                    at: now_ms(),
                }],
                entry: Some(system_entry(
                    "rated",
                    format!("The player rated the chat {score}/5"),
                )),
                ..Default::default()
            })
            .await
            .map_err(|e| match e {
                StoreError::Precondition => {
                    Refusal(ErrorCode::InvalidState, "already rated".into())
                }
                e => e.into(),
            })?;
        conn.send(ServerFrame::Rated {
            conversation,
            score,
        });
        Ok(())
    }

    pub(super) async fn transfer(
        self: &Arc<Self>,
        conn: &ConnRef,
        session: &Session,
        conversation: ConversationId,
        to: TransferTarget,
        note: Option<String>,
    ) -> Outcome {
        let Session::Agent { id, .. } = session else {
            return refuse(ErrorCode::Forbidden, "only agents transfer conversations");
        };
        let note = match note {
            Some(n) if !blank(&n) => Some(self.config.masker.masked(short(n, "note")?)),
            _ => None,
        };
        let to = match to {
            TransferTarget::Department(d) => {
                TransferTarget::Department(tag(Some(d), "", "department")?)
            }
            t => t,
        };
        let live = self.participant_live(session, conversation).await?;
        if live.lock().agent.as_ref() != Some(id) {
            return refuse(
                ErrorCode::Forbidden,
                "only the owner transfers a conversation",
            );
        }
        match &to {
            TransferTarget::Agent(a) if self.store.agent(a).await?.is_none() => {
                return refuse(ErrorCode::NotFound, "no such agent")
            }
            TransferTarget::Department(d) => {
                let served = self
                    .store
                    .agents()
                    .await?
                    .iter()
                    .any(|a| a.departments.contains(d));
                if !served {
                    return refuse(ErrorCode::NotFound, "no agent serves that department");
                }
            }
            _ => {}
        }
        self.route(Command::Transfer {
            conversation,
            owner: id.clone(),
            to: to.clone(),
            note,
        })
        .await?;
        // The transfer is pending, and its entries are stored: whoever routes it
        // writes them before the receiver's offer goes out (`Command::Transfer`).
        conn.send(ServerFrame::TransferUpdate {
            conversation,
            to,
            outcome: TransferOutcome::Pending,
        });
        Ok(())
    }

    /// The transcript's record of a transfer request: the owner's note (if any) and
    /// the `transfer_requested` event. Written by whoever routes the transfer, after
    /// the router accepted it and before the receiver's offer goes out, so that no
    /// answer to the offer can come before them in the transcript.
    pub(super) async fn record_transfer_request(
        &self,
        conversation: ConversationId,
        owner: &AgentId,
        to: &TransferTarget,
        note: Option<String>,
    ) -> Result<(), StoreError> {
        let target = handoff_target(to);
        if let Some(note) = &note {
            self.store
                .apply(Change {
                    conversation,
                    entry: Some(NewEntry {
                        kind: MessageKind::Note,
                        sender: self.agent_participant(owner),
                        text: format!("Transfer to {target}: {note}"),
                        client_id: None,
                        event: Some("transfer_note".into()),
                        origin: 0,
                    }),
                    ..Default::default()
                })
                .await?;
        }
        let shown = match to {
            TransferTarget::Agent(a) => self.agent_name(a),
            TransferTarget::Department(d) => self.department_name(conversation, d).await,
        };
        self.store
            .apply(Change {
                conversation,
                entry: Some(system_entry(
                    "transfer_requested",
                    format!(
                        "You are being transferred to {shown}. Your conversation stays with you."
                    ),
                )),
                events: vec![LifecycleEvent {
                    kind: LifecycleKind::TransferRequested,
                    agent: Some(owner.clone()),
                    detail: serde_json::json!({ "to": target, "note": note }),
                    at: now_ms(),
                }],
                handoff: Some(Handoff {
                    from: owner.clone(),
                    to: target,
                    note,
                    outcome: "requested".into(),
                    at: now_ms(),
                }),
                ..Default::default()
            })
            .await?;
        Ok(())
    }

    /// A department's display name in the conversation's language, else in
    /// English, else its tag (also when the catalog cannot be read now).
    async fn department_name(&self, conversation: ConversationId, department: &str) -> String {
        let language = self
            .live
            .get(&conversation)
            .map(|l| l.lock().request.language.clone());
        for language in language.iter().map(String::as_str).chain(["en"]) {
            match self
                .store
                .catalog(CatalogKind::Department, Some(language))
                .await
            {
                Ok(items) => {
                    if let Some(item) = items.into_iter().find(|i| i.key == department) {
                        return item.text;
                    }
                }
                Err(err) => {
                    tracing::debug!(%err, "department names not read");
                    break;
                }
            }
        }
        department.to_owned()
    }

    pub(super) async fn take(
        self: &Arc<Self>,
        session: &Session,
        conversation: ConversationId,
    ) -> Outcome {
        let Session::Agent { id, role, .. } = session else {
            return refuse(ErrorCode::Forbidden, "only agents take conversations");
        };
        let live = self.live_or_load(conversation).await?.ok_or_else(|| {
            Refusal(
                ErrorCode::NotFound,
                "no open conversation with that id".into(),
            )
        })?;
        let state = live.lock().state;
        if state == ConversationState::Offline {
            // Answering an offline message: any agent may take it.
            self.store
                .apply(Change {
                    conversation,
                    expect: Some(Expect {
                        state: ConversationState::Offline,
                        agent: None,
                    }),
                    set: Some(SetState {
                        state: ConversationState::Active,
                        agent: Some(id.clone()),
                        close_reason: None,
                        department: None,
                    }),
                    entry: Some(system_entry(
                        "joined",
                        format!("{} answered your message", self.agent_name(id)),
                    )),
                    events: vec![LifecycleEvent {
                        kind: LifecycleKind::Assigned,
                        agent: Some(id.clone()),
                        detail: serde_json::json!({ "from": "offline" }),
                        at: now_ms(),
                    }],
                    ..Default::default()
                })
                .await?;
            self.route(Command::RestoreOwned {
                conversation,
                agent: id.clone(),
            })
            .await?;
            self.broadcast(Event::Assigned {
                conversation,
                agent: id.clone(),
                previous: None,
                department: None,
            })
            .await;
            return Ok(());
        }
        if !allows(*role, Permission::TakeOver) {
            return refuse(
                ErrorCode::Forbidden,
                "only supervisors take over conversations",
            );
        }
        let from = live.lock().agent.clone();
        if from.as_ref() == Some(id) {
            return refuse(ErrorCode::InvalidState, "the conversation is already yours");
        }
        // The supervisor receives the whole transcript with `assigned`: recorded
        // before the take-over is asked for, so a take-over that cannot be recorded
        // does not happen.
        self.audit_read(
            id,
            conversation,
            serde_json::json!({ "via": "take_over", "from": from.as_ref().map(|a| &a.0) }),
        )
        .await?;
        self.route(Command::TakeOver {
            conversation,
            supervisor: id.clone(),
        })
        .await?;
        Ok(())
    }

    // --------------------------------------------------------- authorization

    /// The live conversation, if this session is one of its parties (the player,
    /// the owner, or a supervisor).
    pub(super) async fn participant_live(
        &self,
        session: &Session,
        conversation: ConversationId,
    ) -> Result<Arc<Live>, Refusal> {
        let Some(live) = self.live_or_load(conversation).await? else {
            return match self.store.conversation(conversation).await? {
                Some(r) if may_view_record(session, &r) => {
                    refuse(ErrorCode::InvalidState, "the conversation is closed")
                }
                Some(_) => refuse(ErrorCode::Forbidden, "not your conversation"),
                None => refuse(ErrorCode::NotFound, "no such conversation"),
            };
        };
        let ok = {
            let s = live.lock();
            match session {
                Session::Player { card, .. } => s.player.id == card.id,
                Session::Agent { id, role, .. } => {
                    allows(*role, Permission::JoinAnyConversation)
                        || (allows(*role, Permission::ReadOwnConversations)
                            && s.agent.as_ref() == Some(id))
                }
            }
        };
        if ok {
            Ok(live)
        } else {
            refuse(ErrorCode::Forbidden, "not your conversation")
        }
    }

    /// Whether this session may read a live conversation: its parties, and an
    /// agent it is offered to (to read before accepting).
    pub(super) fn may_view_live(&self, session: &Session, live: &Live) -> bool {
        let (player, owner) = {
            let s = live.lock();
            (s.player.id.clone(), s.agent.clone())
        };
        match session {
            Session::Player { card, .. } => player == card.id,
            Session::Agent { id, role, .. } => {
                if allows(*role, Permission::ReadAnyConversation) {
                    return true;
                }
                if !allows(*role, Permission::ReadOwnConversations) {
                    return false;
                }
                if owner.as_ref() == Some(id) {
                    return true;
                }
                self.holds_open_offer(live.id, id)
            }
        }
    }
}

/// The account to record when this session reads a conversation as a supervisor,
/// not as one of its parties: `None` for its player and its owner (or last owner,
/// once closed). An account without `read_any_conversation` reads only its own
/// work (owned or offered) and is never recorded here. An offer does not exempt a
/// supervisor: their attachment outlives the offer (they keep watching after it
/// is withdrawn), so their read of an offered conversation is recorded.
fn supervisory_reader<'a>(
    session: &'a Session,
    live: Option<&Live>,
    record: &ConversationRecord,
) -> Option<&'a AgentId> {
    let Session::Agent { id, role, .. } = session else {
        return None;
    };
    if !allows(*role, Permission::ReadAnyConversation) {
        return None;
    }
    let owner = match live {
        Some(live) => live.lock().agent.clone(),
        None => record.summary.agent.clone(),
    };
    (owner.as_ref() != Some(id)).then_some(id)
}

/// A player's `start` in progress on this node; removed from the set when the
/// start ends, however it ends.
struct StartGuard<'a> {
    starting: &'a DashMap<PlayerId, ()>,
    player: PlayerId,
}

impl<'a> StartGuard<'a> {
    /// `None`: this player already has a start in progress.
    fn take(starting: &'a DashMap<PlayerId, ()>, player: &PlayerId) -> Option<Self> {
        match starting.entry(player.clone()) {
            dashmap::Entry::Occupied(_) => None,
            dashmap::Entry::Vacant(v) => {
                v.insert(());
                Some(Self {
                    starting,
                    player: player.clone(),
                })
            }
        }
    }
}

impl Drop for StartGuard<'_> {
    fn drop(&mut self) {
        self.starting.remove(&self.player);
    }
}
