//! `authz explain`: what each workload behind a service would decide for
//! one request. The policy is the one the controller pushes to that
//! workload ([`Authorization::for_workload`]) and the decision is the very
//! [`decide`] its sidecar runs, so an explanation cannot drift from
//! enforcement. Pure: the admin endpoint gathers the service and its
//! workloads from the index.

#[cfg(test)]
mod tests;

use std::collections::BTreeMap;
use std::net::IpAddr;

use http::HeaderMap;
use mycel_api::authz::{decide, decide_plaintext, Attributes, DecidedBy, HttpAttributes};
use mycel_api::spiffe::SpiffeId;
use serde::Serialize;

use super::Authorization;
use crate::model::{Protocol, Service, ServicePort};

/// The request to explain, as the server sidecar would see it.
#[derive(Clone, Debug, Default)]
pub struct Question {
    /// The identity the caller proves; None for a plaintext caller.
    pub caller: Option<SpiffeId>,
    pub source_ip: Option<IpAddr>,
    /// A service port; None: every port of the service.
    pub port: Option<u16>,
    /// HTTP fields; ignored on TCP ports, where the sidecar sees none.
    pub method: String,
    pub path: String,
    /// None: the service's `<name>.<namespace>`.
    pub host: Option<String>,
    pub headers: HeaderMap,
}

/// A workload behind the service, as the index knows it.
#[derive(Clone, Copy, Debug)]
pub struct Backend<'a> {
    pub name: &'a str,
    pub namespace: &'a str,
    pub labels: &'a BTreeMap<String, String>,
    pub ready: bool,
}

/// The answer; its field names are the `-o json` document of `mycelctl
/// authz explain`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Explanation {
    pub service: String,
    /// A SPIFFE ID, or `unauthenticated`.
    pub caller: String,
    /// True when no workload backs the service yet: the decisions are those
    /// of a workload carrying only the service's selector labels.
    pub from_selector: bool,
    /// Whether every decision allows.
    pub allowed: bool,
    pub decisions: Vec<WorkloadDecision>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct WorkloadDecision {
    /// The workload's name; empty for the selector stand-in.
    pub workload: String,
    pub namespace: String,
    pub labels: BTreeMap<String, String>,
    pub ready: Option<bool>,
    pub service_port: u16,
    /// The workload port, which policies' `to.ports` name.
    pub target_port: u16,
    pub protocol: &'static str,
    /// `ALLOW` or `DENY`.
    pub decision: &'static str,
    /// e.g. `DENY policy shop/x (rule 0)`, `no ALLOW policy matched`,
    /// `default: mesh-authenticated`.
    pub reason: String,
    /// The deciding policy and rule, when a policy decided.
    pub policy: Option<String>,
    pub rule: Option<usize>,
    /// The first AUDIT policy that matched: what it would have refused.
    pub audit: Option<AuditMatch>,
    /// Every policy selecting the workload, in evaluation order.
    pub policies: Vec<String>,
    /// The port's peer-authentication mode and the PeerAuthentication it
    /// comes from, e.g. `STRICT (shop/strict)`; for a plaintext caller
    /// it decides first.
    pub mtls: String,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct AuditMatch {
    pub policy: String,
    pub rule: usize,
}

#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ExplainError {
    #[error("service {service} has no port {port} (its ports: {ports})")]
    NoSuchPort {
        service: String,
        port: u16,
        ports: String,
    },
    #[error("service {0} declares no ports")]
    NoPorts(String),
}

