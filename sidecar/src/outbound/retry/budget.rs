//! Retry budgets: retries may be at most `ratio` of the requests of the
//! last `window`, plus `min_per_second` for every second of it, so that a
//! failing service sees at most `1 + ratio` times its normal load and a
//! quiet one can still retry its rare failures.
//!
//! Counts live in one-second buckets over the window (rounded up to whole
//! seconds); old buckets are reused as time moves on, so a budget's memory
//! is fixed. Only first tries are recorded as requests: were retries
//! counted too, a failing service would earn budget from its own retries.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use crate::core::directory::policy::RetryBudget;

/// Longest window kept, in buckets; a larger configured window is cut to
/// this, which only makes the budget forget sooner.
const MAX_WINDOW_SECS: u64 = 3600;

/// Services with a budget kept by default in [`Budgets`].
pub const DEFAULT_MAX_SERVICES: usize = 4096;

/// The retry budget of one service. Cheap to lock: every call holds the
/// lock for a few arithmetic operations and never across an await.
#[derive(Debug)]
pub struct Budget {
    state: Mutex<State>,
}

#[derive(Debug)]
struct State {
    ratio: f64,
    min_per_second: u32,
    /// `buckets[s % len]` counts second `s` (since `origin`) when its
    /// `second` field says so; otherwise it is stale and counts as empty.
    buckets: Vec<Bucket>,
    origin: Option<Instant>,
}

#[derive(Clone, Copy, Debug, Default)]
struct Bucket {
    second: u64,
    requests: u64,
    retries: u64,
}

impl Budget {
    pub fn new(cfg: &RetryBudget) -> Budget {
        let mut state = State {
            ratio: 0.0,
            min_per_second: 0,
            buckets: Vec::new(),
            origin: None,
        };
        state.configure(cfg);
        Budget {
            state: Mutex::new(state),
        }
    }

    /// Applies a changed policy, keeping the counts when the window length
    /// is unchanged.
    pub fn update(&self, cfg: &RetryBudget) {
        self.lock().configure(cfg);
    }

    /// A first try of a request was sent (or is about to be).
    pub fn record_request(&self, now: Instant) {
        let mut state = self.lock();
        state.bucket(now).requests += 1;
    }

    /// Takes one retry from the budget; false when it is spent, and then
    /// the request must not be retried.
    pub fn try_retry(&self, now: Instant) -> bool {
        let mut state = self.lock();
        let (requests, retries) = state.totals(now);
        // Floats: ratio is fractional; counts stay far below 2^53.
        let window_secs = state.buckets.len() as f64;
        let allowed = state.ratio * requests as f64 + f64::from(state.min_per_second) * window_secs;
        if (retries + 1) as f64 > allowed {
            return false;
        }
        state.bucket(now).retries += 1;
        true
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        // A panic elsewhere leaves counts that are still counts.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl State {
    fn configure(&mut self, cfg: &RetryBudget) {
        self.ratio = if cfg.ratio.is_finite() && cfg.ratio > 0.0 {
            cfg.ratio
        } else {
            0.0
        };
        self.min_per_second = cfg.min_per_second;
        let secs = window_secs(cfg.window);
        if self.buckets.len() as u64 != secs {
            self.buckets = vec![Bucket::default(); secs as usize];
            self.origin = None;
        }
    }

    fn second(&mut self, now: Instant) -> u64 {
        let origin = *self.origin.get_or_insert(now);
        // An instant before the origin (callers' clocks are read before
        // the lock) counts in the first second.
        now.saturating_duration_since(origin).as_secs()
    }

    fn bucket(&mut self, now: Instant) -> &mut Bucket {
        let second = self.second(now);
        let len = self.buckets.len() as u64;
        let bucket = &mut self.buckets[(second % len) as usize];
        if bucket.second != second {
            *bucket = Bucket {
                second,
                ..Bucket::default()
            };
        }
        bucket
    }

    /// Requests and retries of the window ending at `now`.
    fn totals(&mut self, now: Instant) -> (u64, u64) {
        let second = self.second(now);
        let len = self.buckets.len() as u64;
        let first = second.saturating_sub(len - 1);
        self.buckets
            .iter()
            .filter(|b| b.second >= first && b.second <= second)
            .fold((0, 0), |(req, ret), b| (req + b.requests, ret + b.retries))
    }
}

fn window_secs(window: Duration) -> u64 {
    let secs = window.as_secs() + u64::from(window.subsec_nanos() > 0);
    secs.clamp(1, MAX_WINDOW_SECS)
}

/// Budgets by service key, made on first use. Bounded: beyond the limit
/// the least recently used budget is dropped, which only forgets its
/// history (a fresh budget starts with its floor).
#[derive(Debug)]
pub struct Budgets {
    max_services: usize,
    by_service: Mutex<HashMap<String, Entry>>,
}

#[derive(Debug)]
struct Entry {
    budget: Arc<Budget>,
    cfg: RetryBudget,
    used: Instant,
}

impl Default for Budgets {
    fn default() -> Self {
        Budgets::new(DEFAULT_MAX_SERVICES)
    }
}

impl Budgets {
    pub fn new(max_services: usize) -> Budgets {
        Budgets {
            max_services: max_services.max(1),
            by_service: Mutex::new(HashMap::new()),
        }
    }

    /// The budget of `service`, made or reconfigured to `cfg`. Callers
    /// take it once per request and use it for every try.
    pub fn get(&self, service: &str, cfg: &RetryBudget, now: Instant) -> Arc<Budget> {
        let mut map = self
            .by_service
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if let Some(entry) = map.get_mut(service) {
            entry.used = entry.used.max(now);
            if entry.cfg != *cfg {
                entry.budget.update(cfg);
                entry.cfg = cfg.clone();
            }
            return entry.budget.clone();
        }
        if map.len() >= self.max_services {
            // One scan per new service only when full; service keys come
            // from discovery, so this does not run per request.
            let oldest = map
                .iter()
                .min_by_key(|(_, e)| e.used)
                .map(|(k, _)| k.clone());
            if let Some(oldest) = oldest {
                map.remove(&oldest);
            }
        }
        let budget = Arc::new(Budget::new(cfg));
        map.insert(
            service.to_string(),
            Entry {
                budget: budget.clone(),
                cfg: cfg.clone(),
                used: now,
            },
        );
        budget
    }

    pub fn len(&self) -> usize {
        self.by_service
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests;
