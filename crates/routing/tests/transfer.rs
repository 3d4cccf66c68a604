//! Scenarios for transfers: to a named agent (accept, decline, expire, refusals)
//! and to a department (head of its line, owner skipped, decline, deadline), and
//! supervisor takeover of a conversation with a transfer pending.

mod common;

use common::*;
use pitboss_protocol::{AgentStatus, TransferTarget};
use pitboss_routing::{
    ConversationView, Decision, Router, RoutingError, TransferFailure, TransferView, WithdrawReason,
};

/// ana (en, support) owns c1; bo (en, payments) and cy (de, support) are online.
fn setup() -> Router {
    let mut r = router();
    add_online(&mut r, "ana", &["en"], &["support"], 2, 0);
    add_online(&mut r, "bo", &["en"], &["payments"], 2, 0);
    add_online(&mut r, "cy", &["de"], &["support"], 2, 0);
    assign(&mut r, cid(1), req("support", "en", 0), "ana", 10);
    r
}

fn to_agent(name: &str) -> TransferTarget {
    TransferTarget::Agent(agent(name))
}

fn transfer_of(r: &Router, c: pitboss_protocol::ConversationId) -> Option<TransferView> {
    match r.conversation(c) {
        Some(ConversationView::Owned { transfer, .. }) => transfer,
        other => panic!("not owned: {other:?}"),
    }
}

#[test]
fn transfer_to_an_agent_offers_at_once_and_completes_on_accept() {
    let mut r = setup();
    // Bo is in payments, not support: a named agent only needs the language.
    let d = r
        .transfer(cid(1), &agent("ana"), to_agent("bo"), 100)
        .unwrap();
    assert_eq!(
        d,
        vec![Decision::Offer {
            conversation: cid(1),
            agent: agent("bo"),
            expires_at: 20_100,
            transfer_from: Some(agent("ana")),
        }]
    );
    assert_eq!(load(&r, "bo"), 1, "the transfer offer reserves a slot");
    assert_eq!(
        transfer_of(&r, cid(1)),
        Some(TransferView {
            target: to_agent("bo"),
            offer: Some((agent("bo"), 20_100)),
            deadline: 20_100,
        })
    );
    assert_eq!(
        owner(&r, cid(1)),
        Some(agent("ana")),
        "owner keeps it meanwhile"
    );
    invariants(&r);

    let d = r.accept(cid(1), &agent("bo"), 200).unwrap();
    assert_eq!(
        d,
        vec![Decision::Assigned {
            conversation: cid(1),
            agent: agent("bo"),
            previous: Some(agent("ana")),
        }]
    );
    assert_eq!(load(&r, "ana"), 0);
    assert_eq!(load(&r, "bo"), 1);
    assert_eq!(r.owned_by(&agent("bo")), vec![cid(1)]);
    match r.conversation(cid(1)) {
        Some(ConversationView::Owned {
            agent: a,
            since,
            transfer,
            request,
        }) => {
            assert_eq!((a, since, transfer), (agent("bo"), 200, None));
            assert_eq!(
                request.department, "support",
                "a named transfer keeps the department"
            );
        }
        other => panic!("{other:?}"),
    }
    invariants(&r);
}

#[test]
fn a_declined_transfer_to_an_agent_fails_and_the_owner_keeps_it() {
    let mut r = setup();
    r.transfer(cid(1), &agent("ana"), to_agent("bo"), 100)
        .unwrap();
    let d = r.decline(cid(1), &agent("bo"), 150).unwrap();
    assert_eq!(
        d,
        vec![
            Decision::OfferWithdrawn {
                conversation: cid(1),
                agent: agent("bo"),
                reason: WithdrawReason::Declined
            },
            Decision::TransferFailed {
                conversation: cid(1),
                owner: agent("ana"),
                reason: TransferFailure::Declined
            },
        ]
    );
    assert_eq!(owner(&r, cid(1)), Some(agent("ana")));
    assert_eq!(transfer_of(&r, cid(1)), None);
    assert_eq!(load(&r, "bo"), 0);
    assert_eq!(load(&r, "ana"), 1);
    // The owner may ask again, even the same agent: an explicit request.
    r.transfer(cid(1), &agent("ana"), to_agent("bo"), 160)
        .unwrap();
    assert_eq!(offered_to(&r, cid(1)), Some(agent("bo")));
    invariants(&r);
}

