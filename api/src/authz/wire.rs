//! The policy on the Discovery stream: model to protobuf (controller) and
//! back, validated (sidecar). One conversion for both sides, since both use
//! this model.

use super::model::{
    Action, Condition, DefaultPolicy, InboundPolicy, Operation, Policy, Rule, Source, ValueMatch,
};
use super::peer::{ModeFrom, MtlsMode, PeerAuthentication, PortMode};
use super::validate::{validate_inbound, InvalidPolicy};
use crate::v1;

pub fn to_proto(p: &InboundPolicy) -> v1::InboundPolicy {
    v1::InboundPolicy {
        default: match p.default {
            DefaultPolicy::AllowAll => v1::DefaultPolicy::AllowAll,
            DefaultPolicy::MeshAuthenticated => v1::DefaultPolicy::MeshAuthenticated,
            DefaultPolicy::Deny => v1::DefaultPolicy::Deny,
        } as i32,
        policies: p
            .policies
            .iter()
            .map(|pol| v1::AuthzPolicy {
                name: pol.name.clone(),
                action: match pol.action {
                    Action::Allow => v1::AuthzAction::Allow,
                    Action::Deny => v1::AuthzAction::Deny,
                    Action::Audit => v1::AuthzAction::Audit,
                } as i32,
                rules: pol.rules.iter().map(rule_to_proto).collect(),
            })
            .collect(),
        peer_authentication: Some(peer_to_proto(&p.peer_authentication)),
    }
}

fn mode_to_proto(m: MtlsMode) -> i32 {
    (match m {
        MtlsMode::Strict => v1::PeerAuthMode::Strict,
        MtlsMode::Permissive => v1::PeerAuthMode::Permissive,
        MtlsMode::Disable => v1::PeerAuthMode::Disable,
    }) as i32
}

fn peer_to_proto(p: &PeerAuthentication) -> v1::PeerAuthentication {
    v1::PeerAuthentication {
        mode: p.mode.as_ref().map_or(0, |m| mode_to_proto(m.mode)),
        policy: p
            .mode
            .as_ref()
            .map(|m| m.policy.clone())
            .unwrap_or_default(),
        ports: p
            .ports
            .iter()
            .map(|m| v1::PortPeerAuth {
                port: u32::from(m.port),
                mode: mode_to_proto(m.mode),
                policy: m.policy.clone(),
            })
            .collect(),
    }
}

fn mode_from_proto(m: i32, at: &str) -> Result<Option<MtlsMode>, InvalidPolicy> {
    match v1::PeerAuthMode::try_from(m) {
        Ok(v1::PeerAuthMode::Unspecified) => Ok(None),
        Ok(v1::PeerAuthMode::Strict) => Ok(Some(MtlsMode::Strict)),
        Ok(v1::PeerAuthMode::Permissive) => Ok(Some(MtlsMode::Permissive)),
        Ok(v1::PeerAuthMode::Disable) => Ok(Some(MtlsMode::Disable)),
        Err(_) => Err(bad(at, format!("unknown mode {m}"))),
    }
}

fn peer_from_proto(p: &v1::PeerAuthentication) -> Result<PeerAuthentication, InvalidPolicy> {
    let mode = mode_from_proto(p.mode, "peerAuthentication.mode")?.map(|mode| ModeFrom {
        mode,
        policy: p.policy.clone(),
    });
    let mut ports = Vec::with_capacity(p.ports.len());
    for (i, m) in p.ports.iter().enumerate() {
        let at = format!("peerAuthentication.ports[{i}]");
        let port = u16::try_from(m.port)
            .map_err(|_| bad(format!("{at}.port"), format!("{} is not a port", m.port)))?;
        let mode = mode_from_proto(m.mode, &format!("{at}.mode"))?
            .ok_or_else(|| bad(format!("{at}.mode"), "unspecified"))?;
        ports.push(PortMode {
            port,
            mode,
            policy: m.policy.clone(),
        });
    }
    Ok(PeerAuthentication { mode, ports })
}

fn rule_to_proto(r: &Rule) -> v1::AuthzRule {
    v1::AuthzRule {
        from: r
            .from
            .iter()
            .map(|s| v1::AuthzSource {
                principals: s.principals.clone(),
                namespaces: s.namespaces.clone(),
                service_accounts: s.service_accounts.clone(),
                unauthenticated: s.unauthenticated,
                ip_blocks: s.ip_blocks.iter().map(ToString::to_string).collect(),
            })
            .collect(),
        to: r
            .to
            .iter()
            .map(|o| v1::AuthzOperation {
                ports: o.ports.iter().map(|p| u32::from(*p)).collect(),
                paths: o.paths.clone(),
                methods: o.methods.clone(),
                hosts: o.hosts.clone(),
                headers: o.headers.iter().map(value_to_proto).collect(),
                grpc: o.grpc.clone(),
            })
            .collect(),
        when: r
            .when
            .iter()
            .map(|c| v1::AuthzCondition {
                kind: Some(match c {
                    Condition::Header(m) => v1::authz_condition::Kind::Header(value_to_proto(m)),
                    Condition::Claim(m) => v1::authz_condition::Kind::Claim(value_to_proto(m)),
                }),
            })
            .collect(),
    }
}

