//! The PostgreSQL backend: the backend-neutral conformance suite, then what only
//! PostgreSQL has: several nodes (stores) writing to one database at once, the
//! durability setting, reconnecting, the deadlock retry and the unique-index
//! backstop for resends, and the same group-commit, savepoint, queue and shutdown
//! behaviour the SQLite backend is held to.
//!
//! Every test runs against a private server this test process starts on first use
//! (`support::private_postgres`: `initdb` in a temporary directory, a free loopback
//! port, trust authentication) and that is stopped and deleted when the process
//! ends, however it ends. Each test, and each conformance case, gets an empty
//! database of its own. Without PostgreSQL's server binaries the tests fail, naming
//! the package to install: they are never skipped.
//!
//! The group-commit and queue tests run on tokio's current-thread runtime on
//! purpose: every write future is polled (and so queued with `try_send`) before the
//! writer task can run, which makes batch membership and a full queue deterministic
//! instead of a matter of timing.

mod support;

use futures_util::future::join_all;
use futures_util::FutureExt;
use pitboss_protocol::{
    AgentId, ConversationId, ConversationState, MessageKind, Participant, PlayerCard, PlayerId,
    Role, Seq,
};
use pitboss_transcripts::postgres::{PostgresOptions, PostgresStore, WRITER_APPLICATION_NAME};
use pitboss_transcripts::{
    conformance, now_ms, AgentAccount, Applied, Change, CommitObserver, Expect, Fence, Handoff,
    LifecycleEvent, LifecycleKind, NewConversation, NewEntry, SetState, Store, StoreError,
    StoredEntry, PURGE_CHUNK,
};
use sqlx::{Connection, PgConnection};
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use support::private_postgres::PrivatePostgres;
use tokio::task::JoinSet;

/// A new, empty database on the private server; its URL. The server is started by
/// the first caller; `initdb` and `createdb` are blocking tools, run off the runtime.
async fn fresh_database() -> String {
    match tokio::task::spawn_blocking(|| PrivatePostgres::shared().create_database()).await {
        Ok(url) => url,
        // Keep the launcher's own message (what to install, the server's log).
        Err(e) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
        Err(e) => panic!("creating a database: {e}"),
    }
}

/// Two stores (two nodes) on one new, empty database.
async fn two_nodes() -> [Arc<PostgresStore>; 2] {
    let url = fresh_database().await;
    [
        connect(&url, PostgresOptions::default()).await,
        connect(&url, PostgresOptions::default()).await,
    ]
}

/// Connects a store (one node) to `url`.
async fn connect(url: &str, options: PostgresOptions) -> Arc<PostgresStore> {
    PostgresStore::connect(url, options)
        .await
        .expect("connect store")
}

/// A store on a database of its own.
async fn open(options: PostgresOptions) -> (String, Arc<PostgresStore>) {
    let url = fresh_database().await;
    let store = connect(&url, options).await;
    (url, store)
}

// ---------------------------------------------------------------------------------
// The conformance suite, one test per case so a failure names its behaviour.

macro_rules! conformance_tests {
    ($($case:ident),* $(,)?) => {
        /// The cases given a test of their own here.
        const NAMED: &[&str] = &[$(stringify!($case)),*];
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $case() {
                let (_, store) = open(PostgresOptions::default()).await;
                conformance::$case(store.clone()).await;
                store.shutdown().await;
            }
        )*
    };
}

conformance_tests!(
    create_and_read_back,
    seq_gap_free_under_concurrency,
    seq_gap_free_across_conversations,
    prev_public_skips_notes,
    read_marks_only_rise_within_what_each_side_sees,
    idempotent_resend,
    client_id_conflict,
    client_id_scoped_by_sender,
    unknown_conversation_not_found,
    precondition_mismatch_writes_nothing,
    rating_once,
    entries_paging,
    observer_sees_every_entry_once,
    events_and_handoffs_recorded,
    agents_crud,
    ended_sessions_only_rise_and_outlive_a_replace,
    an_admin_always_remains,
    secret_get_or_create,
    catalog_per_kind_and_language,
    set_state_moves_department,
    resend_recognised_before_precondition,
    an_entry_is_refused_once_its_sender_may_no_longer_write,
    open_conversations_exclude_closed,
    open_limit_holds_per_player,
    open_conversations_ordered_by_creation_then_id,
    conversations_filtered_newest_first,
    recent_handle_times,
    queue_events_of_queued_conversations,
    transfer_events_of_active_conversations,
    writes_after_shutdown_unavailable,
    fence_at_or_above_recorded_epoch_applies,
    fence_below_recorded_epoch_writes_nothing,
    fence_checked_after_resend_and_expect_before_capacity,
    raise_routing_epoch_is_monotonic,
    fence_capacity_of_limits_active_conversations,
    audit_records_listed_newest_first_with_filters,
    audit_purge_deletes_only_older_records_in_chunks,
    audit_limit_is_capped,
    purge_deletes_only_closed_and_old_enough,
    purge_works_in_chunks,
    export_gathers_everything_of_one_player,
    an_export_is_one_snapshot,
    kpi_rows_read_each_conversation_s_figures,
    erase_removes_one_player_only,
    erase_refused_while_a_conversation_is_open,
);

/// A case added to the suite but not here would only run through `run_all`; this
/// keeps the per-case tests complete.
#[test]
fn every_conformance_case_has_a_test() {
    let all: Vec<&str> = conformance::cases().iter().map(|(name, _)| *name).collect();
    assert_eq!(all, NAMED);
}

/// `run_all`, with a fresh database per case.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn conformance_run_all() {
    let made = AtomicUsize::new(0);
    conformance::run_all(|| {
        made.fetch_add(1, Ordering::Relaxed);
        async {
            let url = fresh_database().await;
            let store: Arc<dyn Store> = connect(&url, PostgresOptions::default()).await;
            store
        }
    })
    .await;
    assert_eq!(made.load(Ordering::Relaxed), conformance::cases().len());
}

// ---------------------------------------------------------------------------------
// Several nodes on one database.

