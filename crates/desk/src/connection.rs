//! One client connection as the desk sees it: the bounded queue of what is to be
//! sent to it, the signal that closes it, and the writer-side view that turns queued
//! items into frames (dropping duplicates, filling gaps from the store, replaying on
//! `resume`).
//!
//! It owns per-connection delivery state. It does not own the socket: the gateway
//! reads and writes the WebSocket and hands frames to and from here.

use pitboss_protocol::{
    limits::RESUME_PAGE, CannotResumeReason, CloseCode, ConversationId, Participant, Role, Seq,
    ServerFrame,
};
use pitboss_transcripts::{SharedStore, StoredEntry};
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use tokio::sync::{mpsc, Notify};

use crate::UserKey;

/// Something to send to one connection.
#[derive(Debug, Clone)]
pub enum Outbound {
    /// A frame to send as it is. Boxed: the queue's slots are as large as the
    /// largest variant, and every idle connection holds a block of them.
    Frame(Box<ServerFrame>),
    /// A transcript entry, live: sent if the connection is attached to its
    /// conversation and has not had it yet; a gap before it is filled first.
    Entry(Arc<StoredEntry>),
    /// The entry this connection wrote is durable: send the `ack`.
    Ack(Arc<StoredEntry>),
    /// Attach to a conversation: replay everything after `after`, then `resumed`.
    Attach {
        /// The conversation.
        conversation: ConversationId,
        /// The last sequence number the client has.
        after: Seq,
    },
    /// Stop sending this conversation's entries.
    Detach(ConversationId),
    /// Events may have been lost: send whatever the store has after what this
    /// connection delivered (if it is attached to the conversation).
    Catchup(ConversationId),
}

impl Outbound {
    /// Droppable items may be lost when the queue is full (typing, read receipts,
    /// queue snapshots); everything else disconnects the slow consumer instead.
    fn droppable(&self) -> bool {
        matches!(
            self,
            Outbound::Frame(frame) if matches!(
                **frame,
                ServerFrame::Typing { .. }
                    | ServerFrame::Read { .. }
                    | ServerFrame::QueueSnapshot { .. }
                    | ServerFrame::Queued { .. }
            )
        )
    }
}

/// Asks a connection to close with a code; the first code asked for wins.
#[derive(Default)]
pub struct CloseSignal {
    /// Set once; later requests keep the first code.
    code: OnceLock<CloseCode>,
    /// Wakes every task waiting for the close.
    notify: Notify,
}

impl CloseSignal {
    /// Asks for the close.
    pub fn close(&self, code: CloseCode) {
        if self.code.set(code).is_ok() {
            // Both the reading and the writing task wait on this signal.
            self.notify.notify_waiters();
        }
    }
    /// The code asked for, if any.
    pub fn code(&self) -> Option<CloseCode> {
        self.code.get().copied()
    }
    /// Resolves once a close is asked for.
    pub async fn wait(&self) -> CloseCode {
        loop {
            // Register before checking, so a close between the check and the
            // await is not missed (`notify_waiters` wakes only registered waiters).
            let notified = self.notify.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if let Some(code) = self.code() {
                return code;
            }
            notified.await;
        }
    }
}

/// How many conversations one connection remembers having had its reads of
/// audited (see `ConnShared::audited`).
pub(crate) const MAX_AUDITED_PER_CONN: usize = 1024;

/// The desk's handle on one connection. Cheap to clone.
#[derive(Clone)]
pub struct ConnRef(pub(crate) Arc<ConnShared>);

