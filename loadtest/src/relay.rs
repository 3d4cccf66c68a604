//! The relay scenario: N live conversations, both sides sending on an open-loop
//! schedule, at one rate or a sweep of rates. Measures delivery latency from each
//! message's scheduled send time, delivered messages per second, the server's CPU
//! per delivered message, and lost, duplicated and out-of-order messages. It owns
//! the connections of the run; the servers are the caller's, and the [`Site`]
//! says which node each side connects to (on a cluster, players and agents on
//! different nodes, so that every message crosses between nodes).
//!
//! Every message carries its identity in its client id,
//! `{step}.{conversation}.{side}.{k}.{scheduled µs}.{sent µs}`, so the receiver
//! judges loss, duplication and order and measures latency without asking the
//! sender anything.

use crate::procstat::{CpuMark, ProcStats};
use crate::progress::Progress;
use crate::site::{self, CpuPart, Site};
use crate::stats::{Latency, LatencySummary};
use crate::target::TargetKind;
use crate::wire::{self, SioPacket, Ws};
use anyhow::{bail, Context};
use futures_util::stream::{SplitSink, SplitStream};
use futures_util::{SinkExt, StreamExt};
use pitboss_protocol::{Auth, ClientFrame, ServerFrame};
use rand::Rng;
use serde::Serialize;
use std::cmp::Reverse;
use std::collections::{BTreeMap, BinaryHeap, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::{mpsc, oneshot};
use tokio_tungstenite::tungstenite::Message;

/// Connections opened at once during set-up. Enough to hide round trips, few
/// enough not to look like a connection storm to the server.
const SETUP_CONCURRENCY: usize = 64;

/// Commands queued to one connection's writer. Only set-up replies (accept,
/// pong) and one `Run` per step go through it, so it never fills in practice; a
/// full queue is counted as an error.
const CTRL_QUEUE: usize = 256;

/// Anomalies (echoes, duplicates, reordering, sequence breaks) described one by
/// one per step; the counts cover all of them.
const ANOMALY_EXAMPLES: usize = 20;

/// Longest wait for a saturated server's backlog after a step.
const MAX_DRAIN: Duration = Duration::from_secs(60);

/// How the relay scenario runs.
#[derive(Debug, Clone, Serialize)]
pub struct RelayConfig {
    /// Live conversations (each a player and an agent side).
    pub conversations: usize,
    /// Conversations per agent connection for Pitboss and Socket.IO (the bare
    /// relay pairs sockets, one conversation each).
    pub agent_capacity: usize,
    /// Offered load of each step, in messages per second over all conversations
    /// and both sides. One value is a fixed-rate run, several a sweep.
    pub offered: Vec<f64>,
    /// Seconds each step sends for.
    pub step_secs: f64,
    /// Seconds at the start of each step whose latencies are not recorded
    /// (connections warm up, Node's JIT compiles); they still count for loss.
    pub warmup_secs: f64,
    /// Seconds without any delivery after a step's last send before the messages
    /// still missing count as lost.
    pub drain_secs: f64,
    /// Bytes of text per message.
    pub text_bytes: usize,
    /// A sweep stops after a step whose p99 exceeds this many milliseconds, or
    /// that delivered less than 90% of what was offered, or lost anything.
    pub stop_p99_ms: f64,
    /// The latency objective: the report names the highest offered load whose
    /// p99 stayed within it.
    pub slo_p99_ms: f64,
}

/// The outcome for one server.
#[derive(Debug, Clone, Serialize)]
pub struct RelayResult {
    /// Which server.
    pub target: TargetKind,
    /// Server processes serving clients (1, or a cluster's nodes).
    pub nodes: usize,
    /// Conversations held.
    pub conversations: usize,
    /// Sockets the generator opened.
    pub sockets: usize,
    /// Seconds set-up took (connect, authenticate, assign).
    pub setup_secs: f64,
    /// One entry per step run.
    pub steps: Vec<RelayStep>,
    /// The highest offered load whose p99 was within the objective and that lost
    /// nothing.
    pub max_offered_within_slo: Option<f64>,
    /// The server's RSS with every conversation set up, in bytes.
    pub server_rss_bytes: u64,
}

/// The outcome of one step.
#[derive(Debug, Clone, Serialize)]
pub struct RelayStep {
    /// Messages per second offered (all conversations, both sides).
    pub offered_per_sec: f64,
    /// Messages per second each side of each conversation sent.
    pub rate_per_side: f64,
    /// Seconds of sending.
    pub secs: f64,
    /// Messages sent.
    pub sent: u64,
    /// Messages received by the other side (each counted once).
    pub delivered: u64,
    /// `delivered / secs`.
    pub delivered_per_sec: f64,
    /// Sent but never received within the drain time.
    pub lost: u64,
    /// Received more than once.
    pub duplicated: u64,
    /// Received after a later message of the same sender.
    pub out_of_order: u64,
    /// Pitboss: on one connection, a conversation's `message` or `ack` whose
    /// sequence number did not increase.
    pub seq_regressions: u64,
    /// Pitboss: on one connection, a conversation's `message` or `ack` whose
    /// `prev` was not the last sequence number seen there (the protocol says
    /// they arrive without gaps on an attached connection).
    pub seq_gaps: u64,
    /// The first anomalies of the step, described (which connection, which
    /// conversation, which frame, when).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub anomalies: Vec<String>,
    /// Acknowledgements received by senders (Pitboss and Socket.IO).
    pub acks: u64,
    /// Error frames, by code, and connection failures (`disconnected`, …).
    pub errors: BTreeMap<String, u64>,
    /// Latency from scheduled send time to receipt (open loop).
    pub latency: LatencySummary,
    /// Latency from the actual write to receipt (excludes generator lag).
    pub latency_from_write: LatencySummary,
    /// How late the generator wrote each message after its scheduled time.
    pub send_lag: LatencySummary,
    /// Pitboss: from the actual write to the sender's `ack` (the message is
    /// stored: on a cluster, committed to PostgreSQL).
    pub ack_latency: LatencySummary,
    /// Server CPU time per delivered message, in microseconds (on a cluster, of
    /// the nodes, Redis and PostgreSQL together).
    pub server_cpu_us_per_msg: f64,
    /// Server CPU use during the step and its drain, in cores.
    pub server_cpu_cores: f64,
    /// On a cluster, the same part by part: the nodes, Redis, PostgreSQL.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub server_cpu_parts: Vec<CpuPart>,
    /// Generator CPU use during the step and its drain, in cores (near its core count means the
    /// generator, not the server, was the limit).
    pub generator_cpu_cores: f64,
    /// Server RSS at the end of the step, in bytes.
    pub server_rss_bytes: u64,
}

impl RelayStep {
    /// Whether this step broke the delivery guarantee.
    pub fn faulty(&self) -> bool {
        self.lost > 0
            || self.duplicated > 0
            || self.out_of_order > 0
            || self.seq_regressions > 0
            || self.seq_gaps > 0
            || !self.errors.is_empty()
    }
}

/// Which side of a conversation a connection plays.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Role {
    Player,
    Agent,
}

