//! The certificates of a Gateway's HTTPS listeners: the `kubernetes.io/tls`
//! Secrets their `tls.certificateRefs` name, checked here so that one bad
//! Secret is refused alone (named in the listener's status) instead of
//! being sent to the gateway proxies, which would refuse the whole set.
//! Pure: the Secrets are looked up through the caller.

use std::collections::BTreeMap;
use std::fmt;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::sign::CertifiedKey;
use serde::{Serialize, Serializer};
use sha2::{Digest, Sha256};

use super::{CertificateRef, Gateway};

/// Largest `tls.crt` served: a chain of a few certificates is a few KiB,
/// and every byte goes to each of the Gateway's proxies.
pub const MAX_CHAIN_PEM: usize = 64 << 10;
/// Largest `tls.key` (an RSA-8192 key is under 7 KiB in PEM).
pub const MAX_KEY_PEM: usize = 16 << 10;
/// Most certificate bytes one Gateway sends its proxies, well under a
/// discovery message's limit: past it a Secret is refused rather than
/// making the message (and the Gateway's routes with it) undeliverable.
pub const MAX_GATEWAY_PEM: usize = 1 << 20;

/// The annotation of a Gateway naming the service account whose proxies
/// may hold its listeners' private keys (default: the Gateway's name).
pub const SERVICE_ACCOUNT_ANNOTATION: &str = "mycel.io/gateway-service-account";

/// A `kubernetes.io/tls` Secret as read: its `tls.crt` and `tls.key`.
#[derive(Clone, PartialEq, Eq)]
pub struct TlsSecret {
    pub chain_pem: Vec<u8>,
    pub key_pem: KeyPem,
}

/// A private key in PEM. Never printed or serialized as it is: debug
/// output says only its length, and serialization (content versions,
/// debug dumps) only a SHA-256 of it, so a key changes the version without
/// ever leaving the process except to the proxy that serves it.
#[derive(Clone, PartialEq, Eq)]
pub struct KeyPem(pub Vec<u8>);

impl fmt::Debug for KeyPem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "KeyPem({} bytes)", self.0.len())
    }
}

impl fmt::Debug for TlsSecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TlsSecret")
            .field("chain_pem", &format_args!("{} bytes", self.chain_pem.len()))
            .field("key_pem", &self.key_pem)
            .finish()
    }
}

impl TlsSecret {
    /// The certificate of a Secret of type `kubernetes.io/tls` (`tls.crt`
    /// and `tls.key` from `data`, or from `stringData` as a manifest may
    /// write them); `None` for a Secret of another type.
    pub fn from_secret(
        secret: &k8s_openapi::api::core::v1::Secret,
    ) -> Result<Option<TlsSecret>, String> {
        if secret.type_.as_deref() != Some(TLS_SECRET_TYPE) {
            return Ok(None);
        }
        let field = |name: &str| -> Result<Vec<u8>, String> {
            if let Some(v) = secret.data.as_ref().and_then(|d| d.get(name)) {
                return Ok(v.0.clone());
            }
            if let Some(v) = secret.string_data.as_ref().and_then(|d| d.get(name)) {
                return Ok(v.clone().into_bytes());
            }
            Err(format!(
                "a {TLS_SECRET_TYPE} Secret needs {name} in data or stringData"
            ))
        };
        Ok(Some(TlsSecret {
            chain_pem: field("tls.crt")?,
            key_pem: KeyPem(field("tls.key")?),
        }))
    }
}

/// The Secret type that holds a certificate and its key.
pub const TLS_SECRET_TYPE: &str = "kubernetes.io/tls";

impl Serialize for KeyPem {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&format!("sha256:{}", hex::encode(Sha256::digest(&self.0))))
    }
}

/// One certificate a Gateway's proxies serve.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct GatewayCertificate {
    /// `<namespace>/<name>` of the Secret.
    pub source: String,
    pub chain_pem: Vec<u8>,
    pub key_pem: KeyPem,
}

