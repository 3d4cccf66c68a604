//! The line indexed by department and language, and the listing compared before and
//! after each operation. Owns the per-line index only; the router keeps it in step
//! with the conversations (`Router::join_line`, `leave_line`, `sync_offered`), and
//! `Router::check_invariants` holds it to them.
//!
//! Positions, estimates and the listing are all per line, so walking one line's
//! index (a map of small copied entries) replaces walking the whole line and looking
//! up each conversation.

use super::{open_offer, QueueKey, Router, State};
use crate::estimate::{estimate, Mean};
use crate::{Position, QueueItem};
use pitboss_protocol::{AgentId, ConversationId};
use std::collections::BTreeMap;

/// One place in a line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Member {
    pub(super) id: ConversationId,
    /// Queued (listed, with a position); false for a department-transfer waiter,
    /// which only counts towards the positions behind it.
    pub(super) queued: bool,
    /// Has an open offer (which holds its agent's slot, so it is not counted by
    /// the estimates behind it).
    pub(super) offered: bool,
}

/// One line's members in priority order.
pub(super) type Members = BTreeMap<QueueKey, Member>;

/// One department and language's line.
#[derive(Debug, Clone, Default)]
pub(super) struct Line {
    pub(super) members: Members,
    /// How many members have no open offer.
    pub(super) unoffered: usize,
}

impl Line {
    /// The member at `key`'s position (1-based) and its place counting only
    /// members without an offer (itself included if it has none). Walks from
    /// both ends at once, so a place near either end (an arrival at the back, the
    /// next to be served at the front) is found in a few steps.
    pub(super) fn rank(&self, key: &QueueKey) -> Option<(usize, usize)> {
        let (mut front, mut back) = (self.members.iter(), self.members.iter().rev());
        let (mut ahead, mut unoffered_ahead) = (0, 0);
        let (mut behind, mut unoffered_behind) = (0, 0);
        loop {
            let (k, m) = front.next()?;
            ahead += 1;
            unoffered_ahead += usize::from(!m.offered);
            if k == key {
                return Some((ahead, unoffered_ahead));
            }
            let (k, m) = back.next()?;
            if k == key {
                return Some((
                    self.members.len() - behind,
                    self.unoffered - unoffered_behind,
                ));
            }
            behind += 1;
            unoffered_behind += usize::from(!m.offered);
        }
    }
}

/// Department → language → that line. Lines without members are removed, so its
/// size follows the conversations waiting.
#[derive(Debug, Clone, Default)]
pub(super) struct Lines(BTreeMap<String, BTreeMap<String, Line>>);

impl Lines {
    pub(super) fn insert(&mut self, department: &str, language: &str, key: QueueKey, m: Member) {
        let line = self
            .0
            .entry(department.to_owned())
            .or_default()
            .entry(language.to_owned())
            .or_default();
        line.unoffered += usize::from(!m.offered);
        if let Some(old) = line.members.insert(key, m) {
            line.unoffered -= usize::from(!old.offered);
        }
    }

    /// Removes the member at `key`, whichever line it is in.
    pub(super) fn remove(&mut self, key: &QueueKey) -> Option<Member> {
        let mut found = None;
        for (department, languages) in &mut self.0 {
            for (language, line) in languages.iter_mut() {
                if let Some(m) = line.members.remove(key) {
                    line.unoffered -= usize::from(!m.offered);
                    found = Some((department.clone(), language.clone(), m));
                    break;
                }
            }
            if found.is_some() {
                break;
            }
        }
        let (department, language, m) = found?;
        if let Some(languages) = self.0.get_mut(&department) {
            if languages
                .get(&language)
                .is_some_and(|l| l.members.is_empty())
            {
                languages.remove(&language);
            }
            if languages.is_empty() {
                self.0.remove(&department);
            }
        }
        Some(m)
    }

