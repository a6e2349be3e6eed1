//! The API calls behind `mycelctl check`. Each answer goes to a judgment in
//! [`verdict`]; every call has a timeout, so a cluster that does not answer
//! makes a failed check, never a hung command.

use std::collections::BTreeMap;
use std::future::Future;
use std::time::Duration;

use k8s_openapi::api::admissionregistration::v1::MutatingWebhookConfiguration;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::authorization::v1::{
    ResourceAttributes, SelfSubjectAccessReview, SelfSubjectAccessReviewSpec,
};
use k8s_openapi::api::core::v1::{ConfigMap, Namespace, Pod, Secret};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{ListParams, PostParams};
use kube::{Api, Client};

use super::verdict::{self, pass, Check};
use super::CheckArgs;
use crate::install;
use crate::podcerts;

/// What one API call may take.
const CALL_TIMEOUT: Duration = Duration::from_secs(10);
/// What the dry-run Pod create may take: longer than the chart's webhook
/// timeout (10 s), so the API server's own answer about the webhook wins.
const DRY_RUN_TIMEOUT: Duration = Duration::from_secs(15);
/// What reading one proxy's `/certs` through the API server may take.
const PROXY_TIMEOUT: Duration = Duration::from_secs(5);

/// Names the chart gives its objects (helm/mycel/templates).
const CONTROLLER: &str = "mycel-controller";
const WEBHOOK_CONFIG: &str = "mycel-injector";
const WEBHOOK_SERVICE: &str = "mycel-webhook";
const CA_SECRET: &str = "mycel-ca";
const TRUST_BUNDLE: &str = "mycel-trust-bundle";
const MESH_CONFIG: &str = "mycel-config";
/// The label of namespaces whose pods are injected.
const INJECT_LABEL: &str = "mycel.io/inject=enabled";

async fn call<T, E: std::error::Error>(f: impl Future<Output = Result<T, E>>) -> Result<T, String> {
    crate::kubeconfig::call(CALL_TIMEOUT, f).await
}

/// `Ok(None)` for a 404.
async fn get_opt<K>(api: &Api<K>, name: &str) -> Result<Option<K>, String>
where
    K: Clone + serde::de::DeserializeOwned + std::fmt::Debug,
{
    call(api.get_opt(name)).await
}

/// Runs the checks `args` asks for, in order; an unreachable API server is
/// the only check then.
pub async fn gather(args: &CheckArgs) -> Vec<Check> {
    let client = match args.kube.client(CALL_TIMEOUT).await {
        Ok(c) => c,
        Err(e) => return vec![verdict::unreachable(&e)],
    };
    let info = match call(client.apiserver_version()).await {
        Ok(info) => info,
        Err(e) => return vec![verdict::unreachable(&e)],
    };
    let mut checks = vec![verdict::version(
        &info.major,
        &info.minor,
        &info.git_version,
    )];
    if args.pre {
        checks.push(permissions(&client, &args.namespace).await);
        return checks;
    }
    checks.extend(crds(&client).await);
    let deployment = get_opt(
        &Api::<Deployment>::namespaced(client.clone(), &args.namespace),
        CONTROLLER,
    )
    .await;
    checks.push(match &deployment {
        Ok(d) => verdict::controller(&args.namespace, d.as_ref().map(replicas)),
        Err(e) => api_failed("controller", e),
    });
    let ca_name = deployment
        .ok()
        .flatten()
        .and_then(|d| ca_secret_flag(&d))
        .unwrap_or_else(|| (args.namespace.clone(), CA_SECRET.to_string()));
    let ca = ca(&client, &args.namespace, &ca_name, &mut checks).await;
    checks.push(
        webhook(
            &client,
            &args.namespace,
            ca.as_ref().map(|c| c.root.as_slice()),
        )
        .await,
    );
    checks.push(webhook_endpoints(&client, &args.namespace).await);
    checks.push(verdict::webhook_call(&webhook_call(&client).await));
    if let Some(ca) = &ca {
        checks.push(trust_bundles(&client, &ca.root).await);
    }
    if args.proxy {
        checks.extend(proxies(&client, &args.namespace).await);
    }
    checks
}

