//! Recent handle times per department and the wait-estimate formula (documented in
//! the crate docs). Owns the arithmetic only; which conversations count and which
//! agents are eligible is decided by the router.

use std::collections::{BTreeMap, VecDeque};

/// The last few handle times of each department, oldest first.
#[derive(Debug, Clone)]
pub(crate) struct HandleTimes {
    /// Bounded by `window` per department: estimates should follow the current
    /// pace, and memory must not grow with the number of chats ever closed.
    by_department: BTreeMap<String, VecDeque<u64>>,
    window: usize,
}

/// The mean of a department's handle times as an exact fraction, so that the
/// estimate is rounded once, at the end.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Mean {
    pub(crate) sum: u128,
    pub(crate) count: u128,
}

impl HandleTimes {
    pub(crate) fn new(window: usize) -> Self {
        Self {
            by_department: BTreeMap::new(),
            window,
        }
    }

    pub(crate) fn record(&mut self, department: &str, ms: u64) {
        if self.window == 0 {
            return;
        }
        let times = self.by_department.entry(department.to_owned()).or_default();
        times.push_back(ms);
        while times.len() > self.window {
            times.pop_front();
        }
    }

    pub(crate) fn mean(&self, department: &str) -> Option<Mean> {
        let times = self.by_department.get(department)?;
        if times.is_empty() {
            return None;
        }
        Some(Mean {
            sum: times.iter().map(|&t| u128::from(t)).sum(),
            count: times.len() as u128,
        })
    }
}

/// The estimated wait of the player at `position` (1-based) when the eligible
/// agents have `capacity` slots in all, `free` of them free, and the department's
/// mean handle time is `mean`. See the crate docs for the formula.
pub(crate) fn estimate(position: u32, capacity: u64, free: u64, mean: Option<Mean>) -> Option<u64> {
    let position = u64::from(position);
    // A free slot is a wait of none, history or not.
    if position <= free {
        return Some(0);
    }
    let mean = mean?;
    if capacity == 0 {
        return None;
    }
    let ahead = u128::from(position - free);
    let numerator = ahead * mean.sum;
    let denominator = mean.count * u128::from(capacity);
    // Both are non-zero here (count ≥ 1, capacity ≥ 1); ceil of the exact fraction.
    let ms = numerator.div_ceil(denominator);
    Some(u64::try_from(ms).unwrap_or(u64::MAX))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn window_drops_the_oldest() {
        let mut h = HandleTimes::new(2);
        h.record("payments", 100);
        h.record("payments", 200);
        h.record("payments", 400);
        assert_eq!(h.mean("payments"), Some(Mean { sum: 600, count: 2 }));
        assert_eq!(h.mean("risk"), None);
    }

    #[test]
    fn zero_window_keeps_nothing() {
        let mut h = HandleTimes::new(0);
        h.record("payments", 100);
        assert_eq!(h.mean("payments"), None);
    }

    #[test]
    fn formula() {
        let m = Some(Mean { sum: 300, count: 2 }); // H = 150
        assert_eq!(estimate(1, 3, 1, m), Some(0));
        assert_eq!(estimate(2, 3, 1, m), Some(50)); // 1 × 150 / 3
        assert_eq!(estimate(3, 4, 0, m), Some(113)); // ceil(3 × 150 / 4 = 112.5)
        assert_eq!(estimate(3, 0, 0, m), None);
        assert_eq!(estimate(4, 3, 3, None), None);
        // A free slot needs no history.
        assert_eq!(estimate(1, 3, 3, None), Some(0));
    }
}
