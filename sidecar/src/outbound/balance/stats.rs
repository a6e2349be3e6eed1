//! What the balancer keeps about one endpoint of one service.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::core::directory::Endpoint;

use super::ewma::PeakEwma;
use super::outlier::OutlierState;

/// Share of its weight an endpoint gets when it has just appeared, with
/// slow start on.
const SLOW_START_FLOOR: f64 = 0.1;

#[derive(Debug)]
pub(super) struct EndpointStats {
    pub(super) addr: SocketAddr,
    /// When the balancer first saw the endpoint; None for those in the
    /// first list it saw of the service, whose age it cannot know: a proxy
    /// restart must not put a whole running fleet back in slow start.
    pub(super) first_seen: Option<Instant>,
    /// Shared with the `Pick`s in flight so that finishing or dropping one
    /// needs no lock.
    pub(super) in_flight: Arc<AtomicU32>,
    pub(super) rtt: PeakEwma,
    pub(super) outlier: OutlierState,
}

impl EndpointStats {
    pub(super) fn new(addr: SocketAddr, first_seen: Option<Instant>, now: Instant) -> Self {
        Self {
            addr,
            first_seen,
            in_flight: Arc::new(AtomicU32::new(0)),
            rtt: PeakEwma::new(now),
            outlier: OutlierState::default(),
        }
    }

    pub(super) fn in_flight(&self) -> u32 {
        self.in_flight.load(Ordering::Relaxed)
    }

    /// The endpoint's weight scaled by slow start: from a tenth when first
    /// seen up to all of it after `slow_start`.
    pub(super) fn effective_weight(
        &self,
        e: &Endpoint,
        slow_start: Option<Duration>,
        now: Instant,
    ) -> f64 {
        let w = f64::from(weight(e));
        match (slow_start, self.first_seen) {
            (Some(ramp), Some(seen)) if !ramp.is_zero() => {
                let progress =
                    now.saturating_duration_since(seen).as_secs_f64() / ramp.as_secs_f64();
                w * (SLOW_START_FLOOR + (1.0 - SLOW_START_FLOOR) * progress.min(1.0))
            }
            _ => w,
        }
    }
}

/// An endpoint's weight; 0 means unset, the same as 1.
pub(super) fn weight(e: &Endpoint) -> u32 {
    e.weight.max(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slow_start_ramps_from_a_tenth() {
        let t0 = Instant::now();
        let s = Duration::from_secs(1);
        let mut e = Endpoint {
            mesh_addr: SocketAddr::from(([10, 0, 0, 1], 15001)),
            identity: "spiffe://cluster.local/ns/shop/sa/catalog".parse().unwrap(),
            workload: "w".into(),
            zone: String::new(),
            weight: 0,
            ready: true,
        };
        let fresh = EndpointStats::new(e.mesh_addr, Some(t0), t0);
        let old = EndpointStats::new(e.mesh_addr, None, t0);
        let ramp = Some(60 * s);
        let cases = [
            (&fresh, 0, 0, ramp, 0.1),
            (&fresh, 0, 30, ramp, 0.55),
            (&fresh, 0, 60, ramp, 1.0),
            (&fresh, 0, 600, ramp, 1.0),
            (&fresh, 4, 30, ramp, 2.2),
            (&fresh, 4, 0, None, 4.0),
            (&fresh, 4, 0, Some(Duration::ZERO), 4.0),
            (&old, 2, 0, ramp, 2.0),
        ];
        for (stats, weight, at, ramp, want) in cases {
            e.weight = weight;
            let got = stats.effective_weight(&e, ramp, t0 + at * s);
            assert!((got - want).abs() < 1e-9, "weight {weight} at {at}s: {got}");
        }
    }
}
