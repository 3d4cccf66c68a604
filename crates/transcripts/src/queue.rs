//! What both SQL backends share: the bounded queue of writes to the one writer task,
//! the writes it performs and its answers, the routing of the `Store` write calls
//! onto that queue, and how values are stored (enum names, unsigned integers).
//!
//! It does not own SQL or batching: each backend's writer runs the ops its own way.

use crate::{
    AgentAccount, Applied, CatalogItem, CatalogKind, Change, ConversationFilter, Deleted,
    KpiFilter, LifecycleKind, NewAuditRecord, NewConversation, Purged, Result, StoreError,
    MAX_PURGE_CHUNK,
};
use pitboss_protocol::{AgentId, ConversationId, MessageKind, Participant, PlayerId, Role, Seq};
use serde::{de::DeserializeOwned, Serialize};
use sqlx::{Database, Encode, QueryBuilder, Type};
use std::sync::{Mutex, PoisonError, RwLock};
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;

/// One write, queued for the writer with the channel its answer goes back on.
pub(crate) struct Request {
    /// What to do.
    pub(crate) op: Op,
    /// Where the answer goes, after the transaction committed (or failed).
    pub(crate) reply: oneshot::Sender<Result<Output>>,
}

impl Request {
    /// Sends the answer to a caller that may have stopped waiting.
    pub(crate) fn answer(self, result: Result<Output>) {
        if self.reply.send(result).is_err() {
            // The caller's task was cancelled. The write is committed (or not)
            // regardless, and the observer was told; nobody is left to answer.
            tracing::debug!("a write finished after its caller went away");
        }
    }
}

/// The writes a writer performs.
// Nearly every queued write is an `Apply`, the largest variant: boxing it would add
// an allocation per write and make the queue no smaller.
#[allow(clippy::large_enum_variant)]
pub(crate) enum Op {
    /// `create_conversation`.
    Create(NewConversation),
    /// `apply`.
    Apply(Change),
    /// `put_agent`.
    PutAgent(AgentAccount),
    /// `remove_agent`.
    RemoveAgent(AgentId),
    /// `end_sessions`: the account and when.
    EndSessions(AgentId, u64),
    /// `secret`: name and fresh bytes.
    Secret(String, Vec<u8>),
    /// `mark_read`.
    MarkRead {
        /// The conversation.
        conversation: ConversationId,
        /// Who read.
        by: Participant,
        /// Up to where.
        seq: Seq,
    },
    /// `put_catalog`.
    PutCatalog(CatalogItem),
    /// `remove_catalog`: kind, language, key.
    RemoveCatalog(CatalogKind, String, String),
    /// `raise_routing_epoch`.
    RaiseEpoch(u64),
    /// `append_audit`.
    Audit(NewAuditRecord),
    /// One chunk of `purge_closed`: at most `limit` closed conversations whose
    /// `closed_at` is before `closed_before`, longest closed first.
    PurgeChunk {
        /// Unix ms.
        closed_before: u64,
        /// Conversations at most.
        limit: u32,
    },
    /// One chunk of `purge_audit`: at most `limit` audit records older than
    /// `before`, oldest first.
    PurgeAuditChunk {
        /// Unix ms.
        before: u64,
        /// Records at most.
        limit: u32,
    },
    /// `erase_player`.
    ErasePlayer(PlayerId),
    /// The durability settings in force on the write connection (asked of that
    /// connection, so it goes through the writer).
    Settings,
}

/// The writer's answers, one variant per kind of [`Op`].
pub(crate) enum Output {
    /// Done, nothing to say.
    Unit,
    /// What an `apply` did.
    Applied(Applied),
    /// Whether `remove_agent` or `remove_catalog` removed something, or
    /// `end_sessions` found its account.
    Removed(bool),
    /// The secret's bytes.
    Secret(Vec<u8>),
    /// The routing epoch recorded after `raise_routing_epoch`.
    Epoch(u64),
    /// The id of the audit record `append_audit` stored.
    AuditId(u64),
    /// What a purge chunk or an erasure deleted.
    Deleted(Deleted),
    /// Rows an audit purge chunk deleted.
    Count(u64),
    /// Setting values, in the order the backend documents.
    Settings(Vec<String>),
}

