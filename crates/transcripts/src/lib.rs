//! The durable conversation log: conversations, transcript entries (messages, private
//! notes, lifecycle events shown in the chat), KPI lifecycle events, hand-off records,
//! ratings, agent accounts, the audit log and the server's signing secrets.
//!
//! It owns what is durable and how it is written (one writer task per store that
//! batches concurrent changes into one transaction: group commit). It does not own
//! policy: who may write what is the desk's business, routing is `pitboss-routing`'s.
//! [`Store`] is the trait every backend implements: [`sqlite`] is the embedded one
//! (a single node), [`postgres`] the one several nodes share. [`conformance`] is the
//! suite both pass.

use async_trait::async_trait;
use pitboss_protocol::{
    AgentId, ConversationId, ConversationState, ConversationSummary, Message, MessageKind,
    Participant, PlayerCard, PlayerId, Role, Seq,
};
use serde::{Deserialize, Serialize};
use std::sync::Arc;

/// `impl Snapshot` for a backend's snapshot type, a tuple struct around a read
/// transaction: each read runs the backend's own free function (`read_entries`
/// and the like, in scope where it is used) on the transaction's connection, the
/// same functions the store's ordinary reads run on the pool.
macro_rules! snapshot_on_transaction {
    ($snapshot:ty) => {
        #[async_trait::async_trait]
        impl $crate::Snapshot for $snapshot {
            async fn conversations(
                &mut self,
                filter: $crate::ConversationFilter,
            ) -> $crate::Result<Vec<$crate::ConversationRecord>> {
                read_conversations(&mut *self.0, filter).await
            }

            async fn entries(
                &mut self,
                id: pitboss_protocol::ConversationId,
                after: pitboss_protocol::Seq,
                limit: u32,
                include_notes: bool,
            ) -> $crate::Result<Vec<$crate::StoredEntry>> {
                read_entries(&mut *self.0, id, after, limit, include_notes).await
            }

            async fn events(
                &mut self,
                id: pitboss_protocol::ConversationId,
            ) -> $crate::Result<Vec<$crate::LifecycleEvent>> {
                read_events(&mut *self.0, id).await
            }

            async fn handoffs(
                &mut self,
                id: pitboss_protocol::ConversationId,
            ) -> $crate::Result<Vec<$crate::Handoff>> {
                read_handoffs(&mut *self.0, id).await
            }
        }
    };
}

pub mod conformance;
pub mod postgres;
mod queue;
pub mod sqlite;

/// `Result` with this crate's error.
pub type Result<T, E = StoreError> = std::result::Result<T, E>;

/// What can go wrong in a store.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The client id was already used in this conversation by this sender, with
    /// other text. Nothing was written.
    #[error("client id already used with different text")]
    Conflict,
    /// The conversation (or account) does not exist.
    #[error("not found")]
    NotFound,
    /// A [`Change`]'s precondition did not hold: someone else changed the
    /// conversation first. Nothing was written.
    #[error("precondition failed: the conversation changed")]
    Precondition,
    /// A [`Change`]'s [`Fence`] carried a routing epoch older than the highest the
    /// store has recorded: the decision was made by a deposed router. Nothing was
    /// written.
    #[error("a newer routing epoch exists: this decision is fenced")]
    Fenced,
    /// The write would take the admin role from the only account that has it (a
    /// removal, or a new role other than admin). Nothing was written.
    #[error("this is the last admin: another admin must exist first")]
    LastAdmin,
    /// A creation's [`NewConversation::open_limit`] did not hold: the player has
    /// an open conversation in that department, or as many open as allowed.
    /// Nothing was written.
    #[error("the player has an open conversation there, or too many open")]
    PlayerBusy,
    /// The write queue is full. Nothing was written; the caller answers
    /// `overloaded` and the client retries.
    #[error("store overloaded")]
    Overloaded,
    /// The database failed or is unreachable. Nothing was acknowledged.
    #[error("store unavailable: {0}")]
    Unavailable(String),
}

/// Whether a creation's [`NewConversation::open_limit`] fails, given the
/// departments of the player's open conversations.
pub(crate) fn player_busy(open: &[String], new: &NewConversation, limit: u32) -> bool {
    open.contains(&new.department) || open.len() >= limit as usize
}

