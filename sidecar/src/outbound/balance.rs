//! Picking an endpoint of a service for each request.
//!
//! [`Balancer`] implements the traffic policy's load balancing: peak-EWMA
//! or least-request power of two choices, weighted round-robin, ring hash
//! and Maglev, with weights, slow start, locality and outlier ejection. It
//! is pure state and arithmetic over the instants its callers give it, so
//! every rule is tested without a clock or a network.
//!
//! [`RoundRobin`] is the plain round-robin the data path used before.

mod balancer;
mod ewma;
mod hash;
mod maglev;
mod outlier;
mod p2c;
mod ring;
mod service;
mod stats;
mod wrr;

pub use balancer::{
    BalanceObserver, Balancer, EjectReason, NoopObserver, Outcome, Pick, PickInput,
};
pub use hash::request_hash;

use std::collections::HashMap;
use std::sync::Mutex;

use crate::core::directory::Endpoint;

/// The `cursor`-th ready endpoint, wrapping around. Pure so the rotation
/// rules are tested without shared state.
pub fn pick_ready(endpoints: &[Endpoint], cursor: usize) -> Option<&Endpoint> {
    let ready = endpoints.iter().filter(|e| e.ready).count();
    if ready == 0 {
        return None;
    }
    endpoints.iter().filter(|e| e.ready).nth(cursor % ready)
}

/// One cursor per service, shared by all requests of this proxy.
#[derive(Debug, Default)]
pub struct RoundRobin {
    cursors: Mutex<HashMap<String, usize>>,
}

impl RoundRobin {
    pub fn pick<'a>(&self, service_key: &str, endpoints: &'a [Endpoint]) -> Option<&'a Endpoint> {
        let cursor = {
            let mut cursors = self.cursors.lock().unwrap_or_else(|e| e.into_inner());
            let c = cursors.entry(service_key.to_string()).or_insert(0);
            let now = *c;
            *c = c.wrapping_add(1);
            now
        };
        pick_ready(endpoints, cursor)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ep(port: u16, ready: bool) -> Endpoint {
        Endpoint {
            mesh_addr: std::net::SocketAddr::from(([127, 0, 0, 1], port)),
            identity: "spiffe://cluster.local/ns/shop/sa/catalog".parse().unwrap(),
            workload: format!("w{port}"),
            zone: String::new(),
            weight: 1,
            ready,
        }
    }

    #[test]
    fn picks() {
        let all = [ep(1, true), ep(2, true), ep(3, true)];
        let mixed = [ep(1, false), ep(2, true), ep(3, false), ep(4, true)];
        let none = [ep(1, false)];
        let cases: Vec<(&[Endpoint], usize, Option<u16>)> = vec![
            (&all, 0, Some(1)),
            (&all, 1, Some(2)),
            (&all, 2, Some(3)),
            (&all, 3, Some(1)),
            (&all, usize::MAX, Some(1)),
            (&mixed, 0, Some(2)),
            (&mixed, 1, Some(4)),
            (&mixed, 2, Some(2)),
            (&none, 0, None),
            (&[], 5, None),
        ];
        for (endpoints, cursor, want) in cases {
            assert_eq!(
                pick_ready(endpoints, cursor).map(|e| e.mesh_addr.port()),
                want,
                "cursor {cursor}"
            );
        }
    }

    #[test]
    fn rotates_per_service() {
        let rr = RoundRobin::default();
        let eps = [ep(1, true), ep(2, true)];
        let got: Vec<u16> = (0..4)
            .map(|_| rr.pick("a.shop", &eps).unwrap().mesh_addr.port())
            .collect();
        assert_eq!(got, vec![1, 2, 1, 2]);
        assert_eq!(rr.pick("b.shop", &eps).unwrap().mesh_addr.port(), 1);
    }
}
