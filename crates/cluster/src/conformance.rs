//! The backend-neutral conformance suite for [`Bus`], [`Lease`] and [`Presence`]:
//! one async function per behaviour, each given a [`Cluster`] (a factory of nodes
//! sharing one fresh backend). Every backend (memory, Redis) runs all of them, one
//! test per case, or through [`run_all`].
//!
//! It owns the checks, not the backends: a backend's tests make the clusters. The
//! functions panic (assert) on the first broken behaviour, like any test; they are
//! plain library code so that another crate's tests can run them. Waits poll with a
//! deadline ([`DEADLINE`]); no sleep stands in for a condition.

use crate::{Bus, BusHandler, ClusterError, Envelope, Epoch, Lease, NodePresence, Presence};
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// How long a case waits for something that should happen before it fails. Long
/// enough for a reconnecting Redis client; a passing case never waits for it.
pub const DEADLINE: Duration = Duration::from_secs(20);

/// How often a wait checks its condition.
const POLL: Duration = Duration::from_millis(5);

/// One node's handles on a shared backend.
#[derive(Clone)]
pub struct Node {
    /// Its bus.
    pub bus: Arc<dyn Bus>,
    /// Its lease handle.
    pub lease: Arc<dyn Lease>,
    /// Its presence handle.
    pub presence: Arc<dyn Presence>,
}

/// Attaches nodes to one fresh backend, shared by every node of one case.
#[async_trait::async_trait]
pub trait Cluster: Send + Sync + 'static {
    /// Attaches a node with this id. Each id is asked for once per cluster.
    async fn node(&self, id: &str) -> Node;
}

/// The future of one conformance case.
pub type CaseFuture = Pin<Box<dyn Future<Output = ()> + Send>>;

/// One conformance case: runs against a fresh cluster and panics if the backend
/// breaks the contract.
pub type Case = fn(Arc<dyn Cluster>) -> CaseFuture;

/// Every case, by name, in the order [`run_all`] runs them.
pub fn cases() -> Vec<(&'static str, Case)> {
    macro_rules! case {
        ($name:ident) => {
            (stringify!($name), {
                fn run(cluster: Arc<dyn Cluster>) -> CaseFuture {
                    Box::pin($name(cluster))
                }
                run as Case
            })
        };
    }
    vec![
        case!(bus_subscription_goes_live_with_lost),
        case!(bus_reaches_every_other_node_in_order),
        case!(bus_keeps_each_publishers_order),
        case!(bus_carries_envelopes_intact),
        case!(bus_overflow_fails_fast_and_is_recovered),
        case!(lease_one_holder_among_contenders),
        case!(lease_renewal_keeps_the_epoch),
        case!(lease_lapses_after_ttl_without_renewal),
        case!(lease_release_frees_it_at_once),
        case!(lease_epochs_start_above_the_floor),
        case!(lease_current_epoch_follows_the_ttl),
        case!(presence_lists_the_latest_heartbeats),
        case!(presence_expires_without_heartbeats),
        case!(presence_leave_is_immediate),
    ]
}

/// Runs every case, each on a fresh cluster from `make`. Panics naming the first
/// case that fails.
pub async fn run_all<F, Fut>(make: F)
where
    F: Fn() -> Fut,
    Fut: Future<Output = Arc<dyn Cluster>>,
{
    for (name, case) in cases() {
        tracing::info!(case = name, "cluster conformance case");
        let cluster = make().await;
        // On its own task so a failing assertion can be reported with the case's name.
        if let Err(e) = tokio::spawn(case(cluster)).await {
            let why = if e.is_panic() {
                let payload = e.into_panic();
                payload
                    .downcast_ref::<String>()
                    .cloned()
                    .or_else(|| payload.downcast_ref::<&str>().map(|s| s.to_string()))
                    .unwrap_or_else(|| "panicked".into())
            } else {
                e.to_string()
            };
            panic!("cluster conformance case `{name}` failed: {why}");
        }
    }
}

// ---------------------------------------------------------------------------------
// Tools the cases (and backends' own tests) use.

/// What a [`Recorder`] saw, in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Seen {
    /// [`BusHandler::lost`] was called.
    Lost,
    /// An event was delivered.
    Event(Envelope),
}

