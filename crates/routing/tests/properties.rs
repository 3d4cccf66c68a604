//! Property tests: random sequences of operations (agents joining and changing
//! status, players arriving with random tiers, accepts and declines of the offers
//! actually open, closes, transfers, takeovers, requeues, time passing), checked
//! after every step against the router's invariants and against a shadow model
//! built only from the decisions the router returned.

mod common;

use common::*;
use pitboss_protocol::{AgentId, AgentStatus, ConversationId, TransferTarget};
use pitboss_routing::{
    ConversationView, Decision, Millis, Position, Request, Router, RoutingConfig, RoutingError,
};
use proptest::prelude::*;
use std::collections::{BTreeMap, BTreeSet};

const AGENTS: [&str; 5] = ["a0", "a1", "a2", "a3", "a4"];
const LANGS: [&str; 2] = ["en", "de"];
const DEPTS: [&str; 2] = ["support", "payments"];

#[derive(Debug, Clone)]
enum Op {
    Upsert {
        agent: usize,
        langs: u8,
        depts: u8,
        capacity: u32,
    },
    Status {
        agent: usize,
        status: AgentStatus,
    },
    Enqueue {
        dept: usize,
        lang: usize,
        tier: u8,
    },
    Accept(usize),
    Decline(usize),
    Release(usize),
    TransferToAgent {
        conv: usize,
        target: usize,
    },
    TransferToDepartment {
        conv: usize,
        dept: usize,
    },
    TakeOver {
        conv: usize,
        agent: usize,
    },
    Requeue(usize),
    Remove(usize),
    Tick(u64),
}

fn op() -> impl Strategy<Value = Op> {
    let status = prop_oneof![
        5 => Just(AgentStatus::Online),
        1 => Just(AgentStatus::Away),
        1 => Just(AgentStatus::Offline),
    ];
    prop_oneof![
        1 => (0..AGENTS.len(), 0..4u8, 0..4u8, 1..=4u32).prop_map(|(agent, langs, depts, capacity)| {
            Op::Upsert { agent, langs, depts, capacity }
        }),
        3 => (0..AGENTS.len(), status).prop_map(|(agent, status)| Op::Status { agent, status }),
        6 => (0..DEPTS.len(), 0..LANGS.len(), 0..4u8)
            .prop_map(|(dept, lang, tier)| Op::Enqueue { dept, lang, tier }),
        6 => any::<usize>().prop_map(Op::Accept),
        2 => any::<usize>().prop_map(Op::Decline),
        3 => any::<usize>().prop_map(Op::Release),
        2 => (any::<usize>(), 0..AGENTS.len())
            .prop_map(|(conv, target)| Op::TransferToAgent { conv, target }),
        2 => (any::<usize>(), 0..DEPTS.len())
            .prop_map(|(conv, dept)| Op::TransferToDepartment { conv, dept }),
        1 => (any::<usize>(), 0..AGENTS.len()).prop_map(|(conv, agent)| Op::TakeOver { conv, agent }),
        1 => any::<usize>().prop_map(Op::Requeue),
        1 => (0..AGENTS.len()).prop_map(Op::Remove),
        1 => (0..30_000u64).prop_map(Op::Tick),
        3 => (0..3_000u64).prop_map(Op::Tick),
    ]
}

