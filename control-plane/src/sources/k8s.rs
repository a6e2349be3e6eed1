//! The Kubernetes source: the API server's Services, EndpointSlices and
//! meshed Pods feed the same index that mesh.yaml and registrations feed.
//! `convert` reads objects, `cluster` holds what the watches saw and
//! computes each service's view, `watch` runs the kube-runtime watchers.

pub mod cluster;
pub mod convert;
pub mod review;
pub mod watch;

#[cfg(test)]
mod tests;

pub use cluster::{Cluster, ClusterSettings};
