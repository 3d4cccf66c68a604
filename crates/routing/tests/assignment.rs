//! Scenarios for queueing and assignment: matching, capacity, queue order, agent
//! choice, offer expiry, decline cooldown, freed slots, takeover, requeue,
//! status changes and errors.

mod common;

use common::*;
use pitboss_protocol::AgentStatus;
use pitboss_routing::{ConversationView, Decision, RoutingError, WithdrawReason};

#[test]
fn offers_go_to_agents_serving_both_department_and_language() {
    let mut r = router();
    add_online(&mut r, "ana", &["en"], &["payments"], 2, 0);
    add_online(&mut r, "bo", &["de"], &["payments"], 2, 0);
    add_online(&mut r, "cy", &["en"], &["risk"], 2, 0);

    let d = r.enqueue(cid(1), req("payments", "de", 0), 10).unwrap();
    assert_eq!(
        d,
        vec![
            Decision::Offer {
                conversation: cid(1),
                agent: agent("bo"),
                expires_at: 20_010,
                transfer_from: None,
            },
            Decision::QueueChanged,
        ]
    );
    let d = r.enqueue(cid(2), req("payments", "en", 0), 11).unwrap();
    assert_eq!(offers_in(&d), vec![(cid(2), agent("ana"))]);
    // Nobody speaks German in risk: it waits, nobody is offered it.
    let d = r.enqueue(cid(3), req("risk", "de", 0), 12).unwrap();
    assert_eq!(d, vec![Decision::QueueChanged]);
    assert_eq!(offered_to(&r, cid(3)), None);
    invariants(&r);
}

#[test]
fn can_serve_needs_an_online_agent_but_not_free_capacity() {
    let mut r = router();
    r.upsert_agent(agent("ana"), profile(&["en"], &["support"], 1), 0);
    assert!(!r.can_serve("support", "en"), "offline agents do not count");
    r.set_status(&agent("ana"), AgentStatus::Online, 1).unwrap();
    assert!(r.can_serve("support", "en"));
    assert!(!r.can_serve("support", "de"));
    assert!(!r.can_serve("payments", "en"));
    r.enqueue(cid(1), req("support", "en", 0), 2).unwrap();
    assert_eq!(load(&r, "ana"), 1);
    assert!(r.can_serve("support", "en"), "a full agent still serves");
    r.set_status(&agent("ana"), AgentStatus::Away, 3).unwrap();
    assert!(!r.can_serve("support", "en"), "away agents do not count");
}

#[test]
fn capacity_counts_pending_offers_and_is_never_exceeded() {
    let mut r = router();
    add_online(&mut r, "ana", &["en"], &["support"], 2, 0);
    let d1 = r.enqueue(cid(1), req("support", "en", 0), 1).unwrap();
    let d2 = r.enqueue(cid(2), req("support", "en", 0), 2).unwrap();
    let d3 = r.enqueue(cid(3), req("support", "en", 0), 3).unwrap();
    assert_eq!(offers_in(&d1), vec![(cid(1), agent("ana"))]);
    assert_eq!(offers_in(&d2), vec![(cid(2), agent("ana"))]);
    assert!(
        offers_in(&d3).is_empty(),
        "a third offer would exceed capacity"
    );
    assert_eq!(load(&r, "ana"), 2, "two pending offers reserve two slots");

    let d = r.accept(cid(1), &agent("ana"), 4).unwrap();
    assert_eq!(
        d[0],
        Decision::Assigned {
            conversation: cid(1),
            agent: agent("ana"),
            previous: None
        }
    );
    assert!(offers_in(&d).is_empty());
    assert_eq!(load(&r, "ana"), 2, "the offer's slot became the owned slot");

    let d = r.release(cid(1), 5);
    assert_eq!(offers_in(&d), vec![(cid(3), agent("ana"))]);
    assert_eq!(load(&r, "ana"), 2);
    invariants(&r);
}

#[test]
fn vip_tiers_are_worth_a_fixed_amount_of_waiting() {
    // aging_per_tier_ms = 60 s by default.
    let mut r = router();
    r.upsert_agent(agent("ana"), profile(&["en"], &["support"], 1), 0);
    r.enqueue(cid(1), req("support", "en", 0), 0).unwrap(); // key 0
    r.enqueue(cid(2), req("support", "en", 1), 30_000).unwrap(); // key -30 000
    r.enqueue(cid(3), req("support", "en", 1), 90_000).unwrap(); // key +30 000
    r.enqueue(cid(4), req("support", "en", 2), 100_000).unwrap(); // key -20 000
    assert_eq!(queue_ids(&r), vec![cid(2), cid(4), cid(1), cid(3)]);
    let positions: Vec<u32> = [2, 4, 1, 3]
        .iter()
        .map(|n| r.position(cid(*n)).unwrap().position)
        .collect();
    assert_eq!(positions, vec![1, 2, 3, 4]);

    let d = r
        .set_status(&agent("ana"), AgentStatus::Online, 100_001)
        .unwrap();
    assert_eq!(offers_in(&d), vec![(cid(2), agent("ana"))]);
    invariants(&r);
}

