//! Rows of each `proxy-config` section, read from the proxy's
//! `/config_dump` snapshot (services keyed `<name>.<namespace>`, each
//! `{"state": "known", "service", "endpoints", "policy", "routes"}`, and
//! `inbound`, the workload's authorization) and from `/certs`.

use std::fmt::Write as _;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::Serialize;
use serde_json::Value;

use super::table::{or_dash, Table};

#[derive(Debug, Serialize)]
pub struct ServiceRow {
    pub service: String,
    pub state: String,
    /// `name port->target/protocol`.
    pub ports: Vec<String>,
    pub vips: Vec<String>,
    pub endpoints_ready: usize,
    pub endpoints: usize,
}

#[derive(Debug, Serialize)]
pub struct EndpointRow {
    pub service: String,
    pub address: String,
    pub identity: String,
    pub workload: String,
    pub ready: bool,
    pub zone: String,
    pub weight: u64,
}

#[derive(Debug, Serialize)]
pub struct PolicyRow {
    pub service: String,
    /// `<namespace>/<name>` of the TrafficPolicy; empty for the defaults.
    pub policy: String,
    /// A service port, or None for every port.
    pub port: Option<u64>,
    pub load_balancer: String,
    pub retries: String,
    pub request_timeout: String,
    pub circuit_breaker: bool,
    pub outlier_detection: bool,
    pub fault: bool,
}

#[derive(Debug, Serialize)]
pub struct RouteRow {
    pub service: String,
    pub route: String,
    pub kind: String,
    pub ports: Vec<u64>,
    pub rules: usize,
    /// `service:port weight`, every rule's backends.
    pub backends: Vec<String>,
}

#[derive(Debug, Serialize)]
pub struct Authz {
    /// False until the controller sent the workload's policy (the proxy
    /// then applies the mesh default, mesh-authenticated).
    pub received: bool,
    pub default: String,
    pub policies: Vec<AuthzPolicyRow>,
}

#[derive(Debug, Serialize)]
pub struct AuthzPolicyRow {
    pub policy: String,
    pub action: String,
    pub rules: usize,
}

#[derive(Debug, Serialize)]
pub struct CertRow {
    pub spiffe_id: String,
    pub serial: String,
    pub not_after: String,
    /// Negative once expired.
    pub seconds_left: i64,
    pub issuer: String,
}

fn s(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Null => String::new(),
        other => other.to_string(),
    }
}

fn known_services(snapshot: &Value) -> impl Iterator<Item = (&String, &Value)> {
    snapshot["services"]
        .as_object()
        .into_iter()
        .flat_map(|m| m.iter())
}

fn array(v: &Value) -> &[Value] {
    v.as_array().map(Vec::as_slice).unwrap_or_default()
}

pub fn services(snapshot: &Value) -> Vec<ServiceRow> {
    known_services(snapshot)
        .map(|(key, st)| {
            let svc = &st["service"];
            let eps = array(&st["endpoints"]);
            ServiceRow {
                service: key.clone(),
                state: s(&st["state"]),
                ports: array(&svc["ports"])
                    .iter()
                    .map(|p| {
                        format!(
                            "{} {}->{}/{}",
                            s(&p["name"]),
                            s(&p["port"]),
                            s(&p["target_port"]),
                            s(&p["protocol"])
                        )
                    })
                    .collect(),
                vips: array(&svc["vips"]).iter().map(s).collect(),
                endpoints_ready: eps.iter().filter(|e| e["ready"] == true).count(),
                endpoints: eps.len(),
            }
        })
        .collect()
}

pub fn endpoints(snapshot: &Value) -> Vec<EndpointRow> {
    known_services(snapshot)
        .flat_map(|(key, st)| {
            array(&st["endpoints"]).iter().map(move |e| EndpointRow {
                service: key.clone(),
                address: s(&e["mesh_addr"]),
                identity: s(&e["identity"]),
                workload: s(&e["workload"]),
                ready: e["ready"] == true,
                zone: s(&e["zone"]),
                weight: e["weight"].as_u64().unwrap_or(0),
            })
        })
        .collect()
}

