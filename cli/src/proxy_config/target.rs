//! What `proxy-config`'s argument names: a proxy's admin address
//! (HOST:PORT, dialled directly) or a meshed pod in a cluster (read through
//! the API server), in the forms `cert inspect` takes. Pure.
//!
//! A Kubernetes name holds no `:`, so HOST:PORT never reads as a pod; a
//! bare NAME is a pod only with a cluster flag (-n, --kubeconfig,
//! --context), as for `cert inspect`, so that a HOST without its port is
//! not looked up as a pod in whatever cluster the kubeconfig points at.

use crate::meshpod::target::{self, Target, TargetError, ACCEPTED};

const COMMAND: &str = "proxy-config";

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ProxyTarget {
    /// HOST:PORT of the proxy's admin.
    Address(String),
    Cluster(Target),
}

#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum ArgError {
    #[error("{0:?} is not HOST:PORT (a proxy's admin address, e.g. 127.0.0.1:15000)")]
    NotAddress(String),
    #[error("{0:?} is a proxy's admin address: -n, --kubeconfig and --context are for {ACCEPTED}")]
    AddressInCluster(String),
    #[error("{0:?} is neither HOST:PORT (a proxy's admin address) nor a Kubernetes target: give HOST:PORT, deploy/NAME, pod/NAME, or a pod's NAME with -n NS")]
    Bare(String),
    #[error(transparent)]
    Target(#[from] TargetError),
}

/// Reads the positional argument; `cluster` is whether a cluster flag was
/// given.
pub fn classify(arg: &str, cluster: bool) -> Result<ProxyTarget, ArgError> {
    if arg.contains('/') {
        return Ok(ProxyTarget::Cluster(target::parse(arg, COMMAND)?));
    }
    if let Some((host, port)) = arg.rsplit_once(':') {
        if host.is_empty() || port.parse::<u16>().is_err() {
            return Err(ArgError::NotAddress(arg.to_string()));
        }
        if cluster {
            return Err(ArgError::AddressInCluster(arg.to_string()));
        }
        return Ok(ProxyTarget::Address(arg.to_string()));
    }
    if cluster {
        return Ok(ProxyTarget::Cluster(target::parse(arg, COMMAND)?));
    }
    Err(ArgError::Bare(arg.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_and_targets() {
        let address = |a: &str| Ok(ProxyTarget::Address(a.into()));
        let pod = |n: &str| Ok(ProxyTarget::Cluster(Target::Pod(n.into())));
        let deploy = |n: &str| Ok(ProxyTarget::Cluster(Target::Deployment(n.into())));
        for (arg, cluster, want) in [
            ("127.0.0.1:15000", false, address("127.0.0.1:15000")),
            ("localhost:15000", false, address("localhost:15000")),
            ("[::1]:15000", false, address("[::1]:15000")),
            ("pod/ratings-0", false, pod("ratings-0")),
            ("po/ratings-0", true, pod("ratings-0")),
            ("deploy/frontend", false, deploy("frontend")),
            ("deployment.apps/frontend", true, deploy("frontend")),
            ("ratings-0", true, pod("ratings-0")),
        ] {
            assert_eq!(classify(arg, cluster), want, "{arg} (cluster: {cluster})");
        }
    }

    #[test]
    fn what_is_wrong_is_said() {
        for (arg, cluster, says) in [
            ("127.0.0.1", false, "is neither HOST:PORT"),
            ("ratings-0", false, "a pod's NAME with -n NS"),
            (":15000", false, "is not HOST:PORT"),
            ("host:port", false, "is not HOST:PORT"),
            ("host:99999", true, "is not HOST:PORT"),
            (
                "127.0.0.1:15000",
                true,
                "-n, --kubeconfig and --context are for",
            ),
            (
                "svc/ratings",
                false,
                "proxy-config does not read kind \"svc\"",
            ),
            ("pod/Ratings", false, "not a valid Kubernetes pod name"),
            ("deploy/", true, "not a valid Kubernetes deployment name"),
        ] {
            let err = classify(arg, cluster).unwrap_err().to_string();
            assert!(err.contains(says), "{arg}: {err}");
        }
    }
}
