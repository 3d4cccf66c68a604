//! The SQLite backend: the backend-neutral conformance suite, then what only SQLite
//! has: durability pragmas, the file surviving a restart, group commit, savepoint
//! isolation inside one batch, the bounded write queue and a draining shutdown.
//!
//! The group-commit and queue tests run on tokio's current-thread runtime on
//! purpose: every write future is polled (and so queued with `try_send`) before the
//! writer task can run, which makes batch sizes and a full queue deterministic
//! instead of a matter of timing.

use futures_util::future::join_all;
use futures_util::FutureExt;
use pitboss_protocol::{
    AgentId, ConversationId, ConversationState, MessageKind, Participant, PlayerCard, PlayerId,
    Role, Seq,
};
use pitboss_transcripts::sqlite::{SqliteOptions, SqliteStore};
use pitboss_transcripts::{
    conformance, now_ms, AgentAccount, Applied, Change, CommitObserver, Expect, Fence, Handoff,
    LifecycleEvent, LifecycleKind, NewConversation, NewEntry, SetState, Store, StoreError,
    StoredEntry,
};
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

/// Opens a store in `dir`.
async fn open(dir: &Path, options: SqliteOptions) -> Arc<SqliteStore> {
    SqliteStore::open(&dir.join("pitboss.sqlite"), options)
        .await
        .expect("open store")
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
                let dir = tempfile::tempdir().expect("temp dir");
                let store = open(dir.path(), SqliteOptions::default()).await;
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

/// `run_all`, as the PostgreSQL backend will call it: a fresh file per case.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn conformance_run_all() {
    let root = tempfile::tempdir().expect("temp dir");
    let made = AtomicUsize::new(0);
    conformance::run_all(|| {
        let path = root.path().join(format!(
            "case-{}.sqlite",
            made.fetch_add(1, Ordering::Relaxed)
        ));
        async move {
            let store: Arc<dyn Store> = SqliteStore::open(&path, SqliteOptions::default())
                .await
                .expect("open store");
            store
        }
    })
    .await;
    assert_eq!(made.load(Ordering::Relaxed), conformance::cases().len());
}

// ---------------------------------------------------------------------------------
// SQLite only.

/// The durability settings are in force on the connection that writes, not merely
/// requested: WAL journal and synchronous=FULL (2), so an ack survives power loss.
#[tokio::test]
async fn pragmas_are_wal_and_synchronous_full() {
    let dir = tempfile::tempdir().expect("temp dir");
    let store = open(dir.path(), SqliteOptions::default()).await;
    let (journal_mode, synchronous) = store.pragmas().await.expect("pragmas");
    assert_eq!(journal_mode, "wal");
    assert_eq!(synchronous, 2, "2 is FULL");
    store.shutdown().await;
}

/// Everything written is there after the store is closed and the file reopened,
/// and numbering goes on where it stopped. The parent directory is created.
#[tokio::test]
async fn data_survives_reopen() {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir
        .path()
        .join("nested")
        .join("deeper")
        .join("pitboss.sqlite");
    let store = SqliteStore::open(&path, SqliteOptions::default())
        .await
        .expect("open creates the parent directory");

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
    let account = AgentAccount {
        id: AgentId("ayla".into()),
        name: "Ayla".into(),
        password_hash: "$argon2id$stub".into(),
        role: Role::Supervisor,
        languages: vec!["tr".into()],
        departments: vec!["payments".into()],
        capacity: 4,
        created_at: 1_700_000_000_000,
        sessions_ended_at: 0,
    };
    store.put_agent(account.clone()).await.expect("agent");
    let secret = store.secret("jwt", vec![7; 32]).await.expect("secret");

    let record = store.conversation(id).await.expect("read");
    let entries = store.entries(id, 0, 100, true).await.expect("entries");
    let events = store.events(id).await.expect("events");
    let handoffs = store.handoffs(id).await.expect("handoffs");
    store.shutdown().await;

    let store = SqliteStore::open(&path, SqliteOptions::default())
        .await
        .expect("reopen");
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
        Some(account)
    );
    assert_eq!(
        store.secret("jwt", vec![0; 32]).await.expect("secret"),
        secret
    );
    // Numbering continues from the stored counters, not from 1.
    let next = appended(store.apply(Change::append(id, text("c2", "again"))).await);
    assert_eq!((next.entry.seq, next.entry.prev_public), (3, 1));
    // And a resend from before the restart is still recognised.
    let resent = appended(store.apply(Change::append(id, text("c1", "hello"))).await);
    assert!(resent.duplicate);
    assert_eq!(resent.entry, entries[0]);
    store.shutdown().await;
}

