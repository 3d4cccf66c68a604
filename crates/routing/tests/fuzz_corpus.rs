//! The `router_ops` fuzz target on the stable toolchain: every input of the
//! committed corpus (`fuzz/corpus/router_ops`), the named seed scenarios, and a
//! bounded number of random and mutated inputs from a fixed seed, each run
//! through `pitboss_routing::fuzzing::router_ops`, which checks every invariant
//! after every operation. CI needs no nightly and no libFuzzer for this.
//!
//! More random inputs: `PITBOSS_FUZZ_INPUTS=100000 cargo test -p pitboss-routing
//! --release --test fuzz_corpus`. Rewrite the seed files after changing the
//! seeds or the input format: `cargo test -p pitboss-routing --test fuzz_corpus
//! -- --ignored write_seed_corpus`.
#![allow(missing_docs)]

use arbitrary::{Arbitrary, Unstructured};
use pitboss_protocol::AgentStatus;
use pitboss_routing::fuzzing::{router_ops, Op, Report, Req, Scenario, Starter, Step};
use pitboss_routing::RoutingConfig;
use proptest::prelude::*;
use std::path::{Path, PathBuf};

fn corpus_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/corpus/router_ops")
}

fn corpus() -> Vec<(PathBuf, Vec<u8>)> {
    let mut files: Vec<(PathBuf, Vec<u8>)> = std::fs::read_dir(corpus_dir())
        .expect("the committed corpus")
        .map(|e| {
            let path = e.expect("corpus entry").path();
            let data = std::fs::read(&path).expect("corpus file");
            (path, data)
        })
        .collect();
    files.sort();
    files
}

/// Runs one input, turning a panic into an error that names the input.
fn run(name: &str, data: &[u8]) -> Result<Report, String> {
    match std::panic::catch_unwind(|| router_ops(data)) {
        Ok(Ok(report)) => Ok(report),
        Ok(Err(broken)) => Err(format!("{name}: {broken}")),
        Err(_) => Err(format!("{name}: panicked (input {data:?})")),
    }
}

/// SplitMix64: a fixed, dependency-free source of random inputs.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
    fn bytes(&mut self, len: usize) -> Vec<u8> {
        (0..len).map(|_| self.next() as u8).collect()
    }
}

/// A corpus input changed a little, the way a fuzzer would: bytes flipped,
/// inserted, removed, or a piece of another input spliced in.
fn mutate(rng: &mut Rng, data: &[u8], other: &[u8]) -> Vec<u8> {
    let mut out = data.to_vec();
    for _ in 0..1 + rng.below(4) {
        match rng.below(4) {
            0 if !out.is_empty() => {
                let i = rng.below(out.len());
                out[i] = rng.next() as u8;
            }
            1 => {
                let i = rng.below(out.len() + 1);
                out.insert(i, rng.next() as u8);
            }
            2 if !out.is_empty() => {
                let i = rng.below(out.len());
                out.remove(i);
            }
            _ if !other.is_empty() => {
                let from = rng.below(other.len());
                let len = rng.below(other.len() - from) + 1;
                let at = rng.below(out.len() + 1);
                out.splice(at..at, other[from..from + len].iter().copied());
            }
            _ => {}
        }
    }
    out
}

fn random_inputs() -> usize {
    std::env::var("PITBOSS_FUZZ_INPUTS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(2_000)
}

#[test]
fn every_corpus_input_keeps_every_invariant() {
    let corpus = corpus();
    assert!(!corpus.is_empty(), "the corpus is committed");
    let mut total = Report::default();
    let failures: Vec<String> = corpus
        .iter()
        .filter_map(
            |(path, data)| match run(&path.display().to_string(), data) {
                Ok(report) => {
                    total.merge(&report);
                    None
                }
                Err(e) => Some(e),
            },
        )
        .collect();
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));

    // The corpus reaches every corner: each operation carried out, and each
    // kind of decision made, at least once.
    for (op, (done, _)) in &total.outcomes {
        assert!(*done > 0, "no corpus input carries out {op}: {total:#?}");
    }
    assert!(total.outcomes.len() >= 15, "operations missing: {total:#?}");
    for decision in [
        "offer",
        "transfer_offer",
        "offer_withdrawn_expired",
        "offer_withdrawn_declined",
        "offer_withdrawn_cancelled",
        "assigned",
        "reassigned",
        "transfer_failed_declined",
        "transfer_failed_expired",
        "transfer_failed_cancelled",
        "agent_away",
        "queue_changed",
    ] {
        assert!(
            total.decisions.contains_key(decision),
            "no corpus input decides {decision}: {total:#?}"
        );
    }
}