/// What a Gateway's proxies get: its certificates, and who may hold them.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct GatewayCertificates {
    /// Service account (of the Gateway's namespace) of the proxies allowed
    /// to hold the keys.
    pub service_account: String,
    /// In listener order, each Secret once.
    pub certificates: Vec<GatewayCertificate>,
}

/// How one HTTPS listener's references resolved: the Secrets that could
/// not be used, with why (empty: all resolved).
pub type Unresolved = Vec<(CertificateRef, String)>;

/// Resolves every served HTTPS listener's Secrets through `lookup` (None:
/// no such TLS Secret; `Err`: one that cannot be read as one). Returns
/// the certificates to send and, per listener position, the references
/// that did not resolve.
pub fn resolve<'a>(
    gw: &Gateway,
    service_account: &str,
    lookup: impl Fn(&CertificateRef) -> Option<Result<&'a TlsSecret, String>>,
) -> (GatewayCertificates, BTreeMap<usize, Unresolved>) {
    let mut out = GatewayCertificates {
        service_account: service_account.to_string(),
        certificates: Vec::new(),
    };
    let mut unresolved: BTreeMap<usize, Unresolved> = BTreeMap::new();
    let mut total = 0usize;
    for (i, l) in gw.listeners.iter().enumerate() {
        if !l.https || !l.served() {
            continue;
        }
        for r in &l.certificates {
            let source = r.to_string();
            let checked = match lookup(r) {
                None => Err(format!(
                    "Secret {source} does not exist (or is not of type {TLS_SECRET_TYPE})"
                )),
                Some(Err(e)) => Err(format!("Secret {source}: {e}")),
                Some(Ok(secret)) => check(secret)
                    .map(|()| secret)
                    .map_err(|e| format!("Secret {source}: {e}")),
            };
            let size = checked
                .as_ref()
                .map_or(0, |s| s.chain_pem.len() + s.key_pem.0.len());
            let checked = checked.and_then(|secret| {
                let new = out.certificates.iter().all(|c| c.source != source);
                if new && total + size > MAX_GATEWAY_PEM {
                    return Err(format!(
                        "Secret {source}: the Gateway's certificates would pass {MAX_GATEWAY_PEM} bytes"
                    ));
                }
                Ok(secret)
            });
            match checked {
                Ok(secret) => {
                    if out.certificates.iter().all(|c| c.source != source) {
                        total += size;
                        out.certificates.push(GatewayCertificate {
                            source,
                            chain_pem: secret.chain_pem.clone(),
                            key_pem: secret.key_pem.clone(),
                        });
                    }
                }
                Err(why) => unresolved.entry(i).or_default().push((r.clone(), why)),
            }
        }
    }
    (out, unresolved)
}

/// Why a Secret's certificate cannot be served: what a gateway proxy
/// would refuse, said once here.
fn check(secret: &TlsSecret) -> Result<(), String> {
    if secret.chain_pem.len() > MAX_CHAIN_PEM {
        return Err(format!(
            "tls.crt is {} bytes, more than {MAX_CHAIN_PEM}",
            secret.chain_pem.len()
        ));
    }
    if secret.key_pem.0.len() > MAX_KEY_PEM {
        return Err(format!(
            "tls.key is {} bytes, more than {MAX_KEY_PEM}",
            secret.key_pem.0.len()
        ));
    }
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(&secret.chain_pem)
        .collect::<Result<_, _>>()
        .map_err(|e| format!("tls.crt is not PEM certificates: {e}"))?;
    let Some(leaf) = chain.first() else {
        return Err("tls.crt holds no certificate".into());
    };
    let key = PrivateKeyDer::from_pem_slice(&secret.key_pem.0).map_err(|e| {
        format!("tls.key holds no private key (PKCS#8, PKCS#1 RSA or SEC1 EC): {e}")
    })?;
    let (_, cert) = x509_parser::parse_x509_certificate(leaf)
        .map_err(|e| format!("tls.crt's first certificate does not parse: {e}"))?;
    let has_dns = cert
        .subject_alternative_name()
        .ok()
        .flatten()
        .is_some_and(|san| {
            san.value
                .general_names
                .iter()
                .any(|n| matches!(n, x509_parser::extensions::GeneralName::DNSName(_)))
        });
    if !has_dns {
        return Err("tls.crt's first certificate names no DNS host (subjectAltName)".into());
    }
    let signer = rustls::crypto::ring::sign::any_supported_type(&key)
        .map_err(|e| format!("tls.key is not a key type the gateway serves: {e}"))?;
    CertifiedKey::new(chain, signer)
        .keys_match()
        .map_err(|_| "tls.key does not belong to tls.crt's first certificate".to_string())
}