/// The recorded routing epoch survives a restart; a file from before the fence (its
/// migration not yet applied) gets it on open, starting at 0, with its data intact.
#[tokio::test]
async fn routing_epoch_survives_reopen_and_old_files_are_upgraded() {
    let dir = tempfile::tempdir().expect("temp dir");
    let store = open(dir.path(), SqliteOptions::default()).await;
    let id = create(&store).await;
    assert_eq!(store.raise_routing_epoch(9).await.expect("raise"), 9);
    store.shutdown().await;

    let store = open(dir.path(), SqliteOptions::default()).await;
    assert_eq!(store.routing_epoch().await.expect("epoch"), 9);
    assert_eq!(
        store.raise_routing_epoch(4).await.expect("raise"),
        9,
        "still monotonic after a restart"
    );
    store.shutdown().await;

    // Back to the schema before the fence.
    side_sql(dir.path(), "DROP TABLE routing_fence").await;
    side_sql(dir.path(), "DELETE FROM _sqlx_migrations WHERE version = 3").await;
    let store = open(dir.path(), SqliteOptions::default()).await;
    assert_eq!(store.routing_epoch().await.expect("epoch"), 0, "upgraded");
    assert!(store.conversation(id).await.expect("read").is_some());
    let requeue = Change {
        conversation: id,
        expect: Some(Expect {
            state: ConversationState::Active,
            agent: Some(AgentId("ayla".into())),
        }),
        set: Some(SetState {
            state: ConversationState::Queued,
            agent: None,
            close_reason: None,
            department: None,
        }),
        fence: Some(Fence {
            epoch: 3,
            capacity_of: None,
        }),
        ..Change::default()
    };
    store.apply(requeue).await.expect("a fenced change");
    assert_eq!(store.routing_epoch().await.expect("epoch"), 3);
    store.shutdown().await;
}

/// A fenced write refused inside a batch (stale epoch, or capacity) rolls back only
/// its own savepoint, the epoch it would have recorded included; the other writes
/// of the transaction, a fenced one among them, commit.
#[tokio::test]
async fn a_fenced_write_spares_its_batch() {
    let dir = tempfile::tempdir().expect("temp dir");
    let store = open(dir.path(), SqliteOptions::default()).await;
    let shared: Arc<dyn Store> = store.clone();
    conformance::fenced_write_spares_its_batch(shared, || store.commits()).await;
    store.shutdown().await;
}

/// Concurrent appends share transactions: 1000 of them take far fewer commits, yet
/// each is numbered and stored.
#[tokio::test]
async fn group_commit_batches_appends() {
    const APPENDS: usize = 1000;
    let dir = tempfile::tempdir().expect("temp dir");
    let store = open(dir.path(), SqliteOptions::default()).await;
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
    let dir = tempfile::tempdir().expect("temp dir");
    let options = SqliteOptions {
        max_batch: 10,
        ..SqliteOptions::default()
    };
    let store = open(dir.path(), options).await;
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
    let dir = tempfile::tempdir().expect("temp dir");
    let store = open(dir.path(), SqliteOptions::default()).await;
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

    let texts = texts_of(&store, id).await;
    assert_eq!(texts, ["original", "one", "two", "three"]);
    let record = store.conversation(id).await.expect("read").expect("found");
    assert_eq!(
        record.summary.state,
        ConversationState::Active,
        "refused set undone"
    );
    store.shutdown().await;
}