/// Milliseconds since the Unix epoch, the store's wall clock for timestamps.
pub fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// A conversation to create.
#[derive(Debug, Clone)]
pub struct NewConversation {
    /// Its id.
    pub id: ConversationId,
    /// The player's card (id and attributes as known at start).
    pub player: PlayerCard,
    /// Department.
    pub department: String,
    /// Language.
    pub language: String,
    /// `Queued`, or `Offline` when nobody was online.
    pub state: ConversationState,
    /// Created, Unix ms.
    pub created_at: u64,
    /// When set, the creation is refused with [`StoreError::PlayerBusy`] if the
    /// player already has an open (queued, active or offline) conversation in this
    /// department, or this many open in all. The check and the insert are one
    /// transaction, and creations for one player take turns across nodes, so two
    /// nodes starting the player's first chat at once open one.
    pub open_limit: Option<u32>,
}

/// A conversation as stored.
#[derive(Debug, Clone, PartialEq)]
pub struct ConversationRecord {
    /// The summary the wire carries (state, owner, last sequence numbers, rating…).
    pub summary: ConversationSummary,
    /// The player's card.
    pub player: PlayerCard,
    /// The first sequence number still stored (1 unless retention purged entries).
    pub first_seq: Seq,
    /// The reason tag given at close.
    pub close_reason: Option<String>,
    /// The rating comment.
    pub rating_comment: Option<String>,
    /// How far each side has said it read.
    pub read: ReadMarks,
}

/// How far each side of a conversation has said it read (`read` frames): kept so
/// that a client that reloads shows its messages as read. Only ever raised, and
/// never above what that side may see.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ReadMarks {
    /// The player's: the highest public sequence number read, 0 for none.
    pub player: Seq,
    /// The staff's (owner, or a supervisor viewing): the highest sequence number
    /// read, 0 for none.
    pub staff: Seq,
    /// Who set [`staff`](Self::staff).
    pub staff_by: Option<Participant>,
}

/// A transcript entry to append.
#[derive(Debug, Clone, PartialEq)]
pub struct NewEntry {
    /// Text, note or event.
    pub kind: MessageKind,
    /// Who wrote it.
    pub sender: Participant,
    /// Its text.
    pub text: String,
    /// The sender's client id; `None` for server-written events. Unique per
    /// (conversation, sender id, client id), with no time window.
    pub client_id: Option<String>,
    /// For events, the stable event tag.
    pub event: Option<String>,
    /// Opaque to the store: handed back to the [`CommitObserver`] with the entry, so
    /// the caller can tell which of its connections wrote it.
    pub origin: u64,
}

impl NewEntry {
    /// This entry as stored at `seq` in `conversation`, after the public entry
    /// `prev_public`, at `at` (milliseconds since the epoch).
    pub fn stored(
        &self,
        conversation: ConversationId,
        seq: Seq,
        prev_public: Seq,
        at: u64,
    ) -> StoredEntry {
        StoredEntry {
            conversation,
            seq,
            prev_public,
            kind: self.kind,
            sender: self.sender.clone(),
            text: self.text.clone(),
            client_id: self.client_id.clone(),
            event: self.event.clone(),
            at,
        }
    }
}

/// A transcript entry as stored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoredEntry {
    /// The conversation.
    pub conversation: ConversationId,
    /// Its sequence number (gap-free per conversation, from 1).
    pub seq: Seq,
    /// The sequence number of the previous entry a player may see (text or event),
    /// 0 if none. Lets a player detect a gap in a view that skips notes.
    pub prev_public: Seq,
    /// Text, note or event.
    pub kind: MessageKind,
    /// Who wrote it.
    pub sender: Participant,
    /// Its text.
    pub text: String,
    /// The sender's client id.
    pub client_id: Option<String>,
    /// For events, the stable tag.
    pub event: Option<String>,
    /// Stored at, Unix ms.
    pub at: u64,
}

impl StoredEntry {
    /// Whether a player may see this entry.
    pub fn is_public(&self) -> bool {
        self.kind != MessageKind::Note
    }

    /// The wire form for a receiver: players see `prev` skip notes, agents see every
    /// entry so their `prev` is `seq - 1`.
    pub fn to_message(&self, for_player: bool) -> Message {
        Message {
            conversation: self.conversation,
            seq: self.seq,
            prev: if for_player {
                self.prev_public
            } else {
                self.seq - 1
            },
            kind: self.kind,
            sender: self.sender.clone(),
            text: self.text.clone(),
            client_id: self.client_id.clone(),
            event: self.event.clone(),
            at: self.at,
        }
    }
}

/// The outcome of appending an entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Appended {
    /// The entry as stored (for a duplicate, the original).
    pub entry: StoredEntry,
    /// True when the client id had been stored before with the same text: nothing
    /// new was written and the observer is not called.
    pub duplicate: bool,
}

