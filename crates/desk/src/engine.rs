//! The desk itself: one `match` over client frames, the commit path that fans
//! durable entries out to attached connections, the carrying-out of routing
//! decisions, and the timers (offer expiry, grace periods, abandoned players,
//! queue updates).

use crate::auth::{clip, AuthError, Keys};
use crate::connection::{CloseSignal, ConnRef, ConnShared, Outbound};
use crate::live::{Live, LiveState};
use crate::{DeskConfig, Session, UserKey};
use dashmap::DashMap;
use pitboss_cluster::{Bus, Lease};
use pitboss_protocol::limits::{MAX_CLIENT_ID_BYTES, MAX_SHORT_TEXT_CHARS, MAX_TEXT_CHARS};
use pitboss_protocol::{
    AgentId, AgentStatus, Auth, ClientFrame, CloseCode, ConversationId, ConversationState,
    ConversationSummary, ErrorCode, MessageKind, Offer, Participant, PlayerCard, PlayerId,
    QueueEntry, Role, ServerFrame, TransferInfo, TransferOutcome, TransferTarget, WithdrawReason,
    PROTOCOL_VERSION,
};
use pitboss_routing::{
    AgentProfile, ConversationView, Decision, Position, Request, Router, RoutingError,
    TransferFailure,
};
use pitboss_transcripts::{
    now_ms, AgentAccount, Change, CommitObserver, ConversationFilter, ConversationRecord, Expect,
    Handoff, LifecycleEvent, LifecycleKind, NewConversation, NewEntry, SetState, SharedStore,
    StoreError, StoredEntry,
};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};
use tokio::sync::mpsc;

/// A refused frame: its code and a message for the client.
#[derive(Debug)]
struct Refusal(ErrorCode, String);

type Outcome = Result<(), Refusal>;

fn refuse<T>(code: ErrorCode, message: impl Into<String>) -> Result<T, Refusal> {
    Err(Refusal(code, message.into()))
}

impl From<StoreError> for Refusal {
    fn from(err: StoreError) -> Self {
        match err {
            StoreError::Conflict => Refusal(
                ErrorCode::Conflict,
                "this client_id was already used with different text".into(),
            ),
            StoreError::NotFound => Refusal(ErrorCode::NotFound, "no such conversation".into()),
            StoreError::Precondition => Refusal(
                ErrorCode::InvalidState,
                "the conversation changed meanwhile".into(),
            ),
            StoreError::Overloaded => Refusal(
                ErrorCode::Overloaded,
                "the server is busy: nothing was stored, retry".into(),
            ),
            StoreError::Unavailable(e) => Refusal(
                ErrorCode::Overloaded,
                format!("storage unavailable: nothing was stored, retry ({e})"),
            ),
        }
    }
}

/// Counters for health and metrics.
#[derive(Debug, Default)]
pub struct DeskStats {
    /// Connections open now.
    pub connections: AtomicU64,
    /// Entries committed and fanned out.
    pub entries: AtomicU64,
    /// Frames refused with an error.
    pub refused: AtomicU64,
}

/// A transfer waiting for its receiver: who asked, and their note.
#[derive(Clone)]
struct PendingTransfer {
    from: AgentId,
    to: TransferTarget,
    note: Option<String>,
}

/// Display name and role of an account, kept in memory for frames.
#[derive(Clone)]
struct AgentCard {
    name: String,
    supervisor: bool,
}

/// The conversation engine of one node.
pub struct Desk {
    config: DeskConfig,
    store: SharedStore,
    bus: Arc<dyn Bus>,
    lease: Arc<dyn Lease>,
    keys: Keys,
    /// The routing policy's state. A std mutex: every call into the router is
    /// synchronous and short; decisions are carried out after it is released.
    router: Mutex<Router>,
    /// Origin of the monotonic clock handed to the router.
    started: Instant,
    live: DashMap<ConversationId, Arc<Live>>,
    /// Live conversations per player, so connecting and disconnecting a player
    /// does not scan every conversation.
    player_live: DashMap<PlayerId, Vec<ConversationId>>,
    conns: DashMap<u64, ConnRef>,
    users: DashMap<UserKey, Vec<ConnRef>>,
    agents: DashMap<AgentId, AgentCard>,
    /// Agents with no connection left, since when (monotonic ms).
    agent_gone: DashMap<AgentId, u64>,
    /// Queued conversations whose player has no connection, since when.
    player_gone: DashMap<ConversationId, u64>,
    transfers: DashMap<ConversationId, PendingTransfer>,
    next_conn: AtomicU64,
    queue_dirty: AtomicBool,
    draining: AtomicBool,
    stats: DeskStats,
}

/// Adapts the desk to the store's commit observer without a reference cycle.
struct Committed(Weak<Desk>);

impl CommitObserver for Committed {
    fn committed(&self, entries: &[(StoredEntry, u64)]) {
        if let Some(desk) = self.0.upgrade() {
            desk.fan_out(entries);
        }
    }
}

