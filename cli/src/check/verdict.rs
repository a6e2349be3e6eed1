//! What each finding means: pure functions from API answers to a [`Check`].
//! Nothing here does I/O, so every judgment is table-tested (`tests.rs`).

use std::collections::BTreeMap;

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use serde::Serialize;
use x509_parser::prelude::{FromDer, X509Certificate};

/// A check's outcome. A warning is shown but does not fail the run.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    Ok,
    Warn,
    Fail,
}

/// One check's outcome.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Check {
    pub name: &'static str,
    pub status: Status,
    /// False only for [`Status::Fail`]; what scripts test.
    pub ok: bool,
    /// What was found.
    pub detail: String,
    /// What to do about it (empty when ok).
    pub hint: String,
}

fn check(name: &'static str, status: Status, detail: String, hint: String) -> Check {
    Check {
        name,
        status,
        ok: status != Status::Fail,
        detail,
        hint,
    }
}

pub fn pass(name: &'static str, detail: impl Into<String>) -> Check {
    check(name, Status::Ok, detail.into(), String::new())
}

pub fn warn(name: &'static str, detail: impl Into<String>, hint: impl Into<String>) -> Check {
    check(name, Status::Warn, detail.into(), hint.into())
}

pub fn fail(name: &'static str, detail: impl Into<String>, hint: impl Into<String>) -> Check {
    check(name, Status::Fail, detail.into(), hint.into())
}

/// The text form of a check: a mark, the name, what was found, the hint.
pub fn line(c: &Check) -> String {
    let mark = match c.status {
        Status::Ok => "[ok]  ",
        Status::Warn => "[warn]",
        Status::Fail => "[FAIL]",
    };
    let mut s = format!("{mark} {:<18} {}", c.name, c.detail);
    if !c.hint.is_empty() {
        s.push_str(&format!("\n       hint: {}", c.hint));
    }
    s
}

/// The oldest Kubernetes release Mycel supports (native sidecars).
pub const MIN_MINOR: u32 = 29;
/// Under this many days left, a CA certificate is a warning.
pub const WARN_DAYS: i64 = 30;

/// Names the first few of a list, and how many more there are.
fn some_of(items: &[String]) -> String {
    let shown: Vec<&str> = items.iter().take(10).map(String::as_str).collect();
    let more = items.len().saturating_sub(shown.len());
    let mut s = shown.join(", ");
    if more > 0 {
        s.push_str(&format!(" and {more} more"));
    }
    s
}

/// The API server could not be asked at all.
pub fn unreachable(error: &str) -> Check {
    fail(
        "kubernetes-api",
        format!("not reachable: {error}"),
        "check the kubeconfig (--kubeconfig, KUBECONFIG) and that the cluster is up: kubectl version",
    )
}

/// Judges the API server's version (`major`, `minor` as `/version` gives
/// them, e.g. "1", "35+").
pub fn version(major: &str, minor: &str, git: &str) -> Check {
    let digits = |s: &str| s.trim_end_matches('+').parse::<u32>().ok();
    match (digits(major), digits(minor)) {
        (Some(1), Some(m)) if m >= MIN_MINOR => pass("kubernetes-api", format!("reachable, {git}")),
        (Some(ma), Some(_)) if ma > 1 => pass("kubernetes-api", format!("reachable, {git}")),
        (Some(_), Some(_)) => fail(
            "kubernetes-api",
            format!("reachable, but {git} is older than 1.{MIN_MINOR}"),
            format!("Mycel needs Kubernetes 1.{MIN_MINOR} or newer (native sidecar containers)"),
        ),
        _ => fail(
            "kubernetes-api",
            format!("reachable, but its version {major:?}.{minor:?} cannot be read"),
            "check that the kubeconfig points at a Kubernetes API server",
        ),
    }
}

/// `--pre`: the access reviews the API server denied (`verb resource`).
pub fn access(denied: &[String], asked: usize) -> Check {
    if denied.is_empty() {
        return pass(
            "permissions",
            format!("allowed all {asked} kinds of object the install creates"),
        );
    }
    fail(
        "permissions",
        format!("not allowed to {}", denied.join(", ")),
        "install as a cluster administrator (the chart creates cluster-scoped objects: CRDs, ClusterRoles, a webhook)",
    )
}

