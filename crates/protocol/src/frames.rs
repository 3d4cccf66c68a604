//! Frames, one `type`-tagged enum per direction: [`ClientFrame`] for what a client
//! sends, [`ServerFrame`] for what the server sends. Every frame is one JSON object
//! in one WebSocket text frame.

use crate::{AgentId, ConversationId, ErrorCode, PlayerId, Seq};
use serde::de::{Error as _, IgnoredAny, MapAccess, Visitor};
use serde::{Deserialize, Deserializer, Serialize};
use std::fmt;

/// A frame sent by a client (player widget, agent console, load generator).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ClientFrame {
    /// The first frame of every connection: protocol version and credentials.
    Hello {
        /// The protocol version the client speaks, [`crate::PROTOCOL_VERSION`].
        protocol: u32,
        /// Who the client is.
        #[serde(deserialize_with = "object")]
        auth: Auth,
    },
    /// Player: open a conversation (or get back the one already open in that
    /// department). Answered by `queued`, `assigned` or `no_agents`.
    Start {
        /// Department to reach; the server's default department when absent.
        #[serde(default)]
        department: Option<String>,
        /// Language to be served in; the player's own language when absent.
        #[serde(default)]
        language: Option<String>,
    },
    /// Player or owning agent: a chat message. Answered by `ack` once durable.
    Send {
        /// The conversation.
        conversation: ConversationId,
        /// Chosen by the client, unique per conversation and sender: resending the
        /// same id returns the original sequence number instead of a new message.
        client_id: String,
        /// The message.
        text: String,
    },
    /// Agent: a private note, never shown to the player. Answered by `ack`.
    Note {
        /// The conversation.
        conversation: ConversationId,
        /// As for `send`.
        client_id: String,
        /// The note.
        text: String,
    },
    /// Typing started (`active: true`) or stopped. Best effort, may be dropped.
    Typing {
        /// The conversation.
        conversation: ConversationId,
        /// Whether the sender is typing now.
        active: bool,
    },
    /// Read receipt: the sender has seen everything up to and including `seq`.
    Read {
        /// The conversation.
        conversation: ConversationId,
        /// The last sequence number seen.
        seq: Seq,
    },
    /// Attach to a conversation's live traffic, first replaying everything after
    /// `after` (0 for the whole conversation). Ends with `resumed` or `cannot_resume`.
    Resume {
        /// The conversation.
        conversation: ConversationId,
        /// The last sequence number this client has.
        after: Seq,
    },
    /// Player or owning agent (or supervisor): end the conversation.
    Close {
        /// The conversation.
        conversation: ConversationId,
        /// Why: a reason tag such as `resolved`, `no_reply`, `spam`.
        #[serde(default)]
        reason: Option<String>,
    },
    /// Player: rate a conversation an agent has answered (active or closed), once.
    Rate {
        /// The conversation.
        conversation: ConversationId,
        /// 1 (worst) to 5 (best).
        score: u8,
        /// An optional comment.
        #[serde(default)]
        comment: Option<String>,
    },
    /// Player: list my conversations, newest first. Answered by `history`.
    History,
    /// Agent: sign off. Every conversation the agent owns goes back to the head of
    /// the queue at once, their offers are withdrawn, and every connection of theirs
    /// is closed with [`crate::CloseCode::SignedOut`].
    SignOut,
    /// Agent: set my status. Answered by `status`.
    SetStatus {
        /// `online` to receive offers, `away` to stop receiving them.
        status: AgentStatus,
    },
    /// Agent: accept an offer (a queued player, or a transfer). Answered by `assigned`.
    Accept {
        /// The conversation offered.
        conversation: ConversationId,
    },
    /// Agent: decline an offer. Answered by `offer_withdrawn`.
    Decline {
        /// The conversation offered.
        conversation: ConversationId,
    },
    /// Owning agent: hand the conversation to another agent or a department.
    /// Answered by `transfer_update` with outcome `pending`.
    Transfer {
        /// The conversation.
        conversation: ConversationId,
        /// Who should take it.
        to: TransferTarget,
        /// A private note for the receiver.
        #[serde(default)]
        note: Option<String>,
    },
    /// Supervisor: take over any conversation not already theirs. Agent: take an
    /// offline message to answer it. Answered by `assigned`.
    Take {
        /// The conversation.
        conversation: ConversationId,
    },
    /// Keep-alive; answered by `pong`.
    Ping,
}