#[test]
fn random_and_mutated_inputs_keep_every_invariant() {
    let corpus = corpus();
    let mut rng = Rng(0x5eed_0fc0_ffee);
    let mut failures = Vec::new();
    for n in 0..random_inputs() {
        let data = if n % 2 == 0 || corpus.is_empty() {
            let len = rng.below(256);
            rng.bytes(len)
        } else {
            let a = &corpus[rng.below(corpus.len())].1;
            let b = &corpus[rng.below(corpus.len())].1;
            mutate(&mut rng, a, b)
        };
        if let Err(e) = run(&format!("random input {n}"), &data) {
            failures.push(format!("{e}\ninput: {data:?}"));
            if failures.len() == 3 {
                break;
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
}

fn online(languages: u8, departments: u8, capacity: u8) -> Option<Starter> {
    Some(Starter {
        languages,
        departments,
        capacity,
        online: true,
    })
}

// Masks: languages en = 1, de = 2, fr = 4; departments support = 1,
// payments = 2, vip = 4. Capacity and tier are table indexes (capacity 0–3,
// tier 0–5 then 100, 255).
const EN: u8 = 1;
const DE: u8 = 2;
const SUPPORT: u8 = 1;
const PAYMENTS: u8 = 2;

fn req(department: u8, language: u8, tier: u8) -> Req {
    Req {
        department,
        language,
        tier,
    }
}

fn scenario(ops: Vec<Op>) -> Scenario {
    Scenario {
        config: RoutingConfig::default(),
        start: 0,
        roster: vec![
            online(EN, SUPPORT, 2),
            online(EN | DE, SUPPORT | PAYMENTS, 2),
            online(DE, PAYMENTS, 1),
            None,
        ],
        ops,
    }
}

/// Hand-written scenarios, one per flow, so that the fuzzer starts from inputs
/// that reach deep states.
fn seeds() -> Vec<(&'static str, Scenario)> {
    use Op::*;
    let support_en = req(0, 0, 0);
    let payments_de = req(1, 1, 0);
    let mut edge = scenario(vec![
        Enqueue {
            conversation: 0,
            request: req(0, 0, 7),
        },
        Enqueue {
            conversation: 1,
            request: req(0, 0, 0),
        },
        Tick(Step::One),
        SetStatus {
            agent: 0,
            status: AgentStatus::Online,
        },
        DeclineOpen { index: 0 },
        Tick(Step::Zero),
        AcceptOpen { index: 1 },
        Release { conversation: 1 },
        Release { conversation: 0 },
    ]);
    edge.config = RoutingConfig {
        offer_timeout_ms: 1,
        aging_per_tier_ms: 1 << 40,
        decline_cooldown_ms: 0,
        transfer_timeout_ms: 1,
        handle_time_window: 0,
    };
    edge.start = 1 << 48;
    let mut vip = scenario(vec![
        Enqueue {
            conversation: 0,
            request: support_en,
        },
        Advance(Step::Millis(30_000)),
        Enqueue {
            conversation: 1,
            request: req(0, 0, 1),
        },
        Advance(Step::Millis(30_000)),
        Enqueue {
            conversation: 2,
            request: req(0, 0, 2),
        },
        Enqueue {
            conversation: 3,
            request: req(0, 0, 0),
        },
        Requeue {
            conversation: 3,
            request: support_en,
        },
        SetStatus {
            agent: 0,
            status: AgentStatus::Online,
        },
        AcceptOpen { index: 0 },
        AcceptOpen { index: 0 },
        Release { conversation: 2 },
        Release { conversation: 3 },
    ]);
    vip.roster = vec![
        Some(Starter {
            languages: EN,
            departments: SUPPORT,
            capacity: 2,
            online: false,
        }),
        None,
        None,
        None,
    ];
    vec![
        (
            "accept-and-close",
            scenario(vec![
                Enqueue {
                    conversation: 0,
                    request: support_en,
                },
                AcceptOpen { index: 0 },
                Advance(Step::Millis(5_000)),
                Release { conversation: 0 },
                Enqueue {
                    conversation: 1,
                    request: payments_de,
                },
                Accept {
                    conversation: 1,
                    agent: 1,
                },
                Accept {
                    conversation: 1,
                    agent: 2,
                },
                Tick(Step::Zero),
            ]),
        ),
        (
            "decline-expire-away",
            scenario(vec![
                Enqueue {
                    conversation: 0,
                    request: support_en,
                },
                DeclineOpen { index: 0 },
                Decline {
                    conversation: 0,
                    agent: 0,
                },
                Tick(Step::BeforeOfferTimeout),
                Tick(Step::OfferTimeout),
                Tick(Step::Cooldown),
                SetStatus {
                    agent: 0,
                    status: AgentStatus::Online,
                },
                SetStatus {
                    agent: 1,
                    status: AgentStatus::Online,
                },
                Tick(Step::Long),
            ]),
        ),
        (
            "transfer-to-agent",
            scenario(vec![
                Enqueue {
                    conversation: 0,
                    request: support_en,
                },
                AcceptOpen { index: 0 },
                TransferToAgent {
                    conversation: 0,
                    from: None,
                    to: 1,
                },
                TransferToAgent {
                    conversation: 0,
                    from: None,
                    to: 1,
                },
                AcceptOpen { index: 0 },
                TransferToAgent {
                    conversation: 0,
                    from: None,
                    to: 0,
                },
                DeclineOpen { index: 0 },
                TransferToAgent {
                    conversation: 0,
                    from: None,
                    to: 0,
                },
                Tick(Step::OfferTimeout),
                TransferToAgent {
                    conversation: 0,
                    from: Some(0),
                    to: 2,
                },
                TransferToAgent {
                    conversation: 0,
                    from: None,
                    to: 2,
                },
            ]),
        ),
        (
            "transfer-to-department",
            scenario(vec![
                Enqueue {
                    conversation: 0,
                    request: support_en,
                },
                AcceptOpen { index: 0 },
                TransferToDepartment {
                    conversation: 0,
                    from: None,
                    department: 1,
                },
                AcceptOpen { index: 0 },
                TransferToDepartment {
                    conversation: 0,
                    from: None,
                    department: 0,
                },
                DeclineOpen { index: 0 },
                Tick(Step::TransferTimeout),
                TransferToDepartment {
                    conversation: 0,
                    from: None,
                    department: 2,
                },
                Enqueue {
                    conversation: 1,
                    request: support_en,
                },
                Tick(Step::TransferTimeout),
            ]),
        ),
        (
            "take-over-requeue-remove",
            scenario(vec![
                Upsert {
                    agent: 3,
                    languages: EN,
                    departments: SUPPORT,
                    capacity: 1,
                },
                Enqueue {
                    conversation: 0,
                    request: support_en,
                },
                Enqueue {
                    conversation: 1,
                    request: support_en,
                },
                TakeOver {
                    conversation: 0,
                    agent: 3,
                },
                TakeOver {
                    conversation: 1,
                    agent: 3,
                },
                TransferToDepartment {
                    conversation: 1,
                    from: None,
                    department: 0,
                },
                TakeOver {
                    conversation: 1,
                    agent: 3,
                },
                TransferToAgent {
                    conversation: 1,
                    from: None,
                    to: 0,
                },
                TakeOver {
                    conversation: 1,
                    agent: 0,
                },
                Requeue {
                    conversation: 1,
                    request: support_en,
                },
                Remove { agent: 3 },
                Remove { agent: 0 },
                Remove { agent: 3 },
            ]),
        ),
        (
            "restore-above-capacity",
            scenario(vec![
                Restore {
                    conversation: 0,
                    agent: 0,
                    request: support_en,
                },
                Restore {
                    conversation: 1,
                    agent: 0,
                    request: support_en,
                },
                Restore {
                    conversation: 2,
                    agent: 0,
                    request: support_en,
                },
                Restore {
                    conversation: 2,
                    agent: 1,
                    request: support_en,
                },
                Restore {
                    conversation: 3,
                    agent: 3,
                    request: support_en,
                },
                Enqueue {
                    conversation: 4,
                    request: support_en,
                },
                Release { conversation: 0 },
                Release { conversation: 1 },
                Enqueue {
                    conversation: 5,
                    request: support_en,
                },
            ]),
        ),
        (
            "profile-changes",
            scenario(vec![
                Enqueue {
                    conversation: 0,
                    request: support_en,
                },
                Enqueue {
                    conversation: 1,
                    request: support_en,
                },
                Enqueue {
                    conversation: 2,
                    request: support_en,
                },
                Upsert {
                    agent: 0,
                    languages: EN,
                    departments: SUPPORT,
                    capacity: 1,
                },
                Upsert {
                    agent: 1,
                    languages: DE,
                    departments: SUPPORT,
                    capacity: 2,
                },
                Upsert {
                    agent: 0,
                    languages: EN,
                    departments: SUPPORT,
                    capacity: 0,
                },
                Upsert {
                    agent: 0,
                    languages: 0,
                    departments: 0,
                    capacity: 3,
                },
                Upsert {
                    agent: 1,
                    languages: EN,
                    departments: SUPPORT,
                    capacity: 3,
                },
            ]),
        ),
        (
            "away-with-a-transfer-offer",
            scenario(vec![
                Enqueue {
                    conversation: 0,
                    request: support_en,
                },
                AcceptOpen { index: 0 },
                TransferToAgent {
                    conversation: 0,
                    from: None,
                    to: 1,
                },
                SetStatus {
                    agent: 1,
                    status: AgentStatus::Away,
                },
                SetStatus {
                    agent: 1,
                    status: AgentStatus::Online,
                },
                TransferToAgent {
                    conversation: 0,
                    from: None,
                    to: 1,
                },
                SetStatus {
                    agent: 1,
                    status: AgentStatus::Offline,
                },
                Enqueue {
                    conversation: 1,
                    request: payments_de,
                },
                SetStatus {
                    agent: 2,
                    status: AgentStatus::Away,
                },
            ]),
        ),
        (
            "estimates",
            scenario(vec![
                RecordHandleTime {
                    department: 0,
                    ms: 60_000,
                },
                RecordHandleTime {
                    department: 0,
                    ms: 1_000,
                },
                Enqueue {
                    conversation: 0,
                    request: support_en,
                },
                Enqueue {
                    conversation: 1,
                    request: support_en,
                },
                Enqueue {
                    conversation: 2,
                    request: support_en,
                },
                Enqueue {
                    conversation: 3,
                    request: support_en,
                },
                Enqueue {
                    conversation: 4,
                    request: support_en,
                },
                Enqueue {
                    conversation: 5,
                    request: support_en,
                },
                AcceptOpen { index: 0 },
                Advance(Step::Millis(30_000)),
                Release { conversation: 0 },
                Enqueue {
                    conversation: 6,
                    request: req(2, 2, 3),
                },
                Enqueue {
                    conversation: 7,
                    request: payments_de,
                },
            ]),
        ),
        (
            "earlier-offers",
            scenario(vec![
                // Nobody serves vip in French: queued without an offer.
                Enqueue {
                    conversation: 0,
                    request: req(2, 2, 0),
                },
                // An agent this router does not know declines an earlier offer.
                DeclineEarlier {
                    conversation: 0,
                    agent: 3,
                },
                AcceptEarlier {
                    conversation: 0,
                    agent: 0,
                },
                Enqueue {
                    conversation: 1,
                    request: support_en,
                },
                DeclineOpen { index: 0 },
                DeclineOpen { index: 0 },
                // Both English agents cooling down: no offer, and none taken.
                AcceptEarlier {
                    conversation: 1,
                    agent: 0,
                },
                // The cooldowns end without a tick: the router has not offered
                // it again, and an earlier router's offer is taken.
                Advance(Step::Cooldown),
                AcceptEarlier {
                    conversation: 1,
                    agent: 1,
                },
                DeclineEarlier {
                    conversation: 1,
                    agent: 0,
                },
                Release { conversation: 1 },
                Release { conversation: 0 },
            ]),
        ),
        ("vip-and-head-lane", vip),
        ("edge-config", edge),
        (
            "restored-queue",
            scenario(vec![
                // A queue rebuilt by a new router: a VIP who waited a while,
                // a conversation put back at the head, one an agent declined
                // moments ago (its cooldown still running), then a new arrival.
                RestoreQueued {
                    conversation: 0,
                    request: req(0, 0, 1),
                    head: false,
                    waited: Step::Millis(30_000),
                    cooldown: None,
                },
                RestoreQueued {
                    conversation: 1,
                    request: support_en,
                    head: true,
                    waited: Step::Millis(5_000),
                    cooldown: Some((0, Step::Millis(20_000))),
                },
                RestoreQueued {
                    conversation: 2,
                    request: support_en,
                    head: false,
                    waited: Step::Long,
                    cooldown: Some((1, Step::Cooldown)),
                },
                RestoreQueued {
                    conversation: 2,
                    request: support_en,
                    head: true,
                    waited: Step::Zero,
                    cooldown: None,
                },
                Enqueue {
                    conversation: 3,
                    request: support_en,
                },
                AcceptOpen { index: 0 },
                DeclineOpen { index: 0 },
                Tick(Step::Millis(20_000)),
                AcceptOpen { index: 0 },
                Tick(Step::Cooldown),
                AcceptOpen { index: 0 },
            ]),
        ),
        (
            "restored-department-transfer",
            scenario(vec![
                // Transfers a new router finds pending: one runs out of what was
                // left of its time, one is accepted; a second restore of the same
                // transfer and one of a queued conversation are refused.
                Restore {
                    conversation: 0,
                    agent: 0,
                    request: support_en,
                },
                RestoreDepartmentTransfer {
                    conversation: 0,
                    from: None,
                    department: 1,
                    left: Step::Millis(3_000),
                },
                RestoreDepartmentTransfer {
                    conversation: 0,
                    from: None,
                    department: 1,
                    left: Step::Millis(3_000),
                },
                Enqueue {
                    conversation: 1,
                    request: support_en,
                },
                RestoreDepartmentTransfer {
                    conversation: 1,
                    from: Some(0),
                    department: 0,
                    left: Step::Zero,
                },
                DeclineOpen { index: 0 },
                Tick(Step::Millis(3_000)),
                Restore {
                    conversation: 2,
                    agent: 0,
                    request: support_en,
                },
                RestoreDepartmentTransfer {
                    conversation: 2,
                    from: None,
                    department: 1,
                    left: Step::Long,
                },
                AcceptOpen { index: 0 },
                AcceptOpen { index: 0 },
            ]),
        ),
    ]
}

#[test]
fn seed_scenarios_encode_to_what_they_say() {
    for (name, scenario) in seeds() {
        let bytes = scenario.to_bytes();
        let decoded = Scenario::arbitrary_take_rest(Unstructured::new(&bytes)).expect(name);
        assert_eq!(
            format!("{decoded:?}"),
            format!("{scenario:?}"),
            "{name} does not survive encoding"
        );
        run(name, &bytes).unwrap();
    }
}

#[test]
#[ignore = "writes the seed files into the corpus"]
fn write_seed_corpus() {
    for (name, scenario) in seeds() {
        std::fs::write(
            corpus_dir().join(format!("seed-{name}")),
            scenario.to_bytes(),
        )
        .expect("write seed");
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 128, ..ProptestConfig::default() })]

    /// The same target, driven by proptest: its shrinking finds the shortest
    /// failing input when something breaks.
    #[test]
    fn any_bytes_keep_every_invariant(data in prop::collection::vec(any::<u8>(), 0..512)) {
        if let Err(broken) = run("proptest input", &data) {
            return Err(TestCaseError::fail(broken));
        }
    }
}
