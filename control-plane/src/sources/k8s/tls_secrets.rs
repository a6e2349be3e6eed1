//! The `kubernetes.io/tls` Secrets of the cluster, as HTTPS listeners'
//! `certificateRefs` read them. The watch selects on the type, so no other
//! Secret reaches the controller's memory. Pure and synchronous.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::Secret;

use super::cluster::{obj_key, ObjKey};
use crate::routes::gateway::certificates::TlsSecret;
use crate::routes::gateway::CertificateRef;

#[derive(Debug, Default)]
pub struct TlsSecrets {
    /// Err: a TLS Secret without its keys, and why.
    by_key: BTreeMap<ObjKey, Result<TlsSecret, String>>,
}

impl TlsSecrets {
    /// Adds or replaces a Secret; its key, and whether what it holds
    /// changed. A Secret of another type (the selector should keep them
    /// out) is dropped.
    pub fn apply(&mut self, secret: &Secret) -> (Option<ObjKey>, bool) {
        let Some(key) = obj_key(&secret.metadata) else {
            return (None, false);
        };
        let changed = match TlsSecret::from_secret(secret).transpose() {
            Some(read) => self.by_key.insert(key.clone(), read.clone()) != Some(read),
            None => self.by_key.remove(&key).is_some(),
        };
        (Some(key), changed)
    }

    /// Whether a Secret was there.
    pub fn delete(&mut self, key: &ObjKey) -> bool {
        self.by_key.remove(key).is_some()
    }

    pub fn keys(&self) -> Vec<ObjKey> {
        self.by_key.keys().cloned().collect()
    }

    /// What a listener's reference finds: None when there is no such TLS
    /// Secret.
    pub fn get(&self, r: &CertificateRef) -> Option<Result<&TlsSecret, String>> {
        self.by_key
            .get(&(r.namespace.clone(), r.name.clone()))
            .map(|s| s.as_ref().map_err(Clone::clone))
    }
}

#[cfg(test)]
mod tests {
    use k8s_openapi::ByteString;
    use serde_json::json;

    use super::*;

    fn secret(name: &str, type_: &str, data: serde_json::Value) -> Secret {
        serde_json::from_value(json!({
            "apiVersion": "v1", "kind": "Secret",
            "metadata": {"name": name, "namespace": "shop"},
            "type": type_,
            "data": data,
        }))
        .unwrap()
    }

    fn reference(name: &str) -> CertificateRef {
        CertificateRef {
            namespace: "shop".into(),
            name: name.into(),
        }
    }

    #[test]
    fn tls_secrets_are_kept_changes_told_and_broken_ones_explained() {
        let mut s = TlsSecrets::default();
        let b64 = |t: &str| serde_json::to_value(ByteString(t.as_bytes().to_vec())).unwrap();
        let good = secret(
            "api",
            "kubernetes.io/tls",
            json!({"tls.crt": b64("C"), "tls.key": b64("K")}),
        );
        assert_eq!(s.apply(&good), (Some(("shop".into(), "api".into())), true));
        assert!(!s.apply(&good).1, "the same again is no change");
        let got = s.get(&reference("api")).unwrap().unwrap();
        assert_eq!(
            (got.chain_pem.as_slice(), got.key_pem.0.as_slice()),
            (&b"C"[..], &b"K"[..])
        );

        let broken = secret("api", "kubernetes.io/tls", json!({"tls.crt": b64("C")}));
        assert!(s.apply(&broken).1);
        assert!(s
            .get(&reference("api"))
            .unwrap()
            .unwrap_err()
            .contains("tls.key"));

        // Retyped: gone, as if deleted.
        assert!(s.apply(&secret("api", "Opaque", json!({}))).1);
        assert!(s.get(&reference("api")).is_none());
        assert!(s.apply(&good).1);
        assert!(s.delete(&("shop".into(), "api".into())));
        assert!(s.keys().is_empty());
    }
}
