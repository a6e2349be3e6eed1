//! Outlier detection: the per-endpoint counters and the arithmetic of
//! ejecting. Which endpoint may be ejected right now (how many already
//! are, whether it is the last healthy one) is the service's decision, in
//! `service.rs`.

use std::time::{Duration, Instant};

use crate::core::directory::policy::{OutlierDetection, SuccessRate};

use super::{EjectReason, Outcome};

#[derive(Clone, Debug, Default)]
pub(super) struct OutlierState {
    consecutive_5xx: u32,
    consecutive_gateway: u32,
    ejected_until: Option<Instant>,
    /// Multiplier of the next ejection time: ejections in a row, less one
    /// for every `interval` spent back in service since the last.
    streak: u32,
    returned_at: Option<Instant>,
    /// Answers of the current success-rate interval.
    pub(super) successes: u32,
    pub(super) requests: u32,
}

impl OutlierState {
    pub(super) fn is_ejected(&self) -> bool {
        self.ejected_until.is_some()
    }

    /// Counts `outcome`; the reason to eject when it completes a run.
    pub(super) fn record(
        &mut self,
        outcome: Outcome,
        od: &OutlierDetection,
    ) -> Option<EjectReason> {
        let (server, gateway) = match outcome {
            Outcome::Success => (Some(false), Some(false)),
            Outcome::ServerError(code) => (Some(true), Some(matches!(code, 502..=504))),
            Outcome::ConnectFailure | Outcome::Timeout => (Some(true), Some(true)),
            // The stream broke: not an answer, so not a gateway error, but
            // nor does it end a run of them.
            Outcome::Reset => (Some(true), None),
            // Shedding load is the endpoint working as designed; ejecting it
            // would pile its load on the others.
            Outcome::Overloaded => (None, None),
        };
        bump(&mut self.consecutive_5xx, server);
        bump(&mut self.consecutive_gateway, gateway);
        if let Some(failed) = server {
            self.requests = self.requests.saturating_add(1);
            if !failed {
                self.successes = self.successes.saturating_add(1);
            }
        }
        if od.consecutive_5xx > 0 && self.consecutive_5xx >= od.consecutive_5xx {
            Some(EjectReason::Consecutive5xx)
        } else if od.consecutive_gateway_errors > 0
            && self.consecutive_gateway >= od.consecutive_gateway_errors
        {
            Some(EjectReason::ConsecutiveGatewayErrors)
        } else {
            None
        }
    }

    /// Ejects from `now`; returns for how long.
    pub(super) fn eject(&mut self, now: Instant, od: &OutlierDetection) -> Duration {
        let healthy_intervals = match (self.returned_at, od.interval.as_nanos()) {
            (Some(back), interval) if interval > 0 => {
                now.saturating_duration_since(back).as_nanos() / interval
            }
            _ => 0,
        };
        let decayed = u128::from(self.streak).saturating_sub(healthy_intervals) as u32;
        self.streak = decayed.saturating_add(1);
        let time = od
            .base_ejection_time
            .saturating_mul(self.streak)
            .min(od.max_ejection_time.max(od.base_ejection_time));
        self.ejected_until = Some(now + time);
        self.consecutive_5xx = 0;
        self.consecutive_gateway = 0;
        time
    }

    /// Returns the endpoint to service if its time is up; true if it was.
    pub(super) fn return_if_due(&mut self, now: Instant) -> bool {
        match self.ejected_until {
            Some(until) if until <= now => {
                self.lift(until);
                true
            }
            _ => false,
        }
    }

    /// Ends an ejection now (policy removed); true if there was one.
    pub(super) fn lift_now(&mut self, now: Instant) -> bool {
        let ejected = self.is_ejected();
        if ejected {
            self.lift(now);
        }
        ejected
    }

    fn lift(&mut self, at: Instant) {
        self.ejected_until = None;
        self.returned_at = Some(at);
    }