/// Two nodes append to one conversation at once: fresh messages on each, the same
/// message resent to both (a client that reconnected elsewhere), and one client id
/// sent to both with different text. Sequence numbers come out unique and gap-free,
/// each resend is stored once and both nodes answer with that one entry, each
/// conflicting pair has exactly one winner, and each node's observer is told of
/// exactly the entries that node stored, in order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_nodes_append_gap_free_and_resolve_resends() {
    const FRESH: usize = 150;
    const RESENT: usize = 25;
    const CONFLICTING: usize = 25;
    let nodes = two_nodes().await;
    let recorders = [Arc::new(Recorder::default()), Arc::new(Recorder::default())];
    for (node, recorder) in nodes.iter().zip(&recorders) {
        node.set_observer(recorder.clone());
    }
    let id = create(&nodes[0]).await;

    /// What one append was.
    #[derive(Debug, Clone, Copy)]
    enum Sent {
        Fresh,
        Resent(usize),
        Conflicting(usize),
    }
    let mut tasks = JoinSet::new();
    let mut spawn = |node: usize, sent: Sent, entry: NewEntry| {
        let store = nodes[node].clone();
        tasks.spawn(async move { (node, sent, store.apply(Change::append(id, entry)).await) });
    };
    for i in 0..FRESH {
        for node in 0..2 {
            spawn(node, Sent::Fresh, text(&format!("n{node}-{i}"), "fresh"));
        }
        if i < RESENT {
            for node in 0..2 {
                spawn(node, Sent::Resent(i), text(&format!("r{i}"), "same words"));
            }
        }
        if i < CONFLICTING {
            for node in 0..2 {
                spawn(
                    node,
                    Sent::Conflicting(i),
                    text(&format!("c{i}"), &format!("node {node}")),
                );
            }
        }
    }

    let mut stored_by = [Vec::new(), Vec::new()];
    let mut resends: BTreeMap<usize, Vec<(bool, StoredEntry)>> = BTreeMap::new();
    let mut conflicts: BTreeMap<usize, (usize, usize)> = BTreeMap::new();
    while let Some(joined) = tasks.join_next().await {
        let (node, sent, result) = joined.expect("task");
        match (sent, result) {
            (Sent::Conflicting(i), Err(StoreError::Conflict)) => {
                conflicts.entry(i).or_default().1 += 1
            }
            (_, Err(e)) => panic!("node {node}, {sent:?}: {e:?}"),
            (_, Ok(applied)) => {
                let appended = applied.appended.expect("an append reports its entry");
                match sent {
                    Sent::Resent(i) => resends
                        .entry(i)
                        .or_default()
                        .push((appended.duplicate, appended.entry.clone())),
                    Sent::Conflicting(i) => conflicts.entry(i).or_default().0 += 1,
                    Sent::Fresh => assert!(!appended.duplicate, "a fresh id is no resend"),
                }
                if !appended.duplicate {
                    stored_by[node].push(appended.entry);
                }
            }
        }
    }

    for (i, answers) in &resends {
        assert_eq!(answers.len(), 2, "resend {i}: both nodes answered");
        assert_eq!(
            answers.iter().filter(|(duplicate, _)| !duplicate).count(),
            1,
            "resend {i}: stored by exactly one node"
        );
        assert_eq!(answers[0].1, answers[1].1, "resend {i}: one entry");
    }
    assert_eq!(resends.len(), RESENT);
    for (i, (won, lost)) in &conflicts {
        assert_eq!(
            (won, lost),
            (&1, &1),
            "client id c{i}: one winner, one conflict"
        );
    }
    assert_eq!(conflicts.len(), CONFLICTING);

    let total = 2 * FRESH + RESENT + CONFLICTING;
    let mut all: Vec<StoredEntry> = stored_by.iter().flatten().cloned().collect();
    all.sort_by_key(|e| e.seq);
    let seqs: Vec<Seq> = all.iter().map(|e| e.seq).collect();
    assert_eq!(
        seqs,
        (1..=total as Seq).collect::<Vec<_>>(),
        "unique and gap-free across both nodes"
    );
    let stored = nodes[1]
        .entries(id, 0, 10_000, true)
        .await
        .expect("entries");
    assert_eq!(stored, all, "stored exactly as acknowledged");
    let record = nodes[0]
        .conversation(id)
        .await
        .expect("read")
        .expect("found");
    assert_eq!(record.summary.last_seq, total as Seq);

    for (node, recorder) in recorders.iter().enumerate() {
        let seen: Vec<StoredEntry> = recorder.seen().into_iter().map(|(e, _)| e).collect();
        let mut mine = stored_by[node].clone();
        mine.sort_by_key(|e| e.seq);
        assert_eq!(
            seen, mine,
            "node {node}'s observer saw exactly its own entries, in commit order"
        );
    }
    for node in nodes {
        node.shutdown().await;
    }
}

/// The compare-and-set that fences a deposed router holds across nodes: twenty
/// claims on one queued conversation, spread over two nodes, have exactly one winner
/// and the losers leave no trace.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_nodes_racing_one_claim_have_one_winner() {
    let nodes = two_nodes().await;
    let new = new_conversation();
    let id = new.id;
    nodes[0].create_conversation(new).await.expect("create");

    let mut tasks = JoinSet::new();
    for i in 0..20 {
        let store = nodes[i % 2].clone();
        let me = format!("agent{i}");
        tasks.spawn(async move {
            let claim = Change {
                conversation: id,
                expect: Some(Expect {
                    state: ConversationState::Queued,
                    agent: None,
                }),
                set: Some(SetState {
                    state: ConversationState::Active,
                    agent: Some(AgentId(me.clone())),
                    close_reason: None,
                    department: None,
                }),
                entry: Some(system_event("assigned")),
                events: vec![LifecycleEvent {
                    agent: Some(AgentId(me.clone())),
                    ..event(LifecycleKind::Assigned)
                }],
                ..Change::default()
            };
            (me, store.apply(claim).await)
        });
    }
    let mut winners = Vec::new();
    while let Some(joined) = tasks.join_next().await {
        match joined.expect("task") {
            (me, Ok(_)) => winners.push(me),
            (_, Err(StoreError::Precondition)) => {}
            (_, Err(e)) => panic!("a losing claim must fail with Precondition, got {e:?}"),
        }
    }
    assert_eq!(winners.len(), 1, "exactly one claim wins: {winners:?}");
    let record = nodes[1]
        .conversation(id)
        .await
        .expect("read")
        .expect("found");
    assert_eq!(record.summary.agent, Some(AgentId(winners[0].clone())));
    assert_eq!(record.summary.last_seq, 1, "only the winner's entry");
    let events = nodes[1].events(id).await.expect("events");
    assert_eq!(events.len(), 2, "queued, and the winner's assigned");
    for node in nodes {
        node.shutdown().await;
    }
}

/// Nodes starting at once each offer their own fresh secret; all get the same one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_nodes_racing_for_a_secret_share_one() {
    let nodes = two_nodes().await;
    let mut tasks = JoinSet::new();
    for i in 0..20u8 {
        let store = nodes[usize::from(i % 2)].clone();
        tasks.spawn(async move { store.secret("jwt", vec![i; 32]).await });
    }
    let mut values = Vec::new();
    while let Some(joined) = tasks.join_next().await {
        values.push(joined.expect("task").expect("secret"));
    }
    assert!(
        values.windows(2).all(|w| w[0] == w[1]),
        "racing nodes get one secret"
    );
    for node in nodes {
        node.shutdown().await;
    }
}

/// A player's first chat started on two nodes at the same moment, round after
/// round (a new player each round): one creation passes and the other is refused
/// `PlayerBusy`. Each node's check would see no open conversation until the
/// other's commits, so without creations for one player taking turns both would
/// pass.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_nodes_starting_one_players_chat_open_one() {
    let nodes = two_nodes().await;
    for round in 0..25 {
        let player = PlayerId(format!("p:tabs-{round}"));
        let barrier = Arc::new(tokio::sync::Barrier::new(2));
        let start = |node: &Arc<PostgresStore>| {
            let (node, barrier) = (node.clone(), barrier.clone());
            let new = NewConversation {
                player: PlayerCard {
                    id: player.clone(),
                    ..new_conversation().player
                },
                open_limit: Some(3),
                ..new_conversation()
            };
            tokio::spawn(async move {
                barrier.wait().await;
                node.create_conversation(new).await
            })
        };
        let (first, second) = (start(&nodes[0]), start(&nodes[1]));
        let (first, second) = (first.await.expect("task"), second.await.expect("task"));
        let open = nodes[0]
            .conversations(pitboss_transcripts::ConversationFilter {
                player: Some(player.clone()),
                ..pitboss_transcripts::ConversationFilter::default()
            })
            .await
            .expect("list");
        assert_eq!(
            open.len(),
            1,
            "round {round}: {first:?} {second:?} opened {}",
            open.len()
        );
        assert!(
            matches!(first, Err(StoreError::PlayerBusy))
                != matches!(second, Err(StoreError::PlayerBusy)),
            "round {round}: exactly one refused: {first:?} {second:?}"
        );
    }
    for node in nodes {
        node.shutdown().await;
    }
}

