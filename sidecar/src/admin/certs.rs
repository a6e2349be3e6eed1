//! `/certs`: the certificate this proxy holds, its issuers and the trust
//! bundle, as JSON. The chain and the roots are also there as PEM (public
//! certificates, never the key), so a client such as `mycelctl cert inspect`
//! can verify them itself rather than trust this summary.

use std::time::{Duration, UNIX_EPOCH};

use serde_json::{json, Value};
use sha2::{Digest, Sha256};

use crate::identity::cert::summary;
use crate::identity::IdentityState;

fn pem_of<'a>(ders: impl IntoIterator<Item = &'a [u8]>) -> String {
    let blocks: Vec<pem::Pem> = ders
        .into_iter()
        .map(|der| pem::Pem::new("CERTIFICATE", der.to_vec()))
        .collect();
    pem::encode_many(&blocks)
}

fn rfc3339(unix: i64) -> String {
    let t = match u64::try_from(unix) {
        Ok(secs) => UNIX_EPOCH + Duration::from_secs(secs),
        Err(_) => UNIX_EPOCH,
    };
    humantime::format_rfc3339_seconds(t).to_string()
}

/// `None` while no certificate is held.
pub fn certs_json(identity: &IdentityState) -> Option<Value> {
    let cert = identity.cert()?;
    let issuers: Vec<Value> = cert
        .chain
        .iter()
        .skip(1)
        .enumerate()
        .map(
            |(i, der)| match summary(&format!("chain[{}]", i + 1), der) {
                Ok(s) => json!({
                    "subject": s.subject,
                    "serial": s.serial_hex,
                    "not_after": rfc3339(s.not_after_unix),
                    "not_after_unix": s.not_after_unix,
                }),
                Err(e) => json!({"error": e.to_string()}),
            },
        )
        .collect();
    let bundle: Vec<Value> = identity
        .bundle()
        .roots
        .iter()
        .enumerate()
        .map(|(i, der)| {
            let subject = summary(&format!("root {i}"), der)
                .map(|s| s.subject)
                .unwrap_or_else(|e| e.to_string());
            json!({"subject": subject, "sha256": hex::encode(Sha256::digest(der))})
        })
        .collect();
    Some(json!({
        "spiffe_id": cert.spiffe_id.to_string(),
        "serial": cert.serial_hex,
        "not_before": rfc3339(cert.not_before_unix),
        "not_after": rfc3339(cert.not_after_unix),
        "not_before_unix": cert.not_before_unix,
        "not_after_unix": cert.not_after_unix,
        "issuer_chain": issuers,
        "trust_bundle": bundle,
        "chain_pem": pem_of(cert.chain.iter().map(|c| c.as_ref())),
        "trust_bundle_pem": pem_of(identity.bundle().roots.iter().map(|c| c.as_ref())),
    }))
}