#[test]
fn same_tier_is_first_come_first_served_even_at_the_same_instant() {
    let mut r = router();
    r.upsert_agent(agent("ana"), profile(&["en"], &["support"], 5), 0);
    for n in [5, 3, 9, 1, 7] {
        r.enqueue(cid(n), req("support", "en", 1), 42).unwrap();
    }
    assert_eq!(queue_ids(&r), vec![cid(5), cid(3), cid(9), cid(1), cid(7)]);
    let d = r
        .set_status(&agent("ana"), AgentStatus::Online, 50)
        .unwrap();
    let offered: Vec<_> = offers_in(&d).into_iter().map(|(c, _)| c).collect();
    assert_eq!(offered, vec![cid(5), cid(3), cid(9), cid(1), cid(7)]);
}

#[test]
fn least_loaded_then_longest_idle_then_id() {
    let mut r = router();
    add_online(&mut r, "ana", &["en"], &["support"], 3, 0);
    add_online(&mut r, "bo", &["en"], &["support"], 3, 10);
    add_online(&mut r, "cy", &["en"], &["support"], 3, 20);

    let who = |d: &[Decision]| {
        offers_in(d)
            .into_iter()
            .map(|(_, a)| a.0)
            .collect::<Vec<_>>()
    };
    // All idle: the one idle the longest (online first) gets it.
    assert_eq!(
        who(&r.enqueue(cid(1), req("support", "en", 0), 100).unwrap()),
        ["ana"]
    );
    // Then the least loaded.
    assert_eq!(
        who(&r.enqueue(cid(2), req("support", "en", 0), 101).unwrap()),
        ["bo"]
    );
    assert_eq!(
        who(&r.enqueue(cid(3), req("support", "en", 0), 102).unwrap()),
        ["cy"]
    );
    // All at load 1, nobody's load went down: idle order unchanged.
    assert_eq!(
        who(&r.enqueue(cid(4), req("support", "en", 0), 103).unwrap()),
        ["ana"]
    );
    // Ana declines: her load went down at 200, so she is now the most recently
    // idle; she is also in cooldown for c4, which goes to bo (idle since 10).
    assert_eq!(who(&r.decline(cid(4), &agent("ana"), 200).unwrap()), ["bo"]);
    // Loads: ana 1, bo 2, cy 1. Ana and cy tie on load; cy has been idle longer.
    assert_eq!(
        who(&r.enqueue(cid(5), req("support", "en", 0), 300).unwrap()),
        ["cy"]
    );
    invariants(&r);

    // Equal load and idle time: the smaller id.
    let mut r = router();
    add_online(&mut r, "zed", &["en"], &["support"], 1, 0);
    add_online(&mut r, "ada", &["en"], &["support"], 1, 0);
    assert_eq!(
        who(&r.enqueue(cid(1), req("support", "en", 0), 1).unwrap()),
        ["ada"]
    );
}

#[test]
fn a_freed_slot_goes_at_once_to_the_longest_waiting_eligible_player() {
    let mut r = router();
    add_online(&mut r, "ana", &["en"], &["support", "payments"], 1, 0);
    add_online(&mut r, "bo", &["en"], &["support"], 1, 0);
    assign(&mut r, cid(100), req("support", "en", 0), "ana", 1);
    assign(&mut r, cid(101), req("support", "en", 0), "bo", 2);
    r.enqueue(cid(1), req("support", "en", 0), 10).unwrap();
    r.enqueue(cid(2), req("payments", "en", 0), 20).unwrap();
    r.enqueue(cid(3), req("support", "en", 0), 30).unwrap();

    // Bo frees up: the longest-waiting player bo can serve.
    let d = r.release(cid(101), 40);
    assert_eq!(offers_in(&d), vec![(cid(1), agent("bo"))]);
    // Ana frees up: c2 (payments) has waited longer than c3, and ana serves it.
    let d = r.release(cid(100), 50);
    assert_eq!(offers_in(&d), vec![(cid(2), agent("ana"))]);
    assert_eq!(offered_to(&r, cid(3)), None);
    invariants(&r);
}

