//! Circuit breaking (load shedding) per service: requests in flight,
//! requests waiting for a dial and opaque TCP tunnels are counted against
//! the service's [`CircuitBreaker`] limits, and beyond them the caller
//! answers at once instead of queueing.
//!
//! Counting is a permit: taking one is a `fetch_add` and a compare (undone
//! when over the limit), giving it back is its `Drop`, so no lock is ever
//! held while a request is in flight. Limits are read at each call, so a
//! lowered limit applies to the next request while those in flight drain.
//! A limit of 0 lets nothing through, except `max_requests_per_endpoint`,
//! where 0 means no limit (and endpoints are then not counted at all).

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex, PoisonError, RwLock};

use crate::core::directory::policy::CircuitBreaker;

/// Services tracked by default; see [`Breakers::new`].
pub const DEFAULT_MAX_SERVICES: usize = 4096;

/// Which limit was reached.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Limit {
    MaxConnections,
    MaxPendingRequests,
    MaxRequests,
    MaxRequestsPerEndpoint,
}

impl Limit {
    /// The policy field's name; also usable as a metric label.
    pub fn as_str(self) -> &'static str {
        match self {
            Limit::MaxConnections => "max_connections",
            Limit::MaxPendingRequests => "max_pending_requests",
            Limit::MaxRequests => "max_requests",
            Limit::MaxRequestsPerEndpoint => "max_requests_per_endpoint",
        }
    }
}

/// A request shed by the circuit breaker (answered `503`, kind
/// `overflow`). The message names the service and maybe an endpoint
/// address: mesh detail, not for external callers.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{limit} {max} reached for {service}{}", at(.endpoint))]
pub struct Overflow {
    pub limit: Limit,
    pub max: u32,
    pub service: String,
    pub endpoint: Option<SocketAddr>,
}

impl std::fmt::Display for Limit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

fn at(endpoint: &Option<SocketAddr>) -> String {
    endpoint.map(|e| format!(" at {e}")).unwrap_or_default()
}

/// The counters of one service.
#[derive(Debug, Default)]
struct Counters {
    connections: AtomicU32,
    pending: AtomicU32,
    requests: AtomicU32,
    /// Only endpoints with a request in flight, or recently had one.
    endpoints: Mutex<HashMap<SocketAddr, Arc<AtomicU32>>>,
}

/// Circuit breakers by service key, made on first use.
///
/// Bounded without losing counts: a service whose permits are all back
/// has nothing to remember, so when the map is full such services are
/// dropped. It can only outgrow `max_services` while more services than
/// that have permits out at once.
#[derive(Debug)]
pub struct Breakers {
    max_services: usize,
    services: RwLock<HashMap<String, Arc<Counters>>>,
}

impl Default for Breakers {
    fn default() -> Self {
        Breakers::new(DEFAULT_MAX_SERVICES)
    }
}

impl Breakers {
    pub fn new(max_services: usize) -> Breakers {
        Breakers {
            max_services,
            services: RwLock::new(HashMap::new()),
        }
    }

    /// A request in flight to `service` on `endpoint`, until the permit is
    /// dropped (when the response body ends or the request is abandoned).
    pub fn request(
        &self,
        service: &str,
        cfg: &CircuitBreaker,
        endpoint: SocketAddr,
    ) -> Result<RequestPermit, Overflow> {
        let counters = self.counters(service);
        let service_permit = Permit::take(&counters, |c| &c.requests, cfg.max_requests)
            .ok_or_else(|| overflow(Limit::MaxRequests, cfg.max_requests, service, None))?;
        let endpoint_permit = match cfg.max_requests_per_endpoint {
            0 => None,
            max => {
                let counter = endpoint_counter(&counters, endpoint);
                Some(EndpointPermit::take(counter, max).ok_or_else(|| {
                    overflow(Limit::MaxRequestsPerEndpoint, max, service, Some(endpoint))
                })?)
            }
        };
        Ok(RequestPermit {
            _endpoint: endpoint_permit,
            _service: service_permit,
        })
    }

    /// A request waiting for a connection to an endpoint to be dialed;
    /// dropped once it has one.
    pub fn pending(&self, service: &str, cfg: &CircuitBreaker) -> Result<PendingPermit, Overflow> {
        let counters = self.counters(service);
        Permit::take(&counters, |c| &c.pending, cfg.max_pending_requests)
            .map(|_permit| PendingPermit { _permit })
            .ok_or_else(|| {
                overflow(
                    Limit::MaxPendingRequests,
                    cfg.max_pending_requests,
                    service,
                    None,
                )
            })
    }