/// Two admins, each removed by a different node at the same moment, round after
/// round: one of them stays admin every time. Each node's check sees the other's
/// admin until that removal commits, so without the nodes taking turns both
/// removals would pass and leave no admin.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_nodes_removing_each_others_admin_leave_one() {
    let nodes = two_nodes().await;
    let admin = |id: String| AgentAccount {
        id: AgentId(id.clone()),
        name: id,
        password_hash: "$argon2id$v=19$m=19456,t=2,p=1$c2FsdA$aGFzaA".into(),
        role: Role::Admin,
        languages: vec!["en".into()],
        departments: vec!["general".into()],
        capacity: 3,
        created_at: 1_700_000_000_000,
        sessions_ended_at: 0,
    };
    let mut survivor = admin("admin-0".into());
    nodes[0]
        .put_agent(survivor.clone())
        .await
        .expect("first admin");
    for round in 1..=25 {
        let newcomer = admin(format!("admin-{round}"));
        nodes[1]
            .put_agent(newcomer.clone())
            .await
            .expect("second admin");
        let barrier = Arc::new(tokio::sync::Barrier::new(2));
        let remove = |node: &Arc<PostgresStore>, id: AgentId| {
            let (node, barrier) = (node.clone(), barrier.clone());
            tokio::spawn(async move {
                barrier.wait().await;
                node.remove_agent(&id).await
            })
        };
        let first = remove(&nodes[0], survivor.id.clone());
        let second = remove(&nodes[1], newcomer.id.clone());
        let (first, second) = (first.await.expect("task"), second.await.expect("task"));
        let admins: Vec<_> = nodes[0]
            .agents()
            .await
            .expect("list")
            .into_iter()
            .filter(|a| a.role == Role::Admin)
            .collect();
        assert_eq!(
            admins.len(),
            1,
            "round {round}: {first:?} {second:?} left {admins:?}"
        );
        assert!(
            matches!(first, Err(StoreError::LastAdmin))
                != matches!(second, Err(StoreError::LastAdmin)),
            "round {round}: exactly one removal refused: {first:?} {second:?}"
        );
        survivor = admins.into_iter().next().expect("one admin");
    }
    for node in nodes {
        node.shutdown().await;
    }
}

/// Batches that open conversations for several players lock those players in one
/// order on every node, even when players' lock keys collide: node A opens for
/// `a1` and `b1`, node B for `a2` and `b2`, where `a1` and `a2` share a key and
/// `b1` and `b2` share another, named so that their ids sort one way on A and the
/// other way on B. Locking in id order, the two batches waited for each other.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn colliding_player_locks_are_taken_in_one_order() {
    const ROUNDS: usize = 20;
    let url = fresh_database().await;
    let mut conn = PgConnection::connect(&url).await.expect("connect");
    // Player ids that share `hashtext` (the lock key's second half), in groups.
    let groups: Vec<Vec<String>> = sqlx::query_scalar(
        "SELECT array_agg(p ORDER BY p) FROM \
         (SELECT 'p:' || g AS p FROM generate_series(1, 400000) AS g) AS ids \
         GROUP BY hashtext(p) HAVING count(*) > 1",
    )
    .fetch_all(&mut conn)
    .await
    .expect("colliding ids");
    let mut found = None;
    'search: for (i, one) in groups.iter().enumerate() {
        for two in &groups[i + 1..] {
            for (a1, a2) in [(&one[0], &one[1]), (&one[1], &one[0])] {
                for (b1, b2) in [(&two[0], &two[1]), (&two[1], &two[0])] {
                    if a1 < b1 && b2 < a2 {
                        found = Some([a1.clone(), b1.clone(), a2.clone(), b2.clone()]);
                        break 'search;
                    }
                }
            }
        }
    }
    let [a1, b1, a2, b2] = found.expect("two pairs of colliding ids among 400,000");
    let nodes = [
        connect(&url, PostgresOptions::default()).await,
        connect(&url, PostgresOptions::default()).await,
    ];
    let mut runs = JoinSet::new();
    for (node, players) in nodes.iter().zip([[a1, b1], [a2, b2]]) {
        let node = node.clone();
        runs.spawn(async move {
            for round in 0..ROUNDS {
                // Queued together, so they share a batch. One open conversation
                // per player and department: a department per round.
                let creates = players.iter().map(|player| {
                    let mut new = new_conversation();
                    new.player.id = PlayerId(player.clone());
                    new.department = format!("desk-{round}");
                    new.open_limit = Some(1_000);
                    node.create_conversation(new)
                });
                for result in join_all(creates).await {
                    result.expect("create");
                }
            }
        });
    }
    while let Some(joined) = runs.join_next().await {
        joined.expect("node task");
    }
    for node in nodes {
        assert_eq!(node.retried_batches(), 0, "no batch was a deadlock victim");
        node.shutdown().await;
    }
}

/// Batches that touch several conversations, built in opposite orders on two nodes,
/// never deadlock: each batch locks its conversations in id order before writing.
/// (A deadlock would cost a second of `deadlock_timeout` and show as a retried
/// batch.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_nodes_lock_conversations_in_one_order() {
    const CONVERSATIONS: usize = 6;
    const ROUNDS: usize = 30;
    let nodes = two_nodes().await;
    let mut ids = Vec::new();
    for _ in 0..CONVERSATIONS {
        ids.push(create(&nodes[0]).await);
    }
    let mut runs = JoinSet::new();
    for (n, node) in nodes.iter().enumerate() {
        let node = node.clone();
        let mut order = ids.clone();
        if n == 1 {
            order.reverse();
        }
        runs.spawn(async move {
            for round in 0..ROUNDS {
                // Queued together, so they share a batch: one transaction that
                // changes every conversation, in this node's order.
                let writes = order
                    .iter()
                    .map(|id| node.apply(Change::append(*id, text(&format!("n{n}-{round}"), "x"))));
                for result in join_all(writes).await {
                    result.expect("append");
                }
            }
        });
    }
    while let Some(joined) = runs.join_next().await {
        joined.expect("node task");
    }
    for id in ids {
        let seqs: Vec<Seq> = nodes[0]
            .entries(id, 0, 1000, true)
            .await
            .expect("entries")
            .iter()
            .map(|e| e.seq)
            .collect();
        assert_eq!(seqs, (1..=2 * ROUNDS as Seq).collect::<Vec<_>>());
    }
    for node in nodes {
        assert_eq!(node.retried_batches(), 0, "no batch was a deadlock victim");
        node.shutdown().await;
    }
}