/// A KPI lifecycle event. Every transition of a conversation records one, so wait
/// times, first response, handle times, transfers and ratings can be computed later.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LifecycleEvent {
    /// What happened.
    pub kind: LifecycleKind,
    /// The agent concerned, if any.
    pub agent: Option<AgentId>,
    /// Free-form detail (reason, note, target…), JSON.
    pub detail: serde_json::Value,
    /// When, Unix ms. Filled in by the caller.
    pub at: u64,
}

/// Kinds of lifecycle event.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LifecycleKind {
    /// Entered a queue.
    Queued,
    /// Nobody was online: became an offline message.
    Offline,
    /// Offered to an agent.
    Offered,
    /// An offer expired unanswered.
    OfferExpired,
    /// An agent accepted an offer.
    Accepted,
    /// An agent declined an offer.
    Declined,
    /// An agent became the owner.
    Assigned,
    /// A transfer was requested.
    TransferRequested,
    /// A transfer completed: a new owner.
    Transferred,
    /// A transfer was declined or expired.
    TransferFailed,
    /// Put back at the head of the queue (its agent went away).
    Requeued,
    /// The player left while queued.
    Abandoned,
    /// Closed, with a reason.
    Closed,
    /// Rated by the player.
    Rated,
}

/// A recorded lifecycle event with its conversation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RecordedEvent {
    /// The conversation.
    pub conversation: ConversationId,
    /// The event.
    #[serde(flatten)]
    pub event: LifecycleEvent,
}

/// A hand-off from one agent to another agent or a department.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Handoff {
    /// The agent handing over.
    pub from: AgentId,
    /// `agent:<login>` or `department:<name>`.
    pub to: String,
    /// The private note for the receiver.
    pub note: Option<String>,
    /// `requested`, `accepted`, `declined`, `expired`, `cancelled`, `takeover`.
    pub outcome: String,
    /// When, Unix ms.
    pub at: u64,
}

/// What a conversation must look like for a [`Change`] to apply (compare-and-set).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Expect {
    /// Its state now.
    pub state: ConversationState,
    /// Its owner now (`None`: no owner).
    pub agent: Option<AgentId>,
}

/// What a conversation must look like to take an entry from its sender (see
/// [`Change::open`]): not closed, and with `owner`, owned by that agent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Open {
    /// The agent who must own it (`None`: anyone, or nobody).
    pub owner: Option<AgentId>,
}

impl Open {
    /// Whether a conversation in `state`, owned by `agent`, meets it.
    pub fn admits(&self, state: ConversationState, agent: Option<&str>) -> bool {
        state != ConversationState::Closed
            && self
                .owner
                .as_ref()
                .is_none_or(|o| Some(o.0.as_str()) == agent)
    }
}

/// A new state and owner.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SetState {
    /// The new state.
    pub state: ConversationState,
    /// The new owner (`None`: no owner).
    pub agent: Option<AgentId>,
    /// With `Closed`: the reason tag.
    pub close_reason: Option<String>,
    /// A new department (a department transfer was accepted); `None`: unchanged.
    pub department: Option<String>,
}

/// Fences a routing decision (see [`Change::fence`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fence {
    /// The routing lease epoch the decision was made under.
    pub epoch: u64,
    /// With `Some(agent)`: the change also requires that this agent owns fewer
    /// `Active` conversations (not counting this one) than their account's capacity.
    pub capacity_of: Option<AgentId>,
}

/// One atomic change to one conversation: everything in it is written in one
/// transaction, or nothing is.
///
/// Its checks run in this order, and the first that fails decides the error: the
/// conversation must exist ([`StoreError::NotFound`]); an entry whose client id is
/// stored already is a resend, answered from the original (or
/// [`StoreError::Conflict`]) with nothing else of the change applied or checked;
/// then [`Change::expect`], then the fence's epoch, then the fence's capacity, then
/// the rating.
#[derive(Debug, Clone)]
pub struct Change {
    /// The conversation.
    pub conversation: ConversationId,
    /// Precondition; on mismatch the change fails with [`StoreError::Precondition`].
    pub expect: Option<Expect>,
    /// Precondition of an append checked where it is written, so that an entry
    /// racing a close or a change of owner is refused rather than stored after it;
    /// on mismatch [`StoreError::Precondition`]. A resend of an entry the
    /// conversation has is answered all the same.
    pub open: Option<Open>,
    /// Fences a routing decision (assigning, requeueing, abandoning) against deposed
    /// routers. The change applies only if `epoch` is at least the highest routing
    /// epoch the store has recorded (see [`Store::routing_epoch`]), and then records
    /// `epoch` as the highest, in the same transaction; otherwise it fails with
    /// [`StoreError::Fenced`] and writes nothing. With
    /// [`capacity_of`](Fence::capacity_of), the capacity condition failing (or the
    /// agent's account missing) fails the change with [`StoreError::Precondition`]
    /// and writes nothing (the epoch is not recorded either).
    ///
    /// Fenced changes are serialised with each other across every node sharing the
    /// store, so two of them cannot both pass the epoch or the capacity check on the
    /// same state. The capacity count is only that strong against fenced changes:
    /// routing decisions must all carry a fence.
    pub fence: Option<Fence>,
    /// New state and owner.
    pub set: Option<SetState>,
    /// Transcript entry to append.
    pub entry: Option<NewEntry>,
    /// KPI events to record.
    pub events: Vec<LifecycleEvent>,
    /// Hand-off to record.
    pub handoff: Option<Handoff>,
    /// Rating to store (score 1–5, optional comment). Fails with
    /// [`StoreError::Precondition`] if the conversation is already rated.
    pub rating: Option<(u8, Option<String>)>,
}

