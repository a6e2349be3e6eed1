//! The balancer as the data path sees it: picks and answers at explicit
//! instants, shares counted over many requests.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::core::directory::policy::{
    Algorithm, HashKey, LoadBalancer, OutlierDetection, DEFAULT_EWMA_DECAY,
};
use crate::core::directory::Endpoint;
use crate::outbound::balance::hash::hash;
use crate::outbound::balance::service::ServiceState;

use super::*;

mod ejection;

const MS: Duration = Duration::from_millis(1);
const S: Duration = Duration::from_secs(1);
const SVC: &str = "catalog.shop";

fn ep(n: u8) -> Endpoint {
    Endpoint {
        mesh_addr: addr(n),
        identity: "spiffe://cluster.local/ns/shop/sa/catalog".parse().unwrap(),
        workload: format!("w{n}"),
        zone: String::new(),
        weight: 1,
        ready: true,
    }
}

fn addr(n: u8) -> SocketAddr {
    SocketAddr::from(([10, 0, 0, n], 15001))
}

fn eps(n: u8) -> Vec<Endpoint> {
    (1..=n).map(ep).collect()
}

fn lb(algorithm: Algorithm) -> LoadBalancer {
    LoadBalancer {
        algorithm,
        ..LoadBalancer::default()
    }
}

fn ewma() -> Algorithm {
    Algorithm::PeakEwma {
        decay: DEFAULT_EWMA_DECAY,
    }
}

fn ring() -> Algorithm {
    Algorithm::RingHash {
        key: HashKey::Header("x-user".into()),
        min_ring_size: 1024,
    }
}

fn maglev() -> Algorithm {
    Algorithm::Maglev {
        key: HashKey::Header("x-user".into()),
    }
}

fn all_algorithms() -> Vec<(&'static str, Algorithm)> {
    vec![
        ("peak_ewma", ewma()),
        ("round_robin", Algorithm::RoundRobin),
        ("least_request", Algorithm::LeastRequest),
        ("ring_hash", ring()),
        ("maglev", maglev()),
    ]
}

fn at(now: Instant) -> PickInput<'static> {
    PickInput {
        hash: None,
        local_zone: "",
        now,
    }
}

fn keyed(now: Instant, key: u32) -> PickInput<'static> {
    PickInput {
        hash: Some(hash(&[&key.to_be_bytes()])),
        local_zone: "",
        now,
    }
}

fn balancer() -> (Balancer, Arc<Recorder>) {
    let rec = Arc::new(Recorder::default());
    (Balancer::with_seed(rec.clone(), 7), rec)
}

/// Observer calls as lines, e.g. "ejected .3 consecutive_5xx 30s".
#[derive(Default)]
struct Recorder(Mutex<Vec<String>>);

impl Recorder {
    fn take(&self) -> Vec<String> {
        std::mem::take(&mut *self.0.lock().unwrap())
    }
}

impl BalanceObserver for Recorder {
    fn ejected(&self, service: &str, e: &Endpoint, reason: EjectReason, time: Duration) {
        assert_eq!(service, SVC);
        let line = format!(
            "ejected .{} {} {}s",
            last(e),
            reason.as_str(),
            time.as_secs()
        );
        self.0.lock().unwrap().push(line);
    }

    fn returned(&self, service: &str, e: &Endpoint) {
        assert_eq!(service, SVC);
        self.0
            .lock()
            .unwrap()
            .push(format!("returned .{}", last(e)));
    }
}

fn last(e: &Endpoint) -> u8 {
    match e.mesh_addr.ip() {
        std::net::IpAddr::V4(ip) => ip.octets()[3],
        std::net::IpAddr::V6(_) => 0,
    }
}

fn state<R>(b: &Balancer, f: impl FnOnce(&ServiceState) -> R) -> R {
    let cell = b.lock().by_key.get(SVC).cloned().unwrap();
    let state = cell.lock();
    f(&state)
}

