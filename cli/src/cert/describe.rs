//! What a certificate chain is and whether it verifies: a pure function from
//! DER certificates, trust-bundle roots and the time to a [`Report`]. Every
//! source (a PEM file, a live handshake, later a pod's proxy through the API
//! server) feeds this one core, so all forms of `cert inspect` say the same
//! thing the same way. Verification is webpki's, as in the proxy
//! (`sidecar/src/core/tls/verify.rs`), so "verified" here means what the
//! mesh would accept as a chain.

use std::net::IpAddr;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rustls_pki_types::{CertificateDer, UnixTime};
use serde::Serialize;
use sha2::{Digest, Sha256};
use x509_parser::extensions::GeneralName;
use x509_parser::oid_registry::{
    OID_EC_P256, OID_KEY_TYPE_EC_PUBLIC_KEY, OID_NIST_EC_P384, OID_NIST_EC_P521,
    OID_PKCS1_RSAENCRYPTION, OID_SIG_ED25519, OID_SIG_ED448,
};
use x509_parser::prelude::{FromDer, X509Certificate};
use x509_parser::public_key::PublicKey;

#[derive(Debug, thiserror::Error)]
pub enum DescribeError {
    #[error("no certificate to describe")]
    Empty,
    #[error("certificate {index} of the chain is not a valid X.509 certificate: {reason}")]
    Chain { index: usize, reason: String },
    #[error("root {index} of the trust bundle is not a valid X.509 certificate: {reason}")]
    Root { index: usize, reason: String },
}

/// Which use the chain is checked for. A peer's server certificate must be
/// good for server authentication; a file may hold either kind.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Usage {
    Server,
    /// Server authentication, else client authentication (mesh certificates
    /// carry both; a client-only certificate is still a good chain).
    Any,
}

