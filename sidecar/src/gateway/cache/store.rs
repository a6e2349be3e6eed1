//! The stored responses: a least-recently-used set bounded by bytes.
//!
//! Entries are sharded by primary key over a few mutex-guarded shards, each
//! with its own byte budget (`max_bytes / shards`), so the total never
//! exceeds `max_bytes` and concurrent requests rarely wait on one another.
//! Every operation under a lock is a hash lookup plus a few list steps
//! (O(1), and O([`MAX_VARIANTS`]) to pick a variant); nothing is built,
//! copied or freed under it: the callers build entries and responses
//! outside, and evicted entries are dropped after the lock is released.
//!
//! Each shard keeps an intrusive doubly linked list over a slab of slots
//! (most recently used at the head), and a map from primary key to the
//! slots of its variants, oldest first. Inserting evicts from the tail
//! until the new entry fits.
//!
//! The store is generic over what it stores ([`Stored`]) so its bounds are
//! tested with plain values.

use std::collections::hash_map::RandomState;
use std::collections::HashMap;
use std::hash::BuildHasher;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

/// Most variants (responses with different `Vary` values) kept per primary
/// key; a new one evicts the least recently used. A backend varying on
/// something clients choose freely (`Vary: User-Agent`) would otherwise
/// let one URL fill the cache, and every lookup of the URL compares each
/// variant.
pub const MAX_VARIANTS: usize = 16;

/// Most shards: beyond this, the lock is no longer where requests wait.
const MAX_SHARDS: usize = 16;

/// Each shard holds at least this many largest entries, so that one large
/// entry does not empty a shard.
const ENTRIES_PER_SHARD: usize = 4;

const NIL: usize = usize::MAX;

/// What the store keeps.
pub trait Stored {
    /// The primary key.
    fn key(&self) -> &Arc<str>;
    /// The bytes it is counted as.
    fn size(&self) -> usize;
    /// Whether `newer` answers the same requests as `self` (same primary
    /// key and secondary key): storing `newer` replaces `self`.
    fn same_variant(&self, newer: &Self) -> bool;
}

/// A bounded LRU of `T`s.
#[derive(Debug)]
pub struct Store<T> {
    shards: Box<[Mutex<Shard<T>>]>,
    shard_budget: usize,
    /// Picks the shard with random keys, so a client cannot aim its URLs
    /// at one shard.
    pick: RandomState,
    bytes: AtomicUsize,
    entries: AtomicUsize,
    evictions: AtomicU64,
}

#[derive(Debug)]
struct Shard<T> {
    keys: HashMap<Arc<str>, Vec<usize>>,
    slots: Vec<Slot<T>>,
    free: Vec<usize>,
    /// Most recently used.
    head: usize,
    /// Least recently used: evicted first.
    tail: usize,
    bytes: usize,
    len: usize,
    /// Incremented on every use; a slot's `used` orders its key's variants.
    tick: u64,
}

#[derive(Debug)]
struct Slot<T> {
    entry: Option<Arc<T>>,
    prev: usize,
    next: usize,
    used: u64,
}

impl<T: Stored> Store<T> {
    /// A store of at most `max_bytes` holding entries of up to
    /// `max_entry_bytes` (`max_entry_bytes <= max_bytes`).
    pub fn new(max_bytes: usize, max_entry_bytes: usize) -> Store<T> {
        let per_shard = max_entry_bytes.max(1).saturating_mul(ENTRIES_PER_SHARD);
        let shards = (max_bytes / per_shard).clamp(1, MAX_SHARDS);
        // A power of two at most `shards`: budgets stay at least
        // `per_shard`.
        let shards = if shards.is_power_of_two() {
            shards
        } else {
            shards.next_power_of_two() / 2
        };
        Store {
            shards: (0..shards).map(|_| Mutex::new(Shard::new())).collect(),
            shard_budget: max_bytes / shards,
            pick: RandomState::new(),
            bytes: AtomicUsize::new(0),
            entries: AtomicUsize::new(0),
            evictions: AtomicU64::new(0),
        }
    }

    fn shard(&self, key: &str) -> std::sync::MutexGuard<'_, Shard<T>> {
        let index = (self.pick.hash_one(key) as usize) % self.shards.len();
        // A panic under the lock leaves the lists consistent (no step
        // between unlink and relink can panic), so a poisoned shard is
        // still usable.
        self.shards[index]
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// The newest variant of `key` that `select` accepts, marked as used.
    pub fn get(&self, key: &str, mut select: impl FnMut(&T) -> bool) -> Option<Arc<T>> {
        let mut shard = self.shard(key);
        let index = *shard
            .keys
            .get(key)?
            .iter()
            .rev()
            .find(|&&i| shard.slots[i].entry.as_deref().is_some_and(&mut select))?;
        shard.touch(index);
        shard.slots[index].entry.clone()
    }

