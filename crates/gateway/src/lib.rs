//! The HTTP edge of a node: the WebSocket endpoint (`/ws`), the agent REST API
//! (`/api/…`), and the health endpoints. It decodes frames, enforces size and rate
//! limits, and hands everything else to the desk. It holds no conversation state.

mod assets;
mod client_addr;
mod limits;
mod listener;
mod rest;
mod ws;

pub use assets::embedded_files;
pub use client_addr::{client_addr, TrustedProxies};
pub use limits::{AddressLimits, PlayerLimits};
pub use listener::{connections_within, socket_cap};
pub use ws::is_origin;

use axum::routing::{get, post};
use pitboss_desk::Desk;
use std::future::Future;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;

/// Limits the gateway enforces on every connection.
#[derive(Debug, Clone)]
pub struct GatewayConfig {
    /// Largest text frame read, in bytes; larger closes with 1009.
    pub max_frame_bytes: usize,
    /// Frames per second a connection may send, sustained.
    pub frames_per_second: u32,
    /// Frames a connection may send in one burst.
    pub burst_frames: u32,
    /// Rate-limited frames in a row before the connection is closed with 4029.
    pub max_rate_strikes: u32,
    /// How long a new connection has to send `hello`.
    pub hello_timeout: Duration,
    /// The socket's read buffer. Small, so tens of thousands of idle connections
    /// stay cheap; tungstenite grows it for a larger frame as needed.
    pub read_buffer_bytes: usize,
    /// The socket's write buffer before a flush is forced.
    pub write_buffer_bytes: usize,
    /// Web origins (`https://casino.example`) whose pages may open WebSockets; `*`
    /// allows any. The server's own origin and clients that send no `Origin`
    /// (non-browser clients) are always allowed.
    pub allowed_origins: Vec<String>,
    /// Serve the demo casino page at `/`.
    pub demo: bool,
    /// WebSocket connections this node holds at most; one more is closed with
    /// 1013 (overloaded) right after the upgrade.
    pub max_connections: usize,
    /// Proxies whose `X-Forwarded-For` names the client address; none by default
    /// (the TCP peer is the client).
    pub trusted_proxies: TrustedProxies,
    /// WebSocket connections one client address may hold open on this node; one
    /// more is closed with 1013 right after the upgrade.
    pub max_connections_per_address: usize,
    /// New WebSocket connections one client address may open per minute on this
    /// node (bursts of as many); more are closed with 4029 right after the upgrade.
    pub connects_per_minute_per_address: u32,
    /// Visitor tokens (a `hello` without one) one client address may be issued per
    /// minute on this node (bursts of as many); more get `rate_limited` and 4029.
    pub visitors_per_minute_per_address: u32,
    /// Failed `POST /api/login` attempts one client address may make per minute on
    /// this node (bursts of as many); once they are spent, its logins get 429
    /// without a password check until one attempt's worth has refilled.
    /// Successful logins spend nothing. Per address, not per account: a
    /// per-account lock would let anyone lock an agent out.
    pub login_failures_per_minute_per_address: u32,
    /// Chat messages one player (visitor or verified, not an agent) may send per
    /// minute over all of their connections to this node; more get `rate_limited`.
    pub player_messages_per_minute: u32,
    /// Chat messages one player may send in one burst above that rate.
    pub player_message_burst: u32,
    /// Typing indicators one player may send per minute over all of their
    /// connections to this node; more are dropped silently.
    pub player_typing_per_minute: u32,
    /// Typing indicators one player may send in one burst above that rate.
    pub player_typing_burst: u32,
    /// How often the server pings each connection.
    pub ws_ping: Duration,
    /// A connection from which nothing (no frame, no pong) arrived for this long
    /// is closed.
    pub idle_timeout: Duration,
}

impl Default for GatewayConfig {
    fn default() -> Self {
        use pitboss_protocol::limits::*;
        Self {
            max_frame_bytes: MAX_FRAME_BYTES,
            frames_per_second: FRAMES_PER_SECOND,
            burst_frames: BURST_FRAMES,
            max_rate_strikes: MAX_RATE_STRIKES,
            hello_timeout: Duration::from_millis(HELLO_TIMEOUT_MS),
            read_buffer_bytes: 1024,
            write_buffer_bytes: 4 * 1024,
            allowed_origins: Vec::new(),
            demo: false,
            max_connections: 50_000,
            trusted_proxies: TrustedProxies::default(),
            max_connections_per_address: 200,
            connects_per_minute_per_address: 120,
            visitors_per_minute_per_address: 30,
            login_failures_per_minute_per_address: 10,
            player_messages_per_minute: PLAYER_MESSAGES_PER_MINUTE,
            player_message_burst: PLAYER_MESSAGE_BURST,
            player_typing_per_minute: PLAYER_TYPING_PER_MINUTE,
            player_typing_burst: PLAYER_TYPING_BURST,
            ws_ping: Duration::from_secs(30),
            idle_timeout: Duration::from_secs(90),
        }
    }
}