/// The routing fence holds across nodes. Two nodes that both believe they lead
/// under one epoch (a lease handover in flight) race to assign each queued
/// conversation to their own agent: exactly one assignment per conversation
/// succeeds, the other is refused and leaves no trace. Then the second node takes
/// the lease over (a higher epoch): the deposed node is fenced, and when both race
/// to requeue every conversation the new leader wins every time (the deposed node's
/// attempt fails `Fenced`, or `Precondition` when the new leader's requeue came
/// first, as `expect` is checked before the epoch).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_nodes_racing_fenced_assignments_have_one_winner() {
    const CONVERSATIONS: usize = 20;
    let nodes = two_nodes().await;
    let agents = ["ayla", "bora"];
    for name in agents {
        nodes[0]
            .put_agent(account(name, name, 100))
            .await
            .expect("agent");
    }
    let mut ids = Vec::new();
    for _ in 0..CONVERSATIONS {
        let new = new_conversation();
        ids.push(new.id);
        nodes[0].create_conversation(new).await.expect("create");
    }
    assert_eq!(nodes[0].raise_routing_epoch(1).await.expect("raise"), 1);

    let mut tasks = JoinSet::new();
    for &id in &ids {
        for (n, node) in nodes.iter().enumerate() {
            let node = node.clone();
            let to = agents[n];
            tasks.spawn(async move {
                (
                    id,
                    to,
                    node.apply(conformance::fenced_assign(id, to, 1)).await,
                )
            });
        }
    }
    let mut winners: BTreeMap<ConversationId, Vec<&str>> = BTreeMap::new();
    while let Some(joined) = tasks.join_next().await {
        match joined.expect("task") {
            (id, to, Ok(_)) => winners.entry(id).or_default().push(to),
            (_, _, Err(StoreError::Precondition)) => {}
            (_, to, Err(e)) => panic!("{to}'s losing assignment: {e:?}"),
        }
    }
    for &id in &ids {
        let won = winners.get(&id).cloned().unwrap_or_default();
        assert_eq!(won.len(), 1, "one assignment of {id} wins: {won:?}");
        let record = nodes[1]
            .conversation(id)
            .await
            .expect("read")
            .expect("found");
        assert_eq!(record.summary.agent, Some(AgentId(won[0].into())));
        assert_eq!(record.summary.last_seq, 1, "only the winner's entry");
        assert_eq!(nodes[1].events(id).await.expect("events").len(), 2);
    }

    // Node 1 takes the lease over; node 0 is deposed but does not know yet.
    assert_eq!(nodes[1].raise_routing_epoch(2).await.expect("raise"), 2);
    let result = nodes[0]
        .apply(conformance::fenced_requeue(ids[0], winners[&ids[0]][0], 1))
        .await;
    assert!(matches!(result, Err(StoreError::Fenced)), "{result:?}");
    let mut tasks = JoinSet::new();
    for &id in &ids {
        let owner = winners[&id][0];
        for (n, node) in nodes.iter().enumerate() {
            let node = node.clone();
            let epoch = n as u64 + 1;
            tasks.spawn(async move {
                (
                    n,
                    node.apply(conformance::fenced_requeue(id, owner, epoch))
                        .await,
                )
            });
        }
    }
    let mut requeued = 0;
    while let Some(joined) = tasks.join_next().await {
        match joined.expect("task") {
            (0, Err(StoreError::Fenced | StoreError::Precondition)) => {}
            (1, Ok(_)) => requeued += 1,
            (n, result) => panic!("node {n}'s requeue: {result:?}"),
        }
    }
    assert_eq!(requeued, CONVERSATIONS, "the new leader wins every time");
    for &id in &ids {
        let record = nodes[0]
            .conversation(id)
            .await
            .expect("read")
            .expect("found");
        assert_eq!(record.summary.state, ConversationState::Queued);
        assert_eq!(record.summary.last_seq, 2, "assigned, requeued");
    }
    for node in nodes {
        assert_eq!(node.routing_epoch().await.expect("epoch"), 2);
        assert_eq!(node.retried_batches(), 0, "no batch was a deadlock victim");
        node.shutdown().await;
    }
}

/// Fenced changes serialise across nodes, so an agent's capacity holds even when
/// two nodes give the agent different conversations at the same moment (each node's
/// own count would see none of the other's uncommitted assignment). Every round, an
/// agent of capacity 1 is offered four conversations from two nodes at once: one
/// assignment wins, the rest are refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_nodes_racing_for_one_agents_capacity_have_one_winner() {
    const ROUNDS: usize = 10;
    const OFFERS: usize = 4;
    let nodes = two_nodes().await;
    // Recorded up front, so the racing changes only read the fence row and only its
    // lock can serialise them.
    assert_eq!(nodes[0].raise_routing_epoch(1).await.expect("raise"), 1);
    let mut offers = Vec::new();
    for round in 0..ROUNDS {
        let agent = format!("agent{round}");
        nodes[0]
            .put_agent(account(&agent, &agent, 1))
            .await
            .expect("agent");
        for offer in 0..OFFERS {
            let new = new_conversation();
            offers.push((round, offer % 2, new.id, agent.clone()));
            nodes[0].create_conversation(new).await.expect("create");
        }
    }
    let start = Arc::new(tokio::sync::Barrier::new(offers.len()));
    let mut tasks = JoinSet::new();
    for (round, n, id, agent) in offers {
        let node = nodes[n].clone();
        let start = start.clone();
        tasks.spawn(async move {
            let change = Change {
                fence: Some(Fence {
                    epoch: 1,
                    capacity_of: Some(AgentId(agent.clone())),
                }),
                ..conformance::fenced_assign(id, &agent, 1)
            };
            start.wait().await;
            (round, node.apply(change).await)
        });
    }
    let mut won = vec![0; ROUNDS];
    while let Some(joined) = tasks.join_next().await {
        match joined.expect("task") {
            (round, Ok(_)) => won[round] += 1,
            (_, Err(StoreError::Precondition)) => {}
            (round, Err(e)) => panic!("round {round}: {e:?}"),
        }
    }
    assert_eq!(won, vec![1; ROUNDS], "one assignment per agent");
    for round in 0..ROUNDS {
        let owned = nodes[1]
            .conversations(pitboss_transcripts::ConversationFilter {
                agent: Some(AgentId(format!("agent{round}"))),
                ..Default::default()
            })
            .await
            .expect("list");
        assert_eq!(owned.len(), 1, "agent{round} owns one conversation");
    }
    for node in nodes {
        assert_eq!(node.retried_batches(), 0, "no batch was a deadlock victim");
        node.shutdown().await;
    }
}

// ---------------------------------------------------------------------------------
// PostgreSQL only.

/// The recorded routing epoch survives the store reconnecting; a database from
/// before the fence (its migration not yet applied) gets it when a store connects,
/// starting at 0, with its data intact.
#[tokio::test]
async fn routing_epoch_survives_reconnecting_and_old_databases_are_upgraded() {
    let (url, store) = open(PostgresOptions::default()).await;
    let id = create(&store).await;
    assert_eq!(store.raise_routing_epoch(9).await.expect("raise"), 9);
    store.shutdown().await;

    let store = connect(&url, PostgresOptions::default()).await;
    assert_eq!(store.routing_epoch().await.expect("epoch"), 9);
    assert_eq!(
        store.raise_routing_epoch(4).await.expect("raise"),
        9,
        "still monotonic after reconnecting"
    );
    store.shutdown().await;

    // Back to the schema before the fence.
    side_sql(
        &url,
        "DROP TABLE routing_fence; DELETE FROM _sqlx_migrations WHERE version = 3",
    )
    .await;
    let store = connect(&url, PostgresOptions::default()).await;
    assert_eq!(store.routing_epoch().await.expect("epoch"), 0, "upgraded");
    assert!(store.conversation(id).await.expect("read").is_some());
    let requeue = conformance::fenced_requeue(id, "ayla", 3);
    store.apply(requeue).await.expect("a fenced change");
    assert_eq!(store.routing_epoch().await.expect("epoch"), 3);
    store.shutdown().await;
}

/// A fenced write refused inside a batch (stale epoch, or capacity) rolls back only
/// its own savepoint, the epoch it would have recorded included; the other writes
/// of the transaction, a fenced one among them, commit.
#[tokio::test]
async fn a_fenced_write_spares_its_batch() {
    let (_, store) = open(PostgresOptions::default()).await;
    let shared: Arc<dyn Store> = store.clone();
    conformance::fenced_write_spares_its_batch(shared, || store.commits()).await;
    store.shutdown().await;
}

/// The writer commits with `synchronous_commit = on` even when the database's
/// default says otherwise: an acknowledged write is flushed.
#[tokio::test]
async fn synchronous_commit_is_on() {
    let url = fresh_database().await;
    side_sql(
        &url,
        "DO $$ BEGIN EXECUTE format('ALTER DATABASE %I SET synchronous_commit = off', \
         current_database()); END $$",
    )
    .await;
    let mut side = side_connection(&url).await;
    let default: String = sqlx::query_scalar("SHOW synchronous_commit")
        .fetch_one(&mut side)
        .await
        .expect("show");
    assert_eq!(default, "off", "the database's own default is off");

    let store = connect(&url, PostgresOptions::default()).await;
    assert_eq!(store.synchronous_commit().await.expect("setting"), "on");
    store.shutdown().await;
}

