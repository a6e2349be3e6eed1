//! The API calls behind the cluster forms of `cert`: find the pod (itself,
//! or a ready one of a Deployment), read its proxy's `/certs` through the
//! API server ([`crate::podcerts`]), and the trust bundle the mesh publishes
//! in its namespace. Every call has a timeout.

use std::time::Duration;

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{ConfigMap, Pod};
use kube::api::ListParams;
use kube::core::Selector;
use kube::{Api, Client};

use super::source;
use super::target::{self, Candidate, PickError, Target};
use crate::kubeconfig::chain;
use crate::podcerts::{self, CertsAnswer, ReadError};

#[derive(Debug, thiserror::Error)]
pub enum ClusterError {
    #[error("connecting to the API server: {0}")]
    Connect(String),
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

/// Why a pod's certificates could not be read.
#[derive(Debug, thiserror::Error)]
pub enum PodProblem {
    #[error("not meshed: it has no mycel-proxy container (is its namespace labelled mycel.io/inject=enabled, and was the pod created after?)")]
    NotMeshed,
    #[error("its proxy is not ready ({0})")]
    ProxyNotReady(String),
    #[error("reading its proxy's /certs through the API server")]
    Read(#[source] ReadError),
    #[error("{0}")]
    Answer(String),
}

/// `f`, given up after `timeout`; a refusal says who refused.
async fn call<T>(
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

/// What a pod's proxy holds, as read from its `/certs`.
#[derive(Clone, Debug)]
pub struct ProxyCerts {
    pub admin_port: u16,
    /// DER, leaf first.
    pub chain: Vec<Vec<u8>>,
    /// The roots the proxy itself trusts (DER).
    pub roots: Vec<Vec<u8>>,
}

/// Reads `pod`'s proxy: it must be meshed and ready.
pub async fn read_proxy(
    client: &Client,
    pod: &Pod,
    timeout: Duration,
) -> Result<ProxyCerts, ClusterError> {
    let (namespace, name) = pod_key(pod);
    let fail = |problem: PodProblem| ClusterError::Pod {
        namespace: namespace.clone(),
        name: name.clone(),
        problem,
    };
    if !podcerts::has_proxy(pod) {
        return Err(fail(PodProblem::NotMeshed));
    }
    if !podcerts::proxy_ready(pod) {
        return Err(fail(PodProblem::ProxyNotReady(proxy_state(pod))));
    }
    // Injected pods name their admin port; the chart's default otherwise.
    let admin_port = podcerts::admin_port(pod)
        .unwrap_or_else(|| mycel_inject::InjectConfig::default().ports.admin);
    let text = podcerts::read(client, &namespace, &name, admin_port, timeout)
        .await
        .map_err(|e| fail(PodProblem::Read(e)))?;
    let bad = |reason: String| fail(PodProblem::Answer(reason));
    let answer: CertsAnswer = serde_json::from_str(&text)
        .map_err(|e| bad(format!("its /certs answer is not what mycelctl reads: {e}")))?;
    let Some(chain_pem) = &answer.chain_pem else {
        return Err(bad(
            "its /certs answer has no chain_pem: the proxy is older than this mycelctl".into(),
        ));
    };
    let label = format!("/certs of pod {namespace}/{name}");
    let chain =
        source::certificates(&label, chain_pem.as_bytes()).map_err(|e| bad(e.to_string()))?;
    // An empty bundle is reported as such by verification, not here.
    let roots = answer
        .trust_bundle_pem
        .as_deref()
        .and_then(|p| source::certificates(&label, p.as_bytes()).ok())
        .unwrap_or_default();
    Ok(ProxyCerts {
        admin_port,
        chain,
        roots,
    })
}

/// Where a pod's trust bundle is published.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct BundleRef {
    pub namespace: String,
    pub config_map: String,
    pub key: String,
}

impl std::fmt::Display for BundleRef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "ConfigMap {}/{} (key {})",
            self.namespace, self.config_map, self.key
        )
    }
}

/// The ConfigMap the injector mounted as the pod's `--ca-root` (its
/// `mycel-trust-bundle` volume), else the chart's default name and key.
pub fn bundle_ref(pod: &Pod) -> BundleRef {
    let defaults = mycel_inject::InjectConfig::default();
    let mounted = pod
        .spec
        .as_ref()
        .and_then(|s| s.volumes.as_ref())
        .and_then(|v| v.iter().find(|v| v.name == mycel_inject::TRUST_VOLUME))
        .and_then(|v| v.config_map.as_ref());
    BundleRef {
        namespace: pod_key(pod).0,
        config_map: mounted
            .map(|c| c.name.clone())
            .filter(|n| !n.is_empty())
            .unwrap_or(defaults.trust_bundle_config_map),
        key: mounted
            .and_then(|c| c.items.as_ref())
            .and_then(|items| items.first())
            .map(|i| i.key.clone())
            .unwrap_or(defaults.trust_bundle_key),
    }
}

