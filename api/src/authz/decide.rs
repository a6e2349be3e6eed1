//! The decision: pure, allocation-free, and the same code in the sidecar
//! (enforcing) and the control plane (explaining).
//!
//! Order: a matching DENY policy refuses; otherwise, when any ALLOW policy
//! selects the workload, one of them must match; otherwise the default
//! applies. AUDIT policies never change the outcome: the first that matches
//! is reported so the caller can log and count it.
//!
//! A request seen only at the TCP level (a tunnel, a plaintext connection)
//! has no method, path, host or headers. A rule asking for them cannot be
//! told apart, so it fails closed: it never matches for ALLOW, and for DENY
//! and AUDIT those fields are ignored (the rule matches on what is known).

use std::net::IpAddr;

use http::HeaderMap;

use super::model::{Action, Condition, DefaultPolicy, InboundPolicy, Operation, Rule, Source};
use super::pattern::{bytes_match, glob_path, host_matches, normalize_path, value_matches};
use crate::spiffe::SpiffeId;

/// What is known about one request or connection.
#[derive(Clone, Copy, Debug)]
pub struct Attributes<'a> {
    /// The identity proved in the mTLS handshake; None for plaintext.
    pub peer: Option<&'a SpiffeId>,
    /// The caller's address, when known.
    pub source_ip: Option<IpAddr>,
    /// The workload port the request is for.
    pub port: u16,
    /// None for a connection seen only at the TCP level.
    pub http: Option<HttpAttributes<'a>>,
}

#[derive(Clone, Copy, Debug)]
pub struct HttpAttributes<'a> {
    pub method: &'a str,
    /// The path without the query.
    pub path: &'a str,
    /// The host without a port.
    pub host: &'a str,
    pub headers: &'a HeaderMap,
    /// Claims of a JWT the gateway verified; None elsewhere.
    pub claims: Option<&'a serde_json::Value>,
}

impl HttpAttributes<'_> {
    fn is_grpc(&self) -> bool {
        self.headers
            .get(http::header::CONTENT_TYPE)
            .is_some_and(|v| v.as_bytes().starts_with(b"application/grpc"))
    }
}

/// Which policy (and rule) decided, or which default.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DecidedBy<'p> {
    Policy {
        name: &'p str,
        action: Action,
        /// Index into the policy's rules.
        rule: usize,
    },
    /// ALLOW policies select the workload and none matched.
    NoAllowMatched,
    Default(DefaultPolicy),
    /// The mesh-authenticated default, for a plaintext caller that peer
    /// authentication (PERMISSIVE or DISABLE) admitted.
    PlaintextAdmitted,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Decision<'p> {
    pub allowed: bool,
    pub by: DecidedBy<'p>,
    /// The first AUDIT policy that matched (name, rule): what a DENY would
    /// have refused.
    pub audit: Option<(&'p str, usize)>,
}

impl std::fmt::Display for DecidedBy<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            DecidedBy::Policy { name, action, rule } => {
                write!(f, "{} policy {name} (rule {rule})", action.as_str())
            }
            DecidedBy::NoAllowMatched => f.write_str("no ALLOW policy matched"),
            DecidedBy::Default(d) => write!(f, "default: {}", d.as_str()),
            DecidedBy::PlaintextAdmitted => {
                f.write_str("default: mesh-authenticated (plaintext admitted)")
            }
        }
    }
}

pub fn decide<'p>(policy: &'p InboundPolicy, req: &Attributes<'_>) -> Decision<'p> {
    // Paths are matched as the app will read them (see `normalize_path`).
    let path = req.http.map(|h| normalize_path(h.path));
    let normalized;
    let req = match (req.http, &path) {
        (Some(h), Some(p)) if *p != h.path => {
            normalized = Attributes {
                http: Some(HttpAttributes { path: p, ..h }),
                ..*req
            };
            &normalized
        }
        _ => req,
    };
    let mut audit = None;
    let mut any_allow = false;
    let mut allowed_by = None;
    for p in &policy.policies {
        match p.action {
            Action::Deny => {
                if let Some(rule) = first_match(&p.rules, req, Strictness::Deny) {
                    return Decision {
                        allowed: false,
                        by: DecidedBy::Policy {
                            name: &p.name,
                            action: p.action,
                            rule,
                        },
                        audit,
                    };
                }
            }
            Action::Audit => {
                if audit.is_none() {
                    audit =
                        first_match(&p.rules, req, Strictness::Deny).map(|r| (p.name.as_str(), r));
                }
            }
            Action::Allow => {
                any_allow = true;
                if allowed_by.is_none() {
                    allowed_by = first_match(&p.rules, req, Strictness::Allow).map(|rule| {
                        DecidedBy::Policy {
                            name: &p.name,
                            action: p.action,
                            rule,
                        }
                    });
                }
            }
        }
    }
    let (allowed, by) = match (allowed_by, any_allow) {
        (Some(by), _) => (true, by),
        (None, true) => (false, DecidedBy::NoAllowMatched),
        (None, false) => {
            let allowed = match policy.default {
                DefaultPolicy::AllowAll => true,
                DefaultPolicy::MeshAuthenticated => req.peer.is_some(),
                DefaultPolicy::Deny => false,
            };
            (allowed, DecidedBy::Default(policy.default))
        }
    };
    Decision { allowed, by, audit }
}

