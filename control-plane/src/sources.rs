//! Where mesh state comes from. Local mode reads mesh.yaml, a cluster its
//! API server (`k8s`); workloads
//! register themselves over their discovery streams (see `grpc`), admitted
//! by a [`admission::RegistrationPolicy`].

pub mod admission;
pub mod k8s;
pub mod local;
