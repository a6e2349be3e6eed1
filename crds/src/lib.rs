//! Mycel's custom resources, group `mycel.io`, version `v1alpha1`, as Rust
//! types; their CRD manifests are generated from these types
//! (`cargo run -p mycel-crds`), never written by hand. Beside them, the
//! upstream Gateway API resources ([`gateway_api`]), generated from the
//! upstream CRDs by `crds/gateway-api/update.sh`.

pub mod authorization_policy;
pub mod cases;
pub mod duration;
pub mod gateway_api;
pub mod gateway_policy;
pub mod generate;
pub mod mesh_config;
pub mod peer_authentication;
pub mod traffic_policy;

pub use authorization_policy::{AuthorizationPolicy, AuthorizationPolicySpec};
pub use gateway_policy::{GatewayPolicy, GatewayPolicySpec, GatewayPolicyStatus};
pub use mesh_config::{MeshConfig, MeshConfigSpec, MeshConfigStatus};
pub use peer_authentication::{PeerAuthentication, PeerAuthenticationSpec};
pub use traffic_policy::{TrafficPolicy, TrafficPolicySpec, TrafficPolicyStatus};

/// The API group of every Mycel resource.
pub const GROUP: &str = "mycel.io";
/// The version every Mycel resource is served and stored at.
pub const VERSION: &str = "v1alpha1";
