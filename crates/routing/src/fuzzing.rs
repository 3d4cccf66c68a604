//! The `router_ops` fuzz target, written once: the `cargo fuzz` binary in
//! `crates/routing/fuzz` and the stable tests (`tests/fuzz_corpus.rs`) both call
//! [`router_ops`] here. Not part of the crate's API.
//!
//! The input bytes become (through [`arbitrary`]) a [`Scenario`]: a routing
//! configuration, a start time, the agents present at the start (so that most
//! inputs reach offers at once), and up to [`MAX_OPS`] operations over a small id
//! space (four agents, eight conversations, three departments and languages) —
//! agents added, changed and removed, status changes, arrivals, requeues,
//! restores, accepts and declines (of whatever pair the bytes name, of an offer
//! actually open, or of an offer an earlier router made), closes, transfers to
//! agents and departments, take-overs,
//! time passing with and without `tick`, handle times recorded.
//!
//! After every operation the router is checked against
//! [`Router::check_invariants`] and against a shadow model built only from the
//! decisions it returned and the documented effects of each call:
//!
//! * a refused operation is refused for the documented reason and changes nothing;
//! * every decision is consistent with the shadow: an offer only for a
//!   conversation without one, expiring `offer_timeout_ms` later, naming the
//!   owner for a transfer; a withdrawal only of an open offer (or, declined by
//!   `decline_earlier_offer`, of an earlier router's), `Declined` only by a
//!   decline, `Expired` only by `tick` and only once due; `Assigned` naming the
//!   former owner; `TransferFailed` to the owner; `AgentAway` only from `tick`;
//!   `QueueChanged` at most once, last, and exactly when a position, estimate or
//!   offer in the queue changed; no decision names an unknown conversation or
//!   agent (but the agent declining an earlier router's offer);
//! * every conversation's view (queued or owned, its offer, owner, since and
//!   transfer) and every agent's status, load and owned list match the shadow;
//! * capacity: an agent who was offered something in an operation ends it within
//!   capacity, and only take-overs, restores and lowered capacities put an agent
//!   above it (until their load comes back down);
//! * the line: `queue()` is in policy order (head lane first in the order put
//!   there, then `arrival − tier × aging`, then arrival), and when a
//!   conversation got an offer, nobody ahead of it in the line still waits
//!   without one while that agent could have taken it;
//! * `queue_head`, `queue_lengths` and each agent's `queue_for` agree with
//!   `queue()`;
//! * `positions()`, `position()` and their wait estimates follow the documented
//!   formula, `can_serve` and `next_deadline` agree with the shadow, and after
//!   `tick(now)` nothing is due at or before `now`.

use crate::{
    AgentProfile, ConversationView, Decision, Millis, Position, Request, Router, RoutingConfig,
    RoutingError, TransferFailure, WithdrawReason,
};
use arbitrary::{Arbitrary, Unstructured};
use pitboss_protocol::{AgentId, AgentStatus, ConversationId, TransferTarget};
use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::fmt::Write as _;

/// Agents the operations name.
pub const AGENTS: [&str; 4] = ["a0", "a1", "a2", "a3"];
/// Conversations the operations name: ids 1 to this.
pub const CONVERSATIONS: u8 = 8;
/// Departments: agents serve any subset; the last is served by nobody unless a
/// profile names it.
pub const DEPARTMENTS: [&str; 3] = ["support", "payments", "vip"];
/// Languages, likewise.
pub const LANGUAGES: [&str; 3] = ["en", "de", "fr"];
/// Most operations one input runs.
pub const MAX_OPS: usize = 256;

const OFFER_TIMEOUTS: [u64; 3] = [1, 1_000, 20_000];
const AGINGS: [u64; 4] = [0, 1, 60_000, 1 << 40];
const COOLDOWNS: [u64; 4] = [0, 5_000, 30_000, 100_000];
const TRANSFER_TIMEOUTS: [u64; 3] = [1, 60_000, 120_000];
const WINDOWS: [usize; 4] = [0, 1, 3, 50];
const STARTS: [Millis; 3] = [0, 1_000_000, 1 << 48];
const TIERS: [u8; 8] = [0, 1, 2, 3, 4, 5, 100, 255];
const CAPACITIES: [u32; 4] = [0, 1, 2, 3];

/// What a queued player asks for, as indexes into the tables above.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Req {
    /// Index into [`DEPARTMENTS`].
    pub department: u8,
    /// Index into [`LANGUAGES`].
    pub language: u8,
    /// Index into the tier table (0–5, 100, 255).
    pub tier: u8,
}

/// How far the clock moves, as a choice among interesting distances.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    /// Not at all.
    Zero,
    /// One millisecond.
    One,
    /// Just short of the offer timeout.
    BeforeOfferTimeout,
    /// Exactly the offer timeout.
    OfferTimeout,
    /// The decline cooldown.
    Cooldown,
    /// The department transfer timeout.
    TransferTimeout,
    /// Any distance up to 65,535 ms.
    Millis(u16),
    /// Ten offer timeouts.
    Long,
}

/// One call on the router. Agent and conversation fields are indexes into
/// [`AGENTS`] and `1..=CONVERSATIONS`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    /// `upsert_agent`: languages and departments as bit masks.
    Upsert {
        /// The agent.
        agent: u8,
        /// Bit i set: speaks `LANGUAGES[i]`.
        languages: u8,
        /// Bit i set: serves `DEPARTMENTS[i]`.
        departments: u8,
        /// Index into the capacity table (0–3).
        capacity: u8,
    },
    /// `remove_agent`.
    Remove {
        /// The agent.
        agent: u8,
    },
    /// `set_status`.
    SetStatus {
        /// The agent.
        agent: u8,
        /// The status.
        status: AgentStatus,
    },
    /// `enqueue`.
    Enqueue {
        /// The conversation.
        conversation: u8,
        /// What it asks for.
        request: Req,
    },
    /// `requeue_at_head`.
    Requeue {
        /// The conversation.
        conversation: u8,
        /// What it asks for now.
        request: Req,
    },
    /// `restore_queued`: a conversation that waited before this router existed.
    RestoreQueued {
        /// The conversation.
        conversation: u8,
        /// What it asks for.
        request: Req,
        /// Put back at the head of the queue before.
        head: bool,
        /// How long it has waited.
        waited: Step,
        /// An agent whose cooldown for it still runs, and for how long.
        cooldown: Option<(u8, Step)>,
    },
    /// `restore_owned`.
    Restore {
        /// The conversation.
        conversation: u8,
        /// Its owner.
        agent: u8,
        /// What it asks for.
        request: Req,
    },
    /// `accept` of this exact pair.
    Accept {
        /// The conversation.
        conversation: u8,
        /// The agent.
        agent: u8,
    },
    /// `decline` of this exact pair.
    Decline {
        /// The conversation.
        conversation: u8,
        /// The agent.
        agent: u8,
    },
    /// `accept` by whoever holds the n-th open offer (modulo how many are open).
    AcceptOpen {
        /// Which open offer.
        index: u8,
    },
    /// `decline` by whoever holds the n-th open offer.
    DeclineOpen {
        /// Which open offer.
        index: u8,
    },
    /// `accept_earlier_offer` of this pair: an offer an earlier router made.
    AcceptEarlier {
        /// The conversation.
        conversation: u8,
        /// The agent.
        agent: u8,
    },
    /// `decline_earlier_offer` of this pair.
    DeclineEarlier {
        /// The conversation.
        conversation: u8,
        /// The agent.
        agent: u8,
    },
    /// `release`.
    Release {
        /// The conversation.
        conversation: u8,
    },
    /// `transfer` to a named agent, from `from` (or from the owner when None).
    TransferToAgent {
        /// The conversation.
        conversation: u8,
        /// Who asks; None for its owner.
        from: Option<u8>,
        /// The target agent.
        to: u8,
    },
    /// `transfer` to a department.
    TransferToDepartment {
        /// The conversation.
        conversation: u8,
        /// Who asks; None for its owner.
        from: Option<u8>,
        /// Index into [`DEPARTMENTS`].
        department: u8,
    },
    /// `restore_department_transfer`: a department transfer that was pending
    /// before this router existed.
    RestoreDepartmentTransfer {
        /// The conversation.
        conversation: u8,
        /// Its owner then; None for its owner now.
        from: Option<u8>,
        /// Index into [`DEPARTMENTS`].
        department: u8,
        /// What is left of its timeout.
        left: Step,
    },
    /// `take_over`.
    TakeOver {
        /// The conversation.
        conversation: u8,
        /// The supervisor.
        agent: u8,
    },
    /// The clock moves without a `tick` (the caller is late).
    Advance(Step),
    /// The clock moves, then `tick`.
    Tick(Step),
    /// `record_handle_time`.
    RecordHandleTime {
        /// Index into [`DEPARTMENTS`].
        department: u8,
        /// The handle time.
        ms: u16,
    },
}