impl ClientFrame {
    /// Every `type` a client may send in this protocol version.
    pub const KNOWN_TYPES: &'static [&'static str] = &[
        "hello",
        "start",
        "send",
        "note",
        "typing",
        "read",
        "resume",
        "close",
        "rate",
        "history",
        "sign_out",
        "set_status",
        "accept",
        "decline",
        "transfer",
        "take",
        "ping",
    ];

    /// The frame's `type` as spelled on the wire.
    pub fn type_name(&self) -> &'static str {
        match self {
            ClientFrame::Hello { .. } => "hello",
            ClientFrame::Start { .. } => "start",
            ClientFrame::Send { .. } => "send",
            ClientFrame::Note { .. } => "note",
            ClientFrame::Typing { .. } => "typing",
            ClientFrame::Read { .. } => "read",
            ClientFrame::Resume { .. } => "resume",
            ClientFrame::Close { .. } => "close",
            ClientFrame::Rate { .. } => "rate",
            ClientFrame::History => "history",
            ClientFrame::SignOut => "sign_out",
            ClientFrame::SetStatus { .. } => "set_status",
            ClientFrame::Accept { .. } => "accept",
            ClientFrame::Decline { .. } => "decline",
            ClientFrame::Transfer { .. } => "transfer",
            ClientFrame::Take { .. } => "take",
            ClientFrame::Ping => "ping",
        }
    }

    /// The conversation the frame is about, if any.
    pub fn conversation(&self) -> Option<ConversationId> {
        match self {
            ClientFrame::Send { conversation, .. }
            | ClientFrame::Note { conversation, .. }
            | ClientFrame::Typing { conversation, .. }
            | ClientFrame::Read { conversation, .. }
            | ClientFrame::Resume { conversation, .. }
            | ClientFrame::Close { conversation, .. }
            | ClientFrame::Rate { conversation, .. }
            | ClientFrame::Accept { conversation }
            | ClientFrame::Decline { conversation }
            | ClientFrame::Transfer { conversation, .. }
            | ClientFrame::Take { conversation } => Some(*conversation),
            _ => None,
        }
    }
}

/// Deserialises `T` only from a JSON object. A derived struct or internally tagged
/// enum would also take a JSON array of its fields in order, and the protocol's
/// objects are objects.
fn object<'de, D: Deserializer<'de>, T: serde::de::DeserializeOwned>(
    deserializer: D,
) -> Result<T, D::Error> {
    let map = serde_json::Map::<String, serde_json::Value>::deserialize(deserializer)?;
    T::deserialize(serde_json::Value::Object(map)).map_err(D::Error::custom)
}

/// Credentials, carried in `hello` only (never in the URL).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Auth {
    /// An anonymous visitor. Without a token the server issues one in `welcome`;
    /// presenting it again later shows the same visitor's conversations.
    Visitor {
        /// The visitor token from an earlier `welcome`.
        #[serde(default)]
        token: Option<String>,
        /// A display name the visitor typed (unverified).
        #[serde(default)]
        name: Option<String>,
        /// The visitor's language, such as `en`, `tr`, `az`, `ru` (unverified).
        #[serde(default)]
        language: Option<String>,
    },
    /// A player the casino backend identified: a JWT it signed.
    Player {
        /// The signed token.
        token: String,
    },
    /// An agent or supervisor: the session token from `POST /api/login`.
    Agent {
        /// The session token.
        token: String,
    },
}

/// Who is on the other end of a connection, or wrote an entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    /// A player (visitor or verified).
    Player,
    /// A support agent.
    Agent,
    /// An agent who may see and take over every conversation.
    Supervisor,
    /// A supervisor who also manages accounts and reads the audit log. In a
    /// conversation an admin acts as a supervisor and appears as one.
    Admin,
    /// The server itself (lifecycle events in the transcript).
    System,
}

/// An agent's availability.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AgentStatus {
    /// Receives offers.
    Online,
    /// Connected, keeps their conversations, receives no offers.
    Away,
    /// Not connected.
    Offline,
}

/// Where a transfer goes: `{"agent": "ayla"}` or `{"department": "payments"}`.
///
/// Decoding ignores other keys in that object, like unknown fields anywhere else
/// in a frame; an object that names both an agent and a department, or neither,
/// is refused.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum TransferTarget {
    /// A named agent.
    Agent(AgentId),
    /// The head of a department's queue.
    Department(String),
}