pub fn policies(snapshot: &Value) -> Vec<PolicyRow> {
    let mut rows = Vec::new();
    for (key, st) in known_services(snapshot) {
        let policy = &st["policy"];
        if policy.is_null() {
            continue;
        }
        let row = |port: Option<u64>, rules: &Value| PolicyRow {
            service: key.clone(),
            policy: s(&policy["source"]),
            port,
            load_balancer: algorithm(&rules["load_balancer"]["algorithm"]),
            retries: match rules["retry"]["attempts"].as_u64() {
                Some(n) => n.to_string(),
                None => String::new(),
            },
            request_timeout: duration(&rules["timeouts"]["request"]).unwrap_or_default(),
            circuit_breaker: !rules["circuit_breaker"].is_null(),
            outlier_detection: !rules["outlier_detection"].is_null(),
            fault: !rules["fault"].is_null(),
        };
        rows.push(row(None, &policy["rules"]));
        if let Some(ports) = policy["ports"].as_object() {
            for (port, rules) in ports {
                rows.push(row(port.parse().ok(), rules));
            }
        }
    }
    rows
}

fn algorithm(a: &Value) -> String {
    let kind = s(&a["type"]);
    match a["key"]["from"].as_str() {
        Some(from) => match a["key"]["name"].as_str() {
            Some(name) => format!("{kind} ({from} {name})"),
            None => format!("{kind} ({from})"),
        },
        None => kind,
    }
}

/// A Rust `Duration` as serde writes it (`{"secs", "nanos"}`).
fn duration(v: &Value) -> Option<String> {
    let secs = v["secs"].as_u64()?;
    let nanos = u32::try_from(v["nanos"].as_u64().unwrap_or(0)).unwrap_or(0);
    Some(humantime::format_duration(Duration::new(secs, nanos)).to_string())
}

pub fn routes(snapshot: &Value) -> Vec<RouteRow> {
    known_services(snapshot)
        .flat_map(|(key, st)| {
            array(&st["routes"]["routes"]).iter().map(move |r| {
                let rules = array(&r["rules"]);
                RouteRow {
                    service: key.clone(),
                    route: s(&r["name"]),
                    kind: s(&r["kind"]).to_ascii_lowercase(),
                    ports: array(&r["ports"])
                        .iter()
                        .filter_map(Value::as_u64)
                        .collect(),
                    rules: rules.len(),
                    backends: rules
                        .iter()
                        .flat_map(|rule| array(&rule["backends"]))
                        .map(|b| {
                            let port = b["port"].as_u64().map(|p| format!(":{p}"));
                            format!(
                                "{}{} {}",
                                s(&b["service_key"]),
                                port.unwrap_or_default(),
                                s(&b["weight"])
                            )
                        })
                        .collect(),
                }
            })
        })
        .collect()
}

pub fn authz(snapshot: &Value) -> Authz {
    let inbound = &snapshot["inbound"];
    Authz {
        received: inbound.is_object(),
        default: match inbound["default"].as_str() {
            Some(d) => d.to_string(),
            None => "mesh-authenticated".to_string(),
        },
        policies: array(&inbound["policies"])
            .iter()
            .map(|p| AuthzPolicyRow {
                policy: s(&p["name"]),
                action: s(&p["action"]),
                rules: array(&p["rules"]).len(),
            })
            .collect(),
    }
}

pub fn cert(certs: &Value) -> CertRow {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
        .unwrap_or(0);
    CertRow {
        spiffe_id: s(&certs["spiffe_id"]),
        serial: s(&certs["serial"]),
        not_after: s(&certs["not_after"]),
        seconds_left: certs["not_after_unix"]
            .as_i64()
            .map_or(0, |t| t.saturating_sub(now)),
        issuer: s(&certs["issuer_chain"][0]["subject"]),
    }
}

pub fn services_table(rows: &[ServiceRow]) -> Table {
    let mut t = Table::new(&["SERVICE", "STATE", "PORTS", "VIPS", "ENDPOINTS"]);
    for r in rows {
        t.row(vec![
            r.service.clone(),
            r.state.clone(),
            or_dash(r.ports.join(", ")),
            or_dash(r.vips.join(",")),
            format!("{}/{} ready", r.endpoints_ready, r.endpoints),
        ]);
    }
    t
}

