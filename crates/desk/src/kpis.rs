//! The figures a support team is judged on — waiting time, first response,
//! resolution time and satisfaction — for a set of conversations, from the rows
//! the store reads for them ([`pitboss_transcripts::Store::kpi_rows`]). Pure:
//! the window and who may see it are the caller's.
//!
//! Every time is measured from the moment the player started the chat, over live
//! chats only (an offline message waits for whoever comes online, which says
//! nothing about the queue):
//! * waiting time: to its first assignment (an agent accepted it);
//! * first response: to the first text an agent or a supervisor wrote in it;
//! * resolution time: to its close, for the conversations an agent served.

use pitboss_protocol::ConversationState;
use pitboss_transcripts::KpiRow;
use serde::Serialize;

/// The key figures of a set of conversations.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Kpis {
    /// How many, by what became of them.
    pub conversations: Counts,
    /// Start to first assignment, over the live chats assigned.
    pub wait_ms: Spread,
    /// Start to the first text of an agent, over the live chats answered.
    pub first_response_ms: Spread,
    /// Start to close, over the live chats closed after an agent served them.
    pub resolution_ms: Spread,
    /// The players' ratings.
    pub satisfaction: Satisfaction,
}

/// Conversations counted by what became of them; one may count in several.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Counts {
    /// All of them.
    pub started: u64,
    /// Those an agent was assigned.
    pub assigned: u64,
    /// Those an agent wrote a text in.
    pub answered: u64,
    /// Those closed.
    pub closed: u64,
    /// Closed before any agent was assigned, not being offline messages: the
    /// player gave up waiting, or was marked abandoned.
    pub abandoned: u64,
    /// Those started as offline messages (no agent was online).
    pub offline: u64,
    /// Those not closed yet.
    pub open: u64,
}

/// How a duration is spread over the conversations it applies to: nearest-rank
/// percentiles, `null` when it applies to none.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Spread {
    /// Conversations it applies to.
    pub count: u64,
    /// Mean, ms (rounded down).
    pub mean: Option<u64>,
    /// Median, ms.
    pub p50: Option<u64>,
    /// 90th percentile, ms.
    pub p90: Option<u64>,
    /// Longest, ms.
    pub max: Option<u64>,
}

impl Spread {
    /// The spread of `values` (in any order).
    fn of(mut values: Vec<u64>) -> Spread {
        values.sort_unstable();
        let count = values.len() as u64;
        let rank = |p: u64| -> Option<u64> {
            // Nearest rank: the smallest value with at least p % at or below it.
            let index = (p * count).div_ceil(100).max(1) - 1;
            values.get(usize::try_from(index).ok()?).copied()
        };
        Spread {
            count,
            mean: (count > 0).then(|| values.iter().sum::<u64>() / count),
            p50: rank(50),
            p90: rank(90),
            max: values.last().copied(),
        }
    }
}

/// The players' ratings.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Satisfaction {
    /// Conversations rated.
    pub rated: u64,
    /// Mean score, 1–5; `null` when none was rated.
    pub mean: Option<f64>,
    /// How many gave 1, 2, 3, 4 and 5.
    pub scores: [u64; 5],
}

