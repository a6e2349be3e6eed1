//! The balancer's state for one service and every decision made under its
//! lock: which endpoints are candidates, which one a request gets, what an
//! answer changes. Synchronous and clock-free (instants come from the
//! caller), so it is tested with explicit times.

use std::cell::OnceCell;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rand::rngs::StdRng;

use crate::core::directory::policy::{Algorithm, LoadBalancer, OutlierDetection};
use crate::core::directory::Endpoint;

use super::maglev::Maglev;
use super::outlier::{budget, success_rate_outliers};
use super::ring::Ring;
use super::stats::{weight, EndpointStats};
use super::{p2c, wrr, EjectReason, Outcome, PickInput};

/// The latency an endpoint that has not answered yet is compared with
/// when no endpoint of the service has answered either.
const DEFAULT_RTT_NS: f64 = 30e6;

/// The latency a failed answer counts as (at least), so that an endpoint
/// answering errors fast does not attract traffic by looking fast.
const FAILURE_RTT: Duration = Duration::from_secs(1);

/// Floor of a latency estimate in a cost, so that requests in flight still
/// count once an idle endpoint's estimate has decayed to nearly zero.
const MIN_COST_RTT_NS: f64 = 1_000.0;

/// Something the observer must hear of, told once the lock is released.
#[derive(Debug)]
pub(super) enum Event {
    Ejected(Endpoint, EjectReason, Duration),
    Returned(Endpoint),
}

/// How a try went, for [`ServiceState::record`].
pub(super) struct Answer<'a> {
    pub(super) addr: SocketAddr,
    /// The in-flight counter of the endpoint when it was picked.
    pub(super) picked: &'a Arc<AtomicU32>,
    pub(super) outcome: Outcome,
    /// When it was picked.
    pub(super) start: Instant,
    pub(super) now: Instant,
    pub(super) decay: Duration,
    pub(super) outlier: Option<&'a OutlierDetection>,
}

#[derive(Debug, PartialEq)]
enum TableKey {
    Ring { min_size: u32 },
    Maglev,
}

#[derive(Debug)]
enum Table {
    Ring(Ring),
    Maglev(Maglev),
}

#[derive(Debug)]
pub(super) struct ServiceState {
    /// The list as last given; `stats` and `wrr` are aligned with it.
    endpoints: Vec<Endpoint>,
    stats: Vec<EndpointStats>,
    /// For answers: the list may have changed since their pick.
    index: HashMap<SocketAddr, usize>,
    wrr: Vec<f64>,
    /// Ring or Maglev table of the current addresses and weights.
    table: Option<(TableKey, Table)>,
    /// Points per weight of the last ring, kept across endpoint changes.
    ring_per_weight: Option<u32>,
    /// How many tables were built, to test that they are cached.
    pub(super) table_builds: u64,
    rng: StdRng,
    seen_any: bool,
    interval_start: Option<Instant>,
    pub(super) last_used: Instant,
    /// Scratch buffers kept to save an allocation per pick.
    pool: Vec<usize>,
    weights: Vec<f64>,
}

impl ServiceState {
    pub(super) fn new(rng: StdRng, now: Instant) -> Self {
        Self {
            endpoints: Vec::new(),
            stats: Vec::new(),
            index: HashMap::new(),
            wrr: Vec::new(),
            table: None,
            ring_per_weight: None,
            table_builds: 0,
            rng,
            seen_any: false,
            interval_start: None,
            last_used: now,
            pool: Vec::new(),
            weights: Vec::new(),
        }
    }

    /// Picks one of `endpoints` and counts it in flight; its counter is
    /// returned for the `Pick` to release.
    pub(super) fn pick(
        &mut self,
        endpoints: &[Endpoint],
        lb: &LoadBalancer,
        outlier: Option<&OutlierDetection>,
        input: &PickInput<'_>,
        avoid: Option<SocketAddr>,
        events: &mut Vec<Event>,
    ) -> Option<(Endpoint, Arc<AtomicU32>)> {
        let now = input.now;
        self.last_used = self.last_used.max(now);
        self.sync(endpoints, now, events);
        self.tick(outlier, now, events);
        let mut pool = std::mem::take(&mut self.pool);
        self.candidates(&mut pool, lb.locality.then_some(input.local_zone), avoid);
        let chosen = self.choose(&pool, lb, input);
        self.pool = pool;
        let i = chosen?;
        let stats = self.stats.get(i)?;
        stats.in_flight.fetch_add(1, Ordering::Relaxed);
        Some((self.endpoints.get(i)?.clone(), stats.in_flight.clone()))
    }

