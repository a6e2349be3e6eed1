//! Gateway API documents for a test's mesh.yaml, in namespace `shop`. The
//! gateway suites all serve the same Gateway and attach policies the same
//! way; rendering those parts here leaves each test to spell out only its
//! routes, matches and policies. Every function returns whole lines, so a
//! test concatenates them in the order the documents read.

use crate::mesh::{APP_PORT, GATEWAY_PORT};

/// The Gateway every suite names (`SidecarSpec::gateway("shop-gateway")`).
pub const GATEWAY: &str = "shop-gateway";

/// Service `echo` (port 80 → the app port), selecting `app: echo`: the
/// backend the gateway suites route to.
pub fn echo_service() -> String {
    format!(
        "---
apiVersion: v1
kind: Service
metadata: {{name: echo, namespace: shop}}
spec:
  selector: {{app: echo}}
  ports: [{{name: http, port: 80, targetPort: {APP_PORT}}}]
"
    )
}

/// A listener `name`: plain HTTP on `GATEWAY_PORT`, only for `hostname` if given.
pub fn http_listener(name: &str, hostname: Option<&str>) -> String {
    match hostname {
        // Quoted: a wildcard's leading `*` would read as a YAML alias.
        Some(host) => {
            format!("{{name: {name}, port: {GATEWAY_PORT}, protocol: HTTP, hostname: \"{host}\"}}")
        }
        None => format!("{{name: {name}, port: {GATEWAY_PORT}, protocol: HTTP}}"),
    }
}

/// The port of [`https_listener`]s. A listener's port only selects
/// listeners (`parentRef.port`); the proxy's `--tls-listen` says where it
/// really listens.
pub const HTTPS_LISTENER_PORT: u16 = 443;

/// A listener `name`: HTTPS, only for `hostname` if given, serving the
/// `kubernetes.io/tls` Secrets `secrets` of namespace `shop`.
pub fn https_listener(name: &str, hostname: Option<&str>, secrets: &[&str]) -> String {
    let refs: Vec<String> = secrets.iter().map(|s| format!("{{name: {s}}}")).collect();
    // Quoted for the same reason as in `http_listener`.
    let host = hostname
        .map(|h| format!(", hostname: \"{h}\""))
        .unwrap_or_default();
    format!(
        "{{name: {name}, port: {HTTPS_LISTENER_PORT}, protocol: HTTPS{host}, tls: {{certificateRefs: [{}]}}}}",
        refs.join(", ")
    )
}

/// The `shop-gateway` Gateway of class `mycel` with these listeners
/// ([`http_listener`], [`https_listener`]).
pub fn gateway(listeners: &[String]) -> String {
    gateway_document("", listeners)
}

/// As [`gateway`], its HTTPS certificates for the proxies of service
/// account `account` (the `mycel.io/gateway-service-account` annotation)
/// instead of those of the Gateway's own name.
pub fn gateway_for_account(account: &str, listeners: &[String]) -> String {
    gateway_document(
        &format!(", annotations: {{mycel.io/gateway-service-account: {account}}}"),
        listeners,
    )
}

fn gateway_document(more_metadata: &str, listeners: &[String]) -> String {
    format!(
        "---
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {{name: {GATEWAY}, namespace: shop{more_metadata}}}
spec:
  gatewayClassName: mycel
  listeners: [{}]
",
        listeners.join(", ")
    )
}

/// A `kubernetes.io/tls` Secret `name` of namespace `shop` holding a PEM
/// chain (leaf first) and its key as `stringData`, as a person writes one.
pub fn tls_secret(name: &str, chain_pem: &str, key_pem: &str) -> String {
    // Block scalars keep the PEM's lines; each line is indented under its key.
    let block = |pem: &str| -> String { pem.lines().map(|l| format!("    {l}\n")).collect() };
    format!(
        "---
apiVersion: v1
kind: Secret
metadata: {{name: {name}, namespace: shop}}
type: kubernetes.io/tls
stringData:
  tls.crt: |
{}  tls.key: |
{}",
        block(chain_pem),
        block(key_pem)
    )
}

/// As [`tls_secret`], in base64 `data`, as a cluster stores one (`kubectl
/// get secret -o yaml`).
pub fn tls_secret_data(name: &str, chain_pem: &str, key_pem: &str) -> String {
    use base64::Engine;
    let b64 = |pem: &str| base64::engine::general_purpose::STANDARD.encode(pem);
    format!(
        "---
apiVersion: v1
kind: Secret
metadata: {{name: {name}, namespace: shop}}
type: kubernetes.io/tls
data:
  tls.crt: {}
  tls.key: {}
",
        b64(chain_pem),
        b64(key_pem)
    )
}

/// The head of an `HTTPRoute` or `GRPCRoute` `name` for `hostnames` on
/// `shop-gateway` (only on its `listener` if given); its [`rule`]s follow.
pub fn route(kind: &str, name: &str, listener: Option<&str>, hostnames: &[&str]) -> String {
    let parent = match listener {
        Some(section) => format!("{{name: {GATEWAY}, sectionName: {section}}}"),
        None => format!("{{name: {GATEWAY}}}"),
    };
    format!(
        "---
apiVersion: gateway.networking.k8s.io/v1
kind: {kind}
metadata: {{name: {name}, namespace: shop}}
spec:
  parentRefs: [{parent}]
  hostnames: [{}]
  rules:
",
        hostnames.join(", ")
    )
}

/// An HTTPRoute match: paths under `prefix`.
pub fn path_prefix(prefix: &str) -> String {
    format!("{{path: {{type: PathPrefix, value: {prefix}}}}}")
}

/// A GRPCRoute match: every method of `service`.
pub fn grpc_service(service: &str) -> String {
    format!("{{method: {{service: {service}}}}}")
}

/// A rule for `matched` ([`path_prefix`], [`grpc_service`]), under the
/// GatewayPolicy `policy` and sent to `backend` (Service, port) if given.
pub fn rule(matched: &str, policy: Option<&str>, backend: Option<(&str, u16)>) -> String {
    let mut yaml = format!("    - matches: [{matched}]\n");
    if let Some(policy) = policy {
        yaml.push_str(&format!(
            "      filters: [{{type: ExtensionRef, extensionRef: {{group: mycel.io, kind: GatewayPolicy, name: {policy}}}}}]\n"
        ));
    }
    if let Some((service, port)) = backend {
        yaml.push_str(&format!(
            "      backendRefs: [{{name: {service}, port: {port}}}]\n"
        ));
    }
    yaml
}
