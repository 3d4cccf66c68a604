//! The embedded SQLite backend: one database file, one writer task that owns the only
//! write connection and group-commits every change, and a small read-only pool beside
//! it (WAL lets readers run while the writer writes).
//!
//! It owns the SQL, the schema (`migrations/sqlite`, applied in order on open, so an
//! older file is brought up to date) and the writer's batching. What the rows mean,
//! and what a [`Change`] does, is the [`Store`] contract in the crate root; who may
//! write what is the desk's business.
//!
//! The routing fence is the one row of `routing_fence` (migration
//! `0003_routing_fence`), holding the highest routing epoch recorded. The single
//! writer serialises fenced changes and `raise_routing_epoch` by itself: a fenced
//! change reads the row after its `expect` check, fails `Fenced` on a lower epoch,
//! checks the agent's capacity, then writes its epoch, all inside its own savepoint,
//! so a refused one leaves the rest of its batch alone.

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
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteConnection, SqliteExecutor, SqliteJournalMode, SqlitePool,
    SqlitePoolOptions, SqliteRow, SqliteSynchronous,
};
use sqlx::{ConnectOptions, Connection, QueryBuilder, Row, Sqlite, Transaction};
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;
use tokio::sync::mpsc;
use tracing::Instrument;

/// The schema, embedded at build time from `migrations/sqlite`.
static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations/sqlite");

/// How long a connection waits for a lock before failing. Only the writer takes write
/// locks, so this covers checkpoints and a second process opening the file by mistake.
const BUSY_TIMEOUT: Duration = Duration::from_secs(5);

/// Tuning for a [`SqliteStore`]. The defaults suit one node serving thousands of
/// concurrent conversations.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SqliteOptions {
    /// Pending writes the queue holds before callers get [`StoreError::Overloaded`]
    /// (default 8192). Bounded so that a slow disk pushes back on clients instead of
    /// growing memory. Values below 1 count as 1.
    pub write_queue: usize,
    /// Most writes committed in one transaction (default 512). Bounds how long one
    /// commit holds its callers and how much one failed commit takes down with it.
    /// Values below 1 count as 1.
    pub max_batch: usize,
    /// Read-only connections beside the writer (default 4). Values below 1 count as 1.
    pub read_connections: u32,
    /// How often a connection of its own copies the write-ahead log into the
    /// database file and flushes it (a passive checkpoint, which never blocks the
    /// writer), when the writer has committed since the last one (default 20 ms);
    /// `None` leaves it all to the writer's own checkpoint. Copying often keeps
    /// what the writer's own checkpoint finds left to copy and flush small, so it
    /// holds up the commits queued behind it for less.
    pub checkpoint_every: Option<Duration>,
    /// Pages of log after which the writer checkpoints on its own, in its commit
    /// path, which is what lets the log start over from its beginning (default
    /// 2,000, about 8 MiB); it also bounds the log when the background checkpoint
    /// falls behind or is switched off. Values below 1 count as 1, values above
    /// `i32::MAX` (SQLite's own bound) as `i32::MAX`.
    pub autocheckpoint_pages: u32,
}

impl Default for SqliteOptions {
    fn default() -> Self {
        Self {
            write_queue: 8192,
            max_batch: 512,
            read_connections: 4,
            checkpoint_every: Some(Duration::from_millis(20)),
            autocheckpoint_pages: 2_000,
        }
    }
}

/// The SQLite [`Store`]. Open it with [`SqliteStore::open`].
///
/// Every write (`create_conversation`, `apply`, `put_agent`, `remove_agent`,
/// `put_catalog`, `remove_catalog`, `secret`, `raise_routing_epoch`, `erase_player`,
/// and each chunk of `purge_closed`) is queued to one writer task, which commits
/// whatever is queued together in one transaction: one flush serves many callers,
/// and a write that fails (conflict, precondition, fenced, not found) leaves the
/// others alone. Reads go to a read-only pool and never wait for the writer.
///
/// Beyond the trait's contract: `create_conversation` fails with
/// [`StoreError::Conflict`] when the id exists already, and with
/// [`StoreError::Precondition`] for a state other than `Queued` or `Offline`;
/// `entries` of an unknown conversation is empty.
pub struct SqliteStore {
    /// The writer task's queue.
    queue: WriteQueue,
    /// Read-only connections.
    reads: SqlitePool,
    /// What the store and its writer task share.
    shared: Arc<Shared>,
    /// The background checkpoint task and what stops it, if there is one.
    checkpointer: std::sync::Mutex<Option<Checkpointer>>,
    /// How to open a connection to the file that may write (for the log's
    /// scrub after an erasure).
    connect: SqliteConnectOptions,
}

/// The background checkpoint task: dropping `stop` ends it.
struct Checkpointer {
    /// Closed to stop the task.
    stop: tokio::sync::oneshot::Sender<()>,
    /// The task, awaited at shutdown so its connection is closed.
    task: tokio::task::JoinHandle<()>,
}

/// State shared by the store handle and its writer task.
struct Shared {
    /// Told of every committed entry; set once, before the first write.
    observer: OnceLock<Arc<dyn CommitObserver>>,
    /// Transactions committed by the writer, for tests and metrics.
    commits: AtomicU64,
}