/// The key figures of `rows`.
pub fn kpis(rows: &[KpiRow]) -> Kpis {
    let mut counts = Counts::default();
    let (mut wait, mut first_response, mut resolution) = (Vec::new(), Vec::new(), Vec::new());
    let mut satisfaction = Satisfaction::default();
    let mut score_sum = 0u64;
    for row in rows {
        let since_start = |at: u64| at.saturating_sub(row.created_at);
        counts.started += 1;
        let closed = row.state == ConversationState::Closed;
        if closed {
            counts.closed += 1;
        } else {
            counts.open += 1;
        }
        if row.offline {
            counts.offline += 1;
        }
        let live = !row.offline;
        match row.assigned_at {
            Some(at) => {
                counts.assigned += 1;
                if live {
                    wait.push(since_start(at));
                    if let (true, Some(closed_at)) = (closed, row.closed_at) {
                        resolution.push(since_start(closed_at));
                    }
                }
            }
            None if closed && live => counts.abandoned += 1,
            None => {}
        }
        if let Some(at) = row.first_response_at {
            counts.answered += 1;
            if live {
                first_response.push(since_start(at));
            }
        }
        if let Some(score) = row.rating.filter(|s| (1..=5).contains(s)) {
            satisfaction.rated += 1;
            satisfaction.scores[usize::from(score - 1)] += 1;
            score_sum += u64::from(score);
        }
    }
    if satisfaction.rated > 0 {
        satisfaction.mean = Some(score_sum as f64 / satisfaction.rated as f64);
    }
    Kpis {
        conversations: counts,
        wait_ms: Spread::of(wait),
        first_response_ms: Spread::of(first_response),
        resolution_ms: Spread::of(resolution),
        satisfaction,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(state: ConversationState, created_at: u64) -> KpiRow {
        KpiRow {
            state,
            created_at,
            assigned_at: None,
            first_response_at: None,
            closed_at: None,
            offline: false,
            rating: None,
        }
    }

    #[test]
    fn nothing_gives_zero_counts_and_no_figures() {
        let k = kpis(&[]);
        assert_eq!(k.conversations, Counts::default());
        assert_eq!(k.wait_ms, Spread::default());
        assert_eq!(k.satisfaction.mean, None);
    }

    #[test]
    fn each_figure_counts_from_the_start_of_the_chat() {
        let served = KpiRow {
            assigned_at: Some(1_000 + 4_000),
            first_response_at: Some(1_000 + 9_000),
            closed_at: Some(1_000 + 300_000),
            rating: Some(5),
            ..row(ConversationState::Closed, 1_000)
        };
        let waiting = row(ConversationState::Queued, 2_000);
        let gave_up = KpiRow {
            closed_at: Some(60_000),
            ..row(ConversationState::Closed, 3_000)
        };
        // Answered hours later by whoever came online: counted, but no queue time.
        let left_a_message = KpiRow {
            offline: true,
            assigned_at: Some(4_000 + 3_600_000),
            first_response_at: Some(4_000 + 3_700_000),
            closed_at: Some(4_000 + 3_800_000),
            ..row(ConversationState::Closed, 4_000)
        };
        let active = KpiRow {
            assigned_at: Some(5_000 + 2_000),
            rating: Some(2),
            ..row(ConversationState::Active, 5_000)
        };
        let k = kpis(&[served, waiting, gave_up, left_a_message, active]);
        assert_eq!(
            k.conversations,
            Counts {
                started: 5,
                assigned: 3,
                answered: 2,
                closed: 3,
                abandoned: 1,
                offline: 1,
                open: 2,
            }
        );
        assert_eq!(k.wait_ms.count, 2);
        assert_eq!(k.wait_ms.mean, Some(3_000));
        assert_eq!((k.wait_ms.p50, k.wait_ms.max), (Some(2_000), Some(4_000)));
        assert_eq!(k.first_response_ms.count, 1, "live chats only");
        assert_eq!(k.first_response_ms.p90, Some(9_000));
        assert_eq!(k.resolution_ms.count, 1, "only live chats an agent served");
        assert_eq!(k.resolution_ms.mean, Some(300_000));
        assert_eq!(k.satisfaction.rated, 2);
        assert_eq!(k.satisfaction.scores, [0, 1, 0, 0, 1]);
        assert_eq!(k.satisfaction.mean, Some(3.5));
    }

    #[test]
    fn percentiles_are_nearest_rank() {
        let s = Spread::of((1..=10).rev().map(|v| v * 100).collect());
        assert_eq!(s.count, 10);
        assert_eq!(s.mean, Some(550));
        assert_eq!(s.p50, Some(500));
        assert_eq!(s.p90, Some(900));
        assert_eq!(s.max, Some(1_000));
        let one = Spread::of(vec![7]);
        assert_eq!((one.p50, one.p90, one.max), (Some(7), Some(7), Some(7)));
    }

    #[test]
    fn a_clock_that_went_back_never_gives_a_negative_time() {
        let odd = KpiRow {
            assigned_at: Some(500),
            ..row(ConversationState::Active, 1_000)
        };
        assert_eq!(kpis(&[odd]).wait_ms.max, Some(0));
    }
}