/// Picks `n` times, 1 ms apart; each try is answered `answer(endpoint)`
/// later, with its outcome. Returns picks per endpoint (last octet).
fn simulate(
    b: &Balancer,
    endpoints: &[Endpoint],
    lb: &LoadBalancer,
    od: Option<&OutlierDetection>,
    t0: Instant,
    n: u32,
    answer: impl Fn(&Endpoint) -> (Duration, Outcome),
) -> HashMap<u8, u32> {
    let mut counts = HashMap::new();
    let mut pending: Vec<(Instant, Pick, Outcome)> = Vec::new();
    for k in 0..n {
        let now = t0 + k * MS;
        let (mut due, rest): (Vec<_>, Vec<_>) =
            pending.into_iter().partition(|(at, _, _)| *at <= now);
        pending = rest;
        due.sort_by_key(|(at, _, _)| *at);
        for (at, p, o) in due {
            p.finish_at(o, at);
        }
        let p = b.pick(SVC, endpoints, lb, od, &at(now), None).unwrap();
        *counts.entry(last(&p.endpoint)).or_default() += 1;
        let (latency, outcome) = answer(&p.endpoint);
        pending.push((now + latency, p, outcome));
    }
    counts
}

fn share(counts: &HashMap<u8, u32>, n: u8) -> f64 {
    let total: u32 = counts.values().sum();
    f64::from(counts.get(&n).copied().unwrap_or(0)) / f64::from(total)
}

#[test]
fn peak_ewma_keeps_traffic_off_slow_and_failing_endpoints() {
    let slow = |e: &Endpoint| (if last(e) == 4 { 50 * MS } else { MS }, Outcome::Success);
    let failing = |e: &Endpoint| {
        let outcome = if last(e) == 4 {
            Outcome::ServerError(500)
        } else {
            Outcome::Success
        };
        (MS, outcome)
    };
    let resetting = |e: &Endpoint| {
        let outcome = if last(e) == 4 {
            Outcome::Reset
        } else {
            Outcome::Success
        };
        (MS, outcome)
    };
    type Answer<'a> = &'a dyn Fn(&Endpoint) -> (Duration, Outcome);
    let cases: Vec<(&str, Answer, f64)> = vec![
        ("50 ms among 1 ms", &slow, 0.10),
        ("fast 500s", &failing, 0.05),
        ("fast resets", &resetting, 0.05),
    ];
    for (name, answer, max_share) in cases {
        let (b, _) = balancer();
        let counts = simulate(
            &b,
            &eps(4),
            &lb(ewma()),
            None,
            Instant::now(),
            10_000,
            answer,
        );
        assert!(share(&counts, 4) < max_share, "{name}: {counts:?}");
        for fast in 1..=3 {
            assert!(share(&counts, fast) > 0.28, "{name}: {counts:?}");
        }
    }
}

#[test]
fn peak_ewma_sends_endpoints_yet_to_answer_traffic_at_once() {
    let (b, _) = balancer();
    let t0 = Instant::now();
    let fast = |_: &Endpoint| (MS, Outcome::Success);
    // The first to answer does not keep the others waiting...
    let counts = simulate(&b, &eps(3), &lb(ewma()), None, t0, 3000, fast);
    for n in 1..=3 {
        assert!(share(&counts, n) > 0.3, "{counts:?}");
    }
    // ...nor does a fleet that has answered keep a newcomer waiting: it
    // counts as typical, not as a guess 30 times slower.
    let counts = simulate(&b, &eps(4), &lb(ewma()), None, t0 + S, 2000, fast);
    assert!(share(&counts, 4) > 0.2, "{counts:?}");
}

#[test]
fn peak_ewma_weighs_load_in_flight() {
    let (b, _) = balancer();
    let t0 = Instant::now();
    let endpoints = eps(2);
    // Both answer in 1 ms...
    for n in [1, 2, 1, 2] {
        let p = b
            .pick(SVC, &endpoints, &lb(ewma()), None, &at(t0), Some(addr(n)))
            .unwrap();
        p.finish_at(Outcome::Success, t0 + MS);
    }
    // ...but answers of .1 stop coming: its requests in flight make it
    // look slower, one at a time.
    let mut held = Vec::new();
    for k in 0..50u32 {
        let p = b
            .pick(SVC, &endpoints, &lb(ewma()), None, &at(t0 + k * MS), None)
            .unwrap();
        if last(&p.endpoint) == 1 {
            held.push(p);
        } else {
            p.finish_at(Outcome::Success, t0 + k * MS + MS);
        }
    }
    assert!(held.len() <= 2, "{} held on .1", held.len());
}