/// A [`BusHandler`] for tests: records every call in order. Its log grows with
/// every event: it is meant for tests of bounded length, not for a server.
#[derive(Default)]
pub struct Recorder {
    /// A std mutex held for a push or a copy only.
    log: Mutex<Vec<Seen>>,
}

impl Recorder {
    /// An empty recorder.
    pub fn new() -> Arc<Self> {
        Arc::new(Self::default())
    }

    /// Everything seen so far, in order.
    pub fn log(&self) -> Vec<Seen> {
        self.log.lock().expect("recorder lock poisoned").clone()
    }

    /// The events delivered so far, in order.
    pub fn events(&self) -> Vec<Envelope> {
        self.log
            .lock()
            .expect("recorder lock poisoned")
            .iter()
            .filter_map(|seen| match seen {
                Seen::Event(envelope) => Some(envelope.clone()),
                Seen::Lost => None,
            })
            .collect()
    }

    /// The payloads delivered so far, in order.
    pub fn payloads(&self) -> Vec<String> {
        self.events()
            .iter()
            .map(|e| e.payload.to_string())
            .collect()
    }

    /// How many times `lost()` was called.
    pub fn lost_count(&self) -> usize {
        self.log
            .lock()
            .expect("recorder lock poisoned")
            .iter()
            .filter(|seen| **seen == Seen::Lost)
            .count()
    }

    /// Whether an event with this payload was delivered.
    pub fn has_payload(&self, payload: &str) -> bool {
        self.log
            .lock()
            .expect("recorder lock poisoned")
            .iter()
            .any(|seen| matches!(seen, Seen::Event(e) if &*e.payload == payload))
    }

    /// Waits until `lost()` has been called at least `count` times.
    pub async fn wait_lost(&self, count: usize) {
        eventually(&format!("lost() was called {count} times"), || {
            self.lost_count() >= count
        })
        .await;
    }
}

impl BusHandler for Recorder {
    fn deliver(&self, envelope: Envelope) {
        self.log
            .lock()
            .expect("recorder lock poisoned")
            .push(Seen::Event(envelope));
    }

    fn lost(&self) {
        self.log
            .lock()
            .expect("recorder lock poisoned")
            .push(Seen::Lost);
    }
}

/// Polls `done` until it holds; panics naming `what` after [`DEADLINE`].
pub async fn eventually(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + DEADLINE;
    while !done() {
        assert!(
            Instant::now() < deadline,
            "timed out after {DEADLINE:?} waiting until {what}"
        );
        tokio::time::sleep(POLL).await;
    }
}

/// Subscribes a fresh recorder to `bus` and waits until the subscription is live
/// (the first `lost()` call).
pub async fn subscribe_live(bus: &Arc<dyn Bus>) -> Arc<Recorder> {
    let recorder = Recorder::new();
    bus.subscribe(recorder.clone());
    recorder.wait_lost(1).await;
    recorder
}

/// Publishes, retrying for up to [`DEADLINE`] while the queue is full.
pub async fn publish_patiently(bus: &Arc<dyn Bus>, topic: &str, payload: &str) {
    let deadline = Instant::now() + DEADLINE;
    loop {
        match bus.publish(topic, Arc::from(payload)) {
            Ok(()) => return,
            Err(ClusterError::Full) if Instant::now() < deadline => {
                tokio::time::sleep(POLL).await;
            }
            Err(err) => panic!("cannot publish {payload:?}: {err}"),
        }
    }
}

/// Publishes `<prefix><k>` for k = 0, 1, ... until `seen` has one of them (the bus
/// is at-most-once: a single event may be dropped on the way). Returns the first
/// payload that arrived.
pub async fn publish_until_seen(bus: &Arc<dyn Bus>, seen: &Recorder, prefix: &str) -> String {
    let deadline = Instant::now() + DEADLINE;
    let mut k = 0u64;
    loop {
        match bus.publish("t", Arc::from(format!("{prefix}{k}"))) {
            // A refused attempt is simply made again.
            Ok(()) | Err(ClusterError::Full) => {}
            Err(err) => panic!("cannot publish `{prefix}{k}`: {err}"),
        }
        k += 1;
        tokio::time::sleep(POLL * 4).await;
        if let Some(first) = seen.payloads().into_iter().find(|p| p.starts_with(prefix)) {
            return first;
        }
        assert!(
            Instant::now() < deadline,
            "no `{prefix}` event ever arrived"
        );
    }
}