impl Default for Change {
    /// A change of nothing, to the nil conversation id: callers name the
    /// conversation. Not derived, because a derived default would make a fresh
    /// conversation id, which costs two `getrandom` system calls and a global lock,
    /// for every message.
    fn default() -> Self {
        Self {
            conversation: ConversationId(uuid::Uuid::nil()),
            expect: None,
            open: None,
            fence: None,
            set: None,
            entry: None,
            events: Vec::new(),
            handoff: None,
            rating: None,
        }
    }
}

impl Change {
    /// A change that only appends an entry.
    pub fn append(conversation: ConversationId, entry: NewEntry) -> Self {
        Self {
            conversation,
            entry: Some(entry),
            ..Self::default()
        }
    }
}

/// What a [`Change`] did.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Applied {
    /// The appended entry, when the change carried one.
    pub appended: Option<Appended>,
}

/// An agent or supervisor account.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AgentAccount {
    /// Login, unique.
    pub id: AgentId,
    /// Display name.
    pub name: String,
    /// Argon2 PHC string.
    pub password_hash: String,
    /// `Agent` or `Supervisor`.
    pub role: Role,
    /// Languages served, such as `["en", "tr"]`.
    pub languages: Vec<String>,
    /// Departments served, such as `["general", "payments"]`.
    pub departments: Vec<String>,
    /// Conversations at once.
    pub capacity: u32,
    /// Created, Unix ms.
    pub created_at: u64,
    /// When the account last signed out, Unix ms; 0 if never. Sessions begun
    /// before it are over. [`Store::put_agent`] leaves it as stored; only
    /// [`Store::end_sessions`] moves it.
    #[serde(default)]
    pub sessions_ended_at: u64,
}

impl AgentAccount {
    /// What a session of this account is issued under and checked against: the
    /// password hash, and when the account last signed out. A new password or a
    /// sign-out changes it, and so ends every session begun before.
    pub fn credential(&self) -> String {
        match self.sessions_ended_at {
            0 => self.password_hash.clone(),
            at => format!("{}\n{at}", self.password_hash),
        }
    }

    /// Whether `credential` (from [`AgentAccount::credential`], as it was when a
    /// session began) was issued under this account's current password: if it
    /// differs from the credential now, the agent has signed out since.
    pub fn same_password(&self, credential: &str) -> bool {
        credential.split('\n').next() == Some(self.password_hash.as_str())
    }
}

/// What a catalog item is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CatalogKind {
    /// A canned reply agents insert with `/key`.
    CannedReply,
    /// A reason tag for closing a conversation.
    CloseReason,
    /// A department's display name: the key is the department's tag.
    Department,
}

/// A per-language text managed by supervisors: canned replies, close reasons and
/// department names.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CatalogItem {
    /// What it is.
    pub kind: CatalogKind,
    /// Its language, such as `en`.
    pub language: String,
    /// Its key, unique per kind and language (the canned reply's shortcut, the
    /// reason tag).
    pub key: String,
    /// The text.
    pub text: String,
}

/// Filter for listing conversations.
#[derive(Debug, Clone, Default)]
pub struct ConversationFilter {
    /// Only in this state.
    pub state: Option<ConversationState>,
    /// Only owned by this agent.
    pub agent: Option<AgentId>,
    /// Only of this player.
    pub player: Option<PlayerId>,
    /// At most this many (newest first).
    pub limit: u32,
}

/// Which conversations [`Store::kpi_rows`] reads: those started in `[since, until)`.
#[derive(Debug, Clone, Default)]
pub struct KpiFilter {
    /// Started at or after, Unix ms.
    pub since: u64,
    /// Started before, Unix ms.
    pub until: u64,
    /// Only of this department.
    pub department: Option<String>,
    /// Only those this agent owns (or owned last, once closed).
    pub agent: Option<AgentId>,
    /// At most this many rows, oldest first.
    pub limit: u32,
}

