//! Outlier ejection as the balancer applies it: when endpoints leave the
//! rotation, for how long, and who is told.

use std::time::Instant;

use crate::core::directory::policy::{Algorithm, OutlierDetection, SuccessRate};
use crate::core::directory::Endpoint;

use super::*;

#[test]
fn consecutive_failures_eject_for_growing_times() {
    let (b, rec) = balancer();
    let t0 = Instant::now();
    let endpoints = eps(3);
    let od = outlier();
    // (failures at, ejection time; back at failures + time)
    let cases = [(0, 30), (30, 60), (90, 90), (180, 120), (300, 150)];
    for (from, time) in cases {
        let now = t0 + from * S;
        for _ in 0..3 {
            answer_from(&b, &endpoints, &od, 2, Outcome::Timeout, now);
        }
        assert_eq!(
            rec.take(),
            [format!("ejected .2 consecutive_5xx {time}s")],
            "at {from}s"
        );
        let back = now + time * S;
        assert_eq!(
            picked_at(&b, &endpoints, &od, back - MS),
            [1, 3],
            "at {from}s"
        );
        assert!(rec.take().is_empty());
        assert_eq!(
            picked_at(&b, &endpoints, &od, back),
            [1, 2, 3],
            "at {from}s"
        );
        assert_eq!(rec.take(), ["returned .2"]);
    }
    // Long enough in service and the streak is forgotten.
    for _ in 0..3 {
        answer_from(&b, &endpoints, &od, 2, Outcome::Timeout, t0 + 2000 * S);
    }
    assert_eq!(rec.take(), ["ejected .2 consecutive_5xx 30s"]);
}

#[test]
fn successes_break_a_run_and_429s_do_not_count() {
    let (b, rec) = balancer();
    let t0 = Instant::now();
    let endpoints = eps(3);
    let od = outlier();
    use Outcome::*;
    for o in [
        ServerError(500),
        Reset,
        Success,
        ServerError(503),
        Overloaded,
        Overloaded,
        ConnectFailure,
    ] {
        answer_from(&b, &endpoints, &od, 2, o, t0);
    }
    assert!(rec.take().is_empty());
    answer_from(&b, &endpoints, &od, 2, ServerError(599), t0);
    assert_eq!(rec.take(), ["ejected .2 consecutive_5xx 30s"]);
}

#[test]
fn gateway_errors_eject_on_their_own_threshold() {
    let (b, rec) = balancer();
    let t0 = Instant::now();
    let endpoints = eps(3);
    let od = OutlierDetection {
        consecutive_5xx: 0,
        consecutive_gateway_errors: 2,
        ..outlier()
    };
    answer_from(&b, &endpoints, &od, 3, Outcome::ServerError(502), t0);
    answer_from(&b, &endpoints, &od, 3, Outcome::ServerError(500), t0);
    answer_from(&b, &endpoints, &od, 3, Outcome::ServerError(504), t0);
    assert!(rec.take().is_empty());
    answer_from(&b, &endpoints, &od, 3, Outcome::ConnectFailure, t0);
    assert_eq!(rec.take(), ["ejected .3 consecutive_gateway_errors 30s"]);
}

#[test]
fn ejection_is_capped_and_spares_the_last_healthy_endpoint() {
    let t0 = Instant::now();
    let mut one_ready = eps(2);
    one_ready[1].ready = false;
    // (endpoints, max %, failing endpoints, ejected)
    type Case<'a> = (&'a str, Vec<Endpoint>, u32, Vec<u8>, Vec<u8>);
    let cases: Vec<Case> = vec![
        ("half of four", eps(4), 50, vec![1, 2, 3], vec![1, 2]),
        ("at least one", eps(4), 10, vec![1, 2], vec![1]),
        (
            "all may go but the last",
            eps(3),
            100,
            vec![1, 2, 3],
            vec![1, 2],
        ),
        ("a lone endpoint stays", eps(1), 100, vec![1], vec![]),
        ("the only ready one stays", one_ready, 100, vec![1], vec![]),
    ];
    for (name, endpoints, pct, failing, want) in cases {
        let (b, rec) = balancer();
        let od = OutlierDetection {
            max_ejection_percent: pct,
            ..outlier()
        };
        for &n in &failing {
            for _ in 0..3 {
                answer_from(&b, &endpoints, &od, n, Outcome::ServerError(500), t0);
            }
        }
        let got: Vec<String> = rec.take();
        let want: Vec<String> = want
            .iter()
            .map(|n| format!("ejected .{n} consecutive_5xx 30s"))
            .collect();
        assert_eq!(got, want, "{name}");
    }
}

#[test]
fn with_every_ready_endpoint_ejected_requests_still_go_somewhere() {
    let (b, _) = balancer();
    let t0 = Instant::now();
    let mut endpoints = eps(2);
    let od = outlier();
    for _ in 0..3 {
        answer_from(&b, &endpoints, &od, 1, Outcome::ServerError(500), t0);
    }
    assert_eq!(picked_at(&b, &endpoints, &od, t0), [2]);
    endpoints[1].ready = false;
    assert_eq!(picked_at(&b, &endpoints, &od, t0), [1]);
}

#[test]
fn success_rate_outliers_are_ejected_once_an_interval_is_up() {
    let (b, rec) = balancer();
    let t0 = Instant::now();
    let endpoints = eps(10);
    let od = OutlierDetection {
        consecutive_5xx: 0,
        success_rate: Some(SuccessRate {
            minimum_hosts: 5,
            request_volume: 100,
            stdev_factor: 1900,
        }),
        ..outlier()
    };
    let lb = lb(Algorithm::RoundRobin);
    for k in 0..1000u32 {
        let now = t0 + k * MS;
        let p = b
            .pick(SVC, &endpoints, &lb, Some(&od), &at(now), None)
            .unwrap();
        let outcome = if last(&p.endpoint) == 7 && k % 20 < 10 {
            Outcome::ServerError(500)
        } else {
            Outcome::Success
        };
        p.finish_at(outcome, now);
    }
    assert!(rec.take().is_empty(), "not before the interval is up");
    b.pick(SVC, &endpoints, &lb, Some(&od), &at(t0 + 10 * S), None);
    assert_eq!(rec.take(), ["ejected .7 success_rate 30s"]);
    // The next interval starts from nothing: no requests, no verdict.
    b.pick(SVC, &endpoints, &lb, Some(&od), &at(t0 + 20 * S), None);
    assert!(rec.take().is_empty());
}

#[test]
fn ejections_end_when_the_policy_or_the_endpoint_goes() {
    let t0 = Instant::now();
    let od = outlier();
    // Policy removed.
    let (b, rec) = balancer();
    for _ in 0..3 {
        answer_from(&b, &eps(3), &od, 2, Outcome::ServerError(500), t0);
    }
    rec.take();
    b.pick(
        SVC,
        &eps(3),
        &lb(Algorithm::RoundRobin),
        None,
        &at(t0 + S),
        None,
    );
    assert_eq!(rec.take(), ["returned .2"]);
    // Endpoint removed.
    let (b, rec) = balancer();
    for _ in 0..3 {
        answer_from(&b, &eps(3), &od, 3, Outcome::ServerError(500), t0);
    }
    rec.take();
    b.pick(
        SVC,
        &eps(2),
        &lb(Algorithm::RoundRobin),
        Some(&od),
        &at(t0 + S),
        None,
    );
    assert_eq!(rec.take(), ["returned .3"]);
}
