//! Where `stat` and `top` find the proxies and read their `/metrics`: the
//! controller's `/debug/proxies` (local mode, each proxy dialled at the
//! admin address it told the controller), or the meshed pods of a cluster,
//! read through the API server's pods/proxy subresource.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use k8s_openapi::api::core::v1::Pod;
use kube::api::ListParams;
use kube::{Api, Client};
use mycel_api::stats::{self, ProxyInfo, Sample};
use serde::Deserialize;
use tokio::sync::Semaphore;
use tokio::task::JoinSet;

use crate::demo::wait;
use crate::meshpod::cluster as meshpod;
use crate::podcerts;

/// Scrapes in flight at once: enough to read a mesh of a few hundred
/// proxies within a window, few enough not to flood the API server.
const CONCURRENCY: usize = 16;
/// A proxy's `/metrics` is a few hundred KB at most; more is refused.
const MAX_METRICS_BYTES: usize = 8 * 1024 * 1024;

/// How to read one proxy's `/metrics`.
#[derive(Clone)]
enum Reader {
    Direct(SocketAddr),
    Pod {
        client: Client,
        pod: Box<Pod>,
        port: u16,
    },
}

#[derive(Clone)]
pub struct Proxy {
    pub info: ProxyInfo,
    reader: Reader,
}

/// One proxy's `/metrics`, parsed, and when it was read.
pub struct Scrape {
    pub samples: Vec<Sample>,
    pub at: Instant,
}

/// The proxies the controller at `controller_admin` lists, with the
/// admin address each declared; those without one are reported and left
/// out.
pub async fn local(controller_admin: &str) -> anyhow::Result<Vec<Proxy>> {
    let addr = tokio::net::lookup_host(controller_admin)
        .await
        .with_context(|| format!("--controller-admin {controller_admin}: cannot resolve"))?
        .next()
        .with_context(|| {
            format!("--controller-admin {controller_admin}: resolves to no address")
        })?;
    let answer = wait::get(addr, "localhost", "/debug/proxies")
        .await
        .with_context(|| format!("cannot reach the controller's admin at {controller_admin}"))?;
    if answer.status != 200 {
        anyhow::bail!(
            "{controller_admin}/debug/proxies answered HTTP {}: is it the controller's admin port?",
            answer.status
        );
    }
    let records: Vec<Record> = serde_json::from_slice(&answer.body).with_context(|| {
        format!("{controller_admin}/debug/proxies is not the controller's proxy list")
    })?;
    let mut out = Vec::new();
    for r in records {
        let Some(admin) = r.admin_addr else {
            eprintln!(
                "warning: proxy {} ({}/{}) told the controller no admin address; left out",
                r.proxy_id, r.namespace, r.workload
            );
            continue;
        };
        out.push(Proxy {
            info: ProxyInfo {
                proxy_id: r.proxy_id,
                workload: r.workload,
                namespace: r.namespace,
                spiffe_id: r.spiffe_id,
                mode: r.mode,
            },
            reader: Reader::Direct(admin),
        });
    }
    Ok(out)
}

/// The fields of a `/debug/proxies` record read here; the rest is ignored.
#[derive(Deserialize)]
struct Record {
    proxy_id: String,
    #[serde(default)]
    workload: String,
    #[serde(default)]
    namespace: String,
    #[serde(default)]
    spiffe_id: String,
    #[serde(default)]
    mode: String,
    #[serde(default)]
    admin_addr: Option<SocketAddr>,
}

/// Every pod with a ready proxy in `namespace` (every namespace for
/// `None`).
pub async fn cluster(
    client: &Client,
    namespace: Option<&str>,
    timeout: Duration,
) -> anyhow::Result<Vec<Proxy>> {
    let pods: Api<Pod> = match namespace {
        Some(ns) => Api::namespaced(client.clone(), ns),
        None => Api::all(client.clone()),
    };
    let where_ = namespace.map_or("every namespace".to_string(), |n| format!("namespace {n}"));
    let list = meshpod::call(
        || format!("listing the pods of {where_}"),
        timeout,
        pods.list(&ListParams::default()),
    )
    .await?;
    let mut out = Vec::new();
    for pod in list.items {
        if !podcerts::has_proxy(&pod) || !podcerts::proxy_ready(&pod) {
            continue;
        }
        let Ok(port) = meshpod::ready_admin_port(&pod) else {
            continue;
        };
        out.push(Proxy {
            info: pod_info(&pod),
            reader: Reader::Pod {
                client: client.clone(),
                pod: Box::new(pod),
                port,
            },
        });
    }
    Ok(out)
}