/// What the KPIs of one conversation are computed from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KpiRow {
    /// Its state now.
    pub state: ConversationState,
    /// Started, Unix ms.
    pub created_at: u64,
    /// Its first `assigned` event, if it ever had one.
    pub assigned_at: Option<u64>,
    /// The first text an agent or a supervisor wrote in it (notes and events do
    /// not count).
    pub first_response_at: Option<u64>,
    /// Closed, Unix ms.
    pub closed_at: Option<u64>,
    /// Whether it started as an offline message (no agent was online).
    pub offline: bool,
    /// The player's rating, 1–5.
    pub rating: Option<u8>,
}

/// The most audit records one [`Store::audit`] call returns.
pub const MAX_AUDIT_LIMIT: u32 = 500;

/// An audit record to append: who did what to what, and when. What the action and
/// target mean is the caller's vocabulary; the store keeps them as given. Never a
/// password or a message's text.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NewAuditRecord {
    /// When, Unix ms. Filled in by the caller.
    pub at: u64,
    /// Who: an account's login, or `cli` for the operator's commands.
    pub actor: String,
    /// What, such as `transcript.read` or `account.remove`.
    pub action: String,
    /// To what: a conversation id, a login, a player id, a catalog item.
    pub target: String,
    /// Free-form detail, JSON.
    pub detail: serde_json::Value,
}

/// A stored audit record.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditRecord {
    /// Its id: increasing in the order records were appended.
    pub id: u64,
    /// The record.
    #[serde(flatten)]
    pub record: NewAuditRecord,
}

/// Filter for listing audit records. Every field given must match.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AuditFilter {
    /// Only by this actor.
    pub actor: Option<String>,
    /// Only this action.
    pub action: Option<String>,
    /// Only about this target.
    pub target: Option<String>,
    /// Only at or after this time, Unix ms.
    pub since: Option<u64>,
    /// At most this many, newest first; 0 means 100, above [`MAX_AUDIT_LIMIT`]
    /// counts as it.
    pub limit: u32,
}

impl AuditFilter {
    /// The number of records to return for `limit`.
    pub fn effective_limit(&self) -> u32 {
        match self.limit {
            0 => 100,
            n => n.min(MAX_AUDIT_LIMIT),
        }
    }
}

/// Conversations one write of a purge deletes, unless told otherwise: small enough
/// that the write (with every entry, event and hand-off of those conversations)
/// holds the one SQLite writer, or PostgreSQL's row locks, for milliseconds, so live
/// chats keep flowing between chunks.
pub const PURGE_CHUNK: u32 = 200;

/// The largest chunk a purge takes, whatever it is asked: one chunk's ids are bound
/// as query parameters.
pub const MAX_PURGE_CHUNK: u32 = 1000;

/// Rows a purge or an erasure deleted.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Deleted {
    /// Conversations (with their player card and rating).
    pub conversations: u64,
    /// Transcript entries: messages, private notes, events shown in the chat.
    pub entries: u64,
    /// KPI lifecycle events.
    pub events: u64,
    /// Hand-off records.
    pub handoffs: u64,
}

impl Deleted {
    /// Adds another write's counts to these.
    pub fn add(&mut self, other: Deleted) {
        self.conversations += other.conversations;
        self.entries += other.entries;
        self.events += other.events;
        self.handoffs += other.handoffs;
    }
}

/// What [`Store::purge_closed`] did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Purged {
    /// Rows deleted, summed over the chunks.
    #[serde(flatten)]
    pub deleted: Deleted,
    /// Writes that deleted something: each its own transaction.
    pub chunks: u64,
}

/// Everything stored about one player, as [`Store::export_player`] gathers it for a
/// data request. Serialises to the JSON the CLI and the REST API hand out.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PlayerExport {
    /// Whose data this is.
    pub player: PlayerId,
    /// When it was gathered, Unix ms.
    pub exported_at: u64,
    /// The player's card as last recorded (with their newest conversation); `None`
    /// when nothing is stored about them.
    pub card: Option<PlayerCard>,
    /// Their conversations, oldest first.
    pub conversations: Vec<ExportedConversation>,
}