fn api_failed(name: &'static str, error: &str) -> Check {
    verdict::fail(
        name,
        format!("the API server refused or did not answer: {error}"),
        "check your rights (kubectl auth can-i --list) and the API server's health",
    )
}

fn replicas(d: &Deployment) -> (i32, i32) {
    let ready = d
        .status
        .as_ref()
        .and_then(|s| s.ready_replicas)
        .unwrap_or(0);
    let desired = d.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1);
    (ready, desired)
}

/// The controller's `--ca-secret=NS/NAME`, so a CA of the user's own
/// (`ca.existingSecret`) is the one checked.
fn ca_secret_flag(d: &Deployment) -> Option<(String, String)> {
    let containers = &d.spec.as_ref()?.template.spec.as_ref()?.containers;
    let arg = containers
        .iter()
        .flat_map(|c| c.args.iter().flatten())
        .find_map(|a| a.strip_prefix("--ca-secret="))?;
    let (ns, name) = arg.split_once('/')?;
    Some((ns.to_string(), name.to_string()))
}

/// `--pre`: may this user create every kind of object the install creates?
/// The list comes from the embedded chart rendering, so it follows the chart.
async fn permissions(client: &Client, namespace: &str) -> Check {
    let api = Api::<SelfSubjectAccessReview>::all(client.clone());
    let wanted = match install::resources(namespace) {
        Ok(w) => w,
        Err(e) => return verdict::fail("permissions", e.to_string(), "pass a valid --namespace"),
    };
    let mut denied = Vec::new();
    for r in &wanted {
        let review = SelfSubjectAccessReview {
            spec: SelfSubjectAccessReviewSpec {
                resource_attributes: Some(ResourceAttributes {
                    group: Some(r.group.clone()),
                    resource: Some(r.plural.clone()),
                    verb: Some("create".into()),
                    namespace: r.namespace.clone(),
                    ..Default::default()
                }),
                ..Default::default()
            },
            ..Default::default()
        };
        let what = match &r.namespace {
            Some(ns) => format!("create {} in {ns}", r.plural),
            None => format!("create {}", r.plural),
        };
        match call(api.create(&PostParams::default(), &review)).await {
            Ok(answer) if answer.status.as_ref().is_some_and(|s| s.allowed) => {}
            Ok(_) => denied.push(what),
            Err(e) => denied.push(format!("{what} (not answered: {e})")),
        }
    }
    verdict::access(&denied, wanted.len())
}

async fn crds(client: &Client) -> Vec<Check> {
    let api = Api::<CustomResourceDefinition>::all(client.clone());
    let mut out = Vec::new();
    for want in mycel_crds::generate::crds() {
        let name = want.metadata.name.clone().unwrap_or_default();
        out.push(match get_opt(&api, &name).await {
            Ok(got) => verdict::crd(&want, got.as_ref()),
            Err(e) => api_failed("crds", &e),
        });
    }
    out
}

/// The CA Secret's certificates, judged; `None` when they cannot be read.
async fn ca(
    client: &Client,
    namespace: &str,
    (ns, name): &(String, String),
    checks: &mut Vec<Check>,
) -> Option<verdict::CaCerts> {
    let secret = match get_opt(&Api::<Secret>::namespaced(client.clone(), ns), name).await {
        Ok(s) => s,
        Err(e) => {
            checks.push(api_failed("ca", &e));
            return None;
        }
    };
    let data: Option<BTreeMap<String, Vec<u8>>> = secret.map(|s| {
        s.data
            .unwrap_or_default()
            .into_iter()
            .map(|(k, v)| (k, v.0))
            .collect()
    });
    let full = format!("{ns}/{name}");
    match verdict::ca_secret(&full, namespace, data.as_ref()) {
        Ok(certs) => {
            let now = now_unix();
            checks.push(verdict::ca_validity(&certs.root, now, "root"));
            if let Some(issuer) = &certs.issuer {
                checks.push(verdict::ca_validity(issuer, now, "issuer"));
            }
            Some(certs)
        }
        Err(c) => {
            checks.push(c);
            None
        }
    }
}

fn now_unix() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