impl SqliteStore {
    /// Opens (creating the parent directory and the file if missing) the database at
    /// `path`, brings its schema up to date and starts the writer task.
    pub async fn open(path: &Path, options: SqliteOptions) -> Result<Arc<SqliteStore>> {
        if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
            tokio::fs::create_dir_all(parent).await.map_err(|e| {
                StoreError::Unavailable(format!("creating {}: {e}", parent.display()))
            })?;
        }
        let base = SqliteConnectOptions::new()
            .filename(path)
            .busy_timeout(BUSY_TIMEOUT)
            .foreign_keys(true);
        // Durability: WAL with synchronous=FULL fsyncs the log on every commit, so an
        // acknowledged write survives power loss, not just a process crash.
        let write_options = base
            .clone()
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Full)
            // Deleted rows are overwritten with zeros, so what a retention purge
            // or an erasure deletes cannot be read back from the file.
            .pragma("secure_delete", "on")
            .pragma(
                "wal_autocheckpoint",
                options
                    .autocheckpoint_pages
                    .clamp(1, i32::MAX.unsigned_abs())
                    .to_string(),
            );
        let mut conn = write_options.connect().await.map_err(db)?;
        MIGRATOR
            .run(&mut conn)
            .await
            .map_err(|e| StoreError::Unavailable(format!("migrating {}: {e}", path.display())))?;

        let shared = Arc::new(Shared {
            observer: OnceLock::new(),
            commits: AtomicU64::new(0),
        });
        let checkpointer = match options.checkpoint_every {
            Some(every) => {
                let conn = base.clone().connect().await.map_err(db)?;
                let (stop, stopped) = tokio::sync::oneshot::channel();
                let span = tracing::info_span!("wal_checkpoint", path = %path.display());
                let task = tokio::spawn(
                    checkpoint_loop(conn, every, shared.clone(), stopped).instrument(span),
                );
                Some(Checkpointer { stop, task })
            }
            None => None,
        };

        // Read-only: a bug in a read path cannot write behind the writer's back. The
        // journal mode is a property of the file, already WAL.
        let reads = SqlitePoolOptions::new()
            .max_connections(options.read_connections.max(1))
            .connect_with(base.clone().read_only(true))
            .await
            .map_err(db)?;

        let (tx, rx) = mpsc::channel(options.write_queue.max(1));
        let writer = Writer {
            conn,
            requests: rx,
            max_batch: options.max_batch.max(1),
            shared: shared.clone(),
            cache: ConversationCache::default(),
        };
        let span = tracing::info_span!("transcript_writer", path = %path.display());
        let handle = tokio::spawn(writer.run().instrument(span));
        Ok(Arc::new(SqliteStore {
            queue: WriteQueue::new(tx, handle),
            reads,
            shared,
            checkpointer: std::sync::Mutex::new(checkpointer),
            connect: base,
        }))
    }

    /// Empties the write-ahead log once everything in it is in the database file
    /// (a `TRUNCATE` checkpoint), so that what an erasure just deleted is not left
    /// in the log's older frames. It waits for readers and holds writers back
    /// meanwhile, up to the busy timeout: an erasure is rare, and a checkpoint
    /// that cannot finish now leaves the frames to be overwritten as the log
    /// starts over.
    async fn scrub_log(&self) {
        let outcome = async {
            let mut conn = self.connect.connect().await.map_err(db)?;
            let row: (i64, i64, i64) = sqlx::query_as("PRAGMA wal_checkpoint(TRUNCATE)")
                .fetch_one(&mut conn)
                .await
                .map_err(db)?;
            let _ = conn.close().await;
            Ok::<_, StoreError>(row.0 == 0)
        }
        .await;
        match outcome {
            Ok(true) => {}
            Ok(false) => tracing::warn!(
                "the write-ahead log could not be emptied after an erasure (the database \
                 was busy): its older frames are overwritten as the log starts over"
            ),
            Err(e) => {
                tracing::warn!(error = %e, "emptying the write-ahead log after an erasure failed")
            }
        }
    }

    /// The journal mode (`"wal"`) and `synchronous` level (2 = FULL) in force on the
    /// writer's connection, asked of that connection itself.
    pub async fn pragmas(&self) -> Result<(String, i64)> {
        match self.queue.settings().await?.as_slice() {
            [mode, sync] => Ok((
                mode.clone(),
                sync.parse()
                    .map_err(|e| corrupt(format!("synchronous: {e}")))?,
            )),
            other => Err(corrupt(format!("pragmas: {other:?}"))),
        }
    }

    /// Transactions the writer has committed since the store was opened.
    pub fn commits(&self) -> u64 {
        self.shared.commits.load(Ordering::Relaxed)
    }
}

impl SqliteStore {
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
             WHERE c.state = ? AND {filter} ORDER BY e.id"
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
impl Store for SqliteStore {
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
        let sql = format!("{CONVERSATION_SELECT} WHERE c.id = ?");
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
        let sql = format!("{CONVERSATION_SELECT} WHERE c.state <> ? ORDER BY c.created_at, c.id");
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
            "(e.kind = ? OR (e.kind IN (?, ?) AND e.at >= ?))",
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
            "e.kind IN (?, ?, ?) AND e.at >= ?",
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
        // A deferred transaction takes its snapshot at its first read: take it now.
        sqlx::query("SELECT 1 FROM conversations LIMIT 1")
            .fetch_optional(&mut *tx)
            .await
            .map_err(db)?;
        Ok(Box::new(SqliteSnapshot(tx)))
    }

    async fn recent_handle_times(&self, limit: u32) -> Result<Vec<(String, u64)>> {
        // Handle time runs from the first assignment to the close; conversations
        // that were never assigned (abandoned in the queue) have none.
        let rows = sqlx::query(
            "SELECT c.department, c.closed_at, MIN(e.at) AS assigned_at \
             FROM conversations c \
             JOIN lifecycle_events e ON e.conversation_id = c.id AND e.kind = ? \
             WHERE c.state = ? AND c.closed_at IS NOT NULL \
             GROUP BY c.id, c.department, c.closed_at \
             ORDER BY c.closed_at DESC, c.id DESC LIMIT ?",
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
                Ok((get(row, "department")?, from_db(closed_at - assigned_at)))
            })
            .collect()
    }

    async fn kpi_rows(&self, filter: KpiFilter) -> Result<Vec<KpiRow>> {
        let mut q = kpi_query::<Sqlite>(filter)?;
        let rows = q.build().fetch_all(&self.reads).await.map_err(db)?;
        rows.iter()
            .map(|row| {
                let at = |column: &str| -> Result<Option<u64>> {
                    Ok(get::<Option<i64>>(row, column)?.map(from_db))
                };
                let rating: Option<i64> = get(row, "rating")?;
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
        let sql = format!("{AGENT_SELECT} WHERE id = ?");
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
             WHERE kind = ? AND (? IS NULL OR language = ?) ORDER BY language, key",
        )
        .bind(tag(kind)?)
        .bind(language)
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
        let mut sql = audit_select::<Sqlite>(&filter);
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

    async fn purge_closed(&self, closed_before: u64, chunk: u32) -> Result<Purged> {
        self.queue.purge_closed(closed_before, chunk).await
    }

    async fn purge_audit(&self, before: u64, chunk: u32) -> Result<u64> {
        self.queue.purge_audit(before, chunk).await
    }

    async fn erase_player(&self, player: &PlayerId) -> Result<Deleted> {
        let deleted = self.queue.erase_player(player).await?;
        if deleted != Deleted::default() {
            self.scrub_log().await;
        }
        Ok(deleted)
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
        let checkpointer = self
            .checkpointer
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .take();
        if let Some(Checkpointer { stop, task }) = checkpointer {
            drop(stop);
            if let Err(e) = task.await {
                tracing::warn!(error = %e, "the checkpoint task failed");
            }
        }
        self.reads.close().await;
    }
}

/// Copies the write-ahead log into the database file every `every`, passively (it
/// takes no lock the writer waits for, and leaves frames a reader still needs), until
/// `stop` is closed; then closes its connection.
async fn checkpoint_loop(
    mut conn: SqliteConnection,
    every: Duration,
    shared: Arc<Shared>,
    mut stop: tokio::sync::oneshot::Receiver<()>,
) {
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    // Commits already copied: an idle store is not checkpointed again and again.
    let mut copied = None;
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = &mut stop => break,
        }
        let commits = shared.commits.load(Ordering::Relaxed);
        if copied == Some(commits) {
            continue;
        }
        match exec(&mut conn, "PRAGMA wal_checkpoint(PASSIVE)").await {
            Ok(()) => copied = Some(commits),
            // A busy or failed checkpoint is retried at the next tick; the writer's
            // own automatic checkpoint remains the backstop.
            Err(e) => tracing::debug!(error = %e, "passive checkpoint failed"),
        }
    }
    if let Err(e) = conn.close().await {
        tracing::debug!(error = %e, "closing the checkpoint connection failed");
    }
}