/// An agent present from the start: language and department masks (never
/// empty), index into the capacity table, and whether they are online.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Starter {
    /// Bit i set: speaks `LANGUAGES[i]`; 1 to 7.
    pub languages: u8,
    /// Bit i set: serves `DEPARTMENTS[i]`; 1 to 7.
    pub departments: u8,
    /// Index into the capacity table (0–3).
    pub capacity: u8,
    /// Set online before the first operation.
    pub online: bool,
}

/// One fuzz input: the configuration, the start time, the agents present at the
/// start (one entry per agent of [`AGENTS`]), the operations.
#[derive(Debug, Clone)]
pub struct Scenario {
    /// The router's configuration.
    pub config: RoutingConfig,
    /// The clock at the first operation.
    pub start: Millis,
    /// Per agent: present from the start, and how.
    pub roster: Vec<Option<Starter>>,
    /// The operations, in order.
    pub ops: Vec<Op>,
}

impl Scenario {
    /// The roster as the operations that set it up, then the operations.
    pub fn all_ops(&self) -> Vec<Op> {
        let mut ops = Vec::new();
        for (i, starter) in self.roster.iter().enumerate() {
            let Some(s) = starter else { continue };
            let agent = i as u8;
            ops.push(Op::Upsert {
                agent,
                languages: s.languages,
                departments: s.departments,
                capacity: s.capacity,
            });
            if s.online {
                ops.push(Op::SetStatus {
                    agent,
                    status: AgentStatus::Online,
                });
            }
        }
        ops.extend(self.ops.iter().copied());
        ops
    }
}

fn pick<T: Copy>(u: &mut Unstructured<'_>, from: &[T]) -> arbitrary::Result<T> {
    let i = u.int_in_range(0..=from.len() - 1)?;
    Ok(from[i])
}

fn index(u: &mut Unstructured<'_>, n: u8) -> arbitrary::Result<u8> {
    u.int_in_range(0..=n - 1)
}

const N_AGENTS: u8 = AGENTS.len() as u8;
const N_DEPARTMENTS: u8 = DEPARTMENTS.len() as u8;
const N_LANGUAGES: u8 = LANGUAGES.len() as u8;

impl<'a> Arbitrary<'a> for Req {
    fn arbitrary(u: &mut Unstructured<'a>) -> arbitrary::Result<Self> {
        Ok(Req {
            department: index(u, N_DEPARTMENTS)?,
            language: index(u, N_LANGUAGES)?,
            tier: index(u, TIERS.len() as u8)?,
        })
    }
}

impl<'a> Arbitrary<'a> for Step {
    fn arbitrary(u: &mut Unstructured<'a>) -> arbitrary::Result<Self> {
        Ok(match u.int_in_range(0..=7u8)? {
            0 => Step::Zero,
            1 => Step::One,
            2 => Step::BeforeOfferTimeout,
            3 => Step::OfferTimeout,
            4 => Step::Cooldown,
            5 => Step::TransferTimeout,
            6 => Step::Millis(u.int_in_range(0..=u16::MAX)?),
            _ => Step::Long,
        })
    }
}

/// Which operation a byte selects: the common ones (arrivals, accepting open
/// offers, transfers, ticks) take more of the 32 values.
const KINDS: [u8; 36] = [
    0, 1, 2, 2, 3, 3, 3, 3, 4, 5, 6, 7, 8, 8, 8, 8, 9, 9, 10, 10, 11, 11, 11, 12, 12, 13, 14, 14,
    15, 15, 15, 16, 17, 18, 19, 20,
];

impl<'a> Arbitrary<'a> for Op {
    fn arbitrary(u: &mut Unstructured<'a>) -> arbitrary::Result<Self> {
        let conversation = |u: &mut Unstructured<'a>| index(u, CONVERSATIONS);
        let agent = |u: &mut Unstructured<'a>| index(u, N_AGENTS);
        let from = |u: &mut Unstructured<'a>| -> arbitrary::Result<Option<u8>> {
            // Mostly the owner: a transfer from someone else is only ever refused.
            Ok(match u.int_in_range(0..=N_AGENTS + 2)? {
                n if n < N_AGENTS => Some(n),
                _ => None,
            })
        };
        Ok(
            match KINDS[usize::from(u.int_in_range(0..=KINDS.len() as u8 - 1)?)] {
                0 => Op::Upsert {
                    agent: agent(u)?,
                    languages: index(u, 8)?,
                    departments: index(u, 8)?,
                    capacity: index(u, CAPACITIES.len() as u8)?,
                },
                1 => Op::Remove { agent: agent(u)? },
                2 => Op::SetStatus {
                    agent: agent(u)?,
                    status: pick(
                        u,
                        &[AgentStatus::Online, AgentStatus::Away, AgentStatus::Offline],
                    )?,
                },
                3 => Op::Enqueue {
                    conversation: conversation(u)?,
                    request: Req::arbitrary(u)?,
                },
                4 => Op::Requeue {
                    conversation: conversation(u)?,
                    request: Req::arbitrary(u)?,
                },
                5 => Op::Restore {
                    conversation: conversation(u)?,
                    agent: agent(u)?,
                    request: Req::arbitrary(u)?,
                },
                6 => Op::Accept {
                    conversation: conversation(u)?,
                    agent: agent(u)?,
                },
                7 => Op::Decline {
                    conversation: conversation(u)?,
                    agent: agent(u)?,
                },
                8 => Op::AcceptOpen {
                    index: index(u, 8)?,
                },
                9 => Op::DeclineOpen {
                    index: index(u, 8)?,
                },
                10 => Op::Release {
                    conversation: conversation(u)?,
                },
                11 => Op::TransferToAgent {
                    conversation: conversation(u)?,
                    from: from(u)?,
                    to: agent(u)?,
                },
                12 => Op::TransferToDepartment {
                    conversation: conversation(u)?,
                    from: from(u)?,
                    department: index(u, N_DEPARTMENTS)?,
                },
                13 => Op::TakeOver {
                    conversation: conversation(u)?,
                    agent: agent(u)?,
                },
                14 => Op::Advance(Step::arbitrary(u)?),
                15 => Op::Tick(Step::arbitrary(u)?),
                16 => Op::RecordHandleTime {
                    department: index(u, N_DEPARTMENTS)?,
                    ms: u.int_in_range(0..=u16::MAX)?,
                },
                17 => Op::AcceptEarlier {
                    conversation: conversation(u)?,
                    agent: agent(u)?,
                },
                18 => Op::DeclineEarlier {
                    conversation: conversation(u)?,
                    agent: agent(u)?,
                },
                19 => Op::RestoreQueued {
                    conversation: conversation(u)?,
                    request: Req::arbitrary(u)?,
                    head: u.int_in_range(0..=1u8)? == 1,
                    waited: Step::arbitrary(u)?,
                    cooldown: match from(u)? {
                        Some(agent) => Some((agent, Step::arbitrary(u)?)),
                        None => None,
                    },
                },
                _ => Op::RestoreDepartmentTransfer {
                    conversation: conversation(u)?,
                    from: from(u)?,
                    department: index(u, N_DEPARTMENTS)?,
                    left: Step::arbitrary(u)?,
                },
            },
        )
    }
}

impl<'a> Arbitrary<'a> for Scenario {
    fn arbitrary(u: &mut Unstructured<'a>) -> arbitrary::Result<Self> {
        let config = RoutingConfig {
            offer_timeout_ms: pick(u, &OFFER_TIMEOUTS)?,
            aging_per_tier_ms: pick(u, &AGINGS)?,
            decline_cooldown_ms: pick(u, &COOLDOWNS)?,
            transfer_timeout_ms: pick(u, &TRANSFER_TIMEOUTS)?,
            handle_time_window: pick(u, &WINDOWS)?,
        };
        let start = pick(u, &STARTS)?;
        let mut roster = Vec::new();
        for _ in AGENTS {
            let presence = u.int_in_range(0..=3u8)?;
            roster.push(if presence == 0 {
                None
            } else {
                Some(Starter {
                    languages: index(u, 7)? + 1,
                    departments: index(u, 7)? + 1,
                    capacity: index(u, CAPACITIES.len() as u8)?,
                    online: presence >= 2,
                })
            });
        }
        let mut ops = Vec::new();
        while !u.is_empty() && ops.len() < MAX_OPS {
            ops.push(Op::arbitrary(u)?);
        }
        Ok(Scenario {
            config,
            start,
            roster,
            ops,
        })
    }
}

