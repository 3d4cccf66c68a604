//! Helpers shared by the routing test suites: short constructors for ids,
//! profiles and requests, and small readers over decisions and views.

// Each test binary uses a different subset of these helpers.
#![allow(dead_code)]

use pitboss_protocol::{AgentId, AgentStatus, ConversationId};
use pitboss_routing::{
    AgentProfile, ConversationView, Decision, Millis, Request, Router, RoutingConfig,
};

/// A deterministic conversation id: `cid(7)` is `00000000-0000-0000-0000-000000000007`.
pub(crate) fn cid(n: u128) -> ConversationId {
    format!("{n:032x}")
        .parse()
        .expect("32 hex digits are a uuid")
}

pub(crate) fn agent(name: &str) -> AgentId {
    AgentId(name.to_owned())
}

pub(crate) fn profile(languages: &[&str], departments: &[&str], capacity: u32) -> AgentProfile {
    AgentProfile {
        languages: languages.iter().map(|s| s.to_string()).collect(),
        departments: departments.iter().map(|s| s.to_string()).collect(),
        capacity,
    }
}

pub(crate) fn req(department: &str, language: &str, tier: u8) -> Request {
    Request {
        department: department.to_owned(),
        language: language.to_owned(),
        tier,
    }
}

pub(crate) fn router() -> Router {
    Router::new(RoutingConfig::default())
}

/// Adds an agent and brings them online at `now`; returns what that dispatched.
pub(crate) fn add_online(
    r: &mut Router,
    name: &str,
    languages: &[&str],
    departments: &[&str],
    capacity: u32,
    now: Millis,
) -> Vec<Decision> {
    let mut out = r.upsert_agent(agent(name), profile(languages, departments, capacity), now);
    out.extend(
        r.set_status(&agent(name), AgentStatus::Online, now)
            .expect("agent just added"),
    );
    invariants(r);
    out
}

pub(crate) fn invariants(r: &Router) {
    if let Err(e) = r.check_invariants() {
        panic!("invariant violated: {e}");
    }
}

/// The offers in a list of decisions, in order.
pub(crate) fn offers_in(decisions: &[Decision]) -> Vec<(ConversationId, AgentId)> {
    decisions
        .iter()
        .filter_map(|d| match d {
            Decision::Offer {
                conversation,
                agent,
                ..
            } => Some((*conversation, agent.clone())),
            _ => None,
        })
        .collect()
}

/// Who the conversation is offered to right now (queued or transfer offer).
pub(crate) fn offered_to(r: &Router, c: ConversationId) -> Option<AgentId> {
    match r.conversation(c)? {
        ConversationView::Queued { offer, .. } => offer.map(|(a, _)| a),
        ConversationView::Owned { transfer, .. } => transfer.and_then(|t| t.offer).map(|(a, _)| a),
    }
}

pub(crate) fn owner(r: &Router, c: ConversationId) -> Option<AgentId> {
    match r.conversation(c)? {
        ConversationView::Owned { agent, .. } => Some(agent),
        ConversationView::Queued { .. } => None,
    }
}

pub(crate) fn load(r: &Router, name: &str) -> u32 {
    r.agent(&agent(name)).expect("known agent").load
}

pub(crate) fn status(r: &Router, name: &str) -> AgentStatus {
    r.agent(&agent(name)).expect("known agent").status
}

/// Enqueues and has `name` accept it at once; panics if it was not offered to them.
pub(crate) fn assign(r: &mut Router, c: ConversationId, request: Request, name: &str, now: Millis) {
    let d = r.enqueue(c, request, now).expect("new conversation");
    assert!(
        offers_in(&d).contains(&(c, agent(name))),
        "{c} was not offered to {name}: {d:?}"
    );
    r.accept(c, &agent(name), now).expect("offered");
    invariants(r);
}

pub(crate) fn queue_ids(r: &Router) -> Vec<ConversationId> {
    r.queue().into_iter().map(|i| i.conversation).collect()
}
