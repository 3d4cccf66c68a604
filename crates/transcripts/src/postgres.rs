//! The PostgreSQL backend, for a cluster: every node has its own [`PostgresStore`] on one
//! shared database. Each store has one writer task that owns one connection and
//! group-commits every change of its node, and a small read-only pool beside it.
//!
//! It owns the SQL, the schema (`migrations/postgres`), the writer's batching and what
//! makes concurrent writers on different nodes safe. What the rows mean, and what a
//! [`Change`] does, is the [`Store`] contract in the crate root; the semantics are the
//! SQLite backend's ([`crate::sqlite`]) exactly, down to the errors. Who may write
//! what is the desk's business.
//!
//! # Several writers on one database
//!
//! Within one node the writer task serialises writes, as in SQLite. Across nodes the
//! database does, with row locks, all inside the batch's `READ COMMITTED` transaction:
//!
//! * **Sequence numbers.** An append bumps the counter with
//!   `UPDATE conversations SET last_seq = last_seq + 1 … RETURNING last_seq`; the row
//!   lock it holds to commit serialises appends to one conversation across nodes, so
//!   numbers stay unique and gap-free.
//! * **Preconditions, ratings, resends** are checked on the conversation row read
//!   `FOR NO KEY UPDATE` (the lock the `UPDATE` takes anyway, so it is never upgraded).
//!   A second node's check waits until the first commits, then sees its result: two
//!   nodes cannot both pass a compare-and-set, nor both store one client id.
//! * **Resends** are also backed by the unique index `entries_client_id`: should an
//!   insert ever race past the check, the unique violation rolls back the write's
//!   savepoint and the stored entry is re-read to answer duplicate or `Conflict`.
//! * **Secrets** are get-or-create with `INSERT … ON CONFLICT DO NOTHING`, then a read.
//! * **The routing fence** is the one row of `routing_fence` (migration
//!   `0003_routing_fence`), holding the highest routing epoch recorded. A fenced
//!   change reads it `FOR UPDATE` after its `expect` check, fails `Fenced` on a lower
//!   epoch, checks the agent's capacity with a new statement, then writes its epoch;
//!   `raise_routing_epoch` is `UPDATE … SET epoch = GREATEST(epoch, $1)`. Both hold
//!   the row lock until commit, so fenced changes from every node run one at a time:
//!   a node waiting for the lock then sees the epoch and the assignments the holder
//!   committed, which is what makes both checks sound under `READ COMMITTED`.
//!
//! # Deadlocks
//!
//! A batch locks every conversation it changes up front, in id order
//! (`SELECT … ORDER BY id FOR NO KEY UPDATE`), then, if any of its writes is fenced
//! or raises the routing epoch, the fence row (`FOR UPDATE`): always in that order,
//! so two nodes' batches never wait for each other in a cycle over conversations and
//! the fence: a batch holding the fence lock waits for no conversation lock.
//! An erasure's conversations (every one of its player's) are locked in the same
//! statement, so in the same order. A purge chunk waits for no lock at all: it takes
//! the closed conversations nobody holds (`FOR UPDATE SKIP LOCKED`) and leaves the
//! others to its next run, which also keeps purges on two nodes out of each other's
//! way. Other
//! rows (accounts, catalog items, secrets) are not pre-locked (the capacity check
//! only reads accounts), as they are rare writes; should PostgreSQL still abort the
//! batch as a deadlock victim (or with a serialization failure), the writer rolls the
//! whole transaction back and, after a short pause ([`RETRY_BACKOFF`]) that
//! lets the surviving transaction finish, runs the batch again, at most
//! [`MAX_BATCH_ATTEMPTS`] times in all, then answers every write in it
//! [`StoreError::Unavailable`]. Retrying is safe: nothing of a failed attempt was
//! committed, acknowledged or reported to the observer. A lock held elsewhere for
//! longer than [`LOCK_TIMEOUT`] fails the write (or the batch) as `Unavailable`
//! instead of stalling this node's writer behind another node.
//!
//! # Durability
//!
//! The writer sets `synchronous_commit = on` on its connection, whatever the server's
//! default: a commit returns once its WAL is flushed (and, with synchronous standbys
//! configured, replicated), so an acknowledged write survives a crash of the database
//! host. [`PostgresStore::synchronous_commit`] asks that connection what is in force.
//!
//! A write connection found dead at the start of a batch (its `BEGIN` fails with an
//! I/O error or a `FATAL`, as every kept connection does once after the database
//! restarts) is replaced and the batch run once more: nothing of it was sent. Read
//! connections are pinged before the pool hands them out. A connection that breaks
//! later in a batch fails it with `Unavailable` and is replaced for the next one. A
//! batch whose connection broke during COMMIT is never run again: it may have
//! committed after all, unacknowledged and unreported: a client's resend then gets its
//! original back as a duplicate, and a receiver that missed the entry sees the gap in
//! sequence numbers and resumes from the store.

use crate::queue::{
    audit_select, conversations_query, corrupt, db, from_db, kpi_query, read_marks, tag, to_db,
    untag, Op, Output, Request, WriteQueue,
};
use crate::{
    now_ms, player_busy, AgentAccount, Appended, Applied, AuditFilter, AuditRecord, CatalogItem,
    CatalogKind, Change, CommitObserver, ConversationFilter, ConversationRecord, Deleted, Fence,
    Handoff, KpiFilter, KpiRow, LifecycleEvent, LifecycleKind, NewAuditRecord, NewConversation,
    NewEntry, Purged, RecordedEvent, Result, Snapshot, Store, StoreError, StoredEntry,
    MAX_PURGE_CHUNK,
};
use async_trait::async_trait;
use pitboss_protocol::{
    AgentId, ConversationId, ConversationState, ConversationSummary, MessageKind, Participant,
    PlayerCard, PlayerId, Role, Seq,
};
use sqlx::postgres::{
    PgConnectOptions, PgConnection, PgDatabaseError, PgExecutor, PgPool, PgPoolOptions, PgRow,
    PgSeverity, Postgres,
};
use sqlx::{ConnectOptions, Connection, QueryBuilder, Row, Transaction};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;
use tokio::sync::mpsc;
use tracing::Instrument;

/// The schema, embedded at build time from `migrations/postgres`. Running it takes an
/// advisory lock, so nodes starting together migrate one after the other.
static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations/postgres");

/// How long opening a connection (the writer's, or one of the read pool's) may take
/// before the store reports the database unavailable.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// How long a write waits for a row lock another node holds before it fails, as the
/// writer's `lock_timeout`. Another node's batch holds its locks for one commit
/// (milliseconds); a wait this long means that node is stuck, and every write of this
/// node queued behind it would be stuck too.
pub const LOCK_TIMEOUT: Duration = Duration::from_secs(10);

/// How long the writer's connection may sit in an open transaction with no
/// statement running before PostgreSQL ends its session (its
/// `idle_in_transaction_session_timeout`), releasing the rows and advisory locks
/// the transaction held. A batch sends its statements back to back, so only a
/// node that stalled in the middle of one (SIGSTOP, a frozen VM, a pause far
/// longer than any scheduling delay) reaches it; without it, such a node would
/// hold up every write to those rows from the other nodes for the whole stall, up to
/// [`LOCK_TIMEOUT`] each. The stalled batch is rolled back: nothing of it was
/// acknowledged, and its clients send again.
pub const IDLE_IN_TRANSACTION_TIMEOUT: Duration = Duration::from_secs(2);

/// Attempts at one batch when PostgreSQL aborts it as a deadlock victim or with a
/// serialization failure: the first run and two retries. Bounded, so a pathological
/// contention pattern ends in `Unavailable` (the clients retry) instead of a writer
/// that never answers.
pub const MAX_BATCH_ATTEMPTS: u32 = 3;

/// The pause before running an aborted batch again, times the attempt number. Run at
/// once, the batch could take back the rows it just released before the transaction
/// that was waiting for them (the deadlock's survivor) gets them, and deadlock with it
/// all over again; a pause lets the survivor lock, write and commit first.
pub const RETRY_BACKOFF: Duration = Duration::from_millis(50);

/// `application_name` of the writer's connection, so an operator (or a test) can
/// tell it from the readers in `pg_stat_activity`.
pub const WRITER_APPLICATION_NAME: &str = "pitboss-transcripts-writer";

/// `application_name` of the read pool's connections.
pub const READER_APPLICATION_NAME: &str = "pitboss-transcripts-reader";

/// Tuning for a [`PostgresStore`]. The defaults suit one node serving thousands of
/// concurrent conversations.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PostgresOptions {
    /// Pending writes the queue holds before callers get [`StoreError::Overloaded`]
    /// (default 8192). Bounded so that a slow database pushes back on clients instead
    /// of growing memory. Values below 1 count as 1.
    pub write_queue: usize,
    /// Most writes committed in one transaction (default 512). Bounds how long one
    /// commit holds its callers, how long its row locks block other nodes, and how
    /// much one failed commit takes down with it. Values below 1 count as 1.
    pub max_batch: usize,
    /// Read-only connections beside the writer (default 8). Values below 1 count as 1.
    pub read_connections: u32,
}

impl Default for PostgresOptions {
    fn default() -> Self {
        Self {
            write_queue: 8192,
            max_batch: 512,
            read_connections: 8,
        }
    }
}

