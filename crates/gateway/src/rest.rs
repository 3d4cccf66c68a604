//! The agent REST API and the health endpoints. Every `/api` route but `login`
//! takes `Authorization: Bearer <session token>`; errors are JSON
//! `{"error": code, "message": text}`. What a caller may do is asked of the
//! desk's permission table (`pitboss_desk::allows`); reads of transcripts and of a
//! player's history, and every change, are written to the audit log first.

use crate::AppState;
use axum::extract::{ConnectInfo, Path, Query, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use pitboss_desk::accounts::{AccountChanges, AccountError, NewAccount};
use pitboss_desk::audit::{self, AuditAction};
use pitboss_desk::{allows, Permission};
use pitboss_protocol::{
    AgentId, AgentStatus, ConversationId, ConversationState, MessageKind, PlayerId, Role,
};
use pitboss_transcripts::{
    AgentAccount, AuditFilter, CatalogItem, CatalogKind, ConversationFilter, ConversationRecord,
    KpiFilter, StoreError, MAX_AUDIT_LIMIT,
};
use serde::Deserialize;
use serde_json::json;
use std::net::SocketAddr;

/// An API error: HTTP status, stable code, message.
pub(crate) struct ApiError(StatusCode, &'static str, String);

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (self.0, Json(json!({ "error": self.1, "message": self.2 }))).into_response()
    }
}

impl From<StoreError> for ApiError {
    fn from(err: StoreError) -> Self {
        // The database's own words stay in the log.
        tracing::warn!(error = %err, "request refused: storage unavailable");
        ApiError(
            StatusCode::SERVICE_UNAVAILABLE,
            "unavailable",
            "storage unavailable: try again in a moment".into(),
        )
    }
}

type ApiResult<T> = Result<T, ApiError>;

impl From<AccountError> for ApiError {
    fn from(err: AccountError) -> Self {
        let message = err.to_string();
        match err {
            AccountError::Invalid(_) => ApiError(StatusCode::BAD_REQUEST, "bad_request", message),
            AccountError::Exists | AccountError::LastAdmin => {
                ApiError(StatusCode::CONFLICT, "conflict", message)
            }
            AccountError::NotFound => ApiError(StatusCode::NOT_FOUND, "not_found", message),
            AccountError::Hashing(_) => {
                ApiError(StatusCode::SERVICE_UNAVAILABLE, "unavailable", message)
            }
            AccountError::Store(e) => e.into(),
        }
    }
}

fn not_found() -> ApiError {
    ApiError(
        StatusCode::NOT_FOUND,
        "not_found",
        "no such conversation, or not yours".into(),
    )
}

/// Turns the framework's plain-text rejections of `/api` requests (unparseable
/// JSON, a wrong content type, a bad query string) into the API's JSON errors.
pub(crate) async fn json_errors(response: Response) -> Response {
    let status = response.status();
    let is_json = response
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/json"));
    if !status.is_client_error() || is_json {
        return response;
    }
    let code = match status {
        StatusCode::NOT_FOUND => "not_found",
        StatusCode::METHOD_NOT_ALLOWED => "method_not_allowed",
        StatusCode::UNSUPPORTED_MEDIA_TYPE => "unsupported_media_type",
        StatusCode::PAYLOAD_TOO_LARGE => "payload_too_large",
        _ => "bad_request",
    };
    // Rejection bodies are a line of text; anything longer is cut.
    let body = axum::body::to_bytes(response.into_body(), 4096)
        .await
        .map(|b| String::from_utf8_lossy(&b).trim().to_owned())
        .unwrap_or_default();
    ApiError(status, code, body).into_response()
}

/// Every API answer is for its caller alone (transcripts, a player's data): no
/// cache keeps it, and no browser guesses another type for it.
pub(crate) async fn private(mut response: Response) -> Response {
    let h = response.headers_mut();
    h.insert(
        header::CACHE_CONTROL,
        header::HeaderValue::from_static("no-store"),
    );
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        header::HeaderValue::from_static("nosniff"),
    );
    response
}

/// The most a REST request body may carry (the JSON extractor's own limit too).
const MAX_BODY_BYTES: usize = 2 * 1024 * 1024;