#[test]
fn least_request_evens_out_requests_in_flight() {
    let (b, _) = balancer();
    let t0 = Instant::now();
    let endpoints = eps(3);
    let picks: Vec<Pick> = (0..90)
        .map(|_| {
            b.pick(
                SVC,
                &endpoints,
                &lb(Algorithm::LeastRequest),
                None,
                &at(t0),
                None,
            )
            .unwrap()
        })
        .collect();
    let mut counts = HashMap::new();
    for p in &picks {
        *counts.entry(last(&p.endpoint)).or_insert(0) += 1;
    }
    // P2C never lets one endpoint run more than a little ahead.
    for n in 1..=3 {
        let c = counts.get(&n).copied().unwrap_or(0);
        assert!((27..=33).contains(&c), "{counts:?}");
    }
    drop(picks);
    state(&b, |s| {
        for n in 1..=3 {
            assert_eq!(s.stats_of(addr(n)).unwrap().in_flight(), 0);
        }
    });
}

#[test]
fn weights_are_respected_by_every_algorithm() {
    for (name, algorithm) in all_algorithms() {
        let (b, _) = balancer();
        let mut endpoints = eps(2);
        endpoints[0].weight = 3;
        endpoints[1].weight = 0; // unset: 1
        let t0 = Instant::now();
        let lb = lb(algorithm);
        let hashed = matches!(
            lb.algorithm,
            Algorithm::RingHash { .. } | Algorithm::Maglev { .. }
        );
        let mut counts = HashMap::new();
        // 20 ms answers, a pick every ms: about 20 in flight, so the
        // in-flight algorithms balance load rather than always taking the
        // heavier endpoint.
        let mut pending: Vec<(Instant, Pick)> = Vec::new();
        for k in 0..8000u32 {
            let now = t0 + k * MS;
            let (due, rest): (Vec<_>, Vec<_>) =
                pending.into_iter().partition(|(due, _)| *due <= now);
            pending = rest;
            for (due, p) in due {
                p.finish_at(Outcome::Success, due);
            }
            let input = if hashed { keyed(now, k) } else { at(now) };
            let p = b.pick(SVC, &endpoints, &lb, None, &input, None).unwrap();
            *counts.entry(last(&p.endpoint)).or_insert(0) += 1;
            pending.push((now + 20 * MS, p));
        }
        let heavy = share(&counts, 1);
        assert!((0.65..=0.85).contains(&heavy), "{name}: {counts:?}");
    }
}

#[test]
fn round_robin_follows_weights_exactly() {
    let (b, _) = balancer();
    let mut endpoints = eps(4);
    for (e, w) in endpoints.iter_mut().zip([1, 2, 3, 0]) {
        e.weight = w;
    }
    let t0 = Instant::now();
    let mut counts = HashMap::new();
    for _ in 0..700 {
        let p = b
            .pick(
                SVC,
                &endpoints,
                &lb(Algorithm::RoundRobin),
                None,
                &at(t0),
                None,
            )
            .unwrap();
        *counts.entry(last(&p.endpoint)).or_insert(0) += 1;
    }
    assert_eq!(
        counts,
        HashMap::from([(1, 100), (2, 200), (3, 300), (4, 100)])
    );
}

#[test]
fn only_ready_endpoints_and_none_without_any() {
    let t0 = Instant::now();
    let mut mixed = eps(4);
    mixed[0].ready = false;
    mixed[2].ready = false;
    let mut none = eps(2);
    none.iter_mut().for_each(|e| e.ready = false);
    for (name, algorithm) in all_algorithms() {
        let (b, _) = balancer();
        let lb = lb(algorithm);
        for k in 0..100 {
            let p = b.pick(SVC, &mixed, &lb, None, &keyed(t0, k), None).unwrap();
            assert!([2, 4].contains(&last(&p.endpoint)), "{name}");
        }
        assert!(
            b.pick(SVC, &none, &lb, None, &keyed(t0, 1), None).is_none(),
            "{name}"
        );
        assert!(
            b.pick(SVC, &[], &lb, None, &at(t0), None).is_none(),
            "{name}"
        );
    }
}