#[cfg(test)]
mod tests {
    use mycel_crds::gateway_api::gateways::GatewaySpec;
    use serde_json::json;

    use super::*;

    fn secret(hosts: &[&str]) -> TlsSecret {
        let key = rcgen::KeyPair::generate().unwrap();
        let names: Vec<String> = hosts.iter().map(|h| h.to_string()).collect();
        let cert = rcgen::CertificateParams::new(names)
            .unwrap()
            .self_signed(&key)
            .unwrap();
        TlsSecret {
            chain_pem: cert.pem().into_bytes(),
            key_pem: KeyPem(key.serialize_pem().into_bytes()),
        }
    }

    fn gateway() -> Gateway {
        let spec: GatewaySpec = serde_json::from_value(json!({
            "gatewayClassName": "mycel",
            "listeners": [
                {"name": "web", "port": 80, "protocol": "HTTP"},
                {"name": "api", "port": 443, "protocol": "HTTPS", "hostname": "api.shop.example",
                 "tls": {"certificateRefs": [{"name": "api"}, {"name": "missing"}]}},
                {"name": "www", "port": 443, "protocol": "HTTPS", "hostname": "www.shop.example",
                 "tls": {"certificateRefs": [{"name": "www"}, {"name": "api"}, {"name": "mismatched"}, {"name": "garbage"}]}},
            ],
        }))
        .unwrap();
        super::super::gateway("shop", "web", &spec).unwrap()
    }

    #[test]
    fn good_secrets_are_sent_once_and_bad_ones_named_on_their_listener() {
        let api = secret(&["api.shop.example"]);
        let www = secret(&["www.shop.example", "*.www.shop.example"]);
        let mut mismatched = secret(&["x.shop.example"]);
        mismatched.key_pem = secret(&["x.shop.example"]).key_pem;
        let garbage = TlsSecret {
            chain_pem: b"not pem".to_vec(),
            key_pem: KeyPem(b"nor this".to_vec()),
        };
        let secrets: BTreeMap<&str, &TlsSecret> = [
            ("api", &api),
            ("www", &www),
            ("mismatched", &mismatched),
            ("garbage", &garbage),
        ]
        .into();
        let (certs, unresolved) = resolve(&gateway(), "gateway", |r| {
            assert_eq!(r.namespace, "shop");
            secrets.get(r.name.as_str()).copied().map(Ok)
        });
        assert_eq!(certs.service_account, "gateway");
        let sources: Vec<&str> = certs
            .certificates
            .iter()
            .map(|c| c.source.as_str())
            .collect();
        assert_eq!(
            sources,
            ["shop/api", "shop/www"],
            "listener order, each once"
        );
        assert_eq!(certs.certificates[0].chain_pem, api.chain_pem);

        let why = |i: usize| -> Vec<String> {
            unresolved[&i]
                .iter()
                .map(|(r, why)| format!("{r}: {why}"))
                .collect()
        };
        assert!(!unresolved.contains_key(&0), "HTTP listener");
        assert_eq!(why(1).len(), 1);
        assert!(
            why(1)[0].contains("shop/missing does not exist"),
            "{:?}",
            why(1)
        );
        let www_errors = why(2);
        assert_eq!(www_errors.len(), 2, "{www_errors:?}");
        assert!(
            www_errors[0].contains("does not belong to tls.crt"),
            "{www_errors:?}"
        );
        assert!(
            www_errors[1].contains("no certificate") || www_errors[1].contains("not PEM"),
            "{www_errors:?}"
        );
    }

