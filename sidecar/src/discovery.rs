//! Service discovery on the proxy side: what fills the directory the data
//! path reads (`core::directory`): the controller stream ([`client`],
//! through [`cache`] and [`convert`]) or a static file ([`static_file`]).

pub mod cache;
pub mod client;
pub mod convert;
pub mod readiness;
pub mod static_file;
pub mod status;

pub use client::{Connect, DiscoveryClient, HelloParams};
pub use status::{DiscoveryMetrics, DiscoveryStatus};
