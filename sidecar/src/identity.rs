//! The proxy's workload identity: the shared state the TLS stacks read
//! ([`state`]), and how it is filled: from the controller's CA
//! ([`manager`] over [`ca`]) or from PEM files ([`cert`], static mode).

pub mod backoff;
pub mod ca;
pub mod cert;
pub mod channel;
#[cfg(any(test, feature = "test-util"))]
pub mod fake;
pub mod manager;
pub mod metrics;
pub mod state;

pub use ca::{CaClient, CaError, GrpcCaClient, Issued};
pub use manager::{IdentityError, IdentityManager};
pub use metrics::IdentityMetrics;
pub use state::{IdentityState, TrustBundle, WorkloadCert};
