//! Service discovery on the proxy side.

pub mod handle;
pub mod model;

pub use handle::{Discovery, Subscriptions};
pub use model::{Endpoint, Protocol, Service, ServicePort, ServiceState, Snapshot};