impl Role {
    /// The side whose messages this role sends (player 0, agent 1).
    fn side(self) -> u8 {
        match self {
            Role::Player => 0,
            Role::Agent => 1,
        }
    }
}

/// One stream of messages a connection sends: a conversation and a side.
#[derive(Debug, Clone)]
struct Slot {
    conversation: u32,
    side: u8,
    /// The conversation as the wire names it (Pitboss id, room, or a key).
    wire_id: Arc<str>,
}

enum Ctrl {
    /// Send this text now.
    Frame(String),
    /// Run a step's schedule.
    Run(Run),
}

struct Run {
    step: u32,
    interval: Duration,
    start: Instant,
    end: Instant,
    slots: Vec<Slot>,
    /// Messages sent per slot, when the schedule is done.
    done: oneshot::Sender<Vec<u64>>,
}

struct Conn {
    ctrl: mpsc::Sender<Ctrl>,
    slots: Vec<Slot>,
    tasks: [tokio::task::JoinHandle<()>; 2],
}

/// What the receivers learned during the current step. One mutex shared by every
/// reader: each critical section is a few counter updates, never an await.
struct Recorder {
    epoch: Instant,
    state: Mutex<StepState>,
    /// Delivered count readable without the lock, for the progress line.
    delivered: AtomicU64,
}

#[derive(Default)]
struct StepState {
    step: u32,
    /// Latencies of messages scheduled before this (µs since epoch) are not
    /// recorded: warm-up.
    measure_from_us: u64,
    latency: Latency,
    latency_from_write: Latency,
    send_lag: Latency,
    ack_latency: Latency,
    /// Per conversation and side: which message numbers arrived.
    directions: Vec<Direction>,
    distinct: u64,
    duplicated: u64,
    out_of_order: u64,
    seq_regressions: u64,
    seq_gaps: u64,
    anomalies: Vec<String>,
    acks: u64,
    errors: BTreeMap<String, u64>,
}

impl StepState {
    /// Keeps the description of an anomaly, if there is room.
    fn anomaly(&mut self, what: impl FnOnce() -> String) {
        if self.anomalies.len() < ANOMALY_EXAMPLES {
            self.anomalies.push(what());
        }
    }
}

#[derive(Default, Clone)]
struct Direction {
    /// Bit k set: message k arrived.
    seen: Vec<u64>,
    max_k: Option<u64>,
    distinct: u64,
}

/// The parts of a client id.
struct ClientId {
    step: u32,
    conversation: u32,
    side: u8,
    k: u64,
    scheduled_us: u64,
    sent_us: u64,
}

