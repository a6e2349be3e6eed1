//! Quantiles from cumulative histogram buckets, the way Prometheus'
//! `histogram_quantile` estimates them: linear interpolation inside the
//! bucket the rank falls in, assuming requests spread evenly across it.

/// `q` (0..=1) of a histogram given as `(upper bound, cumulative count)`
/// pairs sorted by bound, the last one `+Inf`. `None` when the histogram
/// holds no observations, lacks its `+Inf` bucket or `q` is out of range.
pub fn quantile(q: f64, buckets: &[(f64, f64)]) -> Option<f64> {
    if !(0.0..=1.0).contains(&q) {
        return None;
    }
    let &(last_le, total) = buckets.last()?;
    if last_le != f64::INFINITY || total.is_nan() || total <= 0.0 {
        return None;
    }
    let rank = q * total;
    // Counts are meant to be cumulative; a scrape taken mid-update can
    // break that, so each count is clamped to at least the one before.
    let mut prev_le = 0.0_f64;
    let mut prev_count = 0.0_f64;
    for (i, &(le, count)) in buckets.iter().enumerate() {
        let count = count.max(prev_count);
        if count >= rank && count > prev_count {
            if le == f64::INFINITY {
                // Nothing is known above the highest finite bound.
                return Some(prev_le);
            }
            if i == 0 && le <= 0.0 {
                return Some(le);
            }
            let start = if i == 0 { 0.0_f64.min(le) } else { prev_le };
            return Some(start + (le - start) * (rank - prev_count) / (count - prev_count));
        }
        prev_le = le;
        prev_count = count;
    }
    Some(prev_le)
}

#[cfg(test)]
mod tests {
    use super::*;

    const INF: f64 = f64::INFINITY;

    #[test]
    fn interpolates_inside_the_bucket() {
        // 10 in (0, 0.1], 10 in (0.1, 0.2], none above.
        let b = [(0.1, 10.0), (0.2, 20.0), (INF, 20.0)];
        assert_eq!(quantile(0.5, &b), Some(0.1));
        assert!((quantile(0.75, &b).unwrap() - 0.15).abs() < 1e-12);
        assert!((quantile(0.25, &b).unwrap() - 0.05).abs() < 1e-12);
        assert!((quantile(0.99, &b).unwrap() - 0.198).abs() < 1e-12);
        assert_eq!(quantile(1.0, &b), Some(0.2));
    }

    #[test]
    fn rank_in_the_inf_bucket_is_the_highest_bound() {
        let b = [(0.1, 1.0), (1.0, 2.0), (INF, 10.0)];
        assert_eq!(quantile(0.99, &b), Some(1.0));
    }

    #[test]
    fn empty_bad_or_non_monotonic() {
        assert_eq!(quantile(0.5, &[]), None);
        assert_eq!(quantile(0.5, &[(0.1, 0.0), (INF, 0.0)]), None);
        assert_eq!(quantile(0.5, &[(0.1, 3.0)]), None, "no +Inf bucket");
        assert_eq!(quantile(1.5, &[(INF, 3.0)]), None);
        // A dip (mid-update scrape) is clamped, not a negative width.
        let b = [(0.1, 4.0), (0.2, 3.0), (0.4, 8.0), (INF, 8.0)];
        assert!((quantile(0.75, &b).unwrap() - 0.3).abs() < 1e-12);
    }
}
