//! The idle scenario: hold C connections, each authenticated and waiting (a
//! Pitboss player queued behind a busy agent, a bare-relay socket paired, a
//! Socket.IO socket in a room), and report the server's memory per connection:
//! (RSS with C connections − RSS with none) / C.
//!
//! One process may hold at most 20,000 descriptors here, so the coordinator (this
//! module's [`run`]) spawns worker processes of this same program
//! (`loadtest idle-worker`), each holding a share of the sockets from its own
//! loopback source addresses. A worker talks to the coordinator in lines: on
//! stdout `progress OK FAILED`, `ready OK FAILED`, `error TEXT`, `alive N`; on
//! stdin `stop` (or end of file, so that a dead coordinator never leaves workers
//! behind).

use crate::procstat::CpuMark;
use crate::progress::Progress;
use crate::target::{Target, TargetKind};
use crate::wire::{self, Dialer, Ws};
use anyhow::{bail, Context};
use futures_util::{SinkExt, StreamExt};
use pitboss_protocol::{Auth, ClientFrame, ServerFrame};
use serde::Serialize;
use std::io::{BufRead, BufReader, Write};
use std::net::{Ipv4Addr, SocketAddr};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio_tungstenite::tungstenite::Message;

/// Most sockets one worker may hold: the descriptor limit here is 20,000 per
/// process, and a worker needs a few for itself.
pub const MAX_PER_WORKER: usize = 18_000;

/// Connections a worker opens at once.
const CONNECT_CONCURRENCY: usize = 64;

/// Lines from the workers waiting for the coordinator. A handful per worker per
/// second; a full queue only delays a worker's stdout thread.
const WORKER_LINES: usize = 1024;

/// How the idle scenario runs.
#[derive(Debug, Clone, Serialize)]
pub struct IdleConfig {
    /// Connections to hold.
    pub connections: usize,
    /// Connections per worker process (at most [`MAX_PER_WORKER`]).
    pub per_worker: usize,
    /// Seconds to wait after connecting before reading the RSS (lazy frees,
    /// garbage collection).
    pub settle_secs: f64,
    /// Seconds to hold the connections after the reading; the report says how
    /// many were still open at the end.
    pub hold_secs: f64,
    /// The last byte of the first source address (127.0.0.x); each worker takes
    /// the next few.
    pub first_source: u8,
}

/// The outcome for one server.
#[derive(Debug, Clone, Serialize)]
pub struct IdleResult {
    /// Which server.
    pub target: TargetKind,
    /// Connections asked for.
    pub connections: usize,
    /// Connections that completed their handshake.
    pub connected: u64,
    /// Connections that failed.
    pub failed: u64,
    /// Connections still open at the end of the hold.
    pub alive_at_end: u64,
    /// Worker processes used.
    pub workers: usize,
    /// Seconds to open and authenticate them all.
    pub connect_secs: f64,
    /// Server RSS before any idle connection, in bytes.
    pub server_rss_base_bytes: u64,
    /// Server RSS holding them, in bytes.
    pub server_rss_loaded_bytes: u64,
    /// `(loaded − base) / connected`, in bytes.
    pub rss_per_connection_bytes: f64,
    /// Server CPU use while holding idle connections, in cores.
    pub server_cpu_cores_idle: f64,
    /// The first error a worker reported, if any.
    pub first_error: Option<String>,
}

impl IdleResult {
    /// Whether every connection was opened and held.
    pub fn faulty(&self) -> bool {
        self.failed > 0
            || self.alive_at_end < self.connected
            || self.connected < self.connections as u64
    }
}

