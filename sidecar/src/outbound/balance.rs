//! Picking an endpoint of a service for each request.
//!
//! [`Balancer`] implements the traffic policy's load balancing: peak-EWMA
//! or least-request power of two choices, weighted round-robin, ring hash
//! and Maglev, with weights, slow start, locality and outlier ejection. It
//! is pure state and arithmetic over the instants its callers give it, so
//! every rule is tested without a clock or a network.

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