impl ClientId {
    fn format(&self) -> String {
        format!(
            "{}.{}.{}.{}.{}.{}",
            self.step, self.conversation, self.side, self.k, self.scheduled_us, self.sent_us
        )
    }

    fn parse(s: &str) -> Option<ClientId> {
        let mut it = s.split('.');
        let id = ClientId {
            step: it.next()?.parse().ok()?,
            conversation: it.next()?.parse().ok()?,
            side: it.next()?.parse().ok()?,
            k: it.next()?.parse().ok()?,
            scheduled_us: it.next()?.parse().ok()?,
            sent_us: it.next()?.parse().ok()?,
        };
        it.next().is_none().then_some(id)
    }
}

impl Recorder {
    fn new(epoch: Instant) -> Self {
        Self {
            epoch,
            state: Mutex::new(StepState::default()),
            delivered: AtomicU64::new(0),
        }
    }

    fn micros(&self, t: Instant) -> u64 {
        t.saturating_duration_since(self.epoch).as_micros() as u64
    }

    fn begin_step(&self, step: u32, conversations: usize, measure_from: Instant) {
        let mut s = self.state.lock().expect("recorder poisoned");
        *s = StepState {
            step,
            measure_from_us: self.micros(measure_from),
            directions: vec![Direction::default(); conversations * 2],
            ..StepState::default()
        };
        self.delivered.store(0, Ordering::Relaxed);
    }

    fn finish_step(&self) -> StepState {
        std::mem::take(&mut *self.state.lock().expect("recorder poisoned"))
    }

    /// A message arrived at a connection of `role` at `now`.
    fn delivered(&self, role: Role, client_id: &str, now: Instant) {
        let now_us = self.micros(now);
        let mut s = self.state.lock().expect("recorder poisoned");
        let Some(id) = ClientId::parse(client_id) else {
            *s.errors.entry("malformed_client_id".into()).or_default() += 1;
            return;
        };
        if id.side == role.side() {
            // A sender seeing its own message: not a delivery to the other side.
            *s.errors.entry("echoed_to_sender".into()).or_default() += 1;
            s.anomaly(|| {
                format!(
                    "{role:?} got its own message {client_id} back as `message`, {:.1} ms after sending it",
                    now_us.saturating_sub(id.sent_us) as f64 / 1000.0
                )
            });
            return;
        }
        if id.step != s.step {
            *s.errors.entry("late_from_earlier_step".into()).or_default() += 1;
            return;
        }
        let index = id.conversation as usize * 2 + id.side as usize;
        let Some(d) = s.directions.get_mut(index) else {
            *s.errors.entry("unknown_conversation".into()).or_default() += 1;
            return;
        };
        let (word, bit) = ((id.k / 64) as usize, 1u64 << (id.k % 64));
        if d.seen.len() <= word {
            d.seen.resize(word + 1, 0);
        }
        if d.seen[word] & bit != 0 {
            s.duplicated += 1;
            s.anomaly(|| format!("{role:?} got {client_id} a second time"));
            return;
        }
        d.seen[word] |= bit;
        d.distinct += 1;
        let ooo = d.max_k.is_some_and(|m| id.k < m);
        d.max_k = Some(d.max_k.map_or(id.k, |m| m.max(id.k)));
        s.distinct += 1;
        if ooo {
            s.out_of_order += 1;
            s.anomaly(|| format!("{role:?} got {client_id} after a later message of its sender"));
        }
        if now_us.saturating_sub(id.scheduled_us) > 50_000 {
            tracing::debug!(
                conversation = id.conversation,
                side = id.side,
                k = id.k,
                scheduled_ms = id.scheduled_us / 1000,
                sent_ms = id.sent_us / 1000,
                received_ms = now_us / 1000,
                "slow delivery"
            );
        }
        if id.scheduled_us >= s.measure_from_us {
            s.latency.record(now_us.saturating_sub(id.scheduled_us));
            s.latency_from_write
                .record(now_us.saturating_sub(id.sent_us));
        }
        self.delivered.fetch_add(1, Ordering::Relaxed);
    }

    /// The sender's `ack` of a message arrived at `now`.
    fn acked(&self, client_id: &str, now: Instant) {
        let now_us = self.micros(now);
        let mut s = self.state.lock().expect("recorder poisoned");
        s.acks += 1;
        if let Some(id) = ClientId::parse(client_id) {
            if id.step == s.step && id.scheduled_us >= s.measure_from_us {
                s.ack_latency.record(now_us.saturating_sub(id.sent_us));
            }
        }
    }

    fn count(&self, what: impl FnOnce(&mut StepState)) {
        what(&mut self.state.lock().expect("recorder poisoned"));
    }

    fn error(&self, code: &str) {
        self.count(|s| *s.errors.entry(code.to_string()).or_default() += 1);
    }