/// An answer of the wrong kind: a bug in a backend, reported as unavailable rather
/// than a panic. Names only the variant: the answer may hold a secret.
pub(crate) fn wrong_answer(output: &Output) -> StoreError {
    let kind = match output {
        Output::Unit => "unit",
        Output::Applied(_) => "applied",
        Output::Removed(_) => "removed",
        Output::Secret(_) => "secret",
        Output::Epoch(_) => "epoch",
        Output::AuditId(_) => "audit id",
        Output::Deleted(_) => "deleted",
        Output::Count(_) => "count",
        Output::Settings(_) => "settings",
    };
    StoreError::Unavailable(format!("store writer gave an unexpected answer: {kind}"))
}

/// Times a purge chunk refused as `Overloaded` is tried again before the purge gives
/// up: with [`PURGE_OVERLOADED_PAUSE`], half a minute of a full queue.
const PURGE_OVERLOADED_RETRIES: u32 = 300;

/// The pause before a purge chunk refused as `Overloaded` is tried again.
const PURGE_OVERLOADED_PAUSE: std::time::Duration = std::time::Duration::from_millis(100);

/// The handle on a writer task: its bounded queue and the task itself.
pub(crate) struct WriteQueue {
    /// The writer's queue; `None` once shutdown began. Only read-locked to
    /// `try_send`, which never awaits, so the lock is never held across `.await`.
    writes: RwLock<Option<mpsc::Sender<Request>>>,
    /// The writer task, awaited by `close` so that everything queued is written.
    writer: Mutex<Option<JoinHandle<()>>>,
}

impl WriteQueue {
    /// The queue `tx` of the writer task `handle`.
    pub(crate) fn new(tx: mpsc::Sender<Request>, handle: JoinHandle<()>) -> Self {
        Self {
            writes: RwLock::new(Some(tx)),
            writer: Mutex::new(Some(handle)),
        }
    }

    /// Queues `op` for the writer and waits for its answer. Never blocks on a full
    /// queue: that is [`StoreError::Overloaded`], and nothing is written.
    pub(crate) async fn write(&self, op: Op) -> Result<Output> {
        let (reply, answer) = oneshot::channel();
        {
            // A poisoned lock only means a panic elsewhere while it was held; the
            // Option inside is still whole.
            let writes = self.writes.read().unwrap_or_else(PoisonError::into_inner);
            let Some(tx) = writes.as_ref() else {
                return Err(StoreError::Unavailable("store is shut down".into()));
            };
            tx.try_send(Request { op, reply }).map_err(|e| match e {
                mpsc::error::TrySendError::Full(_) => StoreError::Overloaded,
                mpsc::error::TrySendError::Closed(_) => {
                    StoreError::Unavailable("store writer has stopped".into())
                }
            })?;
        }
        answer
            .await
            .map_err(|_| StoreError::Unavailable("store writer stopped before answering".into()))?
    }

    /// Stops taking writes and waits until the writer has written, committed and
    /// answered everything already queued.
    pub(crate) async fn close(&self) {
        // Dropping the only sender closes the queue: the writer drains it and ends.
        let sender = self
            .writes
            .write()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
        drop(sender);
        let handle = self
            .writer
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
        if let Some(handle) = handle {
            if let Err(e) = handle.await {
                tracing::error!(error = %e, "transcript writer task failed");
            }
        }
    }

    /// [`crate::Store::create_conversation`].
    pub(crate) async fn create_conversation(&self, new: NewConversation) -> Result<()> {
        self.unit(Op::Create(new)).await
    }

    /// [`crate::Store::apply`].
    pub(crate) async fn apply(&self, change: Change) -> Result<Applied> {
        match self.write(Op::Apply(change)).await? {
            Output::Applied(applied) => Ok(applied),
            other => Err(wrong_answer(&other)),
        }
    }

    /// [`crate::Store::put_agent`].
    pub(crate) async fn put_agent(&self, account: AgentAccount) -> Result<()> {
        self.unit(Op::PutAgent(account)).await
    }

    /// [`crate::Store::remove_agent`].
    pub(crate) async fn remove_agent(&self, id: &AgentId) -> Result<bool> {
        self.removed(Op::RemoveAgent(id.clone())).await
    }