    /// Stores `entry`, replacing the variant it supersedes and evicting the
    /// least recently used entries until it fits. False when it can never
    /// fit (larger than a shard).
    pub fn insert(&self, entry: Arc<T>) -> bool {
        let size = entry.size();
        if size > self.shard_budget {
            return false;
        }
        // Dropped after the lock: freeing a large body takes a while.
        let mut dropped: Vec<Arc<T>> = Vec::new();
        let mut evicted = 0;
        {
            let mut shard = self.shard(entry.key());
            let (bytes, len) = (shard.bytes, shard.len);
            if let Some(variants) = shard.keys.get(entry.key()) {
                let replaced = variants.iter().copied().find(|&i| {
                    shard.slots[i]
                        .entry
                        .as_deref()
                        .is_some_and(|old| old.same_variant(&entry))
                });
                let oldest = (variants.len() >= MAX_VARIANTS)
                    .then(|| {
                        variants
                            .iter()
                            .copied()
                            .min_by_key(|&i| shard.slots[i].used)
                    })
                    .flatten();
                if let Some(i) = replaced {
                    dropped.extend(shard.remove(i));
                } else if let Some(i) = oldest {
                    dropped.extend(shard.remove(i));
                    evicted += 1;
                }
            }
            while shard.bytes + size > self.shard_budget {
                let tail = shard.tail;
                if tail == NIL {
                    break;
                }
                dropped.extend(shard.remove(tail));
                evicted += 1;
            }
            shard.add(entry, size);
            self.account(bytes, len, &shard);
        }
        self.evictions.fetch_add(evicted, Ordering::Relaxed);
        drop(dropped);
        true
    }

    /// Removes `entry` itself (not another variant of its key); false when
    /// it is no longer stored.
    pub fn remove(&self, entry: &Arc<T>) -> bool {
        let removed = {
            let mut shard = self.shard(entry.key());
            let (bytes, len) = (shard.bytes, shard.len);
            let index = shard.keys.get(entry.key()).and_then(|variants| {
                variants.iter().copied().find(|&i| {
                    shard.slots[i]
                        .entry
                        .as_ref()
                        .is_some_and(|e| Arc::ptr_eq(e, entry))
                })
            });
            let removed = index.and_then(|i| shard.remove(i));
            self.account(bytes, len, &shard);
            removed
        };
        removed.is_some()
    }

    /// Removes every variant of `key`; how many there were.
    pub fn remove_key(&self, key: &str) -> usize {
        let removed: Vec<Arc<T>> = {
            let mut shard = self.shard(key);
            let (bytes, len) = (shard.bytes, shard.len);
            let variants = shard.keys.get(key).cloned().unwrap_or_default();
            let removed = variants
                .into_iter()
                .filter_map(|i| shard.remove(i))
                .collect();
            self.account(bytes, len, &shard);
            removed
        };
        removed.len()
    }

    /// Brings the totals along with one shard's change.
    fn account(&self, bytes_before: usize, len_before: usize, shard: &Shard<T>) {
        adjust(&self.bytes, bytes_before, shard.bytes);
        adjust(&self.entries, len_before, shard.len);
    }

    pub fn bytes(&self) -> usize {
        self.bytes.load(Ordering::Relaxed)
    }

    pub fn entries(&self) -> usize {
        self.entries.load(Ordering::Relaxed)
    }

    pub fn evictions(&self) -> u64 {
        self.evictions.load(Ordering::Relaxed)
    }

    /// The budget of each shard, the largest entry that can be stored.
    #[cfg(test)]
    pub fn shard_budget(&self) -> usize {
        self.shard_budget
    }

    #[cfg(test)]
    pub fn shard_count(&self) -> usize {
        self.shards.len()
    }
}

fn adjust(total: &AtomicUsize, before: usize, after: usize) {
    if after > before {
        total.fetch_add(after - before, Ordering::Relaxed);
    } else {
        total.fetch_sub(before - after, Ordering::Relaxed);
    }
}

impl<T: Stored> Shard<T> {
    fn new() -> Shard<T> {
        Shard {
            keys: HashMap::new(),
            slots: Vec::new(),
            free: Vec::new(),
            head: NIL,
            tail: NIL,
            bytes: 0,
            len: 0,
            tick: 0,
        }
    }

    fn add(&mut self, entry: Arc<T>, size: usize) {
        let key = entry.key().clone();
        let slot = Slot {
            entry: Some(entry),
            prev: NIL,
            next: NIL,
            used: 0,
        };
        let index = match self.free.pop() {
            Some(i) => {
                self.slots[i] = slot;
                i
            }
            None => {
                self.slots.push(slot);
                self.slots.len() - 1
            }
        };
        self.link_front(index);
        self.keys.entry(key).or_default().push(index);
        self.bytes += size;
        self.len += 1;
    }

    fn remove(&mut self, index: usize) -> Option<Arc<T>> {
        let entry = self.slots[index].entry.take()?;
        self.unlink(index);
        if let Some(variants) = self.keys.get_mut(entry.key()) {
            variants.retain(|&i| i != index);
            if variants.is_empty() {
                self.keys.remove(entry.key());
            }
        }
        self.free.push(index);
        self.bytes -= entry.size();
        self.len -= 1;
        Some(entry)
    }

    fn touch(&mut self, index: usize) {
        self.unlink(index);
        self.link_front(index);
    }