#[test]
fn a_retry_never_goes_back_to_the_endpoint_that_failed() {
    let t0 = Instant::now();
    let mut lonely = eps(3);
    lonely[1].ready = false;
    lonely[2].ready = false;
    for (name, algorithm) in all_algorithms() {
        let (b, _) = balancer();
        let lb = lb(algorithm);
        let endpoints = eps(3);
        for k in 0..300 {
            let first = b
                .pick(SVC, &endpoints, &lb, None, &keyed(t0, k), None)
                .unwrap();
            let avoid = Some(first.endpoint.mesh_addr);
            let retry = b
                .pick(SVC, &endpoints, &lb, None, &keyed(t0, k), avoid)
                .unwrap();
            assert_ne!(
                retry.endpoint.mesh_addr, first.endpoint.mesh_addr,
                "{name} key {k}"
            );
        }
        // The only candidate is still picked.
        let p = b
            .pick(SVC, &lonely, &lb, None, &keyed(t0, 1), Some(addr(1)))
            .unwrap();
        assert_eq!(last(&p.endpoint), 1, "{name}");
    }
}

#[test]
fn locality_prefers_the_local_zone_while_it_has_healthy_endpoints() {
    let zoned = |zones: &[&str], ready: &[bool]| -> Vec<Endpoint> {
        zones
            .iter()
            .zip(ready)
            .enumerate()
            .map(|(i, (z, r))| Endpoint {
                zone: z.to_string(),
                ready: *r,
                ..ep(i as u8 + 1)
            })
            .collect()
    };
    let zones = ["a", "a", "b", "b"];
    // (name, locality, caller zone, endpoints, endpoints picked)
    type Case<'a> = (&'a str, bool, &'a str, Vec<Endpoint>, Vec<u8>);
    let cases: Vec<Case> = vec![
        (
            "local only",
            true,
            "a",
            zoned(&zones, &[true; 4]),
            vec![1, 2],
        ),
        (
            "one local left",
            true,
            "a",
            zoned(&zones, &[false, true, true, true]),
            vec![2],
        ),
        (
            "failover",
            true,
            "a",
            zoned(&zones, &[false, false, true, true]),
            vec![3, 4],
        ),
        (
            "unknown caller zone",
            true,
            "",
            zoned(&zones, &[true; 4]),
            vec![1, 2, 3, 4],
        ),
        (
            "no endpoint in caller zone",
            true,
            "c",
            zoned(&zones, &[true; 4]),
            vec![1, 2, 3, 4],
        ),
        (
            "locality off",
            false,
            "a",
            zoned(&zones, &[true; 4]),
            vec![1, 2, 3, 4],
        ),
    ];
    let t0 = Instant::now();
    for (name, locality, local_zone, endpoints, want) in cases {
        let (b, _) = balancer();
        let lb = LoadBalancer {
            locality,
            ..lb(Algorithm::RoundRobin)
        };
        let input = PickInput {
            hash: None,
            local_zone,
            now: t0,
        };
        let mut got: Vec<u8> = (0..40)
            .map(|_| {
                last(
                    &b.pick(SVC, &endpoints, &lb, None, &input, None)
                        .unwrap()
                        .endpoint,
                )
            })
            .collect();
        got.sort_unstable();
        got.dedup();
        assert_eq!(got, want, "{name}");
    }
}

