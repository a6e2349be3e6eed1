//! Consistent hashing on a ring of virtual nodes (Karger et al.).
//!
//! Each endpoint owns points on a 64-bit ring, as many as its share of the
//! weight; a key goes to the owner of the first point at or after its
//! hash. Removing an endpoint moves only the keys it owned.

use std::net::SocketAddr;

use super::hash::endpoint_hash;

/// Bound on the ring whatever a policy asks: 16 bytes a point, so 16 MiB.
pub(super) const MAX_RING_SIZE: u32 = 1 << 20;

#[derive(Debug)]
pub(super) struct Ring {
    /// (point, index of the endpoint in the list the ring was built from),
    /// sorted by point.
    points: Vec<(u64, u32)>,
    per_weight: u32,
}

impl Ring {
    /// `endpoints`: (address, weight ≥ 1) in the service's list order.
    /// `previous`: [`Ring::per_weight`] of the ring this one replaces.
    pub(super) fn build(
        endpoints: &[(SocketAddr, u32)],
        min_size: u32,
        previous: Option<u32>,
    ) -> Self {
        let total_weight: u64 = endpoints
            .iter()
            .map(|&(_, w)| u64::from(w))
            .sum::<u64>()
            .max(1);
        let per_weight = points_per_weight(total_weight, min_size, previous);
        let max = u64::from(MAX_RING_SIZE);
        let mut points = Vec::new();
        for (i, &(addr, w)) in endpoints.iter().enumerate() {
            let w = u64::from(w);
            // The second term only binds for weights summing beyond the
            // ring's bound: then points are shared out by weight instead.
            let n = (u64::from(per_weight) * w)
                .min(w * max / total_weight)
                .max(1) as u32;
            points.extend((0..n).map(|k| (endpoint_hash(addr, k), i as u32)));
        }
        points.sort_unstable();
        Self { points, per_weight }
    }

    /// Points per unit of weight.
    pub(super) fn per_weight(&self) -> u32 {
        self.per_weight
    }

    #[cfg(test)]
    pub(super) fn len(&self) -> usize {
        self.points.len()
    }

    /// The endpoint owning `hash`, or when `accept` refuses it, the next
    /// accepted one along the ring: a key whose endpoint is down always
    /// fails over to the same other endpoint.
    pub(super) fn lookup(&self, hash: u64, accept: impl Fn(usize) -> bool) -> Option<usize> {
        let start = self.points.partition_point(|&(p, _)| p < hash);
        let (after, before) = self.points.split_at(start);
        before
            .iter()
            .chain(after)
            .map(|&(_, i)| i as usize)
            .find(|&i| accept(i))
    }
}