/// The PostgreSQL [`Store`]. Open it with [`PostgresStore::connect`].
///
/// Every write (`create_conversation`, `apply`, `put_agent`, `remove_agent`,
/// `put_catalog`, `remove_catalog`, `secret`, `raise_routing_epoch`, `erase_player`,
/// and each chunk of `purge_closed`) is queued to one writer task, which commits whatever is queued together in one transaction, each
/// write in its own savepoint: one WAL flush serves many callers, and a write that
/// fails (conflict, precondition, fenced, not found) rolls back only itself. Reads go
/// to a read-only pool and never wait for the writer.
///
/// Beyond the trait's contract, as in SQLite: `create_conversation` fails with
/// [`StoreError::Conflict`] when the id exists already, and with
/// [`StoreError::Precondition`] for a state other than `Queued` or `Offline`;
/// `entries` of an unknown conversation is empty.
pub struct PostgresStore {
    /// The writer task's queue.
    queue: WriteQueue,
    /// Read-only connections.
    reads: PgPool,
    /// What the store and its writer task share.
    shared: Arc<Shared>,
}

/// State shared by the store handle and its writer task.
struct Shared {
    /// Told of every committed entry; set once, before the first write.
    observer: OnceLock<Arc<dyn CommitObserver>>,
    /// Transactions committed by the writer, for tests and metrics.
    commits: AtomicU64,
    /// Batches run again after a deadlock or serialization failure.
    retries: AtomicU64,
}

impl PostgresStore {
    /// Connects to the database at `url` (`postgres://user:password@host:port/db`),
    /// brings its schema up to date and starts the writer task. The database itself
    /// must exist.
    pub async fn connect(url: &str, options: PostgresOptions) -> Result<Arc<PostgresStore>> {
        // The parse error does not repeat the URL, which may hold a password.
        let base: PgConnectOptions = url
            .parse()
            .map_err(|e| StoreError::Unavailable(format!("invalid PostgreSQL URL: {e}")))?;
        let target = format!(
            "{}:{}/{}",
            base.get_host(),
            base.get_port(),
            base.get_database().unwrap_or("")
        );

        let write_options = base.clone().application_name(WRITER_APPLICATION_NAME);
        let mut conn = open_connection(&write_options).await.map_err(db)?;
        // Before the writer's session settings: waiting for another node's migration
        // (an advisory lock) must not be cut short by the writer's lock timeout.
        MIGRATOR
            .run(&mut conn)
            .await
            .map_err(|e| StoreError::Unavailable(format!("migrating {target}: {e}")))?;
        configure_writer(&mut conn).await.map_err(db)?;

        // Read-only sessions: a bug in a read path cannot write behind the writer's
        // back. Set as a startup parameter, so every pooled connection has it.
        let read_options = base
            .application_name(READER_APPLICATION_NAME)
            .options([("default_transaction_read_only", "on")]);
        // `test_before_acquire` (sqlx's default, set here on purpose): an idle
        // connection is pinged before it is handed out, one round trip per read,
        // so connections that died with a database restart are replaced instead
        // of failing the first reads after it.
        let reads = PgPoolOptions::new()
            .max_connections(options.read_connections.max(1))
            .acquire_timeout(CONNECT_TIMEOUT)
            .test_before_acquire(true)
            .connect_with(read_options)
            .await
            .map_err(db)?;

        let shared = Arc::new(Shared {
            observer: OnceLock::new(),
            commits: AtomicU64::new(0),
            retries: AtomicU64::new(0),
        });
        let (tx, rx) = mpsc::channel(options.write_queue.max(1));
        let writer = Writer {
            conn: Some(conn),
            connect: write_options,
            requests: rx,
            max_batch: options.max_batch.max(1),
            shared: shared.clone(),
        };
        let span = tracing::info_span!("transcript_writer", backend = "postgres", %target);
        let handle = tokio::spawn(writer.run().instrument(span));
        Ok(Arc::new(PostgresStore {
            queue: WriteQueue::new(tx, handle),
            reads,
            shared,
        }))
    }

    /// The `synchronous_commit` level in force on the writer's connection (`"on"`),
    /// asked of that connection itself.
    pub async fn synchronous_commit(&self) -> Result<String> {
        match self.queue.settings().await?.pop() {
            Some(value) => Ok(value),
            None => Err(corrupt("synchronous_commit: no value")),
        }
    }

    /// Transactions the writer has committed since the store was connected.
    pub fn commits(&self) -> u64 {
        self.shared.commits.load(Ordering::Relaxed)
    }

    /// Batches the writer ran again because PostgreSQL aborted them as a deadlock
    /// victim or with a serialization failure, since the store was connected.
    pub fn retried_batches(&self) -> u64 {
        self.shared.retries.load(Ordering::Relaxed)
    }
}

impl PostgresStore {
    /// Lifecycle events of conversations in `state`, oldest first, chosen by
    /// `filter` on the events: `kinds` and `since` are its parameters after the
    /// state, in that order.
    async fn events_in_state(
        &self,
        state: ConversationState,
        filter: &str,
        kinds: [LifecycleKind; 3],
        since: u64,
    ) -> Result<Vec<RecordedEvent>> {
        let sql = format!(
            "SELECT e.conversation_id, e.kind, e.agent_id, e.detail, e.at \
             FROM conversations c JOIN lifecycle_events e ON e.conversation_id = c.id \
             WHERE c.state = $1 AND {filter} ORDER BY e.id"
        );
        let mut query = sqlx::query(&sql).bind(tag(state)?);
        for kind in kinds {
            query = query.bind(tag(kind)?);
        }
        let rows = query
            .bind(to_db(since))
            .fetch_all(&self.reads)
            .await
            .map_err(db)?;
        recorded_events(&rows)
    }
}

#[async_trait]
impl Store for PostgresStore {
    fn set_observer(&self, observer: Arc<dyn CommitObserver>) {
        if self.shared.observer.set(observer).is_err() {
            tracing::warn!("commit observer already set; the new one is ignored");
        }
    }

    async fn create_conversation(&self, new: NewConversation) -> Result<()> {
        self.queue.create_conversation(new).await
    }

    async fn apply(&self, change: Change) -> Result<Applied> {
        self.queue.apply(change).await
    }

    async fn conversation(&self, id: ConversationId) -> Result<Option<ConversationRecord>> {
        let sql = format!("{CONVERSATION_SELECT} WHERE c.id = $1");
        let row = sqlx::query(&sql)
            .bind(id.to_string())
            .fetch_optional(&self.reads)
            .await
            .map_err(db)?;
        row.as_ref().map(conversation_from_row).transpose()
    }

    async fn entries(
        &self,
        id: ConversationId,
        after: Seq,
        limit: u32,
        include_notes: bool,
    ) -> Result<Vec<StoredEntry>> {
        read_entries(&self.reads, id, after, limit, include_notes).await
    }

    async fn conversations(&self, filter: ConversationFilter) -> Result<Vec<ConversationRecord>> {
        read_conversations(&self.reads, filter).await
    }

    async fn open_conversations(&self) -> Result<Vec<ConversationRecord>> {
        let sql = format!("{CONVERSATION_SELECT} WHERE c.state <> $1 ORDER BY c.created_at, c.id");
        let rows = sqlx::query(&sql)
            .bind(tag(ConversationState::Closed)?)
            .fetch_all(&self.reads)
            .await
            .map_err(db)?;
        rows.iter().map(conversation_from_row).collect()
    }

    async fn events(&self, id: ConversationId) -> Result<Vec<LifecycleEvent>> {
        read_events(&self.reads, id).await
    }

    async fn queue_events(&self, since: u64) -> Result<Vec<RecordedEvent>> {
        // Through the (state, created_at) index to the few queued conversations,
        // then through (conversation_id, kind, at) to their events.
        self.events_in_state(
            ConversationState::Queued,
            "(e.kind = $2 OR (e.kind IN ($3, $4) AND e.at >= $5))",
            [
                LifecycleKind::Requeued,
                LifecycleKind::Declined,
                LifecycleKind::OfferExpired,
            ],
            since,
        )
        .await
    }

    async fn transfer_events(&self, since: u64) -> Result<Vec<RecordedEvent>> {
        // Through the (state, created_at) index to the active conversations, then
        // through (conversation_id, kind, at) to their transfer events.
        self.events_in_state(
            ConversationState::Active,
            "e.kind IN ($2, $3, $4) AND e.at >= $5",
            [
                LifecycleKind::TransferRequested,
                LifecycleKind::Transferred,
                LifecycleKind::TransferFailed,
            ],
            since,
        )
        .await
    }

    async fn handoffs(&self, id: ConversationId) -> Result<Vec<Handoff>> {
        read_handoffs(&self.reads, id).await
    }

