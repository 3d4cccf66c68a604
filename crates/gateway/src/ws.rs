//! The WebSocket endpoint: `hello` first, then one task reading frames (decode,
//! rate limit, hand to the desk) and one writing what the desk queued.

use crate::AppState;
use axum::extract::ws::{CloseFrame, Message, Utf8Bytes, WebSocket, WebSocketUpgrade};
use axum::extract::{ConnectInfo, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use futures_util::stream::{SplitSink, SplitStream};
use futures_util::{SinkExt, StreamExt};
use governor::{Quota, RateLimiter};
use pitboss_desk::{Delivery, FrameSink, Session, UserKey};
use pitboss_protocol::{
    decode_client, encode_server, ClientFrame, CloseCode, ErrorCode, ServerFrame, PROTOCOL_VERSION,
};
use std::net::{IpAddr, SocketAddr};
use std::num::NonZeroU32;
use tracing::Instrument;

use crate::PlayerLimits;

/// `GET /ws`: upgrades with small buffers and the frame-size limit.
pub(crate) async fn upgrade(
    State(state): State<AppState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    ws: WebSocketUpgrade,
) -> Response {
    if !origin_allowed(&headers, &state.config.allowed_origins) {
        let origin = headers
            .get(header::ORIGIN)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("");
        tracing::info!(origin, "WebSocket from an origin that is not allowed");
        return (StatusCode::FORBIDDEN, "this origin may not connect\n").into_response();
    }
    let c = &state.config;
    if state.sockets.load(std::sync::atomic::Ordering::Acquire) >= c.max_connections {
        // Over the cap: accept the upgrade only to say "overloaded, come back
        // later" with a close code a client understands.
        metrics::counter!(pitboss_desk::telemetry::RATE_LIMITED, "limit" => "connections")
            .increment(1);
        return refuse_upgrade(ws, CloseCode::Overloaded);
    }
    let addr = crate::client_addr(peer.ip(), &headers, &c.trusted_proxies);
    if !state.limits.connect_allowed(addr) {
        metrics::counter!(pitboss_desk::telemetry::RATE_LIMITED, "limit" => "connects_per_address")
            .increment(1);
        tracing::debug!(%addr, "too many new connections from one address");
        return refuse_upgrade(ws, CloseCode::RateLimited);
    }
    let Some(slot) = state.limits.open(addr) else {
        metrics::counter!(pitboss_desk::telemetry::RATE_LIMITED, "limit" => "connections_per_address")
            .increment(1);
        tracing::debug!(%addr, "too many open connections from one address");
        return refuse_upgrade(ws, CloseCode::Overloaded);
    };
    ws.read_buffer_size(c.read_buffer_bytes)
        .write_buffer_size(c.write_buffer_bytes)
        .max_write_buffer_size(c.write_buffer_bytes.max(64 * 1024) * 16)
        .max_message_size(c.max_frame_bytes)
        .max_frame_size(c.max_frame_bytes)
        .on_upgrade(move |socket| async move {
            // Held for as long as the connection task runs (dropped with the
            // closure if the upgrade never completes).
            let _slot = slot;
            connection(socket, state, addr).await;
        })
}

/// Accepts the upgrade only to close at once with `code`, no `error` frame: a
/// close code is what a WebSocket client can see of a refusal.
fn refuse_upgrade(ws: WebSocketUpgrade, code: CloseCode) -> Response {
    ws.on_upgrade(move |socket| async move {
        let (sink, _stream) = socket.split();
        let mut sink = Sink(sink);
        close_now(&mut sink, code).await;
    })
}

struct Sink(SplitSink<WebSocket, Message>);

impl FrameSink for Sink {
    async fn send(&mut self, frame: ServerFrame) -> Result<(), ()> {
        let text = encode_server(&frame);
        self.0
            .feed(Message::Text(Utf8Bytes::from(text)))
            .await
            .map_err(|_| ())
    }
}

async fn send_now(sink: &mut Sink, frame: ServerFrame) {
    if sink.send(frame).await.is_ok() {
        let _ = sink.0.flush().await;
    }
}

async fn close_now(sink: &mut Sink, code: CloseCode) {
    let _ = sink
        .0
        .send(Message::Close(Some(CloseFrame {
            code: code.code(),
            reason: Utf8Bytes::from_static(code.reason()),
        })))
        .await;
}

/// Counts a running connection task for as long as it lives.
struct SocketGuard(std::sync::Arc<std::sync::atomic::AtomicUsize>);

impl Drop for SocketGuard {
    fn drop(&mut self) {
        self.0.fetch_sub(1, std::sync::atomic::Ordering::AcqRel);
    }
}

async fn connection(socket: WebSocket, state: AppState, addr: IpAddr) {
    state
        .sockets
        .fetch_add(1, std::sync::atomic::Ordering::AcqRel);
    let _guard = SocketGuard(state.sockets.clone());
    let (sink, mut stream) = socket.split();
    let mut sink = Sink(sink);
    let Some(session) = Box::pin(hello(&mut stream, &mut sink, &state, addr)).await else {
        return;
    };
    // The user's role and id as separate fields, so that logs can be searched
    // (and JSON lines filtered) by player or by agent; the node tells which
    // process of a cluster wrote the line.
    let node = state.desk.node().to_owned();
    let span = match session.user() {
        UserKey::Player(player) => {
            tracing::info_span!("connection", node = %node, player = %player.0)
        }
        UserKey::Agent(agent) => tracing::info_span!("connection", node = %node, agent = %agent.0),
    };
    session_loop(stream, sink, state, session)
        .instrument(span)
        .await;
}

/// Serves an authenticated connection until either side ends it.
async fn session_loop(
    mut stream: SplitStream<WebSocket>,
    mut sink: Sink,
    state: AppState,
    session: Session,
) {
    let desk = state.desk.clone();
    // The desk's futures are large (they cover every kind of frame); boxing them
    // keeps each connection's two tasks small while they sit idle, which is what
    // tens of thousands of idle connections cost.
    let (conn, mut rx, close) = Box::pin(desk.connect(&session)).await;
    match Box::pin(desk.welcome(&session)).await {
        Ok(welcome) => send_now(&mut sink, welcome).await,
        Err(message) => {
            tracing::warn!(%message, "welcome refused");
            refuse(
                &mut sink,
                ErrorCode::Overloaded,
                &message,
                CloseCode::Overloaded,
            )
            .await;
            Box::pin(desk.disconnect(&conn, &session)).await;
            close.close(CloseCode::Overloaded);
            return;
        }
    }

    let store = desk.store().clone();
    let writer_conn = conn.clone();
    let writer_close = close.clone();
    let ping_every = state.config.ws_ping;
    let writer = tokio::spawn(async move {
        let mut delivery = Delivery::new(store, &writer_conn);
        drop(writer_conn);
        // When a close was first seen: what is queued ahead of it still goes out
        // (an error frame explaining the close, say) for up to CLOSE_GRACE.
        let mut closing_since: Option<tokio::time::Instant> = None;
        // One timer, reset after each ping: no per-connection allocation.
        let ping = tokio::time::sleep(ping_every);
        tokio::pin!(ping);
        loop {
            if writer_close.code().is_some() {
                let since = *closing_since.get_or_insert_with(tokio::time::Instant::now);
                if rx.is_empty() || since.elapsed() >= CLOSE_GRACE {
                    let code = writer_close.code().unwrap_or(CloseCode::Normal);
                    let _ = tokio::time::timeout(CLOSE_DRAIN, async {
                        let _ = sink.0.flush().await;
                        close_now(&mut sink, code).await;
                    })
                    .await;
                    return;
                }
            }
            tokio::select! {
                biased;
                item = rx.recv() => {
                    let Some(item) = item else { break };
                    let write = async {
                        Box::pin(delivery.process(item, &mut sink)).await?;
                        if rx.is_empty() {
                            sink.0.flush().await.map_err(|_| ())?;
                        }
                        Ok::<(), ()>(())
                    };
                    // A write blocked on a client that does not read must not keep
                    // the close (slow consumer, shutdown) from happening.
                    let stuck = async {
                        let code = writer_close.wait().await;
                        tokio::time::sleep(CLOSE_GRACE).await;
                        code
                    };
                    tokio::select! {
                        written = write => if written.is_err() { return },
                        code = stuck => {
                            let _ = tokio::time::timeout(CLOSE_DRAIN, close_now(&mut sink, code)).await;
                            return;
                        }
                    }
                }
                _ = writer_close.wait() => {}
                _ = &mut ping => {
                    ping.as_mut().reset(tokio::time::Instant::now() + ping_every);
                    // A client that does not read must not keep a close waiting.
                    tokio::select! {
                        sent = sink.0.send(Message::Ping(Default::default())) => if sent.is_err() { return },
                        _ = writer_close.wait() => {}
                    }
                }
            }
        }
    }.in_current_span());

    let config = &state.config;
    let quota =
        Quota::per_second(NonZeroU32::new(config.frames_per_second.max(1)).expect("nonzero"))
            .allow_burst(NonZeroU32::new(config.burst_frames.max(1)).expect("nonzero"));
    let limiter = RateLimiter::direct(quota);
    let mut strikes = 0u32;

    // Whether the server ended the connection (then the client's remaining frames
    // are read and dropped until it answers the close: closing a socket with
    // unread input resets it, and the client would never see the close code).
    let mut server_closing = false;
    // Fires when nothing at all (frame, pong) arrived for idle_timeout; reset on
    // every arrival. The writer's pings make a live client answer in time.
    let idle = tokio::time::sleep(config.idle_timeout);
    tokio::pin!(idle);
    loop {
        let message = tokio::select! {
            m = stream.next() => m,
            _ = close.wait() => {
                server_closing = true;
                break;
            }
            _ = &mut idle => {
                tracing::debug!("closing an idle connection");
                metrics::counter!(IDLE_DISCONNECTS).increment(1);
                conn.close(CloseCode::Normal);
                server_closing = true;
                break;
            }
        };
        idle.as_mut()
            .reset(tokio::time::Instant::now() + config.idle_timeout);
        let text = match message {
            Some(Ok(Message::Text(text))) => text,
            Some(Ok(Message::Binary(_))) => {
                // Not a protocol this server speaks: a client sending binary is
                // broken or hostile, and an error frame would not help it.
                conn.close(CloseCode::PolicyViolation);
                server_closing = true;
                break;
            }
            Some(Ok(Message::Close(_))) | None => break,
            Some(Ok(_)) => continue, // ping/pong: answered by the WebSocket layer
            Some(Err(err)) => {
                if too_big(&err) {
                    conn.close(CloseCode::MessageTooBig);
                } else {
                    // A frame that breaks the WebSocket protocol (invalid UTF-8,
                    // bad framing) or a dead socket: the client is told it broke a
                    // rule, if it can still hear it, rather than "normal".
                    tracing::debug!(%err, "read error");
                    conn.close(CloseCode::PolicyViolation);
                }
                break;
            }
        };
        let checked = if limiter.check().is_err() {
            Err(RateLimited::frames(&text))
        } else {
            match decode_client(&text) {
                Ok(frame) => player_limit(&state.players, &session, &frame).map(|()| Some(frame)),
                Err(e) => {
                    conn.send(e.into_frame());
                    Ok(None)
                }
            }
        };
        let frame = match checked {
            Err(limit) => {
                // One rule for every rate limit: a refused frame is a strike, and
                // too many in a row close the connection (a client that ignores
                // `rate_limited` is not going to slow down).
                metrics::counter!(pitboss_desk::telemetry::RATE_LIMITED, "limit" => limit.label())
                    .increment(1);
                strikes += 1;
                if strikes > config.max_rate_strikes {
                    conn.close(CloseCode::RateLimited);
                    server_closing = true;
                    break;
                }
                if let Some(error) = limit.into_error() {
                    conn.send(error);
                }
                continue;
            }
            Ok(None) => {
                strikes = 0;
                continue;
            }
            Ok(Some(frame)) => {
                strikes = 0;
                frame
            }
        };
        let kind = frame.type_name();
        // Whatever the desk logs about this frame carries its conversation (a
        // `start` records the new conversation's id once it has one).
        let span = match frame.conversation() {
            Some(conversation) => {
                tracing::info_span!("frame", kind, conversation = %conversation)
            }
            None => tracing::info_span!("frame", kind, conversation = tracing::field::Empty),
        };
        async {
            tracing::debug!("frame received");
            Box::pin(desk.handle(&conn, &session, frame)).await;
        }
        .instrument(span)
        .await;
    }
    Box::pin(desk.disconnect(&conn, &session)).await;
    if close.code().is_none() {
        close.close(CloseCode::Normal);
    }
    if server_closing {
        let drain = async {
            while let Some(Ok(message)) = stream.next().await {
                if matches!(message, Message::Close(_)) {
                    break;
                }
            }
        };
        let _ = tokio::time::timeout(CLOSE_DRAIN, drain).await;
    }
    let _ = writer.await;
}

/// A frame refused by a rate limit, and what the client is told.
enum RateLimited {
    /// The connection's own frame rate: an `error` frame naming the dropped frame
    /// when it could be decoded, so that a client knows which of its requests
    /// went unanswered (a dropped `start` would otherwise leave it waiting).
    Frames {
        /// The dropped frame's `type`.
        frame: Option<&'static str>,
        conversation: Option<pitboss_protocol::ConversationId>,
        client_id: Option<String>,
    },
    /// The player's chat messages: an `error` frame naming the message, which was
    /// neither stored nor acknowledged (the client sends it again later).
    PlayerMessages {
        conversation: pitboss_protocol::ConversationId,
        client_id: String,
    },
    /// The player's typing indicators: dropped without a word (they are
    /// droppable, and an answer would cost more than the indicator).
    PlayerTyping,
}

impl RateLimited {
    /// The connection's frame rate refused `text`: decoded only to name it in
    /// the answer (the frame was read already; decoding a frame within the size
    /// limit costs little beside the strike it earns).
    fn frames(text: &str) -> Self {
        match decode_client(text) {
            Ok(frame) => RateLimited::Frames {
                frame: Some(frame.type_name()),
                conversation: frame.conversation(),
                client_id: match frame {
                    ClientFrame::Send { client_id, .. } | ClientFrame::Note { client_id, .. } => {
                        Some(client_id)
                    }
                    _ => None,
                },
            },
            Err(_) => RateLimited::Frames {
                frame: None,
                conversation: None,
                client_id: None,
            },
        }
    }

    /// The `limit` label of `pitboss_rate_limited_total`.
    fn label(&self) -> &'static str {
        match self {
            RateLimited::Frames { .. } => "frames",
            RateLimited::PlayerMessages { .. } => "player_messages",
            RateLimited::PlayerTyping => "player_typing",
        }
    }

    /// The `error` frame the client gets, if any.
    fn into_error(self) -> Option<ServerFrame> {
        match self {
            RateLimited::Frames {
                frame,
                conversation,
                client_id,
            } => Some(ServerFrame::Error {
                code: ErrorCode::RateLimited,
                message: "too many frames: this one was dropped; send it again later".into(),
                frame: frame.map(Into::into),
                conversation,
                client_id,
            }),
            RateLimited::PlayerMessages {
                conversation,
                client_id,
            } => Some(ServerFrame::Error {
                code: ErrorCode::RateLimited,
                message: "too many messages from this player: nothing was stored; send it again later with the same client_id".into(),
                frame: Some("send".into()),
                conversation: Some(conversation),
                client_id: Some(client_id),
            }),
            RateLimited::PlayerTyping => None,
        }
    }
}