/// Whether an installed CRD serves the schema this mycelctl was built with.
pub fn crd(want: &CustomResourceDefinition, got: Option<&CustomResourceDefinition>) -> Check {
    let name = want.metadata.name.clone().unwrap_or_default();
    let Some(got) = got else {
        return fail(
            "crds",
            format!("{name} is not installed"),
            "install Mycel: mycelctl install | kubectl apply -f -, or helm install mycel helm/mycel -n mycel-system --create-namespace",
        );
    };
    // Versions by name with their schema; served/storage flags and the
    // API server's defaulting of other fields are not what drifts.
    let schemas = |c: &CustomResourceDefinition| {
        let mut v: Vec<(String, Option<serde_json::Value>)> = c
            .spec
            .versions
            .iter()
            .map(|v| {
                let schema = v.schema.as_ref().and_then(|s| serde_json::to_value(s).ok());
                (v.name.clone(), schema)
            })
            .collect();
        v.sort_by(|a, b| a.0.cmp(&b.0));
        v
    };
    if schemas(want) != schemas(got) {
        return fail(
            "crds",
            format!("{name} is installed but its schema differs from this mycelctl's version"),
            "upgrade the CRDs (mycelctl install --apply, or kubectl apply -f helm/mycel/crds/), or use the mycelctl of the installed version",
        );
    }
    pass("crds", format!("{name} installed and current"))
}

/// The controller Deployment: `None` when it does not exist, else its
/// ready and desired replicas.
pub fn controller(namespace: &str, replicas: Option<(i32, i32)>) -> Check {
    match replicas {
        None => fail(
            "controller",
            format!("no Deployment mycel-controller in namespace {namespace}"),
            "install Mycel (mycelctl install | kubectl apply -f -), or pass --namespace if it is installed elsewhere",
        ),
        Some((ready, _)) if ready < 1 => fail(
            "controller",
            format!("mycel-controller in {namespace} has no ready replica"),
            format!("kubectl -n {namespace} describe deploy/mycel-controller; kubectl -n {namespace} logs deploy/mycel-controller"),
        ),
        Some((ready, desired)) if ready < desired => warn(
            "controller",
            format!("mycel-controller: {ready} of {desired} replicas ready"),
            format!("kubectl -n {namespace} get pods -l app.kubernetes.io/component=controller"),
        ),
        Some((ready, _)) => pass("controller", format!("mycel-controller: {ready} replica(s) ready")),
    }
}

/// The DER certificates of a PEM text (other blocks are skipped).
pub fn pem_certs(pem_text: &[u8]) -> Vec<Vec<u8>> {
    pem::parse_many(pem_text)
        .unwrap_or_default()
        .into_iter()
        .filter(|p| p.tag() == "CERTIFICATE")
        .map(|p| p.into_contents())
        .collect()
}

/// The public half of the mesh CA, as the CA Secret holds it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CaCerts {
    /// The root every proxy trusts (DER).
    pub root: Vec<u8>,
    /// The issuer that signs workload certificates, when the Secret has it.
    pub issuer: Option<Vec<u8>>,
}

/// Reads the CA Secret's certificates (never its keys): Mycel's format
/// (`root.pem`, `issuer.pem`) or cert-manager's (`ca.crt` root, `tls.crt`
/// issuer), as `control-plane/src/sources/k8s/ca_secret.rs` stores them.
/// `namespace` is the controller's, for the hints.
pub fn ca_secret(
    name: &str,
    namespace: &str,
    data: Option<&BTreeMap<String, Vec<u8>>>,
) -> Result<CaCerts, Check> {
    let Some(data) = data else {
        return Err(fail(
            "ca",
            format!("no CA Secret {name}"),
            format!("the controller creates it on first start: check that it runs (kubectl -n {namespace} logs deploy/mycel-controller)"),
        ));
    };
    let (root_key, issuer_key) = if data.contains_key("root.pem") {
        ("root.pem", "issuer.pem")
    } else {
        ("ca.crt", "tls.crt")
    };
    let first = |key: &str| data.get(key).and_then(|v| pem_certs(v).into_iter().next());
    let Some(root) = first(root_key) else {
        return Err(fail(
            "ca",
            format!("CA Secret {name} has no readable root certificate (root.pem or ca.crt)"),
            "see docs/architecture.md, CA storage on Kubernetes, for the Secret's two formats",
        ));
    };
    Ok(CaCerts {
        root,
        issuer: first(issuer_key),
    })
}

