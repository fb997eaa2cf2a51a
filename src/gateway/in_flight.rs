//! The calls in flight on this instance, up to `GATEWAY_MAX_IN_FLIGHT` (beyond: 50301).

use std::sync::atomic::{AtomicUsize, Ordering};

/// A counter rather than a semaphore: a call never waits for a place, and tokio's semaphore
/// takes its waiters' lock on every release, a lock that every worker's calls share.
pub(super) struct InFlight {
    count: AtomicUsize,
    max: usize,
}

/// A call's place; dropped when the call is done.
pub(super) struct Place<'a>(&'a InFlight);

impl InFlight {
    pub(super) fn new(max: usize) -> InFlight {
        InFlight {
            count: AtomicUsize::new(0),
            max,
        }
    }

    /// A place, unless `max` calls hold one.
    pub(super) fn enter(&self) -> Option<Place<'_>> {
        if self.count.fetch_add(1, Ordering::Acquire) < self.max {
            Some(Place(self))
        } else {
            self.count.fetch_sub(1, Ordering::Release);
            None
        }
    }
}

impl Drop for Place<'_> {
    fn drop(&mut self) {
        self.0.count.fetch_sub(1, Ordering::Release);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_place_is_given_up_to_the_maximum_and_back_when_dropped() {
        let in_flight = InFlight::new(2);
        let first = in_flight.enter();
        let second = in_flight.enter();
        assert!(first.is_some() && second.is_some());
        assert!(
            in_flight.enter().is_none(),
            "a third place beyond the maximum"
        );
        drop(first);
        assert!(
            in_flight.enter().is_some(),
            "a place given back is given again"
        );
    }
}
