//! Gateway API documents for a test's mesh.yaml, in namespace `shop`. The
//! gateway suites all serve the same Gateway and attach policies the same
//! way; rendering those parts here leaves each test to spell out only its
//! routes, matches and policies. Every function returns whole lines, so a
//! test concatenates them in the order the documents read.

use crate::mesh::GATEWAY_PORT;

/// The Gateway every suite names (`SidecarSpec::gateway("shop-gateway")`).
const GATEWAY: &str = "shop-gateway";

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

/// The `shop-gateway` Gateway of class `mycel` with these [`http_listener`]s.
pub fn gateway(listeners: &[String]) -> String {
    format!(
        "---
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {{name: {GATEWAY}, namespace: shop}}
spec:
  gatewayClassName: mycel
  listeners: [{}]
",
        listeners.join(", ")
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