/// Everything `cert inspect` says about one chain. Field names are the
/// stable `-o json` contract.
#[derive(Clone, Debug, Serialize)]
pub struct Report {
    /// False when the chain failed verification against a given trust
    /// bundle or a certificate of it is outside its validity period; the exit
    /// status follows it.
    pub ok: bool,
    pub chain: Vec<CertInfo>,
    pub verification: Verification,
    /// The trust bundle's roots (empty without one).
    pub trust_bundle: Vec<CertInfo>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Verification {
    pub status: VerifyStatus,
    /// Why it did not verify, or why it was not checked; empty when verified.
    pub reason: String,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum VerifyStatus {
    Verified,
    NotVerified,
    /// No trust bundle was given, so nothing was checked.
    Skipped,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Validity {
    Valid,
    Expired,
    NotYetValid,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    Leaf,
    Intermediate,
    Root,
}

/// One certificate, as a person reads it.
#[derive(Clone, Debug, Serialize)]
pub struct CertInfo {
    pub role: Role,
    pub subject: String,
    pub issuer: String,
    /// The first `spiffe://` URI SAN: the workload identity in the mesh.
    pub spiffe_id: Option<String>,
    /// Other URI SANs.
    pub uris: Vec<String>,
    pub dns_names: Vec<String>,
    pub ip_addresses: Vec<String>,
    /// Lowercase hex, as it is encoded (leading zero byte included).
    pub serial: String,
    /// RFC 3339, UTC.
    pub not_before: String,
    pub not_after: String,
    /// Seconds until not-after; negative once expired.
    pub seconds_left: i64,
    /// `23h 59m`, `expired 2d 3h ago` or `not valid for another 5m`.
    pub time_left: String,
    pub validity: Validity,
    /// `ECDSA P-256`, `RSA 2048`, `Ed25519`, ...
    pub key_type: String,
    pub ca: bool,
    pub sha256: String,
}

/// Describes `chain` (leaf first) and verifies it against `roots` when
/// given, at `now`.
pub fn describe(
    chain: &[Vec<u8>],
    roots: Option<&[Vec<u8>]>,
    now: SystemTime,
    usage: Usage,
) -> Result<Report, DescribeError> {
    if chain.is_empty() {
        return Err(DescribeError::Empty);
    }
    let now_unix = unix_seconds(now);
    let infos = chain
        .iter()
        .enumerate()
        .map(|(i, der)| {
            info(der, now_unix).map_err(|reason| DescribeError::Chain {
                index: i + 1,
                reason,
            })
        })
        .collect::<Result<Vec<_>, _>>()?;
    let (verification, trust_bundle) = match roots {
        None => (
            Verification {
                status: VerifyStatus::Skipped,
                reason: "no trust bundle given (--ca-root)".into(),
            },
            Vec::new(),
        ),
        Some(roots) => {
            let infos = roots
                .iter()
                .enumerate()
                .map(|(i, der)| {
                    info(der, now_unix).map_err(|reason| DescribeError::Root {
                        index: i + 1,
                        reason,
                    })
                })
                .collect::<Result<Vec<_>, _>>()?;
            (verify(chain, roots, now, usage), infos)
        }
    };
    let ok = verification.status != VerifyStatus::NotVerified
        && infos.iter().all(|c| c.validity == Validity::Valid);
    Ok(Report {
        ok,
        chain: infos,
        verification,
        trust_bundle,
    })
}

fn verify(chain: &[Vec<u8>], roots: &[Vec<u8>], now: SystemTime, usage: Usage) -> Verification {
    let not_verified = |reason: String| Verification {
        status: VerifyStatus::NotVerified,
        reason,
    };
    if roots.is_empty() {
        return not_verified("the trust bundle holds no certificate".into());
    }
    let roots: Vec<CertificateDer<'_>> =
        roots.iter().map(|r| CertificateDer::from(&r[..])).collect();
    // As in the proxy: a root webpki cannot use is skipped, the others still
    // count.
    let anchors: Vec<_> = roots
        .iter()
        .filter_map(|r| webpki::anchor_from_trusted_cert(r).ok())
        .collect();
    // A root inspected against a bundle that holds it: webpki refuses a CA
    // as an end entity, yet "is this one of my roots?" has a plain answer.
    if chain.len() == 1 && roots.iter().any(|r| r.as_ref() == &chain[0][..]) {
        return Verification {
            status: VerifyStatus::Verified,
            reason: String::new(),
        };
    }
    let leaf = CertificateDer::from(&chain[0][..]);
    let intermediates: Vec<CertificateDer<'_>> = chain[1..]
        .iter()
        .map(|c| CertificateDer::from(&c[..]))
        .collect();
    let end_entity = match webpki::EndEntityCert::try_from(&leaf) {
        Ok(e) => e,
        Err(e) => return not_verified(reason(&e)),
    };
    let time = UnixTime::since_unix_epoch(now.duration_since(UNIX_EPOCH).unwrap_or_default());
    let check = |usage| {
        end_entity
            .verify_for_usage(
                webpki::ALL_VERIFICATION_ALGS,
                &anchors,
                &intermediates,
                time,
                usage,
                None,
                None,
            )
            .map(|_| ())
    };
    let mut result = check(webpki::KeyUsage::server_auth());
    if usage == Usage::Any && matches!(result, Err(ref e) if eku_missing(e)) {
        result = check(webpki::KeyUsage::client_auth());
    }
    match result {
        Ok(()) => Verification {
            status: VerifyStatus::Verified,
            reason: String::new(),
        },
        Err(e) => not_verified(reason(&e)),
    }
}

fn eku_missing(e: &webpki::Error) -> bool {
    matches!(e, webpki::Error::RequiredEkuNotFoundContext(_))
}

/// webpki's error in words a person acts on.
fn reason(e: &webpki::Error) -> String {
    use webpki::Error as E;
    match e {
        E::UnknownIssuer => {
            "unknown issuer: the chain does not lead to a root of the trust bundle".into()
        }
        E::CertExpired { not_after, .. } => {
            format!(
                "expired: a certificate of the chain ended {}",
                rfc3339_unix(not_after.as_secs() as i64)
            )
        }
        E::CertNotValidYet { not_before, .. } => format!(
            "not yet valid: a certificate of the chain starts {}",
            rfc3339_unix(not_before.as_secs() as i64)
        ),
        E::InvalidSignatureForPublicKey => {
            "bad signature: a certificate was not signed by its issuer's key".into()
        }
        E::CaUsedAsEndEntity => "the first certificate is a CA, not a leaf".into(),
        E::EndEntityUsedAsCa => "a leaf certificate is used as an issuer".into(),
        e if eku_missing(e) => "the leaf is not allowed for this use (extended key usage)".into(),
        E::BadDer | E::BadDerTime => "malformed certificate".into(),
        other => format!("{other:?}"),
    }
}

fn info(der: &[u8], now: i64) -> Result<CertInfo, String> {
    let (rest, cert) = X509Certificate::from_der(der).map_err(|e| e.to_string())?;
    if !rest.is_empty() {
        return Err(format!("{} bytes after the certificate", rest.len()));
    }
    let ca = cert.is_ca();
    let self_signed = cert.subject().as_raw() == cert.issuer().as_raw();
    // Named for what it is, not where it is: a CA first in a file (a root
    // being inspected) is still a root.
    let role = match (ca, self_signed) {
        (false, _) => Role::Leaf,
        (true, true) => Role::Root,
        (true, false) => Role::Intermediate,
    };
    let mut spiffe_id = None;
    let (mut uris, mut dns_names, mut ip_addresses) = (Vec::new(), Vec::new(), Vec::new());
    if let Ok(Some(san)) = cert.subject_alternative_name() {
        for name in &san.value.general_names {
            match name {
                GeneralName::URI(u) if u.starts_with("spiffe://") && spiffe_id.is_none() => {
                    spiffe_id = Some(u.to_string())
                }
                GeneralName::URI(u) => uris.push(u.to_string()),
                GeneralName::DNSName(d) => dns_names.push(d.to_string()),
                GeneralName::IPAddress(b) => ip_addresses.push(ip_text(b)),
                _ => {}
            }
        }
    }
    let not_before = cert.validity().not_before.timestamp();
    let not_after = cert.validity().not_after.timestamp();
    let seconds_left = not_after - now;
    let (validity, time_left) = if now < not_before {
        (
            Validity::NotYetValid,
            format!("not valid for another {}", human(not_before - now)),
        )
    } else if seconds_left < 0 {
        (
            Validity::Expired,
            format!("expired {} ago", human(-seconds_left)),
        )
    } else {
        (Validity::Valid, human(seconds_left))
    };
    Ok(CertInfo {
        role,
        subject: cert.subject().to_string(),
        issuer: cert.issuer().to_string(),
        spiffe_id,
        uris,
        dns_names,
        ip_addresses,
        serial: hex::encode(cert.raw_serial()),
        not_before: rfc3339_unix(not_before),
        not_after: rfc3339_unix(not_after),
        seconds_left,
        time_left,
        validity,
        key_type: key_type(&cert),
        ca,
        sha256: hex::encode(Sha256::digest(der)),
    })
}

fn ip_text(bytes: &[u8]) -> String {
    match bytes.len() {
        4 => <[u8; 4]>::try_from(bytes).map(|b| IpAddr::from(b).to_string()),
        16 => <[u8; 16]>::try_from(bytes).map(|b| IpAddr::from(b).to_string()),
        _ => return hex::encode(bytes),
    }
    .unwrap_or_else(|_| hex::encode(bytes))
}

fn key_type(cert: &X509Certificate<'_>) -> String {
    let spki = cert.public_key();
    let alg = &spki.algorithm.algorithm;
    if *alg == OID_KEY_TYPE_EC_PUBLIC_KEY {
        let curve = spki
            .algorithm
            .parameters
            .as_ref()
            .and_then(|p| p.as_oid().ok());
        return match curve {
            Some(c) if c == OID_EC_P256 => "ECDSA P-256".into(),
            Some(c) if c == OID_NIST_EC_P384 => "ECDSA P-384".into(),
            Some(c) if c == OID_NIST_EC_P521 => "ECDSA P-521".into(),
            Some(c) => format!("ECDSA ({c})"),
            None => "ECDSA".into(),
        };
    }
    if *alg == OID_PKCS1_RSAENCRYPTION {
        return match spki.parsed() {
            Ok(PublicKey::RSA(rsa)) => format!("RSA {}", rsa.key_size()),
            _ => "RSA".into(),
        };
    }
    if *alg == OID_SIG_ED25519 {
        return "Ed25519".into();
    }
    if *alg == OID_SIG_ED448 {
        return "Ed448".into();
    }
    format!("unknown ({alg})")
}

fn unix_seconds(t: SystemTime) -> i64 {
    match t.duration_since(UNIX_EPOCH) {
        Ok(d) => d.as_secs() as i64,
        Err(e) => -(e.duration().as_secs() as i64),
    }
}

/// RFC 3339 in UTC; times before 1970 (no real certificate) fall back to
/// seconds since the epoch.
fn rfc3339_unix(secs: i64) -> String {
    match u64::try_from(secs) {
        Ok(s) => humantime::format_rfc3339_seconds(UNIX_EPOCH + Duration::from_secs(s)).to_string(),
        Err(_) => format!("{secs}s since 1970"),
    }
}

/// A duration in its two largest units (`29d 23h`, `4m 10s`): enough to act
/// on, short enough for a table column.
pub fn human(secs: i64) -> String {
    let secs = secs.max(0);
    let units = [("d", 86_400), ("h", 3_600), ("m", 60), ("s", 1)];
    let mut parts = Vec::new();
    let mut rest = secs;
    for (name, size) in units {
        let n = rest / size;
        if n > 0 || !parts.is_empty() {
            parts.push(format!("{n}{name}"));
            rest -= n * size;
        }
        if parts.len() == 2 {
            break;
        }
    }
    // Drop a zero second unit: "2h" rather than "2h 0m".
    if parts.len() == 2 && parts[1].starts_with('0') {
        parts.pop();
    }
    if parts.is_empty() {
        "0s".into()
    } else {
        parts.join(" ")
    }
}

#[cfg(test)]
mod tests;