/// Reads a REST request's whole body, within the header timeout, before its
/// handler runs: a client that sends its headers and then its body a byte at a
/// time (or never) gets 408 and its connection is closed, instead of holding a
/// descriptor for as long as it likes.
pub(crate) async fn read_body(
    State(state): State<AppState>,
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    let (parts, body) = request.into_parts();
    let read = axum::body::to_bytes(body, MAX_BODY_BYTES);
    let refuse = |status, code, message: &str| {
        let mut response = ApiError(status, code, message.to_owned()).into_response();
        // What is left of the body is never read: the connection cannot be reused.
        response.headers_mut().insert(
            header::CONNECTION,
            header::HeaderValue::from_static("close"),
        );
        response
    };
    match tokio::time::timeout(state.config.hello_timeout, read).await {
        Ok(Ok(bytes)) => {
            let request = axum::extract::Request::from_parts(parts, axum::body::Body::from(bytes));
            next.run(request).await
        }
        // Over the limit (or the client went away, and reads no answer).
        Ok(Err(_)) => refuse(
            StatusCode::PAYLOAD_TOO_LARGE,
            "payload_too_large",
            "the request body is over 2 MiB",
        ),
        Err(_) => refuse(
            StatusCode::REQUEST_TIMEOUT,
            "request_timeout",
            "the request body did not arrive in time",
        ),
    }
}

/// `GET /healthz`: the process is up.
pub(crate) async fn healthz() -> &'static str {
    "ok\n"
}

/// How long `/readyz` waits for the store's answer.
const READY_PROBE: std::time::Duration = std::time::Duration::from_secs(1);

/// `GET /readyz`: this node takes new work (its store answers, in a cluster Redis
/// takes its heartbeats, and it is not draining).
pub(crate) async fn readyz(State(state): State<AppState>) -> Response {
    // The same rule as a player's `start`: a node that refuses new conversations
    // is not ready.
    if let Err(e) = state.desk.readiness() {
        return (StatusCode::SERVICE_UNAVAILABLE, format!("{e}\n")).into_response();
    }
    // Bounded: a store that hangs (a database gone, its pool waiting for a
    // connection) must not hang the load balancer's probe.
    match tokio::time::timeout(READY_PROBE, state.desk.store().ping()).await {
        Ok(Ok(())) => (StatusCode::OK, "ready\n").into_response(),
        Ok(Err(e)) => (StatusCode::SERVICE_UNAVAILABLE, format!("store: {e}\n")).into_response(),
        Err(_) => (
            StatusCode::SERVICE_UNAVAILABLE,
            "store: no answer in time\n",
        )
            .into_response(),
    }
}

/// `GET /metrics`: Prometheus text exposition of this node's metrics.
pub(crate) async fn metrics(State(state): State<AppState>) -> Response {
    match &state.metrics {
        Some(handle) => (
            [(
                axum::http::header::CONTENT_TYPE,
                "text/plain; version=0.0.4; charset=utf-8",
            )],
            handle.render(),
        )
            .into_response(),
        None => (StatusCode::NOT_FOUND, "metrics are not enabled\n").into_response(),
    }
}

#[derive(Deserialize)]
pub(crate) struct LoginBody {
    login: String,
    password: String,
}

/// `POST /api/login`: `{login, password}` → `{token, agent}`. Each client address
/// has a budget of attempts per minute, spent before the password is checked.
pub(crate) async fn login(
    State(state): State<AppState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    Json(body): Json<LoginBody>,
) -> ApiResult<Response> {
    let addr = crate::client_addr(peer.ip(), &headers, &state.config.trusted_proxies);
    if let Err(wait) = state.limits.login_allowed(addr) {
        metrics::counter!(pitboss_desk::telemetry::RATE_LIMITED, "limit" => "login_failures_per_address")
            .increment(1);
        tracing::info!(%addr, "too many failed logins from one address");
        let retry = wait.as_secs() + u64::from(wait.subsec_nanos() > 0);
        let mut response = ApiError(
            StatusCode::TOO_MANY_REQUESTS,
            "rate_limited",
            format!("too many failed logins from this address: try again in {retry} s"),
        )
        .into_response();
        response
            .headers_mut()
            .insert(header::RETRY_AFTER, retry.into());
        return Ok(response);
    }
    if body.login.len() > 64 || body.password.len() > 1024 {
        state.limits.login_failed(addr);
        return Err(ApiError(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            "wrong login or password".into(),
        ));
    }
    match state.desk.login(&body.login, &body.password).await {
        Ok(Some((token, account))) => {
            Ok(Json(json!({ "token": token, "agent": public(&account) })).into_response())
        }
        Err(e) => Err(ApiError(
            StatusCode::SERVICE_UNAVAILABLE,
            "unavailable",
            e.to_string(),
        )),
        Ok(None) => {
            state.limits.login_failed(addr);
            Err(ApiError(
                StatusCode::UNAUTHORIZED,
                "unauthorized",
                "wrong login or password".into(),
            ))
        }
    }
}

/// The account named by the bearer token.
async fn caller(state: &AppState, headers: &HeaderMap) -> ApiResult<AgentAccount> {
    let token = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .ok_or_else(|| {
            ApiError(
                StatusCode::UNAUTHORIZED,
                "unauthorized",
                "missing bearer token".into(),
            )
        })?;
    state.desk.agent_session(token).await.map_err(|e| match e {
        pitboss_desk::AuthError::Expired => ApiError(
            StatusCode::UNAUTHORIZED,
            "token_expired",
            "the session has expired: log in again".into(),
        ),
        // Keep the session: nothing says it is wrong.
        e @ pitboss_desk::AuthError::Unavailable(_) => ApiError(
            StatusCode::SERVICE_UNAVAILABLE,
            "unavailable",
            e.to_string(),
        ),
        e => ApiError(StatusCode::UNAUTHORIZED, "unauthorized", e.to_string()),
    })
}

