//! The HTTP edge of a node: the WebSocket endpoint (`/ws`), the agent REST API
//! (`/api/…`), and the health endpoints. It decodes frames, enforces size and rate
//! limits, and hands everything else to the desk. It holds no conversation state.

mod assets;
mod rest;
mod ws;

pub use assets::embedded_files;

use axum::routing::{get, post};
use axum::serve::ListenerExt;
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
    /// Renders `/metrics`; `None`: no exporter installed (the endpoint answers 404).
    pub metrics: Option<metrics_exporter_prometheus::PrometheusHandle>,
}

impl AppState {
    /// State for a desk with these limits.
    pub fn new(desk: Arc<Desk>, config: GatewayConfig) -> Self {
        Self {
            desk,
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
        .route("/api/agents", get(rest::agents))
        .route("/api/departments", get(rest::departments))
        .route("/api/catalog", get(rest::catalog).put(rest::put_catalog))
        .route(
            "/api/catalog/{kind}/{language}/{key}",
            axum::routing::delete(rest::remove_catalog),
        )
        .layer(axum::middleware::map_response(rest::json_errors));
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

/// Serves `app` on an already-bound listener until `shutdown` resolves; then the
/// desk drains (every client is told to reconnect) and in-flight requests finish.
pub async fn serve(
    listener: TcpListener,
    state: AppState,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let desk = state.desk.clone();
    let sockets = state.sockets.clone();
    let app = app(state).into_make_service_with_connect_info::<std::net::SocketAddr>();
    // Chat frames are small and latency-bound: without TCP_NODELAY, Nagle's
    // algorithm holds a frame back until the peer's delayed ack (tens of ms).
    let listener = listener.tap_io(|tcp| {
        if let Err(err) = tcp.set_nodelay(true) {
            tracing::debug!(%err, "cannot set TCP_NODELAY");
        }
    });
    axum::serve(listener, app)
        .with_graceful_shutdown(async move {
            shutdown.await;
            desk.drain();
        })
        .await?;
    // Every WebSocket was told to close; wait until each has sent its close frame
    // and finished (the caller bounds the whole shutdown).
    while sockets.load(Ordering::Acquire) > 0 {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    Ok(())
}