async fn webhook(client: &Client, namespace: &str, root: Option<&[u8]>) -> Check {
    let api = Api::<MutatingWebhookConfiguration>::all(client.clone());
    match get_opt(&api, WEBHOOK_CONFIG).await {
        Ok(config) => {
            let bundles: Option<Vec<Option<Vec<u8>>>> = config.map(|c| {
                c.webhooks
                    .unwrap_or_default()
                    .into_iter()
                    .map(|w| w.client_config.ca_bundle.map(|b| b.0))
                    .collect()
            });
            verdict::webhook(WEBHOOK_CONFIG, namespace, bundles.as_deref(), root)
        }
        Err(e) => api_failed("webhook", &e),
    }
}

async fn webhook_endpoints(client: &Client, namespace: &str) -> Check {
    let api = Api::<EndpointSlice>::namespaced(client.clone(), namespace);
    let lp = ListParams::default().labels(&format!("kubernetes.io/service-name={WEBHOOK_SERVICE}"));
    match call(api.list(&lp)).await {
        Ok(slices) => {
            // An unset `ready` means ready, as Kubernetes defines it.
            let ready = slices
                .items
                .iter()
                .flat_map(|s| &s.endpoints)
                .filter(|e| e.conditions.as_ref().and_then(|c| c.ready).unwrap_or(true))
                .count();
            verdict::webhook_endpoints(namespace, WEBHOOK_SERVICE, ready)
        }
        Err(e) => api_failed("webhook-endpoints", &e),
    }
}

/// Is the webhook reachable, as the API server sees it? A dry-run Pod
/// create in the first meshed namespace goes through admission (webhooks
/// with `sideEffects: None` are called on dry runs) and is never stored.
async fn webhook_call(client: &Client) -> verdict::DryRun {
    let lp = ListParams::default().labels(INJECT_LABEL).limit(1);
    let ns = match call(Api::<Namespace>::all(client.clone()).list(&lp)).await {
        Ok(list) => match list.items.into_iter().next().and_then(|n| n.metadata.name) {
            Some(ns) => ns,
            None => return verdict::DryRun::NoNamespace,
        },
        Err(e) => return verdict::DryRun::Other(String::new(), e),
    };
    let pod: Pod = match serde_json::from_value(serde_json::json!({
        "metadata": {"name": "mycelctl-check-dry-run"},
        "spec": {"containers": [{"name": "check", "image": "mycelctl-check:dry-run"}]},
    })) {
        Ok(p) => p,
        Err(e) => return verdict::DryRun::Other(ns, e.to_string()),
    };
    let params = PostParams {
        dry_run: true,
        field_manager: Some("mycelctl".into()),
    };
    let api = Api::<Pod>::namespaced(client.clone(), &ns);
    match tokio::time::timeout(DRY_RUN_TIMEOUT, api.create(&params, &pod)).await {
        Ok(Ok(pod)) => {
            let spec = pod.spec.unwrap_or_default();
            let injected = spec
                .init_containers
                .iter()
                .flatten()
                .chain(&spec.containers)
                .any(|c| c.name == podcerts::PROXY_CONTAINER);
            verdict::DryRun::Answered { ns, injected }
        }
        Ok(Err(kube::Error::Api(s))) if s.message.contains("failed calling webhook") => {
            verdict::DryRun::WebhookFailed(ns, s.message)
        }
        Ok(Err(e)) => verdict::DryRun::Other(ns, short(&e)),
        Err(_) => verdict::DryRun::Other(ns, format!("no answer within {DRY_RUN_TIMEOUT:?}")),
    }
}

async fn trust_bundles(client: &Client, root: &[u8]) -> Check {
    let lp = ListParams::default().labels(INJECT_LABEL);
    let namespaces = match call(Api::<Namespace>::all(client.clone()).list(&lp)).await {
        Ok(list) => list.items,
        Err(e) => return api_failed("trust-bundle", &e),
    };
    let (mut missing, mut stale) = (Vec::new(), Vec::new());
    for ns in &namespaces {
        let name = ns.metadata.name.clone().unwrap_or_default();
        let api = Api::<ConfigMap>::namespaced(client.clone(), &name);
        match get_opt(&api, TRUST_BUNDLE).await {
            Ok(Some(cm)) => {
                let pem = cm.data.as_ref().and_then(|d| d.get("ca.crt")).cloned();
                let has_root = pem
                    .map(|p| verdict::pem_certs(p.as_bytes()).iter().any(|c| c == root))
                    .unwrap_or(false);
                if !has_root {
                    stale.push(name);
                }
            }
            Ok(None) => missing.push(name),
            Err(e) => missing.push(format!("{name} (not answered: {e})")),
        }
    }
    verdict::trust_bundles(&missing, &stale, namespaces.len())
}