    async fn snapshot(&self) -> Result<Box<dyn Snapshot>> {
        let mut tx = self.reads.begin().await.map_err(db)?;
        // Read committed would take a new snapshot per statement. Repeatable read
        // takes one at the first query: take it now.
        sqlx::query("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
            .execute(&mut *tx)
            .await
            .map_err(db)?;
        sqlx::query("SELECT 1")
            .execute(&mut *tx)
            .await
            .map_err(db)?;
        Ok(Box::new(PostgresSnapshot(tx)))
    }

    async fn recent_handle_times(&self, limit: u32) -> Result<Vec<(String, u64)>> {
        // Handle time runs from the first assignment to the close; conversations
        // that were never assigned (abandoned in the queue) have none.
        let rows = sqlx::query(
            "SELECT c.department, c.closed_at, MIN(e.at) AS assigned_at \
             FROM conversations c \
             JOIN lifecycle_events e ON e.conversation_id = c.id AND e.kind = $1 \
             WHERE c.state = $2 AND c.closed_at IS NOT NULL \
             GROUP BY c.id, c.department, c.closed_at \
             ORDER BY c.closed_at DESC, c.id DESC LIMIT $3",
        )
        .bind(tag(LifecycleKind::Assigned)?)
        .bind(tag(ConversationState::Closed)?)
        .bind(i64::from(limit))
        .fetch_all(&self.reads)
        .await
        .map_err(db)?;
        rows.iter()
            .map(|row| {
                let closed_at: i64 = get(row, "closed_at")?;
                let assigned_at: i64 = get(row, "assigned_at")?;
                // Event times come from the caller's clock: never report a negative.
                Ok((
                    get(row, "department")?,
                    from_db(closed_at.saturating_sub(assigned_at)),
                ))
            })
            .collect()
    }

    async fn kpi_rows(&self, filter: KpiFilter) -> Result<Vec<KpiRow>> {
        let mut q = kpi_query::<Postgres>(filter)?;
        let rows = q.build().fetch_all(&self.reads).await.map_err(db)?;
        rows.iter()
            .map(|row| {
                let at = |column: &str| -> Result<Option<u64>> {
                    Ok(get::<Option<i64>>(row, column)?.map(from_db))
                };
                let rating: Option<i32> = get(row, "rating")?;
                Ok(KpiRow {
                    state: untag(get(row, "state")?)?,
                    created_at: from_db(get(row, "created_at")?),
                    assigned_at: at("assigned_at")?,
                    first_response_at: at("first_response_at")?,
                    closed_at: at("closed_at")?,
                    offline: get::<i64>(row, "offline")? != 0,
                    rating: rating.and_then(|r| u8::try_from(r).ok()),
                })
            })
            .collect()
    }

    async fn put_agent(&self, account: AgentAccount) -> Result<()> {
        self.queue.put_agent(account).await
    }

    async fn agent(&self, id: &AgentId) -> Result<Option<AgentAccount>> {
        let sql = format!("{AGENT_SELECT} WHERE id = $1");
        let row = sqlx::query(&sql)
            .bind(&id.0)
            .fetch_optional(&self.reads)
            .await
            .map_err(db)?;
        row.as_ref().map(agent_from_row).transpose()
    }

    async fn agents(&self) -> Result<Vec<AgentAccount>> {
        let sql = format!("{AGENT_SELECT} ORDER BY id");
        let rows = sqlx::query(&sql).fetch_all(&self.reads).await.map_err(db)?;
        rows.iter().map(agent_from_row).collect()
    }

    async fn remove_agent(&self, id: &AgentId) -> Result<bool> {
        self.queue.remove_agent(id).await
    }

    async fn end_sessions(&self, id: &AgentId, at: u64) -> Result<bool> {
        self.queue.end_sessions(id, at).await
    }

    async fn catalog(&self, kind: CatalogKind, language: Option<&str>) -> Result<Vec<CatalogItem>> {
        let rows = sqlx::query(
            "SELECT kind, language, key, text FROM catalog \
             WHERE kind = $1 AND ($2::text IS NULL OR language = $2) ORDER BY language, key",
        )
        .bind(tag(kind)?)
        .bind(language)
        .fetch_all(&self.reads)
        .await
        .map_err(db)?;
        rows.iter()
            .map(|row| {
                Ok(CatalogItem {
                    kind: untag(get(row, "kind")?)?,
                    language: get(row, "language")?,
                    key: get(row, "key")?,
                    text: get(row, "text")?,
                })
            })
            .collect()
    }

    async fn mark_read(
        &self,
        conversation: ConversationId,
        by: Participant,
        seq: Seq,
    ) -> Result<()> {
        self.queue.mark_read(conversation, by, seq).await
    }

    async fn put_catalog(&self, item: CatalogItem) -> Result<()> {
        self.queue.put_catalog(item).await
    }

    async fn remove_catalog(&self, kind: CatalogKind, language: &str, key: &str) -> Result<bool> {
        self.queue.remove_catalog(kind, language, key).await
    }

    async fn append_audit(&self, record: NewAuditRecord) -> Result<u64> {
        self.queue.append_audit(record).await
    }

    async fn audit(&self, filter: AuditFilter) -> Result<Vec<AuditRecord>> {
        let mut sql = audit_select::<Postgres>(&filter);
        let rows = sql.build().fetch_all(&self.reads).await.map_err(db)?;
        rows.iter().map(audit_from_row).collect()
    }

    async fn secret(&self, name: &str, fresh: Vec<u8>) -> Result<Vec<u8>> {
        self.queue.secret(name, fresh).await
    }

    async fn routing_epoch(&self) -> Result<u64> {
        let epoch: Option<i64> = sqlx::query_scalar(ROUTING_EPOCH_SELECT)
            .fetch_optional(&self.reads)
            .await
            .map_err(db)?;
        epoch.map(from_db).ok_or_else(missing_fence)
    }

    async fn raise_routing_epoch(&self, epoch: u64) -> Result<u64> {
        self.queue.raise_routing_epoch(epoch).await
    }

    async fn purge_audit(&self, before: u64, chunk: u32) -> Result<u64> {
        self.queue.purge_audit(before, chunk).await
    }

    async fn purge_closed(&self, closed_before: u64, chunk: u32) -> Result<Purged> {
        self.queue.purge_closed(closed_before, chunk).await
    }

    async fn erase_player(&self, player: &PlayerId) -> Result<Deleted> {
        self.queue.erase_player(player).await
    }

    async fn ping(&self) -> Result<()> {
        sqlx::query("SELECT 1")
            .execute(&self.reads)
            .await
            .map_err(db)?;
        Ok(())
    }

    async fn shutdown(&self) {
        self.queue.close().await;
        self.reads.close().await;
    }
}

/// A repeatable-read, read-only transaction on one of the read connections
/// ([`Store::snapshot`]). Dropped without a commit: sqlx rolls it back when the
/// connection goes back to the pool.
struct PostgresSnapshot(Transaction<'static, Postgres>);

snapshot_on_transaction!(PostgresSnapshot);

/// [`Store::entries`] on `reads`: the pool, or one snapshot's connection.
async fn read_entries<'c>(
    reads: impl PgExecutor<'c>,
    id: ConversationId,
    after: Seq,
    limit: u32,
    include_notes: bool,
) -> Result<Vec<StoredEntry>> {
    let mut q = QueryBuilder::<Postgres>::new(format!(
        "SELECT {ENTRY_COLUMNS} FROM entries WHERE conversation_id = "
    ));
    q.push_bind(id.to_string())
        .push(" AND seq > ")
        .push_bind(to_db(after));
    if !include_notes {
        q.push(" AND kind <> ").push_bind(tag(MessageKind::Note)?);
    }
    q.push(" ORDER BY seq LIMIT ").push_bind(i64::from(limit));
    let rows = q.build().fetch_all(reads).await.map_err(db)?;
    rows.iter().map(|row| entry_from_row(row, id)).collect()
}

/// [`Store::conversations`] on `reads`.
async fn read_conversations<'c>(
    reads: impl PgExecutor<'c>,
    filter: ConversationFilter,
) -> Result<Vec<ConversationRecord>> {
    let mut q = conversations_query::<Postgres>(CONVERSATION_SELECT, filter)?;
    let rows = q.build().fetch_all(reads).await.map_err(db)?;
    rows.iter().map(conversation_from_row).collect()
}

/// [`Store::events`] on `reads`.
async fn read_events<'c>(
    reads: impl PgExecutor<'c>,
    id: ConversationId,
) -> Result<Vec<LifecycleEvent>> {
    let rows = sqlx::query(
        "SELECT kind, agent_id, detail, at FROM lifecycle_events \
         WHERE conversation_id = $1 ORDER BY id",
    )
    .bind(id.to_string())
    .fetch_all(reads)
    .await
    .map_err(db)?;
    rows.iter().map(event_from_row).collect()
}

/// [`Store::handoffs`] on `reads`.
async fn read_handoffs<'c>(reads: impl PgExecutor<'c>, id: ConversationId) -> Result<Vec<Handoff>> {
    let rows = sqlx::query(
        "SELECT from_agent, to_target, note, outcome, at FROM handoffs \
         WHERE conversation_id = $1 ORDER BY id",
    )
    .bind(id.to_string())
    .fetch_all(reads)
    .await
    .map_err(db)?;
    rows.iter()
        .map(|row| {
            Ok(Handoff {
                from: AgentId(get(row, "from_agent")?),
                to: get(row, "to_target")?,
                note: get(row, "note")?,
                outcome: get(row, "outcome")?,
                at: from_db(get(row, "at")?),
            })
        })
        .collect()
}

/// Why one write inside a batch did not succeed.
enum Fail {
    /// The write is refused or failed on its own: its savepoint is rolled back, it is
    /// answered with this error, and the rest of the batch goes on.
    Refused(StoreError),
    /// PostgreSQL aborted the transaction (deadlock victim, serialization failure):
    /// the whole batch is rolled back and may be run again.
    Retry(sqlx::Error),
    /// Inserting the entry hit `entries_client_id`: another transaction stored that
    /// client id after this write checked for it. Resolved by re-reading it.
    ClientIdTaken,
    /// A statement failed: PostgreSQL aborted the transaction, so only a savepoint
    /// around the write lets the rest of the batch go on. Answered like `Refused`.
    Broken(StoreError),
}

impl From<StoreError> for Fail {
    fn from(e: StoreError) -> Self {
        Fail::Refused(e)
    }
}

/// A database failure inside a write: retry the batch, or fail the write alone.
fn fail(e: sqlx::Error) -> Fail {
    if is_retryable(&e) {
        Fail::Retry(e)
    } else {
        Fail::Broken(db(e))
    }
}

/// Whether PostgreSQL aborted the transaction in a way that running it again can
/// cure: `40P01` deadlock detected, `40001` serialization failure.
fn is_retryable(e: &sqlx::Error) -> bool {
    match e {
        sqlx::Error::Database(d) => matches!(d.code().as_deref(), Some("40P01" | "40001")),
        _ => false,
    }
}

