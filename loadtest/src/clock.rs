//! A sleep precise to tens of microseconds, for the open-loop senders.
//!
//! tokio's timer fires on whole milliseconds, rounding every deadline up, so a
//! sender waiting on it writes each message up to a millisecond after its scheduled
//! time, and that lateness counts in every server's latency. [`sleep_until`] lets
//! tokio's timer wait until shortly before the deadline, then hands the rest to one
//! thread that waits on a condition variable with a timeout (a high-resolution
//! kernel timer) and wakes each sleeper when its time comes.

use std::cmp::Ordering;
use std::collections::BinaryHeap;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Condvar, Mutex, MutexGuard, OnceLock};
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

/// How long before the deadline tokio's timer hands over: more than its
/// millisecond of rounding, so it never wakes a sleeper late.
const HANDOVER: Duration = Duration::from_micros(1500);

/// Completes at `due`, not before, and usually within tens of microseconds after.
pub async fn sleep_until(due: Instant) {
    if let Some(early) = due.checked_sub(HANDOVER) {
        if early > Instant::now() {
            tokio::time::sleep_until(early.into()).await;
        }
    }
    Precise {
        due,
        registered: false,
    }
    .await
}

/// The last stretch of a [`sleep_until`]: registered once with the timer thread.
struct Precise {
    due: Instant,
    registered: bool,
}

impl Future for Precise {
    type Output = ();

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        if Instant::now() >= self.due {
            return Poll::Ready(());
        }
        if !self.registered {
            // A sleeper dropped before its time leaves its entry behind; it is
            // woken for nothing at `due` and gone. The heap holds at most what is
            // due within the next `HANDOVER`.
            timer().add(self.due, cx.waker().clone());
            self.registered = true;
        }
        Poll::Pending
    }
}

/// A waiting sleeper, ordered by deadline (earliest first in the heap), then by
/// arrival.
struct Entry {
    due: Instant,
    seq: u64,
    waker: Waker,
}

impl PartialEq for Entry {
    fn eq(&self, other: &Self) -> bool {
        (self.due, self.seq) == (other.due, other.seq)
    }
}

impl Eq for Entry {}

impl PartialOrd for Entry {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Entry {
    fn cmp(&self, other: &Self) -> Ordering {
        // Reversed: `BinaryHeap` is a max-heap.
        (other.due, other.seq).cmp(&(self.due, self.seq))
    }
}

#[derive(Default)]
struct Sleepers {
    heap: BinaryHeap<Entry>,
    next_seq: u64,
}

/// The timer thread's state.
#[derive(Default)]
struct Timer {
    sleepers: Mutex<Sleepers>,
    changed: Condvar,
}

/// The process's timer, its thread started on first use.
fn timer() -> &'static Timer {
    static TIMER: OnceLock<&'static Timer> = OnceLock::new();
    TIMER.get_or_init(|| {
        let timer: &'static Timer = Box::leak(Box::default());
        std::thread::Builder::new()
            .name("precise-timer".into())
            .spawn(move || timer.run())
            .expect("starting the timer thread");
        timer
    })
}

impl Timer {
    fn lock(&self) -> MutexGuard<'_, Sleepers> {
        // A panic while holding this lock cannot leave the heap half-changed.
        self.sleepers.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn add(&self, due: Instant, waker: Waker) {
        let mut sleepers = self.lock();
        let earliest = sleepers.heap.peek().is_none_or(|e| due < e.due);
        let seq = sleepers.next_seq;
        sleepers.next_seq += 1;
        sleepers.heap.push(Entry { due, seq, waker });
        drop(sleepers);
        if earliest {
            self.changed.notify_one();
        }
    }

    fn run(&self) {
        let mut due_now = Vec::new();
        let mut sleepers = self.lock();
        loop {
            let now = Instant::now();
            while sleepers.heap.peek().is_some_and(|e| e.due <= now) {
                if let Some(entry) = sleepers.heap.pop() {
                    due_now.push(entry.waker);
                }
            }
            if !due_now.is_empty() {
                // Woken outside the lock: a waker may run code that sleeps again.
                drop(sleepers);
                for waker in due_now.drain(..) {
                    waker.wake();
                }
                sleepers = self.lock();
                continue;
            }
            sleepers = match sleepers.heap.peek().map(|e| e.due - now) {
                Some(wait) => {
                    self.changed
                        .wait_timeout(sleepers, wait)
                        .unwrap_or_else(|e| e.into_inner())
                        .0
                }
                None => self
                    .changed
                    .wait(sleepers)
                    .unwrap_or_else(|e| e.into_inner()),
            };
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every sleeper wakes, none before its deadline, in any order of deadlines,
    /// whether it goes through tokio's timer first or straight to the thread.
    #[tokio::test]
    async fn sleepers_wake_at_or_after_their_deadline() {
        let start = Instant::now();
        let offsets_us = [3_000u64, 200, 2_500, 50, 0, 1_200, 800, 5_000];
        let sleepers = offsets_us.iter().map(|&us| {
            let due = start + Duration::from_micros(us);
            tokio::spawn(async move {
                sleep_until(due).await;
                Instant::now() >= due
            })
        });
        for (handle, us) in sleepers.collect::<Vec<_>>().into_iter().zip(offsets_us) {
            assert!(handle.await.expect("sleeper"), "woke before +{us} µs");
        }
    }

    /// A sleeper dropped before its deadline (its entry left behind in the timer)
    /// does not stop later ones.
    #[tokio::test]
    async fn a_dropped_sleeper_leaves_the_others_alone() {
        let now = Instant::now();
        let dropped = sleep_until(now + Duration::from_micros(300));
        let kept = tokio::time::timeout(Duration::from_millis(10), dropped).await;
        assert!(kept.is_ok(), "the first sleeper finished");
        let cancelled = tokio::time::timeout(
            Duration::from_micros(100),
            sleep_until(Instant::now() + Duration::from_millis(50)),
        )
        .await;
        assert!(
            cancelled.is_err(),
            "a 50 ms sleep outlasts a 100 µs timeout"
        );
        let due = Instant::now() + Duration::from_micros(400);
        tokio::time::timeout(Duration::from_secs(5), sleep_until(due))
            .await
            .expect("a later sleeper still wakes");
        assert!(Instant::now() >= due);
    }
}