    fn link_front(&mut self, index: usize) {
        self.tick += 1;
        let old_head = self.head;
        let slot = &mut self.slots[index];
        slot.prev = NIL;
        slot.next = old_head;
        slot.used = self.tick;
        if old_head != NIL {
            self.slots[old_head].prev = index;
        } else {
            self.tail = index;
        }
        self.head = index;
    }

    fn unlink(&mut self, index: usize) {
        let (prev, next) = (self.slots[index].prev, self.slots[index].next);
        if prev != NIL {
            self.slots[prev].next = next;
        } else {
            self.head = next;
        }
        if next != NIL {
            self.slots[next].prev = prev;
        } else {
            self.tail = prev;
        }
        self.slots[index].prev = NIL;
        self.slots[index].next = NIL;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug)]
    struct E {
        key: Arc<str>,
        size: usize,
        variant: u32,
    }

    impl Stored for E {
        fn key(&self) -> &Arc<str> {
            &self.key
        }
        fn size(&self) -> usize {
            self.size
        }
        fn same_variant(&self, newer: &Self) -> bool {
            self.key == newer.key && self.variant == newer.variant
        }
    }

    fn e(key: &str, size: usize, variant: u32) -> Arc<E> {
        Arc::new(E {
            key: key.into(),
            size,
            variant,
        })
    }

    fn any(_: &E) -> bool {
        true
    }

    #[test]
    fn shards_keep_room_for_several_largest_entries() {
        let s = Store::<E>::new(64 << 20, 1 << 20);
        assert_eq!(s.shard_count(), 16);
        assert_eq!(s.shard_budget(), 4 << 20);
        let s = Store::<E>::new(10 << 20, 1 << 20);
        assert_eq!(s.shard_count(), 2);
        let s = Store::<E>::new(1 << 20, 1 << 20);
        assert_eq!(s.shard_count(), 1);
        assert_eq!(s.shard_budget(), 1 << 20);
    }

    #[test]
    fn least_recently_used_goes_first() {
        let s = Store::new(300, 100);
        assert_eq!(s.shard_count(), 1);
        for k in ["a", "b", "c"] {
            assert!(s.insert(e(k, 100, 0)));
        }
        assert!(s.get("a", any).is_some()); // b is now the oldest
        assert!(s.insert(e("d", 100, 0)));
        assert!(s.get("b", any).is_none());
        for k in ["a", "c", "d"] {
            assert!(s.get(k, any).is_some(), "{k}");
        }
        assert_eq!((s.bytes(), s.entries(), s.evictions()), (300, 3, 1));
        // One large entry evicts as many as it needs.
        assert!(s.insert(e("big", 250, 0)));
        assert_eq!((s.bytes(), s.entries(), s.evictions()), (250, 1, 4));
        assert!(!s.insert(e("huge", 301, 0)));
        assert!(s.get("big", any).is_some());
    }

    #[test]
    fn a_new_variant_replaces_its_predecessor_only() {
        let s = Store::new(1000, 100);
        s.insert(e("k", 10, 1));
        s.insert(e("k", 20, 2));
        s.insert(e("k", 30, 1));
        assert_eq!((s.bytes(), s.entries(), s.evictions()), (50, 2, 0));
        let v1 = s.get("k", |x| x.variant == 1).unwrap();
        assert_eq!(v1.size, 30);
        // The newest variant that matches is chosen.
        assert_eq!(s.get("k", any).unwrap().size, 30);
    }

    #[test]
    fn variants_per_key_are_bounded() {
        let s = Store::new(1 << 20, 1000);
        for v in 0..(MAX_VARIANTS as u32 * 4) {
            s.insert(e("k", 10, v));
            // Variant 0 stays in use, so it is never the one evicted.
            assert!(s.get("k", |x| x.variant == 0).is_some());
        }
        assert_eq!(s.entries(), MAX_VARIANTS);
        assert_eq!(s.evictions(), (MAX_VARIANTS * 3) as u64);
    }

    #[test]
    fn removal_by_identity_and_by_key() {
        let s = Store::new(1000, 1000);
        assert_eq!(s.shard_count(), 1);
        let a = e("k", 10, 1);
        s.insert(a.clone());
        s.insert(e("k", 10, 2));
        s.insert(e("other", 10, 0));
        let stranger = e("k", 10, 1);
        assert!(!s.remove(&stranger));
        assert!(s.remove(&a));
        assert!(!s.remove(&a));
        assert_eq!(s.entries(), 2);
        assert_eq!(s.remove_key("k"), 1);
        assert_eq!(s.remove_key("k"), 0);
        assert_eq!((s.bytes(), s.entries()), (10, 1));
        // Freed slots are reused and the list stays whole.
        for i in 0..99 {
            s.insert(e(&format!("n{i}"), 10, 0));
        }
        assert_eq!((s.bytes(), s.entries(), s.evictions()), (1000, 100, 0));
        s.insert(e("last", 10, 0));
        assert_eq!((s.bytes(), s.entries(), s.evictions()), (1000, 100, 1));
        assert!(s.get("other", any).is_none());
        assert!(s.get("n0", any).is_some());
    }
}