/// Who a pod is: its workload is its Deployment's name when a ReplicaSet
/// owns it (the ReplicaSet's name less its hash suffix), else the pod's.
fn pod_info(pod: &Pod) -> ProxyInfo {
    let (namespace, name) = meshpod::pod_key(pod);
    let owner = pod
        .metadata
        .owner_references
        .iter()
        .flatten()
        .find(|o| o.controller == Some(true));
    let workload = match owner {
        Some(o) if o.kind == "ReplicaSet" => o
            .name
            .rsplit_once('-')
            .map_or(o.name.clone(), |(d, _)| d.to_string()),
        Some(o) => o.name.clone(),
        None => name.clone(),
    };
    let spec = pod.spec.as_ref();
    let sa = spec
        .and_then(|s| s.service_account_name.clone())
        .unwrap_or_else(|| "default".into());
    let proxy_args = spec
        .into_iter()
        .flat_map(|s| s.init_containers.iter().flatten().chain(&s.containers))
        .filter(|c| c.name == podcerts::PROXY_CONTAINER)
        .flat_map(|c| c.args.iter().flatten());
    let mut trust_domain = "cluster.local".to_string();
    let mut gateway = false;
    for a in proxy_args {
        if let Some(td) = a.strip_prefix("--trust-domain=") {
            trust_domain = td.to_string();
        }
        gateway |= a == "--mode=gateway" || a == "gateway";
    }
    ProxyInfo {
        proxy_id: name,
        spiffe_id: format!("spiffe://{trust_domain}/ns/{namespace}/sa/{sa}"),
        namespace,
        workload,
        mode: if gateway { "gateway" } else { "sidecar" }.into(),
    }
}

impl Proxy {
    async fn metrics(&self, timeout: Duration) -> anyhow::Result<String> {
        match &self.reader {
            Reader::Direct(addr) => {
                let answer =
                    tokio::time::timeout(timeout, wait::get(*addr, "localhost", "/metrics"))
                        .await
                        .map_err(|_| anyhow::anyhow!("no answer within {timeout:?}"))??;
                if answer.status != 200 {
                    anyhow::bail!("/metrics answered HTTP {}", answer.status);
                }
                Ok(String::from_utf8_lossy(&answer.body).into_owned())
            }
            Reader::Pod { client, pod, port } => {
                Ok(
                    meshpod::get(client, pod, *port, "/metrics", MAX_METRICS_BYTES, timeout)
                        .await?,
                )
            }
        }
    }

    /// "proxy ID (namespace/workload)", for warnings.
    pub fn describe(&self) -> String {
        format!(
            "{} ({}/{})",
            self.info.proxy_id, self.info.namespace, self.info.workload
        )
    }
}

/// One scrape of every proxy, a bounded number at a time; a proxy that
/// cannot be read or parsed is `Err` with the reason.
pub async fn scrape_all(proxies: &[Proxy], timeout: Duration) -> Vec<Result<Scrape, String>> {
    let limit = Arc::new(Semaphore::new(CONCURRENCY));
    let mut tasks = JoinSet::new();
    for (i, p) in proxies.iter().enumerate() {
        let p = p.clone();
        let limit = limit.clone();
        tasks.spawn(async move {
            let _permit = limit.acquire_owned().await;
            let result = match p.metrics(timeout).await {
                Ok(text) => stats::parse(&text)
                    .map(|samples| Scrape {
                        samples,
                        at: Instant::now(),
                    })
                    .map_err(|e| e.to_string()),
                Err(e) => Err(mycel_api::report::one_line(e.as_ref())),
            };
            (i, result)
        });
    }
    let mut out: Vec<Result<Scrape, String>> = (0..proxies.len())
        .map(|_| Err("not read".to_string()))
        .collect();
    while let Some(done) = tasks.join_next().await {
        if let Ok((i, r)) = done {
            out[i] = r;
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pod(owner_kind: &str, owner: &str, args: &[&str]) -> Pod {
        serde_json::from_value(serde_json::json!({
            "metadata": {
                "name": "reviews-v2-7d9f8-abcde",
                "namespace": "shop",
                "ownerReferences": [{
                    "apiVersion": "apps/v1", "kind": owner_kind, "name": owner,
                    "uid": "u", "controller": true
                }]
            },
            "spec": {
                "serviceAccountName": "reviews",
                "containers": [
                    {"name": "app"},
                    {"name": podcerts::PROXY_CONTAINER, "args": args}
                ]
            }
        }))
        .unwrap()
    }

    #[test]
    fn a_pod_is_its_deployment_and_service_account() {
        let p = pod_info(&pod(
            "ReplicaSet",
            "reviews-v2-7d9f8",
            &["--trust-domain=example.org"],
        ));
        assert_eq!(p.workload, "reviews-v2");
        assert_eq!(p.proxy_id, "reviews-v2-7d9f8-abcde");
        assert_eq!(p.namespace, "shop");
        assert_eq!(p.spiffe_id, "spiffe://example.org/ns/shop/sa/reviews");
        assert_eq!(p.mode, "sidecar");
        let p = pod_info(&pod("StatefulSet", "db", &["--mode", "gateway"]));
        assert_eq!(p.workload, "db");
        assert_eq!(p.mode, "gateway");
        assert_eq!(p.spiffe_id, "spiffe://cluster.local/ns/shop/sa/reviews");
    }

    #[test]
    fn records_without_an_admin_address_parse() {
        let v: Vec<Record> = serde_json::from_str(
            r#"[{"proxy_id":"a","workload":"w","namespace":"n","spiffe_id":"s","mode":"sidecar","admin_addr":"127.0.0.1:9"},
                {"proxy_id":"b","admin_addr":null,"extra":1}]"#,
        )
        .unwrap();
        assert_eq!(v[0].admin_addr, Some("127.0.0.1:9".parse().unwrap()));
        assert_eq!(v[1].admin_addr, None);
    }
}
