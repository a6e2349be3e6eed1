//! The proxy's workload identity: the shared state the TLS stacks read
//! ([`state`]), and how it is filled: from the controller's CA
//! ([`manager`] over [`ca`]) or from PEM files ([`cert`], static mode).

pub mod ca;
pub mod cert;
#[cfg(any(test, feature = "test-util"))]
pub mod fake;
pub mod manager;
pub mod metrics;

/// Re-exported: identity writes them; they live in `core` because the TLS
/// stacks and discovery (the trust bundle) use them too.
pub use crate::core::credentials::{IdentityState, TrustBundle, WorkloadCert};
pub use ca::{CaClient, CaError, GrpcCaClient, Issued};
pub use manager::{IdentityError, IdentityManager};
pub use metrics::IdentityMetrics;