/// Everything written is there after the store is shut down and a new one connects,
/// and numbering goes on where it stopped.
#[tokio::test]
async fn data_survives_reconnecting() {
    let (url, store) = open(PostgresOptions::default()).await;
    let new = new_conversation();
    let id = new.id;
    store.create_conversation(new).await.expect("create");
    store
        .apply(Change {
            conversation: id,
            set: Some(SetState {
                state: ConversationState::Active,
                agent: Some(AgentId("ayla".into())),
                close_reason: None,
                department: None,
            }),
            events: vec![event(LifecycleKind::Assigned)],
            handoff: Some(Handoff {
                from: AgentId("bora".into()),
                to: "agent:ayla".into(),
                note: Some("wants a bonus".into()),
                outcome: "accepted".into(),
                at: now_ms(),
            }),
            rating: Some((5, Some("fast".into()))),
            ..Change::append(id, text("c1", "hello"))
        })
        .await
        .expect("first change");
    store
        .apply(Change::append(id, note("n1", "VIP")))
        .await
        .expect("note");
    let account = account("ayla", "Ayla", u32::MAX);
    store.put_agent(account.clone()).await.expect("agent");
    let secret = store.secret("jwt", vec![7; 32]).await.expect("secret");

    let record = store.conversation(id).await.expect("read");
    let entries = store.entries(id, 0, 100, true).await.expect("entries");
    let events = store.events(id).await.expect("events");
    let handoffs = store.handoffs(id).await.expect("handoffs");
    store.shutdown().await;

    let store = connect(&url, PostgresOptions::default()).await;
    assert_eq!(store.conversation(id).await.expect("read"), record);
    assert_eq!(
        store.entries(id, 0, 100, true).await.expect("entries"),
        entries
    );
    assert_eq!(entries.len(), 2);
    assert_eq!(store.events(id).await.expect("events"), events);
    assert_eq!(events.len(), 2, "queued and assigned");
    assert_eq!(store.handoffs(id).await.expect("handoffs"), handoffs);
    assert_eq!(handoffs.len(), 1);
    assert_eq!(
        store.agent(&account.id).await.expect("agent"),
        Some(account),
        "a u32 capacity round-trips whole"
    );
    assert_eq!(
        store.secret("jwt", vec![0; 32]).await.expect("secret"),
        secret
    );
    // Numbering continues from the stored counters, not from 1.
    let next = appended(store.apply(Change::append(id, text("c2", "again"))).await);
    assert_eq!((next.entry.seq, next.entry.prev_public), (3, 1));
    // And a resend from before the reconnect is still recognised.
    let resent = appended(store.apply(Change::append(id, text("c1", "hello"))).await);
    assert!(resent.duplicate);
    assert_eq!(resent.entry, entries[0]);
    store.shutdown().await;
}

/// When the write connection dies (the server restarted, an operator killed it),
/// the batch that finds it dead fails `Unavailable` and the next one reconnects,
/// with `synchronous_commit` set again.
#[tokio::test]
async fn the_writer_reconnects_after_losing_its_connection() {
    let (url, store) = open(PostgresOptions::default()).await;
    let id = create(&store).await;
    let mut side = side_connection(&url).await;
    let killed: Vec<bool> = sqlx::query_scalar(
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity \
         WHERE application_name = $1 AND datname = current_database()",
    )
    .bind(WRITER_APPLICATION_NAME)
    .fetch_all(&mut side)
    .await
    .expect("terminate the writer's backend");
    assert_eq!(killed, [true], "one writer connection");

    let first = store.apply(Change::append(id, text("a", "after"))).await;
    let mut acknowledged = Vec::new();
    match first {
        Ok(applied) => acknowledged.push(applied),
        Err(StoreError::Unavailable(_)) => {}
        Err(e) => panic!("a dead connection is Unavailable, got {e:?}"),
    }
    let again = store
        .apply(Change::append(id, text("a", "after")))
        .await
        .expect("the next batch reconnects");
    acknowledged.push(again);
    assert_eq!(
        acknowledged
            .iter()
            .filter(|a| !a.appended.as_ref().expect("entry").duplicate)
            .count(),
        1,
        "stored once"
    );
    assert_eq!(store.synchronous_commit().await.expect("setting"), "on");
    store.shutdown().await;
}

/// PostgreSQL aborts a deadlocked transaction; the writer runs the batch again and
/// every caller gets its success. The deadlock is made with a second connection that
/// locks the rows the batch needs in the opposite order (and waits longer than the
/// writer before checking for deadlocks, so the writer is the victim).
#[tokio::test(flavor = "current_thread")]
async fn a_deadlocked_batch_is_retried() {
    let (url, store) = open(PostgresOptions::default()).await;
    store.put_agent(account("a", "A0", 1)).await.expect("a");
    store.put_agent(account("b", "B0", 1)).await.expect("b");

    let mut side = side_connection(&url).await;
    for sql in [
        "BEGIN",
        "SET LOCAL deadlock_timeout = '60s'",
        "UPDATE agents SET name = 'side' WHERE id = 'b'",
    ] {
        exec(&mut side, sql).await;
    }
    let writes = tokio::spawn({
        let store = store.clone();
        // One poll queues both: one batch, which locks `a`, then waits for `b`.
        async move {
            tokio::join!(
                store.put_agent(account("a", "A1", 1)),
                store.put_agent(account("b", "B1", 1)),
            )
        }
    });
    wait_for_writer_to_wait_for_a_lock(&url).await;
    // Now the side waits for `a`: a cycle. The writer's deadlock check breaks it by
    // aborting the writer's transaction, which lets this statement through.
    exec(&mut side, "UPDATE agents SET name = 'side' WHERE id = 'a'").await;
    exec(&mut side, "COMMIT").await;

    let (a, b) = writes.await.expect("writes task");
    a.expect("put a after the retry");
    b.expect("put b after the retry");
    assert_eq!(store.retried_batches(), 1, "one retry");
    let names: Vec<String> = store
        .agents()
        .await
        .expect("agents")
        .into_iter()
        .map(|a| a.name)
        .collect();
    assert_eq!(
        names,
        ["A1", "B1"],
        "the retried batch wrote after the side"
    );
    store.shutdown().await;
}

/// The unique index is the backstop for resends: an entry another transaction
/// stored under the same client id after the writer's check (possible only for a
/// writer that skipped the row lock, simulated here with a second connection) makes
/// the insert fail; the write is rolled back to its savepoint and answered from the
/// entry that won: duplicate for the same text, `Conflict` for other text. The
/// counter is left as it was and the observer hears nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_resend_racing_past_the_check_is_caught_by_the_unique_index() {
    let (url, store) = open(PostgresOptions::default()).await;
    let recorder = Arc::new(Recorder::default());
    store.set_observer(recorder.clone());
    let id = create(&store).await;

    for (seq, client_id, theirs, ours) in [
        (100_i64, "same", "hello", "hello"),
        (101, "other", "hello", "goodbye"),
    ] {
        let mut side = side_connection(&url).await;
        exec(&mut side, "BEGIN").await;
        sqlx::query(
            "INSERT INTO entries (conversation_id, seq, prev_public, kind, sender_role, \
             sender_id, sender_name, body, client_id, event, at) \
             VALUES ($1, $2, 0, 'text', 'player', 'p:1', NULL, $3, $4, NULL, 1)",
        )
        .bind(id.to_string())
        .bind(seq)
        .bind(theirs)
        .bind(client_id)
        .execute(&mut side)
        .await
        .expect("side insert");
        let write = tokio::spawn({
            let store = store.clone();
            async move { store.apply(Change::append(id, text(client_id, ours))).await }
        });
        // The writer checked, found nothing committed, and now waits on the index.
        wait_for_writer_to_wait_for_a_lock(&url).await;
        exec(&mut side, "COMMIT").await;
        let result = write.await.expect("write task");
        if theirs == ours {
            let appended = appended(result);
            assert!(appended.duplicate, "same text: a resend");
            assert_eq!(appended.entry.seq, seq as Seq, "answered with the winner");
        } else {
            assert!(
                matches!(result, Err(StoreError::Conflict)),
                "other text: {result:?}"
            );
        }
    }
    let record = store.conversation(id).await.expect("read").expect("found");
    assert_eq!(
        record.summary.last_seq, 0,
        "the lost inserts took no number"
    );
    assert!(
        recorder.seen().is_empty(),
        "nothing new was stored by the store"
    );
    let next = appended(store.apply(Change::append(id, text("next", "ok"))).await);
    assert_eq!(next.entry.seq, 1);
    store.shutdown().await;
}

