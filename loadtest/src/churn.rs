//! The queue churn scenario: players arrive at rate λ (a Poisson process on an
//! open-loop schedule), agents of capacity k take them, hold each conversation for
//! a service time, and close it. Measures arrival-to-assignment latency and
//! whether the queue is served first come, first served. It owns the players' and
//! agents' connections; the servers are the caller's, and the [`Site`] says which
//! node each player and agent connects to (on a cluster, players on some nodes
//! and agents on another).

use crate::procstat::{CpuMark, ProcStats};
use crate::progress::Progress;
use crate::site::{CpuPart, Site};
use crate::stats::{Latency, LatencySummary};
use crate::target::TargetKind;
use crate::wire::{self, Dialer, SioPacket, Ws};
use anyhow::{bail, Context};
use futures_util::{SinkExt, StreamExt};
use pitboss_protocol::{Auth, ClientFrame, ConversationId, ServerFrame};
use rand::{Rng, SeedableRng};
use serde::Serialize;
use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::Message;

/// Players in flight at once. Far above what a stable queue holds (λ × (wait +
/// service)); past it arrivals are dropped and counted, so a server that never
/// assigns cannot make the generator hold sockets without end.
const MAX_IN_FLIGHT: usize = 5_000;

/// How the churn scenario runs.
#[derive(Debug, Clone, Serialize)]
pub struct ChurnConfig {
    /// Arrival rate λ of each step, players per second.
    pub arrivals: Vec<f64>,
    /// Seconds of arrivals per step.
    pub step_secs: f64,
    /// Agents online.
    pub agents: usize,
    /// Conversations each agent holds at once.
    pub capacity: usize,
    /// Seconds an agent keeps a conversation before closing it.
    pub service_secs: f64,
    /// Seconds a player waits to be assigned before counting as unassigned.
    pub patience_secs: f64,
    /// Seed of the arrival process, so that every target sees the same one.
    pub seed: u64,
    /// Two assignments observed this close together (on different agent sockets)
    /// are not judged for order.
    pub fifo_tolerance_ms: f64,
}

/// The outcome for one server.
#[derive(Debug, Clone, Serialize)]
pub struct ChurnResult {
    /// Which server.
    pub target: TargetKind,
    /// Server processes serving clients (1, or a cluster's nodes).
    pub nodes: usize,
    /// Agents online.
    pub agents: usize,
    /// Capacity of each.
    pub capacity: usize,
    /// One entry per arrival rate.
    pub steps: Vec<ChurnStep>,
}

/// The outcome of one arrival rate.
#[derive(Debug, Clone, Serialize)]
pub struct ChurnStep {
    /// λ, players per second.
    pub arrival_rate: f64,
    /// Seconds of arrivals.
    pub secs: f64,
    /// Players who arrived.
    pub arrivals: u64,
    /// Players assigned to an agent.
    pub assigned: u64,
    /// Players not assigned within their patience.
    pub unassigned: u64,
    /// Players whose conversation was not closed by the agent in time.
    pub not_closed: u64,
    /// Failures by kind (connect, error frames, dropped arrivals).
    pub errors: BTreeMap<String, u64>,
    /// From the player's `start` to `assigned` at the player (for Pitboss this
    /// includes the agent's accept round trip).
    pub assign_latency: LatencySummary,
    /// Like `assign_latency`, for the players who arrived while an agent had a
    /// free slot and nobody was waiting ahead of them: the routing cost itself,
    /// without queueing for a busy agent.
    pub free_agent_assign_latency: LatencySummary,
    /// From the player's `start` to the agent learning of the player (Pitboss:
    /// the `offer`; the references assign without offering).
    pub decide_latency: LatencySummary,
    /// From the scheduled arrival to the player's `start` (connect and hello).
    pub connect_latency: LatencySummary,
    /// The longest queue a player was told about (position).
    pub max_queue_position: u32,
    /// Players assigned before someone who was already queued when they arrived.
    pub fifo_violations: u64,
    /// Server CPU use during the step, in cores (on a cluster, of the nodes,
    /// Redis and PostgreSQL together).
    pub server_cpu_cores: f64,
    /// On a cluster, the same part by part: the nodes, Redis, PostgreSQL.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub server_cpu_parts: Vec<CpuPart>,
    /// Generator CPU use during the step, in cores.
    pub generator_cpu_cores: f64,
}