pub fn endpoints_table(rows: &[EndpointRow]) -> Table {
    let mut t = Table::new(&[
        "SERVICE", "ADDRESS", "IDENTITY", "WORKLOAD", "READY", "ZONE", "WEIGHT",
    ]);
    for r in rows {
        t.row(vec![
            r.service.clone(),
            r.address.clone(),
            r.identity.clone(),
            or_dash(r.workload.as_str()),
            r.ready.to_string(),
            or_dash(r.zone.as_str()),
            r.weight.to_string(),
        ]);
    }
    t
}

pub fn policies_table(rows: &[PolicyRow]) -> Table {
    let mut t = Table::new(&[
        "SERVICE",
        "POLICY",
        "PORT",
        "LOAD BALANCER",
        "RETRIES",
        "TIMEOUT",
        "CIRCUIT BREAKER",
        "OUTLIER",
        "FAULT",
    ]);
    let yes = |b: bool| if b { "yes" } else { "-" }.to_string();
    for r in rows {
        t.row(vec![
            r.service.clone(),
            if r.policy.is_empty() {
                "(defaults)".into()
            } else {
                r.policy.clone()
            },
            r.port.map_or_else(|| "*".to_string(), |p| p.to_string()),
            or_dash(r.load_balancer.as_str()),
            or_dash(r.retries.as_str()),
            or_dash(r.request_timeout.as_str()),
            yes(r.circuit_breaker),
            yes(r.outlier_detection),
            yes(r.fault),
        ]);
    }
    t
}

pub fn routes_table(rows: &[RouteRow]) -> Table {
    let mut t = Table::new(&["SERVICE", "ROUTE", "KIND", "PORTS", "RULES", "BACKENDS"]);
    for r in rows {
        let ports: Vec<String> = r.ports.iter().map(u64::to_string).collect();
        t.row(vec![
            r.service.clone(),
            r.route.clone(),
            r.kind.clone(),
            if ports.is_empty() {
                "*".into()
            } else {
                ports.join(",")
            },
            r.rules.to_string(),
            or_dash(r.backends.join(", ")),
        ]);
    }
    t
}

pub fn authz_table(a: &Authz) -> Table {
    let mut t = Table::new(&["POLICY", "ACTION", "RULES"]);
    let default = match a.received {
        true => a.default.clone(),
        false => format!("{} (nothing received from the controller yet)", a.default),
    };
    t.row(vec!["(default)".into(), default, "-".into()]);
    for p in &a.policies {
        t.row(vec![
            p.policy.clone(),
            p.action.clone(),
            p.rules.to_string(),
        ]);
    }
    t
}

pub fn certs_table(c: &CertRow) -> Table {
    let mut t = Table::new(&["SPIFFE ID", "SERIAL", "NOT AFTER", "TIME LEFT", "ISSUER"]);
    let left = match u64::try_from(c.seconds_left) {
        // Minutes are precise enough for a certificate's remaining life.
        Ok(secs) if secs >= 60 => {
            humantime::format_duration(Duration::from_secs(secs / 60 * 60)).to_string()
        }
        Ok(secs) => humantime::format_duration(Duration::from_secs(secs)).to_string(),
        Err(_) => "expired".to_string(),
    };
    t.row(vec![
        c.spiffe_id.clone(),
        c.serial.clone(),
        c.not_after.clone(),
        left,
        or_dash(c.issuer.as_str()),
    ]);
    t
}

/// Each non-empty section under its title, or a line saying it is empty.
pub fn render(tables: &[(&str, Table)]) -> String {
    let mut out = String::new();
    let titled = tables.len() > 1;
    for (i, (title, table)) in tables.iter().enumerate() {
        if titled {
            if i > 0 {
                out.push('\n');
            }
            let _ = writeln!(out, "{title}:");
        }
        if table.is_empty() {
            let _ = writeln!(out, "(none)");
        } else {
            out.push_str(&table.render());
        }
    }
    out
}

#[cfg(test)]
mod tests;
