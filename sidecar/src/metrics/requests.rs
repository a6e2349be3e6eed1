//! Per-request metrics: the request counter, the latency histogram and
//! the gRPC status counter, looked up by borrowed label parts.
//!
//! A request's labels are strings the proxy already holds (the service
//! key, the route name, the caller's SPIFFE ID); building owned label sets
//! to look families up would cost allocations on every request. The table
//! here finds a request's handles from `&str` parts (hash, then compare),
//! so the label strings are copied once per distinct series, never per
//! request.

use std::hash::BuildHasher;
use std::sync::{Arc, OnceLock, RwLock};

use hashbrown::HashTable;
use prometheus_client::encoding::{EncodeLabelSet, EncodeLabelValue, LabelValueEncoder};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

use super::Direction;

/// Upper bounds of the latency buckets, in seconds: a sidecar hop is tens
/// to hundreds of microseconds, a slow backend seconds.
pub const LATENCY_BUCKETS: [f64; 16] = [
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
    5.0, 10.0,
];

/// Distinct series kept at most; past it new label combinations are
/// counted under [`OVERFLOW_LABEL`], so a flood of new peers or services
/// cannot grow the proxy's memory without bound.
pub const MAX_SERIES: usize = 10_000;
pub const OVERFLOW_LABEL: &str = "overflow";

/// gRPC status codes 0..=16; others are counted as 2 (UNKNOWN), as the
/// gRPC specification says a client must.
const GRPC_CODES: usize = 17;

#[derive(Clone, Copy, Debug, Hash, PartialEq, Eq)]
pub enum CodeClass {
    Informational,
    Success,
    Redirection,
    ClientError,
    ServerError,
}

impl CodeClass {
    pub fn of(code: u16) -> CodeClass {
        match code {
            0..=199 => CodeClass::Informational,
            200..=299 => CodeClass::Success,
            300..=399 => CodeClass::Redirection,
            400..=499 => CodeClass::ClientError,
            _ => CodeClass::ServerError,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            CodeClass::Informational => "1xx",
            CodeClass::Success => "2xx",
            CodeClass::Redirection => "3xx",
            CodeClass::ClientError => "4xx",
            CodeClass::ServerError => "5xx",
        }
    }
}

impl EncodeLabelValue for CodeClass {
    fn encode(&self, encoder: &mut LabelValueEncoder) -> Result<(), std::fmt::Error> {
        std::fmt::Write::write_str(encoder, self.as_str())
    }
}

/// The labels of one request, borrowed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RequestKey<'a> {
    pub direction: Direction,
    /// As `mycel_requests_total`'s `service`.
    pub service: &'a str,
    /// `<namespace>/<name>` of the route that matched; empty when none.
    pub route: &'a str,
    /// Inbound: the caller's SPIFFE ID (or `unauthenticated`); empty
    /// elsewhere.
    pub peer: &'a str,
    pub code: u16,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RequestLabels {
    pub direction: Direction,
    /// `<name>.<namespace>` on the client side; `app:<port>` on the inbound side.
    pub service: String,
    pub code: u16,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct DurationLabels {
    direction: Direction,
    service: String,
    route: String,
    code_class: CodeClass,
    peer: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct GrpcLabels {
    direction: Direction,
    service: String,
    grpc_status: u8,
}

/// What one series records into.
#[derive(Clone, Debug)]
pub struct RequestHandles {
    pub requests: Counter,
    pub duration: Histogram,
    grpc: Arc<GrpcCounters>,
}

impl RequestHandles {
    /// Counts a gRPC status (the `grpc-status` of the response's trailers
    /// or trailers-only headers).
    pub fn grpc_status(&self, status: u32) {
        let code = if (status as usize) < GRPC_CODES {
            status as usize
        } else {
            2
        };
        let counter = self.grpc.slots[code].get_or_init(|| {
            self.grpc
                .family
                .get_or_create(&GrpcLabels {
                    direction: self.grpc.direction,
                    service: self.grpc.service.clone(),
                    grpc_status: code as u8,
                })
                .clone()
        });
        counter.inc();
    }
}

/// A service's gRPC status counters, resolved on first use of each code.
#[derive(Debug)]
struct GrpcCounters {
    direction: Direction,
    service: String,
    family: Family<GrpcLabels, Counter>,
    slots: [OnceLock<Counter>; GRPC_CODES],
}

struct Entry {
    direction: Direction,
    service: Box<str>,
    route: Box<str>,
    peer: Box<str>,
    code: u16,
    handles: RequestHandles,
}

impl Entry {
    fn matches(&self, k: &RequestKey<'_>) -> bool {
        self.direction == k.direction
            && self.code == k.code
            && *self.service == *k.service
            && *self.route == *k.route
            && *self.peer == *k.peer
    }
}

fn fn_histogram() -> Histogram {
    Histogram::new(LATENCY_BUCKETS.into_iter())
}

/// The families and the lookup table in front of them. Cheap to clone.
#[derive(Clone)]
pub struct RequestMetrics {
    requests: Family<RequestLabels, Counter>,
    duration: Family<DurationLabels, Histogram, fn() -> Histogram>,
    grpc: Family<GrpcLabels, Counter>,
    table: Arc<RwLock<HashTable<Entry>>>,
    /// One per service key and direction, shared by its entries.
    grpc_by_service: Arc<RwLock<HashTable<Arc<GrpcCounters>>>>,
    hasher: std::collections::hash_map::RandomState,
}

impl std::fmt::Debug for RequestMetrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RequestMetrics").finish_non_exhaustive()
    }
}