    pub(super) fn success_rate(&self) -> f64 {
        f64::from(self.successes) / f64::from(self.requests.max(1))
    }

    pub(super) fn reset_interval(&mut self) {
        self.successes = 0;
        self.requests = 0;
    }
}

fn bump(counter: &mut u32, failed: Option<bool>) {
    match failed {
        Some(true) => *counter = counter.saturating_add(1),
        Some(false) => *counter = 0,
        None => {}
    }
}

/// How many of `total` endpoints may be ejected at once.
pub(super) fn budget(total: usize, max_percent: u32) -> usize {
    let by_percent = total * max_percent.min(100) as usize / 100;
    if total >= 2 {
        by_percent.max(1)
    } else {
        by_percent
    }
}

/// Of `(endpoint, success rate, requests)`, those far enough below the
/// others to eject, worst first; none unless enough endpoints had enough
/// requests to make the comparison meaningful.
pub(super) fn success_rate_outliers(rates: &[(usize, f64, u32)], sr: &SuccessRate) -> Vec<usize> {
    let qualified: Vec<(usize, f64)> = rates
        .iter()
        .filter(|&&(_, _, n)| n >= sr.request_volume.max(1))
        .map(|&(i, r, _)| (i, r))
        .collect();
    if qualified.is_empty() || qualified.len() < sr.minimum_hosts as usize {
        return Vec::new();
    }
    let n = qualified.len() as f64;
    let mean = qualified.iter().map(|&(_, r)| r).sum::<f64>() / n;
    let var = qualified
        .iter()
        .map(|&(_, r)| (r - mean).powi(2))
        .sum::<f64>()
        / n;
    let threshold = mean - var.sqrt() * f64::from(sr.stdev_factor) / 1000.0;
    let mut out: Vec<(usize, f64)> = qualified
        .into_iter()
        .filter(|&(_, r)| r < threshold)
        .collect();
    out.sort_by(|a, b| a.1.total_cmp(&b.1));
    out.into_iter().map(|(i, _)| i).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: Duration = Duration::from_secs(1);

    fn policy() -> OutlierDetection {
        OutlierDetection {
            consecutive_5xx: 3,
            consecutive_gateway_errors: 2,
            interval: 10 * S,
            base_ejection_time: 30 * S,
            max_ejection_time: 100 * S,
            max_ejection_percent: 50,
            success_rate: None,
        }
    }

    #[test]
    fn runs_of_failures_eject() {
        use Outcome::*;
        let cases: Vec<(&str, Vec<Outcome>, Option<EjectReason>)> = vec![
            (
                "three 500s",
                vec![ServerError(500); 3],
                Some(EjectReason::Consecutive5xx),
            ),
            (
                "two 503s",
                vec![ServerError(503); 2],
                Some(EjectReason::ConsecutiveGatewayErrors),
            ),
            (
                "connect failures are gateway errors",
                vec![ConnectFailure; 2],
                Some(EjectReason::ConsecutiveGatewayErrors),
            ),
            (
                "timeouts are gateway errors",
                vec![Timeout; 2],
                Some(EjectReason::ConsecutiveGatewayErrors),
            ),
            (
                "a 500 ends a gateway run",
                vec![ServerError(502), ServerError(500), ServerError(502)],
                Some(EjectReason::Consecutive5xx),
            ),
            (
                "a success ends every run",
                vec![
                    ServerError(500),
                    ServerError(500),
                    Success,
                    ServerError(500),
                ],
                None,
            ),
            (
                "resets count as 5xx",
                vec![Reset, Reset, Reset],
                Some(EjectReason::Consecutive5xx),
            ),
            (
                "resets do not end a gateway run",
                vec![ServerError(502), Reset],
                None,
            ),
            (
                "resets do not end a gateway run either",
                vec![ServerError(504), Reset, ServerError(502)],
                Some(EjectReason::Consecutive5xx),
            ),
            (
                "429 neither counts nor resets",
                vec![ServerError(500), Overloaded, Overloaded, ServerError(500)],
                None,
            ),
            ("429 run", vec![Overloaded; 10], None),
        ];
        for (name, outcomes, want) in cases {
            let mut s = OutlierState::default();
            let got = outcomes
                .iter()
                .map(|&o| s.record(o, &policy()))
                .last()
                .flatten();
            assert_eq!(got, want, "{name}");
        }
    }

    #[test]
    fn zero_thresholds_are_off() {
        let od = OutlierDetection {
            consecutive_5xx: 0,
            consecutive_gateway_errors: 0,
            ..policy()
        };
        let mut s = OutlierState::default();
        for _ in 0..100 {
            assert_eq!(s.record(Outcome::ServerError(503), &od), None);
        }
    }

    #[test]
    fn ejection_times_grow_with_the_streak_and_shrink_with_good_time() {
        let t0 = Instant::now();
        let od = policy();
        let mut s = OutlierState::default();
        // (ejected at, expected time); returns happen when due.
        let cases = [
            (0, 30),
            (30, 60),   // back at 30, ejected again at once: 2×
            (90, 90),   // 3×
            (180, 100), // 4× capped at max
            // Back at 280, 25 s (2 intervals) later: streak 4 - 2 + 1 = 3.
            (305, 90),
            // Back at 395, 100 s later: streak starts anew.
            (495, 30),
        ];
        for (at, want) in cases {
            let now = t0 + at * S;
            assert!(!s.is_ejected(), "at {at}");
            assert_eq!(s.eject(now, &od), want * S, "at {at}");
            assert!(!s.return_if_due(now + (want - 1) * S), "at {at}");
            assert!(s.return_if_due(now + want * S), "at {at}");
        }
    }

    #[test]
    fn budgets() {
        let cases = [
            (0, 10, 0),
            (1, 100, 1),
            (1, 10, 0),
            (2, 10, 1),
            (4, 50, 2),
            (10, 10, 1),
            (10, 35, 3),
            (10, 100, 10),
            (10, 250, 10),
        ];
        for (total, pct, want) in cases {
            assert_eq!(budget(total, pct), want, "{total} endpoints, {pct}%");
        }
    }

    #[test]
    fn success_rate_outliers_cases() {
        let sr = SuccessRate {
            minimum_hosts: 5,
            request_volume: 100,
            stdev_factor: 1900,
        };
        let fleet = |bad: &[(usize, f64)], n: usize, volume: u32| -> Vec<(usize, f64, u32)> {
            (0..n)
                .map(|i| {
                    let r = bad.iter().find(|b| b.0 == i).map_or(1.0, |b| b.1);
                    (i, r, volume)
                })
                .collect()
        };
        type Case<'a> = (&'a str, Vec<(usize, f64, u32)>, Vec<usize>);
        let cases: Vec<Case> = vec![
            ("all equal", fleet(&[], 10, 100), vec![]),
            ("one at 50% of ten", fleet(&[(3, 0.5)], 10, 100), vec![3]),
            ("one slightly worse", fleet(&[(3, 0.97)], 10, 100), vec![3]),
            ("too few requests", fleet(&[(3, 0.5)], 10, 99), vec![]),
            (
                "too few hosts",
                fleet(&[(3, 0.5)], 4, 100).into_iter().take(4).collect(),
                vec![],
            ),
            // One outlier among n lies sqrt(n - 1) stdev below the mean
            // however bad it is: 2 among five, 1.73 among four.
            ("one of five", fleet(&[(3, 0.9)], 5, 100), vec![3]),
            ("one of four", fleet(&[(3, 0.0)], 4, 100), vec![]),
            (
                "two bad of twenty, worst first",
                fleet(&[(3, 0.6), (8, 0.4)], 20, 100),
                vec![8, 3],
            ),
        ];
        for (name, rates, want) in cases {
            assert_eq!(success_rate_outliers(&rates, &sr), want, "{name}");
        }
    }
}