impl Scenario {
    /// The bytes that decode to this scenario (for writing seed inputs).
    /// `config` and `start` must be values from the tables above.
    pub fn to_bytes(&self) -> Vec<u8> {
        fn position<T: PartialEq>(from: &[T], value: &T) -> u8 {
            from.iter().position(|v| v == value).unwrap_or(0) as u8
        }
        let c = &self.config;
        let mut out = vec![
            position(&OFFER_TIMEOUTS, &c.offer_timeout_ms),
            position(&AGINGS, &c.aging_per_tier_ms),
            position(&COOLDOWNS, &c.decline_cooldown_ms),
            position(&TRANSFER_TIMEOUTS, &c.transfer_timeout_ms),
            position(&WINDOWS, &c.handle_time_window),
            position(&STARTS, &self.start),
        ];
        for i in 0..AGENTS.len() {
            match self.roster.get(i).copied().flatten() {
                None => out.push(0),
                Some(s) => out.extend([
                    if s.online { 2 } else { 1 },
                    s.languages.saturating_sub(1),
                    s.departments.saturating_sub(1),
                    s.capacity,
                ]),
            }
        }
        let kind = |k: u8| KINDS.iter().position(|x| *x == k).unwrap_or(0) as u8;
        let req = |out: &mut Vec<u8>, r: &Req| out.extend([r.department, r.language, r.tier]);
        let step = |out: &mut Vec<u8>, s: &Step| match s {
            Step::Zero => out.push(0),
            Step::One => out.push(1),
            Step::BeforeOfferTimeout => out.push(2),
            Step::OfferTimeout => out.push(3),
            Step::Cooldown => out.push(4),
            Step::TransferTimeout => out.push(5),
            Step::Millis(ms) => out.extend([6, (ms >> 8) as u8, *ms as u8]),
            Step::Long => out.push(7),
        };
        let from = |f: &Option<u8>| f.unwrap_or(N_AGENTS);
        for op in &self.ops {
            match op {
                Op::Upsert {
                    agent,
                    languages,
                    departments,
                    capacity,
                } => out.extend([kind(0), *agent, *languages, *departments, *capacity]),
                Op::Remove { agent } => out.extend([kind(1), *agent]),
                Op::SetStatus { agent, status } => out.extend([
                    kind(2),
                    *agent,
                    match status {
                        AgentStatus::Online => 0,
                        AgentStatus::Away => 1,
                        AgentStatus::Offline => 2,
                    },
                ]),
                Op::Enqueue {
                    conversation,
                    request,
                } => {
                    out.extend([kind(3), *conversation]);
                    req(&mut out, request);
                }
                Op::Requeue {
                    conversation,
                    request,
                } => {
                    out.extend([kind(4), *conversation]);
                    req(&mut out, request);
                }
                Op::Restore {
                    conversation,
                    agent,
                    request,
                } => {
                    out.extend([kind(5), *conversation, *agent]);
                    req(&mut out, request);
                }
                Op::Accept {
                    conversation,
                    agent,
                } => out.extend([kind(6), *conversation, *agent]),
                Op::Decline {
                    conversation,
                    agent,
                } => out.extend([kind(7), *conversation, *agent]),
                Op::AcceptOpen { index } => out.extend([kind(8), *index]),
                Op::DeclineOpen { index } => out.extend([kind(9), *index]),
                Op::AcceptEarlier {
                    conversation,
                    agent,
                } => out.extend([kind(17), *conversation, *agent]),
                Op::DeclineEarlier {
                    conversation,
                    agent,
                } => out.extend([kind(18), *conversation, *agent]),
                Op::RestoreQueued {
                    conversation,
                    request,
                    head,
                    waited,
                    cooldown,
                } => {
                    out.extend([kind(19), *conversation]);
                    req(&mut out, request);
                    out.push(u8::from(*head));
                    step(&mut out, waited);
                    out.push(from(&cooldown.map(|(agent, _)| agent)));
                    if let Some((_, left)) = cooldown {
                        step(&mut out, left);
                    }
                }
                Op::Release { conversation } => out.extend([kind(10), *conversation]),
                Op::TransferToAgent {
                    conversation,
                    from: f,
                    to,
                } => out.extend([kind(11), *conversation, from(f), *to]),
                Op::TransferToDepartment {
                    conversation,
                    from: f,
                    department,
                } => out.extend([kind(12), *conversation, from(f), *department]),
                Op::TakeOver {
                    conversation,
                    agent,
                } => out.extend([kind(13), *conversation, *agent]),
                Op::RestoreDepartmentTransfer {
                    conversation,
                    from: f,
                    department,
                    left,
                } => {
                    out.extend([kind(20), *conversation, from(f), *department]);
                    step(&mut out, left);
                }
                Op::Advance(s) => {
                    out.push(kind(14));
                    step(&mut out, s);
                }
                Op::Tick(s) => {
                    out.push(kind(15));
                    step(&mut out, s);
                }
                Op::RecordHandleTime { department, ms } => {
                    out.extend([kind(16), *department, (ms >> 8) as u8, *ms as u8]);
                }
            }
        }
        out
    }
}

/// What one run did: how often each operation was carried out or refused, and
/// each decision seen. The stable tests use it to check that the corpus reaches
/// every corner.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Report {
    /// Operations run.
    pub ops: usize,
    /// Operation name → (carried out, refused).
    pub outcomes: BTreeMap<&'static str, (u64, u64)>,
    /// Decision name → how many.
    pub decisions: BTreeMap<&'static str, u64>,
}

impl Report {
    /// Adds another run's counts to this one.
    pub fn merge(&mut self, other: &Report) {
        self.ops += other.ops;
        for (k, (a, b)) in &other.outcomes {
            let e = self.outcomes.entry(k).or_default();
            e.0 += a;
            e.1 += b;
        }
        for (k, n) in &other.decisions {
            *self.decisions.entry(k).or_default() += n;
        }
    }
}

/// Runs the target on one input. `Err` describes the broken invariant and the
/// operations that led there; a panic is a failure too.
pub fn router_ops(data: &[u8]) -> Result<Report, String> {
    let Ok(scenario) = Scenario::arbitrary_take_rest(Unstructured::new(data)) else {
        return Ok(Report::default());
    };
    run(&scenario)
}

/// Runs one scenario, checking after every operation.
pub fn run(scenario: &Scenario) -> Result<Report, String> {
    let mut h = Harness::new(scenario.config.clone(), scenario.start);
    let ops = scenario.all_ops();
    for (i, op) in ops.iter().enumerate() {
        if let Err(broken) = h.apply(op) {
            let mut trace = format!(
                "{broken}\nafter op {i} of {:?} at {}:\n",
                scenario.config, scenario.start
            );
            for (j, op) in ops.iter().enumerate().take(i + 1) {
                let _ = writeln!(trace, "  {j}: {op:?}");
            }
            return Err(trace);
        }
    }
    Ok(h.report)
}

/// A conversation's place in the line, as the shadow knows it: lane (0 head, 1
/// normal), priority, and order of arrival in the line.
type LineKey = (u8, i128, u64);

/// An open offer, as the shadow knows it.
#[derive(Debug, Clone, PartialEq, Eq)]
struct ShadowOffer {
    agent: AgentId,
    expires_at: Millis,
}

struct Harness {
    r: Router,
    config: RoutingConfig,
    now: Millis,
    /// Open offers, from the decisions.
    offers: BTreeMap<ConversationId, ShadowOffer>,
    /// Owners and since when, from the decisions and restores.
    owners: BTreeMap<ConversationId, (AgentId, Millis)>,
    /// Owned conversations restored rather than assigned: their release records
    /// no handle time.
    untimed: BTreeSet<ConversationId>,
    /// The line key of every queued conversation.
    queued: BTreeMap<ConversationId, LineKey>,
    /// The line key, department and deadline of every department-transfer waiter.
    waiters: BTreeMap<ConversationId, (LineKey, String, Millis)>,
    /// (conversation, agent) → until when that agent is not offered it again.
    cooldowns: BTreeMap<(ConversationId, AgentId), Millis>,
    statuses: BTreeMap<AgentId, AgentStatus>,
    handle_times: BTreeMap<String, VecDeque<u64>>,
    /// Agents allowed above capacity: a take-over, restore or lowered capacity
    /// put them there and their load has not come back down since.
    above_capacity: BTreeSet<AgentId>,
    next_key: u64,
    report: Report,
}

fn agent_id(i: u8) -> AgentId {
    AgentId(AGENTS[usize::from(i) % AGENTS.len()].to_owned())
}

fn conversation_id(i: u8) -> ConversationId {
    format!("{:032x}", u128::from(i % CONVERSATIONS) + 1)
        .parse()
        .unwrap_or_default()
}

fn request(r: &Req) -> Request {
    Request {
        department: DEPARTMENTS[usize::from(r.department) % DEPARTMENTS.len()].to_owned(),
        language: LANGUAGES[usize::from(r.language) % LANGUAGES.len()].to_owned(),
        tier: TIERS[usize::from(r.tier) % TIERS.len()],
    }
}