/// Runs the idle scenario against a started server.
pub async fn run(
    target: &Target,
    cfg: &IdleConfig,
    progress: &mut Progress,
) -> anyhow::Result<IdleResult> {
    let server = target.stats();
    // Pitboss: one agent at capacity keeps every player queued (with no agent
    // online a player would be told `no_agents` instead of waiting).
    let holder = if target.kind == TargetKind::Pitboss {
        let logins = tokio::task::block_in_place(|| target.add_agents("idle-holder-", 1, 1))?;
        let token = target.login(&logins[0]).await?;
        let dialer = Dialer::new(target.addr, Vec::new());
        let mut ws = dialer.connect("/ws").await?;
        wire::pitboss_hello(&mut ws, Auth::Agent { token }).await?;
        Some(tokio::spawn(hold_agent(ws)))
    } else {
        None
    };
    tokio::time::sleep(Duration::from_secs_f64(cfg.settle_secs)).await;
    let rss_base = server.rss_bytes()?;

    let per_worker = cfg.per_worker.clamp(2, MAX_PER_WORKER) & !1; // even: pairs stay in one worker
    let workers = cfg.connections.div_ceil(per_worker).max(1);
    let (tx, mut rx) = tokio::sync::mpsc::channel::<(usize, String)>(WORKER_LINES);
    let mut children: Vec<Child> = Vec::new();
    let mut next_source = cfg.first_source;
    let start = Instant::now();
    for w in 0..workers {
        let offset = w * per_worker;
        let count = per_worker.min(cfg.connections - offset);
        let n_sources = count.div_ceil(wire::PER_SOURCE).max(1);
        let sources: Vec<String> = wire::loopback_sources(next_source, n_sources)
            .iter()
            .map(|a| a.to_string())
            .collect();
        next_source = next_source.saturating_add(n_sources as u8);
        let mut child = Command::new(std::env::current_exe()?)
            .arg("idle-worker")
            .args(["--target", target.kind.name()])
            .args(["--addr", &target.addr.to_string()])
            .args(["--count", &count.to_string()])
            .args(["--offset", &offset.to_string()])
            .args(["--sources", &sources.join(",")])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .context("starting an idle worker")?;
        let stdout = child.stdout.take().context("worker stdout")?;
        let tx = tx.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if tx.blocking_send((w, line)).is_err() {
                    return;
                }
            }
        });
        children.push(child);
    }
    drop(tx);

    let mut st = WorkerStatus::new(workers);
    // A worker opens at least a few hundred connections a second; give slow
    // debug builds ample room before calling it stuck.
    let deadline = start + Duration::from_secs(60 + cfg.connections as u64 / 100);
    while !st.ready.iter().all(|&r| r) {
        let now = Instant::now();
        if now > deadline {
            stop_workers(&mut children);
            bail!("idle workers did not finish connecting in time");
        }
        match tokio::time::timeout(Duration::from_millis(200), rx.recv()).await {
            Ok(Some((w, line))) => st.handle(w, &line),
            Err(_) => {}
            Ok(None) => {
                stop_workers(&mut children);
                bail!("idle workers exited before connecting");
            }
        }
        progress.show(&format!(
            "[idle {}] connected {}/{} (failed {}) via {workers} workers",
            target.kind.name(),
            st.ok.iter().sum::<u64>(),
            cfg.connections,
            st.failed.iter().sum::<u64>()
        ));
    }
    let connect_secs = start.elapsed().as_secs_f64();
    progress.done();
    tokio::time::sleep(Duration::from_secs_f64(cfg.settle_secs)).await;
    let rss_loaded = server.rss_bytes()?;
    let cpu0 = CpuMark::now(&server);
    tokio::time::sleep(Duration::from_secs_f64(cfg.hold_secs)).await;
    let (_, cpu_idle) = CpuMark::now(&server).since(&cpu0);

    for child in &mut children {
        if let Some(stdin) = child.stdin.as_mut() {
            // A worker that already exited shows up as not alive below.
            let _ignored = stdin.write_all(b"stop\n").and_then(|_| stdin.flush());
        }
    }
    let deadline = Instant::now() + Duration::from_secs(30);
    while st.alive.iter().any(Option::is_none) && Instant::now() < deadline {
        match tokio::time::timeout(Duration::from_millis(200), rx.recv()).await {
            Ok(Some((w, line))) => st.handle(w, &line),
            Err(_) => {}
            Ok(None) => break,
        }
    }
    stop_workers(&mut children);
    if let Some(h) = holder {
        h.abort();
    }
    let connected: u64 = st.ok.iter().sum();
    let rss_per = if connected > 0 {
        (rss_loaded as f64 - rss_base as f64) / connected as f64
    } else {
        0.0
    };
    Ok(IdleResult {
        target: target.kind,
        connections: cfg.connections,
        connected,
        failed: st.failed.iter().sum(),
        alive_at_end: st.alive.iter().map(|a| a.unwrap_or(0)).sum(),
        workers,
        connect_secs,
        server_rss_base_bytes: rss_base,
        server_rss_loaded_bytes: rss_loaded,
        rss_per_connection_bytes: rss_per,
        server_cpu_cores_idle: cpu_idle,
        first_error: st.first_error,
    })
}