#[test]
fn an_expired_offer_moves_on_and_sets_the_agent_away() {
    let mut r = router();
    add_online(&mut r, "ana", &["en"], &["support"], 2, 0);
    add_online(&mut r, "bo", &["en"], &["support"], 2, 5);
    r.enqueue(cid(1), req("support", "en", 0), 10).unwrap(); // ana
    r.enqueue(cid(2), req("support", "en", 0), 11).unwrap(); // bo
    r.enqueue(cid(3), req("support", "en", 0), 12).unwrap(); // ana
    assert_eq!(offered_to(&r, cid(3)), Some(agent("ana")));
    assert_eq!(r.next_deadline(), Some(20_010));

    assert!(r.tick(20_009).is_empty());
    let d = r.tick(20_010);
    assert_eq!(
        d,
        vec![
            Decision::OfferWithdrawn {
                conversation: cid(1),
                agent: agent("ana"),
                reason: WithdrawReason::Expired
            },
            Decision::AgentAway {
                agent: agent("ana")
            },
            Decision::OfferWithdrawn {
                conversation: cid(3),
                agent: agent("ana"),
                reason: WithdrawReason::Cancelled
            },
            Decision::Offer {
                conversation: cid(1),
                agent: agent("bo"),
                expires_at: 40_010,
                transfer_from: None
            },
            Decision::QueueChanged,
        ]
    );
    assert_eq!(status(&r, "ana"), AgentStatus::Away);
    assert_eq!(load(&r, "ana"), 0);
    assert_eq!(offered_to(&r, cid(3)), None, "bo is full");
    invariants(&r);

    // Back online: c3 (merely cancelled) may go to ana; c1 may not (she let it expire).
    let d = r
        .set_status(&agent("ana"), AgentStatus::Online, 20_100)
        .unwrap();
    assert_eq!(offers_in(&d), vec![(cid(3), agent("ana"))]);
    invariants(&r);
}

#[test]
fn an_agent_who_let_an_offer_expire_is_not_offered_it_again_during_the_cooldown() {
    let mut r = router();
    add_online(&mut r, "ana", &["en"], &["support"], 1, 0);
    r.enqueue(cid(1), req("support", "en", 0), 0).unwrap();
    let d = r.tick(20_000);
    assert!(d.contains(&Decision::AgentAway {
        agent: agent("ana")
    }));
    assert!(offers_in(&d).is_empty());
    let d = r
        .set_status(&agent("ana"), AgentStatus::Online, 20_500)
        .unwrap();
    assert!(offers_in(&d).is_empty(), "still in cooldown: {d:?}");
    assert_eq!(r.next_deadline(), Some(50_000));
    assert!(offers_in(&r.tick(49_999)).is_empty());
    assert_eq!(offers_in(&r.tick(50_000)), vec![(cid(1), agent("ana"))]);
    invariants(&r);
}

#[test]
fn decline_starts_a_cooldown_for_that_conversation_only() {
    let mut r = router();
    add_online(&mut r, "ana", &["en"], &["support"], 2, 0);
    r.enqueue(cid(1), req("support", "en", 0), 0).unwrap();
    let d = r.decline(cid(1), &agent("ana"), 1_000).unwrap();
    assert_eq!(
        d,
        vec![
            Decision::OfferWithdrawn {
                conversation: cid(1),
                agent: agent("ana"),
                reason: WithdrawReason::Declined
            },
            Decision::QueueChanged,
        ],
        "the only eligible agent is in cooldown: it waits"
    );
    assert_eq!(
        status(&r, "ana"),
        AgentStatus::Online,
        "declining is not AFK"
    );
    // Another conversation is offered to her at once.
    let d = r.enqueue(cid(2), req("support", "en", 0), 2_000).unwrap();
    assert_eq!(offers_in(&d), vec![(cid(2), agent("ana"))]);
    r.accept(cid(2), &agent("ana"), 2_500).unwrap();

    assert_eq!(r.next_deadline(), Some(31_000), "the cooldown's end");
    assert!(offers_in(&r.tick(30_999)).is_empty());
    assert_eq!(offers_in(&r.tick(31_000)), vec![(cid(1), agent("ana"))]);
    invariants(&r);
}

#[test]
fn decline_moves_the_conversation_to_the_next_agent() {
    let mut r = router();
    add_online(&mut r, "ana", &["en"], &["support"], 1, 0);
    add_online(&mut r, "bo", &["en"], &["support"], 1, 1);
    r.enqueue(cid(1), req("support", "en", 0), 2).unwrap();
    let d = r.decline(cid(1), &agent("ana"), 3).unwrap();
    assert_eq!(offers_in(&d), vec![(cid(1), agent("bo"))]);
    assert_eq!(load(&r, "ana"), 0);
    // Bo declines too: ana is still in cooldown, so it waits.
    let d = r.decline(cid(1), &agent("bo"), 4).unwrap();
    assert!(offers_in(&d).is_empty());
    invariants(&r);
}

