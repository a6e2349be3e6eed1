//! The wire contract between the Mycel control plane and its proxies, plus
//! the few types both sides must agree on byte for byte (SPIFFE IDs, service
//! names).
//!
//! The protobuf code is generated from `proto/mycel/v1/*.proto` at build
//! time with a pure-Rust compiler; conversions to each side's own model live
//! beside that model, not here.

pub mod names;
pub mod spiffe;

#[allow(clippy::all, clippy::pedantic, missing_docs)]
pub mod v1 {
    tonic::include_proto!("mycel.v1");
}