    #[test]
    fn a_certificate_without_a_dns_name_is_refused() {
        let mut s = secret(&["127.0.0.1"]);
        // rcgen turns an IP string into an IP SAN: no DNS name.
        assert!(check(&s).unwrap_err().contains("names no DNS host"));
        s = secret(&["ok.example"]);
        assert_eq!(check(&s), Ok(()));
    }

    #[test]
    fn a_key_is_never_printed_or_serialized() {
        let s = secret(&["api.shop.example"]);
        let key_text = String::from_utf8(s.key_pem.0.clone()).unwrap();
        let body = key_text
            .lines()
            .nth(1)
            .expect("a PEM body line")
            .to_string();
        let debug = format!("{s:?}");
        assert!(!debug.contains(&body), "{debug}");
        let cert = GatewayCertificate {
            source: "shop/api".into(),
            chain_pem: s.chain_pem.clone(),
            key_pem: s.key_pem.clone(),
        };
        let json = serde_json::to_string(&cert).unwrap();
        assert!(!json.contains(&body), "{json}");
        assert!(json.contains("sha256:"), "{json}");
        let other = secret(&["api.shop.example"]);
        let json2 = serde_json::to_string(&GatewayCertificate {
            key_pem: other.key_pem,
            ..cert
        })
        .unwrap();
        assert_ne!(json, json2, "another key, another version");
    }

    #[test]
    fn oversized_secrets_are_refused_and_never_sent() {
        let mut padded = secret(&["api.shop.example"]);
        padded
            .chain_pem
            .extend(std::iter::repeat_n(b'\n', MAX_CHAIN_PEM));
        assert!(check(&padded).unwrap_err().contains("tls.crt is"));
        let mut big_key = secret(&["api.shop.example"]);
        big_key
            .key_pem
            .0
            .extend(std::iter::repeat_n(b'\n', MAX_KEY_PEM));
        assert!(check(&big_key).unwrap_err().contains("tls.key is"));

        // Many good Secrets of just under the cap each: the Gateway's total
        // stops at MAX_GATEWAY_PEM, the rest named on their listener.
        let names: Vec<String> = (0..40).map(|i| format!("s{i}")).collect();
        let refs: Vec<serde_json::Value> = names.iter().map(|n| json!({"name": n})).collect();
        let spec: GatewaySpec = serde_json::from_value(json!({
            "gatewayClassName": "mycel",
            "listeners": [{"name": "api", "port": 443, "protocol": "HTTPS",
                           "tls": {"certificateRefs": refs}}],
        }))
        .unwrap();
        let gw = super::super::gateway("shop", "web", &spec).unwrap();
        let mut fat = secret(&["api.shop.example"]);
        let room = MAX_CHAIN_PEM - fat.chain_pem.len() - 1;
        fat.chain_pem.extend(std::iter::repeat_n(b'\n', room));
        let (certs, unresolved) = resolve(&gw, "web", |_| Some(Ok(&fat)));
        let sent: usize = certs
            .certificates
            .iter()
            .map(|c| c.chain_pem.len() + c.key_pem.0.len())
            .sum();
        assert!(sent <= MAX_GATEWAY_PEM, "{sent}");
        assert!(
            certs.certificates.len() >= 10,
            "{}",
            certs.certificates.len()
        );
        let refused = &unresolved[&0];
        assert_eq!(certs.certificates.len() + refused.len(), 40);
        assert!(refused[0].1.contains("would pass"), "{:?}", refused[0]);
    }
}
