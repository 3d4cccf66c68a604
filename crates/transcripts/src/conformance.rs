//! The backend-neutral conformance suite: one async function per behaviour of the
//! [`Store`] contract, each given a fresh, empty store. Every backend (SQLite now,
//! PostgreSQL later) runs all of them through [`run_all`], or one by one.
//!
//! It owns the checks, not the stores: a backend's tests make the stores. The
//! functions panic (assert) on the first broken behaviour, like any test; they are
//! plain library code so that another crate's tests can run them.

use crate::{
    now_ms, AgentAccount, Applied, Change, CommitObserver, ConversationFilter, ConversationRecord,
    Deleted, Expect, Fence, Handoff, KpiFilter, KpiRow, LifecycleEvent, LifecycleKind,
    NewConversation, NewEntry, Open, PlayerExport, ReadMarks, SetState, Store, StoreError,
    StoredEntry, PURGE_CHUNK,
};
use pitboss_protocol::{
    AgentId, ConversationId, ConversationState, MessageKind, Participant, PlayerCard, PlayerId,
    Role, Seq,
};
use std::collections::BTreeMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex, PoisonError};
use tokio::task::JoinSet;

/// The future of one conformance case.
pub type CaseFuture = Pin<Box<dyn Future<Output = ()> + Send>>;

/// One conformance case: runs against a fresh, empty store and panics if the store
/// breaks the contract.
pub type Case = fn(Arc<dyn Store>) -> CaseFuture;

/// Every case, by name, in the order [`run_all`] runs them.
pub fn cases() -> Vec<(&'static str, Case)> {
    macro_rules! case {
        ($name:ident) => {
            (stringify!($name), {
                fn run(store: Arc<dyn Store>) -> CaseFuture {
                    Box::pin($name(store))
                }
                run as Case
            })
        };
    }
    vec![
        case!(create_and_read_back),
        case!(seq_gap_free_under_concurrency),
        case!(seq_gap_free_across_conversations),
        case!(prev_public_skips_notes),
        case!(read_marks_only_rise_within_what_each_side_sees),
        case!(idempotent_resend),
        case!(client_id_conflict),
        case!(client_id_scoped_by_sender),
        case!(unknown_conversation_not_found),
        case!(precondition_mismatch_writes_nothing),
        case!(rating_once),
        case!(entries_paging),
        case!(observer_sees_every_entry_once),
        case!(events_and_handoffs_recorded),
        case!(agents_crud),
        case!(ended_sessions_only_rise_and_outlive_a_replace),
        case!(an_admin_always_remains),
        case!(secret_get_or_create),
        case!(catalog_per_kind_and_language),
        case!(set_state_moves_department),
        case!(resend_recognised_before_precondition),
        case!(an_entry_is_refused_once_its_sender_may_no_longer_write),
        case!(open_conversations_exclude_closed),
        case!(open_limit_holds_per_player),
        case!(open_conversations_ordered_by_creation_then_id),
        case!(conversations_filtered_newest_first),
        case!(recent_handle_times),
        case!(queue_events_of_queued_conversations),
        case!(transfer_events_of_active_conversations),
        case!(writes_after_shutdown_unavailable),
        case!(fence_at_or_above_recorded_epoch_applies),
        case!(fence_below_recorded_epoch_writes_nothing),
        case!(fence_checked_after_resend_and_expect_before_capacity),
        case!(raise_routing_epoch_is_monotonic),
        case!(fence_capacity_of_limits_active_conversations),
        case!(audit_records_listed_newest_first_with_filters),
        case!(audit_purge_deletes_only_older_records_in_chunks),
        case!(audit_limit_is_capped),
        case!(purge_deletes_only_closed_and_old_enough),
        case!(purge_works_in_chunks),
        case!(export_gathers_everything_of_one_player),
        case!(an_export_is_one_snapshot),
        case!(kpi_rows_read_each_conversation_s_figures),
        case!(erase_removes_one_player_only),
        case!(erase_refused_while_a_conversation_is_open),
    ]
}

/// Runs every case, each on a fresh store from `make`, and shuts each store down
/// after its case. Panics naming the first case that fails.
pub async fn run_all<F, Fut>(make: F)
where
    F: Fn() -> Fut,
    Fut: Future<Output = Arc<dyn Store>>,
{
    for (name, case) in cases() {
        tracing::info!(case = name, "store conformance case");
        let store = make().await;
        // On its own task so a failing assertion can be reported with the case's name.
        let outcome = tokio::spawn(case(store.clone())).await;
        store.shutdown().await;
        if let Err(e) = outcome {
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
            panic!("store conformance case `{name}` failed: {why}");
        }
    }
}

// ---------------------------------------------------------------------------------
// The cases.

/// A created conversation reads back as it was given, with no entries, and its
/// `queued` or `offline` event; creating the same id again fails and changes nothing.
pub async fn create_and_read_back(store: Arc<dyn Store>) {
    let queued = new_conversation("p:alice", ConversationState::Queued, 1_700_000_000_000);
    store
        .create_conversation(queued.clone())
        .await
        .expect("create queued");
    let offline = new_conversation("v:bob", ConversationState::Offline, 1_700_000_001_000);
    store
        .create_conversation(offline.clone())
        .await
        .expect("create offline");

    let record = store
        .conversation(queued.id)
        .await
        .expect("read")
        .expect("created conversation is found");
    assert_eq!(record.player, queued.player, "player card round-trips");
    assert_eq!(record.summary.id, queued.id);
    assert_eq!(record.summary.player, queued.player.id);
    assert_eq!(record.summary.state, ConversationState::Queued);
    assert_eq!(record.summary.department, "general");
    assert_eq!(record.summary.language, "tr");
    assert_eq!(record.summary.agent, None);
    assert_eq!(record.summary.last_seq, 0);
    assert_eq!(record.summary.last_public_seq, 0);
    assert_eq!(record.summary.created_at, queued.created_at);
    assert_eq!(record.summary.closed_at, None);
    assert_eq!(record.summary.rating, None);
    assert_eq!(
        record.first_seq, 1,
        "nothing stored yet: the first entry will be 1"
    );
    assert_eq!(record.close_reason, None);
    assert_eq!(record.rating_comment, None);

    let kinds = |events: Vec<LifecycleEvent>| events.iter().map(|e| e.kind).collect::<Vec<_>>();
    assert_eq!(
        kinds(store.events(queued.id).await.expect("events")),
        [LifecycleKind::Queued]
    );
    assert_eq!(
        kinds(store.events(offline.id).await.expect("events")),
        [LifecycleKind::Offline]
    );
    assert_eq!(
        store.events(queued.id).await.expect("events")[0].at,
        queued.created_at,
        "the creation event happens when the conversation was created"
    );

    // A second create with the same id must not replace the first.
    let mut again = new_conversation("p:mallory", ConversationState::Offline, 1_800_000_000_000);
    again.id = queued.id;
    assert!(
        store.create_conversation(again).await.is_err(),
        "creating an existing id must fail"
    );
    let after = store
        .conversation(queued.id)
        .await
        .expect("read")
        .expect("found");
    assert_eq!(after, record, "a failed create changes nothing");
    assert_eq!(store.events(queued.id).await.expect("events").len(), 1);
}

/// 200 concurrent appends to one conversation get sequence numbers 1..=200, no gap,
/// no repeat, and read back in that order with correct `prev_public`.
pub async fn seq_gap_free_under_concurrency(store: Arc<dyn Store>) {
    const APPENDS: usize = 200;
    let id = create(&store, ConversationState::Active).await;
    let mut tasks = JoinSet::new();
    for i in 0..APPENDS {
        let store = store.clone();
        // Every third is a note, so public and private numbering interleave.
        let entry = if i % 3 == 0 {
            note(agent("ayla"), &format!("n{i}"), &format!("note {i}"))
        } else {
            message(player("p:1"), &format!("m{i}"), &format!("message {i}"))
        };
        tasks.spawn(async move { store.apply(Change::append(id, entry)).await });
    }
    let mut returned = BTreeMap::new();
    while let Some(joined) = tasks.join_next().await {
        let appended = appended(joined.expect("task")).expect("append succeeds");
        assert!(!appended.duplicate, "every client id is new");
        let seq = appended.entry.seq;
        assert!(
            returned.insert(seq, appended.entry).is_none(),
            "sequence number {seq} given twice"
        );
    }
    let seqs: Vec<Seq> = returned.keys().copied().collect();
    assert_eq!(
        seqs,
        (1..=APPENDS as Seq).collect::<Vec<_>>(),
        "gap-free from 1"
    );

    let stored = store.entries(id, 0, 1000, true).await.expect("entries");
    assert_eq!(stored.len(), APPENDS);
    check_prev_public(&stored);
    for entry in &stored {
        assert_eq!(
            Some(entry),
            returned.get(&entry.seq),
            "stored as acknowledged"
        );
    }
    let record = store.conversation(id).await.expect("read").expect("found");
    assert_eq!(record.summary.last_seq, APPENDS as Seq);
    let last_public = stored.iter().filter(|e| e.is_public()).map(|e| e.seq).max();
    assert_eq!(Some(record.summary.last_public_seq), last_public);
    assert_eq!(record.first_seq, 1);
}

/// Concurrent appends spread over several conversations number each conversation
/// on its own, from 1, without gaps or cross-talk.
pub async fn seq_gap_free_across_conversations(store: Arc<dyn Store>) {
    const CONVERSATIONS: usize = 5;
    const EACH: usize = 40;
    let mut ids = Vec::new();
    for _ in 0..CONVERSATIONS {
        ids.push(create(&store, ConversationState::Active).await);
    }
    let mut tasks = JoinSet::new();
    // Interleaved: conversation 0, 1, 2… then again, so batches mix conversations.
    for i in 0..EACH {
        for (c, id) in ids.iter().copied().enumerate() {
            let store = store.clone();
            let entry = message(player("p:1"), &format!("m{i}"), &format!("c{c} m{i}"));
            tasks.spawn(async move { (c, store.apply(Change::append(id, entry)).await) });
        }
    }
    while let Some(joined) = tasks.join_next().await {
        let (c, result) = joined.expect("task");
        let appended = appended(result).expect("append succeeds");
        assert_eq!(appended.entry.conversation, ids[c]);
    }
    for (c, id) in ids.iter().copied().enumerate() {
        let stored = store.entries(id, 0, 1000, true).await.expect("entries");
        let seqs: Vec<Seq> = stored.iter().map(|e| e.seq).collect();
        assert_eq!(
            seqs,
            (1..=EACH as Seq).collect::<Vec<_>>(),
            "conversation {c}"
        );
        assert!(
            stored.iter().all(|e| e.text.starts_with(&format!("c{c} "))),
            "conversation {c} holds only its own entries"
        );
        check_prev_public(&stored);
    }
}

/// `prev_public` points at the previous entry a player may see, skipping notes, and
/// `last_public_seq` does not move for a note.
pub async fn prev_public_skips_notes(store: Arc<dyn Store>) {
    let id = create(&store, ConversationState::Active).await;
    let script = [
        message(player("p:1"), "a", "hello"),
        note(agent("ayla"), "b", "VIP, be nice"),
        note(agent("ayla"), "c", "checking payments"),
        system_event("transferred"),
        message(agent("ayla"), "d", "hi"),
        note(agent("ayla"), "e", "done"),
    ];
    let mut got = Vec::new();
    for entry in script {
        let applied = store.apply(Change::append(id, entry)).await;
        let entry = appended(applied).expect("append").entry;
        got.push((entry.seq, entry.prev_public));
    }
    assert_eq!(got, [(1, 0), (2, 1), (3, 1), (4, 1), (5, 4), (6, 5)]);
    let record = store.conversation(id).await.expect("read").expect("found");
    assert_eq!(record.summary.last_seq, 6);
    assert_eq!(
        record.summary.last_public_seq, 5,
        "a trailing note is not public"
    );
    let stored = store.entries(id, 0, 100, true).await.expect("entries");
    // Agents see every entry, so their `prev` is always the one before.
    assert!(stored.iter().all(|e| e.to_message(false).prev == e.seq - 1));
    assert_eq!(stored[4].to_message(true).prev, 4);
}

/// A read mark only rises, and never above what its side may see: the player's
/// stops at the last public entry, the staff's at the last entry. The staff's
/// keeps who raised it last. Marking an unknown conversation does nothing.
pub async fn read_marks_only_rise_within_what_each_side_sees(store: Arc<dyn Store>) {
    let id = create(&store, ConversationState::Active).await;
    let record = store.conversation(id).await.expect("read").expect("found");
    assert_eq!(record.read, ReadMarks::default(), "nothing read yet");
    let script = [
        message(player("p:1"), "a", "hello"),
        message(agent("ayla"), "b", "hi"),
        message(player("p:1"), "c", "my withdrawal"),
        message(agent("ayla"), "d", "checking"),
        message(player("p:1"), "e", "thanks"),
        note(agent("ayla"), "f", "VIP"),
    ];
    for entry in script {
        appended(store.apply(Change::append(id, entry)).await).expect("append");
    }
    let marks = |store: Arc<dyn Store>| async move {
        store
            .conversation(id)
            .await
            .expect("read")
            .expect("found")
            .read
    };
    store.mark_read(id, player("p:1"), 2).await.expect("mark");
    store.mark_read(id, agent("ayla"), 3).await.expect("mark");
    let read = marks(store.clone()).await;
    assert_eq!((read.player, read.staff), (2, 3));
    assert_eq!(read.staff_by, Some(agent("ayla")));

    store.mark_read(id, player("p:1"), 1).await.expect("mark");
    store.mark_read(id, agent("sam"), 3).await.expect("mark");
    let read = marks(store.clone()).await;
    assert_eq!((read.player, read.staff), (2, 3), "a mark never falls");
    assert_eq!(
        read.staff_by,
        Some(agent("ayla")),
        "nor changes hands at the same place"
    );

    store
        .mark_read(id, player("p:1"), 1_000)
        .await
        .expect("mark");
    store
        .mark_read(id, agent("sam"), 1_000)
        .await
        .expect("mark");
    let read = marks(store.clone()).await;
    assert_eq!(
        read.player, 5,
        "the player's stops at the last public entry"
    );
    assert_eq!(read.staff, 6, "the staff's at the last entry");
    assert_eq!(read.staff_by, Some(agent("sam")));

    let unknown = ConversationId(uuid::Uuid::new_v4());
    store
        .mark_read(unknown, player("p:1"), 3)
        .await
        .expect("an unknown conversation is not an error");
    assert!(store.conversation(unknown).await.expect("read").is_none());
}