/// The account named by the bearer token, if its role allows `permission`;
/// otherwise 403 `forbidden`.
async fn permitted(
    state: &AppState,
    headers: &HeaderMap,
    permission: Permission,
) -> ApiResult<AgentAccount> {
    let account = caller(state, headers).await?;
    if !allows(account.role, permission) {
        return Err(ApiError(
            StatusCode::FORBIDDEN,
            "forbidden",
            format!("your role may not {}", permission.name().replace('_', " ")),
        ));
    }
    Ok(account)
}

/// Writes an audit record before what it records happens: a record that cannot
/// be written stops the request with 503 `unavailable`.
async fn audited(
    state: &AppState,
    actor: &AgentAccount,
    action: AuditAction,
    target: &str,
    detail: serde_json::Value,
) -> ApiResult<()> {
    audit::append(&**state.desk.store(), &actor.id.0, action, target, detail)
        .await
        .map_err(|e| {
            tracing::warn!(error = %e, action = action.name(), "audit record not written: request refused");
            ApiError(
                StatusCode::SERVICE_UNAVAILABLE,
                "unavailable",
                "the audit log cannot be written, so this was not done: try again in a moment"
                    .into(),
            )
        })
}

/// An account as the API shows it: never its password hash.
fn public(a: &AgentAccount) -> serde_json::Value {
    json!({
        "id": a.id,
        "name": a.name,
        "role": a.role,
        "languages": a.languages,
        "departments": a.departments,
        "capacity": a.capacity,
    })
}

/// `GET /api/me`.
pub(crate) async fn me(State(state): State<AppState>, headers: HeaderMap) -> ApiResult<Response> {
    let account = permitted(&state, &headers, Permission::UseConsole).await?;
    Ok(Json(public(&account)).into_response())
}

#[derive(Deserialize)]
pub(crate) struct ListQuery {
    state: Option<ConversationState>,
    limit: Option<u32>,
}

/// `GET /api/conversations?state=&limit=`: an agent's own conversations; a
/// supervisor's view is every conversation.
pub(crate) async fn list_conversations(
    State(state): State<AppState>,
    headers: HeaderMap,
    Query(q): Query<ListQuery>,
) -> ApiResult<Response> {
    let account = permitted(&state, &headers, Permission::ReadOwnConversations).await?;
    let every = allows(account.role, Permission::ReadAnyConversation);
    let records = state
        .desk
        .store()
        .conversations(ConversationFilter {
            state: q.state,
            agent: (!every).then(|| account.id.clone()),
            player: None,
            limit: q.limit.unwrap_or(100).clamp(1, 500),
        })
        .await?;
    // Each listed player's card once, by id: who the conversations are with.
    let players: std::collections::BTreeMap<&str, &pitboss_protocol::PlayerCard> = records
        .iter()
        .map(|r| (r.player.id.0.as_str(), &r.player))
        .collect();
    let list: Vec<_> = records.iter().map(|r| &r.summary).collect();
    Ok(Json(json!({ "conversations": list, "players": players })).into_response())
}

async fn readable(
    state: &AppState,
    headers: &HeaderMap,
    id: &str,
) -> ApiResult<(AgentAccount, ConversationRecord)> {
    let account = permitted(state, headers, Permission::ReadOwnConversations).await?;
    let id: ConversationId = id.parse().map_err(|_| not_found())?;
    let record = state
        .desk
        .readable(&account, id)
        .await?
        .ok_or_else(not_found)?;
    Ok((account, record))
}