/// The writer task: owns the single write connection and commits queued writes in
/// batches. Ends when the queue is closed and drained.
struct Writer {
    /// The only connection that writes.
    conn: SqliteConnection,
    /// Queued writes.
    requests: mpsc::Receiver<Request>,
    /// Most writes per transaction.
    max_batch: usize,
    /// Observer and commit counter.
    shared: Arc<Shared>,
    /// What the writer last wrote of recently changed conversations.
    cache: ConversationCache,
}

/// The conversations this writer changed recently, as it wrote them: the one writer
/// of the file knows their rows without reading them back, so a plain append skips
/// its read. Bounded; emptied whenever a transaction does not commit as run, and by
/// purges and erasures. Anything else that changed a row behind the writer's back
/// (another process on the file) makes the append's insert fail, and the append is
/// then run again from the rows themselves.
#[derive(Default)]
struct ConversationCache {
    /// Conversation id → its row as last written.
    rows: std::collections::HashMap<String, CachedConversation>,
}

/// A read transaction on one of the read connections ([`Store::snapshot`]). Dropped
/// without a commit: sqlx rolls it back when the connection goes back to the pool.
struct SqliteSnapshot(Transaction<'static, Sqlite>);

snapshot_on_transaction!(SqliteSnapshot);

/// [`Store::entries`] on `reads`: the pool, or one snapshot's connection.
async fn read_entries<'c>(
    reads: impl SqliteExecutor<'c>,
    id: ConversationId,
    after: Seq,
    limit: u32,
    include_notes: bool,
) -> Result<Vec<StoredEntry>> {
    let mut q = QueryBuilder::<Sqlite>::new(
        "SELECT seq, prev_public, kind, sender_role, sender_id, sender_name, body, \
         client_id, event, at FROM entries WHERE conversation_id = ",
    );
    q.push_bind(id.to_string())
        .push(" AND seq > ")
        .push_bind(to_db(after));
    if !include_notes {
        q.push(" AND kind <> ").push_bind(tag(MessageKind::Note)?);
    }
    q.push(" ORDER BY seq LIMIT ").push_bind(i64::from(limit));
    let rows = q.build().fetch_all(reads).await.map_err(db)?;
    rows.iter().map(|row| entry_from_row(row, "", id)).collect()
}

/// [`Store::conversations`] on `reads`.
async fn read_conversations<'c>(
    reads: impl SqliteExecutor<'c>,
    filter: ConversationFilter,
) -> Result<Vec<ConversationRecord>> {
    let mut q = conversations_query::<Sqlite>(CONVERSATION_SELECT, filter)?;
    let rows = q.build().fetch_all(reads).await.map_err(db)?;
    rows.iter().map(conversation_from_row).collect()
}

/// [`Store::events`] on `reads`.
async fn read_events<'c>(
    reads: impl SqliteExecutor<'c>,
    id: ConversationId,
) -> Result<Vec<LifecycleEvent>> {
    let rows = sqlx::query(
        "SELECT kind, agent_id, detail, at FROM lifecycle_events \
         WHERE conversation_id = ? ORDER BY id",
    )
    .bind(id.to_string())
    .fetch_all(reads)
    .await
    .map_err(db)?;
    rows.iter().map(event_from_row).collect()
}

