//! Where mesh state comes from. Local mode reads mesh.yaml; workloads
//! register themselves over their discovery streams (see `grpc`), admitted
//! by a [`admission::RegistrationPolicy`].

pub mod admission;
pub mod local;