pub(crate) struct ConnShared {
    pub(crate) id: u64,
    pub(crate) user: UserKey,
    /// An agent connection's role as of its `hello` (`None` for players): what
    /// the connection may do follows it, so a change of role closes it.
    pub(crate) role: Option<pitboss_protocol::Role>,
    /// An agent connection's credential (password hash and last sign-out) as
    /// of its `hello`: a new password or a sign-out closes it.
    pub(crate) credential: Option<String>,
    /// Bounded: a client that does not read cannot grow the server's memory.
    pub(crate) tx: mpsc::Sender<Outbound>,
    pub(crate) close: Arc<CloseSignal>,
    /// Conversations this connection is attached to, so a disconnect can detach it
    /// everywhere. A std mutex: never held across an await.
    pub(crate) attached: Mutex<Vec<ConversationId>>,
    /// Conversations whose supervisory read by this connection is already in the
    /// audit log: a console re-resuming (to fill a gap, or a closed conversation
    /// again) writes one record per connection, not one per `resume`. At most
    /// [`MAX_AUDITED_PER_CONN`]; past that every such read is recorded again, so
    /// the log over-reports rather than under-reports. A std mutex, never held
    /// across an await.
    pub(crate) audited: Mutex<Vec<ConversationId>>,
    pub(crate) dropped: AtomicU64,
    /// Messages this connection sent whose ack it has not been sent yet. If the
    /// writer reads one from the store first (a replay, a gap fill, a catch-up), it
    /// sends it as that ack, never as a `message`: a sender sees its own entries
    /// as acks only. A std mutex, never held across an await; usually empty.
    pub(crate) inflight: Mutex<Vec<(ConversationId, String)>>,
}

impl ConnRef {
    /// This connection's id, unique in the process.
    pub fn id(&self) -> u64 {
        self.0.id
    }

    /// Whether this connection belongs to a player (who never sees notes).
    pub fn is_player(&self) -> bool {
        matches!(self.0.user, UserKey::Player(_))
    }

    /// Queues an item without waiting. A full queue drops a droppable item and
    /// disconnects the slow consumer for anything else. Returns whether queued.
    pub fn push(&self, item: Outbound) -> bool {
        match self.0.tx.try_send(item) {
            Ok(()) => true,
            Err(mpsc::error::TrySendError::Full(item)) => {
                if item.droppable() {
                    self.0.dropped.fetch_add(1, Ordering::Relaxed);
                } else {
                    tracing::info!(conn = self.0.id, "slow consumer disconnected");
                    metrics::counter!(crate::telemetry::SLOW_CONSUMERS).increment(1);
                    self.0.close.close(CloseCode::SlowConsumer);
                }
                false
            }
            Err(mpsc::error::TrySendError::Closed(_)) => false,
        }
    }

    /// Sends a frame (see [`ConnRef::push`]).
    pub fn send(&self, frame: ServerFrame) -> bool {
        self.push(Outbound::Frame(Box::new(frame)))
    }

    /// Asks the connection to close.
    pub fn close(&self, code: CloseCode) {
        self.0.close.close(code);
    }

    /// A `send`/`note` of this connection goes to the store.
    pub(crate) fn begin_send(&self, conversation: ConversationId, client_id: &str) {
        self.inflight().push((conversation, client_id.to_owned()));
    }

    /// Its ack went out, or no ack will come from the commit path (refused, or a
    /// resend answered directly). Returns whether it was still waiting.
    pub(crate) fn end_send(&self, conversation: ConversationId, client_id: &str) -> bool {
        let mut inflight = self.inflight();
        match inflight
            .iter()
            .position(|(c, id)| *c == conversation && id == client_id)
        {
            Some(i) => {
                inflight.swap_remove(i);
                true
            }
            None => false,
        }
    }

    fn inflight(&self) -> std::sync::MutexGuard<'_, Vec<(ConversationId, String)>> {
        self.0.inflight.lock().expect("inflight lock")
    }

    /// The id this connection's user writes entries under.
    fn user_id(&self) -> &str {
        match &self.0.user {
            UserKey::Player(p) => &p.0,
            UserKey::Agent(a) => &a.0,
        }
    }
}

/// Where the writer puts frames: the gateway's socket, or a test's vector.
pub trait FrameSink {
    /// Writes one frame; an error ends the connection.
    fn send(
        &mut self,
        frame: ServerFrame,
    ) -> impl std::future::Future<Output = Result<(), ()>> + Send;
}

/// The writer side of a connection: what it has delivered per conversation.
pub struct Delivery {
    store: SharedStore,
    conn: ConnRef,
    for_player: bool,
    /// Entries of this connection already sent as acks ahead of their queued
    /// `Ack` item (see [`ConnShared::inflight`]), so that item sends nothing.
    early_acks: std::collections::HashSet<(ConversationId, Seq)>,
    /// Per attached conversation, the highest sequence number delivered. Only
    /// entries above it are sent; an entry whose `prev` is above it reveals a gap.
    attached: HashMap<ConversationId, Seq>,
}