#[test]
fn set_status_away_withdraws_offers_but_keeps_owned_conversations() {
    let mut r = router();
    add_online(&mut r, "ana", &["en"], &["support"], 2, 0);
    assign(&mut r, cid(100), req("support", "en", 0), "ana", 1);
    r.enqueue(cid(1), req("support", "en", 0), 2).unwrap();
    assert_eq!(offered_to(&r, cid(1)), Some(agent("ana")));
    add_online(&mut r, "bo", &["en"], &["support"], 1, 3);

    let d = r.set_status(&agent("ana"), AgentStatus::Away, 4).unwrap();
    assert_eq!(
        d,
        vec![
            Decision::OfferWithdrawn {
                conversation: cid(1),
                agent: agent("ana"),
                reason: WithdrawReason::Cancelled
            },
            Decision::Offer {
                conversation: cid(1),
                agent: agent("bo"),
                expires_at: 20_004,
                transfer_from: None
            },
            Decision::QueueChanged,
        ]
    );
    assert_eq!(owner(&r, cid(100)), Some(agent("ana")));
    assert_eq!(load(&r, "ana"), 1);
    // Away agents get no offers, however free.
    let d = r.enqueue(cid(2), req("support", "en", 0), 5).unwrap();
    assert!(offers_in(&d).is_empty());
    r.set_status(&agent("ana"), AgentStatus::Offline, 6)
        .unwrap();
    assert_eq!(r.owned_by(&agent("ana")), vec![cid(100)]);
    invariants(&r);
}

#[test]
fn takeover_of_a_queued_conversation_cancels_its_offer_and_ignores_capacity() {
    let mut r = router();
    add_online(&mut r, "sup", &["en"], &["support"], 1, 0);
    assign(&mut r, cid(100), req("support", "en", 0), "sup", 1);
    add_online(&mut r, "ana", &["en"], &["support"], 1, 2);
    r.enqueue(cid(1), req("support", "en", 0), 3).unwrap();
    assert_eq!(offered_to(&r, cid(1)), Some(agent("ana")));

    let d = r.take_over(cid(1), &agent("sup"), 4).unwrap();
    assert_eq!(
        d,
        vec![
            Decision::OfferWithdrawn {
                conversation: cid(1),
                agent: agent("ana"),
                reason: WithdrawReason::Cancelled
            },
            Decision::Assigned {
                conversation: cid(1),
                agent: agent("sup"),
                previous: None
            },
            Decision::QueueChanged,
        ]
    );
    assert_eq!(load(&r, "sup"), 2, "above capacity, and it counts");
    assert_eq!(load(&r, "ana"), 0);
    // The override does not open the door to more: sup gets no further offers.
    r.enqueue(cid(2), req("support", "en", 0), 5).unwrap();
    r.enqueue(cid(3), req("support", "en", 0), 6).unwrap();
    assert_eq!(offered_to(&r, cid(2)), Some(agent("ana")));
    assert_eq!(offered_to(&r, cid(3)), None);

    assert_eq!(
        r.take_over(cid(3), &agent("nobody"), 7),
        Err(RoutingError::UnknownAgent)
    );
    assert_eq!(
        r.take_over(cid(99), &agent("sup"), 7),
        Err(RoutingError::UnknownConversation)
    );
    invariants(&r);
}

#[test]
fn requeued_conversations_go_ahead_of_everyone_in_fifo_order() {
    let mut r = router();
    r.upsert_agent(agent("ana"), profile(&["en"], &["support"], 1), 0);
    r.enqueue(cid(1), req("support", "en", 0), 0).unwrap();
    r.enqueue(cid(2), req("support", "en", 255), 1).unwrap();
    r.requeue_at_head(cid(3), req("support", "en", 0), 2)
        .unwrap();
    r.requeue_at_head(cid(4), req("support", "en", 0), 3)
        .unwrap();
    r.enqueue(cid(5), req("support", "en", 255), 4).unwrap();
    assert_eq!(queue_ids(&r), vec![cid(3), cid(4), cid(2), cid(5), cid(1)]);
    assert_eq!(r.position(cid(3)).unwrap().position, 1);
    assert_eq!(r.position(cid(1)).unwrap().position, 5);
    let d = r.set_status(&agent("ana"), AgentStatus::Online, 5).unwrap();
    assert_eq!(offers_in(&d), vec![(cid(3), agent("ana"))]);
    invariants(&r);
}

