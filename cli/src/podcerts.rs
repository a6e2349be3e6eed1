//! A meshed pod's proxy admin, read through the API server: a GET of the
//! `pods/proxy` subresource to the proxy's admin port (`/certs`,
//! `/config_dump`). Only the API server has to reach the pod, so no port is
//! exposed or forwarded, and the caller needs nothing but `get` on
//! `pods/proxy`. `mycelctl check --proxy`, `cert` and `proxy-config` all
//! read proxies here.

use std::time::Duration;

use http_body_util::{BodyExt, Limited};
use k8s_openapi::api::core::v1::Pod;
use kube::Client;
use serde::Deserialize;

pub const PROXY_CONTAINER: &str = mycel_inject::PROXY_NAME;

/// The most of a `/certs` answer that is read. It is a few KB; the cap
/// keeps a misbehaving pod from filling our memory through the API server.
pub const MAX_ANSWER_BYTES: usize = 1024 * 1024;

#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    #[error("forbidden: {0} (reading a proxy's admin needs get on pods/proxy)")]
    Forbidden(String),
    /// The API server's own answer: it could not dial the pod, the pod is
    /// gone, ...
    #[error("the API server answered {code}: {message}")]
    Api { code: u16, message: String },
    /// The proxy's answer, passed through (503 before its first certificate).
    #[error("the proxy answered {code}: {body}")]
    Proxy { code: u16, body: String },
    #[error(transparent)]
    Timeout(Unanswered),
    #[error("its {path} answer is larger than {limit} bytes")]
    TooLarge { path: String, limit: usize },
    #[error("{0}")]
    Transport(String),
}

/// A GET the proxy (or the API server) did not answer in time.
#[derive(Debug, thiserror::Error)]
#[error("{path} not answered within {after:?}")]
pub struct Unanswered {
    pub path: String,
    pub after: Duration,
}

/// The part of `/certs` (`sidecar/src/admin/certs.rs`) that `cert` reads:
/// the certificates themselves, judged here rather than the proxy's
/// summary of them. Proxies before these fields lack them.
#[derive(Clone, Debug, Deserialize)]
pub struct CertsAnswer {
    #[serde(default)]
    pub chain_pem: Option<String>,
    #[serde(default)]
    pub trust_bundle_pem: Option<String>,
}

/// The `/certs` text of `namespace/pod`'s proxy, its admin on `port`.
pub async fn read(
    client: &Client,
    namespace: &str,
    pod: &str,
    port: u16,
    timeout: Duration,
) -> Result<String, ReadError> {
    let at = Admin {
        namespace,
        pod,
        port,
    };
    get(client, &at, "/certs", MAX_ANSWER_BYTES, timeout).await
}

/// Where a pod's proxy admin is.
#[derive(Clone, Copy, Debug)]
pub struct Admin<'a> {
    pub namespace: &'a str,
    pub pod: &'a str,
    pub port: u16,
}

/// The text of `path` (starting with `/`) on the proxy admin `at`, at most
/// `limit` bytes of it.
pub async fn get(
    client: &Client,
    at: &Admin<'_>,
    path: &str,
    limit: usize,
    timeout: Duration,
) -> Result<String, ReadError> {
    let Admin {
        namespace,
        pod,
        port,
    } = at;
    let uri = format!("/api/v1/namespaces/{namespace}/pods/{pod}:{port}/proxy{path}");
    let request = http::Request::get(&uri)
        .body(Vec::new())
        .map_err(|e| ReadError::Transport(e.to_string()))?;
    match tokio::time::timeout(timeout, fetch(client, request, path, limit)).await {
        Ok(answer) => answer,
        Err(_) => Err(ReadError::Timeout(Unanswered {
            path: path.to_string(),
            after: timeout,
        })),
    }
}

async fn fetch(
    client: &Client,
    request: http::Request<Vec<u8>>,
    path: &str,
    limit: usize,
) -> Result<String, ReadError> {
    let response = client
        .send(request.map(kube::client::Body::from))
        .await
        .map_err(|e| ReadError::Transport(crate::kubeconfig::chain(&e)))?;
    let code = response.status().as_u16();
    let body = Limited::new(response.into_body(), limit)
        .collect()
        .await
        .map_err(|e| {
            if e.is::<http_body_util::LengthLimitError>() {
                ReadError::TooLarge {
                    path: path.to_string(),
                    limit,
                }
            } else {
                ReadError::Transport(e.to_string())
            }
        })?
        .to_bytes();
    let text = String::from_utf8_lossy(&body).into_owned();
    if (200..300).contains(&code) {
        return Ok(text);
    }
    Err(refusal(code, &text))
}