    fn p99_us(&self) -> u64 {
        self.state
            .lock()
            .expect("recorder poisoned")
            .latency
            .quantile_us(0.99)
    }
}

/// Runs the relay scenario against started servers.
pub async fn run(
    site: &Site<'_>,
    cfg: &RelayConfig,
    progress: &mut Progress,
) -> anyhow::Result<RelayResult> {
    if cfg.conversations == 0 || cfg.offered.is_empty() {
        bail!("the relay scenario needs conversations and a rate");
    }
    let epoch = Instant::now();
    let recorder = Arc::new(Recorder::new(epoch));
    let text: Arc<str> = "x".repeat(cfg.text_bytes.max(1)).into();
    let setup_start = Instant::now();
    let name = label(site);
    progress.show(&format!(
        "[relay {name}] setting up {} conversations",
        cfg.conversations
    ));
    let conns = setup(site, cfg, &recorder, &text).await?;
    let setup_secs = setup_start.elapsed().as_secs_f64();
    let me = ProcStats::current();
    let server_rss_bytes = site.rss_bytes();
    let mut result = RelayResult {
        target: site.kind,
        nodes: site.node_count(),
        conversations: cfg.conversations,
        sockets: conns.len(),
        setup_secs,
        steps: Vec::new(),
        max_offered_within_slo: None,
        server_rss_bytes,
    };
    for (step, &offered) in cfg.offered.iter().enumerate() {
        let step = step as u32;
        let rate_per_side = offered / (2.0 * cfg.conversations as f64);
        let interval = Duration::from_secs_f64(1.0 / rate_per_side);
        // A little slack so that every writer has its orders before the start.
        let start = Instant::now() + Duration::from_millis(100);
        let end = start + Duration::from_secs_f64(cfg.step_secs);
        recorder.begin_step(
            step,
            cfg.conversations,
            start + Duration::from_secs_f64(cfg.warmup_secs),
        );
        let server_cpu0 = site.mark();
        let me_cpu0 = CpuMark::now(&me);
        let mut pending = Vec::new();
        for conn in &conns {
            if conn.slots.is_empty() {
                continue;
            }
            let (done, rx) = oneshot::channel();
            conn.ctrl
                .send(Ctrl::Run(Run {
                    step,
                    interval,
                    start,
                    end,
                    slots: conn.slots.clone(),
                    done,
                }))
                .await
                .context("a connection's writer has stopped")?;
            pending.push((conn.slots.clone(), rx));
        }
        let label = format!(
            "[relay {name}] step {}/{} offered {:.0} msg/s",
            step + 1,
            cfg.offered.len(),
            offered
        );
        // Progress while the writers work.
        while Instant::now() < end {
            tokio::time::sleep(Duration::from_millis(250)).await;
            let elapsed = Instant::now()
                .saturating_duration_since(start)
                .as_secs_f64();
            if elapsed > 0.0 {
                let d = recorder.delivered.load(Ordering::Relaxed);
                progress.show(&format!(
                    "{label}: delivered {:.0} msg/s, p99 {} ms",
                    d as f64 / elapsed,
                    crate::stats::ms(recorder.p99_us())
                ));
            }
        }
        let mut sent_by_direction = vec![0u64; cfg.conversations * 2];
        let mut writers_failed = 0u64;
        for (slots, rx) in pending {
            match tokio::time::timeout(Duration::from_secs_f64(cfg.drain_secs + 30.0), rx).await {
                Ok(Ok(sent)) => {
                    for (slot, n) in slots.iter().zip(sent) {
                        sent_by_direction[slot.conversation as usize * 2 + slot.side as usize] = n;
                    }
                }
                _ => writers_failed += 1,
            }
        }
        let sent: u64 = sent_by_direction.iter().sum();
        // Drain: wait until everything sent has arrived. A saturated server may
        // still be working through a backlog: keep waiting while deliveries
        // arrive, and count as lost only what has not come after `drain_secs`
        // without any progress (or after `MAX_DRAIN`).
        let quiet = Duration::from_secs_f64(cfg.drain_secs);
        let drain_start = Instant::now();
        let (mut last, mut last_change) =
            (recorder.delivered.load(Ordering::Relaxed), Instant::now());
        while last < sent && last_change.elapsed() < quiet && drain_start.elapsed() < MAX_DRAIN {
            tokio::time::sleep(Duration::from_millis(20)).await;
            let now = recorder.delivered.load(Ordering::Relaxed);
            if now != last {
                (last, last_change) = (now, Instant::now());
            }
        }
        // Over the step and its drain: a saturated server keeps working through
        // its backlog after the last send, and that work is part of the step.
        let server_cpu = site.cpu_since(&server_cpu0);
        let secs = cfg.step_secs;
        let (_, generator_cpu_cores) = CpuMark::now(&me).since(&me_cpu0);
        let state = recorder.finish_step();
        let lost: u64 = sent_by_direction
            .iter()
            .zip(&state.directions)
            .map(|(&s, d)| s.saturating_sub(d.distinct))
            .sum();
        let mut errors = state.errors.clone();
        if writers_failed > 0 {
            errors.insert("writer_failed".into(), writers_failed);
        }
        let s = RelayStep {
            offered_per_sec: offered,
            rate_per_side,
            secs,
            sent,
            delivered: state.distinct,
            delivered_per_sec: state.distinct as f64 / secs,
            lost,
            duplicated: state.duplicated,
            out_of_order: state.out_of_order,
            seq_regressions: state.seq_regressions,
            seq_gaps: state.seq_gaps,
            anomalies: state.anomalies.clone(),
            acks: state.acks,
            errors,
            latency: state.latency.summary(),
            latency_from_write: state.latency_from_write.summary(),
            send_lag: state.send_lag.summary(),
            ack_latency: state.ack_latency.summary(),
            server_cpu_us_per_msg: site::per_message(server_cpu.total, state.distinct),
            server_cpu_cores: server_cpu.cores,
            server_cpu_parts: server_cpu.breakdown(state.distinct),
            generator_cpu_cores,
            server_rss_bytes: site.rss_bytes(),
        };
        progress.done();
        tracing::info!(
            target_kind = %name,
            offered,
            delivered_per_sec = s.delivered_per_sec,
            p99_us = s.latency.p99_us,
            lost = s.lost,
            "step done"
        );
        let p99_ms = s.latency.p99_us as f64 / 1000.0;
        if !s.faulty() && p99_ms <= cfg.slo_p99_ms && s.delivered_per_sec >= 0.9 * offered {
            result.max_offered_within_slo = Some(offered);
        }
        let saturated =
            p99_ms > cfg.stop_p99_ms || s.delivered_per_sec < 0.9 * offered || s.faulty();
        result.steps.push(s);
        if saturated && cfg.offered.len() > 1 {
            tracing::info!(
                target_kind = %name,
                offered,
                "saturated: sweep stops"
            );
            break;
        }
    }
    for conn in conns {
        drop(conn.ctrl);
        for task in conn.tasks {
            task.abort();
        }
    }
    Ok(result)
}

