//! The proxy's integration tests, one test binary with a module per area:
//! the binary's control side (`control_binary`) and the data path run in
//! this process on loopback (`data_mesh`, `data_tls`, `data_transparent`,
//! `data_routes`, `data_gateway_tls`).
//! In-process proxies log through the test subscriber, so a failing test
//! shows their log.
//!
//! Run one area: `cargo test -p mycel-sidecar --test proxy data_tls::`.

// Test scaffolding: a failure here is a broken test setup, best shown as a panic.
#![allow(clippy::unwrap_used)]

mod control_binary;
mod data_gateway_tls;
mod data_mesh;
mod data_routes;
mod data_tls;
mod data_transparent;
mod identity;

/// A discovery handle holding no policy: the inbound side applies the mesh
/// default (every mesh-port caller has an identity, so all pass).
pub fn no_policy() -> mycel_sidecar::core::directory::Discovery {
    use std::sync::Arc;

    use mycel_sidecar::core::directory::{Discovery, Snapshot, Subscriptions};
    let (_tx, rx) = tokio::sync::watch::channel(Arc::new(Snapshot::default()));
    Discovery::new(rx, Subscriptions::default())
}