#[test]
fn an_unanswered_transfer_to_an_agent_expires_and_sets_them_away() {
    let mut r = setup();
    r.transfer(cid(1), &agent("ana"), to_agent("bo"), 100)
        .unwrap();
    assert_eq!(r.next_deadline(), Some(20_100));
    assert!(r.tick(20_099).is_empty());
    let d = r.tick(20_100);
    assert_eq!(
        d,
        vec![
            Decision::OfferWithdrawn {
                conversation: cid(1),
                agent: agent("bo"),
                reason: WithdrawReason::Expired
            },
            Decision::TransferFailed {
                conversation: cid(1),
                owner: agent("ana"),
                reason: TransferFailure::Expired
            },
            Decision::AgentAway { agent: agent("bo") },
        ]
    );
    assert_eq!(status(&r, "bo"), AgentStatus::Away);
    assert_eq!(owner(&r, cid(1)), Some(agent("ana")));
    invariants(&r);
}

#[test]
fn a_transfer_target_going_away_fails_the_transfer() {
    let mut r = setup();
    r.transfer(cid(1), &agent("ana"), to_agent("bo"), 100)
        .unwrap();
    let d = r.set_status(&agent("bo"), AgentStatus::Away, 110).unwrap();
    assert_eq!(
        d,
        vec![
            Decision::OfferWithdrawn {
                conversation: cid(1),
                agent: agent("bo"),
                reason: WithdrawReason::Cancelled
            },
            Decision::TransferFailed {
                conversation: cid(1),
                owner: agent("ana"),
                reason: TransferFailure::Cancelled
            },
        ]
    );
    invariants(&r);
}

#[test]
fn transfer_refusals() {
    let mut r = setup();
    add_online(&mut r, "dee", &["en"], &["support"], 1, 0);
    r.upsert_agent(agent("eve"), profile(&["en"], &["support"], 2), 0); // offline
                                                                        // Fill dee up.
    let d = r.enqueue(cid(2), req("support", "en", 0), 20).unwrap();
    assert_eq!(offers_in(&d), vec![(cid(2), agent("dee"))]);

    let t = |r: &mut Router, to: TransferTarget| r.transfer(cid(1), &agent("ana"), to, 30);
    assert_eq!(
        t(&mut r, to_agent("cy")),
        Err(RoutingError::TargetUnavailable),
        "no English"
    );
    assert_eq!(
        t(&mut r, to_agent("ana")),
        Err(RoutingError::TargetUnavailable),
        "the owner"
    );
    assert_eq!(
        t(&mut r, to_agent("zed")),
        Err(RoutingError::TargetUnavailable),
        "unknown"
    );
    assert_eq!(
        t(&mut r, to_agent("eve")),
        Err(RoutingError::TargetUnavailable),
        "offline"
    );
    assert_eq!(
        t(&mut r, to_agent("dee")),
        Err(RoutingError::TargetUnavailable),
        "full"
    );
    assert_eq!(
        r.transfer(cid(1), &agent("bo"), to_agent("dee"), 30),
        Err(RoutingError::NotOwner)
    );
    assert_eq!(
        r.transfer(cid(2), &agent("dee"), to_agent("bo"), 30),
        Err(RoutingError::NotOwner),
        "a queued conversation has no owner"
    );
    assert_eq!(
        r.transfer(cid(9), &agent("ana"), to_agent("bo"), 30),
        Err(RoutingError::UnknownConversation)
    );
    assert_eq!(transfer_of(&r, cid(1)), None, "refusals change nothing");
    r.transfer(cid(1), &agent("ana"), to_agent("bo"), 30)
        .unwrap();
    assert_eq!(
        t(&mut r, TransferTarget::Department("payments".into())),
        Err(RoutingError::InvalidState),
        "one transfer at a time"
    );
    invariants(&r);
}