/// What the coordinator knows of its workers, from their lines.
struct WorkerStatus {
    ok: Vec<u64>,
    failed: Vec<u64>,
    ready: Vec<bool>,
    alive: Vec<Option<u64>>,
    first_error: Option<String>,
}

impl WorkerStatus {
    fn new(workers: usize) -> Self {
        Self {
            ok: vec![0; workers],
            failed: vec![0; workers],
            ready: vec![false; workers],
            alive: vec![None; workers],
            first_error: None,
        }
    }

    fn handle(&mut self, w: usize, line: &str) {
        let mut parts = line.split_whitespace();
        let mut number = || parts.next().and_then(|v| v.parse::<u64>().ok());
        match line.split_whitespace().next() {
            Some(kind @ ("progress" | "ready")) => {
                number(); // the word itself
                self.ok[w] = number().unwrap_or(0);
                self.failed[w] = number().unwrap_or(0);
                if kind == "ready" {
                    self.ready[w] = true;
                }
            }
            Some("alive") => {
                number();
                self.alive[w] = number();
            }
            Some("error") if self.first_error.is_none() => {
                self.first_error = Some(line.trim_start_matches("error ").to_string());
            }
            _ => {}
        }
    }
}

/// Waits briefly for the workers to exit (they do on `stop`), then kills any
/// left, each by its own pid.
fn stop_workers(children: &mut [Child]) {
    tokio::task::block_in_place(|| stop_workers_blocking(children));
}

fn stop_workers_blocking(children: &mut [Child]) {
    let deadline = Instant::now() + Duration::from_secs(10);
    for child in children.iter_mut() {
        drop(child.stdin.take());
        loop {
            match child.try_wait() {
                Ok(Some(_)) => break,
                Ok(None) if Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(20))
                }
                _ => {
                    if let Err(err) = child.kill() {
                        tracing::warn!(%err, pid = child.id(), "cannot stop an idle worker");
                    }
                    let _reaped = child.wait();
                    break;
                }
            }
        }
    }
}

/// The Pitboss agent who keeps players queued: accepts the first offer (which
/// fills its one slot) and otherwise only reads.
async fn hold_agent(mut ws: Ws) {
    while let Some(Ok(msg)) = ws.next().await {
        let Message::Text(text) = msg else { continue };
        if let Ok(ServerFrame::Offer(offer)) = serde_json::from_str::<ServerFrame>(&text) {
            let accept = wire::encode(&ClientFrame::Accept {
                conversation: offer.conversation,
            });
            if ws.send(Message::Text(accept.into())).await.is_err() {
                return;
            }
        }
    }
}

/// What one worker process is told to do.
#[derive(Debug, Clone, clap::Args)]
pub struct WorkerArgs {
    /// The server's kind.
    #[arg(long, value_enum)]
    pub target: TargetKind,
    /// The server's address.
    #[arg(long)]
    pub addr: SocketAddr,
    /// Connections to open.
    #[arg(long)]
    pub count: usize,
    /// The global index of this worker's first connection (pairs and rooms are
    /// keyed by it).
    #[arg(long, default_value_t = 0)]
    pub offset: usize,
    /// Source addresses, comma-separated.
    #[arg(long, value_delimiter = ',')]
    pub sources: Vec<Ipv4Addr>,
}