impl ChurnStep {
    /// Whether this step lost a player or served one out of order.
    pub fn faulty(&self) -> bool {
        self.unassigned > 0
            || self.not_closed > 0
            || self.fifo_violations > 0
            || !self.errors.is_empty()
    }
}

/// What the agents observed: when each conversation was first decided (offered
/// or assigned to them). A std mutex: one map insert per assignment.
#[derive(Default)]
struct Decisions {
    at: Mutex<HashMap<String, Instant>>,
    errors: Mutex<BTreeMap<String, u64>>,
}

impl Decisions {
    fn decided(&self, conversation: String, at: Instant) {
        self.at
            .lock()
            .expect("decisions poisoned")
            .entry(conversation)
            .or_insert(at);
    }

    fn error(&self, what: &str) {
        *self
            .errors
            .lock()
            .expect("decisions poisoned")
            .entry(what.to_string())
            .or_default() += 1;
    }
}

/// One player's story.
#[derive(Debug, Default)]
struct Player {
    scheduled: Option<Instant>,
    start_sent: Option<Instant>,
    queued_at: Option<Instant>,
    assigned_at: Option<Instant>,
    conversation: Option<String>,
    max_position: u32,
    closed: bool,
    /// When the player heard `closed`: the server has freed the agent's slot.
    closed_at: Option<Instant>,
    error: Option<String>,
}

