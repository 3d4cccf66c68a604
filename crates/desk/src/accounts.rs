//! Account management shared by the operator's CLI and the admins' REST API: the
//! rules a login, password, name, tags and capacity must follow, creating,
//! changing and removing an account, and the audit record of each change.
//!
//! It does not check who is asking (the permission table and the REST handlers
//! do) or close a removed account's connections (the desk does, see
//! `Desk::enforce_account`).

use crate::audit::{self, AuditAction};
use pitboss_protocol::{AgentId, Role};
use pitboss_transcripts::{now_ms, AgentAccount, Store, StoreError};
use serde_json::json;

/// The longest login.
pub const MAX_LOGIN_BYTES: usize = 64;
/// The shortest password.
pub const MIN_PASSWORD_CHARS: usize = 8;
/// The longest password (argon2 takes any length; this bounds the work).
pub const MAX_PASSWORD_BYTES: usize = 1024;
/// The longest display name.
pub const MAX_NAME_CHARS: usize = 100;
/// The most conversations one account may hold at once.
pub const MAX_CAPACITY: u32 = 100;
/// The most languages or departments one account may serve.
pub const MAX_TAGS: usize = 32;

/// Why an account change was refused.
#[derive(Debug, thiserror::Error)]
pub enum AccountError {
    /// A field breaks its rule; nothing changed.
    #[error("{0}")]
    Invalid(String),
    /// An account with this login exists already.
    #[error("an account with this login exists already")]
    Exists,
    /// No account with this login.
    #[error("no such account")]
    NotFound,
    /// The change would leave no admin.
    #[error("this is the last admin: another admin must exist first")]
    LastAdmin,
    /// The password could not be hashed (the hashing task failed); nothing changed.
    #[error("hashing the password failed: {0}")]
    Hashing(String),
    /// The store failed, or the audit record could not be written; nothing changed.
    #[error(transparent)]
    Store(StoreError),
}

impl From<StoreError> for AccountError {
    /// The store's own refusal to take the admin role from the last admin (another
    /// admin's change won the race past [`ensure_an_admin_remains`]) is the same
    /// answer as the check's.
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::LastAdmin => AccountError::LastAdmin,
            e => AccountError::Store(e),
        }
    }
}

/// Checks a login: 1 to 64 letters, digits, `.`, `_`, `-` or `@`, and not
/// `system`, which names the server itself in transcripts, events and the audit log.
pub fn check_login(login: &str) -> Result<(), AccountError> {
    if login.eq_ignore_ascii_case("system") {
        return Err(AccountError::Invalid(
            "`system` is reserved for the server itself".into(),
        ));
    }
    let ok = !login.is_empty()
        && login.len() <= MAX_LOGIN_BYTES
        && login
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "._-@".contains(c));
    if ok {
        Ok(())
    } else {
        Err(AccountError::Invalid(
            "a login is 1 to 64 letters, digits, '.', '_', '-' or '@'".into(),
        ))
    }
}

/// Checks a password: at least 8 characters, at most 1024 bytes.
pub fn check_password(password: &str) -> Result<(), AccountError> {
    if password.chars().count() < MIN_PASSWORD_CHARS || password.len() > MAX_PASSWORD_BYTES {
        return Err(AccountError::Invalid(
            "a password has at least 8 characters (and at most 1024 bytes)".into(),
        ));
    }
    Ok(())
}

/// Checks a display name: 1 to 100 characters, not blank. Returns it trimmed.
pub fn check_name(name: &str) -> Result<String, AccountError> {
    let name = name.trim();
    if name.is_empty() || name.chars().count() > MAX_NAME_CHARS {
        return Err(AccountError::Invalid(
            "a name is 1 to 100 characters".into(),
        ));
    }
    Ok(name.to_owned())
}

/// Checks a role: an account is an agent, a supervisor or an admin.
pub fn check_role(role: Role) -> Result<(), AccountError> {
    match role {
        Role::Agent | Role::Supervisor | Role::Admin => Ok(()),
        Role::Player | Role::System => Err(AccountError::Invalid(
            "a role is agent, supervisor or admin".into(),
        )),
    }
}

/// Checks a capacity: 0 to 100 conversations at once.
pub fn check_capacity(capacity: u32) -> Result<(), AccountError> {
    if capacity > MAX_CAPACITY {
        return Err(AccountError::Invalid(format!(
            "capacity is 0 to {MAX_CAPACITY}"
        )));
    }
    Ok(())
}

