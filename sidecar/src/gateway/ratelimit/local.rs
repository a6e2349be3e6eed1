//! Per-key limits held in this process.
//!
//! The keys are sharded over a few mutex-guarded maps so concurrent
//! requests rarely wait on each other (a lock is held for one map lookup
//! and never across an await). Memory is bounded: at most
//! [`LocalConfig::max_keys`] keys, each at most
//! [`MAX_KEY_LEN`](super::MAX_KEY_LEN) + 1 bytes. When a shard is full, a
//! new key first evicts the keys whose bucket is full again (forgetting
//! them changes nothing), then the keys closest to full: forgetting a key
//! hands it back at most what it had left to refill, so a flood of distinct
//! keys (spoofed headers, each one request in) evicts itself and never a
//! key that is being limited.

use std::collections::hash_map::RandomState;
use std::collections::HashMap;
use std::hash::BuildHasher;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

use super::{gcra, stored_key, Decision, Limit, Step};

/// Most shards: beyond this, contention is no longer the lock.
const MAX_SHARDS: usize = 16;
/// Fewest keys per shard before the key count is split further.
const MIN_KEYS_PER_SHARD: usize = 64;

/// Settings of a [`LocalLimiter`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LocalConfig {
    /// Most keys remembered at once (each costs roughly 100 bytes).
    pub max_keys: usize,
}

impl Default for LocalConfig {
    fn default() -> Self {
        LocalConfig { max_keys: 100_000 }
    }
}

/// One [`Limit`] applied separately to every key.
#[derive(Debug)]
pub struct LocalLimiter {
    limit: Limit,
    /// Times are kept as nanoseconds since this instant.
    epoch: Instant,
    interval: u64,
    capacity: u64,
    shards: Box<[Mutex<Shard>]>,
    shard_cap: usize,
    /// Picks the shard; independent of the maps' own hashers (random keys,
    /// so a client cannot aim its keys at one shard or one bucket chain).
    pick: RandomState,
    evicted: AtomicU64,
}

#[derive(Debug, Default)]
struct Shard {
    /// Stored key → TAT (nanoseconds since the epoch).
    tats: HashMap<Box<str>, u64>,
}

impl LocalLimiter {
    pub fn new(limit: Limit, config: LocalConfig) -> LocalLimiter {
        let max_keys = config.max_keys.max(1);
        // A power of two of shards, each holding at least a few dozen keys;
        // the total never exceeds max_keys.
        let shards = (max_keys / MIN_KEYS_PER_SHARD).clamp(1, MAX_SHARDS);
        let shards = if shards.is_power_of_two() {
            shards
        } else {
            shards.next_power_of_two() / 2
        };
        LocalLimiter {
            limit,
            epoch: Instant::now(),
            interval: nanos(limit.interval()),
            capacity: nanos(limit.capacity()),
            shards: (0..shards).map(|_| Mutex::default()).collect(),
            shard_cap: max_keys / shards,
            pick: RandomState::new(),
            evicted: AtomicU64::new(0),
        }
    }

    pub fn limit(&self) -> &Limit {
        &self.limit
    }

    /// Counts one request of `key` at `now` and says whether it may pass.
    pub fn check(&self, key: &str, now: Instant) -> Decision {
        let key = stored_key(key);
        let now = nanos(now.saturating_duration_since(self.epoch));
        let index = (self.pick.hash_one(&*key) as usize) % self.shards.len();
        let mut shard = self.shards[index]
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let step = match shard.tats.get_mut(&*key) {
            Some(tat) => {
                let step = gcra(Some(*tat), now, self.interval, self.capacity);
                if let Step::Allowed { new_tat, .. } = step {
                    *tat = new_tat;
                }
                step
            }
            None => {
                // A new key always fits in a full bucket (burst >= 1).
                let step = gcra(None, now, self.interval, self.capacity);
                if let Step::Allowed { new_tat, .. } = step {
                    if shard.tats.len() >= self.shard_cap {
                        let evicted = shard.evict(now, (self.shard_cap / 8).max(1));
                        self.evicted.fetch_add(evicted as u64, Ordering::Relaxed);
                    }
                    shard
                        .tats
                        .insert(key.into_owned().into_boxed_str(), new_tat);
                }
                step
            }
        };
        step.decision(Duration::from_nanos)
    }