/// Concurrent appends share transactions: 1000 of them take far fewer commits, yet
/// each is numbered and stored.
#[tokio::test]
async fn group_commit_batches_appends() {
    const APPENDS: usize = 1000;
    let (_, store) = open(PostgresOptions::default()).await;
    let id = create(&store).await;
    let before = store.commits();

    let sends = (0..APPENDS)
        .map(|i| store.apply(Change::append(id, text(&format!("c{i}"), "x"))))
        .collect::<Vec<_>>();
    let results = join_all(sends).await;
    let mut seqs: Vec<Seq> = results.into_iter().map(|r| appended(r).entry.seq).collect();
    seqs.sort_unstable();
    assert_eq!(seqs, (1..=APPENDS as Seq).collect::<Vec<_>>());

    let transactions = store.commits() - before;
    assert!(
        transactions <= (APPENDS / 10) as u64,
        "{APPENDS} appends took {transactions} transactions: not group-committed"
    );
    assert!(
        transactions >= APPENDS.div_ceil(512) as u64,
        "max_batch (512) caps a transaction, yet only {transactions} for {APPENDS}"
    );
    store.shutdown().await;
}

/// `max_batch` bounds how many writes share one transaction.
#[tokio::test]
async fn max_batch_bounds_a_transaction() {
    let (_, store) = open(PostgresOptions {
        max_batch: 10,
        ..PostgresOptions::default()
    })
    .await;
    let id = create(&store).await;
    let before = store.commits();
    let sends = (0..100)
        .map(|i| store.apply(Change::append(id, text(&format!("c{i}"), "x"))))
        .collect::<Vec<_>>();
    for result in join_all(sends).await {
        appended(result);
    }
    let transactions = store.commits() - before;
    assert!(
        transactions >= 10,
        "100 writes at 10 a batch, got {transactions}"
    );
    store.shutdown().await;
}

/// Writes that fail inside a batch (conflict, precondition, not found) roll back
/// only their own savepoint: the others in the same transaction commit, gap-free.
#[tokio::test]
async fn a_failed_write_spares_its_batch() {
    let (_, store) = open(PostgresOptions::default()).await;
    let id = create(&store).await;
    store
        .apply(Change::append(id, text("taken", "original")))
        .await
        .expect("seed");
    let before = store.commits();

    let refused_precondition = Change {
        expect: Some(Expect {
            state: ConversationState::Closed,
            agent: None,
        }),
        set: Some(SetState {
            state: ConversationState::Closed,
            agent: None,
            close_reason: Some("x".into()),
            department: None,
        }),
        ..Change::append(id, text("p", "never"))
    };
    let writes = vec![
        store.apply(Change::append(id, text("a", "one"))),
        store.apply(Change::append(id, text("taken", "different"))),
        store.apply(Change::append(id, text("b", "two"))),
        store.apply(refused_precondition),
        store.apply(Change::append(ConversationId::new(), text("c", "lost"))),
        store.apply(Change::append(id, text("d", "three"))),
    ];
    let results = join_all(writes).await;
    assert_eq!(store.commits() - before, 1, "all six in one transaction");

    assert_eq!(seq_of(&results[0]), Some(2));
    assert!(
        matches!(results[1], Err(StoreError::Conflict)),
        "{:?}",
        results[1]
    );
    assert_eq!(seq_of(&results[2]), Some(3));
    assert!(
        matches!(results[3], Err(StoreError::Precondition)),
        "{:?}",
        results[3]
    );
    assert!(
        matches!(results[4], Err(StoreError::NotFound)),
        "{:?}",
        results[4]
    );
    assert_eq!(seq_of(&results[5]), Some(4));

    let texts: Vec<String> = store
        .entries(id, 0, 100, true)
        .await
        .expect("entries")
        .into_iter()
        .map(|e| e.text)
        .collect();
    assert_eq!(texts, ["original", "one", "two", "three"]);
    let record = store.conversation(id).await.expect("read").expect("found");
    assert_eq!(
        record.summary.state,
        ConversationState::Active,
        "refused set undone"
    );
    store.shutdown().await;
}

/// A write that fails halfway, after it had already inserted its entry and moved the
/// conversation, is undone whole by its savepoint and answered `Unavailable`; the
/// rest of its batch commits. The failure is injected with a trigger.
#[tokio::test]
async fn a_write_failing_halfway_is_undone_whole() {
    let (url, store) = open(PostgresOptions::default()).await;
    let id = create(&store).await;
    side_sql(
        &url,
        "CREATE FUNCTION injected_fault() RETURNS trigger LANGUAGE plpgsql AS \
         $$ BEGIN RAISE EXCEPTION 'injected fault'; END $$",
    )
    .await;
    side_sql(
        &url,
        "CREATE TRIGGER injected_fault BEFORE INSERT ON handoffs FOR EACH ROW \
         WHEN (NEW.outcome = 'boom') EXECUTE FUNCTION injected_fault()",
    )
    .await;
    let before = store.commits();

    // Entry, state and events are written before the hand-off insert fails.
    let doomed = Change {
        set: Some(SetState {
            state: ConversationState::Closed,
            agent: None,
            close_reason: Some("resolved".into()),
            department: None,
        }),
        events: vec![event(LifecycleKind::Closed)],
        handoff: Some(Handoff {
            from: AgentId("ayla".into()),
            to: "agent:bora".into(),
            note: None,
            outcome: "boom".into(),
            at: now_ms(),
        }),
        ..Change::append(id, text("doomed", "half written"))
    };
    let results = join_all(vec![
        store.apply(Change::append(id, text("a", "before"))),
        store.apply(doomed),
        store.apply(Change::append(id, text("b", "after"))),
    ])
    .await;
    assert_eq!(store.commits() - before, 1, "one batch");
    assert_eq!(seq_of(&results[0]), Some(1));
    assert!(
        matches!(&results[1], Err(StoreError::Unavailable(why)) if why.contains("injected fault")),
        "{:?}",
        results[1]
    );
    assert_eq!(seq_of(&results[2]), Some(2), "the failed write left no gap");

    let texts: Vec<String> = store
        .entries(id, 0, 100, true)
        .await
        .expect("entries")
        .into_iter()
        .map(|e| e.text)
        .collect();
    assert_eq!(texts, ["before", "after"]);
    let record = store.conversation(id).await.expect("read").expect("found");
    assert_eq!(
        record.summary.state,
        ConversationState::Active,
        "state undone"
    );
    assert_eq!(record.summary.closed_at, None);
    let kinds: Vec<LifecycleKind> = store
        .events(id)
        .await
        .expect("events")
        .iter()
        .map(|e| e.kind)
        .collect();
    assert_eq!(kinds, [LifecycleKind::Queued], "events undone");
    store.shutdown().await;
}