pub fn explain(
    authz: &Authorization,
    service: &Service,
    backends: &[Backend<'_>],
    q: &Question,
) -> Result<Explanation, ExplainError> {
    let key = format!("{}.{}", service.name, service.namespace);
    let ports = ports_asked(service, &key, q.port)?;
    // A service with no workload yet is explained for the workload it would
    // select, so a policy can be checked before anything is deployed.
    let stand_in = [Backend {
        name: "",
        namespace: &service.namespace,
        labels: &service.selector,
        ready: false,
    }];
    let from_selector = backends.is_empty();
    let backends = if from_selector {
        &stand_in[..]
    } else {
        backends
    };
    let host = q.host.clone().unwrap_or_else(|| key.clone());
    let mut decisions = Vec::with_capacity(backends.len() * ports.len());
    for b in backends {
        let policy = authz.for_workload(b.namespace, b.labels);
        for port in &ports {
            let headers = headers_for(port.protocol, &q.headers);
            let http = (port.protocol != Protocol::Tcp).then(|| HttpAttributes {
                method: &q.method,
                path: q.path.split('?').next().unwrap_or_default(),
                host: &host,
                headers: &headers,
                claims: None,
            });
            let attrs = Attributes {
                peer: q.caller.as_ref(),
                source_ip: q.source_ip,
                port: port.target_port,
                http,
            };
            // The controller does not know a sidecar's own --mtls-mode, so
            // where no policy sets a mode that is said rather than guessed.
            let set = policy
                .peer_authentication
                .mode_for(port.target_port, mycel_api::authz::MtlsMode::Strict);
            let mtls = match set.policy {
                Some(by) => format!("{} ({by})", set.mode.as_str()),
                None => "the sidecar's --mtls-mode".to_string(),
            };
            // The verdict: allowed, reason, deciding policy and rule, audit.
            let refused_plaintext =
                q.caller.is_none() && set.policy.is_some() && !set.mode.admits_plaintext();
            let (allowed, reason, by_policy, audit) = if refused_plaintext {
                let reason = format!("peer authentication {set} refuses plaintext");
                (false, reason, None, None)
            } else {
                let d = if q.caller.is_none() {
                    decide_plaintext(&policy, &attrs)
                } else {
                    decide(&policy, &attrs)
                };
                let mut reason = d.by.to_string();
                if q.caller.is_none() && set.policy.is_none() && d.allowed {
                    reason.push_str(" if --mtls-mode is permissive");
                }
                let by_policy = match d.by {
                    DecidedBy::Policy { name, rule, .. } => Some((name.to_string(), rule)),
                    _ => None,
                };
                let audit = d.audit.map(|(policy, rule)| AuditMatch {
                    policy: policy.to_string(),
                    rule,
                });
                (d.allowed, reason, by_policy, audit)
            };
            decisions.push(WorkloadDecision {
                workload: b.name.to_string(),
                namespace: b.namespace.to_string(),
                labels: b.labels.clone(),
                ready: (!from_selector).then_some(b.ready),
                service_port: port.port,
                target_port: port.target_port,
                protocol: port.protocol.as_str(),
                decision: if allowed { "ALLOW" } else { "DENY" },
                reason,
                rule: by_policy.as_ref().map(|(_, r)| *r),
                policy: by_policy.map(|(n, _)| n),
                audit,
                policies: policy.policies.iter().map(|p| p.name.clone()).collect(),
                mtls,
            });
        }
    }
    Ok(Explanation {
        service: key,
        caller: q
            .caller
            .as_ref()
            .map_or_else(|| "unauthenticated".to_string(), ToString::to_string),
        from_selector,
        allowed: decisions.iter().all(|d| d.decision == "ALLOW"),
        decisions,
    })
}

fn ports_asked<'s>(
    service: &'s Service,
    key: &str,
    port: Option<u16>,
) -> Result<Vec<&'s ServicePort>, ExplainError> {
    if service.ports.is_empty() {
        return Err(ExplainError::NoPorts(key.to_string()));
    }
    let Some(port) = port else {
        return Ok(service.ports.iter().collect());
    };
    match service.ports.iter().find(|p| p.port == port) {
        Some(p) => Ok(vec![p]),
        None => Err(ExplainError::NoSuchPort {
            service: key.to_string(),
            port,
            ports: service
                .ports
                .iter()
                .map(|p| format!("{} ({})", p.port, p.name))
                .collect::<Vec<_>>()
                .join(", "),
        }),
    }
}

/// gRPC rules only match requests that say they are gRPC, as every gRPC
/// client does, so a gRPC port's request carries the content type unless
/// the question gave one.
fn headers_for(protocol: Protocol, given: &HeaderMap) -> HeaderMap {
    let mut headers = given.clone();
    if protocol == Protocol::Grpc && !headers.contains_key(http::header::CONTENT_TYPE) {
        headers.insert(
            http::header::CONTENT_TYPE,
            http::HeaderValue::from_static("application/grpc"),
        );
    }
    headers
}
