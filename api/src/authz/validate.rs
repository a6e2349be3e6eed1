//! What a valid policy is, checked by the controller before it accepts one
//! and by the sidecar before it enforces one (a NACK names the field).

use super::model::{Condition, InboundPolicy, Operation, Policy, Rule, Source, ValueMatch};
use super::peer::{PeerAuthentication, MAX_PORT_MODES};
use crate::names::{self, NameKind};

/// Rules per policy.
pub const MAX_RULES: usize = 64;
/// Entries of one list (sources, operations, principals, paths, ...).
pub const MAX_ENTRIES: usize = 128;
/// Policies selecting one workload: each is evaluated on every request.
pub const MAX_POLICIES: usize = 256;
const MAX_PATTERN_LEN: usize = 1024;

/// A field of a policy that is not valid, named by its path
/// (`rules[0].from[1].principals[0]`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {problem}")]
pub struct InvalidPolicy {
    pub field: String,
    pub problem: String,
}

fn bad(field: impl Into<String>, problem: impl Into<String>) -> InvalidPolicy {
    InvalidPolicy {
        field: field.into(),
        problem: problem.into(),
    }
}

pub fn validate_inbound(p: &InboundPolicy) -> Result<(), InvalidPolicy> {
    if p.policies.len() > MAX_POLICIES {
        return Err(bad(
            "policies",
            format!(
                "{} policies select this workload; at most {MAX_POLICIES}",
                p.policies.len()
            ),
        ));
    }
    for (i, policy) in p.policies.iter().enumerate() {
        validate_policy(policy).map_err(|e| {
            bad(
                format!("policies[{i}] ({}).{}", policy.name, e.field),
                e.problem,
            )
        })?;
    }
    peer_authentication(&p.peer_authentication)
}

fn peer_authentication(p: &PeerAuthentication) -> Result<(), InvalidPolicy> {
    if p.mode.as_ref().is_some_and(|m| m.policy.is_empty()) {
        return Err(bad("peerAuthentication.mode.policy", "empty"));
    }
    count("peerAuthentication.ports", p.ports.len(), MAX_PORT_MODES)?;
    let mut last = 0u16;
    for (i, m) in p.ports.iter().enumerate() {
        let at = format!("peerAuthentication.ports[{i}]");
        if m.port == 0 {
            return Err(bad(format!("{at}.port"), "0 is not a port"));
        }
        // The sidecar looks ports up by binary search.
        if m.port <= last {
            return Err(bad(
                format!("{at}.port"),
                format!("{} is out of order or repeated", m.port),
            ));
        }
        last = m.port;
        if m.policy.is_empty() {
            return Err(bad(format!("{at}.policy"), "empty"));
        }
    }
    Ok(())
}

/// Checks one policy; field paths start at the policy (`rules[..]`).
pub fn validate_policy(p: &Policy) -> Result<(), InvalidPolicy> {
    if p.name.is_empty() {
        return Err(bad("name", "empty"));
    }
    count("rules", p.rules.len(), MAX_RULES)?;
    for (i, r) in p.rules.iter().enumerate() {
        rule(r, &format!("rules[{i}]"))?;
    }
    Ok(())
}

fn count(field: &str, n: usize, max: usize) -> Result<(), InvalidPolicy> {
    if n > max {
        return Err(bad(field, format!("{n} entries; at most {max}")));
    }
    Ok(())
}

fn rule(r: &Rule, at: &str) -> Result<(), InvalidPolicy> {
    count(&format!("{at}.from"), r.from.len(), MAX_ENTRIES)?;
    count(&format!("{at}.to"), r.to.len(), MAX_ENTRIES)?;
    count(&format!("{at}.when"), r.when.len(), MAX_ENTRIES)?;
    for (i, s) in r.from.iter().enumerate() {
        source(s, &format!("{at}.from[{i}]"))?;
    }
    for (i, o) in r.to.iter().enumerate() {
        operation(o, &format!("{at}.to[{i}]"))?;
    }
    for (i, c) in r.when.iter().enumerate() {
        let at = format!("{at}.when[{i}]");
        match c {
            Condition::Header(m) => value_match(m, &format!("{at}.header"), true)?,
            Condition::Claim(m) => value_match(m, &format!("{at}.claim"), false)?,
        }
    }
    Ok(())
}

