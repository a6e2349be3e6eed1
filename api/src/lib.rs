//! The wire contract between the Mycel control plane and its proxies, plus
//! the few types and rules both sides must agree on byte for byte: SPIFFE
//! IDs, name rules and service keys, port protocols, mesh header names and
//! the field validators applied on both ends of the stream; and what every
//! binary shares: reporting a fatal error, writing secrets to disk; and,
//! with the `plain-http` feature, one plain HTTP/1.1 client exchange.
//!
//! The protobuf code is generated from `proto/mycel/v1/*.proto` at build
//! time with a pure-Rust compiler; conversions to each side's own model live
//! beside that model, not here.

pub mod authz;
#[cfg(feature = "clidoc")]
pub mod clidoc;
pub mod codec;
#[cfg(feature = "demo-tokens")]
pub mod demo_tokens;
pub mod exposition;
pub mod files;
pub mod headers;
pub mod names;
#[cfg(feature = "plain-http")]
pub mod plain_http;
pub mod probes;
pub mod protocol;
pub mod report;
pub mod spiffe;
pub mod stats;
pub mod validate;

#[allow(clippy::all, clippy::pedantic, missing_docs)]
pub mod v1 {
    tonic::include_proto!("mycel.v1");
}