#[test]
fn locality_fails_over_when_the_local_endpoints_are_ejected() {
    let (b, rec) = balancer();
    let t0 = Instant::now();
    let mut endpoints = eps(4);
    for (e, z) in endpoints.iter_mut().zip(["a", "b", "b", "b"]) {
        e.zone = z.into();
    }
    let lb = LoadBalancer {
        locality: true,
        ..lb(Algorithm::RoundRobin)
    };
    let input = PickInput {
        hash: None,
        local_zone: "a",
        now: t0,
    };
    let od = outlier();
    for _ in 0..3 {
        let p = b
            .pick(SVC, &endpoints, &lb, Some(&od), &input, None)
            .unwrap();
        assert_eq!(last(&p.endpoint), 1);
        p.finish_at(Outcome::ServerError(500), t0 + MS);
    }
    assert_eq!(rec.take(), ["ejected .1 consecutive_5xx 30s"]);
    let p = b
        .pick(SVC, &endpoints, &lb, Some(&od), &input, None)
        .unwrap();
    assert_ne!(last(&p.endpoint), 1);
}

#[test]
fn slow_start_ramps_a_newcomer_up() {
    let (b, _) = balancer();
    let t0 = Instant::now();
    let lb = LoadBalancer {
        slow_start: Some(60 * S),
        ..lb(Algorithm::RoundRobin)
    };
    // The first list is the running fleet: no slow start for it.
    let first = share_of_4(&b, &eps(4), &lb, t0);
    assert!((first - 0.25).abs() < 0.01, "{first}");
    let cases = [(0, 0.1 / 3.1), (30, 0.55 / 3.55), (60, 0.25), (600, 0.25)];
    for (secs, want) in cases {
        let (b, _) = balancer();
        b.pick(SVC, &eps(3), &lb, None, &at(t0), None);
        b.pick(SVC, &eps(4), &lb, None, &at(t0 + S), None);
        let got = share_of_4(&b, &eps(4), &lb, t0 + S + secs * S);
        assert!((got - want).abs() < 0.01, "{secs}s: {got} want {want}");
    }
    // Leaving and coming back is starting anew.
    let (b, _) = balancer();
    b.pick(SVC, &eps(4), &lb, None, &at(t0), None);
    b.pick(SVC, &eps(3), &lb, None, &at(t0 + 100 * S), None);
    b.pick(SVC, &eps(4), &lb, None, &at(t0 + 200 * S), None);
    let got = share_of_4(&b, &eps(4), &lb, t0 + 200 * S);
    assert!(got < 0.05, "{got}");
}

fn share_of_4(b: &Balancer, endpoints: &[Endpoint], lb: &LoadBalancer, now: Instant) -> f64 {
    let mut counts = HashMap::new();
    for _ in 0..3100 {
        let p = b.pick(SVC, endpoints, lb, None, &at(now), None).unwrap();
        *counts.entry(last(&p.endpoint)).or_insert(0) += 1;
    }
    share(&counts, 4)
}

#[test]
fn state_follows_the_endpoint_list() {
    let (b, _) = balancer();
    let t0 = Instant::now();
    let lb = lb(ewma());
    b.pick(SVC, &eps(5), &lb, None, &at(t0), None);
    state(&b, |s| assert_eq!(s.tracked().len(), 5));
    b.pick(SVC, &eps(2), &lb, None, &at(t0), None);
    state(&b, |s| assert_eq!(s.tracked(), [addr(1), addr(2)]));
}

#[test]
fn a_dropped_pick_releases_its_slot_and_teaches_nothing() {
    let (b, _) = balancer();
    let t0 = Instant::now();
    let endpoints = eps(1);
    let lb = lb(ewma());
    b.pick(SVC, &endpoints, &lb, None, &at(t0), None)
        .unwrap()
        .finish_at(Outcome::Success, t0 + 5 * MS);
    let rtt = |b: &Balancer| {
        state(b, |s| {
            s.stats_of(addr(1))
                .unwrap()
                .rtt
                .value(t0 + 5 * MS, DEFAULT_EWMA_DECAY)
        })
    };
    let before = rtt(&b);
    let p = b
        .pick(SVC, &endpoints, &lb, None, &at(t0 + 5 * MS), None)
        .unwrap();
    state(&b, |s| {
        assert_eq!(s.stats_of(addr(1)).unwrap().in_flight(), 1)
    });
    drop(p);
    state(&b, |s| {
        assert_eq!(s.stats_of(addr(1)).unwrap().in_flight(), 0)
    });
    assert_eq!(rtt(&b), before);
}

