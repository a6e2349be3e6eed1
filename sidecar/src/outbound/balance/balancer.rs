//! The balancer the data path asks for an endpoint and tells how the
//! request went. One per proxy, shared by every request; one lock per
//! service, held for a pick or an answer and never across an await.

use std::collections::HashMap;
use std::fmt;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use crate::core::directory::policy::{LoadBalancer, OutlierDetection};
use crate::core::directory::Endpoint;

use super::service::{decay_of, Answer, Event, ServiceState};

/// How often, in callers' time, services nobody asked about are dropped.
const SWEEP_EVERY: Duration = Duration::from_secs(60);

/// A service not picked from for this long is forgotten (its endpoints'
/// statistics with it), so state follows the services in use.
const IDLE: Duration = Duration::from_secs(600);

/// Told when endpoints are ejected and return, for logs and metrics. Called
/// with no lock held.
pub trait BalanceObserver: Send + Sync {
    fn ejected(&self, service: &str, endpoint: &Endpoint, reason: EjectReason, duration: Duration);
    fn returned(&self, service: &str, endpoint: &Endpoint);
}

/// An observer that ignores everything.
#[derive(Clone, Copy, Debug, Default)]
pub struct NoopObserver;

impl BalanceObserver for NoopObserver {
    fn ejected(&self, _: &str, _: &Endpoint, _: EjectReason, _: Duration) {}
    fn returned(&self, _: &str, _: &Endpoint) {}
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EjectReason {
    Consecutive5xx,
    ConsecutiveGatewayErrors,
    SuccessRate,
}

impl EjectReason {
    /// For metric labels and log fields.
    pub fn as_str(self) -> &'static str {
        match self {
            EjectReason::Consecutive5xx => "consecutive_5xx",
            EjectReason::ConsecutiveGatewayErrors => "consecutive_gateway_errors",
            EjectReason::SuccessRate => "success_rate",
        }
    }
}

/// How a request to a picked endpoint went.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// Any answer but a 5xx or a 429.
    Success,
    /// A 5xx answer.
    ServerError(u16),
    /// 429: the endpoint sheds load.
    Overloaded,
    ConnectFailure,
    /// The stream or connection broke.
    Reset,
    Timeout,
}

impl Outcome {
    /// The outcome of an answer with HTTP status `status`.
    pub fn of_status(status: u16) -> Self {
        match status {
            429 => Outcome::Overloaded,
            500..=599 => Outcome::ServerError(status),
            _ => Outcome::Success,
        }
    }

    pub(super) fn is_failure(self) -> bool {
        self != Outcome::Success
    }
}

/// What a pick needs to know of the request, besides the service.
#[derive(Clone, Copy, Debug)]
pub struct PickInput<'a> {
    /// The request's [`request_hash`](super::request_hash), for ring hash
    /// and Maglev.
    pub hash: Option<u64>,
    /// The caller's zone, for locality; empty when unknown.
    pub local_zone: &'a str,
    pub now: Instant,
}

pub struct Balancer {
    observer: Arc<dyn BalanceObserver>,
    services: Mutex<Services>,
}

struct Services {
    by_key: HashMap<String, Arc<ServiceCell>>,
    /// Seeds each service's own generator.
    seeds: StdRng,
    last_sweep: Option<Instant>,
}

pub(super) struct ServiceCell {
    key: String,
    observer: Arc<dyn BalanceObserver>,
    state: Mutex<ServiceState>,
}

impl ServiceCell {
    pub(super) fn lock(&self) -> MutexGuard<'_, ServiceState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn tell(&self, events: Vec<Event>) {
        for event in events {
            match event {
                Event::Ejected(e, reason, time) => {
                    self.observer.ejected(&self.key, &e, reason, time)
                }
                Event::Returned(e) => self.observer.returned(&self.key, &e),
            }
        }
    }
}

impl Balancer {
    pub fn new(observer: Arc<dyn BalanceObserver>) -> Self {
        Self::with_rng(observer, StdRng::from_entropy())
    }

    /// A balancer whose random choices are repeatable, for tests and
    /// simulations.
    pub fn with_seed(observer: Arc<dyn BalanceObserver>, seed: u64) -> Self {
        Self::with_rng(observer, StdRng::seed_from_u64(seed))
    }

    fn with_rng(observer: Arc<dyn BalanceObserver>, seeds: StdRng) -> Self {
        Self {
            observer,
            services: Mutex::new(Services {
                by_key: HashMap::new(),
                seeds,
                last_sweep: None,
            }),
        }
    }