/// One conversation of a [`PlayerExport`], with everything recorded about it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ExportedConversation {
    /// Its id.
    pub id: ConversationId,
    /// Its state when exported.
    pub state: ConversationState,
    /// Department.
    pub department: String,
    /// Language.
    pub language: String,
    /// Owner (or last owner once closed).
    pub agent: Option<AgentId>,
    /// Created, Unix ms.
    pub created_at: u64,
    /// Closed, Unix ms.
    pub closed_at: Option<u64>,
    /// The reason tag given at close.
    pub close_reason: Option<String>,
    /// The player's rating, 1–5.
    pub rating: Option<u8>,
    /// The rating's comment.
    pub rating_comment: Option<String>,
    /// How far the player said they read: the highest public sequence number,
    /// 0 for none.
    pub player_read_seq: Seq,
    /// The player's card as recorded when the conversation started.
    pub card: PlayerCard,
    /// Every transcript entry, in order, private notes included (marked).
    pub entries: Vec<ExportedEntry>,
    /// Lifecycle events, oldest first.
    pub events: Vec<LifecycleEvent>,
    /// Hand-offs, oldest first.
    pub handoffs: Vec<Handoff>,
}

/// One transcript entry of an [`ExportedConversation`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExportedEntry {
    /// Its sequence number.
    pub seq: Seq,
    /// Text, note or event.
    pub kind: MessageKind,
    /// True for private notes: agents wrote them about the player, who never saw them.
    pub private: bool,
    /// Who wrote it.
    pub sender: Participant,
    /// Its text.
    pub text: String,
    /// The id the sender's client gave it.
    pub client_id: Option<String>,
    /// For events, the stable tag.
    pub event: Option<String>,
    /// Stored at, Unix ms.
    pub at: u64,
}

impl From<StoredEntry> for ExportedEntry {
    fn from(entry: StoredEntry) -> Self {
        Self {
            seq: entry.seq,
            kind: entry.kind,
            private: !entry.is_public(),
            sender: entry.sender,
            text: entry.text,
            client_id: entry.client_id,
            event: entry.event,
            at: entry.at,
        }
    }
}

/// Entries read per page while exporting.
const EXPORT_PAGE: u32 = 1000;

/// Told, inside the writer, of every newly stored entry, in commit order, right
/// after its transaction committed. It must not block: it hands entries on to
/// bounded queues and returns.
pub trait CommitObserver: Send + Sync + 'static {
    /// `entries` were just committed, in sequence order per conversation; each
    /// comes with the `origin` its [`NewEntry`] carried.
    fn committed(&self, entries: &[(StoredEntry, u64)]);
}

/// The reads of one snapshot of a store ([`Store::snapshot`]): each answers as the
/// [`Store`] method of the same name, from the state committed when the snapshot
/// was taken.
#[async_trait]
pub trait Snapshot: Send {
    /// As [`Store::conversations`].
    async fn conversations(
        &mut self,
        filter: ConversationFilter,
    ) -> Result<Vec<ConversationRecord>>;

    /// As [`Store::entries`].
    async fn entries(
        &mut self,
        id: ConversationId,
        after: Seq,
        limit: u32,
        include_notes: bool,
    ) -> Result<Vec<StoredEntry>>;

    /// As [`Store::events`].
    async fn events(&mut self, id: ConversationId) -> Result<Vec<LifecycleEvent>>;

    /// As [`Store::handoffs`].
    async fn handoffs(&mut self, id: ConversationId) -> Result<Vec<Handoff>>;
}

/// Gathers [`Store::export_player`]'s answer from one snapshot.
pub async fn export_from(snapshot: &mut dyn Snapshot, player: &PlayerId) -> Result<PlayerExport> {
    let mut records = snapshot
        .conversations(ConversationFilter {
            player: Some(player.clone()),
            limit: u32::MAX,
            ..ConversationFilter::default()
        })
        .await?;
    // Listed newest first; a record of someone's history reads oldest first.
    records.reverse();
    let card = records.last().map(|r| r.player.clone());
    let mut conversations = Vec::with_capacity(records.len());
    for record in records {
        let id = record.summary.id;
        let mut entries = Vec::new();
        let mut after = 0;
        loop {
            let page = snapshot.entries(id, after, EXPORT_PAGE, true).await?;
            let full = page.len() == EXPORT_PAGE as usize;
            if let Some(last) = page.last() {
                after = last.seq;
            }
            entries.extend(page.into_iter().map(ExportedEntry::from));
            if !full {
                break;
            }
        }
        conversations.push(ExportedConversation {
            id,
            state: record.summary.state,
            department: record.summary.department,
            language: record.summary.language,
            agent: record.summary.agent,
            created_at: record.summary.created_at,
            closed_at: record.summary.closed_at,
            close_reason: record.close_reason,
            rating: record.summary.rating,
            rating_comment: record.rating_comment,
            player_read_seq: record.read.player,
            card: record.player,
            entries,
            events: snapshot.events(id).await?,
            handoffs: snapshot.handoffs(id).await?,
        });
    }
    Ok(PlayerExport {
        player: player.clone(),
        exported_at: now_ms(),
        card,
        conversations,
    })
}

