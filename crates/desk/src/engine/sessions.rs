//! Sessions: checking credentials, registering and forgetting connections, `welcome`, draining.

use super::*;

/// How often the accounts of connected agents are checked.
const ACCOUNT_CHECK: Duration = Duration::from_secs(5);

impl Desk {
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
                    // Typed by the visitor, so masked like their messages.
                    name: name
                        .map(|n| self.config.masker.masked(clip(n.trim(), 100)))
                        .filter(|n| !n.is_empty()),
                    language: language.and_then(|l| player_language(&l)),
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
                    // The session may well be good: reconnect later, keep it.
                    e @ AuthError::Unavailable(_) => (
                        ErrorCode::Overloaded,
                        CloseCode::Overloaded,
                        format!("{e}: reconnect in a moment"),
                    ),
                    e => invalid(e.to_string()),
                })?;
                Ok(Session::Agent {
                    credential: account.credential(),
                    id: account.id,
                    name: account.name,
                    role: account.role,
                })
            }
        }
    }

    /// The account behind an agent session token, if the token is genuine,
    /// unexpired, and the account still exists.
    pub async fn agent_session(&self, token: &str) -> Result<AgentAccount, AuthError> {
        let (login, mark) = self.keys.check_agent(token, now_ms())?;
        match self.store.agent(&AgentId(login)).await {
            Ok(Some(account)) if self.keys.same_credential(&mark, &account.credential()) => {
                Ok(account)
            }
            Ok(Some(_)) => Err(AuthError::Invalid(
                "this session has ended (the agent signed out, or the password changed): \
                 log in again"
                    .into(),
            )),
            Ok(None) => Err(AuthError::Invalid("no such account".into())),
            Err(e) => Err(store_unavailable(&e)),
        }
    }

    /// Checks a login and password; returns a session token and the account,
    /// `None` for a wrong login or password, or [`AuthError::Unavailable`] when it
    /// cannot tell now.
    pub async fn login(
        &self,
        login: &str,
        password: &str,
    ) -> Result<Option<(String, AgentAccount)>, AuthError> {
        let account = self
            .store
            .agent(&AgentId(login.to_owned()))
            .await
            .map_err(|e| store_unavailable(&e))?;
        // Verify against a fixed hash when the account does not exist, so timing
        // does not tell which logins exist.
        let hash = account
            .as_ref()
            .map(|a| a.password_hash.clone())
            .unwrap_or_else(|| DUMMY_HASH.to_owned());
        let ok = crate::auth::check_password(password.to_owned(), hash)
            .await
            .map_err(|_| {
                AuthError::Unavailable("too many logins at once: try again in a moment".into())
            })?;
        let Some(account) = account.filter(|_| ok) else {
            return Ok(None);
        };
        let token = self.keys.agent_token(
            &account.id.0,
            now_ms() + self.config.agent_session_ms,
            &account.credential(),
        );
        Ok(Some((token, account)))
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
            role: match session {
                Session::Agent { role, .. } => Some(*role),
                Session::Player { .. } => None,
            },
            credential: match session {
                Session::Agent { credential, .. } => Some(credential.clone()),
                Session::Player { .. } => None,
            },
            tx,
            close: close.clone(),
            attached: Mutex::new(Vec::new()),
            audited: Mutex::new(Vec::new()),
            dropped: AtomicU64::new(0),
            inflight: Mutex::new(Vec::new()),
        }));
        self.conns.insert(conn.id(), conn.clone());
        self.stats.connections.fetch_add(1, Ordering::Relaxed);
        metrics::gauge!(telemetry::CONNECTIONS, "role" => telemetry::role(conn.is_player()))
            .increment(1.0);
        let first = {
            let mut list = self.users.entry(user.clone()).or_default();
            list.push(conn.clone());
            list.len() == 1
        };
        if self.draining.load(Ordering::Relaxed) {
            conn.close(CloseCode::Restart);
        }
        if first {
            self.presence_dirty.store(true, Ordering::Relaxed);
        }
        match session {
            Session::Player { card, .. } => {
                if self.config.cluster {
                    // Conversations another node opened are loaded here.
                    // If the store does not answer, `welcome` refuses the session.
                    for record in self.latest_of_player(&card.id).await.unwrap_or_default() {
                        if record.summary.state != ConversationState::Closed {
                            self.insert_live(&record, cluster::request_of(&record));
                        }
                    }
                }
                if let Some(list) = self.player_live.get(&card.id) {
                    for id in list.iter() {
                        self.player_gone.remove(id);
                    }
                }
            }
            Session::Agent { id, .. } => {
                // Offers still open (a console that reloaded) are shown again: those
                // made before this connection. One made from here on reaches it as
                // it is made, so it is not sent twice.
                let open = self.open_offers(id);
                if first {
                    // The account may have changed (or be new to this node).
                    if let Ok(Some(account)) = self.store.agent(id).await {
                        self.learn_card(&account);
                    }
                    let _ = self
                        .route(Command::AgentUp {
                            agent: id.clone(),
                            node: self.config.node.clone(),
                            status: self.statuses.get(id).map(|s| *s),
                        })
                        .await;
                }
                for frame in open {
                    conn.send(frame);
                }
            }
        }
        (conn, rx, close)
    }

    /// A player's latest 50 conversations.
    pub(super) async fn latest_of_player(
        &self,
        player: &PlayerId,
    ) -> pitboss_transcripts::Result<Vec<ConversationRecord>> {
        self.store
            .conversations(ConversationFilter {
                player: Some(player.clone()),
                limit: 50,
                ..Default::default()
            })
            .await
    }

    /// The `welcome` frame for a freshly connected session, or why it cannot be
    /// given now (the store did not answer: a `welcome` without the session's open
    /// conversations would tell the client it has none).
    pub async fn welcome(self: &Arc<Self>, session: &Session) -> Result<ServerFrame, String> {
        let unavailable = |e: StoreError| {
            format!("cannot read your conversations now ({e}): reconnect in a moment")
        };
        let (conversations, status, visitor_token) = match session {
            Session::Player {
                card,
                visitor_token,
            } => {
                let list = self
                    .latest_of_player(&card.id)
                    .await
                    .map_err(unavailable)?
                    .into_iter()
                    .filter(|r| r.summary.state != ConversationState::Closed)
                    .map(|r| r.summary)
                    .collect();
                (list, None, visitor_token.clone())
            }
            Session::Agent { id, role, .. } => {
                let every = allows(*role, Permission::ReadAnyConversation);
                let mut list = Vec::new();
                for entry in self.live.iter() {
                    let s = entry.value().lock();
                    if every || s.agent.as_ref() == Some(id) {
                        list.push(entry.key().to_owned());
                    }
                    if list.len() >= 500 {
                        break;
                    }
                }
                let mut summaries = Vec::with_capacity(list.len());
                for cid in list {
                    // One that has just been purged is left out.
                    if let Some(r) = self.store.conversation(cid).await.map_err(unavailable)? {
                        summaries.push(r.summary);
                    }
                }
                let status = match self.route(Command::Status { agent: id.clone() }).await {
                    Ok(Reply::Status(status)) => Some(status),
                    _ => None,
                };
                (summaries, status, None)
            }
        };
        Ok(ServerFrame::Welcome {
            protocol: PROTOCOL_VERSION,
            you: session.participant(),
            visitor_token,
            status,
            conversations,
            limits: match session {
                Session::Player { .. } => self.config.limits.clone(),
                // The player's budget is no agent's business.
                Session::Agent { .. } => pitboss_protocol::WireLimits {
                    player_messages_per_minute: None,
                    player_message_burst: None,
                    ..self.config.limits.clone()
                },
            },
        })
    }

    /// Forgets a connection that has gone.
    pub async fn disconnect(self: &Arc<Self>, conn: &ConnRef, session: &Session) {
        self.conns.remove(&conn.id());
        self.stats.connections.fetch_sub(1, Ordering::Relaxed);
        metrics::gauge!(telemetry::CONNECTIONS, "role" => telemetry::role(conn.is_player()))
            .decrement(1.0);
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
        self.presence_dirty.store(true, Ordering::Relaxed);
        let now = self.now();
        match session {
            // In a cluster the leader learns from presence whether the player is
            // connected to another node.
            Session::Player { .. } if self.config.cluster => {}
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
                self.statuses.remove(id);
                let _ = now;
                let _ = self
                    .route(Command::AgentDown {
                        agent: id.clone(),
                        node: self.config.node.clone(),
                    })
                    .await;
            }
        }
    }

    /// Every few seconds, closes the connections of agents whose account was
    /// removed meanwhile (a session token alone does not outlive its account), or
    /// whose role changed (what a connection may do was fixed at its `hello`),
    /// and passes a changed profile on to routing.
    pub(super) async fn check_accounts(self: &Arc<Self>) {
        {
            let mut last = self.accounts_checked.lock().expect("accounts lock");
            if last.is_some_and(|t| t.elapsed() < ACCOUNT_CHECK) {
                return;
            }
            *last = Some(Instant::now());
        }
        let agents: Vec<AgentId> = self
            .users
            .iter()
            .filter_map(|e| match e.key() {
                UserKey::Agent(a) => Some(a.clone()),
                UserKey::Player(_) => None,
            })
            .collect();
        for agent in agents {
            // A store that does not answer closes nothing: it is checked again soon.
            if let Ok(account) = self.store.agent(&agent).await {
                self.enforce_account(&agent, account.as_ref());
                // A name, capacity, language or department changed where this
                // node did not see it (`pitboss agent update`, another node):
                // routing offers by the account as it is now.
                if let Some(account) = account.filter(|a| {
                    self.agents.get(&a.id).is_none_or(|known| {
                        known.name != a.name || known.profile != super::profile_of(a)
                    })
                }) {
                    self.refresh_agent(&account).await;
                }
            }
        }
    }

    /// Closes this node's connections of `agent` that its account no longer
    /// allows: every one if the account is gone, those opened under another role
    /// or password otherwise, and those opened before the agent signed out (with
    /// 4003, as the sign-out itself closes them). The account's REST changes call
    /// it at once; other nodes catch up within [`ACCOUNT_CHECK`].
    pub fn enforce_account(&self, agent: &AgentId, account: Option<&AgentAccount>) {
        let mut closed = 0;
        let mut message = "this account was removed";
        self.each_conn(&UserKey::Agent(agent.clone()), |c| {
            if let Some(a) = account {
                if c.0.role != Some(a.role) {
                    message = "this account's role changed: log in again";
                } else if c.0.credential.as_deref() == Some(a.credential().as_str()) {
                    return;
                } else if c
                    .0
                    .credential
                    .as_deref()
                    .is_some_and(|old| a.same_password(old))
                {
                    // Same password, later sign-out: the agent signed out
                    // elsewhere, and this connection missed being told.
                    message = "this account signed out";
                    closed += 1;
                    c.close(CloseCode::SignedOut);
                    return;
                } else {
                    message = "this account's password changed: log in again";
                }
            }
            closed += 1;
            c.send(ServerFrame::Error {
                code: ErrorCode::Unauthorized,
                message: message.into(),
                frame: None,
                conversation: None,
                client_id: None,
            });
            c.close(CloseCode::AuthFailed);
        });
        if closed > 0 {
            tracing::info!(agent = %agent, connections = closed, "{message}: closing its sessions");
        }
    }

    /// Stops taking work: every connection is told to reconnect elsewhere.
    pub fn drain(&self) {
        self.draining.store(true, Ordering::Relaxed);
        // Connections still waiting for their `hello` are told at once too.
        self.drain_started.notify_waiters();
        for conn in self.conns.iter() {
            conn.close(CloseCode::Restart);
        }
    }

    /// Connections open now.
    pub fn connection_count(&self) -> usize {
        self.conns.len()
    }
}

/// A session or login that cannot be checked now: the database's own words go to
/// the log, the client gets a plain one.
fn store_unavailable(err: &StoreError) -> AuthError {
    tracing::warn!(error = %err, "cannot check a session or login: storage unavailable");
    AuthError::Unavailable("storage unavailable: try again in a moment".into())
}