/// What every handler shares.
#[derive(Clone)]
pub struct AppState {
    /// The conversation engine.
    pub desk: Arc<Desk>,
    /// The limits.
    pub config: Arc<GatewayConfig>,
    /// WebSocket connections whose task is still running. The HTTP server's
    /// graceful shutdown does not wait for upgraded connections; this does.
    pub sockets: Arc<AtomicUsize>,
    /// The per-address abuse limits of this node.
    pub limits: Arc<AddressLimits>,
    /// The per-player rate limits of this node, shared by a player's connections.
    pub players: Arc<PlayerLimits>,
    /// Renders `/metrics`; `None`: no exporter installed (the endpoint answers 404).
    pub metrics: Option<metrics_exporter_prometheus::PrometheusHandle>,
}

impl AppState {
    /// State for a desk with these limits.
    pub fn new(desk: Arc<Desk>, config: GatewayConfig) -> Self {
        Self {
            desk,
            limits: Arc::new(AddressLimits::new(&config)),
            players: Arc::new(PlayerLimits::new(&config)),
            config: Arc::new(config),
            sockets: Arc::new(AtomicUsize::new(0)),
            metrics: None,
        }
    }

    /// Serves `/metrics` from this Prometheus recorder.
    pub fn with_metrics(mut self, handle: metrics_exporter_prometheus::PrometheusHandle) -> Self {
        self.metrics = Some(handle);
        self
    }
}

/// CORS for the REST API: the same web origins that may open the WebSocket may
/// call it from a page (an agent tool on the casino's back office, say); with none
/// configured, only the server's own pages may (browsers' same-origin rule).
fn cors(allowed: &[String]) -> tower_http::cors::CorsLayer {
    use axum::http::{header, HeaderValue, Method};
    use tower_http::cors::{AllowOrigin, CorsLayer};
    let origins = if allowed.iter().any(|o| o == "*") {
        AllowOrigin::any()
    } else {
        AllowOrigin::list(
            allowed
                .iter()
                .filter_map(|o| HeaderValue::from_str(&ws::canonical_origin(o)).ok()),
        )
    };
    CorsLayer::new()
        .allow_origin(origins)
        .allow_methods([
            Method::GET,
            Method::POST,
            Method::PUT,
            Method::PATCH,
            Method::DELETE,
        ])
        .allow_headers([header::AUTHORIZATION, header::CONTENT_TYPE])
        .max_age(std::time::Duration::from_secs(600))
}

/// The routes of a node.
pub fn app(state: AppState) -> axum::Router {
    let api = axum::Router::new()
        .route("/api/login", post(rest::login))
        .route("/api/me", get(rest::me))
        .route("/api/conversations", get(rest::list_conversations))
        .route("/api/conversations/{id}", get(rest::conversation))
        .route("/api/conversations/{id}/transcript", get(rest::transcript))
        .route(
            "/api/conversations/{id}/transcript.txt",
            get(rest::transcript_text),
        )
        .route("/api/offline", get(rest::offline))
        .route(
            "/api/players/{player}/conversations",
            get(rest::player_conversations),
        )
        .route("/api/players/{player}/export", get(rest::export_player))
        .route(
            "/api/players/{player}",
            axum::routing::delete(rest::erase_player),
        )
        .route("/api/agents", get(rest::agents))
        .route(
            "/api/accounts",
            get(rest::accounts).post(rest::create_account),
        )
        .route(
            "/api/accounts/{id}",
            axum::routing::patch(rest::update_account).delete(rest::remove_account),
        )
        .route("/api/audit", get(rest::audit_log))
        .route("/api/departments", get(rest::departments))
        .route("/api/kpis", get(rest::kpis))
        .route("/api/catalog", get(rest::catalog).put(rest::put_catalog))
        .route(
            "/api/catalog/{kind}/{language}/{key}",
            axum::routing::delete(rest::remove_catalog),
        )
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            rest::read_body,
        ))
        .layer(axum::middleware::map_response(rest::json_errors))
        .layer(axum::middleware::map_response(rest::private))
        .layer(cors(&state.config.allowed_origins));
    axum::Router::new()
        .route("/ws", get(ws::upgrade))
        .route("/healthz", get(rest::healthz))
        .route("/readyz", get(rest::readyz))
        .route("/metrics", get(rest::metrics))
        .merge(api)
        .fallback_service(
            // Static files go out gzipped to clients that accept it: the widget
            // is loaded on every casino page view.
            axum::Router::new()
                .fallback(assets::serve)
                .layer(tower_http::compression::CompressionLayer::new())
                .with_state(state.clone()),
        )
        .with_state(state)
}

/// How long a connection with no request being handled may take to close at
/// shutdown (a response still being written, say).
const IDLE_CLOSE: Duration = Duration::from_millis(500);

/// Counts one request being handled while it lives.
struct Handling(Arc<AtomicUsize>);