/// Points per unit of weight. An endpoint's points depend on this and its
/// own weight only, so while it stays the same a change of the endpoint
/// set moves only the keys of the endpoints that left or came. It is kept
/// while the ring is between `min_size` and four times that; a new value
/// is twice the least, so the set can halve or double before it changes.
fn points_per_weight(total_weight: u64, min_size: u32, previous: Option<u32>) -> u32 {
    let needed = u64::from(min_size.clamp(1, MAX_RING_SIZE)).div_ceil(total_weight);
    let cap = (u64::from(MAX_RING_SIZE) / total_weight).max(1);
    let p = match previous.map(u64::from) {
        Some(p) if p >= needed && p <= 4 * needed && p <= cap => p,
        _ => (2 * needed).min(cap),
    };
    p.max(1) as u32
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::outbound::balance::hash::hash;

    fn addrs(n: u16) -> Vec<(SocketAddr, u32)> {
        (1..=n)
            .map(|k| (SocketAddr::from(([10, 0, 0, k as u8], 15001)), 1))
            .collect()
    }

    fn owners(ring: &Ring, eps: &[(SocketAddr, u32)], keys: u32) -> Vec<SocketAddr> {
        (0..keys)
            .map(|k| eps[ring.lookup(hash(&[&k.to_be_bytes()]), |_| true).unwrap()].0)
            .collect()
    }

    #[test]
    fn size_and_weights() {
        let mut eps = addrs(4);
        eps[0].1 = 3;
        let cases = [(1024, 2052), (1, 12), (0, 12), (u32::MAX, 1_048_572)];
        for (min, want) in cases {
            assert_eq!(Ring::build(&eps, min, None).len(), want, "min {min}");
        }
        let ring = Ring::build(&eps, 1024, None);
        let heavy = ring.points.iter().filter(|&&(_, i)| i == 0).count();
        assert_eq!(heavy * 2, ring.len());
        // Weights beyond the bound are shared out, every endpoint kept.
        let huge = [(eps[0].0, u32::MAX), (eps[1].0, u32::MAX), (eps[2].0, 1)];
        let ring = Ring::build(&huge, 1024, None);
        assert!(ring.len() <= MAX_RING_SIZE as usize + 1, "{}", ring.len());
        assert_eq!(ring.points.iter().filter(|&&(_, i)| i == 2).count(), 1);
    }

    #[test]
    fn points_per_weight_holds_while_the_set_changes_little() {
        // (total weight, min size, previous, want)
        let cases = [
            (10, 1024, None, 206),
            (9, 1024, Some(206), 206),
            (5, 1024, Some(206), 206),
            (4, 1024, Some(206), 512),
            (20, 1024, Some(206), 206),
            (30, 1024, Some(206), 70),
            (10, 4096, Some(206), 820),
            (1, 0, None, 2),
            (1 << 21, 1024, None, 1),
            (1 << 21, 1024, Some(9), 1),
        ];
        for (total, min, previous, want) in cases {
            assert_eq!(
                points_per_weight(total, min, previous),
                want,
                "{total} {min} {previous:?}"
            );
        }
    }

    #[test]
    fn removing_one_of_ten_remaps_few_keys() {
        let eps = addrs(10);
        let ring = Ring::build(&eps, 1024, None);
        let before = owners(&ring, &eps, 10_000);
        let fewer: Vec<_> = eps
            .iter()
            .copied()
            .filter(|&(a, _)| a != eps[3].0)
            .collect();
        let after = owners(
            &Ring::build(&fewer, 1024, Some(ring.per_weight())),
            &fewer,
            10_000,
        );
        let moved = before.iter().zip(&after).filter(|(a, b)| a != b).count();
        assert!(moved <= 1_500, "{moved} of 10000 keys moved");
        // Only the removed endpoint's keys move.
        for (a, b) in before.iter().zip(&after) {
            assert!(a == b || *a == eps[3].0);
        }
        // And the keys are spread: every endpoint within ±40% of a tenth.
        for &(a, _) in &eps {
            let n = before.iter().filter(|&&o| o == a).count();
            assert!((600..=1400).contains(&n), "{a}: {n}");
        }
    }

    #[test]
    fn the_list_order_does_not_matter() {
        let eps = addrs(10);
        let mut shuffled = eps.clone();
        shuffled.reverse();
        assert_eq!(
            owners(&Ring::build(&eps, 1024, None), &eps, 2000),
            owners(&Ring::build(&shuffled, 1024, None), &shuffled, 2000)
        );
    }

    #[test]
    fn refused_owner_fails_over_to_the_same_next_one() {
        let eps = addrs(5);
        let ring = Ring::build(&eps, 1024, None);
        for k in 0..200u32 {
            let h = hash(&[&k.to_be_bytes()]);
            let owner = ring.lookup(h, |_| true).unwrap();
            let next = ring.lookup(h, |i| i != owner).unwrap();
            assert_ne!(next, owner);
            assert_eq!(ring.lookup(h, |i| i != owner), Some(next));
        }
        assert_eq!(ring.lookup(7, |_| false), None);
        assert_eq!(Ring::build(&[], 1024, None).lookup(7, |_| true), None);
    }
}