impl<'de> Deserialize<'de> for TransferTarget {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        // By hand rather than derived: a derived externally tagged enum refuses any
        // second key, which would break the rule that unknown fields are ignored
        // in every nested object (docs/protocol.md, §1).
        struct TargetVisitor;
        impl<'de> Visitor<'de> for TargetVisitor {
            type Value = TransferTarget;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(r#"{"agent": login} or {"department": tag}"#)
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<TransferTarget, A::Error> {
                let mut agent: Option<Option<AgentId>> = None;
                let mut department: Option<Option<String>> = None;
                while let Some(key) = map.next_key::<String>()? {
                    match key.as_str() {
                        "agent" if agent.is_some() => {
                            return Err(A::Error::duplicate_field("agent"))
                        }
                        "agent" => agent = Some(map.next_value()?),
                        "department" if department.is_some() => {
                            return Err(A::Error::duplicate_field("department"))
                        }
                        "department" => department = Some(map.next_value()?),
                        _ => {
                            map.next_value::<IgnoredAny>()?;
                        }
                    }
                }
                match (agent.flatten(), department.flatten()) {
                    (Some(agent), None) => Ok(TransferTarget::Agent(agent)),
                    (None, Some(department)) => Ok(TransferTarget::Department(department)),
                    (Some(_), Some(_)) => Err(A::Error::custom(
                        "a transfer target names an agent or a department, not both",
                    )),
                    (None, None) => Err(A::Error::custom(
                        "a transfer target must name an `agent` or a `department`",
                    )),
                }
            }
        }
        deserializer.deserialize_map(TargetVisitor)
    }
}

/// The author of an entry, or the subject of an event.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Participant {
    /// Player, agent, supervisor or system.
    pub role: Role,
    /// `v:…`/`p:…` for players, the login for agents, `system` for the server.
    pub id: String,
    /// Display name, when known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
}

/// What kind of transcript entry a `message` frame carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MessageKind {
    /// A chat message, seen by every party.
    Text,
    /// A private note between agents; never sent to the player.
    Note,
    /// A lifecycle event the server wrote (agent joined, transfer, close), seen by
    /// every party; `event` names it.
    Event,
}

/// One transcript entry as delivered.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Message {
    /// The conversation.
    pub conversation: ConversationId,
    /// This entry's sequence number in the conversation.
    pub seq: Seq,
    /// The sequence number of the previous entry *this receiver* may see (0 for
    /// none). A player does not see notes, so for a player `prev` skips them. A
    /// receiver whose last seen entry is not `prev` has missed something and
    /// should `resume` from its last seen sequence number.
    pub prev: Seq,
    /// Text, note or event.
    pub kind: MessageKind,
    /// Who wrote it.
    pub sender: Participant,
    /// The text (for events, an English description).
    pub text: String,
    /// The sender's client id (absent for events).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_id: Option<String>,
    /// A stable tag: for events `joined`, `transfer_requested`,
    /// `transfer_cancelled`, `requeued`, `closed`, `rated`; for the note a
    /// transfer writes, `transfer_note`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub event: Option<String>,
    /// When the server stored it, Unix milliseconds.
    pub at: u64,
}

/// A conversation's lifecycle state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ConversationState {
    /// Waiting for an agent (possibly with an offer out).
    Queued,
    /// An agent owns it.
    Active,
    /// No agent was online: the player left an offline message that awaits an answer.
    Offline,
    /// Ended.
    Closed,
}

/// A conversation as listed in `welcome`, `history` and the REST API.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ConversationSummary {
    /// The conversation.
    pub id: ConversationId,
    /// Lifecycle state.
    pub state: ConversationState,
    /// Department it belongs to.
    pub department: String,
    /// Language it is served in.
    pub language: String,
    /// The player.
    pub player: PlayerId,
    /// The owning agent, if any.
    #[serde(default)]
    pub agent: Option<AgentId>,
    /// The last sequence number stored (including notes, for agents).
    pub last_seq: Seq,
    /// The last sequence number the player may see.
    pub last_public_seq: Seq,
    /// Created, Unix milliseconds.
    pub created_at: u64,
    /// Closed, Unix milliseconds.
    #[serde(default)]
    pub closed_at: Option<u64>,
    /// The player's rating, 1–5.
    #[serde(default)]
    pub rating: Option<u8>,
}

/// What an agent learns about a player.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
pub struct PlayerCard {
    /// The player.
    pub id: PlayerId,
    /// Display name.
    #[serde(default)]
    pub name: Option<String>,
    /// Language.
    #[serde(default)]
    pub language: Option<String>,
    /// VIP tier, 0 for none. Only a signed player token sets it.
    #[serde(default)]
    pub vip_tier: u8,
    /// Jurisdiction, such as `MT` or `CW` (signed tokens only).
    #[serde(default)]
    pub jurisdiction: Option<String>,
    /// The player has excluded themselves from gambling (signed tokens only).
    #[serde(default)]
    pub self_excluded: bool,
    /// Whether the casino backend vouched for these attributes.
    #[serde(default)]
    pub verified: bool,
}