    /// Marks the member at `key`, whichever line it is in, as offered or not.
    pub(super) fn set_offered(&mut self, key: &QueueKey, offered: bool) {
        let line = self
            .0
            .values_mut()
            .flat_map(BTreeMap::values_mut)
            .find(|line| line.members.contains_key(key));
        if let Some(line) = line {
            if let Some(m) = line.members.get_mut(key) {
                if m.offered != offered {
                    m.offered = offered;
                    if offered {
                        line.unoffered -= 1;
                    } else {
                        line.unoffered += 1;
                    }
                }
            }
        }
    }

    pub(super) fn line(&self, department: &str, language: &str) -> Option<&Line> {
        self.0.get(department)?.get(language)
    }

    /// Every line: (department, language, members).
    pub(super) fn iter(&self) -> impl Iterator<Item = (&str, &str, &Line)> + '_ {
        self.0.iter().flat_map(|(department, languages)| {
            languages
                .iter()
                .map(move |(language, line)| (department.as_str(), language.as_str(), line))
        })
    }

    pub(super) fn len(&self) -> usize {
        self.iter().map(|(_, _, line)| line.members.len()).sum()
    }
}

/// What one queued conversation's listing entry depends on.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Shown {
    key: QueueKey,
    id: ConversationId,
    position: u32,
    /// Its place counting only the members without an offer; None when it has one.
    unoffered: Option<u32>,
    offered_to: Option<AgentId>,
}

/// One line's part of the listing, with what its estimates are computed from.
#[derive(Debug, Clone, PartialEq, Eq)]
struct LineListing {
    department: String,
    language: String,
    /// Whether any online agent serves the line.
    online: bool,
    capacity: u64,
    free: u64,
    mean: Option<Mean>,
    shown: Vec<Shown>,
}

impl LineListing {
    fn estimate(&self, s: &Shown) -> Option<u64> {
        match s.unoffered {
            None => Some(0),
            Some(p) => estimate(p, self.capacity, self.free, self.mean),
        }
    }
}

/// One conversation as a listing shows it: position, estimate, whether agents
/// are online for it, offered agent.
type Entry<'a> = (ConversationId, u32, Option<u64>, bool, Option<&'a AgentId>);

/// Everything a queue listing shows (each queued conversation in priority order
/// with its position, estimate and offered agent), kept as the inputs of the
/// estimates so that two can be compared without computing every estimate.
#[derive(Debug, Clone, Default)]
pub(crate) struct Listing(Vec<LineListing>);

impl Listing {
    /// Whether the two listings show anything different.
    pub(crate) fn differs(&self, other: &Listing) -> bool {
        let empty = |l: &&LineListing| !l.shown.is_empty();
        let mut mine = self.0.iter().filter(empty);
        let mut theirs = other.0.iter().filter(empty);
        let mut moved = false;
        loop {
            let (a, b) = match (mine.next(), theirs.next()) {
                (None, None) => break,
                (Some(a), Some(b)) => (a, b),
                _ => return self.shown() != other.shown() || self.flat() != other.flat(),
            };
            if (&a.department, &a.language) != (&b.department, &b.language)
                || a.shown.len() != b.shown.len()
            {
                // A line gained or lost someone, or a conversation changed lines:
                // what the listing shows is compared as a whole.
                return self.shown() != other.shown() || self.flat() != other.flat();
            }
            if a.online != b.online {
                // Its waiting players are told whether anyone online serves them.
                return true;
            }
            let same_inputs = (a.capacity, a.free, a.mean) == (b.capacity, b.free, b.mean);
            // From the back: a changed estimate is likeliest far down the line.
            for (x, y) in a.shown.iter().zip(&b.shown).rev() {
                if (x.id, x.position, &x.offered_to, x.unoffered.is_some())
                    != (y.id, y.position, &y.offered_to, y.unoffered.is_some())
                {
                    return true;
                }
                if !(same_inputs && x.unoffered == y.unoffered) && a.estimate(x) != b.estimate(y) {
                    return true;
                }
                moved |= x.key != y.key;
            }
        }
        // Every line shows the same; only the order across lines is left, and it
        // can only differ if some conversation got a new place.
        moved && self.order() != other.order()
    }

    fn shown(&self) -> usize {
        self.0.iter().map(|l| l.shown.len()).sum()
    }

