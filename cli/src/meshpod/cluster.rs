//! The API calls behind a cluster target: find the pod (itself, or a ready
//! one of a Deployment), check that it runs a ready proxy, and read its
//! admin through the API server ([`crate::podcerts`]). Every call has a
//! timeout.

use std::time::Duration;

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::Pod;
use kube::api::ListParams;
use kube::core::Selector;
use kube::{Api, Client};
use serde::Serialize;

use super::target::{self, Candidate, PickError, Target, TargetError};
use crate::kubeconfig::{chain, KubeArgs};
use crate::podcerts::{self, ReadError};

#[derive(Debug, thiserror::Error)]
pub enum ClusterError {
    #[error("connecting to the API server: {0}")]
    Connect(String),
    #[error(transparent)]
    Target(#[from] TargetError),
    #[error("no pod {name} in namespace {namespace}")]
    NoSuchPod { namespace: String, name: String },
    #[error("no deployment {name} in namespace {namespace}")]
    NoSuchDeployment { namespace: String, name: String },
    #[error("{what}: forbidden: {message}")]
    Forbidden { what: String, message: String },
    #[error("{what}: the API server did not answer within {after:?}")]
    Timeout { what: String, after: Duration },
    #[error("{what}: {message}")]
    Api { what: String, message: String },
    #[error(transparent)]
    Pick(#[from] PickError),
    #[error("pod {namespace}/{name}")]
    Pod {
        namespace: String,
        name: String,
        #[source]
        problem: PodProblem,
    },
}

/// Why a pod's proxy could not be read.
#[derive(Debug, thiserror::Error)]
pub enum PodProblem {
    #[error("not meshed: it has no mycel-proxy container (is its namespace labelled mycel.io/inject=enabled, and was the pod created after?)")]
    NotMeshed,
    #[error("its proxy is not ready ({0})")]
    ProxyNotReady(String),
    #[error("reading its proxy's {path} through the API server")]
    Read {
        path: String,
        #[source]
        source: ReadError,
    },
    #[error("{0}")]
    Answer(String),
}

/// The pod whose proxy is read through the API server; field names are
/// part of the `-o json` output of the commands that read one.
#[derive(Clone, Debug, Serialize)]
pub struct PodSource {
    pub namespace: String,
    pub name: String,
    pub admin_port: u16,
    /// For a Deployment: which of its pods, and why that one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub selected: Option<String>,
}

/// A pod a target named, found, with a ready proxy.
#[derive(Clone, Debug)]
pub struct Reached {
    pub pod: Pod,
    pub source: PodSource,
    /// How the output names it: `pod NS/NAME`, or `deploy/D in NS: pod
    /// NAME`.
    pub description: String,
}

/// A client for the cluster `kube` names.
pub async fn connect(kube: &KubeArgs, timeout: Duration) -> Result<Client, ClusterError> {
    // The client's own timeouts are only a backstop: each call's, which
    // comes first, names the call that hung.
    kube.client(timeout.saturating_mul(2))
        .await
        .map_err(ClusterError::Connect)
}

/// `f`, given up after `timeout`; a refusal says who refused.
pub async fn call<T>(
    what: impl Fn() -> String,
    timeout: Duration,
    f: impl std::future::Future<Output = Result<T, kube::Error>>,
) -> Result<T, ClusterError> {
    match tokio::time::timeout(timeout, f).await {
        Ok(Ok(v)) => Ok(v),
        Ok(Err(kube::Error::Api(s))) if s.code == 403 => Err(ClusterError::Forbidden {
            what: what(),
            message: s.message,
        }),
        Ok(Err(kube::Error::Api(s))) => Err(ClusterError::Api {
            what: what(),
            message: format!("{} {}", s.code, s.message),
        }),
        Ok(Err(e)) => Err(ClusterError::Api {
            what: what(),
            message: chain(&e),
        }),
        Err(_) => Err(ClusterError::Timeout {
            what: what(),
            after: timeout,
        }),
    }
}

/// The pod `target` names in `namespace` (default: the client's), checked
/// to run a ready proxy.
pub async fn reach(
    client: &Client,
    namespace: Option<&str>,
    target: &Target,
    timeout: Duration,
) -> Result<Reached, ClusterError> {
    let namespace = namespace.unwrap_or(client.default_namespace());
    target::check_namespace(namespace)?;
    let (pod, selected) = resolve(client, namespace, target, timeout).await?;
    let admin_port = ready_admin_port(&pod)?;
    let (ns, name) = pod_key(&pod);
    let description = match target {
        Target::Pod(_) => format!("pod {ns}/{name}"),
        Target::Deployment(_) => format!("{target} in {ns}: pod {name}"),
    };
    Ok(Reached {
        source: PodSource {
            namespace: ns,
            name,
            admin_port,
            selected,
        },
        pod,
        description,
    })
}

/// The pod `target` names in `namespace`, and, for a Deployment, why that
/// pod.
pub async fn resolve(
    client: &Client,
    namespace: &str,
    target: &Target,
    timeout: Duration,
) -> Result<(Pod, Option<String>), ClusterError> {
    let pods: Api<Pod> = Api::namespaced(client.clone(), namespace);
    let name = match target {
        Target::Pod(name) => {
            let what = || format!("getting pod {namespace}/{name}");
            return match call(what, timeout, pods.get_opt(name)).await? {
                Some(pod) => Ok((pod, None)),
                None => Err(ClusterError::NoSuchPod {
                    namespace: namespace.into(),
                    name: name.clone(),
                }),
            };
        }
        Target::Deployment(name) => name,
    };
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), namespace);
    let what = || format!("getting deployment {namespace}/{name}");
    let Some(deployment) = call(what, timeout, deployments.get_opt(name)).await? else {
        return Err(ClusterError::NoSuchDeployment {
            namespace: namespace.into(),
            name: name.clone(),
        });
    };
    let selector = deployment
        .spec
        .map(|s| s.selector)
        .ok_or_else(|| ClusterError::Api {
            what: format!("deployment {namespace}/{name}"),
            message: "it has no spec".into(),
        })
        .and_then(|s| {
            Selector::try_from(s).map_err(|e| ClusterError::Api {
                what: format!("deployment {namespace}/{name}"),
                message: format!("its selector cannot be used: {e}"),
            })
        })?;
    let what = || format!("listing the pods of deployment {namespace}/{name}");
    let list = call(
        what,
        timeout,
        pods.list(&ListParams::default().labels_from(&selector)),
    )
    .await?;
    let candidates: Vec<Candidate> = list.items.iter().map(candidate).collect();
    let full = format!("{namespace}/{name}");
    let (picked, note) = target::pick(&full, &selector.to_string(), &candidates)?;
    let pod = list
        .items
        .into_iter()
        .find(|p| p.metadata.name.as_deref() == Some(picked.as_str()))
        .ok_or_else(|| ClusterError::NoSuchPod {
            namespace: namespace.into(),
            name: picked,
        })?;
    Ok((pod, Some(note)))
}