    /// Takes in how a try went.
    pub(super) fn record(&mut self, answer: &Answer<'_>, events: &mut Vec<Event>) {
        let Answer {
            addr,
            picked,
            outcome,
            start,
            now,
            decay,
            outlier,
        } = *answer;
        let Some(&i) = self.index.get(&addr) else {
            return;
        };
        let Some(stats) = self.stats.get_mut(i) else {
            return;
        };
        // The endpoint left and came back since the pick: its new life
        // starts without this answer.
        if !Arc::ptr_eq(&stats.in_flight, picked) {
            return;
        }
        let latency = now.saturating_duration_since(start);
        let sample = if outcome.is_failure() {
            latency.max(FAILURE_RTT)
        } else {
            latency
        };
        stats.rtt.observe(sample, now, decay);
        let Some(od) = outlier else {
            return;
        };
        let eject = stats.outlier.record(outcome, od);
        self.tick(Some(od), now, events);
        if let Some(reason) = eject {
            self.try_eject(i, reason, now, od, events);
        }
    }

    /// Ends every ejection: the policy no longer ejects, or the state is
    /// about to be dropped.
    pub(super) fn drain(&mut self, now: Instant, events: &mut Vec<Event>) {
        for (e, s) in self.endpoints.iter().zip(&mut self.stats) {
            if s.outlier.lift_now(now) {
                events.push(Event::Returned(e.clone()));
            }
        }
    }

    /// Brings the state in line with the list given: stats of endpoints
    /// that left are dropped, new endpoints start fresh.
    fn sync(&mut self, endpoints: &[Endpoint], now: Instant, events: &mut Vec<Event>) {
        if self.seen_any && self.endpoints == endpoints {
            return;
        }
        let first = !self.seen_any;
        self.seen_any = true;
        let same_members = self.endpoints.len() == endpoints.len()
            && self
                .endpoints
                .iter()
                .zip(endpoints)
                .all(|(a, b)| a.mesh_addr == b.mesh_addr && weight(a) == weight(b));
        if !same_members {
            self.table = None;
            self.wrr = vec![0.0; endpoints.len()];
        }
        let mut old: HashMap<SocketAddr, (Endpoint, EndpointStats)> = self
            .endpoints
            .drain(..)
            .zip(self.stats.drain(..))
            .map(|(e, s)| (s.addr, (e, s)))
            .collect();
        self.stats = endpoints
            .iter()
            .map(|e| match old.remove(&e.mesh_addr) {
                Some((_, s)) => s,
                None => EndpointStats::new(e.mesh_addr, (!first).then_some(now), now),
            })
            .collect();
        // Observers count ejected endpoints; one that leaves while ejected
        // is no longer ejected.
        for (e, mut s) in old.into_values() {
            if s.outlier.lift_now(now) {
                events.push(Event::Returned(e));
            }
        }
        self.endpoints = endpoints.to_vec();
        self.index = self
            .stats
            .iter()
            .enumerate()
            .map(|(i, s)| (s.addr, i))
            .collect();
    }