    /// The listing itself: each queued conversation in priority order with its
    /// position, estimate and offered agent.
    fn flat(&self) -> Vec<Entry<'_>> {
        let mut all: Vec<(QueueKey, Entry<'_>)> = self
            .0
            .iter()
            .flat_map(|l| {
                l.shown.iter().map(move |s| {
                    let entry = (
                        s.id,
                        s.position,
                        l.estimate(s),
                        l.online,
                        s.offered_to.as_ref(),
                    );
                    (s.key, entry)
                })
            })
            .collect();
        all.sort_unstable_by_key(|(key, _)| *key);
        all.into_iter().map(|(_, entry)| entry).collect()
    }

    /// Every queued conversation's position and estimate, in priority order.
    pub(crate) fn positions(&self) -> Vec<(ConversationId, Position)> {
        self.flat()
            .into_iter()
            .map(|(id, position, estimated_wait_ms, agents_online, _)| {
                (
                    id,
                    Position {
                        position,
                        estimated_wait_ms,
                        agents_online,
                    },
                )
            })
            .collect()
    }

    fn order(&self) -> Vec<ConversationId> {
        let mut all: Vec<(QueueKey, ConversationId)> = self
            .0
            .iter()
            .flat_map(|l| l.shown.iter().map(|s| (s.key, s.id)))
            .collect();
        all.sort_unstable();
        all.into_iter().map(|(_, id)| id).collect()
    }
}

impl Router {
    /// The listing as it stands: O(waiting) over the per-line index, looking up
    /// only conversations with an open offer.
    pub(crate) fn listing(&self) -> Listing {
        Listing(
            self.lines
                .iter()
                .map(|(department, language, line)| {
                    let (online, capacity, free) = self.slots_for(department, language);
                    let (mut position, mut unoffered) = (0u32, 0u32);
                    let mut shown = Vec::new();
                    for (key, m) in &line.members {
                        position += 1;
                        if !m.offered {
                            unoffered += 1;
                        }
                        if !m.queued {
                            continue;
                        }
                        let offered_to = if m.offered {
                            self.conversations
                                .get(&m.id)
                                .and_then(|c| open_offer(&c.state))
                                .map(|o| o.agent.clone())
                        } else {
                            None
                        };
                        shown.push(Shown {
                            key: *key,
                            id: m.id,
                            position,
                            unoffered: (!m.offered).then_some(unoffered),
                            offered_to,
                        });
                    }
                    LineListing {
                        department: department.to_owned(),
                        language: language.to_owned(),
                        online,
                        capacity,
                        free,
                        mean: self.handle_times.mean(department),
                        shown,
                    }
                })
                .collect(),
        )
    }

    /// The queued conversations of the lines an agent serves, in priority order:
    /// the count, and the first `limit`.
    pub(super) fn served_queue(
        &self,
        languages: &[String],
        departments: &[String],
        limit: usize,
    ) -> (usize, Vec<QueueItem>) {
        let mut total = 0;
        let mut first: Vec<(QueueKey, ConversationId)> = Vec::new();
        for (department, language, line) in self.lines.iter() {
            if !departments.iter().any(|d| d == department)
                || !languages.iter().any(|l| l == language)
            {
                continue;
            }
            let mut taken = 0;
            for (key, m) in &line.members {
                if !m.queued {
                    continue;
                }
                total += 1;
                if taken < limit {
                    first.push((*key, m.id));
                    taken += 1;
                }
            }
        }
        first.sort_unstable();
        first.truncate(limit);
        let items = first
            .into_iter()
            .filter_map(|(_, id)| self.queue_item(id))
            .collect();
        (total, items)
    }

    /// The listing entry of a queued conversation.
    pub(super) fn queue_item(&self, id: ConversationId) -> Option<QueueItem> {
        let c = self.conversations.get(&id)?;
        match &c.state {
            State::Queued { since, offer, .. } => Some(QueueItem {
                conversation: id,
                request: c.request.clone(),
                since: *since,
                offered_to: offer.as_ref().map(|o| o.agent.clone()),
            }),
            State::Owned { .. } => None,
        }
    }
}
