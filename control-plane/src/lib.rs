//! The Mycel control plane: a CA that issues SPIFFE certificates to
//! authenticated proxies, an in-memory index of the mesh fed by the local
//! mesh.yaml and by workloads registering themselves, and the gRPC services
//! that stream each proxy its view of that index; on Kubernetes also the
//! API server's objects and the sidecar-injection webhook.
//!
//! Layering follows linkerd2's policy-controller: `model` (domain types),
//! `index` (synchronous state), `sources` (config in), `grpc` (API out),
//! `ca` (identity), `webhook` (injection), and `runtime`, the only module
//! that knows them all.

pub mod admin;
pub mod authz;
pub mod ca;
pub mod dashboard;
pub mod grpc;
pub mod index;
pub mod metrics;
pub mod model;
pub mod registry;
pub mod rotation;
pub mod routes;
pub mod runtime;
pub mod serving;
pub mod sources;
pub mod webhook;