/// Acquires for `node`, retrying until it holds the lease; returns the epoch and
/// when it got it.
async fn acquire_eventually(lease: &Arc<dyn Lease>, ttl_ms: u64) -> (Epoch, Instant) {
    let deadline = Instant::now() + DEADLINE;
    loop {
        if let Some(epoch) = lease.acquire_or_renew(ttl_ms).await.expect("acquire") {
            return (epoch, Instant::now());
        }
        assert!(Instant::now() < deadline, "the lease never became free");
        tokio::time::sleep(POLL).await;
    }
}

fn nodes_of(alive: &[NodePresence]) -> Vec<&str> {
    alive.iter().map(|p| p.node.as_str()).collect()
}

// ---------------------------------------------------------------------------------
// The bus.

/// Subscribing calls `lost()` once the subscription is live, and delivers nothing
/// when nobody publishes.
pub async fn bus_subscription_goes_live_with_lost(cluster: Arc<dyn Cluster>) {
    let a = cluster.node("a").await;
    let seen = subscribe_live(&a.bus).await;
    assert_eq!(seen.log(), vec![Seen::Lost]);
    assert_eq!(a.bus.node(), "a");
}

/// Every other subscribed node gets every event, in publish order, with its sender
/// and topic; the publisher does not get its own events.
pub async fn bus_reaches_every_other_node_in_order(cluster: Arc<dyn Cluster>) {
    let a = cluster.node("a").await;
    let b = cluster.node("b").await;
    let c = cluster.node("c").await;
    let seen_a = subscribe_live(&a.bus).await;
    let seen_b = subscribe_live(&b.bus).await;
    let seen_c = subscribe_live(&c.bus).await;

    let expected: Vec<String> = (0..1000).map(|i| format!("a:{i}")).collect();
    for payload in &expected {
        publish_patiently(&a.bus, "conversation-1", payload).await;
    }
    for (name, seen) in [("b", &seen_b), ("c", &seen_c)] {
        eventually(&format!("{name} got all of a's events"), || {
            seen.events().len() >= expected.len()
        })
        .await;
        let events = seen.events();
        assert_eq!(
            seen.payloads(),
            expected,
            "{name} got a's events out of order"
        );
        assert!(events
            .iter()
            .all(|e| e.from == "a" && e.topic == "conversation-1"));
        assert_eq!(seen.lost_count(), 1, "{name} was told it lost events");
    }

    // b's marker is published after all of a's events reached Redis (c has them),
    // so once a has the marker, it would have had its own events before it.
    publish_patiently(&b.bus, "conversation-1", "marker").await;
    eventually("a got b's marker", || seen_a.has_payload("marker")).await;
    assert_eq!(seen_a.payloads(), vec!["marker".to_owned()]);
    assert_eq!(seen_a.events()[0].from, "b");
}

/// Events of two publishers interleave at a receiver, each in its own publish order.
pub async fn bus_keeps_each_publishers_order(cluster: Arc<dyn Cluster>) {
    let a = cluster.node("a").await;
    let b = cluster.node("b").await;
    let c = cluster.node("c").await;
    let seen = subscribe_live(&c.bus).await;
    for i in 0..500 {
        publish_patiently(&a.bus, "t", &format!("a:{i}")).await;
        publish_patiently(&b.bus, "t", &format!("b:{i}")).await;
    }
    eventually("c got both publishers' events", || {
        seen.events().len() >= 1000
    })
    .await;
    let events = seen.events();
    assert_eq!(events.len(), 1000);
    for from in ["a", "b"] {
        let got: Vec<String> = events
            .iter()
            .filter(|e| e.from == from)
            .map(|e| e.payload.to_string())
            .collect();
        let expected: Vec<String> = (0..500).map(|i| format!("{from}:{i}")).collect();
        assert_eq!(got, expected, "{from}'s events out of order");
    }
}

