//! A trust-anchor rotation shared by the controller replicas, as the CA
//! Secret holds it (`crate::ca::rotation::shared` decides): the phase
//! record in annotation [`STATE`], one report per replica in annotations
//! starting with [`REPORT_PREFIX`], and the CAs the rotation moves between
//! in data keys starting with `rotation.previous.` (the CA being retired,
//! kept while it still signs) and `rotation.next.` (the CA rotated to,
//! kept until the Secret's own keys are it again). The Secret's own keys
//! are the user's and are never written.
//!
//! Everything is written by JSON merge patch (the `patch` the controller
//! already has on this Secret); a phase change carries the resourceVersion
//! read, so of two replicas deciding at once one wins and the other reads
//! again.

use std::collections::BTreeMap;
use std::path::Path;

use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::ByteString;
use serde_json::{json, Map, Value};

use super::{classify, CaSecretError, SecretCa};
use crate::ca::authority::Labels;
use crate::ca::rotation::shared::{Record, Report};
use crate::ca::CaMaterial;

/// The phase record (JSON of [`Record`]).
pub const STATE: &str = "rotation.mycel.io/state";
/// Followed by a replica's id: its [`Report`] (JSON).
pub const REPORT_PREFIX: &str = "rotation.mycel.io/replica-";

/// Where a kept CA's PEMs are, under a prefix.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kept {
    /// The CA being retired.
    Previous,
    /// The CA rotated to.
    Next,
}

impl Kept {
    fn prefix(self) -> &'static str {
        match self {
            Kept::Previous => "rotation.previous.",
            Kept::Next => "rotation.next.",
        }
    }

    fn key(self, file: &str) -> String {
        format!("{}{file}", self.prefix())
    }

    /// How its PEMs are named in errors.
    pub fn labels(self) -> Labels<'static> {
        match self {
            Kept::Previous => Labels {
                root: Path::new("rotation.previous.root.pem"),
                root_key: Path::new("rotation.previous.root.pem"),
                issuer: Path::new("rotation.previous.issuer.pem"),
                issuer_key: Path::new("rotation.previous.issuer.key"),
            },
            Kept::Next => Labels {
                root: Path::new("rotation.next.root.pem"),
                root_key: Path::new("rotation.next.root.key"),
                issuer: Path::new("rotation.next.issuer.pem"),
                issuer_key: Path::new("rotation.next.issuer.key"),
            },
        }
    }
}

/// The files of a kept CA (and of a CA in a directory): the root key only
/// when there is one.
const FILES: [&str; 4] = ["root.pem", "root.key", "issuer.pem", "issuer.key"];

/// How the PEMs of the Secret's own CA are named in errors.
pub fn own_labels(ca: &SecretCa) -> Labels<'static> {
    match ca {
        SecretCa::Mycel(_) => Labels {
            root: Path::new("root.pem"),
            root_key: Path::new("root.key"),
            issuer: Path::new("issuer.pem"),
            issuer_key: Path::new("issuer.key"),
        },
        SecretCa::Provided(_) => Labels {
            root: Path::new("ca.crt"),
            root_key: Path::new("ca.crt"),
            issuer: Path::new("tls.crt"),
            issuer_key: Path::new("tls.key"),
        },
    }
}

/// The Secret's own CA as PEM text.
pub fn material(ca: &SecretCa) -> CaMaterial {
    match ca {
        SecretCa::Mycel([root_key, issuer_key, root, issuer]) => CaMaterial {
            root_pem: root.clone(),
            root_key_pem: Some(root_key.clone()),
            issuer_pem: issuer.clone(),
            issuer_key_pem: issuer_key.clone(),
        },
        SecretCa::Provided([issuer, issuer_key, root]) => CaMaterial {
            root_pem: root.clone(),
            root_key_pem: None,
            issuer_pem: issuer.clone(),
            issuer_key_pem: issuer_key.clone(),
        },
    }
}

/// What the CA Secret holds.
#[derive(Debug)]
pub struct Held {
    pub resource_version: Option<String>,
    /// The Secret's own CA (the user's keys), or why there is none.
    pub own: Result<SecretCa, CaSecretError>,
    pub record: Option<Record>,
    /// Why the record could not be read (it is then treated as absent).
    pub record_error: Option<String>,
    pub previous: Option<CaMaterial>,
    pub next: Option<CaMaterial>,
    /// Every replica's report, by id.
    pub reports: Vec<(String, Report)>,
}

fn text(data: &BTreeMap<String, ByteString>, key: &str) -> Option<String> {
    data.get(key)
        .and_then(|v| String::from_utf8(v.0.clone()).ok())
        .filter(|s| !s.trim().is_empty())
}

fn kept(data: &BTreeMap<String, ByteString>, which: Kept) -> Option<CaMaterial> {
    let root_pem = text(data, &which.key(FILES[0]))?;
    // The retired CA is kept with its issuer only while it signs; after
    // that its root alone is recorded.
    Some(CaMaterial {
        root_pem,
        root_key_pem: text(data, &which.key(FILES[1])),
        issuer_pem: text(data, &which.key(FILES[2])).unwrap_or_default(),
        issuer_key_pem: text(data, &which.key(FILES[3])).unwrap_or_default(),
    })
}