impl RequestMetrics {
    pub fn new(registry: &mut Registry) -> Self {
        let m = Self {
            requests: Family::default(),
            duration: Family::new_with_constructor(fn_histogram as fn() -> Histogram),
            grpc: Family::default(),
            table: Arc::default(),
            grpc_by_service: Arc::default(),
            hasher: Default::default(),
        };
        registry.register(
            "mycel_requests",
            "HTTP requests handled, by listener, service and status code",
            m.requests.clone(),
        );
        registry.register(
            "mycel_request_duration_seconds",
            "Time from a request's arrival to its response headers, by listener, service, route, status class and (inbound) caller identity",
            m.duration.clone(),
        );
        registry.register(
            "mycel_grpc_responses",
            "gRPC responses by listener, service and grpc-status (trailers or trailers-only)",
            m.grpc.clone(),
        );
        m
    }

    fn hash(&self, k: &RequestKey<'_>) -> u64 {
        self.hasher
            .hash_one((k.direction, k.service, k.route, k.peer, k.code))
    }

    /// The handles of one series, created on first use.
    pub fn handles(&self, key: RequestKey<'_>) -> RequestHandles {
        let hash = self.hash(&key);
        if let Ok(table) = self.table.read() {
            if let Some(e) = table.find(hash, |e| e.matches(&key)) {
                return e.handles.clone();
            }
        }
        let Ok(mut table) = self.table.write() else {
            // A poisoned lock (a panic elsewhere) must not stop counting.
            return self.resolve(key);
        };
        if let Some(e) = table.find(hash, |e| e.matches(&key)) {
            return e.handles.clone();
        }
        if table.len() >= MAX_SERIES {
            drop(table);
            let capped = RequestKey {
                service: OVERFLOW_LABEL,
                route: "",
                peer: if key.peer.is_empty() {
                    ""
                } else {
                    OVERFLOW_LABEL
                },
                ..key
            };
            if key.service != OVERFLOW_LABEL {
                return self.handles(capped);
            }
            return self.resolve(capped);
        }
        let handles = self.resolve(key);
        let entry = Entry {
            direction: key.direction,
            service: key.service.into(),
            route: key.route.into(),
            peer: key.peer.into(),
            code: key.code,
            handles: handles.clone(),
        };
        let hasher = &self.hasher;
        table.insert_unique(hash, entry, |e| {
            hasher.hash_one((e.direction, &*e.service, &*e.route, &*e.peer, e.code))
        });
        handles
    }

    fn resolve(&self, key: RequestKey<'_>) -> RequestHandles {
        let requests = self
            .requests
            .get_or_create(&RequestLabels {
                direction: key.direction,
                service: key.service.to_string(),
                code: key.code,
            })
            .clone();
        let duration = self
            .duration
            .get_or_create(&DurationLabels {
                direction: key.direction,
                service: key.service.to_string(),
                route: key.route.to_string(),
                code_class: CodeClass::of(key.code),
                peer: key.peer.to_string(),
            })
            .clone();
        RequestHandles {
            requests,
            duration,
            grpc: self.grpc_counters(key.direction, key.service),
        }
    }

