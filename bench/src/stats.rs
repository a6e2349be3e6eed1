//! Latency histograms and the percentiles the reports show.
//!
//! Every latency is recorded in nanoseconds in an HDR histogram with three
//! significant digits; summaries are in microseconds so tables read well.

use std::time::Duration;

use hdrhistogram::Histogram;
use serde::{Deserialize, Serialize};

/// Longest latency a histogram holds; longer ones are clamped to it (and
/// show up as the max), so a stalled request never loses a sample.
const MAX_NS: u64 = 60_000_000_000;

/// A fresh latency histogram (nanoseconds, 3 significant digits).
pub fn histogram() -> Histogram<u64> {
    // The bounds are constants that hdrhistogram accepts; a failure here is
    // a programming error caught by the unit test below.
    Histogram::new_with_bounds(1, MAX_NS, 3).expect("constant histogram bounds are valid")
}

/// Records one latency, clamped into the histogram's range.
pub fn record(h: &mut Histogram<u64>, d: Duration) {
    let ns = u64::try_from(d.as_nanos())
        .unwrap_or(MAX_NS)
        .clamp(1, MAX_NS);
    h.saturating_record(ns);
}

/// The percentiles of one histogram, in microseconds.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Summary {
    pub count: u64,
    pub p50_us: f64,
    pub p90_us: f64,
    pub p99_us: f64,
    pub p999_us: f64,
    pub max_us: f64,
    pub mean_us: f64,
}

/// The percentiles the reports use; an empty histogram gives all zeros.
pub fn summarize(h: &Histogram<u64>) -> Summary {
    if h.is_empty() {
        return Summary::default();
    }
    let us = |ns: u64| ns as f64 / 1000.0;
    Summary {
        count: h.len(),
        p50_us: us(h.value_at_quantile(0.50)),
        p90_us: us(h.value_at_quantile(0.90)),
        p99_us: us(h.value_at_quantile(0.99)),
        p999_us: us(h.value_at_quantile(0.999)),
        max_us: us(h.max()),
        mean_us: h.mean() / 1000.0,
    }
}

/// Percentile by percentile difference `a - b` (latency added by a proxy
/// configuration over direct). Negative values are kept: they say the
/// difference is inside the noise.
pub fn added(a: &Summary, b: &Summary) -> Added {
    Added {
        p50_us: a.p50_us - b.p50_us,
        p90_us: a.p90_us - b.p90_us,
        p99_us: a.p99_us - b.p99_us,
        p999_us: a.p999_us - b.p999_us,
    }
}

/// Latency added over a baseline, microseconds.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Added {
    pub p50_us: f64,
    pub p90_us: f64,
    pub p99_us: f64,
    pub p999_us: f64,
}

/// `a / b`, or `None` when the baseline is zero.
pub fn ratio(a: f64, b: f64) -> Option<f64> {
    (b > 0.0).then(|| a / b)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_of_a_known_distribution() {
        let mut h = histogram();
        // 1..=1000 microseconds, one sample each.
        for us in 1..=1000u64 {
            record(&mut h, Duration::from_micros(us));
        }
        let s = summarize(&h);
        assert_eq!(s.count, 1000);
        // Three significant digits: within 0.1 % of the exact value.
        for (got, want) in [
            (s.p50_us, 500.0),
            (s.p90_us, 900.0),
            (s.p99_us, 990.0),
            (s.p999_us, 999.0),
            (s.max_us, 1000.0),
        ] {
            assert!(
                (got - want).abs() <= want * 0.001 + 0.001,
                "{got} vs {want}"
            );
        }
    }

    #[test]
    fn empty_histogram_is_all_zero_and_huge_values_are_clamped() {
        assert_eq!(summarize(&histogram()), Summary::default());
        let mut h = histogram();
        record(&mut h, Duration::from_secs(3600));
        record(&mut h, Duration::ZERO);
        let s = summarize(&h);
        assert_eq!(s.count, 2);
        assert!(s.max_us >= 59_000_000.0);
    }

    #[test]
    fn added_and_ratio() {
        let a = Summary {
            p50_us: 150.0,
            p90_us: 200.0,
            p99_us: 400.0,
            p999_us: 900.0,
            ..Summary::default()
        };
        let b = Summary {
            p50_us: 100.0,
            p90_us: 120.0,
            p99_us: 200.0,
            p999_us: 1000.0,
            ..Summary::default()
        };
        let d = added(&a, &b);
        assert_eq!(
            (d.p50_us, d.p90_us, d.p99_us, d.p999_us),
            (50.0, 80.0, 200.0, -100.0)
        );
        assert_eq!(ratio(3.0, 2.0), Some(1.5));
        assert_eq!(ratio(3.0, 0.0), None);
    }
}