/// Runs the churn scenario against started servers.
pub async fn run(
    site: &Site<'_>,
    cfg: &ChurnConfig,
    progress: &mut Progress,
) -> anyhow::Result<ChurnResult> {
    let decisions = Arc::new(Decisions::default());
    let service = Duration::from_secs_f64(cfg.service_secs);
    let mut agents = Vec::new();
    let kind = site.kind;
    let name = match site.node_count() {
        1 => kind.name().to_string(),
        n => format!("{} ×{n}", kind.name()),
    };
    let logins = if kind == TargetKind::Pitboss {
        tokio::task::block_in_place(|| site.add_agents("churn-agent-", cfg.agents, cfg.capacity))?
    } else {
        Vec::new()
    };
    for a in 0..cfg.agents {
        let dialer = site.agent_dialer(a);
        let ws = match kind {
            TargetKind::Pitboss => {
                let login = logins.get(a).context("agent login")?;
                let token = site.agent_node(a).login(login).await?;
                let mut ws = dialer.connect("/ws").await?;
                wire::pitboss_hello(&mut ws, Auth::Agent { token }).await?;
                ws
            }
            TargetKind::Bare => {
                let mut ws = dialer.connect("/churn").await?;
                let hello = serde_json::json!({"type": "agent", "capacity": cfg.capacity});
                wire::send_text(&mut ws, hello.to_string()).await?;
                ws
            }
            TargetKind::Socketio => {
                let mut ws = dialer.connect(wire::SOCKETIO_PATH).await?;
                wire::sio_open(&mut ws).await?;
                wire::send_text(
                    &mut ws,
                    wire::sio_event(None, "agent", &[cfg.capacity.into()]),
                )
                .await?;
                ws
            }
        };
        agents.push(tokio::spawn(agent(
            ws,
            kind,
            cfg.capacity,
            service,
            decisions.clone(),
        )));
    }
    // Let the agents' `online` settle before the first arrival.
    tokio::time::sleep(Duration::from_millis(200)).await;

    let me = ProcStats::current();
    let mut result = ChurnResult {
        target: kind,
        nodes: site.node_count(),
        agents: cfg.agents,
        capacity: cfg.capacity,
        steps: Vec::new(),
    };
    for (step, &rate) in cfg.arrivals.iter().enumerate() {
        decisions.at.lock().expect("decisions poisoned").clear();
        decisions.errors.lock().expect("decisions poisoned").clear();
        // The same seed for every target: each sees the same arrival times.
        let mut rng = rand::rngs::StdRng::seed_from_u64(cfg.seed.wrapping_add(step as u64));
        let start = Instant::now() + Duration::from_millis(50);
        let end = start + Duration::from_secs_f64(cfg.step_secs);
        let server_cpu0 = site.mark();
        let me_cpu0 = CpuMark::now(&me);
        let mut tasks = Vec::new();
        let mut dropped = 0u64;
        let flying = Arc::new(AtomicUsize::new(0));
        let mut t = start;
        loop {
            // Exponential inter-arrival times: a Poisson process of rate λ.
            let u: f64 = rng.gen_range(f64::MIN_POSITIVE..1.0);
            t += Duration::from_secs_f64(-u.ln() / rate);
            if t >= end {
                break;
            }
            crate::clock::sleep_until(t).await;
            let in_flight = flying.load(Ordering::Relaxed);
            if in_flight >= MAX_IN_FLIGHT {
                dropped += 1;
                continue;
            }
            // Players connect where the site puts them, in turn.
            let dialer = site.player_dialer(tasks.len() + dropped as usize).clone();
            let patience = Duration::from_secs_f64(cfg.patience_secs);
            let flying = flying.clone();
            flying.fetch_add(1, Ordering::Relaxed);
            tasks.push(tokio::spawn(async move {
                let mut p = Player {
                    scheduled: Some(t),
                    ..Player::default()
                };
                if let Err(err) = player(&dialer, kind, patience, service, &mut p).await {
                    p.error = Some(format!("{err:#}"));
                }
                flying.fetch_sub(1, Ordering::Relaxed);
                p
            }));
            progress.show(&format!(
                "[churn {name}] step {}/{} λ={rate}/s: {} arrived, {} in flight",
                step + 1,
                cfg.arrivals.len(),
                tasks.len(),
                in_flight
            ));
        }
        let mut players = Vec::new();
        for h in tasks {
            match h.await {
                Ok(p) => players.push(p),
                Err(_) => decisions.error("player_task_failed"),
            }
        }
        progress.done();
        let server_cpu = site.cpu_since(&server_cpu0);
        let (me_cpu, _) = CpuMark::now(&me).since(&me_cpu0);
        let decided = decisions.at.lock().expect("decisions poisoned").clone();
        let mut errors = decisions.errors.lock().expect("decisions poisoned").clone();
        if dropped > 0 {
            errors.insert("arrivals_dropped".into(), dropped);
        }
        let free = free_on_arrival(&players, &decided, cfg.agents * cfg.capacity);
        let mut free_assign = Latency::default();
        let mut assign = Latency::default();
        let mut decide = Latency::default();
        let mut connect = Latency::default();
        let (mut assigned, mut unassigned, mut not_closed, mut max_pos) = (0, 0, 0, 0);
        for (p, &free) in players.iter().zip(&free) {
            max_pos = max_pos.max(p.max_position);
            if let (Some(s), Some(st)) = (p.scheduled, p.start_sent) {
                connect.record(st.saturating_duration_since(s).as_micros() as u64);
            }
            match (p.start_sent, p.assigned_at) {
                (Some(st), Some(at)) => {
                    assigned += 1;
                    let us = at.saturating_duration_since(st).as_micros() as u64;
                    assign.record(us);
                    if free {
                        free_assign.record(us);
                    }
                    if let Some(d) = p.conversation.as_ref().and_then(|c| decided.get(c)) {
                        decide.record(d.saturating_duration_since(st).as_micros() as u64);
                    }
                    if !p.closed {
                        not_closed += 1;
                    }
                }
                _ => unassigned += 1,
            }
            if let Some(e) = &p.error {
                let kind = e.split(':').next().unwrap_or("error").to_string();
                *errors.entry(kind).or_default() += 1;
            }
        }
        let tolerance = Duration::from_secs_f64(cfg.fifo_tolerance_ms / 1000.0);
        let s = ChurnStep {
            arrival_rate: rate,
            secs: cfg.step_secs,
            arrivals: players.len() as u64,
            assigned,
            unassigned,
            not_closed,
            errors,
            assign_latency: assign.summary(),
            free_agent_assign_latency: free_assign.summary(),
            decide_latency: decide.summary(),
            connect_latency: connect.summary(),
            max_queue_position: max_pos,
            fifo_violations: fifo_violations(&players, &decided, tolerance),
            server_cpu_cores: server_cpu.total.as_secs_f64() / cfg.step_secs,
            // Over the step, as `server_cpu_cores`, not the wall time the
            // players took to finish.
            server_cpu_parts: server_cpu.breakdown_over(cfg.step_secs),
            generator_cpu_cores: me_cpu.as_secs_f64() / cfg.step_secs,
        };
        tracing::info!(
            target_kind = %name,
            rate,
            assigned = s.assigned,
            p99_us = s.assign_latency.p99_us,
            "churn step done"
        );
        result.steps.push(s);
    }
    for a in agents {
        a.abort();
    }
    Ok(result)
}