/// How long a CA certificate has left: expired or unreadable fails, under
/// [`WARN_DAYS`] warns.
pub fn ca_validity(der: &[u8], now_unix: i64, what: &str) -> Check {
    let Ok((_, cert)) = X509Certificate::from_der(der) else {
        return fail(
            "ca",
            format!("the {what} certificate cannot be parsed"),
            "replace the CA Secret (docs/architecture.md, CA storage on Kubernetes)",
        );
    };
    let left = cert.validity().not_after.timestamp() - now_unix;
    let days = left / 86_400;
    if cert.validity().not_before.timestamp() > now_unix {
        return fail(
            "ca",
            format!("the {what} certificate is not valid yet"),
            "check the clocks of the machine that made it and of the cluster",
        );
    }
    if left <= 0 {
        return fail(
            "ca",
            format!("the {what} certificate expired {} days ago", -days),
            "every mesh certificate is now invalid: replace the CA (docs/architecture.md, CA storage on Kubernetes) and restart the controllers",
        );
    }
    if days < WARN_DAYS {
        return warn(
            "ca",
            format!("the {what} certificate expires in {days} days"),
            "plan its rotation now (docs/architecture.md, CA storage on Kubernetes)",
        );
    }
    pass(
        "ca",
        format!("the {what} certificate is valid for {days} more days"),
    )
}

/// Whether `cert` is `root` or is signed by it.
fn chains_to(cert: &[u8], root: &[u8]) -> bool {
    if cert == root {
        return true;
    }
    let (Ok((_, c)), Ok((_, r))) = (
        X509Certificate::from_der(cert),
        X509Certificate::from_der(root),
    ) else {
        return false;
    };
    c.verify_signature(Some(r.public_key())).is_ok()
}

/// Whether each webhook's `caBundle` holds certificates and one of them is
/// the mesh root (or a certificate the root signed, which the API server
/// trusts as well). `root` is `None` when the CA Secret could not be read.
/// `namespace` is the controller's, for the hints.
pub fn webhook(
    config: &str,
    namespace: &str,
    bundles: Option<&[Option<Vec<u8>>]>,
    root: Option<&[u8]>,
) -> Check {
    let Some(bundles) = bundles else {
        return fail(
            "webhook",
            format!("no MutatingWebhookConfiguration {config}"),
            "install Mycel: pods will not get a proxy without it",
        );
    };
    if bundles.is_empty() {
        return fail(
            "webhook",
            format!("{config} has no webhooks"),
            "reinstall Mycel (mycelctl install --apply)",
        );
    }
    let certs: Vec<Vec<Vec<u8>>> = bundles
        .iter()
        .map(|b| b.as_deref().map(pem_certs).unwrap_or_default())
        .collect();
    if certs.iter().any(Vec::is_empty) {
        return fail(
            "webhook",
            format!("{config}: a webhook has no caBundle with a certificate, so the API server cannot call the injector"),
            format!("the controller writes it at start: check that it runs (kubectl -n {namespace} logs deploy/mycel-controller)"),
        );
    }
    let Some(root) = root else {
        return warn(
            "webhook",
            format!("{config} has a caBundle, not compared: the CA Secret was not readable"),
            "see the ca check",
        );
    };
    if !certs
        .iter()
        .all(|bundle| bundle.iter().any(|c| chains_to(c, root)))
    {
        return fail(
            "webhook",
            format!("{config}: a caBundle is not the mesh CA, so the API server will refuse the injector's certificate"),
            "restart the controller (it rewrites the caBundle), or remove webhook.caBundle from the chart values",
        );
    }
    pass("webhook", format!("{config}: caBundle is the mesh CA"))
}

/// The webhook Service's endpoints: how many are ready.
pub fn webhook_endpoints(namespace: &str, service: &str, ready: usize) -> Check {
    if ready == 0 {
        return fail(
            "webhook-endpoints",
            format!("Service {service} has no ready endpoint: meshed pods cannot be created"),
            format!("the controller serves the webhook: check its pods are ready (kubectl -n {namespace} get pods)"),
        );
    }
    pass(
        "webhook-endpoints",
        format!("Service {service}: {ready} ready endpoint(s)"),
    )
}

