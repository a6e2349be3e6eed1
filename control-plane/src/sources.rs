//! Where mesh state comes from. Local mode reads mesh.yaml; workloads
//! register themselves over their discovery streams (see `grpc`).

pub mod local;