fn masked(mask: u8, from: &[&str]) -> Vec<String> {
    from.iter()
        .enumerate()
        .filter(|(i, _)| mask & (1 << i) != 0)
        .map(|(_, s)| (*s).to_owned())
        .collect()
}

fn op_name(op: &Op) -> &'static str {
    match op {
        Op::Upsert { .. } => "upsert_agent",
        Op::Remove { .. } => "remove_agent",
        Op::SetStatus { .. } => "set_status",
        Op::Enqueue { .. } => "enqueue",
        Op::Requeue { .. } => "requeue_at_head",
        Op::RestoreQueued { .. } => "restore_queued",
        Op::Restore { .. } => "restore_owned",
        Op::Accept { .. } | Op::AcceptOpen { .. } => "accept",
        Op::Decline { .. } | Op::DeclineOpen { .. } => "decline",
        Op::AcceptEarlier { .. } => "accept_earlier_offer",
        Op::DeclineEarlier { .. } => "decline_earlier_offer",
        Op::Release { .. } => "release",
        Op::TransferToAgent { .. } => "transfer_to_agent",
        Op::TransferToDepartment { .. } => "transfer_to_department",
        Op::RestoreDepartmentTransfer { .. } => "restore_department_transfer",
        Op::TakeOver { .. } => "take_over",
        Op::Advance(_) => "advance",
        Op::Tick(_) => "tick",
        Op::RecordHandleTime { .. } => "record_handle_time",
    }
}

fn decision_name(d: &Decision) -> &'static str {
    match d {
        Decision::Offer {
            transfer_from: None,
            ..
        } => "offer",
        Decision::Offer { .. } => "transfer_offer",
        Decision::OfferWithdrawn { reason, .. } => match reason {
            WithdrawReason::Expired => "offer_withdrawn_expired",
            WithdrawReason::Declined => "offer_withdrawn_declined",
            WithdrawReason::Cancelled => "offer_withdrawn_cancelled",
        },
        Decision::Assigned { previous: None, .. } => "assigned",
        Decision::Assigned { .. } => "reassigned",
        Decision::TransferFailed { reason, .. } => match reason {
            TransferFailure::Declined => "transfer_failed_declined",
            TransferFailure::Expired => "transfer_failed_expired",
            TransferFailure::Cancelled => "transfer_failed_cancelled",
        },
        Decision::AgentAway { .. } => "agent_away",
        Decision::QueueChanged => "queue_changed",
    }
}

macro_rules! ensure {
    ($cond:expr, $($msg:tt)+) => {
        if !$cond {
            return Err(format!($($msg)+));
        }
    };
}

/// Everything observable through the router's views.
type Fingerprint = (
    Vec<Option<ConversationView>>,
    Vec<Option<crate::AgentView>>,
    Vec<crate::QueueItem>,
    Vec<(ConversationId, Position)>,
    Option<Millis>,
);

/// What one call returned.
type Outcome = Result<Vec<Decision>, RoutingError>;

/// What a queue listing shows: compared before and after each operation.
type Listing = (Vec<(ConversationId, Position)>, Vec<Option<AgentId>>);

impl Harness {
    fn new(config: RoutingConfig, start: Millis) -> Self {
        Self {
            r: Router::new(config.clone()),
            config,
            now: start,
            offers: BTreeMap::new(),
            owners: BTreeMap::new(),
            untimed: BTreeSet::new(),
            queued: BTreeMap::new(),
            waiters: BTreeMap::new(),
            cooldowns: BTreeMap::new(),
            statuses: BTreeMap::new(),
            handle_times: BTreeMap::new(),
            above_capacity: BTreeSet::new(),
            next_key: 0,
            report: Report::default(),
        }
    }

    fn key(&mut self, lane: u8, priority: i128) -> LineKey {
        self.next_key += 1;
        (lane, priority, self.next_key)
    }

    fn known(&self, c: &ConversationId) -> bool {
        self.queued.contains_key(c) || self.owners.contains_key(c)
    }

    fn all_conversations() -> impl Iterator<Item = ConversationId> {
        (0..CONVERSATIONS).map(conversation_id)
    }

    fn all_agents() -> impl Iterator<Item = AgentId> {
        (0..N_AGENTS).map(agent_id)
    }

    /// Everything observable, to check that a refused operation changed nothing.
    fn fingerprint(&self) -> Fingerprint {
        (
            Self::all_conversations()
                .map(|c| self.r.conversation(c))
                .collect(),
            Self::all_agents().map(|a| self.r.agent(&a)).collect(),
            self.r.queue(),
            self.r.positions(),
            self.r.next_deadline(),
        )
    }

    fn listing(&self) -> Listing {
        (
            self.r.positions(),
            self.r.queue().into_iter().map(|i| i.offered_to).collect(),
        )
    }

    fn step(&self, step: Step) -> Millis {
        match step {
            Step::Zero => 0,
            Step::One => 1,
            Step::BeforeOfferTimeout => self.config.offer_timeout_ms.saturating_sub(1),
            Step::OfferTimeout => self.config.offer_timeout_ms,
            Step::Cooldown => self.config.decline_cooldown_ms,
            Step::TransferTimeout => self.config.transfer_timeout_ms,
            Step::Millis(ms) => u64::from(ms),
            Step::Long => 10 * self.config.offer_timeout_ms,
        }
    }

    /// The open offers, in conversation order (what `AcceptOpen` picks from).
    fn open_offers(&self) -> Vec<(ConversationId, AgentId)> {
        self.offers
            .iter()
            .map(|(c, o)| (*c, o.agent.clone()))
            .collect()
    }

    fn request_of(&self, c: ConversationId) -> Option<Request> {
        match self.r.conversation(c)? {
            ConversationView::Queued { request, .. } | ConversationView::Owned { request, .. } => {
                Some(request)
            }
        }
    }

    /// An owned conversation with an open offer or waiting in a department's
    /// line has a transfer pending.
    fn transfer_pending(&self, c: ConversationId) -> bool {
        self.owners.contains_key(&c)
            && (self.offers.contains_key(&c) || self.waiters.contains_key(&c))
    }

