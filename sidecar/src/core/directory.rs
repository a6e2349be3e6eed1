//! The proxy's directory of the mesh: what it knows about services and
//! endpoints ([`model`]: one immutable snapshot at a time; [`policy`] and
//! [`routes`]: how to reach them; [`gateway_certs`]: the followed Gateway's
//! HTTPS certificates) and how the data path reads it and asks
//! for more ([`handle`]). `discovery` fills it (from
//! the controller's stream or a static file); `outbound`, `gateway` and
//! `admin` read it. Kept here, below both, so that readers and the writer
//! never import each other.

pub mod gateway_certs;
pub mod gateway_policy;
pub mod handle;
pub mod model;
pub mod policy;
pub mod routes;

pub use handle::{Change, Discovery, SubscribeError, Subscriptions};
pub use model::{Endpoint, Protocol, Service, ServicePort, ServiceState, Snapshot};
pub use policy::{PolicyRules, TrafficPolicy};