/// `GET /api/conversations/{id}`: the conversation, its player, its lifecycle
/// events and hand-offs.
pub(crate) async fn conversation(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> ApiResult<Response> {
    let (account, record) = readable(&state, &headers, &id).await?;
    let target = record.summary.id.to_string();
    audited(
        &state,
        &account,
        AuditAction::ConversationRead,
        &target,
        json!({}),
    )
    .await?;
    let store = state.desk.store();
    let events = store.events(record.summary.id).await?;
    let handoffs = store.handoffs(record.summary.id).await?;
    Ok(Json(json!({
        "conversation": record.summary,
        "player": record.player,
        "close_reason": record.close_reason,
        "rating_comment": record.rating_comment,
        "events": events,
        "handoffs": handoffs,
    }))
    .into_response())
}

#[derive(Deserialize)]
pub(crate) struct TranscriptQuery {
    after: Option<u64>,
    limit: Option<u32>,
}

/// `GET /api/conversations/{id}/transcript?after=&limit=`: entries as JSON
/// messages (notes included), in pages of at most 1000.
pub(crate) async fn transcript(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(id): Path<String>,
    Query(q): Query<TranscriptQuery>,
) -> ApiResult<Response> {
    let (account, record) = readable(&state, &headers, &id).await?;
    let (after, limit) = (q.after.unwrap_or(0), q.limit.unwrap_or(1000).clamp(1, 1000));
    let target = record.summary.id.to_string();
    let detail = json!({ "format": "json", "after": after, "limit": limit });
    audited(
        &state,
        &account,
        AuditAction::TranscriptRead,
        &target,
        detail,
    )
    .await?;
    let entries = state
        .desk
        .store()
        .entries(record.summary.id, after, limit, true)
        .await?;
    let messages: Vec<_> = entries.iter().map(|e| e.to_message(false)).collect();
    Ok(Json(json!({ "conversation": record.summary.id, "messages": messages })).into_response())
}

/// `GET /api/conversations/{id}/transcript.txt`: the whole transcript as plain text.
pub(crate) async fn transcript_text(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> ApiResult<Response> {
    let (account, record) = readable(&state, &headers, &id).await?;
    let s = &record.summary;
    let detail = json!({ "format": "text" });
    audited(
        &state,
        &account,
        AuditAction::TranscriptRead,
        &s.id.to_string(),
        detail,
    )
    .await?;
    let mut out = format!(
        "Conversation {}\nPlayer: {}{}\nDepartment: {}  Language: {}\nState: {:?}\n\n",
        s.id,
        s.player,
        record
            .player
            .name
            .as_deref()
            .map(|n| format!(" ({})", one_line(n)))
            .unwrap_or_default(),
        s.department,
        s.language,
        s.state,
    );
    let mut after = 0;
    loop {
        let page = state.desk.store().entries(s.id, after, 1000, true).await?;
        let full = page.len() == 1000;
        for e in &page {
            after = e.seq;
            // Who wrote it, by role first: a player cannot pass for an agent by
            // taking an agent's name.
            let role = serde_json::to_value(e.sender.role).unwrap_or_default();
            let who = format!(
                "{} {}",
                role.as_str().unwrap_or("?"),
                one_line(e.sender.name.as_deref().unwrap_or(&e.sender.id))
            );
            let time = format_time(e.at);
            let text = continued(&e.text);
            let line = match e.kind {
                MessageKind::Text => format!("[{time}] #{} {who}: {text}\n", e.seq),
                MessageKind::Note => format!("[{time}] #{} (note) {who}: {text}\n", e.seq),
                MessageKind::Event => format!("[{time}] #{} * {text}\n", e.seq),
            };
            out.push_str(&line);
        }
        if !full {
            break;
        }
    }
    Ok(([(header::CONTENT_TYPE, "text/plain; charset=utf-8")], out).into_response())
}

/// Whether `c` ends a line in some reader's eyes.
fn breaks_line(c: char) -> bool {
    matches!(
        c,
        '\n' | '\r' | '\u{0B}' | '\u{0C}' | '\u{85}' | '\u{2028}' | '\u{2029}'
    )
}

/// A name on one line: line breaks and other control characters become spaces.
fn one_line(name: &str) -> String {
    name.chars()
        .map(|c| {
            if c.is_control() || breaks_line(c) {
                ' '
            } else {
                c
            }
        })
        .collect()
}

/// Text whose every further line is indented by two spaces, so that no line of
/// a message can pass for an entry of its own (entries start with `[`).
fn continued(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        if breaks_line(c) {
            if c == '\r' && chars.peek() == Some(&'\n') {
                chars.next();
            }
            out.push_str("\n  ");
        } else {
            out.push(c);
        }
    }
    out
}

/// `GET /api/offline`: offline messages awaiting an answer (any agent).
pub(crate) async fn offline(
    State(state): State<AppState>,
    headers: HeaderMap,
) -> ApiResult<Response> {
    permitted(&state, &headers, Permission::UseConsole).await?;
    let records = state
        .desk
        .store()
        .conversations(ConversationFilter {
            state: Some(ConversationState::Offline),
            limit: 500,
            ..Default::default()
        })
        .await?;
    let mut out = Vec::with_capacity(records.len());
    for r in records {
        let first = state
            .desk
            .store()
            .entries(r.summary.id, 0, 20, false)
            .await?;
        let texts: Vec<_> = first
            .iter()
            .filter(|e| e.kind == MessageKind::Text)
            .map(|e| e.to_message(false))
            .collect();
        out.push(json!({ "conversation": r.summary, "player": r.player, "messages": texts }));
    }
    Ok(Json(json!({ "offline": out })).into_response())
}

/// `GET /api/players/{player}/conversations`: the player's earlier conversations
/// (summaries), for an account that may read any player's history, or one that
/// serves the player now: owns or is offered one of the player's open
/// conversations (see `docs/permissions.md`).
pub(crate) async fn player_conversations(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(player): Path<String>,
) -> ApiResult<Response> {
    let account = permitted(&state, &headers, Permission::ReadPlayerHistory).await?;
    let records = state
        .desk
        .store()
        .conversations(ConversationFilter {
            player: Some(PlayerId(player.clone())),
            limit: 50,
            ..Default::default()
        })
        .await?;
    let mut allowed = allows(account.role, Permission::ReadAnyPlayerHistory);
    if !allowed {
        for r in records
            .iter()
            .filter(|r| r.summary.state != ConversationState::Closed)
        {
            if state.desk.readable(&account, r.summary.id).await?.is_some() {
                allowed = true;
                break;
            }
        }
    }
    if !allowed {
        return Err(ApiError(
            StatusCode::FORBIDDEN,
            "forbidden",
            "you serve none of this player's open conversations".into(),
        ));
    }
    let detail = json!({ "conversations": records.len() });
    audited(
        &state,
        &account,
        AuditAction::PlayerHistoryRead,
        &player,
        detail,
    )
    .await?;
    let list: Vec<_> = records.into_iter().map(|r| r.summary).collect();
    Ok(Json(json!({ "conversations": list })).into_response())
}

/// `GET /api/agents`: accounts (without password hashes), for transfer targets.
pub(crate) async fn agents(
    State(state): State<AppState>,
    headers: HeaderMap,
) -> ApiResult<Response> {
    permitted(&state, &headers, Permission::UseConsole).await?;
    let accounts = state.desk.store().agents().await?;
    let roster = state
        .desk
        .agent_roster(accounts.iter().map(|a| a.id.clone()).collect())
        .await;
    let list: Vec<serde_json::Value> = accounts
        .iter()
        .enumerate()
        .map(|(i, a)| {
            let mut v = public(a);
            let (status, load) = match roster.as_ref().map(|r| r[i]) {
                Some((status, load)) => (status, Some(load)),
                // Routing did not answer: nobody is known to be online.
                None => (AgentStatus::Offline, None),
            };
            v["status"] = json!(status);
            v["load"] = json!(load);
            v
        })
        .collect();
    Ok(Json(json!({ "agents": list })).into_response())
}

/// `GET /api/departments`: every department some account serves, and the default.
pub(crate) async fn departments(
    State(state): State<AppState>,
    headers: HeaderMap,
) -> ApiResult<Response> {
    permitted(&state, &headers, Permission::UseConsole).await?;
    let mut list: Vec<String> = state
        .desk
        .store()
        .agents()
        .await?
        .into_iter()
        .flat_map(|a| a.departments)
        .collect();
    list.push(state.desk.config().default_department.clone());
    list.sort();
    list.dedup();
    Ok(Json(json!({ "departments": list })).into_response())
}

#[derive(Deserialize)]
pub(crate) struct KpiQuery {
    since: Option<u64>,
    until: Option<u64>,
    department: Option<String>,
    agent: Option<String>,
}

/// The longest window `GET /api/kpis` takes: 31 days.
const MAX_KPI_WINDOW_MS: u64 = 31 * 24 * 3_600_000;

/// The window `GET /api/kpis` takes when given no `since`: the last 24 hours.
const DEFAULT_KPI_WINDOW_MS: u64 = 24 * 3_600_000;

/// The most conversations one `GET /api/kpis` reads.
const MAX_KPI_CONVERSATIONS: u32 = 100_000;

/// `GET /api/kpis?since=&until=&department=&agent=`: waiting time, first
/// response, resolution time and satisfaction of the conversations started in
/// the window. Supervisors and admins: everyone's, or one agent's; an agent: their
/// own (those they own, or owned last).
pub(crate) async fn kpis(
    State(state): State<AppState>,
    headers: HeaderMap,
    Query(q): Query<KpiQuery>,
) -> ApiResult<Response> {
    let bad = |message: String| ApiError(StatusCode::BAD_REQUEST, "bad_request", message);
    let until = q.until.unwrap_or_else(pitboss_transcripts::now_ms);
    let since = q
        .since
        .unwrap_or_else(|| until.saturating_sub(DEFAULT_KPI_WINDOW_MS));
    if since > until {
        return Err(bad("`since` is after `until`".into()));
    }
    if until - since > MAX_KPI_WINDOW_MS {
        return Err(bad("the window is longer than 31 days".into()));
    }
    let nonempty = |v: Option<String>| v.filter(|s| !s.is_empty());
    let account = permitted(&state, &headers, Permission::ReadOwnConversations).await?;
    let agent = match nonempty(q.agent) {
        Some(agent) if allows(account.role, Permission::ReadAnyConversation) => Some(agent),
        Some(agent) if agent != account.id.0 => {
            return Err(ApiError(
                StatusCode::FORBIDDEN,
                "forbidden",
                "your role may read only your own KPIs".into(),
            ))
        }
        _ if allows(account.role, Permission::ReadAnyConversation) => None,
        _ => Some(account.id.0.clone()),
    };
    // Matched in the form every tag is stored in, as `start` normalises it.
    let department = match nonempty(q.department) {
        Some(raw) => Some(pitboss_desk::accounts::normalise_tag(&raw).ok_or_else(|| {
            bad("`department` must be 1 to 32 letters, digits, '-' or '_'".into())
        })?),
        None => None,
    };
    let rows = state
        .desk
        .store()
        .kpi_rows(KpiFilter {
            since,
            until,
            department: department.clone(),
            agent: agent.clone().map(AgentId),
            limit: MAX_KPI_CONVERSATIONS + 1,
        })
        .await?;
    // A misspelt login would read as an agent with nothing to show (a removed
    // account's conversations still count).
    if let Some(named) = agent
        .as_ref()
        .filter(|a| rows.is_empty() && **a != account.id.0)
    {
        if state
            .desk
            .store()
            .agent(&AgentId(named.clone()))
            .await?
            .is_none()
        {
            return Err(ApiError(
                StatusCode::NOT_FOUND,
                "not_found",
                format!("no account `{named}` and no conversations of it in this window"),
            ));
        }
    }
    if rows.len() > MAX_KPI_CONVERSATIONS as usize {
        return Err(bad(format!(
            "more than {MAX_KPI_CONVERSATIONS} conversations started in this window: narrow it"
        )));
    }
    let mut body = serde_json::to_value(pitboss_desk::kpis::kpis(&rows))
        .map_err(|e| ApiError(StatusCode::INTERNAL_SERVER_ERROR, "internal", e.to_string()))?;
    body["since"] = json!(since);
    body["until"] = json!(until);
    body["department"] = json!(department);
    body["agent"] = json!(agent);
    Ok(Json(body).into_response())
}

#[derive(Deserialize)]
pub(crate) struct CatalogQuery {
    kind: CatalogKind,
    language: Option<String>,
}

/// `GET /api/catalog?kind=canned_reply|close_reason&language=`: per-language texts.
pub(crate) async fn catalog(
    State(state): State<AppState>,
    headers: HeaderMap,
    Query(q): Query<CatalogQuery>,
) -> ApiResult<Response> {
    permitted(&state, &headers, Permission::UseConsole).await?;
    let items = state
        .desk
        .store()
        .catalog(q.kind, q.language.as_deref())
        .await?;
    Ok(Json(json!({ "items": items })).into_response())
}

/// The longest department display name, in characters.
const MAX_DEPARTMENT_NAME_CHARS: usize = 64;

fn catalog_field(value: &str, max: usize, what: &str) -> ApiResult<()> {
    if value.trim().is_empty() || value.chars().count() > max {
        return Err(ApiError(
            StatusCode::BAD_REQUEST,
            "invalid_field",
            format!("{what} must be 1 to {max} characters"),
        ));
    }
    Ok(())
}

/// A catalog item's name in the audit log: `kind/language/key`.
fn catalog_target(kind: CatalogKind, language: &str, key: &str) -> String {
    let kind = serde_json::to_value(kind)
        .ok()
        .and_then(|v| v.as_str().map(str::to_owned))
        .unwrap_or_default();
    format!("{kind}/{language}/{key}")
}

/// `PUT /api/catalog` (supervisors): creates or replaces `{kind, language, key, text}`.
pub(crate) async fn put_catalog(
    State(state): State<AppState>,
    headers: HeaderMap,
    Json(mut item): Json<CatalogItem>,
) -> ApiResult<Response> {
    let account = permitted(&state, &headers, Permission::ManageCatalog).await?;
    catalog_field(&item.language, 16, "language")?;
    // A language the agents' own tags can match, like every other language.
    item.language = pitboss_desk::accounts::normalise_tag(&item.language).ok_or_else(|| {
        ApiError(
            StatusCode::BAD_REQUEST,
            "invalid_field",
            "language must be a tag: letters, digits, '-' or '_'".into(),
        )
    })?;
    catalog_field(&item.key, 64, "key")?;
    if item.kind == CatalogKind::Department {
        // Named by the tag conversations carry; the name goes into transcript text.
        item.key = pitboss_desk::accounts::normalise_tag(&item.key).ok_or_else(|| {
            ApiError(
                StatusCode::BAD_REQUEST,
                "invalid_field",
                "a department's key is its tag: 1 to 32 letters, digits, '-' or '_'".into(),
            )
        })?;
        catalog_field(&item.text, MAX_DEPARTMENT_NAME_CHARS, "text")?;
        if item.text.chars().any(char::is_control) {
            return Err(ApiError(
                StatusCode::BAD_REQUEST,
                "invalid_field",
                "a department's name is one line".into(),
            ));
        }
    } else {
        catalog_field(&item.text, pitboss_protocol::limits::MAX_TEXT_CHARS, "text")?;
    }
    let target = catalog_target(item.kind, &item.language, &item.key);
    audited(
        &state,
        &account,
        AuditAction::CatalogPut,
        &target,
        json!({}),
    )
    .await?;
    state.desk.store().put_catalog(item.clone()).await?;
    Ok((StatusCode::OK, Json(json!({ "item": item }))).into_response())
}

/// `DELETE /api/catalog/{kind}/{language}/{key}` (supervisors).
pub(crate) async fn remove_catalog(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path((kind, language, key)): Path<(String, String, String)>,
) -> ApiResult<Response> {
    let account = permitted(&state, &headers, Permission::ManageCatalog).await?;
    let kind: CatalogKind =
        serde_json::from_value(serde_json::Value::String(kind)).map_err(|_| {
            ApiError(
                StatusCode::NOT_FOUND,
                "not_found",
                "no such catalog kind".into(),
            )
        })?;
    let target = catalog_target(kind, &language, &key);
    audited(
        &state,
        &account,
        AuditAction::CatalogRemove,
        &target,
        json!({}),
    )
    .await?;
    if state
        .desk
        .store()
        .remove_catalog(kind, &language, &key)
        .await?
    {
        Ok(StatusCode::NO_CONTENT.into_response())
    } else {
        Err(ApiError(
            StatusCode::NOT_FOUND,
            "not_found",
            "no such item".into(),
        ))
    }
}

/// `POST /api/accounts` body: a new account. Unknown fields are refused, so a
/// misspelt one is not silently ignored.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct NewAccountBody {
    login: String,
    name: Option<String>,
    role: Option<String>,
    languages: Option<Vec<String>>,
    departments: Option<Vec<String>>,
    capacity: Option<u32>,
    password: String,
}