#[test]
fn an_answer_from_before_an_endpoint_left_is_ignored() {
    let (b, _) = balancer();
    let t0 = Instant::now();
    let lb = lb(ewma());
    let p = b.pick(SVC, &eps(1), &lb, None, &at(t0), None).unwrap();
    b.pick(SVC, &eps(2)[1..], &lb, None, &at(t0), None);
    b.pick(SVC, &eps(2), &lb, None, &at(t0), None);
    p.finish_at(Outcome::ServerError(500), t0 + MS);
    state(&b, |s| {
        let back = s.stats_of(addr(1)).unwrap();
        assert!(!back.rtt.measured());
        assert_eq!(back.in_flight(), 0);
    });
}

#[test]
fn consistent_hashing_keeps_keys_on_their_endpoints() {
    let t0 = Instant::now();
    for (name, algorithm) in [("ring_hash", ring()), ("maglev", maglev())] {
        let lb = lb(algorithm);
        let endpoints = eps(10);
        let owners = |b: &Balancer, endpoints: &[Endpoint]| -> Vec<SocketAddr> {
            (0..10_000)
                .map(|k| {
                    b.pick(SVC, endpoints, &lb, None, &keyed(t0, k), None)
                        .unwrap()
                        .endpoint
                        .mesh_addr
                })
                .collect()
        };
        let (b, _) = balancer();
        let before = owners(&b, &endpoints);
        // Same key, same endpoint: again, in another proxy, in another
        // list order.
        assert_eq!(owners(&b, &endpoints), before, "{name}");
        let mut reversed = endpoints.clone();
        reversed.reverse();
        let (other, _) = balancer();
        assert_eq!(owners(&other, &reversed), before, "{name}");
        state(&b, |s| assert_eq!(s.table_builds, 1, "{name}"));

        let fewer: Vec<Endpoint> = endpoints.iter().filter(|e| last(e) != 4).cloned().collect();
        let after = owners(&b, &fewer);
        let moved = before.iter().zip(&after).filter(|(a, b)| a != b).count();
        assert!(moved <= 1500, "{name}: {moved} of 10000 moved");
        state(&b, |s| assert_eq!(s.table_builds, 2, "{name}"));
    }
}

#[test]
fn consistent_hashing_walks_past_an_unavailable_endpoint() {
    let t0 = Instant::now();
    for (name, algorithm) in [("ring_hash", ring()), ("maglev", maglev())] {
        let (b, _) = balancer();
        let lb = lb(algorithm);
        let mut endpoints = eps(5);
        let owners = |endpoints: &[Endpoint]| -> Vec<SocketAddr> {
            (0..1000)
                .map(|k| {
                    b.pick(SVC, endpoints, &lb, None, &keyed(t0, k), None)
                        .unwrap()
                        .endpoint
                        .mesh_addr
                })
                .collect()
        };
        let before = owners(&endpoints);
        let down = before[42];
        endpoints
            .iter_mut()
            .filter(|e| e.mesh_addr == down)
            .for_each(|e| e.ready = false);
        let after = owners(&endpoints);
        assert_ne!(after[42], down, "{name}");
        // Keys of the down endpoint go elsewhere, always to the same place;
        // every other key stays.
        assert_eq!(owners(&endpoints), after, "{name}");
        for (b, a) in before.iter().zip(&after) {
            assert!(b == a || *b == down, "{name}");
        }
        // A readiness change rebuilds nothing.
        state(&b, |s| assert_eq!(s.table_builds, 1, "{name}"));
    }
}

#[test]
fn consistent_hashing_without_a_key_spreads_evenly() {
    let t0 = Instant::now();
    for (name, algorithm) in [("ring_hash", ring()), ("maglev", maglev())] {
        let (b, _) = balancer();
        let got: Vec<u8> = (0..6)
            .map(|_| {
                last(
                    &b.pick(SVC, &eps(3), &lb(algorithm.clone()), None, &at(t0), None)
                        .unwrap()
                        .endpoint,
                )
            })
            .collect();
        assert_eq!(got, [1, 2, 3, 1, 2, 3], "{name}");
    }
}