    /// [`crate::Store::end_sessions`].
    pub(crate) async fn end_sessions(&self, id: &AgentId, at: u64) -> Result<bool> {
        self.removed(Op::EndSessions(id.clone(), at)).await
    }

    /// [`crate::Store::mark_read`].
    pub(crate) async fn mark_read(
        &self,
        conversation: ConversationId,
        by: Participant,
        seq: Seq,
    ) -> Result<()> {
        self.unit(Op::MarkRead {
            conversation,
            by,
            seq,
        })
        .await
    }

    /// [`crate::Store::put_catalog`].
    pub(crate) async fn put_catalog(&self, item: CatalogItem) -> Result<()> {
        self.unit(Op::PutCatalog(item)).await
    }

    /// [`crate::Store::remove_catalog`].
    pub(crate) async fn remove_catalog(
        &self,
        kind: CatalogKind,
        language: &str,
        key: &str,
    ) -> Result<bool> {
        self.removed(Op::RemoveCatalog(kind, language.to_owned(), key.to_owned()))
            .await
    }

    /// [`crate::Store::secret`].
    pub(crate) async fn secret(&self, name: &str, fresh: Vec<u8>) -> Result<Vec<u8>> {
        match self.write(Op::Secret(name.to_owned(), fresh)).await? {
            Output::Secret(value) => Ok(value),
            other => Err(wrong_answer(&other)),
        }
    }

    /// [`crate::Store::raise_routing_epoch`].
    pub(crate) async fn raise_routing_epoch(&self, epoch: u64) -> Result<u64> {
        match self.write(Op::RaiseEpoch(epoch)).await? {
            Output::Epoch(recorded) => Ok(recorded),
            other => Err(wrong_answer(&other)),
        }
    }

    /// [`crate::Store::append_audit`].
    pub(crate) async fn append_audit(&self, record: NewAuditRecord) -> Result<u64> {
        match self.write(Op::Audit(record)).await? {
            Output::AuditId(id) => Ok(id),
            other => Err(wrong_answer(&other)),
        }
    }

    /// [`crate::Store::purge_closed`]: one write per chunk until a chunk comes back
    /// short. A full queue is not an error here: the purge is background work that
    /// yields to live chats, so it waits and tries the chunk again (a while).
    pub(crate) async fn purge_closed(&self, closed_before: u64, chunk: u32) -> Result<Purged> {
        let mut deleted = Deleted::default();
        let chunks = self
            .purge_in_chunks(
                chunk,
                |limit| Op::PurgeChunk {
                    closed_before,
                    limit,
                },
                |output| match output {
                    Output::Deleted(chunk) => {
                        deleted.add(chunk);
                        Ok(chunk.conversations)
                    }
                    other => Err(wrong_answer(&other)),
                },
            )
            .await?;
        Ok(Purged { deleted, chunks })
    }

    /// [`crate::Store::purge_audit`], in chunks as `purge_closed`.
    pub(crate) async fn purge_audit(&self, before: u64, chunk: u32) -> Result<u64> {
        let mut records = 0;
        self.purge_in_chunks(
            chunk,
            |limit| Op::PurgeAuditChunk { before, limit },
            |output| match output {
                Output::Count(n) => {
                    records += n;
                    Ok(n)
                }
                other => Err(wrong_answer(&other)),
            },
        )
        .await?;
        Ok(records)
    }

    /// Writes `op(limit)` again and again, each its own write queued with everyone
    /// else's, until a chunk deletes fewer than `limit` of what it purges (`take`
    /// counts them from each answer). A full queue is not an error here: a purge is
    /// background work that yields to live chats, so it waits and tries the chunk
    /// again (a while). Returns the chunks that deleted something.
    async fn purge_in_chunks(
        &self,
        chunk: u32,
        op: impl Fn(u32) -> Op,
        mut take: impl FnMut(Output) -> Result<u64>,
    ) -> Result<u64> {
        let limit = chunk.clamp(1, MAX_PURGE_CHUNK);
        let mut chunks = 0;
        let mut overloaded = 0;
        loop {
            let deleted = match self.write(op(limit)).await {
                Ok(output) => take(output)?,
                Err(StoreError::Overloaded) if overloaded < PURGE_OVERLOADED_RETRIES => {
                    overloaded += 1;
                    tokio::time::sleep(PURGE_OVERLOADED_PAUSE).await;
                    continue;
                }
                Err(e) => return Err(e),
            };
            if deleted == 0 {
                break;
            }
            chunks += 1;
            if deleted < u64::from(limit) {
                break;
            }
        }
        Ok(chunks)
    }