/// A non-2xx answer: the API server's own (a `Status` object) or the
/// proxy's, passed through.
fn refusal(code: u16, body: &str) -> ReadError {
    #[derive(Deserialize)]
    struct Status {
        kind: String,
        #[serde(default)]
        message: String,
    }
    match serde_json::from_str::<Status>(body) {
        Ok(s) if s.kind == "Status" && code == 403 => ReadError::Forbidden(s.message),
        Ok(s) if s.kind == "Status" => ReadError::Api {
            code,
            message: s.message,
        },
        _ => ReadError::Proxy {
            code,
            body: clip(body.trim(), 200),
        },
    }
}

fn clip(text: &str, most: usize) -> String {
    match text.char_indices().nth(most) {
        Some((at, _)) => format!("{}...", &text[..at]),
        None => text.to_string(),
    }
}

/// Whether the pod runs a proxy at all (injected, native or classic).
pub fn has_proxy(pod: &Pod) -> bool {
    pod.spec.as_ref().is_some_and(|s| {
        s.init_containers
            .iter()
            .flatten()
            .chain(&s.containers)
            .any(|c| c.name == PROXY_CONTAINER)
    })
}

/// A native sidecar's status is among the init containers', a classic
/// one's among the containers'.
pub fn proxy_ready(pod: &Pod) -> bool {
    proxy_status(pod).is_some_and(|c| c.ready)
}

pub fn proxy_status(pod: &Pod) -> Option<&k8s_openapi::api::core::v1::ContainerStatus> {
    let status = pod.status.as_ref()?;
    status
        .init_container_statuses
        .iter()
        .flatten()
        .chain(status.container_statuses.iter().flatten())
        .find(|c| c.name == PROXY_CONTAINER)
}

/// The admin port the injector gave the proxy (its port named
/// `mycel-admin`), when the pod spec says.
pub fn admin_port(pod: &Pod) -> Option<u16> {
    let spec = pod.spec.as_ref()?;
    spec.init_containers
        .iter()
        .flatten()
        .chain(&spec.containers)
        .filter(|c| c.name == PROXY_CONTAINER)
        .flat_map(|c| c.ports.iter().flatten())
        .find(|p| p.name.as_deref() == Some(mycel_inject::ADMIN_PORT_NAME))
        .and_then(|p| u16::try_from(p.container_port).ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refusals_name_who_refused() {
        let status = |code: u16, msg: &str| {
            serde_json::json!({"kind": "Status", "apiVersion": "v1", "status": "Failure",
                               "message": msg, "code": code})
            .to_string()
        };
        let forbidden = refusal(
            403,
            &status(
                403,
                "pods \"a\" is forbidden: User \"x\" cannot get resource \"pods/proxy\"",
            ),
        );
        assert!(matches!(&forbidden, ReadError::Forbidden(m) if m.contains("pods/proxy")));
        assert!(forbidden.to_string().contains("needs get on pods/proxy"));
        let dial = refusal(
            503,
            &status(
                503,
                "error trying to reach service: dial tcp: connection refused",
            ),
        );
        assert!(
            matches!(&dial, ReadError::Api { code: 503, message } if message.contains("dial tcp")),
            "{dial}"
        );
        let proxy = refusal(503, "{\"error\": \"no workload certificate yet\"}\n");
        assert_eq!(
            proxy.to_string(),
            "the proxy answered 503: {\"error\": \"no workload certificate yet\"}"
        );
        let long = refusal(500, &"x".repeat(1000));
        assert!(long.to_string().len() < 260, "{long}");
    }

    fn pod(value: serde_json::Value) -> Pod {
        serde_json::from_value(value).unwrap()
    }

    #[test]
    fn the_proxy_is_found_as_native_or_classic_sidecar() {
        let proxy = serde_json::json!({"name": "mycel-proxy",
            "ports": [{"name": "mycel-mesh", "containerPort": 15006},
                      {"name": "mycel-admin", "containerPort": 15900}]});
        let native = pod(serde_json::json!({"spec": {
            "initContainers": [proxy], "containers": [{"name": "app"}]}}));
        let classic = pod(serde_json::json!({"spec": {
            "containers": [{"name": "app"}, proxy]}}));
        for p in [&native, &classic] {
            assert!(has_proxy(p));
            assert_eq!(admin_port(p), Some(15900));
            assert!(!proxy_ready(p), "no status: not ready");
        }
        let plain = pod(serde_json::json!({"spec": {"containers": [{"name": "app"}]}}));
        assert!(!has_proxy(&plain));
        assert_eq!(admin_port(&plain), None);
        let unnamed = pod(serde_json::json!({"spec": {"containers": [{"name": "mycel-proxy"}]}}));
        assert_eq!(admin_port(&unnamed), None);
    }
}
