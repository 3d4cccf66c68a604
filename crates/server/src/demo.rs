//! `pitboss serve --demo`: demo agents in two languages, a supervisor, and canned
//! replies and close reasons in every shipped language, so a new user sees the
//! whole thing in a minute. The password is made at the first demo start and kept
//! in the store, so every start and every node on that store logs the same one,
//! unless one is given (`--demo-password`). Accounts that exist already are never
//! changed: an earlier demo's still take the password, the operator's own do not.

use pitboss_desk::auth::{hash_password, verify_password};
use pitboss_protocol::{AgentId, Role};
use pitboss_transcripts::{now_ms, AgentAccount, CatalogItem, CatalogKind, Store};

struct DemoAgent {
    login: &'static str,
    name: &'static str,
    role: Role,
    languages: &'static [&'static str],
    departments: &'static [&'static str],
}

const AGENTS: &[DemoAgent] = &[
    DemoAgent {
        login: "ayla",
        name: "Ayla",
        role: Role::Agent,
        languages: &["en", "tr"],
        departments: &["general", "payments"],
    },
    DemoAgent {
        login: "olga",
        name: "Olga",
        role: Role::Agent,
        languages: &["ru", "az", "en"],
        departments: &["general", "technical"],
    },
    DemoAgent {
        login: "sam",
        name: "Sam",
        role: Role::Supervisor,
        languages: &["en", "tr", "az", "ru"],
        departments: &["general", "payments", "technical"],
    },
];

const CANNED: &[(&str, &str, &str)] = &[
    ("en", "hello", "Hello! How can I help you today?"),
    (
        "en",
        "wait",
        "Thank you for waiting, I am checking this for you.",
    ),
    ("en", "bye", "Is there anything else I can help you with?"),
    (
        "tr",
        "hello",
        "Merhaba! Size bugün nasıl yardımcı olabilirim?",
    ),
    (
        "tr",
        "wait",
        "Beklediğiniz için teşekkürler, sizin için kontrol ediyorum.",
    ),
    (
        "tr",
        "bye",
        "Size yardımcı olabileceğim başka bir konu var mı?",
    ),
    ("az", "hello", "Salam! Bu gün sizə necə kömək edə bilərəm?"),
    (
        "az",
        "wait",
        "Gözlədiyiniz üçün təşəkkürlər, sizin üçün yoxlayıram.",
    ),
    ("az", "bye", "Sizə kömək edə biləcəyim başqa bir şey varmı?"),
    ("ru", "hello", "Здравствуйте! Чем я могу вам помочь?"),
    ("ru", "wait", "Спасибо за ожидание, я проверяю это для вас."),
    ("ru", "bye", "Могу ли я помочь вам чем-нибудь ещё?"),
];

/// The demo departments' display names (language, tag, name).
const DEPARTMENTS: &[(&str, &str, &str)] = &[
    ("en", "general", "General support"),
    ("en", "payments", "Payments"),
    ("en", "technical", "Technical support"),
    ("tr", "general", "Genel destek"),
    ("tr", "payments", "Ödemeler"),
    ("tr", "technical", "Teknik destek"),
    ("az", "general", "Ümumi dəstək"),
    ("az", "payments", "Ödənişlər"),
    ("az", "technical", "Texniki dəstək"),
    ("ru", "general", "Общая поддержка"),
    ("ru", "payments", "Платежи"),
    ("ru", "technical", "Техническая поддержка"),
];

const REASONS: &[(&str, &str, &str)] = &[
    ("en", "resolved", "Resolved"),
    ("en", "no_reply", "No reply from player"),
    ("en", "spam", "Spam"),
    ("tr", "resolved", "Çözüldü"),
    ("tr", "no_reply", "Oyuncudan yanıt yok"),
    ("tr", "spam", "Spam"),
    ("az", "resolved", "Həll edildi"),
    ("az", "no_reply", "Oyunçudan cavab yoxdur"),
    ("az", "spam", "Spam"),
    ("ru", "resolved", "Решено"),
    ("ru", "no_reply", "Игрок не ответил"),
    ("ru", "spam", "Спам"),
];

/// Creates the demo accounts that do not exist yet, with `password` or a fresh
/// one, and seeds the catalog where it is empty. An account that exists is left
/// as it is: it may be a real one of the same login (the README's `ayla` and
/// `sam`), whose password, languages and departments the demo must not rewrite.
pub(crate) async fn prepare(store: &dyn Store, password: Option<&str>) -> anyhow::Result<()> {
    let given = password.is_some();
    let password = match password {
        Some(p) => p.to_owned(),
        // Kept in the store: a restart, or another node, logs the password that
        // the demo accounts made earlier still take.
        None => {
            let kept = store
                .secret("demo_password", fresh_password().into_bytes())
                .await?;
            String::from_utf8(kept)
                .map_err(|_| anyhow::anyhow!("the stored demo password is not text"))?
        }
    };
    let shown = if given {
        "(as given)"
    } else {
        password.as_str()
    };
    let hash = hash_password(&password).map_err(|e| anyhow::anyhow!(e))?;
    for a in AGENTS {
        match store.agent(&AgentId(a.login.into())).await? {
            None => {
                store.put_agent(demo_account(a, hash.clone())).await?;
                log_demo_agent(a, shown);
            }
            // The account an earlier demo start made with this password (a restart,
            // another node on the store): the password logged still applies.
            Some(old) if verify_password(&password, &old.password_hash) => {
                log_demo_agent(a, shown);
            }
            Some(_) => tracing::warn!(
                login = a.login,
                "an account named {0} exists already: left as it is, and the demo \
                 password does not apply to it (log in with its own password, or \
                 `pitboss agent remove {0}` for the demo to create it at the next start)",
                a.login
            ),
        }
    }
    for (kind, items) in [
        (CatalogKind::CannedReply, CANNED),
        (CatalogKind::CloseReason, REASONS),
        (CatalogKind::Department, DEPARTMENTS),
    ] {
        if !store.catalog(kind, None).await?.is_empty() {
            continue;
        }
        for (language, key, text) in items {
            store
                .put_catalog(CatalogItem {
                    kind,
                    language: (*language).into(),
                    key: (*key).into(),
                    text: (*text).into(),
                })
                .await?;
        }
    }
    Ok(())
}

/// The account of demo agent `a`, with password hash `hash`.
fn demo_account(a: &DemoAgent, hash: String) -> AgentAccount {
    AgentAccount {
        id: AgentId(a.login.into()),
        name: a.name.into(),
        password_hash: hash,
        role: a.role,
        languages: a.languages.iter().map(|s| s.to_string()).collect(),
        departments: a.departments.iter().map(|s| s.to_string()).collect(),
        capacity: 3,
        created_at: now_ms(),
        sessions_ended_at: 0,
    }
}

/// Logs a demo agent's login and the password it takes (`password`: the text
/// logged for it).
fn log_demo_agent(a: &DemoAgent, password: &str) {
    tracing::info!(
        login = a.login,
        password = %password,
        languages = %a.languages.join(","),
        supervisor = a.role == Role::Supervisor,
        "demo agent"
    );
}

fn fresh_password() -> String {
    use std::fmt::Write;
    let bytes: [u8; 6] = rand::random();
    bytes.iter().fold(String::from("demo-"), |mut s, b| {
        let _ = write!(s, "{b:02x}");
        s
    })
}