    /// An opaque TCP tunnel open to `service`, until dropped.
    pub fn connection(
        &self,
        service: &str,
        cfg: &CircuitBreaker,
    ) -> Result<ConnectionPermit, Overflow> {
        let counters = self.counters(service);
        Permit::take(&counters, |c| &c.connections, cfg.max_connections)
            .map(|_permit| ConnectionPermit { _permit })
            .ok_or_else(|| overflow(Limit::MaxConnections, cfg.max_connections, service, None))
    }

    /// Services tracked now.
    pub fn len(&self) -> usize {
        self.services
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn counters(&self, service: &str) -> Arc<Counters> {
        // Counters are atomics, so a panic under the lock leaves nothing
        // half-done: poisoning is ignored.
        if let Some(c) = self
            .services
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .get(service)
        {
            return c.clone();
        }
        let mut map = self
            .services
            .write()
            .unwrap_or_else(PoisonError::into_inner);
        if let Some(c) = map.get(service) {
            return c.clone();
        }
        if map.len() >= self.max_services {
            // Only the map holds it: no permit out and no caller about to
            // take one (callers clone under this lock), so all counts are 0.
            map.retain(|_, c| Arc::strong_count(c) > 1);
        }
        let counters = Arc::new(Counters::default());
        map.insert(service.to_string(), counters.clone());
        counters
    }
}

fn overflow(limit: Limit, max: u32, service: &str, endpoint: Option<SocketAddr>) -> Overflow {
    Overflow {
        limit,
        max,
        service: service.to_string(),
        endpoint,
    }
}

/// Endpoints of one service seen at once are bounded by discovery, but
/// addresses come and go: past this many, idle ones are forgotten.
const PRUNE_ENDPOINTS_AT: usize = 256;

fn endpoint_counter(counters: &Counters, endpoint: SocketAddr) -> Arc<AtomicU32> {
    let mut map = counters
        .endpoints
        .lock()
        .unwrap_or_else(PoisonError::into_inner);
    if let Some(c) = map.get(&endpoint) {
        return c.clone();
    }
    if map.len() >= PRUNE_ENDPOINTS_AT {
        map.retain(|_, c| Arc::strong_count(c) > 1);
    }
    let counter = Arc::new(AtomicU32::new(0));
    map.insert(endpoint, counter.clone());
    counter
}

/// Adds one to `counter` unless it is at `max`. Over the limit the add is
/// undone; a racing taker may then see the count one too high for an
/// instant and be refused, never the other way round.
fn try_increment(counter: &AtomicU32, max: u32) -> bool {
    let before = counter.fetch_add(1, Ordering::AcqRel);
    if before >= max {
        counter.fetch_sub(1, Ordering::AcqRel);
        return false;
    }
    true
}

/// One count in one of a service's counters.
#[derive(Debug)]
struct Permit {
    counters: Arc<Counters>,
    which: fn(&Counters) -> &AtomicU32,
}

impl Permit {
    fn take(
        counters: &Arc<Counters>,
        which: fn(&Counters) -> &AtomicU32,
        max: u32,
    ) -> Option<Permit> {
        try_increment(which(counters), max).then(|| Permit {
            counters: counters.clone(),
            which,
        })
    }
}

impl Drop for Permit {
    fn drop(&mut self) {
        (self.which)(&self.counters).fetch_sub(1, Ordering::AcqRel);
    }
}

#[derive(Debug)]
struct EndpointPermit(Arc<AtomicU32>);

impl EndpointPermit {
    fn take(counter: Arc<AtomicU32>, max: u32) -> Option<EndpointPermit> {
        // Not `then_some`: a permit made eagerly would be dropped on
        // refusal, taking back a count that was never added.
        if try_increment(&counter, max) {
            Some(EndpointPermit(counter))
        } else {
            None
        }
    }
}

impl Drop for EndpointPermit {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

/// Counts one request against `max_requests` and, if set,
/// `max_requests_per_endpoint`, until dropped.
#[derive(Debug)]
pub struct RequestPermit {
    _endpoint: Option<EndpointPermit>,
    _service: Permit,
}

/// Counts one request against `max_pending_requests` until dropped.
#[derive(Debug)]
pub struct PendingPermit {
    _permit: Permit,
}

/// Counts one tunnel against `max_connections` until dropped.
#[derive(Debug)]
pub struct ConnectionPermit {
    _permit: Permit,
}

#[cfg(test)]
mod tests;