#[test]
fn a_restored_queue_keeps_its_order_across_a_new_router() {
    // The order one router gave: 1 (tier 0, arrived at 0), 2 (tier 1, at 90 s),
    // 3 put back at the head at 100 s, then 4 put back at the head at 110 s.
    // A new router whose clock starts at 0 at 120 s on the old one's restores
    // them in another order, from what a store keeps (arrival, head or not).
    let mut r = router();
    r.upsert_agent(agent("ana"), profile(&["en"], &["support"], 1), 0);
    let now = 5;
    r.restore_queued(cid(2), req("support", "en", 1), false, 30_000, &[], now)
        .unwrap();
    r.restore_queued(cid(1), req("support", "en", 0), false, 120_000, &[], now)
        .unwrap();
    r.restore_queued(cid(3), req("support", "en", 0), true, 20_000, &[], now)
        .unwrap();
    r.restore_queued(cid(4), req("support", "en", 0), true, 10_000, &[], now)
        .unwrap();
    // A new arrival (tier 0) waits behind all of them: 1 arrived 120 s ago,
    // 2 is worth 60 s more than its 30 s of waiting.
    r.enqueue(cid(5), req("support", "en", 0), now).unwrap();
    assert_eq!(queue_ids(&r), vec![cid(3), cid(4), cid(1), cid(2), cid(5)]);
    assert_eq!(
        r.restore_queued(cid(1), req("support", "en", 0), false, 0, &[], now),
        Err(RoutingError::AlreadyKnown)
    );
    invariants(&r);
}

#[test]
fn a_restored_conversation_keeps_the_cooldowns_still_running() {
    let mut r = router();
    add_online(&mut r, "ana", &["en"], &["support"], 1, 0);
    add_online(&mut r, "bo", &["en"], &["support"], 1, 0);
    // Ana declined it 25 s ago (5 s of a 30 s cooldown left); Bo's ran out.
    let d = r
        .restore_queued(
            cid(1),
            req("support", "en", 0),
            false,
            60_000,
            &[(agent("ana"), 5_000), (agent("bo"), 0)],
            100,
        )
        .unwrap();
    assert_eq!(offers_in(&d), vec![(cid(1), agent("bo"))]);
    r.decline(cid(1), &agent("bo"), 200).unwrap();
    invariants(&r);
    // Both in cooldown now: it waits until Ana's ends, then goes to her.
    assert_eq!(r.next_deadline(), Some(5_100));
    assert!(offers_in(&r.tick(5_099)).is_empty());
    assert_eq!(offers_in(&r.tick(5_100)), vec![(cid(1), agent("ana"))]);
    invariants(&r);
}

#[test]
fn requeue_of_an_owned_conversation_frees_the_owner_and_puts_it_first() {
    let mut r = router();
    add_online(&mut r, "ana", &["en"], &["support"], 1, 0);
    add_online(&mut r, "bo", &["en"], &["support"], 1, 0);
    assign(&mut r, cid(1), req("support", "en", 0), "ana", 1);
    assign(&mut r, cid(5), req("support", "en", 0), "bo", 2);
    r.enqueue(cid(2), req("support", "en", 3), 3).unwrap();
    // Ana's connection is gone; her grace period runs out.
    r.set_status(&agent("ana"), AgentStatus::Offline, 4)
        .unwrap();
    assert_eq!(owner(&r, cid(1)), Some(agent("ana")), "offline keeps owned");
    let d = r
        .requeue_at_head(cid(1), req("support", "en", 0), 5)
        .unwrap();
    assert_eq!(d, vec![Decision::QueueChanged]);
    assert_eq!(load(&r, "ana"), 0);
    assert_eq!(r.owned_by(&agent("ana")), vec![]);
    assert_eq!(r.position(cid(1)).unwrap().position, 1);
    assert_eq!(r.position(cid(2)).unwrap().position, 2);
    let d = r.release(cid(5), 6);
    assert_eq!(offers_in(&d), vec![(cid(1), agent("bo"))]);
    invariants(&r);
}

#[test]
fn remove_agent_puts_their_conversations_back_at_the_head() {
    let mut r = router();
    add_online(&mut r, "ana", &["en"], &["support"], 2, 0);
    add_online(&mut r, "bo", &["en"], &["support"], 1, 0);
    assign(&mut r, cid(1), req("support", "en", 0), "ana", 10);
    assign(&mut r, cid(7), req("support", "en", 0), "bo", 11);
    assign(&mut r, cid(2), req("support", "en", 0), "ana", 12);
    r.enqueue(cid(3), req("support", "en", 9), 13).unwrap();

    let d = r.remove_agent(&agent("ana"), 20);
    assert_eq!(d, vec![Decision::QueueChanged]);
    assert_eq!(r.agent(&agent("ana")), None);
    assert_eq!(queue_ids(&r), vec![cid(1), cid(2), cid(3)]);
    assert!(r.remove_agent(&agent("ana"), 21).is_empty(), "idempotent");
    let d = r.release(cid(7), 22);
    assert_eq!(offers_in(&d), vec![(cid(1), agent("bo"))]);
    invariants(&r);
}