/// Node ids, topics and payloads arrive byte for byte: spaces, newlines, non-ASCII
/// text, empty strings and a large payload.
pub async fn bus_carries_envelopes_intact(cluster: Arc<dyn Cluster>) {
    let a = cluster.node("node a/1 ñ").await;
    let b = cluster.node("b").await;
    let seen = subscribe_live(&b.bus).await;
    let large = "x".repeat(256 * 1024);
    let sent: Vec<(&str, &str)> = vec![
        (
            "conversation-7",
            r#"{"type":"typing","text":"a \"quote\""}"#,
        ),
        ("topic with spaces\nand a newline", "line one\nline two"),
        ("", ""),
        ("ünïcödé 😀", "PB1 0 0 0 0 0\nlooks like a header"),
        ("large", &large),
    ];
    for (topic, payload) in &sent {
        publish_patiently(&a.bus, topic, payload).await;
    }
    eventually("b got every envelope", || seen.events().len() >= sent.len()).await;
    let got = seen.events();
    assert_eq!(got.len(), sent.len());
    for (envelope, (topic, payload)) in got.iter().zip(&sent) {
        assert_eq!(envelope.from, "node a/1 ñ");
        assert_eq!(envelope.topic, *topic);
        assert_eq!(&*envelope.payload, *payload);
    }
}

/// A burst that outruns the bus never blocks the publisher: what does not fit is
/// refused with [`ClusterError::Full`] or dropped, and counted in
/// [`Bus::dropped`]; the receiver gets what it gets in order, nothing twice, and is
/// told through `lost()` before it sees a later event.
pub async fn bus_overflow_fails_fast_and_is_recovered(cluster: Arc<dyn Cluster>) {
    const BURST: usize = 100_000;
    let a = cluster.node("a").await;
    let b = cluster.node("b").await;
    let seen = subscribe_live(&b.bus).await;

    let mut refused = 0u64;
    for i in 0..BURST {
        match a.bus.publish("t", Arc::from(i.to_string())) {
            Ok(()) => {}
            Err(ClusterError::Full) => refused += 1,
            Err(err) => panic!("publishing in a burst failed with {err}"),
        }
    }
    let dropped = a.bus.dropped();
    assert!(dropped > 0, "a burst of {BURST} events dropped none");
    assert!(
        dropped >= refused,
        "refused events must be counted as dropped"
    );

    let first_marker = publish_until_seen(&a.bus, &seen, "marker:").await;
    let log = seen.log();
    let marker = log
        .iter()
        .position(|s| matches!(s, Seen::Event(e) if *e.payload == *first_marker))
        .expect("marker seen");
    let second_lost = log
        .iter()
        .enumerate()
        .filter(|(_, s)| **s == Seen::Lost)
        .nth(1)
        .map(|(i, _)| i);
    assert!(
        second_lost.is_some_and(|i| i < marker),
        "b was not told it lost events before the marker"
    );
    let burst: Vec<usize> = log[..marker]
        .iter()
        .filter_map(|s| match s {
            Seen::Event(e) => Some(e.payload.parse().expect("burst payload")),
            Seen::Lost => None,
        })
        .collect();
    assert!(
        burst.windows(2).all(|w| w[0] < w[1]),
        "burst events out of order or repeated"
    );
    assert!(
        burst.len() as u64 + dropped <= BURST as u64,
        "{} delivered and {dropped} dropped of {BURST}",
        burst.len()
    );
}

// ---------------------------------------------------------------------------------
// The lease.

/// Of several nodes trying at once, exactly one gets the lease; the others see it
/// held, and only the holder has a current epoch.
pub async fn lease_one_holder_among_contenders(cluster: Arc<dyn Cluster>) {
    let mut nodes = Vec::new();
    for i in 0..5 {
        nodes.push(cluster.node(&format!("n{i}")).await);
    }
    let mut tries = tokio::task::JoinSet::new();
    for (i, node) in nodes.iter().enumerate() {
        let lease = node.lease.clone();
        tries.spawn(async move { (i, lease.acquire_or_renew(10_000).await.expect("acquire")) });
    }
    let mut holders = Vec::new();
    while let Some(joined) = tries.join_next().await {
        let (i, got) = joined.expect("acquire task");
        if let Some(epoch) = got {
            holders.push((i, epoch));
        }
    }
    assert_eq!(holders.len(), 1, "holders: {holders:?}");
    let (holder, epoch) = holders[0];
    for (i, node) in nodes.iter().enumerate() {
        if i == holder {
            assert_eq!(node.lease.current_epoch(), Some(epoch));
        } else {
            assert_eq!(node.lease.current_epoch(), None);
            assert_eq!(
                node.lease.acquire_or_renew(10_000).await.expect("retry"),
                None
            );
        }
    }
}