/// Whether `e` says the connection itself is gone, not that a statement failed: an
/// I/O error (reset, closed, end of stream), a `FATAL` (or `PANIC`) from the server,
/// which ends the session (`57P01` admin shutdown after a restart, `57P02`, `57P03`,
/// a terminated backend), or a connection exception (class `08`).
fn is_connection_lost(e: &sqlx::Error) -> bool {
    match e {
        sqlx::Error::Io(_) => true,
        sqlx::Error::Database(d) => {
            let fatal = d
                .try_downcast_ref::<PgDatabaseError>()
                .is_some_and(|pg| matches!(pg.severity(), PgSeverity::Fatal | PgSeverity::Panic));
            fatal
                || d.code()
                    .is_some_and(|code| code.starts_with("08") || code.starts_with("57P"))
        }
        _ => false,
    }
}

/// The writer task: owns this node's only write connection and commits queued writes
/// in batches. Ends when the queue is closed and drained.
struct Writer {
    /// The write connection; `None` after it broke, until the next batch reconnects.
    conn: Option<PgConnection>,
    /// How to open it again.
    connect: PgConnectOptions,
    /// Queued writes.
    requests: mpsc::Receiver<Request>,
    /// Most writes per transaction.
    max_batch: usize,
    /// Observer and counters.
    shared: Arc<Shared>,
}

impl Writer {
    /// Commits batches until the queue is closed and empty, then closes the connection.
    async fn run(mut self) {
        // Capped: `max_batch` is a bound, not a size to allocate up front.
        let mut batch = Vec::with_capacity(self.max_batch.min(1024));
        // Waits for one write, then takes whatever else is queued, up to max_batch.
        while self.requests.recv_many(&mut batch, self.max_batch).await > 0 {
            self.commit_batch(&mut batch).await;
        }
        if let Some(conn) = self.conn.take() {
            if let Err(e) = conn.close().await {
                tracing::warn!(error = %e, "closing the write connection failed");
            }
        }
        tracing::debug!("transcript writer stopped");
    }

    /// Runs every write of `batch` in one transaction (again, after a deadlock, up to
    /// [`MAX_BATCH_ATTEMPTS`] in all), commits, tells the observer, then answers every
    /// caller. Leaves `batch` empty.
    async fn commit_batch(&mut self, batch: &mut Vec<Request>) {
        let mut attempt = 1;
        // Appends and creations run without savepoints until one of them fails
        // after writing; then the batch runs again with a savepoint around each.
        let mut guard_all = false;
        // Whether the batch already ran again on a new connection because the
        // one it found had died while idle (a database restart): once at most.
        let mut reconnected = false;
        loop {
            let mut results = Vec::with_capacity(batch.len());
            let mut committed = Vec::new();
            let failure = match self
                .run_batch(batch, &mut results, &mut committed, guard_all)
                .await
            {
                Ok(()) => {
                    self.shared.commits.fetch_add(1, Ordering::Relaxed);
                    tracing::trace!(
                        writes = batch.len(),
                        entries = committed.len(),
                        "batch committed"
                    );
                    // Observer first, answers after: by the time a sender sees its
                    // ack, its entry is already on its way to every receiver.
                    if !committed.is_empty() {
                        if let Some(observer) = self.shared.observer.get() {
                            observer.committed(&committed);
                        }
                    }
                    for (request, result) in batch.drain(..).zip(results) {
                        request.answer(result);
                    }
                    return;
                }
                Err(failure) => failure,
            };
            let failure = match failure {
                BatchFailure::Stale(e) if !reconnected => {
                    // The connection was dead before the batch began: its BEGIN
                    // failed, so nothing of the batch reached the server, let alone
                    // a COMMIT. Dropped (no ROLLBACK on a dead connection); the batch
                    // runs once more on a new one.
                    self.conn = None;
                    reconnected = true;
                    tracing::info!(error = %e, writes = batch.len(), "write connection found dead; batch run on a new one");
                    continue;
                }
                BatchFailure::Stale(e) => BatchFailure::Db(e),
                failure => failure,
            };
            self.abandon_transaction().await;
            let e = match failure {
                BatchFailure::Stale(e) => e,
                BatchFailure::Halfway(why) => {
                    tracing::debug!(error = %why, writes = batch.len(), "batch run again with savepoints");
                    guard_all = true;
                    continue;
                }
                BatchFailure::Db(e) => e,
            };
            if is_retryable(&e) && attempt < MAX_BATCH_ATTEMPTS {
                attempt += 1;
                self.shared.retries.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(error = %e, attempt, writes = batch.len(), "batch retried");
                tokio::time::sleep(RETRY_BACKOFF * attempt).await;
                continue;
            }
            let message = e.to_string();
            tracing::error!(error = %message, writes = batch.len(), "batch failed");
            for request in batch.drain(..) {
                request.answer(Err(StoreError::Unavailable(message.clone())));
            }
            return;
        }
    }

    /// Rolls back a failed batch. A connection that cannot even do that is broken
    /// (or in an unknown state): it is dropped, and the next batch opens a new one.
    async fn abandon_transaction(&mut self) {
        let Some(conn) = self.conn.as_mut() else {
            return;
        };
        // ROLLBACK outside a transaction (BEGIN itself failed) is only a warning.
        if let Err(e) = exec(conn, "ROLLBACK").await {
            tracing::warn!(error = %e, "rollback failed; reconnecting for the next batch");
            self.conn = None;
        }
    }

    /// The write connection, opened again if the last one broke.
    async fn connection(&mut self) -> Result<&mut PgConnection, sqlx::Error> {
        let conn = match self.conn.take() {
            Some(conn) => conn,
            None => {
                let mut conn = open_connection(&self.connect).await?;
                configure_writer(&mut conn).await?;
                tracing::info!("write connection reopened");
                conn
            }
        };
        Ok(self.conn.insert(conn))
    }

    /// The transaction of one batch. `Err` means the batch as a whole failed and
    /// nothing of it may be acknowledged; a single write's own failure is in
    /// `results` and left nothing of itself behind.
    ///
    /// Unless `guard_all`, appends and creations (nearly every write) run without a
    /// savepoint: each reads and checks before its first write, so a refused one has
    /// written nothing, and two round trips per write are saved. One that fails after
    /// writing, or whose statement fails (which aborts the whole transaction in
    /// PostgreSQL), ends the batch with [`BatchFailure::Halfway`], and the batch runs
    /// again with `guard_all`.
    async fn run_batch(
        &mut self,
        batch: &[Request],
        results: &mut Vec<Result<Output>>,
        committed: &mut Vec<(StoredEntry, u64)>,
        guard_all: bool,
    ) -> Result<(), BatchFailure> {
        let reused = self.conn.is_some();
        let conn = self.connection().await?;
        // Explicit, whatever the database's default: the locking below relies on each
        // statement seeing what other nodes committed before it started.
        if let Err(e) = exec(conn, "BEGIN ISOLATION LEVEL READ COMMITTED").await {
            // A kept connection that is gone (the database restarted since the
            // last batch) fails here, before anything of the batch was sent.
            return Err(if reused && is_connection_lost(&e) {
                BatchFailure::Stale(e)
            } else {
                BatchFailure::Db(e)
            });
        }
        // Every conversation this batch changes, locked now and in id order, so that
        // two nodes' batches never wait for each other in a cycle.
        let mut ids: Vec<String> = batch
            .iter()
            .filter_map(|request| match &request.op {
                Op::Apply(change) => Some(change.conversation.to_string()),
                Op::MarkRead { conversation, .. } => Some(conversation.to_string()),
                _ => None,
            })
            .collect();
        // An erasure locks every conversation of its player, in the same statement,
        // so the id order holds for those too.
        let players: Vec<String> = batch
            .iter()
            .filter_map(|request| match &request.op {
                Op::ErasePlayer(player) => Some(player.0.clone()),
                _ => None,
            })
            .collect();
        if !ids.is_empty() || !players.is_empty() {
            ids.sort_unstable();
            ids.dedup();
            // Nearly every batch erases nobody: its statement keeps to the primary key.
            let sql = if players.is_empty() {
                "SELECT id FROM conversations WHERE id = ANY($1) ORDER BY id FOR NO KEY UPDATE"
            } else {
                "SELECT id FROM conversations WHERE id = ANY($1) OR player_id = ANY($2) \
                 ORDER BY id FOR NO KEY UPDATE"
            };
            let mut lock = sqlx::query(sql).bind(&ids);
            if !players.is_empty() {
                lock = lock.bind(&players);
            }
            lock.fetch_all(&mut *conn).await?;
        }
        // Then the fence row, if any write reads or raises the routing epoch: always
        // after the conversations, so fenced batches queue behind each other instead
        // of deadlocking over it.
        let fenced = batch.iter().any(|request| match &request.op {
            Op::Apply(change) => change.fence.is_some(),
            Op::RaiseEpoch(_) => true,
            _ => false,
        });
        if fenced {
            sqlx::query(&format!("{ROUTING_EPOCH_SELECT} FOR UPDATE"))
                .fetch_optional(&mut *conn)
                .await?;
        }
        lock_players(conn, batch).await?;
        for request in batch {
            let guarded = guard_all || !matches!(request.op, Op::Apply(_) | Op::Create(_));
            if guarded {
                exec(conn, "SAVEPOINT op").await?;
            }
            let mut appended = None;
            let mut wrote = false;
            let mut outcome = execute(conn, &request.op, &mut appended, &mut wrote).await;
            if !guarded {
                match &outcome {
                    Err(Fail::Retry(_)) | Ok(_) => {}
                    Err(Fail::Refused(e)) if wrote => {
                        return Err(BatchFailure::Halfway(e.to_string()))
                    }
                    Err(Fail::Refused(_)) => {}
                    Err(Fail::Broken(e)) => return Err(BatchFailure::Halfway(e.to_string())),
                    Err(Fail::ClientIdTaken) => {
                        return Err(BatchFailure::Halfway("client id taken".into()))
                    }
                }
            }
            if guarded && matches!(outcome, Err(Fail::ClientIdTaken)) {
                // Undo the half-done write (its counter bump), then answer from the
                // entry that won: the same text is a resend, other text a conflict.
                exec(conn, "ROLLBACK TO SAVEPOINT op").await?;
                appended = None;
                outcome = match &request.op {
                    Op::Apply(change) => resolve_resend(conn, change).await,
                    _ => Err(Fail::Refused(StoreError::Unavailable(
                        "client id violation outside an append".into(),
                    ))),
                };
            }
            let result = match outcome {
                Ok(output) => {
                    if guarded {
                        exec(conn, "RELEASE SAVEPOINT op").await?;
                    }
                    committed.extend(appended);
                    Ok(output)
                }
                Err(Fail::Retry(e)) => return Err(BatchFailure::Db(e)),
                Err(Fail::Refused(e) | Fail::Broken(e)) => {
                    if guarded {
                        exec(conn, "ROLLBACK TO SAVEPOINT op").await?;
                        exec(conn, "RELEASE SAVEPOINT op").await?;
                    }
                    Err(e)
                }
                Err(Fail::ClientIdTaken) => {
                    exec(conn, "ROLLBACK TO SAVEPOINT op").await?;
                    exec(conn, "RELEASE SAVEPOINT op").await?;
                    Err(StoreError::Unavailable(
                        "client id taken, yet no entry holds it".into(),
                    ))
                }
            };
            results.push(result);
        }
        exec(conn, "COMMIT").await?;
        Ok(())
    }
}