/// The site's name in progress lines and logs: `pitboss`, `pitboss ×3`.
fn label(site: &Site<'_>) -> String {
    match site.node_count() {
        1 => site.kind.name().to_string(),
        n => format!("{} ×{n}", site.kind.name()),
    }
}

/// Opens the connections and sets up the conversations, per target. Player `i`
/// and agent `a` connect where the site puts them.
async fn setup(
    site: &Site<'_>,
    cfg: &RelayConfig,
    recorder: &Arc<Recorder>,
    text: &Arc<str>,
) -> anyhow::Result<Vec<Conn>> {
    let n = cfg.conversations;
    let cap = cfg.agent_capacity.max(1);
    let kind = site.kind;
    let ctx = ConnContext {
        kind,
        recorder: recorder.clone(),
        text: text.clone(),
    };
    match kind {
        TargetKind::Pitboss => {
            let agents = n.div_ceil(cap);
            // The CLI hashes passwords: off the async threads.
            let logins =
                tokio::task::block_in_place(|| site.add_agents("relay-agent-", agents, cap))?;
            // Agents report each conversation once it is attached (`resumed`).
            let (attached_tx, mut attached_rx) = mpsc::channel::<(usize, String)>(n + 16);
            let mut conns = Vec::new();
            for (i, login) in logins.iter().enumerate() {
                let token = site.agent_node(i).login(login).await?;
                let mut ws = site.agent_dialer(i).connect("/ws").await?;
                wire::pitboss_hello(&mut ws, Auth::Agent { token }).await?;
                conns.push(ctx.spawn(ws, Role::Agent, Some((i, attached_tx.clone())), Vec::new()));
            }
            drop(attached_tx);
            let players = futures_util::stream::iter(0..n)
                .map(|i| async move {
                    let mut ws = site.player_dialer(i).connect("/ws").await?;
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
                            ServerFrame::Assigned { conversation, .. } => {
                                return anyhow::Ok((i, conversation.to_string(), ws));
                            }
                            ServerFrame::NoAgents { .. } => bail!("no agents online"),
                            _ => {}
                        }
                    }
                })
                .buffer_unordered(SETUP_CONCURRENCY)
                .collect::<Vec<_>>()
                .await;
            let mut index_of = HashMap::new();
            for p in players {
                let (i, conversation, ws) = p.context("setting up a player")?;
                let wire_id: Arc<str> = conversation.clone().into();
                index_of.insert(conversation, i as u32);
                let slot = Slot {
                    conversation: i as u32,
                    side: Role::Player.side(),
                    wire_id,
                };
                conns.push(ctx.spawn(ws, Role::Player, None, vec![slot]));
            }
            let mut attached = 0;
            while attached < n {
                let (agent, conversation) =
                    tokio::time::timeout(wire::HANDSHAKE_TIMEOUT, attached_rx.recv())
                        .await
                        .context("timed out waiting for agents to attach")?
                        .context("agent connections ended during set-up")?;
                let Some(&i) = index_of.get(&conversation) else {
                    continue;
                };
                conns[agent].slots.push(Slot {
                    conversation: i,
                    side: Role::Agent.side(),
                    wire_id: conversation.into(),
                });
                attached += 1;
            }
            Ok(conns)
        }
        TargetKind::Bare => {
            let pairs = futures_util::stream::iter(0..n)
                .map(|i| async move {
                    let key = uuid::Uuid::new_v4().to_string();
                    let a = site
                        .player_dialer(i)
                        .connect(&format!("/pair/{key}"))
                        .await?;
                    let b = site
                        .agent_dialer(i)
                        .connect(&format!("/pair/{key}"))
                        .await?;
                    anyhow::Ok((i, key, a, b))
                })
                .buffer_unordered(SETUP_CONCURRENCY)
                .collect::<Vec<_>>()
                .await;
            let mut conns = Vec::new();
            for p in pairs {
                let (i, key, a, b) = p.context("setting up a pair")?;
                let wire_id: Arc<str> = key.into();
                for (ws, role) in [(a, Role::Player), (b, Role::Agent)] {
                    let slot = Slot {
                        conversation: i as u32,
                        side: role.side(),
                        wire_id: wire_id.clone(),
                    };
                    conns.push(ctx.spawn(ws, role, None, vec![slot]));
                }
            }
            Ok(conns)
        }
        TargetKind::Socketio => {
            let rooms: Vec<Arc<str>> = (0..n)
                .map(|_| uuid::Uuid::new_v4().to_string().into())
                .collect();
            let rooms = &rooms;
            let agents = futures_util::stream::iter(0..n.div_ceil(cap))
                .map(|a| async move {
                    let mut ws = site.agent_dialer(a).connect(wire::SOCKETIO_PATH).await?;
                    wire::sio_open(&mut ws).await?;
                    let mut slots = Vec::new();
                    let first = a * cap;
                    for (i, room) in rooms.iter().enumerate().skip(first).take(cap) {
                        wire::sio_join(&mut ws, i as u64, room).await?;
                        slots.push(Slot {
                            conversation: i as u32,
                            side: Role::Agent.side(),
                            wire_id: room.clone(),
                        });
                    }
                    anyhow::Ok((ws, slots))
                })
                .buffer_unordered(SETUP_CONCURRENCY)
                .collect::<Vec<_>>()
                .await;
            let players = futures_util::stream::iter(0..n)
                .map(|i| async move {
                    let mut ws = site.player_dialer(i).connect(wire::SOCKETIO_PATH).await?;
                    wire::sio_open(&mut ws).await?;
                    wire::sio_join(&mut ws, 0, &rooms[i]).await?;
                    let slot = Slot {
                        conversation: i as u32,
                        side: Role::Player.side(),
                        wire_id: rooms[i].clone(),
                    };
                    anyhow::Ok((ws, slot))
                })
                .buffer_unordered(SETUP_CONCURRENCY)
                .collect::<Vec<_>>()
                .await;
            let mut conns = Vec::new();
            for a in agents {
                let (ws, slots) = a.context("setting up an agent")?;
                conns.push(ctx.spawn(ws, Role::Agent, None, slots));
            }
            for p in players {
                let (ws, slot) = p.context("setting up a player")?;
                conns.push(ctx.spawn(ws, Role::Player, None, vec![slot]));
            }
            Ok(conns)
        }
    }
}