    /// [`crate::Store::erase_player`].
    pub(crate) async fn erase_player(&self, player: &PlayerId) -> Result<Deleted> {
        match self.write(Op::ErasePlayer(player.clone())).await? {
            Output::Deleted(deleted) => Ok(deleted),
            other => Err(wrong_answer(&other)),
        }
    }

    /// The write connection's durability settings.
    pub(crate) async fn settings(&self) -> Result<Vec<String>> {
        match self.write(Op::Settings).await? {
            Output::Settings(values) => Ok(values),
            other => Err(wrong_answer(&other)),
        }
    }

    async fn unit(&self, op: Op) -> Result<()> {
        match self.write(op).await? {
            Output::Unit => Ok(()),
            other => Err(wrong_answer(&other)),
        }
    }

    async fn removed(&self, op: Op) -> Result<bool> {
        match self.write(op).await? {
            Output::Removed(removed) => Ok(removed),
            other => Err(wrong_answer(&other)),
        }
    }
}

/// An enum's snake_case serde name, as stored.
pub(crate) fn tag<T: Serialize>(value: T) -> Result<String> {
    match serde_json::to_value(value).map_err(corrupt)? {
        serde_json::Value::String(s) => Ok(s),
        other => Err(StoreError::Unavailable(format!(
            "not a unit enum variant: {other}"
        ))),
    }
}

/// An enum from its stored snake_case serde name.
pub(crate) fn untag<T: DeserializeOwned>(name: String) -> Result<T> {
    serde_json::from_value(serde_json::Value::String(name)).map_err(corrupt)
}

/// A `u64` (sequence number, Unix ms) as the signed 64-bit integer SQL stores.
/// Neither comes anywhere near `i64::MAX`; saturate rather than wrap if one did.
pub(crate) fn to_db(value: u64) -> i64 {
    i64::try_from(value).unwrap_or(i64::MAX)
}

/// A stored integer as a `u64`; negatives (which no backend writes) read as 0.
pub(crate) fn from_db(value: i64) -> u64 {
    u64::try_from(value).unwrap_or(0)
}

/// A database failure.
pub(crate) fn db(e: sqlx::Error) -> StoreError {
    StoreError::Unavailable(e.to_string())
}

/// A value that does not decode: the database was changed by something else.
pub(crate) fn corrupt(e: impl std::fmt::Display) -> StoreError {
    StoreError::Unavailable(format!("corrupt stored value: {e}"))
}

/// [`crate::ReadMarks`] from the columns `player_read_seq`, `staff_read_seq` and
/// `staff_read_by` (a [`Participant`] in JSON).
pub(crate) fn read_marks(player: i64, staff: i64, by: Option<String>) -> Result<crate::ReadMarks> {
    Ok(crate::ReadMarks {
        player: from_db(player),
        staff: from_db(staff),
        staff_by: by
            .map(|by| serde_json::from_str::<Participant>(&by).map_err(corrupt))
            .transpose()?,
    })
}

/// The query listing the audit records `filter` selects, newest first: the same SQL
/// for both backends, each binding in its own placeholder style.
pub(crate) fn audit_select<'a, DB>(filter: &crate::AuditFilter) -> sqlx::QueryBuilder<'a, DB>
where
    DB: sqlx::Database,
    String: sqlx::Encode<'a, DB> + sqlx::Type<DB>,
    i64: sqlx::Encode<'a, DB> + sqlx::Type<DB>,
{
    let mut sql = sqlx::QueryBuilder::<DB>::new(
        "SELECT id, at, actor, action, target, detail FROM audit_log WHERE 1 = 1",
    );
    if let Some(actor) = &filter.actor {
        sql.push(" AND actor = ").push_bind(actor.clone());
    }
    if let Some(action) = &filter.action {
        sql.push(" AND action = ").push_bind(action.clone());
    }
    if let Some(target) = &filter.target {
        sql.push(" AND target = ").push_bind(target.clone());
    }
    if let Some(since) = filter.since {
        sql.push(" AND at >= ").push_bind(to_db(since));
    }
    sql.push(" ORDER BY id DESC LIMIT ")
        .push_bind(i64::from(filter.effective_limit()));
    sql
}

