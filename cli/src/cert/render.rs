//! A report as text (aligned, marks coloured only on a terminal) or JSON.

use std::fmt::Write as _;

use serde::Serialize;

use super::describe::{CertInfo, Report, Validity, VerifyStatus};
use super::handshake::Handshake;
use crate::meshpod::cluster::PodSource;

/// The `-o json` document: where the chain came from, and its report.
#[derive(Serialize)]
pub struct Document<'a> {
    pub source: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub handshake: Option<&'a Handshake>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pod: Option<&'a PodSource>,
    /// Where the roots came from (a file, a ConfigMap, the proxy itself).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub trust_bundle_source: Option<&'a str>,
    #[serde(flatten)]
    pub report: &'a Report,
}

pub fn json(doc: &Document<'_>) -> serde_json::Result<String> {
    serde_json::to_string_pretty(doc)
}

/// Marks, coloured when writing to a terminal.
#[derive(Clone, Copy)]
pub struct Style {
    pub color: bool,
}

impl Style {
    fn paint(self, code: &str, text: &str) -> String {
        if self.color {
            format!("\x1b[{code}m{text}\x1b[0m")
        } else {
            text.to_string()
        }
    }
    pub fn good(self, text: &str) -> String {
        self.paint("32", text)
    }
    pub fn bad(self, text: &str) -> String {
        self.paint("31", text)
    }
    fn dim(self, text: &str) -> String {
        self.paint("33", text)
    }
}

pub fn text(doc: &Document<'_>, style: Style) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "Source: {}", doc.source);
    if let Some(h) = doc.handshake {
        handshake(&mut out, h, style);
    }
    if let Some(p) = doc.pod {
        let _ = writeln!(
            out,
            "Pod: {}/{} (its proxy's admin port {}, through the API server)",
            p.namespace, p.name, p.admin_port
        );
        if let Some(why) = &p.selected {
            let _ = writeln!(out, "     {why}");
        }
    }
    let report = doc.report;
    let n = report.chain.len();
    for (i, c) in report.chain.iter().enumerate() {
        let _ = writeln!(out, "\nCertificate {} of {n} ({})", i + 1, role(c));
        cert(&mut out, c, style);
    }
    let v = &report.verification;
    let line = match v.status {
        VerifyStatus::Verified => style.good("verified"),
        VerifyStatus::NotVerified => style.bad(&format!("not verified: {}", v.reason)),
        VerifyStatus::Skipped => style.dim(&format!("not checked: {}", v.reason)),
    };
    let _ = writeln!(out, "\nChain: {line}");
    if !report.trust_bundle.is_empty() {
        let n = report.trust_bundle.len();
        let noun = if n == 1 { "root" } else { "roots" };
        let _ = match doc.trust_bundle_source {
            Some(from) => writeln!(out, "\nTrust bundle ({n} {noun}) from {from}:"),
            None => writeln!(out, "\nTrust bundle ({n} {noun}):"),
        };
        roots(&mut out, &report.trust_bundle, style);
    }
    out
}

fn handshake(out: &mut String, h: &Handshake, style: Style) {
    let _ = writeln!(out, "Server name: {}", h.server_name);
    if let Some(p) = &h.protocol {
        let _ = writeln!(out, "Protocol: {p}");
    }
    let outcome = match (&h.error, h.completed) {
        (Some(e), _) => style.dim(e),
        (None, true) if h.client_certificate_requested => {
            style.good("completed (the server asked for a client certificate but accepted none)")
        }
        (None, _) => style.good("completed"),
    };
    let _ = writeln!(out, "Handshake: {outcome}");
}

pub fn role(c: &CertInfo) -> &'static str {
    match c.role {
        super::describe::Role::Leaf => "leaf",
        super::describe::Role::Intermediate => "intermediate CA",
        super::describe::Role::Root => "root CA",
    }
}

fn cert(out: &mut String, c: &CertInfo, style: Style) {
    let time_left = match c.validity {
        Validity::Valid => style.good(&c.time_left),
        Validity::Expired | Validity::NotYetValid => style.bad(&c.time_left),
    };
    // Mesh leaves carry their identity in the SAN only; say so rather than
    // print a blank.
    let subject = if c.subject.is_empty() {
        "(empty)".to_string()
    } else {
        c.subject.clone()
    };
    let mut rows: Vec<(&str, String)> = vec![("Subject", subject)];
    if let Some(id) = &c.spiffe_id {
        rows.push(("SPIFFE ID", id.clone()));
    }
    for (label, list) in [
        ("URIs", &c.uris),
        ("DNS names", &c.dns_names),
        ("IP addresses", &c.ip_addresses),
    ] {
        if !list.is_empty() {
            rows.push((label, list.join(", ")));
        }
    }
    rows.extend([
        ("Serial", c.serial.clone()),
        ("Issuer", c.issuer.clone()),
        ("Not before", c.not_before.clone()),
        ("Not after", c.not_after.clone()),
        ("Time left", time_left),
        ("Key type", c.key_type.clone()),
        ("CA", if c.ca { "yes" } else { "no" }.into()),
        ("SHA-256", c.sha256.clone()),
    ]);
    let width = rows.iter().map(|(l, _)| l.len()).max().unwrap_or(0);
    for (label, value) in rows {
        let _ = writeln!(out, "  {label:<width$}  {value}");
    }
}