impl Desk {
    /// Starts the desk on a store: loads keys, accounts and open conversations,
    /// installs the commit observer and starts the timers.
    pub async fn start(
        config: DeskConfig,
        store: SharedStore,
        bus: Arc<dyn Bus>,
        lease: Arc<dyn Lease>,
    ) -> Result<Arc<Self>, StoreError> {
        let visitor_key = store.secret("visitor-token-key", random_key()).await?;
        let agent_key = store.secret("agent-token-key", random_key()).await?;
        let desk = Arc::new(Self {
            router: Mutex::new(Router::new(config.routing.clone())),
            config,
            store: store.clone(),
            bus,
            lease,
            keys: Keys::new(visitor_key, agent_key),
            started: Instant::now(),
            live: DashMap::new(),
            player_live: DashMap::new(),
            conns: DashMap::new(),
            users: DashMap::new(),
            agents: DashMap::new(),
            agent_gone: DashMap::new(),
            player_gone: DashMap::new(),
            transfers: DashMap::new(),
            next_conn: AtomicU64::new(1),
            queue_dirty: AtomicBool::new(false),
            draining: AtomicBool::new(false),
            stats: DeskStats::default(),
        });
        store.set_observer(Arc::new(Committed(Arc::downgrade(&desk))));
        desk.recover().await?;
        let weak = Arc::downgrade(&desk);
        let tick = Duration::from_millis(desk.config.tick_ms.max(10));
        tokio::spawn(async move {
            let mut interval = tokio::time::interval(tick);
            interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                interval.tick().await;
                let Some(desk) = weak.upgrade() else { break };
                if desk.draining.load(Ordering::Relaxed) {
                    break;
                }
                desk.on_tick().await;
            }
        });
        tracing::info!(node = %desk.config.node, "desk started");
        Ok(desk)
    }

    /// Rebuilds the router and the live index from the store (after a restart).
    async fn recover(&self) -> Result<(), StoreError> {
        let now = self.now();
        for account in self.store.agents().await? {
            self.learn_agent(&account, now);
        }
        {
            let handle_times = self.store.recent_handle_times(500).await?;
            let mut router = self.router();
            for (department, ms) in handle_times.into_iter().rev() {
                router.record_handle_time(&department, ms);
            }
        }
        let open = self.store.open_conversations().await?;
        let count = open.len();
        for record in open {
            let request = Request {
                department: record.summary.department.clone(),
                language: record.summary.language.clone(),
                tier: record.player.vip_tier,
            };
            let id = record.summary.id;
            match (record.summary.state, record.summary.agent.clone()) {
                (ConversationState::Queued, _) => {
                    let _ = self.router().enqueue(id, request.clone(), now);
                    self.player_gone.insert(id, now);
                }
                (ConversationState::Active, Some(agent)) => {
                    if self
                        .router()
                        .restore_owned(id, &agent, request.clone(), now)
                        .is_err()
                    {
                        // The account is gone: back to the head of the queue.
                        let _ = self.router().requeue_at_head(id, request.clone(), now);
                    } else {
                        self.agent_gone.entry(agent).or_insert(now);
                    }
                }
                _ => {}
            }
            self.insert_live(&record, request);
        }
        if count > 0 {
            tracing::info!(conversations = count, "recovered open conversations");
        }
        Ok(())
    }

    fn learn_agent(&self, account: &AgentAccount, now: u64) {
        self.agents.insert(
            account.id.clone(),
            AgentCard {
                name: account.name.clone(),
                supervisor: account.role == Role::Supervisor,
            },
        );
        let profile = AgentProfile {
            languages: account.languages.clone(),
            departments: account.departments.clone(),
            capacity: account.capacity,
        };
        let decisions = self.router().upsert_agent(account.id.clone(), profile, now);
        debug_assert!(decisions
            .iter()
            .all(|d| matches!(d, Decision::QueueChanged)));
    }

    fn insert_live(&self, record: &ConversationRecord, request: Request) {
        let id = record.summary.id;
        let live = Live::new(
            id,
            LiveState {
                player: record.player.clone(),
                request,
                state: record.summary.state,
                agent: record.summary.agent.clone(),
                subscribers: Arc::new(Vec::new()),
                last_position: None,
            },
        );
        self.live.insert(id, live);
        self.player_live
            .entry(record.player.id.clone())
            .or_default()
            .push(id);
    }

    fn remove_live(&self, id: ConversationId) {
        if let Some((_, live)) = self.live.remove(&id) {
            let player = live.lock().player.id.clone();
            if let Some(mut list) = self.player_live.get_mut(&player) {
                list.retain(|c| *c != id);
            }
            self.player_live
                .remove_if(&player, |_, list| list.is_empty());
        }
        self.player_gone.remove(&id);
        self.transfers.remove(&id);
    }

    fn router(&self) -> std::sync::MutexGuard<'_, Router> {
        self.router.lock().expect("router lock poisoned")
    }

    /// Monotonic milliseconds since the desk started: the router's clock.
    fn now(&self) -> u64 {
        self.started.elapsed().as_millis() as u64
    }

    /// The store this desk writes to.
    pub fn store(&self) -> &SharedStore {
        &self.store
    }

    /// The server's signing keys.
    pub fn keys(&self) -> &Keys {
        &self.keys
    }

    /// The configuration in force.
    pub fn config(&self) -> &DeskConfig {
        &self.config
    }

    /// Counters.
    pub fn stats(&self) -> &DeskStats {
        &self.stats
    }

    /// This node's name on the bus.
    pub fn node(&self) -> &str {
        self.bus.node()
    }

    /// Whether the desk is draining for shutdown.
    pub fn is_draining(&self) -> bool {
        self.draining.load(Ordering::Relaxed)
    }

    // ---------------------------------------------------------------- sessions

    /// Checks the credentials of a `hello`. The error carries the code for the
    /// error frame and the close code that follows it.
    pub async fn authenticate(
        &self,
        auth: Auth,
    ) -> Result<Session, (ErrorCode, CloseCode, String)> {
        let invalid = |m: String| (ErrorCode::Unauthorized, CloseCode::AuthFailed, m);
        match auth {
            Auth::Visitor {
                token,
                name,
                language,
            } => {
                let (id, token) = match token {
                    Some(token) => match self.keys.check_visitor(&token) {
                        Ok(id) => (id, token),
                        Err(e) => return Err(invalid(e.to_string())),
                    },
                    None => self.keys.new_visitor(),
                };
                let card = PlayerCard {
                    id: PlayerId::visitor(id),
                    name: name.map(|n| clip(n.trim(), 100)).filter(|n| !n.is_empty()),
                    language: language
                        .map(|l| clip(l.trim(), 16))
                        .filter(|l| !l.is_empty()),
                    // Unsigned attributes never raise priority.
                    vip_tier: 0,
                    jurisdiction: None,
                    self_excluded: false,
                    verified: false,
                };
                Ok(Session::Player {
                    card,
                    visitor_token: Some(token),
                })
            }
            Auth::Player { token } => {
                let Some(config) = &self.config.player_tokens else {
                    return Err(invalid(
                        AuthError::NotConfigured("player tokens").to_string(),
                    ));
                };
                match config.verify(&token) {
                    Ok(card) => Ok(Session::Player {
                        card,
                        visitor_token: None,
                    }),
                    Err(AuthError::Expired) => Err((
                        ErrorCode::TokenExpired,
                        CloseCode::TokenExpired,
                        "the player token has expired: fetch a fresh one and reconnect".into(),
                    )),
                    Err(e) => Err(invalid(e.to_string())),
                }
            }
            Auth::Agent { token } => {
                let account = self.agent_session(&token).await.map_err(|e| match e {
                    AuthError::Expired => (
                        ErrorCode::TokenExpired,
                        CloseCode::TokenExpired,
                        "the session has expired: log in again".to_string(),
                    ),
                    e => invalid(e.to_string()),
                })?;
                Ok(Session::Agent {
                    id: account.id,
                    name: account.name,
                    supervisor: account.role == Role::Supervisor,
                })
            }
        }
    }

    /// The account behind an agent session token, if the token is genuine,
    /// unexpired, and the account still exists.
    pub async fn agent_session(&self, token: &str) -> Result<AgentAccount, AuthError> {
        let login = self.keys.check_agent(token, now_ms())?;
        match self.store.agent(&AgentId(login)).await {
            Ok(Some(account)) => Ok(account),
            Ok(None) => Err(AuthError::Invalid("no such account".into())),
            Err(e) => Err(AuthError::Invalid(format!("cannot check the account: {e}"))),
        }
    }

    /// Checks a login and password; returns a session token and the account.
    pub async fn login(&self, login: &str, password: &str) -> Option<(String, AgentAccount)> {
        let account = self
            .store
            .agent(&AgentId(login.to_owned()))
            .await
            .ok()
            .flatten();
        // Verify against a fixed hash when the account does not exist, so timing
        // does not tell which logins exist.
        let hash = account
            .as_ref()
            .map(|a| a.password_hash.clone())
            .unwrap_or_else(|| DUMMY_HASH.to_owned());
        let password = password.to_owned();
        let ok =
            tokio::task::spawn_blocking(move || crate::auth::verify_password(&password, &hash))
                .await
                .unwrap_or(false);
        let account = account.filter(|_| ok)?;
        let token = self
            .keys
            .agent_token(&account.id.0, now_ms() + self.config.agent_session_ms);
        Some((token, account))
    }

    /// Registers an authenticated connection. Returns its handle, the queue the
    /// gateway's writer drains, and the signal that closes it.
    pub async fn connect(
        self: &Arc<Self>,
        session: &Session,
    ) -> (ConnRef, mpsc::Receiver<Outbound>, Arc<CloseSignal>) {
        let (tx, rx) = mpsc::channel(self.config.outbound_queue.max(8));
        let close = Arc::new(CloseSignal::default());
        let user = session.user();
        let conn = ConnRef(Arc::new(ConnShared {
            id: self.next_conn.fetch_add(1, Ordering::Relaxed),
            user: user.clone(),
            tx,
            close: close.clone(),
            attached: Mutex::new(Vec::new()),
            dropped: AtomicU64::new(0),
        }));
        self.conns.insert(conn.id(), conn.clone());
        self.stats.connections.fetch_add(1, Ordering::Relaxed);
        let first = {
            let mut list = self.users.entry(user.clone()).or_default();
            list.push(conn.clone());
            list.len() == 1
        };
        if self.draining.load(Ordering::Relaxed) {
            conn.close(CloseCode::Restart);
        }
        match session {
            Session::Player { card, .. } => {
                if let Some(list) = self.player_live.get(&card.id) {
                    for id in list.iter() {
                        self.player_gone.remove(id);
                    }
                }
            }
            Session::Agent { id, .. } => {
                if first {
                    self.agent_gone.remove(id);
                    // Refresh the profile: the account may have changed.
                    if let Ok(Some(account)) = self.store.agent(id).await {
                        self.learn_agent(&account, self.now());
                    }
                    let offline = self
                        .router()
                        .agent(id)
                        .map(|a| a.status == AgentStatus::Offline)
                        .unwrap_or(false);
                    if offline {
                        let decisions = self
                            .router()
                            .set_status(id, AgentStatus::Online, self.now())
                            .unwrap_or_default();
                        self.carry_out(decisions).await;
                    }
                }
            }
        }
        (conn, rx, close)
    }

    /// The `welcome` frame for a freshly connected session.
    pub async fn welcome(&self, session: &Session) -> ServerFrame {
        let (conversations, status, visitor_token) = match session {
            Session::Player {
                card,
                visitor_token,
            } => {
                let list = self
                    .store
                    .conversations(ConversationFilter {
                        player: Some(card.id.clone()),
                        limit: 50,
                        ..Default::default()
                    })
                    .await
                    .unwrap_or_default()
                    .into_iter()
                    .filter(|r| r.summary.state != ConversationState::Closed)
                    .map(|r| r.summary)
                    .collect();
                (list, None, visitor_token.clone())
            }
            Session::Agent { id, supervisor, .. } => {
                let mut list = Vec::new();
                for entry in self.live.iter() {
                    let s = entry.value().lock();
                    if *supervisor || s.agent.as_ref() == Some(id) {
                        list.push(entry.key().to_owned());
                    }
                    if list.len() >= 500 {
                        break;
                    }
                }
                let mut summaries = Vec::with_capacity(list.len());
                for cid in list {
                    if let Ok(Some(r)) = self.store.conversation(cid).await {
                        summaries.push(r.summary);
                    }
                }
                let status = self.router().agent(id).map(|a| a.status);
                (summaries, status, None)
            }
        };
        ServerFrame::Welcome {
            protocol: PROTOCOL_VERSION,
            you: session.participant(),
            visitor_token,
            status,
            conversations,
            limits: self.config.limits.clone(),
        }
    }

    /// Forgets a connection that has gone.
    pub async fn disconnect(self: &Arc<Self>, conn: &ConnRef, session: &Session) {
        self.conns.remove(&conn.id());
        self.stats.connections.fetch_sub(1, Ordering::Relaxed);
        let attached = std::mem::take(&mut *conn.0.attached.lock().expect("attached lock"));
        for id in attached {
            if let Some(live) = self.live.get(&id) {
                live.unsubscribe(conn.id());
            }
        }
        let user = session.user();
        let last = {
            let mut last = false;
            if let Some(mut list) = self.users.get_mut(&user) {
                list.retain(|c| c.id() != conn.id());
                last = list.is_empty();
            }
            last
        };
        if !last {
            return;
        }
        self.users.remove_if(&user, |_, list| list.is_empty());
        let now = self.now();
        match session {
            Session::Player { card, .. } => {
                if let Some(list) = self.player_live.get(&card.id) {
                    for id in list.iter() {
                        let queued = self
                            .live
                            .get(id)
                            .map(|l| l.lock().state == ConversationState::Queued)
                            .unwrap_or(false);
                        if queued {
                            self.player_gone.insert(*id, now);
                        }
                    }
                }
            }
            Session::Agent { id, .. } => {
                if self.draining.load(Ordering::Relaxed) {
                    return;
                }
                self.agent_gone.insert(id.clone(), now);
                let decisions = self
                    .router()
                    .set_status(id, AgentStatus::Offline, now)
                    .unwrap_or_default();
                self.carry_out(decisions).await;
                self.queue_dirty.store(true, Ordering::Relaxed);
            }
        }
    }

    /// Stops taking work: every connection is told to reconnect elsewhere.
    pub fn drain(&self) {
        self.draining.store(true, Ordering::Relaxed);
        for conn in self.conns.iter() {
            conn.close(CloseCode::Restart);
        }
    }

    /// Connections open now.
    pub fn connection_count(&self) -> usize {
        self.conns.len()
    }

    // ------------------------------------------------------------------ frames

    /// Handles one frame from an authenticated connection. Answers and errors are
    /// queued on the connection.
    pub async fn handle(self: &Arc<Self>, conn: &ConnRef, session: &Session, frame: ClientFrame) {
        let kind = frame.type_name();
        let conversation = frame.conversation();
        let client_id = match &frame {
            ClientFrame::Send { client_id, .. } | ClientFrame::Note { client_id, .. } => {
                Some(client_id.clone())
            }
            _ => None,
        };
        if let Err(Refusal(code, message)) = self.dispatch(conn, session, frame).await {
            self.stats.refused.fetch_add(1, Ordering::Relaxed);
            conn.send(ServerFrame::Error {
                code,
                message,
                frame: Some(kind.to_owned()),
                conversation,
                client_id,
            });
        }
    }

    async fn dispatch(
        self: &Arc<Self>,
        conn: &ConnRef,
        session: &Session,
        frame: ClientFrame,
    ) -> Outcome {
        match frame {
            ClientFrame::Hello { .. } => refuse(ErrorCode::HelloRequired, "hello was already sent"),
            ClientFrame::Ping => {
                conn.send(ServerFrame::Pong);
                Ok(())
            }
            ClientFrame::Start {
                department,
                language,
            } => {
                let Session::Player { card, .. } = session else {
                    return refuse(ErrorCode::Forbidden, "only players start conversations");
                };
                self.start_conversation(conn, card, department, language)
                    .await
            }
            ClientFrame::Send {
                conversation,
                client_id,
                text,
            } => {
                self.append(
                    conn,
                    session,
                    conversation,
                    client_id,
                    text,
                    MessageKind::Text,
                )
                .await
            }
            ClientFrame::Note {
                conversation,
                client_id,
                text,
            } => {
                if !matches!(session, Session::Agent { .. }) {
                    return refuse(ErrorCode::Forbidden, "only agents write notes");
                }
                self.append(
                    conn,
                    session,
                    conversation,
                    client_id,
                    text,
                    MessageKind::Note,
                )
                .await
            }
            ClientFrame::Typing {
                conversation,
                active,
            } => {
                self.participant_live(session, conversation).await?;
                self.signal(
                    conn,
                    conversation,
                    ServerFrame::Typing {
                        conversation,
                        from: session.participant(),
                        active,
                    },
                );
                Ok(())
            }
            ClientFrame::Read { conversation, seq } => {
                self.participant_live(session, conversation).await?;
                self.signal(
                    conn,
                    conversation,
                    ServerFrame::Read {
                        conversation,
                        by: session.participant(),
                        seq,
                    },
                );
                Ok(())
            }
            ClientFrame::Resume {
                conversation,
                after,
            } => self.resume(conn, session, conversation, after).await,
            ClientFrame::Close {
                conversation,
                reason,
            } => self.close(session, conversation, reason).await,
            ClientFrame::Rate {
                conversation,
                score,
                comment,
            } => self.rate(conn, session, conversation, score, comment).await,
            ClientFrame::History => {
                let Session::Player { card, .. } = session else {
                    return refuse(ErrorCode::Forbidden, "history is for players");
                };
                let conversations = self
                    .store
                    .conversations(ConversationFilter {
                        player: Some(card.id.clone()),
                        limit: 50,
                        ..Default::default()
                    })
                    .await?
                    .into_iter()
                    .map(|r| r.summary)
                    .collect();
                conn.send(ServerFrame::History { conversations });
                Ok(())
            }
            ClientFrame::SetStatus { status } => {
                let Session::Agent { id, .. } = session else {
                    return refuse(ErrorCode::Forbidden, "only agents have a status");
                };
                if status == AgentStatus::Offline {
                    return refuse(
                        ErrorCode::InvalidField,
                        "set online or away; disconnect to go offline",
                    );
                }
                let decisions = self
                    .router()
                    .set_status(id, status, self.now())
                    .map_err(routing_refusal)?;
                self.queue_dirty.store(true, Ordering::Relaxed);
                self.each_conn(&UserKey::Agent(id.clone()), |c| {
                    c.send(ServerFrame::Status { status });
                });
                self.carry_out(decisions).await;
                Ok(())
            }
            ClientFrame::Accept { conversation } => {
                let Session::Agent { id, .. } = session else {
                    return refuse(ErrorCode::Forbidden, "only agents accept offers");
                };
                let decisions = self
                    .router()
                    .accept(conversation, id, self.now())
                    .map_err(routing_refusal)?;
                self.carry_out(decisions).await;
                Ok(())
            }
            ClientFrame::Decline { conversation } => {
                let Session::Agent { id, .. } = session else {
                    return refuse(ErrorCode::Forbidden, "only agents decline offers");
                };
                let decisions = self
                    .router()
                    .decline(conversation, id, self.now())
                    .map_err(routing_refusal)?;
                self.record(
                    conversation,
                    LifecycleKind::Declined,
                    Some(id),
                    serde_json::Value::Null,
                );
                self.carry_out(decisions).await;
                Ok(())
            }
            ClientFrame::Transfer {
                conversation,
                to,
                note,
            } => self.transfer(conn, session, conversation, to, note).await,
            ClientFrame::Take { conversation } => self.take(session, conversation).await,
        }
    }

    // ------------------------------------------------------- conversation flow

    async fn start_conversation(
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

        // An open conversation in this department is returned, not duplicated: a
        // player who resends `start` after a reconnect keeps their place.
        let open: Vec<ConversationId> = self
            .player_live
            .get(&card.id)
            .map(|l| l.clone())
            .unwrap_or_default();
        for id in &open {
            let Some(live) = self.live.get(id).map(|l| l.clone()) else {
                continue;
            };
            let (same, state, agent) = {
                let s = live.lock();
                (s.request.department == department, s.state, s.agent.clone())
            };
            if same {
                self.attach(conn, &live, 0);
                self.tell_state(conn, *id, state, agent);
                return Ok(());
            }
        }
        if open.len() >= self.config.max_open_per_player {
            return refuse(
                ErrorCode::TooManyConversations,
                format!(
                    "at most {} open conversations per player",
                    self.config.max_open_per_player
                ),
            );
        }

        let id = ConversationId::new();
        let request = Request {
            department: department.clone(),
            language: language.clone(),
            tier: if card.verified { card.vip_tier } else { 0 },
        };
        let serve = self.router().can_serve(&department, &language);
        let state = if serve {
            ConversationState::Queued
        } else {
            ConversationState::Offline
        };
        let created_at = now_ms();
        self.store
            .create_conversation(NewConversation {
                id,
                player: card.clone(),
                department: department.clone(),
                language: language.clone(),
                state,
                created_at,
            })
            .await?;
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
        };
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
        let decisions = self
            .router()
            .enqueue(id, request, self.now())
            .map_err(routing_refusal)?;
        self.send_position(id, true);
        self.carry_out(decisions).await;
        Ok(())
    }

    /// Tells a (re)connected player where an existing conversation stands.
    fn tell_state(
        &self,
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
                if let Some(live) = self.live.get(&id) {
                    live.lock().last_position = None;
                }
                self.send_position(id, true);
            }
        }
    }

    /// Validates and stores a message or note. The ack is sent by the commit path
    /// (in commit order with the other entries) unless the message is a resend.
    async fn append(
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
        if text.trim().is_empty() {
            return refuse(ErrorCode::InvalidField, "text is empty");
        }
        if text.chars().count() > MAX_TEXT_CHARS {
            return refuse(
                ErrorCode::TextTooLong,
                format!("text is longer than {MAX_TEXT_CHARS} characters"),
            );
        }
        let live = self.participant_live(session, conversation).await?;
        {
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
        let applied = self
            .store
            .apply(Change::append(
                conversation,
                NewEntry {
                    kind,
                    sender: session.participant(),
                    text,
                    client_id: Some(client_id),
                    event: None,
                    origin: conn.id(),
                },
            ))
            .await?;
        if let Some(appended) = applied.appended {
            if appended.duplicate {
                let e = appended.entry;
                let prev = e.to_message(conn.is_player()).prev;
                conn.send(ServerFrame::Ack {
                    conversation,
                    client_id: e.client_id.unwrap_or_default(),
                    seq: e.seq,
                    prev,
                    duplicate: true,
                });
            }
        }
        Ok(())
    }

    /// Typing and read receipts go to the other connections attached to the
    /// conversation; they are droppable and not stored.
    fn signal(&self, conn: &ConnRef, conversation: ConversationId, frame: ServerFrame) {
        let Some(live) = self.live.get(&conversation).map(|l| l.clone()) else {
            return;
        };
        let subscribers = live.lock().subscribers.clone();
        for c in subscribers.iter().filter(|c| c.id() != conn.id()) {
            c.send(frame.clone());
        }
    }

    async fn resume(
        &self,
        conn: &ConnRef,
        session: &Session,
        conversation: ConversationId,
        after: u64,
    ) -> Outcome {
        if let Some(live) = self.live.get(&conversation).map(|l| l.clone()) {
            if !self.may_view_live(session, &live) {
                return refuse(ErrorCode::Forbidden, "not your conversation");
            }
            self.attach(conn, &live, after);
            return Ok(());
        }
        let record = self
            .store
            .conversation(conversation)
            .await?
            .ok_or_else(|| Refusal(ErrorCode::NotFound, "no such conversation".into()))?;
        if !may_view_record(session, &record) {
            return refuse(ErrorCode::Forbidden, "not your conversation");
        }
        conn.push(Outbound::Attach {
            conversation,
            after,
        });
        Ok(())
    }

    /// Subscribes a connection to a live conversation, then queues the replay: the
    /// order that guarantees nothing committed meanwhile is missed.
    fn attach(&self, conn: &ConnRef, live: &Live, after: u64) {
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

    fn detach(&self, conn: &ConnRef, live: &Live) {
        live.unsubscribe(conn.id());
        conn.0
            .attached
            .lock()
            .expect("attached lock")
            .retain(|c| *c != live.id);
        conn.push(Outbound::Detach(live.id));
    }

    async fn close(
        self: &Arc<Self>,
        session: &Session,
        conversation: ConversationId,
        reason: Option<String>,
    ) -> Outcome {
        let reason = match reason {
            Some(r) => Some(short(r, "reason")?),
            None => None,
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
        let name = who.name.clone().unwrap_or_else(|| role_name(by).to_owned());
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
                }),
                entry: Some(system_entry("closed", format!("{name} closed the chat"))),
                events,
                ..Default::default()
            })
            .await?;
        self.finish_close(&live, conversation, reason, by, agent, player)
            .await;
        Ok(())
    }

    async fn finish_close(
        self: &Arc<Self>,
        live: &Live,
        conversation: ConversationId,
        reason: Option<String>,
        by: Role,
        agent: Option<AgentId>,
        player: PlayerId,
    ) {
        live.lock().state = ConversationState::Closed;
        let decisions = self.router().release(conversation, self.now());
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
        self.remove_live(conversation);
        self.queue_dirty.store(true, Ordering::Relaxed);
        self.carry_out(decisions).await;
    }

    async fn rate(
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
            Some(c) if !c.trim().is_empty() => Some(short(c, "comment")?),
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

    async fn transfer(
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
            Some(n) if !n.trim().is_empty() => Some(short(n, "note")?),
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
        self.transfers.insert(
            conversation,
            PendingTransfer {
                from: id.clone(),
                to: to.clone(),
                note: note.clone(),
            },
        );
        let decisions = match self
            .router()
            .transfer(conversation, id, to.clone(), self.now())
        {
            Ok(d) => d,
            Err(e) => {
                self.transfers.remove(&conversation);
                return Err(routing_refusal(e));
            }
        };
        let target = match &to {
            TransferTarget::Agent(a) => format!("agent:{a}"),
            TransferTarget::Department(d) => format!("department:{d}"),
        };
        if let Some(note) = &note {
            self.store
                .apply(Change {
                    conversation,
                    entry: Some(NewEntry {
                        kind: MessageKind::Note,
                        sender: session.participant(),
                        text: format!("Transfer to {target}: {note}"),
                        client_id: None,
                        event: Some("transfer_note".into()),
                        origin: 0,
                    }),
                    ..Default::default()
                })
                .await?;
        }
        let shown = match &to {
            TransferTarget::Agent(a) => self.agent_name(a),
            TransferTarget::Department(d) => d.clone(),
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
                    agent: Some(id.clone()),
                    detail: serde_json::json!({ "to": target, "note": note }),
                    at: now_ms(),
                }],
                handoff: Some(Handoff {
                    from: id.clone(),
                    to: target,
                    note,
                    outcome: "requested".into(),
                    at: now_ms(),
                }),
                ..Default::default()
            })
            .await?;
        conn.send(ServerFrame::TransferUpdate {
            conversation,
            to,
            outcome: TransferOutcome::Pending,
        });
        self.carry_out(decisions).await;
        Ok(())
    }

    async fn take(self: &Arc<Self>, session: &Session, conversation: ConversationId) -> Outcome {
        let Session::Agent { id, supervisor, .. } = session else {
            return refuse(ErrorCode::Forbidden, "only agents take conversations");
        };
        let live = self
            .live
            .get(&conversation)
            .map(|l| l.clone())
            .ok_or_else(|| {
                Refusal(
                    ErrorCode::NotFound,
                    "no open conversation with that id".into(),
                )
            })?;
        let (state, request) = {
            let s = live.lock();
            (s.state, s.request.clone())
        };
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
            self.router()
                .restore_owned(conversation, id, request, self.now())
                .map_err(routing_refusal)?;
            self.assigned_now(&live, id, None);
            return Ok(());
        }
        if !supervisor {
            return refuse(
                ErrorCode::Forbidden,
                "only supervisors take over conversations",
            );
        }
        let decisions = self
            .router()
            .take_over(conversation, id, self.now())
            .map_err(routing_refusal)?;
        self.carry_out(decisions).await;
        Ok(())
    }

    // --------------------------------------------------------- authorization

    /// The live conversation, if this session is one of its parties (the player,
    /// the owner, or a supervisor).
    async fn participant_live(
        &self,
        session: &Session,
        conversation: ConversationId,
    ) -> Result<Arc<Live>, Refusal> {
        let Some(live) = self.live.get(&conversation).map(|l| l.clone()) else {
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
                Session::Agent { id, supervisor, .. } => {
                    *supervisor || s.agent.as_ref() == Some(id)
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
    fn may_view_live(&self, session: &Session, live: &Live) -> bool {
        let (player, owner) = {
            let s = live.lock();
            (s.player.id.clone(), s.agent.clone())
        };
        match session {
            Session::Player { card, .. } => player == card.id,
            Session::Agent { id, supervisor, .. } => {
                if *supervisor || owner.as_ref() == Some(id) {
                    return true;
                }
                match self.router().conversation(live.id) {
                    Some(ConversationView::Queued { offer, .. }) => {
                        offer.map(|(a, _)| &a == id).unwrap_or(false)
                    }
                    Some(ConversationView::Owned { transfer, .. }) => transfer
                        .and_then(|t| t.offer)
                        .map(|(a, _)| &a == id)
                        .unwrap_or(false),
                    None => false,
                }
            }
        }
    }

    // ------------------------------------------------------------ commit path

    /// Called by the store's writer right after a commit, in commit order: every
    /// attached connection gets the entry, the writer's own connection its ack.
    fn fan_out(&self, entries: &[(StoredEntry, u64)]) {
        for (entry, origin) in entries {
            self.stats.entries.fetch_add(1, Ordering::Relaxed);
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
    async fn carry_out(self: &Arc<Self>, decisions: Vec<Decision>) {
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
                } => self.offer(conversation, agent, expires_at, transfer_from),
                Decision::OfferWithdrawn {
                    conversation,
                    agent,
                    reason,
                } => {
                    let reason = match reason {
                        pitboss_routing::WithdrawReason::Expired => {
                            self.record(
                                conversation,
                                LifecycleKind::OfferExpired,
                                Some(&agent),
                                serde_json::Value::Null,
                            );
                            WithdrawReason::Expired
                        }
                        pitboss_routing::WithdrawReason::Declined => WithdrawReason::Declined,
                        pitboss_routing::WithdrawReason::Cancelled => WithdrawReason::Cancelled,
                    };
                    self.each_conn(&UserKey::Agent(agent), |c| {
                        c.send(ServerFrame::OfferWithdrawn {
                            conversation,
                            reason,
                        });
                    });
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
                    self.each_conn(&UserKey::Agent(agent), |c| {
                        c.send(ServerFrame::Status {
                            status: AgentStatus::Away,
                        });
                    });
                }
            }
        }
    }

    fn offer(
        &self,
        conversation: ConversationId,
        agent: AgentId,
        expires_at: u64,
        transfer_from: Option<AgentId>,
    ) {
        let Some(live) = self.live.get(&conversation).map(|l| l.clone()) else {
            return;
        };
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
        let transfer = transfer_from.map(|from| TransferInfo {
            from: self.agent_participant(&from),
            note: self
                .transfers
                .get(&conversation)
                .and_then(|t| t.note.clone()),
        });
        let frame = ServerFrame::Offer(Offer {
            conversation,
            player: card,
            department: request.department,
            language: request.language,
            waited_ms: now.saturating_sub(since),
            expires_in_ms: expires_at.saturating_sub(now),
            transfer,
        });
        self.record(
            conversation,
            LifecycleKind::Offered,
            Some(&agent),
            serde_json::Value::Null,
        );
        self.each_conn(&UserKey::Agent(agent), |c| {
            c.send(frame.clone());
        });
    }

    async fn assign(
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
                }),
                entry: Some(system_entry("joined", text)),
                events,
                handoff,
                ..Default::default()
            })
            .await;
        if let Err(err) = result {
            tracing::warn!(%err, conversation = %conversation, agent = %agent, "assignment not stored; reconciling");
            self.each_conn(&UserKey::Agent(agent.clone()), |c| {
                c.send(ServerFrame::Error {
                    code: ErrorCode::Overloaded,
                    message: "the assignment could not be stored; the conversation was put back"
                        .into(),
                    frame: Some("accept".into()),
                    conversation: Some(conversation),
                    client_id: None,
                });
            });
            Box::pin(self.reconcile(conversation)).await;
            return;
        }
        if let (Some(prev), Some(t)) = (&previous, &transfer) {
            self.each_conn(&UserKey::Agent(prev.clone()), |c| {
                c.send(ServerFrame::TransferUpdate {
                    conversation,
                    to: t.to.clone(),
                    outcome: TransferOutcome::Accepted,
                });
            });
        }
        self.assigned_now(&live, &agent, previous);
    }

    /// After an assignment is durable: updates the live state, releases the former
    /// owner, tells the player, and attaches the new owner from the first entry.
    fn assigned_now(&self, live: &Live, agent: &AgentId, previous: Option<AgentId>) {
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
            let supervisor = self
                .agents
                .get(&prev)
                .map(|a| a.supervisor)
                .unwrap_or(false);
            self.each_conn(&UserKey::Agent(prev), |c| {
                if !supervisor {
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

    async fn transfer_failed(
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
        let target = match &to {
            Some(TransferTarget::Agent(a)) => format!("agent:{a}"),
            Some(TransferTarget::Department(d)) => format!("department:{d}"),
            None => String::new(),
        };
        let owner_name = self.agent_name(&owner);
        let stored = self
            .store
            .apply(Change {
                conversation,
                entry: Some(system_entry(
                    "transfer_cancelled",
                    format!("The transfer did not happen; {owner_name} stays with you."),
                )),
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
            })
            .await;
        if let Err(err) = stored {
            tracing::warn!(%err, conversation = %conversation, "failed transfer not recorded");
        }
        if let Some(to) = to {
            self.each_conn(&UserKey::Agent(owner), |c| {
                c.send(ServerFrame::TransferUpdate {
                    conversation,
                    to: to.clone(),
                    outcome,
                });
            });
        }
    }

    /// Makes the router agree with the store about one conversation after a write
    /// that the router had already decided failed.
    async fn reconcile(self: &Arc<Self>, conversation: ConversationId) {
        let now = self.now();
        let decisions = self.router().release(conversation, now);
        let record = self.store.conversation(conversation).await.ok().flatten();
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
                let mut s = live.lock();
                s.state = ConversationState::Queued;
                s.agent = None;
            }
        }
        self.carry_out(decisions).await;
        self.carry_out(more).await;
    }

    // ----------------------------------------------------------------- timers

    async fn on_tick(self: &Arc<Self>) {
        // Only the lease holder runs the router's timers; alone, that is us.
        let lease_ttl = self.config.tick_ms.max(10) * 25;
        match self.lease.acquire_or_renew(lease_ttl).await {
            Ok(Some(_)) => {}
            Ok(None) => return,
            Err(err) => {
                tracing::warn!(%err, "cannot renew the routing lease");
                return;
            }
        }
        let now = self.now();
        let decisions = self.router().tick(now);
        self.carry_out(decisions).await;

        let grace: Vec<AgentId> = self
            .agent_gone
            .iter()
            .filter(|e| now.saturating_sub(*e.value()) >= self.config.agent_grace_ms)
            .map(|e| e.key().clone())
            .collect();
        for agent in grace {
            self.agent_gone.remove(&agent);
            if self.users.contains_key(&UserKey::Agent(agent.clone())) {
                continue;
            }
            let owned = self.router().owned_by(&agent);
            for conversation in owned {
                self.requeue_from(conversation, &agent).await;
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

    /// An agent's grace period ran out: their conversation goes back to the head
    /// of the queue.
    async fn requeue_from(self: &Arc<Self>, conversation: ConversationId, agent: &AgentId) {
        let Some(live) = self.live.get(&conversation).map(|l| l.clone()) else {
            return;
        };
        let request = live.lock().request.clone();
        let result = self
            .store
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
                }),
                entry: Some(system_entry(
                    "requeued",
                    "Your agent was disconnected; you are first in line for the next one.".into(),
                )),
                events: vec![LifecycleEvent {
                    kind: LifecycleKind::Requeued,
                    agent: Some(agent.clone()),
                    detail: serde_json::json!({ "reason": "agent_gone" }),
                    at: now_ms(),
                }],
                ..Default::default()
            })
            .await;
        if let Err(err) = result {
            tracing::warn!(%err, conversation = %conversation, "requeue not stored; will retry");
            self.agent_gone.insert(agent.clone(), self.now());
            return;
        }
        {
            let mut s = live.lock();
            s.state = ConversationState::Queued;
            s.agent = None;
            s.last_position = None;
        }
        let decisions = self
            .router()
            .requeue_at_head(conversation, request, self.now())
            .unwrap_or_default();
        self.carry_out(decisions).await;
        self.send_position(conversation, true);
    }

    async fn abandon(self: &Arc<Self>, conversation: ConversationId) {
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
                        detail: serde_json::json!({ "reason": "abandoned" }),
                        at: now_ms(),
                    },
                ],
                ..Default::default()
            })
            .await;
        match result {
            Ok(_) => {
                self.finish_close(
                    &live,
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
    fn send_queue_updates(&self) {
        let (queue, positions) = {
            let router = self.router();
            (router.queue(), router.positions())
        };
        for (conversation, position) in positions {
            self.tell_position(conversation, position, false);
        }
        let agents: Vec<AgentId> = self
            .users
            .iter()
            .filter_map(|e| match e.key() {
                UserKey::Agent(a) => Some(a.clone()),
                _ => None,
            })
            .collect();
        let now = self.now();
        for agent in agents {
            let supervisor = self
                .agents
                .get(&agent)
                .map(|a| a.supervisor)
                .unwrap_or(false);
            let (total, items) = if supervisor {
                (queue.len(), queue.iter().take(100).cloned().collect())
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
            let frame = ServerFrame::QueueSnapshot { total, entries };
            self.each_conn(&UserKey::Agent(agent), |c| {
                c.send(frame.clone());
            });
        }
    }

    /// Sends the player of a queued conversation their position, if it changed
    /// (or always, with `force`).
    fn send_position(&self, conversation: ConversationId, force: bool) {
        let Some(position) = self.router().position(conversation) else {
            return;
        };
        self.tell_position(conversation, position, force);
    }

    fn tell_position(&self, conversation: ConversationId, position: Position, force: bool) {
        let Some(live) = self.live.get(&conversation).map(|l| l.clone()) else {
            return;
        };
        let estimate = position.estimated_wait_ms.map(|ms| ms.div_ceil(1000));
        let now = (position.position, estimate);
        let player = {
            let mut s = live.lock();
            if !force && s.last_position == Some(now) {
                return;
            }
            s.last_position = Some(now);
            s.player.id.clone()
        };
        self.each_conn(&UserKey::Player(player), |c| {
            c.send(ServerFrame::Queued {
                conversation,
                position: position.position,
                estimated_wait_secs: estimate,
            });
        });
    }

    // ---------------------------------------------------------------- helpers

    fn each_conn(&self, user: &UserKey, mut f: impl FnMut(&ConnRef)) {
        let conns: Vec<ConnRef> = self.users.get(user).map(|l| l.clone()).unwrap_or_default();
        for c in &conns {
            f(c);
        }
    }

    fn agent_name(&self, agent: &AgentId) -> String {
        self.agents
            .get(agent)
            .map(|a| a.name.clone())
            .unwrap_or_else(|| agent.0.clone())
    }

    fn agent_participant(&self, agent: &AgentId) -> Participant {
        let card = self.agents.get(agent).map(|a| a.clone());
        Participant {
            role: if card.as_ref().map(|c| c.supervisor).unwrap_or(false) {
                Role::Supervisor
            } else {
                Role::Agent
            },
            id: agent.0.clone(),
            name: Some(card.map(|c| c.name).unwrap_or_else(|| agent.0.clone())),
        }
    }

    /// Records a KPI event without waiting for it. Losing one to a full store
    /// queue costs a statistic, never a message, so it is logged and dropped.
    fn record(
        &self,
        conversation: ConversationId,
        kind: LifecycleKind,
        agent: Option<&AgentId>,
        detail: serde_json::Value,
    ) {
        let store = self.store.clone();
        let event = LifecycleEvent {
            kind,
            agent: agent.cloned(),
            detail,
            at: now_ms(),
        };
        tokio::spawn(async move {
            if let Err(err) = store
                .apply(Change {
                    conversation,
                    events: vec![event],
                    ..Default::default()
                })
                .await
            {
                tracing::debug!(%err, "lifecycle event not recorded");
            }
        });
    }

    // ------------------------------------------------------------------ REST

    /// A conversation, if this agent may read it: the owner, an agent it is
    /// offered to, or a supervisor.
    pub async fn readable(
        &self,
        account: &AgentAccount,
        id: ConversationId,
    ) -> Result<Option<ConversationRecord>, StoreError> {
        let Some(record) = self.store.conversation(id).await? else {
            return Ok(None);
        };
        let session = Session::Agent {
            id: account.id.clone(),
            name: account.name.clone(),
            supervisor: account.role == Role::Supervisor,
        };
        if let Some(live) = self.live.get(&id).map(|l| l.clone()) {
            if self.may_view_live(&session, &live) {
                return Ok(Some(record));
            }
        }
        Ok(may_view_record(&session, &record).then_some(record))
    }

    /// Marks an account's profile as changed (after the CLI or API edited it).
    pub fn refresh_agent(&self, account: &AgentAccount) {
        self.learn_agent(account, self.now());
    }
}

/// Whether this session may read a stored conversation: its player, the agent who
/// owns or owned it last, or a supervisor.
fn may_view_record(session: &Session, record: &ConversationRecord) -> bool {
    match session {
        Session::Player { card, .. } => record.summary.player == card.id,
        Session::Agent { id, supervisor, .. } => {
            *supervisor || record.summary.agent.as_ref() == Some(id)
        }
    }
}

fn routing_refusal(err: RoutingError) -> Refusal {
    let (code, message) = match err {
        RoutingError::UnknownConversation => {
            (ErrorCode::NotFound, "no such conversation in the queue")
        }
        RoutingError::UnknownAgent => (ErrorCode::NotFound, "no such agent"),
        RoutingError::AlreadyKnown => (ErrorCode::InvalidState, "already queued"),
        RoutingError::NotOffered => (
            ErrorCode::InvalidState,
            "this conversation is not offered to you",
        ),
        RoutingError::NotOwner => (ErrorCode::Forbidden, "you do not own this conversation"),
        RoutingError::TargetUnavailable => (
            ErrorCode::InvalidState,
            "that agent cannot take it now (offline, away, full, or wrong language)",
        ),
        RoutingError::InvalidState => (
            ErrorCode::InvalidState,
            "not possible in the conversation's state",
        ),
    };
    Refusal(code, message.into())
}

/// A department or language tag: lowercase letters, digits, `-` and `_`, 1–32.
fn tag(value: Option<String>, default: &str, what: &str) -> Result<String, Refusal> {
    let v = value
        .map(|v| v.trim().to_ascii_lowercase())
        .filter(|v| !v.is_empty())
        .unwrap_or_else(|| default.to_owned());
    let ok = !v.is_empty()
        && v.len() <= 32
        && v.chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_');
    if ok {
        Ok(v)
    } else {
        refuse(
            ErrorCode::InvalidField,
            format!("{what} must be 1 to 32 letters, digits, '-' or '_'"),
        )
    }
}

fn short(value: String, what: &str) -> Result<String, Refusal> {
    if value.chars().count() > MAX_SHORT_TEXT_CHARS {
        return refuse(
            ErrorCode::InvalidField,
            format!("{what} is longer than {MAX_SHORT_TEXT_CHARS} characters"),
        );
    }
    Ok(value)
}

fn system_entry(event: &str, text: String) -> NewEntry {
    NewEntry {
        kind: MessageKind::Event,
        sender: Participant {
            role: Role::System,
            id: "system".into(),
            name: None,
        },
        text,
        client_id: None,
        event: Some(event.into()),
        origin: 0,
    }
}

fn role_name(role: Role) -> &'static str {
    match role {
        Role::Player => "The player",
        Role::Agent => "The agent",
        Role::Supervisor => "A supervisor",
        Role::System => "Pitboss",
    }
}

fn random_key() -> Vec<u8> {
    use rand::RngCore;
    let mut key = vec![0u8; 32];
    rand::rngs::OsRng.fill_bytes(&mut key);
    key
}

/// An argon2 hash of a random password, verified against when a login names no
/// account so that a missing account takes as long as a wrong password.
const DUMMY_HASH: &str = "$argon2id$v=19$m=19456,t=2,p=1$c29tZXNhbHRzb21lc2FsdA$0Nh4Pz0vS2fNsKcOzVwGx7bnaYdXiMzqX5OqyA7i0uU";