/// Resending a client id with the same text returns the original entry, marked
/// duplicate, however much later; nothing new is stored. Concurrent resends store
/// the message once.
pub async fn idempotent_resend(store: Arc<dyn Store>) {
    let id = create(&store, ConversationState::Active).await;
    let first = appended(
        store
            .apply(Change::append(id, message(player("p:1"), "c1", "hello")))
            .await,
    )
    .expect("first send");
    assert!(!first.duplicate);
    appended(
        store
            .apply(Change::append(id, message(agent("ayla"), "a1", "hi there")))
            .await,
    )
    .expect("reply");

    let resent = appended(
        store
            .apply(Change::append(id, message(player("p:1"), "c1", "hello")))
            .await,
    )
    .expect("resend");
    assert!(resent.duplicate, "a resend is reported as a duplicate");
    assert_eq!(
        resent.entry, first.entry,
        "a resend returns the original entry"
    );
    let record = store.conversation(id).await.expect("read").expect("found");
    assert_eq!(record.summary.last_seq, 2, "a resend stores nothing");
    assert_eq!(
        store
            .entries(id, 0, 100, true)
            .await
            .expect("entries")
            .len(),
        2
    );

    // The same message sent ten times at once (a client retrying over several
    // connections) is stored once; every answer carries that one sequence number.
    let mut tasks = JoinSet::new();
    for _ in 0..10 {
        let store = store.clone();
        let entry = message(player("p:1"), "burst", "are you there?");
        tasks.spawn(async move { store.apply(Change::append(id, entry)).await });
    }
    let mut originals = 0;
    let mut seqs = Vec::new();
    while let Some(joined) = tasks.join_next().await {
        let appended = appended(joined.expect("task")).expect("send");
        originals += usize::from(!appended.duplicate);
        seqs.push(appended.entry.seq);
    }
    assert_eq!(originals, 1, "exactly one send is the original");
    assert!(
        seqs.iter().all(|&s| s == 3),
        "all answers name seq 3: {seqs:?}"
    );
    let record = store.conversation(id).await.expect("read").expect("found");
    assert_eq!(record.summary.last_seq, 3);
}

/// The same client id by the same sender with other text is a conflict, and the
/// whole change it came in is refused.
pub async fn client_id_conflict(store: Arc<dyn Store>) {
    let id = create(&store, ConversationState::Active).await;
    appended(
        store
            .apply(Change::append(id, message(player("p:1"), "c1", "hello")))
            .await,
    )
    .expect("first send");
    let other = store
        .apply(Change::append(
            id,
            message(player("p:1"), "c1", "something else"),
        ))
        .await;
    assert!(
        matches!(other, Err(StoreError::Conflict)),
        "expected Conflict, got {other:?}"
    );
    // In a change that also closes the conversation: nothing of it is written.
    let change = Change {
        set: Some(SetState {
            state: ConversationState::Closed,
            agent: None,
            close_reason: Some("resolved".into()),
            department: None,
        }),
        events: vec![lifecycle(LifecycleKind::Closed, None)],
        ..Change::append(id, message(player("p:1"), "c1", "bye"))
    };
    let result = store.apply(change).await;
    assert!(
        matches!(result, Err(StoreError::Conflict)),
        "got {result:?}"
    );
    let record = store.conversation(id).await.expect("read").expect("found");
    assert_eq!(record.summary.last_seq, 1, "a conflict stores nothing");
    assert_eq!(record.summary.state, ConversationState::Active);
    let stored = store.entries(id, 0, 100, true).await.expect("entries");
    assert_eq!(stored.len(), 1);
    assert_eq!(stored[0].text, "hello", "the original text is kept");
    assert_eq!(store.events(id).await.expect("events").len(), 1);
}

/// A client id belongs to its sender and conversation: another sender, or another
/// conversation, may use the same id for a separate message.
pub async fn client_id_scoped_by_sender(store: Arc<dyn Store>) {
    let id = create(&store, ConversationState::Active).await;
    let other = create(&store, ConversationState::Active).await;
    let by_player = appended(
        store
            .apply(Change::append(id, message(player("p:1"), "x", "hello")))
            .await,
    )
    .expect("player");
    let by_agent = appended(
        store
            .apply(Change::append(id, message(agent("ayla"), "x", "hello")))
            .await,
    )
    .expect("agent");
    let elsewhere = appended(
        store
            .apply(Change::append(other, message(player("p:1"), "x", "hello")))
            .await,
    )
    .expect("other conversation");
    assert!(!by_player.duplicate && !by_agent.duplicate && !elsewhere.duplicate);
    assert_eq!((by_player.entry.seq, by_agent.entry.seq), (1, 2));
    assert_eq!(elsewhere.entry.seq, 1);
    assert_eq!(by_agent.entry.sender, agent("ayla"));
}

/// Changing a conversation that does not exist is `NotFound` and reading it is
/// `None`.
pub async fn unknown_conversation_not_found(store: Arc<dyn Store>) {
    let nowhere = ConversationId::new();
    let result = store
        .apply(Change::append(nowhere, message(player("p:1"), "c", "hi")))
        .await;
    assert!(
        matches!(result, Err(StoreError::NotFound)),
        "got {result:?}"
    );
    let result = store
        .apply(Change {
            conversation: nowhere,
            events: vec![lifecycle(LifecycleKind::Offered, Some("ayla"))],
            ..Change::default()
        })
        .await;
    assert!(
        matches!(result, Err(StoreError::NotFound)),
        "got {result:?}"
    );
    assert_eq!(store.conversation(nowhere).await.expect("read"), None);
}

