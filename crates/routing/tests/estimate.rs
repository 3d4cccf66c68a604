//! Scenarios for queue positions and the wait estimate, with concrete numbers for
//! the formula documented in the crate docs.

mod common;

use common::*;
use pitboss_protocol::AgentStatus;
use pitboss_routing::{Position, Router, RoutingConfig};

/// A place in a line that some online agent serves.
fn pos(position: u32, estimated_wait_ms: Option<u64>) -> Position {
    Position {
        position,
        estimated_wait_ms,
        agents_online: true,
    }
}

/// A place in a line that no online agent serves.
fn unserved(position: u32) -> Position {
    Position {
        position,
        estimated_wait_ms: None,
        agents_online: false,
    }
}

/// ana and bo (capacity 2 each) are full with c1–c3 offered and x1 restored to
/// ana; c4 waits. C = 4, F = 0.
fn full_house(r: &mut Router) {
    add_online(r, "ana", &["en"], &["support"], 2, 0);
    add_online(r, "bo", &["en"], &["support"], 2, 1);
    r.restore_owned(cid(100), &agent("ana"), req("support", "en", 0), 2)
        .unwrap();
    for n in 1..=4 {
        r.enqueue(cid(n), req("support", "en", 0), 10 + n as u64)
            .unwrap();
    }
    assert_eq!((load(r, "ana"), load(r, "bo")), (2, 2));
    assert_eq!(offered_to(r, cid(4)), None);
}

#[test]
fn estimate_follows_the_formula() {
    let mut r = router();
    r.record_handle_time("support", 60_000);
    r.record_handle_time("support", 120_000); // H = 90 s
    full_house(&mut r);
    // c1–c3 hold offers: answered now. c4 is the first without one:
    // F = 0, C = 4, p = 1: ceil(1 × 90 000 / 4).
    assert_eq!(r.position(cid(1)), Some(pos(1, Some(0))));
    assert_eq!(r.position(cid(3)), Some(pos(3, Some(0))));
    assert_eq!(r.position(cid(4)), Some(pos(4, Some(22_500))));
    // A fifth: p = 2.
    r.enqueue(cid(5), req("support", "en", 0), 15).unwrap();
    assert_eq!(r.position(cid(5)), Some(pos(5, Some(45_000))));
    r.release(cid(5), 16);

    // Dee (capacity 3) comes online and declines c4: her 3 slots are free but she
    // is in cooldown for c4. C = 7, F = 3.
    add_online(&mut r, "dee", &["en"], &["support"], 3, 20);
    assert_eq!(offered_to(&r, cid(4)), Some(agent("dee")));
    r.decline(cid(4), &agent("dee"), 30).unwrap();
    assert_eq!(r.position(cid(1)), Some(pos(1, Some(0))));
    assert_eq!(r.position(cid(3)), Some(pos(3, Some(0))));
    // c4: p = 1 ≤ F = 3 → 0. Three more arrive and take dee's slots by offers;
    // the fourth new one (c9) has p = 2, F = 0, C = 7: ceil(2 × 90 000 / 7) =
    // ceil(25 714.28…) = 25 715.
    assert_eq!(r.position(cid(4)), Some(pos(4, Some(0))));
    for n in 6..=9 {
        r.enqueue(cid(n), req("support", "en", 0), 31).unwrap();
    }
    assert_eq!(
        r.positions(),
        vec![
            (cid(1), pos(1, Some(0))),
            (cid(2), pos(2, Some(0))),
            (cid(3), pos(3, Some(0))),
            (cid(4), pos(4, Some(12_858))),
            (cid(6), pos(5, Some(0))),
            (cid(7), pos(6, Some(0))),
            (cid(8), pos(7, Some(0))),
            (cid(9), pos(8, Some(25_715))),
        ]
    );
    invariants(&r);
}

#[test]
fn no_history_means_no_estimate() {
    let mut r = router();
    full_house(&mut r);
    // An open offer means now, history or not; c4 has none.
    assert_eq!(r.position(cid(1)), Some(pos(1, Some(0))));
    assert_eq!(r.position(cid(4)), Some(pos(4, None)));
    // History for another department does not count.
    r.record_handle_time("payments", 60_000);
    assert_eq!(r.position(cid(4)), Some(pos(4, None)));
    r.record_handle_time("support", 60_000);
    // p = 1, F = 0, C = 4: ceil(60 000 / 4).
    assert_eq!(r.position(cid(4)), Some(pos(4, Some(15_000))));
}

#[test]
fn no_online_agent_means_no_estimate() {
    let mut r = router();
    r.record_handle_time("support", 60_000);
    r.upsert_agent(agent("ana"), profile(&["en"], &["support"], 2), 0);
    r.enqueue(cid(1), req("support", "en", 0), 1).unwrap();
    assert_eq!(r.position(cid(1)), Some(unserved(1)), "C = 0");
    r.set_status(&agent("ana"), AgentStatus::Online, 2).unwrap();
    r.set_status(&agent("ana"), AgentStatus::Away, 3).unwrap();
    assert_eq!(
        r.position(cid(1)),
        Some(unserved(1)),
        "away agents do not count"
    );
}

#[test]
fn players_are_told_when_someone_comes_online_without_history() {
    let mut r = router();
    r.upsert_agent(agent("ana"), profile(&["en"], &["support"], 1), 0);
    r.restore_owned(cid(100), &agent("ana"), req("support", "en", 0), 0)
        .unwrap();
    r.enqueue(cid(1), req("support", "en", 0), 1).unwrap();
    assert_eq!(r.positions(), vec![(cid(1), unserved(1))]);
    // Online but full, and nothing closed yet: still no estimate, but someone is
    // there, and the waiting player hears of it.
    let ds = r.set_status(&agent("ana"), AgentStatus::Online, 2).unwrap();
    assert!(
        ds.contains(&pitboss_routing::Decision::QueueChanged),
        "{ds:?}"
    );
    assert_eq!(r.positions(), vec![(cid(1), pos(1, None))]);
    let ds = r.set_status(&agent("ana"), AgentStatus::Away, 3).unwrap();
    assert!(
        ds.contains(&pitboss_routing::Decision::QueueChanged),
        "{ds:?}"
    );
    assert_eq!(r.positions(), vec![(cid(1), unserved(1))]);
}

