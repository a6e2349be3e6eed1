//! Identity issuance: the mesh CA and the authentication of callers that
//! ask it for certificates.

pub mod authority;

/// The join-token store lives in its own crate (`control-plane/tokens`) so
/// that `mycelctl` can use it without linking the control plane.
pub use mycel_tokens as tokens;

pub mod rotation;

pub use authority::{Authority, CaFiles, CaMaterial, Issued, NewCa, ServingCert};
