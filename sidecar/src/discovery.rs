//! Service discovery on the proxy side: the snapshot model and handle the
//! data path reads ([`model`], [`handle`]), and what fills them: the
//! controller stream ([`client`], through [`cache`] and [`convert`]) or a
//! static file ([`static_file`]).

pub mod cache;
pub mod client;
pub mod convert;
pub mod handle;
pub mod model;
pub mod readiness;
pub mod static_file;
pub mod status;

pub use client::{Connect, DiscoveryClient, HelloParams};
pub use handle::{Change, Discovery, SubscribeError, Subscriptions};
pub use model::{Endpoint, Protocol, Service, ServicePort, ServiceState, Snapshot};
pub use status::{DiscoveryMetrics, DiscoveryStatus};
