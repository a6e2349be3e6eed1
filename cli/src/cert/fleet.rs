//! `cert check`: one row per meshed pod (its proxy's certificate, time
//! left, verified or not) and the judgment behind the exit status. Pure:
//! each pod's report (or why there is none) in, rows and text out.

use std::time::Duration;

use serde::Serialize;

use super::describe::{self, Report, Validity, VerifyStatus};
use super::render::{self, Cell, Mark, Style};

/// One meshed pod's line; field names are the `-o json` contract.
#[derive(Clone, Debug, Serialize)]
pub struct Row {
    pub namespace: String,
    pub pod: String,
    /// The leaf's, when its certificate could be read.
    pub spiffe_id: Option<String>,
    pub serial: Option<String>,
    pub not_after: Option<String>,
    pub seconds_left: Option<i64>,
    pub time_left: Option<String>,
    /// Whether the chain verifies against the trust bundle; `None` when
    /// it could not be read.
    pub verified: Option<bool>,
    pub trust_bundle_source: Option<String>,
    pub ok: bool,
    /// Why not ok; empty when ok.
    pub problems: Vec<String>,
}

/// What reading one pod gave.
pub enum Outcome {
    Read {
        report: Report,
        trust_bundle_source: String,
    },
    /// Why its certificate could not be read (not ready, refused, ...).
    Unreadable(String),
}

/// Judges one pod: not ok when its certificate could not be read, does not
/// verify, is outside its validity, or a certificate of its chain has less
/// than `warn` left.
pub fn row(namespace: &str, pod: &str, outcome: Outcome, warn: Duration) -> Row {
    let mut row = Row {
        namespace: namespace.to_string(),
        pod: pod.to_string(),
        spiffe_id: None,
        serial: None,
        not_after: None,
        seconds_left: None,
        time_left: None,
        verified: None,
        trust_bundle_source: None,
        ok: false,
        problems: Vec::new(),
    };
    let (report, source) = match outcome {
        Outcome::Read {
            report,
            trust_bundle_source,
        } => (report, trust_bundle_source),
        Outcome::Unreadable(why) => {
            row.problems.push(why);
            return row;
        }
    };
    row.trust_bundle_source = Some(source);
    if let Some(leaf) = report.chain.first() {
        row.spiffe_id = leaf.spiffe_id.clone();
        row.serial = Some(leaf.serial.clone());
        row.not_after = Some(leaf.not_after.clone());
        row.seconds_left = Some(leaf.seconds_left);
        row.time_left = Some(leaf.time_left.clone());
    }
    let verified = report.verification.status == VerifyStatus::Verified;
    row.verified = Some(verified);
    if !verified {
        row.problems
            .push(format!("not verified: {}", report.verification.reason));
    }
    let warn_secs = i64::try_from(warn.as_secs()).unwrap_or(i64::MAX);
    for cert in &report.chain {
        let what = render::role(cert);
        match cert.validity {
            Validity::Expired | Validity::NotYetValid => {
                row.problems.push(format!("{what} {}", cert.time_left))
            }
            Validity::Valid if cert.seconds_left < warn_secs => row.problems.push(format!(
                "{what} expires in {} (within --warn {})",
                cert.time_left,
                describe::human(warn_secs)
            )),
            Validity::Valid => {}
        }
    }
    row.ok = row.problems.is_empty();
    row
}

/// The `-o json` document.
#[derive(Serialize)]
pub struct Document<'a> {
    pub ok: bool,
    /// The namespace checked; absent with --all-namespaces.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub namespace: Option<&'a str>,
    pub warn_seconds: u64,
    pub pods: &'a [Row],
}

pub const HEADER: [&str; 7] = [
    "NAMESPACE",
    "POD",
    "SPIFFE ID",
    "EXPIRES",
    "TIME LEFT",
    "VERIFIED",
    "PROBLEM",
];

/// The aligned table, then a line counting what passed.
pub fn text(rows: &[Row], scope: &str, warn: Duration, style: Style) -> String {
    if rows.is_empty() {
        return format!("No meshed pod {scope}.\n");
    }
    let warn_secs = i64::try_from(warn.as_secs()).unwrap_or(i64::MAX);
    let dash = || Cell::plain("-");
    let cells: Vec<Vec<Cell>> = rows
        .iter()
        .map(|r| {
            let time = match (r.seconds_left, &r.time_left) {
                (Some(s), Some(t)) if s >= warn_secs => Cell::new(t, Mark::Good),
                (Some(_), Some(t)) => Cell::new(t, Mark::Bad),
                _ => dash(),
            };
            let verified = match r.verified {
                Some(true) => Cell::new("yes", Mark::Good),
                Some(false) => Cell::new("no", Mark::Bad),
                None => dash(),
            };
            vec![
                Cell::plain(&r.namespace),
                Cell::plain(&r.pod),
                r.spiffe_id.as_deref().map_or_else(dash, Cell::plain),
                r.not_after.as_deref().map_or_else(dash, Cell::plain),
                time,
                verified,
                Cell::new(&r.problems.join("; "), Mark::Bad),
            ]
        })
        .collect();
    let mut out = render::table("", &HEADER, &cells, style);
    let good = rows.iter().filter(|r| r.ok).count();
    out.push_str(&format!(
        "\n{} meshed pod(s) {scope}: {good} ok, {} not\n",
        rows.len(),
        rows.len() - good
    ));
    out
}

/// The reason for a non-zero exit, naming each pod and why; `None` when
/// every pod passed.
pub fn failures(rows: &[Row]) -> Option<String> {
    let bad: Vec<String> = rows
        .iter()
        .filter(|r| !r.ok)
        .map(|r| format!("{}/{}: {}", r.namespace, r.pod, r.problems.join("; ")))
        .collect();
    if bad.is_empty() {
        return None;
    }
    Some(format!(
        "{} of {} meshed pod(s) failed: {}",
        bad.len(),
        rows.len(),
        bad.join("; ")
    ))
}

#[cfg(test)]
mod tests;
