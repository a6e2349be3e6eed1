//! What recording one request's metrics costs: the label lookup the proxy
//! did before (an owned label set built for every request, `String`s
//! included) against the table of `metrics/requests.rs` (borrowed label
//! parts, handles shared), which also feeds the latency histogram.
//! Prints nanoseconds per request; asserts nothing.
//!
//! `cargo bench -p mycel-sidecar --bench request_metrics`

use std::hint::black_box;
use std::time::Instant;

use mycel_sidecar::metrics::{Direction, RequestKey, RequestMetrics};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OwnedRequestLabels {
    direction: String,
    service: String,
    code: u16,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OwnedDurationLabels {
    direction: String,
    service: String,
    route: String,
    code_class: String,
    peer: String,
}

const ROUNDS: u32 = 2_000_000;
const SERVICES: [&str; 4] = [
    "catalog.shop",
    "reviews.shop",
    "ratings.shop",
    "frontend.shop",
];
const PEER: &str = "spiffe://cluster.local/ns/shop/sa/frontend";

fn per_request(name: &str, mut f: impl FnMut(u32)) {
    // Warm up: every series exists before the clock starts.
    for i in 0..10_000 {
        f(i);
    }
    let start = Instant::now();
    for i in 0..ROUNDS {
        f(i);
    }
    let ns = start.elapsed().as_nanos() as f64 / f64::from(ROUNDS);
    println!("{name:<58} {ns:>7.1} ns/request");
}

fn main() {
    let requests: Family<OwnedRequestLabels, Counter> = Family::default();
    per_request("before: counter, owned labels built per request", |i| {
        requests
            .get_or_create(&OwnedRequestLabels {
                direction: "inbound".to_string(),
                service: SERVICES[(i % 4) as usize].to_string(),
                code: 200,
            })
            .inc();
    });

    let durations: Family<OwnedDurationLabels, Histogram, fn() -> Histogram> =
        Family::new_with_constructor(|| {
            Histogram::new(mycel_sidecar::metrics::LATENCY_BUCKETS.into_iter())
        });
    per_request(
        "naive: counter + histogram, owned labels per request",
        |i| {
            let service = SERVICES[(i % 4) as usize];
            requests
                .get_or_create(&OwnedRequestLabels {
                    direction: "inbound".to_string(),
                    service: service.to_string(),
                    code: 200,
                })
                .inc();
            durations
                .get_or_create(&OwnedDurationLabels {
                    direction: "inbound".to_string(),
                    service: service.to_string(),
                    route: String::new(),
                    code_class: "2xx".to_string(),
                    peer: PEER.to_string(),
                })
                .observe(0.00042);
        },
    );

    let mut registry = Registry::default();
    let table = RequestMetrics::new(&mut registry);
    per_request(
        "now: counter + histogram, borrowed labels (one lookup)",
        |i| {
            let h = table.handles(RequestKey {
                direction: Direction::Inbound,
                service: SERVICES[(i % 4) as usize],
                route: "",
                peer: PEER,
                code: 200,
            });
            h.requests.inc();
            h.duration.observe(black_box(0.00042));
        },
    );
}
