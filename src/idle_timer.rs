//! A process-wide timer that wakes stalled compressed streams when they have been idle long enough
//! to hibernate, so a stream that goes silent sheds its deflate state even if nothing polls it.
//!
//! Runtime-agnostic: one plain thread (`tower-gzip-idle`), started on first use, sleeping on a
//! condition variable until the earliest deadline. No async runtime is needed, so it works the
//! same under tokio, async-std, smol or a hand-written executor, and never panics outside one.
//! If the thread cannot be started, [`wake_at`] says so and streams fall back to hibernating when
//! they are next polled.
//!
//! Cost: a body keeps at most one registration outstanding (see `GzipBody`), so a stream that
//! stalls between every token registers about once per `hibernate_after`, not once per token. A
//! registration is a mutex-protected heap push; a deadline that passes wakes the task once.
//!
//! The heap holds only a weak reference to the body's [`WakeSlot`], which holds the waker: a body
//! dropped before its deadline releases its task at once (its entry expires empty), and a body
//! that moved to another task updates the slot, so the right task is woken.

use std::cmp::Ordering;
use std::collections::BinaryHeap;
use std::sync::{Arc, Condvar, Mutex, OnceLock, PoisonError, Weak};
use std::task::Waker;
use std::time::Instant;

/// Where a body keeps the waker of the task that polls it, for the timer to wake.
#[derive(Debug, Default)]
pub(crate) struct WakeSlot(Mutex<Option<Waker>>);

impl WakeSlot {
    /// Records the waker of the task polling the body now (kept if it would wake the same task).
    pub(crate) fn set(&self, waker: &Waker) {
        let mut slot = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        if !slot.as_ref().is_some_and(|w| w.will_wake(waker)) {
            *slot = Some(waker.clone());
        }
    }

    fn take(&self) -> Option<Waker> {
        self.0.lock().unwrap_or_else(PoisonError::into_inner).take()
    }
}

struct Entry {
    at: Instant,
    /// Breaks ties so entries with the same deadline stay distinct and ordered.
    seq: u64,
    slot: Weak<WakeSlot>,
}

impl PartialEq for Entry {
    fn eq(&self, other: &Self) -> bool {
        (self.at, self.seq) == (other.at, other.seq)
    }
}

impl Eq for Entry {}

impl PartialOrd for Entry {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Entry {
    /// Reversed, so `BinaryHeap` (a max-heap) pops the earliest deadline first.
    fn cmp(&self, other: &Self) -> Ordering {
        (other.at, other.seq).cmp(&(self.at, self.seq))
    }
}

#[derive(Default)]
struct Queue {
    heap: BinaryHeap<Entry>,
    seq: u64,
}

#[derive(Default)]
struct Shared {
    queue: Mutex<Queue>,
    changed: Condvar,
}

/// The timer thread's state, or `None` if the thread could not be started.
fn shared() -> Option<&'static Arc<Shared>> {
    static SHARED: OnceLock<Option<Arc<Shared>>> = OnceLock::new();
    SHARED
        .get_or_init(|| {
            let shared = Arc::new(Shared::default());
            let for_thread = shared.clone();
            std::thread::Builder::new()
                .name("tower-gzip-idle".into())
                .spawn(move || run(&for_thread))
                .ok()
                .map(|_| shared)
        })
        .as_ref()
}

/// Wakes the waker in `slot` at `at` (or soon after), if the slot still exists then. Returns
/// `false` if no timer thread is available.
pub(crate) fn wake_at(at: Instant, slot: &Arc<WakeSlot>) -> bool {
    let Some(shared) = shared() else {
        return false;
    };
    // A panic while holding the lock cannot leave the heap inconsistent for our use: take it.
    let mut queue = shared.queue.lock().unwrap_or_else(PoisonError::into_inner);
    let earliest = queue.heap.peek().map(|e| e.at);
    queue.seq = queue.seq.wrapping_add(1);
    let seq = queue.seq;
    queue.heap.push(Entry {
        at,
        seq,
        slot: Arc::downgrade(slot),
    });
    drop(queue);
    // The thread sleeps until the earliest deadline: tell it only when that moved earlier.
    if earliest.map_or(true, |earliest| at < earliest) {
        shared.changed.notify_one();
    }
    true
}