/// Renewing within the ttl keeps the same epoch, and keeps the others out.
pub async fn lease_renewal_keeps_the_epoch(cluster: Arc<dyn Cluster>) {
    let a = cluster.node("a").await;
    let b = cluster.node("b").await;
    let epoch = a.lease.acquire_or_renew(5_000).await.expect("acquire");
    assert!(epoch.is_some());
    for _ in 0..5 {
        assert_eq!(a.lease.acquire_or_renew(5_000).await.expect("renew"), epoch);
        assert_eq!(
            b.lease.acquire_or_renew(5_000).await.expect("contend"),
            None
        );
    }
    assert_eq!(a.lease.current_epoch(), epoch);
}

/// A holder that stops renewing loses the lease once its ttl has passed, not
/// before; the next holder's epoch is greater, and the old holder is refused.
pub async fn lease_lapses_after_ttl_without_renewal(cluster: Arc<dyn Cluster>) {
    const TTL_MS: u64 = 300;
    let a = cluster.node("a").await;
    let b = cluster.node("b").await;
    let before = Instant::now();
    let first = a
        .lease
        .acquire_or_renew(TTL_MS)
        .await
        .expect("acquire")
        .expect("a free lease is granted");
    let (second, got_at) = acquire_eventually(&b.lease, TTL_MS).await;
    // Redis counts whole milliseconds on its own clock: allow a little.
    let slack = Duration::from_millis(15);
    assert!(
        got_at + slack >= before + Duration::from_millis(TTL_MS),
        "b got the lease {:?} after a took it, before its ttl of {TTL_MS} ms",
        got_at - before
    );
    assert!(second > first, "epoch {second:?} after {first:?}");
    assert_eq!(a.lease.acquire_or_renew(TTL_MS).await.expect("retry"), None);
    assert_eq!(a.lease.current_epoch(), None);
    assert_eq!(b.lease.current_epoch(), Some(second));
}

/// Releasing frees the lease at once for another node, with a greater epoch; a
/// release by a node that does not hold it changes nothing.
pub async fn lease_release_frees_it_at_once(cluster: Arc<dyn Cluster>) {
    let a = cluster.node("a").await;
    let b = cluster.node("b").await;
    let c = cluster.node("c").await;
    let first = a
        .lease
        .acquire_or_renew(60_000)
        .await
        .expect("a")
        .expect("free");
    assert_eq!(b.lease.acquire_or_renew(60_000).await.expect("b"), None);
    a.lease.release().await.expect("release");
    assert_eq!(a.lease.current_epoch(), None);
    let second = b
        .lease
        .acquire_or_renew(60_000)
        .await
        .expect("b")
        .expect("released");
    assert!(second > first, "epoch {second:?} after {first:?}");

    a.lease.release().await.expect("a release by a non-holder");
    assert_eq!(c.lease.acquire_or_renew(60_000).await.expect("c"), None);
    assert_eq!(
        b.lease.acquire_or_renew(60_000).await.expect("renew"),
        Some(second)
    );
}

/// A new term starts above the floor given by the caller, and the next holder's
/// epoch is greater still; a renewal keeps its epoch whatever the floor.
pub async fn lease_epochs_start_above_the_floor(cluster: Arc<dyn Cluster>) {
    let a = cluster.node("a").await;
    let b = cluster.node("b").await;
    a.lease.raise_epoch_floor(Epoch(1_000));
    a.lease.raise_epoch_floor(Epoch(10)); // lowering has no effect
    let first = a
        .lease
        .acquire_or_renew(60_000)
        .await
        .expect("a")
        .expect("free");
    assert!(first > Epoch(1_000), "epoch {first:?} not above the floor");
    a.lease.release().await.expect("release");
    let second = b
        .lease
        .acquire_or_renew(60_000)
        .await
        .expect("b")
        .expect("free");
    assert!(second > first, "epoch {second:?} after {first:?}");

    b.lease.raise_epoch_floor(Epoch(5_000));
    assert_eq!(
        b.lease.acquire_or_renew(60_000).await.expect("renew"),
        Some(second)
    );
    b.lease.release().await.expect("release");
    let third = b
        .lease
        .acquire_or_renew(60_000)
        .await
        .expect("b")
        .expect("free");
    assert!(third > Epoch(5_000), "epoch {third:?} not above the floor");
}

