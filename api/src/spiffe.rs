//! SPIFFE identities as Mycel uses them: `spiffe://<trust-domain>/ns/<ns>/sa/<sa>`.

use std::fmt;
use std::str::FromStr;
use std::sync::Arc;

use crate::names::{self, NameError, NameKind};

/// A workload identity. Only the Kubernetes-shaped path is accepted, because
/// authorization and certificate issuance both reason in namespace and
/// service-account terms.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SpiffeId {
    /// Shared: an ID is cloned with every endpoint a request is sent to,
    /// so a clone is a reference count, not three strings.
    parts: Arc<Parts>,
}

#[derive(PartialEq, Eq, Hash, PartialOrd, Ord)]
struct Parts {
    trust_domain: String,
    namespace: String,
    service_account: String,
}

impl fmt::Debug for SpiffeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SpiffeId")
            .field("trust_domain", &self.parts.trust_domain)
            .field("namespace", &self.parts.namespace)
            .field("service_account", &self.parts.service_account)
            .finish()
    }
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SpiffeIdError {
    #[error("SPIFFE ID {0:?} does not start with spiffe://")]
    Scheme(String),
    #[error("SPIFFE ID {0:?} is not of the form spiffe://<trust-domain>/ns/<namespace>/sa/<service-account>")]
    Shape(String),
    #[error(transparent)]
    Name(#[from] NameError),
    #[error("certificate cannot be parsed: {0}")]
    Certificate(String),
    #[error("certificate has no SPIFFE URI SAN")]
    Missing,
    #[error("certificate has {0} SPIFFE URI SANs; exactly one is allowed")]
    Several(usize),
}

impl SpiffeId {
    pub fn new(
        trust_domain: &str,
        namespace: &str,
        service_account: &str,
    ) -> Result<Self, SpiffeIdError> {
        names::validate(NameKind::TrustDomain, trust_domain)?;
        names::validate(NameKind::Namespace, namespace)?;
        names::validate(NameKind::ServiceAccount, service_account)?;
        Ok(Self {
            parts: Arc::new(Parts {
                trust_domain: trust_domain.to_string(),
                namespace: namespace.to_string(),
                service_account: service_account.to_string(),
            }),
        })
    }

    pub fn trust_domain(&self) -> &str {
        &self.parts.trust_domain
    }
    pub fn namespace(&self) -> &str {
        &self.parts.namespace
    }
    pub fn service_account(&self) -> &str {
        &self.parts.service_account
    }

    /// Reads the single SPIFFE URI SAN of a DER certificate.
    pub fn from_cert_der(der: &[u8]) -> Result<Self, SpiffeIdError> {
        let (_, cert) = x509_parser::parse_x509_certificate(der)
            .map_err(|e| SpiffeIdError::Certificate(e.to_string()))?;
        let san = cert
            .subject_alternative_name()
            .map_err(|e| SpiffeIdError::Certificate(e.to_string()))?;
        let uris: Vec<&str> = san
            .map(|ext| {
                ext.value
                    .general_names
                    .iter()
                    .filter_map(|n| match n {
                        x509_parser::extensions::GeneralName::URI(u) => Some(*u),
                        _ => None,
                    })
                    .filter(|u| u.starts_with("spiffe://"))
                    .collect()
            })
            .unwrap_or_default();
        match uris.as_slice() {
            [] => Err(SpiffeIdError::Missing),
            [one] => one.parse(),
            many => Err(SpiffeIdError::Several(many.len())),
        }
    }
}

impl fmt::Display for SpiffeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "spiffe://{}/ns/{}/sa/{}",
            self.parts.trust_domain, self.parts.namespace, self.parts.service_account
        )
    }
}

impl FromStr for SpiffeId {
    type Err = SpiffeIdError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let rest = s
            .strip_prefix("spiffe://")
            .ok_or_else(|| SpiffeIdError::Scheme(s.to_string()))?;
        let parts: Vec<&str> = rest.split('/').collect();
        match parts.as_slice() {
            [td, "ns", ns, "sa", sa] => Self::new(td, ns, sa),
            _ => Err(SpiffeIdError::Shape(s.to_string())),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_prints() {
        let id: SpiffeId = "spiffe://cluster.local/ns/shop/sa/catalog".parse().unwrap();
        assert_eq!(id.trust_domain(), "cluster.local");
        assert_eq!(id.namespace(), "shop");
        assert_eq!(id.service_account(), "catalog");
        assert_eq!(id.to_string(), "spiffe://cluster.local/ns/shop/sa/catalog");
    }

    #[test]
    fn rejects_bad_shapes() {
        for bad in [
            "http://cluster.local/ns/a/sa/b",
            "spiffe://cluster.local/ns/a",
            "spiffe://cluster.local/ns/a/sa/b/extra",
            "spiffe://cluster.local/ns/A/sa/b",
            "spiffe://cluster.local/ns//sa/b",
            "spiffe://cluster.local/x/a/sa/b",
            // A namespace no Kubernetes Service could live in.
            "spiffe://cluster.local/ns/a.b/sa/b",
        ] {
            assert!(bad.parse::<SpiffeId>().is_err(), "{bad} should be rejected");
        }
    }
}