    fn apply(&mut self, op: &Op) -> Result<(), String> {
        let now = self.now;
        let before = self.fingerprint();
        let listing_before = self.listing();
        let known_before: BTreeSet<ConversationId> = Self::all_conversations()
            .filter(|c| self.known(c))
            .collect();
        let agents_before: BTreeSet<AgentId> = self.statuses.keys().cloned().collect();
        // Agents that this operation may put above capacity.
        let mut overriding: Option<AgentId> = None;

        // The documented refusal, if any, worked out before the call.
        let result: Outcome = match *op {
            Op::Upsert {
                agent,
                languages,
                departments,
                capacity,
            } => {
                let a = agent_id(agent);
                let profile = AgentProfile {
                    languages: masked(languages, &LANGUAGES),
                    departments: masked(departments, &DEPARTMENTS),
                    capacity: CAPACITIES[usize::from(capacity) % CAPACITIES.len()],
                };
                if let Some(view) = self.r.agent(&a) {
                    if profile.capacity < view.profile.capacity {
                        overriding = Some(a.clone());
                    }
                }
                let ds = self.r.upsert_agent(a.clone(), profile.clone(), now);
                self.statuses
                    .entry(a.clone())
                    .or_insert(AgentStatus::Offline);
                let view = self.r.agent(&a).ok_or("upserted agent unknown")?;
                ensure!(view.profile == profile, "upsert kept {:?}", view.profile);
                Ok(ds)
            }
            Op::Remove { agent } => {
                let a = agent_id(agent);
                let mut owned: Vec<(Millis, ConversationId)> = self
                    .owners
                    .iter()
                    .filter(|(_, (o, _))| *o == a)
                    .map(|(c, (_, since))| (*since, *c))
                    .collect();
                // Back to the head of the line in the order they were assigned.
                owned.sort();
                let ds = self.r.remove_agent(&a, now);
                if self.statuses.remove(&a).is_none() {
                    ensure!(ds.is_empty(), "removing an unknown agent decided {ds:?}");
                }
                for (_, c) in owned {
                    self.owners.remove(&c);
                    self.untimed.remove(&c);
                    self.waiters.remove(&c);
                    let key = self.key(0, 0);
                    self.queued.insert(c, key);
                }
                self.cooldowns.retain(|(_, agent), _| *agent != a);
                self.above_capacity.remove(&a);
                ensure!(self.r.agent(&a).is_none(), "{a} still known after removal");
                Ok(ds)
            }
            Op::SetStatus { agent, status } => {
                let a = agent_id(agent);
                let expected =
                    (!self.statuses.contains_key(&a)).then_some(RoutingError::UnknownAgent);
                let result = self.r.set_status(&a, status, now);
                self.expect_refusal(&result, expected)?;
                if result.is_ok() {
                    self.statuses.insert(a, status);
                }
                result
            }
            Op::Enqueue {
                conversation,
                request: req,
            } => {
                let c = conversation_id(conversation);
                let rq = request(&req);
                let expected = self.known(&c).then_some(RoutingError::AlreadyKnown);
                let priority = i128::from(now)
                    - i128::from(rq.tier) * i128::from(self.config.aging_per_tier_ms);
                let result = self.r.enqueue(c, rq, now);
                self.expect_refusal(&result, expected)?;
                if let Ok(ds) = &result {
                    let key = self.key(1, priority);
                    self.queued.insert(c, key);
                    ensure!(
                        ds.last() == Some(&Decision::QueueChanged),
                        "an arrival did not end with QueueChanged: {ds:?}"
                    );
                }
                result
            }
            Op::RestoreQueued {
                conversation,
                request: req,
                head,
                waited,
                cooldown,
            } => {
                let c = conversation_id(conversation);
                let rq = request(&req);
                let expected = self.known(&c).then_some(RoutingError::AlreadyKnown);
                let waited = self.step(waited);
                let priority = i128::from(now)
                    - i128::from(waited)
                    - i128::from(rq.tier) * i128::from(self.config.aging_per_tier_ms);
                let cooldowns: Vec<(AgentId, Millis)> = cooldown
                    .map(|(agent, left)| (agent_id(agent), self.step(left)))
                    .into_iter()
                    .collect();
                let result = self.r.restore_queued(c, rq, head, waited, &cooldowns, now);
                self.expect_refusal(&result, expected)?;
                if result.is_ok() {
                    let key = if head {
                        self.key(0, 0)
                    } else {
                        self.key(1, priority)
                    };
                    self.queued.insert(c, key);
                    for (agent, left) in cooldowns {
                        if left > 0 {
                            self.cooldowns.insert((c, agent), now.saturating_add(left));
                        }
                    }
                }
                result
            }
            Op::Requeue {
                conversation,
                request: req,
            } => {
                let c = conversation_id(conversation);
                let result = self.r.requeue_at_head(c, request(&req), now);
                self.expect_refusal(&result, None)?;
                // An owner loses the conversation without an Assigned.
                self.owners.remove(&c);
                self.untimed.remove(&c);
                self.waiters.remove(&c);
                let key = self.key(0, 0);
                self.queued.insert(c, key);
                result
            }
            Op::Restore {
                conversation,
                agent,
                request: req,
            } => {
                let c = conversation_id(conversation);
                let a = agent_id(agent);
                let expected = if self.known(&c) {
                    Some(RoutingError::AlreadyKnown)
                } else if !self.statuses.contains_key(&a) {
                    Some(RoutingError::UnknownAgent)
                } else {
                    None
                };
                let result = self
                    .r
                    .restore_owned(c, &a, request(&req), now)
                    .map(|()| Vec::new());
                self.expect_refusal(&result, expected)?;
                if result.is_ok() {
                    self.owners.insert(c, (a.clone(), now));
                    self.untimed.insert(c);
                    overriding = Some(a);
                }
                result
            }
            Op::Accept {
                conversation,
                agent,
            } => self.accept(conversation_id(conversation), agent_id(agent))?,
            Op::AcceptOpen { index } => {
                let open = self.open_offers();
                if open.is_empty() {
                    return self.finish_noop(op);
                }
                let (c, a) = open[usize::from(index) % open.len()].clone();
                self.accept(c, a)?
            }
            Op::Decline {
                conversation,
                agent,
            } => self.decline(conversation_id(conversation), agent_id(agent))?,
            Op::DeclineOpen { index } => {
                let open = self.open_offers();
                if open.is_empty() {
                    return self.finish_noop(op);
                }
                let (c, a) = open[usize::from(index) % open.len()].clone();
                self.decline(c, a)?
            }
            Op::AcceptEarlier {
                conversation,
                agent,
            } => {
                let (c, a) = (conversation_id(conversation), agent_id(agent));
                let mut expected = self.earlier_offer_refusal(c);
                if expected.is_none() && !self.statuses.contains_key(&a) {
                    expected = Some(RoutingError::UnknownAgent);
                }
                if expected.is_none() && !self.could_take(c, &a) {
                    expected = Some(RoutingError::NotOffered);
                }
                let result = self.r.accept_earlier_offer(c, &a, now);
                self.expect_refusal(&result, expected)?;
                result
            }
            Op::DeclineEarlier {
                conversation,
                agent,
            } => {
                let c = conversation_id(conversation);
                let expected = self.earlier_offer_refusal(c);
                let result = self.r.decline_earlier_offer(c, &agent_id(agent), now);
                self.expect_refusal(&result, expected)?;
                result
            }
            Op::Release { conversation } => {
                let c = conversation_id(conversation);
                let department = self.request_of(c).map(|r| r.department);
                let ds = self.r.release(c, now);
                if !known_before.contains(&c) {
                    ensure!(
                        ds.is_empty(),
                        "releasing an unknown conversation decided {ds:?}"
                    );
                }
                let timed = !self.untimed.remove(&c);
                if let (Some((_, since)), Some(department)) = (self.owners.remove(&c), department) {
                    if timed {
                        self.record(&department, now - since);
                    }
                }
                self.queued.remove(&c);
                self.waiters.remove(&c);
                self.cooldowns.retain(|(conv, _), _| *conv != c);
                ensure!(self.r.conversation(c).is_none(), "{c} known after release");
                Ok(ds)
            }
            Op::TransferToAgent {
                conversation,
                from,
                to,
            } => {
                let c = conversation_id(conversation);
                let target = agent_id(to);
                let from = self.from(c, from);
                let mut expected = self.transfer_refusal(c, &from);
                if expected.is_none() {
                    let owner = &self.owners[&c].0;
                    let language = self.request_of(c).map(|r| r.language).unwrap_or_default();
                    let available = &target != owner
                        && self.r.agent(&target).is_some_and(|v| {
                            v.status == AgentStatus::Online
                                && v.profile.languages.contains(&language)
                                && v.load < v.profile.capacity
                        });
                    if !available {
                        expected = Some(RoutingError::TargetUnavailable);
                    }
                }
                let result = self
                    .r
                    .transfer(c, &from, TransferTarget::Agent(target.clone()), now);
                self.expect_refusal(&result, expected)?;
                if result.is_ok() {
                    // An explicit transfer overrides the target's cooldown.
                    self.cooldowns.remove(&(c, target));
                }
                result
            }
            Op::TransferToDepartment {
                conversation,
                from,
                department,
            } => {
                let c = conversation_id(conversation);
                let from = self.from(c, from);
                let mut expected = self.transfer_refusal(c, &from);
                let d = DEPARTMENTS[usize::from(department) % DEPARTMENTS.len()].to_owned();
                if expected.is_none() {
                    // Someone other than the owner, online in that department,
                    // speaking the conversation's language, with a capacity, full or not.
                    let owner = &self.owners[&c].0;
                    let language = self.request_of(c).map(|r| r.language).unwrap_or_default();
                    let staffed = (0..N_AGENTS).map(agent_id).any(|a| {
                        &a != owner
                            && self.r.agent(&a).is_some_and(|v| {
                                v.status == AgentStatus::Online
                                    && v.profile.capacity > 0
                                    && v.profile.languages.contains(&language)
                                    && v.profile.departments.contains(&d)
                            })
                    });
                    if !staffed {
                        expected = Some(RoutingError::DepartmentUnstaffed);
                    }
                }
                let result = self
                    .r
                    .transfer(c, &from, TransferTarget::Department(d.clone()), now);
                self.expect_refusal(&result, expected)?;
                if result.is_ok() {
                    let key = self.key(0, 0);
                    let deadline = now.saturating_add(self.config.transfer_timeout_ms);
                    self.waiters.insert(c, (key, d, deadline));
                }
                result
            }
            Op::RestoreDepartmentTransfer {
                conversation,
                from,
                department,
                left,
            } => {
                let c = conversation_id(conversation);
                let from = self.from(c, from);
                let expected = self.transfer_refusal(c, &from);
                let d = DEPARTMENTS[usize::from(department) % DEPARTMENTS.len()].to_owned();
                let left = self.step(left);
                let result = self
                    .r
                    .restore_department_transfer(c, &from, d.clone(), left, now);
                self.expect_refusal(&result, expected)?;
                if result.is_ok() {
                    let key = self.key(0, 0);
                    let deadline = now.saturating_add(left.min(self.config.transfer_timeout_ms));
                    self.waiters.insert(c, (key, d, deadline));
                }
                result
            }
            Op::TakeOver {
                conversation,
                agent,
            } => {
                let c = conversation_id(conversation);
                let a = agent_id(agent);
                let expected = if !self.known(&c) {
                    Some(RoutingError::UnknownConversation)
                } else if !self.statuses.contains_key(&a) {
                    Some(RoutingError::UnknownAgent)
                } else {
                    None
                };
                let result = self.r.take_over(c, &a, now);
                self.expect_refusal(&result, expected)?;
                if result.is_ok() {
                    self.waiters.remove(&c);
                    self.queued.remove(&c);
                    overriding = Some(a.clone());
                    let owner = self.owners.get(&c).map(|(o, _)| o.clone());
                    let assigned = result.as_ref().map(|ds| {
                        ds.iter()
                            .any(|d| matches!(d, Decision::Assigned { conversation, .. } if *conversation == c))
                    });
                    ensure!(
                        assigned == Ok(owner.as_ref() != Some(&a)),
                        "take_over by {a} of {c} owned by {owner:?}: {result:?}"
                    );
                }
                result
            }
            Op::Advance(step) => {
                self.now = now.saturating_add(self.step(step));
                Ok(Vec::new())
            }
            Op::Tick(step) => {
                self.now = now.saturating_add(self.step(step));
                // The same tick without the shortcut for a tick with nothing due
                // must decide the same and leave the same listing.
                let mut full = self.r.clone();
                let expected = full.tick_in_full(self.now);
                let ds = self.r.tick(self.now);
                ensure!(
                    ds == expected,
                    "tick({}) decided {ds:?}, in full {expected:?}",
                    self.now
                );
                ensure!(
                    !self.r.listing().differs(&full.listing()),
                    "tick({}) left another listing than in full",
                    self.now
                );
                Ok(ds)
            }
            Op::RecordHandleTime { department, ms } => {
                let d = DEPARTMENTS[usize::from(department) % DEPARTMENTS.len()];
                self.r.record_handle_time(d, u64::from(ms));
                self.record(d, u64::from(ms));
                Ok(Vec::new())
            }
        };

        let outcome = self.report.outcomes.entry(op_name(op)).or_default();
        match &result {
            Ok(_) => outcome.0 += 1,
            Err(_) => outcome.1 += 1,
        }
        self.report.ops += 1;

        match result {
            Err(e) => {
                ensure!(
                    before == self.fingerprint(),
                    "{op:?} refused ({e}) but changed the router"
                );
            }
            Ok(ds) => {
                for d in &ds {
                    *self.report.decisions.entry(decision_name(d)).or_default() += 1;
                }
                self.absorb(op, &ds, &known_before, &agents_before)?;
                self.check_queue_changed(op, &ds, &listing_before)?;
                self.check_capacity(&ds, overriding)?;
                self.check_dispatch_order(&ds)?;
            }
        }
        self.check()?;
        if let Op::Tick(_) = op {
            if let Some(next) = self.r.next_deadline() {
                ensure!(
                    next > self.now,
                    "after tick({}) next_deadline is {next}",
                    self.now
                );
            }
        }
        Ok(())
    }