/// For each player, whether it arrived (sent `start`) while an agent slot was
/// free and no earlier player was still waiting. A slot is busy from the
/// assignment (as the agent saw it) until the player heard `closed`, by which
/// time the server has released it.
fn free_on_arrival(
    players: &[Player],
    decided: &HashMap<String, Instant>,
    slots: usize,
) -> Vec<bool> {
    let decided_at = |p: &Player| -> Option<Instant> {
        p.conversation
            .as_ref()
            .and_then(|c| decided.get(c).copied())
            .or(p.assigned_at)
    };
    let mut begins: Vec<Instant> = players.iter().filter_map(decided_at).collect();
    begins.sort();
    let mut ends: Vec<Instant> = players
        .iter()
        .filter(|p| decided_at(p).is_some())
        .filter_map(|p| p.closed_at)
        .collect();
    ends.sort();
    let busy_at = |t: Instant| {
        begins.partition_point(|&b| b <= t)
            - ends
                .partition_point(|&e| e <= t)
                .min(begins.partition_point(|&b| b <= t))
    };
    let mut order: Vec<usize> = (0..players.len())
        .filter(|&i| players[i].start_sent.is_some())
        .collect();
    order.sort_by_key(|&i| players[i].start_sent);
    let mut free = vec![false; players.len()];
    // The latest assignment among earlier arrivals; `None` inside: one of them
    // was never assigned, so everyone after waited behind it.
    let mut latest: Option<Option<Instant>> = None;
    for i in order {
        let p = &players[i];
        let start = p.start_sent.expect("filtered");
        let nobody_ahead = match latest {
            None => true,
            Some(None) => false,
            Some(Some(l)) => l <= start,
        };
        free[i] = nobody_ahead && busy_at(start) < slots;
        let d = decided_at(p);
        latest = Some(match (latest, d) {
            (None, d) => d,
            (Some(None), _) | (_, None) => None,
            (Some(Some(a)), Some(b)) => Some(a.max(b)),
        });
    }
    free
}

/// Counts players X assigned before some player Y who was already queued (Y's
/// `queued` had arrived) when X sent `start`: a first-come-first-served breach.
/// Assignments are compared as the agents observed them (`decided`), falling back
/// to when the player heard.
fn fifo_violations(
    players: &[Player],
    decided: &HashMap<String, Instant>,
    tolerance: Duration,
) -> u64 {
    let decided_at = |p: &Player| -> Option<Instant> {
        p.conversation
            .as_ref()
            .and_then(|c| decided.get(c).copied())
            .or(p.assigned_at)
    };
    let mut by_queued: Vec<(Instant, Option<Instant>)> = players
        .iter()
        .filter_map(|p| p.queued_at.map(|q| (q, decided_at(p))))
        .collect();
    by_queued.sort_by_key(|&(q, _)| q);
    let mut by_start: Vec<(Instant, Instant)> = players
        .iter()
        .filter_map(|p| Some((p.start_sent?, decided_at(p)?)))
        .collect();
    by_start.sort_by_key(|&(s, _)| s);
    let mut next = 0;
    // The latest decision among players queued so far; `None` inside means one
    // of them was never assigned at all, which beats any later assignment.
    let mut latest: Option<Option<Instant>> = None;
    let mut violations = 0;
    for (start, decided) in by_start {
        while next < by_queued.len() && by_queued[next].0 < start {
            let d = by_queued[next].1;
            latest = Some(match (latest, d) {
                (None, d) => d,
                (Some(None), _) | (_, None) => None,
                (Some(Some(a)), Some(b)) => Some(a.max(b)),
            });
            next += 1;
        }
        match latest {
            Some(None) => violations += 1,
            Some(Some(l)) if l > decided + tolerance => violations += 1,
            _ => {}
        }
    }
    violations
}

