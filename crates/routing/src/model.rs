//! The router's vocabulary: what callers hand in (profiles, requests), what it hands
//! back (decisions, errors, read-only views). Plain data, no behaviour.

use crate::Millis;
use pitboss_protocol::{AgentId, AgentStatus, ConversationId, TransferTarget};
use std::fmt;

/// What an agent can take: the languages they speak, the departments they serve,
/// and how many conversations (owned plus pending offers) they hold at once.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AgentProfile {
    /// Language tags, compared exactly (the desk normalises them).
    pub languages: Vec<String>,
    /// Department names, compared exactly.
    pub departments: Vec<String>,
    /// Most conversations held at once, pending offers included.
    pub capacity: u32,
}

/// What a waiting player needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    /// The department asked for.
    pub department: String,
    /// The language the player is served in.
    pub language: String,
    /// VIP tier: 0 for everyone, higher is served sooner (see the crate docs).
    pub tier: u8,
}

/// Why an offer was withdrawn.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WithdrawReason {
    /// The agent did not answer within `offer_timeout_ms`.
    Expired,
    /// The agent declined.
    Declined,
    /// The conversation closed, was taken over or requeued, the transfer ended, or
    /// the agent went away, offline, or no longer fits (profile change).
    Cancelled,
}

/// Why a transfer failed (the owner keeps the conversation).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TransferFailure {
    /// The named agent declined.
    Declined,
    /// Nobody accepted in time.
    Expired,
    /// A supervisor took the conversation over, or the named agent went away.
    Cancelled,
}

/// Something the caller must carry out (send a frame, write the store). Decisions
/// are returned in the order they happened.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// Offer `conversation` to `agent`; `transfer_from` is Some(owner) when this is
    /// a transfer offer.
    Offer {
        /// The conversation offered.
        conversation: ConversationId,
        /// Who is offered it.
        agent: AgentId,
        /// When the offer expires unless accepted.
        expires_at: Millis,
        /// The current owner, for a transfer offer.
        transfer_from: Option<AgentId>,
    },
    /// An offer is no longer open (expired, declined, or cancelled because the
    /// conversation closed/was taken/agent went offline).
    OfferWithdrawn {
        /// The conversation that was offered.
        conversation: ConversationId,
        /// The agent it was offered to.
        agent: AgentId,
        /// Why it was withdrawn.
        reason: WithdrawReason,
    },
    /// `agent` now owns the conversation. `previous` is the former owner for a
    /// completed transfer or takeover, None for a first assignment.
    Assigned {
        /// The conversation.
        conversation: ConversationId,
        /// Its new owner.
        agent: AgentId,
        /// Its former owner, if it had one.
        previous: Option<AgentId>,
    },
    /// A transfer failed; `owner` keeps the conversation and must be told.
    TransferFailed {
        /// The conversation.
        conversation: ConversationId,
        /// Its owner, who keeps it.
        owner: AgentId,
        /// Why the transfer failed.
        reason: TransferFailure,
    },
    /// The router set this agent's status to Away because an offer to them expired
    /// unanswered (an AFK agent must not keep receiving offers).
    AgentAway {
        /// The agent now away.
        agent: AgentId,
    },
    /// Queue membership or order changed: positions/estimates should be re-sent.
    /// Emitted at most once per call, last, and only when some queued
    /// conversation's position, estimate or offer changed (see [`crate::Router::positions`]).
    QueueChanged,
}

/// Why the router refused an operation. A refused operation changed nothing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RoutingError {
    /// The router does not know this conversation.
    UnknownConversation,
    /// The router does not know this agent.
    UnknownAgent,
    /// The conversation is already known (queued or owned).
    AlreadyKnown,
    /// The conversation has no open offer to this agent.
    NotOffered,
    /// The agent does not own this conversation.
    NotOwner,
    /// The named transfer target cannot take the conversation now.
    TargetUnavailable,
    /// No agent of the department a transfer names, other than the owner, is
    /// online and speaks the conversation's language.
    DepartmentUnstaffed,
    /// The operation does not fit the conversation's state (e.g. a transfer is
    /// already pending).
    InvalidState,
}

impl fmt::Display for RoutingError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            RoutingError::UnknownConversation => "unknown conversation",
            RoutingError::UnknownAgent => "unknown agent",
            RoutingError::AlreadyKnown => "conversation already known",
            RoutingError::NotOffered => "no open offer of this conversation to this agent",
            RoutingError::NotOwner => "agent does not own this conversation",
            RoutingError::TargetUnavailable => "transfer target cannot take the conversation",
            RoutingError::DepartmentUnstaffed => {
                "no agent of that department speaking the conversation's language is online"
            }
            RoutingError::InvalidState => "operation does not fit the conversation's state",
        })
    }
}

impl std::error::Error for RoutingError {}

/// A queued player's place in line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Position {
    /// 1-based, among the conversations waiting for the same department and language.
    pub position: u32,
    /// Estimated wait in milliseconds (formula in the crate docs); None when there
    /// is no handle-time history or no online agent for it.
    pub estimated_wait_ms: Option<u64>,
    /// Whether any online agent serves its department and language (free or
    /// not): what tells an estimate missing for want of history from one missing
    /// because nobody online could answer.
    pub agents_online: bool,
}

/// A read-only picture of one conversation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ConversationView {
    /// Waiting for an agent.
    Queued {
        /// What it needs.
        request: Request,
        /// When it was (re)queued.
        since: Millis,
        /// The open offer, if any: the agent and when it expires.
        offer: Option<(AgentId, Millis)>,
    },
    /// Owned by an agent.
    Owned {
        /// What it needs (the department is the target's after a department transfer).
        request: Request,
        /// The owner.
        agent: AgentId,
        /// When the owner got it.
        since: Millis,
        /// The pending transfer, if any.
        transfer: Option<TransferView>,
    },
}

/// A pending transfer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TransferView {
    /// Where it goes.
    pub target: TransferTarget,
    /// The open offer, if any: the agent and when it expires.
    pub offer: Option<(AgentId, Millis)>,
    /// When the transfer fails if not accepted (for a named agent, the offer's expiry).
    pub deadline: Millis,
}

/// A read-only picture of one agent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AgentView {
    /// Whether they receive offers.
    pub status: AgentStatus,
    /// What they can take.
    pub profile: AgentProfile,
    /// Owned conversations plus pending offers to them.
    pub load: u32,
}

/// One queued conversation, as an agent console lists it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QueueItem {
    /// The conversation.
    pub conversation: ConversationId,
    /// What it needs.
    pub request: Request,
    /// When it was (re)queued.
    pub since: Millis,
    /// The agent it is currently offered to, if any.
    pub offered_to: Option<AgentId>,
}
