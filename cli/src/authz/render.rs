//! The controller's explanation as text, and the one-line reason for a
//! non-zero exit.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use serde::Deserialize;

use crate::proxy_config::table::{or_dash, Table};

/// What the controller answers (its `authz::explain::Explanation`); only
/// the fields printed here.
#[derive(Debug, Deserialize)]
pub struct Explanation {
    pub service: String,
    pub caller: String,
    pub from_selector: bool,
    pub allowed: bool,
    pub decisions: Vec<Decision>,
}

#[derive(Debug, Deserialize)]
pub struct Decision {
    pub workload: String,
    pub labels: BTreeMap<String, String>,
    pub ready: Option<bool>,
    pub service_port: u16,
    pub target_port: u16,
    pub protocol: String,
    pub decision: String,
    pub reason: String,
    pub audit: Option<Audit>,
    /// The port's peer-authentication mode (controllers before it was
    /// added do not send it).
    #[serde(default)]
    pub mtls: String,
}

#[derive(Debug, Deserialize)]
pub struct Audit {
    pub policy: String,
    pub rule: usize,
}

fn labels(l: &BTreeMap<String, String>) -> String {
    l.iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join(",")
}

pub fn text(e: &Explanation, method: &str, path: &str) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "Caller:  {}", e.caller);
    let _ = writeln!(out, "Service: {}", e.service);
    let _ = writeln!(
        out,
        "Request: {method} {path} (HTTP ports; TCP ports see only the port)"
    );
    if e.from_selector {
        let selector = e.decisions.first().map(|d| labels(&d.labels));
        let _ = writeln!(
            out,
            "No workload backs {} yet: explained for a workload with its selector's labels ({}).",
            e.service,
            or_dash(selector.unwrap_or_default())
        );
    }
    out.push('\n');
    // The mTLS mode decides first only for a caller without a mesh identity.
    let plaintext = e.caller == "unauthenticated";
    let mut t = if plaintext {
        Table::new(&[
            "WORKLOAD",
            "PORT",
            "MTLS",
            "DECISION",
            "DECIDED BY",
            "AUDIT",
        ])
    } else {
        Table::new(&["WORKLOAD", "PORT", "DECISION", "DECIDED BY", "AUDIT"])
    };
    for d in &e.decisions {
        let workload = match (d.workload.as_str(), d.ready) {
            ("", _) => format!("(selector {})", labels(&d.labels)),
            (w, Some(false)) => format!("{w} (not ready)"),
            (w, _) => w.to_string(),
        };
        let mut row = vec![
            workload,
            format!("{}->{}/{}", d.service_port, d.target_port, d.protocol),
        ];
        if plaintext {
            row.push(or_dash(d.mtls.clone()));
        }
        row.extend([
            d.decision.clone(),
            d.reason.clone(),
            d.audit.as_ref().map_or_else(
                || "-".to_string(),
                |a| format!("{} (rule {})", a.policy, a.rule),
            ),
        ]);
        t.row(row);
    }
    out.push_str(&t.render());
    out
}

/// Why the exit status is 1: the first denial, and how many there are.
pub fn denial(e: &Explanation) -> Option<String> {
    if e.allowed {
        return None;
    }
    let denied: Vec<&Decision> = e
        .decisions
        .iter()
        .filter(|d| d.decision != "ALLOW")
        .collect();
    let first = denied.first()?;
    let who = match first.workload.as_str() {
        "" => "its selector's workload".to_string(),
        w => w.to_string(),
    };
    Some(format!(
        "DENY: {} may not call {} ({} of {} decisions deny; {who}, port {}: {})",
        e.caller,
        e.service,
        denied.len(),
        e.decisions.len(),
        first.service_port,
        first.reason
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn explanation(json: serde_json::Value) -> Explanation {
        serde_json::from_value(json).unwrap()
    }

    fn decision(workload: &str, decision: &str, reason: &str) -> serde_json::Value {
        serde_json::json!({
            "workload": workload, "namespace": "shop", "labels": {"app": "ratings"},
            "ready": if workload.is_empty() { None } else { Some(true) },
            "service_port": 80, "target_port": 8080, "protocol": "http",
            "decision": decision, "reason": reason, "policy": null, "rule": null,
            "audit": null, "policies": []
        })
    }

    #[test]
    fn a_denial_names_the_policy_and_exits_non_zero() {
        let e = explanation(serde_json::json!({
            "service": "ratings.shop", "caller": "spiffe://cluster.local/ns/shop/sa/x",
            "from_selector": false, "allowed": false,
            "decisions": [
                decision("ratings-0", "ALLOW", "default: mesh-authenticated"),
                decision("ratings-1", "DENY", "DENY policy shop/no-x (rule 0)"),
            ]
        }));
        let out = text(&e, "GET", "/");
        assert!(
            out.contains("ratings-1  80->8080/http  DENY      DENY policy shop/no-x (rule 0)"),
            "{out}"
        );
        let why = denial(&e).unwrap();
        assert!(why.contains("1 of 2") && why.contains("shop/no-x"), "{why}");
    }

    #[test]
    fn the_selector_stand_in_is_said() {
        let e = explanation(serde_json::json!({
            "service": "ratings.shop", "caller": "unauthenticated",
            "from_selector": true, "allowed": true,
            "decisions": [decision("", "ALLOW", "default: allow-all")]
        }));
        let out = text(&e, "GET", "/");
        assert!(out.contains("No workload backs ratings.shop yet"), "{out}");
        assert!(out.contains("(selector app=ratings)"), "{out}");
        assert_eq!(denial(&e), None);
    }
}