/// The worker: opens its connections, reports, holds them until told to stop.
pub async fn worker(args: WorkerArgs) -> anyhow::Result<()> {
    let dialer = Dialer::new(args.addr, args.sources.clone());
    let ok = Arc::new(AtomicU64::new(0));
    let failed = Arc::new(AtomicU64::new(0));
    let alive = Arc::new(AtomicU64::new(0));
    let report = {
        let (ok, failed) = (ok.clone(), failed.clone());
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(Duration::from_millis(500)).await;
                say(&format!(
                    "progress {} {}",
                    ok.load(Ordering::Relaxed),
                    failed.load(Ordering::Relaxed)
                ));
            }
        })
    };
    let dialer = &dialer;
    let kind = args.target;
    let mut first_error = true;
    let mut opened = futures_util::stream::iter(0..args.count)
        .map(|i| async move { open_idle(dialer, kind, args.offset + i).await })
        .buffer_unordered(CONNECT_CONCURRENCY);
    while let Some(result) = opened.next().await {
        match result {
            Ok(ws) => {
                ok.fetch_add(1, Ordering::Relaxed);
                alive.fetch_add(1, Ordering::Relaxed);
                tokio::spawn(hold(ws, alive.clone()));
            }
            Err(err) => {
                failed.fetch_add(1, Ordering::Relaxed);
                if first_error {
                    first_error = false;
                    say(&format!("error {err:#}"));
                }
            }
        }
    }
    report.abort();
    say(&format!(
        "ready {} {}",
        ok.load(Ordering::Relaxed),
        failed.load(Ordering::Relaxed)
    ));
    // Hold until told to stop, or until the coordinator is gone.
    tokio::task::spawn_blocking(|| {
        let stdin = std::io::stdin();
        for line in stdin.lock().lines().map_while(Result::ok) {
            if line.trim() == "stop" {
                break;
            }
        }
    })
    .await?;
    say(&format!("alive {}", alive.load(Ordering::Relaxed)));
    Ok(())
}

/// One line to the coordinator. If stdout is gone so is the coordinator, and the
/// worker ends when its stdin closes.
fn say(line: &str) {
    let mut out = std::io::stdout().lock();
    let _ignored = writeln!(out, "{line}").and_then(|_| out.flush());
}

/// Opens one idle connection and brings it to its waiting state.
async fn open_idle(dialer: &Dialer, kind: TargetKind, index: usize) -> anyhow::Result<Ws> {
    match kind {
        TargetKind::Pitboss => {
            let mut ws = dialer.connect("/ws").await?;
            wire::pitboss_hello(&mut ws, wire::visitor()).await?;
            wire::send_text(
                &mut ws,
                wire::encode(&ClientFrame::Start {
                    department: None,
                    language: None,
                }),
            )
            .await?;
            loop {
                match wire::next_frame(&mut ws).await? {
                    ServerFrame::Queued { .. } | ServerFrame::Assigned { .. } => return Ok(ws),
                    ServerFrame::NoAgents { .. } => {
                        bail!("no agents online: the player is not queued")
                    }
                    _ => {}
                }
            }
        }
        TargetKind::Bare => dialer.connect(&format!("/pair/idle-{}", index / 2)).await,
        TargetKind::Socketio => {
            let mut ws = dialer.connect(wire::SOCKETIO_PATH).await?;
            wire::sio_open(&mut ws).await?;
            wire::sio_join(&mut ws, 1, &format!("idle-{}", index / 2)).await?;
            Ok(ws)
        }
    }
}

/// Holds an idle connection: reads whatever comes (queue positions), answers
/// Socket.IO pings, and counts itself out when the server closes it.
async fn hold(mut ws: Ws, alive: Arc<AtomicU64>) {
    while let Some(Ok(msg)) = ws.next().await {
        if let Message::Text(t) = &msg {
            if t.as_str() == "2" && ws.send(Message::Text("3".into())).await.is_err() {
                break;
            }
        }
    }
    alive.fetch_sub(1, Ordering::Relaxed);
}