/// Why a batch's transaction did not commit.
enum BatchFailure {
    /// The batch as a whole failed: run it again if retryable, else answer every
    /// write with the error.
    Db(sqlx::Error),
    /// The connection kept from the last batch was already gone: BEGIN, the batch's
    /// first statement, failed with a connection-level error
    /// ([`is_connection_lost`]). Nothing of the batch was run, so it is run once
    /// more on a new connection.
    Stale(sqlx::Error),
    /// A write without a savepoint failed after it had written (or its statement
    /// aborted the transaction): run the batch again with savepoints. Why.
    Halfway(String),
}

impl From<sqlx::Error> for BatchFailure {
    fn from(e: sqlx::Error) -> Self {
        BatchFailure::Db(e)
    }
}

/// Opens one connection, giving up after [`CONNECT_TIMEOUT`].
async fn open_connection(options: &PgConnectOptions) -> Result<PgConnection, sqlx::Error> {
    match tokio::time::timeout(CONNECT_TIMEOUT, options.connect()).await {
        Ok(connected) => connected,
        Err(_) => Err(sqlx::Error::Io(std::io::Error::new(
            std::io::ErrorKind::TimedOut,
            format!(
                "connecting to PostgreSQL took more than {}s",
                CONNECT_TIMEOUT.as_secs()
            ),
        ))),
    }
}

/// The write connection's session settings, set on every (re)connect.
async fn configure_writer(conn: &mut PgConnection) -> Result<(), sqlx::Error> {
    // An acknowledged write must be flushed, whatever the server's default says.
    exec(conn, "SET synchronous_commit = on").await?;
    let lock_timeout = format!("SET lock_timeout = '{}ms'", LOCK_TIMEOUT.as_millis());
    exec(conn, &lock_timeout).await?;
    let idle = format!(
        "SET idle_in_transaction_session_timeout = '{}ms'",
        IDLE_IN_TRANSACTION_TIMEOUT.as_millis()
    );
    exec(conn, &idle).await
}

/// Runs one statement that returns nothing.
async fn exec(conn: &mut PgConnection, sql: &str) -> Result<(), sqlx::Error> {
    sqlx::query(sql).execute(&mut *conn).await.map(|_| ())
}

/// Performs one write. A new entry it stores is put in `appended`, with its origin,
/// for the observer. `wrote` is set once an append or creation starts writing (the
/// other writes always run in a savepoint).
async fn execute(
    conn: &mut PgConnection,
    op: &Op,
    appended: &mut Option<(StoredEntry, u64)>,
    wrote: &mut bool,
) -> Result<Output, Fail> {
    match op {
        Op::Create(new) => create_conversation(conn, new, wrote).await,
        Op::Apply(change) => apply_change(conn, change, appended, wrote).await,
        Op::PutAgent(account) => put_agent(conn, account).await,
        Op::RemoveAgent(id) => {
            keep_an_admin(conn, id).await?;
            let done = sqlx::query("DELETE FROM agents WHERE id = $1")
                .bind(&id.0)
                .execute(&mut *conn)
                .await
                .map_err(fail)?;
            Ok(Output::Removed(done.rows_affected() > 0))
        }
        Op::EndSessions(id, at) => {
            let done = sqlx::query(
                "UPDATE agents SET sessions_ended_at = GREATEST(sessions_ended_at, $1) WHERE id = $2",
            )
            .bind(to_db(*at))
            .bind(&id.0)
            .execute(&mut *conn)
            .await
            .map_err(fail)?;
            Ok(Output::Removed(done.rows_affected() > 0))
        }
        Op::Secret(name, fresh) => {
            // Get-or-create across nodes: a racing insert of the same name waits for
            // the first to commit and then does nothing; the read that follows is a
            // new statement, so it sees whichever insert won.
            sqlx::query(
                "INSERT INTO secrets (name, value, created_at) VALUES ($1, $2, $3) \
                 ON CONFLICT (name) DO NOTHING",
            )
            .bind(name)
            .bind(fresh.as_slice())
            .bind(to_db(now_ms()))
            .execute(&mut *conn)
            .await
            .map_err(fail)?;
            let value: Vec<u8> = sqlx::query_scalar("SELECT value FROM secrets WHERE name = $1")
                .bind(name)
                .fetch_one(&mut *conn)
                .await
                .map_err(fail)?;
            Ok(Output::Secret(value))
        }
        Op::MarkRead {
            conversation,
            by,
            seq,
        } => {
            let sql = if by.role == Role::Player {
                "UPDATE conversations SET player_read_seq = LEAST($2, last_public_seq) \
                 WHERE id = $1 AND player_read_seq < LEAST($2, last_public_seq)"
            } else {
                "UPDATE conversations SET staff_read_seq = LEAST($2, last_seq), staff_read_by = $3 \
                 WHERE id = $1 AND staff_read_seq < LEAST($2, last_seq)"
            };
            let mut update = sqlx::query(sql)
                .bind(conversation.to_string())
                .bind(to_db(*seq));
            // PostgreSQL wants every parameter of a statement bound, and only those.
            if by.role != Role::Player {
                update = update.bind(serde_json::to_string(by).map_err(corrupt)?);
            }
            update.execute(&mut *conn).await.map_err(fail)?;
            Ok(Output::Unit)
        }
        Op::PutCatalog(item) => {
            sqlx::query(
                "INSERT INTO catalog (kind, language, key, text) VALUES ($1, $2, $3, $4) \
                 ON CONFLICT (kind, language, key) DO UPDATE SET text = EXCLUDED.text",
            )
            .bind(tag(item.kind)?)
            .bind(&item.language)
            .bind(&item.key)
            .bind(&item.text)
            .execute(&mut *conn)
            .await
            .map_err(fail)?;
            Ok(Output::Unit)
        }
        Op::RemoveCatalog(kind, language, key) => {
            let done =
                sqlx::query("DELETE FROM catalog WHERE kind = $1 AND language = $2 AND key = $3")
                    .bind(tag(*kind)?)
                    .bind(language)
                    .bind(key)
                    .execute(&mut *conn)
                    .await
                    .map_err(fail)?;
            Ok(Output::Removed(done.rows_affected() > 0))
        }
        Op::RaiseEpoch(epoch) => {
            // The UPDATE waits for any other holder of the fence row, then raises
            // the value that holder committed.
            let recorded: Option<i64> = sqlx::query_scalar(
                "UPDATE routing_fence SET epoch = GREATEST(epoch, $1) WHERE id = 1 \
                 RETURNING epoch",
            )
            .bind(to_db(*epoch))
            .fetch_optional(&mut *conn)
            .await
            .map_err(fail)?;
            Ok(Output::Epoch(
                recorded.map(from_db).ok_or_else(missing_fence)?,
            ))
        }
        Op::Audit(record) => {
            let id: i64 = sqlx::query_scalar(
                "INSERT INTO audit_log (at, actor, action, target, detail) \
                 VALUES ($1, $2, $3, $4, $5) RETURNING id",
            )
            .bind(to_db(record.at))
            .bind(&record.actor)
            .bind(&record.action)
            .bind(&record.target)
            .bind(record.detail.to_string())
            .fetch_one(&mut *conn)
            .await
            .map_err(fail)?;
            Ok(Output::AuditId(from_db(id)))
        }
        Op::PurgeChunk {
            closed_before,
            limit,
        } => purge_chunk(conn, *closed_before, *limit).await,
        Op::PurgeAuditChunk { before, limit } => {
            let done = sqlx::query(
                "DELETE FROM audit_log WHERE id IN (SELECT id FROM audit_log WHERE at < $1 \
                 ORDER BY at, id LIMIT $2 FOR UPDATE SKIP LOCKED)",
            )
            .bind(to_db(*before))
            .bind(i64::from((*limit).clamp(1, MAX_PURGE_CHUNK)))
            .execute(&mut *conn)
            .await
            .map_err(fail)?;
            Ok(Output::Count(done.rows_affected()))
        }
        Op::ErasePlayer(player) => erase_player(conn, player).await,
        Op::Settings => {
            let value: String = sqlx::query_scalar("SHOW synchronous_commit")
                .fetch_one(&mut *conn)
                .await
                .map_err(fail)?;
            Ok(Output::Settings(vec![value]))
        }
    }
}