    /// Forgets every key whose bucket is full again at `now` (which
    /// changes no decision) and returns how many. Not needed for the memory
    /// bound; a periodic call gives the memory of a past flood back.
    pub fn purge(&self, now: Instant) -> usize {
        let now = nanos(now.saturating_duration_since(self.epoch));
        self.shards
            .iter()
            .map(|s| {
                let mut shard = s.lock().unwrap_or_else(PoisonError::into_inner);
                let before = shard.tats.len();
                shard.tats.retain(|_, tat| *tat > now);
                shard.tats.shrink_to_fit();
                before - shard.tats.len()
            })
            .sum()
    }

    /// Keys remembered now.
    pub fn len(&self) -> usize {
        self.shards
            .iter()
            .map(|s| s.lock().unwrap_or_else(PoisonError::into_inner).tats.len())
            .sum()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Most keys remembered at once (at most the configured `max_keys`).
    pub fn capacity(&self) -> usize {
        self.shard_cap * self.shards.len()
    }

    /// Keys forgotten so far to make room (for the metrics).
    pub fn evicted(&self) -> u64 {
        self.evicted.load(Ordering::Relaxed)
    }
}

impl Shard {
    /// Frees at least `want` entries (fewer only when the shard holds
    /// fewer): first every full bucket, then the lowest TATs. Returns how
    /// many were freed. Freeing a batch keeps the cost per insert constant
    /// under a flood instead of a scan per new key.
    fn evict(&mut self, now: u64, want: usize) -> usize {
        let before = self.tats.len();
        self.tats.retain(|_, tat| *tat > now);
        let freed = before - self.tats.len();
        if freed >= want || self.tats.is_empty() {
            return freed;
        }
        let need = (want - freed).min(self.tats.len());
        let mut tats: Vec<u64> = self.tats.values().copied().collect();
        let (_, &mut threshold, _) = tats.select_nth_unstable(need - 1);
        let below = tats.iter().filter(|t| **t < threshold).count();
        // Ties at the threshold: take only as many as still needed.
        let mut at_threshold = need - below;
        self.tats.retain(|_, tat| {
            if *tat < threshold {
                false
            } else if *tat == threshold && at_threshold > 0 {
                at_threshold -= 1;
                false
            } else {
                true
            }
        });
        before - self.tats.len()
    }
}

fn nanos(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limiter(requests: u32, per: Duration, burst: Option<u32>, max_keys: usize) -> LocalLimiter {
        LocalLimiter::new(
            Limit::new(requests, per, burst).unwrap(),
            LocalConfig { max_keys },
        )
    }

    const MS: Duration = Duration::from_millis(1);

    #[test]
    fn burst_then_refill() {
        let l = limiter(10, Duration::from_secs(1), Some(3), 1000);
        let t0 = Instant::now();
        for remaining in [2, 1, 0] {
            assert_eq!(
                l.check("a", t0),
                Decision::Allowed {
                    remaining,
                    reset: 100 * MS * (3 - remaining)
                }
            );
        }
        assert_eq!(
            l.check("a", t0),
            Decision::Limited {
                retry_after: 100 * MS,
                reset: 300 * MS
            }
        );
        // A refused request costs nothing: still one back after 100 ms.
        assert_eq!(
            l.check("a", t0 + 99 * MS),
            Decision::Limited {
                retry_after: MS,
                reset: 201 * MS
            }
        );
        assert!(l.check("a", t0 + 100 * MS).is_allowed());
        assert!(!l.check("a", t0 + 100 * MS).is_allowed());
        // Other keys have their own bucket.
        assert!(l.check("b", t0).is_allowed());
        // Idle for the whole capacity: the full burst again.
        assert_eq!(
            l.check("a", t0 + 400 * MS),
            Decision::Allowed {
                remaining: 2,
                reset: 100 * MS
            }
        );
    }

    #[test]
    fn exact_count_over_a_window() {
        // 100 per second: after the burst, exactly one more every 10 ms.
        let l = limiter(100, Duration::from_secs(1), None, 1000);
        let t0 = Instant::now();
        let burst = (0..1000).filter(|_| l.check("k", t0).is_allowed()).count();
        assert_eq!(burst, 100);
        // One request per millisecond for 10 s.
        let sustained = (1..=10_000u32)
            .filter(|ms| l.check("k", t0 + MS * *ms).is_allowed())
            .count();
        assert_eq!(sustained, 1000);
    }

    #[test]
    fn times_before_the_epoch_count_as_the_epoch() {
        let t0 = Instant::now();
        let l = limiter(1, Duration::from_secs(1), None, 1000);
        assert!(l.check("k", t0).is_allowed());
        assert!(!l.check("k", t0).is_allowed());
    }

    #[test]
    fn a_flood_of_keys_stays_at_the_cap_and_evicts_itself() {
        // One request back per second.
        let l = limiter(10, Duration::from_secs(10), None, 10_000);
        assert!(l.capacity() <= 10_000);
        let t0 = Instant::now();
        // Clients being limited: their burst used, 10 s to refill.
        let victims: Vec<String> = (0..50).map(|i| format!("victim-{i}")).collect();
        for v in &victims {
            for _ in 0..10 {
                assert!(l.check(v, t0).is_allowed());
            }
            assert!(!l.check(v, t0).is_allowed());
        }
        // 100k distinct keys, one request each, within 100 ms.
        for i in 0..100_000u32 {
            let at = t0 + Duration::from_micros(u64::from(i));
            let key = format!("spoofed-{i}-{}", "x".repeat((i % 100) as usize));
            assert!(l.check(&key, at).is_allowed());
            if i % 10_000 == 0 {
                assert!(l.len() <= l.capacity());
            }
        }
        assert!(l.len() <= l.capacity(), "{} keys", l.len());
        assert!(l.len() > l.capacity() / 2, "{} keys", l.len());
        assert!(l.evicted() >= 100_000 + 50 - l.capacity() as u64);
        // The limited clients were not forgotten.
        let later = t0 + 100 * MS;
        for v in &victims {
            assert!(!l.check(v, later).is_allowed(), "{v} was evicted");
        }
        // Once the flood's buckets are full again, a purge drops them and
        // keeps the clients still limited.
        let purged = l.purge(t0 + 1200 * MS);
        assert_eq!(l.len(), victims.len(), "purged {purged}");
        // One request back after a second, not a forgotten full bucket.
        assert!(matches!(
            l.check(&victims[0], t0 + 1200 * MS),
            Decision::Allowed { remaining: 0, .. }
        ));
    }

    #[test]
    fn full_buckets_go_first_then_the_lowest() {
        let mut shard = Shard::default();
        for (k, tat) in [
            ("a", 5),
            ("b", 50),
            ("c", 20),
            ("d", 20),
            ("e", 8),
            ("f", 90),
        ] {
            shard.tats.insert(k.into(), tat);
        }
        // At 10: a and e are full (freed even beyond the count wanted).
        assert_eq!(shard.evict(10, 1), 2);
        // Then one of the two at 20 only, then the other.
        assert_eq!(shard.evict(10, 1), 1);
        assert_eq!(shard.tats.len(), 3);
        assert_eq!(shard.evict(10, 2), 2);
        let left: Vec<_> = shard.tats.keys().map(|k| k.to_string()).collect();
        assert_eq!(left, ["f"]);
        assert_eq!(shard.evict(10, 5), 1);
        assert_eq!(shard.evict(10, 5), 0);
    }

    #[test]
    fn tiny_and_odd_caps() {
        for max_keys in [0, 1, 3, 100, 1000, 1025] {
            let l = limiter(1, Duration::from_secs(1), None, max_keys);
            assert!(l.capacity() >= 1 && l.capacity() <= max_keys.max(1));
            let t0 = Instant::now();
            for i in 0..3000 {
                l.check(&i.to_string(), t0);
            }
            assert!(l.len() <= l.capacity());
        }
    }
}
