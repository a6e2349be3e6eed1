//! The proxy's workload identity.

pub mod state;

pub use state::{IdentityState, TrustBundle, WorkloadCert};
