//! The API calls behind the cluster forms of `cert`: read a pod's proxy's
//! `/certs` through the API server (the pod found as
//! [`crate::meshpod::cluster`] finds it), the trust bundle the mesh
//! publishes in its namespace, and the list of meshed pods. Every call has
//! a timeout.

use std::time::Duration;

use k8s_openapi::api::core::v1::{ConfigMap, Pod};
use kube::api::ListParams;
use kube::{Api, Client};

use super::source;
use crate::meshpod::cluster::{call, get, pod_error, pod_key, ready_admin_port};
use crate::meshpod::cluster::{ClusterError, PodProblem};
use crate::podcerts::{CertsAnswer, MAX_ANSWER_BYTES};

/// What a pod's proxy holds, as read from its `/certs`.
#[derive(Clone, Debug)]
pub struct ProxyCerts {
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
    let admin_port = ready_admin_port(pod)?;
    let text = get(client, pod, admin_port, "/certs", MAX_ANSWER_BYTES, timeout).await?;
    let bad = |reason: String| pod_error(pod, PodProblem::Answer(reason));
    let answer: CertsAnswer = serde_json::from_str(&text)
        .map_err(|e| bad(format!("its /certs answer is not what mycelctl reads: {e}")))?;
    let Some(chain_pem) = &answer.chain_pem else {
        return Err(bad(
            "its /certs answer has no chain_pem: the proxy is older than this mycelctl".into(),
        ));
    };
    let (namespace, name) = pod_key(pod);
    let label = format!("/certs of pod {namespace}/{name}");
    let chain =
        source::certificates(&label, chain_pem.as_bytes()).map_err(|e| bad(e.to_string()))?;
    // An empty bundle is reported as such by verification, not here.
    let roots = answer
        .trust_bundle_pem
        .as_deref()
        .and_then(|p| source::certificates(&label, p.as_bytes()).ok())
        .unwrap_or_default();
    Ok(ProxyCerts { chain, roots })
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