fn source(s: &Source, at: &str) -> Result<(), InvalidPolicy> {
    for (name, n) in [
        ("principals", s.principals.len()),
        ("namespaces", s.namespaces.len()),
        ("serviceAccounts", s.service_accounts.len()),
        ("ipBlocks", s.ip_blocks.len()),
    ] {
        count(&format!("{at}.{name}"), n, MAX_ENTRIES)?;
    }
    let has_identity =
        !s.principals.is_empty() || !s.namespaces.is_empty() || !s.service_accounts.is_empty();
    if s.unauthenticated && has_identity {
        return Err(bad(
            format!("{at}.unauthenticated"),
            "an unauthenticated caller has no identity: principals, namespaces and serviceAccounts cannot be set in the same source",
        ));
    }
    for (i, p) in s.principals.iter().enumerate() {
        let field = format!("{at}.principals[{i}]");
        pattern(p, &field)?;
        if p != "*" && !p.starts_with("spiffe://") {
            return Err(bad(
                field,
                format!("{p:?} is not a SPIFFE ID (spiffe://...), a spiffe://...* prefix, or *"),
            ));
        }
        if let Some(body) = p.strip_suffix('*') {
            if body.contains('*') {
                return Err(bad(field, "* only at the end"));
            }
        } else if p != "*" {
            p.parse::<crate::spiffe::SpiffeId>()
                .map_err(|e| bad(field, e.to_string()))?;
        }
    }
    for (i, n) in s.namespaces.iter().enumerate() {
        names::validate(NameKind::Namespace, n)
            .map_err(|e| bad(format!("{at}.namespaces[{i}]"), e.to_string()))?;
    }
    for (i, sa) in s.service_accounts.iter().enumerate() {
        let field = format!("{at}.serviceAccounts[{i}]");
        let Some((ns, name)) = sa.split_once('/') else {
            return Err(bad(
                field,
                format!("{sa:?} is not <namespace>/<service-account>"),
            ));
        };
        names::validate(NameKind::Namespace, ns).map_err(|e| bad(field.clone(), e.to_string()))?;
        names::validate(NameKind::ServiceAccount, name).map_err(|e| bad(field, e.to_string()))?;
    }
    Ok(())
}

fn operation(o: &Operation, at: &str) -> Result<(), InvalidPolicy> {
    for (name, n) in [
        ("ports", o.ports.len()),
        ("paths", o.paths.len()),
        ("methods", o.methods.len()),
        ("hosts", o.hosts.len()),
        ("headers", o.headers.len()),
        ("grpc", o.grpc.len()),
    ] {
        count(&format!("{at}.{name}"), n, MAX_ENTRIES)?;
    }
    for (i, p) in o.ports.iter().enumerate() {
        if *p == 0 {
            return Err(bad(format!("{at}.ports[{i}]"), "0 is not a port"));
        }
    }
    for (i, p) in o.paths.iter().enumerate() {
        path_pattern(p, &format!("{at}.paths[{i}]"))?;
    }
    for (i, m) in o.methods.iter().enumerate() {
        let field = format!("{at}.methods[{i}]");
        if m.is_empty() || m.len() > 32 || !m.bytes().all(|b| b.is_ascii_alphabetic()) {
            return Err(bad(
                field,
                format!("{m:?} is not an HTTP method (letters only, e.g. GET)"),
            ));
        }
    }
    for (i, h) in o.hosts.iter().enumerate() {
        let field = format!("{at}.hosts[{i}]");
        pattern(h, &field)?;
        let body = h.strip_prefix('*').unwrap_or(h);
        if body.contains('*') || h.is_empty() {
            return Err(bad(field, format!("{h:?}: a host is exact, *.suffix or *")));
        }
    }
    for (i, m) in o.headers.iter().enumerate() {
        value_match(m, &format!("{at}.headers[{i}]"), true)?;
    }
    for (i, g) in o.grpc.iter().enumerate() {
        let field = format!("{at}.grpc[{i}]");
        pattern(g, &field)?;
        let ok = g.split_once('/').is_some_and(|(svc, method)| {
            !svc.is_empty()
                && !svc.contains('*')
                && (method == "*" || (!method.is_empty() && !method.contains(['*', '/'])))
        });
        if !ok {
            return Err(bad(
                field,
                format!("{g:?} is not package.Service/Method or package.Service/*"),
            ));
        }
    }
    Ok(())
}

fn path_pattern(p: &str, field: &str) -> Result<(), InvalidPolicy> {
    pattern(p, field)?;
    if p == "*" {
        return Ok(());
    }
    if !p.starts_with('/') {
        return Err(bad(field, format!("{p:?} does not start with /")));
    }
    let body = p.strip_suffix('*').unwrap_or(p);
    // An inner `*` stands for a whole segment; anything else would read
    // as a glob this matcher does not implement.
    for seg in body.split('/') {
        if seg.contains('*') && seg != "*" {
            return Err(bad(
                field,
                format!("{p:?}: * stands for a whole segment (/a/*/b) or ends the pattern (/a/*)"),
            ));
        }
    }
    Ok(())
}

fn value_match(m: &ValueMatch, at: &str, header: bool) -> Result<(), InvalidPolicy> {
    if header {
        http::HeaderName::from_bytes(m.name.as_bytes()).map_err(|_| {
            bad(
                format!("{at}.name"),
                format!("{:?} is not a header name", m.name),
            )
        })?;
    } else if m.name.is_empty() {
        return Err(bad(format!("{at}.name"), "empty"));
    }
    if m.values.is_empty() {
        return Err(bad(
            format!("{at}.values"),
            "at least one value (* for any)",
        ));
    }
    count(&format!("{at}.values"), m.values.len(), MAX_ENTRIES)?;
    for (i, v) in m.values.iter().enumerate() {
        pattern(v, &format!("{at}.values[{i}]"))?;
    }
    Ok(())
}

fn pattern(p: &str, field: &str) -> Result<(), InvalidPolicy> {
    if p.len() > MAX_PATTERN_LEN {
        return Err(bad(
            field,
            format!("{} bytes; at most {MAX_PATTERN_LEN}", p.len()),
        ));
    }
    if p.chars().any(char::is_control) {
        return Err(bad(field, "control characters"));
    }
    Ok(())
}