/// The decision for a plaintext caller (`req.peer` is None) that peer
/// authentication admitted. Policies apply as to any caller; where none
/// selects the workload, the mesh-authenticated default lets it through,
/// since a PERMISSIVE or DISABLE mode is the explicit choice to accept
/// callers without a mesh identity (`deny` still refuses them).
pub fn decide_plaintext<'p>(policy: &'p InboundPolicy, req: &Attributes<'_>) -> Decision<'p> {
    let mut d = decide(policy, req);
    if d.by == DecidedBy::Default(DefaultPolicy::MeshAuthenticated) {
        d.allowed = true;
        d.by = DecidedBy::PlaintextAdmitted;
    }
    d
}

/// How a rule treats what a TCP-level request cannot show.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Strictness {
    /// Unknown fields fail the rule (ALLOW).
    Allow,
    /// Unknown fields are ignored (DENY, AUDIT): refuse more, never less.
    Deny,
}

fn first_match(rules: &[Rule], req: &Attributes<'_>, s: Strictness) -> Option<usize> {
    rules.iter().position(|r| rule_matches(r, req, s))
}

fn rule_matches(rule: &Rule, req: &Attributes<'_>, s: Strictness) -> bool {
    (rule.from.is_empty() || rule.from.iter().any(|src| source_matches(src, req)))
        && (rule.to.is_empty() || rule.to.iter().any(|op| operation_matches(op, req, s)))
        && rule.when.iter().all(|c| condition_matches(c, req, s))
}

fn source_matches(src: &Source, req: &Attributes<'_>) -> bool {
    if src.unauthenticated && req.peer.is_some() {
        return false;
    }
    let identity_fields = !src.principals.is_empty()
        || !src.namespaces.is_empty()
        || !src.service_accounts.is_empty();
    if identity_fields {
        let Some(peer) = req.peer else {
            return false;
        };
        if !src.principals.is_empty() {
            let id = peer.to_string();
            if !src.principals.iter().any(|p| value_matches(p, &id)) {
                return false;
            }
        }
        if !src.namespaces.is_empty() && !src.namespaces.iter().any(|n| n == peer.namespace()) {
            return false;
        }
        if !src.service_accounts.is_empty()
            && !src.service_accounts.iter().any(|sa| {
                sa.split_once('/').is_some_and(|(ns, name)| {
                    ns == peer.namespace() && name == peer.service_account()
                })
            })
        {
            return false;
        }
    }
    if !src.ip_blocks.is_empty() {
        let Some(ip) = req.source_ip else {
            return false;
        };
        let ip = canonical(ip);
        if !src.ip_blocks.iter().any(|b| b.contains(&ip)) {
            return false;
        }
    }
    true
}

/// An IPv4 caller seen through a dual-stack socket (`::ffff:a.b.c.d`)
/// matches IPv4 blocks.
fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    }
}

fn operation_matches(op: &Operation, req: &Attributes<'_>, s: Strictness) -> bool {
    if !op.ports.is_empty() && !op.ports.contains(&req.port) {
        return false;
    }
    let needs_http = !op.paths.is_empty()
        || !op.methods.is_empty()
        || !op.hosts.is_empty()
        || !op.headers.is_empty()
        || !op.grpc.is_empty();
    if !needs_http {
        return true;
    }
    let Some(h) = req.http else {
        return s == Strictness::Deny;
    };
    (op.paths.is_empty() || op.paths.iter().any(|p| glob_path(p, h.path)))
        && (op.methods.is_empty() || op.methods.iter().any(|m| m.eq_ignore_ascii_case(h.method)))
        && (op.hosts.is_empty() || op.hosts.iter().any(|p| host_matches(p, h.host)))
        && op.headers.iter().all(|m| header_matches(h.headers, m))
        && (op.grpc.is_empty() || (h.is_grpc() && op.grpc.iter().any(|g| grpc_matches(g, h.path))))
}

/// Any value of the header (as bytes: a value need not be text) matches one
/// of the patterns.
fn header_matches(headers: &HeaderMap, m: &super::model::ValueMatch) -> bool {
    headers
        .get_all(m.name.as_str())
        .iter()
        .any(|v| m.values.iter().any(|p| bytes_match(p, v.as_bytes())))
}

/// `package.Service/Method` or `package.Service/*` against a gRPC path
/// (`/package.Service/Method`).
fn grpc_matches(pattern: &str, path: &str) -> bool {
    let Some(path) = path.strip_prefix('/') else {
        return false;
    };
    match pattern.strip_suffix("/*") {
        Some(service) => path
            .strip_prefix(service)
            .and_then(|rest| rest.strip_prefix('/'))
            .is_some_and(|method| !method.is_empty() && !method.contains('/')),
        None => path == pattern,
    }
}

fn condition_matches(c: &Condition, req: &Attributes<'_>, s: Strictness) -> bool {
    let Some(h) = req.http else {
        return s == Strictness::Deny;
    };
    match c {
        Condition::Header(m) => header_matches(h.headers, m),
        Condition::Claim(m) => {
            let Some(claims) = h.claims else {
                // No verified token here: a DENY on a claim cannot be
                // checked, so it holds (fail closed), and an ALLOW cannot.
                return s == Strictness::Deny;
            };
            match claims.get(m.name.as_str()) {
                Some(serde_json::Value::String(v)) => m.values.iter().any(|p| value_matches(p, v)),
                Some(serde_json::Value::Array(items)) => items.iter().any(|i| {
                    i.as_str()
                        .is_some_and(|v| m.values.iter().any(|p| value_matches(p, v)))
                }),
                _ => false,
            }
        }
    }
}