fn value_to_proto(m: &ValueMatch) -> v1::AuthzValueMatch {
    v1::AuthzValueMatch {
        name: m.name.clone(),
        values: m.values.clone(),
    }
}

fn bad(field: impl Into<String>, problem: impl Into<String>) -> InvalidPolicy {
    InvalidPolicy {
        field: field.into(),
        problem: problem.into(),
    }
}

/// The model of a received policy, validated as the controller would.
pub fn from_proto(p: &v1::InboundPolicy) -> Result<InboundPolicy, InvalidPolicy> {
    let default = match v1::DefaultPolicy::try_from(p.default) {
        Ok(v1::DefaultPolicy::AllowAll) => DefaultPolicy::AllowAll,
        Ok(v1::DefaultPolicy::MeshAuthenticated) => DefaultPolicy::MeshAuthenticated,
        Ok(v1::DefaultPolicy::Deny) => DefaultPolicy::Deny,
        _ => {
            return Err(bad(
                "default",
                format!("unknown default policy {}", p.default),
            ))
        }
    };
    let mut policies = Vec::with_capacity(p.policies.len());
    for (i, pol) in p.policies.iter().enumerate() {
        let at = format!("policies[{i}]");
        let action = match v1::AuthzAction::try_from(pol.action) {
            Ok(v1::AuthzAction::Allow) => Action::Allow,
            Ok(v1::AuthzAction::Deny) => Action::Deny,
            Ok(v1::AuthzAction::Audit) => Action::Audit,
            _ => {
                return Err(bad(
                    format!("{at}.action"),
                    format!("unknown action {}", pol.action),
                ))
            }
        };
        let mut rules = Vec::with_capacity(pol.rules.len());
        for (j, r) in pol.rules.iter().enumerate() {
            rules.push(rule_from_proto(r, &format!("{at}.rules[{j}]"))?);
        }
        policies.push(Policy {
            name: pol.name.clone(),
            action,
            rules,
        });
    }
    let peer_authentication = match &p.peer_authentication {
        Some(pa) => peer_from_proto(pa)?,
        None => PeerAuthentication::default(),
    };
    let out = InboundPolicy {
        default,
        policies,
        peer_authentication,
    };
    validate_inbound(&out)?;
    Ok(out)
}

fn rule_from_proto(r: &v1::AuthzRule, at: &str) -> Result<Rule, InvalidPolicy> {
    let mut from = Vec::with_capacity(r.from.len());
    for (i, s) in r.from.iter().enumerate() {
        let mut ip_blocks = Vec::with_capacity(s.ip_blocks.len());
        for (k, b) in s.ip_blocks.iter().enumerate() {
            ip_blocks.push(b.parse().map_err(|_| {
                bad(
                    format!("{at}.from[{i}].ipBlocks[{k}]"),
                    format!("{b:?} is not a CIDR"),
                )
            })?);
        }
        from.push(Source {
            principals: s.principals.clone(),
            namespaces: s.namespaces.clone(),
            service_accounts: s.service_accounts.clone(),
            unauthenticated: s.unauthenticated,
            ip_blocks,
        });
    }
    let mut to = Vec::with_capacity(r.to.len());
    for (i, o) in r.to.iter().enumerate() {
        let mut ports = Vec::with_capacity(o.ports.len());
        for (k, p) in o.ports.iter().enumerate() {
            ports.push(u16::try_from(*p).map_err(|_| {
                bad(
                    format!("{at}.to[{i}].ports[{k}]"),
                    format!("{p} is not a port"),
                )
            })?);
        }
        to.push(Operation {
            ports,
            paths: o.paths.clone(),
            methods: o.methods.clone(),
            hosts: o.hosts.clone(),
            headers: o.headers.iter().map(value_from_proto).collect(),
            grpc: o.grpc.clone(),
        });
    }
    let mut when = Vec::with_capacity(r.when.len());
    for (i, c) in r.when.iter().enumerate() {
        when.push(match &c.kind {
            Some(v1::authz_condition::Kind::Header(m)) => Condition::Header(value_from_proto(m)),
            Some(v1::authz_condition::Kind::Claim(m)) => Condition::Claim(value_from_proto(m)),
            None => return Err(bad(format!("{at}.when[{i}]"), "neither header nor claim")),
        });
    }
    Ok(Rule { from, to, when })
}

fn value_from_proto(m: &v1::AuthzValueMatch) -> ValueMatch {
    ValueMatch {
        name: m.name.clone(),
        values: m.values.clone(),
    }
}