/// What every connection's tasks share.
struct ConnContext {
    kind: TargetKind,
    recorder: Arc<Recorder>,
    text: Arc<str>,
}

impl ConnContext {
    /// Splits the socket into a reader and a writer task.
    fn spawn(
        &self,
        ws: Ws,
        role: Role,
        attached: Option<(usize, mpsc::Sender<(usize, String)>)>,
        slots: Vec<Slot>,
    ) -> Conn {
        let (sink, stream) = ws.split();
        let (ctrl, rx) = mpsc::channel(CTRL_QUEUE);
        let writer = tokio::spawn(writer(
            sink,
            rx,
            self.kind,
            self.text.clone(),
            self.recorder.clone(),
        ));
        let reader = tokio::spawn(reader(
            stream,
            self.kind,
            role,
            ctrl.clone(),
            self.recorder.clone(),
            attached,
        ));
        Conn {
            ctrl,
            slots,
            tasks: [writer, reader],
        }
    }
}

/// Encodes one chat message for the target.
fn encode_send(
    kind: TargetKind,
    slot: &Slot,
    client_id: &str,
    text: &str,
    ack_id: &mut u64,
) -> String {
    match kind {
        // The bare relay forwards this verbatim; the receiver decodes it as the
        // `send` it is.
        TargetKind::Pitboss | TargetKind::Bare => format!(
            r#"{{"type":"send","conversation":"{}","client_id":"{client_id}","text":"{text}"}}"#,
            slot.wire_id
        ),
        TargetKind::Socketio => {
            *ack_id += 1;
            format!(
                r#"42{}["send",{{"room":"{}","client_id":"{client_id}","text":"{text}"}}]"#,
                *ack_id + 1_000_000,
                slot.wire_id
            )
        }
    }
}