/// `PATCH /api/accounts/{id}` body: the fields to change.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct AccountChangesBody {
    name: Option<String>,
    role: Option<String>,
    languages: Option<Vec<String>>,
    departments: Option<Vec<String>>,
    capacity: Option<u32>,
    password: Option<String>,
}

/// An account role from its name; anything else is 400 `bad_request`.
fn account_role(name: &str) -> ApiResult<Role> {
    match name {
        "agent" => Ok(Role::Agent),
        "supervisor" => Ok(Role::Supervisor),
        "admin" => Ok(Role::Admin),
        _ => Err(ApiError(
            StatusCode::BAD_REQUEST,
            "bad_request",
            "role is agent, supervisor or admin".into(),
        )),
    }
}

/// `GET /api/accounts` (admins): every account, by login.
pub(crate) async fn accounts(
    State(state): State<AppState>,
    headers: HeaderMap,
) -> ApiResult<Response> {
    permitted(&state, &headers, Permission::ManageAccounts).await?;
    let list: Vec<_> = state
        .desk
        .store()
        .agents()
        .await?
        .iter()
        .map(public)
        .collect();
    Ok(Json(json!({ "accounts": list })).into_response())
}

/// `POST /api/accounts` (admins): creates an account; 409 if the login exists.
pub(crate) async fn create_account(
    State(state): State<AppState>,
    headers: HeaderMap,
    Json(body): Json<NewAccountBody>,
) -> ApiResult<Response> {
    let admin = permitted(&state, &headers, Permission::ManageAccounts).await?;
    let role = account_role(body.role.as_deref().unwrap_or("agent"))?;
    let new = NewAccount {
        login: body.login,
        name: body.name,
        role,
        languages: body.languages.unwrap_or_else(|| vec!["en".into()]),
        departments: body.departments.unwrap_or_else(|| vec!["general".into()]),
        capacity: body.capacity.unwrap_or(3),
        password: body.password,
    };
    let account = state.desk.create_account(&admin.id, new).await?;
    Ok((
        StatusCode::CREATED,
        Json(json!({ "account": public(&account) })),
    )
        .into_response())
}