fn candidate(pod: &Pod) -> Candidate {
    Candidate {
        name: pod.metadata.name.clone().unwrap_or_default(),
        has_proxy: podcerts::has_proxy(pod),
        proxy_ready: podcerts::proxy_ready(pod),
        deleting: pod.metadata.deletion_timestamp.is_some(),
        state: proxy_state(pod),
    }
}

/// The proxy container's state in a few words, for "not ready" errors.
fn proxy_state(pod: &Pod) -> String {
    let Some(status) = podcerts::proxy_status(pod) else {
        return "no status reported for mycel-proxy yet".into();
    };
    if status.ready {
        return "ready".into();
    }
    let state = status.state.as_ref();
    if let Some(w) = state.and_then(|s| s.waiting.as_ref()) {
        return format!(
            "waiting: {}",
            w.reason.as_deref().unwrap_or("no reason given")
        );
    }
    if let Some(t) = state.and_then(|s| s.terminated.as_ref()) {
        return format!(
            "terminated: {} (exit code {})",
            t.reason.as_deref().unwrap_or("no reason given"),
            t.exit_code
        );
    }
    "running, not ready: its /ready fails (kubectl describe pod shows why)".into()
}

pub fn pod_key(pod: &Pod) -> (String, String) {
    (
        pod.metadata.namespace.clone().unwrap_or_default(),
        pod.metadata.name.clone().unwrap_or_default(),
    )
}

/// `problem` of `pod`, as an error naming the pod.
pub fn pod_error(pod: &Pod, problem: PodProblem) -> ClusterError {
    let (namespace, name) = pod_key(pod);
    ClusterError::Pod {
        namespace,
        name,
        problem,
    }
}

/// The admin port of `pod`'s proxy, which must be there and ready.
pub fn ready_admin_port(pod: &Pod) -> Result<u16, ClusterError> {
    if !podcerts::has_proxy(pod) {
        return Err(pod_error(pod, PodProblem::NotMeshed));
    }
    if !podcerts::proxy_ready(pod) {
        return Err(pod_error(pod, PodProblem::ProxyNotReady(proxy_state(pod))));
    }
    // Injected pods name their admin port; the chart's default otherwise.
    Ok(podcerts::admin_port(pod)
        .unwrap_or_else(|| mycel_inject::InjectConfig::default().ports.admin))
}

/// The text of `path` on the admin (its port `admin_port`) of `pod`'s
/// proxy, read through the API server, at most `limit` bytes.
pub async fn get(
    client: &Client,
    pod: &Pod,
    admin_port: u16,
    path: &str,
    limit: usize,
    timeout: Duration,
) -> Result<String, ClusterError> {
    let (namespace, name) = pod_key(pod);
    let at = podcerts::Admin {
        namespace: &namespace,
        pod: &name,
        port: admin_port,
    };
    podcerts::get(client, &at, path, limit, timeout)
        .await
        .map_err(|source| {
            pod_error(
                pod,
                PodProblem::Read {
                    path: path.to_string(),
                    source,
                },
            )
        })
}