/// One agent: takes what it is offered or given, keeps each conversation for the
/// service time, then closes it.
async fn agent(
    mut ws: Ws,
    kind: TargetKind,
    capacity: usize,
    service: Duration,
    decisions: Arc<Decisions>,
) {
    // Close orders from the service timers; never more outstanding than the
    // agent's capacity, so the queue cannot fill.
    let (close_tx, mut close_rx) = mpsc::channel::<String>(capacity + 16);
    let start_timer = |conversation: String| {
        let tx = close_tx.clone();
        tokio::spawn(async move {
            tokio::time::sleep(service).await;
            // The agent is gone when this fails; the run is ending.
            let _ignored = tx.send(conversation).await;
        });
    };
    loop {
        let reply = tokio::select! {
            msg = ws.next() => {
                let now = Instant::now();
                let text = match msg {
                    Some(Ok(Message::Text(t))) => t,
                    Some(Ok(_)) => continue,
                    _ => {
                        decisions.error("agent_disconnected");
                        return;
                    }
                };
                match kind {
                    TargetKind::Pitboss => match serde_json::from_str::<ServerFrame>(&text) {
                        Ok(ServerFrame::Offer(o)) => {
                            decisions.decided(o.conversation.to_string(), now);
                            Some(wire::encode(&ClientFrame::Accept { conversation: o.conversation }))
                        }
                        Ok(ServerFrame::Assigned { conversation, .. }) => {
                            start_timer(conversation.to_string());
                            None
                        }
                        Ok(ServerFrame::Error { code, .. }) => {
                            decisions.error(code.as_str());
                            None
                        }
                        _ => None,
                    },
                    TargetKind::Bare => {
                        let v: serde_json::Value = serde_json::from_str(&text).unwrap_or_default();
                        if v["type"] == "assigned" {
                            if let Some(c) = v["conversation"].as_str() {
                                decisions.decided(c.to_string(), now);
                                start_timer(c.to_string());
                            }
                        }
                        None
                    }
                    TargetKind::Socketio => match wire::sio_parse(&text) {
                        SioPacket::Ping => Some("3".to_string()),
                        SioPacket::Event(name, data) if name == "assigned" => {
                            if let Some(c) = data["conversation"].as_str() {
                                decisions.decided(c.to_string(), now);
                                start_timer(c.to_string());
                            }
                            None
                        }
                        _ => None,
                    },
                }
            }
            Some(conversation) = close_rx.recv() => Some(match kind {
                TargetKind::Pitboss => match conversation.parse::<ConversationId>() {
                    Ok(id) => wire::encode(&ClientFrame::Close { conversation: id, reason: Some("resolved".into()) }),
                    Err(_) => continue,
                },
                TargetKind::Bare => serde_json::json!({"type": "close", "conversation": conversation}).to_string(),
                TargetKind::Socketio => wire::sio_event(None, "close", &[conversation.into()]),
            }),
        };
        if let Some(text) = reply {
            if ws.send(Message::Text(text.into())).await.is_err() {
                decisions.error("agent_write_failed");
                return;
            }
        }
    }
}

