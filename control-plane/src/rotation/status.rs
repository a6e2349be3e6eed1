//! What `/ca/status` answers: the phase, the roots with their
//! fingerprints and expiry, and which root each connected proxy's leaf
//! chains to.

use serde::{Deserialize, Serialize};

use crate::ca::authority::fingerprint;
use crate::ca::rotation::store::Persisted;
use crate::ca::rotation::{stuck, Phase, Progress};
use crate::ca::Authority;
use crate::registry::rfc3339;

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct RootInfo {
    pub fingerprint: String,
    pub subject: String,
    /// RFC 3339.
    pub not_after: String,
    /// `current` (new leaves chain to it), `next` (trusted, signing
    /// switches to it) or `previous` (trusted until the rotation ends).
    pub role: String,
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct ProxyRoot {
    pub proxy_id: String,
    pub workload: String,
    pub namespace: String,
    pub spiffe_id: String,
    /// Fingerprint of the root its current leaf chains to (`null` when
    /// unknown: counted as old).
    pub root: Option<String>,
    pub on_current_root: bool,
    /// Whether it ACKed the trust bundle the controller pushes now.
    pub bundle_acked: bool,
}

/// A replica of the controller taking part in a rotation shared through a
/// Kubernetes Secret, as its last report says.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct ReplicaInfo {
    pub id: String,
    pub phase: Phase,
    pub done: bool,
    /// RFC 3339.
    pub reported: String,
    /// What it waits for, when not done.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub waiting: String,
}

/// Where the CA comes from when it is kept in a Kubernetes Secret
/// (`--ca-secret`), and what this controller made of it.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct SecretStatus {
    /// `namespace/name`.
    pub name: String,
    /// This replica's id in the Secret's reports.
    pub replica: String,
    /// When the Secret was last read (RFC 3339).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub read: Option<String>,
    /// Why the CA the Secret holds is refused (the CA in use is kept), or
    /// why it cannot be read.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// The other replicas that reported on the rotation under way.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub replicas: Vec<ReplicaInfo>,
    /// What this replica waits for before its part of the phase is done.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub waiting: String,
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct RotationStatus {
    pub phase: Phase,
    /// RFC 3339.
    pub phase_since: String,
    pub overlap_secs: u64,
    /// When the overlap may end (only in the overlap phase).
    pub overlap_ends: Option<String>,
    /// Why the rotation is stuck, when it is.
    pub stuck: Option<String>,
    pub roots: Vec<RootInfo>,
    pub proxies: Vec<ProxyRoot>,
    pub proxies_on_old_root: usize,
    pub proxies_not_acked: usize,
    /// With `--ca-secret`: the Secret the CA follows.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret: Option<SecretStatus>,
}

pub(crate) fn at(unix: i64) -> String {
    time::OffsetDateTime::from_unix_timestamp(unix)
        .map(rfc3339)
        .unwrap_or_else(|_| unix.to_string())
}

fn root_info(der: &[u8], role: &str) -> RootInfo {
    let (subject, not_after) = match x509_parser::parse_x509_certificate(der) {
        Ok((_, c)) => (
            c.subject().to_string(),
            rfc3339(c.validity().not_after.to_datetime()),
        ),
        Err(_) => (String::from("(unparsable)"), String::new()),
    };
    RootInfo {
        fingerprint: fingerprint(der),
        subject,
        not_after,
        role: role.to_string(),
    }
}

pub(super) fn build(
    authority: &Authority,
    state: &Persisted,
    progress: &Progress,
    proxies: Vec<ProxyRoot>,
) -> RotationStatus {
    let second = match state.phase {
        Phase::Distributing => "next",
        _ => "previous",
    };
    let roots = authority
        .trust_bundle_der()
        .iter()
        .enumerate()
        .map(|(i, der)| root_info(der, if i == 0 { "current" } else { second }))
        .collect();
    RotationStatus {
        phase: state.phase,
        phase_since: at(state.phase_since_unix),
        overlap_secs: state.overlap_secs,
        overlap_ends: (state.phase == Phase::Overlap).then(|| at(progress.overlap_ends_unix())),
        stuck: stuck(state.phase, progress),
        roots,
        proxies_on_old_root: progress.on_old_root,
        proxies_not_acked: progress.not_acked,
        proxies,
        secret: None,
    }
}