impl Delivery {
    /// A fresh view for this connection.
    pub fn new(store: SharedStore, conn: &ConnRef) -> Self {
        Self {
            store,
            for_player: conn.is_player(),
            conn: conn.clone(),
            early_acks: Default::default(),
            attached: HashMap::new(),
        }
    }

    /// How an entry goes to this connection: as a `message`, or, if this
    /// connection wrote it and is still waiting for its ack, as that ack.
    fn frame_for(&mut self, e: &StoredEntry) -> ServerFrame {
        let m = e.to_message(self.for_player);
        if let Some(client_id) = &e.client_id {
            if e.sender.id == self.conn.user_id() && self.conn.end_send(e.conversation, client_id) {
                self.early_acks.insert((e.conversation, e.seq));
                return ServerFrame::Ack {
                    conversation: e.conversation,
                    client_id: client_id.clone(),
                    seq: e.seq,
                    prev: m.prev,
                    duplicate: false,
                };
            }
        }
        ServerFrame::Message(m)
    }

    /// Turns one queued item into frames on `sink`.
    pub async fn process<S: FrameSink + Send>(
        &mut self,
        item: Outbound,
        sink: &mut S,
    ) -> Result<(), ()> {
        match item {
            Outbound::Frame(frame) => sink.send(*frame).await,
            Outbound::Entry(entry) => {
                if self.for_player && !entry.is_public() {
                    return Ok(());
                }
                let Some(&hwm) = self.attached.get(&entry.conversation) else {
                    return Ok(());
                };
                if entry.seq <= hwm {
                    return Ok(());
                }
                self.fill_gap(&entry, hwm, sink).await?;
                self.attached.insert(entry.conversation, entry.seq);
                let frame = self.frame_for(&entry);
                sink.send(frame).await
            }
            Outbound::Ack(entry) => {
                if self.early_acks.remove(&(entry.conversation, entry.seq)) {
                    return Ok(());
                }
                if let Some(client_id) = &entry.client_id {
                    self.conn.end_send(entry.conversation, client_id);
                }
                if let Some(&hwm) = self.attached.get(&entry.conversation) {
                    if entry.seq > hwm {
                        self.fill_gap(&entry, hwm, sink).await?;
                        self.attached.insert(entry.conversation, entry.seq);
                    }
                }
                let m = entry.to_message(self.for_player);
                sink.send(ServerFrame::Ack {
                    conversation: entry.conversation,
                    client_id: entry.client_id.clone().unwrap_or_default(),
                    seq: entry.seq,
                    prev: m.prev,
                    duplicate: false,
                })
                .await
            }
            Outbound::Attach {
                conversation,
                after,
            } => self.attach(conversation, after, sink).await,
            Outbound::Detach(conversation) => {
                self.attached.remove(&conversation);
                Ok(())
            }
            Outbound::Catchup(conversation) => {
                let Some(&hwm) = self.attached.get(&conversation) else {
                    return Ok(());
                };
                self.send_stored(conversation, hwm, Seq::MAX, sink).await
            }
        }
    }

    /// Sends what lies between `hwm` and `entry` from the store, if anything does.
    async fn fill_gap<S: FrameSink + Send>(
        &mut self,
        entry: &StoredEntry,
        hwm: Seq,
        sink: &mut S,
    ) -> Result<(), ()> {
        let prev = entry.to_message(self.for_player).prev;
        if prev <= hwm {
            return Ok(());
        }
        self.send_stored(entry.conversation, hwm, entry.seq, sink)
            .await
    }

    /// Sends the stored entries above `hwm` and below `before`, moving this
    /// connection's high-water mark with each.
    async fn send_stored<S: FrameSink + Send>(
        &mut self,
        conversation: ConversationId,
        hwm: Seq,
        before: Seq,
        sink: &mut S,
    ) -> Result<(), ()> {
        let mut last = hwm;
        loop {
            let page = match self
                .store
                .entries(conversation, last, RESUME_PAGE as u32, !self.for_player)
                .await
            {
                Ok(page) => page,
                Err(err) => {
                    // The client will notice the gap from `prev` and resume.
                    tracing::warn!(%err, conversation = %conversation, "gap fill failed");
                    return Ok(());
                }
            };
            let full = page.len() == RESUME_PAGE;
            for e in page {
                if e.seq >= before {
                    return Ok(());
                }
                last = e.seq;
                self.attached.insert(conversation, last);
                let frame = self.frame_for(&e);
                sink.send(frame).await?;
            }
            if !full {
                return Ok(());
            }
        }
    }