/// One chunk of a purge: at most `limit` closed conversations whose `closed_at` is
/// before `closed_before`, longest closed first (the index `conversations_retention`,
/// migration `0005_retention`, finds them in order without reading the others), deleted with everything keyed on them. Rows another transaction
/// holds are skipped, not waited for: a purge never stalls this node's writer behind
/// another node, and two nodes purging at once take different rows.
async fn purge_chunk(
    conn: &mut PgConnection,
    closed_before: u64,
    limit: u32,
) -> Result<Output, Fail> {
    let ids: Vec<String> = sqlx::query_scalar(
        "SELECT id FROM conversations WHERE state = $1 AND closed_at < $2 \
         ORDER BY closed_at, id LIMIT $3 FOR UPDATE SKIP LOCKED",
    )
    .bind(tag(ConversationState::Closed)?)
    .bind(to_db(closed_before))
    .bind(i64::from(limit.clamp(1, MAX_PURGE_CHUNK)))
    .fetch_all(&mut *conn)
    .await
    .map_err(fail)?;
    Ok(Output::Deleted(delete_conversations(conn, &ids).await?))
}

/// Erases a player: every conversation of theirs, unless one is open
/// ([`StoreError::Precondition`], nothing deleted). The batch locked them already
/// (with its other conversations, in id order); this takes the stronger lock a
/// delete needs, which nothing else can hold meanwhile: every other writer locks a
/// conversation row before touching anything keyed on it.
async fn erase_player(conn: &mut PgConnection, player: &PlayerId) -> Result<Output, Fail> {
    let rows = sqlx::query(
        "SELECT id, state FROM conversations WHERE player_id = $1 ORDER BY id FOR UPDATE",
    )
    .bind(&player.0)
    .fetch_all(&mut *conn)
    .await
    .map_err(fail)?;
    let mut ids = Vec::with_capacity(rows.len());
    for row in &rows {
        let state: ConversationState = untag(get(row, "state")?)?;
        if state != ConversationState::Closed {
            return Err(StoreError::Precondition.into());
        }
        ids.push(get::<String>(row, "id")?);
    }
    Ok(Output::Deleted(delete_conversations(conn, &ids).await?))
}

/// Deletes these conversations and every row keyed on them: entries, lifecycle
/// events, hand-offs (first: they reference the conversation), then the
/// conversations themselves, with the player card and rating they hold.
async fn delete_conversations(conn: &mut PgConnection, ids: &[String]) -> Result<Deleted, Fail> {
    if ids.is_empty() {
        return Ok(Deleted::default());
    }
    let entries = delete_keyed(
        conn,
        "DELETE FROM entries WHERE conversation_id = ANY($1)",
        ids,
    )
    .await?;
    let events = delete_keyed(
        conn,
        "DELETE FROM lifecycle_events WHERE conversation_id = ANY($1)",
        ids,
    )
    .await?;
    let handoffs = delete_keyed(
        conn,
        "DELETE FROM handoffs WHERE conversation_id = ANY($1)",
        ids,
    )
    .await?;
    let conversations =
        delete_keyed(conn, "DELETE FROM conversations WHERE id = ANY($1)", ids).await?;
    Ok(Deleted {
        conversations,
        entries,
        events,
        handoffs,
    })
}

/// Runs `delete`, whose `$1` is the array of `ids`; the number of rows deleted.
async fn delete_keyed(conn: &mut PgConnection, delete: &str, ids: &[String]) -> Result<u64, Fail> {
    let done = sqlx::query(delete)
        .bind(ids)
        .execute(&mut *conn)
        .await
        .map_err(fail)?;
    Ok(done.rows_affected())
}

/// Inserts a conversation and its `queued` or `offline` event.
async fn create_conversation(
    conn: &mut PgConnection,
    new: &NewConversation,
    wrote: &mut bool,
) -> Result<Output, Fail> {
    let kind = match new.state {
        ConversationState::Queued => LifecycleKind::Queued,
        ConversationState::Offline => LifecycleKind::Offline,
        // A conversation is born waiting; owning or closing it are changes with
        // their own events, which a creation would skip.
        ConversationState::Active | ConversationState::Closed => {
            return Err(StoreError::Precondition.into())
        }
    };
    if let Some(limit) = new.open_limit {
        // The batch holds this player's advisory lock (see `lock_players`): a
        // creation for them on another node waits for this transaction, and this
        // read (a new statement) sees what the one before committed.
        let open: Vec<String> = sqlx::query_scalar(
            "SELECT department FROM conversations WHERE player_id = $1 AND state <> $2",
        )
        .bind(&new.player.id.0)
        .bind(tag(ConversationState::Closed)?)
        .fetch_all(&mut *conn)
        .await
        .map_err(fail)?;
        if player_busy(&open, new, limit) {
            return Err(StoreError::PlayerBusy.into());
        }
    }
    let id = new.id.to_string();
    let card = serde_json::to_string(&new.player).map_err(corrupt)?;
    // Even a refused insert (a taken id) aborts PostgreSQL's transaction.
    *wrote = true;
    let inserted = sqlx::query(
        "INSERT INTO conversations (id, player_id, player_card, department, language, state, \
         last_seq, last_public_seq, created_at) VALUES ($1, $2, $3, $4, $5, $6, 0, 0, $7)",
    )
    .bind(&id)
    .bind(&new.player.id.0)
    .bind(card)
    .bind(&new.department)
    .bind(&new.language)
    .bind(tag(new.state)?)
    .bind(to_db(new.created_at))
    .execute(&mut *conn)
    .await;
    match inserted {
        Ok(_) => {}
        // Also when another node created the same id first: it waited for that
        // node's commit, then found the key taken.
        Err(sqlx::Error::Database(e)) if e.is_unique_violation() => {
            return Err(StoreError::Conflict.into())
        }
        Err(e) => return Err(fail(e)),
    }
    let event = LifecycleEvent {
        kind,
        agent: None,
        detail: serde_json::json!({
            "department": new.department,
            "language": new.language,
        }),
        at: new.created_at,
    };
    insert_event(conn, &id, &event).await?;
    Ok(Output::Unit)
}

