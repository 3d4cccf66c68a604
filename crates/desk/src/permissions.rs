//! What each role may do: one table, [`allows`], consulted by every REST handler
//! and by the desk's checks on WebSocket frames, instead of comparisons with a
//! role scattered through the code.
//!
//! It decides what a role may do in general. Whether an agent owns a given
//! conversation, or serves a given player, is the desk's to check against live
//! state; this table only says which of those checks apply. `docs/permissions.md`
//! shows the same table, and a test keeps the two equal.

use pitboss_protocol::Role;

/// Something an account may be allowed to do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Permission {
    /// Sign in and use the console: one's own account, colleagues (for
    /// transfers), departments, the catalog, offline messages (and take them).
    UseConsole,
    /// Read, resume and write the conversations one owns (or owned last, once
    /// closed), and read those offered to one.
    ReadOwnConversations,
    /// A player's earlier conversations (summaries), while serving an open
    /// conversation of that player.
    ReadPlayerHistory,
    /// A player's earlier conversations, any player.
    ReadAnyPlayerHistory,
    /// Every conversation: list, read, resume, transcripts; the whole queue.
    ReadAnyConversation,
    /// Write, note, type and close in any open conversation without owning it.
    JoinAnyConversation,
    /// Take over a queued or active conversation, ignoring capacity.
    TakeOver,
    /// Create, replace and remove canned replies and close reasons.
    ManageCatalog,
    /// Create, change and remove accounts.
    ManageAccounts,
    /// Export or erase everything stored about a player.
    ManagePlayerData,
    /// Read the audit log.
    ReadAuditLog,
}

impl Permission {
    /// Every permission, in the order of the table in `docs/permissions.md`.
    pub const ALL: [Permission; 11] = [
        Permission::UseConsole,
        Permission::ReadOwnConversations,
        Permission::ReadPlayerHistory,
        Permission::ReadAnyPlayerHistory,
        Permission::ReadAnyConversation,
        Permission::JoinAnyConversation,
        Permission::TakeOver,
        Permission::ManageCatalog,
        Permission::ManageAccounts,
        Permission::ManagePlayerData,
        Permission::ReadAuditLog,
    ];

    /// Its stable name, as `docs/permissions.md` lists it.
    pub fn name(self) -> &'static str {
        match self {
            Permission::UseConsole => "use_console",
            Permission::ReadOwnConversations => "read_own_conversations",
            Permission::ReadPlayerHistory => "read_player_history",
            Permission::ReadAnyPlayerHistory => "read_any_player_history",
            Permission::ReadAnyConversation => "read_any_conversation",
            Permission::JoinAnyConversation => "join_any_conversation",
            Permission::TakeOver => "take_over",
            Permission::ManageCatalog => "manage_catalog",
            Permission::ManageAccounts => "manage_accounts",
            Permission::ManagePlayerData => "manage_player_data",
            Permission::ReadAuditLog => "read_audit_log",
        }
    }
}

/// The roles an account may have, in the order of the table's columns.
pub const ACCOUNT_ROLES: [Role; 3] = [Role::Agent, Role::Supervisor, Role::Admin];

/// Whether `role` may do `permission`. Players and the system hold none of these:
/// what a player may do with their own conversations is checked where it happens.
pub fn allows(role: Role, permission: Permission) -> bool {
    use Permission as P;
    match role {
        Role::Player | Role::System => false,
        Role::Agent => matches!(
            permission,
            P::UseConsole | P::ReadOwnConversations | P::ReadPlayerHistory
        ),
        // Everything an agent may, plus seeing and stepping into every conversation
        // and keeping the catalog; not accounts, player data or the audit log.
        Role::Supervisor => !matches!(
            permission,
            P::ManageAccounts | P::ManagePlayerData | P::ReadAuditLog
        ),
        Role::Admin => true,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The table in `docs/permissions.md`, as (permission name, [agent,
    /// supervisor, admin]) rows.
    fn documented() -> Vec<(String, [bool; 3])> {
        let doc = include_str!("../../../docs/permissions.md");
        let mut rows = Vec::new();
        let mut in_table = false;
        for line in doc.lines() {
            let line = line.trim();
            if !line.starts_with('|') {
                if in_table {
                    break;
                }
                continue;
            }
            let cells: Vec<&str> = line
                .trim_matches('|')
                .split('|')
                .map(|c| c.trim())
                .collect();
            if !in_table {
                assert_eq!(
                    cells[cells.len() - 3..],
                    ["agent", "supervisor", "admin"],
                    "the first table's header ends with the three roles"
                );
                in_table = true;
                continue;
            }
            if cells.iter().all(|c| c.chars().all(|ch| "-: ".contains(ch))) {
                continue; // the separator line
            }
            let name = cells[0].trim_matches('`').to_owned();
            let mark = |c: &str| match c {
                "yes" => true,
                "no" => false,
                other => panic!("permission {name}: a cell is `yes` or `no`, not {other:?}"),
            };
            let n = cells.len();
            rows.push((
                name.clone(),
                [mark(cells[n - 3]), mark(cells[n - 2]), mark(cells[n - 1])],
            ));
        }
        rows
    }

    #[test]
    fn the_documented_table_is_the_code() {
        let code: Vec<(String, [bool; 3])> = Permission::ALL
            .iter()
            .map(|p| (p.name().to_owned(), ACCOUNT_ROLES.map(|r| allows(r, *p))))
            .collect();
        assert_eq!(
            documented(),
            code,
            "docs/permissions.md and permissions::allows disagree"
        );
    }

    #[test]
    fn an_admin_may_do_everything_a_supervisor_may() {
        for p in Permission::ALL {
            if allows(Role::Supervisor, p) {
                assert!(allows(Role::Admin, p), "{p:?}");
            }
            if allows(Role::Agent, p) {
                assert!(allows(Role::Supervisor, p), "{p:?}");
            }
            assert!(!allows(Role::Player, p) && !allows(Role::System, p));
        }
    }

    #[test]
    fn admin_only_actions() {
        for p in [
            Permission::ManageAccounts,
            Permission::ManagePlayerData,
            Permission::ReadAuditLog,
        ] {
            assert!(allows(Role::Admin, p));
            assert!(!allows(Role::Supervisor, p));
            assert!(!allows(Role::Agent, p));
        }
    }
}