#[test]
fn restore_owned_counts_against_load_even_above_capacity() {
    let mut r = router();
    add_online(&mut r, "ana", &["en"], &["support"], 1, 0);
    r.restore_owned(cid(1), &agent("ana"), req("support", "en", 0), 1)
        .unwrap();
    r.restore_owned(cid(2), &agent("ana"), req("support", "en", 0), 1)
        .unwrap();
    assert_eq!(load(&r, "ana"), 2);
    assert_eq!(r.owned_by(&agent("ana")), vec![cid(1), cid(2)]);
    assert_eq!(
        r.restore_owned(cid(1), &agent("ana"), req("support", "en", 0), 1),
        Err(RoutingError::AlreadyKnown)
    );
    assert_eq!(
        r.restore_owned(cid(3), &agent("zed"), req("support", "en", 0), 1),
        Err(RoutingError::UnknownAgent)
    );
    let d = r.enqueue(cid(4), req("support", "en", 0), 2).unwrap();
    assert!(offers_in(&d).is_empty());
    // One release still leaves her at capacity; the second frees a slot.
    assert!(offers_in(&r.release(cid(1), 3)).is_empty());
    assert_eq!(
        offers_in(&r.release(cid(2), 4)),
        vec![(cid(4), agent("ana"))]
    );
    invariants(&r);
}

#[test]
fn profile_changes_withdraw_offers_that_no_longer_fit() {
    let mut r = router();
    add_online(&mut r, "ana", &["en"], &["support"], 3, 0);
    r.enqueue(cid(1), req("support", "en", 0), 1).unwrap();
    r.enqueue(cid(2), req("support", "en", 0), 2).unwrap();
    r.enqueue(cid(3), req("support", "en", 0), 3).unwrap();
    assert_eq!(load(&r, "ana"), 3);
    // Capacity lowered to 1: the two newest offers go back.
    let d = r.upsert_agent(agent("ana"), profile(&["en"], &["support"], 1), 4);
    assert_eq!(
        d,
        vec![
            Decision::OfferWithdrawn {
                conversation: cid(3),
                agent: agent("ana"),
                reason: WithdrawReason::Cancelled
            },
            Decision::OfferWithdrawn {
                conversation: cid(2),
                agent: agent("ana"),
                reason: WithdrawReason::Cancelled
            },
            Decision::QueueChanged,
        ]
    );
    assert_eq!(status(&r, "ana"), AgentStatus::Online, "status kept");
    assert_eq!(load(&r, "ana"), 1);
    // Language dropped: the last offer goes too, to bo.
    add_online(&mut r, "bo", &["en"], &["support"], 3, 5);
    assert_eq!(load(&r, "bo"), 2);
    let d = r.upsert_agent(agent("ana"), profile(&["de"], &["support"], 1), 6);
    assert_eq!(
        d[0],
        Decision::OfferWithdrawn {
            conversation: cid(1),
            agent: agent("ana"),
            reason: WithdrawReason::Cancelled
        }
    );
    assert_eq!(offers_in(&d), vec![(cid(1), agent("bo"))]);
    invariants(&r);
}

#[test]
fn errors_leave_the_state_alone() {
    let mut r = router();
    add_online(&mut r, "ana", &["en"], &["support"], 1, 0);
    add_online(&mut r, "bo", &["en"], &["support"], 1, 0);
    r.enqueue(cid(1), req("support", "en", 0), 1).unwrap();
    let before = r.conversation(cid(1));
    assert_eq!(
        r.enqueue(cid(1), req("support", "en", 0), 2),
        Err(RoutingError::AlreadyKnown)
    );
    assert_eq!(
        r.accept(cid(1), &agent("bo"), 2),
        Err(RoutingError::NotOffered)
    );
    assert_eq!(
        r.decline(cid(1), &agent("bo"), 2),
        Err(RoutingError::NotOffered)
    );
    assert_eq!(
        r.accept(cid(9), &agent("ana"), 2),
        Err(RoutingError::UnknownConversation)
    );
    assert_eq!(
        r.set_status(&agent("zed"), AgentStatus::Online, 2),
        Err(RoutingError::UnknownAgent)
    );
    assert_eq!(r.conversation(cid(1)), before);
    r.accept(cid(1), &agent("ana"), 3).unwrap();
    assert_eq!(
        r.accept(cid(1), &agent("ana"), 4),
        Err(RoutingError::NotOffered),
        "an owned conversation without a transfer has no offer"
    );
    assert_eq!(load(&r, "ana"), 1);
    assert!(
        r.release(cid(1), 5).is_empty(),
        "nothing waits, nothing to say"
    );
    assert!(r.conversation(cid(1)).is_none());
    assert_eq!(load(&r, "ana"), 0);
    assert!(r.release(cid(1), 6).is_empty(), "release is idempotent");
    assert_eq!(load(&r, "ana"), 0);
    assert_eq!(
        RoutingError::NotOwner.to_string(),
        "agent does not own this conversation"
    );
    invariants(&r);
}