/// One player: connects, asks for an agent, waits to be assigned and for the
/// agent to close the conversation, then leaves.
async fn player(
    dialer: &Dialer,
    kind: TargetKind,
    patience: Duration,
    service: Duration,
    p: &mut Player,
) -> anyhow::Result<()> {
    let mut ws = match kind {
        TargetKind::Pitboss => {
            let mut ws = dialer.connect("/ws").await.context("connect")?;
            wire::pitboss_hello(&mut ws, wire::visitor())
                .await
                .context("hello")?;
            ws
        }
        TargetKind::Bare => dialer.connect("/churn").await.context("connect")?,
        TargetKind::Socketio => {
            let mut ws = dialer
                .connect(wire::SOCKETIO_PATH)
                .await
                .context("connect")?;
            wire::sio_open(&mut ws).await.context("hello")?;
            ws
        }
    };
    let start = match kind {
        TargetKind::Pitboss => wire::encode(&ClientFrame::Start {
            department: None,
            language: None,
        }),
        TargetKind::Bare => r#"{"type":"start"}"#.to_string(),
        TargetKind::Socketio => wire::sio_event(None, "start", &[]),
    };
    p.start_sent = Some(Instant::now());
    wire::send_text(&mut ws, start).await.context("start")?;
    let assign_deadline = Instant::now() + patience;
    let mut close_deadline = None;
    loop {
        let deadline = close_deadline.unwrap_or(assign_deadline);
        let msg = match tokio::time::timeout_at(deadline.into(), ws.next()).await {
            Ok(m) => m,
            Err(_) if close_deadline.is_none() => bail!("unassigned: no assignment in time"),
            Err(_) => bail!("not_closed: the agent did not close in time"),
        };
        let now = Instant::now();
        let text = match msg {
            Some(Ok(Message::Text(t))) => t,
            Some(Ok(_)) => continue,
            _ => bail!("player_disconnected: closed by the server"),
        };
        // (event, conversation, queue position) in the target's own terms.
        let (event, conversation, position): (&str, Option<String>, Option<u32>) = match kind {
            TargetKind::Pitboss => match serde_json::from_str::<ServerFrame>(&text) {
                Ok(ServerFrame::Queued {
                    conversation,
                    position,
                    ..
                }) => ("queued", Some(conversation.to_string()), Some(position)),
                Ok(ServerFrame::Assigned { conversation, .. }) => {
                    ("assigned", Some(conversation.to_string()), None)
                }
                Ok(ServerFrame::Closed { conversation, .. }) => {
                    ("closed", Some(conversation.to_string()), None)
                }
                Ok(ServerFrame::NoAgents { .. }) => bail!("no_agents: no agent online"),
                Ok(ServerFrame::Error { code, .. }) => bail!("{}: error frame", code.as_str()),
                _ => ("", None, None),
            },
            TargetKind::Bare => {
                let v: serde_json::Value = serde_json::from_str(&text).unwrap_or_default();
                let event = match v["type"].as_str() {
                    Some("queued") => "queued",
                    Some("assigned") => "assigned",
                    Some("closed") => "closed",
                    _ => "",
                };
                (
                    event,
                    v["conversation"].as_str().map(str::to_string),
                    v["position"].as_u64().map(|n| n as u32),
                )
            }
            TargetKind::Socketio => match wire::sio_parse(&text) {
                SioPacket::Ping => {
                    wire::send_text(&mut ws, "3".into()).await?;
                    ("", None, None)
                }
                SioPacket::Event(name, data) => {
                    let event = match name.as_str() {
                        "queued" => "queued",
                        "assigned" => "assigned",
                        "closed" => "closed",
                        _ => "",
                    };
                    (
                        event,
                        data["conversation"].as_str().map(str::to_string),
                        data["position"].as_u64().map(|n| n as u32),
                    )
                }
                _ => ("", None, None),
            },
        };
        match event {
            "queued" => {
                p.queued_at.get_or_insert(now);
                p.max_position = p.max_position.max(position.unwrap_or(0));
                if p.conversation.is_none() {
                    p.conversation = conversation;
                }
            }
            "assigned" if p.assigned_at.is_none() => {
                p.assigned_at = Some(now);
                p.queued_at.get_or_insert(now);
                if p.conversation.is_none() {
                    p.conversation = conversation;
                }
                close_deadline = Some(now + service + patience);
            }
            "closed" => {
                p.closed = true;
                p.closed_at = Some(now);
                break;
            }
            _ => {}
        }
    }
    // A polite close; the server may already have gone on.
    let _ignored = ws.close(None).await;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn player(start_ms: u64, queued_ms: u64, decided_ms: Option<u64>, base: Instant) -> Player {
        let at = |ms| base + Duration::from_millis(ms);
        Player {
            start_sent: Some(at(start_ms)),
            queued_at: Some(at(queued_ms)),
            assigned_at: decided_ms.map(at),
            ..Player::default()
        }
    }

    #[test]
    fn fifo_breaches_are_counted_and_order_kept_is_not() {
        let base = Instant::now();
        let tol = Duration::from_millis(1);
        let none = HashMap::new();
        // In order: A queued first, assigned first.
        let fair = [player(0, 1, Some(10), base), player(5, 6, Some(20), base)];
        assert_eq!(fifo_violations(&fair, &none, tol), 0);
        // B arrived after A was queued but was assigned first.
        let unfair = [player(0, 1, Some(30), base), player(5, 6, Some(20), base)];
        assert_eq!(fifo_violations(&unfair, &none, tol), 1);
        // A never assigned while B was: a breach too.
        let starved = [player(0, 1, None, base), player(5, 6, Some(20), base)];
        assert_eq!(fifo_violations(&starved, &none, tol), 1);
        // Overlapping arrivals are not judged.
        let concurrent = [player(0, 6, Some(30), base), player(5, 7, Some(20), base)];
        assert_eq!(fifo_violations(&concurrent, &none, tol), 0);
    }
}