/// The writer remembers the rows it wrote, so a plain append skips its read. A row
/// changed behind its back (here by another connection, as a second process on the
/// file would) must not be overwritten from that memory: the append is refused by
/// the taken sequence number, then run again from the rows, and lands after it.
#[tokio::test]
async fn an_append_after_a_change_behind_the_writers_back_reads_the_rows() {
    let dir = tempfile::tempdir().expect("temp dir");
    let store = open(dir.path(), SqliteOptions::default()).await;
    let id = create(&store).await;
    let first = store.apply(Change::append(id, text("a", "first"))).await;
    assert_eq!(seq_of(&first), Some(1));
    let second = store.apply(Change::append(id, text("b", "second"))).await;
    assert_eq!(seq_of(&second), Some(2), "remembered counters");
    side_sql(
        dir.path(),
        &format!(
            "INSERT INTO entries (conversation_id, seq, prev_public, kind, sender_role, \
             sender_id, body, at) VALUES ('{id}', 3, 2, 'text', 'agent', 'ayla', 'behind', 0); \
             UPDATE conversations SET last_seq = 3, last_public_seq = 3 WHERE id = '{id}'"
        ),
    )
    .await;
    let fourth = store.apply(Change::append(id, text("c", "after"))).await;
    assert_eq!(seq_of(&fourth), Some(4), "{fourth:?}");
    // And a resend of a remembered message is still answered as one.
    let again = store
        .apply(Change::append(id, text("b", "second")))
        .await
        .expect("resend");
    let appended = again.appended.expect("the original");
    assert!(appended.duplicate);
    assert_eq!(appended.entry.seq, 2);
    let texts = texts_of(&store, id).await;
    assert_eq!(texts, ["first", "second", "behind", "after"]);
}

