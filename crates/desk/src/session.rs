//! Who is on the other end of a connection, once `hello` has been checked.

use pitboss_protocol::{AgentId, Participant, PlayerCard, PlayerId, Role};

/// A user, as the key of their set of connections.
#[derive(Debug, Clone, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(tag = "role", content = "id", rename_all = "snake_case")]
pub enum UserKey {
    /// A player.
    Player(PlayerId),
    /// An agent or supervisor.
    Agent(AgentId),
}

/// An authenticated connection's identity.
#[derive(Debug, Clone)]
pub enum Session {
    /// A player: anonymous visitor or verified by the casino.
    Player {
        /// The player and their attributes.
        card: PlayerCard,
        /// For a visitor, the token to present next time.
        visitor_token: Option<String>,
    },
    /// An agent or supervisor.
    Agent {
        /// Login.
        id: AgentId,
        /// Display name.
        name: String,
        /// The account's role, as it was when the connection said `hello`: what
        /// it may do is [`crate::permissions::allows`] of it.
        role: Role,
        /// The account's credential (`AgentAccount::credential`) as it was at
        /// `hello`: a new password or a sign-out ends the connection as it ends
        /// the session.
        credential: String,
    },
}

impl Session {
    /// The key of this user's connections.
    pub fn user(&self) -> UserKey {
        match self {
            Session::Player { card, .. } => UserKey::Player(card.id.clone()),
            Session::Agent { id, .. } => UserKey::Agent(id.clone()),
        }
    }

    /// This user as the author of entries.
    pub fn participant(&self) -> Participant {
        match self {
            Session::Player { card, .. } => Participant {
                role: Role::Player,
                id: card.id.0.clone(),
                name: card.name.clone(),
            },
            Session::Agent { id, name, role, .. } => Participant {
                role: conversation_role(*role),
                id: id.0.clone(),
                name: Some(name.clone()),
            },
        }
    }
}

/// How an account's role appears in a conversation: an admin acts as a supervisor
/// there and appears as one, so clients of players and agents need not know it.
pub fn conversation_role(role: Role) -> Role {
    match role {
        Role::Admin => Role::Supervisor,
        other => other,
    }
}