/// Applies one [`Change`]: reads and checks everything first, then writes (see
/// [`Writer::run_batch`] for why the order matters). The batch holds the
/// conversation's row lock already, so every statement here sees what other nodes
/// committed before it.
async fn apply_change(
    conn: &mut PgConnection,
    change: &Change,
    appended: &mut Option<(StoredEntry, u64)>,
    wrote: &mut bool,
) -> Result<Output, Fail> {
    let id = change.conversation.to_string();
    let (sender_id, client_id) = match &change.entry {
        Some(NewEntry {
            sender,
            client_id: Some(client_id),
            ..
        }) => (Some(sender.id.as_str()), Some(client_id.as_str())),
        _ => (None, None),
    };
    // One round trip reads the conversation, locked (the checks below stay true
    // until this transaction commits), and for an entry with a client id the entry
    // already stored under that id, if any.
    let row = sqlx::query(&format!(
        "SELECT c.state, c.agent_id, c.last_seq, c.last_public_seq, c.closed_at, \
         c.close_reason, c.rating, c.rating_comment, c.department, {DUP_COLUMNS} \
         FROM conversations c LEFT JOIN entries e ON e.conversation_id = c.id \
         AND e.sender_id = $2 AND e.client_id = $3 \
         WHERE c.id = $1 FOR NO KEY UPDATE OF c"
    ))
    .bind(&id)
    .bind(sender_id)
    .bind(client_id)
    .fetch_optional(&mut *conn)
    .await
    .map_err(fail)?;
    let Some(row) = row else {
        return Err(StoreError::NotFound.into());
    };

    // A resend is answered before anything else is looked at: the change it belongs
    // to was applied when the original was stored, and must not apply twice.
    if let Some(entry) = &change.entry {
        if get::<Option<i64>>(&row, "seq")?.is_some() {
            return resend_answer(entry_from_row(&row, change.conversation)?, entry);
        }
    }

    let mut state: ConversationState = untag(get(&row, "state")?)?;
    let mut agent: Option<String> = get(&row, "agent_id")?;
    let last_seq = from_db(get(&row, "last_seq")?);
    let last_public_seq = from_db(get(&row, "last_public_seq")?);
    let mut closed_at: Option<i64> = get(&row, "closed_at")?;
    let mut close_reason: Option<String> = get(&row, "close_reason")?;
    let mut rating: Option<i32> = get(&row, "rating")?;
    let mut rating_comment: Option<String> = get(&row, "rating_comment")?;
    let mut department: String = get(&row, "department")?;

    // Every check before the first write: a refused change writes nothing.
    if let Some(expect) = &change.expect {
        if expect.state != state || expect.agent.as_ref().map(|a| a.0.as_str()) != agent.as_deref()
        {
            return Err(StoreError::Precondition.into());
        }
    }
    if let Some(open) = &change.open {
        if !open.admits(state, agent.as_deref()) {
            return Err(StoreError::Precondition.into());
        }
    }
    if let Some((score, _)) = &change.rating {
        if rating.is_some() || !(1..=5).contains(score) {
            return Err(StoreError::Precondition.into());
        }
    }
    let raise_epoch = match &change.fence {
        Some(fence) => check_fence(conn, &id, fence).await?,
        None => None,
    };

    if let Some((score, comment)) = &change.rating {
        rating = Some(i32::from(*score));
        rating_comment.clone_from(comment);
    }
    if let Some(set) = &change.set {
        if set.state == ConversationState::Closed {
            if state != ConversationState::Closed {
                closed_at = Some(to_db(now_ms()));
                close_reason.clone_from(&set.close_reason);
            } else if set.close_reason.is_some() {
                close_reason.clone_from(&set.close_reason);
            }
        } else {
            closed_at = None;
            close_reason = None;
        }
        state = set.state;
        agent = set.agent.as_ref().map(|a| a.0.clone());
        if let Some(moved) = &set.department {
            department.clone_from(moved);
        }
    }

    *wrote = true;
    if let Some(epoch) = raise_epoch {
        sqlx::query("UPDATE routing_fence SET epoch = $1 WHERE id = 1")
            .bind(epoch)
            .execute(&mut *conn)
            .await
            .map_err(fail)?;
    }

    let mut outcome = Applied::default();
    if change.set.is_some() || change.entry.is_some() || change.rating.is_some() {
        let step = i64::from(change.entry.is_some());
        let public = change
            .entry
            .as_ref()
            .is_some_and(|e| e.kind != MessageKind::Note);
        // The counter moves in the database, not from the value read: the number
        // handed out is the one the row holds after this UPDATE. With an entry, the
        // entry is inserted by the same statement, numbered from that value.
        let bump = "UPDATE conversations SET last_seq = last_seq + $2, \
             last_public_seq = CASE WHEN $3 THEN last_seq + $2 ELSE last_public_seq END, \
             state = $4, agent_id = $5, closed_at = $6, close_reason = $7, rating = $8, \
             rating_comment = $9, department = $10 WHERE id = $1 RETURNING last_seq";
        let sql = if change.entry.is_some() {
            format!(
                "WITH bumped AS ({bump}) \
                 INSERT INTO entries (conversation_id, seq, prev_public, kind, sender_role, \
                 sender_id, sender_name, body, client_id, event, at) \
                 SELECT $1, last_seq, $11, $12, $13, $14, $15, $16, $17, $18, $19 FROM bumped \
                 RETURNING seq AS last_seq"
            )
        } else {
            bump.to_owned()
        };
        let at = now_ms();
        let mut query = sqlx::query(&sql)
            .bind(&id)
            .bind(step)
            .bind(public)
            .bind(tag(state)?)
            .bind(agent)
            .bind(closed_at)
            .bind(close_reason)
            .bind(rating)
            .bind(rating_comment)
            .bind(department);
        if let Some(entry) = &change.entry {
            query = query
                .bind(to_db(last_public_seq))
                .bind(tag(entry.kind)?)
                .bind(tag(entry.sender.role)?)
                .bind(&entry.sender.id)
                .bind(&entry.sender.name)
                .bind(&entry.text)
                .bind(&entry.client_id)
                .bind(&entry.event)
                .bind(to_db(at));
        }
        let bumped = match query.fetch_one(&mut *conn).await {
            Ok(row) => row,
            Err(sqlx::Error::Database(e))
                if e.is_unique_violation() && e.constraint() == Some("entries_client_id") =>
            {
                return Err(Fail::ClientIdTaken)
            }
            Err(e) => return Err(fail(e)),
        };
        let seq = from_db(get(&bumped, "last_seq")?);
        // Cannot happen while the row is locked; refuse rather than keep an entry
        // whose `prev_public` would be wrong.
        if seq != last_seq + from_db(step) {
            return Err(StoreError::Unavailable(format!(
                "conversation {id} moved under its row lock: read {last_seq}, now {seq}"
            ))
            .into());
        }
        if let Some(entry) = &change.entry {
            let stored = entry.stored(change.conversation, seq, last_public_seq, at);
            *appended = Some((stored.clone(), entry.origin));
            outcome.appended = Some(Appended {
                entry: stored,
                duplicate: false,
            });
        }
    }
    for event in &change.events {
        insert_event(conn, &id, event).await?;
    }
    if let Some(handoff) = &change.handoff {
        sqlx::query(
            "INSERT INTO handoffs (conversation_id, from_agent, to_target, note, outcome, at) \
             VALUES ($1, $2, $3, $4, $5, $6)",
        )
        .bind(&id)
        .bind(&handoff.from.0)
        .bind(&handoff.to)
        .bind(&handoff.note)
        .bind(&handoff.outcome)
        .bind(to_db(handoff.at))
        .execute(&mut *conn)
        .await
        .map_err(fail)?;
    }
    Ok(Output::Applied(outcome))
}

/// Checks a change's [`Fence`] (after its `expect`): the epoch first
/// ([`StoreError::Fenced`]), then the agent's capacity
/// ([`StoreError::Precondition`]). Reads only; returns the epoch to record when it
/// is higher than the one recorded, for the change's writes to record.
///
/// The fence row is read `FOR UPDATE` (the batch locked it already, after its
/// conversations; this only makes sure): it holds the lock until the batch commits,
/// so every other node's fenced change waits, then sees this one's epoch. The
/// capacity count is a new statement, run under that lock: it sees every fenced
/// change committed before, and none can commit until this one has.
async fn check_fence(
    conn: &mut PgConnection,
    id: &str,
    fence: &Fence,
) -> Result<Option<i64>, Fail> {
    let epoch = to_db(fence.epoch);
    let recorded: Option<i64> = sqlx::query_scalar(&format!("{ROUTING_EPOCH_SELECT} FOR UPDATE"))
        .fetch_optional(&mut *conn)
        .await
        .map_err(fail)?;
    let recorded = recorded.ok_or_else(missing_fence)?;
    if epoch < recorded {
        return Err(StoreError::Fenced.into());
    }
    if let Some(agent) = &fence.capacity_of {
        let row = sqlx::query(
            "SELECT a.capacity, (SELECT COUNT(*) FROM conversations c \
             WHERE c.agent_id = a.id AND c.state = $1 AND c.id <> $2) AS owned \
             FROM agents a WHERE a.id = $3",
        )
        .bind(tag(ConversationState::Active)?)
        .bind(id)
        .bind(&agent.0)
        .fetch_optional(&mut *conn)
        .await
        .map_err(fail)?;
        let Some(row) = row else {
            return Err(StoreError::Precondition.into());
        };
        let capacity: i64 = get(&row, "capacity")?;
        let owned: i64 = get(&row, "owned")?;
        if owned >= capacity {
            return Err(StoreError::Precondition.into());
        }
    }
    Ok((epoch > recorded).then_some(epoch))
}

/// The fence row is missing: the schema was changed by something else.
fn missing_fence() -> StoreError {
    corrupt("the routing_fence row is missing")
}

/// After an insert lost the race for its client id (the savepoint is rolled back):
/// the entry that won decides. Nothing else of the change is applied, as for any
/// resend.
async fn resolve_resend(conn: &mut PgConnection, change: &Change) -> Result<Output, Fail> {
    let Some(entry) = &change.entry else {
        return Err(StoreError::Unavailable("client id violation without an entry".into()).into());
    };
    match stored_under_client_id(conn, change.conversation, entry).await? {
        Some(original) => resend_answer(original, entry),
        None => Err(Fail::ClientIdTaken),
    }
}

/// The entry stored under `entry`'s sender and client id in this conversation, if
/// any (none for entries without a client id).
async fn stored_under_client_id(
    conn: &mut PgConnection,
    conversation: ConversationId,
    entry: &NewEntry,
) -> Result<Option<StoredEntry>, Fail> {
    let Some(client_id) = &entry.client_id else {
        return Ok(None);
    };
    let row = sqlx::query(&format!(
        "SELECT {ENTRY_COLUMNS} FROM entries \
         WHERE conversation_id = $1 AND sender_id = $2 AND client_id = $3"
    ))
    .bind(conversation.to_string())
    .bind(&entry.sender.id)
    .bind(client_id)
    .fetch_optional(&mut *conn)
    .await
    .map_err(fail)?;
    Ok(row
        .as_ref()
        .map(|row| entry_from_row(row, conversation))
        .transpose()?)
}

/// The answer to an entry whose client id is stored already: the original, marked
/// duplicate, when the text is the same; `Conflict` when it is not.
fn resend_answer(original: StoredEntry, entry: &NewEntry) -> Result<Output, Fail> {
    if original.text != entry.text {
        return Err(StoreError::Conflict.into());
    }
    Ok(Output::Applied(Applied {
        appended: Some(Appended {
            entry: original,
            duplicate: true,
        }),
    }))
}

/// Inserts one lifecycle event.
async fn insert_event(
    conn: &mut PgConnection,
    id: &str,
    event: &LifecycleEvent,
) -> Result<(), Fail> {
    sqlx::query(
        "INSERT INTO lifecycle_events (conversation_id, kind, agent_id, detail, at) \
         VALUES ($1, $2, $3, $4, $5)",
    )
    .bind(id)
    .bind(tag(event.kind)?)
    .bind(event.agent.as_ref().map(|a| a.0.as_str()))
    .bind(event.detail.to_string())
    .bind(to_db(event.at))
    .execute(&mut *conn)
    .await
    .map_err(fail)?;
    Ok(())
}

/// Creates or replaces an account.
async fn put_agent(conn: &mut PgConnection, account: &AgentAccount) -> Result<Output, Fail> {
    if account.role != Role::Admin {
        keep_an_admin(conn, &account.id).await?;
    }
    sqlx::query(
        "INSERT INTO agents (id, name, password_hash, role, languages, departments, capacity, \
         created_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8) \
         ON CONFLICT (id) DO UPDATE SET name = EXCLUDED.name, \
         password_hash = EXCLUDED.password_hash, role = EXCLUDED.role, \
         languages = EXCLUDED.languages, departments = EXCLUDED.departments, \
         capacity = EXCLUDED.capacity, created_at = EXCLUDED.created_at",
    )
    .bind(&account.id.0)
    .bind(&account.name)
    .bind(&account.password_hash)
    .bind(tag(account.role)?)
    .bind(serde_json::to_string(&account.languages).map_err(corrupt)?)
    .bind(serde_json::to_string(&account.departments).map_err(corrupt)?)
    .bind(i64::from(account.capacity))
    .bind(to_db(account.created_at))
    .execute(&mut *conn)
    .await
    .map_err(fail)?;
    Ok(Output::Unit)
}