/// When the COMMIT itself fails, every write of the batch is answered
/// `Unavailable`, nothing of it is stored, the observer hears of none of it, and the
/// batch is not retried (only deadlocks are). The failure is injected as a deferred
/// foreign key, which PostgreSQL checks at COMMIT.
#[tokio::test]
async fn a_failed_commit_fails_the_whole_batch() {
    let (url, store) = open(PostgresOptions::default()).await;
    let recorder = Arc::new(Recorder::default());
    store.set_observer(recorder.clone());
    let id = create(&store).await;
    side_sql(&url, "CREATE TABLE parent (id TEXT PRIMARY KEY)").await;
    side_sql(
        &url,
        "CREATE TABLE trap (parent_id TEXT REFERENCES parent (id) DEFERRABLE INITIALLY DEFERRED)",
    )
    .await;
    side_sql(
        &url,
        "CREATE FUNCTION commit_bomb() RETURNS trigger LANGUAGE plpgsql AS \
         $$ BEGIN INSERT INTO trap (parent_id) VALUES ('missing'); RETURN NEW; END $$",
    )
    .await;
    side_sql(
        &url,
        "CREATE TRIGGER commit_bomb AFTER INSERT ON entries FOR EACH ROW \
         WHEN (NEW.body = 'commit bomb') EXECUTE FUNCTION commit_bomb()",
    )
    .await;
    let before = store.commits();

    let results = join_all(vec![
        store.apply(Change::append(id, text("a", "innocent"))),
        store.apply(Change::append(id, text("b", "commit bomb"))),
        store.apply(Change::append(id, text("c", "bystander"))),
    ])
    .await;
    for (i, result) in results.iter().enumerate() {
        assert!(
            matches!(result, Err(StoreError::Unavailable(_))),
            "write {i}: {result:?}"
        );
    }
    assert_eq!(store.commits(), before, "nothing committed");
    assert_eq!(store.retried_batches(), 0, "a failed commit is not retried");
    assert!(recorder.seen().is_empty(), "the observer heard of no entry");
    assert!(store
        .entries(id, 0, 100, true)
        .await
        .expect("entries")
        .is_empty());

    // The writer goes on: the next batch commits from seq 1 and is observed.
    let next = appended(store.apply(Change::append(id, text("a", "innocent"))).await);
    assert_eq!(next.entry.seq, 1);
    assert_eq!(recorder.seen(), [(next.entry, 0)]);
    store.shutdown().await;
}

/// A full write queue answers `Overloaded` at once instead of waiting or growing;
/// every write that was accepted is durable, and none that was refused is stored.
#[tokio::test]
async fn full_write_queue_is_overloaded() {
    const WRITES: usize = 50;
    let options = PostgresOptions {
        write_queue: 1,
        ..PostgresOptions::default()
    };
    let (url, store) = open(options.clone()).await;
    let id = create(&store).await;

    let sends = (0..WRITES)
        .map(|i| store.apply(Change::append(id, text(&format!("c{i}"), "flood"))))
        .collect::<Vec<_>>();
    let results = join_all(sends).await;
    let mut accepted = Vec::new();
    let mut overloaded = 0;
    for (i, result) in results.into_iter().enumerate() {
        match result {
            Ok(applied) => accepted.push((i, applied.appended.expect("entry").entry)),
            Err(StoreError::Overloaded) => overloaded += 1,
            Err(e) => panic!("write {i}: expected Ok or Overloaded, got {e:?}"),
        }
    }
    assert!(
        overloaded >= 1,
        "a queue of 1 cannot take {WRITES} writes at once"
    );
    assert!(!accepted.is_empty(), "the first write fits in the queue");

    store.shutdown().await;
    // Read back through a new connection: what was acknowledged is stored.
    let store = connect(&url, options).await;
    let stored = store.entries(id, 0, 1000, true).await.expect("entries");
    assert_eq!(stored.len(), accepted.len(), "refused writes left nothing");
    for ((i, entry), stored) in accepted.iter().zip(&stored) {
        assert_eq!(entry, stored);
        assert_eq!(entry.client_id.as_deref(), Some(format!("c{i}").as_str()));
    }
    // Overload is momentary: with the queue drained, writes go through again.
    let later = appended(store.apply(Change::append(id, text("later", "ok"))).await);
    assert_eq!(later.entry.seq, accepted.len() as Seq + 1);
    store.shutdown().await;
}

/// `shutdown` writes everything already queued before it returns, answers those
/// callers, and refuses what comes after.
#[tokio::test]
async fn shutdown_drains_the_queue() {
    const WRITES: usize = 100;
    let (url, store) = open(PostgresOptions::default()).await;
    let id = create(&store).await;

    let sends = join_all(
        (0..WRITES)
            .map(|i| store.apply(Change::append(id, text(&format!("c{i}"), "bye"))))
            .collect::<Vec<_>>(),
    );
    tokio::pin!(sends);
    // One poll queues all of them; none can be answered yet.
    assert!((&mut sends).now_or_never().is_none());
    store.shutdown().await;
    for result in sends.await {
        appended(result);
    }
    let late = store.apply(Change::append(id, text("late", "no"))).await;
    assert!(matches!(late, Err(StoreError::Unavailable(_))), "{late:?}");

    let store = connect(&url, PostgresOptions::default()).await;
    let record = store.conversation(id).await.expect("read").expect("found");
    assert_eq!(
        record.summary.last_seq, WRITES as Seq,
        "every queued write is durable"
    );
    store.shutdown().await;
}

/// A conversation is born queued or offline; this backend refuses any other state
/// rather than skip the queue's lifecycle event, and refuses an existing id as a
/// conflict (not a retryable outage), as SQLite does.
#[tokio::test]
async fn create_refuses_existing_ids_and_other_states() {
    let (_, store) = open(PostgresOptions::default()).await;
    let first = new_conversation();
    store
        .create_conversation(first.clone())
        .await
        .expect("create");
    let again = store.create_conversation(first).await;
    assert!(matches!(again, Err(StoreError::Conflict)), "{again:?}");
    for state in [ConversationState::Active, ConversationState::Closed] {
        let new = NewConversation {
            state,
            ..new_conversation()
        };
        let id = new.id;
        let result = store.create_conversation(new).await;
        assert!(
            matches!(result, Err(StoreError::Precondition)),
            "{result:?}"
        );
        assert_eq!(store.conversation(id).await.expect("read"), None);
    }
    store.shutdown().await;
}

/// Two nodes purging at once (around a change of routing leader, or `pitboss purge`
/// beside the scheduled purge) neither fail nor wait for each other, and between
/// them (and one more run for what a skipped row left) every old conversation is
/// deleted once, with its entries.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_nodes_purging_at_once_delete_each_conversation_once() {
    const CLOSED: u64 = 60;
    let (url, a) = open(PostgresOptions::default()).await;
    let b = connect(&url, PostgresOptions::default()).await;
    let mut ids = Vec::new();
    for i in 0..CLOSED {
        let id = create(&a).await;
        a.apply(Change::append(id, text(&format!("m{i}"), "old chat")))
            .await
            .expect("append");
        close(&a, id).await;
        ids.push(id);
    }
    let open_one = create(&b).await;
    let cutoff = now_ms() + 1_000;
    let (from_a, from_b) = tokio::join!(a.purge_closed(cutoff, 5), b.purge_closed(cutoff, 5));
    let (from_a, from_b) = (from_a.expect("node a"), from_b.expect("node b"));
    let rest = a.purge_closed(cutoff, 5).await.expect("one more run");
    let runs = [from_a, from_b, rest];
    let conversations: u64 = runs.iter().map(|p| p.deleted.conversations).sum();
    let entries: u64 = runs.iter().map(|p| p.deleted.entries).sum();
    assert_eq!(conversations, CLOSED, "{runs:?}");
    assert_eq!(entries, CLOSED, "{runs:?}");
    for id in ids {
        assert_eq!(b.conversation(id).await.expect("read"), None);
    }
    assert!(a.conversation(open_one).await.expect("read").is_some());
    a.shutdown().await;
    b.shutdown().await;
}