    /// Picks an endpoint among `endpoints` that are ready and not ejected
    /// (among the ready ones if all are ejected). `avoid`: the endpoint of
    /// the previous try, never picked again when another candidate exists.
    /// None only when no endpoint is ready.
    ///
    /// The returned [`Pick`] counts as a request in flight until it is
    /// finished or dropped.
    pub fn pick(
        &self,
        service_key: &str,
        endpoints: &[Endpoint],
        lb: &LoadBalancer,
        outlier: Option<&OutlierDetection>,
        input: &PickInput<'_>,
        avoid: Option<SocketAddr>,
    ) -> Option<Pick> {
        let cell = self.cell(service_key, input.now);
        let mut events = Vec::new();
        let picked = cell
            .lock()
            .pick(endpoints, lb, outlier, input, avoid, &mut events);
        cell.tell(events);
        let (endpoint, in_flight) = picked?;
        Some(Pick {
            endpoint,
            in_flight: Some(in_flight),
            start: input.now,
            decay: decay_of(lb),
            outlier: outlier.cloned(),
            cell,
        })
    }

    /// How many services the balancer keeps state for.
    pub fn services(&self) -> usize {
        self.lock().by_key.len()
    }

    fn lock(&self) -> MutexGuard<'_, Services> {
        self.services.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn cell(&self, key: &str, now: Instant) -> Arc<ServiceCell> {
        let mut services = self.lock();
        let dropped = services.sweep(now);
        let cell = match services.by_key.get(key) {
            Some(cell) => cell.clone(),
            None => {
                let rng = StdRng::seed_from_u64(services.seeds.gen());
                let cell = Arc::new(ServiceCell {
                    key: key.to_string(),
                    observer: self.observer.clone(),
                    state: Mutex::new(ServiceState::new(rng, now)),
                });
                services.by_key.insert(key.to_string(), cell.clone());
                cell
            }
        };
        drop(services);
        for (cell, events) in dropped {
            cell.tell(events);
        }
        cell
    }
}

impl Services {
    /// Drops services idle for long; returns them with the returns of
    /// their ejected endpoints, to be told once the lock is released.
    fn sweep(&mut self, now: Instant) -> Vec<(Arc<ServiceCell>, Vec<Event>)> {
        let due = self
            .last_sweep
            .is_none_or(|t| now.saturating_duration_since(t) >= SWEEP_EVERY);
        if !due {
            return Vec::new();
        }
        self.last_sweep = Some(now);
        let mut dropped = Vec::new();
        self.by_key.retain(|_, cell| {
            // A cell a `Pick` still holds is in use; a locked one is being
            // used right now.
            if Arc::strong_count(cell) > 1 {
                return true;
            }
            let Ok(mut state) = cell.state.try_lock() else {
                return true;
            };
            if now.saturating_duration_since(state.last_used) < IDLE {
                return true;
            }
            let mut events = Vec::new();
            state.drain(now, &mut events);
            drop(state);
            dropped.push((cell.clone(), events));
            false
        });
        dropped
    }
}

impl fmt::Debug for Balancer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Balancer")
            .field("services", &self.services())
            .finish()
    }
}

/// An endpoint picked for one try of a request. Finish it with the
/// outcome; dropping it unfinished counts as cancelled (no longer in
/// flight, nothing learnt).
pub struct Pick {
    pub endpoint: Endpoint,
    in_flight: Option<Arc<AtomicU32>>,
    start: Instant,
    decay: Duration,
    outlier: Option<OutlierDetection>,
    cell: Arc<ServiceCell>,
}

impl Pick {
    /// Records how the try went, measuring its latency from the pick's
    /// `now` to the current time.
    pub fn finish(self, outcome: Outcome) {
        self.finish_at(outcome, Instant::now());
    }

    /// As [`finish`](Self::finish), with the time the answer came.
    pub fn finish_at(mut self, outcome: Outcome, now: Instant) {
        let Some(in_flight) = self.in_flight.take() else {
            return;
        };
        in_flight.fetch_sub(1, Ordering::Relaxed);
        let mut events = Vec::new();
        let answer = Answer {
            addr: self.endpoint.mesh_addr,
            picked: &in_flight,
            outcome,
            start: self.start,
            now,
            decay: self.decay,
            outlier: self.outlier.as_ref(),
        };
        self.cell.lock().record(&answer, &mut events);
        self.cell.tell(events);
    }
}

impl Drop for Pick {
    fn drop(&mut self) {
        if let Some(in_flight) = self.in_flight.take() {
            in_flight.fetch_sub(1, Ordering::Relaxed);
        }
    }
}

impl fmt::Debug for Pick {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Pick")
            .field("service", &self.cell.key)
            .field("endpoint", &self.endpoint.mesh_addr)
            .field("start", &self.start)
            .finish()
    }
}

#[cfg(test)]
mod tests;