/// A write that fails halfway, after it had already inserted its entry and moved the
/// conversation, is undone whole by its savepoint and answered `Unavailable`; the
/// rest of its batch commits. The failure is injected with a trigger.
#[tokio::test]
async fn a_write_failing_halfway_is_undone_whole() {
    let dir = tempfile::tempdir().expect("temp dir");
    let store = open(dir.path(), SqliteOptions::default()).await;
    let id = create(&store).await;
    side_sql(
        dir.path(),
        "CREATE TRIGGER injected_fault BEFORE INSERT ON handoffs WHEN NEW.outcome = 'boom' \
         BEGIN SELECT RAISE(ABORT, 'injected fault'); END",
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
        matches!(results[1], Err(StoreError::Unavailable(_))),
        "{:?}",
        results[1]
    );
    assert_eq!(seq_of(&results[2]), Some(2), "the failed write left no gap");

    let texts = texts_of(&store, id).await;
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
/// `Unavailable`, nothing of it is stored, and the observer hears of none of it.
/// The failure is injected as a deferred foreign key, which SQLite checks at COMMIT.
#[tokio::test]
async fn a_failed_commit_fails_the_whole_batch() {
    let dir = tempfile::tempdir().expect("temp dir");
    let store = open(dir.path(), SqliteOptions::default()).await;
    let recorder = Arc::new(Recorder::default());
    store.set_observer(recorder.clone());
    let id = create(&store).await;
    side_sql(dir.path(), "CREATE TABLE parent (id TEXT PRIMARY KEY)").await;
    side_sql(
        dir.path(),
        "CREATE TABLE trap (parent_id TEXT REFERENCES parent (id) DEFERRABLE INITIALLY DEFERRED)",
    )
    .await;
    side_sql(
        dir.path(),
        "CREATE TRIGGER commit_bomb AFTER INSERT ON entries WHEN NEW.body = 'commit bomb' \
         BEGIN INSERT INTO trap (parent_id) VALUES ('missing'); END",
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
    let dir = tempfile::tempdir().expect("temp dir");
    let options = SqliteOptions {
        write_queue: 1,
        ..SqliteOptions::default()
    };
    let store = open(dir.path(), options.clone()).await;
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
    // Read back from a fresh open: what was acknowledged is on disk.
    let store = open(dir.path(), options).await;
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
    let dir = tempfile::tempdir().expect("temp dir");
    let store = open(dir.path(), SqliteOptions::default()).await;
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

    let store = open(dir.path(), SqliteOptions::default()).await;
    let record = store.conversation(id).await.expect("read").expect("found");
    assert_eq!(
        record.summary.last_seq, WRITES as Seq,
        "every queued write is durable"
    );
    store.shutdown().await;
}

/// A conversation is born queued or offline; this backend refuses any other state
/// rather than skip the queue's lifecycle event, and refuses an existing id as a
/// conflict (not a retryable outage).
#[tokio::test]
async fn create_refuses_existing_ids_and_other_states() {
    let dir = tempfile::tempdir().expect("temp dir");
    let store = open(dir.path(), SqliteOptions::default()).await;
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

/// `ping` answers while open and fails once shut down.
#[tokio::test]
async fn ping_follows_the_store() {
    let dir = tempfile::tempdir().expect("temp dir");
    let store = open(dir.path(), SqliteOptions::default()).await;
    store.ping().await.expect("ping while open");
    store.shutdown().await;
    assert!(store.ping().await.is_err(), "ping after shutdown");
}

// ---------------------------------------------------------------------------------
// Helpers.

/// Runs one statement on a second connection to the store's file: how the tests
/// inject faults (triggers) the store's own code cannot be made to produce.
async fn side_sql(dir: &Path, sql: &str) {
    use sqlx::{ConnectOptions, Connection};
    let mut conn = sqlx::sqlite::SqliteConnectOptions::new()
        .filename(dir.join("pitboss.sqlite"))
        .connect()
        .await
        .expect("side connection");
    sqlx::query(sql)
        .execute(&mut conn)
        .await
        .expect("side statement");
    conn.close().await.expect("close side connection");
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
async fn create(store: &SqliteStore) -> ConversationId {
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

/// Appends `n` messages of about 1 KiB one at a time (one commit each) and returns
/// the size of the write-ahead log afterwards.
async fn log_size_after_appends(options: SqliteOptions, n: usize) -> u64 {
    let dir = tempfile::tempdir().expect("temp dir");
    let store = open(dir.path(), options).await;
    let id = create(&store).await;
    let body = "x".repeat(1000);
    for i in 0..n {
        appended(
            store
                .apply(Change::append(id, text(&format!("c{i}"), &body)))
                .await,
        );
    }
    let wal = dir.path().join("pitboss.sqlite-wal");
    let size = std::fs::metadata(&wal).expect("the log exists").len();
    store.shutdown().await;
    size
}

/// The log starts over instead of growing with every commit: bounded by the
/// writer's own checkpoint, with or without the background one. Without either it
/// grows by at least a page per commit, which shows the measure can fail.
#[tokio::test]
async fn the_write_ahead_log_stays_bounded() {
    const APPENDS: usize = 1500;
    const PAGE: u64 = 4096;
    let unbounded = log_size_after_appends(
        SqliteOptions {
            checkpoint_every: None,
            autocheckpoint_pages: u32::MAX,
            ..SqliteOptions::default()
        },
        APPENDS,
    )
    .await;
    assert!(
        unbounded >= APPENDS as u64 * PAGE,
        "with no checkpoint at all the log should hold every commit: {unbounded} bytes"
    );
    for options in [
        SqliteOptions {
            autocheckpoint_pages: 200,
            ..SqliteOptions::default()
        },
        SqliteOptions {
            checkpoint_every: None,
            autocheckpoint_pages: 200,
            ..SqliteOptions::default()
        },
    ] {
        let background = options.checkpoint_every.is_some();
        let size = log_size_after_appends(options, APPENDS).await;
        assert!(
            size <= 400 * (PAGE + 24),
            "a 200-page log limit, background checkpoint {background}: {size} bytes"
        );
    }
}

/// A resend that is alone in its batch, to a conversation the writer remembers,
/// is answered as a duplicate; its batch still commits and the next append carries
/// on from the stored counters.
#[tokio::test]
async fn a_resend_alone_in_its_batch_commits_its_batch() {
    let dir = tempfile::tempdir().expect("temp dir");
    let store = open(dir.path(), SqliteOptions::default()).await;
    let id = create(&store).await;
    let first = appended(store.apply(Change::append(id, text("a", "one"))).await);
    let before = store.commits();
    let again = appended(store.apply(Change::append(id, text("a", "one"))).await);
    assert!(again.duplicate, "a resend is a duplicate");
    assert_eq!(again.entry.seq, first.entry.seq);
    assert_eq!(store.commits(), before + 1, "the resend's batch committed");
    let next = appended(store.apply(Change::append(id, text("b", "two"))).await);
    assert_eq!(next.entry.seq, first.entry.seq + 1);
    store.shutdown().await;
    let store = open(dir.path(), SqliteOptions::default()).await;
    let stored = store.entries(id, 0, 100, true).await.expect("entries");
    assert_eq!(
        stored.len(),
        2,
        "both appends survived a restart: {stored:?}"
    );
    store.shutdown().await;
}

/// The texts of every entry of `id`, notes included, in order.
async fn texts_of(store: &SqliteStore, id: ConversationId) -> Vec<String> {
    store
        .entries(id, 0, 100, true)
        .await
        .expect("entries")
        .into_iter()
        .map(|e| e.text)
        .collect()
}

/// Closes `id` (resolved), as the conformance cases do.
async fn close(store: &Arc<SqliteStore>, id: ConversationId) {
    conformance::close(&(store.clone() as Arc<dyn Store>), id).await;
}

/// Whether `needle` is anywhere in the store's database file or its write-ahead
/// log, read as bytes.
fn in_files(dir: &Path, needle: &str) -> Vec<String> {
    ["pitboss.sqlite", "pitboss.sqlite-wal"]
        .into_iter()
        .filter(|name| {
            std::fs::read(dir.join(name))
                .map(|bytes| bytes.windows(needle.len()).any(|w| w == needle.as_bytes()))
                .unwrap_or(false)
        })
        .map(str::to_owned)
        .collect()
}

/// What an erasure deletes cannot be read back from the files afterwards: not
/// from the database file's free space, nor from the log's older frames. What a
/// retention purge deletes is overwritten in the database file.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn erased_and_purged_text_is_not_left_in_the_files() {
    let dir = tempfile::tempdir().expect("temp dir");
    let store = open(dir.path(), SqliteOptions::default()).await;
    let erased = create(&store).await;
    for i in 0..20 {
        store
            .apply(Change::append(
                erased,
                text(
                    &format!("e{i}"),
                    &format!("ZQX-ERASE-ME-{i:02} my account details"),
                ),
            ))
            .await
            .expect("append");
    }
    close(&store, erased).await;
    // Another player's conversation, kept.
    let kept = NewConversation {
        player: PlayerCard {
            id: PlayerId("p:2".into()),
            ..PlayerCard::default()
        },
        ..new_conversation()
    };
    let kept_id = kept.id;
    store.create_conversation(kept).await.expect("create");
    store
        .apply(Change::append(kept_id, text("k1", "ZQX-KEEP-ME")))
        .await
        .expect("append");
    assert!(
        !in_files(dir.path(), "ZQX-ERASE-ME-07").is_empty(),
        "written"
    );

    let deleted = store
        .erase_player(&PlayerId("p:1".into()))
        .await
        .expect("erase");
    assert_eq!(deleted.conversations, 1);
    assert_eq!(in_files(dir.path(), "ZQX-ERASE-ME-"), Vec::<String>::new());
    assert!(
        !in_files(dir.path(), "ZQX-KEEP-ME").is_empty(),
        "the other player's text stays"
    );

    // A purge: the kept conversation, closed, goes; once the log is copied into
    // the file (as the checkpoints do), the file does not hold its text.
    close(&store, kept_id).await;
    let purged = store.purge_closed(now_ms() + 1, 100).await.expect("purge");
    assert_eq!(purged.deleted.conversations, 1);
    side_sql(dir.path(), "PRAGMA wal_checkpoint(TRUNCATE)").await;
    assert_eq!(in_files(dir.path(), "ZQX-KEEP-ME"), Vec::<String>::new());
    store.shutdown().await;
}