fn outlier() -> OutlierDetection {
    OutlierDetection {
        consecutive_5xx: 3,
        consecutive_gateway_errors: 0,
        interval: 10 * S,
        base_ejection_time: 30 * S,
        max_ejection_time: 300 * S,
        max_ejection_percent: 50,
        success_rate: None,
    }
}

/// Picks until endpoint `n` comes up and answers `outcome` at `now`.
fn answer_from(
    b: &Balancer,
    endpoints: &[Endpoint],
    od: &OutlierDetection,
    n: u8,
    outcome: Outcome,
    now: Instant,
) {
    for _ in 0..1000 {
        let p = b
            .pick(
                SVC,
                endpoints,
                &lb(Algorithm::RoundRobin),
                Some(od),
                &at(now),
                None,
            )
            .unwrap();
        if last(&p.endpoint) == n {
            p.finish_at(outcome, now);
            return;
        }
    }
    panic!(".{n} never picked");
}

fn picked_at(b: &Balancer, endpoints: &[Endpoint], od: &OutlierDetection, now: Instant) -> Vec<u8> {
    let mut got: Vec<u8> = (0..40)
        .map(|_| {
            last(
                &b.pick(
                    SVC,
                    endpoints,
                    &lb(Algorithm::RoundRobin),
                    Some(od),
                    &at(now),
                    None,
                )
                .unwrap()
                .endpoint,
            )
        })
        .collect();
    got.sort_unstable();
    got.dedup();
    got
}

#[test]
fn idle_services_are_forgotten() {
    let (b, rec) = balancer();
    let t0 = Instant::now();
    let lb = lb(ewma());
    let od = outlier();
    for _ in 0..3 {
        answer_from(&b, &eps(3), &od, 1, Outcome::ServerError(500), t0);
    }
    rec.take();
    b.pick("other.shop", &eps(2), &lb, None, &at(t0 + 60 * S), None);
    assert_eq!(b.services(), 2);
    // A pick held keeps its service.
    let held = b
        .pick("other.shop", &eps(2), &lb, None, &at(t0 + 60 * S), None)
        .unwrap();
    b.pick("third.shop", &eps(2), &lb, None, &at(t0 + 700 * S), None);
    assert_eq!(b.services(), 2);
    assert_eq!(rec.take(), ["returned .1"]);
    drop(held);
    b.pick("third.shop", &eps(2), &lb, None, &at(t0 + 800 * S), None);
    assert_eq!(b.services(), 1);
}

#[test]
fn outcomes_of_statuses() {
    let cases = [
        (200, Outcome::Success),
        (404, Outcome::Success),
        (429, Outcome::Overloaded),
        (499, Outcome::Success),
        (500, Outcome::ServerError(500)),
        (503, Outcome::ServerError(503)),
        (599, Outcome::ServerError(599)),
    ];
    for (status, want) in cases {
        assert_eq!(Outcome::of_status(status), want, "{status}");
    }
}

#[test]
fn picks_from_many_threads_leave_nothing_in_flight() {
    fn send_sync<T: Send + Sync>() {}
    send_sync::<Balancer>();
    send_sync::<Pick>();
    let (b, _) = balancer();
    let t0 = Instant::now();
    let endpoints = eps(4);
    std::thread::scope(|s| {
        for t in 0..4u32 {
            let (b, endpoints) = (&b, &endpoints);
            s.spawn(move || {
                for k in 0..500u32 {
                    let now = t0 + k * MS;
                    let p = b
                        .pick(SVC, endpoints, &lb(ewma()), None, &at(now), None)
                        .unwrap();
                    if (k + t) % 3 == 0 {
                        drop(p);
                    } else {
                        p.finish_at(Outcome::Success, now + MS);
                    }
                }
            });
        }
    });
    state(&b, |s| {
        for n in 1..=4 {
            assert_eq!(s.stats_of(addr(n)).unwrap().in_flight(), 0);
        }
    });
}