    /// Returns endpoints whose ejection is over and, once an interval is
    /// up, compares success rates.
    fn tick(&mut self, outlier: Option<&OutlierDetection>, now: Instant, events: &mut Vec<Event>) {
        let Some(od) = outlier else {
            // The policy no longer ejects: nobody stays ejected.
            self.drain(now, events);
            return;
        };
        for (e, s) in self.endpoints.iter().zip(&mut self.stats) {
            if s.outlier.return_if_due(now) {
                events.push(Event::Returned(e.clone()));
            }
        }
        let start = *self.interval_start.get_or_insert(now);
        if now.saturating_duration_since(start) < od.interval {
            return;
        }
        if let Some(sr) = &od.success_rate {
            let rates: Vec<(usize, f64, u32)> = self
                .stats
                .iter()
                .enumerate()
                .filter(|(_, s)| !s.outlier.is_ejected())
                .map(|(i, s)| (i, s.outlier.success_rate(), s.outlier.requests))
                .collect();
            for i in success_rate_outliers(&rates, sr) {
                self.try_eject(i, EjectReason::SuccessRate, now, od, events);
            }
        }
        for s in &mut self.stats {
            s.outlier.reset_interval();
        }
        self.interval_start = Some(now);
    }

    /// Ejects endpoint `i` unless too many already are or it is the last
    /// healthy one.
    fn try_eject(
        &mut self,
        i: usize,
        reason: EjectReason,
        now: Instant,
        od: &OutlierDetection,
        events: &mut Vec<Event>,
    ) {
        let ejected = self.stats.iter().filter(|s| s.outlier.is_ejected()).count();
        let healthy_others = self
            .endpoints
            .iter()
            .zip(&self.stats)
            .enumerate()
            .filter(|&(j, (e, s))| j != i && e.ready && !s.outlier.is_ejected())
            .count();
        if ejected >= budget(self.endpoints.len(), od.max_ejection_percent) || healthy_others == 0 {
            return;
        }
        let (Some(e), Some(s)) = (self.endpoints.get(i), self.stats.get_mut(i)) else {
            return;
        };
        if s.outlier.is_ejected() {
            return;
        }
        let time = s.outlier.eject(now, od);
        events.push(Event::Ejected(e.clone(), reason, time));
    }

    /// Fills `pool` (sorted) with the indices a request may go to.
    fn candidates(
        &self,
        pool: &mut Vec<usize>,
        local_zone: Option<&str>,
        avoid: Option<SocketAddr>,
    ) {
        let eps = &self.endpoints;
        pool.clear();
        pool.extend(
            (0..eps.len()).filter(|&i| eps[i].ready && !self.stats[i].outlier.is_ejected()),
        );
        if pool.is_empty() {
            // Panic mode: with every ready endpoint ejected, ejection says
            // nothing about which is worse; a request gets a chance anyway
            // rather than failing here.
            pool.extend((0..eps.len()).filter(|&i| eps[i].ready));
        }
        // Retries go elsewhere, even to another zone, when there is an
        // elsewhere.
        if let Some(avoid) = avoid {
            if pool.iter().any(|&i| eps[i].mesh_addr != avoid) {
                pool.retain(|&i| eps[i].mesh_addr != avoid);
            }
        }
        if let Some(zone) = local_zone.filter(|z| !z.is_empty()) {
            if pool.iter().any(|&i| eps[i].zone == zone) {
                pool.retain(|&i| eps[i].zone == zone);
            }
        }
    }

    fn choose(
        &mut self,
        pool: &[usize],
        lb: &LoadBalancer,
        input: &PickInput<'_>,
    ) -> Option<usize> {
        let now = input.now;
        let slow_start = lb.slow_start;
        match &lb.algorithm {
            Algorithm::PeakEwma { decay } => {
                let Self {
                    rng,
                    stats,
                    endpoints,
                    ..
                } = self;
                // Computed only when an endpoint without answers is
                // sampled, which is rare.
                let typical = OnceCell::new();
                p2c::pick(rng, pool, |i| {
                    let s = &stats[i];
                    let rtt = if s.rtt.measured() {
                        s.rtt.value(now, *decay)
                    } else {
                        *typical.get_or_init(|| typical_rtt_ns(stats, now, *decay))
                    };
                    let rtt = rtt.max(MIN_COST_RTT_NS);
                    rtt * f64::from(s.in_flight().saturating_add(1))
                        / s.effective_weight(&endpoints[i], slow_start, now)
                })
            }
            Algorithm::LeastRequest => {
                let Self {
                    rng,
                    stats,
                    endpoints,
                    ..
                } = self;
                p2c::pick(rng, pool, |i| {
                    let s = &stats[i];
                    f64::from(s.in_flight().saturating_add(1))
                        / s.effective_weight(&endpoints[i], slow_start, now)
                })
            }
            Algorithm::RoundRobin => self.round_robin(pool, slow_start, now),
            Algorithm::RingHash { min_ring_size, .. } => match input.hash {
                Some(hash) => self.lookup(
                    TableKey::Ring {
                        min_size: *min_ring_size,
                    },
                    hash,
                    pool,
                ),
                None => self.round_robin(pool, slow_start, now),
            },
            Algorithm::Maglev { .. } => match input.hash {
                Some(hash) => self.lookup(TableKey::Maglev, hash, pool),
                None => self.round_robin(pool, slow_start, now),
            },
        }
    }