/// A department or language tag, trimmed and lowercased, if it then is 1 to 32
/// letters, digits, `-` or `_`: the one form every tag is stored and matched in.
pub fn normalise_tag(raw: &str) -> Option<String> {
    let tag = raw.trim().to_ascii_lowercase();
    let ok = (1..=32).contains(&tag.len())
        && tag
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_');
    ok.then_some(tag)
}

/// Normalises languages or departments: lowercased, deduplicated, each 1 to 32
/// letters, digits, `-` or `_`; at least one, at most 32.
pub fn check_tags(tags: &[String], what: &str) -> Result<Vec<String>, AccountError> {
    let mut out: Vec<String> = Vec::with_capacity(tags.len());
    for tag in tags {
        let Some(tag) = normalise_tag(tag) else {
            return Err(AccountError::Invalid(format!(
                "{what}: each is 1 to 32 letters, digits, '-' or '_'"
            )));
        };
        if !out.contains(&tag) {
            out.push(tag);
        }
    }
    if out.is_empty() || out.len() > MAX_TAGS {
        return Err(AccountError::Invalid(format!(
            "{what}: 1 to {MAX_TAGS} of them"
        )));
    }
    Ok(out)
}

/// A new account, as the operator or an admin describes it.
#[derive(Debug, Clone)]
pub struct NewAccount {
    /// Login.
    pub login: String,
    /// Display name; the login when absent.
    pub name: Option<String>,
    /// Agent, supervisor or admin.
    pub role: Role,
    /// Languages served.
    pub languages: Vec<String>,
    /// Departments served.
    pub departments: Vec<String>,
    /// Conversations at once.
    pub capacity: u32,
    /// The password, hashed with argon2 before it is stored; never recorded.
    pub password: String,
}

/// Changes to an account; absent fields stay as they are.
#[derive(Debug, Clone, Default)]
pub struct AccountChanges {
    /// New display name.
    pub name: Option<String>,
    /// New role.
    pub role: Option<Role>,
    /// New languages.
    pub languages: Option<Vec<String>>,
    /// New departments.
    pub departments: Option<Vec<String>>,
    /// New capacity.
    pub capacity: Option<u32>,
    /// New password.
    pub password: Option<String>,
}

/// Checks every field of a new account and builds it (with its password hash).
async fn build(new: NewAccount) -> Result<AgentAccount, AccountError> {
    check_login(&new.login)?;
    check_role(new.role)?;
    check_password(&new.password)?;
    check_capacity(new.capacity)?;
    let name = check_name(new.name.as_deref().unwrap_or(&new.login))?;
    let languages = check_tags(&new.languages, "languages")?;
    let departments = check_tags(&new.departments, "departments")?;
    let password_hash = hash(&new.password).await?;
    Ok(AgentAccount {
        id: AgentId(new.login),
        name,
        password_hash,
        role: new.role,
        languages,
        departments,
        capacity: new.capacity,
        created_at: now_ms(),
        sessions_ended_at: 0,
    })
}

/// Hashes a password with argon2 off the async workers: it takes tens of
/// milliseconds of CPU on purpose.
async fn hash(password: &str) -> Result<String, AccountError> {
    crate::auth::new_password_hash(password.to_owned())
        .await
        .map_err(|e| AccountError::Hashing(e.to_string()))?
        .map_err(AccountError::Hashing)
}

/// What the audit log keeps of an account: never its password or hash.
fn audit_detail(account: &AgentAccount) -> serde_json::Value {
    json!({
        "name": account.name,
        "role": account.role,
        "languages": account.languages,
        "departments": account.departments,
        "capacity": account.capacity,
    })
}

/// Creates an account; [`AccountError::Exists`] if the login is taken.
pub async fn create(
    store: &dyn Store,
    actor: &str,
    new: NewAccount,
) -> Result<AgentAccount, AccountError> {
    let account = build(new).await?;
    if store.agent(&account.id).await?.is_some() {
        return Err(AccountError::Exists);
    }
    audit::append(
        store,
        actor,
        AuditAction::AccountCreate,
        &account.id.0,
        audit_detail(&account),
    )
    .await?;
    store.put_agent(account.clone()).await?;
    Ok(account)
}