#[test]
fn a_department_transfer_waits_at_the_head_of_that_department() {
    let mut r = router();
    add_online(&mut r, "ana", &["en"], &["support"], 1, 0);
    add_online(&mut r, "bo", &["en"], &["payments"], 1, 0);
    assign(&mut r, cid(1), req("support", "en", 0), "ana", 1);
    assign(&mut r, cid(10), req("payments", "en", 0), "bo", 2);
    r.enqueue(cid(11), req("payments", "en", 5), 3).unwrap();
    r.enqueue(cid(12), req("payments", "en", 0), 4).unwrap();

    let d = r
        .transfer(
            cid(1),
            &agent("ana"),
            TransferTarget::Department("payments".into()),
            1_000,
        )
        .unwrap();
    assert_eq!(
        d,
        vec![Decision::QueueChanged],
        "payments players moved back one place"
    );
    assert_eq!(r.position(cid(11)).unwrap().position, 2);
    assert_eq!(r.position(cid(12)).unwrap().position, 3);
    assert_eq!(r.position(cid(1)), None, "owned, not queued");
    assert_eq!(
        queue_ids(&r),
        vec![cid(11), cid(12)],
        "the queue lists players only"
    );
    assert_eq!(
        transfer_of(&r, cid(1)),
        Some(TransferView {
            target: TransferTarget::Department("payments".into()),
            offer: None,
            deadline: 121_000,
        })
    );

    // Bo's slot frees: the transfer goes first, ahead of even the VIP.
    let d = r.release(cid(10), 2_000);
    assert_eq!(
        d[0],
        Decision::Offer {
            conversation: cid(1),
            agent: agent("bo"),
            expires_at: 22_000,
            transfer_from: Some(agent("ana")),
        }
    );
    let d = r.accept(cid(1), &agent("bo"), 2_100).unwrap();
    assert_eq!(
        d,
        vec![
            Decision::Assigned {
                conversation: cid(1),
                agent: agent("bo"),
                previous: Some(agent("ana")),
            },
            Decision::QueueChanged,
        ]
    );
    match r.conversation(cid(1)) {
        Some(ConversationView::Owned {
            request, agent: a, ..
        }) => {
            assert_eq!(request.department, "payments");
            assert_eq!(a, agent("bo"));
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(load(&r, "ana"), 0);
    assert_eq!(r.position(cid(11)).unwrap().position, 1);
    invariants(&r);
}

#[test]
fn a_department_transfer_is_never_offered_to_the_owner() {
    let mut r = router();
    add_online(&mut r, "ana", &["en"], &["support"], 3, 0);
    assign(&mut r, cid(1), req("support", "en", 0), "ana", 1);
    // Nobody but the owner online in the department: refused at once.
    let to_support = || TransferTarget::Department("support".into());
    assert_eq!(
        r.transfer(cid(1), &agent("ana"), to_support(), 2),
        Err(RoutingError::DepartmentUnstaffed)
    );
    // Nor does someone online with no capacity at all (a watching supervisor).
    add_online(&mut r, "zed", &["en"], &["support"], 0, 2);
    assert_eq!(
        r.transfer(cid(1), &agent("ana"), to_support(), 2),
        Err(RoutingError::DepartmentUnstaffed)
    );
    // Someone online there but full: the transfer waits for a place.
    add_online(&mut r, "cy", &["en"], &["support"], 1, 2);
    assign(&mut r, cid(2), req("support", "en", 0), "cy", 2);
    let d = r.transfer(cid(1), &agent("ana"), to_support(), 2).unwrap();
    assert!(
        offers_in(&d).is_empty(),
        "ana has room but is the owner: {d:?}"
    );
    let d = add_online(&mut r, "bo", &["en"], &["support"], 1, 3);
    assert_eq!(offers_in(&d), vec![(cid(1), agent("bo"))]);
    invariants(&r);
}

#[test]
fn a_declined_department_transfer_moves_to_the_next_agent() {
    let mut r = router();
    add_online(&mut r, "ana", &["en"], &["support"], 1, 0);
    add_online(&mut r, "bo", &["en"], &["payments"], 1, 0);
    add_online(&mut r, "pat", &["en"], &["payments"], 1, 0);
    assign(&mut r, cid(1), req("support", "en", 0), "ana", 1);
    let d = r
        .transfer(
            cid(1),
            &agent("ana"),
            TransferTarget::Department("payments".into()),
            2,
        )
        .unwrap();
    assert_eq!(offers_in(&d), vec![(cid(1), agent("bo"))]);
    let d = r.decline(cid(1), &agent("bo"), 3).unwrap();
    assert_eq!(
        d,
        vec![
            Decision::OfferWithdrawn {
                conversation: cid(1),
                agent: agent("bo"),
                reason: WithdrawReason::Declined
            },
            Decision::Offer {
                conversation: cid(1),
                agent: agent("pat"),
                expires_at: 20_003,
                transfer_from: Some(agent("ana")),
            },
        ]
    );
    // Pat lets it expire: pat goes away, bo is in cooldown, so it waits.
    let d = r.tick(20_003);
    assert_eq!(
        d,
        vec![
            Decision::OfferWithdrawn {
                conversation: cid(1),
                agent: agent("pat"),
                reason: WithdrawReason::Expired
            },
            Decision::AgentAway {
                agent: agent("pat")
            },
        ]
    );
    assert!(transfer_of(&r, cid(1)).is_some(), "still pending");
    // Bo's cooldown ends at 30 003: offered again.
    assert_eq!(r.next_deadline(), Some(30_003));
    assert_eq!(offers_in(&r.tick(30_003)), vec![(cid(1), agent("bo"))]);
    invariants(&r);
}

#[test]
fn a_department_transfer_nobody_accepts_fails_at_its_deadline() {
    let mut r = router();
    add_online(&mut r, "ana", &["en"], &["support"], 1, 0);
    add_online(&mut r, "bo", &["en"], &["payments"], 1, 0);
    assign(&mut r, cid(1), req("support", "en", 0), "ana", 1);
    // Risk's one agent is online but busy for as long as the transfer waits.
    add_online(&mut r, "rita", &["en"], &["risk"], 1, 0);
    assign(&mut r, cid(2), req("risk", "en", 0), "rita", 1);
    r.transfer(
        cid(1),
        &agent("ana"),
        TransferTarget::Department("risk".into()),
        1_000,
    )
    .unwrap();
    assert_eq!(r.next_deadline(), Some(121_000));
    assert!(r.tick(120_999).is_empty());
    assert_eq!(
        r.tick(121_000),
        vec![Decision::TransferFailed {
            conversation: cid(1),
            owner: agent("ana"),
            reason: TransferFailure::Expired
        }]
    );
    assert_eq!(transfer_of(&r, cid(1)), None);
    assert_eq!(r.next_deadline(), None);
    // The owner can try again.
    let d = r
        .transfer(
            cid(1),
            &agent("ana"),
            TransferTarget::Department("payments".into()),
            121_001,
        )
        .unwrap();
    assert_eq!(offers_in(&d), vec![(cid(1), agent("bo"))]);
    invariants(&r);
}

#[test]
fn a_department_transfer_past_its_deadline_withdraws_its_open_offer() {
    let mut r = router();
    add_online(&mut r, "ana", &["en"], &["support"], 1, 0);
    assign(&mut r, cid(1), req("support", "en", 0), "ana", 1);
    // Payments' one agent online is busy throughout.
    add_online(&mut r, "pat", &["en"], &["payments"], 1, 0);
    assign(&mut r, cid(2), req("payments", "en", 0), "pat", 0);
    r.transfer(
        cid(1),
        &agent("ana"),
        TransferTarget::Department("payments".into()),
        0,
    )
    .unwrap();
    // Bo comes online 110 s later; his offer would outlive the deadline.
    add_online(&mut r, "bo", &["en"], &["payments"], 1, 110_000);
    assert_eq!(offered_to(&r, cid(1)), Some(agent("bo")));
    let d = r.tick(120_000);
    assert_eq!(
        d,
        vec![
            Decision::OfferWithdrawn {
                conversation: cid(1),
                agent: agent("bo"),
                reason: WithdrawReason::Cancelled
            },
            Decision::TransferFailed {
                conversation: cid(1),
                owner: agent("ana"),
                reason: TransferFailure::Expired
            },
        ]
    );
    assert_eq!(status(&r, "bo"), AgentStatus::Online, "not bo's fault");
    invariants(&r);
}

#[test]
fn takeover_cancels_a_pending_transfer() {
    let mut r = setup();
    add_online(&mut r, "sup", &["en"], &[], 0, 0);
    r.transfer(cid(1), &agent("ana"), to_agent("bo"), 100)
        .unwrap();
    let d = r.take_over(cid(1), &agent("sup"), 200).unwrap();
    assert_eq!(
        d,
        vec![
            Decision::OfferWithdrawn {
                conversation: cid(1),
                agent: agent("bo"),
                reason: WithdrawReason::Cancelled
            },
            Decision::TransferFailed {
                conversation: cid(1),
                owner: agent("ana"),
                reason: TransferFailure::Cancelled
            },
            Decision::Assigned {
                conversation: cid(1),
                agent: agent("sup"),
                previous: Some(agent("ana")),
            },
        ]
    );
    assert_eq!(
        (load(&r, "ana"), load(&r, "bo"), load(&r, "sup")),
        (0, 0, 1)
    );
    assert_eq!(owner(&r, cid(1)), Some(agent("sup")));
    // Taking over one's own conversation changes nothing more.
    assert!(r.take_over(cid(1), &agent("sup"), 300).unwrap().is_empty());
    invariants(&r);
}

#[test]
fn closing_a_conversation_cancels_its_transfer_without_failure() {
    let mut r = setup();
    r.transfer(cid(1), &agent("ana"), to_agent("bo"), 100)
        .unwrap();
    let d = r.release(cid(1), 200);
    assert_eq!(
        d,
        vec![Decision::OfferWithdrawn {
            conversation: cid(1),
            agent: agent("bo"),
            reason: WithdrawReason::Cancelled
        }]
    );
    assert_eq!((load(&r, "ana"), load(&r, "bo")), (0, 0));
    invariants(&r);
}

#[test]
fn a_restored_department_transfer_keeps_what_was_left_of_its_deadline() {
    let mut r = router();
    add_online(&mut r, "ana", &["en"], &["support"], 1, 0);
    add_online(&mut r, "bo", &["en"], &["payments"], 1, 0);
    assign(&mut r, cid(1), req("support", "en", 0), "ana", 1);
    assign(&mut r, cid(10), req("payments", "en", 0), "bo", 2);

    r.restore_department_transfer(cid(1), &agent("ana"), "payments".into(), 30_000, 1_000)
        .unwrap();
    assert_eq!(
        transfer_of(&r, cid(1)),
        Some(TransferView {
            target: TransferTarget::Department("payments".into()),
            offer: None,
            deadline: 31_000,
        }),
        "30 s left, not the whole timeout again"
    );
    assert_eq!(
        r.restore_department_transfer(cid(1), &agent("ana"), "payments".into(), 30_000, 1_000),
        Err(RoutingError::InvalidState),
        "one transfer at a time"
    );
    assert!(
        r.tick(30_999).is_empty(),
        "still waiting before its deadline"
    );
    let d = r.tick(31_000);
    assert!(
        d.contains(&Decision::TransferFailed {
            conversation: cid(1),
            owner: agent("ana"),
            reason: TransferFailure::Expired,
        }),
        "{d:?}"
    );
    assert_eq!(owner(&r, cid(1)), Some(agent("ana")), "the owner keeps it");

    // Never more than the configured timeout, whatever was recorded.
    r.restore_department_transfer(
        cid(1),
        &agent("ana"),
        "payments".into(),
        999_999_999,
        40_000,
    )
    .unwrap();
    assert_eq!(transfer_of(&r, cid(1)).map(|t| t.deadline), Some(160_000));
    invariants(&r);
}