/// [`Store::handoffs`] on `reads`.
async fn read_handoffs<'c>(
    reads: impl SqliteExecutor<'c>,
    id: ConversationId,
) -> Result<Vec<Handoff>> {
    let rows = sqlx::query(
        "SELECT from_agent, to_target, note, outcome, at FROM handoffs \
         WHERE conversation_id = ? ORDER BY id",
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

/// The columns of a conversation that an append reads.
#[derive(Clone)]
struct CachedConversation {
    state: ConversationState,
    agent: Option<String>,
    last_seq: u64,
    last_public_seq: u64,
}

/// Most conversations the cache holds; past that it starts again empty. Chats that
/// are writing now refill it at their next message.
const CACHED_CONVERSATIONS: usize = 8192;

impl ConversationCache {
    fn get(&self, id: &str) -> Option<&CachedConversation> {
        self.rows.get(id)
    }

    fn put(&mut self, id: String, row: CachedConversation) {
        if self.rows.len() >= CACHED_CONVERSATIONS && !self.rows.contains_key(&id) {
            self.rows.clear();
        }
        self.rows.insert(id, row);
    }

    fn forget(&mut self, id: &str) {
        self.rows.remove(id);
    }

    fn clear(&mut self) {
        self.rows.clear();
    }
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
        if let Err(e) = self.conn.close().await {
            tracing::warn!(error = %e, "closing the write connection failed");
        }
        tracing::debug!("transcript writer stopped");
    }

    /// Runs every write of `batch` in one transaction, commits, tells the observer,
    /// then answers every caller. Leaves `batch` empty.
    async fn commit_batch(&mut self, batch: &mut Vec<Request>) {
        let mut results = Vec::with_capacity(batch.len());
        let mut committed = Vec::new();
        let mut outcome = self
            .run_batch(batch, &mut results, &mut committed, false)
            .await;
        if outcome.is_err() {
            // The cache holds what this transaction wrote, which is now undone.
            self.cache.clear();
        }
        if let Err(BatchFailure::Halfway(e)) = &outcome {
            // One write failed after it had written: undo the whole transaction and
            // run the batch again with a savepoint around every write, so that only
            // that write fails. Nothing was committed or answered yet.
            tracing::warn!(error = %e, writes = batch.len(), "batch run again with savepoints");
            self.rollback().await;
            results.clear();
            committed.clear();
            outcome = self
                .run_batch(batch, &mut results, &mut committed, true)
                .await;
        }
        match outcome {
            Ok(()) => {
                self.shared.commits.fetch_add(1, Ordering::Relaxed);
                tracing::trace!(
                    writes = batch.len(),
                    entries = committed.len(),
                    "batch committed"
                );
                // Observer first, answers after: by the time a sender sees its ack,
                // its entry is already on its way to every receiver.
                if !committed.is_empty() {
                    if let Some(observer) = self.shared.observer.get() {
                        observer.committed(&committed);
                    }
                }
                for (request, result) in batch.drain(..).zip(results) {
                    request.answer(result);
                }
            }
            Err(failure) => {
                self.cache.clear();
                let message = match failure {
                    BatchFailure::Failed(e) => e.to_string(),
                    BatchFailure::Halfway(message) => message,
                };
                tracing::error!(error = %message, writes = batch.len(), "batch failed");
                self.rollback().await;
                for request in batch.drain(..) {
                    request.answer(Err(StoreError::Unavailable(message.clone())));
                }
            }
        }
    }

    /// Rolls back the open transaction. It may already be gone (SQLite rolls back
    /// by itself on some I/O errors); then ROLLBACK fails and that is fine.
    async fn rollback(&mut self) {
        if let Err(e) = exec(&mut self.conn, "ROLLBACK").await {
            tracing::debug!(error = %e, "rollback after a failed batch");
        }
    }

    /// The transaction of one batch. `Err` means the batch as a whole failed and
    /// nothing of it may be acknowledged; a single write's own failure is in
    /// `results` and left nothing of itself behind.
    ///
    /// Unless `guard_all`, appends and creations, nearly every write, run without a
    /// savepoint of their own: each does all its checks (reads) before its first
    /// write, so a refused one has written nothing. That saves two round trips to
    /// the driver's thread per write. Should one fail after it started writing, the
    /// batch stops with [`BatchFailure::Halfway`] and is run again with
    /// `guard_all`, a savepoint around every write.
    async fn run_batch(
        &mut self,
        batch: &[Request],
        results: &mut Vec<Result<Output>>,
        committed: &mut Vec<(StoredEntry, u64)>,
        guard_all: bool,
    ) -> Result<(), BatchFailure> {
        // IMMEDIATE: take the write lock now, not at the first write, so a second
        // process on the same file fails here instead of halfway through.
        exec(&mut self.conn, "BEGIN IMMEDIATE").await?;
        for request in batch {
            let guarded = guard_all || !matches!(request.op, Op::Apply(_) | Op::Create(_));
            if guarded {
                exec(&mut self.conn, "SAVEPOINT op").await?;
            }
            let mut appended = None;
            let mut wrote = false;
            let result = execute(
                &mut self.conn,
                &request.op,
                &mut appended,
                &mut wrote,
                &mut self.cache,
            )
            .await;
            match (&result, guarded) {
                (Ok(_), true) => exec(&mut self.conn, "RELEASE op").await?,
                (Err(_), true) => {
                    exec(&mut self.conn, "ROLLBACK TO op").await?;
                    exec(&mut self.conn, "RELEASE op").await?;
                }
                (Err(e), false) if wrote => return Err(BatchFailure::Halfway(e.to_string())),
                (Err(_), false) | (Ok(_), false) => {}
            }
            if result.is_ok() {
                committed.extend(appended);
            }
            results.push(result);
        }
        exec(&mut self.conn, "COMMIT").await?;
        Ok(())
    }
}

/// Why a batch's transaction did not commit.
enum BatchFailure {
    /// The batch as a whole failed (BEGIN, a savepoint, COMMIT, the connection).
    Failed(StoreError),
    /// A write without a savepoint failed after it had started writing: why.
    Halfway(String),
}

impl From<sqlx::Error> for BatchFailure {
    fn from(e: sqlx::Error) -> Self {
        BatchFailure::Failed(db(e))
    }
}

/// Runs one statement that returns nothing.
async fn exec(conn: &mut SqliteConnection, sql: &str) -> Result<(), sqlx::Error> {
    sqlx::query(sql).execute(&mut *conn).await.map(|_| ())
}

/// Performs one write. A new entry it stores is put in `appended`, with its origin,
/// for the observer. `wrote` is set once an append or creation has started writing:
/// an error after that leaves part of it behind (the others run in a savepoint).
async fn execute(
    conn: &mut SqliteConnection,
    op: &Op,
    appended: &mut Option<(StoredEntry, u64)>,
    wrote: &mut bool,
    cache: &mut ConversationCache,
) -> Result<Output> {
    match op {
        Op::Create(new) => create_conversation(conn, new, wrote).await,
        Op::Apply(change) => {
            if let Some(done) = append_cached(conn, change, appended, wrote, cache).await {
                return done;
            }
            apply_change(conn, change, appended, wrote, cache).await
        }
        Op::PutAgent(account) => put_agent(conn, account).await,
        Op::RemoveAgent(id) => {
            keep_an_admin(conn, id).await?;
            let done = sqlx::query("DELETE FROM agents WHERE id = ?")
                .bind(&id.0)
                .execute(&mut *conn)
                .await
                .map_err(db)?;
            Ok(Output::Removed(done.rows_affected() > 0))
        }
        Op::EndSessions(id, at) => {
            let done = sqlx::query(
                "UPDATE agents SET sessions_ended_at = MAX(sessions_ended_at, ?) WHERE id = ?",
            )
            .bind(to_db(*at))
            .bind(&id.0)
            .execute(&mut *conn)
            .await
            .map_err(db)?;
            Ok(Output::Removed(done.rows_affected() > 0))
        }
        Op::Secret(name, fresh) => {
            // Get-or-create in one place: the writer is the only writer, and the
            // insert is a no-op when the name exists, so racing callers agree.
            sqlx::query(
                "INSERT INTO secrets (name, value, created_at) VALUES (?, ?, ?) \
                 ON CONFLICT (name) DO NOTHING",
            )
            .bind(name)
            .bind(fresh.as_slice())
            .bind(to_db(now_ms()))
            .execute(&mut *conn)
            .await
            .map_err(db)?;
            let value: Vec<u8> = sqlx::query_scalar("SELECT value FROM secrets WHERE name = ?")
                .bind(name)
                .fetch_one(&mut *conn)
                .await
                .map_err(db)?;
            Ok(Output::Secret(value))
        }
        Op::MarkRead {
            conversation,
            by,
            seq,
        } => {
            let sql = if by.role == Role::Player {
                "UPDATE conversations SET player_read_seq = MIN(?2, last_public_seq) \
                 WHERE id = ?1 AND player_read_seq < MIN(?2, last_public_seq)"
            } else {
                "UPDATE conversations SET staff_read_seq = MIN(?2, last_seq), staff_read_by = ?3 \
                 WHERE id = ?1 AND staff_read_seq < MIN(?2, last_seq)"
            };
            let mut update = sqlx::query(sql)
                .bind(conversation.to_string())
                .bind(to_db(*seq));
            if by.role != Role::Player {
                update = update.bind(serde_json::to_string(by).map_err(corrupt)?);
            }
            update.execute(&mut *conn).await.map_err(db)?;
            Ok(Output::Unit)
        }
        Op::PutCatalog(item) => {
            sqlx::query(
                "INSERT INTO catalog (kind, language, key, text) VALUES (?, ?, ?, ?) \
                 ON CONFLICT (kind, language, key) DO UPDATE SET text = excluded.text",
            )
            .bind(tag(item.kind)?)
            .bind(&item.language)
            .bind(&item.key)
            .bind(&item.text)
            .execute(&mut *conn)
            .await
            .map_err(db)?;
            Ok(Output::Unit)
        }
        Op::RemoveCatalog(kind, language, key) => {
            let done =
                sqlx::query("DELETE FROM catalog WHERE kind = ? AND language = ? AND key = ?")
                    .bind(tag(*kind)?)
                    .bind(language)
                    .bind(key)
                    .execute(&mut *conn)
                    .await
                    .map_err(db)?;
            Ok(Output::Removed(done.rows_affected() > 0))
        }
        Op::RaiseEpoch(epoch) => {
            let recorded: Option<i64> = sqlx::query_scalar(
                "UPDATE routing_fence SET epoch = MAX(epoch, ?) WHERE id = 1 RETURNING epoch",
            )
            .bind(to_db(*epoch))
            .fetch_optional(&mut *conn)
            .await
            .map_err(db)?;
            Ok(Output::Epoch(
                recorded.map(from_db).ok_or_else(missing_fence)?,
            ))
        }
        Op::Audit(record) => {
            let id: i64 = sqlx::query_scalar(
                "INSERT INTO audit_log (at, actor, action, target, detail) \
                 VALUES (?, ?, ?, ?, ?) RETURNING id",
            )
            .bind(to_db(record.at))
            .bind(&record.actor)
            .bind(&record.action)
            .bind(&record.target)
            .bind(record.detail.to_string())
            .fetch_one(&mut *conn)
            .await
            .map_err(db)?;
            Ok(Output::AuditId(from_db(id)))
        }
        Op::PurgeChunk {
            closed_before,
            limit,
        } => {
            cache.clear();
            purge_chunk(conn, *closed_before, *limit).await
        }
        Op::PurgeAuditChunk { before, limit } => {
            let done = sqlx::query(
                "DELETE FROM audit_log WHERE id IN \
                 (SELECT id FROM audit_log WHERE at < ? ORDER BY at, id LIMIT ?)",
            )
            .bind(to_db(*before))
            .bind(i64::from((*limit).clamp(1, MAX_PURGE_CHUNK)))
            .execute(&mut *conn)
            .await
            .map_err(db)?;
            Ok(Output::Count(done.rows_affected()))
        }
        Op::ErasePlayer(player) => {
            cache.clear();
            erase_player(conn, player).await
        }
        Op::Settings => {
            let mode: String = sqlx::query_scalar("PRAGMA journal_mode")
                .fetch_one(&mut *conn)
                .await
                .map_err(db)?;
            let sync: i64 = sqlx::query_scalar("PRAGMA synchronous")
                .fetch_one(&mut *conn)
                .await
                .map_err(db)?;
            Ok(Output::Settings(vec![mode, sync.to_string()]))
        }
    }
}

/// One chunk of a purge: at most `limit` closed conversations whose `closed_at` is
/// before `closed_before`, longest closed first (the index `conversations_retention`,
/// migration `0005_retention`, finds them in order without reading the others), deleted with everything keyed on them.
async fn purge_chunk(
    conn: &mut SqliteConnection,
    closed_before: u64,
    limit: u32,
) -> Result<Output> {
    let ids: Vec<String> = sqlx::query_scalar(
        "SELECT id FROM conversations WHERE state = ? AND closed_at < ? \
         ORDER BY closed_at, id LIMIT ?",
    )
    .bind(tag(ConversationState::Closed)?)
    .bind(to_db(closed_before))
    .bind(i64::from(limit.clamp(1, MAX_PURGE_CHUNK)))
    .fetch_all(&mut *conn)
    .await
    .map_err(db)?;
    Ok(Output::Deleted(delete_conversations(conn, &ids).await?))
}

/// Erases a player: every conversation of theirs, unless one is open
/// ([`StoreError::Precondition`], nothing deleted).
async fn erase_player(conn: &mut SqliteConnection, player: &PlayerId) -> Result<Output> {
    let rows = sqlx::query("SELECT id, state FROM conversations WHERE player_id = ? ORDER BY id")
        .bind(&player.0)
        .fetch_all(&mut *conn)
        .await
        .map_err(db)?;
    let mut ids = Vec::with_capacity(rows.len());
    for row in &rows {
        let state: ConversationState = untag(get(row, "state")?)?;
        if state != ConversationState::Closed {
            return Err(StoreError::Precondition);
        }
        ids.push(get::<String>(row, "id")?);
    }
    let mut deleted = Deleted::default();
    // One savepoint for the whole erasure; chunked only to bound the bound parameters.
    for part in ids.chunks(MAX_PURGE_CHUNK as usize) {
        deleted.add(delete_conversations(conn, part).await?);
    }
    Ok(Output::Deleted(deleted))
}

/// Deletes these conversations and every row keyed on them: entries, lifecycle
/// events, hand-offs (first: they reference the conversation), then the
/// conversations themselves, with the player card and rating they hold.
async fn delete_conversations(conn: &mut SqliteConnection, ids: &[String]) -> Result<Deleted> {
    if ids.is_empty() {
        return Ok(Deleted::default());
    }
    Ok(Deleted {
        entries: delete_keyed(conn, "DELETE FROM entries WHERE conversation_id", ids).await?,
        events: delete_keyed(
            conn,
            "DELETE FROM lifecycle_events WHERE conversation_id",
            ids,
        )
        .await?,
        handoffs: delete_keyed(conn, "DELETE FROM handoffs WHERE conversation_id", ids).await?,
        conversations: delete_keyed(conn, "DELETE FROM conversations WHERE id", ids).await?,
    })
}

/// Runs `delete` (ending in the column to match) for the rows whose column is one of
/// `ids`; the number of rows deleted.
async fn delete_keyed(conn: &mut SqliteConnection, delete: &str, ids: &[String]) -> Result<u64> {
    let mut q = QueryBuilder::<Sqlite>::new(delete);
    q.push(" IN (");
    let mut list = q.separated(", ");
    for id in ids {
        list.push_bind(id);
    }
    list.push_unseparated(")");
    let done = q.build().execute(&mut *conn).await.map_err(db)?;
    Ok(done.rows_affected())
}

/// Inserts a conversation and its `queued` or `offline` event, in one round trip.
async fn create_conversation(
    conn: &mut SqliteConnection,
    new: &NewConversation,
    wrote: &mut bool,
) -> Result<Output> {
    let kind = match new.state {
        ConversationState::Queued => LifecycleKind::Queued,
        ConversationState::Offline => LifecycleKind::Offline,
        // A conversation is born waiting; owning or closing it are changes with
        // their own events, which a creation would skip.
        ConversationState::Active | ConversationState::Closed => {
            return Err(StoreError::Precondition)
        }
    };
    if let Some(limit) = new.open_limit {
        // In the writer's transaction, which holds the file's write lock: no other
        // creation can come between this read and the insert.
        let open: Vec<String> = sqlx::query_scalar(OPEN_DEPARTMENTS_SQLITE)
            .bind(&new.player.id.0)
            .bind(tag(ConversationState::Closed)?)
            .fetch_all(&mut *conn)
            .await
            .map_err(db)?;
        if player_busy(&open, new, limit) {
            return Err(StoreError::PlayerBusy);
        }
    }
    let id = new.id.to_string();
    let card = serde_json::to_string(&new.player).map_err(corrupt)?;
    let event = LifecycleEvent {
        kind,
        agent: None,
        detail: serde_json::json!({
            "department": new.department,
            "language": new.language,
        }),
        at: new.created_at,
    };
    let mut writes = QueryBuilder::<Sqlite>::new(
        "INSERT INTO conversations (id, player_id, player_card, department, language, state, \
         last_seq, last_public_seq, created_at) VALUES (",
    );
    writes
        .push_bind(&id)
        .push(", ")
        .push_bind(&new.player.id.0)
        .push(", ")
        .push_bind(card)
        .push(", ")
        .push_bind(&new.department)
        .push(", ")
        .push_bind(&new.language)
        .push(", ")
        .push_bind(tag(new.state)?)
        .push(", 0, 0, ")
        .push_bind(to_db(new.created_at))
        .push("); ");
    push_event(&mut writes, &id, &event)?;
    // The conversation's insert runs first and stops the rest when it fails, so a
    // taken id has written nothing; the event's table has no unique key of its own.
    match writes.build().execute(&mut *conn).await {
        Ok(_) => Ok(Output::Unit),
        Err(sqlx::Error::Database(e)) if e.is_unique_violation() => Err(StoreError::Conflict),
        Err(e) => {
            *wrote = true;
            Err(db(e))
        }
    }
}

/// Applies one [`Change`]: reads and checks everything first, then writes it all in
/// one multi-statement round trip (see [`Writer::run_batch`] for why the order
/// matters).
async fn apply_change(
    conn: &mut SqliteConnection,
    change: &Change,
    appended: &mut Option<(StoredEntry, u64)>,
    wrote: &mut bool,
    cache: &mut ConversationCache,
) -> Result<Output> {
    let id = change.conversation.to_string();
    // One round trip reads the conversation and, for an entry with a client id, the
    // entry already stored under that id (if any).
    let (sender_id, client_id) = match &change.entry {
        Some(NewEntry {
            sender,
            client_id: Some(client_id),
            ..
        }) => (Some(sender.id.as_str()), Some(client_id.as_str())),
        _ => (None, None),
    };
    let row = sqlx::query(
        "SELECT c.state, c.agent_id, c.last_seq, c.last_public_seq, c.closed_at, \
         c.close_reason, c.rating, c.rating_comment, c.department, \
         e.seq AS dup_seq, e.prev_public AS dup_prev_public, e.kind AS dup_kind, \
         e.sender_role AS dup_sender_role, e.sender_id AS dup_sender_id, \
         e.sender_name AS dup_sender_name, e.body AS dup_body, e.client_id AS dup_client_id, \
         e.event AS dup_event, e.at AS dup_at \
         FROM conversations c \
         LEFT JOIN entries e ON e.conversation_id = c.id AND e.sender_id = ? AND e.client_id = ? \
         WHERE c.id = ?",
    )
    .bind(sender_id)
    .bind(client_id)
    .bind(&id)
    .fetch_optional(&mut *conn)
    .await
    .map_err(db)?;
    let Some(row) = row else {
        return Err(StoreError::NotFound);
    };

    // A resend is answered before anything else is looked at: the change it belongs
    // to was applied when the original was stored, and must not apply twice.
    if let Some(entry) = &change.entry {
        if get::<Option<i64>>(&row, "dup_seq")?.is_some() {
            let original = entry_from_row(&row, "dup_", change.conversation)?;
            if original.text != entry.text {
                return Err(StoreError::Conflict);
            }
            return Ok(Output::Applied(Applied {
                appended: Some(Appended {
                    entry: original,
                    duplicate: true,
                }),
            }));
        }
    }

    let mut state: ConversationState = untag(get(&row, "state")?)?;
    let mut agent: Option<String> = get(&row, "agent_id")?;
    let mut last_seq = from_db(get(&row, "last_seq")?);
    let mut last_public_seq = from_db(get(&row, "last_public_seq")?);
    let mut closed_at: Option<i64> = get(&row, "closed_at")?;
    let mut close_reason: Option<String> = get(&row, "close_reason")?;
    let mut rating: Option<i64> = get(&row, "rating")?;
    let mut rating_comment: Option<String> = get(&row, "rating_comment")?;
    let mut department: String = get(&row, "department")?;

    // Every check before the first write: a refused change writes nothing.
    if let Some(expect) = &change.expect {
        if expect.state != state || expect.agent.as_ref().map(|a| a.0.as_str()) != agent.as_deref()
        {
            return Err(StoreError::Precondition);
        }
    }
    if let Some(open) = &change.open {
        if !open.admits(state, agent.as_deref()) {
            return Err(StoreError::Precondition);
        }
    }
    if let Some((score, _)) = &change.rating {
        if rating.is_some() || !(1..=5).contains(score) {
            return Err(StoreError::Precondition);
        }
    }
    let raise_epoch = match &change.fence {
        Some(fence) => check_fence(conn, &id, fence).await?,
        None => None,
    };

    if let Some((score, comment)) = &change.rating {
        rating = Some(i64::from(*score));
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
        if let Some(d) = &set.department {
            department.clone_from(d);
        }
    }

    let cached_agent = agent.clone();
    let mut writes = QueryBuilder::<Sqlite>::new("");
    if let Some(epoch) = raise_epoch {
        writes
            .push("UPDATE routing_fence SET epoch = ")
            .push_bind(epoch)
            .push(" WHERE id = 1; ");
    }
    let mut outcome = Applied::default();
    if let Some(entry) = &change.entry {
        let stored = entry.stored(change.conversation, last_seq + 1, last_public_seq, now_ms());
        push_entry(&mut writes, &id, &stored)?;
        last_seq = stored.seq;
        if stored.is_public() {
            last_public_seq = stored.seq;
        }
        *appended = Some((stored.clone(), entry.origin));
        outcome.appended = Some(Appended {
            entry: stored,
            duplicate: false,
        });
    }
    if change.set.is_none() && change.rating.is_none() && change.entry.is_some() {
        // A plain append, nearly every write: only the counters move. Naming no
        // indexed column keeps SQLite from rewriting the conversation's index
        // entries (state, agent, closed), which it does for every indexed column a
        // SET names, changed or not.
        writes
            .push("UPDATE conversations SET last_seq = ")
            .push_bind(to_db(last_seq))
            .push(", last_public_seq = ")
            .push_bind(to_db(last_public_seq))
            .push(" WHERE id = ")
            .push_bind(id.clone())
            .push("; ");
    } else if change.set.is_some() || change.rating.is_some() {
        writes
            .push("UPDATE conversations SET state = ")
            .push_bind(tag(state)?)
            .push(", agent_id = ")
            .push_bind(agent)
            .push(", last_seq = ")
            .push_bind(to_db(last_seq))
            .push(", last_public_seq = ")
            .push_bind(to_db(last_public_seq))
            .push(", closed_at = ")
            .push_bind(closed_at)
            .push(", close_reason = ")
            .push_bind(close_reason)
            .push(", rating = ")
            .push_bind(rating)
            .push(", rating_comment = ")
            .push_bind(rating_comment)
            .push(", department = ")
            .push_bind(department)
            .push(" WHERE id = ")
            .push_bind(id.clone())
            .push("; ");
    }
    for event in &change.events {
        push_event(&mut writes, &id, event)?;
    }
    if let Some(handoff) = &change.handoff {
        writes
            .push(
                "INSERT INTO handoffs (conversation_id, from_agent, to_target, note, outcome, at) \
                 VALUES (",
            )
            .push_bind(id.clone())
            .push(", ")
            .push_bind(handoff.from.0.clone())
            .push(", ")
            .push_bind(handoff.to.clone())
            .push(", ")
            .push_bind(handoff.note.clone())
            .push(", ")
            .push_bind(handoff.outcome.clone())
            .push(", ")
            .push_bind(to_db(handoff.at))
            .push("); ");
    }
    if !writes.sql().is_empty() {
        *wrote = true;
        writes.build().execute(&mut *conn).await.map_err(db)?;
    }
    cache.put(
        id,
        CachedConversation {
            state,
            agent: cached_agent,
            last_seq,
            last_public_seq,
        },
    );
    Ok(Output::Applied(outcome))
}

/// A plain append (an entry, perhaps an `expect`, nothing else) to a conversation the
/// cache knows: checked against the cached row and written in one round trip, with
/// no read. `None` when it does not apply, or when the entry's insert was refused
/// (its client id or sequence number taken: a resend, or a row changed behind the
/// writer's back): nothing was written, and [`apply_change`] runs it from the rows.
async fn append_cached(
    conn: &mut SqliteConnection,
    change: &Change,
    appended: &mut Option<(StoredEntry, u64)>,
    wrote: &mut bool,
    cache: &mut ConversationCache,
) -> Option<Result<Output>> {
    let entry = change.entry.as_ref()?;
    if change.set.is_some()
        || change.rating.is_some()
        || change.fence.is_some()
        || !change.events.is_empty()
        || change.handoff.is_some()
    {
        return None;
    }
    let id = change.conversation.to_string();
    let row = cache.get(&id)?.clone();
    if let Some(expect) = &change.expect {
        if expect.state != row.state
            || expect.agent.as_ref().map(|a| a.0.as_str()) != row.agent.as_deref()
        {
            // Refused, unless it is a resend: that is answered from the rows.
            return None;
        }
    }
    if let Some(open) = &change.open {
        if !open.admits(row.state, row.agent.as_deref()) {
            return None;
        }
    }
    let stored = entry.stored(
        change.conversation,
        row.last_seq + 1,
        row.last_public_seq,
        now_ms(),
    );
    let last_public_seq = if stored.is_public() {
        stored.seq
    } else {
        row.last_public_seq
    };
    // The insert runs first and stops the rest when refused, leaving nothing
    // written; the update names only the counters (see `apply_change`).
    let mut writes = QueryBuilder::<Sqlite>::new("");
    if let Err(e) = push_entry(&mut writes, &id, &stored) {
        return Some(Err(e));
    }
    writes
        .push("UPDATE conversations SET last_seq = ")
        .push_bind(to_db(stored.seq))
        .push(", last_public_seq = ")
        .push_bind(to_db(last_public_seq))
        .push(" WHERE id = ")
        .push_bind(id.clone())
        .push("; ");
    match writes.build().execute(&mut *conn).await {
        Ok(_) => {}
        Err(sqlx::Error::Database(e)) if e.is_unique_violation() => {
            cache.forget(&id);
            return None;
        }
        Err(e) => {
            *wrote = true;
            return Some(Err(db(e)));
        }
    }
    cache.put(
        id,
        CachedConversation {
            last_seq: stored.seq,
            last_public_seq,
            ..row
        },
    );
    *appended = Some((stored.clone(), entry.origin));
    Some(Ok(Output::Applied(Applied {
        appended: Some(Appended {
            entry: stored,
            duplicate: false,
        }),
    })))
}

/// Checks a change's [`Fence`] (after its `expect`): the epoch first
/// ([`StoreError::Fenced`]), then the agent's capacity
/// ([`StoreError::Precondition`]). Reads only; returns the epoch to record when it
/// is higher than the one recorded, for the change's writes to record.
async fn check_fence(conn: &mut SqliteConnection, id: &str, fence: &Fence) -> Result<Option<i64>> {
    let epoch = to_db(fence.epoch);
    let recorded: Option<i64> = sqlx::query_scalar(ROUTING_EPOCH_SELECT)
        .fetch_optional(&mut *conn)
        .await
        .map_err(db)?;
    let recorded = recorded.ok_or_else(missing_fence)?;
    if epoch < recorded {
        return Err(StoreError::Fenced);
    }
    if let Some(agent) = &fence.capacity_of {
        let row = sqlx::query(
            "SELECT a.capacity, (SELECT COUNT(*) FROM conversations c \
             WHERE c.agent_id = a.id AND c.state = ? AND c.id <> ?) AS owned \
             FROM agents a WHERE a.id = ?",
        )
        .bind(tag(ConversationState::Active)?)
        .bind(id)
        .bind(&agent.0)
        .fetch_optional(&mut *conn)
        .await
        .map_err(db)?;
        let Some(row) = row else {
            return Err(StoreError::Precondition);
        };
        let capacity: i64 = get(&row, "capacity")?;
        let owned: i64 = get(&row, "owned")?;
        if owned >= capacity {
            return Err(StoreError::Precondition);
        }
    }
    Ok((epoch > recorded).then_some(epoch))
}

/// The fence row is missing: the schema was changed by something else.
fn missing_fence() -> StoreError {
    corrupt("the routing_fence row is missing")
}

/// Adds the insert of one transcript entry to `writes`.
fn push_entry(writes: &mut QueryBuilder<'_, Sqlite>, id: &str, entry: &StoredEntry) -> Result<()> {
    writes
        .push(
            "INSERT INTO entries (conversation_id, seq, prev_public, kind, sender_role, \
             sender_id, sender_name, body, client_id, event, at) VALUES (",
        )
        .push_bind(id.to_owned())
        .push(", ")
        .push_bind(to_db(entry.seq))
        .push(", ")
        .push_bind(to_db(entry.prev_public))
        .push(", ")
        .push_bind(tag(entry.kind)?)
        .push(", ")
        .push_bind(tag(entry.sender.role)?)
        .push(", ")
        .push_bind(entry.sender.id.clone())
        .push(", ")
        .push_bind(entry.sender.name.clone())
        .push(", ")
        .push_bind(entry.text.clone())
        .push(", ")
        .push_bind(entry.client_id.clone())
        .push(", ")
        .push_bind(entry.event.clone())
        .push(", ")
        .push_bind(to_db(entry.at))
        .push("); ");
    Ok(())
}

/// Adds the insert of one lifecycle event to `writes`.
fn push_event(
    writes: &mut QueryBuilder<'_, Sqlite>,
    id: &str,
    event: &LifecycleEvent,
) -> Result<()> {
    writes
        .push("INSERT INTO lifecycle_events (conversation_id, kind, agent_id, detail, at) VALUES (")
        .push_bind(id.to_owned())
        .push(", ")
        .push_bind(tag(event.kind)?)
        .push(", ")
        .push_bind(event.agent.as_ref().map(|a| a.0.clone()))
        .push(", ")
        .push_bind(event.detail.to_string())
        .push(", ")
        .push_bind(to_db(event.at))
        .push("); ");
    Ok(())
}

/// Creates or replaces an account.
async fn put_agent(conn: &mut SqliteConnection, account: &AgentAccount) -> Result<Output> {
    if account.role != Role::Admin {
        keep_an_admin(conn, &account.id).await?;
    }
    sqlx::query(
        "INSERT INTO agents (id, name, password_hash, role, languages, departments, capacity, \
         created_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?) \
         ON CONFLICT (id) DO UPDATE SET name = excluded.name, \
         password_hash = excluded.password_hash, role = excluded.role, \
         languages = excluded.languages, departments = excluded.departments, \
         capacity = excluded.capacity, created_at = excluded.created_at",
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
    .map_err(db)?;
    Ok(Output::Unit)
}

/// Refuses, with [`StoreError::LastAdmin`], to take the admin role from `id` when
/// no other account has it. Runs in the writer's transaction, which holds the
/// file's write lock (`BEGIN IMMEDIATE`), so no other writer can change the
/// accounts between this check and the write after it.
async fn keep_an_admin(conn: &mut SqliteConnection, id: &AgentId) -> Result<()> {
    let last: bool = sqlx::query_scalar(LAST_ADMIN_SQLITE)
        .bind(tag(Role::Admin)?)
        .bind(&id.0)
        .fetch_one(&mut *conn)
        .await
        .map_err(db)?;
    if last {
        Err(StoreError::LastAdmin)
    } else {
        Ok(())
    }
}

/// The departments of a player's open conversations (`?1` the player, `?2` the
/// closed state), one row per conversation.
const OPEN_DEPARTMENTS_SQLITE: &str =
    "SELECT department FROM conversations WHERE player_id = ?1 AND state <> ?2";

/// Whether the account `?2` is the only one with the role `?1`.
const LAST_ADMIN_SQLITE: &str = "SELECT EXISTS (SELECT 1 FROM agents WHERE id = ?2 AND role = ?1)      AND NOT EXISTS (SELECT 1 FROM agents WHERE role = ?1 AND id <> ?2)";

/// The columns of a [`ConversationRecord`]; `first_seq` is NULL when no entry is stored.
const CONVERSATION_SELECT: &str = "SELECT c.id, c.player_id, c.player_card, c.department, \
     c.language, c.state, c.agent_id, c.last_seq, c.last_public_seq, c.created_at, \
     c.closed_at, c.close_reason, c.rating, c.rating_comment, \
     c.player_read_seq, c.staff_read_seq, c.staff_read_by, \
     (SELECT MIN(e.seq) FROM entries e WHERE e.conversation_id = c.id) AS first_seq \
     FROM conversations c";

/// The highest routing epoch recorded, from the one row of `routing_fence`.
const ROUTING_EPOCH_SELECT: &str = "SELECT epoch FROM routing_fence WHERE id = 1";

/// The columns of an [`AgentAccount`].
const AGENT_SELECT: &str = "SELECT id, name, password_hash, role, languages, departments, \
     capacity, created_at, sessions_ended_at FROM agents";

/// Decodes rows of (conversation_id, and the columns [`event_from_row`] reads).
fn recorded_events(rows: &[SqliteRow]) -> Result<Vec<RecordedEvent>> {
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
fn conversation_from_row(row: &SqliteRow) -> Result<ConversationRecord> {
    let id: String = get(row, "id")?;
    let card: String = get(row, "player_card")?;
    let last_seq = from_db(get(row, "last_seq")?);
    let rating: Option<i64> = get(row, "rating")?;
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

/// Decodes an entry whose column names carry `prefix`.
fn entry_from_row(
    row: &SqliteRow,
    prefix: &str,
    conversation: ConversationId,
) -> Result<StoredEntry> {
    let col = |name: &str| format!("{prefix}{name}");
    Ok(StoredEntry {
        conversation,
        seq: from_db(get(row, &col("seq"))?),
        prev_public: from_db(get(row, &col("prev_public"))?),
        kind: untag(get(row, &col("kind"))?)?,
        sender: Participant {
            role: untag(get(row, &col("sender_role"))?)?,
            id: get(row, &col("sender_id"))?,
            name: get(row, &col("sender_name"))?,
        },
        text: get(row, &col("body"))?,
        client_id: get(row, &col("client_id"))?,
        event: get(row, &col("event"))?,
        at: from_db(get(row, &col("at"))?),
    })
}

/// Decodes a row of [`AGENT_SELECT`].
fn agent_from_row(row: &SqliteRow) -> Result<AgentAccount> {
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
fn get<'r, T>(row: &'r SqliteRow, column: &str) -> Result<T>
where
    T: sqlx::Decode<'r, Sqlite> + sqlx::Type<Sqlite>,
{
    row.try_get(column).map_err(db)
}

/// Decodes an audit record.
fn audit_from_row(row: &SqliteRow) -> Result<AuditRecord> {
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
fn event_from_row(row: &SqliteRow) -> Result<LifecycleEvent> {
    let detail: String = get(row, "detail")?;
    Ok(LifecycleEvent {
        kind: untag(get(row, "kind")?)?,
        agent: get::<Option<String>>(row, "agent_id")?.map(AgentId),
        detail: serde_json::from_str(&detail).map_err(corrupt)?,
        at: from_db(get(row, "at")?),
    })
}
