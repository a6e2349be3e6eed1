//! Maglev consistent hashing (Eisenbud et al., NSDI 2016): a lookup table
//! of prime size that endpoints fill in turns, each taking the next free
//! slot of its own permutation. Lookups are one index; balance is near
//! perfect; removing an endpoint moves little more than its own keys.

use std::net::SocketAddr;

use super::hash::endpoint_hash;

/// Table size while it is at least 100 times the endpoints (the paper's
/// advice for balance); larger services get the next prime above that.
const SIZE: u64 = 65_537;

#[derive(Debug)]
pub(super) struct Maglev {
    /// Slot → index of the endpoint in the list the table was built from.
    table: Vec<u32>,
}

impl Maglev {
    /// `endpoints`: (address, weight ≥ 1) in the service's list order.
    pub(super) fn build(endpoints: &[(SocketAddr, u32)]) -> Self {
        if endpoints.is_empty() {
            return Self { table: Vec::new() };
        }
        let m = table_size(endpoints.len());
        // Offsets and skips come from the address, not the list position,
        // so every proxy builds the same table from the same set.
        let perms: Vec<(u64, u64)> = endpoints
            .iter()
            .map(|&(a, _)| (endpoint_hash(a, 1) % m, endpoint_hash(a, 2) % (m - 1) + 1))
            .collect();
        let max_w = endpoints.iter().map(|&(_, w)| w.max(1)).max().unwrap_or(1);
        let mut table = vec![u32::MAX; m as usize];
        let mut next = vec![0u64; endpoints.len()];
        // Weighted fill: the heaviest endpoint takes a slot every round,
        // lighter ones as their accumulated credit reaches a slot.
        let mut credit = vec![0.0f64; endpoints.len()];
        // Turns go in address order, which breaks ties between endpoints
        // wanting the same slot: the list order must not matter.
        let mut order: Vec<usize> = (0..endpoints.len()).collect();
        order.sort_by_key(|&i| endpoints[i].0);
        let mut filled = 0u64;
        while filled < m {
            for &i in &order {
                let w = endpoints[i].1;
                credit[i] += f64::from(w.max(1)) / f64::from(max_w);
                while credit[i] >= 1.0 && filled < m {
                    credit[i] -= 1.0;
                    let (offset, skip) = perms[i];
                    // The permutation visits every slot (skip and m are
                    // coprime as m is prime), so a free one is found.
                    loop {
                        let slot = ((offset + next[i] * skip) % m) as usize;
                        next[i] += 1;
                        if table[slot] == u32::MAX {
                            table[slot] = i as u32;
                            filled += 1;
                            break;
                        }
                    }
                }
            }
        }
        Self { table }
    }

    /// The endpoint at `hash`'s slot, or when `accept` refuses it, the one
    /// of the next slot accepted: a key whose endpoint is down always
    /// fails over to the same other endpoint.
    pub(super) fn lookup(&self, hash: u64, accept: impl Fn(usize) -> bool) -> Option<usize> {
        let m = self.table.len() as u64;
        if m == 0 {
            return None;
        }
        let start = (hash % m) as usize;
        let (before, after) = self.table.split_at(start);
        after
            .iter()
            .chain(before)
            .map(|&i| i as usize)
            .find(|&i| accept(i))
    }
}

fn table_size(endpoints: usize) -> u64 {
    let want = (endpoints as u64).saturating_mul(100);
    if want <= SIZE {
        return SIZE;
    }
    (want..).find(|&n| is_prime(n)).unwrap_or(SIZE)
}

fn is_prime(n: u64) -> bool {
    n >= 2
        && (2..)
            .take_while(|d| d * d <= n)
            .all(|d| !n.is_multiple_of(d))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::outbound::balance::hash::hash;

    fn addrs(n: u16) -> Vec<(SocketAddr, u32)> {
        (1..=n)
            .map(|k| (SocketAddr::from(([10, 0, 1, k as u8], 15001)), 1))
            .collect()
    }

    fn owners(t: &Maglev, eps: &[(SocketAddr, u32)], keys: u32) -> Vec<SocketAddr> {
        (0..keys)
            .map(|k| eps[t.lookup(hash(&[&k.to_be_bytes()]), |_| true).unwrap()].0)
            .collect()
    }

    #[test]
    fn sizes_are_prime_and_large_enough() {
        for (n, want) in [(1, 65_537), (655, 65_537), (656, 65_609), (1000, 100_003)] {
            let m = table_size(n);
            assert_eq!(m, want, "{n} endpoints");
            assert!(is_prime(m));
        }
    }

    #[test]
    fn slots_are_shared_by_weight() {
        let mut eps = addrs(4);
        eps[0].1 = 3;
        let t = Maglev::build(&eps);
        assert!(t.table.iter().all(|&i| (i as usize) < eps.len()));
        let share =
            |e: u32| t.table.iter().filter(|&&i| i == e).count() as f64 / t.table.len() as f64;
        assert!((share(0) - 0.5).abs() < 0.01, "{}", share(0));
        for e in 1..4 {
            assert!((share(e) - 1.0 / 6.0).abs() < 0.01, "{e}: {}", share(e));
        }
    }

    #[test]
    fn removing_one_of_ten_remaps_few_keys() {
        let eps = addrs(10);
        let before = owners(&Maglev::build(&eps), &eps, 10_000);
        let fewer: Vec<_> = eps
            .iter()
            .copied()
            .filter(|&(a, _)| a != eps[6].0)
            .collect();
        let after = owners(&Maglev::build(&fewer), &fewer, 10_000);
        let moved = before.iter().zip(&after).filter(|(a, b)| a != b).count();
        assert!(moved <= 1_500, "{moved} of 10000 keys moved");
        for &(a, _) in &eps {
            let n = before.iter().filter(|&&o| o == a).count();
            assert!((850..=1150).contains(&n), "{a}: {n}");
        }
    }

    #[test]
    fn the_list_order_does_not_matter() {
        let eps = addrs(10);
        let mut rev = eps.clone();
        rev.reverse();
        assert_eq!(
            owners(&Maglev::build(&eps), &eps, 2000),
            owners(&Maglev::build(&rev), &rev, 2000)
        );
    }

    #[test]
    fn refused_owner_fails_over_to_the_same_next_one() {
        let eps = addrs(5);
        let t = Maglev::build(&eps);
        for k in 0..200u32 {
            let h = hash(&[&k.to_be_bytes()]);
            let owner = t.lookup(h, |_| true).unwrap();
            let next = t.lookup(h, |i| i != owner).unwrap();
            assert_ne!(next, owner);
            assert_eq!(t.lookup(h, |i| i != owner), Some(next));
        }
        assert_eq!(Maglev::build(&[]).lookup(1, |_| true), None);
    }
}