/// The roots in the ConfigMap; `Ok(None)` when it does not exist, `Err`
/// with why when it cannot be used.
pub async fn published_bundle(
    client: &Client,
    r: &BundleRef,
    timeout: Duration,
) -> Result<Option<Vec<Vec<u8>>>, String> {
    let api: Api<ConfigMap> = Api::namespaced(client.clone(), &r.namespace);
    let what = || format!("getting {r}");
    let cm = call(what, timeout, api.get_opt(&r.config_map))
        .await
        .map_err(|e| e.to_string())?;
    let Some(cm) = cm else {
        return Ok(None);
    };
    let Some(pem) = cm.data.as_ref().and_then(|d| d.get(&r.key)) else {
        return Err(format!("{r} has no key {}", r.key));
    };
    source::certificates(&r.to_string(), pem.as_bytes())
        .map(Some)
        .map_err(|e| e.to_string())
}

/// The roots to verify against and where they came from: the published
/// bundle (what every other pod of the namespace trusts, so what decides
/// whether they accept this pod), else the proxy's own, saying why.
pub fn choose_bundle(
    r: &BundleRef,
    published: Result<Option<Vec<Vec<u8>>>, String>,
    proxy_roots: &[Vec<u8>],
) -> (Vec<Vec<u8>>, String) {
    match published {
        Ok(Some(roots)) => (roots, r.to_string()),
        Ok(None) => (
            proxy_roots.to_vec(),
            format!("the proxy's own (/certs): no {r}"),
        ),
        Err(why) => (
            proxy_roots.to_vec(),
            format!("the proxy's own (/certs): {why}"),
        ),
    }
}

/// Every meshed pod (label `mycel.io/meshed`) in `namespace`, or in all.
pub async fn meshed_pods(
    client: &Client,
    namespace: Option<&str>,
    timeout: Duration,
) -> Result<Vec<Pod>, ClusterError> {
    let api: Api<Pod> = match namespace {
        Some(ns) => Api::namespaced(client.clone(), ns),
        None => Api::all(client.clone()),
    };
    let lp = ListParams::default().labels(mycel_inject::annotations::MESHED_LABEL);
    let what = || match namespace {
        Some(ns) => format!("listing meshed pods in namespace {ns}"),
        None => "listing meshed pods in all namespaces".to_string(),
    };
    Ok(call(what, timeout, api.list(&lp)).await?.items)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_bundle_is_the_mounted_config_map_else_the_default() {
        let pod: Pod = serde_json::from_value(serde_json::json!({
            "metadata": {"name": "web-0", "namespace": "shop"},
            "spec": {"containers": [], "volumes": [{"name": "mycel-trust-bundle",
                "configMap": {"name": "roots", "items": [{"key": "bundle.pem", "path": "bundle.pem"}]}}]},
        }))
        .unwrap();
        let r = bundle_ref(&pod);
        assert_eq!(r.to_string(), "ConfigMap shop/roots (key bundle.pem)");
        let bare: Pod = serde_json::from_value(serde_json::json!({
            "metadata": {"name": "web-0", "namespace": "shop"}, "spec": {"containers": []},
        }))
        .unwrap();
        assert_eq!(
            bundle_ref(&bare).to_string(),
            "ConfigMap shop/mycel-trust-bundle (key ca.crt)"
        );

        let own = vec![vec![1u8]];
        let (roots, from) = choose_bundle(&r, Ok(Some(vec![vec![2u8]])), &own);
        assert_eq!(
            (roots, from.as_str()),
            (vec![vec![2u8]], "ConfigMap shop/roots (key bundle.pem)")
        );
        let (roots, from) = choose_bundle(&r, Ok(None), &own);
        assert_eq!(roots, own);
        assert_eq!(
            from,
            "the proxy's own (/certs): no ConfigMap shop/roots (key bundle.pem)"
        );
        let (_, from) = choose_bundle(&r, Err("forbidden".into()), &own);
        assert_eq!(from, "the proxy's own (/certs): forbidden");
    }
}