/// `current_epoch` is the held term until the ttl of the last grant runs out by
/// the holder's clock, and ends with a release.
pub async fn lease_current_epoch_follows_the_ttl(cluster: Arc<dyn Cluster>) {
    const TTL_MS: u64 = 200;
    let a = cluster.node("a").await;
    assert_eq!(a.lease.current_epoch(), None);
    let granted_before = Instant::now();
    let epoch = a.lease.acquire_or_renew(TTL_MS).await.expect("a");
    assert!(epoch.is_some());
    assert_eq!(a.lease.current_epoch(), epoch);
    eventually("the term ran out", || a.lease.current_epoch().is_none()).await;
    assert!(
        granted_before.elapsed() >= Duration::from_millis(TTL_MS),
        "the term ended before its ttl"
    );
    let again = a.lease.acquire_or_renew(60_000).await.expect("a");
    assert!(again.is_some());
    a.lease.release().await.expect("release");
    assert_eq!(a.lease.current_epoch(), None);
}

// ---------------------------------------------------------------------------------
// Presence.

/// Every node that heartbeats is listed, sorted, with the agents of its latest
/// heartbeat (which replaces the previous one).
pub async fn presence_lists_the_latest_heartbeats(cluster: Arc<dyn Cluster>) {
    let a = cluster.node("a").await;
    let b = cluster.node("b").await;
    assert_eq!(a.presence.alive().await.expect("alive"), vec![]);
    b.presence.heartbeat(vec![], 60_000).await.expect("b");
    a.presence
        .heartbeat(vec!["agent-1".into(), "agent 2 ñ".into()], 60_000)
        .await
        .expect("a");
    let alive = b.presence.alive().await.expect("alive");
    assert_eq!(
        alive,
        vec![
            NodePresence {
                node: "a".into(),
                agents: vec!["agent-1".into(), "agent 2 ñ".into()],
            },
            NodePresence {
                node: "b".into(),
                agents: vec![],
            },
        ]
    );
    a.presence
        .heartbeat(vec!["agent-3".into()], 60_000)
        .await
        .expect("a");
    let alive = a.presence.alive().await.expect("alive");
    assert_eq!(alive[0].agents, vec!["agent-3".to_owned()]);
    assert_eq!(nodes_of(&alive), vec!["a", "b"]);
}

/// A node whose heartbeats stop disappears once its ttl has passed, not before;
/// the others stay.
pub async fn presence_expires_without_heartbeats(cluster: Arc<dyn Cluster>) {
    const TTL_MS: u64 = 300;
    let a = cluster.node("a").await;
    let b = cluster.node("b").await;
    a.presence
        .heartbeat(vec!["agent-a".into()], 60_000)
        .await
        .expect("a");
    let before = Instant::now();
    b.presence
        .heartbeat(vec!["agent-b".into()], TTL_MS)
        .await
        .expect("b");
    assert_eq!(
        nodes_of(&a.presence.alive().await.expect("alive")),
        vec!["a", "b"]
    );
    let deadline = Instant::now() + DEADLINE;
    loop {
        let alive = a.presence.alive().await.expect("alive");
        if nodes_of(&alive) == vec!["a"] {
            break;
        }
        assert!(Instant::now() < deadline, "b never expired: {alive:?}");
        tokio::time::sleep(POLL).await;
    }
    assert!(
        before.elapsed() + Duration::from_millis(15) >= Duration::from_millis(TTL_MS),
        "b expired {:?} after its heartbeat, before its ttl of {TTL_MS} ms",
        before.elapsed()
    );
    // A heartbeat brings it back.
    b.presence.heartbeat(vec![], 60_000).await.expect("b");
    assert_eq!(
        nodes_of(&a.presence.alive().await.expect("alive")),
        vec!["a", "b"]
    );
}

/// Leaving removes a node at once.
pub async fn presence_leave_is_immediate(cluster: Arc<dyn Cluster>) {
    let a = cluster.node("a").await;
    let b = cluster.node("b").await;
    a.presence.heartbeat(vec![], 60_000).await.expect("a");
    b.presence
        .heartbeat(vec!["agent-b".into()], 60_000)
        .await
        .expect("b");
    b.presence.leave().await.expect("leave");
    assert_eq!(
        nodes_of(&a.presence.alive().await.expect("alive")),
        vec!["a"]
    );
    b.presence.leave().await.expect("leaving twice is harmless");
}