fn pick(mask: u8, from: &[&'static str]) -> Vec<&'static str> {
    from.iter()
        .enumerate()
        .filter(|(i, _)| mask & (1 << i) != 0)
        .map(|(_, s)| *s)
        .collect()
}

/// Which operations a run may use, and which extra properties it checks.
#[derive(Debug, Clone, Copy)]
struct Mode {
    /// Take-overs (capacity overrides) and profile changes allowed. Without them,
    /// no agent may ever be above capacity.
    overrides: bool,
    /// Every agent serves every department and language (capacities may differ):
    /// then first offers must follow priority order exactly.
    identical: bool,
}

/// The router under test, plus what the test knows from the decisions alone.
struct Sim {
    r: Router,
    mode: Mode,
    now: Millis,
    next_id: u128,
    /// Every conversation created and not released, oldest first.
    known: Vec<ConversationId>,
    /// Open offers, from Offer / OfferWithdrawn / Assigned decisions only.
    offers: BTreeMap<ConversationId, AgentId>,
    /// Owners, from Assigned decisions (and the documented silent changes:
    /// release, requeue, remove_agent).
    owners: BTreeMap<ConversationId, AgentId>,
    /// Priority key of each enqueued conversation: (arrival − tier × aging, arrival order).
    keys: BTreeMap<ConversationId, (i128, u128)>,
    /// Conversations put back at the head at some point: outside the key order.
    requeued: BTreeSet<ConversationId>,
    /// Conversations that have received at least one offer while queued.
    ever_offered: BTreeSet<ConversationId>,
}

impl Sim {
    fn new(config: RoutingConfig, mode: Mode) -> Self {
        Self {
            r: Router::new(config),
            mode,
            now: 0,
            next_id: 1,
            known: Vec::new(),
            offers: BTreeMap::new(),
            owners: BTreeMap::new(),
            keys: BTreeMap::new(),
            requeued: BTreeSet::new(),
            ever_offered: BTreeSet::new(),
        }
    }

    fn upsert(
        &mut self,
        name: &str,
        langs: Vec<&str>,
        depts: Vec<&str>,
        capacity: u32,
    ) -> Result<(), TestCaseError> {
        let ds = self
            .r
            .upsert_agent(agent(name), profile(&langs, &depts, capacity), self.now);
        self.absorb(&ds)
    }

    fn pick_known(&self, i: usize) -> Option<ConversationId> {
        (!self.known.is_empty()).then(|| self.known[i % self.known.len()])
    }

    /// Mostly an owned conversation (what transfers and closes are about), sometimes any.
    fn pick_transferable(&self, i: usize) -> Option<ConversationId> {
        let owned: Vec<ConversationId> = self.owners.keys().copied().collect();
        match (owned.is_empty(), i % 5) {
            (true, _) | (_, 0) => self.pick_known(i / 5),
            _ => Some(owned[(i / 5) % owned.len()]),
        }
    }

    fn open_offers(&self) -> Vec<(ConversationId, AgentId)> {
        self.known
            .iter()
            .filter_map(|c| offered_to(&self.r, *c).map(|a| (*c, a)))
            .collect()
    }

    fn request_of(&self, c: ConversationId) -> Request {
        match self.r.conversation(c) {
            Some(ConversationView::Queued { request, .. })
            | Some(ConversationView::Owned { request, .. }) => request,
            None => req("support", "en", 0),
        }
    }

    /// Everything observable, to check that a refused operation changed nothing.
    fn fingerprint(&self) -> String {
        let convs: Vec<_> = self.known.iter().map(|c| self.r.conversation(*c)).collect();
        let agents: Vec<_> = AGENTS.iter().map(|a| self.r.agent(&agent(a))).collect();
        format!(
            "{convs:?}{agents:?}{:?}{:?}{:?}",
            self.r.queue(),
            self.r.positions(),
            self.r.next_deadline()
        )
    }

    fn apply(&mut self, op: &Op) -> Result<(), TestCaseError> {
        self.now += 1;
        let now = self.now;
        let before = self.fingerprint();
        let refused = |e: RoutingError, sim: &Sim| -> Result<(), TestCaseError> {
            prop_assert_eq!(
                &before,
                &sim.fingerprint(),
                "refused ({:?}) but changed state",
                e
            );
            Ok(())
        };
        match op {
            Op::Upsert {
                agent: a,
                langs,
                depts,
                capacity,
            } => {
                if !self.mode.overrides && self.r.agent(&agent(AGENTS[*a])).is_some() {
                    return Ok(()); // a lowered capacity is an override of sorts
                }
                let (langs, depts) = if self.mode.identical {
                    (LANGS.to_vec(), DEPTS.to_vec())
                } else {
                    (pick(*langs, &LANGS), pick(*depts, &DEPTS))
                };
                self.upsert(AGENTS[*a], langs, depts, *capacity)?;
            }
            Op::Status { agent: a, status } => {
                match self.r.set_status(&agent(AGENTS[*a]), *status, now) {
                    Ok(ds) => {
                        self.absorb(&ds)?;
                        prop_assert_eq!(
                            self.r.agent(&agent(AGENTS[*a])).map(|v| v.status),
                            Some(*status)
                        );
                    }
                    Err(e) => {
                        prop_assert_eq!(&e, &RoutingError::UnknownAgent);
                        refused(e, self)?;
                    }
                }
            }
            Op::Enqueue { dept, lang, tier } => {
                let c = cid(self.next_id);
                self.next_id += 1;
                let ds = self
                    .r
                    .enqueue(c, req(DEPTS[*dept], LANGS[*lang], *tier), now)
                    .map_err(|e| TestCaseError::fail(format!("enqueue refused: {e}")))?;
                let aging = i128::from(self.r.config().aging_per_tier_ms);
                self.keys.insert(
                    c,
                    (i128::from(now) - i128::from(*tier) * aging, self.next_id),
                );
                self.known.push(c);
                self.absorb(&ds)?;
                prop_assert_eq!(
                    ds.last(),
                    Some(&Decision::QueueChanged),
                    "a new player changes the queue"
                );
            }
            Op::Accept(i) | Op::Decline(i) => {
                let open = self.open_offers();
                if open.is_empty() {
                    return Ok(());
                }
                let (c, a) = open[i % open.len()].clone();
                let ds = if matches!(op, Op::Accept(_)) {
                    self.r.accept(c, &a, now)
                } else {
                    self.r.decline(c, &a, now)
                }
                .map_err(|e| {
                    TestCaseError::fail(format!("{op:?} of an open offer refused: {e}"))
                })?;
                self.absorb(&ds)?;
                if matches!(op, Op::Accept(_)) {
                    prop_assert_eq!(owner(&self.r, c), Some(a));
                } else {
                    prop_assert!(
                        offered_to(&self.r, c) != Some(a),
                        "declined but still offered"
                    );
                }
            }
            Op::Release(i) => {
                // Mostly a close of an owned chat, sometimes a queued player leaving.
                let Some(c) = self.pick_transferable(*i) else {
                    return Ok(());
                };
                let ds = self.r.release(c, now);
                self.absorb(&ds)?;
                prop_assert!(!self.offers.contains_key(&c), "release left an offer open");
                self.owners.remove(&c);
                self.known.retain(|k| *k != c);
                prop_assert!(self.r.conversation(c).is_none());
                prop_assert!(self.r.release(c, now).is_empty(), "second release");
            }
            Op::TransferToAgent { conv, target }
            | Op::TakeOver {
                conv,
                agent: target,
            } => {
                let Some(c) = self.pick_transferable(*conv) else {
                    return Ok(());
                };
                let target = agent(AGENTS[*target]);
                let result = if matches!(op, Op::TakeOver { .. }) {
                    if !self.mode.overrides {
                        return Ok(());
                    }
                    self.r.take_over(c, &target, now)
                } else {
                    let from = owner(&self.r, c).unwrap_or_else(|| agent(AGENTS[0]));
                    self.r
                        .transfer(c, &from, TransferTarget::Agent(target.clone()), now)
                };
                match result {
                    Ok(ds) => self.absorb(&ds)?,
                    Err(e) => refused(e, self)?,
                }
            }
            Op::TransferToDepartment { conv, dept } => {
                let Some(c) = self.pick_transferable(*conv) else {
                    return Ok(());
                };
                let from = owner(&self.r, c).unwrap_or_else(|| agent(AGENTS[0]));
                match self.r.transfer(
                    c,
                    &from,
                    TransferTarget::Department(DEPTS[*dept].into()),
                    now,
                ) {
                    Ok(ds) => self.absorb(&ds)?,
                    Err(e) => refused(e, self)?,
                }
            }
            Op::Requeue(i) => {
                let Some(c) = self.pick_known(*i) else {
                    return Ok(());
                };
                let request = self.request_of(c);
                let ds = self
                    .r
                    .requeue_at_head(c, request, now)
                    .map_err(|e| TestCaseError::fail(format!("requeue refused: {e}")))?;
                // A requeued owned conversation loses its owner without an Assigned.
                self.owners.remove(&c);
                self.requeued.insert(c);
                self.absorb(&ds)?;
                let queued = matches!(
                    self.r.conversation(c),
                    Some(ConversationView::Queued { .. })
                );
                prop_assert!(queued, "requeued but not queued");
            }
            Op::Remove(a) => {
                let a = agent(AGENTS[*a]);
                let owned = self.r.owned_by(&a);
                for c in &owned {
                    prop_assert_eq!(self.owners.remove(c), Some(a.clone()));
                    self.requeued.insert(*c);
                }
                let ds = self.r.remove_agent(&a, now);
                self.absorb(&ds)?;
                prop_assert!(self.r.agent(&a).is_none());
                prop_assert!(
                    self.offers.values().all(|o| *o != a),
                    "offer left to a removed agent"
                );
            }
            Op::Tick(dt) => self.tick(now + dt)?,
        }
        self.check()
    }

    fn tick(&mut self, to: Millis) -> Result<(), TestCaseError> {
        self.now = to;
        let ds = self.r.tick(to);
        self.absorb(&ds)?;
        if let Some(next) = self.r.next_deadline() {
            prop_assert!(next > to, "after tick({}) next_deadline is {}", to, next);
        }
        Ok(())
    }

    /// Replays decisions onto the shadow model, checking each is consistent with it.
    fn absorb(&mut self, ds: &[Decision]) -> Result<(), TestCaseError> {
        let mut away = Vec::new();
        for (i, d) in ds.iter().enumerate() {
            match d {
                Decision::Offer {
                    conversation: c,
                    agent: a,
                    expires_at,
                    transfer_from,
                } => {
                    prop_assert!(!self.offers.contains_key(c), "second open offer for {}", c);
                    prop_assert_eq!(*expires_at, self.now + self.r.config().offer_timeout_ms);
                    prop_assert_eq!(
                        transfer_from.as_ref(),
                        self.owners.get(c),
                        "transfer_from is the owner"
                    );
                    prop_assert!(self.owners.get(c) != Some(a), "offered to its owner");
                    if transfer_from.is_none() {
                        self.check_first_offer_order(*c)?;
                        self.ever_offered.insert(*c);
                    }
                    self.offers.insert(*c, a.clone());
                }
                Decision::OfferWithdrawn {
                    conversation: c,
                    agent: a,
                    ..
                } => {
                    let was = self.offers.remove(c);
                    prop_assert_eq!(was.as_ref(), Some(a), "withdrawn offer was not open");
                }
                Decision::Assigned {
                    conversation: c,
                    agent: a,
                    previous,
                } => {
                    prop_assert_eq!(
                        previous.as_ref(),
                        self.owners.get(c),
                        "previous is the old owner"
                    );
                    let offer = self.offers.remove(c);
                    prop_assert!(
                        offer.is_none() || offer.as_ref() == Some(a),
                        "another agent's offer left open"
                    );
                    self.owners.insert(*c, a.clone());
                }
                Decision::TransferFailed {
                    conversation: c,
                    owner: o,
                    ..
                } => {
                    prop_assert_eq!(self.owners.get(c), Some(o), "TransferFailed to a non-owner");
                }
                Decision::AgentAway { agent: a } => away.push(a.clone()),
                Decision::QueueChanged => {
                    prop_assert_eq!(i, ds.len() - 1, "QueueChanged comes last, once");
                }
            }
        }
        for a in away {
            let status = self.r.agent(&a).map(|v| v.status);
            prop_assert_eq!(status, Some(AgentStatus::Away), "AgentAway for {}", a);
            prop_assert!(
                self.offers.values().all(|o| *o != a),
                "away {} kept offers",
                a
            );
        }
        Ok(())
    }

    /// With identical agents, a conversation's first offer comes only after every
    /// queued conversation with a smaller priority key has had one.
    fn check_first_offer_order(&self, c: ConversationId) -> Result<(), TestCaseError> {
        if !self.mode.identical || self.ever_offered.contains(&c) || self.requeued.contains(&c) {
            return Ok(());
        }
        let Some(key) = self.keys.get(&c) else {
            return Ok(());
        };
        for other in &self.known {
            let waiting_unserved = *other != c
                && !self.ever_offered.contains(other)
                && !self.requeued.contains(other)
                && !self.owners.contains_key(other);
            if waiting_unserved {
                if let Some(other_key) = self.keys.get(other) {
                    prop_assert!(
                        other_key > key,
                        "{} (key {:?}) offered before {} (key {:?})",
                        c,
                        key,
                        other,
                        other_key
                    );
                }
            }
        }
        Ok(())
    }

    /// After every step: invariants, the shadow model matches the views, and load
    /// is owned + open offers (and within capacity without overrides).
    fn check(&self) -> Result<(), TestCaseError> {
        if let Err(e) = self.r.check_invariants() {
            return Err(TestCaseError::fail(format!("invariant: {e}")));
        }
        for c in &self.known {
            let (offer, owned_by) = (offered_to(&self.r, *c), owner(&self.r, *c));
            prop_assert_eq!(offer.as_ref(), self.offers.get(c), "offer of {}", c);
            prop_assert_eq!(owned_by.as_ref(), self.owners.get(c), "owner of {}", c);
        }
        for name in AGENTS {
            let a = agent(name);
            let Some(view) = self.r.agent(&a) else {
                continue;
            };
            let owned = self.owners.values().filter(|o| **o == a).count();
            let offered = self.offers.values().filter(|o| **o == a).count();
            prop_assert_eq!(view.load as usize, owned + offered, "load of {}", name);
            if view.status != AgentStatus::Online {
                prop_assert_eq!(offered, 0, "{} is {:?} with offers", name, view.status);
            }
            if !self.mode.overrides {
                prop_assert!(
                    view.load <= view.profile.capacity,
                    "{} above capacity",
                    name
                );
            }
        }
        let queued: Vec<ConversationId> = self
            .known
            .iter()
            .copied()
            .filter(|c| {
                matches!(
                    self.r.conversation(*c),
                    Some(ConversationView::Queued { .. })
                )
            })
            .collect();
        let mut listed = queue_ids(&self.r);
        listed.sort();
        let mut queued_sorted = queued;
        queued_sorted.sort();
        for (c, p) in self.r.positions() {
            prop_assert_eq!(self.r.position(c), Some(p), "position of {}", c);
        }
        prop_assert_eq!(
            listed,
            queued_sorted,
            "queue() lists exactly the queued conversations"
        );
        Ok(())
    }

    /// Releases every owned conversation, lets every offer expire, brings every
    /// agent back online and lets every cooldown end (the config's cooldown is
    /// shorter than its offer timeout, so no new offer expires meanwhile).
    fn drain(&mut self) -> Result<(), TestCaseError> {
        let owned: Vec<ConversationId> = self.owners.keys().copied().collect();
        for c in owned {
            self.now += 1;
            let ds = self.r.release(c, self.now);
            self.absorb(&ds)?;
            self.owners.remove(&c);
            self.known.retain(|k| *k != c);
        }
        self.tick(self.now + self.r.config().offer_timeout_ms + 1)?;
        for name in AGENTS {
            if self.r.agent(&agent(name)).is_some() {
                let ds = self
                    .r
                    .set_status(&agent(name), AgentStatus::Online, self.now)
                    .map_err(|e| TestCaseError::fail(e.to_string()))?;
                self.absorb(&ds)?;
            }
        }
        self.tick(self.now + self.r.config().decline_cooldown_ms + 1)?;
        self.check()
    }
}

fn cases(n: u32) -> ProptestConfig {
    ProptestConfig {
        cases: n,
        ..ProptestConfig::default()
    }
}

/// Starting agents: (languages mask, departments mask, capacity, online).
type Roster = Vec<(u8, u8, u32, bool)>;

fn roster() -> impl Strategy<Value = Roster> {
    prop::collection::vec(
        (1..4u8, 1..4u8, 1..=4u32, prop::bool::weighted(0.8)),
        1..=AGENTS.len(),
    )
}

impl Sim {
    fn start(&mut self, roster: &Roster) -> Result<(), TestCaseError> {
        for (i, (langs, depts, capacity, online)) in roster.iter().enumerate() {
            let (langs, depts) = if self.mode.identical {
                (LANGS.to_vec(), DEPTS.to_vec())
            } else {
                (pick(*langs, &LANGS), pick(*depts, &DEPTS))
            };
            self.upsert(AGENTS[i], langs, depts, *capacity)?;
            if *online {
                self.apply(&Op::Status {
                    agent: i,
                    status: AgentStatus::Online,
                })?;
            }
        }
        Ok(())
    }
}

proptest! {
    #![proptest_config(cases(96))]

    #[test]
    fn random_operations_keep_every_invariant(
        roster in roster(),
        ops in prop::collection::vec(op(), 1..150),
    ) {
        let mut sim = Sim::new(RoutingConfig::default(), Mode { overrides: true, identical: false });
        sim.start(&roster)?;
        for op in &ops {
            sim.apply(op)?;
        }
    }

    #[test]
    fn no_agent_exceeds_capacity_without_overrides(
        roster in roster(),
        ops in prop::collection::vec(op(), 1..150),
    ) {
        let mut sim = Sim::new(RoutingConfig::default(), Mode { overrides: false, identical: false });
        sim.start(&roster)?;
        for op in &ops {
            sim.apply(op)?;
        }
    }

    #[test]
    fn first_offers_follow_priority_order_with_identical_agents(
        roster in roster(),
        ops in prop::collection::vec(op(), 1..150),
    ) {
        let mut sim = Sim::new(RoutingConfig::default(), Mode { overrides: true, identical: true });
        sim.start(&roster)?;
        for op in &ops {
            sim.apply(op)?;
        }
    }

    #[test]
    fn every_waiting_player_is_offered_once_capacity_frees(
        roster in roster(),
        ops in prop::collection::vec(op(), 1..150),
    ) {
        let config = RoutingConfig { decline_cooldown_ms: 5_000, ..RoutingConfig::default() };
        let mut sim = Sim::new(config, Mode { overrides: true, identical: false });
        sim.start(&roster)?;
        for op in &ops {
            sim.apply(op)?;
        }
        sim.drain()?;
        let agents: Vec<_> = AGENTS.iter().filter_map(|a| sim.r.agent(&agent(a))).collect();
        for item in sim.r.queue() {
            if item.offered_to.is_some() {
                continue;
            }
            let free = agents.iter().find(|a| {
                a.status == AgentStatus::Online
                    && a.load < a.profile.capacity
                    && a.profile.languages.contains(&item.request.language)
                    && a.profile.departments.contains(&item.request.department)
            });
            prop_assert!(free.is_none(), "{} waits while {:?} is free", item.conversation, free);
        }
    }
}

/// One agent setup and queue for the estimate property.
#[derive(Debug, Clone)]
struct EstimateCase {
    /// Per agent: capacity, online, conversations restored to them.
    agents: Vec<(u32, bool, u32)>,
    tiers: Vec<u8>,
    handle_times: Vec<u64>,
}

fn estimate_case() -> impl Strategy<Value = EstimateCase> {
    (
        prop::collection::vec((1..=4u32, prop::bool::weighted(0.8), 0..=4u32), 1..=4),
        prop::collection::vec(0..3u8, 1..12),
        prop::collection::vec(1_000..600_000u64, 1..8),
    )
        .prop_map(|(agents, tiers, handle_times)| EstimateCase {
            agents,
            tiers,
            handle_times,
        })
}

fn build(case: &EstimateCase, scale: u64) -> Router {
    let mut r = router();
    for (i, (capacity, online, restored)) in case.agents.iter().enumerate() {
        let a = agent(AGENTS[i]);
        r.upsert_agent(a.clone(), profile(&["en"], &["support"], *capacity), 0);
        for k in 0..*restored {
            let c = cid(1_000 + (i as u128) * 100 + u128::from(k));
            r.restore_owned(c, &a, req("support", "en", 0), 0)
                .expect("known agent");
        }
        if *online {
            r.set_status(&a, AgentStatus::Online, 0)
                .expect("known agent");
        }
    }
    for t in &case.handle_times {
        r.record_handle_time("support", t * scale);
    }
    for (n, tier) in case.tiers.iter().enumerate() {
        r.enqueue(
            cid(n as u128 + 1),
            req("support", "en", *tier),
            1 + n as u64,
        )
        .expect("new conversation");
    }
    r
}

proptest! {
    #![proptest_config(cases(128))]

    #[test]
    fn the_wait_estimate_follows_the_handle_times(case in estimate_case()) {
        let single = build(&case, 1);
        let double = build(&case, 2);
        let a = single.positions();
        let b = double.positions();
        prop_assert_eq!(a.len(), case.tiers.len());
        let positions: Vec<u32> = a.iter().map(|(_, p)| p.position).collect();
        prop_assert_eq!(positions, (1..=case.tiers.len() as u32).collect::<Vec<_>>());

        // The formula, recomputed from the views.
        let online: Vec<_> = AGENTS
            .iter()
            .filter_map(|n| single.agent(&agent(n)))
            .filter(|v| v.status == AgentStatus::Online)
            .collect();
        let capacity: u64 = online.iter().map(|v| u64::from(v.profile.capacity)).sum();
        let free: u64 = online.iter().map(|v| u64::from(v.profile.capacity.saturating_sub(v.load))).sum();
        let sum: u128 = case.handle_times.iter().map(|t| u128::from(*t)).sum();
        let count = case.handle_times.len() as u128;
        // `p` counts only the conversations without an open offer; one with an
        // offer is being answered now.
        let mut unoffered = 0u64;
        for (id, Position { estimated_wait_ms, .. }) in &a {
            let offered = matches!(
                single.conversation(*id),
                Some(ConversationView::Queued { offer: Some(_), .. })
            );
            let expected = if offered {
                Some(0)
            } else {
                unoffered += 1;
                if capacity == 0 {
                    None
                } else if unoffered <= free {
                    Some(0)
                } else {
                    let n = u128::from(unoffered - free) * sum;
                    let d = count * u128::from(capacity);
                    Some(n.div_ceil(d) as u64)
                }
            };
            prop_assert_eq!(*estimated_wait_ms, expected, "estimate of {}", id);
        }

        // Doubling every handle time doubles every estimate, within rounding.
        for ((ida, pa), (idb, pb)) in a.iter().zip(&b) {
            prop_assert_eq!(ida, idb);
            prop_assert_eq!(pa.position, pb.position);
            match (pa.estimated_wait_ms, pb.estimated_wait_ms) {
                (None, None) => {}
                (Some(x), Some(y)) => prop_assert!(
                    y <= 2 * x && y + 1 >= 2 * x,
                    "{} → {} is not double", x, y
                ),
                other => prop_assert!(false, "one estimate missing: {:?}", other),
            }
        }
        // Later in line never waits less (among those still waiting for an offer).
        let estimates: Vec<_> = a
            .iter()
            .filter(|(id, _)| !matches!(
                single.conversation(*id),
                Some(ConversationView::Queued { offer: Some(_), .. })
            ))
            .filter_map(|(_, p)| p.estimated_wait_ms)
            .collect();
        prop_assert!(estimates.windows(2).all(|w| w[0] <= w[1]), "{:?}", estimates);
    }
}
