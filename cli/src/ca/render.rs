//! The `/ca/status` document (the controller's contract, read without
//! linking the control plane), its aligned-text form, and the verdict
//! behind the exit status. Pure, so tested without a controller.

use serde::{Deserialize, Serialize};

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct Root {
    pub fingerprint: String,
    pub subject: String,
    pub not_after: String,
    pub role: String,
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct Proxy {
    pub proxy_id: String,
    pub workload: String,
    pub namespace: String,
    pub spiffe_id: String,
    pub root: Option<String>,
    pub on_current_root: bool,
    pub bundle_acked: bool,
}

/// Another controller replica taking part in a rotation shared through
/// the CA Secret.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct Replica {
    pub id: String,
    pub phase: String,
    pub done: bool,
    pub reported: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub waiting: String,
}

/// With `--ca-secret`: the Secret the controller's CA follows.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct Secret {
    pub name: String,
    pub replica: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub read: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub replicas: Vec<Replica>,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub waiting: String,
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct Status {
    pub phase: String,
    pub phase_since: String,
    pub overlap_secs: u64,
    #[serde(default)]
    pub overlap_ends: Option<String>,
    #[serde(default)]
    pub stuck: Option<String>,
    pub roots: Vec<Root>,
    pub proxies: Vec<Proxy>,
    pub proxies_on_old_root: usize,
    pub proxies_not_acked: usize,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret: Option<Secret>,
}

/// Why the exit status is non-zero: the controller reports the rotation
/// stuck, or refuses the CA its Secret holds.
pub fn verdict(status: &Status) -> Option<String> {
    let refused = status
        .secret
        .as_ref()
        .and_then(|s| s.error.as_ref())
        .map(|why| format!("the CA Secret is not followed: {why}"));
    let stuck = status
        .stuck
        .as_ref()
        .map(|why| format!("rotation stuck in phase {}: {why}", status.phase));
    match (stuck, refused) {
        (Some(a), Some(b)) => Some(format!("{a}; {b}")),
        (a, b) => a.or(b),
    }
}

fn short(fp: &str) -> &str {
    fp.get(..16).unwrap_or(fp)
}

/// Columns padded to their widest cell, two spaces apart.
fn aligned(rows: &[Vec<String>]) -> String {
    let cols = rows.iter().map(Vec::len).max().unwrap_or(0);
    let widths: Vec<usize> = (0..cols)
        .map(|c| {
            rows.iter()
                .filter_map(|r| r.get(c))
                .map(|s| s.chars().count())
                .max()
                .unwrap_or(0)
        })
        .collect();
    let mut out = String::new();
    for row in rows {
        let mut line = String::new();
        for (c, cell) in row.iter().enumerate() {
            if c + 1 < row.len() {
                line.push_str(&format!("{cell:<w$}  ", w = widths[c]));
            } else {
                line.push_str(cell);
            }
        }
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out
}

pub fn table(s: &Status) -> String {
    let mut out = format!("PHASE  {} (since {})\n", s.phase, s.phase_since);
    if let Some(ends) = &s.overlap_ends {
        out.push_str(&format!("OVERLAP ENDS  {ends}\n"));
    }
    if let Some(why) = &s.stuck {
        out.push_str(&format!("STUCK  {why}\n"));
    }
    if let Some(secret) = &s.secret {
        out.push_str(&format!(
            "SECRET  {} (this replica {})\n",
            secret.name, secret.replica
        ));
        if let Some(why) = &secret.error {
            out.push_str(&format!("REFUSED  {why}\n"));
        }
        if !secret.waiting.is_empty() {
            out.push_str(&format!("WAITING  {}\n", secret.waiting));
        }
        for r in &secret.replicas {
            let state = if r.done { "done" } else { r.waiting.as_str() };
            out.push_str(&format!(
                "REPLICA  {} {} {} (reported {})\n",
                r.id, r.phase, state, r.reported
            ));
        }
    }
    out.push('\n');
    let mut roots = vec![vec![
        "ROLE".to_string(),
        "FINGERPRINT".into(),
        "NOT AFTER".into(),
        "SUBJECT".into(),
    ]];
    for r in &s.roots {
        roots.push(vec![
            r.role.clone(),
            short(&r.fingerprint).to_string(),
            r.not_after.clone(),
            r.subject.clone(),
        ]);
    }
    out.push_str(&aligned(&roots));
    out.push('\n');
    if s.proxies.is_empty() {
        out.push_str("no proxies connected\n");
        return out;
    }
    let role_of = |fp: &Option<String>| -> String {
        match fp {
            None => "unknown".into(),
            Some(fp) => s
                .roots
                .iter()
                .find(|r| &r.fingerprint == fp)
                .map(|r| format!("{} ({})", r.role, short(fp)))
                .unwrap_or_else(|| format!("untrusted ({})", short(fp))),
        }
    };
    let mut proxies = vec![vec![
        "NAMESPACE".to_string(),
        "WORKLOAD".into(),
        "SPIFFE ID".into(),
        "LEAF ROOT".into(),
        "BUNDLE".into(),
    ]];
    for p in &s.proxies {
        proxies.push(vec![
            p.namespace.clone(),
            if p.workload.is_empty() {
                p.proxy_id.clone()
            } else {
                p.workload.clone()
            },
            p.spiffe_id.clone(),
            role_of(&p.root),
            if p.bundle_acked { "acked" } else { "pending" }.into(),
        ]);
    }
    out.push_str(&aligned(&proxies));
    out.push_str(&format!(
        "\n{} of {} proxies on an old root; {} have not acknowledged the current bundle\n",
        s.proxies_on_old_root,
        s.proxies.len(),
        s.proxies_not_acked
    ));
    out
}
