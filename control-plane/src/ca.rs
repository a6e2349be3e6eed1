//! Identity issuance: the mesh CA and the authentication of callers that
//! ask it for certificates.

pub mod authority;
pub(crate) mod files;
pub mod tokens;

pub use authority::{Authority, CaFiles, Issued, ServingCert};