/// A durable store of conversations. Implemented by every backend; one conformance
/// suite runs against each.
#[async_trait]
pub trait Store: Send + Sync + 'static {
    /// Installs the observer told of every committed entry. Called once, before the
    /// first write; entries committed before it is set are not reported.
    fn set_observer(&self, observer: Arc<dyn CommitObserver>);

    /// Creates a conversation (and records its `queued` or `offline` event).
    async fn create_conversation(&self, new: NewConversation) -> Result<()>;

    /// Applies one atomic change, group-committed with concurrent ones. Returns once
    /// the transaction is durable.
    async fn apply(&self, change: Change) -> Result<Applied>;

    /// Raises the read mark of `by`'s side (the player's, or the staff's) to `seq`,
    /// capped at the last sequence number that side may see. Does nothing when the
    /// mark is already there or higher, or the conversation does not exist.
    async fn mark_read(
        &self,
        conversation: ConversationId,
        by: Participant,
        seq: Seq,
    ) -> Result<()>;

    /// One conversation.
    async fn conversation(&self, id: ConversationId) -> Result<Option<ConversationRecord>>;

    /// Entries with `seq > after`, in order, at most `limit`; notes only when
    /// `include_notes`.
    async fn entries(
        &self,
        id: ConversationId,
        after: Seq,
        limit: u32,
        include_notes: bool,
    ) -> Result<Vec<StoredEntry>>;

    /// Conversations matching the filter, newest first.
    async fn conversations(&self, filter: ConversationFilter) -> Result<Vec<ConversationRecord>>;

    /// Every conversation that is not closed (to rebuild the queue after a
    /// restart), ordered by `created_at` ascending, then by id (ids are UUIDv7, so
    /// equal timestamps still come out in creation order).
    async fn open_conversations(&self) -> Result<Vec<ConversationRecord>>;

    /// A conversation's lifecycle events, oldest first.
    async fn events(&self, id: ConversationId) -> Result<Vec<LifecycleEvent>>;

    /// A conversation's hand-offs, oldest first.
    async fn handoffs(&self, id: ConversationId) -> Result<Vec<Handoff>>;

    /// The figures behind the KPIs of the conversations `filter` selects, oldest
    /// first, at most `filter.limit`.
    async fn kpi_rows(&self, filter: KpiFilter) -> Result<Vec<KpiRow>>;

    /// What a new router needs to put the queue back as it was: for every
    /// conversation queued now, its `requeued` events, and its `declined` and
    /// `offer_expired` events dated `since` (Unix ms) or later; oldest first.
    async fn queue_events(&self, since: u64) -> Result<Vec<RecordedEvent>>;

    /// What a new router needs to find the transfers that were pending: for every
    /// conversation active now, its `transfer_requested`, `transferred` and
    /// `transfer_failed` events dated `since` (Unix ms) or later; oldest first.
    async fn transfer_events(&self, since: u64) -> Result<Vec<RecordedEvent>>;

    /// Recent handle times (assignment to close), newest first, as
    /// (department, milliseconds), at most `limit`.
    async fn recent_handle_times(&self, limit: u32) -> Result<Vec<(String, u64)>>;

    /// Creates or replaces an account. Replacing the only admin with a role other
    /// than admin fails with [`StoreError::LastAdmin`]: the check and the write are
    /// one transaction, and writers of accounts on every node take turns, so two
    /// admins demoting or removing each other at once leave one of them admin.
    /// Where no account is admin, nothing is refused.
    async fn put_agent(&self, account: AgentAccount) -> Result<()>;

    /// One account.
    async fn agent(&self, id: &AgentId) -> Result<Option<AgentAccount>>;

    /// Every account, by login.
    async fn agents(&self) -> Result<Vec<AgentAccount>>;

    /// Removes an account; false if there was none. Removing the only admin fails
    /// with [`StoreError::LastAdmin`], as in [`Store::put_agent`].
    async fn remove_agent(&self, id: &AgentId) -> Result<bool>;

    /// Ends every session of an account begun before `at` (Unix ms): records it
    /// as the account's `sessions_ended_at`, which only ever rises. False if
    /// there is no such account.
    async fn end_sessions(&self, id: &AgentId, at: u64) -> Result<bool>;

    /// Catalog items of a kind, in one language or all, ordered by language and key.
    async fn catalog(&self, kind: CatalogKind, language: Option<&str>) -> Result<Vec<CatalogItem>>;

    /// Creates or replaces a catalog item (by kind, language and key).
    async fn put_catalog(&self, item: CatalogItem) -> Result<()>;

    /// Removes a catalog item; false if there was none.
    async fn remove_catalog(&self, kind: CatalogKind, language: &str, key: &str) -> Result<bool>;

    /// Appends an audit record through the writer queue, durably (like every
    /// write, [`StoreError::Overloaded`] when the queue is full). Returns its id.
    async fn append_audit(&self, record: NewAuditRecord) -> Result<u64>;

    /// Audit records matching the filter, newest first (by id), at most
    /// [`AuditFilter::effective_limit`].
    async fn audit(&self, filter: AuditFilter) -> Result<Vec<AuditRecord>>;

    /// The secret named `name`, created from `fresh` on first use. Two callers
    /// racing get the same secret.
    async fn secret(&self, name: &str, fresh: Vec<u8>) -> Result<Vec<u8>>;

    /// The highest routing epoch recorded (by [`Store::raise_routing_epoch`] or by a
    /// fenced [`Change`]), 0 if none.
    async fn routing_epoch(&self) -> Result<u64>;

    /// Records `max(stored, epoch)` as the highest routing epoch, durably, and
    /// returns it. A new router calls it when it takes over the routing lease: from
    /// then on every fenced change made under an older epoch fails with
    /// [`StoreError::Fenced`]. Never lowers the recorded epoch. Epochs are stored as
    /// signed 64-bit integers: one above `i64::MAX` counts as `i64::MAX`.
    async fn raise_routing_epoch(&self, epoch: u64) -> Result<u64>;

    /// Deletes closed conversations whose `closed_at` is before `closed_before`
    /// (Unix ms), with their entries, lifecycle events and hand-offs, and returns
    /// what it deleted. Open conversations (queued, active, offline) are never
    /// deleted. Works in chunks of `chunk` conversations (clamped to
    /// 1..=[`MAX_PURGE_CHUNK`]), longest closed first, each chunk one write queued
    /// with everyone else's, so a large purge never holds the writer (or, on
    /// PostgreSQL, row locks) for long; it goes on until a chunk finds fewer than
    /// `chunk` to delete. A chunk that fails ends the purge with that error: what
    /// earlier chunks deleted stays deleted, and running the purge again carries on.
    ///
    /// On PostgreSQL a conversation another transaction holds locked is skipped
    /// (the next run takes it), so purges on several nodes at once neither wait for
    /// each other nor delete anything twice.
    async fn purge_closed(&self, closed_before: u64, chunk: u32) -> Result<Purged>;

    /// Deletes the audit records older than `before` (Unix ms), oldest first, in
    /// chunks of `chunk` records (clamped like [`Store::purge_closed`]'s), each one
    /// write queued with everyone else's, until a chunk finds fewer; returns how
    /// many it deleted. On PostgreSQL a record another transaction holds is skipped
    /// (the next run takes it).
    async fn purge_audit(&self, before: u64, chunk: u32) -> Result<u64>;

    /// Reads from one snapshot of the store: what was committed when it was taken,
    /// and nothing committed since. It holds a read transaction, and one of the read
    /// connections, until dropped: keep it short.
    async fn snapshot(&self) -> Result<Box<dyn Snapshot>>;

    /// Everything stored about `player`: their conversations (oldest first) with
    /// every entry (private notes marked), lifecycle event, hand-off and rating, and
    /// their card. Empty (no card, no conversations) for a player with nothing
    /// stored. Read from one [`snapshot`](Store::snapshot), so a conversation that
    /// changes meanwhile is exported as it was, its state and its entries alike.
    async fn export_player(&self, player: &PlayerId) -> Result<PlayerExport> {
        let mut snapshot = self.snapshot().await?;
        export_from(snapshot.as_mut(), player).await
    }

    /// Deletes everything stored about `player`: every conversation of theirs with
    /// its entries, lifecycle events, hand-offs, rating and card, in one write.
    /// Fails with [`StoreError::Precondition`], deleting nothing, while any of their
    /// conversations is open (queued, active or offline): a live chat is not pulled
    /// from under its agent; close it first. A player with nothing stored deletes
    /// nothing and succeeds.
    async fn erase_player(&self, player: &PlayerId) -> Result<Deleted>;

    /// Whether the store answers now (for `/readyz`).
    async fn ping(&self) -> Result<()>;

    /// Stops the writer after it has written everything already queued.
    async fn shutdown(&self);
}

/// A shared store.
pub type SharedStore = Arc<dyn Store>;