type Sink = SplitSink<Ws, Message>;

/// Writes control frames as they come and runs each step's open-loop schedule.
async fn writer(
    mut sink: Sink,
    mut rx: mpsc::Receiver<Ctrl>,
    kind: TargetKind,
    text: Arc<str>,
    recorder: Arc<Recorder>,
) {
    let mut ack_id = 0u64;
    while let Some(ctrl) = rx.recv().await {
        let ok = match ctrl {
            Ctrl::Frame(t) => sink.send(Message::Text(t.into())).await.is_ok(),
            Ctrl::Run(run) => {
                schedule(&mut sink, &mut rx, kind, &text, &recorder, run, &mut ack_id)
                    .await
                    .is_ok()
            }
        };
        if !ok {
            recorder.error("write_failed");
            return;
        }
    }
}

/// Sends every slot's messages at their scheduled times, `interval` apart from a
/// random phase, until `end`. Open loop: a message's time is fixed in advance; a
/// writer that falls behind (a slow server pushes back through TCP) sends late
/// and the lateness counts in the latency, instead of slowing the schedule down.
async fn schedule(
    sink: &mut Sink,
    rx: &mut mpsc::Receiver<Ctrl>,
    kind: TargetKind,
    text: &str,
    recorder: &Recorder,
    run: Run,
    ack_id: &mut u64,
) -> anyhow::Result<()> {
    let mut heap = BinaryHeap::with_capacity(run.slots.len());
    {
        let mut rng = rand::thread_rng();
        for i in 0..run.slots.len() {
            let phase = run.interval.mul_f64(rng.gen::<f64>());
            heap.push(Reverse((run.start + phase, i, 0u64)));
        }
    }
    let mut sent = vec![0u64; run.slots.len()];
    let mut lag = Latency::default();
    let mut unflushed = false;
    while let Some(&Reverse((due, i, k))) = heap.peek() {
        if due >= run.end {
            break;
        }
        let now = Instant::now();
        if due > now {
            if unflushed {
                sink.flush().await?;
                unflushed = false;
                continue;
            }
            tokio::select! {
                _ = crate::clock::sleep_until(due) => {}
                ctrl = rx.recv() => match ctrl {
                    Some(Ctrl::Frame(t)) => {
                        sink.feed(Message::Text(t.into())).await?;
                        unflushed = true;
                    }
                    // One schedule at a time: the coordinator waits for `done`.
                    Some(Ctrl::Run(_)) => recorder.error("overlapping_run"),
                    None => bail!("connection dropped"),
                },
            }
            continue;
        }
        heap.pop();
        let slot = &run.slots[i];
        lag.record(now.duration_since(due).as_micros() as u64);
        let id = ClientId {
            step: run.step,
            conversation: slot.conversation,
            side: slot.side,
            k,
            scheduled_us: recorder.micros(due),
            sent_us: recorder.micros(now),
        };
        let frame = encode_send(kind, slot, &id.format(), text, ack_id);
        sink.feed(Message::Text(frame.into())).await?;
        unflushed = true;
        sent[i] = k + 1;
        heap.push(Reverse((due + run.interval, i, k + 1)));
    }
    if unflushed {
        sink.flush().await?;
    }
    recorder.count(|s| s.send_lag.add(&lag));
    // The coordinator may have given up waiting; then nobody needs the counts.
    let _ignored = run.done.send(sent);
    Ok(())
}

