//! The desk itself: one `match` over client frames, the commit path that fans
//! durable entries out to attached connections, the carrying-out of routing
//! decisions, and the timers (offer expiry, grace periods, abandoned players,
//! queue updates).

mod cluster;
mod decisions;
mod flow;
mod frames;
mod readiness;
mod retention;
mod sessions;
mod timers;

use crate::auth::{clip, player_language, AuthError, Keys};
use crate::connection::{CloseSignal, ConnRef, ConnShared, Outbound};
use crate::live::{Live, LiveState};
use crate::permissions::{allows, Permission};
use crate::{conversation_role, telemetry, DeskConfig, Session, UserKey};
use cluster::{Command, Event, Leadership, OfferNote, Reply};
use dashmap::DashMap;
use pitboss_cluster::{Bus, Lease, Presence};
use pitboss_protocol::limits::{MAX_CLIENT_ID_BYTES, MAX_SHORT_TEXT_CHARS, MAX_TEXT_CHARS};
use pitboss_protocol::{
    AgentId, AgentStatus, Auth, CannotResumeReason, ClientFrame, CloseCode, ConversationId,
    ConversationState, ConversationSummary, ErrorCode, MessageKind, Offer, Participant, PlayerCard,
    PlayerId, QueueEntry, Role, ServerFrame, TransferInfo, TransferOutcome, TransferTarget,
    WithdrawReason, PROTOCOL_VERSION,
};
use pitboss_routing::{
    AgentProfile, ConversationView, Decision, Position, Request, Router, RoutingError,
    TransferFailure,
};
use pitboss_transcripts::{
    now_ms, AgentAccount, CatalogKind, Change, CommitObserver, ConversationFilter,
    ConversationRecord, Expect, Handoff, LifecycleEvent, LifecycleKind, NewConversation, NewEntry,
    Open, SetState, SharedStore, StoreError, StoredEntry,
};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};
use tokio::sync::mpsc;

pub use readiness::NotReady;

/// A refused frame: its code and a message for the client.
#[derive(Debug)]
struct Refusal(ErrorCode, String);

type Outcome = Result<(), Refusal>;

fn refuse<T>(code: ErrorCode, message: impl Into<String>) -> Result<T, Refusal> {
    Err(Refusal(code, message.into()))
}