/// Refuses, with [`StoreError::LastAdmin`], to take the admin role from `id` when
/// no other account has it. Writers of accounts on every node first take one
/// advisory lock, held to the end of their transaction, so the check below (a new
/// statement, which sees what the previous holder committed) and the write after
/// it cannot interleave with another node's: two admins removing each other at
/// once leave one of them.
async fn keep_an_admin(conn: &mut PgConnection, id: &AgentId) -> Result<(), Fail> {
    sqlx::query("SELECT pg_advisory_xact_lock($1)")
        .bind(ACCOUNTS_LOCK)
        .execute(&mut *conn)
        .await
        .map_err(fail)?;
    let last: bool = sqlx::query_scalar(
        "SELECT EXISTS (SELECT 1 FROM agents WHERE id = $2 AND role = $1) \
         AND NOT EXISTS (SELECT 1 FROM agents WHERE role = $1 AND id <> $2)",
    )
    .bind(tag(Role::Admin)?)
    .bind(&id.0)
    .fetch_one(&mut *conn)
    .await
    .map_err(fail)?;
    if last {
        Err(Fail::Refused(StoreError::LastAdmin))
    } else {
        Ok(())
    }
}

/// Takes, for each player whose conversation the batch creates with an
/// [`NewConversation::open_limit`], that player's advisory lock (transaction-scoped,
/// keyed by [`PLAYER_LOCKS`] and a hash of the id; players whose ids collide share
/// one), so creations for one player take turns across nodes. The locks are taken
/// in the order of their keys, not of the ids: two batches then never wait for each
/// other, even when different players' keys collide. One statement: the subquery's
/// `ORDER BY` keeps it from being merged into the outer query, so the outer query
/// takes the locks one row at a time in that order.
async fn lock_players(conn: &mut PgConnection, batch: &[Request]) -> Result<(), sqlx::Error> {
    let players: Vec<&str> = batch
        .iter()
        .filter_map(|request| match &request.op {
            Op::Create(new) if new.open_limit.is_some() => Some(new.player.id.0.as_str()),
            _ => None,
        })
        .collect();
    if players.is_empty() {
        return Ok(());
    }
    sqlx::query(
        "SELECT pg_advisory_xact_lock($1, key) FROM \
         (SELECT DISTINCT hashtext(player) AS key FROM unnest($2::text[]) AS player \
          ORDER BY key) AS keys",
    )
    .bind(PLAYER_LOCKS)
    .bind(&players[..])
    .execute(&mut *conn)
    .await?;
    Ok(())
}

/// The first key of the players' advisory locks (two 32-bit keys, a space apart
/// from single 64-bit keys such as [`ACCOUNTS_LOCK`]): the bytes of "pbpl".
const PLAYER_LOCKS: i32 = i32::from_be_bytes(*b"pbpl");

/// The advisory lock (transaction-scoped) that writers taking the admin role from
/// an account hold: the bytes of "pb-accts". Migrations use sqlx's own key.
const ACCOUNTS_LOCK: i64 = i64::from_be_bytes(*b"pb-accts");

/// The columns of a [`ConversationRecord`]; `first_seq` is NULL when no entry is stored.
const CONVERSATION_SELECT: &str = "SELECT c.id, c.player_id, c.player_card, c.department, \
     c.language, c.state, c.agent_id, c.last_seq, c.last_public_seq, c.created_at, \
     c.closed_at, c.close_reason, c.rating, c.rating_comment, \
     c.player_read_seq, c.staff_read_seq, c.staff_read_by, \
     (SELECT MIN(e.seq) FROM entries e WHERE e.conversation_id = c.id) AS first_seq \
     FROM conversations c";

/// The columns of a [`StoredEntry`], as [`entry_from_row`] reads them.
const ENTRY_COLUMNS: &str =
    "seq, prev_public, kind, sender_role, sender_id, sender_name, body, client_id, event, at";

/// [`ENTRY_COLUMNS`] of the entry `e` joined to a conversation's row.
const DUP_COLUMNS: &str = "e.seq, e.prev_public, e.kind, e.sender_role, e.sender_id, \
     e.sender_name, e.body, e.client_id, e.event, e.at";

/// The highest routing epoch recorded, from the one row of `routing_fence`.
const ROUTING_EPOCH_SELECT: &str = "SELECT epoch FROM routing_fence WHERE id = 1";

/// The columns of an [`AgentAccount`].
const AGENT_SELECT: &str = "SELECT id, name, password_hash, role, languages, departments, \
     capacity, created_at, sessions_ended_at FROM agents";

/// Decodes rows of (conversation_id, and the columns [`event_from_row`] reads).
fn recorded_events(rows: &[PgRow]) -> Result<Vec<RecordedEvent>> {
    rows.iter()
        .map(|row| {
            let conversation: String = get(row, "conversation_id")?;
            Ok(RecordedEvent {
                conversation: conversation.parse().map_err(corrupt)?,
                event: event_from_row(row)?,
            })
        })
        .collect()
}

/// Decodes a row of [`CONVERSATION_SELECT`].
fn conversation_from_row(row: &PgRow) -> Result<ConversationRecord> {
    let id: String = get(row, "id")?;
    let card: String = get(row, "player_card")?;
    let last_seq = from_db(get(row, "last_seq")?);
    let rating: Option<i32> = get(row, "rating")?;
    Ok(ConversationRecord {
        summary: ConversationSummary {
            id: id.parse().map_err(corrupt)?,
            state: untag(get(row, "state")?)?,
            department: get(row, "department")?,
            language: get(row, "language")?,
            player: PlayerId(get(row, "player_id")?),
            agent: get::<Option<String>>(row, "agent_id")?.map(AgentId),
            last_seq,
            last_public_seq: from_db(get(row, "last_public_seq")?),
            created_at: from_db(get(row, "created_at")?),
            closed_at: get::<Option<i64>>(row, "closed_at")?.map(from_db),
            rating: rating
                .map(|r| u8::try_from(r).map_err(corrupt))
                .transpose()?,
        },
        player: serde_json::from_str::<PlayerCard>(&card).map_err(corrupt)?,
        first_seq: get::<Option<i64>>(row, "first_seq")?.map_or(last_seq + 1, from_db),
        close_reason: get(row, "close_reason")?,
        rating_comment: get(row, "rating_comment")?,
        read: read_marks(
            get(row, "player_read_seq")?,
            get(row, "staff_read_seq")?,
            get(row, "staff_read_by")?,
        )?,
    })
}

/// Decodes a row of [`ENTRY_COLUMNS`].
fn entry_from_row(row: &PgRow, conversation: ConversationId) -> Result<StoredEntry> {
    Ok(StoredEntry {
        conversation,
        seq: from_db(get(row, "seq")?),
        prev_public: from_db(get(row, "prev_public")?),
        kind: untag(get(row, "kind")?)?,
        sender: Participant {
            role: untag(get(row, "sender_role")?)?,
            id: get(row, "sender_id")?,
            name: get(row, "sender_name")?,
        },
        text: get(row, "body")?,
        client_id: get(row, "client_id")?,
        event: get(row, "event")?,
        at: from_db(get(row, "at")?),
    })
}

/// Decodes a row of [`AGENT_SELECT`].
fn agent_from_row(row: &PgRow) -> Result<AgentAccount> {
    let languages: String = get(row, "languages")?;
    let departments: String = get(row, "departments")?;
    let capacity: i64 = get(row, "capacity")?;
    Ok(AgentAccount {
        id: AgentId(get(row, "id")?),
        name: get(row, "name")?,
        password_hash: get(row, "password_hash")?,
        role: untag(get(row, "role")?)?,
        languages: serde_json::from_str(&languages).map_err(corrupt)?,
        departments: serde_json::from_str(&departments).map_err(corrupt)?,
        capacity: u32::try_from(capacity).map_err(corrupt)?,
        created_at: from_db(get(row, "created_at")?),
        sessions_ended_at: from_db(get(row, "sessions_ended_at")?),
    })
}

/// One column of a row.
fn get<'r, T>(row: &'r PgRow, column: &str) -> Result<T>
where
    T: sqlx::Decode<'r, Postgres> + sqlx::Type<Postgres>,
{
    row.try_get(column).map_err(db)
}

/// Decodes an audit record.
fn audit_from_row(row: &PgRow) -> Result<AuditRecord> {
    let detail: String = get(row, "detail")?;
    Ok(AuditRecord {
        id: from_db(get(row, "id")?),
        record: NewAuditRecord {
            at: from_db(get(row, "at")?),
            actor: get(row, "actor")?,
            action: get(row, "action")?,
            target: get(row, "target")?,
            detail: serde_json::from_str(&detail).map_err(corrupt)?,
        },
    })
}

/// A `lifecycle_events` row (`kind`, `agent_id`, `detail`, `at`) as an event.
fn event_from_row(row: &PgRow) -> Result<LifecycleEvent> {
    let detail: String = get(row, "detail")?;
    Ok(LifecycleEvent {
        kind: untag(get(row, "kind")?)?,
        agent: get::<Option<String>>(row, "agent_id")?.map(AgentId),
        detail: serde_json::from_str(&detail).map_err(corrupt)?,
        at: from_db(get(row, "at")?),
    })
}