/// Checks a player's frame against the limits shared by all of the player's
/// connections. Agents are not limited here: their rate is the connection's.
fn player_limit(
    players: &PlayerLimits,
    session: &Session,
    frame: &ClientFrame,
) -> Result<(), RateLimited> {
    let Session::Player { card, .. } = session else {
        return Ok(());
    };
    match frame {
        ClientFrame::Send {
            conversation,
            client_id,
            ..
        } if !players.message_allowed(&card.id) => Err(RateLimited::PlayerMessages {
            conversation: *conversation,
            client_id: client_id.clone(),
        }),
        ClientFrame::Typing { .. } if !players.typing_allowed(&card.id) => {
            Err(RateLimited::PlayerTyping)
        }
        _ => Ok(()),
    }
}

/// Connections closed because nothing arrived from them for the idle timeout.
pub(crate) const IDLE_DISCONNECTS: &str = "pitboss_idle_disconnects_total";

/// How long a closing connection's remaining input is read, waiting for the
/// client to answer the close.
const CLOSE_DRAIN: std::time::Duration = std::time::Duration::from_secs(2);

/// How long frames queued ahead of a close may take to go out before the close
/// frame is sent regardless.
const CLOSE_GRACE: std::time::Duration = std::time::Duration::from_secs(1);