    fn round_robin(
        &mut self,
        pool: &[usize],
        slow_start: Option<Duration>,
        now: Instant,
    ) -> Option<usize> {
        let Self {
            weights,
            stats,
            endpoints,
            wrr,
            ..
        } = self;
        weights.clear();
        weights.extend(
            pool.iter()
                .map(|&i| stats[i].effective_weight(&endpoints[i], slow_start, now)),
        );
        wrr::next(pool, weights, wrr)
    }

    /// Consistent hashing. Slow start does not apply: growing weights would
    /// rebuild the table again and again and move keys each time, which is
    /// what consistent hashing is there to avoid. Tables hold every
    /// endpoint, ready or not, so readiness flaps move no other keys.
    fn lookup(&mut self, key: TableKey, hash: u64, pool: &[usize]) -> Option<usize> {
        if self.table.as_ref().is_none_or(|(k, _)| *k != key) {
            let members: Vec<(SocketAddr, u32)> = self
                .endpoints
                .iter()
                .map(|e| (e.mesh_addr, weight(e)))
                .collect();
            let table = match key {
                TableKey::Ring { min_size } => {
                    let ring = Ring::build(&members, min_size, self.ring_per_weight);
                    self.ring_per_weight = Some(ring.per_weight());
                    Table::Ring(ring)
                }
                TableKey::Maglev => Table::Maglev(Maglev::build(&members)),
            };
            self.table_builds += 1;
            self.table = Some((key, table));
        }
        let accept = |i: usize| pool.binary_search(&i).is_ok();
        match &self.table {
            Some((_, Table::Ring(ring))) => ring.lookup(hash, accept),
            Some((_, Table::Maglev(maglev))) => maglev.lookup(hash, accept),
            None => None,
        }
    }
}

#[cfg(test)]
impl ServiceState {
    pub(super) fn tracked(&self) -> Vec<SocketAddr> {
        self.stats.iter().map(|s| s.addr).collect()
    }

    pub(super) fn stats_of(&self, addr: SocketAddr) -> Option<&EndpointStats> {
        self.stats.iter().find(|s| s.addr == addr)
    }
}

/// The median latency estimate of the endpoints that have answered. An
/// endpoint yet to answer (new, or all of them at start) counts as this:
/// a fixed guess would starve it behind a fast fleet, or flood it before a
/// slow fleet, until the guess decayed.
fn typical_rtt_ns(stats: &[EndpointStats], now: Instant, decay: Duration) -> f64 {
    let mut known: Vec<f64> = stats
        .iter()
        .filter(|s| s.rtt.measured())
        .map(|s| s.rtt.value(now, decay))
        .collect();
    if known.is_empty() {
        return DEFAULT_RTT_NS;
    }
    let mid = known.len() / 2;
    *known.select_nth_unstable_by(mid, f64::total_cmp).1
}

/// The EWMA decay answers are recorded with: the policy's, or the default
/// when the algorithm does not use latency (kept up to date anyway so that
/// a switch to peak EWMA starts from evidence).
pub(super) fn decay_of(lb: &LoadBalancer) -> Duration {
    match lb.algorithm {
        Algorithm::PeakEwma { decay } => decay,
        _ => crate::core::directory::policy::DEFAULT_EWMA_DECAY,
    }
}
