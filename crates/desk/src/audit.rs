//! The audit log's vocabulary: which actions are recorded and how an entry is
//! written. Reads of transcripts and of a player's history, account changes and
//! catalog changes are recorded, by whom, before they happen: an append that
//! fails stops the action (see `docs/decisions/0009-audit-log.md`).
//!
//! It does not own storage (the store appends and lists records) or decide who may
//! read the log (the permission table does).

use pitboss_transcripts::{now_ms, NewAuditRecord, Store, StoreError};

/// The actor recorded for the operator's `pitboss agent …` commands.
pub const CLI_ACTOR: &str = "cli";

/// Something that is recorded in the audit log.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum AuditAction {
    /// A conversation's details (`GET /api/conversations/{id}`).
    ConversationRead,
    /// A conversation's transcript, JSON or text.
    TranscriptRead,
    /// A player's earlier conversations.
    PlayerHistoryRead,
    /// An account was created.
    AccountCreate,
    /// An account's profile or role changed.
    AccountUpdate,
    /// An account's password changed.
    AccountPassword,
    /// An account was removed.
    AccountRemove,
    /// A catalog item was created or replaced.
    CatalogPut,
    /// A catalog item was removed.
    CatalogRemove,
    /// Everything stored about a player was exported (a data request).
    PlayerExport,
    /// Everything stored about a player was erased (a data request).
    PlayerErase,
}

impl AuditAction {
    /// Its stable name in the log.
    pub fn name(self) -> &'static str {
        match self {
            AuditAction::ConversationRead => "conversation.read",
            AuditAction::TranscriptRead => "transcript.read",
            AuditAction::PlayerHistoryRead => "player_history.read",
            AuditAction::AccountCreate => "account.create",
            AuditAction::AccountUpdate => "account.update",
            AuditAction::AccountPassword => "account.password",
            AuditAction::AccountRemove => "account.remove",
            AuditAction::CatalogPut => "catalog.put",
            AuditAction::CatalogRemove => "catalog.remove",
            AuditAction::PlayerExport => "player.export",
            AuditAction::PlayerErase => "player.erase",
        }
    }
}

/// Appends one record, durably. Callers do what they audit only once this
/// returned `Ok`.
pub async fn append(
    store: &dyn Store,
    actor: &str,
    action: AuditAction,
    target: &str,
    detail: serde_json::Value,
) -> Result<(), StoreError> {
    store
        .append_audit(NewAuditRecord {
            at: now_ms(),
            actor: actor.to_owned(),
            action: action.name().to_owned(),
            target: target.to_owned(),
            detail,
        })
        .await
        .map(|_| ())
}