    fn grpc_counters(&self, direction: Direction, service: &str) -> Arc<GrpcCounters> {
        let hash = self.hasher.hash_one((direction, service));
        let matches = |g: &Arc<GrpcCounters>| g.direction == direction && g.service == service;
        if let Ok(t) = self.grpc_by_service.read() {
            if let Some(g) = t.find(hash, matches) {
                return g.clone();
            }
        }
        let fresh = Arc::new(GrpcCounters {
            direction,
            service: service.to_string(),
            family: self.grpc.clone(),
            slots: Default::default(),
        });
        let Ok(mut t) = self.grpc_by_service.write() else {
            return fresh;
        };
        if let Some(g) = t.find(hash, matches) {
            return g.clone();
        }
        let hasher = &self.hasher;
        t.insert_unique(hash, fresh.clone(), |g| {
            hasher.hash_one((g.direction, g.service.as_str()))
        });
        fresh
    }

    /// Counts one request in `mycel_requests_total` only (a mirror copy:
    /// no listener saw it, so it has no latency of its own).
    pub fn count(&self, direction: Direction, service: &str, code: u16) {
        self.handles(RequestKey {
            direction,
            service,
            route: "",
            peer: "",
            code,
        })
        .requests
        .inc();
    }

    /// Series held in the lookup table (for tests).
    pub fn series(&self) -> usize {
        self.table.read().map(|t| t.len()).unwrap_or(0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key<'a>(service: &'a str, peer: &'a str, code: u16) -> RequestKey<'a> {
        RequestKey {
            direction: Direction::Inbound,
            service,
            route: "",
            peer,
            code,
        }
    }

    fn render(registry: &Registry) -> String {
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, registry).unwrap();
        out
    }

    #[test]
    fn one_series_is_resolved_once_and_shared() {
        let mut registry = Registry::default();
        let m = RequestMetrics::new(&mut registry);
        let peer = "spiffe://cluster.local/ns/shop/sa/frontend";
        for _ in 0..3 {
            let h = m.handles(key("app:8080", peer, 200));
            h.requests.inc();
            h.duration.observe(0.0003);
        }
        m.handles(key("app:8080", peer, 503)).duration.observe(2.0);
        assert_eq!(m.series(), 2);
        let out = render(&registry);
        for want in [
            r#"mycel_requests_total{direction="inbound",service="app:8080",code="200"} 3"#,
            r#"mycel_request_duration_seconds_bucket{le="0.0005",direction="inbound",service="app:8080",route="",code_class="2xx",peer="spiffe://cluster.local/ns/shop/sa/frontend"} 3"#,
            r#"mycel_request_duration_seconds_count{direction="inbound",service="app:8080",route="",code_class="5xx",peer="spiffe://cluster.local/ns/shop/sa/frontend"} 1"#,
        ] {
            assert!(out.contains(want), "missing {want} in\n{out}");
        }
    }

    #[test]
    fn grpc_statuses_are_counted_per_service_and_unknown_codes_as_2() {
        let mut registry = Registry::default();
        let m = RequestMetrics::new(&mut registry);
        let h = m.handles(RequestKey {
            direction: Direction::Outbound,
            service: "ratings.shop",
            route: "",
            peer: "",
            code: 200,
        });
        h.grpc_status(0);
        h.grpc_status(14);
        h.grpc_status(99);
        let out = render(&registry);
        for want in [
            r#"mycel_grpc_responses_total{direction="outbound",service="ratings.shop",grpc_status="0"} 1"#,
            r#"mycel_grpc_responses_total{direction="outbound",service="ratings.shop",grpc_status="14"} 1"#,
            r#"mycel_grpc_responses_total{direction="outbound",service="ratings.shop",grpc_status="2"} 1"#,
        ] {
            assert!(out.contains(want), "missing {want} in\n{out}");
        }
    }

    #[test]
    fn a_flood_of_new_peers_is_capped_into_the_overflow_series() {
        let mut registry = Registry::default();
        let m = RequestMetrics::new(&mut registry);
        for i in 0..(MAX_SERIES + 50) {
            let peer = format!("spiffe://cluster.local/ns/x/sa/p{i}");
            m.handles(key("app:80", &peer, 200)).requests.inc();
        }
        assert_eq!(m.series(), MAX_SERIES);
        let out = render(&registry);
        assert!(
            out.contains(
                r#"mycel_requests_total{direction="inbound",service="overflow",code="200"} 50"#
            ),
            "{}",
            out.lines()
                .filter(|l| l.contains("overflow"))
                .collect::<Vec<_>>()
                .join("\n")
        );
    }

    #[test]
    fn status_classes() {
        assert_eq!(CodeClass::of(101).as_str(), "1xx");
        assert_eq!(CodeClass::of(204).as_str(), "2xx");
        assert_eq!(CodeClass::of(304).as_str(), "3xx");
        assert_eq!(CodeClass::of(429).as_str(), "4xx");
        assert_eq!(CodeClass::of(504).as_str(), "5xx");
    }
}