#[test]
fn a_free_slot_means_no_wait_without_history() {
    let mut r = router();
    add_online(&mut r, "dee", &["en"], &["support"], 3, 0);
    r.enqueue(cid(1), req("support", "en", 0), 1).unwrap();
    assert_eq!(offered_to(&r, cid(1)), Some(agent("dee")));
    // Declined: dee's slots are free, but she is in cooldown for c1. Nothing has
    // closed yet, and still the wait is none: a slot is free for it.
    r.decline(cid(1), &agent("dee"), 2).unwrap();
    assert_eq!(offered_to(&r, cid(1)), None);
    assert_eq!(r.position(cid(1)), Some(pos(1, Some(0))));
    assert_eq!(r.positions(), vec![(cid(1), pos(1, Some(0)))]);
    invariants(&r);
}

#[test]
fn an_online_agent_without_capacity_is_online() {
    let mut r = router();
    r.record_handle_time("support", 60_000);
    add_online(&mut r, "zed", &["en"], &["support"], 0, 0);
    r.enqueue(cid(1), req("support", "en", 0), 1).unwrap();
    // Someone serves the line, with no slot: no estimate, but not "nobody".
    assert_eq!(r.position(cid(1)), Some(pos(1, None)));
    assert_eq!(r.positions(), vec![(cid(1), pos(1, None))]);
    let ds = r.set_status(&agent("zed"), AgentStatus::Away, 2).unwrap();
    assert!(
        ds.contains(&pitboss_routing::Decision::QueueChanged),
        "{ds:?}"
    );
    assert_eq!(r.positions(), vec![(cid(1), unserved(1))]);
    invariants(&r);
}

#[test]
fn positions_count_within_department_and_language() {
    let mut r = router();
    r.enqueue(cid(1), req("support", "en", 0), 1).unwrap();
    r.enqueue(cid(2), req("support", "de", 0), 2).unwrap();
    r.enqueue(cid(3), req("payments", "en", 0), 3).unwrap();
    r.enqueue(cid(4), req("support", "en", 0), 4).unwrap();
    let p: Vec<u32> = (1..=4)
        .map(|n| r.position(cid(n)).unwrap().position)
        .collect();
    assert_eq!(p, vec![1, 1, 1, 2]);
    assert_eq!(r.position(cid(9)), None);
}

#[test]
fn release_records_the_handle_time_of_its_department() {
    let mut r = router();
    add_online(&mut r, "ana", &["en"], &["support"], 1, 0);
    assign(&mut r, cid(1), req("support", "en", 0), "ana", 1_000);
    r.enqueue(cid(2), req("support", "en", 0), 2_000).unwrap();
    assert_eq!(r.position(cid(2)), Some(pos(1, None)), "nothing closed yet");
    r.release(cid(1), 61_000); // handled for 60 s
    r.accept(cid(2), &agent("ana"), 61_500).unwrap();
    r.enqueue(cid(3), req("support", "en", 0), 62_000).unwrap();
    // F = 0, C = 1, H = 60 s.
    assert_eq!(r.position(cid(3)), Some(pos(1, Some(60_000))));
    // A queued player who abandons records nothing.
    r.enqueue(cid(4), req("support", "en", 0), 63_000).unwrap();
    r.release(cid(4), 900_000);
    assert_eq!(r.position(cid(3)), Some(pos(1, Some(60_000))));
}

#[test]
fn only_the_last_window_of_handle_times_counts() {
    let mut r = Router::new(RoutingConfig {
        handle_time_window: 2,
        ..RoutingConfig::default()
    });
    r.upsert_agent(agent("ana"), profile(&["en"], &["support"], 1), 0);
    r.set_status(&agent("ana"), AgentStatus::Online, 0).unwrap();
    r.restore_owned(cid(100), &agent("ana"), req("support", "en", 0), 0)
        .unwrap();
    r.enqueue(cid(1), req("support", "en", 0), 1).unwrap();
    r.record_handle_time("support", 1_000_000);
    r.record_handle_time("support", 10_000);
    r.record_handle_time("support", 30_000);
    assert_eq!(r.position(cid(1)), Some(pos(1, Some(20_000))));
}

/// A conversation restored after a restart (a failover) adds no handle time when
/// it closes: when its agent got it is not known here, and the time since the
/// restart would read as a short chat and pull the estimate down.
#[test]
fn a_restored_conversation_adds_no_handle_time() {
    let mut r = router();
    r.record_handle_time("support", 60_000);
    add_online(&mut r, "ana", &["en"], &["support"], 1, 0);
    r.restore_owned(cid(100), &agent("ana"), req("support", "en", 0), 2)
        .unwrap();
    r.enqueue(cid(1), req("support", "en", 0), 3).unwrap();
    r.enqueue(cid(2), req("support", "en", 0), 4).unwrap();
    assert_eq!(r.position(cid(1)), Some(pos(1, Some(60_000))));
    r.release(cid(100), 10);
    assert_eq!(offered_to(&r, cid(1)), Some(agent("ana")));
    // c2 is the first without an offer: p = 1, F = 0, C = 1, H still 60 s.
    assert_eq!(r.position(cid(2)), Some(pos(2, Some(60_000))));
    invariants(&r);
}