#[test]
fn release_of_a_queued_conversation_withdraws_its_offer() {
    let mut r = router();
    add_online(&mut r, "ana", &["en"], &["support"], 1, 0);
    r.enqueue(cid(1), req("support", "en", 0), 1).unwrap();
    r.enqueue(cid(2), req("support", "en", 0), 2).unwrap();
    let d = r.release(cid(1), 3);
    assert_eq!(
        d,
        vec![
            Decision::OfferWithdrawn {
                conversation: cid(1),
                agent: agent("ana"),
                reason: WithdrawReason::Cancelled
            },
            Decision::Offer {
                conversation: cid(2),
                agent: agent("ana"),
                expires_at: 20_003,
                transfer_from: None
            },
            Decision::QueueChanged,
        ]
    );
    invariants(&r);
}

#[test]
fn queue_for_lists_what_the_agent_could_serve() {
    let mut r = router();
    r.upsert_agent(agent("ana"), profile(&["en", "de"], &["support"], 1), 0);
    r.enqueue(cid(1), req("support", "en", 0), 1).unwrap();
    r.enqueue(cid(2), req("payments", "en", 0), 2).unwrap();
    r.enqueue(cid(3), req("support", "de", 0), 3).unwrap();
    r.enqueue(cid(4), req("support", "fr", 0), 4).unwrap();
    r.enqueue(cid(5), req("support", "en", 0), 5).unwrap();
    let (total, items) = r.queue_for(&agent("ana"), 2);
    assert_eq!(total, 3);
    let ids: Vec<_> = items.iter().map(|i| i.conversation).collect();
    assert_eq!(ids, vec![cid(1), cid(3)]);
    assert_eq!(items[0].since, 1);
    assert_eq!(items[0].request, req("support", "en", 0));
    assert_eq!(r.queue().len(), 5);
    assert_eq!(r.queue_for(&agent("zed"), 10), (0, vec![]));
    // Once online she is offered c1, which the listing shows.
    r.set_status(&agent("ana"), AgentStatus::Online, 6).unwrap();
    let (_, items) = r.queue_for(&agent("ana"), 1);
    assert_eq!(items[0].offered_to, Some(agent("ana")));
}

#[test]
fn queue_changed_only_when_a_listing_would_change() {
    let mut r = router();
    let d = r.upsert_agent(agent("ana"), profile(&["en"], &["support"], 1), 0);
    assert!(d.is_empty());
    assert!(r
        .set_status(&agent("ana"), AgentStatus::Online, 0)
        .unwrap()
        .is_empty());
    // A German player nobody serves: listing changes once, then an unrelated agent
    // coming online changes nothing a player or console sees.
    assert_eq!(
        r.enqueue(cid(1), req("support", "de", 0), 1).unwrap(),
        vec![Decision::QueueChanged]
    );
    let d = r.upsert_agent(agent("bo"), profile(&["en"], &["payments"], 1), 2);
    assert!(d.is_empty());
    let d = r.set_status(&agent("bo"), AgentStatus::Online, 2).unwrap();
    assert!(d.is_empty(), "{d:?}");
}

#[test]
fn next_deadline_is_never_in_the_past_after_a_tick() {
    let mut r = router();
    assert_eq!(r.next_deadline(), None);
    add_online(&mut r, "ana", &["en"], &["support"], 2, 0);
    r.enqueue(cid(1), req("support", "en", 0), 100).unwrap();
    assert_eq!(r.next_deadline(), Some(20_100));
    r.accept(cid(1), &agent("ana"), 200).unwrap();
    assert_eq!(r.next_deadline(), None);
    // Payments has someone online, busy: the transfer waits until its deadline.
    add_online(&mut r, "bo", &["en"], &["payments"], 1, 200);
    assign(&mut r, cid(2), req("payments", "en", 0), "bo", 200);
    assert_eq!(r.next_deadline(), None);
    r.transfer(
        cid(1),
        &agent("ana"),
        pitboss_protocol::TransferTarget::Department("payments".into()),
        300,
    )
    .unwrap();
    assert_eq!(r.next_deadline(), Some(120_300));
    r.tick(120_300);
    assert_eq!(r.next_deadline(), None);
    match r.conversation(cid(1)) {
        Some(ConversationView::Owned { transfer, .. }) => assert_eq!(transfer, None),
        other => panic!("{other:?}"),
    }
}