/// Sent to an agent who is offered a conversation.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Offer {
    /// The conversation.
    pub conversation: ConversationId,
    /// The player.
    pub player: PlayerCard,
    /// Department.
    pub department: String,
    /// Language.
    pub language: String,
    /// How long the player has waited, in milliseconds; for a transfer, how long
    /// the current owner has had it.
    pub waited_ms: u64,
    /// The offer expires after this many milliseconds and moves on.
    pub expires_in_ms: u64,
    /// Present when the offer is a transfer from another agent.
    #[serde(default)]
    pub transfer: Option<TransferInfo>,
}

/// The context of a transfer, for the receiving agent.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TransferInfo {
    /// The agent handing over.
    pub from: Participant,
    /// Their private note.
    #[serde(default)]
    pub note: Option<String>,
}

/// Why an offer is no longer open.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum WithdrawReason {
    /// It was not accepted in time.
    Expired,
    /// The agent declined it.
    Declined,
    /// The player left, or the conversation was closed or taken over.
    Cancelled,
}

/// Where a transfer stands, told to the agent who asked for it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TransferOutcome {
    /// Waiting for the receiver; the conversation is still yours.
    Pending,
    /// The receiver accepted; the conversation is theirs now.
    Accepted,
    /// The receiver declined; the conversation stays yours.
    Declined,
    /// Nobody accepted in time; the conversation stays yours.
    Expired,
}

/// One waiting conversation in an agent's queue view.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct QueueEntry {
    /// The conversation.
    pub conversation: ConversationId,
    /// Department.
    pub department: String,
    /// Language.
    pub language: String,
    /// VIP tier.
    pub vip_tier: u8,
    /// How long it has waited, in milliseconds.
    pub waited_ms: u64,
    /// Whether an offer is out for it.
    pub offered: bool,
}

/// Why a resume cannot be served.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CannotResumeReason {
    /// `after` is beyond the conversation's last sequence number.
    Ahead,
    /// The entries after `after` were purged by retention.
    Purged,
}

/// The limits in force on this connection.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WireLimits {
    /// Largest frame, in bytes.
    pub max_frame_bytes: usize,
    /// Longest message text, in characters.
    pub max_text_chars: usize,
    /// Entries per resume page.
    pub resume_page: usize,
    /// Sustained frames per second.
    pub frames_per_second: u32,
    /// Burst above that.
    pub burst_frames: u32,
    /// Players only: the `send` frames a player may send per minute over all of
    /// their connections to the node.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub player_messages_per_minute: Option<u32>,
    /// Players only: the burst above that.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub player_message_burst: Option<u32>,
}

impl Default for WireLimits {
    fn default() -> Self {
        use crate::limits::*;
        Self {
            max_frame_bytes: MAX_FRAME_BYTES,
            max_text_chars: MAX_TEXT_CHARS,
            resume_page: RESUME_PAGE,
            frames_per_second: FRAMES_PER_SECOND,
            burst_frames: BURST_FRAMES,
            player_messages_per_minute: None,
            player_message_burst: None,
        }
    }
}