    /// An operation the bytes asked for but that had nothing to act on.
    fn finish_noop(&mut self, op: &Op) -> Result<(), String> {
        self.report.outcomes.entry(op_name(op)).or_default();
        self.report.ops += 1;
        self.check()
    }

    fn from(&self, c: ConversationId, from: Option<u8>) -> AgentId {
        match from {
            Some(i) => agent_id(i),
            None => self
                .owners
                .get(&c)
                .map(|(o, _)| o.clone())
                .unwrap_or_else(|| agent_id(0)),
        }
    }

    fn transfer_refusal(&self, c: ConversationId, from: &AgentId) -> Option<RoutingError> {
        if !self.known(&c) {
            Some(RoutingError::UnknownConversation)
        } else if self.owners.get(&c).map(|(o, _)| o) != Some(from) {
            Some(RoutingError::NotOwner)
        } else if self.transfer_pending(c) {
            Some(RoutingError::InvalidState)
        } else {
            None
        }
    }

    fn offer_refusal(&self, c: ConversationId, a: &AgentId) -> Option<RoutingError> {
        if !self.known(&c) {
            Some(RoutingError::UnknownConversation)
        } else if self.offers.get(&c).map(|o| &o.agent) != Some(a) {
            Some(RoutingError::NotOffered)
        } else {
            None
        }
    }

    /// Why an earlier router's offer of `c` cannot be answered here: `c` unknown, or
    /// not waiting in the queue without an offer of this router's.
    fn earlier_offer_refusal(&self, c: ConversationId) -> Option<RoutingError> {
        if !self.known(&c) {
            Some(RoutingError::UnknownConversation)
        } else if !self.queued.contains_key(&c) || self.offers.contains_key(&c) {
            Some(RoutingError::NotOffered)
        } else {
            None
        }
    }

    /// Whether the router could offer queued `c` to `a` now, as documented: online,
    /// serving its department and language, a free slot, no cooldown running.
    fn could_take(&self, c: ConversationId, a: &AgentId) -> bool {
        let Some(r) = self.request_of(c) else {
            return false;
        };
        let cooling = self
            .cooldowns
            .get(&(c, a.clone()))
            .is_some_and(|until| *until > self.now);
        self.r.agent(a).is_some_and(|v| {
            v.status == AgentStatus::Online
                && v.profile.languages.contains(&r.language)
                && v.profile.departments.contains(&r.department)
                && v.load < v.profile.capacity
        }) && !cooling
    }

    fn accept(&mut self, c: ConversationId, a: AgentId) -> Result<Outcome, String> {
        let expected = self.offer_refusal(c, &a);
        let result = self.r.accept(c, &a, self.now);
        self.expect_refusal(&result, expected)?;
        if result.is_ok() {
            self.queued.remove(&c);
            self.waiters.remove(&c);
        }
        Ok(result)
    }

    fn decline(&mut self, c: ConversationId, a: AgentId) -> Result<Outcome, String> {
        let expected = self.offer_refusal(c, &a);
        let result = self.r.decline(c, &a, self.now);
        self.expect_refusal(&result, expected)?;
        Ok(result)
    }

    fn expect_refusal<T>(
        &self,
        result: &Result<T, RoutingError>,
        expected: Option<RoutingError>,
    ) -> Result<(), String> {
        match (result, expected) {
            (Ok(_), None) => Ok(()),
            (Err(e), Some(x)) if *e == x => Ok(()),
            (Err(e), x) => Err(format!("refused with {e:?}, expected {x:?}")),
            (Ok(_), Some(x)) => Err(format!("carried out, expected a refusal: {x:?}")),
        }
    }

    fn record(&mut self, department: &str, ms: u64) {
        let window = self.config.handle_time_window;
        if window == 0 {
            return;
        }
        let times = self.handle_times.entry(department.to_owned()).or_default();
        times.push_back(ms);
        while times.len() > window {
            times.pop_front();
        }
    }