/// Reads and checks `hello`. On failure the client gets an error frame and a
/// close code, and `None` is returned.
async fn hello(
    stream: &mut SplitStream<WebSocket>,
    sink: &mut Sink,
    state: &AppState,
    addr: IpAddr,
) -> Option<Session> {
    match read_hello(stream, state, addr).await {
        Ok(session) => Some(session),
        Err(Refused::Close(code)) => {
            close_now(sink, code).await;
            None
        }
        Err(Refused::Echo) => {
            // The WebSocket layer queued the answer when it read the close.
            let _ = sink.0.flush().await;
            None
        }
        Err(Refused::Error(code, message, close)) => {
            refuse(sink, code, &message, close).await;
            None
        }
    }
}

/// Why a connection ends before `welcome`.
enum Refused {
    /// The client closed first: its close is answered, nothing more.
    Echo,
    /// Close without an error frame.
    Close(CloseCode),
    /// An error frame, then the close.
    Error(ErrorCode, String, CloseCode),
}

async fn read_hello(
    stream: &mut SplitStream<WebSocket>,
    state: &AppState,
    addr: IpAddr,
) -> Result<Session, Refused> {
    let not_hello = || {
        Refused::Error(
            ErrorCode::HelloRequired,
            "the first frame must be hello".into(),
            CloseCode::ProtocolError,
        )
    };
    let first = tokio::select! {
        first = tokio::time::timeout(state.config.hello_timeout, stream.next()) => first,
        () = state.desk.until_draining() => return Err(Refused::Close(CloseCode::Restart)),
    };
    let text = match first {
        Ok(Some(Ok(Message::Text(text)))) => text,
        Ok(Some(Err(err))) if too_big(&err) => {
            return Err(Refused::Close(CloseCode::MessageTooBig))
        }
        Ok(Some(Err(_))) => return Err(Refused::Close(CloseCode::ProtocolError)),
        // The client is leaving: answer its close, as after `hello`.
        Ok(Some(Ok(Message::Close(_)))) => return Err(Refused::Echo),
        Ok(Some(Ok(_))) | Ok(None) => return Err(not_hello()),
        Err(_) => {
            return Err(Refused::Error(
                ErrorCode::HelloRequired,
                "no hello in time".into(),
                CloseCode::ProtocolError,
            ))
        }
    };
    let frame = decode_client(&text)
        .map_err(|e| Refused::Error(e.code, e.message, CloseCode::ProtocolError))?;
    let ClientFrame::Hello { protocol, auth } = frame else {
        return Err(not_hello());
    };
    if protocol != PROTOCOL_VERSION {
        return Err(Refused::Error(
            ErrorCode::UnsupportedVersion,
            format!("this server speaks protocol {PROTOCOL_VERSION}"),
            CloseCode::ProtocolError,
        ));
    }
    if state.desk.is_draining() {
        return Err(Refused::Close(CloseCode::Restart));
    }
    // A visitor without a token is issued a new one: the cheapest way to a fresh
    // identity (and a fresh per-player budget), so it is limited per address.
    if matches!(auth, pitboss_protocol::Auth::Visitor { token: None, .. })
        && !state.limits.visitor_allowed(addr)
    {
        metrics::counter!(pitboss_desk::telemetry::RATE_LIMITED, "limit" => "visitors_per_address")
            .increment(1);
        tracing::debug!(%addr, "too many new visitors from one address");
        return Err(Refused::Error(
            ErrorCode::RateLimited,
            "too many new visitors from this address: reconnect later, or present the visitor token you were given".into(),
            CloseCode::RateLimited,
        ));
    }
    state
        .desk
        .authenticate(auth)
        .await
        .map_err(|(code, close, message)| Refused::Error(code, message, close))
}