impl From<StoreError> for Refusal {
    fn from(err: StoreError) -> Self {
        let label = match &err {
            StoreError::Conflict => "conflict",
            StoreError::NotFound => "not_found",
            StoreError::Precondition => "precondition",
            StoreError::Fenced => "fenced",
            StoreError::LastAdmin => "last_admin",
            StoreError::PlayerBusy => "player_busy",
            StoreError::Overloaded => "overloaded",
            StoreError::Unavailable(_) => "unavailable",
        };
        metrics::counter!(telemetry::STORE_ERRORS, "error" => label).increment(1);
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
            StoreError::Fenced => Refusal(
                ErrorCode::Overloaded,
                "routing moved to another node meanwhile; retry".into(),
            ),
            // Only account writes meet this; no conversation path makes one.
            StoreError::LastAdmin => Refusal(ErrorCode::InvalidState, err.to_string()),
            StoreError::PlayerBusy => Refusal(ErrorCode::TooManyConversations, err.to_string()),
            // The database's own words stay in the log: they name hosts and
            // internals no client should see.
            StoreError::Unavailable(e) => {
                tracing::debug!(error = %e, "refused: storage unavailable");
                Refusal(
                    ErrorCode::Overloaded,
                    "storage unavailable: nothing was stored, retry".into(),
                )
            }
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

/// Where the router's clock starts: far enough from zero that a time restored
/// from the store (a queued player's arrival, before this desk started) is still
/// a time on it, rather than cut at the desk's start.
const ROUTER_CLOCK_ORIGIN: u64 = 365 * 24 * 3_600_000;

/// Display name and role of an account, kept in memory for frames.
#[derive(Clone)]
struct AgentCard {
    name: String,
    role: Role,
    /// What routing knows of the account, as this node last read it: a change
    /// made elsewhere (the CLI, another node) is passed on to the router.
    profile: AgentProfile,
}

impl AgentCard {
    fn allows(&self, permission: Permission) -> bool {
        allows(self.role, permission)
    }
}

/// The conversation engine of one node.
pub struct Desk {
    config: DeskConfig,
    store: SharedStore,
    bus: Arc<dyn Bus>,
    lease: Arc<dyn Lease>,
    presence: Arc<dyn Presence>,
    keys: Keys,
    /// Whether this node leads (runs the router), and its cluster timers.
    leadership: Mutex<Leadership>,
    /// Commands sent to the leader, waiting for its reply.
    pending: DashMap<u64, cluster::ReplySlot>,
    next_req: AtomicU64,
    /// Commands from other nodes, for the leader to run in order.
    commands: mpsc::Sender<cluster::RemoteCommand>,
    /// Offers open now, as every node knows them.
    offers: DashMap<ConversationId, OfferNote>,
    /// The leader's view: on which nodes each agent is connected.
    agent_nodes: DashMap<AgentId, std::collections::HashSet<String>>,
    /// The leader's view: when a command last said an agent came or went.
    agent_moved: DashMap<AgentId, u64>,
    /// The status each agent connected here chose last.
    statuses: DashMap<AgentId, AgentStatus>,
    /// The set of users connected here changed: heartbeat early.
    presence_dirty: AtomicBool,
    /// A resync from the store is due.
    resync_requested: AtomicBool,
    /// When the accounts of connected agents were last checked.
    accounts_checked: Mutex<Option<Instant>>,
    /// The leader's record of commands seen (sender, request id → when), so a
    /// command sent again runs once.
    seen_commands: Mutex<std::collections::HashMap<(String, u64), u64>>,
    /// A new term's router is being rebuilt.
    taking_over: AtomicBool,
    /// The leader should check its router against the store at its next round.
    repair_soon: AtomicBool,
    /// Departments whose queue length was reported (to report them empty too).
    reported_departments: DashMap<String, ()>,
    /// The routing policy's state. A std mutex: every call into the router is
    /// synchronous and short; decisions are carried out after it is released.
    router: Mutex<Router>,
    /// Origin of the monotonic clock handed to the router.
    started: Instant,
    live: DashMap<ConversationId, Arc<Live>>,
    /// Live conversations per player, so connecting and disconnecting a player
    /// does not scan every conversation.
    player_live: DashMap<PlayerId, Vec<ConversationId>>,
    /// Players whose `start` is opening a conversation on this node (at most one
    /// each, so `max_open_per_player` holds against several tabs starting at
    /// once). An entry lives only while its start runs: bounded by the
    /// connections.
    starting: DashMap<PlayerId, ()>,
    conns: DashMap<u64, ConnRef>,
    users: DashMap<UserKey, Vec<ConnRef>>,
    agents: DashMap<AgentId, AgentCard>,
    /// Agents with no connection left, since when (monotonic ms).
    agent_gone: DashMap<AgentId, u64>,
    /// Queued conversations whose player has no connection, since when.
    player_gone: DashMap<ConversationId, u64>,
    transfers: DashMap<ConversationId, PendingTransfer>,
    /// Transfers to a named agent that were pending when this router was built,
    /// with when it was built: each waits for its receiver to be online with room
    /// (see `resume_transfers`).
    resuming: DashMap<ConversationId, (PendingTransfer, u64)>,
    next_conn: AtomicU64,
    queue_dirty: AtomicBool,
    draining: AtomicBool,
    /// Wakes what waits for [`Desk::until_draining`].
    drain_started: tokio::sync::Notify,
    /// What the store probe last saw; a failing store stops new conversations.
    store_health: Mutex<readiness::StoreHealth>,
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
    /// installs the commit observer, joins the cluster (with `config.cluster`) and
    /// starts the timers.
    pub async fn start(
        config: DeskConfig,
        store: SharedStore,
        shared: crate::Shared,
    ) -> Result<Arc<Self>, StoreError> {
        let visitor_key = store.secret("visitor-token-key", random_key()).await?;
        let agent_key = store.secret("agent-token-key", random_key()).await?;
        let (commands, command_rx) = Desk::command_queue();
        let desk = Arc::new(Self {
            router: Mutex::new(Router::new(config.routing.clone())),
            config,
            store: store.clone(),
            bus: shared.bus,
            lease: shared.lease,
            presence: shared.presence,
            keys: Keys::new(visitor_key, agent_key),
            leadership: Mutex::new(Leadership::default()),
            pending: DashMap::new(),
            // Random, not 1: a node killed and started again under its name must not
            // reuse request ids the routing node has seen (or still owes a reply to).
            next_req: AtomicU64::new(uuid::Uuid::new_v4().as_u64_pair().0 >> 2),
            commands,
            offers: DashMap::new(),
            agent_nodes: DashMap::new(),
            agent_moved: DashMap::new(),
            statuses: DashMap::new(),
            presence_dirty: AtomicBool::new(false),
            resync_requested: AtomicBool::new(false),
            reported_departments: DashMap::new(),
            taking_over: AtomicBool::new(false),
            seen_commands: Mutex::new(Default::default()),
            accounts_checked: Mutex::new(None),
            repair_soon: AtomicBool::new(false),
            started: Instant::now(),
            live: DashMap::new(),
            player_live: DashMap::new(),
            starting: DashMap::new(),
            conns: DashMap::new(),
            users: DashMap::new(),
            agents: DashMap::new(),
            agent_gone: DashMap::new(),
            player_gone: DashMap::new(),
            transfers: DashMap::new(),
            resuming: DashMap::new(),
            next_conn: AtomicU64::new(1),
            queue_dirty: AtomicBool::new(false),
            draining: AtomicBool::new(false),
            drain_started: tokio::sync::Notify::new(),
            store_health: Mutex::new(readiness::StoreHealth::new()),
            stats: DeskStats::default(),
        });
        store.set_observer(Arc::new(Committed(Arc::downgrade(&desk))));
        desk.recover().await?;
        if !desk.config.cluster {
            metrics::gauge!(telemetry::LEADER).set(1.0);
        }
        if desk.config.cluster {
            desk.join_cluster(command_rx);
            // A lone node leads at once; others learn who does.
            desk.keep_lease(true).await;
            desk.every_tick(|desk| async move { desk.keep_lease(false).await });
        }
        desk.every_tick(|desk| async move { desk.on_tick().await });
        desk.every_tick(|desk| async move { desk.check_accounts().await });
        desk.schedule_retention();
        desk.every_tick(|desk| async move { desk.probe_store().await });
        tracing::info!(node = %desk.config.node, "desk started");
        Ok(desk)
    }

    /// Runs `job` every tick on a task of its own until the desk drains or is gone.
    fn every_tick<F, Fut>(self: &Arc<Self>, job: F)
    where
        F: Fn(Arc<Desk>) -> Fut + Send + 'static,
        Fut: std::future::Future<Output = ()> + Send,
    {
        let weak = Arc::downgrade(self);
        let tick = Duration::from_millis(self.config.tick_ms.max(10));
        tokio::spawn(async move {
            let mut interval = tokio::time::interval(tick);
            interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                interval.tick().await;
                let Some(desk) = weak.upgrade() else { break };
                if desk.draining.load(Ordering::Relaxed) {
                    break;
                }
                job(desk).await;
            }
        });
    }

    /// Loads accounts and the live index from the store (after a restart), and
    /// alone, the router too (in a cluster the leader rebuilds it when it takes
    /// the lease).
    async fn recover(self: &Arc<Self>) -> Result<(), StoreError> {
        let now = self.now();
        for account in self.store.agents().await? {
            self.learn_agent(&account, now);
        }
        let open = self.store.open_conversations().await?;
        for record in &open {
            self.insert_live(record, cluster::request_of(record));
        }
        if !self.config.cluster {
            let orphans = self.rebuild_router(&open).await?;
            for (conversation, agent) in orphans {
                self.requeue_from(conversation, &agent, timers::Requeue::AccountRemoved)
                    .await;
            }
            for record in &open {
                if record.summary.state == ConversationState::Queued {
                    self.player_gone.insert(record.summary.id, now);
                }
            }
        }
        if !open.is_empty() {
            tracing::info!(conversations = open.len(), "recovered open conversations");
        }
        Ok(())
    }

    /// A fresh router from the store: accounts, recent handle times, the queue as
    /// it was (see [`QueueHistory`]), owned conversations (whose agents get a
    /// grace period). Returns the conversations whose owner has no account any more,
    /// which it put at the head of the queue, with that owner, for the store to
    /// record ([`Desk::requeue_from`]).
    async fn rebuild_router(
        &self,
        open: &[ConversationRecord],
    ) -> Result<Vec<(ConversationId, AgentId)>, StoreError> {
        let now = self.now();
        let accounts = self.store.agents().await?;
        let handle_times = self.store.recent_handle_times(500).await?;
        let cooldown = self.config.routing.decline_cooldown_ms;
        let wall = now_ms();
        let history = QueueHistory::new(
            self.store
                .queue_events(wall.saturating_sub(cooldown))
                .await?,
        );
        let transfer_timeout = self.config.routing.transfer_timeout_ms;
        let transfers = PendingTransfers::new(
            self.store
                .transfer_events(wall.saturating_sub(transfer_timeout))
                .await?,
        );
        let mut router = Router::new(self.config.routing.clone());
        for account in &accounts {
            self.learn_card(account);
            let _ = router.upsert_agent(account.id.clone(), profile_of(account), now);
        }
        for (department, ms) in handle_times.into_iter().rev() {
            router.record_handle_time(&department, ms);
        }
        // Those put back at the head first, in the order they were put there.
        let mut queued: Vec<_> = open
            .iter()
            .filter(|r| r.summary.state == ConversationState::Queued)
            .map(|r| (history.requeued(r.summary.id), r))
            .collect();
        queued.sort_by_key(|(requeued, _)| requeued.map_or((1, 0), |at| (0, at)));
        for (requeued, record) in queued {
            let id = record.summary.id;
            let since = requeued.unwrap_or(record.summary.created_at);
            let _ = router.restore_queued(
                id,
                cluster::request_of(record),
                requeued.is_some(),
                wall.saturating_sub(since),
                &history.cooldowns(id, cooldown, wall),
                now,
            );
        }
        let mut owners = Vec::new();
        let mut orphans = Vec::new();
        let mut restored = Vec::new();
        for record in open {
            let (ConversationState::Active, Some(agent)) =
                (record.summary.state, record.summary.agent.clone())
            else {
                continue;
            };
            let request = cluster::request_of(record);
            let id = record.summary.id;
            if router
                .restore_owned(id, &agent, request.clone(), now)
                .is_err()
            {
                // The account is gone: back to the head of the queue.
                let _ = router.requeue_at_head(id, request, now);
                orphans.push((id, agent));
                continue;
            }
            owners.push(agent.clone());
            if let Some((pending, at)) = transfers.pending(id, &agent) {
                restored.push((id, pending, at));
            }
        }
        // Transfers that were waiting: one to a department waits again for what is
        // left of its timeout; one to a named agent, whose offer went with the old
        // router, is offered again once its receiver is back (`resume_transfers`).
        let mut ended = Vec::new();
        let mut waiting = Vec::new();
        let mut resuming = Vec::new();
        for (id, pending, at) in restored {
            let left = at.saturating_add(transfer_timeout).saturating_sub(wall);
            match &pending.to {
                TransferTarget::Department(d) => {
                    match router.restore_department_transfer(
                        id,
                        &pending.from,
                        d.clone(),
                        left,
                        now,
                    ) {
                        Ok(_) => waiting.push((id, pending)),
                        Err(_) => ended.push((id, pending)),
                    }
                }
                TransferTarget::Agent(_) => resuming.push((id, pending)),
            }
        }
        *self.router() = router;
        self.transfers.clear();
        self.player_gone.clear();
        self.agent_gone.clear();
        self.agent_nodes.clear();
        for agent in owners {
            self.agent_gone.entry(agent).or_insert(now);
        }
        self.resuming.clear();
        for (id, pending) in waiting {
            self.transfers.insert(id, pending);
        }
        for (id, pending) in resuming {
            self.resuming.insert(id, (pending, now));
        }
        for (id, pending) in ended {
            let owner = pending.from.clone();
            self.transfers.insert(id, pending);
            self.transfer_failed(id, owner, TransferFailure::Cancelled)
                .await;
        }
        Ok(orphans)
    }

    /// Learns an account: its card on every node, its profile in the router where
    /// it runs.
    fn learn_agent(&self, account: &AgentAccount, now: u64) {
        self.learn_card(account);
        if !self.is_leader() {
            return;
        }
        let decisions = self
            .router()
            .upsert_agent(account.id.clone(), profile_of(account), now);
        debug_assert!(decisions
            .iter()
            .all(|d| matches!(d, Decision::QueueChanged)));
    }

    /// Reads an account this node has not seen (added while it ran, working on
    /// another node) from the store, so that players here see its display name.
    /// Left unknown if the store cannot answer: the login stands in for the name.
    async fn know_agent(&self, agent: &AgentId) {
        if self.agents.contains_key(agent) {
            return;
        }
        match self.store.agent(agent).await {
            Ok(Some(account)) => self.learn_card(&account),
            Ok(None) => {}
            Err(err) => tracing::debug!(%err, agent = %agent.0, "account not read"),
        }
    }

    fn learn_card(&self, account: &AgentAccount) {
        self.agents.insert(
            account.id.clone(),
            AgentCard {
                name: account.name.clone(),
                role: account.role,
                profile: profile_of(account),
            },
        );
    }

    /// Adds an open conversation to the live index (once).
    fn insert_live(&self, record: &ConversationRecord, request: Request) {
        let id = record.summary.id;
        if self.live.contains_key(&id) {
            return;
        }
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
        if let dashmap::Entry::Vacant(v) = self.live.entry(id) {
            v.insert(live);
        } else {
            return;
        }
        let mut list = self
            .player_live
            .entry(record.player.id.clone())
            .or_default();
        if !list.contains(&id) {
            list.push(id);
        }
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

    /// The router's clock: monotonic milliseconds since the desk started, from
    /// [`ROUTER_CLOCK_ORIGIN`].
    fn now(&self) -> u64 {
        ROUTER_CLOCK_ORIGIN + self.started.elapsed().as_millis() as u64
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

    /// Returns once [`Desk::drain`] has been called (at once if it has).
    pub async fn until_draining(&self) {
        let started = self.drain_started.notified();
        tokio::pin!(started);
        // Registered before the check, so a drain between the two still wakes it.
        started.as_mut().enable();
        if self.is_draining() {
            return;
        }
        started.await;
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
            role: conversation_role(card.as_ref().map_or(Role::Agent, |c| c.role)),
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
        tokio::spawn(store_event(store, conversation, event));
    }

    /// Records a lifecycle event and waits until it is stored (or could not be:
    /// logged and dropped, as [`Desk::record`]'s), for an event a new router must
    /// find once its answer has gone out.
    async fn record_now(
        &self,
        conversation: ConversationId,
        kind: LifecycleKind,
        agent: Option<&AgentId>,
        detail: serde_json::Value,
    ) {
        let event = LifecycleEvent {
            kind,
            agent: agent.cloned(),
            detail,
            at: now_ms(),
        };
        store_event(self.store.clone(), conversation, event).await;
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
            role: account.role,
            credential: account.credential(),
        };
        if let Some(live) = self.live.get(&id).map(|l| l.clone()) {
            if self.may_view_live(&session, &live) {
                return Ok(Some(record));
            }
        }
        Ok(may_view_record(&session, &record).then_some(record))
    }

    /// Status and load (owned conversations plus open offers) of each of
    /// `agents`, in order, as routing sees them now, asked in one round trip;
    /// `None` when the router cannot be asked.
    pub async fn agent_roster(
        self: &Arc<Self>,
        agents: Vec<AgentId>,
    ) -> Option<Vec<(AgentStatus, u32)>> {
        let asked = agents.len();
        match self.route(Command::Roster { agents }).await {
            Ok(Reply::Roster(roster)) if roster.len() == asked => Some(roster),
            _ => None,
        }
    }

    /// Creates an account for an admin (`actor`), audited.
    pub async fn create_account(
        self: &Arc<Self>,
        actor: &AgentId,
        new: crate::accounts::NewAccount,
    ) -> Result<AgentAccount, crate::accounts::AccountError> {
        let account = crate::accounts::create(&*self.store, &actor.0, new).await?;
        self.refresh_agent(&account).await;
        Ok(account)
    }

    /// Changes an account for an admin (`actor`), audited. A change of role closes
    /// the account's connections on this node now (others within seconds): what a
    /// connection may do was fixed when it said `hello`.
    pub async fn update_account(
        self: &Arc<Self>,
        actor: &AgentId,
        id: &AgentId,
        changes: crate::accounts::AccountChanges,
    ) -> Result<AgentAccount, crate::accounts::AccountError> {
        let account = crate::accounts::update(&*self.store, &actor.0, id, changes).await?;
        self.refresh_agent(&account).await;
        self.enforce_account(id, Some(&account));
        Ok(account)
    }

    /// Removes an account for an admin (`actor`), audited, and closes its
    /// connections on this node now (other nodes within seconds).
    pub async fn remove_account(
        self: &Arc<Self>,
        actor: &AgentId,
        id: &AgentId,
    ) -> Result<(), crate::accounts::AccountError> {
        crate::accounts::remove(&*self.store, &actor.0, id).await?;
        self.enforce_account(id, None);
        Ok(())
    }

    /// Marks an account's profile as changed (after the CLI or API edited it).
    pub async fn refresh_agent(self: &Arc<Self>, account: &AgentAccount) {
        self.learn_card(account);
        let _ = self
            .route(Command::Refresh {
                agent: account.id.clone(),
            })
            .await;
    }
}

/// Whether this session may read a stored conversation: its player, the agent who
/// owns or owned it last, or an account that may read any conversation.
fn may_view_record(session: &Session, record: &ConversationRecord) -> bool {
    match session {
        Session::Player { card, .. } => record.summary.player == card.id,
        Session::Agent { id, role, .. } => {
            allows(*role, Permission::ReadAnyConversation)
                || (allows(*role, Permission::ReadOwnConversations)
                    && record.summary.agent.as_ref() == Some(id))
        }
    }
}

fn profile_of(account: &AgentAccount) -> AgentProfile {
    AgentProfile {
        languages: account.languages.clone(),
        departments: account.departments.clone(),
        capacity: account.capacity,
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
        RoutingError::DepartmentUnstaffed => (
            ErrorCode::InvalidState,
            "nobody in that department who speaks the conversation's language is online",
        ),
        RoutingError::InvalidState => (
            ErrorCode::InvalidState,
            "not possible in the conversation's state",
        ),
    };
    Refusal(code, message.into())
}

/// A department or language tag: lowercase letters, digits, `-` and `_`, 1–32.
/// How hand-offs and transfer events name a transfer's target: `agent:<login>`
/// or `department:<tag>`.
fn handoff_target(to: &TransferTarget) -> String {
    match to {
        TransferTarget::Agent(a) => format!("agent:{a}"),
        TransferTarget::Department(d) => format!("department:{d}"),
    }
}

/// A blank or missing value takes `default`; both are normalised alike.
fn tag(value: Option<String>, default: &str, what: &str) -> Result<String, Refusal> {
    let raw = value
        .as_deref()
        .filter(|v| !v.trim().is_empty())
        .unwrap_or(default);
    match crate::accounts::normalise_tag(raw) {
        Some(tag) => Ok(tag),
        None => refuse(
            ErrorCode::InvalidField,
            format!("{what} must be 1 to 32 letters, digits, '-' or '_'"),
        ),
    }
}

/// Text that shows nothing: empty, or only white space and characters that have no
/// width (zero-width spaces and joiners, direction marks, embeddings, overrides and
/// isolates, word joiners, byte-order marks, soft hyphens), which a reader would
/// take for an empty message.
pub(crate) fn blank(text: &str) -> bool {
    text.chars().all(|c| {
        c.is_whitespace()
            || matches!(
                c,
                '\u{00AD}'
                    | '\u{061C}'
                    | '\u{180E}'
                    | '\u{200B}'..='\u{200F}'
                    | '\u{202A}'..='\u{202E}'
                    | '\u{2060}'..='\u{2064}'
                    | '\u{2066}'..='\u{2069}'
                    | '\u{FEFF}'
            )
    })
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
        Role::Supervisor | Role::Admin => "A supervisor",
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

/// Stores one lifecycle event; a failure is logged and dropped.
async fn store_event(store: SharedStore, conversation: ConversationId, event: LifecycleEvent) {
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
}

/// The transfers the store's lifecycle events show pending: those whose last
/// transfer event (requested, transferred, failed) is a request by the
/// conversation's owner now.
struct PendingTransfers {
    /// Conversation → its last transfer event.
    last: std::collections::HashMap<ConversationId, LifecycleEvent>,
}

impl PendingTransfers {
    fn new(events: Vec<pitboss_transcripts::RecordedEvent>) -> Self {
        let mut last = std::collections::HashMap::new();
        // Oldest first: the last one inserted is the newest.
        for e in events {
            last.insert(e.conversation, e.event);
        }
        Self { last }
    }

    /// The transfer of `id` pending from `owner`, and when it was asked for.
    fn pending(&self, id: ConversationId, owner: &AgentId) -> Option<(PendingTransfer, u64)> {
        let event = self.last.get(&id)?;
        if event.kind != LifecycleKind::TransferRequested || event.agent.as_ref() != Some(owner) {
            return None;
        }
        let to = match event.detail.get("to")?.as_str()?.split_once(':')? {
            ("agent", a) => TransferTarget::Agent(AgentId(a.to_owned())),
            ("department", d) => TransferTarget::Department(d.to_owned()),
            _ => return None,
        };
        let note = event
            .detail
            .get("note")
            .and_then(|n| n.as_str())
            .map(str::to_owned);
        Some((
            PendingTransfer {
                from: owner.clone(),
                to,
                note,
            },
            event.at,
        ))
    }
}

/// What the store's lifecycle events say about the queue beyond each
/// conversation's state: which conversations were put back at the head (and
/// when), and which agents refused them lately (declined, or let the offer
/// expire), so that a new router keeps their place and their cooldowns.
struct QueueHistory {
    requeued: std::collections::HashMap<ConversationId, u64>,
    refused: std::collections::HashMap<ConversationId, Vec<(AgentId, u64)>>,
}

impl QueueHistory {
    fn new(events: Vec<pitboss_transcripts::RecordedEvent>) -> Self {
        let mut history = Self {
            requeued: Default::default(),
            refused: Default::default(),
        };
        for e in events {
            match (e.event.kind, e.event.agent) {
                (LifecycleKind::Requeued, _) => {
                    // Oldest first: the last one is when it went to the head.
                    history.requeued.insert(e.conversation, e.event.at);
                }
                (LifecycleKind::Declined | LifecycleKind::OfferExpired, Some(agent)) => {
                    history
                        .refused
                        .entry(e.conversation)
                        .or_default()
                        .push((agent, e.event.at));
                }
                _ => {}
            }
        }
        history
    }

    /// When the conversation was last put back at the head of the queue, if ever.
    fn requeued(&self, id: ConversationId) -> Option<u64> {
        self.requeued.get(&id).copied()
    }

    /// (agent, ms its cooldown still runs at `wall`) for each refusal of `id`.
    fn cooldowns(&self, id: ConversationId, cooldown: u64, wall: u64) -> Vec<(AgentId, u64)> {
        self.refused
            .get(&id)
            .map(|refusals| {
                refusals
                    .iter()
                    .map(|(agent, at)| {
                        (
                            agent.clone(),
                            at.saturating_add(cooldown).saturating_sub(wall),
                        )
                    })
                    .collect()
            })
            .unwrap_or_default()
    }
}
