//! The Kubernetes source: the API server's Services, EndpointSlices,
//! meshed Pods and TrafficPolicies feed the same index that mesh.yaml and
//! registrations feed. `convert` reads objects, `cluster` holds what the
//! watches saw and computes each service's view, `policies` does the same
//! for traffic policies and decides their statuses, `watch` runs the
//! kube-runtime watchers.
//! `ca_secret`, `trust_bundle` and `owner` keep what the controller
//! writes: the CA Secret, the trust bundles, and who owns them.

pub mod authz;
pub mod ca_secret;
pub mod cluster;
pub mod convert;
pub mod gateway_class;
pub mod gateway_policies;
pub mod gateways;
pub mod owner;
pub mod policies;
pub mod rbac;
pub mod review;
pub mod routes;
pub mod tls_secrets;
pub mod trust_bundle;
pub mod watch;

#[cfg(test)]
mod tests;

pub use cluster::{Cluster, ClusterSettings};

/// Why the API server cannot be reached.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("kubeconfig {path}: {source}")]
    Kubeconfig {
        path: std::path::PathBuf,
        #[source]
        source: kube::config::KubeconfigError,
    },
    #[error(
        "no Kubernetes configuration (not in a cluster, no KUBECONFIG, no ~/.kube/config): {0}"
    )]
    Infer(#[source] kube::config::InferConfigError),
    #[error("Kubernetes client: {0}")]
    Client(#[source] kube::Error),
}

/// A client from `kubeconfig`, or inferred as kubectl does.
pub async fn client(kubeconfig: Option<&std::path::Path>) -> Result<kube::Client, ClientError> {
    let config = match kubeconfig {
        Some(path) => {
            let err = |source| ClientError::Kubeconfig {
                path: path.to_path_buf(),
                source,
            };
            let kc = kube::config::Kubeconfig::read_from(path).map_err(err)?;
            kube::Config::from_custom_kubeconfig(kc, &Default::default())
                .await
                .map_err(err)?
        }
        None => kube::Config::infer().await.map_err(ClientError::Infer)?,
    };
    kube::Client::try_from(config).map_err(ClientError::Client)
}
