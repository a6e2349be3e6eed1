//! Power of two choices: sample two distinct candidates at random and keep
//! the cheaper. Nearly as good as scanning for the cheapest, without
//! herding every caller onto the same momentarily cheapest endpoint.

use rand::Rng;

/// One of `candidates` (indices into the service's endpoints): the cheaper
/// of two distinct random ones by `cost`.
pub(super) fn pick<R: Rng>(
    rng: &mut R,
    candidates: &[usize],
    cost: impl Fn(usize) -> f64,
) -> Option<usize> {
    match *candidates {
        [] => None,
        [only] => Some(only),
        _ => {
            let n = candidates.len();
            let a = rng.gen_range(0..n);
            let mut b = rng.gen_range(0..n - 1);
            if b >= a {
                b += 1;
            }
            let (a, b) = (candidates[a], candidates[b]);
            Some(if cost(b) < cost(a) { b } else { a })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::rngs::StdRng;
    use rand::SeedableRng;

    #[test]
    fn picks() {
        let mut rng = StdRng::seed_from_u64(1);
        assert_eq!(pick(&mut rng, &[], |_| 0.0), None);
        assert_eq!(pick(&mut rng, &[7], |_| 0.0), Some(7));
        // Two candidates are always both sampled: the cheaper always wins.
        for _ in 0..100 {
            assert_eq!(pick(&mut rng, &[3, 9], |i| i as f64), Some(3));
        }
    }

    #[test]
    fn the_most_expensive_of_many_is_never_picked() {
        let mut rng = StdRng::seed_from_u64(2);
        let cands = [0, 1, 2, 3];
        let mut counts = [0u32; 4];
        for _ in 0..4000 {
            let i = pick(&mut rng, &cands, |i| i as f64).unwrap();
            counts[i] += 1;
        }
        // Cheapest wins every pair it is in: 3 of 6 pairs; the costliest none.
        assert_eq!(counts[3], 0);
        assert!(counts[0] > 1800 && counts[0] < 2200, "{counts:?}");
    }
}