/// The proxies' settings the chart gave the injector (trust domain and
/// admin port), with the chart's defaults when they cannot be read.
async fn proxy_settings(client: &Client, namespace: &str) -> (String, u16) {
    let defaults = mycel_inject::InjectConfig::default();
    let mut out = (defaults.trust_domain.clone(), defaults.ports.admin);
    let api = Api::<ConfigMap>::namespaced(client.clone(), namespace);
    let Ok(Some(cm)) = get_opt(&api, MESH_CONFIG).await else {
        return out;
    };
    let text = cm.data.and_then(|d| d.get("inject.yaml").cloned());
    if let Some(cfg) = text.and_then(|t| serde_saphyr::from_str::<serde_json::Value>(&t).ok()) {
        if let Some(td) = cfg.get("trustDomain").and_then(|v| v.as_str()) {
            out.0 = td.to_string();
        }
        if let Some(port) = cfg
            .pointer("/ports/admin")
            .and_then(serde_json::Value::as_u64)
            .and_then(|p| u16::try_from(p).ok())
        {
            out.1 = port;
        }
    }
    out
}

/// `--proxy`: every meshed Pod's proxy is ready and holds a certificate for
/// its service account.
async fn proxies(client: &Client, namespace: &str) -> Vec<Check> {
    let lp = ListParams::default().labels(mycel_inject::annotations::MESHED_LABEL);
    let pods: Vec<Pod> = match call(Api::<Pod>::all(client.clone()).list(&lp)).await {
        // A terminating pod's proxy drains and stops being ready on
        // purpose (a rollout leaves some for a while): not a problem.
        Ok(list) => list
            .items
            .into_iter()
            .filter(|p| p.metadata.deletion_timestamp.is_none())
            .collect(),
        Err(e) => return vec![api_failed("proxies", &e)],
    };
    let (trust_domain, admin_port) = proxy_settings(client, namespace).await;
    let mut not_ready = Vec::new();
    let mut problems = Vec::new();
    let mut checked = 0;
    let now = now_unix();
    for pod in &pods {
        let ns = pod.metadata.namespace.clone().unwrap_or_default();
        let name = pod.metadata.name.clone().unwrap_or_default();
        let key = format!("{ns}/{name}");
        if !podcerts::proxy_ready(pod) {
            not_ready.push(key);
            continue;
        }
        checked += 1;
        let sa = pod
            .spec
            .as_ref()
            .and_then(|s| s.service_account_name.clone())
            .unwrap_or_else(|| "default".into());
        let want = format!("spiffe://{trust_domain}/ns/{ns}/sa/{sa}");
        let port = podcerts::admin_port(pod).unwrap_or(admin_port);
        match podcerts::read(client, &ns, &name, port, PROXY_TIMEOUT).await {
            Ok(body) => {
                if let Some(why) = verdict::proxy_cert(&body, &want, now) {
                    problems.push(format!("{key}: {why}"));
                }
            }
            Err(e @ podcerts::ReadError::Timeout(_)) => problems.push(format!("{key}: {e}")),
            Err(e) => problems.push(format!(
                "{key}: /certs not readable through the API server ({e})"
            )),
        }
    }
    let mut out = vec![verdict::proxies(&not_ready, pods.len())];
    if checked > 0 {
        out.push(verdict::proxy_certs(&problems, checked));
    } else if pods.is_empty() {
        out.push(pass(
            "proxy-certs",
            "no meshed pod to read a certificate from",
        ));
    }
    out
}

/// An API error as its code and message: kube's rendering of a Status is
/// long.
fn short(e: &kube::Error) -> String {
    match e {
        kube::Error::Api(s) => format!("{} {}", s.code, s.message),
        other => other.to_string(),
    }
}