    /// Replays the decisions onto the shadow, checking each against it.
    fn absorb(
        &mut self,
        op: &Op,
        ds: &[Decision],
        known_before: &BTreeSet<ConversationId>,
        agents_before: &BTreeSet<AgentId>,
    ) -> Result<(), String> {
        let now = self.now;
        let is_tick = matches!(op, Op::Tick(_));
        let declining = match *op {
            Op::Decline {
                conversation,
                agent,
            } => Some((conversation_id(conversation), agent_id(agent))),
            Op::DeclineEarlier {
                conversation,
                agent,
            } => Some((conversation_id(conversation), agent_id(agent))),
            Op::DeclineOpen { .. } => ds.iter().find_map(|d| match d {
                Decision::OfferWithdrawn {
                    conversation,
                    agent,
                    reason: WithdrawReason::Declined,
                } => Some((*conversation, agent.clone())),
                _ => None,
            }),
            _ => None,
        };
        let accepting = matches!(op, Op::Accept { .. } | Op::AcceptOpen { .. });
        // An earlier router's offer: the shadow never saw it open, and the
        // declining agent may be one this router does not know (yet).
        let earlier = match *op {
            Op::AcceptEarlier {
                conversation,
                agent,
            }
            | Op::DeclineEarlier {
                conversation,
                agent,
            } => Some((conversation_id(conversation), agent_id(agent))),
            _ => None,
        };
        let mut away = BTreeSet::new();
        for (i, d) in ds.iter().enumerate() {
            let (c, a) = match d {
                Decision::Offer {
                    conversation,
                    agent,
                    ..
                }
                | Decision::OfferWithdrawn {
                    conversation,
                    agent,
                    ..
                }
                | Decision::Assigned {
                    conversation,
                    agent,
                    ..
                }
                | Decision::TransferFailed {
                    conversation,
                    owner: agent,
                    ..
                } => (Some(*conversation), Some(agent.clone())),
                Decision::AgentAway { agent } => (None, Some(agent.clone())),
                Decision::QueueChanged => {
                    ensure!(i + 1 == ds.len(), "QueueChanged is not last: {ds:?}");
                    (None, None)
                }
            };
            if let Some(c) = c {
                ensure!(
                    known_before.contains(&c) || self.r.conversation(c).is_some(),
                    "{d:?} names an unknown conversation"
                );
            }
            if let Some(a) = &a {
                let declined_earlier = matches!(op, Op::DeclineEarlier { .. })
                    && matches!(d, Decision::OfferWithdrawn { .. })
                    && earlier.as_ref().map(|(_, e)| e) == Some(a);
                ensure!(
                    agents_before.contains(a) || self.statuses.contains_key(a) || declined_earlier,
                    "{d:?} names an unknown agent"
                );
            }
            match d {
                Decision::Offer {
                    conversation: c,
                    agent: a,
                    expires_at,
                    transfer_from,
                } => {
                    ensure!(
                        !self.offers.contains_key(c),
                        "second open offer of {c}: {d:?}"
                    );
                    ensure!(
                        *expires_at == now.saturating_add(self.config.offer_timeout_ms),
                        "{d:?} at {now}"
                    );
                    let owner = self.owners.get(c).map(|(o, _)| o);
                    ensure!(transfer_from.as_ref() == owner, "{d:?}: owner is {owner:?}");
                    ensure!(owner != Some(a), "{d:?} to its own owner");
                    ensure!(
                        self.statuses.get(a) == Some(&AgentStatus::Online),
                        "{d:?} to an agent who is {:?}",
                        self.statuses.get(a)
                    );
                    if transfer_from.is_none() || self.waiters.contains_key(c) {
                        // Dispatch honours cooldowns; an explicit transfer ends them.
                        let until = self.cooldowns.get(&(*c, a.clone()));
                        ensure!(
                            until.is_none_or(|u| *u <= now),
                            "{d:?} during a cooldown until {until:?}"
                        );
                    }
                    self.cooldowns.remove(&(*c, a.clone()));
                    self.offers.insert(
                        *c,
                        ShadowOffer {
                            agent: a.clone(),
                            expires_at: *expires_at,
                        },
                    );
                }
                Decision::OfferWithdrawn {
                    conversation: c,
                    agent: a,
                    reason,
                } => {
                    let open = self.offers.remove(c);
                    if matches!(op, Op::DeclineEarlier { .. }) {
                        ensure!(
                            open.is_none() && earlier == Some((*c, a.clone())),
                            "{d:?} from {op:?}, with the open offer {open:?}"
                        );
                    } else {
                        ensure!(
                            open.as_ref().map(|o| &o.agent) == Some(a),
                            "{d:?}, but the open offer is {open:?}"
                        );
                    }
                    match reason {
                        WithdrawReason::Declined => {
                            ensure!(declining == Some((*c, a.clone())), "{d:?} from {op:?}")
                        }
                        WithdrawReason::Expired => ensure!(
                            is_tick && open.is_some_and(|o| o.expires_at <= now),
                            "{d:?} from {op:?} at {now}"
                        ),
                        WithdrawReason::Cancelled => {}
                    }
                    if *reason != WithdrawReason::Cancelled {
                        self.cooldowns.insert(
                            (*c, a.clone()),
                            now.saturating_add(self.config.decline_cooldown_ms),
                        );
                    }
                }
                Decision::Assigned {
                    conversation: c,
                    agent: a,
                    previous,
                } => {
                    let owner = self.owners.get(c).map(|(o, _)| o);
                    ensure!(previous.as_ref() == owner, "{d:?}: owner was {owner:?}");
                    if accepting {
                        let open = self.offers.remove(c);
                        ensure!(
                            open.as_ref().map(|o| &o.agent) == Some(a),
                            "{d:?} by accept, but the open offer was {open:?}"
                        );
                    } else if matches!(op, Op::AcceptEarlier { .. }) {
                        ensure!(
                            earlier == Some((*c, a.clone())) && previous.is_none(),
                            "{d:?} from {op:?}"
                        );
                        ensure!(
                            !self.offers.contains_key(c),
                            "{d:?} with an offer still open"
                        );
                    } else {
                        ensure!(matches!(op, Op::TakeOver { .. }), "{d:?} from {op:?}");
                        ensure!(
                            !self.offers.contains_key(c),
                            "{d:?} with an offer still open"
                        );
                    }
                    self.owners.insert(*c, (a.clone(), now));
                    self.untimed.remove(c);
                    self.queued.remove(c);
                    self.waiters.remove(c);
                }
                Decision::TransferFailed {
                    conversation: c,
                    owner,
                    reason,
                } => {
                    let known = self.owners.get(c).map(|(o, _)| o);
                    ensure!(known == Some(owner), "{d:?}, but the owner is {known:?}");
                    if *reason == TransferFailure::Expired {
                        ensure!(is_tick, "{d:?} from {op:?}");
                    }
                    if *reason == TransferFailure::Declined {
                        ensure!(declining.is_some(), "{d:?} from {op:?}");
                    }
                    self.waiters.remove(c);
                }
                Decision::AgentAway { agent } => {
                    ensure!(is_tick, "{d:?} from {op:?}");
                    ensure!(away.insert(agent.clone()), "{d:?} twice");
                    ensure!(
                        self.statuses.insert(agent.clone(), AgentStatus::Away)
                            == Some(AgentStatus::Online),
                        "{d:?} for an agent who was not online"
                    );
                }
                Decision::QueueChanged => {}
            }
        }
        if is_tick {
            let now = self.now;
            self.cooldowns.retain(|_, until| *until > now);
        }
        Ok(())
    }

    fn check_queue_changed(
        &self,
        op: &Op,
        ds: &[Decision],
        before: &Listing,
    ) -> Result<(), String> {
        let told = ds.iter().filter(|d| **d == Decision::QueueChanged).count();
        ensure!(told <= 1, "QueueChanged {told} times: {ds:?}");
        let changed = self.listing() != *before;
        match op {
            Op::Enqueue { .. } | Op::RestoreQueued { .. } => {
                ensure!(told == 1, "an arrival without QueueChanged")
            }
            Op::Advance(_) | Op::RecordHandleTime { .. } | Op::Restore { .. } => {
                ensure!(told == 0, "QueueChanged from {op:?}");
            }
            _ => ensure!(
                (told == 1) == changed,
                "QueueChanged told {told} time(s) while the listing {}changed",
                if changed { "" } else { "has not " }
            ),
        }
        Ok(())
    }

    fn check_capacity(
        &mut self,
        ds: &[Decision],
        overriding: Option<AgentId>,
    ) -> Result<(), String> {
        let offered: BTreeSet<&AgentId> = ds
            .iter()
            .filter_map(|d| match d {
                Decision::Offer { agent, .. } => Some(agent),
                _ => None,
            })
            .collect();
        let mut above = BTreeSet::new();
        for a in Self::all_agents() {
            let Some(view) = self.r.agent(&a) else {
                continue;
            };
            if view.load <= view.profile.capacity {
                continue;
            }
            ensure!(
                !offered.contains(&a),
                "{a} was offered a conversation and is above capacity: {view:?}"
            );
            ensure!(
                self.above_capacity.contains(&a) || overriding.as_ref() == Some(&a),
                "{a} is above capacity without a take-over, restore or lowered capacity: {view:?}"
            );
            above.insert(a);
        }
        self.above_capacity = above;
        Ok(())
    }

    /// When a queued conversation got an offer in this operation, every queued
    /// conversation ahead of it that still has none could not have been given to
    /// that agent (another department or language, or a cooldown).
    fn check_dispatch_order(&self, ds: &[Decision]) -> Result<(), String> {
        let line: Vec<(ConversationId, Request, Option<AgentId>)> = self
            .r
            .queue()
            .into_iter()
            .map(|i| (i.conversation, i.request, i.offered_to))
            .collect();
        for d in ds {
            let Decision::Offer {
                conversation,
                agent,
                transfer_from: None,
                ..
            } = d
            else {
                continue;
            };
            let Some(view) = self.r.agent(agent) else {
                continue;
            };
            for (c, request, offered_to) in &line {
                if c == conversation {
                    break;
                }
                if offered_to.is_some() {
                    continue;
                }
                let serves = view.profile.departments.contains(&request.department)
                    && view.profile.languages.contains(&request.language);
                let cooling = self
                    .cooldowns
                    .get(&(*c, agent.clone()))
                    .is_some_and(|until| *until > self.now);
                ensure!(
                    !serves || cooling,
                    "{conversation} was offered to {agent} while {c}, ahead of it, waits without an offer"
                );
            }
        }
        Ok(())
    }