/// Reads what `found` holds; `secret` names it in errors.
pub fn read(secret: &str, found: &Secret) -> Held {
    let data = found.data.clone().unwrap_or_default();
    let annotations = found.metadata.annotations.clone().unwrap_or_default();
    let (record, record_error) = match annotations.get(STATE) {
        None => (None, None),
        Some(json) => match serde_json::from_str::<Record>(json) {
            Ok(r) => (Some(r), None),
            Err(e) => (
                None,
                Some(format!("annotation {STATE} is not a rotation record: {e}")),
            ),
        },
    };
    let reports = annotations
        .iter()
        .filter_map(|(k, v)| {
            let id = k.strip_prefix(REPORT_PREFIX)?;
            let report = serde_json::from_str::<Report>(v).ok()?;
            Some((id.to_string(), report))
        })
        .collect();
    Held {
        resource_version: found.metadata.resource_version.clone(),
        own: classify(secret, &data),
        record,
        record_error,
        previous: kept(&data, Kept::Previous),
        next: kept(&data, Kept::Next),
        reports,
    }
}

/// A kept CA's change.
#[derive(Clone, Copy, Debug)]
pub enum Change<'a> {
    Keep,
    Set(&'a CaMaterial),
    Remove,
}

/// One write to the Secret.
#[derive(Debug)]
pub struct Write<'a> {
    /// Written only if the Secret is still at this version.
    pub resource_version: Option<&'a str>,
    pub record: Option<&'a Record>,
    pub previous: Change<'a>,
    pub next: Change<'a>,
    /// Reports set (`Some`) or removed (`None`), by replica id.
    pub reports: Vec<(String, Option<Report>)>,
}

impl Write<'_> {
    pub fn reports_only(reports: Vec<(String, Option<Report>)>) -> Self {
        Write {
            resource_version: None,
            record: None,
            previous: Change::Keep,
            next: Change::Keep,
            reports,
        }
    }
}

fn data_change(data: &mut Map<String, Value>, which: Kept, change: Change<'_>) {
    let b64 =
        |s: &str| serde_json::to_value(ByteString(s.as_bytes().to_vec())).unwrap_or(Value::Null);
    match change {
        Change::Keep => {}
        Change::Remove => {
            for file in FILES {
                data.insert(which.key(file), Value::Null);
            }
        }
        Change::Set(ca) => {
            let root_key = match (&ca.root_key_pem, which) {
                // The retired CA signs leaves only; its root key is not kept.
                (Some(key), Kept::Next) => b64(key),
                _ => Value::Null,
            };
            data.insert(which.key(FILES[0]), b64(&ca.root_pem));
            data.insert(which.key(FILES[1]), root_key);
            data.insert(which.key(FILES[2]), b64(&ca.issuer_pem));
            data.insert(which.key(FILES[3]), b64(&ca.issuer_key_pem));
        }
    }
}

/// The JSON merge patch for `write`.
pub fn patch(write: &Write<'_>) -> Value {
    let mut annotations = Map::new();
    if let Some(record) = write.record {
        let json = serde_json::to_string(record).unwrap_or_default();
        annotations.insert(STATE.into(), Value::String(json));
    }
    for (id, report) in &write.reports {
        let value = match report {
            Some(r) => Value::String(serde_json::to_string(r).unwrap_or_default()),
            None => Value::Null,
        };
        annotations.insert(format!("{REPORT_PREFIX}{id}"), value);
    }
    let mut data = Map::new();
    data_change(&mut data, Kept::Previous, write.previous);
    data_change(&mut data, Kept::Next, write.next);
    let mut metadata = Map::new();
    if let Some(rv) = write.resource_version {
        metadata.insert("resourceVersion".into(), json!(rv));
    }
    if !annotations.is_empty() {
        metadata.insert("annotations".into(), Value::Object(annotations));
    }
    let mut out = Map::new();
    out.insert("metadata".into(), Value::Object(metadata));
    if !data.is_empty() {
        out.insert("data".into(), Value::Object(data));
    }
    Value::Object(out)
}

/// A CA kept in `dir` (files [`FILES`], or cert-manager's names in the
/// `ca-provided` layout), if there is one.
pub fn ca_in_dir(dir: &Path, provided: bool) -> Option<CaMaterial> {
    let read = |name: &str| std::fs::read_to_string(dir.join(name)).ok();
    if provided {
        return Some(CaMaterial {
            root_pem: read("ca.crt")?,
            root_key_pem: None,
            issuer_pem: read("tls.crt")?,
            issuer_key_pem: read("tls.key")?,
        });
    }
    Some(CaMaterial {
        root_pem: read(FILES[0])?,
        root_key_pem: read(FILES[1]),
        issuer_pem: read(FILES[2])?,
        issuer_key_pem: read(FILES[3])?,
    })
}

#[cfg(test)]
mod tests;