/// The query of [`crate::Store::kpi_rows`], the same on both backends: through the
/// `created_at` index to the window, then each conversation's events by
/// `(conversation_id, kind)` and its entries by `(conversation_id, seq)`. Columns:
/// `state`, `created_at`, `closed_at`, `rating`, `assigned_at`, `offline` (0 or
/// 1, a `BIGINT`), `first_response_at`.
pub(crate) fn kpi_query<'a, DB>(filter: KpiFilter) -> Result<QueryBuilder<'a, DB>>
where
    DB: Database,
    String: Encode<'a, DB> + Type<DB>,
    i64: Encode<'a, DB> + Type<DB>,
{
    let mut q = QueryBuilder::<DB>::new(
        "SELECT c.state, c.created_at, c.closed_at, c.rating, \
         (SELECT MIN(e.at) FROM lifecycle_events e \
          WHERE e.conversation_id = c.id AND e.kind = ",
    );
    q.push_bind(tag(LifecycleKind::Assigned)?)
        .push(
            ") AS assigned_at, CAST(CASE WHEN EXISTS (SELECT 1 FROM lifecycle_events o \
             WHERE o.conversation_id = c.id AND o.kind = ",
        )
        .push_bind(tag(LifecycleKind::Offline)?)
        .push(
            ") THEN 1 ELSE 0 END AS BIGINT) AS offline, \
             (SELECT MIN(n.at) FROM entries n WHERE n.conversation_id = c.id AND n.kind = ",
        )
        .push_bind(tag(MessageKind::Text)?)
        .push(" AND n.sender_role IN (")
        .push_bind(tag(Role::Agent)?)
        .push(", ")
        .push_bind(tag(Role::Supervisor)?)
        .push(")) AS first_response_at FROM conversations c WHERE c.created_at >= ")
        .push_bind(to_db(filter.since))
        .push(" AND c.created_at < ")
        .push_bind(to_db(filter.until));
    if let Some(department) = filter.department {
        q.push(" AND c.department = ").push_bind(department);
    }
    if let Some(agent) = filter.agent {
        // Its owner, or with none now (put back in the queue, abandoned there),
        // the agent it was last assigned to.
        q.push(
            " AND COALESCE(c.agent_id, (SELECT l.agent_id FROM lifecycle_events l \
             WHERE l.conversation_id = c.id AND l.kind = ",
        )
        .push_bind(tag(LifecycleKind::Assigned)?)
        .push(" ORDER BY l.at DESC, l.id DESC LIMIT 1)) = ")
        .push_bind(agent.0);
    }
    q.push(" ORDER BY c.created_at, c.id LIMIT ")
        .push_bind(i64::from(filter.limit));
    Ok(q)
}

/// `ConversationFilter::limit == 0` lists this many.
const DEFAULT_LIST_LIMIT: u32 = 100;

/// The query of [`crate::Store::conversations`], the same on both backends but for
/// `select`, each backend's columns: newest first, at most the filter's limit.
pub(crate) fn conversations_query<'a, DB>(
    select: &str,
    filter: ConversationFilter,
) -> Result<QueryBuilder<'a, DB>>
where
    DB: Database,
    String: Encode<'a, DB> + Type<DB>,
    i64: Encode<'a, DB> + Type<DB>,
{
    let mut q = QueryBuilder::<DB>::new(select);
    q.push(" WHERE 1 = 1");
    if let Some(state) = filter.state {
        q.push(" AND c.state = ").push_bind(tag(state)?);
    }
    if let Some(agent) = filter.agent {
        q.push(" AND c.agent_id = ").push_bind(agent.0);
    }
    if let Some(player) = filter.player {
        q.push(" AND c.player_id = ").push_bind(player.0);
    }
    let limit = if filter.limit == 0 {
        DEFAULT_LIST_LIMIT
    } else {
        filter.limit
    };
    // Ids are UUIDv7, time-ordered: they break ties between equal timestamps.
    q.push(" ORDER BY c.created_at DESC, c.id DESC LIMIT ")
        .push_bind(i64::from(limit));
    Ok(q)
}