/// One aligned row per root: subject, not-after, time left, key type.
fn roots(out: &mut String, roots: &[CertInfo], style: Style) {
    let rows: Vec<Vec<Cell>> = roots
        .iter()
        .map(|r| {
            let time = if r.validity == Validity::Valid {
                Mark::Plain
            } else {
                Mark::Bad
            };
            vec![
                Cell::plain(&r.subject),
                Cell::plain(&r.not_after),
                Cell::new(&r.time_left, time),
                Cell::plain(&r.key_type),
            ]
        })
        .collect();
    out.push_str(&table(
        "  ",
        &["SUBJECT", "NOT AFTER", "TIME LEFT", "KEY"],
        &rows,
        style,
    ));
}

/// How a table cell is painted on a terminal.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mark {
    Plain,
    Good,
    Bad,
}

#[derive(Clone, Debug)]
pub struct Cell {
    pub text: String,
    pub mark: Mark,
}

impl Cell {
    pub fn new(text: &str, mark: Mark) -> Self {
        Self {
            text: text.to_string(),
            mark,
        }
    }
    pub fn plain(text: &str) -> Self {
        Self::new(text, Mark::Plain)
    }
}

/// Rows under a header, each column as wide as its widest cell, every line
/// prefixed with `indent`.
pub fn table(indent: &str, header: &[&str], rows: &[Vec<Cell>], style: Style) -> String {
    let mut widths: Vec<usize> = header.iter().map(|h| h.chars().count()).collect();
    for row in rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.text.chars().count());
        }
    }
    let line = |cells: Vec<(String, Mark)>| {
        let last = cells.len().saturating_sub(1);
        let mut l = indent.to_string();
        for (i, ((text, mark), width)) in cells.into_iter().zip(&widths).enumerate() {
            // Pad before painting: escape codes would count towards the width.
            let padded = if i == last {
                text
            } else {
                format!("{text:<width$}  ")
            };
            let body = padded.trim_end();
            let pad = &padded[body.len()..];
            let painted = match mark {
                // An empty cell unpainted, so a line's end trims the same.
                _ if body.is_empty() => String::new(),
                Mark::Plain => body.to_string(),
                Mark::Good => style.good(body),
                Mark::Bad => style.bad(body),
            };
            l.push_str(&painted);
            l.push_str(pad);
        }
        l.trim_end().to_string() + "\n"
    };
    let mut out = line(
        header
            .iter()
            .map(|h| (h.to_string(), Mark::Plain))
            .collect(),
    );
    for row in rows {
        out.push_str(&line(
            row.iter().map(|c| (c.text.clone(), c.mark)).collect(),
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::super::describe::{Role, Verification};
    use super::*;

    fn info(subject: &str, validity: Validity, time_left: &str) -> CertInfo {
        CertInfo {
            role: Role::Root,
            subject: subject.into(),
            issuer: subject.into(),
            spiffe_id: None,
            uris: vec![],
            dns_names: vec![],
            ip_addresses: vec![],
            serial: "01".into(),
            not_before: "2026-01-01T00:00:00Z".into(),
            not_after: "2027-01-01T00:00:00Z".into(),
            seconds_left: 1,
            time_left: time_left.into(),
            validity,
            key_type: "ECDSA P-256".into(),
            ca: true,
            sha256: "00".into(),
        }
    }

    fn report() -> Report {
        Report {
            ok: false,
            chain: vec![info("CN=leaf", Validity::Expired, "expired 1h ago")],
            verification: Verification {
                status: VerifyStatus::NotVerified,
                reason: "unknown issuer".into(),
            },
            trust_bundle: vec![
                info("CN=a", Validity::Valid, "30d"),
                info(
                    "CN=a much longer root name",
                    Validity::Expired,
                    "expired 2d ago",
                ),
            ],
        }
    }

    #[test]
    fn colour_only_when_asked_and_columns_stay_aligned() {
        let r = report();
        let doc = Document {
            source: "x.pem",
            handshake: None,
            pod: None,
            trust_bundle_source: None,
            report: &r,
        };
        let plain = text(&doc, Style { color: false });
        assert!(!plain.contains('\x1b'), "{plain}");
        assert!(
            plain.contains("Chain: not verified: unknown issuer"),
            "{plain}"
        );
        assert!(plain.contains("Trust bundle (2 roots):"), "{plain}");
        // Every row of the roots table has its KEY column at the same place,
        // with and without colour codes.
        let coloured = text(&doc, Style { color: true });
        assert!(coloured.contains("\x1b[31m"), "{coloured}");
        for out in [&plain, &coloured] {
            let stripped = out
                .replace("\x1b[31m", "")
                .replace("\x1b[32m", "")
                .replace("\x1b[0m", "");
            let cols: Vec<usize> = stripped
                .lines()
                .skip_while(|l| !l.starts_with("Trust bundle"))
                .skip(1)
                .filter_map(|l| l.find("KEY").or_else(|| l.find("ECDSA")))
                .collect();
            assert_eq!(cols.len(), 3, "{stripped}");
            assert!(cols.iter().all(|c| *c == cols[0]), "{stripped}");
        }
    }

    #[test]
    fn json_field_names() {
        let r = report();
        let doc = Document {
            source: "x.pem",
            handshake: None,
            pod: None,
            trust_bundle_source: None,
            report: &r,
        };
        let v: serde_json::Value = serde_json::from_str(&json(&doc).unwrap()).unwrap();
        assert_eq!(v["source"], "x.pem");
        assert_eq!(v["ok"], false);
        assert_eq!(v["verification"]["status"], "not_verified");
        assert_eq!(v["chain"][0]["validity"], "expired");
        assert_eq!(v["trust_bundle"][1]["role"], "root");
        assert!(v.get("handshake").is_none());
    }
}