/// Creates an account, or replaces the one with this login (the operator's
/// `pitboss agent add`). Returns the account and whether it existed.
pub async fn create_or_replace(
    store: &dyn Store,
    actor: &str,
    new: NewAccount,
) -> Result<(AgentAccount, bool), AccountError> {
    let account = build(new).await?;
    let existing = store.agent(&account.id).await?;
    if let Some(old) = &existing {
        ensure_an_admin_remains(store, old, Some(account.role)).await?;
        audit::append(
            store,
            actor,
            AuditAction::AccountUpdate,
            &account.id.0,
            audit_detail(&account),
        )
        .await?;
        // A replaced account always gets the password given.
        audit::append(
            store,
            actor,
            AuditAction::AccountPassword,
            &account.id.0,
            json!({}),
        )
        .await?;
    } else {
        audit::append(
            store,
            actor,
            AuditAction::AccountCreate,
            &account.id.0,
            audit_detail(&account),
        )
        .await?;
    }
    store.put_agent(account.clone()).await?;
    Ok((account, existing.is_some()))
}

/// Changes an account. A new role that would leave no admin is
/// [`AccountError::LastAdmin`].
pub async fn update(
    store: &dyn Store,
    actor: &str,
    id: &AgentId,
    changes: AccountChanges,
) -> Result<AgentAccount, AccountError> {
    let old = store.agent(id).await?.ok_or(AccountError::NotFound)?;
    let mut account = old.clone();
    if let Some(name) = &changes.name {
        account.name = check_name(name)?;
    }
    if let Some(role) = changes.role {
        check_role(role)?;
        account.role = role;
    }
    if let Some(languages) = &changes.languages {
        account.languages = check_tags(languages, "languages")?;
    }
    if let Some(departments) = &changes.departments {
        account.departments = check_tags(departments, "departments")?;
    }
    if let Some(capacity) = changes.capacity {
        check_capacity(capacity)?;
        account.capacity = capacity;
    }
    if let Some(password) = &changes.password {
        check_password(password)?;
        account.password_hash = hash(password).await?;
    }
    ensure_an_admin_remains(store, &old, Some(account.role)).await?;
    let profile_changed = AgentAccount {
        password_hash: old.password_hash.clone(),
        ..account.clone()
    } != old;
    if profile_changed {
        audit::append(
            store,
            actor,
            AuditAction::AccountUpdate,
            &id.0,
            audit_detail(&account),
        )
        .await?;
    }
    if changes.password.is_some() {
        audit::append(store, actor, AuditAction::AccountPassword, &id.0, json!({})).await?;
    }
    store.put_agent(account.clone()).await?;
    Ok(account)
}

/// Removes an account. Removing the last admin is [`AccountError::LastAdmin`].
pub async fn remove(store: &dyn Store, actor: &str, id: &AgentId) -> Result<(), AccountError> {
    let old = store.agent(id).await?.ok_or(AccountError::NotFound)?;
    ensure_an_admin_remains(store, &old, None).await?;
    audit::append(
        store,
        actor,
        AuditAction::AccountRemove,
        &id.0,
        json!({ "role": old.role }),
    )
    .await?;
    if store.remove_agent(id).await? {
        Ok(())
    } else {
        Err(AccountError::NotFound)
    }
}

/// Refuses a change that takes the admin role from `old` (a new role other than
/// admin, or `None`: removal) when no other admin exists. Where there is no admin
/// at all (accounts made before the role existed), nothing is refused.
async fn ensure_an_admin_remains(
    store: &dyn Store,
    old: &AgentAccount,
    new_role: Option<Role>,
) -> Result<(), AccountError> {
    if old.role != Role::Admin || new_role == Some(Role::Admin) {
        return Ok(());
    }
    let others = store
        .agents()
        .await?
        .iter()
        .filter(|a| a.role == Role::Admin && a.id != old.id)
        .count();
    if others == 0 {
        return Err(AccountError::LastAdmin);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tags_are_normalised_and_checked() {
        let tags = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert_eq!(
            check_tags(&tags(&["EN", " tr ", "en"]), "languages").unwrap(),
            ["en", "tr"]
        );
        assert!(check_tags(&tags(&[]), "languages").is_err());
        assert!(check_tags(&tags(&["e n"]), "languages").is_err());
    }

    #[test]
    fn logins_passwords_and_roles_follow_their_rules() {
        assert!(check_login("ayla.k@casino").is_ok());
        assert!(check_login("").is_err());
        assert!(check_login("a b").is_err());
        assert!(check_login("System").is_err(), "reserved");
        assert!(check_login(&"a".repeat(65)).is_err());
        assert!(check_password("short").is_err());
        assert!(check_password("long enough").is_ok());
        assert!(check_role(Role::Player).is_err());
        assert!(check_role(Role::Admin).is_ok());
        assert!(check_capacity(101).is_err());
        assert!(check_name("   ").is_err());
    }
}