impl Handling {
    fn new(count: &Arc<AtomicUsize>) -> Self {
        count.fetch_add(1, Ordering::AcqRel);
        Self(count.clone())
    }
}

impl Drop for Handling {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

/// A response body that keeps its request counted until it is sent or dropped.
struct Guarded {
    body: axum::body::Body,
    _guard: Handling,
}

impl hyper::body::Body for Guarded {
    type Data = axum::body::Bytes;
    type Error = axum::Error;

    fn poll_frame(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<hyper::body::Frame<Self::Data>, Self::Error>>> {
        std::pin::Pin::new(&mut self.get_mut().body).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> hyper::body::SizeHint {
        self.body.size_hint()
    }
}

/// Serves `app` on an already-bound listener until `shutdown` resolves; then the
/// desk drains (every client is told to reconnect) and in-flight requests finish.
///
/// Every connection has the hello timeout to send its request's headers (and,
/// kept alive, each next request's): a socket that never sends a request, or
/// sends it a byte at a time, does not hold a descriptor for longer. How many
/// sockets are open at all and per address is bounded before any HTTP is read
/// ([`listener`]).
pub async fn serve(
    listener: TcpListener,
    state: AppState,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    use axum::serve::Listener as _;
    use tower::ServiceExt as _;
    let desk = state.desk.clone();
    let sockets = state.sockets.clone();
    // The keyed rate limiters keep one entry per address and player seen; forget
    // the ones that are back to a full budget so memory follows the active clients.
    let limits = state.limits.clone();
    let players = state.players.clone();
    let sweeper = tokio::spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_secs(30));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            limits.sweep();
            players.sweep();
        }
    });
    let config = state.config.clone();
    let mut listener = listener::GuardedListener::new(
        listener,
        config.max_connections,
        config.max_connections_per_address,
        config.trusted_proxies.clone(),
    );
    let app = app(state);
    // HTTP/1.1 (what browsers and proxies speak to a WebSocket endpoint), with a
    // timer so that the header timeout applies from the first byte on.
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder
        .timer(hyper_util::rt::TokioTimer::new())
        .header_read_timeout(config.hello_timeout);
    // `stopping` tells every connection that shutdown began (each then finishes
    // gracefully); each connection's task holds a clone of `all_done` until it
    // ends, so `done.closed()` resolves once all have.
    let (stopping, stop_seen) = tokio::sync::watch::channel(false);
    let (done, all_done) = tokio::sync::watch::channel(());
    let mut shutdown = std::pin::pin!(shutdown);
    loop {
        let (io, peer) = tokio::select! {
            accepted = listener.accept() => accepted,
            () = &mut shutdown => break,
        };
        let app = app.clone();
        // Requests of this connection being handled now: at shutdown, one with
        // none (idle, or still sending its headers) is not waited for.
        let handling = Arc::new(AtomicUsize::new(0));
        let counted = handling.clone();
        let service = hyper::service::service_fn(
            move |mut request: axum::http::Request<hyper::body::Incoming>| {
                request
                    .extensions_mut()
                    .insert(axum::extract::ConnectInfo(peer));
                let handled = app.clone().oneshot(request.map(axum::body::Body::new));
                let guard = Handling::new(&counted);
                // Counted until its response's body has been sent in full.
                async move {
                    let response = handled.await;
                    response.map(|r| {
                        r.map(|body| {
                            axum::body::Body::new(Guarded {
                                body,
                                _guard: guard,
                            })
                        })
                    })
                }
            },
        );
        let connection = builder
            .serve_connection(hyper_util::rt::TokioIo::new(io), service)
            .with_upgrades();
        let mut stop_seen = stop_seen.clone();
        let all_done = all_done.clone();
        tokio::spawn(async move {
            let mut connection = std::pin::pin!(connection);
            tokio::select! {
                result = connection.as_mut() => {
                    if let Err(err) = result {
                        tracing::trace!(%err, "connection ended");
                    }
                }
                _ = stop_seen.changed() => {
                    connection.as_mut().graceful_shutdown();
                    if handling.load(Ordering::Acquire) > 0 {
                        // Its answer is being made: let it finish (the caller
                        // bounds the whole shutdown).
                        let _ = connection.as_mut().await;
                    } else {
                        // Idle, or a request whose headers have not all arrived:
                        // nothing to finish but a response being written.
                        let _ = tokio::time::timeout(IDLE_CLOSE, connection.as_mut()).await;
                    }
                }
            }
            drop(all_done);
        });
    }
    drop(listener);
    desk.drain();
    let _ = stopping.send(true);
    drop(all_done);
    // Plain HTTP connections finish their requests (upgraded ones are counted
    // by `sockets` below).
    done.closed().await;
    sweeper.abort();
    // Every WebSocket was told to close; wait until each has sent its close frame
    // and finished (the caller bounds the whole shutdown).
    while sockets.load(Ordering::Acquire) > 0 {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    Ok(())
}
