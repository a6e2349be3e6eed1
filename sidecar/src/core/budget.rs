//! A bound on memory the proxy sets aside for bodies it holds whole
//! (retries, mirrors, gateway body limits, aggregation parts): callers
//! reserve room before they buffer and give it back by dropping the
//! reservation, so many callers with big or slow bodies cannot together
//! make the proxy hold more than the bound. Room is counted in KiB.

use std::sync::Arc;

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// Shared room for held bodies; clones share the same room.
#[derive(Clone, Debug)]
pub struct ByteBudget {
    kib: Arc<Semaphore>,
}

/// Room taken from a [`ByteBudget`]; given back when dropped.
#[derive(Debug)]
pub struct Reservation {
    permit: Option<OwnedSemaphorePermit>,
    kib: usize,
}

impl ByteBudget {
    pub fn new(total_bytes: usize) -> Self {
        Self {
            kib: Arc::new(Semaphore::new(total_bytes.div_ceil(1024))),
        }
    }

    /// Room for up to `bytes`, or None when that would pass the total.
    pub fn reserve(&self, bytes: usize) -> Option<Reservation> {
        let kib = bytes.div_ceil(1024);
        if kib == 0 {
            return Some(Reservation::empty());
        }
        let permit = self
            .kib
            .clone()
            .try_acquire_many_owned(u32::try_from(kib).ok()?)
            .ok()?;
        Some(Reservation {
            permit: Some(permit),
            kib,
        })
    }

    /// Room left, in bytes (a multiple of 1024).
    pub fn available(&self) -> usize {
        self.kib.available_permits() * 1024
    }
}

impl Reservation {
    /// Holds nothing.
    pub fn empty() -> Self {
        Self {
            permit: None,
            kib: 0,
        }
    }

    /// Bytes this reservation holds room for.
    pub fn bytes(&self) -> usize {
        self.kib * 1024
    }

    /// Makes this reservation cover at least `bytes` in all, taking the
    /// difference from `budget`; false (and nothing taken) when the budget
    /// has no room for it.
    pub fn grow_to(&mut self, budget: &ByteBudget, bytes: usize) -> bool {
        if bytes <= self.bytes() {
            return true;
        }
        let Some(more) = budget.reserve(bytes - self.bytes()) else {
            return false;
        };
        self.absorb(more);
        true
    }

    fn absorb(&mut self, other: Reservation) {
        self.kib += other.kib;
        match (&mut self.permit, other.permit) {
            (Some(mine), Some(theirs)) => mine.merge(theirs),
            (mine @ None, theirs) => *mine = theirs,
            (Some(_), None) => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn many_big_bodies_cannot_pass_the_total() {
        let budget = ByteBudget::new(128 * 1024);
        let first = budget.reserve(64 * 1024).unwrap();
        let second = budget.reserve(64 * 1024).unwrap();
        assert!(budget.reserve(1).is_none(), "the total is spent");
        drop(first);
        assert!(budget.reserve(64 * 1024).is_some(), "room comes back");
        drop(second);
        // An empty body reserves nothing and always fits.
        assert!(ByteBudget::new(0).reserve(0).is_some());
    }

    #[test]
    fn a_growing_reservation_stops_at_the_total_and_gives_all_back() {
        let budget = ByteBudget::new(10 * 1024);
        let mut r = Reservation::empty();
        assert!(r.grow_to(&budget, 3000));
        assert_eq!(r.bytes(), 3 * 1024);
        assert!(r.grow_to(&budget, 2000), "already covered");
        assert!(r.grow_to(&budget, 10 * 1024));
        assert_eq!(budget.available(), 0);
        assert!(!r.grow_to(&budget, 10 * 1024 + 1), "past the total");
        assert_eq!(r.bytes(), 10 * 1024, "a refused growth takes nothing");
        drop(r);
        assert_eq!(budget.available(), 10 * 1024);
    }
}