/// A frame sent by the server.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ServerFrame {
    /// The answer to `hello`: who you are, your open conversations, the limits.
    Welcome {
        /// The protocol version the server will speak.
        protocol: u32,
        /// Who you are.
        you: Participant,
        /// For visitors: the token to present next time to be the same visitor.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        visitor_token: Option<String>,
        /// For agents: your status now.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        status: Option<AgentStatus>,
        /// Conversations that are not closed: a player's own, the ones an agent
        /// owns, every one for a supervisor (up to 500). `resume` each to receive
        /// its traffic.
        conversations: Vec<ConversationSummary>,
        /// Limits in force.
        limits: WireLimits,
    },
    /// Your `send` or `note` is durable and has this sequence number.
    Ack {
        /// The conversation.
        conversation: ConversationId,
        /// Your client id.
        client_id: String,
        /// Its sequence number.
        seq: Seq,
        /// The previous entry you may see, as in `message`.
        prev: Seq,
        /// True when this client id had been stored before (a resend).
        duplicate: bool,
    },
    /// A transcript entry (live, or replayed by `resume`).
    Message(Message),
    /// Someone started or stopped typing.
    Typing {
        /// The conversation.
        conversation: ConversationId,
        /// Who.
        from: Participant,
        /// Typing now or not.
        active: bool,
    },
    /// Someone has read up to `seq`.
    Read {
        /// The conversation.
        conversation: ConversationId,
        /// Who.
        by: Participant,
        /// Last sequence number they have seen.
        seq: Seq,
    },
    /// Player: you are waiting; sent on `start` and whenever position changes.
    Queued {
        /// The conversation.
        conversation: ConversationId,
        /// 1 for next in line.
        position: u32,
        /// Estimated wait in seconds; null while there is no history to go by or
        /// no online agent serves the conversation.
        #[serde(default)]
        estimated_wait_secs: Option<u64>,
        /// Whether any online agent serves the conversation's department and
        /// language, free or busy (false: nobody online could answer it now).
        agents_online: bool,
    },
    /// Player: no agent for this department and language is online. `send` on
    /// this conversation leaves an offline message, answered later.
    NoAgents {
        /// The conversation, in state `offline`.
        conversation: ConversationId,
    },
    /// Agent: a conversation is offered to you. `accept` or `decline` it.
    Offer(Offer),
    /// Agent: an offer to you is no longer open.
    OfferWithdrawn {
        /// The conversation.
        conversation: ConversationId,
        /// Why.
        reason: WithdrawReason,
    },
    /// An agent now owns the conversation. The player learns who; the agent gets
    /// the player's card and is attached from sequence 0 (the whole transcript
    /// follows as `message` frames, then `resumed`).
    Assigned {
        /// The conversation.
        conversation: ConversationId,
        /// The owning agent.
        agent: Participant,
        /// For agents: the player.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        player: Option<PlayerCard>,
    },
    /// Agent: where your transfer stands.
    TransferUpdate {
        /// The conversation.
        conversation: ConversationId,
        /// The target you named.
        to: TransferTarget,
        /// Pending, accepted, declined, expired.
        outcome: TransferOutcome,
    },
    /// Agent: you no longer own this conversation (transferred, taken over, or
    /// requeued); its traffic stops.
    Released {
        /// The conversation.
        conversation: ConversationId,
        /// Who owns it now, if anyone.
        #[serde(default)]
        to: Option<Participant>,
    },
    /// The conversation has ended.
    Closed {
        /// The conversation.
        conversation: ConversationId,
        /// The reason tag given.
        #[serde(default)]
        reason: Option<String>,
        /// Who closed it.
        by: Role,
    },
    /// Your message was stored with parts hidden (card numbers, or a pattern the
    /// operator configured): `text` is what was stored and what everyone else
    /// sees. Sent right after its `ack` (and after the `ack` of a resend).
    Masked {
        /// The conversation.
        conversation: ConversationId,
        /// Your client id.
        client_id: String,
        /// Its sequence number.
        seq: Seq,
        /// The text as stored.
        text: String,
    },
    /// Player: your rating is stored.
    Rated {
        /// The conversation.
        conversation: ConversationId,
        /// The score stored.
        score: u8,
    },
    /// A resume has replayed everything up to `last_seq`; live traffic follows.
    Resumed {
        /// The conversation.
        conversation: ConversationId,
        /// The last sequence number replayed or already held.
        last_seq: Seq,
    },
    /// A resume asked for a range the server cannot give.
    CannotResume {
        /// The conversation.
        conversation: ConversationId,
        /// Why.
        reason: CannotResumeReason,
        /// The first sequence number still stored.
        first_seq: Seq,
        /// The last sequence number stored.
        last_seq: Seq,
    },
    /// Player: your conversations, newest first.
    History {
        /// The conversations.
        conversations: Vec<ConversationSummary>,
    },
    /// Agent: the waiting conversations you could be offered (up to 100, best
    /// first), sent on change. May be dropped under load; the next one replaces it.
    QueueSnapshot {
        /// How many are waiting in all.
        total: usize,
        /// The first of them.
        entries: Vec<QueueEntry>,
    },
    /// Agent: your status now (after `set_status`, or when an expired offer set
    /// you away).
    Status {
        /// The status.
        status: AgentStatus,
    },
    /// A frame was refused.
    Error {
        /// Stable code.
        code: ErrorCode,
        /// Human-readable detail.
        message: String,
        /// The `type` of the frame refused, when known.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        frame: Option<String>,
        /// The conversation it was about, when known.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        conversation: Option<ConversationId>,
        /// The client id it carried, when known.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        client_id: Option<String>,
    },
    /// The answer to `ping`.
    Pong,
}

impl ServerFrame {
    /// An error frame about a frame of type `frame`.
    pub fn error(code: ErrorCode, message: impl Into<String>) -> Self {
        ServerFrame::Error {
            code,
            message: message.into(),
            frame: None,
            conversation: None,
            client_id: None,
        }
    }
}
