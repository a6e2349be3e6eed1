//! The gRPC API of the controller: `Identity` and `Discovery`. It reads the
//! index and the CA; it never reads configuration sources.

pub mod convert;
pub mod discovery;
pub mod identity;
pub mod ratelimit;

pub use discovery::DiscoveryService;
pub use identity::IdentityService;