/// A change whose precondition does not hold fails with `Precondition` and writes
/// nothing at all; among concurrent claims on one queued conversation exactly one
/// wins (the compare-and-set that fences a deposed router).
pub async fn precondition_mismatch_writes_nothing(store: Arc<dyn Store>) {
    let id = create(&store, ConversationState::Queued).await;
    let before = store.conversation(id).await.expect("read").expect("found");
    let everything = |expect: Expect| Change {
        conversation: id,
        expect: Some(expect),
        set: Some(SetState {
            state: ConversationState::Closed,
            agent: None,
            close_reason: Some("spam".into()),
            department: None,
        }),
        entry: Some(system_event("closed")),
        events: vec![lifecycle(LifecycleKind::Closed, Some("ayla"))],
        handoff: Some(handoff("ayla", "department:payments", "requested")),
        rating: Some((5, Some("great".into()))),
        fence: None,
        open: None,
    };
    // Wrong state.
    let result = store
        .apply(everything(Expect {
            state: ConversationState::Active,
            agent: None,
        }))
        .await;
    assert!(
        matches!(result, Err(StoreError::Precondition)),
        "got {result:?}"
    );
    // Right state, wrong owner.
    let result = store
        .apply(everything(Expect {
            state: ConversationState::Queued,
            agent: Some(AgentId("ayla".into())),
        }))
        .await;
    assert!(
        matches!(result, Err(StoreError::Precondition)),
        "got {result:?}"
    );

    let after = store.conversation(id).await.expect("read").expect("found");
    assert_eq!(after, before, "no state, owner, sequence or rating change");
    assert!(store
        .entries(id, 0, 100, true)
        .await
        .expect("entries")
        .is_empty());
    assert_eq!(
        store.events(id).await.expect("events").len(),
        1,
        "only `queued`"
    );
    assert!(store.handoffs(id).await.expect("handoffs").is_empty());

    // Twenty agents claim the queued conversation at once, each expecting it
    // unowned: one gets it, the rest are refused and leave no trace.
    let mut tasks = JoinSet::new();
    for i in 0..20 {
        let store = store.clone();
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
                events: vec![lifecycle(LifecycleKind::Assigned, Some(&me))],
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
    let record = store.conversation(id).await.expect("read").expect("found");
    assert_eq!(record.summary.state, ConversationState::Active);
    assert_eq!(record.summary.agent, Some(AgentId(winners[0].clone())));
    assert_eq!(
        record.summary.last_seq, 1,
        "only the winner's entry is stored"
    );
    let events = store.events(id).await.expect("events");
    assert_eq!(events.len(), 2, "queued, and the winner's assigned");
    assert_eq!(events[1].agent, Some(AgentId(winners[0].clone())));
}

/// A conversation is rated once, with a score from 1 to 5; anything else is
/// `Precondition` and leaves the stored rating alone.
pub async fn rating_once(store: Arc<dyn Store>) {
    let id = create(&store, ConversationState::Active).await;
    let rate = |score: u8, comment: &str| Change {
        conversation: id,
        rating: Some((score, Some(comment.to_string()))),
        events: vec![lifecycle(LifecycleKind::Rated, None)],
        ..Change::default()
    };
    for bad in [0, 6] {
        let result = store.apply(rate(bad, "out of range")).await;
        assert!(
            matches!(result, Err(StoreError::Precondition)),
            "score {bad}: got {result:?}"
        );
    }
    let record = store.conversation(id).await.expect("read").expect("found");
    assert_eq!(record.summary.rating, None, "a refused score is not stored");

    store.apply(rate(4, "quick")).await.expect("first rating");
    let again = store.apply(rate(1, "changed my mind")).await;
    assert!(
        matches!(again, Err(StoreError::Precondition)),
        "got {again:?}"
    );

    let record = store.conversation(id).await.expect("read").expect("found");
    assert_eq!(record.summary.rating, Some(4));
    assert_eq!(record.rating_comment.as_deref(), Some("quick"));
    let rated = store.events(id).await.expect("events");
    assert_eq!(
        rated
            .iter()
            .filter(|e| e.kind == LifecycleKind::Rated)
            .count(),
        1,
        "only the accepted rating left an event"
    );
}

/// `entries` pages by `after` and `limit`, ascending, and leaves notes out unless
/// asked; every field round-trips.
pub async fn entries_paging(store: Arc<dyn Store>) {
    let id = create(&store, ConversationState::Active).await;
    let mut sent = Vec::new();
    for i in 1..=10u64 {
        // Notes at 3 and 6.
        let entry = match i {
            3 | 6 => note(agent("ayla"), &format!("k{i}"), &format!("note {i}")),
            7 => system_event("transfer_requested"),
            _ => message(player("p:1"), &format!("k{i}"), &format!("text {i}")),
        };
        let stored = appended(store.apply(Change::append(id, entry.clone())).await)
            .expect("append")
            .entry;
        assert_eq!(stored.kind, entry.kind);
        assert_eq!(stored.sender, entry.sender);
        assert_eq!(stored.text, entry.text);
        assert_eq!(stored.client_id, entry.client_id);
        assert_eq!(stored.event, entry.event);
        sent.push(stored);
    }
    let seqs = |entries: Vec<StoredEntry>| entries.iter().map(|e| e.seq).collect::<Vec<_>>();
    let page = |after, limit, notes| {
        let store = store.clone();
        async move {
            seqs(
                store
                    .entries(id, after, limit, notes)
                    .await
                    .expect("entries"),
            )
        }
    };
    assert_eq!(page(0, 4, true).await, [1, 2, 3, 4]);
    assert_eq!(page(4, 4, true).await, [5, 6, 7, 8]);
    assert_eq!(page(8, 4, true).await, [9, 10]);
    assert_eq!(page(10, 4, true).await, Vec::<Seq>::new());
    assert_eq!(page(0, 100, false).await, [1, 2, 4, 5, 7, 8, 9, 10]);
    assert_eq!(
        page(2, 3, false).await,
        [4, 5, 7],
        "limit counts public entries"
    );
    assert_eq!(
        store.entries(id, 0, 100, true).await.expect("entries"),
        sent,
        "entries read back exactly as acknowledged"
    );
}

/// The observer is told of every newly stored entry exactly once, in sequence order
/// per conversation, with its origin, before the writer's caller gets its answer;
/// never of resends, conflicts or refused changes.
pub async fn observer_sees_every_entry_once(store: Arc<dyn Store>) {
    let recorder = Arc::new(Recorder::default());
    store.set_observer(recorder.clone());
    let mut ids = Vec::new();
    for _ in 0..3 {
        ids.push(create(&store, ConversationState::Active).await);
    }
    let mut tasks = JoinSet::new();
    for round in 0..30u64 {
        for (c, id) in ids.iter().copied().enumerate() {
            let origin = (c as u64) * 1000 + round;
            let mut entry = message(
                player("p:1"),
                &format!("m{round}"),
                &format!("text {round}"),
            );
            entry.origin = origin;
            let kinds = [
                Change::append(id, entry.clone()),
                // A resend of the same message (may even arrive first).
                Change::append(id, entry.clone()),
                // The same id with other text: one of the two is a conflict.
                Change::append(
                    id,
                    NewEntry {
                        text: format!("other {round}"),
                        ..entry.clone()
                    },
                ),
                // A refused change carrying an entry.
                Change {
                    expect: Some(Expect {
                        state: ConversationState::Closed,
                        agent: None,
                    }),
                    ..Change::append(id, note(agent("ayla"), &format!("n{round}"), "never"))
                },
            ];
            for change in kinds {
                let store = store.clone();
                let recorder = recorder.clone();
                tasks.spawn(async move {
                    let result = store.apply(change).await;
                    if let Ok(Applied {
                        appended: Some(a), ..
                    }) = &result
                    {
                        // Told before answered: a new entry is already with the
                        // observer when its writer hears back.
                        let seen = recorder.seen();
                        assert!(
                            seen.iter().any(|(e, _)| e == &a.entry),
                            "entry {}#{} answered before the observer saw it",
                            a.entry.conversation,
                            a.entry.seq
                        );
                    }
                    result
                });
            }
        }
    }
    while let Some(joined) = tasks.join_next().await {
        match joined.expect("task") {
            Ok(_) | Err(StoreError::Conflict) | Err(StoreError::Precondition) => {}
            Err(e) => panic!("unexpected error {e:?}"),
        }
    }

    let seen = recorder.seen();
    let mut total = 0;
    for (c, id) in ids.iter().copied().enumerate() {
        let stored = store.entries(id, 0, 1000, true).await.expect("entries");
        assert_eq!(stored.len(), 30, "one entry per client id");
        let observed: Vec<&(StoredEntry, u64)> =
            seen.iter().filter(|(e, _)| e.conversation == id).collect();
        let observed_entries: Vec<StoredEntry> = observed.iter().map(|(e, _)| e.clone()).collect();
        assert_eq!(
            observed_entries, stored,
            "the observer saw exactly the stored entries, once each, in seq order"
        );
        for (entry, origin) in observed {
            let round: u64 = entry
                .client_id
                .as_deref()
                .and_then(|id| id.strip_prefix('m'))
                .and_then(|n| n.parse().ok())
                .expect("client id m<round>");
            assert_eq!(
                *origin,
                c as u64 * 1000 + round,
                "origin travels with its entry"
            );
        }
        total += stored.len();
    }
    assert_eq!(
        seen.len(),
        total,
        "no entry reported twice, none from elsewhere"
    );
}

/// Lifecycle events and hand-offs are recorded with the change that carries them,
/// oldest first, as given; closing sets `closed_at` and the reason.
pub async fn events_and_handoffs_recorded(store: Arc<dyn Store>) {
    let id = create(&store, ConversationState::Queued).await;
    let ayla = Some(AgentId("ayla".into()));
    let assigned = vec![
        LifecycleEvent {
            kind: LifecycleKind::Offered,
            agent: ayla.clone(),
            detail: serde_json::json!({"expires_in_ms": 30000}),
            at: 1_000,
        },
        lifecycle(LifecycleKind::Accepted, Some("ayla")),
        lifecycle(LifecycleKind::Assigned, Some("ayla")),
    ];
    store
        .apply(Change {
            conversation: id,
            expect: Some(Expect {
                state: ConversationState::Queued,
                agent: None,
            }),
            set: Some(SetState {
                state: ConversationState::Active,
                agent: ayla.clone(),
                close_reason: None,
                department: None,
            }),
            entry: Some(system_event("assigned")),
            events: assigned.clone(),
            ..Change::default()
        })
        .await
        .expect("assign");

    let requested = handoff("ayla", "agent:bora", "requested");
    store
        .apply(Change {
            conversation: id,
            events: vec![lifecycle(LifecycleKind::TransferRequested, Some("ayla"))],
            handoff: Some(requested.clone()),
            ..Change::default()
        })
        .await
        .expect("request transfer");
    let accepted = handoff("ayla", "agent:bora", "accepted");
    let bora = Some(AgentId("bora".into()));
    store
        .apply(Change {
            conversation: id,
            expect: Some(Expect {
                state: ConversationState::Active,
                agent: ayla.clone(),
            }),
            set: Some(SetState {
                state: ConversationState::Active,
                agent: bora.clone(),
                close_reason: None,
                department: None,
            }),
            events: vec![lifecycle(LifecycleKind::Transferred, Some("bora"))],
            handoff: Some(accepted.clone()),
            ..Change::default()
        })
        .await
        .expect("transfer");
    assert_eq!(
        store.handoffs(id).await.expect("handoffs"),
        [requested, accepted],
        "hand-offs oldest first, as given"
    );

    let before_close = now_ms();
    store
        .apply(Change {
            conversation: id,
            set: Some(SetState {
                state: ConversationState::Closed,
                agent: bora.clone(),
                close_reason: Some("resolved".into()),
                department: None,
            }),
            entry: Some(system_event("closed")),
            events: vec![lifecycle(LifecycleKind::Closed, Some("bora"))],
            ..Change::default()
        })
        .await
        .expect("close");
    let record = store.conversation(id).await.expect("read").expect("found");
    assert_eq!(record.summary.state, ConversationState::Closed);
    assert_eq!(record.summary.agent, bora);
    assert_eq!(record.close_reason.as_deref(), Some("resolved"));
    let closed_at = record.summary.closed_at.expect("closing sets closed_at");
    assert!(closed_at >= before_close && closed_at <= now_ms() + 1);

    let events = store.events(id).await.expect("events");
    let kinds: Vec<LifecycleKind> = events.iter().map(|e| e.kind).collect();
    assert_eq!(
        kinds,
        [
            LifecycleKind::Queued,
            LifecycleKind::Offered,
            LifecycleKind::Accepted,
            LifecycleKind::Assigned,
            LifecycleKind::TransferRequested,
            LifecycleKind::Transferred,
            LifecycleKind::Closed,
        ]
    );
    assert_eq!(
        events[1..4],
        assigned[..],
        "agent, detail and time as given"
    );
}

/// Accounts are created, read, listed by login, replaced and removed.
pub async fn agents_crud(store: Arc<dyn Store>) {
    let mut bora = account("bora", Role::Agent);
    let ayla = account("ayla", Role::Supervisor);
    store.put_agent(bora.clone()).await.expect("put bora");
    store.put_agent(ayla.clone()).await.expect("put ayla");
    assert_eq!(
        store.agent(&bora.id).await.expect("read"),
        Some(bora.clone())
    );
    assert_eq!(
        store.agents().await.expect("list"),
        [ayla.clone(), bora.clone()],
        "listed by login"
    );

    bora.name = "Bora K.".into();
    bora.languages = vec!["tr".into()];
    bora.departments = vec!["risk".into()];
    bora.capacity = 7;
    store.put_agent(bora.clone()).await.expect("replace bora");
    assert_eq!(
        store.agent(&bora.id).await.expect("read"),
        Some(bora.clone())
    );
    assert_eq!(
        store.agents().await.expect("list").len(),
        2,
        "replaced, not added"
    );

    assert!(store.remove_agent(&bora.id).await.expect("remove"));
    assert!(!store.remove_agent(&bora.id).await.expect("remove again"));
    assert_eq!(store.agent(&bora.id).await.expect("read"), None);
    assert_eq!(store.agents().await.expect("list"), [ayla]);
}

/// `end_sessions` records when an account's sessions ended, only ever later, and
/// changes the account's credential; replacing the account keeps it.
pub async fn ended_sessions_only_rise_and_outlive_a_replace(store: Arc<dyn Store>) {
    let mut bora = account("bora", Role::Agent);
    store.put_agent(bora.clone()).await.expect("put bora");
    let before = bora.credential();
    assert!(store.end_sessions(&bora.id, 5_000).await.expect("end"));
    let read = store.agent(&bora.id).await.expect("read").expect("bora");
    assert_eq!(read.sessions_ended_at, 5_000);
    assert_ne!(
        read.credential(),
        before,
        "a sign-out changes the credential"
    );
    assert!(store
        .end_sessions(&bora.id, 4_000)
        .await
        .expect("end earlier"));
    assert_eq!(
        store
            .agent(&bora.id)
            .await
            .expect("read")
            .expect("bora")
            .sessions_ended_at,
        5_000,
        "an earlier time does not move it back"
    );

    bora.capacity = 9;
    bora.sessions_ended_at = 0;
    store.put_agent(bora.clone()).await.expect("replace bora");
    let read = store.agent(&bora.id).await.expect("read").expect("bora");
    assert_eq!(read.capacity, 9);
    assert_eq!(
        read.sessions_ended_at, 5_000,
        "a replace keeps the sign-out"
    );

    assert!(!store
        .end_sessions(&AgentId("nobody".into()), 6_000)
        .await
        .expect("end nobody's"));
}

/// The admin role is never taken from the only account that has it, by removal or
/// by a new role, while everything else about that account may change; with no
/// admin at all nothing is refused. Two removals at once leave one admin.
pub async fn an_admin_always_remains(store: Arc<dyn Store>) {
    let bora = account("bora", Role::Agent);
    store.put_agent(bora.clone()).await.expect("put bora");
    assert!(
        store.remove_agent(&bora.id).await.expect("no admin at all"),
        "with no admin, nothing is refused"
    );

    let ada = account("ada", Role::Admin);
    store.put_agent(ada.clone()).await.expect("put ada");
    let demoted = AgentAccount {
        role: Role::Supervisor,
        ..ada.clone()
    };
    assert!(matches!(
        store.remove_agent(&ada.id).await,
        Err(StoreError::LastAdmin)
    ));
    assert!(matches!(
        store.put_agent(demoted.clone()).await,
        Err(StoreError::LastAdmin)
    ));
    assert_eq!(
        store.agent(&ada.id).await.expect("read"),
        Some(ada.clone()),
        "a refused write changes nothing"
    );
    let renamed = AgentAccount {
        name: "Ada L.".into(),
        ..ada.clone()
    };
    store
        .put_agent(renamed.clone())
        .await
        .expect("the last admin may change all but the role");

    let cem = account("cem", Role::Admin);
    store.put_agent(cem.clone()).await.expect("put cem");
    store
        .put_agent(demoted.clone())
        .await
        .expect("with another admin, ada may be demoted");
    assert!(
        matches!(
            store.remove_agent(&cem.id).await,
            Err(StoreError::LastAdmin)
        ),
        "cem is the only admin now"
    );

    store
        .put_agent(renamed.clone())
        .await
        .expect("ada admin again");
    let (first, second) =
        tokio::join!(store.remove_agent(&renamed.id), store.remove_agent(&cem.id));
    let removed = [&first, &second]
        .iter()
        .filter(|r| matches!(r, Ok(true)))
        .count();
    let refused = [&first, &second]
        .iter()
        .filter(|r| matches!(r, Err(StoreError::LastAdmin)))
        .count();
    assert_eq!(
        (removed, refused),
        (1, 1),
        "one removal passes, the other is refused: {first:?} {second:?}"
    );
    let admins = store
        .agents()
        .await
        .expect("list")
        .iter()
        .filter(|a| a.role == Role::Admin)
        .count();
    assert_eq!(admins, 1);
}

/// A secret is created from the first caller's bytes; every later (or racing)
/// caller gets those bytes back, whatever it offered.
pub async fn secret_get_or_create(store: Arc<dyn Store>) {
    let first = store.secret("jwt", vec![1, 2, 3]).await.expect("create");
    assert_eq!(first, [1, 2, 3]);
    let again = store.secret("jwt", vec![9, 9, 9]).await.expect("get");
    assert_eq!(again, [1, 2, 3], "an existing secret is never replaced");
    let other = store.secret("cookie", vec![4, 5]).await.expect("other");
    assert_eq!(other, [4, 5], "secrets are per name");

    let mut tasks = JoinSet::new();
    for i in 0..10u8 {
        let store = store.clone();
        tasks.spawn(async move { store.secret("raced", vec![i; 32]).await });
    }
    let mut values = Vec::new();
    while let Some(joined) = tasks.join_next().await {
        values.push(joined.expect("task").expect("secret"));
    }
    assert!(
        values.windows(2).all(|w| w[0] == w[1]),
        "racing callers get the same secret"
    );
}

/// A resend is answered with its original entry even when the change's
/// precondition no longer holds (a conversation closed since); anything new with
/// that precondition fails and writes nothing.
pub async fn resend_recognised_before_precondition(store: Arc<dyn Store>) {
    let new = new_conversation("p:erin", ConversationState::Queued, 1_700_000_000_000);
    store
        .create_conversation(new.clone())
        .await
        .expect("create");
    let sender = Participant {
        role: Role::Player,
        id: "p:erin".into(),
        name: None,
    };
    let entry = |client_id: &str| NewEntry {
        kind: MessageKind::Text,
        sender: sender.clone(),
        text: "hello".into(),
        client_id: Some(client_id.into()),
        event: None,
        origin: 0,
    };
    let first = store
        .apply(Change::append(new.id, entry("c1")))
        .await
        .expect("append");
    let seq = first.appended.expect("appended").entry.seq;
    store
        .apply(Change {
            conversation: new.id,
            set: Some(SetState {
                state: ConversationState::Closed,
                agent: None,
                close_reason: None,
                department: None,
            }),
            ..Change::default()
        })
        .await
        .expect("close");
    let never = Some(Expect {
        state: ConversationState::Active,
        agent: None,
    });
    let mut resend = Change::append(new.id, entry("c1"));
    resend.expect = never.clone();
    let again = store
        .apply(resend)
        .await
        .expect("a resend is still answered");
    let again = again.appended.expect("appended");
    assert!(again.duplicate);
    assert_eq!(again.entry.seq, seq);
    let mut fresh = Change::append(new.id, entry("c2"));
    fresh.expect = never;
    assert!(matches!(
        store.apply(fresh).await,
        Err(StoreError::Precondition)
    ));
    let record = store
        .conversation(new.id)
        .await
        .expect("read")
        .expect("found");
    assert_eq!(record.summary.last_seq, seq, "nothing new was written");
}

/// An append with [`Open`] is refused (and writes nothing) once the conversation
/// has closed, or, naming an owner, once someone else owns it: the entry that
/// races a close or a take-over is not stored after it. A resend of a stored
/// entry is still answered.
pub async fn an_entry_is_refused_once_its_sender_may_no_longer_write(store: Arc<dyn Store>) {
    let id = create(&store, ConversationState::Queued).await;
    assign_at(&store, id, 1_700_000_000_100).await;
    let ayla = AgentId("ayla".into());
    let append = |sender: Participant, client_id: &str, owner: Option<&AgentId>| Change {
        open: Some(Open {
            owner: owner.cloned(),
        }),
        ..Change::append(id, message(sender, client_id, "text"))
    };
    let first = store
        .apply(append(agent("ayla"), "a1", Some(&ayla)))
        .await
        .expect("the owner writes");
    let seq = first.appended.expect("appended").entry.seq;
    store
        .apply(append(player("p:1"), "p1", None))
        .await
        .expect("the player writes");
    // Someone else takes it over: ayla's next entry is refused, the player's not.
    store
        .apply(Change {
            conversation: id,
            set: Some(SetState {
                state: ConversationState::Active,
                agent: Some(AgentId("sam".into())),
                close_reason: None,
                department: None,
            }),
            ..Change::default()
        })
        .await
        .expect("take over");
    let refused = store.apply(append(agent("ayla"), "a2", Some(&ayla))).await;
    assert!(
        matches!(refused, Err(StoreError::Precondition)),
        "got {refused:?}"
    );
    store
        .apply(append(player("p:1"), "p2", None))
        .await
        .expect("the player still writes");
    close(&store, id).await;
    let refused = store.apply(append(player("p:1"), "p3", None)).await;
    assert!(
        matches!(refused, Err(StoreError::Precondition)),
        "got {refused:?}"
    );
    let again = store
        .apply(append(agent("ayla"), "a1", Some(&ayla)))
        .await
        .expect("a resend is still answered")
        .appended
        .expect("appended");
    assert!(again.duplicate);
    assert_eq!(again.entry.seq, seq);
    let entries = store.entries(id, 0, 100, true).await.expect("entries");
    let ids: Vec<_> = entries
        .iter()
        .filter_map(|e| e.client_id.as_deref())
        .collect();
    assert_eq!(ids, ["a1", "p1", "p2"], "nothing refused was written");
}

/// An accepted department transfer moves the conversation to the new department;
/// a change without a department keeps it.
pub async fn set_state_moves_department(store: Arc<dyn Store>) {
    let new = new_conversation("p:dana", ConversationState::Queued, 1_700_000_000_000);
    store
        .create_conversation(new.clone())
        .await
        .expect("create");
    let ayla = AgentId("ayla".into());
    let set = |agent: &AgentId, department: Option<&str>| SetState {
        state: ConversationState::Active,
        agent: Some(agent.clone()),
        close_reason: None,
        department: department.map(str::to_owned),
    };
    store
        .apply(Change {
            conversation: new.id,
            set: Some(set(&ayla, None)),
            ..Change::default()
        })
        .await
        .expect("assign");
    let read = |store: Arc<dyn Store>| async move {
        store
            .conversation(new.id)
            .await
            .expect("read")
            .expect("found")
            .summary
    };
    assert_eq!(
        read(store.clone()).await.department,
        "general",
        "unchanged without a department"
    );
    let paula = AgentId("paula".into());
    store
        .apply(Change {
            conversation: new.id,
            expect: Some(Expect {
                state: ConversationState::Active,
                agent: Some(ayla),
            }),
            set: Some(set(&paula, Some("payments"))),
            ..Change::default()
        })
        .await
        .expect("transfer");
    let summary = read(store.clone()).await;
    assert_eq!(summary.department, "payments");
    assert_eq!(summary.agent, Some(paula));
}

/// Catalog items are kept per kind, language and key; a put replaces the text.
pub async fn catalog_per_kind_and_language(store: Arc<dyn Store>) {
    use crate::{CatalogItem, CatalogKind};
    let item = |kind, language: &str, key: &str, text: &str| CatalogItem {
        kind,
        language: language.into(),
        key: key.into(),
        text: text.into(),
    };
    let hello_en = item(
        CatalogKind::CannedReply,
        "en",
        "hello",
        "Hello! How can I help?",
    );
    let hello_tr = item(
        CatalogKind::CannedReply,
        "tr",
        "hello",
        "Merhaba! Nasıl yardımcı olabilirim?",
    );
    let resolved = item(CatalogKind::CloseReason, "en", "resolved", "Resolved");
    for i in [&hello_tr, &hello_en, &resolved] {
        store.put_catalog(i.clone()).await.expect("put");
    }
    let canned = store
        .catalog(CatalogKind::CannedReply, None)
        .await
        .expect("list");
    assert_eq!(
        canned,
        [hello_en.clone(), hello_tr.clone()],
        "by language, then key"
    );
    let tr = store
        .catalog(CatalogKind::CannedReply, Some("tr"))
        .await
        .expect("list tr");
    assert_eq!(tr, std::slice::from_ref(&hello_tr));
    let reasons = store
        .catalog(CatalogKind::CloseReason, Some("en"))
        .await
        .expect("reasons");
    assert_eq!(reasons, [resolved]);

    let changed = item(CatalogKind::CannedReply, "en", "hello", "Hi there!");
    store.put_catalog(changed.clone()).await.expect("replace");
    let en = store
        .catalog(CatalogKind::CannedReply, Some("en"))
        .await
        .expect("list en");
    assert_eq!(en, [changed]);

    assert!(store
        .remove_catalog(CatalogKind::CannedReply, "en", "hello")
        .await
        .expect("remove"));
    assert!(!store
        .remove_catalog(CatalogKind::CannedReply, "en", "hello")
        .await
        .expect("again"));
    let canned = store
        .catalog(CatalogKind::CannedReply, None)
        .await
        .expect("list");
    assert_eq!(canned, [hello_tr]);
}

/// An audit record to append.
fn audit_record(at: u64, actor: &str, action: &str, target: &str) -> crate::NewAuditRecord {
    crate::NewAuditRecord {
        at,
        actor: actor.into(),
        action: action.into(),
        target: target.into(),
        detail: serde_json::json!({ "n": at }),
    }
}

/// `purge_audit` deletes the records older than its cutoff, whatever their order
/// of appending, in as many chunks as it takes, and nothing else; running it again
/// deletes nothing.
pub async fn audit_purge_deletes_only_older_records_in_chunks(store: Arc<dyn Store>) {
    let base = 1_700_000_000_000;
    // Appended out of time order: the cutoff, not the id, decides.
    let times = [5, 1, 9, 3, 7, 2, 8, 4, 6, 0];
    for t in times {
        store
            .append_audit(audit_record(
                base + t * 1000,
                "ayla",
                "transcript.read",
                "c",
            ))
            .await
            .expect("append");
    }
    let deleted = store.purge_audit(base + 5_000, 2).await.expect("purge");
    assert_eq!(deleted, 5, "records at 0..=4 s");
    let mut left: Vec<u64> = store
        .audit(crate::AuditFilter {
            limit: 100,
            ..crate::AuditFilter::default()
        })
        .await
        .expect("list")
        .iter()
        .map(|r| (r.record.at - base) / 1000)
        .collect();
    left.sort_unstable();
    assert_eq!(left, [5, 6, 7, 8, 9]);
    assert_eq!(store.purge_audit(base + 5_000, 2).await.expect("again"), 0);
}

/// Audit records read back as appended, with increasing ids, newest first; every
/// filter given must match (actor, action, target, since), and `limit` keeps the
/// newest.
pub async fn audit_records_listed_newest_first_with_filters(store: Arc<dyn Store>) {
    use crate::AuditFilter;
    assert!(store
        .audit(AuditFilter::default())
        .await
        .expect("empty log")
        .is_empty());
    let appended = [
        audit_record(1_000, "sam", "transcript.read", "c-1"),
        audit_record(2_000, "root", "account.create", "ayla"),
        audit_record(3_000, "sam", "transcript.read", "c-2"),
        audit_record(4_000, "cli", "account.remove", "ayla"),
        audit_record(5_000, "root", "transcript.read", "c-1"),
    ];
    let mut ids = Vec::new();
    for r in &appended {
        ids.push(store.append_audit(r.clone()).await.expect("append"));
    }
    assert!(ids.windows(2).all(|w| w[0] < w[1]), "ids increase: {ids:?}");

    let all = store.audit(AuditFilter::default()).await.expect("all");
    let got: Vec<_> = all.iter().map(|r| r.record.clone()).collect();
    let newest_first: Vec<_> = appended.iter().rev().cloned().collect();
    assert_eq!(got, newest_first, "every record, newest first, as appended");
    assert_eq!(all[0].id, ids[4]);

    let targets = |records: Vec<crate::AuditRecord>| -> Vec<(String, String)> {
        records
            .into_iter()
            .map(|r| (r.record.actor, r.record.target))
            .collect()
    };
    let by_sam = store
        .audit(AuditFilter {
            actor: Some("sam".into()),
            ..Default::default()
        })
        .await
        .expect("by actor");
    assert_eq!(
        targets(by_sam),
        [("sam".into(), "c-2".into()), ("sam".into(), "c-1".into())]
    );
    let reads_of_c1 = store
        .audit(AuditFilter {
            action: Some("transcript.read".into()),
            target: Some("c-1".into()),
            ..Default::default()
        })
        .await
        .expect("by action and target");
    assert_eq!(
        targets(reads_of_c1),
        [("root".into(), "c-1".into()), ("sam".into(), "c-1".into())]
    );
    let about_ayla_since = store
        .audit(AuditFilter {
            target: Some("ayla".into()),
            since: Some(3_000),
            ..Default::default()
        })
        .await
        .expect("since");
    assert_eq!(targets(about_ayla_since), [("cli".into(), "ayla".into())]);
    let newest_two = store
        .audit(AuditFilter {
            limit: 2,
            ..Default::default()
        })
        .await
        .expect("limit");
    assert_eq!(
        targets(newest_two),
        [("root".into(), "c-1".into()), ("cli".into(), "ayla".into())]
    );
    let nobody = store
        .audit(AuditFilter {
            actor: Some("nobody".into()),
            ..Default::default()
        })
        .await
        .expect("no match");
    assert!(nobody.is_empty());
}

/// A listing returns at most [`crate::MAX_AUDIT_LIMIT`] records, however many are
/// asked for; a limit of 0 means 100.
pub async fn audit_limit_is_capped(store: Arc<dyn Store>) {
    use crate::{AuditFilter, MAX_AUDIT_LIMIT};
    let total = MAX_AUDIT_LIMIT as usize + 20;
    let mut appends = JoinSet::new();
    for n in 0..total {
        let store = store.clone();
        appends.spawn(async move {
            store
                .append_audit(audit_record(n as u64, "sam", "transcript.read", "c"))
                .await
        });
    }
    while let Some(done) = appends.join_next().await {
        done.expect("task").expect("append");
    }
    let capped = store
        .audit(AuditFilter {
            limit: 10_000,
            ..Default::default()
        })
        .await
        .expect("capped");
    assert_eq!(capped.len(), MAX_AUDIT_LIMIT as usize);
    assert!(capped.windows(2).all(|w| w[0].id > w[1].id), "newest first");
    let default = store.audit(AuditFilter::default()).await.expect("default");
    assert_eq!(default.len(), 100);
}

/// A creation with an `open_limit` is refused while the player has an open
/// conversation in that department, or that many open in all; closed ones and
/// other players do not count, and a creation without a limit is never refused.
pub async fn open_limit_holds_per_player(store: Arc<dyn Store>) {
    let limited = |player: &str, department: &str, state| NewConversation {
        department: department.into(),
        open_limit: Some(2),
        ..new_conversation(player, state, now_ms())
    };
    let first = limited("p:1", "general", ConversationState::Queued);
    store
        .create_conversation(first.clone())
        .await
        .expect("first");
    let again = store
        .create_conversation(limited("p:1", "general", ConversationState::Offline))
        .await;
    assert!(
        matches!(again, Err(StoreError::PlayerBusy)),
        "same department: {again:?}"
    );
    store
        .create_conversation(limited("p:1", "payments", ConversationState::Offline))
        .await
        .expect("another department");
    let third = limited("p:1", "risk", ConversationState::Queued);
    let refused = store.create_conversation(third.clone()).await;
    assert!(
        matches!(refused, Err(StoreError::PlayerBusy)),
        "two open already: {refused:?}"
    );
    assert_eq!(
        store.conversation(third.id).await.expect("read"),
        None,
        "a refused creation writes nothing"
    );
    store
        .create_conversation(limited("p:2", "general", ConversationState::Queued))
        .await
        .expect("another player");
    store
        .create_conversation(NewConversation {
            open_limit: None,
            ..limited("p:1", "general", ConversationState::Queued)
        })
        .await
        .expect("no limit, no refusal");

    close(&store, first.id).await;
    let players_open = |records: Vec<ConversationRecord>| {
        records
            .iter()
            .filter(|r| r.summary.player.0 == "p:1")
            .count()
    };
    assert_eq!(
        players_open(store.open_conversations().await.expect("open")),
        2
    );
    let refused = store
        .create_conversation(limited("p:1", "risk", ConversationState::Queued))
        .await;
    assert!(
        matches!(refused, Err(StoreError::PlayerBusy)),
        "still two open (payments, general without limit): {refused:?}"
    );
}

/// `open_conversations` lists everything not closed (queued, active, offline),
/// oldest first.
pub async fn open_conversations_exclude_closed(store: Arc<dyn Store>) {
    let base = 1_700_000_000_000;
    let mut ids = Vec::new();
    for (i, state) in [
        ConversationState::Queued,
        ConversationState::Queued,
        ConversationState::Offline,
        ConversationState::Queued,
    ]
    .into_iter()
    .enumerate()
    {
        // Created in reverse order of id, so ordering by id alone would be wrong.
        let new = new_conversation("p:1", state, base + 10_000 - i as u64 * 1000);
        ids.push(new.id);
        store.create_conversation(new).await.expect("create");
    }
    close(&store, ids[1]).await;
    store
        .apply(Change {
            conversation: ids[3],
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
    let open: Vec<ConversationId> = store
        .open_conversations()
        .await
        .expect("open")
        .iter()
        .map(|r| r.summary.id)
        .collect();
    assert_eq!(open, [ids[3], ids[2], ids[0]], "not closed, oldest first");
}

/// `open_conversations` orders by `created_at` ascending, then by id: conversations
/// created in the same millisecond come out in id order, whatever order they were
/// stored in.
pub async fn open_conversations_ordered_by_creation_then_id(store: Arc<dyn Store>) {
    let base = 1_700_000_000_000;
    let later = new_conversation("p:1", ConversationState::Queued, base + 5_000);
    let mut tied = [
        new_conversation("p:2", ConversationState::Queued, base + 1_000),
        new_conversation("p:3", ConversationState::Offline, base + 1_000),
        new_conversation("p:4", ConversationState::Queued, base + 1_000),
    ];
    // Stored in descending id order, so insertion order is the wrong answer.
    tied.sort_by_key(|new| std::cmp::Reverse(new.id.to_string()));
    let oldest = new_conversation("p:5", ConversationState::Queued, base);
    store
        .create_conversation(later.clone())
        .await
        .expect("create");
    for new in &tied {
        store
            .create_conversation(new.clone())
            .await
            .expect("create");
    }
    store
        .create_conversation(oldest.clone())
        .await
        .expect("create");

    let open: Vec<ConversationId> = store
        .open_conversations()
        .await
        .expect("open")
        .iter()
        .map(|r| r.summary.id)
        .collect();
    let mut expected = vec![oldest.id];
    expected.extend(tied.iter().rev().map(|new| new.id));
    expected.push(later.id);
    assert_eq!(open, expected, "by created_at, then id");
}

/// `conversations` filters by state, owner and player, newest first, with a limit
/// (0 meaning the default of 100).
pub async fn conversations_filtered_newest_first(store: Arc<dyn Store>) {
    let base = 1_700_000_000_000;
    let mut ids = Vec::new();
    for i in 0..6u64 {
        let player = if i % 2 == 0 { "p:even" } else { "p:odd" };
        let new = new_conversation(player, ConversationState::Queued, base + i * 1000);
        ids.push(new.id);
        store.create_conversation(new).await.expect("create");
    }
    // 1, 2 and 3 go to ayla; 4 is closed from the queue.
    for i in [1, 2, 3] {
        store
            .apply(Change {
                conversation: ids[i],
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
    }
    close(&store, ids[4]).await;

    let list = |filter: ConversationFilter| {
        let store = store.clone();
        async move {
            store
                .conversations(filter)
                .await
                .expect("list")
                .iter()
                .map(|r| r.summary.id)
                .collect::<Vec<_>>()
        }
    };
    let all = list(ConversationFilter::default()).await;
    assert_eq!(
        all,
        ids.iter().rev().copied().collect::<Vec<_>>(),
        "newest first"
    );
    let limited = list(ConversationFilter {
        limit: 2,
        ..ConversationFilter::default()
    })
    .await;
    assert_eq!(limited, [ids[5], ids[4]]);
    let even = list(ConversationFilter {
        player: Some(PlayerId("p:even".into())),
        ..ConversationFilter::default()
    })
    .await;
    assert_eq!(even, [ids[4], ids[2], ids[0]]);
    let ayla = list(ConversationFilter {
        agent: Some(AgentId("ayla".into())),
        ..ConversationFilter::default()
    })
    .await;
    assert_eq!(ayla, [ids[3], ids[2], ids[1]]);
    let queued = list(ConversationFilter {
        state: Some(ConversationState::Queued),
        ..ConversationFilter::default()
    })
    .await;
    assert_eq!(queued, [ids[5], ids[0]]);
    let closed = list(ConversationFilter {
        state: Some(ConversationState::Closed),
        ..ConversationFilter::default()
    })
    .await;
    assert_eq!(closed, [ids[4]]);
    let combined = list(ConversationFilter {
        state: Some(ConversationState::Active),
        agent: Some(AgentId("ayla".into())),
        player: Some(PlayerId("p:odd".into())),
        limit: 10,
    })
    .await;
    assert_eq!(combined, [ids[3], ids[1]], "filters combine");
    let one = list(ConversationFilter {
        agent: Some(AgentId("ayla".into())),
        limit: 1,
        ..ConversationFilter::default()
    })
    .await;
    assert_eq!(one, [ids[3]], "limit applies after filtering, newest first");
}

/// `queue_events` returns what a new router needs of the queue: `requeued` events of
/// queued conversations whatever their age, their `declined` and `offer_expired`
/// events from `since` on, oldest first; nothing of conversations not queued.
pub async fn queue_events_of_queued_conversations(store: Arc<dyn Store>) {
    use LifecycleKind::*;
    let now = now_ms();
    let waiting = create(&store, ConversationState::Queued).await;
    record_events(
        &store,
        waiting,
        &[
            (Requeued, Some("ayla"), now - 3_600_000),
            (OfferExpired, Some("bora"), now - 60_000),
            (Offered, Some("cem"), now - 2_000),
            (Declined, Some("cem"), now - 1_000),
        ],
    )
    .await;
    record_events(&store, waiting, &[(OfferExpired, Some("dana"), now - 500)]).await;
    let owned = create(&store, ConversationState::Active).await;
    record_events(
        &store,
        owned,
        &[
            (Requeued, Some("ayla"), now - 2_000),
            (Declined, Some("bora"), now - 1_000),
        ],
    )
    .await;

    let events = store
        .queue_events(now - 30_000)
        .await
        .expect("queue events");
    assert!(
        events_of(&events, owned).is_empty(),
        "an owned conversation's events: {events:?}"
    );
    assert_eq!(
        events_of(&events, waiting),
        vec![
            (Requeued, Some("ayla"), now - 3_600_000),
            (Declined, Some("cem"), now - 1_000),
            (OfferExpired, Some("dana"), now - 500),
        ],
        "requeued whatever its age, refusals since the bound, oldest first"
    );
}

/// `transfer_events` returns what a new router needs to find pending transfers:
/// the `transfer_requested`, `transferred` and `transfer_failed` events of active
/// conversations from `since` on, oldest first; nothing of conversations not active,
/// and no other kind of event.
pub async fn transfer_events_of_active_conversations(store: Arc<dyn Store>) {
    use LifecycleKind::*;
    let now = now_ms();
    let owned = create(&store, ConversationState::Active).await;
    record_events(
        &store,
        owned,
        &[
            (TransferRequested, Some("ayla"), now - 600_000),
            (TransferFailed, Some("ayla"), now - 590_000),
            (TransferRequested, Some("ayla"), now - 20_000),
            (Transferred, Some("bora"), now - 10_000),
            (Declined, Some("cem"), now - 5_000),
        ],
    )
    .await;
    record_events(
        &store,
        owned,
        &[(TransferRequested, Some("bora"), now - 1_000)],
    )
    .await;
    let waiting = create(&store, ConversationState::Queued).await;
    record_events(
        &store,
        waiting,
        &[(TransferRequested, Some("ayla"), now - 1_000)],
    )
    .await;

    let events = store
        .transfer_events(now - 120_000)
        .await
        .expect("transfer events");
    assert!(
        events_of(&events, waiting).is_empty(),
        "a queued conversation's events: {events:?}"
    );
    assert_eq!(
        events_of(&events, owned),
        vec![
            (TransferRequested, Some("ayla"), now - 20_000),
            (Transferred, Some("bora"), now - 10_000),
            (TransferRequested, Some("bora"), now - 1_000),
        ],
        "transfer events since the bound, oldest first"
    );
}

/// Handle times run from the first assignment to the close, for closed
/// conversations only, newest close first.
pub async fn recent_handle_times(store: Arc<dyn Store>) {
    // Assigned "5 s ago" (the caller's clock dates events), closed now.
    let older = create_in(&store, "payments").await;
    assign_at(&store, older, now_ms() - 5_000).await;
    // A second assignment (a transfer) does not restart the clock.
    assign_at(&store, older, now_ms() - 1_000).await;
    close(&store, older).await;
    // Distinct close times, so "newest first" is well defined.
    tokio::time::sleep(std::time::Duration::from_millis(5)).await;

    let newer = create_in(&store, "general").await;
    assign_at(&store, newer, now_ms() - 2_000).await;
    close(&store, newer).await;

    // Still open, and closed without ever being assigned: no handle time.
    let open = create_in(&store, "risk").await;
    assign_at(&store, open, now_ms() - 3_000).await;
    let abandoned = create_in(&store, "risk").await;
    close(&store, abandoned).await;

    let times = store.recent_handle_times(10).await.expect("handle times");
    assert_eq!(
        times.len(),
        2,
        "only assigned and closed conversations: {times:?}"
    );
    let (department, ms) = &times[0];
    assert_eq!(department, "general", "newest close first");
    assert!((2_000..60_000).contains(ms), "about 2 s, got {ms}");
    let (department, ms) = &times[1];
    assert_eq!(department, "payments");
    assert!(
        (5_000..60_000).contains(ms),
        "from the first assignment, got {ms}"
    );

    let one = store.recent_handle_times(1).await.expect("handle times");
    assert_eq!(one.len(), 1, "limit is honoured");
    assert_eq!(one[0].0, "general");
}

/// After `shutdown` every write is refused with `Unavailable`; what was written
/// before stays written.
pub async fn writes_after_shutdown_unavailable(store: Arc<dyn Store>) {
    let id = create(&store, ConversationState::Active).await;
    appended(
        store
            .apply(Change::append(id, message(player("p:1"), "c1", "hello")))
            .await,
    )
    .expect("before shutdown");
    store.shutdown().await;
    let result = store
        .apply(Change::append(id, message(player("p:1"), "c2", "late")))
        .await;
    assert!(
        matches!(result, Err(StoreError::Unavailable(_))),
        "got {result:?}"
    );
    let result = store
        .create_conversation(new_conversation("p:2", ConversationState::Queued, now_ms()))
        .await;
    assert!(
        matches!(result, Err(StoreError::Unavailable(_))),
        "got {result:?}"
    );
    let result = store.put_agent(account("late", Role::Agent)).await;
    assert!(
        matches!(result, Err(StoreError::Unavailable(_))),
        "got {result:?}"
    );
    let result = store.secret("late", vec![1]).await;
    assert!(
        matches!(result, Err(StoreError::Unavailable(_))),
        "got {result:?}"
    );
}

/// A fenced change applies when its epoch is at least the highest recorded, and
/// records it: an equal epoch leaves the record as it is, a higher one raises it.
/// Changes without a fence neither look at the epoch nor move it.
pub async fn fence_at_or_above_recorded_epoch_applies(store: Arc<dyn Store>) {
    assert_eq!(
        store.routing_epoch().await.expect("epoch"),
        0,
        "nothing recorded yet"
    );
    let first = create(&store, ConversationState::Queued).await;
    store
        .apply(assign(first, "ayla", fence(3, None)))
        .await
        .expect("epoch 3 over none recorded");
    assert_eq!(store.routing_epoch().await.expect("epoch"), 3, "recorded");

    let second = create(&store, ConversationState::Queued).await;
    store
        .apply(assign(second, "bora", fence(3, None)))
        .await
        .expect("the same epoch again");
    assert_eq!(store.routing_epoch().await.expect("epoch"), 3);

    store
        .apply(requeue(first, "ayla", fence(5, None)))
        .await
        .expect("a higher epoch");
    assert_eq!(store.routing_epoch().await.expect("epoch"), 5, "raised");

    let record = store
        .conversation(first)
        .await
        .expect("read")
        .expect("found");
    assert_eq!(record.summary.state, ConversationState::Queued);
    assert_eq!(record.summary.agent, None);
    assert_eq!(record.summary.last_seq, 2, "assigned, then requeued");
    let kinds: Vec<LifecycleKind> = store
        .events(first)
        .await
        .expect("events")
        .iter()
        .map(|e| e.kind)
        .collect();
    assert_eq!(
        kinds,
        [
            LifecycleKind::Queued,
            LifecycleKind::Assigned,
            LifecycleKind::Requeued
        ]
    );
    let record = store
        .conversation(second)
        .await
        .expect("read")
        .expect("found");
    assert_eq!(record.summary.state, ConversationState::Active);
    assert_eq!(record.summary.agent, Some(AgentId("bora".into())));

    // Unfenced changes pass whatever the epoch, and leave it alone.
    store
        .apply(Change::append(
            second,
            message(player("p:1"), "c1", "unfenced"),
        ))
        .await
        .expect("unfenced append");
    assert_eq!(store.routing_epoch().await.expect("epoch"), 5);

    // An epoch a new router raised to is itself a valid fence.
    assert_eq!(store.raise_routing_epoch(8).await.expect("raise"), 8);
    store
        .apply(assign(first, "ayla", fence(8, None)))
        .await
        .expect("the raised epoch");
    assert_eq!(store.routing_epoch().await.expect("epoch"), 8);
}

/// A fenced change under an epoch older than the one recorded fails with `Fenced`
/// and writes nothing: no state, owner, entry, event, hand-off or rating, no
/// observer call, and the recorded epoch stays. The same change under the current
/// epoch then applies.
pub async fn fence_below_recorded_epoch_writes_nothing(store: Arc<dyn Store>) {
    let recorder = Arc::new(Recorder::default());
    store.set_observer(recorder.clone());
    let id = create(&store, ConversationState::Queued).await;
    assert_eq!(store.raise_routing_epoch(7).await.expect("raise"), 7);
    let before = store.conversation(id).await.expect("read").expect("found");
    let everything = |epoch: u64| Change {
        handoff: Some(handoff("bora", "agent:ayla", "accepted")),
        rating: Some((4, None)),
        ..assign(id, "ayla", fence(epoch, None))
    };

    for stale in [6, 0] {
        let result = store.apply(everything(stale)).await;
        assert!(
            matches!(result, Err(StoreError::Fenced)),
            "epoch {stale} under 7: {result:?}"
        );
    }
    assert_eq!(
        store.conversation(id).await.expect("read").expect("found"),
        before,
        "no state, owner, sequence or rating change"
    );
    assert!(store
        .entries(id, 0, 100, true)
        .await
        .expect("entries")
        .is_empty());
    assert_eq!(
        store.events(id).await.expect("events").len(),
        1,
        "only `queued`"
    );
    assert!(store.handoffs(id).await.expect("handoffs").is_empty());
    assert!(recorder.seen().is_empty(), "the observer heard of nothing");
    assert_eq!(
        store.routing_epoch().await.expect("epoch"),
        7,
        "a fenced change does not lower the epoch"
    );

    let applied = appended(store.apply(everything(7)).await).expect("the current epoch");
    let record = store.conversation(id).await.expect("read").expect("found");
    assert_eq!(record.summary.state, ConversationState::Active);
    assert_eq!(record.summary.agent, Some(AgentId("ayla".into())));
    assert_eq!(record.summary.rating, Some(4));
    assert_eq!(store.handoffs(id).await.expect("handoffs").len(), 1);
    assert_eq!(recorder.seen(), [(applied.entry, 0)]);
}

/// Where the fence sits among a change's checks: a resend is answered first, as
/// ever (fence and all unchecked); then `expect` (`Precondition`), then the epoch
/// (`Fenced`), then the capacity (`Precondition`). None of the refused changes
/// writes anything, the recorded epoch included.
pub async fn fence_checked_after_resend_and_expect_before_capacity(store: Arc<dyn Store>) {
    let bora = AgentId("bora".into());
    store
        .put_agent(AgentAccount {
            capacity: 1,
            ..account("bora", Role::Agent)
        })
        .await
        .expect("put bora");
    let owned = create(&store, ConversationState::Queued).await;
    store
        .apply(assign(owned, "bora", fence(1, None)))
        .await
        .expect("bora's one conversation");
    let id = create(&store, ConversationState::Queued).await;
    let original = appended(
        store
            .apply(Change::append(id, message(player("p:1"), "c1", "hello")))
            .await,
    )
    .expect("append");
    assert_eq!(store.raise_routing_epoch(5).await.expect("raise"), 5);
    let wrong_expect = Some(Expect {
        state: ConversationState::Active,
        agent: None,
    });

    // Stale epoch, wrong expectation, full agent: a resend is still a resend.
    let resend = Change {
        expect: wrong_expect.clone(),
        fence: Some(fence(1, Some("bora"))),
        ..Change::append(id, message(player("p:1"), "c1", "hello"))
    };
    let again = appended(store.apply(resend).await).expect("a resend is answered");
    assert!(again.duplicate);
    assert_eq!(again.entry, original.entry);

    // Wrong expectation and stale epoch: the expectation decides.
    let result = store
        .apply(Change {
            expect: wrong_expect,
            ..assign(id, "bora", fence(1, Some("bora")))
        })
        .await;
    assert!(
        matches!(result, Err(StoreError::Precondition)),
        "expect before the epoch: {result:?}"
    );
    // Stale epoch and full agent: the epoch decides.
    let result = store
        .apply(assign(id, "bora", fence(4, Some("bora"))))
        .await;
    assert!(
        matches!(result, Err(StoreError::Fenced)),
        "the epoch before the capacity: {result:?}"
    );
    // A new epoch and a full agent: the capacity decides, and the new epoch is not
    // recorded.
    let result = store
        .apply(assign(id, "bora", fence(6, Some("bora"))))
        .await;
    assert!(
        matches!(result, Err(StoreError::Precondition)),
        "capacity: {result:?}"
    );
    assert_eq!(
        store.routing_epoch().await.expect("epoch"),
        5,
        "a refused change records no epoch"
    );

    let record = store.conversation(id).await.expect("read").expect("found");
    assert_eq!(record.summary.state, ConversationState::Queued);
    assert_eq!(record.summary.agent, None);
    assert_eq!(record.summary.last_seq, 1, "only the original entry");
    assert_eq!(store.events(id).await.expect("events").len(), 1);
    let record = store
        .conversation(owned)
        .await
        .expect("read")
        .expect("found");
    assert_eq!(record.summary.agent, Some(bora));
}

/// `raise_routing_epoch` records the larger of the stored epoch and its argument and
/// returns it: a lower value never lowers it, and racing raises end at the highest.
pub async fn raise_routing_epoch_is_monotonic(store: Arc<dyn Store>) {
    assert_eq!(store.routing_epoch().await.expect("epoch"), 0);
    assert_eq!(store.raise_routing_epoch(0).await.expect("raise"), 0);
    assert_eq!(store.raise_routing_epoch(3).await.expect("raise"), 3);
    assert_eq!(
        store.raise_routing_epoch(1).await.expect("raise"),
        3,
        "a lower epoch does not lower it"
    );
    assert_eq!(store.routing_epoch().await.expect("epoch"), 3);
    assert_eq!(store.raise_routing_epoch(3).await.expect("raise"), 3);
    assert_eq!(store.raise_routing_epoch(10).await.expect("raise"), 10);
    assert_eq!(store.routing_epoch().await.expect("epoch"), 10);

    let mut tasks = JoinSet::new();
    for epoch in 1..=30u64 {
        let store = store.clone();
        tasks.spawn(async move { (epoch, store.raise_routing_epoch(epoch).await) });
    }
    while let Some(joined) = tasks.join_next().await {
        let (epoch, recorded) = joined.expect("task");
        let recorded = recorded.expect("raise");
        assert!(
            recorded >= epoch.max(10) && recorded <= 30,
            "raising to {epoch} answered {recorded}"
        );
    }
    assert_eq!(store.routing_epoch().await.expect("epoch"), 30);
}

/// With `capacity_of`, a fenced change requires the agent to own fewer `Active`
/// conversations (not counting this one) than their capacity: an agent of capacity 1
/// who owns one cannot be given a second (`Precondition`, nothing written), though
/// the same change without `capacity_of` goes through. Closed conversations do not
/// count, and an agent without an account has no capacity.
pub async fn fence_capacity_of_limits_active_conversations(store: Arc<dyn Store>) {
    let bora = AgentId("bora".into());
    store
        .put_agent(AgentAccount {
            capacity: 1,
            ..account("bora", Role::Agent)
        })
        .await
        .expect("put bora");
    let first = create(&store, ConversationState::Queued).await;
    store
        .apply(assign(first, "bora", fence(1, Some("bora"))))
        .await
        .expect("bora owns none");
    // The conversation being decided does not count against its own owner.
    store
        .apply(Change {
            conversation: first,
            expect: Some(Expect {
                state: ConversationState::Active,
                agent: Some(bora.clone()),
            }),
            events: vec![lifecycle(LifecycleKind::Offered, Some("bora"))],
            fence: Some(fence(1, Some("bora"))),
            ..Change::default()
        })
        .await
        .expect("bora's own conversation is not counted");

    let second = create(&store, ConversationState::Queued).await;
    let before = store
        .conversation(second)
        .await
        .expect("read")
        .expect("found");
    let result = store
        .apply(assign(second, "bora", fence(2, Some("bora"))))
        .await;
    assert!(
        matches!(result, Err(StoreError::Precondition)),
        "capacity 1, one active: {result:?}"
    );
    assert_eq!(
        store
            .conversation(second)
            .await
            .expect("read")
            .expect("found"),
        before,
        "nothing written"
    );
    assert!(store
        .entries(second, 0, 100, true)
        .await
        .expect("entries")
        .is_empty());
    assert_eq!(store.events(second).await.expect("events").len(), 1);
    assert_eq!(
        store.routing_epoch().await.expect("epoch"),
        1,
        "nor the epoch"
    );

    // Nobody's account: no capacity at all.
    let result = store
        .apply(assign(second, "ghost", fence(2, Some("ghost"))))
        .await;
    assert!(
        matches!(result, Err(StoreError::Precondition)),
        "no account: {result:?}"
    );

    // Without `capacity_of` the fence checks the epoch only.
    store
        .apply(assign(second, "bora", fence(2, None)))
        .await
        .expect("no capacity check");
    let record = store
        .conversation(second)
        .await
        .expect("read")
        .expect("found");
    assert_eq!(record.summary.agent, Some(bora.clone()));
    assert_eq!(store.routing_epoch().await.expect("epoch"), 2);

    // Closed conversations do not count, even with their owner kept.
    for id in [first, second] {
        store
            .apply(Change {
                conversation: id,
                set: Some(SetState {
                    state: ConversationState::Closed,
                    agent: Some(bora.clone()),
                    close_reason: Some("resolved".into()),
                    department: None,
                }),
                ..Change::default()
            })
            .await
            .expect("close");
    }
    let third = create(&store, ConversationState::Queued).await;
    store
        .apply(assign(third, "bora", fence(2, Some("bora"))))
        .await
        .expect("bora's active conversations are closed");
}

/// A purge deletes closed conversations closed before the cutoff, with their
/// entries, lifecycle events and hand-offs, and reports the counts; conversations
/// closed after the cutoff and open ones (queued, active, offline, however old)
/// stay whole. A second purge finds nothing.
pub async fn purge_deletes_only_closed_and_old_enough(store: Arc<dyn Store>) {
    // Open conversations created before the cutoff: age alone never purges.
    let queued = create(&store, ConversationState::Queued).await;
    let active = create(&store, ConversationState::Active).await;
    let offline = create(&store, ConversationState::Offline).await;
    store
        .apply(Change::append(
            active,
            message(player("p:1"), "a1", "still here"),
        ))
        .await
        .expect("append to the active one");

    let old = create(&store, ConversationState::Active).await;
    let written = fill(&store, old, "old").await;
    close(&store, old).await;
    // closed_at is the store's clock: step past it on both sides of the cutoff.
    tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    let cutoff = now_ms();
    tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    let recent = create(&store, ConversationState::Active).await;
    fill(&store, recent, "recent").await;
    close(&store, recent).await;
    let recent_before = snapshot(&store, recent).await;
    let open_before = [
        snapshot(&store, queued).await,
        snapshot(&store, active).await,
        snapshot(&store, offline).await,
    ];

    let purged = store
        .purge_closed(cutoff, PURGE_CHUNK)
        .await
        .expect("purge");
    assert_eq!(
        purged.deleted,
        Deleted {
            conversations: 1,
            // The close recorded one more lifecycle event.
            events: written.events + 1,
            ..written
        },
        "the old conversation and everything keyed on it"
    );
    assert_eq!(purged.chunks, 1);
    assert_gone(&store, old).await;
    assert_eq!(
        snapshot(&store, recent).await,
        recent_before,
        "closed after the cutoff"
    );
    for (id, before) in [queued, active, offline].into_iter().zip(open_before) {
        assert_eq!(
            snapshot(&store, id).await,
            before,
            "open conversations stay"
        );
    }

    let again = store
        .purge_closed(cutoff, PURGE_CHUNK)
        .await
        .expect("purge again");
    assert_eq!(again.deleted, Deleted::default(), "nothing left to purge");
    assert_eq!(again.chunks, 0);

    // Even a cutoff in the future leaves open conversations alone.
    let all = store
        .purge_closed(now_ms() + 60_000, PURGE_CHUNK)
        .await
        .expect("purge everything closed");
    assert_eq!(all.deleted.conversations, 1, "the recent closed one");
    assert_gone(&store, recent).await;
    let open = store.open_conversations().await.expect("open");
    assert_eq!(open.len(), 3);
}

/// A purge deletes in chunks, each its own write: seven closed conversations with
/// chunks of three take three writes, and every one of them is deleted.
pub async fn purge_works_in_chunks(store: Arc<dyn Store>) {
    let mut closed = Vec::new();
    for i in 0..7 {
        let id = create(&store, ConversationState::Active).await;
        store
            .apply(Change::append(
                id,
                message(player("p:1"), "m", &format!("chat {i}")),
            ))
            .await
            .expect("append");
        close(&store, id).await;
        closed.push(id);
    }
    let open = create(&store, ConversationState::Queued).await;
    let purged = store
        .purge_closed(now_ms() + 1_000, 3)
        .await
        .expect("purge");
    assert_eq!(purged.chunks, 3, "7 conversations in chunks of 3");
    assert_eq!(purged.deleted.conversations, 7);
    assert_eq!(purged.deleted.entries, 7);
    for id in closed {
        assert_gone(&store, id).await;
    }
    assert!(store.conversation(open).await.expect("read").is_some());
}

/// An export holds every conversation of the player, oldest first, with every
/// entry (private notes marked private), lifecycle event, hand-off, rating and the
/// player's card, and nothing of another player; it round-trips through JSON. A
/// player with nothing stored exports empty.
pub async fn export_gathers_everything_of_one_player(store: Arc<dyn Store>) {
    let first = create_for(
        &store,
        "p:export",
        ConversationState::Active,
        1_700_000_000_000,
    )
    .await;
    fill(&store, first, "first").await;
    close(&store, first).await;
    store
        .apply(Change {
            conversation: first,
            rating: Some((4, Some("helpful".into()))),
            events: vec![lifecycle(LifecycleKind::Rated, None)],
            ..Change::default()
        })
        .await
        .expect("rate");
    let second = create_for(
        &store,
        "p:export",
        ConversationState::Active,
        1_700_000_100_000,
    )
    .await;
    store
        .apply(Change::append(
            second,
            message(player("p:export"), "s1", "me again"),
        ))
        .await
        .expect("append");
    store
        .mark_read(second, player("p:export"), 1)
        .await
        .expect("read mark");
    let other = create_for(
        &store,
        "p:other",
        ConversationState::Active,
        1_700_000_050_000,
    )
    .await;
    fill(&store, other, "other").await;

    let export = store
        .export_player(&PlayerId("p:export".into()))
        .await
        .expect("export");
    assert_eq!(export.player, PlayerId("p:export".into()));
    let ids: Vec<ConversationId> = export.conversations.iter().map(|c| c.id).collect();
    assert_eq!(ids, [first, second], "the player's own, oldest first");
    let card = export.card.as_ref().expect("the card");
    assert_eq!(card.id, PlayerId("p:export".into()));
    assert_eq!(card.jurisdiction.as_deref(), Some("MT"));

    let c = &export.conversations[0];
    assert_eq!(c.state, ConversationState::Closed);
    assert_eq!(c.rating, Some(4));
    assert_eq!(c.rating_comment.as_deref(), Some("helpful"));
    assert_eq!(c.close_reason.as_deref(), Some("resolved"));
    assert!(c.closed_at.is_some());
    assert_eq!(c.card.id, PlayerId("p:export".into()));
    let stored = store.entries(first, 0, 1000, true).await.expect("entries");
    assert_eq!(c.entries.len(), stored.len(), "every entry, notes included");
    let seqs: Vec<Seq> = c.entries.iter().map(|e| e.seq).collect();
    assert_eq!(seqs, (1..=stored.len() as Seq).collect::<Vec<_>>());
    let note = c
        .entries
        .iter()
        .find(|e| e.kind == MessageKind::Note)
        .expect("the private note is exported");
    assert!(note.private, "a note is marked private");
    assert_eq!(note.text, "first: note about the player");
    assert!(c
        .entries
        .iter()
        .filter(|e| e.kind != MessageKind::Note)
        .all(|e| !e.private));
    assert!(c.entries.iter().any(|e| e.text == "first: hello"));
    let kinds: Vec<LifecycleKind> = c.events.iter().map(|e| e.kind).collect();
    assert!(
        kinds.contains(&LifecycleKind::TransferRequested),
        "{kinds:?}"
    );
    assert!(kinds.contains(&LifecycleKind::Closed), "{kinds:?}");
    assert!(kinds.contains(&LifecycleKind::Rated), "{kinds:?}");
    assert_eq!(c.events, store.events(first).await.expect("events"));
    assert_eq!(c.handoffs.len(), 1);
    assert_eq!(
        c.handoffs[0].note.as_deref(),
        Some("player asks about a withdrawal")
    );
    assert_eq!(export.conversations[1].state, ConversationState::Active);
    assert_eq!(export.conversations[1].entries.len(), 1);
    assert_eq!(
        (c.player_read_seq, export.conversations[1].player_read_seq),
        (0, 1),
        "the player's read marks"
    );
    let everything = serde_json::to_string(&export).expect("serialise");
    assert!(
        !everything.contains("other: hello"),
        "nothing of another player"
    );
    let back: PlayerExport = serde_json::from_str(&everything).expect("deserialise");
    assert_eq!(back, export, "the export round-trips through JSON");

    let nobody = store
        .export_player(&PlayerId("p:nobody".into()))
        .await
        .expect("export of an unknown player");
    assert!(nobody.conversations.is_empty());
    assert_eq!(nobody.card, None);
}

/// A snapshot answers with what was committed when it was taken: a message
/// appended and a close committed afterwards are in neither its conversation's
/// state, nor its entries, nor its events, nor an export gathered from it, while
/// the store and a later snapshot have both.
pub async fn an_export_is_one_snapshot(store: Arc<dyn Store>) {
    let who = PlayerId("p:snapshot".into());
    let id = create_for(&store, &who.0, ConversationState::Active, 1_700_000_000_000).await;
    store
        .apply(Change::append(id, message(player(&who.0), "s1", "before")))
        .await
        .expect("append");
    let mut before = store.snapshot().await.expect("snapshot");

    store
        .apply(Change::append(id, message(agent("ayla"), "s2", "after")))
        .await
        .expect("append");
    close(&store, id).await;
    let events_now = store.events(id).await.expect("events");
    assert!(events_now.iter().any(|e| e.kind == LifecycleKind::Closed));
    assert_eq!(
        store
            .entries(id, 0, 100, true)
            .await
            .expect("entries")
            .len(),
        2
    );

    let export = crate::export_from(before.as_mut(), &who)
        .await
        .expect("export from the earlier snapshot");
    assert_eq!(export.conversations.len(), 1);
    let c = &export.conversations[0];
    assert_eq!(c.state, ConversationState::Active, "the state as it was");
    assert_eq!(c.closed_at, None);
    let texts: Vec<&str> = c.entries.iter().map(|e| e.text.as_str()).collect();
    assert_eq!(
        texts,
        ["before"],
        "only what was committed before the snapshot"
    );
    assert!(
        c.events.iter().all(|e| e.kind != LifecycleKind::Closed),
        "{:?}",
        c.events
    );
    assert_eq!(c.events.len(), events_now.len() - 1);
    assert_eq!(
        before
            .entries(id, 0, 100, true)
            .await
            .expect("entries")
            .len(),
        1,
        "read again, the snapshot has not moved"
    );
    drop(before);

    let mut after = store.snapshot().await.expect("snapshot");
    let listed = after
        .conversations(ConversationFilter {
            player: Some(who.clone()),
            ..ConversationFilter::default()
        })
        .await
        .expect("conversations");
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].summary.state, ConversationState::Closed);
    assert_eq!(
        after
            .entries(id, 0, 100, true)
            .await
            .expect("entries")
            .len(),
        2
    );
    assert_eq!(after.events(id).await.expect("events"), events_now);
    assert_eq!(after.handoffs(id).await.expect("handoffs"), Vec::new());
    drop(after);
    let exported = store.export_player(&who).await.expect("export");
    assert_eq!(exported.conversations[0].state, ConversationState::Closed);
    assert_eq!(exported.conversations[0].entries.len(), 2);
}

/// `kpi_rows` reads, for the conversations started in its window (oldest first),
/// the first assignment, the first text an agent wrote (not a note, not the
/// player's), the close, the rating and whether it started offline; the
/// department, agent and limit narrow it.
pub async fn kpi_rows_read_each_conversation_s_figures(store: Arc<dyn Store>) {
    let w = 1_700_000_000_000;
    let create = |department: &str, born: ConversationState, created_at: u64| {
        let mut new = new_conversation("p:kpi", born, created_at);
        new.department = department.into();
        new
    };
    let mut ids = Vec::new();
    for new in [
        create("general", ConversationState::Queued, w - 1),
        create("general", ConversationState::Queued, w),
        create("payments", ConversationState::Queued, w + 10),
        create("general", ConversationState::Offline, w + 20),
        create("general", ConversationState::Queued, w + 100),
    ] {
        ids.push(new.id);
        store.create_conversation(new).await.expect("create");
    }
    let (served, abandoned) = (ids[1], ids[2]);
    assign_at(&store, served, w + 1_000).await;
    for entry in [
        message(player("p:kpi"), "k1", "hello?"),
        note(agent("ayla"), "k2", "a note is no answer"),
        message(agent("ayla"), "k3", "hi, how can I help?"),
        message(agent("ayla"), "k4", "still there?"),
    ] {
        store
            .apply(Change::append(served, entry))
            .await
            .expect("append");
    }
    // Closed by its agent, who stays its last owner.
    store
        .apply(Change {
            conversation: served,
            set: Some(SetState {
                state: ConversationState::Closed,
                agent: Some(AgentId("ayla".into())),
                close_reason: Some("resolved".into()),
                department: None,
            }),
            ..Change::default()
        })
        .await
        .expect("close");
    store
        .apply(Change {
            conversation: served,
            rating: Some((4, None)),
            ..Change::default()
        })
        .await
        .expect("rate");
    close(&store, abandoned).await;

    let window = |limit: u32| KpiFilter {
        since: w,
        until: w + 100,
        department: None,
        agent: None,
        limit,
    };
    let rows = store.kpi_rows(window(100)).await.expect("kpi rows");
    let created: Vec<u64> = rows.iter().map(|r| r.created_at).collect();
    assert_eq!(created, [w, w + 10, w + 20], "the window's, oldest first");

    let entries = store.entries(served, 0, 100, true).await.expect("entries");
    let first_answer = entries
        .iter()
        .find(|e| e.client_id.as_deref() == Some("k3"))
        .expect("the first answer")
        .at;
    let record = store
        .conversation(served)
        .await
        .expect("read")
        .expect("found");
    assert_eq!(
        rows[0],
        KpiRow {
            state: ConversationState::Closed,
            created_at: w,
            assigned_at: Some(w + 1_000),
            first_response_at: Some(first_answer),
            closed_at: record.summary.closed_at,
            offline: false,
            rating: Some(4),
        }
    );
    assert!(rows[0].closed_at.is_some());
    assert_eq!(rows[1].state, ConversationState::Closed);
    assert_eq!(
        (rows[1].assigned_at, rows[1].first_response_at),
        (None, None)
    );
    assert!(!rows[1].offline);
    assert_eq!(rows[2].state, ConversationState::Offline);
    assert!(rows[2].offline, "started as an offline message");
    assert_eq!(rows[2].closed_at, None);

    let payments = store
        .kpi_rows(KpiFilter {
            department: Some("payments".into()),
            ..window(100)
        })
        .await
        .expect("kpi rows");
    assert_eq!(payments.len(), 1);
    assert_eq!(payments[0].created_at, w + 10);
    // Ayla's, then put back in the queue (her console went away): ayla owned it
    // last, and it counts for her until someone else takes it.
    let requeued = new_conversation("p:kpi", ConversationState::Queued, w + 50);
    let requeued_id = requeued.id;
    store.create_conversation(requeued).await.expect("create");
    assign_at(&store, requeued_id, w + 2_000).await;
    store
        .apply(Change {
            conversation: requeued_id,
            set: Some(SetState {
                state: ConversationState::Queued,
                agent: None,
                close_reason: None,
                department: None,
            }),
            ..Change::default()
        })
        .await
        .expect("requeue");
    let ayla = store
        .kpi_rows(KpiFilter {
            agent: Some(AgentId("ayla".into())),
            ..window(100)
        })
        .await
        .expect("kpi rows");
    let created: Vec<u64> = ayla.iter().map(|r| r.created_at).collect();
    assert_eq!(created, [w, w + 50], "served and closed; requeued from her");
    let two = store.kpi_rows(window(2)).await.expect("kpi rows");
    assert_eq!(two.len(), 2);
    assert_eq!(two[1].created_at, w + 10);
}

/// Erasing a player deletes every conversation of theirs with its entries,
/// lifecycle events and hand-offs, reports the counts, and leaves every other
/// player's data alone; erasing again deletes nothing and succeeds.
pub async fn erase_removes_one_player_only(store: Arc<dyn Store>) {
    let mut expected = Deleted::default();
    let mut erased = Vec::new();
    for (i, created_at) in [1_700_000_000_000, 1_700_000_100_000]
        .into_iter()
        .enumerate()
    {
        let id = create_for(&store, "v:erase", ConversationState::Active, created_at).await;
        let written = fill(&store, id, &format!("chat {i}")).await;
        close(&store, id).await;
        expected.add(Deleted {
            conversations: 1,
            // The close adds a lifecycle event.
            events: written.events + 1,
            ..written
        });
        erased.push(id);
    }
    let kept = create_for(
        &store,
        "v:keep",
        ConversationState::Active,
        1_700_000_050_000,
    )
    .await;
    fill(&store, kept, "kept").await;
    close(&store, kept).await;
    let kept_before = snapshot(&store, kept).await;

    let deleted = store
        .erase_player(&PlayerId("v:erase".into()))
        .await
        .expect("erase");
    assert_eq!(deleted, expected);
    for id in erased {
        assert_gone(&store, id).await;
    }
    let export = store
        .export_player(&PlayerId("v:erase".into()))
        .await
        .expect("export");
    assert!(export.conversations.is_empty() && export.card.is_none());
    assert_eq!(
        snapshot(&store, kept).await,
        kept_before,
        "another player's data stays"
    );

    let again = store
        .erase_player(&PlayerId("v:erase".into()))
        .await
        .expect("erase again");
    assert_eq!(again, Deleted::default());
}

/// While a player has an open conversation (queued, active or offline), erasing
/// them fails with `Precondition` and deletes nothing, closed conversations
/// included; once it is closed, the erasure goes through.
pub async fn erase_refused_while_a_conversation_is_open(store: Arc<dyn Store>) {
    for (i, state) in [
        ConversationState::Queued,
        ConversationState::Active,
        ConversationState::Offline,
    ]
    .into_iter()
    .enumerate()
    {
        let who = format!("p:open-{i}");
        let player_id = PlayerId(who.clone());
        let closed = create_for(&store, &who, ConversationState::Active, 1_700_000_000_000).await;
        fill(&store, closed, "earlier").await;
        close(&store, closed).await;
        let open = create_for(&store, &who, state, 1_700_000_100_000).await;
        let before = [snapshot(&store, closed).await, snapshot(&store, open).await];

        let refused = store.erase_player(&player_id).await;
        assert!(
            matches!(refused, Err(StoreError::Precondition)),
            "{state:?}: {refused:?}"
        );
        let after = [snapshot(&store, closed).await, snapshot(&store, open).await];
        assert_eq!(
            after, before,
            "{state:?}: a refused erasure deletes nothing"
        );

        close(&store, open).await;
        let deleted = store.erase_player(&player_id).await.expect("erase");
        assert_eq!(deleted.conversations, 2, "{state:?}");
        assert_gone(&store, closed).await;
        assert_gone(&store, open).await;
    }
}

// ---------------------------------------------------------------------------------
// Helpers.

/// An observer that records what it is told.
#[derive(Default)]
struct Recorder {
    /// Every entry reported, in the order reported.
    seen: Mutex<Vec<(StoredEntry, u64)>>,
}

impl Recorder {
    /// A copy of what was reported so far.
    fn seen(&self) -> Vec<(StoredEntry, u64)> {
        self.seen
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }
}

impl CommitObserver for Recorder {
    fn committed(&self, entries: &[(StoredEntry, u64)]) {
        self.seen
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .extend_from_slice(entries);
    }
}

/// Checks `prev_public` along a complete, ordered transcript.
/// Not a case of the suite, since it counts commits, which only a backend can: a
/// fenced write refused inside a batch (stale epoch, or capacity) rolls back only
/// its own savepoint, the epoch it would have recorded included; the other writes
/// of the transaction, a fenced one among them, commit. `commits` is the backend's
/// count of committed transactions.
pub async fn fenced_write_spares_its_batch(store: Arc<dyn Store>, commits: impl Fn() -> u64) {
    let id = create(&store, ConversationState::Active).await;
    let queued_id = create(&store, ConversationState::Queued).await;
    store
        .put_agent(AgentAccount {
            capacity: 0,
            ..account("bora", Role::Agent)
        })
        .await
        .expect("agent");
    assert_eq!(store.raise_routing_epoch(5).await.expect("raise"), 5);
    let before = commits();
    let said =
        |client_id: &str, text: &str| Change::append(id, message(player("p:1"), client_id, text));
    // Polled in this order, so queued to the writer in this order.
    let (r0, r1, r2, r3, r4, r5) = tokio::join!(
        store.apply(said("a", "one")),
        store.apply(assign(queued_id, "bora", fence(4, None))),
        store.apply(said("b", "two")),
        store.apply(assign(queued_id, "bora", fence(9, Some("bora")))),
        store.apply(assign(queued_id, "ayla", fence(6, None))),
        store.apply(said("c", "three")),
    );
    let results = [r0, r1, r2, r3, r4, r5];
    assert_eq!(commits() - before, 1, "all six in one transaction");
    let seq_of = |r: &crate::Result<Applied>| {
        r.as_ref()
            .ok()
            .and_then(|a| a.appended.as_ref())
            .map(|a| a.entry.seq)
    };
    assert_eq!(seq_of(&results[0]), Some(1));
    assert!(
        matches!(results[1], Err(StoreError::Fenced)),
        "{:?}",
        results[1]
    );
    assert_eq!(seq_of(&results[2]), Some(2));
    assert!(
        matches!(results[3], Err(StoreError::Precondition)),
        "{:?}",
        results[3]
    );
    assert_eq!(seq_of(&results[4]), Some(1), "the fenced assignment");
    assert_eq!(seq_of(&results[5]), Some(3));
    assert_eq!(
        store.routing_epoch().await.expect("epoch"),
        6,
        "the refused write's epoch 9 was rolled back"
    );
    let record = store
        .conversation(queued_id)
        .await
        .expect("read")
        .expect("found");
    assert_eq!(record.summary.agent, Some(AgentId("ayla".into())));
    assert_eq!(record.summary.last_seq, 1);
    assert_eq!(store.events(queued_id).await.expect("events").len(), 2);
}

fn check_prev_public(entries: &[StoredEntry]) {
    let mut last_public = 0;
    for entry in entries {
        assert_eq!(
            entry.prev_public, last_public,
            "prev_public of #{} skips notes back to the last public entry",
            entry.seq
        );
        if entry.is_public() {
            last_public = entry.seq;
        }
    }
}

/// Writes to an active conversation owned by `ayla` what a chat leaves behind: two
/// messages, a private note, an event entry, a lifecycle event and a hand-off. Texts
/// start with `label`. What it wrote, by table (`conversations` 0).
async fn fill(store: &Arc<dyn Store>, id: ConversationId, label: &str) -> Deleted {
    let record = store.conversation(id).await.expect("read").expect("found");
    let who = record.summary.player.0;
    for entry in [
        message(player(&who), "p1", &format!("{label}: hello")),
        message(agent("ayla"), "a1", &format!("{label}: how can I help?")),
        note(
            agent("ayla"),
            "n1",
            &format!("{label}: note about the player"),
        ),
    ] {
        store
            .apply(Change::append(id, entry))
            .await
            .expect("append");
    }
    store
        .apply(Change {
            conversation: id,
            entry: Some(system_event("transfer_requested")),
            events: vec![lifecycle(LifecycleKind::TransferRequested, Some("ayla"))],
            handoff: Some(handoff("ayla", "agent:bora", "requested")),
            ..Change::default()
        })
        .await
        .expect("hand-off");
    Deleted {
        conversations: 0,
        entries: store
            .entries(id, 0, 1000, true)
            .await
            .expect("entries")
            .len() as u64,
        events: store.events(id).await.expect("events").len() as u64,
        handoffs: store.handoffs(id).await.expect("handoffs").len() as u64,
    }
}

/// A conversation with everything stored under it, to compare before and after.
type Snapshot = (
    Option<crate::ConversationRecord>,
    Vec<StoredEntry>,
    Vec<LifecycleEvent>,
    Vec<Handoff>,
);

/// Everything stored under one conversation.
async fn snapshot(store: &Arc<dyn Store>, id: ConversationId) -> Snapshot {
    (
        store.conversation(id).await.expect("read"),
        store.entries(id, 0, 10_000, true).await.expect("entries"),
        store.events(id).await.expect("events"),
        store.handoffs(id).await.expect("handoffs"),
    )
}

/// Nothing is stored under `id` any more: no conversation, entry, event or hand-off.
async fn assert_gone(store: &Arc<dyn Store>, id: ConversationId) {
    assert_eq!(
        snapshot(store, id).await,
        (None, Vec::new(), Vec::new(), Vec::new()),
        "conversation {id} and everything keyed on it are deleted"
    );
}

/// The entry an `apply` appended.
fn appended(result: crate::Result<Applied>) -> crate::Result<crate::Appended> {
    result.map(|a| a.appended.expect("a change with an entry reports it"))
}

/// A conversation to create, in department `general`, language `tr`.
fn new_conversation(player: &str, state: ConversationState, created_at: u64) -> NewConversation {
    NewConversation {
        id: ConversationId::new(),
        player: PlayerCard {
            id: PlayerId(player.into()),
            name: Some("Deniz".into()),
            language: Some("tr".into()),
            vip_tier: 3,
            jurisdiction: Some("MT".into()),
            self_excluded: false,
            verified: player.starts_with("p:"),
        },
        department: "general".into(),
        language: "tr".into(),
        state,
        created_at,
        open_limit: None,
    }
}

/// Creates a conversation, in `state` (an `Active` one is created queued, then
/// assigned to `ayla`).
async fn create(store: &Arc<dyn Store>, state: ConversationState) -> ConversationId {
    create_for(store, "p:1", state, now_ms()).await
}

/// Creates a conversation of `player` at `created_at`, in `state` (an `Active` one
/// is created queued, then assigned to `ayla`).
async fn create_for(
    store: &Arc<dyn Store>,
    player: &str,
    state: ConversationState,
    created_at: u64,
) -> ConversationId {
    let born = if state == ConversationState::Offline {
        state
    } else {
        ConversationState::Queued
    };
    let new = new_conversation(player, born, created_at);
    let id = new.id;
    store.create_conversation(new).await.expect("create");
    if state == ConversationState::Active {
        store
            .apply(Change {
                conversation: id,
                set: Some(SetState {
                    state,
                    agent: Some(AgentId("ayla".into())),
                    close_reason: None,
                    department: None,
                }),
                ..Change::default()
            })
            .await
            .expect("assign");
    }
    id
}

/// Creates a queued conversation in `department`.
async fn create_in(store: &Arc<dyn Store>, department: &str) -> ConversationId {
    let mut new = new_conversation("p:1", ConversationState::Queued, now_ms());
    new.department = department.into();
    let id = new.id;
    store.create_conversation(new).await.expect("create");
    id
}

/// Assigns a conversation to `ayla`, dating the `assigned` event `at`.
async fn assign_at(store: &Arc<dyn Store>, id: ConversationId, at: u64) {
    store
        .apply(Change {
            conversation: id,
            set: Some(SetState {
                state: ConversationState::Active,
                agent: Some(AgentId("ayla".into())),
                close_reason: None,
                department: None,
            }),
            events: vec![LifecycleEvent {
                at,
                ..lifecycle(LifecycleKind::Assigned, Some("ayla"))
            }],
            ..Change::default()
        })
        .await
        .expect("assign");
}

/// Closes a conversation (reason `resolved`).
pub async fn close(store: &Arc<dyn Store>, id: ConversationId) {
    store
        .apply(Change {
            conversation: id,
            set: Some(SetState {
                state: ConversationState::Closed,
                agent: None,
                close_reason: Some("resolved".into()),
                department: None,
            }),
            events: vec![lifecycle(LifecycleKind::Closed, None)],
            ..Change::default()
        })
        .await
        .expect("close");
}

/// A fence at `epoch`, checking `capacity_of`'s capacity if given.
fn fence(epoch: u64, capacity_of: Option<&str>) -> Fence {
    Fence {
        epoch,
        capacity_of: capacity_of.map(|a| AgentId(a.into())),
    }
}

/// A routing decision under `epoch` (no capacity condition): the queued, unowned
/// conversation `id` goes to `to`. For backends' own tests of fencing.
pub fn fenced_assign(id: ConversationId, to: &str, epoch: u64) -> Change {
    assign(id, to, fence(epoch, None))
}

/// A routing decision under `epoch`: `from` loses the active conversation `id`,
/// which goes back to the queue. For backends' own tests of fencing.
pub fn fenced_requeue(id: ConversationId, from: &str, epoch: u64) -> Change {
    requeue(id, from, fence(epoch, None))
}

/// A fenced routing decision: the queued, unowned conversation `id` goes to `to`,
/// with its `assigned` entry and event.
fn assign(id: ConversationId, to: &str, fence: Fence) -> Change {
    Change {
        conversation: id,
        expect: Some(Expect {
            state: ConversationState::Queued,
            agent: None,
        }),
        set: Some(SetState {
            state: ConversationState::Active,
            agent: Some(AgentId(to.into())),
            close_reason: None,
            department: None,
        }),
        entry: Some(system_event("assigned")),
        events: vec![lifecycle(LifecycleKind::Assigned, Some(to))],
        fence: Some(fence),
        ..Change::default()
    }
}

/// A fenced routing decision: `from` loses the active conversation `id`, which goes
/// back to the queue, with its `requeued` entry and event.
fn requeue(id: ConversationId, from: &str, fence: Fence) -> Change {
    Change {
        conversation: id,
        expect: Some(Expect {
            state: ConversationState::Active,
            agent: Some(AgentId(from.into())),
        }),
        set: Some(SetState {
            state: ConversationState::Queued,
            agent: None,
            close_reason: None,
            department: None,
        }),
        entry: Some(system_event("requeued")),
        events: vec![lifecycle(LifecycleKind::Requeued, Some(from))],
        fence: Some(fence),
        ..Change::default()
    }
}

/// A lifecycle event now.
/// Records `events` (kind, agent, Unix ms) on conversation `id`, in one change.
async fn record_events(
    store: &Arc<dyn Store>,
    id: ConversationId,
    events: &[(LifecycleKind, Option<&str>, u64)],
) {
    store
        .apply(Change {
            conversation: id,
            events: events
                .iter()
                .map(|&(kind, agent, at)| LifecycleEvent {
                    at,
                    ..lifecycle(kind, agent)
                })
                .collect(),
            ..Change::default()
        })
        .await
        .expect("record events");
}

/// (kind, agent, Unix ms) of each of `events` about conversation `id`, in order.
fn events_of(
    events: &[crate::RecordedEvent],
    id: ConversationId,
) -> Vec<(LifecycleKind, Option<&str>, u64)> {
    events
        .iter()
        .filter(|e| e.conversation == id)
        .map(|e| {
            (
                e.event.kind,
                e.event.agent.as_ref().map(|a| a.0.as_str()),
                e.event.at,
            )
        })
        .collect()
}

fn lifecycle(kind: LifecycleKind, agent: Option<&str>) -> LifecycleEvent {
    LifecycleEvent {
        kind,
        agent: agent.map(|a| AgentId(a.into())),
        detail: serde_json::json!({}),
        at: now_ms(),
    }
}

/// A hand-off now.
fn handoff(from: &str, to: &str, outcome: &str) -> Handoff {
    Handoff {
        from: AgentId(from.into()),
        to: to.into(),
        note: Some("player asks about a withdrawal".into()),
        outcome: outcome.into(),
        at: now_ms(),
    }
}

/// A player.
fn player(id: &str) -> Participant {
    Participant {
        role: Role::Player,
        id: id.into(),
        name: Some("Deniz".into()),
    }
}

/// An agent.
fn agent(id: &str) -> Participant {
    Participant {
        role: Role::Agent,
        id: id.into(),
        name: Some(id.to_uppercase()),
    }
}

/// A chat message.
fn message(sender: Participant, client_id: &str, text: &str) -> NewEntry {
    NewEntry {
        kind: MessageKind::Text,
        sender,
        text: text.into(),
        client_id: Some(client_id.into()),
        event: None,
        origin: 0,
    }
}

/// A private note.
fn note(sender: Participant, client_id: &str, text: &str) -> NewEntry {
    NewEntry {
        kind: MessageKind::Note,
        ..message(sender, client_id, text)
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
        text: tag.replace('_', " "),
        client_id: None,
        event: Some(tag.into()),
        origin: 0,
    }
}

/// An account.
fn account(id: &str, role: Role) -> AgentAccount {
    AgentAccount {
        id: AgentId(id.into()),
        name: id.to_uppercase(),
        password_hash: "$argon2id$v=19$m=19456,t=2,p=1$c2FsdA$aGFzaA".into(),
        role,
        languages: vec!["en".into(), "tr".into()],
        departments: vec!["general".into(), "payments".into()],
        capacity: 3,
        created_at: 1_700_000_000_000,
        sessions_ended_at: 0,
    }
}
