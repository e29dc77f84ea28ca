//! The count of live compressed responses, and the optional limit on it.
//!
//! A permit is taken when a response is chosen for compression and released when its body ends or
//! is dropped, so the count is exact even for clients that disconnect mid-stream.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

/// Live compressed responses of one layer (shared by its clones and the services it built).
#[derive(Debug, Default)]
pub(crate) struct StreamCounter {
    live: AtomicUsize,
}

impl StreamCounter {
    pub(crate) fn live(&self) -> usize {
        self.live.load(Ordering::Acquire)
    }

    /// Whether one more stream fits under `max`.
    pub(crate) fn has_room(&self, max: Option<usize>) -> bool {
        max.map_or(true, |max| self.live() < max)
    }

    /// Counts one more live stream, unless that would exceed `max`.
    pub(crate) fn try_acquire(self: &Arc<Self>, max: Option<usize>) -> Option<StreamPermit> {
        let max = max.unwrap_or(usize::MAX);
        self.live
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |live| {
                (live < max).then_some(live + 1)
            })
            .ok()?;
        Some(StreamPermit(self.clone()))
    }
}

/// One live compressed stream; dropping it frees the slot.
#[derive(Debug)]
pub(crate) struct StreamPermit(Arc<StreamCounter>);

impl Drop for StreamPermit {
    fn drop(&mut self) {
        self.0.live.fetch_sub(1, Ordering::AcqRel);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn permits_count_up_to_the_limit_and_free_on_drop() {
        let counter = Arc::new(StreamCounter::default());
        let a = counter.try_acquire(Some(2)).unwrap();
        let b = counter.try_acquire(Some(2)).unwrap();
        assert_eq!(counter.live(), 2);
        assert!(!counter.has_room(Some(2)));
        assert!(counter.try_acquire(Some(2)).is_none());
        assert_eq!(counter.live(), 2, "a refused permit is not counted");
        drop(a);
        assert!(counter.has_room(Some(2)));
        let c = counter.try_acquire(Some(2)).unwrap();
        drop((b, c));
        assert_eq!(counter.live(), 0);
        let unlimited: Vec<_> = (0..100)
            .map(|_| counter.try_acquire(None).unwrap())
            .collect();
        assert_eq!(counter.live(), 100);
        drop(unlimited);
        assert_eq!(counter.live(), 0);
    }
}