fn run(shared: &Shared) {
    let mut due = Vec::new();
    let mut queue = shared.queue.lock().unwrap_or_else(PoisonError::into_inner);
    loop {
        let now = Instant::now();
        while queue.heap.peek().is_some_and(|e| e.at <= now) {
            if let Some(entry) = queue.heap.pop() {
                due.push(entry.slot);
            }
        }
        if !due.is_empty() {
            // Wake outside the lock: a waker may run code that registers again.
            drop(queue);
            for slot in due.drain(..) {
                if let Some(waker) = slot.upgrade().and_then(|slot| slot.take()) {
                    waker.wake();
                }
            }
            queue = shared.queue.lock().unwrap_or_else(PoisonError::into_inner);
            continue;
        }
        queue = match queue.heap.peek().map(|e| e.at) {
            Some(at) => {
                let wait = at.saturating_duration_since(now);
                shared
                    .changed
                    .wait_timeout(queue, wait)
                    .unwrap_or_else(PoisonError::into_inner)
                    .0
            }
            None => shared
                .changed
                .wait(queue)
                .unwrap_or_else(PoisonError::into_inner),
        };
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering as AtomicOrdering};
    use std::task::Wake;
    use std::time::Duration;

    struct Count(AtomicUsize, Mutex<Vec<Instant>>);

    impl Wake for Count {
        fn wake(self: Arc<Self>) {
            self.0.fetch_add(1, AtomicOrdering::SeqCst);
            self.1.lock().unwrap().push(Instant::now());
        }
    }

    #[test]
    fn wakes_each_registration_once_not_before_its_deadline() {
        let count = Arc::new(Count(AtomicUsize::new(0), Mutex::new(Vec::new())));
        let waker = Waker::from(count.clone());
        let start = Instant::now();
        let deadlines: Vec<Instant> = [30u64, 10, 20, 10]
            .iter()
            .map(|ms| start + Duration::from_millis(*ms))
            .collect();
        // One slot per registration, as four bodies would have.
        let slots: Vec<Arc<WakeSlot>> = deadlines
            .iter()
            .map(|at| {
                let slot = Arc::new(WakeSlot::default());
                slot.set(&waker);
                assert!(wake_at(*at, &slot));
                slot
            })
            .collect();
        // Detects a hang only; the assertions below are about order and deadlines.
        let give_up = Instant::now() + Duration::from_secs(30);
        while count.0.load(AtomicOrdering::SeqCst) < deadlines.len() {
            assert!(Instant::now() < give_up, "the timer never fired");
            std::thread::sleep(Duration::from_millis(5));
        }
        let woken = count.1.lock().unwrap().clone();
        let mut sorted = deadlines.clone();
        sorted.sort();
        for (woken, deadline) in woken.iter().zip(&sorted) {
            assert!(woken >= deadline, "woken before its deadline");
        }
        std::thread::sleep(Duration::from_millis(50));
        assert_eq!(count.0.load(AtomicOrdering::SeqCst), deadlines.len());
        drop(slots);
    }

    #[test]
    fn a_dropped_slot_releases_its_waker_at_once_and_is_never_woken() {
        let count = Arc::new(Count(AtomicUsize::new(0), Mutex::new(Vec::new())));
        let waker = Waker::from(count.clone());
        let slot = Arc::new(WakeSlot::default());
        slot.set(&waker);
        assert!(wake_at(Instant::now() + Duration::from_millis(20), &slot));
        drop(slot); // the body went away
        assert_eq!(
            Arc::strong_count(&count),
            2,
            "only the test's waker holds the task"
        );
        std::thread::sleep(Duration::from_millis(100));
        assert_eq!(count.0.load(AtomicOrdering::SeqCst), 0);
    }
}