/// A purge does not wait for a conversation another transaction holds (another
/// node's write in progress, which could last up to the lock timeout): it deletes
/// the rest and leaves that one to the next run.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_purge_skips_what_another_transaction_holds() {
    let (url, store) = open(PostgresOptions::default()).await;
    let held = create(&store).await;
    close(&store, held).await;
    let free = create(&store).await;
    close(&store, free).await;
    let mut side = side_connection(&url).await;
    exec(&mut side, "BEGIN").await;
    sqlx::query("SELECT id FROM conversations WHERE id = $1 FOR NO KEY UPDATE")
        .bind(held.to_string())
        .fetch_all(&mut side)
        .await
        .expect("hold the row");

    let cutoff = now_ms() + 1_000;
    let purged = tokio::time::timeout(
        Duration::from_secs(5),
        store.purge_closed(cutoff, PURGE_CHUNK),
    )
    .await
    .expect("the purge does not wait for the held row")
    .expect("purge");
    assert_eq!(purged.deleted.conversations, 1);
    assert_eq!(store.conversation(free).await.expect("read"), None);
    assert!(store.conversation(held).await.expect("read").is_some());

    exec(&mut side, "COMMIT").await;
    let purged = store
        .purge_closed(cutoff, PURGE_CHUNK)
        .await
        .expect("purge");
    assert_eq!(purged.deleted.conversations, 1, "the next run takes it");
    assert_eq!(store.conversation(held).await.expect("read"), None);
    store.shutdown().await;
}

/// `ping` answers while connected and fails once shut down.
#[tokio::test]
async fn ping_follows_the_store() {
    let (_, store) = open(PostgresOptions::default()).await;
    store.ping().await.expect("ping while open");
    store.shutdown().await;
    assert!(store.ping().await.is_err(), "ping after shutdown");
}

/// A URL that is not one, or a server that is not there, is `Unavailable`, and the
/// error does not repeat the password.
#[tokio::test]
async fn connect_failures_are_unavailable() {
    let bad = PostgresStore::connect("not a url", PostgresOptions::default()).await;
    assert!(matches!(bad, Err(StoreError::Unavailable(_))));
    // Port 1 on loopback: nothing listens there.
    let down = PostgresStore::connect(
        "postgres://postgres:hunter2@127.0.0.1:1/none",
        PostgresOptions::default(),
    )
    .await;
    match down {
        Err(StoreError::Unavailable(why)) => assert!(!why.contains("hunter2"), "{why}"),
        Err(e) => panic!("expected Unavailable, got {e:?}"),
        Ok(_) => panic!("connected to nothing"),
    }
}

// ---------------------------------------------------------------------------------
// Helpers.

/// A connection beside the store's, for what a test does behind its back.
async fn side_connection(url: &str) -> PgConnection {
    PgConnection::connect(url).await.expect("side connection")
}

/// Runs one statement on a connection of its own: how tests inject faults (triggers)
/// the store's own code cannot be made to produce.
async fn side_sql(url: &str, sql: &str) {
    let mut conn = side_connection(url).await;
    exec(&mut conn, sql).await;
    conn.close().await.expect("close side connection");
}

/// Runs one statement that must succeed.
async fn exec(conn: &mut PgConnection, sql: &str) {
    sqlx::raw_sql(sql)
        .execute(conn)
        .await
        .unwrap_or_else(|e| panic!("{sql}: {e}"));
}

/// Waits until the writer of a store on `url`'s database is blocked on a lock.
async fn wait_for_writer_to_wait_for_a_lock(url: &str) {
    let mut conn = side_connection(url).await;
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let waiting: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM pg_stat_activity WHERE application_name = $1 \
             AND datname = current_database() AND wait_event_type = 'Lock'",
        )
        .bind(WRITER_APPLICATION_NAME)
        .fetch_one(&mut conn)
        .await
        .expect("pg_stat_activity");
        if waiting > 0 {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "the writer never waited for a lock"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// An observer that records what it is told.
#[derive(Default)]
struct Recorder {
    /// Every entry reported, in order.
    seen: Mutex<Vec<(StoredEntry, u64)>>,
}

impl Recorder {
    /// A copy of what was reported so far.
    fn seen(&self) -> Vec<(StoredEntry, u64)> {
        self.seen.lock().expect("recorder lock").clone()
    }
}

impl CommitObserver for Recorder {
    fn committed(&self, entries: &[(StoredEntry, u64)]) {
        self.seen
            .lock()
            .expect("recorder lock")
            .extend_from_slice(entries);
    }
}

/// A queued conversation of player `p:1`.
fn new_conversation() -> NewConversation {
    NewConversation {
        id: ConversationId::new(),
        player: PlayerCard {
            id: PlayerId("p:1".into()),
            name: Some("Deniz".into()),
            ..PlayerCard::default()
        },
        department: "general".into(),
        language: "tr".into(),
        state: ConversationState::Queued,
        created_at: now_ms(),
        open_limit: None,
    }
}

/// Creates an active conversation owned by `ayla`.
async fn create(store: &PostgresStore) -> ConversationId {
    let new = new_conversation();
    let id = new.id;
    store.create_conversation(new).await.expect("create");
    store
        .apply(Change {
            conversation: id,
            set: Some(SetState {
                state: ConversationState::Active,
                agent: Some(AgentId("ayla".into())),
                close_reason: None,
                department: None,
            }),
            ..Change::default()
        })
        .await
        .expect("assign");
    id
}

/// Closes a conversation.
async fn close(store: &PostgresStore, id: ConversationId) {
    store
        .apply(Change {
            conversation: id,
            set: Some(SetState {
                state: ConversationState::Closed,
                agent: None,
                close_reason: Some("resolved".into()),
                department: None,
            }),
            ..Change::default()
        })
        .await
        .expect("close");
}

/// An account.
fn account(id: &str, name: &str, capacity: u32) -> AgentAccount {
    AgentAccount {
        id: AgentId(id.into()),
        name: name.into(),
        password_hash: "$argon2id$stub".into(),
        role: Role::Supervisor,
        languages: vec!["tr".into()],
        departments: vec!["payments".into()],
        capacity,
        created_at: 1_700_000_000_000,
        sessions_ended_at: 0,
    }
}

/// A player's message.
fn text(client_id: &str, body: &str) -> NewEntry {
    NewEntry {
        kind: MessageKind::Text,
        sender: Participant {
            role: Role::Player,
            id: "p:1".into(),
            name: None,
        },
        text: body.into(),
        client_id: Some(client_id.into()),
        event: None,
        origin: 0,
    }
}

/// An agent's note.
fn note(client_id: &str, body: &str) -> NewEntry {
    NewEntry {
        kind: MessageKind::Note,
        sender: Participant {
            role: Role::Agent,
            id: "ayla".into(),
            name: Some("Ayla".into()),
        },
        ..text(client_id, body)
    }
}

/// A server-written event entry.
fn system_event(tag: &str) -> NewEntry {
    NewEntry {
        kind: MessageKind::Event,
        sender: Participant {
            role: Role::System,
            id: "system".into(),
            name: None,
        },
        text: tag.into(),
        client_id: None,
        event: Some(tag.into()),
        origin: 0,
    }
}

/// A lifecycle event by `ayla`, now.
fn event(kind: LifecycleKind) -> LifecycleEvent {
    LifecycleEvent {
        kind,
        agent: Some(AgentId("ayla".into())),
        detail: serde_json::json!({"why": "test"}),
        at: now_ms(),
    }
}

/// The entry a successful append stored; panics on failure.
fn appended(result: Result<Applied, StoreError>) -> pitboss_transcripts::Appended {
    result
        .expect("append succeeds")
        .appended
        .expect("an append reports its entry")
}

/// The sequence number of a successful append.
fn seq_of(result: &Result<Applied, StoreError>) -> Option<Seq> {
    result
        .as_ref()
        .ok()
        .and_then(|a| a.appended.as_ref())
        .map(|a| a.entry.seq)
}