/// `PATCH /api/accounts/{id}` (admins): changes the fields given.
pub(crate) async fn update_account(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(id): Path<String>,
    Json(body): Json<AccountChangesBody>,
) -> ApiResult<Response> {
    let admin = permitted(&state, &headers, Permission::ManageAccounts).await?;
    let changes = AccountChanges {
        name: body.name,
        role: body.role.as_deref().map(account_role).transpose()?,
        languages: body.languages,
        departments: body.departments,
        capacity: body.capacity,
        password: body.password,
    };
    let account = state
        .desk
        .update_account(&admin.id, &AgentId(id), changes)
        .await?;
    Ok(Json(json!({ "account": public(&account) })).into_response())
}

/// `DELETE /api/accounts/{id}` (admins): removes the account and closes its
/// connections.
pub(crate) async fn remove_account(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> ApiResult<Response> {
    let admin = permitted(&state, &headers, Permission::ManageAccounts).await?;
    state.desk.remove_account(&admin.id, &AgentId(id)).await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

#[derive(Deserialize)]
pub(crate) struct AuditQuery {
    actor: Option<String>,
    action: Option<String>,
    target: Option<String>,
    since: Option<u64>,
    limit: Option<u32>,
}

/// `GET /api/audit?actor=&action=&target=&since=&limit=` (admins): audit records,
/// newest first.
pub(crate) async fn audit_log(
    State(state): State<AppState>,
    headers: HeaderMap,
    Query(q): Query<AuditQuery>,
) -> ApiResult<Response> {
    permitted(&state, &headers, Permission::ReadAuditLog).await?;
    let nonempty = |v: Option<String>| v.filter(|s| !s.is_empty());
    let records = state
        .desk
        .store()
        .audit(AuditFilter {
            actor: nonempty(q.actor),
            action: nonempty(q.action),
            target: nonempty(q.target),
            since: q.since,
            limit: q.limit.unwrap_or(100).clamp(1, MAX_AUDIT_LIMIT),
        })
        .await?;
    Ok(Json(json!({ "records": records })).into_response())
}

/// `GET /api/players/{player}/export`: everything stored about the player, as a
/// JSON download.
pub(crate) async fn export_player(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(player): Path<String>,
) -> ApiResult<Response> {
    let account = permitted(&state, &headers, Permission::ManagePlayerData).await?;
    audited(
        &state,
        &account,
        AuditAction::PlayerExport,
        &player,
        json!({}),
    )
    .await?;
    let export = state
        .desk
        .store()
        .export_player(&PlayerId(player.clone()))
        .await?;
    let body = serde_json::to_vec_pretty(&export).map_err(|e| {
        ApiError(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            format!("serialising the export: {e}"),
        )
    })?;
    tracing::info!(agent = %account.id, %player, conversations = export.conversations.len(), "player data exported");
    let disposition = format!(
        "attachment; filename=\"pitboss-player-{}.json\"",
        file_safe(&player)
    );
    Ok((
        [
            (header::CONTENT_TYPE, "application/json".to_owned()),
            (header::CONTENT_DISPOSITION, disposition),
        ],
        body,
    )
        .into_response())
}

/// `DELETE /api/players/{player}`: erases everything stored about the player;
/// 409 `conflict` while one of their conversations is open.
pub(crate) async fn erase_player(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(player): Path<String>,
) -> ApiResult<Response> {
    let account = permitted(&state, &headers, Permission::ManagePlayerData).await?;
    audited(
        &state,
        &account,
        AuditAction::PlayerErase,
        &player,
        json!({}),
    )
    .await?;
    match state
        .desk
        .store()
        .erase_player(&PlayerId(player.clone()))
        .await
    {
        Ok(deleted) => {
            tracing::info!(
                agent = %account.id,
                %player,
                conversations = deleted.conversations,
                entries = deleted.entries,
                "player data erased"
            );
            Ok(Json(json!({ "player": player, "deleted": deleted })).into_response())
        }
        Err(StoreError::Precondition) => Err(ApiError(
            StatusCode::CONFLICT,
            "conflict",
            "the player has an open conversation (queued, active or offline): close it \
             first, then erase"
                .into(),
        )),
        Err(e) => Err(e.into()),
    }
}

/// `s` with anything but ASCII letters, digits, `-`, `_` and `.` replaced by `_`,
/// for a file name in a header.
fn file_safe(s: &str) -> String {
    s.chars()
        .take(128)
        .map(|c| {
            if c.is_ascii_alphanumeric() || "-_.".contains(c) {
                c
            } else {
                '_'
            }
        })
        .collect()
}

/// RFC 3339 UTC, to the second, for Unix milliseconds.
fn format_time(ms: u64) -> String {
    let t = std::time::UNIX_EPOCH + std::time::Duration::from_millis(ms);
    humantime::format_rfc3339_seconds(t).to_string()
}

#[cfg(test)]
mod tests {
    #[test]
    fn times_format_as_utc() {
        assert_eq!(super::format_time(0), "1970-01-01T00:00:00Z");
        assert_eq!(
            super::format_time(1_700_000_000_000),
            "2023-11-14T22:13:20Z"
        );
    }

    #[test]
    fn export_file_names_keep_only_safe_characters() {
        assert_eq!(super::file_safe("v:0193-ab"), "v_0193-ab");
        assert_eq!(super::file_safe("p:\"/../x"), "p___.._x");
    }
}
