//! Which backend of a rule gets a request, and which mirrors get a copy.
//! The random rolls are arguments, so the shares are tested exactly.

use crate::core::directory::routes::{Backend, Filter, Mirror, RouteRule};

/// The sum of the rule's backend weights: roll `0..total_weight` for
/// [`pick_backend`]. Saturates rather than overflows (validation keeps
/// weights far below that: at most 1,000,000 each, 16 backends).
pub fn total_weight(rule: &RouteRule) -> u32 {
    rule.backends
        .iter()
        .fold(0u32, |sum, b| sum.saturating_add(b.weight))
}

/// The backend that roll `roll` (`0..total_weight(rule)`) falls on, each
/// backend owning a run of rolls as long as its weight. A weight of 0
/// never gets a request. None when no backend has weight: the spec has
/// the caller answer 500, as for a rule whose backends are all invalid.
///
/// A roll beyond the total wraps around instead of failing.
pub fn pick_backend(rule: &RouteRule, roll: u32) -> Option<&Backend> {
    let total = total_weight(rule);
    if total == 0 {
        return None;
    }
    let mut left = roll % total;
    for backend in &rule.backends {
        if left < backend.weight {
            return Some(backend);
        }
        left -= backend.weight;
    }
    // Not reached: the roll is below the total, which (saturated or not)
    // is at most the sum of the weights walked above.
    None
}

/// The mirrors among `filters` that copy this request: each mirrors
/// `percent` of requests, those whose `roll` (`0..100`) is below it. One
/// roll serves every mirror, so a request mirrored at 10% is also mirrored
/// wherever the percentage is higher.
pub fn mirror_targets(filters: &[Filter], roll: u32) -> Vec<&Mirror> {
    let roll = roll % 100;
    filters
        .iter()
        .filter_map(|f| match f {
            Filter::RequestMirror(m) if roll < m.percent => Some(m),
            _ => None,
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use rand::{Rng, SeedableRng};

    use super::*;

    fn rule(weights: &[u32]) -> RouteRule {
        RouteRule {
            backends: weights
                .iter()
                .enumerate()
                .map(|(i, w)| Backend {
                    service_key: format!("b{i}.shop"),
                    port: None,
                    weight: *w,
                    filters: vec![],
                })
                .collect(),
            ..RouteRule::default()
        }
    }

    fn picked(rule: &RouteRule, roll: u32) -> Option<&str> {
        pick_backend(rule, roll).map(|b| b.service_key.as_str())
    }

    #[test]
    fn rolls_fall_on_runs_as_long_as_the_weights() {
        let r = rule(&[2, 0, 3]);
        assert_eq!(total_weight(&r), 5);
        let got: Vec<_> = (0..6).map(|roll| picked(&r, roll)).collect();
        let (b0, b2) = (Some("b0.shop"), Some("b2.shop"));
        assert_eq!(got, [b0, b0, b2, b2, b2, b0]);
        assert_eq!(picked(&rule(&[0, 1]), 0), Some("b1.shop"));
        assert_eq!(picked(&rule(&[1]), u32::MAX), Some("b0.shop"));
    }

    #[test]
    fn no_weight_no_backend() {
        assert_eq!(picked(&rule(&[]), 0), None);
        assert_eq!(picked(&rule(&[0, 0]), 0), None);
    }

    #[test]
    fn saturated_totals_do_not_panic() {
        let r = rule(&[u32::MAX, u32::MAX, 0]);
        assert_eq!(total_weight(&r), u32::MAX);
        assert_eq!(picked(&r, u32::MAX - 1), Some("b0.shop"));
    }

    #[test]
    fn ninety_ten_split_is_within_two_percent() {
        let r = rule(&[90, 10]);
        let mut rng = rand::rngs::StdRng::seed_from_u64(7);
        let n = 10_000;
        let first = (0..n)
            .filter(|_| picked(&r, rng.gen_range(0..total_weight(&r))) == Some("b0.shop"))
            .count();
        let share = first as f64 / n as f64;
        assert!((0.88..=0.92).contains(&share), "share {share}");
    }

    #[test]
    fn mirrors_by_percent() {
        let mirror = |key: &str, percent| {
            Filter::RequestMirror(Mirror {
                service_key: key.into(),
                port: None,
                percent,
            })
        };
        let filters = vec![
            mirror("all.shop", 100),
            Filter::UrlRewrite(crate::core::directory::routes::UrlRewrite {
                hostname: None,
                path: None,
            }),
            mirror("tenth.shop", 10),
            mirror("none.shop", 0),
        ];
        let keys = |roll| {
            mirror_targets(&filters, roll)
                .into_iter()
                .map(|m| m.service_key.as_str())
                .collect::<Vec<_>>()
        };
        assert_eq!(keys(0), ["all.shop", "tenth.shop"]);
        assert_eq!(keys(9), ["all.shop", "tenth.shop"]);
        assert_eq!(keys(10), ["all.shop"]);
        assert_eq!(keys(99), ["all.shop"]);
        assert_eq!(keys(100), ["all.shop", "tenth.shop"]);
        assert!(mirror_targets(&[], 0).is_empty());
    }
}