async fn refuse(sink: &mut Sink, code: ErrorCode, message: &str, close: CloseCode) {
    let mut frame = ServerFrame::error(code, message);
    if let ServerFrame::Error { frame: f, .. } = &mut frame {
        *f = Some("hello".into());
    }
    send_now(sink, frame).await;
    close_now(sink, close).await;
}

/// Whether a read failed because the frame was over the size limit (tungstenite
/// refuses to buffer it, with a capacity error: "Message too long").
fn too_big(err: &axum::Error) -> bool {
    let mut text = err.to_string();
    if let Some(source) = std::error::Error::source(err) {
        text.push_str(&source.to_string());
    }
    text.to_ascii_lowercase().contains("too long")
}

/// Whether a browser page of this `Origin` may connect: no `Origin` (not a
/// browser), the server's own origin, or one in the allowlist (`*`: any).
/// Whether `o` can stand in `--allowed-origins`: `*`, or an origin as browsers
/// send it (`http` or `https`, a host, an optional port, no path but a trailing
/// `/`, no user).
pub fn is_origin(o: &str) -> bool {
    if o == "*" {
        return true;
    }
    let Ok(uri) = o.parse::<axum::http::Uri>() else {
        return false;
    };
    matches!(uri.scheme_str(), Some("http" | "https"))
        && uri
            .authority()
            .is_some_and(|a| !a.host().is_empty() && !a.as_str().contains('@'))
        && uri.path_and_query().is_none_or(|p| p.as_str() == "/")
}