    /// The router's views against the shadow.
    fn check(&self) -> Result<(), String> {
        self.r
            .check_invariants()
            .map_err(|e| format!("check_invariants: {e}"))?;
        let now = self.now;

        for c in Self::all_conversations() {
            let view = self.r.conversation(c);
            match &view {
                None => ensure!(!self.known(&c), "{c} is unknown to the router"),
                Some(ConversationView::Queued { offer, .. }) => {
                    ensure!(self.queued.contains_key(&c), "{c} is queued: {view:?}");
                    ensure!(!self.owners.contains_key(&c), "{c} is owned and queued");
                    let shadow = self.offers.get(&c).map(|o| (o.agent.clone(), o.expires_at));
                    ensure!(
                        *offer == shadow,
                        "{c}: offer {offer:?}, expected {shadow:?}"
                    );
                }
                Some(ConversationView::Owned {
                    agent,
                    since,
                    transfer,
                    ..
                }) => {
                    ensure!(!self.queued.contains_key(&c), "{c} is owned: {view:?}");
                    let shadow = self.owners.get(&c);
                    ensure!(
                        shadow == Some(&(agent.clone(), *since)),
                        "{c}: owned by {agent} since {since}, expected {shadow:?}"
                    );
                    let offer = transfer.as_ref().and_then(|t| t.offer.clone());
                    let shadow = self.offers.get(&c).map(|o| (o.agent.clone(), o.expires_at));
                    ensure!(
                        offer == shadow,
                        "{c}: transfer offer {offer:?}, expected {shadow:?}"
                    );
                    match transfer.as_ref().map(|t| &t.target) {
                        Some(TransferTarget::Department(d)) => {
                            let deadline = transfer.as_ref().map(|t| t.deadline);
                            let shadow = self.waiters.get(&c).map(|(_, w, at)| (w, *at));
                            ensure!(
                                shadow.map(|(w, at)| (w, Some(at))) == Some((d, deadline)),
                                "{c} waits for {d} until {deadline:?}, expected {shadow:?}"
                            );
                        }
                        _ => ensure!(!self.waiters.contains_key(&c), "{c} is no longer waiting"),
                    }
                }
            }
        }

        let mut online = Vec::new();
        for a in Self::all_agents() {
            let view = self.r.agent(&a);
            let Some(view) = view else {
                ensure!(
                    !self.statuses.contains_key(&a),
                    "{a} is unknown to the router"
                );
                continue;
            };
            ensure!(
                self.statuses.get(&a) == Some(&view.status),
                "{a} is {:?}, expected {:?}",
                view.status,
                self.statuses.get(&a)
            );
            let owned: Vec<ConversationId> = self
                .owners
                .iter()
                .filter(|(_, (o, _))| *o == a)
                .map(|(c, _)| *c)
                .collect();
            let offered = self.offers.values().filter(|o| o.agent == a).count();
            ensure!(
                view.load as usize == owned.len() + offered,
                "{a} has load {}, expected {} owned + {offered} offered",
                view.load,
                owned.len()
            );
            ensure!(
                self.r.owned_by(&a) == owned,
                "owned_by({a}) is {:?}",
                self.r.owned_by(&a)
            );
            if view.status != AgentStatus::Online {
                ensure!(offered == 0, "{a} is {:?} with offers", view.status);
            } else {
                online.push(view);
            }
        }
        for d in DEPARTMENTS {
            for l in LANGUAGES {
                let expected = online.iter().any(|v| {
                    v.profile.departments.iter().any(|x| x == d)
                        && v.profile.languages.iter().any(|x| x == l)
                });
                ensure!(self.r.can_serve(d, l) == expected, "can_serve({d}, {l})");
            }
        }

        // The line: queued conversations in key order, and the queue listing.
        let mut line: Vec<(LineKey, ConversationId, bool)> = self
            .queued
            .iter()
            .map(|(c, k)| (*k, *c, true))
            .chain(self.waiters.iter().map(|(c, (k, _, _))| (*k, *c, false)))
            .collect();
        line.sort();
        let listed: Vec<ConversationId> =
            self.r.queue().into_iter().map(|i| i.conversation).collect();
        let expected: Vec<ConversationId> = line
            .iter()
            .filter(|(_, _, q)| *q)
            .map(|(_, c, _)| *c)
            .collect();
        ensure!(
            listed == expected,
            "queue() is {listed:?}, policy order is {expected:?}"
        );

        // The partial views of the listing agree with it.
        let queue = self.r.queue();
        for limit in [0, 1, 3] {
            let head = self.r.queue_head(limit);
            let wanted: Vec<_> = queue.iter().take(limit).cloned().collect();
            ensure!(
                head == (queue.len(), wanted),
                "queue_head({limit}) is {head:?}"
            );
        }
        let mut lengths: BTreeMap<String, usize> = BTreeMap::new();
        for item in &queue {
            *lengths.entry(item.request.department.clone()).or_default() += 1;
        }
        ensure!(
            self.r.queue_lengths() == lengths,
            "queue_lengths() is {:?}, the listing counts {lengths:?}",
            self.r.queue_lengths()
        );
        for agent in AGENTS.map(|a| AgentId(a.into())) {
            let served: Vec<_> = match self.r.agent(&agent) {
                Some(view) => queue
                    .iter()
                    .filter(|i| {
                        view.profile.departments.contains(&i.request.department)
                            && view.profile.languages.contains(&i.request.language)
                    })
                    .cloned()
                    .collect(),
                None => Vec::new(),
            };
            for limit in [1, 2, 100] {
                let wanted: Vec<_> = served.iter().take(limit).cloned().collect();
                let reported = self.r.queue_for(&agent, limit);
                ensure!(
                    reported == (served.len(), wanted),
                    "queue_for({agent}, {limit}) is {reported:?}"
                );
            }
        }

        // Positions and estimates, by the documented formula.
        let mut seen: BTreeMap<(String, String), (u32, u32)> = BTreeMap::new();
        let mut positions = Vec::new();
        for (_, c, queued) in &line {
            let Some(req) = self.request_of(*c) else {
                return Err(format!("{c} in the shadow line is unknown"));
            };
            let department = if *queued {
                req.department.clone()
            } else {
                self.waiters[c].1.clone()
            };
            let group = (department, req.language.clone());
            let offered = self.offers.contains_key(c);
            let (position, unoffered) = seen.entry(group.clone()).or_default();
            *position += 1;
            if !offered {
                *unoffered += 1;
            }
            if !queued {
                continue;
            }
            let (serving, capacity, free) = Self::slots(&group.0, &group.1, &online);
            let estimate = if offered {
                Some(0)
            } else {
                self.estimate(&group.0, *unoffered, capacity, free)
            };
            positions.push((
                *c,
                Position {
                    position: *position,
                    estimated_wait_ms: estimate,
                    agents_online: serving,
                },
            ));
        }
        let reported = self.r.positions();
        ensure!(
            reported == positions,
            "positions() is {reported:?}, expected {positions:?}"
        );
        for (c, p) in &positions {
            ensure!(self.r.position(*c).as_ref() == Some(p), "position({c})");
        }
        for c in Self::all_conversations() {
            if !self.queued.contains_key(&c) {
                ensure!(
                    self.r.position(c).is_none(),
                    "position({c}) of a conversation not queued"
                );
            }
        }

        // The next deadline: offers, department-transfer deadlines, and the
        // cooldowns of conversations waiting for an offer.
        let mut next: Option<Millis> = None;
        let mut consider = |t: Millis| next = Some(next.map_or(t, |n: Millis| n.min(t)));
        for o in self.offers.values() {
            consider(o.expires_at);
        }
        for (_, _, deadline) in self.waiters.values() {
            consider(*deadline);
        }
        for ((c, _), until) in &self.cooldowns {
            let waiting = self.queued.contains_key(c) || self.waiters.contains_key(c);
            if waiting && !self.offers.contains_key(c) {
                consider(*until);
            }
        }
        ensure!(
            self.r.next_deadline() == next,
            "next_deadline() is {:?}, expected {next:?} at {now}",
            self.r.next_deadline()
        );
        Ok(())
    }

    /// Whether any online agent serves a line, and all their slots and free slots.
    fn slots(department: &str, language: &str, online: &[crate::AgentView]) -> (bool, u64, u64) {
        let serving = online.iter().filter(|v| {
            v.profile.departments.iter().any(|d| d == department)
                && v.profile.languages.iter().any(|l| l == language)
        });
        serving.fold((false, 0u64, 0u64), |(_, c, f), v| {
            (
                true,
                c + u64::from(v.profile.capacity),
                f + u64::from(v.profile.capacity.saturating_sub(v.load)),
            )
        })
    }

    fn estimate(&self, department: &str, unoffered: u32, capacity: u64, free: u64) -> Option<u64> {
        let times = self.handle_times.get(department).filter(|t| !t.is_empty());
        let p = u64::from(unoffered);
        if p <= free {
            return Some(0);
        }
        let times = times?;
        if capacity == 0 {
            return None;
        }
        let sum: u128 = times.iter().map(|t| u128::from(*t)).sum();
        let count = times.len() as u128;
        let ms = (u128::from(p - free) * sum).div_ceil(count * u128::from(capacity));
        Some(u64::try_from(ms).unwrap_or(u64::MAX))
    }
}