    async fn attach<S: FrameSink + Send>(
        &mut self,
        conversation: ConversationId,
        after: Seq,
        sink: &mut S,
    ) -> Result<(), ()> {
        let record = match self.store.conversation(conversation).await {
            Ok(Some(record)) => record,
            Ok(None) => {
                return sink
                    .send(ServerFrame::error(
                        pitboss_protocol::ErrorCode::NotFound,
                        "no such conversation",
                    ))
                    .await
            }
            Err(err) => return sink.send(unreadable(conversation, &err)).await,
        };
        let last_seq = if self.for_player {
            record.summary.last_public_seq
        } else {
            record.summary.last_seq
        };
        let ahead = after > record.summary.last_seq;
        let purged = after + 1 < record.first_seq;
        if ahead || purged {
            return sink
                .send(ServerFrame::CannotResume {
                    conversation,
                    reason: if ahead {
                        CannotResumeReason::Ahead
                    } else {
                        CannotResumeReason::Purged
                    },
                    first_seq: record.first_seq,
                    last_seq,
                })
                .await;
        }
        // Live entries queued behind this item are dropped if the replay already
        // covered them: `hwm` moves with every replayed entry.
        let mut hwm = after;
        let mut cursor = after;
        loop {
            let page = match self
                .store
                .entries(conversation, cursor, RESUME_PAGE as u32, !self.for_player)
                .await
            {
                Ok(page) => page,
                Err(err) => return sink.send(unreadable(conversation, &err)).await,
            };
            let full = page.len() == RESUME_PAGE;
            for e in page {
                // The client said what it has: send everything after that, even
                // what this connection delivered before.
                cursor = e.seq;
                hwm = hwm.max(e.seq);
                let frame = self.frame_for(&e);
                sink.send(frame).await?;
            }
            if !full {
                break;
            }
        }
        self.attached.insert(conversation, hwm);
        sink.send(ServerFrame::Resumed {
            conversation,
            last_seq: hwm.max(after),
        })
        .await?;
        // How far the other side has read, so that a client that reloaded shows
        // its messages as read again.
        let read = if self.for_player {
            record
                .read
                .staff_by
                .filter(|_| record.read.staff > 0)
                .map(|by| (by, record.read.staff))
        } else {
            (record.read.player > 0).then(|| {
                let by = Participant {
                    role: Role::Player,
                    id: record.player.id.0.clone(),
                    name: record.player.name.clone(),
                };
                (by, record.read.player)
            })
        };
        match read {
            Some((by, seq)) => {
                sink.send(ServerFrame::Read {
                    conversation,
                    by,
                    seq,
                })
                .await
            }
            None => Ok(()),
        }
    }
}

/// The answer to a resume the store cannot serve now: retry later.
fn unreadable(conversation: ConversationId, err: &pitboss_transcripts::StoreError) -> ServerFrame {
    ServerFrame::Error {
        code: pitboss_protocol::ErrorCode::Overloaded,
        message: format!("cannot read the transcript now: {err}"),
        frame: Some("resume".into()),
        conversation: Some(conversation),
        client_id: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[tokio::test]
    async fn a_close_wakes_every_waiter_and_keeps_the_first_code() {
        let signal = Arc::new(CloseSignal::default());
        let a = tokio::spawn({
            let s = signal.clone();
            async move { s.wait().await }
        });
        let b = tokio::spawn({
            let s = signal.clone();
            async move { s.wait().await }
        });
        tokio::time::sleep(Duration::from_millis(20)).await;
        signal.close(CloseCode::Restart);
        signal.close(CloseCode::SlowConsumer);
        let wait = Duration::from_secs(2);
        assert_eq!(
            tokio::time::timeout(wait, a).await.unwrap().unwrap(),
            CloseCode::Restart
        );
        assert_eq!(
            tokio::time::timeout(wait, b).await.unwrap().unwrap(),
            CloseCode::Restart
        );
        // A waiter arriving after the close returns at once.
        assert_eq!(signal.wait().await, CloseCode::Restart);
    }
}