/// An origin as browsers send it: lower case, no trailing `/`, and no port when
/// it is the scheme's default (a browser on `https://casino.example` sends no
/// `:443`), so that `https://casino.example:443` in the settings matches it.
pub(crate) fn canonical_origin(o: &str) -> String {
    let o = o.trim_end_matches('/').to_ascii_lowercase();
    for (scheme, port) in [("https://", ":443"), ("http://", ":80")] {
        if o.starts_with(scheme) && o.ends_with(port) {
            return o[..o.len() - port.len()].to_owned();
        }
    }
    o
}

fn origin_allowed(headers: &HeaderMap, allowed: &[String]) -> bool {
    let Some(origin) = headers.get(header::ORIGIN) else {
        return true;
    };
    let Ok(origin) = origin.to_str() else {
        return false;
    };
    let origin = origin.trim_end_matches('/');
    let canonical = canonical_origin(origin);
    if allowed
        .iter()
        .any(|a| a == "*" || canonical_origin(a) == canonical)
    {
        return true;
    }
    let host = headers.get(header::HOST).and_then(|h| h.to_str().ok());
    let own = origin
        .strip_prefix("http://")
        .or_else(|| origin.strip_prefix("https://"));
    matches!((own, host), (Some(o), Some(h)) if o.eq_ignore_ascii_case(h))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_origin_with_its_schemes_default_port_matches_what_browsers_send() {
        let allowed = [
            "https://casino.example:443/".to_owned(),
            "http://Lobby.Example:80".into(),
        ];
        let from = |o: &str| {
            let mut h = HeaderMap::new();
            h.insert(header::ORIGIN, o.parse().unwrap());
            origin_allowed(&h, &allowed)
        };
        assert!(from("https://casino.example"));
        assert!(from("http://lobby.example"));
        assert!(!from("https://casino.example:8443"));
        assert!(
            !from("http://casino.example"),
            "another scheme is another origin"
        );
        assert_eq!(canonical_origin("http://[::1]:80"), "http://[::1]");
        assert_eq!(
            canonical_origin("https://a.example:4430"),
            "https://a.example:4430"
        );
    }

    #[test]
    fn origins_need_a_scheme_and_a_host_and_no_path() {
        for good in [
            "*",
            "https://casino.example",
            "https://casino.example/",
            "http://localhost:3000",
            "http://[::1]:8080",
        ] {
            assert!(is_origin(good), "{good}");
        }
        for bad in [
            "casino.example",
            "ftp://casino.example",
            "https://",
            "https://casino.example/chat",
            "https://user@casino.example",
            "https://casino.example?x=1",
            "",
        ] {
            assert!(!is_origin(bad), "{bad}");
        }
    }

    fn headers(origin: Option<&str>, host: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(header::HOST, host.parse().unwrap());
        if let Some(o) = origin {
            h.insert(header::ORIGIN, o.parse().unwrap());
        }
        h
    }

    #[test]
    fn origins_are_checked_against_the_allowlist_and_the_own_host() {
        let allowed = vec!["https://casino.example".to_string()];
        assert!(
            origin_allowed(&headers(None, "chat.example"), &allowed),
            "non-browser client"
        );
        assert!(origin_allowed(
            &headers(Some("https://casino.example"), "chat.example"),
            &allowed
        ));
        assert!(
            origin_allowed(
                &headers(Some("http://chat.example"), "chat.example"),
                &allowed
            ),
            "same origin"
        );
        assert!(!origin_allowed(
            &headers(Some("https://evil.example"), "chat.example"),
            &allowed
        ));
        assert!(!origin_allowed(
            &headers(Some("https://casino.example.evil"), "chat.example"),
            &allowed
        ));
        assert!(origin_allowed(
            &headers(Some("https://anything"), "x"),
            &["*".to_string()]
        ));
    }
}