#[test]
fn an_offer_from_an_earlier_router_is_honoured_only_while_nobody_else_has_it() {
    let mut r = router();
    // A rebuilt router: the conversation waits, the agent is offline at first.
    r.upsert_agent(agent("ana"), profile(&["en"], &["support"], 1), 0);
    r.upsert_agent(agent("bo"), profile(&["en"], &["support"], 1), 0);
    r.enqueue(cid(1), req("support", "en", 0), 1).unwrap();
    assert_eq!(
        r.accept_earlier_offer(cid(1), &agent("ana"), 2),
        Err(RoutingError::NotOffered),
        "an offline agent cannot take it"
    );
    assert_eq!(
        r.accept_earlier_offer(cid(9), &agent("ana"), 2),
        Err(RoutingError::UnknownConversation)
    );
    // Once ana is online, the new router offers it to her: a plain accept works,
    // and so does the earlier offer... but not for bo, who was never offered it.
    let d = r.set_status(&agent("ana"), AgentStatus::Online, 3).unwrap();
    assert_eq!(offers_in(&d), vec![(cid(1), agent("ana"))]);
    r.set_status(&agent("bo"), AgentStatus::Online, 4).unwrap();
    assert_eq!(
        r.accept_earlier_offer(cid(1), &agent("bo"), 5),
        Err(RoutingError::NotOffered),
        "the new router offered it to someone: only that offer counts"
    );
    invariants(&r);

    // A second conversation, not yet offered by the new router (ana is full): bo
    // held the earlier offer and takes it; the queue moves on.
    r.enqueue(cid(2), req("support", "en", 0), 6).unwrap();
    assert_eq!(offered_to(&r, cid(2)), Some(agent("bo")));
    r.decline(cid(2), &agent("bo"), 7).unwrap();
    assert_eq!(offered_to(&r, cid(2)), None);
    assert_eq!(
        r.accept_earlier_offer(cid(2), &agent("bo"), 8),
        Err(RoutingError::NotOffered),
        "a cooldown after a decline still holds"
    );
    let d = r
        .accept_earlier_offer(cid(2), &agent("bo"), 40_000)
        .unwrap();
    assert!(
        d.contains(&Decision::Assigned {
            conversation: cid(2),
            agent: agent("bo"),
            previous: None
        }),
        "{d:?}"
    );
    assert_eq!(load(&r, "bo"), 1);
    invariants(&r);
}

#[test]
fn a_decline_of_an_earlier_routers_offer_keeps_the_agent_from_it_for_a_while() {
    let mut r = router();
    // A rebuilt router: the conversation waits; bo held the earlier router's offer
    // and the new one does not list him online yet.
    r.upsert_agent(agent("ana"), profile(&["en"], &["support"], 1), 0);
    r.upsert_agent(agent("bo"), profile(&["en"], &["support"], 1), 0);
    r.enqueue(cid(1), req("support", "en", 0), 1).unwrap();
    assert_eq!(
        r.decline_earlier_offer(cid(9), &agent("bo"), 2),
        Err(RoutingError::UnknownConversation)
    );
    let d = r.decline_earlier_offer(cid(1), &agent("bo"), 2).unwrap();
    assert!(
        d.contains(&Decision::OfferWithdrawn {
            conversation: cid(1),
            agent: agent("bo"),
            reason: WithdrawReason::Declined,
        }),
        "{d:?}"
    );
    // Online now, bo is not offered what he declined...
    let d = r.set_status(&agent("bo"), AgentStatus::Online, 3).unwrap();
    assert_eq!(offers_in(&d), vec![]);
    assert_eq!(offered_to(&r, cid(1)), None);
    // ...ana is, and once the new router has offered it, only its own offer counts.
    let d = r.set_status(&agent("ana"), AgentStatus::Online, 4).unwrap();
    assert_eq!(offers_in(&d), vec![(cid(1), agent("ana"))]);
    assert_eq!(
        r.decline_earlier_offer(cid(1), &agent("bo"), 5),
        Err(RoutingError::NotOffered)
    );
    assert_eq!(offered_to(&r, cid(1)), Some(agent("ana")));
    invariants(&r);
}