/// Reads everything a connection receives: deliveries, acks, errors, and (during
/// set-up) offers to accept and attachments to report.
async fn reader(
    mut stream: SplitStream<Ws>,
    kind: TargetKind,
    role: Role,
    ctrl: mpsc::Sender<Ctrl>,
    recorder: Arc<Recorder>,
    attached: Option<(usize, mpsc::Sender<(usize, String)>)>,
) {
    // Pitboss: the last sequence number seen per conversation, over `message`
    // and `ack` frames. The first frame of a conversation here is not judged:
    // set-up may have read the ones before it (a player's `joined` event).
    let mut last_seq: HashMap<String, u64> = HashMap::new();
    // Checks one entry of a conversation's chain on this connection.
    let mut chain = |conversation: String, seq: u64, prev: u64, frame: &str, now: Instant| {
        let Some(last) = last_seq.get_mut(&conversation) else {
            last_seq.insert(conversation, seq);
            return;
        };
        let (regressed, gap) = (seq <= *last, seq > *last && prev != *last);
        if regressed || gap {
            let seen = *last;
            recorder.count(|s| {
                if regressed {
                    s.seq_regressions += 1;
                } else {
                    s.seq_gaps += 1;
                }
                s.anomaly(|| {
                    format!(
                        "{role:?} connection, conversation {conversation}: `{frame}` seq {seq} prev {prev} after seq {seen} ({} ms into the run)",
                        now.saturating_duration_since(recorder.epoch).as_millis()
                    )
                });
            });
        }
        *last = seq.max(*last);
    };
    while let Some(msg) = stream.next().await {
        let now = Instant::now();
        let text = match msg {
            Ok(Message::Text(t)) => t,
            Ok(Message::Close(_)) | Err(_) => break,
            Ok(_) => continue,
        };
        match kind {
            TargetKind::Pitboss => match serde_json::from_str::<ServerFrame>(&text) {
                Ok(ServerFrame::Message(m)) => {
                    let frame = match &m.client_id {
                        Some(id) => format!("message {id}"),
                        None => format!("message ({:?})", m.event),
                    };
                    chain(m.conversation.to_string(), m.seq, m.prev, &frame, now);
                    if let Some(client_id) = &m.client_id {
                        recorder.delivered(role, client_id, now);
                    }
                }
                Ok(ServerFrame::Ack {
                    conversation,
                    client_id,
                    seq,
                    prev,
                    duplicate,
                }) => {
                    let frame = if duplicate {
                        format!("ack {client_id} (duplicate)")
                    } else {
                        format!("ack {client_id}")
                    };
                    chain(conversation.to_string(), seq, prev, &frame, now);
                    recorder.acked(&client_id, now);
                }
                Ok(ServerFrame::Error { code, .. }) => recorder.error(code.as_str()),
                Ok(ServerFrame::Offer(offer)) => {
                    let accept = wire::encode(&ClientFrame::Accept {
                        conversation: offer.conversation,
                    });
                    if ctrl.try_send(Ctrl::Frame(accept)).is_err() {
                        recorder.error("control_queue_full");
                    }
                }
                Ok(ServerFrame::Resumed { conversation, .. }) => {
                    if let Some((me, tx)) = &attached {
                        if tx.try_send((*me, conversation.to_string())).is_err() {
                            recorder.error("setup_queue_full");
                        }
                    }
                }
                Ok(_) => {}
                Err(_) => recorder.error("undecodable_frame"),
            },
            TargetKind::Bare => match serde_json::from_str::<ClientFrame>(&text) {
                Ok(ClientFrame::Send { client_id, .. }) => {
                    recorder.delivered(role, &client_id, now)
                }
                _ => recorder.error("undecodable_frame"),
            },
            TargetKind::Socketio => match wire::sio_parse(&text) {
                SioPacket::Ping if ctrl.try_send(Ctrl::Frame("3".into())).is_err() => {
                    recorder.error("control_queue_full")
                }
                SioPacket::Event(name, data) if name == "message" => {
                    match data["client_id"].as_str() {
                        Some(client_id) => recorder.delivered(role, client_id, now),
                        None => recorder.error("undecodable_frame"),
                    }
                }
                SioPacket::Ack(_) => recorder.count(|s| s.acks += 1),
                _ => {}
            },
        }
    }
    recorder.error("disconnected");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn client_ids_round_trip() {
        let id = ClientId {
            step: 3,
            conversation: 999_999,
            side: 1,
            k: 12345,
            scheduled_us: 9_999_999_999,
            sent_us: 9_999_999_999,
        };
        let s = id.format();
        assert!(s.len() <= pitboss_protocol::limits::MAX_CLIENT_ID_BYTES);
        let back = ClientId::parse(&s).unwrap();
        assert_eq!(
            (back.step, back.conversation, back.side, back.k),
            (3, 999_999, 1, 12345)
        );
        assert!(ClientId::parse("1.2.3").is_none());
    }

    #[test]
    fn recorder_counts_duplicates_reordering_and_loss() {
        let epoch = Instant::now();
        let r = Recorder::new(epoch);
        r.begin_step(0, 1, epoch);
        let id = |k: u64| format!("0.0.0.{k}.0.0");
        for k in [0, 2, 1, 2] {
            r.delivered(Role::Agent, &id(k), Instant::now());
        }
        let s = r.finish_step();
        assert_eq!(s.distinct, 3);
        assert_eq!(s.duplicated, 1);
        assert_eq!(s.out_of_order, 1);
        assert_eq!(s.directions[0].distinct, 3);
        // A player's own message coming back to the player is not a delivery.
        r.begin_step(0, 1, epoch);
        r.delivered(Role::Player, &id(0), Instant::now());
        assert_eq!(r.finish_step().distinct, 0);
    }
}
