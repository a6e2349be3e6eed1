//! Smooth weighted round-robin: each pick adds every candidate's weight to
//! its running score, takes the highest and charges it the total. Shares
//! follow the weights exactly over a cycle and a heavy endpoint's turns are
//! spread out rather than bunched.

/// The next of `candidates` (indices into `current`, one running score per
/// endpoint), `weights` aligned with `candidates`.
pub(super) fn next(candidates: &[usize], weights: &[f64], current: &mut [f64]) -> Option<usize> {
    let mut total = 0.0;
    let mut best: Option<(usize, f64)> = None;
    for (&i, &w) in candidates.iter().zip(weights) {
        let Some(score) = current.get_mut(i) else {
            continue;
        };
        *score += w;
        total += w;
        if best.is_none_or(|(_, b)| *score > b) {
            best = Some((i, *score));
        }
    }
    let (i, _) = best?;
    if let Some(score) = current.get_mut(i) {
        *score -= total;
    }
    Some(i)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sequences() {
        let cases: Vec<(&[usize], &[f64], Vec<usize>)> = vec![
            (&[0, 1, 2], &[1.0, 1.0, 1.0], vec![0, 1, 2, 0, 1, 2]),
            // 5:1:1 spread out, not five in a row.
            (&[0, 1, 2], &[5.0, 1.0, 1.0], vec![0, 0, 1, 0, 2, 0, 0]),
            (&[2], &[1.0], vec![2, 2]),
            (&[], &[], vec![]),
        ];
        for (cands, weights, want) in cases {
            let mut current = vec![0.0; 3];
            let got: Vec<usize> = (0..want.len())
                .filter_map(|_| next(cands, weights, &mut current))
                .collect();
            assert_eq!(got, want, "weights {weights:?}");
        }
    }

    #[test]
    fn fractional_weights_give_proportional_shares() {
        let mut current = vec![0.0; 2];
        let mut counts = [0u32; 2];
        for _ in 0..1100 {
            counts[next(&[0, 1], &[1.0, 0.1], &mut current).unwrap()] += 1;
        }
        assert_eq!(counts, [1000, 100]);
    }
}