/// What a dry-run Pod create in a meshed namespace gave.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum DryRun {
    /// No namespace is labelled mycel.io/inject=enabled: nothing to try.
    NoNamespace,
    /// The API server admitted it; whether the injector added the proxy.
    Answered { ns: String, injected: bool },
    /// The API server says it could not call the webhook.
    WebhookFailed(String, String),
    /// Something else went wrong (rights, quota, a missing account...).
    Other(String, String),
}

/// Whether the API server can call the injector.
pub fn webhook_call(d: &DryRun) -> Check {
    match d {
        DryRun::NoNamespace => pass(
            "webhook-call",
            "not tried: no namespace is labelled mycel.io/inject=enabled",
        ),
        DryRun::Answered { ns, injected: true } => pass(
            "webhook-call",
            format!("a dry-run Pod in {ns} got the proxy: the API server calls the injector"),
        ),
        DryRun::Answered { ns, injected: false } => fail(
            "webhook-call",
            format!("a dry-run Pod in {ns} was admitted without the proxy"),
            "check the webhook's namespaceSelector and objectSelector: kubectl get mutatingwebhookconfiguration mycel-injector -o yaml",
        ),
        DryRun::WebhookFailed(ns, msg) => fail(
            "webhook-call",
            format!("a dry-run Pod in {ns}: {msg}"),
            "the API server cannot reach the injector: check the controller's pods, Service mycel-webhook and its NetworkPolicy",
        ),
        DryRun::Other(ns, msg) => warn(
            "webhook-call",
            format!("could not try a dry-run Pod in {ns:?}: {msg}"),
            "mycelctl needs to create Pods (dry run) in a meshed namespace for this check",
        ),
    }
}

/// Trust-bundle ConfigMaps of the meshed namespaces: those without one,
/// those whose bundle lacks the mesh root, out of `total` namespaces.
pub fn trust_bundles(missing: &[String], stale: &[String], total: usize) -> Check {
    if !missing.is_empty() {
        return fail(
            "trust-bundle",
            format!("no ConfigMap mycel-trust-bundle in {}", some_of(missing)),
            "the controller publishes it into each namespace labelled mycel.io/inject=enabled: check it runs",
        );
    }
    if !stale.is_empty() {
        return fail(
            "trust-bundle",
            format!(
                "mycel-trust-bundle lacks the mesh root in {}",
                some_of(stale)
            ),
            "the controller corrects it within 5 minutes; if it does not, check its log",
        );
    }
    pass(
        "trust-bundle",
        format!("present in all {total} meshed namespace(s)"),
    )
}

/// Pods whose proxy is not ready, named; `total` meshed Pods seen.
pub fn proxies(not_ready: &[String], total: usize) -> Check {
    if not_ready.is_empty() {
        return pass(
            "proxies",
            format!("{total} meshed pod(s), every proxy ready"),
        );
    }
    fail(
        "proxies",
        format!(
            "{} of {total} meshed pod(s) without a ready proxy: {}",
            not_ready.len(),
            some_of(not_ready)
        ),
        "a proxy is ready once it holds a certificate: kubectl logs <pod> -c mycel-proxy says why not",
    )
}

/// What is wrong with one proxy's `/certs` answer, if anything: it must
/// name `want_id` and not be expired at `now_unix`.
pub fn proxy_cert(certs_json: &str, want_id: &str, now_unix: i64) -> Option<String> {
    let Ok(v) = serde_json::from_str::<serde_json::Value>(certs_json) else {
        return Some("its /certs answer is not JSON".into());
    };
    let id = v.get("spiffe_id").and_then(|s| s.as_str()).unwrap_or("");
    if id != want_id {
        return Some(format!("holds {id:?}, not {want_id}"));
    }
    match v.get("not_after_unix").and_then(serde_json::Value::as_i64) {
        Some(t) if t > now_unix => None,
        Some(_) => Some("its certificate has expired".into()),
        None => Some("its /certs answer has no not_after_unix".into()),
    }
}

/// Proxies whose certificate could not be read or is wrong, with why.
pub fn proxy_certs(problems: &[String], checked: usize) -> Check {
    if problems.is_empty() {
        return pass(
            "proxy-certs",
            format!("{checked} proxy certificate(s) valid, for the pod's service account"),
        );
    }
    fail(
        "proxy-certs",
        format!("{} of {checked}: {}", problems.len(), some_of(problems)),
        "the API server reads each proxy's /certs through the pod proxy (pods/proxy get); a pod it cannot reach, or a wrong identity, is named above",
    )
}

#[cfg(test)]
mod tests;
